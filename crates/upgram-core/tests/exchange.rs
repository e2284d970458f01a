//! The sans-I/O exchange (SPEC.md §2.2-§2.4, §10.4, §10.6), driven by hand: what it sends and
//! when, what ends it and what never does.

use std::net::SocketAddr;
use std::time::Duration;

use proptest::prelude::*;
use rand_core::{RngCore, impls};
use upgram_core::body::{Binding, ErrorBody, ErrorCode, Response};
use upgram_core::cookie::{ClientCookie, ServerCookie};
use upgram_core::exchange::{CookieJar, Exchange, ExchangeConfig, Outcome, Transmit};
use upgram_core::sign::{KeyRing, ReplySigner};
use upgram_core::wire::{Frame, MessageKind};
use upgram_core::{MAX_DATAGRAM_LEN, Sha256Digest};

const BODY: &[u8] = b"<query><module id=\"core\" version=\"1.0\"/></query>";
const UNIX: u64 = 1_900_000_000;
const SEED: [u8; 32] = [9; 32];

/// A small deterministic generator for the tests (SplitMix64).
struct TestRng(u64);

impl RngCore for TestRng {
    fn next_u32(&mut self) -> u32 {
        self.next_u64() as u32
    }
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        impls::fill_bytes_via_next(self, dest)
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}

fn addr(n: u8) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, n], 4433))
}

fn keys() -> KeyRing {
    let mut ring = KeyRing::new();
    ring.add(ReplySigner::from_seed(&SEED).verifying_key());
    ring
}

fn config(servers: usize, nonce_bound: bool) -> ExchangeConfig {
    ExchangeConfig { servers: (1..=servers as u8).map(addr).collect(), nonce_bound, ..ExchangeConfig::default() }
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A reply of `kind` to the query in `query`, signed with `seed`'s key, for `body`.
fn reply(query: &Transmit, seed: [u8; 32], body: &[u8], issued: u64) -> Vec<u8> {
    let frame = Frame::decode(&query.bytes).expect("a query frame");
    let answer = Response {
        binding: Binding { query: Sha256Digest::of(body), issued, expires: issued + 300 },
        base: None,
        compact: false,
        modules: vec![],
    }
    .to_vec();
    let signature = ReplySigner::from_seed(&seed).sign(MessageKind::Response, frame.nonce.as_ref(), &answer);
    let reply = Frame {
        kind: MessageKind::Response,
        request_id: frame.request_id,
        body: &answer,
        client_cookie: None,
        server_cookie: None,
        nonce: frame.nonce,
        signature: Some(signature),
        padding: 0,
    };
    reply.to_vec().expect("a reply fits")
}

fn ids(transmits: &[Transmit]) -> Vec<(SocketAddr, u64)> {
    transmits.iter().map(|t| (t.dest, Frame::decode(&t.bytes).expect("query").request_id)).collect()
}

/// Runs `exchange` with nothing answering until `until`, collecting what it sends.
fn run_silent(exchange: &mut Exchange<'_, TestRng>, jar: &mut CookieJar, until: Duration) -> Vec<Transmit> {
    let mut sent = Vec::new();
    let mut now = Duration::ZERO;
    for _ in 0..100_000 {
        exchange.handle_timeout(now);
        while let Some(transmit) = exchange.poll_transmit(now, jar) {
            sent.push(transmit);
        }
        match exchange.poll_timeout() {
            Some(wake) if wake <= until => now = now.max(wake),
            _ => break,
        }
    }
    sent
}

#[test]
fn a_verified_reply_ends_the_exchange_and_nothing_is_sent_after_it() {
    let keys = keys();
    let mut jar = CookieJar::default();
    let mut exchange = Exchange::new(BODY.to_vec(), config(1, true), &keys, 0, ms(20_000), TestRng(1)).unwrap();
    let query = exchange.poll_transmit(ms(0), &mut jar).expect("the first transmission");
    assert_eq!(query.dest, addr(1));
    assert!(query.bytes.len() >= upgram_core::limits::MIN_UNRESTRICTED_QUERY_LEN, "first contact is padded");
    assert!(exchange.poll_transmit(ms(0), &mut jar).is_none(), "one transmission at a time");
    exchange.handle_datagram(ms(30), UNIX, addr(1), &reply(&query, SEED, BODY, UNIX), &mut jar);
    let Some(Outcome::Reply(reply)) = exchange.outcome() else { panic!("answered: {:?}", exchange.outcome()) };
    assert_eq!((reply.server, reply.kind), (addr(1), MessageKind::Response));
    assert_eq!(exchange.poll_timeout(), None);
    assert!(exchange.poll_transmit(ms(60_000), &mut jar).is_none(), "no retransmission after the reply");
}

#[test]
fn a_genuine_reply_from_another_address_or_for_another_id_is_dropped() {
    let keys = keys();
    let mut jar = CookieJar::default();
    let mut exchange = Exchange::new(BODY.to_vec(), config(2, false), &keys, 0, ms(20_000), TestRng(2)).unwrap();
    let query = exchange.poll_transmit(ms(0), &mut jar).unwrap();
    let genuine = reply(&query, SEED, BODY, UNIX);
    exchange.handle_datagram(ms(1), UNIX, addr(2), &genuine, &mut jar);
    let mut other_id = Frame::decode(&genuine).unwrap();
    other_id.request_id ^= 1;
    exchange.handle_datagram(ms(2), UNIX, addr(1), &other_id.to_vec().unwrap(), &mut jar);
    // Signed by another key, for another query, or stale: verification fails.
    exchange.handle_datagram(ms(3), UNIX, addr(1), &reply(&query, [7; 32], BODY, UNIX), &mut jar);
    exchange.handle_datagram(ms(4), UNIX, addr(1), &reply(&query, SEED, b"<query/>", UNIX), &mut jar);
    exchange.handle_datagram(ms(5), UNIX, addr(1), &reply(&query, SEED, BODY, UNIX - 3600), &mut jar);
    assert!(exchange.outcome().is_none());
    assert_eq!(exchange.dropped().bad, 5);
    exchange.handle_datagram(ms(6), UNIX, addr(1), &genuine, &mut jar);
    assert!(matches!(exchange.outcome(), Some(Outcome::Reply(_))));
}

#[test]
fn retransmissions_back_off_then_the_next_server_gets_a_fresh_id_and_the_deadline_ends_it() {
    let keys = keys();
    let mut jar = CookieJar::default();
    let deadline = ms(8_000);
    let mut exchange = Exchange::new(BODY.to_vec(), config(2, false), &keys, 1, deadline, TestRng(3)).unwrap();
    let sent = run_silent(&mut exchange, &mut jar, Duration::from_secs(60));
    let ids = ids(&sent);
    // Starting with the server at index 1, three transmissions each, one id per server.
    assert_eq!(ids[..3].iter().map(|(to, _)| *to).collect::<Vec<_>>(), [addr(2); 3]);
    assert!(ids[..3].iter().all(|(_, id)| *id == ids[0].1));
    assert_eq!(ids[3].0, addr(1));
    assert_ne!(ids[3].1, ids[0].1, "a fresh request id for the next server");
    let Some(Outcome::TimedOut { last_error, .. }) = exchange.outcome() else { panic!("{:?}", exchange.outcome()) };
    assert_eq!(*last_error, None);
    // A late reply to the first server's id changes nothing.
    exchange.handle_datagram(deadline, UNIX, addr(2), &reply(&sent[0], SEED, BODY, UNIX), &mut jar);
    assert!(matches!(exchange.outcome(), Some(Outcome::TimedOut { .. })));
}

#[test]
fn a_challenge_is_cached_and_answered_at_once_padded_but_once_per_interval() {
    let keys = keys();
    let mut jar = CookieJar::default();
    let mut exchange = Exchange::new(BODY.to_vec(), config(1, false), &keys, 0, ms(20_000), TestRng(4)).unwrap();
    let query = exchange.poll_transmit(ms(0), &mut jar).unwrap();
    let frame = Frame::decode(&query.bytes).unwrap();
    let challenge = |cookie: u8| {
        Frame::cookie_challenge(frame.request_id, frame.client_cookie, ServerCookie([cookie; 16])).to_vec().unwrap()
    };
    // A challenge that does not echo our client cookie is not one.
    let stranger = Frame::cookie_challenge(frame.request_id, Some(ClientCookie([0xEE; 8])), ServerCookie([1; 16]));
    exchange.handle_datagram(ms(10), UNIX, addr(1), &stranger.to_vec().unwrap(), &mut jar);
    assert!(exchange.poll_transmit(ms(10), &mut jar).is_none());
    exchange.handle_datagram(ms(20), UNIX, addr(1), &challenge(1), &mut jar);
    let again = exchange.poll_transmit(ms(20), &mut jar).expect("at once");
    let again = Frame::decode(&again.bytes).unwrap();
    assert_eq!(again.request_id, frame.request_id);
    assert_eq!(again.server_cookie, Some(ServerCookie([1; 16])));
    assert!(again.padding > 0, "padded after a challenge");
    // A second challenge in the same interval is cached, not answered.
    exchange.handle_datagram(ms(30), UNIX, addr(1), &challenge(2), &mut jar);
    assert!(exchange.poll_transmit(ms(30), &mut jar).is_none());
    assert_eq!(exchange.dropped().challenges, 2);
    assert_eq!(exchange.dropped().bad, 1);
    let (_, cached) = jar.cookies(addr(1), &mut TestRng(0));
    assert_eq!(cached, Some(ServerCookie([2; 16])), "the latest challenge wins");
    // An unsigned error is advisory.
    let error = ErrorBody::new(ErrorCode::RateLimited).to_vec();
    exchange.handle_datagram(
        ms(40),
        UNIX,
        addr(1),
        &Frame::error(frame.request_id, &error).to_vec().unwrap(),
        &mut jar,
    );
    assert!(exchange.outcome().is_none());
    assert_eq!(exchange.dropped().errors, 1);
}

#[test]
fn a_cached_cookie_goes_unpadded_and_the_nonce_is_asked_for() {
    let keys = keys();
    let mut jar = CookieJar::default();
    jar.restore(addr(1), ClientCookie([3; 8]), Some(ServerCookie([4; 16])));
    let mut exchange = Exchange::new(BODY.to_vec(), config(1, true), &keys, 0, ms(20_000), TestRng(5)).unwrap();
    let query = exchange.poll_transmit(ms(0), &mut jar).unwrap();
    let frame = Frame::decode(&query.bytes).unwrap();
    assert_eq!(frame.padding, 0);
    assert_eq!((frame.client_cookie, frame.server_cookie), (Some(ClientCookie([3; 8])), Some(ServerCookie([4; 16]))));
    assert!(frame.nonce.is_some());
    // A genuine reply without the nonce does not verify.
    let mut plain = Frame::decode(&query.bytes).unwrap();
    plain.nonce = None;
    let unbound = Transmit { dest: query.dest, bytes: plain.to_vec().unwrap() };
    exchange.handle_datagram(ms(1), UNIX, addr(1), &reply(&unbound, SEED, BODY, UNIX), &mut jar);
    assert!(exchange.outcome().is_none());
}

#[test]
fn no_server_and_too_large_queries_are_refused_up_front() {
    let keys = keys();
    let none = ExchangeConfig::default();
    assert!(Exchange::new(BODY.to_vec(), none, &keys, 0, ms(1), TestRng(6)).is_err());
    let huge = vec![b'x'; MAX_DATAGRAM_LEN];
    assert!(Exchange::new(huge, config(1, false), &keys, 0, ms(1), TestRng(6)).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Whatever arrives, from wherever: nothing that is not a verified reply ends an exchange, and
    /// it sends a bounded number of datagrams before its deadline.
    #[test]
    fn never_ends_on_a_foreign_or_unsigned_datagram_and_sends_a_bounded_number(
        seed in any::<u64>(),
        servers in 1usize..4,
        first_ms in 50u64..2_000,
        deadline_ms in 100u64..30_000,
        noise in proptest::collection::vec((0u64..30_000, 0u8..4, proptest::collection::vec(any::<u8>(), 0..200), any::<bool>()), 0..64),
    ) {
        let keys = keys();
        let mut jar = CookieJar::default();
        let config = ExchangeConfig { first_timeout: ms(first_ms), ..config(servers, seed % 2 == 0) };
        let deadline = ms(deadline_ms);
        let mut exchange = Exchange::new(BODY.to_vec(), config, &keys, seed as usize, deadline, TestRng(seed)).unwrap();
        let mut noise = noise;
        noise.sort_by_key(|(at, ..)| *at);
        let mut noise = noise.into_iter().peekable();
        let (mut now, mut sent) = (Duration::ZERO, 0u64);
        let mut last_query: Option<Transmit> = None;
        for _ in 0..100_000 {
            exchange.handle_timeout(now);
            while let Some(transmit) = exchange.poll_transmit(now, &mut jar) {
                sent += 1;
                last_query = Some(transmit);
            }
            let Some(wake) = exchange.poll_timeout() else { break };
            match noise.peek() {
                Some((at, ..)) if ms(*at) <= wake => {
                    let Some((at, from, mut bytes, stamp)) = noise.next() else { break };
                    now = now.max(ms(at));
                    // Half of the noise carries the current request id behind a valid header.
                    if stamp && bytes.len() >= 20 && let Some(query) = &last_query {
                        bytes[..5].copy_from_slice(b"UPGM\x01");
                        bytes[8..16].copy_from_slice(&Frame::decode(&query.bytes).unwrap().request_id.to_be_bytes());
                    }
                    exchange.handle_datagram(now, UNIX, addr(from), &bytes, &mut jar);
                }
                _ => now = now.max(wake),
            }
        }
        let is_timeout = matches!(exchange.outcome(), Some(Outcome::TimedOut { .. }));
        prop_assert!(is_timeout, "{:?}", exchange.outcome());
        prop_assert_eq!(now, deadline);
        // Each regular transmission opens an interval of at least 0.8 x the first timeout.
        let bound = deadline_ms / (first_ms * 8 / 10) + 1 + servers as u64;
        prop_assert!(sent <= bound, "{} datagrams sent, at most {} expected", sent, bound);
        prop_assert!(jar.entries().all(|(_, (_, cookie))| cookie.is_none()));
    }
}

#[test]
fn replies_that_fail_verification_are_counted_with_the_last_reason() {
    let keys = keys();
    let mut jar = CookieJar::default();
    let mut exchange = Exchange::new(BODY.to_vec(), config(1, false), &keys, 0, ms(20_000), TestRng(11)).unwrap();
    let query = exchange.poll_transmit(ms(0), &mut jar).unwrap();
    // Another server's key: unknown key id. Then one bound to another query.
    exchange.handle_datagram(ms(1), UNIX, addr(1), &reply(&query, [7; 32], BODY, UNIX), &mut jar);
    assert!(matches!(exchange.last_rejected(), Some(upgram_core::sign::VerifyError::UnknownKey { .. })));
    exchange.handle_datagram(ms(2), UNIX, addr(1), &reply(&query, SEED, b"<query/>", UNIX), &mut jar);
    assert!(matches!(exchange.last_rejected(), Some(upgram_core::sign::VerifyError::WrongQuery { .. })));
    // A datagram for another request id is no reply to ours: not counted as unverified.
    let genuine = reply(&query, SEED, BODY, UNIX);
    let mut other_id = Frame::decode(&genuine).unwrap();
    other_id.request_id ^= 1;
    exchange.handle_datagram(ms(3), UNIX, addr(1), &other_id.to_vec().unwrap(), &mut jar);
    assert_eq!((exchange.dropped().unverified, exchange.dropped().bad), (2, 3));
}

#[test]
fn a_skipped_server_hands_over_to_the_next_at_once() {
    let keys = keys();
    let mut jar = CookieJar::default();
    let mut exchange = Exchange::new(BODY.to_vec(), config(2, false), &keys, 0, ms(20_000), TestRng(12)).unwrap();
    let first = exchange.poll_transmit(ms(0), &mut jar).unwrap();
    assert_eq!(first.dest, addr(1));
    exchange.skip_server(ms(5));
    let next = exchange.poll_transmit(ms(5), &mut jar).expect("the next server at once");
    assert_eq!(next.dest, addr(2));
    assert_ne!(Frame::decode(&next.bytes).unwrap().request_id, Frame::decode(&first.bytes).unwrap().request_id);
    assert!(exchange.outcome().is_none());
}
