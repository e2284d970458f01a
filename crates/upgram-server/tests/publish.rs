//! The publisher (S2) on real release folders: file versions, deletions, record deltas,
//! frequent files, the critical-file rule, refusals, and crashes of the real binary at each
//! failpoint.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use upgram_core::records::apply_delta;
use upgram_core::version::Version;
use upgram_server::catalog::store::blob_path;
use upgram_server::catalog::{self, Catalog, Module, Release, Requirement};
use upgram_server::publish::{PatchOptions, PublishError, PublishRequest, publish};

mod common;

fn v(text: &str) -> Version<'static> {
    text.parse().unwrap()
}

/// A release folder with these files.
fn tree(root: &Path, files: &[(&str, &[u8])]) -> PathBuf {
    fs::create_dir_all(root).unwrap();
    for (id, bytes) in files {
        let path = root.join(id);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, bytes).unwrap();
    }
    root.to_owned()
}

fn request(catalog: &Path, module: &str, version: &str, from: &Path) -> PublishRequest {
    PublishRequest::new(catalog, module, v(version), from)
}

/// A signature database: 40 records, with `changed` ones rewritten for `generation`.
fn signatures(generation: u32, changed: &[u64]) -> Vec<u8> {
    let contents: Vec<(u64, String)> = (1..=40u64)
        .filter(|id| !(generation >= 2 && *id == 7))
        .map(|id| {
            let round = if changed.contains(&id) { generation } else { 1 };
            (id, format!("signature {id} generation {round}: {}", "x".repeat(60)))
        })
        .chain((generation >= 2).then(|| (100 + u64::from(generation), "new signature".into())))
        .collect();
    let borrowed: Vec<(u64, &str)> = contents.iter().map(|(i, c)| (*i, c.as_str())).collect();
    common::record_file(&borrowed)
}

fn load_module(catalog: &Path, id: &str) -> Module {
    catalog::load(catalog).unwrap().modules[id].clone()
}

fn file_version(release: &Release, id: &str) -> String {
    release.file(id).unwrap().version.to_string()
}

fn store_bytes(catalog: &Path, blob: &catalog::Blob) -> Vec<u8> {
    fs::read(blob_path(catalog, &blob.sha256)).unwrap()
}

#[test]
fn releases_record_versions_deletions_deltas_and_frequent_files() {
    let work = tempfile::tempdir().unwrap();
    let cat = work.path().join("catalog");
    let sig1 = signatures(1, &[]);
    let sig2 = signatures(2, &[3, 4]);
    let sig3 = signatures(3, &[3, 20]);
    let v1 = tree(
        &work.path().join("1.0"),
        &[
            ("bin/app", b"app 1"),
            ("README.txt", b"read me"),
            ("old.txt", b"old"),
            ("db/signatures.rec", &sig1),
            ("db/notes.rec", b"not a record file"),
        ],
    );
    let summary = publish(&request(&cat, "core", "1.0", &v1)).unwrap();
    assert_eq!(summary.added.len(), 5);
    assert!(catalog::load(&cat).unwrap().settings == catalog::Settings::default());

    let v2 = tree(
        &work.path().join("2.0"),
        &[
            ("bin/app", b"app 2"),
            ("README.txt", b"read me"),
            ("new.txt", b"new"),
            ("db/signatures.rec", &sig2),
            ("db/notes.rec", b"still not a record file"),
        ],
    );
    let summary = publish(&request(&cat, "core", "2.0", &v2)).unwrap();
    assert_eq!(summary.added, ["new.txt"]);
    assert_eq!(summary.changed, ["bin/app", "db/notes.rec", "db/signatures.rec"]);
    assert_eq!(summary.unchanged, 1);
    assert_eq!(summary.deleted, ["old.txt"]);
    assert!(summary.notes.iter().any(|n| n.contains("db/notes.rec")), "{:?}", summary.notes);
    let module = load_module(&cat, "core");
    let r2 = module.latest().unwrap();
    assert_eq!(file_version(r2, "README.txt"), "1.0");
    assert_eq!(file_version(r2, "bin/app"), "2.0");
    assert_eq!(file_version(r2, "new.txt"), "2.0");
    assert_eq!(r2.deleted.len(), 1);
    assert_eq!((r2.deleted[0].id.as_str(), r2.deleted[0].version.as_str()), ("old.txt", "2.0"));
    assert_eq!(r2.deltas.len(), 1, "{:?}", r2.deltas);
    let delta = &r2.deltas[0];
    assert_eq!((delta.file.as_str(), delta.from.as_str()), ("db/signatures.rec", "1.0"));
    assert!(delta.blob.size < sig2.len() as u64);
    assert_eq!(apply_delta(&sig1, &store_bytes(&cat, &delta.blob)).unwrap(), sig2);

    let v3 = tree(
        &work.path().join("3.0"),
        &[
            ("bin/app", b"app 2"),
            ("README.txt", b"read me"),
            ("new.txt", b"new"),
            ("db/signatures.rec", &sig3),
            ("db/notes.rec", b"still not a record file"),
        ],
    );
    let summary = publish(&request(&cat, "core", "3.0", &v3)).unwrap();
    assert_eq!(summary.changed, ["db/signatures.rec"]);
    assert!(summary.deleted.is_empty());
    let module = load_module(&cat, "core");
    let r3 = module.latest().unwrap();
    assert_eq!(file_version(r3, "README.txt"), "1.0");
    assert_eq!(file_version(r3, "bin/app"), "2.0");
    assert_eq!(file_version(r3, "db/signatures.rec"), "3.0");
    assert_eq!(r3.deleted, r2.deleted, "deletions are cumulative");
    let froms: Vec<&str> = r3.deltas.iter().map(|d| d.from.as_str()).collect();
    assert_eq!(froms, ["1.0", "2.0"], "a delta from each earlier version");
    for (delta, base) in r3.deltas.iter().zip([&sig1, &sig2]) {
        assert_eq!(apply_delta(base, &store_bytes(&cat, &delta.blob)).unwrap(), sig3);
    }
    assert!(module.frequent.is_empty(), "2 changes out of 3 are not enough");

    let sig4 = signatures(4, &[5]);
    let mut v4_files: Vec<(&str, &[u8])> = vec![
        ("bin/app", b"app 2"),
        ("README.txt", b"read me"),
        ("db/signatures.rec", &sig4),
        ("db/notes.rec", b"still not a record file"),
    ];
    let v4 = tree(&work.path().join("4.0"), &v4_files);
    let summary = publish(&request(&cat, "core", "4.0", &v4)).unwrap();
    assert_eq!(summary.frequent, ["db/signatures.rec"], "changed in 3 of the last 5");
    let module = load_module(&cat, "core");
    assert_eq!(module.frequent, ["db/signatures.rec"]);
    let r4 = module.latest().unwrap();
    let deleted: Vec<(&str, &str)> = r4.deleted.iter().map(|d| (d.id.as_str(), d.version.as_str())).collect();
    assert_eq!(deleted, [("new.txt", "4.0"), ("old.txt", "2.0")]);

    // An unchanged record file keeps the deltas that lead to it.
    v4_files[0] = ("bin/app", b"app 5");
    let v5 = tree(&work.path().join("5.0"), &v4_files);
    publish(&request(&cat, "core", "5.0", &v5)).unwrap();
    let module = load_module(&cat, "core");
    let r5 = module.latest().unwrap();
    assert_eq!(file_version(r5, "db/signatures.rec"), "4.0");
    assert_eq!(r5.deltas, r4.deltas);
    assert_eq!(module.frequent, ["db/signatures.rec"], "3 of the last 5 still");
}

#[test]
fn critical_files_need_a_package() {
    let work = tempfile::tempdir().unwrap();
    let cat = work.path().join("catalog");
    let v1 = tree(&work.path().join("1.0"), &[("readme.txt", b"v1")]);
    publish(&request(&cat, "driver", "1.0", &v1)).unwrap();
    let before = catalog::load(&cat).unwrap();
    let store_before = fs::read_dir(cat.join("store")).unwrap().count();

    let v2 = tree(&work.path().join("2.0"), &[("readme.txt", b"v1"), ("bin/driver.DLL", b"MZ driver")]);
    let error = publish(&request(&cat, "driver", "2.0", &v2)).unwrap_err();
    assert!(matches!(error, PublishError::NeedsPackage { .. }), "{error}");
    let message = error.to_string();
    assert!(message.contains("\"bin/driver.DLL\"") && message.contains("--package"), "{message}");
    assert_eq!(catalog::load(&cat).unwrap(), before, "nothing written");
    assert_eq!(fs::read_dir(cat.join("store")).unwrap().count(), store_before, "no orphan blob");

    let installer = tree(&work.path().join("pkg"), &[("install.sh", b"#!/bin/sh\nexit 0\n")]);
    let mut with_package = request(&cat, "driver", "2.0", &v2);
    with_package.package = Some(installer.join("install.sh"));
    with_package.installer_args = Some("--quiet".into());
    let summary = publish(&with_package).unwrap();
    let package = summary.package.unwrap();
    assert!(summary.to_string().contains("install package"), "{summary}");
    let module = load_module(&cat, "driver");
    let release = module.latest().unwrap();
    assert_eq!(release.package.as_ref().unwrap().blob, package);
    assert_eq!(release.package.as_ref().unwrap().args.as_deref(), Some("--quiet"));
    assert_eq!(store_bytes(&cat, &package), b"#!/bin/sh\nexit 0\n");

    // A release without a package that keeps a critical file unchanged is allowed, with a note.
    let v21 = tree(&work.path().join("2.1"), &[("readme.txt", b"v2.1"), ("bin/driver.DLL", b"MZ driver")]);
    let summary = publish(&request(&cat, "driver", "2.1", &v21)).unwrap();
    assert!(summary.notes.iter().any(|n| n.contains("bin/driver.DLL is a critical file")), "{summary}");

    // Deleting a critical file needs a package too.
    let v3 = tree(&work.path().join("3.0"), &[("readme.txt", b"v1")]);
    let error = publish(&request(&cat, "driver", "3.0", &v3)).unwrap_err();
    assert!(error.to_string().contains("is deleted in 3.0"), "{error}");
    let mut full = request(&cat, "driver", "3.0", &v21);
    full.full = true;
    let error = publish(&full).unwrap_err();
    assert!(error.to_string().contains("replaced (full release)"), "{error}");
}

#[test]
fn versions_must_grow_unless_rollback() {
    let work = tempfile::tempdir().unwrap();
    let cat = work.path().join("catalog");
    let folder = tree(&work.path().join("r"), &[("a.txt", b"a")]);
    publish(&request(&cat, "core", "1.0", &folder)).unwrap();
    publish(&request(&cat, "core", "2.0", &folder)).unwrap();
    for (version, rollback, expected) in [
        ("2.0", false, "already exists"),
        ("2.0.0", true, "already exists"),
        ("1.5", false, "not newer than the latest release 2.0"),
        ("2.0-rc.1", false, "not newer"),
    ] {
        let mut req = request(&cat, "core", version, &folder);
        req.rollback = rollback;
        let error = publish(&req).unwrap_err();
        assert!(error.to_string().contains(expected), "{version}: {error}");
    }
    let changed = tree(&work.path().join("rb"), &[("a.txt", b"a, as in 1.0 but fixed")]);
    let mut req = request(&cat, "core", "1.5", &changed);
    req.rollback = true;
    publish(&req).unwrap();
    let module = load_module(&cat, "core");
    let versions: Vec<&str> = module.releases.iter().map(|r| r.version.as_str()).collect();
    assert_eq!(versions, ["1.0", "1.5", "2.0"]);
    assert!(module.releases[1].rollback);
    assert_eq!(file_version(&module.releases[1], "a.txt"), "1.5");
    // The next release is computed along the version order: 2.0 differs from 1.5, so a file
    // unchanged since 2.0 gets 2.0, which clients at 1.5 see as newer.
    publish(&request(&cat, "core", "2.1", &folder)).unwrap();
    let module = load_module(&cat, "core");
    assert_eq!(file_version(module.latest().unwrap(), "a.txt"), "2.0");
}

#[test]
fn dependencies_are_checked_against_the_catalog() {
    let work = tempfile::tempdir().unwrap();
    let cat = work.path().join("catalog");
    let folder = tree(&work.path().join("r"), &[("a.txt", b"a")]);
    publish(&request(&cat, "main", "1.0", &folder)).unwrap();
    for (depends, expected) in [
        ("ghost>=1", "has no release in the catalog"),
        ("main>=2", "the latest release of main is 1.0"),
        ("plugin>=1", "cannot depend on itself"),
    ] {
        let mut req = request(&cat, "plugin", "1.0", &folder);
        req.requires = vec![depends.parse::<Requirement>().unwrap()];
        let error = publish(&req).unwrap_err();
        assert!(error.to_string().contains(expected), "{depends}: {error}");
    }
    let mut req = request(&cat, "plugin", "1.0", &folder);
    req.requires = vec!["main>=1".parse().unwrap()];
    publish(&req).unwrap();
    let plugin = load_module(&cat, "plugin");
    assert_eq!(plugin.latest().unwrap().requires, [("main".into(), v("1"))]);
}

#[test]
fn release_folders_must_hold_plain_files_with_valid_ids() {
    let work = tempfile::tempdir().unwrap();
    let cat = work.path().join("catalog");
    let empty = work.path().join("empty");
    fs::create_dir_all(&empty).unwrap();
    let error = publish(&request(&cat, "core", "1.0", &empty)).unwrap_err();
    assert!(matches!(error, PublishError::EmptyRelease { .. }), "{error}");

    let bad_id = tree(&work.path().join("colon"), &[("c:drive.txt", b"x")]);
    let error = publish(&request(&cat, "core", "1.0", &bad_id)).unwrap_err();
    assert!(matches!(error, PublishError::BadFileId { .. }), "{error}");
    assert!(error.to_string().contains("c:drive.txt"), "{error}");

    let error = publish(&request(&cat, "not a module", "1.0", &bad_id)).unwrap_err();
    assert!(matches!(error, PublishError::BadModuleId { .. }), "{error}");

    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        let linked = tree(&work.path().join("linked"), &[("real.txt", b"x")]);
        std::os::unix::fs::symlink("real.txt", linked.join("link.txt")).unwrap();
        let error = publish(&request(&cat, "core", "1.0", &linked)).unwrap_err();
        assert!(matches!(error, PublishError::Symlink { .. }), "{error}");
        assert!(error.to_string().contains("link.txt"), "{error}");

        let latin1 = tree(&work.path().join("latin1"), &[("ok.txt", b"x")]);
        let name = std::ffi::OsStr::from_bytes(b"caf\xe9.txt");
        fs::write(latin1.join(name), b"x").unwrap();
        let error = publish(&request(&cat, "core", "1.0", &latin1)).unwrap_err();
        assert!(matches!(error, PublishError::NotUtf8 { .. }), "{error}");
    }
    assert!(catalog::load(&cat).unwrap().modules.is_empty());
}

/// Copies a folder tree.
/// A release folder with these files, each with its permission bits.
#[cfg(unix)]
fn tree_with_modes(root: &Path, files: &[(&str, &[u8], u32)]) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let contents: Vec<(&str, &[u8])> = files.iter().map(|(id, content, _)| (*id, *content)).collect();
    tree(root, &contents);
    for (id, _, mode) in files {
        fs::set_permissions(root.join(id), fs::Permissions::from_mode(*mode)).unwrap();
    }
    root.to_owned()
}

/// Any execute bit in the release folder makes a file executable; a flag change alone is a
/// change of the file (a new file version), so that clients get the file again; the module
/// file records the flag and loads it back.
#[cfg(unix)]
#[test]
fn execute_bits_in_the_release_folder_make_files_executable() {
    let work = tempfile::tempdir().unwrap();
    let cat = work.path().join("catalog");
    let v1 = tree_with_modes(
        &work.path().join("v1"),
        &[
            ("bin/app", b"app", 0o755),
            ("bin/group-only", b"group", 0o654),
            ("bin/other-only", b"other", 0o645),
            ("share/readme.txt", b"readme", 0o644),
            ("share/notes.txt", b"notes", 0o600),
        ],
    );
    publish(&request(&cat, "core", "1.0", &v1)).unwrap();
    let flags = |release: &Release| -> Vec<(String, bool, String)> {
        release.files.iter().map(|f| (f.id.clone(), f.executable, f.version.to_string())).collect()
    };
    let module = load_module(&cat, "core");
    assert_eq!(
        flags(&module.releases[0]),
        [
            ("bin/app".into(), true, "1.0".into()),
            ("bin/group-only".into(), true, "1.0".into()),
            ("bin/other-only".into(), true, "1.0".into()),
            ("share/notes.txt".into(), false, "1.0".into()),
            ("share/readme.txt".into(), false, "1.0".into()),
        ]
    );
    let text = fs::read_to_string(cat.join("modules/core.toml")).unwrap();
    assert_eq!(text.matches("executable = true").count(), 3, "{text}");

    // Same contents; the flag of two files flips, and a read bit alone changes nothing.
    let v2 = tree_with_modes(
        &work.path().join("v2"),
        &[
            ("bin/app", b"app", 0o644),
            ("bin/group-only", b"group", 0o654),
            ("bin/other-only", b"other", 0o645),
            ("share/readme.txt", b"readme", 0o700),
            ("share/notes.txt", b"notes", 0o644),
        ],
    );
    let summary = publish(&request(&cat, "core", "2.0", &v2)).unwrap();
    assert_eq!(summary.changed, ["bin/app", "share/readme.txt"]);
    assert_eq!(summary.unchanged, 3);
    let module = load_module(&cat, "core");
    assert_eq!(
        flags(&module.releases[1]),
        [
            ("bin/app".into(), false, "2.0".into()),
            ("bin/group-only".into(), true, "1.0".into()),
            ("bin/other-only".into(), true, "1.0".into()),
            ("share/notes.txt".into(), false, "1.0".into()),
            ("share/readme.txt".into(), true, "2.0".into()),
        ]
    );
}

fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// Runs the real binary's `publish`, with a failpoint when given; whether it succeeded.
fn run_publish(cat: &Path, folder: &Path, version: &str, failpoint: Option<&str>) -> bool {
    publish_status(cat, folder, version, failpoint).success()
}

/// Runs the real binary's `publish`, with a failpoint when given.
fn publish_status(cat: &Path, folder: &Path, version: &str, failpoint: Option<&str>) -> std::process::ExitStatus {
    let mut command = Command::new(env!("CARGO_BIN_EXE_upgram-server"));
    command.args(["publish", "--catalog"]).arg(cat);
    command.args(["--module", "core", "--version", version, "--from"]).arg(folder);
    // An aborted process may leave a core file in its working folder: keep it in the temp one.
    command.current_dir(cat.parent().unwrap());
    command.env_remove("UPGRAM_FAILPOINT");
    if let Some(name) = failpoint {
        command.env("UPGRAM_FAILPOINT", name);
    }
    command.output().unwrap().status
}

#[test]
fn a_publish_killed_midway_leaves_a_valid_catalog() {
    let work = tempfile::tempdir().unwrap();
    let old_folder = tree(&work.path().join("1.0"), &[("a.txt", b"a1"), ("db/s.rec", &signatures(1, &[]))]);
    let new_folder =
        tree(&work.path().join("2.0"), &[("a.txt", b"a2"), ("b.txt", b"b"), ("db/s.rec", &signatures(2, &[1]))]);
    let base = work.path().join("base");
    assert!(run_publish(&base, &old_folder, "1.0", None));
    let reference = work.path().join("reference");
    copy_tree(&base, &reference);
    assert!(run_publish(&reference, &new_folder, "2.0", None));
    let old: Catalog = catalog::load(&base).unwrap();
    let new: Catalog = catalog::load(&reference).unwrap();
    assert_ne!(old, new);

    for (failpoint, expected) in
        [("publish:after-blobs", &old), ("publish:before-rename", &old), ("publish:after-rename", &new)]
    {
        let cat = work.path().join(failpoint.replace(':', "-"));
        copy_tree(&base, &cat);
        let status = publish_status(&cat, &new_folder, "2.0", Some(failpoint));
        assert!(!status.success(), "{failpoint}: it dies");
        #[cfg(unix)]
        {
            use std::os::unix::process::ExitStatusExt;
            assert_eq!(status.signal(), Some(6), "{failpoint}: by abort (SIGABRT)");
        }
        let loaded = catalog::load(&cat).unwrap_or_else(|e| panic!("{failpoint}: {e}"));
        assert_eq!(&loaded, expected, "{failpoint}");
        for entry in fs::read_dir(cat.join("modules")).unwrap() {
            let name = entry.unwrap().file_name().into_string().unwrap();
            assert!(name == "core.toml" || name.starts_with('.'), "{failpoint}: {name}");
        }
        // The catalog takes the next publish as if nothing had happened.
        let done = failpoint == "publish:after-rename";
        assert_eq!(run_publish(&cat, &new_folder, "2.0", None), !done, "{failpoint}");
        assert_eq!(&catalog::load(&cat).unwrap(), &new, "{failpoint}");
        if !done {
            let names: Vec<String> = fs::read_dir(cat.join("modules"))
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect();
            assert_eq!(names, ["core.toml"], "{failpoint}: the next publish cleans up");
        }
    }
}

/// `len` bytes that do not compress (a random stream seeded by `seed`), like a program's code.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    use rand::{RngCore, SeedableRng};
    let mut out = vec![0; len];
    rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut out);
    out
}

/// Generation `g` of a 200 KiB program: the same bytes with 16 of them changed per generation.
fn program(generation: u8) -> Vec<u8> {
    let mut bytes = noise(7, 200 << 10);
    for g in 1..=generation {
        let at = usize::from(g) * 10_000;
        bytes[at..at + 16].fill(g);
    }
    bytes
}

/// Publishes generations `0..count` of `bin/app` (plus a small file that changes too) as
/// versions `1.0`, `1.1`, … with `options`.
fn publish_generations(cat: &Path, work: &Path, count: u8, options: PatchOptions) -> Module {
    for g in 0..count {
        let small = format!("notes {g}");
        let folder = tree(&work.join(format!("g{g}")), &[("bin/app", &program(g)), ("notes.txt", small.as_bytes())]);
        let mut request = request(cat, "app", &format!("1.{g}"), &folder);
        request.patches = options;
        publish(&request).unwrap();
    }
    load_module(cat, "app")
}

fn patch_bases(release: &Release) -> Vec<(&str, &str)> {
    release.patches.iter().map(|p| (p.file.as_str(), p.from.as_str())).collect()
}

#[test]
fn changed_large_files_get_patches_from_the_last_k_releases_stored_by_hash() {
    let dir = tempfile::tempdir().unwrap();
    let cat = dir.path().join("catalog");
    let module = publish_generations(&cat, dir.path(), 5, PatchOptions::default());
    assert!(module.releases[0].patches.is_empty(), "a first release has nothing to patch from");
    assert_eq!(patch_bases(&module.releases[1]), [("bin/app", "1.0")]);
    // The default K = 3: the three releases below, never the small file.
    assert_eq!(patch_bases(&module.releases[4]), [("bin/app", "1.1"), ("bin/app", "1.2"), ("bin/app", "1.3")]);
    for patch in &module.releases[4].patches {
        let base = module.release(&patch.from).unwrap().file("bin/app").unwrap();
        assert_eq!(patch.base_sha256, base.blob.sha256);
        let bytes = store_bytes(&cat, &patch.blob);
        assert_eq!(upgram_core::Sha256Digest::of(&bytes), patch.blob.sha256, "stored under its hash");
        assert!(bytes.len() < 4096, "a 16-byte change makes a small patch: {} bytes", bytes.len());
        let mut result = Vec::new();
        qbsdiff::Bspatch::new(&bytes).unwrap().apply(&store_bytes(&cat, &base.blob), &mut result).unwrap();
        assert_eq!(result, program(4), "the patch turns its base into the new file");
    }

    let dir = tempfile::tempdir().unwrap();
    let only_two = PatchOptions { from: 2, ..PatchOptions::default() };
    let module = publish_generations(&dir.path().join("catalog"), dir.path(), 4, only_two);
    assert_eq!(patch_bases(&module.releases[3]), [("bin/app", "1.1"), ("bin/app", "1.2")]);
    let dir = tempfile::tempdir().unwrap();
    let none = PatchOptions { from: 0, ..PatchOptions::default() };
    let module = publish_generations(&dir.path().join("catalog"), dir.path(), 3, none);
    assert!(module.releases.iter().all(|r| r.patches.is_empty()), "--patch-from 0 makes none");
}

#[test]
fn the_size_threshold_and_the_share_decide_which_patches_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    let high = PatchOptions { min_size: 300 << 10, ..PatchOptions::default() };
    let module = publish_generations(&dir.path().join("catalog"), dir.path(), 2, high);
    assert!(module.releases[1].patches.is_empty(), "a 200 KiB file is below a 300 KiB threshold");
    let dir = tempfile::tempdir().unwrap();
    let low = PatchOptions { min_size: 1, ..PatchOptions::default() };
    let module = publish_generations(&dir.path().join("catalog"), dir.path(), 2, low);
    assert_eq!(
        patch_bases(&module.releases[1]),
        [("bin/app", "1.0")],
        "a 7-byte file's patch is not smaller than half"
    );

    // A file rewritten whole: its patch is about as large as the file, over half of it.
    let dir = tempfile::tempdir().unwrap();
    let cat = dir.path().join("catalog");
    let publish_noise = |version: &str, seed: u64, options: PatchOptions| {
        let folder = tree(&dir.path().join(version), &[("bin/app", &noise(seed, 100 << 10))]);
        let mut request = request(&cat, "app", version, &folder);
        request.patches = options;
        publish(&request).unwrap();
    };
    publish_noise("1.0", 1, PatchOptions::default());
    publish_noise("1.1", 2, PatchOptions::default());
    assert!(load_module(&cat, "app").releases[1].patches.is_empty(), "no patch at the default share 0.5");
    publish_noise("1.2", 3, PatchOptions { max_share: 2.0, ..PatchOptions::default() });
    let kept = [("bin/app", "1.0"), ("bin/app", "1.1")];
    assert_eq!(patch_bases(&load_module(&cat, "app").releases[2]), kept, "kept under a share of 2");
}

#[test]
fn an_unchanged_file_keeps_the_patches_of_the_release_below() {
    let dir = tempfile::tempdir().unwrap();
    let cat = dir.path().join("catalog");
    let module = publish_generations(&cat, dir.path(), 2, PatchOptions::default());
    let folder = tree(&dir.path().join("same"), &[("bin/app", &program(1)), ("notes.txt", b"other notes")]);
    publish(&request(&cat, "app", "1.2", &folder)).unwrap();
    let after = load_module(&cat, "app");
    assert_eq!(after.releases[2].patches, module.releases[1].patches);
    assert_eq!(file_version(&after.releases[2], "bin/app"), "1.1");
}
