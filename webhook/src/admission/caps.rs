//! Bounds on the work one review may cause. One request must never exhaust a replica:
//! an object over a cap is admitted unchanged with a warning (never refused) and counted
//! (`outcome="capped"`).
//!
//! The object is measured before any tree is built: its length, then a scan of its JSON
//! text that allocates nothing and stops at the first cap it passes. A 2.7 MB Pod of
//! 90,000 tiny containers is refused by its length; under 1.5 MiB, 50,000 of them cost a
//! scan of a few hundred, not a 400 MB merge.

use std::cell::Cell;
use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};

/// Containers of one object (`containers`, `initContainers` and `ephemeralContainers`
/// together). Real workloads have a handful; Kubernetes sets no limit.
pub const MAX_CONTAINERS: usize = 256;
/// JSON objects and arrays in one object: bounds the parsed tree and the merge (each
/// node costs about 1.5 KiB through the review). A pod with 20 containers of 50 env vars
/// each, with its managedFields (four nodes per env var), has about 5,000.
pub const MAX_JSON_NODES: usize = 10_000;
/// Bytes of one object. etcd stores at most 1.5 MiB per request by default, so a larger
/// object cannot be created anyway (the apiserver's body limit is 3 MiB).
pub const MAX_OBJECT_BYTES: usize = 1536 * 1024;
/// The JSON Patch of one answer, serialized (before base64).
pub const MAX_PATCH_BYTES: usize = 256 * 1024;
/// The whole AdmissionReview answer.
pub const MAX_RESPONSE_BYTES: usize = 512 * 1024;

/// Which cap an object passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cap {
    ObjectBytes,
    Containers,
    JsonNodes,
    PatchBytes,
    ResponseBytes,
}

impl fmt::Display for Cap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cap::ObjectBytes => write!(f, "more than {MAX_OBJECT_BYTES} bytes"),
            Cap::Containers => write!(f, "more than {MAX_CONTAINERS} containers"),
            Cap::JsonNodes => write!(f, "more than {MAX_JSON_NODES} JSON objects and arrays"),
            Cap::PatchBytes => write!(f, "a patch over {MAX_PATCH_BYTES} bytes"),
            Cap::ResponseBytes => write!(f, "an answer over {MAX_RESPONSE_BYTES} bytes"),
        }
    }
}

/// Why an object was not measured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Measure {
    /// A cap was passed (the scan stopped there).
    Over(Cap),
    /// Not JSON (or nested deeper than the parser allows).
    Bad(String),
}

/// Check `json` (one object) against [`MAX_OBJECT_BYTES`], then scan it against
/// [`MAX_CONTAINERS`] and [`MAX_JSON_NODES`].
pub fn check_object(json: &str) -> Result<(), Measure> {
    if json.len() > MAX_OBJECT_BYTES {
        return Err(Measure::Over(Cap::ObjectBytes));
    }
    check_object_with(json, MAX_CONTAINERS, MAX_JSON_NODES)
}

fn check_object_with(json: &str, containers: usize, nodes: usize) -> Result<(), Measure> {
    let budget = Budget {
        containers: Cell::new(containers),
        nodes: Cell::new(nodes),
        over: Cell::new(None),
    };
    let mut de = serde_json::Deserializer::from_str(json);
    let scanned = Node {
        budget: &budget,
        containers: false,
    }
    .deserialize(&mut de)
    .and_then(|()| de.end());
    match (scanned, budget.over.get()) {
        (_, Some(cap)) => Err(Measure::Over(cap)),
        (Ok(()), None) => Ok(()),
        (Err(e), None) => Err(Measure::Bad(e.to_string())),
    }
}

struct Budget {
    containers: Cell<usize>,
    nodes: Cell<usize>,
    over: Cell<Option<Cap>>,
}

impl Budget {
    fn take<E: de::Error>(&self, left: &Cell<usize>, cap: Cap) -> Result<(), E> {
        match left.get().checked_sub(1) {
            Some(n) => {
                left.set(n);
                Ok(())
            }
            None => {
                self.over.set(Some(cap));
                Err(E::custom(cap))
            }
        }
    }
}

/// One JSON value; `containers` when it is the value of a container-list key.
#[derive(Clone, Copy)]
struct Node<'a> {
    budget: &'a Budget,
    containers: bool,
}

impl<'de> DeserializeSeed<'de> for Node<'_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Node<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let b = self.budget;
        b.take(&b.nodes, Cap::JsonNodes)?;
        let element = Node {
            budget: b,
            containers: false,
        };
        while seq.next_element_seed(element)?.is_some() {
            if self.containers {
                b.take(&b.containers, Cap::Containers)?;
            }
        }
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let b = self.budget;
        b.take(&b.nodes, Cap::JsonNodes)?;
        while let Some(containers) = map.next_key_seed(ContainerListKey)? {
            map.next_value_seed(Node {
                budget: b,
                containers,
            })?;
        }
        Ok(())
    }
}

/// A map key, read without allocating: whether it names a list of containers.
struct ContainerListKey;

impl<'de> DeserializeSeed<'de> for ContainerListKey {
    type Value = bool;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for ContainerListKey {
    type Value = bool;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a key")
    }
    fn visit_str<E>(self, k: &str) -> Result<bool, E> {
        Ok(matches!(
            k,
            "containers" | "initContainers" | "ephemeralContainers"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(containers: usize, init: usize) -> String {
        let c = |n: usize, p: &str| {
            (0..n)
                .map(|i| format!(r#"{{"name":"{p}{i}"}}"#))
                .collect::<Vec<_>>()
                .join(",")
        };
        format!(
            r#"{{"metadata":{{"name":"p"}},"spec":{{"containers":[{}],"initContainers":[{}]}}}}"#,
            c(containers, "c"),
            c(init, "i")
        )
    }

    #[test]
    fn containers_of_all_lists_count_together() {
        assert_eq!(check_object_with(&pod(3, 2), 5, 100), Ok(()));
        assert_eq!(
            check_object_with(&pod(3, 3), 5, 100),
            Err(Measure::Over(Cap::Containers))
        );
    }

    #[test]
    fn containers_under_templates_count() {
        let tpl = format!(r#"{{"spec":{{"template":{}}}}}"#, pod(4, 0));
        let cron = format!(r#"{{"spec":{{"jobTemplate":{tpl}}}}}"#);
        assert_eq!(
            check_object_with(&cron, 3, 100),
            Err(Measure::Over(Cap::Containers))
        );
        assert_eq!(check_object_with(&cron, 4, 100), Ok(()));
    }

    #[test]
    fn objects_and_arrays_count_against_the_node_cap() {
        // {} root, metadata, spec, containers[], initContainers[], 2 containers = 7.
        assert_eq!(check_object_with(&pod(2, 0), 10, 7), Ok(()));
        assert_eq!(
            check_object_with(&pod(2, 0), 10, 6),
            Err(Measure::Over(Cap::JsonNodes))
        );
    }

    #[test]
    fn an_object_over_the_byte_cap_is_refused_before_any_scan() {
        let big = pod(MAX_OBJECT_BYTES / 10, 0);
        assert!(big.len() > MAX_OBJECT_BYTES);
        assert_eq!(check_object(&big), Err(Measure::Over(Cap::ObjectBytes)));
        // Under it, the container cap stops the scan.
        let many = pod(40_000, 0);
        assert!(many.len() < MAX_OBJECT_BYTES);
        assert_eq!(check_object(&many), Err(Measure::Over(Cap::Containers)));
    }

    #[test]
    fn not_json_is_bad_not_over() {
        assert!(matches!(check_object("{\"a\":"), Err(Measure::Bad(_))));
        assert!(matches!(check_object("{} trailing"), Err(Measure::Bad(_))));
        let deep = "[".repeat(1000) + &"]".repeat(1000);
        assert!(matches!(check_object(&deep), Err(Measure::Bad(_))));
    }

    #[test]
    fn escaped_keys_and_null_lists_are_fine() {
        let j = r#"{"spec":{"cont\u0061iners":[{"name":"a"},{"name":"b"}],"initContainers":null}}"#;
        assert_eq!(
            check_object_with(j, 1, 100),
            Err(Measure::Over(Cap::Containers))
        );
        assert_eq!(check_object_with(j, 2, 100), Ok(()));
    }
}
