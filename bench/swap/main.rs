//! swapbench: how fast and how cleanly wasmgate swaps filters under load (bench/swap/README.md).
//!
//! It starts the release `wasmgate` binary in front of an in-process origin and measures:
//! swap visibility (file write, or `POST /reload`, to the first response from the new
//! version) for a module in the disk cache and for a 2 MB module that must be compiled; and,
//! under a steady paced load, 100 swaps alternating two versions of a filter: failed requests,
//! responses that are not from exactly one version, p99 latency against steady state, and RSS.

mod wasm;
mod wire;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::time::{Duration, Instant};

use wire::Conn;

const USAGE: &str = "\
usage: swapbench [--wasmgate PATH] [--swaps N] [--rate RPS] [--clients N] [--steady SECS]
                 [--runs N] [--compile-runs N] [--module-mib N] [--out FILE]

  --wasmgate PATH    the proxy binary (default: `wasmgate` next to this binary)
  --swaps N          swaps under load (default 100)
  --rate RPS         total request rate of the paced load (default 1000)
  --clients N        keep-alive connections of the load (default 4)
  --steady SECS      steady-state seconds before the swaps (default 10)
  --runs N           visibility samples per kind (default 20)
  --compile-runs N   visibility samples that compile the big module (default 5)
  --module-mib N     size of the big module in MiB (default 2)
  --out FILE         also write the report (Markdown) to FILE
";

#[derive(Debug)]
struct Args {
    wasmgate: PathBuf,
    swaps: usize,
    rate: u32,
    clients: usize,
    steady: Duration,
    runs: usize,
    compile_runs: usize,
    module_bytes: usize,
    out: Option<PathBuf>,
}

fn parse_args() -> Result<Args, String> {
    let default_bin = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| d.join("wasmgate")))
        .unwrap_or_else(|| PathBuf::from("wasmgate"));
    let mut args = Args {
        wasmgate: default_bin,
        swaps: 100,
        rate: 1000,
        clients: 4,
        steady: Duration::from_secs(10),
        runs: 20,
        compile_runs: 5,
        module_bytes: 2 << 20,
        out: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "-h" || flag == "--help" {
            return Err(String::new());
        }
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let num = |v: &str| {
            v.parse::<u64>()
                .map_err(|_| format!("{flag}: not a number: {v}"))
        };
        match flag.as_str() {
            "--wasmgate" => args.wasmgate = PathBuf::from(value),
            "--swaps" => args.swaps = num(&value)? as usize,
            "--rate" => args.rate = num(&value)?.clamp(1, 100_000) as u32,
            "--clients" => args.clients = num(&value)?.clamp(1, 256) as usize,
            "--steady" => args.steady = Duration::from_secs(num(&value)?.max(1)),
            "--runs" => args.runs = num(&value)?.max(1) as usize,
            "--compile-runs" => args.compile_runs = num(&value)? as usize,
            "--module-mib" => args.module_bytes = (num(&value)?.clamp(1, 32) as usize) << 20,
            "--out" => args.out = Some(PathBuf::from(value)),
            other => return Err(format!("unknown option {other}")),
        }
    }
    Ok(args)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("swapbench: {e}");
            }
            eprint!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("swapbench: cannot start tokio: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("swapbench: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A running wasmgate, stopped (SIGINT, then SIGKILL) when dropped.
struct Proxy {
    child: Child,
    addr: SocketAddr,
    admin: SocketAddr,
    config: PathBuf,
    log: PathBuf,
}

impl Proxy {
    fn start(bin: &Path, config: &Path, log: &Path, extra: &[&str]) -> Result<Proxy, String> {
        let text = std::fs::read_to_string(config).map_err(|e| e.to_string())?;
        let addr = find_value(&text, "listen:")?;
        let admin = find_value(&text, "admin:")?;
        let log_file = std::fs::File::create(log).map_err(|e| e.to_string())?;
        let child = Command::new(bin)
            .args(["run", "-c"])
            .arg(config)
            .args(extra)
            .env("RUST_LOG", "warn,wasmgate::reload=info")
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
        let mut proxy = Proxy {
            child,
            addr,
            admin,
            config: config.to_path_buf(),
            log: log.to_path_buf(),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = proxy.child.try_wait() {
                return Err(format!("wasmgate exited ({status}):\n{}", proxy.log_text()));
            }
            if std::net::TcpStream::connect(addr).is_ok()
                && std::net::TcpStream::connect(admin).is_ok()
            {
                return Ok(proxy);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(format!("wasmgate did not start:\n{}", proxy.log_text()))
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Resident set size, KiB.
    fn rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn find_value(text: &str, key: &str) -> Result<SocketAddr, String> {
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| format!("no {key} in the configuration"))
}

fn free_addr() -> Result<SocketAddr, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| format!("no free port: {e}"))
}

/// Replaces a file atomically, as a deploy should: a temporary file beside it, then a rename.
fn replace(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let temp = path.with_extension("swapbench-tmp");
    std::fs::write(&temp, bytes).map_err(|e| format!("{}: {e}", temp.display()))?;
    std::fs::rename(&temp, path).map_err(|e| format!("{}: {e}", path.display()))
}

#[derive(Debug, Clone)]
struct Layout {
    listen: SocketAddr,
    admin: SocketAddr,
    origin: SocketAddr,
}

/// A configuration running `module` as filter `version`, which sets `x-version: VERSION`.
fn config(layout: &Layout, module: &Path, version: &str) -> String {
    let conf = serde_json::json!({
        "request": {"set": {"x-version": version}},
        "response": {"set": {"x-version": version}},
    });
    format!(
        "listen: {}\nadmin: {}\nthreads: 2\ncache_dir: cache\nupstreams:\n  origin:\n    endpoints: [\"{}\"]\nfilters:\n  - name: version\n    wasm: {}\n    configuration: '{conf}'\nroutes:\n  - upstream: origin\n",
        layout.listen,
        layout.admin,
        layout.origin,
        module.display()
    )
}

/// Polls on `conn` until a response comes from `version`; the time since `t0`.
async fn visible(conn: &mut Conn, version: &str, t0: Instant) -> Result<Duration, String> {
    let limit = Duration::from_secs(30);
    loop {
        let answer = conn.request("GET", "/").await?;
        if answer.versions == [version] {
            return Ok(t0.elapsed());
        }
        if t0.elapsed() > limit {
            return Err(format!("{version} not visible after {limit:?}"));
        }
    }
}

async fn admin_json(
    admin: SocketAddr,
    method: &str,
    path: &str,
) -> Result<serde_json::Value, String> {
    let answer = Conn::new(admin).request(method, path).await?;
    serde_json::from_slice(&answer.body).map_err(|e| format!("{path}: {e}"))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// p50, p99 and max of durations, in ms.
fn summary(mut samples: Vec<Duration>) -> (f64, f64, f64) {
    if samples.is_empty() {
        return (0.0, 0.0, 0.0);
    }
    samples.sort();
    let at = |q: f64| {
        let i = ((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1;
        ms(samples[i])
    };
    (at(0.5), at(0.99), ms(samples[samples.len() - 1]))
}

/// Load phases.
const WARMUP: u8 = 0;
const STEADY: u8 = 1;
const SWAPS: u8 = 2;
const AFTER: u8 = 3;

#[derive(Debug, Default)]
struct ClientLog {
    /// (phase, latency from the scheduled send time)
    latencies: Vec<(u8, Duration)>,
    failures: Vec<String>,
    /// Responses without exactly one version header, or whose request and response phases
    /// ran different versions.
    mixed: u64,
    mixed_samples: Vec<String>,
    v1: u64,
    v2: u64,
}

/// One paced keep-alive client: a request every `interval`, latency measured from when the
/// request was due (so a stall counts against every request it delays).
async fn load_client(
    addr: SocketAddr,
    interval: Duration,
    offset: Duration,
    phase: Arc<AtomicU8>,
    stop: Arc<AtomicBool>,
) -> ClientLog {
    let mut log = ClientLog::default();
    let mut conn = Conn::new(addr);
    let mut due = Instant::now() + offset;
    let hard_stop = Instant::now() + Duration::from_secs(600);
    while !stop.load(Ordering::Relaxed) && Instant::now() < hard_stop {
        tokio::time::sleep_until(due.into()).await;
        let current = phase.load(Ordering::Relaxed);
        match conn.request("GET", "/").await {
            Ok(a) if a.status == 200 => {
                log.latencies.push((current, due.elapsed()));
                match (a.versions.as_slice(), a.origin_saw.as_deref()) {
                    ([v], Some(saw)) if v == saw && v == "v1" => log.v1 += 1,
                    ([v], Some(saw)) if v == saw && v == "v2" => log.v2 += 1,
                    _ => {
                        log.mixed += 1;
                        if log.mixed_samples.len() < 10 {
                            log.mixed_samples.push(format!(
                                "mixed: x-version {:?}, origin saw {:?}",
                                a.versions, a.origin_saw
                            ));
                        }
                    }
                }
            }
            Ok(a) => log.failures.push(format!("status {}", a.status)),
            Err(e) => log.failures.push(e),
        }
        due += interval;
        // After a stall, do not fire a burst to catch up beyond one interval.
        let now = Instant::now();
        if due + interval < now {
            due = now;
        }
    }
    log
}

async fn run(args: Args) -> Result<bool, String> {
    if !args.wasmgate.is_file() {
        return Err(format!(
            "no wasmgate binary at {} (build it: cargo build --release -p wasmgate, or pass --wasmgate)",
            args.wasmgate.display()
        ));
    }
    let dir = std::env::temp_dir().join(format!("wasmgate-swapbench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let result = measure(&args, &dir).await;
    let _ = std::fs::remove_dir_all(&dir);
    let report = result?;
    println!("{}", report.text);
    if let Some(out) = &args.out {
        std::fs::write(out, &report.text).map_err(|e| format!("{}: {e}", out.display()))?;
    }
    Ok(report.clean)
}

struct Report {
    text: String,
    clean: bool,
}

async fn measure(args: &Args, dir: &Path) -> Result<Report, String> {
    let filters = Path::new(env!("WASMGATE_FILTERS_DIR"));
    let add_header = std::fs::read(filters.join("add_header.wasm"))
        .map_err(|e| format!("add_header.wasm: {e}"))?;
    let v1 = dir.join("v1.wasm");
    let v2 = dir.join("v2.wasm");
    std::fs::write(&v1, wasm::tagged(&add_header, "v1")).map_err(|e| e.to_string())?;
    std::fs::write(&v2, wasm::tagged(&add_header, "v2")).map_err(|e| e.to_string())?;
    let module_of = |v: &str| if v == "v1" { v1.clone() } else { v2.clone() };
    let origin = wire::start_origin().await.map_err(|e| e.to_string())?;
    let layout = Layout {
        listen: free_addr()?,
        admin: free_addr()?,
        origin,
    };
    let config_path = dir.join("wasmgate.yaml");
    std::fs::write(&config_path, config(&layout, &v1, "v1")).map_err(|e| e.to_string())?;
    let proxy = Proxy::start(&args.wasmgate, &config_path, &dir.join("wasmgate.log"), &[])?;
    let mut probe = Conn::new(proxy.addr);
    visible(&mut probe, "v1", Instant::now()).await?;
    let swap_to = |v: &str| replace(&proxy.config, config(&layout, &module_of(v), v).as_bytes());

    // Both versions in the disk cache (the first load of v2 compiles it).
    let t0 = Instant::now();
    swap_to("v2")?;
    let first_v2 = visible(&mut probe, "v2", t0).await?;
    swap_to("v1")?;
    visible(&mut probe, "v1", Instant::now()).await?;

    // 1. Visibility of a cached module, from the file write.
    let mut watch_visible = Vec::new();
    let mut watch_reload = Vec::new();
    for i in 0..args.runs {
        let v = if i % 2 == 0 { "v2" } else { "v1" };
        let t0 = Instant::now();
        swap_to(v)?;
        watch_visible.push(visible(&mut probe, v, t0).await?);
        let last = admin_json(proxy.admin, "GET", "/config").await?;
        if let Some(d) = last["last_reload"]["duration_ms"].as_f64() {
            watch_reload.push(Duration::from_secs_f64(d / 1000.0));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if args.runs % 2 == 1 {
        swap_to("v1")?;
        visible(&mut probe, "v1", Instant::now()).await?;
    }

    // 2. Visibility of a big module that must be compiled, from the file write.
    let mut compile_visible = Vec::new();
    let mut compile_size = 0;
    for i in 0..args.compile_runs {
        let version = format!("big{i}");
        let salt = u32::try_from(i).unwrap_or(0) ^ std::process::id();
        let bytes = wasm::version_module(&version, args.module_bytes, salt);
        compile_size = bytes.len();
        let path = dir.join(format!("big{i}.wasm"));
        let t0 = Instant::now();
        replace(&path, &bytes)?;
        replace(&proxy.config, config(&layout, &path, &version).as_bytes())?;
        compile_visible.push(visible(&mut probe, &version, t0).await?);
        let last = admin_json(proxy.admin, "GET", "/config").await?;
        let status = last["last_reload"]["filters"][0]["status"].clone();
        if status != "compiled" {
            return Err(format!("the big module was not compiled but {status}"));
        }
    }
    swap_to("v1")?;
    visible(&mut probe, "v1", Instant::now()).await?;

    // 3. Visibility from POST /reload, on a second proxy that does not watch.
    let mut post_visible = Vec::new();
    {
        let layout2 = Layout {
            listen: free_addr()?,
            admin: free_addr()?,
            origin,
        };
        let path2 = dir.join("nowatch.yaml");
        std::fs::write(&path2, config(&layout2, &v1, "v1")).map_err(|e| e.to_string())?;
        let proxy2 = Proxy::start(
            &args.wasmgate,
            &path2,
            &dir.join("nowatch.log"),
            &["--no-watch"],
        )?;
        let mut probe2 = Conn::new(proxy2.addr);
        visible(&mut probe2, "v1", Instant::now()).await?;
        for i in 0..args.runs {
            let v = if i % 2 == 0 { "v2" } else { "v1" };
            replace(&path2, config(&layout2, &module_of(v), v).as_bytes())?;
            let t0 = Instant::now();
            let outcome = admin_json(proxy2.admin, "POST", "/reload").await?;
            if outcome["result"] != "ok" {
                return Err(format!("POST /reload: {outcome}"));
            }
            post_visible.push(visible(&mut probe2, v, t0).await?);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    // 4. 100 swaps under a steady load.
    let phase = Arc::new(AtomicU8::new(WARMUP));
    let stop = Arc::new(AtomicBool::new(false));
    let interval = Duration::from_secs_f64(args.clients as f64 / f64::from(args.rate));
    let clients: Vec<_> = (0..args.clients)
        .map(|i| {
            let offset = interval.mul_f64(i as f64 / args.clients as f64);
            tokio::spawn(load_client(
                proxy.addr,
                interval,
                offset,
                phase.clone(),
                stop.clone(),
            ))
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(2)).await;
    phase.store(STEADY, Ordering::Relaxed);
    tokio::time::sleep(args.steady).await;
    let rss_before = proxy.rss_kib().unwrap_or(0);
    phase.store(SWAPS, Ordering::Relaxed);
    let swaps_started = Instant::now();
    let mut rss_peak = rss_before;
    let mut generation = admin_json(proxy.admin, "GET", "/config").await?["generation"]
        .as_u64()
        .unwrap_or(0);
    let mut swap_errors = Vec::new();
    for i in 0..args.swaps {
        let v = if i % 2 == 0 { "v2" } else { "v1" };
        swap_to(v)?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let g = admin_json(proxy.admin, "GET", "/config").await?["generation"]
                .as_u64()
                .unwrap_or(0);
            if g > generation {
                generation = g;
                break;
            }
            if Instant::now() > deadline {
                swap_errors.push(format!(
                    "swap {i} to {v} never became generation {}",
                    generation + 1
                ));
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        rss_peak = rss_peak.max(proxy.rss_kib().unwrap_or(0));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let swaps_took = swaps_started.elapsed();
    phase.store(AFTER, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let rss_after = proxy.rss_kib().unwrap_or(0);
    stop.store(true, Ordering::Relaxed);
    let mut logs = Vec::new();
    for c in clients {
        logs.push(c.await.map_err(|e| e.to_string())?);
    }
    let metrics = Conn::new(proxy.admin).request("GET", "/metrics").await?;
    let metrics = String::from_utf8_lossy(&metrics.body).into_owned();
    let draining = admin_json(proxy.admin, "GET", "/config").await?["generations_draining"]
        .as_u64()
        .unwrap_or(u64::MAX);

    let phase_latencies = |p: u8| -> Vec<Duration> {
        logs.iter()
            .flat_map(|l| l.latencies.iter())
            .filter(|(ph, _)| *ph == p)
            .map(|(_, d)| *d)
            .collect()
    };
    let steady = phase_latencies(STEADY);
    let during = phase_latencies(SWAPS);
    let (s50, s99, smax) = summary(steady.clone());
    let (d50, d99, dmax) = summary(during.clone());
    let failures: Vec<&String> = logs.iter().flat_map(|l| l.failures.iter()).collect();
    let mixed: u64 = logs.iter().map(|l| l.mixed).sum();
    let v1_count: u64 = logs.iter().map(|l| l.v1).sum();
    let v2_count: u64 = logs.iter().map(|l| l.v2).sum();
    let total: u64 = logs.iter().map(|l| l.latencies.len() as u64).sum();
    let failed = failures.len() as u64;
    let resets = failures
        .iter()
        .filter(|f| f.contains("closed") || f.contains("reset") || f.contains("connect"))
        .count();
    let p99_ratio = if s99 > 0.0 { d99 / s99 } else { 0.0 };
    let rss_ratio = if rss_before > 0 {
        rss_after as f64 / rss_before as f64
    } else {
        0.0
    };
    let (wv50, wv99, wvmax) = summary(watch_visible);
    let (wr50, _, wrmax) = summary(watch_reload);
    let (pv50, pv99, pvmax) = summary(post_visible);
    let (cv50, _, cvmax) = summary(compile_visible.clone());
    let ok_reloads = metrics
        .lines()
        .find(|l| l.starts_with("wasmgate_reloads_total{result=\"ok\"}"))
        .unwrap_or("wasmgate_reloads_total{result=\"ok\"} ?")
        .to_owned();
    let error_reloads = metrics
        .lines()
        .find(|l| l.starts_with("wasmgate_reloads_total{result=\"error\"}"))
        .unwrap_or("wasmgate_reloads_total{result=\"error\"} 0")
        .to_owned();
    let goal = |ok: bool| if ok { "met" } else { "MISSED" };
    let clean = failures.is_empty() && mixed == 0 && swap_errors.is_empty();

    let mut text = format!(
        "## wasmgate hot swap (swapbench)\n\n\
Release build, 2 worker threads, the load generator and the origin in the benchmark process on \
the same machine. Filter: add-header (`{add_kib} KiB`), two versions differing by a custom \
section and their configuration (`x-version: v1` / `v2`).\n\n\
| Measure | Result | Goal |\n|---|---|---|\n\
| Visibility, cached module, file write -> first new response | p50 {wv50:.2} ms, p99 {wv99:.2} ms, max {wvmax:.2} ms ({runs} swaps) | <= 5 ms: {g1} |\n\
| ... of which the reload itself (read, build, swap) | p50 {wr50:.2} ms, max {wrmax:.2} ms | |\n\
| Visibility, cached module, `POST /reload` -> first new response | p50 {pv50:.2} ms, p99 {pv99:.2} ms, max {pvmax:.2} ms ({runs} swaps) | <= 5 ms: {g2} |\n\
| Visibility with compilation of a {big_mib:.2} MiB module (file write -> first new response) | p50 {cv50:.1} ms, max {cvmax:.1} ms ({compile_runs} modules) | <= 500 ms: {g3} |\n\
| First load of v2 (add-header, compiled, watcher) | {first_v2:.1} ms | |\n\
| Requests under load ({rate} req/s, {clients} keep-alive connections) | {total} answered 200 ({v1_count} from v1, {v2_count} from v2) | |\n\
| Failed requests / connection resets during {swaps} swaps in {swaps_s:.1} s | {failed} / {resets} | 0 / 0: {g4} |\n\
| Responses not from exactly one version (request and response phases) | {mixed} | 0: {g5} |\n\
| p99 latency: steady state / during swaps | {s99:.3} ms / {d99:.3} ms (p50 {s50:.3} / {d50:.3}, max {smax:.2} / {dmax:.2}) | |\n\
| p99 during swaps / steady state | {p99_ratio:.2}x | <= 1.2x: {g6} |\n\
| RSS before the first swap / 5 s after the last / peak | {rss_before} KiB / {rss_after} KiB / {rss_peak} KiB | |\n\
| RSS after / before | {rss_ratio:.3}x | <= 1.02x: {g7} |\n\
| Generations still draining at the end | {draining} | 0 |\n\
| Reload counters | `{ok_reloads}`, `{error_reloads}` | |\n",
        add_kib = add_header.len() / 1024,
        runs = args.runs,
        compile_runs = args.compile_runs,
        g1 = goal(wv99 <= 5.0),
        g2 = goal(pv99 <= 5.0),
        big_mib = compile_size as f64 / f64::from(1 << 20),
        g3 = goal(cvmax <= 500.0 && !compile_visible.is_empty()),
        first_v2 = ms(first_v2),
        rate = args.rate,
        clients = args.clients,
        swaps = args.swaps,
        swaps_s = swaps_took.as_secs_f64(),
        g4 = goal(failed == 0 && resets == 0),
        g5 = goal(mixed == 0),
        g6 = goal(p99_ratio <= 1.2),
        g7 = goal(rss_ratio <= 1.02),
    );
    if !clean {
        text.push_str("\nProblems:\n");
        let mixed_samples = logs.iter().flat_map(|l| l.mixed_samples.iter());
        for f in failures.iter().copied().chain(mixed_samples).take(20) {
            text.push_str(&format!("- {f}\n"));
        }
        for e in &swap_errors {
            text.push_str(&format!("- {e}\n"));
        }
        text.push_str(&format!("\nwasmgate log:\n{}\n", proxy.log_text()));
    }
    Ok(Report { text, clean })
}
