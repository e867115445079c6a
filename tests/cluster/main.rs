//! A real Kubernetes v1.20.2 control plane (and node) on loopback: the Kubernetes side of
//! rightsizer, the webhook called by the apiserver, and rightsizer on a real node.

#[path = "../support/cluster.rs"]
mod cluster;
#[path = "../support/exe.rs"]
mod exe;
#[path = "../support/helm.rs"]
mod helm_path;
#[path = "../support/node.rs"]
mod node;
#[path = "../support/previous.rs"]
mod previous;
#[path = "../support/prometheus.rs"]
mod prometheus;
#[path = "../support/scenario.rs"]
mod scenario;

mod certs_e2e;
mod cluster_e2e;
mod helm_e2e;
mod identity_e2e;
mod kube_watch;
mod node_e2e;
mod quota_e2e;
mod report_nodes;
mod rightsizing_homes;
mod rightsizing_writes;
mod soak;
mod upgrade_e2e;
