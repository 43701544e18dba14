//! `[fleet]` of portsentry.toml: sharing bans with other nodes through a Redis (or
//! Valkey) stream. Pure: the keys, their defaults and their checks; reading the key
//! and password files is `fleet::secrets`' job. Off unless `url` is set.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// Default stream name.
pub const STREAM: &str = "portsentry:bans";
/// Distinct nodes whose unverified reports of one source make it a fleet ban: one
/// node's forged-packet evidence never bans elsewhere.
pub const QUORUM: u32 = 3;
/// Reports older than this do not count towards the quorum.
pub const QUORUM_WINDOW: Duration = Duration::from_secs(600);
/// A received ban lasts at most this long here, whatever its origin asked.
pub const MAX_BAN_TIME: Duration = Duration::from_secs(24 * 3600);
/// Bans received per second from one origin, and the burst: a compromised node
/// cannot fill our set.
pub const RATE: u32 = 20;
pub const BURST: u32 = 200;
/// Stream entries older than this are trimmed (XADD MINID): the stream stays bounded.
pub const TRIM_AFTER: Duration = Duration::from_secs(7 * 24 * 3600);

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FleetSettings {
    /// `redis://host:port/` or `rediss://host:port/` (TLS). Unset: no fleet.
    #[serde(deserialize_with = "empty_is_unset")]
    pub url: Option<String>,
    /// ACL user (Redis 6+); unset: the default user.
    #[serde(deserialize_with = "empty_is_unset")]
    pub user: Option<String>,
    /// File holding the password; must be readable by root only.
    #[serde(deserialize_with = "empty_is_unset")]
    pub password_file: Option<PathBuf>,
    /// With `rediss://`: PEM file of the CA that signed the server's certificate, trusted
    /// instead of the system's store.
    #[serde(deserialize_with = "empty_is_unset")]
    pub ca_file: Option<PathBuf>,
    /// File holding the fleet key (the HMAC-SHA256 key every node shares); must be
    /// readable by root only. Required with `url`.
    #[serde(deserialize_with = "empty_is_unset")]
    pub key_file: Option<PathBuf>,
    pub stream: String,
    /// This node's name in the stream; default: the host name.
    #[serde(deserialize_with = "empty_is_unset")]
    pub node: Option<String>,
    /// k of k-of-n: distinct nodes that must report one unverified source.
    pub quorum: u32,
    #[serde(with = "super::toml_file::humantime_serde_compat")]
    pub quorum_window: Duration,
    #[serde(with = "super::toml_file::humantime_serde_compat")]
    pub max_ban_time: Duration,
    /// Bans per second accepted from one origin (with `burst`).
    pub rate: u32,
    pub burst: u32,
    #[serde(with = "super::toml_file::humantime_serde_compat")]
    pub trim_after: Duration,
}

/// An empty string is the key left unset (the example file writes every key, so its
/// optional ones read `""`).
pub(crate) fn empty_is_unset<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: From<String>,
{
    let text = String::deserialize(d)?;
    Ok((!text.is_empty()).then(|| T::from(text)))
}

impl Default for FleetSettings {
    fn default() -> Self {
        FleetSettings {
            url: None,
            user: None,
            password_file: None,
            ca_file: None,
            key_file: None,
            stream: STREAM.into(),
            node: None,
            quorum: QUORUM,
            quorum_window: QUORUM_WINDOW,
            max_ban_time: MAX_BAN_TIME,
            rate: RATE,
            burst: BURST,
            trim_after: TRIM_AFTER,
        }
    }
}

/// A node name: 1-64 letters, digits, '.', '_' or '-' (it goes into ban reasons and
/// the stream, so no spaces, colons or newlines).
pub fn valid_node_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

impl FleetSettings {
    /// Whether the fleet link is configured.
    pub fn enabled(&self) -> bool {
        self.url.is_some()
    }

    pub fn validate(&self) -> Result<(), String> {
        let Some(url) = &self.url else {
            return Ok(());
        };
        if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
            return Err(format!(
                "fleet.url `{url}`: use redis://HOST:PORT/ or rediss://HOST:PORT/ (TLS)"
            ));
        }
        if url.contains('@') {
            return Err("fleet.url: put no user or password in the URL; use fleet.user and fleet.password_file (readable by root only)".into());
        }
        if self.ca_file.is_some() && !url.starts_with("rediss://") {
            return Err("fleet.ca_file is for a rediss:// (TLS) url".into());
        }
        if self.key_file.is_none() {
            return Err(
                "fleet.key_file is required with fleet.url (the fleet's shared HMAC key)".into(),
            );
        }
        if self.stream.is_empty()
            || self.stream.len() > 128
            || self.stream.contains(char::is_whitespace)
        {
            return Err(format!(
                "fleet.stream `{}`: 1-128 characters, no spaces",
                self.stream
            ));
        }
        if let Some(node) = &self.node
            && !valid_node_name(node)
        {
            return Err(format!(
                "fleet.node `{node}`: use 1-64 letters, digits, '.', '_' or '-'"
            ));
        }
        if self.quorum == 0 {
            return Err("fleet.quorum must be at least 1 (distinct nodes)".into());
        }
        if self.max_ban_time.is_zero() {
            return Err("fleet.max_ban_time must be longer than 0".into());
        }
        if self.rate == 0 || self.burst == 0 {
            return Err("fleet.rate and fleet.burst must be more than 0".into());
        }
        if self.trim_after < Duration::from_secs(60) {
            return Err("fleet.trim_after must be at least 1m".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_by_default_and_checked_when_on() {
        let off = FleetSettings::default();
        assert!(!off.enabled());
        assert!(off.validate().is_ok());
        let on = FleetSettings {
            url: Some("redis://198.18.0.9:6379/".into()),
            key_file: Some("/etc/portsentry/fleet.key".into()),
            ..FleetSettings::default()
        };
        assert!(on.validate().is_ok());
        let no_key = FleetSettings {
            key_file: None,
            ..on.clone()
        };
        assert!(no_key.validate().unwrap_err().contains("key_file"));
        let pw_in_url = FleetSettings {
            url: Some("redis://u:p@198.18.0.9/".into()),
            ..on.clone()
        };
        assert!(pw_in_url.validate().is_err());
        let http = FleetSettings {
            url: Some("http://x/".into()),
            ..on.clone()
        };
        assert!(http.validate().is_err());
        assert!(
            !valid_node_name("a b") && !valid_node_name("") && valid_node_name("web-1.example")
        );
    }
}
