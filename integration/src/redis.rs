//! Starts `redis-server` and Webdis (Redis over HTTP, what the rate-limit filter's global mode
//! calls) from Debian's packages on free loopback ports, for the scale-out tests. Each is
//! killed when dropped.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::proxy::free_port;

/// Where `program` is on PATH, if it is installed.
pub fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

/// A server process started by a test.
#[derive(Debug)]
pub struct Server {
    child: Child,
    pub port: u16,
    log: PathBuf,
}

impl Server {
    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Kills the server now and waits for it to be gone.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Spawns `program args`, logging to `log`, and waits until `port` accepts connections.
fn spawn(program: &Path, args: &[String], port: u16, log: PathBuf) -> Server {
    let out = std::fs::File::create(&log).expect("log file");
    let err = out.try_clone().expect("log file");
    let child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {}: {e}", program.display()));
    let mut server = Server { child, port, log };
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(status)) = server.child.try_wait() {
            panic!("{} exited ({status}):\n{}", program.display(), server.log());
        }
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return server;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!(
        "{} did not listen on {port}:\n{}",
        program.display(),
        server.log()
    );
}

/// Starts `redis-server` on a free loopback port, with no persistence, logging into `dir`.
/// None if it is not installed.
pub fn start_redis(dir: &Path) -> Option<Server> {
    let program = which("redis-server")?;
    let port = free_port();
    let args: Vec<String> = [
        "--bind",
        "127.0.0.1",
        "--port",
        &port.to_string(),
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .chain([dir.display().to_string()])
    .collect();
    Some(spawn(&program, &args, port, dir.join("redis.log")))
}

/// Starts Webdis on a free loopback port in front of the Redis on `redis_port`, configured by
/// a file in `dir`. None if it is not installed.
pub fn start_webdis(dir: &Path, redis_port: u16) -> Option<Server> {
    let program = which("webdis")?;
    let port = free_port();
    let config = serde_json::json!({
        "redis_host": "127.0.0.1",
        "redis_port": redis_port,
        "http_host": "127.0.0.1",
        "http_port": port,
        "threads": 1,
        "daemonize": false,
        "database": 0,
        "verbosity": 3,
        "logfile": dir.join("webdis.log"),
    });
    let path = dir.join("webdis.json");
    std::fs::write(&path, config.to_string()).expect("write webdis.json");
    Some(spawn(
        &program,
        &[path.display().to_string()],
        port,
        dir.join("webdis.out"),
    ))
}

/// For a test that needs `program`, which is missing: under CI (`CI` set, as `.ci/run` does,
/// having installed it) that is a failure; elsewhere the test is skipped with this message.
pub fn missing(program: &str, package: &str) {
    let message = format!("`{program}` is not installed (apt-get install {package})");
    assert!(std::env::var_os("CI").is_none(), "{message}");
    eprintln!("SKIPPED: {message}");
}
