//! The proxy-wasm pairs format for header maps, local-reply headers and map properties.
//!
//! ```text
//! u32 N, then N × (u32 key_len, u32 value_len), then N × (key, 0x00, value, 0x00)   (all LE)
//! ```

/// Why a guest's pairs buffer was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PairsError {
    /// The buffer is shorter or longer than its own header says.
    Truncated,
    /// More pairs, or more bytes, than the host accepts.
    TooLarge,
    /// A key or value is not followed by its NUL terminator.
    MissingNul,
}

/// Decoded pairs, borrowing from the buffer they were read from.
pub type Pairs<'a> = Vec<(&'a [u8], &'a [u8])>;

/// Bytes needed to encode `pairs`.
pub fn encoded_len<'a, I>(pairs: I) -> usize
where
    I: IntoIterator<Item = (&'a [u8], &'a [u8])>,
{
    pairs
        .into_iter()
        .fold(4, |n, (k, v)| n + 8 + k.len() + 1 + v.len() + 1)
}

/// Encodes `pairs` into `out`, which must be exactly [`encoded_len`] bytes long.
///
/// Writing straight into the destination (guest memory) avoids an intermediate copy.
pub fn encode_into<'a, I>(pairs: I, out: &mut [u8])
where
    I: IntoIterator<Item = (&'a [u8], &'a [u8])> + Clone,
{
    let count = pairs.clone().into_iter().count();
    out[0..4].copy_from_slice(&(count as u32).to_le_bytes());
    let mut sizes = 4;
    let mut data = 4 + 8 * count;
    for (k, v) in pairs {
        out[sizes..sizes + 4].copy_from_slice(&(k.len() as u32).to_le_bytes());
        out[sizes + 4..sizes + 8].copy_from_slice(&(v.len() as u32).to_le_bytes());
        sizes += 8;
        out[data..data + k.len()].copy_from_slice(k);
        data += k.len();
        out[data] = 0;
        data += 1;
        out[data..data + v.len()].copy_from_slice(v);
        data += v.len();
        out[data] = 0;
        data += 1;
    }
}

/// Encodes `pairs` into a new vector.
pub fn encode<'a, I>(pairs: I) -> Vec<u8>
where
    I: IntoIterator<Item = (&'a [u8], &'a [u8])> + Clone,
{
    let mut out = vec![0; encoded_len(pairs.clone())];
    encode_into(pairs, &mut out);
    out
}

/// Decodes a guest's pairs buffer, refusing anything malformed or over the limits.
///
/// An empty buffer is an empty map. Unlike cpp-host, a malformed buffer is an error rather than
/// an empty map: silently turning a bad `set_header_map_pairs` into "remove every header" would
/// be worse than telling the guest.
pub fn decode(buf: &[u8], max_pairs: usize, max_bytes: usize) -> Result<Pairs<'_>, PairsError> {
    if buf.is_empty() {
        return Ok(Vec::new());
    }
    if buf.len() > max_bytes {
        return Err(PairsError::TooLarge);
    }
    let count = read_u32(buf, 0).ok_or(PairsError::Truncated)? as usize;
    if count > max_pairs {
        return Err(PairsError::TooLarge);
    }
    let mut data = count
        .checked_mul(8)
        .and_then(|n| n.checked_add(4))
        .ok_or(PairsError::Truncated)?;
    if data > buf.len() {
        return Err(PairsError::Truncated);
    }
    let mut out = Vec::with_capacity(count);
    for i in 0..count {
        let klen = read_u32(buf, 4 + 8 * i).ok_or(PairsError::Truncated)? as usize;
        let vlen = read_u32(buf, 8 + 8 * i).ok_or(PairsError::Truncated)? as usize;
        let key = take_terminated(buf, &mut data, klen)?;
        let value = take_terminated(buf, &mut data, vlen)?;
        out.push((key, value));
    }
    if data != buf.len() {
        return Err(PairsError::Truncated);
    }
    Ok(out)
}

fn read_u32(buf: &[u8], at: usize) -> Option<u32> {
    let bytes = buf.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes(bytes.try_into().ok()?))
}

fn take_terminated<'a>(buf: &'a [u8], at: &mut usize, len: usize) -> Result<&'a [u8], PairsError> {
    let end = at.checked_add(len).ok_or(PairsError::Truncated)?;
    let item = buf.get(*at..end).ok_or(PairsError::Truncated)?;
    match buf.get(end) {
        Some(0) => {}
        Some(_) => return Err(PairsError::MissingNul),
        None => return Err(PairsError::Truncated),
    }
    *at = end + 1;
    Ok(item)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[rustfmt::skip]
    const GOLDEN: &[u8] = &[
        2, 0, 0, 0,             // two pairs
        1, 0, 0, 0, 1, 0, 0, 0, // len("a"), len("1")
        1, 0, 0, 0, 2, 0, 0, 0, // len("b"), len("22")
        b'a', 0, b'1', 0,
        b'b', 0, b'2', b'2', 0,
    ];

    #[test]
    fn encode_matches_golden_bytes() {
        let pairs: [(&[u8], &[u8]); 2] = [(b"a", b"1"), (b"b", b"22")];
        assert_eq!(encode(pairs), GOLDEN);
        assert_eq!(encoded_len(pairs), 29);
    }

    #[test]
    fn decode_round_trips_golden_bytes() {
        let pairs = decode(GOLDEN, 1024, 1 << 20).unwrap();
        assert_eq!(pairs, vec![(&b"a"[..], &b"1"[..]), (&b"b"[..], &b"22"[..])]);
    }

    #[test]
    fn decode_empty_buffer_is_empty_map() {
        assert_eq!(decode(&[], 10, 100).unwrap(), vec![]);
        assert_eq!(decode(&[0, 0, 0, 0], 10, 100).unwrap(), vec![]);
    }

    #[test]
    fn decode_rejects_malformed_buffers() {
        assert_eq!(decode(&[0], 10, 100), Err(PairsError::Truncated));
        assert_eq!(
            decode(&GOLDEN[..28], 1024, 1 << 20),
            Err(PairsError::Truncated)
        );
        let mut trailing = GOLDEN.to_vec();
        trailing.push(0);
        assert_eq!(decode(&trailing, 1024, 1 << 20), Err(PairsError::Truncated));
        let mut no_nul = GOLDEN.to_vec();
        no_nul[21] = b'x';
        assert_eq!(decode(&no_nul, 1024, 1 << 20), Err(PairsError::MissingNul));
    }

    #[test]
    fn decode_rejects_counts_and_lengths_that_overflow() {
        // A count of u32::MAX must not allocate or overflow.
        assert_eq!(
            decode(&[0xff; 4], usize::MAX, usize::MAX),
            Err(PairsError::Truncated)
        );
        let mut huge_len = vec![1, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0];
        huge_len.extend_from_slice(&[0, 0]);
        assert_eq!(decode(&huge_len, 10, 100), Err(PairsError::Truncated));
    }

    #[test]
    fn decode_enforces_limits() {
        assert_eq!(decode(GOLDEN, 1, 1 << 20), Err(PairsError::TooLarge));
        assert_eq!(decode(GOLDEN, 1024, 28), Err(PairsError::TooLarge));
    }
}
