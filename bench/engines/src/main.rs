//! kelson-engine-bench: compares embedded storage engines (redb, fjall, SQLite)
//! on the revisioned-log workload of an etcd-like MVCC store.
//!
//! Every commit is made durable before it returns (that is the property the
//! orchestrator's store needs), so the numbers below are fsync-bound on purpose.
//!
//! Usage:
//!   kelson-engine-bench [all | fsync | <variant>...]      run benchmarks
//!   kelson-engine-bench count <variant> <commits> <batch> fixed commit count (for strace -c)
//!   kelson-engine-bench crash <records> [<variant>...]   reopen time after abort()
//! Variants: redb, redb-2pc, fjall, sqlite, sqlite-incvac
//! Env: BENCH_DIR (default /var/tmp), CHURN_RECORDS (default 1_000_000), PHASES (gc,churn).

use std::fs;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------
// Workload parameters (from the brief)
// ---------------------------------------------------------------------------

const PAYLOAD: usize = 1024; // random part of each record
const KEYS: u64 = 10_000; // distinct object keys in the churn phase
const RETAIN: u64 = 30_000; // newest revisions kept after compaction
const CHURN_BATCH: usize = 256;
const CACHE_BYTES: usize = 64 << 20; // same page/block cache budget for every engine
const META_KEY: &str = "current_rev";

// ---------------------------------------------------------------------------
// Tiny deterministic RNG (splitmix64): avoids a dependency and keeps runs reproducible
// ---------------------------------------------------------------------------

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

/// Encodes one log record roughly like an etcd mvccpb.KeyValue:
/// key name + create/mod revision + version + lease + 1 KiB value (~1,106 bytes total).
/// The payload is random so LZ4 in fjall cannot cheat by compressing it.
fn encode_record(rng: &mut Rng, rev: u64, key_idx: u64) -> Vec<u8> {
    let name = format!(
        "/registry/pods/namespace-{:04}/pod-{:08}",
        key_idx % 100,
        key_idx
    );
    let mut v = Vec::with_capacity(2 + name.len() + 32 + 4 + PAYLOAD);
    v.extend_from_slice(&(name.len() as u16).to_be_bytes());
    v.extend_from_slice(name.as_bytes());
    v.extend_from_slice(&rev.saturating_sub(key_idx).to_be_bytes()); // create_revision (fake)
    v.extend_from_slice(&rev.to_be_bytes()); // mod_revision
    v.extend_from_slice(&(rev / KEYS + 1).to_be_bytes()); // version (fake)
    v.extend_from_slice(&0u64.to_be_bytes()); // lease
    v.extend_from_slice(&(PAYLOAD as u32).to_be_bytes());
    let start = v.len();
    v.resize(start + PAYLOAD, 0);
    rng.fill(&mut v[start..]);
    v
}

// ---------------------------------------------------------------------------
// Engine abstraction: just what the store needs
// ---------------------------------------------------------------------------

trait Engine {
    /// One atomic, durable transaction: insert log records, delete log revisions
    /// [del_from, del_to), set meta/current_rev. Must be fsynced when it returns.
    fn commit(&mut self, puts: &[(u64, Vec<u8>)], del: (u64, u64), current_rev: u64);
    /// Read meta/current_rev (used to define "open finished": first real read done).
    fn current_rev(&mut self) -> Option<u64>;
    /// Point read of one revision; returns value length.
    fn get(&mut self, rev: u64) -> Option<usize>;
    /// Batched point reads inside one read snapshot; returns bytes read.
    fn get_many(&mut self, revs: &[u64]) -> usize {
        revs.iter()
            .map(|r| self.get(*r).expect("missing rev"))
            .sum()
    }
    /// Full ordered scan of the log; returns (records, bytes, first_rev, last_rev).
    fn scan(&mut self) -> (u64, u64, u64, u64);
    /// Periodic maintenance hook (SQLite incremental_vacuum); no-op elsewhere.
    fn maintenance(&mut self) {}
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Variant {
    Redb,
    Redb2pc,
    Fjall,
    FjallSmall,
    FjallSmallWeak,
    Sqlite,
    SqliteIncVac,
}

impl Variant {
    fn all() -> [Variant; 7] {
        [
            Variant::Redb,
            Variant::Redb2pc,
            Variant::Fjall,
            Variant::FjallSmall,
            Variant::FjallSmallWeak,
            Variant::Sqlite,
            Variant::SqliteIncVac,
        ]
    }
    fn name(self) -> &'static str {
        match self {
            Variant::Redb => "redb",
            Variant::Redb2pc => "redb-2pc",
            Variant::Fjall => "fjall",
            Variant::FjallSmall => "fjall-small",
            Variant::FjallSmallWeak => "fjall-small-weak",
            Variant::Sqlite => "sqlite",
            Variant::SqliteIncVac => "sqlite-incvac",
        }
    }
    fn parse(s: &str) -> Option<Variant> {
        Variant::all().into_iter().find(|v| v.name() == s)
    }
    /// Opens (creating if needed) the engine's files inside `dir`.
    fn open(self, dir: &Path) -> Box<dyn Engine> {
        match self {
            Variant::Redb => Box::new(redb_engine::RedbEngine::open(dir, false)),
            Variant::Redb2pc => Box::new(redb_engine::RedbEngine::open(dir, true)),
            Variant::Fjall => Box::new(fjall_engine::FjallEngine::open(dir, false, false)),
            Variant::FjallSmall => Box::new(fjall_engine::FjallEngine::open(dir, true, false)),
            Variant::FjallSmallWeak => Box::new(fjall_engine::FjallEngine::open(dir, true, true)),
            Variant::Sqlite => Box::new(sqlite_engine::SqliteEngine::open(dir, false)),
            Variant::SqliteIncVac => Box::new(sqlite_engine::SqliteEngine::open(dir, true)),
        }
    }
}

fn be(rev: u64) -> [u8; 8] {
    rev.to_be_bytes()
}

// ---------------------------------------------------------------------------
// redb: copy-on-write B+tree in one file.
// Durability::Immediate is the default; a commit writes dirty pages + the header's
// secondary slot, flips the god byte, and issues ONE fdatasync (1-phase commit
// relies on checksums). With quick_repair (=> 2-phase commit) it issues TWO
// fdatasyncs but recovery after a crash needs no full-file repair walk.
// ---------------------------------------------------------------------------
mod redb_engine {
    use super::*;
    use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};

    const LOG: TableDefinition<[u8; 8], &[u8]> = TableDefinition::new("log");
    const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

    pub struct RedbEngine {
        db: Database,
        two_phase: bool,
    }

    impl RedbEngine {
        pub fn open(dir: &Path, two_phase: bool) -> Self {
            let path = dir.join("db.redb");
            let db = Database::builder()
                .set_cache_size(CACHE_BYTES)
                .create(&path)
                .expect("redb open");
            RedbEngine { db, two_phase }
        }
    }

    impl Engine for RedbEngine {
        fn commit(&mut self, puts: &[(u64, Vec<u8>)], del: (u64, u64), current_rev: u64) {
            let mut txn = self.db.begin_write().unwrap();
            // Immediate is already the default; set it explicitly so intent is visible.
            txn.set_durability(Durability::Immediate).unwrap();
            if self.two_phase {
                txn.set_quick_repair(true); // implies 2-phase commit
            }
            {
                let mut log = txn.open_table(LOG).unwrap();
                for (rev, val) in puts {
                    log.insert(be(*rev), val.as_slice()).unwrap();
                }
                for rev in del.0..del.1 {
                    log.remove(be(rev)).unwrap();
                }
                let mut meta = txn.open_table(META).unwrap();
                meta.insert(META_KEY, current_rev).unwrap();
            }
            txn.commit().unwrap();
        }
        fn current_rev(&mut self) -> Option<u64> {
            let rtx = self.db.begin_read().unwrap();
            let meta = rtx.open_table(META).ok()?;
            meta.get(META_KEY).unwrap().map(|g| g.value())
        }
        fn get(&mut self, rev: u64) -> Option<usize> {
            self.get_many(&[rev]).into()
        }
        fn get_many(&mut self, revs: &[u64]) -> usize {
            let rtx = self.db.begin_read().unwrap();
            let log = rtx.open_table(LOG).unwrap();
            let mut bytes = 0;
            for rev in revs {
                bytes += log
                    .get(be(*rev))
                    .unwrap()
                    .expect("missing rev")
                    .value()
                    .len();
            }
            bytes
        }
        fn scan(&mut self) -> (u64, u64, u64, u64) {
            let rtx = self.db.begin_read().unwrap();
            let log = rtx.open_table(LOG).unwrap();
            let (mut n, mut bytes, mut first, mut last) = (0, 0, 0, 0);
            for item in log.iter().unwrap() {
                let (k, v) = item.unwrap();
                let rev = u64::from_be_bytes(k.value());
                if n == 0 {
                    first = rev;
                }
                last = rev;
                n += 1;
                bytes += v.value().len() as u64;
            }
            (n, bytes, first, last)
        }
    }
}

// ---------------------------------------------------------------------------
// fjall: LSM-tree. One Database with two keyspaces ("log", "meta"); a WriteBatch is
// atomic across keyspaces. durability(Some(SyncAll)) makes commit() write the batch
// to the journal and fsync() it (sync_all) *before* applying it to the memtables.
// Flushes/compactions run on background threads (they fsync tables + version file).
// ---------------------------------------------------------------------------
mod fjall_engine {
    use super::*;
    use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};

    pub struct FjallEngine {
        db: Database,
        log: Keyspace,
        meta: Keyspace,
        weak: bool,
    }

    impl FjallEngine {
        /// `small`: cap journals at 64 MiB (the minimum; default 512 MiB) and memtables at
        /// 16 MiB (default 64 MiB), so journals are flushed and deleted sooner. That bounds
        /// disk use and reopen (journal replay) time.
        /// `weak`: delete compacted revisions with weak tombstones (experimental,
        /// doc(hidden) API, valid only because each revision key is written exactly once).
        /// The tombstone disappears when it meets its insert in compaction.
        pub fn open(dir: &Path, small: bool, weak: bool) -> Self {
            let mut b = Database::builder(dir.join("fjall")).cache_size(CACHE_BYTES as u64);
            if small {
                b = b.max_journaling_size(64 << 20);
            }
            let db = b.open().expect("fjall open");
            let log = db
                .keyspace("log", || {
                    let o = KeyspaceCreateOptions::default();
                    if small {
                        o.max_memtable_size(16 << 20)
                    } else {
                        o
                    }
                })
                .unwrap();
            let meta = db.keyspace("meta", KeyspaceCreateOptions::default).unwrap();
            FjallEngine {
                db,
                log,
                meta,
                weak,
            }
        }
    }

    impl Engine for FjallEngine {
        fn commit(&mut self, puts: &[(u64, Vec<u8>)], del: (u64, u64), current_rev: u64) {
            let mut b = self.db.batch().durability(Some(PersistMode::SyncAll));
            for (rev, val) in puts {
                b.insert(&self.log, &be(*rev)[..], val.as_slice());
            }
            for rev in del.0..del.1 {
                if self.weak {
                    b.remove_weak(&self.log, &be(rev)[..]);
                } else {
                    b.remove(&self.log, &be(rev)[..]);
                }
            }
            b.insert(&self.meta, META_KEY, &current_rev.to_be_bytes()[..]);
            b.commit().unwrap();
        }
        fn current_rev(&mut self) -> Option<u64> {
            let v = self.meta.get(META_KEY).unwrap()?;
            Some(u64::from_be_bytes(v[..8].try_into().unwrap()))
        }
        fn get(&mut self, rev: u64) -> Option<usize> {
            self.log.get(be(rev)).unwrap().map(|v| v.len())
        }
        fn scan(&mut self) -> (u64, u64, u64, u64) {
            let (mut n, mut bytes, mut first, mut last) = (0, 0, 0, 0);
            for g in self.log.iter() {
                let (k, v) = g.into_inner().unwrap();
                let rev = u64::from_be_bytes(k[..8].try_into().unwrap());
                if n == 0 {
                    first = rev;
                }
                last = rev;
                n += 1;
                bytes += v.len() as u64;
            }
            (n, bytes, first, last)
        }
    }

    impl Drop for FjallEngine {
        fn drop(&mut self) {
            // Dropping persists too, but be explicit so close is clean before reopen.
            let _ = self.db.persist(PersistMode::SyncAll);
        }
    }
}

// ---------------------------------------------------------------------------
// SQLite (bundled): WAL mode + synchronous=FULL => the WAL is fsynced at every
// commit. Note the bundled build has no HAVE_FDATASYNC, so SQLite calls fsync().
// Automatic checkpoints (every ~1000 WAL pages) run inside the committing call and
// fsync the WAL and the main db file, which shows up in p99.
// Freed pages go to the freelist and are reused, which is what bounds the file;
// the -incvac variant additionally uses auto_vacuum=INCREMENTAL and runs
// `PRAGMA incremental_vacuum` every 100 commits to hand free pages back to the FS.
// The log uses INTEGER PRIMARY KEY (the rowid B-tree) = the natural u64-keyed table.
// ---------------------------------------------------------------------------
mod sqlite_engine {
    use super::*;
    use rusqlite::{params, Connection, OptionalExtension};

    pub struct SqliteEngine {
        conn: Connection,
        incvac: bool,
        commits: u64,
    }

    impl SqliteEngine {
        pub fn open(dir: &Path, incvac: bool) -> Self {
            let conn = Connection::open(dir.join("db.sqlite")).expect("sqlite open");
            // auto_vacuum must be chosen before the first table is created.
            if incvac {
                conn.pragma_update(None, "auto_vacuum", "INCREMENTAL")
                    .unwrap();
            }
            let mode: String = conn
                .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
                .unwrap();
            assert_eq!(mode.to_lowercase(), "wal");
            conn.pragma_update(None, "synchronous", "FULL").unwrap();
            conn.pragma_update(None, "cache_size", -((CACHE_BYTES / 1024) as i64))
                .unwrap();
            conn.execute_batch(
                "CREATE TABLE IF NOT EXISTS log (rev INTEGER PRIMARY KEY, val BLOB NOT NULL);
                 CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v INTEGER NOT NULL) WITHOUT ROWID;",
            )
            .unwrap();
            SqliteEngine {
                conn,
                incvac,
                commits: 0,
            }
        }
    }

    impl Engine for SqliteEngine {
        fn commit(&mut self, puts: &[(u64, Vec<u8>)], del: (u64, u64), current_rev: u64) {
            let tx = self.conn.transaction().unwrap();
            {
                let mut ins = tx
                    .prepare_cached("INSERT INTO log (rev, val) VALUES (?1, ?2)")
                    .unwrap();
                for (rev, val) in puts {
                    ins.execute(params![*rev as i64, val]).unwrap();
                }
                if del.1 > del.0 {
                    let mut d = tx
                        .prepare_cached("DELETE FROM log WHERE rev >= ?1 AND rev < ?2")
                        .unwrap();
                    d.execute(params![del.0 as i64, del.1 as i64]).unwrap();
                }
                let mut m = tx
                    .prepare_cached("INSERT OR REPLACE INTO meta (k, v) VALUES (?1, ?2)")
                    .unwrap();
                m.execute(params![META_KEY, current_rev as i64]).unwrap();
            }
            tx.commit().unwrap();
            self.commits += 1;
        }
        fn maintenance(&mut self) {
            if self.incvac && self.commits % 100 == 0 {
                // Returns free pages to the OS (its own durable write transaction).
                self.conn
                    .execute_batch("PRAGMA incremental_vacuum")
                    .unwrap();
            }
        }
        fn current_rev(&mut self) -> Option<u64> {
            self.conn
                .query_row("SELECT v FROM meta WHERE k = ?1", [META_KEY], |r| {
                    r.get::<_, i64>(0)
                })
                .optional()
                .unwrap()
                .map(|v| v as u64)
        }
        fn get(&mut self, rev: u64) -> Option<usize> {
            let mut st = self
                .conn
                .prepare_cached("SELECT val FROM log WHERE rev = ?1")
                .unwrap();
            st.query_row([rev as i64], |r| Ok(r.get_ref(0)?.as_blob()?.len()))
                .optional()
                .unwrap()
        }
        fn get_many(&mut self, revs: &[u64]) -> usize {
            // One read transaction, like the other engines' single snapshot.
            self.conn.execute_batch("BEGIN").unwrap();
            let bytes = revs
                .iter()
                .map(|r| self.get(*r).expect("missing rev"))
                .sum();
            self.conn.execute_batch("COMMIT").unwrap();
            bytes
        }
        fn scan(&mut self) -> (u64, u64, u64, u64) {
            let mut st = self
                .conn
                .prepare("SELECT rev, val FROM log ORDER BY rev")
                .unwrap();
            let mut rows = st.query([]).unwrap();
            let (mut n, mut bytes, mut first, mut last) = (0, 0, 0, 0);
            while let Some(row) = rows.next().unwrap() {
                let rev = row.get::<_, i64>(0).unwrap() as u64;
                if n == 0 {
                    first = rev;
                }
                last = rev;
                n += 1;
                bytes += row.get_ref(1).unwrap().as_blob().unwrap().len() as u64;
            }
            (n, bytes, first, last)
        }
    }
}

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// (apparent bytes, allocated bytes) of every file under `p`. Allocated matters for
/// fjall's journals, which are pre-sized sparse files (64 MiB apparent).
fn dir_size(p: &Path) -> (u64, u64) {
    let mut tot = (0, 0);
    if let Ok(rd) = fs::read_dir(p) {
        for e in rd.flatten() {
            let md = match e.metadata() {
                Ok(m) => m,
                Err(_) => continue,
            };
            if md.is_dir() {
                let s = dir_size(&e.path());
                tot.0 += s.0;
                tot.1 += s.1;
            } else {
                tot.0 += md.len();
                tot.1 += md.blocks() * 512;
            }
        }
    }
    tot
}

fn mib(b: u64) -> String {
    format!("{:.1}MiB", b as f64 / (1u64 << 20) as f64)
}

fn size_str(p: &Path) -> String {
    let (a, b) = dir_size(p);
    format!(
        "apparent {} ({} B) / allocated {} ({} B)",
        mib(a),
        a,
        mib(b),
        b
    )
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx].as_secs_f64() * 1e3
}

/// Flush other dirty data (previous phases) so it does not land in our fsyncs, wait
/// a moment, and print the load average: this VM is shared with other jobs.
fn quiesce(label: &str) -> f64 {
    let _ = std::process::Command::new("sync").status();
    std::thread::sleep(Duration::from_millis(500));
    let load = fs::read_to_string("/proc/loadavg").unwrap_or_default();
    // Quick disk-health check right before the phase: other jobs on this VM sometimes
    // push fdatasync from ~0.2 ms to ~4 ms, and phases run then are not comparable.
    let path = bench_base().join(format!("kelson-bench-{}-probe", std::process::id()));
    let mut f = fs::File::create(&path).unwrap();
    let mut lat: Vec<Duration> = (0..200)
        .map(|_| {
            let t = Instant::now();
            f.write_all(&[7u8; 1024]).unwrap();
            f.sync_data().unwrap();
            t.elapsed()
        })
        .collect();
    drop(f);
    let _ = fs::remove_file(&path);
    lat.sort();
    println!(
        "  ({label}: loadavg {}; probe 1KiB append+fdatasync p50_ms={:.3})",
        load.trim(),
        pct(&lat, 0.5)
    );
    pct(&lat, 0.5)
}

/// Per-subdirectory sizes, showing where the bytes are (journals vs tables, WAL vs db).
fn breakdown(root: &Path) -> String {
    let mut groups: std::collections::BTreeMap<String, (u64, u64, u64)> = Default::default();
    fn walk(p: &Path, root: &Path, g: &mut std::collections::BTreeMap<String, (u64, u64, u64)>) {
        for e in fs::read_dir(p).into_iter().flatten().flatten() {
            let Ok(md) = e.metadata() else { continue };
            if md.is_dir() {
                walk(&e.path(), root, g);
            } else {
                let rel = e.path().strip_prefix(root).unwrap().to_path_buf();
                // group files by parent dir; single files at top level keep their name
                let key = match rel.parent() {
                    Some(par) if !par.as_os_str().is_empty() => format!("{}/*", par.display()),
                    _ => rel.display().to_string(),
                };
                let ent = g.entry(key).or_default();
                ent.0 += 1;
                ent.1 += md.len();
                ent.2 += md.blocks() * 512;
            }
        }
    }
    walk(root, root, &mut groups);
    groups
        .iter()
        .map(|(k, (n, a, b))| format!("{k}: {n} files {} (alloc {})", mib(*a), mib(*b)))
        .collect::<Vec<_>>()
        .join("; ")
}

fn fresh_dir(base: &Path, tag: &str) -> PathBuf {
    let d = base.join(format!("kelson-bench-{}-{}", std::process::id(), tag));
    let _ = fs::remove_dir_all(&d);
    fs::create_dir_all(&d).unwrap();
    d
}

fn bench_base() -> PathBuf {
    PathBuf::from(std::env::var("BENCH_DIR").unwrap_or_else(|_| "/var/tmp".into()))
}

// ---------------------------------------------------------------------------
// Workloads
// ---------------------------------------------------------------------------

/// 1. Group commit: append `batch` consecutive revisions + meta per transaction.
fn group_commit(v: Variant, batch: usize) {
    let disk_before = quiesce(&format!("{} gc{}", v.name(), batch));
    let dir = fresh_dir(&bench_base(), &format!("{}-gc{}", v.name(), batch));
    let mut eng = v.open(&dir);
    let mut rng = Rng(42 + batch as u64);
    let limit = Duration::from_secs(4);
    let max_records: u64 = if batch == 1 { 20_000 } else { u64::MAX };
    let mut lat = Vec::new();
    let mut rev = 0u64;
    let start = Instant::now();
    while start.elapsed() < limit && rev < max_records {
        // Encode outside the latency window: we time the transaction only.
        let puts: Vec<(u64, Vec<u8>)> = (0..batch as u64)
            .map(|i| {
                let r = rev + 1 + i;
                (r, encode_record(&mut rng, r, rng_key(r)))
            })
            .collect();
        rev += batch as u64;
        let t = Instant::now();
        eng.commit(&puts, (0, 0), rev);
        lat.push(t.elapsed());
    }
    let el = start.elapsed().as_secs_f64();
    assert_eq!(eng.current_rev(), Some(rev));
    lat.sort();
    drop(eng);
    let _ = fs::remove_dir_all(&dir);
    let disk_after = quiesce("after");
    println!(
        "RESULT gc {:<14} batch={:<4} commits={:<6} records={:<7} secs={:.2} records/s={:.0} commits/s={:.1} p50_ms={:.3} p99_ms={:.3} max_ms={:.3} disk_p50_before={:.3} disk_p50_after={:.3}",
        v.name(),
        batch,
        lat.len(),
        rev,
        el,
        rev as f64 / el,
        lat.len() as f64 / el,
        pct(&lat, 0.50),
        pct(&lat, 0.99),
        pct(&lat, 1.0),
        disk_before,
        disk_after,
    );
}

fn rng_key(rev: u64) -> u64 {
    // cheap deterministic "which object was updated" for the group-commit phase
    Rng(rev).next() % KEYS
}

/// One churn commit: up to CHURN_BATCH new revisions for random keys, and deletion of
/// the revisions that fall out of the RETAIN window. Returns (new current_rev, commit time).
fn churn_step(eng: &mut dyn Engine, rng: &mut Rng, rev: u64, total: u64) -> (u64, Duration) {
    let n = (total - rev).min(CHURN_BATCH as u64);
    let puts: Vec<(u64, Vec<u8>)> = (0..n)
        .map(|i| {
            let r = rev + 1 + i;
            let k = rng.next() % KEYS;
            (r, encode_record(rng, r, k))
        })
        .collect();
    let new_rev = rev + n;
    // Keep only the newest RETAIN revisions: delete [rev+1-RETAIN, new_rev+1-RETAIN)
    // in the same transaction as the inserts (etcd-style compaction, simplest form).
    let del = (
        (rev + 1).saturating_sub(RETAIN).max(1),
        (new_rev + 1).saturating_sub(RETAIN).max(1),
    );
    let t = Instant::now();
    eng.commit(&puts, del, new_rev);
    eng.maintenance();
    (new_rev, t.elapsed())
}

/// Crash recovery: a child process churns `records` records and then abort()s (no
/// destructors, no clean close, so this is like a process crash; the page cache survives).
/// The parent then times reopen + first read and checks that every committed revision is there.
fn crash_test(v: Variant, records: u64) {
    quiesce(&format!("{} crash", v.name()));
    let dir = fresh_dir(&bench_base(), &format!("{}-crash", v.name()));
    let st = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "crash-child",
            v.name(),
            dir.to_str().unwrap(),
            &records.to_string(),
        ])
        .status()
        .unwrap();
    assert!(!st.success(), "child should have aborted");
    let t = Instant::now();
    let mut eng = v.open(&dir);
    let cur = eng.current_rev();
    let open_ms = t.elapsed().as_secs_f64() * 1e3;
    assert_eq!(cur, Some(records), "lost committed data");
    let t = Instant::now();
    let (n, _, first, last) = eng.scan();
    let scan_ms = t.elapsed().as_secs_f64() * 1e3;
    assert_eq!((n, last), (records.min(RETAIN), records));
    assert_eq!(first, records - n + 1);
    println!(
        "RESULT crash {:<16} records={} size_before_open={} reopen_after_abort_ms={:.1} scan_ms={:.1} ok",
        v.name(),
        records,
        dir_size(&dir).0,
        open_ms,
        scan_ms
    );
    drop(eng);
    let _ = fs::remove_dir_all(&dir);
}

fn crash_child(v: Variant, dir: &Path, records: u64) {
    let mut eng = v.open(dir);
    let mut rng = Rng(9);
    let mut rev = 0;
    while rev < records {
        rev = churn_step(eng.as_mut(), &mut rng, rev, records).0;
    }
    std::process::abort();
}

/// 2-4. Churn with compaction, then reopen + full scan, then random point reads.
fn churn(v: Variant) {
    let total: u64 = std::env::var("CHURN_RECORDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let disk_before = quiesce(&format!("{} churn", v.name()));
    let dir = fresh_dir(&bench_base(), &format!("{}-churn", v.name()));
    let mut eng = v.open(&dir);
    let mut rng = Rng(7);
    let mut rev = 0u64;
    let mut next_mark = total / 4;
    let mut lat = Vec::new();
    let start = Instant::now();
    while rev < total {
        let (new_rev, took) = churn_step(eng.as_mut(), &mut rng, rev, total);
        lat.push(took);
        rev = new_rev;
        if rev >= next_mark && rev < total {
            println!(
                "  [{}] churn at {:>7} records, t={:.1}s: {}",
                v.name(),
                rev,
                start.elapsed().as_secs_f64(),
                size_str(&dir)
            );
            next_mark += total / 4;
        }
    }
    let el = start.elapsed().as_secs_f64();
    let size_end = dir_size(&dir);
    lat.sort();
    let disk_after = quiesce("after");
    println!(
        "RESULT churn {:<14} records={} secs={:.1} records/s={:.0} commit_p50_ms={:.2} commit_p99_ms={:.2} max_ms={:.1} size_end_apparent={} size_end_alloc={} disk_p50_before={:.3} disk_p50_after={:.3}",
        v.name(),
        total,
        el,
        total as f64 / el,
        pct(&lat, 0.5),
        pct(&lat, 0.99),
        pct(&lat, 1.0),
        size_end.0,
        size_end.1,
        disk_before,
        disk_after
    );
    // Let background work (fjall flush/compaction) settle, then measure again.
    std::thread::sleep(Duration::from_secs(2));
    let size_settled = dir_size(&dir);
    println!(
        "RESULT size {:<14} settled_2s_apparent={} settled_2s_alloc={}",
        v.name(),
        size_settled.0,
        size_settled.1
    );

    // 3. Close, reopen (open + first read of meta), full ordered scan.
    let t = Instant::now();
    drop(eng);
    let close_s = t.elapsed().as_secs_f64();
    let size_closed = dir_size(&dir);
    println!("  [{}] files after close: {}", v.name(), breakdown(&dir));
    let t = Instant::now();
    let mut eng = v.open(&dir);
    let cur = eng.current_rev();
    let open_ms = t.elapsed().as_secs_f64() * 1e3;
    assert_eq!(cur, Some(total));
    let t = Instant::now();
    let (n, bytes, first, last) = eng.scan();
    let scan_s = t.elapsed().as_secs_f64();
    let expect_n = total.min(RETAIN);
    assert_eq!(n, expect_n, "scan count");
    assert_eq!((first, last), (total - expect_n + 1, total));
    println!(
        "RESULT reopen {:<14} close_ms={:.1} closed_apparent={} closed_alloc={} open_ms={:.2} scan_ms={:.1} scan_records={} scan_MiB/s={:.0}",
        v.name(),
        close_s * 1e3,
        size_closed.0,
        size_closed.1,
        open_ms,
        scan_s * 1e3,
        n,
        bytes as f64 / scan_s / (1 << 20) as f64
    );

    // 4. Point reads of existing revisions (data set is ~33 MB, so this is warm/cached).
    let lo = total - expect_n + 1;
    let revs: Vec<u64> = (0..100_000).map(|_| lo + rng.next() % expect_n).collect();
    let t = Instant::now();
    let bytes = eng.get_many(&revs);
    let el = t.elapsed().as_secs_f64();
    assert!(bytes > 0);
    // Also the one-transaction-per-get pattern (what an API server GET does).
    let t = Instant::now();
    for r in &revs[..20_000] {
        eng.get(*r).expect("missing");
    }
    let el1 = t.elapsed().as_secs_f64();
    println!(
        "RESULT reads {:<14} gets=100000 gets/s={:.0} (single snapshot)  gets/s_own_txn={:.0}",
        v.name(),
        100_000.0 / el,
        20_000.0 / el1
    );
    drop(eng);
    let _ = fs::remove_dir_all(&dir);
}

/// Raw disk reference: 1 KiB append + fdatasync, and 1 KiB overwrite-in-place + fdatasync.
fn fsync_probe() {
    let dir = fresh_dir(&bench_base(), "fsync");
    for (label, prealloc) in [("append", false), ("overwrite", true)] {
        let path = dir.join(format!("probe-{label}"));
        let mut f = fs::OpenOptions::new()
            .create(true)
            .write(true)
            .open(&path)
            .unwrap();
        let n = 2000;
        if prealloc {
            // Write the whole region once and sync, so later writes touch no metadata.
            f.write_all(&vec![1u8; 1024 * n]).unwrap();
            f.sync_all().unwrap();
            use std::io::Seek;
            f.seek(std::io::SeekFrom::Start(0)).unwrap();
        }
        let buf = vec![7u8; 1024];
        let mut lat = Vec::with_capacity(n);
        let start = Instant::now();
        for _ in 0..n {
            let t = Instant::now();
            f.write_all(&buf).unwrap();
            f.sync_data().unwrap();
            lat.push(t.elapsed());
        }
        let el = start.elapsed().as_secs_f64();
        lat.sort();
        println!(
            "RESULT fsync {:<9} 1KiB write+fdatasync n={} ops/s={:.0} p50_ms={:.3} p99_ms={:.3} max_ms={:.3}",
            label,
            n,
            n as f64 / el,
            pct(&lat, 0.5),
            pct(&lat, 0.99),
            pct(&lat, 1.0)
        );
    }
    let _ = fs::remove_dir_all(&dir);
}

/// Fixed number of commits, for counting syscalls per commit under `strace -f -c`.
fn count_mode(v: Variant, commits: u64, batch: usize) {
    let dir = fresh_dir(&bench_base(), &format!("{}-count", v.name()));
    let mut eng = v.open(&dir);
    let mut rng = Rng(1);
    // warm-up commit so table creation is not counted... (it still is in strace; small)
    let mut rev = 0;
    for _ in 0..commits {
        let puts: Vec<(u64, Vec<u8>)> = (0..batch as u64)
            .map(|i| (rev + 1 + i, encode_record(&mut rng, rev + 1 + i, i)))
            .collect();
        rev += batch as u64;
        eng.commit(&puts, (0, 0), rev);
    }
    drop(eng);
    let _ = fs::remove_dir_all(&dir);
    println!("count {}: {} commits of {}", v.name(), commits, batch);
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("crash-child") {
        let v = Variant::parse(&args[1]).expect("variant");
        crash_child(v, Path::new(&args[2]), args[3].parse().unwrap());
        return;
    }
    if args.first().map(String::as_str) == Some("crash") {
        let records: u64 = args[1].parse().unwrap();
        let vs: Vec<Variant> = if args.len() > 2 {
            args[2..]
                .iter()
                .map(|a| Variant::parse(a).expect("variant"))
                .collect()
        } else {
            Variant::all().to_vec()
        };
        for v in vs {
            crash_test(v, records);
        }
        return;
    }
    if args.first().map(String::as_str) == Some("count") {
        let v = Variant::parse(&args[1]).expect("variant");
        count_mode(v, args[2].parse().unwrap(), args[3].parse().unwrap());
        return;
    }
    let mut variants = Vec::new();
    let mut do_fsync = args.is_empty();
    for a in &args {
        match a.as_str() {
            "all" => {
                do_fsync = true;
                variants.extend(Variant::all())
            }
            "fsync" => do_fsync = true,
            s => variants.push(Variant::parse(s).unwrap_or_else(|| panic!("unknown variant {s}"))),
        }
    }
    if args.is_empty() {
        variants.extend(Variant::all());
    }
    println!("bench dir base: {}", bench_base().display());
    if do_fsync {
        fsync_probe();
    }
    for v in variants {
        println!("=== {} ===", v.name());
        // PHASES=gc or PHASES=churn restricts the run (default: both).
        let phases = std::env::var("PHASES").unwrap_or_else(|_| "gc,churn".into());
        if phases.contains("gc") {
            for batch in [1, 16, 256] {
                group_commit(v, batch);
            }
        }
        if phases.contains("churn") {
            churn(v);
        }
    }
}
