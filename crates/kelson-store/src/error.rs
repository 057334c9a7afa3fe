use crate::codec::DecodeError;
use crate::types::{KeyValue, Revision};

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything a store operation can fail with. The API server maps these to
/// Kubernetes statuses (Conflict → 409, Compacted → 410, ValueTooLarge → 413).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("key already exists")]
    AlreadyExists { current: Box<KeyValue> },

    #[error("key not found")]
    NotFound,

    /// The guarded write lost: the key's mod revision was not the expected one.
    #[error("revision conflict: expected mod revision {expected}, key is at {}", current.mod_revision)]
    Conflict {
        expected: Revision,
        current: Box<KeyValue>,
    },

    #[error(
        "required revision {requested} has been compacted (compacted revision is {compacted})"
    )]
    Compacted {
        requested: Revision,
        compacted: Revision,
    },

    #[error("required revision {requested} is a future revision (current revision is {current})")]
    FutureRevision {
        requested: Revision,
        current: Revision,
    },

    #[error("value of {size} bytes is larger than the limit of {limit} bytes")]
    ValueTooLarge { size: usize, limit: usize },

    #[error("invalid key: {0}")]
    InvalidKey(&'static str),

    #[error("stored data is corrupt: {0}")]
    Corrupt(#[from] DecodeError),

    #[error("storage engine failed: {0}")]
    Engine(String),

    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),

    #[error("the store is closed")]
    Closed,
}

impl Error {
    /// Whether this is the "history is gone" error (HTTP 410 in the API server).
    pub fn is_compacted(&self) -> bool {
        matches!(self, Error::Compacted { .. })
    }

    pub fn is_conflict(&self) -> bool {
        matches!(self, Error::Conflict { .. })
    }
}
