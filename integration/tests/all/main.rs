//! End-to-end tests: the real `wasmgate` binary between real HTTP clients and real upstream
//! servers on loopback.

mod bodies;
mod callouts;
mod chain;
mod client_framing;
mod client_http2;
mod client_limits;
mod client_support;
mod client_upgrade;
mod config_errors;
mod grpc;
mod headers;
mod hostile;
mod hostile_headers;
mod hostile_support;
mod hostile_tenants;
mod http2;
mod isolation;
mod passthrough;
mod properties;
mod reload;
mod reload_faults;
mod shared;
mod status_writes;
mod support;
mod traps;
mod upstream_ambiguous;
mod upstream_backpressure;
mod upstream_refused;
mod upstream_reset;
mod upstream_slow_body;
mod upstream_status;
mod upstream_support;
mod upstream_timeouts;
mod upstream_truncated;
