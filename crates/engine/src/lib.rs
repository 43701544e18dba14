//! Sans-IO core of portsentry: turns packet bytes into typed probes and probes into
//! decisions. Nothing in this crate reads a clock, a file or a socket; time is passed in
//! as a [`Millis`] value, so every behaviour is deterministic and replayable.

pub mod bans;
pub mod classify;
pub mod engine;
pub mod ignore;
pub mod ports;
pub mod probe;
pub mod time;
pub mod wire;

pub use probe::{Evidence, Probe, ProbeKind, Proto, TcpFlags, Verdict};
pub use time::Millis;
