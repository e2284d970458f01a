//! What the server does with one datagram (SPEC.md §2.5, §8.1, §9, §10.6), without sockets:
//! decode, rate-limit, check the cookie, answer from the catalog (or from a cached signed
//! answer), decide inline or fallback, and apply the 3× rule. The UDP driver ([`crate::udp`])
//! feeds datagrams in and sends what comes out.
//!
//! Signatures are reused (SPEC.md §10.2): answers are valid for a window aligned to the minute,
//! so every identical query in that minute, on any instance, gets the identical answer body,
//! and from one worker, once the query has come twice, the identical signed bytes; each worker
//! keeps its own cache, so the hot path takes no lock, and keeps an answer only from the second
//! time its query comes, so distinct queries do not churn it. The answers that need a new
//! signature and are ready at the same time — those of the datagrams the driver takes in
//! together ([`Worker::take`], possibly over several receive calls) — are signed as one batch
//! (SPEC.md §10.3.1) by [`Worker::sign_waiting`], one Ed25519 signature for all of them; a lone
//! answer is signed alone, in the single form.
//!
//! A source that has not proven its address (SPEC.md §10.6) gets only what the 3× rule lets
//! the server send it: a cached answer, or an inline answer small enough. Whether the answer
//! can be that small is decided from the catalog before anything is built, so such a source
//! never makes the server build, sign, keep or write a fallback document: it gets the cookie
//! challenge first.
//!
//! Install reports (SPEC.md §5.11) from a validated source within the rate limit go to the
//! [`ReportSink`] and are acknowledged (20 bytes) when it takes them; an unvalidated source gets
//! the cookie challenge; nothing else is ever sent to a report.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use bytes::Bytes;
use upgram_core::body::fallback::MAX_MODULE_DOCUMENTS;
use upgram_core::body::{Binding, ErrorBody, ErrorCode, Query, Report};
use upgram_core::cookie::{
    ClientCookie, CookieCheck, CookieSecret, ServerCookie, cookie_freshness, is_authentic_cookie, make_server_cookie,
    within_amplification_limit,
};
use upgram_core::fallback::{
    PreparedReply, ReplyShape, UnsignedReply, encode_module_fallback_elements, encode_reply_body,
};
use upgram_core::limits::{AMPLIFICATION_FACTOR, HEADER_LEN};
use upgram_core::sign::{BatchItem, ReplySigner, SignatureBlock};
use upgram_core::wire::{Frame, MessageKind, PROTOCOL_VERSION, peek_version_and_id, trailer_len};
use upgram_core::{DecodeError, MAX_DATAGRAM_LEN, Sha256Digest};

use crate::catalog::Catalog;
use crate::documents::{DocumentLimits, DocumentStore};
use crate::doorkeeper::Doorkeeper;
use crate::intake::{RecentAttempts, ReportSink, SinkSlot};
use crate::metrics::{Metrics, Snapshot, bump, snapshot};
use crate::ratelimit::RateLimiter;
use crate::responder::{AnswerCache, EncodedAnswer, LeastLengths, encode_parts, respond_parts};

/// Answers are issued at the start of the current minute, so instances agree on the bytes.
pub const ISSUE_GRANULARITY_SECS: u64 = 60;
/// Most signed answers one worker keeps.
const MAX_CACHED_REPLIES: usize = 16_384;
/// How long a fallback document stays retrievable after its answer expires (SPEC.md §8.4).
pub const DOCUMENT_GRACE_SECS: u64 = 3600;

/// Settings of a running server.
#[derive(Debug, Clone)]
pub struct Config {
    /// Public base URL of the HTTP side, ending in `/` (payloads at `store/`, documents at
    /// `doc/`).
    pub public_url: String,
    /// Validity of an answer, `expires - issued` (at most 600 s).
    pub validity_secs: u64,
    /// Queries per second allowed per source address.
    pub rate_per_source: f64,
    /// Burst allowed per source address.
    pub burst_per_source: f64,
    /// If set, fallback documents are also written here as `doc/<sha256>.xml`, so a static
    /// web server or CDN can serve them.
    pub docs_dir: Option<PathBuf>,
    /// UDP workers. They share one per-source budget: a source gets `rate_per_source` whatever
    /// their number.
    pub workers: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            public_url: "http://127.0.0.1:8080/".into(),
            validity_secs: 300,
            rate_per_source: 200.0,
            burst_per_source: 400.0,
            docs_dir: None,
            workers: 1,
        }
    }
}

/// A catalog as loaded, with a generation that changes on every reload.
#[derive(Debug)]
pub struct LoadedCatalog {
    /// The catalog.
    pub catalog: Catalog,
    /// Increases on every successful reload; part of every cache key.
    pub generation: u64,
}

/// The cookie secrets: current and, during a rotation, previous (SPEC.md §10.6).
#[derive(Debug, Clone)]
pub struct CookieSecrets {
    /// Makes new cookies and checks them.
    pub current: CookieSecret,
    /// Still accepted.
    pub previous: Option<CookieSecret>,
}

/// State shared by every worker.
#[derive(Debug)]
pub struct Shared {
    catalog: ArcSwap<LoadedCatalog>,
    signer: ReplySigner,
    secrets: CookieSecrets,
    config: Config,
    /// Counters of the shared parts (reloads).
    pub metrics: Metrics,
    workers: Mutex<Vec<Arc<Metrics>>>,
    documents: Mutex<DocumentStore>,
    /// Documents the store has evicted early, ever: when it changes, module documents that
    /// were handed over before may be gone and are handed over again.
    evictions: AtomicU64,
    limiter: RateLimiter,
    /// Why the last reload failed, while the old catalog is kept; `None` once a reload works.
    reload_failure: Mutex<Option<String>>,
    /// HTTP responses under `store/`, by status code.
    downloads: Mutex<BTreeMap<u16, u64>>,
    /// The install report writer, when reports are stored (its counters and per-release counts
    /// go to `/metrics`).
    pub reports: std::sync::OnceLock<Arc<crate::reports::ReportWriter>>,
    /// Where accepted install reports go.
    report_sink: SinkSlot,
    /// Attempts already handed to `report_sink`.
    recent_attempts: RecentAttempts,
}

impl Shared {
    /// Server state around `catalog`.
    pub fn new(catalog: Catalog, signer: ReplySigner, secrets: CookieSecrets, config: Config) -> Self {
        Self::with_document_limits(catalog, signer, secrets, config, DocumentLimits::default())
    }

    /// Server state around `catalog`, keeping at most `limits` of fallback documents.
    pub fn with_document_limits(
        catalog: Catalog,
        signer: ReplySigner,
        secrets: CookieSecrets,
        config: Config,
        limits: DocumentLimits,
    ) -> Self {
        let documents = DocumentStore::new(limits, config.docs_dir.clone());
        let limiter = RateLimiter::new(config.rate_per_source, config.burst_per_source);
        Self {
            catalog: ArcSwap::from_pointee(LoadedCatalog { catalog, generation: 0 }),
            signer,
            secrets,
            config,
            metrics: Metrics::default(),
            workers: Mutex::new(Vec::new()),
            documents: Mutex::new(documents),
            evictions: AtomicU64::new(0),
            limiter,
            reload_failure: Mutex::new(None),
            downloads: Mutex::new(BTreeMap::new()),
            reports: std::sync::OnceLock::new(),
            report_sink: SinkSlot::default(),
            recent_attempts: RecentAttempts::default(),
        }
    }

    /// Hands accepted install reports to `sink` (by default they are acknowledged and
    /// discarded, see [`crate::intake::DiscardReports`]).
    pub fn with_report_sink(mut self, sink: Arc<dyn ReportSink>) -> Self {
        self.report_sink = SinkSlot(sink);
        self
    }

    /// Swaps in a new catalog, whole: a query is answered from the old one or the new one,
    /// never a mix.
    pub fn replace_catalog(&self, catalog: Catalog) {
        let generation = self.catalog.load().generation + 1;
        self.catalog.store(Arc::new(LoadedCatalog { catalog, generation }));
        bump(&self.metrics.reloads);
        if let Ok(mut failure) = self.reload_failure.lock() {
            *failure = None;
        }
    }

    /// Records that a reload failed with `error`, the catalog in use staying as it was; the
    /// server reports itself unhealthy until a reload succeeds.
    pub fn reload_failed(&self, error: &dyn std::fmt::Display) {
        bump(&self.metrics.reload_failures);
        if let Ok(mut failure) = self.reload_failure.lock() {
            *failure = Some(error.to_string());
        }
    }

    /// Why the last reload failed, if it did (the old catalog is still served).
    pub fn reload_failure(&self) -> Option<String> {
        self.reload_failure.lock().ok().and_then(|f| f.clone())
    }

    /// Counts an HTTP response under `store/` with this status code.
    pub fn count_download(&self, status: u16) {
        if let Ok(mut downloads) = self.downloads.lock() {
            *downloads.entry(status).or_default() += 1;
        }
    }

    /// The catalog now in use.
    pub fn catalog(&self) -> Arc<LoadedCatalog> {
        self.catalog.load_full()
    }

    /// Every counter, added up over the workers.
    pub fn metrics(&self) -> Snapshot {
        let workers = self.workers.lock().map(|w| w.clone()).unwrap_or_default();
        let mut total = snapshot(std::iter::once(&self.metrics).chain(workers.iter().map(|m| m.as_ref())));
        let loaded = self.catalog.load();
        total.catalog_modules = loaded.catalog.modules.len() as u64;
        total.catalog_releases = loaded.catalog.modules.values().map(|m| m.releases.len() as u64).sum();
        total.downloads = self.downloads.lock().map(|d| d.iter().map(|(s, n)| (*s, *n)).collect()).unwrap_or_default();
        total
    }

    /// The settings.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The fallback document with this hash, if it is still kept.
    pub fn document(&self, sha256: &Sha256Digest) -> Option<Bytes> {
        self.documents.lock().ok()?.get(sha256)
    }

    /// Fallback documents kept, and their bytes.
    pub fn documents_kept(&self) -> (usize, usize) {
        self.documents.lock().map(|d| (d.len(), d.bytes())).unwrap_or_default()
    }

    /// Drops the fallback documents (and their files) whose time ran out at unix time `now`.
    pub fn expire_documents(&self, now: u64) {
        if let Ok(mut documents) = self.documents.lock() {
            documents.expire(now);
        }
    }

    /// Keeps a document until its answer expires plus the grace period; returns how many were
    /// evicted early to make room.
    fn keep_document(&self, sha256: Sha256Digest, bytes: Bytes, expires: u64, now: u64) -> usize {
        let Ok(mut documents) = self.documents.lock() else {
            return 0;
        };
        let evicted = documents.insert(sha256, bytes, expires + DOCUMENT_GRACE_SECS, now);
        self.evictions.fetch_add(evicted as u64, Ordering::Relaxed);
        evicted
    }

    /// Keeps the module documents of one fallback (those of `parts` whose entry in `due` is
    /// true), under one lock. Returns how many documents were evicted early to make
    /// room, and whether every document of `parts` is kept afterwards: under pressure, one
    /// of them may have been evicted to make room for another.
    fn keep_module_documents(
        &self,
        parts: &[Arc<EncodedAnswer>],
        due: &[bool],
        expires: u64,
        now: u64,
    ) -> (usize, bool) {
        let Ok(mut documents) = self.documents.lock() else {
            return (0, false);
        };
        let until = expires + DOCUMENT_GRACE_SECS;
        let mut evicted = 0;
        for (part, _) in parts.iter().zip(due).filter(|(_, due)| **due) {
            evicted += documents.insert(part.sha256(), part.bytes().clone(), until, now);
        }
        self.evictions.fetch_add(evicted as u64, Ordering::Relaxed);
        let all_kept = evicted == 0 || parts.iter().all(|p| documents.contains(&p.sha256()));
        (evicted, all_kept)
    }

    /// Whether the store keeps the document of every one of `parts`.
    fn keeps_all(&self, parts: &[Arc<EncodedAnswer>]) -> bool {
        self.documents.lock().is_ok_and(|documents| parts.iter().all(|p| documents.contains(&p.sha256())))
    }
}

#[derive(Debug)]
struct CachedReply {
    generation: u64,
    /// The store's count of early evictions before the documents the reply names were kept.
    evictions: u64,
    reply: Arc<PreparedReply>,
}

impl CachedReply {
    /// Whether the reply may be sent again: made from this catalog generation and, for a
    /// fallback, no document evicted early since its documents were kept (one it names may
    /// be among them; the answer is then made again, which keeps its documents again).
    fn is_current(&self, generation: u64, evictions: u64) -> bool {
        self.generation == generation && (self.reply.kind != MessageKind::Fallback || self.evictions == evictions)
    }
}

/// One worker's view: the shared state and a private cache of signed answers.
#[derive(Debug)]
pub struct Worker {
    shared: Arc<Shared>,
    metrics: Arc<Metrics>,
    cache: ReplyCache,
    /// Encoded answers of single modules, from which answers to new queries are assembled.
    answers: AnswerCache,
    /// Server cookies already checked for authenticity (the MAC never changes; the age is
    /// checked every time), so a validated client costs no HMAC per query.
    authentic: FastMap<(IpAddr, ClientCookie, ServerCookie), bool>,
    /// What module questions add to an answer at least, for sources not yet validated.
    least: LeastLengths,
    /// New answers [`Worker::take`] prepared, waiting for [`Worker::sign_waiting`].
    waiting: Vec<Waiting>,
    /// Scratch space for a response's envelope, to know its length before building it.
    envelope: Vec<u8>,
}

/// The workers' maps: a fast hasher, seeded at random per process (keys come from the network).
type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// Most remembered cookie checks per worker.
const MAX_REMEMBERED_COOKIES: usize = 65_536;

/// What [`Worker::answer`] found for a query.
enum Answer {
    /// The signed reply.
    Reply(Arc<PreparedReply>),
    /// A new answer, to be signed.
    Unsigned(Unsigned),
    /// The source is not validated and the answer could not be sent to it: nothing was built.
    Refused,
    /// The body does not decode.
    Malformed,
}

/// A new answer waiting for its signature, and what keeping it needs.
#[derive(Debug)]
struct Unsigned {
    reply: UnsignedReply,
    issued: u64,
    generation: u64,
    expires: u64,
    /// The store's count of early evictions before its documents were kept.
    evictions: u64,
    /// Whether it may go into the cache (no nonce).
    cacheable: bool,
    /// The SHA-256 of the query body (its `for`): equal for identical queries.
    query: Sha256Digest,
}

/// A query whose answer waits for its signature, between the two steps of a batch. It owns
/// what the second step needs of the query (its id, and its body when the signed answer goes
/// into the cache), so the worker can receive more datagrams into the same buffers before it
/// signs.
#[derive(Debug)]
struct Waiting {
    /// Where the reply goes: the index of its buffer.
    slot: usize,
    request_id: u64,
    /// The query body, the cache's key: only for an answer that goes into the cache, one whose
    /// query body was seen before (an answer is kept from the second time its query comes, see
    /// [`ReplyCache::admit`]), so a new query's body is not copied.
    body: Option<Box<[u8]>>,
    source: Source,
    now: u64,
    received: usize,
    answer: Unsigned,
}

impl Waiting {
    /// The answer as a batch item: its reply must stay within the datagram limit and, for a
    /// source that has not proven its address, within the 3× rule.
    fn batch_item(&self) -> BatchItem<'_> {
        let limit =
            if self.source.validated { MAX_DATAGRAM_LEN } else { self.received.saturating_mul(AMPLIFICATION_FACTOR) };
        self.answer.reply.batch_item(limit)
    }
}

/// What the first step made of a datagram.
enum Step {
    /// Done: the reply, if any, is written (the value says whether there is one).
    Done(bool),
    /// The answer needs a signature: it is the last of the worker's waiting answers.
    Sign,
}

/// What [`Worker::take`] did with a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Taken {
    /// The reply, if any, is written (the value says whether there is one).
    Replied(bool),
    /// The answer waits for [`Worker::sign_waiting`], which writes its reply.
    Waiting,
}

/// Where a query stands with respect to the 3× rule.
#[derive(Debug)]
struct Source {
    ip: IpAddr,
    client_cookie: Option<ClientCookie>,
    validated: bool,
    attach_cookie: bool,
}

impl Worker {
    /// A worker on `shared`.
    pub fn new(shared: Arc<Shared>) -> Self {
        let metrics = Arc::new(Metrics::default());
        if let Ok(mut workers) = shared.workers.lock() {
            workers.push(metrics.clone());
        }
        Self {
            shared,
            metrics,
            cache: ReplyCache::default(),
            answers: AnswerCache::default(),
            authentic: FastMap::default(),
            least: LeastLengths::default(),
            waiting: Vec::new(),
            envelope: Vec::new(),
        }
    }

    /// This worker's counters.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Handles one datagram from `ip` received at `now`; writes the reply, if any, into `out`
    /// (cleared first) and returns whether there is one. Reads no clock and touches no file.
    /// A new answer is signed alone.
    pub fn handle(&mut self, datagram: &[u8], ip: IpAddr, now: SystemTime, out: &mut Vec<u8>) -> bool {
        out.clear();
        match self.prepare(0, datagram, ip, now, out) {
            Step::Done(replied) => replied,
            Step::Sign => {
                let Some(waiting) = self.waiting.pop() else {
                    return false;
                };
                let reply = &waiting.answer.reply;
                let signature = self.shared.signer.sign(reply.kind, reply.shape.nonce.as_ref(), &reply.body);
                self.finish(waiting, signature, out)
            }
        }
    }

    /// Handles datagrams received together at `now`, each with the address it came from: the
    /// first buffers of `out`, one per datagram and in order (`out` grows as needed and keeps
    /// its buffers for the next call), hold the replies, a buffer left empty meaning none. The
    /// new answers among them are signed as one batch (a lone one alone). Reads no clock and
    /// touches no file.
    pub fn handle_batch(&mut self, datagrams: &[(&[u8], SocketAddr)], now: SystemTime, out: &mut Vec<Vec<u8>>) {
        out.resize_with(datagrams.len().max(out.len()), Vec::new);
        for (slot, ((datagram, from), reply)) in datagrams.iter().zip(out.iter_mut()).enumerate() {
            self.take(slot, datagram, from.ip(), now, reply);
        }
        self.sign_waiting(out);
    }

    /// The first step of answering datagrams together, which may come from several receive
    /// calls: handles one datagram from `ip` received at `now`, whose reply goes into buffer
    /// `slot` of the caller's. A reply that needs no signature (an error, a challenge, an
    /// answer signed earlier) is written into `out` (cleared first) at once; a new answer
    /// waits, owning what it needs of the datagram, until [`Self::sign_waiting`] signs every
    /// waiting answer as one batch. Reads no clock and touches no file.
    pub fn take(&mut self, slot: usize, datagram: &[u8], ip: IpAddr, now: SystemTime, out: &mut Vec<u8>) -> Taken {
        out.clear();
        match self.prepare(slot, datagram, ip, now, out) {
            Step::Done(replied) => Taken::Replied(replied),
            Step::Sign => Taken::Waiting,
        }
    }

    /// How many answers [`Self::take`] left waiting for their signature.
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    /// The second step: signs every waiting answer as one batch (a lone one alone, in the
    /// single form) and writes each reply into `out[slot]`, the slot [`Self::take`] was given
    /// (a slot past the end of `out` gets no reply). Touches no file.
    pub fn sign_waiting(&mut self, out: &mut [Vec<u8>]) {
        if self.waiting.is_empty() {
            return;
        }
        let mut waiting = std::mem::take(&mut self.waiting);
        let signatures = {
            let items: Vec<BatchItem<'_>> = waiting.iter().map(Waiting::batch_item).collect();
            self.shared.signer.sign_batch(&items)
        };
        for (answer, signature) in waiting.drain(..).zip(signatures) {
            let slot = answer.slot;
            let mut spare = Vec::new();
            let reply = out.get_mut(slot).unwrap_or(&mut spare);
            self.finish(answer, signature, reply);
        }
        // Keep the allocation for the next batch.
        self.waiting = waiting;
    }

    /// The first step: everything up to the signature. A reply that needs none (an error, a
    /// challenge, a cached answer) is written into `out` at once.
    fn prepare(&mut self, slot: usize, datagram: &[u8], ip: IpAddr, now: SystemTime, out: &mut Vec<u8>) -> Step {
        bump(&self.metrics.datagrams);
        let frame = match Frame::decode(datagram) {
            Ok(frame) if frame.kind == MessageKind::Query => frame,
            Ok(frame) if frame.kind == MessageKind::Report => return Step::Done(self.report(&frame, ip, now, out)),
            Ok(_) => return Step::Done(self.drop_it()),
            Err(error) => return Step::Done(self.undecodable(datagram, &error, out)),
        };
        let since_epoch = now.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
        let now = since_epoch.as_secs();
        if !self.shared.limiter.allow(ip, since_epoch.as_secs_f64()) {
            bump(&self.metrics.rate_limited);
            let mut body = ErrorBody::new(ErrorCode::RateLimited);
            body.retry_after = Some(1);
            return Step::Done(self.error(frame.request_id, &body, datagram.len(), out));
        }
        bump(&self.metrics.queries);
        let source = self.source(&frame, ip, now);
        let received = datagram.len();
        let request_id = frame.request_id;
        let reply = match self.answer(&frame, &source, now, received) {
            Answer::Reply(reply) => reply,
            Answer::Unsigned(answer) => {
                let shape = usize::from(source.attach_cookie);
                let admitted = answer.cacheable && self.cache.admit(&answer.query, shape);
                if admitted {
                    // An identical query earlier in this batch was not admitted when it came:
                    // it is now, so both get the same signed bytes.
                    for earlier in &mut self.waiting {
                        if earlier.body.is_none()
                            && earlier.answer.cacheable
                            && usize::from(earlier.source.attach_cookie) == shape
                            && earlier.answer.query == answer.query
                        {
                            earlier.body = Some(frame.body.into());
                        }
                    }
                }
                let body = admitted.then(|| frame.body.into());
                self.waiting.push(Waiting { slot, request_id, body, source, now, received, answer });
                return Step::Sign;
            }
            Answer::Refused => {
                bump(&self.metrics.unvalidated_refused);
                return Step::Done(self.challenge(request_id, &source, now, received, out));
            }
            Answer::Malformed => {
                bump(&self.metrics.malformed);
                let body = ErrorBody::new(ErrorCode::MalformedQuery);
                return Step::Done(self.error(request_id, &body, received, out));
            }
        };
        Step::Done(self.send_reply(&reply, request_id, &source, now, received, out))
    }

    /// An install report (SPEC.md §5.11): rate limit, cookie, body, sink, acknowledgement.
    /// Nothing but a cookie challenge or a report-ack is ever sent back, both smaller than any
    /// decodable report.
    fn report(&mut self, frame: &Frame<'_>, ip: IpAddr, received_at: SystemTime, out: &mut Vec<u8>) -> bool {
        let since_epoch = received_at.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
        let now = since_epoch.as_secs();
        bump(&self.metrics.reports);
        if !self.shared.limiter.allow(ip, since_epoch.as_secs_f64()) {
            bump(&self.metrics.reports_rate_limited);
            return self.drop_it();
        }
        let received = frame.encoded_len();
        let source = self.source(frame, ip, now);
        if !source.validated {
            bump(&self.metrics.reports_refused);
            return self.challenge(frame.request_id, &source, now, received, out);
        }
        let Ok(report) = Report::decode(frame.body) else {
            bump(&self.metrics.malformed);
            return self.drop_it();
        };
        let shared = &self.shared;
        if let Some(fresh) = shared.recent_attempts.unseen(&report) {
            if !shared.report_sink.0.offer(&fresh, received_at) {
                bump(&self.metrics.reports_dropped);
                return self.drop_it();
            }
            shared.recent_attempts.remember(&fresh);
            for outcome in &fresh.outcomes {
                bump(&self.metrics.outcomes[outcome.result as usize]);
            }
        }
        bump(&self.metrics.reports_accepted);
        let ack = Frame::report_ack(frame.request_id);
        if ack.encoded_len() > received || ack.encode(out).is_err() {
            out.clear();
            return self.drop_it();
        }
        bump(&self.metrics.report_acks);
        true
    }

    /// The second step: keeps the signed answer (its document, and in the cache) and writes
    /// the reply.
    fn finish(&mut self, waiting: Waiting, signature: SignatureBlock, out: &mut Vec<u8>) -> bool {
        let Waiting { request_id, body, source, now, received, answer, .. } = waiting;
        let shape = usize::from(source.attach_cookie);
        let (issued, generation, evictions) = (answer.issued, answer.generation, answer.evictions);
        let Some(body) = body else {
            let prepared = keep_signed(&self.shared, &self.metrics, answer, signature, now);
            return self.send_reply(&prepared, request_id, &source, now, received, out);
        };
        // One lookup of the body, which also finds an identical query earlier in the same
        // batch: both then get the same signed bytes.
        self.cache.start_window(shape, issued);
        let reply = match self.cache.maps[shape].entry(body) {
            Entry::Occupied(cached)
                if cached.get().is_current(generation, self.shared.evictions.load(Ordering::Relaxed)) =>
            {
                bump(&self.metrics.cache_hits);
                cached.get().reply.clone()
            }
            entry => {
                let prepared = keep_signed(&self.shared, &self.metrics, answer, signature, now);
                let cached = CachedReply { generation, evictions, reply: prepared.clone() };
                match entry {
                    Entry::Occupied(mut old) => {
                        old.insert(cached);
                    }
                    Entry::Vacant(slot) => {
                        slot.insert(cached);
                    }
                }
                prepared
            }
        };
        self.send_reply(&reply, request_id, &source, now, received, out)
    }

    /// Frames `reply` for `frame`'s query, or challenges a source it may not be sent to.
    fn send_reply(
        &self,
        reply: &PreparedReply,
        request_id: u64,
        source: &Source,
        now: u64,
        received: usize,
        out: &mut Vec<u8>,
    ) -> bool {
        if !source.validated && !within_amplification_limit(reply.datagram_len(), received) {
            return self.challenge(request_id, source, now, received, out);
        }
        let cookie = source.attach_cookie.then(|| self.fresh_cookie(source, now));
        if reply.frame(request_id, cookie).encode(out).is_err() {
            out.clear();
            return self.drop_it();
        }
        bump(if reply.kind == MessageKind::Fallback { &self.metrics.fallbacks } else { &self.metrics.responses });
        true
    }

    fn drop_it(&self) -> bool {
        bump(&self.metrics.dropped);
        false
    }

    /// A datagram that did not decode: an error reply where the spec allows one and it is no
    /// larger than the datagram, else nothing.
    fn undecodable(&self, datagram: &[u8], error: &DecodeError, out: &mut Vec<u8>) -> bool {
        bump(&self.metrics.malformed);
        let Some((version, request_id)) = peek_version_and_id(datagram) else {
            return self.drop_it();
        };
        // Only queries get replies; a kind byte other than 1 may be another version's reply.
        if datagram.get(5) != Some(&(MessageKind::Query as u8)) {
            return self.drop_it();
        }
        let body = match error {
            DecodeError::UnsupportedVersion { .. } if version != PROTOCOL_VERSION => {
                let mut body = ErrorBody::new(ErrorCode::UnsupportedVersion);
                body.supported = vec![PROTOCOL_VERSION];
                body
            }
            DecodeError::TooLarge { .. } => return self.drop_it(),
            _ => ErrorBody::new(ErrorCode::MalformedQuery),
        };
        self.error(request_id, &body, datagram.len(), out)
    }

    /// An error reply, sent only if it is no larger than the query (SPEC.md §9).
    fn error(&self, request_id: u64, body: &ErrorBody<'_>, received: usize, out: &mut Vec<u8>) -> bool {
        let bytes = body.to_vec();
        let frame = Frame::error(request_id, &bytes);
        if frame.encoded_len() > received || frame.encode(out).is_err() {
            out.clear();
            return self.drop_it();
        }
        bump(&self.metrics.errors);
        true
    }

    fn source(&mut self, frame: &Frame<'_>, ip: IpAddr, now: u64) -> Source {
        let check = match (frame.client_cookie, frame.server_cookie) {
            (Some(client), Some(server)) if self.is_authentic(ip, client, server) => cookie_freshness(&server, now),
            _ => CookieCheck::Invalid,
        };
        let validated = matches!(check, CookieCheck::Valid { .. });
        let renew = matches!(check, CookieCheck::Valid { renew: true });
        Source {
            ip,
            client_cookie: frame.client_cookie,
            validated,
            attach_cookie: frame.client_cookie.is_some() && (!validated || renew),
        }
    }

    fn is_authentic(&mut self, ip: IpAddr, client: ClientCookie, server: ServerCookie) -> bool {
        if let Some(&known) = self.authentic.get(&(ip, client, server)) {
            return known;
        }
        let secrets = &self.shared.secrets;
        let keys: [Option<&CookieSecret>; 2] = [Some(&secrets.current), secrets.previous.as_ref()];
        let keys: Vec<&CookieSecret> = keys.into_iter().flatten().collect();
        let authentic = is_authentic_cookie(&keys, &client, &server, ip);
        if self.authentic.len() >= MAX_REMEMBERED_COOKIES {
            self.authentic.clear();
        }
        self.authentic.insert((ip, client, server), authentic);
        authentic
    }

    fn fresh_cookie(&self, source: &Source, now: u64) -> ServerCookie {
        let client = source.client_cookie.unwrap_or_default();
        make_server_cookie(&self.shared.secrets.current, &client, source.ip, now)
    }

    fn challenge(&self, request_id: u64, source: &Source, now: u64, received: usize, out: &mut Vec<u8>) -> bool {
        let challenge = Frame::cookie_challenge(request_id, source.client_cookie, self.fresh_cookie(source, now));
        if challenge.encoded_len() > received || challenge.encode(out).is_err() {
            out.clear();
            return self.drop_it();
        }
        bump(&self.metrics.cookie_challenges);
        true
    }

    /// The answer to `frame`'s query: signed, from the cache, when an identical query was
    /// answered in this window, else decoded, answered and left for the caller to sign; refused, before anything is
    /// built, when the source is not validated and the answer cannot fit what it may be sent.
    fn answer(&mut self, frame: &Frame<'_>, source: &Source, now: u64, received: usize) -> Answer {
        let issued = now - now % ISSUE_GRANULARITY_SECS;
        let loaded = self.shared.catalog.load();
        let shape = usize::from(source.attach_cookie);
        let cacheable = frame.nonce.is_none();
        let evictions = self.shared.evictions.load(Ordering::Relaxed);
        if cacheable && let Some(reply) = self.cache.get(frame.body, shape, issued, loaded.generation, evictions) {
            bump(&self.metrics.cache_hits);
            return Answer::Reply(reply);
        }
        let Ok(query) = Query::decode(frame.body) else {
            return Answer::Malformed;
        };
        let reply_shape = ReplyShape { nonce: frame.nonce, server_cookie: source.attach_cookie };
        // What an unvalidated source may be sent: an inline answer within the 3x rule.
        let limit = (!source.validated).then(|| (received.saturating_mul(3)).min(MAX_DATAGRAM_LEN));
        let overhead = HEADER_LEN + trailer_len(MessageKind::Response, reply_shape.flags());
        if let Some(limit) = limit
            && overhead + self.least.least_answer_len(&loaded.catalog, loaded.generation, &query, issued, limit) > limit
        {
            return Answer::Refused;
        }
        let config = &self.shared.config;
        let binding = Binding { query: Sha256Digest::of(frame.body), issued, expires: issued + config.validity_secs };
        let public = &config.public_url;
        let parts = respond_parts(&loaded.catalog, loaded.generation, &query, binding, &mut self.answers);
        // The response's length, known before it is built: the module-document form does not
        // need it built at all. When the module answers alone overflow a datagram, which is
        // all that is decided with it, their length stands for it (the envelope only adds).
        let parts_bytes: usize = parts.iter().map(|p| p.bytes().len()).sum();
        let body_len = if overhead + parts_bytes > MAX_DATAGRAM_LEN {
            parts_bytes
        } else {
            parts_len(&parts, binding, public, query.compact, &mut self.envelope)
        };
        if let Some(limit) = limit
            && overhead + body_len > limit
        {
            return Answer::Refused;
        }
        let unsigned = |reply| {
            Answer::Unsigned(Unsigned {
                reply,
                issued,
                generation: loaded.generation,
                expires: binding.expires,
                evictions,
                cacheable,
                query: binding.query,
            })
        };
        // A client that follows module documents gets a pointer to the module answers, each a
        // document shared with every other query that asks the same (SPEC.md §8.5).
        if query.module_docs
            && overhead + body_len > MAX_DATAGRAM_LEN
            && let Some(reply) = self.module_fallback(&parts, binding, query.compact, reply_shape, evictions, now)
        {
            return unsigned(reply);
        }
        let mut body = Vec::with_capacity(body_len);
        encode_parts(&parts, binding, public, query.compact, &mut body);
        match encode_reply_body(binding, body, reply_shape, |sha| vec![document_url(public, sha)]) {
            Ok(reply) => unsigned(reply),
            Err(e) => {
                tracing::warn!("cannot encode the answer to a query of {} modules: {e}", query.modules.len());
                Answer::Malformed
            }
        }
    }
}

impl Worker {
    /// The module-document fallback for an answer made of `parts`, if it fits a datagram and
    /// the store keeps every document it names; its documents are given to the store (before
    /// the reply is sent, SPEC.md §8.4), each once per window however many answers name it,
    /// and again after the store has evicted documents early to make room.
    fn module_fallback(
        &self,
        parts: &[Arc<EncodedAnswer>],
        binding: Binding,
        compact: bool,
        shape: ReplyShape,
        evictions: u64,
        now: u64,
    ) -> Option<UnsignedReply> {
        if parts.len() > MAX_MODULE_DOCUMENTS {
            return None;
        }
        // Each part's element is encoded once, however many fallbacks name it.
        let mut elements: [&[u8]; MAX_MODULE_DOCUMENTS] = [&[]; MAX_MODULE_DOCUMENTS];
        for (element, part) in elements.iter_mut().zip(parts) {
            *element = part.element();
        }
        let public = &self.shared.config.public_url;
        let reply = encode_module_fallback_elements(binding, public, compact, &elements[..parts.len()], shape)?;
        let until = binding.expires + DOCUMENT_GRACE_SECS;
        // Asked of every part (no short cut): each records this window and eviction count. A
        // fallback names at most MAX_MODULE_DOCUMENTS documents (or is not made).
        let mut due = [false; MAX_MODULE_DOCUMENTS];
        for (due, part) in due.iter_mut().zip(parts) {
            *due = part.needs_keeping(until, evictions);
        }
        let (evicted, mut all_kept) = if due.contains(&true) {
            self.shared.keep_module_documents(parts, &due, binding.expires, now)
        } else {
            (0, true)
        };
        self.metrics.count_evictions(evicted);
        // Another worker may have evicted one of them since `evictions` was read: only then
        // are they looked up again.
        if all_kept && self.shared.evictions.load(Ordering::Relaxed) != evictions + evicted as u64 {
            all_kept = self.shared.keeps_all(parts);
        }
        // A pointer to a document that is gone is never sent: the caller falls back to a
        // document of this answer alone.
        all_kept.then_some(reply)
    }
}

/// An answer with its signature, counted, its document kept for the HTTP side.
fn keep_signed(
    shared: &Shared,
    metrics: &Metrics,
    answer: Unsigned,
    signature: SignatureBlock,
    now: u64,
) -> Arc<PreparedReply> {
    bump(&metrics.signatures);
    match &signature.batch {
        // One Ed25519 signature per batch: count it at its first leaf.
        Some(batch) => {
            bump(&metrics.batch_signed);
            if batch.index() == 0 {
                bump(&metrics.ed25519_signatures);
            }
        }
        None => bump(&metrics.ed25519_signatures),
    }
    let mut prepared = answer.reply.signed(signature);
    if let Some(document) = prepared.document.take() {
        let evicted = shared.keep_document(document.sha256, document.bytes.into(), answer.expires, now);
        metrics.count_evictions(evicted);
    }
    Arc::new(prepared)
}

/// The length of the response [`encode_parts`] makes of `parts`, without building it: the
/// envelope (head and end tag, written into `scratch`) plus the parts.
fn parts_len(
    parts: &[Arc<EncodedAnswer>],
    binding: Binding,
    base: &str,
    compact: bool,
    scratch: &mut Vec<u8>,
) -> usize {
    scratch.clear();
    if parts.is_empty() {
        encode_parts(parts, binding, base, compact, scratch);
        return scratch.len();
    }
    // One empty part gives exactly the envelope of a response with modules.
    let modules = std::iter::once(&[][..]);
    upgram_core::body::Response::encode_from_parts(&binding, Some(base), compact, modules, scratch);
    scratch.len() + parts.iter().map(|p| p.bytes().len()).sum::<usize>()
}

/// Where the HTTP side serves the document with hash `sha256`: `{public}doc/{sha256}.xml`.
fn document_url(public: &str, sha256: &Sha256Digest) -> String {
    upgram_core::body::fallback::document_url(public, sha256)
}

/// Signed answers of the current minute, by exact query body; index 1 holds those made with a
/// fresh server cookie attached (a different shape). An answer is kept from the second time
/// its query body comes ([`Doorkeeper`]).
#[derive(Debug)]
struct ReplyCache {
    maps: [FastMap<Box<[u8]>, CachedReply>; 2],
    issued: u64,
    doorkeeper: Doorkeeper,
}

impl Default for ReplyCache {
    fn default() -> Self {
        Self { maps: Default::default(), issued: 0, doorkeeper: Doorkeeper::for_capacity(MAX_CACHED_REPLIES) }
    }
}

impl ReplyCache {
    /// Whether the answer to the query body with SHA-256 `query` (of `shape`) should be kept:
    /// whether the body was seen before. Records it as seen.
    fn admit(&mut self, query: &Sha256Digest, shape: usize) -> bool {
        self.doorkeeper.admit_digest(query, shape as u64)
    }

    /// The cached reply to an identical body of this window and catalog generation (see
    /// [`CachedReply::is_current`] for `evictions`). Starts a
    /// new cache when the window changed or the cache is full (dropping it whole keeps every
    /// step O(1) amortized: no search for what to evict).
    fn get(
        &mut self,
        body: &[u8],
        shape: usize,
        issued: u64,
        generation: u64,
        evictions: u64,
    ) -> Option<Arc<PreparedReply>> {
        self.start_window(shape, issued);
        let cached = self.maps[shape].get(body).filter(|c| c.is_current(generation, evictions))?;
        Some(cached.reply.clone())
    }

    /// Starts a new cache when the window changed, or for `shape` when it is full.
    fn start_window(&mut self, shape: usize, issued: u64) {
        if issued != self.issued || self.maps[shape].len() >= MAX_CACHED_REPLIES {
            self.maps[shape].clear();
            if issued != self.issued {
                self.maps[1 - shape].clear();
            }
            self.issued = issued;
        }
    }
}

/// The largest datagram a worker ever receives; bigger ones are truncated by the socket and
/// rejected as too large.
pub const RECEIVE_BUFFER_LEN: usize = MAX_DATAGRAM_LEN + 1;
