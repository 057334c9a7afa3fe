//! The admission chain (upstream's k8s.io/apiserver/pkg/admission with the
//! default plugins of kube-apiserver 1.33 that matter here).
//!
//! The registry runs it for requests from clients: the mutating phase after
//! defaulting and before the strategy's prepare and validation, the
//! validating phase after validation and before storage. Updates and
//! patches run both inside the optimistic-concurrency retry loop, on the
//! merged object, with the stored object as `old`. Writes the server makes
//! itself (bootstrap, CRD status) carry no [`Admission`] and skip the chain.
//!
//! Plugins, in upstream's order: LimitRanger, ServiceAccount, Priority,
//! DefaultTolerationSeconds (mutating); LimitRanger, Priority, ResourceQuota
//! (validating). NamespaceLifecycle stays `Registry::check_namespace`,
//! called by the handlers before decoding work starts.

mod limitranger;
mod pods;
mod priority;
mod resourcequota;

use std::sync::Arc;

use futures::future::BoxFuture;
use serde_json::Value;

use crate::handler::Api;
use crate::resources::Resource;
use crate::status::{ApiError, Cause};

/// The built-in PriorityClasses bootstrap creates.
pub fn system_priority_classes() -> Vec<Value> {
    priority::system_class_objects()
}

/// The verbs admission sees (deletes and connects are not admitted here:
/// none of the plugins acts on them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Create,
    Update,
}

impl Operation {
    fn as_str(self) -> &'static str {
        match self {
            Operation::Create => "CREATE",
            Operation::Update => "UPDATE",
        }
    }
}

/// What a plugin knows about the request (upstream `admission.Attributes`).
#[derive(Clone, Copy)]
pub struct Attributes<'a> {
    pub res: &'a Resource,
    /// "" for the main resource, else e.g. "status" or "scale".
    pub subresource: &'a str,
    pub operation: Operation,
    pub namespace: Option<&'a str>,
    /// The stored object on updates.
    pub old: Option<&'a Value>,
    pub dry_run: bool,
}

impl Attributes<'_> {
    /// The storage group and plural: plugins act on kinds, not versions.
    fn is(&self, group: &str, plural: &str) -> bool {
        self.res.storage.0 == group && self.res.storage.1 == plural
    }
}

/// Why a plugin refused; the chain turns it into upstream's Status.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Denial {
    /// 403 `<resource> "<name>" is forbidden: <reason>`.
    #[error("{0}")]
    Forbidden(String),
    /// 422, for the checks upstream makes in validation proper.
    #[error("invalid: {0:?}")]
    Invalid(Vec<Cause>),
    /// A lookup the plugin needs failed.
    #[error("{0}")]
    Internal(String),
}

/// The chain for one client request; carried in `WriteOptions`.
#[derive(Clone)]
pub struct Admission {
    api: Arc<Api>,
    subresource: String,
}

impl std::fmt::Debug for Admission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admission")
            .field("subresource", &self.subresource)
            .finish()
    }
}

impl Admission {
    /// The chain for a request on `subresource` ("" for the resource).
    pub fn new(api: &Arc<Api>, subresource: &str) -> Admission {
        Admission {
            api: api.clone(),
            subresource: subresource.to_string(),
        }
    }

    pub fn subresource(&self) -> &str {
        &self.subresource
    }

    /// The attributes of a write of `res` in `namespace`.
    pub fn attributes<'a>(
        &'a self,
        res: &'a Resource,
        operation: Operation,
        namespace: Option<&'a str>,
        old: Option<&'a Value>,
        dry_run: bool,
    ) -> Attributes<'a> {
        Attributes {
            res,
            subresource: &self.subresource,
            operation,
            namespace,
            old,
            dry_run,
        }
    }

    /// The mutating phase: may change `obj`. Boxed (and so `Send` by
    /// declaration) because the quota plugin writes through the registry,
    /// which runs admission: the futures would otherwise contain each other.
    pub fn mutate<'a>(
        &'a self,
        a: &'a Attributes<'a>,
        obj: &'a mut Value,
    ) -> BoxFuture<'a, Result<(), ApiError>> {
        Box::pin(async move {
            let r = async {
                limitranger::mutate(&self.api, a, obj).await?;
                pods::service_account(a, obj);
                priority::mutate(&self.api, a, obj).await?;
                pods::default_toleration_seconds(a, obj);
                Ok::<(), Denial>(())
            }
            .await;
            r.map_err(|d| to_api_error(a, obj, d))
        })
    }

    /// The validating phase: may only refuse (and, for ResourceQuota,
    /// charge the quota unless this is a dry run).
    pub fn validate<'a>(
        &'a self,
        a: &'a Attributes<'a>,
        obj: &'a Value,
    ) -> BoxFuture<'a, Result<(), ApiError>> {
        Box::pin(async move {
            // NodeRestriction: what a node may change in objects it updates.
            if let (Operation::Update, Some(old)) = (a.operation, a.old) {
                crate::nodeauth::admit_update(a.res, a.subresource, obj, old)?;
            }
            let r = async {
                limitranger::validate(&self.api, a, obj).await?;
                priority::validate(&self.api, a, obj).await?;
                resourcequota::validate(&self.api, a, obj).await?;
                Ok::<(), Denial>(())
            }
            .await;
            r.map_err(|d| to_api_error(a, obj, d))
        })
    }
}

/// Upstream `admission.NewForbidden`: names the resource (and subresource)
/// and the object, falling back to generateName.
fn to_api_error(a: &Attributes<'_>, obj: &Value, d: Denial) -> ApiError {
    let name = crate::meta::name(obj);
    let name = if name.is_empty() {
        crate::meta::str_field(obj, "generateName").unwrap_or("")
    } else {
        name
    };
    match d {
        Denial::Forbidden(why) => {
            let mut resource = a.res.plural.clone();
            if !a.subresource.is_empty() {
                resource = format!("{resource}/{}", a.subresource);
            }
            let qualified = if a.res.group.is_empty() {
                resource.clone()
            } else {
                format!("{resource}.{}", a.res.group)
            };
            let message = if name.is_empty() {
                format!("{qualified} is forbidden: {why}")
            } else {
                format!("{qualified} \"{name}\" is forbidden: {why}")
            };
            let mut e = ApiError::forbidden(message);
            e.details.group = a.res.group.clone();
            e.details.kind = resource;
            e.details.name = name.to_string();
            e
        }
        Denial::Invalid(causes) => ApiError::invalid(&a.res.group, &a.res.kind, name, causes),
        Denial::Internal(why) => ApiError::internal(format!(
            "admission of {} {} failed: {why}",
            a.operation.as_str(),
            a.res.plural
        )),
    }
}

/// Objects of `group`/`plural` in `ns` ("" for cluster-scoped), from the
/// watch cache; when it has none, from the store, since an object created
/// a moment ago may not have reached the cache (upstream's live lookup).
async fn list(api: &Api, group: &str, plural: &str, ns: &str) -> Result<Vec<Value>, Denial> {
    let Some(res) = served(api, group, plural) else {
        return Ok(Vec::new());
    };
    let cache = api
        .registry
        .cache(&res)
        .await
        .map_err(|e| Denial::Internal(e.message))?;
    let sub = if ns.is_empty() {
        String::new()
    } else {
        format!("{ns}/")
    };
    let (items, _) = cache.list(&sub);
    if !items.is_empty() {
        return Ok(items.iter().map(|o| o.value()).collect());
    }
    // Nothing cached: make sure that is not just the cache lagging behind a
    // write acknowledged a moment ago (a LimitRange created just before the
    // pod must apply). Waiting for the cache is far cheaper than reading the
    // store on every create, and usually returns at once.
    cache
        .sync()
        .await
        .map_err(|e| Denial::Internal(format!("watch cache did not catch up: {e}")))?;
    let (items, _) = cache.list(&sub);
    Ok(items.iter().map(|o| o.value()).collect())
}

/// The served built-in resource for a storage group/plural.
fn served(api: &Api, group: &str, plural: &str) -> Option<Arc<Resource>> {
    api.resources()
        .iter()
        .find(|r| !r.custom && r.storage.0 == group && r.storage.1 == plural)
        .cloned()
}
