//! Builds the proxy-wasm filters (../filters) before the tests that load them compile,
//! and exports their directory as `WASMGATE_FILTERS_DIR`.

#[path = "../filters/build_support.rs"]
mod build_support;

fn main() {
    // Naming any rerun-if-changed path turns off cargo's default "rerun on any change in the
    // package"; this script must still rerun when it changes itself.
    println!("cargo:rerun-if-changed=build.rs");
    build_support::build_filters();
}
