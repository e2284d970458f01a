//! What the `upgram` command offers, as library calls: [`check`], [`update`], [`install`],
//! [`apply_pending`] and [`recover`]. Each takes an [`Installation`] (opened with its lock to
//! change anything), a [`Client`] where servers are asked, and the embedder's [`Hooks`].
//!
//! An update plans the verified answers (dependencies first, forced upgrades always, optional
//! ones as the caller chooses), stages every payload of a module, then applies it all or
//! nothing; a module whose dependency failed is not applied. Record files are merged with
//! their record delta when the installed file is the delta's base and the result hashes as
//! signed; otherwise the whole file is fetched. Install packages are staged, verified and run
//! with a journal around the run.
//!
//! A module with a file in use waits whole for its trigger, and so do the modules that depend on
//! it; a module that replaces the running `upgram` waits for the self-update hand-over.
//!
//! Network and downloads are async; file work with fsync, installer runs and plug-in commands
//! run on tokio's blocking threads, so the caller's runtime threads never block on them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use thiserror::Error;
use upgram_core::Sha256Digest;
use upgram_core::body::value::is_valid_module_id;
use upgram_core::body::{FileAction, FileEntry, ModuleAnswer, Payload, Status, UpgradeInfo};
use upgram_core::plan::{Choice, Offer, PlanError, plan};
use upgram_core::records::apply_delta;
use upgram_core::version::Version;

use crate::apply::ApplyError;
use crate::apply::defer::{PendingOutcome, StillWaiting, Waiting};
use crate::apply::package::{InstallFailure, InstallResult, prepare, split_args};
use crate::apply::recovery::Recovered;
use crate::apply::selfupdate::{self, SelfTestError};
use crate::client::{CheckReport, Client, ClientError};
use crate::fetch::Fetcher;
use crate::hooks::Hooks;
use crate::installation::{Installation, InstallationError};
use crate::layout::Layout;
use crate::staging::{Download, StageError, stage_reporting, staged_path};
use crate::state::{FileOp, InstalledFile, InstalledModule, InstalledState, PendingUpgrade, Trigger};

/// How long an install package may run (SPEC.md §5.8 recommends 15 minutes).
pub const INSTALLER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15 * 60);

/// Why a flow could not run at all (what happens to each module is its [`Outcome`]).
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum FlowError {
    /// The installation could not be opened.
    #[error(transparent)]
    Installation(#[from] InstallationError),
    /// The installation could not be changed.
    #[error(transparent)]
    Apply(#[from] ApplyError),
    /// No verified answer came from the servers.
    #[error(transparent)]
    Check(#[from] ClientError),
    /// The answers cannot be planned (a cycle, a missing or unsatisfiable dependency).
    #[error("planning the upgrades: {0}")]
    Plan(#[from] PlanError),
    /// A module to install cannot be installed.
    #[error("cannot install `{module}`: {why}")]
    NotInstallable {
        /// The module.
        module: String,
        /// Why.
        why: NotInstallable,
    },
    /// A blocking task of the flow stopped abnormally.
    #[error("a blocking task stopped: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// Why the servers offer no install of a module.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum NotInstallable {
    /// The servers do not know it.
    #[error("the servers do not know this module")]
    Unknown,
    /// The server answered with another status.
    #[error("the server answered `{status}`{}", code.map_or_else(String::new, |c| format!(" (error code {c})")))]
    Status {
        /// The status's name.
        status: &'static str,
        /// The error code, if any.
        code: Option<u16>,
    },
    /// No server answered for it.
    #[error("no server answered for it")]
    NoAnswer,
    /// `ID@VERSION` names a version the servers do not offer (they offer the latest release).
    #[error("version {wanted} was asked for, the servers offer {offered} (only the latest release is installed)")]
    OtherVersion {
        /// The version asked for.
        wanted: String,
        /// The version the servers offer.
        offered: String,
    },
    /// `ID@VERSION` names no valid version.
    #[error("`{0}` is not a version")]
    BadVersion(String),
}

/// Why a module's upgrade failed (it was rolled back, or never began).
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum UpgradeFailure {
    /// The signed answer names no latest version.
    #[error("the answer has no latest version")]
    NoLatest,
    /// A payload could not be staged; nothing changed.
    #[error("staging {what}: {source} (nothing changed)")]
    Stage {
        /// The file id, or `package`.
        what: String,
        /// Why.
        #[source]
        source: Box<StageError>,
    },
    /// The staged package could not be prepared to run; nothing changed.
    #[error("preparing the package: {0} (nothing changed)")]
    Prepare(#[source] std::io::Error),
    /// The install package failed.
    #[error(transparent)]
    Installer(#[from] InstallFailure),
    /// Applying, deferring or the bookkeeping failed.
    #[error(transparent)]
    Apply(#[from] ApplyError),
    /// The new `upgram` failed its self-test; the running one is kept.
    #[error("{0}; the running upgram is kept")]
    SelfTest(#[from] SelfTestError),
    /// A blocking task stopped abnormally.
    #[error("a blocking task stopped: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// What happened to one module.
#[derive(Debug)]
#[non_exhaustive]
pub enum Outcome {
    /// Upgraded from the first version to the second.
    Upgraded(Option<String>, String),
    /// Upgraded by its install package, which asks for a restart of the application or system.
    UpgradedNeedsRestart(Option<String>, String),
    /// Staged and recorded as pending: it is completed at `trigger` (`apply_pending`).
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
    Failed(UpgradeFailure),
}

/// How binary patches went in one update (SPEC.md §5.12).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PatchCounts {
    /// Files made from the installed file and a patch, instead of downloaded whole.
    pub used: u64,
    /// Files with a patch for their installed content that were downloaded whole after all:
    /// the installed file was not the base, or the patch failed to download, apply or check.
    pub fell_back: u64,
}

/// [`PatchCounts`] while an update runs.
#[derive(Debug, Default)]
struct PatchCounter {
    used: std::sync::atomic::AtomicU64,
    fell_back: std::sync::atomic::AtomicU64,
}

impl PatchCounter {
    fn counts(&self) -> PatchCounts {
        use std::sync::atomic::Ordering::Relaxed;
        PatchCounts { used: self.used.load(Relaxed), fell_back: self.fell_back.load(Relaxed) }
    }
}

/// One line of the update summary.
#[derive(Debug)]
pub struct ModuleOutcome {
    /// Module id.
    pub id: String,
    /// What happened.
    pub outcome: Outcome,
}

/// One step of a plan.
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

/// Which optional upgrades an update takes (forced ones are always taken).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Optional {
    /// Every optional upgrade.
    Take,
    /// None.
    Decline,
    /// As the [`Hooks::confirm`] hook answers, asked once with the optional upgrades of the plan.
    Ask,
}

/// What an update or install did.
#[derive(Debug)]
pub struct UpdateReport {
    /// The verified answers it was planned from (`None` when nothing had to be asked).
    pub check: Option<CheckReport>,
    /// The plan, dependencies first.
    pub plan: Vec<PlanLine>,
    /// What happened to each module, in plan order (empty for a dry run).
    pub outcomes: Vec<ModuleOutcome>,
    /// For `install`: the modules asked for that were installed already, with their versions.
    pub already_installed: Vec<(String, String)>,
    /// The optional upgrades offered but not taken (not in [`UpdateReport::plan`]); each also
    /// has a [`Outcome::Skipped`] line in `outcomes` unless this is a dry run.
    pub declined: Vec<PlanLine>,
    /// The new `upgram` binary that replaces the running one once it exits, when a
    /// self-update was staged: hand over to it ([`selfupdate::hand_over`]) after releasing the
    /// installation.
    pub self_update: Option<PathBuf>,
    /// How many files were made from binary patches, and how many fell back to the whole file.
    pub patches: PatchCounts,
}

impl UpdateReport {
    /// Whether any module failed.
    pub fn failed(&self) -> bool {
        self.outcomes.iter().any(|o| matches!(o.outcome, Outcome::Failed(_)))
    }
}

/// The plan, dependencies first.
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

/// Runs `work` on a blocking thread.
async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> Result<T, tokio::task::JoinError> {
    tokio::task::spawn_blocking(work).await
}

/// Asks the servers about every installed module (and its frequent files). With the lock held,
/// the servers' hints, the cookies and the parts that fell back (split further next time) are
/// saved in the state; the installed modules do not change.
pub async fn check<F: Fetcher + 'static>(
    installation: &Installation,
    client: &Client<F>,
) -> Result<CheckReport, FlowError> {
    check_installing(installation, client, &[]).await
}

/// [`check`], also asking how to install the modules `install`, which are not installed.
pub async fn check_installing<F: Fetcher + 'static>(
    installation: &Installation,
    client: &Client<F>,
    install: &[&str],
) -> Result<CheckReport, FlowError> {
    let state = installation.state();
    client.set_cookie_jar(state.cookie_jar());
    let report = client.check_installing(&state, install).await?;
    if installation.is_locked() {
        // The install reports still queued go now, to the server that just answered and with
        // the cookie it gave (SPEC.md §5.11).
        let acknowledged = client.send_reports(&state).await;
        let hints: Vec<(String, Vec<String>)> = report
            .modules()
            .iter()
            .filter(|m| !m.frequent.is_empty())
            .map(|m| (m.id.to_string(), m.frequent.iter().map(|f| f.to_string()).collect()))
            .collect();
        let jar = client.cookie_jar();
        let handle = installation.clone();
        let fell_back = report.fallback_modules();
        blocking(move || {
            handle.update_state(|state| {
                for (id, frequent) in hints {
                    if let Some(installed) = state.modules.get_mut(&id) {
                        installed.frequent = frequent;
                    }
                }
                state.set_cookie_jar(&jar);
                state.remember_fallback(fell_back.iter().map(String::as_str));
                state.acknowledge_reports(&acknowledged);
            })
        })
        .await??;
    }
    Ok(report)
}

/// Checks, plans and (unless `dry_run`) applies upgrades: forced ones always, optional ones as
/// `optional` says; dependencies first; each module all or nothing. The upgrades offered but
/// not taken are in [`UpdateReport::declined`] and, after a run, each an [`Outcome::Skipped`]
/// line of its own, so that a run that leaves them out says so.
pub async fn update<F: Fetcher + 'static>(
    installation: &Installation,
    client: &Client<F>,
    optional: Optional,
    dry_run: bool,
    hooks: &Hooks,
) -> Result<UpdateReport, FlowError> {
    let report = check(installation, client).await?;
    let answers = report.modules();
    let state = installation.state();
    let offered = plan_lines(&answers, &state, &Choice::All)?;
    let optional_lines: Vec<&PlanLine> = offered.iter().filter(|line| !line.forced).collect();
    let take = match optional {
        Optional::Take => true,
        Optional::Decline => false,
        Optional::Ask => {
            let asked: Vec<(String, Option<String>, String)> =
                optional_lines.iter().map(|line| (line.id.clone(), line.from.clone(), line.to.clone())).collect();
            !asked.is_empty() && hooks.confirm.take_optional(&asked)
        }
    };
    let choice = if take { Choice::All } else { Choice::OnlyForced };
    let lines = if take { offered.clone() } else { plan_lines(&answers, &state, &choice)? };
    // What the plan leaves out of what was offered: the optional upgrades, and what only they
    // needed.
    let declined: Vec<PlanLine> =
        offered.iter().filter(|line| !lines.iter().any(|l| l.id == line.id)).cloned().collect();
    let (mut outcomes, self_update, patches) = if dry_run {
        (vec![], None, PatchCounts::default())
    } else {
        apply_answers(installation, client, &answers, &choice, hooks).await?
    };
    if !dry_run {
        let why = match optional {
            Optional::Ask => "optional upgrade declined",
            _ => "optional upgrade not taken",
        };
        outcomes.extend(
            declined.iter().map(|line| ModuleOutcome { id: line.id.clone(), outcome: Outcome::Skipped(why.into()) }),
        );
    }
    drop(answers);
    Ok(UpdateReport {
        check: Some(report),
        plan: lines,
        outcomes,
        already_installed: vec![],
        declined,
        self_update,
        patches,
    })
}

/// Installs the modules of `ids` that are not installed yet, with the modules they require
/// (and the forced upgrades the servers announce, which may not be declined); a module already
/// installed is reported as such and left as it is. A module the servers cannot install fails
/// the call before anything changes. An id may name a version, `ID@VERSION`: the servers offer a
/// module's latest release, and when that is another version the call fails
/// ([`NotInstallable::OtherVersion`]) before anything changes.
pub async fn install<F: Fetcher + 'static>(
    installation: &Installation,
    client: &Client<F>,
    ids: &[String],
    dry_run: bool,
    hooks: &Hooks,
) -> Result<UpdateReport, FlowError> {
    // `ID@VERSION`: that version, which must be the one the servers offer.
    let wanted: Vec<(String, Option<String>)> = ids
        .iter()
        .map(|id| match id.split_once('@') {
            Some((id, version)) => (id.to_owned(), Some(version.to_owned())),
            None => (id.clone(), None),
        })
        .collect();
    if let Some((bad, _)) = wanted.iter().find(|(id, _)| !is_valid_module_id(id)) {
        return Err(ClientError::ModuleId(bad.clone()).into());
    }
    for (id, version) in &wanted {
        if let Some(version) = version.as_deref().filter(|v| Version::parse(v).is_err()) {
            return Err(FlowError::NotInstallable {
                module: id.clone(),
                why: NotInstallable::BadVersion(version.to_owned()),
            });
        }
    }
    let ids: Vec<String> = wanted.iter().map(|(id, _)| id.clone()).collect();
    let state = installation.state();
    let (already_installed, missing) = split_installed(&state, &ids);
    if missing.is_empty() {
        return Ok(UpdateReport {
            check: None,
            plan: vec![],
            outcomes: vec![],
            already_installed,
            declined: vec![],
            self_update: None,
            patches: PatchCounts::default(),
        });
    }
    let report = check_installing(installation, client, &missing).await?;
    let answers = report.modules();
    installable(&answers, &missing)?;
    offers_versions(&answers, &wanted, &missing)?;
    let choice = Choice::Selected(&missing);
    let lines = plan_lines(&answers, &installation.state(), &choice)?;
    let (outcomes, self_update, patches) = if dry_run {
        (vec![], None, PatchCounts::default())
    } else {
        apply_answers(installation, client, &answers, &choice, hooks).await?
    };
    drop(answers);
    Ok(UpdateReport {
        check: Some(report),
        plan: lines,
        outcomes,
        already_installed,
        declined: vec![],
        self_update,
        patches,
    })
}

/// Completes the pending upgrades waiting for `trigger` (every trigger when `None`), in the
/// order they were recorded; a file still in use keeps its module waiting. Each completed
/// upgrade whose `deferred` install report was queued gets its `applied` report queued under
/// the same attempt, sent with the next check's reports.
pub async fn apply_pending(
    installation: &Installation,
    trigger: Option<Trigger>,
    hooks: &Hooks,
) -> Result<Vec<PendingOutcome>, FlowError> {
    let (handle, hooks) = (installation.clone(), hooks.clone());
    let before = installation.state();
    let outcomes = blocking(move || handle.apply_pending(trigger, &*hooks.in_use, hooks.plugins.as_deref())).await??;
    let completed: Vec<upgram_core::body::Outcome<'static>> = outcomes
        .iter()
        .filter_map(|outcome| match outcome {
            PendingOutcome::Applied { module, version } => {
                let attempt = before.pending.get(module)?.attempt?;
                let from = before.modules.get(module).map(|m| m.version.as_str());
                let applied = upgram_core::body::OutcomeKind::Applied;
                Some(crate::report::attempt_outcome(attempt, module, from, version, applied, None))
            }
            _ => None,
        })
        .collect();
    if !completed.is_empty() {
        let handle = installation.clone();
        blocking(move || handle.update_state(|state| completed.into_iter().for_each(|r| state.queue_report(r))))
            .await??;
    }
    Ok(outcomes)
}

/// Opens the installation at `root` with its lock, which repairs whatever a crash interrupted,
/// and says what was repaired.
pub fn recover(root: &Path) -> Result<Vec<Recovered>, InstallationError> {
    Ok(Installation::open_locked(root)?.recovered())
}

/// The modules of `ids` installed already (with their versions), and the others, each once.
fn split_installed<'i>(state: &InstalledState, ids: &'i [String]) -> (Vec<(String, String)>, Vec<&'i str>) {
    let mut already: Vec<(String, String)> = Vec::new();
    let mut missing: Vec<&str> = Vec::new();
    for id in ids {
        match state.modules.get(id) {
            Some(_) if already.iter().any(|(a, _)| a == id) => {}
            Some(module) => already.push((id.clone(), module.version.clone())),
            None if missing.contains(&id.as_str()) => {}
            None => missing.push(id),
        }
    }
    (already, missing)
}

/// Whether the servers offer an install of every module of `ids`, or what stops one.
fn installable(answers: &[ModuleAnswer<'_>], ids: &[&str]) -> Result<(), FlowError> {
    for id in ids {
        let why = match answers.iter().find(|a| a.id == *id) {
            Some(answer) if answer.status == Status::Update => continue,
            Some(answer) if answer.status == Status::Unknown => NotInstallable::Unknown,
            Some(answer) => NotInstallable::Status { status: answer.status.name(), code: answer.code },
            None => NotInstallable::NoAnswer,
        };
        return Err(FlowError::NotInstallable { module: (*id).to_owned(), why });
    }
    Ok(())
}

/// Whether the servers offer each module of `missing` asked for at a version (`ID@VERSION`) at
/// that version.
fn offers_versions(
    answers: &[ModuleAnswer<'_>],
    wanted: &[(String, Option<String>)],
    missing: &[&str],
) -> Result<(), FlowError> {
    for (id, version) in wanted {
        let Some(version) = version else { continue };
        if !missing.contains(&id.as_str()) {
            continue;
        }
        let offered = answers.iter().find(|a| a.id == *id).and_then(|a| a.latest.as_ref());
        let expected = Version::parse(version).ok();
        if offered.is_none() || offered != expected.as_ref() {
            let offered = offered.map(Version::to_string).unwrap_or_else(|| "no version".into());
            return Err(FlowError::NotInstallable {
                module: id.clone(),
                why: NotInstallable::OtherVersion { wanted: version.clone(), offered },
            });
        }
    }
    Ok(())
}

/// Plans `answers` and applies them to the installation, in dependency order; also the new
/// `upgram` binary when a self-update was staged, and how binary patches went.
async fn apply_answers<F: Fetcher + 'static>(
    installation: &Installation,
    client: &Client<F>,
    answers: &[ModuleAnswer<'_>],
    choice: &Choice<'_>,
    hooks: &Hooks,
) -> Result<(Vec<ModuleOutcome>, Option<PathBuf>, PatchCounts), FlowError> {
    let patches = PatchCounter::default();
    let upgrade = {
        let state = installation.state();
        let offers: Vec<Offer<'_>> = answers.iter().filter_map(Offer::from_answer).collect();
        let steps = plan(&offers, &installed_versions(&state), choice)?.steps;
        steps.iter().map(|s| s.id.to_owned()).collect::<Vec<String>>()
    };
    let mut failed: BTreeSet<String> = BTreeSet::new();
    let mut deferred: BTreeMap<String, Trigger> = BTreeMap::new();
    let mut outcomes = Vec::new();
    let mut self_update = false;
    let mut reports = Vec::new();
    for id in &upgrade {
        let Some(answer) = answers.iter().find(|a| a.id == *id) else { continue };
        let from = installation.module(id).map(|m| m.version);
        // A module already pending reports under the attempt of its first `deferred` report.
        let pending_attempt = installation.pending(id).and_then(|p| Some((p.after.version, p.attempt?)));
        let blocked = answer.requires.iter().find(|r| failed.contains(r.id.as_ref()));
        // A module whose dependency waits, waits with it, so versions never mix.
        let waits: Vec<(String, Trigger)> =
            answer.requires.iter().filter_map(|r| Some((r.id.to_string(), *deferred.get(r.id.as_ref())?))).collect();
        let outcome = match blocked {
            Some(r) => Outcome::Skipped(format!("its dependency {} was not upgraded", r.id)),
            None => {
                let module = Module { installation, fetcher: client.fetcher(), hooks, id, patches: &patches };
                module.apply(answer, &waits).await
            }
        };
        match &outcome {
            Outcome::Upgraded(..) | Outcome::UpgradedNeedsRestart(..) => {}
            Outcome::Deferred { trigger, .. } => {
                self_update |= *trigger == Trigger::SelfUpdate;
                deferred.insert(id.clone(), *trigger);
            }
            Outcome::Skipped(_) | Outcome::Failed(_) => {
                failed.insert(id.clone());
            }
        }
        if client.reports_enabled()
            && let Some(latest) = &answer.latest
            && let Some(mut report) = crate::report::outcome(id, from.as_deref(), latest.as_str(), &outcome)
        {
            if let Some((to, attempt)) = &pending_attempt
                && *to == report.to
            {
                report.attempt = *attempt;
            }
            reports.push(report);
        }
        outcomes.push(ModuleOutcome { id: id.clone(), outcome });
    }
    if !reports.is_empty() {
        send_reports(installation, client, reports).await?;
    }
    // Every payload is in place or kept with its pending upgrade: the downloads can go. After a
    // failure they stay, so the next attempt resumes them instead of starting over.
    if failed.is_empty() {
        let handle = installation.clone();
        if let Err(e) = blocking(move || handle.remove_downloads()).await? {
            tracing::warn!("could not remove the downloads: {e}");
        }
    }
    let successor = match (&hooks.self_exe, self_update) {
        (Some(exe), true) => installation.pending_successor(exe),
        _ => None,
    };
    Ok((outcomes, successor, patches.counts()))
}

/// Queues the outcomes of this update's attempts in the state, sends the queue, and removes
/// what the server acknowledged. Only saving the state can fail.
async fn send_reports<F: Fetcher + 'static>(
    installation: &Installation,
    client: &Client<F>,
    reports: Vec<upgram_core::body::Outcome<'static>>,
) -> Result<(), FlowError> {
    let handle = installation.clone();
    blocking(move || handle.update_state(|state| reports.into_iter().for_each(|r| state.queue_report(r)))).await??;
    let acknowledged = client.send_reports(&installation.state()).await;
    let (handle, jar) = (installation.clone(), client.cookie_jar());
    blocking(move || {
        handle.update_state(|state| {
            state.acknowledge_reports(&acknowledged);
            state.set_cookie_jar(&jar);
        })
    })
    .await??;
    Ok(())
}

/// One module of an update: where its payloads come from and where they go.
struct Module<'a, F> {
    installation: &'a Installation,
    fetcher: &'a F,
    hooks: &'a Hooks,
    id: &'a str,
    patches: &'a PatchCounter,
}

/// A module's upgrade, staged and ready to apply on a blocking thread.
struct Staged {
    id: String,
    from: Option<String>,
    to: String,
    ops: Vec<FileOp>,
    after: InstalledModule,
}

impl<F: Fetcher> Module<'_, F> {
    /// Stages `payload`, which a person knows as `name`, into `dir`.
    async fn stage(&self, name: &str, payload: &Payload<'_>, dir: &Path) -> Result<PathBuf, StageError> {
        let download = Download { module: self.id, name, url: &payload.url, size: payload.size };
        stage_reporting(self.fetcher, &download, &payload.sha256, dir, &*self.hooks.progress).await
    }

    async fn apply(&self, answer: &ModuleAnswer<'_>, waits: &[(String, Trigger)]) -> Outcome {
        match self.try_apply(answer, waits).await {
            Ok(outcome) => outcome,
            Err(failure) => Outcome::Failed(failure),
        }
    }

    async fn try_apply(
        &self,
        answer: &ModuleAnswer<'_>,
        waits: &[(String, Trigger)],
    ) -> Result<Outcome, UpgradeFailure> {
        let id = self.id;
        let latest = answer.latest.as_ref().map(Version::to_string).ok_or(UpgradeFailure::NoLatest)?;
        let before = self.installation.module(id);
        let from = before.as_ref().map(|b| b.version.clone());
        if let Some(pending) = self.installation.pending(id) {
            if pending.after.version == latest {
                // Already staged and waiting: complete it if its files are free now.
                return self.retry_pending(pending, from).await;
            }
            // A newer upgrade supersedes the stale pending one.
            let (handle, module) = (self.installation.clone(), id.to_owned());
            blocking(move || handle.purge_pending(&module)).await??;
        }
        let files = match &answer.upgrade {
            UpgradeInfo::Files(files) => files,
            UpgradeInfo::Package(package) => return self.apply_package(before, latest, package).await,
            UpgradeInfo::None => return Ok(Outcome::Skipped("nothing to apply".into())),
        };
        let layout = self.installation.layout();
        let mut after = before.clone().unwrap_or_default();
        after.version = latest.clone();
        let mut ops = Vec::new();
        for file in files {
            let staged = self
                .stage_file(&layout, before.as_ref(), file)
                .await
                .map_err(|source| UpgradeFailure::Stage { what: file.id.to_string(), source: Box::new(source) })?;
            match staged {
                Some((staged, sha256)) => {
                    let (sha256, executable) = (sha256.to_hex(), file.executable);
                    let installed =
                        InstalledFile { version: file.version.to_string(), sha256: sha256.clone(), executable };
                    after.files.insert(file.id.to_string(), installed);
                    ops.push(FileOp::Replace { file: file.id.to_string(), staged, sha256, executable });
                }
                None => {
                    after.files.remove(file.id.as_ref());
                    ops.push(FileOp::Delete { file: file.id.to_string() });
                }
            }
        }
        let staged = Staged { id: id.to_owned(), from, to: latest, ops, after };
        let (handle, hooks, waits) = (self.installation.clone(), self.hooks.clone(), waits.to_vec());
        let outcome = blocking(move || commit(&handle, staged, &hooks, &waits)).await??;
        Ok(outcome)
    }

    /// A module already pending at the offered version: completed now if it can be.
    async fn retry_pending(&self, pending: PendingUpgrade, from: Option<String>) -> Result<Outcome, UpgradeFailure> {
        let (handle, hooks, id) = (self.installation.clone(), self.hooks.clone(), self.id.to_owned());
        blocking(move || retry_pending(&handle, &id, pending, &hooks, from)).await?
    }

    /// Stages and runs an install package.
    async fn apply_package(
        &self,
        before: Option<InstalledModule>,
        latest: String,
        package: &upgram_core::body::Package<'_>,
    ) -> Result<Outcome, UpgradeFailure> {
        if before.as_ref().is_some_and(|m| m.interrupted) {
            return Ok(Outcome::Skipped(
                "an earlier install of this module was interrupted: repair (reinstall) it first".into(),
            ));
        }
        let layout = self.installation.layout();
        let staged = self
            .stage("package", &package.payload, &layout.staging())
            .await
            .map_err(|source| UpgradeFailure::Stage { what: "package".into(), source: Box::new(source) })?;
        // A package replaces the module as a whole: its files are the installer's business now.
        let after = InstalledModule {
            version: latest.clone(),
            frequent: before.as_ref().map(|b| b.frequent.clone()).unwrap_or_default(),
            ..Default::default()
        };
        let from = before.map(|b| b.version);
        let args = split_args(package.args.as_deref());
        let (handle, id, to) = (self.installation.clone(), self.id.to_owned(), latest.clone());
        let result = blocking(move || {
            let program =
                prepare(&staged, &layout.package_runs(), &format!("{id}-{latest}")).map_err(UpgradeFailure::Prepare)?;
            Ok::<_, UpgradeFailure>(handle.install_package(&id, &program, &args, after, INSTALLER_TIMEOUT)?)
        })
        .await??;
        match result {
            InstallResult::Success => Ok(Outcome::Upgraded(from, to)),
            InstallResult::SuccessRestart => Ok(Outcome::UpgradedNeedsRestart(from, to)),
            InstallResult::Failure(why) => Err(why.into()),
        }
    }

    /// Stages one file entry: `Some((staged file, its hash))` for a new content, `None` for a
    /// deletion.
    async fn stage_file(
        &self,
        layout: &Layout,
        installed: Option<&InstalledModule>,
        file: &FileEntry<'_>,
    ) -> Result<Option<(PathBuf, Sha256Digest)>, StageError> {
        let dir = layout.staging();
        let payload = match &file.action {
            FileAction::Delete => return Ok(None),
            FileAction::Replace(payload) => {
                if let Some(patched) = self.patched(layout, installed, file, payload).await {
                    return Ok(Some((patched, payload.sha256)));
                }
                payload
            }
            FileAction::Incremental { payload, delta } => {
                let base = installed
                    .and_then(|m| m.files.get(file.id.as_ref()))
                    .filter(|f| f.version == delta.from.to_string());
                if base.is_some()
                    && let Some(merged) = self.merge_delta(layout, file, delta, &payload.sha256).await
                {
                    return Ok(Some((merged, payload.sha256)));
                }
                payload
            }
        };
        let staged = self.stage(&file.id, payload, &dir).await?;
        Ok(Some((staged, payload.sha256)))
    }

    /// The whole new file made from the installed one and the entry's binary patch, staged,
    /// when the entry has a bsdiff patch from the content the state records for the file
    /// (SPEC.md §5.12); `None` sends the caller to the whole file, also after any failure of
    /// the patch (the installed file changed locally, a damaged or hostile patch, a failed
    /// download), which is logged and counted.
    #[cfg(feature = "patch")]
    async fn patched(
        &self,
        layout: &Layout,
        installed: Option<&InstalledModule>,
        file: &FileEntry<'_>,
        payload: &Payload<'_>,
    ) -> Option<PathBuf> {
        use std::sync::atomic::Ordering::Relaxed;
        // A patch no smaller than the file saves nothing.
        let patch = file
            .patch
            .as_ref()
            .filter(|p| p.format == upgram_core::body::PATCH_FORMAT_BSDIFF && p.payload.size < payload.size)?;
        let recorded = installed?.files.get(file.id.as_ref())?;
        if Sha256Digest::from_hex(&recorded.sha256) != Some(patch.base_sha256) {
            return None;
        }
        match self.apply_patch(layout, file, patch, payload).await {
            Ok(path) => {
                self.patches.used.fetch_add(1, Relaxed);
                Some(path)
            }
            Err(why) => {
                tracing::warn!("{}: binary patch not used ({why}); fetching the whole file", file.id);
                self.patches.fell_back.fetch_add(1, Relaxed);
                None
            }
        }
    }

    /// Without the `patch` feature queries ask for no patches: whole files only.
    #[cfg(not(feature = "patch"))]
    async fn patched(
        &self,
        _layout: &Layout,
        _installed: Option<&InstalledModule>,
        _file: &FileEntry<'_>,
        _payload: &Payload<'_>,
    ) -> Option<PathBuf> {
        let _ = self.patches;
        None
    }

    /// Downloads `patch` and applies it to the installed file, bounded and checked against the
    /// signed result, into the staging folder where the whole file would go.
    #[cfg(feature = "patch")]
    async fn apply_patch(
        &self,
        layout: &Layout,
        file: &FileEntry<'_>,
        patch: &upgram_core::body::FilePatch<'_>,
        payload: &Payload<'_>,
    ) -> Result<PathBuf, String> {
        use crate::patch::{Expected, Limits, apply};
        let dir = layout.staging();
        let staged = self
            .stage(&format!("{} (patch)", file.id), &patch.payload, &dir)
            .await
            .map_err(|e| format!("download: {e}"))?;
        let base = crate::paths::resolve(layout.root(), &file.id).map_err(|e| e.to_string())?;
        let expected =
            Expected { base_sha256: patch.base_sha256, result_sha256: payload.sha256, result_size: payload.size };
        let output = staged_path(&dir, &payload.sha256);
        let result = output.clone();
        blocking(move || apply(&base, &staged, &expected, &Limits::default(), &output))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        Ok(result)
    }

    /// The merged record file, staged, if the delta applies to the installed file and the result
    /// hashes as signed; `None` sends the caller to the whole file.
    async fn merge_delta(
        &self,
        layout: &Layout,
        file: &FileEntry<'_>,
        delta: &upgram_core::body::Delta<'_>,
        expected: &Sha256Digest,
    ) -> Option<PathBuf> {
        let dir = layout.staging();
        let patch = self.stage(&format!("{} (delta)", file.id), &delta.payload, &dir).await.ok()?;
        let target = crate::paths::resolve(layout.root(), &file.id).ok()?;
        let expected = *expected;
        blocking(move || {
            let merged = apply_delta(&std::fs::read(target).ok()?, &std::fs::read(patch).ok()?).ok()?;
            if Sha256Digest::of(&merged) != expected {
                return None;
            }
            let path = staged_path(&dir, &expected);
            crate::fsutil::write_durable(&path, &merged).ok()?;
            Some(path)
        })
        .await
        .ok()
        .flatten()
    }
}

/// Applies a staged module now, or records it as pending when it must wait: for a pending
/// dependency, for the self-update hand-over, or for its busy files.
fn commit(
    installation: &Installation,
    staged: Staged,
    hooks: &Hooks,
    waits: &[(String, Trigger)],
) -> Result<Outcome, UpgradeFailure> {
    let Staged { id, from, to, ops, after } = staged;
    let deferred = |pending: &PendingUpgrade, reason: String| Outcome::Deferred {
        from: from.clone(),
        to: to.clone(),
        trigger: pending.trigger,
        reason,
    };
    if let Some(trigger) = waits.iter().map(|(_, t)| *t).max() {
        let deps: Vec<String> = waits.iter().map(|(d, _)| d.clone()).collect();
        let reason = format!("waits for its dependencies {}", deps.join(", "));
        let pending = installation.defer(&id, &ops, after, Waiting { trigger, busy: vec![], waits_for: deps })?;
        return Ok(deferred(&pending, reason));
    }
    if let Some(exe) = &hooks.self_exe
        && let Some(index) = selfupdate::replaces(&installation.layout(), &ops, exe)
    {
        // The running program stays a program, whatever the release folder's mode said.
        let mut ops = ops;
        if let Some(FileOp::Replace { executable, .. }) = ops.get_mut(index) {
            *executable = true;
        }
        // The new binary must pass its self-test, else the pending upgrade is dropped and the
        // running binary kept.
        let waiting = Waiting { trigger: Trigger::SelfUpdate, busy: vec![], waits_for: vec![] };
        let pending = installation.defer(&id, &ops, after, waiting)?;
        let tested = selfupdate::successor(&installation.layout(), &pending, exe)
            .ok_or(SelfTestError::Missing)
            .and_then(|binary| selfupdate::self_test(&binary));
        return match tested {
            Ok(()) => Ok(deferred(&pending, StillWaiting::SelfUpdate.to_string())),
            Err(why) => {
                let _ = installation.purge_pending(&id);
                Err(why.into())
            }
        };
    }
    match installation.busy_files(&id, &ops, &*hooks.in_use)? {
        Some((trigger, busy)) => {
            let reason = format!("in use: {}", busy.join(", "));
            let pending = installation.defer(&id, &ops, after, Waiting { trigger, busy, waits_for: vec![] })?;
            if trigger == Trigger::PluginRestart && hooks.plugins.is_some() {
                // A plug-in manager restarts the plug-in around its upgrade now.
                return retry_pending(installation, &id, pending, hooks, from);
            }
            Ok(deferred(&pending, reason))
        }
        None => {
            installation.apply(&id, &ops, after)?;
            Ok(Outcome::Upgraded(from, to))
        }
    }
}

/// A module already pending: completed now if it can be.
fn retry_pending(
    installation: &Installation,
    id: &str,
    pending: PendingUpgrade,
    hooks: &Hooks,
    from: Option<String>,
) -> Result<Outcome, UpgradeFailure> {
    let trigger = pending.trigger;
    let to = pending.after.version.clone();
    if trigger == Trigger::SelfUpdate || !pending.waits_for.is_empty() {
        return Ok(Outcome::Deferred { from, to, trigger, reason: "already pending".into() });
    }
    match installation.complete_pending(id, &*hooks.in_use, hooks.plugins.as_deref())? {
        Some(PendingOutcome::Applied { version, .. }) => Ok(Outcome::Upgraded(from, version)),
        Some(PendingOutcome::Waiting { reason, .. }) => {
            Ok(Outcome::Deferred { from, to, trigger, reason: reason.to_string() })
        }
        Some(PendingOutcome::Failed { error, .. }) => Err(error.into()),
        None => Ok(Outcome::Skipped("its pending upgrade is gone".into())),
    }
}
