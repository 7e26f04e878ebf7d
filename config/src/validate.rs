//! Semantic checks on the parsed file, collecting every problem, and the
//! conversion into [`Config`].

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::model::{ClientLimits, DEFAULT_MAX_PAUSED_STREAMS, Limits, TlsListener};
use crate::problem::Problem;
use crate::report::Report;
use crate::schema::{RawClient, RawConfig, RawFilter, RawLimits, RawTlsListener};
use crate::syntax::is_name;
use crate::{Config, Errors, Filter, ParseOptions, WasmSource};

mod route;

use route::routes;

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
    let base = source.parent().unwrap_or(Path::new(""));
    let upstreams = upstream::upstreams(raw.upstreams.0, base, &mut report);
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

mod upstream;

#[cfg(test)]
mod tests;
