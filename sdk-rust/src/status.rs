//! The status codes of proxy-wasm host calls.

use std::fmt;

/// What a host call returned when it did not succeed (`proxy_status_t`, ABI v0.2.1).
///
/// The proxy-wasm crate's own `Status` lacks several codes and its wrappers panic on the ones it
/// does not expect; the helpers of this crate return every code as a value instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Status {
    /// 1: the key, value or map does not exist.
    NotFound,
    /// 2: an argument was refused (an invalid header name or value, a map that cannot be
    /// written at this point of the stream, ...).
    BadArgument,
    /// 3: the host could not serialize the value.
    SerializationFailure,
    /// 4: the host could not parse the value.
    ParseFailure,
    /// 5: a bad expression.
    BadExpression,
    /// 6: a pointer or length given to the host was out of bounds.
    InvalidMemoryAccess,
    /// 7: nothing to return (an empty queue).
    Empty,
    /// 8: a compare-and-swap lost.
    CasMismatch,
    /// 9: a result mismatch.
    ResultMismatch,
    /// 10: the host failed.
    InternalFailure,
    /// 11: the connection is gone.
    BrokenConnection,
    /// 12: the host does not implement the call.
    Unimplemented,
    /// A code this crate does not know.
    Unknown(u32),
}

impl Status {
    /// Decodes a host call's return value: `Ok(())` for 0 (Ok), the status otherwise.
    ///
    /// # Errors
    ///
    /// Every non-zero code.
    pub fn check(code: u32) -> Result<(), Status> {
        Err(match code {
            0 => return Ok(()),
            1 => Self::NotFound,
            2 => Self::BadArgument,
            3 => Self::SerializationFailure,
            4 => Self::ParseFailure,
            5 => Self::BadExpression,
            6 => Self::InvalidMemoryAccess,
            7 => Self::Empty,
            8 => Self::CasMismatch,
            9 => Self::ResultMismatch,
            10 => Self::InternalFailure,
            11 => Self::BrokenConnection,
            12 => Self::Unimplemented,
            other => Self::Unknown(other),
        })
    }

    /// The numeric code, as the host returned it.
    pub fn code(self) -> u32 {
        match self {
            Self::NotFound => 1,
            Self::BadArgument => 2,
            Self::SerializationFailure => 3,
            Self::ParseFailure => 4,
            Self::BadExpression => 5,
            Self::InvalidMemoryAccess => 6,
            Self::Empty => 7,
            Self::CasMismatch => 8,
            Self::ResultMismatch => 9,
            Self::InternalFailure => 10,
            Self::BrokenConnection => 11,
            Self::Unimplemented => 12,
            Self::Unknown(code) => code,
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unknown(code) => write!(f, "unknown status {code}"),
            known => write!(f, "{known:?} ({})", known.code()),
        }
    }
}

impl std::error::Error for Status {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_round_trips_every_code() {
        assert_eq!(Status::check(0), Ok(()));
        for code in 1..=13 {
            let status = Status::check(code).unwrap_err();
            assert_eq!(status.code(), code);
        }
        assert_eq!(Status::check(13), Err(Status::Unknown(13)));
        assert_eq!(Status::BadArgument.to_string(), "BadArgument (2)");
    }
}
