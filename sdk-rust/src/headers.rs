//! Header maps that never panic: reads return `Option`/`Result` (also for values that are not
//! UTF-8), writes the host refuses return the status.
//!
//! The proxy-wasm crate's `get_http_request_header` panics on a non-UTF-8 value, and its
//! setters panic when the host refuses a write (a value with a newline, a map already sent
//! on); in a filter a panic is a trap, and the request fails with 503. With these helpers the
//! filter decides:
//!
//! Like every helper that makes host calls, these compile on every target but work only
//! inside a wasm VM (in a filter's native unit tests, the host's imports do not exist).
//!
//! ```ignore
//! use wasmgate_sdk::headers::Headers;
//!
//! fn on_http_request_headers(&mut self, _: usize, _: bool) -> Action {
//!     match Headers::REQUEST.get_str("x-user") {
//!         Ok(Some(user)) => { let _ = Headers::REQUEST.set("x-user-seen", &user); }
//!         Ok(None) => {}
//!         Err(e) => log::warn!("ignoring x-user: {e}"),
//!     }
//!     Action::Continue
//! }
//! ```

use std::fmt;

use crate::{Status, hostcalls, pairs};

/// One of the stream's header maps. Cheap to copy; every method is one host call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Headers {
    map: u32,
}

/// Why a header could not be read as text.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum HeaderError {
    /// The host refused the call.
    Host(Status),
    /// The value is not UTF-8 (HTTP allows such bytes); the raw value is kept.
    NotUtf8 {
        /// The header's name.
        name: String,
        /// The value as received.
        value: Vec<u8>,
    },
}

impl fmt::Display for HeaderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Host(status) => write!(f, "the host refused the header call: {status}"),
            Self::NotUtf8 { name, value } => {
                write!(f, "header {name} is not UTF-8 ({} bytes)", value.len())
            }
        }
    }
}

impl std::error::Error for HeaderError {}

impl From<Status> for HeaderError {
    fn from(status: Status) -> Self {
        Self::Host(status)
    }
}

impl Headers {
    /// The request headers, pseudo-headers (`:path`, `:method`, `:authority`, `:scheme`)
    /// included. Writable in `on_http_request_headers`, readable afterwards.
    pub const REQUEST: Headers = Headers { map: 0 };
    /// The request trailers.
    pub const REQUEST_TRAILERS: Headers = Headers { map: 1 };
    /// The response headers, `:status` included. Writable in `on_http_response_headers`.
    pub const RESPONSE: Headers = Headers { map: 2 };
    /// The response trailers.
    pub const RESPONSE_TRAILERS: Headers = Headers { map: 3 };

    /// The first value of `name` as bytes; `None` if the header is absent (or the map does not
    /// exist at this point of the stream).
    ///
    /// # Errors
    ///
    /// The status, when the host refuses the call for another reason.
    pub fn get(self, name: &str) -> Result<Option<Vec<u8>>, Status> {
        match hostcalls::get_map_value(self.map, name) {
            Ok(value) => Ok(Some(value)),
            Err(Status::NotFound) => Ok(None),
            Err(status) => Err(status),
        }
    }

    /// The first value of `name` as text.
    ///
    /// # Errors
    ///
    /// [`HeaderError::NotUtf8`] (with the raw value) if it is not UTF-8, or
    /// [`HeaderError::Host`] as in [`Headers::get`].
    pub fn get_str(self, name: &str) -> Result<Option<String>, HeaderError> {
        let Some(value) = self.get(name)? else {
            return Ok(None);
        };
        String::from_utf8(value)
            .map(Some)
            .map_err(|e| HeaderError::NotUtf8 {
                name: name.to_owned(),
                value: e.into_bytes(),
            })
    }

    /// Every entry in map order, values as bytes. An absent map is empty.
    ///
    /// # Errors
    ///
    /// The status when the host refuses the call, or [`Status::SerializationFailure`] if the
    /// host returned a malformed map (or a name that is not UTF-8).
    pub fn pairs(self) -> Result<Vec<(String, Vec<u8>)>, Status> {
        let bytes = match hostcalls::get_map_pairs(self.map) {
            Ok(bytes) => bytes,
            Err(Status::NotFound) => return Ok(Vec::new()),
            Err(status) => return Err(status),
        };
        let decoded = pairs::decode(&bytes).ok_or(Status::SerializationFailure)?;
        decoded
            .into_iter()
            .map(|(name, value)| {
                let name = std::str::from_utf8(name).map_err(|_| Status::SerializationFailure)?;
                Ok((name.to_owned(), value.to_vec()))
            })
            .collect()
    }

    /// Sets `name` to this one value, replacing every value it had (creating it if absent).
    ///
    /// # Errors
    ///
    /// The status when the host refuses: [`Status::BadArgument`] for an invalid name or value
    /// (a CR, LF or NUL, say) or a map that can no longer be changed.
    pub fn set(self, name: &str, value: impl AsRef<[u8]>) -> Result<(), Status> {
        hostcalls::replace_map_value(self.map, name, value.as_ref())
    }

    /// Appends a value to `name`, keeping the values it had.
    ///
    /// # Errors
    ///
    /// As [`Headers::set`].
    pub fn add(self, name: &str, value: impl AsRef<[u8]>) -> Result<(), Status> {
        hostcalls::add_map_value(self.map, name, value.as_ref())
    }

    /// Removes every value of `name`; an absent header is fine.
    ///
    /// # Errors
    ///
    /// As [`Headers::set`] (pseudo-headers cannot be removed).
    pub fn remove(self, name: &str) -> Result<(), Status> {
        hostcalls::remove_map_value(self.map, name)
    }
}
