//! Upstream's SchedulingBasic workload in one process: 5,000 nodes (4 CPU,
//! 32Gi, 110 pods), 5,000 initial pods, then 10,000 measured pending pods
//! (100m CPU / 500Mi) through the full cycle with a no-op binder.
//! `cargo run --release -p kelson-scheduler --example scheduling_basic`

use std::time::Instant;

use k8s_openapi::api::core::v1::Pod;
use kelson_scheduler::testutil::{node, pod};
use kelson_scheduler::{
    default_profile, EffectError, PodStatusUpdate, Scheduler, SchedulerEffects, SchedulingEvent,
    DEFAULT_SCHEDULER_NAME,
};

struct NoopEffects;

impl SchedulerEffects for NoopEffects {
    fn bind(&self, _: &Pod, _: &str) -> Result<(), EffectError> {
        Ok(())
    }
    fn record_event(&self, _: &Pod, _: &SchedulingEvent) {}
    fn update_pod_status(&self, _: &Pod, _: &PodStatusUpdate) {}
    fn delete_pod(&self, _: &Pod) -> Result<(), EffectError> {
        Ok(())
    }
}

fn main() {
    let arg = |i: usize, d: usize| {
        std::env::args()
            .nth(i)
            .and_then(|a| a.parse().ok())
            .unwrap_or(d)
    };
    let (nodes, init, measured) = (arg(1, 5000), arg(2, 5000), arg(3, 10000));
    let mut s = Scheduler::new(default_profile(DEFAULT_SCHEDULER_NAME), NoopEffects);
    for i in 0..nodes {
        let name = format!("node-{i}");
        s.on_node_upsert(
            node(&name)
                .cpu("4")
                .memory("32Gi")
                .pods(110)
                .label("kubernetes.io/hostname", &name)
                .label("topology.kubernetes.io/zone", &format!("zone-{}", i % 3))
                .build(),
        );
    }
    let mk = |prefix: &str, i: usize| {
        pod(&format!("{prefix}-{i}"))
            .cpu("100m")
            .memory("500Mi")
            .build()
    };
    for i in 0..init {
        s.on_pod_upsert(mk("init", i));
    }
    s.run_until_idle();
    for i in 0..measured {
        s.on_pod_upsert(mk("measured", i));
    }
    let start = Instant::now();
    let done = s.run_until_idle();
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{nodes} nodes, {init} initial pods: scheduled {done} pods in {secs:.3}s = {:.0} pods/s",
        done as f64 / secs
    );
}
