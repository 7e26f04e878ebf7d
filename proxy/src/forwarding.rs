//! Forwarding headers (`forwarding:`): X-Forwarded-For, -Proto and -Host, `Via`, and the
//! request id, added to the client's request before the filter chain sees it (as Envoy's
//! connection manager does), so that filters read and may change what the upstream will get.
//!
//! Trust follows nginx's realip module with `real_ip_recursive on` (and Envoy's
//! `xff_trusted_cidrs`): the X-Forwarded-* headers a request arrives with are believed only
//! when the peer that connected is one of `trusted_proxies`. From any other peer they are
//! replaced, so a client cannot make itself look like someone else. The client's address is
//! the peer's, or, from a trusted peer, the rightmost X-Forwarded-For address that is not
//! itself trusted (every address trusted: the leftmost; a value that is not an address stops
//! the walk at the last address passed).

use std::net::IpAddr;

use http::header::HOST;
use http::{HeaderName, HeaderValue, Version};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::proxy::Session;
use wasmgate_config::{Forwarding, XForwarded};

const XFF: HeaderName = HeaderName::from_static("x-forwarded-for");
const XFP: HeaderName = HeaderName::from_static("x-forwarded-proto");
const XFH: HeaderName = HeaderName::from_static("x-forwarded-host");
const VIA: HeaderName = HeaderName::from_static("via");

/// The longest request id kept from a client; a longer one is replaced.
const MAX_REQUEST_ID: usize = 128;

/// What forwarding decided about one request, for the response and the access log.
#[derive(Debug, Clone, Default)]
pub struct Forwarded {
    /// The request id, as sent upstream.
    pub request_id: Option<HeaderValue>,
    /// The client's address (see the module docs).
    pub client_addr: Option<IpAddr>,
}

/// Adds the forwarding headers to the request Pingora will send upstream (and the filters
/// see). Called once per request, before routing.
pub(crate) fn on_request(cfg: &Forwarding, session: &mut Session, tls: bool) -> Forwarded {
    let peer = session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip().to_canonical());
    let http2 = session.is_http2();
    let req = session.req_header_mut();
    let trusted = peer.is_some_and(|p| cfg.trusts(p));
    let incoming = joined(req, &XFF);
    let client_addr = match (&incoming, peer) {
        (Some(list), Some(peer)) if trusted => Some(real_client(cfg, list, peer)),
        _ => peer,
    };
    match cfg.x_forwarded {
        XForwarded::Off => {}
        mode => {
            let keep = mode == XForwarded::Append && trusted;
            let xff = match (keep.then_some(incoming).flatten(), peer) {
                (Some(list), Some(peer)) => Some(format!("{list}, {peer}")),
                (None, Some(peer)) => Some(peer.to_string()),
                (list, None) => list,
            };
            set(req, XFF, xff.and_then(|v| HeaderValue::from_str(&v).ok()));
            if !(keep && req.headers.contains_key(&XFP)) {
                let proto = HeaderValue::from_static(if tls { "https" } else { "http" });
                set(req, XFP, Some(proto));
            }
            if !(keep && req.headers.contains_key(&XFH)) {
                let host = authority(req);
                set(req, XFH, host);
            }
        }
    }
    if cfg.via {
        let version = if http2 {
            "2"
        } else {
            protocol_version(req.version)
        };
        let via = HeaderValue::from_str(&format!("{version} wasmgate"));
        if let Ok(via) = via {
            let _ = req.append_header(VIA, via);
        }
    }
    Forwarded {
        request_id: request_id(cfg, req),
        client_addr,
    }
}

/// The request id header as the ABI host should read `request.id` from it.
pub(crate) fn id_header(cfg: &Forwarding) -> Option<HeaderName> {
    // Parsed when the configuration was loaded: a clone shares its bytes.
    Some(cfg.request_id.header.clone())
}

/// Echoes the request id in a response the proxy sends, whether the upstream's or its own.
pub(crate) fn echo(cfg: &Forwarding, forwarded: &Forwarded, resp: &mut ResponseHeader) {
    if let (true, Some(id), Some(name)) =
        (cfg.request_id.echo, &forwarded.request_id, id_header(cfg))
    {
        let _ = resp.insert_header(name, id.clone());
    }
}

/// What the upstream's response gets on its way to the client: the echoed request id and
/// `Via` (the protocol it was received with).
pub(crate) fn on_response(cfg: &Forwarding, forwarded: &Forwarded, resp: &mut ResponseHeader) {
    echo(cfg, forwarded, resp);
    if cfg.via
        && let Ok(via) =
            HeaderValue::from_str(&format!("{} wasmgate", protocol_version(resp.version)))
    {
        let _ = resp.append_header(VIA, via);
    }
}

fn protocol_version(version: Version) -> &'static str {
    match version {
        Version::HTTP_10 => "1.0",
        Version::HTTP_2 => "2",
        Version::HTTP_3 => "3",
        _ => "1.1",
    }
}

/// Keeps the client's request id when it is usable, else makes one (or removes it).
fn request_id(cfg: &Forwarding, req: &mut RequestHeader) -> Option<HeaderValue> {
    let name = id_header(cfg)?;
    let mut values = req.headers.get_all(&name).iter();
    let incoming = match (values.next(), values.next()) {
        (Some(v), None) if usable_id(v.as_bytes()) => Some(v.clone()),
        _ => None,
    };
    let id = incoming.or_else(|| {
        cfg.request_id
            .generate
            .then(|| {
                let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
                let id = uuid::Uuid::new_v4().hyphenated().encode_lower(&mut text);
                HeaderValue::from_str(id).ok()
            })
            .flatten()
    });
    set(req, name, id.clone());
    id
}

/// One value, 1 to 128 visible ASCII characters: anything else could break the log lines
/// and headers it is copied into.
fn usable_id(id: &[u8]) -> bool {
    !id.is_empty() && id.len() <= MAX_REQUEST_ID && id.iter().all(|b| (0x21..=0x7e).contains(b))
}

/// Every value of `name`, joined by `, ` (a list split over several lines is one list);
/// `None` when absent or not text.
fn joined(req: &RequestHeader, name: &HeaderName) -> Option<String> {
    let mut out: Option<String> = None;
    for value in req.headers.get_all(name) {
        let text = value.to_str().ok()?.trim();
        match &mut out {
            Some(s) => {
                s.push_str(", ");
                s.push_str(text);
            }
            None => out = Some(text.to_owned()),
        }
    }
    out.filter(|s| !s.is_empty())
}

/// Walks a trusted X-Forwarded-For from the right (see the module docs).
fn real_client(cfg: &Forwarding, list: &str, peer: IpAddr) -> IpAddr {
    let mut client = peer;
    for entry in list.rsplit(',') {
        let Ok(addr) = entry.trim().parse::<IpAddr>() else {
            break;
        };
        client = addr.to_canonical();
        if !cfg.trusts(client) {
            break;
        }
    }
    client
}

fn authority(req: &RequestHeader) -> Option<HeaderValue> {
    match req.uri.authority() {
        Some(a) => HeaderValue::from_str(a.as_str()).ok(),
        None => req.headers.get(HOST).cloned(),
    }
}

/// Replaces every value of `name` with `value`, or removes them.
fn set(req: &mut RequestHeader, name: HeaderName, value: Option<HeaderValue>) {
    match value {
        Some(v) => {
            let _ = req.insert_header(name, v);
        }
        None => {
            req.remove_header(&name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trusting(nets: &[&str]) -> Forwarding {
        Forwarding {
            trusted_proxies: nets.iter().map(|n| n.parse().unwrap()).collect(),
            ..Default::default()
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_real_client_is_the_rightmost_untrusted_address() {
        let cfg = trusting(&["10.0.0.0/8"]);
        let peer = ip("10.0.0.1");
        assert_eq!(real_client(&cfg, "1.1.1.1, 2.2.2.2", peer), ip("2.2.2.2"));
        assert_eq!(real_client(&cfg, "1.1.1.1, 10.9.9.9", peer), ip("1.1.1.1"));
        assert_eq!(
            real_client(&cfg, "10.1.1.1, 10.9.9.9", peer),
            ip("10.1.1.1")
        );
        assert_eq!(
            real_client(&cfg, "1.1.1.1, junk, 10.9.9.9", peer),
            ip("10.9.9.9")
        );
        assert_eq!(real_client(&cfg, "junk", peer), peer);
        assert_eq!(real_client(&cfg, " ::ffff:3.3.3.3 ", peer), ip("3.3.3.3"));
    }

    #[test]
    fn only_short_visible_ascii_ids_are_kept() {
        assert!(usable_id(b"abc-123"));
        assert!(!usable_id(b""));
        assert!(!usable_id(b"a b"));
        assert!(!usable_id(&[b'a'; 129]));
        assert!(usable_id(&[b'a'; 128]));
        assert!(!usable_id("é".as_bytes()));
    }

    #[test]
    fn a_request_without_an_id_gets_a_uuid_v4() {
        let cfg = Forwarding::default();
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        let id = request_id(&cfg, &mut req).unwrap();
        let parsed = uuid::Uuid::parse_str(id.to_str().unwrap()).unwrap();
        assert_eq!(parsed.get_version_num(), 4);
        assert_eq!(req.headers.get("x-request-id"), Some(&id));

        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        req.append_header("x-request-id", "a").unwrap();
        req.append_header("x-request-id", "b").unwrap();
        let id = request_id(&cfg, &mut req).unwrap();
        assert_ne!(id, "a", "two ids are none");
        assert_eq!(req.headers.get_all("x-request-id").iter().count(), 1);

        let off = Forwarding {
            request_id: wasmgate_config::RequestId {
                generate: false,
                ..Default::default()
            },
            ..Default::default()
        };
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        req.append_header("x-request-id", "bad id").unwrap();
        assert_eq!(request_id(&off, &mut req), None);
        assert!(req.headers.get("x-request-id").is_none());
    }
}
