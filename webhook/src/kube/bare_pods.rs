//! The bare Pods that can own their workload's `Rightsizing` (`Home::PodFacts`): for
//! each bare-Pod workload (keyed as the analyzer keys it, `names::bare_pod_name`), the
//! name and uid of one live Pod of it. Filled by whichever source an analyzer cycle
//! reads: the Pod watch each time it feeds the analyzer, or kube-state-metrics'
//! `kube_pod_info{created_by_kind="<none>"}` rows (`analyzer::ksm::HomeFacts`), so
//! the base install, which may not read Pods, knows them too.

use std::collections::HashMap;

use rightsizer_core::workload::names::bare_pod_name;
use rightsizer_core::workload::WorkloadKey;

use crate::lock::LockExt;

/// Namespace and workload name → (Pod name, uid). (Below `kube::facts`, which holds
/// it: no import back.)
#[derive(Default)]
pub struct BarePods(std::sync::Mutex<HashMap<(String, String), (String, String)>>);

impl BarePods {
    /// Replace what is known of `namespace` (every namespace when `None`) with these
    /// live bare Pods (namespace, name, uid): gone Pods are forgotten, so the map
    /// stays as large as the live bare Pods.
    pub fn refresh<'a>(
        &self,
        namespace: Option<&str>,
        live: impl IntoIterator<Item = (&'a str, &'a str, &'a str)>,
    ) {
        let mut m = self.0.locked();
        m.retain(|(ns, _), _| namespace.is_some_and(|n| n != ns));
        for (ns, pod, uid) in live {
            let key = (ns.to_string(), bare_pod_name(pod, "").to_string());
            m.insert(key, (pod.to_string(), uid.to_string()));
        }
    }

    /// A live Pod (name, uid) of a bare-Pod workload.
    pub fn pod(&self, w: &WorkloadKey) -> Option<(String, String)> {
        self.0
            .locked()
            .get(&(w.namespace.clone(), w.name.clone()))
            .cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rightsizer_core::workload::kind::WorkloadKind;

    fn key(ns: &str, name: &str) -> WorkloadKey {
        WorkloadKey {
            namespace: ns.into(),
            kind: WorkloadKind::Pod,
            name: name.into(),
        }
    }

    #[test]
    fn pods_are_found_by_their_workload_and_forgotten_when_gone() {
        let b = BarePods::default();
        b.refresh(
            None,
            [
                ("a", "debug", "u1"),
                ("a", "runner-x7k2p", "u2"),
                ("b", "p", "u3"),
            ],
        );
        assert_eq!(
            b.pod(&key("a", "debug")),
            Some(("debug".into(), "u1".into()))
        );
        // A generated name is known by its family, as the analyzer keys it.
        assert_eq!(
            b.pod(&key("a", "runner")),
            Some(("runner-x7k2p".into(), "u2".into()))
        );
        // A namespace's refresh leaves the others alone.
        b.refresh(Some("a"), [("a", "debug", "u4")]);
        assert_eq!(
            b.pod(&key("a", "debug")),
            Some(("debug".into(), "u4".into()))
        );
        assert_eq!(b.pod(&key("a", "runner")), None);
        assert_eq!(b.pod(&key("b", "p")), Some(("p".into(), "u3".into())));
    }
}
