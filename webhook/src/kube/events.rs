//! Kubernetes Events on workloads and policy ConfigMaps (core/v1 Events: served by
//! every apiserver version and shown by `kubectl describe` and `kubectl get events`).
//! Deduplicated (the same object, reason and message within a window give one Event)
//! and rate-limited (a cap per minute over all objects), so a flapping analyzer cannot
//! flood the apiserver.
//!
//! Posted here rather than through kube's `kube::runtime::events::Recorder`, measured
//! against the v1.20.2 apiserver of tests/cluster: that recorder writes events.k8s.io/v1
//! Events, whose API refuses `deprecatedSource` (422 "source: needs to be unset"), so in
//! the core/v1 view every consumer of `kubectl get events` reads, `source` (component
//! `rightsizer`, the replica as host), `firstTimestamp`, `lastTimestamp` and `count` come
//! back empty; and a second Event with the same reason on the same object within six
//! minutes becomes a PATCH of the first one's series that keeps the first message (the
//! new one is lost), where each distinct message must be seen. It would also need
//! `create` and `patch` on `events.k8s.io` where this needs `create` on core events.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

use crate::kube::error::KubeError;
use crate::lock::LockExt;

/// The component named in Events.
pub const COMPONENT: &str = "rightsizer";

/// What became of one publish call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Published {
    Posted,
    /// The same Event was posted within the window.
    Deduplicated,
    /// Over the per-minute cap.
    RateLimited,
}

impl Published {
    fn as_str(self) -> &'static str {
        match self {
            Published::Posted => "posted",
            Published::Deduplicated => "deduplicated",
            Published::RateLimited => "rate_limited",
        }
    }
}

/// The object an Event is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Target {
    pub api_version: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub uid: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Normal,
    Warning,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

/// Limits of the recorder.
#[derive(Debug, Clone, Copy)]
pub struct EventLimits {
    /// Identical Events within this window are posted once.
    pub dedup_window: Duration,
    /// At most this many Events per minute in total.
    pub per_minute: usize,
}

impl Default for EventLimits {
    fn default() -> Self {
        EventLimits {
            dedup_window: Duration::from_secs(600),
            per_minute: 60,
        }
    }
}

struct State {
    /// Hash of (target, reason, message) -> when posted.
    seen: HashMap<u64, Instant>,
    /// Post times within the last minute.
    recent: Vec<Instant>,
}

/// Posts Events for rightsizer.
pub struct Recorder {
    client: Client,
    /// Which replica posted (pod name), shown as the Event's source host.
    instance: String,
    limits: EventLimits,
    state: Mutex<State>,
    results: Family<ResultLabel, Counter>,
}

impl Recorder {
    pub fn new(client: Client, instance: impl Into<String>, limits: EventLimits) -> Self {
        Recorder {
            client,
            instance: instance.into(),
            limits,
            state: Mutex::new(State {
                seen: HashMap::new(),
                recent: Vec::new(),
            }),
            results: Family::default(),
        }
    }

    pub fn register_metrics(&self, registry: &mut prometheus_client::registry::Registry) {
        registry.register(
            "rightsizer_events",
            "Kubernetes Events rightsizer wanted to post, by result",
            self.results.clone(),
        );
    }

    /// Decide whether to post; records the post when it goes ahead.
    fn admit(&self, key: u64) -> Published {
        let now = Instant::now();
        let mut s = self.state.locked();
        let window = self.limits.dedup_window;
        s.seen.retain(|_, t| now.duration_since(*t) < window);
        s.recent
            .retain(|t| now.duration_since(*t) < Duration::from_secs(60));
        if s.seen.contains_key(&key) {
            return Published::Deduplicated;
        }
        if s.recent.len() >= self.limits.per_minute {
            return Published::RateLimited;
        }
        s.seen.insert(key, now);
        s.recent.push(now);
        Published::Posted
    }

    /// Post an Event about `target` unless an identical one went out within the window
    /// or the rate cap is reached.
    pub async fn publish(
        &self,
        target: &Target,
        type_: EventType,
        reason: &str,
        message: &str,
    ) -> Result<Published, KubeError> {
        let mut h = DefaultHasher::new();
        (target, reason, message).hash(&mut h);
        let key = h.finish();
        let decision = self.admit(key);
        if decision == Published::Posted {
            if let Err(e) = self.post(target, type_, reason, message).await {
                // Not posted: let a retry through.
                self.state.locked().seen.remove(&key);
                self.results
                    .get_or_create(&ResultLabel { result: "failed" })
                    .inc();
                return Err(e);
            }
        }
        self.results
            .get_or_create(&ResultLabel {
                result: decision.as_str(),
            })
            .inc();
        Ok(decision)
    }

    async fn post(
        &self,
        target: &Target,
        type_: EventType,
        reason: &str,
        message: &str,
    ) -> Result<(), KubeError> {
        let now = Timestamp::now();
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let event = Event {
            metadata: ObjectMeta {
                name: Some(format!("{}.{nanos:x}", target.name)),
                namespace: Some(target.namespace.clone()),
                ..Default::default()
            },
            involved_object: ObjectReference {
                api_version: Some(target.api_version.clone()),
                kind: Some(target.kind.clone()),
                namespace: Some(target.namespace.clone()),
                name: Some(target.name.clone()),
                uid: target.uid.clone(),
                ..Default::default()
            },
            reason: Some(reason.to_string()),
            // The apiserver refuses messages over 1 kB.
            message: Some(truncate(message, 1000)),
            type_: Some(
                match type_ {
                    EventType::Normal => "Normal",
                    EventType::Warning => "Warning",
                }
                .to_string(),
            ),
            count: Some(1),
            first_timestamp: Some(Time(now)),
            last_timestamp: Some(Time(now)),
            event_time: None::<MicroTime>,
            source: Some(EventSource {
                component: Some(COMPONENT.to_string()),
                host: Some(self.instance.clone()),
            }),
            reporting_component: Some(COMPONENT.to_string()),
            reporting_instance: Some(self.instance.clone()),
            ..Default::default()
        };
        Api::<Event>::namespaced(self.client.clone(), &target.namespace)
            .create(&PostParams::default(), &event)
            .await
            .map_err(KubeError::api(format!(
                "posting Event {reason} on {} {}/{}",
                target.kind, target.namespace, target.name
            )))?;
        Ok(())
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}
