//! Leader election on a coordination.k8s.io/v1 Lease, with the semantics
//! of client-go's leaderelection package, so Kelson's components and
//! upstream ones read each other's Leases alike.
//!
//! A candidate tries every `retry_period` (with up to 120 % jitter) until
//! the Lease is free: absent, released (empty holderIdentity), or not
//! renewed for `leaseDurationSeconds` as seen by this candidate's own clock
//! (the time it last saw the Lease change, not the timestamps inside it, so
//! clock skew between machines does not matter). The leader renews every
//! `retry_period`; if no renewal succeeds within `renew_deadline` it stops
//! leading. Writes are PUTs carrying the resourceVersion last read, so two
//! candidates never both win.

use std::future::Future;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::PostParams;
use kube::Api;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::events::{EventType, Recorder};

/// Upstream's wait.JitterUntil factor for acquisition retries.
const JITTER_FACTOR: f64 = 1.2;

/// Upstream's Lease names.
pub const SCHEDULER_LEASE: &str = "kube-scheduler";
pub const CONTROLLER_MANAGER_LEASE: &str = "kube-controller-manager";
pub const LEASE_NAMESPACE: &str = "kube-system";

#[derive(Debug, thiserror::Error)]
pub enum LeaderElectionError {
    #[error("leaseDuration must be greater than renewDeadline")]
    LeaseNotLongerThanRenew,
    #[error("renewDeadline must be greater than retryPeriod*1.2")]
    RenewTooShort,
    #[error("leaseDuration must be at least one second (a Lease counts whole seconds)")]
    LeaseTooShort,
    #[error("retryPeriod must be greater than zero")]
    RetryZero,
    #[error("the lock identity is empty")]
    EmptyIdentity,
    #[error("the Lease name is empty")]
    EmptyName,
    #[error("the Lease has not been read yet")]
    NotRead,
    #[error(transparent)]
    Api(#[from] kube::Error),
}

/// Timing of an election; the defaults are upstream components'
/// (`--leader-elect-lease-duration=15s`, `--leader-elect-renew-deadline=10s`,
/// `--leader-elect-retry-period=2s`).
#[derive(Debug, Clone)]
pub struct LeaderElectionConfig {
    pub lease_duration: Duration,
    pub renew_deadline: Duration,
    pub retry_period: Duration,
    /// On clean shutdown (or when the work ends by itself), hand the Lease
    /// back by clearing holderIdentity, so another candidate takes over at
    /// once instead of after `lease_duration` (upstream ReleaseOnCancel).
    pub release_on_cancel: bool,
}

impl Default for LeaderElectionConfig {
    fn default() -> Self {
        LeaderElectionConfig {
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
            release_on_cancel: false,
        }
    }
}

impl LeaderElectionConfig {
    /// Upstream's checks (NewLeaderElector).
    pub fn validate(&self) -> Result<(), LeaderElectionError> {
        if self.lease_duration <= self.renew_deadline {
            return Err(LeaderElectionError::LeaseNotLongerThanRenew);
        }
        if self.renew_deadline <= self.retry_period.mul_f64(JITTER_FACTOR) {
            return Err(LeaderElectionError::RenewTooShort);
        }
        if self.lease_duration < Duration::from_secs(1) {
            return Err(LeaderElectionError::LeaseTooShort);
        }
        if self.retry_period.is_zero() {
            return Err(LeaderElectionError::RetryZero);
        }
        Ok(())
    }
}

/// How [`LeaderElector::run`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// `shutdown` was cancelled (while waiting, or while leading: the work
    /// was cancelled and awaited, then the Lease released if configured).
    Shutdown,
    /// The Lease could not be renewed within renewDeadline, or another
    /// candidate holds it now. The work was cancelled. Upstream components
    /// exit at this point ("leaderelection lost").
    LostLease,
    /// The work returned by itself while leading.
    Finished,
}

/// `hostname_<uuid>`, upstream components' holderIdentity.
pub fn default_identity() -> String {
    format!("{}_{}", crate::hostname(), uuid::Uuid::new_v4())
}

/// One candidate for one Lease.
pub struct LeaderElector {
    api: Api<Lease>,
    namespace: String,
    name: String,
    identity: String,
    config: LeaderElectionConfig,
    recorder: Option<Recorder>,
    /// The Lease as last read or written (its resourceVersion guards the
    /// next update).
    lease: Option<Lease>,
    /// The record as last observed, and when (by this process' clock).
    observed: LeaseSpec,
    observed_at: Option<Instant>,
    /// The record as last read from the server, to notice changes.
    observed_raw: Option<LeaseSpec>,
    leading: watch::Sender<bool>,
    holder: watch::Sender<String>,
}

impl LeaderElector {
    pub fn new(
        client: kube::Client,
        namespace: &str,
        name: &str,
        identity: impl Into<String>,
        config: LeaderElectionConfig,
    ) -> Result<LeaderElector, LeaderElectionError> {
        config.validate()?;
        let identity = identity.into();
        if identity.is_empty() {
            return Err(LeaderElectionError::EmptyIdentity);
        }
        if name.is_empty() {
            return Err(LeaderElectionError::EmptyName);
        }
        Ok(LeaderElector {
            api: Api::namespaced(client, namespace),
            namespace: namespace.to_string(),
            name: name.to_string(),
            identity,
            config,
            recorder: None,
            lease: None,
            observed: LeaseSpec::default(),
            observed_at: None,
            observed_raw: None,
            leading: watch::channel(false).0,
            holder: watch::channel(String::new()).0,
        })
    }

    /// Records "<identity> became leader" / "<identity> stopped leading"
    /// Events (reason LeaderElection) on the Lease, as upstream does.
    pub fn with_recorder(mut self, recorder: Recorder) -> Self {
        self.recorder = Some(recorder);
        self
    }

    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// Whether this candidate leads now (for health checks and metrics).
    pub fn leadership(&self) -> watch::Receiver<bool> {
        self.leading.subscribe()
    }

    /// The holder this candidate last observed ("" when none): upstream's
    /// OnNewLeader.
    pub fn leader(&self) -> watch::Receiver<String> {
        self.holder.subscribe()
    }

    /// Campaigns until elected, then runs `work` with a token that is
    /// cancelled when leadership ends, while renewing the Lease.
    ///
    /// - `shutdown` cancelled while leading: the work's token is cancelled
    ///   and the Lease kept renewed until the work returns (so no other
    ///   process starts while it winds down), then released if configured.
    /// - Lease lost: the token is cancelled and the work gets one
    ///   `retry_period` to return before it is dropped; this process must
    ///   not act on the cluster any more.
    pub async fn run<F, Fut>(&mut self, shutdown: &CancellationToken, work: F) -> Outcome
    where
        F: FnOnce(CancellationToken) -> Fut,
        Fut: Future<Output = ()>,
    {
        if !self.acquire(shutdown).await {
            return Outcome::Shutdown;
        }
        tracing::info!(lease = %self.describe(), identity = %self.identity, "successfully acquired lease");
        self.leading.send_replace(true);
        self.record("became leader");

        let token = CancellationToken::new();
        let work = work(token.clone());
        tokio::pin!(work);
        let mut stopping = false;
        let outcome = loop {
            tokio::select! {
                biased;
                _ = &mut work => break if stopping { Outcome::Shutdown } else { Outcome::Finished },
                _ = shutdown.cancelled(), if !stopping => {
                    tracing::info!(lease = %self.describe(), "shutting down: stopping the leader's work");
                    stopping = true;
                    token.cancel();
                }
                renewed = self.renew_and_wait() => {
                    if !renewed {
                        tracing::warn!(lease = %self.describe(), "failed to renew lease: leaderelection lost");
                        token.cancel();
                        self.leading.send_replace(false);
                        if tokio::time::timeout(self.config.retry_period, &mut work).await.is_err() {
                            tracing::warn!(lease = %self.describe(), "the leader's work did not stop in time; dropped");
                        }
                        break Outcome::LostLease;
                    }
                }
            }
        };
        token.cancel();
        self.leading.send_replace(false);
        self.record("stopped leading");
        if self.config.release_on_cancel {
            self.release().await;
        }
        outcome
    }

    fn describe(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    fn record(&self, what: &str) {
        let (Some(recorder), Some(lease)) = (&self.recorder, &self.lease) else {
            return;
        };
        let subject = Lease {
            metadata: lease.metadata.clone(),
            spec: None,
        };
        recorder.event(
            &crate::events::object_reference(&subject),
            EventType::Normal,
            "LeaderElection",
            format!("{} {what}", self.identity),
        );
    }

    /// Tries until elected; false when `shutdown` came first.
    async fn acquire(&mut self, shutdown: &CancellationToken) -> bool {
        tracing::info!(name = %self.name, identity = %self.identity, "attempting to acquire leader lease");
        loop {
            let tried = tokio::select! {
                _ = shutdown.cancelled() => return false,
                ok = self.try_acquire_or_renew() => ok,
            };
            self.report_holder();
            if tried {
                return true;
            }
            let factor = 1.0 + rand::random::<f64>() * JITTER_FACTOR;
            let wait = self.config.retry_period.mul_f64(factor);
            tokio::select! {
                _ = shutdown.cancelled() => return false,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// One renewal round: retry every retry_period until renewed or
    /// renew_deadline passes; after success, wait retry_period.
    async fn renew_and_wait(&mut self) -> bool {
        let deadline = Instant::now() + self.config.renew_deadline;
        loop {
            let ok = matches!(
                tokio::time::timeout_at(deadline, self.try_acquire_or_renew()).await,
                Ok(true)
            );
            self.report_holder();
            if ok {
                tokio::time::sleep(self.config.retry_period).await;
                return true;
            }
            let next = Instant::now() + self.config.retry_period;
            if next >= deadline {
                return false;
            }
            tokio::time::sleep_until(next).await;
        }
    }

    fn is_leader(&self) -> bool {
        self.observed.holder_identity.as_deref() == Some(self.identity.as_str())
    }

    fn lease_valid(&self, now: Instant) -> bool {
        let secs = self.observed.lease_duration_seconds.unwrap_or(0).max(0) as u64;
        match self.observed_at {
            Some(at) => at + Duration::from_secs(secs) > now,
            None => false,
        }
    }

    fn set_observed(&mut self, spec: LeaseSpec) {
        self.observed = spec;
        self.observed_at = Some(Instant::now());
    }

    fn report_holder(&self) {
        let holder = self.observed.holder_identity.clone().unwrap_or_default();
        self.holder.send_if_modified(|h| {
            if *h == holder {
                false
            } else {
                tracing::info!(lease = %self.name, holder = %holder, "new leader observed");
                *h = holder.clone();
                true
            }
        });
    }

    fn record_now(&self, now: Timestamp) -> LeaseSpec {
        let secs = i32::try_from(self.config.lease_duration.as_secs()).unwrap_or(i32::MAX);
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(secs),
            acquire_time: Some(MicroTime(now)),
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(0),
            ..LeaseSpec::default()
        }
    }

    /// upstream tryAcquireOrRenew.
    async fn try_acquire_or_renew(&mut self) -> bool {
        let mut record = self.record_now(Timestamp::now());

        // Fast path: we lead and our view is fresh; update straight away.
        if self.is_leader() && self.lease_valid(Instant::now()) && self.lease.is_some() {
            record.acquire_time = self.observed.acquire_time.clone();
            record.lease_transitions = self.observed.lease_transitions;
            match self.update(record.clone()).await {
                Ok(()) => {
                    self.set_observed(record);
                    return true;
                }
                Err(e) => {
                    tracing::debug!(lease = %self.name, error = %e, "optimistic lease update failed; reading it")
                }
            }
        }

        let current = match self.api.get_opt(&self.name).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(lease = %self.name, error = %e, "error retrieving lease lock");
                return false;
            }
        };
        let Some(current) = current else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(record.clone()),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(created) => {
                    self.lease = Some(created);
                    self.set_observed(record);
                    true
                }
                Err(e) => {
                    tracing::warn!(lease = %self.name, error = %e, "error initially creating lease lock");
                    false
                }
            };
        };
        let old = current.spec.clone().unwrap_or_default();
        self.lease = Some(current);
        if self.observed_raw.as_ref() != Some(&old) {
            self.set_observed(old.clone());
            self.observed_raw = Some(old.clone());
        }
        let held = old
            .holder_identity
            .as_deref()
            .is_some_and(|h| !h.is_empty());
        if held && self.lease_valid(Instant::now()) && !self.is_leader() {
            tracing::debug!(lease = %self.name, holder = ?old.holder_identity, "lease is held and has not yet expired");
            return false;
        }
        if self.is_leader() {
            record.acquire_time = old.acquire_time.clone();
            record.lease_transitions = old.lease_transitions;
        } else {
            record.lease_transitions = Some(old.lease_transitions.unwrap_or(0).saturating_add(1));
        }
        match self.update(record.clone()).await {
            Ok(()) => {
                self.set_observed(record);
                true
            }
            Err(e) => {
                tracing::warn!(lease = %self.name, error = %e, "failed to update lease");
                false
            }
        }
    }

    /// PUT the cached Lease with `spec`: fails with a conflict when someone
    /// else wrote it since we read it.
    async fn update(&mut self, spec: LeaseSpec) -> Result<(), LeaderElectionError> {
        let Some(mut lease) = self.lease.clone() else {
            return Err(LeaderElectionError::NotRead);
        };
        lease.spec = Some(spec);
        let written = self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await?;
        self.lease = Some(written);
        Ok(())
    }

    /// Hands the Lease back: holderIdentity cleared, leaseDurationSeconds
    /// 1, transitions kept (upstream tryRelease). Only if we still hold it.
    async fn release(&mut self) {
        let deadline = Instant::now() + self.config.renew_deadline;
        let done = tokio::time::timeout_at(deadline, async {
            loop {
                let current = match self.api.get_opt(&self.name).await {
                    Ok(Some(c)) => c,
                    Ok(None) => return,
                    Err(e) => {
                        tracing::warn!(lease = %self.name, error = %e, "error retrieving lease lock to release it");
                        return;
                    }
                };
                let old = current.spec.clone().unwrap_or_default();
                if old.holder_identity.as_deref() != Some(self.identity.as_str()) {
                    return;
                }
                let now = MicroTime(Timestamp::now());
                let record = LeaseSpec {
                    holder_identity: Some(String::new()),
                    lease_duration_seconds: Some(1),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: old.lease_transitions,
                    ..LeaseSpec::default()
                };
                self.lease = Some(current);
                match self.update(record.clone()).await {
                    Ok(()) => {
                        tracing::info!(lease = %self.name, "released lease");
                        self.set_observed(record);
                        return;
                    }
                    Err(LeaderElectionError::Api(kube::Error::Api(s))) if s.code == 409 => continue,
                    Err(e) => {
                        tracing::warn!(lease = %self.name, error = %e, "failed to release lease");
                        return;
                    }
                }
            }
        })
        .await;
        if done.is_err() {
            tracing::warn!(lease = %self.name, "timed out releasing lease");
        }
        self.report_holder();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_upstreams_and_valid() {
        let c = LeaderElectionConfig::default();
        assert_eq!(c.lease_duration, Duration::from_secs(15));
        assert_eq!(c.renew_deadline, Duration::from_secs(10));
        assert_eq!(c.retry_period, Duration::from_secs(2));
        c.validate().unwrap();
    }

    #[test]
    fn validation_matches_upstream() {
        let base = LeaderElectionConfig::default();
        let c = LeaderElectionConfig {
            renew_deadline: Duration::from_secs(15),
            ..base.clone()
        };
        assert!(matches!(
            c.validate(),
            Err(LeaderElectionError::LeaseNotLongerThanRenew)
        ));
        // renewDeadline must exceed 1.2 x retryPeriod.
        let c = LeaderElectionConfig {
            renew_deadline: Duration::from_millis(2400),
            ..base.clone()
        };
        assert!(matches!(
            c.validate(),
            Err(LeaderElectionError::RenewTooShort)
        ));
        let c = LeaderElectionConfig {
            renew_deadline: Duration::from_millis(2401),
            ..base.clone()
        };
        c.validate().unwrap();
        let c = LeaderElectionConfig {
            retry_period: Duration::ZERO,
            ..base
        };
        assert!(c.validate().is_err());
    }

    #[test]
    fn identity_is_hostname_underscore_uuid() {
        let id = default_identity();
        let (host, uuid) = id.rsplit_once('_').unwrap();
        assert_eq!(host, crate::hostname());
        assert!(uuid::Uuid::parse_str(uuid).is_ok());
        assert_ne!(default_identity(), id);
    }
}
