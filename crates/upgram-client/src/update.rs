//! `upgram update` as a library call (C5, C6, C7; issue 5): plan the verified answers
//! (dependencies first, forced upgrades always, optional ones per the caller's choice), stage
//! every payload of a module, then apply it all or nothing; a module whose dependency failed is
//! not applied.
//!
//! Record files are merged with their record delta when the installed file is the delta's base
//! and the result hashes as signed; otherwise the whole file is fetched (C7). Install packages
//! are staged, verified and run ([`crate::package`]), with a journal around the run.
//!
//! A module with a file in use waits whole for its trigger ([`crate::defer`]), and so do the
//! modules that depend on it; a module that replaces the running `upgram` waits for the
//! self-update hand-over ([`crate::selfupdate`]). The embedder's in-use check and plug-in
//! manager come in [`Hooks`].
//!
//! The embedder's in-use check, plug-in manager and [`Progress`] (how every download goes) come
//! in [`Hooks`].

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use upgram_core::Sha256Digest;
use upgram_core::body::{FileAction, FileEntry, ModuleAnswer, UpgradeInfo};
use upgram_core::plan::{Choice, Offer, PlanError, plan};
use upgram_core::records::apply_delta;
use upgram_core::version::Version;

use crate::apply::{FileOp, Layout, apply_module};
use crate::defer::{self, AdvisoryLock, InUseCheck, PendingOutcome, PendingUpgrade, PluginManager, Trigger};
use crate::fetch::Fetcher;
use crate::staging::{Download, NoProgress, Progress, stage_reporting, staged_path};
use crate::state::{InstalledFile, InstalledModule, InstalledState};

/// How long an install package may run (SPEC.md §5.8 recommends 15 minutes).
pub const INSTALLER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15 * 60);

/// What happened to one module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Upgraded from the first version to the second.
    Upgraded(Option<String>, String),
    /// Upgraded by its install package, which asks for a restart of the application or system.
    UpgradedNeedsRestart(Option<String>, String),
    /// Staged and recorded as pending: it is completed at `trigger` (`upgram apply-pending`).
    Deferred {
        /// The installed version, which stays until then.
        from: Option<String>,
        /// The version it goes to.
        to: String,
        /// When it is completed.
        trigger: Trigger,
        /// Why it waits (the busy files, or a pending dependency).
        reason: String,
    },
    /// Not applied, and why.
    Skipped(String),
    /// Failed and rolled back, and why.
    Failed(String),
}

/// One line of the update summary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleOutcome {
    /// Module id.
    pub id: String,
    /// What happened.
    pub outcome: Outcome,
}

/// One step of a plan, for a dry run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanLine {
    /// Module id.
    pub id: String,
    /// Installed version, if any.
    pub from: Option<String>,
    /// The version it would go to.
    pub to: String,
    /// Whether the upgrade is forced.
    pub forced: bool,
}

/// The plan, dependencies first, for a dry run.
pub fn plan_lines(
    answers: &[ModuleAnswer<'_>],
    state: &InstalledState,
    choice: &Choice<'_>,
) -> Result<Vec<PlanLine>, PlanError> {
    let offers: Vec<Offer<'_>> = answers.iter().filter_map(Offer::from_answer).collect();
    let installed = installed_versions(state);
    Ok(plan(&offers, &installed, choice)?
        .steps
        .iter()
        .map(|s| PlanLine {
            id: s.id.to_owned(),
            from: s.from.as_ref().map(Version::to_string),
            to: s.to.to_string(),
            forced: s.forced,
        })
        .collect())
}

fn installed_versions(state: &InstalledState) -> BTreeMap<String, Version<'static>> {
    state
        .modules
        .iter()
        .filter_map(|(id, m)| Some((id.clone(), Version::parse(&m.version).ok()?.into_owned())))
        .collect()
}

/// The default in-use check: advisory locks, busy files wait for the program's exit.
static ADVISORY_LOCK: AdvisoryLock = AdvisoryLock { trigger: Trigger::ProgramExit, modules: BTreeMap::new() };

/// The parts of an update an embedder chooses (C11).
#[derive(Clone, Copy)]
pub struct Hooks<'a> {
    /// Tells whether a file is in use (default: [`AdvisoryLock`]).
    pub in_use: &'a dyn InUseCheck,
    /// Stops and starts plug-ins, so a busy plug-in is upgraded at once instead of waiting.
    pub plugins: Option<&'a dyn PluginManager>,
    /// The running `upgram` binary: an upgrade that replaces it goes through the self-update
    /// hand-over (the `upgram` command sets it; embedders leave it `None`).
    pub self_exe: Option<&'a std::path::Path>,
    /// Told how every payload download goes (progress bars).
    pub progress: &'a dyn Progress,
}

impl Default for Hooks<'_> {
    fn default() -> Self {
        Self { in_use: &ADVISORY_LOCK, plugins: None, self_exe: None, progress: &NoProgress }
    }
}

impl std::fmt::Debug for Hooks<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hooks").field("plugins", &self.plugins.is_some()).field("self_exe", &self.self_exe).finish()
    }
}

/// Plans and applies `answers` to the installation, in dependency order, with the default
/// [`Hooks`].
pub async fn update(
    fetcher: &impl Fetcher,
    layout: &Layout,
    answers: &[ModuleAnswer<'_>],
    choice: &Choice<'_>,
) -> Result<Vec<ModuleOutcome>, PlanError> {
    update_with(fetcher, layout, answers, choice, Hooks::default()).await
}

/// [`update`], telling `progress` about every payload download (C11, C12: progress bars).
pub async fn update_reporting(
    fetcher: &impl Fetcher,
    layout: &Layout,
    answers: &[ModuleAnswer<'_>],
    choice: &Choice<'_>,
    progress: &dyn Progress,
) -> Result<Vec<ModuleOutcome>, PlanError> {
    update_with(fetcher, layout, answers, choice, Hooks { progress, ..Hooks::default() }).await
}

/// Plans and applies `answers` to the installation, in dependency order, with the embedder's
/// `hooks`.
pub async fn update_with(
    fetcher: &impl Fetcher,
    layout: &Layout,
    answers: &[ModuleAnswer<'_>],
    choice: &Choice<'_>,
    hooks: Hooks<'_>,
) -> Result<Vec<ModuleOutcome>, PlanError> {
    let state = InstalledState::load(&layout.state).unwrap_or_default();
    let offers: Vec<Offer<'_>> = answers.iter().filter_map(Offer::from_answer).collect();
    let upgrade = plan(&offers, &installed_versions(&state), choice)?;
    let mut failed: BTreeSet<String> = BTreeSet::new();
    let mut deferred: BTreeMap<String, Trigger> = BTreeMap::new();
    let mut outcomes = Vec::new();
    for step in &upgrade.steps {
        let Some(answer) = answers.iter().find(|a| a.id == step.id) else { continue };
        let blocked = answer.requires.iter().find(|r| failed.contains(r.id.as_ref()));
        // A module whose dependency waits, waits with it, so versions never mix.
        let waits: Vec<(String, Trigger)> =
            answer.requires.iter().filter_map(|r| Some((r.id.to_string(), *deferred.get(r.id.as_ref())?))).collect();
        let outcome = match blocked {
            Some(r) => Outcome::Skipped(format!("its dependency {} was not upgraded", r.id)),
            None => {
                let downloads = Downloads { fetcher, progress: hooks.progress, module: step.id };
                apply_answer(&downloads, layout, answer, hooks, &waits).await
            }
        };
        match &outcome {
            Outcome::Upgraded(..) | Outcome::UpgradedNeedsRestart(..) => {}
            Outcome::Deferred { trigger, .. } => {
                deferred.insert(step.id.to_owned(), *trigger);
            }
            Outcome::Skipped(_) | Outcome::Failed(_) => {
                failed.insert(step.id.to_owned());
            }
        }
        outcomes.push(ModuleOutcome { id: step.id.to_owned(), outcome });
    }
    // Every payload is in place or kept with its pending upgrade: the downloads can go. After a
    // failure they stay, so the next attempt resumes them instead of starting over.
    if failed.is_empty() {
        let _ = std::fs::remove_dir_all(layout.staging());
    }
    Ok(outcomes)
}

/// Where one module's payloads come from, and who watches them arrive.
struct Downloads<'a, F> {
    fetcher: &'a F,
    progress: &'a dyn Progress,
    module: &'a str,
}

impl<F: Fetcher> Downloads<'_, F> {
    /// Stages `payload`, which a person knows as `name`, into `dir`.
    async fn stage(
        &self,
        name: &str,
        payload: &upgram_core::body::Payload<'_>,
        dir: &std::path::Path,
    ) -> Result<PathBuf, crate::staging::StageError> {
        let download = Download { module: self.module, name, url: &payload.url, size: payload.size };
        stage_reporting(self.fetcher, &download, &payload.sha256, dir, self.progress).await
    }
}

async fn apply_answer(
    downloads: &Downloads<'_, impl Fetcher>,
    layout: &Layout,
    answer: &ModuleAnswer<'_>,
    hooks: Hooks<'_>,
    waits: &[(String, Trigger)],
) -> Outcome {
    let id = answer.id.as_ref();
    let Some(latest) = answer.latest.as_ref().map(Version::to_string) else {
        return Outcome::Failed("the answer has no latest version".into());
    };
    let state = InstalledState::load(&layout.state).unwrap_or_default();
    let before = state.modules.get(id).cloned();
    let from = before.as_ref().map(|b| b.version.clone());
    if let Some(pending) = state.pending.get(id) {
        if pending.after.version == latest {
            // Already staged and waiting: complete it if its files are free now.
            return retry_pending(layout, id, pending.clone(), hooks, from);
        }
        // A newer upgrade supersedes the stale pending one.
        if let Err(e) = defer::purge(layout, id) {
            return Outcome::Failed(format!("removing the stale pending upgrade: {e}"));
        }
    }
    let files = match &answer.upgrade {
        UpgradeInfo::Files(files) => files,
        UpgradeInfo::Package(package) => return apply_package(downloads, layout, id, before, latest, package).await,
        UpgradeInfo::None => return Outcome::Skipped("nothing to apply".into()),
    };
    let mut after = before.clone().unwrap_or(InstalledModule {
        version: latest.clone(),
        files: BTreeMap::new(),
        frequent: vec![],
        ..Default::default()
    });
    after.version = latest.clone();
    let mut ops = Vec::new();
    for file in files {
        match stage_file(downloads, layout, before.as_ref(), file).await {
            Ok(Some((staged, sha256))) => {
                after.files.insert(
                    file.id.to_string(),
                    InstalledFile {
                        version: file.version.to_string(),
                        sha256: sha256.to_hex(),
                        executable: file.executable,
                    },
                );
                ops.push(FileOp::Replace {
                    file: file.id.to_string(),
                    staged,
                    sha256: sha256.to_hex(),
                    executable: file.executable,
                });
            }
            Ok(None) => {
                after.files.remove(file.id.as_ref());
                ops.push(FileOp::Delete { file: file.id.to_string() });
            }
            Err(reason) => return Outcome::Failed(format!("staging {}: {reason} (nothing changed)", file.id)),
        }
    }
    let record = |trigger, busy, waits_for| {
        defer::defer(layout, id, &ops, after.clone(), trigger, busy, waits_for)
            .map_err(|e| Outcome::Failed(format!("recording the deferred upgrade: {e}")))
    };
    let deferred = |pending: PendingUpgrade, reason| Outcome::Deferred {
        from: from.clone(),
        to: latest.clone(),
        trigger: pending.trigger,
        reason,
    };
    if let Some(trigger) = waits.iter().map(|(_, t)| *t).max() {
        let deps: Vec<String> = waits.iter().map(|(d, _)| d.clone()).collect();
        let reason = format!("waits for its dependencies {}", deps.join(", "));
        return record(trigger, vec![], deps).map_or_else(|failed| failed, |p| deferred(p, reason));
    }
    if let Some(exe) = hooks.self_exe
        && crate::selfupdate::replaces(layout, &ops, exe).is_some()
    {
        // The new binary must pass its self-test, else the pending upgrade is dropped and the
        // running binary kept \[0120\].
        let pending = match record(Trigger::SelfUpdate, vec![], vec![]) {
            Ok(pending) => pending,
            Err(failed) => return failed,
        };
        let tested = crate::selfupdate::successor(layout, &pending, exe)
            .ok_or_else(|| "the new binary is missing from the pending upgrade".to_owned())
            .and_then(|binary| crate::selfupdate::self_test(&binary));
        return match tested {
            Ok(()) => deferred(pending, "replaces the running upgram: completed when it exits".into()),
            Err(why) => {
                let _ = defer::purge(layout, id);
                Outcome::Failed(format!("{why}; the running upgram is kept"))
            }
        };
    }
    match defer::busy_files(layout, id, &ops, hooks.in_use) {
        Err(e) => Outcome::Failed(e.to_string()),
        Ok(Some((trigger, busy))) => {
            let reason = format!("in use: {}", busy.join(", "));
            match record(trigger, busy, vec![]) {
                // A plug-in manager restarts the plug-in around its upgrade now \[0096\].
                Ok(pending) if trigger == Trigger::PluginRestart && hooks.plugins.is_some() => {
                    retry_pending(layout, id, pending, hooks, from)
                }
                Ok(pending) => deferred(pending, reason),
                Err(failed) => failed,
            }
        }
        Ok(None) => match apply_module(layout, id, &ops, after) {
            Ok(()) => Outcome::Upgraded(from, latest),
            Err(error) => Outcome::Failed(error.to_string()),
        },
    }
}

/// A module already pending at the offered version: completed now if it can be.
fn retry_pending(
    layout: &Layout,
    id: &str,
    pending: PendingUpgrade,
    hooks: Hooks<'_>,
    from: Option<String>,
) -> Outcome {
    let trigger = pending.trigger;
    let to = pending.after.version.clone();
    if trigger == Trigger::SelfUpdate || !pending.waits_for.is_empty() {
        let reason = "already pending".to_owned();
        return Outcome::Deferred { from, to, trigger, reason };
    }
    match defer::complete(layout, id, pending, hooks.in_use, hooks.plugins) {
        Ok(PendingOutcome::Applied { version, .. }) => Outcome::Upgraded(from, version),
        Ok(PendingOutcome::Waiting { reason, .. }) => Outcome::Deferred { from, to, trigger, reason },
        Ok(PendingOutcome::Failed { reason, .. }) => Outcome::Failed(reason),
        Err(e) => Outcome::Failed(e.to_string()),
    }
}

/// Stages and runs an install package.
async fn apply_package(
    downloads: &Downloads<'_, impl Fetcher>,
    layout: &Layout,
    id: &str,
    before: Option<InstalledModule>,
    latest: String,
    package: &upgram_core::body::Package<'_>,
) -> Outcome {
    use crate::package::{InstallResult, prepare, split_args};
    if before.as_ref().is_some_and(|m| m.interrupted) {
        return Outcome::Skipped(
            "an earlier install of this module was interrupted: repair (reinstall) it first".into(),
        );
    }
    let payload = &package.payload;
    let staged = match downloads.stage("package", payload, &layout.staging()).await {
        Ok(staged) => staged,
        Err(e) => return Outcome::Failed(format!("staging the package: {e} (nothing changed)")),
    };
    let run_dir = layout.staging().join("run");
    let program = match prepare(&staged, &run_dir, &format!("{id}-{latest}")) {
        Ok(program) => program,
        Err(e) => return Outcome::Failed(format!("preparing the package: {e} (nothing changed)")),
    };
    // A package replaces the module as a whole: its files are the installer's business now.
    let after = InstalledModule {
        version: latest.clone(),
        frequent: before.as_ref().map(|b| b.frequent.clone()).unwrap_or_default(),
        ..Default::default()
    };
    let from = before.map(|b| b.version);
    match crate::apply::install_package(
        layout,
        id,
        &program,
        &split_args(package.args.as_deref()),
        after,
        INSTALLER_TIMEOUT,
    ) {
        Ok(InstallResult::Success) => Outcome::Upgraded(from, latest),
        Ok(InstallResult::SuccessRestart) => Outcome::UpgradedNeedsRestart(from, latest),
        Ok(InstallResult::Failure(why)) => Outcome::Failed(why),
        Err(e) => Outcome::Failed(e.to_string()),
    }
}

/// Stages one file entry: `Some((staged file, its hash))` for a new content, `None` for a
/// deletion.
async fn stage_file(
    downloads: &Downloads<'_, impl Fetcher>,
    layout: &Layout,
    installed: Option<&InstalledModule>,
    file: &FileEntry<'_>,
) -> Result<Option<(PathBuf, Sha256Digest)>, String> {
    let dir = layout.staging();
    let payload = match &file.action {
        FileAction::Delete => return Ok(None),
        FileAction::Replace(payload) => payload,
        FileAction::Incremental { payload, delta } => {
            let base =
                installed.and_then(|m| m.files.get(file.id.as_ref())).filter(|f| f.version == delta.from.to_string());
            if base.is_some()
                && let Some(merged) = merge_delta(downloads, layout, file, delta, &payload.sha256).await
            {
                return Ok(Some((merged, payload.sha256)));
            }
            payload
        }
    };
    let staged = downloads.stage(&file.id, payload, &dir).await.map_err(|e| e.to_string())?;
    Ok(Some((staged, payload.sha256)))
}

/// The merged record file, staged, if the delta applies to the installed file and the result
/// hashes as signed; `None` sends the caller to the whole file (C7).
async fn merge_delta(
    downloads: &Downloads<'_, impl Fetcher>,
    layout: &Layout,
    file: &FileEntry<'_>,
    delta: &upgram_core::body::Delta<'_>,
    expected: &Sha256Digest,
) -> Option<PathBuf> {
    let dir = layout.staging();
    let patch = downloads.stage(&format!("{} (delta)", file.id), &delta.payload, &dir).await.ok()?;
    let target = crate::paths::resolve(&layout.root, &file.id).ok()?;
    let merged = apply_delta(&std::fs::read(target).ok()?, &std::fs::read(patch).ok()?).ok()?;
    if Sha256Digest::of(&merged) != *expected {
        return None;
    }
    let path = staged_path(&dir, expected);
    std::fs::write(&path, &merged).ok()?;
    std::fs::File::open(&path).and_then(|f| f.sync_all()).ok()?;
    Some(path)
}
