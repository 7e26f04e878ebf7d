//! `upstreams:`: each entry checked key by key into an [`Upstream`].

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use super::ranged;
use crate::model::{
    Balance, Endpoint, HashKey, HealthCheck, Keepalive, Outlier, Protocol, Retries, Upstream,
    UpstreamTimeouts, UpstreamTls,
};
use crate::positions::child;
use crate::problem::Problem;
use crate::report::Report;
use crate::schema::{
    RawEndpoint, RawHash, RawHealthCheck, RawKeepalive, RawOutlier, RawRetries, RawUpstream,
    RawUpstreamTls, StatusItem,
};
use crate::syntax::{check_endpoint, check_host_name, is_name};

const DAY_MS: i64 = 86_400_000;

pub(super) fn upstreams(
    raw: Vec<(String, RawUpstream)>,
    base: &Path,
    report: &mut Report<'_>,
) -> Vec<Upstream> {
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
        out.push(upstream(name, up, &key, base, report));
    }
    out
}

fn upstream(
    name: String,
    up: RawUpstream,
    key: &str,
    base: &Path,
    report: &mut Report<'_>,
) -> Upstream {
    let endpoints = endpoints(&up.endpoints, key, report);
    let protocol = match up.protocol.as_deref() {
        None | Some("http1") => Protocol::Http1,
        Some("http2") => Protocol::Http2,
        Some(other) => {
            report.add(&format!("{key}.protocol"), Problem::Protocol(other.into()));
            Protocol::Http1
        }
    };
    let timeouts = timeouts(&up, key, report);
    let balance = balance(up.balance.as_deref(), up.hash.as_ref(), key, report);
    let tls = up
        .tls
        .as_ref()
        .map(|t| tls(t, &format!("{key}.tls"), base, report));
    let health_check = up
        .health_check
        .as_ref()
        .map(|h| health_check(h, &format!("{key}.health_check"), report));
    let outlier = up
        .outlier
        .as_ref()
        .map(|o| outlier(o, &format!("{key}.outlier"), report));
    let retries = up
        .retries
        .as_ref()
        .map(|r| retries(r, &format!("{key}.retries"), report))
        .unwrap_or_else(default_retries);
    let resolve_interval = up
        .resolve_interval_ms
        .and_then(|v| {
            let k = format!("{key}.resolve_interval_ms");
            ranged(&k, "resolve_interval_ms", v, (100, DAY_MS), report)
        })
        .map_or(Duration::from_secs(30), Duration::from_millis);
    let keepalive = up
        .keepalive
        .as_ref()
        .map(|k| keepalive(k, &format!("{key}.keepalive"), report))
        .unwrap_or_default();
    Upstream {
        name,
        endpoints,
        protocol,
        timeouts,
        balance,
        tls,
        health_check,
        outlier,
        retries,
        resolve_interval,
        keepalive,
        location: report.location_of(key),
    }
}

fn endpoints(raw: &[RawEndpoint], key: &str, report: &mut Report<'_>) -> Vec<Endpoint> {
    let list_key = format!("{key}.endpoints");
    if raw.is_empty() {
        report.add(&list_key, Problem::NoEndpoints);
    }
    raw.iter()
        .enumerate()
        .map(|(j, e)| {
            let item = format!("{list_key}[{j}]");
            if let Err(reason) = check_endpoint(&e.address) {
                let value = e.address.clone();
                report.add(&item, Problem::Endpoint { value, reason });
            }
            let weight = e
                .weight
                .and_then(|w| ranged(&format!("{item}.weight"), "weight", w, (1, 1000), report))
                .map_or(1, |w| w as u32);
            Endpoint {
                address: e.address.clone(),
                weight,
            }
        })
        .collect()
}

/// An upstream's `*_timeout_ms` keys, over the defaults.
fn timeouts(raw: &RawUpstream, key: &str, report: &mut Report<'_>) -> UpstreamTimeouts {
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

fn balance(
    raw: Option<&str>,
    hash: Option<&RawHash>,
    key: &str,
    report: &mut Report<'_>,
) -> Balance {
    let balance = match raw {
        None | Some("round_robin") => Balance::RoundRobin,
        Some("random") => Balance::Random,
        Some("least_requests") => Balance::LeastRequests,
        Some("hash") => {
            let Some(hash) = hash else {
                report.add(&format!("{key}.balance"), Problem::HashKeyMissing);
                return Balance::RoundRobin;
            };
            return match (&hash.header, hash.source_ip) {
                (Some(h), None | Some(false)) if !h.is_empty() => {
                    if http::HeaderName::from_bytes(h.as_bytes()).is_err() {
                        let problem = Problem::HashHeaderName(h.clone());
                        report.add(&format!("{key}.hash.header"), problem);
                    }
                    Balance::Hash(HashKey::Header(h.to_ascii_lowercase()))
                }
                (None, Some(true)) => Balance::Hash(HashKey::SourceIp),
                _ => {
                    report.add(&format!("{key}.hash"), Problem::HashKeyChoice);
                    Balance::RoundRobin
                }
            };
        }
        Some(other) => {
            report.add(&format!("{key}.balance"), Problem::Balance(other.into()));
            Balance::RoundRobin
        }
    };
    if hash.is_some() {
        report.add(&format!("{key}.hash"), Problem::HashWithoutHashBalance);
    }
    balance
}

fn tls(raw: &RawUpstreamTls, key: &str, base: &Path, report: &mut Report<'_>) -> UpstreamTls {
    let mut file = |which: &'static str, value: &Option<String>| {
        let value = value.as_deref()?;
        let path = base.join(value);
        if value.is_empty() || !path.is_file() {
            report.add(&format!("{key}.{which}"), Problem::TlsFile { which, path });
            return None;
        }
        Some(path)
    };
    let ca = file("ca", &raw.ca);
    let cert = file("client_cert", &raw.client_cert);
    let client_key = file("client_key", &raw.client_key);
    if raw.client_cert.is_some() != raw.client_key.is_some() {
        report.add(key, Problem::ClientCertPair);
    }
    if let Some(sni) = &raw.sni
        && let Err(reason) = check_host_name(sni)
    {
        let problem = Problem::Host {
            value: sni.clone(),
            reason,
        };
        report.add(&format!("{key}.sni"), problem);
    }
    UpstreamTls {
        sni: raw.sni.clone(),
        verify: raw.verify.unwrap_or(true),
        ca,
        client_cert: cert.zip(client_key),
    }
}

fn health_check(raw: &RawHealthCheck, key: &str, report: &mut Report<'_>) -> HealthCheck {
    let path = raw.path.clone().unwrap_or_else(|| "/".into());
    if !path.starts_with('/') || path.bytes().any(|b| b <= b' ' || b == 0x7f) {
        report.add(&format!("{key}.path"), Problem::HealthPath(path.clone()));
    }
    let mut num = |name: &'static str, value: Option<i64>, range: (i64, i64), default: u64| {
        value
            .and_then(|v| ranged(&format!("{key}.{name}"), name, v, range, report))
            .unwrap_or(default)
    };
    let interval = num("interval_ms", raw.interval_ms, (100, 3_600_000), 2000);
    let timeout = num("timeout_ms", raw.timeout_ms, (1, 600_000), 1000);
    let healthy = num("healthy_threshold", raw.healthy_threshold, (1, 100), 2);
    let unhealthy = num("unhealthy_threshold", raw.unhealthy_threshold, (1, 100), 3);
    let expected_statuses = match &raw.expected_statuses {
        None => vec![(200, 399)],
        Some(items) => {
            let list_key = format!("{key}.expected_statuses");
            if items.is_empty() {
                report.add(&list_key, Problem::NoStatuses);
            }
            items
                .iter()
                .enumerate()
                .filter_map(|(i, item)| {
                    let range = status_range(&item.0);
                    if range.is_none() {
                        let problem = Problem::StatusRange(item.0.clone());
                        report.add(&format!("{list_key}[{i}]"), problem);
                    }
                    range
                })
                .collect()
        }
    };
    HealthCheck {
        path,
        interval: Duration::from_millis(interval),
        timeout: Duration::from_millis(timeout),
        healthy_threshold: healthy as u32,
        unhealthy_threshold: unhealthy as u32,
        expected_statuses,
    }
}

/// `"200"` or `"200-399"`: an inclusive range of statuses within 100..=599.
fn status_range(s: &str) -> Option<(u16, u16)> {
    let code = |s: &str| {
        let s = s.trim();
        (s.len() == 3 && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse::<u16>().ok())
            .flatten()
            .filter(|c| (100..=599).contains(c))
    };
    match s.split_once('-') {
        Some((lo, hi)) => {
            let (lo, hi) = (code(lo)?, code(hi)?);
            (lo <= hi).then_some((lo, hi))
        }
        None => code(s).map(|c| (c, c)),
    }
}

fn outlier(raw: &RawOutlier, key: &str, report: &mut Report<'_>) -> Outlier {
    let failures = raw
        .consecutive_failures
        .and_then(|v| {
            let k = format!("{key}.consecutive_failures");
            ranged(&k, "consecutive_failures", v, (1, 1000), report)
        })
        .unwrap_or(5);
    let ejection = raw
        .ejection_ms
        .and_then(|v| {
            let k = format!("{key}.ejection_ms");
            ranged(&k, "ejection_ms", v, (1, 3_600_000), report)
        })
        .unwrap_or(30_000);
    Outlier {
        consecutive_failures: failures as u32,
        ejection: Duration::from_millis(ejection),
    }
}

fn default_retries() -> Retries {
    Retries {
        attempts: 0,
        connect_failure: true,
        reset_before_response: false,
        statuses: Vec::new(),
    }
}

fn retries(raw: &RawRetries, key: &str, report: &mut Report<'_>) -> Retries {
    let attempts = raw
        .attempts
        .and_then(|v| ranged(&format!("{key}.attempts"), "attempts", v, (0, 10), report))
        .unwrap_or(0);
    let mut out = Retries {
        attempts: attempts as u32,
        ..default_retries()
    };
    if let Some(on) = &raw.on {
        out.connect_failure = false;
        for (i, StatusItem(item)) in on.iter().enumerate() {
            match item.as_str() {
                "connect_failure" => out.connect_failure = true,
                "reset_before_response" => out.reset_before_response = true,
                "502" | "503" | "504" => out.statuses.push(item.parse().unwrap_or(503)),
                other => {
                    let problem = Problem::RetryOn(other.to_owned());
                    report.add(&format!("{key}.on[{i}]"), problem);
                }
            }
        }
    }
    out
}

fn keepalive(raw: &RawKeepalive, key: &str, report: &mut Report<'_>) -> Keepalive {
    let defaults = Keepalive::default();
    let max_idle = raw
        .max_idle
        .and_then(|v| {
            ranged(
                &format!("{key}.max_idle"),
                "max_idle",
                v,
                (0, 100_000),
                report,
            )
        })
        .map_or(defaults.max_idle, |v| v as usize);
    let idle_timeout = raw
        .idle_timeout_ms
        .and_then(|v| {
            let k = format!("{key}.idle_timeout_ms");
            ranged(&k, "idle_timeout_ms", v, (1, 3_600_000), report)
        })
        .map_or(defaults.idle_timeout, Duration::from_millis);
    Keepalive {
        max_idle,
        idle_timeout,
    }
}

#[cfg(test)]
mod tests;
