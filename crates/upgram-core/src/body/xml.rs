//! The restricted XML dialect of upgram bodies (SPEC.md §4.1), on top of quick-xml.
//!
//! quick-xml stays behind this module: the body parsers see [`Element`]s, attribute values as
//! `Cow<'a, str>` borrowed from the input unless they hold escapes, and [`BodyError`]s. Here the
//! protocol's limits are enforced while reading, before any work proportional to them: depth,
//! element count, attribute count and length; and here DOCTYPE, processing instructions, CDATA,
//! unknown entities and stray text are refused.

use std::borrow::Cow;

use quick_xml::XmlVersion;
use quick_xml::escape::EscapeError;
use quick_xml::events::attributes::{AttrError, Attributes};
use quick_xml::events::{BytesStart, Event};
use quick_xml::reader::Reader;

use crate::error::BodyError;
use crate::limits::{MAX_ATTRIBUTE_LEN, MAX_ATTRIBUTES, MAX_ELEMENTS, MAX_RAW_ATTRIBUTE_LEN, MAX_XML_DEPTH};

/// An element's start tag.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Element<'a> {
    /// The element's name.
    pub name: &'a str,
    /// The whole tag content between `<` and `>` (or `/>`), borrowed from the input.
    tag: &'a str,
    /// Whether it is empty (`<x/>`): no children, no end tag to read.
    pub empty: bool,
    /// Byte offset of the tag in the body.
    pub offset: usize,
}

/// What comes next inside the current element.
pub(crate) enum Node<'a> {
    /// A child element opens.
    Open(Element<'a>),
    /// The current element closes (or, at the top level, the document ends).
    Close,
}

/// A pull reader over a body that enforces the protocol's XML rules.
pub(crate) struct XmlReader<'a> {
    input: &'a str,
    reader: Reader<&'a [u8]>,
    depth: usize,
    elements: usize,
    root_seen: bool,
}

impl<'a> XmlReader<'a> {
    /// A reader over `bytes`, which must be UTF-8.
    pub fn new(bytes: &'a [u8]) -> Result<Self, BodyError> {
        let input = std::str::from_utf8(bytes).map_err(|e| BodyError::NotUtf8 { offset: e.valid_up_to() })?;
        let mut reader = Reader::from_str(input);
        let config = reader.config_mut();
        config.check_end_names = true;
        config.check_comments = true;
        config.expand_empty_elements = false;
        config.trim_text(false);
        Ok(Self { input, reader, depth: 0, elements: 0, root_seen: false })
    }

    fn position(&self) -> usize {
        usize::try_from(self.reader.buffer_position()).unwrap_or(usize::MAX)
    }

    fn syntax(&self, error: &quick_xml::Error) -> BodyError {
        let offset = usize::try_from(self.reader.error_position()).unwrap_or(usize::MAX);
        BodyError::XmlSyntax { offset, reason: error.to_string() }
    }

    /// The next element opening or closing at the current level, skipping comments and
    /// whitespace. At the top level, [`Node::Close`] means the end of the document.
    pub fn next(&mut self) -> Result<Node<'a>, BodyError> {
        loop {
            let before = self.position();
            let event = self.reader.read_event().map_err(|e| self.syntax(&e))?;
            match event {
                Event::Start(start) => return self.open(&start, false, before),
                Event::Empty(start) => return self.open(&start, true, before),
                Event::End(_) => {
                    self.depth = self.depth.saturating_sub(1);
                    return Ok(Node::Close);
                }
                Event::Eof => {
                    if self.depth > 0 {
                        return Err(BodyError::XmlSyntax {
                            offset: before,
                            reason: "document ends inside an element".into(),
                        });
                    }
                    return Ok(Node::Close);
                }
                Event::Text(text) => {
                    if !text.bytes().all(|b| b.is_ascii_whitespace()) {
                        return Err(BodyError::UnexpectedText { offset: before });
                    }
                }
                Event::Comment(_) => {}
                Event::Decl(_) if !self.root_seen && before == 0 => {}
                Event::Decl(_) | Event::PI(_) => {
                    return Err(BodyError::ProcessingInstruction { offset: before });
                }
                Event::DocType(_) => return Err(BodyError::Doctype { offset: before }),
                Event::CData(_) => return Err(BodyError::Cdata { offset: before }),
                Event::GeneralRef(reference) => {
                    let raw: &str = &reference;
                    let name = raw.to_owned();
                    return Err(if is_predefined_entity(&name) {
                        BodyError::UnexpectedText { offset: before }
                    } else {
                        BodyError::Entity { offset: before, name }
                    });
                }
            }
        }
    }

    fn open(&mut self, start: &BytesStart<'_>, empty: bool, offset: usize) -> Result<Node<'a>, BodyError> {
        if self.depth == 0 && self.root_seen {
            return Err(BodyError::XmlSyntax { offset, reason: "a second root element".into() });
        }
        self.root_seen = true;
        self.elements += 1;
        if self.elements > MAX_ELEMENTS {
            return Err(BodyError::TooManyElements { what: "elements", max: MAX_ELEMENTS });
        }
        if self.depth + 1 > MAX_XML_DEPTH {
            return Err(BodyError::TooDeep { offset, max: MAX_XML_DEPTH });
        }
        if !empty {
            self.depth += 1;
        }
        let tag = self.borrow_tag(start, offset)?;
        let name_len = start.name().as_ref().len();
        let name = tag.get(..name_len).unwrap_or(tag);
        Ok(Node::Open(Element { name, tag, empty, offset }))
    }

    /// The tag content with the input's lifetime, so attribute values can borrow from it.
    fn borrow_tag(&self, start: &BytesStart<'_>, offset: usize) -> Result<&'a str, BodyError> {
        let content: &str = start;
        // The reader borrows every tag from the input; find where, by address, without unsafe.
        let base = self.input.as_ptr() as usize;
        let at = (content.as_ptr() as usize).wrapping_sub(base);
        self.input
            .get(at..at.wrapping_add(content.len()))
            .filter(|slice| slice.as_ptr() == content.as_ptr())
            .ok_or_else(|| BodyError::XmlSyntax { offset, reason: "tag not borrowed from the input".into() })
    }

    /// Skips the rest of `element` (an unknown element, per the forward-compatibility rule).
    pub fn skip(&mut self, element: &Element<'a>) -> Result<(), BodyError> {
        if element.empty {
            return Ok(());
        }
        loop {
            match self.next()? {
                Node::Open(child) => self.skip(&child)?,
                Node::Close => return Ok(()),
            }
        }
    }
}

fn is_predefined_entity(name: &str) -> bool {
    matches!(name, "amp" | "lt" | "gt" | "quot" | "apos") || name.starts_with('#')
}

/// The error for a known element in a place the schema does not allow.
pub(crate) fn unexpected(element: &Element<'_>, parent: &'static str, reason: &str) -> BodyError {
    BodyError::UnexpectedElement {
        element: element.name.to_owned(),
        parent,
        offset: element.offset,
        reason: reason.to_owned(),
    }
}

impl<'a> Element<'a> {
    /// Calls `visit(name, value)` for every attribute, values unescaped (borrowed unless they
    /// contain references). Enforces the attribute limits and rejects duplicates.
    pub fn for_each_attribute(
        &self,
        mut visit: impl FnMut(&'a str, Cow<'a, str>) -> Result<(), BodyError>,
    ) -> Result<(), BodyError> {
        let mut attributes = Attributes::new(self.tag, self.name.len());
        attributes.with_checks(true);
        let mut count = 0;
        for attribute in attributes {
            let attribute = attribute.map_err(|e| self.attribute_error(e))?;
            count += 1;
            if count > MAX_ATTRIBUTES {
                return Err(BodyError::TooManyAttributes {
                    element: self.name.to_owned(),
                    offset: self.offset,
                    max: MAX_ATTRIBUTES,
                });
            }
            let key = attribute.key.as_ref();
            let name = self.tag_slice(key);
            // Bound the work before unescaping, then the value itself (SPEC.md §4.1.2).
            if attribute.value.len() > MAX_RAW_ATTRIBUTE_LEN {
                return Err(self.too_long(name, attribute.value.len()));
            }
            if attribute.value.contains('<') {
                return Err(BodyError::XmlSyntax {
                    offset: self.offset,
                    reason: format!("`<` in attribute `{name}` of <{}>", self.name),
                });
            }
            let value = attribute.normalized_value(XmlVersion::Implicit1_0).map_err(|e| self.value_error(name, &e))?;
            if value.len() > MAX_ATTRIBUTE_LEN {
                return Err(self.too_long(name, value.len()));
            }
            visit(name, value)?;
        }
        Ok(())
    }

    /// `key` borrowed from the tag with the tag's lifetime.
    fn tag_slice(&self, key: &str) -> &'a str {
        let at = (key.as_ptr() as usize).wrapping_sub(self.tag.as_ptr() as usize);
        self.tag.get(at..at.wrapping_add(key.len())).unwrap_or("")
    }

    fn too_long(&self, attribute: &str, len: usize) -> BodyError {
        BodyError::AttributeTooLong {
            element: self.name.to_owned(),
            attribute: attribute.to_owned(),
            len,
            max: MAX_ATTRIBUTE_LEN,
        }
    }

    fn attribute_error(&self, error: AttrError) -> BodyError {
        match error {
            AttrError::Duplicated(at, _) => {
                let rest = self.tag.get(at..).unwrap_or("");
                let attribute = rest.split(|c: char| c == '=' || c.is_ascii_whitespace()).next().unwrap_or("");
                BodyError::DuplicateAttribute {
                    element: self.name.to_owned(),
                    attribute: attribute.to_owned(),
                    offset: self.offset,
                }
            }
            other => BodyError::XmlSyntax {
                offset: self.offset,
                reason: format!("in the attributes of <{}>: {other}", self.name),
            },
        }
    }

    fn value_error(&self, attribute: &str, error: &quick_xml::Error) -> BodyError {
        match error {
            quick_xml::Error::Escape(EscapeError::UnrecognizedEntity(_, name)) => {
                BodyError::Entity { offset: self.offset, name: name.clone() }
            }
            other => BodyError::XmlSyntax {
                offset: self.offset,
                reason: format!("in attribute `{attribute}` of <{}>: {other}", self.name),
            },
        }
    }
}

/// Writes `value` escaped for a double-quoted attribute, so that decoding gives it back exactly
/// (tabs and line breaks as character references, which attribute normalization keeps).
pub(crate) fn write_escaped(out: &mut Vec<u8>, value: &str) {
    let bytes = value.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escaped: &[u8] = match b {
            b'&' => b"&amp;",
            b'<' => b"&lt;",
            b'>' => b"&gt;",
            b'"' => b"&quot;",
            b'\t' => b"&#9;",
            b'\n' => b"&#10;",
            b'\r' => b"&#13;",
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        out.extend_from_slice(escaped);
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
}

/// Writes ` name="value"` with the value escaped.
pub(crate) fn write_attribute(out: &mut Vec<u8>, name: &str, value: &str) {
    out.push(b' ');
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"=\"");
    write_escaped(out, value);
    out.push(b'"');
}

/// Writes ` name="N"`.
pub(crate) fn write_number(out: &mut Vec<u8>, name: &str, value: u64) {
    out.push(b' ');
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"=\"");
    let mut digits = [0u8; 20];
    let mut n = value;
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
    out.push(b'"');
}

/// Writes ` name="1"` when `value` is true; false is the default and is not written.
pub(crate) fn write_flag(out: &mut Vec<u8>, name: &str, value: bool) {
    if value {
        out.push(b' ');
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b"=\"1\"");
    }
}
