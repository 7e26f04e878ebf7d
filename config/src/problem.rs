//! The wording of every problem this crate finds itself (serde words its own).

use std::path::PathBuf;

mod route;

pub(crate) use route::RouteProblem;

/// One problem, before it is placed at a key and a position.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Problem {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("empty configuration file")]
    Empty,
    #[error("at least one listen address is required")]
    NoListen,
    #[error(
        "invalid socket address {value:?}: expected IP:PORT, e.g. 127.0.0.1:8080 or [::1]:8080"
    )]
    SocketAddr { value: String },
    #[error("threads must be between 1 and 1024, got {0}")]
    Threads(i64),
    #[error("at least one upstream is required")]
    NoUpstreams,
    #[error("invalid {kind} name {name:?}: use only letters, digits, '_', '.' and '-'")]
    Name { kind: &'static str, name: String },
    #[error("duplicate {kind} {name:?} (first declared at line {first_line})")]
    Duplicate {
        kind: &'static str,
        name: String,
        first_line: usize,
    },
    #[error("an upstream needs at least one endpoint")]
    NoEndpoints,
    #[error("invalid endpoint {value:?}: {reason}")]
    Endpoint { value: String, reason: &'static str },
    #[error("wasm source is empty: give a file path or builtin:NAME")]
    EmptyWasm,
    #[error("wasm file not found: {}", .0.display())]
    WasmMissing(PathBuf),
    #[error("wasm path is a directory, not a file: {}", .0.display())]
    WasmIsDir(PathBuf),
    #[error("cannot access wasm file {}: {source}", path.display())]
    WasmAccess {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("unknown builtin filter {name:?} (known: {})", known_list(.known))]
    UnknownBuiltin { name: String, known: Vec<String> },
    #[error("cannot pass this value as JSON: {0}")]
    Json(#[source] serde_json::Error),
    #[error("at least one route is required")]
    NoRoutes,
    #[error("path_prefix must start with \"/\", got {0:?}")]
    PathPrefix(String),
    #[error("invalid host {value:?}: {reason}")]
    Host { value: String, reason: &'static str },
    #[error("unknown upstream {name:?} (known: {})", known_list(.known))]
    UnknownUpstream { name: String, known: Vec<String> },
    #[error("unknown filter {name:?} (known: {})", known_list(.known))]
    UnknownFilter { name: String, known: Vec<String> },
    #[error("filter {0:?} is listed more than once in this route")]
    RepeatedRouteFilter(String),
    #[error("{0} is empty: give a path or leave the key out")]
    EmptyPath(&'static str),
    #[error("cache_dir exists and is not a directory: {}", .0.display())]
    CacheDirNotDir(PathBuf),
    #[error("{which} file not found: {}", path.display())]
    TlsFile { which: &'static str, path: PathBuf },
    #[error("unknown protocol {0:?} (known: http1, http2)")]
    Protocol(String),
    #[error("{name} must be between {min} and {max}, got {value}")]
    Limit {
        name: &'static str,
        value: i64,
        min: i64,
        max: i64,
    },
    #[error("balance: hash needs a hash: mapping ({{header: NAME}} or {{source_ip: true}})")]
    HashKeyMissing,
    #[error("hash: give exactly one of header: NAME or source_ip: true")]
    HashKeyChoice,
    #[error("hash: applies only to balance: hash")]
    HashWithoutHashBalance,
    #[error("invalid header name {0:?}")]
    HashHeaderName(String),
    #[error("unknown balance {0:?} (known: round_robin, random, least_requests, hash)")]
    Balance(String),
    #[error("client_cert and client_key go together: give both or neither")]
    ClientCertPair,
    #[error(
        "health check path must start with \"/\" and contain no spaces or control bytes, got {0:?}"
    )]
    HealthPath(String),
    #[error("expected_statuses needs at least one status or range")]
    NoStatuses,
    #[error("invalid status {0:?}: expected a code from 100 to 599 or a range such as \"200-399\"")]
    StatusRange(String),
    #[error(
        "unknown retry condition {0:?} (known: connect_failure, reset_before_response, \"502\", \"503\", \"504\")"
    )]
    RetryOn(String),
    #[error(transparent)]
    Route(#[from] RouteProblem),
    #[error("upgrade_sock path is {len} bytes long, over the 107 bytes a Unix socket allows: {}", path.display())]
    SocketPathTooLong { path: PathBuf, len: usize },
    #[error("unknown {name} {value:?} (known: {known})")]
    Choice {
        name: &'static str,
        value: String,
        known: &'static str,
    },
    #[error("invalid address {value:?}: {reason}")]
    Cidr { value: String, reason: &'static str },
    #[error("invalid header name {value:?}: {reason}")]
    HeaderName { value: String, reason: &'static str },
    #[error("access_log.path is a directory: {}", .0.display())]
    LogPathIsDir(PathBuf),
    #[error("the directory of access_log.path does not exist: {}", .0.display())]
    LogDirMissing(PathBuf),
    #[error("invalid access log template: {0}")]
    Template(String),
}

fn known_list(known: &[String]) -> String {
    if known.is_empty() {
        "none".to_owned()
    } else {
        known.join(", ")
    }
}
