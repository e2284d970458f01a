//! Loading the catalog folder (semantics in SPEC.md §5): `catalog.toml`, one
//! `modules/<id>.toml` per module, and the payload store `store/<sha256>`.
//!
//! ```text
//! CATALOG/catalog.toml        optional: [settings] critical, record_files, frequent_changes, frequent_window
//! CATALOG/modules/<id>.toml   one module and its releases, oldest first
//! CATALOG/store/<sha256>      content-addressed blobs: files, packages, record deltas
//! ```
//!
//! A module file (what [`save_module`] writes; keys in any order, optional ones marked):
//!
//! ```toml
//! id = "core"                                  # = the file name
//! frequent = ["db/signatures.rec"]             # optional: files of the latest release
//!
//! [[release]]                                 # one per release, ascending versions
//! version = "1.2"
//! forced = false                              # optional, default false; also full, rollback
//! channels = ["stable", "beta"]               # optional, default ["stable"]
//! rollout = { state = "rolling", schedule = [{ percent = 10 }, { percent = 100, at = 2026-12-01T10:00:00Z }] }
//!                                             # optional, default: rolling at 100 %; state rolling,
//!                                             # paused, halted or withdrawn; schedule optional;
//!                                             # halt = { share = 0.2, window = 50, min = 20 }
//!                                             # optional (these defaults): when it halts itself;
//!                                             # resumed = 2026-12-01T10:00:00Z: the last resume,
//!                                             # reports before it are not judged
//! requires = ["main-module>=5.1"]             # optional
//! package = { sha256 = "…", size = 123, args = "--quiet" }   # optional; args optional
//!
//! [[release.file]]                            # every file of the module at this release
//! id = "bin/app"
//! version = "1.2"                             # the release that last changed its content or flag
//! sha256 = "…"
//! size = 1234
//! executable = true                           # optional, default false: clients make it executable
//!
//! [[release.deleted]]                         # every file deleted so far, and by which release
//! id = "old.txt"
//! version = "1.2"
//!
//! [[release.delta]]                           # record delta from an earlier version of a record file
//! file = "db/signatures.rec"
//! from = "1.1"
//! sha256 = "…"
//! size = 99
//!
//! [[release.patch]]                           # binary patch (bsdiff) from an earlier content of a file
//! file = "bin/app"
//! from = "1.1"                                # the file version of the base
//! base_sha256 = "…"                           # the base's SHA-256
//! sha256 = "…"                                # the patch
//! size = 2048
//! ```
//!
//! People edit these files by hand, so loading validates everything and every error names the
//! file, the line and the field. Loading reads no blob: it checks that each one the catalog
//! names exists with the stated size (hashing a big catalog at every reload would be too slow;
//! the publisher hashed them). Names in `modules/` that start with `.` are ignored: they are
//! temporary files of an interrupted write, or an editor's. The result is deterministic: files,
//! deletions and deltas of each release are sorted by id, whatever their order in the file.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;
use upgram_core::Sha256Digest;
use upgram_core::body::value::{is_valid_file_id, is_valid_module_id};
use upgram_core::limits::{MAX_ATTRIBUTE_LEN, MAX_FILES_PER_MODULE};
use upgram_core::version::Version;

use super::error::CatalogError;
use super::model::{
    Blob, Catalog, DeletedFile, DeltaRef, Module, Package, PatchRef, Release, ReleaseFile, Settings, matches_any,
};
use super::requirement::Requirement;
use super::rollout::{HaltRule, Rollout, RolloutState, RolloutStep, datetime_to_unix, default_channels};
use super::store::store_dir;

pub use super::save::save_module;
pub use super::store::{store_blob, store_file};

/// The settings file, relative to the catalog folder.
pub const SETTINGS_FILE: &str = "catalog.toml";

/// The folder of module files, relative to the catalog folder.
pub const MODULES_DIR: &str = "modules";

const RELEASE: &str = "[[release]]";
const PACKAGE: &str = "[release.package]";
const FILE: &str = "[[release.file]]";
const DELETED: &str = "[[release.deleted]]";
const DELTA: &str = "[[release.delta]]";
const PATCH: &str = "[[release.patch]]";
const SETTINGS: &str = "[settings]";
const ROLLOUT: &str = "release.rollout";

/// Loads and validates the catalog in the folder `dir`.
///
/// A folder without `catalog.toml` has the default settings; one without `modules/` is an
/// empty catalog. Modules come out sorted by id, their releases in ascending version order.
pub fn load(dir: &Path) -> Result<Catalog, CatalogError> {
    fs::read_dir(dir).map_err(CatalogError::io(dir))?;
    let settings = load_settings(dir)?;
    let mut blobs = BlobCheck::new(store_dir(dir));
    let mut loaded = Vec::new();
    for (id, file) in module_files(dir)? {
        let text = read_text(dir, &file)?;
        let source = Source { file: &file, text: &text };
        loaded.push(parse_module(&source, &id, &settings, &mut blobs)?);
    }
    check_requirements(&loaded)?;
    let modules = loaded.into_iter().map(|m| (m.module.id.clone(), m.module)).collect();
    Ok(Catalog { settings, modules })
}

/// The relative path of the module file of `id`.
pub fn module_file(id: &str) -> PathBuf {
    Path::new(MODULES_DIR).join(format!("{id}.toml"))
}

// ---- catalog.toml ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCatalogFile {
    settings: Option<RawSettings>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSettings {
    critical: Option<Vec<Spanned<String>>>,
    record_files: Option<Vec<Spanned<String>>>,
    frequent_changes: Option<Spanned<u64>>,
    frequent_window: Option<Spanned<u64>>,
}

fn load_settings(dir: &Path) -> Result<Settings, CatalogError> {
    let file = PathBuf::from(SETTINGS_FILE);
    let text = match read_text(dir, &file) {
        Err(CatalogError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
            return Ok(Settings::default());
        }
        other => other?,
    };
    let source = Source { file: &file, text: &text };
    let raw: RawCatalogFile = toml::from_str(&text).map_err(|e| source.syntax(&e))?;
    let mut settings = Settings::default();
    let Some(raw) = raw.settings else {
        return Ok(settings);
    };
    if let Some(critical) = raw.critical {
        settings.critical = source.patterns(critical, "critical")?;
    }
    if let Some(record_files) = raw.record_files {
        settings.record_files = source.patterns(record_files, "record_files")?;
    }
    if let Some(n) = raw.frequent_changes {
        settings.frequent_changes = source.count(&n, "frequent_changes")?;
    }
    if let Some(n) = raw.frequent_window {
        settings.frequent_window = source.count(&n, "frequent_window")?;
    }
    Ok(settings)
}

// ---- modules/<id>.toml ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawModule {
    id: Spanned<String>,
    #[serde(default)]
    frequent: Vec<Spanned<String>>,
    #[serde(default)]
    release: Vec<RawRelease>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRelease {
    version: Spanned<String>,
    #[serde(default)]
    forced: bool,
    #[serde(default)]
    full: bool,
    #[serde(default)]
    rollback: bool,
    #[serde(default)]
    requires: Vec<Spanned<String>>,
    channels: Option<Spanned<Vec<Spanned<String>>>>,
    rollout: Option<RawRollout>,
    package: Option<RawPackage>,
    #[serde(default)]
    file: Vec<RawFile>,
    #[serde(default)]
    deleted: Vec<RawDeleted>,
    #[serde(default)]
    delta: Vec<RawDelta>,
    #[serde(default)]
    patch: Vec<RawPatch>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPatch {
    file: Spanned<String>,
    from: Spanned<String>,
    base_sha256: Spanned<String>,
    sha256: Spanned<String>,
    size: Spanned<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRollout {
    state: Option<Spanned<String>>,
    schedule: Option<Spanned<Vec<RawStep>>>,
    halt: Option<Spanned<RawHalt>>,
    resumed: Option<Spanned<toml::value::Datetime>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHalt {
    share: f64,
    window: u32,
    min: u32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStep {
    percent: Spanned<u64>,
    at: Option<Spanned<toml::value::Datetime>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPackage {
    sha256: Spanned<String>,
    size: Spanned<u64>,
    args: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    id: Spanned<String>,
    version: Spanned<String>,
    sha256: Spanned<String>,
    size: Spanned<u64>,
    /// Absent in catalogs written before the flag existed: not executable.
    #[serde(default)]
    executable: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDeleted {
    id: Spanned<String>,
    version: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDelta {
    file: Spanned<String>,
    from: Spanned<String>,
    sha256: Spanned<String>,
    size: Spanned<u64>,
}

/// A module as loaded, with where its requirements were written (checked once every module
/// is known).
struct LoadedModule {
    module: Module,
    file: PathBuf,
    requirements: Vec<(usize, Requirement)>,
}

fn parse_module(
    source: &Source<'_>,
    expected_id: &str,
    settings: &Settings,
    blobs: &mut BlobCheck,
) -> Result<LoadedModule, CatalogError> {
    let raw: RawModule = toml::from_str(source.text).map_err(|e| source.syntax(&e))?;
    if raw.id.get_ref() != expected_id {
        return Err(source.invalid(
            raw.id.span(),
            "id",
            None,
            format!(
                "{:?} differs from the file name: {} must hold module {expected_id:?}",
                raw.id.get_ref(),
                source.file.display()
            ),
        ));
    }
    let mut loaded = LoadedModule {
        module: Module {
            id: expected_id.to_owned(),
            releases: Vec::with_capacity(raw.release.len()),
            frequent: Vec::new(),
        },
        file: source.file.to_owned(),
        requirements: Vec::new(),
    };
    let mut previous: Option<(usize, Version<'static>)> = None;
    for raw_release in raw.release {
        let line = source.line(raw_release.version.span().start);
        let release = parse_release(source, raw_release, settings, blobs, &mut loaded)?;
        if let Some((previous_line, previous_version)) = &previous {
            check_ascending(source, line, &release.version, *previous_line, previous_version)?;
        }
        previous = Some((line, release.version.clone()));
        loaded.module.releases.push(release);
    }
    loaded.module.frequent = parse_frequent(source, raw.frequent, loaded.module.latest())?;
    Ok(loaded)
}

fn check_ascending(
    source: &Source<'_>,
    line: usize,
    version: &Version<'_>,
    previous_line: usize,
    previous: &Version<'_>,
) -> Result<(), CatalogError> {
    let message = if version == previous {
        format!("release {version} is already listed at line {previous_line} (as {previous})")
    } else if version < previous {
        format!(
            "releases must be listed in ascending version order: {version} follows {previous} (line {previous_line})"
        )
    } else {
        return Ok(());
    };
    Err(source.invalid_at(line, "version", Some(RELEASE), message))
}

fn parse_frequent(
    source: &Source<'_>,
    raw: Vec<Spanned<String>>,
    latest: Option<&Release>,
) -> Result<Vec<String>, CatalogError> {
    let mut frequent = BTreeSet::new();
    for id in raw {
        let span = id.span();
        let id = id.into_inner();
        source.file_id(span.clone(), &id, "frequent", None)?;
        if latest.is_some_and(|release| release.file(&id).is_none()) {
            return Err(source.invalid(span, "frequent", None, format!("{id:?} is not a file of the latest release")));
        }
        if !frequent.insert(id.clone()) {
            return Err(source.invalid(span, "frequent", None, format!("{id:?} is listed twice")));
        }
    }
    Ok(frequent.into_iter().collect())
}

fn parse_release(
    source: &Source<'_>,
    raw: RawRelease,
    settings: &Settings,
    blobs: &mut BlobCheck,
    loaded: &mut LoadedModule,
) -> Result<Release, CatalogError> {
    let version = source.version(&raw.version, "version", RELEASE)?;
    let mut requires = Vec::with_capacity(raw.requires.len());
    for text in &raw.requires {
        let requirement = parse_requirement(source, text, &loaded.module.id, &requires)?;
        loaded.requirements.push((source.line(text.span().start), requirement.clone()));
        requires.push((requirement.module, requirement.min));
    }
    let package = match raw.package {
        Some(package) => Some(parse_package(source, package, blobs)?),
        None => None,
    };
    let files = parse_files(source, raw.file, &version, blobs)?;
    let channels = match raw.channels {
        Some(channels) => parse_channels(source, channels)?,
        None => default_channels(),
    };
    let rollout = match raw.rollout {
        Some(rollout) => parse_rollout(source, rollout)?,
        None => Rollout::default(),
    };
    let mut release = Release {
        version,
        forced: raw.forced,
        full: raw.full,
        rollback: raw.rollback,
        requires,
        package,
        files,
        deleted: Vec::new(),
        deltas: Vec::new(),
        patches: Vec::new(),
        channels,
        rollout,
    };
    release.deleted = parse_deleted(source, raw.deleted, &release)?;
    release.deltas = parse_deltas(source, raw.delta, &release, settings, blobs)?;
    release.patches = parse_patches(source, raw.patch, &release, blobs)?;
    Ok(release)
}

fn parse_patches(
    source: &Source<'_>,
    raw: Vec<RawPatch>,
    release: &Release,
    blobs: &mut BlobCheck,
) -> Result<Vec<PatchRef>, CatalogError> {
    let mut patches: BTreeMap<(String, Version<'static>), PatchRef> = BTreeMap::new();
    for entry in raw {
        let id = entry.file.get_ref().clone();
        let Some(file) = release.file(&id) else {
            return Err(source.invalid(
                entry.file.span(),
                "file",
                Some(PATCH),
                format!("{id:?} is not a file of release {}", release.version),
            ));
        };
        let from = source.version(&entry.from, "from", PATCH)?;
        if from >= file.version {
            return Err(source.invalid(
                entry.from.span(),
                "from",
                Some(PATCH),
                format!("a patch must lead from an earlier version to the file's version {}", file.version),
            ));
        }
        let base_sha256 = Sha256Digest::from_hex(entry.base_sha256.get_ref()).ok_or_else(|| {
            source.invalid(
                entry.base_sha256.span(),
                "base_sha256",
                Some(PATCH),
                format!("{:?} is not a SHA-256 (64 lowercase hex digits)", entry.base_sha256.get_ref()),
            )
        })?;
        let blob = blobs.check(source, &entry.sha256, &entry.size, PATCH)?;
        let key = (id.clone(), from.clone());
        if patches.contains_key(&key) {
            return Err(source.invalid(
                entry.from.span(),
                "from",
                Some(PATCH),
                format!("a second patch for {id:?} from {from}"),
            ));
        }
        patches.insert(key, PatchRef { file: id, from, base_sha256, blob });
    }
    Ok(patches.into_values().collect())
}

/// The channels of a release: at least one, each a valid channel name, each once; sorted.
fn parse_channels(source: &Source<'_>, raw: Spanned<Vec<Spanned<String>>>) -> Result<Vec<String>, CatalogError> {
    let span = raw.span();
    let mut channels = BTreeSet::new();
    for channel in raw.into_inner() {
        let fail = |message: String| source.invalid(channel.span(), "channels", Some(RELEASE), message);
        if !is_valid_module_id(channel.get_ref()) {
            return Err(fail(format!("{:?} is not a channel name (1 to 128 of A-Z a-z 0-9 . _ -)", channel.get_ref())));
        }
        if !channels.insert(channel.get_ref().clone()) {
            return Err(fail(format!("channel {:?} is listed twice", channel.get_ref())));
        }
    }
    if channels.is_empty() {
        return Err(source.invalid(span, "channels", Some(RELEASE), "a release is on one channel at least".into()));
    }
    Ok(channels.into_iter().collect())
}

/// A release's rollout: its state and a schedule that only grows.
fn parse_rollout(source: &Source<'_>, raw: RawRollout) -> Result<Rollout, CatalogError> {
    let state = match raw.state {
        Some(state) => RolloutState::from_name(state.get_ref()).ok_or_else(|| {
            source.invalid(
                state.span(),
                "state",
                Some(ROLLOUT),
                format!("{:?} is not a rollout state (rolling, paused, halted or withdrawn)", state.get_ref()),
            )
        })?,
        None => RolloutState::Rolling,
    };
    let halt = match raw.halt {
        Some(halt) => Some(parse_halt(source, halt)?),
        None => None,
    };
    let resumed = raw.resumed.map(|at| parse_rollout_time(source, &at, "resumed")).transpose()?;
    let Some(raw_schedule) = raw.schedule else {
        return Ok(Rollout { state, schedule: Vec::new(), halt, resumed });
    };
    let span = raw_schedule.span();
    let mut schedule = Vec::new();
    for step in raw_schedule.into_inner() {
        let percent = u8::try_from(*step.percent.get_ref()).ok().filter(|&p| p <= 100).ok_or_else(|| {
            source.invalid(
                step.percent.span(),
                "percent",
                Some(ROLLOUT),
                format!("{} is not 0 to 100", step.percent.get_ref()),
            )
        })?;
        let at = step.at.map(|at| parse_rollout_time(source, &at, "at")).transpose()?;
        schedule.push(RolloutStep { at, percent });
    }
    Rollout::check_schedule(&schedule).map_err(|problem| source.invalid(span, "schedule", Some(ROLLOUT), problem))?;
    Ok(Rollout { state, schedule, halt, resumed })
}

/// A time of a rollout table (`field`) as unix time.
fn parse_rollout_time(
    source: &Source<'_>,
    at: &Spanned<toml::value::Datetime>,
    field: &str,
) -> Result<u64, CatalogError> {
    datetime_to_unix(at.get_ref()).ok_or_else(|| {
        source.invalid(
            at.span(),
            field,
            Some(ROLLOUT),
            format!("{} needs a date, a time and an offset (Z or +hh:mm), after 1970", at.get_ref()),
        )
    })
}

/// A release's halt rule: a failure share from 0 to 1, a window and a minimum of reports.
fn parse_halt(source: &Source<'_>, raw: Spanned<RawHalt>) -> Result<HaltRule, CatalogError> {
    let span = raw.span();
    let raw = raw.into_inner();
    let invalid = |problem: String| source.invalid(span.clone(), "halt", Some(ROLLOUT), problem);
    if !(0.0..=1.0).contains(&raw.share) {
        return Err(invalid(format!("share {} is not 0 to 1", raw.share)));
    }
    // In range 0..=1000 by the check above.
    let share_permille = (raw.share * 1000.0).round() as u16;
    let rule = HaltRule { share_permille, window: raw.window, min: raw.min };
    rule.check().map_err(invalid)?;
    Ok(rule)
}

fn parse_requirement(
    source: &Source<'_>,
    text: &Spanned<String>,
    own_id: &str,
    earlier: &[(String, Version<'static>)],
) -> Result<Requirement, CatalogError> {
    let fail = |message: String| source.invalid(text.span(), "requires", Some(RELEASE), message);
    let requirement: Requirement = text.get_ref().parse().map_err(fail)?;
    if requirement.module == own_id {
        return Err(fail(format!("module {own_id:?} cannot require itself")));
    }
    if earlier.iter().any(|(id, _)| *id == requirement.module) {
        return Err(fail(format!("module {:?} is required twice", requirement.module)));
    }
    Ok(requirement)
}

fn parse_package(source: &Source<'_>, raw: RawPackage, blobs: &mut BlobCheck) -> Result<Package, CatalogError> {
    let blob = blobs.check(source, &raw.sha256, &raw.size, PACKAGE)?;
    let args = match raw.args {
        Some(args) => {
            let span = args.span();
            let args = args.into_inner();
            if let Err(problem) = check_installer_args(&args) {
                return Err(source.invalid(span, "args", Some(PACKAGE), problem));
            }
            Some(args)
        }
        None => None,
    };
    Ok(Package { blob, args })
}

fn parse_files(
    source: &Source<'_>,
    raw: Vec<RawFile>,
    release: &Version<'static>,
    blobs: &mut BlobCheck,
) -> Result<Vec<ReleaseFile>, CatalogError> {
    if raw.len() > MAX_FILES_PER_MODULE {
        let line = raw.get(MAX_FILES_PER_MODULE).map_or(1, |f| source.line(f.id.span().start));
        return Err(source.invalid_at(
            line,
            "id",
            Some(FILE),
            format!("a release has at most {MAX_FILES_PER_MODULE} files"),
        ));
    }
    let mut files: BTreeMap<String, ReleaseFile> = BTreeMap::new();
    for file in raw {
        let id = file.id.get_ref().clone();
        source.file_id(file.id.span(), &id, "id", Some(FILE))?;
        let version = source.version(&file.version, "version", FILE)?;
        if version > *release {
            return Err(source.invalid(
                file.version.span(),
                "version",
                Some(FILE),
                format!("file version {version} is newer than its release {release}"),
            ));
        }
        let blob = blobs.check(source, &file.sha256, &file.size, FILE)?;
        if files.contains_key(&id) {
            return Err(source.invalid(
                file.id.span(),
                "id",
                Some(FILE),
                format!("file {id:?} is listed twice in release {release}"),
            ));
        }
        files.insert(id.clone(), ReleaseFile { id, version, blob, executable: file.executable });
    }
    Ok(files.into_values().collect())
}

fn parse_deleted(
    source: &Source<'_>,
    raw: Vec<RawDeleted>,
    release: &Release,
) -> Result<Vec<DeletedFile>, CatalogError> {
    let mut deleted: BTreeMap<String, DeletedFile> = BTreeMap::new();
    for entry in raw {
        let span = entry.id.span();
        let id = entry.id.into_inner();
        source.file_id(span.clone(), &id, "id", Some(DELETED))?;
        let version = source.version(&entry.version, "version", DELETED)?;
        if version > release.version {
            return Err(source.invalid(
                entry.version.span(),
                "version",
                Some(DELETED),
                format!("deleted in {version}, which is newer than the release {}", release.version),
            ));
        }
        let problem = if release.file(&id).is_some() {
            Some("is also a file of this release")
        } else if deleted.contains_key(&id) {
            Some("is listed twice")
        } else {
            None
        };
        if let Some(problem) = problem {
            return Err(source.invalid(span, "id", Some(DELETED), format!("{id:?} {problem}")));
        }
        deleted.insert(id.clone(), DeletedFile { id, version });
    }
    Ok(deleted.into_values().collect())
}

fn parse_deltas(
    source: &Source<'_>,
    raw: Vec<RawDelta>,
    release: &Release,
    settings: &Settings,
    blobs: &mut BlobCheck,
) -> Result<Vec<DeltaRef>, CatalogError> {
    let mut deltas: BTreeMap<(String, Version<'static>), DeltaRef> = BTreeMap::new();
    for entry in raw {
        let file_span = entry.file.span();
        let id = entry.file.get_ref().clone();
        let Some(file) = release.file(&id) else {
            return Err(source.invalid(
                file_span,
                "file",
                Some(DELTA),
                format!("{id:?} is not a file of release {}", release.version),
            ));
        };
        if !matches_any(&settings.record_files, &id) {
            return Err(source.invalid(
                file_span,
                "file",
                Some(DELTA),
                format!("{id:?} is not a record file (catalog.toml `record_files` patterns)"),
            ));
        }
        let from = source.version(&entry.from, "from", DELTA)?;
        if from >= file.version {
            return Err(source.invalid(
                entry.from.span(),
                "from",
                Some(DELTA),
                format!("a delta must lead from an earlier version to the file's version {}", file.version),
            ));
        }
        let blob = blobs.check(source, &entry.sha256, &entry.size, DELTA)?;
        let key = (id.clone(), from.clone());
        if deltas.contains_key(&key) {
            return Err(source.invalid(
                entry.from.span(),
                "from",
                Some(DELTA),
                format!("a second delta for {id:?} from {from}"),
            ));
        }
        deltas.insert(key, DeltaRef { file: id, from, blob });
    }
    Ok(deltas.into_values().collect())
}

/// Installer arguments travel in an XML attribute (SPEC.md §4.4): bounded, no control
/// characters.
pub(crate) fn check_installer_args(args: &str) -> Result<(), String> {
    if args.len() > MAX_ATTRIBUTE_LEN || args.chars().any(char::is_control) {
        return Err(format!(
            "installer arguments must be at most {MAX_ATTRIBUTE_LEN} bytes without control characters"
        ));
    }
    Ok(())
}

/// Every required module must be in the catalog (whether it has a recent enough release is
/// the responder's business: it answers error 21, SPEC.md §5.6).
fn check_requirements(modules: &[LoadedModule]) -> Result<(), CatalogError> {
    let known: BTreeSet<&str> = modules.iter().map(|m| m.module.id.as_str()).collect();
    for loaded in modules {
        for (line, requirement) in &loaded.requirements {
            if !known.contains(requirement.module.as_str()) {
                return Err(CatalogError::Invalid {
                    file: loaded.file.clone(),
                    line: *line,
                    field: "requires".into(),
                    table: Some(RELEASE.into()),
                    message: format!(
                        "module {:?} is not in the catalog ({} is missing)",
                        requirement.module,
                        module_file(&requirement.module).display()
                    ),
                });
            }
        }
    }
    Ok(())
}

// ---- the folder ----

/// Whether `id` can name a module of a catalog folder: a module id (SPEC.md §4.2) that does not
/// start with `.`. Such a module's file, `modules/<id>.toml`, would be hidden, and the loader
/// skips hidden files (temporary files are named so); the rule also keeps out `.` and `..`,
/// which clients should refuse (SPEC.md §5.9).
pub fn is_catalog_module_id(id: &str) -> bool {
    is_valid_module_id(id) && !id.starts_with('.')
}

/// The module files in `dir/modules`, sorted, with the id each must hold.
fn module_files(dir: &Path) -> Result<Vec<(String, PathBuf)>, CatalogError> {
    let folder = dir.join(MODULES_DIR);
    let entries = match fs::read_dir(&folder) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        other => other.map_err(CatalogError::io(&folder))?,
    };
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(CatalogError::io(&folder))?;
        let relative = Path::new(MODULES_DIR).join(entry.file_name());
        let layout = |message: &str| CatalogError::Layout { file: relative.clone(), message: message.to_owned() };
        let name = entry.file_name().into_string().map_err(|_| layout("file name is not UTF-8"))?;
        if name.starts_with('.') {
            continue;
        }
        let id = name.strip_suffix(".toml").filter(|id| is_catalog_module_id(id)).ok_or_else(|| {
            layout("not a module file: expected <module id>.toml, a module id being 1 to 128 of A-Z a-z 0-9 . _ -")
        })?;
        let path = entry.path();
        if !fs::metadata(&path).map_err(CatalogError::io(&path))?.is_file() {
            return Err(layout("not a regular file"));
        }
        files.push((id.to_owned(), relative));
    }
    files.sort();
    Ok(files)
}

/// Reads `dir/file` as UTF-8; a bad byte is reported with its line.
fn read_text(dir: &Path, file: &Path) -> Result<String, CatalogError> {
    let path = dir.join(file);
    let bytes = fs::read(&path).map_err(CatalogError::io(&path))?;
    String::from_utf8(bytes).map_err(|e| {
        let valid = e.utf8_error().valid_up_to();
        let line = 1 + e.as_bytes().iter().take(valid).filter(|&&b| b == b'\n').count();
        CatalogError::Syntax {
            file: file.to_owned(),
            line,
            field: None,
            table: None,
            message: format!("not UTF-8 text: invalid byte at offset {valid}"),
        }
    })
}

/// Checks blobs against the store, each once.
struct BlobCheck {
    store: PathBuf,
    sizes: HashMap<Sha256Digest, Option<u64>>,
}

impl BlobCheck {
    fn new(store: PathBuf) -> Self {
        Self { store, sizes: HashMap::new() }
    }

    /// The blob named by `sha256` and `size`, which must be in the store with that size.
    fn check(
        &mut self,
        source: &Source<'_>,
        sha256: &Spanned<String>,
        size: &Spanned<u64>,
        table: &str,
    ) -> Result<Blob, CatalogError> {
        let digest = Sha256Digest::from_hex(sha256.get_ref()).ok_or_else(|| {
            source.invalid(
                sha256.span(),
                "sha256",
                Some(table),
                format!("{:?} is not a SHA-256 (64 lowercase hex digits)", sha256.get_ref()),
            )
        })?;
        let store = &self.store;
        let actual = *self.sizes.entry(digest).or_insert_with(|| {
            fs::metadata(store.join(digest.to_hex())).ok().filter(|meta| meta.is_file()).map(|meta| meta.len())
        });
        match actual {
            None => Err(source.invalid(
                sha256.span(),
                "sha256",
                Some(table),
                format!("blob store/{digest} is missing from the catalog"),
            )),
            Some(actual) if actual != *size.get_ref() => Err(source.invalid(
                size.span(),
                "size",
                Some(table),
                format!("{} bytes, but blob store/{digest} has {actual}", size.get_ref()),
            )),
            Some(_) => Ok(Blob { sha256: digest, size: *size.get_ref() }),
        }
    }
}

/// A file being loaded: its name and text, to turn byte offsets into lines in errors.
struct Source<'a> {
    file: &'a Path,
    text: &'a str,
}

impl Source<'_> {
    /// The 1-based line of a byte offset.
    fn line(&self, offset: usize) -> usize {
        let before = self.text.as_bytes().get(..offset).unwrap_or(self.text.as_bytes());
        1 + before.iter().filter(|&&b| b == b'\n').count()
    }

    fn invalid(&self, span: Range<usize>, field: &str, table: Option<&str>, message: String) -> CatalogError {
        self.invalid_at(self.line(span.start), field, table, message)
    }

    fn invalid_at(&self, line: usize, field: &str, table: Option<&str>, message: String) -> CatalogError {
        CatalogError::Invalid {
            file: self.file.to_owned(),
            line,
            field: field.to_owned(),
            table: table.map(str::to_owned),
            message,
        }
    }

    /// Turns the TOML parser's error into ours, finding the key and table from its position.
    fn syntax(&self, error: &toml::de::Error) -> CatalogError {
        let offset = error.span().map_or(0, |span| span.start);
        let message = error.message().trim().to_owned();
        // A missing key has no position of its own: the error points at its table.
        let missing = message
            .strip_prefix("missing field `")
            .and_then(|rest| rest.split_once('`'))
            .map(|(key, _)| key.to_owned());
        CatalogError::Syntax {
            file: self.file.to_owned(),
            line: self.line(offset),
            field: missing.or_else(|| key_at(self.text, offset)),
            table: table_around(self.text, offset),
            message,
        }
    }

    fn version(&self, text: &Spanned<String>, field: &str, table: &str) -> Result<Version<'static>, CatalogError> {
        text.get_ref().parse().map_err(|e| {
            self.invalid(text.span(), field, Some(table), format!("{:?} is not a version: {e}", text.get_ref()))
        })
    }

    fn file_id(&self, span: Range<usize>, id: &str, field: &str, table: Option<&str>) -> Result<(), CatalogError> {
        if is_valid_file_id(id) {
            return Ok(());
        }
        Err(self.invalid(
            span,
            field,
            table,
            format!(
                "{id:?} is not a file id: a relative path of 1 to 255 bytes, `/`-separated, without empty, `.` or `..` segments, `\\`, `:` or control characters"
            ),
        ))
    }

    fn patterns(&self, raw: Vec<Spanned<String>>, field: &str) -> Result<Vec<String>, CatalogError> {
        let mut patterns = Vec::with_capacity(raw.len());
        for pattern in raw {
            if pattern.get_ref().is_empty() {
                return Err(self.invalid(
                    pattern.span(),
                    field,
                    Some(SETTINGS),
                    "an empty pattern matches no file".into(),
                ));
            }
            patterns.push(pattern.into_inner());
        }
        Ok(patterns)
    }

    fn count(&self, raw: &Spanned<u64>, field: &str) -> Result<usize, CatalogError> {
        usize::try_from(*raw.get_ref()).ok().filter(|&n| n >= 1).ok_or_else(|| {
            self.invalid(
                raw.span(),
                field,
                Some(SETTINGS),
                format!("{} is not a count of releases (1 or more)", raw.get_ref()),
            )
        })
    }
}

/// The key written at or just before `offset` on its line: `size` in `size = "x"` whether the
/// offset points at the key or the value (also inside an inline table).
fn key_at(text: &str, offset: usize) -> Option<String> {
    let bytes = text.as_bytes();
    let offset = offset.min(bytes.len());
    let line_start = bytes.get(..offset)?.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let is_key_byte = |b: &u8| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.');
    // The offset at a key: `key = …`.
    let rest = bytes.get(offset..)?;
    let key_len = rest.iter().take_while(|b| is_key_byte(b)).count();
    let after = rest.get(key_len..)?;
    if key_len > 0 && after.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'=') {
        return String::from_utf8(rest.get(..key_len)?.to_vec()).ok();
    }
    // The offset at a value: the key is the last one before `=` on the line.
    let before = bytes.get(line_start..offset)?;
    let before = before.strip_suffix(b" ").unwrap_or(before).trim_ascii_end();
    let before = before.strip_suffix(b"=")?.trim_ascii_end();
    let start = before.len() - before.iter().rev().take_while(|b| is_key_byte(b)).count();
    let key = before.get(start..).filter(|key| !key.is_empty())?;
    String::from_utf8(key.to_vec()).ok()
}

/// The table header (`[[release.file]]`) in force at `offset`, if not the top level.
fn table_around(text: &str, offset: usize) -> Option<String> {
    let end = text
        .as_bytes()
        .get(offset..)
        .and_then(|rest| rest.iter().position(|&b| b == b'\n'))
        .map_or(text.len(), |i| offset + i);
    let upto = text.get(..end).unwrap_or(text);
    upto.lines().rev().find_map(|line| {
        let line = line.trim_start();
        if !line.starts_with('[') {
            return None;
        }
        let close = if line.starts_with("[[") { "]]" } else { "]" };
        line.find(close).and_then(|i| line.get(..i + close.len())).map(str::to_owned)
    })
}
