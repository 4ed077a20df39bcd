//! Host ports in use on a node (upstream `HostPortInfo`), with counts so
//! that removing one user of a port does not free it for another.

use std::collections::HashMap;

use crate::pod::HostPort;

/// `port -> [(protocol, ip, users)]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PortTable {
    by_port: HashMap<i32, Vec<(String, String, u32)>>,
}

const ANY_IP: &str = "0.0.0.0";

impl PortTable {
    pub fn add(&mut self, p: &HostPort) {
        if p.port <= 0 {
            return;
        }
        let users = self.by_port.entry(p.port).or_default();
        match users
            .iter_mut()
            .find(|(proto, ip, _)| *proto == p.protocol && *ip == p.ip)
        {
            Some(e) => e.2 += 1,
            None => users.push((p.protocol.clone(), p.ip.clone(), 1)),
        }
    }

    pub fn remove(&mut self, p: &HostPort) {
        let Some(users) = self.by_port.get_mut(&p.port) else {
            return;
        };
        if let Some(i) = users
            .iter()
            .position(|(proto, ip, _)| *proto == p.protocol && *ip == p.ip)
        {
            users[i].2 -= 1;
            if users[i].2 == 0 {
                users.swap_remove(i);
            }
        }
        if users.is_empty() {
            self.by_port.remove(&p.port);
        }
    }

    /// Upstream `HostPortInfo.CheckConflict`: `0.0.0.0` conflicts with any
    /// IP on the same protocol and port, and any IP conflicts with `0.0.0.0`.
    pub fn conflicts(&self, p: &HostPort) -> bool {
        if p.port <= 0 {
            return false;
        }
        let Some(users) = self.by_port.get(&p.port) else {
            return false;
        };
        users.iter().any(|(proto, ip, _)| {
            *proto == p.protocol && (p.ip == ANY_IP || *ip == ANY_IP || *ip == p.ip)
        })
    }

    /// Every port in use, sorted.
    pub fn iter(&self) -> Vec<HostPort> {
        let mut out: Vec<HostPort> = self
            .by_port
            .iter()
            .flat_map(|(port, users)| {
                users.iter().map(|(proto, ip, _)| HostPort {
                    protocol: proto.clone(),
                    ip: ip.clone(),
                    port: *port,
                })
            })
            .collect();
        out.sort();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conflicts_as_upstream() {
        let mut t = PortTable::default();
        t.add(&HostPort::new("TCP", "127.0.0.1", 8080));
        assert!(t.conflicts(&HostPort::new("TCP", "127.0.0.1", 8080)));
        assert!(t.conflicts(&HostPort::new("TCP", "", 8080))); // 0.0.0.0 vs any
        assert!(!t.conflicts(&HostPort::new("TCP", "127.0.0.2", 8080)));
        assert!(!t.conflicts(&HostPort::new("UDP", "127.0.0.1", 8080)));
        assert!(!t.conflicts(&HostPort::new("TCP", "127.0.0.1", 8081)));
        t.add(&HostPort::new("UDP", "", 53));
        assert!(t.conflicts(&HostPort::new("UDP", "10.0.0.1", 53))); // any vs 0.0.0.0
                                                                     // Counted users.
        t.add(&HostPort::new("UDP", "", 53));
        t.remove(&HostPort::new("UDP", "", 53));
        assert!(t.conflicts(&HostPort::new("UDP", "10.0.0.1", 53)));
        t.remove(&HostPort::new("UDP", "", 53));
        assert!(!t.conflicts(&HostPort::new("UDP", "10.0.0.1", 53)));
        assert!(!t.conflicts(&HostPort::new("TCP", "", 0)));
    }
}
