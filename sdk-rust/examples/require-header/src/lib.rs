//! require-header: an example filter written with `wasmgate-sdk`.
//!
//! It requires a request header (an API key, say). A request without it gets a local reply
//! (401 by default); a request whose value is not UTF-8 gets 400. Otherwise the value is
//! forwarded under another name, and the filter adds what it knows of the client from
//! properties. On the way back it tags the response.
//!
//! Configuration (JSON):
//!
//! ```json
//! {"header": "x-api-key", "forward_as": "x-client-key", "status": 401, "tag": "checked"}
//! ```
//!
//! Only `header` is required.

use std::rc::Rc;

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};
use serde::Deserialize;
use wasmgate_sdk::headers::{HeaderError, Headers};
use wasmgate_sdk::{config, property};

proxy_wasm::main! {{
    // Also installs the SDK's panic hook: a panic's message reaches the host log.
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| Box::new(Root::default()));
}}

/// The plugin configuration.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// The header every request must carry.
    header: String,
    /// Where its value is forwarded (the original is removed); absent: left as is.
    #[serde(default)]
    forward_as: Option<String>,
    /// The status of the reply to a request without the header.
    #[serde(default = "default_status")]
    status: u32,
    /// The value of `x-require-header` added to responses.
    #[serde(default = "default_tag")]
    tag: String,
}

fn default_status() -> u32 {
    401
}

fn default_tag() -> String {
    "checked".to_owned()
}

#[derive(Debug, Default)]
struct Root {
    config: Option<Rc<Config>>,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        // Parses the JSON configuration; on failure logs the reason and returns None.
        match config::json::<Config>() {
            Some(config) => {
                self.config = Some(Rc::new(config));
                true
            }
            None => false,
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        let config = self.config.clone()?;
        Some(Box::new(Stream { config }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

#[derive(Debug)]
struct Stream {
    config: Rc<Config>,
}

impl Context for Stream {}

impl Stream {
    fn reply(&self, status: u32, body: &str) -> Action {
        self.send_http_response(
            status,
            vec![("x-require-header", "denied")],
            Some(body.as_bytes()),
        );
        Action::Pause
    }

    /// What the filter knows of the client, from properties (each may be missing).
    fn describe_client(&self) -> String {
        let port = property::get_int(&["source", "port"]).ok().flatten();
        let mtls = property::get_bool(&["connection", "mtls"]).ok().flatten();
        let name = property::get_string(&["plugin_name"]).ok().flatten();
        format!(
            "port={} mtls={} filter={}",
            port.map_or("?".into(), |p| p.to_string()),
            mtls.map_or("?".into(), |m| m.to_string()),
            name.unwrap_or_default()
        )
    }
}

impl HttpContext for Stream {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let config = Rc::clone(&self.config);
        let value = match Headers::REQUEST.get_str(&config.header) {
            Ok(Some(value)) => value,
            Ok(None) => {
                return self.reply(config.status, &format!("{} is required\n", config.header));
            }
            Err(HeaderError::NotUtf8 { .. }) => {
                return self.reply(400, &format!("{} must be UTF-8\n", config.header));
            }
            Err(e) => {
                log::warn!("cannot read {}: {e}", config.header);
                return self.reply(500, "cannot read the request\n");
            }
        };
        if let Some(target) = &config.forward_as {
            // Refused writes come back as errors: log and go on rather than trap.
            if let Err(status) = Headers::REQUEST.set(target, &value) {
                log::warn!("cannot set {target}: {status}");
            }
            let _ = Headers::REQUEST.remove(&config.header);
        }
        let _ = Headers::REQUEST.set("x-client", self.describe_client());
        let count = Headers::REQUEST.pairs().map_or(0, |pairs| pairs.len());
        let _ = Headers::REQUEST.set("x-request-fields", count.to_string());
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        if let Err(status) = Headers::RESPONSE.set("x-require-header", &self.config.tag) {
            log::warn!("cannot tag the response: {status}");
        }
        Action::Continue
    }
}
