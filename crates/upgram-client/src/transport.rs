//! The UDP transport of a client (C1, C3; SPEC.md §2.2-§2.4): one exchange per query body,
//! each on a fresh connected socket with a random request id, retransmitted with exponential
//! backoff and jitter, failing over between servers, all within one deadline. Every datagram
//! that is not a verified reply to this exchange is dropped and the exchange goes on waiting:
//! nothing unsigned ever ends it.

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rand::Rng;
use thiserror::Error;
use tokio::net::UdpSocket;
use upgram_core::body::ErrorCode;
use upgram_core::cookie::{ClientCookie, ServerCookie};
use upgram_core::limits::MIN_UNRESTRICTED_QUERY_LEN;
use upgram_core::message::Expectation;
use upgram_core::sign::{KeyRing, Nonce};
use upgram_core::wire::{Frame, MessageKind, QueryOptions};
use upgram_core::{Datagram, MAX_DATAGRAM_LEN, Message, Sha256Digest};

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
        Self {
            servers: Vec::new(),
            first_timeout: Duration::from_millis(500),
            max_timeout: Duration::from_secs(4),
            transmissions_per_server: 3,
            deadline: Duration::from_secs(20),
            nonce_bound: false,
        }
    }
}

/// Cookies per server address (SPEC.md §10.6): the client cookie we chose and the server
/// cookie it gave us.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CookieJar {
    entries: HashMap<SocketAddr, (ClientCookie, Option<ServerCookie>)>,
}

impl CookieJar {
    /// The cookies for `server`, choosing a client cookie the first time.
    pub fn cookies(&mut self, server: SocketAddr) -> (ClientCookie, Option<ServerCookie>) {
        *self.entries.entry(server).or_insert_with(|| (ClientCookie(rand::thread_rng().r#gen()), None))
    }

    /// Remembers a server cookie from `server`, for the client cookie it was made for.
    pub fn store(&mut self, server: SocketAddr, client: ClientCookie, cookie: ServerCookie) {
        self.entries.insert(server, (client, Some(cookie)));
    }

    /// Every entry, for saving.
    pub fn entries(&self) -> impl Iterator<Item = (&SocketAddr, &(ClientCookie, Option<ServerCookie>))> {
        self.entries.iter()
    }

    /// Restores an entry saved earlier.
    pub fn restore(&mut self, server: SocketAddr, client: ClientCookie, cookie: Option<ServerCookie>) {
        self.entries.insert(server, (client, cookie));
    }
}

/// A reply that passed every check of SPEC.md §2.4 and §10.4.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedReply {
    /// The server that sent it.
    pub server: SocketAddr,
    /// [`MessageKind::Response`] (the body is the answer) or [`MessageKind::Fallback`] (the
    /// body points at it).
    pub kind: MessageKind,
    /// The signed body, exactly as received.
    pub body: Vec<u8>,
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

/// Counts of what an exchange dropped, for tests and diagnostics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Dropped {
    /// Undecodable, wrong id, wrong kind or failed verification.
    pub bad: u64,
    /// Unsigned errors received (advisory).
    pub errors: u64,
    /// Cookie challenges that echoed our client cookie (each cached; at most one immediate
    /// retransmission per interval).
    pub challenges: u64,
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn jittered(timeout: Duration) -> Duration {
    timeout.mul_f64(rand::thread_rng().gen_range(0.8..=1.2))
}

/// One exchange with one server: what it needs to build and check datagrams.
struct Attempt<'a> {
    server: SocketAddr,
    body: &'a [u8],
    request_id: u64,
    nonce: Option<Nonce>,
    keys: &'a KeyRing,
}

enum Received {
    /// A verified reply, and the fresh server cookie it carried, if any.
    Verified(VerifiedReply, Option<ServerCookie>),
    Challenge(ClientCookie, ServerCookie),
    Error(String, Option<u32>),
    Dropped,
}

impl Attempt<'_> {
    /// The query datagram with the jar's cookies; `challenged` says the exchange has had a
    /// cookie challenge.
    fn datagram(&self, jar: &Mutex<CookieJar>, challenged: bool) -> Result<Vec<u8>, TransportError> {
        let (client, server_cookie) = match jar.lock() {
            Ok(mut jar) => jar.cookies(self.server),
            Err(_) => (ClientCookie::default(), None),
        };
        // Without a server cookie, pad so that any answer is within the 3x rule (SPEC.md §10.6).
        // After a challenge too: challenges are unsigned, so the cookie in the jar may be an
        // on-path attacker's, and a padded query is answered whatever the cookie is worth.
        let pad_to = if server_cookie.is_none() || challenged { MIN_UNRESTRICTED_QUERY_LEN } else { 0 };
        let options = QueryOptions { client_cookie: Some(client), server_cookie, nonce: self.nonce, pad_to };
        let frame = Frame::query(self.request_id, self.body, &options);
        frame.to_vec().map_err(|_| TransportError::TooLarge { len: frame.encoded_len() })
    }

    /// Applies the rules of SPEC.md §2.4 to one datagram received on the exchange's socket.
    fn receive(&self, datagram: &[u8], sent_cookie: ClientCookie) -> Received {
        // The request id first: a flood of guesses costs no XML parsing.
        let Ok(frame) = Frame::decode(datagram) else { return Received::Dropped };
        if frame.request_id != self.request_id {
            return Received::Dropped;
        }
        let Ok(decoded) = Datagram::from_frame(&frame) else { return Received::Dropped };
        let expect =
            Expectation { keys: self.keys, query: Sha256Digest::of(self.body), nonce: self.nonce, now: unix_now() };
        let (kind, body, fresh_cookie) = match &decoded.message {
            Message::Response(reply) => match reply.verify(&expect) {
                Ok(_) => (MessageKind::Response, reply.raw_body(), reply.server_cookie),
                Err(_) => return Received::Dropped,
            },
            Message::Fallback(reply) => match reply.verify(&expect) {
                Ok(_) => (MessageKind::Fallback, reply.raw_body(), reply.server_cookie),
                Err(_) => return Received::Dropped,
            },
            Message::CookieChallenge(challenge) if challenge.client_cookie == Some(sent_cookie) => {
                return Received::Challenge(sent_cookie, challenge.server_cookie);
            }
            Message::Error(error) => {
                let text = match error.code {
                    ErrorCode::RateLimited => "rate limited".to_owned(),
                    code => format!("server error {} ({})", code.code(), code.name()),
                };
                return Received::Error(text, error.retry_after);
            }
            _ => return Received::Dropped,
        };
        Received::Verified(VerifiedReply { server: self.server, kind, body: body.to_vec() }, fresh_cookie)
    }
}

async fn fresh_socket(server: SocketAddr) -> std::io::Result<UdpSocket> {
    let local: SocketAddr = match server {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = UdpSocket::bind(local).await?;
    // Connected: the kernel drops datagrams from any other address and port (§2.4 rule 1).
    socket.connect(server).await?;
    Ok(socket)
}

/// Sends `body` to the configured servers until a verified reply arrives or `deadline`
/// passes. `start` is the index of the server to try first (the one that last answered). The
/// deadline is the whole operation's, shared by every part of a split query (SPEC.md §2.3: one
/// deadline for all servers and all parts), so a part that waited for a free slot gets only what
/// is left of it.
pub async fn exchange(
    body: &[u8],
    config: &TransportConfig,
    keys: &KeyRing,
    jar: &Mutex<CookieJar>,
    start: usize,
    dropped: &Mutex<Dropped>,
    deadline: Instant,
) -> Result<VerifiedReply, TransportError> {
    if config.servers.is_empty() {
        return Err(TransportError::NoServer);
    }
    let mut last_error = None;
    let mut round = 0usize;
    while Instant::now() < deadline {
        let server = config.servers[(start + round) % config.servers.len()];
        round += 1;
        let attempt = Attempt {
            server,
            body,
            request_id: rand::thread_rng().r#gen(),
            nonce: config.nonce_bound.then(|| Nonce(rand::thread_rng().r#gen())),
            keys,
        };
        match with_server(&attempt, config, jar, deadline, dropped).await {
            Ok(reply) => return Ok(reply),
            Err(Some(error)) => last_error = Some(error),
            Err(None) => {}
        }
    }
    let servers = config.servers.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ");
    Err(TransportError::Unavailable { servers, deadline: config.deadline, last_error })
}

/// Up to `transmissions_per_server` transmissions to one server. `Err` carries the last
/// unsigned error it sent, if any.
async fn with_server(
    attempt: &Attempt<'_>,
    config: &TransportConfig,
    jar: &Mutex<CookieJar>,
    deadline: Instant,
    dropped: &Mutex<Dropped>,
) -> Result<VerifiedReply, Option<String>> {
    let Ok(socket) = fresh_socket(attempt.server).await else {
        tokio::time::sleep_until(tokio::time::Instant::from_std(deadline.min(Instant::now() + config.first_timeout)))
            .await;
        return Err(None);
    };
    let mut last_error = None;
    let mut timeout = config.first_timeout;
    let mut buffer = vec![0u8; MAX_DATAGRAM_LEN + 1];
    let mut ever_challenged = false;
    for _ in 0..config.transmissions_per_server {
        let datagram = attempt.datagram(jar, ever_challenged).map_err(|e| Some(e.to_string()))?;
        let sent_cookie = client_cookie_of(&datagram);
        if socket.send(&datagram).await.is_err() {
            // ICMP unreachable from an earlier send, or no route: wait out this interval.
            tracing::debug!(server = %attempt.server, "send failed");
        }
        let until = deadline.min(Instant::now() + jittered(timeout));
        let mut challenged = false;
        loop {
            let wait = until.saturating_duration_since(Instant::now());
            let Ok(received) = tokio::time::timeout(wait, socket.recv(&mut buffer)).await else { break };
            let Ok(len) = received else { continue };
            match attempt.receive(&buffer[..len], sent_cookie) {
                Received::Verified(reply, fresh_cookie) => {
                    if let (Some(cookie), Ok(mut jar)) = (fresh_cookie, jar.lock()) {
                        jar.store(attempt.server, sent_cookie, cookie);
                    }
                    return Ok(reply);
                }
                Received::Challenge(client, cookie) => {
                    note(dropped, |d| d.challenges += 1);
                    // Every challenge that echoes our cookie is cached, the latest winning
                    // (SPEC.md §10.6): challenges are unsigned, and an on-path attacker that
                    // answers each query first with a challenge of its own must not keep the
                    // server's real one out of the next transmission.
                    if let Ok(mut jar) = jar.lock() {
                        jar.store(attempt.server, client, cookie);
                    }
                    // At once, but once per interval (SPEC.md §2.3), same request id and port.
                    ever_challenged = true;
                    if !challenged {
                        challenged = true;
                        if let Ok(again) = attempt.datagram(jar, true) {
                            let _ = socket.send(&again).await;
                        }
                    }
                }
                Received::Error(text, _retry_after) => {
                    note(dropped, |d| d.errors += 1);
                    last_error = Some(text);
                }
                Received::Dropped => note(dropped, |d| d.bad += 1),
            }
        }
        if Instant::now() >= deadline {
            break;
        }
        timeout = (timeout * 2).min(config.max_timeout);
    }
    Err(last_error)
}

fn note(dropped: &Mutex<Dropped>, update: impl FnOnce(&mut Dropped)) {
    if let Ok(mut dropped) = dropped.lock() {
        update(&mut dropped);
    }
}

/// The client cookie a query datagram carries (zeros when it has none).
fn client_cookie_of(datagram: &[u8]) -> ClientCookie {
    Frame::decode(datagram).ok().and_then(|f| f.client_cookie).unwrap_or_default()
}
