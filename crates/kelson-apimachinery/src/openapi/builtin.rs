//! The built-in kinds Kelson serves and how their schemas are produced from
//! k8s-openapi's `schemars` impls.

use k8s_openapi::api::{
    apps, autoscaling, batch, coordination, core, discovery, events, networking, policy, rbac,
    scheduling, storage,
};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions;
use k8s_openapi::apimachinery::pkg::apis::meta;
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use schemars::{generate::SchemaSettings, SchemaGenerator};
use serde_json::{Map, Value};

/// One schema root known to k8s-openapi.
pub(crate) struct BuiltIn {
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    pub def: &'static str,
    /// Whether a `<Kind>List` definition exists upstream.
    pub has_list: bool,
    /// Registers the type (and everything it references) with a generator.
    pub add: fn(&mut SchemaGenerator),
}

macro_rules! builtins {
    ($( ($g:literal, $v:literal, $k:literal, $def:literal, $list:literal, $ty:ty) ),* $(,)?) => {
        pub(crate) static BUILTINS: &[BuiltIn] = &[
            $( BuiltIn {
                group: $g, version: $v, kind: $k, def: $def, has_list: $list,
                add: |g: &mut SchemaGenerator| { let _ = g.subschema_for::<$ty>(); },
            }, )*
        ];
    };
}

builtins![
    ("", "v1", "Namespace", "io.k8s.api.core.v1.Namespace", true, core::v1::Namespace),
    ("", "v1", "Pod", "io.k8s.api.core.v1.Pod", true, core::v1::Pod),
    ("", "v1", "Service", "io.k8s.api.core.v1.Service", true, core::v1::Service),
    ("", "v1", "Endpoints", "io.k8s.api.core.v1.Endpoints", true, core::v1::Endpoints),
    ("", "v1", "ConfigMap", "io.k8s.api.core.v1.ConfigMap", true, core::v1::ConfigMap),
    ("", "v1", "Secret", "io.k8s.api.core.v1.Secret", true, core::v1::Secret),
    ("", "v1", "ServiceAccount", "io.k8s.api.core.v1.ServiceAccount", true, core::v1::ServiceAccount),
    ("", "v1", "Node", "io.k8s.api.core.v1.Node", true, core::v1::Node),
    ("", "v1", "Event", "io.k8s.api.core.v1.Event", true, core::v1::Event),
    ("", "v1", "PersistentVolume", "io.k8s.api.core.v1.PersistentVolume", true, core::v1::PersistentVolume),
    ("", "v1", "PersistentVolumeClaim", "io.k8s.api.core.v1.PersistentVolumeClaim", true, core::v1::PersistentVolumeClaim),
    ("", "v1", "LimitRange", "io.k8s.api.core.v1.LimitRange", true, core::v1::LimitRange),
    ("", "v1", "ResourceQuota", "io.k8s.api.core.v1.ResourceQuota", true, core::v1::ResourceQuota),
    ("", "v1", "ReplicationController", "io.k8s.api.core.v1.ReplicationController", true, core::v1::ReplicationController),
    ("", "v1", "PodTemplate", "io.k8s.api.core.v1.PodTemplate", true, core::v1::PodTemplate),
    ("", "v1", "Binding", "io.k8s.api.core.v1.Binding", false, core::v1::Binding),
    ("policy", "v1", "Eviction", "io.k8s.api.policy.v1.Eviction", false, policy::v1::Eviction),
    ("policy", "v1", "PodDisruptionBudget", "io.k8s.api.policy.v1.PodDisruptionBudget", true, policy::v1::PodDisruptionBudget),
    ("apps", "v1", "Deployment", "io.k8s.api.apps.v1.Deployment", true, apps::v1::Deployment),
    ("apps", "v1", "ReplicaSet", "io.k8s.api.apps.v1.ReplicaSet", true, apps::v1::ReplicaSet),
    ("apps", "v1", "StatefulSet", "io.k8s.api.apps.v1.StatefulSet", true, apps::v1::StatefulSet),
    ("apps", "v1", "DaemonSet", "io.k8s.api.apps.v1.DaemonSet", true, apps::v1::DaemonSet),
    ("apps", "v1", "ControllerRevision", "io.k8s.api.apps.v1.ControllerRevision", true, apps::v1::ControllerRevision),
    ("batch", "v1", "Job", "io.k8s.api.batch.v1.Job", true, batch::v1::Job),
    ("batch", "v1", "CronJob", "io.k8s.api.batch.v1.CronJob", true, batch::v1::CronJob),
    ("autoscaling", "v1", "HorizontalPodAutoscaler", "io.k8s.api.autoscaling.v1.HorizontalPodAutoscaler", true, autoscaling::v1::HorizontalPodAutoscaler),
    ("autoscaling", "v2", "HorizontalPodAutoscaler", "io.k8s.api.autoscaling.v2.HorizontalPodAutoscaler", true, autoscaling::v2::HorizontalPodAutoscaler),
    ("autoscaling", "v1", "Scale", "io.k8s.api.autoscaling.v1.Scale", false, autoscaling::v1::Scale),
    ("coordination.k8s.io", "v1", "Lease", "io.k8s.api.coordination.v1.Lease", true, coordination::v1::Lease),
    ("discovery.k8s.io", "v1", "EndpointSlice", "io.k8s.api.discovery.v1.EndpointSlice", true, discovery::v1::EndpointSlice),
    ("events.k8s.io", "v1", "Event", "io.k8s.api.events.v1.Event", true, events::v1::Event),
    ("rbac.authorization.k8s.io", "v1", "Role", "io.k8s.api.rbac.v1.Role", true, rbac::v1::Role),
    ("rbac.authorization.k8s.io", "v1", "RoleBinding", "io.k8s.api.rbac.v1.RoleBinding", true, rbac::v1::RoleBinding),
    ("rbac.authorization.k8s.io", "v1", "ClusterRole", "io.k8s.api.rbac.v1.ClusterRole", true, rbac::v1::ClusterRole),
    ("rbac.authorization.k8s.io", "v1", "ClusterRoleBinding", "io.k8s.api.rbac.v1.ClusterRoleBinding", true, rbac::v1::ClusterRoleBinding),
    ("networking.k8s.io", "v1", "Ingress", "io.k8s.api.networking.v1.Ingress", true, networking::v1::Ingress),
    ("networking.k8s.io", "v1", "IngressClass", "io.k8s.api.networking.v1.IngressClass", true, networking::v1::IngressClass),
    ("networking.k8s.io", "v1", "NetworkPolicy", "io.k8s.api.networking.v1.NetworkPolicy", true, networking::v1::NetworkPolicy),
    ("storage.k8s.io", "v1", "StorageClass", "io.k8s.api.storage.v1.StorageClass", true, storage::v1::StorageClass),
    ("scheduling.k8s.io", "v1", "PriorityClass", "io.k8s.api.scheduling.v1.PriorityClass", true, scheduling::v1::PriorityClass),
    ("apiextensions.k8s.io", "v1", "CustomResourceDefinition", "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.CustomResourceDefinition", true, apiextensions::v1::CustomResourceDefinition),
    // Meta types: served by every group-version, GVKs filled in per document.
    ("", "v1", "Status", "io.k8s.apimachinery.pkg.apis.meta.v1.Status", false, meta::v1::Status),
    ("", "v1", "DeleteOptions", "io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions", false, meta::v1::DeleteOptions),
    ("", "v1", "WatchEvent", "io.k8s.apimachinery.pkg.apis.meta.v1.WatchEvent", false, meta::v1::WatchEvent<RawExtension>),
    ("", "v1", "APIResourceList", "io.k8s.apimachinery.pkg.apis.meta.v1.APIResourceList", false, meta::v1::APIResourceList),
    ("", "v1", "APIGroup", "io.k8s.apimachinery.pkg.apis.meta.v1.APIGroup", false, meta::v1::APIGroup),
    ("", "v1", "APIGroupList", "io.k8s.apimachinery.pkg.apis.meta.v1.APIGroupList", false, meta::v1::APIGroupList),
    ("", "v1", "APIVersions", "io.k8s.apimachinery.pkg.apis.meta.v1.APIVersions", false, meta::v1::APIVersions),
    ("", "", "", "io.k8s.apimachinery.pkg.apis.meta.v1.Patch", false, meta::v1::Patch),
    ("", "", "", "io.k8s.apimachinery.pkg.version.Info", false, k8s_openapi::apimachinery::pkg::version::Info),
    // Referenced by every custom resource's wrapper schema.
    ("", "", "", "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta", false, meta::v1::ObjectMeta),
];

pub(crate) const OBJECT_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta";
pub(crate) const LIST_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ListMeta";
pub(crate) const STATUS: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Status";
pub(crate) const DELETE_OPTIONS: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions";
pub(crate) const WATCH_EVENT: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.WatchEvent";
pub(crate) const PATCH: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Patch";
pub(crate) const API_RESOURCE_LIST: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.APIResourceList";
pub(crate) const API_GROUP: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.APIGroup";
pub(crate) const API_GROUP_LIST: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.APIGroupList";
pub(crate) const API_VERSIONS: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.APIVersions";
pub(crate) const VERSION_INFO: &str = "io.k8s.apimachinery.pkg.version.Info";
pub(crate) const SCALE: &str = "io.k8s.api.autoscaling.v1.Scale";
pub(crate) const EVICTION: &str = "io.k8s.api.policy.v1.Eviction";
pub(crate) const BINDING: &str = "io.k8s.api.core.v1.Binding";
const INT_OR_STRING: &str = "io.k8s.apimachinery.pkg.util.intstr.IntOrString";
const QUANTITY: &str = "io.k8s.apimachinery.pkg.api.resource.Quantity";

/// Where definitions live in a document; refs are produced with the v2 prefix
/// and rewritten for v3 afterwards.
pub(crate) const V2_PREFIX: &str = "#/definitions/";
pub(crate) const V3_PREFIX: &str = "#/components/schemas/";

pub(crate) fn lookup(group: &str, version: &str, kind: &str) -> Option<&'static BuiltIn> {
    BUILTINS
        .iter()
        .find(|b| !b.kind.is_empty() && b.group == group && b.version == version && b.kind == kind)
}

pub(crate) fn by_def(def: &str) -> Option<&'static BuiltIn> {
    BUILTINS.iter().find(|b| b.def == def)
}

/// Generates the definitions of `roots` and everything they reference, in the
/// raw k8s-openapi shape with `#/definitions/` refs.
pub(crate) fn generate(roots: &[&BuiltIn]) -> Map<String, Value> {
    // No transforms: we want k8s-openapi's shapes ($ref with sibling
    // description, as upstream publishes them), not draft-07 rewrites.
    let mut gen = SchemaSettings::draft07()
        .with(|s| {
            s.definitions_path = "/definitions".into();
            s.meta_schema = None;
            s.transforms.clear();
        })
        .into_generator();
    for root in roots {
        (root.add)(&mut gen);
    }
    gen.take_definitions(false)
}

/// Upstream-shaped replacements for the few definitions whose wire format is
/// not a plain object (k8s-openapi marks them with `x-kubernetes-int-or-string`).
pub(crate) fn adjust_special(name: &str, schema: &mut Value, v3: bool) {
    let description = schema.get("description").cloned();
    let mut out = Map::new();
    if let Some(d) = description {
        out.insert("description".into(), d);
    }
    match name {
        INT_OR_STRING => {
            out.insert("format".into(), "int-or-string".into());
            if v3 {
                out.insert(
                    "oneOf".into(),
                    serde_json::json!([{"type": "integer"}, {"type": "string"}]),
                );
            } else {
                out.insert("type".into(), "string".into());
            }
        }
        QUANTITY => {
            if v3 {
                out.insert(
                    "oneOf".into(),
                    serde_json::json!([{"type": "string"}, {"type": "number"}]),
                );
            } else {
                out.insert("type".into(), "string".into());
            }
        }
        _ => return,
    }
    *schema = Value::Object(out);
}

/// Kubernetes objects never require `metadata` upstream; k8s-openapi lists it
/// because its Rust field is not optional.
pub(crate) fn drop_metadata_required(schema: &mut Value) {
    let is_meta_ref = schema
        .pointer("/properties/metadata/$ref")
        .and_then(Value::as_str)
        .is_some_and(|r| r.ends_with(OBJECT_META) || r.ends_with(LIST_META));
    if !is_meta_ref {
        return;
    }
    let Some(obj) = schema.as_object_mut() else {
        return;
    };
    let empty = match obj.get_mut("required").and_then(Value::as_array_mut) {
        Some(req) => {
            req.retain(|v| v != "metadata");
            req.is_empty()
        }
        None => false,
    };
    if empty {
        obj.remove("required");
    }
}
