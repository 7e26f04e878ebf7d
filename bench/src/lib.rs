//! Benchmarks of wasmgate: an end-to-end harness that measures the proxy against nginx, HAProxy
//! and itself (`bench/run`, driven by the `wgbench` binary), the pieces it is made of (a fast
//! upstream, an open-loop load generator, process CPU accounting), and the criterion
//! microbenchmarks of the ABI host in `benches/abi.rs`. See `bench/README.md`.

pub mod client;
pub mod configs;
pub mod driver;
pub mod floor;
pub mod http1;
pub mod loadgen;
pub mod procstat;
pub mod report;
pub mod servers;
pub mod soak;
pub mod stats;
pub mod upstream;
pub mod wrk;
