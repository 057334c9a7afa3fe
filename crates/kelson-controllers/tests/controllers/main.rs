//! The controllers against a real API server, one module per controller.
//! They share one test binary: each file under `tests/` would otherwise be
//! its own binary, linking the API server and kube-rs again. The tests share
//! no process-wide state (each starts its own `TestCluster` on a free port
//! with its own temporary store), so they can run in parallel threads.

mod support;

mod cronjob;
mod daemonset;
mod deployment;
mod disruption;
mod endpoints;
mod garbagecollector;
mod informers;
mod job;
mod namespace;
mod nodeipam;
mod nodelifecycle;
mod podgc;
mod replicaset;
mod resourcequota;
mod serviceaccount;
mod statefulset;
