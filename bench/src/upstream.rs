//! The benchmark upstream: a keep-alive HTTP/1.1 server that answers every request with 200 and
//! a fixed small body, reading (and discarding) request bodies of any framing. Single-threaded
//! and allocation-free per request, so that it costs the shared load-generator core little.

use std::net::SocketAddr;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::http1::{self, Chunked, Framing};

/// The body every response carries: plain text the body-rewriting filter can upper-case.
pub fn body(len: usize) -> Vec<u8> {
    let line = b"hello from the wasmgate benchmark upstream\n";
    line.iter().copied().cycle().take(len).collect()
}

/// The whole response, head and body, written with one syscall.
pub fn response(body_len: usize) -> Vec<u8> {
    let mut r = format!(
        "HTTP/1.1 200 OK\r\nserver: bench-upstream\r\ncontent-type: text/plain\r\ncontent-length: {body_len}\r\n\r\n"
    )
    .into_bytes();
    r.extend(body(body_len));
    r
}

/// Serves on `addr` until the process ends, on the current thread.
pub fn serve(addr: SocketAddr, body_len: usize) -> std::io::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    rt.block_on(async move {
        let listener = TcpListener::bind(addr).await?;
        let response: &'static [u8] = Vec::leak(response(body_len));
        loop {
            let (stream, _) = listener.accept().await?;
            tokio::spawn(async move {
                let _ = connection(stream, response).await;
            });
        }
    })
}

/// Skips `n` body bytes, reading more as needed.
async fn skip(stream: &mut TcpStream, buf: &mut BytesMut, mut n: usize) -> std::io::Result<bool> {
    loop {
        let take = n.min(buf.len());
        buf.advance(take);
        n -= take;
        if n == 0 {
            return Ok(true);
        }
        buf.clear();
        if stream.read_buf(buf).await? == 0 {
            return Ok(false);
        }
    }
}

async fn connection(mut stream: TcpStream, response: &[u8]) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let mut buf = BytesMut::with_capacity(16 * 1024);
    loop {
        let head = loop {
            if let Some(head) = http1::parse_head(&buf, false) {
                break head;
            }
            if http1::head_end(&buf).is_some() || buf.len() > 64 * 1024 {
                return Ok(()); // malformed or absurd: drop the connection
            }
            if stream.read_buf(&mut buf).await? == 0 {
                return Ok(());
            }
        };
        // `/…echo…` answers with the request head, so the harness can check what the proxy
        // forwarded (added headers); everything else gets the fixed response.
        let request_line = buf[..head.len]
            .split(|&b| b == b'\n')
            .next()
            .unwrap_or_default();
        let echo = request_line.windows(4).any(|w| w == b"echo").then(|| {
            let head_bytes = &buf[..head.len];
            let mut r = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n",
                head_bytes.len()
            )
            .into_bytes();
            r.extend_from_slice(head_bytes);
            r
        });
        buf.advance(head.len);
        match head.framing {
            Framing::Length(n) => {
                if !skip(&mut stream, &mut buf, n).await? {
                    return Ok(());
                }
            }
            Framing::Chunked => loop {
                match http1::chunked_end(&buf) {
                    Chunked::Done(n) => {
                        buf.advance(n);
                        break;
                    }
                    Chunked::Invalid => return Ok(()),
                    Chunked::Partial => {
                        if stream.read_buf(&mut buf).await? == 0 {
                            return Ok(());
                        }
                    }
                }
            },
            Framing::UntilClose => return Ok(()),
        }
        match &echo {
            Some(r) => stream.write_all(r).await?,
            None => stream.write_all(response).await?,
        }
        if head.close {
            return Ok(());
        }
    }
}
