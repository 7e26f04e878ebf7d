//! A test harness that runs `.wasm` filters in the real wasmgate ABI host.
//!
//! [`Harness`] loads one filter, or a chain of them, with their configurations into
//! `wasmgate_abi` — the host the proxy runs, with the same VMs, limits, host calls and chain
//! semantics — and drives requests through the chain the way the proxy does:
//!
//! 1. [`Harness::get`] (or [`Harness::request`], …) builds the client's request;
//!    [`RequestBuilder::send`] runs every filter's `on_http_request_headers` in chain order,
//!    then, if the headers go on, `on_http_request_body` for each body chunk. The
//!    [`Exchange`] tells what happened ([`Outcome`]): the request was forwarded (and
//!    [`Exchange::upstream_request`] is what the upstream receives), a filter answered with a
//!    local reply (which the response callbacks have already seen, as in Envoy), a filter
//!    failed (the client gets 503), kept the stream paused, or reset it.
//! 2. If the request was forwarded, [`Exchange::respond`] gives the synthetic upstream
//!    response; `on_http_response_headers` run in reverse chain order, then
//!    `on_http_response_body` per chunk and `on_http_response_trailers`, and
//!    [`Exchange::response`] is what the client receives.
//! 3. [`Exchange::finish`] ends the stream: every filter's `on_log`, `on_done` and
//!    `on_delete`. [`UpstreamResponse::finish`] does steps 2 and 3 at once.
//!
//! Guest log lines are captured with their level and filter name ([`Harness::logs`]), and
//! echoed to the test's output (which `cargo test` shows when a test fails).
//!
//! The proxy's own rules are applied as it applies them (see the proxy's `service.rs` and
//! `headers.rs`): the Host header is `:authority`; edits of framing and connection headers
//! (`content-length`, `transfer-encoding`, `connection`, …) are not forwarded, but a filter
//! that removes `content-length` makes the proxy frame the body itself (chunked for HTTP/1.1);
//! a body whose length a filter changed while `content-length` stayed is refused (500, or an
//! aborted response); `:scheme` edits do not change the upstream's scheme; a local reply gets
//! `content-length` for its body; a failed filter gives 503 with a plain-text body, a pause
//! nobody resumes 504, a body over a buffering filter's limit 413. `end_of_stream` is computed
//! as the proxy computes it. A message the test leaves unframed gets the framing a client or
//! origin would give it (`content-length`, or chunked when it has trailers).
//!
//! A filter's HTTP callouts (`dispatch_http_call`) go to upstreams the test plays
//! ([`Filter::upstream`]): the test answers each call, and [`Harness::callouts`] lists them.
//! The answer reaches the filter's `on_http_call_response`, which may resume the paused
//! stream, as in the proxy.
//!
//! Request trailers reach the upstream but not the filters: the proxy does not show them.
//!
//! Each [`Harness`] is a host of its own — runtime (with the shared data, queues and metrics
//! filters write), VMs (one per filter, like one worker thread of the proxy) and log — so
//! tests running in parallel never see each other. Compiled modules go through the host's
//! module cache, in the cargo target directory by default
//! ([`HarnessBuilder::cache_dir`]): a module is compiled once, not once per test or per run.
//!
//! # Example
//!
//! ```no_run
//! use wasmgate_sdk::testing::{Harness, Outcome};
//!
//! # async fn example() -> Result<(), wasmgate_sdk::testing::Error> {
//! let harness = Harness::builder()
//!     .filter(
//!         "target/wasm32-wasip1/release/add_header.wasm",
//!         serde_json::json!({"request": {"set": {"x-env": "test"}}}),
//!     )
//!     .build()?;
//! let exchange = harness.get("/hello").header("x-a", "1").send().await;
//! assert!(matches!(exchange.outcome(), Outcome::Forwarded));
//! assert_eq!(exchange.upstream_request().header("x-env"), Some("test"));
//! let done = exchange.respond(200).header("server", "origin").finish().await;
//! assert_eq!(done.response().status(), 200);
//! assert!(harness.logs().is_empty());
//! # Ok(())
//! # }
//! ```

mod callout;
mod exchange;
mod harness;
mod logs;
mod message;
mod wire;

pub use callout::Callout;
pub use exchange::{Completed, Exchange, Outcome, RequestBuilder, UpstreamResponse};
pub use harness::{Configuration, Error, Filter, Harness, HarnessBuilder, Wasm};
pub use logs::{LogLine, Logs};
pub use message::{Request, Response};

pub use wasmgate_abi::{
    CalloutError, Fault, FaultKind, FilterFailure, HttpStream, Limits, LoadError, LocalReply,
    LogLevel,
};
