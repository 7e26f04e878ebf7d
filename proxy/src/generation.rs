//! A generation: everything a configuration file describes, built and ready to serve (compiled
//! filters with started VMs, chains per route, upstream pools). Requests hold the generation
//! they started on until they end.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use sha2::{Digest, Sha256};
use wasmgate_abi::{
    CacheStatus, CalloutHandler, Chain, CompiledModule, FilterPool, LoadError, Plugin,
    PluginConfig, Runtime,
};
use wasmgate_config::{Config, Location, WasmSource};

use crate::builtin;
use crate::callouts::Callouts;

/// A filter of the configuration, compiled and started.
#[derive(Debug)]
pub struct LoadedFilter {
    pub name: String,
    /// Where the module came from: a path, or `builtin:NAME`.
    pub source: String,
    pub pool: Arc<FilterPool>,
    /// How this generation got the filter's module and VMs.
    pub load: FilterLoad,
}

/// How a build got a filter's module and VMs, cheapest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FilterLoad {
    /// The module and every setting are unchanged: the previous generation's VMs (and the
    /// state the filter keeps in them) serve this one too.
    Kept,
    /// The module is unchanged (same SHA-256 as a module already loaded): new VMs only.
    Reused,
    /// Loaded from the disk cache of compiled modules, then new VMs.
    Cached,
    /// Compiled, then new VMs.
    Compiled,
}

impl FilterLoad {
    pub fn as_str(self) -> &'static str {
        match self {
            FilterLoad::Kept => "kept",
            FilterLoad::Reused => "reused",
            FilterLoad::Cached => "cached",
            FilterLoad::Compiled => "compiled",
        }
    }
}

/// A filter's module as read for a build.
#[derive(Debug, Clone)]
pub struct FilterSource {
    /// A path, or `builtin:NAME`.
    pub source: String,
    pub bytes: Cow<'static, [u8]>,
    pub sha256: [u8; 32],
}

impl LoadedFilter {
    pub fn module(&self) -> &Arc<CompiledModule> {
        self.pool.plugin().module()
    }
}

pub use crate::upstream::Upstream;

/// A route with what it resolves to.
#[derive(Debug)]
pub struct RouteEntry {
    /// Where its requests go, with their weights: one upstream, or a weighted split (see
    /// `routing::pick_upstream`); none for a route that answers itself.
    pub upstreams: Vec<(Arc<Upstream>, u32)>,
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
    /// Its upstreams, in file order.
    pub upstreams: Vec<Arc<Upstream>>,
    /// What it was built from: the SHA-256 of the configuration text and of every module
    /// (see `reload`); zero when not known. Equal fingerprints mean nothing to reload.
    pub fingerprint: [u8; 32],
}

impl Generation {
    /// This generation's filter of the same name, if its module has this SHA-256 and its
    /// settings are the same as `wanted`'s.
    fn unchanged_filter(
        &self,
        wanted: &wasmgate_config::Filter,
        sha256: &[u8; 32],
    ) -> Option<&LoadedFilter> {
        let (declared, loaded) = self
            .config
            .filters
            .iter()
            .zip(&self.filters)
            .find(|(declared, _)| declared.name == wanted.name)?;
        (loaded.module().sha256() == *sha256 && declared.same_settings(wanted)).then_some(loaded)
    }
}

/// Why a configuration could not be built into a generation.
#[derive(Debug)]
pub struct BuildError {
    pub location: Option<Location>,
    pub what: String,
    pub message: String,
    /// The filter at fault, if one is.
    pub filter: Option<String>,
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

/// Reads every filter's module: its file, or the bytes built into the binary.
pub fn read_sources(config: &Config) -> Result<Vec<FilterSource>, BuildError> {
    config
        .filters
        .iter()
        .map(|f| {
            let (bytes, source) = match &f.wasm {
                WasmSource::File(path) => {
                    let bytes = std::fs::read(path).map_err(|e| {
                        filter_error(f, format!("cannot read {}: {e}", path.display()))
                    })?;
                    (Cow::Owned(bytes), path.display().to_string())
                }
                WasmSource::Builtin(name) => {
                    let bytes = builtin::wasm(name).ok_or_else(|| {
                        filter_error(f, format!("no built-in filter named {name}"))
                    })?;
                    (Cow::Borrowed(bytes), format!("builtin:{name}"))
                }
            };
            let sha256 = Sha256::digest(&bytes).into();
            Ok(FilterSource {
                source,
                bytes,
                sha256,
            })
        })
        .collect()
}

fn filter_error(f: &wasmgate_config::Filter, message: String) -> BuildError {
    BuildError {
        location: Some(f.location.clone()),
        what: format!("filter {}", f.name),
        message,
        filter: Some(f.name.clone()),
    }
}

/// A filter's limits: the configured ones over the host's defaults.
fn limits(configured: &wasmgate_config::Limits) -> wasmgate_abi::Limits {
    let mut limits = wasmgate_abi::Limits::default();
    if let Some(ms) = configured.callback_deadline_ms {
        limits.callback_deadline = Duration::from_millis(ms);
    }
    if let Some(bytes) = configured.max_memory_bytes {
        limits.max_memory_bytes = usize::try_from(bytes).unwrap_or(usize::MAX);
    }
    if let Some(bytes) = configured.max_body_bytes {
        limits.max_body_bytes = usize::try_from(bytes).unwrap_or(usize::MAX);
    }
    limits
}

/// Whether two configurations describe the same upstreams, setting for setting.
fn same_upstreams(a: &Config, b: &Config) -> bool {
    a.upstreams.len() == b.upstreams.len()
        && a.upstreams
            .iter()
            .zip(&b.upstreams)
            .all(|(x, y)| x.same_settings(y))
}

/// Builds a generation: reads and compiles each filter's module (once per distinct module),
/// starts `vms_per_filter` VMs for each filter (running `proxy_on_vm_start` and
/// `proxy_on_configure`), and resolves upstreams. Slow work that belongs off the request path.
pub fn build(
    id: u64,
    config: Config,
    runtime: &Runtime,
    vms_per_filter: usize,
) -> Result<Generation, BuildError> {
    let sources = read_sources(&config)?;
    build_from(id, config, sources, runtime, vms_per_filter, None, &[])
}

/// Builds a generation from modules already read (`sources`, one per filter in order).
///
/// A module whose SHA-256 is that of a module already loaded (by the `previous` generation,
/// or in `known`, modules kept from earlier ones) is not compiled again, and a filter whose
/// module and settings are both unchanged since `previous` keeps its VMs (and their state).
/// Other modules come from the configured `cache_dir` when they are there, and are compiled
/// (and stored there) otherwise.
pub fn build_from(
    id: u64,
    config: Config,
    sources: Vec<FilterSource>,
    runtime: &Runtime,
    vms_per_filter: usize,
    previous: Option<&Generation>,
    known: &[Arc<CompiledModule>],
) -> Result<Generation, BuildError> {
    let mut modules: HashMap<[u8; 32], Arc<CompiledModule>> = HashMap::new();
    let loaded = previous
        .into_iter()
        .flat_map(|p| p.filters.iter().map(LoadedFilter::module));
    for m in known.iter().chain(loaded) {
        modules.insert(m.sha256(), m.clone());
    }
    let mut upstreams = HashMap::new();
    let mut upstream_list = Vec::with_capacity(config.upstreams.len());
    for u in &config.upstreams {
        let upstream = Upstream::build(u).map_err(|message| BuildError {
            location: Some(u.location.clone()),
            what: format!("upstream {}", u.name),
            message,
            filter: None,
        })?;
        let upstream = Arc::new(upstream);
        upstream_list.push(upstream.clone());
        upstreams.insert(u.name.clone(), upstream);
    }

    // Filters reach upstreams of this generation only, by name.
    let callouts: Arc<dyn CalloutHandler> = Arc::new(Callouts::new(upstreams.clone()));
    // A kept filter keeps the callout handler of the generation it was built in: only keep it
    // when the upstreams it can call are the same.
    let same_upstreams = previous.is_some_and(|p| same_upstreams(&p.config, &config));
    let mut filters = Vec::with_capacity(config.filters.len());
    for (f, source) in config.filters.iter().zip(sources) {
        let fail = |message: String| filter_error(f, message);
        if let Some(kept) = previous
            .filter(|_| same_upstreams)
            .and_then(|p| p.unchanged_filter(f, &source.sha256))
        {
            filters.push(LoadedFilter {
                name: f.name.clone(),
                source: source.source,
                pool: kept.pool.clone(),
                load: FilterLoad::Kept,
            });
            continue;
        }
        let (module, load) = match modules.get(&source.sha256) {
            Some(m) => (m.clone(), FilterLoad::Reused),
            None => {
                let timeout = f
                    .limits
                    .compile_timeout_ms
                    .map_or(runtime.config().compile_timeout, Duration::from_millis);
                let (m, cache) = runtime
                    .compile_cached_within(&source.bytes, config.cache_dir.as_deref(), timeout)
                    .map_err(|e| fail(format!("{}: {e}", source.source)))?;
                if cache != CacheStatus::Off {
                    metrics::counter!("wasmgate_module_cache_total", "result" => cache.as_str())
                        .increment(1);
                }
                modules.insert(source.sha256, m.clone());
                let load = if cache == CacheStatus::Hit {
                    FilterLoad::Cached
                } else {
                    FilterLoad::Compiled
                };
                (m, load)
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
                callouts: Some(callouts.clone()),
                limits: limits(&f.limits),
            },
        );
        let pool =
            FilterPool::new(plugin, vms_per_filter).map_err(|e: LoadError| fail(e.to_string()))?;
        filters.push(LoadedFilter {
            name: f.name.clone(),
            source: source.source,
            pool,
            load,
        });
    }

    let mut routes = Vec::with_capacity(config.routes.len());
    for r in &config.routes {
        let route_error = |message: String| BuildError {
            location: Some(r.location.clone()),
            what: "route".into(),
            message,
            filter: None,
        };
        let targets = r
            .upstreams()
            .into_iter()
            .map(|(name, weight)| {
                let upstream = upstreams.get(name).cloned();
                upstream
                    .map(|u| (u, weight))
                    .ok_or_else(|| route_error(format!("unknown upstream {name}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
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
            upstreams: targets,
            chain: Chain::new(chain),
        });
    }

    Ok(Generation {
        id,
        loaded_at: SystemTime::now(),
        config,
        filters,
        routes,
        upstreams: upstream_list,
        fingerprint: [0; 32],
    })
}
