//! The part of an upstream that outlives a generation: endpoint health (active checks, held by
//! Pingora's `HealthRegistry`) and endpoint states (requests in flight, passive ejection).
//!
//! A reload that keeps an upstream's name and its health-check, TLS and protocol settings
//! finds the same [`Shared`] here, so an endpoint it still lists keeps its health; a change of
//! those settings starts a new one (its endpoints start healthy, as Pingora's do).

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Weak};

use parking_lot::Mutex;
use pingora::lb::HealthRegistry;
use wasmgate_config::Upstream as UpstreamConfig;

use super::endpoint::{EndpointState, now_ms};

/// State of one upstream shared by the generations that name it alike.
pub struct Shared {
    pub name: Arc<str>,
    /// Active health per address, with the health check set (when configured).
    pub health: Arc<HealthRegistry>,
    /// The active check, when configured: the health registry runs it.
    pub(crate) checker: Option<Arc<super::health::Checker>>,
    endpoints: Mutex<HashMap<SocketAddr, Arc<EndpointState>>>,
    /// When the next round of health checks is due, in [`now_ms`].
    pub(crate) next_check: AtomicU64,
    /// A round of checks is running.
    pub(crate) checking: AtomicBool,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Shared {
    /// The state of `addr`, an address of the configured `endpoint`.
    pub fn endpoint(&self, endpoint: &str, addr: SocketAddr) -> Arc<EndpointState> {
        let mut map = self.endpoints.lock();
        map.entry(addr)
            .or_insert_with(|| {
                Arc::new(EndpointState::new(self.name.clone(), endpoint.into(), addr))
            })
            .clone()
    }

    /// The state of `addr` if it was ever resolved for this upstream.
    pub fn find(&self, addr: &SocketAddr) -> Option<Arc<EndpointState>> {
        self.endpoints.lock().get(addr).cloned()
    }

    /// Claims the next round of health checks if it is due.
    pub(crate) fn claim_check(&self, every_ms: u64) -> bool {
        let now = now_ms();
        if now < self.next_check.load(Ordering::Relaxed)
            || self.checking.swap(true, Ordering::AcqRel)
        {
            return false;
        }
        self.next_check.store(now + every_ms, Ordering::Relaxed);
        true
    }
}

/// Live [`Shared`]s by upstream name and the key of the settings they depend on.
type SharedMap = HashMap<(String, u64), Weak<Shared>>;

/// Every live [`Shared`].
static SHARED: LazyLock<Mutex<SharedMap>> = LazyLock::new(Default::default);

/// The settings a [`Shared`] is built from: a change of these starts a new one.
fn settings_key(config: &UpstreamConfig, tls_digest: Option<&[u8; 32]>) -> u64 {
    let mut h = DefaultHasher::new();
    (
        &config.health_check,
        &config.tls,
        tls_digest,
        config.protocol,
    )
        .hash(&mut h);
    h.finish()
}

/// The [`Shared`] for `config`, the same as a live generation's when its settings match;
/// `make` builds a new one otherwise.
pub(crate) fn shared_for(
    config: &UpstreamConfig,
    tls_digest: Option<&[u8; 32]>,
    make: impl FnOnce() -> Result<Arc<Shared>, String>,
) -> Result<Arc<Shared>, String> {
    let key = (config.name.clone(), settings_key(config, tls_digest));
    let mut map = SHARED.lock();
    map.retain(|_, weak| weak.strong_count() > 0);
    if let Some(shared) = map.get(&key).and_then(Weak::upgrade) {
        return Ok(shared);
    }
    let shared = make()?;
    map.insert(key, Arc::downgrade(&shared));
    Ok(shared)
}

/// A new [`Shared`] with `health`, whose health check is `checker` (already set in it).
pub(crate) fn new_shared(
    name: &str,
    health: HealthRegistry,
    checker: Option<Arc<super::health::Checker>>,
) -> Shared {
    Shared {
        name: name.into(),
        health: Arc::new(health),
        checker,
        endpoints: Mutex::new(HashMap::new()),
        next_check: AtomicU64::new(0),
        checking: AtomicBool::new(false),
    }
}
