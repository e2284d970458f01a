//! A whole installation's life with the real publisher, server and client (C5–C8; issue 5):
//! 1.0 of every module is published and installed with `upgram install` on an empty folder;
//! 2.0 is published, and one `upgram update` takes the installation there: a module whose files
//! change, go and come; a record file merged from its record delta; an install package; and a
//! dependency chain (plug-in → main module → main program → a runtime that is not installed
//! yet and arrives as a dependency). Afterwards the installation is 2.0 byte for byte, the
//! state says so file by file, and the modules went in dependency order.

use std::collections::BTreeMap;
use std::path::Path;

mod common;
use common::binaries::{
    ServerProcess, assert_installation, publish, serve_with_new_key, server_args, state_modules, upgram,
};
use upgram_client::state::{InstalledFile, InstalledModule};
use upgram_core::Sha256Digest;
use upgram_core::records::{Record, RecordFile};

type Files = Vec<(&'static str, &'static [u8])>;

fn records(entries: &[(u64, &str)]) -> &'static [u8] {
    let records = entries.iter().map(|(id, c)| Record { id: *id, content: c.as_bytes() }).collect();
    RecordFile::from_records(records).unwrap().to_vec().leak()
}

/// The record file's 1.0 and 2.0: one record changed, one deleted, one added.
fn signatures(version: &str) -> &'static [u8] {
    let padding = "padding ".repeat(200);
    match version {
        "1.0" => records(&[(1, "alpha"), (2, "beta"), (3, "gamma"), (4, &padding)]),
        _ => records(&[(1, "ALPHA"), (3, "gamma"), (4, &padding), (100, "added")]),
    }
}

/// The installer of `driver` at a version: it writes that driver in the installation (its
/// folder).
fn driver_installer(version: &str) -> String {
    format!("#!/bin/sh\nprintf 'driver {version}' > drv.dll\n")
}

/// The file-list modules: id, then the files of 1.0 and of 2.0.
fn file_modules() -> Vec<(&'static str, Files, Files)> {
    vec![
        (
            "files",
            vec![("keep.txt", b"keep"), ("change.txt", b"one"), ("gone.txt", b"bye"), ("dir/old.txt", b"old")],
            vec![("keep.txt", b"keep"), ("change.txt", b"two"), ("dir/new.txt", b"new"), ("added/deep/f.txt", b"f")],
        ),
        (
            "records",
            vec![("sig.rec", signatures("1.0")), ("readme", b"r")],
            vec![("sig.rec", signatures("2.0")), ("readme", b"r")],
        ),
        ("a-plugin", vec![("plugins/p.bin", b"plugin one")], vec![("plugins/p.bin", b"plugin two")]),
        ("b-main", vec![("main.bin", b"main one")], vec![("main.bin", b"main two"), ("main.cfg", b"cfg")]),
        ("c-program", vec![("program", b"program one")], vec![("program", b"program two")]),
    ]
}

/// Installed only as a dependency of c-program 2.0.
const RUNTIME: &[(&str, &[u8])] = &[("runtime/lib.txt", b"runtime")];

/// The requirement of each module's 2.0: the chain, in reverse order of the module ids, so that
/// dependency order is not the planner's default (ascending id) order.
fn requirement(module: &str) -> Option<&'static str> {
    match module {
        "a-plugin" => Some("b-main>=2.0"),
        "b-main" => Some("c-program>=2.0"),
        "c-program" => Some("d-runtime>=1.0"),
        _ => None,
    }
}

/// Publishes the driver's release `version` as an install package.
fn publish_driver(work: &Path, version: &str) {
    let package = work.join(format!("driver-{version}.sh"));
    std::fs::write(&package, driver_installer(version)).unwrap();
    let dll = format!("driver {version}").into_bytes().leak();
    publish(work, "driver", version, &[("drv.dll", dll)], &["--package", package.to_str().unwrap()]);
}

/// Publishes 1.0 of every module but the runtime, and serves it.
fn serve_1_0(work: &Path) -> ServerProcess {
    for (module, old, _) in file_modules() {
        publish(work, module, "1.0", &old, &[]);
    }
    publish_driver(work, "1.0");
    serve_with_new_key(work, &work.join("catalog"))
}

/// Publishes 2.0 of every module (dependencies before the modules that need them), and the
/// runtime, and serves them.
fn serve_2_0(work: &Path) -> ServerProcess {
    publish(work, "d-runtime", "1.0", RUNTIME, &[]);
    let mut modules = file_modules();
    // Requirements must name published releases: c-program, then b-main, then a-plugin.
    modules.reverse();
    for (module, _, new) in &modules {
        let depends = requirement(module).map(|r| vec!["--depends", r]).unwrap_or_default();
        publish(work, module, "2.0", new, &depends);
    }
    publish_driver(work, "2.0");
    let server = serve_with_new_key(work, &work.join("catalog"));
    // Without the whole new record file (the server checks its store as it loads, so only
    // now), only its record delta can produce it.
    let whole = work.join("catalog/store").join(Sha256Digest::of(signatures("2.0")).to_hex());
    std::fs::remove_file(whole).unwrap();
    server
}

/// The (id, outcome) rows of an update or install summary table.
fn summary_rows(out: &str) -> Vec<(&str, &str)> {
    out.lines()
        .skip(1)
        .take_while(|line| !line.contains(" downloaded"))
        .filter_map(|line| {
            let mut cells = line.split_whitespace();
            Some((cells.next()?, cells.next()?))
        })
        .collect()
}

/// The state entry of a module installed from file lists up to 2.0: each file at the version
/// in which its content last changed.
fn expected_entry(version: &str, old: &[(&str, &[u8])], new: &[(&str, &[u8])]) -> InstalledModule {
    let mut entry = InstalledModule { version: version.to_owned(), ..Default::default() };
    for (path, content) in new {
        let unchanged = old.iter().any(|(p, c)| p == path && c == content);
        let file = InstalledFile {
            version: if unchanged { "1.0" } else { version }.to_owned(),
            sha256: Sha256Digest::of(content).to_hex(),
            executable: false,
        };
        entry.files.insert((*path).to_owned(), file);
    }
    entry
}

#[test]
fn install_1_0_then_one_update_takes_the_whole_installation_to_2_0() {
    let work = tempfile::tempdir().unwrap();
    let server_dir = work.path().join("server");
    let root = work.path().join("install");
    let root_str = root.to_str().unwrap();
    std::fs::create_dir_all(&root).unwrap();

    // 1.0, installed on an empty folder.
    let server = serve_1_0(&server_dir);
    let mut install = vec!["install", "files", "records", "a-plugin", "b-main", "c-program", "driver"];
    install.extend(server_args(&server, root_str));
    let (code, out, err) = upgram(&install);
    assert_eq!(code, 0, "{out}{err}");
    assert!(summary_rows(&out).iter().all(|(_, outcome)| *outcome == "installed"), "{out}");
    let mut files: Vec<(&str, &[u8])> = vec![("drv.dll", b"driver 1.0")];
    let mut modules = BTreeMap::new();
    for (module, old, _) in file_modules() {
        modules.insert(module.to_owned(), expected_entry("1.0", &[], &old));
        files.extend(old);
    }
    // A package installs the module as a whole: its files are the installer's business.
    modules.insert("driver".to_owned(), InstalledModule { version: "1.0".into(), ..Default::default() });
    assert_installation(&root, &files, &modules, "after the install");
    drop(server);

    // 2.0 published: one update.
    let server = serve_2_0(&server_dir);
    let mut update = vec!["update", "--yes"];
    update.extend(server_args(&server, root_str));
    let (code, out, err) = upgram(&update);
    assert_eq!(code, 0, "{out}{err}");
    let rows = summary_rows(&out);
    // d-runtime was not installed: it comes as a dependency.
    let expected = |module: &str| if module == "d-runtime" { "installed" } else { "upgraded" };
    assert!(rows.iter().all(|(module, outcome)| *outcome == expected(module)), "{out}");
    let order: Vec<&str> = rows.iter().map(|(module, _)| *module).collect();
    let at = |module: &str| order.iter().position(|m| *m == module).unwrap_or_else(|| panic!("{module}: {out}"));
    assert!(
        at("d-runtime") < at("c-program") && at("c-program") < at("b-main") && at("b-main") < at("a-plugin"),
        "dependencies first: {order:?}"
    );
    assert_eq!(order.len(), 7, "every module, once: {order:?}");

    let mut files: Vec<(&str, &[u8])> = RUNTIME.to_vec();
    let mut modules = BTreeMap::new();
    for (module, old, new) in file_modules() {
        modules.insert(module.to_owned(), expected_entry("2.0", &old, &new));
        files.extend(new);
    }
    modules.insert("d-runtime".to_owned(), expected_entry("1.0", RUNTIME, RUNTIME));
    modules.insert("driver".to_owned(), InstalledModule { version: "2.0".into(), ..Default::default() });
    files.push(("drv.dll", b"driver 2.0"));
    assert_installation(&root, &files, &modules, "after the update");
    assert_eq!(state_modules(&root)["records"].files["sig.rec"].version, "2.0", "merged from its delta");

    let (code, out, err) = upgram(&update);
    assert_eq!(code, 0, "{out}{err}");
    assert_installation(&root, &files, &modules, "a second update changes nothing");
}
