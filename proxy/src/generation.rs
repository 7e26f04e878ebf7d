//! A generation: everything a configuration file describes, built and ready to serve (compiled
//! filters with started VMs, chains per route, upstream pools). Requests hold the generation
//! they started on until they end.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use pingora::lb::{LoadBalancer, selection::RoundRobin};
use wasmgate_abi::{Chain, CompiledModule, FilterPool, LoadError, Plugin, PluginConfig, Runtime};
use wasmgate_config::{Config, Location, WasmSource};

use crate::builtin;

/// A filter of the configuration, compiled and started.
#[derive(Debug)]
pub struct LoadedFilter {
    pub name: String,
    /// Where the module came from: a path, or `builtin:NAME`.
    pub source: String,
    pub pool: Arc<FilterPool>,
}

impl LoadedFilter {
    pub fn module(&self) -> &Arc<CompiledModule> {
        self.pool.plugin().module()
    }
}

/// An upstream: its endpoints, balanced round robin.
pub struct Upstream {
    pub name: String,
    pub balancer: LoadBalancer<RoundRobin>,
}

impl fmt::Debug for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Upstream")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// A route with what it resolves to.
#[derive(Debug)]
pub struct RouteEntry {
    pub upstream: Arc<Upstream>,
    pub chain: Arc<Chain>,
}

/// One loaded configuration.
#[derive(Debug)]
pub struct Generation {
    pub id: u64,
    pub loaded_at: SystemTime,
    pub config: Config,
    pub filters: Vec<LoadedFilter>,
    pub routes: Vec<RouteEntry>,
}

impl Generation {
    /// The route for a request, first match in file order.
    pub fn route(&self, host: Option<&str>, path: &str) -> Option<&RouteEntry> {
        let (i, _) = self.config.route_for(host, path)?;
        self.routes.get(i)
    }
}

/// Why a configuration could not be built into a generation.
#[derive(Debug)]
pub struct BuildError {
    pub location: Option<Location>,
    pub what: String,
    pub message: String,
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(loc) = &self.location {
            write!(f, "{loc}: ")?;
        }
        write!(f, "{}: {}", self.what, self.message)
    }
}

impl std::error::Error for BuildError {}

/// Builds a generation: reads and compiles each filter's module (once per distinct module),
/// starts `vms_per_filter` VMs for each filter (running `proxy_on_vm_start` and
/// `proxy_on_configure`), and resolves upstreams. Slow work that belongs off the request path.
pub fn build(
    id: u64,
    config: Config,
    runtime: &Runtime,
    vms_per_filter: usize,
) -> Result<Generation, BuildError> {
    let mut modules: HashMap<Vec<u8>, Arc<CompiledModule>> = HashMap::new();
    let mut filters = Vec::with_capacity(config.filters.len());
    for f in &config.filters {
        let fail = |message: String| BuildError {
            location: Some(f.location.clone()),
            what: format!("filter {}", f.name),
            message,
        };
        let (bytes, source) = match &f.wasm {
            WasmSource::File(path) => {
                let bytes = std::fs::read(path)
                    .map_err(|e| fail(format!("cannot read {}: {e}", path.display())))?;
                (bytes, path.display().to_string())
            }
            WasmSource::Builtin(name) => {
                let bytes = builtin::wasm(name)
                    .ok_or_else(|| fail(format!("no built-in filter named {name}")))?;
                (bytes.to_vec(), format!("builtin:{name}"))
            }
        };
        let module = match modules.get(&bytes) {
            Some(m) => m.clone(),
            None => {
                let m = runtime
                    .compile(&bytes)
                    .map_err(|e| fail(format!("{source}: {e}")))?;
                modules.insert(bytes, m.clone());
                m
            }
        };
        let plugin = Plugin::new(
            module,
            PluginConfig {
                name: f.name.clone(),
                root_id: f.root_id.clone(),
                vm_id: f.vm_id.clone(),
                configuration: Bytes::from(f.configuration.clone()),
                vm_configuration: Bytes::from(f.vm_configuration.clone()),
                fail_open: f.fail_open,
                ..Default::default()
            },
        );
        let pool =
            FilterPool::new(plugin, vms_per_filter).map_err(|e: LoadError| fail(e.to_string()))?;
        filters.push(LoadedFilter {
            name: f.name.clone(),
            source,
            pool,
        });
    }

    let mut upstreams = HashMap::new();
    for u in &config.upstreams {
        let balancer = LoadBalancer::try_from_iter(u.endpoints.iter().map(String::as_str))
            .map_err(|e| BuildError {
                location: None,
                what: format!("upstream {}", u.name),
                message: format!("cannot resolve its endpoints: {e}"),
            })?;
        upstreams.insert(
            u.name.clone(),
            Arc::new(Upstream {
                name: u.name.clone(),
                balancer,
            }),
        );
    }

    let mut routes = Vec::with_capacity(config.routes.len());
    for r in &config.routes {
        let route_error = |message: String| BuildError {
            location: Some(r.location.clone()),
            what: "route".into(),
            message,
        };
        let upstream = upstreams
            .get(&r.upstream)
            .cloned()
            .ok_or_else(|| route_error(format!("unknown upstream {}", r.upstream)))?;
        let chain = r
            .filters
            .iter()
            .map(|name| {
                filters
                    .iter()
                    .find(|f| &f.name == name)
                    .map(|f| f.pool.clone())
                    .ok_or_else(|| route_error(format!("unknown filter {name}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        routes.push(RouteEntry {
            upstream,
            chain: Chain::new(chain),
        });
    }

    Ok(Generation {
        id,
        loaded_at: SystemTime::now(),
        config,
        filters,
        routes,
    })
}
