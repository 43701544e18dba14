//! The inverse of a KILL_ROUTE template, for `portsentry unban` (pure: text in, text
//! out). Only a few clearly recognised shapes are inverted, each one command of a known
//! tool whose only macro is `$TARGET$` as its own word; anything else (pipes, `&&`,
//! redirections, quotes, other macros, unknown tools or options) is not recognised, and
//! the caller says that it could not be undone. The inverse is again a template: it is
//! expanded with the same validated substitution as the command it undoes.
//!
//! | KILL_ROUTE                                   | inverse                          |
//! |----------------------------------------------|----------------------------------|
//! | `route add -host $TARGET$ reject`            | `route del -host $TARGET$ reject`|
//! | `route add -host $TARGET$ gw G`              | `route del -host $TARGET$ gw G`  |
//! | `ip [-4\|-6] route add blackhole $TARGET$`    | `ip … route del blackhole …`     |
//! | `iptables -I\|-A CHAIN [N] -s $TARGET$ -j T` | `iptables -D CHAIN -s … -j T`    |
//!
//! (`route`, `ip`, `iptables`, `ip6tables` bare or under /sbin, /usr/sbin, /bin,
//! /usr/bin; `blackhole`, `unreachable` or `prohibit` routes; targets DROP or REJECT.)

const TARGET: &str = "$TARGET$";

/// The inverse template of `template`, or `None` when it is not a recognised shape.
pub fn invert(template: &str) -> Option<String> {
    let words: Vec<&str> = template.split_whitespace().collect();
    if words.iter().any(|w| *w != TARGET && !is_plain(w)) {
        return None;
    }
    let (tool, args) = words.split_first()?;
    let inverse: Vec<&str> = match tool_name(tool)? {
        "route" => invert_route(args)?,
        "ip" => invert_ip(args)?,
        "iptables" | "ip6tables" => invert_iptables(args)?,
        _ => return None,
    };
    Some(
        std::iter::once(*tool)
            .chain(inverse)
            .collect::<Vec<_>>()
            .join(" "),
    )
}

/// A word with no shell meaning and no macro: letters, digits and `.:/_-`.
fn is_plain(word: &str) -> bool {
    word.chars()
        .all(|c| c.is_ascii_alphanumeric() || ".:/_-".contains(c))
}

/// The tool's name when `word` is it bare or in one of the usual directories.
fn tool_name(word: &str) -> Option<&str> {
    let name = ["/usr/sbin/", "/usr/bin/", "/sbin/", "/bin/"]
        .iter()
        .find_map(|dir| word.strip_prefix(dir))
        .unwrap_or(word);
    ["route", "ip", "iptables", "ip6tables"]
        .contains(&name)
        .then_some(name)
}

/// `add -host $TARGET$ reject` or `add -host $TARGET$ gw G` → the same with `del`.
fn invert_route<'a>(args: &[&'a str]) -> Option<Vec<&'a str>> {
    match args {
        ["add", "-host", TARGET, "reject"] => Some(vec!["del", "-host", TARGET, "reject"]),
        ["add", "-host", TARGET, "gw", gw] if !gw.starts_with('-') => {
            Some(vec!["del", "-host", TARGET, "gw", gw])
        }
        _ => None,
    }
}

/// `[-4|-6] route add blackhole|unreachable|prohibit $TARGET$` → `… route del …`.
fn invert_ip<'a>(args: &[&'a str]) -> Option<Vec<&'a str>> {
    let (family, rest) = match args.split_first()? {
        (&f @ ("-4" | "-6"), rest) => (Some(f), rest),
        _ => (None, args),
    };
    match rest {
        [
            "route",
            "add",
            kind @ ("blackhole" | "unreachable" | "prohibit"),
            TARGET,
        ] => Some(
            family
                .into_iter()
                .chain(["route", "del", kind, TARGET])
                .collect(),
        ),
        _ => None,
    }
}

/// `-I|-A CHAIN [N] -s $TARGET$ -j DROP|REJECT` → `-D CHAIN -s $TARGET$ -j …`.
fn invert_iptables<'a>(args: &[&'a str]) -> Option<Vec<&'a str>> {
    let (chain, rest) = match args {
        ["-I" | "-A", chain, rest @ ..] => (*chain, rest),
        _ => return None,
    };
    if !chain.chars().all(|c| c.is_ascii_uppercase() || c == '_') {
        return None;
    }
    let rest = match (args[0], rest) {
        ("-I", [n, rest @ ..]) if n.bytes().all(|b| b.is_ascii_digit()) => rest,
        _ => rest,
    };
    match rest {
        ["-s", TARGET, "-j", target @ ("DROP" | "REJECT")] => {
            Some(vec!["-D", chain, "-s", TARGET, "-j", target])
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::invert;

    fn inv(t: &str) -> Option<String> {
        invert(t)
    }

    #[test]
    fn route_reject_and_gateway_shapes_are_inverted() {
        for dir in ["", "/sbin/", "/usr/sbin/"] {
            assert_eq!(
                inv(&format!("{dir}route add -host $TARGET$ reject")).as_deref(),
                Some(format!("{dir}route del -host $TARGET$ reject").as_str())
            );
        }
        assert_eq!(
            inv("/sbin/route add -host $TARGET$ gw 127.0.0.1").as_deref(),
            Some("/sbin/route del -host $TARGET$ gw 127.0.0.1")
        );
        // Extra blanks are not a different shape.
        assert_eq!(
            inv("  route  add -host\t$TARGET$ reject ").as_deref(),
            Some("route del -host $TARGET$ reject")
        );
    }

    #[test]
    fn ip_route_blackhole_is_inverted() {
        assert_eq!(
            inv("ip route add blackhole $TARGET$").as_deref(),
            Some("ip route del blackhole $TARGET$")
        );
        assert_eq!(
            inv("/sbin/ip -6 route add unreachable $TARGET$").as_deref(),
            Some("/sbin/ip -6 route del unreachable $TARGET$")
        );
    }

    #[test]
    fn iptables_insert_and_append_are_deleted() {
        assert_eq!(
            inv("/sbin/iptables -I INPUT -s $TARGET$ -j DROP").as_deref(),
            Some("/sbin/iptables -D INPUT -s $TARGET$ -j DROP")
        );
        assert_eq!(
            inv("iptables -A INPUT -s $TARGET$ -j DROP").as_deref(),
            Some("iptables -D INPUT -s $TARGET$ -j DROP")
        );
        assert_eq!(
            inv("/usr/sbin/ip6tables -I INPUT 1 -s $TARGET$ -j REJECT").as_deref(),
            Some("/usr/sbin/ip6tables -D INPUT -s $TARGET$ -j REJECT")
        );
    }

    #[test]
    fn shell_syntax_other_macros_and_unknown_shapes_are_not_recognised() {
        for t in [
            "",
            "route add -host $TARGET$ reject && logger banned",
            "route add -host $TARGET$ reject; echo",
            "route add -host $TARGET$ reject | tee /tmp/x",
            "route add -host $TARGET$ reject > /dev/null",
            "route add -host $TARGET$ reject &",
            "route add -host \"$TARGET$\" reject",
            "route add -host $(echo $TARGET$) reject",
            "route add -host `echo` reject",
            "route add -host $TARGET$ reject # $PORT$",
            "route add $TARGET$ 333.444.555.666",
            "route add -net $TARGET$ reject",
            "route del -host $TARGET$ reject",
            "route add -host $TARGET$ gw -x",
            "route add -host 198.18.0.9 reject",
            "/opt/bin/route add -host $TARGET$ reject",
            "sudo route add -host $TARGET$ reject",
            "/bin/sh /etc/block.sh $TARGET$",
            "ipchains -I input -s $TARGET$ -j DENY -l",
            "ip route add $TARGET$ via 198.18.0.1",
            "ip route add blackhole $TARGET$/32",
            "ip -6 -4 route add blackhole $TARGET$",
            "iptables -I INPUT -s $TARGET$ -j DROP -m comment",
            "iptables -I INPUT -s $TARGET$ -j ACCEPT",
            "iptables -D INPUT -s $TARGET$ -j DROP",
            "iptables -A INPUT 1 -s $TARGET$ -j DROP",
            "iptables -t nat -I INPUT -s $TARGET$ -j DROP",
            "iptables -I input -s $TARGET$ -j DROP",
        ] {
            assert_eq!(inv(t), None, "{t:?}");
        }
    }
}
