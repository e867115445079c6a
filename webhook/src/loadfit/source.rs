//! Where fit data comes from: per-pod memory and per-pod load series over a window.
//! The trait keeps fitting independent of Prometheus; the implementation reuses the
//! analyzer's client (instant queries, auth, retries), one query per time step that
//! returns memory and every unit at once, tagged with a label.

use std::collections::BTreeMap;
use std::future::Future;

use futures::stream::{self, StreamExt};

use rightsizer_core::loadmodel::fit::LoadSample;

use crate::analyzer::prom::{PromClient, PromError};

/// What to fetch for one container's model.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesQuery {
    /// PromQL: memory per pod, with `namespace` and `pod` labels.
    pub memory: String,
    /// (unit, PromQL giving that load per pod, with `namespace` and `pod` labels).
    pub units: Vec<(String, String)>,
    /// Unix seconds, inclusive.
    pub start: u64,
    pub end: u64,
    pub step: u64,
}

impl SeriesQuery {
    pub fn unit_names(&self) -> Vec<String> {
        self.units.iter().map(|(u, _)| u.clone()).collect()
    }

    pub fn steps(&self) -> impl Iterator<Item = u64> + '_ {
        (self.start..=self.end).step_by(self.step.max(1) as usize)
    }
}

/// Samples for a fit: at every step, every pod with a memory value, with its load per
/// unit (in the order of `SeriesQuery::units`; a unit with no series for the pod at
/// that time counts as zero: "no users" often means "no series").
pub trait LoadSeriesSource: Send + Sync {
    fn fetch(
        &self,
        q: &SeriesQuery,
    ) -> impl Future<Output = Result<Vec<LoadSample>, PromError>> + Send;
}

/// The label marking which expression a series came from.
const TAG: &str = "__rightsizer_series";

/// One PromQL expression returning memory and all units, each tagged.
pub fn combined_query(q: &SeriesQuery) -> String {
    let tag = |expr: &str, name: &str| {
        format!("label_replace(({expr}), \"{TAG}\", \"{name}\", \"\", \"\")")
    };
    let mut parts = vec![tag(&q.memory, "memory")];
    for (i, (_, expr)) in q.units.iter().enumerate() {
        parts.push(tag(expr, &format!("u{i}")));
    }
    parts.join(" or ")
}

/// Pair one step's series into samples.
pub fn samples_at(units: usize, series: &[crate::analyzer::prom::PromSample]) -> Vec<LoadSample> {
    let mut memory: BTreeMap<(String, String), f64> = BTreeMap::new();
    let mut load: BTreeMap<(String, String), Vec<f64>> = BTreeMap::new();
    for s in series {
        let key = (s.label("namespace").to_string(), s.label("pod").to_string());
        match s.label(TAG) {
            "memory" => {
                memory.insert(key, s.value);
            }
            tag => {
                let Some(i) = tag.strip_prefix('u').and_then(|n| n.parse::<usize>().ok()) else {
                    continue;
                };
                if i < units {
                    load.entry(key).or_insert_with(|| vec![0.0; units])[i] = s.value;
                }
            }
        }
    }
    memory
        .into_iter()
        .map(|(k, m)| LoadSample {
            memory: m,
            load: load.remove(&k).unwrap_or_else(|| vec![0.0; units]),
        })
        .collect()
}

/// Steps fetched at once.
const CONCURRENCY: usize = 4;

impl LoadSeriesSource for PromClient {
    async fn fetch(&self, q: &SeriesQuery) -> Result<Vec<LoadSample>, PromError> {
        let query = combined_query(q);
        let units = q.units.len();
        let results: Vec<Result<Vec<LoadSample>, PromError>> = stream::iter(q.steps())
            .map(|t| {
                let query = &query;
                async move { self.query(query, t).await.map(|v| samples_at(units, &v)) }
            })
            .buffered(CONCURRENCY)
            .collect()
            .await;
        let mut out = Vec::new();
        for r in results {
            out.extend(r?);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(labels: &[(&str, &str)], value: f64) -> crate::analyzer::prom::PromSample {
        crate::analyzer::prom::PromSample {
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            value,
        }
    }

    #[test]
    fn query_tags_every_expression() {
        let q = SeriesQuery {
            memory: "m".into(),
            units: vec![("a".into(), "x".into()), ("b".into(), "y".into())],
            start: 0,
            end: 600,
            step: 300,
        };
        assert_eq!(
            combined_query(&q),
            "label_replace((m), \"__rightsizer_series\", \"memory\", \"\", \"\") or \
             label_replace((x), \"__rightsizer_series\", \"u0\", \"\", \"\") or \
             label_replace((y), \"__rightsizer_series\", \"u1\", \"\", \"\")"
        );
        assert_eq!(q.steps().collect::<Vec<_>>(), [0, 300, 600]);
    }

    #[test]
    fn pairs_by_pod_and_fills_missing_load_with_zero() {
        let v = [
            s(
                &[("namespace", "lab"), ("pod", "p1"), (TAG, "memory")],
                100.0,
            ),
            s(&[("namespace", "lab"), ("pod", "p1"), (TAG, "u1")], 3.0),
            s(
                &[("namespace", "lab"), ("pod", "p2"), (TAG, "memory")],
                50.0,
            ),
            // load for a pod without memory: dropped
            s(&[("namespace", "lab"), ("pod", "p3"), (TAG, "u0")], 9.0),
        ];
        let got = samples_at(2, &v);
        assert_eq!(
            got,
            [
                LoadSample {
                    memory: 100.0,
                    load: vec![0.0, 3.0]
                },
                LoadSample {
                    memory: 50.0,
                    load: vec![0.0, 0.0]
                },
            ]
        );
    }
}
