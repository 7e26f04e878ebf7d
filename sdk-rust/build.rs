//! Builds what this crate's own tests load, for them only: the proxy-wasm filters in
//! ../filters (exported as `WASMGATE_FILTERS_DIR`) and the example filter in
//! examples/require-header, which uses this crate's guest helpers (its module's path exported
//! as `WASMGATE_SDK_EXAMPLE_WASM`).
//!
//! It does so only with the `internal-test-fixtures` feature, which this crate's
//! dev-dependency on itself turns on for its tests, and never for a wasm32 build. A filter
//! crate that depends on this one, natively or as a guest, builds nothing here: building
//! filters from a filter's build would be pointless at best and recursive at worst.

#[path = "../filters/build_support.rs"]
mod build_support;

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The same switch as the filters': use what is built, build nothing.
const SKIP_VAR: &str = "WASMGATE_SKIP_FILTER_BUILD";

fn main() {
    // Naming any rerun-if-changed path turns off cargo's default "rerun on any change in the
    // package"; this script must still rerun when it changes itself.
    println!("cargo:rerun-if-changed=build.rs");
    let target = env::var("TARGET").unwrap_or_default();
    let fixtures = env::var_os("CARGO_FEATURE_INTERNAL_TEST_FIXTURES").is_some();
    if !fixtures || target.starts_with("wasm32") {
        return;
    }
    build_support::build_filters();
    build_example();
}

/// Builds the example filter for wasm32-wasip1 into OUT_DIR.
fn build_example() {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let example = manifest_dir.join("examples").join("require-header");
    // The example is built from the guest half of this crate too.
    for path in [
        example.join("Cargo.toml"),
        example.join("src"),
        manifest_dir.join("src"),
        manifest_dir.join("Cargo.toml"),
    ] {
        println!("cargo:rerun-if-changed={}", path.display());
    }
    println!("cargo:rerun-if-env-changed={SKIP_VAR}");
    let target_dir = PathBuf::from(env::var_os("OUT_DIR").expect("set by cargo")).join("example");
    let wasm = target_dir.join("wasm32-wasip1/release/require_header.wasm");
    if env::var_os(SKIP_VAR).is_some_and(|v| !v.is_empty() && v != "0") {
        // Use an earlier build if there is one; the example's tests skip themselves otherwise.
        if wasm.is_file() {
            println!(
                "cargo:rustc-env=WASMGATE_SDK_EXAMPLE_WASM={}",
                wasm.display()
            );
        } else {
            println!("cargo:warning={SKIP_VAR} is set: the example filter is not built");
        }
        return;
    }
    let output = nested_cargo()
        .args(["build", "--release", "--target", "wasm32-wasip1"])
        .arg("--manifest-path")
        .arg(example.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target_dir)
        .current_dir(&example)
        .output();
    let output = match output {
        Ok(output) => output,
        Err(e) => panic!("cannot run cargo to build the example filter: {e}"),
    };
    if !output.status.success() {
        panic!(
            "building the example filter {} failed:\n{}",
            example.display(),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let wasm = target_dir.join("wasm32-wasip1/release/require_header.wasm");
    assert!(
        wasm.is_file(),
        "the example build made no {}",
        wasm.display()
    );
    println!(
        "cargo:rustc-env=WASMGATE_SDK_EXAMPLE_WASM={}",
        wasm.display()
    );
}

/// A cargo that sees none of this build's settings: only what locates the toolchain, its
/// caches and the network, and the jobserver (so that it shares this build's job tokens).
/// Everything else cargo set for this script (flags, profile, target, the clippy wrapper)
/// would leak into a wasm32 build or point it at this build's locked target dir.
fn nested_cargo() -> Command {
    const KEEP: &[&str] = &[
        "PATH",
        "HOME",
        "TMPDIR",
        "CARGO_HOME",
        "RUSTUP_HOME",
        "RUSTUP_TOOLCHAIN",
        "RUSTC",
        "RUSTC_WRAPPER",
        "CARGO_MAKEFLAGS",
        "MAKEFLAGS",
        "MFLAGS",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "NO_PROXY",
        "http_proxy",
        "https_proxy",
        "no_proxy",
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
    ];
    const KEEP_PREFIXES: &[&str] = &["CARGO_NET_", "CARGO_HTTP_", "CARGO_REGISTRIES_"];
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(Path::new(&cargo));
    cmd.env_clear();
    for (key, value) in env::vars_os() {
        let keep = key
            .to_str()
            .is_some_and(|k| KEEP.contains(&k) || KEEP_PREFIXES.iter().any(|p| k.starts_with(p)));
        if keep {
            cmd.env(key, value);
        }
    }
    cmd
}
