//! The scheduler against a real API server: watches feed the scheduling
//! thread, whose effects go back out as API calls.
//!
//! ```text
//!  watch pods (non-terminal), nodes, PDBs, namespaces   (I/O runtime)
//!        │ SchedulerInput (unbounded channel)
//!        ▼
//!  driver::run(Scheduler<KubeEffects>)     (own thread, own runtime)
//!        │ bind / patch status / delete / events (queued, never awaited)
//!        ▼
//!  API calls as tasks on the I/O runtime, at most `bind_concurrency` at once
//! ```
//!
//! As upstream, scheduling starts only once every watch has listed its
//! objects, so the first decisions see the whole cluster.

use std::time::Duration;

use k8s_openapi::api::apps::v1::{ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, ReplicationController, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kelson_runtime::events::RecorderOptions;
use kelson_runtime::Recorder;
use kube::runtime::watcher;
use kube::Api;
use tokio::sync::mpsc::{unbounded_channel, UnboundedSender};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::driver::{self, SchedulerInput};
use crate::informers::{feed, Watched};
use crate::kube_effects::KubeEffects;
use crate::plugins::default_profile;
use crate::scheduler::{Scheduler, DEFAULT_SCHEDULER_NAME};

/// How long shutdown waits for API calls in flight and queued events.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Upstream's pod informer leaves terminal pods out: they hold no resources.
const NON_TERMINAL_PODS: &str = "status.phase!=Succeeded,status.phase!=Failed";

#[derive(Debug, Clone)]
pub struct SchedulerOptions {
    /// Pods whose spec.schedulerName is this (empty counts as
    /// "default-scheduler") are scheduled; Events are reported under it.
    pub scheduler_name: String,
    /// API calls (bindings, status patches, deletions) in flight at once.
    pub bind_concurrency: usize,
    /// `percentageOfNodesToScore`; `None` is upstream's adaptive default.
    pub percentage_of_nodes_to_score: Option<u32>,
    /// The Events' source host (upstream's scheduler leaves it empty).
    pub event_host: String,
    /// Events waiting to be written; more are dropped (upstream: 1000).
    pub event_queue: usize,
}

impl Default for SchedulerOptions {
    fn default() -> Self {
        SchedulerOptions {
            scheduler_name: DEFAULT_SCHEDULER_NAME.to_string(),
            bind_concurrency: 64,
            percentage_of_nodes_to_score: None,
            event_host: String::new(),
            event_queue: kelson_runtime::events::DEFAULT_QUEUE,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("starting the scheduling thread: {0}")]
    Thread(std::io::Error),
    #[error("building the scheduling thread's runtime: {0}")]
    Runtime(std::io::Error),
    #[error("the scheduling thread stopped unexpectedly")]
    SchedulerStopped,
}

fn start_feed<K: Watched>(
    api: Api<K>,
    config: watcher::Config,
    tx: &UnboundedSender<SchedulerInput>,
    stop: &CancellationToken,
    synced: &mut Vec<oneshot::Receiver<()>>,
) -> JoinHandle<()> {
    let (s, r) = oneshot::channel();
    synced.push(r);
    tokio::spawn(feed(api, config, tx.clone(), s, stop.clone()))
}

/// `start_feed` of every object of kind `K`, from any revision.
fn watch_all<K: Watched>(
    client: &kube::Client,
    tx: &UnboundedSender<SchedulerInput>,
    stop: &CancellationToken,
    synced: &mut Vec<oneshot::Receiver<()>>,
) -> JoinHandle<()> {
    start_feed(
        Api::<K>::all(client.clone()),
        watcher::Config::default().any_semantic(),
        tx,
        stop,
        synced,
    )
}

/// Runs the scheduler until `shutdown` is cancelled: watches pods, nodes,
/// PodDisruptionBudgets and namespaces, schedules on a thread of its own,
/// and binds, updates status, preempts and records Events through `client`.
/// Call it from a multi-threaded runtime: the watches and API calls run
/// there.
pub async fn run(
    client: kube::Client,
    options: SchedulerOptions,
    shutdown: CancellationToken,
) -> Result<(), RunError> {
    // Also cancelled when this function fails, to stop what it started.
    let stop = shutdown.child_token();
    let (tx, rx) = unbounded_channel();
    let mut synced = Vec::new();
    let feeds = vec![
        watch_all::<Node>(&client, &tx, &stop, &mut synced),
        start_feed(
            Api::<Pod>::all(client.clone()),
            watcher::Config::default()
                .any_semantic()
                .fields(NON_TERMINAL_PODS),
            &tx,
            &stop,
            &mut synced,
        ),
        watch_all::<PodDisruptionBudget>(&client, &tx, &stop, &mut synced),
        watch_all::<Namespace>(&client, &tx, &stop, &mut synced),
        // Default topology spreading selects by these owners' selectors.
        watch_all::<Service>(&client, &tx, &stop, &mut synced),
        watch_all::<ReplicationController>(&client, &tx, &stop, &mut synced),
        watch_all::<ReplicaSet>(&client, &tx, &stop, &mut synced),
        watch_all::<StatefulSet>(&client, &tx, &stop, &mut synced),
    ];

    let result = schedule(client, options, tx, rx, synced, &stop).await;
    stop.cancel();
    for f in feeds {
        let _ = f.await;
    }
    result
}

async fn schedule(
    client: kube::Client,
    options: SchedulerOptions,
    tx: UnboundedSender<SchedulerInput>,
    rx: tokio::sync::mpsc::UnboundedReceiver<SchedulerInput>,
    synced: Vec<oneshot::Receiver<()>>,
    stop: &CancellationToken,
) -> Result<(), RunError> {
    tokio::select! {
        _ = stop.cancelled() => return Ok(()),
        _ = futures::future::join_all(synced) => {}
    }
    tracing::info!(scheduler = %options.scheduler_name, "caches synced, scheduling");

    let recorder = Recorder::with_options(
        client.clone(),
        options.scheduler_name.clone(),
        options.event_host.clone(),
        RecorderOptions {
            queue: options.event_queue,
            ..RecorderOptions::default()
        },
    );
    let effects = KubeEffects::new(
        client,
        tokio::runtime::Handle::current(),
        recorder.clone(),
        tx,
        options.bind_concurrency,
        options.scheduler_name.clone(),
        stop.clone(),
    );
    let (permits, concurrency) = effects.permits();
    let mut profile = default_profile(&options.scheduler_name);
    profile.percentage_of_nodes_to_score = options.percentage_of_nodes_to_score;

    let (done_tx, mut done_rx) = oneshot::channel::<Result<(), RunError>>();
    let thread_stop = stop.clone();
    std::thread::Builder::new()
        .name("kelson-scheduler".into())
        .spawn(move || {
            // Scheduling is CPU-bound: a runtime of its own keeps it from
            // starving the watches and API calls, and them from delaying it.
            let r = match tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
            {
                Ok(rt) => {
                    rt.block_on(async move {
                        let sched = Scheduler::new(profile, effects);
                        tokio::select! {
                            _ = driver::run(sched, rx) => {}
                            _ = thread_stop.cancelled() => {}
                        }
                    });
                    Ok(())
                }
                Err(e) => Err(RunError::Runtime(e)),
            };
            let _ = done_tx.send(r);
        })
        .map_err(RunError::Thread)?;

    let early = tokio::select! {
        biased;
        _ = stop.cancelled() => None,
        r = &mut done_rx => Some(r),
    };
    let result = match early {
        None => {
            let _ = done_rx.await;
            Ok(())
        }
        Some(Ok(Err(e))) => Err(e),
        // Cancelled while this task was not looking.
        Some(_) if stop.is_cancelled() => Ok(()),
        // Otherwise the thread only ends by itself when it panicked.
        Some(_) => Err(RunError::SchedulerStopped),
    };
    stop.cancel();
    // Let the calls in flight finish (queued ones are skipped), then the
    // Events recorded so far.
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, KubeEffects::drain(&permits, concurrency)).await;
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, recorder.flush()).await;
    result
}
