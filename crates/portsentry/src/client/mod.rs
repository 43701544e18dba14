//! The client subcommands. `ban`, `unban`, `status` and `explain` ask the running
//! daemon over its control socket (it owns the bans, so nothing races). `list` (bans in
//! the state file and in the kernel set) and `flush --all` (remove our table and every
//! ban) work without the daemon. All read the same settings as the daemon, so they find
//! the same socket, table and state file. `list`, `status` and `explain` print one JSON
//! object with `--json` ([`crate::control::views`]), and so do their failures
//! ([`json_failure`]); [`explain`] renders the text form.

mod explain;

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use ipnet::IpNet;
use portsentry_engine::bans::BanBook;

use crate::bans::{self, describe};
use crate::clock::unix_now;
use crate::control::views::{ListView, ListedBan};
use crate::control::{self, Request};
use crate::settings::{NativeSettings, instance};
use crate::store;
use portsentry_kernel::backend::{self, BanBackend, NftablesBackend};
use portsentry_kernel::nft::Nft;

/// Where a UDP-only daemon (Debian's `portsentry -udp` beside `-tcp`) keeps its own
/// bans: listed, lifted and flushed with the configured instance's
/// (`settings::instance`). Present when its state file, table or socket exists.
fn udp_instance_present(settings: &NativeSettings) -> Option<NativeSettings> {
    let udp = instance::udp_instance(settings);
    let table_exists = Nft::available()
        && Nft::new(&udp.firewall.table)
            .and_then(|n| n.exists())
            .unwrap_or(false);
    (udp.state_file.exists() || udp.control_socket.exists() || table_exists).then_some(udp)
}

/// `portsentry list`: one line per ban in force, with the class of its evidence
/// (unverified, verified, manual; see [`Evidence`](portsentry_engine::Evidence)), for
/// every daemon of this host.
pub fn list(settings: &NativeSettings, json: bool) -> Result<()> {
    if json {
        let mut view = ListView::default();
        list_json(settings, &mut view)?;
        if let Some(udp) = udp_instance_present(settings) {
            list_json(&udp, &mut view)?;
        }
        println!("{}", serde_json::to_string(&view)?);
        return Ok(());
    }
    list_one(settings)?;
    if let Some(udp) = udp_instance_present(settings) {
        println!();
        println!(
            "bans of the UDP-only daemon (table inet {}, {}):",
            udp.firewall.table,
            udp.state_file.display()
        );
        list_one(&udp)?;
    }
    Ok(())
}

/// What the kernel's ban sets of `table` hold, with each element's time left; a note
/// (empty sets) when they cannot be read.
fn kernel_bans(table: &str) -> (BTreeMap<IpNet, Option<std::time::Duration>>, Option<String>) {
    match NftablesBackend::open(table).and_then(|mut b| b.list()) {
        Ok(held) => (
            held.into_iter().map(|h| (h.key, h.expiry.left())).collect(),
            None,
        ),
        Err(e) => (
            BTreeMap::new(),
            Some(format!(
                "cannot read the kernel ban sets of table inet {table}: {e}"
            )),
        ),
    }
}

/// The bans of one daemon's state file and table, added to `view`.
fn list_json(settings: &NativeSettings, view: &mut ListView) -> Result<()> {
    let now = unix_now();
    let book = load_book(&settings.state_file, now)?;
    let table = &settings.firewall.table;
    let (kernel, note) = kernel_bans(table);
    view.notes.extend(note);
    let mut listed = std::collections::HashSet::new();
    for ban in book.active(now) {
        listed.insert(ban.key);
        view.bans.push(ListedBan {
            address: ban.key,
            evidence: ban.evidence.as_str().to_string(),
            permanent: ban.expires_at.is_none(),
            expires_at: ban.expires_at,
            expires_in_seconds: ban.expires_at.map(|at| at.saturating_sub(now)),
            offences: Some(ban.offences),
            reason: Some(ban.reason.clone()),
            in_kernel: kernel.contains_key(&ban.key),
            in_state_file: true,
            table: table.clone(),
        });
    }
    for (key, left) in kernel.iter().filter(|(k, _)| !listed.contains(*k)) {
        view.bans.push(ListedBan {
            address: *key,
            evidence: portsentry_engine::Evidence::Unverified.as_str().to_string(),
            permanent: left.is_none(),
            expires_at: left.map(|d| now + d.as_secs()),
            expires_in_seconds: left.map(|d| d.as_secs()),
            offences: None,
            reason: None,
            in_kernel: true,
            in_state_file: false,
            table: table.clone(),
        });
    }
    Ok(())
}

fn list_one(settings: &NativeSettings) -> Result<()> {
    let now = unix_now();
    let book = load_book(&settings.state_file, now)?;
    let table = &settings.firewall.table;
    let (kernel, note) = kernel_bans(table);
    if let Some(note) = note {
        eprintln!("portsentry: note: {note}");
    }
    println!(
        "{:<40} {:>12} {:>8} {:<10} {:<7} reason",
        "address", "expires in", "offence", "evidence", "kernel"
    );
    let mut listed = std::collections::HashSet::new();
    for ban in book.active(now) {
        let left = ban
            .expires_at
            .map(|at| std::time::Duration::from_secs(at.saturating_sub(now)));
        let in_kernel = kernel.contains_key(&ban.key);
        listed.insert(ban.key);
        println!(
            "{:<40} {:>12} {:>8} {:<10} {:<7} {}",
            ban.key.to_string(),
            describe(left),
            ban.offences,
            ban.evidence.as_str(),
            if in_kernel { "yes" } else { "no" },
            ban.reason
        );
    }
    for (key, expires) in kernel.iter().filter(|(k, _)| !listed.contains(*k)) {
        // Only the trap rule adds elements on its own, on a single packet.
        println!(
            "{:<40} {:>12} {:>8} {:<10} {:<7} in the kernel set only (added since the last save)",
            key.to_string(),
            describe(*expires),
            "-",
            portsentry_engine::Evidence::Unverified.as_str(),
            "yes"
        );
    }
    Ok(())
}

/// `portsentry flush --all`: remove our table (and only it), the bans of the fallback
/// backends, and end every ban in the state file, keeping the offence history for
/// escalation; the same for a UDP-only daemon's table and state file.
pub fn flush_all(settings: &NativeSettings) -> Result<()> {
    flush_one(settings)?;
    if let Some(udp) = udp_instance_present(settings) {
        flush_one(&udp)?;
    }
    Ok(())
}

fn flush_one(settings: &NativeSettings) -> Result<()> {
    // A running daemon owns the bans and re-installs its table; flushing under it
    // would be undone within seconds.
    if control::ask(&settings.control_socket, &Request::Status).is_ok() {
        anyhow::bail!(
            "the daemon is running: stop it first (systemctl stop portsentry), or lift single bans with `portsentry unban ADDR`"
        );
    }
    let now = unix_now();
    let table = &settings.firewall.table;
    if Nft::available() {
        Nft::new(table)?
            .remove()
            .with_context(|| format!("cannot remove table inet {table}"))?;
        println!("portsentry: table inet {table} removed");
    } else {
        println!("portsentry: nftables not available; no table to remove");
    }
    // The fallback backends each remove only what they installed (our ipset sets and
    // their rule, rules with our comment, routes of our protocol), so all are asked.
    for mut backend in backend::candidates() {
        backend
            .teardown()
            .with_context(|| format!("cannot remove the {} bans", backend.name()))?;
    }
    let state_file = &settings.state_file;
    let mut book = load_book(state_file, now)?;
    let keys: Vec<IpNet> = book.active(now).map(|b| b.key).collect();
    for key in &keys {
        book.unban(*key, now);
    }
    // Nothing is left to remove from a firewall: the table and fallback bans are gone.
    book.set_settled_through(now);
    if state_file.exists() || !keys.is_empty() {
        store::save(state_file, &book, now).map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    println!(
        "portsentry: {} bans lifted in {}; bans made by KILL_ROUTE/KILL_RUN_CMD commands are not undone",
        keys.len(),
        state_file.display()
    );
    Ok(())
}

/// Send one request to the daemon; print its reply; error if it refused.
fn ask(settings: &NativeSettings, request: &Request) -> Result<()> {
    let reply = control::ask(&settings.control_socket, request)?;
    println!("{reply}");
    if reply.starts_with("ok") {
        Ok(())
    } else {
        Err(anyhow::anyhow!("the daemon refused the request"))
    }
}

/// `portsentry ban TARGET [--time D | --permanent] [--force]`.
pub fn ban(
    settings: &NativeSettings,
    target: &str,
    time: Option<std::time::Duration>,
    permanent: bool,
    force: bool,
) -> Result<()> {
    let request = Request::parse(&format!(
        "ban {target} {}{}",
        if permanent {
            "permanent".to_string()
        } else {
            time.unwrap_or(settings.ban_policies.manual.ban_time)
                .as_secs()
                .max(1)
                .to_string()
        },
        if force { " force" } else { "" }
    ))
    .map_err(anyhow::Error::msg)?;
    // One daemon's ban drops all of the source's traffic: the configured daemon takes
    // it, or the UDP-only one when it runs alone.
    let udp = instance::udp_instance(settings);
    if !settings.control_socket.exists() && udp.control_socket.exists() {
        return ask(&udp, &request);
    }
    ask(settings, &request)
}

/// `portsentry unban TARGET`: asked of every running daemon of this host (a UDP-only
/// one has bans of its own).
pub fn unban(settings: &NativeSettings, target: &str) -> Result<()> {
    let request = Request::parse(&format!("unban {target}")).map_err(anyhow::Error::msg)?;
    ask_every(settings, &request)
}

/// `portsentry unban --origin NODE`: lift and revoke every ban that fleet node
/// injected (the daemon publishes the revocation to the fleet).
pub fn unban_origin(settings: &NativeSettings, node: &str) -> Result<()> {
    let request = Request::parse(&format!("unban-origin {node}")).map_err(anyhow::Error::msg)?;
    ask(settings, &request)
}

/// `portsentry status [--json]`, of every running daemon of this host.
pub fn status(settings: &NativeSettings, json: bool) -> Result<()> {
    if json {
        return ask_json(settings, &Request::StatusJson);
    }
    ask_every(settings, &Request::Status)
}

/// `portsentry explain ADDR [--json]`.
pub fn explain(settings: &NativeSettings, address: &str, json: bool) -> Result<()> {
    let request = Request::parse(&format!("explain {address}")).map_err(anyhow::Error::msg)?;
    if json {
        return ask_json(settings, &request);
    }
    ask_json_with(settings, &request, |view, heading| {
        let view: control::views::ExplainView = serde_json::from_value(view.clone())
            .context("the daemon's explanation is not one this client knows")?;
        if let Some(heading) = heading {
            println!("{heading}");
        }
        print!("{}", explain::render(&view, unix_now()));
        Ok(())
    })
}

/// `{"error": message, "exit_status": code}`: a failure of a `--json` command, printed
/// on stdout (the exit status is non-zero as well).
pub fn json_failure(message: &str, code: u8) -> String {
    serde_json::json!({ "error": message, "exit_status": code }).to_string()
}

/// One JSON reply of `settings`' daemon (and of the UDP-only daemon, when it runs,
/// under `udp_only_daemon`), printed as one object.
fn ask_json(settings: &NativeSettings, request: &Request) -> Result<()> {
    let mut first: Option<serde_json::Value> = None;
    ask_json_with(settings, request, |view, heading| {
        match (&mut first, heading) {
            (Some(serde_json::Value::Object(o)), Some(_)) => {
                o.insert("udp_only_daemon".into(), view.clone());
            }
            _ => first = Some(view.clone()),
        }
        Ok(())
    })?;
    if let Some(v) = first {
        println!("{v}");
    }
    Ok(())
}

/// Ask the configured daemon and, if one runs, the UDP-only daemon; `each` gets every
/// JSON reply that is not an error, with a heading for the second daemon's. Fails with
/// the daemon's own error message when the (only) daemon refused.
fn ask_json_with(
    settings: &NativeSettings,
    request: &Request,
    mut each: impl FnMut(&serde_json::Value, Option<&str>) -> Result<()>,
) -> Result<()> {
    let one = |settings: &NativeSettings| -> Result<serde_json::Value> {
        let reply = control::ask(&settings.control_socket, request)?;
        let value: serde_json::Value = serde_json::from_str(&reply)
            .with_context(|| format!("the daemon's reply is not JSON: {reply}"))?;
        if let Some(error) = value.get("error").and_then(|e| e.as_str()) {
            anyhow::bail!("{error}");
        }
        Ok(value)
    };
    let udp = instance::udp_instance(settings);
    if !udp.control_socket.exists() {
        return each(&one(settings)?, None);
    }
    match one(settings) {
        Ok(v) => {
            each(&v, None)?;
            if let Ok(v) = one(&udp) {
                each(&v, Some("UDP-only daemon:"))?;
            }
            Ok(())
        }
        // Only the UDP-only daemon runs.
        Err(_) if !settings.control_socket.exists() => each(&one(&udp)?, None),
        Err(e) => Err(e),
    }
}

/// Asks the configured daemon and, if one runs, the UDP-only daemon; succeeds when one
/// of them accepted. With one daemon this is `ask`.
fn ask_every(settings: &NativeSettings, request: &Request) -> Result<()> {
    let udp = instance::udp_instance(settings);
    if !udp.control_socket.exists() {
        return ask(settings, request);
    }
    let first = ask(settings, request);
    if first.is_err() && !settings.control_socket.exists() {
        // Only the UDP-only daemon runs.
        return ask(&udp, request);
    }
    println!("UDP-only daemon:");
    let second = ask(&udp, request);
    first.or(second)
}

/// The book as saved in `state_file`, bounded as the daemon bounds it.
fn load_book(state_file: &std::path::Path, now: u64) -> Result<BanBook> {
    let loaded = store::load(state_file, now).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(loaded.into_book(bans::BOOK_CAPACITY))
}
