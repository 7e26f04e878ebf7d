//! A load loop for tests that change the proxy while it serves: a few clients send requests
//! one after another until stopped, or until a bound on time or count, and record every
//! failure and which version of a filter answered.
//!
//! The version is the `x-version` header. A filter under test sets it on the request (the
//! origin echoes the request headers in its JSON body) and on the response, so a response
//! shows which chain ran each phase. Every response must carry exactly one version, and the
//! same one the origin saw: a request runs entirely on one generation.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

/// How the load runs.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Concurrent clients, each sending one request at a time.
    pub clients: usize,
    /// Pause between two requests of one client.
    pub pause: Duration,
    /// The loop stops by itself after this long...
    pub max_time: Duration,
    /// ...or after this many requests in all.
    pub max_requests: u64,
    /// Reuse connections (keep-alive). Off: one connection per request.
    pub keep_alive: bool,
    /// Check the `x-version` headers (see the module docs).
    pub check_version: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            clients: 2,
            pause: Duration::from_millis(2),
            max_time: Duration::from_secs(60),
            max_requests: 50_000,
            keep_alive: true,
            check_version: true,
        }
    }
}

/// What the load saw.
#[derive(Debug, Default, Clone)]
pub struct LoadReport {
    pub requests: u64,
    /// Every failed request: a transport error, a status other than 200, or a version check
    /// that failed; the first 20 described.
    pub failures: u64,
    pub failure_samples: Vec<String>,
    /// Responses per `x-version` value.
    pub versions: BTreeMap<String, u64>,
    /// Whether it stopped on its own bound rather than when asked.
    pub hit_bound: bool,
}

impl LoadReport {
    fn merge(&mut self, other: LoadReport) {
        self.requests += other.requests;
        self.failures += other.failures;
        for s in other.failure_samples {
            if self.failure_samples.len() < 20 {
                self.failure_samples.push(s);
            }
        }
        for (v, n) in other.versions {
            *self.versions.entry(v).or_default() += n;
        }
        self.hit_bound |= other.hit_bound;
    }

    fn fail(&mut self, what: String) {
        self.failures += 1;
        if self.failure_samples.len() < 20 {
            self.failure_samples.push(what);
        }
    }
}

/// A running load; [`Load::stop`] ends it and returns its report.
#[derive(Debug)]
pub struct Load {
    stop: Arc<AtomicBool>,
    tasks: Vec<JoinHandle<LoadReport>>,
}

impl Load {
    /// Starts loading `url`.
    pub fn start(url: String, options: LoadOptions) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let started = Instant::now();
        let per_client = options.max_requests / options.clients.max(1) as u64;
        let tasks = (0..options.clients.max(1))
            .map(|_| {
                let stop = stop.clone();
                let url = url.clone();
                let options = options.clone();
                tokio::spawn(async move { client(url, options, per_client, started, stop).await })
            })
            .collect();
        Load { stop, tasks }
    }

    /// Stops the clients (each finishes its request in flight) and returns what they saw.
    pub async fn stop(self) -> LoadReport {
        self.stop.store(true, Ordering::Relaxed);
        let mut report = LoadReport::default();
        for task in self.tasks {
            match task.await {
                Ok(r) => report.merge(r),
                Err(e) => report.fail(format!("a load client panicked: {e}")),
            }
        }
        report
    }
}

async fn client(
    url: String,
    options: LoadOptions,
    max_requests: u64,
    started: Instant,
    stop: Arc<AtomicBool>,
) -> LoadReport {
    let mut builder = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10));
    if !options.keep_alive {
        builder = builder.pool_max_idle_per_host(0);
    }
    let http = builder.build().expect("reqwest client");
    let mut report = LoadReport::default();
    while !stop.load(Ordering::Relaxed) {
        if started.elapsed() > options.max_time || report.requests >= max_requests {
            report.hit_bound = true;
            break;
        }
        report.requests += 1;
        match one(&http, &url, options.check_version).await {
            Ok(version) => *report.versions.entry(version).or_default() += 1,
            Err(what) => report.fail(what),
        }
        tokio::time::sleep(options.pause).await;
    }
    report
}

/// One request; the version that answered it.
async fn one(http: &reqwest::Client, url: &str, check_version: bool) -> Result<String, String> {
    let resp = http
        .get(url)
        .send()
        .await
        .map_err(|e| format!("request failed: {e:?}"))?;
    let status = resp.status();
    let versions = crate::client::header_all(&resp, "x-version");
    let body = resp
        .text()
        .await
        .map_err(|e| format!("body failed: {e:?}"))?;
    if status != 200 {
        return Err(format!("status {status}: {body}"));
    }
    if !check_version {
        return Ok(String::new());
    }
    let [version] = versions.as_slice() else {
        return Err(format!("x-version in the response: {versions:?}"));
    };
    let json: serde_json::Value =
        serde_json::from_str(&body).map_err(|e| format!("origin body: {e}: {body}"))?;
    let seen: Vec<&str> = json["headers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|pair| pair[0] == "x-version")
        .filter_map(|pair| pair[1].as_str())
        .collect();
    if seen != [version.as_str()] {
        return Err(format!(
            "the response says {version}, the origin saw x-version {seen:?}"
        ));
    }
    Ok(version.clone())
}
