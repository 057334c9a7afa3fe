//! Watches (kube-runtime `watcher`) streamed into [`SchedulerInput`]s with
//! no reflector store: the scheduler's cache is the only copy of the
//! objects. Each watch keeps just the key and uid of what it has delivered,
//! so that a relist (Init … InitApply … InitDone) can report as deleted
//! whatever disappeared while the watch was down, and an object recreated
//! under the same name is first removed under its old uid.

use std::collections::{HashMap, HashSet};
use std::fmt::Debug;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, ReplicationController, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::serde::de::DeserializeOwned;
use k8s_openapi::Resource as _;
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Resource};
use tokio::sync::mpsc::UnboundedSender;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use crate::driver::SchedulerInput;
use crate::selectors::LabelSelector;

/// A watched kind and how its events become scheduler inputs.
pub trait Watched:
    Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static
{
    /// "namespace/name" for namespaced kinds, "name" otherwise.
    fn key(&self) -> String {
        let m = self.meta();
        match &m.namespace {
            Some(ns) => format!("{ns}/{}", m.name.as_deref().unwrap_or("")),
            None => m.name.clone().unwrap_or_default(),
        }
    }
    fn uid(&self) -> String {
        self.meta().uid.clone().unwrap_or_default()
    }
    fn upsert(self) -> SchedulerInput;
    fn deleted(self) -> SchedulerInput;
    /// A deletion known only by key and uid (missed while not watching).
    fn gone(key: &str, uid: &str) -> SchedulerInput;
}

fn split_key(key: &str) -> (&str, &str) {
    key.split_once('/').unwrap_or(("", key))
}

impl Watched for Pod {
    fn upsert(self) -> SchedulerInput {
        SchedulerInput::PodUpsert(self)
    }
    fn deleted(self) -> SchedulerInput {
        SchedulerInput::PodDelete(self)
    }
    fn gone(key: &str, uid: &str) -> SchedulerInput {
        // The scheduler finds a deleted pod by key and uid only.
        let (ns, name) = split_key(key);
        SchedulerInput::PodDelete(Pod {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                namespace: Some(ns.to_string()),
                uid: Some(uid.to_string()),
                ..ObjectMeta::default()
            },
            ..Pod::default()
        })
    }
}

impl Watched for Node {
    fn upsert(self) -> SchedulerInput {
        SchedulerInput::NodeUpsert(self)
    }
    fn deleted(self) -> SchedulerInput {
        SchedulerInput::NodeDelete(self.metadata.name.unwrap_or_default())
    }
    fn gone(key: &str, _: &str) -> SchedulerInput {
        SchedulerInput::NodeDelete(key.to_string())
    }
}

impl Watched for PodDisruptionBudget {
    fn upsert(self) -> SchedulerInput {
        SchedulerInput::PdbUpsert(self)
    }
    fn deleted(self) -> SchedulerInput {
        SchedulerInput::PdbDelete {
            namespace: self.metadata.namespace.unwrap_or_default(),
            name: self.metadata.name.unwrap_or_default(),
        }
    }
    fn gone(key: &str, _: &str) -> SchedulerInput {
        let (ns, name) = split_key(key);
        SchedulerInput::PdbDelete {
            namespace: ns.to_string(),
            name: name.to_string(),
        }
    }
}

impl Watched for Namespace {
    fn upsert(self) -> SchedulerInput {
        SchedulerInput::NamespaceUpsert(self)
    }
    fn deleted(self) -> SchedulerInput {
        SchedulerInput::NamespaceDelete(self.metadata.name.unwrap_or_default())
    }
    fn gone(key: &str, _: &str) -> SchedulerInput {
        SchedulerInput::NamespaceDelete(key.to_string())
    }
}

/// The kinds whose selectors feed default spreading: only the selector is
/// passed on.
macro_rules! spread_source {
    ($kind:ty, |$o:ident| $selector:expr) => {
        impl Watched for $kind {
            fn upsert(self) -> SchedulerInput {
                let $o = &self;
                let selector = $selector;
                SchedulerInput::SpreadSelector {
                    namespace: self.metadata.namespace.clone().unwrap_or_default(),
                    id: format!(
                        "{}/{}",
                        <$kind>::KIND,
                        self.metadata.name.as_deref().unwrap_or("")
                    ),
                    selector: Some(selector),
                }
            }
            fn deleted(self) -> SchedulerInput {
                Self::gone(&self.key(), "")
            }
            fn gone(key: &str, _: &str) -> SchedulerInput {
                let (ns, name) = split_key(key);
                SchedulerInput::SpreadSelector {
                    namespace: ns.to_string(),
                    id: format!("{}/{name}", <$kind>::KIND),
                    selector: None,
                }
            }
        }
    };
}

spread_source!(Service, |o| LabelSelector::from_map(
    o.spec.as_ref().and_then(|s| s.selector.as_ref())
));
spread_source!(ReplicationController, |o| LabelSelector::from_map(
    o.spec.as_ref().and_then(|s| s.selector.as_ref())
));
// An invalid selector selects nothing, as upstream's listers treat it.
spread_source!(ReplicaSet, |o| LabelSelector::compile(
    o.spec.as_ref().map(|s| &s.selector)
)
.unwrap_or_else(|_| LabelSelector::nothing()));
spread_source!(StatefulSet, |o| LabelSelector::compile(
    o.spec.as_ref().map(|s| &s.selector)
)
.unwrap_or_else(|_| LabelSelector::nothing()));

/// What one watch has delivered (key → uid), turning watcher events into
/// inputs with relist deletions filled in.
#[derive(Debug, Default)]
pub struct Tracker {
    known: HashMap<String, String>,
    /// Keys seen since the last `Init`, while a relist is under way.
    relist: Option<HashSet<String>>,
}

impl Tracker {
    pub fn len(&self) -> usize {
        self.known.len()
    }

    pub fn is_empty(&self) -> bool {
        self.known.is_empty()
    }

    /// Handles one watcher event; returns true at the end of a relist.
    pub fn handle<K: Watched>(
        &mut self,
        event: watcher::Event<K>,
        out: &mut impl FnMut(SchedulerInput),
    ) -> bool {
        match event {
            watcher::Event::Apply(obj) => self.apply(obj, out),
            watcher::Event::Delete(obj) => {
                self.known.remove(&obj.key());
                out(obj.deleted());
            }
            watcher::Event::Init => self.relist = Some(HashSet::new()),
            watcher::Event::InitApply(obj) => {
                if let Some(seen) = &mut self.relist {
                    seen.insert(obj.key());
                }
                self.apply(obj, out);
            }
            watcher::Event::InitDone => {
                if let Some(seen) = self.relist.take() {
                    let missing: Vec<String> = self
                        .known
                        .keys()
                        .filter(|k| !seen.contains(*k))
                        .cloned()
                        .collect();
                    for key in missing {
                        if let Some(uid) = self.known.remove(&key) {
                            out(K::gone(&key, &uid));
                        }
                    }
                }
                return true;
            }
        }
        false
    }

    fn apply<K: Watched>(&mut self, obj: K, out: &mut impl FnMut(SchedulerInput)) {
        let uid = obj.uid();
        match self.known.insert(obj.key(), uid.clone()) {
            // Deleted and recreated under the same name between two looks.
            Some(old) if old != uid => out(K::gone(&obj.key(), &old)),
            _ => {}
        }
        out(obj.upsert());
    }
}

/// Streams one kind into `tx` until `shutdown`; `synced` fires after the
/// first complete list. Watch errors are logged and retried with backoff.
pub async fn feed<K: Watched>(
    api: Api<K>,
    config: watcher::Config,
    tx: UnboundedSender<SchedulerInput>,
    synced: oneshot::Sender<()>,
    shutdown: CancellationToken,
) {
    let kind = K::kind(&());
    let mut synced = Some(synced);
    let mut tracker = Tracker::default();
    let stream = watcher(api, config).default_backoff();
    futures::pin_mut!(stream);
    loop {
        let next = tokio::select! {
            _ = shutdown.cancelled() => return,
            n = stream.next() => n,
        };
        let event = match next {
            Some(Ok(e)) => e,
            Some(Err(e)) => {
                tracing::warn!(%kind, error = %e, "scheduler watch failed; retrying");
                continue;
            }
            None => return,
        };
        let mut closed = false;
        let done = tracker.handle(event, &mut |input| {
            closed |= tx.send(input).is_err();
        });
        if closed {
            return;
        }
        if done {
            if let Some(s) = synced.take() {
                let _ = s.send(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, uid: &str) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                uid: Some(uid.into()),
                ..ObjectMeta::default()
            },
            ..Pod::default()
        }
    }

    fn node(name: &str) -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                uid: Some(format!("uid-{name}")),
                ..ObjectMeta::default()
            },
            ..Node::default()
        }
    }

    /// Inputs rendered as short strings for comparison.
    fn run<K: Watched>(t: &mut Tracker, events: Vec<watcher::Event<K>>) -> Vec<String> {
        let mut out = Vec::new();
        for e in events {
            t.handle(e, &mut |i| {
                out.push(match i {
                    SchedulerInput::PodUpsert(p) => format!("+{}", p.uid()),
                    SchedulerInput::PodDelete(p) => format!("-{}/{}", p.key(), p.uid()),
                    SchedulerInput::NodeUpsert(n) => format!("+{}", n.key()),
                    SchedulerInput::NodeDelete(n) => format!("-{n}"),
                    other => format!("{other:?}"),
                })
            });
        }
        out
    }

    #[test]
    fn relist_reports_objects_missing_from_the_new_list_as_deleted() {
        use watcher::Event::*;
        let mut t = Tracker::default();
        let out = run(
            &mut t,
            vec![
                Init,
                InitApply(pod("a", "1")),
                InitApply(pod("b", "2")),
                InitDone,
            ],
        );
        assert_eq!(out, ["+1", "+2"]);
        // The watch broke; "a" was deleted meanwhile, "c" created.
        let out = run(
            &mut t,
            vec![
                Init,
                InitApply(pod("b", "2")),
                InitApply(pod("c", "3")),
                InitDone,
            ],
        );
        assert_eq!(out, ["+2", "+3", "-default/a/1"]);
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn recreated_object_is_removed_under_its_old_uid_first() {
        use watcher::Event::*;
        let mut t = Tracker::default();
        run(&mut t, vec![Init, InitApply(pod("a", "1")), InitDone]);
        let out = run(&mut t, vec![Apply(pod("a", "9"))]);
        assert_eq!(out, ["-default/a/1", "+9"]);
        let out = run(&mut t, vec![Delete(pod("a", "9"))]);
        assert_eq!(out, ["-default/a/9"]);
        assert!(t.is_empty());
    }

    #[test]
    fn node_relist_deletes_by_name() {
        use watcher::Event::*;
        let mut t = Tracker::default();
        run(
            &mut t,
            vec![Init, InitApply(node("n1")), InitApply(node("n2")), InitDone],
        );
        let out = run(&mut t, vec![Init, InitApply(node("n2")), InitDone]);
        assert_eq!(out, ["+n2", "-n1"]);
    }

    #[test]
    fn init_done_signals_sync() {
        let mut t = Tracker::default();
        assert!(!t.handle::<Node>(watcher::Event::Init, &mut |_| {}));
        assert!(t.handle::<Node>(watcher::Event::InitDone, &mut |_| {}));
    }
}
