//! Semantic checks on the parsed file, collecting every problem, and the
//! conversion into [`Config`].

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::model::{
    ClientLimits, DEFAULT_MAX_PAUSED_STREAMS, Limits, Protocol, TlsListener, UpstreamTimeouts,
};
use crate::positions::child;
use crate::problem::Problem;
use crate::report::Report;
use crate::schema::{
    RawClient, RawConfig, RawFilter, RawLimits, RawRoute, RawTlsListener, RawUpstream,
};
use crate::syntax::{check_endpoint, check_host_pattern, is_name};
use crate::{Config, Errors, Filter, ParseOptions, Route, Upstream, WasmSource};

/// Checks `raw` as read from `source`; every problem ends up in `report`.
pub(crate) fn validate(
    raw: RawConfig,
    source: &Path,
    opts: &ParseOptions,
    mut report: Report<'_>,
) -> Result<Config, Errors> {
    let listen = listen(&raw, &mut report);
    let admin = raw
        .admin
        .as_deref()
        .and_then(|a| socket_addr(a, "admin", &mut report));
    let threads = raw.threads.and_then(|t| match usize::try_from(t) {
        Ok(n @ 1..=1024) => Some(n),
        _ => {
            report.add("threads", Problem::Threads(t));
            None
        }
    });
    let upstreams = upstreams(raw.upstreams.0, &mut report);
    let base = source.parent().unwrap_or(Path::new(""));
    let listen_tls = raw
        .listen_tls
        .unwrap_or_default()
        .into_iter()
        .enumerate()
        .filter_map(|(i, t)| tls_listener(i, t, base, &mut report))
        .collect();
    let limits = raw
        .limits
        .map(|l| limits(&l, "limits", &mut report))
        .unwrap_or_default();
    let client = raw
        .client
        .map(|c| client(&c, &mut report))
        .unwrap_or_default();
    let filters: Vec<Filter> = raw
        .filters
        .unwrap_or_default()
        .into_iter()
        .enumerate()
        .map(|(i, f)| filter(i, f, base, opts, limits, &mut report))
        .collect();
    check_unique_filter_names(&filters, &mut report);
    let routes = routes(raw.routes, &upstreams, &filters, &mut report);
    let cache_dir = raw
        .cache_dir
        .as_deref()
        .and_then(|d| cache_dir(d, base, &mut report));
    let upgrade_sock = raw
        .upgrade_sock
        .as_deref()
        .and_then(|s| upgrade_sock(s, base, &mut report));
    let max_paused_streams = raw
        .max_paused_streams
        .map_or(Some(DEFAULT_MAX_PAUSED_STREAMS), |n| {
            let n = ranged(
                "max_paused_streams",
                "max_paused_streams",
                n,
                (1, 1_000_000),
                &mut report,
            )?;
            usize::try_from(n).ok()
        });
    let forwarding = crate::forwarding::validate(raw.forwarding.unwrap_or_default(), &mut report);
    let access_log = raw
        .access_log
        .and_then(|a| crate::access_log::validate(a, base, &mut report));
    report.finish()?;
    Ok(Config {
        source: source.to_path_buf(),
        listen,
        admin,
        threads,
        upstreams,
        filters,
        routes,
        cache_dir,
        upgrade_sock,
        listen_tls,
        limits,
        client,
        max_paused_streams: max_paused_streams.unwrap_or(DEFAULT_MAX_PAUSED_STREAMS),
        forwarding,
        access_log,
    })
}

/// `client:`, each value within its range; a value out of range is reported and replaced by
/// its default.
fn client(raw: &RawClient, report: &mut Report<'_>) -> ClientLimits {
    let defaults = ClientLimits::default();
    let mut check = |name: &'static str, value: Option<i64>, min: i64, max: i64, default: u64| {
        value
            .and_then(|v| ranged(&format!("client.{name}"), name, v, (min, max), report))
            .unwrap_or(default)
    };
    ClientLimits {
        header_timeout_ms: check(
            "header_timeout_ms",
            raw.header_timeout_ms,
            100,
            600_000,
            defaults.header_timeout_ms,
        ),
        // Pingora refuses a header block over 1 MiB whatever we say; half that leaves room
        // for the body bytes read along with the header.
        max_header_bytes: check(
            "max_header_bytes",
            raw.max_header_bytes,
            1024,
            512 * 1024,
            defaults.max_header_bytes,
        ),
        // Pingora's HTTP/1 parser stops at 256 headers.
        max_headers: check("max_headers", raw.max_headers, 1, 256, defaults.max_headers),
        body_timeout_ms: check(
            "body_timeout_ms",
            raw.body_timeout_ms,
            100,
            3_600_000,
            defaults.body_timeout_ms,
        ),
        body_min_rate: check(
            "body_min_rate",
            raw.body_min_rate,
            0,
            1_000_000_000,
            defaults.body_min_rate,
        ),
        keepalive_timeout_ms: check(
            "keepalive_timeout_ms",
            raw.keepalive_timeout_ms,
            0,
            3_600_000,
            defaults.keepalive_timeout_ms,
        ),
    }
}

/// One `listen_tls:` item: an address and readable certificate and key files.
fn tls_listener(
    i: usize,
    raw: RawTlsListener,
    base: &Path,
    report: &mut Report<'_>,
) -> Option<TlsListener> {
    let key = format!("listen_tls[{i}]");
    let address = socket_addr(&raw.address, &format!("{key}.address"), report);
    let mut file = |which: &'static str, value: &str| {
        let path = base.join(value);
        if value.is_empty() || !path.is_file() {
            report.add(&format!("{key}.{which}"), Problem::TlsFile { which, path });
            return None;
        }
        Some(path)
    };
    let cert = file("cert", &raw.cert);
    let tls_key = file("key", &raw.key);
    Some(TlsListener {
        address: address?,
        cert: cert?,
        key: tls_key?,
    })
}

/// A `limits:` mapping, each value within its range.
fn limits(raw: &RawLimits, key: &str, report: &mut Report<'_>) -> Limits {
    let mut check = |name: &'static str, value: Option<i64>, min: i64, max: i64| {
        ranged(&format!("{key}.{name}"), name, value?, (min, max), report)
    };
    Limits {
        callback_deadline_ms: check("callback_deadline_ms", raw.callback_deadline_ms, 1, 60_000),
        max_memory_bytes: check("max_memory_bytes", raw.max_memory_bytes, 1 << 20, 4 << 30),
        max_body_bytes: check("max_body_bytes", raw.max_body_bytes, 0, 1 << 30),
        compile_timeout_ms: check("compile_timeout_ms", raw.compile_timeout_ms, 1, 600_000),
    }
}

/// `value` if it is within `min..=max`; otherwise reported at `key`.
fn ranged(
    key: &str,
    name: &'static str,
    value: i64,
    (min, max): (i64, i64),
    report: &mut Report<'_>,
) -> Option<u64> {
    if value < min || value > max {
        let problem = Problem::Limit {
            name,
            value,
            min,
            max,
        };
        report.add(key, problem);
        return None;
    }
    u64::try_from(value).ok()
}

/// An upstream's `*_timeout_ms` keys, over the defaults.
fn timeouts(raw: &RawUpstream, key: &str, report: &mut Report<'_>) -> UpstreamTimeouts {
    const DAY_MS: i64 = 86_400_000;
    let mut ms = |name: &'static str, value: Option<i64>, max: i64| {
        ranged(&format!("{key}.{name}"), name, value?, (1, max), report).map(Duration::from_millis)
    };
    let defaults = UpstreamTimeouts::default();
    UpstreamTimeouts {
        connect: ms("connect_timeout_ms", raw.connect_timeout_ms, 600_000)
            .unwrap_or(defaults.connect),
        read: ms("read_timeout_ms", raw.read_timeout_ms, DAY_MS).unwrap_or(defaults.read),
        write: ms("write_timeout_ms", raw.write_timeout_ms, DAY_MS).unwrap_or(defaults.write),
        response: ms("response_timeout_ms", raw.response_timeout_ms, DAY_MS).or(defaults.response),
    }
}

/// `cache_dir:`: created by the proxy if missing, so only an existing non-directory is wrong.
fn cache_dir(raw: &str, base: &Path, report: &mut Report<'_>) -> Option<PathBuf> {
    if raw.is_empty() {
        report.add("cache_dir", Problem::EmptyPath("cache_dir"));
        return None;
    }
    let path = base.join(raw);
    match std::fs::metadata(&path) {
        Ok(m) if !m.is_dir() => {
            report.add("cache_dir", Problem::CacheDirNotDir(path));
            None
        }
        _ => Some(path),
    }
}

/// `upgrade_sock:`: a path short enough for a Unix socket address.
fn upgrade_sock(raw: &str, base: &Path, report: &mut Report<'_>) -> Option<PathBuf> {
    if raw.is_empty() {
        report.add("upgrade_sock", Problem::EmptyPath("upgrade_sock"));
        return None;
    }
    let path = base.join(raw);
    let len = path.as_os_str().len();
    if len > 107 {
        report.add("upgrade_sock", Problem::SocketPathTooLong { path, len });
        return None;
    }
    Some(path)
}

fn socket_addr(value: &str, key: &str, report: &mut Report<'_>) -> Option<SocketAddr> {
    let parsed = value.parse().ok();
    if parsed.is_none() {
        let value = value.to_owned();
        report.add(key, Problem::SocketAddr { value });
    }
    parsed
}

fn listen(raw: &RawConfig, report: &mut Report<'_>) -> Vec<SocketAddr> {
    let addrs = &raw.listen.items;
    if addrs.is_empty() {
        report.add("listen", Problem::NoListen);
    }
    addrs
        .iter()
        .enumerate()
        .filter_map(|(i, a)| {
            let key = if raw.listen.list {
                format!("listen[{i}]")
            } else {
                "listen".to_owned()
            };
            socket_addr(a, &key, report)
        })
        .collect()
}

fn upstreams(raw: Vec<(String, RawUpstream)>, report: &mut Report<'_>) -> Vec<Upstream> {
    if raw.is_empty() {
        report.add("upstreams", Problem::NoUpstreams);
    }
    // Names seen so far, with how often, to place a repeat at its own key.
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut out = Vec::with_capacity(raw.len());
    for (name, up) in raw {
        let key = child("upstreams", &name);
        let count = seen.entry(name.clone()).or_default();
        if *count > 0 {
            let first_line = report.location_of(&key).line;
            let at = report.location(report.positions().nth(&key, *count));
            let problem = Problem::Duplicate {
                kind: "upstream",
                name: name.clone(),
                first_line,
            };
            report.add_at(&key, at, problem.to_string());
        } else if !is_name(&name) {
            let name = name.clone();
            report.add(
                &key,
                Problem::Name {
                    kind: "upstream",
                    name,
                },
            );
        }
        *count += 1;
        let endpoints_key = format!("{key}.endpoints");
        if up.endpoints.is_empty() {
            report.add(&endpoints_key, Problem::NoEndpoints);
        }
        for (j, e) in up.endpoints.iter().enumerate() {
            if let Err(reason) = check_endpoint(e) {
                let value = e.clone();
                report.add(
                    &format!("{endpoints_key}[{j}]"),
                    Problem::Endpoint { value, reason },
                );
            }
        }
        let protocol = match up.protocol.as_deref() {
            None | Some("http1") => Protocol::Http1,
            Some("http2") => Protocol::Http2,
            Some(other) => {
                report.add(
                    &format!("{key}.protocol"),
                    Problem::Protocol(other.to_owned()),
                );
                Protocol::Http1
            }
        };
        let timeouts = timeouts(&up, &key, report);
        out.push(Upstream {
            name,
            protocol,
            endpoints: up.endpoints,
            timeouts,
        });
    }
    out
}

fn filter(
    i: usize,
    raw: RawFilter,
    base: &Path,
    opts: &ParseOptions,
    defaults: Limits,
    report: &mut Report<'_>,
) -> Filter {
    let key = format!("filters[{i}]");
    if !is_name(&raw.name) {
        let name = raw.name.clone();
        report.add(
            &format!("{key}.name"),
            Problem::Name {
                kind: "filter",
                name,
            },
        );
    }
    let wasm = wasm_source(&raw.wasm, base, opts).unwrap_or_else(|problem| {
        report.add(&format!("{key}.wasm"), problem);
        WasmSource::Builtin(raw.wasm.clone())
    });
    let mut buffer = |field: &str, value| {
        buffer(value).unwrap_or_else(|problem| {
            report.add(&format!("{key}.{field}"), problem);
            Vec::new()
        })
    };
    let configuration = buffer("configuration", raw.configuration);
    let vm_configuration = buffer("vm_configuration", raw.vm_configuration);
    Filter {
        name: raw.name,
        wasm,
        configuration,
        vm_configuration,
        root_id: raw.root_id.unwrap_or_default(),
        vm_id: raw.vm_id.unwrap_or_default(),
        fail_open: raw.fail_open.unwrap_or(false),
        limits: raw
            .limits
            .map(|l| limits(&l, &format!("{key}.limits"), report))
            .unwrap_or_default()
            .or(defaults),
        location: report.location_of(&key),
    }
}

fn wasm_source(raw: &str, base: &Path, opts: &ParseOptions) -> Result<WasmSource, Problem> {
    if let Some(name) = raw.strip_prefix("builtin:") {
        return if opts.builtin_filters.iter().any(|b| b == name) {
            Ok(WasmSource::Builtin(name.to_owned()))
        } else {
            Err(Problem::UnknownBuiltin {
                name: name.to_owned(),
                known: opts.builtin_filters.clone(),
            })
        };
    }
    if raw.is_empty() {
        return Err(Problem::EmptyWasm);
    }
    // `join` keeps an absolute `raw` as it is.
    let path = base.join(raw);
    match std::fs::metadata(&path) {
        Ok(m) if m.is_dir() => Err(Problem::WasmIsDir(path)),
        Ok(_) => Ok(WasmSource::File(path)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Problem::WasmMissing(path)),
        Err(source) => Err(Problem::WasmAccess { path, source }),
    }
}

/// The bytes a filter sees for `configuration:` / `vm_configuration:`.
fn buffer(value: Option<serde_yaml::Value>) -> Result<Vec<u8>, Problem> {
    match value {
        None | Some(serde_yaml::Value::Null) => Ok(Vec::new()),
        Some(serde_yaml::Value::String(s)) => Ok(s.into_bytes()),
        Some(other) => serde_json::to_vec(&other).map_err(Problem::Json),
    }
}

fn check_unique_filter_names(filters: &[Filter], report: &mut Report<'_>) {
    let mut first: HashMap<&str, usize> = HashMap::new();
    for (i, f) in filters.iter().enumerate() {
        if let Some(&j) = first.get(f.name.as_str()) {
            let first_line = report.location_of(&format!("filters[{j}].name")).line;
            let problem = Problem::Duplicate {
                kind: "filter name",
                name: f.name.clone(),
                first_line,
            };
            report.add(&format!("filters[{i}].name"), problem);
        } else {
            first.insert(&f.name, i);
        }
    }
}

fn routes(
    raw: Vec<RawRoute>,
    upstreams: &[Upstream],
    filters: &[Filter],
    report: &mut Report<'_>,
) -> Vec<Route> {
    if raw.is_empty() {
        report.add("routes", Problem::NoRoutes);
    }
    let upstream_names = unique(upstreams.iter().map(|u| u.name.as_str()));
    let filter_names = unique(filters.iter().map(|f| f.name.as_str()));
    raw.into_iter()
        .enumerate()
        .map(|(i, r)| route(i, r, &upstream_names, &filter_names, report))
        .collect()
}

fn route(
    i: usize,
    raw: RawRoute,
    upstream_names: &[String],
    filter_names: &[String],
    report: &mut Report<'_>,
) -> Route {
    let key = format!("routes[{i}]");
    let (path_prefix, host) = raw
        .matcher
        .map_or((None, None), |m| (m.path_prefix, m.host));
    let path_prefix = path_prefix.unwrap_or_else(|| "/".to_owned());
    if !path_prefix.starts_with('/') {
        let problem = Problem::PathPrefix(path_prefix.clone());
        report.add(&format!("{key}.match.path_prefix"), problem);
    }
    if let Some(h) = &host
        && let Err(reason) = check_host_pattern(h)
    {
        let problem = Problem::Host {
            value: h.clone(),
            reason,
        };
        report.add(&format!("{key}.match.host"), problem);
    }
    if !upstream_names.contains(&raw.upstream) {
        let problem = Problem::UnknownUpstream {
            name: raw.upstream.clone(),
            known: upstream_names.to_vec(),
        };
        report.add(&format!("{key}.upstream"), problem);
    }
    let chain = match raw.filters {
        None => filter_names.to_vec(),
        Some(list) => {
            for (j, name) in list.iter().enumerate() {
                let item = format!("{key}.filters[{j}]");
                if !filter_names.contains(name) {
                    let problem = Problem::UnknownFilter {
                        name: name.clone(),
                        known: filter_names.to_vec(),
                    };
                    report.add(&item, problem);
                } else if list[..j].contains(name) {
                    report.add(&item, Problem::RepeatedRouteFilter(name.clone()));
                }
            }
            list
        }
    };
    Route {
        host: host.map(|h| h.to_ascii_lowercase()),
        path_prefix,
        upstream: raw.upstream,
        filters: chain,
        location: report.location_of(&key),
    }
}

/// Names in first-seen order without repeats (repeats are reported elsewhere).
fn unique<'n>(names: impl Iterator<Item = &'n str>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for n in names {
        if !out.iter().any(|o| o == n) {
            out.push(n.to_owned());
        }
    }
    out
}

#[cfg(test)]
mod tests;
