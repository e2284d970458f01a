//! The error body (SPEC.md §4.6, §9): an unsigned, advisory message that is never larger than
//! the query that caused it.

use std::borrow::Cow;

use serde::{Serialize, Serializer};

use crate::body::value::Fields;
use crate::body::xml::{write_attribute, write_number};
use crate::body::{finish_leaf, parse_document};
use crate::error::BodyError;

/// Error codes (SPEC.md §9.1, §9.2): message-level (1-19) and module-level (20-39).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// 1: the query could not be decoded.
    MalformedQuery,
    /// 2: the protocol version is not spoken; `supported` lists those that are.
    UnsupportedVersion,
    /// 3: too many queries from this source; retry after `retry-after` seconds.
    RateLimited,
    /// 4: a transient server failure.
    ServerError,
    /// 5: the query exceeds a limit of the server.
    QueryTooLarge,
    /// 20: the module exists but has no release for this client.
    NoRelease,
    /// 21: the module's dependencies cannot be resolved.
    DependencyUnresolvable,
    /// 22: an internal error for this module.
    ModuleError,
    /// A code this implementation does not know.
    Other(u16),
}

impl ErrorCode {
    /// Its number.
    pub fn code(self) -> u16 {
        match self {
            Self::MalformedQuery => 1,
            Self::UnsupportedVersion => 2,
            Self::RateLimited => 3,
            Self::ServerError => 4,
            Self::QueryTooLarge => 5,
            Self::NoRelease => 20,
            Self::DependencyUnresolvable => 21,
            Self::ModuleError => 22,
            Self::Other(code) => code,
        }
    }

    /// The code for a number.
    pub fn from_code(code: u16) -> Self {
        match code {
            1 => Self::MalformedQuery,
            2 => Self::UnsupportedVersion,
            3 => Self::RateLimited,
            4 => Self::ServerError,
            5 => Self::QueryTooLarge,
            20 => Self::NoRelease,
            21 => Self::DependencyUnresolvable,
            22 => Self::ModuleError,
            other => Self::Other(other),
        }
    }

    /// Its name in the spec.
    pub fn name(self) -> &'static str {
        match self {
            Self::MalformedQuery => "malformed-query",
            Self::UnsupportedVersion => "unsupported-version",
            Self::RateLimited => "rate-limited",
            Self::ServerError => "server-error",
            Self::QueryTooLarge => "query-too-large",
            Self::NoRelease => "no-release",
            Self::DependencyUnresolvable => "dependency-unresolvable",
            Self::ModuleError => "module-internal-error",
            Self::Other(_) => "unknown-code",
        }
    }
}

impl Serialize for ErrorCode {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u16(self.code())
    }
}

/// An error message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ErrorBody<'a> {
    /// What went wrong.
    pub code: ErrorCode,
    /// Seconds to wait before asking again (rate limiting).
    pub retry_after: Option<u32>,
    /// Protocol versions the server speaks (unsupported version), strictly ascending.
    pub supported: Vec<u8>,
    /// Human-readable detail.
    pub message: Option<Cow<'a, str>>,
}

impl<'a> ErrorBody<'a> {
    /// An error with `code` and nothing else.
    pub fn new(code: ErrorCode) -> Self {
        Self { code, retry_after: None, supported: Vec::new(), message: None }
    }

    /// Decodes an error body.
    pub fn decode(bytes: &'a [u8]) -> Result<Self, BodyError> {
        parse_document(bytes, "error", |reader, root| {
            let (mut code, mut retry_after, mut supported, mut message) = (None, None, None, None);
            reader.for_each_attribute(&root, |name, value| {
                match name {
                    "code" => code = Some(value),
                    "retry-after" => retry_after = Some(value),
                    "supported" => supported = Some(value),
                    "message" => message = Some(value),
                    _ => {}
                }
                Ok(())
            })?;
            finish_leaf(reader, &root, "error")?;
            let fields = Fields::new("error", None);
            let code = ErrorCode::from_code(fields.small_number("code", &fields.required("code", code)?)?);
            let retry_after = retry_after.map(|v| fields.small_number("retry-after", &v)).transpose()?;
            let supported = match supported {
                None => Vec::new(),
                Some(list) => {
                    let versions =
                        list.split(' ').map(|v| fields.small_number("supported", v)).collect::<Result<Vec<u8>, _>>()?;
                    // Strictly ascending: each version once, lowest first (SPEC.md §4.6).
                    if versions.windows(2).any(|pair| pair[0] >= pair[1]) {
                        return Err(
                            fields.invalid("supported", format!("`{}` is not strictly ascending", list.escape_debug()))
                        );
                    }
                    versions
                }
            };
            if code == ErrorCode::UnsupportedVersion && supported.is_empty() {
                return Err(BodyError::MissingAttribute {
                    element: "error",
                    attribute: "supported",
                    context: " code=\"2\"".into(),
                });
            }
            Ok(ErrorBody { code, retry_after, supported, message })
        })
    }

    /// Writes the canonical encoding.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"<error");
        write_number(out, "code", u64::from(self.code.code()));
        if let Some(secs) = self.retry_after {
            write_number(out, "retry-after", u64::from(secs));
        }
        if !self.supported.is_empty() {
            let list: Vec<String> = self.supported.iter().map(u8::to_string).collect();
            write_attribute(out, "supported", &list.join(" "));
        }
        if let Some(message) = &self.message {
            write_attribute(out, "message", message);
        }
        out.extend_from_slice(b"/>");
    }

    /// The canonical encoding in a new vector.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        self.encode(&mut out);
        out
    }
}
