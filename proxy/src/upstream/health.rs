//! Active health checks: Pingora's `HttpHealthCheck` run against every address of an
//! upstream, one check per address per `interval_ms`, with its thresholds; the result lives in
//! the upstream's `HealthRegistry`, which the balancer reads.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use parking_lot::Mutex;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::lb::health_check::{HealthCheck as PingoraCheck, HttpHealthCheck};
use pingora::lb::{Backend, HealthRegistry};
use pingora::upstreams::peer::HttpPeer;
use pingora::{Error, ErrorType};
use wasmgate_config::HealthCheck;

use super::Upstream;
use super::resolve::Resolved;

/// A health registry whose health is keyed by address only, so that a weight change in a
/// reload keeps an endpoint's health.
pub(crate) fn registry() -> HealthRegistry {
    HealthRegistry::with_equivalence(|b: &Backend| {
        let mut h = DefaultHasher::new();
        b.addr.hash(&mut h);
        h.finish()
    })
}

/// The check of one upstream, for every address it has.
pub(crate) struct Checker {
    pub(crate) upstream: Arc<str>,
    pub(crate) settings: HealthCheck,
    /// A peer like the ones requests use (TLS, ALPN), for the host name it is made for.
    pub(crate) peer_for: Box<dyn Fn(&str) -> HttpPeer + Send + Sync>,
    /// The resolved addresses of the newest generation, to find an address's host name.
    pub(crate) resolved: ArcSwap<Vec<Resolved>>,
    /// The host name each configured endpoint is checked with (its host, or `tls.sni`).
    pub(crate) hosts: ArcSwap<Vec<String>>,
    /// One Pingora check per host name (each holds its connector).
    checks: Mutex<HashMap<String, Arc<HttpHealthCheck>>>,
}

impl Checker {
    pub(crate) fn new(
        upstream: Arc<str>,
        settings: HealthCheck,
        peer_for: Box<dyn Fn(&str) -> HttpPeer + Send + Sync>,
    ) -> Checker {
        Checker {
            upstream,
            settings,
            peer_for,
            resolved: ArcSwap::from_pointee(Vec::new()),
            hosts: ArcSwap::from_pointee(Vec::new()),
            checks: Mutex::new(HashMap::new()),
        }
    }

    fn host_of(&self, addr: &SocketAddr) -> Option<(String, Arc<str>)> {
        let resolved = self.resolved.load();
        let r = resolved.iter().find(|r| r.state.addr == *addr)?;
        let host = self.hosts.load().get(r.index)?.clone();
        Some((host, r.state.endpoint.clone()))
    }

    fn check_for(&self, host: &str) -> Arc<HttpHealthCheck> {
        let mut checks = self.checks.lock();
        if let Some(c) = checks.get(host) {
            return c.clone();
        }
        let mut check = HttpHealthCheck::new(host, false);
        let mut peer = (self.peer_for)(host);
        peer.options.connection_timeout = Some(self.settings.timeout);
        peer.options.read_timeout = Some(self.settings.timeout);
        peer.options.write_timeout = Some(self.settings.timeout);
        check.peer_template = peer;
        check.consecutive_success = self.settings.healthy_threshold as usize;
        check.consecutive_failure = self.settings.unhealthy_threshold as usize;
        if let Ok(mut req) = RequestHeader::build("GET", self.settings.path.as_bytes(), None) {
            let _ = req.insert_header(http::header::HOST, host);
            let _ = req.insert_header(http::header::USER_AGENT, "wasmgate-health-check");
            check.req = req;
        }
        let settings = self.settings.clone();
        check.validator = Some(Box::new(move |resp: &ResponseHeader| {
            let status = resp.status.as_u16();
            if settings.expects(status) {
                Ok(())
            } else {
                Error::e_explain(
                    ErrorType::CustomCode("unexpected status", status),
                    format!("health check answered {status}"),
                )
            }
        }));
        let check = Arc::new(check);
        checks.insert(host.to_owned(), check.clone());
        check
    }
}

/// What the health registry holds: the checker, shared with the upstream's [`Shared`].
pub(crate) struct Registered(pub(crate) Arc<Checker>);

#[async_trait]
impl PingoraCheck for Registered {
    async fn check(&self, target: &Backend) -> pingora::Result<()> {
        self.0.check_one(target).await
    }

    async fn health_status_change(&self, target: &Backend, healthy: bool) {
        self.0.status_change(target, healthy);
    }

    fn backend_summary(&self, target: &Backend) -> String {
        format!("upstream {} endpoint {}", self.0.upstream, target.addr)
    }

    fn health_threshold(&self, success: bool) -> usize {
        if success {
            self.0.settings.healthy_threshold as usize
        } else {
            self.0.settings.unhealthy_threshold as usize
        }
    }
}

impl Checker {
    async fn check_one(&self, target: &Backend) -> pingora::Result<()> {
        let Some(addr) = target.addr.as_inet() else {
            return Error::e_explain(ErrorType::InternalError, "not a TCP address");
        };
        let Some((host, _)) = self.host_of(addr) else {
            // An address no longer resolved: its health no longer matters.
            return Ok(());
        };
        let check = self.check_for(&host);
        let timeout = self.settings.timeout;
        // A check whose server accepts and then stalls in the body must end too.
        match tokio::time::timeout(timeout * 2, check.check(target)).await {
            Ok(result) => result,
            Err(_) => Error::e_explain(ErrorType::ReadTimedout, "health check timed out"),
        }
    }

    fn status_change(&self, target: &Backend, healthy: bool) {
        let Some(addr) = target.addr.as_inet() else {
            return;
        };
        let endpoint = self
            .host_of(addr)
            .map_or_else(|| addr.to_string().into(), |(_, e)| e);
        if healthy {
            tracing::info!(upstream = %self.upstream, %endpoint, address = %addr,
                "upstream endpoint healthy (active check)");
        } else {
            tracing::warn!(upstream = %self.upstream, %endpoint, address = %addr,
                "upstream endpoint unhealthy (active check)");
        }
        metrics::gauge!(
            "wasmgate_upstream_endpoint_healthy",
            "upstream" => self.upstream.to_string(),
            "endpoint" => endpoint.to_string(),
        )
        .set(if healthy { 1.0 } else { 0.0 });
    }
}

/// Runs one round of checks of `upstream` if one is due and none is running. Called often by
/// the upstreams' background service; cheap when nothing is due.
pub(crate) async fn run_due(upstream: &Upstream) {
    let Some(settings) = &upstream.config.health_check else {
        return;
    };
    let shared = &upstream.shared;
    let every = u64::try_from(settings.interval.as_millis()).unwrap_or(u64::MAX);
    if !shared.claim_check(every) {
        return;
    }
    if let Some(checker) = &shared.checker {
        // The newest generation's view of the endpoints is the one checked.
        checker.resolved.store(upstream.resolved.load_full());
        checker.hosts.store(Arc::new(upstream.check_hosts()));
    }
    let shared = shared.clone();
    tokio::spawn(async move {
        shared.health.run_health_check(true).await;
        shared.checking.store(false, Ordering::Release);
    });
}
