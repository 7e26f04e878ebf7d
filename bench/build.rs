//! Builds the filters workspace (which holds the benchmark filters) for wasm32-wasip1, so that
//! the microbenchmarks find `bench_noop.wasm` and `bench_realistic.wasm` through
//! `WASMGATE_FILTERS_DIR`. Shares `filters/build_support.rs` with the integration tests.

#[path = "../filters/build_support.rs"]
mod build_support;

fn main() {
    build_support::build_filters();
}
