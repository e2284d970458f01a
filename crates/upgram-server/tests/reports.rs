//! Install reports at the real server over real UDP on 127.0.0.1 (SPEC.md §5.11, §10.6): a
//! validated report is acknowledged and reaches the sink once however often it is sent; an
//! unvalidated one gets only the cookie challenge; nothing sent back is ever larger than the
//! report; a flood from one source is rate-limited; a full sink means no acknowledgement.

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use upgram_core::body::{FailureCode, Outcome, OutcomeKind, Report};
use upgram_core::cookie::{ClientCookie, CookieSecret, ServerCookie};
use upgram_core::wire::{Frame, MessageKind};
use upgram_core::{Datagram, Message};
use upgram_server::catalog::Catalog;
use upgram_server::intake::ReportCollector;
use upgram_server::server::{Config, CookieSecrets, Shared};

struct TestServer {
    udp: SocketAddr,
    shared: Arc<Shared>,
    sink: Arc<ReportCollector>,
    stop: watch::Sender<bool>,
    _runtime: tokio::runtime::Runtime,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

fn start(capacity: usize, config: impl FnOnce(&mut Config)) -> TestServer {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let (stop, stopped) = watch::channel(false);
    let mut settings = Config { workers: 2, ..Config::default() };
    config(&mut settings);
    let secrets = CookieSecrets { current: CookieSecret([0x42; 32]), previous: None };
    let sink = Arc::new(ReportCollector::new(capacity));
    let signer = upgram_core::sign::ReplySigner::from_seed(&[9; 32]);
    let shared = Arc::new(Shared::new(Catalog::default(), signer, secrets, settings).with_report_sink(sink.clone()));
    let sockets = {
        let _guard = runtime.enter();
        upgram_server::udp::bind("127.0.0.1:0".parse().unwrap(), shared.config().workers).unwrap()
    };
    let udp = sockets[0].local_addr().unwrap();
    {
        let _guard = runtime.enter();
        upgram_server::udp::serve(shared.clone(), sockets, stopped);
    }
    TestServer { udp, shared, sink, stop, _runtime: runtime }
}

fn client(timeout: Duration) -> UdpSocket {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    // A guard against a hang, not a timing assertion.
    socket.set_read_timeout(Some(timeout)).unwrap();
    socket
}

/// Sends `datagram`; the reply, if one comes before the socket's timeout. Checks that the reply
/// is never larger than what was sent.
fn exchange(socket: &UdpSocket, server: SocketAddr, datagram: &[u8]) -> Option<Vec<u8>> {
    socket.send_to(datagram, server).unwrap();
    let mut buffer = [0u8; 2048];
    let (len, from) = socket.recv_from(&mut buffer).ok()?;
    assert_eq!(from, server);
    assert!(len <= datagram.len(), "a reply of {len} bytes to a report of {}", datagram.len());
    Some(buffer[..len].to_vec())
}

fn report(attempts: &[u64]) -> Vec<u8> {
    let outcomes = attempts
        .iter()
        .enumerate()
        .map(|(i, &attempt)| {
            let result = OutcomeKind::ALL[i % 4];
            Outcome {
                attempt,
                module: "core".into(),
                from: Some("1.0".into()),
                to: "1.1".into(),
                result,
                code: result.has_code().then_some(FailureCode::Installer),
            }
        })
        .collect();
    Report { channel: Some("beta".into()), band: Some(4), outcomes }.to_vec()
}

const CLIENT: ClientCookie = ClientCookie([7; 8]);

/// The server cookie a challenge to a report without one carries.
fn server_cookie(socket: &UdpSocket, server: SocketAddr) -> ServerCookie {
    let body = report(&[u64::MAX]);
    let reply =
        exchange(socket, server, &Frame::report(1, &body, Some(CLIENT), None).to_vec().unwrap()).expect("reply");
    let Message::CookieChallenge(challenge) = Datagram::decode(&reply).unwrap().message else {
        panic!("a cookie challenge, got {reply:?}")
    };
    assert_eq!(challenge.client_cookie, Some(CLIENT));
    challenge.server_cookie
}

#[test]
fn a_validated_report_is_acknowledged_every_time_and_reaches_the_sink_once() {
    let server = start(100, |_| {});
    let socket = client(Duration::from_secs(10));
    let cookie = server_cookie(&socket, server.udp);
    let body = report(&[11, 12, 13, 14]);
    let datagram = Frame::report(0x5151, &body, Some(CLIENT), Some(cookie)).to_vec().unwrap();
    for send in 0..3 {
        let reply = exchange(&socket, server.udp, &datagram).expect("an acknowledgement");
        let decoded = Datagram::decode(&reply).unwrap();
        assert_eq!(decoded.message, Message::ReportAck, "send {send}");
        assert_eq!(decoded.request_id, 0x5151);
        assert_eq!(reply.len(), 20);
    }
    let received = server.sink.drain();
    assert_eq!(received.len(), 1, "{received:?}");
    assert_eq!(received[0].report, Report::decode(&body).unwrap().into_owned());
    let metrics = server.shared.metrics();
    assert_eq!((metrics.reports, metrics.reports_accepted, metrics.report_acks), (4, 3, 3));
    assert_eq!(metrics.outcomes, [1, 1, 1, 1]);
    assert_eq!(metrics.reports_refused, 1);
    let text = upgram_server::metrics::render(&metrics);
    assert!(text.contains("upgram_report_outcomes_total{result=\"rolled-back\"} 1"), "{text}");
    assert!(text.contains("upgram_replies_total{kind=\"report-ack\"} 3"), "{text}");
}

#[test]
fn an_unvalidated_report_gets_only_the_challenge_and_never_reaches_the_sink() {
    let server = start(100, |_| {});
    let socket = client(Duration::from_secs(10));
    let body = report(&[21]);
    let forged = ServerCookie([0x33; 16]);
    for (request_id, client, cookie) in [(1, None, None), (2, Some(CLIENT), None), (3, Some(CLIENT), Some(forged))] {
        let datagram = Frame::report(request_id, &body, client, cookie).to_vec().unwrap();
        let reply = exchange(&socket, server.udp, &datagram).expect("a challenge");
        let frame = Frame::decode(&reply).unwrap();
        assert_eq!(frame.kind, MessageKind::CookieChallenge, "request {request_id}");
        assert_eq!(frame.request_id, request_id);
    }
    // A cookie made for another client cookie does not validate either.
    let other = server_cookie(&socket, server.udp);
    let datagram = Frame::report(4, &body, Some(ClientCookie([8; 8])), Some(other)).to_vec().unwrap();
    let reply = exchange(&socket, server.udp, &datagram).expect("a challenge");
    assert_eq!(Frame::decode(&reply).unwrap().kind, MessageKind::CookieChallenge);
    assert!(server.sink.is_empty());
    let metrics = server.shared.metrics();
    assert_eq!((metrics.reports_refused, metrics.reports_accepted, metrics.outcomes), (5, 0, [0; 4]));
}

#[test]
fn a_flood_of_reports_from_one_source_is_rate_limited() {
    let server = start(1000, |c| {
        c.rate_per_source = 5.0;
        c.burst_per_source = 5.0;
    });
    let socket = client(Duration::from_millis(500));
    let cookie = server_cookie(&socket, server.udp);
    let sent = 60;
    for i in 0..sent {
        let body = report(&[1000 + i]);
        socket.send_to(&Frame::report(i, &body, Some(CLIENT), Some(cookie)).to_vec().unwrap(), server.udp).unwrap();
    }
    let mut acks = 0;
    let mut buffer = [0u8; 64];
    // Bounded: at most one reply per report sent, each within the timeout.
    for _ in 0..sent {
        let Ok((len, _)) = socket.recv_from(&mut buffer) else { break };
        assert_eq!(Datagram::decode(&buffer[..len]).unwrap().message, Message::ReportAck);
        acks += 1;
    }
    let metrics = server.shared.metrics();
    assert!(acks < 20, "{acks} of {sent} reports acknowledged at 5 per second");
    assert_eq!(metrics.reports_rate_limited + metrics.reports_accepted, sent, "{metrics:?}");
    assert_eq!(server.sink.len() as u64, metrics.reports_accepted);
}

#[test]
fn a_full_sink_means_no_acknowledgement_and_the_report_is_taken_later() {
    let server = start(1, |_| {});
    let socket = client(Duration::from_millis(500));
    let cookie = server_cookie(&socket, server.udp);
    let first = Frame::report(1, &report(&[31]), Some(CLIENT), Some(cookie)).to_vec().unwrap();
    let second = Frame::report(2, &report(&[32]), Some(CLIENT), Some(cookie)).to_vec().unwrap();
    assert!(exchange(&socket, server.udp, &first).is_some());
    assert_eq!(exchange(&socket, server.udp, &second), None, "the sink is full: no acknowledgement");
    assert_eq!(server.shared.metrics().reports_dropped, 1);
    assert_eq!(server.sink.drain().len(), 1);
    let reply = exchange(&socket, server.udp, &second).expect("taken once the sink has room");
    assert_eq!(Datagram::decode(&reply).unwrap().message, Message::ReportAck);
    assert_eq!(server.sink.drain()[0].report.outcomes[0].attempt, 32);
}
