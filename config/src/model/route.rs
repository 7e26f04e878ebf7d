//! Routes: which requests a route takes (its `match:`), and what it does with them (an
//! upstream, a weighted split, a redirect or a direct response). Matching runs on every
//! request, so it allocates nothing: regexes are compiled when the file is loaded.

use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue};
use regex::Regex;

use crate::Location;

/// One route: which requests it takes, where they go, and through which filters.
#[derive(Debug, Clone)]
pub struct Route {
    /// `name:`, `[A-Za-z0-9_.-]+`, unique among routes; default `route-<n>`, `n` its index
    /// from 0. Names the route in logs.
    pub name: String,
    /// `match:`; default every request.
    pub matcher: RouteMatch,
    /// What the route does: `upstream`, `upstreams`, `redirect` or `respond`; exactly one.
    pub action: RouteAction,
    /// `rewrite:` (routes to an upstream only); default nothing rewritten.
    pub rewrite: Rewrite,
    /// `timeout_ms:`, 1..=86400000 (routes to an upstream only): the whole response, from when
    /// the upstream is picked to its last byte, in place of the upstream's
    /// `response_timeout_ms`. Default none: the upstream's.
    pub timeout: Option<Duration>,
    /// The chain, in order (`filters:`): the default chain when the key was
    /// absent, empty for `[]`. Always declared filter names.
    pub filters: Vec<String>,
    /// Where this route's list item starts, as for [`Filter::location`](crate::Filter::location).
    pub location: Location,
}

/// A route's `match:`: a request must satisfy every part given.
#[derive(Debug, Clone, Default)]
pub struct RouteMatch {
    /// `host`, lowercased: an exact host, or `*.` and a suffix for any subdomain. Default
    /// none: any host.
    pub host: Option<String>,
    /// `path`, `path_prefix` or `path_regex` (at most one); default the prefix `/`.
    pub path: PathMatch,
    /// `methods`: upper-case method names; default empty, meaning any method.
    pub methods: Vec<String>,
    /// `headers`, in file order; default none.
    pub headers: Vec<HeaderMatch>,
    /// `query`, in file order; default none.
    pub query: Vec<QueryMatch>,
}

/// How a route matches the path (without the query string).
#[derive(Debug, Clone)]
pub enum PathMatch {
    /// `path_prefix`: a plain byte prefix, so `/api` also takes `/apis`.
    Prefix(String),
    /// `path`: the whole path, exactly.
    Exact(String),
    /// `path_regex`: the regex matches somewhere in the path (anchor it with `^` and `$`).
    Regex(Regex),
}

impl Default for PathMatch {
    fn default() -> Self {
        PathMatch::Prefix("/".to_owned())
    }
}

/// One entry of `match.headers`.
#[derive(Debug, Clone)]
pub struct HeaderMatch {
    pub name: HeaderName,
    pub value: ValueMatch,
}

/// What a header's value must be: at least one of the header's values matches.
#[derive(Debug, Clone)]
pub enum ValueMatch {
    /// `name: value`: exactly this value (bytes compared).
    Exact(String),
    /// `name: {regex: ...}`: the regex matches somewhere in the value.
    Regex(Regex),
    /// `name: {present: true}`: the header is there, whatever its value.
    Present,
}

/// One entry of `match.query`: the first parameter of that name (names and values
/// percent-decoded, `+` read as a space) has exactly this value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryMatch {
    pub name: String,
    pub value: String,
}

/// What a route does with the requests it takes.
#[derive(Debug, Clone)]
pub enum RouteAction {
    /// `upstream:`, a declared upstream.
    Upstream(String),
    /// `upstreams:`, a weighted split: each request goes to one of them, at random in
    /// proportion to the weights (whose sum is over 0).
    Split(Vec<WeightedUpstream>),
    /// `redirect:`: the proxy answers with a redirect.
    Redirect(Redirect),
    /// `respond:`: the proxy answers itself.
    Respond(Respond),
}

/// One item of `upstreams:`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WeightedUpstream {
    /// `name`, a declared upstream.
    pub name: String,
    /// `weight`, 0..=10000; default 1.
    pub weight: u32,
}

/// `redirect:`. A part not given is kept from the request; the query string is always kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redirect {
    /// `scheme`: `http` or `https`. When it differs from the request's and `host` is not
    /// given, the request's host is kept without its port.
    pub scheme: Option<String>,
    /// `host`: a host, with an optional `:port`.
    pub host: Option<String>,
    /// `path`: the whole new path, starting with `/`.
    pub path: Option<String>,
    /// `status`: 301, 302, 303, 307 or 308; default 301.
    pub status: u16,
}

/// `respond:`: a response the proxy sends itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Respond {
    /// `status`, 200..=599; default 200.
    pub status: u16,
    /// `body`, at most 1 MiB; default empty. Sent with `content-type: text/plain` unless
    /// `headers` give one.
    pub body: String,
    /// `headers`, in file order; default none. `content-length` is the proxy's.
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

/// `rewrite:`: what the upstream is sent instead of what the client asked for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rewrite {
    /// `path_prefix`: replaces the part of the path the route matched (its `path_prefix`, its
    /// `path`, or the first match of its `path_regex`), query kept. Default none.
    pub path_prefix: Option<String>,
    /// `host`: the `Host` sent upstream. Default none: the client's.
    pub host: Option<String>,
}

/// What routing looks at in a request.
#[derive(Debug, Clone, Copy)]
pub struct RequestHead<'a> {
    pub method: &'a str,
    /// The Host header or authority, if any, as sent (port included).
    pub host: Option<&'a str>,
    /// The path, without the query string.
    pub path: &'a str,
    /// The query string, without the `?`.
    pub query: Option<&'a str>,
    pub headers: &'a HeaderMap,
}

impl Route {
    /// Whether `req` takes this route. Hosts compare ignoring ASCII case and any `:port`.
    pub fn matches(&self, req: &RequestHead<'_>) -> bool {
        let m = &self.matcher;
        let path = match &m.path {
            PathMatch::Prefix(prefix) => req.path.starts_with(prefix.as_str()),
            PathMatch::Exact(exact) => req.path == exact,
            PathMatch::Regex(_) => true, // last: the dearest
        };
        path && (m.methods.is_empty() || m.methods.iter().any(|x| x == req.method))
            && match (&m.host, req.host) {
                (None, _) => true,
                (Some(_), None) => false,
                (Some(pattern), Some(host)) => host_matches(pattern, strip_port(host)),
            }
            && m.headers.iter().all(|h| h.matches(req.headers))
            && m.query.iter().all(|q| q.matches(req.query))
            && match &m.path {
                PathMatch::Regex(re) => re.is_match(req.path),
                _ => true,
            }
    }

    /// The path to send upstream instead of `path` (no query string), when `rewrite.path_prefix`
    /// is set and `path` still holds what the route matched.
    pub fn rewrite_path(&self, path: &str) -> Option<String> {
        let replacement = self.rewrite.path_prefix.as_deref()?;
        let (start, end) = match &self.matcher.path {
            // A filter may have changed the path: what matched may be gone.
            PathMatch::Prefix(p) | PathMatch::Exact(p) => {
                path.starts_with(p.as_str()).then_some((0, p.len()))?
            }
            PathMatch::Regex(re) => re.find(path).map(|m| (m.start(), m.end()))?,
        };
        Some(format!("{}{replacement}{}", &path[..start], &path[end..]))
    }

    /// The upstreams this route sends requests to, with their weights (1 for `upstream:`);
    /// none for a route that answers itself.
    pub fn upstreams(&self) -> Vec<(&str, u32)> {
        match &self.action {
            RouteAction::Upstream(name) => vec![(name.as_str(), 1)],
            RouteAction::Split(split) => {
                split.iter().map(|w| (w.name.as_str(), w.weight)).collect()
            }
            RouteAction::Redirect(_) | RouteAction::Respond(_) => Vec::new(),
        }
    }
}

impl HeaderMatch {
    fn matches(&self, headers: &HeaderMap) -> bool {
        let mut values = headers.get_all(&self.name).iter();
        match &self.value {
            ValueMatch::Present => values.next().is_some(),
            ValueMatch::Exact(want) => values.any(|v| v.as_bytes() == want.as_bytes()),
            ValueMatch::Regex(re) => values.any(|v| v.to_str().is_ok_and(|v| re.is_match(v))),
        }
    }
}

impl QueryMatch {
    fn matches(&self, query: Option<&str>) -> bool {
        let Some(query) = query else {
            return false;
        };
        query
            .split('&')
            .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
            .find(|(name, _)| decoded_eq(name, &self.name))
            .is_some_and(|(_, value)| decoded_eq(value, &self.value))
    }
}

/// Whether `raw`, a query-string component, decodes to `want` (`%XX` escapes, `+` a space),
/// without decoding it into a new string.
fn decoded_eq(raw: &str, want: &str) -> bool {
    let raw = raw.as_bytes();
    let mut want = want.bytes();
    let mut i = 0;
    while i < raw.len() {
        let byte = match raw[i] {
            b'+' => b' ',
            b'%' if i + 2 < raw.len() => match (hex(raw[i + 1]), hex(raw[i + 2])) {
                (Some(hi), Some(lo)) => {
                    i += 2;
                    hi << 4 | lo
                }
                _ => b'%',
            },
            b => b,
        };
        i += 1;
        if want.next() != Some(byte) {
            return false;
        }
    }
    want.next().is_none()
}

fn hex(b: u8) -> Option<u8> {
    char::from(b)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

/// `example.com:8080` -> `example.com`, `[::1]:80` -> `[::1]`. A bare IPv6
/// address (several colons, no brackets) has no port to strip.
pub(crate) fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.find(']').map_or(host, |end| &host[..=end]);
    }
    match host.split_once(':') {
        Some((name, port)) if !port.contains(':') => name,
        _ => host,
    }
}

fn host_matches(pattern: &str, host: &str) -> bool {
    let (pattern, host) = (pattern.as_bytes(), host.as_bytes());
    match pattern.strip_prefix(b"*") {
        // `*.example.com` takes `a.example.com`, not `example.com`.
        Some(suffix) => {
            host.len() > suffix.len()
                && host[host.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
        }
        None => host.eq_ignore_ascii_case(pattern),
    }
}

#[cfg(test)]
mod tests;
