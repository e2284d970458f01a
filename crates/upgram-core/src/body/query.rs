//! The query body (SPEC.md §4.3): which modules, and optionally which files, a client has at
//! which versions (\[0063\]-\[0066\], \[0076\]-\[0078\]).

use std::borrow::Cow;

use serde::Serialize;

use crate::body::fallback::MODULE_DOCUMENTS;
use crate::body::value::Fields;
use crate::body::value::is_valid_module_id;
use crate::body::xml::{Element, XmlReader, write_attribute, write_flag};
use crate::body::{finish_leaf, for_each_child, parse_document};
use crate::error::{BodyError, EncodeError};
use crate::limits::{MAX_FILES_PER_MODULE, MAX_MODULES, MAX_PATCH_FORMATS};
use crate::version::Version;

/// The channel a query without a `channel` attribute follows (SPEC.md §4.3).
pub const DEFAULT_CHANNEL: &str = "stable";

/// How many rollout buckets there are: a bucket is a number in `0..BUCKETS` (SPEC.md §4.3).
pub const BUCKETS: u8 = 100;

/// A query: the installed modules a client asks about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Query<'a> {
    /// The client understands compact answers (attribute `compact`, SPEC.md §4.3): the server
    /// may leave out the modules that are current at the version asked. Left out of the JSON
    /// form when `false`, as the attribute is left out of the XML.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub compact: bool,
    /// The release channel the installation follows; `None` means [`DEFAULT_CHANNEL`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channel: Option<Cow<'a, str>>,
    /// The installation's rollout bucket, in `0..BUCKETS`: a random number drawn once per
    /// installation; `None` places it outside every partial rollout.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bucket: Option<u8>,
    /// The binary patch formats the client applies (attribute `patch`, SPEC.md §5.12): format
    /// names separated by single spaces, in order of preference, e.g.
    /// [`PATCH_FORMAT_BSDIFF`](crate::body::PATCH_FORMAT_BSDIFF); `None`: the client applies
    /// none, and the server sends no `<patch>`. See [`Query::accepts_patch`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patch: Option<Cow<'a, str>>,
    /// The client follows fallbacks to module documents (attribute `docs="module"`, SPEC.md
    /// §4.3, §8.5).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub module_docs: bool,
    /// One entry per module, at least one.
    pub modules: Vec<QueryModule<'a>>,
}

/// One module of a query.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QueryModule<'a> {
    /// The module id.
    pub id: Cow<'a, str>,
    /// The installed version; `None` when the module is not installed (the client asks how to
    /// install it).
    pub version: Option<Version<'a>>,
    /// File-level entries: files whose own versions the client reports (frequent files).
    pub files: Vec<QueryFile<'a>>,
}

/// A file-level entry of a query.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QueryFile<'a> {
    /// The file id (a relative path).
    pub id: Cow<'a, str>,
    /// The file's installed version: the version in which its content last changed.
    pub version: Version<'a>,
}

const COMPACT_QUERY_LEN: usize = "<query compact=\"1\"></query>".len();

impl<'a> Query<'a> {
    /// Decodes a query body.
    ///
    /// ```
    /// let query = upgram_core::body::Query::decode(br#"<query><module id="core" version="1.2"/></query>"#)?;
    /// assert_eq!(query.modules[0].id, "core");
    /// # Ok::<(), upgram_core::error::BodyError>(())
    /// ```
    pub fn decode(bytes: &'a [u8]) -> Result<Self, BodyError> {
        parse_document(bytes, "query", |reader, root| {
            let (mut compact, mut channel, mut bucket, mut patch, mut docs) = (None, None, None, None, None);
            reader.for_each_attribute(&root, |name, value| {
                match name {
                    "compact" => compact = Some(value),
                    "channel" => channel = Some(value),
                    "bucket" => bucket = Some(value),
                    "patch" => patch = Some(value),
                    "docs" => docs = Some(value),
                    _ => {}
                }
                Ok(())
            })?;
            let fields = Fields::new("query", None);
            let compact = compact.map_or(Ok(false), |v| fields.flag("compact", &v))?;
            let channel = channel.map(|c| fields.module_id("channel", c)).transpose()?;
            let bucket = bucket.map(|b| fields.small_number::<u8>("bucket", &b)).transpose()?;
            if let Some(b) = bucket
                && b >= BUCKETS
            {
                return Err(fields.invalid("bucket", format!("{b} is not below {BUCKETS}")));
            }
            let patch = patch.map(|p| check_patch_formats(&fields, p)).transpose()?;
            // Another value is a form this decoder does not know: not asked for.
            let module_docs = docs.is_some_and(|d| d == MODULE_DOCUMENTS);
            let mut modules = Vec::with_capacity(module_capacity(bytes));
            for_each_child(reader, &root, "query", &["module"], |reader, element| {
                if modules.len() == MAX_MODULES {
                    return Err(BodyError::TooManyElements { what: "modules", max: MAX_MODULES });
                }
                modules.push(QueryModule::parse(reader, element)?);
                Ok(())
            })?;
            if modules.is_empty() {
                return Err(BodyError::MissingElement { element: "query", context: String::new(), child: "module" });
            }
            // Each module once (SPEC.md §4.3): two entries for one module would be answered
            // twice, and a client must discard a module answered twice (§2.6).
            if let Some(id) = first_repeated(&modules, |m| &m.id) {
                return Err(Fields::new("module", Some(id)).invalid("id", "module listed twice in one query"));
            }
            Ok(Query { compact, channel, bucket, patch, module_docs, modules })
        })
    }

    /// A query about `modules` in today's form: on the default channel, without a bucket and
    /// without the `compact` request.
    pub fn new(modules: Vec<QueryModule<'a>>) -> Self {
        Query { compact: false, channel: None, bucket: None, patch: None, module_docs: false, modules }
    }

    /// Whether the client applies patches of `format` (its `patch` attribute names it).
    pub fn accepts_patch(&self, format: &str) -> bool {
        self.patch.as_deref().is_some_and(|formats| formats.split(' ').any(|f| f == format))
    }

    /// The channel this query follows: its `channel`, or [`DEFAULT_CHANNEL`].
    pub fn channel_or_default(&self) -> &str {
        self.channel.as_deref().unwrap_or(DEFAULT_CHANNEL)
    }

    /// Writes the canonical encoding.
    pub fn encode(&self, out: &mut Vec<u8>) {
        self.encode_open(out);
        for module in &self.modules {
            module.encode(out);
        }
        out.extend_from_slice(b"</query>");
    }

    /// `<query` with this query's attributes, and `>`.
    fn encode_open(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"<query");
        write_flag(out, "compact", self.compact);
        if let Some(channel) = &self.channel {
            write_attribute(out, "channel", channel);
        }
        if let Some(bucket) = self.bucket {
            write_attribute(out, "bucket", &bucket.to_string());
        }
        if let Some(patch) = &self.patch {
            write_attribute(out, "patch", patch);
        }
        if self.module_docs {
            write_attribute(out, "docs", MODULE_DOCUMENTS);
        }
        out.push(b'>');
    }

    /// The length of an encoding of this query's attributes without modules.
    fn empty_len(&self) -> usize {
        let mut out = Vec::new();
        self.encode_open(&mut out);
        out.len() + "</query>".len()
    }

    /// The canonical encoding in a new vector.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(COMPACT_QUERY_LEN + 64 * self.modules.len());
        self.encode(&mut out);
        out
    }

    /// Splits `modules` over as few queries as keep each body within `max_body_len` bytes,
    /// in order. Fails if one module alone does not fit.
    pub fn split(modules: Vec<QueryModule<'a>>, max_body_len: usize) -> Result<Vec<Query<'a>>, EncodeError> {
        Query::new(Vec::new()).split_modules(modules, max_body_len)
    }

    /// [`Query::split`] for queries with this query's channel and bucket (its own modules are
    /// not used): every part carries them.
    pub fn split_modules(
        &self,
        modules: Vec<QueryModule<'a>>,
        max_body_len: usize,
    ) -> Result<Vec<Query<'a>>, EncodeError> {
        let empty_len = self.empty_len();
        let part = |modules| Query {
            compact: self.compact,
            channel: self.channel.clone(),
            bucket: self.bucket,
            patch: self.patch.clone(),
            module_docs: self.module_docs,
            modules,
        };
        let mut queries = Vec::new();
        let mut current = Vec::new();
        let mut len = empty_len;
        let mut scratch = Vec::new();
        for module in modules {
            scratch.clear();
            module.encode(&mut scratch);
            if empty_len + scratch.len() > max_body_len {
                return Err(EncodeError::TooLarge { len: empty_len + scratch.len(), max: max_body_len });
            }
            if len + scratch.len() > max_body_len {
                queries.push(part(std::mem::take(&mut current)));
                len = empty_len;
            }
            len += scratch.len();
            current.push(module);
        }
        if !current.is_empty() {
            queries.push(part(current));
        }
        Ok(queries)
    }

    /// Copies every borrowed string, detaching the query from its input.
    pub fn into_owned(self) -> Query<'static> {
        Query {
            compact: self.compact,
            channel: self.channel.map(|c| Cow::Owned(c.into_owned())),
            bucket: self.bucket,
            patch: self.patch.map(|p| Cow::Owned(p.into_owned())),
            module_docs: self.module_docs,
            modules: self.modules.into_iter().map(QueryModule::into_owned).collect(),
        }
    }
}

impl<'a> QueryModule<'a> {
    fn parse(reader: &mut XmlReader<'a>, element: Element<'a>) -> Result<Self, BodyError> {
        let (mut id, mut version) = (None, None);
        reader.for_each_attribute(&element, |name, value| {
            match name {
                "id" => id = Some(value),
                "version" => version = Some(value),
                _ => {}
            }
            Ok(())
        })?;
        let fields = Fields::new("module", id.as_deref());
        let version = version.map(|v| fields.version("version", v)).transpose()?;
        let id = fields.module_id("id", fields.required("id", id.clone())?)?;
        let mut files = Vec::new();
        for_each_child(reader, &element, "module", &["file"], |reader, child| {
            if files.len() == MAX_FILES_PER_MODULE {
                return Err(BodyError::TooManyElements { what: "files in a module", max: MAX_FILES_PER_MODULE });
            }
            files.push(QueryFile::parse(reader, child)?);
            Ok(())
        })?;
        if let Some(file) = first_repeated(&files, |f| &f.id) {
            return Err(Fields::new("file", Some(file)).invalid("id", format!("file listed twice in module `{id}`")));
        }
        Ok(QueryModule { id, version, files })
    }

    /// Writes the canonical encoding of this `<module>` entry.
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"<module");
        write_attribute(out, "id", &self.id);
        if let Some(version) = &self.version {
            write_attribute(out, "version", version.as_str());
        }
        if self.files.is_empty() {
            out.extend_from_slice(b"/>");
            return;
        }
        out.push(b'>');
        for file in &self.files {
            out.extend_from_slice(b"<file");
            write_attribute(out, "id", &file.id);
            write_attribute(out, "version", file.version.as_str());
            out.extend_from_slice(b"/>");
        }
        out.extend_from_slice(b"</module>");
    }

    /// Copies every borrowed string.
    pub fn into_owned(self) -> QueryModule<'static> {
        QueryModule {
            id: Cow::Owned(self.id.into_owned()),
            version: self.version.map(Version::into_owned),
            files: self
                .files
                .into_iter()
                .map(|f| QueryFile { id: Cow::Owned(f.id.into_owned()), version: f.version.into_owned() })
                .collect(),
        }
    }
}

/// The value of a query's `patch` attribute, checked: 1 to [`MAX_PATCH_FORMATS`] format names
/// (each an `ID`), separated by single spaces.
fn check_patch_formats<'a>(fields: &Fields<'_>, value: Cow<'a, str>) -> Result<Cow<'a, str>, BodyError> {
    let mut count = 0;
    for format in value.split(' ') {
        count += 1;
        if count > MAX_PATCH_FORMATS {
            return Err(fields.invalid("patch", format!("more than {MAX_PATCH_FORMATS} patch formats")));
        }
        if !is_valid_module_id(format) {
            return Err(fields.invalid("patch", format!("`{}` is not a patch format name", format.escape_debug())));
        }
    }
    Ok(value)
}

/// The first id, in byte order, that `items` hold more than once. A few ids, as most queries
/// have, are compared pairwise without allocating (ids usually differ in their last bytes, so
/// those are compared first); more are sorted by reference.
fn first_repeated<'s, T>(items: &'s [T], id: impl Fn(&'s T) -> &'s str) -> Option<&'s str> {
    if items.len() < 2 {
        return None;
    }
    if items.len() <= PAIRWISE_MAX {
        let mut first: Option<&str> = None;
        for (i, item) in items.iter().enumerate() {
            let a = id(item);
            let rest = items.get(i + 1..).unwrap_or_default();
            if rest.iter().any(|other| same_id(a, id(other))) && first.is_none_or(|f| a < f) {
                first = Some(a);
            }
        }
        return first;
    }
    let mut sorted: Vec<&str> = items.iter().map(id).collect();
    sorted.sort_unstable();
    sorted.windows(2).find(|pair| pair[0] == pair[1]).map(|pair| pair[0])
}

/// Room for the modules of a query body, estimated from its length (a `<module>` entry with a
/// version takes some 30 to 40 bytes), up to a bound: past it the vector grows as usual.
fn module_capacity(body: &[u8]) -> usize {
    (body.len() / 32).clamp(1, PRESIZED_MODULES)
}

/// Up to how many modules a decoded query has room for before it reads them.
const PRESIZED_MODULES: usize = 32;

/// Up to how many ids [`first_repeated`] compares pairwise.
const PAIRWISE_MAX: usize = 16;

/// Whether two ids are equal, comparing from the end.
fn same_id(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().rev().zip(b.bytes().rev()).all(|(x, y)| x == y)
}

impl<'a> QueryFile<'a> {
    fn parse(reader: &mut XmlReader<'a>, element: Element<'a>) -> Result<Self, BodyError> {
        let (mut id, mut version) = (None, None);
        reader.for_each_attribute(&element, |name, value| {
            match name {
                "id" => id = Some(value),
                "version" => version = Some(value),
                _ => {}
            }
            Ok(())
        })?;
        finish_leaf(reader, &element, "file")?;
        let fields = Fields::new("file", id.as_deref());
        let version = fields.version("version", fields.required("version", version)?)?;
        let id = fields.file_id("id", fields.required("id", id.clone())?)?;
        Ok(QueryFile { id, version })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::body::Response;

    fn decode_error(body: &str) -> BodyError {
        Query::decode(body.as_bytes()).expect_err(body)
    }

    #[test]
    fn a_module_listed_twice_is_refused_naming_it() {
        let e = decode_error(
            r#"<query><module id="a"/><module id="core" version="1.2"/><module id="b"/><module id="core"/></query>"#,
        );
        assert_eq!(e.name(), "invalid-attribute");
        assert!(e.to_string().contains("core"), "{e}");
    }

    #[test]
    fn a_file_listed_twice_in_one_module_is_refused_but_one_file_id_in_two_modules_is_fine() {
        let e = decode_error(
            r#"<query><module id="core" version="1"><file id="x" version="1"/><file id="db/a.rec" version="1"/><file id="db/a.rec" version="2"/></module></query>"#,
        );
        assert_eq!(e.name(), "invalid-attribute");
        assert!(e.to_string().contains("db/a.rec"), "{e}");
        let query = Query::decode(
            br#"<query><module id="a" version="1"><file id="f" version="1"/></module><module id="b" version="1"><file id="f" version="1"/></module></query>"#,
        )
        .unwrap();
        assert_eq!(query.modules.len(), 2);
    }

    #[test]
    fn distinct_modules_and_files_decode_in_order() {
        let query = Query::decode(
            br#"<query><module id="b" version="1"><file id="y" version="1"/><file id="x" version="1"/></module><module id="a"/></query>"#,
        )
        .unwrap();
        let ids: Vec<&str> = query.modules.iter().map(|m| &*m.id).collect();
        assert_eq!(ids, ["b", "a"]);
        let files: Vec<&str> = query.modules[0].files.iter().map(|f| &*f.id).collect();
        assert_eq!(files, ["y", "x"]);
    }

    #[test]
    fn the_compact_request_decodes_in_every_spelling_and_encodes_canonically() {
        for (text, compact) in [("1", true), ("true", true), ("0", false), ("false", false)] {
            let body = format!(r#"<query compact="{text}"><module id="a" version="1"/></query>"#);
            let query = Query::decode(body.as_bytes()).unwrap();
            assert_eq!(query.compact, compact, "{text}");
            let canonical = if compact { r#"<query compact="1">"# } else { "<query>" };
            assert!(query.to_vec().starts_with(canonical.as_bytes()));
        }
        let error = Query::decode(br#"<query compact="yes"><module id="a"/></query>"#).unwrap_err();
        assert_eq!(error.name(), "invalid-attribute");
    }

    #[test]
    fn the_compact_marker_decodes_and_comes_after_base() {
        let digest = "0".repeat(64);
        let body = format!(
            r#"<response compact="1" base="https://u.example/" for="{digest}" issued="1" expires="2"><module id="a" status="unknown"/></response>"#
        );
        let response = Response::decode(body.as_bytes()).unwrap();
        assert!(response.compact);
        let canonical = format!(
            r#"<response for="{digest}" issued="1" expires="2" base="https://u.example/" compact="1"><module id="a" status="unknown"/></response>"#
        );
        assert_eq!(String::from_utf8(response.to_vec()).unwrap(), canonical);
        let bad = format!(r#"<response for="{digest}" issued="1" expires="2" compact="2"/>"#);
        assert_eq!(Response::decode(bad.as_bytes()).unwrap_err().name(), "invalid-attribute");
    }

    #[test]
    fn the_patch_formats_are_checked_and_looked_up_by_name() {
        let query = Query::decode(br#"<query patch="zstd bsdiff"><module id="a" version="1"/></query>"#).unwrap();
        assert!(query.accepts_patch("bsdiff") && query.accepts_patch("zstd"));
        assert!(!query.accepts_patch("bsd"));
        assert!(query.to_vec().starts_with(br#"<query patch="zstd bsdiff">"#));
        let without = Query::decode(br#"<query><module id="a" version="1"/></query>"#).unwrap();
        assert!(!without.accepts_patch("bsdiff"));
        for bad in ["", " bsdiff", "bsdiff ", "a  b", "a,b", "1 2 3 4 5 6 7 8 9"] {
            let body = format!(r#"<query patch="{bad}"><module id="a" version="1"/></query>"#);
            assert_eq!(decode_error(&body).name(), "invalid-attribute", "{bad:?}");
        }
    }

    proptest::proptest! {
        /// The pairwise search (up to 16 ids) and the sorting one find the same repeated id,
        /// the first in byte order, in lists of every size around the switch between them.
        #[test]
        fn repeated_ids_are_found_alike_pairwise_and_sorted(
            ids in proptest::collection::vec("[ab]{0,3}", 0..40)
        ) {
            let mut sorted: Vec<&str> = ids.iter().map(String::as_str).collect();
            sorted.sort_unstable();
            let expected = sorted.windows(2).find(|pair| pair[0] == pair[1]).map(|pair| pair[0]);
            proptest::prop_assert_eq!(first_repeated(&ids, |id| id.as_str()), expected);
        }
    }
}
