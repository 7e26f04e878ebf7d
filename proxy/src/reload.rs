//! Hot reload: builds a new generation from the configuration file off the request path and
//! publishes it in one atomic swap, or keeps the running generation and says why.
//!
//! A reload reads the configuration file and every module it names (checking that none changed
//! while being read), skips the build when nothing changed, builds the new generation on the
//! calling (blocking) thread, reusing what the running one already loaded, and swaps it in. A
//! request keeps the generation it started on until it ends; replaced generations wait in a
//! list until no request holds them and are then dropped here, never on the request path.
//!
//! Reloads come from the file watcher (`watch`), `SIGHUP` ([`ReloadService`]) and
//! `POST /reload` (`admin`); they run one at a time.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use parking_lot::Mutex;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use wasmgate_abi::{CompiledModule, Runtime};
use wasmgate_config::{Config, ParseOptions, WasmSource};

use crate::generation::{self, FilterSource, Generation};
use crate::service::State;

/// How often replaced generations are checked for requests still using them.
const REAP_EVERY: Duration = Duration::from_millis(200);

/// Compiled modules kept after no generation uses them, so that a rollback (or a swap back
/// and forth) does not even read the disk cache: at most this many...
const RECENT_MODULES: usize = 8;
/// ...whose sources total at most this many bytes.
const RECENT_MODULE_BYTES: usize = 16 << 20;

/// What asked for a reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// A watched file changed.
    Watch,
    /// `SIGHUP`.
    Signal,
    /// `POST /reload` on the admin listener.
    Admin,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Watch => "watch",
            Trigger::Signal => "sighup",
            Trigger::Admin => "admin",
        }
    }
}

/// How a reload ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadResult {
    /// A new generation serves new requests.
    Ok,
    /// The configuration and every module are as running: nothing was built.
    Unchanged,
    /// The running generation stays; see the error.
    Error,
}

impl ReloadResult {
    pub fn as_str(self) -> &'static str {
        match self {
            ReloadResult::Ok => "ok",
            ReloadResult::Unchanged => "unchanged",
            ReloadResult::Error => "error",
        }
    }
}

/// What happened to one filter in a reload.
#[derive(Debug, Clone)]
pub struct FilterReport {
    pub name: String,
    /// `kept`, `reused`, `cached` or `compiled` (see [`generation::FilterLoad`]);
    /// `unchanged` when nothing was rebuilt; `failed` for the filter that failed the reload,
    /// `not_loaded` for the others then.
    pub status: &'static str,
    pub sha256: Option<String>,
    pub abi_version: Option<String>,
    pub vms: Option<usize>,
    pub error: Option<String>,
}

/// The outcome of one reload, as logged and as `POST /reload` returns it.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub result: ReloadResult,
    pub trigger: Trigger,
    /// The generation serving new requests after the reload.
    pub generation: u64,
    /// The generation that served them before.
    pub previous_generation: u64,
    pub duration: Duration,
    pub finished_at: SystemTime,
    pub filters: Vec<FilterReport>,
    /// Changes that were not applied, such as new listen addresses.
    pub warnings: Vec<String>,
    /// Why the reload failed: the file and line where the configuration says so.
    pub error: Option<String>,
}

impl Outcome {
    pub fn to_json(&self) -> Value {
        let filters: Vec<Value> = self
            .filters
            .iter()
            .map(|f| {
                json!({
                    "name": f.name,
                    "status": f.status,
                    "sha256": f.sha256,
                    "abi_version": f.abi_version,
                    "vms": f.vms,
                    "error": f.error,
                })
            })
            .collect();
        json!({
            "result": self.result.as_str(),
            "trigger": self.trigger.as_str(),
            "generation": self.generation,
            "previous_generation": self.previous_generation,
            "duration_ms": self.duration.as_secs_f64() * 1000.0,
            "finished_at_unix_ms": unix_ms(self.finished_at),
            "filters": filters,
            "warnings": self.warnings,
            "error": self.error,
        })
    }
}

pub(crate) fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// What a file looked like when it was read: a change between two looks means it was being
/// written while read.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    len: u64,
    modified: Option<SystemTime>,
    inode: u64,
}

fn stamp(path: &Path) -> Option<Stamp> {
    let meta = std::fs::metadata(path).ok()?;
    #[cfg(unix)]
    let inode = std::os::unix::fs::MetadataExt::ino(&meta);
    #[cfg(not(unix))]
    let inode = 0;
    Some(Stamp {
        len: meta.len(),
        modified: meta.modified().ok(),
        inode,
    })
}

/// A configuration and its modules, read and checked, ready to build.
#[derive(Debug)]
pub struct Snapshot {
    pub config: Config,
    pub sources: Vec<FilterSource>,
    /// SHA-256 of the configuration text and of each module.
    pub fingerprint: [u8; 32],
}

/// Why a snapshot could not be taken.
#[derive(Debug)]
pub struct SnapshotError {
    pub message: String,
    /// The configuration, when it could be parsed (it names the files to watch).
    pub config: Option<Box<Config>>,
}

impl Snapshot {
    /// Reads and parses the configuration file and reads every module it names. Fails if any
    /// of these files changed while it was being read: a writer is still at work, and its
    /// next change event triggers another reload.
    pub fn read(path: &Path, options: &ParseOptions) -> Result<Self, SnapshotError> {
        let fail = |message: String, config: Option<Box<Config>>| SnapshotError { message, config };
        let mut stamps = vec![(path.to_path_buf(), stamp(path))];
        let text = std::fs::read_to_string(path)
            .map_err(|e| fail(format!("cannot read {}: {e}", path.display()), None))?;
        let config = wasmgate_config::parse(&text, path, options)
            .map_err(|errors| fail(errors.to_string(), None))?;
        for f in &config.filters {
            if let WasmSource::File(wasm) = &f.wasm {
                stamps.push((wasm.clone(), stamp(wasm)));
            }
        }
        let sources = match generation::read_sources(&config) {
            Ok(sources) => sources,
            Err(e) => return Err(fail(e.to_string(), Some(Box::new(config)))),
        };
        for (file, before) in &stamps {
            if stamp(file) != *before {
                let message = format!(
                    "{} changed while it was being read; the reload waits for the next change",
                    file.display()
                );
                return Err(fail(message, Some(Box::new(config))));
            }
        }
        Ok(Snapshot::new(&text, config, sources))
    }

    /// A snapshot of a configuration given as text (the demo), with its modules.
    pub fn from_text(text: &str, name: &Path, options: &ParseOptions) -> Result<Self, String> {
        let config = wasmgate_config::parse(text, name, options).map_err(|e| e.to_string())?;
        let sources = generation::read_sources(&config).map_err(|e| e.to_string())?;
        Ok(Snapshot::new(text, config, sources))
    }

    fn new(text: &str, config: Config, sources: Vec<FilterSource>) -> Snapshot {
        let mut hash = Sha256::new();
        hash.update(Sha256::digest(text.as_bytes()));
        for s in &sources {
            hash.update(s.sha256);
        }
        // A certificate replaced on disk is a change to reload, even with the same text.
        for file in crate::upstream::tls_files(&config) {
            hash.update(file.as_os_str().as_encoded_bytes());
            if let Ok(bytes) = std::fs::read(&file) {
                hash.update(Sha256::digest(&bytes));
            }
        }
        Snapshot {
            config,
            sources,
            fingerprint: hash.finalize().into(),
        }
    }

    /// Builds this snapshot into generation `id`, reusing what `previous` loaded and the
    /// `known` modules.
    pub fn build(
        self,
        id: u64,
        runtime: &Runtime,
        vms_per_filter: usize,
        previous: Option<&Generation>,
        known: &[Arc<CompiledModule>],
    ) -> Result<Generation, generation::BuildError> {
        let mut built = generation::build_from(
            id,
            self.config,
            self.sources,
            runtime,
            vms_per_filter,
            previous,
            known,
        )?;
        built.fingerprint = self.fingerprint;
        Ok(built)
    }
}

/// What cannot change without a restart: the listeners, the worker threads, the upgrade socket.
#[derive(Debug, Clone)]
pub struct Fixed {
    pub listen: Vec<SocketAddr>,
    pub admin: Option<SocketAddr>,
    pub threads: Option<usize>,
    pub upgrade_sock: Option<PathBuf>,
}

impl Fixed {
    pub fn of(config: &Config) -> Fixed {
        Fixed {
            listen: config.listen.clone(),
            admin: config.admin,
            threads: config.threads,
            upgrade_sock: config.upgrade_sock.clone(),
        }
    }

    /// One warning per setting `config` changes that a reload cannot apply.
    fn warnings(&self, config: &Config) -> Vec<String> {
        let mut out = Vec::new();
        let restart = "needs a restart (or a graceful upgrade, `wasmgate run --upgrade`)";
        if config.listen != self.listen {
            out.push(format!(
                "listen changed to {:?}: still serving on {:?}; a new listen address {restart}",
                config.listen, self.listen
            ));
        }
        if config.admin != self.admin {
            out.push(format!(
                "admin changed to {:?}: still serving on {:?}; a new admin address {restart}",
                config.admin, self.admin
            ));
        }
        if config.threads != self.threads {
            out.push(format!(
                "threads changed to {:?}: still {:?}; the worker count {restart}",
                config.threads, self.threads
            ));
        }
        if config.upgrade_sock != self.upgrade_sock {
            out.push(format!("upgrade_sock changed: the new socket {restart}"));
        }
        out
    }
}

/// Builds and publishes generations; one per process.
#[derive(Debug)]
pub struct Reloader {
    state: Arc<State>,
    runtime: Runtime,
    /// The configuration file; `None` for the demo, which has none.
    path: Option<PathBuf>,
    options: ParseOptions,
    vms_per_filter: usize,
    fixed: Fixed,
    /// Held for the whole of a reload: reloads run one at a time.
    running: Mutex<()>,
    /// Replaced generations that requests may still hold.
    retired: Mutex<Vec<Arc<Generation>>>,
    /// The files of the last configuration parsed, for the watcher.
    files: Mutex<Vec<PathBuf>>,
    last: Mutex<Option<Outcome>>,
    /// The modules of the last generations, most recent last (see [`RECENT_MODULES`]).
    recent: Mutex<Vec<Arc<CompiledModule>>>,
}

impl Reloader {
    pub fn new(
        state: Arc<State>,
        runtime: Runtime,
        path: Option<PathBuf>,
        options: ParseOptions,
        vms_per_filter: usize,
    ) -> Arc<Reloader> {
        let current = state.current.load_full();
        let fixed = Fixed::of(&current.config);
        let files = path
            .as_deref()
            .map(|p| files_of(p, &current.config))
            .unwrap_or_default();
        metrics::gauge!("wasmgate_generation").set(current.id as f64);
        metrics::gauge!("wasmgate_generations_draining").set(0.0);
        let mut recent = Vec::new();
        remember(&mut recent, &current);
        Arc::new(Reloader {
            state,
            runtime,
            path,
            options,
            vms_per_filter,
            fixed,
            running: Mutex::new(()),
            retired: Mutex::new(Vec::new()),
            files: Mutex::new(files),
            last: Mutex::new(None),
            recent: Mutex::new(recent),
        })
    }

    /// The configuration file and the module files of the configuration last parsed (even if
    /// it failed to build): what the watcher watches.
    pub fn watched_files(&self) -> Vec<PathBuf> {
        self.files.lock().clone()
    }

    /// Whether there is a configuration file to reload from.
    pub fn has_file(&self) -> bool {
        self.path.is_some()
    }

    /// The outcome of the last reload, if any.
    pub fn last_outcome(&self) -> Option<Outcome> {
        self.last.lock().clone()
    }

    /// Replaced generations still held by requests in flight.
    pub fn draining(&self) -> usize {
        self.retired.lock().len()
    }

    /// Reloads on a blocking thread; the reload completes even if the caller goes away.
    pub async fn reload(self: &Arc<Self>, trigger: Trigger) -> Outcome {
        let this = self.clone();
        match tokio::task::spawn_blocking(move || this.reload_blocking(trigger)).await {
            Ok(outcome) => outcome,
            Err(e) => {
                let current = self.state.current.load().id;
                let message = format!("the reload task failed: {e}");
                tracing::error!(trigger = trigger.as_str(), "reload failed: {message}");
                metrics::counter!("wasmgate_reloads_total", "result" => "error").increment(1);
                Outcome {
                    result: ReloadResult::Error,
                    trigger,
                    generation: current,
                    previous_generation: current,
                    duration: Duration::ZERO,
                    finished_at: SystemTime::now(),
                    filters: Vec::new(),
                    warnings: Vec::new(),
                    error: Some(message),
                }
            }
        }
    }

    /// Reads, builds and publishes a new generation, on the calling thread (compiling can take
    /// seconds: never call this on a request thread). Waits for a reload already running.
    pub fn reload_blocking(&self, trigger: Trigger) -> Outcome {
        let _one_at_a_time = self.running.lock();
        let started = Instant::now();
        let current = self.state.current.load_full();
        let mut outcome = Outcome {
            result: ReloadResult::Error,
            trigger,
            generation: current.id,
            previous_generation: current.id,
            duration: Duration::ZERO,
            finished_at: SystemTime::now(),
            filters: Vec::new(),
            warnings: Vec::new(),
            error: None,
        };
        let next = match self.prepare(&current, &mut outcome) {
            Ok(None) => {
                outcome.result = ReloadResult::Unchanged;
                outcome.filters = reports(&current, true);
                None
            }
            Ok(Some(next)) => {
                outcome.result = ReloadResult::Ok;
                outcome.generation = next.id;
                outcome.filters = reports(&next, false);
                Some(next)
            }
            Err(message) => {
                outcome.error = Some(message);
                None
            }
        };
        drop(current);
        outcome.duration = started.elapsed();
        outcome.finished_at = SystemTime::now();
        // Recorded before the swap: whoever is served by the new generation also finds its
        // outcome in `GET /config`, the metrics and the log.
        self.record(&outcome);
        *self.last.lock() = Some(outcome.clone());
        if let Some(next) = next {
            remember(&mut self.recent.lock(), &next);
            let replaced = self.state.current.swap(Arc::new(next));
            self.retired.lock().push(replaced);
        }
        self.reap();
        outcome
    }

    /// The next generation; `None` when nothing changed.
    fn prepare(
        &self,
        current: &Generation,
        outcome: &mut Outcome,
    ) -> Result<Option<Generation>, String> {
        let Some(path) = &self.path else {
            return Err(
                "there is no configuration file to reload (the demo runs from built-in text)"
                    .into(),
            );
        };
        let snapshot = match Snapshot::read(path, &self.options) {
            Ok(snapshot) => snapshot,
            Err(e) => {
                if let Some(config) = &e.config {
                    *self.files.lock() = files_of(path, config);
                    outcome.filters = not_loaded(config, None, "");
                }
                return Err(e.message);
            }
        };
        *self.files.lock() = files_of(path, &snapshot.config);
        if snapshot.fingerprint == current.fingerprint {
            return Ok(None);
        }
        outcome.warnings = self.fixed.warnings(&snapshot.config);
        let declared = snapshot.config.clone();
        let known = self.recent.lock().clone();
        snapshot
            .build(
                current.id + 1,
                &self.runtime,
                self.vms_per_filter,
                Some(current),
                &known,
            )
            .map(Some)
            .map_err(|e| {
                let message = e.to_string();
                outcome.filters = not_loaded(&declared, e.filter.as_deref(), &message);
                message
            })
    }

    /// Logs and counts an outcome.
    fn record(&self, outcome: &Outcome) {
        let ms = outcome.duration.as_secs_f64() * 1000.0;
        let trigger = outcome.trigger.as_str();
        for warning in &outcome.warnings {
            tracing::warn!(trigger, "reload: {warning}");
        }
        match outcome.result {
            ReloadResult::Ok => {
                let how: Vec<String> = outcome
                    .filters
                    .iter()
                    .map(|f| format!("{}={}", f.name, f.status))
                    .collect();
                tracing::info!(
                    trigger,
                    generation = outcome.generation,
                    "reloaded in {ms:.1} ms: generation {} serves new requests ({})",
                    outcome.generation,
                    how.join(", ")
                );
                metrics::gauge!("wasmgate_generation").set(outcome.generation as f64);
            }
            ReloadResult::Unchanged => {
                tracing::info!(
                    trigger,
                    generation = outcome.generation,
                    "reload: configuration and modules unchanged; generation {} stays",
                    outcome.generation
                );
            }
            ReloadResult::Error => {
                tracing::error!(
                    trigger,
                    generation = outcome.generation,
                    "reload failed; generation {} keeps serving: {}",
                    outcome.generation,
                    outcome.error.as_deref().unwrap_or("unknown error")
                );
            }
        }
        metrics::counter!("wasmgate_reloads_total", "result" => outcome.result.as_str())
            .increment(1);
        metrics::gauge!("wasmgate_last_reload_duration_seconds")
            .set(outcome.duration.as_secs_f64());
    }

    /// Drops the replaced generations no request holds any more (their VMs and modules with
    /// them, unless the current generation shares them). Returns how many are still held.
    pub fn reap(&self) -> usize {
        let done: Vec<Arc<Generation>>;
        let left;
        {
            let mut retired = self.retired.lock();
            let (free, held): (Vec<_>, Vec<_>) = std::mem::take(&mut *retired)
                .into_iter()
                .partition(|g| Arc::strong_count(g) == 1);
            done = free;
            *retired = held;
            left = retired.len();
        }
        let current = self.state.current.load();
        for g in &done {
            tracing::debug!(generation = g.id, "replaced generation drained; freeing it");
            // Filters the current generation kept are still in use; the others' root contexts
            // end now (proxy_on_done, then proxy_on_delete).
            for f in &g.filters {
                let kept = current
                    .filters
                    .iter()
                    .any(|c| Arc::ptr_eq(&c.pool, &f.pool));
                if !kept {
                    f.pool.retire(ROOT_DONE_GRACE);
                }
            }
        }
        drop(done);
        metrics::gauge!("wasmgate_generations_draining").set(left as f64);
        left
    }
}

/// Adds a generation's modules to the recent ones (moving those already there to the end),
/// then forgets the oldest beyond [`RECENT_MODULES`] and [`RECENT_MODULE_BYTES`].
fn remember(recent: &mut Vec<Arc<CompiledModule>>, generation: &Generation) {
    for f in &generation.filters {
        let module = f.module();
        recent.retain(|m| m.sha256() != module.sha256());
        recent.push(module.clone());
    }
    while recent.len() > RECENT_MODULES
        || recent.iter().map(|m| m.size()).sum::<usize>() > RECENT_MODULE_BYTES
    {
        recent.remove(0);
    }
}

/// The configuration file and every module and upstream TLS file it names.
fn files_of(path: &Path, config: &Config) -> Vec<PathBuf> {
    let mut files = vec![path.to_path_buf()];
    let modules = config.filters.iter().filter_map(|f| match &f.wasm {
        WasmSource::File(wasm) => Some(wasm.clone()),
        WasmSource::Builtin(_) => None,
    });
    for file in modules.chain(crate::upstream::tls_files(config)) {
        if !files.contains(&file) {
            files.push(file);
        }
    }
    files
}

/// One report per filter of a built generation.
fn reports(generation: &Generation, unchanged: bool) -> Vec<FilterReport> {
    generation
        .filters
        .iter()
        .map(|f| FilterReport {
            name: f.name.clone(),
            status: if unchanged {
                "unchanged"
            } else {
                f.load.as_str()
            },
            sha256: Some(f.module().sha256_hex()),
            abi_version: Some(f.module().abi().to_string()),
            vms: Some(f.pool.len()),
            error: None,
        })
        .collect()
}

/// Reports for a configuration that failed to build: `failed` for the filter at fault.
fn not_loaded(config: &Config, failed: Option<&str>, error: &str) -> Vec<FilterReport> {
    config
        .filters
        .iter()
        .map(|f| {
            let at_fault = failed == Some(f.name.as_str());
            FilterReport {
                name: f.name.clone(),
                status: if at_fault { "failed" } else { "not_loaded" },
                sha256: None,
                abi_version: None,
                vms: None,
                error: at_fault.then(|| error.to_owned()),
            }
        })
        .collect()
}

/// Installs wasmgate's `SIGHUP` handler now, so that a `SIGHUP` arriving before
/// [`ReloadService`] runs is ignored instead of killing the process (its default action).
/// Pingora handles `SIGINT`, `SIGTERM` and `SIGQUIT`, but not `SIGHUP`.
pub fn catch_sighup_early() -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot install the SIGHUP handler: {e}"))?;
    // The handler tokio installs stays for the life of the process.
    runtime
        .block_on(async {
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).map(drop)
        })
        .map_err(|e| format!("cannot install the SIGHUP handler: {e}"))
}

/// How long a retiring filter's root context may take to call `proxy_done` after asking to
/// finish later.
const ROOT_DONE_GRACE: Duration = Duration::from_secs(5);

/// Reloads on `SIGHUP`, and frees replaced generations once drained.
#[derive(Debug)]
pub struct ReloadService {
    pub reloader: Arc<Reloader>,
}

#[async_trait]
impl BackgroundService for ReloadService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hangup = match signal(SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::error!("cannot listen for SIGHUP, reload with POST /reload: {e}");
                None
            }
        };
        let mut reap = tokio::time::interval(REAP_EVERY);
        reap.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let hup = async {
                match hangup.as_mut() {
                    Some(s) => s.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = shutdown.changed() => return,
                Some(()) = hup => {
                    tracing::info!("SIGHUP: reloading the configuration");
                    self.reloader.reload(Trigger::Signal).await;
                }
                _ = reap.tick() => {
                    let reloader = self.reloader.clone();
                    let _ = tokio::task::spawn_blocking(move || reloader.reap()).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
