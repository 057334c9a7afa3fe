//! # kelson-apiserver-bench
//!
//! Drives a real `kelson server` the way a busy cluster would and prints
//! figures (it asserts nothing):
//!
//! 1. starts the server on a fresh temporary data dir and times start →
//!    first 200 from `/readyz` (polled every millisecond), stops it, and
//!    times a restart on the same data dir; the restarted server is the one
//!    measured from then on;
//! 2. reads its idle RSS (VmRSS of /proc/PID/status after a 1 s settle);
//! 3. creates `--pods` pods in namespace `bench` from `--clients`
//!    clients, each on its own HTTP/2 connection sending one request at a
//!    time, with nothing else going on; a create's latency runs from sending
//!    the request to having read the whole response;
//! 4. times full lists of `/api/v1/namespaces/bench/pods` and
//!    `/api/v1/pods` (min and median of `--list-runs`, with their size) and
//!    reads RSS with all pods stored;
//! 5. opens `--watches` watches on the pods from the current
//!    resourceVersion (`?watch=1&resourceVersion=RV`), over HTTP/2
//!    connections of `--watches-per-conn` streams each (the server's HTTP/2
//!    limit is hyper's default of 200 concurrent streams), then changes
//!    every pod once (a merge patch adding a label) from `--clients`
//!    clients;
//! 6. waits until every watch has seen every change; a delivery's latency
//!    runs from the moment its patch was **sent** to the moment the reader
//!    had the MODIFIED event; reads RSS and the peak (VmHWM).
//!
//! Unexpected answers (429s included) are counted by status, and watches
//! that end early (ERROR events such as 410 Expired, closed streams,
//! transport errors) by cause.
//!
//! Run it with a release build of both binaries:
//!
//! ```text
//! cargo build --release -p kelson -p kelson-apiserver-bench
//! target/release/kelson-apiserver-bench [--kelson PATH] [--pods 10000] \
//!     [--clients 64] [--watches 1000]
//! ```
//!
//! By default the `kelson` binary next to the bench's own executable is used.
//! Progress goes to stderr, the table to stdout. The server is stopped by PID
//! on every way out (including ctrl-c), and the data dir removed.

use kelson_apiserver_bench::{client, server, stats, watch};

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use clap::Parser;
use http::{Method, StatusCode};

use client::Conn;
use server::{Components, Memory, ServerProc};
use stats::{percentile, Histogram};
use watch::{pod_name, End, Outcome, Shared};

/// Benchmark of Kelson's API server: concurrent pod creates, full lists and
/// many watches against a real `kelson server`.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// The kelson binary [default: `kelson` next to this executable]
    #[arg(long)]
    kelson: Option<PathBuf>,
    /// Pods to create
    #[arg(long, default_value_t = 10_000)]
    pods: usize,
    /// Concurrent writer clients (creates, then changes), one HTTP/2
    /// connection each
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Watches held open while every pod changes
    #[arg(long, default_value_t = 1_000)]
    watches: usize,
    /// Watch streams per HTTP/2 connection (the server allows 200)
    #[arg(long, default_value_t = 100)]
    watches_per_conn: usize,
    /// Full lists of each kind to time
    #[arg(long, default_value_t = 5)]
    list_runs: usize,
    /// Seconds to wait for the watches to catch up after the last change
    #[arg(long, default_value_t = 180)]
    drain_timeout: u64,
}

const NAMESPACE: &str = "bench";

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    // Dropping `run` on ctrl-c drops the server guard, which stops it.
    tokio::select! {
        r = run(args) => match r {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        },
        _ = tokio::signal::ctrl_c() => {
            eprintln!("interrupted: stopping the server");
            ExitCode::FAILURE
        }
    }
}

fn progress(msg: impl std::fmt::Display) {
    eprintln!("[bench] {msg}");
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "?".into())
}

fn default_kelson() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("finding the bench's own path")?;
    Ok(exe.with_file_name("kelson"))
}

/// A small, realistic pod: one container with requests, a port, labels.
fn pod_json(i: usize, client: usize) -> Bytes {
    let v = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": pod_name(i),
            "labels": {"app": "bench", "client": format!("c{client:02}")},
        },
        "spec": {
            "containers": [{
                "name": "app",
                "image": "registry.k8s.io/pause:3.10",
                "ports": [{"containerPort": 8080, "protocol": "TCP"}],
                "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}},
            }],
            "restartPolicy": "Always",
        },
    });
    Bytes::from(v.to_string())
}

/// The request each writer client sends for its pods.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Op {
    /// POST a new pod (answered 201).
    Create,
    /// Merge-patch a label onto an existing pod (answered 200).
    Change,
}

impl Op {
    fn success(self) -> u16 {
        match self {
            Op::Create => 201,
            Op::Change => 200,
        }
    }
}

/// What the writer clients saw.
#[derive(Default)]
struct Writes {
    latencies: Vec<Duration>,
    statuses: BTreeMap<u16, usize>,
    /// First body of each unexpected status, for the report.
    samples: BTreeMap<u16, String>,
    transport_errors: usize,
    first_transport_error: Option<String>,
    elapsed: Duration,
}

impl Writes {
    fn merge(&mut self, o: Writes) {
        self.latencies.extend(o.latencies);
        for (k, v) in o.statuses {
            *self.statuses.entry(k).or_default() += v;
        }
        for (k, v) in o.samples {
            self.samples.entry(k).or_insert(v);
        }
        self.transport_errors += o.transport_errors;
        if self.first_transport_error.is_none() {
            self.first_transport_error = o.first_transport_error;
        }
    }

    fn count(&self, status: u16) -> usize {
        self.statuses.get(&status).copied().unwrap_or(0)
    }
}

async fn write_client(
    conn: Conn,
    op: Op,
    client: usize,
    clients: usize,
    pods: usize,
    shared: Arc<Shared>,
    done: Arc<AtomicUsize>,
) -> Writes {
    let mut out = Writes::default();
    let path = format!("/api/v1/namespaces/{NAMESPACE}/pods");
    for i in (client..pods).step_by(clients) {
        let (method, path, body) = match op {
            Op::Create => (Method::POST, path.clone(), pod_json(i, client)),
            Op::Change => (
                Method::PATCH,
                format!("{path}/{}", pod_name(i)),
                Bytes::from_static(br#"{"metadata":{"labels":{"changed":"yes"}}}"#),
            ),
        };
        shared.sends.mark(i);
        let t = Instant::now();
        let r = conn.call(method, &path, Some(body)).await;
        let took = t.elapsed();
        done.fetch_add(1, Ordering::Relaxed);
        match r {
            Ok((status, body)) => {
                out.latencies.push(took);
                *out.statuses.entry(status.as_u16()).or_default() += 1;
                if status.as_u16() != op.success() {
                    out.samples.entry(status.as_u16()).or_insert_with(|| {
                        String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned()
                    });
                }
            }
            Err(e) => {
                out.transport_errors += 1;
                out.first_transport_error
                    .get_or_insert_with(|| e.to_string());
            }
        }
    }
    out
}

/// Runs `op` on every pod from `conns` (one client each) and gathers what
/// they saw; `progress_line` reports every second.
async fn write_phase(
    conns: Vec<Conn>,
    op: Op,
    pods: usize,
    shared: Arc<Shared>,
    progress_line: impl Fn(usize) -> String + Send + 'static,
) -> anyhow::Result<Writes> {
    let clients = conns.len();
    let done = Arc::new(AtomicUsize::new(0));
    let ticker = {
        let done = done.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.tick().await;
            loop {
                tick.tick().await;
                progress(progress_line(done.load(Ordering::Relaxed)));
            }
        })
    };
    let t = Instant::now();
    let tasks: Vec<_> = conns
        .into_iter()
        .enumerate()
        .map(|(c, conn)| {
            tokio::spawn(write_client(
                conn,
                op,
                c,
                clients,
                pods,
                shared.clone(),
                done.clone(),
            ))
        })
        .collect();
    let mut writes = Writes::default();
    for task in tasks {
        writes.merge(task.await?);
    }
    writes.elapsed = t.elapsed();
    ticker.abort();
    writes.latencies.sort();
    Ok(writes)
}

/// Timings of one kind of full list.
struct ListFigures {
    path: String,
    min: Duration,
    median: Duration,
    bytes: usize,
    items: usize,
}

async fn time_list(conn: &Conn, path: &str, runs: usize) -> anyhow::Result<ListFigures> {
    let mut times = Vec::new();
    let mut body = Bytes::new();
    for _ in 0..runs.max(1) {
        let t = Instant::now();
        let (status, b) = conn.call(Method::GET, path, None).await?;
        times.push(t.elapsed());
        if status != StatusCode::OK {
            bail!("GET {path}: {status}");
        }
        body = b;
    }
    times.sort();
    let v: serde_json::Value = serde_json::from_slice(&body).context("list body")?;
    Ok(ListFigures {
        path: path.to_string(),
        min: times[0],
        median: times[times.len() / 2],
        bytes: body.len(),
        items: v["items"].as_array().map_or(0, Vec::len),
    })
}

/// Starts the server and times start → /readyz 200.
async fn start(
    kelson: &std::path::Path,
    data_dir: &std::path::Path,
    log: &std::path::Path,
) -> anyhow::Result<(ServerProc, Conn, client::Kubeconfig, Duration)> {
    let t0 = Instant::now();
    let mut srv = ServerProc::spawn(kelson, data_dir, log, Components::ApiServerOnly, &[])?;
    let (conn, kc) = srv.wait_ready(Duration::from_secs(60)).await?;
    Ok((srv, conn, kc, t0.elapsed()))
}

async fn run(args: Args) -> anyhow::Result<()> {
    if args.pods == 0 || args.clients == 0 || args.watches_per_conn == 0 {
        bail!("--pods, --clients and --watches-per-conn must be at least 1");
    }
    let kelson = match args.kelson.clone() {
        Some(p) => p,
        None => default_kelson()?,
    };
    if !kelson.is_file() {
        bail!(
            "no kelson binary at {} (build it with `cargo build --release -p kelson`, or pass --kelson)",
            kelson.display()
        );
    }
    let load_before = load_average();
    let tmp = tempfile::Builder::new()
        .prefix("kelson-apiserver-bench-")
        .tempdir()?;
    let data_dir = tmp.path().join("data");

    // 1. Cold start, then a restart on the same data dir.
    progress(format!("starting {} (fresh data dir)", kelson.display()));
    let (mut cold, _, _, cold_start) =
        start(&kelson, &data_dir, &tmp.path().join("server-cold.log")).await?;
    progress(format!("ready in {}", ms(cold_start)));
    cold.stop();
    drop(cold);
    // The restart writes it again; the old one must not be mistaken for it.
    let _ = std::fs::remove_file(data_dir.join("kubeconfig.yaml"));
    let (srv, setup, kubeconfig, warm_start) =
        start(&kelson, &data_dir, &tmp.path().join("server.log")).await?;
    progress(format!(
        "restarted, ready in {} (pid {}, {})",
        ms(warm_start),
        srv.pid(),
        kubeconfig.server
    ));
    let tls = kubeconfig.tls()?;

    // 2. Idle memory.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle = srv.memory()?;

    // 3. Creates, with nothing else going on.
    let ns = serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}});
    let (status, body) = setup
        .call(
            Method::POST,
            "/api/v1/namespaces",
            Some(Bytes::from(ns.to_string())),
        )
        .await?;
    if status != StatusCode::CREATED {
        bail!(
            "creating namespace {NAMESPACE}: {status}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    let pods_path = format!("/api/v1/namespaces/{NAMESPACE}/pods");
    let server_pid = srv.pid().to_string();
    let cpu_of =
        |before: Option<Duration>, after: Option<Duration>| Some(after?.saturating_sub(before?));
    progress(format!(
        "creating {} pods from {} clients",
        args.pods, args.clients
    ));
    let conns = open_conns(&srv, &tls, args.clients).await?;
    let cpu_before = server::cpu_time(&server_pid);
    let pods = args.pods;
    let creates = write_phase(
        conns,
        Op::Create,
        pods,
        Arc::new(Shared::new(pods, 0)),
        move |done| format!("  creates {done}/{pods}"),
    )
    .await?;
    let create_cpu = cpu_of(cpu_before, server::cpu_time(&server_pid));
    progress(format!(
        "{} created in {} ({} non-201, {} transport errors)",
        creates.count(201),
        ms(creates.elapsed),
        creates.latencies.len() - creates.count(201),
        creates.transport_errors
    ));

    // 4. Full lists.
    progress("timing full lists");
    let list_conn = Conn::open(srv.addr, tls.clone()).await?;
    let lists = vec![
        time_list(&list_conn, &pods_path, args.list_runs).await?,
        time_list(&list_conn, "/api/v1/pods", args.list_runs).await?,
    ];
    let loaded = srv.memory()?;

    // 5. Watches from the current resourceVersion, then every pod changes.
    let (status, body) = setup
        .call(Method::GET, &format!("{pods_path}?limit=1"), None)
        .await?;
    if status != StatusCode::OK {
        bail!("listing pods: {status}");
    }
    let list: serde_json::Value = serde_json::from_slice(&body)?;
    let rv = list["metadata"]["resourceVersion"]
        .as_str()
        .context("the pod list has no resourceVersion")?
        .to_string();
    let shared = Arc::new(Shared::new(args.pods, args.watches));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let watch_conns = args.watches.div_ceil(args.watches_per_conn);
    progress(format!(
        "opening {} watches on {watch_conns} connections from resourceVersion {rv}",
        args.watches
    ));
    let t = Instant::now();
    let conns = open_conns(&srv, &tls, watch_conns).await?;
    let watch_path = format!("{pods_path}?watch=1&resourceVersion={rv}");
    let mut readers = Vec::with_capacity(args.watches);
    for id in 0..args.watches {
        let conn = &conns[id / args.watches_per_conn];
        readers.push(watch::open(conn, &watch_path, id, shared.clone(), stop_rx.clone()).await);
    }
    let watch_open = t.elapsed();
    let refused_early = readers.iter().filter(|r| r.is_finished()).count();
    progress(format!(
        "watches open in {} ({refused_early} already ended); changing every pod from {} clients",
        ms(watch_open),
        args.clients
    ));
    let conns = open_conns(&srv, &tls, args.clients).await?;
    let cpu_before = (server::cpu_time(&server_pid), server::cpu_time("self"));
    let t = Instant::now();
    let changes = {
        let (shared, watches) = (shared.clone(), args.watches as u64);
        write_phase(conns, Op::Change, pods, shared.clone(), move |done| {
            format!(
                "  changes {done}/{pods}, watch events {}/{}",
                shared.total_changed(),
                watches * pods as u64
            )
        })
        .await?
    };
    let changes_end = Instant::now();
    progress(format!(
        "{} changed in {} ({} non-200, {} transport errors)",
        changes.count(200),
        ms(changes.elapsed),
        changes.latencies.len() - changes.count(200),
        changes.transport_errors
    ));

    // 6. Wait for every open watch to have seen every change.
    let expected = changes.count(200) as u64;
    progress(format!(
        "waiting for the watches to deliver {expected} changes each"
    ));
    let drain_deadline = changes_end + Duration::from_secs(args.drain_timeout);
    let mut last_total = shared.total_changed();
    let mut last_progress = Instant::now();
    let drained = loop {
        let pending = readers
            .iter()
            .enumerate()
            .filter(|(id, r)| {
                !r.is_finished() && shared.changed[*id].load(Ordering::Relaxed) < expected
            })
            .count();
        if pending == 0 {
            break true;
        }
        let total = shared.total_changed();
        if total != last_total {
            last_total = total;
            last_progress = Instant::now();
        }
        if Instant::now() > drain_deadline || last_progress.elapsed() > Duration::from_secs(20) {
            progress(format!("giving up: {pending} watches still behind"));
            break false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let busy = t.elapsed();
    let server_cpu = cpu_of(cpu_before.0, server::cpu_time(&server_pid));
    let bench_cpu = cpu_of(cpu_before.1, server::cpu_time("self"));
    let last_delivery = shared.last_delivery();
    // Meaningful only when every watch got every change.
    let complete = drained && !readers.iter().any(|r| r.is_finished());
    let drain = last_delivery
        .filter(|_| complete)
        .map(|l| l.saturating_duration_since(changes_end));
    // Deliveries per second from the first change to the last delivery.
    let watch_rate = last_delivery.map(|l| {
        shared.total_changed() as f64 / l.saturating_duration_since(t).as_secs_f64().max(1e-9)
    });
    let watching = srv.memory()?;

    // Close the watches and gather what each saw.
    let _ = stop_tx.send(true);
    let mut outcomes: Vec<Outcome> = Vec::with_capacity(readers.len());
    for r in readers {
        outcomes.push(r.await?);
    }
    drop(srv);
    let load_after = load_average();

    report(&Report {
        args: &args,
        watch_conns,
        cold_start,
        warm_start,
        idle,
        loaded,
        watching,
        creates: &creates,
        create_cpu,
        changes: &changes,
        expected,
        drained,
        drain,
        watch_rate,
        busy,
        server_cpu,
        bench_cpu,
        watch_open,
        outcomes: &outcomes,
        lists: &lists,
        load_before,
        load_after,
    });
    Ok(())
}

async fn open_conns(
    srv: &ServerProc,
    tls: &Arc<rustls::ClientConfig>,
    n: usize,
) -> anyhow::Result<Vec<Conn>> {
    let mut conns = Vec::with_capacity(n);
    for _ in 0..n {
        conns.push(Conn::open(srv.addr, tls.clone()).await?);
    }
    Ok(conns)
}

struct Report<'a> {
    args: &'a Args,
    watch_conns: usize,
    cold_start: Duration,
    warm_start: Duration,
    idle: Memory,
    /// After the creates and the lists.
    loaded: Memory,
    /// After the watches caught up with the changes.
    watching: Memory,
    creates: &'a Writes,
    create_cpu: Option<Duration>,
    changes: &'a Writes,
    expected: u64,
    drained: bool,
    drain: Option<Duration>,
    watch_rate: Option<f64>,
    /// From the first change until the watches caught up (or gave up).
    busy: Duration,
    server_cpu: Option<Duration>,
    bench_cpu: Option<Duration>,
    watch_open: Duration,
    outcomes: &'a [Outcome],
    lists: &'a [ListFigures],
    load_before: String,
    load_after: String,
}

fn ms(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1e3;
    if ms >= 100.0 {
        format!("{ms:.0} ms")
    } else {
        format!("{ms:.1} ms")
    }
}

fn opt_ms(d: Option<Duration>) -> String {
    d.map_or_else(|| "-".into(), ms)
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn size(bytes: usize) -> String {
    if bytes >= 1 << 20 {
        format!("{:.1} MiB", bytes as f64 / f64::from(1u32 << 20))
    } else {
        format!("{:.1} KiB", bytes as f64 / 1024.0)
    }
}

/// One table row; `met` is whether a goal was reached, if there is one.
fn row(name: &str, measured: String, goal: &str, met: Option<bool>) {
    let verdict = match met {
        Some(true) => "met",
        Some(false) => "MISSED",
        None => "",
    };
    println!("{name:<48} {measured:<30} {goal:<10} {verdict}");
}

/// Rows for one phase of writes: rate, latency and unexpected answers.
/// Returns how many answers were unexpected.
fn write_rows(w: &Writes, op: Op, goals: bool) -> usize {
    let (verb, ok) = match op {
        Op::Create => ("create", 201),
        Op::Change => ("change", 200),
    };
    let rate = w.count(ok) as f64 / w.elapsed.as_secs_f64().max(1e-9);
    let goal = |text: &'static str, met: Option<bool>| {
        if goals {
            (text, met)
        } else {
            ("", None)
        }
    };
    let (g, met) = goal("≥ 5000", Some(rate >= 5000.0));
    row(
        &format!("{verb}s/s ({ok}s over the phase)"),
        format!("{rate:.0} ({} in {})", w.count(ok), ms(w.elapsed)),
        g,
        met,
    );
    let p = |q| percentile(&w.latencies, q);
    row(&format!("{verb} latency p50"), opt_ms(p(50.0)), "", None);
    let p99 = p(99.0);
    let (g, met) = goal("≤ 50 ms", p99.map(|d| d <= Duration::from_millis(50)));
    row(&format!("{verb} latency p99"), opt_ms(p99), g, met);
    row(&format!("{verb} latency max"), opt_ms(p(100.0)), "", None);
    let unexpected: usize = w
        .statuses
        .iter()
        .filter(|(s, _)| **s != ok)
        .map(|(_, n)| n)
        .sum();
    let by_status = w
        .statuses
        .iter()
        .filter(|(s, _)| **s != ok)
        .map(|(s, n)| format!("{s}×{n}"))
        .collect::<Vec<_>>()
        .join(" ");
    row(
        &format!("non-{ok} {verb} responses"),
        if unexpected == 0 {
            "0".into()
        } else {
            format!("{unexpected} ({by_status})")
        },
        "",
        None,
    );
    row(
        &format!("{verb} transport errors"),
        w.transport_errors.to_string(),
        "",
        None,
    );
    unexpected
}

fn report(r: &Report<'_>) {
    let a = r.args;
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!();
    println!(
        "kelson-apiserver-bench: {} pods, {} writer clients, {} watches on {} HTTP/2 connections",
        a.pods, a.clients, a.watches, r.watch_conns
    );
    println!(
        "machine: {cpus} CPUs; load average before {} / after {}",
        r.load_before, r.load_after
    );
    println!();
    println!("{:<48} {:<30} {:<10}", "figure", "measured", "goal");
    println!("{}", "-".repeat(96));
    let goal_ms = |d: Duration, limit: u64| Some(d <= Duration::from_millis(limit));
    row(
        "start → /readyz 200 (fresh data dir)",
        ms(r.cold_start),
        "≤ 300 ms",
        goal_ms(r.cold_start, 300),
    );
    row(
        "start → /readyz 200 (restart)",
        ms(r.warm_start),
        "≤ 300 ms",
        goal_ms(r.warm_start, 300),
    );
    row(
        "idle RSS",
        mib(r.idle.rss_kib),
        "≤ 40 MiB",
        Some(r.idle.rss_kib <= 40 * 1024),
    );
    let mut unexpected = write_rows(r.creates, Op::Create, true);
    row(
        "server CPU per create",
        r.create_cpu.map_or_else(
            || "-".into(),
            |d| {
                format!(
                    "{:.3} ms",
                    d.as_secs_f64() * 1e3 / r.creates.latencies.len().max(1) as f64
                )
            },
        ),
        "",
        None,
    );
    for l in r.lists {
        row(
            &format!("list {} min / median", l.path),
            format!("{} / {}", ms(l.min), ms(l.median)),
            "",
            None,
        );
        row(
            "  response size",
            format!("{} ({} items)", size(l.bytes), l.items),
            "",
            None,
        );
    }
    row(
        &format!("RSS at {} pods", r.creates.count(201)),
        mib(r.loaded.rss_kib),
        "",
        None,
    );

    println!();
    println!(
        "with {} watches open on the pods, every pod changed once:",
        a.watches
    );
    unexpected += write_rows(r.changes, Op::Change, false);
    let mut delivery = Histogram::new();
    let mut events: BTreeMap<String, u64> = BTreeMap::new();
    let mut ends: BTreeMap<End, usize> = BTreeMap::new();
    for o in r.outcomes {
        delivery.merge(&o.delivery);
        for (k, v) in &o.events {
            *events.entry(k.clone()).or_default() += v;
        }
        *ends.entry(o.end.clone()).or_default() += 1;
    }
    row(
        "watches opened (time to open all)",
        format!("{} ({})", a.watches, ms(r.watch_open)),
        "",
        None,
    );
    let want = r.expected * a.watches as u64;
    row(
        "watch MODIFIED events delivered",
        format!(
            "{} / {want}{}",
            events.get("MODIFIED").copied().unwrap_or(0),
            if r.drained { "" } else { " (gave up)" }
        ),
        "",
        None,
    );
    let early: usize = ends
        .iter()
        .filter(|(e, _)| **e != End::StillOpen)
        .map(|(_, n)| n)
        .sum();
    row("watches ended early", early.to_string(), "", None);
    row(
        "watch delivery p50 (from change sent)",
        format!(
            "{} ({} samples)",
            opt_ms(delivery.percentile(50.0)),
            delivery.count()
        ),
        "",
        None,
    );
    row(
        "watch delivery p99 (from change sent)",
        opt_ms(delivery.percentile(99.0)),
        "",
        None,
    );
    row("watch delivery max", opt_ms(delivery.max()), "", None);
    row(
        "last delivery after the last change answer",
        match r.drain {
            Some(d) => ms(d),
            None if a.watches == 0 => "-".into(),
            None => "- (not all watches caught up)".into(),
        },
        "",
        None,
    );
    row(
        "watch events delivered per second",
        r.watch_rate
            .map_or_else(|| "-".into(), |x| format!("{x:.0}")),
        "",
        None,
    );
    let cpu = |d: Option<Duration>| {
        d.map_or_else(
            || "-".into(),
            |d| {
                format!(
                    "{:.2} s ({:.0} % of {:.2} s)",
                    d.as_secs_f64(),
                    100.0 * d.as_secs_f64() / r.busy.as_secs_f64().max(1e-9),
                    r.busy.as_secs_f64()
                )
            },
        )
    };
    row(
        "server CPU, changes to caught up",
        cpu(r.server_cpu),
        "",
        None,
    );
    row(
        "bench CPU, changes to caught up",
        cpu(r.bench_cpu),
        "",
        None,
    );
    row(
        "RSS with the watches open",
        mib(r.watching.rss_kib),
        "",
        None,
    );
    row("peak RSS (VmHWM)", mib(r.watching.hwm_kib), "", None);

    let errors = r.creates.transport_errors + r.changes.transport_errors;
    if unexpected > 0 || errors > 0 || early > 0 || events.len() > 1 {
        println!();
        println!("details:");
        for w in [r.creates, r.changes] {
            for (s, body) in &w.samples {
                println!("  first {s} response: {body}");
            }
            if let Some(e) = &w.first_transport_error {
                println!("  first transport error: {e}");
            }
        }
        // ERROR events differ only by revisions: group them by code and
        // reason, with the first message as the example.
        let mut grouped: BTreeMap<String, (usize, String)> = BTreeMap::new();
        for (end, n) in &ends {
            let (key, example) = match end {
                End::StillOpen => continue,
                End::ErrorEvent(m) => (
                    format!("ERROR event {}", m.split(':').next().unwrap_or("")),
                    m.clone(),
                ),
                other => (format!("{other:?}"), String::new()),
            };
            let e = grouped.entry(key).or_insert((0, example));
            e.0 += n;
        }
        for (key, (n, example)) in &grouped {
            println!("  {n} watches ended: {key} (e.g. {example:?})");
        }
        let seen: Vec<u64> = {
            let mut v: Vec<u64> = r
                .outcomes
                .iter()
                .filter(|o| o.end != End::StillOpen)
                .map(|o| o.events.get("MODIFIED").copied().unwrap_or(0))
                .collect();
            v.sort_unstable();
            v
        };
        if let (Some(lo), Some(hi)) = (seen.first(), seen.last()) {
            println!(
                "  MODIFIED events those watches saw before ending: min {lo}, median {}, max {hi}",
                seen[seen.len() / 2]
            );
        }
        println!("  watch events by type: {events:?}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_bodies_are_pods_with_the_scanned_name() {
        let v: serde_json::Value = serde_json::from_slice(&pod_json(7, 3)).unwrap();
        assert_eq!(v["kind"], "Pod");
        assert_eq!(v["metadata"]["name"], "bench-000007");
        assert_eq!(v["metadata"]["labels"]["client"], "c03");
        assert_eq!(v["spec"]["containers"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn defaults_match_the_issue() {
        let a = Args::parse_from(["bench"]);
        assert_eq!((a.pods, a.clients, a.watches), (10_000, 64, 1_000));
        assert!(a.watches_per_conn <= 200, "server stream limit");
    }
}
