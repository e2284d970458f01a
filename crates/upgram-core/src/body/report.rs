//! The install report body (SPEC.md §4.7): what happened when a client tried an upgrade.
//!
//! A client sends one after each upgrade attempt (message kind `report`), fire-and-forget, and
//! carries the ones not yet acknowledged on its next exchange. Servers store and aggregate them
//! per release; they never identify a machine or a person: an installation is known only by the
//! channel it follows and its bucket band (its rollout bucket divided by ten).

use std::borrow::Cow;

use serde::Serialize;

/// How many bucket bands there are: a band is a bucket divided by ten, in `0..BANDS`.
pub const BANDS: u8 = 10;

/// An install report: the outcomes of one or more upgrade attempts of one installation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report<'a> {
    /// The channel the installation follows; `None` means the default channel.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channel: Option<Cow<'a, str>>,
    /// The installation's bucket band, in `0..BANDS`; `None` when it has no bucket.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub band: Option<u8>,
    /// One entry per attempt, at least one.
    pub outcomes: Vec<Outcome<'a>>,
}

/// The outcome of one upgrade attempt of one module.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Outcome<'a> {
    /// A random number the client draws once per attempt: a server that receives the same
    /// attempt twice (a retransmission) counts it once.
    pub attempt: u64,
    /// The module id.
    pub module: Cow<'a, str>,
    /// The version the installation had; `None` for a first install.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<Cow<'a, str>>,
    /// The version the attempt aimed at.
    pub to: Cow<'a, str>,
    /// What happened.
    pub result: OutcomeKind,
    /// Why it failed, for [`OutcomeKind::Failed`] and [`OutcomeKind::RolledBack`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<FailureCode>,
}

/// What happened to an upgrade attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum OutcomeKind {
    /// The upgrade is in place.
    Applied,
    /// The upgrade failed before anything changed.
    Failed,
    /// Some files were busy: their replacement waits for a restart or reboot.
    Deferred,
    /// The upgrade failed while being applied and the installation was restored.
    RolledBack,
}

/// Why an upgrade attempt failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FailureCode {
    /// A download failed (network, HTTP status, size).
    Download,
    /// Downloaded content did not match its declared hash or size.
    Verify,
    /// The installer or a hook exited with a failure.
    Installer,
    /// Writing the installation failed (permissions, busy files that could not be deferred).
    Apply,
    /// Not enough disk space.
    Space,
    /// Any other failure.
    Other,
}
