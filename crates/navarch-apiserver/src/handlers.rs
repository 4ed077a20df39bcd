//! The verbs, independent of HTTP: each takes decoded input and returns an
//! object or an `ApiError`. The HTTP layer and the built-in tasks both call
//! these, so every write goes through the same admission, defaulting,
//! validation, normalisation and concurrency checks.

use crate::cache::CachedObject;
use crate::ApiServer;
use bytes::Bytes;
use navarch_api::patch::{self, PatchError, PatchType};
use navarch_api::{ApiError, Cause, ResourceType, Subresource};
use navarch_store::{Error as StoreError, KeyValue, Revision};
use serde_json::{json, Map, Value};
use std::sync::Arc;

/// How unknown fields in a request body are treated (`fieldValidation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FieldValidation {
    Ignore,
    #[default]
    Warn,
    Strict,
}

/// Options shared by write verbs.
#[derive(Debug, Clone, Default)]
pub struct WriteOptions {
    pub dry_run: bool,
    pub field_manager: Option<String>,
    pub validation: FieldValidation,
    /// Server-side apply: take ownership of conflicting fields.
    pub force: bool,
}

/// Whether a write is server-side apply (which records field ownership
/// itself) or any other update.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Apply,
    Update,
}

/// A write's result: the object as stored, plus warnings for the client.
#[derive(Debug)]
pub struct Written {
    pub object: Value,
    pub created: bool,
    pub warnings: Vec<String>,
}

/// `DeleteOptions` as the verbs use them.
#[derive(Debug, Clone, Default)]
pub struct DeleteOptions {
    pub grace_period_seconds: Option<i64>,
    pub propagation: Option<String>,
    pub precondition_uid: Option<String>,
    pub precondition_rv: Option<String>,
    pub dry_run: bool,
}

impl DeleteOptions {
    pub fn from_json(v: &Value) -> Result<DeleteOptions, ApiError> {
        if v.is_null() {
            return Ok(DeleteOptions::default());
        }
        if !v.is_object() {
            return Err(ApiError::bad_request("DeleteOptions must be a JSON object"));
        }
        let mut o = DeleteOptions {
            grace_period_seconds: v.get("gracePeriodSeconds").and_then(Value::as_i64),
            propagation: v
                .get("propagationPolicy")
                .and_then(Value::as_str)
                .map(str::to_string),
            precondition_uid: v
                .pointer("/preconditions/uid")
                .and_then(Value::as_str)
                .map(str::to_string),
            precondition_rv: v
                .pointer("/preconditions/resourceVersion")
                .and_then(Value::as_str)
                .map(str::to_string),
            dry_run: false,
        };
        if v.get("orphanDependents").and_then(Value::as_bool) == Some(true)
            && o.propagation.is_none()
        {
            o.propagation = Some("Orphan".into());
        }
        if let Some(p) = &o.propagation {
            if !["Orphan", "Background", "Foreground"].contains(&p.as_str()) {
                return Err(ApiError::invalid(
                    "",
                    "DeleteOptions",
                    "",
                    vec![Cause::not_supported(
                        "propagationPolicy",
                        p,
                        &["Foreground", "Background", "Orphan"],
                    )],
                ));
            }
        }
        if let Some(dr) = v.get("dryRun").and_then(Value::as_array) {
            o.dry_run = dr.iter().any(|d| d == "All");
        }
        Ok(o)
    }
}

pub fn now_rfc3339() -> String {
    navarch_api::meta::rfc3339(jiff::Timestamp::now())
}

fn random_suffix(n: usize) -> String {
    use rand::Rng;
    // Upstream's alphabet: no vowels, no confusable digits.
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::rng();
    (0..n)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

/// Fields present in `input` that normalisation dropped: the unknown fields.
pub fn unknown_fields(input: &Value, output: &Value, path: &str, out: &mut Vec<String>) {
    match (input, output) {
        (Value::Object(i), Value::Object(o)) => {
            for (k, v) in i {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                match o.get(k) {
                    None if !v.is_null() => out.push(p),
                    Some(ov) => unknown_fields(v, ov, &p, out),
                    None => {}
                }
            }
        }
        (Value::Array(i), Value::Array(o)) => {
            for (n, (iv, ov)) in i.iter().zip(o.iter()).enumerate() {
                unknown_fields(iv, ov, &format!("{path}[{n}]"), out);
            }
        }
        _ => {}
    }
}

fn meta_mut(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj.get("metadata").map(Value::is_object).unwrap_or(false) {
        obj["metadata"] = json!({});
    }
    obj["metadata"]
        .as_object_mut()
        .expect("metadata is an object")
}

/// The part of an object that `generation` tracks: everything but metadata and status.
fn spec_of(obj: &Value) -> Value {
    let mut o = obj.clone();
    if let Some(m) = o.as_object_mut() {
        m.remove("metadata");
        m.remove("status");
        m.remove("apiVersion");
        m.remove("kind");
    }
    o
}

/// Strips what is never stored (the resourceVersion lives in the store's revision).
fn for_storage(obj: &Value) -> Bytes {
    let mut o = obj.clone();
    if let Some(m) = o.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("resourceVersion");
        m.remove("selfLink");
    }
    Bytes::from(serde_json::to_vec(&o).unwrap_or_default())
}

fn with_rv(mut obj: Value, rev: Revision) -> Value {
    meta_mut(&mut obj).insert("resourceVersion".into(), Value::String(rev.to_string()));
    obj
}

fn decode_stored(kv: &KeyValue) -> Result<Value, ApiError> {
    let v: Value = serde_json::from_slice(&kv.value)
        .map_err(|e| ApiError::internal(format!("stored object {} is corrupt: {e}", kv.key)))?;
    Ok(with_rv(v, kv.mod_revision))
}

pub fn store_err(e: StoreError) -> ApiError {
    match e {
        StoreError::Compacted {
            requested,
            compacted,
        } => ApiError::gone(format!(
            "too old resource version: {requested} ({compacted})"
        )),
        StoreError::Closed => ApiError::unavailable("storage is shutting down"),
        other => ApiError::internal(format!("storage error: {other}")),
    }
}

/// Converts a stored (core) object to the view of `rt` (events.k8s.io).
pub fn to_view(rt: &ResourceType, v: Value) -> Value {
    match rt.ops.from_storage {
        Some(f) => f(v),
        None => v,
    }
}

impl ApiServer {
    /// Reads the current stored object (linearizable: from the store).
    pub async fn read(
        &self,
        rt: &'static ResourceType,
        ns: Option<&str>,
        name: &str,
    ) -> Result<(Value, Revision), ApiError> {
        let key = rt.key(ns, name);
        match self.store.get(&key).await.map_err(store_err)? {
            Some(kv) => Ok((decode_stored(&kv)?, kv.mod_revision)),
            None => Err(ApiError::not_found(rt.group, rt.plural, name)),
        }
    }

    /// Reads through the cache after it caught up with the store.
    pub async fn get_cached(
        &self,
        rt: &'static ResourceType,
        ns: Option<&str>,
        name: &str,
    ) -> Result<Arc<CachedObject>, ApiError> {
        self.cache
            .sync()
            .await
            .map_err(|e| ApiError::timeout(e.to_string()))?;
        self.cache
            .kind(rt)
            .get(&rt.key(ns, name))
            .ok_or_else(|| ApiError::not_found(rt.group, rt.plural, name))
    }

    /// For admission look-ups of objects that rarely change (namespaces,
    /// service accounts): the cache as it is, synced only on a miss, so a
    /// write never waits for the cache to catch up with other writers.
    async fn lookup_cached(
        &self,
        rt: &'static ResourceType,
        ns: Option<&str>,
        name: &str,
    ) -> Result<Arc<CachedObject>, ApiError> {
        match self.cache.kind(rt).get(&rt.key(ns, name)) {
            Some(o) => Ok(o),
            None => self.get_cached(rt, ns, name).await,
        }
    }

    /// Admission for namespaced creates: the namespace must exist and not be terminating.
    async fn check_namespace(&self, rt: &ResourceType, ns: &str) -> Result<(), ApiError> {
        let nsrt =
            navarch_api::registry::lookup("", "v1", "namespaces").expect("namespaces served");
        let o = match self.lookup_cached(nsrt, None, ns).await {
            Ok(o) => o,
            Err(_) => return Err(ApiError::not_found("", "namespaces", ns)),
        };
        // Namespace deletion sets phase Terminating with the deletionTimestamp.
        if o.field("status.phase").as_deref() == Some("Terminating") {
            return Err(ApiError::forbidden(format!(
                "{} is forbidden: unable to create new content in namespace {ns} because it is being terminated",
                rt.qualified_plural()
            ))
            .with_details(rt.group, rt.plural, ""));
        }
        Ok(())
    }

    /// Defaults, validates and normalises an object about to be written.
    fn finish(
        &self,
        rt: &'static ResourceType,
        obj: &mut Value,
        old: Option<&Value>,
        opts: &WriteOptions,
        warnings: &mut Vec<String>,
    ) -> Result<(), ApiError> {
        (rt.ops.defaults)(obj);
        let name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
        let mut causes = self.validate_meta(rt, obj, old);
        causes.extend((rt.ops.validate)(obj, old));
        if !causes.is_empty() {
            return Err(ApiError::invalid(rt.group, rt.kind, &name, causes));
        }
        let storage_form = match rt.ops.to_storage {
            Some(f) => f(obj.clone()),
            None => Value::Null,
        };
        let storage_rt = if rt.ops.to_storage.is_some() {
            navarch_api::REGISTRY
                .iter()
                .find(|r| r.storage == rt.storage && r.ops.to_storage.is_none())
                .unwrap_or(rt)
        } else {
            rt
        };
        let view_norm = (rt.normalize)(obj.clone())
            .map_err(|e| ApiError::bad_request(format!("{} in body: {e}", rt.kind)))?;
        let mut unknown = Vec::new();
        unknown_fields(obj, &view_norm, "", &mut unknown);
        if !unknown.is_empty() {
            match opts.validation {
                FieldValidation::Strict => {
                    let list: Vec<String> = unknown
                        .iter()
                        .map(|f| format!("unknown field \"{f}\""))
                        .collect();
                    return Err(ApiError::bad_request(format!(
                        "strict decoding error: {}",
                        list.join(", ")
                    )));
                }
                FieldValidation::Warn => {
                    warnings.extend(unknown.iter().map(|f| format!("unknown field \"{f}\"")))
                }
                FieldValidation::Ignore => {}
            }
        }
        // Kinds with their own storage store the normalised view as it is.
        *obj = if rt.ops.to_storage.is_some() {
            (storage_rt.normalize)(storage_form)
                .map_err(|e| ApiError::bad_request(format!("{} in body: {e}", rt.kind)))?
        } else {
            view_norm
        };
        Ok(())
    }

    /// Server-owned metadata rules; name syntax is each kind's (`kinds`).
    fn validate_meta(&self, _rt: &ResourceType, obj: &Value, old: Option<&Value>) -> Vec<Cause> {
        let mut causes = Vec::new();
        if let Some(old) = old {
            for f in ["uid", "creationTimestamp"] {
                let (n, o) = (&obj["metadata"][f], &old["metadata"][f]);
                if !n.is_null() && n != o {
                    causes.push(Cause::immutable(format!("metadata.{f}")));
                }
            }
        }
        causes
    }

    /// Creates an object. `ns` is the namespace from the URL.
    pub async fn create(
        &self,
        rt: &'static ResourceType,
        ns: Option<&str>,
        obj: Value,
        opts: &WriteOptions,
    ) -> Result<Written, ApiError> {
        self.create_inner(rt, ns, obj, opts, Operation::Update)
            .await
    }

    async fn create_inner(
        &self,
        rt: &'static ResourceType,
        ns: Option<&str>,
        mut obj: Value,
        opts: &WriteOptions,
        operation: Operation,
    ) -> Result<Written, ApiError> {
        if !obj.is_object() {
            return Err(ApiError::bad_request(format!(
                "the body of a {} must be a JSON object",
                rt.kind
            )));
        }
        check_type_meta(rt, &mut obj)?;
        let mut warnings = Vec::new();
        {
            let meta = meta_mut(&mut obj);
            if rt.namespaced() {
                let url_ns = ns.unwrap_or("");
                match meta.get("namespace").and_then(Value::as_str) {
                    Some(b) if !b.is_empty() && b != url_ns => {
                        return Err(ApiError::bad_request("the namespace of the provided object does not match the namespace sent on the request"));
                    }
                    _ => {}
                }
                meta.insert("namespace".into(), json!(url_ns));
            } else {
                meta.remove("namespace");
            }
            let name = meta
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            if name.is_empty() {
                if let Some(g) = meta
                    .get("generateName")
                    .and_then(Value::as_str)
                    .filter(|g| !g.is_empty())
                {
                    let g = g.to_string();
                    let base = if g.len() > 58 { &g[..58] } else { &g[..] };
                    meta.insert("name".into(), json!(format!("{base}{}", random_suffix(5))));
                }
            }
            for f in [
                "resourceVersion",
                "selfLink",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
            ] {
                meta.remove(f);
            }
            meta.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
            meta.insert("creationTimestamp".into(), json!(now_rfc3339()));
            if rt.has_spec {
                meta.insert("generation".into(), json!(1));
            } else {
                meta.remove("generation");
            }
        }
        if rt.namespaced() {
            let ns = ns.unwrap_or("");
            if ns.is_empty() {
                return Err(ApiError::bad_request(format!(
                    "{} is namespaced: a namespace is required",
                    rt.kind
                )));
            }
            self.check_namespace(rt, ns).await?;
        }
        (rt.ops.prepare_create)(&mut obj);
        self.admit(rt, &mut obj, None).await?;
        self.finish(rt, &mut obj, None, opts, &mut warnings)?;
        self.track_fields(rt, None, &mut obj, opts, operation, None);
        let name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
        if opts.dry_run {
            return Ok(Written {
                object: to_view(rt, obj),
                created: true,
                warnings,
            });
        }
        let key = rt.key(ns, &name);
        let rev = match self.store.create(&key, for_storage(&obj)).await {
            Ok(rev) => rev,
            Err(StoreError::AlreadyExists) => {
                return Err(ApiError::already_exists(rt.group, rt.plural, &name))
            }
            Err(e) => return Err(store_err(e)),
        };
        let object = with_rv(obj, rev);
        Ok(Written {
            object: to_view(rt, object),
            created: true,
            warnings,
        })
    }

    /// Replaces an object (PUT). `sub` is `Some(Status)` for the status subresource.
    pub async fn update(
        &self,
        rt: &'static ResourceType,
        ns: Option<&str>,
        name: &str,
        sub: Option<Subresource>,
        body: Value,
        opts: &WriteOptions,
    ) -> Result<Written, ApiError> {
        if !body.is_object() {
            return Err(ApiError::bad_request(format!(
                "the body of a {} must be a JSON object",
                rt.kind
            )));
        }
        let mut body = body;
        check_type_meta(rt, &mut body)?;
        let body_name = body["metadata"]["name"].as_str().unwrap_or("");
        if !body_name.is_empty() && body_name != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
        let precondition = body["metadata"]["resourceVersion"]
            .as_str()
            .filter(|s| !s.is_empty())
            .map(str::to_string);
        self.write_loop(
            rt,
            ns,
            name,
            precondition.as_deref(),
            opts,
            Operation::Update,
            sub,
            |_old| Ok(body.clone()),
        )
        .await
    }

    /// Patches an object; server-side apply creates it when absent.
    #[allow(clippy::too_many_arguments)]
    pub async fn patch(
        &self,
        rt: &'static ResourceType,
        ns: Option<&str>,
        name: &str,
        sub: Option<Subresource>,
        ptype: PatchType,
        patch_doc: Value,
        opts: &WriteOptions,
    ) -> Result<Written, ApiError> {
        if ptype == PatchType::Apply {
            if opts.field_manager.as_deref().unwrap_or("").is_empty() {
                return Err(ApiError::bad_request(
                    "PATCH, application/apply-patch+yaml requires fieldManager to be set",
                ));
            }
            match self.read(rt, ns, name).await {
                Err(e) if e.code == 404 && sub.is_none() => {
                    let mut applied = patch_doc.clone();
                    if !applied.is_object() {
                        return Err(ApiError::bad_request("an apply patch must be an object"));
                    }
                    if applied["metadata"]["name"]
                        .as_str()
                        .unwrap_or("")
                        .is_empty()
                    {
                        meta_mut(&mut applied).insert("name".into(), json!(name));
                    }
                    let manager = opts.field_manager.as_deref().unwrap_or("");
                    let obj = patch::apply::server_side_apply(
                        None,
                        &applied,
                        rt,
                        manager,
                        opts.force,
                        &now_rfc3339(),
                    )?;
                    let mut w = self
                        .create_inner(rt, ns, obj, opts, Operation::Apply)
                        .await?;
                    w.created = true;
                    return Ok(w);
                }
                Err(e) => return Err(e),
                Ok(_) => {}
            }
        }
        let rt_kind = rt;
        let operation = if ptype == PatchType::Apply {
            Operation::Apply
        } else {
            Operation::Update
        };
        let manager = opts.field_manager.clone().unwrap_or_default();
        let force = opts.force;
        self.write_loop(rt, ns, name, None, opts, operation, sub, move |old| {
            let res = match ptype {
                PatchType::Json => patch::json_patch(old, &patch_doc),
                PatchType::Merge => patch::merge_patch(old, &patch_doc),
                PatchType::Strategic => {
                    patch::strategic::strategic_merge_patch(old, &patch_doc, rt_kind)
                }
                PatchType::Apply => {
                    let applied = patch::apply::server_side_apply_subresource(
                        Some(old),
                        &patch_doc,
                        rt_kind,
                        sub,
                        &manager,
                        force,
                        &now_rfc3339(),
                    )?;
                    return Ok(applied);
                }
            };
            res.map_err(|e| match e {
                PatchError::BadPatch(m) => ApiError::bad_request(m),
                PatchError::Failed(m) => ApiError::new(422, "Invalid", m),
            })
        })
        .await
    }

    /// The shared read-modify-write loop of update and patch, with
    /// optimistic concurrency: a precondition mismatch is a 409, a race with
    /// another writer is retried.
    #[allow(clippy::too_many_arguments)]
    async fn write_loop<F>(
        &self,
        rt: &'static ResourceType,
        ns: Option<&str>,
        name: &str,
        precondition: Option<&str>,
        opts: &WriteOptions,
        operation: Operation,
        sub: Option<Subresource>,
        mutate: F,
    ) -> Result<Written, ApiError>
    where
        F: Fn(&Value) -> Result<Value, ApiError>,
    {
        let key = rt.key(ns, name);
        for _attempt in 0..16 {
            let (old_stored, old_rev) = self.read(rt, ns, name).await?;
            let old = to_view(rt, old_stored.clone());
            let current_rv = old_rev.to_string();
            if let Some(p) = precondition {
                if p != current_rv {
                    return Err(ApiError::modified(rt.group, rt.plural, name));
                }
            }
            let mut new = mutate(&old)?;
            if !new.is_object() {
                return Err(ApiError::bad_request(
                    "the patched object is not a JSON object",
                ));
            }
            // A resourceVersion carried by the result is a precondition too.
            if precondition.is_none() {
                if let Some(rv) = new["metadata"]["resourceVersion"].as_str() {
                    if !rv.is_empty() && rv != current_rv {
                        return Err(ApiError::modified(rt.group, rt.plural, name));
                    }
                }
            }
            check_type_meta(rt, &mut new)?;
            self.merge_update(rt, sub, &old, &mut new)?;
            let mut warnings = Vec::new();
            self.admit(rt, &mut new, Some(&old)).await?;
            self.finish(rt, &mut new, Some(&old), opts, &mut warnings)?;
            self.track_fields(rt, Some(&old), &mut new, opts, operation, sub);
            // Finalization: the last finalizer gone from a deleting object deletes it.
            let deleting = !new["metadata"]["deletionTimestamp"].is_null();
            let finalizers_left = new["metadata"]["finalizers"]
                .as_array()
                .map(|a| !a.is_empty())
                .unwrap_or(false)
                || (rt.kind == "Namespace"
                    && new["spec"]["finalizers"]
                        .as_array()
                        .map(|a| !a.is_empty())
                        .unwrap_or(false));
            if deleting && !finalizers_left && !(rt.kind == "Pod" && self.pod_needs_graceful(&new))
            {
                if opts.dry_run {
                    return Ok(Written {
                        object: to_view(rt, with_rv(new, old_rev)),
                        created: false,
                        warnings,
                    });
                }
                return match self.store.delete(&key, Some(old_rev)).await {
                    Ok((rev, _)) => Ok(Written {
                        object: to_view(rt, with_rv(new, rev)),
                        created: false,
                        warnings,
                    }),
                    Err(StoreError::Conflict { .. }) => continue,
                    Err(StoreError::NotFound) => {
                        Err(ApiError::not_found(rt.group, rt.plural, name))
                    }
                    Err(e) => Err(store_err(e)),
                };
            }
            let mut old_cmp = old_stored.clone();
            meta_mut(&mut old_cmp).remove("resourceVersion");
            let mut new_cmp = new.clone();
            meta_mut(&mut new_cmp).remove("resourceVersion");
            strip_managed_times(&mut old_cmp);
            strip_managed_times(&mut new_cmp);
            if old_cmp == new_cmp || opts.dry_run {
                // No-op writes are not written (upstream behaviour), nor dry runs.
                let object = if opts.dry_run {
                    with_rv(new, old_rev)
                } else {
                    old_stored
                };
                return Ok(Written {
                    object: to_view(rt, object),
                    created: false,
                    warnings,
                });
            }
            match self.store.update(&key, for_storage(&new), old_rev).await {
                Ok(rev) => {
                    let object = with_rv(new, rev);
                    return Ok(Written {
                        object: to_view(rt, object),
                        created: false,
                        warnings,
                    });
                }
                Err(StoreError::Conflict { .. }) => {
                    if precondition.is_some() {
                        return Err(ApiError::modified(rt.group, rt.plural, name));
                    }
                    continue;
                }
                Err(StoreError::NotFound) => {
                    return Err(ApiError::not_found(rt.group, rt.plural, name))
                }
                Err(e) => return Err(store_err(e)),
            }
        }
        Err(ApiError::conflict(
            rt.group,
            rt.plural,
            name,
            "too many concurrent writers; please retry",
        ))
    }

    /// Carries over what a write must not change: system metadata always;
    /// status on the main resource, everything but status on `/status`;
    /// generation bumped when the spec changed.
    fn merge_update(
        &self,
        rt: &ResourceType,
        sub: Option<Subresource>,
        old: &Value,
        new: &mut Value,
    ) -> Result<(), ApiError> {
        match sub {
            Some(Subresource::Status) => {
                let status = new.get("status").cloned();
                let labels = new["metadata"]["labels"].clone();
                let annotations = new["metadata"]["annotations"].clone();
                let mut merged = old.clone();
                match status {
                    Some(s) => merged["status"] = s,
                    None => {
                        if let Some(m) = merged.as_object_mut() {
                            m.remove("status");
                        }
                    }
                }
                // Upstream's status strategies keep metadata from the old object
                // except labels and annotations, which a status writer may set.
                let m = meta_mut(&mut merged);
                for (k, v) in [("labels", labels), ("annotations", annotations)] {
                    if v.is_null() {
                        m.remove(k);
                    } else {
                        m.insert(k.into(), v);
                    }
                }
                *new = merged;
            }
            Some(Subresource::Finalize) => {
                let fins = new["spec"]["finalizers"].clone();
                let mut merged = old.clone();
                merged["spec"]["finalizers"] = if fins.is_null() { json!([]) } else { fins };
                *new = merged;
            }
            _ => {
                if rt.has_status && rt.has_subresource(Subresource::Status) {
                    match old.get("status") {
                        Some(s) => new["status"] = s.clone(),
                        None => {
                            if let Some(m) = new.as_object_mut() {
                                m.remove("status");
                            }
                        }
                    }
                }
            }
        }
        let old_meta = &old["metadata"];
        let m = meta_mut(new);
        for f in [
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "namespace",
            "name",
            "generation",
        ] {
            match old_meta.get(f) {
                Some(v) if !v.is_null() => {
                    m.insert(f.into(), v.clone());
                }
                _ => {
                    m.remove(f);
                }
            }
        }
        // Finalizers cannot be added to an object being deleted.
        if !old_meta["deletionTimestamp"].is_null() {
            let old_f: Vec<Value> = old_meta["finalizers"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            if let Some(nf) = m.get("finalizers").and_then(Value::as_array) {
                if nf.iter().any(|f| !old_f.contains(f)) {
                    return Err(ApiError::invalid(
                        rt.group,
                        rt.kind,
                        old_meta["name"].as_str().unwrap_or(""),
                        vec![Cause::forbidden(
                            "metadata.finalizers",
                            "no new finalizers can be added if the object is being deleted",
                        )],
                    ));
                }
            }
        }
        if rt.has_spec
            && !matches!(sub, Some(Subresource::Status) | Some(Subresource::Finalize))
            && spec_of(old) != spec_of(new)
        {
            let g = old["metadata"]["generation"].as_i64().unwrap_or(0) + 1;
            meta_mut(new).insert("generation".into(), json!(g));
        }
        Ok(())
    }

    /// Records field ownership in `metadata.managedFields`.
    fn track_fields(
        &self,
        rt: &ResourceType,
        old: Option<&Value>,
        new: &mut Value,
        opts: &WriteOptions,
        operation: Operation,
        sub: Option<Subresource>,
    ) {
        if operation == Operation::Apply {
            return;
        }
        let manager = opts.field_manager.as_deref().unwrap_or("unknown");
        let sub = sub.filter(|s| matches!(s, Subresource::Status | Subresource::Scale));
        patch::apply::track_update_subresource(old, new, rt, sub, manager, &now_rfc3339());
        if let Some(old) = old {
            patch::apply::keep_timestamps_if_unchanged(old, new);
        }
    }

    /// A pod bound to a node and not finished is deleted gracefully: its agent stops it first.
    pub fn pod_needs_graceful(&self, pod: &Value) -> bool {
        let bound = pod["spec"]["nodeName"]
            .as_str()
            .map(|s| !s.is_empty())
            .unwrap_or(false);
        let phase = pod["status"]["phase"].as_str().unwrap_or("");
        bound
            && phase != "Succeeded"
            && phase != "Failed"
            && pod["metadata"]["deletionGracePeriodSeconds"].as_i64() != Some(0)
    }

    /// Deletes an object, honouring preconditions, grace periods, finalizers
    /// and the propagation policy. Returns the object as last seen and
    /// whether it is gone (false: it now carries a deletionTimestamp).
    pub async fn delete(
        &self,
        rt: &'static ResourceType,
        ns: Option<&str>,
        name: &str,
        opts: &DeleteOptions,
    ) -> Result<(Value, bool), ApiError> {
        let key = rt.key(ns, name);
        for _attempt in 0..16 {
            let (old, old_rev) = self.read(rt, ns, name).await?;
            if let Some(uid) = &opts.precondition_uid {
                if old["metadata"]["uid"].as_str() != Some(uid.as_str()) {
                    return Err(ApiError::conflict(rt.group, rt.plural, name, &format!("Precondition failed: UID in precondition: {uid}, UID in object meta: {}", old["metadata"]["uid"].as_str().unwrap_or(""))));
                }
            }
            if let Some(rv) = &opts.precondition_rv {
                if *rv != old_rev.to_string() {
                    return Err(ApiError::conflict(rt.group, rt.plural, name, &format!("Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {old_rev}")));
                }
            }
            let mut new = old.clone();
            let already_deleting = !old["metadata"]["deletionTimestamp"].is_null();
            let mut finalizers: Vec<Value> = old["metadata"]["finalizers"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            match opts.propagation.as_deref() {
                Some("Orphan") if !already_deleting && !finalizers.contains(&json!("orphan")) => {
                    finalizers.push(json!("orphan"))
                }
                Some("Foreground")
                    if !already_deleting && !finalizers.contains(&json!("foregroundDeletion")) =>
                {
                    finalizers.push(json!("foregroundDeletion"))
                }
                _ => {}
            }
            // Graceful pod deletion: the agent kills the containers, then deletes with grace 0.
            let mut grace: Option<i64> = None;
            if rt.kind == "Pod" {
                let g = opts
                    .grace_period_seconds
                    .unwrap_or_else(|| {
                        old["spec"]["terminationGracePeriodSeconds"]
                            .as_i64()
                            .unwrap_or(30)
                    })
                    .max(0);
                let bound = old["spec"]["nodeName"]
                    .as_str()
                    .map(|s| !s.is_empty())
                    .unwrap_or(false);
                let phase = old["status"]["phase"].as_str().unwrap_or("");
                if bound && g > 0 && phase != "Succeeded" && phase != "Failed" {
                    grace = Some(g);
                }
                if already_deleting {
                    let cur = old["metadata"]["deletionGracePeriodSeconds"]
                        .as_i64()
                        .unwrap_or(0);
                    grace = match grace {
                        Some(g) if g < cur => Some(g),
                        Some(_) => Some(cur).filter(|c| *c > 0),
                        None => None,
                    };
                }
            }
            let namespace_finalizers = rt.kind == "Namespace"
                && new["spec"]["finalizers"]
                    .as_array()
                    .map(|a| !a.is_empty())
                    .unwrap_or(false);
            if finalizers.is_empty() && grace.is_none() && !namespace_finalizers {
                if opts.dry_run {
                    return Ok((to_view(rt, old), true));
                }
                match self.store.delete(&key, Some(old_rev)).await {
                    Ok((rev, _)) => return Ok((to_view(rt, with_rv(old, rev)), true)),
                    Err(StoreError::Conflict { .. }) => continue,
                    Err(StoreError::NotFound) => {
                        return Err(ApiError::not_found(rt.group, rt.plural, name))
                    }
                    Err(e) => return Err(store_err(e)),
                }
            }
            // Deletion is pending: mark it.
            {
                let m = meta_mut(&mut new);
                if !already_deleting {
                    let when = jiff::Timestamp::now()
                        + jiff::SignedDuration::from_secs(grace.unwrap_or(0));
                    m.insert(
                        "deletionTimestamp".into(),
                        json!(navarch_api::meta::rfc3339(when)),
                    );
                }
                m.insert(
                    "deletionGracePeriodSeconds".into(),
                    json!(grace.unwrap_or(0)),
                );
                if finalizers.is_empty() {
                    m.remove("finalizers");
                } else {
                    m.insert("finalizers".into(), Value::Array(finalizers));
                }
            }
            if rt.kind == "Namespace" {
                new["status"]["phase"] = json!("Terminating");
            }
            if new == old || opts.dry_run {
                return Ok((to_view(rt, new), false));
            }
            match self.store.update(&key, for_storage(&new), old_rev).await {
                Ok(rev) => return Ok((to_view(rt, with_rv(new, rev)), false)),
                Err(StoreError::Conflict { .. }) => continue,
                Err(StoreError::NotFound) => {
                    return Err(ApiError::not_found(rt.group, rt.plural, name))
                }
                Err(e) => return Err(store_err(e)),
            }
        }
        Err(ApiError::conflict(
            rt.group,
            rt.plural,
            name,
            "too many concurrent writers; please retry",
        ))
    }

    /// `GET …/scale`: the autoscaling/v1 Scale view of a workload.
    pub fn scale_of(&self, rt: &ResourceType, obj: &Value) -> Value {
        let selector = if rt.kind == "ReplicationController" {
            let m = &obj["spec"]["selector"];
            navarch_api::selector::LabelSelector::from_label_selector(&json!({"matchLabels": m}))
                .map(|s| s.to_string())
                .unwrap_or_default()
        } else {
            navarch_api::selector::LabelSelector::from_label_selector(&obj["spec"]["selector"])
                .map(|s| s.to_string())
                .unwrap_or_default()
        };
        let m = &obj["metadata"];
        json!({
            "kind": "Scale",
            "apiVersion": "autoscaling/v1",
            "metadata": {
                "name": m["name"], "namespace": m["namespace"], "uid": m["uid"],
                "resourceVersion": m["resourceVersion"], "creationTimestamp": m["creationTimestamp"],
            },
            "spec": {"replicas": obj["spec"]["replicas"].as_i64().unwrap_or(1)},
            "status": {"replicas": obj["status"]["replicas"].as_i64().unwrap_or(0), "selector": selector},
        })
    }

    /// Writes a Scale (PUT or PATCH result) back into the workload.
    pub async fn update_scale(
        &self,
        rt: &'static ResourceType,
        ns: Option<&str>,
        name: &str,
        ptype: Option<PatchType>,
        body: Value,
        opts: &WriteOptions,
    ) -> Result<Value, ApiError> {
        let this = self;
        let w = self
            .write_loop(
                rt,
                ns,
                name,
                None,
                opts,
                Operation::Update,
                Some(Subresource::Scale),
                |old| {
                    let scale = this.scale_of(rt, old);
                    let new_scale = match ptype {
                        None => body.clone(),
                        Some(PatchType::Json) => patch::json_patch(&scale, &body)
                            .map_err(|e| ApiError::bad_request(e.to_string()))?,
                        Some(_) => patch::merge_patch(&scale, &body)
                            .map_err(|e| ApiError::bad_request(e.to_string()))?,
                    };
                    if let Some(rv) = new_scale["metadata"]["resourceVersion"].as_str() {
                        if !rv.is_empty()
                            && rv != old["metadata"]["resourceVersion"].as_str().unwrap_or("")
                        {
                            return Err(ApiError::modified(rt.group, rt.plural, name));
                        }
                    }
                    let replicas = match &new_scale["spec"]["replicas"] {
                        Value::Number(n)
                            if n.as_i64()
                                .map(|r| (0..=i32::MAX as i64).contains(&r))
                                .unwrap_or(false) =>
                        {
                            n.as_i64().unwrap_or(0)
                        }
                        Value::Null => 0,
                        other => {
                            return Err(ApiError::invalid(
                                "autoscaling",
                                "Scale",
                                name,
                                vec![Cause::invalid(
                                    "spec.replicas",
                                    other,
                                    "must be greater than or equal to 0",
                                )],
                            ));
                        }
                    };
                    let mut new = old.clone();
                    new["spec"]["replicas"] = json!(replicas);
                    Ok(new)
                },
            )
            .await?;
        Ok(self.scale_of(rt, &w.object))
    }

    /// `POST pods/{name}/binding`: assigns a node once.
    pub async fn bind(
        &self,
        rt: &'static ResourceType,
        ns: Option<&str>,
        name: &str,
        binding: &Value,
        opts: &WriteOptions,
    ) -> Result<(), ApiError> {
        let node = binding["target"]["name"].as_str().unwrap_or("").to_string();
        if node.is_empty() {
            return Err(ApiError::invalid(
                "",
                "Binding",
                name,
                vec![Cause::required("target.name")],
            ));
        }
        let bname = binding["metadata"]["name"].as_str().unwrap_or(name);
        if bname != name {
            return Err(ApiError::bad_request(format!(
                "the name of the binding ({bname}) does not match the pod ({name})"
            )));
        }
        let errs = navarch_api::kinds::validation::is_dns1123_subdomain(&node);
        if let Some(e) = errs.first() {
            return Err(ApiError::invalid(
                "",
                "Binding",
                name,
                vec![Cause::invalid("target.name", &node, e)],
            ));
        }
        let uid = binding["metadata"]["uid"]
            .as_str()
            .filter(|u| !u.is_empty());
        if opts.dry_run {
            let (old, _) = self.read(rt, ns, name).await?;
            return check_bindable(&old, name, uid);
        }
        // Upstream's binding storage sets two fields of the stored pod and
        // nothing else: no admission, no validation of the unchanged pod,
        // no managedFields entry. The first attempt reads the watch cache
        // (the compare-and-swap catches a stale copy); retries read the store.
        let key = rt.key(ns, name);
        for attempt in 0..16 {
            let cached = (attempt == 0)
                .then(|| self.cache.kind(rt).get(&key))
                .flatten();
            let (mut pod, rev) = match cached {
                Some(o) => (o.value(), o.mod_revision),
                None => self.read(rt, ns, name).await?,
            };
            check_bindable(&pod, name, uid)?;
            pod["spec"]["nodeName"] = json!(node);
            set_condition(&mut pod, "PodScheduled", "True", "", "");
            match self.store.update(&key, for_storage(&pod), rev).await {
                Ok(_) => return Ok(()),
                Err(StoreError::Conflict { .. }) => continue,
                Err(StoreError::NotFound) => {
                    return Err(ApiError::not_found(rt.group, rt.plural, name))
                }
                Err(e) => return Err(store_err(e)),
            }
        }
        Err(ApiError::conflict(
            rt.group,
            rt.plural,
            name,
            "too many concurrent writers; please retry",
        ))
    }

    /// Kind-specific admission (mutating and validating), as upstream's plugins.
    async fn admit(
        &self,
        rt: &'static ResourceType,
        obj: &mut Value,
        old: Option<&Value>,
    ) -> Result<(), ApiError> {
        match rt.kind {
            "Pod" if old.is_none() => self.admit_pod(obj).await,
            "Service" => self.admit_service(obj, old).await,
            _ => Ok(()),
        }
    }

    async fn admit_pod(&self, pod: &mut Value) -> Result<(), ApiError> {
        // ServiceAccount admission: default the account and require it to exist.
        let ns = pod["metadata"]["namespace"]
            .as_str()
            .unwrap_or("")
            .to_string();
        let name = pod["metadata"]["name"].as_str().unwrap_or("").to_string();
        let sa = match pod["spec"]["serviceAccountName"]
            .as_str()
            .filter(|s| !s.is_empty())
        {
            Some(s) => s.to_string(),
            None => pod["spec"]["serviceAccount"]
                .as_str()
                .filter(|s| !s.is_empty())
                .unwrap_or("default")
                .to_string(),
        };
        pod["spec"]["serviceAccountName"] = json!(sa);
        pod["spec"]["serviceAccount"] = json!(sa);
        let sart = navarch_api::registry::lookup("", "v1", "serviceaccounts").expect("served");
        if self.lookup_cached(sart, Some(&ns), &sa).await.is_err() {
            return Err(ApiError::forbidden(format!("pods \"{name}\" is forbidden: error looking up service account {ns}/{sa}: serviceaccount \"{sa}\" not found")).with_details("", "pods", &name));
        }
        // Priority admission.
        if let Some(pc) = pod["spec"]["priorityClassName"]
            .as_str()
            .filter(|s| !s.is_empty())
            .map(str::to_string)
        {
            let pcrt = navarch_api::registry::lookup("scheduling.k8s.io", "v1", "priorityclasses")
                .expect("served");
            match self.get_cached(pcrt, None, &pc).await {
                Ok(o) => {
                    let v = o.value();
                    pod["spec"]["priority"] = v["value"].clone();
                    if pod["spec"]["preemptionPolicy"].is_null() {
                        pod["spec"]["preemptionPolicy"] = json!(v["preemptionPolicy"]
                            .as_str()
                            .unwrap_or("PreemptLowerPriority"));
                    }
                }
                Err(_) if pc == "system-node-critical" || pc == "system-cluster-critical" => {
                    pod["spec"]["priority"] = json!(if pc == "system-node-critical" {
                        2000001000
                    } else {
                        2000000000
                    });
                }
                Err(_) => {
                    return Err(ApiError::forbidden(format!(
                        "pods \"{name}\" is forbidden: no PriorityClass with name {pc} was found"
                    ))
                    .with_details("", "pods", &name));
                }
            }
        } else if pod["spec"]["priority"].is_null() {
            let pcrt = navarch_api::registry::lookup("scheduling.k8s.io", "v1", "priorityclasses")
                .expect("served");
            let list = self.cache.kind(pcrt).list(&Default::default(), 0);
            let default = list
                .items
                .iter()
                .map(|o| o.value())
                .find(|v| v["globalDefault"] == json!(true));
            match default {
                Some(v) => {
                    pod["spec"]["priorityClassName"] = v["metadata"]["name"].clone();
                    pod["spec"]["priority"] = v["value"].clone();
                    pod["spec"]["preemptionPolicy"] = json!(v["preemptionPolicy"]
                        .as_str()
                        .unwrap_or("PreemptLowerPriority"));
                }
                None => pod["spec"]["priority"] = json!(0),
            }
        }
        // DefaultTolerationSeconds: tolerate not-ready and unreachable nodes
        // for the configured time (300 s by default).
        let tolerations = pod["spec"]["tolerations"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let mut tolerations = tolerations;
        for (key, seconds) in [
            (
                "node.kubernetes.io/not-ready",
                self.default_tolerations.not_ready,
            ),
            (
                "node.kubernetes.io/unreachable",
                self.default_tolerations.unreachable,
            ),
        ] {
            let has = tolerations.iter().any(|t| {
                (t["key"] == key || (t["key"].is_null() && t["operator"] == "Exists"))
                    && (t["effect"].is_null() || t["effect"] == "NoExecute")
            });
            if !has {
                tolerations.push(json!({"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": seconds}));
            }
        }
        pod["spec"]["tolerations"] = Value::Array(tolerations);
        Ok(())
    }

    async fn admit_service(&self, svc: &mut Value, old: Option<&Value>) -> Result<(), ApiError> {
        let ty = svc["spec"]["type"]
            .as_str()
            .unwrap_or("ClusterIP")
            .to_string();
        if ty == "ExternalName" {
            return Ok(());
        }
        let name = svc["metadata"]["name"].as_str().unwrap_or("").to_string();
        let old_ip = old
            .and_then(|o| o["spec"]["clusterIP"].as_str())
            .map(str::to_string);
        match svc["spec"]["clusterIP"].as_str() {
            Some("None") => {
                svc["spec"]["clusterIPs"] = json!(["None"]);
            }
            Some(ip) if !ip.is_empty() => {
                if old_ip.as_deref() != Some(ip) {
                    self.ips.claim(ip, &self.cache).map_err(|m| {
                        ApiError::invalid(
                            "",
                            "Service",
                            &name,
                            vec![Cause::invalid("spec.clusterIPs", ip, m)],
                        )
                    })?;
                }
                svc["spec"]["clusterIPs"] = json!([ip]);
            }
            _ => match old_ip {
                Some(ip) if !ip.is_empty() => {
                    svc["spec"]["clusterIP"] = json!(ip);
                    svc["spec"]["clusterIPs"] = json!([ip]);
                }
                _ => {
                    let ip = self.ips.allocate(&self.cache).map_err(|m| {
                        ApiError::internal(format!("failed to allocate a serviceIP: {m}"))
                    })?;
                    svc["spec"]["clusterIP"] = json!(ip);
                    svc["spec"]["clusterIPs"] = json!([ip]);
                }
            },
        }
        if ty == "NodePort" || ty == "LoadBalancer" {
            if let Some(ports) = svc["spec"]["ports"].as_array_mut() {
                for p in ports {
                    if p["nodePort"].as_i64().unwrap_or(0) == 0 {
                        let keep = old.and_then(|o| {
                            o["spec"]["ports"].as_array().and_then(|ops| {
                                ops.iter()
                                    .find(|op| {
                                        op["port"] == p["port"] && op["protocol"] == p["protocol"]
                                    })
                                    .and_then(|op| op["nodePort"].as_i64())
                            })
                        });
                        let port = match keep {
                            Some(k) if k > 0 => k,
                            _ => self.ips.allocate_node_port(&self.cache).map_err(|m| {
                                ApiError::internal(format!("failed to allocate a nodePort: {m}"))
                            })?,
                        };
                        p["nodePort"] = json!(port);
                    }
                }
            }
        }
        Ok(())
    }
}

/// Whether a pod may be bound: the binding's uid (upstream's UID
/// precondition), not being deleted, not bound yet.
fn check_bindable(pod: &Value, name: &str, uid: Option<&str>) -> Result<(), ApiError> {
    if let Some(uid) = uid {
        let have = pod["metadata"]["uid"].as_str().unwrap_or("");
        if uid != have {
            return Err(ApiError::conflict(
                "",
                "pods",
                name,
                &format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {have}"
                ),
            ));
        }
    }
    if !pod["metadata"]["deletionTimestamp"].is_null() {
        return Err(ApiError::conflict(
            "",
            "pods",
            name,
            "pod is being deleted, cannot be assigned to a host",
        ));
    }
    if let Some(cur) = pod["spec"]["nodeName"].as_str().filter(|s| !s.is_empty()) {
        return Err(ApiError::conflict(
            "",
            "pods",
            name,
            &format!("pod {name} is already assigned to node \"{cur}\""),
        ));
    }
    Ok(())
}

/// Sets (or replaces) a status condition.
pub fn set_condition(obj: &mut Value, ty: &str, status: &str, reason: &str, message: &str) {
    let now = now_rfc3339();
    if !obj["status"].is_object() {
        obj["status"] = json!({});
    }
    let conds = obj["status"]["conditions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut conds: Vec<Value> = conds.into_iter().filter(|c| c["type"] != ty).collect();
    let mut c =
        json!({"type": ty, "status": status, "lastProbeTime": null, "lastTransitionTime": now});
    if !reason.is_empty() {
        c["reason"] = json!(reason);
    }
    if !message.is_empty() {
        c["message"] = json!(message);
    }
    conds.push(c);
    obj["status"]["conditions"] = Value::Array(conds);
}

fn strip_managed_times(v: &mut Value) {
    if let Some(mf) = v
        .pointer_mut("/metadata/managedFields")
        .and_then(Value::as_array_mut)
    {
        for e in mf {
            if let Some(o) = e.as_object_mut() {
                o.remove("time");
            }
        }
    }
}

/// Checks `apiVersion`/`kind` of a body against the URL's resource and fills them in.
pub fn check_type_meta(rt: &ResourceType, obj: &mut Value) -> Result<(), ApiError> {
    let want = rt.api_version();
    if let Some(av) = obj
        .get("apiVersion")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
    {
        if av != want {
            return Err(ApiError::bad_request(format!("the API version in the data ({av}) does not match the expected API version ({want})")));
        }
    }
    if let Some(k) = obj
        .get("kind")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
    {
        if k != rt.kind {
            return Err(ApiError::bad_request(format!(
                "the kind in the data ({k}) does not match the expected kind ({})",
                rt.kind
            )));
        }
    }
    obj["apiVersion"] = json!(want);
    obj["kind"] = json!(rt.kind);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_fields_are_found_with_paths() {
        let input = json!({"spec": {"replicas": 1, "foo": 2, "template": {"spec": {"containers": [{"name": "a", "bar": 1}]}}}, "x": null});
        let output =
            json!({"spec": {"replicas": 1, "template": {"spec": {"containers": [{"name": "a"}]}}}});
        let mut out = Vec::new();
        unknown_fields(&input, &output, "", &mut out);
        assert_eq!(
            out,
            vec![
                "spec.foo".to_string(),
                "spec.template.spec.containers[0].bar".to_string()
            ]
        );
    }

    #[test]
    fn delete_options_parse() {
        let o = DeleteOptions::from_json(&json!({"propagationPolicy": "Foreground", "gracePeriodSeconds": 5, "preconditions": {"uid": "u"}})).unwrap();
        assert_eq!(o.propagation.as_deref(), Some("Foreground"));
        assert_eq!(o.grace_period_seconds, Some(5));
        assert_eq!(o.precondition_uid.as_deref(), Some("u"));
        assert!(DeleteOptions::from_json(&json!({"propagationPolicy": "Sideways"})).is_err());
    }
}
