//! Ed25519 reply signatures, key ids and key rings (SPEC.md §10.3-§10.5).
//!
//! A response or fallback datagram is signed over
//! `"upgram-v1-sig" ‖ 0x00 ‖ kind ‖ [nonce] ‖ body`. The request id is not signed: in the default
//! echo-bound mode the body itself names the query it answers (`for`, the SHA-256 of the query
//! body) and carries a validity window, so one signature serves every identical query until it
//! expires. A client that asks for a nonce gets a signature that covers it (nonce-bound mode).
//!
//! Under load a server signs the answers that are ready at the same time as one batch
//! (SPEC.md §10.3.1): each answer is a leaf of a Merkle tree, one Ed25519 signature covers the
//! root, and each reply carries its position and its audit path ([`BatchProof`]), not the root:
//! the client recomputes the root from its answer and the path, and checks the signature over
//! that. [`ReplySigner::sign_batch`] makes them; [`KeyRing::verify`] checks both forms.

use std::collections::{HashSet, VecDeque};
use std::fmt;
use std::sync::Mutex;

use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use serde::{Serialize, Serializer};
use sha2::{Digest as _, Sha256};
use thiserror::Error;

use crate::error::DecodeError;
use crate::limits::{MAX_BATCH_DEPTH, MAX_BATCH_LEN};
use crate::wire::MessageKind;

/// Domain separation prefix of every signed message.
pub const SIGNATURE_CONTEXT: &[u8] = b"upgram-v1-sig\0";
/// Domain separation prefix of the message a batch signature covers: the Merkle root.
pub const ROOT_CONTEXT: &[u8] = b"upgram-v1-root\0";
/// Domain separation prefix of a leaf hash: one answer of a batch.
pub const LEAF_CONTEXT: &[u8] = b"upgram-v1-leaf\0";
/// Domain separation prefix of an inner node hash.
pub const NODE_CONTEXT: &[u8] = b"upgram-v1-node\0";
/// Domain separation prefix of the hash that fills the empty leaves of a batch.
pub const EMPTY_CONTEXT: &[u8] = b"upgram-v1-empty\0";

/// Eight bytes naming a signing key: the first 8 bytes of SHA-256 of its public key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(pub [u8; 8]);

impl KeyId {
    /// The key id of a public key.
    pub fn of(key: &VerifyingKey) -> Self {
        let digest = Sha256::digest(key.as_bytes());
        let mut id = [0u8; 8];
        id.copy_from_slice(&digest[..8]);
        Self(id)
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

impl Serialize for KeyId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_string())
    }
}

/// A 16-byte random nonce a client sends to ask for a nonce-bound signature.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Nonce(pub [u8; 16]);

impl Nonce {
    /// Its length on the wire.
    pub const LEN: usize = 16;
}

impl fmt::Debug for Nonce {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Nonce({})", hex::encode(self.0))
    }
}

impl Serialize for Nonce {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&hex::encode(self.0))
    }
}

/// The key id and signature at the end of a signed datagram, with, for a batch-signed reply,
/// the answer's place in the signed batch.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct SignatureBlock {
    /// Which key signed.
    pub key_id: KeyId,
    /// The 64-byte Ed25519 signature: over the answer itself, or over the batch's root.
    pub signature: [u8; 64],
    /// For a batch-signed reply (flag BATCH): position and audit path.
    pub batch: Option<BatchProof>,
}

impl SignatureBlock {
    /// Length on the wire of the key id and signature (the batch trailer comes on top).
    pub const LEN: usize = 8 + 64;

    /// A block that signs one answer alone.
    pub fn single(key_id: KeyId, signature: [u8; 64]) -> Self {
        Self { key_id, signature, batch: None }
    }

    /// Its length on the wire, batch trailer included.
    pub fn encoded_len(&self) -> usize {
        Self::LEN + self.batch.as_ref().map_or(0, BatchProof::encoded_len)
    }
}

impl fmt::Debug for SignatureBlock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SignatureBlock({}, {}", self.key_id, hex::encode(self.signature))?;
        if let Some(batch) = &self.batch {
            write!(f, ", {batch:?}")?;
        }
        f.write_str(")")
    }
}

impl Serialize for SignatureBlock {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut s = serializer.serialize_struct("SignatureBlock", 2 + usize::from(self.batch.is_some()))?;
        s.serialize_field("key_id", &self.key_id)?;
        s.serialize_field("signature", &hex::encode(self.signature))?;
        if let Some(batch) = &self.batch {
            s.serialize_field("batch", batch)?;
        }
        s.end()
    }
}

/// A 32-byte node of a batch's Merkle tree.
pub type TreeHash = [u8; 32];

/// Where a batch-signed answer sits in its batch (SPEC.md §3.4, §10.3.1): the leaf index and
/// the audit path from the leaf to the Merkle root the signature covers.
///
/// The root itself is not carried: [`BatchProof::root_from`] recomputes it from the answer's
/// leaf, and the signature is checked over that.
///
/// Always well formed: 1 to [`MAX_BATCH_DEPTH`] path hashes and an index below 2^depth.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct BatchProof {
    depth: u8,
    index: u8,
    /// The first `depth` entries are the path, leaf level first; the rest stay zero.
    path: [TreeHash; MAX_BATCH_DEPTH],
}

impl BatchProof {
    /// Length on the wire of the depth and index (the path comes on top).
    pub const FIXED_LEN: usize = 1 + 1;

    /// Checks a depth and leaf index as the trailer gives them, in the order the decoder does
    /// (SPEC.md §3.6 step 8): `path-too-long`, `empty-path`, then `wrong-position`.
    pub fn check_position(depth: u8, index: u8) -> Result<(), DecodeError> {
        let depth = usize::from(depth);
        if depth > MAX_BATCH_DEPTH {
            return Err(DecodeError::PathTooLong { depth, max: MAX_BATCH_DEPTH });
        }
        if depth == 0 {
            return Err(DecodeError::EmptyPath);
        }
        let leaves = 1usize << depth;
        if usize::from(index) >= leaves {
            return Err(DecodeError::WrongPosition { index: usize::from(index), depth, leaves });
        }
        Ok(())
    }

    /// A proof from its parts; the depth is the path's length.
    pub fn new(index: u8, path: &[TreeHash]) -> Result<Self, DecodeError> {
        let depth = u8::try_from(path.len())
            .map_err(|_| DecodeError::PathTooLong { depth: path.len(), max: MAX_BATCH_DEPTH })?;
        Self::check_position(depth, index)?;
        let mut stored = [[0u8; 32]; MAX_BATCH_DEPTH];
        stored[..path.len()].copy_from_slice(path);
        Ok(Self { depth, index, path: stored })
    }

    /// Number of hashes in the audit path: the tree has 2^depth leaves.
    pub fn depth(&self) -> usize {
        usize::from(self.depth)
    }

    /// The answer's leaf index, counted from the left.
    pub fn index(&self) -> usize {
        usize::from(self.index)
    }

    /// The audit path: the sibling of each node from the leaf up to the root.
    pub fn path(&self) -> &[TreeHash] {
        &self.path[..self.depth()]
    }

    /// Its length on the wire.
    pub fn encoded_len(&self) -> usize {
        Self::FIXED_LEN + 32 * self.depth()
    }

    /// Extra trailer bytes a batch of `depth` adds to a reply.
    pub const fn overhead(depth: usize) -> usize {
        Self::FIXED_LEN + 32 * depth
    }

    /// The root that this proof's path leads to from `leaf`: for the leaf of the answer the
    /// proof came with, the root the batch signature must cover.
    pub fn root_from(&self, leaf: &TreeHash) -> TreeHash {
        let mut node = *leaf;
        for (level, sibling) in self.path().iter().enumerate() {
            node = if (self.index() >> level) & 1 == 0 { node_hash(&node, sibling) } else { node_hash(sibling, &node) };
        }
        node
    }
}

impl fmt::Debug for BatchProof {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BatchProof(index {} of 2^{})", self.index, self.depth)
    }
}

impl Serialize for BatchProof {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut s = serializer.serialize_struct("BatchProof", 3)?;
        s.serialize_field("depth", &self.depth)?;
        s.serialize_field("index", &self.index)?;
        let path: Vec<String> = self.path().iter().map(hex::encode).collect();
        s.serialize_field("path", &path)?;
        s.end()
    }
}

/// The leaf hash of an answer: `SHA-256("upgram-v1-leaf" ‖ 00 ‖ kind ‖ n ‖ [nonce] ‖ body)`,
/// with `n` = 01 and the nonce when there is one, else `n` = 00 (SPEC.md §10.3.1).
pub fn leaf_hash(kind: MessageKind, nonce: Option<&Nonce>, body: &[u8]) -> TreeHash {
    let mut hasher = Sha256::new();
    hasher.update(LEAF_CONTEXT);
    hasher.update([kind as u8, u8::from(nonce.is_some())]);
    if let Some(nonce) = nonce {
        hasher.update(nonce.0);
    }
    hasher.update(body);
    hasher.finalize().into()
}

/// An inner node: `SHA-256("upgram-v1-node" ‖ 00 ‖ left ‖ right)`.
pub fn node_hash(left: &TreeHash, right: &TreeHash) -> TreeHash {
    let mut hasher = Sha256::new();
    hasher.update(NODE_CONTEXT);
    hasher.update(left);
    hasher.update(right);
    hasher.finalize().into()
}

/// The hash of an empty leaf, which fills a batch up to a power of two:
/// `SHA-256("upgram-v1-empty" ‖ 00)`.
pub fn empty_leaf_hash() -> TreeHash {
    Sha256::digest(EMPTY_CONTEXT).into()
}

/// The exact bytes a batch signature covers: `"upgram-v1-root" ‖ 00 ‖ root`.
fn root_message(root: &TreeHash) -> [u8; 15 + 32] {
    let mut message = [0u8; 15 + 32];
    message[..ROOT_CONTEXT.len()].copy_from_slice(ROOT_CONTEXT);
    message[ROOT_CONTEXT.len()..].copy_from_slice(root);
    message
}

/// One answer to sign as part of a batch.
#[derive(Debug, Clone, Copy)]
pub struct BatchItem<'a> {
    /// [`MessageKind::Response`] or [`MessageKind::Fallback`].
    pub kind: MessageKind,
    /// The query's nonce, for a nonce-bound answer.
    pub nonce: Option<&'a Nonce>,
    /// The body to sign.
    pub body: &'a [u8],
    /// How many bytes the reply may grow by beyond its single-signed form: the datagram limit
    /// (or the amplification limit, for an unvalidated source) minus the single-signed
    /// datagram's length. An answer with less room than the batch's trailer is signed alone.
    pub room: usize,
}

/// The exact bytes a reply signature covers.
fn signed_message(kind: MessageKind, nonce: Option<&Nonce>, body: &[u8]) -> Vec<u8> {
    let mut message = Vec::with_capacity(SIGNATURE_CONTEXT.len() + 1 + Nonce::LEN + body.len());
    message.extend_from_slice(SIGNATURE_CONTEXT);
    message.push(kind as u8);
    if let Some(nonce) = nonce {
        message.extend_from_slice(&nonce.0);
    }
    message.extend_from_slice(body);
    message
}

/// The server's signing key.
pub struct ReplySigner {
    key: SigningKey,
    key_id: KeyId,
    /// The empty subtree of each height (0: the empty leaf), which fills a batch's tree.
    empties: [TreeHash; MAX_BATCH_DEPTH + 1],
}

impl ReplySigner {
    /// A signer for the Ed25519 secret key with this 32-byte seed.
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        Self::new(SigningKey::from_bytes(seed))
    }

    /// A signer for `key`.
    pub fn new(key: SigningKey) -> Self {
        let key_id = KeyId::of(&key.verifying_key());
        let mut empties = [empty_leaf_hash(); MAX_BATCH_DEPTH + 1];
        for h in 1..empties.len() {
            empties[h] = node_hash(&empties[h - 1], &empties[h - 1]);
        }
        Self { key, key_id, empties }
    }

    /// The public key clients pin.
    pub fn verifying_key(&self) -> VerifyingKey {
        self.key.verifying_key()
    }

    /// The id of this key.
    pub fn key_id(&self) -> KeyId {
        self.key_id
    }

    /// Signs the body of a reply of `kind`, binding `nonce` when the query asked for one.
    pub fn sign(&self, kind: MessageKind, nonce: Option<&Nonce>, body: &[u8]) -> SignatureBlock {
        let signature = self.key.sign(&signed_message(kind, nonce, body));
        SignatureBlock::single(self.key_id, signature.to_bytes())
    }

    /// Signs answers that are ready at the same time, returning one signature block per item,
    /// in order (SPEC.md §10.3.1).
    ///
    /// Each answer can carry an audit path up to the depth its room allows. The tree need not
    /// be balanced: an answer with room for a short path only sits near the root, the others
    /// deeper, so answers with different rooms still share one signature as long as their
    /// leaves fit one tree of at most [`MAX_BATCH_LEN`] leaf places (a leaf at depth d takes
    /// 2^(6−d) of the 64 places of the deepest level). Answers are packed tightest first, which
    /// takes the fewest signatures. An answer with no room for any trailer, and a batch that
    /// would hold a single answer, are signed alone, in exactly the form
    /// [`ReplySigner::sign`] gives.
    pub fn sign_batch(&self, items: &[BatchItem<'_>]) -> Vec<SignatureBlock> {
        let mut out: Vec<Option<SignatureBlock>> = vec![None; items.len()];
        let deepest: Vec<usize> = items.iter().map(|item| deepest_leaf(item.room)).collect();
        // Tightest first: the places each answer takes are powers of two, each dividing those
        // before, so filling one tree after another leaves no tree but the last part empty.
        let mut order: Vec<usize> = (0..items.len()).collect();
        order.sort_by_key(|&i| deepest[i]);
        let mut members: Vec<usize> = Vec::with_capacity(MAX_BATCH_LEN.min(items.len()));
        let mut places = 0;
        for i in order {
            let needs = leaf_places(deepest[i]);
            if places + needs > MAX_BATCH_LEN {
                self.sign_members(items, &members, &deepest, &mut out);
                members.clear();
                places = 0;
            }
            members.push(i);
            places += needs;
        }
        self.sign_members(items, &members, &deepest, &mut out);
        out.into_iter()
            .enumerate()
            .map(|(i, block)| block.unwrap_or_else(|| self.sign(items[i].kind, items[i].nonce, items[i].body)))
            .collect()
    }

    /// Signs `members` (positions into `items` whose leaves fit one tree, see
    /// [`Self::sign_batch`]) as one batch; a lone member is left to be signed alone.
    fn sign_members(
        &self,
        items: &[BatchItem<'_>],
        members: &[usize],
        deepest: &[usize],
        out: &mut [Option<SignatureBlock>],
    ) {
        if members.len() < 2 {
            return;
        }
        let deepest: Vec<usize> = members.iter().map(|&i| deepest[i]).collect();
        let leaves = members.iter().zip(leaf_depths(&deepest)).map(|(&i, depth)| {
            let item = &items[i];
            (i, depth, leaf_hash(item.kind, item.nonce, item.body))
        });
        let Some(tree) = ShapedTree::build(leaves, &self.empties) else {
            return;
        };
        let signature = self.key.sign(&root_message(&tree.root)).to_bytes();
        for (i, proof) in tree.proofs {
            out[i] = Some(SignatureBlock { key_id: self.key_id, signature, batch: Some(proof) });
        }
    }
}

impl fmt::Debug for ReplySigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ReplySigner({})", self.key_id)
    }
}

/// The deepest leaf an answer with `room` bytes for the batch trailer can be: the longest
/// audit path that fits (at most [`MAX_BATCH_DEPTH`]), 0 when none does.
fn deepest_leaf(room: usize) -> usize {
    (0..=MAX_BATCH_DEPTH).rev().find(|&d| room >= BatchProof::overhead(d)).unwrap_or(0)
}

/// How many of the [`MAX_BATCH_LEN`] places of a tree's deepest level a leaf at `depth` covers.
fn leaf_places(depth: usize) -> usize {
    1 << (MAX_BATCH_DEPTH - depth.min(MAX_BATCH_DEPTH))
}

/// The depth of each leaf (in order) whose deepest allowed depths are `deepest` and whose
/// places add up to at most [`MAX_BATCH_LEN`]: all at the depth of a balanced tree of that
/// many leaves when that fits them all, else each at the shallower of its own deepest and the
/// shallowest common depth at which the leaves still fit.
fn leaf_depths(deepest: &[usize]) -> Vec<usize> {
    let balanced = deepest.len().next_power_of_two().trailing_zeros() as usize;
    let fits = |cap: usize| deepest.iter().map(|&d| leaf_places(d.min(cap))).sum::<usize>() <= MAX_BATCH_LEN;
    let cap = (balanced..MAX_BATCH_DEPTH).find(|&cap| fits(cap)).unwrap_or(MAX_BATCH_DEPTH);
    deepest.iter().map(|&d| d.min(cap)).collect()
}

/// A batch's Merkle tree whose leaves may sit at different depths (SPEC.md §10.3.1): leaves
/// are placed from the left, shallowest first, each at the next free position of its depth
/// (the canonical order of a prefix code), so a leaf's index, read from its top bit down, is
/// its way from the root; what is left over on the right is filled with the empty subtree of
/// its height.
struct ShapedTree {
    root: TreeHash,
    /// For each member (its position among the caller's items), its proof.
    proofs: Vec<(usize, BatchProof)>,
}

/// A leaf while its tree is built: its depth, its index at that depth, its hash, and the path
/// gathered so far (leaf level first).
struct PlacedLeaf {
    item: usize,
    depth: usize,
    index: usize,
    hash: TreeHash,
    path: [TreeHash; MAX_BATCH_DEPTH],
    path_len: usize,
}

impl ShapedTree {
    /// The tree of `(item, depth, leaf hash)`, given in the order of the batch, its free places
    /// filled from `empties` (the empty subtree of each height); `None` unless every depth is
    /// 1 to [`MAX_BATCH_DEPTH`] and the leaves fit one tree.
    fn build(
        leaves: impl Iterator<Item = (usize, usize, TreeHash)>,
        empties: &[TreeHash; MAX_BATCH_DEPTH + 1],
    ) -> Option<Self> {
        let mut placed: Vec<PlacedLeaf> = leaves
            .map(|(item, depth, hash)| PlacedLeaf {
                item,
                depth,
                index: 0,
                hash,
                path: [[0; 32]; MAX_BATCH_DEPTH],
                path_len: 0,
            })
            .collect();
        if placed.iter().any(|leaf| leaf.depth == 0 || leaf.depth > MAX_BATCH_DEPTH)
            || placed.iter().map(|leaf| leaf_places(leaf.depth)).sum::<usize>() > MAX_BATCH_LEN
        {
            return None;
        }
        // Stable: leaves of one depth keep the batch's order.
        placed.sort_by_key(|leaf| leaf.depth);
        let height = placed.iter().map(|leaf| leaf.depth).max().unwrap_or(0);
        let (mut next, mut at) = (0usize, placed.first().map_or(0, |leaf| leaf.depth));
        for leaf in &mut placed {
            next <<= leaf.depth - at;
            at = leaf.depth;
            leaf.index = next;
            next += 1;
        }
        let root = Self::subtree(&mut placed, 0, height, empties);
        let proofs = placed
            .iter()
            .map(|leaf| {
                let index = u8::try_from(leaf.index).ok()?;
                Some((leaf.item, BatchProof::new(index, &leaf.path[..leaf.path_len]).ok()?))
            })
            .collect::<Option<Vec<_>>>()?;
        Some(Self { root, proofs })
    }

    /// The hash of the subtree at `level` (0: the root) holding `leaves`, `height` levels above
    /// the tree's deepest; appends the sibling at this level to the path of each leaf below.
    fn subtree(leaves: &mut [PlacedLeaf], level: usize, height: usize, empties: &[TreeHash]) -> TreeHash {
        match leaves {
            [] => empties.get(height).copied().unwrap_or_default(),
            [leaf] if leaf.depth == level => leaf.hash,
            _ => {
                // Every leaf here is deeper than `level` (two leaves cannot share a place):
                // its bit for this level says left (0) or right (1), and the left ones come first.
                let bit = |leaf: &PlacedLeaf| (leaf.index >> (leaf.depth - level - 1)) & 1;
                let split = leaves.partition_point(|leaf| bit(leaf) == 0);
                let (left, right) = leaves.split_at_mut(split);
                let below = height.saturating_sub(1);
                let left_hash = Self::subtree(left, level + 1, below, empties);
                let right_hash = Self::subtree(right, level + 1, below, empties);
                for (side, sibling) in [(left, right_hash), (right, left_hash)] {
                    for leaf in side.iter_mut() {
                        if let Some(slot) = leaf.path.get_mut(leaf.path_len) {
                            *slot = sibling;
                            leaf.path_len += 1;
                        }
                    }
                }
                node_hash(&left_hash, &right_hash)
            }
        }
    }
}

/// Why a signature or the answer it covers was refused (SPEC.md §10.4).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// No pinned key has this id.
    #[error("reply signed by unknown key {key_id}")]
    UnknownKey {
        /// The key id in the datagram.
        key_id: KeyId,
    },
    /// A reply signed alone: the signature does not verify over its answer.
    #[error("reply signature by key {key_id} does not verify")]
    BadSignature {
        /// The key id in the datagram.
        key_id: KeyId,
    },
    /// Batch-signed reply: the signature does not verify over the root that the audit path
    /// leads to from this answer at its leaf index. The root is not carried, so an altered
    /// signature, path, index or answer all end here (SPEC.md §10.3.1).
    #[error(
        "batch-signed reply: the signature by key {key_id} does not verify over the root the audit path from leaf {index} leads to"
    )]
    BadPath {
        /// The key id in the datagram.
        key_id: KeyId,
        /// The leaf index in the datagram.
        index: usize,
    },
    /// The reply answers another query (`for` is not the hash of our query body).
    #[error("reply answers another query (for={found}, our query hashes to {expected})")]
    WrongQuery {
        /// Our query body's hash.
        expected: String,
        /// The reply's `for`.
        found: String,
    },
    /// Nonce-bound mode: the reply's nonce is absent or not ours.
    #[error("reply does not carry the nonce of our query")]
    NonceMismatch,
    /// The answer's validity window has passed.
    #[error("reply expired at {expires}, now is {now}")]
    Expired {
        /// Its `expires`.
        expires: u64,
        /// The client's clock.
        now: u64,
    },
    /// The answer claims to be issued in the future, past the allowed clock skew.
    #[error("reply issued at {issued}, in the future of now ({now})")]
    NotYetValid {
        /// Its `issued`.
        issued: u64,
        /// The client's clock.
        now: u64,
    },
    /// The validity window is longer than the freeze window allows.
    #[error("reply valid for {secs} s, more than the {max} s allowed")]
    WindowTooLong {
        /// `expires - issued`.
        secs: u64,
        /// The limit.
        max: u64,
    },
}

impl VerifyError {
    /// The stable name of this error (SPEC.md §9.3).
    pub fn name(&self) -> &'static str {
        match self {
            Self::UnknownKey { .. } => "unknown-key",
            Self::BadSignature { .. } => "bad-signature",
            Self::BadPath { .. } => "bad-path",
            Self::WrongQuery { .. } => "wrong-query",
            Self::NonceMismatch => "nonce-mismatch",
            Self::Expired { .. } => "expired",
            Self::NotYetValid { .. } => "not-yet-valid",
            Self::WindowTooLong { .. } => "window-too-long",
        }
    }
}

/// The public keys a client trusts, selected by key id (rotation: several at once).
///
/// It remembers the last few batch roots whose signature it verified: the answers of one batch
/// (the parts of one check that the server answered together) then cost one Ed25519
/// verification, not one each. A root counts as verified only for the exact key id, root and
/// signature bytes that verified; every reply's root is always recomputed from its own answer
/// and audit path before it is looked up.
#[derive(Debug, Default)]
pub struct KeyRing {
    keys: Vec<(KeyId, VerifyingKey)>,
    verified_roots: Mutex<RememberedRoots>,
}

/// Verified batch roots, oldest first, with a set for the lookups.
#[derive(Debug, Default)]
struct RememberedRoots {
    order: VecDeque<VerifiedRoot>,
    set: HashSet<VerifiedRoot>,
}

/// A batch root whose signature verified under a key.
type VerifiedRoot = (KeyId, TreeHash, [u8; 64]);

/// How many verified batch roots a ring remembers: enough for the batches of a check of tens of
/// thousands of modules (about 100 KiB).
const REMEMBERED_ROOTS: usize = 1024;

impl Clone for KeyRing {
    fn clone(&self) -> Self {
        Self { keys: self.keys.clone(), verified_roots: Mutex::default() }
    }
}

impl KeyRing {
    /// An empty ring.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a trusted key.
    pub fn add(&mut self, key: VerifyingKey) -> &mut Self {
        let id = KeyId::of(&key);
        if !self.keys.iter().any(|(known, _)| *known == id) {
            self.keys.push((id, key));
        }
        self
    }

    /// Adds the public key given as its 32 bytes; `None` if they are not a valid point.
    pub fn add_bytes(&mut self, bytes: &[u8; 32]) -> Option<&mut Self> {
        let key = VerifyingKey::from_bytes(bytes).ok()?;
        Some(self.add(key))
    }

    /// Whether the ring holds no key.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Verifies (strictly) the signature of a reply of `kind` over `body`: over the answer
    /// itself, or for a batch-signed reply over the root its audit path leads to from the
    /// answer's leaf (SPEC.md §10.4 steps 2-3a). A batch-signed reply that fails is
    /// [`VerifyError::BadPath`]: without a carried root, a bad signature cannot be told from a
    /// bad path.
    pub fn verify(
        &self,
        kind: MessageKind,
        nonce: Option<&Nonce>,
        body: &[u8],
        block: &SignatureBlock,
    ) -> Result<(), VerifyError> {
        let key_id = block.key_id;
        let (_, key) = self.keys.iter().find(|(id, _)| *id == key_id).ok_or(VerifyError::UnknownKey { key_id })?;
        let signature = Signature::from_bytes(&block.signature);
        let Some(batch) = &block.batch else {
            return key
                .verify_strict(&signed_message(kind, nonce, body), &signature)
                .map_err(|_| VerifyError::BadSignature { key_id });
        };
        let root = batch.root_from(&leaf_hash(kind, nonce, body));
        let verified = (key_id, root, block.signature);
        if !self.root_verified(&verified) {
            key.verify_strict(&root_message(&root), &signature)
                .map_err(|_| VerifyError::BadPath { key_id, index: batch.index() })?;
            self.remember_root(verified);
        }
        Ok(())
    }

    /// How many batch roots the ring remembers as verified now (at most a few dozen).
    pub fn remembered_roots(&self) -> usize {
        self.verified_roots.lock().map(|r| r.order.len()).unwrap_or(0)
    }

    fn root_verified(&self, root: &VerifiedRoot) -> bool {
        self.verified_roots.lock().is_ok_and(|roots| roots.set.contains(root))
    }

    fn remember_root(&self, root: VerifiedRoot) {
        if let Ok(mut roots) = self.verified_roots.lock()
            && roots.set.insert(root)
        {
            if roots.order.len() == REMEMBERED_ROOTS
                && let Some(oldest) = roots.order.pop_front()
            {
                roots.set.remove(&oldest);
            }
            roots.order.push_back(root);
        }
    }
}
