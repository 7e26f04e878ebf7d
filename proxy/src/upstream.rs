//! Upstreams: where requests go. Each configured upstream becomes an [`Upstream`] of its
//! generation: its endpoints resolved to addresses, a Pingora load balancer over them, the
//! peer settings requests use (timeouts, TLS, ALPN, keep-alive), and a link to the state that
//! outlives generations ([`registry::Shared`]: active health, passive ejection, requests in
//! flight).
//!
//! ```text
//!   generation N ──┐                     ┌── HealthRegistry (Pingora): active health per address
//!                  ├─ Upstream "api" ──▶ Shared "api" ──┤
//!   generation N+1 ┘   (balancer,         (kept while a  └── EndpointState per address:
//!                       resolved list)     generation      in flight, failures, ejected-until
//!                                          names it alike)
//! ```
//!
//! A request picks an address in `upstream_peer` ([`Upstream::select`]): the balancer's order,
//! skipping addresses that are unhealthy, ejected or already tried by this request; when none
//! is left, every address not yet tried is a candidate again (Envoy's panic mode), so an
//! upstream whose checks all fail still gets traffic rather than none. What a request did with
//! its tries, and whether it may try again, is in [`attempt`].

pub mod attempt;
pub mod endpoint;
mod health;
pub mod hooks;
mod registry;
mod resolve;
pub mod service;
mod tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use arc_swap::ArcSwap;
use futures_util::FutureExt;
use parking_lot::Mutex;
use pingora::lb::selection::{Consistent, Random, RoundRobin};
use pingora::lb::{Backends, LoadBalancer};
use pingora::upstreams::peer::HttpPeer;
use serde_json::json;
use wasmgate_config::{Balance, Protocol, Upstream as UpstreamConfig};

use endpoint::{EndpointState, now_ms};
use registry::Shared;
use resolve::{Discovery, Resolved};
pub use tls::TlsMaterial;

/// A configured upstream, built for one generation.
pub struct Upstream {
    pub name: String,
    pub config: UpstreamConfig,
    balancer: Balancer,
    /// The addresses the balancer has, with their states.
    resolved: Arc<ArcSwap<Vec<Resolved>>>,
    shared: Arc<Shared>,
    template: PeerTemplate,
    /// Start of the next least-requests scan, so that ties rotate.
    rotate: AtomicUsize,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// Pingora's balancer for the configured `balance`.
enum Balancer {
    RoundRobin(LoadBalancer<RoundRobin>),
    Random(LoadBalancer<Random>),
    Hash(LoadBalancer<Consistent>),
}

/// An address a request was sent to.
#[derive(Debug, Clone)]
pub struct Pick {
    pub state: Arc<EndpointState>,
    /// The host name of its configured endpoint (or its IP address).
    pub host: String,
}

impl Upstream {
    /// Builds `config`'s upstream: reads its TLS files, resolves its endpoints (blocking), and
    /// joins the state a previous generation left for it.
    pub fn build(config: &UpstreamConfig) -> Result<Upstream, String> {
        let tls = config.tls.as_ref().map(TlsMaterial::load).transpose()?;
        let shared = registry::shared_for(config, tls.as_ref().map(|t| &t.digest), || {
            let health = health::registry();
            let checker = config.health_check.as_ref().map(|settings| {
                let template = PeerTemplate::new(config, tls.clone());
                Arc::new(health::Checker::new(
                    config.name.as_str().into(),
                    settings.clone(),
                    Box::new(move |host| template.peer_for(host)),
                ))
            });
            if let Some(c) = &checker {
                health.set_health_check(Box::new(health::Registered(c.clone())));
            }
            Ok(Arc::new(registry::new_shared(
                &config.name,
                health,
                checker,
            )))
        })?;
        let first = Discovery::resolve_now(&config.endpoints, &shared)?;
        let resolved = Arc::new(ArcSwap::from_pointee(Vec::new()));
        let discovery = Discovery {
            endpoints: config.endpoints.clone(),
            shared: shared.clone(),
            resolved: resolved.clone(),
            first: Mutex::new(Some(first)),
        };
        let backends =
            Backends::new_with_health_registry(Box::new(discovery), shared.health.clone());
        let balancer = match &config.balance {
            Balance::RoundRobin | Balance::LeastRequests => {
                Balancer::RoundRobin(first_update(LoadBalancer::from_backends(backends))?)
            }
            Balance::Random => {
                Balancer::Random(first_update(LoadBalancer::from_backends(backends))?)
            }
            Balance::Hash(_) => {
                Balancer::Hash(first_update(LoadBalancer::from_backends(backends))?)
            }
        };
        let upstream = Upstream {
            name: config.name.clone(),
            config: config.clone(),
            balancer,
            resolved,
            shared,
            template: PeerTemplate::new(config, tls),
            rotate: AtomicUsize::new(0),
        };
        upstream.publish_health();
        Ok(upstream)
    }

    /// Sets the health gauge of every endpoint from what is known now.
    fn publish_health(&self) {
        let resolved = self.resolved.load();
        for (index, e) in self.config.endpoints.iter().enumerate() {
            let healthy = resolved
                .iter()
                .filter(|r| r.index == index)
                .any(|r| self.healthy(r));
            metrics::gauge!(
                "wasmgate_upstream_endpoint_healthy",
                "upstream" => self.name.clone(),
                "endpoint" => e.address.clone(),
            )
            .set(if healthy { 1.0 } else { 0.0 });
        }
    }

    /// The active-check health of a resolved address (true without checks).
    fn healthy(&self, r: &Resolved) -> bool {
        // Pingora keys readiness by address and weight.
        let backend = pingora::lb::Backend {
            addr: pingora::protocols::l4::socket::SocketAddr::Inet(r.state.addr),
            weight: r.weight as usize,
            ext: Default::default(),
        };
        match &self.balancer {
            Balancer::RoundRobin(lb) => lb.backends().ready(&backend),
            Balancer::Random(lb) => lb.backends().ready(&backend),
            Balancer::Hash(lb) => lb.backends().ready(&backend),
        }
    }

    fn state_of(&self, addr: &SocketAddr) -> Option<(Arc<EndpointState>, usize)> {
        let resolved = self.resolved.load();
        if let Some(r) = resolved.iter().find(|r| r.state.addr == *addr) {
            return Some((r.state.clone(), r.index));
        }
        // The balancer may still hold an address a re-resolve just dropped.
        let state = self.shared.find(addr)?;
        let index = self
            .config
            .endpoints
            .iter()
            .position(|e| *e.address == *state.endpoint)?;
        Some((state, index))
    }

    /// The address for a request whose hash key is `key`, skipping addresses in `tried`.
    /// `None` only when the upstream has no address at all.
    pub fn select(&self, key: &[u8], tried: &[SocketAddr]) -> Option<Pick> {
        let now = now_ms();
        let usable = |addr: &SocketAddr, healthy: bool| {
            healthy
                && !tried.contains(addr)
                && self.state_of(addr).is_some_and(|(s, _)| !s.is_ejected(now))
        };
        let pick = self
            .choose(key, &usable)
            // Panic mode: nothing healthy is left, so health no longer decides.
            .or_else(|| self.choose(key, &|addr: &SocketAddr, _| !tried.contains(addr)))
            // Every address was tried: the balancer's choice again.
            .or_else(|| self.choose(key, &|_: &SocketAddr, _| true))?;
        let (state, index) = self.state_of(&pick)?;
        let host = self.config.endpoints.get(index)?.host().to_owned();
        Some(Pick { state, host })
    }

    fn choose(&self, key: &[u8], accept: &dyn Fn(&SocketAddr, bool) -> bool) -> Option<SocketAddr> {
        if self.config.balance == Balance::LeastRequests {
            return self.least_requests(accept);
        }
        let n = self.resolved.load().len();
        // Past the balancer's first choice its order is pseudo-random: give it room to find
        // the one usable address among many.
        let tries = 4 * n + 16;
        let accept_backend = |b: &pingora::lb::Backend, healthy: bool| {
            b.addr.as_inet().is_some_and(|a| accept(a, healthy))
        };
        let picked = match &self.balancer {
            Balancer::RoundRobin(lb) => lb.select_with(key, tries, accept_backend),
            Balancer::Random(lb) => lb.select_with(key, tries, accept_backend),
            Balancer::Hash(lb) => lb.select_with(key, tries, accept_backend),
        };
        if let Some(b) = picked {
            return b.addr.as_inet().copied();
        }
        // The balancer's walk is bounded; make sure an acceptable address is never missed.
        let resolved = self.resolved.load();
        resolved
            .iter()
            .find(|r| accept(&r.state.addr, self.healthy(r)))
            .map(|r| r.state.addr)
    }

    /// The usable address with the fewest requests in flight for its weight; ties rotate.
    fn least_requests(&self, accept: &dyn Fn(&SocketAddr, bool) -> bool) -> Option<SocketAddr> {
        let resolved = self.resolved.load();
        let n = resolved.len();
        if n == 0 {
            return None;
        }
        let start = self.rotate.fetch_add(1, Ordering::Relaxed) % n;
        let mut best: Option<(u64, SocketAddr)> = None;
        for i in 0..n {
            let r = &resolved[(start + i) % n];
            let addr = r.state.addr;
            if !accept(&addr, self.healthy(r)) {
                continue;
            }
            // Compared as active / weight without division: scale by the other weights' lcm
            // would be exact, but 1000 (the largest weight) keeps the order for all weights.
            let load = (r.state.active() as u64 + 1) * 1000 / u64::from(r.weight.max(1));
            if best.is_none_or(|(b, _)| load < b) {
                best = Some((load, addr));
            }
        }
        best.map(|(_, a)| a)
    }

    /// The peer to send a request to `pick`: address, TLS, ALPN, timeouts, keep-alive.
    pub fn peer(&self, pick: &Pick) -> HttpPeer {
        let mut peer = self.template.peer_for(&pick.host);
        peer._address = pingora::protocols::l4::socket::SocketAddr::Inet(pick.state.addr);
        peer
    }

    /// A usable address for a callout (HTTP or gRPC), which has no hash key.
    pub fn pick_for_callout(&self) -> Option<Pick> {
        self.select(b"", &[])
    }

    /// Whether the upstream speaks TLS.
    pub fn is_tls(&self) -> bool {
        self.template.tls.is_some()
    }

    /// Whether it speaks HTTP/2.
    pub fn http2(&self) -> bool {
        self.config.protocol == Protocol::Http2
    }

    /// The host name each configured endpoint's health is checked with.
    fn check_hosts(&self) -> Vec<String> {
        let sni = self.template.tls.as_ref().and_then(|t| t.sni.clone());
        self.config
            .endpoints
            .iter()
            .map(|e| sni.clone().unwrap_or_else(|| e.host().to_owned()))
            .collect()
    }

    /// Runs what is due in the background: a round of health checks, a re-resolve of names.
    pub async fn background(&self, resolve_due: bool) {
        health::run_due(self).await;
        if resolve_due && self.config.endpoints.iter().any(|e| e.is_name()) {
            let result = match &self.balancer {
                Balancer::RoundRobin(lb) => lb.update().await,
                Balancer::Random(lb) => lb.update().await,
                Balancer::Hash(lb) => lb.update().await,
            };
            if let Err(e) = result {
                tracing::warn!(upstream = %self.name, "cannot update the endpoints: {e}");
            }
            self.publish_health();
        }
    }

    /// An upstream of plain endpoints with every other setting at its default, for tests.
    #[cfg(test)]
    pub(crate) fn for_test(name: &str, endpoint: &str, http2: bool) -> Upstream {
        let config = UpstreamConfig {
            name: name.into(),
            endpoints: vec![wasmgate_config::Endpoint {
                address: endpoint.into(),
                weight: 1,
            }],
            protocol: if http2 {
                Protocol::Http2
            } else {
                Protocol::Http1
            },
            timeouts: Default::default(),
            balance: Balance::RoundRobin,
            tls: None,
            health_check: None,
            outlier: None,
            retries: Default::default(),
            resolve_interval: std::time::Duration::from_secs(30),
            keepalive: Default::default(),
            location: wasmgate_config::Location {
                file: "test.yaml".into(),
                line: 1,
                column: 1,
            },
        };
        Upstream::build(&config).expect("a test upstream")
    }

    /// This upstream as the admin API shows it.
    pub fn admin_json(&self) -> serde_json::Value {
        let resolved = self.resolved.load();
        let endpoints: Vec<_> = resolved
            .iter()
            .map(|r| {
                let until = r.state.ejected_until().and_then(|t| {
                    t.duration_since(std::time::UNIX_EPOCH)
                        .ok()
                        .map(|d| d.as_millis() as u64)
                });
                json!({
                    "endpoint": &*r.state.endpoint,
                    "address": r.state.addr.to_string(),
                    "weight": r.weight,
                    "healthy": self.healthy(r),
                    "ejected": until.is_some(),
                    "ejected_until_unix_ms": until,
                    "active_requests": r.state.active(),
                })
            })
            .collect();
        json!({
            "name": self.name,
            "balance": self.config.balance.as_str(),
            "protocol": if self.http2() { "http2" } else { "http1" },
            "tls": self.is_tls(),
            "health_check": self.config.health_check.is_some(),
            "endpoints": endpoints,
        })
    }
}

/// The TLS files every upstream of `config` reads (CA, client certificate and key).
pub fn tls_files(config: &wasmgate_config::Config) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for tls in config.upstreams.iter().filter_map(|u| u.tls.as_ref()) {
        files.extend(tls.ca.iter().cloned());
        if let Some((cert, key)) = &tls.client_cert {
            files.push(cert.clone());
            files.push(key.clone());
        }
    }
    files
}

fn first_update<S>(lb: LoadBalancer<S>) -> Result<LoadBalancer<S>, String>
where
    S: pingora::lb::selection::BackendSelection + 'static,
    S::Iter: pingora::lb::selection::BackendIter,
{
    // The first discovery answers at once (resolved above): this never waits.
    match lb.update().now_or_never() {
        Some(Ok(())) => Ok(lb),
        Some(Err(e)) => Err(format!("cannot set up its endpoints: {e}")),
        None => Err("cannot set up its endpoints: discovery did not answer".into()),
    }
}

/// The settings every peer of an upstream shares, to make one for a host name.
struct PeerTemplate {
    tls: Option<TlsMaterial>,
    http2: bool,
    timeouts: wasmgate_config::UpstreamTimeouts,
    idle_timeout: std::time::Duration,
}

impl PeerTemplate {
    fn new(config: &UpstreamConfig, tls: Option<TlsMaterial>) -> PeerTemplate {
        PeerTemplate {
            tls,
            http2: config.protocol == Protocol::Http2,
            timeouts: config.timeouts,
            // `max_idle: 0`: a connection expires from the pool as soon as it is put there.
            idle_timeout: if config.keepalive.max_idle == 0 {
                std::time::Duration::ZERO
            } else {
                config.keepalive.idle_timeout
            },
        }
    }

    /// A peer for an endpoint whose host is `host` (a name or an IP address); its address is
    /// a placeholder for the caller to set.
    fn peer_for(&self, host: &str) -> HttpPeer {
        let placeholder = SocketAddr::from(([0, 0, 0, 0], 1));
        let mut peer = match &self.tls {
            None => HttpPeer::new(placeholder, false, String::new()),
            Some(tls) => {
                // Pingora verifies nothing when the SNI is empty: an IP endpoint is verified
                // against its address (rustls sends no SNI for an IP name).
                let sni = tls.sni.clone().unwrap_or_else(|| host.to_owned());
                let mut peer = HttpPeer::new(placeholder, true, sni);
                peer.options.verify_cert = tls.verify;
                peer.options.verify_hostname = tls.verify;
                peer.options.ca = tls.ca.clone();
                peer.client_cert_key = tls.client.clone();
                peer
            }
        };
        if self.http2 {
            // h2c with prior knowledge in plain text; over TLS, h2 by ALPN.
            peer.options.set_http_version(2, 2);
        }
        peer.options.connection_timeout = Some(self.timeouts.connect);
        // A response that must be whole within `response` cannot wait longer for its head.
        peer.options.read_timeout = Some(
            self.timeouts
                .response
                .map_or(self.timeouts.read, |r| r.min(self.timeouts.read)),
        );
        peer.options.write_timeout = Some(self.timeouts.write);
        peer.options.idle_timeout = Some(self.idle_timeout);
        peer
    }
}
