//! Leader election against a real API server: two candidates on one Lease.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Event;
use kelson_runtime::events::Recorder;
use kelson_runtime::leader::{LeaderElectionConfig, LeaderElector, Outcome};
use kelson_runtime::testing::TestCluster;
use kelson_runtime::CancellationToken;
use kube::Api;

fn fast(release_on_cancel: bool) -> LeaderElectionConfig {
    LeaderElectionConfig {
        lease_duration: Duration::from_secs(2),
        renew_deadline: Duration::from_secs(1),
        retry_period: Duration::from_millis(200),
        release_on_cancel,
    }
}

/// Starts a candidate whose work counts how many leaders act at once.
struct Candidate {
    shutdown: CancellationToken,
    leading: tokio::sync::watch::Receiver<bool>,
    task: tokio::task::JoinHandle<Outcome>,
}

async fn candidate(
    cluster: &TestCluster,
    id: &str,
    release: bool,
    active: Arc<AtomicUsize>,
    max_active: Arc<AtomicUsize>,
    recorder: Option<Recorder>,
) -> Candidate {
    let client = cluster
        .component_client("system:kube-scheduler", &[], "kelson-scheduler")
        .await
        .unwrap();
    let mut elector =
        LeaderElector::new(client, "kube-system", "kube-scheduler", id, fast(release)).unwrap();
    if let Some(r) = recorder {
        elector = elector.with_recorder(r);
    }
    let leading = elector.leadership();
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    let task = tokio::spawn(async move {
        elector
            .run(&stop, move |token| async move {
                let now = active.fetch_add(1, Ordering::SeqCst) + 1;
                max_active.fetch_max(now, Ordering::SeqCst);
                token.cancelled().await;
                active.fetch_sub(1, Ordering::SeqCst);
            })
            .await
    });
    Candidate {
        shutdown,
        leading,
        task,
    }
}

async fn wait_leading(c: &mut Candidate, within: Duration) -> Duration {
    let start = Instant::now();
    tokio::time::timeout(within, c.leading.wait_for(|l| *l))
        .await
        .expect("candidate did not become leader in time")
        .unwrap();
    start.elapsed()
}

async fn lease(cluster: &TestCluster) -> Lease {
    let client = cluster.admin_client("test").await.unwrap();
    Api::<Lease>::namespaced(client, "kube-system")
        .get("kube-scheduler")
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_leader_and_takeover_after_expiry_when_the_leader_dies() {
    let cluster = TestCluster::start().await.unwrap();
    let active = Arc::new(AtomicUsize::new(0));
    let max_active = Arc::new(AtomicUsize::new(0));
    let mut a = candidate(
        &cluster,
        "host-a_1",
        false,
        active.clone(),
        max_active.clone(),
        None,
    )
    .await;
    wait_leading(&mut a, Duration::from_secs(5)).await;
    let mut b = candidate(
        &cluster,
        "host-b_2",
        false,
        active.clone(),
        max_active.clone(),
        None,
    )
    .await;
    // b keeps trying while a renews: a stays the only leader.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(*a.leading.borrow());
    assert!(!*b.leading.borrow());
    assert_eq!(max_active.load(Ordering::SeqCst), 1);

    let l = lease(&cluster).await;
    let spec = l.spec.clone().unwrap();
    assert_eq!(spec.holder_identity.as_deref(), Some("host-a_1"));
    assert_eq!(spec.lease_duration_seconds, Some(2));
    assert_eq!(spec.lease_transitions, Some(0));
    // MicroTime: six fractional digits on the wire.
    let raw = serde_json::to_value(&l).unwrap();
    let renew = raw["spec"]["renewTime"].as_str().unwrap();
    assert_eq!(renew.len(), "2025-01-01T00:00:00.000000Z".len(), "{renew}");
    assert!(spec.renew_time.unwrap().0 > spec.acquire_time.unwrap().0);

    // a dies without releasing (its task is aborted): b waits out the lease.
    a.task.abort();
    let _ = a.task.await;
    let took = wait_leading(&mut b, Duration::from_secs(10)).await;
    assert!(
        took >= Duration::from_millis(1500),
        "took over after {took:?}, before the lease expired"
    );
    let spec = lease(&cluster).await.spec.unwrap();
    assert_eq!(spec.holder_identity.as_deref(), Some("host-b_2"));
    assert_eq!(spec.lease_transitions, Some(1));

    // Clean shutdown without release: the holder stays recorded.
    b.shutdown.cancel();
    assert_eq!(b.task.await.unwrap(), Outcome::Shutdown);
    let spec = lease(&cluster).await.spec.unwrap();
    assert_eq!(spec.holder_identity.as_deref(), Some("host-b_2"));
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_on_cancel_hands_over_at_once() {
    let cluster = TestCluster::start().await.unwrap();
    let active = Arc::new(AtomicUsize::new(0));
    let max_active = Arc::new(AtomicUsize::new(0));
    let mut a = candidate(
        &cluster,
        "host-a_1",
        true,
        active.clone(),
        max_active.clone(),
        None,
    )
    .await;
    wait_leading(&mut a, Duration::from_secs(5)).await;
    let mut b = candidate(
        &cluster,
        "host-b_2",
        true,
        active.clone(),
        max_active.clone(),
        None,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(!*b.leading.borrow());

    a.shutdown.cancel();
    assert_eq!(a.task.await.unwrap(), Outcome::Shutdown);
    // The work stopped before the Lease was handed back.
    assert_eq!(active.load(Ordering::SeqCst), 0);
    // b sees the empty holder on its next try (retry 200 ms, jitter up to
    // 2.2x): well before a 2 s lease would have expired.
    let took = wait_leading(&mut b, Duration::from_secs(5)).await;
    assert!(took < Duration::from_millis(1500), "took {took:?}");
    let spec = lease(&cluster).await.spec.unwrap();
    assert_eq!(spec.holder_identity.as_deref(), Some("host-b_2"));
    assert_eq!(spec.lease_transitions, Some(1));
    assert_eq!(max_active.load(Ordering::SeqCst), 1);

    // b's release leaves an empty holder with a one-second lease.
    b.shutdown.cancel();
    assert_eq!(b.task.await.unwrap(), Outcome::Shutdown);
    let spec = lease(&cluster).await.spec.unwrap();
    assert_eq!(spec.holder_identity.as_deref(), Some(""));
    assert_eq!(spec.lease_duration_seconds, Some(1));
    assert_eq!(spec.lease_transitions, Some(1));
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_that_cannot_renew_stops_its_work() {
    let cluster = TestCluster::start().await.unwrap();
    let active = Arc::new(AtomicUsize::new(0));
    let max_active = Arc::new(AtomicUsize::new(0));
    let events_client = cluster.admin_client("test").await.unwrap();
    let recorder = Recorder::new(events_client, "default-scheduler", "");
    let mut a = candidate(
        &cluster,
        "host-a_1",
        false,
        active.clone(),
        max_active,
        Some(recorder.clone()),
    )
    .await;
    wait_leading(&mut a, Duration::from_secs(5)).await;
    // The work starts right after leadership is announced.
    for _ in 0..50 {
        if active.load(Ordering::SeqCst) == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(active.load(Ordering::SeqCst), 1);

    // Someone else takes the Lease over behind a's back.
    let client = cluster.admin_client("test").await.unwrap();
    let api = Api::<Lease>::namespaced(client, "kube-system");
    let mut l = api.get("kube-scheduler").await.unwrap();
    let spec = l.spec.as_mut().unwrap();
    spec.holder_identity = Some("intruder".into());
    spec.lease_duration_seconds = Some(60);
    loop {
        match api.replace("kube-scheduler", &Default::default(), &l).await {
            Ok(_) => break,
            Err(kube::Error::Api(e)) if e.code == 409 => {
                l = api.get("kube-scheduler").await.unwrap();
                let spec = l.spec.as_mut().unwrap();
                spec.holder_identity = Some("intruder".into());
                spec.lease_duration_seconds = Some(60);
            }
            Err(e) => panic!("{e}"),
        }
    }
    // Within renewDeadline (1 s) plus a retry, a gives up and its work ends.
    let outcome = tokio::time::timeout(Duration::from_secs(5), a.task)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(outcome, Outcome::LostLease);
    assert!(!*a.leading.borrow());
    assert_eq!(active.load(Ordering::SeqCst), 0);
    let spec = api.get("kube-scheduler").await.unwrap().spec.unwrap();
    assert_eq!(spec.holder_identity.as_deref(), Some("intruder"));

    // Upstream's LeaderElection events on the Lease.
    recorder.flush().await;
    let client = cluster.admin_client("test").await.unwrap();
    let events = Api::<Event>::namespaced(client, "kube-system")
        .list(&Default::default())
        .await
        .unwrap()
        .items;
    let mut messages: Vec<_> = events
        .iter()
        .filter(|e| e.reason.as_deref() == Some("LeaderElection"))
        .map(|e| {
            assert_eq!(e.involved_object.kind.as_deref(), Some("Lease"));
            assert_eq!(
                e.involved_object.api_version.as_deref(),
                Some("coordination.k8s.io/v1")
            );
            assert_eq!(e.involved_object.name.as_deref(), Some("kube-scheduler"));
            e.message.clone().unwrap_or_default()
        })
        .collect();
    messages.sort();
    assert_eq!(
        messages,
        ["host-a_1 became leader", "host-a_1 stopped leading"]
    );
    cluster.stop().await;
}
