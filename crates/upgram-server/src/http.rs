//! The HTTP side: content-addressed payloads from the catalog's `store/` (Range requests
//! supported, by tower-http's `ServeDir`, cached for good by browsers and CDNs since a name
//! never changes content), fallback documents at `doc/<sha256>.xml`, `/metrics` in the
//! Prometheus text format, and `/healthz` for load balancers and probes. Every request is
//! logged at debug level.
//!
//! Payload URLs are `{public}/store/<sha256>`: the same tree served by nginx or a CDN works
//! unchanged.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path as UrlPath, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower_http::services::ServeDir;
use upgram_core::Sha256Digest;

use crate::server::Shared;

/// `Cache-Control` of content-addressed files (payloads and fallback documents): a name never
/// changes content.
pub const IMMUTABLE: &str = "public, max-age=31536000, immutable";

/// The router: `/store/*`, `/doc/<sha256>.xml`, `/metrics`, `/healthz`.
pub fn router(shared: Arc<Shared>, catalog_dir: &Path) -> Router {
    Router::new()
        .route("/doc/{name}", get(document))
        .route("/metrics", get(metrics))
        .route("/healthz", get(health))
        .nest_service("/store", ServeDir::new(catalog_dir.join("store")))
        .layer(middleware::from_fn_with_state(shared.clone(), around_request))
        .with_state(shared)
}

/// Around every request: a debug event with its outcome; for a `store/` file, the count by
/// status and, when it carries content, the immutable `Cache-Control`.
async fn around_request(State(shared): State<Arc<Shared>>, request: Request, next: Next) -> Response {
    let started = std::time::Instant::now();
    let method = request.method().clone();
    let uri = request.uri().clone();
    let mut response = next.run(request).await;
    let status = response.status();
    if uri.path().starts_with("/store/") {
        shared.count_download(status.as_u16());
        if status.is_success() || status == StatusCode::NOT_MODIFIED {
            response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static(IMMUTABLE));
        }
    }
    tracing::debug!(
        %method,
        %uri,
        status = status.as_u16(),
        micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
        "http request"
    );
    response
}

/// 200 while the catalog in use is the one on disk; 503, with the reason, when the last reload
/// failed and the previous catalog is still being served.
async fn health(State(shared): State<Arc<Shared>>) -> Response {
    match shared.reload_failure() {
        None => {
            let modules = shared.catalog().catalog.modules.len();
            (StatusCode::OK, format!("ok: serving {modules} modules\n")).into_response()
        }
        Some(error) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the last catalog reload failed, the previous catalog is still served: {error}\n"),
        )
            .into_response(),
    }
}

async fn document(State(shared): State<Arc<Shared>>, UrlPath(name): UrlPath<String>) -> Response {
    let digest = name.strip_suffix(".xml").and_then(Sha256Digest::from_hex);
    match digest.and_then(|d| shared.document(&d)) {
        Some(bytes) => {
            ([(header::CONTENT_TYPE, "application/xml"), (header::CACHE_CONTROL, IMMUTABLE)], bytes).into_response()
        }
        None => (StatusCode::NOT_FOUND, "no such document\n").into_response(),
    }
}

async fn metrics(State(shared): State<Arc<Shared>>) -> Response {
    let mut text = crate::metrics::render(&shared.metrics());
    if let Some(writer) = shared.reports.get() {
        let now = crate::udp::unix_now();
        text += &crate::metrics::render_reports(writer.counters(), &writer.releases(), &shared.catalog().catalog, now);
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

/// Serves `router` on `listener` until `shutdown` turns true.
pub async fn serve(listener: TcpListener, router: Router, mut shutdown: watch::Receiver<bool>) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(async move {
            let _ = shutdown.wait_for(|stop| *stop).await;
        })
        .await
}

/// Binds the HTTP listener.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}
