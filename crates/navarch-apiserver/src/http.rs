//! The HTTPS surface: TLS, authentication, routing, content negotiation.

use crate::auth::{Attributes, User};
use crate::cache::{CacheError, CachedObject, EventType, Filter, WatchItem};
use crate::handlers::{to_view, DeleteOptions, FieldValidation, WriteOptions, Written};
use crate::table::{self, IncludeObject};
use crate::{discovery, ApiServer};
use bytes::{Bytes, BytesMut};
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use navarch_api::patch::PatchType;
use navarch_api::selector::{FieldSelector, LabelSelector};
use navarch_api::{registry, ApiError, ResourceType, Subresource};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

pub type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, std::io::Error>;

/// Largest request body accepted (upstream's limit).
pub const MAX_BODY: usize = 3 * 1024 * 1024;

pub(crate) fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

pub(crate) fn json_response(code: StatusCode, v: &Value) -> Response<Body> {
    bytes_response(
        code,
        "application/json",
        Bytes::from(serde_json::to_vec(v).unwrap_or_default()),
    )
}

fn bytes_response(code: StatusCode, content_type: &str, b: Bytes) -> Response<Body> {
    let mut r = Response::new(full(b));
    *r.status_mut() = code;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(content_type).unwrap_or(HeaderValue::from_static("application/json")),
    );
    r
}

pub fn error_response(e: &ApiError) -> Response<Body> {
    let mut r = json_response(
        StatusCode::from_u16(e.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        &e.to_status(),
    );
    if let Some(s) = e.retry_after {
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(s));
    }
    r
}

/// Parsed query string (repeated keys keep the last value, except `command`).
pub struct Query {
    map: HashMap<String, String>,
}

impl Query {
    pub fn parse(q: Option<&str>) -> Query {
        let mut map = HashMap::new();
        if let Some(q) = q {
            for (k, v) in form_urlencoded::parse(q.as_bytes()) {
                if !k.is_empty() {
                    map.insert(k.into_owned(), v.into_owned());
                }
            }
        }
        Query { map }
    }
    pub fn get(&self, k: &str) -> Option<&str> {
        self.map.get(k).map(String::as_str)
    }
    pub fn flag(&self, k: &str) -> bool {
        matches!(self.get(k), Some("true") | Some("1"))
    }
    fn write_options(&self, headers: &HeaderMap) -> Result<WriteOptions, ApiError> {
        let validation = match self.get("fieldValidation") {
            None | Some("") | Some("Warn") => FieldValidation::Warn,
            Some("Strict") => FieldValidation::Strict,
            Some("Ignore") => FieldValidation::Ignore,
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "fieldValidation must be one of Ignore, Warn or Strict, got {other:?}"
                )))
            }
        };
        let dry_run = match self.get("dryRun") {
            None | Some("") => false,
            Some("All") => true,
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "dryRun must be All, got {other:?}"
                )))
            }
        };
        // Upstream's default manager: the User-Agent's program name.
        let field_manager = match self.get("fieldManager").filter(|m| !m.is_empty()) {
            Some(m) if m.len() > 128 => {
                return Err(ApiError::bad_request(
                    "fieldManager must not be longer than 128 characters",
                ))
            }
            Some(m) => Some(m.to_string()),
            None => Some(
                headers
                    .get(header::USER_AGENT)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|ua| ua.split('/').next())
                    .filter(|p| !p.is_empty())
                    .unwrap_or("unknown")
                    .chars()
                    .take(128)
                    .collect(),
            ),
        };
        Ok(WriteOptions {
            dry_run,
            field_manager,
            validation,
            force: self.flag("force"),
        })
    }
}

/// The output the client negotiated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Output {
    Json,
    Table,
    PartialMetadata,
}

fn negotiate(headers: &HeaderMap) -> Result<Output, ApiError> {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if accept.is_empty() {
        return Ok(Output::Json);
    }
    let mut json_ok = false;
    for part in accept.split(',') {
        let part = part.trim();
        let mut params = part.split(';').map(str::trim);
        let media = params.next().unwrap_or("");
        let params: Vec<&str> = params.collect();
        let as_ = params.iter().find_map(|p| p.strip_prefix("as="));
        match (media, as_) {
            ("application/json", Some("Table")) => return Ok(Output::Table),
            ("application/json", Some("PartialObjectMetadata"))
            | ("application/json", Some("PartialObjectMetadataList")) => {
                return Ok(Output::PartialMetadata)
            }
            ("application/json", None)
            | ("*/*", _)
            | ("application/*", _)
            | ("application/yaml", None) => json_ok = true,
            _ => {}
        }
    }
    if json_ok {
        Ok(Output::Json)
    } else {
        Err(ApiError::not_acceptable(format!("only the following media types are accepted: application/json, application/json;as=Table;v=v1;g=meta.k8s.io (got {accept:?})")))
    }
}

/// A request for objects of one resource.
struct ResourcePath {
    rt: &'static ResourceType,
    namespace: Option<String>,
    name: Option<String>,
    sub: Option<Subresource>,
}

enum Route {
    Version,
    Health(&'static str),
    Api,
    Apis,
    ApiGroup(String),
    ResourceList(String, String),
    OpenApiRoot,
    OpenApiDoc(String),
    Resource(ResourcePath),
    Bindings(String),
    AccessReview(&'static str),
    /// `GET /cacerts`: the cluster CA, unauthenticated (node join).
    CaCerts,
    /// `POST /navarch/v1/join`: node certificates for the node token.
    Join,
    NotFound,
}

fn route(path: &str) -> Route {
    let trimmed = path.trim_end_matches('/');
    let segs: Vec<&str> = trimmed.split('/').filter(|s| !s.is_empty()).collect();
    match segs.as_slice() {
        ["version"] => return Route::Version,
        ["cacerts"] => return Route::CaCerts,
        ["navarch", "v1", "join"] => return Route::Join,
        ["healthz", ..] => return Route::Health("healthz"),
        ["livez", ..] => return Route::Health("livez"),
        ["readyz", ..] => return Route::Health("readyz"),
        ["api"] => return Route::Api,
        ["apis"] => return Route::Apis,
        ["openapi", "v3"] => return Route::OpenApiRoot,
        ["openapi", "v3", rest @ ..] => return Route::OpenApiDoc(rest.join("/")),
        ["apis", "authorization.k8s.io", "v1", "selfsubjectaccessreviews"] => {
            return Route::AccessReview("SelfSubjectAccessReview")
        }
        ["apis", "authentication.k8s.io", "v1", "selfsubjectreviews"] => {
            return Route::AccessReview("SelfSubjectReview")
        }
        _ => {}
    }
    let (group, version, rest): (&str, &str, &[&str]) = match segs.as_slice() {
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g] => return Route::ApiGroup(g.to_string()),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return Route::NotFound,
    };
    if rest.is_empty() {
        return Route::ResourceList(group.to_string(), version.to_string());
    }
    let (namespace, rest): (Option<String>, &[&str]) = match rest {
        ["namespaces", ns, r, more @ ..]
            if registry::lookup(group, version, r).is_some()
                || (*r == "bindings" && group.is_empty()) =>
        {
            (Some(ns.to_string()), &rest[2..2 + 1 + more.len()])
        }
        _ => (None, rest),
    };
    if group.is_empty() && rest == ["bindings"] {
        if let Some(ns) = namespace {
            return Route::Bindings(ns);
        }
    }
    let Some(rt) = registry::lookup(group, version, rest[0]) else {
        return Route::NotFound;
    };
    if namespace.is_some() && !rt.namespaced() {
        return Route::NotFound;
    }
    let name = rest.get(1).map(|s| s.to_string());
    let sub = match rest.get(2) {
        None => None,
        Some(s) => match Subresource::parse(s) {
            Some(sr) if rt.has_subresource(sr) && rest.len() == 3 => Some(sr),
            _ => return Route::NotFound,
        },
    };
    if rest.len() > 3 {
        return Route::NotFound;
    }
    Route::Resource(ResourcePath {
        rt,
        namespace,
        name,
        sub,
    })
}

fn verb_of(method: &Method, rp: &ResourcePath, q: &Query) -> &'static str {
    match (method, rp.name.is_some()) {
        (&Method::GET, false) if q.flag("watch") => "watch",
        (&Method::GET, false) => "list",
        (&Method::GET, true) => "get",
        (&Method::POST, _) => "create",
        (&Method::PUT, _) => "update",
        (&Method::PATCH, _) => "patch",
        (&Method::DELETE, false) => "deletecollection",
        (&Method::DELETE, true) => "delete",
        _ => "unknown",
    }
}

impl ApiServer {
    pub(crate) async fn serve_request(
        self: Arc<Self>,
        req: Request<Incoming>,
        cert_user: Option<User>,
    ) -> Response<Body> {
        let started = std::time::Instant::now();
        let method = req.method().clone();
        let path = req.uri().path().to_string();
        // A bug must cost one request a 500, never the connection or the server.
        let fut = std::panic::AssertUnwindSafe(self.clone().dispatch(req, cert_user));
        let resp = match futures::FutureExt::catch_unwind(fut).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => error_response(&e),
            Err(_) => {
                tracing::error!(%method, %path, "request handler panicked");
                error_response(&ApiError::internal(
                    "an internal error occurred while handling the request",
                ))
            }
        };
        tracing::debug!(%method, %path, status = resp.status().as_u16(), elapsed_us = started.elapsed().as_micros() as u64, "request");
        resp
    }

    fn authenticate(&self, headers: &HeaderMap, cert_user: Option<User>) -> Option<User> {
        if let Some(auth) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
        {
            if let Some(token) = auth.strip_prefix("Bearer ").map(str::trim) {
                return self.tokens.authenticate(token);
            }
            return None;
        }
        cert_user
    }

    async fn dispatch(
        self: Arc<Self>,
        req: Request<Incoming>,
        cert_user: Option<User>,
    ) -> Result<Response<Body>, ApiError> {
        let path = req.uri().path().to_string();
        let r = route(&path);
        // Health and version are public, as upstream's system:public-info-viewer.
        match &r {
            Route::Health(which) => {
                let ready =
                    *which != "readyz" || self.ready.load(std::sync::atomic::Ordering::Acquire);
                return Ok(if ready {
                    bytes_response(
                        StatusCode::OK,
                        "text/plain; charset=utf-8",
                        Bytes::from_static(b"ok"),
                    )
                } else {
                    bytes_response(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "text/plain; charset=utf-8",
                        Bytes::from_static(b"not ready"),
                    )
                });
            }
            Route::Version => return Ok(json_response(StatusCode::OK, &discovery::version())),
            Route::CaCerts => {
                if req.method() != Method::GET {
                    return Err(ApiError::method_not_allowed("cacerts only supports get"));
                }
                return Ok(bytes_response(
                    StatusCode::OK,
                    "text/plain",
                    Bytes::from(self.joiner.ca_pem().to_string()),
                ));
            }
            Route::Join => {
                if req.method() != Method::POST {
                    return Err(ApiError::method_not_allowed("join only supports create"));
                }
                let auth = req
                    .headers()
                    .get(header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok());
                if !self.joiner.token_ok(auth) {
                    return Err(ApiError::unauthorized());
                }
                let (_, body) = read_body(req).await?;
                return Ok(json_response(StatusCode::OK, &self.joiner.join(&body)?));
            }
            _ => {}
        }
        let Some(user) = self.authenticate(req.headers(), cert_user) else {
            return Err(ApiError::unauthorized());
        };
        let q = Query::parse(req.uri().query());
        let method = req.method().clone();
        let headers = req.headers().clone();
        if method != Method::GET
            && matches!(
                r,
                Route::Api
                    | Route::Apis
                    | Route::ApiGroup(_)
                    | Route::ResourceList(..)
                    | Route::OpenApiRoot
                    | Route::OpenApiDoc(_)
            )
        {
            return Err(ApiError::method_not_allowed(format!(
                "the server does not allow this method on the requested resource ({method} {path})"
            )));
        }
        match r {
            Route::Api | Route::Apis => {
                let core = matches!(r, Route::Api);
                let accept = req
                    .headers()
                    .get(header::ACCEPT)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                for (v, av) in [
                    ("v=v2;", "apidiscovery.k8s.io/v2"),
                    ("v=v2beta1;", "apidiscovery.k8s.io/v2beta1"),
                ] {
                    let wanted = accept.split(',').any(|p| {
                        let p: String = p.chars().filter(|c| !c.is_whitespace()).collect();
                        p.contains("g=apidiscovery.k8s.io")
                            && format!("{p};").contains(v)
                            && p.contains("as=APIGroupDiscoveryList")
                    });
                    if wanted {
                        let doc = self.aggregated(core, av);
                        let ct = format!(
                            "application/json;g=apidiscovery.k8s.io;{}as=APIGroupDiscoveryList",
                            v
                        );
                        return Ok(bytes_response(StatusCode::OK, &ct, doc));
                    }
                }
                Ok(json_response(
                    StatusCode::OK,
                    &if core {
                        discovery::api_versions()
                    } else {
                        discovery::group_list()
                    },
                ))
            }
            Route::ApiGroup(g) => discovery::group(&g)
                .map(|v| json_response(StatusCode::OK, &v))
                .ok_or_else(|| {
                    ApiError::new(
                        404,
                        "NotFound",
                        "the server could not find the requested resource",
                    )
                }),
            Route::ResourceList(g, v) => discovery::resource_list(&g, &v)
                .map(|v| json_response(StatusCode::OK, &v))
                .ok_or_else(|| {
                    ApiError::new(
                        404,
                        "NotFound",
                        "the server could not find the requested resource",
                    )
                }),
            Route::OpenApiRoot => Ok(json_response(StatusCode::OK, navarch_api::openapi::root())),
            Route::OpenApiDoc(p) => match navarch_api::openapi::document(&p) {
                Some((bytes, _hash)) => {
                    let mut r = bytes_response(
                        StatusCode::OK,
                        "application/json",
                        Bytes::from(bytes.clone()),
                    );
                    r.headers_mut().insert(
                        header::CACHE_CONTROL,
                        HeaderValue::from_static("public, immutable"),
                    );
                    Ok(r)
                }
                None => Err(ApiError::new(
                    404,
                    "NotFound",
                    format!("no OpenAPI document for {p:?}"),
                )),
            },
            Route::AccessReview(kind) => {
                if method != Method::POST {
                    return Err(ApiError::method_not_allowed(format!(
                        "{kind} only supports create"
                    )));
                }
                let body = read_body(req).await?;
                let mut v = decode_body(&body.0, &body.1)?;
                if !v.is_object() {
                    return Err(ApiError::bad_request(format!(
                        "{kind} must be a JSON object"
                    )));
                }
                if kind == "SelfSubjectAccessReview" {
                    v["apiVersion"] = json!("authorization.k8s.io/v1");
                    v["kind"] = json!(kind);
                    v["status"] = json!({"allowed": true, "reason": "navarch allows every authenticated user (RBAC is not enabled yet)"});
                } else {
                    v = json!({"apiVersion": "authentication.k8s.io/v1", "kind": kind, "metadata": {"creationTimestamp": null},
                               "status": {"userInfo": {"username": user.name, "groups": user.groups}}});
                }
                Ok(json_response(StatusCode::CREATED, &v))
            }
            Route::Bindings(ns) => {
                if method != Method::POST {
                    return Err(ApiError::method_not_allowed(
                        "bindings only supports create",
                    ));
                }
                let (ct, body) = read_body(req).await?;
                let b = decode_body(&ct, &body)?;
                let name = b["metadata"]["name"].as_str().unwrap_or("").to_string();
                let pods = registry::lookup("", "v1", "pods").expect("served");
                self.bind(pods, Some(&ns), &name, &b, &q.write_options(&headers)?)
                    .await?;
                Ok(json_response(
                    StatusCode::CREATED,
                    &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
                ))
            }
            Route::Resource(rp) => {
                let verb = verb_of(&method, &rp, &q);
                let attrs = Attributes {
                    verb,
                    group: rp.rt.group,
                    resource: rp.rt.plural,
                    subresource: rp.sub.map(|s| s.name()).unwrap_or(""),
                    namespace: rp.namespace.as_deref().unwrap_or(""),
                    name: rp.name.as_deref().unwrap_or(""),
                };
                if let Err(reason) = self.authorizer.authorize(&user, &attrs) {
                    return Err(ApiError::forbidden(format!(
                        "{} is forbidden: User \"{}\" cannot {verb} resource \"{}\": {reason}",
                        rp.rt.qualified_plural(),
                        user.name,
                        rp.rt.plural
                    )));
                }
                self.resource(req, rp, q).await
            }
            Route::Health(_) | Route::Version | Route::CaCerts | Route::Join => {
                unreachable!("handled above")
            }
            Route::NotFound => Err(ApiError::new(
                404,
                "NotFound",
                "the server could not find the requested resource",
            )),
        }
    }

    async fn resource(
        self: Arc<Self>,
        req: Request<Incoming>,
        rp: ResourcePath,
        q: Query,
    ) -> Result<Response<Body>, ApiError> {
        let rt = rp.rt;
        let ns = rp.namespace.as_deref();
        let method = req.method().clone();
        let headers = req.headers().clone();
        if rt.namespaced()
            && ns.is_none()
            && (rp.name.is_some() || method != Method::GET)
            && !(method == Method::DELETE && rp.name.is_none())
        {
            return Err(ApiError::new(
                404,
                "NotFound",
                "the server could not find the requested resource",
            ));
        }
        match (method.clone(), rp.name.as_deref(), rp.sub) {
            (Method::GET, None, None) => {
                let out = negotiate(req.headers())?;
                if q.flag("watch") {
                    self.watch(rt, ns, &q, out).await
                } else {
                    self.list(rt, ns, &q, out).await
                }
            }
            (Method::GET, Some(name), None | Some(Subresource::Status)) => {
                let out = negotiate(req.headers())?;
                let o = self.get_object(rt, ns, name, &q).await?;
                Ok(self.render_one(rt, &o, out, &q))
            }
            (Method::GET, Some(name), Some(Subresource::Scale)) => {
                let o = self.get_object(rt, ns, name, &q).await?;
                Ok(json_response(StatusCode::OK, &self.scale_of(rt, &o)))
            }
            (
                _,
                Some(name),
                Some(
                    sr @ (Subresource::Log
                    | Subresource::Exec
                    | Subresource::Attach
                    | Subresource::PortForward),
                ),
            ) => {
                let o = self.get_object(rt, ns, name, &q).await?;
                self.pod_stream(req, sr, o, q.get("container")).await
            }
            (Method::POST, None, None) => {
                let opts = q.write_options(&headers)?;
                let (ct, body) = read_body(req).await?;
                let obj = decode_body(&ct, &body)?;
                let w = self.create(rt, ns, obj, &opts).await?;
                Ok(written(StatusCode::CREATED, w))
            }
            (Method::POST, Some(name), Some(Subresource::Binding)) => {
                let opts = q.write_options(&headers)?;
                let (ct, body) = read_body(req).await?;
                let b = decode_body(&ct, &body)?;
                self.bind(rt, ns, name, &b, &opts).await?;
                Ok(json_response(
                    StatusCode::CREATED,
                    &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
                ))
            }
            (Method::POST, Some(name), Some(Subresource::Eviction)) => {
                let (ct, body) = read_body(req).await?;
                let ev = decode_body(&ct, &body)?;
                let dry_run = q.get("dryRun") == Some("All");
                let st = self.evict(ns.unwrap_or(""), name, &ev, dry_run).await?;
                let code = st["code"].as_u64().unwrap_or(201) as u16;
                Ok(json_response(
                    StatusCode::from_u16(code).unwrap_or(StatusCode::CREATED),
                    &st,
                ))
            }
            (
                Method::PUT,
                Some(name),
                None | Some(Subresource::Status) | Some(Subresource::Finalize),
            ) => {
                let opts = q.write_options(&headers)?;
                let (ct, body) = read_body(req).await?;
                let obj = decode_body(&ct, &body)?;
                let w = self.update(rt, ns, name, rp.sub, obj, &opts).await?;
                Ok(written(StatusCode::OK, w))
            }
            (Method::PUT, Some(name), Some(Subresource::Scale)) => {
                let opts = q.write_options(&headers)?;
                let (ct, body) = read_body(req).await?;
                let obj = decode_body(&ct, &body)?;
                let s = self.update_scale(rt, ns, name, None, obj, &opts).await?;
                Ok(json_response(StatusCode::OK, &s))
            }
            (
                Method::PATCH,
                Some(name),
                sub @ (None | Some(Subresource::Status) | Some(Subresource::Scale)),
            ) => {
                let opts = q.write_options(&headers)?;
                let (ct, body) = read_body(req).await?;
                let ptype = PatchType::from_content_type(&ct)
                    .ok_or_else(|| ApiError::unsupported_media_type(&ct))?;
                let doc: Value = if ptype == PatchType::Apply {
                    decode_yaml(&body)?
                } else {
                    serde_json::from_slice(&body)
                        .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?
                };
                if sub == Some(Subresource::Scale) {
                    let s = self
                        .update_scale(rt, ns, name, Some(ptype), doc, &opts)
                        .await?;
                    return Ok(json_response(StatusCode::OK, &s));
                }
                let w = self.patch(rt, ns, name, sub, ptype, doc, &opts).await?;
                let code = if w.created {
                    StatusCode::CREATED
                } else {
                    StatusCode::OK
                };
                Ok(written(code, w))
            }
            (Method::DELETE, Some(name), None) => {
                let (ct, body) = read_body(req).await?;
                let opts = delete_options(&ct, &body, &q)?;
                let (obj, gone) = self.delete(rt, ns, name, &opts).await?;
                if !gone || rt.kind == "Pod" {
                    let code = if gone {
                        StatusCode::OK
                    } else {
                        StatusCode::ACCEPTED
                    };
                    let code = if rt.kind == "Pod" {
                        StatusCode::OK
                    } else {
                        code
                    };
                    return Ok(json_response(code, &obj));
                }
                Ok(json_response(
                    StatusCode::OK,
                    &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                            "details": {"name": name, "group": rt.group, "kind": rt.plural, "uid": obj["metadata"]["uid"]}}),
                ))
            }
            (Method::DELETE, None, None) => {
                let (ct, body) = read_body(req).await?;
                // Query parameters apply to every item, as for a single delete.
                let opts = delete_options(&ct, &body, &q)?;
                let filter = self.filter(rt, ns, &q)?;
                self.cache.sync().await.map_err(cache_err)?;
                let items = self.cache.kind(rt).list(&filter, 0).items;
                let mut deleted = Vec::new();
                for o in items {
                    let ons = if rt.namespaced() {
                        Some(o.namespace.as_str())
                    } else {
                        None
                    };
                    match self.delete(rt, ons, &o.name, &opts).await {
                        Ok((v, _)) => deleted.push(v),
                        Err(e) if e.code == 404 => {}
                        Err(e) => return Err(e),
                    }
                }
                Ok(json_response(
                    StatusCode::OK,
                    &json!({"kind": rt.list_kind(), "apiVersion": rt.api_version(), "metadata": {}, "items": deleted}),
                ))
            }
            _ => Err(ApiError::method_not_allowed(format!(
                "the server does not allow this method on the requested resource ({method})"
            ))),
        }
    }

    fn aggregated(&self, core: bool, api_version: &str) -> Bytes {
        let idx = usize::from(!core) * 2 + usize::from(api_version.ends_with("v2beta1"));
        self.discovery_cache[idx]
            .get_or_init(|| {
                Bytes::from(
                    serde_json::to_vec(&discovery::aggregated(core, api_version))
                        .unwrap_or_default(),
                )
            })
            .clone()
    }

    async fn get_object(
        &self,
        rt: &'static ResourceType,
        ns: Option<&str>,
        name: &str,
        q: &Query,
    ) -> Result<Value, ApiError> {
        let o = if q.get("resourceVersion") == Some("0") {
            self.cache
                .kind(rt)
                .get(&rt.key(ns, name))
                .ok_or_else(|| ApiError::not_found(rt.group, rt.plural, name))?
        } else {
            self.get_cached(rt, ns, name).await?
        };
        Ok(to_view(rt, o.value()))
    }

    fn render_one(&self, rt: &ResourceType, obj: &Value, out: Output, q: &Query) -> Response<Body> {
        match out {
            Output::Json => json_response(StatusCode::OK, obj),
            Output::PartialMetadata => json_response(StatusCode::OK, &table::partial_metadata(obj)),
            Output::Table => {
                let include = IncludeObject::parse(q.get("includeObject").unwrap_or(""));
                let rv = obj["metadata"]["resourceVersion"].as_str().unwrap_or("");
                let t = table::table(rt, std::slice::from_ref(obj), include, rv, None, true);
                bytes_response(
                    StatusCode::OK,
                    "application/json;as=Table;v=v1;g=meta.k8s.io",
                    Bytes::from(serde_json::to_vec(&t).unwrap_or_default()),
                )
            }
        }
    }

    fn filter(&self, rt: &ResourceType, ns: Option<&str>, q: &Query) -> Result<Filter, ApiError> {
        let labels = LabelSelector::parse(q.get("labelSelector").unwrap_or(""))
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        let fields = FieldSelector::parse(q.get("fieldSelector").unwrap_or(""))
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        for r in &fields.requirements {
            let ok = r.field == "metadata.name"
                || (r.field == "metadata.namespace")
                || rt.ops.fields.contains(&r.field.as_str());
            if !ok {
                return Err(ApiError::bad_request(format!(
                    "field label not supported: {}",
                    r.field
                )));
            }
        }
        Ok(Filter {
            namespace: if rt.namespaced() {
                ns.map(str::to_string)
            } else {
                None
            },
            labels,
            fields,
        })
    }

    async fn list(
        &self,
        rt: &'static ResourceType,
        ns: Option<&str>,
        q: &Query,
        out: Output,
    ) -> Result<Response<Body>, ApiError> {
        let filter = self.filter(rt, ns, q)?;
        let limit: usize = match q.get("limit") {
            None | Some("") => 0,
            Some(l) => l
                .parse::<i64>()
                .map_err(|_| ApiError::bad_request(format!("invalid limit {l:?}")))?
                .max(0) as usize,
        };
        let rv = q.get("resourceVersion").unwrap_or("");
        let exact = q.get("resourceVersionMatch") == Some("Exact");
        let (items, revision, cont) =
            if let Some(token) = q.get("continue").filter(|c| !c.is_empty()) {
                let (rev, start) = decode_continue(token)?;
                self.list_from_store(rt, &filter, &start, limit, rev)
                    .await?
            } else if exact {
                let rev: i64 = rv.parse().map_err(|_| {
                    ApiError::bad_request(format!("invalid resourceVersion {rv:?}"))
                })?;
                self.list_from_store(rt, &filter, "", limit, rev).await?
            } else {
                match rv {
                    "" => {
                        self.cache.sync().await.map_err(cache_err)?;
                    }
                    "0" => {}
                    n => {
                        let rev: i64 = n.parse().map_err(|_| {
                            ApiError::bad_request(format!("invalid resourceVersion {n:?}"))
                        })?;
                        self.cache
                            .wait_for(rev, Duration::from_secs(3))
                            .await
                            .map_err(cache_err)?;
                    }
                }
                let rev = self.cache.revision();
                let res = self.cache.kind(rt).list(&filter, limit);
                let cont = res.continue_after.map(|k| encode_continue(rev, &k));
                (res.items, rev, cont)
            };
        let rv = revision.to_string();
        let shared_view = rt.ops.from_storage.is_some();
        match out {
            Output::Table => {
                let include = IncludeObject::parse(q.get("includeObject").unwrap_or(""));
                let objs: Vec<Value> = items.iter().map(|o| to_view(rt, o.value())).collect();
                let t = table::table(rt, &objs, include, &rv, cont.as_deref(), true);
                Ok(bytes_response(
                    StatusCode::OK,
                    "application/json;as=Table;v=v1;g=meta.k8s.io",
                    Bytes::from(serde_json::to_vec(&t).unwrap_or_default()),
                ))
            }
            Output::PartialMetadata => {
                let objs: Vec<Value> = items
                    .iter()
                    .map(|o| table::partial_metadata(&o.value()))
                    .collect();
                let mut meta = json!({"resourceVersion": rv});
                if let Some(c) = &cont {
                    meta["continue"] = json!(c);
                }
                Ok(json_response(
                    StatusCode::OK,
                    &json!({"kind": "PartialObjectMetadataList", "apiVersion": "meta.k8s.io/v1", "metadata": meta, "items": objs}),
                ))
            }
            Output::Json => {
                // Items are pre-serialised: the list is written by concatenation.
                let mut meta = json!({"resourceVersion": rv});
                if let Some(c) = &cont {
                    meta["continue"] = json!(c);
                }
                let head = format!(
                    "{{\"kind\":\"{}\",\"apiVersion\":\"{}\",\"metadata\":{},\"items\":[",
                    rt.list_kind(),
                    rt.api_version(),
                    meta
                );
                let total: usize = items.iter().map(|o| o.bytes.len() + 1).sum();
                let mut buf = BytesMut::with_capacity(head.len() + total + 2);
                buf.extend_from_slice(head.as_bytes());
                for (i, o) in items.iter().enumerate() {
                    if i > 0 {
                        buf.extend_from_slice(b",");
                    }
                    if shared_view {
                        buf.extend_from_slice(
                            &serde_json::to_vec(&to_view(rt, o.value())).unwrap_or_default(),
                        );
                    } else {
                        buf.extend_from_slice(&o.bytes);
                    }
                }
                buf.extend_from_slice(b"]}");
                Ok(bytes_response(
                    StatusCode::OK,
                    "application/json",
                    buf.freeze(),
                ))
            }
        }
    }

    /// A list page read from the store at a past revision (continuations and exact reads).
    async fn list_from_store(
        &self,
        rt: &'static ResourceType,
        filter: &Filter,
        start: &str,
        limit: usize,
        rev: i64,
    ) -> Result<(Vec<Arc<CachedObject>>, i64, Option<String>), ApiError> {
        let prefix = match &filter.namespace {
            Some(ns) if rt.namespaced() => rt.namespace_prefix(ns),
            _ => rt.key_prefix(),
        };
        let mut items = Vec::new();
        let mut after = start.to_string();
        let page = if limit == 0 { 0 } else { (limit + 1).max(500) };
        loop {
            let res = self.store.range(&prefix, &after, page, Some(rev)).await.map_err(|e| match e {
                navarch_store::Error::Compacted { .. } => ApiError::gone("The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter."),
                other => crate::handlers::store_err(other),
            })?;
            for kv in &res.kvs {
                after = kv.key.clone();
                if let Some(o) = CachedObject::from_kv(rt, kv) {
                    if filter.matches(&o) {
                        items.push(Arc::new(o));
                    }
                }
            }
            if !res.more || (limit > 0 && items.len() > limit) {
                break;
            }
        }
        if limit > 0 && items.len() > limit {
            items.truncate(limit);
            let last = items.last().map(|o| o.key.clone()).unwrap_or_default();
            return Ok((items, rev, Some(encode_continue(rev, &last))));
        }
        Ok((items, rev, None))
    }

    async fn watch(
        self: Arc<Self>,
        rt: &'static ResourceType,
        ns: Option<&str>,
        q: &Query,
        out: Output,
    ) -> Result<Response<Body>, ApiError> {
        let filter = self.filter(rt, ns, q)?;
        let rv = q.get("resourceVersion").unwrap_or("");
        let send_initial = q.flag("sendInitialEvents");
        let bookmarks = q.flag("allowWatchBookmarks");
        let timeout = q
            .get("timeoutSeconds")
            .and_then(|t| t.parse::<u64>().ok())
            .filter(|t| *t > 0)
            .unwrap_or(1800);
        let from = match rv {
            "" | "0" => None,
            n => {
                let r: i64 = n
                    .parse()
                    .map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {n:?}")))?;
                self.cache
                    .wait_for(r, Duration::from_secs(3))
                    .await
                    .map_err(cache_err)?;
                Some(r)
            }
        };
        if rv.is_empty() || send_initial {
            self.cache.sync().await.map_err(cache_err)?;
        }
        let from = if send_initial { None } else { from };
        let include = IncludeObject::parse(q.get("includeObject").unwrap_or(""));
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(64);
        let content_type = match out {
            Output::Table => "application/json;as=Table;v=v1;g=meta.k8s.io",
            _ => "application/json",
        };
        let watch = self
            .cache
            .kind(rt)
            .watch(filter, from, bookmarks || send_initial);
        match watch {
            Err(CacheError::Expired { requested, oldest }) => {
                let status =
                    ApiError::gone(format!("too old resource version: {requested} ({oldest})"))
                        .to_status();
                let line = serde_json::to_vec(&json!({"type": "ERROR", "object": status}))
                    .unwrap_or_default();
                let mut b = BytesMut::from(&line[..]);
                b.extend_from_slice(b"\n");
                return Ok(bytes_response(
                    StatusCode::OK,
                    "application/json",
                    b.freeze(),
                ));
            }
            Err(e) => return Err(cache_err(e)),
            Ok(mut events) => {
                let server = self.clone();
                let initial_end = if send_initial {
                    Some(self.cache.revision())
                } else {
                    None
                };
                tokio::spawn(async move {
                    let deadline = tokio::time::sleep(Duration::from_secs(timeout));
                    tokio::pin!(deadline);
                    let mut first_table = true;
                    let mut initial_end = initial_end;
                    let mut last_rev: i64 = 0;
                    loop {
                        // Streaming lists end their initial events with a marked bookmark.
                        if let Some(end) = initial_end {
                            if events.is_empty() {
                                let rev = end.max(last_rev);
                                let bm = json!({"type": "BOOKMARK", "object": {"kind": rt.kind, "apiVersion": rt.api_version(), "metadata": {"resourceVersion": rev.to_string(), "annotations": {"k8s.io/initial-events-end": "true"}}}});
                                if tx.send(line(&bm)).await.is_err() {
                                    return;
                                }
                                initial_end = None;
                            }
                        }
                        let item = tokio::select! {
                            _ = &mut deadline => return,
                            _ = tx.closed() => return,
                            item = events.recv() => match item { Some(i) => i, None => return },
                        };
                        let bytes = match item {
                            WatchItem::Bookmark(rev) => {
                                if !bookmarks {
                                    continue;
                                }
                                line(
                                    &json!({"type": "BOOKMARK", "object": {"kind": rt.kind, "apiVersion": rt.api_version(), "metadata": {"resourceVersion": rev.to_string()}}}),
                                )
                            }
                            WatchItem::Event(ty, obj) => {
                                last_rev = last_rev.max(obj.mod_revision);
                                server.event_line(rt, ty, &obj, out, include, &mut first_table)
                            }
                        };
                        if tx.send(bytes).await.is_err() {
                            return;
                        }
                    }
                });
            }
        }
        let stream = futures::stream::unfold(rx, |mut rx| async move {
            rx.recv()
                .await
                .map(|b| (Ok::<_, std::io::Error>(Frame::data(b)), rx))
        });
        let mut r = Response::new(StreamBody::new(stream).boxed_unsync());
        r.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        r.headers_mut().insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("no-cache, private"),
        );
        Ok(r)
    }

    fn event_line(
        &self,
        rt: &ResourceType,
        ty: EventType,
        obj: &CachedObject,
        out: Output,
        include: IncludeObject,
        first_table: &mut bool,
    ) -> Bytes {
        match out {
            Output::Json if rt.ops.from_storage.is_none() => {
                let mut b = BytesMut::with_capacity(obj.bytes.len() + 32);
                b.extend_from_slice(b"{\"type\":\"");
                b.extend_from_slice(ty.as_str().as_bytes());
                b.extend_from_slice(b"\",\"object\":");
                b.extend_from_slice(&obj.bytes);
                b.extend_from_slice(b"}\n");
                b.freeze()
            }
            Output::Json => line(&json!({"type": ty.as_str(), "object": to_view(rt, obj.value())})),
            Output::PartialMetadata => {
                line(&json!({"type": ty.as_str(), "object": table::partial_metadata(&obj.value())}))
            }
            Output::Table => {
                let v = to_view(rt, obj.value());
                let rv = v["metadata"]["resourceVersion"]
                    .as_str()
                    .unwrap_or("")
                    .to_string();
                let t = table::table(
                    rt,
                    std::slice::from_ref(&v),
                    include,
                    &rv,
                    None,
                    *first_table,
                );
                *first_table = false;
                line(&json!({"type": ty.as_str(), "object": t}))
            }
        }
    }
}

fn line(v: &Value) -> Bytes {
    let mut b = serde_json::to_vec(v).unwrap_or_default();
    b.push(b'\n');
    Bytes::from(b)
}

fn cache_err(e: CacheError) -> ApiError {
    match e {
        CacheError::Expired { .. } => ApiError::gone(e.to_string()),
        CacheError::TooLarge { .. } => ApiError::timeout(e.to_string()),
        CacheError::Store(s) => crate::handlers::store_err(s),
    }
}

fn written(code: StatusCode, w: Written) -> Response<Body> {
    let mut r = json_response(code, &w.object);
    for warning in w.warnings.iter().take(20) {
        let text = format!("299 - \"{}\"", warning.replace('"', "'"));
        if let Ok(v) = HeaderValue::from_str(&text) {
            r.headers_mut().append(header::WARNING, v);
        }
    }
    r
}

fn encode_continue(rev: i64, key: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(
        serde_json::to_vec(&json!({"v": "meta.k8s.io/v1", "rv": rev, "start": key}))
            .unwrap_or_default(),
    )
}

fn decode_continue(token: &str) -> Result<(i64, String), ApiError> {
    use base64::Engine;
    let bad = || ApiError::bad_request(format!("invalid continue token {token:?}"));
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token.trim_end_matches('='))
        .map_err(|_| bad())?;
    let v: Value = serde_json::from_slice(&raw).map_err(|_| bad())?;
    let rev = v["rv"].as_i64().ok_or_else(bad)?;
    let start = v["start"].as_str().ok_or_else(bad)?.to_string();
    if !start.starts_with("/registry/") {
        return Err(bad());
    }
    Ok((rev, start))
}

/// Reads the whole body, at most `MAX_BODY` bytes; returns the content type too.
async fn read_body(req: Request<Incoming>) -> Result<(String, Bytes), ApiError> {
    let ct = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    if let Some(len) = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.parse::<usize>().ok())
    {
        if len > MAX_BODY {
            return Err(ApiError::too_large(format!(
                "the request body is {len} bytes, larger than the limit of {MAX_BODY}"
            )));
        }
    }
    let body = Limited::new(req.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| {
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                ApiError::too_large(format!(
                    "the request body is larger than the limit of {MAX_BODY} bytes"
                ))
            } else {
                ApiError::bad_request(format!("error reading the request body: {e}"))
            }
        })?;
    Ok((ct, body.to_bytes()))
}

fn decode_yaml(body: &[u8]) -> Result<Value, ApiError> {
    let s = std::str::from_utf8(body)
        .map_err(|_| ApiError::bad_request("the request body is not valid UTF-8"))?;
    // JSON is YAML; parse it as JSON first for exact numbers and speed.
    if let Ok(v) = serde_json::from_str::<Value>(s) {
        return Ok(v);
    }
    serde_saphyr::from_str::<Value>(s)
        .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))
}

/// Decodes a request body by its content type: JSON (the default), YAML or
/// Kubernetes protobuf.
pub fn decode_body(ct: &str, body: &[u8]) -> Result<Value, ApiError> {
    let base = ct.split(';').next().unwrap_or("").trim();
    match base {
        "" | "application/json" | "*/*" => {
            if body.iter().all(|b| b.is_ascii_whitespace()) {
                return Err(ApiError::bad_request("the request body is empty"));
            }
            serde_json::from_slice(body)
                .map_err(|e| ApiError::bad_request(format!("error decoding JSON body: {e}")))
        }
        "application/yaml" | "application/x-yaml" | "text/yaml" => decode_yaml(body),
        "application/vnd.kubernetes.protobuf" => navarch_pb::decode(body)
            .map_err(|e| ApiError::bad_request(format!("error decoding protobuf body: {e}"))),
        other => Err(ApiError::unsupported_media_type(other)),
    }
}

/// `DeleteOptions` from the body (if any), then the query parameters
/// (`gracePeriodSeconds`, `propagationPolicy`, `dryRun`), which win.
fn delete_options(ct: &str, body: &[u8], q: &Query) -> Result<DeleteOptions, ApiError> {
    let mut opts = if body.iter().all(|b| b.is_ascii_whitespace()) {
        DeleteOptions::default()
    } else {
        DeleteOptions::from_json(&decode_body(ct, body)?)?
    };
    if let Some(g) = q.get("gracePeriodSeconds") {
        opts.grace_period_seconds = Some(g.parse().map_err(|_| {
            ApiError::bad_request(format!("invalid gracePeriodSeconds {g:?}: not an integer"))
        })?);
    }
    if let Some(p) = q.get("propagationPolicy") {
        opts.propagation = Some(p.to_string());
    }
    if q.get("dryRun") == Some("All") {
        opts.dry_run = true;
    }
    Ok(opts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert!(matches!(
            route("/api/v1/namespaces/default/pods"),
            Route::Resource(ResourcePath {
                namespace: Some(_),
                name: None,
                ..
            })
        ));
        assert!(matches!(
            route("/api/v1/namespaces/default"),
            Route::Resource(ResourcePath {
                namespace: None,
                name: Some(_),
                ..
            })
        ));
        assert!(matches!(
            route("/api/v1/namespaces/default/finalize"),
            Route::Resource(ResourcePath {
                sub: Some(Subresource::Finalize),
                ..
            })
        ));
        assert!(matches!(
            route("/api/v1/namespaces/x/pods/p/status"),
            Route::Resource(ResourcePath {
                sub: Some(Subresource::Status),
                ..
            })
        ));
        assert!(matches!(
            route("/apis/apps/v1/namespaces/x/deployments/d/scale"),
            Route::Resource(ResourcePath {
                sub: Some(Subresource::Scale),
                ..
            })
        ));
        assert!(matches!(
            route("/api/v1/namespaces/x/configmaps/c/scale"),
            Route::NotFound
        ));
        assert!(matches!(
            route("/api/v1/nodes"),
            Route::Resource(ResourcePath {
                namespace: None,
                name: None,
                ..
            })
        ));
        assert!(matches!(
            route("/api/v1/namespaces/x/nodes/n"),
            Route::NotFound
        ));
        assert!(matches!(route("/api/v1/widgets"), Route::NotFound));
        assert!(matches!(route("/version/"), Route::Version));
        assert!(matches!(route("/apis/apps"), Route::ApiGroup(_)));
        assert!(matches!(route("/api/v1"), Route::ResourceList(..)));
        assert!(matches!(
            route("/api/v1/namespaces/x/bindings"),
            Route::Bindings(_)
        ));
    }

    #[test]
    fn continue_tokens_round_trip_and_reject_garbage() {
        let t = encode_continue(42, "/registry/pods/a/b");
        assert_eq!(
            decode_continue(&t).unwrap(),
            (42, "/registry/pods/a/b".to_string())
        );
        assert!(decode_continue("garbage!").is_err());
    }

    #[test]
    fn accept_negotiation() {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT, HeaderValue::from_static("application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json"));
        assert_eq!(negotiate(&h).unwrap(), Output::Table);
        h.insert(
            header::ACCEPT,
            HeaderValue::from_static("application/vnd.kubernetes.protobuf,application/json"),
        );
        assert_eq!(negotiate(&h).unwrap(), Output::Json);
        h.insert(
            header::ACCEPT,
            HeaderValue::from_static("application/vnd.kubernetes.protobuf"),
        );
        assert!(negotiate(&h).is_err());
    }

    #[test]
    fn bodies_decode_or_fail_clearly() {
        assert_eq!(decode_body("", b"{\"a\":1}").unwrap()["a"], 1);
        assert_eq!(
            decode_body("application/yaml", b"a: 1\nb: [x]\n").unwrap()["b"][0],
            "x"
        );
        assert_eq!(
            decode_body("application/json", b"{bad").unwrap_err().code,
            400
        );
        assert_eq!(decode_body("text/plain", b"x").unwrap_err().code, 415);
        assert_eq!(
            decode_body("application/vnd.kubernetes.protobuf", b"nope")
                .unwrap_err()
                .code,
            400
        );
    }
}
