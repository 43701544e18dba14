//! The control socket's protocol: one request line from the client, one reply line
//! from the daemon, then the connection closes.
//!
//! Requests (text words; the first four are the original protocol, kept as they were):
//! - `ban <addr|net> <seconds|permanent> [force]` → `ok: ...` | `error: ...` (`force`:
//!   ban even a protected address; see `bans::guard`)
//! - `unban <addr|net>` → `ok: ...` | `error: ...`
//! - `unban-origin <node>`: lift and revoke every ban that fleet node injected
//! - `status` → `ok: portsentry VERSION running for UPTIME; N bans in force`
//! - `status json` → one line of JSON, a [`StatusView`](super::views::StatusView)
//! - `explain <addr>` → one line of JSON, an [`ExplainView`](super::views::ExplainView)
//!
//! A reply to a JSON request is always one JSON object; when it failed, it is
//! `{"error": "..."}` (see [`json_error`]). A text reply that failed starts `error: `.

use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;

/// Longest request line accepted.
pub const MAX_REQUEST: usize = 4096;

/// A parsed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Ban a host or network; `None` = permanent. `force`: even one in the protected
    /// set.
    Ban {
        net: IpNet,
        duration: Option<Duration>,
        force: bool,
    },
    Unban {
        net: IpNet,
    },
    /// Lift every ban a fleet node injected, on every node (`unban --origin NODE`).
    UnbanOrigin {
        node: String,
    },
    /// The one-line text status.
    Status,
    /// The status as JSON.
    StatusJson,
    /// What the daemon knows about one address, as JSON.
    Explain {
        ip: IpAddr,
    },
}

impl Request {
    pub fn parse(line: &str) -> Result<Request, String> {
        let words: Vec<&str> = line.split_whitespace().collect();
        let net = |w: &str| -> Result<IpNet, String> {
            w.parse::<IpNet>()
                .or_else(|_| w.parse::<IpAddr>().map(IpNet::from))
                .map(|n| n.trunc())
                .map_err(|_| format!("`{w}` is not an address or network"))
        };
        let (words, force) = match words.as_slice() {
            ["ban", _, _, "force"] => (&words[..3], true),
            _ => (&words[..], false),
        };
        match words {
            ["ban", target, "permanent"] => Ok(Request::Ban {
                net: net(target)?,
                duration: None,
                force,
            }),
            ["ban", target, secs] => {
                let secs: u64 = secs
                    .parse()
                    .map_err(|_| format!("`{secs}` is not a number of seconds"))?;
                if secs == 0 {
                    return Err("a ban of 0 seconds bans nothing".into());
                }
                Ok(Request::Ban {
                    net: net(target)?,
                    duration: Some(Duration::from_secs(secs)),
                    force,
                })
            }
            ["unban", target] => Ok(Request::Unban { net: net(target)? }),
            ["unban-origin", node] if crate::config::valid_node_name(node) => {
                Ok(Request::UnbanOrigin {
                    node: node.to_string(),
                })
            }
            ["unban-origin", node] => Err(format!("`{node}` is not a fleet node name")),
            ["status"] => Ok(Request::Status),
            ["status", "json"] => Ok(Request::StatusJson),
            ["explain", target] => {
                let ip: IpAddr = target
                    .parse()
                    .map_err(|_| format!("`{target}` is not an address"))?;
                Ok(Request::Explain {
                    ip: ip.to_canonical(),
                })
            }
            _ => Err(format!("unknown request `{}`", line.trim())),
        }
    }

    /// The line the client sends.
    pub fn to_line(&self) -> String {
        match self {
            Request::Ban {
                net,
                duration,
                force,
            } => format!(
                "ban {net} {}{}\n",
                duration.map_or("permanent".to_string(), |d| d.as_secs().to_string()),
                if *force { " force" } else { "" }
            ),
            Request::Unban { net } => format!("unban {net}\n"),
            Request::UnbanOrigin { node } => format!("unban-origin {node}\n"),
            Request::Status => "status\n".into(),
            Request::StatusJson => "status json\n".into(),
            Request::Explain { ip } => format!("explain {ip}\n"),
        }
    }

    /// Whether the reply is JSON (and so is an error reply).
    pub fn wants_json(&self) -> bool {
        matches!(self, Request::StatusJson | Request::Explain { .. })
    }

    /// The reply line for a failure `message`, in the request's form.
    pub fn error_reply(&self, message: &str) -> String {
        if self.wants_json() {
            json_error(message)
        } else {
            format!("error: {message}")
        }
    }
}

/// `{"error": message}`: the JSON form of a failure.
pub fn json_error(message: &str) -> String {
    serde_json::json!({ "error": message }).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse_and_round_trip() {
        for line in [
            "ban 198.18.0.2 3600",
            "ban 198.18.0.0/24 permanent",
            "ban fd00:5e17::2 60",
            "ban 198.18.0.1 60 force",
            "ban 198.18.0.1 permanent force",
            "unban 198.18.0.2",
            "status",
            "status json",
            "explain 198.18.0.2",
            "explain fd00:5e17::2",
        ] {
            let r = Request::parse(line).unwrap();
            assert_eq!(Request::parse(&r.to_line()).unwrap(), r, "{line}");
            if !line.starts_with("ban") && !line.starts_with("unban") {
                assert_eq!(r.to_line().trim_end(), line);
            }
        }
        assert_eq!(
            Request::parse("ban 198.18.0.77/24 permanent").unwrap(),
            Request::Ban {
                net: "198.18.0.0/24".parse().unwrap(),
                duration: None,
                force: false,
            }
        );
        // An IPv4-mapped address is the IPv4 address, as everywhere else.
        assert_eq!(
            Request::parse("explain ::ffff:198.18.0.9").unwrap(),
            Request::Explain {
                ip: "198.18.0.9".parse().unwrap()
            }
        );
        assert!(Request::parse("ban 198.18.0.2 60 please").is_err());
        assert!(Request::parse("ban 198.18.0.2 0").is_err());
        assert!(Request::parse("ban nonsense 10").is_err());
        assert!(Request::parse("explain 198.18.0.0/24").is_err());
        assert!(Request::parse("status yaml").is_err());
        assert!(Request::parse("reboot").is_err());
    }

    #[test]
    fn json_requests_fail_in_json() {
        let r = Request::StatusJson;
        let v: serde_json::Value = serde_json::from_str(&r.error_reply("no \"x\"")).unwrap();
        assert_eq!(v["error"], "no \"x\"");
        assert_eq!(Request::Status.error_reply("gone"), "error: gone");
    }
}
