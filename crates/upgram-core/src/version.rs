//! Module and file versions, as specified in §6 Versions of `protocol-spec/SPEC.md`.
//!
//! A version is `NUM ("." NUM){0,7} ["-" PRE]`: up to eight numeric segments without leading
//! zeros, each fitting a `u64`, optionally followed by a SemVer 2.0 pre-release (numeric
//! identifiers fitting a `u64` too), at most 64
//! bytes, no build metadata and no whitespace. Versions are totally ordered: numeric segments
//! compare numerically with missing segments counting as 0 (`1.2 == 1.2.0`), a release is
//! greater than any of its pre-releases, and pre-releases compare as in SemVer 2.0 §11.
//!
//! A [`Version`] keeps the text it was parsed from (borrowed when possible) and compares by
//! walking the segments of the two texts, so neither parsing nor comparing allocates.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::str::FromStr;

use nom::bytes::complete::take_while1;
use nom::character::complete::digit1;

/// Longest version text accepted, in bytes.
pub const MAX_VERSION_LEN: usize = 64;

/// Most numeric segments a version may have (`1.2.3.4.5.6.7.8`).
pub const MAX_NUMERIC_SEGMENTS: usize = 8;

/// Why a text is not a valid version.
///
/// Positions are byte offsets into the offending text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VersionError {
    /// The text is empty.
    #[error("version is empty")]
    Empty,
    /// The text is longer than [`MAX_VERSION_LEN`].
    #[error("version is {len} bytes long, at most {MAX_VERSION_LEN} allowed")]
    TooLong {
        /// Length of the text in bytes.
        len: usize,
    },
    /// A numeric segment was expected (at the start, or after a `.`) but is missing.
    #[error("version `{text}`: expected a number at byte {position}")]
    ExpectedNumber {
        /// The offending text.
        text: String,
        /// Where the number should start.
        position: usize,
    },
    /// A numeric segment or numeric pre-release identifier starts with `0` but is not `0`.
    #[error("version `{text}`: number with a leading zero at byte {position}")]
    LeadingZero {
        /// The offending text.
        text: String,
        /// Where the number starts.
        position: usize,
    },
    /// A numeric segment or numeric pre-release identifier does not fit in a `u64`.
    #[error("version `{text}`: number at byte {position} does not fit in 64 bits")]
    NumberTooLarge {
        /// The offending text.
        text: String,
        /// Where the number starts.
        position: usize,
    },
    /// More than [`MAX_NUMERIC_SEGMENTS`] numeric segments.
    #[error(
        "version `{text}`: more than {MAX_NUMERIC_SEGMENTS} numeric segments, the extra one starts at byte {position}"
    )]
    TooManySegments {
        /// The offending text.
        text: String,
        /// Where the first segment past the limit starts.
        position: usize,
    },
    /// A pre-release identifier (after `-` or a `.` of the pre-release) is empty or invalid.
    #[error("version `{text}`: expected a pre-release identifier [0-9A-Za-z-] at byte {position}")]
    ExpectedIdentifier {
        /// The offending text.
        text: String,
        /// Where the identifier should start.
        position: usize,
    },
    /// Build metadata (`+...`) is not part of upgram versions.
    #[error("version `{text}`: build metadata (`+`) at byte {position} is not allowed")]
    BuildMetadata {
        /// The offending text.
        text: String,
        /// Position of the `+`.
        position: usize,
    },
    /// A character that cannot follow what precedes it (whitespace, `_`, a second `-`…).
    #[error("version `{text}`: unexpected character {found:?} at byte {position}")]
    UnexpectedCharacter {
        /// The offending text.
        text: String,
        /// Position of the character.
        position: usize,
        /// The character found.
        found: char,
    },
}

/// A validated version, see the module documentation for syntax and order.
///
/// Equality, ordering and hashing follow the version order, not the text:
/// `1.2` and `1.2.0` are equal and hash alike, although they display differently.
#[derive(Clone)]
pub struct Version<'a> {
    text: Cow<'a, str>,
}

impl<'a> Version<'a> {
    /// Parses and validates `text`, borrowing it (no allocation).
    ///
    /// ```
    /// use upgram_core::version::Version;
    /// let v = Version::parse("1.2-rc.1")?;
    /// assert!(v < Version::parse("1.2.0")?);
    /// # Ok::<(), upgram_core::version::VersionError>(())
    /// ```
    pub fn parse(text: &'a str) -> Result<Version<'a>, VersionError> {
        validate(text)?;
        Ok(Version { text: Cow::Borrowed(text) })
    }

    /// Validates a borrowed or owned text and keeps it as it is.
    pub fn from_cow(text: Cow<'a, str>) -> Result<Version<'a>, VersionError> {
        validate(&text)?;
        Ok(Version { text })
    }

    /// The version text exactly as it was parsed.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The pre-release part after the first `-`, if any.
    pub fn pre_release(&self) -> Option<&str> {
        split_pre_release(&self.text).1
    }

    /// Whether this is a pre-release (has a `-PRE` part).
    pub fn is_pre_release(&self) -> bool {
        self.pre_release().is_some()
    }

    /// A version borrowing this one's text, without copying it.
    pub fn as_borrowed(&self) -> Version<'_> {
        Version { text: Cow::Borrowed(&self.text) }
    }

    /// Detaches the version from the text it borrows (copies it if borrowed).
    pub fn into_owned(self) -> Version<'static> {
        Version { text: Cow::Owned(self.text.into_owned()) }
    }
}

impl fmt::Display for Version<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for Version<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Version").field(&self.as_str()).finish()
    }
}

impl FromStr for Version<'static> {
    type Err = VersionError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Version::parse(text).map(Version::into_owned)
    }
}

impl PartialEq for Version<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Version<'_> {}

impl PartialOrd for Version<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Version<'_> {
    fn cmp(&self, other: &Self) -> Ordering {
        let (self_numbers, self_pre) = split_pre_release(&self.text);
        let (other_numbers, other_pre) = split_pre_release(&other.text);
        compare_numeric_segments(self_numbers, other_numbers).then_with(|| compare_pre_releases(self_pre, other_pre))
    }
}

impl Hash for Version<'_> {
    /// Hashes the numeric segments without trailing zero segments, so that versions that
    /// compare equal (`1.2`, `1.2.0`) hash alike. Pre-releases are equal only when their
    /// texts are equal (numeric identifiers have no leading zeros), so their text is hashed.
    fn hash<H: Hasher>(&self, state: &mut H) {
        let (numbers, pre) = split_pre_release(&self.text);
        let mut pending_zeros = 0usize;
        for segment in numbers.split('.') {
            if segment == "0" {
                pending_zeros += 1;
                continue;
            }
            for _ in 0..pending_zeros {
                state.write(b"0.");
            }
            pending_zeros = 0;
            state.write(segment.as_bytes());
            state.write_u8(b'.');
        }
        match pre {
            None => state.write_u8(0),
            Some(pre) => {
                state.write_u8(1);
                state.write(pre.as_bytes());
            }
        }
    }
}

impl serde::Serialize for Version<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de: 'a, 'a> serde::Deserialize<'de> for Version<'a> {
    /// Deserializes from a string, borrowing it when the format allows.
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(VersionVisitor(std::marker::PhantomData))
    }
}

struct VersionVisitor<'a>(std::marker::PhantomData<&'a ()>);

impl<'de: 'a, 'a> serde::de::Visitor<'de> for VersionVisitor<'a> {
    type Value = Version<'a>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a version string such as \"1.2.3-rc.1\"")
    }

    fn visit_borrowed_str<E: serde::de::Error>(self, text: &'de str) -> Result<Self::Value, E> {
        Version::parse(text).map_err(E::custom)
    }

    fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Self::Value, E> {
        text.parse::<Version<'static>>().map_err(E::custom)
    }
}

/// Splits at the first `-`: the numeric part never contains one.
fn split_pre_release(text: &str) -> (&str, Option<&str>) {
    match text.split_once('-') {
        Some((numbers, pre)) => (numbers, Some(pre)),
        None => (text, None),
    }
}

/// Compares dot-separated numeric segments, a missing segment counting as `0`.
fn compare_numeric_segments(left: &str, right: &str) -> Ordering {
    let mut left = left.split('.');
    let mut right = right.split('.');
    loop {
        let (l, r) = match (left.next(), right.next()) {
            (None, None) => return Ordering::Equal,
            (l, r) => (l.unwrap_or("0"), r.unwrap_or("0")),
        };
        let order = compare_digits(l, r);
        if order != Ordering::Equal {
            return order;
        }
    }
}

/// Compares two digit strings without leading zeros numerically, whatever their length.
fn compare_digits(left: &str, right: &str) -> Ordering {
    left.len().cmp(&right.len()).then_with(|| left.cmp(right))
}

/// SemVer 2.0 §11: no pre-release beats any pre-release; identifiers compare one by one.
fn compare_pre_releases(left: Option<&str>, right: Option<&str>) -> Ordering {
    let (left, right) = match (left, right) {
        (None, None) => return Ordering::Equal,
        (None, Some(_)) => return Ordering::Greater,
        (Some(_), None) => return Ordering::Less,
        (Some(left), Some(right)) => (left, right),
    };
    let mut left = left.split('.');
    let mut right = right.split('.');
    loop {
        let (l, r) = match (left.next(), right.next()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(l), Some(r)) => (l, r),
        };
        let order = compare_identifiers(l, r);
        if order != Ordering::Equal {
            return order;
        }
    }
}

/// Numeric identifiers compare numerically and sort before alphanumeric ones, which
/// compare in ASCII order.
fn compare_identifiers(left: &str, right: &str) -> Ordering {
    match (is_numeric(left), is_numeric(right)) {
        (true, true) => compare_digits(left, right),
        (true, false) => Ordering::Less,
        (false, true) => Ordering::Greater,
        (false, false) => left.cmp(right),
    }
}

fn is_numeric(identifier: &str) -> bool {
    identifier.bytes().all(|b| b.is_ascii_digit())
}

type NomResult<'t> = nom::IResult<&'t str, &'t str, nom::error::Error<&'t str>>;

fn number(input: &str) -> NomResult<'_> {
    digit1(input)
}

fn identifier(input: &str) -> NomResult<'_> {
    take_while1(|c: char| c.is_ascii_alphanumeric() || c == '-')(input)
}

/// Validates the whole text, reporting the first error from the left.
fn validate(text: &str) -> Result<(), VersionError> {
    if text.is_empty() {
        return Err(VersionError::Empty);
    }
    if text.len() > MAX_VERSION_LEN {
        return Err(VersionError::TooLong { len: text.len() });
    }
    let rest = validate_numeric_segments(text)?;
    match rest.chars().next() {
        None => Ok(()),
        Some('-') => validate_pre_release(text, &rest[1..]),
        Some(found) => Err(unexpected(text, rest, found)),
    }
}

/// Validates `NUM ("." NUM){0,7}` and returns what follows it.
fn validate_numeric_segments(text: &str) -> Result<&str, VersionError> {
    let mut rest = text;
    let mut count = 0;
    loop {
        let position = offset(text, rest);
        let Ok((after, digits)) = number(rest) else {
            return Err(VersionError::ExpectedNumber { text: text.to_owned(), position });
        };
        count += 1;
        if count > MAX_NUMERIC_SEGMENTS {
            return Err(VersionError::TooManySegments { text: text.to_owned(), position });
        }
        if has_leading_zero(digits) {
            return Err(VersionError::LeadingZero { text: text.to_owned(), position });
        }
        if !fits_u64(digits) {
            return Err(VersionError::NumberTooLarge { text: text.to_owned(), position });
        }
        match after.strip_prefix('.') {
            Some(next) => rest = next,
            None => return Ok(after),
        }
    }
}

/// Validates `ident ("." ident)*` up to the end of the text.
fn validate_pre_release<'t>(text: &'t str, pre: &'t str) -> Result<(), VersionError> {
    let mut rest = pre;
    loop {
        let position = offset(text, rest);
        let Ok((after, ident)) = identifier(rest) else {
            return Err(VersionError::ExpectedIdentifier { text: text.to_owned(), position });
        };
        if is_numeric(ident) && has_leading_zero(ident) {
            return Err(VersionError::LeadingZero { text: text.to_owned(), position });
        }
        if is_numeric(ident) && !fits_u64(ident) {
            return Err(VersionError::NumberTooLarge { text: text.to_owned(), position });
        }
        match after.chars().next() {
            None => return Ok(()),
            Some('.') => rest = &after[1..],
            Some(found) => return Err(unexpected(text, after, found)),
        }
    }
}

/// Whether a string of ASCII digits is at most `u64::MAX`: up to 19 digits always are, so
/// only longer ones are parsed (every version of a query goes through here).
fn fits_u64(digits: &str) -> bool {
    digits.len() < 20 || digits.parse::<u64>().is_ok()
}

fn has_leading_zero(digits: &str) -> bool {
    digits.len() > 1 && digits.starts_with('0')
}

fn unexpected(text: &str, rest: &str, found: char) -> VersionError {
    let position = offset(text, rest);
    if found == '+' {
        VersionError::BuildMetadata { text: text.to_owned(), position }
    } else {
        VersionError::UnexpectedCharacter { text: text.to_owned(), position, found }
    }
}

/// Byte offset of `rest`, a suffix of `text`, within `text`.
fn offset(text: &str, rest: &str) -> usize {
    text.len() - rest.len()
}
