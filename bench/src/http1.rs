//! Just enough HTTP/1.1 for a fast upstream and an open-loop client: find the end of a message
//! head, read the framing headers, and walk a chunked body. No allocation per message.

/// The framing of a message body, from its head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// `Content-Length: n` (0 when absent, for requests and for 204/304 responses).
    Length(usize),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// A response without length: the body runs to the end of the connection.
    UntilClose,
}

/// What a parsed head says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    /// Bytes of the head, blank line included.
    pub len: usize,
    /// The status code for a response, 0 for a request.
    pub status: u16,
    pub framing: Framing,
    /// `Connection: close` was present.
    pub close: bool,
}

/// Position just past the first `\r\n\r\n` in `buf`.
pub fn head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

fn trim(v: &[u8]) -> &[u8] {
    let start = v
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(v.len());
    let end = v
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |i| i + 1);
    &v[start..end]
}

fn parse_usize(v: &[u8]) -> Option<usize> {
    let v = trim(v);
    if v.is_empty() || v.len() > 18 {
        return None;
    }
    v.iter().try_fold(0usize, |acc, &b| {
        b.is_ascii_digit().then(|| acc * 10 + usize::from(b - b'0'))
    })
}

/// Parses a complete head (`buf` holds at least [`head_end`] bytes). `response` selects the
/// default framing: a response without length runs until close, a request has no body.
/// `None` for a malformed head.
pub fn parse_head(buf: &[u8], response: bool) -> Option<Head> {
    let len = head_end(buf)?;
    let mut lines = buf[..len - 4].split(|&b| b == b'\n');
    let first = lines.next()?;
    let status = if response {
        // "HTTP/1.1 200 OK"
        let code = first.split(|&b| b == b' ').nth(1)?;
        u16::try_from(parse_usize(code)?).ok()?
    } else {
        0
    };
    let mut framing = None;
    let mut close = false;
    for line in lines {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], trim(&line[colon + 1..]));
        if name.eq_ignore_ascii_case(b"content-length") {
            if framing != Some(Framing::Chunked) {
                framing = Some(Framing::Length(parse_usize(value)?));
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            if value.eq_ignore_ascii_case(b"chunked") {
                framing = Some(Framing::Chunked);
            }
        } else if name.eq_ignore_ascii_case(b"connection") && value.eq_ignore_ascii_case(b"close") {
            close = true;
        }
    }
    let bodiless = response && (status == 204 || status == 304 || (100..200).contains(&status));
    let framing = match framing {
        _ if bodiless => Framing::Length(0),
        Some(f) => f,
        None if response => Framing::UntilClose,
        None => Framing::Length(0),
    };
    Some(Head {
        len,
        status,
        framing,
        close,
    })
}

/// Progress through a chunked body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chunked {
    /// The body (trailers and final blank line included) ends this many bytes into the input.
    Done(usize),
    /// More input is needed.
    Partial,
    /// Not valid chunked encoding.
    Invalid,
}

/// Walks a chunked body held entirely in `buf` (which starts right after the head).
pub fn chunked_end(buf: &[u8]) -> Chunked {
    let mut pos = 0;
    loop {
        let Some(eol) = buf[pos..].windows(2).position(|w| w == b"\r\n") else {
            return Chunked::Partial;
        };
        let size_field = &buf[pos..pos + eol];
        let size_field = size_field
            .split(|&b| b == b';')
            .next()
            .map(trim)
            .unwrap_or_default();
        let Ok(text) = std::str::from_utf8(size_field) else {
            return Chunked::Invalid;
        };
        let Ok(size) = usize::from_str_radix(text, 16) else {
            return Chunked::Invalid;
        };
        pos += eol + 2;
        if size == 0 {
            // Trailers, then a blank line.
            loop {
                let Some(eol) = buf[pos..].windows(2).position(|w| w == b"\r\n") else {
                    return Chunked::Partial;
                };
                pos += eol + 2;
                if eol == 0 {
                    return Chunked::Done(pos);
                }
            }
        }
        if buf.len() < pos + size + 2 {
            return Chunked::Partial;
        }
        pos += size + 2;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_heads_give_status_and_framing() {
        let h = parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\nhello", true).unwrap();
        assert_eq!(
            (h.status, h.framing, h.close, h.len),
            (200, Framing::Length(12), false, 39)
        );
        let h = parse_head(
            b"HTTP/1.1 403 Forbidden\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n",
            true,
        )
        .unwrap();
        assert_eq!(
            (h.status, h.framing, h.close),
            (403, Framing::Chunked, true)
        );
        let h = parse_head(b"HTTP/1.1 204 No Content\r\n\r\n", true).unwrap();
        assert_eq!(h.framing, Framing::Length(0));
        let h = parse_head(b"HTTP/1.0 200 OK\r\n\r\n", true).unwrap();
        assert_eq!(h.framing, Framing::UntilClose);
        assert!(parse_head(b"HTTP/1.1 200 OK\r\n", true).is_none());
    }

    #[test]
    fn request_heads_default_to_no_body() {
        let h = parse_head(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", false).unwrap();
        assert_eq!((h.status, h.framing), (0, Framing::Length(0)));
        let h = parse_head(b"POST / HTTP/1.1\r\ncontent-length:  65536 \r\n\r\n", false).unwrap();
        assert_eq!(h.framing, Framing::Length(65536));
    }

    #[test]
    fn chunked_bodies_are_walked_to_their_end() {
        assert_eq!(
            chunked_end(b"5\r\nhello\r\n0\r\n\r\nNEXT"),
            Chunked::Done(15)
        );
        assert_eq!(
            chunked_end(b"5;x=y\r\nhello\r\n0\r\nt: 1\r\n\r\n"),
            Chunked::Done(25)
        );
        assert_eq!(chunked_end(b"5\r\nhel"), Chunked::Partial);
        assert_eq!(chunked_end(b"5\r\nhello\r\n0\r\n"), Chunked::Partial);
        assert_eq!(chunked_end(b"zz\r\n"), Chunked::Invalid);
    }
}
