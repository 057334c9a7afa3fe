//! One probe worker: a tokio task probing one container for one probe kind
//! (upstream `pkg/kubelet/prober/worker.go`).

use std::sync::Arc;

use k8s_openapi::api::core::v1::{Container, Probe};
use rand::Rng;
use tokio::sync::Notify;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use super::{
    container_status, parse_container_id, run, Health, Key, ProbeKind, ProbeManager, Timings,
};

pub(super) struct Worker {
    manager: ProbeManager,
    key: Key,
    id: u64,
    container: Container,
    init: bool,
    spec: Probe,
    timings: Timings,
    stop: CancellationToken,
    trigger: Arc<Notify>,
    /// The container instance last seen; results are recorded for it.
    container_id: String,
    last_result: Option<Health>,
    /// Equal results in a row.
    result_run: u32,
    /// After a liveness/startup failure: no probing until a new container.
    on_hold: bool,
    /// (container ID, startedAt) the initial delay was computed for, and
    /// when it ends on the tokio clock.
    delay: Option<(String, String, Instant)>,
}

impl Worker {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        manager: ProbeManager,
        key: Key,
        id: u64,
        container: Container,
        init: bool,
        spec: Probe,
        stop: CancellationToken,
        trigger: Arc<Notify>,
    ) -> Worker {
        let timings = Timings::of(&spec);
        Worker {
            manager,
            key,
            id,
            container,
            init,
            spec,
            timings,
            stop,
            trigger,
            container_id: String::new(),
            last_result: None,
            result_run: 0,
            on_hold: false,
            delay: None,
        }
    }

    pub(super) async fn run(mut self) {
        let period = self.timings.period;
        let shared = self.manager.shared.clone();
        // A kubelet that just started would otherwise probe every container
        // at once.
        if shared.jitter && shared.start.elapsed() < period {
            let wait = period.mul_f64(rand::rng().random::<f64>());
            tokio::select! {
                _ = self.stop.cancelled() => return self.finish(),
                _ = tokio::time::sleep(wait) => {}
            }
        }
        let mut ticker = tokio::time::interval_at(Instant::now() + period, period);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let stop = self.stop.clone();
        loop {
            let keep_going = tokio::select! {
                _ = stop.cancelled() => false,
                k = self.do_probe() => k,
            };
            if !keep_going {
                break;
            }
            tokio::select! {
                _ = self.stop.cancelled() => break,
                _ = ticker.tick() => {}
                _ = self.trigger.notified() => {}
            }
        }
        self.finish();
    }

    fn finish(&self) {
        if !self.container_id.is_empty() {
            self.manager.remove_result(&self.key, &self.container_id);
        }
        self.manager.worker_done(&self.key, self.id);
    }

    /// One round of upstream's doProbe; false ends the worker.
    async fn do_probe(&mut self) -> bool {
        let Some((pod, status)) = self.manager.pod_entry(&self.key.uid) else {
            return true;
        };
        if matches!(status.phase.as_deref(), Some("Succeeded" | "Failed")) {
            return false;
        }
        let Some(c) = container_status(&status, &self.container.name) else {
            // Not created yet (or removed): wait for more information.
            return true;
        };
        let id = parse_container_id(c.container_id.as_deref().unwrap_or("")).to_string();
        if self.container_id != id {
            if !self.container_id.is_empty() {
                self.manager.remove_result(&self.key, &self.container_id);
            }
            self.container_id = id;
            self.manager
                .set_result(&self.key, &self.container_id, self.key.kind.initial());
            // A new container: probe again.
            self.on_hold = false;
        }
        if self.on_hold {
            return true;
        }

        let state = c.state.clone().unwrap_or_default();
        let Some(running) = state.running else {
            self.manager
                .set_result(&self.key, &self.container_id, Health::Failure);
            // Stop when the container will not be restarted.
            let restart = self
                .container
                .restart_policy
                .clone()
                .or_else(|| pod.spec.as_ref().and_then(|s| s.restart_policy.clone()))
                .unwrap_or_else(|| "Always".to_string());
            return state.terminated.is_none() || restart != "Never";
        };

        // A pod being deleted: liveness and startup stay quiet.
        if pod.metadata.deletion_timestamp.is_some()
            && matches!(self.key.kind, ProbeKind::Liveness | ProbeKind::Startup)
        {
            self.manager
                .set_result(&self.key, &self.container_id, Health::Success);
            return false;
        }

        let delay_end = self.delay_end(running.started_at.as_ref());
        if Instant::now() < delay_end {
            return true;
        }

        let started = c.started == Some(true);
        if started == (self.key.kind == ProbeKind::Startup) {
            // A started container needs no startup probe (the worker stays
            // for the next container); the others wait for it.
            return true;
        }

        let Ok(health) = run::probe(
            &self.manager,
            self.key.kind,
            &pod,
            &status,
            &self.container,
            self.init,
            &self.spec,
            &self.container_id,
        )
        .await
        else {
            // Errors do not count towards a threshold.
            return true;
        };

        if self.last_result == Some(health) {
            self.result_run += 1;
        } else {
            self.last_result = Some(health);
            self.result_run = 1;
        }
        if (health == Health::Failure && self.result_run < self.timings.failure_threshold)
            || (health == Health::Success && self.result_run < self.timings.success_threshold)
        {
            return true;
        }
        self.manager
            .set_result(&self.key, &self.container_id, health);
        if health == Health::Failure
            && matches!(self.key.kind, ProbeKind::Liveness | ProbeKind::Startup)
        {
            // The container is restarted; probing it further only races
            // with its stop.
            self.on_hold = true;
            self.result_run = 0;
        }
        true
    }

    /// When the initial delay after `started_at` ends, on the tokio clock
    /// (computed once per container start so paused test clocks work).
    fn delay_end(
        &mut self,
        started_at: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
    ) -> Instant {
        let started = started_at.map(|t| t.0.to_string()).unwrap_or_default();
        if let Some((id, at, end)) = &self.delay {
            if *id == self.container_id && *at == started {
                return *end;
            }
        }
        let elapsed = started_at
            .and_then(|t| {
                let d = jiff::Timestamp::now().duration_since(t.0);
                std::time::Duration::try_from(d).ok()
            })
            .unwrap_or_default();
        let end = Instant::now() + self.timings.initial_delay.saturating_sub(elapsed);
        self.delay = Some((self.container_id.clone(), started, end));
        end
    }
}
