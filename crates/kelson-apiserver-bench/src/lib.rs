//! # kelson-apiserver-bench
//!
//! Figure-printing benchmarks of a real `kelson server` process, shared by
//! two binaries:
//!
//! - `kelson-apiserver-bench` (src/main.rs): the API server alone —
//!   concurrent pod creates, full lists, many watches;
//! - `kelson-control-plane-bench` (src/bin/control_plane.rs): the whole
//!   control plane (API server, scheduler, controller manager) with
//!   simulated nodes — upstream scheduler_perf-like workloads, a large
//!   Deployment, and the server's memory at 5,000 nodes and 50,000 pods.

pub mod client;
pub mod control_plane;
pub mod server;
pub mod stats;
pub mod watch;
