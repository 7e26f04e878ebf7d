//! Upstreams a test plays for a filter's HTTP callouts (`proxy_http_call`): the test answers
//! each call, and the harness records it.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method};
use parking_lot::Mutex;
use wasmgate_abi::{
    CalloutError, CalloutFuture, CalloutHandler, CalloutRequest, CalloutResponse, FieldName, Pseudo,
};

use super::message::{Request, Response};

/// How a test answers the calls to one upstream.
#[derive(Clone)]
pub(crate) struct Answer(Arc<AnswerFn>);

type AnswerFn = dyn Fn(&Request) -> Result<Response, CalloutError> + Send + Sync;

impl Answer {
    pub(crate) fn new(
        f: impl Fn(&Request) -> Result<Response, CalloutError> + Send + Sync + 'static,
    ) -> Answer {
        Answer(Arc::new(f))
    }
}

impl fmt::Debug for Answer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Answer(..)")
    }
}

/// A call a filter made to an upstream, as the upstream received it.
#[derive(Debug, Clone)]
pub struct Callout {
    /// The filter that made it.
    pub filter: String,
    /// The upstream's name.
    pub upstream: String,
    /// The request: `:method`, `:path`, `:authority` as the filter set them, its headers,
    /// body and trailers.
    pub request: Request,
    /// The timeout the filter gave.
    pub timeout: Option<Duration>,
}

/// The callout handler of one filter: the upstreams the test declared for it.
#[derive(Debug)]
pub(crate) struct TestUpstreams {
    pub(crate) filter: String,
    pub(crate) upstreams: Vec<(String, Answer)>,
    pub(crate) record: Arc<Mutex<Vec<Callout>>>,
}

impl CalloutHandler for TestUpstreams {
    fn has_upstream(&self, name: &str) -> bool {
        self.upstreams.iter().any(|(n, _)| n == name)
    }

    /// Answers at once, on the calling thread: a panic in the test's answer fails the test.
    fn call(&self, request: CalloutRequest) -> CalloutFuture {
        let received = to_request(&request);
        self.record.lock().push(Callout {
            filter: self.filter.clone(),
            upstream: request.upstream.clone(),
            request: received.clone(),
            timeout: request.timeout,
        });
        let answer = match self.upstreams.iter().find(|(n, _)| *n == request.upstream) {
            Some((_, answer)) => (answer.0)(&received).map(to_callout_response),
            None => Err(CalloutError::Failed("unknown upstream".into())),
        };
        Box::pin(async move { answer })
    }
}

fn to_request(request: &CalloutRequest) -> Request {
    let pseudo = |p| {
        request
            .headers
            .pseudo(p)
            .map(|v: &HeaderValue| String::from_utf8_lossy(v.as_bytes()).into_owned())
    };
    let method = request
        .headers
        .pseudo(Pseudo::Method)
        .and_then(|m| Method::from_bytes(m.as_bytes()).ok())
        .unwrap_or(Method::GET);
    Request {
        method,
        path: pseudo(Pseudo::Path).unwrap_or_else(|| "/".into()),
        authority: pseudo(Pseudo::Authority),
        scheme: pseudo(Pseudo::Scheme).unwrap_or_else(|| "http".into()),
        headers: regular(&request.headers),
        body: request.body.clone(),
        trailers: regular(&request.trailers),
    }
}

fn regular(map: &wasmgate_abi::HeaderMap) -> HeaderMap {
    let mut headers = HeaderMap::with_capacity(map.len());
    for (name, value) in map.iter() {
        if let FieldName::Header(name) = name {
            headers.append(name.clone(), value.clone());
        }
    }
    headers
}

fn to_callout_response(response: Response) -> CalloutResponse {
    let mut headers = wasmgate_abi::HeaderMap::with_capacity(response.headers.len() + 1);
    headers.push_pseudo(Pseudo::Status, HeaderValue::from(response.status.as_u16()));
    for (name, value) in &response.headers {
        headers.push(name.clone(), value.clone());
    }
    let mut trailers = wasmgate_abi::HeaderMap::with_capacity(response.trailers.len());
    for (name, value) in &response.trailers {
        trailers.push(name.clone(), value.clone());
    }
    CalloutResponse {
        headers,
        body: Bytes::clone(&response.body),
        trailers,
    }
}
