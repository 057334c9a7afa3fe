//! Kelson's scheduler core: a framework with one trait per extension point,
//! upstream's default plugins, a priority queue with backoff, a cache with
//! incremental snapshots, preemption, and a driver (`Scheduler`) that talks to
//! the cluster only through the [`scheduler::SchedulerEffects`] trait.
//!
//! Feed it informer events (`on_pod_upsert`, `on_node_upsert`, ...), then call
//! `schedule_one` / `run_until_idle`, or hand it a channel with
//! [`driver::run`].

pub mod cache;
pub mod driver;
pub mod framework;
pub mod informers;
pub mod kube_effects;
pub mod plugins;
pub mod preemption;
pub mod queue;
pub mod resources;
pub mod run;
pub mod scheduler;
pub mod selectors;
pub mod types;

/// Pod and node builders for tests and benchmarks.
pub mod testutil;

pub use cache::{Cache, Snapshot};
pub use framework::{Code, CycleState, Framework, Status};
pub use plugins::default_profile;
pub use queue::{Clock, FakeClock, SystemClock};
pub use run::{run, RunError, SchedulerOptions};
pub use scheduler::{
    EffectError, PodStatusUpdate, ScheduleOutcome, Scheduler, SchedulerEffects, SchedulingEvent,
    DEFAULT_SCHEDULER_NAME,
};
pub use types::{NodeInfo, PodInfo};
