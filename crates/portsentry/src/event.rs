//! A log line with its fields: the exact text of the line (from [`crate::alerts`],
//! unchanged) and what it is about, as journal-style fields (`SRC_IP`, `DST_PORT`,
//! `PROTO`, `SCAN_KIND`, `EVIDENCE`, `ACTION`, `BAN_UNTIL`). The syslog transport writes
//! only the text; the journal and the JSON stderr format write the fields too.

use std::net::IpAddr;
use std::time::Duration;

use portsentry_engine::Probe;

/// One line and its fields (in the order they were added).
#[derive(Debug, Clone)]
pub struct Event<'a> {
    pub message: &'a str,
    pub fields: Vec<(&'static str, String)>,
}

impl<'a> Event<'a> {
    /// A line without fields.
    pub fn text(message: &'a str) -> Self {
        Event {
            message,
            fields: Vec::new(),
        }
    }

    /// A line about `probe`; `action` says what the line reports (`alert`, `ban`, ...).
    pub fn probe(message: &'a str, probe: &Probe, action: &'static str) -> Self {
        Event {
            message,
            fields: vec![
                ("SRC_IP", probe.src.to_string()),
                ("DST_PORT", probe.dport.to_string()),
                (
                    "PROTO",
                    crate::metrics::proto_label(probe.proto()).to_string(),
                ),
                (
                    "SCAN_KIND",
                    crate::metrics::kind_label(probe.kind).to_string(),
                ),
                (
                    "EVIDENCE",
                    crate::metrics::evidence_label(probe.evidence()).to_string(),
                ),
                ("ACTION", action.to_string()),
            ],
        }
    }

    /// A line about one address without a probe (a ban ending, a manual ban).
    pub fn address(message: &'a str, ip: IpAddr, action: &'static str) -> Self {
        Event {
            message,
            fields: vec![("SRC_IP", ip.to_string()), ("ACTION", action.to_string())],
        }
    }

    /// `BAN_UNTIL`: the end of a ban `length` from `now_unix` (RFC 3339, UTC), or
    /// `permanent`.
    pub fn ban_until(mut self, now_unix: u64, length: Option<Duration>) -> Self {
        let value = match length {
            None => "permanent".to_string(),
            Some(d) => {
                let end = now_unix.saturating_add(d.as_secs());
                chrono::DateTime::from_timestamp(end as i64, 0)
                    .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
                    .unwrap_or_else(|| end.to_string())
            }
        };
        self.fields.push(("BAN_UNTIL", value));
        self
    }

    pub fn field(&self, key: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ban_until_is_utc_or_permanent() {
        let e = Event::text("x").ban_until(0, Some(Duration::from_secs(600)));
        assert_eq!(e.field("BAN_UNTIL"), Some("1970-01-01T00:10:00Z"));
        let e = Event::text("x").ban_until(0, None);
        assert_eq!(e.field("BAN_UNTIL"), Some("permanent"));
    }
}
