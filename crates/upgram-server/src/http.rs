//! The HTTP side (S4): content-addressed payloads from the catalog's `store/` (Range requests
//! supported, by tower-http's `ServeDir`), fallback documents at `doc/<sha256>.xml`, and
//! `/metrics` in the Prometheus text format (S6).
//!
//! Payload URLs are `{public}/store/<sha256>`: the same tree served by nginx or a CDN works
//! unchanged.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path as UrlPath, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower_http::services::ServeDir;
use upgram_core::Sha256Digest;

use crate::server::Shared;

/// The router: `/store/*`, `/doc/<sha256>.xml`, `/metrics`.
pub fn router(shared: Arc<Shared>, catalog_dir: &Path) -> Router {
    Router::new()
        .route("/doc/{name}", get(document))
        .route("/metrics", get(metrics))
        .nest_service("/store", ServeDir::new(catalog_dir.join("store")))
        .with_state(shared)
}

async fn document(State(shared): State<Arc<Shared>>, UrlPath(name): UrlPath<String>) -> Response {
    let digest = name.strip_suffix(".xml").and_then(Sha256Digest::from_hex);
    match digest.and_then(|d| shared.document(&d)) {
        Some(bytes) => (
            [(header::CONTENT_TYPE, "application/xml"), (header::CACHE_CONTROL, "public, max-age=31536000, immutable")],
            bytes,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "no such document\n").into_response(),
    }
}

async fn metrics(State(shared): State<Arc<Shared>>) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], crate::metrics::render(&shared.metrics())).into_response()
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
