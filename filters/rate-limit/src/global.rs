//! The `global` mode: one fixed window per key for the whole cluster, counted in Redis through
//! Webdis (Redis over HTTP), reached with a proxy-wasm HTTP callout. Pure: the configuration,
//! the Webdis request and the reading of its answer; the callout itself is in lib.rs.
//!
//! Each request runs one Lua script in Redis (`EVAL`, atomic there): `INCR` the window's
//! counter, and give it a time to live of one window if it has none (so the first request of a
//! window starts it, and a key can never be left without expiry). The answer is the count so
//! far and the milliseconds left in the window.

use serde::Deserialize;

use crate::config::Key;

/// What to do when Redis (or Webdis) cannot be asked or gives no usable answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum OnStoreError {
    /// Fail open: let the request through.
    Allow,
    /// Fail closed: answer 503.
    Deny,
}

impl OnStoreError {
    pub(crate) fn name(self) -> &'static str {
        match self {
            OnStoreError::Allow => "allow",
            OnStoreError::Deny => "deny",
        }
    }
}

/// The configuration of the global mode (`"mode": "global"`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct GlobalConfig {
    /// Requests allowed per key in one window, across every replica.
    pub(crate) limit: u64,
    /// The window's length in milliseconds.
    pub(crate) window_ms: u64,
    #[serde(default = "default_key")]
    pub(crate) key: Key,
    /// The wasmgate upstream that is Webdis.
    pub(crate) upstream: String,
    /// The `:authority` of the call (default: the upstream's name).
    #[serde(default)]
    pub(crate) authority: Option<String>,
    /// How long to wait for Webdis's answer.
    #[serde(default = "default_timeout_ms")]
    pub(crate) timeout_ms: u64,
    #[serde(default = "default_on_store_error")]
    pub(crate) on_store_error: OnStoreError,
}

fn default_key() -> Key {
    Key::Source
}

fn default_timeout_ms() -> u64 {
    100
}

fn default_on_store_error() -> OnStoreError {
    OnStoreError::Allow
}

impl GlobalConfig {
    /// Checks the ranges of a parsed configuration.
    pub(crate) fn check(self) -> Result<GlobalConfig, String> {
        if !(1..=1_000_000_000).contains(&self.limit) {
            return Err("`limit` must be between 1 and 1000000000".into());
        }
        if !(10..=86_400_000).contains(&self.window_ms) {
            return Err("`window_ms` must be between 10 and 86400000".into());
        }
        if !(1..=60_000).contains(&self.timeout_ms) {
            return Err("`timeout_ms` must be between 1 and 60000".into());
        }
        if self.upstream.is_empty() {
            return Err("`upstream` must name the upstream that is Webdis".into());
        }
        if let Key::Header(name) = &self.key
            && name.is_empty()
        {
            return Err("`key.header` must name a header".into());
        }
        Ok(self)
    }
}

/// The Lua script: count, start the window if it has no expiry, answer `{count, ms left}`.
/// Sent in the URL, so it has no `/`.
const SCRIPT: &str = "local c=redis.call('INCR',KEYS[1]) \
local t=redis.call('PTTL',KEYS[1]) \
if t<0 then redis.call('PEXPIRE',KEYS[1],ARGV[1]) t=tonumber(ARGV[1]) end \
return {c,t}";

/// The Redis key of a window: `rate-limit:<filter name>:<key>`.
pub(crate) fn redis_key(filter: &str, key: &str) -> String {
    format!("rate-limit:{filter}:{key}")
}

/// The Webdis request path that counts one request against `redis_key`.
pub(crate) fn webdis_path(redis_key: &str, window_ms: u64) -> String {
    format!(
        "/EVAL/{}/1/{}/{window_ms}",
        percent_encode(SCRIPT),
        percent_encode(redis_key)
    )
}

/// Every byte but unreserved ones as `%XX`: Webdis splits the path on `/` and then decodes
/// each part, so any text (a `/` too) survives.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 3);
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Webdis's answer to the script: `{"EVAL":[count, ms left]}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Count {
    pub(crate) count: u64,
    pub(crate) ms_left: u64,
}

/// Reads Webdis's JSON answer; None if it is not the script's.
pub(crate) fn parse_reply(body: &[u8]) -> Option<Count> {
    #[derive(Deserialize)]
    struct Reply {
        #[serde(rename = "EVAL")]
        eval: (u64, i64),
    }
    let reply: Reply = serde_json::from_slice(body).ok()?;
    Some(Count {
        count: reply.eval.0,
        ms_left: u64::try_from(reply.eval.1).unwrap_or(0),
    })
}

impl Count {
    /// Whether this request is within the limit.
    pub(crate) fn allowed(self, limit: u64) -> bool {
        self.count <= limit
    }

    /// `retry-after` for a refused request: whole seconds until the window ends, at least 1.
    pub(crate) fn retry_after_secs(self) -> u64 {
        self.ms_left.div_ceil(1000).max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<GlobalConfig, String> {
        serde_json::from_str::<GlobalConfig>(json)
            .map_err(|e| e.to_string())?
            .check()
    }

    #[test]
    fn config_defaults_and_ranges() {
        let c = parse(r#"{"limit": 5, "window_ms": 1000, "upstream": "webdis"}"#).unwrap();
        assert_eq!(
            (c.key, c.timeout_ms, c.on_store_error, c.authority),
            (Key::Source, 100, OnStoreError::Allow, None)
        );
        let c = parse(
            r#"{"limit": 1, "window_ms": 10, "upstream": "w", "on_store_error": "deny", "key": {"header": "x-k"}}"#,
        )
        .unwrap();
        assert_eq!(c.on_store_error, OnStoreError::Deny);
        for bad in [
            r#"{"limit": 0, "window_ms": 1000, "upstream": "w"}"#,
            r#"{"limit": 1, "window_ms": 9, "upstream": "w"}"#,
            r#"{"limit": 1, "window_ms": 1000, "upstream": ""}"#,
            r#"{"limit": 1, "window_ms": 1000}"#,
            r#"{"limit": 1, "window_ms": 1000, "upstream": "w", "timeout_ms": 0}"#,
            r#"{"limit": 1, "window_ms": 1000, "upstream": "w", "on_store_error": "maybe"}"#,
            r#"{"limit": 1, "window_ms": 1000, "upstream": "w", "rate": 1}"#,
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn path_encodes_the_script_and_the_key_in_one_segment_each() {
        let path = webdis_path(&redis_key("rl", "a/b c"), 2000);
        let parts: Vec<&str> = path.split('/').collect();
        assert_eq!(parts[..2], ["", "EVAL"]);
        assert!(!parts[2].contains(' ') && parts[2].contains("INCR"));
        assert_eq!(parts[3..], ["1", "rate-limit%3Arl%3Aa%2Fb%20c", "2000"]);
    }

    #[test]
    fn reply_is_read_and_judged() {
        let c = parse_reply(br#"{"EVAL":[3,1499]}"#).unwrap();
        assert_eq!(
            c,
            Count {
                count: 3,
                ms_left: 1499
            }
        );
        assert!(c.allowed(3) && !c.allowed(2));
        assert_eq!(c.retry_after_secs(), 2);
        assert_eq!(
            parse_reply(br#"{"EVAL":[1,-1]}"#)
                .unwrap()
                .retry_after_secs(),
            1
        );
        assert_eq!(parse_reply(br#"{"EVAL":[1,0]}"#).unwrap().ms_left, 0);
        for bad in [
            &b""[..],
            b"{}",
            br#"{"EVAL":"ERR"}"#,
            br#"{"GET":[1,2]}"#,
            b"<html>",
        ] {
            assert!(parse_reply(bad).is_none());
        }
    }
}
