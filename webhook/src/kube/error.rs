//! Errors of the Kubernetes side.

/// What went wrong talking to the apiserver or reading what it holds.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    #[error("kubernetes API: {context}: {source}")]
    Api {
        context: String,
        #[source]
        source: kube::Error,
    },
    #[error("the server serves none of {0}")]
    NoVersion(String),
    #[error("not the leader: only the leader writes committed values")]
    NotLeader,
    #[error("{0} cannot carry committed values")]
    UnsupportedKind(String),
    #[error("annotation {annotation} on {workload}: {message}")]
    BadAnnotation {
        workload: String,
        annotation: String,
        message: String,
    },
    #[error("encoding {what}: {source}")]
    Encode {
        what: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("timed out after {0:?} waiting for the watchers' first lists")]
    SyncTimeout(std::time::Duration),
}

impl KubeError {
    pub(crate) fn api(context: impl Into<String>) -> impl FnOnce(kube::Error) -> KubeError {
        let context = context.into();
        move |source| KubeError::Api { context, source }
    }
}
