//! Load benchmark of the reference server: the real `upgram-server serve` and a plain UDP echo
//! server (`udp-echo`, same sockets and runtime, replying with as many bytes as upgram's mean
//! reply) under the same bounded load on loopback, in interleaved rounds (server, echo, server,
//! echo …), for four mixes of queries:
//!
//! - `hot`: 100 distinct queries over and over (most replies come from the signature cache);
//! - `distinct`: every query body new within the run, 3–8 modules each at random published
//!   versions, 10% with file-level entries;
//! - `nonce`: the distinct mix with 10% nonce-bound queries;
//! - `spoofed`: unvalidated sources (no valid server cookie) whose answers would need fallback
//!   documents, each body new; the server runs with `--docs-dir`.
//!
//! Every query asks for a compact answer (`compact="1"`) and follows fallbacks to module
//! documents (`docs="module"`), as the `upgram` client's do.
//!
//! For each mix it prints every round, then the medians of the per-round ratios (server CPU per
//! reply / echo's, replies/s server / echo's) with the goal beside each, and the load average,
//! since the machine may be shared. For `spoofed` it also prints the server's RSS growth over
//! the mix and the files written under the docs folder.
//!
//! Run: `cargo build --release -p upgram-server && cargo bench -p upgram-benches --bench load`,
//! or one mix alone: `UPGRAM_LOAD_MIX=distinct cargo bench -p upgram-benches --bench load`
//! (or `… --bench load -- distinct`). Options (environment): UPGRAM_LOAD_MIX (comma-separated,
//! default all four), UPGRAM_SERVER_BIN (another server binary), UPGRAM_LOAD_ROUNDS (default 3 per side), UPGRAM_LOAD_SECONDS (default 2
//! per round), UPGRAM_LOAD_QUERIES (default 200 000 replies per round), UPGRAM_LOAD_IN_FLIGHT
//! (default 256).

use std::collections::HashSet;
use std::hash::{BuildHasher, RandomState};
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use upgram_benches::load::{Load, Report, run};
use upgram_core::body::{Query, QueryFile, QueryModule};
use upgram_core::cookie::{ClientCookie, ServerCookie};
use upgram_core::sign::Nonce;
use upgram_core::version::Version;
use upgram_core::wire::{Frame, QueryOptions};
use upgram_core::{Datagram, Message};

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// `target/release/upgram-server`, next to this benchmark's own binary, or UPGRAM_SERVER_BIN
/// (to compare two builds of the server).
fn server_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("UPGRAM_SERVER_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("own path");
    let dir = exe.parent().and_then(Path::parent).expect("target/<profile>");
    let path = dir.join("upgram-server");
    assert!(path.exists(), "{} is missing: run `cargo build --release -p upgram-server` first", path.display());
    path
}

struct Server {
    child: Child,
    addr: SocketAddr,
    /// The HTTP side, for `upgram-server` (the echo has none).
    http: Option<SocketAddr>,
}

impl Server {
    fn pid(&self) -> u32 {
        self.child.id()
    }
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
    let mut words = line.split_whitespace();
    let addr = words.next().unwrap_or("").trim_start_matches("udp=").parse().expect("an address");
    let http = words.next().and_then(|w| w.strip_prefix("http=")).and_then(|a| a.parse().ok());
    Server { child, addr, http }
}

/// The server's `/metrics` text (empty when it serves no HTTP).
fn metrics_text(server: &Server) -> String {
    let Some(http) = server.http else { return String::new() };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    runtime
        .block_on(async { reqwest::get(format!("http://{http}/metrics")).await?.text().await })
        .expect("the server's /metrics")
}

/// One counter of the server's `/metrics` text, if it has it.
fn counter(text: &str, name: &str) -> Option<u64> {
    text.lines().find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// The server's replies by kind (`upgram_replies_total{kind}` from its `/metrics`).
fn replies_by_kind(text: &str) -> Vec<(String, u64)> {
    text.lines()
        .filter_map(|line| line.strip_prefix("upgram_replies_total{kind=\""))
        .filter_map(|rest| {
            let (kind, count) = rest.split_once("\"} ")?;
            Some((kind.to_owned(), count.trim().parse().ok()?))
        })
        .collect()
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

/// Modules `module-00` … `module-49`, 4 files each.
const SMALL_MODULES: usize = 50;
const SMALL_VERSIONS: [&str; 3] = ["1.0", "1.1", "1.2"];
const SMALL_FILES: usize = 4;
/// `big`: 60 files, every one changed in each release; its answers need a fallback document.
const BIG_VERSIONS: [&str; 2] = ["1", "2"];
const BIG_FILES: usize = 60;

fn make_catalog(server: &Path, dir: &Path) -> PathBuf {
    let catalog = dir.join("catalog");
    let scratch = dir.join("releases");
    for m in 0..SMALL_MODULES {
        let module = format!("module-{m:02}");
        for (version, changed) in SMALL_VERSIONS.into_iter().zip([4, 2, 1]) {
            publish(server, &catalog, &scratch, &module, version, SMALL_FILES, changed);
        }
    }
    for version in BIG_VERSIONS {
        publish(server, &catalog, &scratch, "big", version, BIG_FILES, BIG_FILES);
    }
    catalog
}

fn module(id: String, version: Option<&str>, files: Vec<QueryFile<'static>>) -> QueryModule<'static> {
    QueryModule { id: id.into(), version: version.map(|v| Version::parse(v).expect("v").into_owned()), files }
}

fn query(modules: &[(String, &str)]) -> Vec<u8> {
    Query {
        compact: true,
        module_docs: true,
        ..Query::new(modules.iter().map(|(id, version)| module(id.clone(), Some(version), vec![])).collect())
    }
    .to_vec()
}

/// splitmix64: a small, seeded, reproducible source of choices.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn percent(&mut self, p: usize) -> bool {
        self.below(100) < p
    }
}

/// Makes query datagrams no earlier one in the run had the body of.
struct Generator {
    rng: Rng,
    seen: HashSet<u64>,
    hasher: RandomState,
}

impl Generator {
    fn new(seed: u64) -> Self {
        Self { rng: Rng(seed), seen: HashSet::new(), hasher: RandomState::new() }
    }

    /// A body not made before, from `make`.
    fn fresh(&mut self, make: impl Fn(&mut Rng) -> Vec<u8>) -> Vec<u8> {
        loop {
            let body = make(&mut self.rng);
            if self.seen.insert(self.hasher.hash_one(&body)) {
                return body;
            }
        }
    }
}

/// 3–8 distinct modules (the 50 small ones and `big`) at random published versions; in 10%
/// of the queries, one small module also lists a file-level entry.
fn distinct_body(rng: &mut Rng) -> Vec<u8> {
    let count = 3 + rng.below(6);
    let mut picked: Vec<usize> = Vec::with_capacity(count);
    while picked.len() < count {
        let m = rng.below(SMALL_MODULES + 1);
        if !picked.contains(&m) {
            picked.push(m);
        }
    }
    let with_files = rng.percent(10);
    let mut modules = Vec::with_capacity(count);
    for (i, &m) in picked.iter().enumerate() {
        if m == SMALL_MODULES {
            modules.push(module("big".into(), Some(BIG_VERSIONS[rng.below(BIG_VERSIONS.len())]), vec![]));
            continue;
        }
        let files = if with_files && i == 0 {
            let id = format!("lib/part-{:03}.dat", rng.below(SMALL_FILES));
            let version = Version::parse(SMALL_VERSIONS[rng.below(SMALL_VERSIONS.len())]).expect("v").into_owned();
            vec![QueryFile { id: id.into(), version }]
        } else {
            vec![]
        };
        let version = SMALL_VERSIONS[rng.below(SMALL_VERSIONS.len())];
        modules.push(module(format!("module-{m:02}"), Some(version), files));
    }
    Query { compact: true, module_docs: true, ..Query::new(modules) }.to_vec()
}

/// `big` to install or to upgrade (its answer needs a fallback document), with 0–4 small
/// modules so every body differs.
fn spoofed_body(rng: &mut Rng) -> Vec<u8> {
    let big_version = [None, Some(BIG_VERSIONS[0])][rng.below(2)];
    let mut modules = vec![module("big".into(), big_version, vec![])];
    for _ in 0..rng.below(5) {
        let id = format!("module-{:02}", rng.below(SMALL_MODULES));
        if modules.iter().all(|m| m.id != id.as_str()) {
            modules.push(module(id, Some(SMALL_VERSIONS[rng.below(SMALL_VERSIONS.len())]), vec![]));
        }
    }
    Query { compact: true, module_docs: true, ..Query::new(modules) }.to_vec()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mix {
    Hot,
    Distinct,
    Nonce,
    Spoofed,
}

impl Mix {
    const ALL: [Mix; 4] = [Mix::Hot, Mix::Distinct, Mix::Nonce, Mix::Spoofed];

    fn name(self) -> &'static str {
        match self {
            Mix::Hot => "hot",
            Mix::Distinct => "distinct",
            Mix::Nonce => "nonce",
            Mix::Spoofed => "spoofed",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Mix::Hot => {
                "100 distinct queries over and over: 80% up to date, 15% a small module behind, 5% the 60-file module behind"
            }
            Mix::Distinct => "every body new: 3-8 modules at random published versions, 10% with file-level entries",
            Mix::Nonce => "the distinct mix, 10% of it nonce-bound",
            Mix::Spoofed => "unvalidated sources, every body new, answers that need a fallback document",
        }
    }

    /// (CPU per reply at most, replies/s at least), both relative to the echo.
    fn goals(self) -> (f64, f64) {
        match self {
            Mix::Hot => (1.3, 0.85),
            Mix::Distinct | Mix::Nonce => (2.0, 0.7),
            Mix::Spoofed => (3.0, 0.0),
        }
    }
}

/// The mixes asked for on the command line (words that are not options) or in UPGRAM_LOAD_MIX.
fn chosen_mixes() -> Vec<Mix> {
    let words: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let words = if words.is_empty() {
        std::env::var("UPGRAM_LOAD_MIX").unwrap_or_default().split(',').map(|w| w.trim().to_owned()).collect()
    } else {
        words
    };
    let chosen: Vec<Mix> = Mix::ALL.into_iter().filter(|m| words.iter().any(|w| w == m.name())).collect();
    if chosen.is_empty() { Mix::ALL.to_vec() } else { chosen }
}

/// What every query of a validated mix carries: the client cookie and the server cookie the
/// server gave it.
fn validated_options(server: SocketAddr) -> QueryOptions {
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
    // The cookie comes in a challenge, or attached to an answer small enough for the 3x rule.
    let server_cookie = match Datagram::decode(&buffer[..len]).expect("decodes").message {
        Message::CookieChallenge(c) => Some(c.server_cookie),
        _ => Frame::decode(&buffer[..len]).expect("decodes").server_cookie,
    };
    assert!(server_cookie.is_some(), "the server gives a cookie to a client that sent one");
    QueryOptions { client_cookie: Some(cookie), server_cookie, ..Default::default() }
}

/// The hot mix: 80% up to date, 15% a small module behind, 5% the 60-file module behind; over 50
/// distinct installations.
fn hot_queries(options: &QueryOptions) -> Vec<Vec<u8>> {
    (0..100usize)
        .map(|i| {
            let m = |k: usize| format!("module-{:02}", (i + k) % SMALL_MODULES);
            let body = match i % 20 {
                0 => query(&[("big".into(), "1")]),
                1..=3 => query(&[(m(0), "1.0"), (m(1), "1.2")]),
                _ => query(&[(m(0), "1.2"), (m(1), "1.2"), (m(2), "1.2")]),
            };
            Frame::query(0, &body, options).to_vec().expect("fits")
        })
        .collect()
}

/// `count` datagrams of `mix`, no body seen before in the run.
fn fresh_queries(mix: Mix, generator: &mut Generator, options: &QueryOptions, count: usize) -> Vec<Vec<u8>> {
    (0..count)
        .map(|_| match mix {
            Mix::Spoofed => {
                let body = generator.fresh(spoofed_body);
                let rng = &mut generator.rng;
                let client = ClientCookie(rng.next().to_be_bytes());
                // Half carry a made-up server cookie; half are padded so any reply would pass
                // the 3x rule.
                let forged = rng.percent(50).then_some(ServerCookie([1, 0, 0, 0, 0, 0, 0, 0, 7, 7, 7, 7, 7, 7, 7, 7]));
                let pad_to = if rng.percent(50) { 342 } else { 0 };
                let options = QueryOptions { client_cookie: Some(client), server_cookie: forged, nonce: None, pad_to };
                Frame::query(0, &body, &options).to_vec().expect("fits")
            }
            _ => {
                let body = generator.fresh(distinct_body);
                let nonce = (mix == Mix::Nonce && generator.rng.percent(10)).then(|| {
                    let mut bytes = [0u8; 16];
                    bytes[..8].copy_from_slice(&generator.rng.next().to_be_bytes());
                    bytes[8..].copy_from_slice(&generator.rng.next().to_be_bytes());
                    Nonce(bytes)
                });
                Frame::query(0, &body, &QueryOptions { nonce, ..*options }).to_vec().expect("fits")
            }
        })
        .collect()
}

/// Resident set size of `pid`, in bytes, from `/proc/<pid>/status`.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    kib * 1024
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

fn files_under(dir: &Path) -> usize {
    std::fs::read_dir(dir).map(|entries| entries.count()).unwrap_or(0)
}

fn print(name: &str, report: &Report) {
    println!(
        "  {name:<8} {:>9.0} replies/s  p50 {:>7.1} µs  p99 {:>8.1} µs  CPU {:>6.2} µs/reply  ({} replies, {} unanswered, mean reply {:.0} B)",
        report.rate(),
        report.p50.as_secs_f64() * 1e6,
        report.p99.as_secs_f64() * 1e6,
        report.cpu_per_reply().as_secs_f64() * 1e6,
        report.replies,
        report.unanswered,
        report.mean_reply_len,
    );
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted.get(sorted.len() / 2).copied().unwrap_or(f64::NAN)
}

/// The spread of the per-round ratios a median was taken of: "(rounds a–b)".
fn spread(values: &[f64]) -> String {
    let low = values.iter().copied().fold(f64::INFINITY, f64::min);
    let high = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!("(rounds {low:.2}–{high:.2})")
}

fn verdict(met: bool) -> &'static str {
    if met { "MET" } else { "NOT MET" }
}

/// How every run is bounded.
struct Bounds {
    rounds: usize,
    seconds: u64,
    count: u64,
    in_flight: usize,
    workers: String,
}

struct Setup {
    server: PathBuf,
    catalog: PathBuf,
    key: PathBuf,
    dir: PathBuf,
}

fn start_server(setup: &Setup, bounds: &Bounds, docs: Option<&Path>) -> Server {
    let mut command = Command::new(&setup.server);
    command.args(["serve", "--catalog"]).arg(&setup.catalog).arg("--key").arg(&setup.key);
    command.args(["--udp", "127.0.0.1:0", "--http", "127.0.0.1:0", "--public-url", "http://127.0.0.1:1/"]);
    command.args(["--workers", &bounds.workers, "--rate-per-source", "1e12", "--burst-per-source", "1e12"]);
    if let Some(docs) = docs {
        command.arg("--docs-dir").arg(docs);
    }
    spawn(command)
}

fn measure(target: &Server, queries: &[Vec<u8>], bounds: &Bounds, warm_up: bool) -> Report {
    let (max_duration, max_queries) = if warm_up {
        // Fresh queries: as many as were made; the hot mix cycles its 100.
        let fresh = queries.len().saturating_sub(bounds.in_flight);
        (Duration::from_millis(500), if fresh > 0 { fresh as u64 } else { bounds.count })
    } else {
        (Duration::from_secs(bounds.seconds), bounds.count)
    };
    let load = Load {
        target: target.addr,
        queries,
        in_flight: bounds.in_flight,
        max_queries,
        max_duration,
        server_pid: target.pid(),
    };
    run(&load).expect("load run")
}

fn run_mix(mix: Mix, setup: &Setup, bounds: &Bounds) {
    println!();
    println!("== {}: {} ==", mix.name(), mix.describe());
    println!("load average before: {}", load_average());
    let docs = setup.dir.join(format!("docs-{}", mix.name()));
    let upgram = start_server(setup, bounds, (mix == Mix::Spoofed).then_some(docs.as_path()));
    let options = validated_options(upgram.addr);
    let mut generator = Generator::new(0x5eed ^ mix as u64);
    let hot = hot_queries(&options);
    let per_round = bounds.count as usize + bounds.in_flight;
    let mut round_queries = |count: usize| -> Vec<Vec<u8>> {
        if mix == Mix::Hot { hot.clone() } else { fresh_queries(mix, &mut generator, &options, count) }
    };
    // Warm up (caches, page faults), then start the echo with the server's mean reply size.
    let warm = round_queries(20_000 + bounds.in_flight);
    let first = measure(&upgram, &warm, bounds, true);
    let echo_binary = env!("CARGO_BIN_EXE_udp-echo");
    let mut command = Command::new(echo_binary);
    command.args(["127.0.0.1:0", &(first.mean_reply_len.round() as usize).to_string(), &bounds.workers]);
    let echo = spawn(command);
    let _ = measure(&echo, &warm, bounds, true);
    drop(warm);

    let rss_before = rss(upgram.pid());
    let (mut cpu_ratios, mut rate_ratios, mut server_replies) = (Vec::new(), Vec::new(), 0);
    for round in 1..=bounds.rounds {
        let queries = round_queries(per_round);
        let server = measure(&upgram, &queries, bounds, false);
        let ceiling = measure(&echo, &queries, bounds, false);
        println!("round {round}:");
        print("upgram", &server);
        print("echo", &ceiling);
        server_replies += server.replies;
        cpu_ratios.push(server.cpu_per_reply().as_secs_f64() / ceiling.cpu_per_reply().as_secs_f64());
        rate_ratios.push(server.rate() / ceiling.rate());
    }
    let rss_growth = rss(upgram.pid()).saturating_sub(rss_before);
    let metrics = metrics_text(&upgram);
    let kinds = replies_by_kind(&metrics);
    drop(echo);
    drop(upgram);
    let (cpu_goal, rate_goal) = mix.goals();
    let (cpu, rate) = (median(&cpu_ratios), median(&rate_ratios));
    let (cpu_spread, rate_spread) = (spread(&cpu_ratios), spread(&rate_ratios));
    let n = bounds.rounds;
    println!("load average after:  {}", load_average());
    let total: u64 = kinds.iter().map(|(_, n)| n).sum();
    let shares: Vec<String> = kinds
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(kind, n)| format!("{kind} {:.1}%", 100.0 * *n as f64 / total.max(1) as f64))
        .collect();
    println!("{:<9} the server's replies over the mix (warm-up included): {}", mix.name(), shares.join(", "));
    let signed = counter(&metrics, "upgram_signatures_total").unwrap_or(0);
    // A server built before this counter existed does not report it.
    if let Some(ed25519) = counter(&metrics, "upgram_ed25519_signatures_total")
        && signed > 0
    {
        let batched = counter(&metrics, "upgram_batch_signed_total").unwrap_or(0);
        println!(
            "{:<9} {signed} answers signed ({batched} in batches) with {ed25519} Ed25519 signatures: {:.3} per answer",
            mix.name(),
            ed25519 as f64 / signed as f64
        );
    }
    let what = if mix == Mix::Spoofed { "CPU per challenged query" } else { "CPU per reply" };
    println!(
        "{:<9} {what}, upgram / echo (median of {n}): {cpu:5.2} {cpu_spread}  (goal <= {cpu_goal:.2}) {}",
        mix.name(),
        verdict(cpu <= cpu_goal)
    );
    if mix == Mix::Spoofed {
        println!("{:<9} replies/s, upgram / echo (median of {n}):    {rate:5.2} {rate_spread}  (no goal)", mix.name());
        let mib = rss_growth as f64 / (1024.0 * 1024.0);
        let enough = server_replies >= 100_000;
        println!(
            "{:<9} RSS growth over {server_replies} spoofed queries: {mib:.1} MiB  (goal <= 64 MiB over >= 100 000) {}",
            mix.name(),
            verdict(mib <= 64.0 && enough)
        );
        let files = files_under(&docs.join("doc"));
        println!("{:<9} files written under --docs-dir: {files}  (goal 0) {}", mix.name(), verdict(files == 0));
    } else {
        println!(
            "{:<9} replies/s, upgram / echo (median of {n}):    {rate:5.2} {rate_spread}  (goal >= {rate_goal:.2}) {}",
            mix.name(),
            verdict(rate >= rate_goal)
        );
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let mixes = chosen_mixes();
    let server = server_binary();
    let dir = std::env::temp_dir().join(format!("upgram-load-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch");
    let catalog = make_catalog(&server, &dir);
    let key = dir.join("server.key");
    let keygen = Command::new(&server).args(["keygen", "--out"]).arg(&key).stdout(Stdio::null()).status();
    assert!(keygen.expect("keygen").success());
    let bounds = Bounds {
        rounds: env_or("UPGRAM_LOAD_ROUNDS", 3usize).max(1),
        seconds: env_or("UPGRAM_LOAD_SECONDS", 2u64),
        count: env_or("UPGRAM_LOAD_QUERIES", 200_000u64),
        in_flight: env_or("UPGRAM_LOAD_IN_FLIGHT", 256usize),
        workers: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2).to_string(),
    };
    println!(
        "upgram server under load: {} queries in flight, each round {} s or {} replies, {} rounds per side, {} workers, {} cores",
        bounds.in_flight, bounds.seconds, bounds.count, bounds.rounds, bounds.workers, bounds.workers
    );
    let setup = Setup { server, catalog, key, dir: dir.clone() };
    for mix in mixes {
        run_mix(mix, &setup, &bounds);
    }
    let _ = std::fs::remove_dir_all(&dir);
}
