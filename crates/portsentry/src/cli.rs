//! Command line: PortSentry 1.2's single-dash mode flags (`-atcp`, `-audp`, ...), the
//! 2.x options that apply, and ours. 1.2 flags are rewritten to their `--` form before
//! clap sees them, so `portsentry -atcp -audp` works exactly as the init scripts call it.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::Parser;

use crate::defaults;

/// Default locations, as Debian's package installs them (see `defaults`).
pub const DEFAULT_CONFIG: &str = defaults::CONFIG_FILE;
pub const DEFAULT_DEBIAN_DEFAULTS: &str = defaults::DEBIAN_DEFAULTS_FILE;
pub const DEFAULT_SYSLOG_SOCKET: &str = defaults::SYSLOG_SOCKET;

/// Port-scan detector: logs scans of this host and blocks the scanner.
///
/// Runs as a daemon unless --foreground is given. With no mode flag, the modes come
/// from TCP_MODE/UDP_MODE in /etc/default/portsentry, or default to -atcp -audp.
#[derive(Debug, Parser)]
#[command(name = "portsentry", version, about, long_about = None, after_help = AFTER_HELP)]
#[command(group = clap::ArgGroup::new("tcp_mode").args(["tcp", "stcp", "atcp"]).multiple(false))]
#[command(group = clap::ArgGroup::new("udp_mode").args(["udp", "sudp", "audp"]).multiple(false))]
pub struct Cli {
    /// Classic TCP mode (1.2 `-tcp`): listen on TCP_PORTS; a completed connect is a hit.
    #[arg(long = "tcp")]
    pub tcp: bool,
    /// Stealth TCP mode: watch the ports in TCP_PORTS.
    #[arg(long = "stcp")]
    pub stcp: bool,
    /// Advanced stealth TCP mode: watch every port below ADVANCED_PORTS_TCP that has no
    /// listening service, except ADVANCED_EXCLUDE_TCP.
    #[arg(long = "atcp")]
    pub atcp: bool,
    /// Classic UDP mode (1.2 `-udp`): bind UDP_PORTS; a datagram is a hit.
    #[arg(long = "udp")]
    pub udp: bool,
    /// Stealth UDP mode: watch the ports in UDP_PORTS.
    #[arg(long = "sudp")]
    pub sudp: bool,
    /// Advanced stealth UDP mode: watch every port below ADVANCED_PORTS_UDP with no
    /// bound socket, except ADVANCED_EXCLUDE_UDP.
    #[arg(long = "audp")]
    pub audp: bool,

    /// PortSentry 2.x: stealth mode, 2.x's default: the ports of TCP_PORTS and
    /// UDP_PORTS, watched without listening (as -stcp -sudp). 2.x's log lines.
    #[arg(long = "stealth", conflicts_with_all = ["connect", "tcp_mode", "udp_mode"])]
    pub stealth: bool,
    /// PortSentry 2.x: connect mode: listen on the ports of TCP_PORTS and UDP_PORTS
    /// (as -tcp -udp). 2.x's log lines.
    #[arg(long = "connect", conflicts_with_all = ["tcp_mode", "udp_mode"])]
    pub connect: bool,
    /// PortSentry 2.x: watch only this interface (repeatable). ALL, ALL_NLO (all but
    /// loopback: the default) and any watch every interface.
    ///
    /// Named interfaces limit the kernel traps; bans still drop a banned source on
    /// every interface. Without nftables every interface is watched, with a warning.
    #[arg(short = 'i', long = "interface", value_name = "IF")]
    pub interfaces: Vec<String>,
    /// PortSentry 2.x: stealth method. Both are served the same way here (kernel
    /// traps, or the packet socket without nftables); accepted for 2.x command lines.
    #[arg(short = 'm', long = "method", value_name = "METHOD", value_parser = ["pcap", "raw"])]
    pub method: Option<String>,
    /// PortSentry 2.x: where log lines go, stdout (2.x's default) or syslog.
    #[arg(short = 'l', long = "logoutput", value_name = "OUTPUT", value_parser = ["stdout", "syslog"])]
    pub logoutput: Option<String>,
    /// PortSentry 2.x: act on packets whose source is this host's own address. This
    /// host's addresses stay protected here (a ban on them would cut it off); accepted,
    /// with a warning.
    #[arg(short = 'L', long = "disable-local-check")]
    pub disable_local_check: bool,
    /// PortSentry 2.x: act on ports where a service listens. A port with a service is
    /// never a trap here (it would ban the service's clients); accepted, with a warning.
    #[arg(short = 'S', long = "disable-service-check")]
    pub disable_service_check: bool,
    /// PortSentry 2.x: debug output (the settings in effect are printed at start).
    #[arg(short = 'd', long = "debug")]
    pub debug: bool,
    /// PortSentry 2.x: verbose output (as --debug).
    #[arg(short = 'v', long = "verbose")]
    pub verbose: bool,

    /// Configuration file (PortSentry 1.2 or 2.x syntax).
    ///
    /// Default: /etc/portsentry/portsentry.conf; when that does not exist and no -c is
    /// given, built-in defaults are used: advanced TCP and UDP (excluding TCP 113, 139
    /// and UDP 67, 137, 138, 520), blocking with the native ban.
    #[arg(short = 'c', long = "configfile", value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,
    /// Stay attached to the terminal and also log to stderr.
    #[arg(long = "foreground", short = 'F')]
    pub foreground: bool,
    /// Detach and run in the background (the default; accepted for 2.x compatibility).
    #[arg(short = 'D', long = "daemon", conflicts_with = "foreground")]
    pub daemon: bool,
    /// Read the configuration, report every problem with file:line, and exit.
    ///
    /// Reads the configuration, the ignore file and the settings, prints every problem
    /// as file:line and the effective settings; exit status 3 when startup would fail.
    #[arg(long = "check-config")]
    pub check_config: bool,

    /// Settings file for bans, the kernel fast path and the protected set (TOML).
    /// Default: /etc/portsentry/portsentry.toml when it exists, else built-in defaults.
    #[arg(long = "settings", value_name = "FILE", global = true)]
    pub settings: Option<PathBuf>,

    /// Debian's mode selection file, read when no mode flag is given.
    #[arg(long = "defaults-file", value_name = "FILE", default_value = DEFAULT_DEBIAN_DEFAULTS)]
    pub defaults_file: PathBuf,
    /// File that KILL_HOSTS_DENY lines are added to (overrides HOSTS_DENY_FILE).
    /// Default: /etc/hosts.deny.
    #[arg(long = "hosts-deny", value_name = "FILE")]
    pub hosts_deny: Option<PathBuf>,
    /// Unix datagram socket of the syslog daemon.
    #[arg(long = "syslog-socket", value_name = "PATH", default_value = DEFAULT_SYSLOG_SOCKET)]
    pub syslog_socket: PathBuf,
    /// Do not send log lines to syslog (they still go to stderr in the foreground).
    #[arg(long = "no-syslog")]
    pub no_syslog: bool,

    #[command(subcommand)]
    pub command: Option<Subcommand>,
}

/// Client commands; without one, portsentry runs the daemon.
#[derive(Debug, clap::Subcommand)]
pub enum Subcommand {
    /// List the bans in force: from the state file, and what the kernel set holds now.
    List {
        /// One JSON object on stdout (field names: portsentry(8), JSON OUTPUT).
        #[arg(long)]
        json: bool,
    },
    /// Ask the running daemon to ban an address or network (CIDR).
    Ban {
        /// Address (198.18.0.2, fd00::2) or network (198.18.0.0/24).
        target: String,
        /// How long, e.g. 30m, 12h, 7d. Default: the first-offence ban time.
        #[arg(long, value_parser = humantime::parse_duration, conflicts_with = "permanent")]
        time: Option<std::time::Duration>,
        /// Ban until lifted with `portsentry unban`.
        #[arg(long)]
        permanent: bool,
        /// Ban even an address of the protected set (this host's addresses, its
        /// gateways and resolvers, the ignore list); it overrides nothing else: never a
        /// prefix shorter than /8 (IPv4) or /16 (IPv6), never an unspecified, loopback,
        /// link-local, multicast or broadcast address. The ban is not put back when the
        /// daemon restarts.
        #[arg(long)]
        force: bool,
    },
    /// Ask the running daemon to lift the ban covering an address or network, and undo
    /// what the 1.2 KILL_HOSTS_DENY and KILL_ROUTE responses added for the address.
    Unban {
        /// Address or network.
        #[arg(required_unless_present = "origin", conflicts_with = "origin")]
        target: Option<String>,
        /// Lift every ban the fleet node NODE injected, here and (through the stream)
        /// on every node: for a compromised node.
        #[arg(long, value_name = "NODE")]
        origin: Option<String>,
    },
    /// Ask the running daemon whether it runs, and how many bans are in force.
    Status {
        /// One JSON object on stdout: modes, backend, fast path, bans by evidence
        /// class, queue depths, uptime, the engine's counters.
        #[arg(long)]
        json: bool,
    },
    /// Ask the running daemon what it knows about one address: its bans (offences,
    /// evidence, reason, end), the engine's state for it, and what protects it.
    Explain {
        /// Address (198.18.0.2, fd00::2).
        address: String,
        /// One JSON object on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Replay a capture (pcap or pcapng, e.g. from `tcpdump -w`) through the engine and
    /// ban policy of these settings, with the capture's own time stamps, and print per
    /// source what the daemon would have logged and done, and why. Nothing is banned,
    /// run or written. Exit 0, or 4 when the capture cannot be read to its end (the
    /// message says at which byte).
    Replay {
        /// The capture file.
        file: PathBuf,
        /// The captured host's address (repeatable). Default: this host's addresses
        /// that appear in the capture.
        #[arg(long = "local", value_name = "ADDR")]
        local: Vec<std::net::IpAddr>,
        /// Print the report as one JSON object (field names in portsentry(8)).
        #[arg(long)]
        json: bool,
    },
    /// Lift bans. `--all` removes our nftables table (and only it) and forgets every
    /// ban in the state file; the offence history is kept for escalation.
    Flush {
        /// Remove every ban and our whole nftables table.
        #[arg(long)]
        all: bool,
    },
}

const AFTER_HELP: &str = "\
Legacy flags are accepted with one dash, as PortSentry 1.2 takes them:
  portsentry -atcp            advanced stealth TCP
  portsentry -atcp -audp      TCP and UDP in one process

Commands:
  portsentry list [--json]                bans in force (state file and kernel)
  portsentry ban ADDR [--time 12h | --permanent]
  portsentry unban ADDR | --origin NODE
  portsentry status [--json]
  portsentry explain ADDR [--json]        bans, engine state, protection of ADDR
  portsentry flush --all                  remove our nftables table and every ban
  portsentry replay FILE.pcap [--json]    what these settings would do to a capture

Exit status: 0 on a clean shutdown, 2 on a usage error, 3 on a configuration error,
4 when the sensor or another resource cannot be set up.";

impl Subcommand {
    /// Whether output (errors included) is to be JSON.
    pub fn json(&self) -> bool {
        match self {
            Subcommand::List { json }
            | Subcommand::Status { json }
            | Subcommand::Explain { json, .. } => *json,
            _ => false,
        }
    }
}

impl Cli {
    /// Parse from the process arguments, accepting 1.2's single-dash mode flags.
    pub fn parse_args() -> Self {
        Cli::parse_from(normalize_legacy_flags(std::env::args_os()))
    }

    pub fn has_mode_flag(&self) -> bool {
        self.tcp
            || self.stcp
            || self.atcp
            || self.udp
            || self.sudp
            || self.audp
            || self.stealth
            || self.connect
    }

    /// Whether the command line is PortSentry 2.x's: a flag only 2.x has. The daemon
    /// then behaves as 2.x does (foreground unless -D, 2.x's log lines).
    pub fn is_2x(&self) -> bool {
        self.stealth
            || self.connect
            || !self.interfaces.is_empty()
            || self.method.is_some()
            || self.logoutput.is_some()
            || self.disable_local_check
            || self.disable_service_check
            || self.debug
            || self.verbose
    }
}

/// Rewrite `-tcp`, `-stcp`, ... to `--tcp`, `--stcp`, ...; other arguments unchanged.
pub fn normalize_legacy_flags<I: IntoIterator<Item = OsString>>(args: I) -> Vec<OsString> {
    const LEGACY: [&str; 6] = ["-tcp", "-udp", "-stcp", "-atcp", "-sudp", "-audp"];
    args.into_iter()
        .map(|a| match a.to_str() {
            Some(s) if LEGACY.contains(&s) => OsString::from(format!("-{s}")),
            _ => a,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Cli {
        Cli::try_parse_from(normalize_legacy_flags(args.iter().map(OsString::from))).unwrap()
    }

    #[test]
    fn legacy_single_dash_modes_are_accepted() {
        let cli = parse(&["portsentry", "-atcp", "-audp"]);
        assert!(cli.atcp && cli.audp && !cli.stcp);
        let cli = parse(&["portsentry", "-stcp", "-c", "/tmp/x.conf", "--foreground"]);
        assert!(cli.stcp && cli.foreground);
        assert_eq!(
            cli.config.as_deref(),
            Some(std::path::Path::new("/tmp/x.conf"))
        );
    }

    #[test]
    fn portsentry_2x_flags_are_accepted_with_their_meaning() {
        let cli = parse(&[
            "portsentry",
            "--stealth",
            "-i",
            "eth0",
            "-l",
            "stdout",
            "-c",
            "/x",
        ]);
        assert!(cli.stealth && cli.is_2x() && cli.has_mode_flag());
        assert_eq!(cli.interfaces, ["eth0"]);
        assert_eq!(cli.logoutput.as_deref(), Some("stdout"));
        let cli = parse(&[
            "portsentry",
            "--connect",
            "-m",
            "raw",
            "-L",
            "-S",
            "-d",
            "-v",
            "-D",
        ]);
        assert!(cli.connect && cli.disable_local_check && cli.disable_service_check);
        assert!(cli.debug && cli.verbose && cli.daemon);
        let cli = parse(&["portsentry", "-i", "eth0", "-i", "eth1"]);
        assert_eq!(cli.interfaces, ["eth0", "eth1"]);
        assert!(!parse(&["portsentry", "-atcp"]).is_2x());
        for bad in [
            &["portsentry", "--stealth", "--connect"][..],
            &["portsentry", "--stealth", "-atcp"],
            &["portsentry", "-m", "bpf"],
            &["portsentry", "-l", "file"],
        ] {
            let args = normalize_legacy_flags(bad.iter().map(OsString::from));
            assert!(Cli::try_parse_from(args).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn json_flags_of_the_client_commands() {
        let cli = parse(&["portsentry", "status", "--json"]);
        assert!(cli.command.as_ref().is_some_and(Subcommand::json));
        let cli = parse(&["portsentry", "explain", "198.18.0.2"]);
        assert!(matches!(
            &cli.command,
            Some(Subcommand::Explain { address, json: false }) if address == "198.18.0.2"
        ));
        assert!(!parse(&["portsentry", "list"]).command.unwrap().json());
    }

    #[test]
    fn no_mode_flag_is_allowed() {
        assert!(!parse(&["portsentry"]).has_mode_flag());
    }

    #[test]
    fn unknown_flag_is_a_usage_error() {
        let args = normalize_legacy_flags(["portsentry", "-xtcp"].iter().map(OsString::from));
        assert!(Cli::try_parse_from(args).is_err());
    }

    #[test]
    fn clap_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
