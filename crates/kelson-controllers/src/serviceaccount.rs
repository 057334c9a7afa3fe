//! Per-namespace service account plumbing, as upstream's serviceaccounts
//! controller and root-ca-cert-publisher do: every active namespace gets a
//! `default` ServiceAccount and a `kube-root-ca.crt` ConfigMap holding the
//! cluster CA, and both come back if someone deletes them.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::runner;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, ServiceAccount};
use kube::api::{Api, ObjectMeta, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::Client;
use tokio_util::sync::CancellationToken;

/// The service account every namespace gets.
pub const DEFAULT_SERVICE_ACCOUNT: &str = "default";
/// The ConfigMap holding the cluster CA in every namespace.
pub const ROOT_CA_CONFIG_MAP: &str = "kube-root-ca.crt";
/// The ConfigMap key of the CA bundle.
pub const ROOT_CA_KEY: &str = "ca.crt";
/// Upstream's annotation describing what the ConfigMap is for.
pub const DESCRIPTION_ANNOTATION: &str = "kubernetes.io/description";
/// Upstream's description text, word for word.
pub const DESCRIPTION: &str = "Contains a CA bundle that can be used to verify the kube-apiserver \
when using internal endpoints such as the internal service IP or kubernetes.default.svc. \
No other usage is guaranteed across distributions of Kubernetes clusters.";

/// The cluster CA the publisher writes into every namespace.
#[derive(Clone, Debug)]
pub struct RootCa {
    /// PEM-encoded CA certificate(s).
    pub pem: String,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("ensuring service account {DEFAULT_SERVICE_ACCOUNT} in namespace {0}: {1}")]
    ServiceAccount(String, #[source] kube::Error),
    #[error("publishing {ROOT_CA_CONFIG_MAP} in namespace {0}: {1}")]
    RootCa(String, #[source] kube::Error),
}

struct Context {
    client: Client,
    root_ca: RootCa,
}

/// Runs both loops until `shutdown` fires.
pub async fn run(client: Client, root_ca: RootCa, shutdown: CancellationToken) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let accounts: Api<ServiceAccount> = Api::all(client.clone());
    let config_maps: Api<ConfigMap> = Api::all(client.clone());
    // Only the objects this controller manages are watched: a deletion or an
    // edit re-checks their namespace.
    let by_namespace =
        |meta: &ObjectMeta| meta.namespace.as_deref().map(ObjectRef::<Namespace>::new);
    let ctx = Arc::new(Context { client, root_ca });
    let controller = Controller::new(namespaces, watcher::Config::default())
        .watches(
            accounts,
            watcher::Config::default().fields(&format!("metadata.name={DEFAULT_SERVICE_ACCOUNT}")),
            move |sa| by_namespace(&sa.metadata),
        )
        .watches(
            config_maps,
            watcher::Config::default().fields(&format!("metadata.name={ROOT_CA_CONFIG_MAP}")),
            move |cm| by_namespace(&cm.metadata),
        )
        .graceful_shutdown_on(shutdown.cancelled_owned())
        .run(reconcile, error_policy, ctx);
    runner::drive(controller, "service account reconcile").await;
}

fn error_policy(_ns: Arc<Namespace>, err: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!(error = %err, "service account controller");
    Action::requeue(Duration::from_secs(5))
}

async fn reconcile(ns: Arc<Namespace>, ctx: Arc<Context>) -> Result<Action, Error> {
    let Some(name) = ns.metadata.name.as_deref() else {
        return Ok(Action::await_change());
    };
    // Upstream leaves terminating namespaces alone: creations there fail.
    let active = ns.metadata.deletion_timestamp.is_none()
        && ns
            .status
            .as_ref()
            .and_then(|s| s.phase.as_deref())
            .is_none_or(|p| p == "Active");
    if !active {
        return Ok(Action::await_change());
    }
    ensure_service_account(&ctx.client, name).await?;
    ensure_root_ca(&ctx.client, name, &ctx.root_ca).await?;
    Ok(Action::await_change())
}

async fn ensure_service_account(client: &Client, namespace: &str) -> Result<(), Error> {
    let api: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
    let err = |e| Error::ServiceAccount(namespace.to_string(), e);
    if api
        .get_opt(DEFAULT_SERVICE_ACCOUNT)
        .await
        .map_err(err)?
        .is_some()
    {
        return Ok(());
    }
    let sa = ServiceAccount {
        metadata: ObjectMeta {
            name: Some(DEFAULT_SERVICE_ACCOUNT.into()),
            ..Default::default()
        },
        ..Default::default()
    };
    match api.create(&PostParams::default(), &sa).await {
        Ok(_) => Ok(()),
        Err(e) if benign_create_error(&e) => Ok(()),
        Err(e) => Err(err(e)),
    }
}

/// Already there (a racing create), the namespace gone, or the namespace
/// terminating: nothing to retry.
fn benign_create_error(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409 || s.code == 404 || s.code == 403 && s.message.contains("being terminated"))
}

/// The ConfigMap upstream's publisher writes.
pub fn root_ca_config_map(root_ca: &RootCa) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(ROOT_CA_CONFIG_MAP.into()),
            annotations: Some(BTreeMap::from([(
                DESCRIPTION_ANNOTATION.to_string(),
                DESCRIPTION.to_string(),
            )])),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(
            ROOT_CA_KEY.to_string(),
            root_ca.pem.clone(),
        )])),
        ..Default::default()
    }
}

/// Whether an existing ConfigMap already says what the publisher wants: the
/// data exactly, and a non-empty description.
fn root_ca_current(cm: &ConfigMap, root_ca: &RootCa) -> bool {
    let data_ok = cm
        .data
        .as_ref()
        .is_some_and(|d| d.len() == 1 && d.get(ROOT_CA_KEY).is_some_and(|v| *v == root_ca.pem))
        && cm.binary_data.as_ref().is_none_or(|b| b.is_empty());
    let described = cm
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(DESCRIPTION_ANNOTATION))
        .is_some_and(|d| !d.is_empty());
    data_ok && described
}

async fn ensure_root_ca(client: &Client, namespace: &str, root_ca: &RootCa) -> Result<(), Error> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let err = |e| Error::RootCa(namespace.to_string(), e);
    match api.get_opt(ROOT_CA_CONFIG_MAP).await.map_err(err)? {
        None => match api
            .create(&PostParams::default(), &root_ca_config_map(root_ca))
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if benign_create_error(&e) => Ok(()),
            Err(e) => Err(err(e)),
        },
        Some(cm) if root_ca_current(&cm, root_ca) => Ok(()),
        Some(mut cm) => {
            // Keep the user's other annotations; set ours and the data.
            cm.data = root_ca_config_map(root_ca).data;
            cm.binary_data = None;
            cm.metadata
                .annotations
                .get_or_insert_with(Default::default)
                .insert(DESCRIPTION_ANNOTATION.into(), DESCRIPTION.into());
            api.replace(ROOT_CA_CONFIG_MAP, &PostParams::default(), &cm)
                .await
                .map(|_| ())
                .map_err(err)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_map_carries_the_ca_and_upstreams_description() {
        let ca = RootCa {
            pem: "-----BEGIN CERTIFICATE-----\nabc\n-----END CERTIFICATE-----\n".into(),
        };
        let cm = root_ca_config_map(&ca);
        assert_eq!(cm.metadata.name.as_deref(), Some("kube-root-ca.crt"));
        assert_eq!(cm.data.as_ref().unwrap()["ca.crt"], ca.pem);
        let desc = &cm.metadata.annotations.as_ref().unwrap()["kubernetes.io/description"];
        assert!(
            desc.starts_with("Contains a CA bundle that can be used to verify the kube-apiserver")
        );
        assert!(root_ca_current(&cm, &ca));
    }

    #[test]
    fn a_stale_or_undescribed_config_map_is_rewritten() {
        let ca = RootCa { pem: "new".into() };
        let mut cm = root_ca_config_map(&RootCa { pem: "old".into() });
        assert!(!root_ca_current(&cm, &ca));
        cm = root_ca_config_map(&ca);
        cm.metadata.annotations = None;
        assert!(!root_ca_current(&cm, &ca));
        cm = root_ca_config_map(&ca);
        cm.data.as_mut().unwrap().insert("extra".into(), "x".into());
        assert!(!root_ca_current(&cm, &ca));
    }
}
