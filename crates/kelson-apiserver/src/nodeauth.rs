//! Requests from kubelets: upstream's Node authorizer
//! (plugin/pkg/auth/authorizer/node) and NodeRestriction admission
//! (plugin/pkg/admission/noderestriction).
//!
//! A user named `system:node:NAME` in group `system:nodes` is a node. Its
//! requests are authorized against the `system:node` ClusterRole's rules,
//! with secrets, configmaps, persistent volumes (claims), service account
//! tokens and leases narrowed to objects related to the node (pods bound to
//! it and what they reference, its own Lease). NodeRestriction then limits
//! writes: a node may modify only its own Node, create only mirror pods
//! bound to itself, update the status of and delete only its own pods.
//!
//! Upstream derives relationships from an informer-fed graph; here they are
//! read from the watch caches when a request arrives, which is as current.
//! Other users are not affected (Kelson has no RBAC: they are allowed).

use std::future::Future;

use http::{Method, Uri};
use serde_json::Value;

use crate::handler::{Api, User};
use crate::resources::Resource;
use crate::status::ApiError;

/// Node users are `system:node:<name>`.
pub const NODE_USER_PREFIX: &str = "system:node:";
/// The group every node user is in.
pub const NODES_GROUP: &str = "system:nodes";
/// Where node Leases live.
pub const NODE_LEASE_NAMESPACE: &str = "kube-node-lease";
/// The annotation marking a mirror pod (upstream `MirrorPodAnnotationKey`).
pub const MIRROR_POD_ANNOTATION: &str = "kubernetes.io/config.mirror";

/// Upstream's AuthorizeNodeWithSelectors (on by default since 1.32): a
/// node may read only its own Node and only pods bound to it (list/watch
/// with a `spec.nodeName` field selector). Kelson's agent runs its pod
/// network and service proxy under the node's identity and needs every
/// Node and every pod, so this is off: nodes and pods are readable as the
/// `system:node` role grants without the feature.
pub const AUTHORIZE_NODE_WITH_SELECTORS: bool = false;

/// The name of the node a user is, as upstream's default node identifier
/// reads it: `Some("")` for a member of system:nodes whose name lacks the
/// node (which upstream refuses outright), `None` for other users.
pub fn node_identity(user: &User) -> Option<&str> {
    let name = user.name.strip_prefix(NODE_USER_PREFIX)?;
    user.groups.iter().any(|g| g == NODES_GROUP).then_some(name)
}

/// What a request asks for, as upstream's RequestInfo and authorizer
/// attributes describe it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RequestAttrs {
    pub verb: String,
    pub resource_request: bool,
    pub path: String,
    pub group: String,
    pub version: String,
    pub resource: String,
    pub subresource: String,
    pub namespace: String,
    pub name: String,
    /// Equality requirements of the `fieldSelector` parameter.
    pub field_selector: Vec<(String, String)>,
}

impl RequestAttrs {
    /// `resource` or `resource/subresource`, as RBAC rules name it.
    fn combined(&self) -> String {
        if self.subresource.is_empty() {
            self.resource.clone()
        } else {
            format!("{}/{}", self.resource, self.subresource)
        }
    }

    fn selects(&self, field: &str, value: &str) -> bool {
        self.field_selector
            .iter()
            .any(|(f, v)| f == field && v == value)
    }
}

/// Upstream's RequestInfoFactory: the verb from the method (list, watch and
/// deletecollection for requests without a name), group, version,
/// namespace, resource, name and subresource from the path; a list or
/// watch selecting `metadata.name` names that object.
pub fn request_attrs(method: &Method, path: &str, query: Option<&str>) -> RequestAttrs {
    let mut a = RequestAttrs {
        path: path.to_string(),
        verb: match *method {
            Method::POST => "create",
            Method::GET | Method::HEAD => "get",
            Method::PUT => "update",
            Method::PATCH => "patch",
            Method::DELETE => "delete",
            _ => "",
        }
        .to_string(),
        ..Default::default()
    };
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let rest: &[&str] = match parts.as_slice() {
        ["api", v, rest @ ..] if !rest.is_empty() => {
            a.version = v.to_string();
            rest
        }
        ["apis", g, v, rest @ ..] if !rest.is_empty() => {
            a.group = g.to_string();
            a.version = v.to_string();
            rest
        }
        _ => {
            a.verb = a.verb.to_lowercase();
            return a;
        }
    };
    a.resource_request = true;
    let mut rest = rest;
    if rest.first() == Some(&"watch") {
        a.verb = "watch".into();
        rest = &rest[1..];
    }
    if rest.first() == Some(&"namespaces") {
        if let Some(ns) = rest.get(1) {
            a.namespace = ns.to_string();
            // "namespaces/NAME/status" and "/finalize" are subresources of
            // the namespace itself.
            if rest.len() > 2 && !matches!(rest[2], "status" | "finalize") {
                rest = &rest[2..];
            }
        }
    }
    a.resource = rest.first().map(|s| s.to_string()).unwrap_or_default();
    a.name = rest.get(1).map(|s| s.to_string()).unwrap_or_default();
    a.subresource = rest.get(2).map(|s| s.to_string()).unwrap_or_default();

    let params: Vec<(String, String)> = form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let param = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    if let Some(fs) = param("fieldSelector") {
        a.field_selector = equality_terms(fs);
    }
    if a.name.is_empty() && a.verb == "get" {
        let watch = param("watch").is_some_and(|v| v != "0" && !v.eq_ignore_ascii_case("false"));
        a.verb = if watch { "watch" } else { "list" }.into();
    }
    if a.name.is_empty() && matches!(a.verb.as_str(), "list" | "watch") {
        if let Some((_, n)) = a.field_selector.iter().find(|(f, _)| f == "metadata.name") {
            if !n.is_empty() && n != "." && n != ".." && !n.contains(['/', '%']) {
                a.name = n.clone();
            }
        }
    }
    if a.name.is_empty() && a.verb == "delete" {
        a.verb = "deletecollection".into();
    }
    a
}

/// The `field=value` and `field==value` terms of a field selector.
fn equality_terms(selector: &str) -> Vec<(String, String)> {
    selector
        .split(',')
        .filter(|t| !t.contains("!="))
        .filter_map(|t| {
            let (k, v) = t.split_once("==").or_else(|| t.split_once('='))?;
            Some((k.trim().to_string(), v.trim().to_string()))
        })
        .collect()
}

/// An RBAC rule: verbs on resources (with subresource) of one group.
struct Rule {
    verbs: &'static [&'static str],
    group: &'static str,
    resources: &'static [&'static str],
}

const READ: &[&str] = &["get", "list", "watch"];

/// Upstream's `system:node` rules (bootstrappolicy.NodeRules, 1.33, with
/// the default feature gates).
const NODE_RULES: &[Rule] = &[
    Rule {
        verbs: &["create"],
        group: "authentication.k8s.io",
        resources: &["tokenreviews"],
    },
    Rule {
        verbs: &["create"],
        group: "authorization.k8s.io",
        resources: &["subjectaccessreviews", "localsubjectaccessreviews"],
    },
    Rule {
        verbs: READ,
        group: "",
        resources: &["services"],
    },
    Rule {
        verbs: &["create", "get", "list", "watch"],
        group: "",
        resources: &["nodes"],
    },
    Rule {
        verbs: &["update", "patch"],
        group: "",
        resources: &["nodes/status", "nodes"],
    },
    Rule {
        verbs: &["create", "update", "patch"],
        group: "",
        resources: &["events"],
    },
    Rule {
        verbs: READ,
        group: "",
        resources: &["pods"],
    },
    Rule {
        verbs: &["create", "delete"],
        group: "",
        resources: &["pods"],
    },
    Rule {
        verbs: &["update", "patch"],
        group: "",
        resources: &["pods/status"],
    },
    Rule {
        verbs: &["create"],
        group: "",
        resources: &["pods/eviction"],
    },
    Rule {
        verbs: READ,
        group: "",
        resources: &["secrets", "configmaps"],
    },
    Rule {
        verbs: &["get"],
        group: "",
        resources: &["persistentvolumeclaims", "persistentvolumes"],
    },
    Rule {
        verbs: &["get"],
        group: "",
        resources: &["endpoints"],
    },
    Rule {
        verbs: &["create", "get", "list", "watch"],
        group: "certificates.k8s.io",
        resources: &["certificatesigningrequests"],
    },
    Rule {
        verbs: &["get", "create", "update", "patch", "delete"],
        group: "coordination.k8s.io",
        resources: &["leases"],
    },
    Rule {
        verbs: &["get"],
        group: "storage.k8s.io",
        resources: &["volumeattachments"],
    },
    Rule {
        verbs: &["create"],
        group: "",
        resources: &["serviceaccounts/token"],
    },
    Rule {
        verbs: &["get", "update", "patch"],
        group: "",
        resources: &["persistentvolumeclaims/status"],
    },
    Rule {
        verbs: READ,
        group: "storage.k8s.io",
        resources: &["csidrivers"],
    },
    Rule {
        verbs: &["get", "create", "update", "patch", "delete"],
        group: "storage.k8s.io",
        resources: &["csinodes"],
    },
    Rule {
        verbs: READ,
        group: "node.k8s.io",
        resources: &["runtimeclasses"],
    },
];

/// What Kelson's agent needs beyond the kubelet's role, since its pod
/// network, network policy and service proxy run as the node (k3s gives its
/// agent's kube-proxy and network controller the same reads).
const AGENT_RULES: &[Rule] = &[
    Rule {
        verbs: READ,
        group: "",
        resources: &["namespaces", "endpoints"],
    },
    Rule {
        verbs: READ,
        group: "discovery.k8s.io",
        resources: &["endpointslices"],
    },
    Rule {
        verbs: READ,
        group: "networking.k8s.io",
        resources: &["networkpolicies"],
    },
    Rule {
        verbs: &["create", "update", "patch"],
        group: "events.k8s.io",
        resources: &["events"],
    },
];

fn rules_allow(a: &RequestAttrs) -> bool {
    let combined = a.combined();
    NODE_RULES.iter().chain(AGENT_RULES).any(|r| {
        r.group == a.group
            && r.verbs.contains(&a.verb.as_str())
            && r.resources.contains(&combined.as_str())
    })
}

/// Objects the decisions look at, by storage group and plural.
pub trait Objects {
    /// Pods whose spec.nodeName is `node`, in `ns` or in every namespace.
    fn pods_on(&self, node: &str, ns: Option<&str>) -> Vec<Value>;
    /// One object; `None` when it does not exist (or is not served).
    fn get(&self, group: &str, plural: &str, ns: Option<&str>, name: &str) -> Option<Value>;
}

/// The watch caches of the objects decisions need.
pub struct CachedObjects {
    caches: Vec<(Resource, std::sync::Arc<crate::cache::WatchCache>)>,
}

impl CachedObjects {
    /// Caches of pods, persistent volume claims, nodes and, when served,
    /// volume attachments and resource slices.
    pub async fn load(api: &Api) -> Result<CachedObjects, ApiError> {
        let wanted = [
            ("", "pods"),
            ("", "persistentvolumeclaims"),
            ("", "nodes"),
            ("storage.k8s.io", "volumeattachments"),
            ("resource.k8s.io", "resourceslices"),
        ];
        let mut caches = Vec::new();
        for (group, plural) in wanted {
            let res = api
                .resources()
                .iter()
                .find(|r| !r.custom && r.storage.0 == group && r.storage.1 == plural)
                .cloned();
            if let Some(res) = res {
                let cache = api.registry.cache(&res).await?;
                caches.push(((*res).clone(), cache));
            }
        }
        Ok(CachedObjects { caches })
    }

    fn cache(
        &self,
        group: &str,
        plural: &str,
    ) -> Option<&(Resource, std::sync::Arc<crate::cache::WatchCache>)> {
        self.caches
            .iter()
            .find(|(r, _)| r.storage.0 == group && r.storage.1 == plural)
    }
}

impl Objects for CachedObjects {
    fn pods_on(&self, node: &str, ns: Option<&str>) -> Vec<Value> {
        let Some((_, cache)) = self.cache("", "pods") else {
            return Vec::new();
        };
        let sub = ns.map(|n| format!("{n}/")).unwrap_or_default();
        cache
            .list(&sub)
            .0
            .iter()
            .filter(|o| o.field("spec.nodeName") == Some(node))
            .map(|o| o.value())
            .filter(|p| str_at(p, "/spec/nodeName") == node)
            .collect()
    }

    fn get(&self, group: &str, plural: &str, ns: Option<&str>, name: &str) -> Option<Value> {
        let (res, cache) = self.cache(group, plural)?;
        cache.get(res.key(ns, name).as_bytes()).map(|o| o.value())
    }
}

fn str_at<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

fn items<'a>(v: &'a Value, pointer: &str) -> impl Iterator<Item = &'a Value> {
    v.pointer(pointer)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

/// Every container of a pod: init, app and ephemeral.
fn containers(pod: &Value) -> impl Iterator<Item = &Value> {
    items(pod, "/spec/initContainers")
        .chain(items(pod, "/spec/containers"))
        .chain(items(pod, "/spec/ephemeralContainers"))
}

/// The Secrets a pod references (upstream `VisitPodSecretNames`).
pub fn pod_secret_names(pod: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let mut push = |s: &str| {
        if !s.is_empty() && !out.iter().any(|o| o == s) {
            out.push(s.to_string());
        }
    };
    for s in items(pod, "/spec/imagePullSecrets") {
        push(str_at(s, "/name"));
    }
    for c in containers(pod) {
        for e in items(c, "/envFrom") {
            push(str_at(e, "/secretRef/name"));
        }
        for e in items(c, "/env") {
            push(str_at(e, "/valueFrom/secretKeyRef/name"));
        }
    }
    for v in items(pod, "/spec/volumes") {
        push(str_at(v, "/secret/secretName"));
        push(str_at(v, "/azureFile/secretName"));
        for kind in [
            "cephfs",
            "cinder",
            "flexVolume",
            "rbd",
            "scaleIO",
            "iscsi",
            "storageos",
        ] {
            push(str_at(v, &format!("/{kind}/secretRef/name")));
        }
        push(str_at(v, "/csi/nodePublishSecretRef/name"));
        for s in items(v, "/projected/sources") {
            push(str_at(s, "/secret/name"));
        }
    }
    out
}

/// The ConfigMaps a pod references (upstream `VisitPodConfigmapNames`).
pub fn pod_configmap_names(pod: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let mut push = |s: &str| {
        if !s.is_empty() && !out.iter().any(|o| o == s) {
            out.push(s.to_string());
        }
    };
    for c in containers(pod) {
        for e in items(c, "/envFrom") {
            push(str_at(e, "/configMapRef/name"));
        }
        for e in items(c, "/env") {
            push(str_at(e, "/valueFrom/configMapKeyRef/name"));
        }
    }
    for v in items(pod, "/spec/volumes") {
        push(str_at(v, "/configMap/name"));
        for s in items(v, "/projected/sources") {
            push(str_at(s, "/configMap/name"));
        }
    }
    out
}

/// The PersistentVolumeClaims a pod uses, including the claims of its
/// generic ephemeral volumes (named `<pod>-<volume>`).
pub fn pod_claim_names(pod: &Value) -> Vec<String> {
    let pod_name = str_at(pod, "/metadata/name");
    items(pod, "/spec/volumes")
        .filter_map(|v| {
            let claim = str_at(v, "/persistentVolumeClaim/claimName");
            if !claim.is_empty() {
                Some(claim.to_string())
            } else if v.get("ephemeral").is_some() {
                Some(format!("{pod_name}-{}", str_at(v, "/name")))
            } else {
                None
            }
        })
        .collect()
}

/// The Secrets a PersistentVolume's source references, as (namespace, name).
fn pv_secret_refs(pv: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let Some(spec) = pv.get("spec").and_then(Value::as_object) else {
        return out;
    };
    let claim_ns = str_at(pv, "/spec/claimRef/namespace");
    for (_, source) in spec {
        let Some(src) = source.as_object() else {
            continue;
        };
        for (key, r) in src {
            if key == "secretRef" || key.ends_with("SecretRef") {
                let name = str_at(r, "/name");
                let ns = r
                    .get("namespace")
                    .and_then(Value::as_str)
                    .unwrap_or(claim_ns);
                if !name.is_empty() {
                    out.push((ns.to_string(), name.to_string()));
                }
            }
        }
        // azureFile names its secret directly.
        if let Some(name) = src.get("secretName").and_then(Value::as_str) {
            let ns = src
                .get("secretNamespace")
                .and_then(Value::as_str)
                .unwrap_or(claim_ns);
            out.push((ns.to_string(), name.to_string()));
        }
    }
    out
}

/// The claims (namespace, name) of pods bound to `node`, in every namespace.
fn node_claims(objs: &dyn Objects, node: &str) -> Vec<(String, String)> {
    objs.pods_on(node, None)
        .iter()
        .flat_map(|p| {
            let ns = str_at(p, "/metadata/namespace").to_string();
            pod_claim_names(p).into_iter().map(move |c| (ns.clone(), c))
        })
        .collect()
}

/// The PersistentVolumes bound to claims of pods on `node`.
fn node_volumes(objs: &dyn Objects, node: &str) -> Vec<Value> {
    node_claims(objs, node)
        .iter()
        .filter_map(|(ns, c)| objs.get("", "persistentvolumeclaims", Some(ns), c))
        .filter_map(|pvc| {
            let pv = str_at(&pvc, "/spec/volumeName").to_string();
            (!pv.is_empty()).then(|| objs.get("", "persistentvolumes", None, &pv))?
        })
        .collect()
}

/// Upstream's graph check: is there a path from the object to the node?
fn related(
    objs: &dyn Objects,
    node: &str,
    group: &str,
    resource: &str,
    ns: &str,
    name: &str,
) -> bool {
    let in_ns = (!ns.is_empty()).then_some(ns);
    match (group, resource) {
        ("", "pods") => objs
            .get("", "pods", in_ns, name)
            .is_some_and(|p| str_at(&p, "/spec/nodeName") == node),
        ("", "secrets") => {
            objs.pods_on(node, in_ns)
                .iter()
                .any(|p| pod_secret_names(p).iter().any(|s| s == name))
                || node_volumes(objs, node)
                    .iter()
                    .any(|pv| pv_secret_refs(pv).iter().any(|(n, s)| n == ns && s == name))
        }
        ("", "configmaps") => {
            objs.pods_on(node, in_ns)
                .iter()
                .any(|p| pod_configmap_names(p).iter().any(|c| c == name))
                || objs.get("", "nodes", None, node).is_some_and(|n| {
                    str_at(&n, "/spec/configSource/configMap/namespace") == ns
                        && str_at(&n, "/spec/configSource/configMap/name") == name
                })
        }
        ("", "persistentvolumeclaims") => node_claims(objs, node)
            .iter()
            .any(|(n, c)| n == ns && c == name),
        ("", "persistentvolumes") => node_volumes(objs, node)
            .iter()
            .any(|pv| str_at(pv, "/metadata/name") == name),
        ("", "serviceaccounts") => objs.pods_on(node, in_ns).iter().any(|p| {
            let sa = str_at(p, "/spec/serviceAccountName");
            (if sa.is_empty() { "default" } else { sa }) == name
        }),
        ("resource.k8s.io", "resourceclaims") => objs.pods_on(node, in_ns).iter().any(|p| {
            items(p, "/status/resourceClaimStatuses")
                .any(|s| str_at(s, "/resourceClaimName") == name)
                || items(p, "/spec/resourceClaims").any(|s| str_at(s, "/resourceClaimName") == name)
        }),
        ("storage.k8s.io", "volumeattachments") => objs
            .get("storage.k8s.io", "volumeattachments", None, name)
            .is_some_and(|va| str_at(&va, "/spec/nodeName") == node),
        ("resource.k8s.io", "resourceslices") => objs
            .get("resource.k8s.io", "resourceslices", None, name)
            .is_some_and(|s| str_at(&s, "/spec/nodeName") == node),
        _ => false,
    }
}

/// The Node authorizer's decision for node `node`: `Ok` to allow, or the
/// reason it has no opinion (then nothing else allows it: a 403).
pub fn decide(
    objs: &dyn Objects,
    node: &str,
    a: &RequestAttrs,
    selectors: bool,
) -> Result<(), String> {
    let deny = |why: &str| Err(why.to_string());
    if node.is_empty() {
        return Err(format!("unknown node for user \"{NODE_USER_PREFIX}\""));
    }
    if !a.resource_request {
        // system:discovery and system:public-info-viewer, bound to every
        // authenticated user.
        let p = a.path.as_str();
        let public = [
            "/api", "/apis", "/openapi", "/version", "/healthz", "/livez", "/readyz",
        ]
        .iter()
        .any(|pre| p == *pre || p.strip_prefix(pre).is_some_and(|r| r.starts_with('/')));
        return if a.verb == "get" && public {
            Ok(())
        } else {
            deny("")
        };
    }
    let related_here = |a: &RequestAttrs| -> Result<(), String> {
        if a.name.is_empty() {
            return deny("No Object name found");
        }
        if related(objs, node, &a.group, &a.resource, &a.namespace, &a.name) {
            Ok(())
        } else {
            Err(format!(
                "no relationship found between node '{node}' and this object"
            ))
        }
    };
    let get_only = |a: &RequestAttrs| -> Result<(), String> {
        if a.verb != "get" {
            return deny("can only get individual resources of this type");
        }
        if !a.subresource.is_empty() {
            return deny("cannot get subresource");
        }
        related_here(a)
    };
    match (a.group.as_str(), a.resource.as_str()) {
        ("", "secrets") | ("", "configmaps") => {
            if !matches!(a.verb.as_str(), "get" | "list" | "watch") {
                return deny("can only read resources of this type");
            }
            if !a.subresource.is_empty() {
                return deny("cannot read subresource");
            }
            if a.namespace.is_empty() {
                return deny("can only read namespaced object of this type");
            }
            related_here(a)
        }
        ("", "persistentvolumeclaims") if a.subresource == "status" => {
            if !matches!(a.verb.as_str(), "update" | "patch") {
                return deny("can only get/update/patch this type");
            }
            related_here(a)
        }
        ("", "persistentvolumeclaims")
        | ("", "persistentvolumes")
        | ("resource.k8s.io", "resourceclaims")
        | ("storage.k8s.io", "volumeattachments") => get_only(a),
        ("", "serviceaccounts") => {
            if a.verb != "create" || a.name.is_empty() {
                return deny("can only create tokens for individual service accounts");
            }
            if a.subresource != "token" {
                return deny("can only create token subresource of serviceaccount");
            }
            related_here(a)
        }
        ("coordination.k8s.io", "leases") => {
            if !matches!(
                a.verb.as_str(),
                "get" | "create" | "update" | "patch" | "delete"
            ) {
                return deny("can only get, create, update, patch, or delete a node lease");
            }
            if a.namespace != NODE_LEASE_NAMESPACE {
                return Err(format!(
                    "can only access leases in the \"{NODE_LEASE_NAMESPACE}\" system namespace"
                ));
            }
            // The name of a create is checked at admission.
            if a.verb != "create" && a.name != node {
                return deny(
                    "can only access node lease with the same name as the requesting node",
                );
            }
            Ok(())
        }
        ("storage.k8s.io", "csinodes") => {
            if !matches!(
                a.verb.as_str(),
                "get" | "create" | "update" | "patch" | "delete"
            ) {
                return deny("can only get, create, update, patch, or delete a CSINode");
            }
            if !a.subresource.is_empty() {
                return deny("cannot authorize CSINode subresources");
            }
            if a.verb != "create" && a.name != node {
                return deny("can only access CSINode with the same name as the requesting node");
            }
            Ok(())
        }
        ("resource.k8s.io", "resourceslices") => {
            if !a.subresource.is_empty() {
                return deny("cannot authorize ResourceSlice subresources");
            }
            match a.verb.as_str() {
                "create" => Ok(()),
                "get" | "update" | "patch" | "delete" => related_here(a),
                "watch" | "list" | "deletecollection" => {
                    if !selectors || a.selects("nodeName", node) {
                        Ok(())
                    } else {
                        deny("can only list/watch/deletecollection resourceslices with nodeName field selector")
                    }
                }
                _ => deny("only the following verbs are allowed for a ResourceSlice: get, watch, list, create, update, patch, delete, deletecollection"),
            }
        }
        ("", "nodes") if selectors => match (a.subresource.as_str(), a.verb.as_str()) {
            ("", "create" | "update" | "patch") | ("status", "update" | "patch") => Ok(()),
            ("", "get" | "list" | "watch") => {
                if a.name == node {
                    Ok(())
                } else if a.name.is_empty() {
                    Err(format!(
                        "node '{node}' cannot read all nodes, only its own Node object"
                    ))
                } else {
                    Err(format!(
                        "node '{node}' cannot read '{}', only its own Node object",
                        a.name
                    ))
                }
            }
            _ => deny(""),
        },
        ("", "pods") if selectors => match (a.subresource.as_str(), a.verb.as_str()) {
            ("", "get") => get_only(a),
            ("", "list" | "watch") => {
                if a.selects("spec.nodeName", node) {
                    Ok(())
                } else if !a.name.is_empty() {
                    related_here(a)
                } else {
                    deny("can only list/watch pods with spec.nodeName field selector")
                }
            }
            ("", "create" | "delete") | ("status", "update" | "patch") | ("eviction", "create") => {
                Ok(())
            }
            _ => deny(""),
        },
        _ => {
            if rules_allow(a) {
                Ok(())
            } else {
                deny("")
            }
        }
    }
}

/// Upstream's 403 for a refused request (responsewriters.Forbidden):
/// `<resource> "<name>" is forbidden: User "<u>" cannot <verb> resource
/// "<resource/sub>" in API group "<g>" in the namespace "<ns>": <reason>`.
pub fn authorization_error(user: &str, a: &RequestAttrs, reason: &str) -> ApiError {
    let what = if !a.resource_request {
        format!("User \"{user}\" cannot {} path \"{}\"", a.verb, a.path)
    } else {
        let scope = if a.namespace.is_empty() {
            "at the cluster scope".to_string()
        } else {
            format!("in the namespace \"{}\"", a.namespace)
        };
        format!(
            "User \"{user}\" cannot {} resource \"{}\" in API group \"{}\" {scope}",
            a.verb,
            a.combined(),
            a.group
        )
    };
    let why = if reason.is_empty() {
        what
    } else {
        format!("{what}: {reason}")
    };
    if !a.resource_request || a.resource.is_empty() {
        return ApiError::forbidden(format!("forbidden: {why}"));
    }
    forbidden(&a.group, &a.resource, &a.name, &why)
}

/// Upstream `apierrors.NewForbidden(groupResource, name, err)`.
fn forbidden(group: &str, resource: &str, name: &str, why: &str) -> ApiError {
    let qualified = if group.is_empty() {
        resource.to_string()
    } else {
        format!("{resource}.{group}")
    };
    let message = if name.is_empty() {
        format!("{qualified} is forbidden: {why}")
    } else {
        format!("{qualified} \"{name}\" is forbidden: {why}")
    };
    let mut e = ApiError::forbidden(message);
    e.details.group = group.to_string();
    e.details.kind = resource.to_string();
    e.details.name = name.to_string();
    e
}

/// Authorizes a request of `user` (a no-op unless it is a node) and runs
/// the NodeRestriction checks that need only the stored objects: deletes
/// and evictions of pods, pod status writes, writes to other Nodes.
pub async fn authorize(api: &Api, user: &User, method: &Method, uri: &Uri) -> Result<(), ApiError> {
    let Some(node) = node_identity(user) else {
        return Ok(());
    };
    let a = request_attrs(method, uri.path(), uri.query());
    // Upstream authorizes system:masters before any other authorizer.
    let privileged = user.groups.iter().any(|g| g == "system:masters");
    let objs = CachedObjects::load(api).await?;
    if !privileged {
        decide(&objs, node, &a, AUTHORIZE_NODE_WITH_SELECTORS)
            .map_err(|why| authorization_error(&user.name, &a, &why))?;
    }
    restrict_by_path(&objs, node, &a)
}

/// NodeRestriction for requests whose target is named by the path.
pub fn restrict_by_path(objs: &dyn Objects, node: &str, a: &RequestAttrs) -> Result<(), ApiError> {
    if !a.resource_request {
        return Ok(());
    }
    let writes = matches!(a.verb.as_str(), "create" | "update" | "patch" | "delete");
    if !writes {
        return Ok(());
    }
    let refuse = |why: String| Err(forbidden(&a.group, &a.resource, &a.name, &why));
    if node.is_empty() {
        return refuse(format!(
            "could not determine node from user \"{NODE_USER_PREFIX}\""
        ));
    }
    let ns = (!a.namespace.is_empty()).then_some(a.namespace.as_str());
    match (a.group.as_str(), a.resource.as_str()) {
        ("", "nodes") if !a.name.is_empty() && a.name != node => refuse(format!(
            "node \"{node}\" is not allowed to modify node \"{}\"",
            a.name
        )),
        ("", "pods") => {
            let bound = |pod: &str| -> Option<bool> {
                objs.get("", "pods", ns, pod)
                    .map(|p| str_at(&p, "/spec/nodeName") == node)
            };
            match (a.subresource.as_str(), a.verb.as_str()) {
                ("", "delete") if bound(&a.name) == Some(false) => refuse(format!(
                    "node \"{node}\" can only delete pods with spec.nodeName set to itself"
                )),
                ("status", "update" | "patch") if bound(&a.name) == Some(false) => {
                    refuse(format!(
                    "node \"{node}\" can only update pod status for pods with spec.nodeName set to itself"
                ))
                }
                ("eviction", "create") if bound(&a.name) == Some(false) => refuse(format!(
                    "node {node} can only evict pods with spec.nodeName set to itself"
                )),
                ("" | "status" | "eviction", _) => Ok(()),
                (sub, _) => refuse(format!(
                    "unexpected pod subresource \"{sub}\", only 'status' and 'eviction' are allowed"
                )),
            }
        }
        ("", "persistentvolumeclaims") if a.subresource != "status" => {
            refuse("may only update PVC status".into())
        }
        _ => Ok(()),
    }
}

tokio::task_local! {
    /// The node a request being served comes from, for admission.
    static NODE: Option<String>;
}

/// Runs `f` (serving one request of `user`) with the user's node identity
/// known to [`admit_create`] and [`admit_update`].
pub async fn scope<F: Future>(user: Option<&User>, f: F) -> F::Output {
    let node = user.and_then(node_identity).map(String::from);
    NODE.scope(node, f).await
}

/// The node the current request comes from, if any.
pub fn current_node() -> Option<String> {
    NODE.try_with(|n| n.clone()).ok().flatten()
}

/// NodeRestriction for a create by the current request's node: Nodes and
/// Leases (and CSINodes) only under its own name, pods only as mirror pods
/// bound to itself that reference no other objects.
pub async fn admit_create(api: &Api, res: &Resource, obj: &Value) -> Result<(), ApiError> {
    let Some(node) = current_node() else {
        return Ok(());
    };
    let node_uid = if res.storage == ("".to_string(), "pods".to_string()) {
        let objs = CachedObjects::load(api).await?;
        objs.get("", "nodes", None, &node)
            .map(|n| str_at(&n, "/metadata/uid").to_string())
    } else {
        None
    };
    check_create(
        &node,
        &res.storage.0,
        &res.storage.1,
        obj,
        node_uid.as_deref(),
    )
}

/// [`admit_create`] on plain values; `node_uid` is the node's Node UID when
/// it exists (pods only).
pub fn check_create(
    node: &str,
    group: &str,
    resource: &str,
    obj: &Value,
    node_uid: Option<&str>,
) -> Result<(), ApiError> {
    let name = str_at(obj, "/metadata/name");
    let shown = if name.is_empty() {
        str_at(obj, "/metadata/generateName")
    } else {
        name
    };
    let shown = if shown.is_empty() { "Unknown" } else { shown };
    let refuse = |why: String| Err(forbidden(group, resource, shown, &why));
    if node.is_empty() {
        return refuse(format!(
            "could not determine node from user \"{NODE_USER_PREFIX}\""
        ));
    }
    match (group, resource) {
        ("", "nodes") => {
            if name != node {
                return refuse(format!(
                    "node \"{node}\" is not allowed to modify node \"{name}\""
                ));
            }
            if obj
                .pointer("/spec/configSource")
                .is_some_and(|c| !c.is_null())
            {
                return refuse(format!(
                    "node \"{node}\" is not allowed to create pods with a non-nil configSource"
                ));
            }
            let forbidden = forbidden_labels(&modified_labels(labels(obj), None));
            if !forbidden.is_empty() {
                return refuse(format!(
                    "node \"{node}\" is not allowed to set the following labels: {}",
                    forbidden.join(", ")
                ));
            }
            Ok(())
        }
        ("coordination.k8s.io", "leases") if name != node => {
            refuse("can only access node lease with the same name as the requesting node".into())
        }
        ("storage.k8s.io", "csinodes") if name != node => {
            refuse("can only access CSINode with the same name as the requesting node".into())
        }
        ("", "pods") => check_mirror_pod(node, obj, node_uid)
            .map_err(|why| forbidden(group, resource, shown, &why)),
        _ => Ok(()),
    }
}

/// Upstream's admitPodCreate.
fn check_mirror_pod(node: &str, pod: &Value, node_uid: Option<&str>) -> Result<(), String> {
    if pod
        .pointer("/metadata/annotations")
        .and_then(Value::as_object)
        .is_none_or(|a| !a.contains_key(MIRROR_POD_ANNOTATION))
    {
        return Err(format!(
            "pod does not have \"{MIRROR_POD_ANNOTATION}\" annotation, node \"{node}\" can only create mirror pods"
        ));
    }
    if str_at(pod, "/spec/nodeName") != node {
        return Err(format!(
            "node \"{node}\" can only create pods with spec.nodeName set to itself"
        ));
    }
    let owners: Vec<&Value> = items(pod, "/metadata/ownerReferences").collect();
    match owners.as_slice() {
        [] => {
            return Err(format!(
                "node \"{node}\" can only create pods with an owner reference set to itself"
            ))
        }
        [owner] => {
            if str_at(owner, "/apiVersion") != "v1"
                || str_at(owner, "/kind") != "Node"
                || str_at(owner, "/name") != node
            {
                return Err(format!(
                    "node \"{node}\" can only create pods with an owner reference set to itself"
                ));
            }
            if owner.get("controller").and_then(Value::as_bool) != Some(true) {
                return Err(format!(
                    "node \"{node}\" can only create pods with a controller owner reference set to itself"
                ));
            }
            if owner.get("blockOwnerDeletion").and_then(Value::as_bool) == Some(true) {
                return Err(format!(
                    "node \"{node}\" must not set blockOwnerDeletion on an owner reference"
                ));
            }
            let uid = str_at(owner, "/uid");
            match node_uid {
                None => return Err(format!("nodes \"{node}\" not found")),
                Some(want) if want != uid => {
                    return Err(format!(
                        "node {node} UID mismatch: expected {uid} got {want}"
                    ))
                }
                Some(_) => {}
            }
        }
        _ => {
            return Err(format!(
                "node \"{node}\" can only create pods with a single owner reference set to itself"
            ))
        }
    }
    if !str_at(pod, "/spec/serviceAccountName").is_empty() {
        return Err(format!(
            "node \"{node}\" can not create pods that reference a service account"
        ));
    }
    if !pod_secret_names(pod).is_empty() {
        return Err(format!(
            "node \"{node}\" can not create pods that reference secrets"
        ));
    }
    if !pod_configmap_names(pod).is_empty() {
        return Err(format!(
            "node \"{node}\" can not create pods that reference configmaps"
        ));
    }
    let volumes: Vec<&Value> = items(pod, "/spec/volumes").collect();
    if volumes
        .iter()
        .flat_map(|v| items(v, "/projected/sources"))
        .any(|s| s.get("clusterTrustBundle").is_some())
    {
        return Err(format!(
            "node \"{node}\" can not create pods that reference clustertrustbundles"
        ));
    }
    if volumes
        .iter()
        .any(|v| v.get("persistentVolumeClaim").is_some())
    {
        return Err(format!(
            "node \"{node}\" can not create pods that reference persistentvolumeclaims"
        ));
    }
    Ok(())
}

/// NodeRestriction for an update (PUT or PATCH, on the merged object) by
/// the current request's node: its Node's taints, restricted labels and
/// configSource stay; pod status writes keep the labels; PVC status
/// writes change only capacity and conditions. Meant for the admission
/// chain's validating phase, where `new` and the stored `old` are known.
pub fn admit_update(
    res: &Resource,
    subresource: &str,
    new: &Value,
    old: &Value,
) -> Result<(), ApiError> {
    let Some(node) = current_node() else {
        return Ok(());
    };
    check_update(&node, &res.storage.0, &res.storage.1, subresource, new, old)
}

/// [`admit_update`] on plain values.
pub fn check_update(
    node: &str,
    group: &str,
    resource: &str,
    subresource: &str,
    new: &Value,
    old: &Value,
) -> Result<(), ApiError> {
    let name = str_at(old, "/metadata/name");
    let refuse = |why: String| Err(forbidden(group, resource, name, &why));
    match (group, resource, subresource) {
        ("", "nodes", _) => {
            if name != node {
                return refuse(format!(
                    "node \"{node}\" is not allowed to modify node \"{name}\""
                ));
            }
            let source = new.pointer("/spec/configSource").filter(|c| !c.is_null());
            if source.is_some() && source != old.pointer("/spec/configSource") {
                return refuse(format!(
                    "node \"{node}\" is not allowed to update configSource to a new non-nil configSource"
                ));
            }
            let taints = |v: &Value| {
                v.pointer("/spec/taints")
                    .filter(|t| !t.is_null() && t.as_array().is_none_or(|a| !a.is_empty()))
                    .cloned()
            };
            if taints(new) != taints(old) {
                return refuse(format!("node \"{node}\" is not allowed to modify taints"));
            }
            let forbidden = forbidden_labels(&modified_labels(labels(new), labels(old)));
            if !forbidden.is_empty() {
                return refuse(format!(
                    "is not allowed to modify labels: {}",
                    forbidden.join(", ")
                ));
            }
            Ok(())
        }
        ("", "pods", "status") => {
            if str_at(old, "/spec/nodeName") != node {
                return refuse(format!(
                    "node \"{node}\" can only update pod status for pods with spec.nodeName set to itself"
                ));
            }
            let norm = |l: Option<&serde_json::Map<String, Value>>| l.cloned().unwrap_or_default();
            if norm(labels(new)) != norm(labels(old)) {
                return refuse(format!(
                    "node \"{node}\" cannot update labels through pod status"
                ));
            }
            Ok(())
        }
        ("", "persistentvolumeclaims", "status") => {
            let strip = |v: &Value| {
                let mut v = v.clone();
                if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
                    m.remove("resourceVersion");
                    m.remove("managedFields");
                }
                if let Some(s) = v.get_mut("status").and_then(Value::as_object_mut) {
                    for f in [
                        "capacity",
                        "conditions",
                        "allocatedResourceStatuses",
                        "allocatedResources",
                    ] {
                        s.remove(f);
                    }
                }
                v
            };
            if strip(new) != strip(old) {
                return refuse(format!(
                    "node \"{node}\" is not allowed to update fields other than status.capacity and status.conditions"
                ));
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

fn labels(v: &Value) -> Option<&serde_json::Map<String, Value>> {
    v.pointer("/metadata/labels").and_then(Value::as_object)
}

/// Label keys added, removed or changed between `new` and `old`.
fn modified_labels(
    new: Option<&serde_json::Map<String, Value>>,
    old: Option<&serde_json::Map<String, Value>>,
) -> Vec<String> {
    let empty = serde_json::Map::new();
    let (new, old) = (new.unwrap_or(&empty), old.unwrap_or(&empty));
    let mut keys: Vec<String> = new
        .iter()
        .filter(|(k, v)| old.get(*k) != Some(*v))
        .chain(old.iter().filter(|(k, v)| new.get(*k) != Some(*v)))
        .map(|(k, _)| k.clone())
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

/// Labels the kubelet itself sets (k8s.io/kubelet `IsKubeletLabel`).
fn is_kubelet_label(key: &str) -> bool {
    const LABELS: &[&str] = &[
        "kubernetes.io/hostname",
        "topology.kubernetes.io/zone",
        "topology.kubernetes.io/region",
        "failure-domain.beta.kubernetes.io/zone",
        "failure-domain.beta.kubernetes.io/region",
        "beta.kubernetes.io/instance-type",
        "node.kubernetes.io/instance-type",
        "beta.kubernetes.io/os",
        "beta.kubernetes.io/arch",
        "kubernetes.io/os",
        "kubernetes.io/arch",
    ];
    const NAMESPACES: &[&str] = &["kubelet.kubernetes.io", "node.kubernetes.io"];
    if LABELS.contains(&key) {
        return true;
    }
    let ns = label_namespace(key);
    NAMESPACES
        .iter()
        .any(|n| ns == *n || ns.strip_suffix(n).is_some_and(|p| p.ends_with('.')))
}

fn label_namespace(key: &str) -> &str {
    key.split_once('/').map(|(ns, _)| ns).unwrap_or("")
}

/// Of the modified keys, those a node may not set: node-restriction.kubernetes.io
/// labels, and kubernetes.io / k8s.io labels that are not the kubelet's.
fn forbidden_labels(modified: &[String]) -> Vec<String> {
    let in_domain = |ns: &str, d: &str| ns == d || ns.ends_with(&format!(".{d}"));
    modified
        .iter()
        .filter(|k| {
            let ns = label_namespace(k);
            in_domain(ns, "node-restriction.kubernetes.io")
                || ((in_domain(ns, "kubernetes.io") || in_domain(ns, "k8s.io"))
                    && !is_kubelet_label(k))
        })
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Pods (with their namespace in metadata) and other objects by
    /// (group, plural, namespace, name).
    #[derive(Default)]
    struct Fake {
        pods: Vec<Value>,
        others: Vec<(&'static str, &'static str, String, Value)>,
    }

    impl Objects for Fake {
        fn pods_on(&self, node: &str, ns: Option<&str>) -> Vec<Value> {
            self.pods
                .iter()
                .filter(|p| str_at(p, "/spec/nodeName") == node)
                .filter(|p| ns.is_none_or(|n| str_at(p, "/metadata/namespace") == n))
                .cloned()
                .collect()
        }
        fn get(&self, group: &str, plural: &str, ns: Option<&str>, name: &str) -> Option<Value> {
            if (group, plural) == ("", "pods") {
                return self
                    .pods
                    .iter()
                    .find(|p| {
                        str_at(p, "/metadata/name") == name
                            && str_at(p, "/metadata/namespace") == ns.unwrap_or("")
                    })
                    .cloned();
            }
            self.others
                .iter()
                .find(|(g, p, n, o)| {
                    *g == group
                        && *p == plural
                        && n == ns.unwrap_or("")
                        && str_at(o, "/metadata/name") == name
                })
                .map(|(_, _, _, o)| o.clone())
        }
    }

    fn pod(ns: &str, name: &str, node: &str, spec: Value) -> Value {
        let mut spec = spec;
        spec["nodeName"] = json!(node);
        json!({"metadata": {"namespace": ns, "name": name}, "spec": spec})
    }

    fn fake() -> Fake {
        Fake {
            pods: vec![
                pod(
                    "default",
                    "web",
                    "a",
                    json!({
                        "imagePullSecrets": [{"name": "pull"}],
                        "containers": [{"name": "c", "env": [
                            {"name": "X", "valueFrom": {"secretKeyRef": {"name": "env-secret", "key": "k"}}},
                            {"name": "Y", "valueFrom": {"configMapKeyRef": {"name": "env-cm", "key": "k"}}}
                        ]}],
                        "volumes": [
                            {"name": "v", "projected": {"sources": [{"secret": {"name": "proj"}}, {"configMap": {"name": "kube-root-ca.crt"}}]}},
                            {"name": "data", "persistentVolumeClaim": {"claimName": "data"}}
                        ]
                    }),
                ),
                pod(
                    "default",
                    "elsewhere",
                    "b",
                    json!({"containers": [{"name": "c", "envFrom": [{"secretRef": {"name": "b-only"}}]}]}),
                ),
            ],
            others: vec![
                (
                    "",
                    "persistentvolumeclaims",
                    "default".into(),
                    json!({"metadata": {"name": "data"}, "spec": {"volumeName": "pv1"}}),
                ),
                (
                    "",
                    "persistentvolumes",
                    String::new(),
                    json!({"metadata": {"name": "pv1"}, "spec": {
                        "claimRef": {"namespace": "default", "name": "data"},
                        "csi": {"driver": "d", "volumeHandle": "h", "nodePublishSecretRef": {"name": "csi-secret", "namespace": "storage"}}
                    }}),
                ),
            ],
        }
    }

    fn attrs(method: Method, path: &str, query: Option<&str>) -> RequestAttrs {
        request_attrs(&method, path, query)
    }

    fn allowed(f: &Fake, method: Method, path: &str, query: Option<&str>) -> Result<(), String> {
        decide(f, "a", &attrs(method, path, query), false)
    }

    #[test]
    fn request_info_as_upstream_parses_it() {
        let a = attrs(Method::GET, "/api/v1/namespaces/default/pods", None);
        assert_eq!(
            (a.verb.as_str(), a.resource.as_str(), a.namespace.as_str()),
            ("list", "pods", "default")
        );
        let a = attrs(
            Method::GET,
            "/api/v1/pods",
            Some("watch=true&fieldSelector=spec.nodeName%3Da"),
        );
        assert_eq!(a.verb, "watch");
        assert!(a.selects("spec.nodeName", "a"));
        let a = attrs(
            Method::GET,
            "/api/v1/watch/namespaces/x/secrets",
            Some("fieldSelector=metadata.name%3Ds"),
        );
        assert_eq!((a.verb.as_str(), a.name.as_str()), ("watch", "s"));
        let a = attrs(Method::PATCH, "/api/v1/nodes/n1/status", None);
        assert_eq!(
            (a.resource.as_str(), a.name.as_str(), a.subresource.as_str()),
            ("nodes", "n1", "status")
        );
        let a = attrs(Method::GET, "/api/v1/namespaces/kube-system", None);
        assert_eq!(
            (a.resource.as_str(), a.name.as_str(), a.namespace.as_str()),
            ("namespaces", "kube-system", "kube-system")
        );
        let a = attrs(Method::PUT, "/api/v1/namespaces/x/finalize", None);
        assert_eq!(
            (a.resource.as_str(), a.name.as_str(), a.subresource.as_str()),
            ("namespaces", "x", "finalize")
        );
        let a = attrs(
            Method::DELETE,
            "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases",
            None,
        );
        assert_eq!(
            (a.verb.as_str(), a.group.as_str()),
            ("deletecollection", "coordination.k8s.io")
        );
        let a = attrs(Method::GET, "/apis/apps/v1", None);
        assert!(!a.resource_request);
    }

    #[test]
    fn node_identity_needs_prefix_and_group() {
        let user = |name: &str, groups: &[&str]| User {
            name: name.into(),
            uid: String::new(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
        };
        assert_eq!(
            node_identity(&user("system:node:a", &["system:nodes"])),
            Some("a")
        );
        assert_eq!(
            node_identity(&user("system:node:a", &["system:authenticated"])),
            None
        );
        assert_eq!(node_identity(&user("alice", &["system:nodes"])), None);
        assert_eq!(
            node_identity(&user("system:node:", &["system:nodes"])),
            Some("")
        );
    }

    #[test]
    fn secrets_only_those_of_pods_bound_to_the_node() {
        let f = fake();
        for s in ["pull", "env-secret", "proj"] {
            assert_eq!(
                allowed(
                    &f,
                    Method::GET,
                    &format!("/api/v1/namespaces/default/secrets/{s}"),
                    None
                ),
                Ok(()),
                "{s}"
            );
        }
        assert_eq!(
            allowed(
                &f,
                Method::GET,
                "/api/v1/namespaces/default/secrets/b-only",
                None
            ),
            Err("no relationship found between node 'a' and this object".into())
        );
        // Through pod -> pvc -> pv -> secret.
        assert_eq!(
            allowed(
                &f,
                Method::GET,
                "/api/v1/namespaces/storage/secrets/csi-secret",
                None
            ),
            Ok(())
        );
        // One object by field selector is a read of it; the collection is not.
        assert_eq!(
            allowed(
                &f,
                Method::GET,
                "/api/v1/namespaces/default/secrets",
                Some("watch=1&fieldSelector=metadata.name%3Dpull")
            ),
            Ok(())
        );
        assert_eq!(
            allowed(&f, Method::GET, "/api/v1/namespaces/default/secrets", None),
            Err("No Object name found".into())
        );
        assert_eq!(
            allowed(&f, Method::GET, "/api/v1/secrets", None),
            Err("can only read namespaced object of this type".into())
        );
        assert_eq!(
            allowed(
                &f,
                Method::DELETE,
                "/api/v1/namespaces/default/secrets/pull",
                None
            ),
            Err("can only read resources of this type".into())
        );
        assert_eq!(
            allowed(
                &f,
                Method::GET,
                "/api/v1/namespaces/default/configmaps/kube-root-ca.crt",
                None
            ),
            Ok(())
        );
        assert_eq!(
            allowed(
                &f,
                Method::GET,
                "/api/v1/namespaces/default/configmaps/env-cm",
                None
            ),
            Ok(())
        );
        assert!(allowed(
            &f,
            Method::GET,
            "/api/v1/namespaces/default/configmaps/other",
            None
        )
        .is_err());
    }

    #[test]
    fn volumes_get_only_when_related() {
        let f = fake();
        assert_eq!(
            allowed(
                &f,
                Method::GET,
                "/api/v1/namespaces/default/persistentvolumeclaims/data",
                None
            ),
            Ok(())
        );
        assert_eq!(
            allowed(&f, Method::GET, "/api/v1/persistentvolumes/pv1", None),
            Ok(())
        );
        assert_eq!(
            allowed(&f, Method::GET, "/api/v1/persistentvolumes", None),
            Err("can only get individual resources of this type".into())
        );
        assert!(allowed(&f, Method::GET, "/api/v1/persistentvolumes/pv2", None).is_err());
        assert_eq!(
            allowed(
                &f,
                Method::PATCH,
                "/api/v1/namespaces/default/persistentvolumeclaims/data/status",
                None
            ),
            Ok(())
        );
    }

    #[test]
    fn leases_only_its_own_in_kube_node_lease() {
        let f = fake();
        let p = "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases";
        assert_eq!(allowed(&f, Method::POST, p, None), Ok(()));
        assert_eq!(allowed(&f, Method::PUT, &format!("{p}/a"), None), Ok(()));
        assert_eq!(
            allowed(&f, Method::PUT, &format!("{p}/b"), None),
            Err("can only access node lease with the same name as the requesting node".into())
        );
        assert_eq!(
            allowed(&f, Method::GET, p, None),
            Err("can only get, create, update, patch, or delete a node lease".into())
        );
        assert_eq!(
            allowed(
                &f,
                Method::GET,
                "/apis/coordination.k8s.io/v1/namespaces/default/leases/a",
                None
            ),
            Err("can only access leases in the \"kube-node-lease\" system namespace".into())
        );
    }

    #[test]
    fn static_rules_of_the_system_node_role() {
        let f = fake();
        for (m, p) in [
            (Method::GET, "/api/v1/nodes"),
            (Method::PATCH, "/api/v1/nodes/a/status"),
            (Method::POST, "/api/v1/namespaces/default/events"),
            (Method::GET, "/api/v1/services"),
            (Method::GET, "/api/v1/pods"),
            (Method::DELETE, "/api/v1/namespaces/default/pods/web"),
            (Method::PATCH, "/api/v1/namespaces/default/pods/web/status"),
            (Method::GET, "/apis/discovery.k8s.io/v1/endpointslices"),
            (Method::GET, "/api/v1/namespaces"),
            (Method::GET, "/apis"),
            (Method::GET, "/version"),
        ] {
            assert_eq!(allowed(&f, m.clone(), p, None), Ok(()), "{m} {p}");
        }
        for (m, p) in [
            (Method::PATCH, "/api/v1/namespaces/default/pods/web"),
            (Method::POST, "/apis/apps/v1/namespaces/default/deployments"),
            (Method::DELETE, "/api/v1/nodes/a"),
            (Method::GET, "/api/v1/namespaces/default/pods/web/log"),
            (Method::POST, "/api/v1/namespaces"),
            (Method::GET, "/metrics"),
        ] {
            assert_eq!(
                allowed(&f, m.clone(), p, None),
                Err(String::new()),
                "{m} {p}"
            );
        }
    }

    #[test]
    fn with_selectors_only_own_node_and_own_pods() {
        let f = fake();
        let sel = |m: Method, p: &str, q: Option<&str>| decide(&f, "a", &attrs(m, p, q), true);
        assert_eq!(sel(Method::GET, "/api/v1/nodes/a", None), Ok(()));
        assert_eq!(
            sel(Method::GET, "/api/v1/nodes", None),
            Err("node 'a' cannot read all nodes, only its own Node object".into())
        );
        assert_eq!(
            sel(Method::GET, "/api/v1/nodes/b", None),
            Err("node 'a' cannot read 'b', only its own Node object".into())
        );
        assert_eq!(
            sel(
                Method::GET,
                "/api/v1/nodes",
                Some("fieldSelector=metadata.name%3Da")
            ),
            Ok(())
        );
        assert_eq!(
            sel(
                Method::GET,
                "/api/v1/pods",
                Some("fieldSelector=spec.nodeName%3Da")
            ),
            Ok(())
        );
        assert_eq!(
            sel(Method::GET, "/api/v1/pods", None),
            Err("can only list/watch pods with spec.nodeName field selector".into())
        );
        assert_eq!(
            sel(Method::GET, "/api/v1/namespaces/default/pods/web", None),
            Ok(())
        );
        assert!(sel(
            Method::GET,
            "/api/v1/namespaces/default/pods/elsewhere",
            None
        )
        .is_err());
    }

    #[test]
    fn forbidden_messages_as_upstream_words_them() {
        let a = attrs(Method::GET, "/api/v1/namespaces/default/secrets/s", None);
        let e = authorization_error(
            "system:node:a",
            &a,
            "no relationship found between node 'a' and this object",
        );
        assert_eq!(e.code, 403);
        assert_eq!(
            e.message,
            "secrets \"s\" is forbidden: User \"system:node:a\" cannot get resource \"secrets\" in API group \"\" in the namespace \"default\": no relationship found between node 'a' and this object"
        );
        let a = attrs(Method::GET, "/apis/coordination.k8s.io/v1/leases", None);
        assert_eq!(
            authorization_error("system:node:a", &a, "").message,
            "leases.coordination.k8s.io is forbidden: User \"system:node:a\" cannot list resource \"leases\" in API group \"coordination.k8s.io\" at the cluster scope"
        );
        let a = attrs(Method::GET, "/metrics", None);
        assert_eq!(
            authorization_error("system:node:a", &a, "").message,
            "forbidden: User \"system:node:a\" cannot get path \"/metrics\""
        );
    }

    #[test]
    fn node_restriction_by_path() {
        let f = fake();
        let r = |m: Method, p: &str| restrict_by_path(&f, "a", &attrs(m, p, None));
        assert_eq!(
            r(Method::PATCH, "/api/v1/nodes/other/status")
                .unwrap_err()
                .message,
            "nodes \"other\" is forbidden: node \"a\" is not allowed to modify node \"other\""
        );
        assert!(r(Method::PATCH, "/api/v1/nodes/a/status").is_ok());
        assert_eq!(
            r(Method::DELETE, "/api/v1/namespaces/default/pods/elsewhere").unwrap_err().message,
            "pods \"elsewhere\" is forbidden: node \"a\" can only delete pods with spec.nodeName set to itself"
        );
        assert_eq!(
            r(Method::PATCH, "/api/v1/namespaces/default/pods/elsewhere/status").unwrap_err().message,
            "pods \"elsewhere\" is forbidden: node \"a\" can only update pod status for pods with spec.nodeName set to itself"
        );
        assert!(r(Method::PATCH, "/api/v1/namespaces/default/pods/web/status").is_ok());
        assert!(r(Method::DELETE, "/api/v1/namespaces/default/pods/web").is_ok());
        // A missing pod is the handler's 404.
        assert!(r(Method::DELETE, "/api/v1/namespaces/default/pods/gone").is_ok());
    }

    #[test]
    fn creates_only_own_node_lease_and_mirror_pods() {
        let node = json!({"metadata": {"name": "a", "labels": {"kubernetes.io/hostname": "a", "example.com/x": "1"}}});
        assert!(check_create("a", "", "nodes", &node, None).is_ok());
        let other = json!({"metadata": {"name": "b"}});
        assert_eq!(
            check_create("a", "", "nodes", &other, None)
                .unwrap_err()
                .message,
            "nodes \"b\" is forbidden: node \"a\" is not allowed to modify node \"b\""
        );
        let labelled = json!({"metadata": {"name": "a", "labels": {"node-restriction.kubernetes.io/pool": "x", "node-role.kubernetes.io/master": ""}}});
        assert_eq!(
            check_create("a", "", "nodes", &labelled, None).unwrap_err().message,
            "nodes \"a\" is forbidden: node \"a\" is not allowed to set the following labels: node-restriction.kubernetes.io/pool, node-role.kubernetes.io/master"
        );
        let lease = json!({"metadata": {"name": "b", "namespace": "kube-node-lease"}});
        assert_eq!(
            check_create("a", "coordination.k8s.io", "leases", &lease, None).unwrap_err().message,
            "leases.coordination.k8s.io \"b\" is forbidden: can only access node lease with the same name as the requesting node"
        );
        let plain = json!({"metadata": {"name": "p"}, "spec": {"nodeName": "a", "containers": []}});
        assert_eq!(
            check_create("a", "", "pods", &plain, Some("u1")).unwrap_err().message,
            "pods \"p\" is forbidden: pod does not have \"kubernetes.io/config.mirror\" annotation, node \"a\" can only create mirror pods"
        );
        let mirror = json!({"metadata": {"name": "p", "annotations": {"kubernetes.io/config.mirror": "h"},
            "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": "a", "uid": "u1", "controller": true}]},
            "spec": {"nodeName": "a", "containers": [{"name": "c"}]}});
        assert!(check_create("a", "", "pods", &mirror, Some("u1")).is_ok());
        assert!(check_create("a", "", "pods", &mirror, Some("u2")).is_err());
        let mut with_secret = mirror.clone();
        with_secret["spec"]["volumes"] = json!([{"name": "s", "secret": {"secretName": "x"}}]);
        assert_eq!(
            check_create("a", "", "pods", &with_secret, Some("u1"))
                .unwrap_err()
                .message,
            "pods \"p\" is forbidden: node \"a\" can not create pods that reference secrets"
        );
    }

    #[test]
    fn updates_keep_taints_and_restricted_labels() {
        let old = json!({"metadata": {"name": "a", "labels": {"kubernetes.io/hostname": "a"}},
            "spec": {"taints": [{"key": "k", "effect": "NoSchedule"}]}});
        let mut status_only = old.clone();
        status_only["status"] = json!({"phase": "Running"});
        assert!(check_update("a", "", "nodes", "status", &status_only, &old).is_ok());
        let mut untainted = old.clone();
        untainted["spec"]["taints"] = json!([]);
        assert_eq!(
            check_update("a", "", "nodes", "", &untainted, &old)
                .unwrap_err()
                .message,
            "nodes \"a\" is forbidden: node \"a\" is not allowed to modify taints"
        );
        let mut relabelled = old.clone();
        relabelled["metadata"]["labels"]["node-role.kubernetes.io/control-plane"] = json!("");
        relabelled["metadata"]["labels"]["topology.kubernetes.io/zone"] = json!("z");
        assert_eq!(
            check_update("a", "", "nodes", "", &relabelled, &old).unwrap_err().message,
            "nodes \"a\" is forbidden: is not allowed to modify labels: node-role.kubernetes.io/control-plane"
        );
        let pod_old =
            json!({"metadata": {"name": "p", "labels": {"app": "x"}}, "spec": {"nodeName": "a"}});
        let mut pod_new = pod_old.clone();
        pod_new["metadata"]["labels"]["app"] = json!("y");
        assert_eq!(
            check_update("a", "", "pods", "status", &pod_new, &pod_old)
                .unwrap_err()
                .message,
            "pods \"p\" is forbidden: node \"a\" cannot update labels through pod status"
        );
    }
}
