//! `wasmgate --version`: the version, the git commit, and the wasmtime and Pingora versions.

use std::path::Path;
use std::process::Command;

use wasmgate_integration::proxy::run_command;

/// The workspace root (this crate is `integration/`).
fn workspace() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// The locked version of `package`, read here independently of the build script.
fn locked(package: &str) -> String {
    let lock = std::fs::read_to_string(workspace().join("Cargo.lock")).unwrap();
    let entry = lock
        .split("[[package]]")
        .find(|entry| entry.lines().any(|l| l == format!("name = \"{package}\"")))
        .unwrap_or_else(|| panic!("{package} in Cargo.lock"));
    let line = entry
        .lines()
        .find_map(|l| l.strip_prefix("version = "))
        .unwrap();
    line.trim_matches('"').to_owned()
}

#[test]
fn version_prints_commit_and_engine_versions() {
    let out = run_command(&["--version"]);
    assert!(out.status.success(), "{}{}", out.stdout, out.stderr);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{}", out.stdout);
    assert_eq!(
        lines[0],
        format!("wasmgate {}", env!("CARGO_PKG_VERSION")),
        "{}",
        out.stdout
    );
    let commit = lines[1].strip_prefix("commit: ").expect("a commit line");
    // The commit the binary was built from, when this is a git checkout (HEAD may have moved
    // since only if someone commits during the test run).
    let head = Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(workspace())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    match (head, std::env::var("WASMGATE_COMMIT")) {
        (_, Ok(set)) if !set.is_empty() => assert_eq!(commit, set),
        (Some(head), _) => assert_eq!(commit, head, "the build's commit"),
        (None, _) => assert_eq!(commit, "unknown"),
    }
    assert_eq!(lines[2], format!("wasmtime: {}", locked("wasmtime")));
    assert_eq!(lines[3], format!("pingora: {}", locked("pingora")));
    // -V stays the one-line short form.
    let short = run_command(&["-V"]);
    assert_eq!(short.stdout.trim(), lines[0]);
}
