//! The embedded backend: history on disk in redb, the MVCC index in memory,
//! and one writer thread that turns concurrent writes into group commits.
//!
//! Write path: callers send requests to the writer thread; it drains
//! everything queued, validates each request against the index (and the
//! earlier requests of the same batch), appends one record per revision in a
//! single transaction, fsyncs once, then publishes the new state to the index,
//! the watchers and the callers — in that order, so nothing is visible before
//! it is durable.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::mpsc as std_mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use parking_lot::RwLock;
use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::{broadcast, oneshot, watch};

use crate::codec::{decode_revision, encode_revision, DecodeError, Reader, Record};
use crate::error::{Error, Result};
use crate::index::{Change, Index, Version};
use crate::types::*;
use crate::watch::{self as watcher, WatchStream};
use crate::{check_write, Store};

/// History: one record per revision, keyed by the 8-byte big-endian revision.
pub(crate) const LOG: TableDefinition<&[u8], &[u8]> = TableDefinition::new("log");
/// Store-wide counters, 8-byte little-endian values.
pub(crate) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
pub(crate) const META_REVISION: &str = "revision";
pub(crate) const META_COMPACTED: &str = "compacted";

/// Most requests folded into one commit; bounds commit latency and memory.
const MAX_BATCH: usize = 2048;
/// See [`Options::commit_interval`]. A commit costs most of a millisecond of
/// CPU whatever it holds (page writes, fsync, waking every waiter and
/// watcher), so under steady load this bounds commits to a hundred a second
/// while adding at most this much to a write's latency.
pub const DEFAULT_COMMIT_INTERVAL: Duration = Duration::from_millis(10);
/// See [`Options::commit_gap`].
pub const DEFAULT_COMMIT_GAP: Duration = Duration::from_micros(500);
/// Most compacted records removed per transaction, so that reclaiming a large
/// compaction never stalls writers for long.
const DELETES_PER_TXN: usize = 4096;
/// Files smaller than this are not worth shrinking at open.
const RECLAIM_MIN_FILE_BYTES: u64 = 16 << 20;
/// Live batches buffered per watcher before it falls back to reading history.
const BROADCAST_CAPACITY: usize = 1024;
/// Ranges up to this many items are read on the calling task.
const INLINE_READ_ITEMS: usize = 16;

/// Whether a commit waits for the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// fsync before acknowledging (the default; survives power loss).
    Fsync,
    /// Acknowledge once written to the OS. Survives a process crash, not a
    /// power loss. For tests of semantics that would otherwise wait on disk.
    NoSync,
}

/// Automatic compaction: keep at least `retention` of history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompactionPolicy {
    pub retention: Duration,
    /// How often the current revision is sampled and compaction considered.
    pub interval: Duration,
}

impl Default for CompactionPolicy {
    /// Upstream's default: five minutes of history.
    fn default() -> Self {
        CompactionPolicy {
            retention: Duration::from_secs(300),
            interval: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Options {
    pub durability: Durability,
    /// `None` turns automatic compaction off.
    pub compaction: Option<CompactionPolicy>,
    /// Longest time between the starts of two commits while concurrent
    /// writes keep a busy process gathering: everything that arrives
    /// meanwhile shares one commit and one fsync. A write after a quiet
    /// spell commits at once, and [`Options::commit_gap`] can end the wait
    /// early. Zero commits whatever has queued.
    pub commit_interval: Duration,
    /// A waiting batch commits early once no write has arrived for this
    /// long and the process was mostly idle meanwhile: every busy writer is
    /// then waiting on this commit, and waiting longer only adds latency.
    pub commit_gap: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            durability: Durability::Fsync,
            compaction: Some(CompactionPolicy::default()),
            commit_interval: DEFAULT_COMMIT_INTERVAL,
            commit_gap: DEFAULT_COMMIT_GAP,
        }
    }
}

/// State shared by the store handle, the writer thread, readers and watchers.
pub(crate) struct Shared {
    pub db: redb::Database,
    pub state: RwLock<State>,
    pub events: broadcast::Sender<Arc<[Event]>>,
    /// Flips to true when the store is closed; watchers end then.
    pub shutdown: watch::Receiver<bool>,
}

pub(crate) struct State {
    pub index: Index,
    pub revision: Revision,
    pub compacted: Revision,
}

enum Op {
    Create {
        key: Bytes,
        value: Bytes,
    },
    Update {
        key: Bytes,
        value: Bytes,
        expected: Revision,
    },
    Delete {
        key: Bytes,
        expected: Option<Revision>,
    },
}

enum Outcome {
    Put(KeyValue),
    Deleted(DeleteResponse),
}

enum Request {
    Write {
        op: Op,
        reply: oneshot::Sender<Result<Outcome>>,
    },
    Compact {
        revision: Revision,
        reply: oneshot::Sender<Result<()>>,
    },
}

/// The default store backend. Open one per data directory.
pub struct EmbeddedStore {
    shared: Arc<Shared>,
    requests: Option<std_mpsc::Sender<Request>>,
    writer: Option<std::thread::JoinHandle<()>>,
    shutdown: watch::Sender<bool>,
    compactor: Option<tokio::task::JoinHandle<()>>,
    path: PathBuf,
}

impl EmbeddedStore {
    /// Opens (creating if needed) the store file at `path` and rebuilds the
    /// index from it. Must be called within a Tokio runtime.
    pub async fn open(path: impl AsRef<Path>, options: Options) -> Result<EmbeddedStore> {
        let path = path.as_ref().to_path_buf();
        let open_path = path.clone();
        let (db, state, pending) = tokio::task::spawn_blocking(move || load(&open_path))
            .await
            .map_err(join_error)??;
        tracing::info!(
            path = %path.display(),
            revision = state.revision,
            compacted = state.compacted,
            keys = state.index.len(),
            "store opened"
        );
        let (events, _) = broadcast::channel(BROADCAST_CAPACITY);
        let (shutdown, shutdown_rx) = watch::channel(false);
        let shared = Arc::new(Shared {
            db,
            state: RwLock::new(state),
            events,
            shutdown: shutdown_rx,
        });
        let (tx, rx) = std_mpsc::channel();
        let writer = Writer {
            shared: shared.clone(),
            requests: rx,
            pending_deletes: pending,
            durability: options.durability,
            pacing: Pacing {
                interval: options.commit_interval,
                gap: options.commit_gap,
                cpu: process_cpu,
            },
            last_commit: None,
            last_batch: 0,
        };
        let writer = std::thread::Builder::new()
            .name("kelson-store-writer".into())
            .spawn(move || writer.run())?;
        let mut store = EmbeddedStore {
            shared,
            requests: Some(tx),
            writer: Some(writer),
            shutdown,
            compactor: None,
            path,
        };
        if let Some(policy) = options.compaction {
            store.compactor = Some(tokio::spawn(auto_compact(
                Arc::downgrade(&store.shared),
                store.requests.clone().expect("sender present until close"),
                policy,
            )));
        }
        Ok(store)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Size of the store file on disk.
    pub fn disk_bytes(&self) -> Result<u64> {
        Ok(std::fs::metadata(&self.path)?.len())
    }

    /// Writes a consistent snapshot of the whole store (every record still in
    /// history, the revision and the compacted revision) to `out`.
    pub async fn snapshot<W: std::io::Write + Send + 'static>(
        &self,
        out: W,
    ) -> Result<crate::snapshot::SnapshotInfo> {
        let shared = self.shared.clone();
        tokio::task::spawn_blocking(move || {
            let txn = shared.db.begin_read().map_err(engine)?;
            crate::snapshot::write_from_txn(&txn, out)
        })
        .await
        .map_err(join_error)?
    }

    /// Stops the writer after it has finished what was queued, ends every
    /// watch and releases the file.
    pub async fn close(mut self) {
        self.stop();
        if let Some(writer) = self.writer.take() {
            let _ = tokio::task::spawn_blocking(move || writer.join()).await;
        }
        // Watchers and in-flight reads hold the database; wait for them to
        // let go so the file can be opened again by this process.
        let deadline = Instant::now() + Duration::from_secs(10);
        while Arc::strong_count(&self.shared) > 1 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn stop(&mut self) {
        self.requests = None;
        if let Some(c) = self.compactor.take() {
            c.abort();
        }
        let _ = self.shutdown.send(true);
    }

    async fn write(&self, op: Op) -> Result<Outcome> {
        let (reply, rx) = oneshot::channel();
        self.requests
            .as_ref()
            .ok_or(Error::Closed)?
            .send(Request::Write { op, reply })
            .map_err(|_| Error::Closed)?;
        rx.await.map_err(|_| Error::Closed)?
    }

    /// Resolves the revision a read is served at, checking it is readable.
    fn read_revision(state: &State, requested: Option<Revision>) -> Result<Revision> {
        let rev = requested.unwrap_or(state.revision);
        if rev > state.revision {
            return Err(Error::FutureRevision {
                requested: rev,
                current: state.revision,
            });
        }
        if rev < state.compacted {
            return Err(Error::Compacted {
                requested: rev,
                compacted: state.compacted,
            });
        }
        Ok(rev)
    }
}

impl Drop for EmbeddedStore {
    fn drop(&mut self) {
        self.stop();
    }
}

#[async_trait]
impl Store for EmbeddedStore {
    async fn get(&self, key: &[u8], revision: Option<Revision>) -> Result<GetResponse> {
        let (rev, version) = {
            let state = self.shared.state.read();
            let rev = Self::read_revision(&state, revision)?;
            (rev, state.index.get(key, rev))
        };
        let Some(version) = version else {
            return Ok(GetResponse {
                kv: None,
                revision: rev,
            });
        };
        // One version of one key: a few microseconds of reading, far less
        // than handing it to the blocking pool and back.
        let key = Bytes::copy_from_slice(key);
        let kv = {
            let txn = self.shared.db.begin_read().map_err(engine)?;
            let log = txn.open_table(LOG).map_err(engine)?;
            read_version(&log, key, version, rev)?
        };
        Ok(GetResponse {
            kv: Some(kv),
            revision: rev,
        })
    }

    async fn range(&self, req: RangeRequest) -> Result<RangeResponse> {
        let (rev, plan) = {
            let state = self.shared.state.read();
            let rev = Self::read_revision(&state, req.revision)?;
            let plan = state
                .index
                .range(&req.prefix, req.start_after.as_deref(), rev, req.limit);
            (rev, plan)
        };
        let plan_len = plan.items.len();
        let shared = self.shared.clone();
        let items = plan.items;
        let read = move || {
            let txn = shared.db.begin_read().map_err(engine)?;
            let log = txn.open_table(LOG).map_err(engine)?;
            items
                .into_iter()
                .map(|(key, version)| read_version(&log, key, version, rev))
                .collect::<Result<Vec<_>>>()
        };
        // Small ranges are read in place, like `get`; big ones would hold
        // up the async worker, so they go to the blocking pool.
        let kvs = if plan_len <= INLINE_READ_ITEMS {
            read()?
        } else {
            tokio::task::spawn_blocking(read)
                .await
                .map_err(join_error)??
        };
        Ok(RangeResponse {
            kvs,
            more: plan.more,
            remaining: plan.remaining,
            revision: rev,
        })
    }

    async fn create(&self, key: Bytes, value: Bytes) -> Result<KeyValue> {
        check_write(&key, Some(&value))?;
        match self.write(Op::Create { key, value }).await? {
            Outcome::Put(kv) => Ok(kv),
            Outcome::Deleted(_) => unreachable!("create answers with a put"),
        }
    }

    async fn update(&self, key: Bytes, value: Bytes, expected: Revision) -> Result<KeyValue> {
        check_write(&key, Some(&value))?;
        match self
            .write(Op::Update {
                key,
                value,
                expected,
            })
            .await?
        {
            Outcome::Put(kv) => Ok(kv),
            Outcome::Deleted(_) => unreachable!("update answers with a put"),
        }
    }

    async fn delete(&self, key: Bytes, expected: Option<Revision>) -> Result<DeleteResponse> {
        check_write(&key, None)?;
        match self.write(Op::Delete { key, expected }).await? {
            Outcome::Deleted(d) => Ok(d),
            Outcome::Put(_) => unreachable!("delete answers with a delete"),
        }
    }

    async fn watch(&self, prefix: Bytes, start: WatchStart) -> Result<WatchStream> {
        let after = {
            let state = self.shared.state.read();
            match start {
                WatchStart::Now => state.revision,
                WatchStart::After(rev) if rev < state.compacted => {
                    return Err(Error::Compacted {
                        requested: rev,
                        compacted: state.compacted,
                    })
                }
                WatchStart::After(rev) if rev > state.revision => {
                    return Err(Error::FutureRevision {
                        requested: rev,
                        current: state.revision,
                    })
                }
                WatchStart::After(rev) => rev,
            }
        };
        Ok(watcher::spawn(self.shared.clone(), prefix, after))
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        let (reply, rx) = oneshot::channel();
        self.requests
            .as_ref()
            .ok_or(Error::Closed)?
            .send(Request::Compact { revision, reply })
            .map_err(|_| Error::Closed)?;
        rx.await.map_err(|_| Error::Closed)?
    }

    async fn status(&self) -> Result<StoreStatus> {
        let state = self.shared.state.read();
        Ok(StoreStatus {
            revision: state.revision,
            compacted: state.compacted,
        })
    }
}

pub(crate) fn engine(e: impl std::fmt::Display) -> Error {
    Error::Engine(e.to_string())
}

fn join_error(e: tokio::task::JoinError) -> Error {
    Error::Engine(format!("store task failed: {e}"))
}

pub(crate) fn decode_u64(bytes: &[u8]) -> Result<u64, DecodeError> {
    Reader::new(bytes).u64_le("meta value").and_then(|v| {
        if bytes.len() == 8 {
            Ok(v)
        } else {
            Err(DecodeError::TrailingBytes(bytes.len() - 8))
        }
    })
}

pub(crate) fn read_meta(
    meta: &impl ReadableTable<&'static str, &'static [u8]>,
    name: &str,
) -> Result<u64> {
    match meta.get(name).map_err(engine)? {
        Some(v) => Ok(decode_u64(v.value())?),
        None => Ok(0),
    }
}

/// Reads the record at `rev` from history.
pub(crate) fn read_record(
    log: &impl ReadableTable<&'static [u8], &'static [u8]>,
    rev: Revision,
) -> Result<Option<Record>> {
    match log.get(encode_revision(rev).as_slice()).map_err(engine)? {
        Some(v) => Ok(Some(Record::decode(v.value())?)),
        None => Ok(None),
    }
}

/// Reads the value of a version the index resolved. A record missing from
/// disk means a compaction overtook the read.
fn read_version(
    log: &impl ReadableTable<&'static [u8], &'static [u8]>,
    key: Bytes,
    v: Version,
    read_at: Revision,
) -> Result<KeyValue> {
    let rec = read_record(log, v.mod_revision)?.ok_or(Error::Compacted {
        requested: read_at,
        compacted: v.mod_revision,
    })?;
    if rec.key != key {
        return Err(Error::Corrupt(DecodeError::Invalid(
            "record key differs from index",
        )));
    }
    Ok(KeyValue {
        key,
        value: rec.value,
        create_revision: v.create_revision,
        mod_revision: v.mod_revision,
        version: v.version,
    })
}

/// Turns a history record into the event it describes, fetching the
/// previous value it replaced.
pub(crate) fn record_to_event(
    log: &impl ReadableTable<&'static [u8], &'static [u8]>,
    rev: Revision,
    rec: Record,
) -> Result<Event> {
    let prev = if rec.prev_revision == 0 {
        None
    } else {
        let p = read_record(log, rec.prev_revision)?.ok_or(Error::Compacted {
            requested: rev,
            compacted: rec.prev_revision,
        })?;
        Some(KeyValue {
            key: rec.key.clone(),
            value: p.value,
            create_revision: p.create_revision,
            mod_revision: rec.prev_revision,
            version: p.version,
        })
    };
    let kv = match rec.kind {
        EventKind::Put => KeyValue {
            key: rec.key,
            value: rec.value,
            create_revision: rec.create_revision,
            mod_revision: rev,
            version: rec.version,
        },
        EventKind::Delete => KeyValue {
            key: rec.key,
            value: Bytes::new(),
            create_revision: 0,
            mod_revision: rev,
            version: 0,
        },
    };
    Ok(Event {
        kind: rec.kind,
        kv,
        prev,
    })
}

/// Opens the file and rebuilds the index. Returns the revisions that a
/// compaction made obsolete but that were not yet removed from disk.
fn load(path: &Path) -> Result<(redb::Database, State, VecDeque<Revision>)> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut db = redb::Database::create(path).map_err(engine)?;
    {
        // Make sure both tables exist so readers never see "table missing".
        let txn = db.begin_write().map_err(engine)?;
        txn.open_table(LOG).map_err(engine)?;
        txn.open_table(META).map_err(engine)?;
        txn.commit().map_err(engine)?;
    }
    reclaim_space(&mut db, path)?;
    let txn = db.begin_read().map_err(engine)?;
    let meta = txn.open_table(META).map_err(engine)?;
    let mut revision = read_meta(&meta, META_REVISION)?;
    let compacted = read_meta(&meta, META_COMPACTED)?;
    let log = txn.open_table(LOG).map_err(engine)?;
    let mut index = Index::default();
    for item in log.iter().map_err(engine)? {
        let (k, v) = item.map_err(engine)?;
        let rev = decode_revision(k.value())?;
        let rec = Record::decode(v.value())?;
        let change = match rec.kind {
            EventKind::Put => Change::Put(Version {
                mod_revision: rev,
                create_revision: rec.create_revision,
                version: rec.version,
            }),
            EventKind::Delete => Change::Delete(rev),
        };
        index.apply(&rec.key, change);
        // The meta revision is written in the same transaction as records,
        // so this only guards against a file edited by hand.
        revision = revision.max(rev);
    }
    drop(log);
    drop(meta);
    drop(txn);
    let pending: VecDeque<Revision> = index.compact(compacted).into();
    Ok((
        db,
        State {
            index,
            revision,
            compacted,
        },
        pending,
    ))
}

/// While running, space freed by compaction is reused but the file never
/// shrinks (redb can only move pages with no transaction open). At open
/// nothing else holds the file, so a file left mostly empty by a burst of
/// history is shrunk here.
fn reclaim_space(db: &mut redb::Database, path: &Path) -> Result<()> {
    let before = std::fs::metadata(path)?.len();
    if before < RECLAIM_MIN_FILE_BYTES {
        return Ok(());
    }
    let stats = {
        let txn = db.begin_write().map_err(engine)?;
        let stats = txn.stats().map_err(engine)?;
        txn.abort().map_err(engine)?;
        stats
    };
    let used = stats.stored_bytes() + stats.metadata_bytes();
    if used.saturating_mul(2) > before {
        return Ok(());
    }
    let started = Instant::now();
    // Each pass moves what it can; a few passes reach the fixed point.
    for _ in 0..8 {
        if !db.compact().map_err(engine)? {
            break;
        }
    }
    tracing::info!(
        before_bytes = before,
        after_bytes = std::fs::metadata(path)?.len(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "reclaimed free space in the store file"
    );
    Ok(())
}

/// Samples the revision every `interval` and compacts to the newest sample
/// older than `retention`.
async fn auto_compact(
    shared: std::sync::Weak<Shared>,
    requests: std_mpsc::Sender<Request>,
    policy: CompactionPolicy,
) {
    let mut samples: VecDeque<(Instant, Revision)> = VecDeque::new();
    let mut tick = tokio::time::interval(policy.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let (revision, compacted) = {
            let s = shared.state.read();
            (s.revision, s.compacted)
        };
        drop(shared);
        let now = Instant::now();
        samples.push_back((now, revision));
        let mut target = None;
        while let Some(&(at, rev)) = samples.front() {
            if now.duration_since(at) >= policy.retention {
                target = Some(rev);
                samples.pop_front();
            } else {
                break;
            }
        }
        if let Some(rev) = target.filter(|&r| r > compacted) {
            let (reply, rx) = oneshot::channel();
            if requests
                .send(Request::Compact {
                    revision: rev,
                    reply,
                })
                .is_err()
            {
                return;
            }
            match rx.await {
                Ok(Ok(())) => tracing::debug!(revision = rev, "compacted"),
                Ok(Err(e)) => tracing::warn!(revision = rev, error = %e, "compaction failed"),
                Err(_) => return,
            }
        }
    }
}

/// How the writer spaces its commits under concurrent load.
#[derive(Debug, Clone, Copy)]
struct Pacing {
    /// Longest a batch waits for more writes, from the start of the last
    /// commit.
    interval: Duration,
    /// A quiet spell this long ends the wait unless the process spent at
    /// least half of it on CPU: a busy server is still producing writes
    /// (this batch will carry them), an idle one has every writer waiting
    /// on this commit already.
    gap: Duration,
    /// CPU time used by the whole process so far.
    cpu: fn() -> Option<Duration>,
}

fn process_cpu() -> Option<Duration> {
    use nix::time::{clock_gettime, ClockId};
    let t = clock_gettime(ClockId::CLOCK_PROCESS_CPUTIME_ID).ok()?;
    Some(Duration::new(
        u64::try_from(t.tv_sec()).ok()?,
        u32::try_from(t.tv_nsec()).ok()?,
    ))
}

/// Adds what is queued to `batch`. When writes come concurrently (this batch
/// or the last held more than one), keeps gathering while they arrive or
/// the process is busy, until `pacing.interval` has passed since
/// `last_commit`. A lone writer waiting on each answer never waits here.
fn gather(
    requests: &std_mpsc::Receiver<Request>,
    batch: &mut Vec<Request>,
    last_commit: Option<Instant>,
    last_batch: usize,
    pacing: Pacing,
) {
    let mut deadline = None;
    loop {
        if !drain(requests, batch) || batch.len() >= MAX_BATCH {
            return;
        }
        if deadline.is_none() && (batch.len() > 1 || last_batch > 1) {
            deadline = last_commit.map(|t| t + pacing.interval);
        }
        let Some(wait) = deadline.and_then(|d| d.checked_duration_since(Instant::now())) else {
            return;
        };
        if wait.is_zero() {
            return;
        }
        // Sleeping rather than waiting on the channel spares every sender
        // a wake-up of this thread (a futex call and a context switch per
        // write); what arrived meanwhile is drained after.
        let slice = wait.min(pacing.gap);
        let cpu_before = (pacing.cpu)();
        let had = batch.len();
        std::thread::sleep(slice);
        if !drain(requests, batch) {
            return;
        }
        if batch.len() == had {
            let used = (pacing.cpu)()
                .zip(cpu_before)
                .map(|(now, before)| now.saturating_sub(before));
            if used.is_none_or(|u| u < slice / 2) {
                return;
            }
        }
    }
}

/// Moves what is queued into `batch`, up to [`MAX_BATCH`]; false once every
/// sender is gone.
fn drain(requests: &std_mpsc::Receiver<Request>, batch: &mut Vec<Request>) -> bool {
    while batch.len() < MAX_BATCH {
        match requests.try_recv() {
            Ok(r) => batch.push(r),
            Err(std_mpsc::TryRecvError::Empty) => return true,
            Err(std_mpsc::TryRecvError::Disconnected) => return false,
        }
    }
    true
}

/// The single writer: owns every mutation of the file and the index.
struct Writer {
    shared: Arc<Shared>,
    requests: std_mpsc::Receiver<Request>,
    pending_deletes: VecDeque<Revision>,
    durability: Durability,
    pacing: Pacing,
    /// When the last commit started, and how many requests it held.
    last_commit: Option<Instant>,
    last_batch: usize,
}

/// The latest state of a key as seen by the batch being built.
#[derive(Clone)]
struct Current {
    version: Version,
    value: Bytes,
}

impl Writer {
    fn run(mut self) {
        loop {
            let first = if self.pending_deletes.is_empty() {
                match self.requests.recv() {
                    Ok(r) => Some(r),
                    Err(_) => return,
                }
            } else {
                match self.requests.try_recv() {
                    Ok(r) => Some(r),
                    Err(std_mpsc::TryRecvError::Empty) => None,
                    Err(std_mpsc::TryRecvError::Disconnected) => {
                        self.finish_deletes();
                        return;
                    }
                }
            };
            let mut batch = Vec::new();
            if let Some(first) = first {
                batch.push(first);
                gather(
                    &self.requests,
                    &mut batch,
                    self.last_commit,
                    self.last_batch,
                    self.pacing,
                );
            }
            self.last_commit = Some(Instant::now());
            self.last_batch = batch.len();
            self.process(batch);
        }
    }

    fn process(&mut self, batch: Vec<Request>) {
        let mut writes = Vec::with_capacity(batch.len());
        for req in batch {
            match req {
                Request::Write { op, reply } => writes.push((op, reply)),
                Request::Compact { revision, reply } => {
                    // Compactions commit on their own so that a batch never
                    // mixes reads of pre- and post-compaction state.
                    if !writes.is_empty() {
                        self.commit_writes(std::mem::take(&mut writes));
                    }
                    let _ = reply.send(self.compact(revision));
                }
            }
        }
        if !writes.is_empty() || !self.pending_deletes.is_empty() {
            self.commit_writes(writes);
        }
    }

    /// At shutdown, removes what compaction left queued so that the next
    /// open finds the space free and can shrink the file. The last commit is
    /// durable: the removals before it were committed without fsync.
    fn finish_deletes(&mut self) {
        while !self.pending_deletes.is_empty() {
            let before = self.pending_deletes.len();
            self.commit_writes(Vec::new());
            if self.pending_deletes.len() >= before {
                // The commit failed (already logged); the next open
                // recomputes the queue from the compacted revision.
                return;
            }
        }
        self.sync();
    }

    /// Commits an empty transaction durably, flushing earlier commits that
    /// skipped fsync.
    fn sync(&self) {
        let result = (|| -> Result<()> {
            let txn = self.shared.db.begin_write().map_err(engine)?;
            txn.commit().map_err(engine)
        })();
        if let Err(e) = result {
            tracing::warn!(error = %e, "store sync at shutdown failed");
        }
    }

    fn compact(&mut self, revision: Revision) -> Result<()> {
        let (current, compacted) = {
            let s = self.shared.state.read();
            (s.revision, s.compacted)
        };
        if revision > current {
            return Err(Error::FutureRevision {
                requested: revision,
                current,
            });
        }
        if revision <= compacted {
            return Err(Error::Compacted {
                requested: revision,
                compacted,
            });
        }
        let txn = self.shared.db.begin_write().map_err(engine)?;
        {
            let mut meta = txn.open_table(META).map_err(engine)?;
            meta.insert(META_COMPACTED, revision.to_le_bytes().as_slice())
                .map_err(engine)?;
        }
        txn.commit().map_err(engine)?;
        let dead = {
            let mut s = self.shared.state.write();
            s.compacted = revision;
            s.index.compact(revision)
        };
        tracing::debug!(revision, records = dead.len(), "compaction scheduled");
        self.pending_deletes.extend(dead);
        Ok(())
    }

    /// Validates and applies a batch of writes in one transaction.
    fn commit_writes(&mut self, writes: Vec<(Op, oneshot::Sender<Result<Outcome>>)>) {
        let base = self.shared.state.read().revision;
        let mut next = base;
        let mut overlay: HashMap<Bytes, Option<Current>> = HashMap::new();
        let mut changes: Vec<(Bytes, Change)> = Vec::new();
        let mut events: Vec<Event> = Vec::new();
        let mut replies = Vec::with_capacity(writes.len());

        let mut removed: Vec<Revision> = Vec::new();
        let mut queue: VecDeque<_> = writes.into();
        let result = (|| -> Result<()> {
            let mut txn = self.shared.db.begin_write().map_err(engine)?;
            let durable = !queue.is_empty() && self.durability == Durability::Fsync;
            if !durable {
                // Removing compacted records needs no fsync: if it is lost,
                // the next start recomputes it from the compacted revision.
                txn.set_durability(redb::Durability::None).map_err(engine)?;
            }
            {
                let mut log = txn.open_table(LOG).map_err(engine)?;
                while let Some((op, reply)) = queue.pop_front() {
                    // A request that fails validation is answered; an engine
                    // failure aborts the whole batch (the `?`).
                    let res = self.apply_op(
                        &mut log,
                        &mut overlay,
                        &mut next,
                        op,
                        &mut changes,
                        &mut events,
                    );
                    replies.push((reply, res));
                    if let Some((_, Err(e))) = replies.last() {
                        if matches!(e, Error::Engine(_) | Error::Io(_) | Error::Corrupt(_)) {
                            return Err(Error::Engine(e.to_string()));
                        }
                    }
                }
                while removed.len() < DELETES_PER_TXN {
                    let Some(rev) = self.pending_deletes.pop_front() else {
                        break;
                    };
                    removed.push(rev);
                    log.remove(encode_revision(rev).as_slice())
                        .map_err(engine)?;
                }
                if next != base {
                    let mut meta = txn.open_table(META).map_err(engine)?;
                    meta.insert(META_REVISION, next.to_le_bytes().as_slice())
                        .map_err(engine)?;
                }
            }
            txn.commit().map_err(engine)?;
            Ok(())
        })();

        match result {
            Ok(_) => {
                if next != base {
                    let mut s = self.shared.state.write();
                    for (key, change) in &changes {
                        s.index.apply(key, *change);
                    }
                    s.revision = next;
                }
                if !events.is_empty() {
                    // No receivers is fine: nobody is watching.
                    let _ = self.shared.events.send(events.into());
                }
                for (reply, res) in replies {
                    let _ = reply.send(res);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "store commit failed");
                for rev in removed.into_iter().rev() {
                    self.pending_deletes.push_front(rev);
                }
                let unanswered = queue.into_iter().map(|(_, reply)| reply);
                for reply in replies
                    .into_iter()
                    .map(|(reply, _)| reply)
                    .chain(unanswered)
                {
                    let _ = reply.send(Err(Error::Engine(e.to_string())));
                }
            }
        }
    }

    /// Applies one request to the open transaction, or explains why not.
    /// Reads see the committed index plus this batch's earlier writes.
    fn apply_op(
        &self,
        log: &mut redb::Table<&'static [u8], &'static [u8]>,
        overlay: &mut HashMap<Bytes, Option<Current>>,
        next: &mut Revision,
        op: Op,
        changes: &mut Vec<(Bytes, Change)>,
        events: &mut Vec<Event>,
    ) -> Result<Outcome> {
        let key = match &op {
            Op::Create { key, .. } | Op::Update { key, .. } | Op::Delete { key, .. } => key.clone(),
        };
        let current = match overlay.get(&key) {
            Some(c) => c.clone(),
            None => {
                let version = self.shared.state.read().index.get(&key, Revision::MAX);
                match version {
                    None => None,
                    Some(version) => {
                        let rec = read_record(log, version.mod_revision)?.ok_or(Error::Corrupt(
                            DecodeError::Invalid("index names a record missing from history"),
                        ))?;
                        Some(Current {
                            version,
                            value: rec.value,
                        })
                    }
                }
            }
        };
        let current_kv = |c: &Current| KeyValue {
            key: key.clone(),
            value: c.value.clone(),
            create_revision: c.version.create_revision,
            mod_revision: c.version.mod_revision,
            version: c.version.version,
        };
        let rev = *next + 1;
        let (record, outcome, event, new_current) = match op {
            Op::Create { value, .. } => {
                if let Some(c) = &current {
                    return Err(Error::AlreadyExists {
                        current: Box::new(current_kv(c)),
                    });
                }
                let version = Version {
                    mod_revision: rev,
                    create_revision: rev,
                    version: 1,
                };
                let kv = KeyValue {
                    key: key.clone(),
                    value: value.clone(),
                    create_revision: rev,
                    mod_revision: rev,
                    version: 1,
                };
                let record = Record {
                    kind: EventKind::Put,
                    key: key.clone(),
                    value: value.clone(),
                    create_revision: rev,
                    version: 1,
                    prev_revision: 0,
                };
                let event = Event {
                    kind: EventKind::Put,
                    kv: kv.clone(),
                    prev: None,
                };
                (
                    record,
                    Outcome::Put(kv),
                    event,
                    Some(Current { version, value }),
                )
            }
            Op::Update {
                value, expected, ..
            } => {
                let c = current.as_ref().ok_or(Error::NotFound)?;
                if c.version.mod_revision != expected {
                    return Err(Error::Conflict {
                        expected,
                        current: Box::new(current_kv(c)),
                    });
                }
                let version = Version {
                    mod_revision: rev,
                    create_revision: c.version.create_revision,
                    version: c.version.version + 1,
                };
                let kv = KeyValue {
                    key: key.clone(),
                    value: value.clone(),
                    create_revision: version.create_revision,
                    mod_revision: rev,
                    version: version.version,
                };
                let record = Record {
                    kind: EventKind::Put,
                    key: key.clone(),
                    value: value.clone(),
                    create_revision: version.create_revision,
                    version: version.version,
                    prev_revision: c.version.mod_revision,
                };
                let event = Event {
                    kind: EventKind::Put,
                    kv: kv.clone(),
                    prev: Some(current_kv(c)),
                };
                (
                    record,
                    Outcome::Put(kv),
                    event,
                    Some(Current { version, value }),
                )
            }
            Op::Delete { expected, .. } => {
                let c = current.as_ref().ok_or(Error::NotFound)?;
                if let Some(expected) = expected {
                    if c.version.mod_revision != expected {
                        return Err(Error::Conflict {
                            expected,
                            current: Box::new(current_kv(c)),
                        });
                    }
                }
                let prev = current_kv(c);
                let record = Record {
                    kind: EventKind::Delete,
                    key: key.clone(),
                    value: Bytes::new(),
                    create_revision: 0,
                    version: 0,
                    prev_revision: c.version.mod_revision,
                };
                let event = Event {
                    kind: EventKind::Delete,
                    kv: KeyValue {
                        key: key.clone(),
                        value: Bytes::new(),
                        create_revision: 0,
                        mod_revision: rev,
                        version: 0,
                    },
                    prev: Some(prev.clone()),
                };
                let outcome = Outcome::Deleted(DeleteResponse {
                    revision: rev,
                    prev,
                });
                (record, outcome, event, None)
            }
        };
        log.insert(encode_revision(rev).as_slice(), record.encode().as_slice())
            .map_err(engine)?;
        *next = rev;
        let change = match &new_current {
            Some(c) => Change::Put(c.version),
            None => Change::Delete(rev),
        };
        changes.push((key.clone(), change));
        overlay.insert(key, new_current);
        events.push(event);
        Ok(outcome)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pacing(interval_s: u64, gap_s: u64) -> Pacing {
        Pacing {
            interval: Duration::from_secs(interval_s),
            gap: Duration::from_secs(gap_s),
            cpu: idle,
        }
    }

    fn idle() -> Option<Duration> {
        Some(Duration::ZERO)
    }

    /// A process clock that runs a second ahead at every reading.
    fn busy() -> Option<Duration> {
        static SECONDS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let s = SECONDS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Some(Duration::from_secs(s))
    }

    fn compact_request() -> Request {
        let (reply, _) = oneshot::channel();
        Request::Compact { revision: 1, reply }
    }

    #[test]
    fn a_lone_writer_is_never_held_back() {
        let (tx, rx) = std_mpsc::channel();
        tx.send(compact_request()).unwrap();
        let mut batch = Vec::new();
        let started = Instant::now();
        // The last commit held one request and just started: a long
        // interval must still not delay this one.
        gather(&rx, &mut batch, Some(started), 1, pacing(30, 30));
        assert_eq!(batch.len(), 1);
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn concurrent_writes_wait_for_the_interval_and_share_a_commit() {
        let (tx, rx) = std_mpsc::channel();
        tx.send(compact_request()).unwrap();
        let late = tx.clone();
        let sender = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            late.send(compact_request()).unwrap();
        });
        let mut batch = Vec::new();
        let started = Instant::now();
        gather(&rx, &mut batch, Some(started), 2, pacing(2, 2));
        sender.join().unwrap();
        // The request sent 50 ms later joined, and the wait ended at the
        // interval although the channel stayed open.
        assert_eq!(batch.len(), 2);
        assert!(started.elapsed() >= Duration::from_secs(2));
        // A quiet spell: the interval has long passed, nothing waits.
        let mut next = Vec::new();
        tx.send(compact_request()).unwrap();
        let again = Instant::now();
        gather(&rx, &mut next, Some(started), 2, pacing(2, 2));
        assert_eq!(next.len(), 1);
        assert!(again.elapsed() < Duration::from_secs(1));
    }

    #[test]
    fn a_quiet_gap_in_an_idle_process_ends_the_wait() {
        let (tx, rx) = std_mpsc::channel();
        tx.send(compact_request()).unwrap();
        tx.send(compact_request()).unwrap();
        let mut batch = Vec::new();
        let started = Instant::now();
        // Two concurrent writes, then nothing while the process is idle:
        // the batch goes after the gap, not after the 30 s interval.
        let quiet = Pacing {
            interval: Duration::from_secs(30),
            gap: Duration::from_millis(20),
            cpu: idle,
        };
        gather(&rx, &mut batch, Some(started), 2, quiet);
        assert_eq!(batch.len(), 2);
        assert!(started.elapsed() < Duration::from_secs(10));
        // The same quiet spell in a busy process waits to the interval.
        tx.send(compact_request()).unwrap();
        tx.send(compact_request()).unwrap();
        let mut batch = Vec::new();
        let started = Instant::now();
        let busy = Pacing {
            interval: Duration::from_millis(300),
            cpu: busy,
            ..quiet
        };
        gather(&rx, &mut batch, Some(started), 2, busy);
        assert_eq!(batch.len(), 2);
        assert!(started.elapsed() >= Duration::from_millis(300));
    }
}
