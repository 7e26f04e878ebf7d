//! Benchmarks of the ABI host and the proxy.
