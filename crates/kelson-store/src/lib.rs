//! Kelson's revisioned key-value store.
//!
//! The data model is etcd's: one revision counter for the whole store, bumped
//! by every successful write; each key remembers the revision that created it
//! and the one that last modified it; history is kept until it is compacted;
//! watches replay history and then stream live changes. The API server derives
//! resourceVersion, optimistic concurrency and watch from exactly this.
//!
//! [`Store`] is what the API server uses. [`EmbeddedStore`] is the default
//! backend, running inside the `kelson` process; an etcd backend fits behind
//! the same trait. `kelson-store-conformance` holds the suite every backend
//! must pass.

pub mod codec;
mod embedded;
mod error;
mod index;
pub mod snapshot;
mod types;
mod watch;

use async_trait::async_trait;
use bytes::Bytes;

pub use embedded::{CompactionPolicy, Durability, EmbeddedStore, Options};
pub use error::{Error, Result};
pub use types::*;
pub use watch::WatchStream;

/// A revisioned key-value store with compare-and-swap writes and watches.
///
/// Every successful write gets the next store revision. Reads can be served at
/// the current revision or at any past revision not yet compacted.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Reads one key at `revision` (`None`: the current revision).
    async fn get(&self, key: &[u8], revision: Option<Revision>) -> Result<GetResponse>;

    /// Reads a page of keys under a prefix, in key order.
    async fn range(&self, req: RangeRequest) -> Result<RangeResponse>;

    /// Creates `key` if it does not exist. Fails with `AlreadyExists`,
    /// carrying the current value, if it does.
    async fn create(&self, key: Bytes, value: Bytes) -> Result<KeyValue>;

    /// Replaces `key`'s value if its mod revision is still `expected`.
    /// Fails with `Conflict` (carrying the current value) if it is not, and
    /// with `NotFound` if the key does not exist.
    async fn update(&self, key: Bytes, value: Bytes, expected: Revision) -> Result<KeyValue>;

    /// Deletes `key`, if `expected` is given only while its mod revision is
    /// still that one (else `Conflict`). Fails with `NotFound` if absent.
    async fn delete(&self, key: Bytes, expected: Option<Revision>) -> Result<DeleteResponse>;

    /// Watches every key under `prefix`. The stream yields each change in
    /// revision order, exactly once, with its previous value. It ends with an
    /// `Err(Compacted)` item if the history it needs is compacted away.
    async fn watch(&self, prefix: Bytes, start: WatchStart) -> Result<WatchStream>;

    /// Discards history up to `revision`: afterwards reads below it and
    /// watches that start before it fail with `Compacted`.
    async fn compact(&self, revision: Revision) -> Result<()>;

    /// The current and compacted revisions.
    async fn status(&self) -> Result<StoreStatus>;
}

/// Checks the size limits every backend enforces before anything is written.
pub fn check_write(key: &[u8], value: Option<&[u8]>) -> Result<()> {
    if key.is_empty() {
        return Err(Error::InvalidKey("key is empty"));
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(Error::InvalidKey("key is longer than 8 KiB"));
    }
    if let Some(value) = value {
        if value.len() > MAX_VALUE_BYTES {
            return Err(Error::ValueTooLarge {
                size: value.len(),
                limit: MAX_VALUE_BYTES,
            });
        }
    }
    Ok(())
}
