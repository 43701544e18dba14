//! Linux plumbing for portsentry, with no policy, no logging and no settings: each
//! module talks to one kernel interface (or runs one kind of program) and returns values
//! or `io`/`thiserror` errors. What to trap, whom to ban and what to log is decided by
//! the daemon crate; this crate never names it.

pub mod backend;
pub mod bpf;
#[cfg(any(test, feature = "testns"))]
pub mod flood;
pub mod listen;
mod netlink;
/// Room to send on a non-blocking socket (the logger's syslog datagrams).
pub use netlink::wait_writable;
pub mod nflog;
pub mod nft;
pub mod packet;
pub mod process;
pub mod rtnl;
pub mod sock_diag;
#[cfg(any(test, feature = "testns"))]
pub mod testns;
