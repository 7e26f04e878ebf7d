//! `wgbench`: the benchmark harness's binary.
//!
//! ```text
//! wgbench run [options]                      the whole end-to-end harness (bench/run calls it)
//! wgbench soak [options]                     the load and soak cases (bench/soak calls it)
//! wgbench upstream --listen ADDR [--body-bytes N]
//! wgbench pingora --listen ADDR --upstream ADDR    plain Pingora, the floor wasmgate is built on
//! wgbench load --addr ADDR --rate R [--path P] [--seconds S] [--connections C]
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use wasmgate_bench::driver::{self, Options};
use wasmgate_bench::{client, loadgen, soak, upstream};

const USAGE: &str = "usage:
  wgbench run --wasmgate PATH --filters DIR [--out FILE] [--work DIR] [--criterion DIR]
              [--rounds N] [--warmup S] [--duration S] [--lat-rounds N] [--lat-warmup S]
              [--lat-duration S] [--connections N] [--lat-connections N] [--lat-fraction F]
              [--proxy-cpu LIST] [--client-cpu LIST] [--port-base P] [--body-bytes N]
              [--perf-seconds S] [--only KEY,KEY] [--note TEXT]...
  wgbench soak --wasmgate PATH --filters DIR [--out FILE] [--work DIR] [--only E-1,E-2,...]
              [--proxy-cpu LIST] [--client-cpu LIST] [--port-base P] [--max-seconds S]
              [--e1-seconds S] [--e1-interval S] [--e1-fraction F] [--minutes M]
              [--e2-idle N] [--e2-active N] [--e2-seconds S] [--e2-idle-wait S]
              [--e2-keepalive-ms MS]
              [--e3-bytes N] [--e5-rate R] [--e5-seconds S] [--e6-seconds S] [--e6-filters N]
              [--note TEXT]...
  wgbench upstream --listen ADDR [--body-bytes N]
  wgbench pingora --listen ADDR --upstream ADDR [--threads N]
  wgbench load --addr ADDR --rate R [--path P] [--seconds S] [--warmup S] [--connections C]";

/// `--name value` pairs; a repeated name keeps every value.
struct Args(Vec<(String, String)>);

impl Args {
    fn parse(raw: &[String]) -> Result<Args, String> {
        let mut out = Vec::new();
        let mut it = raw.iter();
        while let Some(name) = it.next() {
            let Some(name) = name.strip_prefix("--") else {
                return Err(format!("unexpected argument {name}"));
            };
            let value = it.next().ok_or(format!("--{name} needs a value"))?;
            out.push((name.to_string(), value.clone()));
        }
        Ok(Args(out))
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn all(&self, name: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .collect()
    }

    fn num<T: std::str::FromStr>(&self, name: &str, default: T) -> Result<T, String> {
        match self.get(name) {
            None => Ok(default),
            Some(v) => v
                .parse()
                .map_err(|_| format!("--{name}: not a number: {v}")),
        }
    }

    fn secs(&self, name: &str, default: u64) -> Result<Duration, String> {
        self.num(name, default).map(Duration::from_secs)
    }

    fn path(&self, name: &str) -> Result<PathBuf, String> {
        self.get(name)
            .map(PathBuf::from)
            .ok_or(format!("--{name} is required"))
    }

    fn check_known(&self, known: &[&str]) -> Result<(), String> {
        match self.0.iter().find(|(k, _)| !known.contains(&k.as_str())) {
            Some((k, _)) => Err(format!("unknown option --{k}")),
            None => Ok(()),
        }
    }
}

fn run(args: &Args) -> Result<(), String> {
    args.check_known(&[
        "wasmgate",
        "filters",
        "out",
        "work",
        "criterion",
        "rounds",
        "warmup",
        "duration",
        "lat-rounds",
        "lat-warmup",
        "lat-duration",
        "connections",
        "lat-connections",
        "lat-fraction",
        "proxy-cpu",
        "client-cpu",
        "port-base",
        "body-bytes",
        "perf-seconds",
        "only",
        "note",
    ])?;
    let work = args.get("work").map(PathBuf::from).unwrap_or_else(|| {
        std::env::temp_dir().join(format!("wasmgate-bench-{}", std::process::id()))
    });
    let opts = Options {
        rounds: args.num("rounds", 5)?,
        warmup: args.secs("warmup", 2)?,
        duration: args.secs("duration", 5)?,
        lat_rounds: args.num("lat-rounds", 3)?,
        lat_warmup: args.secs("lat-warmup", 1)?,
        lat_duration: args.secs("lat-duration", 5)?,
        connections: args.num("connections", 64)?,
        lat_connections: args.num("lat-connections", 32)?,
        lat_fraction: args.num("lat-fraction", 0.5)?,
        proxy_cpu: args.get("proxy-cpu").unwrap_or("1").to_string(),
        client_cpu: args.get("client-cpu").unwrap_or("0").to_string(),
        wasmgate: args.path("wasmgate")?,
        filters_dir: args.path("filters")?,
        work,
        out: args
            .get("out")
            .map_or_else(|| PathBuf::from("bench/RESULTS.md"), PathBuf::from),
        port_base: args.num("port-base", 28080)?,
        body_bytes: args.num("body-bytes", 128)?,
        criterion_dir: args.get("criterion").map(PathBuf::from),
        perf_seconds: args.num("perf-seconds", 5)?,
        only: args
            .get("only")
            .map(|s| s.split(',').map(str::to_string).collect())
            .unwrap_or_default(),
        notes: args.all("note"),
    };
    if opts.rounds == 0 || opts.duration.is_zero() {
        return Err("--rounds and --duration must be positive".into());
    }
    driver::run(opts).map(drop)
}

fn soak(args: &Args) -> Result<(), String> {
    args.check_known(&[
        "wasmgate",
        "filters",
        "out",
        "work",
        "only",
        "proxy-cpu",
        "client-cpu",
        "port-base",
        "max-seconds",
        "e1-seconds",
        "e1-interval",
        "e1-fraction",
        "minutes",
        "e2-idle",
        "e2-active",
        "e2-seconds",
        "e2-idle-wait",
        "e2-keepalive-ms",
        "e3-bytes",
        "e5-rate",
        "e5-seconds",
        "e6-seconds",
        "e6-filters",
        "note",
    ])?;
    let work = args.get("work").map(PathBuf::from).unwrap_or_else(|| {
        std::env::temp_dir().join(format!("wasmgate-soak-{}", std::process::id()))
    });
    // `--minutes M` is the catalogue's E-1: M minutes in one-minute intervals.
    let minutes: u64 = args.num("minutes", 0)?;
    let (e1_seconds, e1_interval) = if minutes > 0 {
        (minutes * 60, 60)
    } else {
        (args.num("e1-seconds", 60)?, args.num("e1-interval", 10)?)
    };
    let opts = soak::Options {
        wasmgate: args.path("wasmgate")?,
        filters_dir: args.path("filters")?,
        work,
        out: args
            .get("out")
            .map_or_else(|| PathBuf::from("bench/SOAK.md"), PathBuf::from),
        proxy_cpu: args.get("proxy-cpu").unwrap_or("1").to_string(),
        client_cpu: args.get("client-cpu").unwrap_or("0").to_string(),
        port_base: args.num("port-base", 28280)?,
        only: args
            .get("only")
            .map(|s| s.split(',').map(str::to_string).collect())
            .unwrap_or_default(),
        max_seconds: args.num("max-seconds", 5)?,
        e1_seconds,
        e1_interval,
        e1_fraction: args.num("e1-fraction", 0.5)?,
        e2_idle: args.num("e2-idle", 5000)?,
        e2_active: args.num("e2-active", 200)?,
        e2_seconds: args.num("e2-seconds", 10)?,
        e2_idle_wait: args.num("e2-idle-wait", 10)?,
        e2_keepalive_ms: args.num("e2-keepalive-ms", 20_000)?,
        e3_bytes: args.num("e3-bytes", 256 << 20)?,
        e5_rate: args.num("e5-rate", 200.0)?,
        e5_seconds: args.num("e5-seconds", 20)?,
        e6_seconds: args.num("e6-seconds", 10)?,
        e6_filters: args.num("e6-filters", 100)?,
        notes: args.all("note"),
    };
    if opts.e1_interval == 0 || opts.e1_seconds < 2 * opts.e1_interval {
        return Err("--e1-seconds must hold at least two --e1-interval".into());
    }
    let out = soak::run(opts)?;
    eprintln!("wgbench: wrote {}", out.display());
    Ok(())
}

fn serve(args: &Args) -> Result<(), String> {
    args.check_known(&["listen", "body-bytes"])?;
    let addr: SocketAddr = args
        .get("listen")
        .ok_or("--listen is required")?
        .parse()
        .map_err(|e| format!("--listen: {e}"))?;
    upstream::serve(addr, args.num("body-bytes", 128)?).map_err(|e| e.to_string())
}

fn pingora(args: &Args) -> Result<(), String> {
    args.check_known(&["listen", "upstream", "threads"])?;
    let addr = |name: &str| -> Result<SocketAddr, String> {
        args.get(name)
            .ok_or(format!("--{name} is required"))?
            .parse()
            .map_err(|e| format!("--{name}: {e}"))
    };
    let (listen, upstream) = (addr("listen")?, addr("upstream")?);
    wasmgate_bench::floor::serve(listen, upstream, args.num("threads", 1)?)
}

fn load(args: &Args) -> Result<(), String> {
    args.check_known(&["addr", "rate", "path", "seconds", "warmup", "connections"])?;
    let addr: SocketAddr = args
        .get("addr")
        .ok_or("--addr is required")?
        .parse()
        .map_err(|e| format!("--addr: {e}"))?;
    let path = args.get("path").unwrap_or("/");
    let headers = vec![("x-tenant".to_string(), "acme".to_string())];
    let spec = loadgen::OpenLoop {
        addr,
        request: client::request("GET", path, &addr.to_string(), &headers, b""),
        rate: args.num("rate", 1000.0)?,
        warmup: args.secs("warmup", 1)?,
        duration: args.secs("seconds", 5)?,
        connections: args.num("connections", 32)?,
        alternates: Vec::new(),
    };
    let r = loadgen::run(&spec).map_err(|e| e.to_string())?;
    let q = |x| r.latency_us(x).unwrap_or(f64::NAN);
    println!(
        "rate {:.0}/s achieved {:.0}/s completed {} errors {} non-2xx {}  p50 {:.1} µs p99 {:.1} µs p99.9 {:.1} µs max {:.1} µs  lag p99 {:.1} µs",
        spec.rate,
        r.achieved_rate(),
        r.completed,
        r.errors,
        r.non_2xx,
        q(0.5),
        q(0.99),
        q(0.999),
        q(1.0),
        r.lag_us(0.99).unwrap_or(f64::NAN)
    );
    Ok(())
}

fn main() -> ExitCode {
    let raw: Vec<String> = std::env::args().skip(1).collect();
    let Some((command, rest)) = raw.split_first() else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let result = Args::parse(rest).and_then(|args| match command.as_str() {
        "run" => run(&args),
        "soak" => soak(&args),
        "upstream" => serve(&args),
        "pingora" => pingora(&args),
        "load" => load(&args),
        _ => Err(format!("unknown command {command}\n{USAGE}")),
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wgbench: {e}");
            ExitCode::FAILURE
        }
    }
}
