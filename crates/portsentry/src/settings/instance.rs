//! Several daemons on one host. Debian's init script (and the unit systemd generates
//! from it) starts `portsentry -tcp` and `portsentry -udp`: two processes reading the
//! same files. Each needs a kernel side of its own, or the second one dies on the
//! first one's NFLOG group, and a stop of either would take the other's traps away.
//!
//! The rule: a process that runs UDP modes only is the *udp instance* and derives its
//! own names from the configured ones: table `<table>_udp`, NFLOG group `<group> + 1`,
//! state file `<stem>-udp.<ext>`, control socket `<stem>-udp.<ext>`, metrics port
//! `<port> + 1` (when `[metrics] listen` is set). Every other
//! process (TCP only, or both in one) keeps the configured names. So `-tcp` + `-udp`,
//! and `-atcp -audp` in one process, both work, and two TCP processes are refused
//! clearly (the NFLOG group is taken). A ban made by either instance drops all the
//! source's traffic (each table's ban sets are matched for every packet), so the two
//! sets of bans never need merging; the client commands ask both.

use std::path::{Path, PathBuf};

use super::NativeSettings;

/// Suffix of the UDP-only instance's names.
pub const UDP_INSTANCE: &str = "udp";

/// The names of the UDP-only instance, derived from the configured ones.
pub fn udp_instance(native: &NativeSettings) -> NativeSettings {
    let mut n = native.clone();
    n.firewall.table = format!("{}_{UDP_INSTANCE}", native.firewall.table);
    n.firewall.nflog_group = native.firewall.nflog_group.wrapping_add(1);
    n.state_file = suffixed(&native.state_file, UDP_INSTANCE);
    n.control_socket = suffixed(&native.control_socket, UDP_INSTANCE);
    n.metrics_listen = native
        .metrics_listen
        // Port 0 (any free port) stays 0.
        .map(|a| {
            std::net::SocketAddr::new(a.ip(), a.port().saturating_add(u16::from(a.port() != 0)))
        });
    n
}

/// Every instance a client command may find on this host: the configured names, then
/// the UDP-only instance's.
pub fn all_instances(native: &NativeSettings) -> Vec<NativeSettings> {
    vec![native.clone(), udp_instance(native)]
}

/// `/var/lib/portsentry/state.json` → `/var/lib/portsentry/state-udp.json`.
fn suffixed(path: &Path, suffix: &str) -> PathBuf {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name = match path.extension() {
        Some(ext) => format!("{stem}-{suffix}.{}", ext.to_string_lossy()),
        None => format!("{stem}-{suffix}"),
    };
    path.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_udp_instance_has_names_of_its_own() {
        use crate::settings::sources::{FileText, TomlSource};
        let native = crate::settings::validate::native_settings(&TomlSource {
            file: FileText::absent("/etc/portsentry/portsentry.toml"),
            explicit: false,
        })
        .unwrap();
        let udp = udp_instance(&native);
        assert_eq!(udp.firewall.table, "portsentry_udp");
        assert_eq!(udp.firewall.nflog_group, native.firewall.nflog_group + 1);
        assert_eq!(
            udp.state_file,
            Path::new("/var/lib/portsentry/state-udp.json")
        );
        assert_eq!(
            udp.control_socket,
            Path::new("/run/portsentry/portsentry-udp.sock")
        );
        assert_eq!(
            suffixed(Path::new("/run/x"), "udp"),
            Path::new("/run/x-udp")
        );
        assert!(portsentry_kernel::nft::valid_table_name(
            &udp.firewall.table
        ));
        let with_metrics = NativeSettings {
            metrics_listen: Some("127.0.0.1:9512".parse().unwrap()),
            ..native
        };
        assert_eq!(
            udp_instance(&with_metrics).metrics_listen,
            Some("127.0.0.1:9513".parse().unwrap())
        );
    }
}
