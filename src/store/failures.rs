//! A run of failures of a background job (WAL writes, uploads, reading the other nodes): when
//! it began, how many there were, and which ones to log (the first, then at most one per
//! interval with the count of those left out), so a failing disk or bucket is reported
//! without flooding the journal.

use std::time::{Duration, Instant};

pub(super) struct Failures {
    every: Duration,
    run: Option<Run>,
}

struct Run {
    since: Instant,
    failures: u64,
    logged: Instant,
    unlogged: u64,
}

/// What to say about a run of failures.
pub(super) struct Report {
    /// Failures in the run so far.
    pub failures: u64,
    pub failing_for: Duration,
    /// Failures since the last one logged (0 for the first).
    pub repeated: u64,
}

impl Failures {
    /// Failures logged at most once per `every`.
    pub(super) fn new(every: Duration) -> Failures {
        Failures { every, run: None }
    }

    /// Count a failure; `Some` when this one is to be logged.
    pub(super) fn failed(&mut self) -> Option<Report> {
        let now = Instant::now();
        let run = self.run.get_or_insert(Run { since: now, failures: 0, logged: now, unlogged: 0 });
        run.failures += 1;
        if run.failures > 1 && run.logged.elapsed() < self.every {
            run.unlogged += 1;
            return None;
        }
        run.logged = now;
        Some(Report {
            failures: run.failures,
            failing_for: run.since.elapsed(),
            repeated: std::mem::take(&mut run.unlogged),
        })
    }

    /// The job works again: `Some` if it had been failing.
    pub(super) fn recovered(&mut self) -> Option<Report> {
        self.run.take().map(|r| Report {
            failures: r.failures,
            failing_for: r.since.elapsed(),
            repeated: r.unlogged,
        })
    }
}
