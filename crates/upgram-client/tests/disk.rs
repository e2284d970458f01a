//! A full disk during `upgram update` (C6; issue 5). Where this machine lets a test mount a
//! file system (root, `unshare -m`), the installation lives on a real tmpfs a few pages too
//! small, so the kernel itself says "no space left on device"; the same failures are always
//! injected too (`UPGRAM_FAILPOINT=enospc:…`), so the test runs everywhere. Either way the
//! update fails with a message that names the file and the cause, and the installation is
//! exactly the old version: every file by content, no stray file or folder, no journal or
//! backup, the module's state unchanged.

use std::path::{Path, PathBuf};

mod common;
use common::binaries::{
    ReleaseFiles, ServerProcess, assert_installation, install_release, serve_releases, server_args, state_modules,
    upgram_env,
};
use common::mounts::{can_mount, quote_path, upgram_in_namespace};

/// tmpfs counts whole 4 KiB pages: every non-empty file takes at least one.
const PAGE: usize = 4096;

/// The large file 1.1 adds: 16 pages, staged once and then copied beside its target.
static BIG: [u8; 16 * PAGE] = [0x5a; 16 * PAGE];

/// app 1.0: three small files. app 1.1: a.txt changed, b.txt deleted, c.txt kept, and a new
/// folder `sub` with the large file and a small one (ops in order: a.txt, sub/big.bin,
/// sub/d.txt, delete b.txt).
fn releases() -> Vec<ReleaseFiles<'static>> {
    vec![
        ("app", "1.0", vec![("a.txt", b"a one".as_slice()), ("b.txt", b"b one"), ("c.txt", b"c same")]),
        (
            "app",
            "1.1",
            vec![("a.txt", b"a two".as_slice()), ("c.txt", b"c same"), ("sub/big.bin", &BIG), ("sub/d.txt", b"d new")],
        ),
    ]
}

/// The old installation on the host: v1's three files and the state (4 pages on a tmpfs).
fn install_old(root: &Path) {
    install_release(root, "app", "1.0", &releases()[0].2);
}

/// Where the disk fills up.
#[derive(Clone, Copy, Debug)]
enum Full {
    /// A tmpfs of this many pages.
    Tmpfs(usize),
    /// A write that fails at this failpoint, on the host's disk.
    Injected(&'static str),
}

/// Runs `upgram update --yes` on a fresh v1 installation that fills up as `full` says; returns
/// the exit code, everything printed, and where the resulting installation can be examined.
fn update_on_full_disk(work: &Path, server: &ServerProcess, full: Full) -> (i32, String, PathBuf) {
    let name = format!("{full:?}").replace(|c: char| !c.is_ascii_alphanumeric(), "-");
    let result = work.join(format!("result-{name}"));
    let old = work.join(format!("old-{name}"));
    match full {
        Full::Tmpfs(pages) => {
            install_old(&old);
            let mount = work.join(format!("mnt-{name}"));
            std::fs::create_dir_all(&mount).unwrap();
            std::fs::create_dir_all(&result).unwrap();
            let (mnt, size) = (quote_path(&mount), pages * PAGE / 1024);
            let setup =
                [format!("mount -t tmpfs -o size={size}k tmpfs {mnt}"), format!("cp -a {}/. {mnt}", quote_path(&old))];
            let after = [format!("cp -a {mnt}/. {}", quote_path(&result))];
            let mut args = vec!["update", "--yes"];
            args.extend(server_args(server, mount.to_str().unwrap()));
            let (code, out, err) = upgram_in_namespace(&setup, &args, &[], &after);
            (code, format!("{out}{err}"), result)
        }
        Full::Injected(failpoint) => {
            install_old(&result);
            let mut args = vec!["update", "--yes"];
            args.extend(server_args(server, result.to_str().unwrap()));
            let output = upgram_env(&args, &[("UPGRAM_FAILPOINT", failpoint)]);
            let text =
                format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
            (output.status.code().unwrap_or(-1), text, result)
        }
    }
}

/// The variants to run: the real tmpfs where mounting is allowed, the injected failure always.
fn variants(pages: usize, failpoint: &'static str) -> Vec<Full> {
    let mut variants = Vec::new();
    if can_mount() {
        variants.push(Full::Tmpfs(pages));
    }
    variants.push(Full::Injected(failpoint));
    variants
}

/// The partial downloads left in the staging folder of the installation at `root`.
fn partial_downloads(root: &Path) -> Vec<PathBuf> {
    let staged = std::fs::read_dir(root.join(".upgram/staging")).unwrap();
    staged.map(|e| e.unwrap().path()).filter(|p| p.extension().is_some_and(|e| e == "part")).collect()
}

/// Runs each variant, expecting the update to fail with every piece of `message` (and of
/// `on_tmpfs` where the kernel decides which write fails) and to leave the installation exactly
/// at 1.0.
fn assert_full_disk_changes_nothing(pages: usize, failpoint: &'static str, message: &[&str], on_tmpfs: &[&str]) {
    let work = tempfile::tempdir().unwrap();
    let server = serve_releases(&work.path().join("server"), &releases());
    let model = work.path().join("model");
    install_old(&model);
    for full in variants(pages, failpoint) {
        let (code, output, root) = update_on_full_disk(work.path(), &server, full);
        eprintln!("variant: {full:?}\n{output}");
        assert_eq!(code, 1, "{full:?}: the update fails: {output}");
        let tmpfs = if matches!(full, Full::Tmpfs(_)) { on_tmpfs } else { &[] };
        for part in message.iter().chain(tmpfs) {
            assert!(output.contains(part), "{full:?}: the message says {part:?}: {output}");
        }
        assert_installation(&root, &releases()[0].2, &state_modules(&model), &format!("{full:?}"));
        assert_eq!(partial_downloads(&root), Vec::<PathBuf>::new(), "{full:?}: no partial download holds the space");
    }
}

#[test]
fn a_full_disk_while_staging_changes_nothing_and_gives_the_space_back() {
    // v1 (4 pages), a.txt staged (1): the 16 pages of big.bin do not fit in 12.
    assert_full_disk_changes_nothing(
        12,
        "enospc:stage",
        &["app", "failed", "staging", "No space left on device", "nothing changed"],
        &["staging sub/big.bin"],
    );
}

#[test]
fn a_full_disk_while_applying_rolls_the_module_back() {
    // Staging fits (v1 4 + staged 18 + journal 1 = 23 of 30 pages), but the copy of big.bin
    // beside its target, after a.txt was already replaced, does not: a.txt must come back and
    // the new folder `sub` must go.
    assert_full_disk_changes_nothing(
        30,
        "enospc:apply:1",
        &["app", "failed", "sub/big.bin.upgram-new", "No space left on device", "rolled back"],
        &[],
    );
}

/// On a tmpfs of `pages` (where mounting is allowed), the update succeeds: 1.1 exactly.
fn assert_tmpfs_update_succeeds(pages: usize) {
    if !can_mount() {
        eprintln!("variant: none (mounting not permitted)");
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let server = serve_releases(&work.path().join("server"), &releases());
    let (code, output, root) = update_on_full_disk(work.path(), &server, Full::Tmpfs(pages));
    eprintln!("variant: Tmpfs({pages})\n{output}");
    assert_eq!(code, 0, "{output}");
    let modules = state_modules(&root);
    assert_eq!(modules["app"].version, "1.1");
    assert_installation(&root, &releases()[1].2, &modules, &format!("Tmpfs({pages})"));
}

#[test]
fn with_room_enough_the_same_update_succeeds() {
    // The control: the sizes above, not something else, made those updates fail.
    assert_tmpfs_update_succeeds(64);
}

#[test]
fn a_full_disk_at_the_state_write_does_not_strand_a_committed_upgrade() {
    // 41 pages hold every file copied into place (v1 4, staged 18, journal 1, new 18) but not
    // the state's temporary file. Once the journal holds the commit the backups are not needed:
    // removing them first makes the room, so the upgrade completes. (Before, the update said
    // "failed" while the files were already 1.1, with backups and journal left for recovery.)
    assert_tmpfs_update_succeeds(41);
}
