//! The attribute value types of the bodies (SPEC.md §4.2): ID, PATH, V, U64, HEX64, URL, flags.

use std::borrow::Cow;

use crate::digest::Sha256Digest;
use crate::error::BodyError;
use crate::limits::{MAX_FILE_ID_LEN, MAX_MODULE_ID_LEN};
use crate::version::Version;

/// Whether `id` is a valid module id: 1 to 128 bytes of `[A-Za-z0-9._-]`.
pub fn is_valid_module_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_MODULE_ID_LEN
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Whether `path` is a valid file id: a relative path of 1 to 255 bytes whose `/`-separated
/// segments are neither empty, `.` nor `..`, without `\`, `:` or control characters. A file id
/// can never name anything outside the installation root.
pub fn is_valid_file_id(path: &str) -> bool {
    !path.is_empty()
        && path.len() <= MAX_FILE_ID_LEN
        && !path.chars().any(|c| c.is_control() || c == '\\' || c == ':')
        && path.split('/').all(|segment| !matches!(segment, "" | "." | ".."))
}

/// Whether `url` is acceptable: printable ASCII without spaces (RFC 3986 percent-encodes the
/// rest); absolute (`http://` or `https://`) or, when `relative_ok`, relative (no scheme, not
/// starting with `/`).
pub fn is_valid_url(url: &str, relative_ok: bool) -> bool {
    if url.is_empty() || !url.bytes().all(|b| b.is_ascii_graphic()) {
        return false;
    }
    match url.split_once("://") {
        Some((scheme, rest)) => matches!(scheme, "http" | "https") && !rest.is_empty(),
        None => relative_ok && !url.starts_with('/'),
    }
}

/// Converts attribute values of one element, naming the element and its id in errors.
pub(crate) struct Fields<'c> {
    element: &'static str,
    id: Option<&'c str>,
}

impl<'c> Fields<'c> {
    /// Fields of `element`, identified in messages by `id` when it has one.
    pub fn new(element: &'static str, id: Option<&'c str>) -> Self {
        Self { element, id }
    }

    fn context(&self) -> String {
        match self.id {
            Some(id) => format!(" id=\"{}\"", id.escape_debug()),
            None => String::new(),
        }
    }

    /// An `invalid-attribute` error for `attribute`.
    pub fn invalid(&self, attribute: &'static str, reason: impl Into<String>) -> BodyError {
        BodyError::InvalidAttribute { element: self.element, attribute, context: self.context(), reason: reason.into() }
    }

    /// `value`, or a `missing-attribute` error.
    pub fn required<T>(&self, attribute: &'static str, value: Option<T>) -> Result<T, BodyError> {
        value.ok_or_else(|| BodyError::MissingAttribute { element: self.element, attribute, context: self.context() })
    }

    /// A decimal unsigned integer without sign or leading zeros.
    pub fn number(&self, attribute: &'static str, value: &str) -> Result<u64, BodyError> {
        let canonical =
            !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) && (value == "0" || !value.starts_with('0'));
        if !canonical {
            return Err(self.invalid(attribute, format!("`{}` is not a number", value.escape_debug())));
        }
        value.parse().map_err(|_| self.invalid(attribute, "number too large"))
    }

    /// A number that fits `T`.
    pub fn small_number<T: TryFrom<u64>>(&self, attribute: &'static str, value: &str) -> Result<T, BodyError> {
        let n = self.number(attribute, value)?;
        T::try_from(n).map_err(|_| self.invalid(attribute, format!("{n} is out of range")))
    }

    /// 64 lowercase hex digits.
    pub fn digest(&self, attribute: &'static str, value: &str) -> Result<Sha256Digest, BodyError> {
        Sha256Digest::from_hex(value)
            .ok_or_else(|| self.invalid(attribute, "not a SHA-256 digest (64 lowercase hex digits)"))
    }

    /// `1`/`true` or `0`/`false`.
    pub fn flag(&self, attribute: &'static str, value: &str) -> Result<bool, BodyError> {
        match value {
            "1" | "true" => Ok(true),
            "0" | "false" => Ok(false),
            _ => Err(self.invalid(attribute, format!("`{}` is not a boolean", value.escape_debug()))),
        }
    }

    /// A version (SPEC.md §6).
    pub fn version<'a>(&self, attribute: &'static str, value: Cow<'a, str>) -> Result<Version<'a>, BodyError> {
        Version::from_cow(value).map_err(|e| self.invalid(attribute, e.to_string()))
    }

    /// A module id.
    pub fn module_id<'a>(&self, attribute: &'static str, value: Cow<'a, str>) -> Result<Cow<'a, str>, BodyError> {
        if is_valid_module_id(&value) {
            Ok(value)
        } else {
            Err(self.invalid(attribute, "not a module id (1-128 of A-Z a-z 0-9 . _ -)"))
        }
    }

    /// A file id.
    pub fn file_id<'a>(&self, attribute: &'static str, value: Cow<'a, str>) -> Result<Cow<'a, str>, BodyError> {
        if is_valid_file_id(&value) { Ok(value) } else { Err(self.invalid(attribute, "not a safe relative path")) }
    }

    /// A URL, relative ones allowed when `relative_ok`.
    pub fn url<'a>(
        &self,
        attribute: &'static str,
        value: Cow<'a, str>,
        relative_ok: bool,
    ) -> Result<Cow<'a, str>, BodyError> {
        if is_valid_url(&value, relative_ok) {
            Ok(value)
        } else if relative_ok {
            Err(self.invalid(attribute, "not an http(s) URL or a relative URL"))
        } else {
            Err(self.invalid(attribute, "not an absolute http(s) URL"))
        }
    }
}
