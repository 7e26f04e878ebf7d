//! # wasmgate
//!
//! A reverse proxy on Pingora that runs ordered chains of proxy-wasm filters (the ABI of
//! Envoy's Wasm filters) through the [`wasmgate_abi`] host.

pub mod access_log;
pub mod admin;
pub mod builtin;
pub mod callouts;
pub mod cli;
pub mod client;
pub mod demo;
pub mod forwarding;
pub mod generation;
mod headers;
mod linger;
pub mod metrics;
pub mod pause;
pub mod reload;
mod routing;
pub mod server;
pub mod service;
pub mod upstream;
pub mod watch;
