//! The embedding API: build a [`Client`] with servers and pinned keys, then
//! [`Client::check`] an installation. A check splits the query over as many datagrams as it
//! needs, runs their exchanges concurrently, follows fallbacks over HTTP, verifies
//! everything, and merges the answers (SPEC.md §2.6) into one [`CheckReport`].

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use std::borrow::Cow;
use thiserror::Error;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use upgram_core::body::value::is_valid_module_id;
use upgram_core::body::{Fallback, ModuleAnswer, Query, Response, Status, UpgradeInfo};
use upgram_core::error::EncodeError;
use upgram_core::merge::{PackedPart, QueryPacker, expand_compact_taking, merge_borrowed, with_installs};
use upgram_core::plan::refuses_downgrade;
use upgram_core::sign::KeyRing;
use upgram_core::version::Version;
use upgram_core::wire::MessageKind;

#[cfg(feature = "http")]
use crate::fetch::HttpFetcher;
use crate::fetch::{DefaultHttp, FetchError, Fetcher, fetch_document};
use crate::state::InstalledState;
use crate::transport::{CookieJar, Counters, Dropped, SocketPool, Traffic, TransportConfig, TransportError};

/// The patch formats queries name (SPEC.md §5.12): bsdiff with the `patch` feature, else none,
/// so the servers send only whole files.
const PATCH_FORMATS: Option<&str> =
    if cfg!(feature = "patch") { Some(upgram_core::body::PATCH_FORMAT_BSDIFF) } else { None };

/// Why a check failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The builder lacks something.
    #[error("client configuration: {0}")]
    Config(String),
    /// No verified answer arrived.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// A fallback document could not be fetched or did not match.
    #[error("fallback document: {0}")]
    Fetch(#[from] FetchError),
    /// A signed answer that cannot be decoded (a server bug: it was signed).
    #[error("a signed answer does not decode: {0}")]
    Answer(String),
    /// A signed compact answer that cannot be expanded against its query (SPEC.md §4.4): it
    /// lists a module the query did not ask about, or the query did not ask for it.
    #[error("a signed answer is refused: {0}")]
    Compact(#[from] upgram_core::merge::CompactError),
    /// The installation has no module to check.
    #[error("nothing to check: the installation has no module (install one first)")]
    Empty,
    /// A module to install is not a valid module id (SPEC.md §4.2 `ID`).
    #[error("`{0}` is not a module id: 1 to 128 characters of A-Z a-z 0-9 . _ -")]
    ModuleId(String),
}

/// Builds a [`Client`].
#[derive(Debug)]
pub struct ClientBuilder<F = DefaultHttp> {
    transport: TransportConfig,
    keys: KeyRing,
    fetcher: FetcherSource<F>,
    in_flight: Option<usize>,
    channel: Option<String>,
    reports: bool,
}

/// Where a client's fetcher comes from: given, or made at build time with the client's deadline.
enum FetcherSource<F> {
    Given(F),
    #[cfg_attr(not(feature = "http"), allow(dead_code))]
    Made(fn(Duration) -> Result<F, ClientError>),
}

impl<F> std::fmt::Debug for FetcherSource<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Given(_) => "Given",
            Self::Made(_) => "Made",
        })
    }
}

impl<F: Fetcher> ClientBuilder<F> {
    /// Adds a server (tried in the order added).
    pub fn server(mut self, addr: SocketAddr) -> Self {
        self.transport.servers.push(addr);
        self
    }

    /// Pins a server public key (Ed25519, 32 bytes); several for rotation.
    pub fn public_key(mut self, key: [u8; 32]) -> Self {
        if self.keys.add_bytes(&key).is_none() {
            // Remembered as an error at build time.
            self.in_flight = Some(0);
        }
        self
    }

    /// Pins every key of `ring`.
    pub fn key_ring(mut self, ring: KeyRing) -> Self {
        self.keys = ring;
        self
    }

    /// The deadline of one check (default 20 s).
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.transport.deadline = deadline;
        self
    }

    /// The first retransmission timeout (default 500 ms).
    pub fn first_timeout(mut self, timeout: Duration) -> Self {
        self.transport.first_timeout = timeout;
        self
    }

    /// Ask for nonce-bound signatures (SPEC.md §10.2).
    pub fn nonce_bound(mut self, on: bool) -> Self {
        self.transport.nonce_bound = on;
        self
    }

    /// Exchanges in flight at once (default 32).
    pub fn max_in_flight(mut self, n: usize) -> Self {
        self.in_flight = Some(n);
        self
    }

    /// The release channel the installation follows (default `stable`), sent in every query
    /// (SPEC.md §4.3).
    pub fn channel(mut self, channel: impl Into<String>) -> Self {
        self.channel = Some(channel.into());
        self
    }

    /// Whether to send install reports, the outcomes of upgrade attempts (default on; SPEC.md
    /// §5.11). Off: outcomes are neither queued nor sent.
    pub fn reports(mut self, on: bool) -> Self {
        self.reports = on;
        self
    }

    /// The HTTP fetcher for fallback documents (default with the `http` feature: `HttpFetcher`).
    pub fn fetcher<G: Fetcher>(self, fetcher: G) -> ClientBuilder<G> {
        let fetcher = FetcherSource::Given(fetcher);
        ClientBuilder {
            transport: self.transport,
            keys: self.keys,
            fetcher,
            in_flight: self.in_flight,
            channel: self.channel,
            reports: self.reports,
        }
    }

    /// The client.
    pub fn build(self) -> Result<Client<F>, ClientError> {
        if self.transport.servers.is_empty() {
            return Err(ClientError::Config("no server: add one with .server(addr)".into()));
        }
        if self.keys.is_empty() {
            return Err(ClientError::Config("no public key: pin the server's key with .public_key(bytes)".into()));
        }
        if let Some(channel) = self.channel.as_deref().filter(|c| !is_valid_module_id(c)) {
            return Err(ClientError::Config(format!(
                "channel {channel:?} is not a channel name (1 to 128 of A-Z a-z 0-9 . _ -)"
            )));
        }
        let in_flight = match self.in_flight {
            Some(0) => {
                return Err(ClientError::Config("a public key is not a valid Ed25519 point, or in-flight is 0".into()));
            }
            Some(n) => n,
            None => 32,
        };
        let fetcher = match self.fetcher {
            FetcherSource::Given(fetcher) => fetcher,
            FetcherSource::Made(make) => make(self.transport.deadline)?,
        };
        Ok(Client {
            shared: Arc::new(Shared {
                transport: self.transport,
                keys: self.keys,
                fetcher,
                jar: Mutex::new(CookieJar::default()),
                preferred: AtomicUsize::new(0),
                dropped: Arc::new(Mutex::new(Dropped::default())),
                channel: self.channel,
                reports: self.reports,
                traffic: Arc::new(Traffic::default()),
            }),
            in_flight,
        })
    }
}

struct Shared<F> {
    transport: TransportConfig,
    keys: KeyRing,
    fetcher: F,
    jar: Mutex<CookieJar>,
    /// What every check's exchanges dropped, shared with each check's sockets.
    dropped: Arc<Mutex<Dropped>>,
    /// Bytes on the wire over every check, shared with each check's sockets.
    traffic: Arc<Traffic>,
    /// Index of the server that last gave a verified reply: tried first (SPEC.md §2.3).
    preferred: AtomicUsize,
    /// The channel sent in queries; `None`: the default channel, not named.
    channel: Option<String>,
    /// Install reports are on.
    reports: bool,
}

/// An upgram client.
pub struct Client<F = DefaultHttp> {
    shared: Arc<Shared<F>>,
    in_flight: usize,
}

#[cfg(feature = "http")]
impl Client<HttpFetcher> {
    /// A builder with the default fetcher.
    pub fn builder() -> ClientBuilder<HttpFetcher> {
        let fetcher = FetcherSource::Made(|timeout| Ok(HttpFetcher::new(timeout)?));
        ClientBuilder {
            transport: TransportConfig::default(),
            keys: KeyRing::new(),
            fetcher,
            in_flight: None,
            channel: None,
            reports: true,
        }
    }
}

impl<F: Fetcher> Client<F> {
    /// A builder that fetches fallback documents with `fetcher` (an embedder's own HTTP stack).
    pub fn builder_with_fetcher(fetcher: F) -> ClientBuilder<F> {
        let transport = TransportConfig::default();
        ClientBuilder {
            transport,
            keys: KeyRing::new(),
            fetcher: FetcherSource::Given(fetcher),
            in_flight: None,
            channel: None,
            reports: true,
        }
    }
}

/// The outcome of a check, per module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleResult {
    /// Module id.
    pub id: String,
    /// What the server said.
    pub status: Status,
    /// Installed version (none if not installed).
    pub installed: Option<String>,
    /// Latest version.
    pub latest: Option<String>,
    /// Whether the upgrade may not be declined.
    pub forced: bool,
    /// `package`, `files (N)` or `-`.
    pub how: String,
    /// Included because another module needs it.
    pub dependency: bool,
    /// The answer offers an older version than installed without a signed rollback: refused,
    /// never applied.
    pub downgrade_refused: bool,
}

/// One part of a check: its verified answer, decoded once, expanded against its query.
#[derive(Debug, Clone)]
struct Part {
    /// The answer in today's form (SPEC.md §4.4), its strings owned.
    response: Response<'static>,
    /// The modules the part asked about, kept only when the answer came as a fallback document
    /// (the state remembers them, to split such parts further).
    fallback_modules: Vec<String>,
    fell_back: bool,
}

impl Part {
    /// The part of `query` whose verified answer is `answer`: refused, before anything acts on
    /// it, if it is compact and cannot be expanded against its own query.
    fn new(query: Query<'static>, answer: Response<'static>, fell_back: bool) -> Result<Self, ClientError> {
        let fallback_modules =
            if fell_back { query.modules.iter().map(|m| m.id.to_string()).collect() } else { Vec::new() };
        let response = expand_compact_taking(answer, query)?;
        Ok(Part { response, fallback_modules, fell_back })
    }
}

/// The verified, merged answers of one check.
#[derive(Debug, Clone)]
pub struct CheckReport {
    /// The answer of each part, in the order of the parts.
    answers: Vec<Response<'static>>,
    /// The modules asked in parts that were answered with a fallback document.
    fallback_modules: Vec<String>,
    /// Query datagrams sent (exchanges, not retransmissions).
    pub exchanges: usize,
    /// Answers that came as a fallback document.
    pub fallbacks: usize,
    /// Datagrams dropped (bad, errors, challenges) during the check.
    pub dropped: Dropped,
    /// Bytes of the UDP datagrams this check sent, retransmissions included.
    pub bytes_sent: u64,
    /// Bytes this check received: UDP datagrams and fallback documents.
    pub bytes_received: u64,
}

impl CheckReport {
    /// Answers that came inline, in the reply datagram.
    pub fn inline(&self) -> usize {
        self.exchanges - self.fallbacks
    }

    /// Every verified response, decoded, compact answers expanded against their queries
    /// (SPEC.md §4.4), in the order of the query's parts. Decoded during the check: this copies
    /// no string.
    pub fn responses(&self) -> Vec<Response<'_>> {
        self.answers.iter().map(Response::as_borrowed).collect()
    }

    /// Remembers in `state` the modules of every part that was answered with a fallback
    /// document, so that the next check splits those parts further (SPEC.md §2.6).
    pub fn remember_fallbacks(&self, state: &mut InstalledState) {
        state.remember_fallback(self.fallback_modules().iter().map(String::as_str));
    }

    /// The modules asked in parts that were answered with a fallback document.
    pub fn fallback_modules(&self) -> Vec<String> {
        self.fallback_modules.clone()
    }

    /// The merged module answers (SPEC.md §2.6), every payload URL made absolute against its
    /// response's `base`: a module's own answer beats a dependency
    /// entry; among dependency entries the newest `issued` wins; a module listed twice in one
    /// response is dropped (a server error). The answers were decoded during the check: this
    /// copies no string but the payload URLs it makes absolute.
    pub fn modules(&self) -> Vec<ModuleAnswer<'_>> {
        merge_borrowed(&self.answers)
    }

    /// A line per module, for people and scripts.
    pub fn results(&self, installed: &InstalledState) -> Vec<ModuleResult> {
        self.modules()
            .iter()
            .map(|m| ModuleResult {
                id: m.id.to_string(),
                status: m.status,
                installed: installed.modules.get(m.id.as_ref()).map(|i| i.version.clone()),
                latest: m.latest.as_ref().map(Version::to_string),
                forced: m.forced,
                how: match &m.upgrade {
                    UpgradeInfo::None => "-".into(),
                    UpgradeInfo::Package(_) => "package".into(),
                    UpgradeInfo::Files(files) => format!("files ({})", files.len()),
                },
                dependency: m.dependency,
                downgrade_refused: is_refused_downgrade(m, installed),
            })
            .collect()
    }

    /// Applies the server's frequent-file hints \[0078\] to `state`: a module answer with
    /// `<frequent>` entries replaces that module's list.
    pub fn apply_hints(&self, state: &mut InstalledState) {
        for module in self.modules() {
            if module.frequent.is_empty() {
                continue;
            }
            if let Some(installed) = state.modules.get_mut(module.id.as_ref()) {
                installed.frequent = module.frequent.iter().map(|f| f.to_string()).collect();
            }
        }
    }
}

/// Whether `answer` is a downgrade the client refuses, against the installed version.
fn is_refused_downgrade(answer: &ModuleAnswer<'_>, installed: &InstalledState) -> bool {
    let installed = installed.modules.get(answer.id.as_ref()).and_then(|m| Version::parse(&m.version).ok());
    refuses_downgrade(answer, installed.as_ref())
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

impl<F: Fetcher + 'static> Client<F> {
    /// Asks the servers about every module of `installed` (and its frequent files), and returns
    /// the verified, merged answers. Changes nothing on disk.
    pub async fn check(&self, installed: &InstalledState) -> Result<CheckReport, ClientError> {
        self.check_installing(installed, &[]).await
    }

    /// [`Client::check`], also asking how to install each module of `install` that
    /// `installed` lacks: such a module goes in the query without a version (SPEC.md §4.3), and
    /// the server answers it with `update`, its latest release in full, and an answer with
    /// `dependency="1"` for each module it requires that the query did not name (§5.2 step 2,
    /// §5.6). Ids already installed are asked about as usual. Changes nothing on disk.
    pub async fn check_installing(
        &self,
        installed: &InstalledState,
        install: &[&str],
    ) -> Result<CheckReport, ClientError> {
        if let Some(bad) = install.iter().find(|id| !is_valid_module_id(id)) {
            return Err(ClientError::ModuleId((*bad).to_owned()));
        }
        let modules = with_installs(installed.query_modules(), install);
        if modules.is_empty() {
            return Err(ClientError::Empty);
        }
        // Every part names the installation's channel and bucket (SPEC.md §4.3).
        let audience = Query {
            compact: true,
            channel: self.shared.channel.as_deref().map(Cow::Borrowed),
            bucket: installed.bucket,
            // Answers too large for a datagram come as shared module documents (SPEC.md §8.5).
            module_docs: true,
            modules: vec![],
            patch: PATCH_FORMATS.map(Cow::Borrowed),
        };
        let parts = QueryPacker::new(&audience, modules, self.shared.transport.nonce_bound, |m| {
            installed.predicted_answer_len(m)
        });
        self.check_parts(parts).await
    }

    /// Runs the exchanges of `parts` concurrently, each from the moment it is packed (the first
    /// parts are on the wire while the last are packed), follows fallbacks, and checks every
    /// answer against its query as it comes in, while the other exchanges go on.
    async fn check_parts<'a>(
        &self,
        parts: impl Iterator<Item = Result<PackedPart<'a>, EncodeError>>,
    ) -> Result<CheckReport, ClientError> {
        // One deadline for the whole check, whatever the number of parts (SPEC.md §2.3).
        let deadline = Instant::now() + self.shared.transport.deadline;
        let limit = Arc::new(Semaphore::new(self.in_flight));
        let traffic = (self.shared.traffic.sent(), self.shared.traffic.received());
        // A few sockets for the whole check, each carrying many parts in flight: closed when the
        // last part is done.
        let counters = Counters { traffic: self.shared.traffic.clone(), dropped: self.shared.dropped.clone() };
        let pool = Arc::new(SocketPool::new(counters));
        let mut tasks = JoinSet::new();
        let mut exchanges = 0;
        for (index, part) in parts.enumerate() {
            let PackedPart { body, query } = part.map_err(|e| ClientError::Answer(e.to_string()))?;
            let query = query.into_owned();
            exchanges += 1;
            let shared = self.shared.clone();
            let limit = limit.clone();
            let pool = pool.clone();
            tasks.spawn(async move {
                let permit = limit.acquire_owned().await;
                let (transport, keys, jar) = (&shared.transport, &shared.keys, &shared.jar);
                let start = shared.preferred.load(Ordering::Relaxed);
                let reply = pool.exchange(&body, transport, keys, jar, start, deadline).await?;
                if let Some(index) = transport.servers.iter().position(|s| *s == reply.server) {
                    shared.preferred.store(index, Ordering::Relaxed);
                }
                if reply.kind == MessageKind::Response {
                    // Decoded once, by the verification.
                    let answer =
                        reply.answer.ok_or_else(|| ClientError::Answer("the exchange kept no decoded body".into()))?;
                    // The next exchange starts while this answer is expanded.
                    drop(permit);
                    return Ok::<_, ClientError>((index, Part::new(query, answer, false)?, 0));
                }
                let pointer = Fallback::decode(&reply.body).map_err(|e| ClientError::Answer(e.to_string()))?;
                // Decoded once, by the check of the document.
                let fetched = fetch_document(&shared.fetcher, &pointer, unix_now()).await?;
                drop(permit);
                Ok((index, Part::new(query, fetched.response, true)?, fetched.len as u64))
            });
        }
        let mut answered: Vec<Option<Part>> = vec![None; exchanges];
        let mut documents = 0;
        while let Some(joined) = tasks.join_next().await {
            let (index, part, document_len) = joined.map_err(|e| ClientError::Answer(e.to_string()))??;
            match answered.get_mut(index) {
                Some(slot @ None) => *slot = Some(part),
                _ => return Err(ClientError::Answer(format!("part {index} answered twice"))),
            }
            documents += document_len;
        }
        // In the order of the parts, as packed: the merge then finds the answers nearly sorted.
        let parts: Vec<Part> = answered.into_iter().flatten().collect();
        let fallbacks = parts.iter().filter(|p| p.fell_back).count();
        let fallback_modules = parts.iter().flat_map(|p| p.fallback_modules.iter().cloned()).collect();
        let answers = parts.into_iter().map(|p| p.response).collect();
        let dropped = self.shared.dropped.lock().map(|d| *d).unwrap_or_default();
        Ok(CheckReport {
            answers,
            fallback_modules,
            exchanges,
            fallbacks,
            dropped,
            bytes_sent: self.shared.traffic.sent() - traffic.0,
            bytes_received: self.shared.traffic.received() - traffic.1 + documents,
        })
    }

    /// What this client's exchanges have dropped so far, over every check: for diagnostics,
    /// and for watching a check that is still running (a [`CheckReport`] has the total only at
    /// the end).
    pub fn dropped(&self) -> Dropped {
        self.shared.dropped.lock().map(|d| *d).unwrap_or_default()
    }

    /// Whether install reports are on ([`ClientBuilder::reports`]).
    pub fn reports_enabled(&self) -> bool {
        self.shared.reports
    }

    /// Sends the install reports queued in `installed` to the server that last answered, with
    /// this client's channel and the installation's bucket band, and returns the attempts it
    /// acknowledged (to remove from the queue). Never fails: what is not acknowledged stays
    /// for the next check (SPEC.md §5.11). Sends nothing when reports are off.
    pub async fn send_reports(&self, installed: &InstalledState) -> Vec<u64> {
        if !self.shared.reports || installed.reports.is_empty() {
            return Vec::new();
        }
        let servers = &self.shared.transport.servers;
        let Some(&server) = servers.get(self.shared.preferred.load(Ordering::Relaxed)).or(servers.first()) else {
            return Vec::new();
        };
        let channel = self.shared.channel.as_deref();
        crate::report::send(&installed.reports, channel, installed.band(), server, &self.shared.jar).await
    }

    /// The fetcher, for payload downloads.
    pub fn fetcher(&self) -> &F {
        &self.shared.fetcher
    }

    /// The cookies learnt so far, to save with the installation's state.
    pub fn cookie_jar(&self) -> CookieJar {
        self.shared.jar.lock().map(|j| j.clone()).unwrap_or_default()
    }

    /// Restores cookies saved with the installation's state.
    pub fn set_cookie_jar(&self, jar: CookieJar) {
        if let Ok(mut mine) = self.shared.jar.lock() {
            *mine = jar;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::borrow::Cow;

    #[test]
    fn downgrades_without_a_signed_rollback_are_refused() {
        let mut state = InstalledState::default();
        let module = crate::state::InstalledModule {
            version: "2.0".into(),
            files: Default::default(),
            frequent: vec![],
            ..Default::default()
        };
        state.modules.insert("m".into(), module);
        let mut answer = ModuleAnswer::new(Cow::Borrowed("m"), Status::Update, Some(Version::parse("1.0").unwrap()));
        assert!(is_refused_downgrade(&answer, &state));
        answer.rollback = true;
        assert!(!is_refused_downgrade(&answer, &state));
        answer.latest = Some(Version::parse("3.0").unwrap());
        answer.rollback = false;
        assert!(!is_refused_downgrade(&answer, &state));
    }
}
