//! E-5, faults mixed into load: a steady benign load on `/r3/` (the realistic 3-filter chain of
//! E-1), with 1 % of the schedule sent to a route whose filter traps and 1 % to one whose filter
//! loops until the callback deadline (default 100 ms). The benign latency is compared with a
//! clean run at the same rate, and the proxy's counters with the injected counts: every
//! injected request must show up exactly once, as a fault of its kind or as a refusal while
//! the filter's VM backs off.

use std::fmt::Write as _;
use std::time::Duration;

use super::proxy::Metrics;
use super::{
    Env, FilterSpec, Proxy, Section, log, ms, on_time, ratio, request_headers, run_cells,
    wasmgate_yaml,
};
use crate::client;
use crate::loadgen::{self, Alternate, OpenLoop, OpenLoopResult};

const ID: &str = "E-5";
const TITLE: &str = "Traps and deadline overruns mixed into load";
const EXPECTED: &str =
    "benign: 0 errors, p99 ≤ 1.5× clean; trap and timeout counters = injected counts";

/// Every 100th scheduled request, at these offsets: 1 % each.
const EVERY: u64 = 100;
const TRAP_AT: u64 = 37;
const LOOP_AT: u64 = 87;

pub fn run(env: &mut Env) -> Section {
    match measure(env) {
        Ok(s) => s,
        Err(e) => Section::failed(ID, TITLE, EXPECTED, &e),
    }
}

fn testkit(env: &Env, name: &str, op: &str) -> FilterSpec {
    FilterSpec {
        name: name.into(),
        wasm: env.wasm("testkit"),
        configuration: Some(format!(
            "{{\"on_request_headers\": [{{\"op\": \"{op}\"}}]}}"
        )),
    }
}

/// The counters E-5 compares, from one scrape.
#[derive(Debug, Clone, Copy, Default)]
struct Counters {
    trap_failures: f64,
    trapper_unavailable: f64,
    deadline_failures: f64,
    looper_unavailable: f64,
    trapper_faults: f64,
    looper_faults: f64,
    rebuilds: f64,
}

impl Counters {
    fn of(m: &Metrics) -> Counters {
        let f = "wasmgate_filter_failures_total";
        Counters {
            trap_failures: m.sum(f, &[("filter", "trapper"), ("kind", "trap")]),
            trapper_unavailable: m.sum(f, &[("filter", "trapper"), ("kind", "unavailable")]),
            deadline_failures: m.sum(f, &[("filter", "looper"), ("kind", "deadline")]),
            looper_unavailable: m.sum(f, &[("filter", "looper"), ("kind", "unavailable")]),
            trapper_faults: m.sum("wasmgate_vm_faults_total", &[("filter", "trapper")]),
            looper_faults: m.sum("wasmgate_vm_faults_total", &[("filter", "looper")]),
            rebuilds: m.sum("wasmgate_vm_rebuilds_total", &[]),
        }
    }

    fn minus(self, o: Counters) -> Counters {
        Counters {
            trap_failures: self.trap_failures - o.trap_failures,
            trapper_unavailable: self.trapper_unavailable - o.trapper_unavailable,
            deadline_failures: self.deadline_failures - o.deadline_failures,
            looper_unavailable: self.looper_unavailable - o.looper_unavailable,
            trapper_faults: self.trapper_faults - o.trapper_faults,
            looper_faults: self.looper_faults - o.looper_faults,
            rebuilds: self.rebuilds - o.rebuilds,
        }
    }
}

/// The benign load, with traps and loops mixed in as asked.
fn load(env: &Env, proxy: &Proxy, traps: bool, loops: bool) -> Result<OpenLoopResult, String> {
    let host = proxy.addr.to_string();
    let headers = request_headers();
    let mut alternates = Vec::new();
    if traps {
        alternates.push(Alternate {
            every: EVERY,
            offset: TRAP_AT,
            request: client::request("GET", "/trap/", &host, &headers, b""),
        });
    }
    if loops {
        alternates.push(Alternate {
            every: EVERY,
            offset: LOOP_AT,
            request: client::request("GET", "/loop/", &host, &headers, b""),
        });
    }
    let spec = OpenLoop {
        addr: proxy.addr,
        request: client::request("GET", "/r3/", &host, &headers, b""),
        rate: env.opts.e5_rate,
        warmup: Duration::from_secs(1),
        duration: Duration::from_secs(env.opts.e5_seconds),
        connections: 32,
        alternates,
    };
    loadgen::run(&spec).map_err(|e| format!("load generator: {e}"))
}

fn measure(env: &mut Env) -> Result<Section, String> {
    let filters = [
        testkit(env, "trapper", "panic"),
        testkit(env, "looper", "loop"),
    ];
    let routes = vec![
        ("/trap/".to_string(), vec!["trapper".into()]),
        ("/loop/".to_string(), vec!["looper".into()]),
    ];
    let yaml = wasmgate_yaml(env, &filters, &routes);
    let mut proxy = Proxy::start(env, "e5-wasmgate", &yaml)?;
    log(format!("E-5: clean run at {:.0} req/s", env.opts.e5_rate));
    let clean = load(env, &proxy, false, false)?;
    let before = Counters::of(&proxy.metrics()?);
    log("E-5: the same with 1 % traps and 1 % loops");
    let faulty = load(env, &proxy, true, true)?;
    let after = Counters::of(&proxy.metrics()?);
    log("E-5: clean again");
    let clean2 = load(env, &proxy, false, false)?;
    log("E-5: traps only");
    let traps_only = load(env, &proxy, true, false)?;
    let alive = proxy.alive();
    let d = after.minus(before);
    let traps = &faulty.alternates[0];
    let loops = &faulty.alternates[1];
    let injected_traps = traps.scheduled as f64;
    let injected_loops = loops.scheduled as f64;
    let benign_errors = faulty.errors + faulty.non_2xx;
    let p99_ratio = match (faulty.latency_us(0.99), clean.latency_us(0.99)) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    };
    // Every injected request is counted once: as a fault of its kind, or refused while the
    // filter's VM backs off; and every fault threw a VM away.
    let counters_match = d.trap_failures + d.trapper_unavailable == injected_traps
        && d.trapper_faults == d.trap_failures
        && d.deadline_failures + d.looper_unavailable == injected_loops
        && d.looper_faults == d.deadline_failures;
    // The clean runs must have kept to their schedule for the ratio to mean anything.
    let decidable = on_time(&clean) && on_time(&clean2);
    let met = if !alive || benign_errors > 0 || !counters_match {
        Some(false)
    } else if decidable {
        Some(p99_ratio.is_some_and(|r| r <= 1.5))
    } else {
        None
    };

    let mut b = String::new();
    let _ = writeln!(
        b,
        "One wasmgate worker. Benign requests: `GET /r3/` through the 3 realistic filters. \
         `/trap/` goes through `trapper` (the testkit fixture scripted to panic, i.e. trap, on \
         every request) and `/loop/` through `looper` (spins until the default 100 ms callback \
         deadline). Open loop at **{:.0} req/s** on 32 connections, 1 s warm-up + {} s. In the \
         faulty run, request number n of the schedule goes to `/trap/` when n mod {EVERY} = \
         {TRAP_AT} and to `/loop/` when n mod {EVERY} = {LOOP_AT} (1 % each, warm-up \
         included). The rate is low on purpose: a looping callback \
         holds the worker thread for its whole 100 ms deadline (guest calls are synchronous), so \
         1 % loops at R req/s keep the only worker busy R × 0.1 % of the time.\n",
        env.opts.e5_rate, env.opts.e5_seconds,
    );
    let _ = writeln!(
        b,
        "| Benign run | Achieved req/s | p50 | p99 | p99.9 | max | Errors | Non-2xx |\n|---|---|---|---|---|---|---|---|"
    );
    for (name, r) in [
        ("clean", &clean),
        ("with 1 % traps + 1 % loops", &faulty),
        ("clean again", &clean2),
        ("with 1 % traps only", &traps_only),
    ] {
        let cells = run_cells(r, &[0.5, 0.99, 0.999, 1.0]);
        let _ = writeln!(b, "| {name} | {cells} |");
    }
    let _ = writeln!(
        b,
        "\nBenign p99 with faults ÷ clean: **{}** (÷ the second clean run: {}). With traps \
         only (no loops): {} of the first clean run, {} benign errors.\n",
        ratio(faulty.latency_us(0.99), clean.latency_us(0.99)),
        ratio(faulty.latency_us(0.99), clean2.latency_us(0.99)),
        ratio(traps_only.latency_us(0.99), clean.latency_us(0.99)),
        traps_only.errors + traps_only.non_2xx,
    );
    let statuses = |a: &crate::loadgen::AlternateResult| {
        let mut s: Vec<String> = a
            .statuses
            .iter()
            .map(|(st, n)| format!("{n}× {st}"))
            .collect();
        if a.errors > 0 {
            s.push(format!("{} errors", a.errors));
        }
        s.join(", ")
    };
    let _ = writeln!(
        b,
        "| Injected | Sent | Answers | Slowest answer | `filter_failures_total` of its kind | `filter_failures_total` kind=unavailable (backoff) | `vm_faults_total` |\n|---|---|---|---|---|---|---|\n\
         | trap (`/trap/`) | {} | {} | {} | {} (kind=trap) | {} | {} |\n\
         | loop (`/loop/`) | {} | {} | {} | {} (kind=deadline) | {} | {} |\n",
        traps.scheduled,
        statuses(traps),
        ms(Some(traps.max_latency_ns as f64 / 1000.0)),
        d.trap_failures,
        d.trapper_unavailable,
        d.trapper_faults,
        loops.scheduled,
        statuses(loops),
        ms(Some(loops.max_latency_ns as f64 / 1000.0)),
        d.deadline_failures,
        d.looper_unavailable,
        d.looper_faults,
    );
    let _ = writeln!(
        b,
        "Counter deltas over the faulty run (scraped from `/metrics` before and after it). \
         After 5 faults in a row a filter's VM is rebuilt only after a backoff (100 ms, \
         doubling), and requests in between are refused at once as `unavailable`: so each \
         injected request counts once, as a fault or as a refusal. Faults + refusals = injected, \
         and VM faults = faults, for both filters: **{}**. VM rebuilds: {}. The proxy {}.",
        if counters_match { "yes" } else { "no" },
        d.rebuilds,
        if alive { "stayed up" } else { "**exited**" }
    );
    Ok(Section {
        id: ID,
        title: TITLE,
        expected: EXPECTED,
        summary: format!(
            "{:.0} req/s, {} traps + {} loops injected: benign errors {benign_errors}; benign p99 {} vs {} clean ({}; traps only: {}); counted: trap {} + backoff {} of {}, deadline {} + backoff {} of {} ({})",
            env.opts.e5_rate,
            traps.scheduled,
            loops.scheduled,
            ms(faulty.latency_us(0.99)),
            ms(clean.latency_us(0.99)),
            ratio(faulty.latency_us(0.99), clean.latency_us(0.99)),
            ratio(traps_only.latency_us(0.99), clean.latency_us(0.99)),
            d.trap_failures,
            d.trapper_unavailable,
            injected_traps,
            d.deadline_failures,
            d.looper_unavailable,
            injected_loops,
            if counters_match { "exact" } else { "MISMATCH" }
        ),
        met,
        body: b,
    })
}
