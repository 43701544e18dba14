# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_portsentry_global_optspecs
    string join \n tcp stcp atcp udp sudp audp stealth connect i/interface= m/method= l/logoutput= L/disable-local-check S/disable-service-check d/debug v/verbose c/configfile= F/foreground D/daemon check-config settings= defaults-file= hosts-deny= syslog-socket= no-syslog h/help V/version
end

function __fish_portsentry_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_portsentry_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_portsentry_using_subcommand
    set -l cmd (__fish_portsentry_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c portsentry -n "__fish_portsentry_needs_command" -s i -l interface -d 'PortSentry 2.x: watch only this interface (repeatable). ALL, ALL_NLO (all but loopback: the default) and any watch every interface' -r
complete -c portsentry -n "__fish_portsentry_needs_command" -s m -l method -d 'PortSentry 2.x: stealth method. Both are served the same way here (kernel traps, or the packet socket without nftables); accepted for 2.x command lines' -r -f -a "pcap\t''
raw\t''"
complete -c portsentry -n "__fish_portsentry_needs_command" -s l -l logoutput -d 'PortSentry 2.x: where log lines go, stdout (2.x\'s default) or syslog' -r -f -a "stdout\t''
syslog\t''"
complete -c portsentry -n "__fish_portsentry_needs_command" -s c -l configfile -d 'Configuration file (PortSentry 1.2 or 2.x syntax)' -r -F
complete -c portsentry -n "__fish_portsentry_needs_command" -l settings -d 'Settings file for bans, the kernel fast path and the protected set (TOML). Default: /etc/portsentry/portsentry.toml when it exists, else built-in defaults' -r -F
complete -c portsentry -n "__fish_portsentry_needs_command" -l defaults-file -d 'Debian\'s mode selection file, read when no mode flag is given' -r -F
complete -c portsentry -n "__fish_portsentry_needs_command" -l hosts-deny -d 'File that KILL_HOSTS_DENY lines are added to (overrides HOSTS_DENY_FILE). Default: /etc/hosts.deny' -r -F
complete -c portsentry -n "__fish_portsentry_needs_command" -l syslog-socket -d 'Unix datagram socket of the syslog daemon' -r -F
complete -c portsentry -n "__fish_portsentry_needs_command" -l tcp -d 'Classic TCP mode (1.2 `-tcp`): listen on TCP_PORTS; a completed connect is a hit'
complete -c portsentry -n "__fish_portsentry_needs_command" -l stcp -d 'Stealth TCP mode: watch the ports in TCP_PORTS'
complete -c portsentry -n "__fish_portsentry_needs_command" -l atcp -d 'Advanced stealth TCP mode: watch every port below ADVANCED_PORTS_TCP that has no listening service, except ADVANCED_EXCLUDE_TCP'
complete -c portsentry -n "__fish_portsentry_needs_command" -l udp -d 'Classic UDP mode (1.2 `-udp`): bind UDP_PORTS; a datagram is a hit'
complete -c portsentry -n "__fish_portsentry_needs_command" -l sudp -d 'Stealth UDP mode: watch the ports in UDP_PORTS'
complete -c portsentry -n "__fish_portsentry_needs_command" -l audp -d 'Advanced stealth UDP mode: watch every port below ADVANCED_PORTS_UDP with no bound socket, except ADVANCED_EXCLUDE_UDP'
complete -c portsentry -n "__fish_portsentry_needs_command" -l stealth -d 'PortSentry 2.x: stealth mode, 2.x\'s default: the ports of TCP_PORTS and UDP_PORTS, watched without listening (as -stcp -sudp). 2.x\'s log lines'
complete -c portsentry -n "__fish_portsentry_needs_command" -l connect -d 'PortSentry 2.x: connect mode: listen on the ports of TCP_PORTS and UDP_PORTS (as -tcp -udp). 2.x\'s log lines'
complete -c portsentry -n "__fish_portsentry_needs_command" -s L -l disable-local-check -d 'PortSentry 2.x: act on packets whose source is this host\'s own address. This host\'s addresses stay protected here (a ban on them would cut it off); accepted, with a warning'
complete -c portsentry -n "__fish_portsentry_needs_command" -s S -l disable-service-check -d 'PortSentry 2.x: act on ports where a service listens. A port with a service is never a trap here (it would ban the service\'s clients); accepted, with a warning'
complete -c portsentry -n "__fish_portsentry_needs_command" -s d -l debug -d 'PortSentry 2.x: debug output (the settings in effect are printed at start)'
complete -c portsentry -n "__fish_portsentry_needs_command" -s v -l verbose -d 'PortSentry 2.x: verbose output (as --debug)'
complete -c portsentry -n "__fish_portsentry_needs_command" -s F -l foreground -d 'Stay attached to the terminal and also log to stderr'
complete -c portsentry -n "__fish_portsentry_needs_command" -s D -l daemon -d 'Detach and run in the background (the default; accepted for 2.x compatibility)'
complete -c portsentry -n "__fish_portsentry_needs_command" -l check-config -d 'Read the configuration, report every problem with file:line, and exit'
complete -c portsentry -n "__fish_portsentry_needs_command" -l no-syslog -d 'Do not send log lines to syslog (they still go to stderr in the foreground)'
complete -c portsentry -n "__fish_portsentry_needs_command" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c portsentry -n "__fish_portsentry_needs_command" -s V -l version -d 'Print version'
complete -c portsentry -n "__fish_portsentry_needs_command" -f -a "list" -d 'List the bans in force: from the state file, and what the kernel set holds now'
complete -c portsentry -n "__fish_portsentry_needs_command" -f -a "ban" -d 'Ask the running daemon to ban an address or network (CIDR)'
complete -c portsentry -n "__fish_portsentry_needs_command" -f -a "unban" -d 'Ask the running daemon to lift the ban covering an address or network, and undo what the 1.2 KILL_HOSTS_DENY and KILL_ROUTE responses added for the address'
complete -c portsentry -n "__fish_portsentry_needs_command" -f -a "status" -d 'Ask the running daemon whether it runs, and how many bans are in force'
complete -c portsentry -n "__fish_portsentry_needs_command" -f -a "explain" -d 'Ask the running daemon what it knows about one address: its bans (offences, evidence, reason, end), the engine\'s state for it, and what protects it'
complete -c portsentry -n "__fish_portsentry_needs_command" -f -a "replay" -d 'Replay a capture (pcap or pcapng, e.g. from `tcpdump -w`) through the engine and ban policy of these settings, with the capture\'s own time stamps, and print per source what the daemon would have logged and done, and why. Nothing is banned, run or written. Exit 0, or 4 when the capture cannot be read to its end (the message says at which byte)'
complete -c portsentry -n "__fish_portsentry_needs_command" -f -a "flush" -d 'Lift bans. `--all` removes our nftables table (and only it) and forgets every ban in the state file; the offence history is kept for escalation'
complete -c portsentry -n "__fish_portsentry_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c portsentry -n "__fish_portsentry_using_subcommand list" -s c -l configfile -d 'Configuration file (PortSentry 1.2 or 2.x syntax)' -r -F
complete -c portsentry -n "__fish_portsentry_using_subcommand list" -l settings -d 'Settings file for bans, the kernel fast path and the protected set (TOML). Default: /etc/portsentry/portsentry.toml when it exists, else built-in defaults' -r -F
complete -c portsentry -n "__fish_portsentry_using_subcommand list" -l json -d 'One JSON object on stdout (field names: portsentry(8), JSON OUTPUT)'
complete -c portsentry -n "__fish_portsentry_using_subcommand list" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c portsentry -n "__fish_portsentry_using_subcommand ban" -l time -d 'How long, e.g. 30m, 12h, 7d. Default: the first-offence ban time' -r
complete -c portsentry -n "__fish_portsentry_using_subcommand ban" -s c -l configfile -d 'Configuration file (PortSentry 1.2 or 2.x syntax)' -r -F
complete -c portsentry -n "__fish_portsentry_using_subcommand ban" -l settings -d 'Settings file for bans, the kernel fast path and the protected set (TOML). Default: /etc/portsentry/portsentry.toml when it exists, else built-in defaults' -r -F
complete -c portsentry -n "__fish_portsentry_using_subcommand ban" -l permanent -d 'Ban until lifted with `portsentry unban`'
complete -c portsentry -n "__fish_portsentry_using_subcommand ban" -l force -d 'Ban even an address of the protected set (this host\'s addresses, its gateways and resolvers, the ignore list); it overrides nothing else: never a prefix shorter than /8 (IPv4) or /16 (IPv6), never an unspecified, loopback, link-local, multicast or broadcast address. The ban is not put back when the daemon restarts'
complete -c portsentry -n "__fish_portsentry_using_subcommand ban" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c portsentry -n "__fish_portsentry_using_subcommand unban" -l origin -d 'Lift every ban the fleet node NODE injected, here and (through the stream) on every node: for a compromised node' -r
complete -c portsentry -n "__fish_portsentry_using_subcommand unban" -s c -l configfile -d 'Configuration file (PortSentry 1.2 or 2.x syntax)' -r -F
complete -c portsentry -n "__fish_portsentry_using_subcommand unban" -l settings -d 'Settings file for bans, the kernel fast path and the protected set (TOML). Default: /etc/portsentry/portsentry.toml when it exists, else built-in defaults' -r -F
complete -c portsentry -n "__fish_portsentry_using_subcommand unban" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c portsentry -n "__fish_portsentry_using_subcommand status" -s c -l configfile -d 'Configuration file (PortSentry 1.2 or 2.x syntax)' -r -F
complete -c portsentry -n "__fish_portsentry_using_subcommand status" -l settings -d 'Settings file for bans, the kernel fast path and the protected set (TOML). Default: /etc/portsentry/portsentry.toml when it exists, else built-in defaults' -r -F
complete -c portsentry -n "__fish_portsentry_using_subcommand status" -l json -d 'One JSON object on stdout: modes, backend, fast path, bans by evidence class, queue depths, uptime, the engine\'s counters'
complete -c portsentry -n "__fish_portsentry_using_subcommand status" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c portsentry -n "__fish_portsentry_using_subcommand explain" -s c -l configfile -d 'Configuration file (PortSentry 1.2 or 2.x syntax)' -r -F
complete -c portsentry -n "__fish_portsentry_using_subcommand explain" -l settings -d 'Settings file for bans, the kernel fast path and the protected set (TOML). Default: /etc/portsentry/portsentry.toml when it exists, else built-in defaults' -r -F
complete -c portsentry -n "__fish_portsentry_using_subcommand explain" -l json -d 'One JSON object on stdout'
complete -c portsentry -n "__fish_portsentry_using_subcommand explain" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c portsentry -n "__fish_portsentry_using_subcommand replay" -l local -d 'The captured host\'s address (repeatable). Default: this host\'s addresses that appear in the capture' -r
complete -c portsentry -n "__fish_portsentry_using_subcommand replay" -s c -l configfile -d 'Configuration file (PortSentry 1.2 or 2.x syntax)' -r -F
complete -c portsentry -n "__fish_portsentry_using_subcommand replay" -l settings -d 'Settings file for bans, the kernel fast path and the protected set (TOML). Default: /etc/portsentry/portsentry.toml when it exists, else built-in defaults' -r -F
complete -c portsentry -n "__fish_portsentry_using_subcommand replay" -l json -d 'Print the report as one JSON object (field names in portsentry(8))'
complete -c portsentry -n "__fish_portsentry_using_subcommand replay" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c portsentry -n "__fish_portsentry_using_subcommand flush" -s c -l configfile -d 'Configuration file (PortSentry 1.2 or 2.x syntax)' -r -F
complete -c portsentry -n "__fish_portsentry_using_subcommand flush" -l settings -d 'Settings file for bans, the kernel fast path and the protected set (TOML). Default: /etc/portsentry/portsentry.toml when it exists, else built-in defaults' -r -F
complete -c portsentry -n "__fish_portsentry_using_subcommand flush" -l all -d 'Remove every ban and our whole nftables table'
complete -c portsentry -n "__fish_portsentry_using_subcommand flush" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c portsentry -n "__fish_portsentry_using_subcommand help; and not __fish_seen_subcommand_from list ban unban status explain replay flush help" -f -a "list" -d 'List the bans in force: from the state file, and what the kernel set holds now'
complete -c portsentry -n "__fish_portsentry_using_subcommand help; and not __fish_seen_subcommand_from list ban unban status explain replay flush help" -f -a "ban" -d 'Ask the running daemon to ban an address or network (CIDR)'
complete -c portsentry -n "__fish_portsentry_using_subcommand help; and not __fish_seen_subcommand_from list ban unban status explain replay flush help" -f -a "unban" -d 'Ask the running daemon to lift the ban covering an address or network, and undo what the 1.2 KILL_HOSTS_DENY and KILL_ROUTE responses added for the address'
complete -c portsentry -n "__fish_portsentry_using_subcommand help; and not __fish_seen_subcommand_from list ban unban status explain replay flush help" -f -a "status" -d 'Ask the running daemon whether it runs, and how many bans are in force'
complete -c portsentry -n "__fish_portsentry_using_subcommand help; and not __fish_seen_subcommand_from list ban unban status explain replay flush help" -f -a "explain" -d 'Ask the running daemon what it knows about one address: its bans (offences, evidence, reason, end), the engine\'s state for it, and what protects it'
complete -c portsentry -n "__fish_portsentry_using_subcommand help; and not __fish_seen_subcommand_from list ban unban status explain replay flush help" -f -a "replay" -d 'Replay a capture (pcap or pcapng, e.g. from `tcpdump -w`) through the engine and ban policy of these settings, with the capture\'s own time stamps, and print per source what the daemon would have logged and done, and why. Nothing is banned, run or written. Exit 0, or 4 when the capture cannot be read to its end (the message says at which byte)'
complete -c portsentry -n "__fish_portsentry_using_subcommand help; and not __fish_seen_subcommand_from list ban unban status explain replay flush help" -f -a "flush" -d 'Lift bans. `--all` removes our nftables table (and only it) and forgets every ban in the state file; the offence history is kept for escalation'
complete -c portsentry -n "__fish_portsentry_using_subcommand help; and not __fish_seen_subcommand_from list ban unban status explain replay flush help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
