//! The fallback body (SPEC.md §4.5, §8): where the full response document is, its size and its
//! SHA-256, signed in place of an answer that does not fit a datagram (\[0084\]).

use std::borrow::Cow;

use serde::Serialize;

use crate::body::response::Binding;
use crate::body::value::Fields;
use crate::body::xml::{write_attribute, write_number};
use crate::body::{finish_leaf, for_each_child, parse_document};
use crate::digest::Sha256Digest;
use crate::error::BodyError;
use crate::limits::{MAX_DOCUMENT_LEN, MAX_MIRRORS};

/// A pointer to the full response document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Fallback<'a> {
    /// Which query it answers and for how long; the document carries the same.
    #[serde(flatten)]
    pub binding: Binding,
    /// The document's exact length (at most [`MAX_DOCUMENT_LEN`]).
    pub size: u64,
    /// The document's SHA-256.
    pub sha256: Sha256Digest,
    /// Absolute URLs of the document, tried in order (1 to [`MAX_MIRRORS`]).
    pub mirrors: Vec<Cow<'a, str>>,
}

impl<'a> Fallback<'a> {
    /// Decodes a fallback body.
    pub fn decode(bytes: &'a [u8]) -> Result<Self, BodyError> {
        parse_document(bytes, "fallback", |reader, root| {
            let (mut query, mut issued, mut expires, mut size, mut sha256) = (None, None, None, None, None);
            reader.for_each_attribute(&root, |name, value| {
                match name {
                    "for" => query = Some(value),
                    "issued" => issued = Some(value),
                    "expires" => expires = Some(value),
                    "size" => size = Some(value),
                    "sha256" => sha256 = Some(value),
                    _ => {}
                }
                Ok(())
            })?;
            let fields = Fields::new("fallback", None);
            let binding = Binding::parse_fields(&fields, query, issued, expires)?;
            let size = fields.number("size", &fields.required("size", size)?)?;
            if size > MAX_DOCUMENT_LEN as u64 {
                return Err(fields.invalid("size", format!("{size} is more than the {MAX_DOCUMENT_LEN} allowed")));
            }
            let sha256 = fields.digest("sha256", &fields.required("sha256", sha256)?)?;
            let mut mirrors = Vec::new();
            for_each_child(reader, &root, "fallback", &["mirror"], |reader, element| {
                let mut url = None;
                reader.for_each_attribute(&element, |name, value| {
                    if name == "url" {
                        url = Some(value);
                    }
                    Ok(())
                })?;
                finish_leaf(reader, &element, "mirror")?;
                if mirrors.len() == MAX_MIRRORS {
                    return Err(BodyError::TooManyElements { what: "mirrors", max: MAX_MIRRORS });
                }
                let fields = Fields::new("mirror", None);
                mirrors.push(fields.url("url", fields.required("url", url)?, false)?);
                Ok(())
            })?;
            if mirrors.is_empty() {
                return Err(BodyError::MissingElement { element: "fallback", context: String::new(), child: "mirror" });
            }
            Ok(Fallback { binding, size, sha256, mirrors })
        })
    }

    /// Writes the canonical encoding.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"<fallback");
        self.binding.encode_attributes(out);
        write_number(out, "size", self.size);
        out.extend_from_slice(b" sha256=\"");
        self.sha256.write_hex(out);
        out.extend_from_slice(b"\">");
        for mirror in &self.mirrors {
            out.extend_from_slice(b"<mirror");
            write_attribute(out, "url", mirror);
            out.extend_from_slice(b"/>");
        }
        out.extend_from_slice(b"</fallback>");
    }

    /// The canonical encoding in a new vector.
    pub fn to_vec(&self) -> Vec<u8> {
        // The attributes take under 256 bytes, each mirror its URL and 20 (more if escaped).
        let mut out = Vec::with_capacity(256 + self.mirrors.iter().map(|m| m.len() + 20).sum::<usize>());
        self.encode(&mut out);
        out
    }
}
