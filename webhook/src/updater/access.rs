//! What the apiserver lets the updater do: its version and the Pod subresources it
//! serves (discovery, never guessed), the Eviction API version, and whether this
//! identity may evict and resize (a SelfSubjectAccessReview each).

use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use kube::api::PostParams;
use kube::{Api, Client};

use rightsizer_core::update::{eviction_version, ApiSupport};

use crate::kube::error::KubeError;

/// What discovery found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Served {
    pub api: ApiSupport,
    /// `policy/v1` or `policy/v1beta1`; `None`: no Eviction API (the updater stays idle).
    pub eviction: Option<&'static str>,
}

/// `"20+"` -> 20.
fn number(s: &str) -> u32 {
    s.trim_end_matches(|c: char| !c.is_ascii_digit())
        .parse()
        .unwrap_or(0)
}

pub async fn discover(client: &Client) -> Result<Served, KubeError> {
    let info = client
        .apiserver_version()
        .await
        .map_err(KubeError::api("reading the apiserver version"))?;
    let core = client
        .list_core_api_resources("v1")
        .await
        .map_err(KubeError::api("discovering v1"))?;
    let has = |n: &str| core.resources.iter().any(|r| r.name == n);
    let groups = client
        .list_api_groups()
        .await
        .map_err(KubeError::api("discovering API groups"))?;
    let policy: Vec<String> = groups
        .groups
        .iter()
        .filter(|g| g.name == "policy")
        .flat_map(|g| g.versions.iter().map(|v| v.group_version.clone()))
        .collect();
    let policy: Vec<&str> = policy.iter().map(String::as_str).collect();
    Ok(Served {
        api: ApiSupport {
            version: (number(&info.major), number(&info.minor)),
            resize_subresource: has("pods/resize"),
        },
        eviction: has("pods/eviction")
            .then(|| eviction_version(&policy))
            .flatten(),
    })
}

/// Whether this identity may `verb` Pods' `subresource` in every namespace.
pub async fn may(client: &Client, verb: &str, subresource: &str) -> Result<bool, KubeError> {
    let review = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                verb: Some(verb.into()),
                resource: Some("pods".into()),
                subresource: (!subresource.is_empty()).then(|| subresource.into()),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let answer = Api::<SelfSubjectAccessReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await
        .map_err(KubeError::api(
            "asking the apiserver what this identity may do",
        ))?;
    Ok(answer.status.is_some_and(|s| s.allowed))
}

#[cfg(test)]
mod tests {
    #[test]
    fn version_numbers_drop_the_provider_suffix() {
        assert_eq!(super::number("20+"), 20);
        assert_eq!(super::number("33"), 33);
        assert_eq!(super::number(""), 0);
    }
}
