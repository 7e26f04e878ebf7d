//! Upstreams as the proxy runs them: endpoints, balancing, TLS, health, retries.

use std::path::PathBuf;
use std::time::Duration;

use crate::Location;

/// A named set of endpoints and how the proxy talks to them.
#[derive(Debug, Clone)]
pub struct Upstream {
    /// The key under `upstreams:`; matches `[A-Za-z0-9_.-]+`.
    pub name: String,
    /// `endpoints:`, in file order; never empty.
    pub endpoints: Vec<Endpoint>,
    /// `protocol:`; default HTTP/1.1.
    pub protocol: Protocol,
    /// How long the proxy waits on it.
    pub timeouts: UpstreamTimeouts,
    /// `balance:` (with `hash:`); default weighted round robin.
    pub balance: Balance,
    /// `tls:`; `None` is plain HTTP.
    pub tls: Option<UpstreamTls>,
    /// `health_check:`; `None` is no active checks (every endpoint counts as healthy).
    pub health_check: Option<HealthCheck>,
    /// `outlier:`; `None` is no passive ejection.
    pub outlier: Option<Outlier>,
    /// `retries:`.
    pub retries: Retries,
    /// How often host names are resolved again (`resolve_interval_ms`), 100 ms..=1 day;
    /// default 30 s.
    pub resolve_interval: Duration,
    /// `keepalive:`.
    pub keepalive: Keepalive,
    /// Where this upstream's key is in the file.
    pub location: Location,
}

impl Upstream {
    /// Whether `other` describes the same upstream: every setting equal, wherever it is written.
    pub fn same_settings(&self, other: &Upstream) -> bool {
        // Destructured so that a new field cannot be forgotten here.
        let Upstream {
            name,
            endpoints,
            protocol,
            timeouts,
            balance,
            tls,
            health_check,
            outlier,
            retries,
            resolve_interval,
            keepalive,
            location: _,
        } = self;
        *name == other.name
            && *endpoints == other.endpoints
            && *protocol == other.protocol
            && *timeouts == other.timeouts
            && *balance == other.balance
            && *tls == other.tls
            && *health_check == other.health_check
            && *outlier == other.outlier
            && *retries == other.retries
            && *resolve_interval == other.resolve_interval
            && *keepalive == other.keepalive
    }
}

/// One item of `endpoints:`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `host:port`, `ipv4:port` or `[ipv6]:port`, as written.
    pub address: String,
    /// Share of the traffic against the other endpoints' (`weight`), 1..=1000; default 1.
    pub weight: u32,
}

impl Endpoint {
    /// The host part of the address, without brackets: a name or an IP address.
    pub fn host(&self) -> &str {
        let host = match self.address.rsplit_once(':') {
            Some((host, _)) => host,
            None => &self.address,
        };
        host.trim_start_matches('[').trim_end_matches(']')
    }

    /// Whether the host is a name to resolve rather than an IP address.
    pub fn is_name(&self) -> bool {
        self.host().parse::<std::net::IpAddr>().is_err()
    }
}

/// How the proxy talks to an upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Protocol {
    /// HTTP/1.1 (`http1`, the default).
    #[default]
    Http1,
    /// HTTP/2 (`http2`): with prior knowledge (h2c) in plain text, by ALPN over TLS.
    Http2,
}

/// How a request picks an endpoint among the healthy ones.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Balance {
    /// Weighted round robin (`round_robin`, the default).
    #[default]
    RoundRobin,
    /// Weighted random (`random`).
    Random,
    /// The endpoint with the fewest requests in flight for its weight (`least_requests`).
    LeastRequests,
    /// Consistent hashing (Ketama) of a key of the request (`hash`, with `hash:`).
    Hash(HashKey),
}

impl Balance {
    /// The name the configuration uses.
    pub fn as_str(&self) -> &'static str {
        match self {
            Balance::RoundRobin => "round_robin",
            Balance::Random => "random",
            Balance::LeastRequests => "least_requests",
            Balance::Hash(_) => "hash",
        }
    }
}

/// What `balance: hash` hashes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashKey {
    /// A request header's value (`hash: {header: NAME}`), lowercased name; a request
    /// without it hashes the empty string.
    Header(String),
    /// The client's IP address (`hash: {source_ip: true}`).
    SourceIp,
}

/// `tls:` of an upstream: the proxy connects with TLS.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UpstreamTls {
    /// Server name sent (SNI) and verified (`sni`); default the endpoint's host (for an IP
    /// endpoint, its address is verified and no SNI is sent).
    pub sni: Option<String>,
    /// Verify the certificate chain and name (`verify`); default true.
    pub verify: bool,
    /// PEM CA certificates to verify against (`ca`), joined onto the config file's directory;
    /// default the system roots.
    pub ca: Option<PathBuf>,
    /// PEM client certificate chain and private key for mTLS (`client_cert`, `client_key`).
    pub client_cert: Option<(PathBuf, PathBuf)>,
}

/// `health_check:`: active HTTP checks of every endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HealthCheck {
    /// Request path (`path`), starting with `/`; default `/`.
    pub path: String,
    /// Between two checks of an endpoint (`interval_ms`), 100..=3600000; default 2 s.
    pub interval: Duration,
    /// Connect and response-head timeout of one check (`timeout_ms`), 1..=600000; default 1 s.
    pub timeout: Duration,
    /// Checks passed in a row that make an unhealthy endpoint healthy (`healthy_threshold`),
    /// 1..=100; default 2.
    pub healthy_threshold: u32,
    /// Checks failed in a row that make a healthy endpoint unhealthy (`unhealthy_threshold`),
    /// 1..=100; default 3.
    pub unhealthy_threshold: u32,
    /// Statuses that pass (`expected_statuses`: codes and `NNN-NNN` ranges), inclusive
    /// ranges; default 200-399.
    pub expected_statuses: Vec<(u16, u16)>,
}

impl HealthCheck {
    /// Whether `status` passes.
    pub fn expects(&self, status: u16) -> bool {
        self.expected_statuses
            .iter()
            .any(|&(lo, hi)| (lo..=hi).contains(&status))
    }
}

/// `outlier:`: passive ejection of endpoints that fail real requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outlier {
    /// Failures in a row that eject an endpoint (`consecutive_failures`), 1..=1000; default 5.
    pub consecutive_failures: u32,
    /// How long an ejected endpoint gets no traffic (`ejection_ms`), 1..=3600000; default 30 s.
    pub ejection: Duration,
}

/// `retries:`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Retries {
    /// Extra tries, each on another endpoint while one is left (`attempts`), 0..=10; default 0.
    pub attempts: u32,
    /// Retry when the connection could not be made (`on: [connect_failure]`, the default).
    pub connect_failure: bool,
    /// Retry when the connection failed before a response head came (`reset_before_response`).
    pub reset_before_response: bool,
    /// Retry on these response statuses (`"502"`, `"503"`, `"504"`).
    pub statuses: Vec<u16>,
}

/// `keepalive:`: idle connections kept to an upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keepalive {
    /// Idle connections kept, across all upstreams (`max_idle`), 0..=100000; default 128.
    /// 0 closes every connection after its response. Pingora keeps one pool for the process:
    /// its size is the largest `max_idle` at start.
    pub max_idle: usize,
    /// How long an idle connection is kept (`idle_timeout_ms`), 1..=3600000; default 60 s.
    pub idle_timeout: Duration,
}

impl Default for Keepalive {
    fn default() -> Self {
        Keepalive {
            max_idle: 128,
            idle_timeout: Duration::from_secs(60),
        }
    }
}

/// How long the proxy waits on an upstream before giving up on a request (504, or the
/// response cut once it has started).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpstreamTimeouts {
    /// Establishing a connection (`connect_timeout_ms`), 1..=600000; default 5 s.
    pub connect: Duration,
    /// Each read: the wait for the response headers and between two pieces of the body
    /// (`read_timeout_ms`), 1..=86400000; default 60 s.
    pub read: Duration,
    /// Each write of the request (`write_timeout_ms`), 1..=86400000; default 60 s.
    pub write: Duration,
    /// The whole response, from when the upstream is picked to its last byte
    /// (`response_timeout_ms`), 1..=86400000; default none (streams may last).
    pub response: Option<Duration>,
}

impl Default for UpstreamTimeouts {
    fn default() -> Self {
        UpstreamTimeouts {
            connect: Duration::from_secs(5),
            read: Duration::from_secs(60),
            write: Duration::from_secs(60),
            response: None,
        }
    }
}
