//! `rightsizer mutate` as a user runs it: the binary, real files, stdout and stderr.

use std::path::{Path, PathBuf};
use std::process::Command;

fn case(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/golden")
        .join(name)
}

fn mutate(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_rightsizer"))
        .arg("mutate")
        .args(args)
        .env_remove("RIGHTSIZER_ENFORCEMENT")
        .output()
        .expect("binary runs")
}

#[test]
fn yaml_output_matches_the_golden_case() {
    let dir = case("03-pod-enforce-steps-towards-recommendation");
    let out = mutate(&[
        "-f",
        dir.join("input.yaml").to_str().unwrap(),
        "--policies",
        dir.to_str().unwrap(),
        "--recommendations",
        dir.join("recommendations.json").to_str().unwrap(),
        "--enforcement",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: serde_json::Value = serde_yaml::from_slice(&out.stdout).unwrap();
    let want: serde_json::Value =
        serde_yaml::from_str(&std::fs::read_to_string(dir.join("expected.yaml")).unwrap()).unwrap();
    assert_eq!(got, want);
}

#[test]
fn patch_output_and_warnings() {
    let dir = case("18-limitrange-container-bounds");
    let out = mutate(&[
        "-f",
        dir.join("input.yaml").to_str().unwrap(),
        "--policies",
        dir.to_str().unwrap(),
        "--recommendations",
        dir.join("recommendations.json").to_str().unwrap(),
        "--enforcement",
        "-o",
        "patch",
    ]);
    assert!(out.status.success());
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "one line per handled object");
    assert_eq!(lines[0]["object"], "Pod tight/big");
    assert!(lines[0]["patch"].as_array().unwrap().len() >= 2);
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("LimitRange max"), "{stderr}");
}

#[test]
fn bad_input_fails_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("bad.yaml");
    std::fs::write(&f, "a: [").unwrap();
    let out = mutate(&["-f", f.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("document 1"));
    let p = dir.path().join("pol");
    std::fs::create_dir(&p).unwrap();
    std::fs::write(
        p.join("p.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: p, labels: {rightsizer.io/policy: \"true\"}}\ndata:\n  policy.yaml: \"mode: sideways\"\n",
    )
    .unwrap();
    std::fs::write(
        &f,
        "apiVersion: v1\nkind: Pod\nmetadata: {name: a}\nspec: {containers: []}\n",
    )
    .unwrap();
    let out = mutate(&["-f", f.to_str().unwrap(), "--policies", p.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("mode"), "{err}");
}
