//! What the proxy knows of one endpoint address from real traffic: requests in flight and
//! passive health (outlier ejection). Kept across reloads, so that an endpoint ejected just
//! before a reload stays ejected after it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use wasmgate_config::Outlier;

/// Process start: endpoint deadlines are kept as milliseconds since then, in atomics.
static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);

/// Milliseconds since [`EPOCH`].
pub(crate) fn now_ms() -> u64 {
    u64::try_from(EPOCH.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// One resolved address of a configured endpoint.
#[derive(Debug)]
pub struct EndpointState {
    /// The upstream's name, for logs and metric labels.
    pub upstream: Arc<str>,
    /// The endpoint as configured (`host:port`): the `endpoint` metric label.
    pub endpoint: Arc<str>,
    pub addr: SocketAddr,
    /// Requests sent to it and not yet finished.
    active: AtomicUsize,
    /// Failures in a row since the last success.
    failures: AtomicU32,
    /// Until when it is ejected, in [`now_ms`]; 0 = never ejected.
    ejected_until: AtomicU64,
    /// When a TLS failure was last logged, in [`now_ms`] + 1 (0 = never).
    tls_logged: AtomicU64,
}

impl EndpointState {
    pub(crate) fn new(upstream: Arc<str>, endpoint: Arc<str>, addr: SocketAddr) -> Self {
        EndpointState {
            upstream,
            endpoint,
            addr,
            active: AtomicUsize::new(0),
            failures: AtomicU32::new(0),
            ejected_until: AtomicU64::new(0),
            tls_logged: AtomicU64::new(0),
        }
    }

    /// Requests in flight.
    pub fn active(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }

    /// Whether passive health keeps it out of the rotation at `now` ([`now_ms`]).
    pub fn is_ejected(&self, now: u64) -> bool {
        self.ejected_until.load(Ordering::Relaxed) > now
    }

    /// When its ejection ends, as wall-clock time, if it is ejected now.
    pub fn ejected_until(&self) -> Option<SystemTime> {
        let until = self.ejected_until.load(Ordering::Relaxed);
        let now = now_ms();
        (until > now).then(|| SystemTime::now() + Duration::from_millis(until - now))
    }

    /// Counts a request sent to it until the guard drops.
    pub(crate) fn start(self: &Arc<Self>) -> ActiveGuard {
        self.active.fetch_add(1, Ordering::Relaxed);
        ActiveGuard(self.clone())
    }

    /// A request it served did not fail.
    pub(crate) fn succeeded(&self) {
        if self.failures.load(Ordering::Relaxed) != 0 {
            self.failures.store(0, Ordering::Relaxed);
        }
    }

    /// A request it served failed (connect failure, reset, 502/503/504): with `outlier`
    /// configured, ejects it once the failures in a row reach the threshold.
    pub(crate) fn failed(&self, outlier: Option<&Outlier>) {
        let failures = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        let Some(outlier) = outlier else {
            return;
        };
        let now = now_ms();
        if failures < outlier.consecutive_failures || self.is_ejected(now) {
            return;
        }
        let ms = u64::try_from(outlier.ejection.as_millis()).unwrap_or(u64::MAX);
        self.ejected_until
            .store(now.saturating_add(ms).max(1), Ordering::Relaxed);
        self.failures.store(0, Ordering::Relaxed);
        metrics::counter!(
            "wasmgate_upstream_ejections_total",
            "upstream" => self.upstream.to_string(),
            "endpoint" => self.endpoint.to_string(),
        )
        .increment(1);
        tracing::warn!(
            upstream = %self.upstream,
            endpoint = %self.endpoint,
            address = %self.addr,
            failures,
            ejection_ms = ms,
            "upstream endpoint ejected after failing requests in a row"
        );
    }

    /// Whether a TLS failure may be logged now: at most one line per second per address.
    pub(crate) fn admit_tls_log(&self) -> bool {
        let now = now_ms() + 1;
        let last = self.tls_logged.load(Ordering::Relaxed);
        if last != 0 && now < last + 1000 {
            return false;
        }
        self.tls_logged
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    }
}

/// One request in flight on an endpoint; dropping it ends the count.
#[derive(Debug)]
pub struct ActiveGuard(Arc<EndpointState>);

impl ActiveGuard {
    pub fn state(&self) -> &Arc<EndpointState> {
        &self.0
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> Arc<EndpointState> {
        Arc::new(EndpointState::new(
            "u".into(),
            "e:1".into(),
            "127.0.0.1:1".parse().unwrap(),
        ))
    }

    #[test]
    fn ejects_after_the_threshold_of_failures_in_a_row_only() {
        let s = state();
        let outlier = Outlier {
            consecutive_failures: 3,
            ejection: Duration::from_secs(60),
        };
        s.failed(Some(&outlier));
        s.failed(Some(&outlier));
        s.succeeded();
        s.failed(Some(&outlier));
        s.failed(Some(&outlier));
        assert!(!s.is_ejected(now_ms()));
        s.failed(Some(&outlier));
        assert!(s.is_ejected(now_ms()));
        assert!(s.ejected_until().is_some());
        assert!(!s.is_ejected(now_ms() + 61_000));
    }

    #[test]
    fn no_outlier_settings_never_eject() {
        let s = state();
        for _ in 0..100 {
            s.failed(None);
        }
        assert!(!s.is_ejected(now_ms()));
    }

    #[test]
    fn guards_count_requests_in_flight() {
        let s = state();
        let a = s.start();
        let b = s.start();
        assert_eq!(s.active(), 2);
        drop(a);
        assert_eq!(s.active(), 1);
        drop(b);
        assert_eq!(s.active(), 0);
    }
}
