//! Loading filters into the real host: the harness, its builder, and load errors.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::Method;
use parking_lot::Mutex;
use wasmgate_abi::{
    CalloutError, Chain, FilterPool, Limits, LoadError, Plugin, PluginConfig, Runtime,
    RuntimeConfig,
};

use super::callout::{Answer, Callout, TestUpstreams};
use super::exchange::RequestBuilder;
use super::logs::{Capture, Logs};
use super::message::{Request, Response};

/// Where a filter's module comes from.
#[derive(Debug, Clone)]
pub enum Wasm {
    /// A `.wasm` (or `.wat`) file, read when the harness is built.
    File(PathBuf),
    /// The module's bytes: binary wasm, or WAT text.
    Bytes(Bytes),
}

impl From<&str> for Wasm {
    fn from(path: &str) -> Wasm {
        Wasm::File(path.into())
    }
}

impl From<String> for Wasm {
    fn from(path: String) -> Wasm {
        Wasm::File(path.into())
    }
}

impl From<&Path> for Wasm {
    fn from(path: &Path) -> Wasm {
        Wasm::File(path.into())
    }
}

impl From<PathBuf> for Wasm {
    fn from(path: PathBuf) -> Wasm {
        Wasm::File(path)
    }
}

impl From<&PathBuf> for Wasm {
    fn from(path: &PathBuf) -> Wasm {
        Wasm::File(path.clone())
    }
}

impl From<Vec<u8>> for Wasm {
    fn from(bytes: Vec<u8>) -> Wasm {
        Wasm::Bytes(bytes.into())
    }
}

impl From<&[u8]> for Wasm {
    fn from(bytes: &[u8]) -> Wasm {
        Wasm::Bytes(Bytes::copy_from_slice(bytes))
    }
}

impl From<Bytes> for Wasm {
    fn from(bytes: Bytes) -> Wasm {
        Wasm::Bytes(bytes)
    }
}

/// A configuration buffer (plugin or VM configuration), as the proxy passes it: a string as
/// is, JSON as its bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Configuration(Bytes);

impl Configuration {
    /// An empty configuration (what a filter without `configuration:` gets).
    pub fn empty() -> Configuration {
        Configuration::default()
    }

    /// The bytes the filter reads.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl From<&str> for Configuration {
    fn from(text: &str) -> Configuration {
        Configuration(Bytes::copy_from_slice(text.as_bytes()))
    }
}

impl From<String> for Configuration {
    fn from(text: String) -> Configuration {
        Configuration(text.into())
    }
}

impl From<&[u8]> for Configuration {
    fn from(bytes: &[u8]) -> Configuration {
        Configuration(Bytes::copy_from_slice(bytes))
    }
}

impl<const N: usize> From<&[u8; N]> for Configuration {
    fn from(bytes: &[u8; N]) -> Configuration {
        Configuration(Bytes::copy_from_slice(bytes))
    }
}

impl From<Vec<u8>> for Configuration {
    fn from(bytes: Vec<u8>) -> Configuration {
        Configuration(bytes.into())
    }
}

impl From<Bytes> for Configuration {
    fn from(bytes: Bytes) -> Configuration {
        Configuration(bytes)
    }
}

impl From<serde_json::Value> for Configuration {
    /// JSON, serialized compactly: what the proxy passes for a YAML mapping or list.
    fn from(value: serde_json::Value) -> Configuration {
        Configuration(value.to_string().into())
    }
}

impl From<&serde_json::Value> for Configuration {
    fn from(value: &serde_json::Value) -> Configuration {
        Configuration(value.to_string().into())
    }
}

/// One filter of the chain, with everything wasmgate's configuration file can say about it.
#[derive(Debug, Clone)]
pub struct Filter {
    wasm: Wasm,
    name: Option<String>,
    configuration: Configuration,
    vm_configuration: Configuration,
    root_id: String,
    vm_id: String,
    fail_open: bool,
    limits: Limits,
    upstreams: Vec<(String, Answer)>,
}

impl Filter {
    /// A filter from this module, with an empty configuration and the host's default limits.
    pub fn new(wasm: impl Into<Wasm>) -> Filter {
        Filter {
            wasm: wasm.into(),
            name: None,
            configuration: Configuration::empty(),
            vm_configuration: Configuration::empty(),
            root_id: String::new(),
            vm_id: String::new(),
            fail_open: false,
            limits: Limits::default(),
            upstreams: Vec::new(),
        }
    }

    /// The filter's name: the `plugin_name` property, and the name in logs and failures.
    /// By default this is the module file's stem (`add_header` for `add_header.wasm`), or
    /// `filter-N` (its 1-based position) for a module given as bytes; a default name already
    /// taken gets `-2`, `-3`, … appended.
    pub fn name(mut self, name: impl Into<String>) -> Filter {
        self.name = Some(name.into());
        self
    }

    /// The plugin configuration, read by the filter in `on_configure`.
    pub fn configuration(mut self, configuration: impl Into<Configuration>) -> Filter {
        self.configuration = configuration.into();
        self
    }

    /// The VM configuration, read by the filter in `on_vm_start`.
    pub fn vm_configuration(mut self, configuration: impl Into<Configuration>) -> Filter {
        self.vm_configuration = configuration.into();
        self
    }

    /// The root id (`plugin_root_id`), which SDKs use to pick a root context. By default
    /// this is empty.
    pub fn root_id(mut self, root_id: impl Into<String>) -> Filter {
        self.root_id = root_id.into();
        self
    }

    /// The VM id (`plugin_vm_id`). By default this is empty.
    pub fn vm_id(mut self, vm_id: impl Into<String>) -> Filter {
        self.vm_id = vm_id.into();
        self
    }

    /// Skip this filter when it fails, instead of failing the request with 503. By default
    /// this is `false`.
    pub fn fail_open(mut self, fail_open: bool) -> Filter {
        self.fail_open = fail_open;
        self
    }

    /// The filter's resource limits (callback deadline, memory, …). By default these are the
    /// host's defaults, as in the proxy.
    pub fn limits(mut self, limits: Limits) -> Filter {
        self.limits = limits;
        self
    }

    /// An upstream this filter may call (`proxy_http_call`, `dispatch_http_call` in the Rust
    /// SDK), played by the test: `answer` gets each request and returns the response, or a
    /// [`CalloutError`] (`Failed` for a reset or refused connection, `Timeout`). The answer
    /// reaches the filter's `on_http_call_response` as from a real upstream, and a stream the
    /// filter paused meanwhile is resumed as in the proxy. Calls are recorded
    /// ([`Harness::callouts`]). By default a filter may call no upstream: its calls get
    /// `BadArgument`, as for an unknown upstream in the proxy.
    ///
    /// ```no_run
    /// # use wasmgate_sdk::testing::{Filter, Response};
    /// let filter = Filter::new("ext_auth.wasm").upstream("auth", |request| {
    ///     assert_eq!(request.path(), "/check");
    ///     Ok(Response::new(200).with_header("x-user", "alice"))
    /// });
    /// ```
    pub fn upstream(
        mut self,
        name: impl Into<String>,
        answer: impl Fn(&Request) -> Result<Response, CalloutError> + Send + Sync + 'static,
    ) -> Filter {
        self.upstreams.push((name.into(), Answer::new(answer)));
        self
    }
}

/// Why a harness could not be built.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The builder was given no filter.
    NoFilters,
    /// Two filters were given the same name.
    DuplicateName(String),
    /// A module file could not be read.
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// The host refused a module or its VM would not start: compile, validation and link
    /// errors, a trap in `_initialize` or `on_vm_start`, `on_configure` returning false.
    Load {
        /// The filter's name.
        filter: String,
        /// The host's error, as `wasmgate check` reports it.
        error: LoadError,
        /// What the filter logged while starting (on a rejected configuration, usually why).
        log: Logs,
    },
    /// The wasm runtime itself could not start.
    Runtime(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoFilters => f.write_str("no filter given to the harness"),
            Self::DuplicateName(name) => write!(f, "two filters are named {name}"),
            Self::Read { path, error } => write!(f, "cannot read {}: {error}", path.display()),
            Self::Load { filter, error, log } => {
                write!(f, "filter {filter}: {error}")?;
                if !log.is_empty() {
                    write!(f, "\nthe filter logged:\n{log}")?;
                }
                Ok(())
            }
            Self::Runtime(message) => write!(f, "cannot start the wasm runtime: {message}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Read { error, .. } => Some(error),
            Self::Load { error, .. } => Some(error),
            _ => None,
        }
    }
}

/// The directory of compiled modules the harnesses of a test binary share: `wasmgate-sdk-cache`
/// in the target directory (next to `deps/`, where cargo puts test binaries), so that a
/// module is compiled once, not once per test or per run. `None` elsewhere.
fn default_cache_dir() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let deps = exe.parent()?;
    if deps.file_name()? != "deps" {
        return None;
    }
    Some(deps.parent()?.join("wasmgate-sdk-cache"))
}

/// Builds a [`Harness`]: the filters of the chain, in order.
#[derive(Debug, Clone)]
#[must_use = "call .build() to load the filters"]
pub struct HarnessBuilder {
    filters: Vec<Filter>,
    echo_logs: bool,
    pause_timeout: Duration,
    cache_dir: Option<PathBuf>,
}

/// How long an exchange waits for a paused stream to be resumed, by default.
const PAUSE_TIMEOUT: Duration = Duration::from_secs(1);

impl HarnessBuilder {
    /// Appends a filter from `wasm` with this plugin configuration; see [`Filter`] for the
    /// defaults of everything else.
    pub fn filter(self, wasm: impl Into<Wasm>, configuration: impl Into<Configuration>) -> Self {
        self.add_filter(Filter::new(wasm).configuration(configuration))
    }

    /// Appends a filter described in full.
    pub fn add_filter(mut self, filter: Filter) -> Self {
        self.filters.push(filter);
        self
    }

    /// Whether guest log lines are also printed to stderr as they are logged (which
    /// `cargo test` shows only for failing tests). By default this is `true`.
    pub fn echo_logs(mut self, echo: bool) -> Self {
        self.echo_logs = echo;
        self
    }

    /// How long an exchange waits for a filter that paused the stream to resume it (from a
    /// callout's answer, a tick, a queue) before it gives up
    /// ([`Outcome::Paused`](super::Outcome::Paused); the proxy waits 60 s, then answers 504).
    /// By default this is 1 s.
    pub fn pause_timeout(mut self, timeout: Duration) -> Self {
        self.pause_timeout = timeout;
        self
    }

    /// Where compiled modules are cached between harnesses and test runs (the host's cache:
    /// artifacts it wrote and verifies itself), or `None` to compile every time. By default
    /// this is `wasmgate-sdk-cache` in the cargo target directory.
    pub fn cache_dir(mut self, dir: Option<PathBuf>) -> Self {
        self.cache_dir = dir;
        self
    }

    /// Starts a host of its own (its own runtime, so that shared data, queues and metrics are
    /// this harness's alone), compiles every module (or takes it from the cache), starts one
    /// VM per filter — running `_initialize`, `on_vm_start` and `on_configure`, as the proxy
    /// does at load — and chains them.
    ///
    /// # Errors
    ///
    /// [`Error::Load`] with the host's message when a module is refused or a VM does not start
    /// (including `on_configure` returning false), with what the filter logged meanwhile;
    /// [`Error::Read`], [`Error::NoFilters`], [`Error::DuplicateName`].
    pub fn build(self) -> Result<Harness, Error> {
        if self.filters.is_empty() {
            return Err(Error::NoFilters);
        }
        let capture = Arc::new(Capture::new(self.echo_logs));
        let names = names(&self.filters)?;
        let config = RuntimeConfig {
            // A harness starts a few VMs: allocate them on demand rather than reserve a pool.
            pooling: false,
            log: capture.clone(),
            ..RuntimeConfig::default()
        };
        let runtime = Runtime::new(config).map_err(|e| Error::Runtime(format!("{e:#}")))?;
        let callouts = Arc::new(Mutex::new(Vec::new()));
        let mut pools = Vec::with_capacity(self.filters.len());
        for (filter, name) in self.filters.into_iter().zip(names) {
            let bytes = match filter.wasm {
                Wasm::Bytes(bytes) => bytes,
                Wasm::File(path) => match std::fs::read(&path) {
                    Ok(bytes) => bytes.into(),
                    Err(error) => return Err(Error::Read { path, error }),
                },
            };
            let load_error = |error: LoadError| Error::Load {
                filter: name.clone(),
                error,
                log: capture.snapshot().of_filter(&name),
            };
            let (module, _) = runtime
                .compile_cached(&bytes, self.cache_dir.as_deref())
                .map_err(load_error)?;
            #[allow(
                clippy::needless_update,
                reason = "PluginConfig grows; fields the harness does not know take their defaults"
            )]
            let config = PluginConfig {
                name: name.clone(),
                root_id: filter.root_id,
                vm_id: filter.vm_id,
                configuration: filter.configuration.0,
                vm_configuration: filter.vm_configuration.0,
                limits: filter.limits,
                fail_open: filter.fail_open,
                callouts: (!filter.upstreams.is_empty()).then(|| {
                    Arc::new(TestUpstreams {
                        filter: name.clone(),
                        upstreams: filter.upstreams,
                        record: callouts.clone(),
                    }) as _
                }),
                ..PluginConfig::default()
            };
            let plugin = Plugin::new(module, config);
            // One VM: the harness is one worker thread of the proxy.
            pools.push(FilterPool::new(plugin, 1).map_err(load_error)?);
        }
        Ok(Harness {
            inner: Arc::new(Inner {
                chain: Chain::new(pools),
                capture,
                runtime,
                callouts,
                next_stream: AtomicU64::new(1),
                pause_timeout: self.pause_timeout,
            }),
        })
    }
}

/// The names of the filters: explicit ones as given, defaults made unique.
fn names(filters: &[Filter]) -> Result<Vec<String>, Error> {
    let mut taken: Vec<String> = Vec::with_capacity(filters.len());
    for filter in filters {
        if let Some(name) = &filter.name {
            if taken.contains(name) {
                return Err(Error::DuplicateName(name.clone()));
            }
            taken.push(name.clone());
        }
    }
    let mut names = Vec::with_capacity(filters.len());
    for (i, filter) in filters.iter().enumerate() {
        if let Some(name) = &filter.name {
            names.push(name.clone());
            continue;
        }
        let base = match &filter.wasm {
            Wasm::File(path) => path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| format!("filter-{}", i + 1)),
            Wasm::Bytes(_) => format!("filter-{}", i + 1),
        };
        let mut name = base.clone();
        let mut n = 2;
        while taken.contains(&name) {
            name = format!("{base}-{n}");
            n += 1;
        }
        taken.push(name.clone());
        names.push(name);
    }
    Ok(names)
}

/// What a harness and its exchanges share.
#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) chain: Arc<Chain>,
    pub(crate) capture: Arc<Capture>,
    runtime: Runtime,
    callouts: Arc<Mutex<Vec<Callout>>>,
    next_stream: AtomicU64,
    pub(crate) pause_timeout: Duration,
}

impl Inner {
    pub(crate) fn next_stream_id(&self) -> u64 {
        self.next_stream.fetch_add(1, Ordering::Relaxed)
    }
}

/// A chain of filters loaded into the real wasmgate host, ready to take requests.
///
/// Each harness is a host of its own: its own runtime (shared data, queues and metrics), VMs
/// and log, so tests that run in parallel do not see each other. Cheap to clone; clones share
/// all of it. Exchanges may run concurrently (from several tasks); calls into a filter's VM
/// are serialized, as in one proxy worker.
#[derive(Debug, Clone)]
pub struct Harness {
    inner: Arc<Inner>,
}

impl Harness {
    /// A builder with no filters.
    pub fn builder() -> HarnessBuilder {
        HarnessBuilder {
            filters: Vec::new(),
            echo_logs: true,
            pause_timeout: PAUSE_TIMEOUT,
            cache_dir: default_cache_dir(),
        }
    }

    /// One filter from `wasm` with this configuration: `Harness::builder().filter(wasm,
    /// configuration).build()`.
    ///
    /// # Errors
    ///
    /// As [`HarnessBuilder::build`].
    pub fn load(
        wasm: impl Into<Wasm>,
        configuration: impl Into<Configuration>,
    ) -> Result<Harness, Error> {
        Harness::builder().filter(wasm, configuration).build()
    }

    /// A request with this method and path (path and query, e.g. `/a?b=1`), with authority
    /// `example.com` and scheme `http` until the builder says otherwise.
    ///
    /// # Panics
    ///
    /// If `method` is not a valid HTTP method.
    pub fn request(&self, method: &str, path: &str) -> RequestBuilder {
        let method = Method::from_bytes(method.as_bytes())
            .unwrap_or_else(|e| panic!("invalid HTTP method {method:?}: {e}"));
        RequestBuilder::new(self.inner.clone(), method, path)
    }

    /// A GET request; see [`Harness::request`].
    pub fn get(&self, path: &str) -> RequestBuilder {
        RequestBuilder::new(self.inner.clone(), Method::GET, path)
    }

    /// A HEAD request; see [`Harness::request`].
    pub fn head(&self, path: &str) -> RequestBuilder {
        RequestBuilder::new(self.inner.clone(), Method::HEAD, path)
    }

    /// A POST request; see [`Harness::request`].
    pub fn post(&self, path: &str) -> RequestBuilder {
        RequestBuilder::new(self.inner.clone(), Method::POST, path)
    }

    /// A PUT request; see [`Harness::request`].
    pub fn put(&self, path: &str) -> RequestBuilder {
        RequestBuilder::new(self.inner.clone(), Method::PUT, path)
    }

    /// A DELETE request; see [`Harness::request`].
    pub fn delete(&self, path: &str) -> RequestBuilder {
        RequestBuilder::new(self.inner.clone(), Method::DELETE, path)
    }

    /// Every line the filters logged since the harness was built (or since
    /// [`Harness::clear_logs`]), `on_vm_start` and `on_configure` included.
    pub fn logs(&self) -> Logs {
        self.inner.capture.snapshot()
    }

    /// Every call the filters made to the upstreams the test plays ([`Filter::upstream`]), in
    /// order.
    pub fn callouts(&self) -> Vec<Callout> {
        self.inner.callouts.lock().clone()
    }

    /// Forgets the lines logged so far.
    pub fn clear_logs(&self) {
        self.inner.capture.clear();
    }

    /// The filters' names, in chain order.
    pub fn filter_names(&self) -> Vec<String> {
        self.inner
            .chain
            .filters()
            .iter()
            .map(|pool| pool.plugin().info().name.clone())
            .collect()
    }

    /// The host's chain, for what the harness does not show: each filter's pool, its VM
    /// statistics (`faults`, `rebuilds`), its compiled module.
    pub fn chain(&self) -> &Arc<Chain> {
        &self.inner.chain
    }

    /// The value of the metric `name` that filter `filter` defined (`proxy_define_metric`),
    /// if it exists.
    pub fn metric(&self, filter: &str, name: &str) -> Option<u64> {
        self.inner.runtime.shared().metric_value(filter, name)
    }

    /// The harness's own host runtime, for what the harness does not show: the shared data,
    /// queues and metrics its filters wrote.
    pub fn runtime(&self) -> &Runtime {
        &self.inner.runtime
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(path: &str) -> Filter {
        Filter::new(path)
    }

    #[test]
    fn default_names_come_from_the_file_and_are_made_unique() {
        let filters = [
            filter("dir/testkit.wasm"),
            filter("other/testkit.wasm"),
            Filter::new(b"(module)".as_slice()),
            filter("x.wasm").name("testkit-3"),
            filter("testkit.wasm"),
        ];
        assert_eq!(
            names(&filters).unwrap(),
            ["testkit", "testkit-2", "filter-3", "testkit-3", "testkit-4"]
        );
    }

    #[test]
    fn explicit_names_must_be_unique() {
        let filters = [filter("a.wasm").name("x"), filter("b.wasm").name("x")];
        assert!(matches!(names(&filters), Err(Error::DuplicateName(n)) if n == "x"));
    }

    #[test]
    fn json_configuration_is_compact() {
        let config = Configuration::from(serde_json::json!({"a": [1, "b"]}));
        assert_eq!(config.as_bytes(), br#"{"a":[1,"b"]}"#);
    }
}
