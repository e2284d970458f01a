//! The fuzz targets of upgram-core, as plain functions.
//!
//! Each `fuzz_targets/*.rs` calls one of these; `tests/corpus.rs` replays every committed corpus
//! file and every crash ever found through the same functions on the stable toolchain. A target
//! fails by panicking: on any panic inside the decoders (Q1), and on a broken invariant checked
//! here (a re-encoding that differs, an order that is not total).

use std::cmp::Ordering;

use upgram_core::body::{ErrorBody, Fallback, Query, Report, Response};
use upgram_core::limits::{MAX_BATCH_DEPTH, MAX_DATAGRAM_LEN};
use upgram_core::message::Expectation;
use upgram_core::records::{RecordDelta, RecordFile, apply_delta, diff, merge};
use upgram_core::sign::{BatchItem, BatchProof, KeyRing, Nonce, ReplySigner};
use upgram_core::version::Version;
use upgram_core::wire::{Frame, MessageKind};
use upgram_core::{Datagram, Message};

/// Whole datagrams: decode, and if that succeeds, the re-encoding gives the same bytes and the
/// body's canonical form decodes to the same value.
pub fn datagram(data: &[u8]) {
    let Ok(datagram) = Datagram::decode(data) else {
        return;
    };
    let mut again = Vec::new();
    datagram.encode(&mut again).expect("a decoded datagram re-encodes");
    assert_eq!(again, data, "re-encoding differs");
    match &datagram.message {
        Message::Query(q) => assert_eq!(Query::decode(&q.query.to_vec()).expect("canonical query decodes"), q.query),
        Message::Response(r) => check_response(r.body_unverified()),
        Message::Fallback(f) => {
            let body = f.body_unverified();
            assert_eq!(&Fallback::decode(&body.to_vec()).expect("canonical fallback decodes"), body);
        }
        Message::Error(e) => assert_eq!(&ErrorBody::decode(&e.to_vec()).expect("canonical error decodes"), e),
        Message::Report(r) => {
            let canonical = r.report.to_vec();
            let again = Report::decode(&canonical).expect("canonical report decodes");
            assert_eq!(again, r.report, "canonical report decodes to another value");
            assert_eq!(again.to_vec(), canonical, "canonical encoding is not stable");
        }
        Message::CookieChallenge(_) | Message::ReportAck => {}
    }
}

fn check_response(response: &Response<'_>) {
    let canonical = response.to_vec();
    let again = Response::decode(&canonical).expect("canonical response decodes");
    assert_eq!(&again, response, "canonical response decodes to another value");
    assert_eq!(again.to_vec(), canonical, "canonical encoding is not stable");
}

/// Fallback documents (the `<response>` schema, up to 4 MiB).
pub fn document(data: &[u8]) {
    if let Ok(response) = Response::decode(data) {
        check_response(&response);
    }
}

/// Versions: parsing, display round trip, and the total order on pairs.
///
/// The input is split at its first `\n` into two candidate versions.
pub fn version(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (a, b) = text.split_once('\n').unwrap_or((text, ""));
    let (Ok(a), b) = (Version::parse(a), Version::parse(b)) else {
        return;
    };
    assert_eq!(a.cmp(&a), Ordering::Equal);
    assert_eq!(Version::parse(&a.to_string()).expect("display parses"), a);
    if let Ok(b) = b {
        assert_eq!(a.cmp(&b), b.cmp(&a).reverse(), "order is not antisymmetric");
        assert_eq!(a == b, a.cmp(&b) == Ordering::Equal, "equality disagrees with the order");
    }
}

/// Record files and deltas. The first two bytes (little endian) say where the input splits into
/// a base file and a delta; both are decoded, merged and applied.
pub fn records(data: &[u8]) {
    let Some((head, rest)) = data.split_first_chunk::<2>() else {
        return;
    };
    let split = usize::from(u16::from_le_bytes(*head)).min(rest.len());
    let (base, delta) = rest.split_at(split);
    let _ = apply_delta(base, delta);
    let Ok(base_file) = RecordFile::decode(base) else {
        return;
    };
    if let Ok(parsed) = RecordDelta::decode(delta)
        && let Ok(merged) = merge(&base_file, &parsed)
    {
        let mut bytes = Vec::new();
        merged.encode(&mut bytes);
        assert_eq!(RecordFile::decode(&bytes).expect("merged file decodes"), merged);
    }
    if let Ok(other) = RecordFile::decode(delta) {
        let forward = diff(&base_file, &other);
        assert_eq!(
            merge(&base_file, &forward).expect("a diff merges onto its base"),
            other,
            "merge(a, diff(a, b)) != b"
        );
    }
}

/// Decode, encode, decode for every body type: the canonical form is a fixed point.
pub fn roundtrip(data: &[u8]) {
    if let Ok(query) = Query::decode(data) {
        let bytes = query.to_vec();
        let again = Query::decode(&bytes).expect("canonical query decodes");
        assert_eq!(again, query);
        assert_eq!(again.to_vec(), bytes);
    }
    if let Ok(response) = Response::decode(data) {
        check_response(&response);
    }
    if let Ok(fallback) = Fallback::decode(data) {
        let bytes = fallback.to_vec();
        assert_eq!(Fallback::decode(&bytes).expect("canonical fallback decodes"), fallback);
    }
    if let Ok(error) = ErrorBody::decode(data) {
        let bytes = error.to_vec();
        assert_eq!(ErrorBody::decode(&bytes).expect("canonical error decodes"), error);
    }
    if let Ok(report) = Report::decode(data) {
        let bytes = report.to_vec();
        let again = Report::decode(&bytes).expect("canonical report decodes");
        assert_eq!(again, report);
        assert_eq!(again.to_vec(), bytes);
    }
}

/// The signer of the test vectors (SPEC.md §11): seed 00 01 … 1f.
fn test_signer() -> ReplySigner {
    ReplySigner::from_seed(&std::array::from_fn(|i| i as u8))
}

/// The room a fuzzed answer has for its batch trailer, from its first byte: none (signed
/// alone), room for a path of 1 to 6 hashes (a leaf at most that deep), or a whole datagram.
fn room(body: &[u8]) -> usize {
    match body.first().map(|b| b % 9) {
        Some(0) => BatchProof::overhead(1) - 1,
        Some(depth @ 1..=6) => BatchProof::overhead(usize::from(depth)),
        _ => MAX_DATAGRAM_LEN,
    }
}

/// Batch signatures (SPEC.md §10.3.1), from two sides.
///
/// 1. The input as a datagram: a signed reply that decodes is verified against the test key,
///    for the query the reply says it answers; a verified batch-signed reply must carry a
///    well-formed batch trailer. Nothing may panic.
/// 2. The input as a batch: its first byte gives the number of answers (1-80) and the rest is
///    cut into that many bodies, each with the room its first byte gives; every answer is
///    signed with `sign_batch` and must verify with a path that fits its room, and
///    the datagram of one member with one flipped trailer bit must not.
pub fn batch(data: &[u8]) {
    let mut keys = KeyRing::new();
    keys.add(test_signer().verifying_key());
    verify_datagram(data, &keys);
    let Some((&head, rest)) = data.split_first() else {
        return;
    };
    let count = usize::from(head % 80) + 1;
    let chunk = rest.len().div_ceil(count).max(1);
    let bodies: Vec<&[u8]> =
        (0..count).map(|i| rest.get(i * chunk..((i + 1) * chunk).min(rest.len())).unwrap_or(&[])).collect();
    let nonces: Vec<Option<Nonce>> =
        (0..count).map(|i| (i % 3 == usize::from(head % 3)).then_some(Nonce([i as u8; 16]))).collect();
    let kind = |i: usize| {
        if (usize::from(head) + i).is_multiple_of(4) { MessageKind::Fallback } else { MessageKind::Response }
    };
    let items: Vec<BatchItem<'_>> = (0..count)
        .map(|i| BatchItem { kind: kind(i), nonce: nonces[i].as_ref(), body: bodies[i], room: room(bodies[i]) })
        .collect();
    let blocks = test_signer().sign_batch(&items);
    assert_eq!(blocks.len(), count, "one signature block per answer");
    for (i, block) in blocks.iter().enumerate() {
        assert_eq!(keys.verify(kind(i), nonces[i].as_ref(), bodies[i], block), Ok(()), "member {i} verifies");
        if let Some(proof) = &block.batch {
            assert!((1..=MAX_BATCH_DEPTH).contains(&proof.depth()) && proof.index() < 1 << proof.depth());
            assert!(proof.encoded_len() <= items[i].room, "member {i}'s path fits its room");
        }
    }
    let member = usize::from(*rest.last().unwrap_or(&0)) % count;
    let Ok(bytes) = Frame::reply(kind(member), 1, bodies[member], nonces[member], blocks[member]).to_vec() else {
        return;
    };
    let trailer_start = 20 + bodies[member].len();
    let position = trailer_start + usize::from(*rest.first().unwrap_or(&0)) * 7 % (bytes.len() - trailer_start);
    let mut flipped = bytes;
    flipped[position] ^= 1 << (head % 8);
    if let Ok(frame) = Frame::decode(&flipped)
        && frame.nonce == nonces[member]
        && let Some(block) = &frame.signature
    {
        assert!(
            keys.verify(frame.kind, frame.nonce.as_ref(), frame.body, block).is_err(),
            "a flipped trailer bit verifies"
        );
    }
}

/// Verifies a decodable signed reply against `keys`, for the query it claims to answer.
fn verify_datagram(data: &[u8], keys: &KeyRing) {
    let Ok(datagram) = Datagram::decode(data) else {
        return;
    };
    let (verified, signature) = match &datagram.message {
        Message::Response(reply) => {
            let binding = &reply.body_unverified().binding;
            let expect = Expectation { keys, query: binding.query, nonce: reply.nonce, now: binding.issued };
            (reply.verify(&expect).is_ok(), reply.signature)
        }
        Message::Fallback(reply) => {
            let binding = &reply.body_unverified().binding;
            let expect = Expectation { keys, query: binding.query, nonce: reply.nonce, now: binding.issued };
            (reply.verify(&expect).is_ok(), reply.signature)
        }
        _ => return,
    };
    if verified && let Some(proof) = &signature.batch {
        assert!((1..=MAX_BATCH_DEPTH).contains(&proof.depth()) && proof.index() < 1 << proof.depth());
    }
}

/// The base every `patch` input is applied to: 4 KiB of text-like bytes with some structure.
pub fn patch_base() -> Vec<u8> {
    (0..4096u32).map(|i| b"upgram patch base "[(i % 18) as usize] ^ ((i / 256) as u8 & 7)).collect()
}

/// The largest result a `patch` input may declare: above it the declared size is a fixed small one.
pub const PATCH_CAP: u64 = 64 * 1024;

/// Binary patches: the input, as a patch, is applied to [`patch_base`]. The signed size is the
/// one the patch's header declares when that is at most [`PATCH_CAP`], else 1024 bytes. It must
/// fail with an error or give exactly the signed number of bytes, never writing more, never
/// panicking.
pub fn patch(data: &[u8]) {
    use upgram_client::patch::{Expected, Limits, apply_to_writer, declared_result_size};
    use upgram_core::Sha256Digest;

    let base = patch_base();
    let declared = declared_result_size(data).filter(|&size| size <= PATCH_CAP).unwrap_or(1024);
    let expected =
        Expected { base_sha256: Sha256Digest([0; 32]), result_sha256: Sha256Digest([0; 32]), result_size: declared };
    let limits = Limits { max_base: 4096, max_result: PATCH_CAP };
    let mut out = Vec::new();
    let outcome = apply_to_writer(&base, data, &expected, &limits, &mut out);
    assert!(out.len() as u64 <= declared, "{} bytes written, {declared} declared", out.len());
    if outcome.is_ok() {
        assert_eq!(out.len() as u64, declared, "an applied patch gives the declared size");
    }
}
