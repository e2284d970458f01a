//! One query part's exchange as a state machine, without sockets or clocks (SPEC.md §2.2-§2.4,
//! §10.4, §10.6).
//!
//! The driver owns the socket and the clock. It asks [`Exchange::poll_transmit`] for datagrams
//! to send, waits for a datagram or until [`Exchange::poll_timeout`], feeds what arrives to
//! [`Exchange::handle_datagram`] and a passed timer to [`Exchange::handle_timeout`], and stops
//! when [`Exchange::outcome`] is set. Time is a [`Duration`] since an epoch the driver chooses;
//! signature freshness is checked against unix seconds the driver passes with each datagram.
//!
//! The rules: each server gets a fresh random request id and up to
//! [`ExchangeConfig::transmissions_per_server`] transmissions with exponential backoff and
//! jitter, then the next server takes over, starting from the one that last answered; one
//! deadline bounds the whole exchange. A datagram counts only if it comes from the server
//! queried and carries the request id (checked on the header, before any XML); a reply ends the
//! exchange only once its signature and binding verify. Cookie challenges that echo our client
//! cookie are cached and answered at once, once per interval, padded. Everything else is
//! dropped and counted: nothing unsigned ever ends an exchange, and nothing is sent after a
//! verified reply.
//!
//! A driver's loop, here with a network that delivers nothing (so the exchange ends at its
//! deadline) and a toy generator (a real driver passes a cryptographically secure one):
//!
//! ```
//! use std::time::Duration;
//! use upgram_core::exchange::{CookieJar, Exchange, ExchangeConfig, Outcome};
//! use upgram_core::sign::KeyRing;
//!
//! # struct Toy(u64);
//! # impl rand_core::RngCore for Toy {
//! #     fn next_u32(&mut self) -> u32 { self.next_u64() as u32 }
//! #     fn next_u64(&mut self) -> u64 { self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1); self.0 }
//! #     fn fill_bytes(&mut self, dest: &mut [u8]) { rand_core::impls::fill_bytes_via_next(self, dest) }
//! #     fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> { self.fill_bytes(dest); Ok(()) }
//! # }
//! let config = ExchangeConfig { servers: vec!["192.0.2.1:4433".parse().unwrap()], ..Default::default() };
//! let keys = KeyRing::new();
//! let body = b"<query><module id=\"core\" version=\"1.0\"/></query>".to_vec();
//! let deadline = Duration::from_secs(20);
//! let mut exchange = Exchange::new(body, config, &keys, 0, deadline, Toy(1)).unwrap();
//! let (mut jar, mut now, mut sent) = (CookieJar::default(), Duration::ZERO, 0);
//! while exchange.outcome().is_none() {
//!     while let Some(transmit) = exchange.poll_transmit(now, &mut jar) {
//!         sent += 1; // socket.send_to(&transmit.bytes, transmit.dest)
//!         assert_eq!(transmit.dest, "192.0.2.1:4433".parse().unwrap());
//!     }
//!     // Wait for a datagram until the timeout; feed one with `handle_datagram`.
//!     let Some(wake) = exchange.poll_timeout() else { break };
//!     now = now.max(wake);
//!     exchange.handle_timeout(now);
//! }
//! assert!(matches!(exchange.outcome(), Some(Outcome::TimedOut { .. })));
//! assert_eq!(now, deadline);
//! assert!(sent >= 3);
//! ```

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use rand_core::RngCore;

use crate::Sha256Digest;
use crate::body::{ErrorCode, Response};
use crate::cookie::{ClientCookie, ServerCookie};
use crate::limits::MIN_UNRESTRICTED_QUERY_LEN;
use crate::message::{Datagram, Expectation, Message};
use crate::sign::{KeyRing, Nonce, VerifyError};
use crate::wire::{Frame, MessageKind, QueryOptions};

/// Timing and behaviour of an exchange (SPEC.md §2.3 defaults).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExchangeConfig {
    /// Servers, tried in turn.
    pub servers: Vec<SocketAddr>,
    /// First retransmission timeout.
    pub first_timeout: Duration,
    /// Largest retransmission timeout.
    pub max_timeout: Duration,
    /// Transmissions to one server before failing over (at least one is made).
    pub transmissions_per_server: u32,
    /// Ask for nonce-bound signatures (SPEC.md §10.2).
    pub nonce_bound: bool,
}

impl Default for ExchangeConfig {
    fn default() -> Self {
        Self {
            servers: Vec::new(),
            first_timeout: Duration::from_millis(500),
            max_timeout: Duration::from_secs(4),
            transmissions_per_server: 3,
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
    /// The cookies for `server`, choosing a client cookie with `rng` the first time.
    pub fn cookies(&mut self, server: SocketAddr, rng: &mut impl RngCore) -> (ClientCookie, Option<ServerCookie>) {
        *self.entries.entry(server).or_insert_with(|| {
            let mut cookie = [0u8; ClientCookie::LEN];
            rng.fill_bytes(&mut cookie);
            (ClientCookie(cookie), None)
        })
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

/// Counts of what an exchange dropped, for tests and diagnostics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Dropped {
    /// Undecodable, from another address, wrong id, wrong kind or failed verification.
    pub bad: u64,
    /// Of `bad`, the replies to our request that failed verification (unknown key, bad
    /// signature, another query's binding, expired…): [`Exchange::last_rejected`] says why the
    /// last one failed.
    pub unverified: u64,
    /// Unsigned errors received (advisory).
    pub errors: u64,
    /// Cookie challenges that echoed our client cookie (each cached; at most one immediate
    /// retransmission per interval).
    pub challenges: u64,
}

impl Dropped {
    /// Adds the counts of `other`.
    pub fn add(&mut self, other: Dropped) {
        self.bad += other.bad;
        self.unverified += other.unverified;
        self.errors += other.errors;
        self.challenges += other.challenges;
    }

    /// The counts of `self` beyond those of `earlier` (an earlier reading of the same counter).
    pub fn since(&self, earlier: Dropped) -> Dropped {
        Dropped {
            bad: self.bad.saturating_sub(earlier.bad),
            unverified: self.unverified.saturating_sub(earlier.unverified),
            errors: self.errors.saturating_sub(earlier.errors),
            challenges: self.challenges.saturating_sub(earlier.challenges),
        }
    }
}

/// A reply that passed every check of SPEC.md §2.4 and §10.4.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedReply {
    /// The server that sent it.
    pub server: SocketAddr,
    /// [`MessageKind::Response`] (the body is the answer) or [`MessageKind::Fallback`] (the
    /// body points at it, to fetch over HTTP).
    pub kind: MessageKind,
    /// The signed body, exactly as received.
    pub body: Vec<u8>,
    /// The body of a [`MessageKind::Response`], decoded and verified: the decoding that
    /// verification needed, kept so that the answer is decoded once.
    pub answer: Option<Response<'static>>,
}

/// How an exchange ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A verified reply arrived.
    Reply(VerifiedReply),
    /// The deadline passed without one.
    TimedOut {
        /// The last unsigned error a server sent, if any (advisory).
        last_error: Option<String>,
        /// What the exchange dropped.
        dropped: Dropped,
    },
}

/// A datagram to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// Where to.
    pub dest: SocketAddr,
    /// The whole datagram.
    pub bytes: Vec<u8>,
}

/// Why an exchange cannot start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ExchangeError {
    /// No server to ask.
    #[error("no server is configured: add one to the configuration or pass --server")]
    NoServer,
    /// The query does not fit a datagram.
    #[error("query of {len} bytes does not fit a datagram")]
    TooLarge {
        /// Its encoded length, with the largest trailer a query carries.
        len: usize,
    },
}

/// Where the exchange stands with the server it is asking now.
#[derive(Debug)]
struct Attempt {
    server: SocketAddr,
    request_id: u64,
    nonce: Option<Nonce>,
    /// Regular transmissions made to this server.
    transmissions: u32,
    /// The timeout of the next interval, before jitter.
    timeout: Duration,
    /// When the current interval ends (meaningful once a transmission was made).
    interval_end: Duration,
    /// A regular transmission is due now.
    due: bool,
    /// An immediate retransmission after a challenge is due.
    resend: bool,
    /// A challenge came during the current interval.
    challenged_now: bool,
    /// A challenge came during this attempt: later transmissions are padded.
    challenged: bool,
    /// The client cookie the last transmission carried.
    sent_cookie: ClientCookie,
}

/// One query part's exchange (see the module documentation).
#[derive(Debug)]
pub struct Exchange<'k, R> {
    config: ExchangeConfig,
    keys: &'k KeyRing,
    rng: R,
    body: Vec<u8>,
    query: Sha256Digest,
    deadline: Duration,
    /// Servers tried so far, the current one included.
    rounds: usize,
    start: usize,
    attempt: Attempt,
    dropped: Dropped,
    last_error: Option<String>,
    /// Why the last reply that failed verification failed.
    last_rejected: Option<VerifyError>,
    outcome: Option<Outcome>,
}

impl<'k, R: RngCore> Exchange<'k, R> {
    /// An exchange of the query `body`, first with `config.servers[start]` (wrapped around),
    /// ending at `deadline` at the latest; replies are verified against `keys`; `rng` draws
    /// request ids, nonces, client cookies and jitter.
    pub fn new(
        body: Vec<u8>,
        config: ExchangeConfig,
        keys: &'k KeyRing,
        start: usize,
        deadline: Duration,
        mut rng: R,
    ) -> Result<Self, ExchangeError> {
        let start = start % config.servers.len().max(1);
        let Some(&server) = config.servers.get(start) else {
            return Err(ExchangeError::NoServer);
        };
        // The largest query this exchange can send: both cookies and, if asked, a nonce.
        let options = QueryOptions {
            client_cookie: Some(ClientCookie::default()),
            server_cookie: Some(ServerCookie([0; ServerCookie::LEN])),
            nonce: config.nonce_bound.then_some(Nonce([0; Nonce::LEN])),
            pad_to: 0,
        };
        let largest = Frame::query(0, &body, &options);
        if largest.to_vec().is_err() {
            return Err(ExchangeError::TooLarge { len: largest.encoded_len() });
        }
        let attempt = new_attempt(server, &config, &mut rng);
        Ok(Self {
            query: Sha256Digest::of(&body),
            config,
            keys,
            rng,
            body,
            deadline,
            rounds: 1,
            start,
            attempt,
            dropped: Dropped::default(),
            last_error: None,
            last_rejected: None,
            outcome: None,
        })
    }

    /// How the exchange ended, once it has.
    pub fn outcome(&self) -> Option<&Outcome> {
        self.outcome.as_ref()
    }

    /// The outcome, taken out of the exchange.
    pub fn into_outcome(self) -> Option<Outcome> {
        self.outcome
    }

    /// What the exchange has dropped so far.
    pub fn dropped(&self) -> Dropped {
        self.dropped
    }

    /// Why the last reply to our request that failed verification failed (counted in
    /// [`Dropped::unverified`]).
    pub fn last_rejected(&self) -> Option<&VerifyError> {
        self.last_rejected.as_ref()
    }

    /// The server the exchange is asking now.
    pub fn server(&self) -> SocketAddr {
        self.attempt.server
    }

    /// The request id of the current server's datagrams.
    pub fn request_id(&self) -> u64 {
        self.attempt.request_id
    }

    /// The next datagram to send at `now`, with the cookies `jar` holds for its server (a client
    /// cookie is chosen and kept in `jar` the first time). `None` once nothing is due.
    pub fn poll_transmit(&mut self, now: Duration, jar: &mut CookieJar) -> Option<Transmit> {
        self.handle_timeout(now);
        if self.outcome.is_some() {
            return None;
        }
        let attempt = &mut self.attempt;
        if attempt.due {
            attempt.due = false;
            attempt.resend = false;
            attempt.challenged_now = false;
            attempt.transmissions += 1;
            // Jitter of ±20 %, so clients that lost the same datagram do not retry in step.
            let jitter = 0.8 + 0.4 * (f64::from(self.rng.next_u32()) / f64::from(u32::MAX));
            let interval =
                Duration::try_from_secs_f64(attempt.timeout.as_secs_f64() * jitter).unwrap_or(attempt.timeout);
            attempt.interval_end = now.saturating_add(interval).min(self.deadline);
            attempt.timeout = attempt.timeout.saturating_mul(2).min(self.config.max_timeout);
        } else if attempt.resend {
            // At once after a challenge, same request id, inside the current interval.
            attempt.resend = false;
        } else {
            return None;
        }
        let (client, server_cookie) = jar.cookies(attempt.server, &mut self.rng);
        attempt.sent_cookie = client;
        // Without a server cookie, pad so that any answer is within the 3x rule (SPEC.md §10.6).
        // After a challenge too: challenges are unsigned, so the cookie in the jar may be an
        // on-path attacker's, and a padded query is answered whatever the cookie is worth.
        let pad_to = if server_cookie.is_none() || attempt.challenged { MIN_UNRESTRICTED_QUERY_LEN } else { 0 };
        let options = QueryOptions { client_cookie: Some(client), server_cookie, nonce: attempt.nonce, pad_to };
        // Checked in `new` with the largest trailer: this always fits.
        let bytes = Frame::query(attempt.request_id, &self.body, &options).to_vec().ok()?;
        Some(Transmit { dest: attempt.server, bytes })
    }

    /// When [`Exchange::handle_timeout`] must be called next; `None` once the exchange ended.
    /// A datagram due now is reported as `now`-or-earlier: poll it first.
    pub fn poll_timeout(&self) -> Option<Duration> {
        if self.outcome.is_some() {
            return None;
        }
        if self.attempt.due || self.attempt.resend {
            return Some(Duration::ZERO);
        }
        Some(self.attempt.interval_end.min(self.deadline))
    }

    /// Moves time to `now`: ends the interval (a retransmission or the next server becomes
    /// due) or the whole exchange at its deadline. Harmless to call early or often.
    pub fn handle_timeout(&mut self, now: Duration) {
        if self.outcome.is_some() {
            return;
        }
        if now >= self.deadline {
            self.outcome = Some(Outcome::TimedOut { last_error: self.last_error.clone(), dropped: self.dropped });
            return;
        }
        let attempt = &mut self.attempt;
        if attempt.due || now < attempt.interval_end {
            return;
        }
        if attempt.transmissions < self.config.transmissions_per_server.max(1) {
            attempt.due = true;
            return;
        }
        // Fail over: the next server, a fresh request id.
        let server = self.config.servers[(self.start + self.rounds) % self.config.servers.len()];
        self.rounds += 1;
        self.attempt = new_attempt(server, &self.config, &mut self.rng);
    }

    /// Gives up on the server asked now, at `now`: the driver learnt that nothing listens there
    /// (an ICMP "port unreachable"). The next server is due at once, as after its last
    /// transmission's timeout.
    pub fn skip_server(&mut self, now: Duration) {
        let attempt = &mut self.attempt;
        attempt.transmissions = attempt.transmissions.max(self.config.transmissions_per_server.max(1));
        attempt.due = false;
        attempt.resend = false;
        attempt.interval_end = attempt.interval_end.min(now);
        self.handle_timeout(now);
    }

    /// Takes in one datagram that arrived at `now` (driver time; `unix_secs` for the signature
    /// window) from `from`. Only a verified reply from the server asked, to this request, ends the
    /// exchange; a fresh server cookie it carries goes into `jar`, as do cookie challenges that
    /// echo our client cookie.
    pub fn handle_datagram(
        &mut self,
        now: Duration,
        unix_secs: u64,
        from: SocketAddr,
        datagram: &[u8],
        jar: &mut CookieJar,
    ) {
        self.handle_timeout(now);
        if self.outcome.is_some() {
            return;
        }
        let attempt = &mut self.attempt;
        if from != attempt.server {
            self.dropped.bad += 1;
            return;
        }
        // The request id first: a flood of guesses costs no XML parsing.
        let frame = match Frame::decode(datagram) {
            Ok(frame) if frame.request_id == attempt.request_id => frame,
            _ => {
                self.dropped.bad += 1;
                return;
            }
        };
        let Ok(decoded) = Datagram::from_frame(&frame) else {
            self.dropped.bad += 1;
            return;
        };
        let expect = Expectation { keys: self.keys, query: self.query, nonce: attempt.nonce, now: unix_secs };
        // A verified answer is kept decoded, so that it is decoded once.
        let verified = match &decoded.message {
            Message::Response(reply) => Some(reply.verify(&expect).map(|answer| Some(answer.clone().into_owned()))),
            Message::Fallback(reply) => Some(reply.verify(&expect).map(|_| None)),
            _ => None,
        };
        let answer = match verified {
            Some(Err(why)) => {
                self.dropped.bad += 1;
                self.dropped.unverified += 1;
                self.last_rejected = Some(why);
                return;
            }
            Some(Ok(answer)) => answer,
            None => None,
        };
        let (kind, body, fresh_cookie) = match &decoded.message {
            Message::Response(reply) => (MessageKind::Response, reply.raw_body(), reply.server_cookie),
            Message::Fallback(reply) => (MessageKind::Fallback, reply.raw_body(), reply.server_cookie),
            Message::CookieChallenge(challenge) if challenge.client_cookie == Some(attempt.sent_cookie) => {
                self.dropped.challenges += 1;
                // Every challenge that echoes our cookie is cached, the latest winning (SPEC.md
                // §10.6): challenges are unsigned, and an on-path attacker that answers each
                // query first with a challenge of its own must not keep the server's real one
                // out of the next transmission.
                jar.store(attempt.server, attempt.sent_cookie, challenge.server_cookie);
                attempt.challenged = true;
                if !attempt.challenged_now {
                    attempt.challenged_now = true;
                    attempt.resend = true;
                }
                return;
            }
            Message::Error(error) => {
                self.dropped.errors += 1;
                self.last_error = Some(match error.code {
                    ErrorCode::RateLimited => "rate limited".to_owned(),
                    code => format!("server error {} ({})", code.code(), code.name()),
                });
                return;
            }
            _ => {
                self.dropped.bad += 1;
                return;
            }
        };
        if let Some(cookie) = fresh_cookie {
            jar.store(attempt.server, attempt.sent_cookie, cookie);
        }
        let reply = VerifiedReply { server: attempt.server, kind, body: body.to_vec(), answer };
        self.outcome = Some(Outcome::Reply(reply));
    }
}

fn new_attempt(server: SocketAddr, config: &ExchangeConfig, rng: &mut impl RngCore) -> Attempt {
    let nonce = config.nonce_bound.then(|| {
        let mut nonce = [0u8; Nonce::LEN];
        rng.fill_bytes(&mut nonce);
        Nonce(nonce)
    });
    Attempt {
        server,
        request_id: rng.next_u64(),
        nonce,
        transmissions: 0,
        timeout: config.first_timeout,
        interval_end: Duration::ZERO,
        due: true,
        resend: false,
        challenged_now: false,
        challenged: false,
        sent_cookie: ClientCookie::default(),
    }
}
