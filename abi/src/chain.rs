//! A chain of filters and one stream's trip through it, with Envoy's semantics: request
//! callbacks in chain order, response callbacks in reverse order, later filters seeing earlier
//! filters' edits, deferred local replies that the response callbacks then see, and each
//! filter's failure policy.

use std::sync::Arc;

use http::{HeaderName, HeaderValue};

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

/// What the embedder must do after a phase of the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Go on: apply the edits in the stream's header maps and proxy.
    Continue,
    /// Answer with the stream's response headers and this body, instead of (or in place of)
    /// the upstream response. The response callbacks have run, or will run, on it.
    LocalReply(LocalReply),
    /// A fail-closed filter failed: answer 503 and run no more filter callbacks.
    Failed { filter: String },
    /// A filter paused the stream and did not resume it during its callback.
    Paused { filter: usize },
    /// A filter asked to reset the stream.
    Close,
}

/// A filter failure seen by one stream, for the embedder's logs and metrics.
#[derive(Debug, Clone)]
pub struct FilterFailure {
    pub filter: String,
    /// The fault, when the failure happened in this stream's call.
    pub fault: Option<Fault>,
    /// Why there was no VM, or why the context was lost, when there was no fault here.
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

enum Step {
    Done(Action),
    Skip,
    Fail,
}

/// One stream's trip through a chain.
#[derive(Debug)]
pub struct ChainStream {
    chain: Arc<Chain>,
    stream: Option<Box<HttpStream>>,
    bindings: Vec<Binding>,
    failures: Vec<FilterFailure>,
    finished: bool,
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
        }
    }

    pub fn chain(&self) -> &Arc<Chain> {
        &self.chain
    }

    /// The stream's state. Always present between calls.
    pub fn stream(&self) -> &HttpStream {
        self.stream
            .as_deref()
            .expect("the stream is only lent out during a guest call")
    }

    pub fn stream_mut(&mut self) -> &mut HttpStream {
        self.stream
            .as_deref_mut()
            .expect("the stream is only lent out during a guest call")
    }

    /// Failures seen since the last call, for logs and metrics.
    pub fn take_failures(&mut self) -> Vec<FilterFailure> {
        std::mem::take(&mut self.failures)
    }

    /// Runs the request-headers callbacks in chain order.
    pub async fn on_request_headers(&mut self, end_of_stream: bool) -> Verdict {
        self.stream_mut()
            .set_map_state(MapType::RequestHeaders, MapState::Writable);
        for i in 0..self.chain.len() {
            match self
                .deliver(i, HttpEvent::RequestHeaders { end_of_stream })
                .await
            {
                Step::Skip => continue,
                Step::Fail => return self.failed(i),
                Step::Done(action) => {
                    let stream = self.stream_mut();
                    if let Some(reply) = stream.take_local_reply() {
                        stream.set_map_state(MapType::RequestHeaders, MapState::ReadOnly);
                        return Verdict::LocalReply(self.install_reply(reply));
                    }
                    if stream.close_requested() {
                        return Verdict::Close;
                    }
                    let resumed = stream.take_continue_request();
                    if action == Action::Pause && !resumed {
                        return Verdict::Paused { filter: i };
                    }
                }
            }
        }
        self.stream_mut()
            .set_map_state(MapType::RequestHeaders, MapState::ReadOnly);
        Verdict::Continue
    }

    /// Runs the response-headers callbacks in reverse chain order, on the upstream response or
    /// on a local reply. A local reply asked for here replaces the response; the filters not
    /// yet called see the reply instead.
    pub async fn on_response_headers(&mut self, end_of_stream: bool) -> Verdict {
        self.stream_mut()
            .set_map_state(MapType::ResponseHeaders, MapState::Writable);
        let mut reply = None;
        for i in (0..self.chain.len()).rev() {
            match self
                .deliver(i, HttpEvent::ResponseHeaders { end_of_stream })
                .await
            {
                Step::Skip => continue,
                Step::Fail => return self.failed(i),
                Step::Done(action) => {
                    let stream = self.stream_mut();
                    if let Some(r) = stream.take_local_reply() {
                        reply = Some(self.install_reply(r));
                        continue;
                    }
                    let stream = self.stream_mut();
                    if stream.close_requested() {
                        return Verdict::Close;
                    }
                    let resumed = stream.take_continue_response();
                    if action == Action::Pause && !resumed && reply.is_none() {
                        return Verdict::Paused { filter: i };
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

    /// Ends every context the stream created: `proxy_on_log`, `proxy_on_done` and
    /// `proxy_on_delete`, once each, whatever happened to the stream. Call it exactly once, at
    /// the end of the stream; later calls do nothing.
    pub async fn finish(&mut self) {
        if std::mem::replace(&mut self.finished, true) {
            return;
        }
        self.readonly_for_log();
        for i in 0..self.chain.len() {
            let Binding::Bound {
                slot,
                incarnation,
                context,
            } = self.bindings[i]
            else {
                continue;
            };
            let pool = self.chain.filters[i].clone();
            let mut guard = pool.lock(slot).await;
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
        let stream = self.stream_mut();
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
    fn install_reply(&mut self, reply: LocalReply) -> LocalReply {
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

    fn failed(&mut self, i: usize) -> Verdict {
        Verdict::Failed {
            filter: self.chain.filters[i].plugin().info().name.clone(),
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
    async fn deliver(&mut self, i: usize, event: HttpEvent) -> Step {
        let pool = self.chain.filters[i].clone();
        let slot = match self.bindings[i] {
            Binding::Skipped => return Step::Skip,
            Binding::Lost => return Step::Fail,
            Binding::Bound { slot, .. } => slot,
            Binding::Unbound => pool.slot_for_current_thread(),
        };
        let mut guard = pool.lock(slot).await;
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
            Ok(action) => Step::Done(action),
            Err(fault) => {
                guard.fail(&fault);
                self.failure(i, Some(fault.clone()), fault.to_string())
            }
        }
    }
}

impl Drop for ChainStream {
    /// A stream dropped without [`ChainStream::finish`] (its task was cancelled) still ends its
    /// contexts when their VMs are free, so that guests do not accumulate dead contexts.
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        self.finished = true;
        self.readonly_for_log();
        for i in 0..self.chain.len() {
            let Binding::Bound {
                slot,
                incarnation,
                context,
            } = self.bindings[i]
            else {
                continue;
            };
            let pool = self.chain.filters[i].clone();
            let Some(mut guard) = pool.try_lock(slot) else {
                continue;
            };
            if let Some(vm) = guard.vm_if(incarnation)
                && let Err(fault) = vm.finish_http(context, &mut self.stream)
            {
                guard.fail(&fault);
            }
        }
    }
}

#[cfg(test)]
mod tests;
