//! Fault injection for the client's hostile-network tests (SPEC.md §2.3, §2.4, §10.1).
//!
//! [`Faults`] and [`Forger`] are plain functions of a seeded RNG: what a path does to one
//! datagram, and the forged replies an on-path attacker makes for one query. The simulated
//! network of `sim.rs` uses them with a simulated clock; the [`Proxy`] uses them on 127.0.0.1,
//! between a client and one server, for the few tests that stay on real sockets. The proxy runs
//! as tasks on the caller's tokio runtime and stops when dropped, or by itself after
//! [`ProxyConfig::lifetime`]. Every loop in it is bounded by that lifetime.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};
use upgram_core::Sha256Digest;
use upgram_core::body::{
    Binding, ErrorBody, ErrorCode, ModuleAnswer, Package, Payload, Query, Response, Status, UpgradeInfo,
};
use upgram_core::cookie::{ClientCookie, ServerCookie};
use upgram_core::sign::{Nonce, ReplySigner, SignatureBlock};
use upgram_core::wire::{Frame, MessageKind};

/// Most client addresses (ephemeral ports) the proxy keeps an upstream socket for.
const MAX_CLIENTS: usize = 4096;
/// Most genuine replies kept for replay.
pub const MAX_RECORDED: usize = 256;
/// Longest a reordered datagram is held back.
const MAX_HOLD: Duration = Duration::from_millis(50);
/// Longest the injector waits for the client to catch up before it stops pacing.
const MAX_PACE_STALL: Duration = Duration::from_secs(10);
/// The attacker's own signing key.
const ATTACKER_SEED: [u8; 32] = [0x66; 32];

/// What happens to datagrams going one way. Each probability is in `[0, 1]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Faults {
    /// A datagram is lost.
    pub drop: f64,
    /// A datagram arrives twice.
    pub duplicate: f64,
    /// A datagram is held back up to 50 ms, so that later ones overtake it.
    pub reorder: f64,
    /// A datagram is delayed by `min_delay` to `max_delay`.
    pub delay: f64,
    /// Shortest delay.
    pub min_delay: Duration,
    /// Longest delay.
    pub max_delay: Duration,
    /// One to three random bits of a datagram are flipped.
    pub corrupt: f64,
    /// A datagram is cut at a random length.
    pub truncate: f64,
}

impl Faults {
    /// Every datagram goes through untouched.
    pub const CLEAN: Faults = Faults {
        drop: 0.0,
        duplicate: 0.0,
        reorder: 0.0,
        delay: 0.0,
        min_delay: Duration::ZERO,
        max_delay: Duration::from_millis(50),
        corrupt: 0.0,
        truncate: 0.0,
    };

    /// Every datagram is lost.
    pub const BLACK_HOLE: Faults = Faults { drop: 1.0, ..Faults::CLEAN };

    /// Every datagram is delayed by exactly `delay` (a slow path).
    pub fn slow(delay: Duration) -> Faults {
        Faults { delay: 1.0, min_delay: delay, max_delay: delay, ..Faults::CLEAN }
    }

    /// `drop` loss, plus some of every other fault.
    pub fn lossy(drop: f64) -> Faults {
        Faults { drop, duplicate: 0.05, reorder: 0.05, delay: 0.1, corrupt: 0.03, truncate: 0.02, ..Faults::CLEAN }
    }
}

impl DirectionStats {
    /// Adds the counts of `other`.
    pub fn add(&mut self, other: &DirectionStats) {
        self.received += other.received;
        self.forwarded += other.forwarded;
        self.dropped += other.dropped;
        self.duplicated += other.duplicated;
        self.reordered += other.reordered;
        self.delayed += other.delayed;
        self.corrupted += other.corrupted;
        self.truncated += other.truncated;
    }
}

impl Faults {
    /// What the path does to one datagram: the copies that come out of it, each with its delay
    /// (zero: at once), counted into `stats`.
    pub fn apply(
        &self,
        rng: &mut impl Rng,
        mut bytes: Vec<u8>,
        stats: &mut DirectionStats,
    ) -> Vec<(Duration, Vec<u8>)> {
        stats.received += 1;
        if rng.gen_bool(self.drop) {
            stats.dropped += 1;
            return Vec::new();
        }
        if !bytes.is_empty() && rng.gen_bool(self.corrupt) {
            for _ in 0..rng.gen_range(1..=3) {
                let at = rng.gen_range(0..bytes.len());
                bytes[at] ^= 1 << rng.gen_range(0..8);
            }
            stats.corrupted += 1;
        }
        if !bytes.is_empty() && rng.gen_bool(self.truncate) {
            bytes.truncate(rng.gen_range(0..bytes.len()));
            stats.truncated += 1;
        }
        let copies = if rng.gen_bool(self.duplicate) {
            stats.duplicated += 1;
            2
        } else {
            1
        };
        (0..copies)
            .map(|_| {
                let delay = if rng.gen_bool(self.delay) {
                    stats.delayed += 1;
                    rng.gen_range(self.min_delay..=self.max_delay.max(self.min_delay))
                } else if rng.gen_bool(self.reorder) {
                    stats.reordered += 1;
                    rng.gen_range(Duration::from_millis(1)..=MAX_HOLD)
                } else {
                    Duration::ZERO
                };
                (delay, bytes.clone())
            })
            .collect()
    }
}

/// Counts of one direction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DirectionStats {
    /// Datagrams that came in.
    pub received: u64,
    /// Datagrams sent on (duplicates counted twice).
    pub forwarded: u64,
    /// Lost on purpose.
    pub dropped: u64,
    /// Sent twice.
    pub duplicated: u64,
    /// Held back for later ones to overtake.
    pub reordered: u64,
    /// Delayed.
    pub delayed: u64,
    /// Bits flipped.
    pub corrupted: u64,
    /// Cut short.
    pub truncated: u64,
}

/// A forged reply the [`Injector`] can send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Forgery {
    /// A reply with a random request id (an off-path attacker guessing).
    RandomId,
    /// The right request id, a harmful answer signed by the attacker under the server's key id
    /// (`bad-signature`).
    ImpostorSignature,
    /// The right request id, a harmful answer signed by the attacker under its own key id
    /// (`unknown-key`).
    UnknownKey,
    /// The right request id on a genuine signed reply to another query (`wrong-query`).
    ReplayOtherQuery,
    /// The right request id on an answer signed with the server's real key for this very query,
    /// but expired, not yet valid, or with a window longer than allowed: an old answer replayed.
    Stale,
    /// The right request id on a signed reply with a nonce the query did not ask for
    /// (`nonce-mismatch`).
    NonceAdded,
    /// The right request id in random bytes, sometimes behind a valid magic and version.
    Garbage,
    /// The right request id on a datagram of a kind a client never accepts: the query itself
    /// reflected, or an unknown kind.
    WrongKind,
    /// The right request id on a cookie challenge that does not echo the query's client cookie.
    WrongCookieChallenge,
    /// The right request id on an unsigned error: advisory, counted as an error, never an end.
    AdvisoryError,
    /// The right request id on a reply sent from another address than the server's.
    WrongSource,
    /// A cookie challenge that echoes the query's client cookie, which an on-path attacker can
    /// read, with a server cookie of its own making. It passes every check a client can make
    /// (challenges are unsigned), so it is not in [`Forgery::ALL`]: it can only cost round trips.
    EchoedChallenge,
}

impl Forgery {
    /// Every forgery.
    pub const ALL: [Forgery; 11] = [
        Forgery::RandomId,
        Forgery::ImpostorSignature,
        Forgery::UnknownKey,
        Forgery::ReplayOtherQuery,
        Forgery::Stale,
        Forgery::NonceAdded,
        Forgery::Garbage,
        Forgery::WrongKind,
        Forgery::WrongCookieChallenge,
        Forgery::AdvisoryError,
        Forgery::WrongSource,
    ];

    /// Whether the client's code sees it (a wrong source is dropped by the kernel, since the
    /// client's socket is connected).
    pub fn reaches_client(self) -> bool {
        self != Forgery::WrongSource
    }

    /// Whether the client counts it in `Dropped::bad` (else in `Dropped::errors`, or nowhere).
    pub fn counted_as_bad(self) -> bool {
        !matches!(self, Forgery::AdvisoryError | Forgery::WrongSource | Forgery::EchoedChallenge)
    }
}

/// A harmful answer to the query `body`: a forced upgrade of its first modules to 99.0 by an
/// install package from nowhere, plus frequent-file hints. Valid XML, binding and all: only the
/// signature (or its window) can tell it from a real one.
pub fn forged_answer(body: &[u8], issued: u64, expires: u64) -> Vec<u8> {
    let ids: Vec<String> = match Query::decode(body) {
        Ok(query) => query.modules.iter().take(3).map(|m| m.id.to_string()).collect(),
        Err(_) => vec!["core".into()],
    };
    let modules = ids
        .iter()
        .map(|id| {
            let mut answer = ModuleAnswer::new(id.clone(), Status::Update, Some("99.0".parse().expect("version")));
            answer.forced = true;
            answer.frequent = vec!["evil.bin".into()];
            answer.upgrade = UpgradeInfo::Package(Package {
                payload: Payload {
                    url: "http://evil.invalid/pwn.exe".into(),
                    size: 666,
                    sha256: Sha256Digest::of(b"pwn"),
                },
                args: Some("/quiet".into()),
            });
            answer
        })
        .collect();
    let binding = Binding { query: Sha256Digest::of(body), issued, expires };
    Response { binding, base: None, compact: false, modules }.to_vec()
}

/// The on-path attacker's workshop: forged replies for a query it saw.
pub struct Forger {
    rng: StdRng,
    signer: ReplySigner,
    server: Option<ReplySigner>,
}

impl Forger {
    /// A forger drawing from `seed`; with the server's signing key seed it can also replay
    /// stale answers ([`Forgery::Stale`]), else those come out as [`Forgery::Garbage`].
    pub fn new(seed: u64, server_seed: Option<[u8; 32]>) -> Forger {
        Forger {
            rng: StdRng::seed_from_u64(seed),
            signer: ReplySigner::from_seed(&ATTACKER_SEED),
            server: server_seed.map(|seed| ReplySigner::from_seed(&seed)),
        }
    }

    /// One of `kinds`, uniformly.
    pub fn pick(&mut self, kinds: &[Forgery]) -> Forgery {
        kinds[self.rng.gen_range(0..kinds.len())]
    }

    /// One forged datagram of `kind` for `query`; the kind actually made (a replay needs a
    /// recorded reply, a stale answer the server's key: without them, garbage).
    /// `now` is the attacker's clock (unix seconds); `recorded` are genuine replies it saw.
    pub fn make(&mut self, kind: Forgery, query: &Frame<'_>, now: u64, recorded: &[Vec<u8>]) -> (Forgery, Vec<u8>) {
        let id = query.request_id;
        let made = match kind {
            Forgery::RandomId => {
                let other = self.rng.r#gen::<u64>() | 1;
                self.signed(MessageKind::Response, id ^ other, &forged_answer(query.body, now, now + 300), None, true)
            }
            Forgery::ImpostorSignature => {
                self.signed(MessageKind::Response, id, &forged_answer(query.body, now, now + 300), None, true)
            }
            Forgery::UnknownKey => {
                self.signed(MessageKind::Response, id, &forged_answer(query.body, now, now + 300), None, false)
            }
            Forgery::ReplayOtherQuery => self.replay_other(query, recorded),
            Forgery::Stale => self.stale(query, now),
            Forgery::NonceAdded => {
                let nonce = Nonce(self.rng.r#gen());
                let nonce = if query.nonce == Some(nonce) { Nonce([0; 16]) } else { nonce };
                self.replay_any(id, Some(nonce), now, recorded)
            }
            Forgery::Garbage => Some(self.garbage(id)),
            Forgery::WrongKind => Some(self.wrong_kind(query)),
            Forgery::WrongCookieChallenge => {
                let mut cookie = ClientCookie(self.rng.r#gen());
                if query.client_cookie == Some(cookie) {
                    cookie.0[0] ^= 1;
                }
                let echoed = if self.rng.gen_bool(0.8) { Some(cookie) } else { None };
                Frame::cookie_challenge(id, echoed, ServerCookie(self.rng.r#gen())).to_vec().ok()
            }
            Forgery::EchoedChallenge => {
                Frame::cookie_challenge(id, query.client_cookie, ServerCookie(self.rng.r#gen())).to_vec().ok()
            }
            Forgery::AdvisoryError => {
                let mut error = ErrorBody::new(ErrorCode::RateLimited);
                error.retry_after = Some(1);
                Frame::error(id, &error.to_vec()).to_vec().ok()
            }
            Forgery::WrongSource => self.replay_any(id, None, now, recorded),
        };
        match made {
            Some(datagram) => (kind, datagram),
            None => (Forgery::Garbage, self.garbage(id)),
        }
    }

    /// `body` as a reply of `kind` with request `id`, signed by the attacker under the server's
    /// key id (`impostor`) or its own.
    fn signed(&self, kind: MessageKind, id: u64, body: &[u8], nonce: Option<Nonce>, impostor: bool) -> Option<Vec<u8>> {
        let mut signature = self.signer.sign(kind, nonce.as_ref(), body);
        if impostor {
            let server = ReplySigner::from_seed(&super::SEED);
            signature = SignatureBlock { key_id: server.key_id(), ..signature };
        }
        reply_frame(kind, id, body, nonce, signature)
    }

    /// A genuine recorded reply to another query than `query`, with `query`'s request id.
    fn replay_other(&mut self, query: &Frame<'_>, recorded: &[Vec<u8>]) -> Option<Vec<u8>> {
        let digest = Sha256Digest::of(query.body);
        let others: Vec<&Vec<u8>> = recorded.iter().filter(|r| answers_other(r, &digest)).collect();
        let chosen = others.get(self.rng.gen_range(0..others.len().max(1)))?;
        restamp(chosen, query.request_id, None)
    }

    /// Any genuine recorded reply (or a forged answer if none), with request `id` and `nonce`.
    fn replay_any(&mut self, id: u64, nonce: Option<Nonce>, now: u64, recorded: &[Vec<u8>]) -> Option<Vec<u8>> {
        match recorded.get(self.rng.gen_range(0..recorded.len().max(1))) {
            Some(reply) => restamp(reply, id, nonce),
            None => self.signed(MessageKind::Response, id, &forged_answer(b"", now, now + 300), nonce, true),
        }
    }

    /// An answer to this very query signed with the server's real key, outside its window.
    fn stale(&mut self, query: &Frame<'_>, now: u64) -> Option<Vec<u8>> {
        let server = self.server.as_ref()?;
        let (issued, expires) = match self.rng.gen_range(0..3) {
            0 => (now - 1000, now - 700),
            1 => (now + 1000, now + 1200),
            _ => (now, now + 100_000),
        };
        let body = forged_answer(query.body, issued, expires);
        let signature = server.sign(MessageKind::Response, None, &body);
        reply_frame(MessageKind::Response, query.request_id, &body, None, signature)
    }

    fn garbage(&mut self, id: u64) -> Vec<u8> {
        let len = self.rng.gen_range(0..=1100);
        let mut bytes: Vec<u8> = (0..len).map(|_| self.rng.r#gen()).collect();
        if bytes.len() >= 20 {
            if self.rng.gen_bool(0.5) {
                bytes[..5].copy_from_slice(b"UPGM\x01");
                bytes[5] = self.rng.gen_range(2..=5);
            }
            bytes[8..16].copy_from_slice(&id.to_be_bytes());
        }
        bytes
    }

    fn wrong_kind(&mut self, query: &Frame<'_>) -> Vec<u8> {
        let mut bytes = query.to_vec().unwrap_or_default();
        if self.rng.gen_bool(0.5) && bytes.len() > 5 {
            bytes[5] = self.rng.gen_range(6..=255);
        }
        bytes
    }
}

/// Whether the recorded reply answers a query other than the one with `digest`.
fn answers_other(reply: &[u8], digest: &Sha256Digest) -> bool {
    let Ok(datagram) = upgram_core::Datagram::decode(reply) else { return false };
    match &datagram.message {
        upgram_core::Message::Response(r) => r.body_unverified().binding.query != *digest,
        upgram_core::Message::Fallback(f) => f.body_unverified().binding.query != *digest,
        _ => false,
    }
}

/// `reply` with request `id` and `nonce` instead of its own, signature untouched.
fn restamp(reply: &[u8], id: u64, nonce: Option<Nonce>) -> Option<Vec<u8>> {
    let frame = Frame::decode(reply).ok()?;
    Frame { request_id: id, nonce: nonce.or(frame.nonce), ..frame }.to_vec().ok()
}

fn reply_frame(
    kind: MessageKind,
    id: u64,
    body: &[u8],
    nonce: Option<Nonce>,
    signature: SignatureBlock,
) -> Option<Vec<u8>> {
    Frame::reply(kind, id, body, nonce, signature).to_vec().ok()
}

/// How many of the client's drops the injector may be ahead of: a probe the test gives it, so
/// that forgeries are paced to what the client has processed and none is lost in the kernel's
/// socket buffer.
pub type Progress = Arc<dyn Fn() -> u64 + Send + Sync>;

/// The on-path attacker of a [`Proxy`]: forged replies for every query seen.
#[derive(Clone)]
pub struct Injector {
    /// Forgeries per query seen.
    pub per_query: usize,
    /// Forgeries in all.
    pub total: usize,
    /// The forgeries to draw from (uniformly).
    pub kinds: Vec<Forgery>,
    /// The server's signing key seed, for [`Forgery::Stale`].
    pub server_seed: Option<[u8; 32]>,
    /// What the client has processed so far (datagrams it dropped); with it, forgeries are sent
    /// at most `window` ahead.
    pub progress: Option<Progress>,
    /// Forgeries in flight at most when paced.
    pub window: u64,
    /// Whether to forge from the start; see [`Proxy::set_injecting`].
    pub armed: bool,
}

impl Injector {
    /// `per_query` forgeries of every kind per query, `total` in all, unpaced, armed.
    pub fn new(per_query: usize, total: usize) -> Injector {
        Injector {
            per_query,
            total,
            kinds: Forgery::ALL.to_vec(),
            server_seed: None,
            progress: None,
            window: 32,
            armed: true,
        }
    }
}

/// How to set up a [`Proxy`].
#[derive(Clone)]
pub struct ProxyConfig {
    /// The server.
    pub upstream: SocketAddr,
    /// Seed of every random decision.
    pub seed: u64,
    /// Faults from client to server.
    pub to_server: Faults,
    /// Faults from server to client.
    pub to_client: Faults,
    /// The attacker, if any.
    pub injector: Option<Injector>,
    /// The proxy stops by itself after this long.
    pub lifetime: Duration,
}

impl ProxyConfig {
    /// A clean path to `upstream`.
    pub fn clean(upstream: SocketAddr, seed: u64) -> ProxyConfig {
        ProxyConfig {
            upstream,
            seed,
            to_server: Faults::CLEAN,
            to_client: Faults::CLEAN,
            injector: None,
            lifetime: Duration::from_secs(120),
        }
    }
}

/// What the proxy did.
#[derive(Debug, Clone, Default)]
pub struct ProxyStats {
    /// Client to server.
    pub to_server: DirectionStats,
    /// Server to client.
    pub to_client: DirectionStats,
    /// Queries seen.
    pub queries: u64,
    /// Forged datagrams sent, by kind.
    pub forged: BTreeMap<Forgery, u64>,
}

impl ProxyStats {
    /// Forged datagrams sent in all.
    pub fn forged_total(&self) -> u64 {
        self.forged.values().sum()
    }

    /// Forged datagrams the client must have counted as bad.
    pub fn forged_bad(&self) -> u64 {
        self.forged.iter().filter(|(kind, _)| kind.counted_as_bad()).map(|(_, n)| n).sum()
    }

    /// Forged unsigned errors.
    pub fn forged_errors(&self) -> u64 {
        self.forged.get(&Forgery::AdvisoryError).copied().unwrap_or(0)
    }
}

/// A running proxy; stops when dropped.
pub struct Proxy {
    addr: SocketAddr,
    stats: Arc<Mutex<ProxyStats>>,
    injecting: Arc<AtomicBool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Proxy {
    /// Starts a proxy on 127.0.0.1 for `config`, on the current tokio runtime.
    pub async fn start(config: ProxyConfig) -> std::io::Result<Proxy> {
        let front = Arc::new(UdpSocket::bind("127.0.0.1:0").await?);
        let stranger = UdpSocket::bind("127.0.0.1:0").await?;
        let addr = front.local_addr()?;
        let stats = Arc::new(Mutex::new(ProxyStats::default()));
        let recorded = Arc::new(Mutex::new(Vec::new()));
        let injecting = Arc::new(AtomicBool::new(config.injector.as_ref().is_some_and(|i| i.armed)));
        let (up_tx, up_rx) = mpsc::channel(1024);
        let (down_tx, down_rx) = mpsc::channel(1024);
        let lifetime = config.lifetime;
        let reader = read_into(front.clone(), None, up_tx);
        let down = Downstream {
            lane: Lane::new(config.to_client, config.seed ^ 0xD0D0, stats.clone(), false),
            front: front.clone(),
            recorded: recorded.clone(),
        };
        let up = Upstream {
            server: config.upstream,
            lane: Lane::new(config.to_server, config.seed ^ 0x0505, stats.clone(), true),
            injector: config.injector.map(|injector| Attacker {
                forger: Forger::new(config.seed ^ 0xBAD, injector.server_seed),
                front: front.clone(),
                stranger,
                recorded,
                injecting: injecting.clone(),
                stats: stats.clone(),
                sent: 0,
                settings: injector,
            }),
            sockets: HashMap::new(),
            readers: JoinSet::new(),
            down_tx,
            stats: stats.clone(),
        };
        let tasks = vec![
            tokio::spawn(bounded(lifetime, reader)),
            tokio::spawn(bounded(lifetime, up.run(up_rx))),
            tokio::spawn(bounded(lifetime, down.run(down_rx))),
        ];
        Ok(Proxy { addr, stats, injecting, tasks })
    }

    /// The address clients send to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// What the proxy did so far.
    pub fn stats(&self) -> ProxyStats {
        self.stats.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Turns the injector on or off.
    pub fn set_injecting(&self, on: bool) {
        self.injecting.store(on, Ordering::SeqCst);
    }
}

async fn bounded(lifetime: Duration, task: impl Future<Output = ()>) {
    let _ = tokio::time::timeout(lifetime, task).await;
}

/// Reads datagrams from `socket` into `tx` as (bytes, source); with `only_from`, drops the rest.
/// `route` is handed along (the client a reply is for).
async fn read_into(socket: Arc<UdpSocket>, only_from: Option<(SocketAddr, SocketAddr)>, tx: mpsc::Sender<Packet>) {
    let mut buffer = vec![0u8; 65_536];
    loop {
        let Ok((len, from)) = socket.recv_from(&mut buffer).await else { continue };
        let to = match only_from {
            Some((server, client)) if from == server => client,
            Some(_) => continue,
            None => from,
        };
        if tx.send(Packet { bytes: buffer[..len].to_vec(), peer: to }).await.is_err() {
            return;
        }
    }
}

/// A datagram and the client it is from or for.
#[derive(Debug, Clone)]
struct Packet {
    bytes: Vec<u8>,
    peer: SocketAddr,
}

/// Something due at a time: in a `BinaryHeap<Reverse<_>>`, the earliest first, ties in the
/// order they were queued.
#[derive(Debug)]
pub struct Timed<T, P> {
    /// When.
    pub due: T,
    /// Order of queueing.
    pub seq: u64,
    /// What.
    pub item: P,
}

impl<T: Ord, P> PartialEq for Timed<T, P> {
    fn eq(&self, other: &Self) -> bool {
        (&self.due, self.seq) == (&other.due, other.seq)
    }
}
impl<T: Ord, P> Eq for Timed<T, P> {}
impl<T: Ord, P> PartialOrd for Timed<T, P> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl<T: Ord, P> Ord for Timed<T, P> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (&self.due, self.seq).cmp(&(&other.due, other.seq))
    }
}

/// The faults of one direction: its RNG and the timer queue of delayed datagrams.
struct Lane {
    faults: Faults,
    rng: StdRng,
    timers: BinaryHeap<Reverse<Timed<Instant, Packet>>>,
    seq: u64,
    stats: Arc<Mutex<ProxyStats>>,
    to_server: bool,
}

impl Lane {
    fn new(faults: Faults, seed: u64, stats: Arc<Mutex<ProxyStats>>, to_server: bool) -> Lane {
        Lane { faults, rng: StdRng::seed_from_u64(seed), timers: BinaryHeap::new(), seq: 0, stats, to_server }
    }

    fn count(&self, update: impl FnOnce(&mut DirectionStats)) {
        if let Ok(mut stats) = self.stats.lock() {
            update(if self.to_server { &mut stats.to_server } else { &mut stats.to_client });
        }
    }

    /// Applies the faults to one datagram; returns what goes out now (the rest waits).
    fn admit(&mut self, packet: Packet) -> Vec<Packet> {
        let mut counts = DirectionStats::default();
        let copies = self.faults.apply(&mut self.rng, packet.bytes, &mut counts);
        self.count(|s| s.add(&counts));
        let mut out = Vec::new();
        for (delay, bytes) in copies {
            let copy = Packet { bytes, peer: packet.peer };
            if delay.is_zero() {
                out.push(copy);
            } else {
                self.seq += 1;
                self.timers.push(Reverse(Timed { due: Instant::now() + delay, seq: self.seq, item: copy }));
            }
        }
        out
    }

    /// When the next delayed datagram is due.
    fn next_due(&self) -> Option<Instant> {
        self.timers.peek().map(|Reverse(t)| t.due)
    }

    /// Delayed datagrams that are due at `now`.
    fn due(&mut self, now: Instant) -> Vec<Packet> {
        let mut out = Vec::new();
        while self.timers.peek().is_some_and(|Reverse(t)| t.due <= now) {
            out.extend(self.timers.pop().map(|Reverse(t)| t.item));
        }
        out
    }
}

/// Sleeps until `due`, or forever when nothing is due.
async fn until(due: Option<Instant>) {
    match due {
        Some(due) => tokio::time::sleep_until(tokio::time::Instant::from_std(due)).await,
        None => std::future::pending().await,
    }
}

/// Client to server: injector, faults, one upstream socket per client.
struct Upstream {
    server: SocketAddr,
    lane: Lane,
    injector: Option<Attacker>,
    sockets: HashMap<SocketAddr, Arc<UdpSocket>>,
    readers: JoinSet<()>,
    down_tx: mpsc::Sender<Packet>,
    stats: Arc<Mutex<ProxyStats>>,
}

impl Upstream {
    async fn run(mut self, mut rx: mpsc::Receiver<Packet>) {
        loop {
            tokio::select! {
                packet = rx.recv() => match packet {
                    Some(packet) => self.on_query_path(packet).await,
                    None => return,
                },
                () = until(self.lane.next_due()) => {
                    for packet in self.lane.due(Instant::now()) {
                        self.forward(packet).await;
                    }
                }
            }
        }
    }

    async fn on_query_path(&mut self, packet: Packet) {
        if let Ok(frame) = Frame::decode(&packet.bytes)
            && frame.kind == MessageKind::Query
        {
            if let Ok(mut stats) = self.stats.lock() {
                stats.queries += 1;
            }
            if let Some(attacker) = &mut self.injector {
                attacker.forge(&frame, packet.peer).await;
            }
        }
        for packet in self.lane.admit(packet) {
            self.forward(packet).await;
        }
    }

    async fn forward(&mut self, packet: Packet) {
        let Some(socket) = self.socket_for(packet.peer).await else { return };
        if socket.send_to(&packet.bytes, self.server).await.is_ok() {
            self.lane.count(|s| s.forwarded += 1);
        }
    }

    /// The upstream socket that stands for `client`, made (with its reader) on first use.
    async fn socket_for(&mut self, client: SocketAddr) -> Option<Arc<UdpSocket>> {
        if let Some(socket) = self.sockets.get(&client) {
            return Some(socket.clone());
        }
        if self.sockets.len() >= MAX_CLIENTS {
            return None;
        }
        let socket = Arc::new(UdpSocket::bind("127.0.0.1:0").await.ok()?);
        self.readers.spawn(read_into(socket.clone(), Some((self.server, client)), self.down_tx.clone()));
        self.sockets.insert(client, socket.clone());
        Some(socket)
    }
}

/// Server to client: records genuine replies, applies faults, sends from the proxy's address.
struct Downstream {
    lane: Lane,
    front: Arc<UdpSocket>,
    recorded: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl Downstream {
    async fn run(mut self, mut rx: mpsc::Receiver<Packet>) {
        loop {
            tokio::select! {
                packet = rx.recv() => match packet {
                    Some(packet) => self.on_reply_path(packet).await,
                    None => return,
                },
                () = until(self.lane.next_due()) => {
                    for packet in self.lane.due(Instant::now()) {
                        self.forward(packet).await;
                    }
                }
            }
        }
    }

    async fn on_reply_path(&mut self, packet: Packet) {
        if is_signed_reply(&packet.bytes)
            && let Ok(mut recorded) = self.recorded.lock()
            && recorded.len() < MAX_RECORDED
        {
            recorded.push(packet.bytes.clone());
        }
        for packet in self.lane.admit(packet) {
            self.forward(packet).await;
        }
    }

    async fn forward(&mut self, packet: Packet) {
        if self.front.send_to(&packet.bytes, packet.peer).await.is_ok() {
            self.lane.count(|s| s.forwarded += 1);
        }
    }
}

/// Whether `bytes` frame a response or a fallback (worth recording for replays).
pub fn is_signed_reply(bytes: &[u8]) -> bool {
    matches!(Frame::decode(bytes).map(|f| f.kind), Ok(MessageKind::Response | MessageKind::Fallback))
}

/// The injector at work.
struct Attacker {
    settings: Injector,
    forger: Forger,
    front: Arc<UdpSocket>,
    stranger: UdpSocket,
    recorded: Arc<Mutex<Vec<Vec<u8>>>>,
    injecting: Arc<AtomicBool>,
    stats: Arc<Mutex<ProxyStats>>,
    sent: usize,
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

impl Attacker {
    async fn forge(&mut self, query: &Frame<'_>, client: SocketAddr) {
        if !self.injecting.load(Ordering::SeqCst) {
            return;
        }
        let count = self.settings.per_query.min(self.settings.total.saturating_sub(self.sent));
        let progress = self.settings.progress.clone();
        let start = progress.as_ref().map(|p| p()).unwrap_or(0);
        let recorded = self.recorded.lock().map(|r| r.clone()).unwrap_or_default();
        let mut reaching = 0u64;
        let mut pacing = progress.is_some();
        for _ in 0..count {
            if pacing {
                pacing = self.pace(progress.as_deref(), start, reaching).await;
            }
            let kind = self.forger.pick(&self.settings.kinds);
            let (kind, datagram) = self.forger.make(kind, query, unix_now(), &recorded);
            let socket = if kind == Forgery::WrongSource { &self.stranger } else { &*self.front };
            if socket.send_to(&datagram, client).await.is_err() {
                continue;
            }
            self.sent += 1;
            reaching += u64::from(kind.reaches_client());
            if let Ok(mut stats) = self.stats.lock() {
                *stats.forged.entry(kind).or_default() += 1;
            }
        }
        if pacing {
            // Let the client take in the last window before the query goes on.
            self.pace_all(progress.as_deref(), start, reaching).await;
        }
    }

    /// Waits (bounded) until the client is at most `window` forgeries behind; false if it
    /// stalled, which ends pacing.
    async fn pace(&self, progress: Option<&(dyn Fn() -> u64 + Send + Sync)>, start: u64, sent: u64) -> bool {
        let Some(progress) = progress else { return false };
        let stalled_at = Instant::now() + MAX_PACE_STALL;
        while sent.saturating_sub(progress().saturating_sub(start)) > self.settings.window {
            if Instant::now() > stalled_at {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        true
    }

    /// Waits (bounded) until the client has processed all `sent` forgeries.
    async fn pace_all(&self, progress: Option<&(dyn Fn() -> u64 + Send + Sync)>, start: u64, sent: u64) {
        let Some(progress) = progress else { return };
        let stalled_at = Instant::now() + MAX_PACE_STALL;
        while progress().saturating_sub(start) < sent && Instant::now() < stalled_at {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}
