//! An async driver: feed informer events through a channel, the loop
//! schedules whenever pods are ready and sleeps until the next backoff
//! expiry otherwise.

use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use tokio::sync::mpsc::error::TryRecvError;
use tokio::sync::mpsc::UnboundedReceiver;

use crate::scheduler::{Scheduler, SchedulerEffects};

/// One informer event (or a binding failure reported by the effects).
#[derive(Debug, Clone)]
pub enum SchedulerInput {
    PodUpsert(Pod),
    PodDelete(Pod),
    NodeUpsert(Node),
    NodeDelete(String),
    PdbUpsert(PodDisruptionBudget),
    PdbDelete {
        namespace: String,
        name: String,
    },
    NamespaceUpsert(Namespace),
    NamespaceDelete(String),
    /// A Service's, ReplicationController's, ReplicaSet's or StatefulSet's
    /// selector (None: the object is gone), for default spreading.
    SpreadSelector {
        namespace: String,
        id: String,
        selector: Option<crate::selectors::LabelSelector>,
    },
    BindingFailed {
        pod: Pod,
        message: String,
    },
}

impl<E: SchedulerEffects> Scheduler<E> {
    pub fn handle(&mut self, input: SchedulerInput) {
        match input {
            SchedulerInput::PodUpsert(p) => self.on_pod_upsert(p),
            SchedulerInput::PodDelete(p) => self.on_pod_delete(&p),
            SchedulerInput::NodeUpsert(n) => self.on_node_upsert(n),
            SchedulerInput::NodeDelete(n) => self.on_node_delete(&n),
            SchedulerInput::PdbUpsert(p) => self.on_pdb_upsert(&p),
            SchedulerInput::PdbDelete { namespace, name } => self.on_pdb_delete(&namespace, &name),
            SchedulerInput::NamespaceUpsert(n) => self.on_namespace_upsert(&n),
            SchedulerInput::NamespaceDelete(n) => self.on_namespace_delete(&n),
            SchedulerInput::SpreadSelector {
                namespace,
                id,
                selector,
            } => self.on_spread_selector(&namespace, &id, selector),
            SchedulerInput::BindingFailed { pod, message } => {
                self.on_binding_failed(&pod, &message)
            }
        }
    }
}

/// Runs until the sender side closes; returns the scheduler. Scheduling is
/// CPU-bound: run this on its own runtime thread (or a dedicated
/// current-thread runtime) rather than among latency-sensitive tasks.
pub async fn run<E: SchedulerEffects>(
    mut sched: Scheduler<E>,
    mut rx: UnboundedReceiver<SchedulerInput>,
) -> Scheduler<E> {
    loop {
        loop {
            match rx.try_recv() {
                Ok(i) => sched.handle(i),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => return sched,
            }
        }
        if sched.schedule_one().is_some() {
            tokio::task::yield_now().await;
            continue;
        }
        let input = match sched.queue().next_wakeup() {
            Some(t) => {
                tokio::select! {
                    i = rx.recv() => Some(i),
                    _ = tokio::time::sleep_until(tokio::time::Instant::from_std(t)) => None,
                }
            }
            None => Some(rx.recv().await),
        };
        match input {
            Some(Some(i)) => sched.handle(i),
            Some(None) => return sched,
            None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::{EffectError, PodStatusUpdate, SchedulingEvent};
    use crate::testutil::{node, pod};
    use parking_lot::Mutex;

    #[derive(Default)]
    struct Binds(Mutex<Vec<String>>);

    impl SchedulerEffects for Binds {
        fn bind(&self, _: &Pod, node: &str) -> Result<(), EffectError> {
            self.0.lock().push(node.to_string());
            Ok(())
        }
        fn record_event(&self, _: &Pod, _: &SchedulingEvent) {}
        fn update_pod_status(&self, _: &Pod, _: &PodStatusUpdate) {}
        fn delete_pod(&self, _: &Pod) -> Result<(), EffectError> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn channel_driver_schedules_until_closed() {
        let s = Scheduler::new(
            crate::default_profile(crate::DEFAULT_SCHEDULER_NAME),
            Binds::default(),
        );
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tx.send(SchedulerInput::NodeUpsert(node("n1").cpu("1").build()))
            .unwrap();
        tx.send(SchedulerInput::PodUpsert(pod("p").build()))
            .unwrap();
        let task = tokio::spawn(run(s, rx));
        tokio::task::yield_now().await;
        drop(tx);
        let s = task.await.unwrap();
        assert_eq!(s.effects().0.lock().as_slice(), ["n1".to_string()]);
    }
}
