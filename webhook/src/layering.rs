//! The module structure, checked from the sources:
//!
//! - No import cycle between modules: neither between the top-level modules of either
//!   crate (this one and `rightsizer_core`), nor between the files of one directory
//!   module (`kube::facts` and `kube::committed`). A cycle means two modules are one
//!   module in disguise; cut it by moving the shared type down or passing values in.
//! - The core's top-level modules keep the layer order its crate documentation lists
//!   (`webhook/core/src/lib.rs`): a module names only modules before it.
//! - One canonical path per item: this crate names its own modules as `crate::x` and
//!   the core's items as `rightsizer_core::…`, re-exports none of them (`pub use`),
//!   and the two crates share no module name.
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
    uncommented(
        text.split("#[cfg(test)]\nmod tests")
            .next()
            .unwrap_or_default(),
    )
}

/// The code of a file without comments.
fn uncommented(text: &str) -> String {
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

/// The modules a crate root (`lib.rs`, `main.rs`) declares: `mod x;`, `pub mod x {`,
/// and the pair `#[cfg(feature = "test-support")] pub mod x;` / `#[cfg(not(..))]
/// pub(crate) mod x;` of a module public only for the integration tests (the attribute
/// is a line of its own).
fn declared_modules(root: &str) -> BTreeSet<String> {
    uncommented(root)
        .lines()
        .filter_map(|l| {
            let l = l.trim_start();
            // `pub mod`, `pub(crate) mod`, `pub(super) mod`, `mod`.
            let l = match l.strip_prefix("pub") {
                Some(rest) if rest.starts_with('(') => rest.split_once(") ")?.1,
                Some(rest) => rest.trim_start(),
                None => l,
            };
            let name = l.strip_prefix("mod ")?;
            let end = name.find([';', ' ', '{'])?;
            Some(name[..end].to_string())
        })
        .collect()
}

/// What introduces the layer order in the core's crate documentation.
const LAYERS_MARKER: &str = "(the I/O crate's layering test reads this list):";

/// The core's top-level modules in their documented order, lowest first: the `a < b <
/// ...` list on the `//!` lines after [`LAYERS_MARKER`].
fn documented_layers(lib_rs: &str) -> Vec<String> {
    let mut doc = lib_rs
        .lines()
        .map_while(|l| l.strip_prefix("//!"))
        .map(str::trim);
    if !doc.any(|l| l.ends_with(LAYERS_MARKER)) {
        return Vec::new();
    }
    doc.take_while(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
        .trim_end_matches('.')
        .split('<')
        .map(|m| m.trim().to_string())
        .collect()
}

/// Edges between top-level modules of `g` that go up the order `layers` (or leave it).
fn layer_violations(g: &Graph, layers: &[String]) -> Vec<String> {
    let at = |m: &str| layers.iter().position(|l| l == m);
    let mut bad = Vec::new();
    for (from, tos) in g.iter().filter(|(from, _)| !from.contains("::")) {
        for to in tos.iter().filter(|to| !to.contains("::")) {
            match (at(from), at(to)) {
                (Some(a), Some(b)) if b < a => {}
                (Some(_), Some(_)) => bad.push(format!("{from} names {to}, a later layer")),
                _ => bad.push(format!("{from} names {to}: not both in the layer order")),
            }
        }
    }
    bad
}

/// Non-canonical paths in one file of this crate, whose root declares `modules`: a
/// `crate::x` where `x` is not one of them (a core item is `rightsizer_core::…`), and
/// a `pub use` (of any visibility) of a core item.
fn non_canonical_in(text: &str, modules: &BTreeSet<String>) -> Vec<String> {
    let code = uncommented(text);
    let mut bad: Vec<String> = named_after(&code, "crate::")
        .into_iter()
        .filter(|n| !modules.contains(n))
        .map(|n| format!("crate::{n} (not a module of this crate)"))
        .collect();
    for (i, _) in code.match_indices("use ") {
        if code[..i]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_alphanumeric() || c == '_')
        {
            continue; // `reuse `, `r#use`
        }
        // What precedes `use` in its statement: `pub`, `pub(crate)`, an attribute...
        let from = code[..i].rfind(['\n', ';', '{', '}']).map_or(0, |j| j + 1);
        let vis = code[from..i].trim_end();
        let public = vis.ends_with("pub") || (vis.ends_with(')') && vis.contains("pub("));
        let statement = code[i..].split(';').next().unwrap_or_default();
        if public && statement.contains("rightsizer_core") {
            let vis = vis.rsplit(' ').next().unwrap_or(vis);
            let statement = statement.split_whitespace().collect::<Vec<_>>().join(" ");
            bad.push(format!("{vis} {statement} (re-exports a core item)"));
        }
    }
    bad
}

/// [`non_canonical_in`] over every file of this crate (library and binary).
fn non_canonical(src: &Path) -> Vec<String> {
    let read = |p: &Path| std::fs::read_to_string(p).expect("read source");
    let lib = declared_modules(&read(&src.join("lib.rs")));
    let bin = declared_modules(&read(&src.join("main.rs")));
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let mut bad = Vec::new();
    for file in files {
        let rel = file.strip_prefix(src).expect("under src");
        if rel == Path::new("layering.rs") {
            continue; // this file's fixtures name such paths on purpose
        }
        let in_bin = rel.starts_with("main.rs") || rel.starts_with("commands");
        let modules = if in_bin { &bin } else { &lib };
        for b in non_canonical_in(&read(&file), modules) {
            bad.push(format!("{}: {b}", rel.display()));
        }
    }
    bad
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

#[test]
fn the_core_keeps_its_documented_layers() {
    let core = Path::new(env!("CARGO_MANIFEST_DIR")).join("core/src");
    let lib = std::fs::read_to_string(core.join("lib.rs")).expect("read core lib.rs");
    let layers = documented_layers(&lib);
    let listed: BTreeSet<String> = layers.iter().cloned().collect();
    assert_eq!(
        listed,
        declared_modules(&lib),
        "core/src/lib.rs documents the layer order of exactly its top-level modules"
    );
    let bad = layer_violations(&graph(&core, &[]), &layers);
    assert!(bad.is_empty(), "against the documented layers: {bad:#?}");
}

#[test]
fn every_path_is_the_canonical_one() {
    let bad = non_canonical(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
    assert!(bad.is_empty(), "non-canonical paths: {bad:#?}");
}

#[test]
fn the_crates_share_no_module_name() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let read = |p: &str| std::fs::read_to_string(dir.join(p)).expect("read crate root");
    let io = declared_modules(&read("src/lib.rs"));
    let core = declared_modules(&read("core/src/lib.rs"));
    let both: Vec<_> = io.intersection(&core).collect();
    assert!(both.is_empty(), "modules in both crates: {both:?}");
}

#[test]
fn layers_are_read_from_the_doc_and_checked() {
    let lib = format!(
        "//! Layered {LAYERS_MARKER}\n//! a < b <\n//! c.\n//!\n//! More.\n\npub mod a;\nmod b;\npub mod c {{}}\n"
    );
    let layers = documented_layers(&lib);
    assert_eq!(layers, ["a", "b", "c"]);
    assert_eq!(
        declared_modules(&lib).into_iter().collect::<Vec<_>>(),
        ["a", "b", "c"]
    );
    let g = |edges: &[(&str, &str)]| {
        let mut g = Graph::new();
        for (from, to) in edges {
            g.entry(from.to_string())
                .or_default()
                .insert(to.to_string());
        }
        g
    };
    assert!(layer_violations(&g(&[("c", "a"), ("b", "a"), ("c", "c::x")]), &layers).is_empty());
    assert_eq!(
        layer_violations(&g(&[("a", "c"), ("b", "d")]), &layers),
        [
            "a names c, a later layer",
            "b names d: not both in the layer order"
        ]
    );
}

#[test]
fn a_non_canonical_path_is_found() {
    let modules: BTreeSet<String> = ["kube".to_string()].into();
    let code = "use crate::kube::Facts;\n\
                use crate::{kube::x, quantity::Bytes};\n\
                // crate::commented\n\
                use rightsizer_core::policy::schema::Policy;\n\
                pub use rightsizer_core::quantity;\n\
                pub(crate) use rightsizer_core::rules::{Rules, Sizes};\n\
                pub use crate::kube::Facts as Again;\n";
    assert_eq!(
        non_canonical_in(code, &modules),
        [
            "crate::quantity (not a module of this crate)",
            "pub use rightsizer_core::quantity (re-exports a core item)",
            "pub(crate) use rightsizer_core::rules::{Rules, Sizes} (re-exports a core item)",
        ]
    );
}

#[test]
fn modules_are_declared_with_any_visibility() {
    let lib =
        "pub mod a;\npub(crate) mod b;\npub(super) mod c {}\nmod d;\n// mod e;\nuse x::mod_f;\n";
    assert_eq!(
        declared_modules(lib).into_iter().collect::<Vec<_>>(),
        ["a", "b", "c", "d"]
    );
    // A module public only with the `test-support` feature is declared twice, each
    // declaration under its `#[cfg]`: it is one module.
    let lib = "#[cfg(feature = \"test-support\")]\npub mod g;\n\
               #[cfg(not(feature = \"test-support\"))]\npub(crate) mod g;\n\
               pub mod h {\n    #[cfg(feature = \"test-support\")]\n    pub mod i;\n}\n";
    assert_eq!(
        declared_modules(lib).into_iter().collect::<Vec<_>>(),
        ["g", "h", "i"]
    );
}
