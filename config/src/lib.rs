//! wasmgate's YAML configuration: the schema, loading, and validation with
//! errors that name the file, line, column and key at fault.
//!
//! # How to use
//!
//! Call [`load`] with the file's path (or [`parse`] with its text), passing the
//! names of the filters compiled into the binary. Every problem found comes
//! back at once in [`Errors`], one `FILE:LINE:COL: KEY: MESSAGE` per line.
//!
//! ```
//! use std::path::Path;
//! use wasmgate_config::{ParseOptions, RequestHead, WasmSource, parse};
//!
//! let yaml = "
//! listen: 127.0.0.1:8080
//! upstreams:
//!   backend:
//!     endpoints: [\"127.0.0.1:9000\"]
//! filters:
//!   - name: add-header
//!     wasm: builtin:add-header
//!     configuration: {name: x-hello, value: world}
//! routes:
//!   - upstream: backend
//! ";
//! let opts = ParseOptions { builtin_filters: vec!["add-header".into()] };
//! let config = parse(yaml, Path::new("wasmgate.yaml"), &opts)?;
//! assert_eq!(config.filters[0].wasm, WasmSource::Builtin("add-header".into()));
//! assert_eq!(config.filters[0].configuration, br#"{"name":"x-hello","value":"world"}"#);
//! let headers = http::HeaderMap::new();
//! let request = RequestHead {
//!     method: "GET",
//!     host: Some("example.com"),
//!     path: "/",
//!     query: None,
//!     headers: &headers,
//! };
//! let (_, route) = config.route_for(&request).expect("a route");
//! assert_eq!(route.filters, ["add-header"]);
//!
//! let bad = yaml.replace("upstream: backend", "upstream: bakend");
//! let errors = parse(&bad, Path::new("wasmgate.yaml"), &opts).unwrap_err();
//! assert_eq!(
//!     errors.to_string(),
//!     r#"wasmgate.yaml:11:5: routes[0].upstream: unknown upstream "bakend" (known: backend)"#
//! );
//! # Ok::<(), wasmgate_config::Errors>(())
//! ```

mod access_log;
mod env;
mod error;
mod forwarding;
mod model;
mod parse;
mod positions;
mod problem;
mod report;
mod schema;
mod syntax;
mod validate;

#[cfg(test)]
mod testing;

use std::path::PathBuf;

pub use error::{Error, Errors, Location};
pub use model::{
    Balance, ClientLimits, Config, DEFAULT_MAX_PAUSED_STREAMS, Endpoint, Filter, HashKey,
    HeaderMatch, HealthCheck, Keepalive, Limits, Outlier, PathMatch, Protocol, QueryMatch,
    Redirect, RequestHead, Respond, Retries, Rewrite, Route, RouteAction, RouteMatch, TlsListener,
    Upstream, UpstreamTimeouts, UpstreamTls, ValueMatch, WasmSource, WeightedUpstream,
};
pub use parse::{load, parse};

pub use access_log::{AccessLog, AccessLogFormat, AccessLogPath, Piece, Variable};
pub use forwarding::{Forwarding, RequestId, XForwarded};

/// What the caller knows that the file cannot say.
#[derive(Debug, Clone, Default)]
pub struct ParseOptions {
    /// Names valid in `wasm: builtin:NAME`: the filters embedded in the binary.
    /// Default empty, so every `builtin:` source is an error.
    pub builtin_filters: Vec<String>,
}

/// Where the proxy looks for its configuration by default: `./wasmgate.yaml`.
pub fn default_config_path() -> PathBuf {
    PathBuf::from(".").join("wasmgate.yaml")
}
