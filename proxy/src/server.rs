//! Assembles and runs the Pingora server: the proxy service on every listen address, the admin
//! service, the reload triggers (SIGHUP, the file watcher), and (for the demo) the echo origin.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use pingora::server::Server;
use pingora::server::configuration::{Opt, ServerConf};
use pingora::services::background::background_service;
use pingora::services::listening::Service;
use wasmgate_abi::{Runtime, RuntimeConfig};
use wasmgate_config::Config;

use crate::admin::Admin;
use crate::reload::{self, Reloader, Snapshot};
use crate::service::{State, WasmGate};
use crate::watch::WatchService;

/// The upgrade socket when the configuration names none (`upgrade_sock:`).
pub const DEFAULT_UPGRADE_SOCK: &str = "/tmp/wasmgate_upgrade.sock";

/// How long a process started with `--upgrade` waits for the running one to hand over its
/// sockets (it gets them once that one receives `SIGQUIT`), in one-second attempts.
const UPGRADE_WAIT_ATTEMPTS: usize = 30;

/// Where the configuration comes from.
#[derive(Debug, Clone)]
pub enum Source {
    /// A file, which reloads re-read.
    File(PathBuf),
    /// Text with a name for errors (the demo); it cannot be reloaded.
    Text { text: String, name: PathBuf },
}

/// How `run` was asked to start.
#[derive(Debug, Default, Clone)]
pub struct RunOptions {
    /// Also serve the demo echo origin on this address.
    pub demo_origin: Option<SocketAddr>,
    /// Reload when the configuration file or one of its modules changes.
    pub watch: bool,
    /// Take over the listening sockets of a running wasmgate (graceful binary upgrade).
    pub upgrade: bool,
}

/// Worker threads: the configured number, else one per CPU.
pub fn worker_threads(config: &Config) -> usize {
    config.threads.unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    })
}

/// The wasm runtime for a configuration: enough pooled VM slots for every filter's VMs three
/// times over (during a reload the new generation is built while the running one serves, and
/// the one before may still be draining long requests), plus headroom for filters that later
/// reloads add.
pub fn runtime_for(config: &Config) -> Result<Runtime, String> {
    let vms = config.filters.len() * worker_threads(config);
    let max_vms = u32::try_from((vms * 3 + 64).max(128)).unwrap_or(u32::MAX);
    Runtime::new(RuntimeConfig {
        max_vms,
        ..Default::default()
    })
    .map_err(|e| format!("cannot start the wasm runtime: {e}"))
}

/// Fails early, with the address, if a listener cannot be bound: Pingora would otherwise
/// report it from deep inside its startup.
fn check_bind(addr: &SocketAddr, what: &str) -> Result<(), String> {
    TcpListener::bind(addr)
        .map(drop)
        .map_err(|e| format!("cannot listen on {addr} ({what}): {e}"))
}

/// Builds the first generation and runs the server until a signal stops it.
pub fn run(source: Source, options: RunOptions) -> Result<(), String> {
    let handle = crate::metrics::install().clone();
    let parse_options = crate::cli::parse_options();
    let (snapshot, path) = match source {
        Source::File(path) => (
            Snapshot::read(&path, &parse_options).map_err(|e| e.message)?,
            Some(path),
        ),
        Source::Text { text, name } => (Snapshot::from_text(&text, &name, &parse_options)?, None),
    };
    let config = snapshot.config.clone();
    let runtime = runtime_for(&config)?;
    let threads = worker_threads(&config);
    // When upgrading, the running process holds the listeners and hands them over.
    if !options.upgrade {
        for addr in &config.listen {
            check_bind(addr, "listen")?;
        }
        for tls in &config.listen_tls {
            check_bind(&tls.address, "listen_tls")?;
        }
        if let Some(addr) = &config.admin {
            check_bind(addr, "admin")?;
        }
    }
    if let Some(addr) = &options.demo_origin {
        check_bind(addr, "demo origin")?;
    }
    let generation = snapshot
        .build(1, &runtime, threads, None, &[])
        .map_err(|e| e.to_string())?;
    for f in &generation.filters {
        tracing::info!(
            filter = %f.name,
            abi = %f.module().abi(),
            sha256 = %f.module().sha256_hex(),
            vms = f.pool.len(),
            load = f.load.as_str(),
            "filter loaded"
        );
    }
    let state = State::new(generation);
    let reloader = Reloader::new(state.clone(), runtime, path, parse_options, threads);
    reload::catch_sighup_early()?;
    crate::access_log::catch_sigusr1()?;

    let upgrade_sock = config.upgrade_sock.as_ref().map_or_else(
        || DEFAULT_UPGRADE_SOCK.to_owned(),
        |p| p.display().to_string(),
    );
    let conf = ServerConf {
        threads,
        // A stop (SIGTERM) lets requests in flight finish, briefly.
        grace_period_seconds: Some(5),
        graceful_shutdown_timeout_seconds: Some(5),
        upgrade_sock: upgrade_sock.clone(),
        upgrade_sock_connect_accept_max_retries: Some(UPGRADE_WAIT_ATTEMPTS),
        // Pingora keeps one pool of idle upstream connections for the process.
        upstream_keepalive_pool_size: config
            .upstreams
            .iter()
            .map(|u| u.keepalive.max_idle)
            .max()
            .unwrap_or(128),
        ..ServerConf::default()
    };
    let opt = Opt {
        upgrade: options.upgrade,
        ..Opt::default()
    };
    let mut server = Server::new_with_opt_and_conf(opt, conf);
    if options.upgrade {
        tracing::info!(
            socket = %upgrade_sock,
            "upgrade: waiting for the running wasmgate's listening sockets; send it SIGQUIT"
        );
    }
    server.bootstrap();
    if options.upgrade {
        tracing::info!("upgrade: took over the listening sockets");
    }

    let mut app = pingora::proxy::http_proxy(
        &server.configuration,
        WasmGate {
            state: state.clone(),
        },
    );
    // Plaintext listeners also take HTTP/2 with prior knowledge (h2c); the HTTP/1.1
    // `Upgrade: h2c` dance is never honoured.
    let mut server_options = pingora::apps::HttpServerOptions::default();
    server_options.h2c = true;
    if config.client.keepalive_timeout_ms > 0 {
        server_options.h2_idle_timeout =
            Some(Duration::from_millis(config.client.keepalive_timeout_ms));
    }
    app.server_options = Some(server_options);
    app.h2_options = Some(crate::client::h2_options(&config.client));
    // Every connection goes through the client limits (`client:`) before Pingora's parser.
    let mut proxy = Service::new(
        "wasmgate proxy".into(),
        crate::client::Guarded::new(app, state.clone()),
    );
    for addr in &config.listen {
        proxy.add_tcp(&addr.to_string());
        tracing::info!(%addr, "proxy listening (HTTP/1.1, and HTTP/2 with prior knowledge)");
    }
    for tls in &config.listen_tls {
        let (cert, key) = (
            tls.cert.display().to_string(),
            tls.key.display().to_string(),
        );
        let mut settings = pingora::listeners::tls::TlsSettings::intermediate(&cert, &key)
            .map_err(|e| format!("TLS listener {}: {e}", tls.address))?;
        settings.enable_h2();
        proxy.add_tls_with_settings(&tls.address.to_string(), None, settings);
        tracing::info!(addr = %tls.address, "proxy listening (TLS: HTTP/1.1 and HTTP/2 by ALPN)");
    }
    server.add_service(proxy);

    if let Some(addr) = config.admin {
        let mut service = Service::new(
            "wasmgate admin".into(),
            Admin {
                state: state.clone(),
                metrics: handle,
                reloader: reloader.clone(),
            },
        );
        service.add_tcp(&addr.to_string());
        tracing::info!(%addr, "admin listening");
        server.add_service(service);
    }
    if let Some(addr) = options.demo_origin {
        let mut service = Service::new("demo origin".into(), crate::demo::EchoOrigin);
        service.add_tcp(&addr.to_string());
        tracing::info!(%addr, "demo origin listening");
        server.add_service(service);
    }
    server.add_service(background_service(
        "upstreams",
        crate::upstream::service::UpstreamService {
            state: state.clone(),
        },
    ));
    server.add_service(background_service(
        "reload",
        reload::ReloadService {
            reloader: reloader.clone(),
        },
    ));
    if options.watch && reloader.has_file() {
        server.add_service(background_service(
            "watch",
            WatchService {
                reloader: reloader.clone(),
            },
        ));
    }
    let _keep: Arc<State> = state;
    server.run_forever()
}
