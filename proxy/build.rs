//! Builds the filters (../filters) so that the binary can embed its built-in ones.

#[path = "../filters/build_support.rs"]
mod build_support;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    build_support::build_filters();
}
