//! Channels and phased rollouts end to end, with the real publisher, the real server over UDP
//! and HTTP on 127.0.0.1, and installations in temporary folders changed through the library
//! API: a release rolled out to 10 %, 50 % and 100 % of 200 installations reaches exactly those
//! whose bucket is below the percentage; a pause stops new upgrades; a withdrawal brings every
//! upgraded installation back to the release before, byte for byte (the files the withdrawn
//! release added are gone); a release on the beta channel reaches beta installations only
//! until it is promoted; a forced release bypasses its schedule. The bucket is drawn once per
//! installation and kept; and the `upgram` command follows the channel of its configuration
//! while a running `upgram-server serve` picks up `promote` and `rollout` changes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

mod common;
use common::binaries::{self, expected_tree, tree};
use common::{TestServer, client_runtime, public_key, start_server_in};
use upgram_client::flows::{self, Optional};
use upgram_client::hooks::Hooks;
use upgram_client::{Client, Installation};
use upgram_server::catalog::{self, RolloutStep, Schedule};
use upgram_server::publish::{PublishRequest, publish};
use upgram_server::rollout::{self, Change};

type Files = &'static [(&'static str, &'static [u8])];

const V1: Files = &[("keep.txt", b"kept by every release"), ("change.txt", b"one"), ("old/gone.txt", b"old")];
const V2: Files = &[
    ("keep.txt", b"kept by every release"),
    ("change.txt", b"two"),
    ("added.txt", b"new in 2.0"),
    ("new/deep/added.txt", b"also new in 2.0"),
];
const V3: Files = &[("keep.txt", b"kept by every release"), ("change.txt", b"three")];

const MODULE: &str = "app";

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// A release folder holding `files`.
fn folder(work: &Path, name: &str, files: Files) -> PathBuf {
    let dir = work.join(name);
    for (id, content) in files {
        let path = dir.join(id);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }
    dir
}

struct Release {
    version: &'static str,
    files: Files,
    channels: &'static [&'static str],
    percent: Option<u8>,
    forced: bool,
}

fn publish_release(catalog: &Path, work: &Path, release: &Release) {
    let from = folder(work, &format!("release-{}", release.version), release.files);
    let request = PublishRequest {
        catalog: catalog.to_owned(),
        module: MODULE.into(),
        version: release.version.parse().unwrap(),
        from,
        requires: vec![],
        forced: release.forced,
        full: false,
        rollback: false,
        package: None,
        installer_args: None,
        channels: release.channels.iter().map(|c| (*c).to_owned()).collect(),
        schedule: release.percent.map(|percent| Schedule(vec![RolloutStep { at: None, percent }])),
        patches: Default::default(),
    };
    publish(&request).unwrap();
}

/// The server, on the catalog folder `catalog` (inside `dir`, which it keeps).
fn serve(dir: tempfile::TempDir, catalog: &Path) -> Served {
    let loaded = catalog::load(catalog).unwrap();
    Served { server: start_server_in(dir, loaded, |_| {}), catalog: catalog.to_owned() }
}

/// The running server and the catalog folder it answers from.
struct Served {
    server: TestServer,
    catalog: PathBuf,
}

impl Served {
    /// Loads the catalog again, as `serve` does when its files change.
    fn reload(&self) {
        self.server.shared.replace_catalog(catalog::load(&self.catalog).unwrap());
    }

    fn change(&self, version: &str, change: Change) {
        rollout::change(&self.catalog, MODULE, &version.parse().unwrap(), &change, now()).unwrap();
        self.reload();
    }

    fn client(&self, channel: Option<&str>) -> Client {
        let mut builder = Client::builder()
            .server(self.server.udp)
            .public_key(public_key())
            .deadline(Duration::from_secs(10))
            .first_timeout(Duration::from_millis(200));
        if let Some(channel) = channel {
            builder = builder.channel(channel);
        }
        builder.build().unwrap()
    }
}

/// The files of `files`, by id (folders left out: the client leaves a folder emptied by
/// deletions in place).
fn expected(files: Files) -> BTreeMap<String, Vec<u8>> {
    files_only(expected_tree(files.iter().copied()))
}

/// The files of the installation at `root` (not its own `.upgram` folder), by id.
fn installed_files(root: &Path) -> BTreeMap<String, Vec<u8>> {
    files_only(tree(root))
}

fn files_only(tree: BTreeMap<String, Vec<u8>>) -> BTreeMap<String, Vec<u8>> {
    tree.into_iter().filter(|(id, _)| !id.ends_with('/')).collect()
}

/// One installation: its root and its rollout bucket.
struct Site {
    root: PathBuf,
    bucket: u8,
}

impl Site {
    /// Installs the module on an empty folder through the library.
    fn install(runtime: &tokio::runtime::Runtime, client: &Client, root: PathBuf) -> Site {
        std::fs::create_dir_all(&root).unwrap();
        let installation = Installation::open_locked(&root).unwrap();
        runtime
            .block_on(flows::install(&installation, client, &[MODULE.to_owned()], false, &Hooks::default()))
            .unwrap();
        let bucket = installation.state().bucket.expect("a bucket drawn at the first opening");
        drop(installation);
        let reopened = Installation::open_read_only(&root).unwrap();
        assert_eq!(reopened.state().bucket, Some(bucket), "the bucket is kept in the state");
        Site { root, bucket }
    }

    /// Runs an update through the library and returns the installed version.
    fn update(&self, runtime: &tokio::runtime::Runtime, client: &Client) -> String {
        let installation = Installation::open_locked(&self.root).unwrap();
        runtime
            .block_on(flows::update(&installation, client, Optional::Take, false, &Hooks::default()))
            .unwrap_or_else(|e| panic!("{}: update: {e}", self.root.display()));
        installation.module(MODULE).expect("installed").version
    }
}

/// `work` on each of `items`, eight at a time (as independent processes would), results in
/// order.
fn in_parallel<T: Sync, R: Send>(items: &[T], work: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let work = &work;
    std::thread::scope(|scope| {
        let chunks: Vec<_> = items
            .chunks(items.len().div_ceil(8).max(1))
            .map(|chunk| scope.spawn(move || chunk.iter().map(work).collect::<Vec<_>>()))
            .collect();
        chunks.into_iter().flat_map(|chunk| chunk.join().unwrap()).collect()
    })
}

/// Updates every site and checks that exactly those with `upgraded(bucket)` are at
/// `new`, byte for byte, and the others at `old`.
fn update_all(
    runtime: &tokio::runtime::Runtime,
    client: &Client,
    sites: &[Site],
    upgraded: impl Fn(u8) -> bool,
    (new, new_files): (&str, Files),
    (old, old_files): (&str, Files),
) -> usize {
    let versions = in_parallel(sites, |site| site.update(runtime, client));
    let mut count = 0;
    for (site, version) in sites.iter().zip(versions) {
        let (want, files) = if upgraded(site.bucket) { (new, new_files) } else { (old, old_files) };
        assert_eq!(version, want, "bucket {}", site.bucket);
        assert_eq!(installed_files(&site.root), expected(files), "bucket {}: the files of {want}", site.bucket);
        count += usize::from(version == new);
    }
    count
}

/// A catalog with 1.0 of the module, then `more` releases, and the server on it; also the
/// folder for release folders and installations.
fn serve_first_release(more: &[Release]) -> (tempfile::TempDir, PathBuf, Served) {
    let dir = tempfile::tempdir().unwrap();
    let catalog_dir = dir.path().to_owned();
    let work = tempfile::tempdir().unwrap();
    let first = Release { version: "1.0", files: V1, channels: &[], percent: None, forced: false };
    for release in std::iter::once(&first).chain(more) {
        publish_release(&catalog_dir, work.path(), release);
    }
    let server = serve(dir, &catalog_dir);
    (work, catalog_dir, server)
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

    publish_release(
        &catalog_dir,
        work.path(),
        &Release { version: "2.0", files: V2, channels: &[], percent: Some(10), forced: false },
    );
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
    let beta_release = Release { version: "3.0", files: V3, channels: &["beta"], percent: None, forced: false };
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
    publish_release(
        &catalog_dir,
        work.path(),
        &Release { version: "2.0", files: V2, channels: &[], percent: Some(0), forced: true },
    );
    publish_release(
        &catalog_dir,
        work.path(),
        &Release { version: "3.0", files: V3, channels: &[], percent: Some(0), forced: false },
    );
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
