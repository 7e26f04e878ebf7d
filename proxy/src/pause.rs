//! Streams held paused by filters: waiting them out, with a bound on how many may wait at once
//! so that a filter cannot make the proxy queue requests without limit.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use metrics::{Counter, Gauge};
use wasmgate_abi::{ChainStream, Verdict};

/// How long a filter may keep a request paused (waiting on something of its own) before the
/// proxy gives up on it.
pub const PAUSE_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a paused stream was given up on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stall {
    /// Paused past [`PAUSE_TIMEOUT`].
    TimedOut,
    /// Already as many streams paused as allowed: this one is refused rather than queued.
    Overloaded,
    /// The client left while the stream was paused (see [`settle_watching`]).
    Left,
}

/// The streams paused right now, across generations.
#[derive(Debug)]
pub struct PausedStreams {
    count: AtomicUsize,
    gauge: Gauge,
    rejected: Counter,
}

impl PausedStreams {
    pub fn new() -> PausedStreams {
        PausedStreams {
            count: AtomicUsize::new(0),
            gauge: metrics::gauge!("wasmgate_paused_streams"),
            rejected: metrics::counter!("wasmgate_paused_streams_rejected_total"),
        }
    }

    /// Counts one more paused stream while the hold lives, if fewer than `limit` are.
    fn hold(&self, limit: usize) -> Option<Hold<'_>> {
        let taken = self
            .count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit).then_some(n + 1)
            })
            .is_ok();
        if !taken {
            self.rejected.increment(1);
            return None;
        }
        self.gauge.increment(1.0);
        Some(Hold(self))
    }
}

impl Default for PausedStreams {
    fn default() -> Self {
        Self::new()
    }
}

/// One paused stream counted in [`PausedStreams`].
struct Hold<'a>(&'a PausedStreams);

impl Drop for Hold<'_> {
    fn drop(&mut self) {
        self.0.count.fetch_sub(1, Ordering::AcqRel);
        self.0.gauge.decrement(1.0);
    }
}

/// Waits out pauses: while a filter holds the stream, wait until something resumes it. Fails if
/// it stays paused past the timeout, or if `limit` streams are already paused.
pub async fn settle(
    chain: &mut ChainStream,
    mut verdict: Verdict,
    mut data: Bytes,
    paused: &PausedStreams,
    limit: usize,
) -> Result<(Verdict, Bytes), Stall> {
    if !matches!(verdict, Verdict::Paused { .. }) {
        return Ok((verdict, data));
    }
    let Some(_hold) = paused.hold(limit) else {
        tracing::warn!("{limit} streams already paused (max_paused_streams): answering 503");
        return Err(Stall::Overloaded);
    };
    while let Verdict::Paused { filter } = verdict {
        if !chain.wait(PAUSE_TIMEOUT).await {
            let name = &chain.chain().filters()[filter].plugin().info().name;
            tracing::warn!(filter = %name, "filter kept the stream paused past {PAUSE_TIMEOUT:?}");
            return Err(Stall::TimedOut);
        }
        let (v, more) = chain.resume();
        verdict = v;
        if !more.is_empty() {
            data = more;
        }
    }
    Ok((verdict, data))
}

/// As [`settle`], for a request without a body: its client connection is watched meanwhile,
/// and the wait ends (giving its place back) if the client closes it.
pub async fn settle_watching(
    session: &mut pingora::proxy::Session,
    chain: &mut ChainStream,
    verdict: Verdict,
    paused: &PausedStreams,
    limit: usize,
) -> Result<(Verdict, Bytes), Stall> {
    // Most requests are not paused: no watch to set up for them.
    if !matches!(verdict, Verdict::Paused { .. }) {
        return Ok((verdict, Bytes::new()));
    }
    tokio::select! {
        biased;
        settled = settle(chain, verdict, Bytes::new(), paused, limit) => settled,
        // Only resolves on an error: the client closed (or sent bytes after a request that
        // has no body, which Pingora treats the same way).
        gone = session.downstream_session.read_body_or_idle(true) => {
            let why = gone.err().map(|e| e.to_string()).unwrap_or_default();
            tracing::debug!("client left a paused request: {why}");
            Err(Stall::Left)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_are_bounded_and_released_on_drop() {
        let paused = PausedStreams::new();
        let a = paused.hold(2);
        let b = paused.hold(2);
        assert!(a.is_some() && b.is_some());
        assert!(paused.hold(2).is_none(), "a third hold is over the limit");
        drop(a);
        assert!(paused.hold(2).is_some(), "a released hold frees its place");
        assert_eq!(paused.count.load(Ordering::Relaxed), 1);
    }
}
