//! Builds the filters workspace for wasm32-wasip1 from a build script of the main workspace.
//! Std-only, so a build script can include it with `#[path]` and call [`build_filters`].

use std::env;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

const TARGET: &str = "wasm32-wasip1";

/// Modules the integration tests load; a build that lacks one is a broken build.
const EXPECTED: &[&str] = &[
    "add_header.wasm",
    "body_rewrite.wasm",
    "ext_auth.wasm",
    "rate_limit.wasm",
    "testkit.wasm",
    "grpc_probe.wasm",
];

/// Set to anything but "" or "0" to skip the nested cargo and use whatever is already built
/// (e.g. CI built the filters in an earlier step, or no wasm32-wasip1 target is at hand).
const SKIP_VAR: &str = "WASMGATE_SKIP_FILTER_BUILD";

/// Variables cargo sets for the *outer* build script or that carry the outer build's settings.
/// Left in place they would leak host flags into a wasm build (RUSTFLAGS, profiles), point the
/// nested cargo at the outer target dir, whose lock the outer cargo holds (a deadlock), or run
/// the filters through clippy-driver with the outer crate's arguments.
const SCRUB: &[&str] = &[
    "RUSTFLAGS",
    "CARGO_ENCODED_RUSTFLAGS",
    "CARGO_BUILD_RUSTFLAGS",
    "CARGO_TARGET_DIR",
    "CARGO_BUILD_TARGET",
    "CARGO_BUILD_TARGET_DIR",
    "RUSTC_WORKSPACE_WRAPPER",
    "CARGO_PRIMARY_PACKAGE",
    "CARGO_RUSTC_CURRENT_DIR",
    "RUSTC_LINKER",
    "TARGET",
    "HOST",
    "OUT_DIR",
    "OPT_LEVEL",
    "PROFILE",
    "DEBUG",
    "NUM_JOBS",
];

/// Prefixes of the same kind: per-build-script facts and per-profile overrides.
const SCRUB_PREFIXES: &[&str] = &[
    "CARGO_CFG_",
    "CARGO_FEATURE_",
    "CARGO_PKG_",
    "CARGO_MANIFEST_",
    "CARGO_PROFILE_",
];

/// Builds every filter in release mode and returns the absolute directory holding the `.wasm`
/// files; also tells cargo when to rerun and exports `WASMGATE_FILTERS_DIR` to the crate.
///
/// The jobserver variables (`CARGO_MAKEFLAGS`, `MAKEFLAGS`) are kept on purpose: the nested
/// cargo then shares the outer build's job tokens instead of starting as many jobs again.
///
/// # Panics
/// If the filters directory cannot be found, the nested cargo fails (its stderr is included,
/// plus a hint when the wasm32-wasip1 target is missing), or an expected `.wasm` is absent.
pub fn build_filters() -> PathBuf {
    let filters = filters_dir();
    print_rerun_rules(&filters);
    let out = filters.join("target").join(TARGET).join("release");

    let skip = env::var_os(SKIP_VAR).is_some_and(|v| !v.is_empty() && v != "0");
    if skip {
        println!(
            "cargo:warning={SKIP_VAR} is set: using the filters already in {}",
            out.display()
        );
    } else {
        run_cargo(&filters);
    }

    let missing: Vec<&str> = EXPECTED
        .iter()
        .copied()
        .filter(|f| !out.join(f).is_file())
        .collect();
    if !missing.is_empty() {
        let message = format!(
            "missing filter modules in {}: {}",
            out.display(),
            missing.join(", ")
        );
        if !skip {
            panic!("{message} (the filters workspace built, but without them: check its members)");
        }
        // When skipping, the tests that need them will say so; other targets may still build.
        println!("cargo:warning={message}");
    }

    println!("cargo:rustc-env=WASMGATE_FILTERS_DIR={}", out.display());
    out
}

/// The directory holding this file, found from `file!()`, which rustc gives relative to the
/// outer workspace root (an ancestor of `CARGO_MANIFEST_DIR`) or as an absolute path.
fn filters_dir() -> PathBuf {
    let this_file = Path::new(file!());
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let found = if this_file.is_absolute() {
        Some(this_file.to_path_buf())
    } else {
        manifest_dir
            .ancestors()
            .map(|dir| dir.join(this_file))
            .find(|p| p.is_file())
    };
    let dir = found.and_then(|file| file.parent()?.canonicalize().ok());
    let manifest_dir = manifest_dir.canonicalize().unwrap_or(manifest_dir);
    match dir {
        // A crate inside the filters workspace would make the nested cargo run this script again.
        Some(dir) if manifest_dir.starts_with(&dir) => panic!(
            "build_support: {} is inside the filters workspace {}; it would build itself",
            manifest_dir.display(),
            dir.display()
        ),
        Some(dir) if dir.join("Cargo.toml").is_file() => dir,
        _ => panic!(
            "build_support: cannot locate the filters workspace from {} (CARGO_MANIFEST_DIR={})",
            this_file.display(),
            manifest_dir.display()
        ),
    }
}

/// Watches the workspace files and each filter crate's manifest and sources, never the whole
/// directory: `target/` changes on every build and would make every build rerun this.
fn print_rerun_rules(filters: &Path) {
    println!("cargo:rerun-if-env-changed={SKIP_VAR}");
    for file in ["Cargo.toml", "Cargo.lock", "build_support.rs", ".cargo"] {
        rerun_if_exists(&filters.join(file));
    }
    for krate in filter_crates(filters) {
        for file in ["Cargo.toml", "build.rs", "src"] {
            rerun_if_exists(&krate.join(file));
        }
    }
}

// A path that does not exist makes cargo rerun the script every time, so name only real ones.
fn rerun_if_exists(path: &Path) {
    if path.exists() {
        println!("cargo:rerun-if-changed={}", path.display());
    }
}

/// Directories below `filters` with a Cargo.toml, skipping build output, sources and dot dirs.
fn filter_crates(filters: &Path) -> Vec<PathBuf> {
    let mut crates = Vec::new();
    let mut pending = vec![filters.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name();
            let skip = name == "target" || name == "src" || name.to_string_lossy().starts_with('.');
            if skip || !path.is_dir() {
                continue;
            }
            if path.join("Cargo.toml").is_file() {
                crates.push(path.clone());
            }
            pending.push(path);
        }
    }
    crates.sort();
    crates
}

fn run_cargo(filters: &Path) {
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(&cargo);
    cmd.arg("build")
        .arg("--release")
        .arg("--target")
        .arg(TARGET)
        .arg("--manifest-path")
        .arg(filters.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(filters.join("target"))
        // Config discovery starts at the cwd: let it find filters/.cargo, not the outer crate's.
        .current_dir(filters);
    for (key, _) in env::vars_os() {
        if should_scrub(&key) {
            cmd.env_remove(&key);
        }
    }
    // Under Miri, RUSTC and RUSTC_WRAPPER point at Miri's own drivers, which cannot build wasm.
    if env::var_os("CARGO_CFG_MIRI").is_some() {
        cmd.env_remove("RUSTC").env_remove("RUSTC_WRAPPER");
    }

    let output = match cmd.output() {
        Ok(output) => output,
        Err(e) => panic!(
            "build_support: cannot run {}: {e}",
            Path::new(&cargo).display()
        ),
    };
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let missing_target = stderr.contains("may not be installed")
            || stderr.contains("can't find crate for `core`");
        let hint = if missing_target {
            format!(
                "\nhint: the {TARGET} target is missing; install it with `rustup target add {TARGET}`"
            )
        } else {
            String::new()
        };
        // Only the arguments: Command's Debug would also list every scrubbed variable.
        let args: Vec<_> = cmd.get_args().map(OsStr::to_string_lossy).collect();
        panic!(
            "building the proxy-wasm filters failed ({}): {} {}\n{stderr}{hint}",
            output.status,
            Path::new(&cargo).display(),
            args.join(" ")
        );
    }
}

fn should_scrub(key: &OsStr) -> bool {
    // Cargo never sets non-UTF-8 names, so those are the user's own and stay.
    let Some(key) = key.to_str() else {
        return false;
    };
    SCRUB.contains(&key)
        || SCRUB_PREFIXES.iter().any(|p| key.starts_with(p))
        // Per-target flags (CARGO_TARGET_<TRIPLE>_RUSTFLAGS) are RUSTFLAGS by another name.
        || (key.starts_with("CARGO_TARGET_") && key.ends_with("_RUSTFLAGS"))
}
