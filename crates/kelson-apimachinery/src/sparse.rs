//! Parsing only the parts of a JSON object a caller reads.
//!
//! The API server's watch cache decodes every stored object it takes in,
//! only to read its name, namespace, labels and a few selectable fields.
//! Parsing the whole object built a tree of a few hundred nodes (containers,
//! managedFields, conditions) and dropped it again; skipping what no one
//! reads leaves a tree of a dozen.

use std::borrow::Cow;
use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::{Map, Value};

/// Which members to keep: a tree of field names, where a leaf keeps the
/// whole value below it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filter {
    children: Vec<(String, Filter)>,
}

impl Filter {
    /// A filter keeping the values at `paths` (each a list of field names
    /// from the root). An empty path, or no path at all, keeps everything.
    pub fn new<'a>(paths: impl IntoIterator<Item = &'a [&'a str]>) -> Filter {
        let mut root = Filter::default();
        let mut everything = false;
        for p in paths {
            everything |= p.is_empty();
            root.insert(p);
        }
        if everything {
            root.children.clear();
        }
        root
    }

    fn insert(&mut self, path: &[&str]) {
        let Some((first, rest)) = path.split_first() else {
            return;
        };
        match self.children.iter().position(|(k, _)| k == first) {
            // An existing leaf already keeps everything below it.
            Some(i) if self.children[i].1.children.is_empty() => {}
            Some(i) if rest.is_empty() => self.children[i].1.children.clear(),
            Some(i) => self.children[i].1.insert(rest),
            None => {
                let mut child = Filter::default();
                child.insert(rest);
                self.children.push(((*first).to_owned(), child));
            }
        }
    }

    fn child(&self, key: &str) -> Option<&Filter> {
        self.children.iter().find(|(k, _)| k == key).map(|(_, f)| f)
    }

    /// Parses `json`, keeping what the filter names: kept values are whole,
    /// objects on the way to them hold only the kept members, and anything
    /// else on the way (a list, a string where an object was expected)
    /// becomes null. Invalid JSON is an error wherever it is.
    pub fn parse(&self, json: &[u8]) -> serde_json::Result<Value> {
        let mut de = serde_json::Deserializer::from_slice(json);
        let v = self.deserialize(&mut de)?;
        de.end()?;
        Ok(v)
    }
}

impl<'de> DeserializeSeed<'de> for &Filter {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        if self.children.is_empty() {
            Value::deserialize(d)
        } else {
            d.deserialize_any(Partial(self))
        }
    }
}

/// A value below which only some members are kept.
struct Partial<'f>(&'f Filter);

impl<'de> Visitor<'de> for Partial<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
            match self.0.child(&key) {
                Some(f) => {
                    let v = map.next_value_seed(f)?;
                    out.insert(key.into_owned(), v);
                }
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(Value::Object(out))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Value::Null)
    }

    fn visit_bool<E>(self, _: bool) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_str<E>(self, _: &str) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
}

/// An object key, borrowed from the input when it holds no escapes.
struct Key<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string key")
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(s)))
            }
            fn visit_str<E>(self, s: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(s.to_owned())))
            }
            fn visit_string<E>(self, s: String) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(s)))
            }
        }
        d.deserialize_str(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn bytes(v: &Value) -> Vec<u8> {
        serde_json::to_vec(v).unwrap()
    }

    #[test]
    fn keeps_named_values_whole_and_drops_the_rest() {
        let obj = json!({
            "metadata": {"name": "p", "labels": {"a": "b"}, "managedFields": [{"manager": "m"}]},
            "spec": {"nodeName": "n1", "containers": [{"name": "c"}], "x\"y": {"deep": [1, 2]}},
            "status": {"podIPs": [{"ip": "10.0.0.1"}], "conditions": []}
        });
        let f = Filter::new([
            &["metadata", "name"][..],
            &["metadata", "labels"],
            &["spec", "nodeName"],
            &["spec", "x\"y"],
            &["status", "podIPs"],
            &["status", "phase"],
        ]);
        assert_eq!(
            f.parse(&bytes(&obj)).unwrap(),
            json!({
                "metadata": {"name": "p", "labels": {"a": "b"}},
                "spec": {"nodeName": "n1", "x\"y": {"deep": [1, 2]}},
                "status": {"podIPs": [{"ip": "10.0.0.1"}]}
            })
        );
    }

    #[test]
    fn shorter_paths_win_and_the_empty_path_keeps_everything() {
        let obj = json!({"spec": {"a": 1, "b": {"c": 2}}, "status": {}});
        let f = Filter::new([&["spec", "b", "c"][..], &["spec"]]);
        assert_eq!(f.parse(&bytes(&obj)).unwrap(), json!({"spec": obj["spec"]}));
        let f = Filter::new([&["spec"][..], &["spec", "b", "c"]]);
        assert_eq!(f.parse(&bytes(&obj)).unwrap(), json!({"spec": obj["spec"]}));
        assert_eq!(Filter::new([&[][..]]).parse(&bytes(&obj)).unwrap(), obj);
    }

    #[test]
    fn unexpected_kinds_on_the_way_become_null_and_bad_json_fails() {
        let f = Filter::new([&["spec", "nodeName"][..]]);
        assert_eq!(
            f.parse(br#"{"spec": ["x"], "other": 1}"#).unwrap(),
            json!({"spec": null})
        );
        assert_eq!(f.parse(br#"{"spec": "s"}"#).unwrap(), json!({"spec": null}));
        assert!(f.parse(br#"{"spec": {"nodeName": "n"}, "x": [}"#).is_err());
        assert!(f.parse(br#"{"spec": {}} trailing"#).is_err());
    }
}
