//! What the rollout tests share: release folders published through the real publisher (with an
//! install package when asked), installations through the library API, updates of many
//! installations at once, and the installed files compared byte for byte.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use upgram_client::flows::{self, ModuleOutcome, Optional};
use upgram_client::hooks::Hooks;
use upgram_client::{Client, Installation};
use upgram_server::catalog::{self, RolloutStep, Schedule};
use upgram_server::intake::ReportSink;
use upgram_server::publish::{PublishRequest, publish};
use upgram_server::rollout::{self, Change};

use super::binaries::{expected_tree, tree};
use super::{TestServer, public_key, start_server_reporting};

/// The files of a release: id and content.
pub type Files = &'static [(&'static str, &'static [u8])];

/// The first release of every rollout test.
pub const V1: Files = &[("keep.txt", b"kept by every release"), ("change.txt", b"one"), ("old/gone.txt", b"old")];

/// The module every rollout test publishes.
pub const MODULE: &str = "app";

/// Seconds since the Unix epoch.
pub fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// A release folder holding `files`.
pub fn folder(work: &Path, name: &str, files: Files) -> PathBuf {
    let dir = work.join(name);
    for (id, content) in files {
        let path = dir.join(id);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }
    dir
}

/// A release to publish.
pub struct Release {
    /// Its version.
    pub version: &'static str,
    /// Its files.
    pub files: Files,
    /// Its channels (none: the default).
    pub channels: &'static [&'static str],
    /// The percentage it starts at (none: 100 %).
    pub percent: Option<u8>,
    /// Forced.
    pub forced: bool,
    /// The text of its install package (a script), if it has one.
    pub package: Option<String>,
}

impl Release {
    /// An optional release of `files` on the default channel, at 100 %, without a package.
    pub fn new(version: &'static str, files: Files) -> Self {
        Self { version, files, channels: &[], percent: None, forced: false, package: None }
    }
}

/// Publishes `release` of [`MODULE`] into `catalog`, its folders in `work`.
pub fn publish_release(catalog: &Path, work: &Path, release: &Release) {
    let from = folder(work, &format!("release-{}", release.version), release.files);
    let package = release.package.as_ref().map(|script| {
        let path = work.join(format!("install-{}.sh", release.version));
        std::fs::write(&path, script).unwrap();
        path
    });
    let request = PublishRequest {
        forced: release.forced,
        package,
        channels: release.channels.iter().map(|c| (*c).to_owned()).collect(),
        schedule: release.percent.map(|percent| Schedule(vec![RolloutStep { at: None, percent }])),
        ..PublishRequest::new(catalog, MODULE, release.version.parse().unwrap(), from)
    };
    publish(&request).unwrap();
}

/// The running server and the catalog folder it answers from.
pub struct Served {
    /// The server.
    pub server: TestServer,
    /// Its catalog folder.
    pub catalog: PathBuf,
}

/// The server, on the catalog folder `catalog` (inside `dir`, which it keeps).
pub fn serve(dir: tempfile::TempDir, catalog: &Path) -> Served {
    serve_reporting(dir, catalog, None)
}

/// [`serve`], handing the install reports it accepts to `reports`.
pub fn serve_reporting(dir: tempfile::TempDir, catalog: &Path, reports: Option<Arc<dyn ReportSink>>) -> Served {
    let loaded = catalog::load(catalog).unwrap();
    Served { server: start_server_reporting(dir, loaded, |_| {}, reports), catalog: catalog.to_owned() }
}

impl Served {
    /// Loads the catalog again, as `serve` does when its files change.
    pub fn reload(&self) {
        self.server.shared.replace_catalog(catalog::load(&self.catalog).unwrap());
    }

    /// Makes `change` to release `version` and reloads.
    pub fn change(&self, version: &str, change: Change) {
        rollout::change(&self.catalog, MODULE, &version.parse().unwrap(), &change, now()).unwrap();
        self.reload();
    }

    /// A client of this server on `channel` (none: the default).
    pub fn client(&self, channel: Option<&str>) -> Client {
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

/// A catalog with 1.0 of `files`, then `more` releases, and `serve` on it; also the folder
/// for release folders and installations.
pub fn serve_releases<S>(
    first: Files,
    more: &[Release],
    serve: impl FnOnce(tempfile::TempDir, &Path) -> S,
) -> (tempfile::TempDir, PathBuf, S) {
    let dir = tempfile::tempdir().unwrap();
    let catalog_dir = dir.path().to_owned();
    let work = tempfile::tempdir().unwrap();
    for release in std::iter::once(&Release::new("1.0", first)).chain(more) {
        publish_release(&catalog_dir, work.path(), release);
    }
    let server = serve(dir, &catalog_dir);
    (work, catalog_dir, server)
}

/// The files of `files`, by id (folders left out: the client leaves a folder emptied by
/// deletions in place).
pub fn expected(files: Files) -> BTreeMap<String, Vec<u8>> {
    files_only(expected_tree(files.iter().copied()))
}

/// The files of the installation at `root` (not its own `.upgram` folder), by id.
pub fn installed_files(root: &Path) -> BTreeMap<String, Vec<u8>> {
    files_only(tree(root))
}

fn files_only(tree: BTreeMap<String, Vec<u8>>) -> BTreeMap<String, Vec<u8>> {
    tree.into_iter().filter(|(id, _)| !id.ends_with('/')).collect()
}

/// One installation: its root and its rollout bucket.
pub struct Site {
    /// Its root folder.
    pub root: PathBuf,
    /// Its bucket.
    pub bucket: u8,
}

impl Site {
    /// Installs the module on an empty folder through the library.
    pub fn install(runtime: &tokio::runtime::Runtime, client: &Client, root: PathBuf) -> Site {
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
    pub fn update(&self, runtime: &tokio::runtime::Runtime, client: &Client) -> String {
        self.update_with_outcomes(runtime, client).0
    }

    /// [`Site::update`], with the outcome of each module's upgrade.
    pub fn update_with_outcomes(
        &self,
        runtime: &tokio::runtime::Runtime,
        client: &Client,
    ) -> (String, Vec<ModuleOutcome>) {
        let installation = Installation::open_locked(&self.root).unwrap();
        let report = runtime
            .block_on(flows::update(&installation, client, Optional::Take, false, &Hooks::default()))
            .unwrap_or_else(|e| panic!("{}: update: {e}", self.root.display()));
        (installation.module(MODULE).expect("installed").version, report.outcomes)
    }
}

/// `work` on each of `items`, eight at a time (as independent processes would), results in
/// order.
pub fn in_parallel<T: Sync, R: Send>(items: &[T], work: impl Fn(&T) -> R + Sync) -> Vec<R> {
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
/// `new`, byte for byte, and the others at `old`. Returns how many are at `new`.
pub fn update_all(
    runtime: &tokio::runtime::Runtime,
    client: &Client,
    sites: &[Site],
    upgraded: impl Fn(u8) -> bool,
    (new, new_files): (&str, Files),
    (old, old_files): (&str, Files),
) -> usize {
    let results = in_parallel(sites, |site| site.update_with_outcomes(runtime, client));
    let mut count = 0;
    for (site, (version, outcomes)) in sites.iter().zip(results) {
        let (want, files) = if upgraded(site.bucket) { (new, new_files) } else { (old, old_files) };
        // The outcomes tell a failed upgrade (download, install) from one never offered.
        assert_eq!(version, want, "bucket {}: outcomes {outcomes:?}", site.bucket);
        assert_eq!(installed_files(&site.root), expected(files), "bucket {}: the files of {want}", site.bucket);
        count += usize::from(version == new);
    }
    count
}
