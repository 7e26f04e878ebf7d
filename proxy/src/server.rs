//! Assembles and runs the Pingora server: the proxy service on every listen address, the admin
//! service, and (for the demo) the echo origin.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;

use pingora::server::Server;
use pingora::server::configuration::ServerConf;
use pingora::services::listening::Service;
use wasmgate_abi::{Runtime, RuntimeConfig};
use wasmgate_config::Config;

use crate::admin::Admin;
use crate::generation;
use crate::service::{State, WasmGate};

/// How `run` was asked to start.
#[derive(Debug, Default, Clone)]
pub struct RunOptions {
    /// Also serve the demo echo origin on this address.
    pub demo_origin: Option<SocketAddr>,
}

/// Worker threads: the configured number, else one per CPU.
pub fn worker_threads(config: &Config) -> usize {
    config.threads.unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    })
}

/// The wasm runtime for a configuration: enough pooled VM slots for every filter's VMs, twice
/// over (a reload runs two generations side by side), plus headroom.
pub fn runtime_for(config: &Config) -> Result<Runtime, String> {
    let vms = config.filters.len() * worker_threads(config);
    let max_vms = u32::try_from((vms * 2 + 16).max(64)).unwrap_or(u32::MAX);
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
pub fn run(config: Config, options: RunOptions) -> Result<(), String> {
    let handle = crate::metrics::install().clone();
    let runtime = runtime_for(&config)?;
    let threads = worker_threads(&config);
    for addr in &config.listen {
        check_bind(addr, "listen")?;
    }
    if let Some(addr) = &config.admin {
        check_bind(addr, "admin")?;
    }
    if let Some(addr) = &options.demo_origin {
        check_bind(addr, "demo origin")?;
    }
    let listen = config.listen.clone();
    let admin = config.admin;
    let generation = generation::build(1, config, &runtime, threads).map_err(|e| e.to_string())?;
    for f in &generation.filters {
        tracing::info!(
            filter = %f.name,
            abi = %f.module().abi(),
            sha256 = %f.module().sha256_hex(),
            vms = f.pool.len(),
            "filter loaded"
        );
    }
    let state = State::new(generation);

    let conf = ServerConf {
        threads,
        // A stop (SIGTERM) lets requests in flight finish, briefly.
        grace_period_seconds: Some(5),
        graceful_shutdown_timeout_seconds: Some(5),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();

    let mut proxy = pingora::proxy::http_proxy_service_with_name(
        &server.configuration,
        WasmGate {
            state: state.clone(),
        },
        "wasmgate proxy",
    );
    for addr in &listen {
        proxy.add_tcp(&addr.to_string());
        tracing::info!(%addr, "proxy listening");
    }
    server.add_service(proxy);

    if let Some(addr) = admin {
        let mut service = Service::new(
            "wasmgate admin".into(),
            Admin {
                state: state.clone(),
                metrics: handle,
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
    let _keep: Arc<State> = state;
    server.run_forever()
}
