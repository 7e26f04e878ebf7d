//! Decoding the proxy-wasm pairs format (header maps), without panicking on malformed input.
//!
//! Layout: a little-endian u32 count `n`; `n` pairs of little-endian u32 sizes (name, value);
//! then each name and value in order, each followed by a NUL byte.

/// The pairs in `bytes`, or `None` if the buffer is malformed. An empty buffer is no pairs.
pub(crate) fn decode(bytes: &[u8]) -> Option<Vec<(&[u8], &[u8])>> {
    if bytes.is_empty() {
        return Some(Vec::new());
    }
    let word = |at: usize| -> Option<usize> {
        let b = bytes.get(at..at.checked_add(4)?)?;
        usize::try_from(u32::from_le_bytes([b[0], b[1], b[2], b[3]])).ok()
    };
    let count = word(0)?;
    // Each pair takes at least 8 bytes of sizes and 2 NULs: a bound before allocating.
    if count > bytes.len() / 10 {
        return None;
    }
    let mut data = 4 + count * 8;
    let mut out = Vec::with_capacity(count);
    for i in 0..count {
        let mut field = |size: usize| -> Option<&[u8]> {
            let end = data.checked_add(size)?;
            let value = bytes.get(data..end)?;
            if bytes.get(end) != Some(&0) {
                return None;
            }
            data = end + 1;
            Some(value)
        };
        let name = field(word(4 + i * 8)?)?;
        let value = field(word(8 + i * 8)?)?;
        out.push((name, value));
    }
    (data == bytes.len()).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[rustfmt::skip]
    const SERIALIZED: &[u8] = &[
        2, 0, 0, 0,                     // 2 pairs
        5, 0, 0, 0, 1, 0, 0, 0,         // sizes of (":path", "/")
        1, 0, 0, 0, 0, 0, 0, 0,         // sizes of ("a", "")
        b':', b'p', b'a', b't', b'h', 0,
        b'/', 0,
        b'a', 0,
        0,
    ];

    #[test]
    fn decode_reads_the_golden_map() {
        let pairs = decode(SERIALIZED).unwrap();
        assert_eq!(pairs, [(&b":path"[..], &b"/"[..]), (b"a", b"")]);
        assert_eq!(decode(&[]).unwrap(), []);
    }

    #[test]
    fn decode_refuses_malformed_buffers() {
        // Truncated anywhere.
        for len in 1..SERIALIZED.len() {
            assert_eq!(decode(&SERIALIZED[..len]), None, "truncated to {len}");
        }
        // A missing NUL terminator.
        let mut bad = SERIALIZED.to_vec();
        bad[25] = b'x'; // the NUL after ":path"
        assert_eq!(decode(&bad), None);
        // Trailing garbage.
        let mut long = SERIALIZED.to_vec();
        long.push(0);
        assert_eq!(decode(&long), None);
        // A count far larger than the buffer.
        assert_eq!(decode(&[0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0]), None);
    }
}
