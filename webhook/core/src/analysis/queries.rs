//! The PromQL the analyzer runs. Every query is aggregated on the server by
//! `namespace, pod, container` (or by workload/revision), so one query answers for
//! every container in scope and the number of queries per cycle is a constant.
//!
//! Memory is read from both `container_memory_working_set_bytes` and
//! `container_memory_rss`; each figure (avg, p95, max) is the larger of the two
//! signals, so RSS spikes above the working set are not missed.

/// Which time window a per-container figure covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Window {
    Short,
    Long,
}

/// What a query answers; the analyzer dispatches results on this.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QueryKind {
    MemAvg(Window),
    MemP95(Window),
    MemMax(Window),
    /// Number of working-set samples.
    Samples(Window),
    /// When working-set samples start in the long window (to a slice of W/96).
    FirstSample,
    CpuAvg(Window),
    CpuP95(Window),
    CpuMax(Window),
    PodOwner,
    ReplicaSetOwner,
    JobOwner,
    /// Pods carrying Knative serving labels (when kube-state-metrics exports them).
    KnativePodLabels,
    /// Live bare Pods (no controller) with their uid: the owners of bare-Pod workloads'
    /// `Rightsizing`s where no Pod watch runs.
    BarePods,
    Requests,
    Limits,
    /// Memory limit of containers whose last termination was an OOM kill.
    OomLimit,
    /// Resources an HPA scales a workload on (utilization targets).
    Hpa,
    KnativeConcurrencyP95,
    KnativeTarget,
    KnativeQueueDepthP95,
    /// Live containers per namespace, to decide whether to split by namespace.
    NamespaceSizes,
}

impl QueryKind {
    /// Answered by kube-state-metrics series (`kube_*`); `rightsizer::analyzer::ksm` reads the same
    /// facts from the Kubernetes API when a cluster does not run it.
    pub fn from_kube_state_metrics(self) -> bool {
        matches!(
            self,
            QueryKind::PodOwner
                | QueryKind::ReplicaSetOwner
                | QueryKind::JobOwner
                | QueryKind::KnativePodLabels
                | QueryKind::BarePods
                | QueryKind::Requests
                | QueryKind::Limits
                | QueryKind::OomLimit
                | QueryKind::Hpa
        )
    }
}

/// What a per-interval range query answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IntervalKind {
    Max,
    Avg,
    Samples,
}

/// Settings the queries depend on.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryConfig {
    pub short_window_secs: u64,
    pub long_window_secs: u64,
    /// `name="value"` matcher added to every selector, for a Prometheus that
    /// serves several clusters (e.g. `cluster="prod-eu"`).
    pub cluster_matcher: Option<String>,
    /// Only this namespace (`recommend --namespace`).
    pub namespace: Option<String>,
}

impl Default for QueryConfig {
    fn default() -> Self {
        QueryConfig {
            short_window_secs: 15 * 60,
            long_window_secs: 24 * 3600,
            cluster_matcher: None,
            namespace: None,
        }
    }
}

/// Knative metric names: the older OpenCensus names and the newer OpenTelemetry ones,
/// with the label names each uses for namespace, service, configuration and revision.
struct KnNames {
    metric: &'static str,
    ns: &'static str,
    svc: &'static str,
    cfg: &'static str,
    rev: &'static str,
}

const KN_OLD_LABELS: (&str, &str, &str, &str) = (
    "namespace_name",
    "service_name",
    "configuration_name",
    "revision_name",
);
const KN_NEW_LABELS: (&str, &str, &str, &str) = (
    "k8s_namespace_name",
    "kn_service_name",
    "kn_configuration_name",
    "kn_revision_name",
);

fn kn(
    metric: &'static str,
    labels: (&'static str, &'static str, &'static str, &'static str),
) -> KnNames {
    KnNames {
        metric,
        ns: labels.0,
        svc: labels.1,
        cfg: labels.2,
        rev: labels.3,
    }
}

/// Labels Knative results are normalised to.
/// Owner rows of the controller only (and `<none>` rows): owners that do not control
/// an object do not make it part of their workload (as in `workload::resolve::controller`).
const CONTROLLER_ONLY: &str = r#"owner_is_controller!="false""#;

pub const KN_NS: &str = "kn_ns";
pub const KN_SVC: &str = "kn_svc";
pub const KN_CFG: &str = "kn_cfg";
pub const KN_REV: &str = "kn_rev";

fn dur(secs: u64) -> String {
    format!("{secs}s")
}

/// Subquery resolution: about 720 points per window, never finer than a minute.
fn step(secs: u64) -> u64 {
    (secs / 720).max(60)
}

/// Builds the query texts for one scope (all namespaces, or a set of them).
pub struct Builder<'a> {
    cfg: &'a QueryConfig,
    /// Extra matchers (cluster, namespace scope), already joined with commas.
    common: String,
}

impl<'a> Builder<'a> {
    /// `namespaces`: `None` for everything, or the namespaces of one split.
    pub fn new(cfg: &'a QueryConfig, namespaces: Option<&[String]>) -> Self {
        let mut parts = Vec::new();
        if let Some(c) = &cfg.cluster_matcher {
            parts.push(c.clone());
        }
        if let Some(ns) = &cfg.namespace {
            parts.push(format!(
                "namespace=\"{}\"",
                ns.replace('\\', "\\\\").replace('"', "\\\"")
            ));
        }
        if let Some(ns) = namespaces {
            let alt: Vec<String> = ns.iter().map(|n| regex_escape(n)).collect();
            parts.push(format!("namespace=~\"{}\"", alt.join("|")));
        }
        Builder {
            cfg,
            common: parts.join(","),
        }
    }

    fn sel(&self, metric: &str, extra: &str) -> String {
        let mut m: Vec<&str> = Vec::new();
        if !extra.is_empty() {
            m.push(extra);
        }
        if !self.common.is_empty() {
            m.push(&self.common);
        }
        format!("{metric}{{{}}}", m.join(","))
    }

    fn window(&self, w: Window) -> u64 {
        match w {
            Window::Short => self.cfg.short_window_secs,
            Window::Long => self.cfg.long_window_secs,
        }
    }

    fn container_sel(&self, metric: &str) -> String {
        self.sel(metric, r#"container!="",container!="POD""#)
    }

    /// `f` (with `@` standing for the range selector) over working set and RSS,
    /// the larger per container.
    fn mem_stat(&self, f: &str, w: Window) -> String {
        let r = dur(self.window(w));
        let ws = self.container_sel("container_memory_working_set_bytes");
        let rss = self.container_sel("container_memory_rss");
        format!(
            "max by (namespace,pod,container) (label_replace({},\"signal\",\"ws\",\"\",\"\") or label_replace({},\"signal\",\"rss\",\"\",\"\"))",
            f.replace('@', &format!("{ws}[{r}]")),
            f.replace('@', &format!("{rss}[{r}]"))
        )
    }

    /// The per-interval memory aggregates for `query_range` at step = `width`
    /// (max, avg: the larger of working set and RSS; samples: working-set count), one
    /// answer per pod-container per step. Three queries whatever the cluster's size.
    pub fn memory_intervals(&self, width: u32) -> [(IntervalKind, String); 3] {
        let r = format!("{width}s");
        let ws = self.container_sel("container_memory_working_set_bytes");
        let rss = self.container_sel("container_memory_rss");
        let both = |f: &str| {
            format!(
                "max by (namespace,pod,container) (label_replace({f}({ws}[{r}]),\"signal\",\"ws\",\"\",\"\") or label_replace({f}({rss}[{r}]),\"signal\",\"rss\",\"\",\"\"))"
            )
        };
        [
            (IntervalKind::Max, both("max_over_time")),
            (IntervalKind::Avg, both("avg_over_time")),
            (
                IntervalKind::Samples,
                format!("sum by (namespace,pod,container) (count_over_time({ws}[{r}]))"),
            ),
        ]
    }

    /// The owner queries (pods, ReplicaSets, Jobs, Knative pod labels) over the long window.
    pub fn owners(&self) -> Vec<(QueryKind, String)> {
        self.scoped()
            .into_iter()
            .filter(|(k, _)| {
                matches!(
                    k,
                    QueryKind::PodOwner
                        | QueryKind::ReplicaSetOwner
                        | QueryKind::JobOwner
                        | QueryKind::KnativePodLabels
                )
            })
            .collect()
    }

    fn cpu_rate(&self) -> String {
        format!(
            "rate({}[5m])",
            self.container_sel("container_cpu_usage_seconds_total")
        )
    }

    /// The queries that depend on the namespace scope.
    pub fn scoped(&self) -> Vec<(QueryKind, String)> {
        let mut out = Vec::new();
        for w in [Window::Short, Window::Long] {
            let secs = self.window(w);
            let r = dur(secs);
            out.push((QueryKind::MemAvg(w), self.mem_stat("avg_over_time(@)", w)));
            out.push((
                QueryKind::MemP95(w),
                self.mem_stat("quantile_over_time(0.95,@)", w),
            ));
            out.push((QueryKind::MemMax(w), self.mem_stat("max_over_time(@)", w)));
            out.push((
                QueryKind::Samples(w),
                format!(
                    "sum by (namespace,pod,container) (count_over_time({}[{r}]))",
                    self.container_sel("container_memory_working_set_bytes")
                ),
            ));
            let sub = format!("{}[{r}:{}s]", self.cpu_rate(), step(secs));
            // Averaged over the 5m rates (not rate over the window), so a pod that ran
            // for part of the window is not diluted by the time it did not exist.
            out.push((
                QueryKind::CpuAvg(w),
                format!("max by (namespace,pod,container) (avg_over_time({sub}))"),
            ));
            out.push((
                QueryKind::CpuP95(w),
                format!("max by (namespace,pod,container) (quantile_over_time(0.95, {sub}))"),
            ));
            out.push((
                QueryKind::CpuMax(w),
                format!("max by (namespace,pod,container) (max_over_time({sub}))"),
            ));
        }
        let long = self.cfg.long_window_secs;
        let lr = dur(long);
        out.push((
            QueryKind::FirstSample,
            // End of the first coarse slice (W/96) holding a sample: history is
            // under-estimated by less than one slice, never over-estimated. Much cheaper
            // than timestamp() of the raw series at every subquery step.
            {
                let slice = (long / 96).max(60);
                format!(
                    "min by (namespace,pod,container) (min_over_time(timestamp(last_over_time({}[{slice}s]))[{lr}:{slice}s]))",
                    self.container_sel("container_memory_working_set_bytes"),
                )
            },
        ));
        out.push((
            QueryKind::PodOwner,
            format!(
                "max by (namespace,pod,owner_kind,owner_name) (max_over_time({}[{lr}]))",
                self.sel("kube_pod_owner", CONTROLLER_ONLY)
            ),
        ));
        out.push((
            QueryKind::ReplicaSetOwner,
            format!(
                "max by (namespace,replicaset,owner_kind,owner_name) (max_over_time({}[{lr}]))",
                self.sel("kube_replicaset_owner", CONTROLLER_ONLY)
            ),
        ));
        out.push((
            QueryKind::JobOwner,
            format!(
                "max by (namespace,job_name,owner_kind,owner_name) (max_over_time({}[{lr}]))",
                self.sel("kube_job_owner", CONTROLLER_ONLY)
            ),
        ));
        out.push((
            QueryKind::KnativePodLabels,
            format!(
                "max by (namespace,pod,label_serving_knative_dev_service,label_serving_knative_dev_configuration) (max_over_time({}[{lr}]))",
                self.sel("kube_pod_labels", r#"label_serving_knative_dev_configuration!="""#)
            ),
        ));
        // Live now (instant, 5m lookback), not over the window: the uid becomes an owner
        // reference, and one to a deleted Pod would have the garbage collector remove
        // the Rightsizing at once.
        out.push((
            QueryKind::BarePods,
            format!(
                "max by (namespace,pod,uid) ({})",
                self.sel("kube_pod_info", r#"created_by_kind="<none>",uid!="""#)
            ),
        ));
        // Current values: what the newest pods run with (instant, 5m lookback).
        for (kind, metric) in [
            (QueryKind::Requests, "kube_pod_container_resource_requests"),
            (QueryKind::Limits, "kube_pod_container_resource_limits"),
        ] {
            out.push((
                kind,
                format!(
                    "max by (namespace,pod,container,resource) ({})",
                    self.sel(metric, r#"resource=~"memory|cpu""#)
                ),
            ));
        }
        out.push((
            QueryKind::OomLimit,
            format!(
                "max by (namespace,pod,container) (max_over_time({}[{lr}])) and on (namespace,pod,container) (max_over_time({}[{lr}]) == 1)",
                self.sel("kube_pod_container_resource_limits", r#"resource="memory""#),
                self.sel(
                    "kube_pod_container_status_last_terminated_reason",
                    r#"reason="OOMKilled""#
                ),
            ),
        ));
        out.push((
            QueryKind::Hpa,
            format!(
                "max by (namespace,scaletargetref_kind,scaletargetref_name,metric_name) ({} * on (namespace,horizontalpodautoscaler) group_left (scaletargetref_kind,scaletargetref_name) max by (namespace,horizontalpodautoscaler,scaletargetref_kind,scaletargetref_name) ({}))",
                self.sel(
                    "kube_horizontalpodautoscaler_spec_target_metric",
                    r#"metric_name=~"cpu|memory",metric_target_type="utilization""#
                ),
                self.sel("kube_horizontalpodautoscaler_info", "")
            ),
        ));
        out
    }

    /// A Knative figure over both naming generations, normalised to `kn_*` labels.
    fn kn_stat(&self, f: &str, old: &'static str, new: &'static str, w: Window) -> String {
        let r = dur(self.window(w));
        let parts: Vec<String> = [kn(old, KN_OLD_LABELS), kn(new, KN_NEW_LABELS)]
            .iter()
            .map(|n| {
                let mut e = f.replace('@', &format!("{}[{r}]", self.kn_sel(n)));
                for (to, from) in [
                    (KN_NS, n.ns),
                    (KN_SVC, n.svc),
                    (KN_CFG, n.cfg),
                    (KN_REV, n.rev),
                ] {
                    e = format!("label_replace({e},\"{to}\",\"$1\",\"{from}\",\"(.*)\")");
                }
                e
            })
            .collect();
        format!(
            "max by ({KN_NS},{KN_SVC},{KN_CFG},{KN_REV}) ({})",
            parts.join(" or ")
        )
    }

    fn kn_sel(&self, n: &KnNames) -> String {
        // Knative metrics name the namespace differently; only the cluster matcher applies.
        match &self.cfg.cluster_matcher {
            Some(c) => format!("{}{{{c}}}", n.metric),
            None => n.metric.to_string(),
        }
    }

    /// Queries that are not split by namespace (Knative revisions, namespace sizes).
    pub fn global(&self) -> Vec<(QueryKind, String)> {
        vec![
            (
                QueryKind::KnativeConcurrencyP95,
                self.kn_stat(
                    "quantile_over_time(0.95,@)",
                    "autoscaler_stable_request_concurrency",
                    "kn_revision_concurrency_stable",
                    Window::Long,
                ),
            ),
            (
                QueryKind::KnativeTarget,
                self.kn_stat(
                    "last_over_time(@)",
                    "autoscaler_target_concurrency_per_pod",
                    "kn_revision_concurrency_target",
                    Window::Short,
                ),
            ),
            (
                QueryKind::KnativeQueueDepthP95,
                self.kn_stat(
                    "quantile_over_time(0.95,@)",
                    "revision_queue_depth",
                    "kn_serving_queue_depth",
                    Window::Long,
                ),
            ),
        ]
    }

    pub fn namespace_sizes(&self) -> String {
        format!(
            "count by (namespace) (group by (namespace,pod,container) ({}))",
            self.container_sel("container_memory_working_set_bytes")
        )
    }
}

/// Escape a namespace name for a `=~` matcher (names are DNS labels, but be safe).
fn regex_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
            out.push(c);
        } else {
            out.push('\\');
            out.push('\\');
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_count_is_fixed_and_scoped() {
        let cfg = QueryConfig {
            cluster_matcher: Some(r#"cluster="eu""#.into()),
            ..QueryConfig::default()
        };
        let all = Builder::new(&cfg, None).scoped();
        let some = Builder::new(&cfg, Some(&["a".into(), "b".into()])).scoped();
        assert_eq!(all.len(), some.len());
        for (_, q) in &some {
            assert!(q.contains(r#"namespace=~"a|b""#), "{q}");
            assert!(q.contains(r#"cluster="eu""#), "{q}");
        }
        let (_, p95) = all
            .iter()
            .find(|(k, _)| *k == QueryKind::MemP95(Window::Long))
            .unwrap();
        assert!(p95.starts_with("max by (namespace,pod,container) (label_replace(quantile_over_time(0.95,container_memory_working_set_bytes{"), "{p95}");
        assert!(p95.contains("[86400s]"));
    }

    #[test]
    fn exactly_the_kube_series_are_kube_state_metrics_queries() {
        let cfg = QueryConfig::default();
        let b = Builder::new(&cfg, None);
        for (k, q) in b.scoped().into_iter().chain(b.global()) {
            assert_eq!(
                k.from_kube_state_metrics(),
                q.contains("kube_"),
                "{k:?}: {q}"
            );
        }
    }
}
