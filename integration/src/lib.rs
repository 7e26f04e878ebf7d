//! # wasmgate-integration
//!
//! End-to-end test harness: the real proxy binary ([`proxy`]), real upstream servers on
//! loopback ([`origin`]), real HTTP clients ([`client`]). The tests themselves are in
//! `tests/all/`.

pub mod capture;
pub mod client;
pub mod grpc;
pub mod load;
pub mod origin;
pub mod proxy;
pub mod redis;
pub mod tls_origin;

/// The directory of the built filters (`*.wasm`), from the build script.
pub const FILTERS_DIR: &str = env!("WASMGATE_FILTERS_DIR");

/// The path of a built filter, e.g. `filter("testkit")`.
pub fn filter(name: &str) -> String {
    format!("{FILTERS_DIR}/{name}.wasm")
}
