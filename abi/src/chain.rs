//! A chain of filters and one stream's trip through it, with Envoy's semantics: request
//! callbacks in chain order, response callbacks in reverse order, later filters seeing earlier
//! filters' edits, body buffering by the filter that pauses, deferred local replies that the
//! response callbacks then see, pause and resume, and each filter's failure policy.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use tokio::sync::Notify;

use crate::body::Body;
use crate::fault::Fault;
use crate::header_map::{HeaderMap, Pseudo};
use crate::pool::{FilterPool, Unavailable};
use crate::stream::{HttpStream, LocalReply, MapState};
use crate::types::{Action, MapType};
use crate::vm::HttpEvent;

/// An ordered list of filters.
#[derive(Debug, Default)]
pub struct Chain {
    filters: Vec<Arc<FilterPool>>,
}

impl Chain {
    pub fn new(filters: Vec<Arc<FilterPool>>) -> Arc<Chain> {
        Arc::new(Chain { filters })
    }

    pub fn filters(&self) -> &[Arc<FilterPool>] {
        &self.filters
    }

    pub fn len(&self) -> usize {
        self.filters.len()
    }

    pub fn is_empty(&self) -> bool {
        self.filters.is_empty()
    }
}

/// What the embedder must do after a step of the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Go on: apply the edits in the stream's header maps, forward the body bytes returned.
    Continue,
    /// Answer with the stream's response headers and this reply's body instead of (or in
    /// place of) the upstream response. The response callbacks have run, or will run, on it.
    LocalReply(LocalReply),
    /// A fail-closed filter failed: answer 503 (or abort if the response has started).
    Failed { filter: String },
    /// A filter paused the stream: wait with [`ChainStream::wait`], then [`ChainStream::resume`].
    Paused { filter: usize },
    /// A filter asked to reset the stream.
    Close,
    /// A buffering filter's body limit was exceeded: 413 for a request, fail the response.
    TooLarge { filter: String },
}

/// A filter failure seen by one stream, for the embedder's logs and metrics.
#[derive(Debug, Clone)]
pub struct FilterFailure {
    pub filter: String,
    /// The fault, when the failure happened in this stream's call.
    pub fault: Option<Fault>,
    /// What happened, in words.
    pub reason: String,
    /// The filter was skipped (fail-open) rather than failing the stream.
    pub failed_open: bool,
}

/// Where a stream's context lives in one filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Binding {
    /// No context yet: it is created lazily at the filter's first callback, as in Envoy.
    Unbound,
    Bound {
        slot: usize,
        incarnation: u64,
        context: u32,
    },
    /// The filter failed and is fail-open: not called again for this stream.
    Skipped,
    /// The filter failed and is fail-closed: the stream has failed.
    Lost,
}

/// A direction of the stream: which way data flows through the chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dir {
    Request,
    Response,
}

/// Where a paused stream stopped, to continue from there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PausePoint {
    RequestHeaders { filter: usize, eos: bool },
    RequestBody { filter: usize },
    ResponseHeaders { filter: usize, eos: bool },
    ResponseTrailers { filter: usize },
}

impl PausePoint {
    fn filter(self) -> usize {
        match self {
            Self::RequestHeaders { filter, .. }
            | Self::RequestBody { filter }
            | Self::ResponseHeaders { filter, .. }
            | Self::ResponseTrailers { filter } => filter,
        }
    }
}

enum Step {
    Done(Action),
    Skip,
    Fail,
}

/// One stream's trip through a chain.
#[derive(Debug)]
pub struct ChainStream {
    chain: Arc<Chain>,
    /// `None` only while the stream is parked in a VM (paused).
    stream: Option<Box<HttpStream>>,
    bindings: Vec<Binding>,
    failures: Vec<FilterFailure>,
    finished: bool,
    /// The filter holding buffered body data, per direction.
    hold: [Option<usize>; 2],
    paused: Option<PausePoint>,
    /// Made on the first pause: most streams never pause.
    waker: Option<Arc<Notify>>,
    /// The filter whose local reply became the response, and the one that failed the stream
    /// (fail-closed), for access logs.
    replied_by: Option<usize>,
    failed_by: Option<usize>,
}

impl ChainStream {
    pub fn new(chain: Arc<Chain>, stream: HttpStream) -> ChainStream {
        let bindings = vec![Binding::Unbound; chain.len()];
        ChainStream {
            chain,
            stream: Some(Box::new(stream)),
            bindings,
            failures: Vec::new(),
            finished: false,
            hold: [None, None],
            paused: None,
            waker: None,
            replied_by: None,
            failed_by: None,
        }
    }

    pub fn chain(&self) -> &Arc<Chain> {
        &self.chain
    }

    /// The stream's state. Present except while the stream is paused.
    ///
    /// # Panics
    /// While the stream is paused (between a `Paused` verdict and `resume`).
    pub fn stream(&self) -> &HttpStream {
        self.stream
            .as_deref()
            .expect("the stream is parked in a VM while paused")
    }

    /// The stream's state, to fill or apply. Same presence rule as [`ChainStream::stream`].
    pub fn stream_mut(&mut self) -> &mut HttpStream {
        self.stream
            .as_deref_mut()
            .expect("the stream is parked in a VM while paused")
    }

    /// Whether the stream is paused.
    pub fn is_paused(&self) -> bool {
        self.paused.is_some()
    }

    /// The filter whose local reply became the response, if one did.
    pub fn replied_by(&self) -> Option<&str> {
        Some(&self.chain.filters[self.replied_by?].plugin().info().name)
    }

    /// The fail-closed filter that failed the stream, if one did.
    pub fn failed_by(&self) -> Option<&str> {
        Some(&self.chain.filters[self.failed_by?].plugin().info().name)
    }

    /// Failures seen since the last call, for logs and metrics.
    pub fn take_failures(&mut self) -> Vec<FilterFailure> {
        std::mem::take(&mut self.failures)
    }

    fn len(&self) -> usize {
        self.chain.len()
    }

    /// Runs the request-headers callbacks in chain order.
    pub fn on_request_headers(&mut self, end_of_stream: bool) -> Verdict {
        self.stream_mut()
            .set_map_state(MapType::RequestHeaders, MapState::Writable);
        self.run_request_headers(0, end_of_stream)
    }

    fn run_request_headers(&mut self, from: usize, eos: bool) -> Verdict {
        for i in from..self.len() {
            match self.deliver(i, HttpEvent::RequestHeaders { end_of_stream: eos }) {
                Step::Skip => continue,
                Step::Fail => return self.failed(i),
                Step::Done(action) => {
                    if let Some(v) = self.after_request_callback(action, i, |filter| {
                        PausePoint::RequestHeaders { filter, eos }
                    }) {
                        return v;
                    }
                }
            }
        }
        self.stream_mut()
            .set_map_state(MapType::RequestHeaders, MapState::ReadOnly);
        Verdict::Continue
    }

    /// What a request-side callback's outcome means: a local reply, a close or a pause end
    /// the iteration; `None` means go on to the next filter.
    fn after_request_callback(
        &mut self,
        action: Action,
        i: usize,
        point: impl FnOnce(usize) -> PausePoint,
    ) -> Option<Verdict> {
        let stream = self.stream_mut();
        if let Some(reply) = stream.take_local_reply() {
            stream.set_map_state(MapType::RequestHeaders, MapState::ReadOnly);
            return Some(Verdict::LocalReply(self.install_reply(i, reply)));
        }
        if stream.close_requested() {
            return Some(Verdict::Close);
        }
        let resumed = stream.take_continue_request();
        if action == Action::Pause && !resumed {
            return Some(self.park(point(i)));
        }
        None
    }

    /// Runs the request-body callbacks on a chunk and returns the bytes to send upstream now
    /// (empty while a filter buffers). A filter that returns Pause holds the data; the next
    /// call shows it the whole buffered body, and the end-of-stream call the whole body.
    pub fn on_request_body(&mut self, chunk: Bytes, end_of_stream: bool) -> (Verdict, Bytes) {
        self.run_body(Dir::Request, Body::from_bytes(chunk), end_of_stream, None)
    }

    /// Runs the response-headers callbacks in reverse chain order, on the upstream response or
    /// on a local reply. A local reply asked for here replaces the response; the filters not
    /// yet called see the reply instead.
    pub fn on_response_headers(&mut self, end_of_stream: bool) -> Verdict {
        self.stream_mut()
            .set_map_state(MapType::ResponseHeaders, MapState::Writable);
        self.run_response_headers(self.len(), end_of_stream, None)
    }

    /// `to` is one past the next filter to call (they run downwards).
    fn run_response_headers(
        &mut self,
        to: usize,
        eos: bool,
        mut reply: Option<LocalReply>,
    ) -> Verdict {
        for i in (0..to).rev() {
            match self.deliver(i, HttpEvent::ResponseHeaders { end_of_stream: eos }) {
                Step::Skip => continue,
                Step::Fail => return self.failed(i),
                Step::Done(action) => {
                    let stream = self.stream_mut();
                    if let Some(r) = stream.take_local_reply() {
                        reply = Some(self.install_reply(i, r));
                        continue;
                    }
                    let stream = self.stream_mut();
                    if stream.close_requested() {
                        return Verdict::Close;
                    }
                    let resumed = stream.take_continue_response();
                    if action == Action::Pause && !resumed && reply.is_none() {
                        return self.park(PausePoint::ResponseHeaders { filter: i, eos });
                    }
                }
            }
        }
        self.stream_mut()
            .set_map_state(MapType::ResponseHeaders, MapState::ReadOnly);
        match reply {
            Some(reply) => Verdict::LocalReply(reply),
            None => Verdict::Continue,
        }
    }

    /// Runs the response-body callbacks (reverse order) on a chunk and returns the bytes to
    /// send downstream now. The response headers are already on their way, so a local reply
    /// here resets the stream (Envoy does the same), and a pause at the end of the stream cannot
    /// be waited on and fails the stream.
    pub fn on_response_body(&mut self, chunk: Bytes, end_of_stream: bool) -> (Verdict, Bytes) {
        let (verdict, data) =
            self.run_body(Dir::Response, Body::from_bytes(chunk), end_of_stream, None);
        match verdict {
            Verdict::LocalReply(_) => (Verdict::Close, Bytes::new()),
            Verdict::Paused { filter } => {
                self.unpark_now();
                let name = self.filter_name(filter);
                self.failures.push(FilterFailure {
                    filter: name.clone(),
                    fault: None,
                    reason: "paused at the end of the response body, which cannot wait here".into(),
                    failed_open: false,
                });
                (Verdict::Failed { filter: name }, Bytes::new())
            }
            v => (v, data),
        }
    }

    /// Runs the response-trailers callbacks (reverse order) on the stream's response trailers.
    pub fn on_response_trailers(&mut self) -> Verdict {
        self.stream_mut()
            .set_map_state(MapType::ResponseTrailers, MapState::Writable);
        self.run_response_trailers(self.len())
    }

    fn run_response_trailers(&mut self, to: usize) -> Verdict {
        for i in (0..to).rev() {
            match self.deliver(i, HttpEvent::ResponseTrailers) {
                Step::Skip => continue,
                Step::Fail => return self.failed(i),
                Step::Done(action) => {
                    let stream = self.stream_mut();
                    if stream.take_local_reply().is_some() || stream.close_requested() {
                        return Verdict::Close;
                    }
                    if action == Action::Pause && !stream.take_continue_response() {
                        return self.park(PausePoint::ResponseTrailers { filter: i });
                    }
                }
            }
        }
        self.stream_mut()
            .set_map_state(MapType::ResponseTrailers, MapState::ReadOnly);
        Verdict::Continue
    }

    /// The filter at `position` in the order data flows through them in `dir`.
    fn at(&self, dir: Dir, position: usize) -> usize {
        match dir {
            Dir::Request => position,
            Dir::Response => self.len() - 1 - position,
        }
    }

    /// The position of filter `i` in `dir`'s order.
    fn position_of(&self, dir: Dir, i: usize) -> usize {
        self.at(dir, i)
    }

    /// Passes body data through the chain in `dir`'s order. `resume_after` continues the
    /// end-of-stream iteration after the filter that paused, with the body it held.
    fn run_body(
        &mut self,
        dir: Dir,
        data: Body,
        eos: bool,
        resume_after: Option<usize>,
    ) -> (Verdict, Bytes) {
        let request = dir == Dir::Request;
        let d = dir as usize;
        let mut data = data;
        let mut held = None;
        let start = match resume_after {
            Some(k) => {
                // The paused filter's body is the data that now flows on.
                data = self
                    .stream_mut()
                    .body_mut(request)
                    .take()
                    .unwrap_or_default();
                self.hold[d] = None;
                self.position_of(dir, k) + 1
            }
            None => {
                if self.hold[d].is_some() {
                    held = self.stream_mut().body_mut(request).take();
                }
                0
            }
        };
        for position in start..self.len() {
            let i = self.at(dir, position);
            let holding = self.hold[d] == Some(i);
            let shown = if holding {
                let mut body = held.take().unwrap_or_default();
                body.append(std::mem::take(&mut data));
                let limit = self.chain.filters[i].plugin().info().limits.max_body_bytes;
                if body.len() > limit {
                    return (
                        Verdict::TooLarge {
                            filter: self.filter_name(i),
                        },
                        Bytes::new(),
                    );
                }
                body
            } else {
                std::mem::take(&mut data)
            };
            let size = u32::try_from(shown.len()).unwrap_or(u32::MAX);
            *self.stream_mut().body_mut(request) = Some(shown);
            let event = if request {
                HttpEvent::RequestBody {
                    size,
                    end_of_stream: eos,
                }
            } else {
                HttpEvent::ResponseBody {
                    size,
                    end_of_stream: eos,
                }
            };
            let action = match self.deliver(i, event) {
                Step::Skip => Action::Continue,
                Step::Fail => {
                    *self.stream_mut().body_mut(request) = None;
                    return (self.failed(i), Bytes::new());
                }
                Step::Done(action) => action,
            };
            let stream = self.stream_mut();
            if let Some(reply) = stream.take_local_reply() {
                *stream.body_mut(request) = None;
                return (
                    Verdict::LocalReply(self.install_reply(i, reply)),
                    Bytes::new(),
                );
            }
            if stream.close_requested() {
                return (Verdict::Close, Bytes::new());
            }
            let resumed = if request {
                stream.take_continue_request()
            } else {
                stream.take_continue_response()
            };
            if action == Action::Pause && !resumed {
                // This filter holds the data (it stays as the stream's body).
                self.hold[d] = Some(i);
                if eos {
                    return (
                        self.park(PausePoint::RequestBody { filter: i }),
                        Bytes::new(),
                    );
                }
                return (Verdict::Continue, Bytes::new());
            }
            if holding {
                self.hold[d] = None;
            }
            data = self
                .stream_mut()
                .body_mut(request)
                .take()
                .unwrap_or_default();
        }
        (Verdict::Continue, data.into_bytes())
    }

    /// Waits until the paused stream may go on: a filter resumed it, replied, or closed it;
    /// the VM holding it failed; or `timeout` passed (returns false).
    pub async fn wait(&self, timeout: Duration) -> bool {
        if self.paused.is_none() {
            return true;
        }
        let Some(waker) = &self.waker else {
            // Cannot happen (a pause makes the waker first); never spin on it.
            tokio::time::sleep(timeout).await;
            return false;
        };
        tokio::time::timeout(timeout, waker.notified())
            .await
            .is_ok()
    }

    /// Continues a paused stream from where it stopped, once [`ChainStream::wait`] returned.
    /// If no filter asked for anything yet, the stream stays paused (`Paused` again). Returns
    /// body bytes to forward when the pause was in the request body.
    pub fn resume(&mut self) -> (Verdict, Bytes) {
        let Some(point) = self.paused else {
            return (Verdict::Continue, Bytes::new());
        };
        let Some(alive) = self.unpark_now() else {
            return (self.failed(point.filter()), Bytes::new());
        };
        let i = point.filter();
        if !alive {
            let reason = "its VM failed while the stream was paused".to_string();
            if let Step::Fail = self.failure(i, None, reason) {
                return (self.failed(i), Bytes::new());
            }
        }
        let stream = self.stream_mut();
        let asked = stream.has_local_reply()
            || stream.close_requested()
            || stream.actions.continue_request
            || stream.actions.continue_response;
        if alive && !asked {
            return (self.park(point), Bytes::new());
        }
        match point {
            PausePoint::RequestHeaders { filter, eos } => {
                match self.after_request_callback(Action::Continue, filter, |f| {
                    PausePoint::RequestHeaders { filter: f, eos }
                }) {
                    Some(v) => (v, Bytes::new()),
                    None => (self.run_request_headers(filter + 1, eos), Bytes::new()),
                }
            }
            PausePoint::RequestBody { filter } => {
                let stream = self.stream_mut();
                if let Some(reply) = stream.take_local_reply() {
                    *stream.body_mut(true) = None;
                    return (
                        Verdict::LocalReply(self.install_reply(filter, reply)),
                        Bytes::new(),
                    );
                }
                if stream.close_requested() {
                    return (Verdict::Close, Bytes::new());
                }
                stream.take_continue_request();
                self.run_body(Dir::Request, Body::default(), true, Some(filter))
            }
            PausePoint::ResponseHeaders { filter, eos } => {
                let stream = self.stream_mut();
                if stream.close_requested() {
                    return (Verdict::Close, Bytes::new());
                }
                stream.take_continue_response();
                let reply = stream
                    .take_local_reply()
                    .map(|r| self.install_reply(filter, r));
                (self.run_response_headers(filter, eos, reply), Bytes::new())
            }
            PausePoint::ResponseTrailers { filter } => {
                let stream = self.stream_mut();
                if stream.close_requested() || stream.take_local_reply().is_some() {
                    return (Verdict::Close, Bytes::new());
                }
                stream.take_continue_response();
                (self.run_response_trailers(filter), Bytes::new())
            }
        }
    }

    /// Parks the stream in the VM of the filter that paused it.
    fn park(&mut self, point: PausePoint) -> Verdict {
        let i = point.filter();
        let Binding::Bound {
            slot,
            incarnation,
            context,
        } = self.bindings[i]
        else {
            return self.failed(i);
        };
        let pool = self.chain.filters[i].clone();
        let mut guard = pool.lock(slot);
        let Some(vm) = guard.vm_if(incarnation) else {
            return self.failed(i);
        };
        let Some(stream) = self.stream.take() else {
            return self.failed(i);
        };
        let waker = self
            .waker
            .get_or_insert_with(|| Arc::new(Notify::new()))
            .clone();
        vm.park(context, stream, waker);
        self.paused = Some(point);
        Verdict::Paused { filter: i }
    }

    /// Takes the stream back from the VM it is parked in: `Some(alive)` with whether that VM
    /// still lives, `None` if the stream cannot be found (it is lost).
    fn unpark_now(&mut self) -> Option<bool> {
        let point = self.paused.take()?;
        let i = point.filter();
        let Binding::Bound {
            slot,
            incarnation,
            context,
        } = self.bindings[i]
        else {
            return None;
        };
        let pool = self.chain.filters[i].clone();
        let (stream, alive) = pool.lock(slot).unpark(incarnation, context)?;
        self.stream = Some(stream);
        Some(alive)
    }

    /// Ends every context the stream created: `proxy_on_log`, `proxy_on_done` and
    /// `proxy_on_delete`, once each, whatever happened to the stream. Call it at the end of the
    /// stream; later calls do nothing.
    pub fn finish(&mut self) {
        if std::mem::replace(&mut self.finished, true) {
            return;
        }
        if self.paused.is_some() && self.unpark_now().is_none() {
            // The stream was lost with its VM: there is nothing left to log.
            return;
        }
        self.readonly_for_log();
        for i in 0..self.len() {
            let Binding::Bound {
                slot,
                incarnation,
                context,
            } = self.bindings[i]
            else {
                continue;
            };
            let pool = self.chain.filters[i].clone();
            let mut guard = pool.lock(slot);
            let Some(vm) = guard.vm_if(incarnation) else {
                continue;
            };
            match vm.finish_http(context, &mut self.stream) {
                Ok(()) => guard.succeeded(),
                Err(fault) => {
                    guard.fail(&fault);
                    self.failures.push(FilterFailure {
                        filter: pool.plugin().info().name.clone(),
                        reason: fault.to_string(),
                        fault: Some(fault),
                        failed_open: true,
                    });
                }
            }
        }
    }

    /// Every map that exists becomes read-only: `proxy_on_log` may read, not change.
    fn readonly_for_log(&mut self) {
        let Some(stream) = self.stream.as_deref_mut() else {
            return;
        };
        for map in [
            MapType::RequestHeaders,
            MapType::RequestTrailers,
            MapType::ResponseHeaders,
            MapType::ResponseTrailers,
        ] {
            if stream.map_state(map) != MapState::Absent {
                stream.set_map_state(map, MapState::ReadOnly);
            }
        }
    }

    /// Makes `reply` the response: its status and headers become the response headers that
    /// the response callbacks see and the embedder sends. A later local reply is ignored.
    fn install_reply(&mut self, i: usize, reply: LocalReply) -> LocalReply {
        self.replied_by = Some(i);
        let stream = self.stream_mut();
        let mut headers = HeaderMap::with_capacity(reply.headers.len() + 3);
        headers.push_pseudo(Pseudo::Status, HeaderValue::from(reply.status));
        for (name, value) in &reply.headers {
            headers.push(name.clone(), value.clone());
        }
        if !reply.body.is_empty() && headers.get(b"content-type").is_none() {
            headers.push(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain"),
            );
        }
        if let Some(code) = reply.grpc_status {
            headers.push(
                HeaderName::from_static("grpc-status"),
                HeaderValue::from(code),
            );
            if let Ok(message) = HeaderValue::from_str(&reply.details) {
                headers.push(HeaderName::from_static("grpc-message"), message);
            }
        }
        stream.response_headers = headers;
        stream.set_map_state(MapType::ResponseHeaders, MapState::Writable);
        stream.set_replied_locally();
        reply
    }

    fn filter_name(&self, i: usize) -> String {
        self.chain.filters[i].plugin().info().name.clone()
    }

    fn failed(&mut self, i: usize) -> Verdict {
        self.failed_by = Some(i);
        Verdict::Failed {
            filter: self.filter_name(i),
        }
    }

    /// Records a failure of filter `i` and applies its policy.
    fn failure(&mut self, i: usize, fault: Option<Fault>, reason: String) -> Step {
        let info = self.chain.filters[i].plugin().info();
        let failed_open = info.fail_open;
        self.failures.push(FilterFailure {
            filter: info.name.clone(),
            fault,
            reason,
            failed_open,
        });
        if failed_open {
            self.bindings[i] = Binding::Skipped;
            Step::Skip
        } else {
            self.bindings[i] = Binding::Lost;
            Step::Fail
        }
    }

    /// Delivers one event to filter `i`, creating its context first if needed.
    fn deliver(&mut self, i: usize, event: HttpEvent) -> Step {
        let pool = self.chain.filters[i].clone();
        let (slot, mut guard) = match self.bindings[i] {
            Binding::Skipped => return Step::Skip,
            Binding::Lost => return Step::Fail,
            Binding::Bound { slot, .. } => (slot, pool.lock(slot)),
            Binding::Unbound => pool.lock_free(),
        };
        let (vm, context) = match self.bindings[i] {
            Binding::Bound {
                incarnation,
                context,
                ..
            } => match guard.vm_if(incarnation) {
                Some(vm) => (vm, context),
                None => {
                    let reason = "its VM failed in another stream; this stream's context is gone";
                    return self.failure(i, None, reason.into());
                }
            },
            _ => match guard.vm() {
                Ok((vm, incarnation)) => match vm.create_http_context(&mut self.stream) {
                    Ok(context) => {
                        self.bindings[i] = Binding::Bound {
                            slot,
                            incarnation,
                            context,
                        };
                        (vm, context)
                    }
                    Err(fault) => {
                        guard.fail(&fault);
                        return self.failure(i, Some(fault.clone()), fault.to_string());
                    }
                },
                Err(Unavailable::BackingOff { until }) => {
                    let reason = Unavailable::BackingOff { until }.to_string();
                    return self.failure(i, None, reason);
                }
                Err(err) => return self.failure(i, None, err.to_string()),
            },
        };
        match vm.on_http(context, &mut self.stream, event) {
            Ok(action) => {
                guard.succeeded();
                Step::Done(action)
            }
            Err(fault) => {
                guard.fail(&fault);
                self.failure(i, Some(fault.clone()), fault.to_string())
            }
        }
    }
}

impl Drop for ChainStream {
    /// A stream dropped without [`ChainStream::finish`] (its task was cancelled, e.g. the
    /// client went away) still ends its contexts, so that guests do not accumulate dead ones.
    fn drop(&mut self) {
        self.finish();
    }
}

#[cfg(test)]
mod tests;
