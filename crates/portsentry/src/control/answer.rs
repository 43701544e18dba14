//! One request, answered: parsed, routed to the threads that own what it asks about,
//! and their parts joined into one reply line. Runs on a control worker thread, which
//! may wait; the capture and reporter threads never do: each answers on its next turn.
//!
//! - `ban`, `unban`, `status`: the reporter (it owns the bans) gives the whole reply.
//! - `status json`: the reporter's [`StatusView`] with the capture thread's engine
//!   counters joined in.
//! - `explain ADDR`: the reporter's ban records, the capture thread's per-source state,
//!   and what protects the address and whether it is a known peer (both read here,
//!   from the kernel and the ignore list: a fork of `nft` never delays the reporter).

use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::protocol::{Request, json_error};
use super::server::ANSWER_TIMEOUT;
use super::views::{BansExplainView, ExplainView, StatusView};
use super::{CaptureQuery, Pending, Routes};
use crate::clock;

/// How long to wait for the capture thread, which turns at least every 200 ms.
pub const CAPTURE_TIMEOUT: Duration = Duration::from_secs(1);

/// The reply line to `line`.
pub fn answer(routes: &Routes, line: &str) -> String {
    let request = match Request::parse(line) {
        Ok(r) => r,
        Err(e) if line.split_whitespace().any(|w| w == "json") => return json_error(&e),
        Err(e) if line.trim_start().starts_with("explain") => return json_error(&e),
        Err(e) => return format!("error: {e}"),
    };
    match request {
        Request::StatusJson => status_json(routes),
        Request::Explain { ip } => explain(routes, ip),
        request => ask_reporter(routes, request),
    }
}

/// Forward to the reporter and wait for its line (the request's error form if none).
fn ask_reporter(routes: &Routes, request: Request) -> String {
    let (tx, rx) = mpsc::channel();
    let failed = request.clone();
    if !(routes.reporter)(Pending { request, reply: tx }) {
        return failed.error_reply("the daemon is shutting down");
    }
    rx.recv_timeout(ANSWER_TIMEOUT).unwrap_or_else(|_| {
        failed.error_reply(&format!(
            "the daemon did not answer within {} s (its reporter thread is busy, e.g. with slow KILL_* commands or name lookups; the request may still be carried out)",
            ANSWER_TIMEOUT.as_secs()
        ))
    })
}

/// Wait for the capture thread's answer until `deadline`.
fn capture_answer<T>(rx: Option<mpsc::Receiver<T>>, deadline: Instant) -> Option<T> {
    let wait = deadline.saturating_duration_since(clock::instant());
    rx?.recv_timeout(wait).ok()
}

fn status_json(routes: &Routes) -> String {
    let (tx, rx) = mpsc::channel();
    let engine_rx = (routes.capture)(CaptureQuery::Stats { reply: tx }).then_some(rx);
    let deadline = clock::instant() + CAPTURE_TIMEOUT;
    let reply = ask_reporter(routes, Request::StatusJson);
    let Ok(mut view) = serde_json::from_str::<StatusView>(&reply) else {
        // An error object (or nothing we know): passed on as it is.
        return reply;
    };
    view.engine = capture_answer(engine_rx, deadline);
    serde_json::to_string(&view).unwrap_or_else(|e| json_error(&e.to_string()))
}

fn explain(routes: &Routes, ip: std::net::IpAddr) -> String {
    let (tx, rx) = mpsc::channel();
    let engine_rx = (routes.capture)(CaptureQuery::Source { ip, reply: tx }).then_some(rx);
    let deadline = clock::instant() + CAPTURE_TIMEOUT;
    let mut view = ExplainView {
        address: Some(ip),
        ..ExplainView::default()
    };
    match (routes.protection)(ip) {
        Ok(p) => view.protected = p,
        Err(e) => view
            .notes
            .push(format!("cannot read what protects it: {e}")),
    }
    view.known_peer = (routes.known_peer)(ip);
    match (routes.history)(ip) {
        Ok(lines) => view.history = lines,
        Err(e) => view
            .notes
            .push(format!("cannot read the history file: {e}")),
    }
    let reply = ask_reporter(routes, Request::Explain { ip });
    match serde_json::from_str::<BansExplainView>(&reply) {
        Ok(bans) => view.bans = bans.records,
        Err(_) => {
            let error = serde_json::from_str::<serde_json::Value>(&reply)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_string))
                .unwrap_or(reply);
            view.notes.push(format!("no ban records: {error}"));
        }
    }
    view.engine = capture_answer(engine_rx, deadline);
    if view.engine.is_none() {
        view.notes
            .push("the capture thread did not answer in time: no engine state".into());
    }
    serde_json::to_string(&view).unwrap_or_else(|e| json_error(&e.to_string()))
}
