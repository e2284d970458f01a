//! §5 Semantics: dependencies and upgrade order.

use std::collections::{BTreeMap, HashMap};

use proptest::prelude::*;
use upgram_core::plan::{
    Choice, InstalledModules, Offer, PlanError, PlanStep, Reason, Requirement, SkipReason, Skipped, UpgradePlan, plan,
};
use upgram_core::version::Version;

fn v(text: &str) -> Version<'_> {
    Version::parse(text).unwrap()
}

fn offer<'a>(id: &'a str, latest: &'a str, requires: &[(&'a str, &'a str)]) -> Offer<'a> {
    Offer {
        id,
        latest: v(latest),
        forced: false,
        full: false,
        rollback: false,
        requires: requires.iter().map(|&(id, min)| Requirement { id, min: v(min) }).collect(),
    }
}

fn forced(mut offer: Offer<'_>) -> Offer<'_> {
    offer.forced = true;
    offer
}

fn installed(modules: &[(&str, &str)]) -> BTreeMap<String, Version<'static>> {
    modules.iter().map(|&(id, version)| (id.to_owned(), version.parse().unwrap())).collect()
}

fn order<'a>(plan: &UpgradePlan<'a>) -> Vec<&'a str> {
    plan.steps.iter().map(|step| step.id).collect()
}

fn nothing_installed() -> BTreeMap<String, Version<'static>> {
    BTreeMap::new()
}

#[test]
fn chain_goes_dependencies_first() {
    let offers = [
        offer("plugin", "3.0", &[("main-module", "2.0")]),
        offer("main-module", "2.0", &[("main-program", "1.5")]),
        offer("main-program", "1.5", &[]),
    ];
    let installed = installed(&[("plugin", "2.9"), ("main-module", "1.0"), ("main-program", "1.0")]);
    let result = plan(&offers, &installed, &Choice::All).unwrap();
    assert_eq!(order(&result), ["main-program", "main-module", "plugin"]);
    assert_eq!(result.steps[0].from, Some(v("1.0").into_owned()));
    assert_eq!(result.steps[0].to, v("1.5"));
    assert!(result.skipped.is_empty());
}

#[test]
fn chain_pulls_declined_dependencies() {
    let offers = [
        offer("plugin", "3.0", &[("main-module", "2.0")]),
        offer("main-module", "2.0", &[("main-program", "1.5")]),
        offer("main-program", "1.5", &[]),
        offer("unrelated", "9", &[]),
    ];
    let result = plan(&offers, &nothing_installed(), &Choice::Selected(&["plugin"])).unwrap();
    assert_eq!(
        result.steps,
        [
            PlanStep {
                id: "main-program",
                from: None,
                to: v("1.5"),
                forced: false,
                full: false,
                reason: Reason::Dependency { of: "main-module".into() },
            },
            PlanStep {
                id: "main-module",
                from: None,
                to: v("2.0"),
                forced: false,
                full: false,
                reason: Reason::Dependency { of: "plugin".into() },
            },
            PlanStep { id: "plugin", from: None, to: v("3.0"), forced: false, full: false, reason: Reason::Requested },
        ]
    );
    assert_eq!(result.skipped, [Skipped { id: "unrelated", reason: SkipReason::Declined }]);
}

#[test]
fn diamond() {
    let offers = [
        offer("a", "1", &[("b", "1"), ("c", "1")]),
        offer("c", "1", &[("d", "1")]),
        offer("b", "1", &[("d", "1")]),
        offer("d", "1", &[]),
    ];
    let result = plan(&offers, &nothing_installed(), &Choice::All).unwrap();
    assert_eq!(order(&result), ["d", "b", "c", "a"]);
}

#[test]
fn independent_modules_go_in_ascending_id_order() {
    let offers = [offer("zeta", "1", &[]), offer("alpha", "1", &[]), offer("mid", "1", &[])];
    let result = plan(&offers, &nothing_installed(), &Choice::All).unwrap();
    assert_eq!(order(&result), ["alpha", "mid", "zeta"]);
}

#[test]
fn cycles_are_reported_in_order() {
    let cases: Vec<(Vec<Offer<'static>>, Vec<&str>)> = vec![
        (vec![offer("a", "1", &[("a", "1")])], vec!["a", "a"]),
        (vec![offer("b", "1", &[("a", "1")]), offer("a", "1", &[("b", "1")])], vec!["a", "b", "a"]),
        (
            vec![offer("c", "1", &[("a", "1")]), offer("a", "1", &[("b", "1")]), offer("b", "1", &[("c", "1")])],
            vec!["a", "b", "c", "a"],
        ),
        (
            // A module outside the cycle that waits for it is not part of the path.
            vec![
                offer("0-outside", "1", &[("y", "1")]),
                offer("y", "1", &[("x", "1")]),
                offer("x", "1", &[("y", "1")]),
            ],
            vec!["x", "y", "x"],
        ),
    ];
    for (offers, expected) in cases {
        let error = plan(&offers, &nothing_installed(), &Choice::All).unwrap_err();
        let expected: Vec<String> = expected.into_iter().map(String::from).collect();
        assert_eq!(error, PlanError::Cycle { path: expected.clone() });
        assert_eq!(error.to_string(), format!("dependency cycle: {}", expected.join(" -> ")));
    }
}

#[test]
fn self_requirement_of_a_declined_offer_is_no_error() {
    let offers = [offer("a", "1", &[("a", "1")]), offer("b", "1", &[])];
    let result = plan(&offers, &nothing_installed(), &Choice::Selected(&["b"])).unwrap();
    assert_eq!(order(&result), ["b"]);
}

#[test]
fn missing_dependency() {
    let offers = [offer("plugin", "2", &[("runtime", "1.4")])];
    assert_eq!(
        plan(&offers, &nothing_installed(), &Choice::All),
        Err(PlanError::MissingDependency { module: "plugin".into(), requires: "runtime".into(), min: "1.4".into() })
    );
}

#[test]
fn unsatisfiable_requirements() {
    /// Offers, installed modules, and the version the error should report as available.
    type Case = (Vec<Offer<'static>>, Vec<(&'static str, &'static str)>, Option<&'static str>);
    let cases: Vec<Case> = vec![
        // Installed too old, nothing offered.
        (vec![offer("plugin", "2", &[("runtime", "1.4")])], vec![("runtime", "1.3")], Some("1.3")),
        // Offered too old.
        (vec![offer("plugin", "2", &[("runtime", "1.4")]), offer("runtime", "1.3.9", &[])], vec![], Some("1.3.9")),
        // Offered too old, installed older.
        (
            vec![offer("plugin", "2", &[("runtime", "1.4")]), offer("runtime", "1.3.9", &[])],
            vec![("runtime", "1.0")],
            Some("1.3.9"),
        ),
        // Offer up to date but too old.
        (
            vec![offer("plugin", "2", &[("runtime", "1.4")]), offer("runtime", "1.3", &[])],
            vec![("runtime", "1.3")],
            Some("1.3"),
        ),
        // Offer is a refused downgrade: the installed version is the newest available.
        (
            vec![offer("plugin", "2", &[("runtime", "1.4")]), offer("runtime", "1.1", &[])],
            vec![("runtime", "1.3")],
            Some("1.3"),
        ),
        // The required module is taken, but its rollback is older than required.
        (
            vec![offer("plugin", "2", &[("runtime", "1.4")]), Offer { rollback: true, ..offer("runtime", "1.1", &[]) }],
            vec![("runtime", "1.5")],
            Some("1.1"),
        ),
    ];
    for (offers, installed_modules, available) in cases {
        let result = plan(&offers, &installed(&installed_modules), &Choice::All);
        assert_eq!(
            result,
            Err(PlanError::Unsatisfiable {
                module: "plugin".into(),
                requires: "runtime".into(),
                min: "1.4".into(),
                available: available.map(String::from),
            }),
            "offers {offers:?}, installed {installed_modules:?}"
        );
    }
}

#[test]
fn dependency_satisfied_by_installed_version_needs_no_step() {
    let offers = [offer("plugin", "2", &[("runtime", "1.4")]), offer("runtime", "1.9", &[])];
    let installed = installed(&[("runtime", "1.4.0")]);
    let result = plan(&offers, &installed, &Choice::Selected(&["plugin"])).unwrap();
    assert_eq!(order(&result), ["plugin"]);
    assert_eq!(result.skipped, [Skipped { id: "runtime", reason: SkipReason::Declined }]);
}

#[test]
fn dependency_taken_anyway_still_goes_first() {
    let offers = [offer("plugin", "2", &[("runtime", "1.4")]), offer("runtime", "1.9", &[])];
    let installed = installed(&[("runtime", "1.5")]);
    let result = plan(&offers, &installed, &Choice::All).unwrap();
    assert_eq!(order(&result), ["runtime", "plugin"]);
    assert_eq!(result.steps[0].reason, Reason::Requested);
}

#[test]
fn forced_is_always_taken_with_its_dependencies() {
    let offers = [
        forced(offer("security-fix", "5", &[("crypto", "2")])),
        offer("crypto", "2.1", &[]),
        offer("cosmetic", "7", &[]),
    ];
    let installed = installed(&[("security-fix", "4"), ("crypto", "1"), ("cosmetic", "6")]);
    for choice in [Choice::OnlyForced, Choice::Selected(&[]), Choice::Selected(&["other"])] {
        let result = plan(&offers, &installed, &choice).unwrap();
        assert_eq!(order(&result), ["crypto", "security-fix"]);
        assert_eq!(result.steps[1].reason, Reason::Forced);
        assert!(result.steps[1].forced);
        assert_eq!(result.steps[0].reason, Reason::Dependency { of: "security-fix".into() });
        assert_eq!(result.skipped, [Skipped { id: "cosmetic", reason: SkipReason::Declined }]);
    }
}

#[test]
fn declined_optional_upgrade() {
    let offers = [offer("a", "2", &[]), offer("b", "2", &[])];
    let installed = installed(&[("a", "1"), ("b", "1")]);
    let result = plan(&offers, &installed, &Choice::Selected(&["b"])).unwrap();
    assert_eq!(order(&result), ["b"]);
    assert_eq!(result.skipped, [Skipped { id: "a", reason: SkipReason::Declined }]);
    let none = plan(&offers, &installed, &Choice::OnlyForced).unwrap();
    assert!(none.steps.is_empty());
    assert_eq!(none.skipped.len(), 2);
}

#[test]
fn up_to_date_downgrade_and_rollback() {
    let offers = [
        offer("current", "1.2", &[]),
        forced(offer("downgrade", "1.0", &[])),
        Offer { rollback: true, full: true, ..offer("rollback", "1.0", &[]) },
    ];
    let installed = installed(&[("current", "1.2.0"), ("downgrade", "1.1"), ("rollback", "1.1")]);
    let result = plan(&offers, &installed, &Choice::All).unwrap();
    assert_eq!(
        result.steps,
        [PlanStep {
            id: "rollback",
            from: Some("1.1".parse().unwrap()),
            to: v("1.0"),
            forced: false,
            full: true,
            reason: Reason::Requested,
        }]
    );
    assert_eq!(
        result.skipped,
        [
            Skipped { id: "current", reason: SkipReason::UpToDate },
            Skipped { id: "downgrade", reason: SkipReason::DowngradeRefused { installed: "1.1".parse().unwrap() } },
        ]
    );
}

#[test]
fn duplicate_offer() {
    let offers = [offer("a", "1", &[]), offer("b", "1", &[]), offer("a", "2", &[])];
    assert_eq!(plan(&offers, &nothing_installed(), &Choice::All), Err(PlanError::DuplicateOffer { id: "a".into() }));
}

#[test]
fn hash_map_of_installed_modules() {
    let mut installed: HashMap<String, Version<'static>> = HashMap::new();
    installed.insert("a".into(), "1".parse().unwrap());
    assert_eq!(installed.installed_version("a"), Some(v("1.0")));
    assert_eq!(installed.installed_version("b"), None);
    let offers = [offer("a", "1.0.0", &[])];
    let result = plan(&offers, &installed, &Choice::All).unwrap();
    assert_eq!(result.skipped, [Skipped { id: "a", reason: SkipReason::UpToDate }]);
}

#[test]
fn long_chain_does_not_overflow_the_stack() {
    const LEN: usize = 100_000;
    let ids: Vec<String> = (0..LEN).map(|i| format!("m{i:06}")).collect();
    let offers: Vec<Offer<'_>> = (0..LEN)
        .map(|i| Offer {
            id: &ids[i],
            latest: v("1"),
            forced: false,
            full: false,
            rollback: false,
            requires: ids.get(i + 1).map(|next| Requirement { id: next, min: v("1") }).into_iter().collect(),
        })
        .collect();
    let result = plan(&offers, &nothing_installed(), &Choice::Selected(&["m000000"])).unwrap();
    assert_eq!(result.steps.len(), LEN);
    assert!(result.steps.iter().rev().map(|s| s.id).eq(ids.iter().map(String::as_str)));

    // The same chain closed into a cycle.
    let mut cyclic = offers;
    cyclic[LEN - 1].requires.push(Requirement { id: &ids[0], min: v("1") });
    let Err(PlanError::Cycle { path }) = plan(&cyclic, &nothing_installed(), &Choice::All) else {
        panic!("expected a cycle");
    };
    assert_eq!(path.len(), LEN + 1);
    assert_eq!(path.first(), path.last());
}

type Dag = (Vec<Vec<usize>>, Vec<bool>, Vec<bool>, Vec<usize>);

/// A random DAG: module i may require only modules with a larger index (index n stands for
/// a module that is only installed), with forced and chosen flags and a permutation that
/// names the modules so that identifier order is unrelated to the dependency order.
fn dag() -> impl Strategy<Value = Dag> {
    (1usize..25).prop_flat_map(|n| {
        let edges = (0..n).map(|i| prop::collection::vec(i + 1..n + 1, 0..4)).collect::<Vec<_>>();
        (
            edges,
            prop::collection::vec(any::<bool>(), n),
            prop::collection::vec(any::<bool>(), n),
            Just((0..n).collect::<Vec<_>>()).prop_shuffle(),
        )
    })
}

proptest! {
    #[test]
    fn steps_come_after_their_dependencies((edges, forced_flags, chosen, names) in dag()) {
        let n = edges.len();
        let ids: Vec<String> = names.iter().map(|k| format!("m{k:02}")).collect();
        let name = |j: usize| if j < n { ids[j].as_str() } else { "installed-only" };
        let offers: Vec<Offer<'_>> = (0..n)
            .map(|i| Offer {
                id: &ids[i],
                latest: v("2"),
                forced: forced_flags[i],
                full: false,
                rollback: false,
                requires: edges[i].iter().map(|&j| Requirement { id: name(j), min: v("2") }).collect(),
            })
            .collect();
        let selected: Vec<&str> = (0..n).filter(|&i| chosen[i]).map(|i| ids[i].as_str()).collect();
        let installed = installed(&[("installed-only", "3")]);
        let result = plan(&offers, &installed, &Choice::Selected(&selected)).unwrap();

        let position: HashMap<&str, usize> =
            result.steps.iter().enumerate().map(|(k, step)| (step.id, k)).collect();
        for (k, step) in result.steps.iter().enumerate() {
            let i = ids.iter().position(|id| id == step.id).unwrap();
            for &j in &edges[i] {
                if j < n {
                    let dependency = position.get(ids[j].as_str());
                    prop_assert!(dependency.is_some_and(|&d| d < k), "{} before {}", ids[j], step.id);
                }
            }
        }
        for i in 0..n {
            if forced_flags[i] || chosen[i] {
                prop_assert!(position.contains_key(ids[i].as_str()));
            }
        }
        prop_assert_eq!(result.steps.len() + result.skipped.len(), n);
    }
}
