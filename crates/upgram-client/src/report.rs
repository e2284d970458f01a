//! Install reports (SPEC.md §4.7, §5.11): the outcome of each upgrade attempt, kept in the
//! installation's state until a server acknowledges it.
//!
//! [`outcome`] turns what an upgrade did into an [`Outcome`] with a fresh random attempt id;
//! [`send`] packs queued outcomes into report datagrams and sends each at most
//! [`SENDS_PER_REPORT`] times, waiting [`ACK_WAIT`] for its acknowledgement, and answers a cookie
//! challenge with the cookie it carries. Reports are fire-and-forget: sending never fails a
//! check or an update, and what is not acknowledged stays queued for the next check.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use rand::{Rng, RngCore};
use tokio::net::UdpSocket;
use upgram_core::body::{FailureCode, Outcome, OutcomeKind, Report};
use upgram_core::exchange::CookieJar;
use upgram_core::limits::{HEADER_LEN, MAX_DATAGRAM_LEN, MAX_OUTCOMES_PER_REPORT, QUERY_COOKIES_LEN};
use upgram_core::wire::Frame;
use upgram_core::{Datagram, Message};

use crate::flows::{Outcome as FlowOutcome, UpgradeFailure};
use crate::staging::StageError;

/// Most transmissions of one report datagram (SPEC.md §5.11).
pub const SENDS_PER_REPORT: u32 = 3;
/// How long a client waits for the acknowledgement of one transmission.
pub const ACK_WAIT: Duration = Duration::from_millis(500);
/// Room for a report body: a datagram less the header and both cookies.
const MAX_REPORT_BODY_LEN: usize = MAX_DATAGRAM_LEN - HEADER_LEN - QUERY_COOKIES_LEN;

/// The report of one upgrade attempt of `module` from `from` to `to`, or `None` when nothing
/// was attempted (a skipped module).
pub fn outcome(module: &str, from: Option<&str>, to: &str, what: &FlowOutcome) -> Option<Outcome<'static>> {
    let (result, code) = match what {
        FlowOutcome::Upgraded(..) | FlowOutcome::UpgradedNeedsRestart(..) => (OutcomeKind::Applied, None),
        FlowOutcome::Deferred { .. } => (OutcomeKind::Deferred, None),
        FlowOutcome::Skipped(_) => return None,
        FlowOutcome::Failed(failure) => {
            let (result, code) = failure_kind(failure);
            (result, Some(code))
        }
    };
    Some(attempt_outcome(rand::thread_rng().r#gen(), module, from, to, result, code))
}

/// The report of attempt `attempt` of `module` from `from` to `to`: what [`outcome`] makes
/// with a fresh attempt, here for an attempt already reported (a deferred upgrade completed).
pub fn attempt_outcome(
    attempt: u64,
    module: &str,
    from: Option<&str>,
    to: &str,
    result: OutcomeKind,
    code: Option<FailureCode>,
) -> Outcome<'static> {
    Outcome {
        attempt,
        module: module.to_owned().into(),
        from: from.map(|v| v.to_owned().into()),
        to: to.to_owned().into(),
        result,
        code,
    }
}

/// Whether a failure left the installation as it was (`failed`) or was undone
/// (`rolled-back`), and its code.
pub fn failure_kind(failure: &UpgradeFailure) -> (OutcomeKind, FailureCode) {
    let no_space = |e: &std::io::Error| e.kind() == std::io::ErrorKind::StorageFull;
    match failure {
        UpgradeFailure::Stage { source, .. } => match source.as_ref() {
            StageError::Hash { .. } => (OutcomeKind::Failed, FailureCode::Verify),
            StageError::Io { source, .. } if no_space(source) => (OutcomeKind::Failed, FailureCode::Space),
            StageError::Io { .. } => (OutcomeKind::Failed, FailureCode::Other),
            StageError::Fetch(_) | StageError::Short { .. } | StageError::Size { .. } => {
                (OutcomeKind::Failed, FailureCode::Download)
            }
        },
        UpgradeFailure::Installer(_) => (OutcomeKind::Failed, FailureCode::Installer),
        UpgradeFailure::Apply(crate::apply::ApplyError::Io { source, .. }) if no_space(source) => {
            (OutcomeKind::RolledBack, FailureCode::Space)
        }
        UpgradeFailure::Apply(crate::apply::ApplyError::Io { .. }) => (OutcomeKind::RolledBack, FailureCode::Apply),
        UpgradeFailure::Apply(_) => (OutcomeKind::Failed, FailureCode::Apply),
        _ => (OutcomeKind::Failed, FailureCode::Other),
    }
}

/// The queued outcomes cut into report bodies that each fit one datagram and hold at most
/// [`MAX_OUTCOMES_PER_REPORT`] outcomes, oldest first; with the attempts each holds.
fn pack(queue: &[Outcome<'static>], channel: Option<&str>, band: Option<u8>) -> Vec<(Vec<u8>, Vec<u64>)> {
    let mut bodies = Vec::new();
    let mut report = Report { channel: channel.map(|c| c.to_owned().into()), band, outcomes: Vec::new() };
    for outcome in queue {
        report.outcomes.push(outcome.clone());
        let full = report.outcomes.len() > MAX_OUTCOMES_PER_REPORT || report.to_vec().len() > MAX_REPORT_BODY_LEN;
        if full {
            let last = report.outcomes.pop();
            if !report.outcomes.is_empty() {
                bodies.push(finish(&report));
            }
            report.outcomes = last.into_iter().collect();
            if report.to_vec().len() > MAX_REPORT_BODY_LEN {
                // One outcome alone does not fit (impossible within the limits of ids and
                // versions): it is never sent.
                report.outcomes.clear();
            }
        }
    }
    if !report.outcomes.is_empty() {
        bodies.push(finish(&report));
    }
    bodies
}

fn finish(report: &Report<'_>) -> (Vec<u8>, Vec<u64>) {
    (report.to_vec(), report.outcomes.iter().map(|o| o.attempt).collect())
}

/// Sends the queued outcomes to `server` and returns the attempts it acknowledged. Stops at
/// the first report datagram that gets no acknowledgement after [`SENDS_PER_REPORT`]
/// transmissions (the server is away or behind): the rest waits for the next check. Cookies
/// come from, and challenges go into, `jar`.
pub async fn send(
    queue: &[Outcome<'static>],
    channel: Option<&str>,
    band: Option<u8>,
    server: SocketAddr,
    jar: &Mutex<CookieJar>,
) -> Vec<u64> {
    let mut acknowledged = Vec::new();
    let Ok(socket) = crate::transport::fresh_socket(server) else {
        return acknowledged;
    };
    for (body, attempts) in pack(queue, channel, band) {
        if !send_one(&socket, &body, server, jar).await {
            break;
        }
        acknowledged.extend(attempts);
    }
    acknowledged
}

/// One report datagram: at most [`SENDS_PER_REPORT`] transmissions; whether it was
/// acknowledged.
async fn send_one(socket: &UdpSocket, body: &[u8], server: SocketAddr, jar: &Mutex<CookieJar>) -> bool {
    let request_id = rand::rngs::OsRng.next_u64();
    let mut buffer = vec![0u8; MAX_DATAGRAM_LEN + 1];
    for _ in 0..SENDS_PER_REPORT {
        let (client, cookie) = match jar.lock() {
            Ok(mut jar) => jar.cookies(server, &mut rand::thread_rng()),
            Err(_) => return false,
        };
        let Ok(datagram) = Frame::report(request_id, body, Some(client), cookie).to_vec() else {
            return false;
        };
        if socket.send(&datagram).await.is_err() {
            // ICMP unreachable from an earlier transmission, or no route: nobody listens.
            return false;
        }
        let deadline = tokio::time::Instant::now() + ACK_WAIT;
        // Bounded by the deadline: every datagram that is not the answer is dropped.
        while let Ok(received) = tokio::time::timeout_at(deadline, socket.recv(&mut buffer)).await {
            let Ok(len) = received else { return false };
            let Ok(reply) = Datagram::decode(&buffer[..len]) else { continue };
            if reply.request_id != request_id {
                continue;
            }
            match reply.message {
                Message::ReportAck => return true,
                Message::CookieChallenge(challenge) if challenge.client_cookie == Some(client) => {
                    if let Ok(mut jar) = jar.lock() {
                        jar.store(server, client, challenge.server_cookie);
                    }
                    // Retransmit at once with the new cookie.
                    break;
                }
                _ => {}
            }
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(attempt: u64, module: &str) -> Outcome<'static> {
        Outcome {
            attempt,
            module: module.to_owned().into(),
            from: Some("1.0".into()),
            to: "1.1".into(),
            result: OutcomeKind::Applied,
            code: None,
        }
    }

    #[test]
    fn packing_keeps_every_outcome_in_order_within_the_limits() {
        let long = "m".repeat(120);
        let queue: Vec<Outcome<'static>> =
            (0..64).map(|i| outcome(i, if i % 3 == 0 { &long } else { "core" })).collect();
        let bodies = pack(&queue, Some("beta"), Some(7));
        let attempts: Vec<u64> = bodies.iter().flat_map(|(_, a)| a.clone()).collect();
        assert_eq!(attempts, (0..64).collect::<Vec<_>>());
        for (body, attempts) in &bodies {
            assert!(body.len() <= MAX_REPORT_BODY_LEN, "{}", body.len());
            let report = Report::decode(body).unwrap();
            assert_eq!(report.outcomes.len(), attempts.len());
            assert_eq!(report.band, Some(7));
        }
    }
}
