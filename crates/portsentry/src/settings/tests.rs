//! `validate` on literal sources: the merge of the 1.2 config, Debian's mode file,
//! portsentry.toml and the flags into `Settings`, and every error with its file:line.
//! No file is read; the reading layer has its own tests in `sources`.

use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use portsentry_engine::Proto;
use portsentry_engine::bans::{BanPolicies, BanPolicy};
use portsentry_engine::ports::{PortSet, Watch};

use super::sources::{Content, FileText, Flags, Sources, TomlSource};
use super::*;
use crate::config::{BlockMode, ModeKind};

const CONF: &str = "/etc/portsentry/portsentry.conf";
const DEBIAN: &str = "/etc/default/portsentry";
const TOML: &str = "/etc/portsentry/portsentry.toml";
const IGNORE: &str = "/etc/portsentry/portsentry.ignore";
const IGNORE_STATIC: &str = "/etc/portsentry/portsentry.ignore.static";

/// A config naming Debian's ignore file and both port lists.
const BASE: &str = "TCP_PORTS=\"1,11,15,79,111\"\nUDP_PORTS=\"1,7,9,69\"\n\
                    IGNORE_FILE=\"/etc/portsentry/portsentry.ignore\"\n";

/// Sources as `sources::read` gives them on a host with nothing installed: no flag,
/// no config (embedded defaults), no Debian file, no portsentry.toml, no ignore file.
fn nothing() -> Sources {
    Sources {
        flags: Flags::default(),
        config: None,
        debian_defaults: Some(FileText::absent(DEBIAN)),
        toml: TomlSource {
            file: FileText::absent(TOML),
            explicit: false,
        },
        ignore_files: vec![FileText::absent(IGNORE)],
    }
}

/// A legacy config with this text and the ignore file it names (`BASE` names IGNORE).
fn conf(text: &str) -> Sources {
    Sources {
        config: Some(FileText::text(CONF, text)),
        ignore_files: vec![FileText::text(IGNORE, "127.0.0.1/32\n0.0.0.0\n")],
        ..nothing()
    }
}

fn with_flags(mut s: Sources, tcp: Option<ModeKind>, udp: Option<ModeKind>) -> Sources {
    s.flags.tcp = tcp;
    s.flags.udp = udp;
    // sources::read consults Debian's file only without a mode flag.
    s.debian_defaults = None;
    s
}

fn with_debian(mut s: Sources, text: &str) -> Sources {
    s.debian_defaults = Some(FileText::text(DEBIAN, text));
    s
}

fn with_toml(mut s: Sources, text: &str) -> Sources {
    s.toml.file = FileText::text(TOML, text);
    s
}

fn ok(s: &Sources) -> Settings {
    validate(s).unwrap_or_else(|e| panic!("{e:#}"))
}

fn err(s: &Sources) -> String {
    format!("{:#}", validate(s).unwrap_err())
}

fn unreadable(path: &str) -> FileText {
    FileText {
        path: path.into(),
        content: Content::Unreadable(io::Error::from_raw_os_error(libc::EACCES)),
    }
}

fn mode_names(s: &Settings) -> (Option<&str>, Option<&str>) {
    (
        s.tcp.as_ref().map(|m| m.name),
        s.udp.as_ref().map(|m| m.name),
    )
}

fn ports(list: &str) -> PortSet {
    PortSet::parse_list(list).unwrap()
}

// ---- modes --------------------------------------------------------------------------

#[test]
fn mode_flags_win_over_the_debian_file() {
    let mut s = with_flags(
        conf(BASE),
        Some(ModeKind::Stealth),
        Some(ModeKind::Advanced),
    );
    // Even if it had been read, a Debian file does not override flags.
    s.debian_defaults = Some(FileText::text(DEBIAN, "TCP_MODE=\"atcp\"\n"));
    let st = ok(&s);
    assert_eq!(mode_names(&st), (Some("stcp"), Some("audp")));
    let tcp = st.tcp.as_ref().unwrap();
    assert_eq!(tcp.proto, Proto::Tcp);
    assert!(matches!(&tcp.watch, Watch::Listed(p) if *p == ports("1,11,15,79,111")));
    assert_eq!(
        tcp.blocked_file,
        PathBuf::from("/var/lib/portsentry/portsentry.blocked.stcp")
    );
    assert!(!st.notices.iter().any(|n| n.contains("modes taken from")));
}

#[test]
fn one_mode_flag_runs_one_protocol() {
    let st = ok(&with_flags(conf(BASE), None, Some(ModeKind::Stealth)));
    assert_eq!(mode_names(&st), (None, Some("sudp")));
    assert_eq!(st.max_watched_port(), 69);
}

#[test]
fn modes_from_the_debian_file_with_a_notice() {
    let st = ok(&with_debian(
        conf(BASE),
        "# Debian\nTCP_MODE=\"atcp\"\nUDP_MODE=\"sudp\"\n",
    ));
    assert_eq!(mode_names(&st), (Some("atcp"), Some("sudp")));
    assert_eq!(
        st.notices,
        ["adminalert: modes taken from /etc/default/portsentry"]
    );

    // A file setting only TCP_MODE runs only TCP.
    let st = ok(&with_debian(conf(BASE), "TCP_MODE=\"stcp\"\n"));
    assert_eq!(mode_names(&st), (Some("stcp"), None));
}

#[test]
fn built_in_modes_without_flags_or_debian_modes() {
    // No Debian file.
    let st = ok(&conf(BASE));
    assert_eq!(mode_names(&st), (Some("atcp"), Some("audp")));
    assert!(st.notices.is_empty(), "{:?}", st.notices);
    // A Debian file that sets no mode.
    let st = ok(&with_debian(conf(BASE), "DAEMON_OPTS=\"-v\"\n"));
    assert_eq!(mode_names(&st), (Some("atcp"), Some("audp")));
    assert!(st.notices.is_empty(), "{:?}", st.notices);
}

#[test]
fn issue_8_classic_modes_run_as_classic_modes() {
    let st = ok(&with_flags(
        conf(BASE),
        Some(ModeKind::Classic),
        Some(ModeKind::Classic),
    ));
    assert_eq!(mode_names(&st), (Some("tcp"), Some("udp")));
    assert_eq!(st.tcp.as_ref().unwrap().kind, ModeKind::Classic);
    assert_eq!(st.tcp.as_ref().unwrap().plan.mode, "tcp");
    assert!(st.tcp.as_ref().unwrap().plan.classic());
    // 1.2's blocked file name: BLOCKED_FILE + ".udp".
    assert_eq!(
        st.udp.as_ref().unwrap().blocked_file,
        PathBuf::from("/var/lib/portsentry/portsentry.blocked.udp")
    );
    assert!(st.notices.is_empty(), "{:?}", st.notices);
    // Their ports are the listener's, and no packet mode runs.
    assert_eq!(st.listen.tcp, ports("1,11,15,79,111"));
    assert_eq!(st.listen.udp, ports("1,7,9,69"));
    assert!(st.listen.handshake.is_empty() && st.listen.banner.is_none());
    assert_eq!(st.packet_modes().count(), 0);
    assert_eq!(st.max_watched_port(), 0);
    // The same from Debian's file (as postinst writes it), after its own notice.
    let st = ok(&with_debian(
        conf(BASE),
        "TCP_MODE=\"tcp\"\nUDP_MODE=\"udp\"\n",
    ));
    assert_eq!(mode_names(&st), (Some("tcp"), Some("udp")));
    assert_eq!(
        st.notices,
        ["adminalert: modes taken from /etc/default/portsentry"]
    );
    // Ranges and more than 1.2's 64 ports.
    let st = ok(&with_flags(
        conf("TCP_PORTS=\"1-100,2000-2099\"\nIGNORE_FILE=\"/etc/portsentry/portsentry.ignore\"\n"),
        Some(ModeKind::Classic),
        None,
    ));
    assert_eq!(st.listen.tcp.len(), 200);
    assert!(st.listen.udp.is_empty());
}

#[test]
fn issue_8_port_banner_and_its_udp_opt_in() {
    let banner = format!("{BASE}PORT_BANNER=\"** go away **\"\n");
    // -tcp sends it, silently.
    let st = ok(&with_flags(conf(&banner), Some(ModeKind::Classic), None));
    assert_eq!(st.listen.banner.as_deref(), Some("** go away **"));
    assert!(st.notices.is_empty(), "{:?}", st.notices);
    // -udp does not, unless opted in; the notice says how.
    let st = ok(&with_flags(conf(&banner), None, Some(ModeKind::Classic)));
    assert!(!st.listen.udp_banner);
    assert_eq!(
        st.notices,
        [
            "adminalert: PORT_BANNER is not sent in reply to UDP datagrams: a UDP source address \
          can be forged, so the reply could go to a victim (set [listen] udp_banner = true to \
          send it, as PortSentry 1.2 did)"
        ]
    );
    let st = ok(&with_toml(
        with_flags(conf(&banner), None, Some(ModeKind::Classic)),
        "[listen]\nudp_banner = true\n",
    ));
    assert!(st.listen.udp_banner && st.notices.is_empty());
    // 1.2's buffer: at most 1023 bytes are sent, with a warning.
    let long = format!("{BASE}PORT_BANNER=\"{}\"\n", "x".repeat(2000));
    let st = ok(&with_flags(conf(&long), Some(ModeKind::Classic), None));
    assert_eq!(st.listen.banner.as_ref().map(String::len), Some(1023));
    assert_eq!(st.notices.len(), 1, "{:?}", st.notices);
}

#[test]
fn issue_7_handshake_ports_beside_a_stealth_or_advanced_tcp_mode() {
    let with_ports = |s| with_toml(s, "[listen]\nhandshake_ports = [23, \"2000-2001\", 111]\n");
    let st = ok(&with_ports(with_flags(
        conf(BASE),
        Some(ModeKind::Advanced),
        Some(ModeKind::Advanced),
    )));
    assert_eq!(st.listen.tcp, ports("23,111,2000,2001"));
    assert_eq!(st.listen.handshake, ports("23,111,2000,2001"));
    assert!(st.listen.udp.is_empty());
    assert_eq!(st.packet_modes().count(), 2);
    // In -tcp they join TCP_PORTS (111 is there already, so it is a classic port).
    let st = ok(&with_ports(with_flags(
        conf(BASE),
        Some(ModeKind::Classic),
        None,
    )));
    assert_eq!(st.listen.tcp, ports("1,11,15,23,79,111,2000,2001"));
    assert_eq!(st.listen.handshake, ports("23,2000,2001"));
    // Without a TCP mode they are not opened, and a warning says so.
    let st = ok(&with_ports(with_flags(
        conf(BASE),
        None,
        Some(ModeKind::Advanced),
    )));
    assert!(st.listen.is_empty());
    assert_eq!(
        st.notices,
        [
            "adminalert: WARNING: [listen] handshake_ports (23,111,2000-2001) are not opened: no \
          TCP mode runs in this process"
        ]
    );
    // A bad entry is an error naming the file.
    let e = err(&with_toml(
        conf(BASE),
        "[listen]\nhandshake_ports = [\"telnet\"]\n",
    ));
    assert!(e.contains("listen.handshake_ports: `telnet`"), "{e}");
}

#[test]
fn listed_modes_require_their_port_list() {
    let no_lists = "IGNORE_FILE=\"/etc/portsentry/portsentry.ignore\"\n";
    let cases = [
        (
            Some(ModeKind::Stealth),
            None,
            "TCP_PORTS is required for -stcp",
        ),
        (
            Some(ModeKind::Classic),
            None,
            "TCP_PORTS is required for -tcp",
        ),
        (
            None,
            Some(ModeKind::Stealth),
            "UDP_PORTS is required for -sudp",
        ),
        (
            None,
            Some(ModeKind::Classic),
            "UDP_PORTS is required for -udp",
        ),
    ];
    for (tcp, udp, message) in cases {
        assert_eq!(
            err(&with_flags(conf(no_lists), tcp, udp)),
            format!("{CONF}: {message}")
        );
    }
    // The advanced modes need no list.
    ok(&with_flags(
        conf(no_lists),
        Some(ModeKind::Advanced),
        Some(ModeKind::Advanced),
    ));
    // The embedded defaults have no lists either.
    assert_eq!(
        err(&with_flags(nothing(), Some(ModeKind::Stealth), None)),
        "built-in defaults (no config file): TCP_PORTS is required for -stcp"
    );
}

#[test]
fn advanced_modes_take_their_limit_and_exclusions() {
    let st = ok(&conf(&format!(
        "{BASE}ADVANCED_PORTS_TCP=\"2048\"\nADVANCED_EXCLUDE_TCP=\"22,80\"\n"
    )));
    assert!(matches!(
        &st.tcp.as_ref().unwrap().watch,
        Watch::Advanced { below: 2048, exclude } if *exclude == ports("22,80")
    ));
    // Without the keys: 1.2's fallbacks, ports below 1024 and no exclusion.
    assert!(matches!(
        &st.udp.as_ref().unwrap().watch,
        Watch::Advanced { below: 1024, exclude } if exclude.is_empty()
    ));
    assert_eq!(st.max_watched_port(), 2047);
}

// ---- embedded defaults ----------------------------------------------------------------

#[test]
fn embedded_defaults_without_any_file() {
    let st = ok(&nothing());
    assert_eq!(st.config_source, "built-in defaults (no config file)");
    assert_eq!(mode_names(&st), (Some("atcp"), Some("audp")));
    assert!(matches!(
        &st.tcp.as_ref().unwrap().watch,
        Watch::Advanced { below: 1024, exclude } if *exclude == ports("113,139")
    ));
    assert!(matches!(
        &st.udp.as_ref().unwrap().watch,
        Watch::Advanced { below: 1024, exclude } if *exclude == ports("520,138,137,67")
    ));
    for mode in [&st.tcp, &st.udp].into_iter().flatten() {
        assert_eq!(mode.plan.block, BlockMode::Block);
        assert!(mode.plan.kill_route.is_none() && mode.plan.kill_run_cmd.is_none());
    }
    assert_eq!(
        st.history_file,
        PathBuf::from("/var/lib/portsentry/portsentry.history")
    );
    // No ignore file: the loopback ranges only, and no warning (nothing to fix).
    assert_eq!(st.ignore_file, None);
    assert_eq!(st.ignore.len(), 2);
    assert!(st.ignore.contains("127.0.0.9".parse::<IpAddr>().unwrap()));
    assert!(st.ignore.contains("::1".parse::<IpAddr>().unwrap()));
    assert!(st.notices.is_empty(), "{:?}", st.notices);
    assert_eq!(st.engine.scan_trigger, 0);
    assert!(!st.resolve_host);
    assert_eq!(
        st.describe()[..2],
        [
            "mode atcp: ports below 1024 except 113,139, block, blocked file \
             /var/lib/portsentry/portsentry.blocked.atcp",
            "mode audp: ports below 1024 except 67,137-138,520, block, blocked file \
             /var/lib/portsentry/portsentry.blocked.audp",
        ]
    );
}

#[test]
fn embedded_defaults_use_the_debian_ignore_file_when_present() {
    let mut s = nothing();
    s.ignore_files = vec![FileText::text(IGNORE, "192.0.2.7\n")];
    let st = ok(&s);
    assert_eq!(st.ignore_file.as_deref(), Some(Path::new(IGNORE)));
    assert_eq!(st.ignore.len(), 1);
    assert!(st.ignore.contains("192.0.2.7".parse::<IpAddr>().unwrap()));
}

// ---- ignore list ------------------------------------------------------------------------

#[test]
fn ignore_file_named_by_the_config() {
    let st = ok(&conf(BASE));
    assert_eq!(st.ignore_file.as_deref(), Some(Path::new(IGNORE)));
    assert_eq!(st.ignore.len(), 2);
    assert!(st.ignore.contains("0.0.0.0".parse::<IpAddr>().unwrap()));
}

#[test]
fn absent_ignore_file_falls_back_to_its_static_part() {
    let mut s = conf(BASE);
    s.ignore_files = vec![
        FileText::text(IGNORE_STATIC, "198.51.100.0/24\n"),
        FileText::absent(IGNORE),
    ];
    let st = ok(&s);
    assert_eq!(st.ignore_file.as_deref(), Some(Path::new(IGNORE_STATIC)));
    assert!(
        st.ignore
            .contains("198.51.100.9".parse::<IpAddr>().unwrap())
    );
    assert_eq!(
        st.notices,
        [format!(
            "adminalert: {IGNORE} does not exist; using {IGNORE_STATIC} (this host's own \
             addresses are protected anyway)"
        )]
    );
}

#[test]
fn absent_ignore_file_without_static_part_is_an_error() {
    let mut s = conf(BASE);
    s.ignore_files = vec![FileText::absent(IGNORE_STATIC), FileText::absent(IGNORE)];
    assert_eq!(
        err(&s),
        format!(
            "IGNORE_FILE {IGNORE}: cannot read ignore file {IGNORE}: No such file or \
             directory (os error 2)"
        )
    );
    let mut s = conf(BASE);
    s.ignore_files = vec![unreadable(IGNORE)];
    assert_eq!(
        err(&s),
        format!(
            "IGNORE_FILE {IGNORE}: cannot read ignore file {IGNORE}: Permission denied \
             (os error 13)"
        )
    );
}

#[test]
fn ignore_file_errors_carry_file_and_line() {
    let mut s = conf(BASE);
    s.ignore_files = vec![FileText::text(
        IGNORE,
        "127.0.0.1\nlocalhost\n10.0.0.0/33\n",
    )];
    assert_eq!(
        err(&s),
        format!(
            "IGNORE_FILE {IGNORE}: {IGNORE}:2: `localhost` is not an IPv4 or IPv6 address \
             (`localhost`)\n{IGNORE}:3: prefix length `33` is not a number 0-32 (netmask \
             notation such as 255.255.255.0 is not accepted) (`10.0.0.0/33`)\n{IGNORE}: \
             refused, although PortSentry 1.2 started on it: 1.2 read each line above as no \
             address or as only its first, so a host listed there could be banned; write one \
             address or network per line"
        )
    );
}

#[test]
fn config_without_ignore_file_warns_and_ignores_loopback() {
    let st = ok(&conf("TCP_PORTS=\"1\"\n"));
    assert_eq!(st.ignore_file, None);
    assert_eq!(st.ignore.len(), 2);
    assert_eq!(
        st.notices,
        [
            "adminalert: WARNING: IGNORE_FILE is not set; only the loopback range is ignored \
          (set it to /etc/portsentry/portsentry.ignore to whitelist hosts)"
        ]
    );
}

// ---- responses ----------------------------------------------------------------------------

#[test]
fn block_modes_per_protocol() {
    // A config file that sets nothing blocks nothing (1.2's fallback).
    let st = ok(&conf(BASE));
    assert_eq!(st.tcp.as_ref().unwrap().plan.block, BlockMode::LogOnly);
    assert_eq!(st.udp.as_ref().unwrap().plan.block, BlockMode::LogOnly);
    let st = ok(&conf(&format!(
        "{BASE}BLOCK_TCP=\"1\"\nBLOCK_UDP=\"2\"\nKILL_RUN_CMD=\"/bin/true\"\n"
    )));
    assert_eq!(st.tcp.as_ref().unwrap().plan.block, BlockMode::Block);
    assert_eq!(st.udp.as_ref().unwrap().plan.block, BlockMode::RunCmdOnly);
    assert_eq!(
        st.describe()[..2],
        [
            "mode atcp: ports below 1024, block, blocked file \
             /var/lib/portsentry/portsentry.blocked.atcp",
            "mode audp: ports below 1024, run KILL_RUN_CMD only, blocked file \
             /var/lib/portsentry/portsentry.blocked.audp",
        ]
    );
}

#[test]
fn kill_commands_make_each_modes_plan() {
    let text = format!(
        "{BASE}KILL_ROUTE=\"/sbin/route add -host $TARGET$ reject\"\n\
         KILL_HOSTS_DENY=\"ALL: $TARGET$ : DENY\"\n\
         KILL_RUN_CMD=\"/usr/local/bin/tell $TARGET$ $PORT$ $MODE$\"\n\
         KILL_RUN_CMD_FIRST=\"1\"\nHOSTS_DENY_FILE=\"/tmp/hosts.deny\"\n\
         BLOCKED_FILE=\"/tmp/ps/blocked\"\n"
    );
    let st = ok(&conf(&text));
    for (mode, name) in [(&st.tcp, "atcp"), (&st.udp, "audp")] {
        let plan = &mode.as_ref().unwrap().plan;
        assert_eq!(plan.mode, name);
        assert_eq!(
            plan.kill_route.as_deref(),
            Some("/sbin/route add -host $TARGET$ reject")
        );
        assert_eq!(
            plan.kill_hosts_deny.as_deref(),
            Some("ALL: $TARGET$ : DENY")
        );
        assert_eq!(
            plan.kill_run_cmd.as_deref(),
            Some("/usr/local/bin/tell $TARGET$ $PORT$ $MODE$")
        );
        assert!(plan.kill_run_cmd_first);
        assert_eq!(plan.hosts_deny_file, PathBuf::from("/tmp/hosts.deny"));
        assert_eq!(
            mode.as_ref().unwrap().blocked_file,
            PathBuf::from(format!("/tmp/ps/blocked.{name}"))
        );
    }
    // --hosts-deny wins over HOSTS_DENY_FILE; without either, 1.2's /etc/hosts.deny.
    let mut s = conf(&text);
    s.flags.hosts_deny = Some("/srv/hosts.deny".into());
    let st = ok(&s);
    assert_eq!(
        st.tcp.unwrap().plan.hosts_deny_file,
        PathBuf::from("/srv/hosts.deny")
    );
    let st = ok(&conf(BASE));
    let plan = &st.tcp.as_ref().unwrap().plan;
    assert_eq!(plan.hosts_deny_file, PathBuf::from("/etc/hosts.deny"));
    assert!(plan.kill_route.is_none() && !plan.kill_run_cmd_first);
}

#[test]
fn other_legacy_values_and_notices() {
    let st = ok(&conf(&format!(
        "{BASE}SCAN_TRIGGER=\"2\"\nRESOLVE_HOST=\"1\"\nHISTORY_FILE=\"/tmp/h\"\n\
         PORT_BANNER=\"go away\"\nFOO=\"1\"\n"
    )));
    assert_eq!(st.config_source, CONF);
    assert_eq!(st.engine.scan_trigger, 2);
    assert!(st.resolve_host);
    assert_eq!(st.history_file, PathBuf::from("/tmp/h"));
    assert_eq!(
        st.notices,
        [
            format!("adminalert: WARNING: {CONF}:8: unknown key FOO, ignored"),
            "adminalert: PORT_BANNER is set but only applies to ports that accept connections \
             (the classic -tcp/-udp modes and [listen] handshake_ports); it is not sent"
                .to_string(),
        ]
    );
}

// ---- portsentry.toml --------------------------------------------------------------------

#[test]
fn toml_defaults_without_a_file() {
    let st = ok(&conf(BASE));
    assert_eq!(st.toml_source, "built-in defaults");
    assert_eq!(st.ban_policies, BanPolicies::default());
    assert_eq!(st.firewall, FirewallSettings::default());
    assert_eq!(st.firewall.table, "portsentry");
    assert_eq!(st.firewall.backend, Backend::Auto);
    assert!(st.protect.enabled);
    assert_eq!(st.protect.resolv_conf, PathBuf::from("/etc/resolv.conf"));
    assert_eq!(
        st.state_file,
        PathBuf::from("/var/lib/portsentry/state.json")
    );
    assert_eq!(
        st.control_socket,
        PathBuf::from("/run/portsentry/portsentry.sock")
    );
}

#[test]
fn ban_policy_and_native_values_from_toml() {
    let st = ok(&with_toml(
        conf(BASE),
        "[firewall]\nbackend = \"ipset\"\ntable = \"ps_test\"\nfast_path = false\n\
         [bans]\ntime = \"5m\"\nescalation = 3\nmax_time = \"1d\"\npermanent_after = 4\n\
         group_v4 = 24\ngroup_v6 = 64\nforget_offences_after = \"2d\"\n\
         [protect]\nenabled = false\nresolv_conf = \"/tmp/resolv\"\nextra = [\"198.18.0.0/24\"]\n\
         [state]\nfile = \"/tmp/state.json\"\n[control]\nsocket = \"/tmp/ps.sock\"\n",
    ));
    assert_eq!(st.toml_source, TOML);
    assert_eq!(
        st.ban_policies.verified,
        BanPolicy {
            ban_time: Duration::from_secs(300),
            escalation_factor: 3,
            max_ban_time: Duration::from_secs(86_400),
            permanent_after: Some(4),
            group_v4: 24,
            group_v6: 64,
            forget_offences_after: Duration::from_secs(2 * 86_400),
            offence_gap: Duration::ZERO,
            ban: true,
        }
    );
    // [bans] is the verified policy; single packets keep the provisional one, grouped
    // as [bans] says.
    assert_eq!(
        st.ban_policies.unverified,
        BanPolicy {
            group_v4: 24,
            group_v6: 64,
            ..BanPolicy::provisional()
        }
    );
    assert_eq!(st.firewall.backend, Backend::Ipset);
    assert_eq!(st.firewall.table, "ps_test");
    assert!(!st.firewall.fast_path);
    assert!(!st.protect.enabled);
    assert_eq!(st.protect.resolv_conf, PathBuf::from("/tmp/resolv"));
    assert_eq!(st.protect.extra, ["198.18.0.0/24".parse().unwrap()]);
    assert_eq!(st.state_file, PathBuf::from("/tmp/state.json"));
    assert_eq!(st.control_socket, PathBuf::from("/tmp/ps.sock"));
    let described = st.describe();
    let bans = "bans: 5m first, x3 per repeat offence up to 1day, permanent from offence 4, \
         state file /tmp/state.json";
    assert!(described.iter().any(|l| l == bans), "{described:#?}");
    assert_eq!(
        described[described.len() - 2..],
        ["metrics: off ([metrics] listen)", "stderr log format: text"]
    );
    assert!(
        described.iter().any(|l| l
            == "unverified bans (single packets): 10m first, x2 per offence at least 1h apart, up to 1day"),
        "{described:#?}"
    );
    // permanent_after = 0 means never.
    let st = ok(&with_toml(conf(BASE), "[bans]\npermanent_after = 0\n"));
    assert_eq!(st.ban_policies.verified.permanent_after, None);
}

#[test]
fn native_settings_alone_for_the_client_commands() {
    let toml = TomlSource {
        file: FileText::text(TOML, "[control]\nsocket = \"/tmp/c.sock\"\n"),
        explicit: true,
    };
    let n = validate::native_settings(&toml).unwrap();
    assert_eq!(n.control_socket, PathBuf::from("/tmp/c.sock"));
    assert_eq!(n.source, TOML);
    assert_eq!(n.ban_policies, BanPolicies::default());
}

// ---- errors, each with its file:line --------------------------------------------------

#[test]
fn legacy_config_errors_with_file_and_line() {
    assert_eq!(
        err(&conf(&format!(
            "{BASE}KILL_ROUTE=\"route\"\nKILL_HOSTS_DENY=\"ALL\"\nKILL_RUN_CMD=\"x\"\n"
        ))),
        format!(
            "{CONF}:4: KILL_ROUTE=\"route\": must contain $TARGET$ (the address to block); refused although PortSentry 1.2 ran it: the command names no host, yet 1.2 logged each host as blocked\n\
             {CONF}:5: KILL_HOSTS_DENY=\"ALL\": must contain $TARGET$ (the address to block); refused although PortSentry 1.2 ran it: the command names no host, yet 1.2 logged each host as blocked"
        )
    );
}

/// Issue 8 item 2: what 1.2 read, read as 1.2 read it, each with a warning at file:line.
#[test]
fn issue_8_values_1_2_read_start_with_its_reading_and_a_warning() {
    let st = ok(&with_flags(
        conf(&format!(
            "{BASE}ADVANCED_PORTS_TCP=\"21,22,80,443\"\nADVANCED_PORTS_UDP=\"70000\"\n\
             ADVANCED_EXCLUDE_UDP=\"137,abc\"\nBLOCK_TCP=\"7\"\nBLOCK_UDP=\"1 \"\n\
             SCAN_TRIGGER=\"1-100\"\nRESOLVE_HOST=\"yes\"\nKILL_ROUTE=route\n\
             HISTORY_FILE=\"history\"\nKILL_HOSTS_DENY=\"ALL: $TARGET$\n"
        )),
        Some(ModeKind::Advanced),
        Some(ModeKind::Advanced),
    ));
    let (tcp, udp) = (st.tcp.as_ref().unwrap(), st.udp.as_ref().unwrap());
    assert_eq!(
        tcp.watch,
        Watch::Advanced {
            below: 21,
            exclude: PortSet::new()
        }
    );
    assert_eq!(
        udp.watch,
        Watch::Advanced {
            below: 65536,
            exclude: ports("137")
        }
    );
    assert_eq!(tcp.plan.block, BlockMode::LogOnly);
    assert_eq!(
        udp.plan.block,
        BlockMode::Block,
        "line 8 is plain: no warning"
    );
    assert_eq!(st.engine.scan_trigger, 1);
    assert!(!st.resolve_host);
    assert_eq!(tcp.plan.kill_route, None);
    assert_eq!(tcp.plan.kill_hosts_deny.as_deref(), Some("ALL: $TARGET$"));
    assert_eq!(st.history_file, PathBuf::from("/history"));
    let lines: Vec<String> = st
        .notices
        .iter()
        .filter_map(|n| n.strip_prefix(&format!("adminalert: WARNING: {CONF}:")))
        .map(|n| n.split_once(' ').unwrap().0.to_string())
        .collect();
    assert_eq!(
        lines,
        ["4:", "5:", "6:", "7:", "9:", "10:", "11:", "12:", "13:"],
        "{:#?}",
        st.notices
    );
    assert!(st.notices[0].ends_with(
        "ADVANCED_PORTS_TCP=\"21,22,80,443\" read as 21, as PortSentry 1.2 does: this key is \
         the highest port watched, not a list (use TCP_PORTS with -stcp to watch a list)"
    ));
}

#[test]
fn unreadable_legacy_config() {
    let mut s = conf(BASE);
    s.config = Some(unreadable(CONF));
    assert_eq!(
        err(&s),
        format!("cannot read config file {CONF}: Permission denied (os error 13)")
    );
    // -c naming a file that is not there.
    s.config = Some(FileText {
        path: "/nonexistent/portsentry.conf".into(),
        content: Content::Unreadable(io::Error::from_raw_os_error(libc::ENOENT)),
    });
    assert_eq!(
        err(&s),
        "cannot read config file /nonexistent/portsentry.conf: No such file or directory \
         (os error 2)"
    );
}

#[test]
fn debian_file_errors_with_file_and_line() {
    assert_eq!(
        err(&with_debian(
            conf(BASE),
            "# ok\nTCP_MODE=\"xtcp\"\nUDP_MODE = \"udp\"\n"
        )),
        format!(
            "{DEBIAN}:2: TCP_MODE=\"xtcp\" is not a mode (expected tcp, stcp or atcp)\n\
             {DEBIAN}:3: spaces around `=`: a shell runs this as a command instead of \
             setting UDP_MODE; write UDP_MODE=\"value\""
        )
    );
    let mut s = conf(BASE);
    s.debian_defaults = Some(unreadable(DEBIAN));
    assert_eq!(
        err(&s),
        format!("cannot read {DEBIAN}: Permission denied (os error 13)")
    );
}

#[test]
fn toml_errors_with_line_and_column() {
    let e = err(&with_toml(
        conf(BASE),
        "[bans]\ntime = \"1h\"\nbantime = \"2h\"\n",
    ));
    assert!(e.starts_with(&format!("{TOML}:3:1: ")), "{e}");
    assert!(e.contains("bantime"), "{e}");
    let e = err(&with_toml(conf(BASE), "[bans]\ntime = \"an hour\"\n"));
    assert!(e.starts_with(&format!("{TOML}:2:8: ")), "{e}");
    assert_eq!(
        err(&with_toml(
            conf(BASE),
            "[bans]\ntime = \"2h\"\nmax_time = \"1h\"\n"
        )),
        format!("{TOML}: bans.max_time must be at least bans.time")
    );
    let mut s = conf(BASE);
    s.toml.file = unreadable(TOML);
    assert_eq!(
        err(&s),
        format!("cannot read {TOML}: Permission denied (os error 13)")
    );
}

#[test]
fn missing_settings_file_named_by_flag() {
    let mut s = conf(BASE);
    s.toml = TomlSource {
        file: FileText::absent("/srv/ps.toml"),
        explicit: true,
    };
    assert_eq!(err(&s), "settings file /srv/ps.toml does not exist");
}

#[test]
fn first_problem_wins_in_a_fixed_order() {
    // Legacy config, then Debian's file, then portsentry.toml, then port lists, then
    // the ignore file.
    let mut s = with_toml(
        with_debian(
            conf("KILL_ROUTE=\"route\"\n"),
            "TCP_MODE=\"stcp\"\nUDP_MODE=\"bad\"\n",
        ),
        "nonsense",
    );
    s.ignore_files = vec![FileText::text(IGNORE, "bad\n")];
    assert!(err(&s).starts_with(&format!("{CONF}:1:")), "{}", err(&s));
    s.config = Some(FileText::text(
        CONF,
        "IGNORE_FILE=\"/etc/portsentry/portsentry.ignore\"\n",
    ));
    assert!(err(&s).starts_with(&format!("{DEBIAN}:2:")), "{}", err(&s));
    s.debian_defaults = Some(FileText::text(DEBIAN, "TCP_MODE=\"stcp\"\n"));
    assert!(err(&s).starts_with(&format!("{TOML}:1:")), "{}", err(&s));
    s.toml.file = FileText::absent(TOML);
    assert_eq!(err(&s), format!("{CONF}: TCP_PORTS is required for -stcp"));
    s.debian_defaults = None;
    assert!(
        err(&s).starts_with(&format!("IGNORE_FILE {IGNORE}: {IGNORE}:1:")),
        "{}",
        err(&s)
    );
}

// ---- issue 8: honest reading ------------------------------------------------------------

#[test]
fn config_that_sets_no_key_runs_on_defaults_with_a_warning() {
    for text in [
        "",
        "# nothing but a comment\n",
        "\u{7f}ELF\u{FFFD}\u{FFFD}\n",
    ] {
        let st = ok(&conf(text));
        assert_eq!(mode_names(&st), (Some("atcp"), Some("audp")), "{text:?}");
        assert_eq!(st.tcp.as_ref().unwrap().plan.block, BlockMode::LogOnly);
        assert!(
            st.notices.contains(&format!(
                "adminalert: WARNING: {CONF}: sets no key; running on built-in defaults \
                 (PortSentry 1.2's fallback for every key: BLOCK_TCP and BLOCK_UDP are 0, so \
                 alarms are only logged)"
            )),
            "{text:?}: {:?}",
            st.notices
        );
    }
    // What 1.2 required stays required: a listed mode needs its port list.
    assert_eq!(
        err(&with_flags(conf(""), Some(ModeKind::Stealth), None)),
        format!("{CONF}: TCP_PORTS is required for -stcp")
    );
}

#[test]
fn byte_order_marks_are_skipped_with_a_notice_at_line_1() {
    let mut s = with_debian(
        conf(&format!("\u{FEFF}BLOCK_TCP=\"1\"\n{BASE}")),
        "\u{FEFF}TCP_MODE=\"stcp\"\n",
    );
    s.ignore_files = vec![FileText::text(IGNORE, "\u{FEFF}198.18.0.7\n")];
    s = with_toml(s, "\u{FEFF}[bans]\ntime = \"5m\"\n");
    let st = ok(&s);
    // The first line of every file was read.
    assert_eq!(st.tcp.as_ref().unwrap().plan.block, BlockMode::Block);
    assert_eq!(mode_names(&st), (Some("stcp"), None));
    assert!(st.ignore.contains("198.18.0.7".parse::<IpAddr>().unwrap()));
    assert_eq!(st.ban_policies.verified.ban_time, Duration::from_secs(300));
    let marks: Vec<_> = st
        .notices
        .iter()
        .filter(|n| n.contains("byte-order mark"))
        .map(|n| n.split(": the file").next().unwrap())
        .collect();
    assert_eq!(
        marks,
        [
            format!("adminalert: WARNING: {CONF}:1"),
            format!("adminalert: WARNING: {DEBIAN}:1"),
            format!("adminalert: WARNING: {IGNORE}:1"),
        ]
    );
}

#[test]
fn ignore_entry_covering_everything_warns_at_its_line() {
    let mut s = conf(BASE);
    s.ignore_files = vec![FileText::text(IGNORE, "127.0.0.1\n0.0.0.0/0\n::/0\n")];
    let st = ok(&s);
    assert!(st.ignore.contains("203.0.113.9".parse::<IpAddr>().unwrap()));
    assert_eq!(
        st.notices,
        [
            format!(
                "adminalert: WARNING: {IGNORE}:2: `0.0.0.0/0` covers every IPv4 address: this \
                 turns off all detection for IPv4 (no IPv4 source is ever alarmed on or blocked)"
            ),
            format!(
                "adminalert: WARNING: {IGNORE}:3: `::/0` covers every IPv6 address: this turns \
                 off all detection for IPv6 (no IPv6 source is ever alarmed on or blocked)"
            ),
        ]
    );
    // The same from the .static part read in its place.
    let mut s = conf(BASE);
    s.ignore_files = vec![
        FileText::text(IGNORE_STATIC, "::/0\n"),
        FileText::absent(IGNORE),
    ];
    let st = ok(&s);
    assert!(
        st.notices
            .iter()
            .any(|n| n.starts_with(&format!("adminalert: WARNING: {IGNORE_STATIC}:1: `::/0`"))),
        "{:?}",
        st.notices
    );
}

#[test]
fn issue_8_a_2x_style_config_without_a_mode_runs_as_2x_does() {
    // 2.x's own example config: ranges, no ADVANCED_* key.
    let two_x = "TCP_PORTS = \"1,7,9,512-515,540\"\nUDP_PORTS = \"7,9,517-518\"\nIGNORE_FILE = \"/etc/portsentry/portsentry.ignore\"\nHISTORY_FILE = \"/var/log/portsentry.log\"\nBLOCKED_FILE = \"/tmp/portsentry.blocked\"\n";
    let st = ok(&conf(two_x));
    assert_eq!(mode_names(&st), (Some("stcp"), Some("sudp")));
    assert!(st.log_2x);
    assert!(
        st.notices
            .iter()
            .any(|n| n.contains("PortSentry 2.x's style (a port range at line 1")),
        "{:?}",
        st.notices
    );
    // A mode flag keeps 1.2's behaviour with the same file.
    let st = ok(&with_flags(conf(two_x), Some(ModeKind::Advanced), None));
    assert_eq!(mode_names(&st), (Some("atcp"), None));
    assert!(!st.log_2x);
    // A 1.2 config (ADVANCED_* keys) with a range is read as 1.2 reads it.
    let st = ok(&conf(&format!("{two_x}ADVANCED_PORTS_TCP=\"1024\"\n")));
    assert_eq!(mode_names(&st), (Some("atcp"), Some("audp")));
    assert!(!st.log_2x);
}

// ---- fleet ---------------------------------------------------------------------------

/// `[fleet]` is off by default; set, it reaches the settings and `--check-config`'s
/// description; a bad value is an error with file:line.
#[test]
fn issue10_fleet_settings_from_the_toml_file() {
    let st = ok(&with_flags(conf(BASE), Some(ModeKind::Advanced), None));
    assert!(!st.fleet.enabled());
    assert!(!st.describe().iter().any(|l| l.starts_with("fleet:")));
    let text = "[fleet]\nurl = \"redis://198.18.0.9:6379/\"\nkey_file = \"/etc/portsentry/fleet.key\"\nnode = \"web-1\"\nquorum = 2\nmax_ban_time = \"2h\"\n";
    let st = ok(&with_toml(
        with_flags(conf(BASE), Some(ModeKind::Advanced), None),
        text,
    ));
    assert!(st.fleet.enabled());
    assert_eq!(st.fleet.quorum, 2);
    assert_eq!(st.fleet.max_ban_time, std::time::Duration::from_secs(7200));
    let line = st
        .describe()
        .into_iter()
        .find(|l| l.starts_with("fleet:"))
        .unwrap();
    assert!(
        line.contains("node web-1") && line.contains("k = 2"),
        "{line}"
    );
    let e = err(&with_toml(
        with_flags(conf(BASE), Some(ModeKind::Advanced), None),
        "[fleet]\nurl = \"redis://198.18.0.9/\"\nquorum = 2\n",
    ));
    assert!(e.contains("key_file"), "{e}");
    let e = err(&with_toml(
        with_flags(conf(BASE), Some(ModeKind::Advanced), None),
        "[fleet]\nurl = \"redis://198.18.0.9/\"\nkey_file = \"/k\"\nquorom = 2\n",
    ));
    assert!(e.contains("quorom"), "{e}");
}
