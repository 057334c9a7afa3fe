//! Namespace deletion. The API server marks a deleted namespace Terminating
//! and keeps it while `spec.finalizers` holds "kubernetes"; this let controller = controller
//! deletes everything in it, reports progress in the namespace's conditions
//! as upstream does, and clears the finalizer once nothing is left, at which
//! point the API server removes the namespace.

use std::sync::Arc;
use std::time::Duration;

use crate::runner;
use k8s_openapi::api::core::v1::{Namespace, NamespaceCondition};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, PostParams};
use kube::discovery::{verbs, ApiCapabilities, ApiResource, Discovery, Scope};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::Client;
use tokio_util::sync::CancellationToken;

/// The finalizer the namespace controller owns.
pub const FINALIZER: &str = "kubernetes";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("discovering namespaced resources: {0}")]
    Discovery(#[source] kube::Error),
    #[error("deleting {resource} in namespace {namespace}: {source}")]
    Delete {
        resource: String,
        namespace: String,
        #[source]
        source: kube::Error,
    },
    #[error("updating namespace {0}: {1}")]
    Update(String, #[source] kube::Error),
}

struct Context {
    client: Client,
}

/// Runs the controller until `shutdown` fires.
pub async fn run(client: Client, shutdown: CancellationToken) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ctx = Arc::new(Context { client });
    let controller = Controller::new(namespaces, watcher::Config::default())
        .graceful_shutdown_on(shutdown.cancelled_owned())
        .run(reconcile, error_policy, ctx);
    runner::drive(controller, "namespace reconcile").await;
}

fn error_policy(_ns: Arc<Namespace>, err: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!(error = %err, "namespace deletion");
    Action::requeue(Duration::from_secs(5))
}

async fn reconcile(ns: Arc<Namespace>, ctx: Arc<Context>) -> Result<Action, Error> {
    let Some(name) = ns.metadata.name.clone() else {
        return Ok(Action::await_change());
    };
    if ns.metadata.deletion_timestamp.is_none() || !has_finalizer(&ns) {
        return Ok(Action::await_change());
    }
    let outcome = delete_content(&ctx.client, &name).await;
    let conditions = conditions(&outcome);
    update_conditions(&ctx.client, &ns, conditions).await?;
    match outcome {
        Outcome::DiscoveryFailed(e) => Err(Error::Discovery(e)),
        Outcome::Progress(p) if p.failures.is_empty() && p.remaining.is_empty() => {
            finalize(&ctx.client, &name).await?;
            Ok(Action::await_change())
        }
        Outcome::Progress(p) => {
            // Pods end on their kubelet's schedule; check again soon, and no
            // later than the longest grace period still running.
            let wait = p.wait_seconds.clamp(1, 15);
            Ok(Action::requeue(Duration::from_secs(wait)))
        }
    }
}

fn has_finalizer(ns: &Namespace) -> bool {
    ns.spec
        .as_ref()
        .and_then(|s| s.finalizers.as_ref())
        .is_some_and(|f| f.iter().any(|f| f == FINALIZER))
}

/// What one pass over the namespace's content found.
#[derive(Default)]
struct Progress {
    /// "pods" → number of objects still present.
    remaining: Vec<(String, usize)>,
    /// Finalizers held by the remaining objects, with how many hold each.
    finalizers: Vec<(String, usize)>,
    /// Resources whose deletion failed, with the error.
    failures: Vec<String>,
    wait_seconds: u64,
}

enum Outcome {
    DiscoveryFailed(kube::Error),
    Progress(Progress),
}

async fn namespaced_resources(
    client: &Client,
) -> Result<Vec<(ApiResource, ApiCapabilities)>, kube::Error> {
    let discovery = Discovery::new(client.clone()).run_aggregated().await?;
    let mut out = Vec::new();
    for group in discovery.groups() {
        for (res, caps) in group.recommended_resources() {
            if caps.scope == Scope::Namespaced
                && caps.supports_operation(verbs::LIST)
                && (caps.supports_operation(verbs::DELETE_COLLECTION)
                    || caps.supports_operation(verbs::DELETE))
            {
                out.push((res, caps));
            }
        }
    }
    Ok(out)
}

async fn delete_content(client: &Client, namespace: &str) -> Outcome {
    let resources = match namespaced_resources(client).await {
        Ok(r) => r,
        Err(e) => return Outcome::DiscoveryFailed(e),
    };
    let mut progress = Progress::default();
    let background = DeleteParams::background();
    for (res, caps) in &resources {
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, res);
        let deleted = if caps.supports_operation(verbs::DELETE_COLLECTION) {
            api.delete_collection(&background, &ListParams::default())
                .await
                .map(|_| ())
        } else {
            delete_each(&api, &background).await
        };
        if let Err(e) = deleted {
            let e = Error::Delete {
                resource: res.plural.clone(),
                namespace: namespace.to_string(),
                source: e,
            };
            progress.failures.push(e.to_string());
            continue;
        }
        match api.list(&ListParams::default()).await {
            Ok(left) if !left.items.is_empty() => {
                progress
                    .remaining
                    .push((resource_name(res), left.items.len()));
                for obj in &left.items {
                    for f in obj.metadata.finalizers.iter().flatten() {
                        match progress.finalizers.iter_mut().find(|(n, _)| n == f) {
                            Some((_, c)) => *c += 1,
                            None => progress.finalizers.push((f.clone(), 1)),
                        }
                    }
                    let grace = obj
                        .metadata
                        .deletion_grace_period_seconds
                        .unwrap_or(0)
                        .max(0) as u64;
                    progress.wait_seconds = progress.wait_seconds.max(grace);
                }
            }
            Ok(_) => {}
            Err(e) => progress
                .failures
                .push(format!("listing {}: {e}", res.plural)),
        }
    }
    progress.remaining.sort();
    progress.finalizers.sort();
    Outcome::Progress(progress)
}

async fn delete_each(api: &Api<DynamicObject>, dp: &DeleteParams) -> Result<(), kube::Error> {
    for obj in api.list(&ListParams::default()).await?.items {
        if let Some(name) = obj.metadata.name.as_deref() {
            match api.delete(name, dp).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

/// "pods" for core resources, "widgets.example.com" for the others, as
/// upstream names them in its conditions.
fn resource_name(res: &ApiResource) -> String {
    if res.group.is_empty() {
        res.plural.clone()
    } else {
        format!("{}.{}", res.plural, res.group)
    }
}

/// Upstream's five deletion conditions; each is False once it no longer
/// applies, with the same reasons upstream uses.
fn conditions(outcome: &Outcome) -> Vec<(&'static str, bool, &'static str, String)> {
    let mut out = Vec::new();
    match outcome {
        Outcome::DiscoveryFailed(e) => out.push((
            "NamespaceDeletionDiscoveryFailure",
            true,
            "DiscoveryFailed",
            format!("Discovery failed for some groups: {e}"),
        )),
        Outcome::Progress(p) => {
            out.push((
                "NamespaceDeletionDiscoveryFailure",
                false,
                "ResourcesDiscovered",
                "All resources successfully discovered".into(),
            ));
            out.push((
                "NamespaceDeletionGroupVersionParsingFailure",
                false,
                "ParsedGroupVersions",
                "All legacy kube types successfully parsed".into(),
            ));
            out.push(if p.failures.is_empty() {
                (
                    "NamespaceDeletionContentFailure",
                    false,
                    "ContentDeleted",
                    "All content successfully deleted, may be waiting on finalization".into(),
                )
            } else {
                (
                    "NamespaceDeletionContentFailure",
                    true,
                    "ContentDeletionFailed",
                    format!(
                        "Failed to delete all resource types, {} remaining: {}",
                        p.failures.len(),
                        p.failures.join(", ")
                    ),
                )
            });
            out.push(if p.remaining.is_empty() {
                (
                    "NamespaceContentRemaining",
                    false,
                    "ContentRemoved",
                    "All content successfully removed".into(),
                )
            } else {
                let list: Vec<String> = p
                    .remaining
                    .iter()
                    .map(|(r, n)| format!("{r} has {n} resource instances"))
                    .collect();
                (
                    "NamespaceContentRemaining",
                    true,
                    "SomeResourcesRemain",
                    format!("Some resources are remaining: {}", list.join(", ")),
                )
            });
            out.push(if p.finalizers.is_empty() {
                (
                    "NamespaceFinalizersRemaining",
                    false,
                    "ContentHasNoFinalizers",
                    "All content-preserving finalizers finished".into(),
                )
            } else {
                let list: Vec<String> = p
                    .finalizers
                    .iter()
                    .map(|(f, n)| format!("{f} in {n} resource instances"))
                    .collect();
                (
                    "NamespaceFinalizersRemaining",
                    true,
                    "SomeFinalizersRemain",
                    format!(
                        "Some content in the namespace has finalizers remaining: {}",
                        list.join(", ")
                    ),
                )
            });
        }
    }
    out
}

async fn update_conditions(
    client: &Client,
    ns: &Namespace,
    wanted: Vec<(&'static str, bool, &'static str, String)>,
) -> Result<(), Error> {
    let name = ns.metadata.name.clone().unwrap_or_default();
    let mut current: Vec<NamespaceCondition> = ns
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    let mut changed = false;
    let now = Time(jiff::Timestamp::now());
    for (kind, status, reason, message) in wanted {
        let status = if status { "True" } else { "False" }.to_string();
        match current.iter_mut().find(|c| c.type_ == kind) {
            Some(c)
                if c.status == status
                    && c.reason.as_deref() == Some(reason)
                    && c.message.as_deref() == Some(message.as_str()) => {}
            Some(c) => {
                if c.status != status {
                    c.last_transition_time = Some(now.clone());
                }
                c.status = status;
                c.reason = Some(reason.into());
                c.message = Some(message);
                changed = true;
            }
            None => {
                current.push(NamespaceCondition {
                    type_: kind.into(),
                    status,
                    reason: Some(reason.into()),
                    message: Some(message),
                    last_transition_time: Some(now.clone()),
                });
                changed = true;
            }
        }
    }
    if !changed {
        return Ok(());
    }
    let mut updated = ns.clone();
    let status = updated.status.get_or_insert_with(Default::default);
    status.conditions = Some(current);
    let api: Api<Namespace> = Api::all(client.clone());
    api.replace_status(&name, &PostParams::default(), &updated)
        .await
        .map(|_| ())
        .or_else(ignore_gone)
        .map_err(|e| Error::Update(name, e))
}

/// Removes our finalizer through the finalize subresource; the API server
/// deletes the namespace once no finalizer is left.
async fn finalize(client: &Client, name: &str) -> Result<(), Error> {
    let api: Api<Namespace> = Api::all(client.clone());
    for _ in 0..5 {
        let mut ns = match api.get_opt(name).await {
            Ok(Some(ns)) => ns,
            Ok(None) => return Ok(()),
            Err(e) => return Err(Error::Update(name.into(), e)),
        };
        if let Some(f) = ns.spec.as_mut().and_then(|s| s.finalizers.as_mut()) {
            f.retain(|f| f != FINALIZER);
        }
        match api
            .replace_subresource("finalize", name, &PostParams::default(), &ns)
            .await
        {
            Ok(_) => return Ok(()),
            Err(kube::Error::Api(s)) if s.code == 409 => continue,
            Err(e) => return ignore_gone(e).map_err(|e| Error::Update(name.into(), e)),
        }
    }
    Ok(())
}

fn ignore_gone(e: kube::Error) -> Result<(), kube::Error> {
    match e {
        kube::Error::Api(s) if s.code == 404 => Ok(()),
        e => Err(e),
    }
}
