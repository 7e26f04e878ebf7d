//! Endpoint discovery: each configured `host:port` resolved to its addresses, handed to
//! Pingora's load balancer as backends, and again every `resolve_interval_ms` for names.

use std::collections::{BTreeSet, HashMap};
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use parking_lot::Mutex;
use pingora::lb::Backend;
use pingora::lb::discovery::ServiceDiscovery;
use wasmgate_config::Endpoint;

use super::endpoint::EndpointState;
use super::registry::Shared;

/// One address of a configured endpoint, as the balancer's backends are.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// Index of the endpoint in `endpoints:`.
    pub index: usize,
    pub weight: u32,
    pub state: Arc<EndpointState>,
}

/// Resolves an upstream's endpoints for its balancer; what it found is published in
/// `resolved` for the request path (address → state) and the admin API.
pub(crate) struct Discovery {
    pub(crate) endpoints: Vec<Endpoint>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) resolved: Arc<ArcSwap<Vec<Resolved>>>,
    /// The first answer, resolved when the generation was built: the balancer's first update
    /// must not wait.
    pub(crate) first: Mutex<Option<Vec<Resolved>>>,
}

impl Discovery {
    /// Resolves every endpoint now, blocking; an endpoint that does not resolve is an error.
    pub(crate) fn resolve_now(
        endpoints: &[Endpoint],
        shared: &Shared,
    ) -> Result<Vec<Resolved>, String> {
        let mut out = Vec::new();
        for (index, e) in endpoints.iter().enumerate() {
            let addrs = e
                .address
                .to_socket_addrs()
                .map_err(|err| format!("cannot resolve endpoint {}: {err}", e.address))?;
            push(&mut out, shared, index, e, addrs);
        }
        if out.is_empty() {
            return Err("its endpoints resolve to no address".into());
        }
        Ok(out)
    }

    /// Resolves every endpoint again; an endpoint whose name does not resolve keeps the
    /// addresses it had (a DNS hiccup must not empty an upstream).
    async fn resolve(&self) -> Vec<Resolved> {
        let before = self.resolved.load_full();
        let mut out = Vec::new();
        for (index, e) in self.endpoints.iter().enumerate() {
            if !e.is_name() {
                let kept = before.iter().filter(|r| r.index == index).cloned();
                out.extend(kept);
                continue;
            }
            match tokio::net::lookup_host(e.address.as_str()).await {
                Ok(addrs) => push(&mut out, &self.shared, index, e, addrs),
                Err(err) => {
                    tracing::warn!(
                        upstream = %self.shared.name,
                        endpoint = %e.address,
                        "cannot resolve the endpoint, keeping its addresses: {err}"
                    );
                    out.extend(before.iter().filter(|r| r.index == index).cloned());
                }
            }
        }
        let (old, new) = (addresses(&before), addresses(&out));
        if old != new {
            tracing::info!(
                upstream = %self.shared.name,
                before = ?old,
                after = ?new,
                "upstream endpoints resolved to new addresses"
            );
        }
        out
    }
}

fn addresses(list: &[Resolved]) -> BTreeSet<SocketAddr> {
    list.iter().map(|r| r.state.addr).collect()
}

fn push(
    out: &mut Vec<Resolved>,
    shared: &Shared,
    index: usize,
    e: &Endpoint,
    addrs: impl Iterator<Item = SocketAddr>,
) {
    for addr in addrs {
        // The same address twice (two endpoints naming one host) is one backend.
        if out.iter().any(|r| r.state.addr == addr) {
            continue;
        }
        out.push(Resolved {
            index,
            weight: e.weight,
            state: shared.endpoint(&e.address, addr),
        });
    }
}

/// The balancer's backends for a resolved list.
pub(crate) fn backends(list: &[Resolved]) -> BTreeSet<Backend> {
    list.iter()
        .map(|r| Backend {
            addr: pingora::protocols::l4::socket::SocketAddr::Inet(r.state.addr),
            weight: r.weight as usize,
            ext: Default::default(),
        })
        .collect()
}

#[async_trait]
impl ServiceDiscovery for Discovery {
    async fn discover(&self) -> pingora::Result<(BTreeSet<Backend>, HashMap<u64, bool>)> {
        let first = self.first.lock().take();
        let list = match first {
            Some(list) => list,
            None => self.resolve().await,
        };
        let backends = backends(&list);
        self.resolved.store(Arc::new(list));
        Ok((backends, HashMap::new()))
    }
}
