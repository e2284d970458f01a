//! The responder on its own (SPEC.md §5.2-§5.7): catalogs built in code, queries in, answers
//! checked field by field. No sockets, no files.

use std::borrow::Cow;

use upgram_core::Sha256Digest;
use upgram_core::body::{
    Binding, FileAction, FileMode, FilePatch, ModuleAnswer, Query, QueryFile, QueryModule, Response, Status,
    UpgradeInfo,
};
use upgram_server::catalog::{Catalog, DeletedFile, DeltaRef, Package, PatchRef};
use upgram_server::responder::{AnswerCache, LeastLengths, least_answer_len, respond, respond_encoded};

mod common;
use common::{blob, file, module, release, v};

/// core: 1.0 {a, b, c.dat}; 1.1 {a changed, b, d added, c.dat deleted}, forced; 1.2 {b changed}.
fn catalog() -> Catalog {
    let mut r11 = release("1.1", vec![file("a.txt", "1.1"), file("b.txt", "1.0"), file("d.txt", "1.1")]);
    r11.forced = true;
    r11.deleted = vec![DeletedFile { id: "c.dat".into(), version: v("1.1") }];
    let core = module(
        "core",
        vec![
            release("1.0", vec![file("a.txt", "1.0"), file("b.txt", "1.0"), file("c.dat", "1.0")]),
            r11,
            release("1.2", vec![file("a.txt", "1.1"), file("b.txt", "1.2"), file("d.txt", "1.1")]),
        ],
    );
    let mut db = module(
        "db",
        vec![
            release("1", vec![file("sig.rec", "1")]),
            release("2", vec![file("sig.rec", "2")]),
            release("3", vec![file("sig.rec", "3"), file("readme.txt", "3")]),
        ],
    );
    db.releases[2].deltas = vec![DeltaRef { file: "sig.rec".into(), from: v("2"), blob: blob("delta 2->3") }];
    db.frequent = vec!["sig.rec".into()];
    let mut catalog = Catalog::default();
    for m in [core, db] {
        catalog.modules.insert(m.id.clone(), m);
    }
    catalog
}

fn ask(modules: Vec<QueryModule<'static>>) -> Query<'static> {
    Query::new(modules)
}

fn qm(id: &str, version: Option<&str>, files: &[(&str, &str)]) -> QueryModule<'static> {
    QueryModule {
        id: Cow::Owned(id.into()),
        version: version.map(v),
        files: files.iter().map(|(id, ver)| QueryFile { id: Cow::Owned((*id).into()), version: v(ver) }).collect(),
    }
}

fn binding() -> Binding {
    Binding { query: Sha256Digest::of(b"q"), issued: 100, expires: 400 }
}

/// Responds, then sends the answer through the encoder and decoder: what a client would see.
/// (The bytes are leaked so the decoded answer can outlive this call; tests only.)
fn answer_for(catalog: &Catalog, query: &Query<'_>) -> Response<'static> {
    let bytes: &'static [u8] =
        Box::leak(respond(catalog, query, binding(), "https://u.example/").to_vec().into_boxed_slice());
    Response::decode(bytes).expect("the responder writes valid bodies")
}

fn files(answer: &ModuleAnswer<'_>) -> Vec<(String, String, FileMode)> {
    match &answer.upgrade {
        UpgradeInfo::Files(files) => {
            files.iter().map(|f| (f.id.to_string(), f.version.to_string(), f.action.mode())).collect()
        }
        _ => vec![],
    }
}

#[test]
fn unknown_current_and_module_level_upgrade() {
    let catalog = catalog();
    let query = ask(vec![qm("nope", Some("1"), &[]), qm("core", Some("1.2"), &[]), qm("core", Some("1.0"), &[])]);
    let response = answer_for(&catalog, &query);
    assert_eq!(response.modules[0].status, Status::Unknown);
    assert_eq!(response.modules[1].status, Status::Current);
    assert_eq!(files(&response.modules[1]), vec![]);
    let up = &response.modules[2];
    assert_eq!(up.status, Status::Update);
    assert_eq!(up.latest.as_ref().map(|l| l.to_string()), Some("1.2".into()));
    assert!(up.forced, "1.1 is forced: a later optional release never hides it");
    assert_eq!(up.floor.as_ref().map(|f| f.to_string()), Some("1.1".into()));
    assert_eq!(
        files(up),
        vec![
            ("a.txt".into(), "1.1".into(), FileMode::Replace),
            ("b.txt".into(), "1.2".into(), FileMode::Replace),
            ("d.txt".into(), "1.1".into(), FileMode::Replace),
            ("c.dat".into(), "1.2".into(), FileMode::Delete),
        ]
    );
    let from_11 = answer_for(&catalog, &ask(vec![qm("core", Some("1.1"), &[])]));
    assert_eq!(files(&from_11.modules[0]), vec![("b.txt".into(), "1.2".into(), FileMode::Replace)]);
    assert!(!from_11.modules[0].forced, "no forced release in (1.1, 1.2]");
}

#[test]
fn file_level_queries_list_only_differing_files() {
    let catalog = catalog();
    let query =
        ask(vec![qm("core", Some("1.2"), &[("a.txt", "1.1"), ("b.txt", "1.0"), ("c.dat", "1.0"), ("zzz", "1")])]);
    let response = answer_for(&catalog, &query);
    let current = &response.modules[0];
    assert_eq!(current.status, Status::Current);
    assert_eq!(
        files(current),
        vec![("b.txt".into(), "1.2".into(), FileMode::Replace), ("c.dat".into(), "1.2".into(), FileMode::Delete)],
        "a.txt is up to date; zzz was never part of the module"
    );
    // During an upgrade, the file entry's version decides for that file.
    let response = answer_for(&catalog, &ask(vec![qm("core", Some("1.0"), &[("a.txt", "1.1")])]));
    assert!(!files(&response.modules[0]).iter().any(|(id, _, _)| id == "a.txt"), "the client has a.txt 1.1");
}

#[test]
fn record_files_get_deltas_from_the_clients_version() {
    let catalog = catalog();
    let response = answer_for(&catalog, &ask(vec![qm("db", Some("2"), &[("sig.rec", "2")])]));
    let UpgradeInfo::Files(entries) = &response.modules[0].upgrade else { panic!("file list") };
    let sig = entries.iter().find(|e| e.id == "sig.rec").expect("listed");
    let FileAction::Incremental { delta, .. } = &sig.action else { panic!("incremental, got {:?}", sig.action) };
    assert_eq!(delta.from.to_string(), "2");
    assert!(sig.frequent);
    assert!(response.modules[0].frequent.is_empty(), "the query's file entries match the frequent list: no hint");
    // From version 1 there is no delta: replace; and the query lacked the frequent file: hint.
    let response = answer_for(&catalog, &ask(vec![qm("db", Some("1"), &[])]));
    let modes = files(&response.modules[0]);
    assert!(modes.contains(&("sig.rec".into(), "3".into(), FileMode::Replace)), "{modes:?}");
    assert_eq!(response.modules[0].frequent, vec![Cow::Borrowed("sig.rec")]);
}

#[test]
fn critical_files_need_the_package() {
    let mut catalog = catalog();
    let core = catalog.modules.get_mut("core").expect("core");
    core.releases[2].files[1] = file("b.dll", "1.2");
    let response = answer_for(&catalog, &ask(vec![qm("core", Some("1.1"), &[])]));
    assert_eq!((response.modules[0].status, response.modules[0].code), (Status::Error, Some(22)));
    let core = catalog.modules.get_mut("core").expect("core");
    core.releases[2].package = Some(Package { blob: blob("installer"), args: Some("--quiet".into()) });
    let response = answer_for(&catalog, &ask(vec![qm("core", Some("1.1"), &[])]));
    let UpgradeInfo::Package(package) = &response.modules[0].upgrade else { panic!("package") };
    assert_eq!(package.args.as_deref(), Some("--quiet"));
    let url = response.resolve_url(&package.payload.url).into_owned();
    assert_eq!(url, format!("https://u.example/store/{}", blob("installer").sha256));
}

#[test]
fn not_installed_modules_get_everything_and_flags_over_all_releases() {
    let catalog = catalog();
    let response = answer_for(&catalog, &ask(vec![qm("core", None, &[])]));
    let install = &response.modules[0];
    assert_eq!(install.status, Status::Update);
    assert!(install.forced);
    assert_eq!(files(install).len(), 3);
    assert!(files(install).iter().all(|(_, _, mode)| *mode == FileMode::Replace));
}

#[test]
fn dependencies_are_added_and_checked() {
    let mut catalog = catalog();
    let mut plugin = module("plugin", vec![release("2.0", vec![file("p.js", "2.0")])]);
    plugin.releases[0].requires = vec![("core".into(), v("1.2"))];
    catalog.modules.insert("plugin".into(), plugin);
    let response = answer_for(&catalog, &ask(vec![qm("plugin", Some("1.0"), &[])]));
    assert_eq!(response.modules.len(), 2);
    assert_eq!(response.modules[0].requires[0].id, "core");
    let dep = &response.modules[1];
    assert_eq!((dep.id.as_ref(), dep.dependency, dep.status), ("core", true, Status::Update));
    // Asked modules are not added again.
    let response = answer_for(&catalog, &ask(vec![qm("plugin", Some("1.0"), &[]), qm("core", Some("1.0"), &[])]));
    assert_eq!(response.modules.len(), 2);
    // Too old or unknown: error 21 on the requiring module.
    for (id, min) in [("core", "9.0"), ("ghost", "1")] {
        let mut catalog = catalog.clone();
        catalog.modules.get_mut("plugin").expect("plugin").releases[0].requires = vec![(id.into(), v(min))];
        let response = answer_for(&catalog, &ask(vec![qm("plugin", Some("1.0"), &[])]));
        assert_eq!((response.modules[0].status, response.modules[0].code), (Status::Error, Some(21)), "{id}");
    }
    let mut cyclic = catalog.clone();
    cyclic.modules.get_mut("core").expect("core").releases[2].requires = vec![("plugin".into(), v("1"))];
    let response = answer_for(&cyclic, &ask(vec![qm("plugin", Some("1.0"), &[])]));
    assert_eq!(response.modules[0].code, Some(21), "plugin -> core -> plugin");
}

#[test]
fn clients_newer_than_the_catalog_get_current_or_a_rollback() {
    let mut catalog = catalog();
    let response = answer_for(&catalog, &ask(vec![qm("core", Some("1.3"), &[])]));
    assert_eq!(response.modules[0].status, Status::Current);
    catalog.modules.get_mut("core").expect("core").releases[2].rollback = true;
    let response = answer_for(&catalog, &ask(vec![qm("core", Some("1.3"), &[])]));
    let rollback = &response.modules[0];
    assert!(rollback.rollback && rollback.full);
    assert!(files(rollback).contains(&("c.dat".into(), "1.2".into(), FileMode::Delete)));
}

/// The executable flag of each file version goes on its entry (SPEC.md §4.4): on an install, on
/// an upgrade's replace and incremental entries, never on a delete.
#[test]
fn executable_files_are_flagged_on_their_entries() {
    let mut catalog = catalog();
    let executable = |module: &mut upgram_server::catalog::Module, release: usize, id: &str| {
        let file = module.releases[release].files.iter_mut().find(|f| f.id == id).expect("file of the release");
        file.executable = true;
    };
    let core = catalog.modules.get_mut("core").expect("core");
    executable(core, 2, "a.txt");
    let db = catalog.modules.get_mut("db").expect("db");
    executable(db, 2, "sig.rec");
    let flags = |answer: &ModuleAnswer<'_>| -> Vec<(String, FileMode, bool)> {
        match &answer.upgrade {
            UpgradeInfo::Files(files) => {
                files.iter().map(|f| (f.id.to_string(), f.action.mode(), f.executable)).collect()
            }
            other => panic!("not a file list: {other:?}"),
        }
    };

    let install = answer_for(&catalog, &ask(vec![qm("core", None, &[])]));
    assert_eq!(
        flags(&install.modules[0]),
        [
            ("a.txt".into(), FileMode::Replace, true),
            ("b.txt".into(), FileMode::Replace, false),
            ("d.txt".into(), FileMode::Replace, false)
        ]
    );
    let upgrade = answer_for(&catalog, &ask(vec![qm("core", Some("1.0"), &[])]));
    let upgrade = flags(&upgrade.modules[0]);
    assert!(upgrade.contains(&("a.txt".into(), FileMode::Replace, true)), "{upgrade:?}");
    assert!(upgrade.contains(&("c.dat".into(), FileMode::Delete, false)), "{upgrade:?}");
    let merge = answer_for(&catalog, &ask(vec![qm("db", Some("2"), &[("sig.rec", "2")])]));
    assert_eq!(
        flags(&merge.modules[0]),
        [("readme.txt".into(), FileMode::Replace, false), ("sig.rec".into(), FileMode::Incremental, true)]
    );
}

#[test]
fn the_least_answer_length_never_exceeds_the_answer() {
    // What decides, before anything is built, that an unvalidated source cannot be sent the
    // answer must be a true lower bound, or small answers would cost a round trip.
    let mut catalog = catalog();
    let many = |version: &str| (0..30).map(|i| file(&format!("data/part-{i:02}.bin"), version)).collect::<Vec<_>>();
    let mut with_dll = many("2");
    with_dll.push(file("bin/engine.dll", "2"));
    for m in [
        module("big", vec![release("1", many("1")), release("2", many("2"))]),
        module("native", vec![release("1", many("1")), release("2", with_dll)]),
    ] {
        catalog.modules.insert(m.id.clone(), m);
    }
    let versions: [Option<&str>; 8] =
        [None, Some("0.1"), Some("1"), Some("1.0"), Some("1.1"), Some("2"), Some("3"), Some("9")];
    for id in ["core", "db", "big", "native", "nowhere"] {
        for version in versions {
            let query = ask(vec![qm(id, version, &[])]);
            let least = least_answer_len(&catalog, &query, 100, usize::MAX);
            let actual = respond(&catalog, &query, binding(), "https://u.example/").to_vec().len();
            assert!(least <= actual, "{id} {version:?}: least {least} > actual {actual}");
        }
    }
    let install_big = ask(vec![qm("big", None, &[])]);
    assert!(least_answer_len(&catalog, &install_big, 0, usize::MAX) >= 30 * 64, "30 payload hashes at least");
    let install_native = ask(vec![qm("native", None, &[])]);
    assert_eq!(least_answer_len(&catalog, &install_native, 0, usize::MAX), 0, "a critical file: maybe a package");
    let stops = least_answer_len(&catalog, &ask(vec![qm("big", None, &[]), qm("big", Some("1"), &[])]), 0, 100);
    assert!(stops < 2 * 30 * 64, "stops counting once enough: {stops}");
}

#[test]
fn remembered_least_lengths_equal_the_computed_ones_and_follow_a_new_catalog() {
    let mut catalog = catalog();
    let many = |version: &str| (0..30).map(|i| file(&format!("data/part-{i:02}.bin"), version)).collect::<Vec<_>>();
    catalog.modules.insert("big".into(), module("big", vec![release("1", many("1")), release("2", many("2"))]));
    let queries: Vec<_> = [None, Some("1"), Some("2")]
        .into_iter()
        .flat_map(|version| ["core", "db", "big", "nowhere"].map(|id| ask(vec![qm(id, version, &[])])))
        .collect();
    let mut least = LeastLengths::default();
    // Twice over: computed, then remembered.
    for _ in 0..2 {
        for query in &queries {
            assert_eq!(
                least.least_answer_len(&catalog, 0, query, 100, usize::MAX),
                least_answer_len(&catalog, query, 100, usize::MAX)
            );
        }
    }
    // A new catalog (a new generation) where big's latest release has one file: what was
    // remembered of the old one is not used.
    let install_big = ask(vec![qm("big", None, &[])]);
    let before = least.least_answer_len(&catalog, 0, &install_big, 100, usize::MAX);
    catalog
        .modules
        .insert("big".into(), module("big", vec![release("1", many("1")), release("2", vec![file("one.bin", "2")])]));
    let after = least.least_answer_len(&catalog, 1, &install_big, 100, usize::MAX);
    assert_eq!(after, least_answer_len(&catalog, &install_big, 100, usize::MAX));
    assert!(after < before, "{after} < {before}");
}

/// A query with `compact="1"` gets a compact answer (SPEC.md §4.4): the modules current at the
/// version asked are left out, everything else is listed, and the client's expansion gives back
/// exactly the full answer.
#[test]
fn compact_queries_leave_out_bare_current_answers() {
    let catalog = catalog();
    type Listed = &'static [(&'static str, Status)];
    let cases: [(Vec<QueryModule<'static>>, Listed); 2] = [
        // core is current at 1.2, as asked: implied; db at 2 has an update and ghost is unknown.
        (
            vec![qm("core", Some("1.2"), &[]), qm("db", Some("2"), &[]), qm("ghost", Some("1"), &[])],
            &[("db", Status::Update), ("ghost", Status::Unknown)],
        ),
        // db at 3 with its frequent file current and the server's frequent list the query's:
        // nothing to say, implied; core at 1.0 is listed.
        (vec![qm("db", Some("3"), &[("sig.rec", "3")]), qm("core", Some("1.0"), &[])], &[("core", Status::Update)]),
    ];
    for (modules, expected) in cases {
        let full = answer_for(&catalog, &ask(modules.clone()));
        let compact_query = Query { compact: true, ..Query::new(modules) };
        let compact = answer_for(&catalog, &compact_query);
        assert!(compact.compact && !full.compact);
        let listed: Vec<(&str, Status)> = compact.modules.iter().map(|m| (m.id.as_ref(), m.status)).collect();
        assert_eq!(listed, expected);
        let expanded = upgram_core::merge::expand_compact(compact, &compact_query).expect("expands");
        assert_eq!(expanded.modules, full.modules);
        // The server's hot path, from kept module answers, writes the same compact bytes.
        let mut cache = AnswerCache::default();
        for _ in 0..2 {
            let direct = respond(&catalog, &compact_query, binding(), "https://u.example/").to_vec();
            assert_eq!(assembled(&catalog, 1, &compact_query, &mut cache), direct);
        }
    }
}

/// What the server sends: the answer assembled from the worker's kept module answers.
fn assembled(catalog: &Catalog, generation: u64, query: &Query<'_>, cache: &mut AnswerCache) -> Vec<u8> {
    let mut out = Vec::new();
    respond_encoded(catalog, generation, query, binding(), "https://u.example/", cache, &mut out);
    out
}

#[test]
fn answers_assembled_from_kept_module_answers_are_the_built_ones_byte_for_byte() {
    let mut catalog = catalog();
    let mut plugin =
        module("plugin", vec![release("1.0", vec![file("p.js", "1.0")]), release("2.0", vec![file("p.js", "2.0")])]);
    plugin.releases[1].requires = vec![("core".into(), v("1.2"))];
    let mut broken = module("broken", vec![release("1", vec![file("x", "1")]), release("2", vec![file("x", "2")])]);
    broken.releases[1].requires = vec![("ghost".into(), v("1"))];
    for m in [plugin, broken] {
        catalog.modules.insert(m.id.clone(), m);
    }
    let questions: Vec<QueryModule<'static>> = vec![
        qm("core", None, &[]),
        qm("core", Some("1.0"), &[]),
        qm("core", Some("1.1"), &[]),
        qm("core", Some("1.2"), &[]),
        qm("core", Some("9"), &[]),
        qm("db", Some("1"), &[("sig.rec", "2")]),
        qm("db", Some("3"), &[("sig.rec", "2")]),
        qm("db", Some("3"), &[("sig.rec", "3")]),
        qm("db", Some("2"), &[]),
        qm("plugin", Some("1.0"), &[]),
        qm("plugin", None, &[]),
        qm("broken", Some("1"), &[]),
        qm("nowhere", Some("1"), &[]),
    ];
    let mut cache = AnswerCache::default();
    // Every pair and triple of questions, twice over (the second time all from the cache).
    for round in 0..2 {
        for (i, a) in questions.iter().enumerate() {
            for (j, b) in questions.iter().enumerate() {
                for c in [None, Some(&questions[(i + j) % questions.len()])] {
                    let mut modules = vec![a.clone(), b.clone()];
                    modules.extend(c.cloned());
                    modules.dedup_by(|x, y| x.id == y.id);
                    let query = ask(modules);
                    let built = respond(&catalog, &query, binding(), "https://u.example/").to_vec();
                    assert_eq!(assembled(&catalog, 1, &query, &mut cache), built, "round {round}: {query:?}");
                }
            }
        }
    }
    assert!(cache.kept().0 >= questions.len(), "the module answers are kept: {:?}", cache.kept());
    let empty = ask(vec![]);
    assert_eq!(
        assembled(&catalog, 1, &empty, &mut cache),
        respond(&catalog, &empty, binding(), "https://u.example/").to_vec()
    );

    // A new catalog generation: nothing kept from the old one is used.
    catalog.modules.get_mut("core").expect("core").releases.push(release("1.3", vec![file("a.txt", "1.3")]));
    let query = ask(vec![qm("core", Some("1.0"), &[]), qm("plugin", Some("1.0"), &[])]);
    let built = respond(&catalog, &query, binding(), "https://u.example/").to_vec();
    assert!(String::from_utf8_lossy(&built).contains("latest=\"1.3\""));
    assert_eq!(assembled(&catalog, 2, &query, &mut cache), built);
}

#[test]
fn the_kept_module_answers_are_bounded() {
    let catalog = catalog();
    let mut cache = AnswerCache::default();
    for i in 0..20_000 {
        let id = format!("unknown-{i}");
        // Each question twice: an answer is kept from its question's second coming.
        for _ in 0..2 {
            assembled(&catalog, 1, &ask(vec![qm(&id, Some("1"), &[])]), &mut cache);
        }
        assert!(cache.kept().0 <= 16_384, "{:?} after {i}", cache.kept());
    }
    assert!(cache.kept().0 > 0);
}

#[test]
fn a_module_answer_is_kept_from_the_second_time_its_question_comes() {
    let catalog = catalog();
    let mut cache = AnswerCache::default();
    // Questions asked once each (file-level entries at versions nobody else has) are answered
    // right and not kept: they would push out the questions that repeat.
    for i in 0..1_000 {
        let version = format!("0.{i}");
        let query = ask(vec![qm("core", Some("1.0"), &[("a.txt", version.as_str())])]);
        let built = respond(&catalog, &query, binding(), "https://u.example/").to_vec();
        assert_eq!(assembled(&catalog, 1, &query, &mut cache), built);
    }
    assert_eq!(cache.kept().0, 0, "questions asked once are not kept");
    let query = ask(vec![qm("core", Some("1.0"), &[]), qm("plugin", Some("1.0"), &[])]);
    let built = respond(&catalog, &query, binding(), "https://u.example/").to_vec();
    assert_eq!(assembled(&catalog, 1, &query, &mut cache), built);
    assert_eq!(cache.kept().0, 0);
    assert_eq!(assembled(&catalog, 1, &query, &mut cache), built);
    assert_eq!(cache.kept().0, 2, "both questions kept at their second coming");
    assert_eq!(assembled(&catalog, 1, &query, &mut cache), built);
    assert_eq!(cache.kept().0, 2);
}

/// `catalog()` with bsdiff patches to core 1.2's b.txt from 1.0, and to a.txt from 1.0.
fn catalog_with_patches() -> Catalog {
    let mut catalog = catalog();
    let core = catalog.modules.get_mut("core").unwrap();
    let patch = |id: &str, from: &str| PatchRef {
        file: id.into(),
        from: v(from),
        base_sha256: blob(&format!("{id}@{from}")).sha256,
        blob: blob(&format!("patch {id} {from}")),
    };
    core.releases[2].patches = vec![patch("a.txt", "1.0"), patch("b.txt", "1.0")];
    catalog
}

fn patch_of<'r>(response: &'r Response<'_>, module: &str, file: &str) -> Option<&'r FilePatch<'r>> {
    let UpgradeInfo::Files(files) = &response.module(module)?.upgrade else { return None };
    files.iter().find(|f| f.id == file)?.patch.as_ref()
}

#[test]
fn patches_go_only_to_queries_that_ask_for_them_from_the_base_the_client_has() {
    let catalog = catalog_with_patches();
    let old = ask(vec![qm("core", Some("1.0"), &[])]);
    let patching = Query { patch: Some("zstd bsdiff".into()), ..old.clone() };
    let without = respond(&catalog, &old, binding(), "https://u.example/");
    assert!(patch_of(&without, "core", "b.txt").is_none(), "no patch attribute, no patch");
    let with = respond(&catalog, &patching, binding(), "https://u.example/");
    let b = patch_of(&with, "core", "b.txt").expect("a patch from 1.0");
    assert_eq!((b.format.as_ref(), b.from.as_str()), ("bsdiff", "1.0"));
    assert_eq!(b.base_sha256, blob("b.txt@1.0").sha256);
    assert_eq!(b.payload.size, blob("patch b.txt 1.0").size);
    // From 1.1 the client's b.txt is still 1.0; its a.txt is 1.1, which no patch starts from.
    let from_11 = Query { patch: Some("bsdiff".into()), ..ask(vec![qm("core", Some("1.1"), &[])]) };
    let answer = respond(&catalog, &from_11, binding(), "https://u.example/");
    assert!(patch_of(&answer, "core", "b.txt").is_some());
    assert!(patch_of(&answer, "core", "a.txt").is_none());
    // A format the server does not make: none.
    let other = Query { patch: Some("zstd".into()), ..old.clone() };
    assert!(patch_of(&respond(&catalog, &other, binding(), "https://u.example/"), "core", "b.txt").is_none());
    // A file-level entry of a current module names the base too.
    let frequent = Query { patch: Some("bsdiff".into()), ..ask(vec![qm("core", Some("1.2"), &[("b.txt", "1.0")])]) };
    assert!(patch_of(&respond(&catalog, &frequent, binding(), "https://u.example/"), "core", "b.txt").is_some());
    // Installs get whole files.
    let install = Query { patch: Some("bsdiff".into()), ..ask(vec![qm("core", None, &[])]) };
    assert!(patch_of(&respond(&catalog, &install, binding(), "https://u.example/"), "core", "b.txt").is_none());

    // The cache of encoded answers keeps the two apart, in either order.
    let mut cache = AnswerCache::default();
    for query in [&old, &patching, &old, &patching] {
        let expected = respond(&catalog, query, binding(), "https://u.example/").to_vec();
        assert_eq!(assembled(&catalog, 1, query, &mut cache), expected);
    }
}
