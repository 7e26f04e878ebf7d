//! The wording of the problems found in `routes:`.

/// One problem with a route, before it is placed at a key and a position.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RouteProblem {
    #[error("give only one of path, path_prefix and path_regex")]
    PathKinds,
    #[error("{name} must start with \"/\", got {value:?}")]
    Slash { name: &'static str, value: String },
    #[error("invalid {name} {value:?}: only a path, without \"?\", \"#\" or spaces")]
    PathChars { name: &'static str, value: String },
    #[error("invalid regex {value:?}: {reason}")]
    Regex { value: String, reason: String },
    #[error("methods is empty: leave the key out to match any method")]
    NoMethods,
    #[error("invalid method {0:?}: a method is a token such as GET")]
    Method(String),
    #[error("methods are case-sensitive: write {upper:?}, not {value:?}")]
    MethodCase { value: String, upper: String },
    #[error("invalid header name {0:?}")]
    HeaderName(String),
    #[error("invalid header value {0:?}")]
    HeaderValue(String),
    #[error("present: false is not supported: use {{present: true}} or leave the header out")]
    PresentFalse,
    #[error("{0} is set by the proxy and cannot be configured")]
    ProxyHeader(String),
    #[error("a query parameter name is empty")]
    EmptyQueryName,
    #[error("a route needs upstream, upstreams, redirect or respond")]
    NoAction,
    #[error("give {first} or {second}, not both")]
    TwoActions {
        first: &'static str,
        second: &'static str,
    },
    #[error("upstreams is empty: give at least one {{name: NAME, weight: N}}")]
    NoSplit,
    #[error("upstream {0:?} is listed more than once in this split")]
    RepeatedSplit(String),
    #[error("the weights add up to 0: give at least one upstream a weight over 0")]
    SplitZero,
    #[error("{0} applies only to a route with upstream or upstreams")]
    UpstreamOnly(&'static str),
    #[error("unknown scheme {0:?} (known: http, https)")]
    Scheme(String),
    #[error("redirect status must be 301, 302, 303, 307 or 308, got {0}")]
    RedirectStatus(i64),
    #[error("body is {0} bytes, over the 1048576 a direct response may have")]
    BodyTooLarge(usize),
}
