//! Checks on `routes:`, and their conversion into [`Route`]s: match kinds, actions, rewrites.

use std::collections::HashMap;
use std::time::Duration;

use http::{HeaderName, HeaderValue};
use regex::Regex;

use super::ranged;
use crate::model::{
    HeaderMatch, PathMatch, QueryMatch, Redirect, Respond, Rewrite, RouteAction, RouteMatch,
    ValueMatch, WeightedUpstream,
};
use crate::problem::{Problem, RouteProblem};
use crate::report::Report;
use crate::schema::{RawHeaderMatch, RawRedirect, RawRespond, RawRoute, RawWeighted};
use crate::syntax::{check_host_pattern, is_name};
use crate::{Filter, Route, Upstream};

/// The most a `respond.body` may hold.
const MAX_BODY: usize = 1 << 20;

pub(super) fn routes(
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
    let routes: Vec<Route> = raw
        .into_iter()
        .enumerate()
        .map(|(i, r)| route(i, r, &upstream_names, &filter_names, report))
        .collect();
    let mut first: HashMap<&str, usize> = HashMap::new();
    for (i, r) in routes.iter().enumerate() {
        if let Some(&j) = first.get(r.name.as_str()) {
            let first_line = report.location_of(&format!("routes[{j}].name")).line;
            let problem = Problem::Duplicate {
                kind: "route name",
                name: r.name.clone(),
                first_line,
            };
            report.add(&format!("routes[{i}].name"), problem);
        } else {
            first.insert(&r.name, i);
        }
    }
    routes
}

fn bad(report: &mut Report<'_>, key: &str, problem: RouteProblem) {
    report.add(key, problem.into());
}

fn route(
    i: usize,
    raw: RawRoute,
    upstream_names: &[String],
    filter_names: &[String],
    report: &mut Report<'_>,
) -> Route {
    let key = format!("routes[{i}]");
    let action = action(&raw, &key, upstream_names, report);
    let name = match raw.name {
        Some(name) => {
            if !is_name(&name) {
                let kind = "route";
                let problem = Problem::Name {
                    kind,
                    name: name.clone(),
                };
                report.add(&format!("{key}.name"), problem);
            }
            name
        }
        None => format!("route-{i}"),
    };
    let matcher = raw
        .matcher
        .map(|m| route_match(m, &format!("{key}.match"), report))
        .unwrap_or_default();
    let to_upstream = matches!(action, RouteAction::Upstream(_) | RouteAction::Split(_));
    let mut upstream_only = |present: bool, what: &'static str| {
        if present && !to_upstream {
            bad(
                report,
                &format!("{key}.{what}"),
                RouteProblem::UpstreamOnly(what),
            );
        }
    };
    upstream_only(raw.rewrite.is_some(), "rewrite");
    upstream_only(raw.timeout_ms.is_some(), "timeout_ms");
    let rewrite = raw.rewrite.map_or_else(Rewrite::default, |r| {
        let key = format!("{key}.rewrite");
        Rewrite {
            path_prefix: r
                .path_prefix
                .filter(|p| check_path(p, "path_prefix", &format!("{key}.path_prefix"), report)),
            host: r
                .host
                .filter(|h| check_authority(h, &format!("{key}.host"), report)),
        }
    });
    let timeout = raw.timeout_ms.filter(|_| to_upstream).and_then(|ms| {
        let ms = ranged(
            &format!("{key}.timeout_ms"),
            "timeout_ms",
            ms,
            (1, 86_400_000),
            report,
        );
        ms.map(Duration::from_millis)
    });
    let filters = match raw.filters {
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
        name,
        matcher,
        action,
        rewrite,
        timeout,
        filters,
        location: report.location_of(&key),
    }
}

fn route_match(raw: crate::schema::RawMatch, key: &str, report: &mut Report<'_>) -> RouteMatch {
    let given: Vec<&'static str> = [
        ("path_prefix", raw.path_prefix.is_some()),
        ("path", raw.path.is_some()),
        ("path_regex", raw.path_regex.is_some()),
    ]
    .into_iter()
    .filter_map(|(k, present)| present.then_some(k))
    .collect();
    if given.len() > 1 {
        let last = latest(report, key, &given);
        bad(report, &format!("{key}.{last}"), RouteProblem::PathKinds);
    }
    // Each one given is checked, though only one may be.
    let exact = raw.path.inspect(|p| {
        check_path(p, "path", &format!("{key}.path"), report);
    });
    let re = raw
        .path_regex
        .and_then(|re| regex(&re, &format!("{key}.path_regex"), report));
    let prefix = raw.path_prefix.inspect(|p| {
        if !p.starts_with('/') {
            let problem = Problem::PathPrefix(p.clone());
            report.add(&format!("{key}.path_prefix"), problem);
        }
    });
    let path = match (prefix, exact, re) {
        (Some(prefix), _, _) => PathMatch::Prefix(prefix),
        (None, Some(exact), _) => PathMatch::Exact(exact),
        (None, None, Some(re)) => PathMatch::Regex(re),
        (None, None, None) => PathMatch::default(),
    };
    if let Some(h) = &raw.host
        && let Err(reason) = check_host_pattern(h)
    {
        let problem = Problem::Host {
            value: h.clone(),
            reason,
        };
        report.add(&format!("{key}.host"), problem);
    }
    let methods = raw.methods.map_or_else(Vec::new, |methods| {
        if methods.is_empty() {
            bad(report, &format!("{key}.methods"), RouteProblem::NoMethods);
        }
        for (j, m) in methods.iter().enumerate() {
            let at = format!("{key}.methods[{j}]");
            if m.is_empty() || http::Method::from_bytes(m.as_bytes()).is_err() {
                bad(report, &at, RouteProblem::Method(m.clone()));
            } else if m.bytes().any(|b| b.is_ascii_lowercase()) {
                let upper = m.to_ascii_uppercase();
                bad(
                    report,
                    &at,
                    RouteProblem::MethodCase {
                        value: m.clone(),
                        upper,
                    },
                );
            }
        }
        methods
    });
    let headers = raw.headers.map_or_else(Vec::new, |headers| {
        headers
            .0
            .into_iter()
            .filter_map(|(name, value)| header_match(name, value, key, report))
            .collect()
    });
    let query = raw.query.map_or_else(Vec::new, |query| {
        query
            .0
            .into_iter()
            .filter_map(|(name, value)| {
                if name.is_empty() {
                    bad(
                        report,
                        &format!("{key}.query"),
                        RouteProblem::EmptyQueryName,
                    );
                    return None;
                }
                Some(QueryMatch { name, value })
            })
            .collect()
    });
    RouteMatch {
        host: raw.host.map(|h| h.to_ascii_lowercase()),
        path,
        methods,
        headers,
        query,
    }
}

fn header_match(
    name: String,
    value: RawHeaderMatch,
    key: &str,
    report: &mut Report<'_>,
) -> Option<HeaderMatch> {
    let at = format!("{key}.headers.{name}");
    let Ok(header) = HeaderName::from_bytes(name.as_bytes()) else {
        bad(report, &at, RouteProblem::HeaderName(name));
        return None;
    };
    let value = match value {
        RawHeaderMatch::Exact(v) => {
            if HeaderValue::from_str(&v).is_err() {
                bad(report, &at, RouteProblem::HeaderValue(v));
                return None;
            }
            ValueMatch::Exact(v)
        }
        RawHeaderMatch::Regex(re) => ValueMatch::Regex(regex(&re, &format!("{at}.regex"), report)?),
        RawHeaderMatch::Present(true) => ValueMatch::Present,
        RawHeaderMatch::Present(false) => {
            bad(report, &format!("{at}.present"), RouteProblem::PresentFalse);
            return None;
        }
    };
    Some(HeaderMatch {
        name: header,
        value,
    })
}

/// The route's action; problems reported, and a placeholder returned for them.
fn action(
    raw: &RawRoute,
    key: &str,
    upstream_names: &[String],
    report: &mut Report<'_>,
) -> RouteAction {
    let given: Vec<&'static str> = [
        ("upstream", raw.upstream.is_some()),
        ("upstreams", raw.upstreams.is_some()),
        ("redirect", raw.redirect.is_some()),
        ("respond", raw.respond.is_some()),
    ]
    .into_iter()
    .filter_map(|(k, present)| present.then_some(k))
    .collect();
    if given.is_empty() {
        bad(report, key, RouteProblem::NoAction);
    }
    if given.len() > 1 {
        let second = latest(report, key, &given);
        let first = given
            .iter()
            .find(|g| **g != second)
            .copied()
            .unwrap_or("upstream");
        bad(
            report,
            &format!("{key}.{second}"),
            RouteProblem::TwoActions { first, second },
        );
    }
    let known = |name: &str, at: &str, report: &mut Report<'_>| {
        if !upstream_names.iter().any(|u| u == name) {
            let problem = Problem::UnknownUpstream {
                name: name.to_owned(),
                known: upstream_names.to_vec(),
            };
            report.add(at, problem);
        }
    };
    // Each one given is checked, though only one may be; the first is the route's.
    let upstream = raw.upstream.as_ref().map(|name| {
        known(name, &format!("{key}.upstream"), report);
        RouteAction::Upstream(name.clone())
    });
    let split = raw.upstreams.as_ref().map(|split| {
        RouteAction::Split(weighted(split, &format!("{key}.upstreams"), &known, report))
    });
    let redirect = raw
        .redirect
        .as_ref()
        .map(|r| RouteAction::Redirect(redirect(r, &format!("{key}.redirect"), report)));
    let respond = raw
        .respond
        .as_ref()
        .map(|r| RouteAction::Respond(respond(r, &format!("{key}.respond"), report)));
    upstream
        .or(split)
        .or(redirect)
        .or(respond)
        .unwrap_or_else(|| {
            RouteAction::Respond(Respond {
                status: 404,
                body: String::new(),
                headers: Vec::new(),
            })
        })
}

fn redirect(r: &RawRedirect, at: &str, report: &mut Report<'_>) -> Redirect {
    let scheme = r.scheme.clone().filter(|s| {
        let ok = s == "http" || s == "https";
        if !ok {
            bad(
                report,
                &format!("{at}.scheme"),
                RouteProblem::Scheme(s.clone()),
            );
        }
        ok
    });
    let host = r
        .host
        .clone()
        .filter(|h| check_authority(h, &format!("{at}.host"), report));
    let path = r
        .path
        .clone()
        .filter(|p| check_path(p, "path", &format!("{at}.path"), report));
    let status = match r.status {
        None => 301,
        Some(s @ (301 | 302 | 303 | 307 | 308)) => u16::try_from(s).unwrap_or(301),
        Some(s) => {
            bad(
                report,
                &format!("{at}.status"),
                RouteProblem::RedirectStatus(s),
            );
            301
        }
    };
    Redirect {
        scheme,
        host,
        path,
        status,
    }
}

fn respond(r: &RawRespond, at: &str, report: &mut Report<'_>) -> Respond {
    let status = r.status.map_or(Some(200), |s| {
        ranged(&format!("{at}.status"), "status", s, (200, 599), report)
    });
    let body = r.body.clone().unwrap_or_default();
    if body.len() > MAX_BODY {
        bad(
            report,
            &format!("{at}.body"),
            RouteProblem::BodyTooLarge(body.len()),
        );
    }
    let headers = r.headers.as_ref().map_or_else(Vec::new, |h| {
        h.0.iter()
            .filter_map(|(name, value)| response_header(name, value, at, report))
            .collect()
    });
    Respond {
        status: status.and_then(|s| u16::try_from(s).ok()).unwrap_or(200),
        body,
        headers,
    }
}

fn weighted(
    split: &[RawWeighted],
    key: &str,
    known: &dyn Fn(&str, &str, &mut Report<'_>),
    report: &mut Report<'_>,
) -> Vec<WeightedUpstream> {
    if split.is_empty() {
        bad(report, key, RouteProblem::NoSplit);
    }
    let mut out: Vec<WeightedUpstream> = Vec::with_capacity(split.len());
    for (j, w) in split.iter().enumerate() {
        let at = format!("{key}[{j}]");
        known(&w.name, &format!("{at}.name"), report);
        if out.iter().any(|o| o.name == w.name) {
            bad(
                report,
                &format!("{at}.name"),
                RouteProblem::RepeatedSplit(w.name.clone()),
            );
        }
        let weight = w.weight.map_or(Some(1), |n| {
            ranged(&format!("{at}.weight"), "weight", n, (0, 10_000), report)
        });
        out.push(WeightedUpstream {
            name: w.name.clone(),
            weight: weight.and_then(|n| u32::try_from(n).ok()).unwrap_or(1),
        });
    }
    if !split.is_empty() && out.iter().all(|w| w.weight == 0) {
        bad(report, key, RouteProblem::SplitZero);
    }
    out
}

/// A `respond.headers` entry; `None` when reported.
fn response_header(
    name: &str,
    value: &str,
    key: &str,
    report: &mut Report<'_>,
) -> Option<(HeaderName, HeaderValue)> {
    let at = format!("{key}.headers.{name}");
    let Ok(header) = HeaderName::from_bytes(name.as_bytes()) else {
        bad(report, &at, RouteProblem::HeaderName(name.to_owned()));
        return None;
    };
    // Framing and connection management are the proxy's: a wrong one desynchronises clients.
    let proxy_owned = [
        "content-length",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "upgrade",
        "te",
        "trailer",
    ];
    if proxy_owned.contains(&header.as_str()) {
        bad(
            report,
            &at,
            RouteProblem::ProxyHeader(header.as_str().to_owned()),
        );
        return None;
    }
    let Ok(value) = HeaderValue::from_str(value) else {
        bad(report, &at, RouteProblem::HeaderValue(value.to_owned()));
        return None;
    };
    Some((header, value))
}

/// Compiles `pattern` once, for every request of the configuration's life.
fn regex(pattern: &str, key: &str, report: &mut Report<'_>) -> Option<Regex> {
    match Regex::new(pattern) {
        Ok(re) => Some(re),
        Err(e) => {
            // Syntax errors come as several lines (the pattern, a caret, the reason): keep
            // the reason, so that each error stays one line.
            let text = e.to_string();
            let reason = text
                .lines()
                .find_map(|l| l.strip_prefix("error: "))
                .unwrap_or_else(|| text.lines().last().unwrap_or("invalid"))
                .to_owned();
            let value = pattern.to_owned();
            bad(report, key, RouteProblem::Regex { value, reason });
            None
        }
    }
}

/// Whether `value` is a path starting with `/`, without query, fragment or spaces; reported
/// at `key` when not.
fn check_path(value: &str, name: &'static str, key: &str, report: &mut Report<'_>) -> bool {
    let value_owned = || value.to_owned();
    if !value.starts_with('/') {
        bad(
            report,
            key,
            RouteProblem::Slash {
                name,
                value: value_owned(),
            },
        );
        return false;
    }
    let parsed = value.parse::<http::uri::PathAndQuery>();
    if value.contains(['?', '#']) || parsed.is_err() {
        bad(
            report,
            key,
            RouteProblem::PathChars {
                name,
                value: value_owned(),
            },
        );
        return false;
    }
    true
}

/// Whether `value` is a host with an optional port (`rewrite.host`, `redirect.host`).
fn check_authority(value: &str, key: &str, report: &mut Report<'_>) -> bool {
    let ok =
        !value.is_empty() && !value.contains('@') && value.parse::<http::uri::Authority>().is_ok();
    if !ok {
        let problem = Problem::Host {
            value: value.to_owned(),
            reason: "expected a host and an optional :port",
        };
        report.add(key, problem);
    }
    ok
}

/// Of `keys` (children of `parent`), the one that comes last in the file: the one a
/// conflict is reported at.
fn latest(report: &Report<'_>, parent: &str, keys: &[&'static str]) -> &'static str {
    keys.iter()
        .copied()
        .max_by_key(|k| {
            let l = report.location_of(&format!("{parent}.{k}"));
            (l.line, l.column)
        })
        .unwrap_or("")
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
