//! The large-body server of E-3, and the streaming body reader its client shares. It runs on a
//! thread of the harness (the client CPU).
//!
//! - `GET …/dl/<n>` answers 200 with `content-length: n` and [`pattern`] repeated to `n` bytes.
//! - `POST …/ul/hash` reads the body (any framing) and answers `<sha256 hex> <bytes>`;
//!   `POST …/ul/count` answers `- <bytes>` (no hashing, for throughput).

use std::net::SocketAddr;

use bytes::{Buf, BytesMut};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::http1::{self, Framing};

/// Length of the repeated block of every large body.
pub const PATTERN_LEN: usize = 1 << 20;
/// Most bytes written per `write_all` of a body.
const WRITE_SLICE: usize = 256 * 1024;

/// A deterministic pseudo-random block (xorshift64), so a proxy that corrupted, dropped or
/// reordered any slice changes the hash.
pub fn pattern() -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..PATTERN_LEN / 8)
        .flat_map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()
        })
        .collect()
}

/// The SHA-256 of [`pattern`] repeated to `n` bytes.
pub fn expected_sha256(pattern: &[u8], n: u64) -> String {
    let mut h = Sha256::new();
    let mut left = n;
    while left > 0 {
        let take = left.min(pattern.len() as u64) as usize;
        h.update(&pattern[..take]);
        left -= take as u64;
    }
    hex::encode(h.finalize())
}

/// Writes `n` bytes of `pattern`, repeated.
pub async fn write_pattern(stream: &mut TcpStream, pattern: &[u8], n: u64) -> std::io::Result<()> {
    let mut left = n;
    let mut at = 0;
    while left > 0 {
        let take = (left.min(WRITE_SLICE as u64) as usize).min(pattern.len() - at);
        stream.write_all(&pattern[at..at + take]).await?;
        at = (at + take) % pattern.len();
        left -= take as u64;
    }
    Ok(())
}

async fn fill(stream: &mut TcpStream, buf: &mut BytesMut) -> std::io::Result<()> {
    if buf.capacity() - buf.len() < 64 * 1024 {
        buf.reserve(256 * 1024);
    }
    if stream.read_buf(buf).await? == 0 {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    Ok(())
}

/// Reads a message head into `buf` and parses it.
pub async fn read_head(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    response: bool,
) -> std::io::Result<http1::Head> {
    loop {
        if let Some(head) = http1::parse_head(buf, response) {
            return Ok(head);
        }
        if http1::head_end(buf).is_some() || buf.len() > 64 * 1024 {
            return Err(std::io::Error::other("malformed head"));
        }
        fill(stream, buf).await?;
    }
}

/// Hands exactly `len` bytes to `sink`: first those `buf` holds, then more from `stream`.
async fn pass_exactly(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    len: u64,
    sink: &mut impl FnMut(&[u8]),
) -> std::io::Result<()> {
    let mut left = len;
    while left > 0 {
        if buf.is_empty() {
            fill(stream, buf).await?;
        }
        let take = left.min(buf.len() as u64) as usize;
        sink(&buf[..take]);
        buf.advance(take);
        left -= take as u64;
    }
    Ok(())
}

/// Reads a body of `framing` from `stream` (`buf` holds what is already read past the head),
/// handing every slice to `sink`. Returns the body's length.
pub async fn read_body(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    framing: Framing,
    mut sink: impl FnMut(&[u8]),
) -> std::io::Result<u64> {
    match framing {
        Framing::Length(n) => {
            pass_exactly(stream, buf, n as u64, &mut sink).await?;
            Ok(n as u64)
        }
        Framing::Chunked => {
            let mut total = 0u64;
            loop {
                let line = read_line(stream, buf).await?;
                let field = String::from_utf8_lossy(&line);
                let size = u64::from_str_radix(field.split(';').next().unwrap_or("").trim(), 16)
                    .map_err(|_| std::io::Error::other("bad chunk size"))?;
                if size == 0 {
                    // Trailers, up to the blank line.
                    while !read_line(stream, buf).await?.is_empty() {}
                    return Ok(total);
                }
                pass_exactly(stream, buf, size, &mut sink).await?;
                total += size;
                if !read_line(stream, buf).await?.is_empty() {
                    return Err(std::io::Error::other("chunk not followed by CRLF"));
                }
            }
        }
        Framing::UntilClose => {
            let mut total = 0u64;
            loop {
                sink(buf);
                total += buf.len() as u64;
                buf.clear();
                match fill(stream, buf).await {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(total),
                    Err(e) => return Err(e),
                }
            }
        }
    }
}

/// One CRLF-terminated line, without the CRLF.
async fn read_line(stream: &mut TcpStream, buf: &mut BytesMut) -> std::io::Result<Vec<u8>> {
    loop {
        if let Some(eol) = buf.windows(2).position(|w| w == b"\r\n") {
            let line = buf[..eol].to_vec();
            buf.advance(eol + 2);
            return Ok(line);
        }
        if buf.len() > 4096 {
            return Err(std::io::Error::other("line too long"));
        }
        fill(stream, buf).await?;
    }
}

/// Starts the server on a thread of its own; returns once it listens.
pub fn spawn(addr: SocketAddr) -> std::io::Result<()> {
    let listener = std::net::TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    std::thread::Builder::new()
        .name("body-server".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_io()
                .build()
                .expect("body server runtime");
            rt.block_on(async move {
                let listener = TcpListener::from_std(listener).expect("body server listener");
                let pattern: &'static [u8] = Vec::leak(pattern());
                while let Ok((stream, _)) = listener.accept().await {
                    tokio::spawn(async move {
                        let _ = connection(stream, pattern).await;
                    });
                }
            });
        })?;
    Ok(())
}

async fn connection(mut stream: TcpStream, pattern: &'static [u8]) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let mut buf = BytesMut::with_capacity(256 * 1024);
    loop {
        let head = match read_head(&mut stream, &mut buf, false).await {
            Ok(head) => head,
            Err(_) => return Ok(()),
        };
        let line = buf[..head.len]
            .split(|&b| b == b'\r')
            .next()
            .map(|l| String::from_utf8_lossy(l).into_owned())
            .unwrap_or_default();
        buf.advance(head.len);
        let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
        if let Some(n) = path
            .rsplit_once("/dl/")
            .and_then(|(_, n)| n.parse::<u64>().ok())
        {
            read_body(&mut stream, &mut buf, head.framing, |_| {}).await?;
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\ncontent-length: {n}\r\n\r\n"
            );
            stream.write_all(head.as_bytes()).await?;
            write_pattern(&mut stream, pattern, n).await?;
        } else {
            let hash = path.ends_with("/ul/hash");
            let mut h = Sha256::new();
            let n = read_body(&mut stream, &mut buf, head.framing, |s| {
                if hash {
                    h.update(s);
                }
            })
            .await?;
            let digest = if hash {
                hex::encode(h.finalize())
            } else {
                "-".into()
            };
            let body = format!("{digest} {n}\n");
            let resp = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            );
            stream.write_all(resp.as_bytes()).await?;
        }
        if head.close {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pattern_is_fixed_and_hashes_like_its_repetition() {
        let p = pattern();
        assert_eq!(p.len(), PATTERN_LEN);
        assert_eq!(p, pattern());
        let mut twice = p.clone();
        twice.extend_from_slice(&p[..100]);
        assert_eq!(
            expected_sha256(&p, twice.len() as u64),
            hex::encode(Sha256::digest(&twice))
        );
    }
}
