//! One wasmgate process of a soak case: started from a generated configuration, pinned to the
//! proxy CPU, and observed through `/proc` (memory, file descriptors) and its admin listener
//! (`/metrics`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::Env;
use crate::client;
use crate::servers::Server;

/// A running wasmgate; stopped when dropped.
#[derive(Debug)]
pub struct Proxy {
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub log: PathBuf,
    pid: u32,
    server: Server,
}

/// Memory of a process from `/proc/PID/status`, in KiB.
#[derive(Debug, Clone, Copy, Default)]
pub struct Memory {
    pub rss: u64,
    /// Peak RSS since the process started (`VmHWM`).
    pub hwm: u64,
    /// Virtual address space (`VmSize`).
    pub size: u64,
}

impl Proxy {
    /// Writes `yaml` as `<name>.yaml` in the work directory and starts wasmgate on it; waits
    /// until it listens (it compiles its filters first).
    pub fn start(env: &Env, name: &'static str, yaml: &str) -> Result<Proxy, String> {
        let work = &env.opts.work;
        let config = work.join(format!("{name}.yaml"));
        std::fs::write(&config, yaml)
            .map_err(|e| format!("cannot write {}: {e}", config.display()))?;
        let log = work.join(format!("{name}.log"));
        let config = config.display().to_string();
        let mut server = Server::start(
            name,
            &env.opts.proxy_cpu,
            &env.opts.wasmgate,
            &["run", "-c", &config],
            &log,
            &[("RUST_LOG", "warn")],
            false,
        )
        .map_err(|e| format!("cannot start wasmgate: {e}"))?;
        server
            .wait_listening(env.proxy_addr(), Duration::from_secs(120))
            .map_err(|e| format!("{e} (see {})", log.display()))?;
        server.wait_listening(env.admin_addr(), Duration::from_secs(10))?;
        let pid = server.pids()[0];
        // taskset execs wasmgate in place, so the child's pid is wasmgate's.
        Ok(Proxy {
            addr: env.proxy_addr(),
            admin: env.admin_addr(),
            log,
            pid,
            server,
        })
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn alive(&mut self) -> bool {
        self.server.alive()
    }

    pub fn memory(&self) -> Memory {
        memory(self.pid)
    }

    /// Open file descriptors.
    pub fn fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid)).map_or(0, |d| d.count())
    }

    /// The soft `RLIMIT_NOFILE` of the process.
    pub fn fd_limit(&self) -> Option<u64> {
        let limits = std::fs::read_to_string(format!("/proc/{}/limits", self.pid)).ok()?;
        let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
        line.split_whitespace().nth(3)?.parse().ok()
    }

    /// The Prometheus text of `/metrics`.
    pub fn metrics(&self) -> Result<Metrics, String> {
        let req = client::request("GET", "/metrics", &self.admin.to_string(), &[], b"");
        let admin = self.admin;
        let resp = super::block_on(client::fetch(admin, &req, Duration::from_secs(5)))?
            .map_err(|e| format!("GET /metrics: {e}"))?;
        if resp.status != 200 {
            return Err(format!("GET /metrics: status {}", resp.status));
        }
        Ok(Metrics(String::from_utf8_lossy(&resp.body).into_owned()))
    }

    /// The proxy's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// `/proc/PID/status` memory lines; zero when the process is gone.
pub fn memory(pid: u32) -> Memory {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Memory {
        rss: field("VmRSS:"),
        hwm: field("VmHWM:"),
        size: field("VmSize:"),
    }
}

/// A scrape of `/metrics`.
#[derive(Debug, Clone, Default)]
pub struct Metrics(pub String);

impl Metrics {
    /// The sum of every series of `name` whose labels include all of `labels`.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.0
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let (series, value) = l.rsplit_once(' ')?;
                let (metric, rest) = series.split_once('{').unwrap_or((series, ""));
                if metric != name {
                    return None;
                }
                let all = labels
                    .iter()
                    .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")));
                all.then(|| value.parse::<f64>().ok()).flatten()
            })
            .sum()
    }
}

/// Samples a process's RSS every `every` on a thread until stopped; returns the highest.
#[derive(Debug)]
pub struct RssSampler {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<u64>>,
}

impl RssSampler {
    pub fn start(pid: u32, every: Duration) -> RssSampler {
        use std::sync::atomic::{AtomicBool, Ordering};
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut peak = 0;
            while !flag.load(Ordering::Relaxed) {
                peak = peak.max(memory(pid).rss);
                std::thread::sleep(every);
            }
            peak.max(memory(pid).rss)
        });
        RssSampler {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops sampling; the peak RSS seen, in KiB.
    pub fn stop(mut self) -> u64 {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.take().and_then(|t| t.join().ok()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_series_are_summed_by_label() {
        let m = Metrics(
            "# TYPE x counter\nx{filter=\"a\",kind=\"trap\"} 3\nx{filter=\"b\",kind=\"trap\"} 4\nx{filter=\"a\",kind=\"deadline\"} 5\ny 7\n"
                .into(),
        );
        assert_eq!(m.sum("x", &[("kind", "trap")]), 7.0);
        assert_eq!(m.sum("x", &[("filter", "a")]), 8.0);
        assert_eq!(m.sum("y", &[]), 7.0);
        assert_eq!(m.sum("z", &[]), 0.0);
    }

    #[test]
    fn own_memory_is_readable() {
        let m = memory(std::process::id());
        assert!(m.rss > 0 && m.size >= m.rss && m.hwm >= m.rss);
    }
}
