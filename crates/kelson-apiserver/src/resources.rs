//! What the API serves: one [`Resource`] per group/version/resource, built
//! in (the table below) or from a CustomResourceDefinition.
//!
//! Several served versions may share one storage location (autoscaling v1 and
//! v2 HorizontalPodAutoscalers; core and events.k8s.io Events): `storage`
//! names it, and `storage_version` is the version objects are kept in.

use std::sync::Arc;

/// Verbs a resource supports, as discovery lists them.
pub const ALL_VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];
const NS_VERBS: &[&str] = &[
    "create", "delete", "get", "list", "patch", "update", "watch",
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subresource {
    pub name: String,
    /// Kind answered (and accepted) by the subresource, with its group/version.
    pub group: String,
    pub version: String,
    pub kind: String,
    pub verbs: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Resource {
    pub group: String,
    pub version: String,
    pub plural: String,
    pub singular: String,
    pub kind: String,
    pub list_kind: String,
    pub namespaced: bool,
    pub short_names: Vec<String>,
    pub categories: Vec<String>,
    pub verbs: Vec<String>,
    pub subresources: Vec<Subresource>,
    /// Group and resource of the storage this version reads and writes.
    pub storage: (String, String),
    /// The version objects are stored as (conversion happens on the way in and out).
    pub storage_version: String,
    /// metadata.generation is kept and bumped on spec changes.
    pub generation: bool,
    /// PUT of a missing object creates it (upstream's AllowCreateOnUpdate).
    pub create_on_update: bool,
    /// Served from a CustomResourceDefinition.
    pub custom: bool,
    /// For custom resources: the version's additionalPrinterColumns (JSON
    /// array) and openAPIV3Schema; `Null` when absent.
    pub printer_columns: serde_json::Value,
    pub schema: serde_json::Value,
    /// For custom resources with a schema: the parsed structural schema that
    /// prunes, defaults and validates their objects.
    pub structural: Option<std::sync::Arc<kelson_apimachinery::structural::Structural>>,
    /// For custom resources: the scale subresource's JSON paths
    /// (specReplicasPath, statusReplicasPath, labelSelectorPath).
    pub scale_paths: serde_json::Value,
}

impl Resource {
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The prefix under which objects of this storage live in the store.
    pub fn key_prefix(&self) -> String {
        storage_prefix(&self.storage.0, &self.storage.1)
    }

    pub fn key(&self, namespace: Option<&str>, name: &str) -> String {
        match namespace {
            Some(ns) if self.namespaced => format!("{}{ns}/{name}", self.key_prefix()),
            _ => format!("{}{name}", self.key_prefix()),
        }
    }

    pub fn has_subresource(&self, name: &str) -> bool {
        self.subresources.iter().any(|s| s.name == name)
    }

    pub fn has_status(&self) -> bool {
        self.has_subresource("status")
    }
}

/// `/registry/<group>/<resource>/`, with "core" for the legacy group.
pub fn storage_prefix(group: &str, resource: &str) -> String {
    let g = if group.is_empty() { "core" } else { group };
    format!("/registry/{g}/{resource}/")
}

struct Def {
    group: &'static str,
    version: &'static str,
    plural: &'static str,
    kind: &'static str,
    namespaced: bool,
    short: &'static [&'static str],
    categories: &'static [&'static str],
    subs: &'static [&'static str],
    generation: bool,
    create_on_update: bool,
}

// A table row; the arguments mirror the columns of upstream's discovery.
#[allow(clippy::too_many_arguments)]
const fn d(
    group: &'static str,
    version: &'static str,
    plural: &'static str,
    kind: &'static str,
    namespaced: bool,
    short: &'static [&'static str],
    categories: &'static [&'static str],
    subs: &'static [&'static str],
) -> Def {
    Def {
        group,
        version,
        plural,
        kind,
        namespaced,
        short,
        categories,
        subs,
        generation: false,
        create_on_update: false,
    }
}

const fn gen(mut def: Def) -> Def {
    def.generation = true;
    def
}

const fn upsert(mut def: Def) -> Def {
    def.create_on_update = true;
    def
}

const ALL: &[&str] = &["all"];
const NONE: &[&str] = &[];
const STATUS: &[&str] = &["status"];
const SCALE: &[&str] = &["scale", "status"];

/// Upstream 1.33's built-in resources that Kelson serves, with their scope,
/// short names, categories and subresources.
const BUILT_IN: &[Def] = &[
    d(
        "",
        "v1",
        "namespaces",
        "Namespace",
        false,
        &["ns"],
        NONE,
        &["finalize", "status"],
    ),
    d(
        "",
        "v1",
        "pods",
        "Pod",
        true,
        &["po"],
        ALL,
        &[
            "attach",
            "binding",
            "eviction",
            "exec",
            "log",
            "portforward",
            "status",
        ],
    ),
    d(
        "",
        "v1",
        "services",
        "Service",
        true,
        &["svc"],
        ALL,
        &["status"],
    ),
    upsert(d(
        "",
        "v1",
        "endpoints",
        "Endpoints",
        true,
        &["ep"],
        NONE,
        NONE,
    )),
    d(
        "",
        "v1",
        "configmaps",
        "ConfigMap",
        true,
        &["cm"],
        NONE,
        NONE,
    ),
    d("", "v1", "secrets", "Secret", true, NONE, NONE, NONE),
    upsert(d(
        "",
        "v1",
        "serviceaccounts",
        "ServiceAccount",
        true,
        &["sa"],
        NONE,
        NONE,
    )),
    d(
        "",
        "v1",
        "nodes",
        "Node",
        false,
        &["no"],
        NONE,
        &["proxy", "status"],
    ),
    upsert(d("", "v1", "events", "Event", true, &["ev"], NONE, NONE)),
    d(
        "",
        "v1",
        "persistentvolumes",
        "PersistentVolume",
        false,
        &["pv"],
        NONE,
        STATUS,
    ),
    d(
        "",
        "v1",
        "persistentvolumeclaims",
        "PersistentVolumeClaim",
        true,
        &["pvc"],
        NONE,
        STATUS,
    ),
    upsert(d(
        "",
        "v1",
        "limitranges",
        "LimitRange",
        true,
        &["limits"],
        NONE,
        NONE,
    )),
    d(
        "",
        "v1",
        "resourcequotas",
        "ResourceQuota",
        true,
        &["quota"],
        NONE,
        STATUS,
    ),
    gen(d(
        "",
        "v1",
        "replicationcontrollers",
        "ReplicationController",
        true,
        &["rc"],
        ALL,
        SCALE,
    )),
    d(
        "",
        "v1",
        "podtemplates",
        "PodTemplate",
        true,
        NONE,
        NONE,
        NONE,
    ),
    gen(d(
        "apps",
        "v1",
        "deployments",
        "Deployment",
        true,
        &["deploy"],
        ALL,
        SCALE,
    )),
    gen(d(
        "apps",
        "v1",
        "replicasets",
        "ReplicaSet",
        true,
        &["rs"],
        ALL,
        SCALE,
    )),
    gen(d(
        "apps",
        "v1",
        "statefulsets",
        "StatefulSet",
        true,
        &["sts"],
        ALL,
        SCALE,
    )),
    gen(d(
        "apps",
        "v1",
        "daemonsets",
        "DaemonSet",
        true,
        &["ds"],
        ALL,
        STATUS,
    )),
    d(
        "apps",
        "v1",
        "controllerrevisions",
        "ControllerRevision",
        true,
        NONE,
        NONE,
        NONE,
    ),
    gen(d("batch", "v1", "jobs", "Job", true, NONE, ALL, STATUS)),
    gen(d(
        "batch",
        "v1",
        "cronjobs",
        "CronJob",
        true,
        &["cj"],
        ALL,
        STATUS,
    )),
    d(
        "autoscaling",
        "v2",
        "horizontalpodautoscalers",
        "HorizontalPodAutoscaler",
        true,
        &["hpa"],
        ALL,
        STATUS,
    ),
    d(
        "autoscaling",
        "v1",
        "horizontalpodautoscalers",
        "HorizontalPodAutoscaler",
        true,
        &["hpa"],
        ALL,
        STATUS,
    ),
    upsert(d(
        "coordination.k8s.io",
        "v1",
        "leases",
        "Lease",
        true,
        NONE,
        NONE,
        NONE,
    )),
    d(
        "discovery.k8s.io",
        "v1",
        "endpointslices",
        "EndpointSlice",
        true,
        NONE,
        NONE,
        NONE,
    ),
    upsert(d(
        "events.k8s.io",
        "v1",
        "events",
        "Event",
        true,
        &["ev"],
        NONE,
        NONE,
    )),
    upsert(d(
        "rbac.authorization.k8s.io",
        "v1",
        "roles",
        "Role",
        true,
        NONE,
        NONE,
        NONE,
    )),
    upsert(d(
        "rbac.authorization.k8s.io",
        "v1",
        "rolebindings",
        "RoleBinding",
        true,
        NONE,
        NONE,
        NONE,
    )),
    upsert(d(
        "rbac.authorization.k8s.io",
        "v1",
        "clusterroles",
        "ClusterRole",
        false,
        NONE,
        NONE,
        NONE,
    )),
    upsert(d(
        "rbac.authorization.k8s.io",
        "v1",
        "clusterrolebindings",
        "ClusterRoleBinding",
        false,
        NONE,
        NONE,
        NONE,
    )),
    gen(d(
        "policy",
        "v1",
        "poddisruptionbudgets",
        "PodDisruptionBudget",
        true,
        &["pdb"],
        NONE,
        STATUS,
    )),
    gen(d(
        "networking.k8s.io",
        "v1",
        "ingresses",
        "Ingress",
        true,
        &["ing"],
        NONE,
        STATUS,
    )),
    d(
        "networking.k8s.io",
        "v1",
        "ingressclasses",
        "IngressClass",
        false,
        NONE,
        NONE,
        NONE,
    ),
    gen(d(
        "networking.k8s.io",
        "v1",
        "networkpolicies",
        "NetworkPolicy",
        true,
        &["netpol"],
        NONE,
        NONE,
    )),
    d(
        "storage.k8s.io",
        "v1",
        "storageclasses",
        "StorageClass",
        false,
        &["sc"],
        NONE,
        NONE,
    ),
    d(
        "scheduling.k8s.io",
        "v1",
        "priorityclasses",
        "PriorityClass",
        false,
        &["pc"],
        NONE,
        NONE,
    ),
    gen(d(
        "apiextensions.k8s.io",
        "v1",
        "customresourcedefinitions",
        "CustomResourceDefinition",
        false,
        &["crd", "crds"],
        &["api-extensions"],
        STATUS,
    )),
];

/// Verbs and answered kinds of the built-in subresources.
fn subresource(
    parent_group: &str,
    parent_version: &str,
    parent_kind: &str,
    name: &str,
) -> Subresource {
    let (group, version, kind, verbs): (&str, &str, &str, &[&str]) = match name {
        "status" => (
            parent_group,
            parent_version,
            parent_kind,
            &["get", "patch", "update"],
        ),
        "scale" => ("autoscaling", "v1", "Scale", &["get", "patch", "update"]),
        "binding" => ("", "v1", "Binding", &["create"]),
        "eviction" => ("policy", "v1", "Eviction", &["create"]),
        "log" => ("", "v1", "Pod", &["get"]),
        "exec" | "attach" | "portforward" => ("", "v1", "PodExecOptions", &["create", "get"]),
        "finalize" => ("", "v1", "Namespace", &["update"]),
        "proxy" => (
            "",
            "v1",
            "NodeProxyOptions",
            &["create", "delete", "get", "patch", "update"],
        ),
        _ => (parent_group, parent_version, parent_kind, &["get"]),
    };
    let kind = match name {
        "attach" => "PodAttachOptions",
        "portforward" => "PodPortForwardOptions",
        _ => kind,
    };
    Subresource {
        name: name.to_string(),
        group: group.to_string(),
        version: version.to_string(),
        kind: kind.to_string(),
        verbs: verbs.iter().map(|s| s.to_string()).collect(),
    }
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// Every built-in resource, in discovery order.
pub fn built_in() -> Vec<Arc<Resource>> {
    BUILT_IN
        .iter()
        .map(|def| {
            let storage = match (def.group, def.plural) {
                ("events.k8s.io", "events") => (String::new(), "events".to_string()),
                _ => (def.group.to_string(), def.plural.to_string()),
            };
            let storage_version = match (def.group, def.plural) {
                ("autoscaling", "horizontalpodautoscalers") => "v2",
                _ => def.version,
            };
            let verbs = if def.plural == "namespaces" {
                NS_VERBS
            } else {
                ALL_VERBS
            };
            Arc::new(Resource {
                group: def.group.to_string(),
                version: def.version.to_string(),
                plural: def.plural.to_string(),
                singular: def.kind.to_lowercase(),
                kind: def.kind.to_string(),
                list_kind: format!("{}List", def.kind),
                namespaced: def.namespaced,
                short_names: strings(def.short),
                categories: strings(def.categories),
                verbs: strings(verbs),
                subresources: def
                    .subs
                    .iter()
                    .map(|s| subresource(def.group, def.version, def.kind, s))
                    .collect(),
                storage,
                storage_version: storage_version.to_string(),
                generation: def.generation,
                create_on_update: def.create_on_update,
                custom: false,
                structural: None,
                printer_columns: serde_json::Value::Null,
                schema: serde_json::Value::Null,
                scale_paths: serde_json::Value::Null,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_consistent() {
        let all = built_in();
        let mut seen = std::collections::HashSet::new();
        for r in &all {
            assert!(
                seen.insert((r.group.clone(), r.version.clone(), r.plural.clone())),
                "{} twice",
                r.plural
            );
            assert!(r.plural.ends_with('s'), "{}", r.plural);
        }
        let pods = all.iter().find(|r| r.plural == "pods").unwrap();
        assert_eq!(
            pods.key(Some("default"), "web"),
            "/registry/core/pods/default/web"
        );
        let ev = all.iter().find(|r| r.group == "events.k8s.io").unwrap();
        assert_eq!(ev.key_prefix(), "/registry/core/events/");
    }
}
