//! The UDP transport of a client (SPEC.md §2.2-§2.4): a tokio driver around the sans-I/O
//! [`Exchange`] of `upgram-core`, which holds every rule (request ids, retransmission with
//! backoff and jitter, failover, cookies, verification, the deadline). The driver owns the
//! socket and the clock: it sends what the exchange polls, waits for a datagram or the
//! exchange's next timeout, and feeds what happened back in.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rand::SeedableRng;
use rand::rngs::StdRng;
use thiserror::Error;
use tokio::net::UdpSocket;
use upgram_core::MAX_DATAGRAM_LEN;
use upgram_core::exchange::{Exchange, ExchangeConfig, ExchangeError, Outcome};
use upgram_core::sign::KeyRing;

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
    /// The deadline passed without a verified reply.
    #[error("no verified reply from {servers} within {deadline:?}{}", last_error.as_ref().map(|e| format!(" (last error: {e})")).unwrap_or_default())]
    Unavailable {
        /// The servers tried.
        servers: String,
        /// The deadline.
        deadline: Duration,
        /// The last unsigned error a server sent, if any.
        last_error: Option<String>,
    },
    /// The query does not fit a datagram.
    #[error("query of {len} bytes does not fit a datagram")]
    TooLarge {
        /// Its encoded length.
        len: usize,
    },
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

/// A fresh socket connected to `server`: the kernel drops datagrams from anywhere else too.
async fn fresh_socket(server: SocketAddr) -> std::io::Result<UdpSocket> {
    let local: SocketAddr = match server {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = UdpSocket::bind(local).await?;
    socket.connect(server).await?;
    Ok(socket)
}

/// Sends `body` to the configured servers until a verified reply arrives or `deadline`
/// passes. `start` is the index of the server to try first (the one that last answered). The
/// deadline is the whole operation's, shared by every part of a split query (SPEC.md §2.3: one
/// deadline for all servers and all parts), so a part that waited for a free slot gets only what
/// is left of it. What the exchange drops is added to `dropped`, and the bytes it sends and
/// receives to `traffic`, as it happens.
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
    let epoch = Instant::now();
    let until = deadline.saturating_duration_since(epoch);
    let rng = StdRng::from_entropy();
    let mut exchange = Exchange::new(body.to_vec(), config.exchange_config(), keys, start, until, rng)?;
    // A fresh socket (and port) for each server, as the exchange moves on.
    let mut socket: Option<(SocketAddr, UdpSocket)> = None;
    let mut buffer = vec![0u8; MAX_DATAGRAM_LEN + 1];
    loop {
        exchange.handle_timeout(epoch.elapsed());
        while let Some(transmit) = with_jar(jar, |jar| exchange.poll_transmit(epoch.elapsed(), jar)) {
            if socket.as_ref().is_none_or(|(to, _)| *to != transmit.dest) {
                socket = fresh_socket(transmit.dest).await.ok().map(|s| (transmit.dest, s));
            }
            // A failed send (no route, ICMP unreachable from an earlier one) loses one datagram:
            // the exchange's timers go on as if it were lost on the way.
            match &socket {
                Some((_, s)) if s.send(&transmit.bytes).await.is_ok() => {
                    Traffic::add(&traffic.sent, transmit.bytes.len())
                }
                _ => tracing::debug!(server = %transmit.dest, "send failed"),
            }
        }
        let Some(wake) = exchange.poll_timeout() else { break };
        let wait = wake.saturating_sub(epoch.elapsed());
        let received = match &socket {
            Some((_, s)) => tokio::time::timeout(wait, s.recv_from(&mut buffer)).await.ok(),
            None => {
                tokio::time::sleep(wait).await;
                None
            }
        };
        // A receive error is an ICMP error from an earlier send: nothing to take in.
        if let Some(Ok((len, from))) = received {
            Traffic::add(&traffic.received, len);
            let before = exchange.dropped();
            with_jar(jar, |jar| exchange.handle_datagram(epoch.elapsed(), unix_now(), from, &buffer[..len], jar));
            if let Ok(mut total) = dropped.lock() {
                total.add(exchange.dropped().since(before));
            }
        }
    }
    match exchange.into_outcome() {
        Some(Outcome::Reply(reply)) => Ok(reply),
        Some(Outcome::TimedOut { last_error, .. }) => {
            let servers = config.servers.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ");
            Err(TransportError::Unavailable { servers, deadline: config.deadline, last_error })
        }
        None => Err(TransportError::NoServer),
    }
}

/// Runs `f` on the jar, or on a scratch jar if another thread panicked while holding it.
fn with_jar<T>(jar: &Mutex<CookieJar>, f: impl FnOnce(&mut CookieJar) -> T) -> T {
    match jar.lock() {
        Ok(mut jar) => f(&mut jar),
        Err(_) => f(&mut CookieJar::default()),
    }
}
