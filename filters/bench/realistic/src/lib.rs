//! bench-realistic: the "realistic filter" of the benchmarks, a tenant check. Per request it
//! reads two request headers (`x-tenant` and `user-agent`), looks the tenant up in a map from
//! its configuration, answers 403 when the tenant is unknown or the agent is blocked, and
//! otherwise adds one request header (the tenant's plan) and one response header (the tenant).

use std::collections::HashMap;
use std::rc::Rc;

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};
use serde::Deserialize;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Warn);
    proxy_wasm::set_root_context(|_| Box::new(TenantRoot::default()));
}}

/// The plugin configuration, as JSON.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    /// Distinguishes several instances in one chain: it is part of the header names added.
    #[serde(default)]
    id: String,
    /// Tenant name to plan.
    #[serde(default)]
    tenants: HashMap<String, String>,
    /// Requests whose `user-agent` starts with this are refused (none when empty).
    #[serde(default)]
    blocked_agent_prefix: String,
}

/// What every stream needs, prepared once in `on_configure`.
#[derive(Debug, Default)]
struct Config {
    tenants: HashMap<String, String>,
    blocked_agent_prefix: String,
    plan_header: String,
    tenant_header: String,
    denied_by: String,
}

#[derive(Debug, Default)]
struct TenantRoot {
    config: Rc<Config>,
}

impl Context for TenantRoot {}

impl RootContext for TenantRoot {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let bytes = self.get_plugin_configuration().unwrap_or_default();
        let raw: RawConfig = if bytes.iter().all(u8::is_ascii_whitespace) {
            RawConfig::default()
        } else {
            match serde_json::from_slice(&bytes) {
                Ok(raw) => raw,
                Err(e) => {
                    proxy_wasm::hostcalls::log(
                        LogLevel::Error,
                        &format!("bench-realistic: invalid configuration: {e}"),
                    )
                    .ok();
                    return false;
                }
            }
        };
        let suffix = if raw.id.is_empty() {
            String::new()
        } else {
            format!("-{}", raw.id)
        };
        self.config = Rc::new(Config {
            tenants: raw.tenants,
            blocked_agent_prefix: raw.blocked_agent_prefix,
            plan_header: format!("x-tenant-plan{suffix}"),
            tenant_header: format!("x-tenant{suffix}"),
            denied_by: format!("bench-realistic{suffix}"),
        });
        true
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(TenantStream {
            config: Rc::clone(&self.config),
            tenant: None,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// One request's tenant check.
#[derive(Debug)]
struct TenantStream {
    config: Rc<Config>,
    /// The tenant admitted in the request phase, echoed in the response.
    tenant: Option<String>,
}

impl Context for TenantStream {}

impl TenantStream {
    fn deny(&self) -> Action {
        self.send_http_response(
            403,
            vec![("x-denied-by", self.config.denied_by.as_str())],
            Some(b"forbidden\n"),
        );
        Action::Pause
    }
}

impl HttpContext for TenantStream {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let tenant = self.get_http_request_header("x-tenant");
        let agent = self.get_http_request_header("user-agent");
        let prefix = &self.config.blocked_agent_prefix;
        if !prefix.is_empty() && agent.is_some_and(|a| a.starts_with(prefix.as_str())) {
            return self.deny();
        }
        let Some(tenant) = tenant else {
            return self.deny();
        };
        let Some(plan) = self.config.tenants.get(&tenant) else {
            return self.deny();
        };
        self.add_http_request_header(&self.config.plan_header, plan);
        self.tenant = Some(tenant);
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        if let Some(tenant) = &self.tenant {
            self.add_http_response_header(&self.config.tenant_header, tenant);
        }
        Action::Continue
    }
}
