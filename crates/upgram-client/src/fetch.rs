//! Fetching fallback documents (C2, SPEC.md §8.3): an embedder may bring its own HTTP stack
//! through [`Fetcher`]; [`HttpFetcher`] is reqwest with rustls. Whatever fetches, the bytes are
//! capped at the signed size while they arrive and checked against the signed hash before
//! anything parses them ([`fetch_document`]).

use std::future::Future;
use std::time::Duration;

use thiserror::Error;
use upgram_core::body::{Fallback, Response};
use upgram_core::message::DocumentError;

/// Why a fetch failed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum FetchError {
    /// Connecting, sending or receiving failed.
    #[error("{url}: {reason}")]
    Transport {
        /// The URL.
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// The server answered with an error status.
    #[error("{url}: HTTP status {status}")]
    Status {
        /// The URL.
        url: String,
        /// The status code.
        status: u16,
    },
    /// More bytes than allowed arrived; the transfer was cut.
    #[error("{url}: more than the {max} bytes expected")]
    TooLong {
        /// The URL.
        url: String,
        /// The cap.
        max: u64,
    },
    /// The document arrived but does not match what was signed.
    #[error("{url}: {source}")]
    Document {
        /// The URL.
        url: String,
        /// What does not match.
        #[source]
        source: DocumentError,
    },
    /// Every mirror failed.
    #[error("every mirror failed: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    AllMirrors(Vec<FetchError>),
}

/// Most redirects followed for one document (SPEC.md §8.3).
pub const MAX_REDIRECTS: usize = 5;

/// An HTTP(S) client that fetches a URL, giving up past `max_len` bytes.
pub trait Fetcher: Send + Sync {
    /// The body at `url`, at most `max_len` bytes; more is [`FetchError::TooLong`].
    fn fetch(&self, url: &str, max_len: u64) -> impl Future<Output = Result<Vec<u8>, FetchError>> + Send;

    /// The bytes of `url` from `offset` on (an HTTP Range request), at most `max_len` of them,
    /// and whether they do start at `offset` (`false`: the whole body, from 0, because the
    /// server or this fetcher does not do ranges). The default fetches the whole body.
    fn fetch_from(
        &self,
        url: &str,
        offset: u64,
        max_len: u64,
    ) -> impl Future<Output = Result<(Vec<u8>, bool), FetchError>> + Send {
        async move { self.fetch(url, offset.saturating_add(max_len)).await.map(|body| (body, false)) }
    }

    /// [`Fetcher::fetch_from`], telling `received` the length of each part of the body as it
    /// arrives, so that a progress display can follow a long download (C11). The default
    /// fetches with `fetch_from` and reports the whole body at once, when it is there.
    fn fetch_from_reporting(
        &self,
        url: &str,
        offset: u64,
        max_len: u64,
        received: &(dyn Fn(u64) + Sync),
    ) -> impl Future<Output = Result<(Vec<u8>, bool), FetchError>> + Send {
        async move {
            let (body, ranged) = self.fetch_from(url, offset, max_len).await?;
            received(body.len() as u64);
            Ok((body, ranged))
        }
    }
}

/// A `received` callback for fetches nobody watches.
fn unwatched(_: u64) {}

/// The default fetcher: reqwest with rustls, a connect timeout and an overall timeout per
/// request, so a trickling server cannot hold a client forever.
#[derive(Debug, Clone)]
pub struct HttpFetcher {
    client: reqwest::Client,
    timeout: Duration,
}

impl HttpFetcher {
    /// A fetcher whose requests each take at most `timeout`.
    pub fn new(timeout: Duration) -> Result<Self, FetchError> {
        let client = reqwest::Client::builder()
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .timeout(timeout)
            // SPEC.md §8.3: redirects MAY be followed, at most 5 (reqwest would follow 10).
            .redirect(reqwest::redirect::Policy::limited(MAX_REDIRECTS))
            .build()
            .map_err(|e| FetchError::Transport { url: String::new(), reason: e.to_string() })?;
        Ok(Self { client, timeout })
    }
}

/// What went wrong, in words a person can act on. reqwest's own message names only the outer
/// layer ("error decoding response body" when the timeout struck mid-body, "error sending
/// request" for a refused connection), so the timeout is said as such and the causes follow.
fn reason(error: reqwest::Error, timeout: Duration) -> String {
    if error.is_timeout() {
        return format!("timed out: no complete answer within {timeout:?}");
    }
    let error = error.without_url();
    let mut text = error.to_string();
    let mut cause = std::error::Error::source(&error);
    while let Some(inner) = cause {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        cause = inner.source();
    }
    text
}

impl HttpFetcher {
    /// Sends `request` and reads at most `max_len` bytes of the answer, telling `received` the
    /// length of each chunk; returns them and the status.
    async fn read_capped(
        &self,
        url: &str,
        request: reqwest::RequestBuilder,
        max_len: u64,
        received: &(dyn Fn(u64) + Sync),
    ) -> Result<(Vec<u8>, u16), FetchError> {
        let transport = |e| FetchError::Transport { url: url.to_owned(), reason: reason(e, self.timeout) };
        let mut response = request.send().await.map_err(transport)?;
        let status = response.status();
        if !status.is_success() {
            return Err(FetchError::Status { url: url.to_owned(), status: status.as_u16() });
        }
        let too_long = || FetchError::TooLong { url: url.to_owned(), max: max_len };
        if response.content_length().is_some_and(|len| len > max_len) {
            return Err(too_long());
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(transport)? {
            if body.len() as u64 + chunk.len() as u64 > max_len {
                return Err(too_long());
            }
            body.extend_from_slice(&chunk);
            received(chunk.len() as u64);
        }
        Ok((body, status.as_u16()))
    }
}

impl Fetcher for HttpFetcher {
    async fn fetch(&self, url: &str, max_len: u64) -> Result<Vec<u8>, FetchError> {
        self.read_capped(url, self.client.get(url), max_len, &unwatched).await.map(|(body, _)| body)
    }

    async fn fetch_from(&self, url: &str, offset: u64, max_len: u64) -> Result<(Vec<u8>, bool), FetchError> {
        self.fetch_from_reporting(url, offset, max_len, &unwatched).await
    }

    async fn fetch_from_reporting(
        &self,
        url: &str,
        offset: u64,
        max_len: u64,
        received: &(dyn Fn(u64) + Sync),
    ) -> Result<(Vec<u8>, bool), FetchError> {
        if offset == 0 {
            let (body, _) = self.read_capped(url, self.client.get(url), max_len, received).await?;
            return Ok((body, true));
        }
        let request = self.client.get(url).header("Range", format!("bytes={offset}-"));
        let (body, status) = self.read_capped(url, request, offset.saturating_add(max_len), received).await?;
        // 206: the range; 200: the server ignored it and sent everything.
        if status == 206 && body.len() as u64 <= max_len { Ok((body, true)) } else { Ok((body, false)) }
    }
}

/// Fetches the document a verified fallback points at, trying its mirrors in order; returns the
/// first that has exactly the signed size and hash and carries the fallback's binding.
pub async fn fetch_document(fetcher: &impl Fetcher, pointer: &Fallback<'_>, now: u64) -> Result<Vec<u8>, FetchError> {
    let mut failures = Vec::new();
    for mirror in &pointer.mirrors {
        let url = mirror.as_ref();
        match fetcher.fetch(url, pointer.size).await {
            Ok(bytes) => match pointer.open_document(&bytes, now) {
                Ok(_) => return Ok(bytes),
                Err(source) => failures.push(FetchError::Document { url: url.to_owned(), source }),
            },
            Err(error) => failures.push(error),
        }
    }
    Err(FetchError::AllMirrors(failures))
}

/// Decodes a document returned by [`fetch_document`] (already checked).
pub fn decode_document(bytes: &[u8]) -> Result<Response<'_>, FetchError> {
    Response::decode(bytes).map_err(|e| FetchError::Document { url: String::new(), source: DocumentError::Body(e) })
}
