//! The field sets creates record, remembered by the object's shape.
//!
//! What a create owns depends on the object's type, the endpoint's reset
//! fields and which fields the object holds, not on the values of most of
//! them: two pods from one template differ in name and uid, and own the
//! same fields. Only the scalars inside lists matter (they name the items of
//! keyed and set lists). Walking an object to hash that shape allocates
//! nothing, where working out and encoding the set walks the type tables
//! and builds a tree; on the API server's create path the latter cost more
//! than decoding, defaulting and validating the object together.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, Hash, Hasher, RandomState};
use std::sync::{Arc, Mutex, OnceLock};

use serde_json::Value;

/// Shapes kept (and shapes seen once) before the memo starts over: a
/// cluster has few shapes per kind; a client sending ever new ones only
/// costs the slow path.
const MAX_SHAPES: usize = 1024;

/// A create's `fieldsV1`, or None when it owns nothing.
pub(super) type Fields = Option<Arc<Value>>;

struct Memo {
    /// Two independently keyed hashes: 128 bits, with keys an object's
    /// author cannot know, make a collision as good as impossible.
    keys: (RandomState, RandomState),
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Shapes seen once. Only a shape seen again is remembered: most
    /// objects of a one-off shape (the bootstrap RBAC roles) never repeat.
    seen: HashSet<(u64, u64)>,
    shapes: HashMap<(u64, u64), Fields>,
}

fn memo() -> &'static Memo {
    static MEMO: OnceLock<Memo> = OnceLock::new();
    MEMO.get_or_init(|| Memo {
        keys: (RandomState::new(), RandomState::new()),
        state: Mutex::new(State::default()),
    })
}

/// The remembered fields of a create of `obj`, or `compute`'s, remembered.
/// `type_id` names the object's type information; `reset` the endpoint's
/// reset fields.
pub(super) fn created(
    type_id: &str,
    reset: &[&str],
    obj: &Value,
    compute: impl FnOnce() -> Fields,
) -> Fields {
    let m = memo();
    let mut h = Both(m.keys.0.build_hasher(), m.keys.1.build_hasher());
    type_id.hash(&mut h);
    reset.hash(&mut h);
    hash_shape(obj, false, &mut h);
    let key = (h.0.finish(), h.1.finish());
    if let Some(f) = lock(&m.state).shapes.get(&key) {
        return f.clone();
    }
    let fields = compute();
    let mut st = lock(&m.state);
    if st.seen.len() >= MAX_SHAPES {
        st.seen.clear();
    }
    if !st.seen.insert(key) {
        if st.shapes.len() >= MAX_SHAPES {
            st.shapes.clear();
        }
        st.shapes.insert(key, fields.clone());
    }
    fields
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The map holds only finished entries; a panic elsewhere leaves it whole.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Feeds what decides an object's owned fields into `h`: every map key,
/// every value's kind, list lengths, and the scalars inside lists.
fn hash_shape(v: &Value, in_list: bool, h: &mut impl Hasher) {
    match v {
        Value::Null => h.write_u8(0),
        Value::Bool(b) => {
            h.write_u8(1);
            if in_list {
                b.hash(h);
            }
        }
        Value::Number(n) => {
            h.write_u8(2);
            if in_list {
                n.hash(h);
            }
        }
        Value::String(s) => {
            h.write_u8(3);
            if in_list {
                s.hash(h);
            }
        }
        Value::Array(items) => {
            h.write_u8(4);
            h.write_usize(items.len());
            for i in items {
                hash_shape(i, true, h);
            }
        }
        Value::Object(m) => {
            h.write_u8(5);
            h.write_usize(m.len());
            for (k, v) in m {
                k.hash(h);
                hash_shape(v, in_list, h);
            }
        }
    }
}

/// Two hashers fed the same input.
struct Both<A, B>(A, B);

impl<A: Hasher, B: Hasher> Hasher for Both<A, B> {
    fn finish(&self) -> u64 {
        self.0.finish() ^ self.1.finish()
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0.write(bytes);
        self.1.write(bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn key(v: &Value) -> (u64, u64) {
        let m = memo();
        let mut h = Both(m.keys.0.build_hasher(), m.keys.1.build_hasher());
        hash_shape(v, false, &mut h);
        (h.0.finish(), h.1.finish())
    }

    #[test]
    fn values_outside_lists_do_not_change_the_shape() {
        let a = json!({"metadata": {"name": "a", "labels": {"app": "x"}}, "spec": {"replicas": 1}});
        let b = json!({"metadata": {"name": "b", "labels": {"app": "y"}}, "spec": {"replicas": 7}});
        assert_eq!(key(&a), key(&b));
    }

    #[test]
    fn keys_kinds_lengths_and_list_scalars_do() {
        let base = json!({"spec": {"containers": [{"name": "c", "ports": [{"containerPort": 80}]}], "x": "s"}});
        for other in [
            json!({"spec": {"containers": [{"name": "d", "ports": [{"containerPort": 80}]}], "x": "s"}}),
            json!({"spec": {"containers": [{"name": "c", "ports": [{"containerPort": 81}]}], "x": "s"}}),
            json!({"spec": {"containers": [{"name": "c", "ports": []}], "x": "s"}}),
            json!({"spec": {"containers": [{"name": "c", "ports": [{"containerPort": 80}]}], "x": 1}}),
            json!({"spec": {"containers": [{"name": "c", "ports": [{"containerPort": 80}]}], "y": "s"}}),
            json!({"spec": {"containers": [{"name": "c", "ports": [{"containerPort": 80}]}], "x": null}}),
            json!({"spec": {"containers": [{"name": "c", "ports": [{"containerPort": 80}]}], "x": "s", "z": {}}}),
        ] {
            assert_ne!(key(&base), key(&other), "{other}");
        }
    }
}
