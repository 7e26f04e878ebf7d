//! What the load-balancing tests (issue 11: TLS origins, balancing, health, retries) share:
//! a loopback backend that can be switched to failing health checks, killed and brought back
//! on the same port; a config with one upstream `api`; readers for `GET /upstreams` and
//! `/metrics`; and bounded waits.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::task::{AbortHandle, JoinHandle};
use wasmgate_integration::client;
use wasmgate_integration::proxy::Proxy;

/// The health-check path every test configures.
pub const HEALTH_PATH: &str = "/healthz";

#[derive(Debug)]
struct State {
    name: String,
    /// The status `/healthz` answers.
    health_status: AtomicU16,
    /// The status every other path answers.
    status: AtomicU16,
    /// Requests other than health checks: (method, path, body length).
    requests: Mutex<Vec<(String, String, usize)>>,
    health_checks: AtomicUsize,
    /// The connections being served, aborted by [`Backend::kill`].
    conns: Mutex<Vec<AbortHandle>>,
}

/// A loopback HTTP/1.1 + h2c backend. `/healthz` answers the health status (200 at first);
/// every other path answers the status (200 at first) with `x-origin-name: NAME` and the name
/// as the body.
#[derive(Debug)]
pub struct Backend {
    pub addr: SocketAddr,
    state: Arc<State>,
    accept: Option<JoinHandle<()>>,
}

impl Backend {
    pub async fn start(name: &str) -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let state = Arc::new(State {
            name: name.to_string(),
            health_status: AtomicU16::new(200),
            status: AtomicU16::new(200),
            requests: Mutex::new(Vec::new()),
            health_checks: AtomicUsize::new(0),
            conns: Mutex::new(Vec::new()),
        });
        let addr = listener.local_addr().expect("addr");
        let accept = Some(serve(listener, state.clone()));
        Backend {
            addr,
            state,
            accept,
        }
    }

    /// `127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        self.addr.to_string()
    }

    pub fn name(&self) -> &str {
        &self.state.name
    }

    /// Makes `/healthz` answer `status`.
    pub fn set_health(&self, status: u16) {
        self.state.health_status.store(status, Ordering::SeqCst);
    }

    /// Makes every other path answer `status`.
    pub fn set_status(&self, status: u16) {
        self.state.status.store(status, Ordering::SeqCst);
    }

    /// Requests other than health checks received so far.
    pub fn requests(&self) -> usize {
        self.state.requests.lock().map(|v| v.len()).unwrap_or(0)
    }

    /// Requests other than health checks, as (method, path, body length).
    pub fn request_log(&self) -> Vec<(String, String, usize)> {
        self.state
            .requests
            .lock()
            .map(|v| v.clone())
            .unwrap_or_default()
    }

    /// Health checks received so far.
    pub fn health_checks(&self) -> usize {
        self.state.health_checks.load(Ordering::SeqCst)
    }

    /// Stops listening and closes every connection: the port refuses connections.
    pub fn kill(&mut self) {
        if let Some(task) = self.accept.take() {
            task.abort();
        }
        if let Ok(mut conns) = self.state.conns.lock() {
            for conn in conns.drain(..) {
                conn.abort();
            }
        }
    }

    /// Listens again on the same port (retried for up to 10 s while the port is busy).
    pub async fn revive(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let listener = loop {
            match TcpListener::bind(self.addr).await {
                Ok(l) => break l,
                Err(e) if Instant::now() > deadline => panic!("rebind {}: {e}", self.addr),
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        };
        self.accept = Some(serve(listener, self.state.clone()));
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.kill();
    }
}

fn serve(listener: TcpListener, state: Arc<State>) -> JoinHandle<()> {
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let st = state.clone();
            let conn = tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| handle(req, st.clone()));
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
            if let Ok(mut conns) = state.conns.lock() {
                conns.retain(|c| !c.is_finished());
                conns.push(conn.abort_handle());
            }
        }
    })
}

async fn handle(
    req: Request<Incoming>,
    state: Arc<State>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    if path == HEALTH_PATH {
        state.health_checks.fetch_add(1, Ordering::SeqCst);
        let status = state.health_status.load(Ordering::SeqCst);
        return Ok(reply(status, &state.name));
    }
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    if let Ok(mut log) = state.requests.lock() {
        log.push((method, path, body.len()));
    }
    Ok(reply(state.status.load(Ordering::SeqCst), &state.name))
}

fn reply(status: u16, name: &str) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("x-origin-name", name)
        .body(Full::new(Bytes::from(name.to_string())))
        .expect("valid response")
}

/// A config with one upstream `api` whose mapping is `upstream` (YAML lines indented by 4
/// spaces, e.g. `    endpoints: [...]`), `more` appended to `upstreams:` (more upstreams,
/// indented by 2), and the routes `routes` (list items at column 2) followed by a catch-all
/// to `api`.
pub fn config(upstream: &str, more: &str, routes: &str) -> String {
    format!(
        "listen: \"{{listen}}\"\nadmin: \"{{admin}}\"\nthreads: 2\nupstreams:\n  api:\n{upstream}{more}routes:\n{routes}  - upstream: api\n    filters: []\n"
    )
}

/// `    endpoints: ["A", "B"]` for these endpoints.
pub fn endpoints(list: &[String]) -> String {
    let items: Vec<String> = list.iter().map(|e| format!("\"{e}\"")).collect();
    format!("    endpoints: [{}]\n", items.join(", "))
}

/// `GET /upstreams` of the admin listener, as JSON (`Value::Null` if it failed).
pub async fn upstreams(proxy: &Proxy) -> Value {
    let Ok(resp) = client::http()
        .get(proxy.admin_url("/upstreams"))
        .send()
        .await
    else {
        return Value::Null;
    };
    resp.json().await.unwrap_or(Value::Null)
}

/// The `/upstreams` entry of upstream `name`.
pub fn upstream<'v>(all: &'v Value, name: &str) -> Option<&'v Value> {
    all["upstreams"]
        .as_array()?
        .iter()
        .find(|u| u["name"] == name)
}

/// The `/upstreams` entry of the endpoint whose resolved `address` is `address`, in upstream
/// `name`.
pub fn endpoint<'v>(all: &'v Value, name: &str, address: &str) -> Option<&'v Value> {
    upstream(all, name)?["endpoints"]
        .as_array()?
        .iter()
        .find(|e| e["address"] == address)
}

/// Polls `GET /upstreams` every 50 ms until `check(endpoint entry)` holds for the endpoint
/// `address` of upstream `api`, up to `timeout`; the time it took, or `None`.
pub async fn wait_endpoint(
    proxy: &Proxy,
    address: &str,
    timeout: Duration,
    check: impl Fn(&Value) -> bool,
) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < timeout {
        let all = upstreams(proxy).await;
        if endpoint(&all, "api", address).is_some_and(&check) {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

/// The `/metrics` text of the admin listener.
pub async fn metrics(proxy: &Proxy) -> String {
    match client::http().get(proxy.admin_url("/metrics")).send().await {
        Ok(resp) => resp.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// The value of metric `name` with exactly these labels (in any order), if present.
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?;
        let (label_text, value) = match rest.strip_prefix('{') {
            Some(inner) => inner.split_once("} ")?,
            None => ("", rest.strip_prefix(' ')?),
        };
        let mut found: Vec<(String, String)> = label_text
            .split("\",")
            .filter(|p| !p.is_empty())
            .filter_map(|p| {
                let (k, v) = p.split_once("=\"")?;
                Some((k.trim().to_string(), v.trim_end_matches('"').to_string()))
            })
            .collect();
        let mut want: Vec<(String, String)> = labels
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect();
        found.sort();
        want.sort();
        (found == want).then(|| value.trim().parse().ok())?
    })
}

/// Sends `n` GETs of `path` (with `headers`), `parallel` at a time; counts the answers per
/// `x-origin-name` (a failed request counts under `status NNN` or `error`).
pub async fn spread(
    proxy: &Proxy,
    path: &str,
    headers: &[(&str, &str)],
    n: usize,
    parallel: usize,
) -> BTreeMap<String, usize> {
    let http = client::http();
    let url = proxy.url(path);
    let headers: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
        .collect();
    let per_task = n.div_ceil(parallel.max(1));
    let mut tasks = Vec::new();
    for t in 0..parallel.max(1) {
        let (http, url, headers) = (http.clone(), url.clone(), headers.clone());
        let count = per_task.min(n.saturating_sub(t * per_task));
        tasks.push(tokio::spawn(async move {
            let mut seen = BTreeMap::new();
            for _ in 0..count {
                let who = who_answers(&http, &url, &headers).await;
                *seen.entry(who).or_insert(0) += 1;
            }
            seen
        }));
    }
    let mut all = BTreeMap::new();
    for task in tasks {
        for (k, v) in task.await.expect("a request task") {
            *all.entry(k).or_insert(0) += v;
        }
    }
    all
}

/// Who answered one GET: the `x-origin-name` of a 200, else `status NNN` or `error`.
pub async fn who_answers(
    http: &reqwest::Client,
    url: &str,
    headers: &[(String, String)],
) -> String {
    let mut req = http.get(url);
    for (k, v) in headers {
        req = req.header(k, v);
    }
    match req.send().await {
        Ok(resp) if resp.status() == 200 => client::header_all(&resp, "x-origin-name").join(","),
        Ok(resp) => format!("status {}", resp.status().as_u16()),
        Err(e) => format!("error {e}"),
    }
}

/// `POST /reload` on the admin listener; the JSON outcome.
pub async fn reload(proxy: &Proxy) -> Value {
    let resp = client::http()
        .post(proxy.admin_url("/reload"))
        .send()
        .await
        .expect("POST /reload");
    resp.json().await.unwrap_or(Value::Null)
}

/// The log lines that contain every one of `needles`.
pub fn log_lines_with(proxy: &Proxy, needles: &[&str]) -> Vec<String> {
    proxy
        .log()
        .lines()
        .filter(|l| needles.iter().all(|n| l.contains(n)))
        .map(str::to_string)
        .collect()
}
