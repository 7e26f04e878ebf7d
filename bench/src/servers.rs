//! Starting and stopping the servers under test, pinned to a CPU with `taskset`.

use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::procstat;

/// A server process the harness started; stopped (with its children) when dropped.
#[derive(Debug)]
pub struct Server {
    pub name: &'static str,
    child: Child,
    /// Also count (and stop) the direct children: nginx's worker.
    with_children: bool,
}

impl Server {
    /// Starts `program args` on `cpus` (a taskset CPU list), with stdout and stderr appended
    /// to `log`.
    pub fn start(
        name: &'static str,
        cpus: &str,
        program: &Path,
        args: &[&str],
        log: &Path,
        env: &[(&str, &str)],
        with_children: bool,
    ) -> std::io::Result<Server> {
        let out = std::fs::File::create(log)?;
        let err = out.try_clone()?;
        let mut cmd = Command::new("taskset");
        cmd.arg("-c").arg(cpus).arg(program).args(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.stdin(Stdio::null()).stdout(out).stderr(err).spawn()?;
        Ok(Server {
            name,
            child,
            with_children,
        })
    }

    /// The pids whose CPU time is the server's.
    pub fn pids(&self) -> Vec<u32> {
        if self.with_children {
            procstat::with_children(self.child.id())
        } else {
            vec![self.child.id()]
        }
    }

    /// Whether the process still runs.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits until `addr` accepts connections, up to `limit`.
    pub fn wait_listening(&mut self, addr: SocketAddr, limit: Duration) -> Result<(), String> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if !self.alive() {
                return Err(format!("{} exited during startup", self.name));
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(format!(
            "{} did not listen on {addr} within {limit:?}",
            self.name
        ))
    }
}

fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .args(["-s", sig, &pid.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

impl Drop for Server {
    fn drop(&mut self) {
        let pids: Vec<(u32, Option<u64>)> = self
            .pids()
            .into_iter()
            .map(|p| (p, procstat::start_time(p)))
            .collect();
        // SIGINT first (wasmgate and Pingora stop at once on it), then make sure.
        signal(self.child.id(), "INT");
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(2) {
            if !self.alive() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        for &(pid, started) in pids.iter().rev() {
            if started.is_some() && procstat::start_time(pid) == started {
                signal(pid, "KILL");
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
