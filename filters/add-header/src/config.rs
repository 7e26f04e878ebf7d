//! The add-header configuration: which headers to remove, set and add, per direction.
//! Parsed and validated once in `on_configure`, so the per-request path never fails on config.

use std::fmt;

use serde::Deserialize;
use serde::de::{Deserializer, MapAccess, SeqAccess, Visitor};

/// The whole plugin configuration.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Config {
    /// Edits applied to the request headers before they go upstream.
    #[serde(default)]
    pub(crate) request: Edits,
    /// Edits applied to the response headers before they go to the client.
    #[serde(default)]
    pub(crate) response: Edits,
}

/// The edits for one direction, applied in field order: remove, then set, then add.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Edits {
    /// Header names whose every value is removed.
    #[serde(default)]
    pub(crate) remove: Vec<String>,
    /// Headers replaced by a single value (created when missing).
    #[serde(default)]
    pub(crate) set: Pairs,
    /// Headers appended, keeping any existing values.
    #[serde(default)]
    pub(crate) add: Pairs,
}

/// Header name/value pairs written as a JSON object or as a list of `[name, value]`.
///
/// The list form exists because a JSON object cannot portably express order or repeated names,
/// which matter for `add` (e.g. two `set-cookie` values).
#[derive(Debug, Default)]
pub(crate) struct Pairs(pub(crate) Vec<(String, String)>);

impl Config {
    /// Parses `bytes` and checks every header name and value.
    ///
    /// # Errors
    /// A human-readable reason: a JSON error (with line and column), an unknown key, a non-string
    /// value, or a header name or value that no HTTP host would accept.
    pub(crate) fn parse(bytes: &[u8]) -> Result<Self, String> {
        let config: Config = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        config.request.validate("request")?;
        config.response.validate("response")?;
        Ok(config)
    }

    /// True when the configuration asks for no edit at all.
    pub(crate) fn is_empty(&self) -> bool {
        self.request.is_empty() && self.response.is_empty()
    }
}

impl Edits {
    pub(crate) fn is_empty(&self) -> bool {
        self.remove.is_empty() && self.set.0.is_empty() && self.add.0.is_empty()
    }

    // Rejecting bad names here matters: a host answers an invalid header with BadArgument, and the
    // Rust SDK turns any non-Ok status into a panic, i.e. a trap on every request.
    fn validate(&self, direction: &str) -> Result<(), String> {
        for name in &self.remove {
            check_name(name).map_err(|e| format!("{direction}.remove: {e}"))?;
        }
        for (field, pairs) in [("set", &self.set), ("add", &self.add)] {
            for (name, value) in &pairs.0 {
                check_name(name).map_err(|e| format!("{direction}.{field}: {e}"))?;
                check_value(value).map_err(|e| format!("{direction}.{field}.{name}: {e}"))?;
            }
        }
        Ok(())
    }
}

/// Accepts an RFC 9110 token, optionally preceded by `:` so pseudo-headers such as `:authority`
/// can be rewritten.
fn check_name(name: &str) -> Result<(), String> {
    let token = name.strip_prefix(':').unwrap_or(name);
    let is_tchar = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if token.is_empty() || !token.bytes().all(is_tchar) {
        return Err(format!("invalid header name {name:?}"));
    }
    Ok(())
}

/// Rejects control characters (CR and LF above all: they would allow header injection).
fn check_value(value: &str) -> Result<(), String> {
    if value.bytes().any(|b| (b < 0x20 && b != b'\t') || b == 0x7f) {
        return Err(format!("invalid header value {value:?}: control character"));
    }
    Ok(())
}

impl<'de> Deserialize<'de> for Pairs {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(PairsVisitor)
    }
}

// A hand-written visitor rather than `#[serde(untagged)]`: untagged enums only report "did not
// match any variant", and the operator needs to know which value was wrong.
struct PairsVisitor;

impl<'de> Visitor<'de> for PairsVisitor {
    type Value = Pairs;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object of header name to string value, or a list of [name, value] pairs")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Pairs, A::Error> {
        let mut pairs = Vec::new();
        while let Some(pair) = map.next_entry::<String, String>()? {
            pairs.push(pair);
        }
        Ok(Pairs(pairs))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Pairs, A::Error> {
        let mut pairs = Vec::new();
        while let Some(pair) = seq.next_element::<(String, String)>()? {
            pairs.push(pair);
        }
        Ok(Pairs(pairs))
    }
}

#[cfg(test)]
mod tests;
