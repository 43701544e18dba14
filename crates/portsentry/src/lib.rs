//! The portsentry daemon as a library: configuration readers, sensors, responders,
//! output files and logging around the sans-IO engine. `main.rs` is a thin shell over it.

pub mod bpf;
pub mod cli;
pub mod client;
pub mod config;
pub mod control;
pub mod daemon;
pub mod fallback;
pub mod kernel_bans;
pub mod logger;
pub mod nflog;
pub mod nft;
pub mod notify;
pub mod process;
pub mod protect;
pub mod records;
pub mod resolve;
pub mod respond;
pub mod sensor;
pub mod settings;
pub mod sockets;
pub mod store;
#[cfg(test)]
pub(crate) mod testns;
