//! Reading back the history file (HISTORY_FILE) for `portsentry explain`: the lines
//! about one address, from the end of the file. The file grows without bound between
//! rotations, so only its last [`TAIL_BYTES`] are read. The line format is 1.2's
//! (`records`): `... Host: name/ip Port: N PROTO Blocked`, with our evidence class before
//! `Host:`; 2.x's `Scan from: [ip]` lines are matched too.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::net::IpAddr;
use std::path::Path;

/// How much of the end of the file is read.
pub const TAIL_BYTES: u64 = 1 << 20;

/// The last `max` lines of `text` about `ip`, oldest first.
pub fn lines_about(text: &str, ip: IpAddr, max: usize) -> Vec<String> {
    let host = format!("/{ip} Port: ");
    let scan_2x = format!("Scan from: [{ip}]");
    let mut found: Vec<String> = text
        .lines()
        .rev()
        .filter(|l| l.contains(&host) || l.contains(&scan_2x))
        .take(max)
        .map(str::to_string)
        .collect();
    found.reverse();
    found
}

/// [`lines_about`] over the last [`TAIL_BYTES`] of the file at `path` (none if it does
/// not exist).
pub fn read_about(path: &Path, ip: IpAddr, max: usize) -> io::Result<Vec<String>> {
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let len = file.metadata()?.len();
    let start = len.saturating_sub(TAIL_BYTES);
    file.seek(SeekFrom::Start(start))?;
    let mut bytes = Vec::new();
    file.take(TAIL_BYTES).read_to_end(&mut bytes)?;
    let text = String::from_utf8_lossy(&bytes);
    // A read from the middle of the file starts inside a line: drop that part.
    let text = if start > 0 {
        text.split_once('\n').map_or("", |(_, rest)| rest)
    } else {
        &text
    };
    Ok(lines_about(text, ip, max))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issue_9_history_lines_of_one_address_newest_last() {
        let text = "\
1700000000 - 11/14/2023 22:13:20 [unverified] Host: 198.18.0.2/198.18.0.2 Port: 23 TCP Blocked
1700000001 - 11/14/2023 22:13:21 [unverified] Host: 198.18.0.22/198.18.0.22 Port: 23 TCP Blocked
1700000002 - 11/14/2023 22:13:22 Host: name.example/198.18.0.2 Port: 53 UDP Blocked
Nov 14 22:13:23 Scan from: [198.18.0.2] (name) protocol: [TCP] port: [1]
";
        let ip: IpAddr = "198.18.0.2".parse().unwrap();
        let got = lines_about(text, ip, 10);
        assert_eq!(got.len(), 3, "{got:#?}");
        assert!(got[0].contains("Port: 23 TCP"));
        assert!(got[2].starts_with("Nov 14"));
        assert_eq!(lines_about(text, ip, 1), vec![got[2].clone()]);
    }

    #[test]
    fn only_the_tail_of_a_big_file_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history");
        let ip: IpAddr = "198.18.0.2".parse().unwrap();
        let old = "1 - x [unverified] Host: 198.18.0.2/198.18.0.2 Port: 1 TCP Blocked\n";
        let filler = "1 - x [unverified] Host: 198.18.0.3/198.18.0.3 Port: 1 TCP Blocked\n";
        let new = "2 - y [verified] Host: 198.18.0.2/198.18.0.2 Port: 2 TCP Blocked\n";
        let mut text = String::from(old);
        while (text.len() as u64) < TAIL_BYTES + 100 {
            text.push_str(filler);
        }
        text.push_str(new);
        std::fs::write(&path, text).unwrap();
        assert_eq!(read_about(&path, ip, 10).unwrap(), vec![new.trim_end()]);
        assert!(
            read_about(&dir.path().join("none"), ip, 10)
                .unwrap()
                .is_empty()
        );
    }
}
