//! No import cycle between modules: neither between the top-level modules of either
//! crate (this one and `rightsizer_core`), nor between the files of one directory
//! module (`kube::facts` and `kube::committed`). A cycle means two modules are one
//! module in disguise; cut it by moving the shared type down or passing values in.
//!
//! The graph is read from the sources: every `crate::a::b` (and, inside a directory,
//! `super::b`) path outside comments and the unit tests at the end of a file.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Module -> modules it names. Nodes are `top` and `top::sub`.
type Graph = BTreeMap<String, BTreeSet<String>>;

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src dir") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The code of a file without comments and without its trailing unit tests.
fn code(text: &str) -> String {
    let text = text
        .split("#[cfg(test)]\nmod tests")
        .next()
        .unwrap_or_default();
    text.lines()
        .map(|l| l.split("//").next().unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n")
}

/// The first path segments named after `prefix` (`crate::` or `super::`), including
/// each name of a group `prefix{a, b::c}`.
fn named_after(code: &str, prefix: &str) -> BTreeSet<String> {
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    let mut names = BTreeSet::new();
    for (i, _) in code.match_indices(prefix) {
        let before = code[..i].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
            continue; // `super::super::x`, `foo_crate::x`
        }
        let rest = &code[i + prefix.len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 0usize;
            let mut item = String::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        names.insert(ident(item.trim()));
                        item.clear();
                    }
                    _ if depth == 0 => item.push(c),
                    _ => {}
                }
            }
            names.insert(ident(item.trim()));
        } else {
            names.insert(ident(rest));
        }
    }
    names.retain(|n| !n.is_empty() && n != "self" && n != "super");
    names
}

/// The module graph of the library rooted at `src` (`lib.rs`); `skip` are top-level
/// names that are not part of it (the binary's modules).
fn graph(src: &Path, skip: &[&str]) -> Graph {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let mut g = Graph::new();
    for file in files {
        let rel = file.strip_prefix(src).expect("under src");
        let parts: Vec<String> = rel
            .iter()
            .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_string())
            .collect();
        let top = parts[0].clone();
        if top == "lib" || top == "main" || skip.contains(&top.as_str()) {
            continue;
        }
        // `top/sub.rs` and `top/sub/..` belong to `top::sub`; `top.rs`, `top/mod.rs` to `top`.
        let sub = parts.get(1).filter(|s| parts.len() > 1 && *s != "mod");
        let code = code(&std::fs::read_to_string(&file).expect("read source"));
        let mut add = |from: &str, to: String| {
            g.entry(from.to_string()).or_default().insert(to);
        };
        for name in named_after(&code, "crate::") {
            if name != top {
                add(&top, name);
            } else if let Some(sub) = sub {
                let inner = named_after(&code, &format!("crate::{top}::"));
                for s in inner.into_iter().filter(|s| s != sub) {
                    add(&format!("{top}::{sub}"), format!("{top}::{s}"));
                }
            }
        }
        // `super::x` from `top/sub.rs` is a sibling; from deeper files it is inside `sub`.
        if let (Some(sub), 2) = (sub, parts.len()) {
            for s in named_after(&code, "super::")
                .into_iter()
                .filter(|s| s != sub)
            {
                add(&format!("{top}::{sub}"), format!("{top}::{s}"));
            }
        }
    }
    g
}

/// A cycle of `g` (first node repeated at the end), if there is one.
fn cycle(g: &Graph) -> Option<Vec<String>> {
    fn visit(
        n: &str,
        g: &Graph,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|p| p == n) {
            let mut c = path[at..].to_vec();
            c.push(n.to_string());
            return Some(c);
        }
        if done.contains(n) {
            return None;
        }
        path.push(n.to_string());
        for next in g.get(n).into_iter().flatten() {
            if let Some(c) = visit(next, g, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(n.to_string());
        None
    }
    let mut done = BTreeSet::new();
    g.keys()
        .find_map(|n| visit(n, g, &mut Vec::new(), &mut done))
}

fn assert_acyclic(src: &Path, skip: &[&str]) {
    let g = graph(src, skip);
    assert!(!g.is_empty(), "no module read under {}", src.display());
    if let Some(c) = cycle(&g) {
        panic!(
            "import cycle between modules of {}: {}",
            src.display(),
            c.join(" -> ")
        );
    }
}

#[test]
fn the_io_crate_has_no_module_cycle() {
    // `commands` belongs to the binary (main.rs), not to the library.
    assert_acyclic(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &["commands"],
    );
}

#[test]
fn the_core_crate_has_no_module_cycle() {
    assert_acyclic(&Path::new(env!("CARGO_MANIFEST_DIR")).join("core/src"), &[]);
}

#[test]
fn a_cycle_is_found_and_named() {
    let g: Graph = [
        ("a", vec!["b"]),
        ("b", vec!["c"]),
        ("c", vec!["a"]),
        ("d", vec!["a"]),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.into_iter().map(String::from).collect()))
    .collect();
    assert_eq!(
        cycle(&g),
        Some(
            vec!["a", "b", "c", "a"]
                .into_iter()
                .map(String::from)
                .collect()
        )
    );
    let mut acyclic = g.clone();
    acyclic.get_mut("c").unwrap().clear();
    assert_eq!(cycle(&acyclic), None);
}

#[test]
fn paths_are_read_from_uses_and_groups() {
    let code = code(
        "use crate::{policy::schema::Policy, quantity::{Bytes, MI}};\n\
         // crate::commented\n\
         let x = crate::rules::Rules::default(); use super::super::far;\n\
         #[cfg(test)]\nmod tests { use crate::tested; }",
    );
    let names: Vec<_> = named_after(&code, "crate::").into_iter().collect();
    assert_eq!(names, ["policy", "quantity", "rules"]);
}
