//! Fit the `fitted: true` containers of load models from a series source, and judge
//! each fit against its policy's gate. The analyzer calls `fit_all` on its long window
//! and stores the reports in its cache entries (`loadModel` in `/recommendations`);
//! `rightsizer plan --prometheus` calls it directly.

use std::collections::BTreeMap;

use rightsizer_core::loadmodel::fit::{fit, FitError};
use rightsizer_core::loadmodel::model::{choose, gate};
use rightsizer_core::loadmodel::schema::{ContainerModelSpec, LoadModelSpec};
use rightsizer_core::policy::select::{PolicySet, Subject};
use rightsizer_core::recommendation::fit::{Current, FitReport};
use rightsizer_core::recommendation::ContainerKey;
use rightsizer_core::workload::WorkloadKey;

use crate::analyzer::prom::PromError;
use crate::loadfit::source::{LoadSeriesSource, SeriesQuery};

#[derive(Debug, thiserror::Error)]
pub enum FitterError {
    #[error(transparent)]
    Prometheus(#[from] PromError),
    #[error(transparent)]
    Fit(#[from] FitError),
}

/// The time range of a fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FitWindow {
    /// Unix seconds of the end of the window.
    pub end: u64,
    pub seconds: u64,
    pub step: u64,
}

/// Default per-pod memory of a container: its working set summed by pod, for pods
/// named after the workload (`name-…`). Give `memoryQuery` when names overlap.
pub fn default_memory_query(w: &WorkloadKey, container: &str) -> String {
    let esc = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
    let name_re = w.name.replace('.', "\\\\.");
    format!(
        "sum by (namespace, pod) (container_memory_working_set_bytes{{namespace=\"{}\", container=\"{}\", pod=~\"{}-.*\"}})",
        esc(&w.namespace),
        esc(container),
        name_re
    )
}

/// The series query for a fitted container; `None` when nothing is to be fitted.
pub fn series_query(
    w: &WorkloadKey,
    container: &str,
    spec: &ContainerModelSpec,
    window: FitWindow,
) -> Option<SeriesQuery> {
    if !spec.fitted || spec.constant.is_some() {
        return None;
    }
    let units = spec
        .units
        .iter()
        .map(|(u, s)| Some((u.clone(), s.query.clone()?)))
        .collect::<Option<Vec<_>>>()?;
    Some(SeriesQuery {
        memory: spec
            .memory_query
            .clone()
            .unwrap_or_else(|| default_memory_query(w, container)),
        units,
        start: window.end.saturating_sub(window.seconds),
        end: window.end,
        step: window.step.max(1),
    })
}

/// Fit one container and judge it.
pub async fn fit_container<S: LoadSeriesSource>(
    src: &S,
    q: &SeriesQuery,
    model: &LoadModelSpec,
    spec: Option<&ContainerModelSpec>,
    now: u64,
) -> Result<FitReport, FitterError> {
    let samples = src.fetch(q).await?;
    let units = q.unit_names();
    let f = fit(&units, &samples)?;
    let verdict = gate(&model.fit, &f);
    // The model admission would use now, against the pods' memory at the window's end.
    let last = SeriesQuery {
        start: q.end,
        ..q.clone()
    };
    let latest = src.fetch(&last).await?;
    let current = (!latest.is_empty()).then(|| {
        let n = latest.len() as f64;
        let chosen = spec.and_then(|s| choose(s, &model.fit, Some(&f)));
        let predict = |l: &[f64]| -> f64 {
            let load = units.iter().cloned().zip(l.iter().copied()).collect();
            match &chosen {
                Some(c) => c.model.predict(&load),
                None => {
                    f.base
                        + l.iter()
                            .zip(&units)
                            .map(|(v, u)| v * f.coefficients.get(u).copied().unwrap_or(0.0))
                            .sum::<f64>()
                }
            }
        };
        Current {
            predicted: latest.iter().map(|s| predict(&s.load)).sum::<f64>() / n,
            actual: latest.iter().map(|s| s.memory).sum::<f64>() / n,
        }
    });
    Ok(FitReport {
        used: verdict.is_ok(),
        reason: verdict.err(),
        fit: f,
        at: now,
        current,
    })
}

/// Fit every fitted container of the load model that selects each workload.
/// Selection uses namespace, kind and name (labels are not known here).
pub async fn fit_all<S: LoadSeriesSource>(
    src: &S,
    policies: &PolicySet,
    workloads: &[WorkloadKey],
    window: FitWindow,
) -> BTreeMap<ContainerKey, Result<FitReport, FitterError>> {
    let empty = BTreeMap::new();
    let mut out = BTreeMap::new();
    for w in workloads {
        let subject = Subject {
            key: w,
            labels: &empty,
            namespace_labels: &empty,
        };
        let Some(policy) = policies.select(&subject) else {
            continue;
        };
        let Some(model) = rightsizer_core::sizing::load::model_for(&policy, &subject) else {
            continue;
        };
        for (container, spec) in &model.containers {
            if let Some(q) = series_query(w, container, spec, window) {
                let r = fit_container(src, &q, model, Some(spec), window.end).await;
                out.insert(ContainerKey::new(w.clone(), container.clone()), r);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rightsizer_core::workload::kind::WorkloadKind;

    #[test]
    fn default_query_scopes_to_the_workload() {
        let w = WorkloadKey {
            namespace: "lab".into(),
            kind: WorkloadKind::Deployment,
            name: "api.v2".into(),
        };
        assert_eq!(
            default_memory_query(&w, "app"),
            r#"sum by (namespace, pod) (container_memory_working_set_bytes{namespace="lab", container="app", pod=~"api\\.v2-.*"})"#
        );
    }
}
