//! `upgram-server publish`: turns a release folder into a release of the
//! catalog — sizes and hashes, per-file versions, deleted files, record deltas (SPEC.md §7),
//! frequent files (§5.7, \[0078\]) and the package-vs-file-list rule (§5.3, \[0082\]).
//!
//! # What a release records
//! - **Executable files**: a file with any of its owner, group or other execute permission bits
//!   set in the release folder is executable (SPEC.md §5.4); clients make it executable too.
//!   On a system without permission bits no file is.
//! - **File versions**: each file gets the version in which its content or its executable flag
//!   last changed, along the module's releases in version order: if the release just below the
//!   new one has the same content and flag, the file keeps its version from there (walking down
//!   while both stay the same), else it gets the new version. A file made executable without a
//!   content change thus reaches clients again.
//! - **Deleted files** are cumulative: the new release lists every file deleted so far (from
//!   the release below it) that did not come back, plus the files of the release below that
//!   are gone, with the new version.
//! - **Record deltas**: for each record file (catalog `record_files` patterns) whose content
//!   changed, one delta from each earlier distinct version of it that is still in the store,
//!   when both decode as record files and the delta is smaller than the new file. An unchanged
//!   record file keeps the deltas of the release below.
//! - **Binary patches** (SPEC.md §5.12): for each file that is not a record file, has at least
//!   [`PatchOptions::min_size`] bytes and changed in this release, one bsdiff patch from each
//!   distinct earlier content of it in the [`PatchOptions::from`] releases below (still in the
//!   store), kept only when it is smaller than [`PatchOptions::max_share`] of the file. An
//!   unchanged file keeps the patches of the release below. Patches are made only when the
//!   server is built with the `patch` feature (the default).
//! - **Frequent files**: a file of the latest release is frequent if its content changed
//!   (compared with the release before) in at least `frequent_changes` of the module's last
//!   `frequent_window` releases; its first appearance is not a change.
//! - **Critical files**: a release that adds, changes or deletes a file matching the catalog's
//!   `critical` patterns (or any, with `--full` or `--rollback`, which replace every file) must
//!   come with an install package.
//!
//! # Versions and rollback
//! A new release must be newer than every release of the module. With `--rollback` it may be
//! older than the latest one, but never equal to an existing one: it is then a release that
//! clients on newer versions may be sent back to (SPEC.md §6.4), and its file versions and
//! deletions are computed against the release just below it.
//!
//! # Channels and rollouts
//! A release goes to the channels named by `--channel` (default `stable`), and is offered by
//! its `--schedule` (default: to every installation at once; SPEC.md §5.10). Both can be
//! changed later without publishing again: see [`crate::rollout`].
//!
//! # Durability
//! Nothing is written before every check has passed. Then every blob (files, package, deltas)
//! is written and synced, the store folder synced, and only then the module file replaced
//! atomically: a crash at any point leaves the old catalog valid, at worst with orphan blobs.
//!
//! # Concurrent publishes
//! Publishes to one catalog folder take turns: each holds an exclusive lock on the folder's
//! [`LOCK_FILE`] from before it reads the catalog until its module file is in place, so a
//! second publish waits for the first and then builds on what it published (no release is
//! lost). The lock is the operating system's (`flock` on Unix), released when the process
//! ends, however it ends.
//!
//! # Failpoints
//! For crash tests, when the environment variable `UPGRAM_FAILPOINT` equals one of the names
//! below, the process aborts (`std::process::abort`, no unwinding, no destructors) at that
//! point. They are always compiled in; otherwise they cost one environment lookup each.
//! - `publish:after-blobs`: every blob is durable, the module file is untouched;
//! - `publish:before-rename`: the new module file is written and synced under a temporary
//!   name, the old one still in place;
//! - `publish:after-rename`: the new module file is in place (the folder not yet synced).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

use thiserror::Error;
use upgram_core::body::value::{is_valid_file_id, is_valid_module_id};
use upgram_core::limits::MAX_FILES_PER_MODULE;
use upgram_core::records::{MAX_RECORD_FILE_LEN, RecordFile, diff};
use upgram_core::version::Version;

use crate::catalog::error::CatalogError;
use crate::catalog::load::{SETTINGS_FILE, check_installer_args, is_catalog_module_id};
use crate::catalog::model::{
    Blob, Catalog, DeletedFile, DeltaRef, Module, Package, PatchRef, Release, ReleaseFile, Settings, matches_any,
};
use crate::catalog::rollout::{Rollout, RolloutState, Schedule, default_channels};
use crate::catalog::save::{SaveStage, replace_file, save_module_with};
use crate::catalog::store::{blob_path, hash_file, put_bytes, put_file, store_dir, sync_dir};
use crate::catalog::{self, Requirement};

/// The file in a catalog folder that publishes lock while they run (see the module
/// documentation). The catalog loader ignores it, like every file whose name starts with `.`.
pub const LOCK_FILE: &str = ".publish.lock";

/// The environment variable that selects a failpoint (see the module documentation).
pub const FAILPOINT_VAR: &str = "UPGRAM_FAILPOINT";

/// What to publish: the arguments of `upgram-server publish`.
#[derive(Debug, Clone, clap::Args)]
pub struct PublishRequest {
    /// The catalog folder (created if absent).
    #[arg(long, value_name = "DIR")]
    pub catalog: PathBuf,
    /// The module id.
    #[arg(long, value_name = "ID")]
    pub module: String,
    /// The new release's version.
    #[arg(long)]
    pub version: Version<'static>,
    /// The release folder: every regular file in it, recursively, is a file of the module.
    #[arg(long, value_name = "FOLDER")]
    pub from: PathBuf,
    /// A module this release needs first, as ID>=VERSION (repeatable; quote it in a shell).
    #[arg(long = "depends", value_name = "REQUIREMENT")]
    pub requires: Vec<Requirement>,
    /// Users may not decline this release (it is also a floor for later ones).
    #[arg(long)]
    pub forced: bool,
    /// Upgrading to this release replaces every file.
    #[arg(long)]
    pub full: bool,
    /// Clients on newer versions may be sent back to this release; its version may then be
    /// lower than the latest, but must not exist yet.
    #[arg(long)]
    pub rollback: bool,
    /// The release's install package (required when a critical file changes).
    #[arg(long, value_name = "FILE")]
    pub package: Option<PathBuf>,
    /// Arguments for the package's installer.
    #[arg(long, value_name = "ARGS", requires = "package", allow_hyphen_values = true)]
    pub installer_args: Option<String>,
    /// A channel to publish the release to (repeatable; default: stable).
    #[arg(long = "channel", value_name = "CHANNEL")]
    pub channels: Vec<String>,
    /// Roll the release out in steps, e.g. `1%@2026-12-01T10:00Z,10%@2026-12-02T10:00Z`, or
    /// `10%` for a percentage from now on (default: everyone at once).
    #[arg(long, value_name = "SCHEDULE")]
    pub schedule: Option<Schedule>,
    /// Which binary patches to make (SPEC.md §5.12).
    #[command(flatten)]
    pub patches: PatchOptions,
}

impl PublishRequest {
    /// A plain release of `module` at `version` from the release folder `from` into the
    /// catalog folder `catalog`: no dependency, not forced, full or a rollback, no package; on
    /// the default channel, offered to everyone at once; the default [`PatchOptions`].
    pub fn new(
        catalog: impl Into<PathBuf>,
        module: impl Into<String>,
        version: Version<'static>,
        from: impl Into<PathBuf>,
    ) -> Self {
        Self {
            catalog: catalog.into(),
            module: module.into(),
            version,
            from: from.into(),
            requires: Vec::new(),
            forced: false,
            full: false,
            rollback: false,
            package: None,
            installer_args: None,
            channels: Vec::new(),
            schedule: None,
            patches: PatchOptions::default(),
        }
    }
}

/// Which binary patches a publish makes: for changed files of at least `min_size` bytes, from
/// their contents in the `from` releases below, kept when smaller than `max_share` of the file.
#[derive(Debug, Clone, Copy, PartialEq, clap::Args)]
pub struct PatchOptions {
    /// Make binary patches to each changed file from its content in each of this many earlier
    /// releases (0: no patches).
    #[arg(id = "patch_from", long = "patch-from", value_name = "K", default_value_t = PatchOptions::default().from)]
    pub from: usize,
    /// Make patches only for files of at least this many bytes.
    #[arg(long = "patch-min-size", value_name = "BYTES", default_value_t = PatchOptions::default().min_size)]
    pub min_size: u64,
    /// Keep a patch only when it is smaller than this share of its file (between 0 and 1).
    #[arg(long = "patch-max-share", value_name = "SHARE", default_value_t = PatchOptions::default().max_share)]
    pub max_share: f64,
}

impl PatchOptions {
    /// The largest file a publish makes patches for: making a bsdiff patch holds both
    /// contents and a suffix array of the base in memory.
    pub const MAX_FILE_LEN: u64 = 64 << 20;
}

impl Default for PatchOptions {
    /// From the 3 releases below, files of 64 KiB or more, patches under half the file.
    fn default() -> Self {
        Self { from: 3, min_size: 64 << 10, max_share: 0.5 }
    }
}

/// Why a release could not be published. Nothing was written to the catalog, except for
/// [`PublishError::Catalog`] and [`PublishError::Io`] once blobs are being written (then at
/// worst orphan blobs).
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum PublishError {
    /// The catalog could not be loaded or written.
    #[error("catalog {}: {source}", dir.display())]
    Catalog {
        /// The catalog folder.
        dir: PathBuf,
        /// What went wrong.
        #[source]
        source: Box<CatalogError>,
    },
    /// Reading the release folder or the package failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The module id is not valid.
    #[error("{id:?} is not a module id (1 to 128 of A-Z a-z 0-9 . _ -)")]
    BadModuleId {
        /// The id given.
        id: String,
    },
    /// The module id starts with `.`: its module file would be hidden, and never loaded.
    #[error(
        "--module {id:?}: a module id may not start with `.` in a catalog (its file modules/{id}.toml would be hidden, and the server never loads hidden files)"
    )]
    HiddenModuleId {
        /// The id given.
        id: String,
    },
    /// The version is not newer than the module's latest release.
    #[error(
        "module {module}: version {version} is not newer than the latest release {latest} (pass --rollback to publish a release that clients on newer versions go back to)"
    )]
    NotNewer {
        /// The module.
        module: String,
        /// The version given.
        version: Version<'static>,
        /// The latest release.
        latest: Version<'static>,
    },
    /// A release with this version exists already.
    #[error("module {module}: release {version} already exists (as {existing})")]
    AlreadyPublished {
        /// The module.
        module: String,
        /// The version given.
        version: Version<'static>,
        /// The existing release's version text.
        existing: Version<'static>,
    },
    /// The release folder holds a symbolic link.
    #[error(
        "{}: a symbolic link; a release folder must hold regular files and folders only",
        path.display()
    )]
    Symlink {
        /// The link.
        path: PathBuf,
    },
    /// The release folder holds something other than files and folders (a socket, a device…).
    #[error("{}: not a regular file or folder", path.display())]
    NotRegularFile {
        /// The entry.
        path: PathBuf,
    },
    /// The release folder is not a folder.
    #[error("{}: not a folder", path.display())]
    NotAFolder {
        /// The path given.
        path: PathBuf,
    },
    /// A file name in the release folder is not UTF-8, so it cannot be a file id.
    #[error("{}: the name is not UTF-8, so it cannot be a file id", path.display())]
    NotUtf8 {
        /// The entry.
        path: PathBuf,
    },
    /// A path in the release folder is not a valid file id.
    #[error(
        "{}: {id:?} is not a file id (at most 255 bytes, without `\\`, `:` or control characters)",
        path.display()
    )]
    BadFileId {
        /// The file.
        path: PathBuf,
        /// The file id it would have.
        id: String,
    },
    /// The release folder holds no file.
    #[error("{}: the release folder holds no file", path.display())]
    EmptyRelease {
        /// The folder.
        path: PathBuf,
    },
    /// The release folder holds more files than a module may have.
    #[error("{}: more than {MAX_FILES_PER_MODULE} files in the release folder", path.display())]
    TooManyFiles {
        /// The folder.
        path: PathBuf,
    },
    /// A critical file changes and no package was given (\[0082\]).
    #[error(
        "{file:?} matches the critical-file patterns (catalog.toml `critical`) and is {change} in {version}: clients must get an install package for this release; pass --package FILE (and --installer-args ARGS if it needs any)"
    )]
    NeedsPackage {
        /// The critical file.
        file: String,
        /// `"added"`, `"changed"`, `"deleted"`, or `"replaced (full release)"`.
        change: &'static str,
        /// The release being published.
        version: Version<'static>,
    },
    /// A `--depends` that the catalog cannot satisfy, or that makes no sense.
    #[error("--depends {requirement}: {problem}")]
    BadDependency {
        /// The requirement as given.
        requirement: Requirement,
        /// What is wrong with it.
        problem: String,
    },
    /// A `--channel` that is not a channel name.
    #[error("--channel {channel:?}: not a channel name (1 to 128 of A-Z a-z 0-9 . _ -)")]
    BadChannel {
        /// The channel given.
        channel: String,
    },
    /// Installer arguments without a package, or not fit for the answer.
    #[error("--installer-args: {problem}")]
    BadInstallerArgs {
        /// What is wrong with them.
        problem: String,
    },
}

/// What a publish did, for the operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishSummary {
    /// The module.
    pub module: String,
    /// The new release.
    pub version: Version<'static>,
    /// Files new in this release.
    pub added: Vec<String>,
    /// Files whose content or executable flag changed.
    pub changed: Vec<String>,
    /// How many files kept their content and flag.
    pub unchanged: usize,
    /// Files of the release below that are gone.
    pub deleted: Vec<String>,
    /// The record deltas of the release (new and carried over).
    pub deltas: Vec<DeltaRef>,
    /// The binary patches of the release (new and carried over).
    pub patches: Vec<PatchRef>,
    /// The module's frequent files after this release.
    pub frequent: Vec<String>,
    /// The install package, if any (otherwise clients get a file list).
    pub package: Option<Blob>,
    /// Things the operator should know (record files without deltas, critical files in a
    /// release without a package).
    pub notes: Vec<String>,
}

impl fmt::Display for PublishSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "published {} {}: {} added, {} changed, {} unchanged, {} deleted",
            self.module,
            self.version,
            self.added.len(),
            self.changed.len(),
            self.unchanged,
            self.deleted.len()
        )?;
        list(f, "added", &self.added)?;
        list(f, "changed", &self.changed)?;
        list(f, "deleted", &self.deleted)?;
        let deltas: Vec<String> =
            self.deltas.iter().map(|d| format!("{} from {} ({} bytes)", d.file, d.from, d.blob.size)).collect();
        list(f, "deltas", &deltas)?;
        let patches: Vec<String> =
            self.patches.iter().map(|p| format!("{} from {} ({} bytes)", p.file, p.from, p.blob.size)).collect();
        list(f, "patches", &patches)?;
        list(f, "frequent", &self.frequent)?;
        match &self.package {
            Some(blob) => writeln!(f, "  answer:   install package {} ({} bytes)", blob.sha256, blob.size)?,
            None => writeln!(f, "  answer:   file list")?,
        }
        for note in &self.notes {
            writeln!(f, "  note:     {note}")?;
        }
        Ok(())
    }
}

fn list(f: &mut fmt::Formatter<'_>, label: &str, items: &[String]) -> fmt::Result {
    if items.is_empty() {
        return Ok(());
    }
    writeln!(f, "  {:<9} {}", format!("{label}:"), items.join(", "))
}

/// A file of the release folder, hashed.
struct SourceFile {
    id: String,
    path: PathBuf,
    blob: Blob,
    executable: bool,
}

/// Publishes one release into the catalog; see the module documentation.
pub fn publish(request: &PublishRequest) -> Result<PublishSummary, PublishError> {
    check_request(request)?;
    let dir = &request.catalog;
    fs::create_dir_all(dir).map_err(|source| PublishError::Io { path: dir.clone(), source })?;
    let _lock = lock_catalog(dir)?;
    ensure_layout(dir).map_err(catalog_error(dir))?;
    let catalog = catalog::load(dir).map_err(catalog_error(dir))?;
    check_dependencies(request, &catalog)?;
    remove_stale_temp_files(dir, &request.module);
    let module = catalog.modules.get(&request.module).cloned().unwrap_or_else(|| Module {
        id: request.module.clone(),
        releases: Vec::new(),
        frequent: Vec::new(),
    });
    let plan = plan_release(request, &catalog.settings, &module)?;
    write_release(request, &catalog.settings, module, plan).map_err(catalog_error(dir))
}

/// Takes the catalog folder's publish lock, waiting (and saying so) while another publish holds
/// it; the lock lasts as long as the file returned.
pub(crate) fn lock_catalog(dir: &Path) -> Result<fs::File, PublishError> {
    let path = dir.join(LOCK_FILE);
    let io = |source| PublishError::Io { path: path.clone(), source };
    let file = fs::OpenOptions::new().create(true).truncate(false).write(true).open(&path).map_err(io)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(fs::TryLockError::WouldBlock) => {
            tracing::info!("{}: another publish to this catalog is running; waiting for it to finish", path.display());
            file.lock().map_err(io)?;
        }
        Err(fs::TryLockError::Error(source)) => return Err(io(source)),
    }
    Ok(file)
}

pub(crate) fn catalog_error(dir: &Path) -> impl Fn(CatalogError) -> PublishError + '_ {
    move |source| PublishError::Catalog { dir: dir.to_owned(), source: Box::new(source) }
}

/// A release that passed every check, not yet written.
struct Plan {
    /// Its index among the module's releases.
    at: usize,
    sources: Vec<SourceFile>,
    package: Option<(PathBuf, Blob)>,
    release: Release,
    summary: PublishSummary,
}

/// Hashes the release folder and the package and computes the release, checking everything
/// that can refuse it; writes nothing.
fn plan_release(request: &PublishRequest, settings: &Settings, module: &Module) -> Result<Plan, PublishError> {
    let at = position(module, request)?;
    let history = module.releases.get(..at).unwrap_or_default();
    let below = history.last();
    let sources = hash_folder(&request.from)?;
    let package = match &request.package {
        Some(path) => Some((path.clone(), hash(path)?)),
        None => None,
    };
    let files = file_versions(&sources, history, &request.version);
    let gone = gone_files(&files, below);
    let deleted = deleted_files(&gone, below, &files, &request.version);
    let mut summary = summarize(request, &files, below, gone);
    check_critical(request, settings, &files, &mut summary, package.is_some())?;
    summary.package = package.as_ref().map(|(_, blob)| *blob);
    let release = Release {
        version: request.version.clone(),
        forced: request.forced,
        full: request.full,
        rollback: request.rollback,
        requires: request.requires.iter().map(|r| (r.module.clone(), r.min.clone())).collect(),
        package: package.as_ref().map(|(_, blob)| Package { blob: *blob, args: request.installer_args.clone() }),
        files,
        deleted,
        deltas: Vec::new(),
        patches: Vec::new(),
        channels: release_channels(&request.channels)?,
        rollout: Rollout {
            state: RolloutState::Rolling,
            schedule: request.schedule.clone().unwrap_or_default().0,
            halt: None,
            resumed: None,
        },
    };
    Ok(Plan { at, sources, package, release, summary })
}

/// Writes the blobs (files, package, record deltas) durably, then the module file.
fn write_release(
    request: &PublishRequest,
    settings: &Settings,
    mut module: Module,
    plan: Plan,
) -> Result<PublishSummary, CatalogError> {
    let Plan { at, sources, package, mut release, mut summary } = plan;
    let dir = &request.catalog;
    let store = store_dir(dir);
    for source in &sources {
        put_file(&store, &source.path, source.blob)?;
    }
    if let Some((path, blob)) = &package {
        put_file(&store, path, *blob)?;
    }
    let history = module.releases.get(..at).unwrap_or_default();
    release.deltas = record_deltas(dir, settings, &release.files, history, &mut summary.notes)?;
    release.patches = binary_patches(dir, settings, &request.patches, &release.files, history, &mut summary.notes)?;
    sync_dir(&store)?;
    failpoint("publish:after-blobs");

    summary.deltas = release.deltas.clone();
    summary.patches = release.patches.clone();
    module.releases.insert(at, release);
    module.frequent = frequent_files(&module.releases, settings);
    summary.frequent = module.frequent.clone();
    save_module_with(dir, &module, &|stage| match stage {
        SaveStage::BeforeRename => failpoint("publish:before-rename"),
        SaveStage::AfterRename => failpoint("publish:after-rename"),
    })?;
    Ok(summary)
}

/// Aborts the process if the failpoint `name` is selected (see the module documentation).
fn failpoint(name: &str) {
    if std::env::var_os(FAILPOINT_VAR).is_some_and(|value| value == name) {
        std::process::abort();
    }
}

/// Removes the temporary module files an interrupted publish of this module left behind
/// (harmless, since the loader ignores them, but clutter). Publishes of one module never run
/// concurrently, so none of them can be in use; failures are ignored for the same reason.
fn remove_stale_temp_files(dir: &Path, module: &str) {
    let folder = dir.join(crate::catalog::load::MODULES_DIR);
    let prefix = format!(".{module}.toml.tmp-");
    let Ok(entries) = fs::read_dir(&folder) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_name().to_str().is_some_and(|name| name.starts_with(&prefix)) {
            let _ = fs::remove_file(entry.path());
        }
    }
}

fn check_request(request: &PublishRequest) -> Result<(), PublishError> {
    if !is_valid_module_id(&request.module) {
        return Err(PublishError::BadModuleId { id: request.module.clone() });
    }
    if !is_catalog_module_id(&request.module) {
        return Err(PublishError::HiddenModuleId { id: request.module.clone() });
    }
    if let Some(args) = &request.installer_args {
        if request.package.is_none() {
            return Err(PublishError::BadInstallerArgs { problem: "given without --package".into() });
        }
        check_installer_args(args).map_err(|problem| PublishError::BadInstallerArgs { problem })?;
    }
    Ok(())
}

/// The channels of `--channel`: each valid, each once, sorted; the default channel if none.
pub(crate) fn release_channels(given: &[String]) -> Result<Vec<String>, PublishError> {
    if given.is_empty() {
        return Ok(default_channels());
    }
    let mut channels = std::collections::BTreeSet::new();
    for channel in given {
        if !is_valid_module_id(channel) {
            return Err(PublishError::BadChannel { channel: channel.clone() });
        }
        channels.insert(channel.clone());
    }
    Ok(channels.into_iter().collect())
}

/// Creates the catalog folder, `modules/` and `store/` if absent; a new catalog also gets a
/// `catalog.toml` with the default settings written out, for the operator to edit.
fn ensure_layout(dir: &Path) -> Result<(), CatalogError> {
    let fresh = !dir.join(crate::catalog::load::MODULES_DIR).exists();
    for folder in [dir.to_owned(), dir.join(crate::catalog::load::MODULES_DIR), store_dir(dir)] {
        fs::create_dir_all(&folder).map_err(CatalogError::io(&folder))?;
    }
    if fresh && !dir.join(SETTINGS_FILE).exists() {
        let text = default_settings_file(&Settings::default());
        replace_file(dir, SETTINGS_FILE, text.as_bytes(), &|_| {})?;
    }
    sync_dir(dir)
}

fn default_settings_file(settings: &Settings) -> String {
    let quoted = |items: &[String]| {
        let items: Vec<String> = items.iter().map(|s| format!("{s:?}")).collect();
        format!("[{}]", items.join(", "))
    };
    format!(
        "# upgram catalog settings. Every key is optional; these are the defaults.\n\
         [settings]\n\
         # A release that adds, changes or deletes a matching file is answered with its install\n\
         # package, never a file list (SPEC.md section 5.3).\n\
         critical = {}\n\
         # Record files (SPEC.md section 7): published with record deltas.\n\
         record_files = {}\n\
         # A file is frequent when it changed in frequent_changes of the module's last\n\
         # frequent_window releases (SPEC.md section 5.7).\n\
         frequent_changes = {}\n\
         frequent_window = {}\n",
        quoted(&settings.critical),
        quoted(&settings.record_files),
        settings.frequent_changes,
        settings.frequent_window
    )
}

fn check_dependencies(request: &PublishRequest, catalog: &Catalog) -> Result<(), PublishError> {
    let mut seen = BTreeSet::new();
    for requirement in &request.requires {
        let bad = |problem: String| PublishError::BadDependency { requirement: requirement.clone(), problem };
        if requirement.module == request.module {
            return Err(bad("a module cannot depend on itself".into()));
        }
        if !seen.insert(requirement.module.as_str()) {
            return Err(bad("the module is named twice".into()));
        }
        let latest = catalog.modules.get(&requirement.module).and_then(Module::latest).ok_or_else(|| {
            bad(format!("module {} has no release in the catalog (publish it first)", requirement.module))
        })?;
        if latest.version < requirement.min {
            return Err(bad(format!("the latest release of {} is {}", requirement.module, latest.version)));
        }
    }
    Ok(())
}

/// Where the new release goes among the module's releases (ascending order).
fn position(module: &Module, request: &PublishRequest) -> Result<usize, PublishError> {
    if let Some(existing) = module.release(&request.version) {
        return Err(PublishError::AlreadyPublished {
            module: module.id.clone(),
            version: request.version.clone(),
            existing: existing.version.clone(),
        });
    }
    let at = module.releases.partition_point(|r| r.version < request.version);
    match module.latest() {
        Some(latest) if at < module.releases.len() && !request.rollback => Err(PublishError::NotNewer {
            module: module.id.clone(),
            version: request.version.clone(),
            latest: latest.version.clone(),
        }),
        _ => Ok(at),
    }
}

fn hash(path: &Path) -> Result<Blob, PublishError> {
    hash_file(path).map_err(|e| match e {
        CatalogError::Io { path, source } => PublishError::Io { path, source },
        other => PublishError::Io { path: path.to_owned(), source: std::io::Error::other(other.to_string()) },
    })
}

/// Every regular file under `root`, with its file id, hashed; sorted by id.
fn hash_folder(root: &Path) -> Result<Vec<SourceFile>, PublishError> {
    let mut files = Vec::new();
    for (id, path) in walk(root)? {
        let blob = hash(&path)?;
        let executable = is_executable(&path)?;
        files.push(SourceFile { id, path, blob, executable });
    }
    Ok(files)
}

/// Whether any execute permission bit (owner, group, other) of `path` is set; never on a system
/// without permission bits.
fn is_executable(path: &Path) -> Result<bool, PublishError> {
    let metadata = fs::metadata(path).map_err(|source| PublishError::Io { path: path.to_owned(), source })?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        Ok(metadata.permissions().mode() & 0o111 != 0)
    }
    #[cfg(not(unix))]
    {
        let _ = metadata;
        Ok(false)
    }
}

/// The regular files under `root` with their file ids, sorted by id; symbolic links, other
/// kinds of entries and names that cannot be file ids are refused.
fn walk(root: &Path) -> Result<Vec<(String, PathBuf)>, PublishError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| PublishError::Io { path, source }
    };
    if !fs::metadata(root).map_err(io(root))?.is_dir() {
        return Err(PublishError::NotAFolder { path: root.to_owned() });
    }
    let mut files = Vec::new();
    let mut folders = vec![(root.to_owned(), String::new())];
    while let Some((folder, prefix)) = folders.pop() {
        for entry in fs::read_dir(&folder).map_err(io(&folder))? {
            let entry = entry.map_err(io(&folder))?;
            let path = entry.path();
            let name = entry.file_name().into_string().map_err(|_| PublishError::NotUtf8 { path: path.clone() })?;
            let id = format!("{prefix}{name}");
            let kind = entry.file_type().map_err(io(&path))?;
            if kind.is_symlink() {
                return Err(PublishError::Symlink { path });
            } else if kind.is_dir() {
                folders.push((path, format!("{id}/")));
            } else if !kind.is_file() {
                return Err(PublishError::NotRegularFile { path });
            } else if !is_valid_file_id(&id) {
                return Err(PublishError::BadFileId { path, id });
            } else if files.len() == MAX_FILES_PER_MODULE {
                return Err(PublishError::TooManyFiles { path: root.to_owned() });
            } else {
                files.push((id, path));
            }
        }
    }
    if files.is_empty() {
        return Err(PublishError::EmptyRelease { path: root.to_owned() });
    }
    files.sort();
    Ok(files)
}

/// The new release's files, each with the version in which its content or executable flag
/// last changed.
fn file_versions(sources: &[SourceFile], history: &[Release], version: &Version<'static>) -> Vec<ReleaseFile> {
    sources
        .iter()
        .map(|source| {
            let mut file = ReleaseFile {
                id: source.id.clone(),
                version: version.clone(),
                blob: source.blob,
                executable: source.executable,
            };
            file.version = last_change(&file, history);
            file
        })
        .collect()
}

/// Whether `old` and `new` are the same file as clients get it: same content, same flag.
fn same_file(old: &ReleaseFile, new: &ReleaseFile) -> bool {
    old.blob.sha256 == new.blob.sha256 && old.executable == new.executable
}

/// Walks down the releases below the new one while they hold the same file (content and
/// flag): it last changed at the lowest of them (or, at the oldest release kept, at that
/// release's file version, which remembers releases pruned from the catalog). `new.version` is
/// the new release's.
fn last_change(new: &ReleaseFile, history: &[Release]) -> Version<'static> {
    let mut last = new.version.clone();
    for (index, release) in history.iter().enumerate().rev() {
        match release.file(&new.id) {
            Some(file) if same_file(file, new) => {
                last = if index == 0 { file.version.clone() } else { release.version.clone() };
            }
            _ => break,
        }
    }
    last
}

/// Files of the release below that the new one lacks.
fn gone_files(files: &[ReleaseFile], below: Option<&Release>) -> Vec<String> {
    let Some(below) = below else {
        return Vec::new();
    };
    below
        .files
        .iter()
        .filter(|old| files.binary_search_by(|f| f.id.cmp(&old.id)).is_err())
        .map(|old| old.id.clone())
        .collect()
}

/// The cumulative deletions: those of the release below whose file did not come back, and
/// the files gone now.
fn deleted_files(
    gone: &[String],
    below: Option<&Release>,
    files: &[ReleaseFile],
    version: &Version<'static>,
) -> Vec<DeletedFile> {
    let mut deleted: BTreeMap<String, DeletedFile> = below
        .map(|r| r.deleted.as_slice())
        .unwrap_or_default()
        .iter()
        .filter(|d| files.binary_search_by(|f| f.id.cmp(&d.id)).is_err())
        .map(|d| (d.id.clone(), d.clone()))
        .collect();
    for id in gone {
        deleted.insert(id.clone(), DeletedFile { id: id.clone(), version: version.clone() });
    }
    deleted.into_values().collect()
}

fn summarize(
    request: &PublishRequest,
    files: &[ReleaseFile],
    below: Option<&Release>,
    gone: Vec<String>,
) -> PublishSummary {
    let mut summary = PublishSummary {
        module: request.module.clone(),
        version: request.version.clone(),
        added: Vec::new(),
        changed: Vec::new(),
        unchanged: 0,
        deleted: gone,
        deltas: Vec::new(),
        patches: Vec::new(),
        frequent: Vec::new(),
        package: None,
        notes: Vec::new(),
    };
    for file in files {
        match below.and_then(|r| r.file(&file.id)) {
            None => summary.added.push(file.id.clone()),
            Some(old) if !same_file(old, file) => {
                summary.changed.push(file.id.clone());
            }
            Some(_) => summary.unchanged += 1,
        }
    }
    summary
}

/// \[0082\]: a release that touches a critical file needs a package. Also notes critical files a
/// package-less release keeps unchanged: clients installing from scratch, or upgrading from
/// before their last change, would get them in a file list, which the responder refuses.
fn check_critical(
    request: &PublishRequest,
    settings: &Settings,
    files: &[ReleaseFile],
    summary: &mut PublishSummary,
    has_package: bool,
) -> Result<(), PublishError> {
    if has_package {
        return Ok(());
    }
    let every_file = request.full || request.rollback;
    let touched = summary
        .added
        .iter()
        .map(|id| (id, "added"))
        .chain(summary.changed.iter().map(|id| (id, "changed")))
        .chain(summary.deleted.iter().map(|id| (id, "deleted")))
        .chain(files.iter().filter(|_| every_file).map(|f| (&f.id, "replaced (full release)")));
    for (id, change) in touched {
        if matches_any(&settings.critical, id) {
            return Err(PublishError::NeedsPackage { file: id.clone(), change, version: request.version.clone() });
        }
    }
    for file in files.iter().filter(|f| matches_any(&settings.critical, &f.id)) {
        summary.notes.push(format!(
            "{} is a critical file and this release has no package: clients installing the module, or upgrading from before {}, will be answered with an error (SPEC.md section 5.3, code 22)",
            file.id, file.version
        ));
    }
    Ok(())
}

/// The record deltas of the new release: new ones for changed record files, the release
/// below's for unchanged ones. Notes why a changed record file got none.
fn record_deltas(
    dir: &Path,
    settings: &Settings,
    files: &[ReleaseFile],
    history: &[Release],
    notes: &mut Vec<String>,
) -> Result<Vec<DeltaRef>, CatalogError> {
    let mut deltas = Vec::new();
    let Some(below) = history.last() else {
        return Ok(deltas);
    };
    for file in files.iter().filter(|f| matches_any(&settings.record_files, &f.id)) {
        match below.file(&file.id) {
            Some(old) if old.blob.sha256 == file.blob.sha256 => {
                deltas.extend(below.deltas.iter().filter(|d| d.file == file.id && d.from < file.version).cloned())
            }
            _ => deltas.extend(new_deltas(dir, file, history, notes)?),
        }
    }
    Ok(deltas)
}

/// Deltas to `file` from each earlier distinct version of it still in the store.
fn new_deltas(
    dir: &Path,
    file: &ReleaseFile,
    history: &[Release],
    notes: &mut Vec<String>,
) -> Result<Vec<DeltaRef>, CatalogError> {
    let earlier: BTreeMap<Version<'static>, Blob> = history
        .iter()
        .filter_map(|r| r.file(&file.id))
        .filter(|old| old.blob.sha256 != file.blob.sha256 && old.version < file.version)
        .map(|old| (old.version.clone(), old.blob))
        .collect();
    if earlier.is_empty() {
        return Ok(Vec::new());
    }
    let Some(new_bytes) = read_record_blob(dir, &file.blob)? else {
        notes.push(format!("{}: too large for a record file, published without deltas", file.id));
        return Ok(Vec::new());
    };
    let Ok(new_records) = RecordFile::decode(&new_bytes) else {
        notes.push(format!(
            "{}: matches `record_files` but is not a record file (SPEC.md section 7.1), published without deltas",
            file.id
        ));
        return Ok(Vec::new());
    };
    let store = store_dir(dir);
    let mut deltas = Vec::new();
    for (from, old_blob) in earlier {
        let Some(old_bytes) = read_record_blob(dir, &old_blob)? else {
            continue;
        };
        let Ok(old_records) = RecordFile::decode(&old_bytes) else {
            continue;
        };
        let delta = diff(&old_records, &new_records);
        if delta.encoded_len() >= new_bytes.len() {
            continue;
        }
        let mut encoded = Vec::new();
        delta.encode(&mut encoded);
        let blob = put_bytes(&store, &encoded)?;
        deltas.push(DeltaRef { file: file.id.clone(), from, blob });
    }
    Ok(deltas)
}

/// The binary patches of the new release (see the module documentation): new ones for changed
/// files, the release below's for unchanged ones. Record files have record deltas instead.
fn binary_patches(
    dir: &Path,
    settings: &Settings,
    options: &PatchOptions,
    files: &[ReleaseFile],
    history: &[Release],
    notes: &mut Vec<String>,
) -> Result<Vec<PatchRef>, CatalogError> {
    let mut patches = Vec::new();
    let Some(below) = history.last() else {
        return Ok(patches);
    };
    let recent = history.get(history.len().saturating_sub(options.from)..).unwrap_or_default();
    for file in files.iter().filter(|f| !matches_any(&settings.record_files, &f.id)) {
        match below.file(&file.id) {
            Some(old) if old.blob.sha256 == file.blob.sha256 => {
                patches.extend(below.patches.iter().filter(|p| p.file == file.id && p.from < file.version).cloned())
            }
            _ if options.from == 0 || file.blob.size < options.min_size => {}
            _ if file.blob.size > PatchOptions::MAX_FILE_LEN => notes.push(format!(
                "{}: larger than {} bytes, published without binary patches",
                file.id,
                PatchOptions::MAX_FILE_LEN
            )),
            _ => patches.extend(new_patches(dir, options, file, recent, notes)?),
        }
    }
    Ok(patches)
}

/// Patches to `file` from each distinct earlier content of it in `recent` still in the store,
/// each kept when smaller than the options' share of the file.
fn new_patches(
    dir: &Path,
    options: &PatchOptions,
    file: &ReleaseFile,
    recent: &[Release],
    notes: &mut Vec<String>,
) -> Result<Vec<PatchRef>, CatalogError> {
    let bases: BTreeMap<Version<'static>, Blob> = recent
        .iter()
        .filter_map(|r| r.file(&file.id))
        .filter(|old| old.blob.sha256 != file.blob.sha256 && old.version < file.version)
        .filter(|old| old.blob.size <= PatchOptions::MAX_FILE_LEN)
        .map(|old| (old.version.clone(), old.blob))
        .collect();
    if bases.is_empty() {
        return Ok(Vec::new());
    }
    let Some(new_bytes) = read_blob(dir, &file.blob)? else {
        return Ok(Vec::new());
    };
    let store = store_dir(dir);
    let mut patches = Vec::new();
    for (from, base) in bases {
        let Some(base_bytes) = read_blob(dir, &base)? else {
            continue;
        };
        let Some(patch) = make_patch(&base_bytes, &new_bytes, notes, &file.id) else {
            continue;
        };
        if !small_enough(patch.len() as u64, file.blob.size, options.max_share) {
            continue;
        }
        let blob = put_bytes(&store, &patch)?;
        patches.push(PatchRef { file: file.id.clone(), from, base_sha256: base.sha256, blob });
    }
    Ok(patches)
}

/// Whether a patch of `patch_len` bytes is smaller than `max_share` of a file of `file_len`.
fn small_enough(patch_len: u64, file_len: u64, max_share: f64) -> bool {
    // Exact for every length a file can have in practice (below 2^53 bytes).
    (patch_len as f64) < max_share * file_len as f64
}

/// A bsdiff patch from `base` to `result`; `None` (with a note) when it cannot be made.
#[cfg(feature = "patch")]
fn make_patch(base: &[u8], result: &[u8], notes: &mut Vec<String>, id: &str) -> Option<Vec<u8>> {
    let mut patch = Vec::new();
    match qbsdiff::Bsdiff::new(base, result).compare(&mut patch) {
        Ok(_) => Some(patch),
        Err(e) => {
            notes.push(format!("{id}: no binary patch could be made: {e}"));
            None
        }
    }
}

/// Without the `patch` feature no patch is made (said once per file).
#[cfg(not(feature = "patch"))]
fn make_patch(_base: &[u8], _result: &[u8], notes: &mut Vec<String>, id: &str) -> Option<Vec<u8>> {
    notes.push(format!("{id}: this server is built without the `patch` feature: no binary patch made"));
    None
}

/// The bytes of a blob in the store: `None` when it is no longer there with its size.
fn read_blob(dir: &Path, blob: &Blob) -> Result<Option<Vec<u8>>, CatalogError> {
    let path = blob_path(dir, &blob.sha256);
    match fs::read(&path) {
        Ok(bytes) if bytes.len() as u64 == blob.size => Ok(Some(bytes)),
        Ok(_) => Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(CatalogError::Io { path, source: e }),
    }
}

/// The bytes of a blob that may be a record file: `None` when it is too large to be one or no
/// longer in the store with its size.
fn read_record_blob(dir: &Path, blob: &Blob) -> Result<Option<Vec<u8>>, CatalogError> {
    if blob.size > MAX_RECORD_FILE_LEN as u64 {
        return Ok(None);
    }
    read_blob(dir, blob)
}

/// The frequent files of the module after this release (\[0078\], SPEC.md §5.7).
fn frequent_files(releases: &[Release], settings: &Settings) -> Vec<String> {
    let Some(latest) = releases.last() else {
        return Vec::new();
    };
    let from = releases.len().saturating_sub(settings.frequent_window.saturating_add(1));
    let mut changes: BTreeMap<&str, usize> = BTreeMap::new();
    for pair in releases.get(from..).unwrap_or_default().windows(2) {
        let [before, after] = pair else { continue };
        for file in &after.files {
            if before.file(&file.id).is_some_and(|old| old.blob.sha256 != file.blob.sha256) {
                *changes.entry(file.id.as_str()).or_default() += 1;
            }
        }
    }
    latest
        .files
        .iter()
        .filter(|f| changes.get(f.id.as_str()).copied().unwrap_or(0) >= settings.frequent_changes)
        .map(|f| f.id.clone())
        .collect()
}

/// `publish` parsed exactly as the binary parses it.
#[derive(clap::Parser)]
struct PublishCommand {
    #[command(flatten)]
    request: PublishRequest,
}

/// The `publish` lines of a shell script such as `demo/publish-demo.sh` (one command per line,
/// `publish --…`, single quotes only around whole arguments), as requests into `catalog`, with
/// release folders and packages relative to `base`.
pub fn script_steps(script: &str, base: &Path, catalog: &Path) -> Result<Vec<PublishRequest>, String> {
    use clap::Parser as _;
    script
        .lines()
        .filter_map(|line| line.trim_start().strip_prefix("publish --"))
        .map(|rest| {
            let mut args = vec!["publish".to_owned(), "--catalog".to_owned(), catalog.display().to_string()];
            args.extend(format!("--{rest}").split_whitespace().map(|arg| arg.trim_matches('\'').to_owned()));
            let mut request =
                PublishCommand::try_parse_from(&args).map_err(|e| format!("publish --{rest}: {e}"))?.request;
            request.from = base.join(&request.from);
            request.package = request.package.map(|p| base.join(p));
            Ok(request)
        })
        .collect()
}
