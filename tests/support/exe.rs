//! The `rightsizer` binary the tests run: the shipping crate's own (webhook/src/main.rs).
//!
//! The tests are a package of their own (`rightsizer-tests`, tests/Cargo.toml), and cargo
//! gives `CARGO_BIN_EXE_<name>` only to the tests and benches of the package that has the
//! binary. So in a test the first call runs `cargo build --package rightsizer --bin
//! rightsizer` with the profile, target directory and target of this test binary, and takes
//! the path cargo reports: the binary as shipped (the features `cargo build` resolves, not
//! those the tests' dev-dependencies add), compiled once per profile and then only checked
//! (about a second). The benches (webhook/Cargo.toml) include this file too and get
//! cargo's `CARGO_BIN_EXE_rightsizer`.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// Path of the up-to-date `rightsizer` binary (built on first call).
pub fn rightsizer() -> &'static Path {
    static EXE: OnceLock<PathBuf> = OnceLock::new();
    EXE.get_or_init(|| match option_env!("CARGO_BIN_EXE_rightsizer") {
        Some(bench) => PathBuf::from(bench),
        None => build(),
    })
}

fn build() -> PathBuf {
    // This test binary is <target dir>/[<triple>/]<profile dir>/deps/<name>-<hash>.
    let me = std::env::current_exe().expect("path of the test binary");
    let profile_dir = me
        .parent()
        .and_then(Path::parent)
        .expect("test binary under <profile dir>/deps");
    let mut target_dir = profile_dir.parent().expect("<target dir>");
    // Set by tests/build.rs.
    let triple = option_env!("RIGHTSIZER_TESTS_TARGET").unwrap_or_default();
    let cross = !triple.is_empty() && target_dir.file_name().is_some_and(|n| n == triple);
    if cross {
        target_dir = target_dir.parent().expect("<target dir>");
    }
    let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") => "dev",
        Some(other) => other,
        None => panic!("no profile directory in {}", me.display()),
    };
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| OsString::from(env!("CARGO")));
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--package", "rightsizer", "--bin", "rightsizer"])
        .args([
            "--profile",
            profile,
            "--message-format",
            "json-render-diagnostics",
        ])
        .arg("--target-dir")
        .arg(target_dir)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if cross {
        cmd.args(["--target", triple]);
    }
    // What cargo set for this test binary (its package's name, manifest, ...) describes this
    // package, not the build; and a build script that watches one of these (ring watches
    // CARGO_MANIFEST_DIR) would otherwise rerun, and its dependents rebuild, at every
    // alternation between this build and one from a shell.
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if name.starts_with("CARGO_PKG_")
            || matches!(
                &*name,
                "CARGO_MANIFEST_DIR"
                    | "CARGO_MANIFEST_PATH"
                    | "CARGO_MANIFEST_LINKS"
                    | "CARGO_CRATE_NAME"
                    | "CARGO_BIN_NAME"
                    | "CARGO_PRIMARY_PACKAGE"
                    | "CARGO_TARGET_TMPDIR"
                    | "OUT_DIR"
            )
        {
            cmd.env_remove(&*name);
        }
    }
    let out = cmd.output().expect("run cargo build");
    assert!(
        out.status.success(),
        "cargo build --package rightsizer failed ({})",
        out.status
    );
    let exe = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == "rightsizer")
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
        .expect("cargo reported the rightsizer executable");
    assert!(exe.is_file(), "{} is not a file", exe.display());
    exe
}
