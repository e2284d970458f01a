//! The restricted XML dialect of upgram bodies (SPEC.md §4.1), on top of quick-xml.
//!
//! quick-xml stays behind this module: the body parsers see [`Element`]s, attribute values as
//! `Cow<'a, str>` borrowed from the input unless they hold escapes, and [`BodyError`]s. Here the
//! protocol's limits are enforced while reading, before any work proportional to them: depth,
//! element count, attribute count and length; and here DOCTYPE, processing instructions, CDATA,
//! unknown entities and stray text are refused.
//!
//! quick-xml tokenizes the document but leaves some of XML 1.0's well-formedness rules to its
//! caller: names are not checked against the `Name` production, attributes need no whitespace
//! between them, characters XML forbids pass, and the XML declaration's content is not looked
//! at. Those checks are made here, on every element as it opens (known or not), so that a body
//! is either well-formed and within the limits or rejected, whatever the element.

use std::borrow::Cow;

use quick_xml::XmlVersion;
use quick_xml::escape::EscapeError;
use quick_xml::events::attributes::Attribute;
use quick_xml::events::{BytesStart, Event};
use quick_xml::name::QName;
use quick_xml::reader::Reader;

use crate::body::is_v1_element;
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

/// An attribute's name and its value, unescaped and normalized.
type AttributeValue<'a> = (&'a str, Cow<'a, str>);

/// The checked attributes of one element: at most [`MAX_ATTRIBUTES`], kept in place so that
/// reading an element allocates nothing.
struct Attributes<'a> {
    list: [AttributeValue<'a>; MAX_ATTRIBUTES],
    len: usize,
}

impl<'a> Attributes<'a> {
    fn new() -> Self {
        Self { list: std::array::from_fn(|_| ("", Cow::Borrowed(""))), len: 0 }
    }

    /// The attributes held.
    fn as_slice(&self) -> &[AttributeValue<'a>] {
        self.list.get(..self.len).unwrap_or_default()
    }

    /// Whether [`MAX_ATTRIBUTES`] are held: [`Attributes::push`] would drop the next one.
    fn is_full(&self) -> bool {
        self.len >= MAX_ATTRIBUTES
    }

    /// Adds an attribute unless [full](Attributes::is_full).
    fn push(&mut self, attribute: AttributeValue<'a>) {
        if let Some(slot) = self.list.get_mut(self.len) {
            *slot = attribute;
            self.len += 1;
        }
    }
}

/// A pull reader over a body that enforces the protocol's XML rules.
pub(crate) struct XmlReader<'a> {
    input: &'a str,
    reader: Reader<&'a [u8]>,
    depth: usize,
    elements: usize,
    root_seen: bool,
    /// The attributes of the element opened last, checked and unescaped when it opened.
    attributes: Attributes<'a>,
    /// The offset of the element `attributes` belongs to (`usize::MAX`: none).
    attributes_of: usize,
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
        Ok(Self {
            input,
            reader,
            depth: 0,
            elements: 0,
            root_seen: false,
            attributes: Attributes::new(),
            attributes_of: usize::MAX,
        })
    }

    fn position(&self) -> usize {
        usize::try_from(self.reader.buffer_position()).unwrap_or(usize::MAX)
    }

    fn syntax(&self, error: &quick_xml::Error) -> BodyError {
        let offset = usize::try_from(self.reader.error_position()).unwrap_or(usize::MAX);
        BodyError::XmlSyntax { offset, reason: error.to_string() }
    }

    /// The input from `from` to the reader's position: the markup just read.
    fn markup(&self, from: usize) -> &'a str {
        self.input.get(from..self.position()).unwrap_or("")
    }

    /// The next element opening or closing at the current level, skipping comments and
    /// whitespace. At the top level, [`Node::Close`] means the end of the document.
    #[inline]
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
                    if !text.bytes().all(is_space) {
                        return Err(BodyError::UnexpectedText { offset: before });
                    }
                }
                Event::Comment(_) => check_comment(self.markup(before), before)?,
                Event::Decl(_) if !self.root_seen && before == 0 => check_declaration(self.markup(before))?,
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

    #[inline]
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
        // The protocol's own names are names; only others need the check.
        if !is_v1_element(name) && !is_name(name) {
            return Err(BodyError::XmlSyntax {
                offset,
                reason: format!("`{}` is not an XML element name", name.escape_debug()),
            });
        }
        let element = Element { name, tag, empty, offset };
        // Every element's attributes are checked now, also those of elements nobody reads.
        self.attributes_of = usize::MAX;
        scan_attributes(&element, &mut self.attributes)?;
        self.attributes_of = offset;
        Ok(Node::Open(element))
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

    /// Calls `visit(name, value)` for every attribute of `element`, values unescaped and
    /// normalized (borrowed unless they contain references or line breaks). The attributes
    /// were checked when the element opened (limits, duplicates, syntax); they are handed out
    /// without a second pass when `element` is the one opened last, as it is for every body
    /// parser that reads its attributes before its children.
    #[inline]
    pub fn for_each_attribute(
        &mut self,
        element: &Element<'a>,
        mut visit: impl FnMut(&'a str, Cow<'a, str>) -> Result<(), BodyError>,
    ) -> Result<(), BodyError> {
        if self.attributes_of != element.offset {
            scan_attributes(element, &mut self.attributes)?;
        }
        self.attributes_of = usize::MAX;
        let len = std::mem::take(&mut self.attributes.len);
        for (name, value) in self.attributes.list.iter_mut().take(len) {
            visit(name, std::mem::take(value))?;
        }
        Ok(())
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

/// XML's white space (production `S`): SP, TAB, CR, LF and nothing else.
fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

/// XML 1.0 `NameStartChar`.
fn is_name_start(c: char) -> bool {
    matches!(c,
        ':' | 'A'..='Z' | '_' | 'a'..='z' | '\u{C0}'..='\u{D6}' | '\u{D8}'..='\u{F6}'
        | '\u{F8}'..='\u{2FF}' | '\u{370}'..='\u{37D}' | '\u{37F}'..='\u{1FFF}'
        | '\u{200C}'..='\u{200D}' | '\u{2070}'..='\u{218F}' | '\u{2C00}'..='\u{2FEF}'
        | '\u{3001}'..='\u{D7FF}' | '\u{F900}'..='\u{FDCF}' | '\u{FDF0}'..='\u{FFFD}'
        | '\u{10000}'..='\u{EFFFF}')
}

/// XML 1.0 `NameChar`.
fn is_name_char(c: char) -> bool {
    is_name_start(c) || matches!(c, '-' | '.' | '0'..='9' | '\u{B7}' | '\u{300}'..='\u{36F}' | '\u{203F}'..='\u{2040}')
}

/// Whether `name` matches XML 1.0's `Name` production and is a qualified name in the sense of
/// Namespaces in XML (at most one `:`, neither first nor last), as namespace-aware parsers
/// require.
fn is_name(name: &str) -> bool {
    scan_name(name, 0) == (name.len(), true)
}

/// Whether `name`, a run of `NameChar`s, starts with a `NameStartChar` and has at most one
/// `:`, neither first nor last, with a `NameStartChar` after it.
fn is_qualified(name: &str) -> bool {
    let starts_well = |part: &str| part.chars().next().is_some_and(|c| c != ':' && is_name_start(c));
    match name.split_once(':') {
        None => starts_well(name),
        Some((prefix, local)) => starts_well(prefix) && starts_well(local) && !local.contains(':'),
    }
}

/// Byte classes for the scanning loops: which ASCII bytes are `NameChar`s, which of them can
/// start a qualified name (not `:`), which is `:`, and which bytes in an attribute value need a
/// closer look (quotes, `<`, `&`, C0 controls, and 0xEF, the first byte of U+FFFE and U+FFFF).
const NAME: u8 = 1;
const NAME_START: u8 = 2;
const COLON: u8 = 4;
const SPECIAL: u8 = 8;
const CLASSES: [u8; 256] = {
    let mut classes = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        if c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.') {
            classes[b] = NAME;
        }
        if c.is_ascii_alphabetic() || c == b'_' {
            classes[b] = NAME | NAME_START;
        }
        if c == b':' {
            classes[b] = NAME | COLON;
        }
        if c < 0x20 || matches!(c, b'"' | b'\'' | b'<' | b'&' | 0xEF) {
            classes[b] = SPECIAL;
        }
        b += 1;
    }
    classes
};

/// The byte class of `b`.
fn class(b: u8) -> u8 {
    CLASSES[usize::from(b)]
}

/// Where the longest run of `NameChar`s from byte `start` of `text` ends, and whether that run
/// is a qualified name ([`is_qualified`]). Names of ASCII characters, the protocol's own, take
/// one pass over their bytes; others go through the full Unicode rules.
#[inline]
fn scan_name(text: &str, start: usize) -> (usize, bool) {
    let bytes = text.as_bytes();
    let mut at = start;
    let mut seen = 0;
    while let Some(&b) = bytes.get(at) {
        let c = class(b);
        if c & NAME == 0 {
            break;
        }
        seen |= c;
        at += 1;
    }
    if bytes.get(at).is_some_and(|b| !b.is_ascii()) {
        let rest = text.get(start..).unwrap_or("");
        let len = name_len(rest);
        return (start + len, rest.get(..len).is_some_and(is_qualified));
    }
    let starts_well = |at: usize| bytes.get(at).is_some_and(|&b| class(b) & NAME_START != 0);
    let qualified = starts_well(start)
        && (seen & COLON == 0 || {
            // One `:`, with a name start after it (past the run there is none).
            let name = bytes.get(start..at).unwrap_or_default();
            let colon = name.iter().position(|&b| b == b':').unwrap_or(0);
            starts_well(start + colon + 1) && !name.get(colon + 1..).unwrap_or_default().contains(&b':')
        });
    (at, qualified)
}

/// The byte length of the longest prefix of `text` made of `NameChar`s.
fn name_len(text: &str) -> usize {
    let bytes = text.as_bytes();
    let ascii = bytes.iter().position(|&b| class(b) & NAME == 0).unwrap_or(bytes.len());
    if bytes.get(ascii).is_none_or(|b| b.is_ascii()) {
        return ascii;
    }
    let rest = text.get(ascii..).unwrap_or("");
    rest.char_indices().find(|&(_, c)| !is_name_char(c)).map_or(text.len(), |(i, _)| ascii + i)
}

/// The first character of `text` that XML 1.0's `Char` production excludes: C0 controls
/// other than TAB, LF and CR, and U+FFFE and U+FFFF (surrogates cannot occur in a `str`).
fn forbidden_char(text: &str) -> Option<char> {
    let bytes = text.as_bytes();
    let at = bytes.iter().enumerate().position(|(i, &b)| {
        (b < 0x20 && !matches!(b, b'\t' | b'\n' | b'\r'))
            || (b == 0xEF && bytes.get(i + 1) == Some(&0xBF) && matches!(bytes.get(i + 2), Some(0xBE | 0xBF)))
    })?;
    text.get(at..).and_then(|rest| rest.chars().next())
}

/// Checks a comment (`<!--…-->` as written) for what quick-xml lets through: characters XML
/// forbids, and a `-` right before the closing `-->`.
fn check_comment(markup: &str, offset: usize) -> Result<(), BodyError> {
    let content = markup.strip_prefix("<!--").and_then(|m| m.strip_suffix("-->")).unwrap_or("");
    if let Some(c) = forbidden_char(content) {
        return Err(BodyError::XmlSyntax {
            offset,
            reason: format!("character {} is not allowed in XML (in a comment)", c.escape_unicode()),
        });
    }
    if content.ends_with('-') {
        return Err(BodyError::XmlSyntax { offset, reason: "a comment ends with `--->`".into() });
    }
    Ok(())
}

/// Checks the XML declaration (`<?xml…?>` as written, at offset 0): `version="1.0"`, then
/// optionally `encoding` naming UTF-8 and `standalone` `yes` or `no`, in that order, nothing
/// else (XML 1.0 `XMLDecl`; the body is always UTF-8).
fn check_declaration(markup: &str) -> Result<(), BodyError> {
    let bad = |reason: String| BodyError::XmlSyntax { offset: 0, reason: format!("XML declaration: {reason}") };
    let tag = markup.strip_prefix("<?").and_then(|m| m.strip_suffix("?>")).unwrap_or("");
    let element = Element { name: "xml", tag, empty: true, offset: 0 };
    if !tag.starts_with("xml") {
        return Err(bad("not `<?xml`".into()));
    }
    let mut attributes = Attributes::new();
    scan_attributes(&element, &mut attributes)?;
    let mut expected = ["version", "encoding", "standalone"].into_iter();
    for (name, value) in attributes.as_slice() {
        if !expected.any(|e| e == *name) {
            return Err(bad(format!("`{}` is not allowed here", name.escape_debug())));
        }
        let ok = match *name {
            "version" => value == "1.0",
            "encoding" => value.eq_ignore_ascii_case("UTF-8"),
            _ => matches!(value.as_ref(), "yes" | "no"),
        };
        if !ok {
            return Err(bad(format!("{name}=\"{}\" is not allowed", value.escape_debug())));
        }
    }
    match attributes.as_slice().first() {
        Some(("version", _)) => Ok(()),
        _ => Err(bad("`version` must come first".into())),
    }
}

/// Scans the attribute list of `element` (XML 1.0: `(S Attribute)* S?` after the name) into
/// `out`, values unescaped and normalized, enforcing the limits of SPEC.md §4.1.2 and the
/// rules quick-xml leaves to its caller: white space before each attribute, names that are
/// XML names, no `<`, only characters XML allows, only the predefined entities.
fn scan_attributes<'a>(element: &Element<'a>, out: &mut Attributes<'a>) -> Result<(), BodyError> {
    out.len = 0;
    let syntax = |reason: String| attribute_syntax(element, reason);
    let tag = element.tag;
    let bytes = tag.as_bytes();
    let skip_spaces = |mut at: usize| {
        while bytes.get(at).is_some_and(|&b| is_space(b)) {
            at += 1;
        }
        at
    };
    // One pass over the bytes; every index below is just past an ASCII byte or a whole name,
    // so on a character boundary.
    let mut at = element.name.len();
    loop {
        let start = at;
        at = skip_spaces(at);
        if at >= bytes.len() {
            return Ok(());
        }
        if at == start {
            return Err(syntax("white space must separate attributes".into()));
        }
        let (end, qualified) = scan_name(tag, at);
        if !qualified {
            let found = tag.get(at..).and_then(|rest| rest.chars().next()).unwrap_or(' ');
            return Err(syntax(format!("`{}` cannot start an attribute name", found.escape_debug())));
        }
        let name = tag.get(at..end).unwrap_or("");
        at = skip_spaces(end);
        if bytes.get(at) != Some(&b'=') {
            return Err(syntax(format!("`=` expected after `{name}`")));
        }
        at = skip_spaces(at + 1);
        let quote = match bytes.get(at) {
            Some(&q @ (b'"' | b'\'')) => q,
            _ => return Err(syntax(format!("the value of `{name}` must be quoted"))),
        };
        at += 1;
        let value_start = at;
        // The closing quote, and whether the value needs more than borrowing.
        let mut special = false;
        loop {
            let Some(&b) = bytes.get(at) else {
                return Err(syntax(format!("the value of `{name}` is not closed")));
            };
            if class(b) & SPECIAL != 0 {
                if b == quote {
                    break;
                }
                special = true;
            }
            at += 1;
        }
        let raw = tag.get(value_start..at).unwrap_or("");
        at += 1;
        if out.is_full() {
            return Err(BodyError::TooManyAttributes {
                element: element.name.to_owned(),
                offset: element.offset,
                max: MAX_ATTRIBUTES,
            });
        }
        if out.as_slice().iter().any(|(seen, _)| same(seen, name)) {
            return Err(BodyError::DuplicateAttribute {
                element: element.name.to_owned(),
                attribute: name.to_owned(),
                offset: element.offset,
            });
        }
        // Bound the work before unescaping, then the value itself (SPEC.md §4.1.2).
        if raw.len() > MAX_RAW_ATTRIBUTE_LEN {
            return Err(too_long(element, name, raw.len()));
        }
        let value = if special { unescape(element, name, raw)? } else { Cow::Borrowed(raw) };
        if value.len() > MAX_ATTRIBUTE_LEN {
            return Err(too_long(element, name, value.len()));
        }
        out.push((name, value));
    }
}

/// Whether two short names are equal, compared inline from the end (where the protocol's
/// names of equal length differ) rather than through `memcmp`.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().rev().zip(b.bytes().rev()).all(|(x, y)| x == y)
}

/// Unescapes and normalizes a value that holds a `<`, a reference, a control character or a
/// 0xEF byte, and checks what comes out: characters XML forbids are caught after unescaping,
/// so that references to them (`&#1;`, `&#xFFFE;`) are refused like the characters themselves.
fn unescape<'a>(element: &Element<'a>, name: &'a str, raw: &'a str) -> Result<Cow<'a, str>, BodyError> {
    let syntax = |reason: String| attribute_syntax(element, reason);
    if raw.contains('<') {
        return Err(syntax(format!("`<` in the value of `{name}`")));
    }
    let attribute = Attribute { key: QName(name), value: Cow::Borrowed(raw) };
    let value = attribute.normalized_value(XmlVersion::Implicit1_0).map_err(|e| value_error(element, name, &e))?;
    if let Some(c) = forbidden_char(&value) {
        return Err(syntax(format!("character {} in the value of `{name}` is not allowed in XML", c.escape_unicode())));
    }
    Ok(value)
}

/// An `xml-syntax` error in the attributes of `element`.
fn attribute_syntax(element: &Element<'_>, reason: String) -> BodyError {
    BodyError::XmlSyntax {
        offset: element.offset,
        reason: format!("in the attributes of <{}>: {reason}", element.name.escape_debug()),
    }
}

fn too_long(element: &Element<'_>, attribute: &str, len: usize) -> BodyError {
    BodyError::AttributeTooLong {
        element: element.name.to_owned(),
        attribute: attribute.to_owned(),
        len,
        max: MAX_ATTRIBUTE_LEN,
    }
}

fn value_error(element: &Element<'_>, attribute: &str, error: &quick_xml::Error) -> BodyError {
    match error {
        quick_xml::Error::Escape(EscapeError::UnrecognizedEntity(_, name)) if is_name(name) => {
            BodyError::Entity { offset: element.offset, name: name.clone() }
        }
        other => BodyError::XmlSyntax {
            offset: element.offset,
            reason: format!("in attribute `{attribute}` of <{}>: {other}", element.name),
        },
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The reference: the Unicode rules on `char`s alone.
    fn reference(text: &str) -> (usize, bool) {
        let len = text.char_indices().find(|&(_, c)| !is_name_char(c)).map_or(text.len(), |(i, _)| i);
        (len, is_qualified(&text[..len]))
    }

    #[test]
    fn name_scan_agrees_with_the_unicode_rules_on_the_edge_cases() {
        for text in [
            "",
            "a",
            "a:b",
            "a:b:c",
            ":a",
            "a:",
            "a::b",
            "a:1",
            "a:-",
            "1a",
            "-a",
            ".a",
            "_a",
            "_:_",
            "a b",
            "a=b",
            "ab\u{b7}c",
            "\u{c0}:b",
            "a:\u{c0}",
            "a:\u{b7}",
            "\u{b7}a",
            "a\u{a0}",
            "a:b\u{a0}:c",
            "a\u{37e}",
        ] {
            for start in (0..=text.len()).filter(|&i| text.is_char_boundary(i)) {
                let (end, qualified) = reference(&text[start..]);
                assert_eq!(scan_name(text, start), (start + end, qualified), "{text:?} from {start}");
            }
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]

        /// The one-pass scan of ASCII names (and its fall-back past a non-ASCII byte) agrees
        /// with the `char`-wise rules, from any starting byte, colons and all.
        #[test]
        fn name_scan_agrees_with_the_unicode_rules(
            text in "[ab_:1.\\-= \"\u{b7}\u{c0}\u{37e}\u{a0}]{0,8}",
            start in 0usize..4,
        ) {
            let start = (0..=start.min(text.len())).rev().find(|&i| text.is_char_boundary(i)).unwrap_or(0);
            let (end, qualified) = reference(&text[start..]);
            proptest::prop_assert_eq!(scan_name(&text, start), (start + end, qualified), "{:?} from {}", text, start);
        }
    }

    #[test]
    fn every_element_name_of_version_1_is_a_name() {
        for name in [
            "query", "module", "file", "response", "package", "delta", "patch", "requires", "frequent", "fallback",
            "mirror", "error", "report", "outcome",
        ] {
            assert!(is_v1_element(name) && is_name(name), "{name}");
        }
        assert!(!is_v1_element("modules") && !is_v1_element("Module"));
    }
}
