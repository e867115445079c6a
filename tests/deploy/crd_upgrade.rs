//! The Rightsizing CRD changes only additively from the previous version
//! (tests/upgrade/PREVIOUS): objects the previous version stored stay valid and keep every
//! field, and its replicas (still running during a rolling update) can keep writing. What
//! counts as additive is the table below; anything else needs a served-version plan (a new
//! version served beside the old one, with the README's "Upgrading" saying how objects move).

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{json, Value};

use crate::previous;

const CRD: &str = "deploy/base/crd-rightsizing.yaml";

fn crd(tree: &Path) -> Value {
    let text = std::fs::read_to_string(tree.join(CRD)).expect("the Rightsizing CRD");
    serde_norway::from_str(&text).expect("CRD YAML")
}

/// Validation keywords that narrow what a field accepts when added or changed.
const CONSTRAINTS: [&str; 12] = [
    "pattern",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "multipleOf",
    "minLength",
    "maxLength",
    "minItems",
    "maxItems",
    "minProperties",
    "maxProperties",
];

/// Why `cur` is not an additive change of `prev` (empty: it is).
fn breaking(prev: &Value, cur: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for f in [
        "/spec/group",
        "/spec/scope",
        "/spec/names/kind",
        "/spec/names/plural",
    ] {
        if prev.pointer(f) != cur.pointer(f) {
            out.push(format!("{f} changed"));
        }
    }
    let versions = |crd: &Value| -> BTreeMap<String, Value> {
        crd["spec"]["versions"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|v| {
                (
                    v["name"].as_str().unwrap_or_default().to_string(),
                    v.clone(),
                )
            })
            .collect()
    };
    let (pv, cv) = (versions(prev), versions(cur));
    for name in cv.keys().filter(|n| !pv.contains_key(*n)) {
        out.push(format!("new version {name}: needs a served-version plan"));
    }
    for (name, p) in &pv {
        let Some(c) = cv.get(name) else {
            out.push(format!("version {name} removed"));
            continue;
        };
        for flag in ["served", "storage"] {
            if p[flag] != c[flag] {
                out.push(format!("version {name}: {flag} {} -> {}", p[flag], c[flag]));
            }
        }
        if p["subresources"]["status"].is_object() && !c["subresources"]["status"].is_object() {
            out.push(format!("version {name}: the status subresource dropped"));
        }
        schema(
            &format!("{name}:"),
            &p["schema"]["openAPIV3Schema"],
            &c["schema"]["openAPIV3Schema"],
            &mut out,
        );
    }
    out
}

fn schema(path: &str, p: &Value, c: &Value, out: &mut Vec<String>) {
    for k in ["type", "format"] {
        if p[k] != c[k] {
            out.push(format!("{path} {k} {} -> {}", p[k], c[k]));
        }
    }
    for k in CONSTRAINTS {
        if p[k] != c[k] {
            out.push(format!("{path} {k} {} -> {}", p[k], c[k]));
        }
    }
    if let Some(ce) = c["enum"].as_array() {
        let kept = p["enum"]
            .as_array()
            .is_some_and(|pe| pe.iter().all(|v| ce.contains(v)));
        if !kept {
            out.push(format!("{path} enum narrowed"));
        }
    }
    let keeps = |v: &Value| v["x-kubernetes-preserve-unknown-fields"] == true;
    if keeps(p) && !keeps(c) {
        out.push(format!(
            "{path} x-kubernetes-preserve-unknown-fields dropped"
        ));
    }
    let required =
        |v: &Value| -> Vec<Value> { v["required"].as_array().cloned().unwrap_or_default() };
    for r in required(c).iter().filter(|r| !required(p).contains(r)) {
        out.push(format!("{path} new required field {r}"));
    }
    if let Some(props) = p["properties"].as_object() {
        for (k, pk) in props {
            match c["properties"].get(k) {
                Some(ck) => schema(&format!("{path}.{k}"), pk, ck, out),
                None => out.push(format!("{path}.{k} removed")),
            }
        }
    }
    if p["items"].is_object() {
        schema(&format!("{path}[]"), &p["items"], &c["items"], out);
    }
}

/// The table of what counts as additive: one change to this tree's CRD per row, and the
/// finding it must give (None: additive).
#[test]
fn what_counts_as_additive() {
    type Change = fn(&mut Value);
    let rows: [(&str, Change, Option<&str>); 14] = [
        (
            "a new optional field",
            |c| {
                c["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]
                    ["properties"]["newField"] = json!({"type": "string"});
            },
            None,
        ),
        (
            "a description changed",
            |c| {
                c["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]
                    ["properties"]["updates"]["description"] = json!("other words");
            },
            None,
        ),
        (
            "a printer column added",
            |c| {
                c["spec"]["versions"][0]["additionalPrinterColumns"]
                    .as_array_mut()
                    .unwrap()
                    .push(json!({"name": "X", "type": "string", "jsonPath": ".status.workload"}));
            },
            None,
        ),
        (
            "an enum added",
            |c| {
                c["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]
                    ["properties"]["workload"]["enum"] = json!(["a", "b"]);
            },
            Some("enum narrowed"),
        ),
        (
            "a field removed",
            |c| {
                c["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]
                    ["properties"]
                    .as_object_mut()
                    .unwrap()
                    .remove("lastChange");
            },
            Some(".lastChange removed"),
        ),
        (
            "a type changed",
            |c| {
                c["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]
                    ["properties"]["workload"]["type"] = json!("object");
            },
            Some(".workload type"),
        ),
        (
            "a new required field",
            |c| {
                c["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]
                    ["required"] = json!(["workload"]);
            },
            Some("new required field \"workload\""),
        ),
        (
            "a format added",
            |c| {
                c["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]
                    ["properties"]["workload"]["format"] = json!("date-time");
            },
            Some(".workload format"),
        ),
        (
            "a constraint added",
            |c| {
                c["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]
                    ["properties"]["workload"]["maxLength"] = json!(63);
            },
            Some(".workload maxLength"),
        ),
        (
            "unknown fields no longer kept",
            |c| {
                let items = &mut c["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
                    ["properties"]["status"]["properties"]["containers"]["items"];
                items["properties"]["strategyState"]
                    .as_object_mut()
                    .unwrap()
                    .remove("x-kubernetes-preserve-unknown-fields");
            },
            Some("strategyState x-kubernetes-preserve-unknown-fields dropped"),
        ),
        (
            "the version no longer served",
            |c| {
                c["spec"]["versions"][0]["served"] = json!(false);
            },
            Some("served true -> false"),
        ),
        (
            "a new version",
            |c| {
                let mut v = c["spec"]["versions"][0].clone();
                v["name"] = json!("v1");
                v["storage"] = json!(false);
                c["spec"]["versions"].as_array_mut().unwrap().push(v);
            },
            Some("new version v1: needs a served-version plan"),
        ),
        (
            "the status subresource dropped",
            |c| {
                c["spec"]["versions"][0]
                    .as_object_mut()
                    .unwrap()
                    .remove("subresources");
            },
            Some("status subresource dropped"),
        ),
        (
            "the group renamed",
            |c| {
                c["spec"]["group"] = json!("rightsizer.example");
            },
            Some("/spec/group changed"),
        ),
    ];
    let base = crd(&here());
    for (what, change, want) in rows {
        let mut cur = base.clone();
        change(&mut cur);
        let found = breaking(&base, &cur);
        match want {
            None => assert!(found.is_empty(), "{what}: {found:?}"),
            Some(w) => assert!(
                found.iter().any(|f| f.contains(w)),
                "{what}: want {w:?} in {found:?}"
            ),
        }
    }
    // Widening an enum is additive.
    let mut prev = base.clone();
    prev["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]
        ["properties"]["workload"]["enum"] = json!(["a"]);
    let mut cur = prev.clone();
    cur["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
        ["workload"]["enum"] = json!(["a", "b"]);
    assert_eq!(breaking(&prev, &cur), Vec::<String>::new());
}

/// This tree (the table changes its CRD).
fn here() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

#[test]
#[cfg_attr(
    not(has_previous_version),
    ignore = "no previous version here: run tests/upgrade/build.sh"
)]
fn the_rightsizing_crd_changed_only_additively_since_the_previous_version() {
    let prev_tree = previous::tree().unwrap_or_else(|e| panic!("{e}"));
    let found = breaking(&crd(&prev_tree), &crd(&here()));
    assert!(
        found.is_empty(),
        "the Rightsizing CRD changed incompatibly since {} (make it additive, or write a served-version plan in the README's Upgrading): {found:#?}",
        previous::commit()
    );
}
