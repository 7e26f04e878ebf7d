//! Build facts for `wasmgate --version`, set as compile-time environment variables: the git
//! commit, and the wasmtime and Pingora versions this binary was built with, read from the
//! workspace's Cargo.lock (so they cannot drift from the dependencies).

use std::path::Path;
use std::process::Command;

/// Emits `WASMGATE_COMMIT`, `WASMGATE_WASMTIME_VERSION` and `WASMGATE_PINGORA_VERSION`.
pub fn emit(workspace: &Path) {
    let lock_path = workspace.join("Cargo.lock");
    println!("cargo:rerun-if-changed={}", lock_path.display());
    let lock = std::fs::read_to_string(&lock_path).unwrap_or_default();
    for (var, package) in [
        ("WASMGATE_WASMTIME_VERSION", "wasmtime"),
        ("WASMGATE_PINGORA_VERSION", "pingora"),
    ] {
        let version = locked_version(&lock, package).unwrap_or_else(|| "unknown".into());
        println!("cargo:rustc-env={var}={version}");
    }
    println!("cargo:rustc-env=WASMGATE_COMMIT={}", commit(workspace));
}

/// The version of `package` in a Cargo.lock text (the first entry of that name).
pub fn locked_version(lock: &str, package: &str) -> Option<String> {
    let wanted = format!("name = \"{package}\"");
    let mut lines = lock.lines();
    while let Some(line) = lines.next() {
        if line.trim() == wanted {
            let version = lines.next()?.trim().strip_prefix("version = ")?;
            return Some(version.trim_matches('"').to_owned());
        }
    }
    None
}

/// `WASMGATE_COMMIT` if set (a container build has no .git: pass it as a build argument),
/// else `git rev-parse --short HEAD`, else "unknown".
fn commit(workspace: &Path) -> String {
    println!("cargo:rerun-if-env-changed=WASMGATE_COMMIT");
    if let Ok(commit) = std::env::var("WASMGATE_COMMIT")
        && !commit.trim().is_empty()
    {
        return commit.trim().to_owned();
    }
    let Some(commit) = git(workspace, &["rev-parse", "--short", "HEAD"]) else {
        return "unknown".into();
    };
    // Rebuild when HEAD moves: HEAD itself, the branch it names, and packed refs. Only paths
    // that exist, since a missing one would rerun this script on every build.
    let mut watched = vec![git(workspace, &["rev-parse", "--git-path", "HEAD"])];
    if let Some(branch) = git(workspace, &["symbolic-ref", "-q", "HEAD"]) {
        watched.push(git(workspace, &["rev-parse", "--git-path", &branch]));
    }
    watched.push(git(workspace, &["rev-parse", "--git-path", "packed-refs"]));
    for path in watched.into_iter().flatten() {
        let path = workspace.join(path);
        if path.exists() {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }
    commit
}

/// The trimmed stdout of a successful `git` command run in `dir`.
fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .output()
        .ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    (out.status.success() && !text.trim().is_empty()).then(|| text.trim().to_owned())
}
