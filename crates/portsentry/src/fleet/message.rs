//! One fleet message as it travels in the stream (pure: encode, decode, MAC).
//!
//! An entry is a list of fields in a fixed order, each a short text with no newline;
//! the MAC is HMAC-SHA256 with the fleet key over the canonical encoding
//! `portsentry-fleet-1\n` followed by `name=value\n` for every field in that order. The
//! receiver checks the MAC over the values *as received*, before parsing anything, so
//! no reading of a value can differ between the signer and the checker.
//!
//! Kinds:
//! - `ban`: a ban this node made on verified evidence or by the administrator;
//! - `report`: an unverified ban this node made (one packet, perhaps forged): applied
//!   elsewhere only when `quorum` distinct nodes reported the same network;
//! - `unban`: the administrator lifted a fleet ban on one node: lift it everywhere;
//! - `revoke`: `portsentry unban --origin NODE`: lift everything NODE injected.

use std::net::IpAddr;

use hmac::{Hmac, KeyInit, Mac};
use ipnet::IpNet;
use portsentry_engine::Evidence;
use sha2::Sha256;

/// The first line of the canonical encoding: the format and its version.
const DOMAIN: &str = "portsentry-fleet-1";
/// The field names, in their canonical order (the MAC is the last, outside it).
pub const FIELDS: [&str; 10] = [
    "kind", "origin", "net", "evidence", "scan", "ports", "sent", "ends", "offences", "subject",
];
/// Longest value of a field we accept (a scan text, a port list).
const MAX_FIELD: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Ban,
    Report,
    Unban,
    Revoke,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Ban => "ban",
            Kind::Report => "report",
            Kind::Unban => "unban",
            Kind::Revoke => "revoke",
        }
    }

    fn parse(s: &str) -> Option<Kind> {
        Some(match s {
            "ban" => Kind::Ban,
            "report" => Kind::Report,
            "unban" => Kind::Unban,
            "revoke" => Kind::Revoke,
            _ => return None,
        })
    }
}

/// One message, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub kind: Kind,
    /// The node that sent it.
    pub origin: String,
    /// The banned (or unbanned) address or network; for `revoke`, unused (0.0.0.0/0).
    pub net: IpNet,
    pub evidence: Evidence,
    /// What the scan was ("TCP connect to TCP port 23").
    pub scan: String,
    /// Ports seen, as text ("23" or "21,22,23").
    pub ports: String,
    /// When it was sent (Unix seconds).
    pub sent: u64,
    /// When the ban ends (Unix seconds); `None`: permanent.
    pub ends: Option<u64>,
    pub offences: u32,
    /// For `revoke`: the node whose bans are revoked; empty otherwise.
    pub subject: String,
}

/// Why an entry was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("field {0} is missing")]
    Missing(&'static str),
    #[error("no MAC")]
    NoMac,
    #[error("wrong MAC (not signed with this fleet's key)")]
    BadMac,
    #[error("field {field}: bad value {value:?}")]
    Bad { field: &'static str, value: String },
    #[error(
        "signed at {sent} but added to the stream at {at} (Unix seconds): a replayed entry, or clocks more than 2 minutes apart"
    )]
    Replayed { sent: u64, at: u64 },
}

/// A field value as it may travel: no newline (the encoding's separator), bounded.
fn clean(s: &str) -> String {
    s.chars()
        .filter(|c| *c != '\n' && *c != '\r')
        .take(MAX_FIELD)
        .collect()
}

impl Message {
    /// The values in [`FIELDS`] order.
    pub fn values(&self) -> [String; 10] {
        [
            self.kind.as_str().into(),
            clean(&self.origin),
            self.net.to_string(),
            self.evidence.as_str().into(),
            clean(&self.scan),
            clean(&self.ports),
            self.sent.to_string(),
            self.ends
                .map_or_else(|| "permanent".into(), |t| t.to_string()),
            self.offences.to_string(),
            clean(&self.subject),
        ]
    }

    /// The fields to XADD: [`FIELDS`] with their values, then `mac`.
    pub fn encode(&self, key: &[u8]) -> Vec<(&'static str, String)> {
        let values = self.values();
        let refs: Vec<&str> = values.iter().map(String::as_str).collect();
        let mac = mac_hex(key, &refs);
        let mut out: Vec<(&'static str, String)> = FIELDS.iter().copied().zip(values).collect();
        out.push(("mac", mac));
        out
    }

    /// Parse an entry's fields (any order), checking the MAC over the received values
    /// first.
    pub fn decode(
        key: &[u8],
        get: impl Fn(&str) -> Option<String>,
    ) -> Result<Message, DecodeError> {
        let mut values: Vec<String> = Vec::with_capacity(FIELDS.len());
        for f in FIELDS {
            values.push(get(f).ok_or(DecodeError::Missing(f))?);
        }
        let mac = get("mac").ok_or(DecodeError::NoMac)?;
        let refs: Vec<&str> = values.iter().map(String::as_str).collect();
        if !mac_ok(key, &refs, &mac) {
            return Err(DecodeError::BadMac);
        }
        let bad = |field: &'static str, value: &str| DecodeError::Bad {
            field,
            value: value.chars().take(64).collect(),
        };
        let v = |i: usize| values[i].as_str();
        let kind = Kind::parse(v(0)).ok_or_else(|| bad("kind", v(0)))?;
        let origin = v(1).to_string();
        if !crate::config::valid_node_name(&origin) {
            return Err(bad("origin", v(1)));
        }
        let net = v(2)
            .parse::<IpNet>()
            .or_else(|_| v(2).parse::<IpAddr>().map(IpNet::from))
            .map_err(|_| bad("net", v(2)))?
            .trunc();
        let evidence = Evidence::from_word(v(3)).ok_or_else(|| bad("evidence", v(3)))?;
        let sent = v(6).parse().map_err(|_| bad("sent", v(6)))?;
        let ends = match v(7) {
            "permanent" => None,
            t => Some(t.parse().map_err(|_| bad("ends", t))?),
        };
        let offences = v(8).parse().map_err(|_| bad("offences", v(8)))?;
        Ok(Message {
            kind,
            origin,
            net,
            evidence,
            scan: v(4).into(),
            ports: v(5).into(),
            sent,
            ends,
            offences,
            subject: v(9).into(),
        })
    }
}

fn canonical(values: &[&str]) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(DOMAIN.as_bytes());
    out.push(b'\n');
    for (name, value) in FIELDS.iter().zip(values) {
        out.extend_from_slice(name.as_bytes());
        out.push(b'=');
        out.extend_from_slice(value.as_bytes());
        out.push(b'\n');
    }
    out
}

fn mac_of(key: &[u8], values: &[&str]) -> Hmac<Sha256> {
    let mut mac =
        <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(&canonical(values));
    mac
}

fn mac_hex(key: &[u8], values: &[&str]) -> String {
    let bytes = mac_of(key, values).finalize().into_bytes();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Constant-time comparison (through `verify_slice`).
fn mac_ok(key: &[u8], values: &[&str], hex: &str) -> bool {
    let Some(given) = unhex(hex) else {
        return false;
    };
    mac_of(key, values).verify_slice(&given).is_ok()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() != 64 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The reason a received ban carries in the book (and so in `portsentry list`): it
/// names the origin, which [`origin_of`] reads back.
pub fn reason(origin: &str, scan: &str) -> String {
    format!("{REASON_PREFIX}{origin}: {scan}")
}

const REASON_PREFIX: &str = "from fleet node ";

/// The origin node of a ban received from the fleet, read from its reason.
pub fn origin_of(reason: &str) -> Option<&str> {
    let rest = reason.strip_prefix(REASON_PREFIX)?;
    rest.split(':').next().filter(|n| !n.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn sample() -> Message {
        Message {
            kind: Kind::Ban,
            origin: "node-a".into(),
            net: "198.18.0.7/32".parse().unwrap(),
            evidence: Evidence::Verified,
            scan: "TCP connect to TCP port 23".into(),
            ports: "23".into(),
            sent: 1_700_000_000,
            ends: Some(1_700_003_600),
            offences: 2,
            subject: String::new(),
        }
    }

    fn as_map(fields: &[(&'static str, String)]) -> HashMap<String, String> {
        fields
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }

    #[test]
    fn round_trip_with_the_key() {
        let m = sample();
        let map = as_map(&m.encode(b"fleet key"));
        let back = Message::decode(b"fleet key", |f| map.get(f).cloned()).unwrap();
        assert_eq!(back, m);
        let perm = Message { ends: None, ..m };
        let map = as_map(&perm.encode(b"k"));
        assert_eq!(
            Message::decode(b"k", |f| map.get(f).cloned()).unwrap().ends,
            None
        );
    }

    #[test]
    fn a_wrong_key_or_any_changed_field_is_rejected() {
        let map = as_map(&sample().encode(b"fleet key"));
        assert_eq!(
            Message::decode(b"other key", |f| map.get(f).cloned()),
            Err(DecodeError::BadMac)
        );
        for field in FIELDS {
            let mut changed = map.clone();
            changed.get_mut(field).unwrap().push('9');
            assert_eq!(
                Message::decode(b"fleet key", |f| changed.get(f).cloned()),
                Err(DecodeError::BadMac),
                "{field}"
            );
        }
        let mut no_mac = map.clone();
        no_mac.remove("mac");
        assert_eq!(
            Message::decode(b"fleet key", |f| no_mac.get(f).cloned()),
            Err(DecodeError::NoMac)
        );
        let mut short = map.clone();
        short.insert("mac".into(), "00".into());
        assert_eq!(
            Message::decode(b"fleet key", |f| short.get(f).cloned()),
            Err(DecodeError::BadMac)
        );
    }

    #[test]
    fn a_newline_cannot_shift_fields() {
        // "scan" with a newline and "ports" would encode the same bytes as a scan
        // ending earlier; values are cleaned before signing, so both sides agree.
        let m = Message {
            scan: "x\nports=1".into(),
            ..sample()
        };
        let map = as_map(&m.encode(b"k"));
        let back = Message::decode(b"k", |f| map.get(f).cloned()).unwrap();
        assert_eq!(back.scan, "xports=1");
    }

    #[test]
    fn the_origin_is_read_back_from_the_reason() {
        let r = reason("node-a", "TCP connect to TCP port 23");
        assert_eq!(r, "from fleet node node-a: TCP connect to TCP port 23");
        assert_eq!(origin_of(&r), Some("node-a"));
        assert_eq!(origin_of("TCP SYN/Normal scan to TCP port 23"), None);
    }
}
