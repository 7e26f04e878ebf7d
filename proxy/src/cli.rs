//! The command line: `wasmgate run`, `wasmgate check`, `wasmgate demo`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use wasmgate_config::{Config, ParseOptions};

use crate::{builtin, server};

/// What `wasmgate --version` prints after the name: the version, then the build facts
/// (proxy/build_info.rs).
const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    "\ncommit: ",
    env!("WASMGATE_COMMIT"),
    "\nwasmtime: ",
    env!("WASMGATE_WASMTIME_VERSION"),
    "\npingora: ",
    env!("WASMGATE_PINGORA_VERSION"),
);

/// A reverse proxy that runs chains of proxy-wasm filters.
#[derive(Debug, Parser)]
#[command(name = "wasmgate", version, long_version = LONG_VERSION, about)]
pub struct Cli {
    /// How wasmgate writes its own log lines (to stderr): `text` or `json` (one JSON object
    /// per line).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

/// The format of wasmgate's own logs (`--log-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line: `timestamp`, `level`, `target`, `fields` (with `message`).
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the proxy with a configuration file. The file and every module it names are
    /// watched: a change reloads them with no restart (so do SIGHUP and POST /reload).
    Run {
        /// The configuration file.
        #[arg(short, long, default_value = "./wasmgate.yaml")]
        config: PathBuf,
        /// Do not watch the files; reload only on SIGHUP or POST /reload.
        #[arg(long)]
        no_watch: bool,
        /// Graceful binary upgrade: take over the listening sockets of the running wasmgate
        /// (through `upgrade_sock`), which hands them over and drains when sent SIGQUIT.
        #[arg(long)]
        upgrade: bool,
    },
    /// Check a configuration: parse it, compile and link every filter, start one VM of each and
    /// configure it. Prints one line per filter; exits 1 with the reason on any failure.
    Check {
        /// The configuration file.
        #[arg(short, long, default_value = "./wasmgate.yaml")]
        config: PathBuf,
    },
    /// Run a demo: the built-in add-header filter in front of a built-in echo origin.
    Demo {
        /// Where the proxy listens.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Where the echo origin listens.
        #[arg(long, default_value = "127.0.0.1:8081")]
        origin: SocketAddr,
        /// Where the admin endpoints listen.
        #[arg(long, default_value = "127.0.0.1:9901")]
        admin: SocketAddr,
    },
}

/// What the configuration parser needs to know of this binary: its built-in filters.
pub(crate) fn parse_options() -> ParseOptions {
    ParseOptions {
        builtin_filters: builtin::names(),
    }
}

fn load(path: &Path) -> Result<Config, String> {
    if !path.exists() {
        return Err(missing(path));
    }
    wasmgate_config::load(path, &parse_options()).map_err(|e| e.to_string())
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init(),
        LogFormat::Json => builder.json().with_ansi(false).try_init(),
    };
}

/// Runs the command line; the process's exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let result = match cli.command {
        Command::Run {
            config,
            no_watch,
            upgrade,
        } => run(config, !no_watch, upgrade),
        Command::Check { config } => check(&config),
        Command::Demo {
            listen,
            origin,
            admin,
        } => demo(listen, origin, admin),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run(path: PathBuf, watch: bool, upgrade: bool) -> Result<(), String> {
    if !path.exists() {
        return Err(missing(&path));
    }
    server::run(
        server::Source::File(path),
        server::RunOptions {
            demo_origin: None,
            watch,
            upgrade,
        },
    )
}

fn missing(path: &Path) -> String {
    format!(
        "no configuration file at {} (pass one with -c, try `wasmgate demo`, or start from config/examples/)",
        path.display()
    )
}

fn demo(listen: SocketAddr, origin: SocketAddr, admin: SocketAddr) -> Result<(), String> {
    let text = builtin::demo_config(&listen.to_string(), &origin.to_string(), &admin.to_string());
    eprintln!(
        "wasmgate demo: try `curl -i http://{listen}/hello` (metrics at http://{admin}/metrics)"
    );
    server::run(
        server::Source::Text {
            text,
            name: PathBuf::from("<demo>"),
        },
        server::RunOptions {
            demo_origin: Some(origin),
            ..Default::default()
        },
    )
}

/// `wasmgate check`: everything `run` does before it starts listening.
fn check(path: &Path) -> Result<(), String> {
    let mut config = load(path)?;
    // One VM per filter is enough to prove it starts and accepts its configuration.
    config.threads = Some(1);
    let runtime = server::runtime_for(&config)?;
    let generation = crate::generation::build(0, config, &runtime, 1).map_err(|e| e.to_string())?;
    for f in &generation.filters {
        let m = f.module();
        println!(
            "ok  {}  abi {}  {} bytes  sha256 {}  ({}, {})",
            f.name,
            m.abi(),
            m.size(),
            m.sha256_hex(),
            f.source,
            f.load.as_str()
        );
    }
    println!(
        "{}: {} filter(s), {} route(s), {} upstream(s): OK",
        path.display(),
        generation.filters.len(),
        generation.routes.len(),
        generation.config.upstreams.len()
    );
    Ok(())
}
