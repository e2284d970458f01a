//! The XML bodies (SPEC.md §4): query, response (also the fallback document), fallback, error,
//! install report.
//!
//! Every body type has `decode(&'a [u8])`, which borrows strings from the input, and
//! `encode(&self, &mut Vec<u8>)`, which writes the canonical form: no declaration, no whitespace
//! between elements, attributes in the order of the spec, `false` flags left out.

pub mod error;
pub mod fallback;
mod owned;
pub mod query;
pub mod report;
pub mod response;
pub mod value;
pub(crate) mod xml;

pub use error::{ErrorBody, ErrorCode};
pub use fallback::{Fallback, ModuleDocument, ModuleDocuments};
pub use query::{BUCKETS, DEFAULT_CHANNEL, Query, QueryFile, QueryModule};
pub use report::{BANDS, FailureCode, Outcome, OutcomeKind, Report};
pub use response::{
    Binding, Delta, FileAction, FileEntry, FileMode, FilePatch, ModuleAnswer, PATCH_FORMAT_BSDIFF, Package, Payload,
    Requires, Response, Status, UpgradeInfo,
};

use crate::error::BodyError;
use xml::{Element, Node, XmlReader};

/// Parses a whole document whose root must be `<root>`, then checks nothing follows it.
pub(crate) fn parse_document<'a, T>(
    bytes: &'a [u8],
    root: &'static str,
    parse_root: impl FnOnce(&mut XmlReader<'a>, Element<'a>) -> Result<T, BodyError>,
) -> Result<T, BodyError> {
    let mut reader = XmlReader::new(bytes)?;
    let element = match reader.next()? {
        Node::Open(element) if element.name == root => element,
        Node::Open(element) => {
            return Err(BodyError::WrongRoot { expected: root, found: format!("<{}>", element.name) });
        }
        Node::Close => {
            return Err(BodyError::WrongRoot { expected: root, found: "an empty document".into() });
        }
    };
    let value = parse_root(&mut reader, element)?;
    match reader.next()? {
        Node::Close => Ok(value),
        Node::Open(extra) => Err(BodyError::XmlSyntax { offset: extra.offset, reason: "a second root element".into() }),
    }
}

/// Whether `name` is an element name of protocol version 1. One of these where its parent does
/// not allow it is an error; any other name is an extension and is skipped (SPEC.md §4.1.3).
pub(crate) fn is_v1_element(name: &str) -> bool {
    matches!(
        name,
        "query"
            | "module"
            | "file"
            | "response"
            | "package"
            | "delta"
            | "patch"
            | "requires"
            | "frequent"
            | "fallback"
            | "mirror"
            | "error"
            | "report"
            | "outcome"
    )
}

/// Visits the children of `element`, whose name is `parent`: those in `allowed` go to `child`,
/// other version 1 elements are an error, unknown ones are skipped (forward compatibility).
#[inline]
pub(crate) fn for_each_child<'a>(
    reader: &mut XmlReader<'a>,
    element: &Element<'a>,
    parent: &'static str,
    allowed: &[&str],
    mut child: impl FnMut(&mut XmlReader<'a>, Element<'a>) -> Result<(), BodyError>,
) -> Result<(), BodyError> {
    if element.empty {
        return Ok(());
    }
    loop {
        match reader.next()? {
            Node::Open(next) if allowed.contains(&next.name) => child(reader, next)?,
            Node::Open(next) if is_v1_element(next.name) => {
                return Err(xml::unexpected(&next, parent, ""));
            }
            Node::Open(next) => reader.skip(&next)?,
            Node::Close => return Ok(()),
        }
    }
}

/// Reads past the end of a leaf element (one without version 1 children).
pub(crate) fn finish_leaf<'a>(
    reader: &mut XmlReader<'a>,
    element: &Element<'a>,
    name: &'static str,
) -> Result<(), BodyError> {
    for_each_child(reader, element, name, &[], |_, _| Ok(()))
}
