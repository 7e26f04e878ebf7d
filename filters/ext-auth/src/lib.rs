//! ext-auth: authorizes each request by asking an authorization service over HTTP
//! (`proxy_http_call` to an upstream of the configuration) and waits for its answer: a 2xx
//! lets the request through (with the headers the service names copied onto it), anything
//! else answers the client with the service's status, and a failed or timed-out call answers
//! with `failure_status` (or lets the request through with `fail_open`).

mod config;

use std::rc::Rc;
use std::time::Duration;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, LogLevel};

use crate::config::Config;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| Box::new(Root::default()));
}}

#[derive(Debug, Default)]
struct Root {
    config: Rc<Config>,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        let bytes = match hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX) {
            Ok(bytes) => bytes.unwrap_or_default(),
            Err(status) => {
                log(
                    LogLevel::Error,
                    &format!("ext-auth: cannot read the configuration: {status:?}"),
                );
                return false;
            }
        };
        match Config::parse(&bytes) {
            Ok(config) => {
                self.config = Rc::new(config);
                true
            }
            Err(reason) => {
                log(
                    LogLevel::Error,
                    &format!("ext-auth: invalid configuration: {reason}"),
                );
                false
            }
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Stream {
            config: Rc::clone(&self.config),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

#[derive(Debug)]
struct Stream {
    config: Rc<Config>,
}

impl Stream {
    /// A failed check: fail open or answer with the failure status.
    fn failed(&mut self, why: &str) {
        if self.config.fail_open {
            log(
                LogLevel::Warn,
                &format!("ext-auth: {why}; letting the request through (fail_open)"),
            );
            self.resume_http_request();
        } else {
            log(LogLevel::Warn, &format!("ext-auth: {why}"));
            self.send_http_response(
                self.config.failure_status,
                vec![],
                Some(b"authorization unavailable\n"),
            );
        }
    }
}

impl Context for Stream {
    fn on_http_call_response(
        &mut self,
        _token: u32,
        headers: usize,
        _body: usize,
        _trailers: usize,
    ) {
        if headers == 0 {
            // No response: the host says why through proxy_get_status ("reset" or "timeout"),
            // which the Rust SDK exposes as the gRPC status.
            let (_, why) = self.get_grpc_status();
            let why = why.unwrap_or_default();
            self.failed(&format!("authorization call failed: {why}"));
            return;
        }
        let status = self
            .get_http_call_response_header(":status")
            .and_then(|s| s.parse::<u32>().ok())
            .unwrap_or(0);
        if (200..300).contains(&status) {
            for name in &self.config.copy_headers {
                if let Some(value) = self.get_http_call_response_header(name) {
                    self.set_http_request_header(name, Some(&value));
                }
            }
            self.resume_http_request();
        } else {
            let status = if (400..600).contains(&status) {
                status
            } else {
                403
            };
            self.send_http_response(
                status,
                vec![("x-ext-auth", "denied")],
                Some(b"access denied\n"),
            );
        }
    }
}

impl HttpContext for Stream {
    fn on_http_request_headers(&mut self, _n: usize, _end_of_stream: bool) -> Action {
        let config = Rc::clone(&self.config);
        let path = self.get_http_request_header(":path").unwrap_or_default();
        let method = self.get_http_request_header(":method").unwrap_or_default();
        let mut headers = vec![
            (":method", "GET"),
            (":path", config.path.as_str()),
            (":authority", config.authority.as_str()),
            ("x-original-path", path.as_str()),
            ("x-original-method", method.as_str()),
        ];
        let forwarded: Vec<(String, String)> = config
            .forward_headers
            .iter()
            .filter_map(|name| Some((name.clone(), self.get_http_request_header(name)?)))
            .collect();
        headers.extend(forwarded.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        match self.dispatch_http_call(
            &config.upstream,
            headers,
            None,
            vec![],
            Duration::from_millis(config.timeout_ms),
        ) {
            // Wait for the answer: on_http_call_response resumes or answers.
            Ok(_) => Action::Pause,
            Err(status) => {
                self.failed(&format!("cannot call {}: {status:?}", config.upstream));
                Action::Pause
            }
        }
    }
}

fn log(level: LogLevel, message: &str) {
    let _ = hostcalls::log(level, message);
}
