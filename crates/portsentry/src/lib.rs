//! The portsentry daemon as a library: configuration readers, sensors, responders,
//! output files and logging around the sans-IO engine. `main.rs` is a thin shell over it.

pub mod alerts;
pub mod bans;
pub mod cli;
pub mod client;
pub mod clock;
pub mod config;
pub mod control;
pub mod daemon;
pub mod defaults;
pub mod detach;
pub mod event;
pub mod fleet;
pub mod history;
pub mod journal;
pub mod logger;
pub mod metrics;
pub mod metrics_http;
pub mod notify;
pub mod protect;
pub mod records;
pub mod replay;
pub mod resolve;
pub mod settings;
pub mod store;
pub mod undo;
