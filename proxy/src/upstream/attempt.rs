//! One request's tries at an upstream: which addresses it was sent to, what each try's failure
//! means for the address (passive health), and whether another try is allowed.
//!
//! The rules, as a demanding operator expects them (Envoy's retry policy, nginx's
//! `proxy_next_upstream`):
//! - a retry goes to an address not yet tried while one is left;
//! - at most `retries.attempts` retries, each for a condition listed in `retries.on`;
//! - only while nothing of the response reached the client, and only when the request can be
//!   sent again whole: no body, or a body Pingora still holds entirely (its retry buffer);
//! - never once a filter saw the request body or the response (a retry would show it to the
//!   filter twice; the request headers' callbacks run once, before the first try).

use std::net::SocketAddr;

use pingora::{Error, ErrorType};
use smallvec::SmallVec;
use wasmgate_config::Retries;

use super::Pick;
use super::endpoint::ActiveGuard;

/// What a request did with its upstream so far.
#[derive(Debug, Default)]
pub struct Attempts {
    /// The address of the current try, counted as in flight until the request ends or tries
    /// again.
    current: Option<(Pick, ActiveGuard)>,
    /// Addresses tried, in order (inline for the usual one or two: no allocation per request).
    tried: SmallVec<[SocketAddr; 2]>,
    /// Retries made.
    retries: u32,
    /// The current try got a response head.
    got_response: bool,
    /// The current try's response is thrown away for a retry on its status.
    retry_on_status: bool,
}

/// Why a try failed, for passive health and for the retry policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The connection (or its TLS handshake) could not be made.
    Connect,
    /// The connection failed before a response head came.
    BeforeResponse,
    /// The response head had this status, listed in `retries.on`.
    Status(u16),
}

impl Attempts {
    /// Addresses tried so far, for [`super::Upstream::select`].
    pub fn tried(&self) -> &[SocketAddr] {
        &self.tried
    }

    /// A new try on `pick`.
    pub fn start(&mut self, pick: Pick) {
        let guard = pick.state.start();
        self.tried.push(pick.state.addr);
        self.got_response = false;
        self.retry_on_status = false;
        self.current = Some((pick, guard));
    }

    /// The address of the current try.
    pub fn current(&self) -> Option<&Pick> {
        self.current.as_ref().map(|(p, _)| p)
    }

    /// Retries made so far.
    pub fn retries(&self) -> u32 {
        self.retries
    }

    /// Whether the current try got a response head.
    pub fn got_response(&self) -> bool {
        self.got_response
    }

    /// The current try got a response head with `status`: passive health counts 502, 503 and
    /// 504 as failures, anything else as a success. `true` if the response must be dropped
    /// for a retry (its status is in `retries.on` and a retry is allowed: see
    /// [`Attempts::may_retry`]).
    pub fn on_response(
        &mut self,
        status: u16,
        outlier: Option<&wasmgate_config::Outlier>,
        retries: &Retries,
        replayable: bool,
    ) -> bool {
        self.got_response = true;
        if let Some(pick) = self.current() {
            if matches!(status, 502..=504) {
                pick.state.failed(outlier);
            } else {
                pick.state.succeeded();
            }
        }
        self.retry_on_status = replayable && self.may_retry(retries, Failure::Status(status));
        self.retry_on_status
    }

    /// Whether the current try's response was dropped for a retry on its status.
    pub fn retrying_on_status(&self) -> bool {
        self.retry_on_status
    }

    /// Whether `retries` allows another try after `failure` (the budget and the condition;
    /// the caller checks that the request can be replayed).
    pub fn may_retry(&self, retries: &Retries, failure: Failure) -> bool {
        let listed = match failure {
            Failure::Connect => retries.connect_failure,
            Failure::BeforeResponse => retries.reset_before_response,
            Failure::Status(s) => retries.statuses.contains(&s),
        };
        listed && self.retries < retries.attempts
    }

    /// A retry is decided: counts it.
    pub fn retried(&mut self, upstream: &str) {
        self.retries += 1;
        metrics::counter!("wasmgate_upstream_retries_total", "upstream" => upstream.to_owned())
            .increment(1);
    }
}

/// Whether a connect error is a TLS failure (handshake, certificate), to count and log apart.
pub fn is_tls_error(e: &Error) -> bool {
    matches!(
        e.etype(),
        ErrorType::TLSHandshakeFailure
            | ErrorType::TLSHandshakeTimedout
            | ErrorType::InvalidCert
            | ErrorType::HandshakeError
            | ErrorType::TLSWantX509Lookup
    )
}

/// The error that drops a response for a retry on its status.
pub fn status_retry_error(status: u16) -> Box<Error> {
    let mut e = Error::explain(
        ErrorType::HTTPStatus(status),
        format!("the upstream answered {status}: retrying on another endpoint"),
    );
    e.set_retry(true);
    e.into_up()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn retries(attempts: u32) -> Retries {
        Retries {
            attempts,
            connect_failure: true,
            reset_before_response: false,
            statuses: vec![503],
        }
    }

    #[test]
    fn the_budget_and_the_conditions_decide() {
        let mut a = Attempts::default();
        let r = retries(2);
        assert!(a.may_retry(&r, Failure::Connect));
        assert!(!a.may_retry(&r, Failure::BeforeResponse));
        assert!(a.may_retry(&r, Failure::Status(503)));
        assert!(!a.may_retry(&r, Failure::Status(502)));
        a.retried("u");
        a.retried("u");
        assert!(!a.may_retry(&r, Failure::Connect));
        assert!(!Attempts::default().may_retry(&retries(0), Failure::Connect));
    }
}
