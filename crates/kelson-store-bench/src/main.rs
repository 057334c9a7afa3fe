//! Benchmarks the embedded store and, side by side, a real etcd (Debian's
//! etcd-server, started here on 127.0.0.1 with its own data dir) on the same
//! workloads. Prints figures; asserts nothing.
//!
//! Usage: kelson-store-bench [--quick] [--no-etcd] [--etcd PATH] [--churn-updates N]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use etcd_client::{Compare, CompareOp, GetOptions, Txn, TxnOp, WatchOptions};
use futures::StreamExt;
use kelson_store::{CompactionPolicy, EmbeddedStore, Options, RangeRequest, Store, WatchStart};

const VALUE_BYTES: usize = 1024;

struct Config {
    quick: bool,
    etcd: Option<PathBuf>,
    churn_updates: u64,
}

fn parse_args() -> anyhow::Result<Config> {
    let mut cfg = Config {
        quick: false,
        etcd: Some(PathBuf::from("/usr/bin/etcd")),
        churn_updates: 1_000_000,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--quick" => {
                cfg.quick = true;
                cfg.churn_updates = 100_000;
            }
            "--no-etcd" => cfg.etcd = None,
            "--etcd" => cfg.etcd = Some(args.next().context("--etcd needs a path")?.into()),
            "--churn-updates" => {
                cfg.churn_updates = args.next().context("--churn-updates needs N")?.parse()?
            }
            // `cargo bench` passes --bench.
            "--bench" => {}
            other => bail!("unknown argument {other}"),
        }
    }
    Ok(cfg)
}

/// Latency summary of one run.
struct Figures {
    ops: usize,
    elapsed: Duration,
    p50: Duration,
    p99: Duration,
}

impl Figures {
    fn from(mut lat: Vec<Duration>, elapsed: Duration) -> Figures {
        lat.sort_unstable();
        let pick = |q: f64| {
            lat.get(((lat.len() as f64 - 1.0) * q) as usize)
                .copied()
                .unwrap_or_default()
        };
        Figures {
            ops: lat.len(),
            elapsed,
            p50: pick(0.50),
            p99: pick(0.99),
        }
    }

    fn rate(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64()
    }
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

fn value() -> Bytes {
    Bytes::from(vec![b'v'; VALUE_BYTES])
}

/// Something both backends can do, driven by the same harness.
trait Backend: Clone + Send + Sync + 'static {
    /// Creates a key that does not exist yet (as the API server creates objects).
    fn create(
        &self,
        key: Bytes,
        value: Bytes,
    ) -> impl std::future::Future<Output = anyhow::Result<()>> + Send;
}

#[derive(Clone)]
struct Embedded(Arc<EmbeddedStore>);

impl Backend for Embedded {
    async fn create(&self, key: Bytes, value: Bytes) -> anyhow::Result<()> {
        self.0.create(key, value).await?;
        Ok(())
    }
}

#[derive(Clone)]
struct Etcd(etcd_client::KvClient);

impl Backend for Etcd {
    async fn create(&self, key: Bytes, value: Bytes) -> anyhow::Result<()> {
        // What kube-apiserver sends for a create: put only if absent.
        let txn = Txn::new()
            .when([Compare::create_revision(key.to_vec(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key.to_vec(), value.to_vec(), None)]);
        let resp = self.0.clone().txn(txn).await?;
        if !resp.succeeded() {
            bail!("key already existed");
        }
        Ok(())
    }
}

/// `writers` tasks create fresh 1 KiB keys for about `duration` (at most
/// `max_ops` in all).
async fn write_load<B: Backend>(
    b: &B,
    tag: &str,
    writers: usize,
    duration: Duration,
    max_ops: usize,
) -> anyhow::Result<Figures> {
    let per_writer = max_ops.div_ceil(writers);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..writers {
        let b = b.clone();
        let tag = tag.to_string();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(per_writer);
            let value = value();
            for i in 0..per_writer {
                if start.elapsed() > duration {
                    break;
                }
                let key = Bytes::from(format!("/bench/{tag}/{w}/{i}"));
                let t = Instant::now();
                b.create(key, value.clone()).await?;
                lat.push(t.elapsed());
            }
            anyhow::Ok(lat)
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await??);
    }
    Ok(Figures::from(all, start.elapsed()))
}

struct EtcdProcess {
    child: Child,
    dir: tempfile::TempDir,
}

impl Drop for EtcdProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

async fn start_etcd(bin: &PathBuf) -> anyhow::Result<(EtcdProcess, etcd_client::Client)> {
    let dir = tempfile::Builder::new()
        .prefix("kelson-bench-etcd")
        .tempdir_in("/var/tmp")?;
    let (client_port, peer_port) = (free_port()?, free_port()?);
    let client_url = format!("http://127.0.0.1:{client_port}");
    let peer_url = format!("http://127.0.0.1:{peer_port}");
    let log = std::fs::File::create(dir.path().join("etcd.log"))?;
    let child = Command::new(bin)
        .arg("--name=bench")
        .arg(format!("--data-dir={}", dir.path().join("data").display()))
        .arg(format!("--listen-client-urls={client_url}"))
        .arg(format!("--advertise-client-urls={client_url}"))
        .arg(format!("--listen-peer-urls={peer_url}"))
        .arg(format!("--initial-advertise-peer-urls={peer_url}"))
        .arg(format!("--initial-cluster=bench={peer_url}"))
        .arg("--quota-backend-bytes=8589934592")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let proc_ = EtcdProcess { child, dir };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(mut c) = etcd_client::Client::connect([&client_url], None).await {
            if c.status().await.is_ok() {
                return Ok((proc_, c));
            }
        }
        if Instant::now() > deadline {
            bail!(
                "etcd did not become ready; see {}",
                proc_.dir.path().join("etcd.log").display()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn dir_bytes(path: &std::path::Path) -> u64 {
    let mut total = 0;
    if let Ok(rd) = std::fs::read_dir(path) {
        for e in rd.flatten() {
            let Ok(md) = e.metadata() else { continue };
            if md.is_dir() {
                total += dir_bytes(&e.path());
            } else {
                total += md.len();
            }
        }
    }
    total
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cfg = parse_args()?;
    let duration = Duration::from_secs(if cfg.quick { 2 } else { 5 });
    let levels: [(usize, usize); 3] = [(1, 20_000), (16, 100_000), (256, 200_000)];
    println!(
        "kelson-store-bench: 1 KiB values, fsync on, {} s per level, on {} cores",
        duration.as_secs(),
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );

    // ---- Writes: embedded
    let dir = tempfile::Builder::new()
        .prefix("kelson-bench")
        .tempdir_in("/var/tmp")?;
    let no_compaction = Options {
        compaction: None,
        ..Options::default()
    };
    let store = Arc::new(EmbeddedStore::open(dir.path().join("store.redb"), no_compaction).await?);
    let emb = Embedded(store.clone());
    let mut rows = Vec::new();
    for (writers, max) in levels {
        eprintln!("embedded: {writers} writers…");
        rows.push((
            writers,
            write_load(&emb, &format!("w{writers}"), writers, duration, max).await?,
        ));
    }

    // ---- Writes: etcd
    let mut etcd_rows = Vec::new();
    let etcd = match &cfg.etcd {
        Some(bin) if bin.exists() => Some(start_etcd(bin).await?),
        Some(bin) => {
            eprintln!(
                "{} not found: skipping etcd (./scripts/deps.sh test installs it)",
                bin.display()
            );
            None
        }
        None => None,
    };
    if let Some((_, client)) = &etcd {
        let e = Etcd(client.kv_client());
        for (writers, max) in levels {
            eprintln!("etcd: {writers} writers…");
            etcd_rows.push(write_load(&e, &format!("w{writers}"), writers, duration, max).await?);
        }
    }

    println!();
    println!("Writes (create of a new key, 1 KiB value, acknowledged after fsync)");
    println!(
        "{:>8} | {:>14} {:>10} {:>10} | {:>14} {:>10} {:>10}",
        "writers", "kelson w/s", "p50", "p99", "etcd w/s", "p50", "p99"
    );
    for (i, (writers, f)) in rows.iter().enumerate() {
        let (er, ep50, ep99) = etcd_rows
            .get(i)
            .map(|e| (format!("{:.0}", e.rate()), ms(e.p50), ms(e.p99)))
            .unwrap_or(("-".into(), "-".into(), "-".into()));
        println!(
            "{:>8} | {:>14.0} {:>10} {:>10} | {:>14} {:>10} {:>10}",
            writers,
            f.rate(),
            ms(f.p50),
            ms(f.p99),
            er,
            ep50,
            ep99
        );
    }

    // ---- 10,000-key prefix list
    let list_value = value();
    let mut tasks = Vec::new();
    for w in 0..100 {
        let s = store.clone();
        let v = list_value.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..100 {
                s.create(Bytes::from(format!("/list/{w:03}/{i:03}")), v.clone())
                    .await?;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let mut list_times = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let r = store
            .range(RangeRequest::prefix(Bytes::from_static(b"/list/")))
            .await?;
        list_times.push(t.elapsed());
        assert_eq!(r.kvs.len(), 10_000);
    }
    list_times.sort();
    let mut etcd_list = None;
    if let Some((_, client)) = &etcd {
        let mut tasks = Vec::new();
        for w in 0..100 {
            let mut kv = client.kv_client();
            let v = list_value.to_vec();
            tasks.push(tokio::spawn(async move {
                for i in 0..100 {
                    kv.put(format!("/list/{w:03}/{i:03}"), v.clone(), None)
                        .await?;
                }
                anyhow::Ok(())
            }));
        }
        for t in tasks {
            t.await??;
        }
        // The whole list is ~10 MiB, over gRPC's default 4 MiB message cap.
        let mut kv = client.kv_client().max_decoding_message_size(64 << 20);
        let mut times = Vec::new();
        for _ in 0..5 {
            let t = Instant::now();
            let r = kv
                .get("/list/", Some(GetOptions::new().with_prefix()))
                .await?;
            times.push(t.elapsed());
            assert_eq!(r.kvs().len(), 10_000);
        }
        times.sort();
        etcd_list = Some(times[2]);
    }
    println!();
    println!(
        "List of 10,000 keys (1 KiB each) by prefix, median of 5: kelson {} | etcd {}",
        ms(list_times[2]),
        etcd_list.map(ms).unwrap_or("-".into())
    );

    // ---- Watch delivery latency: 16 writers, one watcher on their prefix.
    let base = Instant::now();
    // The send time travels in the value itself.
    let stamped = move || {
        let mut v = vec![b'w'; VALUE_BYTES];
        v[..8].copy_from_slice(&(base.elapsed().as_nanos() as u64).to_le_bytes());
        Bytes::from(v)
    };
    let decode = move |v: &[u8]| -> Duration {
        let sent = u64::from_le_bytes(v[..8].try_into().unwrap());
        base.elapsed().saturating_sub(Duration::from_nanos(sent))
    };
    let watch_ops = if cfg.quick { 4_000 } else { 16_000 };
    let mut watch = store
        .watch(Bytes::from_static(b"/watch/"), WatchStart::Now)
        .await?;
    let collector = tokio::spawn(async move {
        let mut lat = Vec::with_capacity(watch_ops);
        while lat.len() < watch_ops {
            match watch.next().await {
                Some(Ok(ev)) => lat.push(decode(&ev.kv.value)),
                other => bail!("watch ended: {other:?}"),
            }
        }
        anyhow::Ok(lat)
    });
    let mut tasks = Vec::new();
    for w in 0..16 {
        let s = store.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..watch_ops / 16 {
                s.create(Bytes::from(format!("/watch/{w}/{i}")), stamped())
                    .await?;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let emb_watch = Figures::from(collector.await??, Duration::from_secs(1));
    let mut etcd_watch = None;
    if let Some((_, client)) = &etcd {
        let mut wc = client.watch_client();
        let (_watcher, mut stream) = wc
            .watch("/watch/", Some(WatchOptions::new().with_prefix()))
            .await?
            .split();
        let collector = tokio::spawn(async move {
            let mut lat = Vec::with_capacity(watch_ops);
            while lat.len() < watch_ops {
                match stream.message().await? {
                    Some(resp) => {
                        for ev in resp.events() {
                            if let Some(kv) = ev.kv() {
                                lat.push(decode(kv.value()));
                            }
                        }
                    }
                    None => bail!("etcd watch ended"),
                }
            }
            anyhow::Ok(lat)
        });
        let mut tasks = Vec::new();
        for w in 0..16 {
            let mut kv = client.kv_client();
            tasks.push(tokio::spawn(async move {
                for i in 0..watch_ops / 16 {
                    kv.put(format!("/watch/{w}/{i}"), stamped().to_vec(), None)
                        .await?;
                }
                anyhow::Ok(())
            }));
        }
        for t in tasks {
            t.await??;
        }
        etcd_watch = Some(Figures::from(collector.await??, Duration::from_secs(1)));
    }
    println!(
        "Watch delivery (write start to event, 16 writers): kelson p50 {} p99 {} | etcd p50 {} p99 {}",
        ms(emb_watch.p50),
        ms(emb_watch.p99),
        etcd_watch.as_ref().map(|f| ms(f.p50)).unwrap_or("-".into()),
        etcd_watch.as_ref().map(|f| ms(f.p99)).unwrap_or("-".into()),
    );
    if let Some((p, _)) = &etcd {
        println!(
            "Disk after the runs above: kelson {:.1} MiB | etcd {:.1} MiB",
            store.disk_bytes()? as f64 / 1048576.0,
            dir_bytes(&p.dir.path().join("data")) as f64 / 1048576.0
        );
    }
    drop(etcd);
    drop(emb);
    Arc::try_unwrap(store)
        .map_err(|_| anyhow::anyhow!("store still shared"))?
        .close()
        .await;

    // ---- Churn: updates over 10,000 keys with compaction running.
    churn(&cfg).await?;
    Ok(())
}

/// `updates` updates spread over 10,000 keys by 256 writers, with automatic
/// compaction keeping 2 s of history (sampled every 250 ms), reporting the
/// file size as it goes.
async fn churn(cfg: &Config) -> anyhow::Result<()> {
    const KEYS: usize = 10_000;
    const WRITERS: usize = 256;
    let dir = tempfile::Builder::new()
        .prefix("kelson-bench-churn")
        .tempdir_in("/var/tmp")?;
    let path = dir.path().join("store.redb");
    let policy = CompactionPolicy {
        retention: Duration::from_secs(2),
        interval: Duration::from_millis(250),
    };
    let store = Arc::new(
        EmbeddedStore::open(
            &path,
            Options {
                compaction: Some(policy),
                ..Options::default()
            },
        )
        .await?,
    );
    // Create the keys.
    let mut revs = vec![0u64; KEYS];
    let v = value();
    for chunk in (0..KEYS).collect::<Vec<_>>().chunks(WRITERS) {
        let futs = chunk
            .iter()
            .map(|&k| store.create(Bytes::from(format!("/churn/{k:05}")), v.clone()));
        for (k, r) in chunk.iter().zip(futures::future::join_all(futs).await) {
            revs[*k] = r?.mod_revision;
        }
    }
    println!();
    println!(
        "Churn: {} updates over {KEYS} keys (1 KiB), {WRITERS} writers, compaction keeping {} s of history",
        cfg.churn_updates,
        policy.retention.as_secs()
    );
    let per_writer = cfg.churn_updates as usize / WRITERS;
    let done = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let s = store.clone();
        let v = v.clone();
        let done = done.clone();
        // Writer w owns keys w, w+256, …: no conflicts, pure update load.
        let mut mine: Vec<(usize, u64)> =
            (w..KEYS).step_by(WRITERS).map(|k| (k, revs[k])).collect();
        tasks.push(tokio::spawn(async move {
            for i in 0..per_writer {
                let slot = i % mine.len();
                let (k, rev) = mine[slot];
                let kv = s
                    .update(Bytes::from(format!("/churn/{k:05}")), v.clone(), rev)
                    .await?;
                mine[slot].1 = kv.mod_revision;
                done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            anyhow::Ok(())
        }));
    }
    let marks = [0.25, 0.5, 0.75];
    let mut next_mark = 0;
    let total = (per_writer * WRITERS) as u64;
    while tasks.iter().any(|t| !t.is_finished()) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let d = done.load(std::sync::atomic::Ordering::Relaxed);
        while next_mark < marks.len() && d as f64 >= marks[next_mark] * total as f64 {
            println!(
                "  after {:>9} updates ({:>5.1} s): file {:>6.1} MiB",
                d,
                start.elapsed().as_secs_f64(),
                store.disk_bytes()? as f64 / 1048576.0
            );
            next_mark += 1;
        }
    }
    for t in tasks {
        t.await??;
    }
    let elapsed = start.elapsed();
    println!(
        "  after {:>9} updates ({:>5.1} s): file {:>6.1} MiB  ({:.0} updates/s)",
        total,
        elapsed.as_secs_f64(),
        store.disk_bytes()? as f64 / 1048576.0,
        total as f64 / elapsed.as_secs_f64()
    );
    // Let compaction catch up with the end of the run, then report again.
    tokio::time::sleep(policy.retention + Duration::from_secs(3)).await;
    let status = store.status().await?;
    println!(
        "  {} s later: file {:.1} MiB, revision {}, compacted to {}",
        policy.retention.as_secs() + 3,
        store.disk_bytes()? as f64 / 1048576.0,
        status.revision,
        status.compacted
    );
    Arc::try_unwrap(store)
        .map_err(|_| anyhow::anyhow!("store still shared"))?
        .close()
        .await;
    Ok(())
}
