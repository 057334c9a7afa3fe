//! The Deployment controller (upstream pkg/controller/deployment): one
//! ReplicaSet per pod template, named `<deployment>-<pod-template-hash>`,
//! rolled out with the RollingUpdate (maxSurge/maxUnavailable) or Recreate
//! strategy; revisions and rollback by template, pause, proportional
//! scaling, revision-history cleanup, the Progressing/Available conditions
//! with progressDeadlineSeconds, and the status `kubectl rollout status`
//! reads.

pub mod util;

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentStatus, ReplicaSet, ReplicaSetSpec};
use k8s_openapi::api::core::v1::Pod;
use kelson_runtime::{EventType, Recorder};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::{Client, ResourceExt};
use tokio_util::sync::CancellationToken;

use crate::informers::Informers;
use crate::podcontrol::{
    self, claim, controller_of, controller_ref, indexed_watch, owners_of_child, ClaimOwner,
    OwnerIndex, Selector,
};
use crate::runner::{self, WorkerOptions};
use util::*;

const COMPONENT: &str = "deployment-controller";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Claim(#[from] podcontrol::Error),
    #[error("{action} {name}: {source}")]
    Api {
        action: &'static str,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("hash collision creating replica set {0}: collisionCount raised")]
    Collision(String),
}

fn api_err<'a>(action: &'static str, name: &'a str) -> impl FnOnce(kube::Error) -> Error + 'a {
    move |source| Error::Api {
        action,
        name: name.to_string(),
        source,
    }
}

/// Tunables; `workers` is --concurrent-deployment-syncs.
pub type Options = WorkerOptions;

struct Context {
    client: Client,
    replica_sets: Arc<OwnerIndex<ReplicaSet>>,
    recorder: Recorder,
}

/// Runs the Deployment controller until `shutdown` fires.
pub async fn run(client: Client, shutdown: CancellationToken) {
    run_with(Informers::new(client), shutdown, Options::default()).await;
}

pub async fn run_with(informers: Informers, shutdown: CancellationToken, options: Options) {
    let client = informers.client().clone();
    let (replica_sets, rs_stream) = indexed_watch::<ReplicaSet, _>(&informers, |_| {});
    let recorder = Recorder::new(client.clone(), COMPONENT, "");
    let controller = runner::controller::<Deployment>(&client, options.workers);
    let store = controller.store();
    let ctx = Arc::new(Context {
        client,
        replica_sets,
        recorder: recorder.clone(),
    });
    let controller = controller
        .watches_shared_stream(rs_stream, move |rs: Arc<ReplicaSet>| {
            owners_of_child(&store, &rs.metadata, |d: &Deployment| {
                Selector::from_label_selector(d.spec.as_ref().map(|s| &s.selector))
            })
        })
        .graceful_shutdown_on(shutdown.cancelled_owned())
        .run(reconcile, error_policy, ctx);
    runner::drive(controller, "deployment sync").await;
    recorder.flush().await;
}

fn error_policy(_d: Arc<Deployment>, err: &Error, _ctx: Arc<Context>) -> Action {
    match err {
        // Someone else wrote first: the next pass reads the new state.
        Error::Api { source, .. } if podcontrol::is_conflict(source) => {
            tracing::debug!(error = %err, "deployment sync conflict");
            Action::requeue(Duration::from_millis(200))
        }
        _ => {
            tracing::warn!(error = %err, "deployment sync failed");
            Action::requeue(Duration::from_secs(2))
        }
    }
}

/// One sync's working state: the deployment as last written, and the
/// replica sets it owns as last written.
struct Sync<'a> {
    ctx: &'a Context,
    d: Deployment,
    name: String,
    namespace: String,
    rs_api: Api<ReplicaSet>,
    d_api: Api<Deployment>,
    /// Set when the sync must look again without an event to wake it.
    requeue: Option<Duration>,
}

async fn reconcile(d: Arc<Deployment>, ctx: Arc<Context>) -> Result<Action, Error> {
    if ctx.replica_sets.store().wait_until_ready().await.is_err() {
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    let (Some(namespace), Some(uid)) = (d.metadata.namespace.clone(), d.metadata.uid.clone())
    else {
        return Ok(Action::await_change());
    };
    let name = d.name_any();
    let mut s = Sync {
        ctx: &ctx,
        d: (*d).clone(),
        rs_api: Api::namespaced(ctx.client.clone(), &namespace),
        d_api: Api::namespaced(ctx.client.clone(), &namespace),
        name,
        namespace,
        requeue: None,
    };
    s.sync(&uid).await?;
    Ok(match s.requeue {
        Some(after) => Action::requeue(after),
        None => Action::await_change(),
    })
}

impl Sync<'_> {
    async fn sync(&mut self, uid: &str) -> Result<(), Error> {
        let selector =
            match Selector::from_label_selector(self.d.spec.as_ref().map(|s| &s.selector)) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(deployment = %self.name, error = %e, "invalid selector");
                    return Ok(());
                }
            };
        if selector.is_everything() {
            self.ctx.recorder.event_for(
                &self.d,
                EventType::Warning,
                "SelectingAll",
                "This deployment is selecting all pods. A non-empty selector is required.",
            );
            if self.observed_generation() < self.d.metadata.generation.unwrap_or(0) {
                let mut status = self.d.status.clone().unwrap_or_default();
                status.observed_generation = self.d.metadata.generation;
                self.write_status(status).await?;
            }
            return Ok(());
        }
        let owner = ClaimOwner {
            reference: controller_ref(&self.d),
            namespace: &self.namespace,
            deleting: self.d.metadata.deletion_timestamp.is_some(),
        };
        let candidates = self.ctx.replica_sets.children(&self.namespace, uid, true);
        let d_api = self.d_api.clone();
        let name = self.name.clone();
        let claimed = claim(&self.rs_api, &owner, &selector, candidates, || async move {
            match d_api.get(&name).await {
                Ok(fresh) if fresh.metadata.uid.as_deref() != Some(uid) => Err(
                    podcontrol::Error::CanAdopt(name.clone(), "the deployment was replaced".into()),
                ),
                Ok(fresh) if fresh.metadata.deletion_timestamp.is_some() => {
                    Err(podcontrol::Error::CanAdopt(
                        name.clone(),
                        "the deployment is being deleted".into(),
                    ))
                }
                Ok(_) => Ok(()),
                Err(e) => Err(podcontrol::Error::CanAdopt(name.clone(), e.to_string())),
            }
        })
        .await?;
        let rs_list: Vec<ReplicaSet> = claimed.iter().map(|rs| (**rs).clone()).collect();

        if self.d.metadata.deletion_timestamp.is_some() {
            let (new_rs, old) = self.get_all_rs(&rs_list, false).await?;
            return self.sync_status_only(new_rs.as_ref(), &old).await;
        }
        self.check_paused_conditions().await?;
        if is_paused(&self.d) {
            return self.sync_scale(&rs_list).await;
        }
        if self.is_scaling_event(&rs_list).await? {
            return self.sync_scale(&rs_list).await;
        }
        if is_rolling_update(&self.d) {
            self.rollout_rolling(&rs_list).await
        } else {
            self.rollout_recreate(&rs_list).await
        }
    }

    fn observed_generation(&self) -> i64 {
        self.d
            .status
            .as_ref()
            .and_then(|s| s.observed_generation)
            .unwrap_or(0)
    }

    async fn write_status(&mut self, status: DeploymentStatus) -> Result<(), Error> {
        let mut target = self.d.clone();
        target.status = Some(status);
        let written = self
            .d_api
            .replace_status(&self.name, &PostParams::default(), &target)
            .await
            .map_err(api_err("updating status of deployment", &self.name))?;
        self.d = written;
        Ok(())
    }

    /// The new replica set (template equal to the deployment's, oldest
    /// first) and the old ones, with the new one's revision synced; creates
    /// the new one when asked.
    async fn get_all_rs(
        &mut self,
        rs_list: &[ReplicaSet],
        create: bool,
    ) -> Result<(Option<ReplicaSet>, Vec<ReplicaSet>), Error> {
        let template = self
            .d
            .spec
            .as_ref()
            .map(|s| s.template.clone())
            .unwrap_or_default();
        let mut sorted: Vec<&ReplicaSet> = rs_list.iter().collect();
        sorted.sort_by(|a, b| by_creation(a, b));
        let existing = sorted
            .iter()
            .find(|rs| {
                rs.spec
                    .as_ref()
                    .and_then(|s| s.template.as_ref())
                    .is_some_and(|t| equal_ignore_hash(t, &template))
            })
            .map(|rs| (*rs).clone());
        let old: Vec<ReplicaSet> = rs_list
            .iter()
            .filter(|rs| {
                existing
                    .as_ref()
                    .is_none_or(|n| n.metadata.uid != rs.metadata.uid)
            })
            .cloned()
            .collect();
        let new_revision = max_revision(&old) + 1;
        if let Some(rs) = existing {
            let rs = self.sync_existing_new_rs(rs, new_revision).await?;
            return Ok((Some(rs), old));
        }
        if !create {
            return Ok((None, old));
        }
        let rs = self.create_new_rs(&old, new_revision).await?;
        Ok((rs, old))
    }

    async fn sync_existing_new_rs(
        &mut self,
        rs: ReplicaSet,
        new_revision: i64,
    ) -> Result<ReplicaSet, Error> {
        let mut copy = rs.clone();
        let annotations_changed =
            set_new_rs_annotations(&self.d, &mut copy.metadata, new_revision, true);
        let min_ready = min_ready_seconds(&self.d);
        let spec = copy.spec.get_or_insert_with(ReplicaSetSpec::default);
        let min_ready_changed = spec.min_ready_seconds.unwrap_or(0) != min_ready;
        if annotations_changed || min_ready_changed {
            spec.min_ready_seconds = Some(min_ready);
            let name = copy.name_any();
            return self
                .rs_api
                .replace(&name, &PostParams::default(), &copy)
                .await
                .map_err(api_err("updating replica set", &name));
        }
        let rev = copy
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(REVISION_ANNOTATION))
            .cloned()
            .unwrap_or_default();
        self.set_deployment_revision(&rev).await?;
        if progress_deadline(&self.d).is_some()
            && condition(self.d.status.as_ref(), PROGRESSING).is_none()
        {
            let mut status = self.d.status.clone().unwrap_or_default();
            set_condition(
                &mut status,
                new_condition(
                    PROGRESSING,
                    "True",
                    REASON_FOUND_NEW_RS,
                    format!("Found new replica set {:?}", copy.name_any()),
                    Timestamp::now(),
                ),
            );
            self.write_status(status).await?;
        }
        Ok(copy)
    }

    /// The deployment's own revision annotation follows its new replica
    /// set's (a metadata patch: status writes do not carry annotations).
    async fn set_deployment_revision(&mut self, revision: &str) -> Result<(), Error> {
        let current = self
            .d
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(REVISION_ANNOTATION));
        if current.map(String::as_str) == Some(revision) {
            return Ok(());
        }
        let patch =
            serde_json::json!({"metadata": {"annotations": {REVISION_ANNOTATION: revision}}});
        self.d = self
            .d_api
            .patch(&self.name, &PatchParams::default(), &Patch::Merge(patch))
            .await
            .map_err(api_err("updating revision of deployment", &self.name))?;
        Ok(())
    }

    async fn create_new_rs(
        &mut self,
        old: &[ReplicaSet],
        new_revision: i64,
    ) -> Result<Option<ReplicaSet>, Error> {
        let Some(spec) = self.d.spec.clone() else {
            return Ok(None);
        };
        let collision = self.d.status.as_ref().and_then(|s| s.collision_count);
        let hash = compute_hash(&spec.template, collision);
        let mut template = spec.template.clone();
        template
            .metadata
            .get_or_insert_with(Default::default)
            .labels
            .get_or_insert_with(Default::default)
            .insert(POD_TEMPLATE_HASH_LABEL.into(), hash.clone());
        let mut selector = spec.selector.clone();
        selector
            .match_labels
            .get_or_insert_with(Default::default)
            .insert(POD_TEMPLATE_HASH_LABEL.into(), hash.clone());
        let rs_name = format!("{}-{hash}", self.name);
        let mut new_rs = ReplicaSet::default();
        new_rs.metadata.name = Some(rs_name.clone());
        new_rs.metadata.namespace = Some(self.namespace.clone());
        new_rs.metadata.owner_references = Some(vec![controller_ref(&self.d)]);
        new_rs.metadata.labels = template.metadata.as_ref().and_then(|m| m.labels.clone());
        new_rs.spec = Some(ReplicaSetSpec {
            replicas: Some(0),
            min_ready_seconds: Some(min_ready_seconds(&self.d)),
            selector,
            template: Some(template),
        });
        let all: Vec<&ReplicaSet> = old.iter().chain(std::iter::once(&new_rs)).collect();
        let replicas = new_rs_new_replicas(&self.d, &all, 0);
        if let Some(s) = new_rs.spec.as_mut() {
            s.replicas = Some(replicas);
        }
        set_new_rs_annotations(&self.d, &mut new_rs.metadata, new_revision, false);

        let created = match self.rs_api.create(&PostParams::default(), &new_rs).await {
            Ok(rs) => rs,
            Err(e) if podcontrol::is_already_exists(&e) => {
                let existing = self
                    .rs_api
                    .get(&rs_name)
                    .await
                    .map_err(api_err("reading replica set", &rs_name))?;
                let ours = controller_of(&existing.metadata)
                    .is_some_and(|r| Some(&r.uid) == self.d.metadata.uid.as_ref());
                let same = existing
                    .spec
                    .as_ref()
                    .and_then(|s| s.template.as_ref())
                    .is_some_and(|t| equal_ignore_hash(t, &spec.template));
                if ours && same {
                    // A slow cache: it is ours already.
                    return Ok(Some(existing));
                }
                let mut status = self.d.status.clone().unwrap_or_default();
                status.collision_count =
                    Some(status.collision_count.unwrap_or(0).saturating_add(1));
                self.write_status(status).await?;
                return Err(Error::Collision(rs_name));
            }
            Err(e) => {
                let msg = format!(
                    "Failed to create new replica set {rs_name:?}: {}",
                    podcontrol::api_message(&e)
                );
                if progress_deadline(&self.d).is_some() {
                    let mut status = self.d.status.clone().unwrap_or_default();
                    set_condition(
                        &mut status,
                        new_condition(
                            PROGRESSING,
                            "False",
                            REASON_RS_CREATE_ERROR,
                            msg.clone(),
                            Timestamp::now(),
                        ),
                    );
                    let _ = self.write_status(status).await;
                }
                self.ctx.recorder.event_for(
                    &self.d,
                    EventType::Warning,
                    REASON_RS_CREATE_ERROR,
                    msg,
                );
                return Err(api_err("creating replica set", &rs_name)(e));
            }
        };
        if replicas > 0 {
            self.ctx.recorder.event_for(
                &self.d,
                EventType::Normal,
                "ScalingReplicaSet",
                format!("Scaled up replica set {rs_name} from 0 to {replicas}"),
            );
        }
        self.set_deployment_revision(&new_revision.to_string())
            .await?;
        if progress_deadline(&self.d).is_some() {
            let mut status = self.d.status.clone().unwrap_or_default();
            set_condition(
                &mut status,
                new_condition(
                    PROGRESSING,
                    "True",
                    REASON_NEW_RS_CREATED,
                    format!("Created new replica set {rs_name:?}"),
                    Timestamp::now(),
                ),
            );
            self.write_status(status).await?;
        }
        Ok(Some(created))
    }

    /// Sets a replica set's size and replicas annotations; records
    /// "Scaled up/down replica set X from A to B" when the size changed.
    async fn scale_rs(
        &mut self,
        rs: &ReplicaSet,
        to: i32,
        op: &str,
    ) -> Result<(bool, ReplicaSet), Error> {
        let from = rs_replicas(rs);
        let desired = desired(&self.d);
        let max = desired + max_surge(&self.d);
        let size_changed = from != to;
        if !size_changed && !replicas_annotations_need_update(&rs.metadata, desired, max) {
            return Ok((false, rs.clone()));
        }
        let mut copy = rs.clone();
        copy.spec
            .get_or_insert_with(ReplicaSetSpec::default)
            .replicas = Some(to);
        set_replicas_annotations(&mut copy.metadata, desired, max);
        let name = copy.name_any();
        let written = self
            .rs_api
            .replace(&name, &PostParams::default(), &copy)
            .await
            .map_err(api_err("scaling replica set", &name))?;
        if size_changed {
            self.ctx.recorder.event_for(
                &self.d,
                EventType::Normal,
                "ScalingReplicaSet",
                format!("Scaled {op} replica set {name} from {from} to {to}"),
            );
        }
        Ok((size_changed, written))
    }

    async fn scale_rs_and_record(
        &mut self,
        rs: &ReplicaSet,
        to: i32,
    ) -> Result<(bool, ReplicaSet), Error> {
        let from = rs_replicas(rs);
        if from == to {
            return Ok((false, rs.clone()));
        }
        let op = if from < to { "up" } else { "down" };
        self.scale_rs(rs, to, op).await
    }

    /// A change of `spec.replicas` alone: some active replica set was sized
    /// for another desired count.
    async fn is_scaling_event(&mut self, rs_list: &[ReplicaSet]) -> Result<bool, Error> {
        let (new_rs, old) = self.get_all_rs(rs_list, false).await?;
        let desired = desired(&self.d);
        Ok(old
            .iter()
            .chain(new_rs.iter())
            .filter(|rs| rs_replicas(rs) > 0)
            .any(|rs| desired_replicas_annotation(rs).is_some_and(|v| v != desired)))
    }

    /// Paused or scaled: resize without rolling (upstream's sync).
    async fn sync_scale(&mut self, rs_list: &[ReplicaSet]) -> Result<(), Error> {
        let (new_rs, mut old) = self.get_all_rs(rs_list, false).await?;
        let new_rs = self.scale(new_rs, &mut old).await?;
        if is_paused(&self.d) {
            self.cleanup(&old).await?;
        }
        self.sync_status_only(new_rs.as_ref(), &old).await
    }

    async fn sync_status_only(
        &mut self,
        new_rs: Option<&ReplicaSet>,
        old: &[ReplicaSet],
    ) -> Result<(), Error> {
        let all: Vec<&ReplicaSet> = old.iter().chain(new_rs).collect();
        let status = calculate_status(&all, new_rs, &self.d, Timestamp::now());
        if !status_equal(self.d.status.as_ref(), &status) {
            self.write_status(status).await?;
        }
        Ok(())
    }

    async fn check_paused_conditions(&mut self) -> Result<(), Error> {
        if progress_deadline(&self.d).is_none() {
            return Ok(());
        }
        let cond = condition(self.d.status.as_ref(), PROGRESSING);
        if cond.is_some_and(|c| c.reason.as_deref() == Some(REASON_TIMED_OUT)) {
            return Ok(());
        }
        let paused_cond = cond.is_some_and(|c| c.reason.as_deref() == Some(REASON_PAUSED));
        let paused = is_paused(&self.d);
        let (reason, message) = if paused && !paused_cond {
            (REASON_PAUSED, "Deployment is paused")
        } else if !paused && paused_cond {
            (REASON_RESUMED, "Deployment is resumed")
        } else {
            return Ok(());
        };
        let mut status = self.d.status.clone().unwrap_or_default();
        set_condition(
            &mut status,
            new_condition(
                PROGRESSING,
                "Unknown",
                reason,
                message.into(),
                Timestamp::now(),
            ),
        );
        self.write_status(status).await
    }

    /// Upstream's scale(): one active replica set takes the whole size; a
    /// saturated new one retires the old; otherwise a rolling deployment
    /// spreads the change proportionally.
    async fn scale(
        &mut self,
        new_rs: Option<ReplicaSet>,
        old: &mut [ReplicaSet],
    ) -> Result<Option<ReplicaSet>, Error> {
        let desired = desired(&self.d);
        // Active or latest.
        let mut by_age: Vec<usize> = (0..old.len()).collect();
        by_age.sort_by(|a, b| by_creation(&old[*b], &old[*a]));
        let active_old: Vec<usize> = by_age
            .iter()
            .copied()
            .filter(|i| rs_replicas(&old[*i]) > 0)
            .collect();
        let new_active = new_rs.as_ref().is_some_and(|rs| rs_replicas(rs) > 0);
        let active_count = active_old.len() + usize::from(new_active);
        let target: Option<Result<usize, ()>> = match active_count {
            // Err(()) names the new replica set, Ok(i) an old one.
            0 => match &new_rs {
                Some(_) => Some(Err(())),
                None => by_age.first().map(|i| Ok(*i)),
            },
            1 if new_active => Some(Err(())),
            1 => active_old.first().map(|i| Ok(*i)),
            _ => None,
        };
        match target {
            Some(Err(())) => {
                if let Some(rs) = &new_rs {
                    if rs_replicas(rs) != desired {
                        let (_, rs) = self.scale_rs_and_record(&rs.clone(), desired).await?;
                        return Ok(Some(rs));
                    }
                }
                return Ok(new_rs);
            }
            Some(Ok(i)) => {
                if rs_replicas(&old[i]) != desired {
                    let (_, rs) = self.scale_rs_and_record(&old[i].clone(), desired).await?;
                    old[i] = rs;
                }
                return Ok(new_rs);
            }
            None => {}
        }
        // A saturated new replica set retires the old ones.
        if new_rs.as_ref().is_some_and(|rs| is_saturated(&self.d, rs)) {
            for i in active_old {
                let (_, rs) = self.scale_rs_and_record(&old[i].clone(), 0).await?;
                old[i] = rs;
            }
            return Ok(new_rs);
        }
        if !is_rolling_update(&self.d) {
            return Ok(new_rs);
        }
        // Proportional scaling over the active replica sets; index
        // usize::MAX stands for the new replica set.
        let mut active: Vec<(usize, ReplicaSet)> =
            active_old.iter().map(|i| (*i, old[*i].clone())).collect();
        if let Some(rs) = new_rs.as_ref().filter(|_| new_active) {
            active.push((usize::MAX, rs.clone()));
        }
        let refs: Vec<&ReplicaSet> = active.iter().map(|(_, rs)| rs).collect();
        let current = replica_count(&refs);
        let allowed = if desired > 0 {
            desired + max_surge(&self.d)
        } else {
            0
        };
        let to_add = allowed - current;
        let op = match to_add.cmp(&0) {
            std::cmp::Ordering::Greater => {
                // Larger first; among equals the newer first.
                active.sort_by(|(_, a), (_, b)| {
                    rs_replicas(b)
                        .cmp(&rs_replicas(a))
                        .then_with(|| by_creation(b, a))
                });
                "up"
            }
            std::cmp::Ordering::Less => {
                // Larger first; among equals the older first.
                active.sort_by(|(_, a), (_, b)| {
                    rs_replicas(b)
                        .cmp(&rs_replicas(a))
                        .then_with(|| by_creation(a, b))
                });
                "down"
            }
            std::cmp::Ordering::Equal => "",
        };
        let mut added = 0;
        let mut sizes: Vec<i32> = Vec::with_capacity(active.len());
        for (_, rs) in &active {
            if to_add != 0 {
                let p = proportion(rs, &self.d, to_add, added);
                sizes.push(rs_replicas(rs) + p);
                added += p;
            } else {
                sizes.push(rs_replicas(rs));
            }
        }
        if to_add != 0 {
            if let Some(first) = sizes.first_mut() {
                *first = (*first + to_add - added).max(0);
            }
        }
        let mut new_out = new_rs;
        for ((i, rs), size) in active.into_iter().zip(sizes) {
            let (_, written) = self.scale_rs(&rs, size, op).await?;
            if i == usize::MAX {
                new_out = Some(written);
            } else {
                old[i] = written;
            }
        }
        Ok(new_out)
    }

    /// Deletes the oldest fully scaled-down replica sets beyond
    /// `revisionHistoryLimit`.
    async fn cleanup(&mut self, old: &[ReplicaSet]) -> Result<(), Error> {
        let Some(limit) = self.d.spec.as_ref().and_then(|s| s.revision_history_limit) else {
            return Ok(());
        };
        let mut alive: Vec<&ReplicaSet> = old
            .iter()
            .filter(|rs| rs.metadata.deletion_timestamp.is_none())
            .collect();
        let diff = alive.len() as i64 - i64::from(limit);
        if diff <= 0 {
            return Ok(());
        }
        alive.sort_by(|a, b| by_revision(a, b));
        for rs in alive.into_iter().take(diff as usize) {
            let (status_replicas, _, _) = rs_status(rs);
            let observed = rs
                .status
                .as_ref()
                .and_then(|s| s.observed_generation)
                .unwrap_or(0);
            if status_replicas != 0
                || rs_replicas(rs) != 0
                || rs.metadata.generation.unwrap_or(0) > observed
            {
                continue;
            }
            let name = rs.name_any();
            match self.rs_api.delete(&name, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(e) if podcontrol::is_not_found(&e) => {}
                Err(e) => return Err(api_err("deleting old replica set", &name)(e)),
            }
        }
        Ok(())
    }

    async fn rollout_rolling(&mut self, rs_list: &[ReplicaSet]) -> Result<(), Error> {
        let (new_rs, mut old) = self.get_all_rs(rs_list, true).await?;
        let Some(mut new_rs) = new_rs else {
            return Ok(());
        };
        // Scale up, if we can.
        let desired = desired(&self.d);
        let new_size = rs_replicas(&new_rs);
        let scaled_up = if new_size > desired {
            let (scaled, rs) = self.scale_rs_and_record(&new_rs.clone(), desired).await?;
            new_rs = rs;
            scaled
        } else if new_size < desired {
            let all: Vec<&ReplicaSet> = old.iter().chain(std::iter::once(&new_rs)).collect();
            let to = new_rs_new_replicas(&self.d, &all, new_size);
            let (scaled, rs) = self.scale_rs_and_record(&new_rs.clone(), to).await?;
            new_rs = rs;
            scaled
        } else {
            false
        };
        if scaled_up {
            return self.sync_rollout_status(Some(&new_rs), &old).await;
        }
        // Scale down, if we can.
        if self.reconcile_old(&new_rs, &mut old).await? {
            return self.sync_rollout_status(Some(&new_rs), &old).await;
        }
        if let Some(status) = self.d.status.clone() {
            if deployment_complete(&self.d, &status) {
                self.cleanup(&old).await?;
            }
        }
        self.sync_rollout_status(Some(&new_rs), &old).await
    }

    /// Available replicas a replica set can be counted on for: its status,
    /// but never more than its size. Right after a scale-down the status
    /// still counts pods about to go; counting them could let two passes
    /// remove more than maxUnavailable allows.
    fn dependable_available(rs: &ReplicaSet) -> i32 {
        rs_status(rs).2.min(rs_replicas(rs))
    }

    /// Upstream's reconcileOldReplicaSets: first retire old pods that are
    /// not available anyway, then available ones down to
    /// `replicas - maxUnavailable` available in all.
    async fn reconcile_old(
        &mut self,
        new_rs: &ReplicaSet,
        old: &mut [ReplicaSet],
    ) -> Result<bool, Error> {
        let active: Vec<usize> = (0..old.len())
            .filter(|i| rs_replicas(&old[*i]) > 0)
            .collect();
        let old_pods: i32 = active.iter().map(|i| rs_replicas(&old[*i])).sum();
        if old_pods == 0 {
            return Ok(false);
        }
        let all_pods = old_pods + rs_replicas(new_rs);
        let min_available = desired(&self.d) - max_unavailable(&self.d);
        let new_unavailable = rs_replicas(new_rs) - Self::dependable_available(new_rs);
        let max_scaled_down = all_pods - min_available - new_unavailable;
        if max_scaled_down <= 0 {
            return Ok(false);
        }
        let mut order = active.clone();
        order.sort_by(|a, b| by_creation(&old[*a], &old[*b]));
        // Unhealthy replicas first: they block the rollout otherwise.
        let mut cleaned = 0;
        for &i in &order {
            if cleaned >= max_scaled_down {
                break;
            }
            let size = rs_replicas(&old[i]);
            let available = Self::dependable_available(&old[i]);
            if size == 0 || size == available {
                continue;
            }
            let down = (max_scaled_down - cleaned).min(size - available);
            let (_, rs) = self
                .scale_rs_and_record(&old[i].clone(), size - down)
                .await?;
            old[i] = rs;
            cleaned += down;
        }
        // Then healthy ones, as far as availability allows.
        let available_all: i32 = old.iter().map(Self::dependable_available).sum::<i32>()
            + Self::dependable_available(new_rs);
        let mut scaled = 0;
        if available_all > min_available {
            let total = available_all - min_available;
            for &i in &order {
                if scaled >= total {
                    break;
                }
                let size = rs_replicas(&old[i]);
                if size == 0 {
                    continue;
                }
                let down = size.min(total - scaled);
                let (_, rs) = self
                    .scale_rs_and_record(&old[i].clone(), size - down)
                    .await?;
                old[i] = rs;
                scaled += down;
            }
        }
        Ok(cleaned + scaled > 0)
    }

    async fn rollout_recreate(&mut self, rs_list: &[ReplicaSet]) -> Result<(), Error> {
        let (mut new_rs, mut old) = self.get_all_rs(rs_list, false).await?;
        // Scale down every old replica set first.
        let mut scaled_down = false;
        for rs in old.iter_mut() {
            if rs_replicas(rs) > 0 {
                let (scaled, written) = self.scale_rs_and_record(&rs.clone(), 0).await?;
                *rs = written;
                scaled_down |= scaled;
            }
        }
        if scaled_down {
            return self.sync_rollout_status(new_rs.as_ref(), &old).await;
        }
        // Wait until no old pod runs.
        if self.old_pods_running(new_rs.as_ref(), &old).await? {
            // Pods are not watched here: look again shortly.
            self.requeue = Some(Duration::from_secs(1));
            return self.sync_rollout_status(new_rs.as_ref(), &old).await;
        }
        if new_rs.is_none() {
            let (n, o) = self.get_all_rs(rs_list, true).await?;
            new_rs = n;
            old = o;
        }
        if let Some(rs) = new_rs.clone() {
            let (_, rs) = self.scale_rs_and_record(&rs, desired(&self.d)).await?;
            new_rs = Some(rs);
        }
        if let Some(status) = self.d.status.clone() {
            if deployment_complete(&self.d, &status) {
                self.cleanup(&old).await?;
            }
        }
        self.sync_rollout_status(new_rs.as_ref(), &old).await
    }

    async fn old_pods_running(
        &self,
        new_rs: Option<&ReplicaSet>,
        old: &[ReplicaSet],
    ) -> Result<bool, Error> {
        let refs: Vec<&ReplicaSet> = old.iter().collect();
        if actual_replica_count(&refs) > 0 {
            return Ok(true);
        }
        let old_uids: std::collections::HashSet<&str> = old
            .iter()
            .filter_map(|rs| rs.metadata.uid.as_deref())
            .collect();
        if old_uids.is_empty() {
            return Ok(false);
        }
        let labels = self
            .d
            .spec
            .as_ref()
            .and_then(|s| s.selector.match_labels.as_ref())
            .map(|m| {
                m.iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .unwrap_or_default();
        let pods: Api<Pod> = Api::namespaced(self.ctx.client.clone(), &self.namespace);
        let list = pods
            .list(&ListParams::default().labels(&labels))
            .await
            .map_err(api_err("listing pods of deployment", &self.name))?;
        let new_uid = new_rs.and_then(|rs| rs.metadata.uid.as_deref());
        Ok(list.items.iter().any(|p| {
            let Some(owner) = controller_of(&p.metadata) else {
                return false;
            };
            if Some(owner.uid.as_str()) == new_uid || !old_uids.contains(owner.uid.as_str()) {
                return false;
            }
            let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
            !matches!(phase, Some("Succeeded") | Some("Failed"))
        }))
    }

    /// Upstream's syncRolloutStatus: status plus the Progressing condition
    /// (complete, progressing, or timed out) and replica failures.
    async fn sync_rollout_status(
        &mut self,
        new_rs: Option<&ReplicaSet>,
        old: &[ReplicaSet],
    ) -> Result<(), Error> {
        let now = Timestamp::now();
        let all: Vec<&ReplicaSet> = old.iter().chain(new_rs).collect();
        let mut status = calculate_status(&all, new_rs, &self.d, now);
        if progress_deadline(&self.d).is_none() {
            remove_condition(&mut status, PROGRESSING);
        }
        let current = condition(self.d.status.as_ref(), PROGRESSING).cloned();
        let complete_already = n(status.replicas) == n(status.updated_replicas)
            && current
                .as_ref()
                .is_some_and(|c| c.reason.as_deref() == Some(REASON_NEW_RS_AVAILABLE));
        if progress_deadline(&self.d).is_some() && !complete_already {
            let rs_name = new_rs.map(|rs| rs.name_any());
            if deployment_complete(&self.d, &status) {
                let msg = match &rs_name {
                    Some(n) => format!("ReplicaSet {n:?} has successfully progressed."),
                    None => format!("Deployment {:?} has successfully progressed.", self.name),
                };
                set_condition(
                    &mut status,
                    new_condition(PROGRESSING, "True", REASON_NEW_RS_AVAILABLE, msg, now),
                );
            } else if deployment_progressing(&self.d, &status) {
                let msg = match &rs_name {
                    Some(n) => format!("ReplicaSet {n:?} is progressing."),
                    None => format!("Deployment {:?} is progressing.", self.name),
                };
                let mut cond = new_condition(PROGRESSING, "True", REASON_RS_UPDATED, msg, now);
                // Progress refreshes lastUpdateTime even with the same reason.
                if let Some(cur) = &current {
                    if cur.status == "True" {
                        cond.last_transition_time = cur.last_transition_time.clone();
                    }
                    remove_condition(&mut status, PROGRESSING);
                }
                set_condition(&mut status, cond);
            } else if deployment_timed_out(&self.d, &status, now) {
                let msg = match &rs_name {
                    Some(n) => format!("ReplicaSet {n:?} has timed out progressing."),
                    None => format!("Deployment {:?} has timed out progressing.", self.name),
                };
                set_condition(
                    &mut status,
                    new_condition(PROGRESSING, "False", REASON_TIMED_OUT, msg, now),
                );
            }
        }
        // Promote a replica set's ReplicaFailure (the new one's first).
        let failure = new_rs
            .into_iter()
            .chain(old.iter())
            .filter_map(|rs| {
                rs.status
                    .as_ref()?
                    .conditions
                    .as_ref()?
                    .iter()
                    .find(|c| c.type_ == REPLICA_FAILURE)
                    .cloned()
            })
            .next();
        match failure {
            Some(c) => set_condition(
                &mut status,
                k8s_openapi::api::apps::v1::DeploymentCondition {
                    type_: c.type_,
                    status: c.status,
                    reason: c.reason,
                    message: c.message,
                    last_update_time: c.last_transition_time.clone(),
                    last_transition_time: c.last_transition_time,
                },
            ),
            None => remove_condition(&mut status, REPLICA_FAILURE),
        }
        self.requeue_if_stuck(&status, now);
        if status_equal(self.d.status.as_ref(), &status) {
            return Ok(());
        }
        self.write_status(status).await
    }

    /// Checks back when the progress deadline would pass (upstream's
    /// requeueStuckDeployment).
    fn requeue_if_stuck(&mut self, status: &DeploymentStatus, now: Timestamp) {
        let Some(deadline) = progress_deadline(&self.d) else {
            return;
        };
        let Some(cond) = condition(self.d.status.as_ref(), PROGRESSING) else {
            return;
        };
        if deployment_complete(&self.d, status) || cond.reason.as_deref() == Some(REASON_TIMED_OUT)
        {
            return;
        }
        let Some(updated) = cond.last_update_time.as_ref() else {
            return;
        };
        let due = updated.0.as_millisecond() + i64::from(deadline) * 1000 - now.as_millisecond();
        let after = Duration::from_millis(due.max(0) as u64) + Duration::from_secs(1);
        self.requeue = Some(self.requeue.map_or(after, |r| r.min(after)));
    }
}

/// Status equality ignoring condition timestamps' representation details.
fn status_equal(a: Option<&DeploymentStatus>, b: &DeploymentStatus) -> bool {
    match a {
        Some(a) => a == b,
        None => false,
    }
}
