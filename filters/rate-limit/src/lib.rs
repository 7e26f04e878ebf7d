//! rate-limit: a proxy-wasm filter that limits requests per client address (or per value of a
//! header) with token buckets kept in shared data, so that every VM of the filter (one per
//! worker) draws from the same buckets. Updates use compare-and-swap and retry on conflict.
//! A refill clock in shared data advances on each root context's tick; buckets catch up with
//! it when they are next used. In `global` mode the limit holds across replicas instead: a
//! fixed window per key counted in Redis through Webdis (global.rs, global_stream.rs). See
//! README.md.

mod bucket;
mod config;
mod global;
mod global_stream;

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, UNIX_EPOCH};

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, LogLevel, MapType, MetricType, Status};

use crate::bucket::{Bucket, client_ip, retry_after_secs, slot};
use crate::config::{Config, Key, Mode};
use crate::global_stream::{Global, GlobalStream};

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
    global: Option<Rc<Global>>,
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

impl RateLimitRoot {
    /// `on_configure` in global mode: no shared data and no ticks, only the callout's settings.
    fn configure_global(&mut self, config: global::GlobalConfig) -> bool {
        let Some([allowed, limited, store_errors]) = counters([
            "rate_limit_allowed_total",
            "rate_limit_limited_total",
            "rate_limit_store_errors_total",
        ]) else {
            return false;
        };
        self.global = Some(Rc::new(Global {
            config,
            name: plugin_name(),
            allowed,
            limited,
            store_errors,
            store_down: Cell::new(false),
        }));
        true
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
        let config = match config::parse_mode(&bytes) {
            Ok(Mode::Local(config)) => config,
            Ok(Mode::Global(config)) => return self.configure_global(config),
            Err(reason) => {
                log(
                    LogLevel::Error,
                    &format!("rate-limit: invalid configuration: {reason}"),
                );
                return false;
            }
        };
        let name = plugin_name();
        let Some([allowed, limited]) =
            counters(["rate_limit_allowed_total", "rate_limit_limited_total"])
        else {
            return false;
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
        if let Some(global) = &self.global {
            let global = Rc::clone(global);
            return Some(Box::new(GlobalStream { global }));
        }
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
        request_key(&self.limiter.config.key)
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

/// The text the current request is counted by, as `key` says.
fn request_key(key: &Key) -> String {
    match key {
        Key::Source => match hostcalls::get_property(vec!["source", "address"]) {
            Ok(Some(address)) => client_ip(&String::from_utf8_lossy(&address)).to_owned(),
            _ => String::new(),
        },
        Key::Header(name) => hostcalls::get_map_value(MapType::HttpRequestHeaders, name)
            .ok()
            .flatten()
            .unwrap_or_default(),
    }
}

/// The filter's name in the proxy's configuration (empty if the host does not say).
fn plugin_name() -> String {
    match hostcalls::get_property(vec!["plugin_name"]) {
        Ok(Some(name)) => String::from_utf8_lossy(&name).into_owned(),
        _ => String::new(),
    }
}

/// Defines the counters `names`; None (logged) if the host refuses one.
fn counters<const N: usize>(names: [&str; N]) -> Option<[u32; N]> {
    let mut ids = [0; N];
    for (id, name) in ids.iter_mut().zip(names) {
        match hostcalls::define_metric(MetricType::Counter, name) {
            Ok(defined) => *id = defined,
            Err(status) => {
                log(
                    LogLevel::Error,
                    &format!("rate-limit: cannot define metric {name}: {status:?}"),
                );
                return None;
            }
        }
    }
    Some(ids)
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
