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
use upgram_core::sign::{KeyRing, VerifyError};

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

/// A fresh socket connected to `server`: the kernel drops datagrams from anywhere else too.
pub(crate) async fn fresh_socket(server: SocketAddr) -> std::io::Result<UdpSocket> {
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
            if socket.as_ref().is_none_or(|(to, _)| *to != transmit.dest) {
                socket = fresh_socket(transmit.dest).await.ok().map(|s| (transmit.dest, s));
            }
            // A failed send (no route, ICMP unreachable from an earlier one) loses one datagram:
            // the exchange's timers go on as if it were lost on the way.
            match &socket {
                Some((_, s)) => match s.send(&transmit.bytes).await {
                    Ok(_) => {
                        Traffic::add(&traffic.sent, transmit.bytes.len());
                        tracing::trace!(server = %transmit.dest, len = transmit.bytes.len(), "query sent");
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                        if refused(transmit.dest, &mut unreachable) {
                            gave_up = true;
                            break 'exchange;
                        }
                        exchange.skip_server(epoch.elapsed());
                    }
                    Err(e) => tracing::debug!(server = %transmit.dest, "send failed: {e}"),
                },
                None => tracing::debug!(server = %transmit.dest, "no socket for this server"),
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
        match received {
            Some(Ok((len, from))) => {
                Traffic::add(&traffic.received, len);
                let before = exchange.dropped();
                with_jar(jar, |jar| exchange.handle_datagram(epoch.elapsed(), unix_now(), from, &buffer[..len], jar));
                let since = exchange.dropped().since(before);
                if since != Dropped::default() {
                    tracing::debug!(%from, len, ?since, rejected = ?exchange.last_rejected(), "datagram dropped");
                }
                if let Ok(mut total) = dropped.lock() {
                    total.add(since);
                }
            }
            // An ICMP error from an earlier send: nothing listens at the current server.
            Some(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                let server = socket.as_ref().map_or_else(|| exchange.server(), |(to, _)| *to);
                if refused(server, &mut unreachable) {
                    gave_up = true;
                    break;
                }
                // The next server at once, rather than the rest of this one's retransmissions.
                if server == exchange.server() {
                    exchange.skip_server(epoch.elapsed());
                }
            }
            Some(Err(e)) => {
                tracing::debug!("receive failed: {e}");
                tokio::time::sleep(wake.saturating_sub(epoch.elapsed())).await;
            }
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

/// Runs `f` on the jar, or on a scratch jar if another thread panicked while holding it.
fn with_jar<T>(jar: &Mutex<CookieJar>, f: impl FnOnce(&mut CookieJar) -> T) -> T {
    match jar.lock() {
        Ok(mut jar) => f(&mut jar),
        Err(_) => f(&mut CookieJar::default()),
    }
}
