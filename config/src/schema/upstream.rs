//! `upstreams:` entries as serde sees them.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor, value::MapAccessDeserializer};

/// One entry under `upstreams:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "an upstream mapping")]
pub(crate) struct RawUpstream {
    /// `host:port` strings or `{address, weight}` mappings; required.
    pub(crate) endpoints: Vec<RawEndpoint>,
    /// `http1` or `http2`; default `http1`.
    #[serde(default)]
    pub(crate) protocol: Option<String>,
    /// Timeouts in milliseconds; defaults in `UpstreamTimeouts`.
    #[serde(default)]
    pub(crate) connect_timeout_ms: Option<i64>,
    #[serde(default)]
    pub(crate) read_timeout_ms: Option<i64>,
    #[serde(default)]
    pub(crate) write_timeout_ms: Option<i64>,
    #[serde(default)]
    pub(crate) response_timeout_ms: Option<i64>,
    /// `round_robin` (default), `random`, `least_requests` or `hash`.
    #[serde(default)]
    pub(crate) balance: Option<String>,
    /// The key of `balance: hash`.
    #[serde(default)]
    pub(crate) hash: Option<RawHash>,
    /// Absent: plain HTTP.
    #[serde(default)]
    pub(crate) tls: Option<RawUpstreamTls>,
    /// Absent: no active checks.
    #[serde(default)]
    pub(crate) health_check: Option<RawHealthCheck>,
    /// Absent: no passive ejection.
    #[serde(default)]
    pub(crate) outlier: Option<RawOutlier>,
    /// Absent: no retries beyond Pingora's retry of a reused connection.
    #[serde(default)]
    pub(crate) retries: Option<RawRetries>,
    #[serde(default)]
    pub(crate) resolve_interval_ms: Option<i64>,
    #[serde(default)]
    pub(crate) keepalive: Option<RawKeepalive>,
}

/// An item of `endpoints:`: `"host:port"` or `{address: "host:port", weight: N}`.
#[derive(Debug)]
pub(crate) struct RawEndpoint {
    pub(crate) address: String,
    pub(crate) weight: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "an endpoint mapping")]
struct RawWeighted {
    address: String,
    #[serde(default)]
    weight: Option<i64>,
}

impl<'de> Deserialize<'de> for RawEndpoint {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawEndpoint;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("\"HOST:PORT\" or {address: \"HOST:PORT\", weight: N}")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawEndpoint, E> {
                Ok(RawEndpoint {
                    address: v.to_owned(),
                    weight: None,
                })
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawEndpoint, A::Error> {
                let w = RawWeighted::deserialize(MapAccessDeserializer::new(map))?;
                Ok(RawEndpoint {
                    address: w.address,
                    weight: w.weight,
                })
            }
        }
        d.deserialize_any(V)
    }
}

/// `hash:`: exactly one of its keys.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a hash key mapping")]
pub(crate) struct RawHash {
    #[serde(default)]
    pub(crate) header: Option<String>,
    #[serde(default)]
    pub(crate) source_ip: Option<bool>,
}

/// `tls:` of an upstream.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "an upstream TLS mapping")]
pub(crate) struct RawUpstreamTls {
    #[serde(default)]
    pub(crate) sni: Option<String>,
    #[serde(default)]
    pub(crate) verify: Option<bool>,
    #[serde(default)]
    pub(crate) ca: Option<String>,
    #[serde(default)]
    pub(crate) client_cert: Option<String>,
    #[serde(default)]
    pub(crate) client_key: Option<String>,
}

/// `health_check:`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a health check mapping")]
pub(crate) struct RawHealthCheck {
    #[serde(default)]
    pub(crate) path: Option<String>,
    #[serde(default)]
    pub(crate) interval_ms: Option<i64>,
    #[serde(default)]
    pub(crate) timeout_ms: Option<i64>,
    #[serde(default)]
    pub(crate) healthy_threshold: Option<i64>,
    #[serde(default)]
    pub(crate) unhealthy_threshold: Option<i64>,
    #[serde(default)]
    pub(crate) expected_statuses: Option<Vec<StatusItem>>,
}

/// An item of `expected_statuses:` or `retries.on:`: YAML reads `503` as a number and
/// `"200-399"` or `connect_failure` as strings; both are taken as text.
#[derive(Debug)]
pub(crate) struct StatusItem(pub(crate) String);

impl<'de> Deserialize<'de> for StatusItem {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = StatusItem;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a status code, a range \"NNN-NNN\" or a name")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<StatusItem, E> {
                Ok(StatusItem(v.to_owned()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<StatusItem, E> {
                Ok(StatusItem(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<StatusItem, E> {
                Ok(StatusItem(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

/// `outlier:`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "an outlier mapping")]
pub(crate) struct RawOutlier {
    #[serde(default)]
    pub(crate) consecutive_failures: Option<i64>,
    #[serde(default)]
    pub(crate) ejection_ms: Option<i64>,
}

/// `retries:`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a retries mapping")]
pub(crate) struct RawRetries {
    #[serde(default)]
    pub(crate) attempts: Option<i64>,
    #[serde(default)]
    pub(crate) on: Option<Vec<StatusItem>>,
}

/// `keepalive:`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a keepalive mapping")]
pub(crate) struct RawKeepalive {
    #[serde(default)]
    pub(crate) max_idle: Option<i64>,
    #[serde(default)]
    pub(crate) idle_timeout_ms: Option<i64>,
}
