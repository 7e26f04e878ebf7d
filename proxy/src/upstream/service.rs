//! The upstreams' background work: rounds of active health checks and re-resolving host
//! names, for the upstreams of the current generation (generations being drained share their
//! health with it, and their addresses no longer matter).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use crate::service::State;

/// How often due work is looked for; health-check intervals are at least 100 ms.
const TICK: Duration = Duration::from_millis(50);

/// Runs health checks and re-resolves upstreams while the server runs.
#[derive(Debug)]
pub struct UpstreamService {
    pub state: Arc<State>,
}

#[async_trait]
impl BackgroundService for UpstreamService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // When each upstream (by name) was last resolved.
        let mut resolved_at: HashMap<String, Instant> = HashMap::new();
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tick.tick() => {}
            }
            let generation = self.state.current.load_full();
            let now = Instant::now();
            for upstream in &generation.upstreams {
                let last = resolved_at.entry(upstream.name.clone()).or_insert(now);
                let due = now.duration_since(*last) >= upstream.config.resolve_interval;
                if due {
                    *last = now;
                }
                upstream.background(due).await;
            }
        }
    }
}
