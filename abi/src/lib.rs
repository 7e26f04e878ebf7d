//! # wasmgate-abi
//!
//! The proxy-wasm ABI host on wasmtime: it loads proxy-wasm modules (ABI 0.2.1, 0.2.0 and
//! 0.1.0), runs their VMs under CPU and memory limits, and serves their host calls. It knows
//! nothing of any proxy: an embedder fills an [`HttpStream`] from its own request, runs it
//! through a [`Chain`] with a [`ChainStream`], and applies what the filters changed and asked
//! for.
//!
//! ## Core concepts
//!
//! - [`Runtime`]: one per process. The wasmtime engine, the linker holding every host function,
//!   and the epoch ticker that bounds callback time.
//! - [`CompiledModule`]: a module compiled, validated and linked once ([`Runtime::compile`]).
//! - [`Plugin`]: a module plus a filter's name, ids and configuration.
//! - [`Vm`]: an instance of a plugin with its root context, started once and reused across
//!   requests. Requests create contexts in it.
//! - [`FilterPool`]: a plugin's VMs, one per worker, replaced when they fault.
//! - [`Chain`] / [`ChainStream`]: filters in order, and one stream's trip through them.
//!
//! A guest mistake (a bad pointer, an unknown map type) gets a proxy-wasm status code. A
//! broken host invariant or an exhausted limit (deadline, memory) is a [`Fault`]: the VM is
//! thrown away and the request fails according to the filter's policy.

mod background;
pub mod body;
mod cache;
mod callout;
mod chain;
mod compile;
mod error;
mod exports;
mod fault;
#[cfg(test)]
mod fuzz_tests;
mod guest_log;
pub mod header_map;
mod home;
mod host;
#[cfg(test)]
mod hostile_tests;
mod limits;
mod memory;
mod module;
pub mod pairs;
mod plugin;
mod pool;
mod preempt;
mod runtime;
pub mod shared;
mod state;
mod stream;
#[cfg(test)]
mod testing;
mod types;
mod vm;

pub use body::Body;
pub use cache::CacheStatus;
pub use callout::{
    CalloutError, CalloutFuture, CalloutHandler, CalloutRequest, CalloutResponse, GrpcEvent,
    GrpcFuture, GrpcOutbound, GrpcOutboundSender, GrpcRequest, GrpcSend, grpc_status,
};
pub use chain::{Chain, ChainStream, FilterFailure, Verdict};
pub use error::LoadError;
pub use fault::{Fault, FaultKind};
pub use guest_log::{LogSink, TracingLog};
pub use header_map::{Edit, FieldName, HeaderMap, Pseudo};
pub use home::VmHome;
pub use host::{ENV_FUNCTIONS, WASI_FUNCTIONS, WASI_MODULES};
pub use limits::{Limits, MAX_FD_WRITE_BYTES, MAX_RANDOM_BYTES};
pub use module::CompiledModule;
pub use plugin::{Plugin, PluginConfig, PluginInfo};
pub use pool::{FilterPool, PoolStats, SlotGuard, Unavailable};
pub use runtime::{Runtime, RuntimeConfig};
pub use shared::SharedStores;
pub use state::HostState;
pub use stream::{HttpStream, LocalReply, MapState, StreamInfo};
pub use types::{AbiVersion, Action, BufferType, LogLevel, MapType, Status, StreamType};
pub use vm::{HttpEvent, Vm};
