//! Watches: replay history from disk, then follow live commits.
//!
//! A watcher subscribes to the live feed *before* it reads how far history
//! goes, so every commit is seen at least once, and it drops anything at or
//! below the last revision it delivered, so nothing is seen twice. A watcher
//! that falls behind the live feed goes back to reading history from where it
//! was, so a slow consumer never stalls the writer and never loses events.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::Stream;
use redb::ReadableDatabase;
use tokio::sync::{broadcast, mpsc};

use crate::codec::{decode_revision, encode_revision, Record};
use crate::embedded::{engine, read_meta, record_to_event, Shared, LOG, META, META_COMPACTED};
use crate::error::{Error, Result};
use crate::types::{Event, Revision};

/// Events delivered to the consumer before the watcher waits for it.
const CHANNEL_CAPACITY: usize = 256;
/// History read per blocking call while catching up.
const REPLAY_CHUNK: u64 = 1024;

/// A stream of changes under one prefix, in revision order. Dropping it ends
/// the watch.
pub struct WatchStream {
    rx: mpsc::Receiver<Result<Event>>,
    task: tokio::task::JoinHandle<()>,
    progress: tokio::sync::watch::Receiver<Revision>,
}

impl Stream for WatchStream {
    type Item = Result<Event>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}

impl Drop for WatchStream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl WatchStream {
    /// Wraps a channel fed by a backend's own task (which the stream aborts
    /// when dropped). `progress` is the revision up to which the task has
    /// sent every matching event into `rx` (etcd's progress notification).
    pub fn from_parts(
        rx: mpsc::Receiver<Result<Event>>,
        task: tokio::task::JoinHandle<()>,
        progress: tokio::sync::watch::Receiver<Revision>,
    ) -> Self {
        WatchStream { rx, task, progress }
    }

    /// How far the watch has got: every event under the prefix with a
    /// revision up to the returned one has been queued on this stream, even
    /// when writes elsewhere in the store produced nothing to deliver. A
    /// consumer that drains the stream after reading this value has seen the
    /// store as of that revision, which is what a consistent list from a
    /// watch cache needs. Changes are signalled through the receiver.
    pub fn progress(&self) -> tokio::sync::watch::Receiver<Revision> {
        self.progress.clone()
    }

    /// Receives the next event if one is already queued, without waiting.
    pub fn try_next(&mut self) -> Option<Result<Event>> {
        self.rx.try_recv().ok()
    }
}

pub(crate) fn spawn(shared: Arc<Shared>, prefix: Bytes, after: Revision) -> WatchStream {
    let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
    // Subscribe before spawning so that nothing committed after the caller's
    // check of `after` can slip past.
    let live = shared.events.subscribe();
    let (progress_tx, progress) = tokio::sync::watch::channel(after);
    let task = tokio::spawn(run(shared, prefix, after, live, tx, progress_tx));
    WatchStream::from_parts(rx, task, progress)
}

async fn run(
    shared: Arc<Shared>,
    prefix: Bytes,
    mut last: Revision,
    mut live: broadcast::Receiver<Arc<[Event]>>,
    tx: mpsc::Sender<Result<Event>>,
    progress: tokio::sync::watch::Sender<Revision>,
) {
    // Published only after the events it covers were sent, so a consumer
    // that sees it and drains the channel has them all.
    let publish = |rev: Revision| {
        progress.send_if_modified(|p| {
            let moved = rev > *p;
            if moved {
                *p = rev;
            }
            moved
        });
    };
    let mut shutdown = shared.shutdown.clone();
    loop {
        // Catch up from history to what is committed now.
        let head = shared.state.read().revision;
        while last < head {
            let to = head.min(last + REPLAY_CHUNK);
            let (s, p) = (shared.clone(), prefix.clone());
            let chunk = tokio::task::spawn_blocking(move || replay(&s, &p, last, to)).await;
            let chunk = match chunk {
                Ok(Ok(events)) => events,
                Ok(Err(e)) => {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
                Err(e) => {
                    let _ = tx.send(Err(Error::Engine(e.to_string()))).await;
                    return;
                }
            };
            for ev in chunk {
                if tx.send(Ok(ev)).await.is_err() {
                    return;
                }
            }
            last = to;
            publish(last);
        }
        // Follow live commits until we fall behind.
        loop {
            let batch = tokio::select! {
                b = live.recv() => b,
                _ = closed(&mut shutdown) => {
                    let _ = tx.send(Err(Error::Closed)).await;
                    return;
                }
            };
            match batch {
                Ok(batch) => {
                    for ev in batch.iter() {
                        if ev.revision() <= last {
                            continue;
                        }
                        last = ev.revision();
                        if ev.kv.key.starts_with(&prefix) && tx.send(Ok(ev.clone())).await.is_err()
                        {
                            return;
                        }
                    }
                    publish(last);
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    live = shared.events.subscribe();
                    break;
                }
                Err(broadcast::error::RecvError::Closed) => {
                    let _ = tx.send(Err(Error::Closed)).await;
                    return;
                }
            }
        }
    }
}

/// Events in `(after, to]` under `prefix`, read from one consistent snapshot.
fn replay(shared: &Shared, prefix: &[u8], after: Revision, to: Revision) -> Result<Vec<Event>> {
    let txn = shared.db.begin_read().map_err(engine)?;
    let meta = txn.open_table(META).map_err(engine)?;
    let compacted = read_meta(&meta, META_COMPACTED)?;
    if after < compacted {
        return Err(Error::Compacted {
            requested: after,
            compacted,
        });
    }
    let log = txn.open_table(LOG).map_err(engine)?;
    let from = encode_revision(after + 1);
    let until = encode_revision(to);
    let mut events = Vec::new();
    for item in log
        .range(from.as_slice()..=until.as_slice())
        .map_err(engine)?
    {
        let (k, v) = item.map_err(engine)?;
        let rev = decode_revision(k.value())?;
        let rec = Record::decode(v.value())?;
        if rec.key.starts_with(prefix) {
            events.push(record_to_event(&log, rev, rec)?);
        }
    }
    Ok(events)
}

/// Resolves once the store is closed (or dropped).
async fn closed(shutdown: &mut tokio::sync::watch::Receiver<bool>) {
    loop {
        let is_closed = *shutdown.borrow_and_update();
        if is_closed || shutdown.changed().await.is_err() {
            return;
        }
    }
}
