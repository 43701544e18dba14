//! A lab: one defender namespace and peer namespaces, all joined by a bridge that
//! lives in its own "switch" namespace (so the defender sees each packet once, on
//! its single interface `eth0`).
//!
//! Each lab gets its own slot N (0..512) and with it the IPv4 subnet
//! 198.18.0.0/15 → 198.(18 + N/256).(N%256).0/24 and the IPv6 subnet
//! fd00:5e17::N:0/112 (inside fd00:5e17::/64). Host number h gets .h and ::N:h.
//! The defender is host 1. No namespace has a default route.

use std::fs::OpenOptions;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

use super::net::TcpServer;
use super::{Conf, Daemon, Netns};

/// The open service of a lab built with [`LabBuilder::open_service`]: a TCP port above
/// ADVANCED_PORTS_TCP=1024, so not watched; whether a host still reaches it shows
/// whether it is blocked.
pub const OPEN: u16 = 8080;

const SLOTS: u32 = 512;

/// One host of the lab: its namespace and addresses.
pub struct Host {
    pub role: String,
    pub ns: Netns,
    pub v4: Ipv4Addr,
    pub v6: Ipv6Addr,
    pub host_id: u8,
}

impl Host {
    pub fn addr(&self, v6: bool) -> IpAddr {
        if v6 {
            IpAddr::V6(self.v6)
        } else {
            IpAddr::V4(self.v4)
        }
    }
}

/// A set of namespaces wired to one bridge. Dropping it deletes them all.
pub struct Lab {
    /// Declared first so that it stops before the namespaces go.
    open: Option<TcpServer>,
    pub defender: Host,
    pub peers: Vec<Host>,
    slot: Slot,
    // Declared last so that it is dropped after the hosts.
    switch: Netns,
}

/// Builder for a `Lab`.
pub struct LabBuilder {
    peers: Vec<(String, Option<u8>)>,
    open_service: bool,
}

impl Lab {
    /// Starts describing a lab; the defender is always there.
    pub fn builder() -> LabBuilder {
        LabBuilder {
            peers: Vec::new(),
            open_service: false,
        }
    }

    /// The peer with this role; panics if there is none.
    pub fn peer(&self, role: &str) -> &Host {
        self.peers
            .iter()
            .find(|h| h.role == role)
            .unwrap_or_else(|| panic!("no peer {role} in lab"))
    }

    /// The lab's slot number N.
    pub fn slot(&self) -> u32 {
        self.slot.n
    }

    /// Address of host number `h` in this lab (whether or not such a host exists).
    pub fn v4(&self, h: u8) -> Ipv4Addr {
        v4_of(self.slot.n, h)
    }

    pub fn v6(&self, h: u8) -> Ipv6Addr {
        v6_of(self.slot.n, h)
    }

    /// "198.18.N.0/24"-style subnet text.
    pub fn subnet_v4(&self) -> String {
        format!("{}/24", v4_of(self.slot.n, 0))
    }

    /// "fd00:5e17::N:0/112"-style subnet text.
    pub fn subnet_v6(&self) -> String {
        format!("{}/112", v6_of(self.slot.n, 0))
    }

    pub fn switch(&self) -> &Netns {
        &self.switch
    }

    /// The daemon started in the defender with `conf` and `modes`, ready.
    pub fn daemon(&self, conf: &Conf, modes: &[&str]) -> Daemon {
        Daemon::ready(&self.defender.ns, conf, modes)
    }
}

impl LabBuilder {
    /// Adds a peer with the next free host number.
    pub fn peer(mut self, role: &str) -> Self {
        self.peers.push((role.to_string(), None));
        self
    }

    /// Adds a peer with a chosen host number (2..=254), e.g. to place it inside a
    /// CIDR of an ignore file.
    pub fn peer_at(mut self, role: &str, host_id: u8) -> Self {
        assert!(
            (2..=254).contains(&host_id),
            "host id {host_id} out of range"
        );
        self.peers.push((role.to_string(), Some(host_id)));
        self
    }

    /// The defender serves TCP on [`OPEN`] for as long as the lab lives.
    pub fn open_service(mut self) -> Self {
        self.open_service = true;
        self
    }

    pub fn build(self) -> Lab {
        let slot = Slot::acquire();
        let switch = Netns::new("sw");
        switch.sysctl("net.ipv6.conf.all.disable_ipv6=1");
        switch.sysctl("net.ipv6.conf.default.disable_ipv6=1");
        switch.ip(&[
            "link",
            "add",
            "br0",
            "type",
            "bridge",
            "stp_state",
            "0",
            "forward_delay",
            "0",
        ]);
        switch.ip(&["link", "set", "br0", "up"]);

        let mut used: Vec<u8> = vec![1];
        used.extend(self.peers.iter().filter_map(|p| p.1));
        let mut next = 2u8;
        let mut port = 0u32;
        let mut make = |role: &str, host_id: u8| -> Host {
            let ns = Netns::new(role);
            let host = Host {
                role: role.to_string(),
                v4: v4_of(slot.n, host_id),
                v6: v6_of(slot.n, host_id),
                host_id,
                ns,
            };
            let p = format!("p{port}");
            port += 1;
            // Created inside the switch namespace with the other end moved straight
            // into the host's namespace: nothing is ever made in the root namespace.
            switch.veth(&p, &host.ns, "eth0");
            switch.ip(&["link", "set", &p, "master", "br0"]);
            switch.ip(&["link", "set", &p, "up"]);
            host.ns.sysctl("net.ipv6.conf.all.accept_ra=0");
            host.ns.sysctl("net.ipv6.conf.default.accept_ra=0");
            // Both asserted to lie in the test ranges before they are added.
            host.ns.add_addr("eth0", &format!("{}/24", host.v4));
            host.ns.add_addr("eth0", &format!("{}/112", host.v6));
            host.ns.ip(&["link", "set", "eth0", "up"]);
            host
        };
        let defender = make("def", 1);
        let mut peers = Vec::new();
        for (role, fixed) in &self.peers {
            let id = match fixed {
                Some(id) => *id,
                None => {
                    while used.contains(&next) {
                        next += 1;
                    }
                    used.push(next);
                    next
                }
            };
            peers.push(make(role, id));
        }
        let open = self
            .open_service
            .then(|| TcpServer::start(&defender.ns, OPEN));
        Lab {
            open,
            defender,
            peers,
            slot,
            switch,
        }
    }
}

fn v4_of(slot: u32, h: u8) -> Ipv4Addr {
    Ipv4Addr::new(198, 18 + (slot / 256) as u8, (slot % 256) as u8, h)
}

fn v6_of(slot: u32, h: u8) -> Ipv6Addr {
    Ipv6Addr::new(0xfd00, 0x5e17, 0, 0, 0, 0, slot as u16, h as u16)
}

/// A subnet slot, held by a lock file (pid inside) so that parallel test processes
/// never use the same subnet. Released on drop; a slot whose holder died is reused.
struct Slot {
    n: u32,
    path: PathBuf,
}

impl Slot {
    fn acquire() -> Slot {
        use std::sync::atomic::{AtomicU32, Ordering};
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join("pst-lab-slots");
        let _ = std::fs::create_dir_all(&dir);
        let me = std::process::id();
        let start = me
            .wrapping_mul(37)
            .wrapping_add(NEXT.fetch_add(1, Ordering::SeqCst));
        // Bounded: at most two passes over all slots.
        for i in 0..SLOTS * 2 {
            let n = (start + i) % SLOTS;
            let path = dir.join(n.to_string());
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(mut f) => {
                    let _ = write!(f, "{me}");
                    return Slot { n, path };
                }
                Err(_) => {
                    let holder = std::fs::read_to_string(&path)
                        .ok()
                        .and_then(|s| s.trim().parse::<u32>().ok());
                    let alive = holder
                        .is_some_and(|p| std::path::Path::new(&format!("/proc/{p}")).exists());
                    if !alive && holder.is_some() {
                        let _ = std::fs::remove_file(&path);
                    }
                }
            }
        }
        panic!("no free lab slot in {}", dir.display());
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}
