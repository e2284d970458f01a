//! The server over real sockets on 127.0.0.1 (S3-S7, P6, P7, P9): answers of every kind, the
//! cookie round trip and the 3× rule (counted), fallback then HTTP fetch with hash checks,
//! malformed floods, rate limiting, signature reuse, two instances agreeing, and catalog
//! reloads during a stream of queries with no lost or mixed answer.

use std::borrow::Cow;
use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use upgram_core::body::{Fallback, Query, QueryModule, Response, Status};
use upgram_core::cookie::{ClientCookie, CookieSecret, ServerCookie};
use upgram_core::message::Expectation;
use upgram_core::sign::{KeyRing, ReplySigner};
use upgram_core::wire::{Frame, QueryOptions};
use upgram_core::{Datagram, Message, Sha256Digest};
use upgram_server::catalog::{Blob, Catalog, ReleaseFile};
use upgram_server::server::{Config, CookieSecrets, Shared, Worker};

mod common;
use common::{module, release, v};

const SEED: [u8; 32] = [9; 32];

struct TestServer {
    udp: SocketAddr,
    http: SocketAddr,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    runtime: tokio::runtime::Runtime,
    _dir: tempfile::TempDir,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// Writes `content` into the store and returns its blob.
fn store(dir: &Path, content: &[u8]) -> Blob {
    upgram_server::catalog::store_blob(dir, content).unwrap()
}

/// core 1.0 -> 1.1 (two small files); big 1 -> 2 (forty files: the answer needs a fallback).
fn catalog(dir: &Path, core_latest: &str) -> Catalog {
    let mut catalog = Catalog::default();
    let file = |id: &str, version: &str| ReleaseFile {
        id: id.into(),
        version: v(version),
        blob: store(dir, format!("{id} at {version}").as_bytes()),
        executable: false,
    };
    let core = module(
        "core",
        vec![
            release("1.0", vec![file("bin/app", "1.0"), file("share/readme.txt", "1.0")]),
            release(core_latest, vec![file("bin/app", core_latest), file("share/readme.txt", "1.0")]),
        ],
    );
    let many = |version: &str| (0..40).map(|i| file(&format!("data/part-{i:02}.bin"), version)).collect::<Vec<_>>();
    let big = module("big", vec![release("1", many("1")), release("2", many("2"))]);
    for m in [core, big] {
        catalog.modules.insert(m.id.clone(), m);
    }
    catalog
}

fn start(config: impl FnOnce(&mut Config)) -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let (stop, stopped) = watch::channel(false);
    let http_listener = runtime.block_on(upgram_server::http::bind("127.0.0.1:0".parse().unwrap())).unwrap();
    let http = http_listener.local_addr().unwrap();
    let mut settings = Config { public_url: format!("http://{http}/"), workers: 2, ..Config::default() };
    config(&mut settings);
    let secrets = CookieSecrets { current: CookieSecret([0x42; 32]), previous: None };
    let shared = Arc::new(Shared::new(catalog(dir.path(), "1.1"), ReplySigner::from_seed(&SEED), secrets, settings));
    let sockets = {
        let _guard = runtime.enter();
        upgram_server::udp::bind("127.0.0.1:0".parse().unwrap(), shared.config().workers).unwrap()
    };
    let udp = sockets[0].local_addr().unwrap();
    let router = upgram_server::http::router(shared.clone(), dir.path());
    runtime.spawn(upgram_server::http::serve(http_listener, router, stopped.clone()));
    {
        let _guard = runtime.enter();
        upgram_server::udp::serve(shared.clone(), sockets, stopped);
    }
    TestServer { udp, http, shared, stop, runtime, _dir: dir }
}

fn client() -> UdpSocket {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    // A guard against a hang, not a timing assertion: loopback answers in microseconds.
    socket.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    socket
}

fn exchange(socket: &UdpSocket, server: SocketAddr, datagram: &[u8]) -> Vec<u8> {
    socket.send_to(datagram, server).unwrap();
    let mut buffer = [0u8; 2048];
    let (len, from) = socket.recv_from(&mut buffer).expect("a reply");
    assert_eq!(from, server);
    buffer[..len].to_vec()
}

/// Sends `body` padded with a client cookie; after a challenge, again with the server cookie.
fn validated_exchange(socket: &UdpSocket, server: SocketAddr, body: &[u8]) -> Vec<u8> {
    let mut options = QueryOptions { client_cookie: Some(ClientCookie([8; 8])), pad_to: 342, ..Default::default() };
    let first = exchange(socket, server, &Frame::query(3, body, &options).to_vec().unwrap());
    let Message::CookieChallenge(challenge) = Datagram::decode(&first).unwrap().message else { return first };
    options.server_cookie = Some(challenge.server_cookie);
    exchange(socket, server, &Frame::query(4, body, &options).to_vec().unwrap())
}

fn query_body(modules: &[(&str, &str)]) -> Vec<u8> {
    Query::new(
        modules
            .iter()
            .map(|(id, version)| QueryModule { id: Cow::Owned((*id).into()), version: Some(v(version)), files: vec![] })
            .collect(),
    )
    .to_vec()
}

/// A plain HTTP client for the tests.
struct Http(reqwest::Client);

impl Http {
    async fn get(&self, url: &str) -> Vec<u8> {
        let response = self.0.get(url).send().await.expect("HTTP request");
        assert!(response.status().is_success(), "{url}: {}", response.status());
        response.bytes().await.expect("HTTP body").to_vec()
    }

    async fn range(&self, url: &str, first: u64, last: u64) -> (u16, Vec<u8>) {
        let response =
            self.0.get(url).header("Range", format!("bytes={first}-{last}")).send().await.expect("HTTP request");
        (response.status().as_u16(), response.bytes().await.expect("HTTP body").to_vec())
    }
}

fn keys() -> KeyRing {
    let mut ring = KeyRing::new();
    ring.add(ReplySigner::from_seed(&SEED).verifying_key());
    ring
}

fn now() -> u64 {
    upgram_server::udp::unix_now()
}

/// Verifies an inline response to `body` and returns its canonical body bytes.
fn verified_response(reply: &[u8], body: &[u8]) -> Vec<u8> {
    let datagram = Datagram::decode(reply).expect("decodes");
    let Message::Response(response) = &datagram.message else {
        panic!("expected a response, got {:?}", datagram.message)
    };
    let keys = keys();
    let expect = Expectation { keys: &keys, query: Sha256Digest::of(body), nonce: None, now: now() };
    response.verify(&expect).expect("verifies").to_vec()
}

#[test]
fn cookie_round_trip_and_the_3x_rule() {
    let server = start(|_| {});
    let socket = client();
    let body = query_body(&[("core", "1.0")]);
    let cookie = ClientCookie([7; 8]);
    let first =
        Frame::query(1, &body, &QueryOptions { client_cookie: Some(cookie), ..Default::default() }).to_vec().unwrap();
    let reply = exchange(&socket, server.udp, &first);
    assert!(reply.len() <= first.len(), "a challenge is never larger than the query");
    let Message::CookieChallenge(challenge) = Datagram::decode(&reply).unwrap().message else { panic!("challenge") };
    assert_eq!(challenge.client_cookie, Some(cookie));
    let options = QueryOptions {
        client_cookie: Some(cookie),
        server_cookie: Some(challenge.server_cookie),
        ..Default::default()
    };
    let second = Frame::query(2, &body, &options).to_vec().unwrap();
    let reply = exchange(&socket, server.udp, &second);
    assert!(reply.len() > 3 * second.len(), "validated sources get the full answer");
    let response = Response::decode(&verified_response(&reply, &body)).unwrap().modules.remove(0).status;
    assert_eq!(response, Status::Update);

    // Unvalidated sources, counted over a mix of queries: never more than 3x.
    let (mut sent, mut received) = (0, 0);
    for (i, module) in ["core", "big", "nope", "core"].iter().cycle().take(200).enumerate() {
        let pad_to = [0, 120, 342, 400][i % 4];
        let body = query_body(&[(module, "1.0")]);
        let datagram = Frame::query(i as u64, &body, &QueryOptions { pad_to, ..Default::default() }).to_vec().unwrap();
        let reply = exchange(&socket, server.udp, &datagram);
        assert!(reply.len() <= 3 * datagram.len(), "reply {} to a {}-byte query", reply.len(), datagram.len());
        sent += datagram.len();
        received += reply.len();
    }
    assert!(received <= 3 * sent);
    assert!(server.shared.metrics().cookie_challenges > 0);
}

#[test]
fn fallback_document_and_payloads_over_http() {
    let server = start(|_| {});
    let socket = client();
    let body = query_body(&[("big", "1")]);
    let reply = validated_exchange(&socket, server.udp, &body);
    let decoded = Datagram::decode(&reply).unwrap();
    let Message::Fallback(pointer) = &decoded.message else { panic!("expected a fallback, got {:?}", decoded.message) };
    let keys = keys();
    let expect = Expectation { keys: &keys, query: Sha256Digest::of(&body), nonce: None, now: now() };
    let pointer = pointer.verify(&expect).expect("signed fallback verifies");
    let http = Http(reqwest::Client::new());
    let document = server.runtime.block_on(http.get(pointer.mirrors[0].as_ref()));
    let response = pointer.open_document(&document, now()).expect("size, hash and binding check out");
    let big = &response.modules[0];
    assert_eq!(big.status, Status::Update);
    let upgram_core::body::UpgradeInfo::Files(files) = &big.upgrade else { panic!("file list") };
    assert_eq!(files.len(), 40);
    // Every payload is served, whole and by range, and hashes as signed.
    let upgram_core::body::FileAction::Replace(first) = &files[0].action else { panic!("replace") };
    let url = response.resolve_url(&first.url).into_owned();
    let whole = server.runtime.block_on(http.get(&url));
    assert_eq!(Sha256Digest::of(&whole), first.sha256);
    assert_eq!(whole.len() as u64, first.size);
    let (status, part) = server.runtime.block_on(http.range(&url, 2, 5));
    assert_eq!(status, 206);
    assert_eq!(part, whole[2..=5]);
    let metrics = server.runtime.block_on(http.get(&format!("http://{}/metrics", server.http)));
    let metrics = String::from_utf8(metrics).unwrap();
    assert!(metrics.contains("upgram_replies_total{kind=\"fallback\"} 1"), "{metrics}");
    assert!(metrics.contains("upgram_reply_latency_seconds_count"), "{metrics}");
}

#[test]
fn malformed_floods_get_nothing_larger_and_valid_queries_still_get_answers() {
    let server = start(|c| c.rate_per_source = 1e9);
    let socket = client();
    let body = query_body(&[("core", "1.0")]);
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut garbage_sent = 0u64;
    // Request id (as the server would read it) -> length of the garbage that carried it.
    let mut garbage: std::collections::HashMap<u64, usize> = std::collections::HashMap::new();
    for round in 0..100u64 {
        // Fifty datagrams of garbage: random bytes, and broken upgram headers.
        for i in 0..50 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let len = (seed % 1100) as usize;
            let mut junk: Vec<u8> = (0..len).map(|j| (seed >> (j % 56)) as u8).collect();
            if i % 2 == 0 && junk.len() >= 20 {
                junk[..6].copy_from_slice(b"UPGM\x01\x01");
            }
            if let Some((_, id)) = upgram_core::wire::peek_version_and_id(&junk) {
                let shortest = garbage.get(&id).map_or(junk.len(), |&seen| seen.min(junk.len()));
                garbage.insert(id, shortest);
            }
            socket.send_to(&junk, server.udp).unwrap();
            garbage_sent += 1;
        }
        // Then a real query: its reply must come; every reply before it answers garbage and is
        // no larger than the datagram it answers.
        let id = 1_000_000 + round;
        let datagram = Frame::query(id, &body, &QueryOptions { pad_to: 342, ..Default::default() }).to_vec().unwrap();
        socket.send_to(&datagram, server.udp).unwrap();
        let mut buffer = [0u8; 2048];
        loop {
            let (len, _) = socket.recv_from(&mut buffer).expect("the real query is answered");
            let reply = Datagram::decode(&buffer[..len]).expect("replies decode");
            if reply.request_id == id {
                verified_response(&buffer[..len], &body);
                break;
            }
            assert!(matches!(reply.message, Message::Error(_)), "garbage only ever gets errors");
            let answered = garbage.get(&reply.request_id).expect("an error answers a datagram that was sent");
            assert!(len <= *answered, "a {len}-byte error for a {answered}-byte datagram");
        }
    }
    let malformed = server.shared.metrics().malformed;
    let dropped = server.shared.metrics().dropped;
    assert!(
        malformed + dropped >= garbage_sent,
        "every bad datagram is counted ({malformed} + {dropped} < {garbage_sent})"
    );
}

#[test]
fn errors_are_never_larger_than_their_query() {
    let server = start(|c| c.rate_per_source = 1e9);
    let socket = client();
    // Another protocol version: error 2, naming version 1.
    let mut other = Frame::query(5, &query_body(&[("core", "1.0")]), &QueryOptions::default()).to_vec().unwrap();
    other[4] = 2;
    let reply = exchange(&socket, server.udp, &other);
    assert!(reply.len() <= other.len());
    let Message::Error(error) = Datagram::decode(&reply).unwrap().message else { panic!("error") };
    assert_eq!((error.code.code(), error.supported.clone()), (2, vec![1]));
    // A broken body: error 1, if it fits.
    let broken =
        Frame::query(6, b"<query><module id='x'></query>", &QueryOptions { pad_to: 100, ..Default::default() })
            .to_vec()
            .unwrap();
    let reply = exchange(&socket, server.udp, &broken);
    assert!(reply.len() <= broken.len());
    let Message::Error(error) = Datagram::decode(&reply).unwrap().message else { panic!("error") };
    assert_eq!(error.code.code(), 1);
    // A datagram of another kind gets nothing: the next reply is the next query's.
    let stray = Frame::cookie_challenge(7, None, ServerCookie([1; 16])).to_vec().unwrap();
    socket.send_to(&stray, server.udp).unwrap();
    let body = query_body(&[("core", "1.1")]);
    let next = Frame::query(8, &body, &QueryOptions { pad_to: 342, ..Default::default() }).to_vec().unwrap();
    let reply = exchange(&socket, server.udp, &next);
    assert_eq!(Datagram::decode(&reply).unwrap().request_id, 8);
}

#[test]
fn rate_limiting_is_per_source_and_bounded() {
    let server = start(|c| {
        c.rate_per_source = 1e-6;
        c.burst_per_source = 3.0;
    });
    let socket = client();
    let body = query_body(&[("core", "1.1")]);
    let mut limited = 0;
    for id in 0..10 {
        let datagram = Frame::query(id, &body, &QueryOptions { pad_to: 342, ..Default::default() }).to_vec().unwrap();
        let reply = exchange(&socket, server.udp, &datagram);
        if let Message::Error(error) = Datagram::decode(&reply).unwrap().message {
            assert_eq!(error.code.code(), 3);
            assert!(error.retry_after.is_some());
            limited += 1;
        }
    }
    assert_eq!(limited, 7, "a burst of 3, then nothing refills");
    assert_eq!(server.shared.metrics().rate_limited, 7);
}

/// Sends `count` queries from `socket` and returns how many were refused by the rate limiter.
fn rate_limited(socket: &UdpSocket, server: SocketAddr, count: u64) -> usize {
    let body = query_body(&[("core", "1.1")]);
    let options = QueryOptions { pad_to: 342, ..Default::default() };
    (0..count)
        .filter(|&id| {
            let reply = exchange(socket, server, &Frame::query(id, &body, &options).to_vec().unwrap());
            matches!(Datagram::decode(&reply).unwrap().message, Message::Error(e) if e.code.code() == 3)
        })
        .count()
}

#[test]
fn the_per_source_limit_holds_whatever_the_number_of_workers() {
    for workers in [1, 4] {
        // One flow: the kernel hands all of it to one worker, which must still allow the
        // whole burst.
        let server = start(|c| {
            c.rate_per_source = 1e-6;
            c.burst_per_source = 12.0;
            c.workers = workers;
        });
        assert_eq!(rate_limited(&client(), server.udp, 20), 8, "{workers} workers: a burst of 12 for one flow");
        // Many flows from the one address, spread over the workers: one budget between them.
        let server = start(|c| {
            c.rate_per_source = 1e-6;
            c.burst_per_source = 12.0;
            c.workers = workers;
        });
        let refused: usize = (0..8).map(|_| rate_limited(&client(), server.udp, 5)).sum();
        assert_eq!(refused, 40 - 12, "{workers} workers: a burst of 12 for the address, whatever its ports");
    }
}

#[test]
fn identical_queries_reuse_one_signature() {
    let server = start(|_| {});
    let socket = client();
    let body = query_body(&[("core", "1.0"), ("nope", "3")]);
    let replies: Vec<Vec<u8>> = (0..20u64)
        .map(|id| {
            let datagram =
                Frame::query(id, &body, &QueryOptions { pad_to: 342, ..Default::default() }).to_vec().unwrap();
            exchange(&socket, server.udp, &datagram)
        })
        .collect();
    for reply in &replies {
        verified_response(reply, &body);
    }
    let signatures = server.shared.metrics().signatures;
    // Two workers, and possibly a minute boundary: at most 2 signatures each.
    assert!(signatures <= 4, "{signatures} signatures for 20 identical queries");
    assert!(server.shared.metrics().cache_hits >= 16);
}

#[test]
fn two_instances_answer_identically_and_accept_each_others_cookies() {
    let a = start(|_| {});
    let b = start(|_| {});
    let body = query_body(&[("core", "1.0")]);
    let datagram = Frame::query(9, &body, &QueryOptions { pad_to: 342, ..Default::default() }).to_vec().unwrap();
    // The same query at the same moment: byte-identical signed answers (the public URL differs
    // per instance here, so compare two workers of one configuration each at one instant).
    let now = std::time::SystemTime::now();
    let (mut from_a, mut from_b) = (Vec::new(), Vec::new());
    let ip = "127.0.0.1".parse().unwrap();
    let shared_b = Arc::new(Shared::new(
        a.shared.catalog().catalog.clone(),
        ReplySigner::from_seed(&SEED),
        CookieSecrets { current: CookieSecret([0x42; 32]), previous: None },
        a.shared.config().clone(),
    ));
    assert!(Worker::new(a.shared.clone()).handle(&datagram, ip, now, &mut from_a));
    assert!(Worker::new(shared_b).handle(&datagram, ip, now, &mut from_b));
    assert_eq!(from_a, from_b, "two instances on one catalog answer byte for byte alike");
    // A cookie from instance a is accepted by instance b over UDP.
    let socket = client();
    let cookie = ClientCookie([3; 8]);
    let small =
        Frame::query(10, &body, &QueryOptions { client_cookie: Some(cookie), ..Default::default() }).to_vec().unwrap();
    let Message::CookieChallenge(challenge) = Datagram::decode(&exchange(&socket, a.udp, &small)).unwrap().message
    else {
        panic!("challenge from a")
    };
    let options = QueryOptions {
        client_cookie: Some(cookie),
        server_cookie: Some(challenge.server_cookie),
        ..Default::default()
    };
    let retry = Frame::query(11, &body, &options).to_vec().unwrap();
    verified_response(&exchange(&socket, b.udp, &retry), &body);
    assert_eq!(b.shared.metrics().cookie_challenges, 0, "b took a's cookie");
}

#[test]
fn reloads_during_a_stream_lose_and_mix_nothing() {
    let server = start(|c| c.rate_per_source = 1e9);
    let dir = tempfile::tempdir().unwrap();
    let old = catalog(dir.path(), "1.1");
    let new = catalog(dir.path(), "1.2");
    let body = query_body(&[("core", "1.0")]);
    let expected = |catalog: &Catalog| {
        let binding = upgram_core::body::Binding { query: Sha256Digest::of(&body), issued: 0, expires: 0 };
        let query = Query::decode(&body).unwrap();
        upgram_server::responder::respond(catalog, &query, binding, &server.shared.config().public_url).to_vec()
    };
    let shapes = [strip_binding(&expected(&old)), strip_binding(&expected(&new))];
    let stream = {
        let udp = server.udp;
        let body = body.clone();
        std::thread::spawn(move || {
            let socket = client();
            (0..2000u64)
                .map(|id| {
                    let datagram =
                        Frame::query(id, &body, &QueryOptions { pad_to: 342, ..Default::default() }).to_vec().unwrap();
                    verified_response(&exchange(&socket, udp, &datagram), &body)
                })
                .collect::<Vec<_>>()
        })
    };
    for i in 0..200 {
        server.shared.replace_catalog(if i % 2 == 0 { new.clone() } else { old.clone() });
        std::thread::yield_now();
    }
    let answers = stream.join().expect("every query answered");
    assert_eq!(answers.len(), 2000);
    for answer in &answers {
        let shape = strip_binding(answer);
        assert!(shapes.contains(&shape), "an answer that is neither the old nor the new catalog's");
    }
}

/// The body without its binding attributes, to compare answers made at different times.
fn strip_binding(body: &[u8]) -> Vec<u8> {
    let text = String::from_utf8(body.to_vec()).unwrap();
    let start = text.find(" for=").unwrap();
    let end = text.find(" base=").unwrap();
    format!("{}{}", &text[..start], &text[end..]).into_bytes()
}

/// Files under `dir/doc/`.
fn files_in(dir: &Path) -> Vec<String> {
    match std::fs::read_dir(dir.join("doc")) {
        Ok(entries) => entries.filter_map(Result::ok).map(|e| e.file_name().to_string_lossy().into_owned()).collect(),
        Err(_) => Vec::new(),
    }
}

#[test]
fn an_unvalidated_source_asking_for_a_huge_answer_gets_a_challenge_and_nothing_is_built() {
    let docs = tempfile::tempdir().unwrap();
    let server = start(|c| c.docs_dir = Some(docs.path().to_owned()));
    let socket = client();
    let body = query_body(&[("big", "1")]);
    let forged = ServerCookie([0x01, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
    // Padded to 342 bytes, any reply would pass the 3x rule: the answer needs a fallback
    // document, which is built for validated sources only.
    let attempts = [
        QueryOptions { pad_to: 342, ..Default::default() },
        QueryOptions { client_cookie: Some(ClientCookie([1; 8])), pad_to: 342, ..Default::default() },
        QueryOptions {
            client_cookie: Some(ClientCookie([2; 8])),
            server_cookie: Some(forged),
            pad_to: 1024,
            nonce: None,
        },
        QueryOptions { client_cookie: Some(ClientCookie([3; 8])), ..Default::default() },
    ];
    for (i, options) in attempts.iter().enumerate() {
        let reply = exchange(&socket, server.udp, &Frame::query(i as u64, &body, options).to_vec().unwrap());
        let message = Datagram::decode(&reply).unwrap().message;
        assert!(matches!(message, Message::CookieChallenge(_)), "attempt {i}: {message:?}");
    }
    let metrics = server.shared.metrics();
    assert_eq!(metrics.unvalidated_refused, attempts.len() as u64);
    assert_eq!(metrics.signatures, 0, "nothing signed");
    assert_eq!(metrics.fallbacks, 0);
    assert_eq!(server.shared.documents_kept(), (0, 0), "no document kept");
    // A small inline answer still goes to an unvalidated padded query, without a round trip.
    let small = query_body(&[("core", "1.0")]);
    let padded = Frame::query(7, &small, &QueryOptions { pad_to: 342, ..Default::default() }).to_vec().unwrap();
    verified_response(&exchange(&socket, server.udp, &padded), &small);
    // Once validated, the fallback document is built, kept and written.
    let reply = validated_exchange(&socket, server.udp, &body);
    assert!(matches!(Datagram::decode(&reply).unwrap().message, Message::Fallback(_)));
    assert_eq!(server.shared.documents_kept().0, 1);
    let mut written = Vec::new();
    for _ in 0..200 {
        written = files_in(docs.path());
        if !written.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(written.len(), 1, "the validated answer's document is written: {written:?}");
    // The exchange's first, cookie-less transmission was refused as well.
    assert_eq!(server.shared.metrics().unvalidated_refused, attempts.len() as u64 + 1);
}

/// Waits, a bounded number of times, until `dir/doc/` holds exactly `expected`.
fn wait_for_files(dir: &Path, expected: &[String]) {
    let mut expected = expected.to_vec();
    expected.sort();
    let mut found = Vec::new();
    for _ in 0..300 {
        found = files_in(dir);
        found.sort();
        if found == expected {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("doc/ holds {found:?}, expected {expected:?}");
}

/// A worker whose store keeps at most one document, at a fixed time, and the options of a
/// validated client of it (so fallbacks are answered, not challenged).
struct OneDocumentWorker {
    shared: Arc<Shared>,
    worker: Worker,
    options: QueryOptions,
    ip: std::net::IpAddr,
    at: u64,
    _dir: tempfile::TempDir,
}

impl OneDocumentWorker {
    fn new(config: Config) -> Self {
        use upgram_core::cookie::make_server_cookie;
        use upgram_server::documents::DocumentLimits;

        let dir = tempfile::tempdir().unwrap();
        let secret = CookieSecret([0x42; 32]);
        let limits = DocumentLimits { max_count: 1, max_bytes: 1 << 20 };
        let shared = Arc::new(Shared::with_document_limits(
            catalog(dir.path(), "1.1"),
            ReplySigner::from_seed(&SEED),
            CookieSecrets { current: secret.clone(), previous: None },
            config,
            limits,
        ));
        let worker = Worker::new(shared.clone());
        let ip: std::net::IpAddr = "127.0.0.1".parse().unwrap();
        let at = 1_800_000_000u64;
        let cookie = ClientCookie([4; 8]);
        let options = QueryOptions {
            client_cookie: Some(cookie),
            server_cookie: Some(make_server_cookie(&secret, &cookie, ip, at)),
            ..Default::default()
        };
        Self { shared, worker, options, ip, at, _dir: dir }
    }

    /// The documents named by the verified fallback the worker answers `body` with (request id
    /// `id`), and whether it is of the module-document form.
    fn fallback(&mut self, id: u64, body: &[u8]) -> (Vec<Sha256Digest>, bool) {
        let now = std::time::UNIX_EPOCH + Duration::from_secs(self.at);
        let mut out = Vec::new();
        let datagram = Frame::query(id, body, &self.options).to_vec().unwrap();
        assert!(self.worker.handle(&datagram, self.ip, now, &mut out));
        let Message::Fallback(pointer) = Datagram::decode(&out).unwrap().message else { panic!("a fallback") };
        let expect = Expectation { keys: &keys(), query: Sha256Digest::of(body), nonce: None, now: self.at };
        let pointer = pointer.verify(&expect).expect("verifies");
        match &pointer.modules {
            Some(modules) => (modules.documents.iter().map(|d| d.sha256).collect(), true),
            None => (vec![pointer.sha256], false),
        }
    }
}

#[test]
fn documents_leave_the_docs_dir_when_evicted_and_when_expired() {
    use upgram_server::server::DOCUMENT_GRACE_SECS;

    let docs = tempfile::tempdir().unwrap();
    let config = Config { docs_dir: Some(docs.path().to_owned()), ..Config::default() };
    let validity = config.validity_secs;
    let mut one = OneDocumentWorker::new(config);
    let (shared, at) = (one.shared.clone(), one.at);
    let mut names = Vec::new();
    for (i, version) in ["1", "0.5"].into_iter().enumerate() {
        let (named, _) = one.fallback(i as u64, &query_body(&[("big", version)]));
        names.push(format!("{}.xml", named[0]));
        // At most one document is kept: the second evicts the first, file included.
        wait_for_files(docs.path(), &names[i..]);
    }
    assert_eq!(shared.metrics().documents_evicted, 1);
    shared.expire_documents(at + validity + DOCUMENT_GRACE_SECS - 1);
    wait_for_files(docs.path(), &names[1..]);
    shared.expire_documents(at + validity + DOCUMENT_GRACE_SECS);
    wait_for_files(docs.path(), &[]);
    assert_eq!(shared.documents_kept(), (0, 0));
}

#[test]
fn a_module_document_evicted_early_is_kept_again_before_a_reply_names_it() {
    // Room for one document: every new one evicts the one before.
    let mut one = OneDocumentWorker::new(Config::default());
    let mut module_form = 0;
    // big at 1 alone (one module document), then with core (two documents: no room for both,
    // so that answer gets a document of its own, evicting big's), then big at 1 alone again:
    // its module document was evicted and must be kept again before it is named.
    let queries: [&[(&str, &str)]; 4] =
        [&[("big", "1")], &[("big", "1"), ("core", "1.0")], &[("big", "1")], &[("big", "1"), ("core", "1.0")]];
    for (i, modules) in queries.into_iter().enumerate() {
        let (named, module_docs) = one.fallback(i as u64, &module_docs_query(modules));
        module_form += usize::from(module_docs);
        for sha256 in named {
            assert!(
                one.shared.document(&sha256).is_some(),
                "reply {i} names document {sha256}, which the server does not keep"
            );
        }
    }
    assert_eq!(module_form, 2, "big alone is answered with its module document both times");
    assert!(one.shared.metrics().documents_evicted >= 2);
}

fn module_docs_query(modules: &[(&str, &str)]) -> Vec<u8> {
    let asked = modules
        .iter()
        .map(|(id, version)| QueryModule { id: Cow::Owned((*id).into()), version: Some(v(version)), files: vec![] })
        .collect();
    Query { module_docs: true, ..Query::new(asked) }.to_vec()
}

#[test]
fn distinct_queries_sharing_a_module_question_point_at_one_module_document() {
    let server = start(|_| {});
    let socket = client();
    let keys = keys();
    let http = Http(reqwest::Client::new());
    let replies: Vec<(Vec<u8>, Vec<u8>)> = ["1.0", "1.1"]
        .iter()
        .map(|core| {
            let body = module_docs_query(&[("big", "1"), ("core", core)]);
            let reply = validated_exchange(&socket, server.udp, &body);
            (body, reply)
        })
        .collect();
    let decoded: Vec<_> = replies.iter().map(|(_, reply)| Datagram::decode(reply).unwrap()).collect();
    let pointers: Vec<(&Vec<u8>, &Fallback<'_>)> = replies
        .iter()
        .zip(&decoded)
        .map(|((body, _), decoded)| {
            let Message::Fallback(pointer) = &decoded.message else { panic!("a fallback, got {:?}", decoded.message) };
            let expect = Expectation { keys: &keys, query: Sha256Digest::of(body), nonce: None, now: now() };
            (body, pointer.verify(&expect).expect("signed fallback verifies"))
        })
        .collect();
    let named = |i: usize| pointers[i].1.modules.clone().expect("the module-document form").documents;
    let (first, second) = (named(0), named(1));
    assert_eq!(first.len(), 2);
    assert_eq!(first[0].module, "big");
    assert_eq!(first[0].sha256, second[0].sha256, "the same question, the same document");
    assert_ne!(first[1].sha256, second[1].sha256, "core 1.0 and core 1.1 are answered differently");
    // Three documents kept, not four: big's answer is kept once for both queries.
    assert_eq!(server.shared.documents_kept().0, 3);

    // Every document is served at the URL derived from its hash, and hashes to it; together they
    // are the answer.
    for (body, pointer) in pointers {
        let modules = pointer.modules.as_ref().unwrap();
        let fetched: Vec<Vec<u8>> =
            modules.documents.iter().map(|d| server.runtime.block_on(http.get(&modules.url(&d.sha256)))).collect();
        for (document, bytes) in modules.documents.iter().zip(&fetched) {
            assert_eq!(Sha256Digest::of(bytes), document.sha256);
        }
        let answer = pointer.open_module_documents(&fetched, now()).expect("the documents check out");
        let response = Response::decode(&answer).unwrap();
        assert_eq!(response.binding.query, Sha256Digest::of(body));
        assert_eq!(response.modules[0].status, Status::Update);
    }
}
