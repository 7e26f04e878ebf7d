//! Builds the filters (../filters) so that the binary can embed its built-in ones, and records
//! the build facts `wasmgate --version` prints (build_info.rs).

mod build_info;
#[path = "../filters/build_support.rs"]
mod build_support;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=build_info.rs");
    build_support::build_filters();
    let manifest = std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default();
    build_info::emit(std::path::Path::new(&manifest).join("..").as_path());
}
