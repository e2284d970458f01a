//! Batch signing in the server (SPEC.md §10.3.1): the new answers of datagrams received
//! together share one signature over a Merkle root, each reply carrying its audit path; a lone
//! answer is signed alone, byte for byte as before; every reply stays within 1024 bytes and,
//! for a source that has not proven its address, within the 3× rule. Checked on the I/O-free
//! worker and over real UDP on 127.0.0.1.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use upgram_core::body::{Query, QueryModule};
use upgram_core::cookie::{ClientCookie, CookieSecret, make_server_cookie};
use upgram_core::limits::{AMPLIFICATION_FACTOR, MIN_UNRESTRICTED_QUERY_LEN};
use upgram_core::message::Expectation;
use upgram_core::sign::{KeyRing, Nonce, ReplySigner, SignatureBlock};
use upgram_core::wire::{Frame, QueryOptions};
use upgram_core::{Datagram, MAX_DATAGRAM_LEN, Message, Sha256Digest};
use upgram_server::catalog::Catalog;
use upgram_server::server::{Config, CookieSecrets, Shared, Worker};

mod common;
use common::UdpBurst;

const SEED: [u8; 32] = [5; 32];
const AT: u64 = 1_800_000_000;

/// `core` with releases 1.0 … 1.9, a few files each, so answers vary with the version asked.
fn catalog() -> Catalog {
    let mut catalog = Catalog::default();
    let core = common::ten_releases("core");
    catalog.modules.insert(core.id.clone(), core);
    catalog
}

fn shared() -> Arc<Shared> {
    let secrets = CookieSecrets { current: CookieSecret([0x11; 32]), previous: None };
    Arc::new(Shared::new(catalog(), ReplySigner::from_seed(&SEED), secrets, Config::default()))
}

fn keys() -> KeyRing {
    let mut ring = KeyRing::new();
    ring.add(ReplySigner::from_seed(&SEED).verifying_key());
    ring
}

fn at() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(AT)
}

/// A distinct query body for each `i`: `core` at some version plus an unknown module named
/// after `i`.
fn query_body(i: usize) -> Vec<u8> {
    let modules = vec![
        QueryModule { id: Cow::Borrowed("core"), version: Some(common::v(&format!("1.{}", i % 9))), files: vec![] },
        QueryModule { id: Cow::Owned(format!("other-{i}")), version: None, files: vec![] },
    ];
    Query::new(modules).to_vec()
}

fn nonce(i: usize) -> Nonce {
    Nonce([i as u8 ^ 0x5a; Nonce::LEN])
}

/// The query datagram for `body`, padded so that any reply may be sent to it.
fn datagram(i: usize, body: &[u8], nonce: Option<Nonce>, pad_to: usize) -> Vec<u8> {
    let options = QueryOptions { nonce, pad_to, ..Default::default() };
    Frame::query(i as u64, body, &options).to_vec().unwrap()
}

/// Decodes and verifies a reply to `body` as a client does; returns its signature block.
fn verify(reply: &[u8], body: &[u8], nonce: Option<Nonce>, now: u64) -> SignatureBlock {
    assert!(reply.len() <= MAX_DATAGRAM_LEN, "a reply of {} bytes", reply.len());
    let decoded = Datagram::decode(reply).expect("the reply decodes");
    let keys = keys();
    let expect = Expectation { keys: &keys, query: Sha256Digest::of(body), nonce, now };
    let Message::Response(response) = &decoded.message else {
        panic!("expected a response, got {:?}", decoded.message)
    };
    response.verify(&expect).expect("the reply verifies with the public key");
    let frame = Frame::decode(reply).unwrap();
    assert_eq!(frame.nonce, nonce);
    frame.signature.expect("signed")
}

fn from() -> SocketAddr {
    "127.0.0.1:40000".parse().unwrap()
}

#[test]
fn distinct_queries_received_together_share_one_batch_signature() {
    let mut worker = Worker::new(shared());
    let bodies: Vec<Vec<u8>> = (0..40).map(query_body).collect();
    let datagrams: Vec<Vec<u8>> =
        bodies.iter().enumerate().map(|(i, b)| datagram(i, b, None, MIN_UNRESTRICTED_QUERY_LEN)).collect();
    let batch: Vec<(&[u8], SocketAddr)> = datagrams.iter().map(|d| (d.as_slice(), from())).collect();
    let mut out = Vec::new();
    worker.handle_batch(&batch, at(), &mut out);
    assert_eq!(out.len(), batch.len());
    let blocks: Vec<SignatureBlock> =
        out.iter().zip(&bodies).map(|(reply, body)| verify(reply, body, None, AT)).collect();
    // 40 answers: at most 32 per batch in a tree of depth 6 … all batch-signed, and the
    // Ed25519 signature is shared within each batch.
    assert!(blocks.iter().all(|b| b.batch.is_some()), "every answer of the burst is batch-signed");
    let signatures: std::collections::HashSet<[u8; 64]> = blocks.iter().map(|b| b.signature).collect();
    assert!(signatures.len() < blocks.len() / 2, "{} signatures for {} answers", signatures.len(), blocks.len());
    assert_eq!(worker.metrics().signatures.load(std::sync::atomic::Ordering::Relaxed), 40);
    assert_eq!(worker.metrics().batch_signed.load(std::sync::atomic::Ordering::Relaxed), 40);
    assert_eq!(
        worker.metrics().ed25519_signatures.load(std::sync::atomic::Ordering::Relaxed),
        signatures.len() as u64,
        "one Ed25519 signature counted per batch"
    );
}

#[test]
fn a_lone_query_gets_the_single_form_byte_for_byte() {
    let body = query_body(3);
    let query = datagram(7, &body, None, MIN_UNRESTRICTED_QUERY_LEN);
    let mut alone = Vec::new();
    assert!(Worker::new(shared()).handle(&query, from().ip(), at(), &mut alone));
    let mut batched = Vec::new();
    Worker::new(shared()).handle_batch(&[(&query, from())], at(), &mut batched);
    assert_eq!(batched, vec![alone.clone()]);
    let block = verify(&alone, &body, None, AT);
    assert!(block.batch.is_none());
    // The same bytes core's single signer gives over the reply body.
    let frame = Frame::decode(&alone).unwrap();
    let single = ReplySigner::from_seed(&SEED).sign(frame.kind, None, frame.body);
    assert_eq!(block, single);
}

#[test]
fn a_batch_with_one_new_answer_and_cached_ones_signs_it_alone() {
    let mut worker = Worker::new(shared());
    let cached_body = query_body(1);
    let first = datagram(1, &cached_body, None, MIN_UNRESTRICTED_QUERY_LEN);
    let mut out = Vec::new();
    // An answer is kept from the second time its query comes.
    worker.handle_batch(&[(&first, from())], at(), &mut out);
    worker.handle_batch(&[(&first, from())], at(), &mut out);
    let cached_block = verify(&out[0], &cached_body, None, AT);
    let new_body = query_body(2);
    let second = datagram(2, &new_body, None, MIN_UNRESTRICTED_QUERY_LEN);
    worker.handle_batch(&[(&first, from()), (&second, from())], at(), &mut out);
    assert_eq!(verify(&out[0], &cached_body, None, AT), cached_block, "the cached answer keeps its signature");
    assert!(verify(&out[1], &new_body, None, AT).batch.is_none());
    assert_eq!(worker.metrics().cache_hits.load(std::sync::atomic::Ordering::Relaxed), 1);
}

#[test]
fn an_answer_is_kept_from_the_second_time_its_query_comes() {
    use std::sync::atomic::Ordering::Relaxed;
    let mut worker = Worker::new(shared());
    let body = query_body(4);
    let query = datagram(4, &body, None, MIN_UNRESTRICTED_QUERY_LEN);
    let mut replies = Vec::new();
    for _ in 0..4 {
        let mut out = Vec::new();
        worker.handle_batch(&[(&query, from())], at(), &mut out);
        verify(&out[0], &body, None, AT);
        replies.push(out.remove(0));
    }
    // The first coming is answered and not kept; the second is answered again and kept; the
    // third and fourth get the kept bytes.
    assert_eq!(worker.metrics().signatures.load(Relaxed), 2);
    assert_eq!(worker.metrics().cache_hits.load(Relaxed), 2);
    assert_eq!(replies[1], replies[2]);
    assert_eq!(replies[2], replies[3]);
    // Distinct queries are never kept: each is signed, none comes from the cache.
    for i in 100..140 {
        let mut out = Vec::new();
        worker.handle_batch(
            &[(&datagram(i, &query_body(i), None, MIN_UNRESTRICTED_QUERY_LEN), from())],
            at(),
            &mut out,
        );
    }
    assert_eq!(worker.metrics().signatures.load(Relaxed), 42);
    assert_eq!(worker.metrics().cache_hits.load(Relaxed), 2);
}

#[test]
fn identical_queries_in_one_batch_get_the_same_signed_bytes() {
    let mut worker = Worker::new(shared());
    let bodies: Vec<Vec<u8>> = [1, 2, 1, 3, 1].into_iter().map(query_body).collect();
    let datagrams: Vec<Vec<u8>> = bodies.iter().map(|b| datagram(9, b, None, MIN_UNRESTRICTED_QUERY_LEN)).collect();
    let batch: Vec<(&[u8], SocketAddr)> = datagrams.iter().map(|d| (d.as_slice(), from())).collect();
    let mut out = Vec::new();
    worker.handle_batch(&batch, at(), &mut out);
    for (reply, body) in out.iter().zip(&bodies) {
        verify(reply, body, None, AT);
    }
    assert_eq!(out[0], out[2]);
    assert_eq!(out[0], out[4]);
    assert_eq!(worker.metrics().signatures.load(std::sync::atomic::Ordering::Relaxed), 3);
    assert_eq!(worker.metrics().cache_hits.load(std::sync::atomic::Ordering::Relaxed), 2);
}

#[test]
fn nonce_bound_queries_in_a_batch_verify_with_their_nonces() {
    let mut worker = Worker::new(shared());
    let bodies: Vec<Vec<u8>> = (0..12).map(query_body).collect();
    let nonces: Vec<Option<Nonce>> = (0..12).map(|i| (i % 2 == 0).then(|| nonce(i))).collect();
    let datagrams: Vec<Vec<u8>> =
        bodies.iter().zip(&nonces).enumerate().map(|(i, (b, n))| datagram(i, b, *n, 400)).collect();
    let batch: Vec<(&[u8], SocketAddr)> = datagrams.iter().map(|d| (d.as_slice(), from())).collect();
    let mut out = Vec::new();
    worker.handle_batch(&batch, at(), &mut out);
    for ((reply, body), nonce) in out.iter().zip(&bodies).zip(&nonces) {
        let block = verify(reply, body, *nonce, AT);
        assert!(block.batch.is_some());
        // Bound to its nonce: with another one, it is refused.
        if nonce.is_some() {
            let decoded = Datagram::decode(reply).unwrap();
            let Message::Response(response) = &decoded.message else { unreachable!() };
            let keys = keys();
            let wrong = Expectation { keys: &keys, query: Sha256Digest::of(body), nonce: Some(nonce_other()), now: AT };
            assert!(response.verify(&wrong).is_err());
        }
    }
}

fn nonce_other() -> Nonce {
    Nonce([0xee; Nonce::LEN])
}

#[test]
fn an_unvalidated_source_is_held_to_three_times_in_a_batch() {
    // Length of the single-signed reply to this query.
    let body = query_body(8);
    let mut single = Vec::new();
    assert!(Worker::new(shared()).handle(&datagram(0, &body, None, 1000), from().ip(), at(), &mut single));
    let single_len = single.len();
    // Padded so the single form fits the 3x rule and the batch trailer would not.
    let tight = datagram(0, &body, None, single_len.div_ceil(AMPLIFICATION_FACTOR));
    let bodies: Vec<Vec<u8>> = (100..110).map(query_body).collect();
    let mut datagrams: Vec<Vec<u8>> =
        bodies.iter().enumerate().map(|(i, b)| datagram(i + 1, b, None, MIN_UNRESTRICTED_QUERY_LEN)).collect();
    datagrams.insert(4, tight.clone());
    let batch: Vec<(&[u8], SocketAddr)> = datagrams.iter().map(|d| (d.as_slice(), from())).collect();
    let mut out = Vec::new();
    let mut worker = Worker::new(shared());
    worker.handle_batch(&batch, at(), &mut out);
    for (reply, query) in out.iter().zip(&datagrams) {
        assert!(reply.len() <= AMPLIFICATION_FACTOR * query.len(), "{} for a query of {}", reply.len(), query.len());
    }
    let block = verify(&out[4], &body, None, AT);
    assert!(block.batch.is_none(), "no room for the batch trailer: signed alone");
    assert_eq!(out[4].len(), single_len);
    assert!(
        out.iter().enumerate().filter(|(i, _)| *i != 4).all(|(_, r)| Frame::decode(r)
            .unwrap()
            .signature
            .unwrap()
            .batch
            .is_some())
    );
    assert_eq!(worker.metrics().cookie_challenges.load(std::sync::atomic::Ordering::Relaxed), 0);
}

#[test]
fn a_burst_over_udp_is_answered_in_batch_signed_replies_that_verify() {
    let shared = Arc::new(Shared::new(
        catalog(),
        ReplySigner::from_seed(&SEED),
        CookieSecrets { current: CookieSecret([0x11; 32]), previous: None },
        Config::default(),
    ));
    let mut udp = UdpBurst::bind();
    // The burst waits in the socket's buffer before the worker starts, so its first receive
    // takes it in whole (up to the receive batch size).
    let bodies: Vec<Vec<u8>> = (0..24).map(|i| query_body(1000 + i)).collect();
    let nonces: Vec<Option<Nonce>> = (0..24).map(|i| (i % 3 == 0).then(|| nonce(i))).collect();
    for (i, (body, nonce)) in bodies.iter().zip(&nonces).enumerate() {
        udp.client.send_to(&datagram(i, body, *nonce, MIN_UNRESTRICTED_QUERY_LEN), udp.server).unwrap();
    }
    udp.serve(shared.clone());
    let mut batched = 0;
    let mut signatures = std::collections::HashSet::new();
    let now = upgram_server::udp::unix_now();
    for _ in 0..bodies.len() {
        let reply = udp.receive();
        let i = Frame::decode(&reply).unwrap().request_id as usize;
        let block = verify(&reply, &bodies[i], nonces[i], now);
        batched += usize::from(block.batch.is_some());
        signatures.insert(block.signature);
    }
    assert!(batched >= 2, "{batched} of {} replies batch-signed", bodies.len());
    assert_eq!(shared.metrics().batch_signed, batched as u64);
    // One Ed25519 signature per batch and per answer signed alone: as many as the replies carry.
    assert!(signatures.len() < bodies.len(), "{} signatures for {} replies", signatures.len(), bodies.len());
    assert_eq!(shared.metrics().ed25519_signatures, signatures.len() as u64);
}

/// The eight modules of the fallback of vector 101, each with enough files that the answer
/// does not fit a datagram and is sent as module documents.
const DOCUMENT_MODULES: [&str; 8] =
    ["core", "ui-shell", "pdf-plugin", "spell-en", "spell-de", "codecs", "fonts-cjk", "help-docs"];

fn documents_shared() -> Arc<Shared> {
    let mut catalog = Catalog::default();
    for id in DOCUMENT_MODULES {
        let files = (0..12).map(|f| common::file(&format!("lib/{id}-{f:02}.bin"), "2.0")).collect();
        let m = common::module(id, vec![common::release("2.0", files)]);
        catalog.modules.insert(m.id.clone(), m);
    }
    let secrets = CookieSecrets { current: CookieSecret([0x11; 32]), previous: None };
    Arc::new(Shared::new(catalog, ReplySigner::from_seed(&SEED), secrets, Config::default()))
}

/// Query `i` of a distinct load: the eight modules, the first at its own installed version,
/// following module documents.
fn documents_query(i: usize) -> Vec<u8> {
    let modules = DOCUMENT_MODULES
        .iter()
        .enumerate()
        .map(|(k, id)| QueryModule {
            id: Cow::Borrowed(*id),
            version: Some(common::v(&if k == 0 { format!("1.{}", 10 + i) } else { "1.0".to_owned() })),
            files: vec![],
        })
        .collect();
    Query { module_docs: true, ..Query::new(modules) }.to_vec()
}

/// The batch trailer carries no root, so the module-document pointer of eight documents that
/// distinct load answers with most (about 890 bytes signed alone, as vector 101) has room for
/// a path of 4 hashes: 16 such answers ready together share one signature. With a 32-byte
/// root in the trailer, only 3 levels (batches of 8) would fit.
#[test]
fn sixteen_eight_document_pointers_share_one_signature_at_depth_four() {
    let bodies: Vec<Vec<u8>> = (0..16).map(documents_query).collect();
    // A fallback goes only to a source that proved its address: each query carries cookies.
    let client_cookie = ClientCookie([3; 8]);
    let server_cookie = make_server_cookie(&CookieSecret([0x11; 32]), &client_cookie, from().ip(), AT);
    let options =
        QueryOptions { client_cookie: Some(client_cookie), server_cookie: Some(server_cookie), ..Default::default() };
    let datagrams: Vec<Vec<u8>> =
        bodies.iter().enumerate().map(|(i, b)| Frame::query(i as u64, b, &options).to_vec().unwrap()).collect();
    // Each answer signed alone: a pointer to eight module documents, with room for depth 4
    // (2 + 4 × 32 = 130 bytes) but not for depth 4 plus a root (162 bytes).
    let mut single_lens = Vec::new();
    for (query, body) in datagrams.iter().zip(&bodies) {
        let mut alone = Vec::new();
        assert!(Worker::new(documents_shared()).handle(query, from().ip(), at(), &mut alone));
        let decoded = Datagram::decode(&alone).expect("decodes");
        let Message::Fallback(pointer) = &decoded.message else { panic!("a fallback, got {:?}", decoded.message) };
        assert_eq!(pointer.body_unverified().modules.as_ref().map(|m| m.documents.len()), Some(8));
        assert!(verify_any(&alone, body).is_none(), "signed alone");
        assert!(alone.len() + 2 + 4 * 32 <= MAX_DATAGRAM_LEN, "{} bytes alone: no room for depth 4", alone.len());
        assert!(
            alone.len() + 2 + 32 + 4 * 32 > MAX_DATAGRAM_LEN,
            "{} bytes alone: depth 4 would fit a root",
            alone.len()
        );
        single_lens.push(alone.len());
    }
    let batch: Vec<(&[u8], SocketAddr)> = datagrams.iter().map(|d| (d.as_slice(), from())).collect();
    let mut worker = Worker::new(documents_shared());
    let mut out = Vec::new();
    worker.handle_batch(&batch, at(), &mut out);
    assert_eq!(out.len(), 16);
    let mut signatures = std::collections::HashSet::new();
    for (i, (reply, body)) in out.iter().zip(&bodies).enumerate() {
        let proof = verify_any(reply, body).expect("batch-signed");
        assert_eq!((proof.depth(), proof.index()), (4, i), "reply {i}");
        assert_eq!(reply.len(), single_lens[i] + 2 + 4 * 32);
        assert!(reply.len() <= MAX_DATAGRAM_LEN);
        signatures.insert(Frame::decode(reply).unwrap().signature.unwrap().signature);
    }
    assert_eq!(signatures.len(), 1, "one Ed25519 signature for the 16 pointers");
    eprintln!("eight-document pointers of {:?} bytes signed alone, {} batch-signed", single_lens, out[0].len());
    assert_eq!(worker.metrics().batch_signed.load(std::sync::atomic::Ordering::Relaxed), 16);
    assert_eq!(worker.metrics().ed25519_signatures.load(std::sync::atomic::Ordering::Relaxed), 1);
}

/// Decodes and verifies a fallback (or response) to `body`; returns its batch proof, if any.
fn verify_any(reply: &[u8], body: &[u8]) -> Option<upgram_core::sign::BatchProof> {
    let decoded = Datagram::decode(reply).expect("the reply decodes");
    let keys = keys();
    let expect = Expectation { keys: &keys, query: Sha256Digest::of(body), nonce: None, now: AT };
    match &decoded.message {
        Message::Fallback(pointer) => pointer.verify(&expect).map(|_| ()).expect("the pointer verifies"),
        Message::Response(response) => response.verify(&expect).map(|_| ()).expect("the response verifies"),
        other => panic!("a signed reply, got {other:?}"),
    }
    Frame::decode(reply).unwrap().signature.expect("signed").batch
}
