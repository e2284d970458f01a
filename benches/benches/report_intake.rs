//! Server CPU per install report (SPEC.md §5.11): what one worker spends on a report datagram,
//! without sockets (`Worker::handle`, the same code the UDP driver runs), in three cases:
//!
//! - `accepted`: a validated report of 4 outcomes with fresh attempt ids, handed to a sink that
//!   discards it (what storage costs comes on top, in the store's own thread), and acknowledged;
//! - `repeated`: the same report again (a retransmission): recognised, not handed over, acked;
//! - `unvalidated`: a report without a server cookie, answered with the cookie challenge.
//!
//! Run: `cargo bench -p upgram-benches --bench report_intake`.

use std::hint::black_box;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use criterion::Criterion;
use upgram_core::body::{FailureCode, Outcome, OutcomeKind, Report};
use upgram_core::cookie::{ClientCookie, CookieSecret, make_server_cookie};
use upgram_core::sign::ReplySigner;
use upgram_core::wire::Frame;
use upgram_server::catalog::Catalog;
use upgram_server::intake::DiscardReports;
use upgram_server::server::{Config, CookieSecrets, Shared, Worker};

const CLIENT: ClientCookie = ClientCookie([7; 8]);
const SECRET: CookieSecret = CookieSecret([0x42; 32]);

fn worker() -> Worker {
    let config = Config { rate_per_source: 1e12, burst_per_source: 1e12, ..Config::default() };
    let secrets = CookieSecrets { current: SECRET, previous: None };
    let shared = Shared::new(Catalog::default(), ReplySigner::from_seed(&[9; 32]), secrets, config)
        .with_report_sink(Arc::new(DiscardReports));
    Worker::new(Arc::new(shared))
}

/// A report of four outcomes, one of each kind, with attempts `first..first + 4`.
fn report(first: u64) -> Vec<u8> {
    let outcomes = OutcomeKind::ALL
        .into_iter()
        .enumerate()
        .map(|(i, result)| Outcome {
            attempt: first + i as u64,
            module: "core".into(),
            from: Some("1.2".into()),
            to: "1.3".into(),
            result,
            code: result.has_code().then_some(FailureCode::Installer),
        })
        .collect();
    Report { channel: Some("beta".into()), band: Some(3), outcomes }.to_vec()
}

fn bench(c: &mut Criterion) {
    let ip: IpAddr = "127.0.0.1".parse().expect("ip");
    let now = SystemTime::now();
    let secs = now.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let cookie = make_server_cookie(&SECRET, &CLIENT, ip, secs);
    let datagram = |first: u64, validated: bool| {
        let server = validated.then_some(cookie);
        Frame::report(first, &report(first), Some(CLIENT), server).to_vec().expect("fits")
    };
    // Fresh attempts for every iteration, generated before measuring.
    let fresh: Vec<Vec<u8>> = (0..200_000u64).map(|i| datagram(1_000_000 + 4 * i, true)).collect();
    let mut out = Vec::with_capacity(64);

    let mut group = c.benchmark_group("report");
    let mut w = worker();
    let mut next = 0;
    group.bench_function("accepted", |b| {
        b.iter(|| {
            let bytes = &fresh[next % fresh.len()];
            next += 1;
            black_box(w.handle(bytes, ip, now, &mut out))
        })
    });
    let repeated = datagram(1, true);
    let mut w = worker();
    assert!(w.handle(&repeated, ip, now, &mut out), "acknowledged");
    group.bench_function("repeated", |b| b.iter(|| black_box(w.handle(&repeated, ip, now, &mut out))));
    let unvalidated = datagram(2, false);
    let mut w = worker();
    group.bench_function("unvalidated", |b| b.iter(|| black_box(w.handle(&unvalidated, ip, now, &mut out))));
    group.finish();
}

fn main() {
    let mut criterion =
        Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    criterion = criterion.configure_from_args();
    bench(&mut criterion);
    criterion.final_summary();
}
