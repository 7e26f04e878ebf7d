//! The configuration of ext-auth.

use serde::Deserialize;

/// Where to ask and what to do with the answer.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Config {
    /// The upstream (from wasmgate's `upstreams:`) of the authorization service.
    pub(crate) upstream: String,
    /// The path of the check request.
    #[serde(default = "default_path")]
    pub(crate) path: String,
    /// The `:authority` of the check request.
    #[serde(default = "default_authority")]
    pub(crate) authority: String,
    /// Request headers copied onto the check request.
    #[serde(default)]
    pub(crate) forward_headers: Vec<String>,
    /// Headers of an allowing answer copied onto the request (e.g. `x-user`).
    #[serde(default)]
    pub(crate) copy_headers: Vec<String>,
    #[serde(default = "default_timeout")]
    pub(crate) timeout_ms: u64,
    /// The status when the service cannot be asked.
    #[serde(default = "default_failure_status")]
    pub(crate) failure_status: u32,
    /// Let requests through when the service cannot be asked.
    #[serde(default)]
    pub(crate) fail_open: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            upstream: String::new(),
            path: default_path(),
            authority: default_authority(),
            forward_headers: Vec::new(),
            copy_headers: Vec::new(),
            timeout_ms: default_timeout(),
            failure_status: default_failure_status(),
            fail_open: false,
        }
    }
}

fn default_path() -> String {
    "/check".into()
}

fn default_authority() -> String {
    "ext-auth".into()
}

fn default_timeout() -> u64 {
    1000
}

fn default_failure_status() -> u32 {
    503
}

impl Config {
    pub(crate) fn parse(bytes: &[u8]) -> Result<Config, String> {
        let config: Config = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        if config.upstream.is_empty() {
            return Err("`upstream` is required".into());
        }
        if !config.path.starts_with('/') {
            return Err(format!("`path` {:?} must start with /", config.path));
        }
        if !(200..=599).contains(&config.failure_status) {
            return Err(format!(
                "`failure_status` {} is not 200..=599",
                config.failure_status
            ));
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_with_defaults_and_checks_fields() {
        let c = Config::parse(br#"{"upstream": "auth"}"#).unwrap();
        assert_eq!(
            (c.path.as_str(), c.timeout_ms, c.failure_status),
            ("/check", 1000, 503)
        );
        assert!(Config::parse(br#"{}"#).is_err());
        assert!(Config::parse(br#"{"upstream": "a", "path": "x"}"#).is_err());
        assert!(Config::parse(br#"{"upstream": "a", "nope": 1}"#).is_err());
    }
}
