//! Where accepted install reports go (SPEC.md §5.11): a [`ReportSink`].
//!
//! A worker hands every report it accepts — from a validated source, within the rate limit —
//! to the sink and acknowledges it only if the sink took it. The sink must never block: a store
//! that falls behind refuses (the client sends the report again later) instead of holding up
//! the answers to queries. [`DiscardReports`] is the sink when reports are off;
//! [`ReportCollector`] keeps reports in a bounded queue in memory, for whoever drains it.
//!
//! The worker also remembers the attempt ids it has recently handed over (`RecentAttempts`),
//! so a retransmitted report reaches the sink once; a store that outlives the server still
//! counts each attempt once by its id. The one outcome that follows another of the same attempt
//! is a deferred upgrade's completion: an attempt handed over as `deferred` is handed over once
//! more with its final result.

use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;
use std::time::SystemTime;

use upgram_core::body::{Outcome, OutcomeKind, Report};

/// Takes the install reports a server accepts.
pub trait ReportSink: Send + Sync {
    /// Offers `report`, received at `received`. Returns `false` when the sink dropped it
    /// because it is behind (the server then does not acknowledge it). Never blocks.
    fn offer(&self, report: &Report<'_>, received: SystemTime) -> bool;
}

/// Accepts every report and keeps nothing: the sink of a server whose reports are off. The
/// server still acknowledges them, so clients stop sending them.
#[derive(Debug, Default, Clone, Copy)]
pub struct DiscardReports;

impl ReportSink for DiscardReports {
    fn offer(&self, _report: &Report<'_>, _received: SystemTime) -> bool {
        true
    }
}

/// One report as a [`ReportCollector`] keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedReport {
    /// The report, detached from the datagram.
    pub report: Report<'static>,
    /// When the server received it.
    pub received: SystemTime,
}

/// A bounded in-memory queue of reports: refuses once it holds `capacity` of them, until
/// [`drain`](Self::drain) empties it.
#[derive(Debug)]
pub struct ReportCollector {
    queue: Mutex<VecDeque<ReceivedReport>>,
    capacity: usize,
}

impl ReportCollector {
    /// A collector that holds at most `capacity` reports.
    pub fn new(capacity: usize) -> Self {
        Self { queue: Mutex::new(VecDeque::new()), capacity }
    }

    /// Takes every report held, oldest first.
    pub fn drain(&self) -> Vec<ReceivedReport> {
        self.queue.lock().map(|mut queue| queue.drain(..).collect()).unwrap_or_default()
    }

    /// How many reports it holds.
    pub fn len(&self) -> usize {
        self.queue.lock().map(|queue| queue.len()).unwrap_or(0)
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl ReportSink for ReportCollector {
    fn offer(&self, report: &Report<'_>, received: SystemTime) -> bool {
        // try_lock: a drain in progress makes this report wait for the client's next send
        // rather than block a worker.
        let Ok(mut queue) = self.queue.try_lock() else {
            return false;
        };
        if queue.len() >= self.capacity {
            return false;
        }
        queue.push_back(ReceivedReport { report: report.clone().into_owned(), received });
        true
    }
}

/// The sink a server hands reports to, with a `Debug` that says only that it is there.
#[derive(Clone)]
pub(crate) struct SinkSlot(pub(crate) std::sync::Arc<dyn ReportSink>);

impl std::fmt::Debug for SinkSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReportSink")
    }
}

impl Default for SinkSlot {
    fn default() -> Self {
        Self(std::sync::Arc::new(DiscardReports))
    }
}

/// Most attempt ids remembered; the oldest are forgotten first.
const MAX_RECENT_ATTEMPTS: usize = 65_536;

/// The attempt ids recently handed to the sink, bounded, shared by the workers; each with
/// whether its result was final (not `deferred`).
#[derive(Debug, Default)]
pub(crate) struct RecentAttempts {
    inner: Mutex<(HashSet<RecentKey>, VecDeque<RecentKey>)>,
}

/// An attempt id, and whether the outcome handed over for it was final.
type RecentKey = (u64, bool);

/// An outcome's key among the recent attempts: its attempt, and whether its result is final.
fn recent_key(outcome: &Outcome<'_>) -> RecentKey {
    (outcome.attempt, outcome.result != OutcomeKind::Deferred)
}

impl RecentAttempts {
    /// The outcomes of `report` not handed over yet, as a report of their own; `None` when
    /// every outcome has been.
    pub(crate) fn unseen<'r>(&self, report: &'r Report<'r>) -> Option<Report<'r>> {
        let Ok(inner) = self.inner.lock() else {
            return Some(report.clone());
        };
        // A final result was handed over: nothing more of its attempt is. A deferred one: only
        // the final result still is.
        let seen = |o: &Outcome<'_>| inner.0.contains(&(o.attempt, true)) || inner.0.contains(&recent_key(o));
        let fresh: Vec<Outcome<'r>> = report.outcomes.iter().filter(|o| !seen(o)).cloned().collect();
        (!fresh.is_empty()).then(|| Report { channel: report.channel.clone(), band: report.band, outcomes: fresh })
    }

    /// Remembers the attempts of `report` as handed over.
    pub(crate) fn remember(&self, report: &Report<'_>) {
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        let (set, order) = &mut *inner;
        for outcome in &report.outcomes {
            if set.insert(recent_key(outcome)) {
                order.push_back(recent_key(outcome));
            }
        }
        while order.len() > MAX_RECENT_ATTEMPTS {
            if let Some(old) = order.pop_front() {
                set.remove(&old);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(attempts: &[u64]) -> Report<'static> {
        let outcomes = attempts
            .iter()
            .map(|&attempt| Outcome {
                attempt,
                module: "core".into(),
                from: None,
                to: "1".into(),
                result: OutcomeKind::Applied,
                code: None,
            })
            .collect();
        Report { channel: None, band: Some(2), outcomes }
    }

    #[test]
    fn the_collector_refuses_past_its_capacity_until_drained() {
        let collector = ReportCollector::new(2);
        let now = SystemTime::UNIX_EPOCH;
        assert!(collector.offer(&report(&[1]), now));
        assert!(collector.offer(&report(&[2]), now));
        assert!(!collector.offer(&report(&[3]), now));
        let drained = collector.drain();
        assert_eq!(drained.iter().map(|r| r.report.outcomes[0].attempt).collect::<Vec<_>>(), [1, 2]);
        assert!(collector.offer(&report(&[3]), now));
    }

    #[test]
    fn recent_attempts_filter_what_was_handed_over_and_stay_bounded() {
        let recent = RecentAttempts::default();
        let first = report(&[1, 2]);
        assert_eq!(recent.unseen(&first), Some(first.clone()));
        recent.remember(&first);
        assert_eq!(recent.unseen(&first), None);
        assert_eq!(recent.unseen(&report(&[2, 3])), Some(report(&[3])));
        for attempt in 10..10 + MAX_RECENT_ATTEMPTS as u64 {
            recent.remember(&report(&[attempt]));
        }
        assert_eq!(recent.unseen(&first), Some(first.clone()), "the oldest attempts are forgotten");
    }

    #[test]
    fn a_deferred_attempt_is_handed_over_once_more_with_its_final_result_only() {
        let with = |result| {
            let mut report = report(&[7]);
            report.outcomes[0].result = result;
            report
        };
        let (deferred, applied) = (with(OutcomeKind::Deferred), with(OutcomeKind::Applied));
        let recent = RecentAttempts::default();
        recent.remember(&deferred);
        assert_eq!(recent.unseen(&deferred), None, "deferred again: already handed over");
        assert_eq!(recent.unseen(&applied), Some(applied.clone()), "the completion goes on");
        recent.remember(&applied);
        assert_eq!(recent.unseen(&applied), None);
        assert_eq!(recent.unseen(&deferred), None, "a late deferred after the final result");
        assert_eq!(recent.unseen(&with(OutcomeKind::RolledBack)), None, "one final result per attempt");
    }
}
