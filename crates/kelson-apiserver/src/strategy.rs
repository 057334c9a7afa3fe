//! What differs per resource (upstream's per-type `strategy.go`): status
//! handling on create and update, defaulting, validation, graceful deletion
//! and the fields field selectors may use.

use serde_json::{json, Value};

use crate::meta::{self, meta_mut};
use crate::resources::Resource;
use crate::status::{ApiError, Cause};
use kelson_apimachinery::{defaults, fields, validation};

/// Default grace period of a pod without terminationGracePeriodSeconds.
const POD_GRACE_SECONDS: i64 = 30;

fn is(res: &Resource, group: &str, plural: &str) -> bool {
    res.storage.0 == group && res.storage.1 == plural
}

/// Fills defaults the way upstream's conversion and registry do.
pub fn apply_defaults(res: &Resource, obj: &mut Value) {
    if !res.custom {
        defaults::apply(&res.group, &res.version, &res.kind, obj);
    } else if let Some(schema) = &res.structural {
        // Upstream's order for custom resources: prune, then default.
        schema.prune(obj);
        schema.default(obj);
    }
}

/// Resets what a create may not set (status of most types) and fills what
/// the server owns.
pub fn prepare_create(res: &Resource, obj: &mut Value) {
    let Some(o) = obj.as_object_mut() else { return };
    match (res.storage.0.as_str(), res.storage.1.as_str()) {
        ("", "pods") => {
            let qos = defaults::pod_qos_class(o.get("spec").unwrap_or(&Value::Null));
            o.insert(
                "status".into(),
                json!({"phase": "Pending", "qosClass": qos}),
            );
        }
        ("", "namespaces") => {
            o.insert("spec".into(), json!({"finalizers": ["kubernetes"]}));
            o.insert("status".into(), json!({"phase": "Active"}));
        }
        ("", "services") => {
            o.insert("status".into(), json!({"loadBalancer": {}}));
        }
        ("", "persistentvolumeclaims") | ("", "persistentvolumes") => {
            o.insert("status".into(), json!({"phase": "Pending"}));
        }
        ("", "nodes") => {}
        ("apps", "daemonsets") => {
            o.insert("status".into(), json!({}));
            set_template_generation(obj, 1);
        }
        _ if res.has_status() => {
            if res.custom {
                o.remove("status");
            } else {
                o.insert("status".into(), json!({}));
            }
        }
        _ => {}
    }
}

/// The object an update of `sub` ("" for the main resource) stores, given
/// what the client sent and what is stored: the main resource keeps the
/// stored status, the status subresource changes only the status.
pub fn merge_update(res: &Resource, sub: &str, mut new: Value, old: &Value) -> Value {
    match sub {
        "status" => {
            let Some(old_obj) = old.as_object() else {
                return old.clone();
            };
            // What the status writer decides: the status, its own
            // managedFields entry (recorded against the old object), and
            // the resourceVersion, a precondition. Everything else stays as
            // stored; old's status and managedFields are not copied only to
            // be replaced.
            let status = new.as_object_mut().and_then(|o| o.remove("status"));
            let new_meta = new.get_mut("metadata").and_then(Value::as_object_mut);
            let (mut managed, mut rv) = match new_meta {
                Some(m) => (
                    m.remove("managedFields"),
                    m.remove("resourceVersion").filter(Value::is_string),
                ),
                None => (None, None),
            };
            let mut out = serde_json::Map::new();
            for (k, v) in old_obj {
                let v = match (k.as_str(), v) {
                    ("status", _) if status.is_some() => continue,
                    ("metadata", Value::Object(m)) => {
                        let mut meta = serde_json::Map::new();
                        for (mk, mv) in m {
                            let replaced = match mk.as_str() {
                                "managedFields" => managed.is_some(),
                                "resourceVersion" => true,
                                _ => false,
                            };
                            if !replaced {
                                meta.insert(mk.clone(), mv.clone());
                            }
                        }
                        if let Some(mf) = managed.take() {
                            meta.insert("managedFields".into(), mf);
                        }
                        if let Some(rv) = rv.take() {
                            meta.insert("resourceVersion".into(), rv);
                        }
                        Value::Object(meta)
                    }
                    _ => v.clone(),
                };
                out.insert(k.clone(), v);
            }
            if let Some(status) = status {
                out.insert("status".into(), status);
            }
            Value::Object(out)
        }
        _ => {
            if res.has_status() || is(res, "", "namespaces") {
                if let Some(o) = new.as_object_mut() {
                    match old.get("status") {
                        Some(s) => o.insert("status".into(), s.clone()),
                        None => o.remove("status"),
                    };
                }
            }
            if is(res, "", "namespaces") {
                if let (Some(o), Some(spec)) = (new.as_object_mut(), old.get("spec")) {
                    o.insert("spec".into(), spec.clone());
                }
            }
            if is(res, "apps", "daemonsets") {
                let generation = template_generation(old).unwrap_or(1);
                let changed = new.pointer("/spec/template") != old.pointer("/spec/template");
                set_template_generation(&mut new, generation + i64::from(changed));
            }
            new
        }
    }
}

/// Upstream's validation: metadata, then the type's own rules.
pub fn validate(res: &Resource, obj: &Value, old: Option<&Value>) -> Result<(), ApiError> {
    let mut causes: Vec<validation::Cause> = Vec::new();
    if !res.custom {
        // Built-in validation starts with metadata itself.
        causes.extend(validation::validate(
            &res.group,
            &res.version,
            &res.kind,
            obj,
            old,
        ));
    } else {
        let rule = validation::name_rule(&res.group, &res.kind);
        let meta = obj.get("metadata").unwrap_or(&Value::Null);
        causes.extend(validation::validate_meta(meta, res.namespaced, rule));
        if let Some(schema) = &res.structural {
            causes.extend(schema.validate(obj));
        }
    }
    if let Some(old) = old {
        if meta::name(old) != meta::name(obj) {
            causes.push(validation::Cause {
                reason: "FieldValueInvalid",
                message: format!("Invalid value: \"{}\": field is immutable", meta::name(obj)),
                field: "metadata.name".into(),
            });
        }
    }
    if causes.is_empty() {
        return Ok(());
    }
    let mut name = meta::name(obj).to_string();
    if name.is_empty() {
        name = meta::str_field(obj, "generateName")
            .unwrap_or("")
            .to_string();
    }
    Err(ApiError::invalid(
        &res.group,
        &res.kind,
        &name,
        causes
            .into_iter()
            .map(|c| Cause {
                reason: c.reason.to_string(),
                message: c.message,
                field: c.field,
            })
            .collect(),
    ))
}

/// Seconds a delete waits before the object goes: pods bound to a node get
/// their grace period (the kubelet finishes them); everything else goes at once.
pub fn grace_period(res: &Resource, obj: &Value, requested: Option<i64>) -> i64 {
    if !is(res, "", "pods") {
        return 0;
    }
    let bound = obj
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .is_some_and(|n| !n.is_empty());
    let phase = obj
        .pointer("/status/phase")
        .and_then(Value::as_str)
        .unwrap_or("");
    if !bound || phase == "Succeeded" || phase == "Failed" {
        return 0;
    }
    let g = requested.unwrap_or_else(|| {
        obj.pointer("/spec/terminationGracePeriodSeconds")
            .and_then(Value::as_i64)
            .unwrap_or(POD_GRACE_SECONDS)
    });
    // Upstream turns a requested 0 into 1 for bound pods unless forced, so the
    // kubelet still gets to kill them; a force delete comes as 0 with
    // propagation through gracePeriodSeconds=0 and is honoured as such.
    g.max(0)
}

/// Whether the object still waits for its grace period to be confirmed.
pub fn graceful_pending(res: &Resource, obj: &Value) -> bool {
    is(res, "", "pods")
        && meta::meta(obj)
            .and_then(|m| m.get("deletionGracePeriodSeconds"))
            .and_then(Value::as_i64)
            .is_some_and(|g| g > 0)
}

/// Whether deleting `obj` must wait for something besides metadata.finalizers:
/// a namespace stays Terminating until the namespace controller has emptied
/// it and cleared spec.finalizers through the finalize subresource.
pub fn delete_blocked(res: &Resource, obj: &Value) -> bool {
    is(res, "", "namespaces")
        && obj
            .pointer("/spec/finalizers")
            .and_then(Value::as_array)
            .is_some_and(|f| !f.is_empty())
}

/// Changes a pending delete makes besides deletionTimestamp.
pub fn prepare_delete(res: &Resource, obj: &mut Value) {
    if is(res, "", "namespaces") {
        if let Some(o) = obj.as_object_mut() {
            o.insert("status".into(), json!({"phase": "Terminating"}));
        }
    }
}

/// Field-selector values of an object (always metadata.name and
/// metadata.namespace, plus the type's own).
pub fn selectable_fields(group: &str, resource: &str, obj: &Value) -> Vec<(String, String)> {
    let mut out = vec![
        ("metadata.name".to_string(), meta::name(obj).to_string()),
        (
            "metadata.namespace".to_string(),
            meta::namespace(obj).to_string(),
        ),
    ];
    for f in fields::supported_fields(group, resource) {
        if f.starts_with("metadata.") {
            continue;
        }
        if let Some(v) = fields::field_value(group, resource, obj, f) {
            out.push((f.to_string(), v));
        }
    }
    out
}

/// A DaemonSet's template generation: an internal field upstream that
/// apps/v1 shows as this annotation (1 at create, +1 on each template change).
const DAEMONSET_TEMPLATE_GENERATION: &str = "deprecated.daemonset.template.generation";

fn template_generation(obj: &Value) -> Option<i64> {
    obj.pointer("/metadata/annotations")?
        .get(DAEMONSET_TEMPLATE_GENERATION)?
        .as_str()?
        .parse()
        .ok()
}

fn set_template_generation(obj: &mut Value, generation: i64) {
    let m = meta_mut(obj);
    let annotations = m.entry("annotations").or_insert_with(|| json!({}));
    if !annotations.is_object() {
        *annotations = json!({});
    }
    if let Some(a) = annotations.as_object_mut() {
        a.insert(
            DAEMONSET_TEMPLATE_GENERATION.into(),
            json!(generation.to_string()),
        );
    }
}
