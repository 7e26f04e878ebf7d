//! One item of `routes:` as serde sees it.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};

use super::{Ordered, present_list};

/// One item of `routes:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a route mapping")]
pub(crate) struct RawRoute {
    /// Default `route-<n>`.
    #[serde(default)]
    pub(crate) name: Option<String>,
    /// Default: match everything.
    #[serde(default, rename = "match")]
    pub(crate) matcher: Option<RawMatch>,
    /// One upstream's name; or `upstreams`, `redirect` or `respond`.
    #[serde(default)]
    pub(crate) upstream: Option<String>,
    /// A weighted split.
    #[serde(default)]
    pub(crate) upstreams: Option<Vec<RawWeighted>>,
    /// Default: nothing rewritten.
    #[serde(default)]
    pub(crate) rewrite: Option<RawRewrite>,
    #[serde(default)]
    pub(crate) redirect: Option<RawRedirect>,
    #[serde(default)]
    pub(crate) respond: Option<RawRespond>,
    /// Default: the upstream's `response_timeout_ms`.
    #[serde(default)]
    pub(crate) timeout_ms: Option<i64>,
    /// `None` only when the key is absent: an explicit `null` is rejected
    /// because it reads as "no filters" to some and "default" to others.
    #[serde(default, deserialize_with = "present_list")]
    pub(crate) filters: Option<Vec<String>>,
}

/// A route's `match:` mapping.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a match mapping")]
pub(crate) struct RawMatch {
    /// Default `/`.
    #[serde(default)]
    pub(crate) path_prefix: Option<String>,
    #[serde(default)]
    pub(crate) path: Option<String>,
    #[serde(default)]
    pub(crate) path_regex: Option<String>,
    /// Default: any host.
    #[serde(default)]
    pub(crate) host: Option<String>,
    /// Default: any method.
    #[serde(default)]
    pub(crate) methods: Option<Vec<String>>,
    #[serde(default)]
    pub(crate) headers: Option<Ordered<RawHeaderMatch>>,
    #[serde(default)]
    pub(crate) query: Option<Ordered<String>>,
}

/// One item of `upstreams:` in a route.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping with name and weight")]
pub(crate) struct RawWeighted {
    pub(crate) name: String,
    /// Default 1.
    #[serde(default)]
    pub(crate) weight: Option<i64>,
}

/// `rewrite:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a rewrite mapping")]
pub(crate) struct RawRewrite {
    #[serde(default)]
    pub(crate) path_prefix: Option<String>,
    #[serde(default)]
    pub(crate) host: Option<String>,
}

/// `redirect:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a redirect mapping")]
pub(crate) struct RawRedirect {
    #[serde(default)]
    pub(crate) scheme: Option<String>,
    #[serde(default)]
    pub(crate) host: Option<String>,
    #[serde(default)]
    pub(crate) path: Option<String>,
    /// Default 301.
    #[serde(default)]
    pub(crate) status: Option<i64>,
}

/// `respond:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a respond mapping")]
pub(crate) struct RawRespond {
    /// Default 200.
    #[serde(default)]
    pub(crate) status: Option<i64>,
    /// Default empty.
    #[serde(default)]
    pub(crate) body: Option<String>,
    #[serde(default)]
    pub(crate) headers: Option<Ordered<String>>,
}

/// A `match.headers` value: a string (or number) for an exact value, `{regex: ...}` or
/// `{present: BOOL}`.
#[derive(Debug)]
pub(crate) enum RawHeaderMatch {
    Exact(String),
    Regex(String),
    Present(bool),
}

impl<'de> Deserialize<'de> for RawHeaderMatch {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawHeaderMatch;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a header value, {regex: REGEX} or {present: true}")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(RawHeaderMatch::Exact(v.to_owned()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Ok(RawHeaderMatch::Exact(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(RawHeaderMatch::Exact(v.to_string()))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                const FIELDS: &[&str] = &["regex", "present"];
                let Some(key) = map.next_key::<String>()? else {
                    return Err(de::Error::invalid_length(0, &self));
                };
                let found = match key.as_str() {
                    "regex" => RawHeaderMatch::Regex(map.next_value()?),
                    "present" => RawHeaderMatch::Present(map.next_value()?),
                    other => return Err(de::Error::unknown_field(other, FIELDS)),
                };
                if let Some(more) = map.next_key::<String>()? {
                    return Err(if FIELDS.contains(&more.as_str()) {
                        de::Error::custom("give regex or present, not both")
                    } else {
                        de::Error::unknown_field(&more, FIELDS)
                    });
                }
                Ok(found)
            }
        }
        d.deserialize_any(V)
    }
}
