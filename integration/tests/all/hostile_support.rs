//! What the hostile-filter tests share: proxy-wasm filters written in WAT from parts (so the
//! bytes a filter hands the host are exact), a proxy with a benign route in front of a capture
//! upstream, and the health check every test ends with (the catalogue's invariants: the proxy
//! lives, a benign request gets 200 within 1 s, the upstream received nothing the client did not
//! send, every request sent was answered or failed).

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use wasmgate_integration::capture::Capture;
use wasmgate_integration::client;
use wasmgate_integration::origin::Origin;
use wasmgate_integration::proxy::Proxy;

// ---- Filters in WAT ---------------------------------------------------------------------------

/// Where things live in a filter's memory: static strings from 16 up, then buffers, then the
/// heap its allocator hands out (from 64 KiB to the end of its 4 pages, then again from 64 KiB).
/// The record of numbers a filter reports (4 KiB; the helpers below), then a log line buffer.
pub const REC: u32 = 0x9000;
/// Out-pointers for host calls that return a value (pointer, length, CAS, token).
pub const RET_PTR: u32 = 0xB000;
pub const RET_LEN: u32 = 0xB004;
pub const TOKEN: u32 = 0xB00C;
/// Free space for a callback's own use.
pub const SCRATCH: u32 = 0xC000;

/// Every host function a test filter may call, under a short name.
const IMPORTS: &str = r#"
  (import "env" "proxy_log" (func $log (param i32 i32 i32) (result i32)))
  (import "env" "proxy_get_header_map_value" (func $get (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_add_header_map_value" (func $add (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_replace_header_map_value" (func $replace (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_remove_header_map_value" (func $remove (param i32 i32 i32) (result i32)))
  (import "env" "proxy_get_header_map_pairs" (func $get_pairs (param i32 i32 i32) (result i32)))
  (import "env" "proxy_set_header_map_pairs" (func $set_pairs (param i32 i32 i32) (result i32)))
  (import "env" "proxy_send_local_response" (func $local (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_continue_stream" (func $continue (param i32) (result i32)))
  (import "env" "proxy_http_call" (func $http_call (param i32 i32 i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_get_shared_data" (func $get_shared (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_set_shared_data" (func $set_shared (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_set_tick_period_milliseconds" (func $tick (param i32) (result i32)))
  (import "env" "proxy_done" (func $done (result i32)))
  (import "env" "proxy_set_effective_context" (func $effective (param i32) (result i32)))
  (import "env" "proxy_get_property" (func $property (param i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_get_current_time_nanoseconds" (func $now (param i32) (result i32)))
  (import "env" "proxy_get_buffer_bytes" (func $get_buffer (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_set_buffer_bytes" (func $set_buffer (param i32 i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_sizes_get" (func $environ_sizes (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_get" (func $environ (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_open"
    (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
"#;

/// Helpers every test filter has: decimal formatting, a record of numbers (statuses, counts)
/// that a test reads back through a header or a log line.
const HELPERS: &str = r#"
  (global $rec_len (mut i32) (i32.const 0))
  ;; Writes n in decimal at dst; returns the length.
  (func $itoa (param $n i32) (param $dst i32) (result i32)
    (local $len i32) (local $tmp i32) (local $i i32)
    (local.set $tmp (local.get $n))
    (local.set $len (i32.const 1))
    (block $done (loop $count
      (br_if $done (i32.lt_u (local.get $tmp) (i32.const 10)))
      (local.set $tmp (i32.div_u (local.get $tmp) (i32.const 10)))
      (local.set $len (i32.add (local.get $len) (i32.const 1)))
      (br $count)))
    (local.set $i (local.get $len))
    (local.set $tmp (local.get $n))
    (loop $write
      (local.set $i (i32.sub (local.get $i) (i32.const 1)))
      (i32.store8 (i32.add (local.get $dst) (local.get $i))
        (i32.add (i32.const 48) (i32.rem_u (local.get $tmp) (i32.const 10))))
      (local.set $tmp (i32.div_u (local.get $tmp) (i32.const 10)))
      (br_if $write (local.get $i)))
    (local.get $len))
  ;; Appends n and a comma to the record (at most 4 KiB).
  (func $rec (param $n i32)
    (local $len i32)
    (if (i32.gt_u (global.get $rec_len) (i32.const 4080)) (then (return)))
    (local.set $len (call $itoa (local.get $n) (i32.add (i32.const 0x9000) (global.get $rec_len))))
    (i32.store8 (i32.add (i32.const 0x9000) (i32.add (global.get $rec_len) (local.get $len)))
      (i32.const 44))
    (global.set $rec_len (i32.add (global.get $rec_len) (i32.add (local.get $len) (i32.const 1)))))
  (func $rec_reset (global.set $rec_len (i32.const 0)))
  ;; The record without its last comma.
  (func $rec_size (result i32)
    (if (result i32) (global.get $rec_len)
      (then (i32.sub (global.get $rec_len) (i32.const 1)))
      (else (i32.const 0))))
  ;; Writes the record into header `key` of `map` (replacing it).
  (func $emit (param $map i32) (param $key i32) (param $key_len i32)
    (drop (call $replace (local.get $map) (local.get $key) (local.get $key_len)
      (i32.const 0x9000) (call $rec_size))))
  ;; Logs `key=RECORD` at info level.
  (func $emit_log (param $key i32) (param $key_len i32)
    (memory.copy (i32.const 0xA000) (local.get $key) (local.get $key_len))
    (i32.store8 (i32.add (i32.const 0xA000) (local.get $key_len)) (i32.const 61))
    (memory.copy (i32.add (i32.const 0xA001) (local.get $key_len)) (i32.const 0x9000)
      (call $rec_size))
    (drop (call $log (i32.const 2) (i32.const 0xA000)
      (i32.add (i32.add (local.get $key_len) (i32.const 1)) (call $rec_size)))))
"#;

/// The default allocator: bump from 64 KiB, starting over when the 4 pages are used up (test
/// filters only keep what they are given for the length of a callback).
pub const BUMP_MALLOC: &str = r#"
    (local $p i32)
    (if (i32.gt_u (local.get $n) (i32.const 196608)) (then (return (i32.const 0))))
    (if (i32.gt_u (i32.add (global.get $heap) (local.get $n)) (i32.const 262144))
      (then (global.set $heap (i32.const 65536))))
    (local.set $p (global.get $heap))
    (global.set $heap (i32.add (global.get $heap) (local.get $n)))
    (local.get $p)"#;

/// A string placed in a filter's memory: `(i32.const ptr) (i32.const len)` as WAT arguments.
#[derive(Debug, Clone, Copy)]
pub struct Str {
    pub ptr: u32,
    pub len: u32,
}

impl std::fmt::Display for Str {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "(i32.const {}) (i32.const {})", self.ptr, self.len)
    }
}

/// A proxy-wasm filter in WAT, built from callbacks given as bodies.
#[derive(Debug)]
pub struct Wat {
    next: u32,
    data: String,
    funcs: String,
    malloc: String,
    pages: u32,
}

impl Default for Wat {
    fn default() -> Self {
        Wat {
            next: 16,
            data: String::new(),
            funcs: String::new(),
            malloc: BUMP_MALLOC.to_string(),
            pages: 4,
        }
    }
}

impl Wat {
    pub fn new() -> Wat {
        Wat::default()
    }

    /// Places `bytes` among the static strings.
    pub fn data(&mut self, bytes: &[u8]) -> Str {
        let ptr = self.next;
        assert!(
            ptr as usize + bytes.len() < REC as usize,
            "static strings overflow"
        );
        self.next += (bytes.len() as u32 + 8) & !7;
        let mut escaped = String::new();
        for b in bytes {
            let _ = write!(escaped, "\\{b:02x}");
        }
        let _ = writeln!(self.data, "  (data (i32.const {ptr}) \"{escaped}\")");
        Str {
            ptr,
            len: bytes.len() as u32,
        }
    }

    /// A proxy-wasm pairs buffer (headers) among the static strings.
    pub fn pairs(&mut self, pairs: &[(&str, &[u8])]) -> Str {
        self.data(&encode_pairs(pairs))
    }

    /// Replaces the allocator's body (parameter `$n`, local `$p`-free; global `$heap`).
    pub fn malloc(mut self, body: &str) -> Wat {
        self.malloc = body.to_string();
        self
    }

    /// Linear memory pages (default 4; the maximum is what the proxy allows).
    pub fn pages(mut self, pages: u32) -> Wat {
        self.pages = pages;
        self
    }

    /// An exported callback. `name` without `proxy_on_`; the signature comes from the ABI.
    pub fn on(mut self, name: &str, body: &str) -> Wat {
        let (params, result) = match name {
            "context_create" => ("(param $ctx i32) (param $parent i32)", ""),
            "vm_start" | "configure" => ("(param $ctx i32) (param $size i32)", "(result i32)"),
            "request_headers" | "response_headers" => (
                "(param $ctx i32) (param $n i32) (param $eos i32)",
                "(result i32)",
            ),
            "request_body" | "response_body" => (
                "(param $ctx i32) (param $size i32) (param $eos i32)",
                "(result i32)",
            ),
            "request_trailers" | "response_trailers" => {
                ("(param $ctx i32) (param $n i32)", "(result i32)")
            }
            "done" => ("(param $ctx i32)", "(result i32)"),
            "log" | "delete" | "tick" => ("(param $ctx i32)", ""),
            "http_call_response" => (
                "(param $ctx i32) (param $token i32) (param $nh i32) (param $body i32) (param $nt i32)",
                "",
            ),
            other => panic!("unknown callback {other}"),
        };
        let _ = writeln!(
            self.funcs,
            "  (func (export \"proxy_on_{name}\") {params} {result}\n{body})"
        );
        self
    }

    /// Any other module field (a helper function, a global).
    pub fn raw(mut self, text: &str) -> Wat {
        self.funcs.push_str(text);
        self.funcs.push('\n');
        self
    }

    /// The module text.
    pub fn build(&self) -> String {
        format!(
            "(module\n{IMPORTS}\n  (memory (export \"memory\") {pages})\n  (global $heap (mut i32) (i32.const 65536))\n  (func $malloc (export \"malloc\") (param $n i32) (result i32)\n{malloc})\n  (func (export \"proxy_abi_version_0_2_1\"))\n{HELPERS}\n{data}{funcs})\n",
            pages = self.pages,
            malloc = self.malloc,
            data = self.data,
            funcs = self.funcs,
        )
    }
}

/// The proxy-wasm pairs encoding (count, sizes, then NUL-terminated names and values).
pub fn encode_pairs(pairs: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = (pairs.len() as u32).to_le_bytes().to_vec();
    for (k, v) in pairs {
        out.extend_from_slice(&(k.len() as u32).to_le_bytes());
        out.extend_from_slice(&(v.len() as u32).to_le_bytes());
    }
    for (k, v) in pairs {
        out.extend_from_slice(k.as_bytes());
        out.push(0);
        out.extend_from_slice(v);
        out.push(0);
    }
    out
}

// ---- The proxy under test ---------------------------------------------------------------------

/// A filter of the configuration.
#[derive(Debug, Clone)]
pub struct FilterSpec {
    pub name: String,
    pub wat: String,
    pub fail_open: bool,
    pub vm_id: String,
    /// The filter's `limits` mapping in flow style (`{callback_deadline_ms: 2000}`), if any.
    pub limits: Option<String>,
}

impl FilterSpec {
    pub fn new(name: &str, wat: &Wat) -> FilterSpec {
        FilterSpec {
            name: name.into(),
            wat: wat.build(),
            fail_open: false,
            vm_id: String::new(),
            limits: None,
        }
    }

    pub fn fail_open(mut self) -> FilterSpec {
        self.fail_open = true;
        self
    }

    /// Sets the filter's `limits` (a YAML flow mapping).
    pub fn limits(mut self, limits: &str) -> FilterSpec {
        self.limits = Some(limits.into());
        self
    }

    pub fn vm_id(mut self, id: &str) -> FilterSpec {
        self.vm_id = id.into();
        self
    }
}

/// A route: a path prefix, its upstream (`capture` or `origin`) and its chain.
#[derive(Debug, Clone)]
pub struct RouteSpec {
    pub prefix: String,
    pub upstream: &'static str,
    pub filters: Vec<String>,
}

pub fn route(prefix: &str, upstream: &'static str, filters: &[&str]) -> RouteSpec {
    RouteSpec {
        prefix: prefix.into(),
        upstream,
        filters: filters.iter().map(|s| s.to_string()).collect(),
    }
}

/// A proxy running test filters, with three upstreams (`capture`: the capture upstream;
/// `origin`: the echo origin with `/slow/MS`; `origin2`: the same origin over HTTP/2, whose
/// `.../trailers` paths answer with trailers), a filter-free `/benign/` route to the capture
/// upstream, and a ledger of what the test sent.
#[derive(Debug)]
pub struct Env {
    pub proxy: Proxy,
    pub capture: Capture,
    pub origin: Origin,
    pub http: reqwest::Client,
    /// Requests sent whole to the proxy, which it must count as answered or failed.
    sent: Mutex<u64>,
    /// Request paths the client sent: the only ones the capture upstream may see.
    paths: Mutex<Vec<String>>,
    _dir: tempfile::TempDir,
}

impl Env {
    /// Starts the upstreams and a proxy with `threads` workers, these filters (written as
    /// `.wat` files, which the proxy loads as text) and routes. Clients may send up to 256
    /// header fields (Pingora's own cap; the default limit is 100), for the header-map tests.
    pub async fn start(threads: usize, filters: &[FilterSpec], routes: &[RouteSpec]) -> Env {
        let capture = Capture::start().await;
        let origin = Origin::start().await;
        let dir = tempfile::tempdir().expect("temp dir");
        let mut text = format!(
            "listen: \"{{listen}}\"\nadmin: \"{{admin}}\"\nthreads: {threads}\nclient:\n  max_headers: 256\nupstreams:\n  capture:\n    endpoints: [\"{}\"]\n  origin:\n    endpoints: [\"{}\"]\n  origin2:\n    endpoints: [\"{}\"]\n    protocol: http2\nfilters:\n",
            capture.endpoint(),
            origin.endpoint(),
            origin.endpoint()
        );
        if filters.is_empty() {
            text.truncate(text.len() - "filters:\n".len());
        }
        for f in filters {
            let path: PathBuf = dir.path().join(format!("{}.wat", f.name));
            std::fs::write(&path, &f.wat).expect("write the filter");
            let _ = writeln!(
                text,
                "  - name: {}\n    wasm: {}\n    fail_open: {}\n    vm_id: \"{}\"",
                f.name,
                path.display(),
                f.fail_open,
                f.vm_id
            );
            if let Some(limits) = &f.limits {
                let _ = writeln!(text, "    limits: {limits}");
            }
        }
        text.push_str(
            "routes:\n  - match: {path_prefix: /benign/}\n    upstream: capture\n    filters: []\n",
        );
        for r in routes {
            let _ = writeln!(
                text,
                "  - match: {{path_prefix: {}}}\n    upstream: {}\n    filters: [{}]",
                r.prefix,
                r.upstream,
                r.filters.join(", ")
            );
        }
        let proxy = Proxy::start_with(&text, &["--no-watch"]);
        Env {
            proxy,
            capture,
            origin,
            http: client::http(),
            sent: Mutex::new(0),
            paths: Mutex::new(Vec::new()),
            _dir: dir,
        }
    }

    /// Records that a whole request for `path` was sent.
    pub fn count(&self, path: &str) {
        *self.sent.lock().unwrap() += 1;
        self.paths.lock().unwrap().push(path.to_string());
    }

    /// Lets the capture upstream see `path` without counting a request (a path a filter
    /// rewrote, as the test expects).
    pub fn allow(&self, path: &str) {
        self.paths.lock().unwrap().push(path.to_string());
    }

    /// `GET path`, counted.
    pub async fn get(&self, path: &str) -> reqwest::Result<reqwest::Response> {
        self.count(path);
        self.http.get(self.proxy.url(path)).send().await
    }

    /// `GET path` with a header, counted.
    pub async fn get_with(
        &self,
        path: &str,
        name: &str,
        value: &str,
    ) -> reqwest::Result<reqwest::Response> {
        self.count(path);
        self.http
            .get(self.proxy.url(path))
            .header(name, value)
            .send()
            .await
    }

    /// `POST path` with a body, counted.
    pub async fn post(&self, path: &str, body: Vec<u8>) -> reqwest::Result<reqwest::Response> {
        self.count(path);
        self.http.post(self.proxy.url(path)).body(body).send().await
    }

    /// Raw bytes of one whole request on a new connection, counted; reads until the proxy
    /// closes or `timeout` passes.
    pub async fn raw(&self, path: &str, request: &[u8], timeout: Duration) -> Vec<u8> {
        self.count(path);
        client::raw(self.proxy.addr, request, timeout).await
    }

    /// The Prometheus text of the admin listener.
    pub async fn metrics(&self) -> String {
        self.http
            .get(self.proxy.admin_url("/metrics"))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics text")
    }

    /// Waits up to 10 s until the proxy's log contains `needle`.
    pub fn wait_log(&self, needle: &str) -> bool {
        self.proxy.wait_for_log(needle, Duration::from_secs(10))
    }

    /// The catalogue's invariants, checked at the end of every test:
    /// 1. the proxy process is alive;
    /// 2. a benign request (no filter) gets 200 within 1 s;
    /// 3. the capture upstream received only requests the client sent (known paths, framed
    ///    right, no injected header);
    /// 4. every request the test sent was answered or failed: the proxy's request counter
    ///    reaches the number sent;
    /// 5. nothing in the proxy panicked.
    pub async fn assert_healthy(&mut self) {
        assert!(
            self.proxy.is_alive(),
            "the proxy died:\n{}",
            self.proxy.log()
        );
        let benign = format!("/benign/health-{}", *self.sent.lock().unwrap());
        self.count(&benign);
        let started = Instant::now();
        let resp = self
            .http
            .get(self.proxy.url(&benign))
            .timeout(Duration::from_secs(1))
            .send()
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "a benign request failed after {:?}: {e}\n{}",
                    started.elapsed(),
                    self.proxy.log()
                )
            });
        assert_eq!(resp.status(), 200, "a benign request");
        assert!(
            self.capture
                .requests()
                .iter()
                .any(|r| r.line.contains(&benign)),
            "the benign request reached the upstream"
        );
        self.assert_upstream_clean();
        let sent = *self.sent.lock().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut counted = 0;
        while Instant::now() < deadline {
            counted = requests_total(&self.metrics().await);
            if counted >= sent {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(
            counted, sent,
            "requests the proxy answered or failed, against requests sent"
        );
        let log = self.proxy.log();
        assert!(!log.contains("panicked"), "a panic in the proxy:\n{log}");
    }

    /// Invariant 3 alone: every request the capture upstream received is framed right, has a
    /// path the client sent, and no injected header.
    pub fn assert_upstream_clean(&self) {
        assert!(
            self.capture.errors().is_empty(),
            "framing errors at the upstream: {:?}",
            self.capture.errors()
        );
        let paths = self.paths.lock().unwrap().clone();
        for r in self.capture.requests() {
            let target = r.line.split(' ').nth(1).unwrap_or("");
            assert!(
                paths.iter().any(|p| p == target),
                "the upstream got a request the client never sent: {:?}",
                r.line
            );
            assert!(r.line.ends_with(" HTTP/1.1"), "{:?}", r.line);
            for (k, v) in &r.headers {
                assert!(
                    !k.to_ascii_lowercase().contains("injected")
                        && !v.to_ascii_lowercase().contains("injected"),
                    "an injected header reached the upstream: {k}: {v}"
                );
            }
        }
    }

    /// Asserts the proxy's RSS is at most `baseline_kib` plus `margin_mib`, and returns it.
    pub fn assert_rss_within(&self, baseline_kib: u64, margin_mib: u64) -> u64 {
        let rss = self.proxy.rss_kib();
        assert!(
            rss <= baseline_kib + margin_mib * 1024,
            "RSS {} MiB, over the baseline {} MiB + {margin_mib} MiB",
            rss / 1024,
            baseline_kib / 1024
        );
        rss
    }
}

/// The sum of `wasmgate_requests_total` over status classes.
pub fn requests_total(metrics: &str) -> u64 {
    metrics
        .lines()
        .filter(|l| l.starts_with("wasmgate_requests_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// The value of one sample line (name and labels exactly as rendered), 0 if absent.
pub fn sample(metrics: &str, series: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix(series)?
                .strip_prefix(' ')?
                .parse::<f64>()
                .ok()
        })
        .unwrap_or(0.0) as u64
}

/// The value of header `name` of the last request the capture upstream received for a path
/// starting with `prefix`.
pub fn seen_header(capture: &Capture, prefix: &str, name: &str) -> Option<String> {
    capture
        .requests()
        .iter()
        .rev()
        .find(|r| {
            r.line
                .split(' ')
                .nth(1)
                .is_some_and(|p| p.starts_with(prefix))
        })
        .and_then(|r| r.header(name).map(str::to_string))
}

/// How many HTTP status lines a raw response holds.
pub fn status_lines(raw: &[u8]) -> usize {
    raw.windows(9).filter(|w| *w == b"HTTP/1.1 ").count()
}

/// p50 and p99 of a set of durations.
pub fn percentiles(mut d: Vec<Duration>) -> (Duration, Duration) {
    d.sort();
    let at = |q: f64| d[((d.len() as f64 - 1.0) * q).round() as usize];
    (at(0.5), at(0.99))
}
