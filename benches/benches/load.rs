//! Load benchmark of the reference server (issue 3, item 10): the real `upgram-server serve`
//! and a plain UDP echo server (`udp-echo`, same sockets and runtime, replying with as many
//! bytes as upgram's mean reply) each get the same bounded load on loopback in the same run;
//! it prints replies/s, p50/p99 latency and the server's CPU time per reply, and both ratios.
//!
//! Run: `cargo build --release -p upgram-server && cargo bench -p upgram-benches --bench load`.
//! Options (environment): UPGRAM_LOAD_SECONDS (default 5 per server), UPGRAM_LOAD_QUERIES
//! (default 1 000 000 per server), UPGRAM_LOAD_IN_FLIGHT (default 256).

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use upgram_benches::load::{Load, Report, run};
use upgram_core::body::{Query, QueryModule};
use upgram_core::cookie::ClientCookie;
use upgram_core::version::Version;
use upgram_core::wire::{Frame, QueryOptions};
use upgram_core::{Datagram, Message};

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// `target/release/upgram-server`, next to this benchmark's own binary.
fn server_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("own path");
    let dir = exe.parent().and_then(Path::parent).expect("target/<profile>");
    let path = dir.join("upgram-server");
    assert!(path.exists(), "{} is missing: run `cargo build --release -p upgram-server` first", path.display());
    path
}

struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `command`, which prints its address (or `udp=ADDR ...`) on its first line.
fn spawn(mut command: Command) -> Server {
    let mut child = command.stdout(Stdio::piped()).stderr(Stdio::null()).spawn().expect("server starts");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).expect("address line");
    let addr = line.split_whitespace().next().unwrap_or("").trim_start_matches("udp=").parse().expect("an address");
    Server { child, addr }
}

fn publish(server: &Path, catalog: &Path, scratch: &Path, module: &str, version: &str, files: usize, changed: usize) {
    let folder = scratch.join(format!("{module}-{version}"));
    for i in 0..files {
        let path = folder.join(format!("lib/part-{i:03}.dat"));
        std::fs::create_dir_all(path.parent().expect("parent")).expect("folder");
        let generation = if i < changed { version } else { "base" };
        std::fs::write(&path, format!("{module} part {i} at {generation}\n").repeat(20)).expect("file");
    }
    let status = Command::new(server)
        .args(["publish", "--catalog"])
        .arg(catalog)
        .args(["--module", module, "--version", version, "--from"])
        .arg(&folder)
        .stdout(Stdio::null())
        .status()
        .expect("publish runs");
    assert!(status.success(), "publish {module} {version}");
}

/// A catalog of 50 modules with 3 releases each; `big` has 60 files.
fn make_catalog(server: &Path, dir: &Path) -> PathBuf {
    let catalog = dir.join("catalog");
    let scratch = dir.join("releases");
    for m in 0..50 {
        let module = format!("module-{m:02}");
        for (version, changed) in [("1.0", 4), ("1.1", 2), ("1.2", 1)] {
            publish(server, &catalog, &scratch, &module, version, 4, changed);
        }
    }
    for (version, changed) in [("1", 60), ("2", 60)] {
        publish(server, &catalog, &scratch, "big", version, 60, changed);
    }
    catalog
}

fn query(modules: &[(String, &str)]) -> Vec<u8> {
    Query {
        modules: modules
            .iter()
            .map(|(id, version)| QueryModule {
                id: id.clone().into(),
                version: Some(Version::parse(version).expect("v").into_owned()),
                files: vec![],
            })
            .collect(),
    }
    .to_vec()
}

/// The mix: 80% up to date, 15% an update with a file list, 5% a fallback; over 50 distinct
/// installations, with the cookie the server gave us (validated source).
fn mix(server: SocketAddr) -> Vec<Vec<u8>> {
    let cookie = ClientCookie([5; 8]);
    let probe = query(&[("module-00".into(), "1.2")]);
    let socket = UdpSocket::bind("127.0.0.1:0").expect("socket");
    socket.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    let first = Frame::query(1, &probe, &QueryOptions { client_cookie: Some(cookie), ..Default::default() })
        .to_vec()
        .expect("fits");
    socket.send_to(&first, server).expect("send");
    let mut buffer = [0u8; 2048];
    let (len, _) = socket.recv_from(&mut buffer).expect("the server answers");
    let server_cookie = match Datagram::decode(&buffer[..len]).expect("decodes").message {
        Message::CookieChallenge(c) => Some(c.server_cookie),
        _ => None,
    };
    let options = QueryOptions { client_cookie: Some(cookie), server_cookie, ..Default::default() };
    let mut queries = Vec::new();
    for i in 0..100usize {
        let m = |k: usize| format!("module-{:02}", (i + k) % 50);
        let body = match i % 20 {
            0 => query(&[("big".into(), "1")]),
            1..=3 => query(&[(m(0), "1.0"), (m(1), "1.2")]),
            _ => query(&[(m(0), "1.2"), (m(1), "1.2"), (m(2), "1.2")]),
        };
        queries.push(Frame::query(0, &body, &options).to_vec().expect("fits"));
    }
    queries
}

fn print(name: &str, report: &Report) {
    println!(
        "{name:<13} {:>9.0} replies/s  p50 {:>7.1} µs  p99 {:>7.1} µs  CPU {:>5.2} µs/reply  ({} replies, {} unanswered, mean reply {:.0} B)",
        report.rate(),
        report.p50.as_secs_f64() * 1e6,
        report.p99.as_secs_f64() * 1e6,
        report.cpu_per_reply().as_secs_f64() * 1e6,
        report.replies,
        report.unanswered,
        report.mean_reply_len,
    );
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let server = server_binary();
    let dir = std::env::temp_dir().join(format!("upgram-load-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch");
    let catalog = make_catalog(&server, &dir);
    let key = dir.join("server.key");
    assert!(
        Command::new(&server)
            .args(["keygen", "--out"])
            .arg(&key)
            .stdout(Stdio::null())
            .status()
            .expect("keygen")
            .success()
    );
    let workers = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2).to_string();
    let seconds = env_or("UPGRAM_LOAD_SECONDS", 5u64);
    let count = env_or("UPGRAM_LOAD_QUERIES", 1_000_000u64);
    let in_flight = env_or("UPGRAM_LOAD_IN_FLIGHT", 256usize);

    let mut command = Command::new(&server);
    command.args(["serve", "--catalog"]).arg(&catalog).arg("--key").arg(&key);
    command.args([
        "--udp",
        "127.0.0.1:0",
        "--http",
        "127.0.0.1:0",
        "--public-url",
        "http://127.0.0.1:1/",
        "--workers",
        &workers,
    ]);
    command.args(["--rate-per-source", "1e12", "--burst-per-source", "1e12"]);
    let upgram = spawn(command);
    let queries = mix(upgram.addr);
    let load = |addr, pid| Load {
        target: addr,
        queries: &queries,
        in_flight,
        max_queries: count,
        max_duration: Duration::from_secs(seconds),
        server_pid: pid,
    };
    // Warm up (caches, page faults), then measure.
    let _ = run(&Load { max_duration: Duration::from_millis(500), ..load(upgram.addr, upgram.child.id()) });
    let measured = run(&load(upgram.addr, upgram.child.id())).expect("upgram run");
    drop(upgram);

    let echo_binary = env!("CARGO_BIN_EXE_udp-echo");
    let reply_len = (measured.mean_reply_len.round() as usize).to_string();
    let mut command = Command::new(echo_binary);
    command.args(["127.0.0.1:0", &reply_len, &workers]);
    let echo = spawn(command);
    let _ = run(&Load { max_duration: Duration::from_millis(500), ..load(echo.addr, echo.child.id()) });
    let ceiling = run(&load(echo.addr, echo.child.id())).expect("echo run");
    drop(echo);
    let _ = std::fs::remove_dir_all(&dir);

    println!();
    println!(
        "== upgram server under load: {in_flight} queries in flight, {seconds} s or {count} replies each, {workers} workers =="
    );
    println!(
        "mix: 80% up to date (3 modules), 15% update with a file list (2 modules), 5% fallback (60 files); 100 distinct queries"
    );
    print("upgram-server", &measured);
    print("udp echo", &ceiling);
    let cpu_ratio = measured.cpu_per_reply().as_secs_f64() / ceiling.cpu_per_reply().as_secs_f64();
    let rate_ratio = measured.rate() / ceiling.rate();
    println!(
        "CPU per reply, upgram / echo: {cpu_ratio:.2} (goal <= 1.50) {}",
        if cpu_ratio <= 1.5 { "MET" } else { "NOT MET" }
    );
    println!(
        "replies/s, upgram / echo:     {rate_ratio:.2} (goal >= 0.80) {}",
        if rate_ratio >= 0.8 { "MET" } else { "NOT MET" }
    );
}
