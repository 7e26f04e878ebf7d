//! # wasmgate-sdk
//!
//! What a wasmgate filter author uses, on top of the official
//! [`proxy-wasm`](https://docs.rs/proxy-wasm) Rust SDK. The crate has two halves, selected by
//! the target it is compiled for:
//!
//! - **In the filter**: small helpers that return `Result` or `Option` where the proxy-wasm
//!   SDK panics (a panic in a filter is a trap, and a trap fails the request): [`config`]
//!   reads and parses the plugin configuration and logs why it was rejected,
//!   [`headers::Headers`] reads and writes header maps without panicking on non-UTF-8 values
//!   or refused writes, and [`property`] reads typed properties in Envoy's and Kong's
//!   encodings.
//! - **In the filter's tests** (native targets only): `testing::Harness` loads the built
//!   `.wasm` (or a chain of them) into the real wasmgate ABI host — the same code the proxy
//!   runs — and drives requests and synthetic upstream responses through it, so a filter is
//!   tested in seconds without starting a proxy.
//!
//! The helpers that make host calls compile on every target, as the proxy-wasm crate's do, so
//! that a filter crate also builds natively for its tests; they only work inside a wasm VM.
//! The pure pieces ([`config::parse_json`], [`config::parse_text`], the [`property`]
//! decoders, [`Status`]) work everywhere, so a filter can unit-test its configuration parsing
//! natively.
//!
//! # How to use
//!
//! In the filter's `Cargo.toml`:
//!
//! ```toml
//! [lib]
//! crate-type = ["cdylib"]
//!
//! [dependencies]
//! proxy-wasm = "0.2"
//! wasmgate-sdk = { path = "…/sdk-rust", features = ["json"] }
//! serde = { version = "1", features = ["derive"] }
//!
//! [dev-dependencies]
//! tokio = { version = "1", features = ["macros", "rt"] }
//! ```
//!
//! A test, run with a plain `cargo test` after `cargo build --release --target
//! wasm32-wasip1`:
//!
//! ```no_run
//! # #[cfg(not(target_arch = "wasm32"))]
//! # async fn example() -> Result<(), wasmgate_sdk::testing::Error> {
//! use wasmgate_sdk::testing::Harness;
//!
//! let harness = Harness::builder()
//!     .filter(
//!         "target/wasm32-wasip1/release/my_filter.wasm",
//!         serde_json::json!({"header": "x-hello"}),
//!     )
//!     .build()?;
//! let exchange = harness.get("/hello").header("x-a", "1").send().await;
//! assert_eq!(exchange.upstream_request().header("x-hello"), Some("world"));
//! let done = exchange.respond(200).header("server", "origin").finish().await;
//! assert_eq!(done.response().status(), 200);
//! # Ok(())
//! # }
//! ```
//!
//! `sdk-rust/README.md` is the filter author's guide: writing, building, testing and running a
//! filter in wasmgate.

#![warn(missing_docs)]

pub mod config;
pub mod headers;
mod hostcalls;
mod log;
mod pairs;
pub mod property;
mod status;

#[cfg(not(target_arch = "wasm32"))]
pub mod testing;

pub use status::Status;
