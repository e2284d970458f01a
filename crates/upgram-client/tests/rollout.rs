//! Channels and phased rollouts end to end, with the real publisher, the real server over UDP
//! and HTTP on 127.0.0.1, and installations in temporary folders changed through the library
//! API: a release rolled out to 10 %, 50 % and 100 % of 200 installations reaches exactly those
//! whose bucket is below the percentage; a pause stops new upgrades; a withdrawal brings every
//! upgraded installation back to the release before, byte for byte (the files the withdrawn
//! release added are gone); a release on the beta channel reaches beta installations only
//! until it is promoted; a forced release bypasses its schedule. The bucket is drawn once per
//! installation and kept; and the `upgram` command follows the channel of its configuration
//! while a running `upgram-server serve` picks up `promote` and `rollout` changes.

use std::path::PathBuf;
use std::time::{Duration, Instant};

mod common;
use common::binaries;
use common::client_runtime;
use common::rollout::{
    Files, MODULE, Release, Site, V1, expected, in_parallel, installed_files, now, publish_release, serve,
    serve_releases, update_all,
};
use upgram_client::Installation;
use upgram_server::catalog::RolloutStep;
use upgram_server::rollout::{self, Change};

const V2: Files = &[
    ("keep.txt", b"kept by every release"),
    ("change.txt", b"two"),
    ("added.txt", b"new in 2.0"),
    ("new/deep/added.txt", b"also new in 2.0"),
];
const V3: Files = &[("keep.txt", b"kept by every release"), ("change.txt", b"three")];

/// A catalog with 1.0 of the module, then `more` releases, and the server on it; also the
/// folder for release folders and installations.
fn serve_first_release(more: &[Release]) -> (tempfile::TempDir, PathBuf, common::rollout::Served) {
    serve_releases(V1, more, serve)
}

#[test]
fn a_release_rolls_out_by_bucket_pauses_and_is_withdrawn() {
    let (work, catalog_dir, server) = serve_first_release(&[]);
    let runtime = client_runtime();
    let client = server.client(None);
    let started = Instant::now();
    let roots: Vec<PathBuf> = (0..200).map(|i| work.path().join(format!("site-{i:03}"))).collect();
    let sites = in_parallel(&roots, |root| Site::install(&runtime, &client, root.clone()));
    for site in &sites {
        assert_eq!(installed_files(&site.root), expected(V1));
    }
    let installed = started.elapsed();
    let below = |percent: u8| sites.iter().filter(|s| s.bucket < percent).count();
    assert!(below(10) > 0 && below(50) > below(10) && below(50) < sites.len(), "buckets spread over 0-99");

    publish_release(&catalog_dir, work.path(), &Release { percent: Some(10), ..Release::new("2.0", V2) });
    server.reload();
    let step = Instant::now();
    let at_10 = update_all(&runtime, &client, &sites, |b| b < 10, ("2.0", V2), ("1.0", V1));
    assert_eq!(at_10, below(10));

    server.change("2.0", Change::Schedule(vec![RolloutStep { at: None, percent: 50 }]));
    let at_50 = update_all(&runtime, &client, &sites, |b| b < 50, ("2.0", V2), ("1.0", V1));
    assert_eq!(at_50, below(50));

    // Paused, then set to 100 %: no installation upgrades, the upgraded ones stay.
    server.change("2.0", Change::Pause);
    server.change("2.0", Change::Schedule(vec![RolloutStep { at: None, percent: 100 }]));
    let paused = update_all(&runtime, &client, &sites, |b| b < 50, ("2.0", V2), ("1.0", V1));
    assert_eq!(paused, below(50), "a pause stops new upgrades");
    let status = rollout::status(&catalog_dir, MODULE, Some(&"2.0".parse().unwrap()), now()).unwrap();
    assert_eq!(status[0].summary, "paused");

    server.change("2.0", Change::Resume);
    let everyone = update_all(&runtime, &client, &sites, |_| true, ("2.0", V2), ("1.0", V1));
    assert_eq!(everyone, sites.len());

    // Withdrawn: every installation goes back to 1.0, byte for byte; the files 2.0 added are gone.
    server.change("2.0", Change::Withdraw);
    let back = update_all(&runtime, &client, &sites, |_| false, ("2.0", V2), ("1.0", V1));
    assert_eq!(back, 0);
    let status = rollout::status(&catalog_dir, MODULE, None, now()).unwrap();
    let states: Vec<&str> = status.iter().map(|s| s.summary).collect();
    assert_eq!(states, ["complete", "withdrawn"]);
    // Once back, an installation stays: nothing more to do.
    assert_eq!(sites[0].update(&runtime, &client), "1.0");
    // Installations in one bucket with the same versions send identical queries: the server
    // signs their answer once per issue window and serves the others from its cache.
    let metrics = server.server.shared.metrics();
    assert!(metrics.cache_hits > 0, "no answer was shared between installations of one bucket");
    eprintln!(
        "200 installations: installed in {:.2?}, then 10% -> 50% -> pause -> 100% -> withdraw in {:.2?}; {} signatures, {} cached answers",
        installed,
        step.elapsed(),
        metrics.signatures,
        metrics.cache_hits
    );
}

#[test]
fn a_beta_release_reaches_beta_until_promoted() {
    let beta_release = Release { channels: &["beta"], ..Release::new("3.0", V3) };
    let (work, catalog_dir, server) = serve_first_release(&[beta_release]);
    let runtime = client_runtime();
    let (stable, beta) = (server.client(None), server.client(Some("beta")));
    let explicit_stable = server.client(Some("stable"));
    let on_stable = Site::install(&runtime, &stable, work.path().join("stable"));
    let on_explicit = Site::install(&runtime, &explicit_stable, work.path().join("explicit"));
    // The beta channel has 3.0 only: a beta installation installs it directly.
    let on_beta = Site::install(&runtime, &beta, work.path().join("beta"));
    assert_eq!(installed_files(&on_stable.root), expected(V1));
    assert_eq!(installed_files(&on_explicit.root), expected(V1));
    assert_eq!(installed_files(&on_beta.root), expected(V3));
    assert_eq!(on_stable.update(&runtime, &stable), "1.0", "3.0 is not on stable");

    server.change("3.0", Change::Promote { channel: "stable".into() });
    assert_eq!(on_stable.update(&runtime, &stable), "3.0");
    assert_eq!(on_explicit.update(&runtime, &explicit_stable), "3.0");
    assert_eq!(installed_files(&on_stable.root), expected(V3));
    let status = rollout::status(&catalog_dir, MODULE, Some(&"3.0".parse().unwrap()), now()).unwrap();
    assert_eq!(status[0].channels, ["beta", "stable"]);
}

#[test]
fn a_forced_release_bypasses_its_schedule() {
    let (work, catalog_dir, server) = serve_first_release(&[]);
    let runtime = client_runtime();
    let client = server.client(None);
    let sites: Vec<Site> =
        (0..20).map(|i| Site::install(&runtime, &client, work.path().join(format!("site-{i:02}")))).collect();
    // 2.0 forced at 0 %, 3.0 at 0 %: everyone gets the forced 2.0, nobody 3.0.
    publish_release(&catalog_dir, work.path(), &Release { percent: Some(0), forced: true, ..Release::new("2.0", V2) });
    publish_release(&catalog_dir, work.path(), &Release { percent: Some(0), ..Release::new("3.0", V3) });
    server.reload();
    let forced = update_all(&runtime, &client, &sites, |_| true, ("2.0", V2), ("1.0", V1));
    assert_eq!(forced, sites.len());
    // A paused forced release is offered to nobody new.
    server.change("2.0", Change::Pause);
    let late = Site::install(&runtime, &client, work.path().join("late"));
    assert_eq!(installed_files(&late.root), expected(V1));
}

#[test]
fn an_installation_draws_its_bucket_once_and_old_state_files_still_load() {
    let root = tempfile::tempdir().unwrap();
    let state_file = upgram_client::layout::Layout::new(root.path()).state_file();
    std::fs::create_dir_all(state_file.parent().unwrap()).unwrap();
    // A state file written before rollouts existed: no bucket.
    let old = r#"{ "modules": { "app": { "version": "1.0", "files": {} } }, "cookies": [] }"#;
    std::fs::write(&state_file, old).unwrap();
    let read_only = Installation::open_read_only(root.path()).unwrap();
    assert_eq!(read_only.state().bucket, None, "a read-only opening changes nothing");
    assert_eq!(std::fs::read_to_string(&state_file).unwrap(), old);
    drop(read_only);

    let bucket = Installation::open_locked(root.path()).unwrap().state().bucket.expect("drawn");
    assert!(bucket < upgram_core::body::BUCKETS);
    let saved: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&state_file).unwrap()).unwrap();
    assert_eq!(saved["bucket"], u64::from(bucket), "kept at once");
    assert_eq!(saved["modules"]["app"]["version"], "1.0");
    for _ in 0..5 {
        assert_eq!(Installation::open_locked(root.path()).unwrap().state().bucket, Some(bucket));
    }

    std::fs::write(&state_file, r#"{ "modules": {}, "bucket": 100 }"#).unwrap();
    let error = Installation::open_read_only(root.path()).expect_err("a bucket of 100 is refused").to_string();
    assert!(error.contains("bucket 100"), "{error}");
}

/// The `upgram` command follows the channel of its configuration file, and a running
/// `upgram-server serve` picks up `promote` and `rollout` changes made beside it.
#[test]
fn the_commands_follow_channels_and_rollout_changes() {
    let work = tempfile::tempdir().unwrap();
    let catalog = work.path().join("catalog");
    let catalog_str = catalog.to_str().unwrap();
    binaries::publish(work.path(), MODULE, "1.0", V1, &["--channel", "stable", "--channel", "beta"]);
    binaries::publish(work.path(), MODULE, "2.0", V2, &["--channel", "beta", "--schedule", "0%"]);
    let server = binaries::serve_with_new_key(work.path(), &catalog);
    let config = work.path().join("beta.toml");
    std::fs::write(&config, "channel = \"beta\"\n").unwrap();
    let run = |site: &str, command: &str, beta: bool| {
        let root = work.path().join(site);
        std::fs::create_dir_all(&root).unwrap();
        let root_str = root.to_str().unwrap().to_owned();
        let mut args = vec![command.to_owned()];
        if command == "install" {
            args.push(MODULE.to_owned());
        } else {
            args.push("--yes".to_owned());
        }
        args.extend(binaries::server_args(&server, &root_str).into_iter().map(str::to_owned));
        if beta {
            args.extend(["--config".to_owned(), config.to_str().unwrap().to_owned()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, out, err) = binaries::upgram(&args);
        assert_eq!(code, 0, "{args:?}: {out}{err}");
        installed_files(&root)
    };
    // 2.0 is on beta only, at 0 %: nobody gets it yet.
    assert_eq!(run("beta", "install", true), expected(V1));
    assert_eq!(run("stable", "install", false), expected(V1));

    // Runs `upgram-server COMMAND … --version 2.0 EXTRA`, then updates `site` until it has
    // `files` (the server notices the catalog change within its polling interval).
    let change_then_update = |command: &[&str], extra: &[&str], site: &str, beta: bool, files: Files| {
        let mut args = command.to_vec();
        args.extend(["--catalog", catalog_str, "--module", MODULE, "--version", "2.0"]);
        args.extend(extra);
        binaries::run_server(&args);
        let deadline = Instant::now() + Duration::from_secs(30);
        while run(site, "update", beta) != expected(files) {
            assert!(Instant::now() < deadline, "the server did not pick up {command:?} in 30 s");
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    change_then_update(&["rollout", "set"], &["--percent", "100"], "beta", true, V2);
    assert_eq!(run("stable", "update", false), expected(V1), "2.0 is not on stable");
    change_then_update(&["promote"], &["--channel", "stable"], "stable", false, V2);
    change_then_update(&["rollout", "withdraw"], &[], "stable", false, V1);
    assert_eq!(run("beta", "update", true), expected(V1), "beta goes back too");
}
