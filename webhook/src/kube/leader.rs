//! Leader election with a coordination.k8s.io/v1 Lease. One replica holds the Lease
//! and renews it; the others retry and take over once it expires or is released.
//! Only the leader commits and writes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::{watch, Mutex};

use crate::kube::error::KubeError;
use crate::lock::LockExt;

/// The Lease's name.
pub const LEASE_NAME: &str = "rightsizer-leader";

/// Timing of the election.
#[derive(Debug, Clone, Copy)]
pub struct LeaseTimings {
    /// How long a Lease holds without renewal.
    pub lease_duration: Duration,
    /// How often the holder renews and the others retry.
    pub retry_period: Duration,
}

impl Default for LeaseTimings {
    fn default() -> Self {
        LeaseTimings {
            lease_duration: Duration::from_secs(15),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// This replica's view of the election.
pub struct Leader {
    api: Api<Lease>,
    identity: String,
    timings: LeaseTimings,
    leading: AtomicBool,
    /// Leadership ends here unless renewed: a replica that cannot reach the apiserver
    /// stops writing before another one may take over.
    valid_until: std::sync::Mutex<Option<Instant>>,
    changes: watch::Sender<bool>,
    /// Serializes steps (the loop's and `release`).
    step_lock: Mutex<()>,
    stopped: AtomicBool,
    gauge: Gauge,
}

impl Leader {
    pub fn new(
        client: Client,
        namespace: &str,
        identity: impl Into<String>,
        timings: LeaseTimings,
    ) -> Arc<Self> {
        Arc::new(Leader {
            api: Api::namespaced(client, namespace),
            identity: identity.into(),
            timings,
            leading: AtomicBool::new(false),
            valid_until: std::sync::Mutex::new(None),
            changes: watch::channel(false).0,
            step_lock: Mutex::new(()),
            stopped: AtomicBool::new(false),
            gauge: Gauge::default(),
        })
    }

    pub fn register_metrics(&self, registry: &mut prometheus_client::registry::Registry) {
        registry.register(
            "rightsizer_leader",
            "1 when this replica holds the leader Lease",
            self.gauge.clone(),
        );
    }

    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// Whether this replica leads now (holds an unexpired Lease).
    pub fn is_leader(&self) -> bool {
        self.leading.load(Ordering::Acquire)
            && self
                .valid_until
                .locked()
                .is_some_and(|t| Instant::now() < t)
    }

    /// Leadership changes (true: acquired, false: lost).
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.changes.subscribe()
    }

    fn set_leading(&self, leading: bool, valid_until: Option<Instant>) {
        *self.valid_until.locked() = valid_until;
        let was = self.leading.swap(leading, Ordering::AcqRel);
        self.gauge.set(i64::from(leading));
        if was != leading {
            tracing::info!(identity = %self.identity, leading, "leadership changed");
            self.changes.send_replace(leading);
        }
    }

    /// Acquire or renew once. Returns whether this replica leads afterwards.
    pub async fn step(&self) -> Result<bool, KubeError> {
        let _g = self.step_lock.lock().await;
        if self.stopped.load(Ordering::Acquire) {
            return Ok(false);
        }
        let started = Instant::now();
        let now = Timestamp::now();
        let secs = i32::try_from(self.timings.lease_duration.as_secs().max(1)).unwrap_or(i32::MAX);
        let existing = self
            .api
            .get_opt(LEASE_NAME)
            .await
            .map_err(KubeError::api("reading the leader Lease"))?;
        let result = match existing {
            None => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(LEASE_NAME.into()),
                        ..Default::default()
                    },
                    spec: Some(LeaseSpec {
                        holder_identity: Some(self.identity.clone()),
                        lease_duration_seconds: Some(secs),
                        acquire_time: Some(MicroTime(now)),
                        renew_time: Some(MicroTime(now)),
                        lease_transitions: Some(0),
                        ..Default::default()
                    }),
                };
                self.api.create(&PostParams::default(), &lease).await
            }
            Some(mut lease) => {
                let spec = lease.spec.get_or_insert_with(Default::default);
                let holder = spec.holder_identity.clone().unwrap_or_default();
                let ours = holder == self.identity;
                let expired = match (&spec.renew_time, spec.lease_duration_seconds) {
                    (Some(t), Some(d)) => t.0 + SignedDuration::from_secs(i64::from(d)) < now,
                    _ => true,
                };
                if !ours && !holder.is_empty() && !expired {
                    self.set_leading(false, None);
                    return Ok(false);
                }
                if !ours {
                    spec.holder_identity = Some(self.identity.clone());
                    spec.acquire_time = Some(MicroTime(now));
                    spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
                }
                spec.renew_time = Some(MicroTime(now));
                spec.lease_duration_seconds = Some(secs);
                // `replace` carries the resourceVersion read above: of two replicas
                // racing for an expired Lease, the second gets a conflict.
                self.api
                    .replace(LEASE_NAME, &PostParams::default(), &lease)
                    .await
            }
        };
        match result {
            Ok(_) => {
                // Count validity from before the request and stop a fifth early, so a
                // stalled leader steps down before another replica may take over.
                let d = self.timings.lease_duration;
                self.set_leading(true, Some(started + d - d / 5));
                Ok(true)
            }
            Err(kube::Error::Api(s)) if s.code == 409 => {
                self.set_leading(false, None);
                Ok(false)
            }
            Err(e) => Err(KubeError::api("writing the leader Lease")(e)),
        }
    }

    /// Run the election until `release` is called.
    pub async fn run(self: Arc<Self>) {
        while !self.stopped.load(Ordering::Acquire) {
            if let Err(e) = self.step().await {
                tracing::warn!(error = %e, "leader election step failed");
                // Keep leading only while the last renewal is valid (checked by
                // `is_leader`).
            }
            tokio::time::sleep(self.timings.retry_period).await;
        }
    }

    /// Stop taking part; if leading, give the Lease up so another replica takes over
    /// at once instead of after expiry.
    pub async fn release(&self) -> Result<(), KubeError> {
        let _g = self.step_lock.lock().await;
        self.stopped.store(true, Ordering::Release);
        let was_leading = self.leading.load(Ordering::Acquire);
        self.set_leading(false, None);
        if !was_leading {
            return Ok(());
        }
        let Some(mut lease) = self
            .api
            .get_opt(LEASE_NAME)
            .await
            .map_err(KubeError::api("reading the leader Lease"))?
        else {
            return Ok(());
        };
        let spec = lease.spec.get_or_insert_with(Default::default);
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime(Timestamp::now()));
        self.api
            .replace(LEASE_NAME, &PostParams::default(), &lease)
            .await
            .map_err(KubeError::api("releasing the leader Lease"))?;
        tracing::info!(identity = %self.identity, "released the leader Lease");
        Ok(())
    }
}
