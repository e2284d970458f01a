//! The client's exchange on a simulated network (SPEC.md §2.2-§2.4, §10.4, §10.6): the sans-I/O
//! [`Exchange`] of `upgram-core` against the reference server's own datagram handler
//! ([`Worker::handle`]), joined by an in-memory network with a simulated clock. The network is
//! seeded: it loses, duplicates, reorders, delays, corrupts and truncates datagrams, a middlebox
//! may strip padding, and an on-path attacker forges replies (`common/proxy.rs` makes both the
//! faults and the forgeries). Every exchange must end with the server's own answer or a clean
//! timeout at its deadline, never with anything else.
//!
//! Nothing here sleeps or touches a socket, so thousands of exchanges take seconds; the figures
//! printed are information, not assertions.

mod common;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::proxy::{DirectionStats, Faults, Forger, Forgery, MAX_RECORDED, Timed, forged_answer, is_signed_reply};
use common::{COOKIE_SECRET, SEED, installed, large_installation};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use upgram_core::Sha256Digest;
use upgram_core::body::{Fallback, Response};
use upgram_core::cookie::{ClientCookie, CookieCheck, CookieSecret, check_server_cookie, make_server_cookie};
use upgram_core::exchange::{CookieJar, Dropped, Exchange, ExchangeConfig, Outcome, VerifiedReply};
use upgram_core::merge::split_query;
use upgram_core::sign::{KeyRing, ReplySigner};
use upgram_core::wire::{Frame, MessageKind};
use upgram_server::server::{Config, CookieSecrets, Shared, Worker};

/// The client's address on the simulated network.
const CLIENT: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 1), 40_000));
/// Where an attacker sends from when it does not spoof the server's address.
const STRANGER: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 66), 4433));
/// Unix time at the start of the simulation.
const EPOCH_UNIX: u64 = 1_900_000_000;
/// One-way latency of every datagram, before faults.
const LATENCY: Duration = Duration::from_millis(15);
/// Most steps (transmissions and deliveries) of one exchange: far above what a deadline allows.
const MAX_STEPS: usize = 1_000_000;

fn server_addr(index: usize) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(10, 0, 1, index as u8 + 1), 4433))
}

/// The on-path attacker's settings.
#[derive(Debug, Clone)]
struct Attack {
    /// Chance that a query draws forgeries.
    rate: f64,
    /// Forgeries per query that draws them.
    per_query: usize,
    /// What it forges.
    kinds: Vec<Forgery>,
    /// Send each forgery again this long after the first (after the server's reply, too).
    again_after: Option<Duration>,
}

/// What the network between the client and the servers does.
#[derive(Debug, Clone)]
struct Path {
    to_server: Faults,
    to_client: Faults,
    /// A middlebox removes the padding of queries.
    strip_padding: bool,
    attack: Option<Attack>,
}

impl Path {
    fn clean() -> Path {
        Path { to_server: Faults::CLEAN, to_client: Faults::CLEAN, strip_padding: false, attack: None }
    }
}

/// A query as the servers' side of the network saw it, before the middlebox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SeenQuery {
    to: SocketAddr,
    padding: usize,
    server_cookie: bool,
}

/// What the network did, over every exchange run on it.
#[derive(Debug, Default)]
struct Stats {
    to_server: DirectionStats,
    to_client: DirectionStats,
    forged: BTreeMap<Forgery, u64>,
    queries: Vec<SeenQuery>,
    challenges: u64,
}

#[derive(Debug)]
enum Dest {
    Client,
    Server(usize),
}

/// A datagram on its way.
#[derive(Debug)]
struct Delivery {
    to: Dest,
    from: SocketAddr,
    bytes: Vec<u8>,
}

/// A reference server on the simulated network; a dead one takes in nothing.
struct SimServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    worker: Worker,
    alive: bool,
}

/// Servers sharing one catalog folder and the test key.
struct Servers {
    servers: Vec<SimServer>,
    _dir: tempfile::TempDir,
}

fn servers(count: usize, secret: [u8; 32]) -> Servers {
    let dir = tempfile::tempdir().expect("temporary folder");
    let servers = (0..count)
        .map(|index| {
            let config = Config {
                public_url: format!("http://sim-{index}.invalid/"),
                rate_per_source: 1e9,
                burst_per_source: 1e9,
                ..Config::default()
            };
            let secrets = CookieSecrets { current: CookieSecret(secret), previous: None };
            let shared =
                Arc::new(Shared::new(common::catalog(dir.path()), ReplySigner::from_seed(&SEED), secrets, config));
            let worker = Worker::new(shared.clone());
            SimServer { addr: server_addr(index), shared, worker, alive: true }
        })
        .collect();
    Servers { servers, _dir: dir }
}

/// The network, its clock and the servers on it.
struct Net {
    path: Path,
    servers: Servers,
    rng: StdRng,
    forger: Forger,
    recorded: Vec<Vec<u8>>,
    queue: BinaryHeap<Reverse<Timed<Duration, Delivery>>>,
    seq: u64,
    now: Duration,
    stats: Stats,
    scratch: Vec<u8>,
    /// The keys clients pin.
    keys: KeyRing,
    /// Answers already read, by the verified body that carried them.
    answers: HashMap<Vec<u8>, String>,
}

/// How one exchange went.
#[derive(Debug)]
struct Run {
    outcome: Outcome,
    dropped: Dropped,
    elapsed: Duration,
    transmissions: usize,
}

impl Net {
    fn new(path: Path, servers: Servers, seed: u64) -> Net {
        Net {
            path,
            servers,
            rng: StdRng::seed_from_u64(seed),
            forger: Forger::new(seed ^ 0xBAD, Some(SEED)),
            recorded: Vec::new(),
            queue: BinaryHeap::new(),
            seq: 0,
            now: Duration::ZERO,
            stats: Stats::default(),
            scratch: Vec::new(),
            keys: keys(),
            answers: HashMap::new(),
        }
    }

    fn unix(&self) -> u64 {
        EPOCH_UNIX + self.now.as_secs()
    }

    fn addrs(&self) -> Vec<SocketAddr> {
        self.servers.servers.iter().map(|s| s.addr).collect()
    }

    fn schedule(&mut self, at: Duration, to: Dest, from: SocketAddr, bytes: Vec<u8>) {
        self.seq += 1;
        self.queue.push(Reverse(Timed { due: at, seq: self.seq, item: Delivery { to, from, bytes } }));
    }

    /// One exchange of `body` from `start`, with `jar`, until its outcome; the exchange's own
    /// randomness is drawn from `seed`.
    fn exchange(
        &mut self,
        body: &[u8],
        config: &ExchangeConfig,
        start: usize,
        deadline: Duration,
        jar: &mut CookieJar,
        seed: u64,
    ) -> Run {
        let began = self.now;
        let rng = StdRng::seed_from_u64(seed);
        let keys = self.keys.clone();
        let mut exchange = Exchange::new(body.to_vec(), config.clone(), &keys, start, began + deadline, rng)
            .expect("the query fits a datagram");
        let mut transmissions = 0;
        for _ in 0..MAX_STEPS {
            exchange.handle_timeout(self.now);
            while let Some(transmit) = exchange.poll_transmit(self.now, jar) {
                transmissions += 1;
                self.send_query(transmit.dest, transmit.bytes);
            }
            let Some(wake) = exchange.poll_timeout() else { break };
            match self.queue.peek() {
                Some(Reverse(event)) if event.due <= wake => {
                    let Some(Reverse(event)) = self.queue.pop() else { break };
                    self.now = self.now.max(event.due);
                    self.deliver(event.item, &mut exchange, jar);
                }
                _ => self.now = self.now.max(wake),
            }
        }
        // Whatever is still on the way is for a socket that is closed now.
        self.queue.clear();
        let outcome = exchange.outcome().cloned().expect("every exchange ends within its steps");
        assert!(exchange.poll_transmit(self.now + deadline, jar).is_none(), "nothing is sent after the outcome");
        Run { outcome, dropped: exchange.dropped(), elapsed: self.now - began, transmissions }
    }

    /// A query leaves the client: the attacker sees it, the middlebox may strip it, the path
    /// applies its faults.
    fn send_query(&mut self, dest: SocketAddr, mut bytes: Vec<u8>) {
        let Some(index) = self.servers.servers.iter().position(|s| s.addr == dest) else { return };
        if let Ok(frame) = Frame::decode(&bytes) {
            self.stats.queries.push(SeenQuery {
                to: dest,
                padding: frame.padding,
                server_cookie: frame.server_cookie.is_some(),
            });
            self.forge(&frame, dest);
            if self.path.strip_padding
                && frame.padding > 0
                && let Ok(stripped) = (Frame { padding: 0, ..frame }).to_vec()
            {
                bytes = stripped;
            }
        }
        let faults = self.path.to_server;
        for (delay, copy) in faults.apply(&mut self.rng, bytes, &mut self.stats.to_server) {
            self.schedule(self.now + LATENCY + delay, Dest::Server(index), CLIENT, copy);
        }
    }

    /// The attacker's forgeries for `query`, which reach the client before the server's reply.
    fn forge(&mut self, query: &Frame<'_>, server: SocketAddr) {
        let Some(attack) = self.path.attack.clone() else { return };
        if !self.rng.gen_bool(attack.rate) {
            return;
        }
        let unix = self.unix();
        for _ in 0..attack.per_query {
            let kind = self.forger.pick(&attack.kinds);
            let (kind, datagram) = self.forger.make(kind, query, unix, &self.recorded);
            *self.stats.forged.entry(kind).or_default() += 1;
            let from = if kind == Forgery::WrongSource { STRANGER } else { server };
            let at = self.now + Duration::from_micros(self.rng.gen_range(100..5_000));
            if let Some(again) = attack.again_after {
                *self.stats.forged.entry(kind).or_default() += 1;
                self.schedule(at + 2 * LATENCY + again, Dest::Client, from, datagram.clone());
            }
            self.schedule(at, Dest::Client, from, datagram);
        }
    }

    fn deliver(&mut self, event: Delivery, exchange: &mut Exchange<'_, StdRng>, jar: &mut CookieJar) {
        match event.to {
            Dest::Client => {
                exchange.handle_datagram(self.now, self.unix(), event.from, &event.bytes, jar);
            }
            Dest::Server(index) => {
                let now = std::time::UNIX_EPOCH + std::time::Duration::from_secs(self.unix());
                let server = &mut self.servers.servers[index];
                if !server.alive || !server.worker.handle(&event.bytes, CLIENT.ip(), now, &mut self.scratch) {
                    return;
                }
                let (reply, from) = (std::mem::take(&mut self.scratch), server.addr);
                if is_signed_reply(&reply) {
                    if self.recorded.len() >= MAX_RECORDED {
                        let at = self.rng.gen_range(0..self.recorded.len());
                        self.recorded.swap_remove(at);
                    }
                    self.recorded.push(reply.clone());
                } else if Frame::decode(&reply).is_ok_and(|f| f.kind == MessageKind::CookieChallenge) {
                    self.stats.challenges += 1;
                }
                let faults = self.path.to_client;
                for (delay, copy) in faults.apply(&mut self.rng, reply, &mut self.stats.to_client) {
                    self.schedule(self.now + LATENCY + delay, Dest::Client, from, copy);
                }
            }
        }
    }

    /// The module answers a verified reply stands for, as JSON: the response itself, or the
    /// document its fallback points at, from the server that signed it.
    fn answer(&mut self, reply: &VerifiedReply, body: &[u8]) -> String {
        if let Some(known) = self.answers.get(&reply.body) {
            return known.clone();
        }
        let digest = Sha256Digest::of(body);
        let document = match reply.kind {
            MessageKind::Response => reply.body.clone(),
            _ => {
                let pointer = Fallback::decode(&reply.body).expect("a signed fallback decodes");
                assert_eq!(pointer.binding.query, digest, "the fallback answers this query");
                let server = self.servers.servers.iter().find(|s| s.addr == reply.server).expect("a known server");
                match &pointer.modules {
                    // Module documents: each kept by the server under its hash, assembled under
                    // the pointer's binding.
                    Some(modules) => {
                        let documents: Vec<_> = modules
                            .documents
                            .iter()
                            .map(|d| server.shared.document(&d.sha256).expect("the module document is kept"))
                            .collect();
                        pointer.open_module_documents(&documents, self.unix()).expect("the module documents open")
                    }
                    None => server.shared.document(&pointer.sha256).expect("the document is kept").to_vec(),
                }
            }
        };
        let response = Response::decode(&document).expect("a signed answer decodes");
        assert_eq!(response.binding.query, digest, "the answer is bound to this query");
        let answer = serde_json::to_string(&response.modules).expect("answers serialize");
        self.answers.insert(reply.body.clone(), answer.clone());
        answer
    }
}

/// The key ring clients pin.
fn keys() -> KeyRing {
    let mut ring = KeyRing::new();
    ring.add_bytes(&common::public_key()).expect("a valid key");
    ring
}

fn config(servers: Vec<SocketAddr>, nonce_bound: bool) -> ExchangeConfig {
    ExchangeConfig { servers, nonce_bound, ..ExchangeConfig::default() }
}

/// Query bodies: the two parts of a large installation, and two small queries.
fn bodies(nonce_bound: bool) -> Vec<Vec<u8>> {
    let mut bodies = split_query(large_installation().query_modules(), nonce_bound).expect("split");
    for state in [installed(&[("core", "1.0")]), installed(&[("core", "1.1"), ("tool-00", "1.0"), ("ghost", "1")])] {
        bodies.extend(split_query(state.query_modules(), nonce_bound).expect("split"));
    }
    bodies
}

/// The answer to each body on a clean path, the reference every hostile run must match.
fn clean_answers(bodies: &[Vec<u8>]) -> HashMap<Vec<u8>, String> {
    let mut net = Net::new(Path::clean(), servers(1, COOKIE_SECRET), 1);
    let config = config(net.addrs(), false);
    let mut jar = CookieJar::default();
    bodies
        .iter()
        .map(|body| {
            let run = net.exchange(body, &config, 0, Duration::from_secs(20), &mut jar, 2);
            let Outcome::Reply(reply) = &run.outcome else { panic!("a clean path answers: {run:?}") };
            (body.clone(), net.answer(reply, body))
        })
        .collect()
}

/// CPU time of the calling thread, from `/proc/thread-self/schedstat` (Linux); `None` elsewhere.
fn thread_cpu_time() -> Option<Duration> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let nanos: u64 = text.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(nanos))
}

/// The hostile path of run `seed`: 0 to 40 % loss, some of every other fault, a middlebox in
/// one run of ten, an attacker in every other run.
fn hostile_path(rng: &mut StdRng) -> Path {
    let loss = rng.gen_range(0.0..0.4);
    let faults = Faults::lossy(loss);
    let attack = rng.gen_bool(0.5).then(|| {
        let mut kinds = Forgery::ALL.to_vec();
        kinds.push(Forgery::EchoedChallenge);
        Attack { rate: 0.5, per_query: rng.gen_range(1..=4), kinds, again_after: None }
    });
    Path { to_server: faults, to_client: faults, strip_padding: rng.gen_bool(0.1), attack }
}

#[test]
fn ten_thousand_exchanges_on_a_hostile_network_end_right_or_time_out_cleanly() {
    const EXCHANGES: usize = 10_000;
    /// Exchanges one simulated client makes (its cookie jar and path live that long).
    const PER_CLIENT: usize = 50;
    let bodies = [bodies(false), bodies(true)];
    let expected = clean_answers(&bodies.concat());
    let deadline = Duration::from_secs(20);
    let mut rng = StdRng::seed_from_u64(0x5EED);
    let (mut answered, mut timed_out, mut transmissions, mut simulated) = (0usize, 0usize, 0usize, Duration::ZERO);
    let mut dropped = Dropped::default();
    let mut forged = 0u64;
    let mut faults = (DirectionStats::default(), DirectionStats::default());
    let (wall, cpu) = (Instant::now(), thread_cpu_time());
    let mut net = Net::new(Path::clean(), servers(2, COOKIE_SECRET), 0x5EED);
    for client in 0..EXCHANGES / PER_CLIENT {
        net.path = hostile_path(&mut rng);
        net.stats = Stats::default();
        // One client in ten finds its first server dead.
        net.servers.servers[0].alive = !rng.gen_bool(0.1);
        let nonce_bound = rng.gen_bool(0.5);
        let config = config(net.addrs(), nonce_bound);
        let mut jar = CookieJar::default();
        let mut preferred = 0;
        for i in 0..PER_CLIENT {
            let body = &bodies[usize::from(nonce_bound)][i % bodies[0].len()];
            let run = net.exchange(body, &config, preferred, deadline, &mut jar, rng.r#gen());
            transmissions += run.transmissions;
            simulated += run.elapsed;
            dropped.add(run.dropped);
            match &run.outcome {
                Outcome::Reply(reply) => {
                    let answer = net.answer(reply, body);
                    assert_eq!(&answer, &expected[body], "client {client}, exchange {i}: a wrong answer was taken");
                    preferred = config.servers.iter().position(|s| *s == reply.server).expect("a known server");
                    answered += 1;
                }
                Outcome::TimedOut { .. } => {
                    assert_eq!(run.elapsed, deadline, "client {client}, exchange {i}: a timeout is at the deadline");
                    timed_out += 1;
                }
            }
            assert!(run.elapsed <= deadline, "client {client}, exchange {i}: past the deadline");
        }
        forged += net.stats.forged.values().sum::<u64>();
        faults.0.add(&net.stats.to_server);
        faults.1.add(&net.stats.to_client);
    }
    let (wall, cpu) = (wall.elapsed(), thread_cpu_time().zip(cpu).map(|(end, start)| end - start));
    assert_eq!(answered + timed_out, EXCHANGES);
    assert!(answered >= EXCHANGES * 9 / 10, "only {answered} of {EXCHANGES} answered: the exchange gives up too early");
    let per_cpu = cpu.map_or("unknown (no /proc/thread-self/schedstat)".to_owned(), |cpu| {
        format!("{:.0} per CPU-second ({cpu:.2?} of CPU)", EXCHANGES as f64 / cpu.as_secs_f64())
    });
    eprintln!(
        "{EXCHANGES} simulated exchanges: {answered} answered right, {timed_out} timed out at the deadline, none \
         wrong; {transmissions} transmissions, {simulated:.0?} of simulated time; the network lost {} and damaged {} \
         datagrams, duplicated, reordered or delayed {}; {forged} forged replies; the exchanges dropped {} as bad, \
         {} advisory errors, took {} challenges.\n{:.0} exchanges per second ({wall:.2?} of wall time), {per_cpu}",
        faults.0.dropped + faults.1.dropped,
        faults.0.corrupted + faults.0.truncated + faults.1.corrupted + faults.1.truncated,
        faults.0.duplicated
            + faults.0.reordered
            + faults.0.delayed
            + faults.1.duplicated
            + faults.1.reordered
            + faults.1.delayed,
        dropped.bad,
        dropped.errors,
        dropped.challenges,
        EXCHANGES as f64 / wall.as_secs_f64(),
    );
}

#[test]
fn forged_answers_decode_so_only_signature_and_window_reject_them() {
    let body = b"<query><module id=\"core\" version=\"1.0\"/></query>";
    let forged = forged_answer(body, 1000, 1300);
    let response = Response::decode(&forged).expect("the forged answer is well formed");
    assert_eq!(response.modules[0].id, "core");
    assert!(response.modules[0].forced);
}

/// Whether the jar's cookie for `server` is one the servers (with `secret`) made for the client.
fn jar_cookie_is_valid(jar: &CookieJar, server: SocketAddr, secret: [u8; 32], unix: u64) -> bool {
    let Some((_, (client, Some(cookie)))) = jar.entries().find(|(addr, _)| **addr == server) else { return false };
    matches!(
        check_server_cookie(&[&CookieSecret(secret)], client, cookie, CLIENT.ip(), unix),
        CookieCheck::Valid { .. }
    )
}

/// One exchange of the small query on `net`, which must answer right.
fn small_exchange(net: &mut Net, jar: &mut CookieJar, seed: u64) -> Run {
    let body = &bodies(false)[2];
    let expected = clean_answers(std::slice::from_ref(body));
    let config = config(net.addrs(), false);
    let run = net.exchange(body, &config, 0, Duration::from_secs(20), jar, seed);
    let Outcome::Reply(reply) = &run.outcome else { panic!("no answer: {run:?}") };
    assert_eq!(net.answer(reply, body), expected[body], "the server's answer");
    run
}

#[test]
fn cookie_challenge_when_a_middlebox_strips_the_padding() {
    let path = Path { strip_padding: true, ..Path::clean() };
    let mut net = Net::new(path, servers(1, COOKIE_SECRET), 11);
    let server = net.addrs()[0];
    let mut jar = CookieJar::default();
    let run = small_exchange(&mut net, &mut jar, 1);
    assert_eq!(run.dropped.challenges, 1, "one challenge, taken");
    assert_eq!(net.stats.challenges, 1, "the server challenged the small query");
    let queries = net.stats.queries.clone();
    assert_eq!(queries.len(), 2, "the query, then at once its retransmission with the cookie: {queries:?}");
    assert!(queries[0].padding > 0 && !queries[0].server_cookie, "first contact is padded: {queries:?}");
    assert!(queries[1].server_cookie && queries[1].padding > 0, "the retry has the cookie and padding: {queries:?}");
    assert_eq!(run.elapsed, 4 * LATENCY, "two round trips, no timeout waited");
    assert!(jar_cookie_is_valid(&jar, server, COOKIE_SECRET, net.unix()), "the jar keeps the server's cookie");

    // The next exchange goes straight through with the cached cookie, unpadded.
    let again = small_exchange(&mut net, &mut jar, 2);
    assert_eq!(again.dropped.challenges, 0);
    assert_eq!(net.stats.challenges, 1);
    let next = net.stats.queries[2];
    assert!(next.server_cookie && next.padding == 0, "a cached cookie needs no padding: {next:?}");
}

#[test]
fn challenges_forged_by_an_on_path_attacker_cost_round_trips_not_the_answer() {
    // The attacker reads each query's client cookie and answers it at once with a challenge of
    // its own; the middlebox strips padding, so the server needs a real cookie. Challenges are
    // unsigned: the client cannot tell them apart, but the real one must still get through.
    let attack = Attack { rate: 1.0, per_query: 1, kinds: vec![Forgery::EchoedChallenge], again_after: None };
    for seed in 0..20 {
        let path = Path { strip_padding: true, attack: Some(attack.clone()), ..Path::clean() };
        let mut net = Net::new(path, servers(1, COOKIE_SECRET), seed);
        let mut jar = CookieJar::default();
        let run = small_exchange(&mut net, &mut jar, seed);
        assert!(run.dropped.challenges >= 2, "forged and real challenges were both taken: {run:?}");
        // Once the attack stops, a forged cookie left in the jar costs one round trip at most.
        net.path.attack = None;
        small_exchange(&mut net, &mut jar, seed + 100);
        assert!(jar_cookie_is_valid(&jar, net.addrs()[0], COOKIE_SECRET, net.unix()), "the server's cookie");
    }
}

#[test]
fn a_stale_cookie_is_challenged_and_replaced_even_under_forged_challenges() {
    // A client whose saved cookie went stale (cookies live an hour) sends it without padding, so
    // the server challenges, while the attacker forges challenges before and after the server's.
    let attack = Attack {
        rate: 1.0,
        per_query: 1,
        kinds: vec![Forgery::EchoedChallenge],
        again_after: Some(Duration::from_millis(20)),
    };
    let mut net = Net::new(Path { attack: Some(attack), ..Path::clean() }, servers(1, COOKIE_SECRET), 19);
    let server = net.addrs()[0];
    let mine = ClientCookie([6; 8]);
    let stale = make_server_cookie(&CookieSecret(COOKIE_SECRET), &mine, CLIENT.ip(), EPOCH_UNIX - 2 * 3600);
    let mut jar = CookieJar::default();
    jar.restore(server, mine, Some(stale));
    let run = small_exchange(&mut net, &mut jar, 3);
    assert!(net.stats.challenges >= 1, "the stale cookie was challenged: {run:?}");
    let first = net.stats.queries[0];
    assert!(first.server_cookie && first.padding == 0, "the saved cookie goes unpadded: {first:?}");
}

#[test]
fn cookie_challenge_after_the_servers_rotated_their_secret() {
    let mut net = Net::new(Path::clean(), servers(1, COOKIE_SECRET), 23);
    let server = net.addrs()[0];
    // A cookie saved with the state, made under a secret the servers no longer hold: the client
    // sends it without padding, and the server must challenge.
    let mine = ClientCookie([5; 8]);
    let stale = make_server_cookie(&CookieSecret([0x17; 32]), &mine, CLIENT.ip(), EPOCH_UNIX);
    let mut jar = CookieJar::default();
    jar.restore(server, mine, Some(stale));
    let run = small_exchange(&mut net, &mut jar, 4);
    assert_eq!(run.dropped.challenges, 1);
    assert_eq!(net.stats.challenges, 1);
    assert!(net.stats.queries[0].padding == 0 && net.stats.queries[0].server_cookie, "the saved cookie, unpadded");
    assert!(jar_cookie_is_valid(&jar, server, COOKIE_SECRET, net.unix()), "the jar has the new cookie");
    let (_, (client_cookie, _)) = jar.entries().next().expect("one entry");
    assert_eq!(*client_cookie, mine, "the client cookie is kept");
}

#[test]
fn failover_to_a_second_server_when_the_first_is_dead() {
    let mut net = Net::new(Path::clean(), servers(2, COOKIE_SECRET), 29);
    net.servers.servers[0].alive = false;
    let [dead, live] = [net.addrs()[0], net.addrs()[1]];
    let mut jar = CookieJar::default();
    let run = small_exchange(&mut net, &mut jar, 5);
    let Outcome::Reply(reply) = &run.outcome else { unreachable!() };
    assert_eq!(reply.server, live);
    let to: Vec<SocketAddr> = net.stats.queries.iter().map(|q| q.to).collect();
    assert_eq!(to, [dead, dead, dead, live], "three transmissions to the first server, then the second");
    // 0.5 s, 1 s and 2 s, each within ±20 %, then one round trip.
    let waited = run.elapsed - 2 * LATENCY;
    assert!(waited >= Duration::from_millis(2800) && waited <= Duration::from_millis(4200), "{waited:?}");
}

#[test]
fn the_deadline_ends_an_exchange_that_nothing_answers_whatever_is_forged() {
    let kinds = Forgery::ALL.to_vec();
    let attack = Attack { rate: 1.0, per_query: 20, kinds, again_after: None };
    let path = Path { to_server: Faults::BLACK_HOLE, attack: Some(attack), ..Path::clean() };
    let mut net = Net::new(path, servers(2, COOKIE_SECRET), 31);
    let config = config(net.addrs(), true);
    let mut jar = CookieJar::default();
    let deadline = Duration::from_secs(5);
    let run = net.exchange(&bodies(true)[0], &config, 0, deadline, &mut jar, 6);
    let Outcome::TimedOut { dropped, .. } = run.outcome else { panic!("nothing can answer: {run:?}") };
    assert_eq!(run.elapsed, deadline, "it ends at the deadline, not before, not after");
    assert!(dropped.bad > 0 && dropped.errors > 0, "forgeries reached it and were dropped: {dropped:?}");
    assert_eq!(dropped.challenges, 0, "no forged challenge echoed our cookie");
    // 0.5 + 1 + 2 s to the first server, then 0.5 + 1 s to the second until the deadline.
    let to_second = net.stats.queries.iter().filter(|q| q.to == net.addrs()[1]).count();
    assert_eq!(net.stats.queries.len() - to_second, 3);
    assert!((1..=3).contains(&to_second), "{:?}", net.stats.queries);
    assert!(jar.entries().all(|(_, (_, cookie))| cookie.is_none()), "no cookie was taken");
}

#[test]
fn a_flood_of_forgeries_during_one_exchange_is_dropped_and_the_answer_taken() {
    const FORGED: usize = 2_000;
    let mut kinds = Forgery::ALL.to_vec();
    kinds.retain(|k| *k != Forgery::ReplayOtherQuery);
    let attack = Attack { rate: 1.0, per_query: FORGED, kinds, again_after: None };
    let mut net = Net::new(Path { attack: Some(attack), ..Path::clean() }, servers(1, COOKIE_SECRET), 37);
    let mut jar = CookieJar::default();
    let run = small_exchange(&mut net, &mut jar, 7);
    let forged_bad: u64 = net.stats.forged.iter().filter(|(k, _)| k.counted_as_bad()).map(|(_, n)| n).sum();
    let wrong_source = net.stats.forged.get(&Forgery::WrongSource).copied().unwrap_or(0);
    let errors = net.stats.forged.get(&Forgery::AdvisoryError).copied().unwrap_or(0);
    assert_eq!(run.transmissions, 1, "one transmission: every forgery came before the reply");
    assert_eq!(run.dropped.bad, forged_bad + wrong_source, "every forgery dropped, wrong sources too");
    assert_eq!(run.dropped.errors, errors, "forged errors are advisory only");
    assert_eq!(run.dropped.challenges, 0, "no forged challenge was taken");
    assert!(jar_cookie_is_valid(&jar, net.addrs()[0], COOKIE_SECRET, net.unix()), "only the server's cookie");
}
