//! The datagram layout around the body (SPEC.md §3): header ‖ body ‖ trailer ‖ padding.
//!
//! A [`Frame`] is a datagram with its body still raw: enough to check lengths, flags, cookies
//! and signatures, or to look a query up in a cache by its exact body bytes, before any XML is
//! parsed. [`crate::message`] decodes the body on top of it.

use bytes::BufMut;

use crate::cookie::{ClientCookie, ServerCookie};
use crate::error::{DecodeError, EncodeError};
use crate::limits::{HEADER_LEN, MAX_DATAGRAM_LEN};
use crate::sign::{BatchProof, KeyId, Nonce, SignatureBlock, TreeHash};
use crate::wire::header::{Flags, Header, MessageKind, PROTOCOL_VERSION};

/// A datagram with its body still raw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame<'b> {
    /// Message kind.
    pub kind: MessageKind,
    /// The request id of the query (echoed by replies).
    pub request_id: u64,
    /// The body bytes (XML, or empty for a cookie challenge).
    pub body: &'b [u8],
    /// 8-byte client cookie (flag `CLIENT_COOKIE`).
    pub client_cookie: Option<ClientCookie>,
    /// 16-byte server cookie (flag `SERVER_COOKIE`).
    pub server_cookie: Option<ServerCookie>,
    /// 16-byte nonce (flag `NONCE`).
    pub nonce: Option<Nonce>,
    /// Key id and signature, and for a batch-signed reply its batch trailer: present exactly in
    /// response and fallback datagrams.
    pub signature: Option<SignatureBlock>,
    /// Number of zero padding bytes (queries only).
    pub padding: usize,
}

/// The flag rules of one message kind (SPEC.md §3.3, table 2).
struct FlagRule {
    allowed: u16,
    required: u16,
}

fn flag_rule(kind: MessageKind) -> FlagRule {
    match kind {
        MessageKind::Query => {
            FlagRule { allowed: Flags::CLIENT_COOKIE | Flags::SERVER_COOKIE | Flags::NONCE, required: 0 }
        }
        MessageKind::Response | MessageKind::Fallback => {
            FlagRule { allowed: Flags::SERVER_COOKIE | Flags::NONCE | Flags::BATCH, required: 0 }
        }
        MessageKind::Error => FlagRule { allowed: 0, required: 0 },
        MessageKind::CookieChallenge => {
            FlagRule { allowed: Flags::CLIENT_COOKIE | Flags::SERVER_COOKIE, required: Flags::SERVER_COOKIE }
        }
        MessageKind::Report => FlagRule { allowed: Flags::CLIENT_COOKIE | Flags::SERVER_COOKIE, required: 0 },
        MessageKind::ReportAck => FlagRule { allowed: 0, required: 0 },
    }
}

fn flag_name(bit: u16) -> &'static str {
    match bit {
        Flags::CLIENT_COOKIE => "CLIENT_COOKIE",
        Flags::SERVER_COOKIE => "SERVER_COOKIE",
        Flags::BATCH => "BATCH",
        _ => "NONCE",
    }
}

fn check_flags(kind: MessageKind, flags: Flags) -> Result<(), DecodeError> {
    let rule = flag_rule(kind);
    for bit in [Flags::CLIENT_COOKIE, Flags::SERVER_COOKIE, Flags::NONCE, Flags::BATCH] {
        let problem = if flags.has(bit) && rule.allowed & bit == 0 {
            "not allowed"
        } else if !flags.has(bit) && rule.required & bit != 0 {
            "required"
        } else {
            continue;
        };
        return Err(DecodeError::FlagNotAllowed { kind: kind.name(), flag: flag_name(bit), problem });
    }
    // A server cookie in a query or report is only meaningful with the client cookie it was
    // made for.
    if matches!(kind, MessageKind::Query | MessageKind::Report)
        && flags.has(Flags::SERVER_COOKIE)
        && !flags.has(Flags::CLIENT_COOKIE)
    {
        return Err(DecodeError::FlagNotAllowed {
            kind: kind.name(),
            flag: "CLIENT_COOKIE",
            problem: "required (with SERVER_COOKIE)",
        });
    }
    Ok(())
}

/// Length of the trailer that `kind` and `flags` call for; with BATCH, up to the depth and
/// index: the audit path (32 bytes a level, as the depth byte says) comes on top.
pub fn trailer_len(kind: MessageKind, flags: Flags) -> usize {
    let mut len = 0;
    if flags.has(Flags::CLIENT_COOKIE) {
        len += ClientCookie::LEN;
    }
    if flags.has(Flags::SERVER_COOKIE) {
        len += ServerCookie::LEN;
    }
    if flags.has(Flags::NONCE) {
        len += Nonce::LEN;
    }
    if kind.is_signed() {
        len += SignatureBlock::LEN;
        if flags.has(Flags::BATCH) {
            len += BatchProof::FIXED_LEN;
        }
    }
    len
}

/// Splits off the first `N` bytes; the caller has checked the length.
fn take_array<const N: usize>(bytes: &mut &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    let (head, tail) = bytes.split_at(N.min(bytes.len()));
    out[..head.len()].copy_from_slice(head);
    *bytes = tail;
    out
}

/// Reads the key id, signature and (with BATCH) batch trailer; the caller has checked the
/// length.
fn take_signature(rest: &mut &[u8], flags: Flags) -> Result<SignatureBlock, DecodeError> {
    let key_id = KeyId(take_array(rest));
    let signature = take_array(rest);
    let batch = if flags.has(Flags::BATCH) {
        let [depth, index] = take_array(rest);
        let mut path = [[0u8; 32]; crate::limits::MAX_BATCH_DEPTH];
        let depth = usize::from(depth).min(path.len());
        for slot in &mut path[..depth] {
            *slot = take_array::<32>(rest);
        }
        let path: &[TreeHash] = &path[..depth];
        Some(BatchProof::new(index, path)?)
    } else {
        None
    };
    Ok(SignatureBlock { key_id, signature, batch })
}

impl<'b> Frame<'b> {
    /// Decodes the layout of a whole datagram, leaving the body raw.
    ///
    /// Rejects datagrams over [`MAX_DATAGRAM_LEN`] before reading anything, and any byte that
    /// the header does not account for.
    pub fn decode(bytes: &'b [u8]) -> Result<Frame<'b>, DecodeError> {
        if bytes.len() > MAX_DATAGRAM_LEN {
            return Err(DecodeError::TooLarge { len: bytes.len(), max: MAX_DATAGRAM_LEN });
        }
        let (header, rest) = Header::decode(bytes)?;
        check_flags(header.kind, header.flags)?;
        let body_len = usize::from(header.body_len);
        let pad_len = usize::from(header.pad_len);
        let mut trailer = trailer_len(header.kind, header.flags);
        let fixed = HEADER_LEN + body_len + trailer + pad_len;
        if bytes.len() < fixed {
            return Err(DecodeError::Truncated { needed: fixed, len: bytes.len() });
        }
        if header.kind.is_signed() && header.flags.has(Flags::BATCH) {
            // Depth and index open the batch trailer, right after the signature.
            let at = HEADER_LEN + body_len + trailer - BatchProof::FIXED_LEN;
            let (depth, index) = (bytes[at], bytes[at + 1]);
            BatchProof::check_position(depth, index)?;
            trailer += 32 * usize::from(depth);
        }
        let needed = HEADER_LEN + body_len + trailer + pad_len;
        if bytes.len() < needed {
            return Err(DecodeError::Truncated { needed, len: bytes.len() });
        }
        if bytes.len() > needed {
            return Err(DecodeError::LengthMismatch { extra: bytes.len() - needed });
        }
        if pad_len > 0 && header.kind != MessageKind::Query {
            return Err(DecodeError::PaddingNotAllowed { kind: header.kind.name(), len: pad_len });
        }
        if body_len > 0 && header.kind.is_bodiless() {
            return Err(DecodeError::BodyNotAllowed { kind: header.kind.name(), len: body_len });
        }
        let (body, mut rest) = rest.split_at(body_len);
        let flags = header.flags;
        let client_cookie = flags.has(Flags::CLIENT_COOKIE).then(|| ClientCookie(take_array(&mut rest)));
        let server_cookie = flags.has(Flags::SERVER_COOKIE).then(|| ServerCookie(take_array(&mut rest)));
        let nonce = flags.has(Flags::NONCE).then(|| Nonce(take_array(&mut rest)));
        let signature = if header.kind.is_signed() { Some(take_signature(&mut rest, flags)?) } else { None };
        if let Some(pos) = rest.iter().position(|&b| b != 0) {
            return Err(DecodeError::NonZeroPadding { offset: needed - pad_len + pos });
        }
        Ok(Frame {
            kind: header.kind,
            request_id: header.request_id,
            body,
            client_cookie,
            server_cookie,
            nonce,
            signature,
            padding: pad_len,
        })
    }

    /// The flags this frame's optional fields call for.
    pub fn flags(&self) -> Flags {
        let mut bits = 0;
        if self.client_cookie.is_some() {
            bits |= Flags::CLIENT_COOKIE;
        }
        if self.server_cookie.is_some() {
            bits |= Flags::SERVER_COOKIE;
        }
        if self.nonce.is_some() {
            bits |= Flags::NONCE;
        }
        if self.signature.is_some_and(|block| block.batch.is_some()) {
            bits |= Flags::BATCH;
        }
        Flags(bits)
    }

    /// Length of the encoded datagram.
    pub fn encoded_len(&self) -> usize {
        let path = self.signature.and_then(|block| block.batch).map_or(0, |batch| 32 * batch.depth());
        HEADER_LEN + self.body.len() + trailer_len(self.kind, self.flags()) + path + self.padding
    }

    /// Checks that this frame is one the decoder would accept, except for its length.
    fn check_shape(&self) -> Result<(), EncodeError> {
        let invalid = |reason| Err(EncodeError::InvalidFrame { reason });
        if check_flags(self.kind, self.flags()).is_err() {
            return invalid("its cookies or nonce are not allowed for its kind");
        }
        if self.kind.is_signed() != self.signature.is_some() {
            return invalid("responses and fallbacks, and only they, carry a signature");
        }
        if self.padding > 0 && self.kind != MessageKind::Query {
            return invalid("only queries are padded");
        }
        if !self.body.is_empty() && self.kind.is_bodiless() {
            return invalid("cookie challenges and report acknowledgements have no body");
        }
        Ok(())
    }

    /// Writes the datagram into `buf`, returning its length.
    ///
    /// Fails with [`EncodeError::TooLarge`] past [`MAX_DATAGRAM_LEN`], writing nothing.
    pub fn encode(&self, buf: &mut impl BufMut) -> Result<usize, EncodeError> {
        self.check_shape()?;
        let len = self.encoded_len();
        if len > MAX_DATAGRAM_LEN {
            return Err(EncodeError::TooLarge { len, max: MAX_DATAGRAM_LEN });
        }
        if buf.remaining_mut() < len {
            return Err(EncodeError::BufferTooSmall { len, room: buf.remaining_mut() });
        }
        let header = Header {
            version: PROTOCOL_VERSION,
            kind: self.kind,
            flags: self.flags(),
            request_id: self.request_id,
            // Both fit: the whole datagram is at most 1024 bytes.
            body_len: self.body.len() as u16,
            pad_len: self.padding as u16,
        };
        header.encode(buf);
        buf.put_slice(self.body);
        if let Some(cookie) = &self.client_cookie {
            buf.put_slice(&cookie.0);
        }
        if let Some(cookie) = &self.server_cookie {
            buf.put_slice(&cookie.0);
        }
        if let Some(nonce) = &self.nonce {
            buf.put_slice(&nonce.0);
        }
        if let Some(block) = &self.signature {
            buf.put_slice(&block.key_id.0);
            buf.put_slice(&block.signature);
            if let Some(batch) = &block.batch {
                // Both fit a byte: BatchProof keeps depth ≤ 6 and index < 2^depth.
                buf.put_u8(batch.depth() as u8);
                buf.put_u8(batch.index() as u8);
                for hash in batch.path() {
                    buf.put_slice(hash);
                }
            }
        }
        buf.put_bytes(0, self.padding);
        Ok(len)
    }

    /// Encodes into a new vector.
    pub fn to_vec(&self) -> Result<Vec<u8>, EncodeError> {
        let mut out = Vec::with_capacity(self.encoded_len().min(MAX_DATAGRAM_LEN));
        self.encode(&mut out)?;
        Ok(out)
    }
}

/// The optional fields of a query datagram.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueryOptions {
    /// The client's cookie for this server.
    pub client_cookie: Option<ClientCookie>,
    /// The server cookie cached from an earlier challenge or reply (needs `client_cookie`).
    pub server_cookie: Option<ServerCookie>,
    /// A nonce, to ask for a nonce-bound signature.
    pub nonce: Option<Nonce>,
    /// Pad the datagram with zeros up to this length (capped at [`MAX_DATAGRAM_LEN`]); a query
    /// of [`MIN_UNRESTRICTED_QUERY_LEN`](crate::limits::MIN_UNRESTRICTED_QUERY_LEN) bytes or more
    /// may receive any reply without a cookie round trip.
    pub pad_to: usize,
}

impl<'b> Frame<'b> {
    /// A query frame around `body`.
    pub fn query(request_id: u64, body: &'b [u8], options: &QueryOptions) -> Frame<'b> {
        let mut frame = Frame {
            kind: MessageKind::Query,
            request_id,
            body,
            client_cookie: options.client_cookie,
            server_cookie: options.server_cookie,
            nonce: options.nonce,
            signature: None,
            padding: 0,
        };
        let unpadded = frame.encoded_len();
        frame.padding = options.pad_to.min(MAX_DATAGRAM_LEN).saturating_sub(unpadded);
        frame
    }

    /// A signed reply frame (response or fallback) around `body`, without server cookie; the
    /// nonce is the query's, echoed (nonce-bound mode).
    pub fn reply(
        kind: MessageKind,
        request_id: u64,
        body: &'b [u8],
        nonce: Option<Nonce>,
        signature: SignatureBlock,
    ) -> Frame<'b> {
        Frame {
            kind,
            request_id,
            body,
            client_cookie: None,
            server_cookie: None,
            nonce,
            signature: Some(signature),
            padding: 0,
        }
    }

    /// An error frame around an encoded error body.
    pub fn error(request_id: u64, body: &'b [u8]) -> Frame<'b> {
        Frame {
            kind: MessageKind::Error,
            request_id,
            body,
            client_cookie: None,
            server_cookie: None,
            nonce: None,
            signature: None,
            padding: 0,
        }
    }

    /// A report frame around an encoded report body, with the client's cookies.
    pub fn report(
        request_id: u64,
        body: &'b [u8],
        client_cookie: Option<ClientCookie>,
        server_cookie: Option<ServerCookie>,
    ) -> Frame<'b> {
        Frame {
            kind: MessageKind::Report,
            request_id,
            body,
            client_cookie,
            server_cookie,
            nonce: None,
            signature: None,
            padding: 0,
        }
    }

    /// A report acknowledgement: "the report with this request id arrived" (20 bytes).
    pub fn report_ack(request_id: u64) -> Frame<'static> {
        Frame {
            kind: MessageKind::ReportAck,
            request_id,
            body: &[],
            client_cookie: None,
            server_cookie: None,
            nonce: None,
            signature: None,
            padding: 0,
        }
    }

    /// A cookie challenge: "ask again with this server cookie".
    pub fn cookie_challenge(
        request_id: u64,
        client_cookie: Option<ClientCookie>,
        server_cookie: ServerCookie,
    ) -> Frame<'static> {
        Frame {
            kind: MessageKind::CookieChallenge,
            request_id,
            body: &[],
            client_cookie,
            server_cookie: Some(server_cookie),
            nonce: None,
            signature: None,
            padding: 0,
        }
    }
}
