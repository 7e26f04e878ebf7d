//! `wgbench soak`: the load and soak cases E-1, E-2, E-3, E-5 and E-6 of the reliability
//! catalogue (`shared/reference/reliability.md` §4 E), as bounded runs that measure and write
//! `bench/SOAK.md`. Each case starts its own wasmgate (so memory baselines are its own), pinned
//! to the proxy CPU; the harness, its load generator and the upstream share the client CPU.
//!
//! | Case | Module |
//! |---|---|
//! | E-1 sustained load through a 3-filter chain | [`sustained`] |
//! | E-2 thousands of idle keep-alive connections beside active ones | [`conns`] |
//! | E-3 large uploads and downloads, header-only and streaming body filters | [`bodies`] |
//! | E-5 traps and deadline overruns mixed into load | [`faults`] |
//! | E-6 VM churn and many distinct filters | [`churn`] |

pub mod bodies;
pub mod body_server;
pub mod churn;
pub mod conns;
pub mod faults;
pub mod proxy;
pub mod report;
pub mod sustained;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::configs;
use crate::servers::Server;
use crate::wrk::Wrk;

pub use proxy::Proxy;

/// Every knob of the soak run. The defaults keep the whole run near five minutes on two cores.
#[derive(Debug, Clone)]
pub struct Options {
    pub wasmgate: PathBuf,
    pub filters_dir: PathBuf,
    pub work: PathBuf,
    pub out: PathBuf,
    pub proxy_cpu: String,
    pub client_cpu: String,
    pub port_base: u16,
    /// Cases to run (`E-1`…); empty means all.
    pub only: Vec<String>,
    /// How long wrk measures the maximum rate.
    pub max_seconds: u64,
    pub e1_seconds: u64,
    pub e1_interval: u64,
    pub e1_fraction: f64,
    pub e2_idle: usize,
    pub e2_active: usize,
    pub e2_seconds: u64,
    /// How long the idle connections are left alone before counting how many the proxy closed.
    pub e2_idle_wait: u64,
    /// The proxy's `client.keepalive_timeout_ms` in E-2.
    pub e2_keepalive_ms: u64,
    pub e3_bytes: u64,
    pub e5_rate: f64,
    pub e5_seconds: u64,
    pub e6_seconds: u64,
    pub e6_filters: usize,
    pub notes: Vec<String>,
}

/// What one case found: a summary row, and its section of the report.
#[derive(Debug, Clone)]
pub struct Section {
    pub id: &'static str,
    pub title: &'static str,
    pub expected: &'static str,
    /// One line: the figures the summary table shows.
    pub summary: String,
    /// `Some(true)` met, `Some(false)` not met, `None` not run or not decidable.
    pub met: Option<bool>,
    /// Markdown: what was run and what was measured.
    pub body: String,
}

impl Section {
    fn failed(id: &'static str, title: &'static str, expected: &'static str, why: &str) -> Self {
        Section {
            id,
            title,
            expected,
            summary: format!("did not run: {why}"),
            met: None,
            body: format!("The case could not run: {why}\n"),
        }
    }
}

/// A case: runs against the shared environment and says what it found.
type Case = fn(&mut Env) -> Section;

/// What the cases share: the options, the upstream, and the maximum rate once measured.
#[derive(Debug)]
pub struct Env {
    pub opts: Options,
    pub filters_dir: PathBuf,
    _upstream: Server,
    /// wrk's maximum through the realistic 3-filter chain (req/s), measured once.
    max_rps: Option<f64>,
}

/// Loopback ports, from `--port-base`.
impl Env {
    pub fn upstream_addr(&self) -> SocketAddr {
        at(self.opts.port_base)
    }
    pub fn proxy_addr(&self) -> SocketAddr {
        at(self.opts.port_base + 3)
    }
    pub fn admin_addr(&self) -> SocketAddr {
        at(self.opts.port_base + 4)
    }
    pub fn body_addr(&self) -> SocketAddr {
        at(self.opts.port_base + 5)
    }

    pub fn wasm(&self, name: &str) -> String {
        self.filters_dir
            .join(format!("{name}.wasm"))
            .display()
            .to_string()
    }

    /// The maximum rate of the realistic chain (`/r3/`) through `proxy`, measured with wrk on
    /// the first call and remembered.
    pub fn max_rps(&mut self, proxy: &Proxy) -> Result<f64, String> {
        if let Some(max) = self.max_rps {
            return Ok(max);
        }
        let headers = request_headers();
        let wrk = Wrk {
            cpus: &self.opts.client_cpu,
            connections: 64,
            url: format!("http://{}/r3/", proxy.addr),
            headers: &headers,
            script: None,
        };
        // One second of warm-up, then the measure.
        let _ = wrk.run(Duration::from_secs(1));
        let r = wrk.run(Duration::from_secs(self.opts.max_seconds))?;
        if r.non_2xx > 0 || r.socket_errors > 0 {
            return Err(format!(
                "the max-rate run had {} non-2xx answers and {} socket errors",
                r.non_2xx, r.socket_errors
            ));
        }
        log(format!("maximum through /r3/: {:.0} req/s", r.rps));
        self.max_rps = Some(r.rps);
        Ok(r.rps)
    }
}

fn at(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

pub(crate) fn log(msg: impl AsRef<str>) {
    eprintln!("[soak] {}", msg.as_ref());
}

/// The headers every request carries: the tenant the realistic filters admit.
pub fn request_headers() -> Vec<(String, String)> {
    vec![
        ("x-tenant".to_string(), configs::TENANT.to_string()),
        ("user-agent".to_string(), "wasmgate-soak/1".to_string()),
    ]
}

/// A filter entry of a generated configuration.
#[derive(Debug, Clone)]
pub struct FilterSpec {
    pub name: String,
    pub wasm: String,
    /// JSON (or any text), passed as the plugin configuration.
    pub configuration: Option<String>,
}

/// The realistic tenant filters `tenant1..=3`, which every configuration carries on `/r3/`.
pub fn realistic_filters(env: &Env) -> Vec<FilterSpec> {
    let tenants: Vec<String> = configs::tenants()
        .iter()
        .map(|(t, p)| format!("\"{t}\": \"{p}\""))
        .collect();
    (1..=configs::REALISTIC)
        .map(|i| FilterSpec {
            name: format!("tenant{i}"),
            wasm: env.wasm("bench_realistic"),
            configuration: Some(format!(
                "{{\"id\": \"{i}\", \"blocked_agent_prefix\": \"badbot\", \"tenants\": {{{}}}}}",
                tenants.join(", ")
            )),
        })
        .collect()
}

/// A wasmgate configuration: one worker, the admin listener, the upstream, `filters` and
/// `routes` (path prefix, filter names), plus `/r3/` through the realistic chain and a catch-all.
pub fn wasmgate_yaml(
    env: &Env,
    filters: &[FilterSpec],
    routes: &[(String, Vec<String>)],
) -> String {
    use std::fmt::Write as _;
    let mut y = String::from("# Generated by wgbench soak.\n");
    let _ = writeln!(y, "listen: {}", env.proxy_addr());
    let _ = writeln!(y, "admin: {}", env.admin_addr());
    let _ = writeln!(y, "threads: 1");
    let _ = writeln!(
        y,
        "upstreams:\n  up:\n    endpoints: [\"{}\"]",
        env.upstream_addr()
    );
    let _ = writeln!(y, "  body:\n    endpoints: [\"{}\"]", env.body_addr());
    let _ = writeln!(y, "filters:");
    let realistic = realistic_filters(env);
    for f in realistic.iter().chain(filters) {
        let _ = writeln!(y, "  - name: {}\n    wasm: {}", f.name, f.wasm);
        if let Some(c) = &f.configuration {
            let _ = writeln!(y, "    configuration: '{}'", c.replace('\'', "''"));
        }
    }
    let _ = writeln!(y, "routes:");
    let route = |y: &mut String, prefix: &str, upstream: &str, names: &[String]| {
        let _ = writeln!(
            y,
            "  - match: {{path_prefix: {prefix}}}\n    upstream: {upstream}\n    filters: [{}]",
            names.join(", ")
        );
    };
    let r3: Vec<String> = realistic.iter().map(|f| f.name.clone()).collect();
    route(&mut y, "/r3/", "up", &r3);
    for (prefix, names) in routes {
        // Body cases go to the body server; the rest to the fast upstream.
        let upstream = if prefix.starts_with("/body") {
            "body"
        } else {
            "up"
        };
        route(&mut y, prefix, upstream, names);
    }
    route(&mut y, "/", "up", &[]);
    y
}

/// Starts the upstream and checks the filters; then runs the selected cases in order and writes
/// the report.
pub fn run(opts: Options) -> Result<PathBuf, String> {
    let filters_dir = std::fs::canonicalize(&opts.filters_dir)
        .map_err(|e| format!("filters directory {}: {e}", opts.filters_dir.display()))?;
    for wasm in [
        "bench_realistic",
        "bench_noop",
        "bench_body_stream",
        "testkit",
    ] {
        let path = filters_dir.join(format!("{wasm}.wasm"));
        if !path.is_file() {
            return Err(format!(
                "missing {} (build the filters: cd filters && cargo build --release --target wasm32-wasip1)",
                path.display()
            ));
        }
    }
    std::fs::create_dir_all(&opts.work)
        .map_err(|e| format!("cannot create {}: {e}", opts.work.display()))?;
    for port in opts.port_base..opts.port_base + 6 {
        std::net::TcpListener::bind(("127.0.0.1", port)).map_err(|e| {
            format!("port {port} is not free ({e}): stop what listens there, or pass --port-base")
        })?;
    }
    crate::driver::which("wrk").ok_or("wrk is not installed")?;
    let me = std::env::current_exe().map_err(|e| e.to_string())?;
    let up = at(opts.port_base).to_string();
    let mut upstream = Server::start(
        "upstream",
        &opts.client_cpu,
        &me,
        &["upstream", "--listen", &up, "--body-bytes", "128"],
        &opts.work.join("upstream.log"),
        &[],
        false,
    )
    .map_err(|e| format!("cannot start the upstream: {e}"))?;
    upstream.wait_listening(at(opts.port_base), Duration::from_secs(10))?;
    let started = crate::report::utc_now();
    let load_before = crate::driver::loadavg();
    let mut env = Env {
        opts,
        filters_dir,
        _upstream: upstream,
        max_rps: None,
    };
    let wanted = |id: &str| env.opts.only.is_empty() || env.opts.only.iter().any(|o| o == id);
    let cases: [(&str, Case); 5] = [
        ("E-1", sustained::run),
        ("E-2", conns::run),
        ("E-3", bodies::run),
        ("E-5", faults::run),
        ("E-6", churn::run),
    ];
    let selected: Vec<_> = cases.into_iter().filter(|(id, _)| wanted(id)).collect();
    let mut sections = Vec::new();
    for (id, case) in selected {
        log(format!("{id} (load {})", crate::driver::loadavg()));
        let t = std::time::Instant::now();
        let mut s = case(&mut env);
        s.body.push_str(&format!(
            "\nCase run time: {:.0} s.\n",
            t.elapsed().as_secs_f64()
        ));
        log(format!("{id}: {}", s.summary));
        sections.push(s);
    }
    let text = report::render(&env, &sections, &started, &load_before);
    std::fs::write(&env.opts.out, text)
        .map_err(|e| format!("cannot write {}: {e}", env.opts.out.display()))?;
    Ok(env.opts.out.clone())
}

/// Generator lag (p99) above which a run's latency says more about the machine than about the
/// proxy: the load generator could not send on time (its CPU was taken, or every connection
/// was busy). Latency verdicts built on such a run are left undecided.
pub const LAG_LIMIT_US: f64 = 10_000.0;

/// Whether the generator kept to its schedule in `r` (lag p99 under [`LAG_LIMIT_US`]).
pub fn on_time(r: &crate::loadgen::OpenLoopResult) -> bool {
    r.lag_us(0.99).is_some_and(|lag| lag <= LAG_LIMIT_US)
}

/// `new / old` as "1.23×", or "n/a".
pub fn ratio(new: Option<f64>, old: Option<f64>) -> String {
    match (new, old) {
        (Some(n), Some(o)) if o > 0.0 => format!("{:.2}×", n / o),
        _ => "n/a".into(),
    }
}

/// Microseconds as milliseconds with two decimals.
pub fn ms(us: Option<f64>) -> String {
    us.map_or_else(|| "n/a".into(), |us| format!("{:.2} ms", us / 1000.0))
}

/// One open-loop run as table cells: achieved rate, the latency `quantiles`, errors, non-2xx.
pub fn run_cells(r: &crate::loadgen::OpenLoopResult, quantiles: &[f64]) -> String {
    let mut cells = vec![format!("{:.0}", r.achieved_rate())];
    cells.extend(quantiles.iter().map(|&q| ms(r.latency_us(q))));
    cells.push(r.errors.to_string());
    cells.push(r.non_2xx.to_string());
    cells.join(" | ")
}

/// KiB as MiB with one decimal.
pub fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// Runs `f` on a fresh current-thread tokio runtime.
pub fn block_on<F: std::future::Future>(f: F) -> Result<F::Output, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    Ok(rt.block_on(f))
}
