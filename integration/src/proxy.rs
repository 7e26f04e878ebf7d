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
        let mut last_log = String::new();
        for _ in 0..3 {
            match Self::try_start(config) {
                Ok(proxy) => return proxy,
                Err(log) => last_log = log,
            }
        }
        panic!("wasmgate did not start:\n{last_log}");
    }

    fn try_start(config: &str) -> Result<Proxy, String> {
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
            .env("RUST_LOG", "info,wasm=trace")
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
            if TcpStream::connect(addr).is_ok() && TcpStream::connect(admin).is_ok() {
                return Ok(proxy);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(proxy.log())
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
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: sending a signal to our own child process.
        #[allow(unsafe_code)]
        unsafe {
            libc::kill(pid, libc::SIGINT);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
