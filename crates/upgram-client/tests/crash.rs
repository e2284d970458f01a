//! Crash safety of `upgram update` with real files and real child processes (C6; issue 5):
//! killed at every journal step, then recovered; killed during recovery, then recovered again;
//! and the journal cut at every byte offset. Each time the module is entirely at the old
//! version or entirely at the new one, by hash, with no stray file.

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};

mod common;
use common::binaries::{
    ReleaseFiles, ServerProcess, expected_tree, install_release, serve_releases, server_args, tree, upgram, upgram_env,
    wait_for_lock_free,
};
use upgram_client::apply::Record;
use upgram_client::journal::{self, Journal};
use upgram_core::Sha256Digest;

/// app 1.0: a.txt, b.txt, c.txt. app 1.1: a.txt changed, b.txt deleted, c.txt kept, sub/d.txt added.
fn releases() -> Vec<ReleaseFiles<'static>> {
    vec![
        ("app", "1.0", vec![("a.txt", b"a one".as_slice()), ("b.txt", b"b one"), ("c.txt", b"c same")]),
        ("app", "1.1", vec![("a.txt", b"a two".as_slice()), ("c.txt", b"c same"), ("sub/d.txt", b"d new")]),
    ]
}

fn files_of(version: &str) -> Vec<(&'static str, &'static [u8])> {
    releases().into_iter().find(|(_, v, _)| *v == version).unwrap().2
}

/// An installation of app 1.0 at `root`, files and state.
fn install_old(root: &Path) {
    install_release(root, "app", "1.0", &files_of("1.0"));
}

/// The module is entirely old or entirely new, matching the state, with nothing left over.
fn assert_consistent(root: &Path, context: &str) -> String {
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root.join(".upgram/state.json")).unwrap()).unwrap();
    let version = state["modules"]["app"]["version"].as_str().unwrap().to_owned();
    assert_eq!(tree(root), expected_tree(files_of(&version)), "{context}: files do not match version {version}");
    for (path, file) in state["modules"]["app"]["files"].as_object().unwrap() {
        let content = std::fs::read(root.join(path)).unwrap();
        assert_eq!(Sha256Digest::of(&content).to_hex(), file["sha256"].as_str().unwrap(), "{context}: {path}");
    }
    let meta = root.join(".upgram");
    assert!(!meta.join("journal/app.journal").exists(), "{context}: journal left behind");
    assert!(!meta.join("backup/app").exists(), "{context}: backups left behind");
    version
}

fn update_killed_at(server: &ServerProcess, root: &Path, failpoint: &str) -> bool {
    let root_str = root.to_str().unwrap();
    let mut argv = vec!["update", "--yes"];
    argv.extend(server_args(server, root_str));
    let output = upgram_env(&argv, &[("UPGRAM_FAILPOINT", failpoint)]);
    match output.status.signal() {
        Some(signal) => {
            assert_eq!(signal, 6, "{failpoint}: died by SIGABRT at the failpoint");
            true
        }
        None => {
            assert!(output.status.success(), "{failpoint}: {}", String::from_utf8_lossy(&output.stderr));
            false
        }
    }
}

fn recover(root: &Path) {
    let (code, out, err) = upgram(&["recover", "--root", root.to_str().unwrap()]);
    assert_eq!(code, 0, "recover: {out}{err}");
}

const FAILPOINTS: [&str; 12] = [
    "apply:begin",
    "apply:backup:0",
    "apply:install:0",
    "apply:backup:1",
    "apply:install:1",
    "apply:backup:2",
    "apply:install:2",
    "apply:backup:3",
    "apply:install:3",
    "apply:commit",
    "apply:state",
    "none",
];

#[test]
fn killed_at_every_step_then_recovered() {
    let work = tempfile::tempdir().unwrap();
    let server = serve_releases(&work.path().join("server"), &releases());
    let mut versions = BTreeMap::new();
    for failpoint in FAILPOINTS {
        let root = work.path().join(format!("install-{}", failpoint.replace(':', "-")));
        install_old(&root);
        let crashed = update_killed_at(&server, &root, failpoint);
        recover(&root);
        let version = assert_consistent(&root, failpoint);
        versions.insert(failpoint, (crashed, version));
    }
    // Before the commit: back at 1.0; from the commit on: at 1.1.
    assert_eq!(versions["apply:begin"], (true, "1.0".into()));
    assert_eq!(versions["apply:commit"], (true, "1.1".into()));
    assert_eq!(versions["apply:state"], (true, "1.1".into()));
    assert_eq!(versions["none"], (false, "1.1".into()));
    let crashes = versions.values().filter(|(crashed, _)| *crashed).count();
    assert!(crashes >= 6, "the update has at least 6 steps to die at: {versions:?}");
}

#[test]
fn killed_during_recovery_then_recovered_again() {
    let work = tempfile::tempdir().unwrap();
    let server = serve_releases(&work.path().join("server"), &releases());
    for (crash, during) in [
        ("apply:install:1", "recover:undo:0"),
        ("apply:install:1", "recover:undo:2"),
        ("apply:commit", "recover:forward"),
    ] {
        let root = work.path().join(format!("install-{}-{}", crash.replace(':', "-"), during.replace(':', "-")));
        install_old(&root);
        assert!(update_killed_at(&server, &root, crash));
        let output = upgram_env(&["recover", "--root", root.to_str().unwrap()], &[("UPGRAM_FAILPOINT", during)]);
        assert_eq!(output.status.signal(), Some(6), "{during}: recovery died at the failpoint");
        recover(&root);
        assert_consistent(&root, &format!("{crash} then {during}"));
    }
}

/// The failpoint right after the step that `record` announces.
fn failpoint_after(record: &Record) -> String {
    match record {
        Record::Begin { .. } => "apply:begin".into(),
        Record::Backup { index } => format!("apply:backup:{index}"),
        Record::Install { index } => format!("apply:install:{index}"),
        Record::Commit => "apply:commit".into(),
        Record::Package { .. } => "package:begin".into(),
        Record::PackageDone { .. } => "package:done".into(),
    }
}

/// The bytes of `record` as the journal frames it.
fn framed(dir: &Path, record: &Record) -> Vec<u8> {
    let path = dir.join("frame.journal");
    let _ = std::fs::remove_file(&path);
    Journal::create(&path).unwrap().append(record).unwrap();
    std::fs::read(&path).unwrap()
}

#[test]
fn a_journal_cut_at_every_byte_behaves_like_a_crash_before_that_record() {
    let work = tempfile::tempdir().unwrap();
    let server = serve_releases(&work.path().join("server"), &releases());
    // A run that dies right after its commit record shows every record, in order.
    let model = work.path().join("model");
    install_old(&model);
    assert!(update_killed_at(&server, &model, "apply:commit"));
    let journal = std::fs::read(model.join(".upgram/journal/app.journal")).unwrap();
    let (records, clean) = journal::decode::<Record>(&journal);
    assert!(clean && records.last() == Some(&Record::Commit), "{records:?}");
    let mut outcomes = Vec::new();
    for (k, record) in records.iter().enumerate() {
        // The disk as a crash while writing record k leaves it: record k-1's step done.
        let crashed = work.path().join(format!("crashed-{k}"));
        install_old(&crashed);
        let prefix = if k == 0 {
            std::fs::create_dir_all(crashed.join(".upgram/journal")).unwrap();
            Vec::new()
        } else {
            assert!(update_killed_at(&server, &crashed, &failpoint_after(&records[k - 1])));
            std::fs::read(crashed.join(".upgram/journal/app.journal")).unwrap()
        };
        let frame = if k == 0 {
            journal[..journal.len().min(framed(work.path(), record).len())].to_vec()
        } else {
            framed(work.path(), record)
        };
        for cut in 0..=frame.len() {
            let root = work.path().join(format!("cut-{k}-{cut}"));
            copy_tree(&crashed, &root);
            let mut bytes = prefix.clone();
            bytes.extend_from_slice(&frame[..cut]);
            std::fs::write(root.join(".upgram/journal/app.journal"), &bytes).unwrap();
            recover(&root);
            let version = assert_consistent(&root, &format!("record {k} ({record:?}) cut at byte {cut}"));
            outcomes.push((k, cut, version));
            std::fs::remove_dir_all(&root).unwrap();
        }
    }
    let last = records.len() - 1;
    for (k, cut, version) in &outcomes {
        let committed = *k == last && *cut == outcomes.iter().filter(|(j, _, _)| *j == last).count() - 1;
        assert_eq!(version, if committed { "1.1" } else { "1.0" }, "record {k} cut at {cut}");
    }
    eprintln!("{} recoveries from a torn journal, {} records", outcomes.len(), records.len());
}

fn copy_tree(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let path: PathBuf = entry.unwrap().path();
        let target = to.join(path.file_name().unwrap());
        if path.is_dir() {
            std::fs::create_dir_all(&target).unwrap();
            copy_tree(&path, &target);
        } else {
            std::fs::create_dir_all(to).unwrap();
            std::fs::copy(&path, &target).unwrap();
        }
    }
}

#[test]
fn a_second_concurrent_update_is_refused_by_the_lock() {
    let work = tempfile::tempdir().unwrap();
    let server = serve_releases(&work.path().join("server"), &releases());
    let root = work.path().join("install");
    install_old(&root);
    // Another process's lock, held here.
    let held = upgram_client::Installation::open_locked(&root).unwrap();
    let root_str = root.to_str().unwrap();
    let mut argv = vec!["update", "--yes"];
    argv.extend(server_args(&server, root_str));
    let (code, _, err) = upgram(&argv);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("another upgram is working on this installation"), "{err}");
    assert_eq!(assert_consistent(&root, "refused"), "1.0", "nothing changed");
    drop(held);
    wait_for_lock_free(&root);
    let (code, out, err) = upgram(&argv);
    assert_eq!(code, 0, "once the lock is free: {out}{err}");
    assert_eq!(assert_consistent(&root, "after"), "1.1");
}

#[test]
fn a_dry_run_changes_nothing() {
    let work = tempfile::tempdir().unwrap();
    let server = serve_releases(&work.path().join("server"), &releases());
    let root = work.path().join("install");
    install_old(&root);
    let root_str = root.to_str().unwrap();
    let mut argv = vec!["update", "--yes", "--dry-run"];
    argv.extend(server_args(&server, root_str));
    let (code, out, err) = upgram(&argv);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("app") && out.contains("1.0") && out.contains("1.1"), "the plan is printed: {out}");
    assert_eq!(assert_consistent(&root, "dry run"), "1.0");
    assert!(!root.join(".upgram/staging").exists(), "nothing was even downloaded");
}

#[test]
fn a_symbolic_link_out_of_the_installation_is_refused() {
    let work = tempfile::tempdir().unwrap();
    let server = serve_releases(&work.path().join("server"), &releases());
    let root = work.path().join("install");
    install_old(&root);
    let outside = work.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    // 1.1 adds sub/d.txt: `sub` is a link to a folder outside the installation.
    std::os::unix::fs::symlink(&outside, root.join("sub")).unwrap();
    let root_str = root.to_str().unwrap();
    let mut argv = vec!["update", "--yes"];
    argv.extend(server_args(&server, root_str));
    let (code, out, err) = upgram(&argv);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("symbolic link"), "the reason is given: {out}");
    assert!(std::fs::read_dir(&outside).unwrap().next().is_none(), "nothing written outside the installation");
    assert_eq!(std::fs::read(root.join("a.txt")).unwrap(), b"a one", "the module stayed at 1.0");
}
