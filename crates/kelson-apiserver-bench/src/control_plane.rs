//! The control-plane bench: a real release `kelson server` with its
//! scheduler and controller manager, simulated nodes in the bench process
//! (the `kelson-sim` library), and a kube-rs client driving workloads shaped
//! after upstream's scheduler_perf (test/integration/scheduler_perf):
//!
//! - `scheduling-basic`: SchedulingBasic — 5,000 nodes of 4 CPU / 32Gi /
//!   110 pods, 1,000 init pods, then 10,000 measured pod-default pods;
//! - `anti-affinity`: SchedulingPodAntiAffinity — 1,000 init pods in
//!   sched-0 and 2,000 measured in sched-1, all `color: green` with a
//!   required anti-affinity per hostname over both namespaces;
//! - `topology-spread`: TopologySpreading — nodes over 3 zones, 5,000 init
//!   pod-default pods, then 5,000 `color: blue` pods spread DoNotSchedule
//!   over zones (maxSkew 1 by default; upstream's template uses 5);
//! - `deployment`: a Deployment of 30,000 replicas over 1,000 nodes, from
//!   create to every pod Running (the sim runs them);
//! - `rss`: the server's VmRSS with 5,000 idle nodes, then at 50,000
//!   Running pods.
//!
//! Each scenario gets a fresh server and data dir. For the scheduling
//! scenarios a pod's latency runs from its create being sent to the bench's
//! pod watch showing `spec.nodeName`; throughput is bound pods over the
//! time from the first create sent to the last binding seen. The bench keeps
//! per pod only a few timestamps.

pub mod templates;
pub mod tracker;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use kelson_sim::{Sim, SimConfig};
use tokio_util::sync::CancellationToken;

use crate::server::{self, Components, Memory, ServerProc};
use crate::stats::percentile;
use templates::PodKind;
use tracker::{latencies, Shared, Tracker};

#[derive(Debug, thiserror::Error)]
pub enum ControlPlaneError {
    #[error("{0}")]
    Server(#[from] server::ServerError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("client: {0}")]
    Client(#[from] kelson_runtime::client::ClientError),
    #[error("{what}: {source}")]
    Kube {
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error("simulated nodes: {0}")]
    Sim(#[from] kelson_sim::SimError),
    #[error("building a request: {0}")]
    Request(#[from] http::Error),
    #[error("{0}")]
    Invalid(String),
}

type Result<T> = std::result::Result<T, ControlPlaneError>;

/// The workloads, in the order `all` runs them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum Scenario {
    SchedulingBasic,
    AntiAffinity,
    TopologySpread,
    Deployment,
    Rss,
}

impl Scenario {
    pub const ALL: [Scenario; 5] = [
        Scenario::SchedulingBasic,
        Scenario::AntiAffinity,
        Scenario::TopologySpread,
        Scenario::Deployment,
        Scenario::Rss,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Scenario::SchedulingBasic => "scheduling-basic",
            Scenario::AntiAffinity => "anti-affinity",
            Scenario::TopologySpread => "topology-spread",
            Scenario::Deployment => "deployment",
            Scenario::Rss => "rss",
        }
    }
}

/// Benchmark of Kelson's control plane: scheduling throughput and latency,
/// a large Deployment, and memory, against a real `kelson server` with
/// simulated nodes.
#[derive(clap::Parser, Debug, Clone)]
#[command(version)]
pub struct Args {
    /// The kelson binary [default: `kelson` next to this executable]
    #[arg(long)]
    pub kelson: Option<PathBuf>,
    /// Scenario to run; repeat for several [default: all]
    #[arg(long, value_enum)]
    pub scenario: Vec<Scenario>,
    /// Simulated nodes [default: 5000; 1000 for deployment]
    #[arg(long)]
    pub nodes: Option<u32>,
    /// Measured pods (replicas for deployment, the total for rss)
    /// [default: the scenario's upstream size]
    #[arg(long)]
    pub pods: Option<usize>,
    /// Pods created and scheduled before the measured ones
    /// [default: the scenario's upstream size, scaled to --nodes]
    #[arg(long)]
    pub init_pods: Option<usize>,
    /// Creates in flight at once (kube-rs speaks HTTP/1.1: one connection
    /// each)
    #[arg(long, default_value_t = 64)]
    pub clients: usize,
    /// maxSkew of the topology-spread pods
    #[arg(long, default_value_t = 1)]
    pub max_skew: u32,
    /// Give up waiting for pods after this many seconds without progress
    #[arg(long, default_value_t = 120)]
    pub stall_timeout: u64,
}

/// The sizes one scenario runs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sizes {
    pub nodes: u32,
    pub init_pods: usize,
    pub pods: usize,
    pub zones: Option<u32>,
}

/// Pods of the bench's shape (100m CPU, 500Mi) one sim node of 4 CPU and
/// 32Gi holds: CPU runs out first, at 40.
const PODS_PER_NODE: usize = 40;
const NODE_CPU: &str = "4";
const NODE_MEMORY: &str = "32Gi";
const NODE_PODS: u32 = 110;
/// Every node gets a /24 podCIDR from this (32,768 of them); the server's
/// default /16 would serve only 256 nodes and leave the rest waiting.
const CLUSTER_CIDR: &str = "10.128.0.0/9";

/// Upstream's sizes (scaled where upstream's depend on the node count),
/// overridden by the flags.
pub fn sizes(s: Scenario, a: &Args) -> Result<Sizes> {
    let default_nodes = if s == Scenario::Deployment {
        1000
    } else {
        5000
    };
    let nodes = a.nodes.unwrap_or(default_nodes);
    if nodes == 0 {
        return Err(ControlPlaneError::Invalid(
            "--nodes must be positive".into(),
        ));
    }
    let n = nodes as usize;
    let out = match s {
        Scenario::SchedulingBasic => Sizes {
            nodes,
            init_pods: a.init_pods.unwrap_or(n.min(1000)),
            pods: a.pods.unwrap_or(10_000),
            zones: None,
        },
        Scenario::AntiAffinity => {
            // One pod per node at most: init and measured share the nodes.
            let init = a.init_pods.unwrap_or(n / 5).min(n);
            Sizes {
                nodes,
                init_pods: init,
                pods: a.pods.unwrap_or(2000).min(n - init),
                zones: None,
            }
        }
        Scenario::TopologySpread => Sizes {
            nodes,
            init_pods: a.init_pods.unwrap_or(n),
            pods: a.pods.unwrap_or(5000),
            zones: Some(3),
        },
        Scenario::Deployment => Sizes {
            nodes,
            init_pods: 0,
            pods: a.pods.unwrap_or(30_000),
            zones: None,
        },
        Scenario::Rss => Sizes {
            nodes,
            init_pods: 0,
            pods: a.pods.unwrap_or(50_000),
            zones: None,
        },
    };
    if out.pods == 0 {
        return Err(ControlPlaneError::Invalid(format!(
            "{}: no pods to measure with {nodes} nodes",
            s.name()
        )));
    }
    if out.init_pods + out.pods > n * PODS_PER_NODE {
        return Err(ControlPlaneError::Invalid(format!(
            "{}: {} pods do not fit on {nodes} nodes of {NODE_CPU} CPU ({PODS_PER_NODE} pods of 100m each)",
            s.name(),
            out.init_pods + out.pods
        )));
    }
    Ok(out)
}

fn progress(msg: impl std::fmt::Display) {
    eprintln!("[cp-bench] {msg}");
}

/// A fresh server with simulated nodes. Fields drop in order: the server is
/// stopped before its data dir is removed.
pub struct Cluster {
    server: ServerProc,
    pub client: kube::Client,
    sim: Option<Sim>,
    sim_stop: CancellationToken,
    /// Server start → /readyz 200.
    pub ready_in: Duration,
    /// Sim start → every node registered.
    pub registered_in: Duration,
    /// Server RSS once ready, before any node.
    pub rss_no_nodes: Memory,
    _dir: tempfile::TempDir,
}

impl Cluster {
    pub async fn start(kelson: &Path, sizes: &Sizes) -> Result<Cluster> {
        let dir = tempfile::Builder::new()
            .prefix("kelson-control-plane-bench-")
            .tempdir()?;
        let data = dir.path().join("data");
        let t = Instant::now();
        let mut server = ServerProc::spawn(
            kelson,
            &data,
            &dir.path().join("server.log"),
            Components::ControlPlane,
            &["--cluster-cidr", CLUSTER_CIDR],
        )?;
        server.wait_ready(Duration::from_secs(60)).await?;
        let ready_in = t.elapsed();
        let rss_no_nodes = server.memory()?;
        let kubeconfig = server.kubeconfig_path();
        let client =
            kelson_runtime::client_from_kubeconfig(&kubeconfig, "kelson-control-plane-bench")
                .await?;
        // The sim gets its own connection pool, as a separate kubelet would.
        let sim_client = kelson_runtime::client_from_kubeconfig(&kubeconfig, "kelson-sim").await?;
        progress(format!(
            "server pid {} ready in {:.0} ms; registering {} nodes",
            server.pid(),
            ready_in.as_secs_f64() * 1e3,
            sizes.nodes
        ));
        let config = SimConfig {
            cpu: NODE_CPU.into(),
            memory: NODE_MEMORY.into(),
            pods: NODE_PODS,
            zones: sizes.zones,
            ..SimConfig::new("sim-node", sizes.nodes)
        };
        let sim_stop = CancellationToken::new();
        let t = Instant::now();
        let sim = Sim::start(sim_client, config, sim_stop.clone()).await?;
        let registered_in = t.elapsed();
        progress(format!(
            "{} nodes registered in {:.1} s",
            sizes.nodes,
            registered_in.as_secs_f64()
        ));
        Ok(Cluster {
            server,
            client,
            sim: Some(sim),
            sim_stop,
            ready_in,
            registered_in,
            rss_no_nodes,
            _dir: dir,
        })
    }

    pub fn server_memory(&self) -> Result<Memory> {
        Ok(self.server.memory()?)
    }

    pub fn server_pid(&self) -> u32 {
        self.server.pid()
    }

    pub fn log_tail(&self) -> String {
        self.server.log_tail()
    }

    /// Stops the sim, then the server (by PID); the data dir goes with
    /// `self`.
    pub async fn stop(mut self) {
        self.sim_stop.cancel();
        if let Some(sim) = self.sim.take() {
            let _ = tokio::time::timeout(Duration::from_secs(30), sim.wait()).await;
        }
        self.server.stop();
    }

    /// Creates namespace `name` and waits (up to 30 s) for the service
    /// account controller to give it its `default` ServiceAccount, which
    /// pod admission looks for.
    pub async fn namespace(&self, name: &str) -> Result<()> {
        let req = http::Request::post("/api/v1/namespaces")
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(templates::namespace(name))?;
        self.client
            .request_text(req)
            .await
            .map_err(|source| ControlPlaneError::Kube {
                what: format!("creating namespace {name}"),
                source,
            })?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            let req =
                http::Request::get(format!("/api/v1/namespaces/{name}/serviceaccounts/default"))
                    .body(Vec::new())?;
            if self.client.request_text(req).await.is_ok() {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        progress(format!(
            "namespace {name}: no default ServiceAccount after 30 s; going on"
        ));
        Ok(())
    }
}

/// What the creators saw.
#[derive(Debug, Default)]
pub struct Creates {
    pub created: usize,
    pub failed: usize,
    /// Attempts that were answered 429/5xx or failed in transport, then
    /// retried.
    pub retries: usize,
    pub first_error: Option<String>,
    pub took: Duration,
}

/// Whether a failed create is worth sending again.
fn retryable(e: &kube::Error) -> bool {
    match e {
        kube::Error::Api(s) => matches!(s.code, 429 | 500 | 502 | 503 | 504),
        // Transport trouble: a connection reset under load.
        _ => true,
    }
}

/// POSTs `body` to `path`, retrying 429s, 5xx and transport errors up to
/// ten times; a 409 after a retry means an earlier attempt got through.
async fn create(
    client: &kube::Client,
    path: &str,
    body: Vec<u8>,
    retries: &AtomicUsize,
) -> std::result::Result<(), String> {
    let mut attempt = 0u32;
    loop {
        let req = http::Request::post(path)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(body.clone())
            .map_err(|e| e.to_string())?;
        match client.request_text(req).await {
            Ok(_) => return Ok(()),
            Err(kube::Error::Api(s)) if s.code == 409 && attempt > 0 => return Ok(()),
            Err(e) if attempt < 10 && retryable(&e) => {
                attempt += 1;
                retries.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(50 * u64::from(attempt))).await;
            }
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// Creates pods `0..n` of `shared` in `namespace`, `clients` at a time.
async fn create_pods(
    client: &kube::Client,
    namespace: &str,
    shared: &Arc<Shared>,
    n: usize,
    kind: &PodKind,
    clients: usize,
    done: &AtomicUsize,
) -> Creates {
    let path = format!("/api/v1/namespaces/{namespace}/pods");
    let retries = AtomicUsize::new(0);
    let t = Instant::now();
    let results: Vec<std::result::Result<(), String>> = futures::stream::iter(0..n)
        .map(|i| {
            let body = templates::pod(&shared.pod_name(i), kind);
            let (path, retries) = (&path, &retries);
            async move {
                shared.mark_sent(i);
                let r = create(client, path, body, retries).await;
                done.fetch_add(1, Ordering::Relaxed);
                r
            }
        })
        .buffer_unordered(clients.max(1))
        .collect()
        .await;
    let mut out = Creates {
        took: t.elapsed(),
        retries: retries.load(Ordering::Relaxed),
        ..Creates::default()
    };
    for r in results {
        match r {
            Ok(()) => out.created += 1,
            Err(e) => {
                out.failed += 1;
                out.first_error.get_or_insert(e);
            }
        }
    }
    out
}

/// What to wait for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Until {
    Bound,
    Running,
}

/// Prints progress every two seconds until dropped.
struct Ticker(tokio::task::JoinHandle<()>);

impl Ticker {
    fn start(label: String, shared: Arc<Shared>, done: Arc<AtomicUsize>, total: usize) -> Ticker {
        Ticker(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(2));
            tick.tick().await;
            loop {
                tick.tick().await;
                progress(format!(
                    "  {label}: created {}/{total}, bound {}, running {}",
                    done.load(Ordering::Relaxed),
                    shared.bound.load(Ordering::Relaxed),
                    shared.running.load(Ordering::Relaxed),
                ));
            }
        }))
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Waits until `target` pods are bound (or Running); false if the count
/// stopped moving for `stall`.
async fn wait_for(shared: &Shared, until: Until, target: u64, stall: Duration) -> bool {
    let count = || match until {
        Until::Bound => shared.bound.load(Ordering::Relaxed),
        Until::Running => shared.running.load(Ordering::Relaxed),
    };
    let mut last = count();
    let mut moved = Instant::now();
    loop {
        let now = count();
        if now >= target {
            return true;
        }
        if now != last {
            last = now;
            moved = Instant::now();
        } else if moved.elapsed() > stall {
            progress(format!(
                "giving up: {now}/{target} after {stall:?} without progress"
            ));
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// One phase of pods: created, then waited for.
struct Phase {
    shared: Arc<Shared>,
    marks: tracker::Marks,
    creates: Creates,
    complete: bool,
    server_cpu: Option<Duration>,
    bench_cpu: Option<Duration>,
    /// From the first create to the end of the wait.
    busy: Duration,
}

impl Phase {
    /// First create sent → last binding (or Running) seen.
    fn span(&self, until: Until) -> Option<Duration> {
        let last = match until {
            Until::Bound => self.shared.last_bound(),
            Until::Running => self.shared.last_running(),
        }?;
        Some(last.saturating_duration_since(self.shared.first_sent()?))
    }
}

/// A batch of pods: `n` of `kind` named `prefix0..` in `namespace`.
struct Batch<'a> {
    label: &'a str,
    namespace: &'a str,
    prefix: &'a str,
    n: usize,
    kind: &'a PodKind,
    until: Until,
}

/// Creates a batch of pods and waits until the watch shows them all bound
/// or Running.
async fn pods_phase(cluster: &Cluster, args: &Args, batch: Batch<'_>) -> Result<Phase> {
    let Batch {
        label,
        namespace,
        prefix,
        n,
        kind,
        until,
    } = batch;
    let mut tracker = Tracker::start(cluster.client.clone(), namespace, None, prefix, n);
    if !tracker.synced(Duration::from_secs(30)).await {
        return Err(ControlPlaneError::Invalid(format!(
            "the pod watch on {namespace} did not sync in 30 s"
        )));
    }
    let shared = tracker.shared.clone();
    let done = Arc::new(AtomicUsize::new(0));
    let _ticker = Ticker::start(label.to_string(), shared.clone(), done.clone(), n);
    progress(format!("{label}: creating {n} pods in {namespace}"));
    let pid = cluster.server_pid().to_string();
    let cpu_before = (server::cpu_time(&pid), server::cpu_time("self"));
    let t = Instant::now();
    let creates = create_pods(
        &cluster.client,
        namespace,
        &shared,
        n,
        kind,
        args.clients,
        &done,
    )
    .await;
    progress(format!(
        "{label}: {} created in {:.1} s ({} failed, {} retried); waiting for {}",
        creates.created,
        creates.took.as_secs_f64(),
        creates.failed,
        creates.retries,
        if until == Until::Bound {
            "bindings"
        } else {
            "Running"
        }
    ));
    if let Some(e) = &creates.first_error {
        progress(format!("{label}: first create error: {e}"));
    }
    let complete = wait_for(
        &shared,
        until,
        creates.created as u64,
        Duration::from_secs(args.stall_timeout),
    )
    .await;
    let busy = t.elapsed();
    let cpu_of = |b: Option<Duration>, a: Option<Duration>| Some(a?.saturating_sub(b?));
    let server_cpu = cpu_of(cpu_before.0, server::cpu_time(&pid));
    let bench_cpu = cpu_of(cpu_before.1, server::cpu_time("self"));
    let marks = tracker.finish().await;
    Ok(Phase {
        shared,
        marks,
        creates,
        complete,
        server_cpu,
        bench_cpu,
        busy,
    })
}

/// The figures of one scenario: table rows and the same values for JSON.
#[derive(Debug, Default)]
pub struct Figures {
    pub rows: Vec<(String, String)>,
    pub json: serde_json::Map<String, serde_json::Value>,
}

fn fmt_ms(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1e3;
    if ms >= 10_000.0 {
        format!("{:.2} s", ms / 1e3)
    } else if ms >= 100.0 {
        format!("{ms:.0} ms")
    } else {
        format!("{ms:.1} ms")
    }
}

fn round3(x: f64) -> f64 {
    (x * 1e3).round() / 1e3
}

impl Figures {
    fn row(&mut self, label: impl Into<String>, value: impl Into<String>) {
        self.rows.push((label.into(), value.into()));
    }
    fn count(&mut self, label: &str, key: &str, n: u64) {
        self.row(label, n.to_string());
        self.json.insert(key.into(), n.into());
    }
    fn time(&mut self, label: &str, key: &str, d: Option<Duration>) {
        self.row(label, d.map_or_else(|| "-".into(), fmt_ms));
        self.json.insert(
            format!("{key}_ms"),
            d.map_or(serde_json::Value::Null, |d| {
                round3(d.as_secs_f64() * 1e3).into()
            }),
        );
    }
    fn rate(&mut self, label: &str, key: &str, r: Option<f64>) {
        self.row(label, r.map_or_else(|| "-".into(), |r| format!("{r:.0}")));
        self.json.insert(
            key.into(),
            r.map_or(serde_json::Value::Null, |r| round3(r).into()),
        );
    }
    fn mem(&mut self, label: &str, key: &str, kib: u64) {
        self.row(label, format!("{:.1} MiB", kib as f64 / 1024.0));
        self.json
            .insert(format!("{key}_mib"), round3(kib as f64 / 1024.0).into());
    }
    fn cpu(&mut self, label: &str, key: &str, d: Option<Duration>, busy: Duration) {
        let value = d.map_or_else(
            || "-".into(),
            |d| {
                format!(
                    "{:.1} s ({:.0} % of {:.1} s)",
                    d.as_secs_f64(),
                    100.0 * d.as_secs_f64() / busy.as_secs_f64().max(1e-9),
                    busy.as_secs_f64()
                )
            },
        );
        self.row(label, value);
        self.json.insert(
            format!("{key}_s"),
            d.map_or(serde_json::Value::Null, |d| round3(d.as_secs_f64()).into()),
        );
    }
    fn flag(&mut self, label: &str, key: &str, v: bool) {
        self.row(label, if v { "yes" } else { "NO" });
        self.json.insert(key.into(), v.into());
    }

    fn sizes(&mut self, s: &Sizes) {
        self.count("nodes", "nodes", u64::from(s.nodes));
        if let Some(z) = s.zones {
            self.count("zones", "zones", u64::from(z));
        }
        if s.init_pods > 0 {
            self.count(
                "init pods (scheduled first, not measured)",
                "init_pods",
                s.init_pods as u64,
            );
        }
    }

    fn cluster(&mut self, c: &Cluster) {
        self.time(
            "server start → /readyz 200",
            "server_ready",
            Some(c.ready_in),
        );
        self.time(
            "all nodes registered (sim)",
            "nodes_registered",
            Some(c.registered_in),
        );
    }

    fn creates(&mut self, c: &Creates) {
        self.count("pods created", "created", c.created as u64);
        if c.failed > 0 || c.retries > 0 {
            self.count("creates failed", "create_failed", c.failed as u64);
            self.count(
                "creates retried (429/5xx/transport)",
                "create_retries",
                c.retries as u64,
            );
        }
        self.time(
            "create phase (all answers in)",
            "create_phase",
            Some(c.took),
        );
    }

    /// Throughput and latency of a measured scheduling phase.
    fn scheduling(&mut self, p: &Phase) {
        self.creates(&p.creates);
        let bound = p.shared.bound.load(Ordering::Relaxed);
        self.count("pods bound (seen through the watch)", "bound", bound);
        self.flag("all created pods bound", "complete", p.complete);
        let span = p.span(Until::Bound);
        self.time(
            "first create sent → last binding seen",
            "measured_span",
            span,
        );
        self.rate(
            "throughput (pods bound/s)",
            "throughput_pods_per_s",
            span.map(|s| bound as f64 / s.as_secs_f64().max(1e-9)),
        );
        let lat = latencies(&p.shared, &p.marks.bound);
        for (q, key) in [
            (50.0, "latency_p50"),
            (90.0, "latency_p90"),
            (99.0, "latency_p99"),
            (100.0, "latency_max"),
        ] {
            let label = if q == 100.0 {
                "scheduling latency max".to_string()
            } else {
                format!("scheduling latency p{q:.0} (create sent → nodeName seen)")
            };
            self.time(&label, key, percentile(&lat, q));
        }
        self.cpu(
            "server CPU, measured phase",
            "server_cpu",
            p.server_cpu,
            p.busy,
        );
        self.cpu(
            "bench CPU (sim + clients), measured phase",
            "bench_cpu",
            p.bench_cpu,
            p.busy,
        );
        self.count(
            "pod watch errors (retried)",
            "watch_errors",
            p.shared.watch_errors.load(Ordering::Relaxed),
        );
    }
}

fn check_phase(label: &str, p: &Phase) -> Result<()> {
    if p.creates.created == 0 {
        return Err(ControlPlaneError::Invalid(format!(
            "{label}: no pod could be created: {}",
            p.creates.first_error.as_deref().unwrap_or("?")
        )));
    }
    Ok(())
}

/// Runs one scenario on a fresh cluster; stops it whatever happens.
pub async fn run_scenario(kelson: &Path, args: &Args, s: Scenario) -> Result<Figures> {
    let sizes = sizes(s, args)?;
    progress(format!("=== {} ({sizes:?})", s.name()));
    let cluster = Cluster::start(kelson, &sizes).await?;
    let r = match s {
        Scenario::SchedulingBasic => scheduling_basic(&cluster, args, &sizes).await,
        Scenario::AntiAffinity => anti_affinity(&cluster, args, &sizes).await,
        Scenario::TopologySpread => topology_spread(&cluster, args, &sizes).await,
        Scenario::Deployment => deployment(&cluster, args, &sizes).await,
        Scenario::Rss => rss(&cluster, args, &sizes).await,
    };
    let r = r.map(|mut f| {
        if let Ok(m) = cluster.server_memory() {
            f.mem("server RSS at the end", "server_rss_end", m.rss_kib);
            f.mem("server peak RSS (VmHWM)", "server_hwm", m.hwm_kib);
        }
        if let Ok(m) = server::memory_of(std::process::id()) {
            f.mem(
                "bench peak RSS (VmHWM, sim included)",
                "bench_hwm",
                m.hwm_kib,
            );
        }
        f
    });
    if r.is_err() {
        eprintln!("server log tail:\n{}", cluster.log_tail());
    }
    cluster.stop().await;
    r
}

async fn init_phase(
    cluster: &Cluster,
    args: &Args,
    ns: &str,
    n: usize,
    kind: &PodKind,
) -> Result<()> {
    if n == 0 {
        return Ok(());
    }
    let p = pods_phase(
        cluster,
        args,
        Batch {
            label: "init",
            namespace: ns,
            prefix: "init-",
            n,
            kind,
            until: Until::Bound,
        },
    )
    .await?;
    check_phase("init", &p)?;
    progress(format!(
        "init: {} bound in {:.1} s",
        p.shared.bound.load(Ordering::Relaxed),
        p.busy.as_secs_f64()
    ));
    Ok(())
}

async fn scheduling_basic(cluster: &Cluster, args: &Args, sizes: &Sizes) -> Result<Figures> {
    let ns = "sched-0";
    cluster.namespace(ns).await?;
    init_phase(cluster, args, ns, sizes.init_pods, &PodKind::Default).await?;
    let p = pods_phase(
        cluster,
        args,
        Batch {
            label: "measured",
            namespace: ns,
            prefix: "pod-",
            n: sizes.pods,
            kind: &PodKind::Default,
            until: Until::Bound,
        },
    )
    .await?;
    check_phase("measured", &p)?;
    let mut f = Figures::default();
    f.sizes(sizes);
    f.cluster(cluster);
    f.scheduling(&p);
    Ok(f)
}

async fn anti_affinity(cluster: &Cluster, args: &Args, sizes: &Sizes) -> Result<Figures> {
    let (ns0, ns1) = ("sched-0", "sched-1");
    cluster.namespace(ns0).await?;
    cluster.namespace(ns1).await?;
    let kind = PodKind::AntiAffinity {
        namespaces: vec![ns1.into(), ns0.into()],
    };
    init_phase(cluster, args, ns0, sizes.init_pods, &kind).await?;
    let p = pods_phase(
        cluster,
        args,
        Batch {
            label: "measured",
            namespace: ns1,
            prefix: "pod-",
            n: sizes.pods,
            kind: &kind,
            until: Until::Bound,
        },
    )
    .await?;
    check_phase("measured", &p)?;
    let mut f = Figures::default();
    f.sizes(sizes);
    f.cluster(cluster);
    f.scheduling(&p);
    Ok(f)
}

async fn topology_spread(cluster: &Cluster, args: &Args, sizes: &Sizes) -> Result<Figures> {
    let ns = "sched-0";
    cluster.namespace(ns).await?;
    init_phase(cluster, args, ns, sizes.init_pods, &PodKind::Default).await?;
    let kind = PodKind::Spread {
        max_skew: args.max_skew,
    };
    let p = pods_phase(
        cluster,
        args,
        Batch {
            label: "measured",
            namespace: ns,
            prefix: "pod-",
            n: sizes.pods,
            kind: &kind,
            until: Until::Bound,
        },
    )
    .await?;
    check_phase("measured", &p)?;
    let mut f = Figures::default();
    f.sizes(sizes);
    f.count("maxSkew", "max_skew", u64::from(args.max_skew));
    f.cluster(cluster);
    f.scheduling(&p);
    Ok(f)
}

async fn deployment(cluster: &Cluster, args: &Args, sizes: &Sizes) -> Result<Figures> {
    let ns = "deploy";
    cluster.namespace(ns).await?;
    let replicas = u32::try_from(sizes.pods).unwrap_or(u32::MAX);
    let mut tracker = Tracker::start(cluster.client.clone(), ns, None, "", 0);
    if !tracker.synced(Duration::from_secs(30)).await {
        return Err(ControlPlaneError::Invalid(
            "the pod watch did not sync in 30 s".into(),
        ));
    }
    let shared = tracker.shared.clone();
    let _ticker = Ticker::start(
        "deployment".into(),
        shared.clone(),
        Arc::new(AtomicUsize::new(1)),
        1,
    );
    progress(format!(
        "deployment: creating a Deployment of {replicas} replicas"
    ));
    let pid = cluster.server_pid().to_string();
    let cpu_before = (server::cpu_time(&pid), server::cpu_time("self"));
    let req = http::Request::post(format!("/apis/apps/v1/namespaces/{ns}/deployments"))
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(templates::deployment("web", replicas))?;
    let t0 = Instant::now();
    cluster
        .client
        .request_text(req)
        .await
        .map_err(|source| ControlPlaneError::Kube {
            what: "creating the Deployment".into(),
            source,
        })?;
    let complete = wait_for(
        &shared,
        Until::Running,
        u64::from(replicas),
        Duration::from_secs(args.stall_timeout),
    )
    .await;
    let busy = t0.elapsed();
    let cpu_of = |b: Option<Duration>, a: Option<Duration>| Some(a?.saturating_sub(b?));
    let server_cpu = cpu_of(cpu_before.0, server::cpu_time(&pid));
    let bench_cpu = cpu_of(cpu_before.1, server::cpu_time("self"));
    tracker.finish().await;
    let since = |i: Option<Instant>| i.map(|i| i.saturating_duration_since(t0));
    let running = shared.running.load(Ordering::Relaxed);
    let to_running = since(shared.last_running());
    let mut f = Figures::default();
    f.sizes(sizes);
    f.cluster(cluster);
    f.count("replicas", "replicas", u64::from(replicas));
    f.count("pods Running (seen through the watch)", "running", running);
    f.flag("all replicas Running", "complete", complete);
    f.time(
        "create → last pod bound",
        "to_all_bound",
        since(shared.last_bound()),
    );
    f.time("create → last pod Running", "to_all_running", to_running);
    f.rate(
        "rate (pods Running/s)",
        "running_pods_per_s",
        to_running.map(|d| running as f64 / d.as_secs_f64().max(1e-9)),
    );
    f.cpu(
        "server CPU, create to all Running",
        "server_cpu",
        server_cpu,
        busy,
    );
    f.cpu(
        "bench CPU (sim + watch), create to all Running",
        "bench_cpu",
        bench_cpu,
        busy,
    );
    f.count(
        "pod watch errors (retried)",
        "watch_errors",
        shared.watch_errors.load(Ordering::Relaxed),
    );
    Ok(f)
}

async fn rss(cluster: &Cluster, args: &Args, sizes: &Sizes) -> Result<Figures> {
    let settle = Duration::from_secs(5);
    tokio::time::sleep(settle).await;
    let idle = cluster.server_memory()?;
    let ns = "rss";
    cluster.namespace(ns).await?;
    let p = pods_phase(
        cluster,
        args,
        Batch {
            label: "rss",
            namespace: ns,
            prefix: "pod-",
            n: sizes.pods,
            kind: &PodKind::Default,
            until: Until::Running,
        },
    )
    .await?;
    check_phase("rss", &p)?;
    tokio::time::sleep(settle).await;
    let loaded = cluster.server_memory()?;
    let mut f = Figures::default();
    f.sizes(sizes);
    f.cluster(cluster);
    f.mem(
        "server RSS, ready, no nodes",
        "server_rss_no_nodes",
        cluster.rss_no_nodes.rss_kib,
    );
    f.mem(
        &format!("server RSS, {} idle nodes (after 5 s)", sizes.nodes),
        "server_rss_idle_nodes",
        idle.rss_kib,
    );
    f.creates(&p.creates);
    let running = p.shared.running.load(Ordering::Relaxed);
    f.count("pods Running (seen through the watch)", "running", running);
    f.flag("all created pods Running", "complete", p.complete);
    f.time(
        "first create → last pod Running",
        "to_all_running",
        p.span(Until::Running),
    );
    f.mem(
        &format!(
            "server RSS, {running} Running pods on {} nodes (after 5 s)",
            sizes.nodes
        ),
        "server_rss_loaded",
        loaded.rss_kib,
    );
    f.cpu(
        "server CPU, creates to all Running",
        "server_cpu",
        p.server_cpu,
        p.busy,
    );
    Ok(f)
}

/// The load average (1, 5, 15 minutes) as /proc/loadavg shows it.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "?".into())
}

/// Prints one scenario's table.
pub fn print_table(s: Scenario, f: &Figures) {
    println!();
    println!("{}", s.name());
    println!("{}", "-".repeat(96));
    for (label, value) in &f.rows {
        println!("{label:<60} {value}");
    }
}

/// Runs the scenarios the flags ask for, prints a table per scenario and
/// finally one JSON line with every figure.
pub async fn run(args: Args) -> Result<bool> {
    let kelson = match args.kelson.clone() {
        Some(p) => p,
        None => std::env::current_exe()?.with_file_name("kelson"),
    };
    if !kelson.is_file() {
        return Err(ControlPlaneError::Invalid(format!(
            "no kelson binary at {} (build it with `cargo build --release -p kelson`, or pass --kelson)",
            kelson.display()
        )));
    }
    let mut scenarios = if args.scenario.is_empty() {
        Scenario::ALL.to_vec()
    } else {
        args.scenario.clone()
    };
    scenarios.sort();
    scenarios.dedup();
    // Reject impossible sizes before starting anything.
    for &s in &scenarios {
        sizes(s, &args)?;
    }
    kelson_runtime::client::install_crypto_provider();
    let load_before = load_average();
    let mut all = serde_json::Map::new();
    let mut ok = true;
    for &s in &scenarios {
        match run_scenario(&kelson, &args, s).await {
            Ok(f) => {
                print_table(s, &f);
                all.insert(s.name().into(), serde_json::Value::Object(f.json));
            }
            Err(e) => {
                ok = false;
                eprintln!("error: {}: {e}", s.name());
                all.insert(s.name().into(), serde_json::json!({"error": e.to_string()}));
            }
        }
    }
    let load_after = load_average();
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!();
    println!("machine: {cpus} CPUs; load average before {load_before} / after {load_after}");
    let line = serde_json::json!({
        "bench": "kelson-control-plane-bench",
        "cpus": cpus,
        "load_before": load_before,
        "load_after": load_after,
        "scenarios": all,
    });
    println!("{line}");
    Ok(ok)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn args(extra: &[&str]) -> Args {
        Args::parse_from(std::iter::once("bench").chain(extra.iter().copied()))
    }

    #[test]
    fn default_sizes_are_upstreams() {
        let a = args(&[]);
        let s = |sc| sizes(sc, &a).unwrap();
        assert_eq!(
            s(Scenario::SchedulingBasic),
            Sizes {
                nodes: 5000,
                init_pods: 1000,
                pods: 10_000,
                zones: None
            }
        );
        assert_eq!(
            s(Scenario::AntiAffinity),
            Sizes {
                nodes: 5000,
                init_pods: 1000,
                pods: 2000,
                zones: None
            }
        );
        assert_eq!(
            s(Scenario::TopologySpread),
            Sizes {
                nodes: 5000,
                init_pods: 5000,
                pods: 5000,
                zones: Some(3)
            }
        );
        assert_eq!(
            s(Scenario::Deployment),
            Sizes {
                nodes: 1000,
                init_pods: 0,
                pods: 30_000,
                zones: None
            }
        );
        assert_eq!(
            s(Scenario::Rss),
            Sizes {
                nodes: 5000,
                init_pods: 0,
                pods: 50_000,
                zones: None
            }
        );
    }

    #[test]
    fn small_runs_scale_and_anti_affinity_fits_one_pod_per_node() {
        let a = args(&["--nodes", "200", "--pods", "1000"]);
        let aa = sizes(Scenario::AntiAffinity, &a).unwrap();
        assert_eq!((aa.init_pods, aa.pods), (40, 160));
        let basic = sizes(Scenario::SchedulingBasic, &a).unwrap();
        assert_eq!((basic.init_pods, basic.pods), (200, 1000));
        let spread = sizes(Scenario::TopologySpread, &a).unwrap();
        assert_eq!((spread.init_pods, spread.pods), (200, 1000));
    }

    #[test]
    fn sizes_that_cannot_fit_are_refused() {
        let a = args(&["--nodes", "10", "--pods", "1000"]);
        assert!(sizes(Scenario::SchedulingBasic, &a).is_err());
        assert!(sizes(Scenario::Rss, &args(&["--nodes", "0"])).is_err());
        let full = args(&["--nodes", "5", "--init-pods", "5"]);
        assert!(
            sizes(Scenario::AntiAffinity, &full).is_err(),
            "no node left"
        );
    }

    #[test]
    fn scenario_flag_names() {
        let a = args(&["--scenario", "scheduling-basic", "--scenario", "rss"]);
        assert_eq!(a.scenario, vec![Scenario::SchedulingBasic, Scenario::Rss]);
        for s in Scenario::ALL {
            let parsed = args(&["--scenario", s.name()]);
            assert_eq!(parsed.scenario, vec![s]);
        }
    }

    #[test]
    fn figures_keep_rows_and_json_together() {
        let mut f = Figures::default();
        f.time("t", "t", Some(Duration::from_micros(1500)));
        f.time("none", "none", None);
        f.rate("r", "r", Some(1234.5678));
        f.mem("m", "m", 2048);
        assert_eq!(f.rows[0], ("t".to_string(), "1.5 ms".to_string()));
        assert_eq!(f.json["t_ms"], 1.5);
        assert!(f.json["none_ms"].is_null());
        assert_eq!(f.json["r"], 1234.568);
        assert_eq!(f.json["m_mib"], 2.0);
        assert_eq!(fmt_ms(Duration::from_secs(12)), "12.00 s");
    }
}
