//! The analyzer's view of the policies in force: the same selection admission makes
//! (namespace, kind, name and the workload's labels, from the watchers), the mode
//! narrowed by the workload's `rightsizer.io/mode` annotation, the rules and strategy.

use std::collections::BTreeMap;
use std::sync::Arc;

use rightsizer_core::analysis::decide::PolicyView;
use rightsizer_core::cluster::opt_in::acts_on;
use rightsizer_core::cluster::ClusterFacts;
use rightsizer_core::object::MODE_ANNOTATION;
use rightsizer_core::policy::schema::{Mode, Policy};
use rightsizer_core::rules::Rules;
use rightsizer_core::sizing::annotated_mode;
use rightsizer_core::strategy::SEED;
use rightsizer_core::update::policy::UpdatePolicy;
use rightsizer_core::workload::WorkloadKey;

use crate::policies::store::PolicyStore;

/// Which rules apply to a workload, in which mode, with which strategy. The policy
/// store's lookup (`PoliciesLookup`) makes admission's selection; a plain closure
/// returning `Rules` works too (observe mode).
pub trait PolicyLookup: Send + Sync {
    fn rules(&self, workload: &WorkloadKey) -> Rules;
    /// The mode admission applies to this workload (commits only happen in enforce
    /// mode with the analyzer's `enforcement` switch on as well).
    fn mode(&self, _workload: &WorkloadKey) -> Mode {
        Mode::Observe
    }
    /// The memory strategy (`rightsizer_core::strategy::by_name`) for this workload; `seed`
    /// keeps the seed arithmetic of [`rightsizer_core::analysis::compute::decide`].
    fn recommender(&self, _workload: &WorkloadKey) -> String {
        SEED.to_string()
    }
    /// Everything at once (implementations that select a policy do it once here).
    fn view(&self, w: &WorkloadKey, enforcement: bool) -> PolicyView {
        PolicyView {
            rules: self.rules(w),
            mode: self.mode(w),
            enforcement,
            strategy: self.recommender(w),
        }
    }
}

impl<F> PolicyLookup for F
where
    F: Fn(&WorkloadKey) -> Rules + Send + Sync,
{
    fn rules(&self, workload: &WorkloadKey) -> Rules {
        self(workload)
    }
}

/// The seed rules everywhere, optionally enforcing everywhere.
#[derive(Debug, Clone, Copy, Default)]
pub struct DefaultPolicy {
    pub enforce: bool,
}

impl PolicyLookup for DefaultPolicy {
    fn rules(&self, _w: &WorkloadKey) -> Rules {
        Rules::default()
    }
    fn mode(&self, _w: &WorkloadKey) -> Mode {
        if self.enforce {
            Mode::Enforce
        } else {
            Mode::Observe
        }
    }
}

/// Looks workloads up in the policy store, selecting as admission does
/// (`PolicySet::select_workload`: the workload's own labels and its template's, as the
/// watchers hold them); without cluster facts, none.
pub struct PoliciesLookup {
    pub store: Arc<PolicyStore>,
    pub facts: Arc<dyn ClusterFacts>,
    /// The webhook's own namespace, which admission never touches (nor do the system
    /// namespaces).
    pub own_namespace: Option<String>,
}

impl PoliciesLookup {
    fn with_policy<T>(&self, w: &WorkloadKey, f: impl FnOnce(Option<&Policy>) -> T) -> T {
        let ns = self.facts.namespace(&w.namespace);
        let own = self.facts.workload_labels(w);
        let template = self.facts.template_labels(w);
        let set = self.store.current();
        let policy = set.select_workload(w, own.as_deref(), template.as_deref(), &ns.labels);
        f(policy.as_deref())
    }

    /// No policy: nothing is applied (admission leaves the object alone).
    fn mode_of(&self, w: &WorkloadKey, p: Option<&Policy>) -> Mode {
        // The opt-in label itself is checked where effects are carried out
        // (`Analyzer::execute`), with the watched labels.
        let protected = !acts_on(&w.namespace, None, self.own_namespace.as_deref());
        let Some(p) = p.filter(|_| !protected) else {
            return Mode::Off;
        };
        let annotations = self.facts.workload_annotations(w).unwrap_or_default();
        let annotations: &BTreeMap<String, String> = &annotations;
        annotated_mode(
            p.mode,
            annotations.get(MODE_ANNOTATION).map(String::as_str),
            &mut Vec::new(),
        )
    }
}

impl PoliciesLookup {
    /// The selected policy's `update:` section (off without a policy, and in the
    /// namespaces admission never touches).
    pub fn update_policy(&self, w: &WorkloadKey) -> UpdatePolicy {
        self.with_policy(w, |p| {
            if self.mode_of(w, p) == Mode::Off {
                return UpdatePolicy::default();
            }
            p.map(|p| p.update.clone()).unwrap_or_default()
        })
    }
}

impl PolicyLookup for PoliciesLookup {
    fn rules(&self, w: &WorkloadKey) -> Rules {
        self.with_policy(w, |p| p.map(|p| p.rules).unwrap_or_default())
    }

    /// The policy's `recommender`; without a policy, the seed rules as for `rules`.
    fn recommender(&self, w: &WorkloadKey) -> String {
        self.with_policy(w, |p| {
            p.map_or_else(|| SEED.to_string(), |p| p.recommender.clone())
        })
    }

    fn mode(&self, w: &WorkloadKey) -> Mode {
        self.with_policy(w, |p| self.mode_of(w, p))
    }

    fn view(&self, w: &WorkloadKey, enforcement: bool) -> PolicyView {
        self.with_policy(w, |p| PolicyView {
            rules: p.map(|p| p.rules).unwrap_or_default(),
            mode: self.mode_of(w, p),
            enforcement,
            strategy: p.map_or_else(|| SEED.to_string(), |p| p.recommender.clone()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rightsizer_core::cluster::NamespaceFacts;
    use rightsizer_core::workload::kind::WorkloadKind;

    type Map = BTreeMap<String, String>;

    /// Workload labels and annotations by name, as the watchers would hold them (and
    /// template labels, for the workloads in `.1`).
    struct Workloads(BTreeMap<String, (Map, Map)>, BTreeMap<String, Map>);

    impl ClusterFacts for Workloads {
        fn namespace(&self, _name: &str) -> Arc<NamespaceFacts> {
            Arc::new(NamespaceFacts::default())
        }
        fn priority_classes(&self) -> rightsizer_core::cluster::PriorityClasses {
            rightsizer_core::cluster::PriorityClasses::default()
        }
        fn workload_annotations(&self, k: &WorkloadKey) -> Option<Arc<BTreeMap<String, String>>> {
            self.0.get(&k.name).map(|w| Arc::new(w.1.clone()))
        }
        fn workload_labels(&self, k: &WorkloadKey) -> Option<Arc<BTreeMap<String, String>>> {
            self.0.get(&k.name).map(|w| Arc::new(w.0.clone()))
        }
        fn template_labels(&self, k: &WorkloadKey) -> Option<Arc<BTreeMap<String, String>>> {
            self.1.get(&k.name).map(|l| Arc::new(l.clone()))
        }
    }

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn mode_follows_admission_selection_labels_and_the_mode_annotation() {
        let store = Arc::new(PolicyStore::new());
        let policy = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: gold\n  namespace: rightsizer-system\n  labels:\n    rightsizer.io/policy: \"true\"\ndata:\n  policy.yaml: |\n    mode: enforce\n    selector:\n      labels: {tier: gold}\n";
        assert!(store.apply("cm/gold", policy).unwrap());
        let gold = map(&[("tier", "gold")]);
        let facts = Workloads(
            BTreeMap::from([
                ("web".to_string(), (gold.clone(), BTreeMap::new())),
                (
                    "watched".to_string(),
                    (gold.clone(), map(&[(MODE_ANNOTATION, "observe")])),
                ),
                (
                    "opted-out".to_string(),
                    (gold.clone(), map(&[(MODE_ANNOTATION, "off")])),
                ),
                ("plain".to_string(), (BTreeMap::new(), BTreeMap::new())),
            ]),
            BTreeMap::new(),
        );
        let lookup = PoliciesLookup {
            store,
            facts: Arc::new(facts),
            own_namespace: Some("rightsizer-system".into()),
        };
        for (ns, name, want) in [
            ("shop", "web", Mode::Enforce),
            ("shop", "watched", Mode::Observe),
            ("shop", "opted-out", Mode::Off),
            ("shop", "plain", Mode::Off),
            ("kube-system", "web", Mode::Off),
            ("rightsizer-system", "web", Mode::Off),
        ] {
            let w = WorkloadKey {
                namespace: ns.into(),
                kind: WorkloadKind::Deployment,
                name: name.into(),
            };
            assert_eq!(lookup.mode(&w), want, "{ns}/{name}");
            assert_eq!(lookup.view(&w, true).mode, want, "{ns}/{name}");
        }
    }

    /// A policy that selects on a pod-template label: admission (the Pod, which carries
    /// its template's labels) and the analyzer (the watchers' template labels) pick it
    /// both, through `PolicySet::select_workload`.
    #[test]
    fn admission_and_the_analyzer_pick_the_same_policy_on_template_labels() {
        use crate::admission::{AdmitConfig, Admitter};
        use rightsizer_core::recommendation::NoRecommendations;
        let store = Arc::new(PolicyStore::new());
        let cm = |name: &str, body: &str| {
            format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  namespace: rightsizer-system\n  labels:\n    rightsizer.io/policy: \"true\"\ndata:\n  policy.yaml: |\n{body}")
        };
        let all = cm("all", "    mode: observe\n");
        let gold = cm("gold", "    precedence: 10\n    mode: enforce\n    recommender: vpa\n    selector:\n      labels: {tier: gold}\n");
        assert!(store.apply("cm/all", &all).unwrap());
        assert!(store.apply("cm/gold", &gold).unwrap());
        // The Deployment's own metadata has no `tier`; its template has.
        let facts: Arc<dyn ClusterFacts> = Arc::new(Workloads(
            BTreeMap::from([("web".to_string(), (map(&[("app", "web")]), BTreeMap::new()))]),
            BTreeMap::from([("web".to_string(), map(&[("tier", "gold")]))]),
        ));
        let lookup = PoliciesLookup {
            store: store.clone(),
            facts: facts.clone(),
            own_namespace: None,
        };
        let w = WorkloadKey {
            namespace: "shop".into(),
            kind: WorkloadKind::Deployment,
            name: "web".into(),
        };
        let analyzer = lookup.view(&w, true);
        let admitter = Admitter::new(
            store,
            Arc::new(NoRecommendations),
            facts,
            AdmitConfig::default(),
        );
        let pod = serde_json::json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"generateName": "web-7d9f8-", "namespace": "shop",
                "labels": {"tier": "gold", "pod-template-hash": "7d9f8"},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-7d9f8",
                    "uid": "u", "controller": true}]},
            "spec": {"containers": [{"name": "app", "image": "app:1"}]}});
        let m = admitter.mutate_object(WorkloadKind::Pod, "shop", &pod);
        assert_eq!(m.workload.as_ref(), Some(&w));
        let admission = m.policy.expect("a policy selects the Pod");
        assert_eq!(admission.name, "gold");
        assert_eq!(
            (analyzer.mode, analyzer.strategy.as_str()),
            (Mode::Enforce, "vpa")
        );
        assert_eq!(admission.mode, analyzer.mode);
        assert_eq!(admission.recommender, analyzer.strategy);
    }
}
