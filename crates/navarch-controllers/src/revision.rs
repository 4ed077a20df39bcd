//! What the DaemonSet and StatefulSet controllers share: ControllerRevisions
//! (apps/v1) holding each pod template they have run, claiming objects by
//! selector, pods from templates, and a local store that takes the
//! controllers' own writes at once.
//!
//! * A revision's `data` is upstream's patch form of the owner's template,
//!   `{"spec": {"template": {…, "$patch": "replace"}}}`, which is what
//!   `kubectl rollout undo` applies as a strategic merge patch and what
//!   `kubectl rollout history --revision` shows. Two revisions are equal
//!   when their `data` is. A revision is named `<owner>-<hash>`, the hash
//!   ([`crate::deployment::template_hash`]) over the template and the
//!   owner's `status.collisionCount`; a name taken by a revision with other
//!   data bumps the count and tries the next name, as upstream's
//!   `CreateControllerRevision`. Its labels are the template's plus
//!   `controller-revision-hash`, its annotations the owner's.
//! * Claiming ([`claim`]) is upstream's `ControllerRefManager`: an object
//!   the owner controls that its selector no longer matches is released,
//!   an orphan it matches is adopted (unless either is being deleted);
//!   both are merge patches of `ownerReferences` guarded by the object's
//!   uid and resourceVersion.
//! * [`Local`] holds the latest known version of each object of a kind,
//!   from the informer and from the controller's own writes, never moving
//!   back to an older resourceVersion (revisions are global, so this holds
//!   across incarnations of a name) and remembering deletions until the
//!   informer reports them: a sync never acts on a view that misses the
//!   writes of the previous one.

use crate::deployment::template_hash;
use navarch_api::patch::PatchType;
use navarch_api::registry::lookup;
use navarch_api::selector::LabelSelector;
use navarch_api::{ApiError, ResourceType};
use navarch_apiserver::{ApiServer, DeleteOptions, WriteOptions};
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;

/// The label naming a pod's (and a revision's) template revision.
pub const HASH_LABEL: &str = "controller-revision-hash";
/// Longest owner name prefix of a revision name (upstream
/// `ControllerRevisionName`).
const MAX_PREFIX: usize = 223;
/// Names tried before a revision create gives up (each collision bumps
/// the count).
const MAX_COLLISIONS: i64 = 16;

pub(crate) fn pods_rt() -> &'static ResourceType {
    lookup("", "v1", "pods").expect("pods")
}

pub(crate) fn revisions_rt() -> &'static ResourceType {
    lookup("apps", "v1", "controllerrevisions").expect("controllerrevisions")
}

/// `metadata.resourceVersion` as a number (0 when absent).
pub(crate) fn rv(v: &Value) -> i64 {
    v["metadata"]["resourceVersion"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// An RFC 3339 timestamp in unix seconds (0 when absent or invalid).
pub(crate) fn ts(v: &Value) -> i64 {
    v.as_str()
        .and_then(|s| s.parse::<jiff::Timestamp>().ok())
        .map(|t| t.as_second())
        .unwrap_or(0)
}

pub(crate) fn now() -> i64 {
    jiff::Timestamp::now().as_second()
}

/// `namespace/name`.
pub(crate) fn key(ns: &str, name: &str) -> String {
    format!("{ns}/{name}")
}

/// An int-or-percent (`maxUnavailable`, `maxSurge`) scaled to `total`,
/// percentages rounded up (upstream `GetScaledValueFromIntOrPercent` with
/// `roundUp`).
pub(crate) fn scaled(v: &Value, default: i64, total: i64) -> i64 {
    if let Some(n) = v.as_i64() {
        return n.max(0);
    }
    let Some(s) = v.as_str() else {
        return default;
    };
    match s.strip_suffix('%').and_then(|p| p.parse::<i64>().ok()) {
        Some(p) => (p * total + 99).div_euclid(100).max(0),
        None => s.parse().unwrap_or(default),
    }
}

/// What the controllers read of a pod's readiness: since when its `Ready`
/// condition is `True` (unix seconds), if it is.
pub(crate) fn ready_since(pod: &Value) -> Option<i64> {
    pod["status"]["conditions"].as_array().and_then(|cs| {
        cs.iter()
            .find(|c| c["type"] == "Ready" && c["status"] == "True")
            .map(|c| ts(&c["lastTransitionTime"]))
    })
}

/// Upstream `IsPodAvailable`: ready for at least `min_ready` seconds.
pub(crate) fn available(ready_since: Option<i64>, min_ready: i64, now: i64) -> bool {
    match ready_since {
        Some(since) => min_ready <= 0 || since + min_ready <= now,
        None => false,
    }
}

/// Seconds until a pod ready since `since` becomes available, if it is
/// ready and not yet available.
pub(crate) fn until_available(ready_since: Option<i64>, min_ready: i64, now: i64) -> Option<i64> {
    let since = ready_since?;
    let left = since + min_ready - now;
    (min_ready > 0 && left > 0).then_some(left)
}

// ----- the local store ------------------------------------------------------

/// The latest known version of each object of one kind, by
/// `namespace/name` (see the module's docs).
pub(crate) struct Local<T> {
    items: BTreeMap<String, (i64, T)>,
    /// Deleted by this controller at that revision; the informer has not
    /// said so yet.
    tombs: HashMap<String, i64>,
}

impl<T> Default for Local<T> {
    fn default() -> Self {
        Local {
            items: BTreeMap::new(),
            tombs: HashMap::new(),
        }
    }
}

impl<T> Local<T> {
    /// Stores `v` at `rv` unless a newer version or deletion is known;
    /// whether it was stored.
    pub fn put(&mut self, key: &str, rv: i64, v: T) -> bool {
        if let Some(t) = self.tombs.get(key) {
            if *t >= rv {
                return false;
            }
            self.tombs.remove(key);
        }
        if self.items.get(key).is_some_and(|(r, _)| *r > rv) {
            return false;
        }
        self.items.insert(key.to_string(), (rv, v));
        true
    }

    /// The informer saw `key` deleted at `rv`.
    pub fn deleted(&mut self, key: &str, rv: i64) -> Option<T> {
        if self.tombs.get(key).is_some_and(|t| *t <= rv) {
            self.tombs.remove(key);
        }
        self.remove_up_to(key, rv)
    }

    /// This controller deleted `key` at `rv` (the object is gone).
    pub fn deleted_by_us(&mut self, key: &str, rv: i64) -> Option<T> {
        let t = self.tombs.entry(key.to_string()).or_insert(rv);
        *t = (*t).max(rv);
        self.remove_up_to(key, rv)
    }

    fn remove_up_to(&mut self, key: &str, rv: i64) -> Option<T> {
        if self.items.get(key).is_some_and(|(r, _)| *r <= rv) {
            return self.items.remove(key).map(|(_, v)| v);
        }
        None
    }

    pub fn get(&self, key: &str) -> Option<&T> {
        self.items.get(key).map(|(_, v)| v)
    }

    /// The objects of namespace `ns`, by name.
    pub fn in_namespace<'a>(&'a self, ns: &str) -> impl Iterator<Item = &'a T> + 'a {
        // '0' sorts right after '/'.
        let range = (
            Bound::Included(format!("{ns}/")),
            Bound::Excluded(format!("{ns}0")),
        );
        self.items.range(range).map(|(_, (_, v))| v)
    }
}

// ----- owners and claiming -------------------------------------------------

/// A controller ownerReference: kind, name, uid.
pub(crate) type ControllerRef = (String, String, String);

/// The controller ownerReference of `v`, if any.
pub(crate) fn controller_of(v: &Value) -> Option<ControllerRef> {
    v["metadata"]["ownerReferences"].as_array().and_then(|rs| {
        rs.iter().find(|r| r["controller"] == true).map(|r| {
            let s = |f: &str| r[f].as_str().unwrap_or("").to_string();
            (s("kind"), s("name"), s("uid"))
        })
    })
}

/// Whether another kind than `kind` controls `v`: such an object can be
/// neither claimed nor adopted by a `kind` controller, which need not keep
/// it (most pods in a cluster belong to ReplicaSets).
pub(crate) fn controlled_by_other_kind(v: &Value, kind: &str) -> bool {
    v["metadata"]["ownerReferences"]
        .as_array()
        .is_some_and(|rs| {
            rs.iter()
                .any(|r| r["controller"] == true && r["kind"].as_str() != Some(kind))
        })
}

/// What a controller reads of a claimable object to know whose it is.
pub(crate) trait Claimable {
    fn controller(&self) -> &Option<ControllerRef>;
    fn labels(&self) -> &Map<String, Value>;
}

/// The (controller, labels) of objects whose owners a change concerns.
pub(crate) type Concerned = Vec<(Option<ControllerRef>, Map<String, Value>)>;

impl<T: Claimable> Local<T> {
    /// Folds a pod seen by the informer into the store of a `kind`
    /// controller: pods another kind controls are not kept (forgotten if
    /// they were orphans before). Returns whose owners must sync: the
    /// pod's, and its previous ones when they differ.
    pub fn put_pod(&mut self, v: &Value, kind: &str, parse: impl FnOnce(&Value) -> T) -> Concerned {
        let m = &v["metadata"];
        let k = key(
            m["namespace"].as_str().unwrap_or(""),
            m["name"].as_str().unwrap_or(""),
        );
        let concern = |p: &T| (p.controller().clone(), p.labels().clone());
        if controlled_by_other_kind(v, kind) {
            return self.deleted(&k, rv(v)).iter().map(concern).collect();
        }
        let p = parse(v);
        let mut out = vec![concern(&p)];
        let old = self.get(&k).map(concern);
        if !self.put(&k, rv(v), p) {
            return Vec::new();
        }
        out.extend(old.filter(|o| *o != out[0]));
        out
    }
}

/// The owner side of a claim.
pub(crate) struct Owner<'a> {
    pub kind: &'static str,
    pub name: &'a str,
    pub uid: &'a str,
    pub selector: &'a LabelSelector,
    pub deleting: bool,
}

impl Owner<'_> {
    pub fn reference(&self) -> Value {
        json!({"apiVersion": "apps/v1", "kind": self.kind, "name": self.name,
            "uid": self.uid, "controller": true, "blockOwnerDeletion": true})
    }

    pub fn controls(&self, c: &Option<ControllerRef>) -> bool {
        c.as_ref()
            .is_some_and(|(k, n, u)| k == self.kind && n == self.name && u == self.uid)
    }
}

/// What claiming makes of an object.
#[derive(Debug, PartialEq)]
pub(crate) enum Claim {
    /// Controlled by the owner and matched by its selector.
    Owned,
    /// Not the owner's: controlled by another, or not matched.
    Ignored,
    /// To patch with this merge patch (an adoption or a release); the
    /// object is the owner's after an adoption.
    Patch { adopt: bool, patch: Value },
}

/// Upstream `ClaimObject` for one object (its full JSON); `member` is the
/// controller's extra filter (a StatefulSet's pod names).
pub(crate) fn claim(owner: &Owner, v: &Value, member: bool) -> Claim {
    let m = &v["metadata"];
    let labels = m["labels"].as_object();
    let matches = member && owner.selector.matches(labels);
    let controller = controller_of(v);
    let deleting = m["deletionTimestamp"].is_string();
    let refs: Vec<Value> = m["ownerReferences"].as_array().cloned().unwrap_or_default();
    let guarded = |refs: Vec<Value>| {
        json!({"metadata": {"ownerReferences": refs, "uid": m["uid"],
            "resourceVersion": m["resourceVersion"]}})
    };
    if owner.controls(&controller) {
        if matches {
            return Claim::Owned;
        }
        if owner.deleting {
            return Claim::Ignored;
        }
        let refs = refs.into_iter().filter(|r| r["uid"] != owner.uid).collect();
        return Claim::Patch {
            adopt: false,
            patch: guarded(refs),
        };
    }
    if controller.is_some() || !matches || owner.deleting || deleting {
        return Claim::Ignored;
    }
    let mut refs = refs;
    refs.push(owner.reference());
    Claim::Patch {
        adopt: true,
        patch: guarded(refs),
    }
}

/// Merge-patches an object's metadata (a claim, labels); the object after.
pub(crate) async fn patch_object(
    server: &ApiServer,
    rt: &'static ResourceType,
    ns: &str,
    name: &str,
    patch: Value,
    opts: &WriteOptions,
) -> Result<Value, ApiError> {
    Ok(server
        .patch(rt, Some(ns), name, None, PatchType::Merge, patch, opts)
        .await?
        .object)
}

/// Upstream `GetPodFromTemplate`: the template's labels, annotations and
/// finalizers, `<owner>-` as `generateName`, a controller reference.
pub(crate) fn pod_from_template(template: &Value, ns: &str, owner: &Owner) -> Value {
    let tm = &template["metadata"];
    let mut meta = json!({
        "generateName": format!("{}-", owner.name),
        "namespace": ns,
        "ownerReferences": [owner.reference()],
    });
    for f in ["labels", "annotations", "finalizers"] {
        if !tm[f].is_null() {
            meta[f] = tm[f].clone();
        }
    }
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": template["spec"]})
}

// ----- ControllerRevisions ---------------------------------------------------

/// What the controllers read of a ControllerRevision.
#[derive(Debug, Clone)]
pub(crate) struct Rev {
    pub raw: Value,
    pub name: String,
    pub uid: String,
    pub revision: i64,
    pub hash: String,
    pub controller: Option<ControllerRef>,
    created: i64,
}

impl Rev {
    pub fn from_json(v: &Value) -> Rev {
        let m = &v["metadata"];
        Rev {
            name: m["name"].as_str().unwrap_or("").to_string(),
            uid: m["uid"].as_str().unwrap_or("").to_string(),
            revision: v["revision"].as_i64().unwrap_or(0),
            hash: m["labels"][HASH_LABEL].as_str().unwrap_or("").to_string(),
            controller: controller_of(v),
            created: ts(&m["creationTimestamp"]),
            raw: v.clone(),
        }
    }

    pub fn data(&self) -> &Value {
        &self.raw["data"]
    }

    /// The pod template this revision holds.
    pub fn template(&self) -> Value {
        template_of(self.data())
    }
}

/// Upstream `getPatch`: the owner's template as a strategic merge patch
/// that replaces it.
pub(crate) fn template_patch(template: &Value) -> Value {
    let mut t = template.clone();
    if let Some(m) = t.as_object_mut() {
        m.insert("$patch".into(), json!("replace"));
    }
    json!({"spec": {"template": t}})
}

/// The template in a revision's data.
pub(crate) fn template_of(data: &Value) -> Value {
    let mut t = data["spec"]["template"].clone();
    if let Some(m) = t.as_object_mut() {
        m.remove("$patch");
    }
    t
}

/// Upstream `SortControllerRevisions`: by revision, then age, then name.
pub(crate) fn sort_revisions(revs: &mut [Rev]) {
    revs.sort_by(|a, b| (a.revision, a.created, &a.name).cmp(&(b.revision, b.created, &b.name)));
}

/// Creates the revision holding the template of `object` (the owner, whose
/// annotations it copies) as revision number `revision`, stepping
/// `collisions` past names taken by other data. Returns the revision
/// (created, or found already holding this data).
pub(crate) async fn create_revision(
    server: &ApiServer,
    ns: &str,
    owner: &Owner<'_>,
    object: &Value,
    revision: i64,
    collisions: &mut i64,
    opts: &WriteOptions,
) -> Result<Rev, ApiError> {
    let template = &object["spec"]["template"];
    let annotations = &object["metadata"]["annotations"];
    let data = template_patch(template);
    let prefix: String = owner.name.chars().take(MAX_PREFIX).collect();
    for _ in 0..MAX_COLLISIONS {
        let hash = template_hash(template, Some(*collisions).filter(|c| *c > 0));
        let name = format!("{prefix}-{hash}");
        let mut labels = template["metadata"]["labels"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        labels.insert(HASH_LABEL.into(), json!(hash));
        let mut meta = json!({"name": name, "namespace": ns, "labels": labels,
            "ownerReferences": [owner.reference()]});
        if annotations.as_object().is_some_and(|a| !a.is_empty()) {
            meta["annotations"] = annotations.clone();
        }
        let cr = json!({"apiVersion": "apps/v1", "kind": "ControllerRevision",
            "metadata": meta, "data": data, "revision": revision});
        match server.create(revisions_rt(), Some(ns), cr, opts).await {
            Ok(w) => return Ok(Rev::from_json(&w.object)),
            Err(e) if e.code == 409 => {
                let (existing, _) = server.read(revisions_rt(), Some(ns), &name).await?;
                let r = Rev::from_json(&existing);
                if *r.data() == data && owner.controls(&r.controller) {
                    return Ok(r);
                }
                *collisions += 1;
            }
            Err(e) => return Err(e),
        }
    }
    Err(ApiError::conflict(
        "apps",
        "controllerrevisions",
        owner.name,
        "too many revision name collisions",
    ))
}

/// Sets a revision's number (upstream `UpdateControllerRevision`).
pub(crate) async fn renumber(
    server: &ApiServer,
    ns: &str,
    r: &Rev,
    revision: i64,
    opts: &WriteOptions,
) -> Result<Rev, ApiError> {
    let patch = json!({"metadata": {"uid": r.uid}, "revision": revision});
    let v = patch_object(server, revisions_rt(), ns, &r.name, patch, opts).await?;
    Ok(Rev::from_json(&v))
}

/// Deletes a revision (this one, by uid); whether it is gone.
pub(crate) async fn delete_revision(
    server: &ApiServer,
    ns: &str,
    r: &Rev,
) -> Result<Option<i64>, ApiError> {
    let del = DeleteOptions {
        precondition_uid: Some(r.uid.clone()),
        ..Default::default()
    };
    match server.delete(revisions_rt(), Some(ns), &r.name, &del).await {
        Ok((v, true)) => Ok(Some(rv(&v))),
        Ok((_, false)) => Ok(None),
        Err(e) if e.code == 404 => Ok(None),
        Err(e) => Err(e),
    }
}

/// Labels as a JSON map (for selectors).
pub(crate) fn labels_of(v: &Value) -> Map<String, Value> {
    v["metadata"]["labels"]
        .as_object()
        .cloned()
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_store_never_goes_back() {
        let mut l: Local<&str> = Local::default();
        assert!(l.put("ns/a", 5, "v5"));
        assert!(!l.put("ns/a", 4, "v4"), "older version");
        assert_eq!(l.get("ns/a"), Some(&"v5"));
        // Deleted by us at 7: the informer's older news is ignored.
        assert_eq!(l.deleted_by_us("ns/a", 7), Some("v5"));
        assert!(!l.put("ns/a", 6, "v6"));
        assert!(l.get("ns/a").is_none());
        // A new incarnation after the deletion is taken.
        assert!(l.put("ns/a", 9, "new"));
        assert_eq!(l.get("ns/a"), Some(&"new"));
        // The informer's (late) delete of the old one keeps the new one.
        assert_eq!(l.deleted("ns/a", 7), None);
        assert_eq!(l.get("ns/a"), Some(&"new"));
    }

    #[test]
    fn namespace_listing_is_exact() {
        let mut l: Local<u8> = Local::default();
        l.put("a/x", 1, 1);
        l.put("a-b/y", 1, 2);
        l.put("ab/z", 1, 3);
        l.put("a/w", 1, 4);
        let mut got: Vec<u8> = l.in_namespace("a").copied().collect();
        got.sort();
        assert_eq!(got, [1, 4]);
    }

    #[test]
    fn percentages_round_up() {
        assert_eq!(scaled(&json!("10%"), 1, 5), 1);
        assert_eq!(scaled(&json!("50%"), 1, 3), 2);
        assert_eq!(scaled(&json!(0), 1, 3), 0);
        assert_eq!(scaled(&Value::Null, 1, 3), 1);
    }

    #[test]
    fn claims_adopt_release_and_ignore() {
        let sel =
            LabelSelector::from_label_selector(&json!({"matchLabels": {"app": "x"}})).unwrap();
        let owner = Owner {
            kind: "DaemonSet",
            name: "ds",
            uid: "u1",
            selector: &sel,
            deleting: false,
        };
        let orphan =
            json!({"metadata": {"uid": "p", "resourceVersion": "3", "labels": {"app": "x"}}});
        let Claim::Patch { adopt: true, patch } = claim(&owner, &orphan, true) else {
            panic!("adopts")
        };
        assert_eq!(patch["metadata"]["ownerReferences"][0]["uid"], "u1");
        assert_eq!(patch["metadata"]["resourceVersion"], "3");
        assert_eq!(claim(&owner, &orphan, false), Claim::Ignored);
        let ours = json!({"metadata": {"uid": "p", "labels": {"app": "y"},
            "ownerReferences": [owner.reference()]}});
        let Claim::Patch {
            adopt: false,
            patch,
        } = claim(&owner, &ours, true)
        else {
            panic!("releases")
        };
        assert_eq!(patch["metadata"]["ownerReferences"], json!([]));
        let other = json!({"metadata": {"labels": {"app": "x"}, "ownerReferences": [
            {"kind": "DaemonSet", "name": "ds", "uid": "old", "controller": true}]}});
        assert_eq!(claim(&owner, &other, true), Claim::Ignored);
    }

    #[test]
    fn template_round_trips_through_revision_data() {
        let t = json!({"metadata": {"labels": {"app": "x"}}, "spec": {"containers": []}});
        let d = template_patch(&t);
        assert_eq!(d["spec"]["template"]["$patch"], "replace");
        assert_eq!(template_of(&d), t);
    }

    #[test]
    fn objects_another_kind_controls_are_told_apart() {
        let owned = |kind: &str, controller: bool| {
            json!({"metadata": {"ownerReferences": [
                {"kind": kind, "name": "x", "uid": "u", "controller": controller}]}})
        };
        assert!(controlled_by_other_kind(
            &owned("ReplicaSet", true),
            "StatefulSet"
        ));
        assert!(!controlled_by_other_kind(
            &owned("StatefulSet", true),
            "StatefulSet"
        ));
        // Not a controller reference, or none: adoptable, so kept.
        assert!(!controlled_by_other_kind(
            &owned("ReplicaSet", false),
            "StatefulSet"
        ));
        assert!(!controlled_by_other_kind(
            &json!({"metadata": {}}),
            "DaemonSet"
        ));
    }
}
