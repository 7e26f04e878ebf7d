//! An open-loop load generator: requests are scheduled at a fixed rate, independently of how
//! fast responses come back, and each latency is measured from the request's *intended* send
//! time. A slow response therefore delays the requests queued behind it and they count as slow,
//! instead of silently lowering the offered load (coordinated omission, the flaw of closed-loop
//! tools such as wrk).
//!
//! A pacer thread wakes at each intended time (with the thread's timer slack lowered to 1 ns
//! where the kernel allows it, so sleeps are precise to a few microseconds rather than tokio's
//! 1 ms timer wheel) and hands the intended instant to a pool of keep-alive connections served
//! by one tokio thread. How late requests went out is reported as the generator's own lag.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{Mutex, mpsc};

use crate::client::Connection;
use crate::stats::quantile;

/// What to send, how fast, for how long.
#[derive(Debug, Clone)]
pub struct OpenLoop {
    pub addr: SocketAddr,
    /// The raw request, sent as is on every connection.
    pub request: Vec<u8>,
    /// Requests per second.
    pub rate: f64,
    /// Sent at the same rate before measuring; not recorded.
    pub warmup: Duration,
    pub duration: Duration,
    pub connections: usize,
    /// Other requests mixed into the schedule: the `n`-th scheduled request is sent as the
    /// first alternate whose `n % every == offset`, and counted apart from `request`'s.
    pub alternates: Vec<Alternate>,
}

/// A request sent instead of the main one at fixed places of the schedule.
#[derive(Debug, Clone)]
pub struct Alternate {
    pub every: u64,
    pub offset: u64,
    pub request: Vec<u8>,
}

/// How the requests of one alternate went (the whole run, warm-up included).
#[derive(Debug, Clone, Default)]
pub struct AlternateResult {
    /// Requests of this alternate the pacer scheduled.
    pub scheduled: u64,
    /// Answered, by status: `(status, count)`, sorted by status.
    pub statuses: Vec<(u16, u64)>,
    /// Connection or protocol errors.
    pub errors: u64,
    /// Slowest answer, in ns.
    pub max_latency_ns: u64,
}

/// What one run measured (the measured window only).
#[derive(Debug, Clone, Default)]
pub struct OpenLoopResult {
    /// Requests scheduled in the measured window.
    pub scheduled: u64,
    /// Of those, answered with any status.
    pub completed: u64,
    /// Answered with a status outside 200..=399.
    pub non_2xx: u64,
    /// Connection or protocol errors, plus requests still unanswered at the time limit.
    pub errors: u64,
    /// Latencies from intended send time to the end of the response, sorted, in ns.
    pub latencies_ns: Vec<u64>,
    /// Send time minus intended time, sorted, in ns: the generator's own lateness plus waiting
    /// for a free connection.
    pub lag_ns: Vec<u64>,
    /// From the actual send to the end of the response, sorted, in ns: the latency without the
    /// generator's lag (which hides coordinated omission; for reading a noisy machine only).
    pub service_ns: Vec<u64>,
    /// Length of the measured window.
    pub window: Duration,
    /// Responses received over the whole run, warm-up included (for CPU per request).
    pub all_completed: u64,
    /// One per [`OpenLoop::alternates`], in order. The fields above count the main request only.
    pub alternates: Vec<AlternateResult>,
}

impl OpenLoopResult {
    /// Latency quantile in microseconds.
    pub fn latency_us(&self, q: f64) -> Option<f64> {
        quantile(&self.latencies_ns, q).map(|ns| ns as f64 / 1000.0)
    }

    pub fn lag_us(&self, q: f64) -> Option<f64> {
        quantile(&self.lag_ns, q).map(|ns| ns as f64 / 1000.0)
    }

    pub fn service_us(&self, q: f64) -> Option<f64> {
        quantile(&self.service_ns, q).map(|ns| ns as f64 / 1000.0)
    }

    /// Completed requests per second of the window.
    pub fn achieved_rate(&self) -> f64 {
        self.completed as f64 / self.window.as_secs_f64().max(1e-9)
    }
}

/// Best effort: lower this thread's timer slack so that sleeps end when asked.
fn precise_sleeps() {
    let _ = std::fs::write("/proc/thread-self/timerslack_ns", "1");
}

#[derive(Debug, Default)]
struct ConnStats {
    all_completed: u64,
    completed: u64,
    non_2xx: u64,
    errors: u64,
    latencies_ns: Vec<u64>,
    lag_ns: Vec<u64>,
    service_ns: Vec<u64>,
    alternates: Vec<AlternateResult>,
}

impl AlternateResult {
    fn record(&mut self, status: Option<u16>, latency: Duration) {
        match status {
            Some(status) => match self.statuses.iter_mut().find(|(s, _)| *s == status) {
                Some((_, n)) => *n += 1,
                None => self.statuses.push((status, 1)),
            },
            None => self.errors += 1,
        }
        self.max_latency_ns = self.max_latency_ns.max(latency.as_nanos() as u64);
    }

    fn merge(&mut self, other: AlternateResult) {
        for (status, n) in other.statuses {
            match self.statuses.iter_mut().find(|(s, _)| *s == status) {
                Some((_, m)) => *m += n,
                None => self.statuses.push((status, n)),
            }
        }
        self.errors += other.errors;
        self.max_latency_ns = self.max_latency_ns.max(other.max_latency_ns);
    }

    /// Answers with this status.
    pub fn count(&self, status: u16) -> u64 {
        self.statuses
            .iter()
            .find(|(s, _)| *s == status)
            .map_or(0, |(_, n)| *n)
    }

    /// Answers of any status.
    pub fn answered(&self) -> u64 {
        self.statuses.iter().map(|(_, n)| n).sum()
    }
}

/// Which request the `n`-th of the schedule is: 0 for the main one, `i + 1` for alternate `i`.
fn pick(alternates: &[Alternate], n: u64) -> usize {
    alternates
        .iter()
        .position(|a| a.every > 0 && n % a.every == a.offset)
        .map_or(0, |i| i + 1)
}

/// Runs the load on the calling thread (plus the pacer thread). Bounded: it returns at most
/// ten seconds after the schedule ends, counting whatever is unanswered as errors.
pub fn run(spec: &OpenLoop) -> std::io::Result<OpenLoopResult> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(run_async(spec))
}

async fn run_async(spec: &OpenLoop) -> std::io::Result<OpenLoopResult> {
    let mut conns = Vec::with_capacity(spec.connections);
    for _ in 0..spec.connections.max(1) {
        conns.push(Connection::connect(spec.addr).await?);
    }
    let rate = spec.rate.max(1.0);
    let start = Instant::now() + Duration::from_millis(20);
    let measure_from = start + spec.warmup;
    let end = measure_from + spec.duration;
    let total = ((spec.warmup + spec.duration).as_secs_f64() * rate).floor() as u64;
    let expected = capacity_hint(spec.duration, rate);

    let (tx, rx) = mpsc::unbounded_channel::<(Instant, u64)>();
    let rx = Arc::new(Mutex::new(rx));
    let pacer = std::thread::Builder::new()
        .name("pacer".into())
        .spawn(move || {
            precise_sleeps();
            let step = 1e9 / rate;
            for i in 0..total {
                let at = start + Duration::from_nanos((i as f64 * step) as u64);
                let now = Instant::now();
                if at > now {
                    std::thread::sleep(at - now);
                }
                if tx.send((at, i)).is_err() {
                    break;
                }
            }
        })?;

    let requests: Arc<[Vec<u8>]> = std::iter::once(spec.request.clone())
        .chain(spec.alternates.iter().map(|a| a.request.clone()))
        .collect();
    let alternates: Arc<[Alternate]> = spec.alternates.clone().into();
    let mut tasks = Vec::new();
    for conn in conns {
        let rx = rx.clone();
        let requests = requests.clone();
        let alternates = alternates.clone();
        let addr = spec.addr;
        let per_conn = expected / spec.connections.max(1) + 16;
        tasks.push(tokio::spawn(async move {
            let mut stats = ConnStats {
                latencies_ns: Vec::with_capacity(per_conn),
                lag_ns: Vec::with_capacity(per_conn),
                service_ns: Vec::with_capacity(per_conn),
                alternates: vec![AlternateResult::default(); alternates.len()],
                ..ConnStats::default()
            };
            let mut conn = Some(conn);
            loop {
                let (intended, n) = {
                    let mut rx = rx.lock().await;
                    match rx.recv().await {
                        Some(next) => next,
                        None => break,
                    }
                };
                let which = pick(&alternates, n);
                let request = &requests[which];
                let measured = which == 0 && intended >= measure_from && intended < end;
                let sent = Instant::now();
                let result = match conn.as_mut() {
                    Some(c) => c.exchange(request, false).await,
                    None => match Connection::connect(addr).await {
                        Ok(c) => conn.insert(c).exchange(request, false).await,
                        Err(e) => Err(e),
                    },
                };
                let done = Instant::now();
                if which > 0 {
                    let status = result.as_ref().ok().map(|r| r.status);
                    stats.alternates[which - 1].record(status, done - intended);
                }
                match result {
                    Ok(response) if which > 0 => {
                        if response.close {
                            conn = None;
                        }
                    }
                    Ok(response) => {
                        stats.all_completed += 1;
                        if measured {
                            stats.completed += 1;
                            if !(200..400).contains(&response.status) {
                                stats.non_2xx += 1;
                            }
                            stats.latencies_ns.push((done - intended).as_nanos() as u64);
                            stats.lag_ns.push((sent - intended).as_nanos() as u64);
                            stats.service_ns.push((done - sent).as_nanos() as u64);
                        }
                        if response.close {
                            conn = None;
                        }
                    }
                    Err(_) => {
                        if measured {
                            stats.errors += 1;
                        }
                        conn = None;
                    }
                }
            }
            stats
        }));
    }
    drop(rx);

    let deadline = end + Duration::from_secs(10);
    let mut result = OpenLoopResult {
        window: spec.duration,
        alternates: vec![AlternateResult::default(); spec.alternates.len()],
        ..OpenLoopResult::default()
    };
    // What the pacer schedules, counted the way it computes it.
    let step = 1e9 / rate;
    for n in 0..total {
        match pick(&spec.alternates, n) {
            0 => {
                let at = start + Duration::from_nanos((n as f64 * step) as u64);
                if at >= measure_from && at < end {
                    result.scheduled += 1;
                }
            }
            which => result.alternates[which - 1].scheduled += 1,
        }
    }
    for task in tasks {
        let left = deadline.saturating_duration_since(Instant::now());
        let abort = task.abort_handle();
        match tokio::time::timeout(left, task).await {
            Ok(Ok(stats)) => {
                result.completed += stats.completed;
                result.all_completed += stats.all_completed;
                result.non_2xx += stats.non_2xx;
                result.errors += stats.errors;
                result.latencies_ns.extend(stats.latencies_ns);
                result.lag_ns.extend(stats.lag_ns);
                result.service_ns.extend(stats.service_ns);
                for (all, one) in result.alternates.iter_mut().zip(stats.alternates) {
                    all.merge(one);
                }
            }
            _ => abort.abort(),
        }
    }
    let _ = pacer.join();
    let answered = result.completed + result.errors;
    result.errors += result.scheduled.saturating_sub(answered);
    for a in &mut result.alternates {
        a.errors += a.scheduled.saturating_sub(a.answered() + a.errors);
        a.statuses.sort_unstable();
    }
    result.latencies_ns.sort_unstable();
    result.lag_ns.sort_unstable();
    result.service_ns.sort_unstable();
    Ok(result)
}

fn capacity_hint(duration: Duration, rate: f64) -> usize {
    (duration.as_secs_f64() * rate).min(50_000_000.0) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alternates_take_their_places_in_the_schedule() {
        let alt = |every, offset| Alternate {
            every,
            offset,
            request: Vec::new(),
        };
        let mix = [alt(100, 37), alt(100, 87), alt(0, 0)];
        assert_eq!(pick(&mix, 37), 1);
        assert_eq!(pick(&mix, 137), 1);
        assert_eq!(pick(&mix, 87), 2);
        assert_eq!(pick(&mix, 0), 0);
        assert_eq!(pick(&mix, 36), 0);
        let mut r = AlternateResult::default();
        r.record(Some(503), Duration::from_millis(2));
        r.record(Some(503), Duration::from_millis(5));
        r.record(None, Duration::from_millis(1));
        assert_eq!((r.count(503), r.answered(), r.errors), (2, 2, 1));
        assert_eq!(r.max_latency_ns, 5_000_000);
    }
}
