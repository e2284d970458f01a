//! The UDP transport of a client (SPEC.md §2.2-§2.4): a tokio driver around the sans-I/O
//! [`Exchange`] of `upgram-core`, which holds every rule (request ids, retransmission with
//! backoff and jitter, failover, cookies, verification, the deadline). The driver owns the
//! sockets and the clock: it sends what the exchange polls, waits for a datagram or the
//! exchange's next timeout, and feeds what happened back in.
//!
//! The exchanges of one check share a [`SocketPool`]: a few connected sockets per server, each
//! carrying many exchanges in flight. A reader task per socket hands every datagram to the
//! exchange whose request id it carries (the exchange still checks everything itself); a late
//! reply to an exchange that already ended or moved on is ignored, and a datagram for no
//! exchange of the check is counted as dropped.

use std::collections::{HashMap, HashSet};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use thiserror::Error;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use upgram_core::MAX_DATAGRAM_LEN;
use upgram_core::exchange::{Exchange, ExchangeConfig, ExchangeError, Outcome};
use upgram_core::sign::{KeyRing, VerifyError};
use upgram_core::wire::peek_version_and_id;

pub use upgram_core::exchange::{CookieJar, Dropped, VerifiedReply};

/// Timing and behaviour of exchanges (SPEC.md §2.3 defaults).
#[derive(Debug, Clone)]
pub struct TransportConfig {
    /// Servers, tried in turn.
    pub servers: Vec<SocketAddr>,
    /// First retransmission timeout.
    pub first_timeout: Duration,
    /// Largest retransmission timeout.
    pub max_timeout: Duration,
    /// Transmissions to one server before failing over.
    pub transmissions_per_server: u32,
    /// Deadline of one whole operation.
    pub deadline: Duration,
    /// Ask for nonce-bound signatures (SPEC.md §10.2).
    pub nonce_bound: bool,
}

impl Default for TransportConfig {
    fn default() -> Self {
        let exchange = ExchangeConfig::default();
        Self {
            servers: exchange.servers,
            first_timeout: exchange.first_timeout,
            max_timeout: exchange.max_timeout,
            transmissions_per_server: exchange.transmissions_per_server,
            deadline: Duration::from_secs(20),
            nonce_bound: exchange.nonce_bound,
        }
    }
}

impl TransportConfig {
    /// The settings of one exchange.
    pub fn exchange_config(&self) -> ExchangeConfig {
        ExchangeConfig {
            servers: self.servers.clone(),
            first_timeout: self.first_timeout,
            max_timeout: self.max_timeout,
            transmissions_per_server: self.transmissions_per_server,
            nonce_bound: self.nonce_bound,
        }
    }
}

/// Why an exchange failed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum TransportError {
    /// No server configured.
    #[error("no server is configured: add one to the configuration or pass --server")]
    NoServer,
    /// No verified reply came: before the deadline, or from any server that did not refuse the
    /// query with an ICMP "port unreachable" (which ends the exchange at once when every server
    /// did). The fields say what arrived instead.
    #[error("no verified reply from {servers}{}: {arrived}", if arrived.gave_up { String::new() } else { format!(" within {deadline:?}") })]
    Unavailable {
        /// The servers tried.
        servers: String,
        /// The deadline.
        deadline: Duration,
        /// The last unsigned error a server sent, if any.
        last_error: Option<String>,
        /// What arrived instead of a verified reply.
        arrived: Box<Arrived>,
    },
    /// The query does not fit a datagram.
    #[error("query of {len} bytes does not fit a datagram")]
    TooLarge {
        /// Its encoded length.
        len: usize,
    },
}

/// What arrived instead of a verified reply, for [`TransportError::Unavailable`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Arrived {
    /// What the exchange dropped (replies that failed verification among them).
    pub dropped: Dropped,
    /// Why the last reply that failed verification failed.
    pub rejected: Option<VerifyError>,
    /// The last unsigned error a server sent, if any.
    pub last_error: Option<String>,
    /// The servers that answered with ICMP "port unreachable" (nothing listens there).
    pub unreachable: Vec<SocketAddr>,
    /// Every server answered so: the exchange ended before its deadline.
    pub gave_up: bool,
}

impl std::fmt::Display for Arrived {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Arrived { dropped, rejected, last_error, unreachable, .. } = self;
        let mut parts = Vec::new();
        if !unreachable.is_empty() {
            let list = unreachable.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ");
            let there = if unreachable.len() == 1 { "that UDP port" } else { "those UDP ports" };
            parts.push(format!("ICMP port unreachable from {list} (nothing listens on {there}: check the address)"));
        }
        if let Some(why) = rejected {
            let hint = match why {
                VerifyError::UnknownKey { .. } => {
                    " (the server signs with a key that is not pinned: a wrong --public-key, or another server)"
                }
                VerifyError::BadSignature { .. } => " (forged, or damaged on the way)",
                VerifyError::WrongQuery { .. } | VerifyError::NonceMismatch => " (bound to another query)",
                VerifyError::Expired { .. } | VerifyError::NotYetValid { .. } => " (check this machine's clock)",
                _ => "",
            };
            let n = dropped.unverified;
            let replies = if n == 1 { "reply" } else { "replies" };
            parts.push(format!("{n} {replies} failed verification; the last: {why}{hint}"));
        }
        if let Some(error) = last_error {
            parts.push(format!("{} unsigned error(s), the last: {error}", dropped.errors));
        }
        let other = dropped.bad.saturating_sub(dropped.unverified);
        if other > 0 {
            parts.push(format!("{other} datagram(s) that were no reply to our query"));
        }
        if dropped.challenges > 0 && parts.is_empty() {
            parts.push(format!("only {} cookie challenge(s)", dropped.challenges));
        }
        if parts.is_empty() {
            return f.write_str("nothing arrived (the server is down, or a firewall drops the datagrams)");
        }
        f.write_str(&parts.join("; "))
    }
}

impl From<ExchangeError> for TransportError {
    fn from(error: ExchangeError) -> Self {
        match error {
            ExchangeError::TooLarge { len } => TransportError::TooLarge { len },
            _ => TransportError::NoServer,
        }
    }
}

/// Bytes on the wire: UDP datagrams sent and received, retransmissions and dropped datagrams
/// included.
#[derive(Debug, Default)]
pub struct Traffic {
    sent: AtomicU64,
    received: AtomicU64,
}

impl Traffic {
    /// Bytes of the datagrams sent so far.
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// Bytes of the datagrams received so far.
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    fn add(counter: &AtomicU64, len: usize) {
        counter.fetch_add(len as u64, Ordering::Relaxed);
    }
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Sockets per server that the exchanges of one check share: enough for a server's
/// `SO_REUSEPORT` workers to see several source ports, few enough that a check of hundreds of
/// parts opens a handful of sockets rather than one per part.
pub const SOCKETS_PER_SERVER: usize = 4;

/// Datagrams that may wait for one exchange, as a socket's receive buffer would hold them: a
/// flood with the right request id is dropped beyond this, not kept in memory.
const QUEUED_PER_EXCHANGE: usize = 256;

/// What a socket's reader hands to the exchange a datagram is for.
#[derive(Debug)]
enum Delivery {
    /// A datagram that carries the exchange's request id.
    Datagram(Vec<u8>),
    /// ICMP "port unreachable": nothing listens at the socket's server.
    Refused,
}

/// One socket connected to a server (the kernel drops datagrams from anywhere else), carrying
/// many exchanges at once: its reader hands each datagram to the exchange whose request id it
/// carries.
#[derive(Debug)]
struct SharedSocket {
    server: SocketAddr,
    socket: UdpSocket,
    /// The request ids of the exchanges waiting on this socket, and where their datagrams go.
    waiting: Mutex<Waiting>,
    /// An ICMP "port unreachable" came: nothing listens at `server` (for the rest of the check).
    refused: AtomicBool,
}

/// A fresh socket connected to `server` (the kernel drops datagrams from anywhere else), for
/// tokio; it must be called inside a runtime.
pub(crate) fn fresh_socket(server: SocketAddr) -> std::io::Result<UdpSocket> {
    let local: SocketAddr = match server {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = std::net::UdpSocket::bind(local)?;
    socket.connect(server)?;
    socket.set_nonblocking(true)?;
    UdpSocket::from_std(socket)
}

/// The exchanges a socket carries.
#[derive(Debug, Default)]
struct Waiting {
    open: HashMap<u64, mpsc::Sender<Delivery>>,
    /// Request ids of exchanges that ended or moved on: a late reply to one (the answer to a
    /// retransmission, say) is expected and ignored, not counted as dropped.
    closed: HashSet<u64>,
}

impl SharedSocket {
    /// A socket connected to `server`, with its reader running.
    fn open(server: SocketAddr, counters: &Counters) -> std::io::Result<(Arc<Self>, AbortHandle)> {
        let socket = fresh_socket(server)?;
        let shared = Arc::new(Self { server, socket, waiting: Mutex::default(), refused: AtomicBool::new(false) });
        let reader = tokio::spawn(read(shared.clone(), counters.clone()));
        Ok((shared, reader.abort_handle()))
    }

    /// Hands `delivery` to the exchange waiting for `request_id`. Returns false if no exchange
    /// of this socket ever used that id.
    fn deliver(&self, request_id: u64, delivery: Delivery) -> bool {
        let Ok(waiting) = self.waiting.lock() else { return false };
        match waiting.open.get(&request_id) {
            Some(to) => {
                match to.try_send(delivery) {
                    // As a full receive buffer would: lost on the way, the timers go on.
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        tracing::debug!(server = %self.server, request_id, "an exchange's queue is full: datagram lost");
                    }
                    // The exchange has just ended: its receiver is gone, which is fine.
                    Err(mpsc::error::TrySendError::Closed(_)) | Ok(()) => {}
                }
                true
            }
            None => waiting.closed.contains(&request_id),
        }
    }

    /// Nothing listens at the server: every exchange waiting here learns it.
    fn refuse(&self) {
        self.refused.store(true, Ordering::Relaxed);
        if let Ok(waiting) = self.waiting.lock() {
            for to in waiting.open.values() {
                // A full queue has datagrams to go through first; the flag stops its next send.
                let _ = to.try_send(Delivery::Refused);
            }
        }
    }
}

/// Reads `socket` until the pool that owns it aborts this task: each datagram goes to the
/// exchange whose request id it carries; one for no exchange of this socket is counted as bad.
async fn read(socket: Arc<SharedSocket>, counters: Counters) {
    let mut buffer = vec![0u8; MAX_DATAGRAM_LEN + 1];
    loop {
        match socket.socket.recv(&mut buffer).await {
            Ok(len) => {
                Traffic::add(&counters.traffic.received, len);
                let datagram = &buffer[..len];
                let known = peek_version_and_id(datagram)
                    .is_some_and(|(_, id)| socket.deliver(id, Delivery::Datagram(datagram.to_vec())));
                if !known {
                    tracing::debug!(server = %socket.server, len, "datagram for no exchange of this check dropped");
                    if let Ok(mut total) = counters.dropped.lock() {
                        total.bad += 1;
                    }
                }
            }
            // An ICMP error from an earlier send: nothing listens at the server.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                tracing::debug!(server = %socket.server, "ICMP port unreachable");
                socket.refuse();
            }
            Err(e) => {
                tracing::debug!(server = %socket.server, "receive failed: {e}");
                // Not a busy loop on an error that persists; the exchanges' timers go on.
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    }
}

/// Where a pool adds the bytes and drops of its exchanges, as they happen.
#[derive(Debug, Clone, Default)]
pub struct Counters {
    /// Bytes on the wire.
    pub traffic: Arc<Traffic>,
    /// What the exchanges dropped, and datagrams that were for none of them.
    pub dropped: Arc<Mutex<Dropped>>,
}

/// An exchange's hold on a shared socket for one request id: datagrams with that id come out
/// of `from`; dropping it tells the socket the id is done.
struct Link {
    socket: Arc<SharedSocket>,
    request_id: u64,
    from: mpsc::Receiver<Delivery>,
}

impl Link {
    fn new(socket: Arc<SharedSocket>, request_id: u64) -> Self {
        let (to, from) = mpsc::channel(QUEUED_PER_EXCHANGE);
        if let Ok(mut waiting) = socket.waiting.lock() {
            waiting.open.insert(request_id, to);
        }
        Self { socket, request_id, from }
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        if let Ok(mut waiting) = self.socket.waiting.lock() {
            waiting.open.remove(&self.request_id);
            waiting.closed.insert(self.request_id);
        }
    }
}

/// The UDP sockets of one check, shared by all its exchanges (SPEC.md §2.2): up to
/// [`SOCKETS_PER_SERVER`] per server (by default), opened as exchanges need them, each carrying many
/// exchanges in flight at once, told apart by request id. One random generator, seeded once,
/// gives each exchange its own. Dropping the pool closes its sockets.
#[derive(Debug)]
pub struct SocketPool {
    counters: Counters,
    per_server: usize,
    sockets: Mutex<HashMap<SocketAddr, Vec<Arc<SharedSocket>>>>,
    readers: Mutex<Vec<AbortHandle>>,
    /// Spreads exchanges over a server's sockets.
    next: AtomicUsize,
    rng: Mutex<StdRng>,
}

impl Drop for SocketPool {
    fn drop(&mut self) {
        if let Ok(readers) = self.readers.lock() {
            readers.iter().for_each(AbortHandle::abort);
        }
    }
}

impl SocketPool {
    /// An empty pool whose exchanges add what they send, receive and drop to `counters`.
    pub fn new(counters: Counters) -> Self {
        Self::with_sockets_per_server(counters, SOCKETS_PER_SERVER)
    }

    /// [`SocketPool::new`] with up to `per_server` sockets per server (at least one).
    pub fn with_sockets_per_server(counters: Counters, per_server: usize) -> Self {
        Self {
            counters,
            per_server: per_server.max(1),
            sockets: Mutex::default(),
            readers: Mutex::default(),
            next: AtomicUsize::new(0),
            rng: Mutex::new(StdRng::from_entropy()),
        }
    }

    /// The sockets opened so far, over all servers.
    pub fn sockets(&self) -> usize {
        self.sockets.lock().map(|s| s.values().map(Vec::len).sum()).unwrap_or(0)
    }

    /// A socket to `server` for a new exchange: the next in turn, opened if it is not yet.
    fn socket(&self, server: SocketAddr) -> std::io::Result<Arc<SharedSocket>> {
        let turn = self.next.fetch_add(1, Ordering::Relaxed) % self.per_server;
        let mut sockets = self.sockets.lock().map_err(|_| std::io::Error::other("socket pool poisoned"))?;
        let open = sockets.entry(server).or_default();
        if let Some(socket) = open.get(turn) {
            return Ok(socket.clone());
        }
        let (socket, reader) = SharedSocket::open(server, &self.counters)?;
        open.push(socket.clone());
        if let Ok(mut readers) = self.readers.lock() {
            readers.push(reader);
        }
        Ok(socket)
    }

    /// A generator for one exchange, drawn from the pool's.
    fn exchange_rng(&self) -> StdRng {
        let seed = match self.rng.lock() {
            Ok(mut rng) => rng.r#gen(),
            Err(_) => return StdRng::from_entropy(),
        };
        StdRng::from_seed(seed)
    }

    /// Sends `body` to the configured servers until a verified reply arrives or `deadline`
    /// passes. `start` is the index of the server to try first (the one that last answered).
    /// The deadline is the whole operation's, shared by every part of a split query (SPEC.md
    /// §2.3: one deadline for all servers and all parts), so a part that waited for a free slot
    /// gets only what is left of it. What the exchange drops, and the bytes it sends and
    /// receives, go to the pool's counters as it happens.
    pub async fn exchange(
        &self,
        body: &[u8],
        config: &TransportConfig,
        keys: &KeyRing,
        jar: &Mutex<CookieJar>,
        start: usize,
        deadline: Instant,
    ) -> Result<VerifiedReply, TransportError> {
        let epoch = Instant::now();
        let until = deadline.saturating_duration_since(epoch);
        let mut exchange =
            Exchange::new(body.to_vec(), config.exchange_config(), keys, start, until, self.exchange_rng())?;
        // The socket for the server asked now, registered for the current request id; replaced
        // as the exchange moves on to another server or request id.
        let mut link: Option<Link> = None;
        // The servers that answered with ICMP "port unreachable": once every one did, nothing can
        // answer and the exchange ends without waiting for its deadline.
        let mut unreachable: Vec<SocketAddr> = Vec::new();
        let refused = |server: SocketAddr, unreachable: &mut Vec<SocketAddr>| {
            if !unreachable.contains(&server) {
                tracing::debug!(%server, "ICMP port unreachable");
                unreachable.push(server);
            }
            config.servers.iter().all(|s| unreachable.contains(s))
        };
        let mut gave_up = false;
        'exchange: loop {
            exchange.handle_timeout(epoch.elapsed());
            while let Some(transmit) = with_jar(jar, |jar| exchange.poll_transmit(epoch.elapsed(), jar)) {
                let current = |l: &Link| l.socket.server == transmit.dest && l.request_id == exchange.request_id();
                if !link.as_ref().is_some_and(current) {
                    // The old registration ends first: its late replies are ignored from now on.
                    drop(link.take());
                    link = match self.socket(transmit.dest) {
                        Ok(socket) => Some(Link::new(socket, exchange.request_id())),
                        Err(e) => {
                            tracing::debug!(server = %transmit.dest, "no socket for this server: {e}");
                            None
                        }
                    };
                }
                // A failed send (no route, ICMP unreachable from an earlier one) loses one
                // datagram: the exchange's timers go on as if it were lost on the way.
                let Some(l) = &link else { continue };
                let sent = if l.socket.refused.load(Ordering::Relaxed) {
                    Err(std::io::ErrorKind::ConnectionRefused.into())
                } else {
                    l.socket.socket.send(&transmit.bytes).await
                };
                match sent {
                    Ok(_) => {
                        Traffic::add(&self.counters.traffic.sent, transmit.bytes.len());
                        tracing::trace!(server = %transmit.dest, len = transmit.bytes.len(), "query sent");
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                        l.socket.refuse();
                        if refused(transmit.dest, &mut unreachable) {
                            gave_up = true;
                            break 'exchange;
                        }
                        exchange.skip_server(epoch.elapsed());
                    }
                    Err(e) => tracing::debug!(server = %transmit.dest, "send failed: {e}"),
                }
            }
            let Some(wake) = exchange.poll_timeout() else { break };
            let wait = wake.saturating_sub(epoch.elapsed());
            let received = match &mut link {
                Some(l) => tokio::time::timeout(wait, l.from.recv()).await.ok(),
                None => {
                    tokio::time::sleep(wait).await;
                    None
                }
            };
            let server = link.as_ref().map_or_else(|| exchange.server(), |l| l.socket.server);
            match received {
                Some(Some(Delivery::Datagram(datagram))) => {
                    let before = exchange.dropped();
                    with_jar(jar, |jar| exchange.handle_datagram(epoch.elapsed(), unix_now(), server, &datagram, jar));
                    let since = exchange.dropped().since(before);
                    if since != Dropped::default() {
                        tracing::debug!(%server, len = datagram.len(), ?since, rejected = ?exchange.last_rejected(), "datagram dropped");
                    }
                    if let Ok(mut total) = self.counters.dropped.lock() {
                        total.add(since);
                    }
                }
                Some(Some(Delivery::Refused)) => {
                    if refused(server, &mut unreachable) {
                        gave_up = true;
                        break;
                    }
                    // The next server at once, rather than the rest of this one's retransmissions.
                    if server == exchange.server() {
                        exchange.skip_server(epoch.elapsed());
                    }
                }
                // The socket's reader is gone (the pool is being dropped): wait for the timer.
                Some(None) => tokio::time::sleep(wake.saturating_sub(epoch.elapsed())).await,
                None => {}
            }
        }
        let rejected = exchange.last_rejected().cloned();
        let unavailable = |last_error: Option<String>, dropped: Dropped| {
            let servers = config.servers.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ");
            let arrived = Arrived {
                dropped,
                rejected: rejected.clone(),
                last_error: last_error.clone(),
                unreachable: unreachable.clone(),
                gave_up,
            };
            TransportError::Unavailable { servers, deadline: config.deadline, last_error, arrived: Box::new(arrived) }
        };
        if gave_up {
            return Err(unavailable(None, exchange.dropped()));
        }
        match exchange.into_outcome() {
            Some(Outcome::Reply(reply)) => Ok(reply),
            Some(Outcome::TimedOut { last_error, dropped }) => Err(unavailable(last_error, dropped)),
            None => Err(TransportError::NoServer),
        }
    }
}

/// One exchange on sockets of its own ([`SocketPool::exchange`] in a pool of its own), for a
/// lone query; what it drops and the bytes it moves are added to `dropped` and `traffic` when
/// it ends. A check shares one [`SocketPool`] among its parts instead.
#[allow(clippy::too_many_arguments)]
pub async fn exchange(
    body: &[u8],
    config: &TransportConfig,
    keys: &KeyRing,
    jar: &Mutex<CookieJar>,
    start: usize,
    dropped: &Mutex<Dropped>,
    traffic: &Traffic,
    deadline: Instant,
) -> Result<VerifiedReply, TransportError> {
    let counters = Counters::default();
    let pool = SocketPool::new(counters.clone());
    let reply = pool.exchange(body, config, keys, jar, start, deadline).await;
    drop(pool);
    Traffic::add(&traffic.sent, counters.traffic.sent() as usize);
    Traffic::add(&traffic.received, counters.traffic.received() as usize);
    let mine = counters.dropped.lock().map(|d| *d).unwrap_or_default();
    if let Ok(mut total) = dropped.lock() {
        total.add(mine);
    }
    reply
}

/// Runs `f` on the jar, or on a scratch jar if another thread panicked while holding it.
fn with_jar<T>(jar: &Mutex<CookieJar>, f: impl FnOnce(&mut CookieJar) -> T) -> T {
    match jar.lock() {
        Ok(mut jar) => f(&mut jar),
        Err(_) => f(&mut CookieJar::default()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use upgram_core::body::{Binding, ModuleAnswer, Query, QueryModule, Response, Status};
    use upgram_core::sign::ReplySigner;
    use upgram_core::wire::{Frame, MessageKind};

    /// A server on 127.0.0.1 that the test drives datagram by datagram: it signs with `signer`.
    struct FakeServer {
        socket: UdpSocket,
        signer: ReplySigner,
    }

    /// A query the fake server received.
    struct Received {
        from: SocketAddr,
        request_id: u64,
        body: Vec<u8>,
    }

    impl FakeServer {
        async fn start() -> Self {
            let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
            Self { socket, signer: ReplySigner::from_seed(&[9; 32]) }
        }

        fn addr(&self) -> SocketAddr {
            self.socket.local_addr().unwrap()
        }

        fn keys(&self) -> KeyRing {
            let mut keys = KeyRing::new();
            keys.add(self.signer.verifying_key());
            keys
        }

        /// The next query, within a bound.
        async fn receive(&self) -> Received {
            let mut buffer = vec![0u8; MAX_DATAGRAM_LEN + 1];
            let (len, from) = tokio::time::timeout(Duration::from_secs(10), self.socket.recv_from(&mut buffer))
                .await
                .expect("a query arrives")
                .unwrap();
            let frame = Frame::decode(&buffer[..len]).unwrap();
            assert_eq!(frame.kind, MessageKind::Query);
            Received { from, request_id: frame.request_id, body: frame.body.to_vec() }
        }

        /// A signed answer to `query` naming its first module as `current` at `latest`.
        fn answer(&self, query: &Received, latest: &str) -> Vec<u8> {
            let asked = Query::decode(&query.body).unwrap();
            let id = asked.modules[0].id.to_string();
            let issued = unix_now();
            let binding = Binding { query: upgram_core::Sha256Digest::of(&query.body), issued, expires: issued + 300 };
            let module = ModuleAnswer::new(id, Status::Current, Some(latest.parse().unwrap()));
            let body = Response { binding, base: None, compact: false, modules: vec![module] }.to_vec();
            let signature = self.signer.sign(MessageKind::Response, None, &body);
            Frame::reply(MessageKind::Response, query.request_id, &body, None, signature).to_vec().unwrap()
        }

        async fn send(&self, datagram: &[u8], to: SocketAddr) {
            self.socket.send_to(datagram, to).await.unwrap();
        }
    }

    fn query(id: &str) -> Vec<u8> {
        Query::new(vec![QueryModule { id: id.into(), version: Some("1.0".parse().unwrap()), files: vec![] }]).to_vec()
    }

    fn config(server: SocketAddr) -> TransportConfig {
        // Long timeouts: no retransmission while the test holds a reply back.
        TransportConfig {
            servers: vec![server],
            first_timeout: Duration::from_secs(5),
            deadline: Duration::from_secs(20),
            ..TransportConfig::default()
        }
    }

    /// What an exchange through a pool of one socket per server needs, against `server`.
    struct Setup {
        keys: KeyRing,
        jar: Mutex<CookieJar>,
        config: TransportConfig,
        counters: Counters,
        pool: SocketPool,
        deadline: Instant,
    }

    impl Setup {
        fn for_server(server: &FakeServer) -> Self {
            let config = config(server.addr());
            let counters = Counters::default();
            let pool = SocketPool::with_sockets_per_server(counters.clone(), 1);
            let deadline = Instant::now() + config.deadline;
            Self { keys: server.keys(), jar: Mutex::new(CookieJar::default()), config, counters, pool, deadline }
        }
    }

    /// The module id and latest version a verified reply names.
    fn named(reply: &VerifiedReply) -> (String, String) {
        let response = Response::decode(&reply.body).unwrap();
        let module = &response.modules[0];
        (module.id.to_string(), module.latest.as_ref().unwrap().to_string())
    }

    #[tokio::test]
    async fn two_parts_in_flight_on_one_socket_each_get_their_own_reply() {
        let server = FakeServer::start().await;
        let Setup { keys, jar, config, counters, pool, deadline } = Setup::for_server(&server);
        let (first, second) = (query("alpha"), query("beta"));
        let exchanges = async {
            tokio::join!(
                pool.exchange(&first, &config, &keys, &jar, 0, deadline),
                pool.exchange(&second, &config, &keys, &jar, 0, deadline)
            )
        };
        let serve = async {
            let (a, b) = (server.receive().await, server.receive().await);
            assert_eq!(a.from, b.from, "both parts share one socket");
            assert_ne!(a.request_id, b.request_id);
            // Answered in the reverse order of arrival.
            for query in [&b, &a] {
                let latest = if Query::decode(&query.body).unwrap().modules[0].id == "alpha" { "1.0" } else { "2.0" };
                server.send(&server.answer(query, latest), query.from).await;
            }
        };
        let ((one, two), ()) = tokio::join!(exchanges, serve);
        // Each part got the answer to its own query (a swapped one fails its binding and is
        // counted as dropped).
        assert_eq!(named(&one.unwrap()), ("alpha".to_owned(), "1.0".to_owned()));
        assert_eq!(named(&two.unwrap()), ("beta".to_owned(), "2.0".to_owned()));
        assert_eq!(pool.sockets(), 1);
        assert_eq!(*counters.dropped.lock().unwrap(), Dropped::default());
        assert!(counters.traffic.sent() > 0 && counters.traffic.received() > 0);
    }

    #[tokio::test]
    async fn a_late_reply_to_an_ended_exchange_is_ignored_and_a_stray_one_is_counted() {
        let server = FakeServer::start().await;
        let Setup { keys, jar, config, counters, pool, deadline } = Setup::for_server(&server);
        // The first exchange ends with its reply.
        let first = query("alpha");
        let (one, a) = tokio::join!(pool.exchange(&first, &config, &keys, &jar, 0, deadline), async {
            let a = server.receive().await;
            server.send(&server.answer(&a, "1.0"), a.from).await;
            a
        });
        assert_eq!(named(&one.unwrap()), ("alpha".to_owned(), "1.0".to_owned()));
        // The second: before its own reply come a late copy of the first one's (a duplicate,
        // or the answer to a retransmission) and a reply for a request id nobody used.
        let second = query("beta");
        let (two, ()) = tokio::join!(pool.exchange(&second, &config, &keys, &jar, 0, deadline), async {
            let b = server.receive().await;
            assert_eq!(b.from, a.from, "the same socket");
            server.send(&server.answer(&a, "1.0"), b.from).await;
            let stray = Received { request_id: a.request_id ^ b.request_id ^ 1, from: b.from, body: b.body.clone() };
            server.send(&server.answer(&stray, "6.6"), b.from).await;
            server.send(&server.answer(&b, "2.0"), b.from).await;
        });
        assert_eq!(named(&two.unwrap()), ("beta".to_owned(), "2.0".to_owned()));
        let dropped = *counters.dropped.lock().unwrap();
        assert_eq!(dropped, Dropped { bad: 1, ..Dropped::default() }, "only the stray counts");
    }

    #[tokio::test]
    async fn every_exchange_on_a_socket_learns_that_nothing_listens() {
        // A port nothing listens on: bound, then closed.
        let closed = std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap().local_addr().unwrap();
        let (keys, jar) = (KeyRing::new(), Mutex::new(CookieJar::default()));
        let config = TransportConfig { first_timeout: Duration::from_millis(200), ..config(closed) };
        let pool = SocketPool::with_sockets_per_server(Counters::default(), 1);
        let deadline = Instant::now() + config.deadline;
        let started = Instant::now();
        let (first, second) = (query("alpha"), query("beta"));
        let (one, two) = tokio::join!(
            pool.exchange(&first, &config, &keys, &jar, 0, deadline),
            pool.exchange(&second, &config, &keys, &jar, 0, deadline)
        );
        for outcome in [one, two] {
            match outcome {
                Err(TransportError::Unavailable { arrived, .. }) => {
                    assert!(arrived.gave_up, "{arrived}");
                    assert_eq!(arrived.unreachable, vec![closed]);
                }
                other => panic!("expected unreachable, got {other:?}"),
            }
        }
        // Information, not a timing assertion: both ended long before the 20 s deadline.
        eprintln!("both exchanges ended after {:?}", started.elapsed());
    }
}
