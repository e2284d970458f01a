//! Compact answers and packing for inline answers (SPEC.md §2.6, §4.4), end to end over real
//! UDP and HTTP on 127.0.0.1 with the reference server: a large installation's check stays in
//! datagrams, and a part that came back as a fallback document is split further at the next
//! check, remembered in the installation's state file.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{client, client_runtime, installed, module, release, start_server_on, store, v};
use upgram_client::Installation;
use upgram_client::state::InstalledState;
use upgram_core::body::Status;
use upgram_server::catalog::{Catalog, ReleaseFile};

/// `count` modules `m-0000`.., each with releases 1.0 and 1.1 of two files (`bin/a` changes in
/// 1.1, `lib/b` does not).
fn two_file_catalog(dir: &Path, count: usize) -> Catalog {
    let a10 = store(dir, b"a at 1.0");
    let a11 = store(dir, b"a at 1.1");
    let b10 = store(dir, b"b at 1.0");
    let file = |id: &str, version: &str, blob: &upgram_server::catalog::Blob| ReleaseFile {
        id: id.into(),
        version: v(version),
        blob: *blob,
        executable: false,
    };
    let mut catalog = Catalog::default();
    for i in 0..count {
        let id = format!("m-{i:04}");
        let releases = vec![
            release("1.0", vec![file("bin/a", "1.0", &a10), file("lib/b", "1.0", &b10)]),
            release("1.1", vec![file("bin/a", "1.1", &a11), file("lib/b", "1.0", &b10)]),
        ];
        catalog.modules.insert(id.clone(), module(&id, releases));
    }
    catalog
}

/// An installation of `count` modules, those for which `behind` holds at 1.0, the others at 1.1.
fn installation(count: usize, behind: impl Fn(usize) -> bool) -> InstalledState {
    let modules: Vec<(String, &str)> =
        (0..count).map(|i| (format!("m-{i:04}"), if behind(i) { "1.0" } else { "1.1" })).collect();
    let pairs: Vec<(&str, &str)> = modules.iter().map(|(id, version)| (id.as_str(), *version)).collect();
    installed(&pairs)
}

#[test]
fn a_check_of_a_thousand_modules_stays_in_datagrams() {
    const MODULES: usize = 1000;
    let server = start_server_on(|dir| two_file_catalog(dir, MODULES), |_| {});
    let state = installation(MODULES, |i| i.is_multiple_of(10));
    let runtime = client_runtime();
    let client = client(&[server.udp], Duration::from_secs(20), Duration::from_millis(500));
    let report = runtime.block_on(client.check(&state)).expect("the check succeeds");
    let modules = report.modules();
    assert_eq!(modules.len(), MODULES, "every module answered");
    for answer in &modules {
        let number: usize = answer.id[2..].parse().expect("module number");
        let (status, latest) = (answer.status, answer.latest.as_ref().map(ToString::to_string));
        if number.is_multiple_of(10) {
            assert_eq!((status, latest.as_deref()), (Status::Update, Some("1.1")), "{}", answer.id);
        } else {
            assert_eq!((status, latest.as_deref()), (Status::Current, Some("1.1")), "{}", answer.id);
        }
    }
    let compact = report.responses().len();
    assert_eq!(compact, report.exchanges, "one answer per part");
    eprintln!(
        "{MODULES} modules: {} parts, {} inline, {} fallbacks, {} bytes up, {} bytes down",
        report.exchanges,
        report.inline(),
        report.fallbacks,
        report.bytes_sent,
        report.bytes_received
    );
    assert!(
        report.inline() * 100 >= report.exchanges * 95,
        "at least 95% inline: {} of {}",
        report.inline(),
        report.exchanges
    );
    assert!(report.fallbacks <= 2, "{} HTTP fetches", report.fallbacks);
    assert!(report.exchanges < MODULES / 10, "parts hold many modules each: {}", report.exchanges);
    // The answers were compact: the server made far fewer documents than it would have.
    assert!(report.bytes_received < (MODULES as u64) * 100, "{} bytes down", report.bytes_received);
}

#[test]
fn a_part_that_fell_back_is_split_further_at_the_next_check() {
    const MODULES: usize = 60;
    // Eight neighbours behind: the part holding them has far more non-current answers than
    // predicted, so its answer cannot fit a datagram.
    let behind = |i: usize| (10..18).contains(&i);
    let server = start_server_on(|dir| two_file_catalog(dir, MODULES), |_| {});
    let root = tempfile::tempdir().expect("temporary folder");
    let state_file = upgram_client::layout::Layout::new(root.path()).state_file();
    std::fs::create_dir_all(state_file.parent().expect("meta folder")).expect("meta folder");
    installation(MODULES, behind).save(&state_file).expect("state saved");
    let runtime = client_runtime();
    let client = client(&[server.udp], Duration::from_secs(20), Duration::from_millis(500));
    let check = || {
        let installation = Installation::open_locked(root.path()).expect("installation opens");
        let report = runtime.block_on(upgram_client::flows::check(&installation, &client)).expect("the check succeeds");
        assert_eq!(report.modules().len(), MODULES, "every module answered");
        report
    };
    let first = check();
    assert!(first.fallbacks >= 1, "the dense part fell back: {} of {}", first.fallbacks, first.exchanges);
    let saved = InstalledState::load(&state_file).expect("state loads");
    assert!(
        saved.fallbacks.keys().any(|id| behind(id[2..].parse().expect("number"))),
        "remembered: {:?}",
        saved.fallbacks
    );
    let second = check();
    eprintln!(
        "first check: {} parts, {} fallbacks; second: {} parts, {} fallbacks",
        first.exchanges, first.fallbacks, second.exchanges, second.fallbacks
    );
    assert!(second.exchanges > first.exchanges, "the part was split further");
    // Each fallback halves the parts that hold its modules: a few checks make them all fit.
    let mut last = second;
    for _ in 0..4 {
        if last.fallbacks == 0 {
            break;
        }
        let next = check();
        assert!(next.exchanges >= last.exchanges, "parts are not merged back");
        last = next;
    }
    assert_eq!(last.fallbacks, 0, "after a few checks every answer comes inline ({} parts)", last.exchanges);
    // Modules whose parts never fell back are predicted as before.
    let saved = InstalledState::load(&state_file).expect("state loads");
    assert!(!saved.fallbacks.contains_key("m-0059"));
}

#[test]
fn a_state_file_without_remembered_fallbacks_still_loads() {
    let root = tempfile::tempdir().expect("temporary folder");
    let path = root.path().join("state.json");
    std::fs::write(&path, r#"{"modules": {"core": {"version": "1.0"}}, "cookies": []}"#).expect("written");
    let state = InstalledState::load(&path).expect("an older state file loads");
    assert!(state.fallbacks.is_empty());
    let mut state = state;
    state.remember_fallback(["core", "gone"]);
    assert_eq!(state.fallbacks.get("core"), Some(&1), "a module no longer installed is not kept");
    assert_eq!(state.fallbacks.len(), 1);
    state.save(&path).expect("saved");
    assert_eq!(InstalledState::load(&path).expect("loads").fallbacks.get("core"), Some(&1));
}
