//! E-3, large bodies: one upload and one download of `--e3-bytes` (default 256 MiB, 1 GiB for
//! the catalogue) through no filter, a header-only filter, and a body filter that reads every
//! chunk and returns Continue. Each transfer runs twice: once hashed with SHA-256 at both ends
//! (is the body intact?), once only counted (throughput, so the hashing on the client CPU does
//! not cap it). The proxy's RSS is sampled every 10 ms during each transfer.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::body_server::{self, expected_sha256, read_body, read_head, write_pattern};
use super::proxy::RssSampler;
use super::{Env, FilterSpec, Proxy, Section, block_on, log, mib, request_headers, wasmgate_yaml};
use crate::procstat;

const ID: &str = "E-3";
/// Counted (throughput) passes per transfer; the median is reported.
const REPEATS: usize = 3;
const TITLE: &str = "Large uploads and downloads through header-only and streaming body filters";
const EXPECTED: &str =
    "memory ≤ a few MiB over baseline per stream; throughput near no filter; body hash preserved";

/// The routes, in report order: (path prefix, label).
const VARIANTS: [(&str, &str); 3] = [
    ("/body0/", "no filter"),
    ("/bodyh/", "header-only filter (1 realistic)"),
    ("/bodys/", "streaming body filter"),
];

/// One transfer through the proxy.
#[derive(Debug, Clone, Default)]
struct Transfer {
    status: u16,
    bytes: u64,
    secs: f64,
    /// The SHA-256 the receiving end computed (hashed passes only).
    sha256: Option<String>,
    /// Peak RSS during the transfer minus RSS just before, KiB.
    rss_over: u64,
    /// The proxy's CPU time (user + system) during the transfer, seconds.
    proxy_cpu: f64,
}

impl Transfer {
    fn mib_per_s(&self) -> f64 {
        self.bytes as f64 / 1048576.0 / self.secs.max(1e-9)
    }
}

fn head(method: &str, path: &str, host: SocketAddr, length: Option<u64>) -> Vec<u8> {
    let mut r = format!("{method} {path} HTTP/1.1\r\nhost: {host}\r\n");
    for (k, v) in request_headers() {
        r.push_str(&format!("{k}: {v}\r\n"));
    }
    if let Some(n) = length {
        r.push_str(&format!(
            "content-type: application/octet-stream\r\ncontent-length: {n}\r\n"
        ));
    }
    r.push_str("\r\n");
    r.into_bytes()
}

async fn download(addr: SocketAddr, prefix: &str, n: u64, hash: bool) -> std::io::Result<Transfer> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let t = Instant::now();
    stream
        .write_all(&head("GET", &format!("{prefix}dl/{n}"), addr, None))
        .await?;
    let mut buf = BytesMut::with_capacity(512 * 1024);
    let h = read_head(&mut stream, &mut buf, true).await?;
    buf.advance(h.len);
    let mut sha = Sha256::new();
    let bytes = read_body(&mut stream, &mut buf, h.framing, |s| {
        if hash {
            sha.update(s);
        }
    })
    .await?;
    Ok(Transfer {
        status: h.status,
        bytes,
        secs: t.elapsed().as_secs_f64(),
        sha256: hash.then(|| hex::encode(sha.finalize())),
        ..Transfer::default()
    })
}

async fn upload(
    addr: SocketAddr,
    prefix: &str,
    pattern: &[u8],
    n: u64,
    hash: bool,
) -> std::io::Result<Transfer> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let mode = if hash { "hash" } else { "count" };
    let t = Instant::now();
    stream
        .write_all(&head("POST", &format!("{prefix}ul/{mode}"), addr, Some(n)))
        .await?;
    write_pattern(&mut stream, pattern, n).await?;
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let h = read_head(&mut stream, &mut buf, true).await?;
    buf.advance(h.len);
    let mut body = Vec::new();
    read_body(&mut stream, &mut buf, h.framing, |s| {
        body.extend_from_slice(s)
    })
    .await?;
    let secs = t.elapsed().as_secs_f64();
    let text = String::from_utf8_lossy(&body);
    let mut words = text.split_whitespace();
    let digest = words.next().unwrap_or("");
    let bytes = words.next().and_then(|w| w.parse().ok()).unwrap_or(0);
    Ok(Transfer {
        status: h.status,
        bytes,
        secs,
        sha256: (hash && h.status == 200).then(|| digest.to_string()),
        ..Transfer::default()
    })
}

/// Runs one transfer with the RSS sampler on; a failed transfer becomes an error message.
fn one(
    proxy: &Proxy,
    up: bool,
    prefix: &str,
    pattern: &[u8],
    n: u64,
    hash: bool,
) -> Result<Transfer, String> {
    let before = proxy.memory().rss;
    let cpu_before = procstat::cpu_time(proxy.pid()).unwrap_or_default();
    let sampler = RssSampler::start(proxy.pid(), Duration::from_millis(10));
    let addr = proxy.addr;
    let work = async {
        let limit = Duration::from_secs(30 + n / (8 << 20));
        let t = if up {
            tokio::time::timeout(limit, upload(addr, prefix, pattern, n, hash)).await
        } else {
            tokio::time::timeout(limit, download(addr, prefix, n, hash)).await
        };
        t.map_err(|_| "timed out".to_string())?
            .map_err(|e| e.to_string())
    };
    let result = block_on(work)?;
    let peak = sampler.stop();
    let mut t = result?;
    t.rss_over = peak.saturating_sub(before);
    t.proxy_cpu = (procstat::cpu_time(proxy.pid()).unwrap_or_default() - cpu_before).as_secs_f64();
    Ok(t)
}

/// The counted pass, [`REPEATS`] times: the run with the median throughput.
fn counted(
    proxy: &Proxy,
    up: bool,
    prefix: &str,
    pattern: &[u8],
    n: u64,
) -> Result<Transfer, String> {
    let mut runs = Vec::new();
    for _ in 0..REPEATS {
        runs.push(one(proxy, up, prefix, pattern, n, false)?);
    }
    let peak = runs.iter().map(|t| t.rss_over).max().unwrap_or(0);
    runs.sort_by(|a, b| a.mib_per_s().total_cmp(&b.mib_per_s()));
    let mut median = runs.swap_remove(runs.len() / 2);
    median.rss_over = peak;
    Ok(median)
}

pub fn run(env: &mut Env) -> Section {
    match measure(env) {
        Ok(s) => s,
        Err(e) => Section::failed(ID, TITLE, EXPECTED, &e),
    }
}

fn measure(env: &mut Env) -> Result<Section, String> {
    body_server::spawn(env.body_addr()).map_err(|e| format!("body server: {e}"))?;
    let filters = [FilterSpec {
        name: "stream".into(),
        wasm: env.wasm("bench_body_stream"),
        configuration: None,
    }];
    let routes = vec![
        ("/body0/".to_string(), vec![]),
        ("/bodyh/".to_string(), vec!["tenant1".to_string()]),
        ("/bodys/".to_string(), vec!["stream".to_string()]),
    ];
    let yaml = wasmgate_yaml(env, &filters, &routes);
    let mut proxy = Proxy::start(env, "e3-wasmgate", &yaml)?;
    let n = env.opts.e3_bytes;
    let pattern = body_server::pattern();
    let expected = expected_sha256(&pattern, n);
    let baseline = proxy.memory();

    // (variant, upload?, hashed pass, counted pass)
    let mut rows = Vec::new();
    for (prefix, label) in VARIANTS {
        for up in [true, false] {
            let dir = if up { "upload" } else { "download" };
            log(format!("E-3: {dir} of {} through {label}", mib(n / 1024)));
            let hashed = one(&proxy, up, prefix, &pattern, n, true);
            let counted = counted(&proxy, up, prefix, &pattern, n);
            rows.push((label, dir, hashed, counted));
        }
    }
    let alive = proxy.alive();
    let end = proxy.memory();
    let stream_log: Vec<String> = proxy
        .log_text()
        .lines()
        .filter(|l| l.contains("ERROR") || l.contains("WARN"))
        .take(5)
        .map(str::to_string)
        .collect();

    let mut b = String::new();
    let _ = writeln!(
        b,
        "Body of **{}** ({n} bytes: a 1 MiB pseudo-random block repeated), one transfer at a time \
         on a fresh connection, one wasmgate worker. The body server (in the harness, on the \
         client CPU) answers downloads with `content-length` and hashes uploads; the client \
         hashes downloads. Expected SHA-256: `{}…`. Throughput is from the counted pass (no \
         hashing; request written → last byte read; the median of 3), with the proxy's CPU time          per GiB moved (user + system, from `/proc`); RSS over baseline is the highest of both \
         passes (sampled every 10 ms, minus the RSS just before). The streaming filter is \
         `filters/bench/body-stream`: it reads every chunk with `proxy_get_buffer_bytes` and \
         returns Continue.\n",
        mib(n / 1024),
        &expected[..16]
    );
    let _ = writeln!(
        b,
        "| Path | Direction | Status | Bytes | Hash | MiB/s | ÷ no filter | Proxy CPU s/GiB | RSS over baseline |\n|---|---|---|---|---|---|---|---|---|"
    );
    let mut all_ok = true;
    let mut worst_rss = 0u64;
    let mut summary_ratios = Vec::new();
    for (label, dir, hashed, counted) in &rows {
        let base = rows
            .iter()
            .find(|(l, d, _, _)| *l == VARIANTS[0].1 && d == dir)
            .and_then(|(_, _, _, c)| c.as_ref().ok())
            .map(Transfer::mib_per_s);
        match (hashed, counted) {
            (Ok(h), Ok(c)) => {
                let intact = h.sha256.as_deref() == Some(expected.as_str()) && h.bytes == n;
                all_ok &= intact && h.status == 200 && c.status == 200 && c.bytes == n;
                let rss = h.rss_over.max(c.rss_over);
                worst_rss = worst_rss.max(rss);
                let r = base.map(|b| c.mib_per_s() / b);
                if *label != VARIANTS[0].1
                    && let Some(r) = r
                {
                    summary_ratios.push(format!("{} {dir} {r:.2}×", short(label)));
                }
                let _ = writeln!(
                    b,
                    "| {label} | {dir} | {} | {} | {} | {:.0} | {} | {:.2} | {} |",
                    h.status,
                    h.bytes,
                    if intact { "preserved" } else { "**differs**" },
                    c.mib_per_s(),
                    r.map_or_else(|| "n/a".into(), |r| format!("{r:.2}×")),
                    c.proxy_cpu / (c.bytes.max(1) as f64 / 1073741824.0),
                    mib(rss)
                );
            }
            (h, c) => {
                all_ok = false;
                let why = h
                    .as_ref()
                    .err()
                    .or(c.as_ref().err())
                    .cloned()
                    .unwrap_or_default();
                let _ = writeln!(b, "| {label} | {dir} | failed: {why} | | | | | | |");
            }
        }
    }
    let _ = writeln!(
        b,
        "\nProxy RSS {} before the transfers, {} after; the process {}.",
        mib(baseline.rss),
        mib(end.rss),
        if alive { "stayed up" } else { "**exited**" }
    );
    if !stream_log.is_empty() {
        let _ = writeln!(
            b,
            "\nFirst warnings in the proxy log:\n\n```\n{}\n```",
            stream_log.join("\n")
        );
    }
    let met = all_ok && alive && worst_rss <= 8 * 1024;
    Ok(Section {
        id: ID,
        title: TITLE,
        expected: EXPECTED,
        summary: format!(
            "{} each way: hashes {}; worst RSS over baseline {}; throughput vs no filter: {}",
            mib(n / 1024),
            if all_ok {
                "preserved"
            } else {
                "NOT all preserved / failures"
            },
            mib(worst_rss),
            summary_ratios.join(", ")
        ),
        met: Some(met),
        body: b,
    })
}

fn short(label: &str) -> &str {
    if label.starts_with("header") {
        "header-only"
    } else {
        "streaming"
    }
}
