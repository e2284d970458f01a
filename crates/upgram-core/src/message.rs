//! Whole datagrams with their bodies decoded (SPEC.md §3, §4): what a client or server receives.
//!
//! Signed replies come wrapped in [`SignedReply`]: the body can be read before verification
//! only through a method that says so, and [`SignedReply::verify`] checks the signature, the
//! binding to the query and the validity window together (SPEC.md §10.4).

use bytes::BufMut;
use serde::Serialize;

use crate::body::{Binding, ErrorBody, Fallback, Query, Report, Response};
use crate::cookie::{ClientCookie, ServerCookie};
use crate::digest::Sha256Digest;
use crate::error::{BodyError, DecodeError, EncodeError};
use crate::limits::{MAX_CLOCK_SKEW_SECS, MAX_VALIDITY_SECS};
use crate::sign::{KeyRing, Nonce, SignatureBlock, VerifyError};
use crate::wire::{Frame, MessageKind};

/// A decoded datagram.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Datagram<'a> {
    /// The request id (chosen by the client, echoed by replies).
    pub request_id: u64,
    /// What it carries.
    pub message: Message<'a>,
    /// The body exactly as received: re-encoding keeps it, so unknown attributes and elements
    /// (forward compatibility) survive and signatures still verify.
    #[serde(skip)]
    raw_body: &'a [u8],
}

/// The seven message kinds, decoded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Message<'a> {
    /// A query.
    Query(QueryMessage<'a>),
    /// A signed inline answer.
    Response(SignedReply<'a, Response<'a>>),
    /// A signed pointer to the full answer document.
    Fallback(SignedReply<'a, Fallback<'a>>),
    /// An unsigned, advisory error.
    Error(ErrorBody<'a>),
    /// An unsigned cookie challenge.
    CookieChallenge(CookieChallenge),
    /// A client's install report.
    Report(ReportMessage<'a>),
    /// An unsigned acknowledgement of the report with this datagram's request id.
    ReportAck,
}

/// A report datagram (SPEC.md §4.7, §5.11).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReportMessage<'a> {
    /// The decoded body.
    pub report: Report<'a>,
    /// The client's cookie for this server.
    pub client_cookie: Option<ClientCookie>,
    /// The server cookie the client holds, proof of its address: a server accepts a report
    /// only with one that validates.
    pub server_cookie: Option<ServerCookie>,
}

/// A query datagram.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QueryMessage<'a> {
    /// The decoded body.
    pub query: Query<'a>,
    /// The exact body bytes: signed answers name their SHA-256 (`for`).
    #[serde(skip)]
    pub raw_body: &'a [u8],
    /// The client's cookie for this server.
    pub client_cookie: Option<ClientCookie>,
    /// The server cookie the client holds, proof of its address.
    pub server_cookie: Option<ServerCookie>,
    /// Asks for a nonce-bound signature.
    pub nonce: Option<Nonce>,
    /// Bytes of zero padding.
    pub padding: usize,
}

impl QueryMessage<'_> {
    /// SHA-256 of the raw body: the `for` of every answer to this query.
    pub fn digest(&self) -> Sha256Digest {
        Sha256Digest::of(self.raw_body)
    }
}

/// A cookie challenge: "retry with this server cookie" (SPEC.md §10.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct CookieChallenge {
    /// The query's client cookie, echoed.
    pub client_cookie: Option<ClientCookie>,
    /// The cookie to send back.
    pub server_cookie: ServerCookie,
}

/// A signed reply whose body has not been verified yet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SignedReply<'a, T> {
    body: T,
    #[serde(skip)]
    raw_body: &'a [u8],
    #[serde(skip)]
    kind: MessageKind,
    /// A fresh server cookie for the client to cache.
    pub server_cookie: Option<ServerCookie>,
    /// The query's nonce, echoed (nonce-bound mode).
    pub nonce: Option<Nonce>,
    /// Key id and signature.
    pub signature: SignatureBlock,
}

/// What a client expects of a reply to its query.
#[derive(Debug, Clone, Copy)]
pub struct Expectation<'k> {
    /// The keys the client trusts.
    pub keys: &'k KeyRing,
    /// SHA-256 of the query body the client sent.
    pub query: Sha256Digest,
    /// The nonce the client sent, if it asked for a nonce-bound signature.
    pub nonce: Option<Nonce>,
    /// The client's clock, unix seconds.
    pub now: u64,
}

/// Bodies that carry a [`Binding`].
pub trait Bound {
    /// Which query the body answers, and for how long.
    fn binding(&self) -> &Binding;
}

impl Bound for Response<'_> {
    fn binding(&self) -> &Binding {
        &self.binding
    }
}

impl Bound for Fallback<'_> {
    fn binding(&self) -> &Binding {
        &self.binding
    }
}

/// Checks that `binding` names `query` and is valid at `now` (SPEC.md §10.4). Also used for
/// fallback documents, which are not signed themselves but pinned by a signed hash.
pub fn check_binding(binding: &Binding, query: &Sha256Digest, now: u64) -> Result<(), VerifyError> {
    if binding.query != *query {
        return Err(VerifyError::WrongQuery { expected: query.to_hex(), found: binding.query.to_hex() });
    }
    let window = binding.expires.saturating_sub(binding.issued);
    if window > MAX_VALIDITY_SECS {
        return Err(VerifyError::WindowTooLong { secs: window, max: MAX_VALIDITY_SECS });
    }
    if binding.issued > now.saturating_add(MAX_CLOCK_SKEW_SECS) {
        return Err(VerifyError::NotYetValid { issued: binding.issued, now });
    }
    if now >= binding.expires {
        return Err(VerifyError::Expired { expires: binding.expires, now });
    }
    Ok(())
}

/// Why a fetched fallback document was refused (SPEC.md §8.3).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DocumentError {
    /// Not the length the signed fallback gives.
    #[error("fallback document is {len} bytes, the signed fallback says {expected}")]
    SizeMismatch {
        /// Its length.
        len: u64,
        /// The signed `size`.
        expected: u64,
    },
    /// Not the hash the signed fallback gives.
    #[error("fallback document hashes to {found}, the signed fallback says {expected}")]
    HashMismatch {
        /// The signed `sha256`.
        expected: Sha256Digest,
        /// Its actual SHA-256.
        found: Sha256Digest,
    },
    /// The document does not decode.
    #[error("fallback document: {0}")]
    Body(#[from] BodyError),
    /// Its `for`, `issued` or `expires` differ from the signed fallback's.
    #[error("fallback document does not carry the binding of its signed fallback")]
    BindingMismatch,
    /// The binding does not check out now.
    #[error("fallback document: {0}")]
    Verify(#[from] VerifyError),
    /// A module document does not answer the module the signed fallback names for it.
    #[error("module document {index} answers {found}, the signed fallback says {expected}")]
    WrongModule {
        /// Its place in the fallback's list, from 0.
        index: usize,
        /// The module the fallback names.
        expected: String,
        /// What the document holds (`-` when it is not one module).
        found: String,
    },
    /// The documents together are larger than a response may be.
    #[error("module documents are {len} bytes together, more than the {max} a response may be")]
    TooLarge {
        /// Their length together.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Not one document per module document the fallback names.
    #[error("{found} module documents for a fallback that names {expected}")]
    WrongCount {
        /// How many the fallback names.
        expected: usize,
        /// How many were given.
        found: usize,
    },
}

/// Checks fetched `bytes` against the `size` and `sha256` a signed fallback pins them to:
/// length, then SHA-256, before any parsing.
pub(crate) fn check_pinned(bytes: &[u8], size: u64, sha256: &Sha256Digest) -> Result<(), DocumentError> {
    let len = bytes.len() as u64;
    if len != size {
        return Err(DocumentError::SizeMismatch { len, expected: size });
    }
    let found = Sha256Digest::of(bytes);
    if found != *sha256 {
        return Err(DocumentError::HashMismatch { expected: *sha256, found });
    }
    Ok(())
}

impl Fallback<'_> {
    /// Opens a fetched document against this (verified) fallback: length and SHA-256 first,
    /// before any parsing, then the decode, then the binding, which must equal the fallback's
    /// and still be valid at `now`.
    pub fn open_document<'d>(&self, bytes: &'d [u8], now: u64) -> Result<Response<'d>, DocumentError> {
        check_pinned(bytes, self.size, &self.sha256)?;
        let response = Response::decode(bytes)?;
        if response.binding != self.binding {
            return Err(DocumentError::BindingMismatch);
        }
        check_binding(&response.binding, &self.binding.query, now)?;
        Ok(response)
    }
}

impl<'a, T: Bound> SignedReply<'a, T> {
    /// Verifies signature, query binding, nonce and validity window; only then hands out the
    /// body. A batch-signed reply (SPEC.md §10.3.1) is checked the same way, its signature over
    /// the batch root that its audit path leads to from this answer.
    pub fn verify(&self, expect: &Expectation<'_>) -> Result<&T, VerifyError> {
        // A nonce is echoed if and only if the query carried one (SPEC.md §3.3).
        if self.nonce != expect.nonce {
            return Err(VerifyError::NonceMismatch);
        }
        expect.keys.verify(self.kind, self.nonce.as_ref(), self.raw_body, &self.signature)?;
        check_binding(self.body.binding(), &expect.query, expect.now)?;
        Ok(&self.body)
    }

    /// The body before verification: for debugging and inspection tools only.
    pub fn body_unverified(&self) -> &T {
        &self.body
    }

    /// The exact signed body bytes.
    pub fn raw_body(&self) -> &'a [u8] {
        self.raw_body
    }
}

fn body_error(kind: MessageKind) -> impl Fn(BodyError) -> DecodeError {
    move |source| DecodeError::Body { kind: kind.name(), source }
}

impl<'a> Datagram<'a> {
    /// Decodes a whole datagram: layout first ([`Frame::decode`]), then the body.
    ///
    /// ```
    /// use upgram_core::message::{Datagram, Message};
    /// // Vector 01 of protocol-spec/vectors: the minimal query.
    /// let bytes = hex::decode(
    ///     "5550474d010100000102030405060708003000003c71756572793e3c6d6f6475\
    ///      6c652069643d22636f7265222076657273696f6e3d22312e32222f3e3c2f7175\
    ///      6572793e",
    /// ).unwrap();
    /// let datagram = Datagram::decode(&bytes)?;
    /// let Message::Query(query) = &datagram.message else { panic!() };
    /// assert_eq!(query.query.modules[0].id, "core");
    /// # Ok::<(), upgram_core::error::DecodeError>(())
    /// ```
    pub fn decode(bytes: &'a [u8]) -> Result<Self, DecodeError> {
        let frame = Frame::decode(bytes)?;
        Self::from_frame(&frame)
    }

    /// Decodes the body of an already decoded frame.
    pub fn from_frame(frame: &Frame<'a>) -> Result<Self, DecodeError> {
        let kind = frame.kind;
        let message = match kind {
            MessageKind::Query => Message::Query(QueryMessage {
                query: Query::decode(frame.body).map_err(body_error(kind))?,
                raw_body: frame.body,
                client_cookie: frame.client_cookie,
                server_cookie: frame.server_cookie,
                nonce: frame.nonce,
                padding: frame.padding,
            }),
            MessageKind::Response => {
                let body = Response::decode(frame.body).map_err(body_error(kind))?;
                Message::Response(SignedReply::from_frame(frame, body))
            }
            MessageKind::Fallback => {
                let body = Fallback::decode(frame.body).map_err(body_error(kind))?;
                Message::Fallback(SignedReply::from_frame(frame, body))
            }
            MessageKind::Error => Message::Error(ErrorBody::decode(frame.body).map_err(body_error(kind))?),
            MessageKind::CookieChallenge => Message::CookieChallenge(CookieChallenge {
                client_cookie: frame.client_cookie,
                // The frame decoder requires the SERVER_COOKIE flag for this kind.
                server_cookie: frame.server_cookie.ok_or(DecodeError::FlagNotAllowed {
                    kind: kind.name(),
                    flag: "SERVER_COOKIE",
                    problem: "required",
                })?,
            }),
            MessageKind::Report => Message::Report(ReportMessage {
                report: Report::decode(frame.body).map_err(body_error(kind))?,
                client_cookie: frame.client_cookie,
                server_cookie: frame.server_cookie,
            }),
            MessageKind::ReportAck => Message::ReportAck,
        };
        Ok(Datagram { request_id: frame.request_id, message, raw_body: frame.body })
    }

    /// The frame this datagram encodes to, with the body as it was received.
    pub fn to_frame(&self) -> Frame<'a> {
        let mut frame = Frame {
            kind: self.kind(),
            request_id: self.request_id,
            body: self.raw_body,
            client_cookie: None,
            server_cookie: None,
            nonce: None,
            signature: None,
            padding: 0,
        };
        match &self.message {
            Message::Query(q) => {
                frame.client_cookie = q.client_cookie;
                frame.server_cookie = q.server_cookie;
                frame.nonce = q.nonce;
                frame.padding = q.padding;
            }
            Message::Response(r) => r.fill(&mut frame),
            Message::Fallback(r) => r.fill(&mut frame),
            Message::Error(_) => {}
            Message::CookieChallenge(c) => {
                frame.client_cookie = c.client_cookie;
                frame.server_cookie = Some(c.server_cookie);
            }
            Message::Report(r) => {
                frame.client_cookie = r.client_cookie;
                frame.server_cookie = r.server_cookie;
            }
            Message::ReportAck => {}
        }
        frame
    }

    /// Re-encodes the datagram into `buf`.
    pub fn encode(&self, buf: &mut impl BufMut) -> Result<usize, EncodeError> {
        self.to_frame().encode(buf)
    }

    /// The message kind.
    pub fn kind(&self) -> MessageKind {
        match &self.message {
            Message::Query(_) => MessageKind::Query,
            Message::Response(_) => MessageKind::Response,
            Message::Fallback(_) => MessageKind::Fallback,
            Message::Error(_) => MessageKind::Error,
            Message::CookieChallenge(_) => MessageKind::CookieChallenge,
            Message::Report(_) => MessageKind::Report,
            Message::ReportAck => MessageKind::ReportAck,
        }
    }
}

impl<'a, T> SignedReply<'a, T> {
    fn from_frame(frame: &Frame<'a>, body: T) -> Self {
        SignedReply {
            body,
            raw_body: frame.body,
            kind: frame.kind,
            server_cookie: frame.server_cookie,
            nonce: frame.nonce,
            // Present: the frame decoder reads a signature block for every signed kind.
            signature: frame.signature.unwrap_or(SignatureBlock::single(crate::sign::KeyId([0; 8]), [0; 64])),
        }
    }

    fn fill(&self, frame: &mut Frame<'_>) {
        frame.server_cookie = self.server_cookie;
        frame.nonce = self.nonce;
        frame.signature = Some(self.signature);
    }
}
