//! bench-body-rewrite: the body-rewriting filter of the benchmarks. It buffers the response
//! body until the end of the stream (returning Pause for every earlier chunk), then replaces the
//! whole body with a rewritten one: ASCII upper-cased, followed by a marker line that the
//! harness checks for.

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};

/// Appended to every rewritten body; the benchmark harness looks for it.
const MARKER: &[u8] = b"\n-- rewritten by bench-body-rewrite\n";

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Warn);
    proxy_wasm::set_root_context(|_| Box::new(RewriteRoot));
}}

#[derive(Debug)]
struct RewriteRoot;

impl Context for RewriteRoot {}

impl RootContext for RewriteRoot {
    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(RewriteStream))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

#[derive(Debug)]
struct RewriteStream;

impl Context for RewriteStream {}

impl HttpContext for RewriteStream {
    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        // The body changes length: the old length must not be forwarded (the proxy owns framing
        // anyway, but this is what a filter written for Envoy does).
        self.set_http_response_header("content-length", None);
        Action::Continue
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if !end_of_stream {
            // Keep buffering: the host holds the chunks until the last one.
            return Action::Pause;
        }
        let body = self
            .get_http_response_body(0, body_size)
            .unwrap_or_default();
        let mut rewritten = Vec::with_capacity(body.len() + MARKER.len());
        rewritten.extend(body.iter().map(u8::to_ascii_uppercase));
        rewritten.extend_from_slice(MARKER);
        self.set_http_response_body(0, body_size, &rewritten);
        Action::Continue
    }
}
