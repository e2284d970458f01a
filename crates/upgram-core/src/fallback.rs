//! The fallback decision (SPEC.md §8, \[0084\]): an answer that fits a datagram goes inline;
//! one that does not becomes a document served over HTTP, and the datagram carries its URLs,
//! size and SHA-256, signed.
//!
//! A [`PreparedReply`] holds everything but the request id and the optional fresh server
//! cookie, so a server signs once and answers every identical query from it until it expires.
//!
//! A server that signs the answers ready at the same time as one batch (SPEC.md §10.3.1) takes
//! the two steps apart: [`encode_reply`] decides inline or fallback and gives an
//! [`UnsignedReply`], whose [`UnsignedReply::batch_item`] goes to
//! [`ReplySigner::sign_batch`] and whose [`UnsignedReply::signed`] takes the signature back.

use crate::body::{Binding, Fallback, ModuleDocument, ModuleDocuments, Response};
use crate::cookie::ServerCookie;
use crate::digest::Sha256Digest;
use crate::error::EncodeError;
use crate::limits::{HEADER_LEN, MAX_DATAGRAM_LEN, MAX_DOCUMENT_LEN};
use crate::message::{DocumentError, check_binding, check_pinned};
use crate::sign::{BatchItem, Nonce, ReplySigner, SignatureBlock};
use crate::wire::{Flags, Frame, MessageKind, trailer_len};

/// The full answer document of a fallback, to be served at the mirrors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FallbackDocument {
    /// The document: the `<response>` body that did not fit.
    pub bytes: Vec<u8>,
    /// Its SHA-256, which the fallback datagram signs.
    pub sha256: Sha256Digest,
}

/// What a reply's trailer will carry, which decides whether the answer fits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReplyShape {
    /// The query's nonce, for a nonce-bound signature.
    pub nonce: Option<Nonce>,
    /// Whether the datagram will carry a fresh server cookie.
    pub server_cookie: bool,
}

impl ReplyShape {
    /// The header flags of a reply of this shape (before any batch trailer).
    pub fn flags(&self) -> Flags {
        let mut bits = 0;
        if self.nonce.is_some() {
            bits |= Flags::NONCE;
        }
        if self.server_cookie {
            bits |= Flags::SERVER_COOKIE;
        }
        Flags(bits)
    }
}

/// A signed reply, ready to be framed for any query with the same body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreparedReply {
    /// [`MessageKind::Response`] or [`MessageKind::Fallback`].
    pub kind: MessageKind,
    /// The signed body: the response, or the fallback pointer.
    pub body: Vec<u8>,
    /// The signature over it.
    pub signature: SignatureBlock,
    /// The shape it was made for.
    pub shape: ReplyShape,
    /// For a fallback, the document to serve.
    pub document: Option<FallbackDocument>,
}

impl PreparedReply {
    /// The frame for the query with `request_id`; `server_cookie` is sent only if the shape
    /// said so.
    pub fn frame(&self, request_id: u64, server_cookie: Option<ServerCookie>) -> Frame<'_> {
        Frame {
            kind: self.kind,
            request_id,
            body: &self.body,
            client_cookie: None,
            server_cookie: server_cookie.filter(|_| self.shape.server_cookie),
            nonce: self.shape.nonce,
            signature: Some(self.signature),
            padding: 0,
        }
    }

    /// Length of the datagram this reply encodes to, batch trailer included.
    pub fn datagram_len(&self) -> usize {
        datagram_len(self.kind, self.shape, self.body.len()) + self.signature.encoded_len() - SignatureBlock::LEN
    }
}

/// An answer encoded and placed (inline or fallback) but not yet signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsignedReply {
    /// [`MessageKind::Response`] or [`MessageKind::Fallback`].
    pub kind: MessageKind,
    /// The body to sign: the response, or the fallback pointer.
    pub body: Vec<u8>,
    /// The shape it is made for.
    pub shape: ReplyShape,
    /// For a fallback, the document to serve.
    pub document: Option<FallbackDocument>,
}

impl UnsignedReply {
    /// Length of the datagram once signed alone.
    pub fn single_len(&self) -> usize {
        datagram_len(self.kind, self.shape, self.body.len())
    }

    /// This answer as an item of a batch, for a reply that must stay within `limit` bytes (the
    /// datagram limit, or less for a source held to the amplification limit): its room is
    /// what the limit leaves beyond the single-signed datagram, so an answer with no room for
    /// the batch trailer is signed alone.
    pub fn batch_item(&self, limit: usize) -> BatchItem<'_> {
        BatchItem {
            kind: self.kind,
            nonce: self.shape.nonce.as_ref(),
            body: &self.body,
            room: limit.min(MAX_DATAGRAM_LEN).saturating_sub(self.single_len()),
        }
    }

    /// The reply with its signature.
    pub fn signed(self, signature: SignatureBlock) -> PreparedReply {
        PreparedReply { kind: self.kind, body: self.body, signature, shape: self.shape, document: self.document }
    }
}

fn datagram_len(kind: MessageKind, shape: ReplyShape, body_len: usize) -> usize {
    HEADER_LEN + body_len + trailer_len(kind, shape.flags())
}

/// Encodes, decides inline or fallback, and signs (SPEC.md §8.1).
///
/// `mirrors` gives the document's URLs from its SHA-256 (e.g. `{public}/doc/{sha256}.xml`); it
/// is called only when the answer does not fit.
pub fn prepare_reply(
    response: &Response<'_>,
    signer: &ReplySigner,
    shape: ReplyShape,
    mirrors: impl FnOnce(&Sha256Digest) -> Vec<String>,
) -> Result<PreparedReply, EncodeError> {
    let unsigned = encode_reply(response, shape, mirrors)?;
    let signature = signer.sign(unsigned.kind, shape.nonce.as_ref(), &unsigned.body);
    Ok(unsigned.signed(signature))
}

/// Encodes and decides inline or fallback (SPEC.md §8.1), leaving the signature to the caller.
/// The decision is made on the single-signed length: an answer that fits only that way is
/// signed alone (see [`UnsignedReply::batch_item`]).
///
/// `mirrors` gives the document's URLs from its SHA-256; it is called only when the answer
/// does not fit.
pub fn encode_reply(
    response: &Response<'_>,
    shape: ReplyShape,
    mirrors: impl FnOnce(&Sha256Digest) -> Vec<String>,
) -> Result<UnsignedReply, EncodeError> {
    encode_reply_body(response.binding, response.to_vec(), shape, mirrors)
}

/// [`encode_reply`] for a response body already encoded (canonically, e.g. by
/// [`Response::encode_from_parts`]) with `binding`.
pub fn encode_reply_body(
    binding: Binding,
    body: Vec<u8>,
    shape: ReplyShape,
    mirrors: impl FnOnce(&Sha256Digest) -> Vec<String>,
) -> Result<UnsignedReply, EncodeError> {
    if datagram_len(MessageKind::Response, shape, body.len()) <= MAX_DATAGRAM_LEN {
        return Ok(UnsignedReply { kind: MessageKind::Response, body, shape, document: None });
    }
    if body.len() > MAX_DOCUMENT_LEN {
        return Err(EncodeError::TooLarge { len: body.len(), max: MAX_DOCUMENT_LEN });
    }
    let sha256 = Sha256Digest::of(&body);
    let pointer = Fallback {
        binding,
        size: body.len() as u64,
        sha256,
        mirrors: mirrors(&sha256).into_iter().map(Into::into).collect(),
        modules: None,
    };
    let pointer_body = pointer.to_vec();
    let len = datagram_len(MessageKind::Fallback, shape, pointer_body.len());
    if len > MAX_DATAGRAM_LEN {
        return Err(EncodeError::TooLarge { len, max: MAX_DATAGRAM_LEN });
    }
    Ok(UnsignedReply {
        kind: MessageKind::Fallback,
        body: pointer_body,
        shape,
        document: Some(FallbackDocument { bytes: body, sha256 }),
    })
}

/// The fallback that points at module documents (SPEC.md §8.5) for an answer with `binding`,
/// `base` and `compact` whose modules are `documents` (in answer order), if it fits a datagram
/// of `shape` and names at most [`crate::body::fallback::MAX_MODULE_DOCUMENTS`] documents;
/// `None` otherwise (the server then sends the single-document form).
pub fn encode_module_fallback(
    binding: Binding,
    base: &str,
    compact: bool,
    documents: Vec<ModuleDocument<'_>>,
    shape: ReplyShape,
) -> Option<UnsignedReply> {
    if documents.is_empty() || documents.len() > crate::body::fallback::MAX_MODULE_DOCUMENTS {
        return None;
    }
    let pointer = Fallback {
        binding,
        size: 0,
        sha256: Sha256Digest([0; 32]),
        mirrors: Vec::new(),
        modules: Some(ModuleDocuments { base: base.into(), compact, documents }),
    };
    module_pointer_reply(pointer.to_vec(), shape)
}

/// [`encode_module_fallback`] from the `<doc/>` elements of the documents already encoded by
/// [`ModuleDocument::encode_element`] (a server names the same module documents in many
/// fallbacks): the same reply, without encoding each element again.
pub fn encode_module_fallback_elements<E: AsRef<[u8]>>(
    binding: Binding,
    base: &str,
    compact: bool,
    elements: &[E],
    shape: ReplyShape,
) -> Option<UnsignedReply> {
    if elements.is_empty() || elements.len() > crate::body::fallback::MAX_MODULE_DOCUMENTS {
        return None;
    }
    // The attributes take under 256 bytes.
    let mut body = Vec::with_capacity(256 + base.len() + elements.iter().map(|e| e.as_ref().len()).sum::<usize>());
    crate::body::fallback::encode_module_pointer(&binding, base, compact, elements, &mut body);
    module_pointer_reply(body, shape)
}

/// A module-document fallback with this body, if it fits a datagram of `shape`.
fn module_pointer_reply(body: Vec<u8>, shape: ReplyShape) -> Option<UnsignedReply> {
    (datagram_len(MessageKind::Fallback, shape, body.len()) <= MAX_DATAGRAM_LEN).then_some(UnsignedReply {
        kind: MessageKind::Fallback,
        body,
        shape,
        document: None,
    })
}

impl ModuleDocument<'_> {
    /// Checks fetched `bytes` against this entry of a (verified) fallback: length, then
    /// SHA-256, before any parsing.
    pub fn check(&self, bytes: &[u8]) -> Result<(), DocumentError> {
        check_pinned(bytes, self.size, &self.sha256)
    }
}

impl Fallback<'_> {
    /// Opens the module documents fetched for this (verified) fallback of the module-document
    /// form (SPEC.md §8.5), one per entry and in order: each is checked against the SHA-256 the
    /// fallback names for it before anything else, then the answer is assembled (the
    /// fallback's binding, `base` and `compact`, the documents' `<module>` elements in order),
    /// decoded, checked to answer the named modules, and its binding checked at `now`. Returns
    /// the answer's body, as it would have come inline.
    pub fn open_module_documents(&self, documents: &[impl AsRef<[u8]>], now: u64) -> Result<Vec<u8>, DocumentError> {
        self.open_modules(documents, now, |_| ()).map(|(body, ())| body)
    }

    /// Like [`Self::open_module_documents`], with the same checks, but returns the answer
    /// decoded (once: the decode that checks it) and owned, with the length of its body.
    pub fn open_module_answer(
        &self,
        documents: &[impl AsRef<[u8]>],
        now: u64,
    ) -> Result<(Response<'static>, usize), DocumentError> {
        let (body, response) = self.open_modules(documents, now, |response| response.into_owned())?;
        Ok((response, body.len()))
    }

    /// Assembles, decodes and checks the answer (see [`Self::open_module_documents`]); returns
    /// its body and what `keep` makes of the checked, decoded answer.
    fn open_modules<R>(
        &self,
        documents: &[impl AsRef<[u8]>],
        now: u64,
        keep: impl FnOnce(Response<'_>) -> R,
    ) -> Result<(Vec<u8>, R), DocumentError> {
        let Some(modules) = &self.modules else {
            return Err(DocumentError::WrongCount { expected: 0, found: documents.len() });
        };
        if documents.len() != modules.documents.len() {
            return Err(DocumentError::WrongCount { expected: modules.documents.len(), found: documents.len() });
        }
        let len: usize = documents.iter().map(|d| d.as_ref().len()).sum();
        if len > MAX_DOCUMENT_LEN {
            return Err(DocumentError::TooLarge { len, max: MAX_DOCUMENT_LEN });
        }
        for (named, bytes) in modules.documents.iter().zip(documents) {
            named.check(bytes.as_ref())?;
        }
        let mut body = Vec::with_capacity(256 + modules.base.len() + len);
        Response::encode_from_parts(
            &self.binding,
            Some(&modules.base),
            modules.compact,
            documents.iter().map(AsRef::as_ref),
            &mut body,
        );
        let response = Response::decode(&body)?;
        if response.modules.len() != modules.documents.len() {
            let index = response.modules.len().min(modules.documents.len().saturating_sub(1));
            let expected = modules.documents.get(index).map(|d| d.module.to_string()).unwrap_or_default();
            return Err(DocumentError::WrongModule { index, expected, found: "-".into() });
        }
        for (index, (named, answer)) in modules.documents.iter().zip(&response.modules).enumerate() {
            if named.module != answer.id {
                let (expected, found) = (named.module.to_string(), answer.id.to_string());
                return Err(DocumentError::WrongModule { index, expected, found });
            }
        }
        check_binding(&response.binding, &self.binding.query, now)?;
        let kept = keep(response);
        Ok((body, kept))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_module_pointer_from_encoded_elements_is_the_pointer_from_its_documents() {
        let binding = Binding { query: Sha256Digest::of(b"query"), issued: 1_800_000_000, expires: 1_800_000_300 };
        let documents: Vec<ModuleDocument<'static>> = ["core", "a&b \"quoted\" <module>", "big"]
            .iter()
            .enumerate()
            .map(|(i, module)| ModuleDocument {
                module: (*module).into(),
                size: 1000 * i as u64 + 7,
                sha256: Sha256Digest::of(module.as_bytes()),
            })
            .collect();
        let elements: Vec<Vec<u8>> = documents
            .iter()
            .map(|d| {
                let mut element = Vec::new();
                d.encode_element(&mut element);
                element
            })
            .collect();
        for compact in [false, true] {
            for server_cookie in [false, true] {
                let shape = ReplyShape { nonce: None, server_cookie };
                let base = "https://updates.example/a&b/";
                let from_documents = encode_module_fallback(binding, base, compact, documents.clone(), shape).unwrap();
                let from_elements = encode_module_fallback_elements(binding, base, compact, &elements, shape).unwrap();
                assert_eq!(from_elements.body, from_documents.body);
                assert_eq!(from_elements.kind, MessageKind::Fallback);
            }
        }
        let none: [&[u8]; 0] = [];
        assert!(encode_module_fallback_elements(binding, "b/", false, &none, ReplyShape::default()).is_none());
        let too_many = vec![elements[0].clone(); crate::body::fallback::MAX_MODULE_DOCUMENTS + 1];
        assert!(encode_module_fallback_elements(binding, "b/", false, &too_many, ReplyShape::default()).is_none());
    }
}
