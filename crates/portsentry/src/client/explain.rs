//! The text form of `portsentry explain ADDR`: the daemon's [`ExplainView`] as a few
//! lines an administrator reads top to bottom (what protects it, its bans, what the
//! engine holds). Pure: `now` comes in.

use std::fmt::Write;
use std::time::Duration;

use crate::control::views::{BanRecordView, ExplainView};

fn human(secs: u64) -> String {
    humantime::format_duration(Duration::from_secs(secs)).to_string()
}

fn when(unix: u64) -> String {
    chrono::DateTime::from_timestamp(unix as i64, 0)
        .map(|t| {
            t.with_timezone(&chrono::Local)
                .format("%Y-%m-%d %H:%M:%S %z")
                .to_string()
        })
        .unwrap_or_else(|| unix.to_string())
}

fn what(by: &str) -> &str {
    match by {
        "ignore_list" => "ignore list entry",
        "extra" => "[protect] extra entry",
        "own_address" => "an address of this host",
        "gateway" => "a default gateway of this host",
        "resolver" => "a DNS resolver of this host",
        "loopback" => "loopback",
        other => other,
    }
}

fn ban_line(b: &BanRecordView, now: u64) -> String {
    let end = match (b.in_force, b.expires_at) {
        (true, None) => "permanent".to_string(),
        (true, Some(t)) => format!("ends in {} ({})", human(t.saturating_sub(now)), when(t)),
        (false, Some(t)) => format!("ended {}", when(t)),
        (false, None) => "ended".to_string(),
    };
    format!(
        "{} {}: {} evidence, offence {}, banned {}, {end}; reason: {}",
        b.network,
        if b.in_force { "BANNED" } else { "was banned" },
        b.evidence,
        b.offences,
        when(b.banned_at),
        b.reason
    )
}

/// The lines of one explanation, each ending in a newline.
pub fn render(v: &ExplainView, now: u64) -> String {
    let mut out = String::new();
    let addr = v
        .address
        .map(|a| a.to_string())
        .unwrap_or_else(|| "?".into());
    let _ = writeln!(out, "{addr}:");
    if v.protected.is_empty() {
        let _ = writeln!(out, "  protected: no");
    } else {
        for p in &v.protected {
            let _ = writeln!(
                out,
                "  protected: {} ({}): never banned by detection",
                what(&p.by),
                p.network
            );
        }
    }
    match v.known_peer {
        Some(true) => {
            let _ = writeln!(
                out,
                "  known peer: yes (it exchanged data with this host; a single packet from it is never banned)"
            );
        }
        Some(false) => {
            let _ = writeln!(out, "  known peer: no");
        }
        None => {}
    }
    if v.bans.is_empty() {
        let _ = writeln!(out, "  bans: none recorded");
    }
    for b in &v.bans {
        let _ = writeln!(out, "  ban: {}", ban_line(b, now));
    }
    for line in &v.history {
        let _ = writeln!(out, "  history: {line}");
    }
    match &v.engine {
        None => {}
        Some(e) => {
            if let Some(exempt) = &e.exempt {
                let _ = writeln!(
                    out,
                    "  engine: exempt ({}): its probes are logged, never acted on",
                    what(exempt)
                );
            }
            if e.sources.is_empty() && e.exempt.is_none() {
                let _ = writeln!(
                    out,
                    "  engine: no state (no probe from it, or forgotten) (SCAN_TRIGGER {})",
                    e.scan_trigger
                );
            }
            for s in &e.sources {
                let blocked = match (s.state.as_str(), s.blocked_for_seconds) {
                    ("blocked", Some(left)) => format!(" for {}", human(left)),
                    ("blocked", None) => " for good".to_string(),
                    _ => String::new(),
                };
                let _ = writeln!(
                    out,
                    "  engine {}: {}{blocked}, {} hit(s) counted (SCAN_TRIGGER {}), last on port {} {} ago",
                    s.proto,
                    s.state,
                    s.hits,
                    e.scan_trigger,
                    s.last_port,
                    human(s.last_hit_seconds_ago)
                );
            }
        }
    }
    for note in &v.notes {
        let _ = writeln!(out, "  note: {note}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::views::{EngineExplainView, EngineSourceView, ProtectionView};

    #[test]
    fn issue_9_explain_text_names_the_ban_the_engine_state_and_the_protection() {
        let now = 1_800_000_000;
        let v = ExplainView {
            address: Some("198.18.0.2".parse().unwrap()),
            protected: vec![],
            known_peer: Some(false),
            bans: vec![BanRecordView {
                network: "198.18.0.2/32".parse().unwrap(),
                in_force: true,
                offences: 1,
                evidence: "unverified".into(),
                reason: "TCP SYN/Normal scan to TCP port 23".into(),
                banned_at: now - 2,
                last_offence_at: now - 2,
                permanent: false,
                expires_at: Some(now + 598),
                expires_in_seconds: Some(598),
            }],
            engine: Some(EngineExplainView {
                scan_trigger: 0,
                exempt: None,
                sources: vec![EngineSourceView {
                    proto: "tcp".into(),
                    hits: 1,
                    state: "blocked".into(),
                    last_port: 23,
                    last_hit_seconds_ago: 2,
                    blocked_for_seconds: Some(598),
                }],
            }),
            history: vec![
                "1 - x [unverified] Host: 198.18.0.2/198.18.0.2 Port: 23 TCP Blocked".into(),
            ],
            notes: vec![],
        };
        let text = render(&v, now);
        assert!(text.starts_with("198.18.0.2:\n  protected: no\n  known peer: no\n"));
        assert!(
            text.contains("  ban: 198.18.0.2/32 BANNED: unverified evidence, offence 1, banned ")
        );
        assert!(text.contains(", ends in 9m 58s ("), "{text}");
        assert!(text.contains("reason: TCP SYN/Normal scan to TCP port 23\n"));
        assert!(text.contains(
            "  history: 1 - x [unverified] Host: 198.18.0.2/198.18.0.2 Port: 23 TCP Blocked\n"
        ));
        assert!(text.contains(
            "  engine tcp: blocked for 9m 58s, 1 hit(s) counted (SCAN_TRIGGER 0), last on port 23 2s ago\n"
        ));
        let gw = ExplainView {
            address: Some("198.18.0.254".parse().unwrap()),
            protected: vec![ProtectionView {
                by: "gateway".into(),
                network: "198.18.0.254/32".parse().unwrap(),
            }],
            ..ExplainView::default()
        };
        assert!(render(&gw, now).contains(
            "  protected: a default gateway of this host (198.18.0.254/32): never banned by detection\n"
        ));
    }
}
