//! Start-up and run-loop pieces shared by the controllers built on
//! kube-runtime's `Controller`.

use std::fmt::{Debug, Display};

use futures::{Stream, StreamExt};
use kube::runtime::controller::{self, Controller};
use kube::runtime::watcher;
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;

/// Upstream's default of every `--concurrent-*-syncs` flag.
pub const DEFAULT_WORKERS: u16 = 5;

/// Tunables of a controller whose only knob is how many objects it syncs
/// at the same time (its `--concurrent-*-syncs` flag).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerOptions {
    pub workers: u16,
}

impl Default for WorkerOptions {
    fn default() -> Self {
        WorkerOptions {
            workers: DEFAULT_WORKERS,
        }
    }
}

/// A controller over every object of kind `K` in the cluster, syncing up
/// to `workers` objects at once.
pub fn controller<K>(client: &Client, workers: u16) -> Controller<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    Controller::new(Api::<K>::all(client.clone()), watcher::Config::default())
        .with_config(controller::Config::default().concurrency(workers))
}

/// Drives a controller's results until it stops (on shutdown). A failed
/// sync is only logged at debug level, as `what`: the controller's error
/// policy has already reported it and scheduled the retry.
pub async fn drive<S, T, E>(results: S, what: &str)
where
    S: Stream<Item = Result<T, E>>,
    E: Display,
{
    results
        .for_each(|res| async move {
            if let Err(e) = res {
                tracing::debug!(error = %e, "{what}");
            }
        })
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workers_default_to_upstreams_five() {
        assert_eq!(WorkerOptions::default().workers, 5);
    }

    #[tokio::test]
    async fn drive_consumes_every_result() {
        let seen = std::sync::atomic::AtomicUsize::new(0);
        let results = futures::stream::iter([Ok(1), Err("boom"), Ok(2)]).inspect(|_| {
            seen.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        });
        drive(results, "test sync").await;
        assert_eq!(seen.load(std::sync::atomic::Ordering::Relaxed), 3);
    }
}
