//! The admin listener: `GET /metrics` (Prometheus), `GET /ready`, `GET /config`,
//! `GET /upstreams`, `POST /reload`.

use std::sync::Arc;

use async_trait::async_trait;
use http::{Method, Response, StatusCode};
use metrics_exporter_prometheus::PrometheusHandle;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use serde_json::json;

use crate::reload::{ReloadResult, Reloader, Trigger, unix_ms};
use crate::service::State;

/// Serves the admin endpoints.
#[derive(Debug, Clone)]
pub struct Admin {
    pub state: Arc<State>,
    pub metrics: PrometheusHandle,
    pub reloader: Arc<Reloader>,
}

fn reply(status: StatusCode, content_type: &str, body: Vec<u8>) -> Response<Vec<u8>> {
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, content_type)
        .header(http::header::CONTENT_LENGTH, body.len())
        .body(body)
        .expect("static parts are valid")
}

fn json_reply(status: StatusCode, value: &serde_json::Value) -> Response<Vec<u8>> {
    let mut body = serde_json::to_vec_pretty(value).unwrap_or_default();
    body.push(b'\n');
    reply(status, "application/json", body)
}

/// The method each path takes.
fn allowed(path: &str) -> Option<Method> {
    match path {
        "/metrics" | "/ready" | "/config" | "/upstreams" => Some(Method::GET),
        "/reload" => Some(Method::POST),
        _ => None,
    }
}

impl Admin {
    fn config_json(&self) -> serde_json::Value {
        let generation = self.state.current.load();
        let loaded_at = generation
            .loaded_at
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let filters: Vec<_> = generation
            .filters
            .iter()
            .map(|f| {
                let module = f.module();
                json!({
                    "name": f.name,
                    "source": f.source,
                    "sha256": module.sha256_hex(),
                    "abi_version": module.abi().to_string(),
                    "size": module.size(),
                    "vms": f.pool.len(),
                    "load": f.load.as_str(),
                })
            })
            .collect();
        json!({
            "generation": generation.id,
            "loaded_at_unix": loaded_at,
            "loaded_at_unix_ms": unix_ms(generation.loaded_at),
            "config_file": generation.config.source.display().to_string(),
            "filters": filters,
            "generations_draining": self.reloader.draining(),
            "last_reload": self.reloader.last_outcome().map(|o| o.to_json()),
        })
    }
}

#[async_trait]
impl ServeHttp for Admin {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        // Read (and drop) any request body so the connection stays usable.
        while let Ok(Some(_)) = session.read_request_body().await {}
        let req = session.req_header();
        let path = req.uri.path().to_owned();
        let Some(method) = allowed(&path) else {
            return reply(StatusCode::NOT_FOUND, "text/plain", b"not found\n".to_vec());
        };
        if req.method != method {
            let mut r = reply(
                StatusCode::METHOD_NOT_ALLOWED,
                "text/plain",
                format!("{method} only\n").into_bytes(),
            );
            if let Ok(v) = http::HeaderValue::from_str(method.as_str()) {
                r.headers_mut().insert(http::header::ALLOW, v);
            }
            return r;
        }
        match path.as_str() {
            "/metrics" => {
                let mut text = self.metrics.render();
                text.push_str(&crate::metrics::render_pool_stats(
                    &self.state.current.load(),
                ));
                reply(
                    StatusCode::OK,
                    "text/plain; version=0.0.4",
                    text.into_bytes(),
                )
            }
            "/ready" => reply(StatusCode::OK, "text/plain", b"ready\n".to_vec()),
            "/config" => json_reply(StatusCode::OK, &self.config_json()),
            "/upstreams" => {
                let generation = self.state.current.load();
                let upstreams: Vec<_> = generation
                    .upstreams
                    .iter()
                    .map(|u| u.admin_json())
                    .collect();
                json_reply(StatusCode::OK, &json!({ "upstreams": upstreams }))
            }
            "/reload" => {
                let outcome = self.reloader.reload(Trigger::Admin).await;
                let status = match outcome.result {
                    ReloadResult::Ok | ReloadResult::Unchanged => StatusCode::OK,
                    ReloadResult::Error => StatusCode::UNPROCESSABLE_ENTITY,
                };
                json_reply(status, &outcome.to_json())
            }
            _ => reply(StatusCode::NOT_FOUND, "text/plain", b"not found\n".to_vec()),
        }
    }
}
