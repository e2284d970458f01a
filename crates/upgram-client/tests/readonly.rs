//! `upgram update` on a read-only file system (C6; issue 5). Permission bits do not stop root,
//! so the tests remount folders read-only inside a private mount namespace (`unshare -m`), which
//! stops everyone; where mounting is not permitted they say so and do nothing.
//!
//! A read-only installation cannot even be locked: the update stops before anything changes,
//! and says why. A read-only folder inside a writable installation is met mid-apply, after
//! other files of the module were replaced: the module is rolled back.

use std::path::Path;

mod common;
use common::binaries::{
    ReleaseFiles, assert_installation, install_release, serve_releases, server_args, state_modules,
};
use common::mounts::{can_mount, quote_path, upgram_in_namespace};

/// Two modules whose 1.1 writes into `lib/`: `adds` puts a new file there, `changes` replaces
/// one; each first replaces a file at the top (its ops run in file-id order).
fn releases() -> Vec<ReleaseFiles<'static>> {
    vec![
        ("adds", "1.0", vec![("a.txt", b"a one".as_slice()), ("lib/keep.txt", b"keep")]),
        ("adds", "1.1", vec![("a.txt", b"a two".as_slice()), ("lib/keep.txt", b"keep"), ("lib/new.txt", b"new")]),
        ("changes", "1.0", vec![("b.txt", b"b one".as_slice()), ("lib/x.txt", b"x one")]),
        ("changes", "1.1", vec![("b.txt", b"b two".as_slice()), ("lib/x.txt", b"x two")]),
    ]
}

/// Both modules at 1.0, by hand.
fn install_old(root: &Path) -> Vec<(&'static str, &'static [u8])> {
    let mut files = Vec::new();
    for (module, version, release) in releases().into_iter().filter(|(_, v, _)| *v == "1.0") {
        install_release(root, module, version, &release);
        files.extend(release);
    }
    files
}

/// Mounts `folder` read-only over itself (in the namespace only).
fn read_only(folder: &Path) -> [String; 2] {
    let folder = quote_path(folder);
    [format!("mount --bind {folder} {folder}"), format!("mount -o remount,bind,ro {folder}")]
}

/// Runs `upgram update --yes` on a 1.0 installation with `ro` (a folder of it) read-only;
/// checks that it fails with every piece of `message` and leaves 1.0 exactly.
fn assert_refused_unchanged(ro: &str, message: &[&str]) {
    if !can_mount() {
        eprintln!("skipped: a read-only mount needs a private mount namespace");
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let server = serve_releases(&work.path().join("server"), &releases());
    let root = work.path().join("install");
    let files = install_old(&root);
    let before = state_modules(&root);
    let mut args = vec!["update", "--yes"];
    args.extend(server_args(&server, root.to_str().unwrap()));
    let (code, out, err) = upgram_in_namespace(&read_only(&root.join(ro)), &args, &[], &[]);
    let output = format!("{out}{err}");
    eprintln!("read-only {ro:?}:\n{output}");
    assert_eq!(code, 1, "the update fails: {output}");
    for part in message {
        assert!(output.contains(part), "the message says {part:?}: {output}");
    }
    // The mount is gone with the namespace: what is on disk is what upgram left.
    assert_installation(&root, &files, &before, &format!("read-only {ro:?}"));
}

#[test]
fn a_read_only_installation_is_refused_before_anything_changes() {
    assert_refused_unchanged(
        "",
        &["cannot lock the installation", ".upgram/lock", "Read-only file system", "nothing changed"],
    );
}

#[test]
fn a_read_only_folder_met_mid_apply_rolls_each_module_back() {
    // adds: a.txt replaced, then lib/new.txt cannot be written. changes: b.txt replaced, then
    // lib/x.txt cannot be moved to the backup folder (a rename out of a read-only mount).
    assert_refused_unchanged(
        "lib",
        &[
            "lib/new.txt.upgram-new: Read-only file system",
            "module `adds` rolled back",
            "lib/x.txt: Invalid cross-device link (os error 18): it is on another file system",
            "module `changes` rolled back",
        ],
    );
}
