//! body-rewrite: a proxy-wasm filter that buffers request and/or response bodies, rewrites
//! them with literal replacements, and answers with an error when a body contains a pattern.
//! It does what Envoy's body filters do: remove `content-length` in the headers callback
//! (the body's length may change), return Pause on every body chunk until the end of the
//! stream, then read, check and replace the whole body.

mod rules;

use std::rc::Rc;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, LogLevel};

use crate::rules::{Config, Rules};

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
                    &format!("body-rewrite: cannot read the configuration: {status:?}"),
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
                    &format!("body-rewrite: invalid configuration: {reason}"),
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

/// Which way a body goes.
#[derive(Debug, Clone, Copy)]
enum Side {
    Request,
    Response,
}

impl Side {
    fn name(self) -> &'static str {
        match self {
            Side::Request => "request",
            Side::Response => "response",
        }
    }
}

impl Stream {
    fn rules(&self, side: Side) -> Option<&Rules> {
        match side {
            Side::Request => self.config.request.as_ref(),
            Side::Response => self.config.response.as_ref(),
        }
    }

    /// The body callback of either side: buffer until the end, then check and rewrite.
    fn body(&mut self, side: Side, body_size: usize, end_of_stream: bool) -> Action {
        let Some(rules) = self.rules(side) else {
            return Action::Continue;
        };
        if self.config.log_sizes {
            log(
                LogLevel::Info,
                &format!(
                    "body-rewrite: {} body_size={body_size} end_of_stream={end_of_stream}",
                    side.name()
                ),
            );
        }
        if !end_of_stream {
            // Keep buffering: the next call sees everything so far.
            return Action::Pause;
        }
        let body = match side {
            Side::Request => self.get_http_request_body(0, body_size),
            Side::Response => self.get_http_response_body(0, body_size),
        }
        .unwrap_or_default();
        if let Some(pattern) = &rules.deny_if_contains
            && contains(&body, pattern.as_bytes())
        {
            log(
                LogLevel::Warn,
                &format!("body-rewrite: {} body refused", side.name()),
            );
            self.send_http_response(
                rules.deny_status,
                vec![],
                Some(b"refused by body-rewrite\n"),
            );
            return Action::Pause;
        }
        if let Some(new) = rules.apply(&body) {
            match side {
                Side::Request => self.set_http_request_body(0, body_size, &new),
                Side::Response => self.set_http_response_body(0, body_size, &new),
            }
        }
        Action::Continue
    }
}

impl Context for Stream {}

impl HttpContext for Stream {
    fn on_http_request_headers(&mut self, _n: usize, _end_of_stream: bool) -> Action {
        if self
            .rules(Side::Request)
            .is_some_and(Rules::may_change_length)
        {
            self.set_http_request_header("content-length", None);
        }
        Action::Continue
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        self.body(Side::Request, body_size, end_of_stream)
    }

    fn on_http_response_headers(&mut self, _n: usize, _end_of_stream: bool) -> Action {
        if self
            .rules(Side::Response)
            .is_some_and(Rules::may_change_length)
        {
            self.set_http_response_header("content-length", None);
        }
        Action::Continue
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        self.body(Side::Response, body_size, end_of_stream)
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

fn log(level: LogLevel, message: &str) {
    let _ = hostcalls::log(level, message);
}
