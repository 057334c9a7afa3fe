//! Pure DaemonSet helpers after upstream's pkg/controller/daemon/util and the
//! scheduling predicates the controller shares with the scheduler
//! (component-helpers' nodeaffinity and taint toleration): which nodes a
//! DaemonSet's pods belong on, how its pods are stamped out of the template,
//! and the rolling-update arithmetic.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{
    Affinity, Node, NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, Pod,
    PodSpec, PodTemplateSpec, Taint, Toleration,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::history::CONTROLLER_REVISION_HASH_LABEL;

/// The annotation the API server keeps a DaemonSet's template generation in
/// (apps/v1's stand-in for extensions/v1beta1's spec.templateGeneration).
pub const TEMPLATE_GENERATION_ANNOTATION: &str = "deprecated.daemonset.template.generation";
/// The pod label carrying that template generation.
pub const POD_TEMPLATE_GENERATION_LABEL: &str = "pod-template-generation";

pub const TAINT_NODE_NOT_READY: &str = "node.kubernetes.io/not-ready";
pub const TAINT_NODE_UNREACHABLE: &str = "node.kubernetes.io/unreachable";
pub const TAINT_NODE_DISK_PRESSURE: &str = "node.kubernetes.io/disk-pressure";
pub const TAINT_NODE_MEMORY_PRESSURE: &str = "node.kubernetes.io/memory-pressure";
pub const TAINT_NODE_PID_PRESSURE: &str = "node.kubernetes.io/pid-pressure";
pub const TAINT_NODE_UNSCHEDULABLE: &str = "node.kubernetes.io/unschedulable";
pub const TAINT_NODE_NETWORK_UNAVAILABLE: &str = "node.kubernetes.io/network-unavailable";

const NO_SCHEDULE: &str = "NoSchedule";
const NO_EXECUTE: &str = "NoExecute";
/// The only field node selectors may match on.
const OBJECT_NAME_FIELD: &str = "metadata.name";

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum Error {
    #[error("nil value for IntOrString")]
    Nil,
    #[error("invalid value for IntOrString: invalid type: string is not a percentage")]
    NotPercent,
    #[error("invalid value for IntOrString: {0:?} is not a number")]
    NotNumber(String),
}

// ---------------------------------------------------------------------------
// Tolerations and taints

fn opt(s: &Option<String>) -> &str {
    s.as_deref().unwrap_or("")
}

/// Upstream's Toleration.ToleratesTaint.
pub fn tolerates(toleration: &Toleration, taint: &Taint) -> bool {
    let effect = opt(&toleration.effect);
    if !effect.is_empty() && effect != taint.effect {
        return false;
    }
    let key = opt(&toleration.key);
    if !key.is_empty() && key != taint.key {
        return false;
    }
    match opt(&toleration.operator) {
        "" | "Equal" => opt(&toleration.value) == opt(&taint.value),
        "Exists" => true,
        _ => false,
    }
}

/// The first taint passing `filter` that no toleration tolerates.
pub fn find_untolerated<'a>(
    taints: &'a [Taint],
    tolerations: &[Toleration],
    filter: impl Fn(&Taint) -> bool,
) -> Option<&'a Taint> {
    taints
        .iter()
        .filter(|t| filter(t))
        .find(|t| !tolerations.iter().any(|tol| tolerates(tol, t)))
}

/// Upstream's AddOrUpdateTolerationInPodSpec: a toleration equal in key,
/// operator, value and effect is replaced (dropping e.g. its
/// tolerationSeconds), else `toleration` is appended.
fn add_or_update_toleration(tolerations: &mut Vec<Toleration>, toleration: Toleration) {
    let same = |t: &Toleration| {
        opt(&t.key) == opt(&toleration.key)
            && opt(&t.effect) == opt(&toleration.effect)
            && opt(&t.operator) == opt(&toleration.operator)
            && opt(&t.value) == opt(&toleration.value)
    };
    match tolerations.iter_mut().find(|t| same(t)) {
        Some(existing) => *existing = toleration,
        None => tolerations.push(toleration),
    }
}

/// The tolerations every daemon pod gets (upstream's
/// AddOrUpdateDaemonPodTolerations): daemons survive node problems, and
/// tolerate the condition taints that keep ordinary pods away.
pub fn add_daemon_tolerations(spec: &mut PodSpec) {
    let exists = |key: &str, effect: &str| Toleration {
        key: Some(key.to_string()),
        operator: Some("Exists".to_string()),
        effect: Some(effect.to_string()),
        ..Default::default()
    };
    let mut tolerations = spec.tolerations.take().unwrap_or_default();
    for (key, effect) in [
        (TAINT_NODE_NOT_READY, NO_EXECUTE),
        (TAINT_NODE_UNREACHABLE, NO_EXECUTE),
        (TAINT_NODE_DISK_PRESSURE, NO_SCHEDULE),
        (TAINT_NODE_MEMORY_PRESSURE, NO_SCHEDULE),
        (TAINT_NODE_PID_PRESSURE, NO_SCHEDULE),
        (TAINT_NODE_UNSCHEDULABLE, NO_SCHEDULE),
    ] {
        add_or_update_toleration(&mut tolerations, exists(key, effect));
    }
    if spec.host_network == Some(true) {
        add_or_update_toleration(
            &mut tolerations,
            exists(TAINT_NODE_NETWORK_UNAVAILABLE, NO_SCHEDULE),
        );
    }
    spec.tolerations = Some(tolerations);
}

// ---------------------------------------------------------------------------
// Node selectors

/// One requirement of a node selector term, `None` when it cannot be parsed
/// (upstream ignores a term holding such a requirement).
fn label_requirement_matches(
    req: &NodeSelectorRequirement,
    labels: &BTreeMap<String, String>,
) -> Option<bool> {
    let values = req.values.as_deref().unwrap_or(&[]);
    let value = labels.get(&req.key);
    match req.operator.as_str() {
        "In" if !values.is_empty() => Some(value.is_some_and(|v| values.contains(v))),
        "NotIn" if !values.is_empty() => Some(value.is_none_or(|v| !values.contains(v))),
        "Exists" if values.is_empty() => Some(value.is_some()),
        "DoesNotExist" if values.is_empty() => Some(value.is_none()),
        op @ ("Gt" | "Lt") if values.len() == 1 => {
            let bound: i64 = values[0].parse().ok()?;
            Some(value.and_then(|v| v.parse::<i64>().ok()).is_some_and(|v| {
                if op == "Gt" {
                    v > bound
                } else {
                    v < bound
                }
            }))
        }
        _ => None,
    }
}

fn field_requirement_matches(req: &NodeSelectorRequirement, node_name: &str) -> Option<bool> {
    if req.key != OBJECT_NAME_FIELD {
        return None;
    }
    let values = req.values.as_deref().unwrap_or(&[]);
    match req.operator.as_str() {
        "In" if !values.is_empty() => Some(values.iter().any(|v| v == node_name)),
        "NotIn" if !values.is_empty() => Some(!values.iter().any(|v| v == node_name)),
        _ => None,
    }
}

/// Whether `term` selects the node; `None` if the term does not parse. A
/// term without requirements selects nothing.
fn term_matches(
    term: &NodeSelectorTerm,
    labels: &BTreeMap<String, String>,
    node_name: &str,
) -> Option<bool> {
    let exprs = term.match_expressions.as_deref().unwrap_or(&[]);
    let fields = term.match_fields.as_deref().unwrap_or(&[]);
    if exprs.is_empty() && fields.is_empty() {
        return Some(false);
    }
    let mut all = true;
    for r in exprs {
        all &= label_requirement_matches(r, labels)?;
    }
    for r in fields {
        all &= field_requirement_matches(r, node_name)?;
    }
    Some(all)
}

/// Upstream's NodeSelector match: any term that parses and selects the node.
pub fn node_selector_matches(selector: &NodeSelector, node: &Node) -> bool {
    let empty = BTreeMap::new();
    let labels = node.metadata.labels.as_ref().unwrap_or(&empty);
    let name = node.metadata.name.as_deref().unwrap_or("");
    selector
        .node_selector_terms
        .iter()
        .any(|t| term_matches(t, labels, name) == Some(true))
}

// ---------------------------------------------------------------------------
// Where daemon pods run

/// What decides the nodes of one DaemonSet, computed once per sync: the
/// template's nodeName, nodeSelector, required node affinity, and its
/// tolerations plus the daemon defaults (upstream builds a whole pod per node
/// for this; the fields it reads are all here).
#[derive(Debug, Clone, Default)]
pub struct Placement {
    node_name: Option<String>,
    node_selector: BTreeMap<String, String>,
    required: Option<NodeSelector>,
    tolerations: Vec<Toleration>,
}

impl Placement {
    pub fn new(ds: &DaemonSet) -> Placement {
        let mut spec = ds
            .spec
            .as_ref()
            .and_then(|s| s.template.spec.clone())
            .unwrap_or_default();
        add_daemon_tolerations(&mut spec);
        Placement {
            node_name: spec.node_name.filter(|n| !n.is_empty()),
            node_selector: spec.node_selector.unwrap_or_default(),
            required: spec
                .affinity
                .and_then(|a| a.node_affinity)
                .and_then(|a| a.required_during_scheduling_ignored_during_execution),
            tolerations: spec.tolerations.unwrap_or_default(),
        }
    }

    /// Upstream's NodeShouldRunDaemonPod: (shouldRun, shouldContinueRunning)
    /// — whether a new daemon pod belongs on `node`, and whether one already
    /// there may stay (it may while it tolerates every NoExecute taint).
    pub fn should_run(&self, node: &Node) -> (bool, bool) {
        let name = node.metadata.name.as_deref().unwrap_or("");
        if self.node_name.as_deref().is_some_and(|n| n != name) {
            return (false, false);
        }
        let empty = BTreeMap::new();
        let labels = node.metadata.labels.as_ref().unwrap_or(&empty);
        let selector_fits = self
            .node_selector
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v));
        let affinity_fits = self
            .required
            .as_ref()
            .is_none_or(|r| node_selector_matches(r, node));
        if !selector_fits || !affinity_fits {
            return (false, false);
        }
        let taints = node
            .spec
            .as_ref()
            .and_then(|s| s.taints.as_deref())
            .unwrap_or(&[]);
        let schedulable = find_untolerated(taints, &self.tolerations, |t| {
            t.effect == NO_SCHEDULE || t.effect == NO_EXECUTE
        })
        .is_none();
        if schedulable {
            return (true, true);
        }
        let may_stay =
            find_untolerated(taints, &self.tolerations, |t| t.effect == NO_EXECUTE).is_none();
        (false, may_stay)
    }
}

/// Upstream's ReplaceDaemonSetPodNodeNameNodeAffinity: the required node
/// affinity becomes exactly one term, `metadata.name In [node]`, so the
/// default scheduler binds the pod to its node; preferred affinity and pod
/// (anti-)affinity are kept.
pub fn replace_node_name_affinity(affinity: Option<Affinity>, node: &str) -> Affinity {
    let term = NodeSelectorTerm {
        match_fields: Some(vec![NodeSelectorRequirement {
            key: OBJECT_NAME_FIELD.to_string(),
            operator: "In".to_string(),
            values: Some(vec![node.to_string()]),
        }]),
        ..Default::default()
    };
    let mut affinity = affinity.unwrap_or_default();
    let mut node_affinity = affinity.node_affinity.take().unwrap_or_default();
    let mut required = node_affinity
        .required_during_scheduling_ignored_during_execution
        .take()
        .unwrap_or_default();
    required.node_selector_terms = vec![term];
    node_affinity.required_during_scheduling_ignored_during_execution = Some(required);
    affinity.node_affinity = Some(NodeAffinity { ..node_affinity });
    affinity
}

/// Upstream's GetTargetNodeName: the pod's nodeName, else the node its
/// `metadata.name In [node]` affinity term names.
pub fn target_node_name(pod: &Pod) -> Option<&str> {
    let spec = pod.spec.as_ref()?;
    if let Some(n) = spec.node_name.as_deref().filter(|n| !n.is_empty()) {
        return Some(n);
    }
    let terms = &spec
        .affinity
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required_during_scheduling_ignored_during_execution
        .as_ref()?
        .node_selector_terms;
    for term in terms {
        for r in term.match_fields.iter().flatten() {
            if r.key == OBJECT_NAME_FIELD && r.operator == "In" {
                let values = r.values.as_deref().unwrap_or(&[]);
                // Several names are no daemon pod's target.
                return if values.len() == 1 {
                    Some(values[0].as_str())
                } else {
                    None
                };
            }
        }
    }
    None
}

/// Whether the pod has been bound to a node.
pub fn is_scheduled(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .is_some_and(|n| !n.is_empty())
}

// ---------------------------------------------------------------------------
// Templates and revisions

/// The DaemonSet's template generation, if the annotation holds one.
pub fn template_generation(ds: &DaemonSet) -> Option<i64> {
    ds.metadata
        .annotations
        .as_ref()?
        .get(TEMPLATE_GENERATION_ANNOTATION)?
        .parse()
        .ok()
}

/// Upstream's CreatePodTemplate: the template with the daemon tolerations,
/// the template-generation label (when known) and the revision hash label.
pub fn create_pod_template(
    template: &PodTemplateSpec,
    generation: Option<i64>,
    hash: &str,
) -> PodTemplateSpec {
    let mut t = template.clone();
    let spec = t.spec.get_or_insert_with(Default::default);
    add_daemon_tolerations(spec);
    let meta = t.metadata.get_or_insert_with(Default::default);
    let labels = meta.labels.get_or_insert_with(BTreeMap::new);
    if let Some(g) = generation {
        labels.insert(POD_TEMPLATE_GENERATION_LABEL.to_string(), g.to_string());
    }
    if !hash.is_empty() {
        labels.insert(CONTROLLER_REVISION_HASH_LABEL.to_string(), hash.to_string());
    }
    t
}

/// Upstream's IsPodUpdated: the pod carries the current revision hash or the
/// current template generation.
pub fn is_pod_updated(pod: &Pod, hash: &str, generation: Option<i64>) -> bool {
    let label = |k: &str| pod.metadata.labels.as_ref().and_then(|l| l.get(k));
    let generation_matches = generation
        .is_some_and(|g| label(POD_TEMPLATE_GENERATION_LABEL).is_some_and(|v| *v == g.to_string()));
    let hash_matches =
        !hash.is_empty() && label(CONTROLLER_REVISION_HASH_LABEL).is_some_and(|v| v == hash);
    generation_matches || hash_matches
}

/// The revision data of a DaemonSet (upstream's getPatch): a strategic
/// merge patch that puts its current template back.
pub fn revision_data(ds: &DaemonSet) -> serde_json::Value {
    let template = ds
        .spec
        .as_ref()
        .map(|s| serde_json::to_value(&s.template).unwrap_or_default())
        .unwrap_or_else(|| serde_json::json!({}));
    let mut template = match template {
        serde_json::Value::Object(m) => m,
        _ => serde_json::Map::new(),
    };
    template.insert("$patch".into(), "replace".into());
    serde_json::json!({"spec": {"template": template}})
}

/// Upstream's podByCreationTimestampAndPhase: bound pods first, then oldest
/// first, then by name.
pub fn oldest_first(a: &Pod, b: &Pod) -> Ordering {
    match (is_scheduled(a), is_scheduled(b)) {
        (true, false) => return Ordering::Less,
        (false, true) => return Ordering::Greater,
        _ => {}
    }
    let created = |p: &Pod| p.metadata.creation_timestamp.as_ref().map(|t| t.0);
    match (created(a), created(b)) {
        (x, y) if x == y => a.metadata.name.cmp(&b.metadata.name),
        (x, y) => x.cmp(&y),
    }
}

// ---------------------------------------------------------------------------
// Rolling update arithmetic

/// Upstream's GetScaledValueFromIntOrPercent.
pub fn scaled_value(v: Option<&IntOrString>, total: i32, round_up: bool) -> Result<i32, Error> {
    match v {
        None => Err(Error::Nil),
        Some(IntOrString::Int(i)) => Ok(*i),
        Some(IntOrString::String(s)) => {
            let Some(p) = s.strip_suffix('%') else {
                return Err(Error::NotPercent);
            };
            let p: i64 = p.parse().map_err(|_| Error::NotNumber(s.clone()))?;
            let scaled = p as f64 * f64::from(total) / 100.0;
            let scaled = if round_up {
                scaled.ceil()
            } else {
                scaled.floor()
            };
            Ok(scaled as i32)
        }
    }
}

fn is_rolling_update(ds: &DaemonSet) -> bool {
    ds.spec
        .as_ref()
        .and_then(|s| s.update_strategy.as_ref())
        .and_then(|u| u.type_.as_deref())
        .unwrap_or("RollingUpdate")
        == "RollingUpdate"
}

fn rolling(ds: &DaemonSet) -> Option<&k8s_openapi::api::apps::v1::RollingUpdateDaemonSet> {
    ds.spec
        .as_ref()?
        .update_strategy
        .as_ref()?
        .rolling_update
        .as_ref()
}

/// Upstream's SurgeCount: extra pods allowed out of `total` (0 unless a
/// rolling update asks for maxSurge).
pub fn surge_count(ds: &DaemonSet, total: i32) -> Result<i32, Error> {
    if !is_rolling_update(ds) {
        return Ok(0);
    }
    match rolling(ds).and_then(|r| r.max_surge.as_ref()) {
        None => Ok(0),
        Some(s) => scaled_value(Some(s), total, true),
    }
}

/// Upstream's UnavailableCount. A rolling update without maxUnavailable
/// (the API server defaults it to 1) counts as 1.
pub fn unavailable_count(ds: &DaemonSet, total: i32) -> Result<i32, Error> {
    if !is_rolling_update(ds) {
        return Ok(0);
    }
    match rolling(ds) {
        None => Ok(1),
        Some(r) => match &r.max_unavailable {
            None => Ok(1),
            Some(u) => scaled_value(Some(u), total, true),
        },
    }
}

/// Upstream's AllowsSurge: more than one pod per node is allowed.
pub fn allows_surge(ds: &DaemonSet) -> bool {
    surge_count(ds, 1).is_ok_and(|n| n > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, labels: &[(&str, &str)], taints: &[(&str, &str)]) -> Node {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "labels": labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<BTreeMap<_, _>>()},
            "spec": {"taints": taints.iter().map(|(k, e)| serde_json::json!({"key": k, "effect": e})).collect::<Vec<_>>()}
        }))
        .unwrap()
    }

    fn ds(spec: serde_json::Value) -> DaemonSet {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "agent", "namespace": "default"},
            "spec": {
                "selector": {"matchLabels": {"app": "agent"}},
                "template": {"metadata": {"labels": {"app": "agent"}}, "spec": spec}
            }
        }))
        .unwrap()
    }

    #[test]
    fn node_selector_and_required_affinity_limit_nodes() {
        let d = ds(serde_json::json!({
            "containers": [],
            "nodeSelector": {"disk": "ssd"},
            "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a", "b"]}]},
                    {"matchExpressions": [{"key": "cores", "operator": "Gt", "values": ["8"]}]}
                ]
            }}}
        }));
        let p = Placement::new(&d);
        assert_eq!(
            p.should_run(&node("n1", &[("disk", "ssd"), ("zone", "a")], &[])),
            (true, true)
        );
        assert_eq!(
            p.should_run(&node("n2", &[("disk", "hdd"), ("zone", "a")], &[])),
            (false, false)
        );
        assert_eq!(
            p.should_run(&node("n3", &[("disk", "ssd"), ("zone", "c")], &[])),
            (false, false)
        );
        assert_eq!(
            p.should_run(&node("n4", &[("disk", "ssd"), ("cores", "16")], &[])),
            (true, true),
            "terms are ORed"
        );
        assert_eq!(
            p.should_run(&node("n5", &[("disk", "ssd"), ("cores", "x")], &[])),
            (false, false)
        );
    }

    #[test]
    fn empty_terms_and_bad_requirements_select_nothing() {
        let d = ds(serde_json::json!({
            "containers": [],
            "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{}, {"matchFields": [{"key": "metadata.uid", "operator": "In", "values": ["x"]}]}]
            }}}
        }));
        assert_eq!(
            Placement::new(&d).should_run(&node("n1", &[], &[])),
            (false, false)
        );
        let by_name = ds(serde_json::json!({
            "containers": [],
            "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchFields": [{"key": "metadata.name", "operator": "NotIn", "values": ["n1"]}]}]
            }}}
        }));
        let p = Placement::new(&by_name);
        assert_eq!(p.should_run(&node("n1", &[], &[])), (false, false));
        assert_eq!(p.should_run(&node("n2", &[], &[])), (true, true));
    }

    #[test]
    fn taints_block_new_pods_and_no_execute_evicts() {
        let p = Placement::new(&ds(serde_json::json!({"containers": []})));
        assert_eq!(
            p.should_run(&node("n", &[], &[("dedicated", "NoSchedule")])),
            (false, true),
            "an existing pod stays on a NoSchedule node"
        );
        assert_eq!(
            p.should_run(&node("n", &[], &[("dedicated", "NoExecute")])),
            (false, false)
        );
        assert_eq!(
            p.should_run(&node("n", &[], &[("dedicated", "PreferNoSchedule")])),
            (true, true)
        );
        // The daemon defaults tolerate node problems and pressure.
        for (key, effect) in [
            (TAINT_NODE_NOT_READY, "NoExecute"),
            (TAINT_NODE_UNREACHABLE, "NoExecute"),
            (TAINT_NODE_DISK_PRESSURE, "NoSchedule"),
            (TAINT_NODE_MEMORY_PRESSURE, "NoSchedule"),
            (TAINT_NODE_PID_PRESSURE, "NoSchedule"),
            (TAINT_NODE_UNSCHEDULABLE, "NoSchedule"),
        ] {
            assert_eq!(
                p.should_run(&node("n", &[], &[(key, effect)])),
                (true, true),
                "{key}"
            );
        }
        assert_eq!(
            p.should_run(&node(
                "n",
                &[],
                &[(TAINT_NODE_NETWORK_UNAVAILABLE, "NoSchedule")]
            )),
            (false, true),
            "only hostNetwork pods tolerate network-unavailable"
        );
        let host = Placement::new(&ds(
            serde_json::json!({"containers": [], "hostNetwork": true}),
        ));
        assert_eq!(
            host.should_run(&node(
                "n",
                &[],
                &[(TAINT_NODE_NETWORK_UNAVAILABLE, "NoSchedule")]
            )),
            (true, true)
        );
        let tolerant = Placement::new(&ds(serde_json::json!({
            "containers": [],
            "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "", "effect": "NoExecute"}]
        })));
        assert_eq!(
            tolerant.should_run(&node("n", &[], &[("dedicated", "NoExecute")])),
            (true, true)
        );
        let everything = Placement::new(&ds(
            serde_json::json!({"containers": [], "tolerations": [{"operator": "Exists"}]}),
        ));
        assert_eq!(
            everything.should_run(&node("n", &[], &[("x", "NoExecute"), ("y", "NoSchedule")])),
            (true, true)
        );
        let pinned = Placement::new(&ds(
            serde_json::json!({"containers": [], "nodeName": "other"}),
        ));
        assert_eq!(pinned.should_run(&node("n", &[], &[])), (false, false));
    }

    #[test]
    fn daemon_tolerations_replace_matching_ones_and_append_the_rest() {
        let mut spec: PodSpec = serde_json::from_value(serde_json::json!({
            "containers": [],
            "tolerations": [
                {"key": TAINT_NODE_NOT_READY, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 30},
                {"key": "mine", "operator": "Exists"}
            ]
        }))
        .unwrap();
        add_daemon_tolerations(&mut spec);
        let t = spec.tolerations.unwrap();
        assert_eq!(t.len(), 7);
        assert_eq!(t[0].key.as_deref(), Some(TAINT_NODE_NOT_READY));
        assert_eq!(
            t[0].toleration_seconds, None,
            "daemons tolerate not-ready forever"
        );
        assert_eq!(t[1].key.as_deref(), Some("mine"));
        assert_eq!(t[6].key.as_deref(), Some(TAINT_NODE_UNSCHEDULABLE));
    }

    #[test]
    fn node_name_affinity_replaces_required_terms_only() {
        let affinity: Affinity = serde_json::from_value(serde_json::json!({
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}
                ]},
                "preferredDuringSchedulingIgnoredDuringExecution": [
                    {"weight": 1, "preference": {"matchExpressions": [{"key": "x", "operator": "Exists"}]}}
                ]
            }
        }))
        .unwrap();
        let out = replace_node_name_affinity(Some(affinity), "node-1");
        let v = serde_json::to_value(&out).unwrap();
        assert_eq!(
            v["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"],
            serde_json::json!({"nodeSelectorTerms": [
                {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["node-1"]}]}
            ]})
        );
        assert!(v["nodeAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"].is_array());
        let fresh = replace_node_name_affinity(None, "n2");
        let pod = Pod {
            spec: Some(PodSpec {
                affinity: Some(fresh),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(target_node_name(&pod), Some("n2"));
        let mut bound = pod.clone();
        bound.spec.as_mut().unwrap().node_name = Some("n3".into());
        assert_eq!(target_node_name(&bound), Some("n3"));
        assert_eq!(target_node_name(&Pod::default()), None);
    }

    #[test]
    fn pod_template_gets_hash_generation_and_tolerations() {
        let mut d = ds(serde_json::json!({"containers": [{"name": "c", "image": "x"}]}));
        assert_eq!(template_generation(&d), None);
        d.metadata.annotations = Some(BTreeMap::from([(
            TEMPLATE_GENERATION_ANNOTATION.to_string(),
            "3".to_string(),
        )]));
        let g = template_generation(&d);
        assert_eq!(g, Some(3));
        let t = create_pod_template(&d.spec.as_ref().unwrap().template, g, "abc");
        let labels = t.metadata.as_ref().unwrap().labels.as_ref().unwrap();
        assert_eq!(labels["controller-revision-hash"], "abc");
        assert_eq!(labels["pod-template-generation"], "3");
        assert_eq!(labels["app"], "agent");
        assert_eq!(t.spec.unwrap().tolerations.unwrap().len(), 6);
        let pod = Pod {
            metadata: t.metadata.clone().unwrap(),
            ..Default::default()
        };
        assert!(is_pod_updated(&pod, "abc", None));
        assert!(is_pod_updated(&pod, "other", Some(3)));
        assert!(!is_pod_updated(&pod, "other", Some(4)));
        assert!(!is_pod_updated(&pod, "", None));
    }

    #[test]
    fn revision_data_replaces_the_template() {
        let d = ds(serde_json::json!({"containers": [{"name": "c", "image": "x"}]}));
        let data = revision_data(&d);
        assert_eq!(data["spec"]["template"]["$patch"], "replace");
        assert_eq!(
            data["spec"]["template"]["spec"]["containers"][0]["image"],
            "x"
        );
        assert_eq!(data.as_object().unwrap().len(), 1);
        assert_eq!(data["spec"].as_object().unwrap().len(), 1);
    }

    #[test]
    fn surge_and_unavailability_scale_with_rounding_up() {
        let mut d = ds(serde_json::json!({"containers": []}));
        assert_eq!(unavailable_count(&d, 10), Ok(1));
        assert_eq!(surge_count(&d, 10), Ok(0));
        d.spec.as_mut().unwrap().update_strategy = Some(
            serde_json::from_value(serde_json::json!({
                "type": "RollingUpdate",
                "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "10%"}
            }))
            .unwrap(),
        );
        assert_eq!(unavailable_count(&d, 10), Ok(3));
        assert_eq!(surge_count(&d, 10), Ok(1));
        assert!(allows_surge(&d));
        assert_eq!(
            scaled_value(Some(&IntOrString::String("5".into())), 10, true),
            Err(Error::NotPercent)
        );
        d.spec.as_mut().unwrap().update_strategy =
            Some(serde_json::from_value(serde_json::json!({"type": "OnDelete"})).unwrap());
        assert_eq!(unavailable_count(&d, 10), Ok(0));
        assert!(!allows_surge(&d));
    }

    #[test]
    fn bound_and_older_pods_sort_first() {
        let pod = |name: &str, node: Option<&str>, secs: i64| -> Pod {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": name, "creationTimestamp": jiff::Timestamp::from_second(secs).unwrap().to_string()},
                "spec": {"containers": [], "nodeName": node}
            }))
            .unwrap()
        };
        let mut pods = [
            pod("c", None, 1),
            pod("b", Some("n"), 20),
            pod("a", Some("n"), 20),
            pod("d", Some("n"), 10),
        ];
        pods.sort_by(oldest_first);
        let names: Vec<_> = pods
            .iter()
            .map(|p| p.metadata.name.clone().unwrap())
            .collect();
        assert_eq!(names, ["d", "a", "b", "c"]);
    }
}
