//! `[metrics]` and `[logging]` of portsentry.toml: the Prometheus endpoint (off unless
//! `listen` is given) and the stderr log format.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use serde::Deserialize;

use crate::logger::LogFormat;

/// Port of `listen = "127.0.0.1"` without one: 9512 is in the 9100-9999 range that
/// Prometheus exporters use, away from the common ones (node 9100, blackbox 9115,
/// fail2ban exporters 9191/9921); not checked against the full exporter port list
/// (no network when chosen). Any port can be set with `listen`.
pub const DEFAULT_METRICS_PORT: u16 = 9512;
/// Address of the endpoint when only a port is given: this host alone.
pub const DEFAULT_METRICS_ADDR: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsSettings {
    /// Where `GET /metrics` is served: `"127.0.0.1:9512"`, `"[::1]:9512"`, a port alone
    /// (`"9512"`, on 127.0.0.1) or an address alone (port 9512). Absent or "": no
    /// endpoint.
    #[serde(deserialize_with = "super::fleet::empty_is_unset")]
    pub listen: Option<String>,
}

impl MetricsSettings {
    /// The socket address to serve on, None when the endpoint is off.
    pub fn address(&self) -> Result<Option<SocketAddr>, String> {
        let Some(text) = self.listen.as_deref().map(str::trim) else {
            return Ok(None);
        };
        if let Ok(addr) = text.parse::<SocketAddr>() {
            return Ok(Some(addr));
        }
        if let Ok(port) = text.parse::<u16>() {
            return Ok(Some(SocketAddr::new(DEFAULT_METRICS_ADDR, port)));
        }
        let bare = text.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return Ok(Some(SocketAddr::new(ip, DEFAULT_METRICS_PORT)));
        }
        Err(format!(
            "metrics.listen `{text}`: use ADDRESS:PORT (127.0.0.1:{DEFAULT_METRICS_PORT}), a port or an address"
        ))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct LoggingSettings {
    /// stderr lines: `"text"` (default) or `"json"` (one object per line).
    pub format: LogFormat,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_forms() {
        let m = |s: &str| MetricsSettings {
            listen: Some(s.into()),
        };
        assert_eq!(MetricsSettings::default().address(), Ok(None));
        assert_eq!(
            m("127.0.0.1:9000").address(),
            Ok(Some("127.0.0.1:9000".parse().unwrap()))
        );
        assert_eq!(
            m("9000").address(),
            Ok(Some("127.0.0.1:9000".parse().unwrap()))
        );
        assert_eq!(m("::1").address(), Ok(Some("[::1]:9512".parse().unwrap())));
        assert!(m("localhost:x").address().is_err());
    }
}
