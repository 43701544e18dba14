//! The never-block list: networks whose packets must never lead to a ban, and the parser
//! for the `portsentry.ignore` file that lists them (PortSentry 1.2 and 2.x formats, and
//! Debian's `portsentry.ignore.static`).
//!
//! Invariants: every stored network is truncated to its prefix (host bits cleared), and
//! IPv4-mapped IPv6 (`::ffff:a.b.c.d`) is stored and looked up as plain IPv4, so an entry
//! and a source match whatever family spelling either side used.
//!
//! Lookup is a linear scan of the entries of the source's family. Ignore lists are a
//! handful of lines (loopback, the admin's own hosts, the local addresses Debian's
//! build-ignore-file adds); below ~64 entries a scan of contiguous prefixes beats any tree.
//! If lists of thousands ever matter, replace the `Vec`s with a prefix trie behind the same
//! API.

use std::fmt;
use std::net::IpAddr;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// A set of IPv4 and IPv6 networks that are never blocked.
#[derive(Debug, Clone, Default)]
pub struct IgnoreSet {
    v4: Vec<Ipv4Net>,
    v6: Vec<Ipv6Net>,
}

impl IgnoreSet {
    /// The empty set: nothing is ignored.
    pub fn new() -> Self {
        IgnoreSet::default()
    }

    /// Adds a network. Host bits are cleared (`198.18.0.5/24` becomes `198.18.0.0/24`),
    /// IPv4-mapped IPv6 networks of /96 or longer become IPv4, and a network already
    /// present is not added twice.
    pub fn insert(&mut self, net: IpNet) {
        match canonical_net(net) {
            IpNet::V4(n) => {
                if !self.v4.contains(&n) {
                    self.v4.push(n);
                }
            }
            IpNet::V6(n) => {
                if !self.v6.contains(&n) {
                    self.v6.push(n);
                }
            }
        }
    }

    /// Whether `ip` falls in any listed network. `::ffff:a.b.c.d` is checked as `a.b.c.d`.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match ip.to_canonical() {
            IpAddr::V4(a) => self.v4.iter().any(|n| n.contains(&a)),
            IpAddr::V6(a) => self.v6.iter().any(|n| n.contains(&a)),
        }
    }

    /// Number of distinct networks.
    pub fn len(&self) -> usize {
        self.v4.len() + self.v6.len()
    }

    /// Whether nothing is ignored.
    pub fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.v6.is_empty()
    }

    /// The networks, IPv4 first, each in insertion order (for the kernel's protected set).
    pub fn iter(&self) -> impl Iterator<Item = IpNet> + '_ {
        let v4 = self.v4.iter().copied().map(IpNet::V4);
        v4.chain(self.v6.iter().copied().map(IpNet::V6))
    }

    /// Parses the text of a `portsentry.ignore` file.
    ///
    /// One `addr` or `addr/bits` per line, IPv4 or IPv6 (any case); `addr` alone is a /32
    /// or /128 host. `#` starts a comment anywhere on a line; blank lines, CRLF, a missing
    /// final newline and surrounding whitespace are fine. Host bits may be set (they are
    /// masked off). Anything else on a line is an error with its 1-based line number:
    /// unlike 1.2, which took the leading digits of any line, we refuse to guess, because a
    /// typo in an admin's own whitelist entry must not silently get them banned. Every bad
    /// line is reported, not only the first.
    pub fn parse(text: &str) -> Result<IgnoreSet, Vec<IgnoreError>> {
        let mut set = IgnoreSet::new();
        for entry in IgnoreSet::parse_entries(text)? {
            set.insert(entry.net);
        }
        Ok(set)
    }

    /// The entries of a `portsentry.ignore` file with their lines, in file order, for a
    /// caller that judges them one by one (the daemon warns about an entry that covers a
    /// whole address family). Same rules and errors as [`IgnoreSet::parse`].
    pub fn parse_entries(text: &str) -> Result<Vec<IgnoreEntry>, Vec<IgnoreError>> {
        let mut entries = Vec::new();
        let mut errors = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let content = raw.split_once('#').map_or(raw, |(before, _)| before).trim();
            if content.is_empty() {
                continue;
            }
            match parse_net(content) {
                Ok(net) => entries.push(IgnoreEntry {
                    line: i + 1,
                    text: content.to_string(),
                    net: canonical_net(net),
                }),
                Err(reason) => errors.push(IgnoreError {
                    line: i + 1,
                    text: content.to_string(),
                    reason,
                }),
            }
        }
        if errors.is_empty() {
            Ok(entries)
        } else {
            Err(errors)
        }
    }
}

/// One entry of an ignore file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IgnoreEntry {
    /// 1-based line number.
    pub line: usize,
    /// The entry as written, without its comment and surrounding whitespace.
    pub text: String,
    /// The network, as the set stores it (host bits cleared, IPv4-mapped as IPv4).
    pub net: IpNet,
}

/// One entry: `addr` or `addr/bits`, nothing else.
fn parse_net(s: &str) -> Result<IpNet, String> {
    if let Some(pos) = s.find(char::is_whitespace) {
        return Err(format!(
            "unexpected text `{}` after the address (one address per line; \
             comments start with `#`)",
            s[pos..].trim()
        ));
    }
    let (addr, bits) = match s.split_once('/') {
        Some((a, b)) => (a, Some(b)),
        None => (s, None),
    };
    let addr: IpAddr = addr
        .parse()
        .map_err(|_| format!("`{addr}` is not an IPv4 or IPv6 address"))?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let prefix = match bits {
        None => max,
        Some(b) => match b.parse::<u8>() {
            Ok(n) if n <= max && b.bytes().all(|c| c.is_ascii_digit()) => n,
            _ => {
                return Err(format!(
                    "prefix length `{b}` is not a number 0-{max} \
                     (netmask notation such as 255.255.255.0 is not accepted)"
                ));
            }
        },
    };
    IpNet::new(addr, prefix).map_err(|e| e.to_string())
}

/// Clears host bits and folds IPv4-mapped IPv6 networks (/96 and longer) into IPv4.
/// Host bits cleared; an IPv4-mapped IPv6 network of /96 or longer becomes IPv4, so both
/// spellings of an address match each other (shared with the ban book).
pub fn canonical_net(net: IpNet) -> IpNet {
    match net {
        IpNet::V6(n) if n.prefix_len() >= 96 => match n.addr().to_ipv4_mapped() {
            Some(a) => Ipv4Net::new(a, n.prefix_len() - 96)
                .map(|v4| IpNet::V4(v4.trunc()))
                .unwrap_or(net.trunc()),
            None => net.trunc(),
        },
        _ => net.trunc(),
    }
}

/// A line of an ignore file that is not an address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IgnoreError {
    /// 1-based line number.
    pub line: usize,
    /// The line's content, without its comment and surrounding whitespace.
    pub text: String,
    /// Why it was refused.
    pub reason: String,
}

impl fmt::Display for IgnoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {} (`{}`)", self.line, self.reason, self.text)
    }
}

impl std::error::Error for IgnoreError {}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn parse_ok(text: &str) -> IgnoreSet {
        IgnoreSet::parse(text).unwrap()
    }

    #[test]
    fn entries_keep_their_lines_and_canonical_networks() {
        let entries = IgnoreSet::parse_entries(
            "# head\n198.18.0.5/24  # lab\n\n::ffff:198.18.1.1\n0.0.0.0/0\n",
        )
        .unwrap();
        let got: Vec<_> = entries
            .iter()
            .map(|e| (e.line, e.text.as_str(), e.net.to_string()))
            .collect();
        assert_eq!(
            got,
            [
                (2, "198.18.0.5/24", "198.18.0.0/24".to_string()),
                (4, "::ffff:198.18.1.1", "198.18.1.1/32".to_string()),
                (5, "0.0.0.0/0", "0.0.0.0/0".to_string()),
            ]
        );
        assert_eq!(IgnoreSet::parse_entries("x\n").unwrap_err()[0].line, 1);
    }

    #[test]
    fn empty_matches_nothing() {
        let s = IgnoreSet::new();
        assert!(s.is_empty());
        assert_eq!(s.len(), 0);
        assert!(!s.contains(ip("127.0.0.1")));
        assert!(parse_ok("").is_empty());
        assert!(parse_ok("\n\n# only comments\n   \n").is_empty());
    }

    #[test]
    fn host_entries() {
        let s = parse_ok("127.0.0.1\n::1\n");
        assert_eq!(s.len(), 2);
        assert!(s.contains(ip("127.0.0.1")));
        assert!(!s.contains(ip("127.0.0.2")));
        assert!(s.contains(ip("::1")));
        assert!(!s.contains(ip("::2")));
    }

    #[test]
    fn debian_static_file() {
        // /etc/portsentry/portsentry.ignore.static as shipped.
        let text = "# Put hosts in here you never want blocked. This includes the IP \
                    addresses\n# of all local interfaces on the protected host\n\
                    127.0.0.1/32\n0.0.0.0\n";
        let s = parse_ok(text);
        assert_eq!(s.len(), 2);
        assert!(s.contains(ip("127.0.0.1")));
        assert!(s.contains(ip("0.0.0.0")));
        // `0.0.0.0` is a host entry, not "everything".
        assert!(!s.contains(ip("0.0.0.1")));
        assert!(!s.contains(ip("203.0.113.9")));
        assert!(!s.contains(ip("::")));
    }

    #[test]
    fn cidr_and_host_bits() {
        let s = parse_ok("198.18.0.5/24\n2001:db8::1/32\n");
        assert!(s.contains(ip("198.18.0.77")));
        assert!(s.contains(ip("198.18.0.5")));
        assert!(!s.contains(ip("198.18.1.5")));
        assert!(s.contains(ip("2001:db8:ffff::9")));
        assert!(!s.contains(ip("2001:db9::1")));
        assert_eq!(
            s.iter().map(|n| n.to_string()).collect::<Vec<_>>(),
            ["198.18.0.0/24", "2001:db8::/32"]
        );
        let all = parse_ok("0.0.0.0/0");
        assert!(all.contains(ip("203.0.113.9")));
        assert!(!all.contains(ip("2001:db8::1")));
    }

    #[test]
    fn formatting_tolerated() {
        let text = "  10.0.0.1  \r\n\t# indented comment\r\n10.0.0.2 # inline\r\n\
                    10.0.0.3#tight\r\n2001:DB8::ABCD/64\r\n\r\n10.0.0.4";
        let s = parse_ok(text);
        assert_eq!(s.len(), 5);
        for a in [
            "10.0.0.1",
            "10.0.0.2",
            "10.0.0.3",
            "10.0.0.4",
            "2001:db8::1",
        ] {
            assert!(s.contains(ip(a)), "{a}");
        }
    }

    #[test]
    fn mapped_v6_sources_match_v4_entries() {
        let s = parse_ok("192.0.2.0/24\n");
        assert!(s.contains(ip("::ffff:192.0.2.9")));
        assert!(s.contains(ip("::FFFF:C000:0209")));
        assert!(!s.contains(ip("::ffff:192.0.3.9")));
        // Deprecated IPv4-compatible form is a different address.
        assert!(!s.contains(ip("::192.0.2.9")));
    }

    #[test]
    fn mapped_v6_entries_match_v4_sources() {
        let s = parse_ok("::ffff:192.0.2.0/120\n::ffff:198.51.100.7\n");
        assert!(s.contains(ip("192.0.2.200")));
        assert!(s.contains(ip("::ffff:192.0.2.200")));
        assert!(s.contains(ip("198.51.100.7")));
        assert!(!s.contains(ip("198.51.100.8")));
        // A mapped /64 covers non-mapped space too, so it stays IPv6.
        let wide = parse_ok("::ffff:0:0/64");
        assert!(wide.contains(ip("::1")));
    }

    #[test]
    fn duplicates_collapse() {
        let s = parse_ok("10.0.0.1\n10.0.0.1/32\n::ffff:10.0.0.1\n10.1.2.3/8\n10.0.0.0/8\n");
        assert_eq!(s.len(), 2);
    }

    #[test]
    fn insert_direct() {
        let mut s = IgnoreSet::new();
        s.insert("192.168.7.9/16".parse().unwrap());
        assert!(s.contains(ip("192.168.200.1")));
        assert_eq!(s.iter().next().unwrap().to_string(), "192.168.0.0/16");
    }

    #[test]
    fn errors_collect_every_bad_line() {
        let text = "127.0.0.1\nlocalhost\n10.0.0.1/33\n\n10.0.0.2 10.0.0.3\n::1/129\n\
                    300.1.1.1\n10.0.0.0/255.0.0.0 # mask\n10.0.0.5/\n10.0.0.6/+8\nfe80::1%eth0\n";
        let errs = IgnoreSet::parse(text).unwrap_err();
        let lines: Vec<usize> = errs.iter().map(|e| e.line).collect();
        assert_eq!(lines, [2, 3, 5, 6, 7, 8, 9, 10, 11]);
        assert_eq!(errs[0].text, "localhost");
        assert!(errs[0].reason.contains("not an IPv4 or IPv6 address"));
        assert!(errs[1].reason.contains("0-32"));
        assert!(errs[2].reason.contains("unexpected text `10.0.0.3`"));
        assert!(errs[3].reason.contains("0-128"));
        assert_eq!(errs[5].text, "10.0.0.0/255.0.0.0", "comment stripped");
        assert!(errs[5].reason.contains("netmask"));
        assert_eq!(
            errs[0].to_string(),
            "line 2: `localhost` is not an IPv4 or IPv6 address (`localhost`)"
        );
    }

    #[test]
    fn one_two_style_garbage_is_refused() {
        // 1.2 took the leading "192.168.1." of this line and ignored a whole /24.
        let errs = IgnoreSet::parse("192.168.1.x\n").unwrap_err();
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].line, 1);
    }
}
