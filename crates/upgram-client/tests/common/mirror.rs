//! A hostile HTTP mirror for fallback documents (SPEC.md §8.3, §10.1 "malicious mirror or
//! CDN"), built on axum: it answers `GET /doc/<sha256>.xml` with the real document, or with one
//! of the ways a mirror can fail or lie ([`Behaviour`]). The documents come from a lookup the
//! test gives it (the reference server's, or bytes of its own).
//!
//! It runs on the caller's tokio runtime, stops when dropped or after a bounded lifetime, and
//! every body it streams is finite.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::task::JoinHandle;
use upgram_core::Sha256Digest;

/// Bytes a too-long answer adds to the document.
pub const EXCESS: usize = 4096;

/// How the mirror answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// The document, as it is.
    Good,
    /// `503 Service Unavailable`.
    Unavailable,
    /// `503 Service Unavailable` to the first this many requests, then the document.
    UnavailableFirst(u64),
    /// The document, one byte per 100 ms.
    Trickle,
    /// The document and [`EXCESS`] more bytes, with a `Content-Length` that says so.
    TooLong,
    /// The document and [`EXCESS`] more bytes, streamed with no length announced.
    TooLongUnannounced,
    /// The document without its last bytes, with a `Content-Length` that matches.
    Short,
    /// The document with one byte changed: the right length, the wrong hash.
    WrongBytes,
    /// The document after this many redirects.
    Redirects(u32),
}

/// Finds a document by its SHA-256.
pub type Documents = Arc<dyn Fn(&Sha256Digest) -> Option<Bytes> + Send + Sync>;

struct MirrorState {
    behaviour: Behaviour,
    documents: Documents,
    requests: AtomicU64,
}

/// A running mirror; stops when dropped.
pub struct Mirror {
    addr: SocketAddr,
    state: Arc<MirrorState>,
    task: JoinHandle<()>,
}

impl Drop for Mirror {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Mirror {
    /// Starts a mirror on 127.0.0.1 that behaves as told and finds documents with `documents`,
    /// on the current tokio runtime; it stops by itself after `lifetime`.
    pub async fn start(behaviour: Behaviour, documents: Documents, lifetime: Duration) -> std::io::Result<Mirror> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(MirrorState { behaviour, documents, requests: AtomicU64::new(0) });
        let router = Router::new()
            .route("/doc/{name}", get(document))
            .route("/hop/{left}/{name}", get(hop))
            .with_state(state.clone());
        let task = tokio::spawn(async move {
            let _ = tokio::time::timeout(lifetime, axum::serve(listener, router).into_future()).await;
        });
        Ok(Mirror { addr, state, task })
    }

    /// The base URL, ending in `/`, for the server's `public_url`.
    pub fn base_url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    /// The URL of the document with `sha256`.
    pub fn url(&self, sha256: &Sha256Digest) -> String {
        format!("{}doc/{}.xml", self.base_url(), sha256.to_hex())
    }

    /// Requests received (redirect hops included).
    pub fn requests(&self) -> u64 {
        self.state.requests.load(Ordering::SeqCst)
    }
}

fn find(state: &MirrorState, name: &str) -> Option<Bytes> {
    let digest = name.strip_suffix(".xml").and_then(Sha256Digest::from_hex)?;
    (state.documents)(&digest)
}

async fn document(State(state): State<Arc<MirrorState>>, Path(name): Path<String>) -> Response {
    let earlier = state.requests.fetch_add(1, Ordering::SeqCst);
    if let Behaviour::UnavailableFirst(n) = state.behaviour
        && earlier < n
    {
        return answer(Behaviour::Unavailable, Bytes::new());
    }
    if let Behaviour::Redirects(n) = state.behaviour
        && n > 0
    {
        return redirect(n - 1, &name);
    }
    let Some(bytes) = find(&state, &name) else { return (StatusCode::NOT_FOUND, "no such document\n").into_response() };
    answer(state.behaviour, bytes)
}

async fn hop(State(state): State<Arc<MirrorState>>, Path((left, name)): Path<(u32, String)>) -> Response {
    state.requests.fetch_add(1, Ordering::SeqCst);
    if left > 0 {
        return redirect(left - 1, &name);
    }
    match find(&state, &name) {
        Some(bytes) => answer(Behaviour::Good, bytes),
        None => (StatusCode::NOT_FOUND, "no such document\n").into_response(),
    }
}

fn redirect(left: u32, name: &str) -> Response {
    (StatusCode::FOUND, [(header::LOCATION, format!("/hop/{left}/{name}"))]).into_response()
}

fn answer(behaviour: Behaviour, bytes: Bytes) -> Response {
    match behaviour {
        Behaviour::Good | Behaviour::Redirects(_) | Behaviour::UnavailableFirst(_) => bytes.into_response(),
        Behaviour::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "try again later\n").into_response(),
        Behaviour::Trickle => Body::from_stream(trickle(bytes)).into_response(),
        Behaviour::TooLong => {
            let mut long = bytes.to_vec();
            long.extend(std::iter::repeat_n(b' ', EXCESS));
            long.into_response()
        }
        Behaviour::TooLongUnannounced => {
            let chunks = [Ok::<_, Infallible>(bytes), Ok(Bytes::from(vec![b' '; EXCESS]))];
            Body::from_stream(futures_util::stream::iter(chunks)).into_response()
        }
        Behaviour::Short => bytes.slice(..bytes.len().saturating_sub(16)).into_response(),
        Behaviour::WrongBytes => {
            let mut wrong = bytes.to_vec();
            if let Some(last) = wrong.last_mut() {
                *last ^= 0x20;
            }
            wrong.into_response()
        }
    }
}

/// `bytes`, one byte every 100 ms: finite, and slow enough that no fetcher should wait for it.
fn trickle(bytes: Bytes) -> impl futures_util::Stream<Item = Result<Bytes, Infallible>> {
    futures_util::stream::unfold(0usize, move |at| {
        let bytes = bytes.clone();
        async move {
            if at >= bytes.len() {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            Some((Ok(bytes.slice(at..at + 1)), at + 1))
        }
    })
}
