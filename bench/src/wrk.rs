//! Runs `wrk` (closed loop) and reads its summary.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// What one wrk run reported.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct WrkResult {
    pub requests: u64,
    pub seconds: f64,
    pub rps: f64,
    pub non_2xx: u64,
    pub socket_errors: u64,
}

/// A wrk invocation.
#[derive(Debug, Clone)]
pub struct Wrk<'a> {
    pub cpus: &'a str,
    pub connections: usize,
    pub url: String,
    pub headers: &'a [(String, String)],
    pub script: Option<&'a Path>,
}

impl Wrk<'_> {
    /// Runs for `duration`, bounded by `timeout` on top (wrk can hang on a dead server).
    pub fn run(&self, duration: Duration) -> Result<WrkResult, String> {
        let secs = duration.as_secs().max(1);
        let mut cmd = Command::new("timeout");
        cmd.args(["-k", "5", &(secs + 30).to_string()])
            .args(["taskset", "-c", self.cpus, "wrk", "-t1"])
            .arg(format!("-c{}", self.connections))
            .arg(format!("-d{secs}s"))
            .args(["--timeout", "5s"]);
        for (k, v) in self.headers {
            cmd.arg("-H").arg(format!("{k}: {v}"));
        }
        if let Some(script) = self.script {
            cmd.arg("-s").arg(script);
        }
        cmd.arg(&self.url);
        let out = cmd.output().map_err(|e| format!("cannot run wrk: {e}"))?;
        let text = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            return Err(format!(
                "wrk failed ({}): {}{}",
                out.status,
                text,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        parse(&text).ok_or_else(|| format!("cannot read wrk's output:\n{text}"))
    }
}

fn seconds(text: &str) -> Option<f64> {
    let text = text.trim().trim_end_matches(',');
    for (suffix, scale) in [
        ("ms", 1e-3),
        ("us", 1e-6),
        ("s", 1.0),
        ("m", 60.0),
        ("h", 3600.0),
    ] {
        if let Some(n) = text.strip_suffix(suffix) {
            return n.parse::<f64>().ok().map(|n| n * scale);
        }
    }
    None
}

/// Reads wrk 4's summary lines.
pub fn parse(text: &str) -> Option<WrkResult> {
    let mut r = WrkResult::default();
    let mut seen_total = false;
    for line in text.lines().map(str::trim) {
        if let Some((count, rest)) = line.split_once(" requests in ") {
            r.requests = count.trim().parse().ok()?;
            r.seconds = seconds(rest.split(',').next()?)?;
            seen_total = true;
        } else if let Some(n) = line.strip_prefix("Requests/sec:") {
            r.rps = n.trim().parse().ok()?;
        } else if let Some(n) = line.strip_prefix("Non-2xx or 3xx responses:") {
            r.non_2xx = n.trim().parse().ok()?;
        } else if let Some(rest) = line.strip_prefix("Socket errors:") {
            r.socket_errors = rest
                .split(',')
                .filter_map(|part| part.split_whitespace().last()?.parse::<u64>().ok())
                .sum();
        }
    }
    seen_total.then_some(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrk_summaries_are_read() {
        let out = "Running 6s test @ http://127.0.0.1:1/\n  1 threads and 64 connections\n  \
            Thread Stats   Avg      Stdev     Max   +/- Stdev\n    Latency     2.10ms  300.00us   9.00ms   90.00%\n  \
            123456 requests in 6.00s, 12.34MB read\n  Non-2xx or 3xx responses: 7\n  \
            Socket errors: connect 0, read 2, write 0, timeout 1\nRequests/sec:  20576.00\nTransfer/sec:      2.06MB\n";
        let r = parse(out).unwrap();
        assert_eq!(r.requests, 123456);
        assert!((r.seconds - 6.0).abs() < 1e-9);
        assert!((r.rps - 20576.0).abs() < 1e-9);
        assert_eq!((r.non_2xx, r.socket_errors), (7, 3));
        assert!(parse("garbage").is_none());
        assert!((seconds("1.50m").unwrap() - 90.0).abs() < 1e-9);
    }
}
