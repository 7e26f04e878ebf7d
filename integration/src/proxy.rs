//! Starts the real `wasmgate` binary on free loopback ports with a given configuration, and
//! stops it when dropped.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The proxy binary under test, built next to the test executables.
pub fn binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> -> target/<profile>/wasmgate-e2e
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test executable is in target/<profile>/deps");
    dir.join("wasmgate-e2e")
}

/// A free port on 127.0.0.1 (another process may take it before we use it: `start` retries).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// The proxy's `RUST_LOG` in tests.
pub const LOG_FILTER: &str = "info,wasm=trace,wasmtime=info,wasmparser=info";

/// A running proxy. Stopped (SIGINT, then SIGKILL) when dropped.
#[derive(Debug)]
pub struct Proxy {
    child: Child,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub dir: tempfile::TempDir,
    log: PathBuf,
}

/// The result of a one-shot command such as `wasmgate check`.
#[derive(Debug)]
pub struct Output {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `wasmgate <args>` to completion.
pub fn run_command(args: &[&str]) -> Output {
    let out = Command::new(binary())
        .args(args)
        .env("RUST_LOG", "info")
        .output()
        .expect("run wasmgate");
    Output {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

impl Proxy {
    /// Starts the proxy with `config`, a YAML text in which `{listen}` and `{admin}` are
    /// replaced by free addresses. Panics with the proxy's log if it does not come up.
    pub fn start(config: &str) -> Proxy {
        Self::start_with(config, &[])
    }

    /// As [`Proxy::start`], with more arguments for `wasmgate run` (e.g. `--no-watch`).
    pub fn start_with(config: &str, args: &[&str]) -> Proxy {
        let mut last_log = String::new();
        for _ in 0..3 {
            match Self::try_start(config, args) {
                Ok(proxy) => return proxy,
                Err(log) => last_log = log,
            }
        }
        panic!("wasmgate did not start:\n{last_log}");
    }

    fn try_start(config: &str, args: &[&str]) -> Result<Proxy, String> {
        let dir = tempfile::tempdir().expect("temp dir");
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        let text = config
            .replace("{listen}", &addr.to_string())
            .replace("{admin}", &admin.to_string());
        let path = dir.path().join("wasmgate.yaml");
        std::fs::write(&path, text).expect("write config");
        let log = dir.path().join("wasmgate.log");
        let log_file = std::fs::File::create(&log).expect("log file");
        let child = Command::new(binary())
            .args(["run", "-c"])
            .arg(&path)
            .args(args)
            // Filter logs (target `wasm`) at trace; `wasm` is also a prefix of wasmtime's and
            // cranelift's targets, whose trace output slows a start by seconds.
            .env("RUST_LOG", LOG_FILTER)
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("spawn wasmgate");
        let mut proxy = Proxy {
            child,
            addr,
            admin,
            dir,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = proxy.child.try_wait() {
                return Err(proxy.log());
            }
            // Another process may have taken a port after `free_port` gave it: a connection
            // that succeeds is not enough, the socket listening there must be ours.
            let pid = proxy.child.id();
            if TcpStream::connect(addr).is_ok()
                && TcpStream::connect(admin).is_ok()
                && listens_on(pid, addr.port())
                && listens_on(pid, admin.port())
            {
                return Ok(proxy);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(proxy.log())
    }

    /// The configuration file the proxy runs from.
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("wasmgate.yaml")
    }

    /// Replaces the configuration file with `config` (`{listen}` and `{admin}` replaced by
    /// this proxy's addresses) atomically: written beside it, then renamed over it.
    pub fn write_config(&self, config: &str) {
        let text = config
            .replace("{listen}", &self.addr.to_string())
            .replace("{admin}", &self.admin.to_string());
        replace_file(&self.config_path(), text.as_bytes());
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The proxy's resident set size in KiB (`VmRSS` of `/proc/PID/status`); 0 if it cannot
    /// be read (the process is gone).
    pub fn rss_kib(&self) -> u64 {
        proc_status_number(self.child.id(), "VmRSS:")
    }

    /// The proxy's peak resident set size in KiB (`VmHWM`); 0 if it cannot be read.
    pub fn peak_rss_kib(&self) -> u64 {
        proc_status_number(self.child.id(), "VmHWM:")
    }

    /// How many file descriptors the proxy has open; 0 if they cannot be listed.
    pub fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.child.id()))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    /// How many threads the proxy runs; 0 if it cannot be read.
    pub fn threads(&self) -> u64 {
        proc_status_number(self.child.id(), "Threads:")
    }

    /// Sends `signal` (e.g. `libc::SIGHUP`) to the proxy.
    pub fn signal(&self, signal: libc::c_int) {
        send_signal(self.child.id(), signal);
    }

    /// Waits up to `timeout` for the process to exit; whether it did.
    pub fn wait_exit(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if !self.is_alive() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// Starts a second proxy from the same configuration file with `--upgrade`: it waits
    /// (up to 30 s) for this one to hand over its listening sockets, which this one does
    /// when sent `SIGQUIT`.
    pub fn start_upgrade(&self) -> Successor {
        let log = self.dir.path().join("successor.log");
        let log_file = std::fs::File::create(&log).expect("log file");
        let child = Command::new(binary())
            .args(["run", "--upgrade", "-c"])
            .arg(self.config_path())
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("spawn wasmgate --upgrade");
        Successor { child, log }
    }

    /// Everything the proxy logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `http://ADDR` of the proxy.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// `http://ADMIN` of the admin listener.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    /// Whether the process is still running.
    pub fn is_alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits until the log contains `needle`, up to `timeout`.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.log().contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}

/// A proxy started with `--upgrade` by [`Proxy::start_upgrade`]. Stopped when dropped.
#[derive(Debug)]
pub struct Successor {
    child: Child,
    log: PathBuf,
}

impl Successor {
    /// Everything it logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log contains `needle`, up to `timeout`.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.log().contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// Whether the process is still running.
    pub fn is_alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Successor {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}

fn send_signal(pid: u32, signal: libc::c_int) {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return;
    };
    // SAFETY: sending a signal to a child process this harness started.
    #[allow(unsafe_code)]
    unsafe {
        libc::kill(pid, signal);
    }
}

/// The number after `field` in `/proc/PID/status` (`VmRSS:` and `VmHWM:` are in KiB).
fn proc_status_number(pid: u32, field: &str) -> u64 {
    let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return 0;
    };
    text.lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Whether process `pid` holds the socket listening on 127.0.0.1:`port` (from `/proc`: the
/// socket inodes of its descriptors, against `/proc/net/tcp`). True when `/proc` cannot tell.
fn listens_on(pid: u32, port: u16) -> bool {
    let Ok(table) = std::fs::read_to_string("/proc/net/tcp") else {
        return true;
    };
    let local = format!("0100007F:{port:04X}");
    // Columns: sl, local_address, rem_address, st, ..., inode (the 10th); st 0A = LISTEN.
    let inodes: Vec<&str> = table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            (cols.get(1) == Some(&local.as_str()) && cols.get(3) == Some(&"0A"))
                .then(|| cols.get(9).copied())?
        })
        .collect();
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return true;
    };
    fds.filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
        .filter_map(|target| {
            let target = target.to_string_lossy().into_owned();
            Some(
                target
                    .strip_prefix("socket:[")?
                    .strip_suffix(']')?
                    .to_string(),
            )
        })
        .any(|inode| inodes.contains(&inode.as_str()))
}

/// SIGINT, then SIGKILL if it is still running 5 s later.
fn stop(child: &mut Child) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    send_signal(child.id(), libc::SIGINT);
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Replaces `path` with `bytes` atomically: a temporary file beside it, then a rename, as a
/// careful deploy does.
pub fn replace_file(path: &Path, bytes: &[u8]) {
    let mut name = path.file_name().expect("a file name").to_os_string();
    name.push(".tmp-write");
    let temp = path.with_file_name(name);
    std::fs::write(&temp, bytes).expect("write the new file");
    std::fs::rename(&temp, path).expect("rename it into place");
}
