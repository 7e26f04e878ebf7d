//! Typed properties (`proxy_get_property`).
//!
//! Hosts encode property values differently. Envoy and wasmgate give integers as 8-byte
//! little-endian values, timestamps as 8-byte little-endian nanoseconds since the Unix epoch
//! and booleans as one byte (0 or 1). Kong (ngx_wasm_module) gives most values as text:
//! `"200"`, `"true"`, `"1700000000.123"`. The decoders here accept both, so one filter reads
//! the same property on either host.
//!
//! In a filter, [`get`], [`get_string`], [`get_int`], [`get_bool`] and [`get_time`] read a
//! property by path (`&["request", "path"]`) and decode it; a missing property is `Ok(None)`.
//! The `decode_*` functions are the pure decoders underneath, available on every target.

use std::fmt;
use std::time::{Duration, SystemTime};

/// Why a property could not be read or decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PropertyError {
    /// The host refused the call.
    Host(crate::Status),
    /// The value is not in any encoding of the expected type.
    Invalid {
        /// What was expected: `"integer"`, `"boolean"`, `"timestamp"` or `"UTF-8 text"`.
        expected: &'static str,
        /// The value as the host returned it.
        value: Vec<u8>,
    },
}

impl fmt::Display for PropertyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Host(status) => write!(f, "the host refused the property: {status}"),
            Self::Invalid { expected, value } => write!(
                f,
                "property value {:?} ({} bytes) is not a {expected}",
                String::from_utf8_lossy(value),
                value.len()
            ),
        }
    }
}

impl std::error::Error for PropertyError {}

fn invalid(expected: &'static str, bytes: &[u8]) -> PropertyError {
    PropertyError::Invalid {
        expected,
        value: bytes.to_vec(),
    }
}

/// Text of at most 20 ASCII digits, with an optional leading `-`: how Kong writes integers.
fn decimal(bytes: &[u8]) -> Option<i64> {
    let digits = bytes.strip_prefix(b"-").unwrap_or(bytes);
    if digits.is_empty() || digits.len() > 20 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(bytes).ok()?.parse().ok()
}

/// Decodes an integer: text digits (Kong), else an 8-byte little-endian value (Envoy).
///
/// Text is tried first, so 8 bytes that are all ASCII digits read as text: an 8-byte integer
/// whose every byte is a digit is at least 0x3030303030303030, far beyond any status code,
/// size or port.
///
/// # Errors
///
/// [`PropertyError::Invalid`] for anything else.
pub fn decode_int(bytes: &[u8]) -> Result<i64, PropertyError> {
    if let Some(n) = decimal(bytes) {
        return Ok(n);
    }
    match <[u8; 8]>::try_from(bytes) {
        Ok(le) => Ok(i64::from_le_bytes(le)),
        Err(_) => Err(invalid("integer", bytes)),
    }
}

/// Decodes a boolean: one byte 0 or 1 (Envoy), or the text `true`, `false`, `1`, `0` (Kong).
///
/// # Errors
///
/// [`PropertyError::Invalid`] for anything else, including other single bytes: a byte that
/// is neither 0, 1, `'0'` nor `'1'` is more likely a misread property than a boolean.
pub fn decode_bool(bytes: &[u8]) -> Result<bool, PropertyError> {
    match bytes {
        [1] | b"1" | b"true" => Ok(true),
        [0] | b"0" | b"false" => Ok(false),
        _ => Err(invalid("boolean", bytes)),
    }
}

/// Decodes a timestamp: 8-byte little-endian nanoseconds since the Unix epoch (Envoy), or text
/// seconds with an optional fraction (`1700000000.123`, Kong).
///
/// # Errors
///
/// [`PropertyError::Invalid`] for anything else, or a time before the epoch.
pub fn decode_time(bytes: &[u8]) -> Result<SystemTime, PropertyError> {
    let bad = || invalid("timestamp", bytes);
    if let Some((secs, frac)) = split_seconds(bytes) {
        let nanos = frac
            .iter()
            .chain(std::iter::repeat(&b'0'))
            .take(9)
            .fold(0u32, |n, d| n * 10 + u32::from(d - b'0'));
        return SystemTime::UNIX_EPOCH
            .checked_add(Duration::new(secs, nanos))
            .ok_or_else(bad);
    }
    let le = <[u8; 8]>::try_from(bytes).map_err(|_| bad())?;
    let nanos = u64::try_from(i64::from_le_bytes(le)).map_err(|_| bad())?;
    Ok(SystemTime::UNIX_EPOCH + Duration::from_nanos(nanos))
}

/// `SECONDS[.FRACTION]` in ASCII digits: the whole seconds and the fraction's digits.
fn split_seconds(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let (whole, frac) = match bytes.iter().position(|&b| b == b'.') {
        Some(dot) => (&bytes[..dot], &bytes[dot + 1..]),
        None => (bytes, &[][..]),
    };
    let digits = |s: &[u8]| s.iter().all(u8::is_ascii_digit);
    if whole.is_empty() || whole.len() > 19 || !digits(whole) || !digits(frac) {
        return None;
    }
    // Without a dot, exactly 8 digits could also be an Envoy value; text wins (see decode_int).
    Some((std::str::from_utf8(whole).ok()?.parse().ok()?, frac))
}

/// Decodes UTF-8 text.
///
/// # Errors
///
/// [`PropertyError::Invalid`] when the bytes are not UTF-8.
pub fn decode_str(bytes: &[u8]) -> Result<&str, PropertyError> {
    std::str::from_utf8(bytes).map_err(|_| invalid("UTF-8 text", bytes))
}

pub use guest::*;

/// The functions that read properties from the host.
mod guest {
    use std::time::SystemTime;

    use super::{PropertyError, decode_bool, decode_int, decode_str, decode_time};
    use crate::hostcalls;

    /// The raw value of the property at `path` (e.g. `&["request", "headers", "x-id"]`), or
    /// `None` when the host has no such property (or it is empty).
    ///
    /// # Errors
    ///
    /// [`PropertyError::Host`] when the host refuses the call for another reason.
    pub fn get(path: &[&str]) -> Result<Option<Vec<u8>>, PropertyError> {
        match hostcalls::get_property(path) {
            Ok(bytes) if bytes.is_empty() => Ok(None),
            Ok(bytes) => Ok(Some(bytes)),
            Err(crate::Status::NotFound) => Ok(None),
            Err(status) => Err(PropertyError::Host(status)),
        }
    }

    fn typed<T>(
        path: &[&str],
        decode: impl FnOnce(&[u8]) -> Result<T, PropertyError>,
    ) -> Result<Option<T>, PropertyError> {
        get(path)?.map(|bytes| decode(&bytes)).transpose()
    }

    /// A text property (`request.path`, `plugin_name`, ...).
    ///
    /// # Errors
    ///
    /// As [`get`], or [`PropertyError::Invalid`] if the value is not UTF-8.
    pub fn get_string(path: &[&str]) -> Result<Option<String>, PropertyError> {
        typed(path, |b| decode_str(b).map(str::to_owned))
    }

    /// An integer property (`response.code`, `source.port`, ...); see [`decode_int`].
    ///
    /// # Errors
    ///
    /// As [`get`], or [`PropertyError::Invalid`] if the value is not an integer.
    pub fn get_int(path: &[&str]) -> Result<Option<i64>, PropertyError> {
        typed(path, decode_int)
    }

    /// A boolean property (`connection.mtls`, ...); see [`decode_bool`].
    ///
    /// # Errors
    ///
    /// As [`get`], or [`PropertyError::Invalid`] if the value is not a boolean.
    pub fn get_bool(path: &[&str]) -> Result<Option<bool>, PropertyError> {
        typed(path, decode_bool)
    }

    /// A timestamp property (`request.time`); see [`decode_time`].
    ///
    /// # Errors
    ///
    /// As [`get`], or [`PropertyError::Invalid`] if the value is not a timestamp.
    pub fn get_time(path: &[&str]) -> Result<Option<SystemTime>, PropertyError> {
        typed(path, decode_time)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_decode_from_envoy_and_kong_forms() {
        assert_eq!(decode_int(&200i64.to_le_bytes()), Ok(200));
        assert_eq!(decode_int(&(-5i64).to_le_bytes()), Ok(-5));
        assert_eq!(decode_int(b"200"), Ok(200));
        assert_eq!(decode_int(b"-7"), Ok(-7));
        // Eight digits are text, not a little-endian integer.
        assert_eq!(decode_int(b"12345678"), Ok(12_345_678));
        assert!(matches!(
            decode_int(b"20x"),
            Err(PropertyError::Invalid {
                expected: "integer",
                ..
            })
        ));
        assert!(decode_int(&[1, 2, 3, 4]).is_err());
        assert!(decode_int(b"").is_err());
        assert!(decode_int(b"-").is_err());
    }

    #[test]
    fn booleans_decode_from_one_byte_or_text() {
        assert_eq!(decode_bool(&[1]), Ok(true));
        assert_eq!(decode_bool(&[0]), Ok(false));
        assert_eq!(decode_bool(b"true"), Ok(true));
        assert_eq!(decode_bool(b"false"), Ok(false));
        assert_eq!(decode_bool(b"1"), Ok(true));
        assert_eq!(decode_bool(b"0"), Ok(false));
        assert!(decode_bool(&[2]).is_err());
        assert!(decode_bool(b"yes").is_err());
        assert!(decode_bool(b"").is_err());
    }

    #[test]
    fn timestamps_decode_from_nanoseconds_or_text_seconds() {
        let t = SystemTime::UNIX_EPOCH + Duration::new(1_700_000_000, 123_000_000);
        let nanos = 1_700_000_000_123_000_000i64;
        assert_eq!(decode_time(&nanos.to_le_bytes()), Ok(t));
        assert_eq!(decode_time(b"1700000000.123"), Ok(t));
        assert_eq!(
            decode_time(b"1700000000"),
            Ok(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000))
        );
        assert_eq!(
            decode_time(b"1.0000000019"),
            Ok(SystemTime::UNIX_EPOCH + Duration::new(1, 1))
        );
        assert!(decode_time(&(-1i64).to_le_bytes()).is_err());
        assert!(decode_time(b"1.2.3").is_err());
        assert!(decode_time(b".5").is_err());
    }

    #[test]
    fn strings_must_be_utf8() {
        assert_eq!(decode_str(b"/path"), Ok("/path"));
        let err = decode_str(b"\xff").unwrap_err();
        assert_eq!(
            err.to_string(),
            "property value \"\u{fffd}\" (1 bytes) is not a UTF-8 text"
        );
    }
}
