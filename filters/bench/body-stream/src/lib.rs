//! bench-body-stream: the "streaming body filter" of the soak runs. It subscribes to both body
//! callbacks, reads each chunk as it passes (so the host copies it into the guest), counts its
//! bytes and returns Continue: nothing is buffered, the body streams through.

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Warn);
    proxy_wasm::set_root_context(|_| Box::new(StreamRoot));
}}

/// Creates one [`StreamBodies`] per request.
#[derive(Debug)]
struct StreamRoot;

impl Context for StreamRoot {}

impl RootContext for StreamRoot {
    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(StreamBodies::default()))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// Reads every chunk and keeps only a byte count.
#[derive(Debug, Default)]
struct StreamBodies {
    bytes: u64,
}

impl StreamBodies {
    fn fold(&mut self, chunk: Option<Vec<u8>>) {
        self.bytes += chunk.map_or(0, |c| c.len() as u64);
    }
}

impl Context for StreamBodies {}

impl HttpContext for StreamBodies {
    fn on_http_request_body(&mut self, body_size: usize, _end_of_stream: bool) -> Action {
        let chunk = self.get_http_request_body(0, body_size);
        self.fold(chunk);
        Action::Continue
    }

    fn on_http_response_body(&mut self, body_size: usize, _end_of_stream: bool) -> Action {
        let chunk = self.get_http_response_body(0, body_size);
        self.fold(chunk);
        Action::Continue
    }
}
