//! The real binaries: `upgram-server` publishing and serving a catalog as a child process, and
//! `upgram` run as a person would run it.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

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
    for release in releases {
        publish(root, release, &[]);
    }
    serve_published(root)
}

/// Publishes `release` into `root/catalog`, with extra `publish` arguments (`--depends`, ...).
pub fn publish(root: &Path, (module, version, files): &ReleaseFiles<'_>, extra: &[&str]) {
    let folder = root.join(format!("{module}-{version}"));
    for (path, content) in files {
        let path = folder.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }
    let catalog = root.join("catalog");
    let mut args = vec!["publish", "--catalog", catalog.to_str().unwrap(), "--module", module, "--version", version];
    args.extend(["--from", folder.to_str().unwrap()]);
    args.extend(extra);
    run_server(&args);
}

/// Serves what was published into `root/catalog`, with a new key.
pub fn serve_published(root: &Path) -> ServerProcess {
    let key = root.join("server.key");
    let info = run_server(&["keygen", "--out", key.to_str().unwrap()]);
    let public_key = info.lines().next().unwrap().trim_start_matches("public key: ").to_owned();
    serve_catalog(&root.join("catalog"), &key, public_key)
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
