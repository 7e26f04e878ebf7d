//! rate-limit: a proxy-wasm filter that limits requests per client address (or per value of a
//! header) with token buckets kept in shared data, so that every VM of the filter (one per
//! worker) draws from the same buckets. Updates use compare-and-swap and retry on conflict.
//! A refill clock in shared data advances on each root context's tick; buckets catch up with
//! it when they are next used. See README.md.

mod bucket;
mod config;

use std::rc::Rc;
use std::time::{Duration, UNIX_EPOCH};

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, LogLevel, MetricType, Status};

use crate::bucket::{Bucket, client_ip, retry_after_secs, slot};
use crate::config::{Config, Key};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| Box::new(RateLimitRoot::default()));
}}

/// Read-modify-write rounds on one bucket before giving up (and letting the request through).
const CAS_ATTEMPTS: u32 = 64;

/// What every HTTP context of a plugin instance uses.
#[derive(Debug)]
struct Limiter {
    config: Config,
    /// Prefix of this filter's shared-data keys: `rate-limit:<filter name>:`.
    prefix: String,
    /// Metric ids: requests allowed, requests answered 429.
    allowed: u32,
    limited: u32,
}

impl Limiter {
    fn clock_key(&self) -> String {
        format!("{}clock", self.prefix)
    }

    /// The refill clock: ticks since the Unix epoch, as the last tick of any VM set it.
    fn clock(&self) -> u64 {
        match hostcalls::get_shared_data(&self.clock_key()) {
            Ok((Some(bytes), _)) => std::str::from_utf8(&bytes)
                .ok()
                .and_then(|t| t.parse().ok())
                .unwrap_or(0),
            _ => 0,
        }
    }

    /// Moves the shared clock forward to `now` (never back): the refill. Every VM ticks; the
    /// CAS makes the clock the latest of them.
    fn advance_clock(&self, now: u64) {
        let key = self.clock_key();
        for _ in 0..CAS_ATTEMPTS {
            let (value, cas) = match hostcalls::get_shared_data(&key) {
                Ok(found) => found,
                Err(_) => return,
            };
            let current: u64 = value
                .and_then(|b| std::str::from_utf8(&b).ok()?.parse().ok())
                .unwrap_or(0);
            if current >= now {
                return;
            }
            match hostcalls::set_shared_data(&key, Some(now.to_string().as_bytes()), cas) {
                Err(Status::CasMismatch) => continue,
                _ => return,
            }
        }
    }

    /// Takes a token from the bucket of `key`: Ok, or Err with the thousandths of a token
    /// missing. None if the bucket kept changing under us.
    fn take(&self, key: &str) -> Option<Result<(), u64>> {
        let config = &self.config;
        let bucket_key = format!("{}b{}", self.prefix, slot(key.as_bytes(), config.slots));
        let (capacity, per_tick) = (config.capacity(), config.refill_per_tick());
        let now = self.clock();
        for _ in 0..CAS_ATTEMPTS {
            let (value, cas) = hostcalls::get_shared_data(&bucket_key).ok()?;
            // A new (or unreadable) bucket starts full.
            let bucket = value
                .as_deref()
                .and_then(Bucket::decode)
                .unwrap_or(Bucket {
                    tokens: capacity,
                    tick: now,
                })
                .refill(now, per_tick, capacity);
            let next = match bucket.take() {
                Ok(next) => next,
                // Nothing to write: the refill is recomputed from the clock next time.
                Err(missing) => return Some(Err(missing)),
            };
            match hostcalls::set_shared_data(&bucket_key, Some(next.encode().as_bytes()), cas) {
                Ok(()) => return Some(Ok(())),
                Err(Status::CasMismatch) => continue,
                Err(_) => return None,
            }
        }
        None
    }
}

#[derive(Debug, Default)]
struct RateLimitRoot {
    limiter: Option<Rc<Limiter>>,
}

impl RateLimitRoot {
    fn now_tick(&self, tick_ms: u32) -> u64 {
        let millis = self
            .get_current_time()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        u64::try_from(millis / u128::from(tick_ms)).unwrap_or(u64::MAX)
    }
}

impl Context for RateLimitRoot {}

impl RootContext for RateLimitRoot {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let bytes = match hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX) {
            Ok(bytes) => bytes.unwrap_or_default(),
            Err(status) => {
                log(
                    LogLevel::Error,
                    &format!("rate-limit: cannot read the configuration: {status:?}"),
                );
                return false;
            }
        };
        let config = match Config::parse(&bytes) {
            Ok(config) => config,
            Err(reason) => {
                log(
                    LogLevel::Error,
                    &format!("rate-limit: invalid configuration: {reason}"),
                );
                return false;
            }
        };
        let name = match hostcalls::get_property(vec!["plugin_name"]) {
            Ok(Some(name)) => String::from_utf8_lossy(&name).into_owned(),
            _ => String::new(),
        };
        let (allowed, limited) = match (
            hostcalls::define_metric(MetricType::Counter, "rate_limit_allowed_total"),
            hostcalls::define_metric(MetricType::Counter, "rate_limit_limited_total"),
        ) {
            (Ok(a), Ok(l)) => (a, l),
            _ => {
                log(LogLevel::Error, "rate-limit: cannot define the metrics");
                return false;
            }
        };
        let tick_ms = config.tick_ms;
        let limiter = Limiter {
            config,
            prefix: format!("rate-limit:{name}:"),
            allowed,
            limited,
        };
        limiter.advance_clock(self.now_tick(tick_ms));
        self.limiter = Some(Rc::new(limiter));
        self.set_tick_period(Duration::from_millis(u64::from(tick_ms)));
        true
    }

    fn on_tick(&mut self) {
        if let Some(limiter) = &self.limiter {
            limiter.advance_clock(self.now_tick(limiter.config.tick_ms));
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        let limiter = self.limiter.clone()?;
        Some(Box::new(RateLimitStream { limiter }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

#[derive(Debug)]
struct RateLimitStream {
    limiter: Rc<Limiter>,
}

impl RateLimitStream {
    /// The text requests are counted by.
    fn key(&self) -> String {
        match &self.limiter.config.key {
            Key::Source => match self.get_property(vec!["source", "address"]) {
                Some(address) => client_ip(&String::from_utf8_lossy(&address)).to_owned(),
                None => String::new(),
            },
            Key::Header(name) => self.get_http_request_header(name).unwrap_or_default(),
        }
    }
}

impl Context for RateLimitStream {}

impl HttpContext for RateLimitStream {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let limiter = Rc::clone(&self.limiter);
        match limiter.take(&self.key()) {
            Some(Ok(())) => {
                count(limiter.allowed);
                Action::Continue
            }
            Some(Err(missing)) => {
                count(limiter.limited);
                let config = &limiter.config;
                let secs = retry_after_secs(missing, config.refill_per_tick(), config.tick_ms);
                self.send_http_response(
                    429,
                    vec![
                        ("retry-after", secs.to_string().as_str()),
                        ("content-type", "text/plain"),
                    ],
                    Some(b"rate limited\n"),
                );
                Action::Pause
            }
            None => {
                // The bucket kept changing (or shared data failed): let the request through.
                log(
                    LogLevel::Warn,
                    "rate-limit: could not update the bucket; request allowed",
                );
                count(limiter.allowed);
                Action::Continue
            }
        }
    }
}

fn count(metric: u32) {
    if let Err(status) = hostcalls::increment_metric(metric, 1) {
        log(
            LogLevel::Warn,
            &format!("rate-limit: cannot count: {status:?}"),
        );
    }
}

fn log(level: LogLevel, message: &str) {
    // A log that fails has nowhere else to be reported.
    let _ = hostcalls::log(level, message);
}
