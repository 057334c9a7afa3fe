//! HTTP → API operations: routing Kubernetes paths, the verbs, query
//! parameters, content negotiation and the shapes of responses.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use parking_lot::RwLock;
use serde_json::{json, Value};

use crate::convert;
use crate::discovery;
use crate::meta::{self, meta_mut};
use crate::negotiate::{self, Output, MAX_BODY};
use crate::registry::{DeleteOptions, Deleted, FieldValidation, Registry, WriteOptions};
use crate::resources::Resource;
use crate::status::{success_status, ApiError};
use crate::strategy;
use crate::watch;

pub type Body = BoxBody<Bytes, Infallible>;

/// Requests served at once (besides watches and long-running calls) before
/// new ones get 429, as upstream's max-requests-inflight plus
/// max-mutating-requests-inflight.
pub const MAX_INFLIGHT: usize = 600;

/// Who is calling.
#[derive(Debug, Clone)]
pub struct User {
    pub name: String,
    pub uid: String,
    pub groups: Vec<String>,
}

/// The API server's shared state.
pub struct Api {
    pub registry: Registry,
    resources: RwLock<Arc<Vec<Arc<Resource>>>>,
    pub server_address: String,
    pub ready: AtomicBool,
    inflight: Arc<tokio::sync::Semaphore>,
    pub git_commit: String,
    /// The OpenAPI v2 document is large; it is rebuilt only when the set of
    /// served resources changes.
    pub openapi_v2: crate::openapi::V2Cache,
    /// How pods/log, exec, attach, portforward and nodes/proxy reach
    /// kubelets; set once at start.
    pub kubelet: std::sync::OnceLock<Arc<crate::nodeproxy::KubeletClient>>,
    /// The node token and CA behind /kelson.dev/v1/join; set once at start.
    pub join: std::sync::OnceLock<Arc<crate::join::Joiner>>,
}

pub fn full(body: impl Into<Bytes>) -> Body {
    Full::new(body.into()).boxed()
}

fn json_response(code: StatusCode, v: &Value) -> Response<Body> {
    Response::builder()
        .status(code)
        .header(header::CONTENT_TYPE, "application/json")
        .body(full(serde_json::to_vec(v).unwrap_or_default()))
        .unwrap_or_else(|_| Response::new(full("")))
}

pub fn error_response(e: &ApiError) -> Response<Body> {
    let mut r = json_response(
        StatusCode::from_u16(e.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        &e.to_status(),
    );
    if let Some(secs) = e.details.retry_after {
        if let Ok(v) = secs.to_string().parse() {
            r.headers_mut().insert(header::RETRY_AFTER, v);
        }
    }
    r
}

/// A parsed query string.
pub struct Query(HashMap<String, String>);

impl Query {
    pub fn empty() -> Query {
        Query(HashMap::new())
    }

    fn parse(q: Option<&str>) -> Query {
        Query(
            form_urlencoded::parse(q.unwrap_or("").as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }
    pub fn get(&self, k: &str) -> Option<&str> {
        self.0.get(k).map(String::as_str)
    }
    /// A boolean parameter as upstream's query decoder reads it: present
    /// means true unless it says "0" or "false" in any case (the Python
    /// client sends `watch=True`).
    pub fn flag(&self, k: &str) -> bool {
        self.get(k)
            .is_some_and(|v| v != "0" && !v.eq_ignore_ascii_case("false"))
    }
    pub fn int(&self, k: &str) -> Result<Option<i64>, ApiError> {
        match self.get(k) {
            None | Some("") => Ok(None),
            Some(v) => v
                .parse()
                .map(Some)
                .map_err(|_| ApiError::bad_request(format!("invalid value for {k}: {v:?}"))),
        }
    }
}

/// Where a request points.
enum Route {
    Version,
    Health(&'static str),
    CoreVersions,
    Groups,
    Group(String),
    ResourceList(String, String),
    OpenApiV2,
    OpenApiV3Index,
    OpenApiV3(String),
    Collection {
        res: Arc<Resource>,
        ns: Option<String>,
        watch: bool,
    },
    Object {
        res: Arc<Resource>,
        ns: Option<String>,
        name: String,
        sub: String,
        watch: bool,
    },
}

impl Api {
    pub fn new(
        registry: Registry,
        resources: Vec<Arc<Resource>>,
        server_address: String,
        git_commit: String,
    ) -> Api {
        Api {
            registry,
            resources: RwLock::new(Arc::new(resources)),
            openapi_v2: Default::default(),
            kubelet: std::sync::OnceLock::new(),
            join: std::sync::OnceLock::new(),
            server_address,
            ready: AtomicBool::new(false),
            inflight: Arc::new(tokio::sync::Semaphore::new(MAX_INFLIGHT)),
            git_commit,
        }
    }

    pub fn resources(&self) -> Arc<Vec<Arc<Resource>>> {
        self.resources.read().clone()
    }

    /// Replaces the served custom resources (built-ins stay).
    pub fn set_custom(&self, custom: Vec<Arc<Resource>>) {
        let mut w = self.resources.write();
        let mut all: Vec<Arc<Resource>> = w.iter().filter(|r| !r.custom).cloned().collect();
        all.extend(custom);
        *w = Arc::new(all);
    }

    pub fn find(&self, group: &str, version: &str, plural: &str) -> Option<Arc<Resource>> {
        self.resources
            .read()
            .iter()
            .find(|r| r.group == group && r.version == version && r.plural == plural)
            .cloned()
    }

    fn route(&self, path: &str) -> Result<Route, ApiError> {
        let segs: Vec<&str> = path
            .trim_matches('/')
            .split('/')
            .filter(|s| !s.is_empty())
            .collect();
        let (group, version, rest): (&str, &str, &[&str]) = match segs.as_slice() {
            ["version"] => return Ok(Route::Version),
            ["healthz", ..] => return Ok(Route::Health("healthz")),
            ["livez", ..] => return Ok(Route::Health("livez")),
            ["readyz", ..] => return Ok(Route::Health("readyz")),
            ["openapi", "v2"] => return Ok(Route::OpenApiV2),
            ["openapi", "v3"] => return Ok(Route::OpenApiV3Index),
            ["openapi", "v3", rest @ ..] => return Ok(Route::OpenApiV3(rest.join("/"))),
            ["api"] => return Ok(Route::CoreVersions),
            ["api", "v1"] => return Ok(Route::ResourceList(String::new(), "v1".into())),
            ["api", "v1", rest @ ..] => ("", "v1", rest),
            ["apis"] => return Ok(Route::Groups),
            ["apis", g] => return Ok(Route::Group(g.to_string())),
            ["apis", g, v] => return Ok(Route::ResourceList(g.to_string(), v.to_string())),
            ["apis", g, v, rest @ ..] => (g, v, rest),
            _ => return Err(not_found()),
        };
        let (watch, rest) = match rest {
            ["watch", rest @ ..] => (true, rest),
            _ => (false, rest),
        };
        let find = |plural: &str| self.find(group, version, plural).ok_or_else(not_found);
        let object = |res: Arc<Resource>, ns: Option<&str>, name: &str, sub: &str| Route::Object {
            res,
            ns: ns.map(String::from),
            name: name.to_string(),
            sub: sub.to_string(),
            watch,
        };
        Ok(match rest {
            ["namespaces", ns, plural]
                if group.is_empty() && matches!(*plural, "status" | "finalize") =>
            {
                object(find("namespaces")?, None, ns, plural)
            }
            ["namespaces", ns, plural, rest @ ..] => {
                let res = find(plural)?;
                if !res.namespaced {
                    return Err(not_found());
                }
                match rest {
                    [] => Route::Collection {
                        res,
                        ns: Some(ns.to_string()),
                        watch,
                    },
                    [name] => object(res, Some(ns), name, ""),
                    [name, sub, ..] => object(res, Some(ns), name, sub),
                }
            }
            [plural] => Route::Collection {
                res: find(plural)?,
                ns: None,
                watch,
            },
            [plural, name] => {
                let res = find(plural)?;
                if res.namespaced {
                    return Err(not_found());
                }
                object(res, None, name, "")
            }
            [plural, name, sub, ..] => {
                let res = find(plural)?;
                if res.namespaced {
                    return Err(not_found());
                }
                object(res, None, name, sub)
            }
            [] => return Err(not_found()),
        })
    }
}

/// Serves one authenticated (or anonymous) request.
pub async fn handle(
    api: Arc<Api>,
    req: Request<hyper::body::Incoming>,
    user: Option<User>,
) -> Response<Body> {
    let path = req.uri().path().to_string();
    if path.starts_with(crate::join::PREFIX) {
        return crate::join::serve(&api, req).await;
    }
    let public = matches!(
        path.as_str(),
        "/healthz" | "/livez" | "/readyz" | "/version"
    ) || path.starts_with("/healthz/")
        || path.starts_with("/livez/")
        || path.starts_with("/readyz/");
    if user.is_none() && !public {
        return error_response(&ApiError::unauthorized());
    }
    if let Some(u) = &user {
        if let Err(e) = crate::nodeauth::authorize(&api, u, req.method(), req.uri()).await {
            return error_response(&e);
        }
    }
    let q = Query::parse(req.uri().query());
    let long_running =
        q.flag("watch") || path.contains("/watch/") || crate::nodeproxy::is_long_running(&path);
    let _permit = if long_running || public {
        None
    } else {
        match api.inflight.clone().try_acquire_owned() {
            Ok(p) => Some(p),
            Err(_) => return error_response(&ApiError::too_many_requests(1)),
        }
    };
    let method = req.method().clone();
    let started = std::time::Instant::now();
    let resp = match crate::nodeauth::scope(user.as_ref(), serve(&api, req, &q)).await {
        Ok(r) => r,
        Err(e) => error_response(&e),
    };
    // One line per request, as upstream's httplog at -v=3; off unless
    // RUST_LOG asks for this target at trace level.
    tracing::trace!(
        target: "kelson_apiserver::httplog",
        verb = %method,
        path = %path,
        user = user.as_ref().map(|u| u.name.as_str()).unwrap_or(""),
        code = resp.status().as_u16(),
        latency_us = started.elapsed().as_micros() as u64,
    );
    resp
}

async fn read_body(
    req: Request<hyper::body::Incoming>,
) -> Result<(http::request::Parts, Bytes), ApiError> {
    let (parts, body) = req.into_parts();
    if let Some(len) = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
    {
        if len > MAX_BODY {
            drain(body).await;
            return Err(ApiError::too_large(
                "Request entity too large: limit is 3145728",
            ));
        }
    }
    let mut body = body;
    let mut buf = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame =
            frame.map_err(|e| ApiError::bad_request(format!("reading request body: {e}")))?;
        if let Ok(data) = frame.into_data() {
            if buf.len() + data.len() > MAX_BODY {
                drain(body).await;
                return Err(ApiError::too_large(
                    "Request entity too large: limit is 3145728",
                ));
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok((parts, buf.freeze()))
}

/// Reads and discards what is left of an oversized body (up to a bound),
/// so the client gets to read the 413 instead of a reset connection.
async fn drain(mut body: hyper::body::Incoming) {
    const DRAIN_LIMIT: usize = 64 * 1024 * 1024;
    let mut seen = 0usize;
    let deadline = tokio::time::sleep(Duration::from_secs(10));
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            f = body.frame() => match f {
                Some(Ok(f)) => {
                    seen += f.data_ref().map(|d| d.len()).unwrap_or(0);
                    if seen > DRAIN_LIMIT {
                        return;
                    }
                }
                _ => return,
            },
            _ = &mut deadline => return,
        }
    }
}

fn header_str(parts: &http::request::Parts, name: header::HeaderName) -> Option<&str> {
    parts.headers.get(name).and_then(|v| v.to_str().ok())
}

async fn serve(
    api: &Arc<Api>,
    req: Request<hyper::body::Incoming>,
    q: &Query,
) -> Result<Response<Body>, ApiError> {
    let route = api.route(req.uri().path())?;
    let method = req.method().clone();
    let accept = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    let out = negotiate::output(accept.as_deref());
    match route {
        Route::Version => Ok(json_response(
            StatusCode::OK,
            &version_info(&api.git_commit),
        )),
        Route::Health(kind) => Ok(health(api, kind)),
        Route::CoreVersions => {
            let res = api.resources();
            Ok(match out? {
                Output::Aggregated(v) => aggregated_response(
                    discovery::aggregated(&res, true, &format!("apidiscovery.k8s.io/{v}")),
                    v,
                ),
                _ => json_response(
                    StatusCode::OK,
                    &discovery::api_versions(&api.server_address),
                ),
            })
        }
        Route::Groups => {
            let res = api.resources();
            Ok(match out? {
                Output::Aggregated(v) => aggregated_response(
                    discovery::aggregated(&res, false, &format!("apidiscovery.k8s.io/{v}")),
                    v,
                ),
                _ => json_response(StatusCode::OK, &discovery::api_group_list(&res)),
            })
        }
        Route::Group(g) => discovery::api_group_doc(&api.resources(), &g)
            .map(|d| json_response(StatusCode::OK, &d))
            .ok_or_else(not_found),
        Route::ResourceList(g, v) => discovery::resource_list(&api.resources(), &g, &v)
            .map(|d| json_response(StatusCode::OK, &d))
            .ok_or_else(not_found),
        Route::OpenApiV2 => crate::openapi::v2(api, accept.as_deref()),
        Route::OpenApiV3Index => Ok(crate::openapi::v3_index(api)),
        Route::OpenApiV3(path) => crate::openapi::v3_document(api, &path),
        Route::Collection { res, ns, watch } => {
            let watching = watch || q.flag("watch");
            match method {
                Method::GET if watching => {
                    check_verb(&res, "watch")?;
                    watch::serve(api.clone(), res, ns, None, q, out?).await
                }
                Method::GET => {
                    check_verb(&res, "list")?;
                    list(api, &res, ns.as_deref(), q, out?).await
                }
                Method::POST => {
                    check_verb(&res, "create")?;
                    let ns = namespace_required(&res, ns)?;
                    let (parts, body) = read_body(req).await?;
                    create(api, &res, ns.as_deref(), &parts, &body, q, out?).await
                }
                Method::DELETE => {
                    check_verb(&res, "deletecollection")?;
                    let (parts, body) = read_body(req).await?;
                    delete_collection(api, &res, ns.as_deref(), &parts, &body, q, out?).await
                }
                _ => Err(method_not_supported(&method)),
            }
        }
        Route::Object {
            res,
            ns,
            name,
            sub,
            watch,
        } => {
            if sub.is_empty() && (watch || q.flag("watch")) && method == Method::GET {
                check_verb(&res, "watch")?;
                return watch::serve(api.clone(), res, ns, Some(name), q, out?).await;
            }
            if !sub.is_empty() && !res.has_subresource(&sub) {
                return Err(not_found());
            }
            if res.namespaced && ns.is_none() {
                return Err(not_found());
            }
            match sub.as_str() {
                "" | "status" => {}
                "scale" => {
                    return crate::scale::serve(api, &res, ns.as_deref(), &name, req, q, out?).await
                }
                "binding" | "eviction" if method == Method::POST => {
                    let (parts, body) = read_body(req).await?;
                    let (ns, name) = (ns.as_deref(), name.as_str());
                    return if sub == "binding" {
                        crate::subresources::bind(api, &res, ns, name, &parts, &body).await
                    } else {
                        crate::subresources::evict(api, &res, ns, name, &parts, &body).await
                    };
                }
                "finalize" if method == Method::PUT => {}
                "log" | "exec" | "attach" | "portforward" | "proxy" => {
                    return crate::nodeproxy::serve(api, &res, ns.as_deref(), &name, &sub, req)
                        .await
                }
                _ => return Err(method_not_supported(&method)),
            }
            match method {
                Method::GET => {
                    check_verb(&res, "get")?;
                    get(api, &res, ns.as_deref(), &name, q, out?).await
                }
                Method::PUT => {
                    check_verb(&res, "update")?;
                    let (parts, body) = read_body(req).await?;
                    update(
                        api,
                        &res,
                        ns.as_deref(),
                        &name,
                        &sub,
                        &parts,
                        &body,
                        q,
                        out?,
                    )
                    .await
                }
                Method::PATCH => {
                    check_verb(&res, "patch")?;
                    let (parts, body) = read_body(req).await?;
                    crate::patch::patch(
                        api,
                        &res,
                        ns.as_deref(),
                        &name,
                        &sub,
                        &parts,
                        &body,
                        q,
                        out?,
                    )
                    .await
                }
                Method::DELETE if sub.is_empty() => {
                    check_verb(&res, "delete")?;
                    let (parts, body) = read_body(req).await?;
                    delete(api, &res, ns.as_deref(), &name, &parts, &body, q, out?).await
                }
                _ => Err(method_not_supported(&method)),
            }
        }
    }
}

/// Upstream's 404 for a path no handler serves (also used by the node
/// proxy), as opposed to a named object that does not exist.
pub(crate) fn not_found() -> ApiError {
    ApiError::new(
        404,
        "NotFound",
        "the server could not find the requested resource",
    )
}

fn method_not_supported(m: &Method) -> ApiError {
    ApiError::method_not_allowed(format!(
        "the server does not allow this method on the requested resource ({m})"
    ))
}

fn check_verb(res: &Resource, verb: &str) -> Result<(), ApiError> {
    if res.verbs.iter().any(|v| v == verb) {
        Ok(())
    } else {
        Err(ApiError::method_not_allowed(format!(
            "the server does not allow this method on the requested resource ({verb} {})",
            res.plural
        )))
    }
}

fn namespace_required(res: &Resource, ns: Option<String>) -> Result<Option<String>, ApiError> {
    if res.namespaced && ns.is_none() {
        return Err(not_found());
    }
    Ok(ns)
}

fn aggregated_response(doc: Value, v: &str) -> Response<Body> {
    Response::builder()
        .status(StatusCode::OK)
        .header(
            header::CONTENT_TYPE,
            format!("application/json;g=apidiscovery.k8s.io;v={v};as=APIGroupDiscoveryList"),
        )
        .body(full(serde_json::to_vec(&doc).unwrap_or_default()))
        .unwrap_or_else(|_| Response::new(full("")))
}

pub fn version_info(commit: &str) -> Value {
    json!({
        "major": "1",
        "minor": "33",
        "emulationMajor": "1",
        "emulationMinor": "33",
        "minCompatibilityMajor": "1",
        "minCompatibilityMinor": "32",
        "gitVersion": format!("v1.33.0+kelson.{}", env!("CARGO_PKG_VERSION")),
        "gitCommit": commit,
        "gitTreeState": "clean",
        "buildDate": "1970-01-01T00:00:00Z",
        "goVersion": "rust",
        "compiler": "rustc",
        "platform": format!("linux/{}", match std::env::consts::ARCH { "x86_64" => "amd64", "aarch64" => "arm64", a => a }),
    })
}

fn health(api: &Api, kind: &str) -> Response<Body> {
    let ready = api.ready.load(Ordering::Acquire);
    let ok = kind != "readyz" || ready;
    Response::builder()
        .status(if ok {
            StatusCode::OK
        } else {
            StatusCode::INTERNAL_SERVER_ERROR
        })
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .header("X-Content-Type-Options", "nosniff")
        .body(full(if ok {
            "ok".to_string()
        } else {
            "[-]informer-sync failed: reason withheld\nreadyz check failed\n".to_string()
        }))
        .unwrap_or_else(|_| Response::new(full("")))
}

/// Writes an object (storage form) as the client asked.
pub fn respond_object(
    res: &Resource,
    obj: Value,
    code: StatusCode,
    out: Output,
    warnings: &[String],
) -> Response<Body> {
    let obj = convert::from_storage(res, obj);
    let (body, ctype) = match out {
        Output::Yaml => (negotiate::to_yaml(&obj), "application/yaml"),
        Output::Table => (
            serde_json::to_vec(&crate::table::table(res, &[obj], None, "Metadata", true))
                .unwrap_or_default(),
            "application/json",
        ),
        Output::Metadata => (
            serde_json::to_vec(&partial_metadata(&obj)).unwrap_or_default(),
            "application/json",
        ),
        _ => (
            serde_json::to_vec(&obj).unwrap_or_default(),
            "application/json",
        ),
    };
    respond_bytes(body, ctype, code, warnings)
}

/// Whether stored bytes can go out as they are: JSON asked for, in the
/// storage version (a write's answer, a watch's events).
pub fn serves_stored_json(res: &Resource, out: Output) -> bool {
    out == Output::Json && !convert::needs_conversion(res)
}

/// Answers with `json` (the stored encoding) when it is what the client
/// asked for, else encodes `obj`.
pub fn respond_written(
    res: &Resource,
    obj: Value,
    json: Option<Bytes>,
    code: StatusCode,
    out: Output,
    warnings: &[String],
) -> Response<Body> {
    match json {
        Some(json) if serves_stored_json(res, out) => respond_json(json, code, warnings),
        _ => respond_object(res, obj, code, out, warnings),
    }
}

/// An object already encoded as JSON in the served version.
pub fn respond_json(json: Bytes, code: StatusCode, warnings: &[String]) -> Response<Body> {
    respond_bytes(json, "application/json", code, warnings)
}

fn respond_bytes(
    body: impl Into<Bytes>,
    ctype: &'static str,
    code: StatusCode,
    warnings: &[String],
) -> Response<Body> {
    let mut b = Response::builder()
        .status(code)
        .header(header::CONTENT_TYPE, ctype);
    for w in warnings {
        b = b.header(
            "Warning",
            format!("299 - {}", serde_json::to_string(w).unwrap_or_default()),
        );
    }
    b.body(full(body.into()))
        .unwrap_or_else(|_| Response::new(full("")))
}

pub fn partial_metadata(obj: &Value) -> Value {
    partial_metadata_of(obj.get("metadata").cloned().unwrap_or(json!({})))
}

/// A PartialObjectMetadata around `metadata`. Conversion between served
/// versions leaves metadata alone, so stored metadata can go out as it is.
pub fn partial_metadata_of(metadata: Value) -> Value {
    json!({
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": metadata,
    })
}

/// Parses resourceVersion-like parameters.
pub fn parse_rv(s: &str) -> Result<u64, ApiError> {
    s.parse::<u64>()
        .map_err(|_| ApiError::bad_request(format!("invalid resource version: {s:?}")))
}

async fn get(
    api: &Arc<Api>,
    res: &Arc<Resource>,
    ns: Option<&str>,
    name: &str,
    q: &Query,
    out: Output,
) -> Result<Response<Body>, ApiError> {
    let obj = match q.get("resourceVersion").filter(|s| !s.is_empty()) {
        // "0": any version is fine; serve from memory.
        Some("0") => {
            let cache = api.registry.cache(res).await?;
            let key = res.key(ns, name);
            match cache.get(key.as_bytes()) {
                Some(o) => o.value(),
                None => return Err(ApiError::not_found(&res.group, &res.plural, name)),
            }
        }
        Some(rv) => {
            let rv = parse_rv(rv)?;
            let obj = api.registry.get(res, ns, name).await?;
            let have = meta::resource_version(&obj)
                .and_then(|s| s.parse::<u64>().ok())
                .unwrap_or(0);
            // "Not older than rv": the current object qualifies unless rv is in the future.
            let current = api.registry.store().status().await?.revision;
            if rv > current {
                return Err(ApiError::timeout(format!(
                    "Too large resource version: {rv}, current: {current}"
                )));
            }
            let _ = have;
            obj
        }
        None => api.registry.get(res, ns, name).await?,
    };
    Ok(respond_object(res, obj, StatusCode::OK, out, &[]))
}

/// Decodes a body for create or update and checks its type and fields.
pub fn decode_object(
    res: &Resource,
    parts: &http::request::Parts,
    body: &[u8],
    q: &Query,
) -> Result<(Value, Vec<String>), ApiError> {
    let mut obj = negotiate::decode_body(header_str(parts, header::CONTENT_TYPE), body)?;
    if !obj.is_object() {
        return Err(ApiError::bad_request(
            "the object provided is unrecognized (must be a JSON object)",
        ));
    }
    check_type(res, &mut obj)?;
    let warnings = field_check(res, &obj, q)?;
    Ok((obj, warnings))
}

/// Checks apiVersion and kind against the URL (filling them if absent, as
/// the typed decoders of client libraries assume).
pub fn check_type(res: &Resource, obj: &mut Value) -> Result<(), ApiError> {
    let want_av = res.api_version();
    let o = obj
        .as_object_mut()
        .ok_or_else(|| ApiError::bad_request("the object provided is unrecognized"))?;
    match o.get("apiVersion").and_then(Value::as_str) {
        None | Some("") => {
            o.insert("apiVersion".into(), json!(want_av));
        }
        Some(av) if av == want_av => {}
        Some(av) => {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({av}) does not match the expected API version ({want_av})"
            )))
        }
    }
    match o.get("kind").and_then(Value::as_str) {
        None | Some("") => {
            o.insert("kind".into(), json!(res.kind));
        }
        Some(k) if k == res.kind => {}
        Some(k) => {
            return Err(ApiError::bad_request(format!(
                "the kind in the data ({k}) does not match the expected kind ({})",
                res.kind
            )))
        }
    }
    Ok(())
}

pub fn field_validation(q: &Query) -> Result<FieldValidation, ApiError> {
    match q.get("fieldValidation") {
        None | Some("") | Some("Warn") => Ok(FieldValidation::Warn),
        Some("Strict") => Ok(FieldValidation::Strict),
        Some("Ignore") => Ok(FieldValidation::Ignore),
        Some(other) => Err(ApiError::bad_request(format!(
            "fieldValidation parameter unsupported: {other}. Supported values: Ignore, Warn, Strict"
        ))),
    }
}

/// Unknown fields: an error under Strict, warnings under Warn.
pub fn field_check(res: &Resource, obj: &Value, q: &Query) -> Result<Vec<String>, ApiError> {
    let mode = field_validation(q)?;
    if mode == FieldValidation::Ignore {
        return Ok(Vec::new());
    }
    let unknown = crate::openapi::unknown_fields(res, obj);
    let msgs: Vec<String> = unknown
        .iter()
        .map(|f| format!("unknown field \"{f}\""))
        .collect();
    if mode == FieldValidation::Strict && !msgs.is_empty() {
        return Err(ApiError::bad_request(format!(
            "strict decoding error: {}",
            msgs.join(", ")
        )));
    }
    Ok(msgs)
}

pub fn write_options(q: &Query) -> Result<WriteOptions, ApiError> {
    let dry_run = match q.get("dryRun") {
        None | Some("") => false,
        Some("All") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "Invalid dry run value: {other}. Supported values: All"
            )))
        }
    };
    Ok(WriteOptions {
        dry_run,
        field_manager: q.get("fieldManager").map(String::from),
        field_validation: field_validation(q)?,
        binding: false,
        admission: None,
    })
}

async fn create(
    api: &Arc<Api>,
    res: &Arc<Resource>,
    ns: Option<&str>,
    parts: &http::request::Parts,
    body: &[u8],
    q: &Query,
    out: Output,
) -> Result<Response<Body>, ApiError> {
    let mut opts = write_options(q)?;
    opts.admission = Some(crate::admission::Admission::new(api, ""));
    let (mut obj, warnings) = decode_object(res, parts, body, q)?;
    crate::nodeauth::admit_create(api, res, &obj).await?;
    if let Some(ns) = ns {
        let body_ns = meta::namespace(&obj);
        if !body_ns.is_empty() && body_ns != ns {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        api.registry
            .check_namespace(namespaces(api)?.as_ref(), ns)
            .await?;
    }
    if meta::name(&obj).is_empty()
        && meta::str_field(&obj, "generateName").is_none_or(str::is_empty)
    {
        return Err(ApiError::invalid(
            &res.group,
            &res.kind,
            "",
            vec![crate::status::Cause {
                reason: "FieldValueRequired".into(),
                message: "Required value: name or generateName is required".into(),
                field: "metadata.name".into(),
            }],
        ));
    }
    meta_mut(&mut obj).insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
    strategy::apply_defaults(res, &mut obj);
    let manager = crate::fieldmanager::manager_name(opts.field_manager.as_deref(), &parts.headers);
    crate::fieldmanager::track_update(res, "", None, &mut obj, &manager);
    let obj = convert::to_storage(res, obj);
    let (created, json) = api.registry.create_encoded(res, ns, obj, &opts).await?;
    crate::hooks::after_write(api, res, &created).await;
    Ok(respond_written(
        res,
        created,
        json,
        StatusCode::CREATED,
        out,
        &warnings,
    ))
}

#[allow(clippy::too_many_arguments)]
async fn update(
    api: &Arc<Api>,
    res: &Arc<Resource>,
    ns: Option<&str>,
    name: &str,
    sub: &str,
    parts: &http::request::Parts,
    body: &[u8],
    q: &Query,
    out: Output,
) -> Result<Response<Body>, ApiError> {
    let mut opts = write_options(q)?;
    opts.admission = Some(crate::admission::Admission::new(api, sub));
    let (mut obj, warnings) = decode_object(res, parts, body, q)?;
    let body_name = meta::name(&obj).to_string();
    if body_name.is_empty() {
        meta_mut(&mut obj).insert("name".into(), json!(name));
    } else if body_name != name {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({body_name}) does not match the name on the URL ({name})"
        )));
    }
    if let Some(ns) = ns {
        let body_ns = meta::namespace(&obj);
        if !body_ns.is_empty() && body_ns != ns {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        meta_mut(&mut obj).insert("namespace".into(), json!(ns));
    }
    strategy::apply_defaults(res, &mut obj);
    let obj = convert::to_storage(res, obj);
    let sub_kind = if sub == "finalize" { "finalize" } else { sub };
    let create_ok = res.create_on_update && sub.is_empty();
    if create_ok {
        if let Some(ns) = ns {
            may_create_in(api, res, ns, name).await?;
        }
    }
    let manager = crate::fieldmanager::manager_name(opts.field_manager.as_deref(), &parts.headers);
    let (stored, created, json) = api
        .registry
        .guaranteed_update_encoded(
            res,
            ns,
            name,
            &opts,
            serves_stored_json(res, out),
            |current| match current {
                None if create_ok => {
                    let mut new = obj.clone();
                    crate::fieldmanager::track_update(res, "", None, &mut new, &manager);
                    Ok(new)
                }
                None => Err(ApiError::not_found(&res.group, &res.plural, name)),
                Some(old) => {
                    let mut new = finalize_or_merge(res, sub_kind, obj.clone(), old);
                    crate::fieldmanager::track_update(res, sub, Some(old), &mut new, &manager);
                    Ok(new)
                }
            },
        )
        .await?;
    crate::hooks::after_write(api, res, &stored).await;
    let code = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(respond_written(res, stored, json, code, out, &warnings))
}

/// The namespace finalize subresource changes spec.finalizers only.
fn finalize_or_merge(res: &Resource, sub: &str, new: Value, old: &Value) -> Value {
    if sub == "finalize" {
        let mut out = old.clone();
        if let Some(o) = out.as_object_mut() {
            o.insert("spec".into(), new.get("spec").cloned().unwrap_or(json!({})));
        }
        if let Some(rv) = meta::resource_version(&new).map(String::from) {
            meta_mut(&mut out).insert("resourceVersion".into(), json!(rv));
        }
        return out;
    }
    strategy::merge_update(res, sub, new, old)
}

/// For writes that may create (PUT of upsert types, apply): the namespace
/// must accept new objects unless the object already exists. The namespace
/// check is a cache lookup; the store read happens only when it refuses.
pub async fn may_create_in(
    api: &Api,
    res: &Resource,
    ns: &str,
    name: &str,
) -> Result<(), ApiError> {
    match api
        .registry
        .check_namespace(namespaces(api)?.as_ref(), ns)
        .await
    {
        Ok(()) => Ok(()),
        Err(e) => match api.registry.get(res, Some(ns), name).await {
            Ok(_) => Ok(()),
            Err(_) => Err(e),
        },
    }
}

pub fn namespaces(api: &Api) -> Result<Arc<Resource>, ApiError> {
    api.find("", "v1", "namespaces")
        .ok_or_else(|| ApiError::internal("namespaces are not served"))
}

fn delete_options(
    parts: &http::request::Parts,
    body: &[u8],
    q: &Query,
) -> Result<DeleteOptions, ApiError> {
    let mut opts = DeleteOptions {
        dry_run: write_options(q)?.dry_run,
        grace_period: q.int("gracePeriodSeconds")?,
        propagation: q.get("propagationPolicy").map(String::from),
        ..Default::default()
    };
    if q.get("orphanDependents") == Some("true") {
        opts.propagation = Some("Orphan".into());
    }
    if !body.is_empty() {
        let v = negotiate::decode_body(header_str(parts, header::CONTENT_TYPE), body)?;
        if let Some(g) = v.get("gracePeriodSeconds").and_then(Value::as_i64) {
            opts.grace_period = Some(g);
        }
        if let Some(p) = v.get("propagationPolicy").and_then(Value::as_str) {
            opts.propagation = Some(p.to_string());
        }
        if v.get("orphanDependents").and_then(Value::as_bool) == Some(true) {
            opts.propagation = Some("Orphan".into());
        }
        if let Some(uid) = v.pointer("/preconditions/uid").and_then(Value::as_str) {
            opts.uid = Some(uid.to_string());
        }
        if let Some(rv) = v
            .pointer("/preconditions/resourceVersion")
            .and_then(Value::as_str)
        {
            opts.resource_version = Some(rv.to_string());
        }
        if let Some(dr) = v.get("dryRun").and_then(Value::as_array) {
            opts.dry_run |= dr.iter().any(|d| d == "All");
        }
    }
    if let Some(p) = &opts.propagation {
        if !matches!(p.as_str(), "Orphan" | "Background" | "Foreground") {
            return Err(ApiError::invalid(
                "",
                "DeleteOptions",
                "",
                vec![crate::status::Cause {
                    reason: "FieldValueNotSupported".into(),
                    message: format!("Unsupported value: \"{p}\": supported values: \"Foreground\", \"Background\", \"Orphan\""),
                    field: "propagationPolicy".into(),
                }],
            ));
        }
    }
    if opts.grace_period.is_some_and(|g| g < 0) {
        opts.grace_period = Some(0);
    }
    Ok(opts)
}

#[allow(clippy::too_many_arguments)]
async fn delete(
    api: &Arc<Api>,
    res: &Arc<Resource>,
    ns: Option<&str>,
    name: &str,
    parts: &http::request::Parts,
    body: &[u8],
    q: &Query,
    out: Output,
) -> Result<Response<Body>, ApiError> {
    let opts = delete_options(parts, body, q)?;
    match api.registry.delete(res, ns, name, &opts).await? {
        Deleted::Now(obj) => {
            crate::hooks::after_delete(api, res, &obj).await;
            if res.plural == "pods" || res.custom {
                Ok(respond_object(res, obj, StatusCode::OK, out, &[]))
            } else {
                Ok(json_response(
                    StatusCode::OK,
                    &success_status(&res.group, &res.plural, name, meta::uid(&obj)),
                ))
            }
        }
        Deleted::Pending(obj) => Ok(respond_object(res, obj, StatusCode::OK, out, &[])),
    }
}

async fn delete_collection(
    api: &Arc<Api>,
    res: &Arc<Resource>,
    ns: Option<&str>,
    parts: &http::request::Parts,
    body: &[u8],
    q: &Query,
    out: Output,
) -> Result<Response<Body>, ApiError> {
    let opts = delete_options(parts, body, q)?;
    let filter = crate::list::Filter::from_query(res, q)?;
    let cache = api.registry.synced_cache(res).await?;
    let (items, rev) = cache.list(&crate::list::ns_prefix(res, ns));
    let mut deleted = Vec::new();
    for item in items.iter().filter(|o| filter.matches(o)) {
        let item_ns = (!item.namespace.is_empty()).then_some(item.namespace.as_str());
        match api.registry.delete(res, item_ns, &item.name, &opts).await {
            Ok(Deleted::Now(o)) => {
                crate::hooks::after_delete(api, res, &o).await;
                deleted.push(o)
            }
            Ok(Deleted::Pending(o)) => deleted.push(o),
            Err(e) if e.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    let items: Vec<Value> = deleted
        .into_iter()
        .map(|o| convert::from_storage(res, o))
        .collect();
    let list = json!({
        "kind": res.list_kind,
        "apiVersion": res.api_version(),
        "metadata": {"resourceVersion": rev.to_string()},
        "items": items,
    });
    Ok(match out {
        Output::Yaml => Response::builder()
            .header(header::CONTENT_TYPE, "application/yaml")
            .body(full(negotiate::to_yaml(&list)))
            .unwrap_or_else(|_| Response::new(full(""))),
        _ => json_response(StatusCode::OK, &list),
    })
}

async fn list(
    api: &Arc<Api>,
    res: &Arc<Resource>,
    ns: Option<&str>,
    q: &Query,
    out: Output,
) -> Result<Response<Body>, ApiError> {
    let page = crate::list::list(api, res, ns, q).await?;
    let body = crate::list::render(res, page, out, q)?;
    let ctype = if out == Output::Yaml {
        "application/yaml"
    } else {
        "application/json"
    };
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, ctype)
        .body(full(body))
        .unwrap_or_else(|_| Response::new(full(""))))
}

#[cfg(test)]
mod tests {
    use super::Query;

    #[test]
    fn boolean_parameters_read_as_upstream_does() {
        for on in ["watch=true", "watch=True", "watch=1", "watch=", "watch=t"] {
            assert!(Query::parse(Some(on)).flag("watch"), "{on}");
        }
        for off in ["watch=false", "watch=FALSE", "watch=0", "other=1", ""] {
            assert!(!Query::parse(Some(off)).flag("watch"), "{off}");
        }
    }
}
