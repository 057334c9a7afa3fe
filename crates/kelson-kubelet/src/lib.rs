//! Kelson's kubelet: runs the pods bound to this node as containers through
//! the CRI and reports them to the API server, matching upstream Kubernetes
//! 1.33.
//!
//! * [`kubelet`]: the main loop: this node's pods from a watch, one worker
//!   per pod, the runtime relist, and the status manager.
//! * [`runtime`]: upstream's kuberuntime manager over CRI: sandboxes,
//!   images, containers, hooks, back-off, graceful stop, and the API status
//!   of a pod from its runtime state.
//! * [`prober`]: liveness, readiness and startup probes.
//! * [`node`]: Node registration, status and the heartbeat Lease.
//! * [`sources`]: the ConfigMaps, Secrets and Services a pod reads.
//! * [`volume_manager`]: a pod's volumes set up on the host.
//! * [`cleanup`]: what pods that are gone left behind.
//! * [`server`]: the kubelet's HTTPS API (logs, exec, attach, port-forward,
//!   stats, pods).
//! * [`env`]: a container's environment (`env`, `envFrom`, service links,
//!   downward API fields) and `$(VAR)` expansion of command, args and
//!   `subPathExpr`.
//! * [`volumes`]: pod volume directories, the atomic writer behind
//!   configMap / secret / downwardAPI / projected volumes, emptyDir (tmpfs
//!   through a [`volumes::Mounter`]), hostPath type checks and subPath
//!   resolution.
//! * [`resources`]: QoS class, per-container Linux resources (cpu shares and
//!   quota, memory limit, oom_score_adj) and pod cgroup names and limits.

pub mod cleanup;
pub mod env;
pub mod kubelet;
pub mod node;
pub mod prober;
pub mod resources;
pub mod runtime;
pub mod server;
pub mod sources;
pub mod volume_manager;
pub mod volumes;
