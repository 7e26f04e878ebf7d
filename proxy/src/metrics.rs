//! The proxy's metrics, recorded through the `metrics` crate and rendered in Prometheus
//! format by the admin listener.

use std::sync::OnceLock;

use metrics::Counter;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// Installs the process-wide recorder once; later calls return the same handle.
pub fn install() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        // Only fails if another recorder is installed, in which case ours just stays unused.
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}

/// Counters touched on every request, resolved once so the request path does no lookups.
#[derive(Debug, Clone)]
pub struct RequestCounters {
    by_class: [Counter; 5],
}

impl RequestCounters {
    pub fn new() -> Self {
        let c =
            |class: &'static str| metrics::counter!("wasmgate_requests_total", "status" => class);
        RequestCounters {
            by_class: [c("1xx"), c("2xx"), c("3xx"), c("4xx"), c("5xx")],
        }
    }

    /// Counts a finished request by status class (0 = no response sent counts as 5xx).
    pub fn record(&self, status: u16) {
        let i = match status {
            100..=199 => 0,
            200..=299 => 1,
            300..=399 => 2,
            400..=499 => 3,
            _ => 4,
        };
        self.by_class[i].increment(1);
    }
}

impl Default for RequestCounters {
    fn default() -> Self {
        Self::new()
    }
}

/// A filter failed in a request (`kind` is the fault kind, or `unavailable`).
pub fn filter_failure(filter: &str, kind: &'static str, failed_open: bool) {
    let policy = if failed_open { "open" } else { "closed" };
    metrics::counter!(
        "wasmgate_filter_failures_total",
        "filter" => filter.to_string(),
        "kind" => kind,
        "policy" => policy
    )
    .increment(1);
}

/// VM counters of the current generation's filters, as Prometheus text. They live in the ABI
/// host's pools (which know nothing of the metrics crate), so they are rendered on scrape.
pub fn render_pool_stats(generation: &crate::generation::Generation) -> String {
    use std::fmt::Write;
    use std::sync::atomic::Ordering::Relaxed;
    let mut out = String::new();
    let series = [
        (
            "wasmgate_vm_faults_total",
            "VMs thrown away after a trap, deadline or limit",
        ),
        (
            "wasmgate_vm_rebuilds_total",
            "VMs built to replace one that faulted",
        ),
        (
            "wasmgate_vm_rebuild_failures_total",
            "replacement VMs that failed to start",
        ),
    ];
    for (i, (name, help)) in series.iter().enumerate() {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        for f in &generation.filters {
            let stats = f.pool.stats();
            let value = match i {
                0 => stats.faults.load(Relaxed),
                1 => stats.rebuilds.load(Relaxed),
                _ => stats.rebuild_failures.load(Relaxed),
            };
            let _ = writeln!(out, "{name}{{filter=\"{}\"}} {value}", f.name);
        }
    }
    out
}
