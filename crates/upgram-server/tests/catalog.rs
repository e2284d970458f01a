//! The catalog folder (S1): hand-written broken catalogs give errors that name the file, the
//! line and the field; good ones load, and what `save_module` writes loads back unchanged.

use std::fs;
use std::path::Path;

use upgram_server::catalog::{
    self, Blob, Catalog, CatalogError, DeletedFile, DeltaRef, Module, Package, PatchRef, Release, ReleaseFile,
    Settings, save_module, store_blob,
};

/// A catalog folder with two blobs in its store: returns their hashes and sizes.
fn catalog_with_blobs(dir: &Path) -> (Blob, Blob) {
    let payload = store_blob(dir, &b"payload bytes\n"[..]).unwrap();
    let other = store_blob(dir, &b"UGRF\x01\x00\x00\x00\x00"[..]).unwrap();
    (payload, other)
}

/// Replaces `{SHA}`, `{SIZE}`, `{SHA2}`, `{SIZE2}` with the blobs' values.
fn fill(template: &str, payload: Blob, other: Blob) -> String {
    template
        .replace("{SHA2}", &other.sha256.to_hex())
        .replace("{SIZE2}", &other.size.to_string())
        .replace("{SHA}", &payload.sha256.to_hex())
        .replace("{SIZE}", &payload.size.to_string())
}

/// The 1-based line holding the marker `# <-`.
fn marked_line(text: &str) -> usize {
    1 + text.lines().position(|line| line.contains("# <-")).expect("the case marks its line with `# <-`")
}

const GOOD: &str = r#"id = "core"
frequent = ["db/sig.rec"]

[[release]]
version = "1.0"
forced = true

[[release.file]]
id = "bin/app"
version = "1.0"
sha256 = "{SHA}"
size = {SIZE}

[[release.file]]
id = "db/sig.rec"
version = "1.0"
sha256 = "{SHA2}"
size = {SIZE2}

[[release]]
version = "1.1"
requires = ["main>=2"]
package = { sha256 = "{SHA}", size = {SIZE}, args = "--quiet" }

[[release.file]]
id = "db/sig.rec"
version = "1.1"
sha256 = "{SHA2}"
size = {SIZE2}

[[release.file]]
id = "bin/app"
version = "1.0"
sha256 = "{SHA}"
size = {SIZE}

[[release.deleted]]
id = "old.txt"
version = "1.1"

[[release.delta]]
file = "db/sig.rec"
from = "1.0"
sha256 = "{SHA}"
size = {SIZE}
"#;

const MAIN: &str = r#"id = "main"
[[release]]
version = "2.0"
[[release.file]]
id = "main.bin"
version = "2.0"
sha256 = "{SHA}"
size = {SIZE}
"#;

fn write_module(dir: &Path, id: &str, text: &str) {
    fs::create_dir_all(dir.join("modules")).unwrap();
    fs::write(dir.join("modules").join(format!("{id}.toml")), text).unwrap();
}

#[test]
fn a_good_catalog_loads_sorted() {
    let dir = tempfile::tempdir().unwrap();
    let (payload, other) = catalog_with_blobs(dir.path());
    write_module(dir.path(), "core", &fill(GOOD, payload, other));
    write_module(dir.path(), "main", &fill(MAIN, payload, other));
    let catalog = catalog::load(dir.path()).unwrap();
    assert_eq!(catalog.settings, Settings::default());
    let core = &catalog.modules["core"];
    assert_eq!(core.frequent, ["db/sig.rec"]);
    let versions: Vec<&str> = core.releases.iter().map(|r| r.version.as_str()).collect();
    assert_eq!(versions, ["1.0", "1.1"]);
    let latest = core.latest().unwrap();
    let ids: Vec<&str> = latest.files.iter().map(|f| f.id.as_str()).collect();
    assert_eq!(ids, ["bin/app", "db/sig.rec"], "files sorted by id");
    assert_eq!(latest.requires, [("main".to_owned(), "2".parse().unwrap())]);
    assert_eq!(latest.package, Some(Package { blob: payload, args: Some("--quiet".into()) }));
    assert!(core.releases[0].forced && !latest.forced);
    assert_eq!(latest.deleted[0].id, "old.txt");
    assert_eq!(latest.deltas[0].from.as_str(), "1.0");
    assert!(
        core.releases.iter().flat_map(|r| &r.files).all(|f| !f.executable),
        "a catalog written before the executable flag loads with every file not executable"
    );
}

#[test]
fn saved_modules_load_back_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let (payload, other) = catalog_with_blobs(dir.path());
    let v = |s: &str| s.parse().unwrap();
    let module = Module {
        id: "odd.module_1".into(),
        frequent: vec!["data/q\"uote.rec".into()],
        releases: vec![
            Release {
                channels: upgram_server::catalog::rollout::default_channels(),
                rollout: Default::default(),
                version: v("1.0-rc.1"),
                forced: false,
                full: true,
                rollback: false,
                requires: vec![],
                package: None,
                files: vec![ReleaseFile {
                    id: "data/q\"uote.rec".into(),
                    version: v("1.0-rc.1"),
                    blob: other,
                    executable: false,
                }],
                deleted: vec![],
                deltas: vec![],
                patches: Vec::new(),
            },
            Release {
                channels: upgram_server::catalog::rollout::default_channels(),
                rollout: Default::default(),
                version: v("1.0.0"),
                forced: true,
                full: false,
                rollback: true,
                requires: vec![("main".into(), v("2.0"))],
                package: Some(Package { blob: payload, args: Some("--dir \"C:\\Program Files\" \u{1}é".into()) }),
                files: vec![ReleaseFile {
                    id: "data/q\"uote.rec".into(),
                    version: v("1.0.0"),
                    blob: payload,
                    executable: true,
                }],
                deleted: vec![DeletedFile { id: "gone/ü.txt".into(), version: v("1.0") }],
                deltas: vec![DeltaRef { file: "data/q\"uote.rec".into(), from: v("1.0-rc.1"), blob: other }],
                patches: vec![PatchRef {
                    file: "data/q\"uote.rec".into(),
                    from: v("1.0-rc.1"),
                    base_sha256: other.sha256,
                    blob: other,
                }],
            },
        ],
    };
    // The control character in `args` must be refused on load: drop it for the round trip.
    let mut module = module;
    if let Some(package) = &mut module.releases[1].package {
        package.args = Some("--dir \"C:\\Program Files\" é".into());
    }
    save_module(dir.path(), &module).unwrap();
    write_module(dir.path(), "main", &fill(MAIN, payload, other));
    let catalog = catalog::load(dir.path()).unwrap();
    assert_eq!(catalog.modules["odd.module_1"], module);
    // Saving again what was loaded writes the same bytes.
    let before = fs::read(dir.path().join("modules/odd.module_1.toml")).unwrap();
    save_module(dir.path(), &catalog.modules["odd.module_1"]).unwrap();
    let after = fs::read(dir.path().join("modules/odd.module_1.toml")).unwrap();
    assert_eq!(before, after);
}

#[test]
fn store_blob_is_content_addressed_and_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let blob = store_blob(dir.path(), &b"abc"[..]).unwrap();
    assert_eq!(blob.sha256.to_hex(), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    assert_eq!(blob.size, 3);
    assert_eq!(store_blob(dir.path(), &b"abc"[..]).unwrap(), blob);
    let names: Vec<String> = fs::read_dir(dir.path().join("store"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, [blob.sha256.to_hex()], "one blob, no temporary file left");
    let source = dir.path().join("source.bin");
    fs::write(&source, b"abc").unwrap();
    assert_eq!(catalog::store_file(dir.path(), &source).unwrap(), blob);
}

#[test]
fn an_empty_or_missing_folder() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(catalog::load(dir.path()).unwrap(), Catalog::default());
    let missing = dir.path().join("nope");
    let error = catalog::load(&missing).unwrap_err();
    assert!(matches!(error, CatalogError::Io { .. }), "{error}");
    assert!(error.to_string().contains("nope"), "{error}");
}

/// One broken module file: the line is the one marked `# <-`.
struct Case {
    name: &'static str,
    text: &'static str,
    field: &'static str,
    says: &'static str,
}

const CASES: &[Case] = &[
    Case {
        name: "bad version",
        text: "id = \"core\"\n[[release]]\nversion = \"01.2\" # <-\n",
        field: "version",
        says: "\"01.2\" is not a version",
    },
    Case {
        name: "duplicate release",
        text: "id = \"core\"\n[[release]]\nversion = \"1.2\"\n[[release]]\nversion = \"1.2.0\" # <-\n",
        field: "version",
        says: "already listed at line 3",
    },
    Case {
        name: "non-ascending releases",
        text: "id = \"core\"\n[[release]]\nversion = \"1.10\"\n[[release]]\nversion = \"1.9\" # <-\n",
        field: "version",
        says: "ascending version order",
    },
    Case {
        name: "unknown key",
        text: "id = \"core\"\n[[release]]\nversion = \"1.0\"\ncolour = \"red\" # <-\n",
        field: "colour",
        says: "unknown field `colour`",
    },
    Case {
        name: "unknown key in a file",
        text: "id = \"core\"\n[[release]]\nversion = \"1.0\"\n[[release.file]]\nid = \"a\"\nversion = \"1.0\"\nsha256 = \"{SHA}\"\nsize = {SIZE}\nmode = 1 # <-\n",
        field: "mode",
        says: "unknown field `mode`",
    },
    Case {
        name: "missing blob",
        text: "id = \"core\"\n[[release]]\nversion = \"1.0\"\n[[release.file]]\nid = \"a\"\nversion = \"1.0\"\nsha256 = \"0000000000000000000000000000000000000000000000000000000000000000\" # <-\nsize = 1\n",
        field: "sha256",
        says: "is missing from the catalog",
    },
    Case {
        name: "wrong size",
        text: "id = \"core\"\n[[release]]\nversion = \"1.0\"\n[[release.file]]\nid = \"a\"\nversion = \"1.0\"\nsha256 = \"{SHA}\"\nsize = 999 # <-\n",
        field: "size",
        says: "999 bytes, but blob store/",
    },
    Case {
        name: "negative size",
        text: "id = \"core\"\n[[release]]\nversion = \"1.0\"\n[[release.file]]\nid = \"a\"\nversion = \"1.0\"\nsha256 = \"{SHA}\"\nsize = -1 # <-\n",
        field: "size",
        says: "",
    },
    Case {
        name: "uppercase hash",
        text: "id = \"core\"\n[[release]]\nversion = \"1.0\"\npackage = { sha256 = \"ABCD\", size = 1 } # <-\n",
        field: "sha256",
        says: "not a SHA-256",
    },
    Case {
        name: "bad requires",
        text: "id = \"core\"\n[[release]]\nversion = \"1.0\"\nrequires = [\"main-module=5.1\"] # <-\n",
        field: "requires",
        says: "expected ID>=VERSION",
    },
    Case {
        name: "requires an unknown module",
        text: "id = \"core\"\n[[release]]\nversion = \"1.0\"\nrequires = [\"ghost>=1\"] # <-\n",
        field: "requires",
        says: "module \"ghost\" is not in the catalog",
    },
    Case {
        name: "requires itself",
        text: "id = \"core\"\n[[release]]\nversion = \"1.0\"\nrequires = [\"core>=1\"] # <-\n",
        field: "requires",
        says: "cannot require itself",
    },
    Case {
        name: "file id escaping the root",
        text: "id = \"core\"\n[[release]]\nversion = \"1.0\"\n[[release.file]]\nid = \"../x\" # <-\nversion = \"1.0\"\nsha256 = \"{SHA}\"\nsize = {SIZE}\n",
        field: "id",
        says: "\"../x\" is not a file id",
    },
    Case {
        name: "duplicate file",
        text: "id = \"core\"\n[[release]]\nversion = \"1.0\"\n[[release.file]]\nid = \"a\"\nversion = \"1.0\"\nsha256 = \"{SHA}\"\nsize = {SIZE}\n[[release.file]]\nid = \"a\" # <-\nversion = \"1.0\"\nsha256 = \"{SHA}\"\nsize = {SIZE}\n",
        field: "id",
        says: "listed twice",
    },
    Case {
        name: "file newer than its release",
        text: "id = \"core\"\n[[release]]\nversion = \"1.0\"\n[[release.file]]\nid = \"a\"\nversion = \"1.0.1\" # <-\nsha256 = \"{SHA}\"\nsize = {SIZE}\n",
        field: "version",
        says: "newer than its release 1.0",
    },
    Case {
        name: "module id differs from the file name",
        text: "id = \"other\" # <-\n",
        field: "id",
        says: "differs from the file name",
    },
    Case {
        name: "delta of a file that is not a record file",
        text: "id = \"core\"\n[[release]]\nversion = \"1.0\"\n[[release.file]]\nid = \"a.txt\"\nversion = \"1.0\"\nsha256 = \"{SHA}\"\nsize = {SIZE}\n[[release.delta]]\nfile = \"a.txt\" # <-\nfrom = \"0.9\"\nsha256 = \"{SHA}\"\nsize = {SIZE}\n",
        field: "file",
        says: "not a record file",
    },
    Case {
        name: "delta of a file the release lacks",
        text: "id = \"core\"\n[[release]]\nversion = \"1.0\"\n[[release.delta]]\nfile = \"x.rec\" # <-\nfrom = \"0.9\"\nsha256 = \"{SHA}\"\nsize = {SIZE}\n",
        field: "file",
        says: "not a file of release 1.0",
    },
    Case {
        name: "deleted file still present",
        text: "id = \"core\"\n[[release]]\nversion = \"1.0\"\n[[release.file]]\nid = \"a\"\nversion = \"1.0\"\nsha256 = \"{SHA}\"\nsize = {SIZE}\n[[release.deleted]]\nid = \"a\" # <-\nversion = \"1.0\"\n",
        field: "id",
        says: "also a file of this release",
    },
    Case {
        name: "frequent file not in the latest release",
        text: "id = \"core\"\nfrequent = [\"b\"] # <-\n[[release]]\nversion = \"1.0\"\n[[release.file]]\nid = \"a\"\nversion = \"1.0\"\nsha256 = \"{SHA}\"\nsize = {SIZE}\n",
        field: "frequent",
        says: "not a file of the latest release",
    },
    Case {
        name: "wrong type",
        text: "id = \"core\"\n[[release]]\nversion = \"1.0\"\nforced = \"yes\" # <-\n",
        field: "forced",
        says: "",
    },
    Case {
        name: "missing version",
        text: "id = \"core\"\n[[release]] # <-\nforced = true\n",
        field: "version",
        says: "missing field `version`",
    },
    Case {
        name: "control character in installer arguments",
        text: "id = \"core\"\n[[release]]\nversion = \"1.0\"\npackage = { sha256 = \"{SHA}\", size = {SIZE}, args = \"a\\u0007b\" } # <-\n",
        field: "args",
        says: "without control characters",
    },
    Case {
        name: "executable flag that is not a boolean",
        text: "id = \"core\"\n[[release]]\nversion = \"1.0\"\n[[release.file]]\nid = \"a\"\nversion = \"1.0\"\nsha256 = \"{SHA}\"\nsize = {SIZE}\nexecutable = \"yes\" # <-\n",
        field: "executable",
        says: "expected a boolean",
    },
    Case { name: "TOML syntax error", text: "id = \"core\"\n[[release]]\nversion = \"1.0 # <-\n", field: "", says: "" },
];

#[test]
fn each_error_names_file_line_and_field() {
    for case in CASES {
        let dir = tempfile::tempdir().unwrap();
        let (payload, other) = catalog_with_blobs(dir.path());
        let text = fill(case.text, payload, other);
        write_module(dir.path(), "core", &text);
        let error = catalog::load(dir.path()).expect_err(case.name);
        let message = error.to_string();
        eprintln!("{:>45}: {message}", case.name);
        assert_eq!(error.file(), Path::new("modules/core.toml"), "{}: {message}", case.name);
        assert_eq!(error.line(), Some(marked_line(&text)), "{}: {message}", case.name);
        if !case.field.is_empty() {
            assert_eq!(error.field(), Some(case.field), "{}: {message}", case.name);
            assert!(message.contains(&format!("field `{}`", case.field)), "{}: {message}", case.name);
        }
        assert!(message.contains(case.says), "{}: {message}", case.name);
        assert!(
            message.starts_with(&format!("modules/core.toml:{}: ", marked_line(&text))),
            "{}: {message}",
            case.name
        );
    }
}

#[test]
fn the_message_reads_like_the_brief() {
    let dir = tempfile::tempdir().unwrap();
    write_module(dir.path(), "core", "id = \"core\"\n\n[[release]]\nversion = \"01.2\"\n");
    let message = catalog::load(dir.path()).unwrap_err().to_string();
    assert!(
        message.starts_with("modules/core.toml:4: field `version` of [[release]]: \"01.2\" is not a version: "),
        "{message}"
    );
}

#[test]
fn settings_are_validated_too() {
    for (text, line, field, says) in [
        ("[settings]\ncritical = [\"*.dll\", \"\"]\n", 2, Some("critical"), "empty pattern"),
        ("[settings]\nfrequent_window = 0\n", 2, Some("frequent_window"), "count of releases"),
        ("[settings]\nfrequent_changes = -3\n", 2, Some("frequent_changes"), ""),
        ("[settings]\nrecord_file = []\n", 2, Some("record_file"), "unknown field"),
        ("[setting]\n", 1, None, "unknown field `setting`"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("catalog.toml"), text).unwrap();
        let error = catalog::load(dir.path()).unwrap_err();
        assert_eq!(error.file(), Path::new("catalog.toml"), "{error}");
        assert_eq!(error.line(), Some(line), "{error}");
        if field.is_some() {
            assert_eq!(error.field(), field, "{error}");
        }
        assert!(error.to_string().contains(says), "{error}");
    }
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("catalog.toml"), "[settings]\ncritical = [\"*.exe\"]\nfrequent_changes = 2\n").unwrap();
    let settings = catalog::load(dir.path()).unwrap().settings;
    assert_eq!(settings.critical, ["*.exe"]);
    assert_eq!(settings.record_files, Settings::default().record_files);
    assert_eq!((settings.frequent_changes, settings.frequent_window), (2, 5));
}

#[test]
fn the_folder_layout_is_checked() {
    let dir = tempfile::tempdir().unwrap();
    write_module(dir.path(), "bad name", "id = \"bad name\"\n");
    let error = catalog::load(dir.path()).unwrap_err();
    assert!(matches!(error, CatalogError::Layout { .. }), "{error}");
    assert!(error.to_string().starts_with("modules/bad name.toml: "), "{error}");

    // Hidden files (temporary files of an interrupted write, editor files) are ignored.
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir_all(dir.path().join("modules")).unwrap();
    fs::write(dir.path().join("modules/.core.toml.tmp-1-0"), "garbage [[[").unwrap();
    assert!(catalog::load(dir.path()).unwrap().modules.is_empty());

    // Not UTF-8: the line of the bad byte.
    write_module(dir.path(), "core", "id = \"core\"\n# caf\u{e9}\n");
    fs::write(dir.path().join("modules/core.toml"), b"id = \"core\"\n\n# \xff\n").unwrap();
    let error = catalog::load(dir.path()).unwrap_err();
    assert_eq!(error.line(), Some(3), "{error}");
    assert!(error.to_string().contains("not UTF-8"), "{error}");
}

/// Damaged module files (bytes flipped, cut short) give an error or load: never a panic.
#[test]
fn damaged_module_files_never_panic() {
    let dir = tempfile::tempdir().unwrap();
    let (payload, other) = catalog_with_blobs(dir.path());
    write_module(dir.path(), "main", &fill(MAIN, payload, other));
    let good = fill(GOOD, payload, other).into_bytes();
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let noise = b"[]{}=\"'.,#\n \\0123456789abcxyz-+_\xff\x00";
    for round in 0..400 {
        let mut text = good.clone();
        for _ in 0..1 + next() % 4 {
            let at = (next() % text.len() as u64) as usize;
            text[at] = noise[(next() % noise.len() as u64) as usize];
        }
        if round % 5 == 0 {
            text.truncate((next() % text.len() as u64) as usize);
        }
        fs::write(dir.path().join("modules/core.toml"), &text).unwrap();
        if let Err(error) = catalog::load(dir.path()) {
            let _ = error.to_string();
        }
    }
}
