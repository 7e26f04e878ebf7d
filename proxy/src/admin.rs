//! The admin listener: `GET /metrics` (Prometheus), `GET /ready`, `GET /config`.

use std::sync::Arc;

use async_trait::async_trait;
use http::{Response, StatusCode};
use metrics_exporter_prometheus::PrometheusHandle;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use serde_json::json;

use crate::service::State;

/// Serves the admin endpoints.
#[derive(Debug, Clone)]
pub struct Admin {
    pub state: Arc<State>,
    pub metrics: PrometheusHandle,
}

fn reply(status: StatusCode, content_type: &str, body: Vec<u8>) -> Response<Vec<u8>> {
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, content_type)
        .header(http::header::CONTENT_LENGTH, body.len())
        .body(body)
        .expect("static parts are valid")
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
                })
            })
            .collect();
        json!({
            "generation": generation.id,
            "loaded_at_unix": loaded_at,
            "config_file": generation.config.source.display().to_string(),
            "filters": filters,
        })
    }
}

#[async_trait]
impl ServeHttp for Admin {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let req = session.req_header();
        if req.method != http::Method::GET {
            return reply(
                StatusCode::METHOD_NOT_ALLOWED,
                "text/plain",
                b"GET only\n".to_vec(),
            );
        }
        match req.uri.path() {
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
            "/config" => {
                let body = serde_json::to_vec_pretty(&self.config_json()).unwrap_or_default();
                reply(StatusCode::OK, "application/json", body)
            }
            _ => reply(StatusCode::NOT_FOUND, "text/plain", b"not found\n".to_vec()),
        }
    }
}
