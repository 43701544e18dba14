//! The netlink messages of one received datagram, read in place: the one walker with
//! the length checks (a header fits, its length covers the header and stays inside the
//! datagram) and the 4-byte alignment between messages (the last one may lack its
//! padding).

use std::io;

/// `sizeof(struct nlmsghdr)`.
pub(crate) const NLMSG_HDRLEN: usize = 16;

/// One netlink message: its header fields and its bytes, borrowed from the datagram.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Message<'a> {
    pub kind: u16,
    pub flags: u16,
    pub seq: u32,
    pub port: u32,
    /// The whole message, header included (what the packet crates deserialize).
    pub bytes: &'a [u8],
}

impl<'a> Message<'a> {
    /// What follows the header.
    pub fn payload(&self) -> &'a [u8] {
        &self.bytes[NLMSG_HDRLEN..]
    }

    /// Whether this answers request `seq` sent from `port`: answers to an earlier
    /// request (e.g. one that timed out) are not.
    pub fn answers(&self, seq: u32, port: u32) -> bool {
        self.seq == seq && self.port == port
    }

    /// The `error` field of an `NLMSG_ERROR` (0 = ACK, else -errno) or the status of an
    /// `NLMSG_DONE`; `None` when the payload is too short to hold it.
    pub fn code(&self) -> Option<i32> {
        let b = self.payload().get(..4)?;
        Some(i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
    }
}

/// The messages of one datagram, multi-message datagrams included. A malformed header
/// yields one `InvalidData` error naming `proto` and ends the walk; callers that read
/// best effort (NFLOG) stop there with `map_while(Result::ok)`.
pub(crate) struct Messages<'a> {
    data: &'a [u8],
    proto: &'static str,
}

impl<'a> Messages<'a> {
    pub fn new(data: &'a [u8], proto: &'static str) -> Self {
        Messages { data, proto }
    }
}

impl<'a> Iterator for Messages<'a> {
    type Item = io::Result<Message<'a>>;

    fn next(&mut self) -> Option<Self::Item> {
        let d = self.data;
        if d.is_empty() {
            return None;
        }
        let len = match d.get(..4) {
            Some(b) if d.len() >= NLMSG_HDRLEN => u32::from_ne_bytes([b[0], b[1], b[2], b[3]]),
            _ => return Some(Err(self.malformed(d.len(), "datagram ends inside a header"))),
        } as usize;
        if len < NLMSG_HDRLEN || len > d.len() {
            return Some(Err(self.malformed(len, "message length out of bounds")));
        }
        self.data = &d[len.next_multiple_of(4).min(d.len())..];
        Some(Ok(Message {
            kind: u16::from_ne_bytes([d[4], d[5]]),
            flags: u16::from_ne_bytes([d[6], d[7]]),
            seq: u32::from_ne_bytes([d[8], d[9], d[10], d[11]]),
            port: u32::from_ne_bytes([d[12], d[13], d[14], d[15]]),
            bytes: &d[..len],
        }))
    }
}

impl Messages<'_> {
    /// The error for a malformed message; nothing after it is read.
    fn malformed(&mut self, len: usize, what: &str) -> io::Error {
        let total = self.data.len();
        self.data = &[];
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{}: malformed netlink message ({what}: {len} of {total} bytes)",
                self.proto
            ),
        )
    }
}

/// `sizeof(struct nlattr)`.
pub(crate) const NLA_HDRLEN: usize = 4;
/// An attribute type without its `NLA_F_NESTED` / `NLA_F_NET_BYTEORDER` flags.
const NLA_TYPE_MASK: u16 = 0x3fff;

/// `(type, value)` of each netlink attribute in `buf` (the type without its flags),
/// aligned like messages. Best effort: the walk stops at the first malformed attribute,
/// so a truncated message yields what precedes the damage.
pub(crate) fn attributes(buf: &[u8]) -> Attributes<'_> {
    Attributes(buf)
}

/// See [`attributes`].
pub(crate) struct Attributes<'a>(&'a [u8]);

impl<'a> Iterator for Attributes<'a> {
    type Item = (u16, &'a [u8]);

    fn next(&mut self) -> Option<(u16, &'a [u8])> {
        let d = std::mem::take(&mut self.0);
        if d.len() < NLA_HDRLEN {
            return None;
        }
        let len = usize::from(u16::from_ne_bytes([d[0], d[1]]));
        if len < NLA_HDRLEN || len > d.len() {
            return None;
        }
        let kind = u16::from_ne_bytes([d[2], d[3]]) & NLA_TYPE_MASK;
        self.0 = &d[len.next_multiple_of(4).min(d.len())..];
        Some((kind, &d[NLA_HDRLEN..len]))
    }
}

/// Appends one message (header and `payload`, no padding after it) to `out`, for tests
/// that build datagrams by hand.
#[cfg(test)]
pub(crate) fn push_message(
    out: &mut Vec<u8>,
    kind: u16,
    flags: u16,
    seq: u32,
    port: u32,
    payload: &[u8],
) {
    out.extend_from_slice(&((NLMSG_HDRLEN + payload.len()) as u32).to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(&flags.to_ne_bytes());
    out.extend_from_slice(&seq.to_ne_bytes());
    out.extend_from_slice(&port.to_ne_bytes());
    out.extend_from_slice(payload);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nlmsg(out: &mut Vec<u8>, kind: u16, seq: u32, payload: &[u8]) {
        push_message(out, kind, 3, seq, 77, payload);
    }

    #[test]
    fn walks_aligned_messages_and_a_last_one_without_padding() {
        let mut d = Vec::new();
        nlmsg(&mut d, 20, 1, &[1, 2, 3]);
        d.push(0); // padding to 4
        nlmsg(&mut d, 3, 2, &[0xfe, 0xff, 0xff, 0xff, 9]);
        let got: Vec<_> = Messages::new(&d, "test").map(Result::unwrap).collect();
        assert_eq!(got.len(), 2);
        assert_eq!((got[0].kind, got[0].flags, got[0].seq), (20, 3, 1));
        assert_eq!(got[0].payload(), &[1, 2, 3]);
        assert!(got[1].answers(2, 77) && !got[1].answers(2, 78));
        assert_eq!(got[1].code(), Some(-2));
    }

    #[test]
    fn malformed_headers_end_the_walk_with_one_error() {
        let mut d = Vec::new();
        nlmsg(&mut d, 20, 1, &[0; 4]);
        for cut in 1..d.len() {
            let mut it = Messages::new(&d[..cut], "test");
            let e = it.next().unwrap().unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidData);
            assert!(e.to_string().starts_with("test: malformed"), "{e}");
            assert!(it.next().is_none());
        }
        let mut short = d.clone();
        short[..4].copy_from_slice(&8u32.to_ne_bytes());
        assert!(Messages::new(&short, "t").next().unwrap().is_err());
        assert_eq!(Messages::new(&[], "t").count(), 0);
    }

    #[test]
    fn attributes_drop_flags_and_stop_at_damage() {
        // type 3 | NLA_F_NESTED, 2 value bytes + padding; then type 1 claiming 64 bytes
        let buf = [6, 0, 3, 0x80, 0xaa, 0xbb, 0, 0, 64, 0, 1, 0, 1, 2];
        let got: Vec<_> = attributes(&buf).collect();
        assert_eq!(got, vec![(3, &[0xaa, 0xbb][..])]);
        assert_eq!(attributes(&buf[..3]).count(), 0);
    }
}
