//! EndpointSlices (`discovery.k8s.io/v1`) for Services with a selector, as
//! upstream's `endpointslice` controller packs them. This module is the
//! pure part: the endpoint and port types, their JSON, and [`reconcile`],
//! which turns the slices a Service has into the slices it should have.
//! The loop that feeds it (informers, work queue, writes) is shared with
//! the Endpoints controller in [`crate::endpoints`].
//!
//! Packing, per address type and per distinct set of ports (upstream's
//! `reconcileByPortMapping`):
//!
//! 1. each existing slice keeps the endpoints still wanted (replaced by
//!    their current version) and drops the others; a slice left empty is
//!    deleted, a changed one updated, one whose labels no longer mirror the
//!    Service's updated, the rest stay *unchanged*;
//! 2. the endpoints not yet placed first fill the slices being updated
//!    anyway, fullest first, up to [`MAX_ENDPOINTS_PER_SLICE`];
//! 3. fewer than a slice's worth left go into the unchanged slice they fill
//!    best; the rest go into new slices;
//! 4. slices whose port set is no longer wanted, of an address type the
//!    Service no longer has, or not owned by this Service (by uid) are
//!    deleted; a Service with no endpoints keeps one empty *placeholder*
//!    slice;
//! 5. a slice to create and one to delete become one update of the latter
//!    (same address type, owned by the Service), so a rollout rewrites
//!    slices in place instead of churning names.
//!
//! Upstream picks endpoints from a hash set (any order); here they go in
//! key order (pod namespace/name, addresses), so plans are deterministic.

use crate::endpoints::TargetRef;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

/// Upstream's default `--max-endpoints-per-slice`.
pub const MAX_ENDPOINTS_PER_SLICE: usize = 100;
/// `endpointslice.kubernetes.io/managed-by` of the slices this controller
/// owns.
pub const CONTROLLER_NAME: &str = "endpointslice-controller.k8s.io";
pub const LABEL_SERVICE_NAME: &str = "kubernetes.io/service-name";
pub const LABEL_MANAGED_BY: &str = "endpointslice.kubernetes.io/managed-by";
/// Set (empty) on Endpoints and slices of a Service without a cluster IP.
pub const LABEL_HEADLESS: &str = "service.kubernetes.io/headless";

/// The address types this controller writes (`FQDN` slices are never its
/// own).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AddressType {
    IPv4,
    IPv6,
}

impl AddressType {
    pub fn as_str(self) -> &'static str {
        match self {
            AddressType::IPv4 => "IPv4",
            AddressType::IPv6 => "IPv6",
        }
    }

    pub fn parse(s: &str) -> Option<AddressType> {
        match s {
            "IPv4" => Some(AddressType::IPv4),
            "IPv6" => Some(AddressType::IPv6),
            _ => None,
        }
    }

    /// The family of an IP address (IPv6 when it has a colon).
    pub fn of(ip: &str) -> AddressType {
        if ip.contains(':') {
            AddressType::IPv6
        } else {
            AddressType::IPv4
        }
    }
}

/// One `ports[]` entry of a slice.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SlicePort {
    pub name: Option<String>,
    pub port: Option<i64>,
    pub protocol: Option<String>,
    pub app_protocol: Option<String>,
}

impl SlicePort {
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        if let Some(n) = &self.name {
            m.insert("name".into(), json!(n));
        }
        if let Some(p) = self.port {
            m.insert("port".into(), json!(p));
        }
        if let Some(p) = &self.protocol {
            m.insert("protocol".into(), json!(p));
        }
        if let Some(a) = &self.app_protocol {
            m.insert("appProtocol".into(), json!(a));
        }
        Value::Object(m)
    }

    pub fn from_json(v: &Value) -> SlicePort {
        SlicePort {
            name: v["name"].as_str().map(str::to_string),
            port: v["port"].as_i64(),
            protocol: v["protocol"].as_str().map(str::to_string),
            app_protocol: v["appProtocol"].as_str().map(str::to_string),
        }
    }
}

/// A slice's ports in a canonical order: the key slices are grouped by.
pub type PortKey = Vec<SlicePort>;

/// One `endpoints[]` entry of a slice (hints are not written).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub addresses: Vec<String>,
    pub ready: Option<bool>,
    pub serving: Option<bool>,
    pub terminating: Option<bool>,
    pub hostname: Option<String>,
    pub node_name: Option<String>,
    pub zone: Option<String>,
    pub target: Option<TargetRef>,
}

/// What identifies an endpoint across versions (upstream hashes the same
/// fields): its target's namespace and name, its addresses, its hostname.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EndpointKey {
    target: Option<(String, String)>,
    addresses: Vec<String>,
    hostname: Option<String>,
}

impl Endpoint {
    pub fn key(&self) -> EndpointKey {
        let mut addresses = self.addresses.clone();
        addresses.sort();
        EndpointKey {
            target: self
                .target
                .as_ref()
                .map(|t| (t.namespace.clone(), t.name.clone())),
            addresses,
            hostname: self.hostname.clone(),
        }
    }

    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("addresses".into(), json!(self.addresses));
        let mut c = Map::new();
        for (k, v) in [
            ("ready", self.ready),
            ("serving", self.serving),
            ("terminating", self.terminating),
        ] {
            if let Some(v) = v {
                c.insert(k.into(), json!(v));
            }
        }
        m.insert("conditions".into(), Value::Object(c));
        for (k, v) in [
            ("hostname", &self.hostname),
            ("nodeName", &self.node_name),
            ("zone", &self.zone),
        ] {
            if let Some(v) = v {
                m.insert(k.into(), json!(v));
            }
        }
        if let Some(t) = &self.target {
            m.insert("targetRef".into(), t.to_json());
        }
        Value::Object(m)
    }

    pub fn from_json(v: &Value) -> Endpoint {
        let s = |f: &str| v[f].as_str().map(str::to_string);
        let c = &v["conditions"];
        Endpoint {
            addresses: v["addresses"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|x| x.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default(),
            ready: c["ready"].as_bool(),
            serving: c["serving"].as_bool(),
            terminating: c["terminating"].as_bool(),
            hostname: s("hostname"),
            node_name: s("nodeName"),
            zone: s("zone"),
            target: TargetRef::from_json(&v["targetRef"]),
        }
    }
}

/// The endpoints a Service wants, by address type and port set.
pub type Desired = BTreeMap<AddressType, BTreeMap<PortKey, BTreeMap<EndpointKey, Endpoint>>>;

/// An existing slice as [`reconcile`] reads it.
#[derive(Debug, Clone)]
pub struct Existing<'a> {
    pub name: &'a str,
    /// Has an ownerReference to this Service (`v1`, `Service`, its uid).
    pub owned: bool,
    /// `None` for an address type this controller never writes.
    pub address_type: Option<AddressType>,
    /// In [`PortKey`] order.
    pub ports: &'a [SlicePort],
    pub endpoints: &'a [Endpoint],
    /// Its labels other than the reserved ones equal the Service's.
    pub labels_mirror: bool,
    /// Its labels are exactly the ones a new slice would get.
    pub labels_exact: bool,
}

/// A slice's content: what a create or an update writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SliceContent {
    pub address_type: AddressType,
    pub ports: Vec<SlicePort>,
    pub endpoints: Vec<Endpoint>,
}

/// The writes that make a Service's slices what they should be.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub create: Vec<SliceContent>,
    /// By slice name.
    pub update: BTreeMap<String, SliceContent>,
    pub delete: Vec<String>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.create.is_empty() && self.update.is_empty() && self.delete.is_empty()
    }
}

/// Plans the writes for one Service: `existing` are its slices (managed by
/// this controller, not being deleted), `types` its address types,
/// `desired` its endpoints, `max` the endpoints per slice.
pub fn reconcile(
    existing: &[Existing<'_>],
    types: &[AddressType],
    desired: &Desired,
    max: usize,
) -> Plan {
    let mut plan = Plan::default();
    let mut by_type: BTreeMap<AddressType, Vec<&Existing<'_>>> = BTreeMap::new();
    for e in existing {
        match e.address_type {
            Some(t) if types.contains(&t) => by_type.entry(t).or_default().push(e),
            _ => plan.delete.push(e.name.to_string()),
        }
    }
    let none = BTreeMap::new();
    for t in types {
        let slices = by_type.get(t).map(Vec::as_slice).unwrap_or(&[]);
        let wanted = desired.get(t).unwrap_or(&none);
        by_address_type(&mut plan, *t, slices, wanted, max);
    }
    plan
}

fn by_address_type(
    plan: &mut Plan,
    t: AddressType,
    existing: &[&Existing<'_>],
    desired: &BTreeMap<PortKey, BTreeMap<EndpointKey, Endpoint>>,
    max: usize,
) {
    let mut create: Vec<SliceContent> = Vec::new();
    let mut update: BTreeMap<String, SliceContent> = BTreeMap::new();
    let mut delete: Vec<&Existing<'_>> = Vec::new();
    let mut by_ports: BTreeMap<&[SlicePort], Vec<&Existing<'_>>> = BTreeMap::new();
    for e in existing {
        if e.owned {
            by_ports.entry(e.ports).or_default().push(e);
        } else {
            delete.push(e);
        }
    }
    for (ports, wanted) in desired {
        let mut left = wanted.clone();
        let mut slices: Vec<&Existing<'_>> =
            by_ports.get(ports.as_slice()).cloned().unwrap_or_default();
        slices.sort_by_key(|e| e.name);
        let mut updated: Vec<String> = Vec::new();
        let mut unchanged: Vec<&Existing<'_>> = Vec::new();
        // 1. Keep the endpoints still wanted, in their current version.
        for e in slices {
            let mut kept = Vec::with_capacity(e.endpoints.len());
            let mut changed = false;
            for ep in e.endpoints {
                if let Some(want) = left.remove(&ep.key()) {
                    changed |= want != *ep;
                    kept.push(want);
                }
            }
            if changed || kept.len() != e.endpoints.len() {
                if kept.is_empty() {
                    delete.push(e);
                } else {
                    updated.push(e.name.to_string());
                    update.insert(e.name.to_string(), content(t, ports, kept));
                }
            } else if !e.labels_mirror {
                updated.push(e.name.to_string());
                update.insert(e.name.to_string(), content(t, ports, kept));
            } else {
                unchanged.push(e);
            }
        }
        // 2. Fill the slices being written anyway, fullest first.
        if !left.is_empty() && !updated.is_empty() {
            updated.sort_by(|a, b| {
                update[b]
                    .endpoints
                    .len()
                    .cmp(&update[a].endpoints.len())
                    .then(a.cmp(b))
            });
            for name in &updated {
                let s = update.get_mut(name).expect("planned");
                fill(&mut s.endpoints, &mut left, max);
            }
        }
        // 3. The rest: into the unchanged slice they fill best, or new ones.
        while !left.is_empty() {
            let mut target: Option<usize> = None;
            if left.len() < max {
                let mut closest = max;
                for (i, e) in unchanged.iter().enumerate() {
                    let after = left.len() + e.endpoints.len();
                    if after <= max && max - after < closest {
                        closest = max - after;
                        target = Some(i);
                    }
                }
            }
            match target {
                Some(i) => {
                    let e = unchanged.remove(i);
                    let mut s = content(t, ports, e.endpoints.to_vec());
                    fill(&mut s.endpoints, &mut left, max);
                    update.insert(e.name.to_string(), s);
                }
                None => {
                    let mut s = content(t, ports, Vec::new());
                    fill(&mut s.endpoints, &mut left, max);
                    create.push(s);
                }
            }
        }
    }
    // 4. Port sets no longer wanted.
    for (ports, slices) in &by_ports {
        if !desired.keys().any(|k| k.as_slice() == *ports) {
            delete.extend(slices.iter().copied());
        }
    }
    // A Service without endpoints keeps one empty placeholder slice.
    if existing.len() == delete.len() && create.is_empty() {
        let placeholder =
            |e: &Existing<'_>| e.labels_exact && e.endpoints.is_empty() && e.ports.is_empty();
        if delete.len() == 1 && placeholder(delete[0]) {
            delete.clear();
        } else {
            create.push(content(t, &[], Vec::new()));
        }
    }
    // 5. A create and a delete make one update of the deleted slice.
    let mut i = 0;
    while i < delete.len() && !create.is_empty() {
        if delete[i].owned {
            let s = create.pop().expect("not empty");
            update.insert(delete[i].name.to_string(), s);
            delete.remove(i);
        } else {
            i += 1;
        }
    }
    plan.create.extend(create);
    plan.update.extend(update);
    plan.delete
        .extend(delete.into_iter().map(|e| e.name.to_string()));
}

fn content(t: AddressType, ports: &[SlicePort], endpoints: Vec<Endpoint>) -> SliceContent {
    SliceContent {
        address_type: t,
        ports: ports.to_vec(),
        endpoints,
    }
}

/// Moves endpoints from `left` (in key order) into `into` up to `max`.
fn fill(into: &mut Vec<Endpoint>, left: &mut BTreeMap<EndpointKey, Endpoint>, max: usize) {
    while into.len() < max {
        let Some((_, ep)) = left.pop_first() else {
            break;
        };
        into.push(ep);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(pod: &str, ip: &str, ready: bool) -> Endpoint {
        Endpoint {
            addresses: vec![ip.to_string()],
            ready: Some(ready),
            serving: Some(ready),
            terminating: Some(false),
            hostname: None,
            node_name: Some("n1".into()),
            zone: None,
            target: Some(TargetRef {
                kind: "Pod".into(),
                namespace: "default".into(),
                name: pod.to_string(),
                uid: format!("uid-{pod}"),
            }),
        }
    }

    fn http() -> PortKey {
        vec![SlicePort {
            name: Some("http".into()),
            port: Some(8080),
            protocol: Some("TCP".into()),
            app_protocol: None,
        }]
    }

    fn desired(ports: &PortKey, eps: &[Endpoint]) -> Desired {
        let mut d = Desired::new();
        let m = d
            .entry(AddressType::IPv4)
            .or_default()
            .entry(ports.clone())
            .or_default();
        for e in eps {
            m.insert(e.key(), e.clone());
        }
        d
    }

    fn pods(range: std::ops::Range<usize>) -> Vec<Endpoint> {
        range
            .map(|i| {
                ep(
                    &format!("p{i:04}"),
                    &format!("10.0.{}.{}", i / 250, i % 250),
                    true,
                )
            })
            .collect()
    }

    fn existing<'a>(name: &'a str, ports: &'a [SlicePort], eps: &'a [Endpoint]) -> Existing<'a> {
        Existing {
            name,
            owned: true,
            address_type: Some(AddressType::IPv4),
            ports,
            endpoints: eps,
            labels_mirror: true,
            labels_exact: true,
        }
    }

    const V4: &[AddressType] = &[AddressType::IPv4];

    #[test]
    fn no_endpoints_make_one_placeholder_kept_as_is() {
        let plan = reconcile(&[], V4, &Desired::new(), 100);
        assert_eq!(plan.create.len(), 1);
        assert!(plan.create[0].endpoints.is_empty() && plan.create[0].ports.is_empty());
        let e = existing("web-abc", &[], &[]);
        assert!(reconcile(&[e], V4, &Desired::new(), 100).is_empty());
    }

    #[test]
    fn endpoints_split_at_the_maximum_and_new_ones_replace_the_placeholder() {
        let eps = pods(0..250);
        let plan = reconcile(&[], V4, &desired(&http(), &eps), 100);
        let sizes: Vec<usize> = plan.create.iter().map(|s| s.endpoints.len()).collect();
        assert_eq!(sizes, vec![100, 100, 50]);
        // Over a placeholder: one create becomes an update of it.
        let ph = existing("web-ph", &[], &[]);
        let plan = reconcile(&[ph], V4, &desired(&http(), &eps), 100);
        assert_eq!(plan.create.len(), 2);
        assert_eq!(plan.update.len(), 1);
        assert_eq!(plan.update["web-ph"].ports, http());
        assert!(plan.delete.is_empty());
    }

    #[test]
    fn changes_update_in_place_and_fill_before_creating() {
        let ports = http();
        let a = pods(0..100);
        let b = pods(100..150);
        let sa = existing("web-a", &ports, &a);
        let sb = existing("web-b", &ports, &b);
        // Unchanged: nothing to do.
        let all = pods(0..150);
        assert!(reconcile(&[sa.clone(), sb.clone()], V4, &desired(&ports, &all), 100).is_empty());
        // One pod becomes not ready: only its slice is rewritten.
        let mut changed = all.clone();
        changed[120] = ep("p0120", "10.0.0.120", false);
        let plan = reconcile(
            &[sa.clone(), sb.clone()],
            V4,
            &desired(&ports, &changed),
            100,
        );
        assert_eq!(plan.update.keys().collect::<Vec<_>>(), vec!["web-b"]);
        assert_eq!(plan.update["web-b"].endpoints[20].ready, Some(false));
        // Pods of slice a go, ten new ones come: they fill slice a (being
        // updated anyway), no new slice.
        let mut next = pods(10..150);
        next.extend(pods(200..210));
        let plan = reconcile(&[sa.clone(), sb.clone()], V4, &desired(&ports, &next), 100);
        assert!(plan.create.is_empty() && plan.delete.is_empty());
        assert_eq!(plan.update.keys().collect::<Vec<_>>(), vec!["web-a"]);
        assert_eq!(plan.update["web-a"].endpoints.len(), 100);
        // Ten new pods with nothing else changed: into the unchanged slice
        // they fit best (b, 50 + 10).
        let mut more = all.clone();
        more.extend(pods(200..210));
        let plan = reconcile(&[sa.clone(), sb.clone()], V4, &desired(&ports, &more), 100);
        assert_eq!(plan.update.keys().collect::<Vec<_>>(), vec!["web-b"]);
        assert_eq!(plan.update["web-b"].endpoints.len(), 60);
        // Every pod of slice b gone: b deleted, not emptied.
        let plan = reconcile(&[sa.clone(), sb.clone()], V4, &desired(&ports, &a), 100);
        assert_eq!(plan.delete, vec!["web-b".to_string()]);
        assert!(plan.update.is_empty() && plan.create.is_empty());
    }

    #[test]
    fn foreign_owners_other_ports_and_labels() {
        let ports = http();
        let a = pods(0..3);
        let mut other = existing("web-old", &ports, &a);
        other.owned = false;
        // A slice of a previous Service with the same name is deleted, not
        // reused.
        let plan = reconcile(&[other], V4, &desired(&ports, &a), 100);
        assert_eq!(plan.create.len(), 1);
        assert_eq!(plan.delete, vec!["web-old".to_string()]);
        // The port changed: the slice is rewritten with the new port.
        let mut p2 = http();
        p2[0].port = Some(9090);
        let s = existing("web-a", &ports, &a);
        let plan = reconcile(std::slice::from_ref(&s), V4, &desired(&p2, &a), 100);
        assert!(plan.create.is_empty() && plan.delete.is_empty());
        assert_eq!(plan.update["web-a"].ports, p2);
        // Labels no longer mirror the Service's: update.
        let mut l = s.clone();
        l.labels_mirror = false;
        let plan = reconcile(&[l], V4, &desired(&ports, &a), 100);
        assert_eq!(plan.update["web-a"].endpoints, a);
        // An address type the Service no longer has.
        let plan = reconcile(&[s], &[AddressType::IPv6], &Desired::new(), 100);
        assert_eq!(plan.delete, vec!["web-a".to_string()]);
        assert_eq!(plan.create.len(), 1);
        assert_eq!(plan.create[0].address_type, AddressType::IPv6);
    }

    #[test]
    fn endpoint_json_round_trips() {
        let mut e = ep("p1", "10.1.2.3", true);
        e.zone = Some("z1".into());
        e.hostname = Some("h".into());
        let v = e.to_json();
        assert_eq!(
            v["conditions"],
            json!({"ready": true, "serving": true, "terminating": false})
        );
        assert_eq!(v["targetRef"]["kind"], "Pod");
        assert_eq!(Endpoint::from_json(&v), e);
        let p = &http()[0];
        assert_eq!(SlicePort::from_json(&p.to_json()), *p);
    }
}
