//! Values that cross the [`Store`](crate::Store) trait.

use bytes::Bytes;

/// A store revision. Revision 0 means "no revision" (an empty store has
/// current revision 0 and the first write gets revision 1), as in etcd.
pub type Revision = u64;

/// Largest value the store accepts: etcd's default request limit (1.5 MiB).
pub const MAX_VALUE_BYTES: usize = 1536 * 1024;

/// Largest key the store accepts. Kubernetes keys are a few hundred bytes at
/// most; the bound keeps the in-memory index and record framing sane.
pub const MAX_KEY_BYTES: usize = 8 * 1024;

/// One version of a key, as etcd's `mvccpb.KeyValue`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: Bytes,
    pub value: Bytes,
    /// Revision of the write that created this generation of the key.
    pub create_revision: Revision,
    /// Revision of the write that produced this version.
    pub mod_revision: Revision,
    /// Number of writes to this generation of the key (1 right after create).
    pub version: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Put,
    Delete,
}

/// One change, delivered by a watch in revision order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub kind: EventKind,
    /// For `Put`, the new version. For `Delete`, the key with an empty value,
    /// `mod_revision` set to the deleting revision and `version` 0.
    pub kv: KeyValue,
    /// The version this change replaced: always present for updates and
    /// deletes, absent for creates.
    pub prev: Option<KeyValue>,
}

impl Event {
    pub fn revision(&self) -> Revision {
        self.kv.mod_revision
    }
}

/// Result of a point read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GetResponse {
    pub kv: Option<KeyValue>,
    /// The store revision the read was served at.
    pub revision: Revision,
}

/// A read of every key that starts with `prefix`, in key order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RangeRequest {
    pub prefix: Bytes,
    /// Continue strictly after this key (the last key of the previous page).
    pub start_after: Option<Bytes>,
    /// At most this many keys; 0 means no limit.
    pub limit: usize,
    /// Read at this revision; `None` reads at the current revision. A
    /// paginated list passes the revision of its first page to every later page.
    pub revision: Option<Revision>,
}

impl RangeRequest {
    pub fn prefix(prefix: impl Into<Bytes>) -> Self {
        RangeRequest {
            prefix: prefix.into(),
            ..Default::default()
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeResponse {
    pub kvs: Vec<KeyValue>,
    /// More keys follow the last one returned.
    pub more: bool,
    /// Keys in the requested range that were not returned (for Kubernetes'
    /// `remainingItemCount`).
    pub remaining: u64,
    /// The store revision the read was served at.
    pub revision: Revision,
}

/// Result of a successful delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeleteResponse {
    /// The revision of the delete.
    pub revision: Revision,
    /// The version that was deleted.
    pub prev: KeyValue,
}

/// Where a watch starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchStart {
    /// Only changes made after the watch is established.
    Now,
    /// Every change with a revision greater than this one, replayed from
    /// history, then live changes. Kubernetes' "watch from resourceVersion R".
    After(Revision),
}

/// Revisions of the store as a whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreStatus {
    pub revision: Revision,
    /// History up to this revision is gone: reads at a lower revision and
    /// watches after a lower revision fail with `Compacted`. Reads at exactly
    /// this revision, and watches after it, are still served.
    pub compacted: Revision,
}
