//! The portsentry daemon as a library: configuration readers, sensors, responders,
//! output files and logging around the sans-IO engine. `main.rs` is a thin shell over it.

pub mod config;
