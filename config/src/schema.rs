//! The YAML file as serde sees it: raw, unvalidated structs that mirror the schema key for key.

use std::fmt;
use std::marker::PhantomData;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};

mod upstream;

pub(crate) use upstream::*;

mod route;

pub(crate) use route::{RawHeaderMatch, RawMatch, RawRedirect, RawRespond, RawRoute, RawWeighted};

/// The whole file. Field names are the YAML keys.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping of wasmgate settings")]
pub(crate) struct RawConfig {
    /// One address or a list; required.
    pub(crate) listen: OneOrMany,
    /// Admin listener address; default none.
    #[serde(default)]
    pub(crate) admin: Option<String>,
    /// Worker threads; default none (the proxy decides).
    #[serde(default)]
    pub(crate) threads: Option<i64>,
    /// Upstreams by name, in file order; required.
    pub(crate) upstreams: Ordered<RawUpstream>,
    /// The default chain, in order; default empty.
    #[serde(default)]
    pub(crate) filters: Option<Vec<RawFilter>>,
    /// Routes, in file order; required.
    pub(crate) routes: Vec<RawRoute>,
    /// Directory of compiled modules; default none (no disk cache).
    #[serde(default)]
    pub(crate) cache_dir: Option<String>,
    /// Unix socket for graceful binary upgrades; default chosen by the proxy.
    #[serde(default)]
    pub(crate) upgrade_sock: Option<String>,
    /// TLS listeners; default none.
    #[serde(default)]
    pub(crate) listen_tls: Option<Vec<RawTlsListener>>,
    /// Default limits of every filter; default the host's.
    #[serde(default)]
    pub(crate) limits: Option<RawLimits>,
    /// Limits on what clients send; default the proxy's.
    #[serde(default)]
    pub(crate) client: Option<RawClient>,
    /// Streams held paused at once; default 4096.
    #[serde(default)]
    pub(crate) max_paused_streams: Option<i64>,
    /// Forwarding headers; default the proxy's.
    #[serde(default)]
    pub(crate) forwarding: Option<crate::forwarding::RawForwarding>,
    /// Access log; default none.
    #[serde(default)]
    pub(crate) access_log: Option<crate::access_log::RawAccessLog>,
}

/// `client:`: limits on client connections and requests.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a client limits mapping")]
pub(crate) struct RawClient {
    #[serde(default)]
    pub(crate) header_timeout_ms: Option<i64>,
    #[serde(default)]
    pub(crate) max_header_bytes: Option<i64>,
    #[serde(default)]
    pub(crate) max_headers: Option<i64>,
    #[serde(default)]
    pub(crate) body_timeout_ms: Option<i64>,
    #[serde(default)]
    pub(crate) body_min_rate: Option<i64>,
    #[serde(default)]
    pub(crate) keepalive_timeout_ms: Option<i64>,
}

/// One item of `listen_tls:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a TLS listener mapping")]
pub(crate) struct RawTlsListener {
    /// `IP:PORT`; required.
    pub(crate) address: String,
    /// PEM certificate chain file; required.
    pub(crate) cert: String,
    /// PEM private key file; required.
    pub(crate) key: String,
}

/// `limits:`, at the top level or in a filter.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a limits mapping")]
pub(crate) struct RawLimits {
    #[serde(default)]
    pub(crate) callback_deadline_ms: Option<i64>,
    #[serde(default)]
    pub(crate) max_memory_bytes: Option<i64>,
    #[serde(default)]
    pub(crate) max_body_bytes: Option<i64>,
    #[serde(default)]
    pub(crate) compile_timeout_ms: Option<i64>,
}

/// One item of the top-level `filters:` list.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a filter mapping")]
pub(crate) struct RawFilter {
    /// Unique name; required.
    pub(crate) name: String,
    /// A path or `builtin:NAME`; required.
    pub(crate) wasm: String,
    /// Plugin configuration; default empty.
    #[serde(default)]
    pub(crate) configuration: Option<serde_yaml::Value>,
    /// VM configuration; default empty.
    #[serde(default)]
    pub(crate) vm_configuration: Option<serde_yaml::Value>,
    /// Default `""`.
    #[serde(default)]
    pub(crate) root_id: Option<String>,
    /// Default `""`.
    #[serde(default)]
    pub(crate) vm_id: Option<String>,
    /// Default `false`.
    #[serde(default)]
    pub(crate) fail_open: Option<bool>,
    /// This filter's limits, over the top-level ones; default those.
    #[serde(default)]
    pub(crate) limits: Option<RawLimits>,
}

/// Runs only when the key is present. serde_yaml reads `null` as an empty
/// list, so this takes the value itself in order to refuse `null`.
pub(crate) fn present_list<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Vec<String>>, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Option<Vec<String>>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(
                "a list of filter names ([] for none; leave the key out for the default chain)",
            )
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut items = Vec::new();
            while let Some(item) = seq.next_element::<String>()? {
                items.push(item);
            }
            Ok(Some(items))
        }
    }
    d.deserialize_any(V)
}

/// A scalar or a list of scalars, as accepted by `listen:`.
#[derive(Debug)]
pub(crate) struct OneOrMany {
    pub(crate) items: Vec<String>,
    /// Whether it was written as a list, which decides the error key (`listen` or `listen[1]`).
    pub(crate) list: bool,
}

impl<'de> Deserialize<'de> for OneOrMany {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = OneOrMany;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an address or a list of addresses")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<OneOrMany, E> {
                Ok(OneOrMany {
                    items: vec![v.to_owned()],
                    list: false,
                })
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<OneOrMany, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element::<String>()? {
                    items.push(item);
                }
                Ok(OneOrMany { items, list: true })
            }
        }
        d.deserialize_any(V)
    }
}

/// A mapping kept in file order, duplicates included, so that validation
/// can report a repeated name at its second occurrence.
#[derive(Debug)]
pub(crate) struct Ordered<T>(pub(crate) Vec<(String, T)>);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Ordered<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = Ordered<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a mapping of names")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Ordered<T>, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry::<String, T>()? {
                    entries.push(entry);
                }
                Ok(Ordered(entries))
            }
        }
        d.deserialize_map(V(PhantomData))
    }
}
