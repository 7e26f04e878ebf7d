//! E-1, sustained load: an open-loop rate at a fraction (default 50 %) of the measured maximum
//! through the realistic 3-filter chain, as back-to-back intervals. Each interval is one
//! [`loadgen`](crate::loadgen) run on fresh connections, so each has its own latency figures;
//! RSS and VmSize are read after each.

use std::fmt::Write as _;
use std::time::Duration;

use super::{Env, Proxy, Section, log, mib, ms, request_headers, wasmgate_yaml};
use crate::client;
use crate::loadgen::{self, OpenLoop};

const ID: &str = "E-1";
const TITLE: &str = "Sustained load through a 3-filter chain";
const EXPECTED: &str = "0 errors; p99 drift < 20 % first to last interval; RSS plateaus";

/// One interval's figures.
#[derive(Debug)]
struct Interval {
    achieved: f64,
    p50: Option<f64>,
    p99: Option<f64>,
    p999: Option<f64>,
    errors: u64,
    non_2xx: u64,
    lag_p99: Option<f64>,
    /// p99 from the actual send (without the generator's lag).
    service_p99: Option<f64>,
    rss: u64,
    size: u64,
}

pub fn run(env: &mut Env) -> Section {
    match measure(env) {
        Ok(s) => s,
        Err(e) => Section::failed(ID, TITLE, EXPECTED, &e),
    }
}

fn measure(env: &mut Env) -> Result<Section, String> {
    let yaml = wasmgate_yaml(env, &[], &[]);
    let mut proxy = Proxy::start(env, "e1-wasmgate", &yaml)?;
    let max = env.max_rps(&proxy)?;
    let rate = max * env.opts.e1_fraction;
    let interval = env.opts.e1_interval.max(1);
    let count = (env.opts.e1_seconds / interval).max(2);
    let baseline = proxy.memory();
    let host = proxy.addr.to_string();
    let request = client::request("GET", "/r3/", &host, &request_headers(), b"");
    log(format!("E-1: {rate:.0} req/s for {count} × {interval} s"));
    let mut rows = Vec::new();
    for i in 0..count {
        let spec = OpenLoop {
            addr: proxy.addr,
            request: request.clone(),
            rate,
            // The first interval gets a warm-up; the others follow on at once.
            warmup: Duration::from_secs(if i == 0 { 2 } else { 0 }),
            duration: Duration::from_secs(interval),
            connections: 32,
            alternates: Vec::new(),
        };
        let r = loadgen::run(&spec).map_err(|e| format!("load generator: {e}"))?;
        let m = proxy.memory();
        rows.push(Interval {
            achieved: r.achieved_rate(),
            p50: r.latency_us(0.5),
            p99: r.latency_us(0.99),
            p999: r.latency_us(0.999),
            errors: r.errors,
            non_2xx: r.non_2xx,
            lag_p99: r.lag_us(0.99),
            service_p99: r.service_us(0.99),
            rss: m.rss,
            size: m.size,
        });
        if !proxy.alive() {
            return Err(format!("wasmgate exited during interval {}", i + 1));
        }
    }
    Ok(section(env, rate, max, interval, baseline.rss, &rows))
}

fn section(
    env: &Env,
    rate: f64,
    max: f64,
    interval: u64,
    baseline_rss: u64,
    rows: &[Interval],
) -> Section {
    let errors: u64 = rows.iter().map(|r| r.errors + r.non_2xx).sum();
    let first = rows.first().and_then(|r| r.p99);
    let last = rows.last().and_then(|r| r.p99);
    let drift = match (first, last) {
        (Some(a), Some(b)) if a > 0.0 => Some((b - a) / a * 100.0),
        _ => None,
    };
    // Plateau: the second half of the run never goes more than 2 MiB above the highest RSS of
    // the first half (baseline included).
    let half = rows.len() / 2;
    let first_max = rows[..half]
        .iter()
        .map(|r| r.rss)
        .max()
        .unwrap_or(0)
        .max(baseline_rss);
    let second_max = rows[half..].iter().map(|r| r.rss).max().unwrap_or(0);
    let rss_end = rows.last().map_or(0, |r| r.rss);
    let plateau = second_max <= first_max + 2048;
    // The drift compares two intervals' tails: only meaningful if the generator kept to its
    // schedule in both.
    let lag_ok = |r: Option<&Interval>| {
        r.and_then(|r| r.lag_p99)
            .is_some_and(|l| l <= super::LAG_LIMIT_US)
    };
    let decidable = lag_ok(rows.first()) && lag_ok(rows.last());
    let met = if errors > 0 || !plateau {
        Some(false)
    } else if decidable {
        Some(drift.is_some_and(|d| d < 20.0))
    } else {
        None
    };

    let mut b = String::new();
    let _ = writeln!(
        b,
        "Route `/r3/` (the 3 realistic filters of the benchmarks), one worker on CPU {}. \
         Maximum measured with `wrk -t1 -c64` for {} s: **{max:.0} req/s**; offered \
         open-loop rate {:.0} % of it = **{rate:.0} req/s** on 32 keep-alive connections, \
         {} intervals of {interval} s back to back (each on fresh connections; the first after \
         a 2 s warm-up). Latency is from the intended send time (no coordinated omission).\n",
        env.opts.proxy_cpu,
        env.opts.max_seconds,
        env.opts.e1_fraction * 100.0,
        rows.len(),
    );
    let _ = writeln!(
        b,
        "| Interval | Achieved req/s | p50 | p99 | p99.9 | Errors | Non-2xx | Generator lag p99 | p99 from actual send | RSS | VmSize |\n|---|---|---|---|---|---|---|---|---|---|---|"
    );
    let _ = writeln!(b, "| before | | | | | | | | | {} | |", mib(baseline_rss));
    for (i, r) in rows.iter().enumerate() {
        let _ = writeln!(
            b,
            "| {} | {:.0} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            i + 1,
            r.achieved,
            ms(r.p50),
            ms(r.p99),
            ms(r.p999),
            r.errors,
            r.non_2xx,
            ms(r.lag_p99),
            ms(r.service_p99),
            mib(r.rss),
            mib(r.size)
        );
    }
    let drift_text = drift.map_or_else(|| "n/a".into(), |d| format!("{d:+.1} %"));
    let s_first = rows.first().and_then(|r| r.service_p99);
    let s_last = rows.last().and_then(|r| r.service_p99);
    let s_drift = match (s_first, s_last) {
        (Some(a), Some(b)) if a > 0.0 => format!("{:+.1} %", (b - a) / a * 100.0),
        _ => "n/a".into(),
    };
    let _ = writeln!(
        b,
        "\np99 first interval {} → last {}: drift **{drift_text}**. RSS {} before the load; \
         highest {} in the first half, {} in the second ({}: the criterion is at most 2 MiB \
         above the first half); {} at the end. The generator-lag column is how late requests \
         left the generator (its own CPU starved, or every connection busy): on a shared \
         machine it is most of the tail. Measured from the actual send instead, p99 goes \
         {} → {} ({s_drift}); that figure hides queueing behind a stall, so the verdict uses \
         the first.{}",
        ms(first),
        ms(last),
        mib(baseline_rss),
        mib(first_max),
        mib(second_max),
        if plateau { "plateau" } else { "still growing" },
        mib(rss_end),
        ms(s_first),
        ms(s_last),
        if decidable {
            String::new()
        } else {
            format!(
                " **Drift undecided**: the generator lag p99 of the first or last interval is over \
                 {:.0} ms, so those tails measure the starved load generator, not the proxy.",
                super::LAG_LIMIT_US / 1000.0
            )
        }
    );
    Section {
        id: ID,
        title: TITLE,
        expected: EXPECTED,
        summary: format!(
            "{rate:.0} req/s ({:.0} % of {max:.0}) for {} s: {errors} errors; p99 {} → {} ({drift_text}; from actual send {s_drift}); RSS {} → {} ({})",
            env.opts.e1_fraction * 100.0,
            rows.len() as u64 * interval,
            ms(first),
            ms(last),
            mib(baseline_rss),
            mib(rss_end),
            if plateau { "plateau" } else { "growing" }
        ),
        met,
        body: b,
    }
}
