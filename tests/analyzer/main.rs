//! Everything that reads a real Prometheus: the client, the analyzer and its strategies,
//! load-model fitting, and `rightsizer serve --prometheus`.

#[path = "../support/exe.rs"]
mod exe;
#[path = "../support/monitoring.rs"]
mod monitoring;
#[path = "../support/prometheus.rs"]
mod prometheus;
#[path = "../support/scenario.rs"]
mod scenario;
#[path = "../support_https/mod.rs"]
mod support_https;

mod analyzer;
mod failing_parts;
mod loadmodel_prom;
mod one_number;
mod prom_client;
mod serve_analyzer;
mod strategy_prom;
