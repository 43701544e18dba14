//! The one netlink module of this crate: every client (rtnl, backend/route, NFLOG,
//! sock_diag, nftables) opens its socket, sets its options, sends, receives and walks
//! replies through here, so the rules below are written once:
//!
//! - a socket is bound to a port the kernel picks and connected to the kernel
//!   ([`NlSocket::open`]), or subscribed to multicast groups ([`NlSocket::open_groups`]);
//! - `EINTR` is retried on send and receive; a blocking receive that runs into
//!   `SO_RCVTIMEO` is [`io::ErrorKind::TimedOut`] naming the protocol;
//! - a datagram is received whole, into a buffer grown to fit (`MSG_PEEK | MSG_TRUNC`);
//! - the messages of a datagram are walked with one set of length and alignment checks
//!   ([`Messages`]), and their attributes with one more ([`attributes`]); answers to
//!   other requests (sequence number or port) are skipped;
//! - an `NLMSG_ERROR` carrying -errno is that errno as an `io::Error`; a dump ends at
//!   `NLMSG_DONE` and is retried a bounded number of times while the kernel marks it
//!   interrupted ([`NlSocket::dump`]); every read loop is bounded.
//!
//! [`fd`] holds the plain descriptor helpers (socket options, [`wait_readable`]) that
//! the AF_PACKET sensor shares.
//!
//! [`io::ErrorKind::TimedOut`]: std::io::ErrorKind::TimedOut

pub(crate) mod fd;
mod message;
mod socket;

pub use fd::wait_writable;
pub(crate) use fd::{wait_any, wait_readable};
pub(crate) use message::{Message, Messages, attributes};
#[cfg(test)]
pub(crate) use message::{NLA_HDRLEN, push_message};
pub(crate) use socket::NlSocket;
