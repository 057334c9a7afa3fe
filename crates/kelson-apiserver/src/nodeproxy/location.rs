//! Where a node subresource request goes: the kubelet's address and port
//! from the Node, the container a pod request names, and the kubelet path
//! and query built from the request's options, as upstream's pod and node
//! strategies (LogLocation, ExecLocation, AttachLocation,
//! PortForwardLocation, node ResourceLocation) build them.

use std::net::IpAddr;

use serde_json::Value;

use crate::status::{ApiError, Cause};

/// The kubelet's port when the Node does not report one.
pub const DEFAULT_KUBELET_PORT: u16 = 10250;

/// The address types tried, in order, to reach a node's kubelet. Upstream's
/// kube-apiserver defaults to Hostname first; k3s and kubeadm both set this
/// order instead, because a node's Hostname address often does not resolve
/// from the control plane.
pub const PREFERRED_ADDRESS_TYPES: &[&str] = &["InternalIP", "ExternalIP", "Hostname"];

/// Query parameters in request order, every value kept (`command` repeats).
pub type Params = Vec<(String, String)>;

pub fn parse_params(query: Option<&str>) -> Params {
    form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// The first value of a parameter, as upstream's query decoding reads
/// scalar options.
fn first<'a>(p: &'a Params, key: &str) -> Option<&'a str> {
    p.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// A parameter's first value; an empty one counts as unset.
fn non_empty(p: &Params, key: &str) -> Option<String> {
    first(p, key).filter(|v| !v.is_empty()).map(String::from)
}

/// A boolean option: present means true unless it says "false" or "0".
fn flag(p: &Params, key: &str) -> bool {
    first(p, key).is_some_and(|v| v != "0" && !v.eq_ignore_ascii_case("false"))
}

fn int(p: &Params, key: &str) -> Result<Option<i64>, ApiError> {
    match first(p, key) {
        None | Some("") => Ok(None),
        Some(v) => v.parse().map(Some).map_err(|_| {
            ApiError::bad_request(format!("strconv.ParseInt: parsing {v:?}: invalid syntax"))
        }),
    }
}

/// Escapes as Go's url.QueryEscape does (the kubelet decodes either way;
/// this keeps the URLs identical to upstream's).
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Encodes as Go's url.Values.Encode: keys sorted, values in order.
fn encode(mut pairs: Vec<(&str, String)>) -> String {
    pairs.sort_by(|a, b| a.0.cmp(b.0));
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", escape(k), escape(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// Options of `pods/log` (PodLogOptions).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LogOptions {
    pub container: Option<String>,
    pub follow: bool,
    pub previous: bool,
    pub timestamps: bool,
    pub since_seconds: Option<i64>,
    pub since_time: Option<jiff::Timestamp>,
    pub tail_lines: Option<i64>,
    pub limit_bytes: Option<i64>,
    pub insecure_skip_tls_verify_backend: bool,
}

impl LogOptions {
    /// Reads and validates the options (ValidatePodLogOptions): an invalid
    /// value is a 422 naming the pod.
    pub fn parse(p: &Params, pod: &str) -> Result<LogOptions, ApiError> {
        let since_time = match first(p, "sinceTime") {
            None | Some("") | Some("null") => None,
            Some(t) => Some(t.parse::<jiff::Timestamp>().map_err(|_| {
                ApiError::bad_request(format!(
                    "parsing time {t:?} as \"2006-01-02T15:04:05Z07:00\": cannot parse {t:?} as RFC 3339"
                ))
            })?),
        };
        let o = LogOptions {
            container: non_empty(p, "container"),
            follow: flag(p, "follow"),
            previous: flag(p, "previous"),
            timestamps: flag(p, "timestamps"),
            since_seconds: int(p, "sinceSeconds")?,
            since_time,
            tail_lines: int(p, "tailLines")?,
            limit_bytes: int(p, "limitBytes")?,
            insecure_skip_tls_verify_backend: flag(p, "insecureSkipTLSVerifyBackend"),
        };
        let invalid = |field: &str, v: i64, why: &str| Cause {
            reason: "FieldValueInvalid".into(),
            message: format!("Invalid value: {v}: {why}"),
            field: field.into(),
        };
        let mut causes = Vec::new();
        if let Some(t) = o.tail_lines.filter(|t| *t < 0) {
            causes.push(invalid(
                "tailLines",
                t,
                "must be greater than or equal to 0",
            ));
        }
        if let Some(l) = o.limit_bytes.filter(|l| *l < 1) {
            causes.push(invalid("limitBytes", l, "must be greater than 0"));
        }
        match (o.since_seconds, o.since_time) {
            (Some(_), Some(_)) => causes.push(Cause {
                reason: "FieldValueForbidden".into(),
                message: "Forbidden: at most one of `sinceTime` or `sinceSeconds` may be specified"
                    .into(),
                field: String::new(),
            }),
            (Some(s), None) if s < 1 => {
                causes.push(invalid("sinceSeconds", s, "must be greater than 0"))
            }
            _ => {}
        }
        if !causes.is_empty() {
            // Upstream prints every cause as "field: message", an empty
            // field path included.
            let list: Vec<String> = causes
                .iter()
                .map(|c| format!("{}: {}", c.field, c.message))
                .collect();
            let joined = match list.as_slice() {
                [one] => one.clone(),
                _ => format!("[{}]", list.join(", ")),
            };
            let mut e = ApiError::invalid("", "PodLogOptions", pod, causes);
            e.message = format!("PodLogOptions \"{pod}\" is invalid: {joined}");
            return Err(e);
        }
        Ok(o)
    }

    /// The kubelet query for `/containerLogs/...`.
    pub fn kubelet_query(&self) -> String {
        let mut q: Vec<(&str, String)> = Vec::new();
        if self.follow {
            q.push(("follow", "true".into()));
        }
        if self.previous {
            q.push(("previous", "true".into()));
        }
        if self.timestamps {
            q.push(("timestamps", "true".into()));
        }
        if let Some(s) = self.since_seconds {
            q.push(("sinceSeconds", s.to_string()));
        }
        if let Some(t) = self.since_time {
            q.push((
                "sinceTime",
                jiff::Timestamp::from_second(t.as_second())
                    .unwrap_or(t)
                    .strftime("%Y-%m-%dT%H:%M:%SZ")
                    .to_string(),
            ));
        }
        if let Some(t) = self.tail_lines {
            q.push(("tailLines", t.to_string()));
        }
        if let Some(l) = self.limit_bytes {
            q.push(("limitBytes", l.to_string()));
        }
        encode(q)
    }
}

/// Options of `pods/exec` and `pods/attach` (attach has no command).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StreamOptions {
    pub container: Option<String>,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
    pub command: Vec<String>,
}

impl StreamOptions {
    pub fn parse(p: &Params, exec: bool) -> StreamOptions {
        StreamOptions {
            container: non_empty(p, "container"),
            stdin: flag(p, "stdin"),
            stdout: flag(p, "stdout"),
            stderr: flag(p, "stderr"),
            tty: flag(p, "tty"),
            command: if exec {
                p.iter()
                    .filter(|(k, _)| k == "command")
                    .map(|(_, v)| v.clone())
                    .collect()
            } else {
                Vec::new()
            },
        }
    }

    /// The kubelet's names for the streams: input, output, error, tty.
    pub fn kubelet_query(&self) -> String {
        let mut q: Vec<(&str, String)> = Vec::new();
        for (on, key) in [
            (self.stdin, "input"),
            (self.stdout, "output"),
            (self.stderr, "error"),
            (self.tty, "tty"),
        ] {
            if on {
                q.push((key, "1".into()));
            }
        }
        for c in &self.command {
            q.push(("command", c.clone()));
        }
        encode(q)
    }
}

/// `pods/portforward?ports=..` → the kubelet's `port=a,b`.
pub fn portforward_query(p: &Params) -> Result<String, ApiError> {
    let mut ports = Vec::new();
    for (_, v) in p.iter().filter(|(k, _)| k == "ports") {
        let n: i32 = v.parse().map_err(|_| {
            ApiError::bad_request(format!("strconv.ParseInt: parsing {v:?}: invalid syntax"))
        })?;
        ports.push(n.to_string());
    }
    if ports.is_empty() {
        return Ok(String::new());
    }
    Ok(encode(vec![("port", ports.join(","))]))
}

fn names(list: Option<&Value>) -> impl Iterator<Item = &str> {
    list.and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|c| c.get("name").and_then(Value::as_str))
}

/// The container a request addresses: the one named (which must exist
/// among the pod's init, regular and ephemeral containers), or the pod's
/// only container.
pub fn validate_container(pod: &Value, container: Option<&str>) -> Result<String, ApiError> {
    let pod_name = pod
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    let spec = pod.get("spec");
    let all = || {
        names(spec.and_then(|s| s.get("initContainers")))
            .chain(names(spec.and_then(|s| s.get("containers"))))
            .chain(names(spec.and_then(|s| s.get("ephemeralContainers"))))
    };
    match container {
        Some(c) => {
            if all().any(|n| n == c) {
                Ok(c.to_string())
            } else {
                Err(ApiError::bad_request(format!(
                    "container {c} is not valid for pod {pod_name}"
                )))
            }
        }
        None => {
            let regular: Vec<&str> = names(spec.and_then(|s| s.get("containers"))).collect();
            match regular.as_slice() {
                [only] => Ok(only.to_string()),
                [] => Err(ApiError::bad_request(format!(
                    "a container name must be specified for pod {pod_name}"
                ))),
                _ => Err(ApiError::bad_request(format!(
                    "a container name must be specified for pod {pod_name}, choose one of: [{}]",
                    all().collect::<Vec<_>>().join(" ")
                ))),
            }
        }
    }
}

/// The pod's node, or None when it is not scheduled yet.
pub fn node_name(pod: &Value) -> Option<&str> {
    pod.pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
}

/// The first of the node's addresses by the preferred types.
pub fn preferred_address(node: &Value, types: &[String]) -> Result<String, ApiError> {
    let addrs: Vec<(&str, &str)> = node
        .pointer("/status/addresses")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|a| {
            (
                a.get("type").and_then(Value::as_str).unwrap_or(""),
                a.get("address").and_then(Value::as_str).unwrap_or(""),
            )
        })
        .collect();
    for t in types {
        if let Some((_, a)) = addrs.iter().find(|(at, _)| at == t) {
            return Ok(a.to_string());
        }
    }
    let known: Vec<String> = addrs.iter().map(|(t, a)| format!("{{{t} {a}}}")).collect();
    Err(ApiError::new(
        500,
        "",
        format!(
            "no preferred addresses found; known addresses: [{}]",
            known.join(" ")
        ),
    ))
}

/// The kubelet's port from `status.daemonEndpoints.kubeletEndpoint.Port`.
pub fn kubelet_port(node: &Value, default: u16) -> u16 {
    node.pointer("/status/daemonEndpoints/kubeletEndpoint/Port")
        .and_then(Value::as_u64)
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p > 0)
        .unwrap_or(default)
}

/// `name`, `name:port` or `scheme:name:port` (scheme http or https), as
/// upstream's SplitSchemeNamePort; None when malformed.
pub fn split_scheme_name_port(id: &str) -> Option<(&str, &str, &str)> {
    let parts: Vec<&str> = id.split(':').collect();
    let (scheme, name, port) = match parts.as_slice() {
        [n] => ("", *n, ""),
        [n, p] => ("", *n, *p),
        [s, n, p] => (*s, *n, *p),
        _ => return None,
    };
    (!name.is_empty() && matches!(scheme, "" | "http" | "https")).then_some((scheme, name, port))
}

/// Go's IP.IsGlobalUnicast: what nodes/proxy may reach on a port other
/// than the kubelet's.
pub fn is_global_unicast(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            !(v4.is_unspecified()
                || v4.is_loopback()
                || v4.is_multicast()
                || v4.is_link_local()
                || v4.is_broadcast())
        }
        IpAddr::V6(v6) => {
            !(v6.is_unspecified()
                || v6.is_loopback()
                || v6.is_multicast()
                || (v6.segments()[0] & 0xffc0) == 0xfe80)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(containers: &[&str], init: &[&str]) -> Value {
        let c = |l: &[&str]| l.iter().map(|n| json!({"name": n})).collect::<Vec<_>>();
        json!({"metadata": {"name": "web"}, "spec": {"containers": c(containers), "initContainers": c(init)}})
    }

    #[test]
    fn container_defaults_to_the_only_one_and_errors_read_as_upstream() {
        assert_eq!(validate_container(&pod(&["a"], &[]), None).unwrap(), "a");
        let e = validate_container(&pod(&["a", "b"], &["init"]), None).unwrap_err();
        assert_eq!(e.code, 400);
        assert_eq!(
            e.message,
            "a container name must be specified for pod web, choose one of: [init a b]"
        );
        let e = validate_container(&pod(&["a"], &[]), Some("x")).unwrap_err();
        assert_eq!(e.message, "container x is not valid for pod web");
        assert_eq!(
            validate_container(&pod(&["a"], &["init"]), Some("init")).unwrap(),
            "init"
        );
    }

    #[test]
    fn log_options_forwarded_in_upstream_order() {
        let p = parse_params(Some(
            "container=a&follow=true&tailLines=10&timestamps=1&limitBytes=5&previous=false&sinceTime=2024-05-01T10:00:00.5%2B02:00",
        ));
        let o = LogOptions::parse(&p, "web").unwrap();
        assert_eq!(o.container.as_deref(), Some("a"));
        assert_eq!(
            o.kubelet_query(),
            "follow=true&limitBytes=5&sinceTime=2024-05-01T08%3A00%3A00Z&tailLines=10&timestamps=true"
        );
    }

    #[test]
    fn log_options_validated_as_upstream() {
        let e = LogOptions::parse(&parse_params(Some("tailLines=-1")), "web").unwrap_err();
        assert_eq!(e.code, 422);
        assert_eq!(
            e.message,
            "PodLogOptions \"web\" is invalid: tailLines: Invalid value: -1: must be greater than or equal to 0"
        );
        let e = LogOptions::parse(&parse_params(Some("limitBytes=0")), "web").unwrap_err();
        assert!(e
            .message
            .ends_with("limitBytes: Invalid value: 0: must be greater than 0"));
        let e = LogOptions::parse(&parse_params(Some("sinceSeconds=0")), "web").unwrap_err();
        assert!(e
            .message
            .ends_with("sinceSeconds: Invalid value: 0: must be greater than 0"));
        let e = LogOptions::parse(
            &parse_params(Some("sinceSeconds=5&sinceTime=2024-01-01T00:00:00Z")),
            "web",
        )
        .unwrap_err();
        assert_eq!(
            e.message,
            "PodLogOptions \"web\" is invalid: : Forbidden: at most one of `sinceTime` or `sinceSeconds` may be specified"
        );
        assert_eq!(
            LogOptions::parse(&parse_params(Some("tailLines=x")), "web")
                .unwrap_err()
                .code,
            400
        );
    }

    #[test]
    fn exec_options_map_to_kubelet_names() {
        let p = parse_params(Some(
            "command=sh&command=-c&command=echo+hi%26&stdin=true&stdout=true&stderr=false&tty=true&container=a",
        ));
        let o = StreamOptions::parse(&p, true);
        assert_eq!(o.command, ["sh", "-c", "echo hi&"]);
        assert_eq!(
            o.kubelet_query(),
            "command=sh&command=-c&command=echo+hi%26&input=1&output=1&tty=1"
        );
        assert!(StreamOptions::parse(&p, false).command.is_empty());
        assert_eq!(
            portforward_query(&parse_params(Some("ports=80&ports=443"))).unwrap(),
            "port=80%2C443"
        );
        assert_eq!(
            portforward_query(&parse_params(Some("ports=x")))
                .unwrap_err()
                .code,
            400
        );
    }

    #[test]
    fn node_address_by_preference_and_kubelet_port() {
        let node = json!({"status": {
            "addresses": [{"type": "Hostname", "address": "n1"}, {"type": "InternalIP", "address": "10.0.0.5"}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 12250}},
        }});
        let types: Vec<String> = PREFERRED_ADDRESS_TYPES
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(preferred_address(&node, &types).unwrap(), "10.0.0.5");
        assert_eq!(
            preferred_address(&node, &["Hostname".to_string()]).unwrap(),
            "n1"
        );
        let e = preferred_address(&node, &["ExternalIP".to_string()]).unwrap_err();
        assert_eq!(
            e.message,
            "no preferred addresses found; known addresses: [{Hostname n1} {InternalIP 10.0.0.5}]"
        );
        assert_eq!(kubelet_port(&node, DEFAULT_KUBELET_PORT), 12250);
        assert_eq!(kubelet_port(&json!({}), DEFAULT_KUBELET_PORT), 10250);
    }

    #[test]
    fn node_ids_split_as_upstream() {
        assert_eq!(split_scheme_name_port("n"), Some(("", "n", "")));
        assert_eq!(split_scheme_name_port("n:10250"), Some(("", "n", "10250")));
        assert_eq!(
            split_scheme_name_port("https:n:9100"),
            Some(("https", "n", "9100"))
        );
        assert_eq!(split_scheme_name_port("ftp:n:21"), None);
        assert_eq!(split_scheme_name_port(":80"), None);
        assert_eq!(split_scheme_name_port("a:b:c:d"), None);
        assert!(!is_global_unicast("127.0.0.1".parse().unwrap()));
        assert!(!is_global_unicast("169.254.1.1".parse().unwrap()));
        assert!(is_global_unicast("10.1.2.3".parse().unwrap()));
        assert!(!is_global_unicast("fe80::1".parse().unwrap()));
    }
}
