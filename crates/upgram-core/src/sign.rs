//! Ed25519 reply signatures, key ids and key rings (SPEC.md §10.3-§10.5).
//!
//! A response or fallback datagram is signed over
//! `"upgram-v1-sig" ‖ 0x00 ‖ kind ‖ [nonce] ‖ body`. The request id is not signed: in the default
//! echo-bound mode the body itself names the query it answers (`for`, the SHA-256 of the query
//! body) and carries a validity window, so one signature serves every identical query until it
//! expires. A client that asks for a nonce gets a signature that covers it (nonce-bound mode).

use std::fmt;

use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use serde::{Serialize, Serializer};
use sha2::{Digest as _, Sha256};
use thiserror::Error;

use crate::wire::MessageKind;

/// Domain separation prefix of every signed message.
pub const SIGNATURE_CONTEXT: &[u8] = b"upgram-v1-sig\0";

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

/// The key id and signature at the end of a signed datagram.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct SignatureBlock {
    /// Which key signed.
    pub key_id: KeyId,
    /// The 64-byte Ed25519 signature.
    pub signature: [u8; 64],
}

impl SignatureBlock {
    /// Its length on the wire.
    pub const LEN: usize = 8 + 64;
}

impl fmt::Debug for SignatureBlock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SignatureBlock({}, {})", self.key_id, hex::encode(self.signature))
    }
}

impl Serialize for SignatureBlock {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut s = serializer.serialize_struct("SignatureBlock", 2)?;
        s.serialize_field("key_id", &self.key_id)?;
        s.serialize_field("signature", &hex::encode(self.signature))?;
        s.end()
    }
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
}

impl ReplySigner {
    /// A signer for the Ed25519 secret key with this 32-byte seed.
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        Self::new(SigningKey::from_bytes(seed))
    }

    /// A signer for `key`.
    pub fn new(key: SigningKey) -> Self {
        let key_id = KeyId::of(&key.verifying_key());
        Self { key, key_id }
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
        SignatureBlock { key_id: self.key_id, signature: signature.to_bytes() }
    }
}

impl fmt::Debug for ReplySigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ReplySigner({})", self.key_id)
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
    /// The signature does not verify.
    #[error("reply signature by key {key_id} does not verify")]
    BadSignature {
        /// The key id in the datagram.
        key_id: KeyId,
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
            Self::WrongQuery { .. } => "wrong-query",
            Self::NonceMismatch => "nonce-mismatch",
            Self::Expired { .. } => "expired",
            Self::NotYetValid { .. } => "not-yet-valid",
            Self::WindowTooLong { .. } => "window-too-long",
        }
    }
}

/// The public keys a client trusts, selected by key id (rotation: several at once).
#[derive(Debug, Clone, Default)]
pub struct KeyRing {
    keys: Vec<(KeyId, VerifyingKey)>,
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

    /// Verifies (strictly) the signature of a reply of `kind` over `body`.
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
        key.verify_strict(&signed_message(kind, nonce, body), &signature)
            .map_err(|_| VerifyError::BadSignature { key_id })
    }
}
