//! What the proxy service's upstream hooks do with an [`Upstream`]: pick an address, and
//! account for each try's outcome (passive health, retries, metrics, TLS failure logs).

use std::net::IpAddr;

use pingora::proxy::Session;
use pingora::upstreams::peer::HttpPeer;
use pingora::{Error, ErrorSource, ErrorType};
use wasmgate_config::{Balance, HashKey};

use super::Upstream;
use super::attempt::{Attempts, Failure, is_tls_error, status_retry_error};

/// `upstream_peer`: the next try's peer, on an address this request has not tried while one
/// is left.
pub fn peer(
    upstream: &Upstream,
    session: &Session,
    attempts: &mut Attempts,
) -> pingora::Result<HttpPeer> {
    let mut ip = [0u8; 16];
    let key: &[u8] = match &upstream.config.balance {
        Balance::Hash(HashKey::Header(name)) => session
            .req_header()
            .headers
            .get(name.as_str())
            .map_or(&[], |v| v.as_bytes()),
        Balance::Hash(HashKey::SourceIp) => {
            match session
                .client_addr()
                .and_then(|a| a.as_inet())
                .map(|a| a.ip())
            {
                Some(IpAddr::V4(v4)) => {
                    ip[..4].copy_from_slice(&v4.octets());
                    &ip[..4]
                }
                Some(IpAddr::V6(v6)) => {
                    ip = v6.octets();
                    &ip
                }
                None => &[],
            }
        }
        _ => &[],
    };
    let pick = upstream.select(key, attempts.tried()).ok_or_else(|| {
        Error::explain(
            ErrorType::HTTPStatus(502),
            format!("upstream {} has no endpoint", upstream.name),
        )
    })?;
    let peer = upstream.peer(&pick);
    attempts.start(pick);
    Ok(peer)
}

/// `fail_to_connect`: the connection (or its TLS handshake) failed.
pub fn connect_failed(upstream: &Upstream, attempts: &mut Attempts, e: &mut Error) {
    let Some(pick) = attempts.current() else {
        return;
    };
    let labels = [
        ("upstream", upstream.name.clone()),
        ("endpoint", pick.state.endpoint.to_string()),
    ];
    if is_tls_error(e) {
        metrics::counter!("wasmgate_upstream_tls_failures_total", &labels).increment(1);
        if pick.state.admit_tls_log() {
            tracing::warn!(
                upstream = %upstream.name,
                endpoint = %pick.state.endpoint,
                address = %pick.state.addr,
                "TLS with the upstream failed: {e}"
            );
        }
    } else {
        metrics::counter!("wasmgate_upstream_connect_failures_total", &labels).increment(1);
    }
    pick.state.failed(upstream.config.outlier.as_ref());
    // Nothing was sent: the request can always go elsewhere.
    let retry = attempts.may_retry(&upstream.config.retries, Failure::Connect);
    e.set_retry(retry);
    if retry {
        attempts.retried(&upstream.name);
    }
}

/// `upstream_response_filter`: a response head came. `Err` drops it for a retry on its status.
pub fn response(
    upstream: &Upstream,
    attempts: &mut Attempts,
    status: u16,
    replayable: bool,
) -> pingora::Result<()> {
    if status < 200 {
        return Ok(());
    }
    let config = &upstream.config;
    if attempts.on_response(status, config.outlier.as_ref(), &config.retries, replayable) {
        return Err(status_retry_error(status));
    }
    Ok(())
}

/// `error_while_proxy`: the try failed after the connection was made. `Some(retry)` when the
/// upstream's policy decides; `None` leaves it to the proxy's default (retry a reused
/// connection that went stale).
pub fn proxy_failed(
    upstream: &Upstream,
    attempts: &mut Attempts,
    e: &Error,
    client_reused: bool,
    replayable: bool,
) -> Option<bool> {
    if attempts.retrying_on_status() {
        attempts.retried(&upstream.name);
        return Some(true);
    }
    if *e.esource() != ErrorSource::Upstream || client_reused {
        // A pooled connection the upstream closed while idle says nothing of its health.
        return None;
    }
    let pick = attempts.current()?;
    pick.state.failed(upstream.config.outlier.as_ref());
    if attempts.got_response() {
        return Some(false);
    }
    // A timeout already cost the client its wait: it is not retried.
    let timed_out = matches!(
        e.etype(),
        ErrorType::ReadTimedout | ErrorType::WriteTimedout
    );
    let retry = replayable
        && !timed_out
        && attempts.may_retry(&upstream.config.retries, Failure::BeforeResponse);
    if retry {
        attempts.retried(&upstream.name);
        return Some(true);
    }
    None
}
