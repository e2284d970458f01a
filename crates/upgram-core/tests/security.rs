//! Reply authenticity and anti-amplification (SPEC.md §10): signatures, the binding of a reply
//! to its query, the freeze window, nonce-bound replies, key rotation, and stateless cookies.

use std::borrow::Cow;
use std::net::IpAddr;

use upgram_core::body::{Binding, ModuleAnswer, Query, QueryModule, Response, Status};
use upgram_core::cookie::{
    COOKIE_LIFETIME_SECS, ClientCookie, CookieCheck, CookieSecret, check_server_cookie, make_server_cookie,
    within_amplification_limit,
};
use upgram_core::fallback::{ReplyShape, prepare_reply};
use upgram_core::limits::{MAX_DATAGRAM_LEN, MIN_UNRESTRICTED_QUERY_LEN};
use upgram_core::message::{Expectation, SignedReply};
use upgram_core::sign::{KeyRing, Nonce, ReplySigner, VerifyError};
use upgram_core::version::Version;
use upgram_core::wire::{Frame, QueryOptions};
use upgram_core::{Datagram, Message, Sha256Digest};

const NOW: u64 = 1_764_000_000;

fn query_body() -> Vec<u8> {
    Query::new(vec![QueryModule { id: "core".into(), version: Some(Version::parse("1.2").expect("v")), files: vec![] }])
        .to_vec()
}

fn answer(query: &[u8], issued: u64, expires: u64) -> Response<'static> {
    Response {
        binding: Binding { query: Sha256Digest::of(query), issued, expires },
        base: None,
        compact: false,
        modules: vec![ModuleAnswer::new(
            Cow::Borrowed("core"),
            Status::Current,
            Some(Version::parse("1.2").expect("v")),
        )],
    }
}

fn signer(seed: u8) -> ReplySigner {
    ReplySigner::from_seed(&[seed; 32])
}

fn ring(signers: &[&ReplySigner]) -> KeyRing {
    let mut ring = KeyRing::new();
    for s in signers {
        ring.add(s.verifying_key());
    }
    ring
}

/// Signs `response` with `signer` and returns the reply datagram's bytes.
fn reply(response: &Response<'_>, signer: &ReplySigner, nonce: Option<Nonce>) -> Vec<u8> {
    let shape = ReplyShape { nonce, server_cookie: false };
    let prepared = prepare_reply(response, signer, shape, |_| vec!["https://u.example/d".into()]).expect("prepares");
    prepared.frame(42, None).to_vec().expect("fits")
}

fn signed(bytes: &[u8]) -> SignedReply<'_, Response<'_>> {
    match Datagram::decode(bytes).expect("decodes").message {
        Message::Response(reply) => reply,
        other => panic!("expected a response, got {other:?}"),
    }
}

fn expect<'k>(keys: &'k KeyRing, query: &[u8], nonce: Option<Nonce>, now: u64) -> Expectation<'k> {
    Expectation { keys, query: Sha256Digest::of(query), nonce, now }
}

#[test]
fn a_genuine_reply_verifies() {
    let (s, q) = (signer(1), query_body());
    let keys = ring(&[&s]);
    let bytes = reply(&answer(&q, NOW, NOW + 300), &s, None);
    let reply = signed(&bytes);
    let response = reply.verify(&expect(&keys, &q, None, NOW + 10)).expect("genuine");
    assert_eq!(response.modules[0].status, Status::Current);
}

#[test]
fn every_altered_byte_of_a_signed_reply_is_caught() {
    let (s, q) = (signer(1), query_body());
    let keys = ring(&[&s]);
    let bytes = reply(&answer(&q, NOW, NOW + 300), &s, None);
    // Flip each byte after the header's request id (which is not signed on purpose).
    for i in 16..bytes.len() {
        let mut forged = bytes.clone();
        forged[i] ^= 0x01;
        let Ok(datagram) = Datagram::decode(&forged) else {
            continue;
        };
        let Message::Response(reply) = datagram.message else {
            continue;
        };
        assert!(reply.verify(&expect(&keys, &q, None, NOW)).is_err(), "flipping byte {i} went unnoticed");
    }
}

#[test]
fn unknown_keys_and_wrong_keys_are_refused() {
    let (s, other, q) = (signer(1), signer(2), query_body());
    let bytes = reply(&answer(&q, NOW, NOW + 300), &other, None);
    let keys = ring(&[&s]);
    assert!(matches!(signed(&bytes).verify(&expect(&keys, &q, None, NOW)), Err(VerifyError::UnknownKey { .. })));
}

#[test]
fn key_rotation_accepts_old_and_new_keys_by_id() {
    let (old, new, q) = (signer(1), signer(2), query_body());
    let keys = ring(&[&old, &new]);
    for s in [&old, &new] {
        let bytes = reply(&answer(&q, NOW, NOW + 300), s, None);
        signed(&bytes).verify(&expect(&keys, &q, None, NOW)).expect("both keys during rotation");
    }
    let after = ring(&[&new]);
    let bytes = reply(&answer(&q, NOW, NOW + 300), &old, None);
    assert!(signed(&bytes).verify(&expect(&after, &q, None, NOW)).is_err(), "old key retired");
}

#[test]
fn a_reply_to_another_query_is_refused() {
    let s = signer(1);
    let keys = ring(&[&s]);
    let other_query = b"<query><module id=\"core\" version=\"0.1\"/></query>";
    let bytes = reply(&answer(other_query, NOW, NOW + 300), &s, None);
    let error = signed(&bytes).verify(&expect(&keys, &query_body(), None, NOW)).expect_err("bound to another query");
    assert_eq!(error.name(), "wrong-query");
}

#[test]
fn the_freeze_window_is_enforced() {
    let (s, q) = (signer(1), query_body());
    let keys = ring(&[&s]);
    let cases = [
        (NOW, NOW + 300, NOW + 300, "expired"),
        (NOW, NOW + 300, NOW + 10_000, "expired"),
        (NOW + 61, NOW + 300, NOW, "not-yet-valid"),
        (NOW, NOW + 601, NOW + 1, "window-too-long"),
    ];
    for (issued, expires, now, name) in cases {
        let bytes = reply(&answer(&q, issued, expires), &s, None);
        let error = signed(&bytes).verify(&expect(&keys, &q, None, now)).expect_err(name);
        assert_eq!(error.name(), name, "issued {issued} expires {expires} now {now}");
    }
    let bytes = reply(&answer(&q, NOW + 60, NOW + 600), &s, None);
    signed(&bytes).verify(&expect(&keys, &q, None, NOW)).expect("60 s of clock skew is tolerated");
}

#[test]
fn identical_queries_share_one_signature_in_echo_bound_mode() {
    let (s, q) = (signer(1), query_body());
    let prepared = prepare_reply(&answer(&q, NOW, NOW + 300), &s, ReplyShape::default(), |_| vec![]).expect("prepares");
    let first = prepared.frame(1, None).to_vec().expect("fits");
    let second = prepared.frame(2, None).to_vec().expect("fits");
    assert_ne!(first, second, "request ids differ");
    assert_eq!(first[16..], second[16..], "everything after the request id is shared");
    let keys = ring(&[&s]);
    for bytes in [&first, &second] {
        signed(bytes).verify(&expect(&keys, &q, None, NOW)).expect("both verify");
    }
}

#[test]
fn nonce_bound_replies_verify_only_with_their_nonce() {
    let (s, q) = (signer(1), query_body());
    let keys = ring(&[&s]);
    let nonce = Nonce([5; 16]);
    let bytes = reply(&answer(&q, NOW, NOW + 300), &s, Some(nonce));
    signed(&bytes).verify(&expect(&keys, &q, Some(nonce), NOW)).expect("own nonce");
    let error = signed(&bytes).verify(&expect(&keys, &q, Some(Nonce([6; 16])), NOW)).expect_err("another nonce");
    assert_eq!(error.name(), "nonce-mismatch");
    // An echo-bound reply does not satisfy a client that asked for a nonce.
    let plain = reply(&answer(&q, NOW, NOW + 300), &s, None);
    assert_eq!(
        signed(&plain).verify(&expect(&keys, &q, Some(nonce), NOW)).expect_err("no nonce").name(),
        "nonce-mismatch"
    );
    // A nonce the client never sent is refused too: the reply answers someone else's query.
    assert_eq!(signed(&bytes).verify(&expect(&keys, &q, None, NOW)).expect_err("unrequested").name(), "nonce-mismatch");
    // Moving the nonce onto another reply breaks the signature.
    let mut swapped = bytes.clone();
    let at = swapped.len() - 72 - 16;
    swapped[at] ^= 0xff;
    let forged_nonce = Nonce(swapped[at..at + 16].try_into().expect("16 bytes"));
    assert_eq!(
        signed(&swapped).verify(&expect(&keys, &q, Some(forged_nonce), NOW)).expect_err("forged").name(),
        "bad-signature"
    );
}

#[test]
fn server_cookies_are_bound_to_client_cookie_address_and_time() {
    let secret = CookieSecret([0x42; 32]);
    let client = ClientCookie([1; 8]);
    let ip: IpAddr = "192.0.2.7".parse().expect("ip");
    let cookie = make_server_cookie(&secret, &client, ip, NOW);
    let check = |secrets: &[&CookieSecret], client: &ClientCookie, ip: IpAddr, now: u64| {
        check_server_cookie(secrets, client, &cookie, ip, now)
    };
    assert_eq!(check(&[&secret], &client, ip, NOW), CookieCheck::Valid { renew: false });
    assert_eq!(check(&[&secret], &client, ip, NOW + COOKIE_LIFETIME_SECS), CookieCheck::Valid { renew: true });
    assert_eq!(check(&[&secret], &client, ip, NOW + COOKIE_LIFETIME_SECS + 1), CookieCheck::Stale);
    assert_eq!(check(&[&secret], &client, ip, NOW - 1000), CookieCheck::Stale, "from the future");
    assert_eq!(check(&[&secret], &ClientCookie([2; 8]), ip, NOW), CookieCheck::Invalid);
    assert_eq!(check(&[&secret], &client, "192.0.2.8".parse().expect("ip"), NOW), CookieCheck::Invalid);
    assert_eq!(check(&[&CookieSecret([0x43; 32])], &client, ip, NOW), CookieCheck::Invalid);
    // Rotation: the previous secret still validates; and any server with the secret agrees.
    assert_eq!(check(&[&CookieSecret([0x43; 32]), &secret], &client, ip, NOW), CookieCheck::Valid { renew: false });
    let v6: IpAddr = "::ffff:192.0.2.7".parse().expect("ip");
    assert_eq!(
        check(&[&secret], &client, v6, NOW),
        CookieCheck::Valid { renew: false },
        "IPv4-mapped is the same address"
    );
}

#[test]
fn amplification_limit_and_padding() {
    assert!(within_amplification_limit(300, 100));
    assert!(!within_amplification_limit(301, 100));
    assert!(within_amplification_limit(MAX_DATAGRAM_LEN, MIN_UNRESTRICTED_QUERY_LEN));
    let body = query_body();
    let padded = Frame::query(1, &body, &QueryOptions { pad_to: MIN_UNRESTRICTED_QUERY_LEN, ..Default::default() });
    let bytes = padded.to_vec().expect("fits");
    assert_eq!(bytes.len(), MIN_UNRESTRICTED_QUERY_LEN);
    assert!(within_amplification_limit(MAX_DATAGRAM_LEN, bytes.len()), "a padded query may receive any reply");
    let challenge = Frame::cookie_challenge(
        1,
        Some(ClientCookie([1; 8])),
        make_server_cookie(&CookieSecret([0; 32]), &ClientCookie([1; 8]), "::1".parse().expect("ip"), NOW),
    );
    let minimal =
        Frame::query(1, &body, &QueryOptions { client_cookie: Some(ClientCookie([1; 8])), ..Default::default() });
    assert!(
        challenge.encoded_len() <= minimal.encoded_len(),
        "a cookie challenge is never larger than the smallest query with a cookie"
    );
}
