//! Where guest log lines go: `proxy_log`, and WASI stdout/stderr.

use crate::plugin::PluginInfo;
use crate::types::LogLevel;

/// Receives every log line a filter writes. The default, [`TracingLog`], emits `tracing` events;
/// tests and the SDK harness capture lines instead.
pub trait LogSink: Send + Sync + 'static {
    /// Records one line from `plugin`.
    fn log(&self, plugin: &PluginInfo, level: LogLevel, message: &str);

    /// The most verbose level that is recorded, reported to guests by `proxy_get_log_level` so
    /// that they can skip formatting lines nobody reads.
    fn level(&self) -> LogLevel;
}

/// Logs guest lines as `tracing` events with target `wasm` and the filter's name.
#[derive(Debug, Default, Clone, Copy)]
pub struct TracingLog;

impl LogSink for TracingLog {
    fn log(&self, plugin: &PluginInfo, level: LogLevel, message: &str) {
        let filter = plugin.name.as_str();
        match level {
            LogLevel::Trace => tracing::trace!(target: "wasm", filter, "{message}"),
            LogLevel::Debug => tracing::debug!(target: "wasm", filter, "{message}"),
            LogLevel::Info => tracing::info!(target: "wasm", filter, "{message}"),
            LogLevel::Warn => tracing::warn!(target: "wasm", filter, "{message}"),
            LogLevel::Error | LogLevel::Critical => {
                tracing::error!(target: "wasm", filter, "{message}")
            }
        }
    }

    fn level(&self) -> LogLevel {
        use tracing::level_filters::LevelFilter;
        match LevelFilter::current() {
            LevelFilter::TRACE => LogLevel::Trace,
            LevelFilter::DEBUG => LogLevel::Debug,
            LevelFilter::INFO => LogLevel::Info,
            LevelFilter::WARN => LogLevel::Warn,
            _ => LogLevel::Error,
        }
    }
}
