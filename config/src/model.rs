//! The validated configuration the proxy runs from (routes and their matching in `route`).

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::Location;

mod upstream;

pub use upstream::*;

mod route;

pub use route::{
    HeaderMatch, PathMatch, QueryMatch, Redirect, RequestHead, Respond, Rewrite, Route,
    RouteAction, RouteMatch, ValueMatch, WeightedUpstream,
};

/// A loaded, validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it came from.
    pub source: PathBuf,
    /// Proxy listeners (`listen:`, one address or a list); never empty.
    pub listen: Vec<SocketAddr>,
    /// Admin listener (`admin:`); default none.
    pub admin: Option<SocketAddr>,
    /// Proxy worker threads (`threads:`), 1..=1024; default none, meaning the proxy decides.
    pub threads: Option<usize>,
    /// Upstreams (`upstreams:`), in file order; never empty, names unique.
    pub upstreams: Vec<Upstream>,
    /// Declared filters (`filters:`), in file order: also the default chain. Default empty.
    pub filters: Vec<Filter>,
    /// Routes (`routes:`), in file order; never empty.
    pub routes: Vec<Route>,
    /// Where compiled modules are cached (`cache_dir:`), joined onto the config file's
    /// directory when relative; never an existing non-directory. It need not exist yet.
    /// Default none: every load compiles.
    pub cache_dir: Option<PathBuf>,
    /// The Unix socket a graceful binary upgrade passes the listening sockets through
    /// (`upgrade_sock:`), joined onto the config file's directory when relative; at most
    /// 107 bytes. Default none: the proxy's default.
    pub upgrade_sock: Option<PathBuf>,
    /// TLS listeners (`listen_tls:`): HTTP/1.1 and HTTP/2 (ALPN). Default none.
    pub listen_tls: Vec<TlsListener>,
    /// Default limits of every filter (`limits:`); unset values are the host's defaults.
    pub limits: Limits,
    /// Limits on client connections and requests (`client:`).
    pub client: ClientLimits,
    /// Streams a filter may hold paused at once, across the process (`max_paused_streams:`),
    /// 1..=1000000; default [`DEFAULT_MAX_PAUSED_STREAMS`]. Past it a pause is answered 503.
    pub max_paused_streams: usize,
    /// Forwarding headers (`forwarding:`); every key has a default.
    pub forwarding: crate::Forwarding,
    /// The access log (`access_log:`); default none.
    pub access_log: Option<crate::AccessLog>,
}

/// Limits on what a client may send and how long it may take (`client:`). Every field has a
/// default; see each one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientLimits {
    /// Time to receive a whole request header block (`header_timeout_ms`), 100..=600000;
    /// default 10000. Counted from the accept (after TLS) for a connection's first request and
    /// from the first byte of each later one.
    pub header_timeout_ms: u64,
    /// Bytes of a request header block, request line and final empty line included
    /// (`max_header_bytes`), 1024..=524288; default 65536.
    pub max_header_bytes: u64,
    /// Header fields in one request (`max_headers`), 1..=256; default 100.
    pub max_headers: u64,
    /// Longest wait for the next bytes of a request body (`body_timeout_ms`), 100..=3600000;
    /// default 60000.
    pub body_timeout_ms: u64,
    /// Slowest average rate, in bytes per second, at which a request body may arrive once
    /// `body_timeout_ms` has passed since its first bytes (`body_min_rate`), 0..=1000000000;
    /// 0 = no minimum; default 500.
    pub body_min_rate: u64,
    /// How long an idle client connection is kept for another request (`keepalive_timeout_ms`),
    /// 0..=3600000; 0 = HTTP/1 connections close after each response; default 60000.
    pub keepalive_timeout_ms: u64,
}

impl Default for ClientLimits {
    fn default() -> Self {
        ClientLimits {
            header_timeout_ms: 10_000,
            max_header_bytes: 64 * 1024,
            max_headers: 100,
            body_timeout_ms: 60_000,
            body_min_rate: 500,
            keepalive_timeout_ms: 60_000,
        }
    }
}

/// The default of [`Config::max_paused_streams`].
pub const DEFAULT_MAX_PAUSED_STREAMS: usize = 4096;

/// A TLS listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsListener {
    pub address: SocketAddr,
    /// PEM certificate chain, joined onto the config file's directory when relative.
    pub cert: PathBuf,
    /// PEM private key, likewise.
    pub key: PathBuf,
}

/// Resource limits of a filter; `None` is the host's default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Limits {
    /// Wall time one callback may run (`callback_deadline_ms`), 1..=60000.
    pub callback_deadline_ms: Option<u64>,
    /// Linear memory of one VM (`max_memory_bytes`), 1 MiB..=4 GiB.
    pub max_memory_bytes: Option<u64>,
    /// Body a filter may buffer or write (`max_body_bytes`), 0..=1 GiB.
    pub max_body_bytes: Option<u64>,
    /// Wall time compiling the filter's module may take (`compile_timeout_ms`), 1..=600000.
    pub compile_timeout_ms: Option<u64>,
}

impl Limits {
    /// These limits, with `defaults` where these have none.
    pub fn or(self, defaults: Limits) -> Limits {
        Limits {
            callback_deadline_ms: self.callback_deadline_ms.or(defaults.callback_deadline_ms),
            max_memory_bytes: self.max_memory_bytes.or(defaults.max_memory_bytes),
            max_body_bytes: self.max_body_bytes.or(defaults.max_body_bytes),
            compile_timeout_ms: self.compile_timeout_ms.or(defaults.compile_timeout_ms),
        }
    }
}

/// Where a filter's wasm module comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WasmSource {
    /// A file that existed at load time: an absolute path as written, or a
    /// relative one joined onto the config file's directory (so relative to
    /// the working directory when the config path was relative).
    File(PathBuf),
    /// `builtin:NAME`: a filter compiled into the binary, one of
    /// [`ParseOptions::builtin_filters`](crate::ParseOptions::builtin_filters).
    Builtin(String),
}

/// One declared filter.
#[derive(Debug, Clone)]
pub struct Filter {
    /// Unique name, `[A-Za-z0-9_.-]+`; also the `plugin_name` property.
    pub name: String,
    /// The module (`wasm:`); required.
    pub wasm: WasmSource,
    /// The plugin configuration buffer (`configuration:`): a string as-is, a
    /// mapping or list as JSON, a number or bool as its JSON text. Default empty.
    pub configuration: Vec<u8>,
    /// The VM configuration buffer (`vm_configuration:`), same rules. Default empty.
    pub vm_configuration: Vec<u8>,
    /// `root_id:`; default `""`.
    pub root_id: String,
    /// `vm_id:`; default `""`.
    pub vm_id: String,
    /// `fail_open:`: let requests through when the filter fails; default `false`.
    pub fail_open: bool,
    /// `limits:`, over the top-level `limits:`.
    pub limits: Limits,
    /// Where this filter's list item starts: its first key, or the `{` of a
    /// flow mapping (where serde_yaml places errors about the whole item).
    pub location: Location,
}

impl Filter {
    /// Whether `other` configures a plugin exactly as this one does: the same name, buffers,
    /// ids and policy. The module (`wasm:`) and the position in the file are not compared.
    pub fn same_settings(&self, other: &Filter) -> bool {
        // Destructured so that a new field cannot be forgotten here.
        let Filter {
            name,
            wasm: _,
            configuration,
            vm_configuration,
            root_id,
            vm_id,
            fail_open,
            limits,
            location: _,
        } = self;
        *name == other.name
            && *configuration == other.configuration
            && *vm_configuration == other.vm_configuration
            && *root_id == other.root_id
            && *vm_id == other.vm_id
            && *fail_open == other.fail_open
            && *limits == other.limits
    }
}

impl Config {
    /// The first route, in file order, that `req` takes, with its index.
    pub fn route_for(&self, req: &RequestHead<'_>) -> Option<(usize, &Route)> {
        self.routes.iter().enumerate().find(|(_, r)| r.matches(req))
    }
}

#[cfg(test)]
mod tests;
