//! Watch-backed usage of one resource (pods, services, `count/widgets.x`…),
//! per namespace: upstream's quota monitors, minus the objects. Each object
//! is reduced on arrival to what quota needs — its usage (shared between
//! identical objects) and, for pods, the few facts scopes look at — so the
//! controller holds a few dozen bytes per pod rather than the pod.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use jiff::Timestamp;
use kelson_apimachinery::quantity::{Format, Quantity};
use kelson_apimachinery::quota::{self, ResourceList};
use kube::api::{Api, DynamicObject};
use kube::discovery::ApiResource;
use kube::runtime::{watcher, WatchStreamExt};
use kube::Client;
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// A resource as quota names it: (API group, plural).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GroupResource {
    pub group: String,
    pub resource: String,
}

impl GroupResource {
    pub fn new(group: &str, resource: &str) -> GroupResource {
        GroupResource {
            group: group.into(),
            resource: resource.into(),
        }
    }

    pub fn is_pods(&self) -> bool {
        self.group.is_empty() && self.resource == "pods"
    }
}

impl std::fmt::Display for GroupResource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.group.is_empty() {
            f.write_str(&self.resource)
        } else {
            write!(f, "{}.{}", self.resource, self.group)
        }
    }
}

/// What quota scopes look at on a pod. Few distinct values exist in a
/// cluster, so scope matching is decided once per value.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ScopeFacts {
    terminating: bool,
    best_effort: bool,
    cross_namespace_affinity: bool,
    priority_class: Option<String>,
}

impl ScopeFacts {
    /// The facts of `pod`, asked of the shared scope matcher one scope at a
    /// time so that both agree on what each scope means.
    pub fn of_pod(pod: &Value) -> ScopeFacts {
        let has = |scope: &str| quota::matches_scopes(&json!({"scopes": [scope]}), "", "pods", pod);
        ScopeFacts {
            terminating: has("Terminating"),
            best_effort: has("BestEffort"),
            cross_namespace_affinity: has("CrossNamespacePodAffinity"),
            priority_class: pod
                .pointer("/spec/priorityClassName")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_string),
        }
    }

    /// A minimal pod with exactly these facts, for the scope matcher.
    fn synthetic_pod(&self) -> Value {
        let mut spec = serde_json::Map::new();
        if self.terminating {
            spec.insert("activeDeadlineSeconds".into(), json!(1));
        }
        let containers = if self.best_effort {
            json!([{"name": "c"}])
        } else {
            json!([{"name": "c", "resources": {"requests": {"cpu": "1m"}, "limits": {"cpu": "1m"}}}])
        };
        spec.insert("containers".into(), containers);
        if let Some(p) = &self.priority_class {
            spec.insert("priorityClassName".into(), json!(p));
        }
        if self.cross_namespace_affinity {
            spec.insert(
                "affinity".into(),
                json!({"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                    {"namespaces": ["other"], "topologyKey": "kubernetes.io/hostname"}
                ]}}),
            );
        }
        json!({"spec": spec})
    }
}

/// What one object charges.
#[derive(Debug, Clone, PartialEq)]
struct Entry {
    usage: Arc<ResourceList>,
    /// A deleting pod stops being charged once its grace period ends: when,
    /// and what it charges from then on.
    expires: Option<(Timestamp, Arc<ResourceList>)>,
    /// Pods only.
    scope: Option<Arc<ScopeFacts>>,
}

/// Shares identical usage lists and scope facts between objects (every pod
/// of a Deployment charges the same).
#[derive(Default)]
struct Interner {
    lists: HashMap<String, Arc<ResourceList>>,
    facts: HashMap<ScopeFacts, Arc<ScopeFacts>>,
    prune_at: usize,
}

impl Interner {
    fn list(&mut self, list: ResourceList) -> Arc<ResourceList> {
        let mut key = String::new();
        for (k, v) in &list {
            key.push_str(k);
            key.push('=');
            key.push_str(&v.to_upstream_string());
            key.push(';');
        }
        self.prune();
        self.lists
            .entry(key)
            .or_insert_with(|| Arc::new(list))
            .clone()
    }

    fn facts(&mut self, facts: ScopeFacts) -> Arc<ScopeFacts> {
        self.facts
            .entry(facts.clone())
            .or_insert_with(|| Arc::new(facts))
            .clone()
    }

    /// Drops values no object uses any more, whenever the tables doubled.
    fn prune(&mut self) {
        if self.lists.len() + self.facts.len() < self.prune_at.max(64) {
            return;
        }
        self.lists.retain(|_, v| Arc::strong_count(v) > 1);
        self.facts.retain(|_, v| Arc::strong_count(v) > 1);
        self.prune_at = 2 * (self.lists.len() + self.facts.len());
    }
}

type Namespaces = HashMap<String, HashMap<String, Entry>>;

#[derive(Default)]
struct State {
    by_namespace: Namespaces,
    /// Objects of a relist in progress; they replace `by_namespace` once
    /// the list is complete.
    relist: Option<Namespaces>,
    interner: Interner,
}

/// The usage of every object of one resource, kept current by a watch.
pub struct Monitor {
    pub resource: GroupResource,
    state: Mutex<State>,
    ready: watch::Sender<bool>,
}

/// The usage one quota sync reads from a monitor.
pub struct Sum {
    pub used: ResourceList,
    /// When a deleting pod's grace period ends, changing the usage.
    pub next_change: Option<Timestamp>,
}

fn zero() -> Quantity {
    Quantity::from_milli(0, Format::DecimalSI)
}

impl Monitor {
    pub fn new(resource: GroupResource) -> Monitor {
        Monitor {
            resource,
            state: Mutex::new(State::default()),
            ready: watch::channel(false).0,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits until the first list has been loaded; false if that does not
    /// happen within `timeout`.
    pub async fn wait_ready(&self, timeout: std::time::Duration) -> bool {
        let mut rx = self.ready.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|r| *r))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    fn entry(&self, interner: &mut Interner, obj: &Value, now: Timestamp) -> Entry {
        let gr = &self.resource;
        let usage = quota::usage_at(&gr.group, &gr.resource, obj, now);
        let mut expires = None;
        let mut scope = None;
        if gr.is_pods() {
            // A pod still in its grace period stops being charged at its end.
            if let Some(end) = quota::pod_grace_end(obj).filter(|end| *end >= now) {
                let after = quota::usage_at(&gr.group, &gr.resource, obj, Timestamp::MAX);
                if after != usage {
                    expires = Some((end, interner.list(after)));
                }
            }
            scope = Some(interner.facts(ScopeFacts::of_pod(obj)));
        }
        Entry {
            usage: interner.list(usage),
            expires,
            scope,
        }
    }

    /// Applies a watch event; returns the namespaces whose usage changed.
    pub fn apply(&self, event: watcher::Event<Value>, now: Timestamp) -> Vec<String> {
        let mut state = self.lock();
        let state = &mut *state;
        let key = |o: &Value| {
            let meta = o.get("metadata");
            let s = |k: &str| {
                meta.and_then(|m| m.get(k))
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string()
            };
            (s("namespace"), s("name"))
        };
        match event {
            watcher::Event::Apply(o) => {
                let (ns, name) = key(&o);
                let entry = self.entry(&mut state.interner, &o, now);
                let objects = state.by_namespace.entry(ns.clone()).or_default();
                match objects.insert(name, entry.clone()) {
                    Some(old) if old == entry => Vec::new(),
                    _ => vec![ns],
                }
            }
            watcher::Event::Delete(o) => {
                let (ns, name) = key(&o);
                let removed = state
                    .by_namespace
                    .get_mut(&ns)
                    .and_then(|objects| objects.remove(&name))
                    .is_some();
                if state.by_namespace.get(&ns).is_some_and(HashMap::is_empty) {
                    state.by_namespace.remove(&ns);
                }
                if removed {
                    vec![ns]
                } else {
                    Vec::new()
                }
            }
            watcher::Event::Init => {
                state.relist = Some(Namespaces::new());
                Vec::new()
            }
            watcher::Event::InitApply(o) => {
                let (ns, name) = key(&o);
                let entry = self.entry(&mut state.interner, &o, now);
                state
                    .relist
                    .get_or_insert_with(Namespaces::new)
                    .entry(ns)
                    .or_default()
                    .insert(name, entry);
                Vec::new()
            }
            watcher::Event::InitDone => {
                let fresh = state.relist.take().unwrap_or_default();
                let old = std::mem::replace(&mut state.by_namespace, fresh);
                let mut changed: Vec<String> = old
                    .iter()
                    .filter(|(ns, objects)| state.by_namespace.get(*ns) != Some(*objects))
                    .map(|(ns, _)| ns.clone())
                    .collect();
                changed.extend(
                    state
                        .by_namespace
                        .keys()
                        .filter(|ns| !old.contains_key(*ns))
                        .cloned(),
                );
                self.ready.send_replace(true);
                changed
            }
        }
    }

    /// The usage of the objects of `namespace` that `quota_spec`'s scopes
    /// select, for each of `names` (zero when nothing is charged).
    pub fn sum(
        &self,
        namespace: &str,
        names: &[String],
        quota_spec: &Value,
        now: Timestamp,
    ) -> Sum {
        let mut used: ResourceList = names.iter().map(|n| (n.clone(), zero())).collect();
        let mut next_change = None;
        let scoped = quota_spec
            .get("scopes")
            .and_then(Value::as_array)
            .is_some_and(|s| !s.is_empty())
            || quota_spec
                .get("scopeSelector")
                .is_some_and(|s| !s.is_null());
        let gr = &self.resource;
        // Scoped quotas only ever select pods; decide once per distinct
        // set of facts.
        let mut decided: HashMap<*const ScopeFacts, bool> = HashMap::new();
        let non_pod_selected =
            !scoped || quota::matches_scopes(quota_spec, &gr.group, &gr.resource, &json!({}));
        let state = self.lock();
        for entry in state
            .by_namespace
            .get(namespace)
            .into_iter()
            .flatten()
            .map(|(_, e)| e)
        {
            let selected = match (&entry.scope, scoped) {
                (_, false) => true,
                (Some(facts), true) => *decided.entry(Arc::as_ptr(facts)).or_insert_with(|| {
                    quota::matches_scopes(
                        quota_spec,
                        &gr.group,
                        &gr.resource,
                        &facts.synthetic_pod(),
                    )
                }),
                (None, true) => non_pod_selected,
            };
            if !selected {
                continue;
            }
            let usage = match &entry.expires {
                Some((end, after)) if now > *end => after,
                Some((end, _)) => {
                    if next_change.is_none_or(|t| *end < t) {
                        next_change = Some(*end);
                    }
                    &entry.usage
                }
                None => &entry.usage,
            };
            for (name, total) in used.iter_mut() {
                if let Some(q) = usage.get(name) {
                    if let Some(sum) = total.checked_add(q) {
                        *total = sum;
                    }
                }
            }
        }
        Sum { used, next_change }
    }

    /// Namespaces holding at least one object (for tests and logs).
    pub fn namespaces(&self) -> usize {
        self.lock().by_namespace.len()
    }
}

/// Watches `resource` into `monitor` until `shutdown`, calling `changed`
/// with each namespace whose usage changed.
pub async fn run(
    client: Client,
    resource: ApiResource,
    monitor: Arc<Monitor>,
    changed: impl Fn(&GroupResource, String) + Send,
    shutdown: CancellationToken,
) {
    use futures::StreamExt;
    let api: Api<DynamicObject> = Api::all_with(client, &resource);
    let stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .map(|ev| ev.map(to_json_event));
    futures::pin_mut!(stream);
    loop {
        let next = tokio::select! {
            _ = shutdown.cancelled() => return,
            next = stream.next() => next,
        };
        match next {
            Some(Ok(ev)) => {
                for ns in monitor.apply(ev, Timestamp::now()) {
                    changed(&monitor.resource, ns);
                }
            }
            Some(Err(e)) => {
                tracing::debug!(resource = %monitor.resource, error = %e, "quota monitor watch")
            }
            None => return,
        }
    }
}

/// The event with its object as JSON, the form usage is computed from.
fn to_json_event(ev: watcher::Event<DynamicObject>) -> watcher::Event<Value> {
    let json = |mut o: DynamicObject| {
        o.metadata.managed_fields = None;
        serde_json::to_value(o).unwrap_or(Value::Null)
    };
    match ev {
        watcher::Event::Apply(o) => watcher::Event::Apply(json(o)),
        watcher::Event::Delete(o) => watcher::Event::Delete(json(o)),
        watcher::Event::Init => watcher::Event::Init,
        watcher::Event::InitApply(o) => watcher::Event::InitApply(json(o)),
        watcher::Event::InitDone => watcher::Event::InitDone,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, cpu: &str) -> Value {
        json!({
            "metadata": {"name": name, "namespace": "ns"},
            "spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": cpu}}}]},
            "status": {"phase": "Running"}
        })
    }

    fn names(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| s.to_string()).collect()
    }

    fn q(s: &str) -> Quantity {
        Quantity::parse(s).unwrap()
    }

    #[test]
    fn sums_pods_per_namespace_and_zero_when_none() {
        let m = Monitor::new(GroupResource::new("", "pods"));
        let now = Timestamp::now();
        m.apply(watcher::Event::Init, now);
        m.apply(watcher::Event::InitApply(pod("a", "100m")), now);
        m.apply(watcher::Event::InitApply(pod("b", "250m")), now);
        assert_eq!(
            m.apply(watcher::Event::InitDone, now),
            vec!["ns".to_string()]
        );
        let s = m.sum("ns", &names(&["pods", "requests.cpu"]), &json!({}), now);
        assert_eq!(s.used["pods"], q("2"));
        assert_eq!(s.used["requests.cpu"], q("350m"));
        let empty = m.sum("other", &names(&["pods"]), &json!({}), now);
        assert_eq!(empty.used["pods"], q("0"));
        // The same pod again changes nothing; a deletion does.
        assert!(m
            .apply(watcher::Event::Apply(pod("a", "100m")), now)
            .is_empty());
        assert_eq!(
            m.apply(watcher::Event::Delete(pod("a", "100m")), now),
            vec!["ns".to_string()]
        );
        let s = m.sum("ns", &names(&["pods", "requests.cpu"]), &json!({}), now);
        assert_eq!(s.used["pods"], q("1"));
        assert_eq!(s.used["requests.cpu"], q("250m"));
    }

    #[test]
    fn terminal_pods_are_not_charged_compute() {
        let m = Monitor::new(GroupResource::new("", "pods"));
        let now = Timestamp::now();
        let mut done = pod("done", "1");
        done["status"]["phase"] = json!("Succeeded");
        m.apply(watcher::Event::Apply(pod("live", "1")), now);
        m.apply(watcher::Event::Apply(done), now);
        let s = m.sum(
            "ns",
            &names(&["pods", "count/pods", "requests.cpu"]),
            &json!({}),
            now,
        );
        assert_eq!(s.used["pods"], q("1"));
        assert_eq!(s.used["count/pods"], q("2"));
        assert_eq!(s.used["requests.cpu"], q("1"));
    }

    #[test]
    fn deleting_pods_stop_counting_after_their_grace_period() {
        let m = Monitor::new(GroupResource::new("", "pods"));
        let now = Timestamp::now();
        let mut p = pod("p", "1");
        p["metadata"]["deletionTimestamp"] = json!(now.to_string());
        p["metadata"]["deletionGracePeriodSeconds"] = json!(30);
        m.apply(watcher::Event::Apply(p), now);
        let n = names(&["pods"]);
        let s = m.sum("ns", &n, &json!({}), now);
        assert_eq!(s.used["pods"], q("1"));
        let end = now + jiff::SignedDuration::from_secs(30);
        assert_eq!(s.next_change, Some(end));
        let later = m.sum(
            "ns",
            &n,
            &json!({}),
            end + jiff::SignedDuration::from_secs(1),
        );
        assert_eq!(later.used["pods"], q("0"));
    }

    #[test]
    fn scopes_select_pods_by_their_facts() {
        let m = Monitor::new(GroupResource::new("", "pods"));
        let now = Timestamp::now();
        let mut best_effort = json!({"metadata": {"name": "be", "namespace": "ns"},
                                     "spec": {"containers": [{"name": "c"}]}});
        best_effort["spec"]["priorityClassName"] = json!("high");
        m.apply(watcher::Event::Apply(best_effort), now);
        m.apply(watcher::Event::Apply(pod("burstable", "1")), now);
        let n = names(&["pods"]);
        let be = m.sum("ns", &n, &json!({"scopes": ["BestEffort"]}), now);
        assert_eq!(be.used["pods"], q("1"));
        let not_be = m.sum("ns", &n, &json!({"scopes": ["NotBestEffort"]}), now);
        assert_eq!(not_be.used["pods"], q("1"));
        let high = m.sum(
            "ns",
            &n,
            &json!({"scopeSelector": {"matchExpressions": [
                {"scopeName": "PriorityClass", "operator": "In", "values": ["high"]}
            ]}}),
            now,
        );
        assert_eq!(high.used["pods"], q("1"));
        let terminating = m.sum("ns", &n, &json!({"scopes": ["Terminating"]}), now);
        assert_eq!(terminating.used["pods"], q("0"));
    }

    #[test]
    fn a_relist_replaces_everything() {
        let m = Monitor::new(GroupResource::new("", "configmaps"));
        let now = Timestamp::now();
        let cm = |name: &str, ns: &str| json!({"metadata": {"name": name, "namespace": ns}});
        m.apply(watcher::Event::Apply(cm("a", "x")), now);
        m.apply(watcher::Event::Apply(cm("b", "y")), now);
        m.apply(watcher::Event::Init, now);
        m.apply(watcher::Event::InitApply(cm("b", "y")), now);
        let changed = m.apply(watcher::Event::InitDone, now);
        assert_eq!(changed, vec!["x".to_string()]);
        assert_eq!(m.namespaces(), 1);
        let s = m.sum(
            "y",
            &names(&["configmaps", "count/configmaps"]),
            &json!({}),
            now,
        );
        assert_eq!(s.used["configmaps"], q("1"));
        assert_eq!(s.used["count/configmaps"], q("1"));
    }
}
