//! Errors of the codec, in layers (SPEC.md §9.3, "Decoder error names").
//!
//! [`BodyError`] says what is wrong with an XML body and where; [`DecodeError`] wraps it with the
//! datagram layer's own failures; [`EncodeError`] is what the encoder refuses. Each error has a
//! stable [`name`](DecodeError::name) that the test vectors in `protocol-spec/vectors/` use.

use thiserror::Error;

/// Why an XML body (inline or a fallback document) was rejected.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum BodyError {
    /// The body is not UTF-8.
    #[error("body is not UTF-8 (first bad byte at offset {offset})")]
    NotUtf8 {
        /// Byte offset of the first invalid byte.
        offset: usize,
    },
    /// The XML is not well formed.
    #[error("malformed XML at offset {offset}: {reason}")]
    XmlSyntax {
        /// Byte offset where the parser stopped.
        offset: usize,
        /// What the parser found.
        reason: String,
    },
    /// A document type declaration, which the protocol forbids.
    #[error("DOCTYPE at offset {offset} is not allowed")]
    Doctype {
        /// Byte offset of the declaration.
        offset: usize,
    },
    /// An entity reference other than the five predefined ones or a character reference.
    #[error("entity reference `&{name};` at offset {offset} is not allowed")]
    Entity {
        /// Byte offset of the element that holds it.
        offset: usize,
        /// The entity's name as written.
        name: String,
    },
    /// A processing instruction other than the XML declaration.
    #[error("processing instruction at offset {offset} is not allowed")]
    ProcessingInstruction {
        /// Byte offset of the instruction.
        offset: usize,
    },
    /// A CDATA section.
    #[error("CDATA section at offset {offset} is not allowed")]
    Cdata {
        /// Byte offset of the section.
        offset: usize,
    },
    /// Elements nested deeper than the limit.
    #[error("element at offset {offset} is nested deeper than {max} levels")]
    TooDeep {
        /// Byte offset of the element that went too deep.
        offset: usize,
        /// The limit.
        max: usize,
    },
    /// The same attribute twice on one element.
    #[error("attribute `{attribute}` of <{element}> at offset {offset} appears twice")]
    DuplicateAttribute {
        /// The element's name.
        element: String,
        /// The repeated attribute.
        attribute: String,
        /// Byte offset of the element.
        offset: usize,
    },
    /// An attribute value longer than the limit (after unescaping, or 8 times it as written).
    #[error("attribute `{attribute}` of <{element}>: {len} bytes, more than the {max} allowed")]
    AttributeTooLong {
        /// The element's name.
        element: String,
        /// The attribute's name.
        attribute: String,
        /// Its length as written.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// More attributes on one element than the limit.
    #[error("<{element}> at offset {offset} has more than {max} attributes")]
    TooManyAttributes {
        /// The element's name.
        element: String,
        /// Byte offset of the element.
        offset: usize,
        /// The limit.
        max: usize,
    },
    /// A required attribute is absent.
    #[error("<{element}>{context} lacks the required attribute `{attribute}`")]
    MissingAttribute {
        /// The element's name.
        element: &'static str,
        /// The attribute's name.
        attribute: &'static str,
        /// Where: e.g. ` id="core"`, or empty.
        context: String,
    },
    /// An attribute value that does not meet its type or a rule of the spec.
    #[error("attribute `{attribute}` of <{element}{context}>: {reason}")]
    InvalidAttribute {
        /// The element's name.
        element: &'static str,
        /// The attribute's name.
        attribute: &'static str,
        /// Where: e.g. ` id="a.dll"`, or empty.
        context: String,
        /// What is wrong.
        reason: String,
    },
    /// A known element where the schema does not allow it.
    #[error("<{element}> at offset {offset} is not allowed inside <{parent}>{reason}")]
    UnexpectedElement {
        /// The element found.
        element: String,
        /// Its parent.
        parent: &'static str,
        /// Byte offset of the element.
        offset: usize,
        /// Extra explanation, or empty.
        reason: String,
    },
    /// A required child element is absent.
    #[error("<{element}{context}> lacks a required <{child}>")]
    MissingElement {
        /// The element that lacks it.
        element: &'static str,
        /// Where: e.g. ` id="core"`, or empty.
        context: String,
        /// The child element required.
        child: &'static str,
    },
    /// Text content where only elements are allowed.
    #[error("text at offset {offset} is not allowed (only elements)")]
    UnexpectedText {
        /// Byte offset of the text.
        offset: usize,
    },
    /// The document's root element is not the one expected.
    #[error("expected root element <{expected}>, found {found}")]
    WrongRoot {
        /// The root element expected.
        expected: &'static str,
        /// What was found.
        found: String,
    },
    /// More elements (or modules, files, mirrors) than a limit allows.
    #[error("more than {max} {what}")]
    TooManyElements {
        /// What was counted.
        what: &'static str,
        /// The limit.
        max: usize,
    },
    /// A fallback document larger than the limit.
    #[error("document of {len} bytes is larger than the {max} allowed")]
    DocumentTooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
}

impl BodyError {
    /// The stable name of this error (SPEC.md §9.3).
    pub fn name(&self) -> &'static str {
        match self {
            Self::NotUtf8 { .. } => "not-utf8",
            Self::XmlSyntax { .. } => "xml-syntax",
            Self::Doctype { .. } => "doctype",
            Self::Entity { .. } => "entity",
            Self::ProcessingInstruction { .. } => "processing-instruction",
            Self::Cdata { .. } => "cdata",
            Self::TooDeep { .. } => "too-deep",
            Self::DuplicateAttribute { .. } => "duplicate-attribute",
            Self::AttributeTooLong { .. } => "attribute-too-long",
            Self::TooManyAttributes { .. } => "too-many-attributes",
            Self::MissingAttribute { .. } => "missing-attribute",
            Self::InvalidAttribute { .. } => "invalid-attribute",
            Self::UnexpectedElement { .. } => "unexpected-element",
            Self::MissingElement { .. } => "missing-element",
            Self::UnexpectedText { .. } => "unexpected-text",
            Self::WrongRoot { .. } => "wrong-root",
            Self::TooManyElements { .. } => "too-many-elements",
            Self::DocumentTooLarge { .. } => "document-too-large",
        }
    }
}

/// Why a datagram was rejected.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// Longer than [`MAX_DATAGRAM_LEN`](crate::limits::MAX_DATAGRAM_LEN).
    #[error("datagram of {len} bytes is longer than the {max} allowed")]
    TooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Shorter than its header says it is.
    #[error("datagram truncated: {needed} bytes needed, {len} present")]
    Truncated {
        /// Bytes the header and flags call for.
        needed: usize,
        /// Bytes present.
        len: usize,
    },
    /// Not an upgram datagram.
    #[error("bad magic: not an upgram datagram")]
    BadMagic,
    /// A protocol version this implementation does not speak.
    #[error("unsupported protocol version {version} (this side speaks 1)")]
    UnsupportedVersion {
        /// The version in the header.
        version: u8,
    },
    /// A message kind outside the registry.
    #[error("unknown message kind {kind}")]
    UnknownKind {
        /// The kind byte.
        kind: u8,
    },
    /// Reserved flag bits set.
    #[error("reserved flag bits {flags:#06x} are set")]
    UnknownFlags {
        /// The reserved bits that were set.
        flags: u16,
    },
    /// A defined flag that the message kind does not allow (or lacks one it requires).
    #[error("flag {flag} is {problem} in a {kind} datagram")]
    FlagNotAllowed {
        /// The message kind.
        kind: &'static str,
        /// The flag's name.
        flag: &'static str,
        /// "not allowed" or "required".
        problem: &'static str,
    },
    /// Bytes after the last field the header accounts for.
    #[error("datagram has {extra} bytes after its last field")]
    LengthMismatch {
        /// How many bytes too many.
        extra: usize,
    },
    /// A padding byte that is not zero.
    #[error("padding byte at offset {offset} is not zero")]
    NonZeroPadding {
        /// Its offset in the datagram.
        offset: usize,
    },
    /// Padding in a datagram other than a query.
    #[error("padding is only allowed in queries, found {len} bytes in a {kind} datagram")]
    PaddingNotAllowed {
        /// The message kind.
        kind: &'static str,
        /// The padding length.
        len: usize,
    },
    /// A body in a datagram kind that has none (cookie challenge).
    #[error("a {kind} datagram has no body, found {len} bytes")]
    BodyNotAllowed {
        /// The message kind.
        kind: &'static str,
        /// The body length.
        len: usize,
    },
    /// A batch trailer with an audit path longer than the limit.
    #[error("batch audit path of {depth} hashes is longer than the {max} allowed")]
    PathTooLong {
        /// The path length the trailer gives.
        depth: usize,
        /// The limit.
        max: usize,
    },
    /// A batch trailer with no audit path (a batch of one is signed alone, without BATCH).
    #[error("batch trailer with an empty audit path")]
    EmptyPath,
    /// A batch trailer whose leaf index is not a position in a tree of its depth.
    #[error("batch leaf index {index} is outside a tree of depth {depth} ({leaves} leaves)")]
    WrongPosition {
        /// The leaf index the trailer gives.
        index: usize,
        /// The path length the trailer gives.
        depth: usize,
        /// Leaves of a tree of that depth.
        leaves: usize,
    },
    /// The XML body was rejected.
    #[error("{kind} body: {source}")]
    Body {
        /// The message kind.
        kind: &'static str,
        /// What is wrong with it.
        #[source]
        source: BodyError,
    },
}

impl DecodeError {
    /// The stable name of this error (SPEC.md §9.3); for body errors, the body error's name.
    pub fn name(&self) -> &'static str {
        match self {
            Self::TooLarge { .. } => "too-large",
            Self::Truncated { .. } => "truncated",
            Self::BadMagic => "bad-magic",
            Self::UnsupportedVersion { .. } => "unsupported-version",
            Self::UnknownKind { .. } => "unknown-kind",
            Self::UnknownFlags { .. } => "unknown-flags",
            Self::FlagNotAllowed { .. } => "flag-not-allowed",
            Self::LengthMismatch { .. } => "length-mismatch",
            Self::NonZeroPadding { .. } => "nonzero-padding",
            Self::PaddingNotAllowed { .. } => "padding-not-allowed",
            Self::BodyNotAllowed { .. } => "body-not-allowed",
            Self::PathTooLong { .. } => "path-too-long",
            Self::EmptyPath => "empty-path",
            Self::WrongPosition { .. } => "wrong-position",
            Self::Body { source, .. } => source.name(),
        }
    }
}

/// Why the encoder refused to produce a datagram or body.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// The datagram would be longer than [`MAX_DATAGRAM_LEN`](crate::limits::MAX_DATAGRAM_LEN).
    #[error("encoded datagram would be {len} bytes, more than the {max} allowed")]
    TooLarge {
        /// The length it would have.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A body longer than the 16-bit length field or a padding request that cannot be met.
    #[error("{what} of {len} bytes does not fit its field")]
    FieldOverflow {
        /// What overflowed.
        what: &'static str,
        /// Its length.
        len: usize,
    },
    /// A frame whose fields break a layout rule (e.g. a signature on a query).
    #[error("invalid frame: {reason}")]
    InvalidFrame {
        /// Which rule.
        reason: &'static str,
    },
    /// The caller's buffer has no room for the datagram.
    #[error("output buffer has room for {room} bytes, {len} needed")]
    BufferTooSmall {
        /// Bytes needed.
        len: usize,
        /// Bytes of room.
        room: usize,
    },
}
