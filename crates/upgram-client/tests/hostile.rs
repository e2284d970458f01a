//! The client on a hostile network over real UDP sockets on 127.0.0.1 (SPEC.md §2.2-§2.4,
//! §10.4): the reference server in-process, and between them a proxy that loses, duplicates,
//! reorders, delays, corrupts and truncates datagrams and forges replies (`common/proxy.rs`).
//! The exchange's rules are covered at scale by the simulated network of `sim.rs`; these few
//! runs check the tokio driver and the client around it on real sockets. Every wait is bounded
//! by the client's deadline and a guard above it; nothing here asserts how fast anything is.

mod common;

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use common::proxy::{Faults, Forgery, Injector, Proxy, ProxyConfig};
use common::{SEED, TestServer, client, client_runtime, dead_udp_address, installed, large_installation, start_server};
use upgram_client::client::ClientError;
use upgram_client::state::InstalledState;
use upgram_client::transport::{CookieJar, TransportError};
use upgram_client::{CheckReport, Client};
use upgram_core::cookie::{CookieCheck, CookieSecret, check_server_cookie};

/// What a guard adds to a client deadline before it calls the test hung.
const GUARD: Duration = Duration::from_secs(10);

/// Runs `check` under a guard of `deadline` + [`GUARD`]; the elapsed time is information only.
async fn guarded<T>(deadline: Duration, check: impl Future<Output = T>) -> (T, Duration) {
    let started = Instant::now();
    let outcome = tokio::time::timeout(deadline + GUARD, check).await.expect("the client outlived its deadline");
    (outcome, started.elapsed())
}

/// The merged answers on a clean path, straight to the server, as JSON for comparison.
async fn clean_answer(server: &TestServer, state: &InstalledState) -> String {
    let direct = client(&[server.udp], Duration::from_secs(20), Duration::from_millis(500));
    let report = direct.check(state).await.expect("a clean path answers");
    answers(&report)
}

/// The merged module answers of a report, as JSON (order is by module id).
fn answers(report: &CheckReport) -> String {
    serde_json::to_string(&report.modules()).expect("answers serialize")
}

#[test]
fn ten_checks_through_thirty_percent_loss_all_get_the_clean_answer() {
    const CHECKS: u64 = 10;
    let server = start_server(|_| {});
    let runtime = client_runtime();
    runtime.block_on(async {
        let state = large_installation();
        let expected = clean_answer(&server, &state).await;
        let deadline = Duration::from_secs(30);
        let (mut slowest, mut total) = (Duration::ZERO, Duration::ZERO);
        let (mut forged, mut bad, mut challenges, mut exchanges) = (0, 0, 0, 0);
        let (mut seen, mut lost, mut damaged, mut shuffled) = (0, 0, 0, 0);
        for seed in 0..CHECKS {
            let mut injector = Injector::new(4, 200);
            injector.server_seed = Some(SEED);
            let config = ProxyConfig {
                to_server: Faults::lossy(0.3),
                to_client: Faults::lossy(0.3),
                injector: Some(injector),
                ..ProxyConfig::clean(server.udp, seed)
            };
            let proxy = Proxy::start(config).await.expect("proxy");
            // Every other run asks for nonce-bound signatures (SPEC.md §10.2).
            let client = Client::builder()
                .server(proxy.addr())
                .public_key(common::public_key())
                .deadline(deadline)
                .first_timeout(Duration::from_millis(100))
                .nonce_bound(seed % 2 == 1)
                .build()
                .expect("client");
            let started = Instant::now();
            // The guard is the client's deadline itself: every run must end within it.
            let outcome = tokio::time::timeout(deadline, client.check(&state)).await;
            let elapsed = started.elapsed();
            let outcome = outcome.unwrap_or_else(|_| panic!("seed {seed}: still running at the deadline"));
            let report = outcome.unwrap_or_else(|e| panic!("seed {seed}: {e}"));
            assert_eq!(answers(&report), expected, "seed {seed}: the merged answers differ from the clean path");
            let stats = proxy.stats();
            // A forgery may also be lost in the kernel's socket buffer: none may be taken.
            assert!(!answers(&report).contains("evil.invalid"), "seed {seed}: a forgery was taken");
            slowest = slowest.max(elapsed);
            total += elapsed;
            forged += stats.forged_total();
            bad += report.dropped.bad;
            challenges += report.dropped.challenges;
            exchanges += report.exchanges;
            for way in [stats.to_server, stats.to_client] {
                seen += way.received;
                lost += way.dropped;
                damaged += way.corrupted + way.truncated;
                shuffled += way.duplicated + way.reordered + way.delayed;
            }
        }
        eprintln!(
            "{CHECKS} lossy checks: {exchanges} exchanges; of {seen} datagrams the proxy lost {lost}, damaged {damaged}, \
             duplicated, reordered or delayed {shuffled}; {forged} forged; the clients dropped {bad} as bad and took \
             {challenges} challenges; mean {:?}, slowest {slowest:?} (deadline {deadline:?})",
            total / CHECKS as u32
        );
    });
}

#[test]
fn two_thousand_forged_replies_during_one_exchange_are_all_dropped() {
    const FORGED: usize = 2_000;
    let server = start_server(|_| {});
    let runtime = client_runtime();
    runtime.block_on(async {
        let state = installed(&[("core", "1.0"), ("tool-00", "1.0"), ("ghost", "1")]);
        let expected = clean_answer(&server, &state).await;
        // The client under attack is made after the proxy, which paces itself to it.
        let victim: Arc<OnceLock<Client>> = Arc::new(OnceLock::new());
        let watched = victim.clone();
        let mut injector = Injector::new(FORGED, FORGED);
        injector.server_seed = Some(SEED);
        injector.armed = false;
        injector.progress =
            Some(Arc::new(move || watched.get().map(|c| c.dropped()).map(|d| d.bad + d.errors).unwrap_or(0)));
        let config = ProxyConfig { injector: Some(injector), ..ProxyConfig::clean(server.udp, 7) };
        let proxy = Proxy::start(config).await.expect("proxy");

        // A genuine answer to another query passes the proxy first, for the attacker to replay.
        let warm_up = client(&[proxy.addr()], Duration::from_secs(20), Duration::from_millis(500));
        warm_up.check(&installed(&[("core", "1.1")])).await.expect("warm-up check");
        proxy.set_injecting(true);
        let queries_before = proxy.stats().queries;

        // One transmission: the first timeout is longer than the whole attack takes.
        let deadline = Duration::from_secs(240);
        let client = victim.get_or_init(|| common::client(&[proxy.addr()], deadline, Duration::from_secs(120)));
        let (outcome, elapsed) = guarded(deadline, client.check(&state)).await;
        let report = outcome.expect("the real reply is accepted");
        assert_eq!(answers(&report), expected, "the answer is the server's");

        let stats = proxy.stats();
        let transmissions = stats.queries - queries_before;
        assert_eq!(stats.forged_total(), FORGED as u64);
        for kind in Forgery::ALL {
            assert!(stats.forged.get(&kind).copied().unwrap_or(0) > 0, "no {kind:?} was sent: {:?}", stats.forged);
        }
        // One exchange: one request id, one socket (retransmissions, if any, keep both).
        assert_eq!(report.exchanges, 1);
        assert!(transmissions >= 1);
        assert_eq!(report.dropped.bad, stats.forged_bad(), "every forgery that reached the client was dropped");
        assert_eq!(report.dropped.errors, stats.forged_errors(), "forged errors are advisory only");
        assert_eq!(report.dropped.challenges, 0, "no forged challenge was taken");
        let jar = client.cookie_jar();
        let forged_cookie =
            jar.entries().any(|(addr, (_, cookie))| cookie.is_some() && !jar_cookie_is_valid(&jar, *addr));
        assert!(!forged_cookie, "only the server's own cookies are in the jar");
        eprintln!(
            "{FORGED} forged replies in one exchange: {} dropped as bad, {} advisory errors, {} from a wrong \
             source (filtered by the connected socket); by kind {:?}; the check took {elapsed:?} with {transmissions} transmission(s)",
            report.dropped.bad,
            report.dropped.errors,
            stats.forged.get(&Forgery::WrongSource).copied().unwrap_or(0),
            stats.forged,
        );
    });
}

/// Whether the jar's cookie for `server` is one the servers made for this client at 127.0.0.1.
fn jar_cookie_is_valid(jar: &CookieJar, server: std::net::SocketAddr) -> bool {
    let Some((_, (client, Some(cookie)))) = jar.entries().find(|(addr, _)| **addr == server) else { return false };
    let secret = CookieSecret(common::COOKIE_SECRET);
    let now = upgram_server::udp::unix_now();
    matches!(
        check_server_cookie(&[&secret], client, cookie, IpAddr::V4(Ipv4Addr::LOCALHOST), now),
        CookieCheck::Valid { .. }
    )
}

/// What an embedder does: load the state, check, and only on success record the hints and
/// cookies and save.
async fn check_and_save(client: &Client, path: &Path) -> Result<CheckReport, ClientError> {
    let mut state = InstalledState::load(path).expect("state loads");
    let report = client.check(&state).await?;
    report.apply_hints(&mut state);
    state.set_cookie_jar(&client.cookie_jar());
    state.save(path).expect("state saves");
    Ok(report)
}

/// Asserts that a check against `servers` fails with `Unavailable` within its deadline and leaves
/// the state file and the cookie jar as they were.
async fn assert_unavailable(servers: &[std::net::SocketAddr], state: &InstalledState) -> Duration {
    let dir = tempfile::tempdir().expect("temporary folder");
    let path = dir.path().join("state.json");
    state.save(&path).expect("state saves");
    let before = std::fs::read(&path).expect("state file");
    let deadline = Duration::from_secs(2);
    let mut builder =
        Client::builder().public_key(common::public_key()).deadline(deadline).first_timeout(Duration::from_millis(100));
    for server in servers {
        builder = builder.server(*server);
    }
    let client = builder.build().expect("client");
    let started = Instant::now();
    // The guard is the deadline itself plus a margin far below a second deadline.
    let outcome = tokio::time::timeout(deadline + Duration::from_millis(1500), check_and_save(&client, &path))
        .await
        .unwrap_or_else(|_| panic!("no answer within the deadline of {deadline:?} (+1.5 s margin)"));
    let elapsed = started.elapsed();
    let error = outcome.expect_err("nobody answers");
    assert!(
        matches!(&error, ClientError::Transport(TransportError::Unavailable { deadline: d, .. }) if *d == deadline),
        "{error:?}"
    );
    let text = error.to_string();
    assert!(text.contains(&servers[0].to_string()) && text.contains("no verified reply"), "{text}");
    assert_eq!(std::fs::read(&path).expect("state file"), before, "the state file is byte-identical");
    assert!(client.cookie_jar().entries().all(|(_, (_, server))| server.is_none()), "no cookie was taken");
    elapsed
}

#[test]
fn server_down_nothing_listening_is_unavailable_within_the_deadline() {
    let runtime = client_runtime();
    let elapsed = runtime.block_on(assert_unavailable(&[dead_udp_address()], &large_installation()));
    eprintln!("nothing listening: unavailable after {elapsed:?}");
}

#[test]
fn a_slow_server_and_more_parts_than_exchanges_in_flight_keep_one_deadline() {
    // Two hundred modules: seven query datagrams, one exchange at a time, and every reply a
    // second late. Each part alone would make it; the whole check cannot, and the deadline is
    // the whole check's (SPEC.md §2.3: "all servers, all parts"), not each part's.
    let server = start_server(|_| {});
    let runtime = client_runtime();
    runtime.block_on(async {
        let ghosts: Vec<String> = (0..200).map(|i| format!("ghost-{i:03}")).collect();
        let modules: Vec<(&str, &str)> = ghosts.iter().map(|g| (g.as_str(), "1.0")).collect();
        let config =
            ProxyConfig { to_client: Faults::slow(Duration::from_secs(1)), ..ProxyConfig::clean(server.udp, 13) };
        let proxy = Proxy::start(config).await.expect("proxy");
        let dir = tempfile::tempdir().expect("temporary folder");
        let path = dir.path().join("state.json");
        installed(&modules).save(&path).expect("state saves");
        let before = std::fs::read(&path).expect("state file");
        let deadline = Duration::from_secs(2);
        let client = Client::builder()
            .server(proxy.addr())
            .public_key(common::public_key())
            .deadline(deadline)
            .first_timeout(Duration::from_secs(3))
            .max_in_flight(1)
            .build()
            .expect("client");
        let started = Instant::now();
        let outcome = tokio::time::timeout(deadline + Duration::from_millis(1500), check_and_save(&client, &path))
            .await
            .unwrap_or_else(|_| panic!("the check ran past its deadline of {deadline:?} (+1.5 s margin)"));
        let error = outcome.expect_err("seven parts at a second each do not fit two seconds");
        assert!(matches!(error, ClientError::Transport(TransportError::Unavailable { .. })), "{error:?}");
        assert_eq!(std::fs::read(&path).expect("state file"), before, "the state file is byte-identical");
        eprintln!("seven slow parts, one in flight: unavailable after {:?}", started.elapsed());
    });
}

#[test]
fn failover_from_a_black_hole_after_three_transmissions() {
    let server = start_server(|_| {});
    let runtime = client_runtime();
    runtime.block_on(async {
        let state = installed(&[("core", "1.0")]);
        let expected = clean_answer(&server, &state).await;
        let config = ProxyConfig {
            to_server: Faults::BLACK_HOLE,
            to_client: Faults::BLACK_HOLE,
            ..ProxyConfig::clean(server.udp, 5)
        };
        let hole = Proxy::start(config).await.expect("proxy");
        let deadline = Duration::from_secs(20);
        let client = client(&[hole.addr(), server.udp], deadline, Duration::from_millis(100));
        let (outcome, elapsed) = guarded(deadline, client.check(&state)).await;
        let report = outcome.expect("the second server answers");
        assert_eq!(answers(&report), expected);
        assert_eq!(hole.stats().to_server.received, 3, "three transmissions to the first server (SPEC.md §2.3)");
        eprintln!("failover past a black hole: {elapsed:?}");
        // The next check starts with the server that answered last: the hole hears nothing.
        let report = client.check(&state).await.expect("answered at once");
        assert_eq!(answers(&report), expected);
        assert_eq!(hole.stats().to_server.received, 3, "the second check went straight to the live server");
    });
}
