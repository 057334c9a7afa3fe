//! Label selectors, node selectors and taint tolerations, compiled once per
//! pod so the per-node checks do no parsing.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::{NodeSelectorRequirement, NodeSelectorTerm, Taint, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector as ApiLabelSelector;

pub type Labels = BTreeMap<String, String>;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    #[error("{0:?} is not a valid label selector operator")]
    Operator(String),
    #[error("values must be non-empty for operator {0}")]
    EmptyValues(&'static str),
    #[error("values must be empty for operator {0}")]
    UnexpectedValues(&'static str),
    #[error("{0:?} is not a valid integer for operator Gt/Lt")]
    NotInteger(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Op {
    In(Vec<String>),
    NotIn(Vec<String>),
    Exists,
    DoesNotExist,
    Gt(i64),
    Lt(i64),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Requirement {
    key: String,
    op: Op,
}

impl Requirement {
    fn matches(&self, labels: &Labels) -> bool {
        let v = labels.get(&self.key);
        match &self.op {
            Op::In(vals) => v.is_some_and(|v| vals.contains(v)),
            Op::NotIn(vals) => !v.is_some_and(|v| vals.contains(v)),
            Op::Exists => v.is_some(),
            Op::DoesNotExist => v.is_none(),
            Op::Gt(n) => v
                .and_then(|v| v.parse::<i64>().ok())
                .is_some_and(|v| v > *n),
            Op::Lt(n) => v
                .and_then(|v| v.parse::<i64>().ok())
                .is_some_and(|v| v < *n),
        }
    }
}

fn set_op(op: &str, values: Vec<String>) -> Result<Op, SelectorError> {
    Ok(match op {
        "In" | "NotIn" => {
            if values.is_empty() {
                return Err(SelectorError::EmptyValues(if op == "In" {
                    "In"
                } else {
                    "NotIn"
                }));
            }
            if op == "In" {
                Op::In(values)
            } else {
                Op::NotIn(values)
            }
        }
        "Exists" | "DoesNotExist" => {
            if !values.is_empty() {
                return Err(SelectorError::UnexpectedValues("Exists/DoesNotExist"));
            }
            if op == "Exists" {
                Op::Exists
            } else {
                Op::DoesNotExist
            }
        }
        other => return Err(SelectorError::Operator(other.to_string())),
    })
}

/// A compiled `metav1.LabelSelector`. As upstream's `LabelSelectorAsSelector`,
/// a missing selector matches nothing and an empty one matches everything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelSelector {
    nothing: bool,
    reqs: Vec<Requirement>,
}

impl LabelSelector {
    pub fn nothing() -> LabelSelector {
        LabelSelector {
            nothing: true,
            reqs: Vec::new(),
        }
    }

    pub fn everything() -> LabelSelector {
        LabelSelector {
            nothing: false,
            reqs: Vec::new(),
        }
    }

    pub fn compile(sel: Option<&ApiLabelSelector>) -> Result<LabelSelector, SelectorError> {
        let Some(sel) = sel else {
            return Ok(LabelSelector::nothing());
        };
        let mut reqs = Vec::new();
        for (k, v) in sel.match_labels.iter().flatten() {
            reqs.push(Requirement {
                key: k.clone(),
                op: Op::In(vec![v.clone()]),
            });
        }
        for e in sel.match_expressions.iter().flatten() {
            let op = set_op(&e.operator, e.values.clone().unwrap_or_default())?;
            reqs.push(Requirement {
                key: e.key.clone(),
                op,
            });
        }
        Ok(LabelSelector {
            nothing: false,
            reqs,
        })
    }

    /// A Service's or ReplicationController's map selector; an empty one
    /// selects nothing here (upstream's DefaultSelector skips those).
    pub fn from_map(map: Option<&Labels>) -> LabelSelector {
        match map {
            Some(m) if !m.is_empty() => LabelSelector {
                nothing: false,
                reqs: m
                    .iter()
                    .map(|(k, v)| Requirement {
                        key: k.clone(),
                        op: Op::In(vec![v.clone()]),
                    })
                    .collect(),
            },
            _ => LabelSelector::nothing(),
        }
    }

    /// Narrows this selector by every requirement of `other`.
    pub fn and(&mut self, other: &LabelSelector) {
        self.nothing |= other.nothing;
        self.reqs.extend(other.reqs.iter().cloned());
    }

    /// Adds `key in (value)` (topology spread's matchLabelKeys).
    pub fn require_equal(&mut self, key: &str, value: &str) {
        self.reqs.push(Requirement {
            key: key.to_string(),
            op: Op::In(vec![value.to_string()]),
        });
    }

    pub fn matches(&self, labels: Option<&Labels>) -> bool {
        if self.nothing {
            return false;
        }
        if self.reqs.is_empty() {
            return true;
        }
        static EMPTY: Labels = BTreeMap::new();
        let labels = labels.unwrap_or(&EMPTY);
        self.reqs.iter().all(|r| r.matches(labels))
    }

    pub fn is_empty(&self) -> bool {
        !self.nothing && self.reqs.is_empty()
    }
}

fn node_op(r: &NodeSelectorRequirement) -> Result<Op, SelectorError> {
    let values = r.values.clone().unwrap_or_default();
    match r.operator.as_str() {
        "Gt" | "Lt" => {
            let [v] = values.as_slice() else {
                return Err(SelectorError::NotInteger(values.join(",")));
            };
            let n = v
                .parse::<i64>()
                .map_err(|_| SelectorError::NotInteger(v.clone()))?;
            Ok(if r.operator == "Gt" {
                Op::Gt(n)
            } else {
                Op::Lt(n)
            })
        }
        op => set_op(op, values),
    }
}

/// One compiled node selector term: label expressions and `metadata.name`
/// field expressions, all of which must hold. An empty or invalid term
/// matches no node, as upstream's `nodeaffinity.NodeSelector`.
#[derive(Debug, Clone)]
pub struct NodeSelectorTermC {
    valid: bool,
    labels: Vec<Requirement>,
    fields: Vec<Requirement>,
}

impl NodeSelectorTermC {
    pub fn compile(t: &NodeSelectorTerm) -> NodeSelectorTermC {
        let mut out = NodeSelectorTermC {
            valid: true,
            labels: Vec::new(),
            fields: Vec::new(),
        };
        for r in t.match_expressions.iter().flatten() {
            match node_op(r) {
                Ok(op) => out.labels.push(Requirement {
                    key: r.key.clone(),
                    op,
                }),
                Err(_) => out.valid = false,
            }
        }
        for r in t.match_fields.iter().flatten() {
            // Only metadata.name is a supported field, with In/NotIn.
            match node_op(r) {
                Ok(op @ (Op::In(_) | Op::NotIn(_))) if r.key == "metadata.name" => {
                    out.fields.push(Requirement {
                        key: r.key.clone(),
                        op,
                    })
                }
                _ => out.valid = false,
            }
        }
        if out.labels.is_empty() && out.fields.is_empty() {
            out.valid = false;
        }
        out
    }

    pub fn matches(&self, node_name: &str, labels: Option<&Labels>) -> bool {
        if !self.valid {
            return false;
        }
        static EMPTY: Labels = BTreeMap::new();
        let labels = labels.unwrap_or(&EMPTY);
        if !self.labels.iter().all(|r| r.matches(labels)) {
            return false;
        }
        self.fields.iter().all(|r| match &r.op {
            Op::In(v) => v.iter().any(|n| n == node_name),
            Op::NotIn(v) => !v.iter().any(|n| n == node_name),
            _ => false,
        })
    }

    /// Node names this term is limited to by `metadata.name In (...)`.
    pub fn required_names(&self) -> Option<Vec<String>> {
        let mut out: Option<Vec<String>> = None;
        for r in &self.fields {
            if let Op::In(v) = &r.op {
                out = Some(match out {
                    None => v.clone(),
                    Some(prev) => prev.into_iter().filter(|n| v.contains(n)).collect(),
                });
            }
        }
        out
    }
}

/// Whether the toleration tolerates the taint (upstream `ToleratesTaint`).
pub fn tolerates(tol: &Toleration, taint: &Taint) -> bool {
    if let Some(effect) = tol.effect.as_deref() {
        if !effect.is_empty() && effect != taint.effect {
            return false;
        }
    }
    let key = tol.key.as_deref().unwrap_or("");
    if !key.is_empty() && key != taint.key {
        return false;
    }
    match tol.operator.as_deref().unwrap_or("") {
        "Exists" => true,
        "" | "Equal" => {
            // An empty key with Equal is invalid and tolerates nothing.
            !key.is_empty()
                && tol.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or("")
        }
        _ => false,
    }
}

/// The first taint with one of `effects` that no toleration tolerates.
pub fn first_untolerated<'a>(
    taints: &'a [Taint],
    tolerations: &[Toleration],
    effects: &[&str],
) -> Option<&'a Taint> {
    taints.iter().find(|t| {
        effects.contains(&t.effect.as_str()) && !tolerations.iter().any(|tol| tolerates(tol, t))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn labels(kv: &[(&str, &str)]) -> Labels {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn nil_selector_matches_nothing_empty_matches_everything() {
        let l = labels(&[("app", "web")]);
        assert!(!LabelSelector::compile(None).unwrap().matches(Some(&l)));
        let empty = ApiLabelSelector::default();
        assert!(LabelSelector::compile(Some(&empty))
            .unwrap()
            .matches(Some(&l)));
    }

    #[test]
    fn expressions() {
        let sel = ApiLabelSelector {
            match_labels: Some([("app".to_string(), "web".to_string())].into()),
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "tier".into(),
                operator: "NotIn".into(),
                values: Some(vec!["db".into()]),
            }]),
        };
        let s = LabelSelector::compile(Some(&sel)).unwrap();
        assert!(s.matches(Some(&labels(&[("app", "web")]))));
        assert!(!s.matches(Some(&labels(&[("app", "web"), ("tier", "db")]))));
        let bad = ApiLabelSelector {
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "a".into(),
                operator: "Foo".into(),
                values: None,
            }]),
            ..Default::default()
        };
        assert!(LabelSelector::compile(Some(&bad)).is_err());
    }

    #[test]
    fn node_terms_gt_and_fields() {
        let t = NodeSelectorTerm {
            match_expressions: Some(vec![NodeSelectorRequirement {
                key: "cores".into(),
                operator: "Gt".into(),
                values: Some(vec!["4".into()]),
            }]),
            match_fields: Some(vec![NodeSelectorRequirement {
                key: "metadata.name".into(),
                operator: "In".into(),
                values: Some(vec!["n1".into()]),
            }]),
        };
        let c = NodeSelectorTermC::compile(&t);
        assert!(c.matches("n1", Some(&labels(&[("cores", "8")]))));
        assert!(!c.matches("n1", Some(&labels(&[("cores", "4")]))));
        assert!(!c.matches("n2", Some(&labels(&[("cores", "8")]))));
        assert_eq!(c.required_names(), Some(vec!["n1".to_string()]));
        assert!(!NodeSelectorTermC::compile(&NodeSelectorTerm::default()).matches("n1", None));
    }

    #[test]
    fn toleration_matching() {
        let taint = Taint {
            key: "dedicated".into(),
            value: Some("gpu".into()),
            effect: "NoSchedule".into(),
            ..Default::default()
        };
        let eq = Toleration {
            key: Some("dedicated".into()),
            value: Some("gpu".into()),
            effect: Some("NoSchedule".into()),
            ..Default::default()
        };
        assert!(tolerates(&eq, &taint));
        let wrong_value = Toleration {
            value: Some("cpu".into()),
            ..eq.clone()
        };
        assert!(!tolerates(&wrong_value, &taint));
        let exists_all = Toleration {
            operator: Some("Exists".into()),
            ..Default::default()
        };
        assert!(tolerates(&exists_all, &taint));
        let other_effect = Toleration {
            effect: Some("NoExecute".into()),
            ..eq
        };
        assert!(!tolerates(&other_effect, &taint));
    }
}

/// The selectors of the Services, ReplicationControllers, ReplicaSets and
/// StatefulSets of each namespace: what upstream's DefaultSelector combines
/// into the selector of the system-default topology spread constraints.
#[derive(Debug, Default, Clone)]
pub struct SpreadSelectors {
    by_namespace: HashMap<String, HashMap<String, LabelSelector>>,
}

impl SpreadSelectors {
    /// Sets (or with None removes) the selector of object `id` ("Kind/name").
    pub fn set(&mut self, namespace: &str, id: &str, selector: Option<LabelSelector>) {
        match selector {
            Some(s) => {
                self.by_namespace
                    .entry(namespace.to_string())
                    .or_default()
                    .insert(id.to_string(), s);
            }
            None => {
                if let Some(m) = self.by_namespace.get_mut(namespace) {
                    m.remove(id);
                    if m.is_empty() {
                        self.by_namespace.remove(namespace);
                    }
                }
            }
        }
    }

    /// Every selector of `namespace` that selects `labels`, ANDed; None when
    /// none does (then the pod gets no default constraints).
    pub fn default_selector(
        &self,
        namespace: &str,
        labels: Option<&Labels>,
    ) -> Option<LabelSelector> {
        let mut combined: Option<LabelSelector> = None;
        let mut ids: Vec<_> = self.by_namespace.get(namespace)?.iter().collect();
        // A stable order keeps the combined requirement list deterministic.
        ids.sort_by(|a, b| a.0.cmp(b.0));
        for (_, sel) in ids {
            if sel.nothing || sel.is_empty() || !sel.matches(labels) {
                continue;
            }
            match &mut combined {
                Some(c) => c.and(sel),
                None => combined = Some(sel.clone()),
            }
        }
        combined
    }
}
