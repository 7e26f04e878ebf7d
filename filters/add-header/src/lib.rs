//! add-header: a proxy-wasm filter that removes, sets and adds request and response headers
//! as its JSON plugin configuration says (see README.md for the format).

mod config;

use std::rc::Rc;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, LogLevel, MapType, Status};

use crate::config::{Config, Edits};

proxy_wasm::main! {{
    // Also installs the SDK's panic hook, so a panic reaches the host log before the trap.
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| Box::new(AddHeaderRoot::default()));
}}

/// Holds the parsed configuration; one per plugin instance.
#[derive(Debug, Default)]
struct AddHeaderRoot {
    // Shared with every HTTP context: a reconfigure swaps the Rc, streams in flight keep theirs.
    config: Rc<Config>,
}

impl Context for AddHeaderRoot {}

impl RootContext for AddHeaderRoot {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let bytes = match hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX) {
            Ok(bytes) => bytes.unwrap_or_default(),
            Err(status) => {
                log(
                    LogLevel::Error,
                    &format!("add-header: cannot read the configuration: {status:?}"),
                );
                return false;
            }
        };
        if bytes.iter().all(u8::is_ascii_whitespace) {
            log(
                LogLevel::Warn,
                "add-header: empty configuration, the filter does nothing",
            );
            self.config = Rc::default();
            return true;
        }
        match Config::parse(&bytes) {
            Ok(config) => {
                if config.is_empty() {
                    log(
                        LogLevel::Warn,
                        "add-header: the configuration has no edits, the filter does nothing",
                    );
                }
                self.config = Rc::new(config);
                true
            }
            Err(reason) => {
                log(
                    LogLevel::Error,
                    &format!("add-header: invalid configuration: {reason}"),
                );
                false
            }
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(AddHeaderStream {
            config: Rc::clone(&self.config),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// Applies the configured edits to one HTTP stream.
#[derive(Debug)]
struct AddHeaderStream {
    config: Rc<Config>,
}

impl Context for AddHeaderStream {}

impl HttpContext for AddHeaderStream {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        apply(MapType::HttpRequestHeaders, &self.config.request);
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        apply(MapType::HttpResponseHeaders, &self.config.response);
        Action::Continue
    }
}

/// Runs remove, then set, then add on `map`; an empty `edits` makes no hostcall at all.
fn apply(map: MapType, edits: &Edits) {
    for name in &edits.remove {
        report(hostcalls::remove_map_value(map, name), "remove", name);
    }
    for (name, value) in &edits.set.0 {
        report(
            hostcalls::set_map_value(map, name, Some(value)),
            "set",
            name,
        );
    }
    for (name, value) in &edits.add.0 {
        report(hostcalls::add_map_value(map, name, value), "add", name);
    }
}

// One failed edit must not stop the others, nor the request: log it and go on.
fn report(result: Result<(), Status>, action: &str, name: &str) {
    if let Err(status) = result {
        log(
            LogLevel::Error,
            &format!("add-header: cannot {action} header {name}: {status:?}"),
        );
    }
}

fn log(level: LogLevel, message: &str) {
    // A log that fails has nowhere else to be reported.
    let _ = hostcalls::log(level, message);
}
