//! The executable flag (SPEC.md §5.4) end to end, with the real binaries: release folders with
//! real modes published by `upgram-server publish`, served, and installed or updated by
//! `upgram`; the installed modes read back from the disk. A program published 0755 is
//! executable after `upgram install` and when an upgrade adds it; a replace sets or clears the
//! execute bits (a flag change alone is enough) and keeps the other bits the installation
//! had; a record file merged from its delta, and a busy program whose upgrade waited for
//! `apply-pending`, get their flag too.
#![cfg(unix)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

mod common;
use common::binaries::{ServerProcess, serve, server_args, state_json, upgram};
use upgram_core::Sha256Digest;
use upgram_core::records::{Record, RecordFile};

/// A file of a release folder: its id, content and mode there.
type ModedFile = (&'static str, &'static [u8], u32);

/// Publishes these files with these modes as `module` `version` into `dir/catalog` with the
/// real publisher ([`common::binaries::publish`], which writes the release folder
/// `dir/<module>-<version>`: the files are made there first with their modes, which its write
/// of the same contents keeps).
fn publish(dir: &Path, module: &str, version: &str, files: &[ModedFile]) {
    let folder = dir.join(format!("{module}-{version}"));
    for (id, content, mode) in files {
        let path = folder.join(id);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, content).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(*mode)).unwrap();
    }
    let contents: Vec<(&str, &[u8])> = files.iter().map(|(id, content, _)| (*id, *content)).collect();
    common::binaries::publish(dir, module, version, &contents, &[]);
}

/// `module` 1.0 with `files` published and installed with `upgram install` on an empty
/// folder; returns the server's folder and the installation root (the server is stopped).
fn installed(work: &Path, module: &str, files: &[ModedFile]) -> (PathBuf, PathBuf) {
    let root = work.join("installation");
    std::fs::create_dir_all(&root).unwrap();
    let server_dir = work.join("server");
    publish(&server_dir, module, "1.0", files);
    let server = serve(&server_dir);
    run(&["install", module], &server, &root);
    (server_dir, root)
}

/// Publishes `module` `version` with `files` and runs `upgram update --yes` against it.
fn update_to(server_dir: &Path, root: &Path, module: &str, version: &str, files: &[ModedFile]) -> String {
    publish(server_dir, module, version, files);
    let server = serve(server_dir);
    run(&["update", "--yes"], &server, root)
}

fn run(command: &[&str], server: &ServerProcess, root: &Path) -> String {
    let mut all = command.to_vec();
    all.extend(server_args(server, root.to_str().unwrap()));
    let (code, out, err) = upgram(&all);
    assert_eq!(code, 0, "{all:?}: {out}{err}");
    out
}

/// The permission bits of `root/id`.
fn mode(root: &Path, id: &str) -> u32 {
    std::fs::metadata(root.join(id)).unwrap_or_else(|e| panic!("{id}: {e}")).permissions().mode() & 0o7777
}

fn chmod(root: &Path, id: &str, mode: u32) {
    std::fs::set_permissions(root.join(id), std::fs::Permissions::from_mode(mode)).unwrap();
}

/// The umask `upgram` inherits from this process (read from /proc; the usual 022 if it cannot
/// be read, said loudly).
fn umask() -> u32 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let found = status
        .lines()
        .find_map(|line| line.strip_prefix("Umask:"))
        .and_then(|value| u32::from_str_radix(value.trim(), 8).ok());
    found.unwrap_or_else(|| {
        eprintln!("WARNING: cannot read this process's umask from /proc/self/status; assuming 022");
        0o022
    })
}

/// The mode of a new file (SPEC.md §5.4): 0666 less the umask, and if executable the owner's
/// execute bit and each one whose read bit is set.
fn new_file_mode(executable: bool) -> u32 {
    let start = 0o666 & !umask();
    if executable { start | 0o100 | ((start & 0o444) >> 2) } else { start }
}

/// The state's executable flag of file `id` of `module` (absent means not executable).
fn recorded_executable(root: &Path, module: &str, id: &str) -> bool {
    let file = &state_json(root)["modules"][module]["files"][id];
    assert!(file.is_object(), "{module}/{id} is not in the state");
    file.get("executable").and_then(serde_json::Value::as_bool).unwrap_or(false)
}

#[test]
fn programs_published_executable_are_installed_executable() {
    let work = tempfile::tempdir().unwrap();
    let files: [ModedFile; 4] = [
        ("bin/app", b"#!/bin/sh\necho app 1.0\n", 0o755),
        ("bin/group-tool", b"#!/bin/sh\necho group\n", 0o654),
        ("share/readme.txt", b"read me", 0o644),
        ("share/private.txt", b"private", 0o600),
    ];
    let (_, root) = installed(work.path(), "app", &files);

    assert_eq!(mode(&root, "bin/app"), new_file_mode(true), "bin/app");
    assert_eq!(mode(&root, "bin/group-tool"), new_file_mode(true), "any execute bit makes a program");
    assert_eq!(mode(&root, "share/readme.txt"), new_file_mode(false), "share/readme.txt");
    assert_eq!(mode(&root, "share/private.txt"), new_file_mode(false), "only the flag travels, not the mode");
    let out = std::process::Command::new(root.join("bin/app")).output().expect("the installed program runs");
    assert_eq!(out.stdout, b"app 1.0\n");
    assert!(recorded_executable(&root, "app", "bin/app"));
    assert!(!recorded_executable(&root, "app", "share/readme.txt"));
}

#[test]
fn upgrades_add_programs_and_set_or_clear_the_flag_of_replaced_files() {
    let work = tempfile::tempdir().unwrap();
    let (server_dir, root) = installed(
        work.path(),
        "app",
        &[
            ("bin/app", b"app one", 0o755),
            ("bin/script", b"script", 0o644),
            ("bin/retired", b"no longer a program", 0o755),
            ("share/readme.txt", b"read me", 0o644),
        ],
    );
    assert_eq!(mode(&root, "bin/script"), new_file_mode(false));
    assert_eq!(mode(&root, "bin/retired"), new_file_mode(true));
    // The installation's own choice of the other bits, which a replace keeps.
    chmod(&root, "bin/script", 0o640);
    chmod(&root, "bin/retired", 0o751);

    // 2.0: a new program; bin/app changes content and stays a program; bin/script becomes one
    // and bin/retired stops being one, both with unchanged content.
    update_to(&server_dir, &root, "app", "2.0", &later_release(0o755, 0o644));
    assert_eq!(std::fs::read(root.join("bin/app")).unwrap(), b"app two");
    assert_eq!(mode(&root, "bin/app"), new_file_mode(true), "a changed program stays one");
    assert_eq!(mode(&root, "bin/new-tool"), new_file_mode(true), "a program added by an upgrade");
    assert_eq!(mode(&root, "bin/script"), 0o750, "made a program by a flag change alone, other bits kept");
    assert_eq!(mode(&root, "bin/retired"), 0o640, "no longer a program, other bits kept");
    assert_eq!(mode(&root, "share/readme.txt"), new_file_mode(false), "untouched");
    assert!(recorded_executable(&root, "app", "bin/script"));
    assert!(!recorded_executable(&root, "app", "bin/retired"));

    // 3.0: and back.
    update_to(&server_dir, &root, "app", "3.0", &later_release(0o644, 0o755));
    assert_eq!(mode(&root, "bin/script"), 0o640, "bin/script is no longer a program");
    assert_eq!(mode(&root, "bin/retired"), 0o750, "bin/retired is a program again");
    assert_eq!(mode(&root, "bin/app"), new_file_mode(true), "unchanged, not touched");
    assert!(!recorded_executable(&root, "app", "bin/script"));
    assert!(recorded_executable(&root, "app", "bin/retired"));
}

/// The files of app 2.0 and 3.0, with the modes of `bin/script` and `bin/retired` in the
/// release folder.
fn later_release(script: u32, retired: u32) -> [ModedFile; 5] {
    [
        ("bin/app", b"app two", 0o755),
        ("bin/new-tool", b"new tool", 0o755),
        ("bin/script", b"script", script),
        ("bin/retired", b"no longer a program", retired),
        ("share/readme.txt", b"read me", 0o644),
    ]
}

/// A record file of 40 padded records, generation `g` changing records 3 and 7.
fn records(generation: u32) -> &'static [u8] {
    let contents: Vec<(u64, String)> = (1..=40u64)
        .map(|id| {
            let round = if id == 3 || id == 7 { generation } else { 1 };
            (id, format!("record {id} generation {round} {}", "pad ".repeat(20)))
        })
        .collect();
    let records = contents.iter().map(|(id, c)| Record { id: *id, content: c.as_bytes() }).collect();
    RecordFile::from_records(records).unwrap().to_vec().leak()
}

#[test]
fn record_files_merged_from_their_delta_keep_or_get_their_flag() {
    let work = tempfile::tempdir().unwrap();
    let (server_dir, root) =
        installed(work.path(), "db", &[("db/kept.rec", records(1), 0o755), ("db/gets.rec", records(1), 0o644)]);
    assert_eq!(mode(&root, "db/kept.rec"), new_file_mode(true));
    assert_eq!(mode(&root, "db/gets.rec"), new_file_mode(false));

    publish(&server_dir, "db", "2.0", &[("db/kept.rec", records(2), 0o755), ("db/gets.rec", records(2), 0o755)]);
    let server = serve(&server_dir);
    // Without the whole new file in the store (checked by the server as it loads, so only
    // now), only the record delta can produce it: the merge path is the one tested.
    std::fs::remove_file(server_dir.join("catalog/store").join(Sha256Digest::of(records(2)).to_hex())).unwrap();
    run(&["update", "--yes"], &server, &root);
    for id in ["db/kept.rec", "db/gets.rec"] {
        assert_eq!(std::fs::read(root.join(id)).unwrap(), records(2), "{id} merged");
        assert_eq!(mode(&root, id), new_file_mode(true), "{id}");
        assert!(recorded_executable(&root, "db", id), "{id} in the state");
    }
}

#[test]
fn a_busy_program_gets_its_flag_when_its_deferred_upgrade_completes() {
    let work = tempfile::tempdir().unwrap();
    let (server_dir, root) = installed(work.path(), "app", &[("bin/app.bin", b"app one", 0o644)]);
    publish(&server_dir, "app", "1.1", &[("bin/app.bin", b"app two", 0o755), ("bin/helper", b"helper", 0o755)]);
    let server = serve(&server_dir);

    // The running program holds its file: the module waits for the program's exit.
    let held = std::fs::File::open(root.join("bin/app.bin")).unwrap();
    held.lock_shared().unwrap();
    let out = run(&["update", "--yes"], &server, &root);
    assert!(out.contains("deferred") && out.contains("program-exit"), "{out}");
    assert_eq!(mode(&root, "bin/app.bin"), new_file_mode(false), "not yet");
    assert!(!root.join("bin/helper").exists(), "the whole module waits");
    assert_eq!(state_json(&root)["pending"]["app"]["ops"][0]["Replace"]["executable"], true, "{out}");
    drop(held);

    let (code, out, err) = upgram(&["apply-pending", "--trigger", "program-exit", "--root", root.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("applied"), "{out}");
    assert_eq!(std::fs::read(root.join("bin/app.bin")).unwrap(), b"app two");
    assert_eq!(mode(&root, "bin/app.bin"), new_file_mode(true), "replaced by apply-pending");
    assert_eq!(mode(&root, "bin/helper"), new_file_mode(true), "added by apply-pending");
    assert!(recorded_executable(&root, "app", "bin/app.bin"));
}
