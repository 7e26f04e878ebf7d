//! E-2, many connections: thousands of idle keep-alive connections (each served one request,
//! then left open) beside 200 active ones. The active connections' latency is measured with and
//! without the idle ones; the proxy's file descriptors and memory are read at each step; after
//! a wait, the idle connections the proxy closed are counted.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::task::JoinSet;

use super::{
    Env, Proxy, Section, block_on, log, mib, ms, on_time, ratio, request_headers, run_cells,
    wasmgate_yaml,
};
use crate::client::{self, Connection};
use crate::loadgen::{self, OpenLoop, OpenLoopResult};

const ID: &str = "E-2";
const TITLE: &str = "Many idle keep-alive connections plus 200 active";
const EXPECTED: &str =
    "active p99 within bounds; fd limit not hit; an idle timeout frees connections";
/// Connections opened at once while building the idle set.
const BATCH: usize = 250;

pub fn run(env: &mut Env) -> Section {
    match measure(env) {
        Ok(s) => s,
        Err(e) => Section::failed(ID, TITLE, EXPECTED, &e),
    }
}

/// Opens `n` connections, each serving one request; returns those that did and the failures.
async fn open_idle(addr: SocketAddr, request: Vec<u8>, n: usize) -> (Vec<Connection>, usize) {
    let mut conns = Vec::with_capacity(n);
    let mut failed = 0;
    let mut left = n;
    while left > 0 {
        let mut set = JoinSet::new();
        for _ in 0..left.min(BATCH) {
            let request = request.clone();
            set.spawn(async move {
                let mut c = Connection::connect(addr).await?;
                let r = c.exchange(&request, false).await?;
                if r.status != 200 || r.close {
                    return Err(std::io::Error::other(format!("status {}", r.status)));
                }
                Ok::<_, std::io::Error>(c)
            });
        }
        left -= left.min(BATCH);
        while let Some(r) = set.join_next().await {
            match r {
                Ok(Ok(c)) => conns.push(c),
                _ => failed += 1,
            }
        }
    }
    (conns, failed)
}

/// How many of `conns` the peer has closed; gives them back.
async fn count_closed(conns: Vec<Connection>) -> (Vec<Connection>, usize) {
    let mut set = JoinSet::new();
    for mut c in conns {
        set.spawn(async move {
            let closed = c.peer_closed(Duration::from_millis(500)).await;
            (c, closed)
        });
    }
    let mut back = Vec::new();
    let mut closed = 0;
    while let Some(Ok((c, was_closed))) = set.join_next().await {
        closed += usize::from(was_closed);
        back.push(c);
    }
    (back, closed)
}

fn active(env: &Env, proxy: &Proxy, rate: f64) -> Result<OpenLoopResult, String> {
    let host = proxy.addr.to_string();
    let spec = OpenLoop {
        addr: proxy.addr,
        request: client::request("GET", "/r3/", &host, &request_headers(), b""),
        rate,
        warmup: Duration::from_secs(1),
        duration: Duration::from_secs(env.opts.e2_seconds),
        connections: env.opts.e2_active,
        alternates: Vec::new(),
    };
    loadgen::run(&spec).map_err(|e| format!("load generator: {e}"))
}

fn measure(env: &mut Env) -> Result<Section, String> {
    let mut yaml = wasmgate_yaml(env, &[], &[]);
    let keepalive = Duration::from_millis(env.opts.e2_keepalive_ms);
    yaml.push_str(&format!(
        "client:\n  keepalive_timeout_ms: {}\n",
        env.opts.e2_keepalive_ms
    ));
    let mut proxy = Proxy::start(env, "e2-wasmgate", &yaml)?;
    let rate = env.max_rps(&proxy)? * env.opts.e1_fraction;
    let fd_limit = proxy.fd_limit();
    let fds_start = proxy.fds();
    let mem_start = proxy.memory();

    log(format!(
        "E-2: active only, {rate:.0} req/s on {} connections",
        env.opts.e2_active
    ));
    let clean = active(env, &proxy, rate)?;

    // The idle connections live in this runtime, which is only driven while they are opened and
    // probed; the kernel keeps them open in between.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let host = proxy.addr.to_string();
    let req = client::request("GET", "/r3/", &host, &request_headers(), b"");
    let t = Instant::now();
    let (idle, idle_failed) = rt.block_on(open_idle(proxy.addr, req, env.opts.e2_idle));
    let open_secs = t.elapsed().as_secs_f64();
    // Let the proxy finish with them (its RSS lags the last answers).
    std::thread::sleep(Duration::from_secs(1));
    let fds_idle = proxy.fds();
    let mem_idle = proxy.memory();
    log(format!(
        "E-2: {} idle connections open ({idle_failed} failed) in {open_secs:.1} s; proxy fds {fds_idle}",
        idle.len()
    ));

    log("E-2: active with the idle connections open");
    let loaded = active(env, &proxy, rate)?;
    let fds_loaded = proxy.fds();
    let (idle, closed_after_load) = rt.block_on(count_closed(idle));

    // Wait at least --e2-idle-wait, and until the keep-alive timeout (plus 2 s) has passed
    // since the idle connections went quiet.
    let quiet_since = t + Duration::from_secs_f64(open_secs);
    let wait = Duration::from_secs(env.opts.e2_idle_wait).max(
        (quiet_since + keepalive + Duration::from_secs(2))
            .saturating_duration_since(Instant::now()),
    );
    std::thread::sleep(wait);
    let idle_for = quiet_since.elapsed();
    let (idle, closed_after_wait) = rt.block_on(count_closed(idle));
    let fds_wait = proxy.fds();
    let idle_count = idle.len();
    drop(idle);
    std::thread::sleep(Duration::from_secs(2));
    let fds_end = proxy.fds();
    let mem_closed = proxy.memory();
    log("E-2: active alone again");
    let clean2 = active(env, &proxy, rate)?;
    // Two more rounds of idle connections, opened and closed: the third must reuse what the
    // second took (a leak per connection would add as much again every round).
    let mut rounds = Vec::new();
    for _ in 0..2 {
        let req = client::request("GET", "/r3/", &host, &request_headers(), b"");
        let (more, _) = rt.block_on(open_idle(proxy.addr, req, env.opts.e2_idle));
        std::thread::sleep(Duration::from_secs(1));
        rounds.push(proxy.memory().rss);
        drop(more);
        std::thread::sleep(Duration::from_secs(1));
    }
    drop(rt);
    let healthy = block_on(client::fetch(
        proxy.addr,
        &client::request("GET", "/r3/", &host, &request_headers(), b""),
        Duration::from_secs(1),
    ))?
    .is_ok_and(|r| r.status == 200);
    let alive = proxy.alive();

    let errors = |r: &OpenLoopResult| r.errors + r.non_2xx;
    // The two runs alone bracket the one with idle connections; on a shared machine their
    // spread is the noise, so the verdict compares with the slower of them.
    let alone_p99 = match (clean.latency_us(0.99), clean2.latency_us(0.99)) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    };
    let p99_ratio = match (loaded.latency_us(0.99), alone_p99) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    };
    let highest = rounds.iter().copied().fold(mem_idle.rss, u64::max);
    let per_conn_kib = highest.saturating_sub(mem_start.rss) as f64 / idle_count.max(1) as f64;
    let no_leak = rounds[1] <= rounds[0] + highest.saturating_sub(mem_start.rss) / 10;
    let decidable = on_time(&clean) && on_time(&loaded) && on_time(&clean2);
    let sound = errors(&loaded) == 0 && no_leak && idle_failed == 0 && alive && healthy;
    let met = if !sound || closed_after_wait < idle_count {
        Some(false)
    } else if decidable {
        Some(p99_ratio.is_some_and(|r| r <= 1.5))
    } else {
        None
    };

    let mut b = String::new();
    let _ = writeln!(
        b,
        "One wasmgate worker; route `/r3/` (3 realistic filters). The active load is open-loop at \
         {rate:.0} req/s (50 % of the maximum) on {} keep-alive connections, 1 s warm-up + {} s \
         measured, first alone, then with **{} idle keep-alive connections** open (each served \
         one request, then stays silent). The harness raises its own `ulimit -n` to the hard \
         limit (`bench/soak`); wasmgate inherits it (it neither sets nor needs a larger one: \
         one fd per connection, plus upstream connections).\n",
        env.opts.e2_active, env.opts.e2_seconds, env.opts.e2_idle,
    );
    let _ = writeln!(
        b,
        "| Active run | Achieved req/s | p50 | p99 | p99.9 | Errors | Non-2xx |\n|---|---|---|---|---|---|---|"
    );
    for (name, r) in [
        ("alone", &clean),
        ("with idle connections", &loaded),
        ("alone again, idle closed", &clean2),
    ] {
        let _ = writeln!(b, "| {name} | {} |", run_cells(r, &[0.5, 0.99, 0.999]));
    }
    let _ = writeln!(
        b,
        "\nActive p99 with the idle connections ÷ without: **{}** (÷ the run after they closed: \
         {}). The verdict compares with the slower of the two runs alone (they bracket it; \
         their spread is the machine's noise). RSS before the second run alone: {}.{}\n",
        ratio(loaded.latency_us(0.99), clean.latency_us(0.99)),
        ratio(loaded.latency_us(0.99), clean2.latency_us(0.99)),
        mib(mem_closed.rss),
        if decidable {
            String::new()
        } else {
            format!(
                " **Latency undecided**: in at least one of the three runs the generator lag p99 \
                 is over {:.0} ms (the generator could not keep to its schedule).",
                super::LAG_LIMIT_US / 1000.0
            )
        }
    );
    let limit = fd_limit.map_or_else(|| "?".into(), |l| l.to_string());
    let _ = writeln!(
        b,
        "| Proxy | Open fds | RSS |\n|---|---|---|\n\
         | at start | {fds_start} | {} |\n\
         | {} idle open ({idle_failed} failed to open, {open_secs:.1} s to open) | {fds_idle} | {} |\n\
         | after the active run | {fds_loaded} | |\n\
         | after {} s more idle | {fds_wait} | |\n\
         | after the harness closed them | {fds_end} | {} |\n\
         | {n} idle open again (second round) | | {} |\n\
         | {n} idle open again (third round) | | {} |\n",
        mib(mem_start.rss),
        idle_count,
        mib(mem_idle.rss),
        wait.as_secs(),
        mib(mem_closed.rss),
        mib(rounds[0]),
        mib(rounds[1]),
        n = env.opts.e2_idle,
    );
    let _ = writeln!(
        b,
        "The proxy's fd limit (`RLIMIT_NOFILE`, soft) is {limit}; the highest count seen was {} \
         ({}). Memory per idle connection ≈ {per_conn_kib:.1} KiB of RSS (highest RSS of the \
         rounds over the start, ÷ connections). The RSS stays up after they close (the \
         allocator keeps the freed memory, and touches some of it only in a later round); the \
         third round {}.\n",
        fds_idle.max(fds_loaded),
        if fd_limit.is_some_and(|l| (fds_idle.max(fds_loaded) as u64) < l) {
            "not hit"
        } else {
            "at the limit"
        },
        if no_leak {
            "reuses what the second took (within 10 % of the growth): no leak per connection"
        } else {
            "adds to what the second took: **memory grows per connection**"
        }
    );
    let _ = writeln!(
        b,
        "**Idle timeout.** The proxy ran with `client.keepalive_timeout_ms: {}`. Of the \
         {idle_count} idle connections, it had closed {closed_after_load} by the end of the \
         active run, and {closed_after_wait} after {} s more ({:.0} s after they went quiet); \
         its open fds then: {fds_wait}. {} After the run the proxy {} and a new request {}.",
        env.opts.e2_keepalive_ms,
        wait.as_secs(),
        idle_for.as_secs_f64(),
        if closed_after_wait == idle_count {
            "The keep-alive timeout freed every idle connection."
        } else if closed_after_wait == 0 {
            "None was freed: idle connections are only bounded by the fd limit."
        } else {
            "Only some were freed."
        },
        if alive { "was alive" } else { "had exited" },
        if healthy {
            "got 200 within 1 s"
        } else {
            "did not get 200 within 1 s"
        },
    );
    Ok(Section {
        id: ID,
        title: TITLE,
        expected: EXPECTED,
        summary: format!(
            "{idle_count} idle + {} active: active p99 {} vs {} and {} alone ({} of the slower); {} errors; proxy fds {} (limit {limit}); {per_conn_kib:.0} KiB RSS per idle connection ({}); idle closed by the proxy ({} ms keep-alive timeout, after {:.0} s idle): {closed_after_wait} of {idle_count}",
            env.opts.e2_active,
            ms(loaded.latency_us(0.99)),
            ms(clean.latency_us(0.99)),
            ms(clean2.latency_us(0.99)),
            ratio(loaded.latency_us(0.99), alone_p99),
            errors(&loaded),
            fds_idle.max(fds_loaded),
            if no_leak { "no leak" } else { "GROWS" },
            env.opts.e2_keepalive_ms,
            idle_for.as_secs_f64()
        ),
        met,
        body: b,
    })
}
