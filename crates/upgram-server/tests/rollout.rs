//! Channels and phased rollouts on the server (SPEC.md §5.10, §6.4): the responder reads
//! schedules at the issue time and answers by bucket only through the rollouts; a withdrawn
//! release is rolled back completely; rollouts and channels survive the module file; and the
//! `promote` and `rollout` commands of the real binary change a real catalog folder.

use std::borrow::Cow;
use std::path::Path;
use std::process::Command;

use upgram_core::Sha256Digest;
use upgram_core::body::{Binding, FileAction, Query, QueryModule, Response, Status, UpgradeInfo};
use upgram_server::catalog::rollout::{HaltRule, Rollout, RolloutState, RolloutStep, parse_time};
use upgram_server::catalog::{self, Catalog, DeletedFile, Module, ReleaseFile, save_module, store_blob};
use upgram_server::responder::{AnswerCache, respond, respond_encoded};

mod common;
use common::{file, module, release, v};

const BIN: &str = env!("CARGO_BIN_EXE_upgram-server");

/// core 1.0 {a, b}; 2.0 {a changed, c added; b deleted} with `rollout`.
fn catalog(rollout: Rollout) -> Catalog {
    let mut r2 = release("2.0", vec![file("a.txt", "2.0"), file("c.txt", "2.0")]);
    r2.deleted = vec![DeletedFile { id: "b.txt".into(), version: v("2.0") }];
    r2.rollout = rollout;
    let core = module("core", vec![release("1.0", vec![file("a.txt", "1.0"), file("b.txt", "1.0")]), r2]);
    let mut catalog = Catalog::default();
    catalog.modules.insert(core.id.clone(), core);
    catalog
}

fn query(version: Option<&str>, channel: Option<&str>, bucket: Option<u8>) -> Query<'static> {
    Query {
        compact: false,
        channel: channel.map(|c| Cow::Owned(c.to_owned())),
        bucket,
        module_docs: false,
        modules: vec![QueryModule { id: "core".into(), version: version.map(v), files: vec![] }],
        patch: None,
    }
}

fn answer_bytes(catalog: &Catalog, query: &Query<'_>, issued: u64) -> Vec<u8> {
    let binding = Binding { query: Sha256Digest::of(b"q"), issued, expires: issued + 300 };
    respond(catalog, query, binding, "https://u.example/").to_vec()
}

/// (status, latest, rollback) of the answer for core.
fn outcome(catalog: &Catalog, query: &Query<'_>, issued: u64) -> (Status, Option<String>, bool) {
    let bytes = answer_bytes(catalog, query, issued);
    let response = Response::decode(&bytes).unwrap();
    let answer = &response.modules[0];
    (answer.status, answer.latest.as_ref().map(|l| l.to_string()), answer.rollback)
}

fn schedule(steps: &[(u8, Option<&str>)]) -> Rollout {
    Rollout {
        state: RolloutState::Rolling,
        schedule: steps
            .iter()
            .map(|(percent, at)| RolloutStep { at: at.map(|t| parse_time(t).unwrap()), percent: *percent })
            .collect(),
        halt: None,
        resumed: None,
    }
}

#[test]
fn the_schedule_is_read_at_the_issue_time() {
    let catalog = catalog(schedule(&[(10, Some("2026-12-01T10:00Z")), (50, Some("2026-12-02T10:00Z"))]));
    let first = parse_time("2026-12-01T10:00Z").unwrap();
    let second = parse_time("2026-12-02T10:00Z").unwrap();
    let update = (Status::Update, Some("2.0".to_owned()), false);
    let current = (Status::Current, Some("1.0".to_owned()), false);
    for (issued, bucket, expected) in [
        (first - 60, Some(0), &current),
        (first, Some(9), &update),
        (first, Some(10), &current),
        (second - 1, Some(49), &current),
        (second, Some(49), &update),
        (second, Some(50), &current),
        (second, None, &current),
    ] {
        assert_eq!(&outcome(&catalog, &query(Some("1.0"), None, bucket), issued), expected, "{issued} {bucket:?}");
    }
    // Not installed: the install answer follows the rollout too.
    assert_eq!(outcome(&catalog, &query(None, None, Some(9)), first).1.as_deref(), Some("2.0"));
    assert_eq!(outcome(&catalog, &query(None, None, Some(10)), first).1.as_deref(), Some("1.0"));
    // An installation already on 2.0 outside the rollout stays there.
    assert_eq!(
        outcome(&catalog, &query(Some("2.0"), None, Some(99)), first),
        (Status::Current, Some("2.0".into()), false)
    );
}

#[test]
fn answers_depend_on_the_bucket_only_through_the_rollouts() {
    let catalog = catalog(schedule(&[(30, None)]));
    let inside = answer_bytes(&catalog, &query(Some("1.0"), None, Some(0)), 600);
    let outside = answer_bytes(&catalog, &query(Some("1.0"), None, Some(99)), 600);
    assert_ne!(inside, outside);
    for bucket in 0..100u8 {
        let bytes = answer_bytes(&catalog, &query(Some("1.0"), None, Some(bucket)), 600);
        assert_eq!(&bytes, if bucket < 30 { &inside } else { &outside }, "bucket {bucket}");
    }
}

/// core as in [`catalog`] with 2.0 on a schedule; tools 1.1 only on beta and requiring core 2.0
/// (so whether tools can be upgraded depends on core's rollout too).
fn two_module_catalog(rollout: Rollout) -> Catalog {
    let mut catalog = catalog(rollout);
    let mut tools =
        module("tools", vec![release("1.0", vec![file("t", "1.0")]), release("1.1", vec![file("t", "1.1")])]);
    tools.releases[1].channels = vec!["beta".into()];
    tools.releases[1].requires = vec![("core".into(), v("2.0"))];
    catalog.modules.insert(tools.id.clone(), tools);
    catalog
}

#[test]
fn kept_module_answers_are_only_served_to_the_queries_they_were_made_for() {
    let first = parse_time("2026-12-01T10:00Z").unwrap();
    let second = parse_time("2026-12-02T10:00Z").unwrap();
    let catalog = two_module_catalog(schedule(&[(10, Some("2026-12-01T10:00Z")), (50, Some("2026-12-02T10:00Z"))]));
    let mut cache = AnswerCache::default();
    let mut distinct = std::collections::BTreeSet::new();
    let mut compared = 0;
    // Issue times on both sides of the 50 % step, buckets on both sides of 10 % and 50 %, and
    // each channel; one cache for all, as one server worker has.
    for issued in [first, second - 1, second, second + 60] {
        for channel in [None, Some("stable"), Some("beta")] {
            for bucket in [Some(9), Some(10), Some(49), Some(50), Some(0), Some(99), None] {
                for compact in [false, true] {
                    for versions in [[Some("1.0"), Some("1.0")], [Some("2.0"), Some("1.1")], [None, None]] {
                        let modules = vec![
                            QueryModule { id: "core".into(), version: versions[0].map(v), files: vec![] },
                            QueryModule { id: "tools".into(), version: versions[1].map(v), files: vec![] },
                        ];
                        let query = Query {
                            channel: channel.map(|c| Cow::Owned(c.to_owned())),
                            bucket,
                            compact,
                            ..Query::new(modules)
                        };
                        let binding = Binding { query: Sha256Digest::of(b"q"), issued, expires: issued + 300 };
                        let built = respond(&catalog, &query, binding, "https://u.example/").to_vec();
                        let mut assembled = Vec::new();
                        respond_encoded(&catalog, 7, &query, binding, "https://u.example/", &mut cache, &mut assembled);
                        assert_eq!(
                            String::from_utf8_lossy(&assembled),
                            String::from_utf8_lossy(&built),
                            "issued {issued}, channel {channel:?}, bucket {bucket:?}, compact {compact}, {versions:?}"
                        );
                        if compact {
                            // A module not offered its newer release is "current" at the version
                            // asked: left out of the compact answer exactly when that is all its
                            // full answer says.
                            let full = respond(&catalog, &Query { compact: false, ..query.clone() }, binding, "u/");
                            let compact_answer = respond(&catalog, &query, binding, "u/");
                            let expanded = upgram_core::merge::expand_compact(compact_answer, &query).unwrap();
                            assert_eq!(expanded.modules, full.modules, "{issued} {channel:?} {bucket:?} {versions:?}");
                        }
                        distinct.insert(built[built.iter().position(|&b| b == b'>').unwrap_or(0)..].to_vec());
                        compared += 1;
                    }
                }
            }
        }
    }
    // The answers really differ by channel, bucket and issue time (else the test proves nothing).
    assert!(distinct.len() >= 8, "{} distinct answers of {compared}", distinct.len());
    // Buckets that agree on every rollout share kept answers: 0 after 9, 99 after 50. Each is
    // asked twice: an answer is kept from the second time its question comes.
    let kept = |cache: &mut AnswerCache, bucket: u8| {
        let query = Query { bucket: Some(bucket), ..query(Some("1.0"), Some("beta"), None) };
        let binding = Binding { query: Sha256Digest::of(b"q"), issued: first, expires: first + 300 };
        for _ in 0..2 {
            respond_encoded(&catalog, 7, &query, binding, "https://u.example/", cache, &mut Vec::new());
        }
        cache.kept().0
    };
    let mut cache = AnswerCache::default();
    let after_nine = kept(&mut cache, 9);
    assert_eq!(kept(&mut cache, 0), after_nine, "bucket 0 answered from bucket 9's kept answer");
    let after_fifty = kept(&mut cache, 50);
    assert!(after_fifty > after_nine, "bucket 50 is outside the 10 % rollout: an answer of its own");
    assert_eq!(kept(&mut cache, 99), after_fifty, "bucket 99 answered from bucket 50's kept answer");
}

#[test]
fn channels_choose_the_releases() {
    let mut catalog = catalog(Rollout::default());
    let core = catalog.modules.get_mut("core").unwrap();
    core.releases[1].channels = vec!["beta".into()];
    assert_eq!(outcome(&catalog, &query(Some("1.0"), None, Some(0)), 0).1.as_deref(), Some("1.0"));
    assert_eq!(outcome(&catalog, &query(Some("1.0"), Some("stable"), Some(0)), 0).1.as_deref(), Some("1.0"));
    assert_eq!(outcome(&catalog, &query(Some("1.0"), Some("beta"), Some(0)), 0).1.as_deref(), Some("2.0"));
    // A channel without any release: error 20 for an install, nothing to do for an installation.
    let (status, ..) = outcome(&catalog, &query(None, Some("nightly"), Some(0)), 0);
    assert_eq!(status, Status::Error);
    assert_eq!(
        outcome(&catalog, &query(Some("1.0"), Some("nightly"), None), 0),
        (Status::Current, Some("1.0".into()), false)
    );
}

#[test]
fn a_withdrawn_release_is_rolled_back_completely() {
    let catalog = catalog(Rollout { state: RolloutState::Withdrawn, schedule: vec![], halt: None, resumed: None });
    let bytes = answer_bytes(&catalog, &query(Some("2.0"), None, None), 0);
    let response = Response::decode(&bytes).unwrap();
    let answer = &response.modules[0];
    assert_eq!((answer.status, answer.rollback, answer.full), (Status::Update, true, true));
    assert_eq!(answer.latest.as_ref().map(|l| l.to_string()).as_deref(), Some("1.0"));
    let UpgradeInfo::Files(entries) = &answer.upgrade else { panic!("a file list") };
    let mut seen: Vec<(String, &str)> = entries
        .iter()
        .map(|e| (e.id.to_string(), if matches!(e.action, FileAction::Delete) { "delete" } else { "replace" }))
        .collect();
    seen.sort();
    assert_eq!(seen, [("a.txt".into(), "replace"), ("b.txt".into(), "replace"), ("c.txt".into(), "delete")]);
    // Installations on 1.0 are not offered the withdrawn release.
    assert_eq!(outcome(&catalog, &query(Some("1.0"), None, Some(0)), 0), (Status::Current, Some("1.0".into()), false));
    // A paused release is not rolled back.
    let paused = self::catalog(Rollout { state: RolloutState::Paused, schedule: vec![], halt: None, resumed: None });
    assert_eq!(outcome(&paused, &query(Some("2.0"), None, Some(0)), 0), (Status::Current, Some("2.0".into()), false));
}

fn stored_module(dir: &Path) -> Module {
    let stored = |id: &str, version: &str| ReleaseFile {
        id: id.into(),
        version: v(version),
        blob: store_blob(dir, format!("{id} {version}").as_bytes()).unwrap(),
        executable: false,
    };
    let mut r1 = release("1.0", vec![stored("a.txt", "1.0")]);
    r1.channels = vec!["beta".into(), "stable".into()];
    let mut r2 = release("2.0", vec![stored("a.txt", "2.0")]);
    r2.rollout = Rollout {
        state: RolloutState::Paused,
        schedule: vec![
            RolloutStep { at: None, percent: 1 },
            RolloutStep { at: Some(parse_time("2026-12-01T10:00Z").unwrap()), percent: 10 },
        ],
        halt: Some(HaltRule { share_permille: 300, window: 40, min: 10 }),
        resumed: Some(parse_time("2026-11-30T08:00Z").unwrap()),
    };
    let mut r3 = release("3.0", vec![stored("a.txt", "3.0")]);
    r3.rollout.state = RolloutState::Withdrawn;
    module("core", vec![r1, r2, r3])
}

#[test]
fn channels_and_rollouts_survive_the_module_file() {
    let dir = tempfile::tempdir().unwrap();
    let module = stored_module(dir.path());
    save_module(dir.path(), &module).unwrap();
    let loaded = catalog::load(dir.path()).unwrap();
    assert_eq!(loaded.modules["core"], module);
    let text = std::fs::read_to_string(dir.path().join("modules/core.toml")).unwrap();
    assert!(text.contains("at = 2026-12-01T10:00:00Z"), "{text}");

    for (from, to, field) in [
        ("state = \"paused\"", "state = \"halted-by-hand\"", "state"),
        ("percent = 10", "percent = 101", "percent"),
        ("halt = { share = 0.3", "halt = { share = 1.3", "halt"),
        ("window = 40, min = 10", "window = 4, min = 10", "halt"),
        ("percent = 10", "percent = 0", "schedule"),
        ("channels = [\"beta\", \"stable\"]", "channels = [\"beta\", \"beta\"]", "channels"),
        ("channels = [\"beta\", \"stable\"]", "channels = []", "channels"),
        ("channels = [\"beta\", \"stable\"]", "channels = [\"a/b\"]", "channels"),
    ] {
        assert!(text.contains(from), "{from} in {text}");
        std::fs::write(dir.path().join("modules/core.toml"), text.replace(from, to)).unwrap();
        let error = catalog::load(dir.path()).unwrap_err().to_string();
        assert!(error.contains(field) && error.contains("core.toml"), "{to}: {error}");
    }
}

fn run(args: &[&str]) -> (bool, String) {
    let output = Command::new(BIN).args(args).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status.success(), text)
}

#[test]
fn the_commands_change_the_catalog() {
    let dir = tempfile::tempdir().unwrap();
    let catalog_dir = dir.path().join("catalog");
    let catalog = catalog_dir.to_str().unwrap();
    for (version, content) in [("1.0", "one"), ("2.0", "two")] {
        let from = dir.path().join(version);
        std::fs::create_dir_all(&from).unwrap();
        std::fs::write(from.join("a.txt"), content).unwrap();
        let mut args = vec!["publish", "--catalog", catalog, "--module", "core", "--version", version];
        args.extend(["--from", from.to_str().unwrap()]);
        if version == "2.0" {
            args.extend(["--channel", "beta", "--schedule", "5%"]);
        }
        let (ok, text) = run(&args);
        assert!(ok, "{text}");
    }
    let release = ["--catalog", catalog, "--module", "core", "--version", "2.0"];
    let with = |command: &[&'static str], extra: &[&str]| {
        let mut args: Vec<String> = command.iter().map(|s| (*s).to_owned()).collect();
        args.extend(release.iter().map(|s| (*s).to_owned()));
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run(&args)
    };
    let (ok, text) = with(&["rollout", "status"], &[]);
    assert!(ok && text.contains("core 2.0: rolling, 5% of installations, channels beta"), "{text}");
    let (ok, text) = with(&["promote"], &["--channel", "stable"]);
    assert!(ok && text.contains("channels beta,stable"), "{text}");
    let (ok, text) = with(&["rollout", "set"], &["--schedule", "20%,60%@2026-12-01T10:00Z"]);
    assert!(ok && text.contains("schedule 20%,60%@2026-12-01T10:00:00Z"), "{text}");
    let (ok, text) = with(&["rollout", "set"], &["--percent", "100"]);
    assert!(ok && text.contains("complete, 100%"), "{text}");
    let (ok, text) = with(&["rollout", "pause"], &[]);
    assert!(ok && text.contains("paused"), "{text}");
    let (ok, text) = with(&["rollout", "resume"], &[]);
    assert!(ok && text.contains("complete"), "{text}");
    let (ok, text) = with(&["rollout", "withdraw"], &[]);
    assert!(ok && text.contains("withdrawn"), "{text}");
    let loaded = catalog::load(&catalog_dir).unwrap();
    assert_eq!(loaded.modules["core"].releases[1].rollout.state, RolloutState::Withdrawn);

    // Refusals: the first release has nothing to go back to; unknown releases; bad values.
    let (ok, text) = run(&["rollout", "withdraw", "--catalog", catalog, "--module", "core", "--version", "1.0"]);
    assert!(!ok && text.contains("no earlier release"), "{text}");
    let (ok, text) = run(&["rollout", "pause", "--catalog", catalog, "--module", "core", "--version", "9"]);
    assert!(!ok && text.contains("no release 9"), "{text}");
    let (ok, text) = with(&["rollout", "set"], &["--schedule", "50%@2026-12-02T10:00Z,10%@2026-12-03T10:00Z"]);
    assert!(!ok && text.contains("only grows"), "{text}");
    let (ok, text) = with(&["promote"], &["--channel", "no/such"]);
    assert!(!ok && text.contains("not a channel name"), "{text}");
    let (ok, text) = run(&["rollout", "status", "--catalog", catalog, "--module", "core"]);
    assert!(ok && text.lines().count() == 2 && text.contains("core 1.0: complete"), "{text}");
}
