//! Batch-signed replies (SPEC.md §3.4, §10.3.1, §10.4): answers ready at the same time share one
//! Ed25519 signature over a Merkle root; each reply carries its leaf index and its audit path
//! (not the root, which the client recomputes), and verifies through the same entry point as a
//! reply signed alone.

use std::borrow::Cow;

use proptest::prelude::*;
use upgram_core::body::{Binding, ModuleAnswer, Query, QueryModule, Response, Status};
use upgram_core::limits::{MAX_BATCH_DEPTH, MAX_BATCH_LEN, MAX_BATCH_TRAILER_LEN, MAX_DATAGRAM_LEN};
use upgram_core::message::Expectation;
use upgram_core::sign::{BatchItem, BatchProof, KeyRing, Nonce, ReplySigner, SignatureBlock, VerifyError, leaf_hash};
use upgram_core::version::Version;
use upgram_core::wire::{Flags, Frame, MessageKind};
use upgram_core::{Datagram, DecodeError, Message, Sha256Digest};

const NOW: u64 = 1_764_000_000;

fn signer() -> ReplySigner {
    ReplySigner::from_seed(&[7; 32])
}

fn ring() -> KeyRing {
    let mut ring = KeyRing::new();
    ring.add(signer().verifying_key());
    ring
}

/// The query body of client `n`: each asks about its own version, so every answer differs.
fn query_body(n: usize) -> Vec<u8> {
    let version = format!("1.{n}");
    Query::new(vec![QueryModule {
        id: "core".into(),
        version: Some(Version::parse(&version).expect("version")),
        files: vec![],
    }])
    .to_vec()
}

fn answer_body(query: &[u8]) -> Vec<u8> {
    Response {
        binding: Binding { query: Sha256Digest::of(query), issued: NOW, expires: NOW + 300 },
        base: None,
        compact: false,
        modules: vec![ModuleAnswer::new(
            Cow::Borrowed("core"),
            Status::Current,
            Some(Version::parse("9.9").expect("v")),
        )],
    }
    .to_vec()
}

/// `n` distinct queries, their answers, and the nonce of each (every third is nonce-bound).
struct Batch {
    queries: Vec<Vec<u8>>,
    bodies: Vec<Vec<u8>>,
    nonces: Vec<Option<Nonce>>,
}

impl Batch {
    fn new(n: usize) -> Self {
        let queries: Vec<Vec<u8>> = (0..n).map(query_body).collect();
        let bodies = queries.iter().map(|q| answer_body(q)).collect();
        let nonces = (0..n).map(|i| (i % 3 == 2).then_some(Nonce([i as u8; 16]))).collect();
        Self { queries, bodies, nonces }
    }

    fn items(&self, room: usize) -> Vec<BatchItem<'_>> {
        self.bodies
            .iter()
            .zip(&self.nonces)
            .map(|(body, nonce)| BatchItem { kind: MessageKind::Response, nonce: nonce.as_ref(), body, room })
            .collect()
    }

    fn sign(&self) -> Vec<SignatureBlock> {
        signer().sign_batch(&self.items(MAX_DATAGRAM_LEN))
    }

    /// The reply datagram of member `i` with `block`.
    fn datagram(&self, i: usize, block: SignatureBlock) -> Vec<u8> {
        frame(&self.bodies[i], self.nonces[i], block)
    }

    /// Decodes and verifies a reply as the client of query `i` does.
    fn verify(&self, i: usize, bytes: &[u8]) -> Result<(), String> {
        let datagram = Datagram::decode(bytes).map_err(|e| e.name().to_owned())?;
        let Message::Response(reply) = &datagram.message else { return Err("not a response".into()) };
        let keys = ring();
        let expect =
            Expectation { keys: &keys, query: Sha256Digest::of(&self.queries[i]), nonce: self.nonces[i], now: NOW };
        reply.verify(&expect).map(|_| ()).map_err(|e| e.name().to_owned())
    }
}

fn frame(body: &[u8], nonce: Option<Nonce>, block: SignatureBlock) -> Vec<u8> {
    Frame::reply(MessageKind::Response, 42, body, nonce, block).to_vec().expect("reply fits")
}

/// Offset of the batch trailer (depth byte) in a reply without server cookie.
fn batch_offset(bytes: &[u8], nonce: bool) -> usize {
    let body_len = usize::from(u16::from_be_bytes([bytes[16], bytes[17]]));
    20 + body_len + if nonce { 16 } else { 0 } + SignatureBlock::LEN
}

fn assert_every_member_verifies(batch: &Batch, blocks: &[SignatureBlock]) {
    for (i, block) in blocks.iter().enumerate() {
        let bytes = batch.datagram(i, *block);
        assert!(bytes.len() <= MAX_DATAGRAM_LEN);
        assert_eq!(batch.verify(i, &bytes), Ok(()), "member {i} of {}", blocks.len());
    }
}

#[test]
fn a_batch_of_one_is_signed_alone_byte_for_byte() {
    let batch = Batch::new(1);
    let blocks = batch.sign();
    let alone = signer().sign(MessageKind::Response, None, &batch.bodies[0]);
    assert_eq!(blocks, [alone]);
    assert!(blocks[0].batch.is_none());
    let bytes = batch.datagram(0, blocks[0]);
    assert_eq!(u16::from_be_bytes([bytes[6], bytes[7]]) & Flags::BATCH, 0, "no BATCH flag");
    assert_eq!(bytes.len(), 20 + batch.bodies[0].len() + SignatureBlock::LEN);
    assert_eq!(batch.verify(0, &bytes), Ok(()));
}

#[test]
fn a_batch_of_two_shares_one_signature_and_each_reply_verifies() {
    let batch = Batch::new(2);
    let blocks = batch.sign();
    assert_eq!(blocks[0].signature, blocks[1].signature, "one signature for the batch");
    let proofs: Vec<BatchProof> = blocks.iter().map(|b| b.batch.expect("batch-signed")).collect();
    assert_eq!(proofs.iter().map(|p| (p.depth(), p.index())).collect::<Vec<_>>(), [(1, 0), (1, 1)]);
    let root = |i: usize| proofs[i].root_from(&leaf_hash(MessageKind::Response, None, &batch.bodies[i]));
    assert_eq!(root(0), root(1), "both paths lead to the one signed root");
    assert_every_member_verifies(&batch, &blocks);
    let bytes = batch.datagram(0, blocks[0]);
    assert_ne!(u16::from_be_bytes([bytes[6], bytes[7]]) & Flags::BATCH, 0, "BATCH flag set");
    // Depth, index and one path hash: the root is not carried.
    assert_eq!(BatchProof::overhead(1), 2 + 32);
    assert_eq!(bytes.len(), 20 + batch.bodies[0].len() + SignatureBlock::LEN + 2 + 32);
    assert_eq!(bytes[batch_offset(&bytes, false) + 2..], proofs[0].path()[0]);
}

#[test]
fn a_batch_of_the_maximum_verifies_and_fits_a_datagram() {
    let batch = Batch::new(MAX_BATCH_LEN);
    let blocks = batch.sign();
    assert!(blocks.iter().all(|b| b.signature == blocks[0].signature));
    for (i, block) in blocks.iter().enumerate() {
        let proof = block.batch.expect("batch-signed");
        assert_eq!((proof.depth(), proof.index()), (MAX_BATCH_DEPTH, i));
        assert_eq!(proof.encoded_len(), MAX_BATCH_TRAILER_LEN);
    }
    assert_eq!(MAX_BATCH_TRAILER_LEN, 2 + 6 * 32);
    assert_every_member_verifies(&batch, &blocks);
}

#[test]
fn batches_that_are_not_powers_of_two_and_longer_than_the_maximum_verify() {
    for n in [3, 5, 33, MAX_BATCH_LEN + 1, 2 * MAX_BATCH_LEN + 2] {
        let batch = Batch::new(n);
        let blocks = batch.sign();
        assert_eq!(blocks.len(), n);
        assert_every_member_verifies(&batch, &blocks);
        let signatures: std::collections::BTreeSet<[u8; 64]> = blocks.iter().map(|b| b.signature).collect();
        assert_eq!(signatures.len(), n.div_ceil(MAX_BATCH_LEN), "{n} answers: one signature per batch of 64");
    }
    // 65 answers: a full batch, then one answer signed alone.
    let blocks = Batch::new(MAX_BATCH_LEN + 1).sign();
    assert!(blocks[MAX_BATCH_LEN].batch.is_none());
}

#[test]
fn answers_without_room_for_the_batch_trailer_are_signed_alone() {
    let batch = Batch::new(4);
    let mut items = batch.items(BatchProof::overhead(2));
    items[1].room = BatchProof::overhead(1) - 1;
    let blocks = signer().sign_batch(&items);
    assert!(blocks[1].batch.is_none(), "no room: signed alone");
    assert_eq!(blocks[1], signer().sign(MessageKind::Response, None, &batch.bodies[1]));
    for i in [0, 2, 3] {
        assert_eq!(blocks[i].batch.expect("batched").depth(), 2);
    }
    assert_every_member_verifies(&batch, &blocks);
    // Answers with room for a short path only share small batches instead of a signature each.
    let batch = Batch::new(8);
    let mut items = batch.items(BatchProof::overhead(3));
    for item in items.iter_mut().skip(4) {
        item.room = BatchProof::overhead(1);
    }
    let blocks = signer().sign_batch(&items);
    assert_every_member_verifies(&batch, &blocks);
    assert!(blocks[..4].iter().all(|b| b.batch.as_ref().is_some_and(|p| p.depth() == 2)), "4 of room 3: depth 2");
    assert!(blocks[4..].iter().all(|b| b.batch.as_ref().is_some_and(|p| p.depth() == 1)), "room 1: pairs");
    let signatures: std::collections::BTreeSet<[u8; 64]> = blocks.iter().map(|b| b.signature).collect();
    assert_eq!(signatures.len(), 3, "one batch of 4 and two pairs");
    // With room for nothing, every answer is signed alone.
    let blocks = signer().sign_batch(&batch.items(0));
    assert!(blocks.iter().all(|b| b.batch.is_none()));
    assert_every_member_verifies(&batch, &blocks);
}

/// An answer with room for a short path only sits near the root of the same tree as answers
/// with more room, rather than taking a signature of its own.
#[test]
fn answers_with_less_room_sit_nearer_the_root_of_the_same_tree() {
    // Three answers with room for depth 3 and one with room for depth 1 only: one tree, the
    // tight answer the root's left child (32 of the 64 places), the others at depth 3 in the
    // right half (8 places each), the last place an empty leaf.
    let batch = Batch::new(4);
    let mut items = batch.items(BatchProof::overhead(3));
    items[1].room = BatchProof::overhead(1);
    let blocks = signer().sign_batch(&items);
    assert!(blocks.iter().all(|b| b.signature == blocks[0].signature), "one signature");
    let position = |i: usize| blocks[i].batch.map(|p| (p.depth(), p.index())).expect("batch-signed");
    assert_eq!([0, 1, 2, 3].map(position), [(3, 4), (1, 0), (3, 5), (3, 6)]);
    assert_every_member_verifies(&batch, &blocks);
    for (i, block) in blocks.iter().enumerate() {
        assert!(block.batch.expect("batched").encoded_len() <= items[i].room, "member {i} fits its room");
    }

    // Sixty answers with room for any depth and one with room for depth 4: one signature (the
    // tight one takes 4 of the 64 places), where a tree of one depth for all would need two.
    let batch = Batch::new(61);
    let mut items = batch.items(MAX_DATAGRAM_LEN);
    items[30].room = BatchProof::overhead(4);
    let blocks = signer().sign_batch(&items);
    let signatures: std::collections::BTreeSet<[u8; 64]> = blocks.iter().map(|b| b.signature).collect();
    assert_eq!(signatures.len(), 1);
    assert_eq!(blocks[30].batch.expect("batched").depth(), 4);
    assert!(blocks.iter().enumerate().filter(|(i, _)| *i != 30).all(|(_, b)| b.batch.is_some_and(|p| p.depth() == 6)));
    assert_every_member_verifies(&batch, &blocks);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Whatever the rooms, every reply fits its room and verifies, and the batches take the
    /// fewest signatures their leaves allow: the answers without room for any path one each,
    /// the others one per 64 places of the deepest level (a leaf at depth d takes 2^(6-d)).
    #[test]
    fn any_mix_of_rooms_verifies_within_each_room_with_the_fewest_signatures(
        depths in proptest::collection::vec(0usize..=MAX_BATCH_DEPTH + 1, 1..90),
    ) {
        let batch = Batch::new(depths.len());
        let mut items = batch.items(0);
        for (item, &depth) in items.iter_mut().zip(&depths) {
            item.room = if depth == 0 { BatchProof::overhead(1) - 1 } else { BatchProof::overhead(depth) };
        }
        let blocks = signer().sign_batch(&items);
        for (i, block) in blocks.iter().enumerate() {
            let bytes = batch.datagram(i, *block);
            prop_assert!(bytes.len() <= MAX_DATAGRAM_LEN);
            prop_assert_eq!(batch.verify(i, &bytes), Ok(()));
            let extra = block.batch.map_or(0, |p| p.encoded_len());
            prop_assert!(extra <= items[i].room, "member {} takes {} bytes of its {}", i, extra, items[i].room);
        }
        let alone = depths.iter().filter(|&&d| d == 0).count();
        let places: usize = depths.iter().filter(|&&d| d > 0).map(|&d| 1usize << (MAX_BATCH_DEPTH - d.min(MAX_BATCH_DEPTH))).sum();
        let signatures: std::collections::BTreeSet<[u8; 64]> = blocks.iter().map(|b| b.signature).collect();
        prop_assert_eq!(signatures.len(), alone + places.div_ceil(MAX_BATCH_LEN));
    }
}

#[test]
fn a_tampered_leaf_fails_as_bad_path() {
    let batch = Batch::new(4);
    let blocks = batch.sign();
    // Member 1's answer with member 0's trailer: signed root, but not this leaf.
    let swapped = frame(&batch.bodies[1], None, blocks[0]);
    assert_eq!(batch.verify(1, &swapped), Err("bad-path".into()));
    // A nonce-bound member's answer presented without its nonce: another leaf.
    let keys = ring();
    let key_id = signer().key_id();
    assert_eq!(
        keys.verify(MessageKind::Response, None, &batch.bodies[2], &blocks[2]),
        Err(VerifyError::BadPath { key_id, index: 2 })
    );
    // The same body as a fallback: the kind is in the leaf.
    assert_eq!(
        keys.verify(MessageKind::Fallback, batch.nonces[0].as_ref(), &batch.bodies[0], &blocks[0]),
        Err(VerifyError::BadPath { key_id, index: 0 })
    );
}

#[test]
fn a_tampered_path_fails_as_bad_path() {
    let batch = Batch::new(8);
    let blocks = batch.sign();
    let bytes = batch.datagram(0, blocks[0]);
    let path_start = batch_offset(&bytes, false) + BatchProof::FIXED_LEN;
    for level in 0..3 {
        let mut tampered = bytes.clone();
        tampered[path_start + 32 * level + 5] ^= 0x01;
        assert_eq!(batch.verify(0, &tampered), Err("bad-path".into()), "level {level}");
    }
}

/// Without a carried root, a batch signature is checked over the root the path leads to: an
/// altered signature cannot be told from an altered path, and both are `bad-path`. A reply
/// signed alone keeps `bad-signature`.
#[test]
fn a_tampered_signature_fails_as_bad_path_in_a_batch_and_bad_signature_alone() {
    let batch = Batch::new(8);
    let blocks = batch.sign();
    let bytes = batch.datagram(3, blocks[3]);
    let signature_start = batch_offset(&bytes, false) - 64;
    for at in [0, 31, 63] {
        let mut tampered = bytes.clone();
        tampered[signature_start + at] ^= 0x80;
        assert_eq!(batch.verify(3, &tampered), Err("bad-path".into()), "signature byte {at}");
    }
    let alone = batch.datagram(3, signer().sign(MessageKind::Response, None, &batch.bodies[3]));
    let mut tampered = alone.clone();
    tampered[alone.len() - 1] ^= 0x80;
    assert_eq!(batch.verify(3, &alone), Ok(()));
    assert_eq!(batch.verify(3, &tampered), Err("bad-signature".into()));
}

#[test]
fn a_wrong_index_fails() {
    let batch = Batch::new(8);
    let blocks = batch.sign();
    let bytes = batch.datagram(0, blocks[0]);
    let at = batch_offset(&bytes, false) + 1;
    // Another position inside the tree: the path leads elsewhere.
    for index in 1..8 {
        let mut moved = bytes.clone();
        moved[at] = index;
        assert_eq!(batch.verify(0, &moved), Err("bad-path".into()), "index {index}");
    }
    // A position outside a tree of depth 3: refused by the decoder.
    let mut outside = bytes.clone();
    outside[at] = 8;
    assert_eq!(Frame::decode(&outside), Err(DecodeError::WrongPosition { index: 8, depth: 3, leaves: 8 }));
    assert_eq!(batch.verify(0, &outside), Err("wrong-position".into()));
}

#[test]
fn a_path_too_long_or_empty_is_refused() {
    let batch = Batch::new(MAX_BATCH_LEN);
    let blocks = batch.sign();
    let bytes = batch.datagram(0, blocks[0]);
    let at = batch_offset(&bytes, false);
    // One more level, with its 32 bytes: refused before the length is even compared.
    let mut longer = bytes.clone();
    longer[at] = (MAX_BATCH_DEPTH + 1) as u8;
    longer.extend_from_slice(&[0xab; 32]);
    assert_eq!(Frame::decode(&longer), Err(DecodeError::PathTooLong { depth: 7, max: MAX_BATCH_DEPTH }));
    for depth in [7u8, 8, 200, 255] {
        let mut claimed = bytes.clone();
        claimed[at] = depth;
        assert_eq!(Datagram::decode(&claimed).map(|_| ()).map_err(|e| e.name()), Err("path-too-long"), "{depth}");
    }
    let mut empty = bytes[..at + BatchProof::FIXED_LEN].to_vec();
    empty[at] = 0;
    empty[at + 1] = 0;
    assert_eq!(Frame::decode(&empty), Err(DecodeError::EmptyPath));
    // The API refuses to build such proofs.
    assert_eq!(
        BatchProof::new(0, &[[0; 32]; MAX_BATCH_DEPTH + 1]),
        Err(DecodeError::PathTooLong { depth: 7, max: MAX_BATCH_DEPTH })
    );
    assert_eq!(BatchProof::new(0, &[]), Err(DecodeError::EmptyPath));
    assert_eq!(BatchProof::new(2, &[[0; 32]]), Err(DecodeError::WrongPosition { index: 2, depth: 1, leaves: 2 }));
}

#[test]
fn a_batch_trailer_cut_short_is_truncated() {
    let batch = Batch::new(4);
    let blocks = batch.sign();
    let bytes = batch.datagram(0, blocks[0]);
    let at = batch_offset(&bytes, false);
    for cut in [at + 1, at + BatchProof::FIXED_LEN, bytes.len() - 1] {
        assert_eq!(Datagram::decode(&bytes[..cut]).map(|_| ()).map_err(|e| e.name()), Err("truncated"), "cut at {cut}");
    }
}

#[test]
fn a_root_signature_is_never_a_single_answer_signature() {
    let batch = Batch::new(2);
    let blocks = batch.sign();
    let keys = ring();
    // The batch's signature without the batch trailer: a single-answer signature it is not.
    let stripped = SignatureBlock { batch: None, ..blocks[0] };
    assert_eq!(
        keys.verify(MessageKind::Response, None, &batch.bodies[0], &stripped),
        Err(VerifyError::BadSignature { key_id: stripped.key_id })
    );
    // A single-answer signature under a genuine batch trailer: the signature does not cover
    // the root the path leads to.
    let alone = signer().sign(MessageKind::Response, None, &batch.bodies[0]);
    let forged = SignatureBlock { batch: blocks[0].batch, ..alone };
    assert_eq!(
        keys.verify(MessageKind::Response, None, &batch.bodies[0], &forged),
        Err(VerifyError::BadPath { key_id: alone.key_id, index: 0 })
    );
}

#[test]
fn batch_signed_replies_decode_reencode_and_serialize_their_trailer() {
    let batch = Batch::new(3);
    let blocks = batch.sign();
    let bytes = batch.datagram(2, blocks[2]);
    let datagram = Datagram::decode(&bytes).expect("decodes");
    let mut again = Vec::new();
    datagram.encode(&mut again).expect("re-encodes");
    assert_eq!(again, bytes);
    let json = serde_json::to_value(&datagram).expect("json");
    let proof = &json["message"]["signature"]["batch"];
    assert_eq!(proof["depth"], 2);
    assert_eq!(proof["index"], 2);
    assert_eq!(proof["path"].as_array().expect("path").len(), 2);
    // A reply signed alone has no "batch" key at all (older vectors stay byte-identical).
    let alone = frame(&batch.bodies[0], None, signer().sign(MessageKind::Response, None, &batch.bodies[0]));
    let json = serde_json::to_value(Datagram::decode(&alone).expect("decodes")).expect("json");
    assert!(json["message"]["signature"].get("batch").is_none());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]

    /// Any batch of random answers: every member verifies; any flipped bit of its trailer
    /// (nonce, key id, signature, depth, index, path) or of its body makes it fail.
    #[test]
    fn any_batch_verifies_for_each_member_and_fails_for_any_flipped_trailer_byte(
        bodies in prop::collection::vec(prop::collection::vec(any::<u8>(), 1..200), 1..=72),
        nonce_every in 1usize..4,
        member in any::<prop::sample::Index>(),
        flip in any::<prop::sample::Index>(),
        bit in 0u8..8,
    ) {
        let nonces: Vec<Option<Nonce>> =
            (0..bodies.len()).map(|i| (i % nonce_every == 0).then_some(Nonce([i as u8 ^ 0x5a; 16]))).collect();
        let kinds: Vec<MessageKind> =
            (0..bodies.len()).map(|i| if i % 5 == 4 { MessageKind::Fallback } else { MessageKind::Response }).collect();
        let items: Vec<BatchItem<'_>> = bodies
            .iter()
            .zip(&nonces)
            .zip(&kinds)
            .map(|((body, nonce), &kind)| BatchItem { kind, nonce: nonce.as_ref(), body, room: MAX_DATAGRAM_LEN })
            .collect();
        let blocks = signer().sign_batch(&items);
        let keys = ring();
        for (i, block) in blocks.iter().enumerate() {
            prop_assert_eq!(keys.verify(kinds[i], nonces[i].as_ref(), &bodies[i], block), Ok(()));
        }
        let i = member.index(bodies.len());
        let original = Frame::reply(kinds[i], 1, &bodies[i], nonces[i], blocks[i]).to_vec().expect("fits");
        let body_start = 20;
        let position = body_start + flip.index(original.len() - body_start);
        let mut flipped = original.clone();
        flipped[position] ^= 1 << bit;
        let outcome = Frame::decode(&flipped).map_err(|e| e.name().to_owned()).and_then(|frame| {
            if frame.nonce != nonces[i] {
                return Err("nonce-mismatch".to_owned());
            }
            let block = frame.signature.expect("signed kind");
            keys.verify(frame.kind, frame.nonce.as_ref(), frame.body, &block).map_err(|e| e.name().to_owned())
        });
        prop_assert!(outcome.is_err(), "flipped bit {} of byte {} still verifies", bit, position);
    }
}

proptest! {
    /// Any batch trailer behind a valid header and a real answer, whatever its depth, index,
    /// path bytes and length: a typed decode error or a verification error, never a
    /// panic, and never a reply that verifies.
    #[test]
    fn arbitrary_batch_trailers_are_refused_without_panic(
        depth in any::<u8>(),
        index in any::<u8>(),
        tail in prop::collection::vec(any::<u8>(), 0..260),
        flags in 0u16..16,
    ) {
        let batch = Batch::new(1);
        let single = batch.sign()[0];
        let mut bytes = batch.datagram(0, single);
        bytes[7] = (flags | Flags::BATCH) as u8 & 0x0f;
        bytes.push(depth);
        bytes.push(index);
        bytes.extend_from_slice(&tail);
        if let Ok(datagram) = Datagram::decode(&bytes)
            && let Message::Response(reply) = &datagram.message
        {
            let keys = ring();
            let expect = Expectation { keys: &keys, query: Sha256Digest::of(&batch.queries[0]), nonce: reply.nonce, now: NOW };
            prop_assert!(reply.verify(&expect).is_err());
        }
    }
}

#[test]
fn a_remembered_root_spares_the_signature_check_but_never_a_path_or_another_signature() {
    let batch = Batch::new(8);
    let blocks = batch.sign();
    let keys = ring();
    for (i, block) in blocks.iter().enumerate() {
        assert_eq!(keys.verify(MessageKind::Response, batch.nonces[i].as_ref(), &batch.bodies[i], block), Ok(()));
    }
    assert_eq!(keys.remembered_roots(), 1, "eight answers of one batch: one root verified and kept");
    // The root is remembered, yet a member's answer with another's path still fails.
    let key_id = signer().key_id();
    assert_eq!(
        keys.verify(MessageKind::Response, batch.nonces[1].as_ref(), &batch.bodies[1], &blocks[0]),
        Err(VerifyError::BadPath { key_id, index: 0 })
    );
    // The same root under other signature bytes is checked again, and fails.
    let mut forged = blocks[2];
    forged.signature[10] ^= 1;
    assert_eq!(
        keys.verify(MessageKind::Response, batch.nonces[2].as_ref(), &batch.bodies[2], &forged),
        Err(VerifyError::BadPath { key_id, index: 2 })
    );
    assert_eq!(keys.remembered_roots(), 1);
    // A copy of the ring starts with nothing remembered.
    assert_eq!(keys.clone().remembered_roots(), 0);
}
