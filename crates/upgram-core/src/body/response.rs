//! The response body (SPEC.md §4.4), which is also the fallback document: per module, the latest
//! version, a status and the upgrade info (\[0079\]-\[0086\]).

use std::borrow::Cow;

use serde::Serialize;

use crate::body::value::Fields;
use crate::body::xml::{Element, XmlReader, unexpected, write_attribute, write_flag, write_number};
use crate::body::{finish_leaf, for_each_child, parse_document};
use crate::digest::Sha256Digest;
use crate::error::BodyError;
use crate::limits::{MAX_FILES_PER_MODULE, MAX_MODULES};
use crate::version::Version;

/// What ties a signed answer to the query it answers, and when it stops being valid
/// (SPEC.md §10.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Binding {
    /// SHA-256 of the exact query body this answers (attribute `for`).
    #[serde(rename = "for")]
    pub query: Sha256Digest,
    /// Unix time the answer was made.
    pub issued: u64,
    /// Unix time after which a client must not accept it.
    pub expires: u64,
}

impl Binding {
    pub(crate) fn parse_fields(
        fields: &Fields<'_>,
        query: Option<Cow<'_, str>>,
        issued: Option<Cow<'_, str>>,
        expires: Option<Cow<'_, str>>,
    ) -> Result<Self, BodyError> {
        let query = fields.digest("for", &fields.required("for", query)?)?;
        let issued = fields.number("issued", &fields.required("issued", issued)?)?;
        let expires = fields.number("expires", &fields.required("expires", expires)?)?;
        if expires < issued {
            return Err(fields.invalid("expires", format!("{expires} is before issued ({issued})")));
        }
        Ok(Binding { query, issued, expires })
    }

    pub(crate) fn encode_attributes(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b" for=\"");
        self.query.write_hex(out);
        out.push(b'"');
        write_number(out, "issued", self.issued);
        write_number(out, "expires", self.expires);
    }
}

/// The answer to a query.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Response<'a> {
    /// Which query it answers and for how long.
    #[serde(flatten)]
    pub binding: Binding,
    /// Prefix of relative URLs (attribute `base`).
    pub base: Option<Cow<'a, str>>,
    /// A compact answer (attribute `compact`, SPEC.md §4.4): every module of the query that is
    /// asked with a version and not listed is current at that version. Only an answer to a
    /// query that asked for it may be compact; see [`crate::merge::expand_compact`]. Left out
    /// of the JSON form when `false`, as the attribute is left out of the XML.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub compact: bool,
    /// One answer per module asked (in a compact answer: per module not current at the version
    /// asked), plus modules included as dependencies.
    pub modules: Vec<ModuleAnswer<'a>>,
}

/// The status of one module (attribute `status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// A newer version is available (`update`).
    Update,
    /// The client is at the latest version (`current`).
    Current,
    /// The server does not know the module (`unknown`).
    Unknown,
    /// The server could not answer for this module; see `code` (`error`).
    Error,
}

impl Status {
    fn parse(value: &str) -> Option<Self> {
        Some(match value {
            "update" => Self::Update,
            "current" => Self::Current,
            "unknown" => Self::Unknown,
            "error" => Self::Error,
            _ => return None,
        })
    }

    /// Its name on the wire.
    pub fn name(self) -> &'static str {
        match self {
            Self::Update => "update",
            Self::Current => "current",
            Self::Unknown => "unknown",
            Self::Error => "error",
        }
    }
}

/// The answer for one module.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ModuleAnswer<'a> {
    /// Module id.
    pub id: Cow<'a, str>,
    /// Status.
    pub status: Status,
    /// Latest version (required for `update` and `current`).
    pub latest: Option<Version<'a>>,
    /// Error code (required for `error`).
    pub code: Option<u16>,
    /// Every file of the module is replaced.
    pub full: bool,
    /// The user may not decline: some release in (current, latest] is forced.
    pub forced: bool,
    /// The highest forced release in (current, latest].
    pub floor: Option<Version<'a>>,
    /// `latest` may be older than the installed version: a signed downgrade.
    pub rollback: bool,
    /// Not asked: included because an asked module requires it.
    pub dependency: bool,
    /// How to get to `latest`.
    pub upgrade: UpgradeInfo<'a>,
    /// Modules this one needs first, at a minimum version.
    pub requires: Vec<Requires<'a>>,
    /// The server's current list of frequently updated files of this module, when it differs
    /// from what the query reported (\[0078\]); empty otherwise.
    pub frequent: Vec<Cow<'a, str>>,
}

/// How to upgrade a module: an install package or a file list (\[0082\]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum UpgradeInfo<'a> {
    /// Nothing to do or nothing offered.
    None,
    /// Run this install package.
    Package(Package<'a>),
    /// Apply these per-file changes.
    Files(Vec<FileEntry<'a>>),
}

/// Where a payload is, how long it is and what it hashes to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Payload<'a> {
    /// Its URL, absolute or relative to the response's `base`.
    pub url: Cow<'a, str>,
    /// Its exact length in bytes.
    pub size: u64,
    /// Its SHA-256.
    pub sha256: Sha256Digest,
}

/// An install package (\[0089\]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Package<'a> {
    /// The package file.
    #[serde(flatten)]
    pub payload: Payload<'a>,
    /// Arguments for the installer.
    pub args: Option<Cow<'a, str>>,
}

/// One file of a file list (\[0090\]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileEntry<'a> {
    /// The file id (a relative path).
    pub id: Cow<'a, str>,
    /// The file's latest version: the version in which its content last changed.
    pub version: Version<'a>,
    /// What to do with it.
    pub action: FileAction<'a>,
    /// The server counts it as frequently updated (\[0078\]).
    pub frequent: bool,
    /// The file is executable (attribute `exec`, SPEC.md §4.4): a client sets its execute
    /// permission bits when it writes the file, and clears them when this is `false`.
    /// Meaningless for [`FileAction::Delete`]. Left out of the JSON form when `false`, as the
    /// attribute is left out of the XML, so that the decoded form of answers without it is
    /// what it was before the attribute existed.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub executable: bool,
    /// A binary patch to the whole new file from one base (element `<patch>`, SPEC.md §5.12):
    /// only with [`FileAction::Replace`], which stays the fallback. Left out of the JSON form
    /// when absent, as the element is left out of the XML.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patch: Option<FilePatch<'a>>,
}

/// The patch format of version 1 (SPEC.md §5.12): bsdiff 4 (`BSDIFF40`, bzip2 streams).
pub const PATCH_FORMAT_BSDIFF: &str = "bsdiff";

/// A binary patch that turns one version of a file (the base) into the whole file its entry
/// names (element `<patch>`, SPEC.md §5.12). The result is the entry's payload: its size and
/// SHA-256 are the entry's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FilePatch<'a> {
    /// The patch format (attribute `format`), e.g. [`PATCH_FORMAT_BSDIFF`].
    pub format: Cow<'a, str>,
    /// The file version of the base (attribute `from`).
    pub from: Version<'a>,
    /// The SHA-256 of the base (attribute `base-sha256`): a client uses the patch only when its
    /// file hashes to it.
    pub base_sha256: Sha256Digest,
    /// The patch itself.
    #[serde(flatten)]
    pub payload: Payload<'a>,
}

/// The per-file update type (attribute `mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FileMode {
    /// Replace the whole file (\[0091\]).
    Replace,
    /// Delete the file.
    Delete,
    /// Merge a record delta into the file (\[0097\]).
    Incremental,
}

impl FileMode {
    fn parse(value: &str) -> Option<Self> {
        Some(match value {
            "replace" => Self::Replace,
            "delete" => Self::Delete,
            "incremental" => Self::Incremental,
            _ => return None,
        })
    }

    /// Its name on the wire.
    pub fn name(self) -> &'static str {
        match self {
            Self::Replace => "replace",
            Self::Delete => "delete",
            Self::Incremental => "incremental",
        }
    }
}

/// What to do with a file, with the data each mode needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FileAction<'a> {
    /// Replace it with this payload.
    Replace(Payload<'a>),
    /// Delete it.
    Delete,
    /// Merge `delta` into it; the merged file must hash to `payload.sha256`, else fetch `payload`
    /// and replace the file whole.
    Incremental {
        /// The whole new file.
        payload: Payload<'a>,
        /// The record delta.
        delta: Delta<'a>,
    },
}

impl FileAction<'_> {
    /// The mode this action is written as.
    pub fn mode(&self) -> FileMode {
        match self {
            Self::Replace(_) => FileMode::Replace,
            Self::Delete => FileMode::Delete,
            Self::Incremental { .. } => FileMode::Incremental,
        }
    }
}

/// A record delta document (SPEC.md §7).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Delta<'a> {
    /// The file version the delta applies to.
    pub from: Version<'a>,
    /// The delta document.
    #[serde(flatten)]
    pub payload: Payload<'a>,
}

/// A dependency: `id` at `min` or newer must be installed first (\[0085\]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Requires<'a> {
    /// The module required.
    pub id: Cow<'a, str>,
    /// Its minimum version.
    pub min: Version<'a>,
}

/// Collects the attributes named in `names` into `slots`, by position; ignores the others.
fn collect<'a, const N: usize>(
    reader: &mut XmlReader<'a>,
    element: &Element<'a>,
    names: [&str; N],
) -> Result<[Option<Cow<'a, str>>; N], BodyError> {
    let mut slots: [Option<Cow<'a, str>>; N] = std::array::from_fn(|_| None);
    reader.for_each_attribute(element, |name, value| {
        if let Some(i) = names.iter().position(|known| *known == name) {
            slots[i] = Some(value);
        }
        Ok(())
    })?;
    Ok(slots)
}

fn parse_payload<'a>(
    fields: &Fields<'_>,
    url: Option<Cow<'a, str>>,
    size: Option<Cow<'a, str>>,
    sha256: Option<Cow<'a, str>>,
    relative_ok: bool,
) -> Result<Payload<'a>, BodyError> {
    let url = fields.url("url", fields.required("url", url)?, relative_ok)?;
    let size = fields.number("size", &fields.required("size", size)?)?;
    let sha256 = fields.digest("sha256", &fields.required("sha256", sha256)?)?;
    Ok(Payload { url, size, sha256 })
}

fn encode_payload(out: &mut Vec<u8>, payload: &Payload<'_>) {
    write_attribute(out, "url", &payload.url);
    write_number(out, "size", payload.size);
    out.extend_from_slice(b" sha256=\"");
    payload.sha256.write_hex(out);
    out.push(b'"');
}

impl<'a> Response<'a> {
    /// Decodes a response body or a fallback document.
    ///
    /// ```
    /// let body = br#"<response for="0000000000000000000000000000000000000000000000000000000000000000" issued="1764000000" expires="1764000300"><module id="core" status="current" latest="1.2"/></response>"#;
    /// let response = upgram_core::body::Response::decode(body)?;
    /// assert_eq!(response.modules[0].status, upgram_core::body::Status::Current);
    /// # Ok::<(), upgram_core::error::BodyError>(())
    /// ```
    pub fn decode(bytes: &'a [u8]) -> Result<Self, BodyError> {
        parse_document(bytes, "response", |reader, root| {
            let [query, issued, expires, base, compact] =
                collect(reader, &root, ["for", "issued", "expires", "base", "compact"])?;
            let fields = Fields::new("response", None);
            let binding = Binding::parse_fields(&fields, query, issued, expires)?;
            let base = base.map(|b| fields.url("base", b, false)).transpose()?;
            let compact = compact.map_or(Ok(false), |v| fields.flag("compact", &v))?;
            let relative_ok = base.is_some();
            let mut modules = Vec::new();
            for_each_child(reader, &root, "response", &["module"], |reader, element| {
                if modules.len() == MAX_MODULES {
                    return Err(BodyError::TooManyElements { what: "modules", max: MAX_MODULES });
                }
                modules.push(ModuleAnswer::parse(reader, element, relative_ok)?);
                Ok(())
            })?;
            Ok(Response { binding, base, compact, modules })
        })
    }

    /// Writes the canonical encoding.
    pub fn encode(&self, out: &mut Vec<u8>) {
        Self::encode_head(&self.binding, self.base.as_deref(), self.compact, self.modules.is_empty(), out);
        if self.modules.is_empty() {
            return;
        }
        for module in &self.modules {
            module.encode(out);
        }
        out.extend_from_slice(b"</response>");
    }

    /// Writes the canonical encoding of a response whose module elements were encoded
    /// beforehand, each by [`ModuleAnswer::encode`], given in order: the same bytes as
    /// [`Response::encode`] of the same response. A server that keeps the encoded answers of
    /// modules it answers often assembles responses this way without encoding them again.
    pub fn encode_from_parts<'p>(
        binding: &Binding,
        base: Option<&str>,
        compact: bool,
        modules: impl ExactSizeIterator<Item = &'p [u8]>,
        out: &mut Vec<u8>,
    ) {
        let empty = modules.len() == 0;
        Self::encode_head(binding, base, compact, empty, out);
        if empty {
            return;
        }
        for module in modules {
            out.extend_from_slice(module);
        }
        out.extend_from_slice(b"</response>");
    }

    /// `<response …>`, or `<response …/>` when it has no modules.
    fn encode_head(binding: &Binding, base: Option<&str>, compact: bool, empty: bool, out: &mut Vec<u8>) {
        out.extend_from_slice(b"<response");
        binding.encode_attributes(out);
        if let Some(base) = base {
            write_attribute(out, "base", base);
        }
        write_flag(out, "compact", compact);
        out.extend_from_slice(if empty { b"/>" } else { b">" });
    }

    /// The canonical encoding in a new vector.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(1024);
        self.encode(&mut out);
        out
    }

    /// The absolute URL of `url`: itself if absolute, else `base ‖ url` (SPEC.md §4.2).
    pub fn resolve_url<'u>(&self, url: &'u str) -> Cow<'u, str> {
        match (&self.base, url.contains("://")) {
            (Some(base), false) => Cow::Owned(format!("{base}{url}")),
            _ => Cow::Borrowed(url),
        }
    }

    /// The answer for module `id`, if any.
    pub fn module(&self, id: &str) -> Option<&ModuleAnswer<'a>> {
        self.modules.iter().find(|m| m.id == id)
    }
}

impl<'a> ModuleAnswer<'a> {
    /// A bare answer for `id` with `status`: no flags, no upgrade info.
    pub fn new(id: impl Into<Cow<'a, str>>, status: Status, latest: Option<Version<'a>>) -> Self {
        Self {
            id: id.into(),
            status,
            latest,
            code: None,
            full: false,
            forced: false,
            floor: None,
            rollback: false,
            dependency: false,
            upgrade: UpgradeInfo::None,
            requires: Vec::new(),
            frequent: Vec::new(),
        }
    }

    fn parse(reader: &mut XmlReader<'a>, element: Element<'a>, relative_ok: bool) -> Result<Self, BodyError> {
        let [id, status, latest, code, full, forced, floor, rollback, dependency] = collect(
            reader,
            &element,
            ["id", "status", "latest", "code", "full", "forced", "floor", "rollback", "dependency"],
        )?;
        let fields = Fields::new("module", id.as_deref());
        let id = fields.module_id("id", fields.required("id", id.clone())?)?;
        let status_text = fields.required("status", status)?;
        let status = Status::parse(&status_text)
            .ok_or_else(|| fields.invalid("status", format!("`{}` is not a status", status_text.escape_debug())))?;
        let flag = |name, value: Option<Cow<'_, str>>| value.map_or(Ok(false), |v| fields.flag(name, &v));
        let mut answer = ModuleAnswer {
            latest: latest.map(|v| fields.version("latest", v)).transpose()?,
            code: code.map(|v| fields.small_number("code", &v)).transpose()?,
            full: flag("full", full)?,
            forced: flag("forced", forced)?,
            floor: floor.map(|v| fields.version("floor", v)).transpose()?,
            rollback: flag("rollback", rollback)?,
            dependency: flag("dependency", dependency)?,
            ..ModuleAnswer::new(id, status, None)
        };
        answer.parse_children(reader, &element, relative_ok)?;
        answer.check(&fields)?;
        Ok(answer)
    }

    fn parse_children(
        &mut self,
        reader: &mut XmlReader<'a>,
        element: &Element<'a>,
        relative_ok: bool,
    ) -> Result<(), BodyError> {
        let known = ["package", "file", "requires", "frequent"];
        for_each_child(reader, element, "module", &known, |reader, child| {
            match child.name {
                "package" => {
                    if !matches!(self.upgrade, UpgradeInfo::None) {
                        return Err(unexpected(
                            &child,
                            "module",
                            " (a module has one package or a file list, not both)",
                        ));
                    }
                    self.upgrade = UpgradeInfo::Package(parse_package(reader, &child, relative_ok)?);
                }
                "file" => {
                    let entry = FileEntry::parse(reader, &child, relative_ok)?;
                    match &mut self.upgrade {
                        UpgradeInfo::None => self.upgrade = UpgradeInfo::Files(vec![entry]),
                        UpgradeInfo::Files(files) if files.len() < MAX_FILES_PER_MODULE => files.push(entry),
                        UpgradeInfo::Files(_) => {
                            return Err(BodyError::TooManyElements {
                                what: "files in a module",
                                max: MAX_FILES_PER_MODULE,
                            });
                        }
                        UpgradeInfo::Package(_) => {
                            return Err(unexpected(
                                &child,
                                "module",
                                " (a module has one package or a file list, not both)",
                            ));
                        }
                    }
                }
                "requires" => self.requires.push(parse_requires(reader, &child)?),
                _ => self.frequent.push(parse_frequent(reader, &child)?),
            }
            Ok(())
        })
    }

    /// The rules between attributes and children that the element-by-element parse cannot see.
    fn check(&self, fields: &Fields<'_>) -> Result<(), BodyError> {
        let missing =
            |child| BodyError::MissingElement { element: "module", context: format!(" id=\"{}\"", self.id), child };
        match self.status {
            Status::Update | Status::Current if self.latest.is_none() => {
                return Err(BodyError::MissingAttribute {
                    element: "module",
                    attribute: "latest",
                    context: format!(" id=\"{}\"", self.id),
                });
            }
            Status::Error if self.code.is_none() => {
                return Err(BodyError::MissingAttribute {
                    element: "module",
                    attribute: "code",
                    context: format!(" id=\"{}\"", self.id),
                });
            }
            Status::Update if matches!(self.upgrade, UpgradeInfo::None) => {
                return Err(missing("package"));
            }
            Status::Current if matches!(self.upgrade, UpgradeInfo::Package(_)) => {
                return Err(fields.invalid("status", "a module that is current has no package"));
            }
            Status::Unknown | Status::Error if !matches!(self.upgrade, UpgradeInfo::None) => {
                return Err(fields
                    .invalid("status", format!("a module with status {} has no upgrade info", self.status.name())));
            }
            _ => {}
        }
        Ok(())
    }

    /// Writes the canonical encoding of this `<module>` element, as [`Response::encode`] does
    /// for each of its modules.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"<module");
        write_attribute(out, "id", &self.id);
        write_attribute(out, "status", self.status.name());
        if let Some(latest) = &self.latest {
            write_attribute(out, "latest", latest.as_str());
        }
        if let Some(code) = self.code {
            write_number(out, "code", u64::from(code));
        }
        write_flag(out, "full", self.full);
        write_flag(out, "forced", self.forced);
        if let Some(floor) = &self.floor {
            write_attribute(out, "floor", floor.as_str());
        }
        write_flag(out, "rollback", self.rollback);
        write_flag(out, "dependency", self.dependency);
        let no_children =
            matches!(self.upgrade, UpgradeInfo::None) && self.requires.is_empty() && self.frequent.is_empty();
        if no_children {
            out.extend_from_slice(b"/>");
            return;
        }
        out.push(b'>');
        match &self.upgrade {
            UpgradeInfo::None => {}
            UpgradeInfo::Package(package) => {
                out.extend_from_slice(b"<package");
                encode_payload(out, &package.payload);
                if let Some(args) = &package.args {
                    write_attribute(out, "args", args);
                }
                out.extend_from_slice(b"/>");
            }
            UpgradeInfo::Files(files) => files.iter().for_each(|file| file.encode(out)),
        }
        for requires in &self.requires {
            out.extend_from_slice(b"<requires");
            write_attribute(out, "id", &requires.id);
            write_attribute(out, "min", requires.min.as_str());
            out.extend_from_slice(b"/>");
        }
        for frequent in &self.frequent {
            out.extend_from_slice(b"<frequent");
            write_attribute(out, "id", frequent);
            out.extend_from_slice(b"/>");
        }
        out.extend_from_slice(b"</module>");
    }
}

fn parse_package<'a>(
    reader: &mut XmlReader<'a>,
    element: &Element<'a>,
    relative_ok: bool,
) -> Result<Package<'a>, BodyError> {
    let [url, size, sha256, args] = collect(reader, element, ["url", "size", "sha256", "args"])?;
    finish_leaf(reader, element, "package")?;
    let fields = Fields::new("package", None);
    Ok(Package { payload: parse_payload(&fields, url, size, sha256, relative_ok)?, args })
}

fn parse_requires<'a>(reader: &mut XmlReader<'a>, element: &Element<'a>) -> Result<Requires<'a>, BodyError> {
    let [id, min] = collect(reader, element, ["id", "min"])?;
    finish_leaf(reader, element, "requires")?;
    let fields = Fields::new("requires", id.as_deref());
    let min = fields.version("min", fields.required("min", min)?)?;
    let id = fields.module_id("id", fields.required("id", id.clone())?)?;
    Ok(Requires { id, min })
}

fn parse_frequent<'a>(reader: &mut XmlReader<'a>, element: &Element<'a>) -> Result<Cow<'a, str>, BodyError> {
    let [id] = collect(reader, element, ["id"])?;
    finish_leaf(reader, element, "frequent")?;
    let fields = Fields::new("frequent", None);
    fields.file_id("id", fields.required("id", id)?)
}

impl<'a> FileEntry<'a> {
    fn parse(reader: &mut XmlReader<'a>, element: &Element<'a>, relative_ok: bool) -> Result<Self, BodyError> {
        let [id, version, mode, url, size, sha256, frequent, exec] =
            collect(reader, element, ["id", "version", "mode", "url", "size", "sha256", "frequent", "exec"])?;
        let fields = Fields::new("file", id.as_deref());
        let version = fields.version("version", fields.required("version", version)?)?;
        let mode_text = fields.required("mode", mode)?;
        let mode = FileMode::parse(&mode_text).ok_or_else(|| {
            fields.invalid("mode", format!("`{}` is not replace, delete or incremental", mode_text.escape_debug()))
        })?;
        let frequent = frequent.map_or(Ok(false), |v| fields.flag("frequent", &v))?;
        let executable = exec.map_or(Ok(false), |v| fields.flag("exec", &v))?;
        let (mut delta, mut patch) = (None, None);
        for_each_child(reader, element, "file", &["delta", "patch"], |reader, child| {
            if child.name == "patch" {
                if mode != FileMode::Replace || patch.is_some() {
                    return Err(unexpected(&child, "file", " (only one, and only with mode=\"replace\")"));
                }
                patch = Some(parse_patch(reader, &child, relative_ok)?);
                return Ok(());
            }
            if mode != FileMode::Incremental || delta.is_some() {
                return Err(unexpected(&child, "file", " (only one, and only with mode=\"incremental\")"));
            }
            delta = Some(parse_delta(reader, &child, relative_ok)?);
            Ok(())
        })?;
        let action = match mode {
            FileMode::Delete => {
                if let Some(name) = [("url", &url), ("size", &size), ("sha256", &sha256)]
                    .iter()
                    .find(|(_, v)| v.is_some())
                    .map(|(n, _)| *n)
                {
                    return Err(fields.invalid(name, "not allowed with mode=\"delete\""));
                }
                FileAction::Delete
            }
            FileMode::Replace => FileAction::Replace(parse_payload(&fields, url, size, sha256, relative_ok)?),
            FileMode::Incremental => FileAction::Incremental {
                payload: parse_payload(&fields, url, size, sha256, relative_ok)?,
                delta: delta.ok_or_else(|| BodyError::MissingElement {
                    element: "file",
                    context: format!(" id=\"{}\"", id.as_deref().unwrap_or("")),
                    child: "delta",
                })?,
            },
        };
        let id = fields.file_id("id", fields.required("id", id.clone())?)?;
        Ok(FileEntry { id, version, action, frequent, executable, patch })
    }

    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"<file");
        write_attribute(out, "id", &self.id);
        write_attribute(out, "version", self.version.as_str());
        write_attribute(out, "mode", self.action.mode().name());
        match &self.action {
            FileAction::Replace(payload) | FileAction::Incremental { payload, .. } => encode_payload(out, payload),
            FileAction::Delete => {}
        }
        write_flag(out, "frequent", self.frequent);
        write_flag(out, "exec", self.executable);
        match &self.action {
            FileAction::Incremental { delta, .. } => {
                out.extend_from_slice(b"><delta");
                write_attribute(out, "from", delta.from.as_str());
                encode_payload(out, &delta.payload);
                out.extend_from_slice(b"/></file>");
            }
            _ => match &self.patch {
                Some(patch) => {
                    out.extend_from_slice(b"><patch");
                    write_attribute(out, "format", &patch.format);
                    write_attribute(out, "from", patch.from.as_str());
                    out.extend_from_slice(b" base-sha256=\"");
                    patch.base_sha256.write_hex(out);
                    out.push(b'"');
                    encode_payload(out, &patch.payload);
                    out.extend_from_slice(b"/></file>");
                }
                None => out.extend_from_slice(b"/>"),
            },
        }
    }
}

fn parse_delta<'a>(
    reader: &mut XmlReader<'a>,
    element: &Element<'a>,
    relative_ok: bool,
) -> Result<Delta<'a>, BodyError> {
    let [from, url, size, sha256] = collect(reader, element, ["from", "url", "size", "sha256"])?;
    finish_leaf(reader, element, "delta")?;
    let fields = Fields::new("delta", None);
    let from = fields.version("from", fields.required("from", from)?)?;
    Ok(Delta { from, payload: parse_payload(&fields, url, size, sha256, relative_ok)? })
}

fn parse_patch<'a>(
    reader: &mut XmlReader<'a>,
    element: &Element<'a>,
    relative_ok: bool,
) -> Result<FilePatch<'a>, BodyError> {
    let [format, from, base, url, size, sha256] =
        collect(reader, element, ["format", "from", "base-sha256", "url", "size", "sha256"])?;
    finish_leaf(reader, element, "patch")?;
    let fields = Fields::new("patch", None);
    let format = fields.module_id("format", fields.required("format", format)?)?;
    let from = fields.version("from", fields.required("from", from)?)?;
    let base_sha256 = fields.digest("base-sha256", &fields.required("base-sha256", base)?)?;
    Ok(FilePatch { format, from, base_sha256, payload: parse_payload(&fields, url, size, sha256, relative_ok)? })
}
