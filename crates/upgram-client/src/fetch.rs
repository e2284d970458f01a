//! Fetching over HTTP(S): fallback documents (SPEC.md §8.3) and payloads. An embedder may bring
//! its own HTTP stack through [`Fetcher`]; `HttpFetcher` (feature `http`) is reqwest with
//! rustls. A fetcher streams the body into a [`Sink`] of the caller's as it arrives, capped at
//! the size allowed, so that nothing large is ever held in memory: staging writes each chunk to
//! its partial file, and [`fetch_document`] collects a small document into a `Vec` and checks
//! it against the signed size and hash before anything parses it.

use std::error::Error as StdError;
use std::future::Future;
use std::io;

use futures_util::stream::{self, StreamExt as _, TryStreamExt as _};
use thiserror::Error;
use upgram_core::body::{Fallback, ModuleDocument, ModuleDocuments, Response};
use upgram_core::message::DocumentError;

/// The error a fetcher reports for a failed connection or transfer, kept whole.
pub type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// Why a fetch failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum FetchError {
    /// Connecting, sending or receiving failed (the connection may have dropped mid-body).
    #[error("{url}: {}", chain(source.as_ref()))]
    Transport {
        /// The URL.
        url: String,
        /// What the HTTP stack reported.
        #[source]
        source: BoxError,
    },
    /// The server answered with an error status.
    #[error("{url}: HTTP status {status}")]
    Status {
        /// The URL.
        url: String,
        /// The status code.
        status: u16,
    },
    /// The server answered a range request with a partial body that is not the range asked for.
    #[error("{url}: asked for the bytes from {asked} on, the server sent {sent}")]
    Range {
        /// The URL.
        url: String,
        /// The offset asked for.
        asked: u64,
        /// What the server's `Content-Range` said (or that it was missing).
        sent: String,
    },
    /// More bytes than allowed arrived, or were announced; the transfer was cut.
    #[error("{url}: more than the {max} bytes expected")]
    TooLong {
        /// The URL.
        url: String,
        /// The cap.
        max: u64,
    },
    /// The caller's [`Sink`] refused the body or could not store it (a full disk ends here).
    #[error("{url}: storing the body: {source}")]
    Sink {
        /// The URL.
        url: String,
        /// What the sink reported.
        #[source]
        source: io::Error,
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

impl FetchError {
    /// A [`FetchError::Transport`] for `url`, keeping `source` (an embedder's fetcher reports
    /// its own HTTP stack's errors this way).
    pub fn transport(url: &str, source: impl Into<BoxError>) -> Self {
        Self::Transport { url: url.to_owned(), source: source.into() }
    }

    /// Whether asking again may well succeed: the connection failed or dropped (but did not
    /// time out — a mirror too slow once is too slow again — nor end in too many redirects),
    /// or the server said it is busy or failing for now (408, 429, 500, 502, 503, 504).
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Transport { source, .. } => !is_final(source.as_ref()),
            Self::Status { status, .. } => matches!(status, 408 | 429 | 500 | 502 | 503 | 504),
            _ => false,
        }
    }
}

/// Whether `error` or one of its causes is a timeout, or (with the HTTP fetcher) another
/// failure that asking again does not change.
fn is_final(error: &(dyn StdError + 'static)) -> bool {
    let mut cause = Some(error);
    while let Some(error) = cause {
        #[cfg(feature = "http")]
        if http::is_final(error) {
            return true;
        }
        if error.downcast_ref::<io::Error>().is_some_and(|e| e.kind() == io::ErrorKind::TimedOut) {
            return true;
        }
        cause = error.source();
    }
    false
}

/// `error` and its causes, for a person: HTTP stacks often name only the outer layer ("error
/// sending request"), while the cause says what to act on ("connection refused").
fn chain(error: &(dyn StdError + 'static)) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(inner) = cause {
        let said = inner.to_string();
        if !text.ends_with(&said) {
            text.push_str(": ");
            text.push_str(&said);
        }
        cause = inner.source();
    }
    text
}

/// Most redirects followed for one document (SPEC.md §8.3).
pub const MAX_REDIRECTS: usize = 5;

/// Where a fetched body sits in the whole resource, as the server said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchedRange {
    /// The offset of the body's first byte: the offset asked for when the server sent that
    /// range, 0 when it sent the whole resource.
    pub start: u64,
    /// The resource's whole length, when the server said it (`Content-Range` of a partial
    /// answer, `Content-Length` of a whole one).
    pub total: Option<u64>,
}

/// Receives a body as it arrives. A fetcher calls [`Sink::begin`] once, before any chunk, then
/// [`Sink::write`] for each chunk in order; an error from either stops the transfer and is
/// reported as [`FetchError::Sink`]. A sink may report progress from `write`.
pub trait Sink {
    /// The body about to arrive starts at `range.start` of the resource: the offset asked for,
    /// or 0 when the server sends the whole resource instead (what the sink held from an
    /// earlier attempt must then be dropped).
    fn begin(&mut self, range: &FetchedRange) -> io::Result<()>;

    /// The next `chunk` of the body.
    fn write(&mut self, chunk: &[u8]) -> io::Result<()>;
}

/// A body collected in memory: for small things such as fallback documents, whose size the
/// fetch caps.
impl Sink for Vec<u8> {
    fn begin(&mut self, range: &FetchedRange) -> io::Result<()> {
        let keep = usize::try_from(range.start).map_err(io::Error::other)?;
        if keep > self.len() {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "the body starts past the bytes held"));
        }
        self.truncate(keep);
        Ok(())
    }

    fn write(&mut self, chunk: &[u8]) -> io::Result<()> {
        self.extend_from_slice(chunk);
        Ok(())
    }
}

/// An HTTP(S) client that streams a URL's body into a [`Sink`], giving up past a size.
///
/// An embedder's own fetcher sends `GET url` (with `Range: bytes=OFFSET-` when `offset` is not
/// 0), calls [`Sink::begin`] with where the body starts (see [`FetchedRange::from_answer`] for
/// the checks of a partial answer), passes each chunk to [`Sink::write`] as it arrives, and
/// stops with [`FetchError::TooLong`] once `start + received` would pass `max_len`.
///
/// A fetcher over something other than reqwest, here bytes held in memory:
///
/// ```
/// use upgram_client::fetch::{FetchError, FetchedRange, Fetcher, Sink, fetch_bytes};
///
/// struct InMemory(Vec<u8>);
///
/// impl Fetcher for InMemory {
///     async fn fetch_into(
///         &self,
///         url: &str,
///         offset: u64,
///         max_len: u64,
///         sink: &mut (dyn Sink + Send),
///     ) -> Result<FetchedRange, FetchError> {
///         let total = self.0.len() as u64;
///         if total > max_len {
///             return Err(FetchError::TooLong { url: url.to_owned(), max: max_len });
///         }
///         let range = FetchedRange { start: offset.min(total), total: Some(total) };
///         let stored = |source| FetchError::Sink { url: url.to_owned(), source };
///         sink.begin(&range).map_err(stored)?;
///         for chunk in self.0[range.start as usize..].chunks(4096) {
///             sink.write(chunk).map_err(stored)?;
///         }
///         Ok(range)
///     }
/// }
///
/// let fetcher = InMemory(vec![7; 10_000]);
/// let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
/// assert_eq!(runtime.block_on(fetch_bytes(&fetcher, "mem:doc", 10_000)).unwrap(), vec![7; 10_000]);
/// assert!(runtime.block_on(fetch_bytes(&fetcher, "mem:doc", 9_999)).is_err());
///
/// // A client that fetches through it (no `http` feature needed):
/// let client = upgram_client::Client::builder_with_fetcher(fetcher)
///     .server("127.0.0.1:7953".parse().unwrap())
///     .public_key(upgram_core::sign::ReplySigner::from_seed(&[1; 32]).verifying_key().to_bytes())
///     .build()
///     .unwrap();
/// assert_eq!(client.fetcher().0.len(), 10_000);
/// ```
pub trait Fetcher: Send + Sync {
    /// Streams the bytes of `url` from `offset` on into `sink`. `max_len` caps the whole
    /// resource: a partial body may hold `max_len - offset` bytes, a whole one `max_len`; more
    /// is [`FetchError::TooLong`]. Returns where the body started.
    fn fetch_into(
        &self,
        url: &str,
        offset: u64,
        max_len: u64,
        sink: &mut (dyn Sink + Send),
    ) -> impl Future<Output = Result<FetchedRange, FetchError>> + Send;
}

impl FetchedRange {
    /// Where the answer to a request for `url` from `offset` on starts, from its HTTP `status`
    /// and its `Content-Range` (`Some(start, total)` parsed by the HTTP stack; `None` when
    /// absent or not a byte range): a 206 must start exactly at `offset` and not announce a
    /// resource longer than `max_len`; any other success is the whole resource, from 0, with
    /// `content_length` as its total.
    pub fn from_answer(
        url: &str,
        offset: u64,
        max_len: u64,
        status: u16,
        content_range: Option<(u64, Option<u64>)>,
        content_length: Option<u64>,
    ) -> Result<Self, FetchError> {
        if !(200..300).contains(&status) {
            return Err(FetchError::Status { url: url.to_owned(), status });
        }
        let range = match (status, content_range) {
            (206, Some((start, total))) if start == offset => Self { start, total },
            (206, content_range) => {
                let sent = match content_range {
                    Some((start, Some(total))) => format!("bytes {start}-/{total}"),
                    Some((start, None)) => format!("bytes {start}-/*"),
                    None => "no byte range".to_owned(),
                };
                return Err(FetchError::Range { url: url.to_owned(), asked: offset, sent });
            }
            _ => Self { start: 0, total: content_length },
        };
        if range.total.is_some_and(|total| total > max_len) {
            return Err(FetchError::TooLong { url: url.to_owned(), max: max_len });
        }
        Ok(range)
    }
}

/// How many rounds over its mirrors a document gets when their failures are transient
/// ([`FetchError::is_transient`]).
pub const DOCUMENT_ATTEMPTS: u32 = 3;
/// The pause before the second round; it doubles before each further one.
pub const DOCUMENT_RETRY_PAUSE: std::time::Duration = std::time::Duration::from_millis(200);

/// Fetches the whole body of `url` into memory, at most `max_len` bytes (for small things:
/// documents capped at their signed size).
pub async fn fetch_bytes(fetcher: &impl Fetcher, url: &str, max_len: u64) -> Result<Vec<u8>, FetchError> {
    let mut body = Vec::new();
    fetcher.fetch_into(url, 0, max_len, &mut body).await?;
    Ok(body)
}

/// The first body among `urls` (mirrors of one document, in order) that `check` accepts. Each
/// round asks every mirror whose failures so far were transient; a further round, after a
/// pause that starts at [`DOCUMENT_RETRY_PAUSE`] and doubles, only while one was, up to
/// [`DOCUMENT_ATTEMPTS`] rounds. So a busy first mirror never delays a good second one, and
/// a mirror that failed for good (a 404, a timeout, the wrong bytes) is not asked again. The
/// error holds each mirror's last failure, in order.
async fn first_good<T>(
    fetcher: &impl Fetcher,
    urls: &[&str],
    max_len: u64,
    check: impl Fn(&str, Vec<u8>) -> Result<T, FetchError>,
) -> Result<T, FetchError> {
    let mut failures: Vec<Option<FetchError>> = urls.iter().map(|_| None).collect();
    let mut pause = DOCUMENT_RETRY_PAUSE;
    for round in 1..=DOCUMENT_ATTEMPTS {
        for (url, failure) in urls.iter().zip(&mut failures) {
            if failure.as_ref().is_some_and(|f| !f.is_transient()) {
                continue;
            }
            match fetch_bytes(fetcher, url, max_len).await.and_then(|bytes| check(url, bytes)) {
                Ok(found) => return Ok(found),
                Err(error) => *failure = Some(error),
            }
        }
        if round == DOCUMENT_ATTEMPTS || !failures.iter().flatten().any(FetchError::is_transient) {
            break;
        }
        tracing::debug!("no mirror gave the document yet; trying again in {pause:?}");
        tokio::time::sleep(pause).await;
        pause *= 2;
    }
    Err(FetchError::AllMirrors(failures.into_iter().flatten().collect()))
}

/// How many module documents of one fallback are fetched at the same time.
pub const MAX_CONCURRENT_DOCUMENTS: usize = 4;

/// The answer a fallback pointed at, fetched, checked and decoded.
#[derive(Debug, Clone)]
pub struct FetchedAnswer {
    /// The answer, decoded once (by the check) and owned.
    pub response: Response<'static>,
    /// The length of its body: the document's, or for module documents the assembled answer's.
    pub len: usize,
}

/// Fetches the document a verified fallback points at, trying its mirrors in order; returns the
/// answer of the first that has exactly the signed size and hash and carries the fallback's
/// binding, decoded.
///
/// A fallback that names module documents (SPEC.md §8.5) has them fetched, a few at a time,
/// each checked against the SHA-256 the fallback names for it; the answer assembled from them
/// is returned, the same answer as if it had come inline.
pub async fn fetch_document(
    fetcher: &impl Fetcher,
    pointer: &Fallback<'_>,
    now: u64,
) -> Result<FetchedAnswer, FetchError> {
    if let Some(modules) = &pointer.modules {
        return fetch_module_documents(fetcher, pointer, modules, now).await;
    }
    let mirrors: Vec<&str> = pointer.mirrors.iter().map(AsRef::as_ref).collect();
    first_good(fetcher, &mirrors, pointer.size, |url, bytes| match pointer.open_document(&bytes, now) {
        Ok(response) => Ok(FetchedAnswer { response: response.into_owned(), len: bytes.len() }),
        Err(source) => Err(FetchError::Document { url: url.to_owned(), source }),
    })
    .await
}

async fn fetch_module_documents(
    fetcher: &impl Fetcher,
    pointer: &Fallback<'_>,
    modules: &ModuleDocuments<'_>,
    now: u64,
) -> Result<FetchedAnswer, FetchError> {
    let mut fetches = Vec::with_capacity(modules.documents.len());
    for document in &modules.documents {
        fetches.push(fetch_module_document(fetcher, modules.url(&document.sha256), document));
    }
    let documents: Vec<Vec<u8>> = stream::iter(fetches).buffered(MAX_CONCURRENT_DOCUMENTS).try_collect().await?;
    pointer
        .open_module_answer(&documents, now)
        .map(|(response, len)| FetchedAnswer { response, len })
        .map_err(|source| FetchError::Document { url: modules.base.to_string(), source })
}

/// One module document, checked against its size and hash as it arrives, so a failure names
/// its URL. It has one URL: a failure is that of its only mirror.
async fn fetch_module_document(
    fetcher: &impl Fetcher,
    url: String,
    document: &ModuleDocument<'_>,
) -> Result<Vec<u8>, FetchError> {
    first_good(fetcher, &[&url], document.size, |url, bytes| {
        document.check(&bytes).map(|()| bytes).map_err(|source| FetchError::Document { url: url.to_owned(), source })
    })
    .await
}

#[cfg(feature = "http")]
pub use http::{HttpFetcher, MIN_RATE};

/// The fetcher a [`crate::Client`] has unless given another: `HttpFetcher` with the `http`
/// feature, else [`NoHttp`].
#[cfg(feature = "http")]
pub type DefaultHttp = HttpFetcher;

/// The fetcher a [`crate::Client`] has unless given another: `HttpFetcher` with the `http`
/// feature, else [`NoHttp`].
#[cfg(not(feature = "http"))]
pub type DefaultHttp = NoHttp;

/// No fetcher (built without the `http` feature): a type with no value, naming the default of
/// a [`crate::ClientBuilder`] that must be given a fetcher of the embedder's.
#[derive(Debug, Clone, Copy)]
pub enum NoHttp {}

impl Fetcher for NoHttp {
    async fn fetch_into(&self, _: &str, _: u64, _: u64, _: &mut (dyn Sink + Send)) -> Result<FetchedRange, FetchError> {
        match *self {}
    }
}

#[cfg(feature = "http")]
mod http {
    use std::time::Duration;

    use headers::{ContentRange, HeaderMapExt};
    use thiserror::Error;

    use super::{FetchError, FetchedRange, Fetcher, MAX_REDIRECTS, Sink};

    /// The default fetcher: reqwest with rustls, a connect timeout, a timeout for a silent
    /// server, and an overall timeout per request, so a trickling server cannot hold a client
    /// forever: the fetcher's timeout plus the time of the bytes asked for at
    /// [`MIN_RATE`] bytes per second (a large payload is not cut for being large).
    #[derive(Debug, Clone)]
    pub struct HttpFetcher {
        client: reqwest::Client,
        timeout: Duration,
    }

    /// Whether `error` is one that asking again does not change: a request that ran out of
    /// time, too many redirects, a URL the client cannot use.
    pub(super) fn is_final(error: &(dyn std::error::Error + 'static)) -> bool {
        error.is::<TimedOut>()
            || error.downcast_ref::<reqwest::Error>().is_some_and(|e| e.is_redirect() || e.is_builder())
    }

    /// A request that ran out of time: reqwest names only the layer it was in ("error decoding
    /// response body" when the timeout struck mid-body), so the timeout is said as such.
    #[derive(Debug, Error)]
    #[error("timed out: no complete answer within {after:?}, or silent for {silent:?}")]
    struct TimedOut {
        after: Duration,
        silent: Duration,
        #[source]
        source: reqwest::Error,
    }

    /// The slowest transfer an [`HttpFetcher`] waits for, in bytes per second.
    pub const MIN_RATE: u64 = 64 * 1024;

    impl HttpFetcher {
        /// A fetcher whose requests each take at most `timeout` (plus the time of their bytes
        /// at [`MIN_RATE`]), and that gives up on a server silent for `timeout`.
        pub fn new(timeout: Duration) -> Result<Self, FetchError> {
            let client = reqwest::Client::builder()
                .connect_timeout(timeout.min(Duration::from_secs(10)))
                .read_timeout(timeout)
                // SPEC.md §8.3: redirects MAY be followed, at most 5 (reqwest would follow 10).
                .redirect(reqwest::redirect::Policy::limited(MAX_REDIRECTS))
                .build()
                .map_err(|e| FetchError::transport("(building the HTTP client)", e))?;
            Ok(Self { client, timeout })
        }

        fn transport(&self, url: &str, allowed: Duration, error: reqwest::Error) -> FetchError {
            let error = error.without_url();
            if error.is_timeout() {
                FetchError::transport(url, TimedOut { after: allowed, silent: self.timeout, source: error })
            } else {
                FetchError::transport(url, error)
            }
        }
    }

    impl Fetcher for HttpFetcher {
        async fn fetch_into(
            &self,
            url: &str,
            offset: u64,
            max_len: u64,
            sink: &mut (dyn Sink + Send),
        ) -> Result<FetchedRange, FetchError> {
            let allowed = self.timeout.saturating_add(Duration::from_secs(max_len.saturating_sub(offset) / MIN_RATE));
            let mut request = self.client.get(url).timeout(allowed);
            if offset > 0 {
                request = request.header(reqwest::header::RANGE, format!("bytes={offset}-"));
            }
            let mut response = request.send().await.map_err(|e| self.transport(url, allowed, e))?;
            let content_range = response
                .headers()
                .typed_get::<ContentRange>()
                .and_then(|range| range.bytes_range().map(|(start, _)| (start, range.bytes_len())));
            let status = response.status().as_u16();
            // The length of a 206 is the range's, not the resource's.
            let whole = if status == 206 { None } else { response.content_length() };
            let range = FetchedRange::from_answer(url, offset, max_len, status, content_range, whole)?;
            let room = max_len - range.start;
            let too_long = || FetchError::TooLong { url: url.to_owned(), max: max_len };
            if response.content_length().is_some_and(|len| len > room) {
                return Err(too_long());
            }
            let stored = |source| FetchError::Sink { url: url.to_owned(), source };
            sink.begin(&range).map_err(stored)?;
            let mut received = 0u64;
            while let Some(chunk) = response.chunk().await.map_err(|e| self.transport(url, allowed, e))? {
                received += chunk.len() as u64;
                if received > room {
                    return Err(too_long());
                }
                sink.write(&chunk).map_err(stored)?;
            }
            Ok(range)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const URL: &str = "http://127.0.0.1/x";

    #[test]
    fn a_partial_answer_must_start_where_asked_and_fit_the_cap() {
        let answer = |status, range, len| FetchedRange::from_answer(URL, 100, 1000, status, range, len);
        assert_eq!(answer(206, Some((100, Some(1000))), None).unwrap(), FetchedRange { start: 100, total: Some(1000) });
        assert_eq!(answer(206, Some((100, None)), None).unwrap(), FetchedRange { start: 100, total: None });
        assert!(matches!(answer(206, Some((90, Some(1000))), None), Err(FetchError::Range { asked: 100, .. })));
        assert!(matches!(answer(206, None, None), Err(FetchError::Range { .. })));
        assert!(matches!(answer(206, Some((100, Some(1001))), None), Err(FetchError::TooLong { max: 1000, .. })));
        // A whole body instead: from 0, its length the total.
        assert_eq!(answer(200, None, Some(1000)).unwrap(), FetchedRange { start: 0, total: Some(1000) });
        assert!(matches!(answer(200, None, Some(1001)), Err(FetchError::TooLong { .. })));
        assert!(matches!(answer(416, None, None), Err(FetchError::Status { status: 416, .. })));
    }

    #[test]
    fn a_vec_sink_drops_what_a_whole_body_replaces() {
        let mut body = b"abc".to_vec();
        body.begin(&FetchedRange { start: 3, total: None }).unwrap();
        body.write(b"de").unwrap();
        assert_eq!(body, b"abcde");
        body.begin(&FetchedRange { start: 0, total: None }).unwrap();
        body.write(b"x").unwrap();
        assert_eq!(body, b"x");
        assert!(body.begin(&FetchedRange { start: 5, total: None }).is_err());
    }
}
