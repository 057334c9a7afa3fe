//! The node's container runtime side for Kelson's kubelet.
//!
//! - [`containerd`]: containerd as a child process (config, start, stop), or
//!   a user-supplied CRI endpoint.
//! - [`client`]: a CRI v1 client over the Unix socket.
//! - [`pause`]: the pod sandbox program (a tiny static ELF emitted from Rust)
//!   and its image, [`PAUSE_IMAGE`].
//! - [`image`]: a small OCI image archive writer, and a busybox test image.
//! - [`import`]: loading image archives into containerd's `k8s.io` namespace.

pub mod client;
pub mod containerd;
pub mod image;
pub mod import;
pub mod pause;

/// The CRI v1 messages and service clients (from the `k8s-cri` crate), so
/// callers need no direct dependency on it.
pub use k8s_cri::v1 as api;

pub use client::Cri;
pub use containerd::{Containerd, ContainerdOptions};
pub use pause::PAUSE_IMAGE;
