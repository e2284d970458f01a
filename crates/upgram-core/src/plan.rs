//! The upgrade planner, as specified in §5 Semantics: dependencies and upgrade order of
//! `protocol-spec/SPEC.md`.
//!
//! From the modules a server offers, the versions installed and the user's choice, the planner
//! decides which modules to upgrade and in which order. A module is upgraded only after the
//! modules it requires: if a plug-in requires the main module, which requires the main
//! program, the order is main program, main module, plug-in. Among modules free to go the
//! order is ascending identifier, so a plan is deterministic.
//!
//! Rules, in the order they apply to each offer:
//! - latest equal to the installed version: skipped as up to date;
//! - latest older than the installed version without `rollback`: skipped, downgrades are
//!   refused unless the server signs a rollback;
//! - forced offers are always taken, the others as the user's [`Choice`] says;
//! - each requirement of a taken module must hold: by the installed version if it is recent
//!   enough (no step needed), else by an offer recent enough, which is then taken as well even
//!   if the user declined it. A module that is taken anyway must itself be recent enough.
//!
//! All graph walks are iterative, so long dependency chains cannot overflow the stack.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet, VecDeque};
use std::hash::BuildHasher;

use crate::body::{self, ModuleAnswer};
use crate::version::Version;

/// Why no plan could be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PlanError {
    /// Two offers name the same module.
    #[error("module `{id}` is offered twice")]
    DuplicateOffer {
        /// The module identifier.
        id: String,
    },
    /// A taken module requires a module that is neither installed nor offered.
    #[error("module `{module}` requires `{requires}` >= {min}, which is neither installed nor offered")]
    MissingDependency {
        /// The module with the requirement.
        module: String,
        /// The required module.
        requires: String,
        /// The minimum version required.
        min: String,
    },
    /// A taken module requires a version newer than any installed or acceptable offered one.
    #[error(
        "module `{module}` requires `{requires}` >= {min}, but only {} is available",
        .available.as_deref().unwrap_or("no acceptable version")
    )]
    Unsatisfiable {
        /// The module with the requirement.
        module: String,
        /// The required module.
        requires: String,
        /// The minimum version required.
        min: String,
        /// The newest version installed or offered for the required module, if any.
        available: Option<String>,
    },
    /// Taken modules require each other in a cycle.
    #[error("dependency cycle: {}", .path.join(" -> "))]
    Cycle {
        /// The cycle in requirement order, first module repeated at the end
        /// (`a -> b -> c -> a`; `a -> a` for a module requiring itself).
        path: Vec<String>,
    },
}

/// A module the server offers: its latest version and what upgrading to it involves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offer<'a> {
    /// The module identifier.
    pub id: &'a str,
    /// The version the module would be upgraded (or installed) to.
    pub latest: Version<'a>,
    /// The user may not decline this upgrade.
    pub forced: bool,
    /// Every file of the module is replaced.
    pub full: bool,
    /// The server signs `latest` as an allowed downgrade.
    pub rollback: bool,
    /// Modules that must be at least at some version before this one is upgraded.
    pub requires: Vec<Requirement<'a>>,
}

impl<'a> Offer<'a> {
    /// The offer a decoded module answer makes: `Some` for status `update` (SPEC.md §5.1).
    ///
    /// Answers of every datagram and fallback document of one check are collected, turned into
    /// offers and planned together, so a dependency answered in another datagram still counts.
    pub fn from_answer(answer: &'a ModuleAnswer<'a>) -> Option<Offer<'a>> {
        if answer.status != body::Status::Update {
            return None;
        }
        Some(Offer {
            id: &answer.id,
            latest: answer.latest.as_ref()?.as_borrowed(),
            forced: answer.forced,
            full: answer.full,
            rollback: answer.rollback,
            requires: answer.requires.iter().map(|r| Requirement { id: &r.id, min: r.min.as_borrowed() }).collect(),
        })
    }
}

/// The downgrade rule: an offer of `latest` below the `installed` version is refused unless the
/// server signs it as a `rollback`.
pub fn is_refused_downgrade(latest: &Version<'_>, installed: &Version<'_>, rollback: bool) -> bool {
    latest < installed && !rollback
}

/// Whether `answer` offers a downgrade the client refuses: an `update` whose `latest` is below
/// the `installed` version, without a signed `rollback`.
pub fn refuses_downgrade(answer: &ModuleAnswer<'_>, installed: Option<&Version<'_>>) -> bool {
    match (answer.status, &answer.latest, installed) {
        (body::Status::Update, Some(latest), Some(installed)) => {
            is_refused_downgrade(latest, installed, answer.rollback)
        }
        _ => false,
    }
}

/// A dependency: module `id` at version `min` or newer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement<'a> {
    /// The required module.
    pub id: &'a str,
    /// The oldest acceptable version.
    pub min: Version<'a>,
}

/// The installed modules and their versions, as the client knows them.
pub trait InstalledModules {
    /// The installed version of module `id`, `None` if it is not installed.
    fn installed_version(&self, id: &str) -> Option<Version<'_>>;
}

impl<'v> InstalledModules for BTreeMap<String, Version<'v>> {
    fn installed_version(&self, id: &str) -> Option<Version<'_>> {
        self.get(id).map(Version::as_borrowed)
    }
}

impl<'v, S: BuildHasher> InstalledModules for HashMap<String, Version<'v>, S> {
    fn installed_version(&self, id: &str) -> Option<Version<'_>> {
        self.get(id).map(Version::as_borrowed)
    }
}

/// Which optional upgrades the user takes; forced ones are taken whatever the choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Choice<'c> {
    /// Every offered upgrade.
    All,
    /// Only the forced upgrades (and what they require).
    OnlyForced,
    /// The forced upgrades and the modules named here (identifiers not offered are ignored).
    Selected(&'c [&'c str]),
}

/// Why a module is in the plan.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Reason {
    /// The user's choice took it.
    Requested,
    /// The upgrade is forced.
    Forced,
    /// A module in the plan requires it (the first one found, in plan-building order).
    Dependency {
        /// The requiring module.
        of: String,
    },
}

/// One upgrade to perform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanStep<'a> {
    /// The module identifier.
    pub id: &'a str,
    /// The installed version, `None` for an install.
    pub from: Option<Version<'static>>,
    /// The version to upgrade to.
    pub to: Version<'a>,
    /// The offer was forced.
    pub forced: bool,
    /// Every file of the module is replaced.
    pub full: bool,
    /// Why the module is upgraded.
    pub reason: Reason,
}

/// Why an offer is not in the plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SkipReason {
    /// The installed version is the latest.
    UpToDate,
    /// The user did not choose it and nothing in the plan requires it.
    Declined,
    /// The offer is older than the installed version and not a signed rollback.
    DowngradeRefused {
        /// The installed version, newer than the offer.
        installed: Version<'static>,
    },
}

/// An offer left out of the plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped<'a> {
    /// The module identifier.
    pub id: &'a str,
    /// Why it was left out.
    pub reason: SkipReason,
}

/// The upgrades to perform, dependencies first, and the offers left out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpgradePlan<'a> {
    /// Upgrades in the order to perform them.
    pub steps: Vec<PlanStep<'a>>,
    /// Offers left out, in ascending identifier order.
    pub skipped: Vec<Skipped<'a>>,
}

/// Plans the upgrades, see the module documentation for the rules.
///
/// ```
/// use std::collections::BTreeMap;
/// use upgram_core::plan::{plan, Choice, Offer, Requirement};
/// use upgram_core::version::Version;
///
/// let v = |s| Version::parse(s).unwrap();
/// let offers = [
///     Offer { id: "plugin", latest: v("2"), forced: false, full: false, rollback: false,
///             requires: vec![Requirement { id: "main", min: v("3") }] },
///     Offer { id: "main", latest: v("3"), forced: false, full: false, rollback: false,
///             requires: vec![] },
/// ];
/// let installed: BTreeMap<String, Version<'static>> = BTreeMap::new();
/// let plan = plan(&offers, &installed, &Choice::Selected(&["plugin"]))?;
/// let order: Vec<&str> = plan.steps.iter().map(|s| s.id).collect();
/// assert_eq!(order, ["main", "plugin"]);
/// # Ok::<(), upgram_core::plan::PlanError>(())
/// ```
pub fn plan<'a>(
    offers: &[Offer<'a>],
    installed: &impl InstalledModules,
    choice: &Choice<'_>,
) -> Result<UpgradePlan<'a>, PlanError> {
    let mut planner = Planner::new(offers, installed, choice)?;
    planner.take_dependencies()?;
    let dependencies = planner.dependency_edges()?;
    let order = planner.upgrade_order(&dependencies)?;
    Ok(planner.assemble(&order))
}

/// What the rules decide for one offer before dependencies are considered.
enum Status {
    UpToDate,
    DowngradeRefused,
    Taken,
    Declined,
}

/// The planning state: offers by position, with their installed versions, classification and,
/// for taken offers, the reason they are taken.
struct Planner<'p, 'a, 'i, I> {
    offers: &'p [Offer<'a>],
    installed: &'i I,
    /// Offer positions by module identifier.
    index: HashMap<&'a str, usize>,
    /// Offer positions in ascending identifier order, for deterministic walks.
    by_id: Vec<usize>,
    installed_versions: Vec<Option<Version<'i>>>,
    statuses: Vec<Status>,
    reasons: Vec<Option<Reason>>,
}

impl<'p, 'a, 'i, I: InstalledModules> Planner<'p, 'a, 'i, I> {
    fn new(offers: &'p [Offer<'a>], installed: &'i I, choice: &Choice<'_>) -> Result<Self, PlanError> {
        let index = index_offers(offers)?;
        let mut by_id: Vec<usize> = (0..offers.len()).collect();
        by_id.sort_unstable_by_key(|&position| offers.get(position).map(|offer| offer.id));
        let selected: HashSet<&str> = match choice {
            Choice::Selected(ids) => ids.iter().copied().collect(),
            Choice::All | Choice::OnlyForced => HashSet::new(),
        };
        let installed_versions: Vec<Option<Version<'i>>> =
            offers.iter().map(|offer| installed.installed_version(offer.id)).collect();
        let statuses: Vec<Status> = offers
            .iter()
            .zip(&installed_versions)
            .map(|(offer, version)| classify(offer, version.as_ref(), choice, &selected))
            .collect();
        let reasons = offers.iter().zip(&statuses).map(|(offer, status)| initial_reason(offer, status)).collect();
        Ok(Planner { offers, installed, index, by_id, installed_versions, statuses, reasons })
    }

    fn offer(&self, position: usize) -> Option<&'p Offer<'a>> {
        self.offers.get(position)
    }

    fn is_taken(&self, position: usize) -> bool {
        matches!(self.reasons.get(position), Some(Some(_)))
    }

    /// Pulls in, breadth first from the modules taken by rule or choice, every offer needed
    /// for a requirement that the installed version does not satisfy.
    fn take_dependencies(&mut self) -> Result<(), PlanError> {
        let mut queue: VecDeque<usize> =
            self.by_id.iter().copied().filter(|&position| self.is_taken(position)).collect();
        while let Some(position) = queue.pop_front() {
            let Some(offer) = self.offer(position) else {
                continue;
            };
            for requirement in &offer.requires {
                if let Some(pulled) = self.satisfy(offer, requirement)? {
                    self.reasons[pulled] = Some(Reason::Dependency { of: offer.id.to_owned() });
                    queue.push_back(pulled);
                }
            }
        }
        Ok(())
    }

    /// Checks one requirement of a taken offer; returns the position of an offer to pull in,
    /// if one is needed. Requirements on taken offers are checked by [`Self::dependency_edges`].
    fn satisfy(&self, offer: &Offer<'a>, requirement: &Requirement<'a>) -> Result<Option<usize>, PlanError> {
        let position = self.index.get(requirement.id).copied();
        if position.is_some_and(|position| self.is_taken(position)) {
            return Ok(None);
        }
        let installed = self.installed.installed_version(requirement.id);
        if installed.as_ref().is_some_and(|v| *v >= requirement.min) {
            return Ok(None);
        }
        let Some(position) = position else {
            return match installed {
                None => Err(missing(offer, requirement)),
                Some(installed) => Err(unsatisfiable(offer, requirement, Some(&installed))),
            };
        };
        let dependency = self.offer(position);
        let eligible = matches!(self.statuses.get(position), Some(Status::Declined));
        match dependency {
            Some(dependency) if eligible && dependency.latest >= requirement.min => Ok(Some(position)),
            _ => {
                let offered = dependency.map(|d| &d.latest);
                let newest = match (offered, installed.as_ref()) {
                    (Some(offered), Some(installed)) => Some(offered.max(installed)),
                    (offered, installed) => offered.or(installed),
                };
                Err(unsatisfiable(offer, requirement, newest))
            }
        }
    }

    /// For each taken offer, the positions of the taken offers it requires (sorted, without
    /// repeats), after checking that each of them is recent enough.
    fn dependency_edges(&self) -> Result<Vec<Vec<usize>>, PlanError> {
        let mut dependencies = vec![Vec::new(); self.offers.len()];
        for &position in &self.by_id {
            let Some(offer) = self.offer(position).filter(|_| self.is_taken(position)) else {
                continue;
            };
            let mut edges = Vec::new();
            for requirement in &offer.requires {
                let Some(&required) = self.index.get(requirement.id) else {
                    continue;
                };
                let Some(dependency) = self.offer(required).filter(|_| self.is_taken(required)) else {
                    continue;
                };
                if dependency.latest < requirement.min {
                    return Err(unsatisfiable(offer, requirement, Some(&dependency.latest)));
                }
                edges.push(required);
            }
            edges.sort_unstable();
            edges.dedup();
            dependencies[position] = edges;
        }
        Ok(dependencies)
    }

    /// Kahn's algorithm over the taken offers: a module goes once all it requires has gone,
    /// the smallest identifier first among those free to go.
    fn upgrade_order(&self, dependencies: &[Vec<usize>]) -> Result<Vec<usize>, PlanError> {
        let mut dependents = vec![Vec::new(); self.offers.len()];
        let mut pending: Vec<usize> = dependencies.iter().map(Vec::len).collect();
        for (position, edges) in dependencies.iter().enumerate() {
            for &required in edges {
                dependents[required].push(position);
            }
        }
        let mut ready: BinaryHeap<Reverse<(&str, usize)>> = BinaryHeap::new();
        for &position in &self.by_id {
            if self.is_taken(position) && pending[position] == 0 {
                ready.push(Reverse((self.id(position), position)));
            }
        }
        let mut order = Vec::new();
        while let Some(Reverse((_, position))) = ready.pop() {
            order.push(position);
            for &dependent in &dependents[position] {
                pending[dependent] -= 1;
                if pending[dependent] == 0 {
                    ready.push(Reverse((self.id(dependent), dependent)));
                }
            }
        }
        let taken = self.reasons.iter().filter(|reason| reason.is_some()).count();
        if order.len() < taken {
            return Err(PlanError::Cycle { path: self.find_cycle(dependencies, &pending) });
        }
        Ok(order)
    }

    fn id(&self, position: usize) -> &'a str {
        self.offer(position).map_or("", |offer| offer.id)
    }

    /// Finds a cycle among the modules Kahn's algorithm could not order: each of them still
    /// waits for another, so following waits from any of them must come back to a module
    /// already seen. Reported from its smallest identifier, that module repeated at the end.
    fn find_cycle(&self, dependencies: &[Vec<usize>], pending: &[usize]) -> Vec<String> {
        let blocked = |position: usize| self.is_taken(position) && pending[position] > 0;
        let start = self.by_id.iter().copied().find(|&position| blocked(position));
        let mut path: Vec<usize> = Vec::new();
        let mut seen_at: HashMap<usize, usize> = HashMap::new();
        let mut current = start;
        while let Some(position) = current {
            if let Some(&first) = seen_at.get(&position) {
                return self.cycle_path(path.get(first..).unwrap_or_default());
            }
            seen_at.insert(position, path.len());
            path.push(position);
            current = dependencies[position]
                .iter()
                .copied()
                .filter(|&required| blocked(required))
                .min_by_key(|&required| self.id(required));
        }
        // Unreachable while the waits are consistent; report what was walked rather than panic.
        self.cycle_path(&path)
    }

    fn cycle_path(&self, cycle: &[usize]) -> Vec<String> {
        let smallest = (0..cycle.len()).min_by_key(|&i| self.id(cycle[i])).unwrap_or(0);
        let mut path: Vec<String> =
            cycle[smallest..].iter().chain(&cycle[..smallest]).map(|&position| self.id(position).to_owned()).collect();
        if let Some(first) = path.first().cloned() {
            path.push(first);
        }
        path
    }

    fn assemble(mut self, order: &[usize]) -> UpgradePlan<'a> {
        let skipped = self
            .by_id
            .iter()
            .filter(|&&position| !self.is_taken(position))
            .filter_map(|&position| {
                let reason = self.skip_reason(position)?;
                Some(Skipped { id: self.id(position), reason })
            })
            .collect();
        let mut steps = Vec::with_capacity(order.len());
        for &position in order {
            let (Some(offer), Some(reason)) = (self.offer(position), self.reasons[position].take()) else {
                continue;
            };
            steps.push(PlanStep {
                id: offer.id,
                from: self.installed_versions[position].clone().map(Version::into_owned),
                to: offer.latest.clone(),
                forced: offer.forced,
                full: offer.full,
                reason,
            });
        }
        UpgradePlan { steps, skipped }
    }

    fn skip_reason(&self, position: usize) -> Option<SkipReason> {
        match self.statuses.get(position)? {
            Status::UpToDate => Some(SkipReason::UpToDate),
            Status::Declined => Some(SkipReason::Declined),
            Status::DowngradeRefused => {
                let installed = self.installed_versions.get(position)?.clone()?;
                Some(SkipReason::DowngradeRefused { installed: installed.into_owned() })
            }
            Status::Taken => None,
        }
    }
}

fn classify(
    offer: &Offer<'_>,
    installed: Option<&Version<'_>>,
    choice: &Choice<'_>,
    selected: &HashSet<&str>,
) -> Status {
    if let Some(installed) = installed {
        if offer.latest == *installed {
            return Status::UpToDate;
        }
        if is_refused_downgrade(&offer.latest, installed, offer.rollback) {
            return Status::DowngradeRefused;
        }
    }
    let chosen = match choice {
        Choice::All => true,
        Choice::OnlyForced => false,
        Choice::Selected(_) => selected.contains(offer.id),
    };
    if offer.forced || chosen { Status::Taken } else { Status::Declined }
}

fn initial_reason(offer: &Offer<'_>, status: &Status) -> Option<Reason> {
    match status {
        Status::Taken if offer.forced => Some(Reason::Forced),
        Status::Taken => Some(Reason::Requested),
        _ => None,
    }
}

fn index_offers<'a>(offers: &[Offer<'a>]) -> Result<HashMap<&'a str, usize>, PlanError> {
    let mut index = HashMap::with_capacity(offers.len());
    for (position, offer) in offers.iter().enumerate() {
        if index.insert(offer.id, position).is_some() {
            return Err(PlanError::DuplicateOffer { id: offer.id.to_owned() });
        }
    }
    Ok(index)
}

fn missing(offer: &Offer<'_>, requirement: &Requirement<'_>) -> PlanError {
    PlanError::MissingDependency {
        module: offer.id.to_owned(),
        requires: requirement.id.to_owned(),
        min: requirement.min.to_string(),
    }
}

fn unsatisfiable(offer: &Offer<'_>, requirement: &Requirement<'_>, available: Option<&Version<'_>>) -> PlanError {
    PlanError::Unsatisfiable {
        module: offer.id.to_owned(),
        requires: requirement.id.to_owned(),
        min: requirement.min.to_string(),
        available: available.map(ToString::to_string),
    }
}
