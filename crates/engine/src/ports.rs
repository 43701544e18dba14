//! Port sets and what a detection mode watches.
//!
//! Owns [`PortSet`] (a fixed 8 KiB bitset over TCP/UDP ports 1..=65535), the strict parser
//! for the `TCP_PORTS` / `UDP_PORTS` / `ADVANCED_EXCLUDE_*` list syntax, and [`Watch`], the
//! answer to "is this local port a trap?" that both the engine and the kernel filter use.
//!
//! Invariant: port 0 is never a member. It is not a port a probe can target (the wire
//! parser rejects it), so keeping it out means `len`, `iter` and `max` only ever speak of
//! real ports.

use std::fmt;

/// Number of `u64` words in the bitset: 65536 bits = 8 KiB.
const WORDS: usize = 65536 / 64;

/// A set of TCP or UDP port numbers 1..=65535 as a fixed 8 KiB bitset.
///
/// Membership is one shift and one mask, with no hashing and no allocation on the hot
/// path; the bits live behind a `Box` so that configs holding several sets stay cheap to
/// move.
#[derive(Clone, PartialEq, Eq)]
pub struct PortSet {
    bits: Box<[u64; WORDS]>,
}

impl PortSet {
    /// The empty set.
    pub fn new() -> Self {
        PortSet {
            bits: Box::new([0; WORDS]),
        }
    }

    /// Adds `p`. Port 0 is not a port and is ignored (see the module invariant).
    pub fn insert(&mut self, p: u16) {
        if p != 0 {
            self.bits[usize::from(p) / 64] |= 1 << (p % 64);
        }
    }

    /// Adds every port in `lo..=hi`. An empty range (`lo > hi`) adds nothing; port 0 is
    /// skipped.
    pub fn insert_range(&mut self, lo: u16, hi: u16) {
        let lo = lo.max(1);
        if lo > hi {
            return;
        }
        // Word at a time: a 1-65535 range is 1024 stores, not 65535.
        let (lo, hi) = (usize::from(lo), usize::from(hi));
        let (first, last) = (lo / 64, hi / 64);
        for w in first..=last {
            let from = if w == first { lo % 64 } else { 0 };
            let to = if w == last { hi % 64 } else { 63 };
            // Bits from..=to set; `to - from + 1` may be 64, hence the u128 detour.
            let mask = (((1u128 << (to - from + 1)) - 1) as u64) << from;
            self.bits[w] |= mask;
        }
    }

    /// Whether `p` is in the set (always false for port 0).
    pub fn contains(&self, p: u16) -> bool {
        self.bits[usize::from(p) / 64] & (1 << (p % 64)) != 0
    }

    /// Number of ports in the set.
    pub fn len(&self) -> usize {
        self.bits.iter().map(|w| w.count_ones() as usize).sum()
    }

    /// Whether the set holds no port.
    pub fn is_empty(&self) -> bool {
        self.bits.iter().all(|&w| w == 0)
    }

    /// The ports in ascending order.
    pub fn iter(&self) -> impl Iterator<Item = u16> + '_ {
        self.bits.iter().enumerate().flat_map(|(i, &word)| {
            let mut w = word;
            std::iter::from_fn(move || {
                if w == 0 {
                    return None;
                }
                let bit = w.trailing_zeros();
                w &= w - 1;
                // i < 1024 and bit < 64, so the port fits in u16.
                Some((i * 64) as u16 + bit as u16)
            })
        })
    }

    /// Maximal runs of consecutive ports as inclusive `(lo, hi)` pairs, ascending.
    /// This is the form nftables interval sets and the compact `Debug` output want.
    pub fn ranges(&self) -> impl Iterator<Item = (u16, u16)> + '_ {
        let mut ports = self.iter().peekable();
        std::iter::from_fn(move || {
            let lo = ports.next()?;
            let mut hi = lo;
            while let Some(&next) = ports.peek() {
                if u32::from(next) != u32::from(hi) + 1 {
                    break;
                }
                hi = next;
                ports.next();
            }
            Some((lo, hi))
        })
    }

    /// The highest port in the set.
    pub fn max(&self) -> Option<u16> {
        let (i, &word) = self.bits.iter().enumerate().rev().find(|(_, w)| **w != 0)?;
        Some((i * 64) as u16 + (63 - word.leading_zeros()) as u16)
    }

    /// Parses a port list such as `"1,11,32771-32774"`.
    ///
    /// Comma-separated tokens, each a port or an inclusive `a-b` range; spaces and tabs
    /// around tokens and around the `-` are tolerated. Every token must name ports in
    /// 1..=65535 (no atoi, no u16 wrap): `"abc"`, `"5-3"`, `"0"`, `"70000"` and empty
    /// entries (`"1,,2"`, a trailing comma) are errors naming the token. 1.2 read only the
    /// first 64 entries; there is no such limit here. Only the first bad token is
    /// reported: one value is one diagnostic in the config reader.
    pub fn parse_list(s: &str) -> Result<PortSet, PortListError> {
        let mut set = PortSet::new();
        for raw in s.split(',') {
            let token = raw.trim_matches(is_blank);
            let err = |reason: String| PortListError {
                token: token.to_string(),
                reason,
            };
            if token.is_empty() {
                return Err(err(
                    "empty entry (two commas in a row, or a comma at an end)".into(),
                ));
            }
            match token.split_once('-') {
                None => set.insert(parse_port(token).map_err(err)?),
                Some((a, b)) => {
                    let lo = parse_port(a.trim_matches(is_blank))
                        .map_err(|r| err(format!("range start: {r}")))?;
                    let hi = parse_port(b.trim_matches(is_blank))
                        .map_err(|r| err(format!("range end: {r}")))?;
                    if lo > hi {
                        return Err(err(format!("range start {lo} is above its end {hi}")));
                    }
                    set.insert_range(lo, hi);
                }
            }
        }
        Ok(set)
    }
}

fn is_blank(c: char) -> bool {
    c == ' ' || c == '\t'
}

/// One port number, strictly: ASCII digits only (no sign, no spaces inside), 1..=65535.
fn parse_port(s: &str) -> Result<u16, String> {
    if s.is_empty() {
        return Err("missing number".into());
    }
    if !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("`{s}` is not a number"));
    }
    // Digits only, so the only parse failure left is overflow.
    match s.parse::<u32>() {
        Ok(0) => Err("port 0 is not a valid port (ports are 1-65535)".into()),
        Ok(n) if n <= 65535 => Ok(n as u16),
        _ => Err(format!("{s} is out of range (ports are 1-65535)")),
    }
}

impl Default for PortSet {
    fn default() -> Self {
        PortSet::new()
    }
}

impl FromIterator<u16> for PortSet {
    fn from_iter<I: IntoIterator<Item = u16>>(iter: I) -> Self {
        let mut set = PortSet::new();
        for p in iter {
            set.insert(p);
        }
        set
    }
}

/// The list syntax `parse_list` reads back, e.g. `1,11,32771-32774`.
impl fmt::Display for PortSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (lo, hi)) in self.ranges().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            if lo == hi {
                write!(f, "{lo}")?;
            } else {
                write!(f, "{lo}-{hi}")?;
            }
        }
        Ok(())
    }
}

/// Compact: `PortSet{1,11,32771-32774}` rather than 1024 words.
impl fmt::Debug for PortSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PortSet{{{self}}}")
    }
}

/// A bad token in a port list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortListError {
    /// The offending token, trimmed (empty for an empty entry).
    pub token: String,
    /// Why it was refused.
    pub reason: String,
}

impl fmt::Display for PortListError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "bad port `{}`: {}", self.token, self.reason)
    }
}

impl std::error::Error for PortListError {}

/// Which local ports a mode watches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Watch {
    /// stcp/sudp (and tcp/udp): exactly these ports.
    Listed(PortSet),
    /// atcp/audp: every port below `below` (1.2's ADVANCED_PORTS_x: ports 1..below-1)
    /// except `exclude`. `below` is at most 65536, which watches every port.
    Advanced { below: u32, exclude: PortSet },
}

impl Watch {
    /// Whether a probe to local `port` is a probe of a trap.
    pub fn contains(&self, port: u16) -> bool {
        match self {
            Watch::Listed(set) => set.contains(port),
            Watch::Advanced { below, exclude } => {
                port != 0 && u32::from(port) < *below && !exclude.contains(port)
            }
        }
    }

    /// Highest watched port, so a kernel filter can drop everything above it cheaply.
    /// 0 means nothing is watched.
    pub fn max_port(&self) -> u16 {
        match self {
            Watch::Listed(set) => set.max().unwrap_or(0),
            Watch::Advanced { below, exclude } => {
                let top = below.saturating_sub(1).min(65535) as u16;
                (1..=top).rev().find(|&p| !exclude.contains(p)).unwrap_or(0)
            }
        }
    }

    /// The watched ports as sorted, merged inclusive ranges (for a kernel interval set).
    pub fn port_ranges(&self) -> Vec<(u16, u16)> {
        let set: PortSet = match self {
            Watch::Listed(ports) => ports.clone(),
            Watch::Advanced { below, exclude } => (1..=u16::MAX)
                .take_while(|p| u32::from(*p) < *below)
                .filter(|p| !exclude.contains(*p))
                .collect(),
        };
        set.ranges().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(ports: &[u16]) -> PortSet {
        ports.iter().copied().collect()
    }

    #[test]
    fn watch_port_ranges_are_merged_and_skip_exclusions() {
        let advanced = Watch::Advanced {
            below: 1024,
            exclude: set(&[113, 139]),
        };
        assert_eq!(
            advanced.port_ranges(),
            vec![(1, 112), (114, 138), (140, 1023)]
        );
        let everything = Watch::Advanced {
            below: 65536,
            exclude: PortSet::default(),
        };
        assert_eq!(everything.port_ranges(), vec![(1, 65535)]);
        assert_eq!(
            Watch::Listed(set(&[22, 23, 80])).port_ranges(),
            vec![(22, 23), (80, 80)]
        );
    }

    #[test]
    fn empty_set() {
        let s = PortSet::new();
        assert!(s.is_empty());
        assert_eq!(s.len(), 0);
        assert_eq!(s.max(), None);
        assert_eq!(s.iter().count(), 0);
        assert!(!s.contains(0) && !s.contains(1) && !s.contains(65535));
        assert_eq!(s, PortSet::default());
        assert_eq!(format!("{s:?}"), "PortSet{}");
    }

    #[test]
    fn insert_contains_edges() {
        let mut s = PortSet::new();
        for p in [1, 63, 64, 65, 127, 128, 65534, 65535] {
            s.insert(p);
        }
        s.insert(64); // twice is once
        assert_eq!(s.len(), 8);
        assert!(s.contains(1) && s.contains(64) && s.contains(65535));
        assert!(!s.contains(2) && !s.contains(62) && !s.contains(129));
        assert_eq!(s.max(), Some(65535));
        assert_eq!(
            s.iter().collect::<Vec<_>>(),
            [1, 63, 64, 65, 127, 128, 65534, 65535]
        );
    }

    #[test]
    fn port_zero_is_never_a_member() {
        let mut s = PortSet::new();
        s.insert(0);
        assert!(s.is_empty());
        s.insert_range(0, 3);
        assert_eq!(s.iter().collect::<Vec<_>>(), [1, 2, 3]);
        assert!(!s.contains(0));
    }

    #[test]
    fn insert_range_word_boundaries() {
        for (lo, hi) in [
            (1, 1),
            (1, 63),
            (63, 64),
            (64, 127),
            (60, 200),
            (100, 1000),
            (65472, 65535),
        ] {
            let mut s = PortSet::new();
            s.insert_range(lo, hi);
            assert_eq!(s.len(), usize::from(hi - lo) + 1, "{lo}-{hi}");
            assert_eq!(s.iter().next(), Some(lo));
            assert_eq!(s.max(), Some(hi));
            assert!(!s.contains(lo - 1));
            assert!(hi == 65535 || !s.contains(hi + 1));
        }
        let mut all = PortSet::new();
        all.insert_range(1, 65535);
        assert_eq!(all.len(), 65535);
        assert_eq!(all.ranges().collect::<Vec<_>>(), [(1, 65535)]);
        let mut none = PortSet::new();
        none.insert_range(5, 3);
        assert!(none.is_empty());
    }

    #[test]
    fn ranges_and_display() {
        let s = set(&[1, 11, 32771, 32772, 32773, 32774, 63, 64, 65535]);
        assert_eq!(
            s.ranges().collect::<Vec<_>>(),
            [(1, 1), (11, 11), (63, 64), (32771, 32774), (65535, 65535)]
        );
        assert_eq!(s.to_string(), "1,11,63-64,32771-32774,65535");
        assert_eq!(format!("{s:?}"), "PortSet{1,11,63-64,32771-32774,65535}");
        assert_eq!(PortSet::parse_list(&s.to_string()).unwrap(), s);
    }

    #[test]
    fn parse_list_valid() {
        let s = PortSet::parse_list("1,11,32771-32774").unwrap();
        assert_eq!(s, set(&[1, 11, 32771, 32772, 32773, 32774]));
        let s = PortSet::parse_list(" 1 ,\t7 , 512 - 515 ,65535").unwrap();
        assert_eq!(s, set(&[1, 7, 512, 513, 514, 515, 65535]));
        assert_eq!(PortSet::parse_list("080").unwrap(), set(&[80]));
        assert_eq!(PortSet::parse_list("5-5").unwrap(), set(&[5]));
        assert_eq!(PortSet::parse_list("1-65535").unwrap().len(), 65535);
    }

    #[test]
    fn parse_list_1_2_default_lists() {
        let tcp = PortSet::parse_list(
            "1,11,15,79,111,119,143,540,635,1080,1524,2000,5742,6667,12345,12346,20034,\
             27665,31337,32771,32772,32773,32774,40421,49724,54320",
        )
        .unwrap();
        assert_eq!(tcp.len(), 26);
        let udp = PortSet::parse_list(
            "1,7,9,69,161,162,513,635,640,641,700,37444,34555,31335,32770,32771,32772,\
             32773,32774,31337,54321",
        )
        .unwrap();
        assert_eq!(udp.len(), 21);
        assert_eq!(udp.max(), Some(54321));
    }

    fn bad(s: &str) -> PortListError {
        PortSet::parse_list(s).unwrap_err()
    }

    #[test]
    fn parse_list_errors_name_the_token() {
        let e = bad("1,abc,3");
        assert_eq!(e.token, "abc");
        assert_eq!(e.to_string(), "bad port `abc`: `abc` is not a number");
        assert_eq!(bad("5-3").token, "5-3");
        assert!(bad("5-3").reason.contains("above its end"));
        assert_eq!(bad("0").token, "0");
        assert!(bad("0").reason.contains("port 0"));
        assert!(bad("0-5").reason.contains("port 0"));
        assert_eq!(bad("70000").token, "70000");
        assert!(bad("70000").reason.contains("out of range"));
        // Would wrap to 4464 as u16 and to garbage as u32; must be refused, not wrapped.
        assert!(bad("4294971760").reason.contains("out of range"));
        assert!(bad("65536").reason.contains("out of range"));
        assert_eq!(bad("1,2,+3").token, "+3");
        assert_eq!(bad("1-").reason, "range end: missing number");
        assert_eq!(bad("-5").reason, "range start: missing number");
        assert_eq!(bad("1-2-3").token, "1-2-3");
        assert_eq!(bad("1 2").token, "1 2");
        assert_eq!(bad("1;2").token, "1;2");
    }

    #[test]
    fn parse_list_refuses_atoi_prefixes() {
        // 1.2's atoi read "1-100" as 1 and "22abc" as 22.
        assert_eq!(bad("22abc").token, "22abc");
        assert_eq!(PortSet::parse_list("1-100").unwrap().len(), 100);
    }

    #[test]
    fn parse_list_empty_entries() {
        for s in ["", " ", "1,,2", "1,2,", ",1"] {
            let e = bad(s);
            assert_eq!(e.token, "", "{s:?}");
            assert!(e.reason.contains("empty entry"), "{s:?}");
        }
    }

    #[test]
    fn watch_listed() {
        let w = Watch::Listed(set(&[1, 111, 31337]));
        assert!(w.contains(111) && w.contains(31337));
        assert!(!w.contains(0) && !w.contains(112));
        assert_eq!(w.max_port(), 31337);
        assert_eq!(Watch::Listed(PortSet::new()).max_port(), 0);
    }

    #[test]
    fn watch_advanced() {
        let w = Watch::Advanced {
            below: 1024,
            exclude: set(&[113, 139, 1023]),
        };
        assert!(w.contains(1) && w.contains(22) && w.contains(1022));
        assert!(!w.contains(0), "port 0 is never watched");
        assert!(!w.contains(113) && !w.contains(139));
        assert!(!w.contains(1023), "excluded");
        assert!(!w.contains(1024) && !w.contains(65535), "not below 1024");
        assert_eq!(w.max_port(), 1022);
    }

    #[test]
    fn watch_advanced_bounds() {
        let all = Watch::Advanced {
            below: 65536,
            exclude: PortSet::new(),
        };
        assert!(all.contains(65535) && all.contains(1));
        assert_eq!(all.max_port(), 65535);

        let one = Watch::Advanced {
            below: 2,
            exclude: PortSet::new(),
        };
        assert!(one.contains(1) && !one.contains(2));
        assert_eq!(one.max_port(), 1);

        let nothing = Watch::Advanced {
            below: 1,
            exclude: PortSet::new(),
        };
        assert!(!nothing.contains(1));
        assert_eq!(nothing.max_port(), 0);

        let all_excluded = Watch::Advanced {
            below: 3,
            exclude: set(&[1, 2]),
        };
        assert_eq!(all_excluded.max_port(), 0);

        // Out-of-contract values must not panic or wrap.
        let huge = Watch::Advanced {
            below: u32::MAX,
            exclude: PortSet::new(),
        };
        assert_eq!(huge.max_port(), 65535);
        let zero = Watch::Advanced {
            below: 0,
            exclude: PortSet::new(),
        };
        assert_eq!(zero.max_port(), 0);
        assert!(!zero.contains(1));
    }
}
