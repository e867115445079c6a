//! Pod-level checks on the sized containers: the LimitRange's Pod bounds and the room left
//! in ResourceQuotas, both on the Pod's effective totals (`Lists::effective`). Sizing that
//! breaks one is undone by the caller, so it is never the reason a Pod is refused.

use k8s_openapi::api::core::v1::LimitRangeSpec;
use serde_json::Value;

use crate::cluster::quota_scope::PodUsage;
use crate::cluster::QuotaRoom;
use crate::quantity::Resource;
use crate::sizing::containers::{Lists, Totals};
use crate::sizing::limits;
use crate::workload::kind::{PodCount, WorkloadKind};

/// Whether the Pod's totals break a LimitRange's `type: Pod` bounds (`t` summed with the
/// container defaults the LimitRanger fills in, see `pod_violation`).
pub fn bounds_violation(ranges: &[LimitRangeSpec], r: Resource, t: Totals) -> Option<String> {
    let b = limits::bounds(ranges, "Pod", r);
    if let Some(ratio) = b.ratio {
        if t.limit > 0 && limits::above_ratio(t.limit, t.request, ratio) {
            return Some(format!(
                "the Pod total would exceed the LimitRange Pod maxLimitRequestRatio {ratio}"
            ));
        }
    }
    if let Some(max) = b.max {
        if t.limit > max || t.request > max {
            return Some(format!(
                "the Pod total would exceed the LimitRange Pod max {}",
                r.format(max)
            ));
        }
    }
    if let Some(min) = b.min {
        if t.request < min {
            return Some(format!(
                "the Pod total would be below the LimitRange Pod min {}",
                r.format(min)
            ));
        }
    }
    None
}

/// How many Pods one sized object stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pods {
    /// A Pod.
    One,
    /// A template with a replica count. `running`: the object exists already (an update),
    /// so Pods made from the template as declared are taken to hold quota now.
    Replicas { n: u64, running: bool },
    /// A template whose Pod count is not in the object (a DaemonSet: one per node; Knative:
    /// autoscaled).
    Unknown(WorkloadKind),
}

/// The Pod count of an admitted object.
pub fn pods_of(kind: WorkloadKind, obj: &Value) -> Pods {
    let count = |ptr: &str| obj.pointer(ptr).and_then(Value::as_u64).unwrap_or(1);
    // On CREATE the apiserver has not assigned a uid yet.
    let running = obj
        .pointer("/metadata/uid")
        .and_then(Value::as_str)
        .is_some_and(|u| !u.is_empty());
    let n = match kind.pod_count() {
        PodCount::One => return Pods::One,
        PodCount::Replicas(ptr) => count(ptr),
        PodCount::Unknown => return Pods::Unknown(kind),
    };
    Pods::Replicas { n, running }
}

/// How many Pods a quota that starts counting the object's Pods would count: every
/// replica (Pods made from the template as declared were not counted by it), one for a
/// Pod or where the count is unknown.
pub fn newly_counted_pods(pods: Pods) -> u64 {
    match pods {
        Pods::One | Pods::Unknown(_) => 1,
        Pods::Replicas { n, .. } => n,
    }
}

/// What the Pod spec would add to a quota that starts counting it (see
/// [`crate::cluster::quota_scope::PodUsage`]).
pub fn usage(lists: &Lists) -> PodUsage {
    let mut out = PodUsage::default();
    for r in Resource::ALL {
        let t = lists.effective(r);
        out.totals
            .insert(format!("requests.{}", r.as_str()), t.request);
        out.totals.insert(format!("limits.{}", r.as_str()), t.limit);
        // Walked key by key: a formatted pointer per container was a tenth of a Pod review.
        let set = |side: &str| {
            lists.entries().all(|(_, _, c)| {
                c.get("resources")
                    .and_then(|x| x.get(side))
                    .and_then(|x| x.get(r.as_str()))
                    .is_some_and(|v| !v.is_null())
            })
        };
        // A request left unset is defaulted from the limit by the apiserver.
        if !(set("requests") || set("limits")) {
            out.unset.push(format!("requests.{}", r.as_str()));
        }
        if !set("limits") {
            out.unset.push(format!("limits.{}", r.as_str()));
        }
    }
    out
}

/// The quota check's verdict: a violation (undo the raise) or a note for the user.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct QuotaVerdict {
    pub violation: Option<String>,
    pub warning: Option<String>,
}

/// Whether raising one Pod's totals from `before` to `after` fits the quotas' room.
///
/// Templates are checked per replica × replicas, because every Pod of the rollout carries
/// the raise and a Pod refused half-way leaves the workload degraded: the first new Pod
/// must fit beside the old ones (a rolling update surges before it scales down), and all
/// replicas together must fit once the old Pods are gone. On an update the old Pods are
/// taken to run the template as declared, so only the raise over it counts for the
/// second check; on a create nothing runs yet and every replica counts whole. Where the
/// Pod count is unknown, the check is per Pod with a warning that the rollout may exceed it.
pub fn quota_check(
    quotas: &[QuotaRoom],
    r: Resource,
    before: Totals,
    after: Totals,
    pods: Pods,
) -> QuotaVerdict {
    let mut verdict = QuotaVerdict::default();
    for q in quotas {
        for (side, was, now) in [
            ("requests", before.request, after.request),
            ("limits", before.limit, after.limit),
        ] {
            if now <= was {
                continue;
            }
            let key = format!("{side}.{}", r.as_str());
            let Some(&room) = q.room.get(&key) else {
                continue;
            };
            let f = |v: u64| r.format(v);
            let fail = match pods {
                Pods::One => (now > room).then(|| format!("the Pod would need {}", f(now))),
                Pods::Replicas { n: 0, .. } => None,
                Pods::Replicas { n, running } => {
                    let all = if running {
                        n.saturating_mul(now - was)
                    } else {
                        n.saturating_mul(now)
                    };
                    if now > room {
                        Some(format!("a new Pod would need {}", f(now)))
                    } else if all > room {
                        let more = if running { " more" } else { "" };
                        Some(format!("{n} replicas would need {}{more}", f(all)))
                    } else {
                        None
                    }
                }
                Pods::Unknown(kind) => {
                    if now <= room && verdict.warning.is_none() {
                        verdict.warning = Some(format!(
                            "{key}: checked per Pod against ResourceQuota {} ({} left): the {kind}'s Pod count is not known here and its rollout may exceed it",
                            q.name,
                            f(room)
                        ));
                    }
                    (now > room).then(|| format!("a new Pod would need {}", f(now)))
                }
            };
            if let Some(need) = fail {
                verdict.violation = Some(format!(
                    "{need} of {key} but ResourceQuota {} has {} left",
                    q.name,
                    f(room)
                ));
                verdict.warning = None;
                return verdict;
            }
        }
    }
    verdict
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;
    use serde_json::json;
    use std::collections::BTreeMap;

    const MI: u64 = 1 << 20;

    fn quota(left_mi: u64) -> Vec<QuotaRoom> {
        vec![QuotaRoom {
            name: "q".into(),
            room: BTreeMap::from([("requests.memory".to_string(), left_mi * MI)]),
            ..Default::default()
        }]
    }
    fn t(request_mi: u64) -> Totals {
        Totals {
            request: request_mi * MI,
            limit: 0,
        }
    }

    #[rstest]
    #[case::pod_fits(Pods::One, 100, 298, 298, false)]
    #[case::pod_over(Pods::One, 100, 320, 298, true)]
    // the case: a template raised to 320Mi with 298Mi left
    #[case::template_first_pod_over(Pods::Replicas { n: 1, running: true }, 100, 320, 298, true)]
    #[case::create_all_replicas_count(Pods::Replicas { n: 3, running: false }, 100, 120, 298, true)]
    #[case::create_fits(Pods::Replicas { n: 2, running: false }, 100, 140, 298, false)]
    // update: 3 × (200 − 100) = 300Mi more than the 298Mi left
    #[case::update_raise_over(Pods::Replicas { n: 3, running: true }, 100, 200, 298, true)]
    #[case::update_raise_fits(Pods::Replicas { n: 2, running: true }, 100, 200, 298, false)]
    #[case::scaled_to_zero(Pods::Replicas { n: 0, running: false }, 100, 900, 298, false)]
    #[case::unknown_per_pod(Pods::Unknown(WorkloadKind::DaemonSet), 100, 320, 298, true)]
    #[case::lowering_never_violates(Pods::One, 900, 800, 298, false)]
    fn quota_table(
        #[case] pods: Pods,
        #[case] before: u64,
        #[case] after: u64,
        #[case] left: u64,
        #[case] violates: bool,
    ) {
        let v = quota_check(&quota(left), Resource::Memory, t(before), t(after), pods);
        assert_eq!(v.violation.is_some(), violates, "{v:?}");
    }

    #[test]
    fn unknown_pod_count_warns_when_it_fits_per_pod() {
        let v = quota_check(
            &quota(298),
            Resource::Memory,
            t(100),
            t(200),
            Pods::Unknown(WorkloadKind::DaemonSet),
        );
        assert!(v.violation.is_none());
        assert!(v.warning.unwrap().contains("rollout may exceed"));
    }

    #[rstest]
    #[case::pod(json!({"kind": "Pod"}), WorkloadKind::Pod, Pods::One)]
    #[case::new_deployment(json!({"spec": {"replicas": 3}}), WorkloadKind::Deployment, Pods::Replicas { n: 3, running: false })]
    #[case::existing_default_replicas(json!({"metadata": {"uid": "u"}, "spec": {}}), WorkloadKind::StatefulSet, Pods::Replicas { n: 1, running: true })]
    #[case::cronjob(json!({"spec": {"jobTemplate": {"spec": {"parallelism": 4}}}}), WorkloadKind::CronJob, Pods::Replicas { n: 4, running: false })]
    #[case::daemonset(json!({}), WorkloadKind::DaemonSet, Pods::Unknown(WorkloadKind::DaemonSet))]
    fn pod_counts(#[case] obj: Value, #[case] kind: WorkloadKind, #[case] want: Pods) {
        assert_eq!(pods_of(kind, &obj), want);
    }
}
