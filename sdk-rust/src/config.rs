//! Plugin configuration: read it in `on_configure`, parse it into a typed value, and say why it
//! was rejected.
//!
//! In a filter, [`load_json`], [`load_text`] and [`load_with`] read the plugin configuration
//! buffer, parse it, store the result and return the `bool` that `on_configure` must return; on
//! failure they log the reason at error level (the host prints it with the filter's name, and
//! `wasmgate check` shows it) and leave the previous configuration in place:
//!
//! ```ignore
//! impl RootContext for MyRoot {
//!     fn on_configure(&mut self, _size: usize) -> bool {
//!         wasmgate_sdk::config::load_json(&mut self.config)
//!     }
//! }
//! ```
//!
//! [`parse_json`] and [`parse_text`] are the pure parsers underneath; they work on every target,
//! so a filter's native unit tests can check its configuration format.

use std::fmt;
use std::str::FromStr;

/// Why a configuration was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// The host would not return the configuration buffer.
    Read(crate::Status),
    /// The configuration is not UTF-8 text.
    NotUtf8 {
        /// Bytes before the first invalid sequence.
        valid_up_to: usize,
    },
    /// The configuration does not parse; the parser's message.
    Invalid(String),
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Read(status) => write!(f, "cannot read the plugin configuration: {status}"),
            Self::NotUtf8 { valid_up_to } => write!(
                f,
                "the plugin configuration is not UTF-8 (invalid byte after {valid_up_to} bytes)"
            ),
            Self::Invalid(message) => f.write_str(message),
        }
    }
}

impl std::error::Error for ConfigError {}

fn utf8(bytes: &[u8]) -> Result<&str, ConfigError> {
    std::str::from_utf8(bytes).map_err(|e| ConfigError::NotUtf8 {
        valid_up_to: e.valid_up_to(),
    })
}

/// Parses a JSON configuration into `T`.
///
/// An empty (or all-whitespace) configuration reads as `{}`: a struct whose fields all have
/// defaults (`#[serde(default)]`) accepts it, and one with required fields reports the first
/// missing one. Use `#[serde(deny_unknown_fields)]` to turn typos into errors.
///
/// # Errors
///
/// [`ConfigError::Invalid`] with serde_json's message, which gives the line and column.
#[cfg(any(feature = "json", not(target_arch = "wasm32")))]
pub fn parse_json<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ConfigError> {
    let bytes: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        bytes
    };
    serde_json::from_slice(bytes).map_err(|e| ConfigError::Invalid(e.to_string()))
}

/// Parses a plain-text configuration into `T` with its [`FromStr`], after trimming surrounding
/// whitespace (a trailing newline from a YAML block scalar, say).
///
/// # Errors
///
/// [`ConfigError::NotUtf8`], or [`ConfigError::Invalid`] with the `FromStr` error's message.
pub fn parse_text<T>(bytes: &[u8]) -> Result<T, ConfigError>
where
    T: FromStr,
    T::Err: fmt::Display,
{
    utf8(bytes)?
        .trim()
        .parse()
        .map_err(|e: T::Err| ConfigError::Invalid(e.to_string()))
}

pub use guest::*;

/// The functions that read the configuration from the host.
mod guest {
    use std::fmt;

    use super::ConfigError;
    use crate::hostcalls::{self, BUFFER_PLUGIN_CONFIGURATION};
    use crate::log::{self, Level};

    /// The plugin configuration buffer (empty when the filter has none). Meaningful in
    /// `on_configure`.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Read`] when the host refuses the call.
    pub fn read() -> Result<Vec<u8>, ConfigError> {
        match hostcalls::get_buffer(BUFFER_PLUGIN_CONFIGURATION) {
            Ok(bytes) => Ok(bytes),
            Err(crate::Status::NotFound) => Ok(Vec::new()),
            Err(status) => Err(ConfigError::Read(status)),
        }
    }

    /// Reads the plugin configuration and parses it with `parse`. On failure, logs
    /// `invalid plugin configuration: <reason>` at error level and returns `None`.
    pub fn parse_with<T, E: fmt::Display>(parse: impl FnOnce(&[u8]) -> Result<T, E>) -> Option<T> {
        let outcome = match read() {
            Ok(bytes) => parse(&bytes).map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        outcome
            .map_err(|reason| {
                log::log(
                    Level::Error,
                    &format!("invalid plugin configuration: {reason}"),
                )
            })
            .ok()
    }

    /// Reads the plugin configuration, parses it with `parse` and stores it in `slot`. Returns
    /// what `on_configure` must return: `true` on success; on failure `false`, after logging
    /// the reason at error level, with `slot` unchanged.
    pub fn load_with<T, E: fmt::Display>(
        slot: &mut T,
        parse: impl FnOnce(&[u8]) -> Result<T, E>,
    ) -> bool {
        match parse_with(parse) {
            Some(value) => {
                *slot = value;
                true
            }
            None => false,
        }
    }

    /// [`load_with`] and [`parse_json`](super::parse_json): the configuration is JSON.
    #[cfg(any(feature = "json", not(target_arch = "wasm32")))]
    pub fn load_json<T: serde::de::DeserializeOwned>(slot: &mut T) -> bool {
        load_with(slot, super::parse_json)
    }

    /// [`parse_with`] and [`parse_json`](super::parse_json): the parsed JSON configuration, or
    /// `None` after logging why it was rejected. For values kept behind an `Rc`:
    /// `config::json().map(|c| self.config = Rc::new(c)).is_some()`.
    #[cfg(any(feature = "json", not(target_arch = "wasm32")))]
    pub fn json<T: serde::de::DeserializeOwned>() -> Option<T> {
        parse_with(super::parse_json)
    }

    /// [`load_with`] and [`parse_text`](super::parse_text): the configuration is the text form
    /// of `T` (a number, a name, a custom `FromStr` type).
    pub fn load_text<T>(slot: &mut T) -> bool
    where
        T: std::str::FromStr,
        T::Err: fmt::Display,
    {
        load_with(slot, super::parse_text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Example {
        header: String,
        #[serde(default)]
        count: u32,
    }

    #[derive(Debug, Default, PartialEq, serde::Deserialize)]
    #[serde(default)]
    struct AllDefaults {
        enabled: bool,
    }

    #[test]
    fn parse_json_reads_a_typed_value() {
        let c: Example = parse_json(br#"{"header": "x-a", "count": 2}"#).unwrap();
        assert_eq!(
            c,
            Example {
                header: "x-a".into(),
                count: 2
            }
        );
    }

    #[test]
    fn parse_json_treats_empty_as_an_empty_object() {
        let c: AllDefaults = parse_json(b"  \n").unwrap();
        assert_eq!(c, AllDefaults::default());
        let err = parse_json::<Example>(b"").unwrap_err();
        assert_eq!(err.to_string(), "missing field `header` at line 1 column 2");
    }

    #[test]
    fn parse_json_errors_give_the_position() {
        let err = parse_json::<Example>(br#"{"header": "x", "cuont": 1}"#).unwrap_err();
        let message = err.to_string();
        assert!(message.starts_with("unknown field `cuont`"), "{message}");
        assert!(message.contains("line 1 column"), "{message}");
    }

    #[test]
    fn parse_text_trims_and_uses_from_str() {
        assert_eq!(parse_text::<u32>(b" 42\n"), Ok(42));
        let err = parse_text::<u32>(b"forty").unwrap_err();
        assert_eq!(err.to_string(), "invalid digit found in string");
        assert_eq!(
            parse_text::<String>(b"ok\xff"),
            Err(ConfigError::NotUtf8 { valid_up_to: 2 })
        );
    }
}
