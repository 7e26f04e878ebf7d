//! `forwarding:`: the headers the proxy adds to what it forwards (X-Forwarded-*, Via, a
//! request id): the raw keys, their checks and the validated settings.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::Deserialize;

use crate::problem::Problem;
use crate::report::Report;

/// `forwarding:` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a forwarding mapping")]
pub(crate) struct RawForwarding {
    #[serde(default)]
    pub(crate) x_forwarded: Option<String>,
    #[serde(default)]
    pub(crate) trusted_proxies: Option<Vec<String>>,
    #[serde(default)]
    pub(crate) via: Option<bool>,
    #[serde(default)]
    pub(crate) request_id: Option<RawRequestId>,
}

/// `forwarding.request_id:` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a request_id mapping")]
pub(crate) struct RawRequestId {
    #[serde(default)]
    pub(crate) header: Option<String>,
    #[serde(default)]
    pub(crate) generate: Option<bool>,
    #[serde(default)]
    pub(crate) echo: Option<bool>,
}

/// What the proxy does with X-Forwarded-For, -Proto and -Host (`x_forwarded:`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum XForwarded {
    /// `append` (the default): the peer's address is appended to the X-Forwarded-For the
    /// request came with when the peer is one of `trusted_proxies`; from any other peer the
    /// incoming headers are replaced, as with `replace`.
    #[default]
    Append,
    /// `replace`: X-Forwarded-For is the peer's address, -Proto and -Host what the proxy saw,
    /// whatever the request came with.
    Replace,
    /// `off`: the three headers are forwarded as the client sent them (or not at all).
    Off,
}

/// The request id (`forwarding.request_id:`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId {
    /// The header that carries it (`header`), lowercased, a valid header name that is not a
    /// connection or framing header; default `x-request-id`.
    pub header: http::HeaderName,
    /// Make one (a UUID v4) when the request has none, or an unusable one (`generate`);
    /// default true.
    pub generate: bool,
    /// Send it back in the response (`echo`); default true.
    pub echo: bool,
}

impl Default for RequestId {
    fn default() -> Self {
        RequestId {
            header: http::HeaderName::from_static("x-request-id"),
            generate: true,
            echo: true,
        }
    }
}

/// Forwarding headers (`forwarding:`); every field has a default.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Forwarding {
    /// `x_forwarded:`; default [`XForwarded::Append`].
    pub x_forwarded: XForwarded,
    /// Peers whose X-Forwarded-* headers are believed (`trusted_proxies:`), as CIDR blocks (a
    /// bare address is a /32 or /128); default none.
    pub trusted_proxies: Vec<IpNet>,
    /// Add `Via: <protocol> wasmgate` to requests and responses (`via:`); default false.
    pub via: bool,
    /// `request_id:`.
    pub request_id: RequestId,
}

impl Forwarding {
    /// Whether `addr` is one of the trusted proxies. IPv4-mapped IPv6 addresses count as
    /// their IPv4 address.
    pub fn trusts(&self, addr: IpAddr) -> bool {
        let addr = addr.to_canonical();
        self.trusted_proxies.iter().any(|net| net.contains(&addr))
    }
}

/// Headers a request id must not be carried in: they frame the message, name the host or
/// belong to the connection.
const RESERVED_HEADERS: [&str; 14] = [
    "connection",
    "content-length",
    "host",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "via",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "content-type",
];

/// Checks `forwarding:`; a bad value is reported and replaced by its default.
pub(crate) fn validate(raw: RawForwarding, report: &mut Report<'_>) -> Forwarding {
    let defaults = Forwarding::default();
    let x_forwarded = match raw.x_forwarded.as_deref() {
        None | Some("append") => XForwarded::Append,
        Some("replace") => XForwarded::Replace,
        Some("off") => XForwarded::Off,
        Some(other) => {
            report.add(
                "forwarding.x_forwarded",
                Problem::Choice {
                    name: "x_forwarded",
                    value: other.to_owned(),
                    known: "append, replace, off",
                },
            );
            defaults.x_forwarded
        }
    };
    let trusted_proxies = raw
        .trusted_proxies
        .unwrap_or_default()
        .iter()
        .enumerate()
        .filter_map(|(i, s)| match cidr(s) {
            Ok(net) => Some(net),
            Err(reason) => {
                let key = format!("forwarding.trusted_proxies[{i}]");
                let value = s.clone();
                report.add(&key, Problem::Cidr { value, reason });
                None
            }
        })
        .collect();
    let raw_id = raw.request_id.unwrap_or_default();
    let header = match raw_id.header {
        None => defaults.request_id.header.clone(),
        Some(h) => match request_id_header(&h) {
            Ok(h) => h,
            Err(reason) => {
                let key = "forwarding.request_id.header";
                report.add(key, Problem::HeaderName { value: h, reason });
                defaults.request_id.header.clone()
            }
        },
    };
    Forwarding {
        x_forwarded,
        trusted_proxies,
        via: raw.via.unwrap_or(defaults.via),
        request_id: RequestId {
            header,
            generate: raw_id.generate.unwrap_or(defaults.request_id.generate),
            echo: raw_id.echo.unwrap_or(defaults.request_id.echo),
        },
    }
}

/// `10.0.0.0/8`, `fd00::/8`, or a bare address. Host bits must be zero, so that a typo such
/// as `10.0.0.1/8` (meant as one host?) is not silently read as a whole network.
fn cidr(s: &str) -> Result<IpNet, &'static str> {
    if let Ok(addr) = s.parse::<IpAddr>() {
        return Ok(IpNet::from(addr));
    }
    let net: IpNet = s
        .parse()
        .map_err(|_| "expected an IP address or a CIDR block such as 10.0.0.0/8")?;
    if net.trunc() != net {
        return Err(
            "the address has bits set past the prefix length (write the network, e.g. 10.0.0.0/8)",
        );
    }
    Ok(net)
}

/// A header name for the request id: a token (RFC 9110 §5.1), lowercased, not reserved.
fn request_id_header(s: &str) -> Result<http::HeaderName, &'static str> {
    if s.is_empty() {
        return Err("a header name is required");
    }
    let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if !s.bytes().all(token) {
        return Err("not a header name (letters, digits and !#$%&'*+-.^_`|~ only)");
    }
    let lower = s.to_ascii_lowercase();
    if RESERVED_HEADERS.contains(&lower.as_str()) {
        return Err("this header has another meaning; choose another, e.g. x-request-id");
    }
    http::HeaderName::from_bytes(lower.as_bytes()).map_err(|_| "not a header name")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_takes_networks_and_bare_addresses() {
        assert_eq!(cidr("10.0.0.0/8").unwrap().to_string(), "10.0.0.0/8");
        assert_eq!(cidr("192.0.2.7").unwrap().to_string(), "192.0.2.7/32");
        assert_eq!(cidr("::1").unwrap().to_string(), "::1/128");
        assert!(cidr("10.0.0.1/8").is_err());
        assert!(cidr("10.0.0.0/33").is_err());
        assert!(cidr("example.com").is_err());
    }

    #[test]
    fn trust_covers_ipv4_mapped_addresses() {
        let f = Forwarding {
            trusted_proxies: vec![cidr("10.0.0.0/8").unwrap()],
            ..Default::default()
        };
        assert!(f.trusts("10.1.2.3".parse().unwrap()));
        assert!(f.trusts("::ffff:10.1.2.3".parse().unwrap()));
        assert!(!f.trusts("11.0.0.1".parse().unwrap()));
    }

    #[test]
    fn request_id_header_is_a_lowercased_free_token() {
        assert_eq!(request_id_header("X-Trace-Id").unwrap(), "x-trace-id");
        assert!(request_id_header("").is_err());
        assert!(request_id_header("x id").is_err());
        assert!(request_id_header(":path").is_err());
        assert!(request_id_header("Content-Length").is_err());
    }

    const HEAD: &str =
        "listen: 127.0.0.1:1\nupstreams: {a: {endpoints: [\"a:1\"]}}\nroutes: [{upstream: a}]\n";

    #[test]
    fn defaults_append_and_generate_an_echoed_request_id() {
        let c = crate::testing::ok(HEAD);
        assert_eq!(c.forwarding, Forwarding::default());
        assert_eq!(c.forwarding.x_forwarded, XForwarded::Append);
        assert!(c.forwarding.trusted_proxies.is_empty());
        assert!(!c.forwarding.via);
        assert_eq!(c.forwarding.request_id.header, "x-request-id");
        assert!(c.forwarding.request_id.generate && c.forwarding.request_id.echo);
    }

    #[test]
    fn every_key_is_read() {
        let text = format!(
            "{HEAD}forwarding:\n  x_forwarded: replace\n  trusted_proxies: [\"10.0.0.0/8\", \"::1\"]\n  \
             via: true\n  request_id: {{header: X-Trace, generate: false, echo: false}}\n"
        );
        let f = crate::testing::ok(&text).forwarding;
        assert_eq!(f.x_forwarded, XForwarded::Replace);
        let nets: Vec<String> = f.trusted_proxies.iter().map(ToString::to_string).collect();
        assert_eq!(nets, ["10.0.0.0/8", "::1/128"]);
        assert!(f.via);
        assert_eq!(
            f.request_id,
            RequestId {
                header: http::HeaderName::from_static("x-trace"),
                generate: false,
                echo: false
            }
        );
        let off = crate::testing::ok(&format!("{HEAD}forwarding: {{x_forwarded: off}}\n"));
        assert_eq!(off.forwarding.x_forwarded, XForwarded::Off);
    }

    #[test]
    fn bad_values_are_errors_at_their_keys() {
        let text = format!(
            "{HEAD}forwarding:\n  x_forwarded: add\n  trusted_proxies: [10.0.0.0/8, 10.0.0.1/8, nope]\n  \
             request_id:\n    header: content-length\n"
        );
        assert_eq!(
            crate::testing::errors(&text),
            [
                "wasmgate.yaml:5:3: forwarding.x_forwarded: unknown x_forwarded \"add\" \
                 (known: append, replace, off)",
                "wasmgate.yaml:6:33: forwarding.trusted_proxies[1]: invalid address \"10.0.0.1/8\": \
                 the address has bits set past the prefix length (write the network, e.g. 10.0.0.0/8)",
                "wasmgate.yaml:6:45: forwarding.trusted_proxies[2]: invalid address \"nope\": \
                 expected an IP address or a CIDR block such as 10.0.0.0/8",
                "wasmgate.yaml:8:5: forwarding.request_id.header: invalid header name \
                 \"content-length\": this header has another meaning; choose another, e.g. x-request-id",
            ]
        );
    }

    #[test]
    fn unknown_keys_and_wrong_types_are_errors() {
        let e = crate::testing::error(&format!("{HEAD}forwarding: {{via: yes please}}\n"));
        assert!(e.starts_with("wasmgate.yaml:4:"), "{e}");
        let e = crate::testing::error(&format!("{HEAD}forwarding: {{x_forwarded_for: off}}\n"));
        assert!(e.contains("unknown field `x_forwarded_for`"), "{e}");
        let e = crate::testing::error(&format!(
            "{HEAD}forwarding:\n  request_id: {{header: x-id, make: true}}\n"
        ));
        assert!(e.starts_with("wasmgate.yaml:5:"), "{e}");
        assert!(e.contains("unknown field `make`"), "{e}");
    }
}
