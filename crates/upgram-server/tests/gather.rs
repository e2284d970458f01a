//! Gathering answers for one signature across several receive calls: the worker takes in
//! datagrams one receive batch after another ([`Worker::take`]), each new answer owning what it
//! needs of its datagram (the receive buffers are reused), and signs every waiting answer as
//! one batch ([`Worker::sign_waiting`]). Checked on the I/O-free worker, and over real UDP on
//! 127.0.0.1 with bursts larger than one receive call takes in.

use std::borrow::Cow;
use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use upgram_core::body::{Query, QueryModule};
use upgram_core::cookie::{ClientCookie, CookieSecret, make_server_cookie};
use upgram_core::limits::MAX_BATCH_LEN;
use upgram_core::message::Expectation;
use upgram_core::sign::{KeyRing, Nonce, ReplySigner, SignatureBlock};
use upgram_core::wire::{Frame, MessageKind, QueryOptions};
use upgram_core::{Datagram, MAX_DATAGRAM_LEN, Message, Sha256Digest};
use upgram_server::catalog::Catalog;
use upgram_server::server::{Config, CookieSecrets, Shared, Taken, Worker};

mod common;
use common::{UdpBurst, file, module, release};

const SEED: [u8; 32] = [9; 32];
const AT: u64 = 1_800_000_000;
const SECRET: CookieSecret = CookieSecret([0x22; 32]);

/// `core` with releases 1.0 … 1.9 (small answers, inline), and `big` with 40 files in each of
/// its two releases (answers that need a fallback document).
fn catalog() -> Catalog {
    let mut catalog = Catalog::default();
    let core = common::ten_releases("core");
    catalog.modules.insert(core.id.clone(), core);
    let big_releases = ["1", "2"]
        .into_iter()
        .map(|version| release(version, (0..40).map(|i| file(&format!("data/{i:02}.bin"), version)).collect()))
        .collect();
    let big = module("big", big_releases);
    catalog.modules.insert(big.id.clone(), big);
    catalog
}

fn shared() -> Arc<Shared> {
    let secrets = CookieSecrets { current: SECRET, previous: None };
    Arc::new(Shared::new(catalog(), ReplySigner::from_seed(&SEED), secrets, Config::default()))
}

fn at() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(AT)
}

fn ip() -> IpAddr {
    IpAddr::V4(Ipv4Addr::LOCALHOST)
}

/// A distinct body for each `i`; every third one installs `big` (a fallback answer).
fn query_body(i: usize) -> Vec<u8> {
    let mut modules = vec![
        QueryModule { id: Cow::Borrowed("core"), version: Some(common::v(&format!("1.{}", i % 9))), files: vec![] },
        QueryModule { id: Cow::Owned(format!("other-{i}")), version: None, files: vec![] },
    ];
    if i.is_multiple_of(3) {
        modules.push(QueryModule { id: Cow::Borrowed("big"), version: None, files: vec![] });
    }
    Query::new(modules).to_vec()
}

fn nonce_of(i: usize) -> Option<Nonce> {
    (i % 4 == 1).then_some(Nonce([i as u8 ^ 0xa5; Nonce::LEN]))
}

/// The query datagram for `body`, from a source that has proven its address (it carries the
/// server cookie the server would have given it at unix time `now`): answers that need a
/// fallback document are built only for such a source.
fn datagram(i: usize, body: &[u8], now: u64) -> Vec<u8> {
    let client = ClientCookie([7; 8]);
    let server = make_server_cookie(&SECRET, &client, ip(), now);
    let options =
        QueryOptions { nonce: nonce_of(i), client_cookie: Some(client), server_cookie: Some(server), pad_to: 0 };
    Frame::query(i as u64, body, &options).to_vec().unwrap()
}

/// Decodes and verifies a reply to `body` (response or fallback) as a client does.
fn verify(reply: &[u8], body: &[u8], nonce: Option<Nonce>, now: u64) -> SignatureBlock {
    assert!(reply.len() <= MAX_DATAGRAM_LEN, "a reply of {} bytes", reply.len());
    let mut keys = KeyRing::new();
    keys.add(ReplySigner::from_seed(&SEED).verifying_key());
    let expect = Expectation { keys: &keys, query: Sha256Digest::of(body), nonce, now };
    match &Datagram::decode(reply).expect("the reply decodes").message {
        Message::Response(response) => {
            response.verify(&expect).expect("the response verifies");
        }
        Message::Fallback(fallback) => {
            fallback.verify(&expect).expect("the fallback verifies");
        }
        other => panic!("expected a signed reply, got {other:?}"),
    }
    Frame::decode(reply).unwrap().signature.expect("signed")
}

#[test]
fn answers_taken_in_over_several_receives_share_one_signature() {
    let mut worker = Worker::new(shared());
    let bodies: Vec<Vec<u8>> = (0..48).map(query_body).collect();
    let mut replies = vec![Vec::new(); bodies.len()];
    // One receive buffer, overwritten by every datagram as a socket's buffers are: what waits
    // for the signature must not borrow it.
    let mut buffer = Vec::new();
    for (slot, body) in bodies.iter().enumerate() {
        buffer.clear();
        buffer.extend_from_slice(&datagram(slot, body, AT));
        assert_eq!(worker.take(slot, &buffer, ip(), at(), &mut replies[slot]), Taken::Waiting);
        assert!(replies[slot].is_empty(), "no reply before the signature");
    }
    assert_eq!(worker.waiting(), bodies.len());
    worker.sign_waiting(&mut replies);
    assert_eq!(worker.waiting(), 0);
    let mut signatures = HashSet::new();
    let mut kinds = HashSet::new();
    for (i, (reply, body)) in replies.iter().zip(&bodies).enumerate() {
        let block = verify(reply, body, nonce_of(i), AT);
        assert!(block.batch.is_some(), "batch-signed");
        signatures.insert(block.signature);
        kinds.insert(Frame::decode(reply).unwrap().kind);
        assert_eq!(Frame::decode(reply).unwrap().request_id, i as u64, "each reply in its own slot");
    }
    assert!(bodies.len() <= MAX_BATCH_LEN);
    assert_eq!(signatures.len(), 1, "one signature for every answer taken in");
    assert!(kinds.contains(&MessageKind::Fallback) && kinds.contains(&MessageKind::Response));
    assert_eq!(worker.metrics().batch_signed.load(Ordering::Relaxed), bodies.len() as u64);
}

#[test]
fn replies_that_need_no_signature_are_written_at_once_and_left_alone_by_the_signing() {
    let mut worker = Worker::new(shared());
    let first = query_body(4);
    let mut replies = vec![Vec::new(); 3];
    // Twice: an answer is kept from the second time its query comes.
    for _ in 0..2 {
        assert_eq!(worker.take(0, &datagram(4, &first, AT), ip(), at(), &mut replies[0]), Taken::Waiting);
        worker.sign_waiting(&mut replies);
    }
    let signed = replies[0].clone();
    // The same query again (answered from the cache at once), a new one, and garbage.
    let second = query_body(5);
    assert_eq!(worker.take(0, &datagram(4, &first, AT), ip(), at(), &mut replies[0]), Taken::Replied(true));
    assert_eq!(replies[0], signed);
    assert_eq!(worker.take(1, &datagram(5, &second, AT), ip(), at(), &mut replies[1]), Taken::Waiting);
    assert_eq!(worker.take(2, b"not a datagram", ip(), at(), &mut replies[2]), Taken::Replied(false));
    worker.sign_waiting(&mut replies);
    assert_eq!(replies[0], signed, "the cached reply is untouched");
    verify(&replies[1], &second, nonce_of(5), AT);
    assert!(replies[2].is_empty());
    // Signing with nothing waiting does nothing.
    worker.sign_waiting(&mut replies);
    verify(&replies[1], &second, nonce_of(5), AT);
}

#[test]
fn a_burst_larger_than_one_receive_is_answered_in_full_over_udp() {
    let shared = shared();
    let mut udp = UdpBurst::bind();
    // The burst waits in the socket's buffer before the worker starts: more datagrams than one
    // receive call takes in, so the worker receives several times before it signs.
    let bodies: Vec<Vec<u8>> = (0..150).map(|i| query_body(1000 + i)).collect();
    let now = upgram_server::udp::unix_now();
    for (i, body) in bodies.iter().enumerate() {
        udp.client.send_to(&datagram(i, body, now), udp.server).unwrap();
    }
    udp.serve(shared.clone());
    let mut answered = HashSet::new();
    let mut signatures = HashSet::new();
    for _ in 0..bodies.len() {
        let reply = udp.receive();
        let i = Frame::decode(&reply).unwrap().request_id as usize;
        let block = verify(&reply, &bodies[i], nonce_of(i), now);
        if block.batch.is_some() {
            signatures.insert(block.signature);
        }
        assert!(answered.insert(i), "one reply per query");
    }
    assert_eq!(answered.len(), bodies.len());
    let metrics = shared.metrics();
    assert_eq!(metrics.signatures, bodies.len() as u64);
    assert!(metrics.batch_signed >= 2, "{} of {} replies batch-signed", metrics.batch_signed, bodies.len());
    eprintln!("{} replies under {} batch signatures", bodies.len(), signatures.len());
}

/// A client socket on 127.0.0.1 with room for a whole burst of replies.
fn client_socket() -> std::net::UdpSocket {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None).unwrap();
    socket.set_recv_buffer_size(upgram_server::udp::SOCKET_BUFFER_BYTES).unwrap();
    socket.bind(&"127.0.0.1:0".parse::<std::net::SocketAddr>().unwrap().into()).unwrap();
    let socket: std::net::UdpSocket = socket.into();
    socket.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    socket
}

#[test]
fn the_replies_of_one_burst_reach_each_its_own_sender_past_datagrams_that_get_none() {
    let shared = shared();
    let mut udp = UdpBurst::bind();
    let other = client_socket();
    // A third sender is gone before its replies are sent: they go nowhere, the rest still go.
    let gone = client_socket();
    let senders = [&udp.client, &other, &gone];
    let bodies: Vec<Vec<u8>> = (0..150).map(|i| query_body(3000 + i)).collect();
    let now = upgram_server::udp::unix_now();
    for (i, body) in bodies.iter().enumerate() {
        senders[i % 3].send_to(&datagram(i, body, now), udp.server).unwrap();
        // Between any two replies, a datagram that gets none (too short to be a frame).
        udp.client.send_to(b"up", udp.server).unwrap();
    }
    drop(gone);
    udp.serve(shared.clone());
    for (n, socket) in [&udp.client, &other].into_iter().enumerate() {
        let mut answered = HashSet::new();
        for _ in (n..bodies.len()).step_by(3) {
            let mut buffer = [0u8; 2048];
            let (len, _) = socket.recv_from(&mut buffer).expect("a reply");
            let reply = &buffer[..len];
            let i = Frame::decode(reply).unwrap().request_id as usize;
            assert_eq!(i % 3, n, "reply {i} went to sender {n}");
            verify(reply, &bodies[i], nonce_of(i), now);
            assert!(answered.insert(i), "one reply per query");
        }
    }
    // Nothing more: the short datagrams got no reply.
    udp.client.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    assert!(udp.client.recv_from(&mut [0u8; 2048]).is_err(), "a reply to a datagram that gets none");
    assert_eq!(shared.metrics().signatures, bodies.len() as u64);
}
