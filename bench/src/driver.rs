//! The end-to-end harness: starts the upstream and the proxies under test, checks that every
//! variant does what it claims, measures them interleaved (closed-loop throughput with wrk, then
//! open-loop latency at a fixed rate), optionally profiles wasmgate, and writes the report.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::client;
use crate::configs::{self, POST_BYTES, Ports, REALISTIC, TENANT, Target, VARIANTS, Variant};
use crate::loadgen::{self, OpenLoop};
use crate::procstat;
use crate::report;
use crate::servers::Server;
use crate::wrk::Wrk;

/// Everything the harness can be told.
#[derive(Debug, Clone)]
pub struct Options {
    /// Interleaved rounds of the throughput phase.
    pub rounds: usize,
    pub warmup: Duration,
    pub duration: Duration,
    /// Interleaved rounds of the latency phase.
    pub lat_rounds: usize,
    pub lat_warmup: Duration,
    pub lat_duration: Duration,
    /// wrk connections.
    pub connections: usize,
    /// Open-loop connections.
    pub lat_connections: usize,
    /// Offered open-loop rate as a fraction of wasmgate's 0-filter maximum.
    pub lat_fraction: f64,
    /// taskset CPU list of the proxy under test.
    pub proxy_cpu: String,
    /// taskset CPU list of the load generator and upstream.
    pub client_cpu: String,
    pub wasmgate: PathBuf,
    pub filters_dir: PathBuf,
    pub work: PathBuf,
    pub out: PathBuf,
    pub port_base: u16,
    /// Response body size of the upstream.
    pub body_bytes: usize,
    /// Criterion's output directory, to include the microbenchmarks.
    pub criterion_dir: Option<PathBuf>,
    /// Seconds of `perf record` per profiled variant (0: no profile).
    pub perf_seconds: u64,
    /// Only these variant keys (for quick checks); empty = all.
    pub only: Vec<String>,
    /// Free text from the caller (build time and the like), printed in the report.
    pub notes: Vec<String>,
}

/// One closed-loop measurement.
#[derive(Debug, Clone, Copy)]
pub struct Throughput {
    pub rps: f64,
    pub requests: u64,
    pub non_2xx: u64,
    pub errors: u64,
    /// Proxy CPU (user + system) per request, µs.
    pub cpu_us: Option<f64>,
    /// Proxy CPU time / wall time.
    pub cpu_util: Option<f64>,
}

/// One open-loop measurement.
#[derive(Debug, Clone, Copy)]
pub struct Latency {
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub achieved: f64,
    pub non_2xx: u64,
    pub errors: u64,
    pub cpu_us: Option<f64>,
    pub lag_p99_us: f64,
}

/// Everything measured in one run.
#[derive(Debug, Default)]
pub struct Results {
    /// Per variant key, one entry per round (None: that measurement failed).
    pub throughput: BTreeMap<&'static str, Vec<Option<Throughput>>>,
    pub latency: BTreeMap<&'static str, Vec<Option<Latency>>>,
    /// The open-loop rate used.
    pub rate: f64,
    /// Variants not measured, and why.
    pub skipped: Vec<(&'static str, String)>,
    /// Functional checks passed, for the report.
    pub checks: Vec<String>,
    /// `perf report` excerpts per profiled variant.
    pub profiles: Vec<(String, String)>,
    pub started: Option<String>,
    pub elapsed: Duration,
    pub load_before: String,
    pub load_after: String,
}

fn log(msg: impl AsRef<str>) {
    eprintln!("[bench] {}", msg.as_ref());
}

/// The 1, 5 and 15 minute load averages.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// Where `program` is on the PATH.
pub fn which(program: &str) -> Option<PathBuf> {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {program}"))
        .output()
        .ok()?;
    let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (!path.is_empty()).then(|| PathBuf::from(path))
}

/// The request headers every variant sends: the tenant the realistic filters admit, and an
/// agent they do not block.
fn request_headers() -> Vec<(String, String)> {
    vec![
        ("x-tenant".into(), TENANT.into()),
        ("user-agent".into(), "wasmgate-bench/1".into()),
    ]
}

struct Lab {
    opts: Options,
    ports: Ports,
    // Held for its Drop: the upstream stops with the lab.
    _upstream: Server,
    nginx: Server,
    haproxy: Server,
    wasmgate: Server,
    pingora: Server,
    post_script: PathBuf,
}

impl Lab {
    fn port(&self, target: Target) -> u16 {
        match target {
            Target::Direct => self.ports.upstream,
            Target::Nginx => self.ports.nginx,
            Target::Haproxy => self.ports.haproxy,
            Target::Wasmgate => self.ports.wasmgate,
            Target::Pingora => self.ports.pingora,
        }
    }

    fn addr(&self, target: Target) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port(target)))
    }

    /// The pids whose CPU is "the proxy" for a variant; none for direct.
    fn proxy_pids(&self, target: Target) -> Vec<u32> {
        match target {
            Target::Direct => Vec::new(),
            Target::Nginx => self.nginx.pids(),
            Target::Haproxy => self.haproxy.pids(),
            Target::Wasmgate => self.wasmgate.pids(),
            Target::Pingora => self.pingora.pids(),
        }
    }

    fn wrk<'a>(&'a self, v: &Variant, headers: &'a [(String, String)]) -> Wrk<'a> {
        Wrk {
            cpus: &self.opts.client_cpu,
            connections: self.opts.connections,
            url: format!("http://127.0.0.1:{}{}", self.port(v.target), v.path),
            headers,
            script: (v.post_bytes > 0).then_some(self.post_script.as_path()),
        }
    }
}

fn start_lab(opts: &Options) -> Result<Lab, String> {
    let ports = Ports::from_base(opts.port_base);
    let work = &opts.work;
    // The servers run with other working directories: every path they get is absolute.
    let filters_dir = std::fs::canonicalize(&opts.filters_dir)
        .map_err(|e| format!("filters directory {}: {e}", opts.filters_dir.display()))?;
    std::fs::create_dir_all(work).map_err(|e| format!("cannot create {}: {e}", work.display()))?;
    let write = |name: &str, text: String| -> Result<PathBuf, String> {
        let path = work.join(name);
        std::fs::write(&path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        Ok(path)
    };
    let yaml = write("wasmgate.yaml", configs::wasmgate_yaml(ports, &filters_dir))?;
    let nginx_conf = write("nginx.conf", configs::nginx_conf(ports, work))?;
    let haproxy_cfg = write("haproxy.cfg", configs::haproxy_cfg(ports))?;
    let post_script = write("post.lua", configs::post_lua(POST_BYTES))?;
    for wasm in ["bench_noop", "bench_realistic", "bench_body_rewrite"] {
        let path = filters_dir.join(format!("{wasm}.wasm"));
        if !path.is_file() {
            return Err(format!(
                "missing {} (build the filters: cd filters && cargo build --release --target wasm32-wasip1)",
                path.display()
            ));
        }
    }
    // A server left over on one of the ports would be measured in place of ours.
    for port in [
        ports.upstream,
        ports.nginx,
        ports.haproxy,
        ports.wasmgate,
        ports.pingora,
    ] {
        std::net::TcpListener::bind(("127.0.0.1", port)).map_err(|e| {
            format!("port {port} is not free ({e}): stop what listens there, or pass --port-base")
        })?;
    }
    let nginx_bin = which("nginx").ok_or("nginx is not installed")?;
    let haproxy_bin = which("haproxy").ok_or("haproxy is not installed")?;
    which("wrk").ok_or("wrk is not installed")?;
    let me = std::env::current_exe().map_err(|e| e.to_string())?;

    let up_addr = format!("127.0.0.1:{}", ports.upstream);
    let body = opts.body_bytes.to_string();
    let start =
        |name, cpus: &str, program: &Path, args: &[&str], env: &[(&str, &str)], children| {
            Server::start(
                name,
                cpus,
                program,
                args,
                &work.join(format!("{name}.log")),
                env,
                children,
            )
            .map_err(|e| format!("cannot start {name}: {e}"))
        };
    let mut upstream = start(
        "upstream",
        &opts.client_cpu,
        &me,
        &["upstream", "--listen", &up_addr, "--body-bytes", &body],
        &[],
        false,
    )?;
    let w = work.display().to_string();
    let nginx_conf = nginx_conf.display().to_string();
    let mut nginx = start(
        "nginx",
        &opts.proxy_cpu,
        &nginx_bin,
        &["-p", &w, "-c", &nginx_conf],
        &[],
        true,
    )?;
    let haproxy_cfg = haproxy_cfg.display().to_string();
    let mut haproxy = start(
        "haproxy",
        &opts.proxy_cpu,
        &haproxy_bin,
        &["-db", "-f", &haproxy_cfg],
        &[],
        false,
    )?;
    let yaml = yaml.display().to_string();
    let mut wasmgate = start(
        "wasmgate",
        &opts.proxy_cpu,
        &opts.wasmgate,
        &["run", "-c", &yaml],
        &[("RUST_LOG", "warn")],
        false,
    )?;
    let pingora_addr = format!("127.0.0.1:{}", ports.pingora);
    let mut pingora = start(
        "pingora",
        &opts.proxy_cpu,
        &me,
        &["pingora", "--listen", &pingora_addr, "--upstream", &up_addr],
        &[("RUST_LOG", "warn")],
        false,
    )?;
    let limit = Duration::from_secs(20);
    let at = |port| SocketAddr::from(([127, 0, 0, 1], port));
    upstream.wait_listening(at(ports.upstream), limit)?;
    nginx.wait_listening(at(ports.nginx), limit)?;
    haproxy.wait_listening(at(ports.haproxy), limit)?;
    pingora.wait_listening(at(ports.pingora), limit)?;
    // wasmgate compiles its filters before it listens.
    wasmgate
        .wait_listening(at(ports.wasmgate), Duration::from_secs(120))
        .map_err(|e| format!("{e} (see {w}/wasmgate.log)"))?;
    Ok(Lab {
        opts: opts.clone(),
        ports,
        _upstream: upstream,
        nginx,
        haproxy,
        wasmgate,
        pingora,
        post_script,
    })
}

/// Checks that a variant does what its label says; `Err` says why not.
async fn check(lab: &Lab, v: &Variant, checks: &mut Vec<String>) -> Result<(), String> {
    let addr = lab.addr(v.target);
    let headers = request_headers();
    let host = format!("127.0.0.1:{}", lab.port(v.target));
    let t = Duration::from_secs(5);
    let body = vec![b'a'; v.post_bytes];
    let method = if v.post_bytes > 0 { "POST" } else { "GET" };
    let req = client::request(method, v.path, &host, &headers, &body);
    let resp = client::fetch(addr, &req, t)
        .await
        .map_err(|e| format!("request failed: {e}"))?;
    if resp.status != 200 {
        return Err(format!("status {} instead of 200", resp.status));
    }
    if v.key == "body_wg" {
        let marker = b"-- rewritten by bench-body-rewrite";
        if !resp.body.windows(marker.len()).any(|w| w == marker) {
            return Err(
                "not supported yet: the response body came back unchanged (the proxy does not deliver response body callbacks yet)".into(),
            );
        }
        checks.push(format!(
            "{}: the response body was rewritten by the filter",
            v.key
        ));
        return Ok(());
    }
    if resp.body.len() != lab.opts.body_bytes {
        return Err(format!(
            "body of {} bytes instead of {}",
            resp.body.len(),
            lab.opts.body_bytes
        ));
    }
    if v.key.ends_with("real") {
        for i in 1..=REALISTIC {
            let name = format!("x-tenant-{i}");
            if resp.header(&name) != Some(TENANT) {
                return Err(format!("response header {name} missing"));
            }
        }
        // What went upstream: the upstream echoes the request head on paths with "echo".
        let echo_path = format!("{}echo", v.path);
        let req = client::request("GET", &echo_path, &host, &headers, b"");
        let echo = client::fetch(addr, &req, t)
            .await
            .map_err(|e| format!("echo request failed: {e}"))?;
        let forwarded = String::from_utf8_lossy(&echo.body).to_ascii_lowercase();
        for i in 1..=REALISTIC {
            if !forwarded.contains(&format!("x-tenant-plan-{i}: gold")) {
                return Err(format!("request header x-tenant-plan-{i} not forwarded"));
            }
        }
        let denied = [("x-tenant".to_string(), "nobody".to_string())];
        let req = client::request("GET", v.path, &host, &denied, b"");
        let miss = client::fetch(addr, &req, t)
            .await
            .map_err(|e| format!("denied request failed: {e}"))?;
        if miss.status != 403 {
            return Err(format!("unknown tenant got {} instead of 403", miss.status));
        }
        checks.push(format!(
            "{}: adds x-tenant-plan-1..{REALISTIC} upstream and x-tenant-1..{REALISTIC} downstream; an unknown tenant gets 403",
            v.key
        ));
    } else {
        checks.push(format!("{}: 200 with the upstream's body", v.key));
    }
    Ok(())
}

fn selected(opts: &Options) -> Vec<&'static Variant> {
    VARIANTS
        .iter()
        .filter(|v| opts.only.is_empty() || opts.only.iter().any(|k| k == v.key))
        .collect()
}

/// Runs the whole harness and writes the report. Returns the report's path.
pub fn run(opts: Options) -> Result<PathBuf, String> {
    let started = Instant::now();
    let mut results = Results {
        load_before: loadavg(),
        started: Some(report::utc_now()),
        ..Results::default()
    };
    log(format!("work directory {}", opts.work.display()));
    let lab = start_lab(&opts)?;
    log("servers up; checking every variant");

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let mut active: Vec<&'static Variant> = Vec::new();
    for v in selected(&opts) {
        match rt.block_on(check(&lab, v, &mut results.checks)) {
            Ok(()) => active.push(v),
            Err(reason) => {
                log(format!("{}: skipped: {reason}", v.key));
                results.skipped.push((v.key, reason));
            }
        }
    }
    drop(rt);

    throughput_phase(&lab, &active, &mut results);
    latency_phase(&lab, &active, &mut results);
    if opts.perf_seconds > 0 {
        profile(&lab, &active, &mut results);
    }
    drop(lab);

    results.load_after = loadavg();
    results.elapsed = started.elapsed();
    let micro = opts
        .criterion_dir
        .as_deref()
        .map(report::read_criterion)
        .unwrap_or_default();
    let text = report::render(&opts, &results, &micro);
    let text = report::keep_notes(&opts.out, text);
    std::fs::write(&opts.out, text)
        .map_err(|e| format!("cannot write {}: {e}", opts.out.display()))?;
    log(format!(
        "wrote {} after {:.0} s",
        opts.out.display(),
        results.elapsed.as_secs_f64()
    ));
    Ok(opts.out.clone())
}

/// Alternates the direction of the variant list from one round to the next, so that a slow
/// drift of the machine's speed affects every variant alike.
fn round_order<'a>(active: &[&'a Variant], round: usize) -> Vec<&'a Variant> {
    let mut order = active.to_vec();
    if round % 2 == 1 {
        order.reverse();
    }
    order
}

fn throughput_phase(lab: &Lab, active: &[&'static Variant], results: &mut Results) {
    let opts = &lab.opts;
    let headers = request_headers();
    for round in 0..opts.rounds {
        for v in round_order(active, round) {
            let wrk = lab.wrk(v, &headers);
            if !opts.warmup.is_zero()
                && let Err(e) = wrk.run(opts.warmup)
            {
                log(format!("{} warm-up: {e}", v.key));
            }
            let pids = lab.proxy_pids(v.target);
            let cpu0 = procstat::total_cpu(&pids);
            let t0 = Instant::now();
            let measured = wrk.run(opts.duration);
            let wall = t0.elapsed();
            let cpu = procstat::total_cpu(&pids).saturating_sub(cpu0);
            let sample = match measured {
                Ok(r) => {
                    let has_cpu = !pids.is_empty() && r.requests > 0;
                    let s = Throughput {
                        rps: r.rps,
                        requests: r.requests,
                        non_2xx: r.non_2xx,
                        errors: r.socket_errors,
                        cpu_us: has_cpu.then(|| cpu.as_secs_f64() * 1e6 / r.requests as f64),
                        cpu_util: has_cpu.then(|| cpu.as_secs_f64() / wall.as_secs_f64()),
                    };
                    log(format!(
                        "round {}/{} {:<11} {:>9.0} req/s  cpu {:>6} µs/req  non-2xx {} errors {}",
                        round + 1,
                        opts.rounds,
                        v.key,
                        s.rps,
                        s.cpu_us.map_or("-".into(), |c| format!("{c:.2}")),
                        s.non_2xx,
                        s.errors
                    ));
                    Some(s)
                }
                Err(e) => {
                    log(format!("{}: {e}", v.key));
                    None
                }
            };
            let slot = results.throughput.entry(v.key).or_default();
            slot.resize(opts.rounds, None);
            slot[round] = sample;
        }
    }
}

fn median_rps(results: &Results, key: &str) -> Option<f64> {
    let v = results.throughput.get(key)?;
    crate::stats::Spread::of(v.iter().flatten().map(|t| t.rps)).map(|s| s.median)
}

fn latency_phase(lab: &Lab, active: &[&'static Variant], results: &mut Results) {
    let opts = &lab.opts;
    let Some(max) = median_rps(results, "wg0")
        .or_else(|| median_rps(results, "nginx"))
        .or_else(|| median_rps(results, "direct"))
    else {
        log("no throughput figure to derive the open-loop rate from; latency phase skipped");
        return;
    };
    let rate = (max * opts.lat_fraction).max(100.0).round();
    results.rate = rate;
    let variants: Vec<&Variant> = active.iter().copied().filter(|v| v.latency).collect();
    let headers = request_headers();
    for round in 0..opts.lat_rounds {
        for v in round_order(&variants, round) {
            let host = format!("127.0.0.1:{}", lab.port(v.target));
            let spec = OpenLoop {
                addr: lab.addr(v.target),
                request: client::request("GET", v.path, &host, &headers, b""),
                rate,
                warmup: opts.lat_warmup,
                duration: opts.lat_duration,
                connections: opts.lat_connections,
                alternates: Vec::new(),
            };
            let pids = lab.proxy_pids(v.target);
            let cpu0 = procstat::total_cpu(&pids);
            let measured = loadgen::run(&spec);
            let cpu = procstat::total_cpu(&pids).saturating_sub(cpu0);
            let sample = match measured {
                Ok(r) if !r.latencies_ns.is_empty() => {
                    let us = |q| r.latency_us(q).unwrap_or(f64::NAN);
                    let s = Latency {
                        p50_us: us(0.5),
                        p99_us: us(0.99),
                        p999_us: us(0.999),
                        achieved: r.achieved_rate(),
                        non_2xx: r.non_2xx,
                        errors: r.errors,
                        cpu_us: (!pids.is_empty() && r.all_completed > 0)
                            .then(|| cpu.as_secs_f64() * 1e6 / r.all_completed as f64),
                        lag_p99_us: r.lag_us(0.99).unwrap_or(f64::NAN),
                    };
                    log(format!(
                        "latency {}/{} {:<11} @{rate:.0}/s p50 {:>7.1} p99 {:>7.1} p99.9 {:>8.1} µs  cpu {} µs/req  errors {}",
                        round + 1,
                        opts.lat_rounds,
                        v.key,
                        s.p50_us,
                        s.p99_us,
                        s.p999_us,
                        s.cpu_us.map_or("-".into(), |c| format!("{c:.2}")),
                        s.errors + s.non_2xx
                    ));
                    Some(s)
                }
                Ok(_) => {
                    log(format!("{}: no response in the open-loop run", v.key));
                    None
                }
                Err(e) => {
                    log(format!("{}: open-loop run failed: {e}", v.key));
                    None
                }
            };
            let slot = results.latency.entry(v.key).or_default();
            slot.resize(opts.lat_rounds, None);
            slot[round] = sample;
        }
    }
}

/// Samples wasmgate's stacks with `perf record` while wrk loads a variant, and keeps the top
/// of `perf report` (self time by symbol, and by shared object).
fn profile(lab: &Lab, active: &[&'static Variant], results: &mut Results) {
    let Some(perf) = which("perf") else {
        log("perf is not installed: no profile");
        return;
    };
    let secs = lab.opts.perf_seconds;
    let headers = request_headers();
    for key in ["wg0", "wg3real"] {
        let Some(v) = active.iter().find(|v| v.key == key) else {
            continue;
        };
        let data = lab.opts.work.join(format!("perf-{key}.data"));
        let pid = lab.wasmgate.pids()[0].to_string();
        // DWARF unwinding: Rust release code has no frame pointers, so `-g` alone loses
        // every user-space caller. A low frequency keeps the data small.
        let recorder = Command::new("timeout")
            .args(["-k", "5", &(secs + 30).to_string()])
            .arg(&perf)
            .args(["record", "-F", "499", "--call-graph", "dwarf,16384", "-o"])
            .arg(&data)
            .args(["-p", &pid, "--", "sleep", &secs.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let Ok(mut recorder) = recorder else {
            log("perf record could not start: no profile");
            return;
        };
        std::thread::sleep(Duration::from_millis(300));
        let _ = lab.wrk(v, &headers).run(Duration::from_secs(secs));
        let _ = recorder.wait();
        let report = |children: bool, sort: &str| -> String {
            Command::new("timeout")
                .args(["300", perf.to_str().unwrap_or("perf"), "report", "-i"])
                .arg(&data)
                .args([
                    "--stdio",
                    "-g",
                    "none",
                    "--sort",
                    sort,
                    "--percent-limit",
                    "0.3",
                ])
                .arg(if children {
                    "--children"
                } else {
                    "--no-children"
                })
                .stderr(Stdio::null())
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default()
        };
        // perf pads its columns to the longest symbol: squeeze the runs of spaces.
        let squeeze = |l: &str| -> String {
            let l = l.trim_end().trim_end_matches(['-', ' ']);
            l.split_whitespace().collect::<Vec<_>>().join(" ")
        };
        let rows = |text: String, keep: &dyn Fn(&str) -> bool, max: usize| -> String {
            text.lines()
                .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
                .filter(|l| keep(l))
                .take(max)
                .map(squeeze)
                .collect::<Vec<_>>()
                .join("\n")
        };
        let by_dso = rows(report(false, "dso"), &|_| true, 12);
        let by_symbol = rows(report(false, "dso,symbol"), &|_| true, 30);
        // Inclusive time of wasmgate's own functions (the proxy glue and the ABI host).
        let ours = rows(
            report(true, "symbol"),
            &|l| (l.contains("wasmgate") || l.contains("wasmtime")) && !l.contains("(inlined)"),
            30,
        );
        if by_symbol.is_empty() {
            log("perf report produced nothing (perf_event_paranoid?): no profile");
            return;
        }
        results.profiles.push((
            format!("{} ({}), self time by shared object", v.key, v.label),
            by_dso,
        ));
        results.profiles.push((
            format!("{} ({}), self time by symbol", v.key, v.label),
            by_symbol,
        ));
        results.profiles.push((
            format!(
                "{} ({}), inclusive time of wasmgate and wasmtime functions (children, self)",
                v.key, v.label
            ),
            ours,
        ));
    }
}
