//! Field ownership (`metadata.managedFields`): every write records which
//! manager set which fields, and server-side apply merges, detects
//! conflicts and forces through that record, as upstream's field manager
//! does around its REST handlers.

use kelson_apimachinery::managed::{
    self, BuiltinTypes, ManagedError, NoTypes, Request, SchemaTypes, TypeInfo,
};
use kelson_apimachinery::openapi as schemas;
use serde_json::Value;

use crate::meta::{self, meta_mut};
use crate::resources::Resource;
use crate::status::{ApiError, Cause};

/// The manager of a non-apply write: `fieldManager`, else the user agent's
/// first word (upstream's prefixFromUserAgent), else "unknown".
pub fn manager_name(field_manager: Option<&str>, headers: &http::HeaderMap) -> String {
    if let Some(m) = field_manager.filter(|m| !m.is_empty()) {
        return m.to_string();
    }
    headers
        .get(http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .and_then(|ua| ua.split('/').next())
        .filter(|p| !p.is_empty())
        .map(|p| p.chars().take(128).collect())
        .unwrap_or_else(|| "unknown".to_string())
}

/// Fields an endpoint's strategy resets, so nobody owns them through it
/// (upstream `GetResetFields`).
fn reset_fields(res: &Resource, sub: &str) -> &'static [&'static str] {
    match sub {
        "status" => &["spec", "metadata"],
        "" if res.has_status() || (res.group.is_empty() && res.plural == "namespaces") => {
            &["status"]
        }
        _ => &[],
    }
}

fn with_types<R>(res: &Resource, f: impl FnOnce(&dyn TypeInfo) -> R) -> R {
    if res.custom {
        return if res.schema.is_object() {
            f(&SchemaTypes {
                schema: &res.schema,
            })
        } else {
            f(&NoTypes)
        };
    }
    match schemas::definition_name(&res.group, &res.version, &res.kind) {
        Some(definition) => f(&BuiltinTypes { definition }),
        None => f(&NoTypes),
    }
}

/// Records `manager`'s ownership after a create (`old` None), update or
/// patch of `new`, both in the served version.
pub fn track_update(
    res: &Resource,
    sub: &str,
    old: Option<&Value>,
    new: &mut Value,
    manager: &str,
) {
    let now = meta::now();
    let api_version = res.api_version();
    let entries = with_types(res, |types| {
        managed::update(
            old,
            new,
            &Request {
                types,
                manager,
                api_version: &api_version,
                subresource: (!sub.is_empty()).then_some(sub),
                reset_fields: reset_fields(res, sub),
                now: &now,
            },
        )
    });
    set_managed_fields(new, entries);
}

/// Server-side apply of `config` by `manager` onto `live` (served version;
/// None when the object does not exist yet). Returns the merged object with
/// its managedFields; defaulting and validation follow at the caller.
pub fn apply(
    res: &Resource,
    sub: &str,
    live: Option<&Value>,
    config: &Value,
    manager: &str,
    force: bool,
) -> Result<Value, ApiError> {
    let now = meta::now();
    let api_version = res.api_version();
    let outcome = with_types(res, |types| {
        managed::apply(
            live,
            config,
            &Request {
                types,
                manager,
                api_version: &api_version,
                subresource: (!sub.is_empty()).then_some(sub),
                reset_fields: reset_fields(res, sub),
                now: &now,
            },
            force,
        )
    });
    match outcome {
        Ok(o) => {
            let mut object = o.object;
            set_managed_fields(&mut object, o.managed_fields);
            Ok(object)
        }
        Err(ManagedError::Conflicts(conflicts)) => {
            let message = ManagedError::Conflicts(conflicts.clone()).to_string();
            let causes = conflicts
                .iter()
                .map(|c| Cause {
                    reason: "FieldManagerConflict".into(),
                    message: c.cause_message(),
                    field: c.path.clone(),
                })
                .collect();
            Err(ApiError::apply_conflict(message, causes))
        }
        Err(e @ ManagedError::BadRequest(_)) => Err(ApiError::bad_request(e.to_string())),
        Err(e) => Err(ApiError::internal(e.to_string())),
    }
}

fn set_managed_fields(obj: &mut Value, entries: Vec<Value>) {
    let m = meta_mut(obj);
    if entries.is_empty() {
        m.remove("managedFields");
    } else {
        m.insert("managedFields".into(), Value::Array(entries));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manager_defaults_to_the_user_agent_prefix() {
        let mut h = http::HeaderMap::new();
        assert_eq!(manager_name(None, &h), "unknown");
        h.insert(
            http::header::USER_AGENT,
            "kubectl/v1.32.4 (linux/amd64) kubernetes/59526cd"
                .parse()
                .unwrap(),
        );
        assert_eq!(manager_name(None, &h), "kubectl");
        assert_eq!(manager_name(Some(""), &h), "kubectl");
        assert_eq!(manager_name(Some("kubectl-edit"), &h), "kubectl-edit");
    }
}
