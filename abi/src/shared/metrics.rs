//! Metrics filters define (counters, gauges, histograms), with Envoy's rules (Envoy ctx
//! `defineMetric`, `incrementMetric`, `recordMetric`, `getMetric`).
//!
//! The host keeps each counter's and gauge's value (for `proxy_get_metric`) and also records
//! every change through the `metrics` crate, so the embedder's recorder (Prometheus in
//! wasmgate) exports them as `wasmgate_filter_<name>` with the label `filter="<filter name>"`.
//! The guest's name is sanitized for Prometheus: every byte outside `[A-Za-z0-9_]` becomes
//! `_` (Envoy's tag extraction is not done: tags written into the name stay in it).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::{Mutex, RwLock};

use super::SharedLimits;
use crate::types::{HostResult, Status};

/// The prefix of every filter metric's exported name.
pub const EXPORTED_PREFIX: &str = "wasmgate_filter_";

/// The ABI's metric types. A metric id carries its type in its low 2 bits (cpp-host
/// `kMetricTypeMask`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MetricKind {
    Counter = 0,
    Gauge = 1,
    Histogram = 2,
}

const TYPE_MASK: u32 = 0x3;

impl MetricKind {
    pub(crate) fn from_u32(v: u32) -> Option<MetricKind> {
        Some(match v {
            0 => MetricKind::Counter,
            1 => MetricKind::Gauge,
            2 => MetricKind::Histogram,
            _ => return None,
        })
    }

    /// The type a metric id claims.
    pub(crate) fn of_id(id: u32) -> Option<MetricKind> {
        Self::from_u32(id & TYPE_MASK)
    }
}

/// The name a guest's metric is exported under.
pub fn exported_name(guest_name: &[u8]) -> String {
    let mut out = String::with_capacity(EXPORTED_PREFIX.len() + guest_name.len());
    out.push_str(EXPORTED_PREFIX);
    out.extend(guest_name.iter().map(|&b| {
        if b.is_ascii_alphanumeric() || b == b'_' {
            char::from(b)
        } else {
            '_'
        }
    }));
    out
}

#[derive(Debug)]
enum Handle {
    Counter(metrics::Counter),
    Gauge(metrics::Gauge),
    Histogram(metrics::Histogram),
}

/// One metric: the value the host keeps (a gauge's as the bits of an i64) and its exported
/// handle.
#[derive(Debug)]
pub(crate) struct Metric {
    value: AtomicU64,
    handle: Handle,
}

/// The metrics of one filter.
#[derive(Debug)]
pub(crate) struct MetricSpace {
    filter: String,
    by_name: Mutex<HashMap<Box<[u8]>, u32>>,
    /// Indexed by `(id >> 2) - 1`.
    metrics: RwLock<Vec<Arc<Metric>>>,
    max_metrics: usize,
    max_name_bytes: usize,
}

impl MetricSpace {
    pub(crate) fn new(filter: &str, limits: &SharedLimits) -> MetricSpace {
        MetricSpace {
            filter: filter.to_string(),
            by_name: Mutex::new(HashMap::new()),
            metrics: RwLock::new(Vec::new()),
            max_metrics: limits.metrics,
            max_name_bytes: limits.metric_name_bytes,
        }
    }

    /// Defines metric `name` of type `kind`, or returns the id it already has.
    ///
    /// BadArgument for a name longer than the cap, or one already defined with another type
    /// (a Prometheus name has one type); InternalFailure past the filter's metric cap.
    pub(crate) fn define(&self, kind: MetricKind, name: &[u8]) -> HostResult<u32> {
        if name.len() > self.max_name_bytes {
            return Err(Status::BadArgument);
        }
        let mut by_name = self.by_name.lock();
        if let Some(&id) = by_name.get(name) {
            return match MetricKind::of_id(id) == Some(kind) {
                true => Ok(id),
                false => Err(Status::BadArgument),
            };
        }
        let mut metrics = self.metrics.write();
        if metrics.len() >= self.max_metrics {
            return Err(Status::InternalFailure);
        }
        let Some(id) = u32::try_from(metrics.len() + 1)
            .ok()
            .and_then(|n| n.checked_mul(TYPE_MASK + 1))
        else {
            return Err(Status::InternalFailure);
        };
        let id = id | kind as u32;
        let exported = exported_name(name);
        let filter = self.filter.clone();
        let handle = match kind {
            MetricKind::Counter => Handle::Counter(metrics::counter!(exported, "filter" => filter)),
            MetricKind::Gauge => Handle::Gauge(metrics::gauge!(exported, "filter" => filter)),
            MetricKind::Histogram => {
                Handle::Histogram(metrics::histogram!(exported, "filter" => filter))
            }
        };
        metrics.push(Arc::new(Metric {
            value: AtomicU64::new(0),
            handle,
        }));
        by_name.insert(name.into(), id);
        Ok(id)
    }

    fn get(&self, id: u32) -> Option<Arc<Metric>> {
        let index = usize::try_from(id >> 2).ok()?.checked_sub(1)?;
        let metric = self.metrics.read().get(index)?.clone();
        // The type bits must be the ones the id was given with.
        let defined_as = match metric.handle {
            Handle::Counter(_) => MetricKind::Counter,
            Handle::Gauge(_) => MetricKind::Gauge,
            Handle::Histogram(_) => MetricKind::Histogram,
        };
        (MetricKind::of_id(id) == Some(defined_as)).then_some(metric)
    }

    /// `proxy_increment_metric`: a counter grows by `delta` (BadArgument unless positive); a
    /// gauge moves by `delta`, down when negative; a histogram is BadArgument. NotFound for an
    /// unknown counter or gauge.
    pub(crate) fn increment(&self, id: u32, delta: i64) -> HostResult {
        match MetricKind::of_id(id) {
            Some(MetricKind::Counter | MetricKind::Gauge) => {}
            _ => return Err(Status::BadArgument),
        }
        let metric = self.get(id).ok_or(Status::NotFound)?;
        match &metric.handle {
            Handle::Counter(counter) => {
                if delta <= 0 {
                    return Err(Status::BadArgument);
                }
                let delta = delta.unsigned_abs();
                metric.value.fetch_add(delta, Ordering::Relaxed);
                counter.increment(delta);
            }
            Handle::Gauge(gauge) => {
                // Two's complement: adding the bits of a negative delta subtracts.
                metric.value.fetch_add(delta as u64, Ordering::Relaxed);
                if delta >= 0 {
                    gauge.increment(delta as f64);
                } else {
                    gauge.decrement(delta.unsigned_abs() as f64);
                }
            }
            Handle::Histogram(_) => return Err(Status::BadArgument),
        }
        Ok(())
    }

    /// `proxy_record_metric`, as Envoy's `recordMetric`: a counter adds `value` (the ABI's
    /// u64), a gauge is set to it, a histogram records it. NotFound for an unknown id.
    pub(crate) fn record(&self, id: u32, value: u64) -> HostResult {
        let metric = self.get(id).ok_or(Status::NotFound)?;
        match &metric.handle {
            Handle::Counter(counter) => {
                metric.value.fetch_add(value, Ordering::Relaxed);
                counter.increment(value);
            }
            Handle::Gauge(gauge) => {
                metric.value.store(value, Ordering::Relaxed);
                // Exported as the signed value: a guest that records -1 means -1.
                gauge.set(value as i64 as f64);
            }
            Handle::Histogram(histogram) => histogram.record(value as f64),
        }
        Ok(())
    }

    /// `proxy_get_metric`: a counter's or gauge's value. BadArgument for a histogram (or an
    /// id of no type), NotFound for an unknown counter or gauge.
    pub(crate) fn value(&self, id: u32) -> HostResult<u64> {
        match MetricKind::of_id(id) {
            Some(MetricKind::Counter | MetricKind::Gauge) => {}
            _ => return Err(Status::BadArgument),
        }
        let metric = self.get(id).ok_or(Status::NotFound)?;
        Ok(metric.value.load(Ordering::Relaxed))
    }

    /// The value of counter or gauge `name`, for the embedder and tests.
    pub(crate) fn value_by_name(&self, name: &[u8]) -> Option<u64> {
        let id = *self.by_name.lock().get(name)?;
        self.value(id).ok()
    }

    /// Metrics defined.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.metrics.read().len()
    }
}
