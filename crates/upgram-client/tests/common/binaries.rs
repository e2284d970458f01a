//! The real binaries: `upgram-server` publishing and serving a catalog as a child process, and
//! `upgram` run as a person would run it.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use upgram_client::state::{InstalledFile, InstalledModule, InstalledState};
use upgram_core::Sha256Digest;

/// The `upgram` binary under test.
pub const UPGRAM: &str = env!("CARGO_BIN_EXE_upgram");

/// `upgram-server`, beside `upgram` in target/<profile>/ (built on demand).
pub fn server_binary() -> PathBuf {
    let path = Path::new(UPGRAM).parent().expect("target folder").join("upgram-server");
    if !path.exists() {
        let status = Command::new(env!("CARGO")).args(["build", "-q", "-p", "upgram-server"]).status().expect("cargo");
        assert!(status.success(), "building upgram-server");
    }
    path
}

/// Runs `upgram-server ARGS`, which must succeed; returns its standard output.
pub fn run_server(args: &[&str]) -> String {
    let output = Command::new(server_binary()).args(args).output().expect("upgram-server runs");
    assert!(output.status.success(), "{args:?}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).expect("utf8")
}

/// A running `upgram-server serve`, killed when dropped.
pub struct ServerProcess {
    child: Child,
    /// Its UDP address, `host:port`.
    pub udp: String,
    /// The public key clients pin, hex.
    pub public_key: String,
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A release to publish: module, version, and its files (path, content).
pub type ReleaseFiles<'a> = (&'a str, &'a str, Vec<(&'a str, &'a [u8])>);

/// Publishes each release into `root/catalog`, then serves it.
pub fn serve_releases(root: &Path, releases: &[ReleaseFiles<'_>]) -> ServerProcess {
    let catalog = root.join("catalog");
    for (module, version, files) in releases {
        publish(root, module, version, files, &[]);
    }
    serve_with_new_key(root, &catalog)
}

/// Writes `files` into the release folder `root/<module>-<version>` and publishes it into
/// `root/catalog` with the real publisher; `extra` are more `publish` arguments (`--depends`,
/// `--package`…).
pub fn publish(root: &Path, module: &str, version: &str, files: &[(&str, &[u8])], extra: &[&str]) {
    let folder = root.join(format!("{module}-{version}"));
    std::fs::create_dir_all(&folder).unwrap();
    for (path, content) in files {
        let path = folder.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }
    let catalog = root.join("catalog");
    let mut args =
        vec!["publish", "--catalog", catalog.to_str().unwrap(), "--module", module, "--version", version, "--from"];
    args.push(folder.to_str().unwrap());
    args.extend_from_slice(extra);
    run_server(&args);
}

/// Makes a signing key in `root` (or reuses the one made there before, so a restarted server
/// keeps its key), then serves `catalog` with it.
pub fn serve_with_new_key(root: &Path, catalog: &Path) -> ServerProcess {
    let key = root.join("server.key");
    if !key.exists() {
        run_server(&["keygen", "--out", key.to_str().unwrap()]);
    }
    let info = run_server(&["key-info", "--key", key.to_str().unwrap()]);
    let public_key = info.lines().next().unwrap().trim_start_matches("public key: ").to_owned();
    serve_catalog(catalog, &key, public_key)
}

/// Serves `catalog` with `key` (whose public key is `public_key`).
pub fn serve_catalog(catalog: &Path, key: &Path, public_key: String) -> ServerProcess {
    let mut child = Command::new(server_binary())
        .args(["serve", "--catalog", catalog.to_str().unwrap(), "--key", key.to_str().unwrap()])
        .args(["--udp", "127.0.0.1:0", "--http", "127.0.0.1:0", "--public-url", "http://{http}/"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let udp = line.split_whitespace().next().unwrap().trim_start_matches("udp=").to_owned();
    ServerProcess { child, udp, public_key }
}

/// Runs `upgram ARGS` with extra environment variables.
pub fn upgram_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(UPGRAM).args(args).envs(env.iter().copied()).output().expect("upgram runs")
}

/// Runs `upgram ARGS`: exit code, standard output, standard error.
pub fn upgram(args: &[&str]) -> (i32, String, String) {
    let output = upgram_env(args, &[]);
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The arguments that point `upgram` at `server` and the installation at `root`.
pub fn server_args<'a>(server: &'a ServerProcess, root: &'a str) -> Vec<&'a str> {
    vec!["--server", &server.udp, "--public-key", &server.public_key, "--root", root]
}

/// Installs `module` at `version` by hand, as a first release: its files under `root`, and its
/// entry (every file at `version`, with its hash) added to `root/.upgram/state.json`.
pub fn install_release(root: &Path, module: &str, version: &str, files: &[(&str, &[u8])]) {
    let mut entry = InstalledModule { version: version.to_owned(), ..Default::default() };
    for (path, content) in files {
        std::fs::create_dir_all(root.join(path).parent().unwrap()).unwrap();
        std::fs::write(root.join(path), content).unwrap();
        let file = InstalledFile {
            version: version.to_owned(),
            sha256: Sha256Digest::of(content).to_hex(),
            executable: false,
        };
        entry.files.insert((*path).to_owned(), file);
    }
    let state_path = root.join(".upgram/state.json");
    std::fs::create_dir_all(state_path.parent().unwrap()).unwrap();
    let mut state = InstalledState::load(&state_path).unwrap();
    state.modules.insert(module.to_owned(), entry);
    state.save(&state_path).unwrap();
}

/// Everything under `root` but the bookkeeping folder: each file with its content, each folder
/// as `path/` with no content (so an empty folder left behind shows).
pub fn tree(root: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(dir: &Path, root: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let rel = path.strip_prefix(root).unwrap().to_string_lossy().replace('\\', "/");
            if rel == ".upgram" {
                continue;
            }
            if path.is_dir() {
                out.insert(format!("{rel}/"), Vec::new());
                walk(&path, root, out);
            } else {
                out.insert(rel, std::fs::read(&path).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// What [`tree`] should find for these files: each file, and each folder on their way.
pub fn expected_tree<'a>(files: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    for (path, content) in files {
        let mut folder = Path::new(path).parent();
        while let Some(dir) = folder.filter(|d| !d.as_os_str().is_empty()) {
            out.insert(format!("{}/", dir.to_string_lossy()), Vec::new());
            folder = dir.parent();
        }
        out.insert(path.to_owned(), content.to_vec());
    }
    out
}

/// The modules of the state at `root`.
pub fn state_modules(root: &Path) -> BTreeMap<String, InstalledModule> {
    InstalledState::load(&root.join(".upgram/state.json")).unwrap().modules
}

/// The installation at `root` is exactly `files` (no other file or folder outside `.upgram/`)
/// with `modules` as its state, and no upgrade left a journal or a backup behind.
pub fn assert_installation(
    root: &Path,
    files: &[(&str, &[u8])],
    modules: &BTreeMap<String, InstalledModule>,
    context: &str,
) {
    assert_eq!(tree(root), expected_tree(files.iter().copied()), "{context}: the files");
    assert_eq!(&state_modules(root), modules, "{context}: the state");
    let meta = root.join(".upgram");
    let journals: Vec<_> = std::fs::read_dir(meta.join("journal")).map(|d| d.collect()).unwrap_or_default();
    assert!(journals.is_empty(), "{context}: journals left behind: {journals:?}");
    assert!(!meta.join("backup").exists() || tree(&meta.join("backup")).is_empty(), "{context}: backups left behind");
}

/// The state file of the installation at `root`, as JSON.
pub fn state_json(root: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(root.join(".upgram/state.json")).unwrap()).unwrap()
}

/// [`publish`] for a release given as one value.
pub fn publish_release(root: &Path, (module, version, files): &ReleaseFiles<'_>, extra: &[&str]) {
    publish(root, module, version, files, extra);
}

/// [`install_release`] for a release given as one value.
pub fn install(root: &Path, (module, version, files): &ReleaseFiles<'_>) {
    install_release(root, module, version, files);
}

/// Serves `root/catalog` with the key in `root` (made on first use).
pub fn serve(root: &Path) -> ServerProcess {
    serve_with_new_key(root, &root.join("catalog"))
}

/// Waits (at most 10 s) until nobody holds the installation's lock. A lock released by this
/// test process can stay held for a moment by a child another test forks at that instant (it
/// shares the descriptor until it executes its program), so a test that releases a lock waits
/// for it before the next step relies on it being free.
pub fn wait_for_lock_free(root: &Path) {
    let path = upgram_client::layout::Layout::new(root).lock_file();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let file = std::fs::File::options().write(true).open(&path).unwrap();
        if file.try_lock().is_ok() {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "the lock {} stays held", path.display());
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
