//! Token buckets as stored in shared data, and the arithmetic on them. Pure: no hostcalls.

/// One token, in the unit buckets count in (thousandths), so that slow rates refill exactly.
pub(crate) const TOKEN: u64 = 1000;

/// A bucket: its tokens (thousandths) as of refill clock `tick`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Bucket {
    pub(crate) tokens: u64,
    pub(crate) tick: u64,
}

impl Bucket {
    /// The stored form: `tokens,tick` in decimal.
    pub(crate) fn encode(self) -> String {
        format!("{},{}", self.tokens, self.tick)
    }

    pub(crate) fn decode(bytes: &[u8]) -> Option<Bucket> {
        let text = std::str::from_utf8(bytes).ok()?;
        let (tokens, tick) = text.split_once(',')?;
        Some(Bucket {
            tokens: tokens.parse().ok()?,
            tick: tick.parse().ok()?,
        })
    }

    /// The bucket at clock `now`: `per_tick` more for each tick since it was last seen, up to
    /// `capacity`. A clock behind the bucket's (another VM ticked first) adds nothing.
    pub(crate) fn refill(self, now: u64, per_tick: u64, capacity: u64) -> Bucket {
        let elapsed = now.saturating_sub(self.tick);
        Bucket {
            tokens: self
                .tokens
                .saturating_add(elapsed.saturating_mul(per_tick))
                .min(capacity),
            tick: self.tick.max(now),
        }
    }

    /// Takes one token; or, when there is not a whole one, says how much is missing.
    pub(crate) fn take(self) -> Result<Bucket, u64> {
        match self.tokens.checked_sub(TOKEN) {
            Some(tokens) => Ok(Bucket { tokens, ..self }),
            None => Err(TOKEN - self.tokens),
        }
    }
}

/// Whole seconds until `missing` thousandths have been refilled (at least 1), for
/// `retry-after`.
pub(crate) fn retry_after_secs(missing: u64, per_tick: u64, tick_ms: u32) -> u64 {
    let ticks = missing.div_ceil(per_tick.max(1));
    ticks
        .saturating_mul(u64::from(tick_ms))
        .div_ceil(1000)
        .max(1)
}

/// The bucket a key falls in: FNV-1a, modulo `slots`.
pub(crate) fn slot(key: &[u8], slots: u32) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for &b in key {
        hash ^= u32::from(b);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash % slots.max(1)
}

/// The IP of an `ip:port` address (`[v6]:port` too); the text itself if it has no port.
pub(crate) fn client_ip(address: &str) -> &str {
    if let Some(rest) = address.strip_prefix('[') {
        return rest.split_once(']').map_or(address, |(ip, _)| ip);
    }
    match address.rsplit_once(':') {
        Some((ip, port)) if !ip.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => ip,
        _ => address,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_decode_round_trip() {
        let b = Bucket {
            tokens: 2500,
            tick: 17_000_123,
        };
        assert_eq!(Bucket::decode(b.encode().as_bytes()), Some(b));
        assert_eq!(Bucket::decode(b"12"), None);
        assert_eq!(Bucket::decode(b"a,1"), None);
    }

    #[test]
    fn refill_adds_per_tick_up_to_capacity() {
        let b = Bucket {
            tokens: 0,
            tick: 10,
        };
        assert_eq!(
            b.refill(13, 200, 5000),
            Bucket {
                tokens: 600,
                tick: 13
            }
        );
        assert_eq!(b.refill(1000, 200, 5000).tokens, 5000, "capped");
        assert_eq!(
            b.refill(5, 200, 5000),
            Bucket {
                tokens: 0,
                tick: 10
            },
            "clock behind"
        );
    }

    #[test]
    fn take_needs_a_whole_token() {
        let b = Bucket {
            tokens: 1200,
            tick: 0,
        };
        let b = b.take().unwrap();
        assert_eq!(b.tokens, 200);
        assert_eq!(b.take(), Err(800));
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(retry_after_secs(800, 200, 100), 1, "4 ticks of 100 ms");
        assert_eq!(retry_after_secs(1000, 100, 1000), 10);
        assert_eq!(retry_after_secs(1, 1000, 10), 1, "never 0");
    }

    #[test]
    fn slots_are_stable_and_in_range() {
        assert_eq!(slot(b"127.0.0.1", 4096), slot(b"127.0.0.1", 4096));
        assert!(slot(b"x", 7) < 7);
        assert_eq!(slot(b"anything", 1), 0);
    }

    #[test]
    fn client_ip_drops_the_port() {
        assert_eq!(client_ip("10.1.2.3:4567"), "10.1.2.3");
        assert_eq!(client_ip("[::1]:80"), "::1");
        assert_eq!(client_ip("::1"), "::1");
        assert_eq!(client_ip("host"), "host");
    }
}
