//! Load-model figures for `/metrics`: fitted coefficients and their quality, and the
//! model's prediction against actual memory, so dashboards can plot one over the other.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use rightsizer_core::recommendation::fit::FitReport;
use rightsizer_core::recommendation::ContainerKey;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UnitLabels {
    workload: String,
    container: String,
    unit: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ContainerLabels {
    workload: String,
    container: String,
}

type F64 = Gauge<f64, AtomicU64>;

/// Registered once; `record` after every fit.
#[derive(Clone, Default)]
pub struct LoadModelMetrics {
    coefficient: Family<UnitLabels, F64>,
    base: Family<ContainerLabels, F64>,
    r2: Family<ContainerLabels, F64>,
    samples: Family<ContainerLabels, F64>,
    used: Family<ContainerLabels, F64>,
    residual_p95: Family<ContainerLabels, F64>,
    predicted: Family<ContainerLabels, F64>,
    actual: Family<ContainerLabels, F64>,
}

impl LoadModelMetrics {
    pub fn register(r: &mut Registry) -> Self {
        let m = LoadModelMetrics::default();
        r.register(
            "rightsizer_loadmodel_coefficient_bytes",
            "Fitted memory per unit of load (bytes)",
            m.coefficient.clone(),
        );
        r.register(
            "rightsizer_loadmodel_base_bytes",
            "Fitted memory at zero load (bytes)",
            m.base.clone(),
        );
        r.register(
            "rightsizer_loadmodel_r2",
            "R² of the load-model fit",
            m.r2.clone(),
        );
        r.register(
            "rightsizer_loadmodel_samples",
            "Samples behind the load-model fit",
            m.samples.clone(),
        );
        r.register(
            "rightsizer_loadmodel_fit_used",
            "1 when the fit passes the policy's gate and replaces declared coefficients",
            m.used.clone(),
        );
        r.register(
            "rightsizer_loadmodel_residual_p95_bytes",
            "95th percentile of actual minus predicted memory over the fit window",
            m.residual_p95.clone(),
        );
        r.register(
            "rightsizer_loadmodel_predicted_bytes",
            "Memory per pod the model in use predicts for the current load",
            m.predicted.clone(),
        );
        r.register(
            "rightsizer_loadmodel_actual_bytes",
            "Actual memory per pod at the time of the prediction",
            m.actual.clone(),
        );
        m
    }

    /// Record one fit (and its current prediction, when known).
    pub fn record(&self, key: &ContainerKey, report: &FitReport) {
        let c = ContainerLabels {
            workload: key.workload.to_string(),
            container: key.container.clone(),
        };
        for (unit, v) in &report.fit.coefficients {
            self.coefficient
                .get_or_create(&UnitLabels {
                    workload: c.workload.clone(),
                    container: c.container.clone(),
                    unit: unit.clone(),
                })
                .set(*v);
        }
        self.base.get_or_create(&c).set(report.fit.base);
        self.r2.get_or_create(&c).set(report.fit.r2);
        self.samples
            .get_or_create(&c)
            .set(report.fit.samples as f64);
        self.used
            .get_or_create(&c)
            .set(if report.used { 1.0 } else { 0.0 });
        self.residual_p95
            .get_or_create(&c)
            .set(report.fit.residual_p95);
        if let Some(now) = &report.current {
            self.predicted.get_or_create(&c).set(now.predicted);
            self.actual.get_or_create(&c).set(now.actual);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rightsizer_core::recommendation::fit::{Current, Fit};

    #[test]
    fn exports_the_documented_names() {
        let mut r = Registry::default();
        let m = LoadModelMetrics::register(&mut r);
        let key = ContainerKey::parse("lab/Deployment/backend/backend").unwrap();
        m.record(
            &key,
            &FitReport {
                fit: Fit {
                    base: 1.0e8,
                    coefficients: [("participant_video".to_string(), 1.5e7)].into(),
                    r2: 0.97,
                    samples: 1234,
                    residual_p95: 2.0e6,
                },
                used: true,
                reason: None,
                at: 0,
                current: Some(Current {
                    predicted: 5.0e8,
                    actual: 4.5e8,
                }),
            },
        );
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &r).unwrap();
        for want in [
            r#"rightsizer_loadmodel_coefficient_bytes{workload="lab/Deployment/backend",container="backend",unit="participant_video"} 15000000.0"#,
            r#"rightsizer_loadmodel_r2{workload="lab/Deployment/backend",container="backend"} 0.97"#,
            r#"rightsizer_loadmodel_predicted_bytes{workload="lab/Deployment/backend",container="backend"} 500000000.0"#,
            r#"rightsizer_loadmodel_actual_bytes{workload="lab/Deployment/backend",container="backend"} 450000000.0"#,
            r#"rightsizer_loadmodel_fit_used{workload="lab/Deployment/backend",container="backend"} 1.0"#,
        ] {
            assert!(text.contains(want), "missing {want} in\n{text}");
        }
    }
}
