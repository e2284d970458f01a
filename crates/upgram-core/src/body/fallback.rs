//! The fallback body (SPEC.md §4.5, §8): signed in place of an answer that does not fit a
//! datagram (\[0084\]). It points either at one response document (its size, SHA-256 and
//! mirrors), or at one module document per module answer (SPEC.md §8.5): query-independent
//! documents named by their SHA-256, shared by every query that asks the same of a module.

use std::borrow::Cow;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;

use crate::body::response::Binding;
use crate::body::value::Fields;
use crate::body::xml::{Element, XmlReader, unexpected, write_attribute, write_flag, write_number};
use crate::body::{finish_leaf, for_each_child, parse_document};
use crate::digest::Sha256Digest;
use crate::error::BodyError;
use crate::limits::{MAX_DOCUMENT_LEN, MAX_MIRRORS};

/// The most module documents one fallback names (SPEC.md §4.5): more do not fit a datagram.
pub const MAX_MODULE_DOCUMENTS: usize = 16;

/// The value of the query attribute `docs` with which a client says it follows fallbacks to
/// module documents (SPEC.md §4.3).
pub const MODULE_DOCUMENTS: &str = "module";

/// A pointer to the full response document, or to its module documents.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Fallback<'a> {
    /// Which query it answers and for how long; the document carries the same.
    #[serde(flatten)]
    pub binding: Binding,
    /// The document's exact length (at most [`MAX_DOCUMENT_LEN`]); 0 in the module-document
    /// form.
    pub size: u64,
    /// The document's SHA-256; all zero in the module-document form.
    pub sha256: Sha256Digest,
    /// Absolute URLs of the document, tried in order (1 to [`MAX_MIRRORS`]); none in the
    /// module-document form.
    pub mirrors: Vec<Cow<'a, str>>,
    /// The module-document form: the answer is the module documents listed, in order.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub modules: Option<ModuleDocuments<'a>>,
}

/// The module documents a fallback names (SPEC.md §4.5, §8.5): the answer is the response
/// with the fallback's binding, this `base` and `compact`, and these documents' `<module>`
/// elements in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ModuleDocuments<'a> {
    /// The answer's `base`; each document is at `{base}doc/{sha256 in hex}.xml`.
    pub base: Cow<'a, str>,
    /// The answer is compact (SPEC.md §4.4).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub compact: bool,
    /// The documents, in the order of the answer's modules (1 to [`MAX_MODULE_DOCUMENTS`]).
    pub documents: Vec<ModuleDocument<'a>>,
}

/// One module document: a `<module>` element of a response, named by its SHA-256.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ModuleDocument<'a> {
    /// The module it answers (attribute `m`).
    pub module: Cow<'a, str>,
    /// Its exact length (at most [`MAX_DOCUMENT_LEN`]).
    pub size: u64,
    /// Its SHA-256 (attribute `h`, base64url without padding).
    pub sha256: Sha256Digest,
}

impl ModuleDocuments<'_> {
    /// Where the document with `sha256` is: `{base}doc/{sha256 in hex}.xml`.
    pub fn url(&self, sha256: &Sha256Digest) -> String {
        document_url(&self.base, sha256)
    }
}

impl ModuleDocument<'_> {
    /// The `<doc/>` element a fallback of the module-document form lists for this document.
    /// A server that names the same module documents in many fallbacks may encode each element
    /// once and assemble the fallbacks with [`encode_module_pointer`].
    pub fn encode_element(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"<doc");
        write_attribute(out, "m", &self.module);
        write_number(out, "size", self.size);
        out.extend_from_slice(b" h=\"");
        write_base64url(out, &self.sha256);
        out.extend_from_slice(b"\"/>");
    }
}

/// Writes the body of a fallback of the module-document form (SPEC.md §8.5) into `out` from
/// its `<doc/>` elements already encoded by [`ModuleDocument::encode_element`], in answer
/// order: the same bytes as [`Fallback::encode`] of that fallback. The caller keeps to 1 to
/// [`MAX_MODULE_DOCUMENTS`] elements.
pub fn encode_module_pointer<E: AsRef<[u8]>>(
    binding: &Binding,
    base: &str,
    compact: bool,
    elements: impl IntoIterator<Item = E>,
    out: &mut Vec<u8>,
) {
    out.extend_from_slice(b"<fallback");
    binding.encode_attributes(out);
    open_module_pointer(base, compact, out);
    for element in elements {
        out.extend_from_slice(element.as_ref());
    }
    out.extend_from_slice(b"</fallback>");
}

/// The attributes after the binding of a fallback of the module-document form, and the end of
/// its start tag.
fn open_module_pointer(base: &str, compact: bool, out: &mut Vec<u8>) {
    write_attribute(out, "base", base);
    write_flag(out, "compact", compact);
    out.push(b'>');
}

/// Where a server serves the document with hash `sha256` under its public `base` (ending in
/// `/`): `{base}doc/{sha256 in hex}.xml`.
pub fn document_url(base: &str, sha256: &Sha256Digest) -> String {
    let mut url = Vec::with_capacity(base.len() + "doc/".len() + 64 + ".xml".len());
    url.extend_from_slice(base.as_bytes());
    url.extend_from_slice(b"doc/");
    sha256.write_hex(&mut url);
    url.extend_from_slice(b".xml");
    // UTF-8 followed by ASCII: never lossy.
    String::from_utf8_lossy(&url).into_owned()
}

fn write_base64url(out: &mut Vec<u8>, sha256: &Sha256Digest) {
    let mut buf = [0u8; 43];
    if URL_SAFE_NO_PAD.encode_slice(sha256.0, &mut buf).is_ok() {
        out.extend_from_slice(&buf);
    }
}

fn parse_base64url(fields: &Fields<'_>, value: &str) -> Result<Sha256Digest, BodyError> {
    let mut out = [0u8; 33];
    match URL_SAFE_NO_PAD.decode_slice(value, &mut out) {
        Ok(32) if value.len() == 43 => {
            let mut digest = [0u8; 32];
            digest.copy_from_slice(&out[..32]);
            Ok(Sha256Digest(digest))
        }
        _ => Err(fields.invalid("h", "not a SHA-256 digest (43 base64url characters, no padding)")),
    }
}

impl<'a> Fallback<'a> {
    /// Decodes a fallback body.
    pub fn decode(bytes: &'a [u8]) -> Result<Self, BodyError> {
        parse_document(bytes, "fallback", |reader, root| {
            let (mut query, mut issued, mut expires, mut size, mut sha256) = (None, None, None, None, None);
            let (mut base, mut compact) = (None, None);
            reader.for_each_attribute(&root, |name, value| {
                match name {
                    "for" => query = Some(value),
                    "issued" => issued = Some(value),
                    "expires" => expires = Some(value),
                    "size" => size = Some(value),
                    "sha256" => sha256 = Some(value),
                    "base" => base = Some(value),
                    "compact" => compact = Some(value),
                    _ => {}
                }
                Ok(())
            })?;
            let fields = Fields::new("fallback", None);
            let binding = Binding::parse_fields(&fields, query, issued, expires)?;
            let mut mirrors = Vec::new();
            let mut documents = Vec::new();
            for_each_child(reader, &root, "fallback", &["mirror", "doc"], |reader, element| {
                let mixed = if element.name == "doc" { !mirrors.is_empty() } else { !documents.is_empty() };
                if mixed {
                    return Err(unexpected(&element, "fallback", ": mirrors and module documents do not mix"));
                }
                if element.name == "doc" {
                    if documents.len() == MAX_MODULE_DOCUMENTS {
                        return Err(BodyError::TooManyElements { what: "module documents", max: MAX_MODULE_DOCUMENTS });
                    }
                    documents.push(ModuleDocument::parse(reader, element)?);
                    return Ok(());
                }
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
            if !documents.is_empty() {
                for (name, value) in [("size", &size), ("sha256", &sha256)] {
                    if value.is_some() {
                        return Err(fields.invalid(name, "not allowed with module documents"));
                    }
                }
                let base = fields.url("base", fields.required("base", base)?, false)?;
                let compact = compact.map_or(Ok(false), |v| fields.flag("compact", &v))?;
                let modules = Some(ModuleDocuments { base, compact, documents });
                return Ok(Fallback { binding, size: 0, sha256: Sha256Digest([0; 32]), mirrors, modules });
            }
            if mirrors.is_empty() {
                return Err(BodyError::MissingElement { element: "fallback", context: String::new(), child: "mirror" });
            }
            for (name, value) in [("base", &base), ("compact", &compact)] {
                if value.is_some() {
                    return Err(fields.invalid(name, "only allowed with module documents"));
                }
            }
            let size = fields.number("size", &fields.required("size", size)?)?;
            if size > MAX_DOCUMENT_LEN as u64 {
                return Err(fields.invalid("size", format!("{size} is more than the {MAX_DOCUMENT_LEN} allowed")));
            }
            let sha256 = fields.digest("sha256", &fields.required("sha256", sha256)?)?;
            Ok(Fallback { binding, size, sha256, mirrors, modules: None })
        })
    }

    /// Writes the canonical encoding.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"<fallback");
        self.binding.encode_attributes(out);
        if let Some(modules) = &self.modules {
            open_module_pointer(&modules.base, modules.compact, out);
            for document in &modules.documents {
                document.encode_element(out);
            }
            out.extend_from_slice(b"</fallback>");
            return;
        }
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
        let documents = self.modules.as_ref().map_or(0, |m| m.base.len() + 96 * m.documents.len());
        let mut out = Vec::with_capacity(256 + documents + self.mirrors.iter().map(|m| m.len() + 20).sum::<usize>());
        self.encode(&mut out);
        out
    }
}

impl<'a> ModuleDocument<'a> {
    fn parse(reader: &mut XmlReader<'a>, element: Element<'a>) -> Result<Self, BodyError> {
        let (mut module, mut size, mut hash) = (None, None, None);
        reader.for_each_attribute(&element, |name, value| {
            match name {
                "m" => module = Some(value),
                "size" => size = Some(value),
                "h" => hash = Some(value),
                _ => {}
            }
            Ok(())
        })?;
        finish_leaf(reader, &element, "doc")?;
        let fields = Fields::new("doc", None);
        let module = fields.module_id("m", fields.required("m", module)?)?;
        let size = fields.number("size", &fields.required("size", size)?)?;
        if size > MAX_DOCUMENT_LEN as u64 {
            return Err(fields.invalid("size", format!("{size} is more than the {MAX_DOCUMENT_LEN} allowed")));
        }
        let sha256 = parse_base64url(&fields, &fields.required("h", hash)?)?;
        Ok(ModuleDocument { module, size, sha256 })
    }
}
