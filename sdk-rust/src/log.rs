//! Logging from the helpers, without the proxy-wasm crate's panic on an unexpected status.

/// `proxy_log` levels used by the helpers.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Level {
    Error = 4,
}

/// Logs `message`; a failure to log has nowhere to be reported, so it is ignored.
pub(crate) fn log(level: Level, message: &str) {
    let _ = crate::hostcalls::log(level as u32, message);
}
