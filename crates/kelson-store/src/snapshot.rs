//! Snapshot files: the whole store (history, revision, compacted revision) in
//! one self-checking stream.
//!
//! Layout, all integers little-endian:
//! ```text
//! magic "KELSNAP\x01"  revision u64  compacted u64
//! { tag 1u8  revision u64  length u32  record bytes }*   in revision order
//! tag 0u8  record count u64
//! crc32 u32 of every byte before it
//! ```

use std::io::{Read, Write};
use std::path::Path;

use redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata};

use crate::codec::{decode_revision, encode_revision, DecodeError, Record};
use crate::embedded::{engine, read_meta, LOG, META, META_COMPACTED, META_REVISION};
use crate::error::{Error, Result};
use crate::types::{Revision, MAX_KEY_BYTES, MAX_VALUE_BYTES};

const MAGIC: &[u8; 8] = b"KELSNAP\x01";
/// A record can never be larger than a key and a value plus framing.
const MAX_RECORD: usize = MAX_KEY_BYTES + MAX_VALUE_BYTES + 64;
/// Records written per transaction while restoring.
const RESTORE_BATCH: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotInfo {
    pub revision: Revision,
    pub compacted: Revision,
    /// History records in the snapshot.
    pub records: u64,
    pub bytes: u64,
}

/// Counts bytes and checksums everything written through it.
struct Summing<W> {
    inner: W,
    crc: crc32fast::Hasher,
    bytes: u64,
}

impl<W: Write> Write for Summing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.crc.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

pub(crate) fn write_from_txn<W: Write>(
    txn: &redb::ReadTransaction,
    out: W,
) -> Result<SnapshotInfo> {
    let meta = txn.open_table(META).map_err(engine)?;
    let revision = read_meta(&meta, META_REVISION)?;
    let compacted = read_meta(&meta, META_COMPACTED)?;
    let log = txn.open_table(LOG).map_err(engine)?;
    let mut w = Summing {
        inner: std::io::BufWriter::with_capacity(1 << 20, out),
        crc: crc32fast::Hasher::new(),
        bytes: 0,
    };
    w.write_all(MAGIC)?;
    w.write_all(&revision.to_le_bytes())?;
    w.write_all(&compacted.to_le_bytes())?;
    let mut records = 0u64;
    for item in log.iter().map_err(engine)? {
        let (k, v) = item.map_err(engine)?;
        let rev = decode_revision(k.value())?;
        // Refuse to carry corruption into a snapshot.
        Record::decode(v.value())?;
        w.write_all(&[1])?;
        w.write_all(&rev.to_le_bytes())?;
        w.write_all(&(v.value().len() as u32).to_le_bytes())?;
        w.write_all(v.value())?;
        records += 1;
    }
    w.write_all(&[0])?;
    w.write_all(&records.to_le_bytes())?;
    let crc = w.crc.clone().finalize();
    w.inner.write_all(&crc.to_le_bytes())?;
    w.inner.flush()?;
    Ok(SnapshotInfo {
        revision,
        compacted,
        records,
        bytes: w.bytes + 4,
    })
}

/// Reads a snapshot stream, checking its framing, every record and the
/// trailing checksum; `each` sees every record in order. Nothing read is
/// trusted before the checksum is verified, so callers must treat the records
/// as provisional until this returns `Ok`.
pub fn read<R: Read>(
    input: R,
    mut each: impl FnMut(Revision, &[u8]) -> Result<()>,
) -> Result<SnapshotInfo> {
    let mut r = std::io::BufReader::with_capacity(1 << 20, input);
    let mut crc = crc32fast::Hasher::new();
    let mut bytes = 0u64;
    let mut take =
        |r: &mut std::io::BufReader<R>, buf: &mut [u8], what: &'static str| -> Result<()> {
            r.read_exact(buf).map_err(|e| match e.kind() {
                std::io::ErrorKind::UnexpectedEof => Error::Corrupt(DecodeError::Truncated(what)),
                _ => Error::Io(e),
            })?;
            crc.update(buf);
            bytes += buf.len() as u64;
            Ok(())
        };
    let mut magic = [0u8; 8];
    take(&mut r, &mut magic, "snapshot header")?;
    if &magic != MAGIC {
        return Err(Error::Corrupt(DecodeError::Invalid(
            "not a Kelson snapshot",
        )));
    }
    let mut word = [0u8; 8];
    take(&mut r, &mut word, "snapshot header")?;
    let revision = u64::from_le_bytes(word);
    take(&mut r, &mut word, "snapshot header")?;
    let compacted = u64::from_le_bytes(word);
    if compacted > revision {
        return Err(Error::Corrupt(DecodeError::Invalid(
            "compacted revision above revision",
        )));
    }
    let mut records = 0u64;
    let mut last_rev = 0u64;
    let mut record = Vec::new();
    loop {
        let mut tag = [0u8; 1];
        take(&mut r, &mut tag, "snapshot frame")?;
        match tag[0] {
            1 => {
                take(&mut r, &mut word, "snapshot frame")?;
                let rev = u64::from_le_bytes(word);
                if rev <= last_rev || rev > revision {
                    return Err(Error::Corrupt(DecodeError::Invalid(
                        "snapshot revisions out of order",
                    )));
                }
                let mut len = [0u8; 4];
                take(&mut r, &mut len, "snapshot frame")?;
                let len = u32::from_le_bytes(len) as usize;
                if len > MAX_RECORD {
                    return Err(Error::Corrupt(DecodeError::Invalid(
                        "snapshot record too large",
                    )));
                }
                record.resize(len, 0);
                take(&mut r, &mut record, "snapshot record")?;
                Record::decode(&record)?;
                each(rev, &record)?;
                last_rev = rev;
                records += 1;
            }
            0 => {
                take(&mut r, &mut word, "snapshot trailer")?;
                if u64::from_le_bytes(word) != records {
                    return Err(Error::Corrupt(DecodeError::Invalid(
                        "snapshot record count mismatch",
                    )));
                }
                break;
            }
            _ => {
                return Err(Error::Corrupt(DecodeError::Invalid(
                    "unknown snapshot frame",
                )))
            }
        }
    }
    let expected = crc.clone().finalize();
    let mut sum = [0u8; 4];
    r.read_exact(&mut sum)
        .map_err(|_| Error::Corrupt(DecodeError::Truncated("snapshot checksum")))?;
    if u32::from_le_bytes(sum) != expected {
        return Err(Error::Corrupt(DecodeError::Checksum));
    }
    let mut extra = [0u8; 1];
    if r.read(&mut extra)? != 0 {
        return Err(Error::Corrupt(DecodeError::Invalid(
            "bytes after snapshot checksum",
        )));
    }
    Ok(SnapshotInfo {
        revision,
        compacted,
        records,
        bytes: bytes + 4,
    })
}

/// Checks a snapshot file end to end without writing anything.
pub fn verify(path: &Path) -> Result<SnapshotInfo> {
    read(std::fs::File::open(path)?, |_, _| Ok(()))
}

/// Builds a new store file at `dest` from a snapshot, keeping its revision.
/// Refuses to overwrite an existing store. The file appears only once it is
/// complete and durable.
pub fn restore(snapshot: &Path, dest: &Path) -> Result<SnapshotInfo> {
    if dest.exists() {
        return Err(Error::Io(std::io::Error::new(
            std::io::ErrorKind::AlreadyExists,
            format!("a store already exists at {}", dest.display()),
        )));
    }
    // Verify first, so a bad file leaves no half-built store behind.
    verify(snapshot)?;
    let dir = dest.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(
        ".{}.restoring",
        dest.file_name().and_then(|n| n.to_str()).unwrap_or("store")
    ));
    let _ = std::fs::remove_file(&tmp);
    let result = (|| {
        let db = redb::Database::create(&tmp).map_err(engine)?;
        let mut pending: Vec<(Revision, Vec<u8>)> = Vec::with_capacity(RESTORE_BATCH);
        let flush = |pending: &mut Vec<(Revision, Vec<u8>)>| -> Result<()> {
            let mut txn = db.begin_write().map_err(engine)?;
            txn.set_durability(redb::Durability::None).map_err(engine)?;
            {
                let mut log = txn.open_table(LOG).map_err(engine)?;
                for (rev, rec) in pending.drain(..) {
                    log.insert(encode_revision(rev).as_slice(), rec.as_slice())
                        .map_err(engine)?;
                }
            }
            txn.commit().map_err(engine)
        };
        let info = read(std::fs::File::open(snapshot)?, |rev, rec| {
            pending.push((rev, rec.to_vec()));
            if pending.len() >= RESTORE_BATCH {
                flush(&mut pending)?;
            }
            Ok(())
        })?;
        flush(&mut pending)?;
        // The final commit is durable and makes every earlier one durable too.
        let txn = db.begin_write().map_err(engine)?;
        {
            let mut meta = txn.open_table(META).map_err(engine)?;
            meta.insert(META_REVISION, info.revision.to_le_bytes().as_slice())
                .map_err(engine)?;
            meta.insert(META_COMPACTED, info.compacted.to_le_bytes().as_slice())
                .map_err(engine)?;
        }
        txn.commit().map_err(engine)?;
        drop(db);
        Ok(info)
    })();
    match result {
        Ok(info) => {
            std::fs::rename(&tmp, dest)?;
            std::fs::File::open(dir)?.sync_all()?;
            Ok(info)
        }
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}

/// Reads the revision counters of a store file that no process has open.
pub fn inspect(path: &Path) -> Result<(Revision, Revision, u64)> {
    let db = redb::ReadOnlyDatabase::open(path).map_err(engine)?;
    let txn = db.begin_read().map_err(engine)?;
    let meta = txn.open_table(META).map_err(engine)?;
    let log = txn.open_table(LOG).map_err(engine)?;
    Ok((
        read_meta(&meta, META_REVISION)?,
        read_meta(&meta, META_COMPACTED)?,
        log.len().map_err(engine)?,
    ))
}

/// Writes a snapshot of a store file that no process has open.
pub fn save_offline<W: Write>(store: &Path, out: W) -> Result<SnapshotInfo> {
    let db = redb::ReadOnlyDatabase::open(store).map_err(engine)?;
    let txn = db.begin_read().map_err(engine)?;
    write_from_txn(&txn, out)
}
