//! End-to-end tests: the real `wasmgate` binary between real HTTP clients and real upstream
//! servers on loopback.

mod chain;
mod config_errors;
mod headers;
mod passthrough;
mod properties;
mod support;
mod traps;
