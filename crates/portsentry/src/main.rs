//! `portsentry`: parse the arguments, build the settings, run; map failures to the
//! documented exit codes (see `--help`).

use std::process::ExitCode;
use std::sync::Arc;

use portsentry::cli::{Cli, Subcommand};
use portsentry::logger::Logger;
use portsentry::{alerts, client, daemon, settings};

const EXIT_CONFIG: u8 = 3;
const EXIT_RUNTIME: u8 = 4;

fn main() -> ExitCode {
    let cli = Cli::parse_args();
    if let Some(Subcommand::Replay { file, local, json }) = &cli.command {
        return replay(&cli, file, local, *json);
    }
    // Client commands need only the TOML settings (socket, table, state file): they
    // must work whatever state the legacy configuration is in.
    if let Some(command) = &cli.command {
        // With --json, a failure is a JSON object on stdout too (portsentry(8)).
        let fail = |message: String, code: u8| {
            if command.json() {
                println!("{}", client::json_failure(&message, code));
            } else {
                eprintln!("portsentry: {message}");
            }
            ExitCode::from(code)
        };
        let toml = match settings::native_from_cli(&cli) {
            Ok(t) => t,
            Err(e) => return fail(format!("configuration error: {e:#}"), EXIT_CONFIG),
        };
        let result = match command {
            Subcommand::List { json } => client::list(&toml, *json),
            Subcommand::Ban {
                target,
                time,
                permanent,
                force,
            } => client::ban(&toml, target, *time, *permanent, *force),
            Subcommand::Unban { target, origin } => match (target, origin) {
                (_, Some(node)) => client::unban_origin(&toml, node),
                (Some(target), None) => client::unban(&toml, target),
                (None, None) => unreachable!("clap requires one"),
            },
            Subcommand::Status { json } => client::status(&toml, *json),
            Subcommand::Explain { address, json } => client::explain(&toml, address, *json),
            Subcommand::Replay { .. } => unreachable!("handled above"),
            Subcommand::Flush { all: true } => client::flush_all(&toml),
            Subcommand::Flush { all: false } => {
                eprintln!(
                    "portsentry: flush needs --all; to lift one ban use `portsentry unban ADDR`"
                );
                return ExitCode::from(2);
            }
        };
        return match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(format!("{e:#}"), EXIT_RUNTIME),
        };
    }
    // The daemon's handlers go in before its configuration is read: a reload's exec
    // left the signals blocked, and a SIGHUP that waited is answered by this reading
    // (daemon::signals). `--check-config` keeps the default actions.
    let flags = if cli.check_config {
        None
    } else {
        match daemon::signals::install() {
            Ok(flags) => Some(flags),
            Err(e) => {
                eprintln!("portsentry: cannot install signal handler: {e}");
                return ExitCode::from(EXIT_RUNTIME);
            }
        }
    };
    let settings = match settings::from_cli(&cli) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("portsentry: configuration error: {e:#}");
            // An init script's start shows only its own line; the reason must also be
            // in syslog, where the admin looks next (not for --check-config, which is
            // asked at the terminal).
            if !cli.check_config && !cli.no_syslog {
                Logger::new(Some(cli.syslog_socket.as_path()), false)
                    .log(&alerts::config_failure(&format!("{e:#}")));
            }
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let Some(flags) = flags else {
        for notice in &settings.notices {
            println!("{notice}");
        }
        for line in settings.describe() {
            println!("{line}");
        }
        println!("portsentry: configuration OK ({})", settings.config_source);
        return ExitCode::SUCCESS;
    };
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!(
            "portsentry: warning: not running as root; the packet socket will probably be refused"
        );
    }
    // A reload re-executes the binary (same PID, same stdio): it must not detach again.
    let reexec = std::env::var_os(daemon::REEXEC_ENV).is_some();
    // PortSentry 2.x (its command line, or its style of config without a mode flag)
    // stays in the foreground unless -D is given.
    let run_2x = cli.is_2x() || settings.log_2x;
    let foreground = cli.foreground || (run_2x && !cli.daemon);
    if !foreground && !reexec {
        // Detach before any thread exists: fork() keeps only the calling thread. The
        // starting process waits until the traps are armed (or the start failed) and
        // exits with that outcome, so init scripts report a failed start.
        if let Err(e) = portsentry::detach::detach() {
            eprintln!("portsentry: cannot detach: {e}");
            return ExitCode::from(EXIT_RUNTIME);
        }
    }
    let syslog = (!cli.no_syslog).then_some(cli.syslog_socket.as_path());
    let log = Arc::new(
        match (run_2x, cli.logoutput.as_deref()) {
            // 2.x: stdout by default; -D forces syslog, as in 2.x.
            (true, Some("syslog")) => Logger::new(syslog, false),
            (true, _) if cli.daemon => Logger::new(syslog, false),
            (true, _) => Logger::stdout(None),
            (false, _) => Logger::new(syslog, foreground),
        }
        .with_format(settings.log_format),
    );
    for line in alerts::flags_2x_notes(cli.disable_local_check, cli.disable_service_check) {
        log.log(&line);
    }
    if cli.debug || cli.verbose {
        for line in settings.describe() {
            log.log(&format!("adminalert: {line}"));
        }
    }
    let validate = || settings::from_cli(&cli).map(|_| ());
    match daemon::run(settings, Arc::clone(&log), &flags, &validate) {
        Ok(daemon::Stop::Shutdown) => ExitCode::SUCCESS,
        Ok(daemon::Stop::Reload) => {
            let err = daemon::reexec(&flags);
            log.log(&alerts::error("cannot re-execute for the reload", &err));
            ExitCode::from(EXIT_RUNTIME)
        }
        Err(e) => {
            log.log(&alerts::failure(&e));
            // Before readiness this reaches the starting process's terminal; after it,
            // the pipe is gone and this does nothing.
            portsentry::detach::failed(EXIT_RUNTIME, &format!("{e:#}"));
            ExitCode::from(EXIT_RUNTIME)
        }
    }
}

/// `portsentry replay`: the full settings (modes, trigger, policies), then the report.
fn replay(cli: &Cli, file: &std::path::Path, local: &[std::net::IpAddr], json: bool) -> ExitCode {
    let settings = match settings::from_cli(cli) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("portsentry: configuration error: {e:#}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    for notice in &settings.notices {
        eprintln!("{notice}");
    }
    let options = portsentry::replay::Options {
        local: local.to_vec(),
    };
    match portsentry::replay::run(&settings, file, &options) {
        Ok(report) if json => match serde_json::to_string_pretty(&report) {
            Ok(text) => {
                println!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("portsentry: cannot write the report: {e}");
                ExitCode::from(EXIT_RUNTIME)
            }
        },
        Ok(report) => {
            print!("{}", report.to_text());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("portsentry: replay: {e:#}");
            ExitCode::from(EXIT_RUNTIME)
        }
    }
}
