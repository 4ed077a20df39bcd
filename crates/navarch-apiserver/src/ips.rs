//! Service ClusterIP and NodePort allocation. The allocated set is derived
//! from the Services in the watch cache, plus claims not yet visible there;
//! a mutex serialises allocation so two creates never get the same address.

use crate::cache::Cache;
use parking_lot::Mutex;
use std::collections::HashSet;
use std::net::Ipv4Addr;

/// The service network: 10.96.0.0/16; 10.96.0.1 is the `kubernetes` Service.
pub const SERVICE_CIDR: (Ipv4Addr, u8) = (Ipv4Addr::new(10, 96, 0, 0), 16);
pub const KUBERNETES_SERVICE_IP: &str = "10.96.0.1";
pub const NODE_PORT_RANGE: (i64, i64) = (30000, 32767);

#[derive(Default)]
pub struct Allocator {
    /// Recently handed out, possibly not yet in the cache.
    pending_ips: Mutex<HashSet<u32>>,
    pending_ports: Mutex<HashSet<i64>>,
}

fn in_cidr(ip: Ipv4Addr) -> bool {
    let (net, bits) = SERVICE_CIDR;
    let mask = u32::MAX << (32 - bits);
    u32::from(ip) & mask == u32::from(net) & mask
}

fn used(cache: &Cache) -> (HashSet<u32>, HashSet<i64>) {
    let rt = navarch_api::registry::lookup("", "v1", "services").expect("services served");
    let list = cache.kind(rt).list(&Default::default(), 0);
    let mut ips = HashSet::new();
    let mut ports = HashSet::new();
    for o in list.items {
        let v = o.value();
        if let Some(ip) = v["spec"]["clusterIP"]
            .as_str()
            .and_then(|s| s.parse::<Ipv4Addr>().ok())
        {
            ips.insert(u32::from(ip));
        }
        for p in v["spec"]["ports"].as_array().into_iter().flatten() {
            if let Some(n) = p["nodePort"].as_i64() {
                ports.insert(n);
            }
        }
    }
    (ips, ports)
}

impl Allocator {
    pub fn allocate(&self, cache: &Cache) -> Result<String, String> {
        let (used, _) = used(cache);
        let mut pending = self.pending_ips.lock();
        pending.retain(|ip| !used.contains(ip));
        let (net, bits) = SERVICE_CIDR;
        let size = 1u32 << (32 - bits);
        let base = u32::from(net);
        let start = rand::random::<u32>() % (size - 2);
        for i in 0..size - 2 {
            // Skip the network address and .1 (reserved for `kubernetes`).
            let off = 2 + (start + i) % (size - 3);
            let ip = base + off;
            if !used.contains(&ip) && !pending.contains(&ip) {
                pending.insert(ip);
                return Ok(Ipv4Addr::from(ip).to_string());
            }
        }
        Err("range is full".into())
    }

    /// Claims a specific address; errors if taken or outside the range.
    pub fn claim(&self, ip: &str, cache: &Cache) -> Result<(), String> {
        let addr: Ipv4Addr = ip
            .parse()
            .map_err(|_| "must be a valid IP address".to_string())?;
        if !in_cidr(addr) {
            return Err(format!(
                "provided IP is not in the valid range. The range of valid IPs is {}/{}",
                SERVICE_CIDR.0, SERVICE_CIDR.1
            ));
        }
        let (used, _) = used(cache);
        let mut pending = self.pending_ips.lock();
        pending.retain(|ip| !used.contains(ip));
        let n = u32::from(addr);
        if used.contains(&n) || pending.contains(&n) {
            return Err("provided IP is already allocated".into());
        }
        pending.insert(n);
        Ok(())
    }

    pub fn allocate_node_port(&self, cache: &Cache) -> Result<i64, String> {
        let (_, used) = used(cache);
        let mut pending = self.pending_ports.lock();
        pending.retain(|p| !used.contains(p));
        let (lo, hi) = NODE_PORT_RANGE;
        let span = hi - lo + 1;
        let start = (rand::random::<u32>() as i64) % span;
        for i in 0..span {
            let p = lo + (start + i) % span;
            if !used.contains(&p) && !pending.contains(&p) {
                pending.insert(p);
                return Ok(p);
            }
        }
        Err("range is full".into())
    }
}
