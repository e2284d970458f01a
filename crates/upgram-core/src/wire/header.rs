//! The fixed 20-byte header (SPEC.md §3.1), parsed with nom.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                     magic "UPGM" (55 50 47 4D)                |
//! +---------------+---------------+-------------------------------+
//! |    version    |     kind      |             flags             |
//! +---------------+---------------+-------------------------------+
//! |                                                               |
//! +                      request id (64 bits)                     +
//! |                                                               |
//! +-------------------------------+-------------------------------+
//! |          body length          |        padding length         |
//! +-------------------------------+-------------------------------+
//! ```

use bytes::BufMut;
use nom::{
    IResult, Parser,
    bytes::complete::take,
    number::complete::{be_u8, be_u16, be_u64},
};
use serde::Serialize;

use crate::error::DecodeError;
use crate::limits::HEADER_LEN;

/// The four magic bytes that open every upgram datagram.
pub const MAGIC: [u8; 4] = *b"UPGM";
/// The protocol version this implementation speaks.
pub const PROTOCOL_VERSION: u8 = 1;

/// What a datagram carries (SPEC.md §3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum MessageKind {
    /// A client's query (kind 1).
    Query = 1,
    /// A signed answer with the response body inline (kind 2).
    Response = 2,
    /// A signed answer that points at the full response document (kind 3).
    Fallback = 3,
    /// An unsigned, advisory error (kind 4).
    Error = 4,
    /// An unsigned cookie challenge: retry with this server cookie (kind 5).
    CookieChallenge = 5,
    /// A client's install report (kind 6), unsigned.
    Report = 6,
    /// An unsigned acknowledgement of a report, without body (kind 7).
    ReportAck = 7,
}

impl MessageKind {
    /// The kind for its wire byte.
    pub fn from_byte(byte: u8) -> Option<Self> {
        Some(match byte {
            1 => Self::Query,
            2 => Self::Response,
            3 => Self::Fallback,
            4 => Self::Error,
            5 => Self::CookieChallenge,
            6 => Self::Report,
            7 => Self::ReportAck,
            _ => return None,
        })
    }

    /// Its name as the spec writes it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Query => "query",
            Self::Response => "response",
            Self::Fallback => "fallback",
            Self::Error => "error",
            Self::CookieChallenge => "cookie-challenge",
            Self::Report => "report",
            Self::ReportAck => "report-ack",
        }
    }

    /// Whether datagrams of this kind never have a body (cookie challenge, report
    /// acknowledgement).
    pub fn is_bodiless(self) -> bool {
        matches!(self, Self::CookieChallenge | Self::ReportAck)
    }

    /// Whether datagrams of this kind carry a key id and an Ed25519 signature.
    pub fn is_signed(self) -> bool {
        matches!(self, Self::Response | Self::Fallback)
    }
}

/// The header's flag bits (SPEC.md §3.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Flags(pub u16);

impl Flags {
    /// The trailer carries an 8-byte client cookie.
    pub const CLIENT_COOKIE: u16 = 0x0001;
    /// The trailer carries a 16-byte server cookie.
    pub const SERVER_COOKIE: u16 = 0x0002;
    /// The trailer carries a 16-byte nonce (nonce-bound signature).
    pub const NONCE: u16 = 0x0004;
    /// The signature covers a batch of answers: the trailer carries this answer's position
    /// and its audit path to the signed Merkle root (responses and fallbacks only).
    pub const BATCH: u16 = 0x0008;
    /// Every defined bit; the others are reserved.
    pub const DEFINED: u16 = Self::CLIENT_COOKIE | Self::SERVER_COOKIE | Self::NONCE | Self::BATCH;

    /// Whether `bit` is set.
    pub fn has(self, bit: u16) -> bool {
        self.0 & bit != 0
    }
}

/// The decoded fixed header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Protocol version (always [`PROTOCOL_VERSION`] once decoded).
    pub version: u8,
    /// Message kind.
    pub kind: MessageKind,
    /// Flag bits.
    pub flags: Flags,
    /// Random id chosen by the client and echoed by every reply.
    pub request_id: u64,
    /// Length of the body that follows the header.
    pub body_len: u16,
    /// Length of the zero padding at the end of the datagram.
    pub pad_len: u16,
}

struct RawHeader<'b> {
    magic: &'b [u8],
    version: u8,
    kind: u8,
    flags: u16,
    request_id: u64,
    body_len: u16,
    pad_len: u16,
}

fn raw_header(input: &[u8]) -> IResult<&[u8], RawHeader<'_>> {
    let (rest, (magic, version, kind, flags, request_id, body_len, pad_len)) =
        (take(4usize), be_u8, be_u8, be_u16, be_u64, be_u16, be_u16).parse(input)?;
    Ok((rest, RawHeader { magic, version, kind, flags, request_id, body_len, pad_len }))
}

impl Header {
    /// Decodes the header at the start of `bytes`, returning it and the bytes after it.
    ///
    /// Checks, in this order: length, magic, version, kind, reserved flags.
    pub fn decode(bytes: &[u8]) -> Result<(Header, &[u8]), DecodeError> {
        let Ok((rest, raw)) = raw_header(bytes) else {
            return Err(DecodeError::Truncated { needed: HEADER_LEN, len: bytes.len() });
        };
        if raw.magic != MAGIC {
            return Err(DecodeError::BadMagic);
        }
        if raw.version != PROTOCOL_VERSION {
            return Err(DecodeError::UnsupportedVersion { version: raw.version });
        }
        let kind = MessageKind::from_byte(raw.kind).ok_or(DecodeError::UnknownKind { kind: raw.kind })?;
        let reserved = raw.flags & !Flags::DEFINED;
        if reserved != 0 {
            return Err(DecodeError::UnknownFlags { flags: reserved });
        }
        let header = Header {
            version: raw.version,
            kind,
            flags: Flags(raw.flags),
            request_id: raw.request_id,
            body_len: raw.body_len,
            pad_len: raw.pad_len,
        };
        Ok((header, rest))
    }

    /// Writes the 20 header bytes.
    pub fn encode(&self, buf: &mut impl BufMut) {
        buf.put_slice(&MAGIC);
        buf.put_u8(self.version);
        buf.put_u8(self.kind as u8);
        buf.put_u16(self.flags.0);
        buf.put_u64(self.request_id);
        buf.put_u16(self.body_len);
        buf.put_u16(self.pad_len);
    }
}

/// Reads the protocol version and request id of anything that starts like an upgram datagram,
/// whatever its version: what a server needs to answer "unsupported version" (SPEC.md §9.1).
pub fn peek_version_and_id(bytes: &[u8]) -> Option<(u8, u64)> {
    let (_, raw) = raw_header(bytes).ok()?;
    (raw.magic == MAGIC).then_some((raw.version, raw.request_id))
}
