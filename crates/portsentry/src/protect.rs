//! The protected set: sources that must never be banned, whatever a packet claims.
//!
//! A scanner can forge its source address (`nmap -D gateway,ME,...`), so a daemon that
//! bans every source it sees can be made to cut its own host off from its gateway, its
//! DNS resolvers or itself. The protected set always holds:
//! - every address configured on this host, on all interfaces, IPv4 and IPv6 (link-local
//!   `fe80::/10` addresses of ours included, and the peer of a point-to-point address),
//!   plus the loopback ranges `127.0.0.0/8` and `::1/128`;
//! - the next hops of the default routes (IPv4 and IPv6, every routing table that has one,
//!   multipath next hops and `via` gateways included);
//! - the `nameserver` addresses of `/etc/resolv.conf` (the path is configurable);
//! - the networks the caller adds (the ignore list).
//!
//! Addresses and routes come from the kernel through `portsentry_kernel::rtnl`, whose
//! `ChangeWatcher` tells the daemon when to [`gather`] again. Composing the set is pure
//! ([`protected_networks`]) and tested on literal inputs.

use std::fs;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use std::sync::{Arc, Mutex};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use portsentry_engine::ignore::IgnoreSet;
use portsentry_kernel::rtnl;

/// Where the system's resolvers are configured.
pub const DEFAULT_RESOLV_CONF: &str = crate::defaults::RESOLV_CONF;

/// The newest protected set, from the thread that re-reads it (capture) to the one
/// that checks the administrator's bans against it (reporter): the newest value wins,
/// and publishing never waits on the reader.
#[derive(Debug, Clone, Default)]
pub struct Latest(Arc<Mutex<Option<IgnoreSet>>>);

impl Latest {
    pub fn publish(&self, set: IgnoreSet) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(set);
    }

    /// The set published since the last call, if any.
    pub fn take(&self) -> Option<IgnoreSet> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

/// What [`gather`] reads besides the kernel's addresses and routes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtectedSources {
    /// The resolver configuration whose `nameserver` lines are protected; a missing file
    /// means no resolvers.
    pub resolv_conf: PathBuf,
    /// Networks given by the caller (the ignore list), protected as they are.
    pub extra: Vec<IpNet>,
}

impl Default for ProtectedSources {
    fn default() -> Self {
        ProtectedSources {
            resolv_conf: PathBuf::from(DEFAULT_RESOLV_CONF),
            extra: Vec::new(),
        }
    }
}

/// Read the current protected networks (host addresses as /32 or /128, gateways,
/// resolvers, extra); sorted and deduplicated.
///
/// Extra networks are truncated to their network address (`198.18.1.7/24` becomes
/// `198.18.1.0/24`). IPv4-mapped IPv6 addresses are stored in their IPv4 form.
pub fn gather(sources: &ProtectedSources) -> io::Result<Vec<IpNet>> {
    Ok(protected_networks(
        rtnl::local_addresses()?,
        rtnl::default_gateways()?,
        read_resolvers(&sources.resolv_conf)?,
        &sources.extra,
    ))
}

/// The protected set from its parts: loopback ranges, host addresses (local,
/// gateways, resolvers) as /32 or /128 in canonical form, and the extra networks
/// truncated to their network address; sorted and deduplicated.
pub fn protected_networks(
    local: Vec<IpAddr>,
    gateways: Vec<IpAddr>,
    resolvers: Vec<IpAddr>,
    extra: &[IpNet],
) -> Vec<IpNet> {
    let mut nets = loopback_ranges();
    nets.extend(
        local
            .into_iter()
            .chain(gateways)
            .chain(resolvers)
            .map(host_net),
    );
    nets.extend(extra.iter().map(IpNet::trunc));
    nets.sort();
    nets.dedup();
    nets
}

/// The `nameserver` addresses of a resolv.conf file; a missing file gives none.
pub fn read_resolvers(path: &Path) -> io::Result<Vec<IpAddr>> {
    match fs::read(path) {
        Ok(bytes) => Ok(parse_resolv_conf(&String::from_utf8_lossy(&bytes))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(io::Error::new(
            e.kind(),
            format!("cannot read {}: {e}", path.display()),
        )),
    }
}

/// The `nameserver` addresses of resolv.conf text, in file order. Comments (`#` or `;`)
/// are ignored, a `%scope` suffix of a link-local IPv6 address is dropped, lines that do
/// not hold a valid address are skipped.
pub fn parse_resolv_conf(text: &str) -> Vec<IpAddr> {
    text.lines()
        .filter_map(|line| {
            let line = line.split(['#', ';']).next().unwrap_or("");
            let mut words = line.split_whitespace();
            if words.next()? != "nameserver" {
                return None;
            }
            let word = words.next()?;
            let addr = word.split('%').next()?;
            let ip: IpAddr = addr.parse().ok()?;
            Some(ip.to_canonical())
        })
        .collect()
}

fn host_net(ip: IpAddr) -> IpNet {
    IpNet::from(ip.to_canonical())
}

/// Why an address is protected: every part of the set that holds it, as (what, entry):
/// `ignore_list`, `extra` (`[protect] extra`), and, when the protected set is enabled,
/// `own_address`, `gateway`, `resolver`, `loopback`. Pure; [`why`] reads the parts.
pub fn reasons(
    ip: IpAddr,
    kernel: Option<(&[IpAddr], &[IpAddr], &[IpAddr])>,
    ignore: &[IpNet],
    extra: &[IpNet],
) -> Vec<(&'static str, IpNet)> {
    let ip = ip.to_canonical();
    let mut out: Vec<(&'static str, IpNet)> = Vec::new();
    let nets = |what, list: &[IpNet], out: &mut Vec<_>| {
        for n in list.iter().map(IpNet::trunc).filter(|n| n.contains(&ip)) {
            out.push((what, n));
        }
    };
    nets("ignore_list", ignore, &mut out);
    nets("extra", extra, &mut out);
    if let Some((local, gateways, resolvers)) = kernel {
        for (what, list) in [
            ("own_address", local),
            ("gateway", gateways),
            ("resolver", resolvers),
        ] {
            if list.iter().any(|a| a.to_canonical() == ip) {
                out.push((what, host_net(ip)));
            }
        }
        nets("loopback", &loopback_ranges(), &mut out);
    }
    out
}

/// [`reasons`] with this host's addresses, gateways and resolvers read now (when
/// `enabled`, as the daemon's `[protect] enabled`).
pub fn why(
    ip: IpAddr,
    resolv_conf: &Path,
    enabled: bool,
    ignore: &[IpNet],
    extra: &[IpNet],
) -> io::Result<Vec<(&'static str, IpNet)>> {
    if !enabled {
        return Ok(reasons(ip, None, ignore, extra));
    }
    let local = rtnl::local_addresses()?;
    let gateways = rtnl::default_gateways()?;
    let resolvers = read_resolvers(resolv_conf)?;
    Ok(reasons(
        ip,
        Some((&local, &gateways, &resolvers)),
        ignore,
        extra,
    ))
}

fn loopback_ranges() -> Vec<IpNet> {
    vec![
        IpNet::V4(Ipv4Net::new(Ipv4Addr::new(127, 0, 0, 0), 8).expect("valid prefix")),
        IpNet::V6(Ipv6Net::from(Ipv6Addr::LOCALHOST)),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn issue_9_reasons_name_every_part_that_protects_an_address() {
        let local = [ip("198.18.0.1"), ip("fd00:5e17::1")];
        let gateways = [ip("198.18.0.254")];
        let resolvers = [ip("198.18.0.254"), ip("198.18.0.53")];
        let kernel = Some((&local[..], &gateways[..], &resolvers[..]));
        let ignore = [net("198.18.0.0/30"), net("198.18.0.2/32")];
        let extra = [net("198.18.1.0/24")];
        assert_eq!(
            reasons(ip("198.18.0.1"), kernel, &ignore, &extra),
            vec![
                ("ignore_list", net("198.18.0.0/30")),
                ("own_address", net("198.18.0.1/32"))
            ]
        );
        assert_eq!(
            reasons(ip("198.18.0.2"), kernel, &ignore, &extra),
            vec![
                ("ignore_list", net("198.18.0.0/30")),
                ("ignore_list", net("198.18.0.2/32"))
            ]
        );
        assert_eq!(
            reasons(ip("::ffff:198.18.0.254"), kernel, &ignore, &extra),
            vec![
                ("gateway", net("198.18.0.254/32")),
                ("resolver", net("198.18.0.254/32"))
            ]
        );
        assert_eq!(
            reasons(ip("198.18.1.9"), kernel, &ignore, &extra),
            vec![("extra", net("198.18.1.0/24"))]
        );
        assert_eq!(
            reasons(ip("127.0.0.5"), kernel, &[], &[]),
            vec![("loopback", net("127.0.0.0/8"))]
        );
        assert!(reasons(ip("198.18.0.9"), kernel, &ignore, &extra).is_empty());
        // With the protected set disabled only the lists protect.
        assert!(reasons(ip("198.18.0.254"), None, &ignore, &extra).is_empty());
    }

    #[test]
    fn resolv_conf_nameservers() {
        let text = "\
# Generated by NetworkManager
search example.invalid
nameserver 198.18.0.53
  nameserver\t198.18.0.54   # trailing comment
;nameserver 198.18.0.55
#nameserver 198.18.0.56
nameserver fd00:5e17::53
nameserver fe80::1%eth0
nameserver ::ffff:198.18.0.57
nameserver not-an-address
nameserver
nameservers 198.18.0.58
options edns0 trust-ad
domain example.invalid
";
        assert_eq!(
            parse_resolv_conf(text),
            vec![
                ip("198.18.0.53"),
                ip("198.18.0.54"),
                ip("fd00:5e17::53"),
                ip("fe80::1"),
                ip("198.18.0.57"),
            ]
        );
        assert!(parse_resolv_conf("").is_empty());
        assert!(parse_resolv_conf("\n\n# nothing\n").is_empty());
    }

    #[test]
    fn resolv_conf_missing_file_means_no_resolvers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("no-such-resolv.conf");
        assert!(read_resolvers(&path).unwrap().is_empty());
        let path = dir.path().join("resolv.conf");
        fs::write(&path, b"nameserver 198.18.0.53\nnameserver \xff\xfe\n").unwrap();
        assert_eq!(read_resolvers(&path).unwrap(), vec![ip("198.18.0.53")]);
    }

    #[test]
    fn protected_networks_are_sorted_canonical_and_truncated() {
        let got = protected_networks(
            vec![
                ip("198.18.7.1"),
                ip("::ffff:198.18.7.9"),
                ip("fd00:5e17::7:1"),
            ],
            vec![ip("198.18.7.254"), ip("198.18.7.254")],
            vec![ip("198.18.9.53")],
            &[net("198.18.101.7/24"), net("198.18.100.0/24")],
        );
        let want: Vec<IpNet> = [
            "127.0.0.0/8",
            "198.18.7.1/32",
            "198.18.7.9/32",
            "198.18.7.254/32",
            "198.18.9.53/32",
            "198.18.100.0/24",
            "198.18.101.0/24",
            "::1/128",
            "fd00:5e17::7:1/128",
        ]
        .iter()
        .map(|s| net(s))
        .collect();
        assert_eq!(got, want);
    }

    /// Read-only in the current namespace: dumps addresses and routes, changes nothing.
    #[test]
    fn gather_in_the_current_namespace_has_loopback_resolvers_and_extras() {
        let dir = tempfile::tempdir().unwrap();
        let resolv = dir.path().join("resolv.conf");
        fs::write(&resolv, "nameserver 198.18.9.53\n").unwrap();
        let sources = ProtectedSources {
            resolv_conf: resolv,
            extra: vec![net("198.18.101.7/24")],
        };
        let got = gather(&sources).unwrap();
        for want in [
            "127.0.0.0/8",
            "::1/128",
            "198.18.9.53/32",
            "198.18.101.0/24",
        ] {
            assert!(got.contains(&net(want)), "{want} missing from {got:?}");
        }
    }
}
