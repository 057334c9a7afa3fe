//! Kelson's kubelet: the parts that turn a pod spec into what the container
//! runtime needs, matching upstream Kubernetes 1.33.
//!
//! * [`env`]: a container's environment (`env`, `envFrom`, service links,
//!   downward API fields) and `$(VAR)` expansion of command, args and
//!   `subPathExpr`.
//! * [`volumes`]: pod volume directories, the atomic writer behind
//!   configMap / secret / downwardAPI / projected volumes, emptyDir (tmpfs
//!   through a [`volumes::Mounter`]), hostPath type checks and subPath
//!   resolution.
//! * [`resources`]: QoS class, per-container Linux resources (cpu shares and
//!   quota, memory limit, oom_score_adj) and pod cgroup names and limits.
//!
//! Nothing here talks to the API server or the runtime: callers pass in the
//! objects and lookups, and map the plain results to CRI messages.

pub mod env;
pub mod resources;
pub mod volumes;
