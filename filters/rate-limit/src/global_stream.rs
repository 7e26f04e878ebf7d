//! The global mode's per-request work: one HTTP callout to Webdis per request (see global.rs),
//! then allow, answer 429, or, when the store gives no answer, what `on_store_error` says.

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, LogLevel};

use crate::global::{self, Count, GlobalConfig, OnStoreError};
use crate::{count, log, request_key};

/// What every HTTP context of a global-mode plugin instance uses.
#[derive(Debug)]
pub(crate) struct Global {
    pub(crate) config: GlobalConfig,
    /// The filter's name (`plugin_name`), part of every Redis key.
    pub(crate) name: String,
    /// Metric ids: requests allowed, answered 429, and store failures.
    pub(crate) allowed: u32,
    pub(crate) limited: u32,
    pub(crate) store_errors: u32,
    /// Whether the last call to the store failed, so that an outage is logged when it starts
    /// and when it ends rather than once per request.
    pub(crate) store_down: Cell<bool>,
}

impl Global {
    fn store_failed(&self, why: &str) {
        count(self.store_errors);
        if !self.store_down.replace(true) {
            let c = &self.config;
            let action = match c.on_store_error {
                OnStoreError::Allow => "requests are allowed",
                OnStoreError::Deny => "requests are refused with 503",
            };
            log(
                LogLevel::Warn,
                &format!(
                    "rate-limit: the global store (upstream {}) is unreachable: {why}; {action} (on_store_error: {}) until it answers again",
                    c.upstream,
                    c.on_store_error.name()
                ),
            );
        }
    }

    fn store_answered(&self) {
        if self.store_down.replace(false) {
            log(
                LogLevel::Info,
                &format!(
                    "rate-limit: the global store (upstream {}) answers again",
                    self.config.upstream
                ),
            );
        }
    }
}

#[derive(Debug)]
pub(crate) struct GlobalStream {
    pub(crate) global: Rc<Global>,
}

impl GlobalStream {
    /// The store could not be asked or gave no usable answer.
    fn store_error(&mut self, why: &str) -> Action {
        let global = Rc::clone(&self.global);
        global.store_failed(why);
        match global.config.on_store_error {
            OnStoreError::Allow => {
                count(global.allowed);
                Action::Continue
            }
            OnStoreError::Deny => {
                self.send_http_response(
                    503,
                    vec![("content-type", "text/plain")],
                    Some(b"rate limit store unavailable\n"),
                );
                Action::Pause
            }
        }
    }

    fn decide(&mut self, answer: Count) {
        let global = Rc::clone(&self.global);
        global.store_answered();
        if answer.allowed(global.config.limit) {
            count(global.allowed);
            self.resume_http_request();
        } else {
            count(global.limited);
            self.send_http_response(
                429,
                vec![
                    (
                        "retry-after",
                        answer.retry_after_secs().to_string().as_str(),
                    ),
                    ("content-type", "text/plain"),
                ],
                Some(b"rate limited\n"),
            );
        }
    }
}

impl Context for GlobalStream {
    fn on_http_call_response(&mut self, _token: u32, headers: usize, body: usize, _: usize) {
        if headers == 0 {
            // No response: the host says why ("reset", "timeout") through the call's status.
            let why = self
                .get_grpc_status()
                .1
                .unwrap_or_else(|| "no response".into());
            if self.store_error(&format!("call failed: {why}")) == Action::Continue {
                self.resume_http_request();
            }
            return;
        }
        let status = self
            .get_http_call_response_header(":status")
            .unwrap_or_default();
        let reply = self
            .get_http_call_response_body(0, body)
            .unwrap_or_default();
        let answer = (status == "200")
            .then(|| global::parse_reply(&reply))
            .flatten();
        match answer {
            Some(answer) => self.decide(answer),
            None => {
                let why = format!(
                    "status {status}, body {:?}",
                    String::from_utf8_lossy(&reply[..reply.len().min(100)])
                );
                if self.store_error(&why) == Action::Continue {
                    self.resume_http_request();
                }
            }
        }
    }
}

impl HttpContext for GlobalStream {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let global = Rc::clone(&self.global);
        let config = &global.config;
        let key = global::redis_key(&global.name, &request_key(&config.key));
        let path = global::webdis_path(&key, config.window_ms);
        let authority = config.authority.as_deref().unwrap_or(&config.upstream);
        let headers = vec![
            (":method", "GET"),
            (":path", path.as_str()),
            (":authority", authority),
        ];
        let timeout = Duration::from_millis(config.timeout_ms);
        match self.dispatch_http_call(&config.upstream, headers, None, vec![], timeout) {
            // on_http_call_response resumes the request or answers it.
            Ok(_) => Action::Pause,
            Err(status) => self.store_error(&format!("cannot call it: {status:?}")),
        }
    }
}
