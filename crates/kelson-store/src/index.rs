//! The in-memory MVCC index: for every key, the revisions at which it changed.
//!
//! Values live on disk, keyed by revision; this index answers "which revision
//! holds key K as of revision R" without touching disk, the way etcd's
//! treeIndex does. It is rebuilt from the history log at start.

use std::collections::BTreeMap;
use std::ops::Bound;

use bytes::Bytes;

use crate::types::Revision;

/// One live version of a key, without its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Version {
    pub mod_revision: Revision,
    pub create_revision: Revision,
    pub version: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Change {
    Put(Version),
    /// The key was deleted at this revision.
    Delete(Revision),
}

impl Change {
    fn revision(&self) -> Revision {
        match self {
            Change::Put(v) => v.mod_revision,
            Change::Delete(rev) => *rev,
        }
    }
}

#[derive(Debug, Default)]
pub(crate) struct Index {
    /// Changes per key in ascending revision order; never empty.
    keys: BTreeMap<Bytes, Vec<Change>>,
}

/// What a page of a range read resolved to.
pub(crate) struct RangePlan {
    pub items: Vec<(Bytes, Version)>,
    pub more: bool,
    pub remaining: u64,
}

impl Index {
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// The version of `key` visible at `rev`.
    pub fn get(&self, key: &[u8], rev: Revision) -> Option<Version> {
        visible(self.keys.get(key)?, rev)
    }

    /// Records a change; revisions must be applied in increasing order.
    pub fn apply(&mut self, key: &Bytes, change: Change) {
        let changes = self.keys.entry(key.clone()).or_default();
        debug_assert!(changes
            .last()
            .is_none_or(|c| c.revision() < change.revision()));
        changes.push(change);
    }

    /// Resolves a page of keys under `prefix` as of `rev`.
    pub fn range(
        &self,
        prefix: &[u8],
        start_after: Option<&[u8]>,
        rev: Revision,
        limit: usize,
    ) -> RangePlan {
        let lower = match start_after {
            Some(k) if k >= prefix => Bound::Excluded(k),
            _ => Bound::Included(prefix),
        };
        let mut items = Vec::new();
        let mut remaining = 0u64;
        for (key, changes) in self.keys.range::<[u8], _>((lower, Bound::Unbounded)) {
            if !key.starts_with(prefix) {
                break;
            }
            if let Some(v) = visible(changes, rev) {
                if limit == 0 || items.len() < limit {
                    items.push((key.clone(), v));
                } else {
                    remaining += 1;
                }
            }
        }
        RangePlan {
            more: remaining > 0,
            items,
            remaining,
        }
    }

    /// Forgets history up to `rev`: for each key, every change at or below
    /// `rev` except the newest one, which is kept unless it is a delete (the
    /// state as of `rev` must stay readable). Returns the revisions whose
    /// records can now be removed from disk.
    pub fn compact(&mut self, rev: Revision) -> Vec<Revision> {
        let mut dead = Vec::new();
        self.keys.retain(|_, changes| {
            // Index of the first change above `rev`.
            let split = changes.partition_point(|c| c.revision() <= rev);
            if split == 0 {
                return true;
            }
            let keep_from = match changes[split - 1] {
                Change::Put(_) => split - 1,
                Change::Delete(_) => split,
            };
            dead.extend(changes[..keep_from].iter().map(Change::revision));
            changes.drain(..keep_from);
            !changes.is_empty()
        });
        dead.sort_unstable();
        dead
    }
}

fn visible(changes: &[Change], rev: Revision) -> Option<Version> {
    let n = changes.partition_point(|c| c.revision() <= rev);
    match changes[..n].last()? {
        Change::Put(v) => Some(*v),
        Change::Delete(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(rev: Revision, create: Revision, version: u64) -> Change {
        Change::Put(Version {
            mod_revision: rev,
            create_revision: create,
            version,
        })
    }

    fn k(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    #[test]
    fn reads_at_past_revisions() {
        let mut idx = Index::default();
        idx.apply(&k("a"), put(1, 1, 1));
        idx.apply(&k("a"), put(3, 1, 2));
        idx.apply(&k("a"), Change::Delete(5));
        idx.apply(&k("a"), put(7, 7, 1));
        assert_eq!(idx.get(b"a", 0), None);
        assert_eq!(idx.get(b"a", 2).unwrap().mod_revision, 1);
        assert_eq!(idx.get(b"a", 4).unwrap().version, 2);
        assert_eq!(idx.get(b"a", 6), None);
        assert_eq!(idx.get(b"a", 9).unwrap().create_revision, 7);
    }

    #[test]
    fn range_pages_and_counts() {
        let mut idx = Index::default();
        for (i, name) in ["p/a", "p/b", "p/c", "p/d", "q/a"].iter().enumerate() {
            idx.apply(&k(name), put(i as u64 + 1, i as u64 + 1, 1));
        }
        idx.apply(&k("p/b"), Change::Delete(6));
        let page = idx.range(b"p/", None, 6, 2);
        let names: Vec<_> = page.items.iter().map(|(k, _)| k.clone()).collect();
        assert_eq!(names, vec![k("p/a"), k("p/c")]);
        assert!(page.more);
        assert_eq!(page.remaining, 1);
        let next = idx.range(b"p/", Some(b"p/c"), 6, 2);
        assert_eq!(next.items.len(), 1);
        assert!(!next.more);
        // At revision 5, p/b still existed.
        assert_eq!(idx.range(b"p/", None, 5, 0).items.len(), 4);
    }

    #[test]
    fn compaction_keeps_the_state_at_the_compacted_revision() {
        let mut idx = Index::default();
        idx.apply(&k("a"), put(1, 1, 1));
        idx.apply(&k("a"), put(2, 1, 2));
        idx.apply(&k("b"), put(3, 3, 1));
        idx.apply(&k("b"), Change::Delete(4));
        idx.apply(&k("a"), put(5, 1, 3));
        let dead = idx.compact(4);
        assert_eq!(dead, vec![1, 3, 4]);
        assert_eq!(idx.get(b"a", 4).unwrap().mod_revision, 2);
        assert_eq!(idx.get(b"a", 5).unwrap().mod_revision, 5);
        assert_eq!(idx.len(), 1);
        assert!(idx.compact(4).is_empty());
    }
}
