//! A minimal keep-alive HTTP/1.1 client connection: write a prepared request, read one whole
//! response. Used by the open-loop load generator and by the harness's functional probes.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::http1::{self, Chunked, Framing};

/// A request, ready to be written as is.
pub fn request(
    method: &str,
    path: &str,
    host: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> Vec<u8> {
    let mut r = format!("{method} {path} HTTP/1.1\r\nhost: {host}\r\n");
    for (k, v) in headers {
        r.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() || method == "POST" {
        r.push_str(&format!("content-length: {}\r\n", body.len()));
    }
    r.push_str("\r\n");
    let mut r = r.into_bytes();
    r.extend_from_slice(body);
    r
}

/// One response, as read.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    /// The head as text (status line and headers).
    pub head: String,
    pub body: Vec<u8>,
    /// The server will close the connection after this response.
    pub close: bool,
}

impl Response {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|line| {
            let (k, v) = line.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// A keep-alive connection.
#[derive(Debug)]
pub struct Connection {
    stream: TcpStream,
    buf: BytesMut,
}

fn invalid(what: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string())
}

impl Connection {
    pub async fn connect(addr: SocketAddr) -> std::io::Result<Connection> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Connection {
            stream,
            buf: BytesMut::with_capacity(16 * 1024),
        })
    }

    /// Whether the peer closed the connection (or it failed): waits at most `wait` for the
    /// socket to become readable, and looks without consuming.
    pub async fn peer_closed(&mut self, wait: Duration) -> bool {
        if !self.buf.is_empty() {
            return false;
        }
        let mut byte = [0u8; 1];
        match tokio::time::timeout(wait, self.stream.peek(&mut byte)).await {
            Ok(Ok(0)) | Ok(Err(_)) => true,
            Ok(Ok(_)) | Err(_) => false,
        }
    }

    async fn fill(&mut self) -> std::io::Result<()> {
        if self.stream.read_buf(&mut self.buf).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        Ok(())
    }

    /// Sends `request` and reads the whole response. With `keep_body` false the body is only
    /// skipped, which is what the load generator wants.
    pub async fn exchange(&mut self, request: &[u8], keep_body: bool) -> std::io::Result<Response> {
        self.stream.write_all(request).await?;
        let head = loop {
            if let Some(head) = http1::parse_head(&self.buf, true) {
                break head;
            }
            if http1::head_end(&self.buf).is_some() {
                return Err(invalid("malformed response head"));
            }
            self.fill().await?;
        };
        let head_text = if keep_body {
            String::from_utf8_lossy(&self.buf[..head.len - 4]).into_owned()
        } else {
            String::new()
        };
        self.buf.advance(head.len);
        let mut body = Vec::new();
        let mut close = head.close;
        match head.framing {
            Framing::Length(mut n) => loop {
                let take = n.min(self.buf.len());
                if keep_body {
                    body.extend_from_slice(&self.buf[..take]);
                }
                self.buf.advance(take);
                n -= take;
                if n == 0 {
                    break;
                }
                self.fill().await?;
            },
            Framing::Chunked => loop {
                match http1::chunked_end(&self.buf) {
                    Chunked::Done(n) => {
                        if keep_body {
                            body = dechunk(&self.buf[..n]);
                        }
                        self.buf.advance(n);
                        break;
                    }
                    Chunked::Invalid => return Err(invalid("malformed chunked body")),
                    Chunked::Partial => self.fill().await?,
                }
            },
            Framing::UntilClose => {
                close = true;
                loop {
                    match self.stream.read_buf(&mut self.buf).await {
                        Ok(0) => break,
                        Ok(_) => {}
                        Err(e) => return Err(e),
                    }
                }
                if keep_body {
                    body = self.buf.to_vec();
                }
                self.buf.clear();
            }
        }
        Ok(Response {
            status: head.status,
            head: head_text,
            body,
            close,
        })
    }
}

/// The data of a complete chunked body.
fn dechunk(mut buf: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = buf.windows(2).position(|w| w == b"\r\n") {
        let field = String::from_utf8_lossy(&buf[..eol]);
        let size =
            usize::from_str_radix(field.split(';').next().unwrap_or("").trim(), 16).unwrap_or(0);
        buf = &buf[eol + 2..];
        if size == 0 || buf.len() < size {
            break;
        }
        out.extend_from_slice(&buf[..size]);
        buf = &buf[(size + 2).min(buf.len())..];
    }
    out
}

/// One request on a fresh connection, bounded by `timeout`: for probes.
pub async fn fetch(
    addr: SocketAddr,
    request: &[u8],
    timeout: Duration,
) -> std::io::Result<Response> {
    let work = async {
        let mut conn = Connection::connect(addr).await?;
        conn.exchange(request, true).await
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_bodies_are_decoded() {
        assert_eq!(dechunk(b"5\r\nhello\r\n1;a=b\r\n!\r\n0\r\n\r\n"), b"hello!");
    }

    #[test]
    fn requests_carry_a_length_when_they_have_a_body() {
        let r = request("POST", "/p", "h", &[("x-a".into(), "1".into())], b"abc");
        assert_eq!(
            r,
            b"POST /p HTTP/1.1\r\nhost: h\r\nx-a: 1\r\ncontent-length: 3\r\n\r\nabc"
        );
        let r = request("GET", "/", "h", &[], b"");
        assert_eq!(r, b"GET / HTTP/1.1\r\nhost: h\r\n\r\n");
    }
}
