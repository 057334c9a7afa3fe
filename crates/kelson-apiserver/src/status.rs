//! API errors, answered as meta/v1 `Status` objects with upstream's codes,
//! reasons and messages (kubectl prints the message as users know it).

use serde_json::{json, Value};

/// One field-level cause of an `Invalid` error.
#[derive(Debug, Clone, PartialEq)]
pub struct Cause {
    pub reason: String,
    pub message: String,
    pub field: String,
}

/// An error the API answers with. Build it with the constructors, which
/// word messages the way upstream's apimachinery errors do.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    /// Boxed: errors travel through every `Result` in the server, and most
    /// carry no details.
    pub details: Box<Details>,
}

/// The `details` of a Status.
#[derive(Debug, Clone, Default)]
pub struct Details {
    pub group: String,
    pub kind: String,
    pub name: String,
    pub causes: Vec<Cause>,
    pub retry_after: Option<u64>,
}

fn qualified(group: &str, resource: &str) -> String {
    if group.is_empty() {
        resource.to_string()
    } else {
        format!("{resource}.{group}")
    }
}

impl ApiError {
    pub fn new(code: u16, reason: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            reason,
            message: message.into(),
            details: Box::default(),
        }
    }

    fn with_details(mut self, group: &str, kind: &str, name: &str) -> ApiError {
        self.details.group = group.to_string();
        self.details.kind = kind.to_string();
        self.details.name = name.to_string();
        self
    }

    pub fn not_found(group: &str, resource: &str, name: &str) -> ApiError {
        ApiError::new(
            404,
            "NotFound",
            format!("{} \"{name}\" not found", qualified(group, resource)),
        )
        .with_details(group, resource, name)
    }

    pub fn already_exists(group: &str, resource: &str, name: &str) -> ApiError {
        ApiError::new(
            409,
            "AlreadyExists",
            format!("{} \"{name}\" already exists", qualified(group, resource)),
        )
        .with_details(group, resource, name)
    }

    pub fn conflict(group: &str, resource: &str, name: &str, why: &str) -> ApiError {
        ApiError::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": {why}",
                qualified(group, resource)
            ),
        )
        .with_details(group, resource, name)
    }

    /// A server-side apply conflict: upstream's message, one cause per field.
    pub fn apply_conflict(message: String, causes: Vec<Cause>) -> ApiError {
        let mut e = ApiError::new(409, "Conflict", message);
        e.details.causes = causes;
        e
    }

    /// The optimistic-concurrency conflict, worded as upstream.
    pub fn stale(group: &str, resource: &str, name: &str) -> ApiError {
        ApiError::conflict(
            group,
            resource,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    pub fn invalid(group: &str, kind: &str, name: &str, causes: Vec<Cause>) -> ApiError {
        let list: Vec<String> = causes
            .iter()
            .map(|c| {
                if c.field.is_empty() {
                    c.message.clone()
                } else {
                    format!("{}: {}", c.field, c.message)
                }
            })
            .collect();
        let joined = if list.len() == 1 {
            list[0].clone()
        } else {
            format!("[{}]", list.join(", "))
        };
        let mut e = ApiError::new(
            422,
            "Invalid",
            format!("{} \"{name}\" is invalid: {joined}", qualified(group, kind)),
        )
        .with_details(group, kind, name);
        e.details.causes = causes;
        e
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(400, "BadRequest", message)
    }

    pub fn method_not_allowed(message: impl Into<String>) -> ApiError {
        ApiError::new(405, "MethodNotAllowed", message)
    }

    pub fn unauthorized() -> ApiError {
        ApiError::new(401, "Unauthorized", "Unauthorized")
    }

    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new(403, "Forbidden", message)
    }

    pub fn gone(message: impl Into<String>) -> ApiError {
        ApiError::new(410, "Expired", message)
    }

    pub fn too_large(message: impl Into<String>) -> ApiError {
        ApiError::new(413, "RequestEntityTooLarge", message)
    }

    pub fn unsupported_media(message: impl Into<String>) -> ApiError {
        ApiError::new(415, "UnsupportedMediaType", message)
    }

    pub fn not_acceptable(message: impl Into<String>) -> ApiError {
        ApiError::new(406, "NotAcceptable", message)
    }

    pub fn too_many_requests(retry_after: u64) -> ApiError {
        let mut e = ApiError::new(
            429,
            "TooManyRequests",
            "Too many requests, please try again later.",
        );
        e.details.retry_after = Some(retry_after);
        e
    }

    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(500, "InternalError", message)
    }

    pub fn unavailable(message: impl Into<String>) -> ApiError {
        ApiError::new(503, "ServiceUnavailable", message)
    }

    pub fn timeout(message: impl Into<String>) -> ApiError {
        ApiError::new(504, "Timeout", message)
    }

    /// The meta/v1 Status object for this error.
    pub fn to_status(&self) -> Value {
        let mut s = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        let det = &self.details;
        if !det.name.is_empty()
            || !det.kind.is_empty()
            || !det.causes.is_empty()
            || det.retry_after.is_some()
        {
            let mut d = serde_json::Map::new();
            if !det.name.is_empty() {
                d.insert("name".into(), json!(det.name));
            }
            if !det.group.is_empty() {
                d.insert("group".into(), json!(det.group));
            }
            if !det.kind.is_empty() {
                d.insert("kind".into(), json!(det.kind));
            }
            if !det.causes.is_empty() {
                let causes: Vec<Value> = det
                    .causes
                    .iter()
                    .map(|c| json!({"reason": c.reason, "message": c.message, "field": c.field}))
                    .collect();
                d.insert("causes".into(), Value::Array(causes));
            }
            if let Some(r) = det.retry_after {
                d.insert("retryAfterSeconds".into(), json!(r));
            }
            s["details"] = Value::Object(d);
        }
        if self.reason.is_empty() {
            if let Some(o) = s.as_object_mut() {
                o.remove("reason");
            }
        }
        s
    }
}

/// A success Status, as returned by some deletes.
pub fn success_status(group: &str, kind: &str, name: &str, uid: Option<&str>) -> Value {
    let mut details = json!({"name": name, "kind": kind});
    if !group.is_empty() {
        details["group"] = json!(group);
    }
    if let Some(uid) = uid {
        details["uid"] = json!(uid);
    }
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details})
}

impl From<kelson_store::Error> for ApiError {
    fn from(e: kelson_store::Error) -> ApiError {
        match e {
            kelson_store::Error::Compacted { requested, .. } => ApiError::gone(format!(
                "The resourceVersion for the provided list is too old. ({requested})"
            )),
            kelson_store::Error::ValueTooLarge { .. } => {
                ApiError::too_large("Request entity too large: limit is 3145728")
            }
            kelson_store::Error::FutureRevision { requested, current } => ApiError::timeout(
                format!("Too large resource version: {requested}, current: {current}"),
            ),
            other => ApiError::internal(other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_found_reads_like_upstream() {
        let s = ApiError::not_found("apps", "deployments", "web").to_status();
        assert_eq!(s["message"], "deployments.apps \"web\" not found");
        assert_eq!(s["code"], 404);
        assert_eq!(s["details"]["group"], "apps");
        let s = ApiError::not_found("", "pods", "p").to_status();
        assert_eq!(s["message"], "pods \"p\" not found");
    }

    #[test]
    fn invalid_lists_causes() {
        let e = ApiError::invalid(
            "",
            "ConfigMap",
            "Bad",
            vec![Cause {
                reason: "FieldValueInvalid".into(),
                message: "Invalid value: \"Bad\": lowercase".into(),
                field: "metadata.name".into(),
            }],
        );
        let s = e.to_status();
        assert_eq!(s["code"], 422);
        assert_eq!(
            s["message"],
            "ConfigMap \"Bad\" is invalid: metadata.name: Invalid value: \"Bad\": lowercase"
        );
        assert_eq!(s["details"]["causes"][0]["field"], "metadata.name");
    }
}
