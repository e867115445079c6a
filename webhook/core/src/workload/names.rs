//! How controllers name what they create, and the inverse guesses used when the owner
//! chain is not known (a Pod admitted before the watch saw its ReplicaSet, a
//! Prometheus `pod` label without kube-state-metrics rows for its owner).

/// The characters Kubernetes draws generated names from (no vowels, no look-alikes).
const ALPHANUMS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
/// `generateName` appends this many of them.
const GENERATED_LEN: usize = 5;
/// ... to a prefix cut to this length (63 minus the random part).
const GENERATE_PREFIX_MAX: usize = 58;
/// Digits written in `ALPHANUMS`: how `pod-template-hash` spells a decimal hash.
const HASH_ALPHABET: &[u8] = b"456789bcdf";

/// A decimal number spelled as Kubernetes spells `pod-template-hash`.
pub fn safe_encode(decimal: &str) -> String {
    decimal
        .bytes()
        .map(|b| ALPHANUMS[usize::from(b) % ALPHANUMS.len()] as char)
        .collect()
}

/// The ReplicaSet a Deployment creates for a template: `<deployment>-<hash>`.
pub fn replicaset_name(deployment: &str, template_hash: &str) -> String {
    format!("{deployment}-{template_hash}")
}

/// The Deployment of a ReplicaSet, from its name: the `pod-template-hash` label when
/// the Pod carries it, else a last segment spelled like one.
pub fn deployment_of_replicaset<'a>(rs: &'a str, template_hash: Option<&str>) -> Option<&'a str> {
    let (base, suffix) = rs.rsplit_once('-')?;
    let hashed = match template_hash {
        Some(h) => suffix == h,
        None => {
            (1..=10).contains(&suffix.len()) && suffix.bytes().all(|b| HASH_ALPHABET.contains(&b))
        }
    };
    (hashed && !base.is_empty()).then_some(base)
}

/// The Job a CronJob creates for a run: `<cronjob>-<scheduled minutes since epoch>`.
pub fn cronjob_job_name(cronjob: &str, minutes: u64) -> String {
    format!("{cronjob}-{minutes}")
}

/// The CronJob of a Job, from its name (eight or more digits: minutes since 1970).
pub fn cronjob_of_job(job: &str) -> Option<&str> {
    let (base, suffix) = job.rsplit_once('-')?;
    (suffix.len() >= 8 && suffix.bytes().all(|b| b.is_ascii_digit()) && !base.is_empty())
        .then_some(base)
}

/// The Deployment Knative runs a Revision as.
pub fn revision_deployment(revision: &str) -> String {
    format!("{revision}-deployment")
}

/// The name a bare Pod is known by across re-creations: its `generateName` (cut as
/// the apiserver cuts it, without the trailing dash), else its name without the
/// random part `generateName` would have added, else its name.
pub fn bare_pod_name<'a>(name: &'a str, generate_name: &'a str) -> &'a str {
    let cut = &generate_name[..floor_char_boundary(generate_name, GENERATE_PREFIX_MAX)];
    if name.is_empty() || (!cut.is_empty() && name.starts_with(cut)) {
        let base = cut.trim_end_matches('-');
        return if base.is_empty() { "unnamed" } else { base };
    }
    match name.len().checked_sub(GENERATED_LEN + 1) {
        Some(i)
            if name.as_bytes()[i] == b'-'
                && name.as_bytes()[i + 1..]
                    .iter()
                    .all(|b| ALPHANUMS.contains(b)) =>
        {
            let base = name[..i].trim_end_matches('-');
            if base.is_empty() {
                name
            } else {
                base
            }
        }
        _ => name,
    }
}

fn floor_char_boundary(s: &str, max: usize) -> usize {
    (0..=max.min(s.len()))
        .rev()
        .find(|&i| s.is_char_boundary(i))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deployments_replicaset_round_trips() {
        for hash in ["7d9f8", "66b6c48dd5", &safe_encode("3915512187")] {
            let rs = replicaset_name("web-api", hash);
            assert_eq!(deployment_of_replicaset(&rs, Some(hash)), Some("web-api"));
            assert_eq!(deployment_of_replicaset(&rs, None), Some("web-api"), "{rs}");
        }
        // (ReplicaSet, pod-template-hash label) → Deployment
        let table = [
            ("web-api", Some("5f"), None),
            ("web-api", None, None),   // "api" has vowels: not a hash
            ("web-x2k4p", None, None), // generated-name letters, not hash digits
            ("rs", None, None),
            ("-7d9f8", None, None),
            ("web-12345678901", None, None), // too long for a 32-bit hash
        ];
        for (rs, hash, want) in table {
            assert_eq!(deployment_of_replicaset(rs, hash), want, "{rs} {hash:?}");
        }
    }

    #[test]
    fn a_cronjobs_job_round_trips() {
        let job = cronjob_job_name("nightly-report", 29_000_000);
        assert_eq!(cronjob_of_job(&job), Some("nightly-report"));
        for job in ["migrate-2", "backup-1234567", "-29400000", "plain"] {
            assert_eq!(cronjob_of_job(job), None, "{job}");
        }
    }

    #[test]
    fn bare_pods_are_known_by_their_generate_name() {
        // (name, generateName) → name
        let long = "a".repeat(70);
        let table = [
            ("debug", "", "debug"),
            ("", "job-runner-", "job-runner"),
            ("job-runner-x7k2p", "", "job-runner"),
            ("job-runner-x7k2p", "job-runner-", "job-runner"),
            ("api-hello", "", "api-hello"), // vowels: a chosen name
            ("db-0", "", "db-0"),
            ("-x7k2p", "", "-x7k2p"),
            ("", "", "unnamed"),
            ("", &long, &long[..58]),
        ];
        for (name, generate_name, want) in table {
            assert_eq!(
                bare_pod_name(name, generate_name),
                want,
                "{name:?} {generate_name:?}"
            );
        }
        // What the apiserver generates from a long prefix maps back to the same name.
        let generated = format!("{}-x7k2p", &long[..57]);
        assert_eq!(
            bare_pod_name(&generated, ""),
            bare_pod_name("", &format!("{}-", &long[..57]))
        );
    }
}
