//! Event-time windows of one rule, kept as panes of `every` length: an event lands in the pane
//! of its own `timestamp`, and a window is the run of `window / every` panes before its end.
//! A window closes when the watermark passes its end; its panes' parts then go to the rule's
//! final step, and panes no later window needs are dropped.

use std::collections::BTreeMap;

use arrow::array::{AsArray, RecordBatch};
use arrow::compute::filter_record_batch;
use arrow::datatypes::TimestampNanosecondType;

use crate::batch::TIMESTAMP_INDEX;

/// Parts a pane holds before they are folded together.
pub const COMPACT_AT: usize = 32;

/// Sample events a pane keeps for its windows' alerts.
pub const SAMPLES: usize = 20;

#[derive(Default)]
pub struct Pane {
    pub parts: Vec<RecordBatch>,
    pub events: u64,
    pub samples: Vec<RecordBatch>,
    pub sampled: usize,
    pub sample_tries: usize,
}

pub struct Windows {
    window: i64,
    every: i64,
    panes: BTreeMap<i64, Pane>,
    /// End (ns) of the next window to close; unset until the first event or watermark.
    next_end: Option<i64>,
}

/// A window to evaluate: `[start, end)` and its panes' parts.
pub struct Closed {
    pub start: i64,
    pub end: i64,
    pub parts: Vec<RecordBatch>,
    pub events: u64,
    pub samples: Vec<RecordBatch>,
}

impl Windows {
    pub fn new(window: i64, every: i64) -> Self {
        Windows { window, every, panes: BTreeMap::new(), next_end: None }
    }

    fn pane_of(&self, ts: i64) -> i64 {
        ts.div_euclid(self.every)
    }

    /// First pane that is still open (events before it are late).
    fn open_from(&self) -> Option<i64> {
        self.next_end.map(|e| e.div_euclid(self.every) - 1)
    }

    /// `batch` split by pane, late rows removed: `(pane, rows)` and the number of late rows.
    pub fn assign(&mut self, batch: &RecordBatch) -> (Vec<(i64, RecordBatch)>, u64) {
        let ts = batch.column(TIMESTAMP_INDEX).as_primitive::<TimestampNanosecondType>();
        if ts.is_empty() {
            return (Vec::new(), 0);
        }
        let panes: Vec<i64> = ts.values().iter().map(|&t| self.pane_of(t)).collect();
        let (lo, hi) = panes.iter().fold((i64::MAX, i64::MIN), |(lo, hi), &p| (lo.min(p), hi.max(p)));
        if self.next_end.is_none() {
            self.next_end = Some((lo + 1).saturating_mul(self.every));
        }
        let open_from = self.open_from().unwrap_or(i64::MIN);
        if lo == hi {
            // The usual case: the whole batch in one pane.
            return if lo < open_from {
                (Vec::new(), panes.len() as u64)
            } else {
                (vec![(lo, batch.clone())], 0)
            };
        }
        let mut late = 0;
        let mut out = Vec::new();
        let mut distinct: Vec<i64> = panes.clone();
        distinct.sort_unstable();
        distinct.dedup();
        for p in distinct {
            let mask: arrow::array::BooleanArray = panes.iter().map(|&q| Some(q == p)).collect();
            if p < open_from {
                late += mask.true_count() as u64;
                continue;
            }
            if let Ok(rows) = filter_record_batch(batch, &mask) {
                out.push((p, rows));
            }
        }
        (out, late)
    }

    pub fn pane(&mut self, pane: i64) -> &mut Pane {
        self.panes.entry(pane).or_default()
    }

    /// The next window whose end the watermark has passed, taken out for evaluation.
    pub fn close_next(&mut self, watermark: i64) -> Option<Closed> {
        let end = self.next_end?;
        if watermark < end {
            return None;
        }
        let first = end.div_euclid(self.every) - self.window / self.every;
        let last = end.div_euclid(self.every); // exclusive
        if self.panes.range(first..).next().is_none() && watermark - end >= self.window {
            // Nothing held and far behind (a long quiet spell): jump to the last window that
            // has ended rather than evaluate every empty one in between.
            let end = watermark.div_euclid(self.every).saturating_mul(self.every);
            self.next_end = Some(end);
            return self.close_next(watermark);
        }
        let mut parts = Vec::new();
        let mut events = 0;
        let mut samples = Vec::new();
        for (_, pane) in self.panes.range(first..last) {
            parts.extend(pane.parts.iter().cloned());
            events += pane.events;
            samples.extend(pane.samples.iter().cloned());
        }
        // The next window starts one pane later: the first pane is no longer needed.
        self.panes = self.panes.split_off(&(first + 1));
        self.next_end = Some(end.saturating_add(self.every));
        Some(Closed { start: end - self.window, end, parts, events, samples })
    }
}

/// `batch` without the rows stamped at or after `horizon` (ns), and how many those were.
pub fn before(batch: &RecordBatch, horizon: i64) -> (RecordBatch, u64) {
    let ts = batch.column(TIMESTAMP_INDEX).as_primitive::<TimestampNanosecondType>();
    match arrow::compute::max(ts) {
        Some(max) if max >= horizon => {
            let keep: arrow::array::BooleanArray = ts.values().iter().map(|&t| Some(t < horizon)).collect();
            let dropped = (batch.num_rows() - keep.true_count()) as u64;
            (filter_record_batch(batch, &keep).unwrap_or_else(|_| batch.slice(0, 0)), dropped)
        }
        _ => (batch.clone(), 0),
    }
}

/// The daemon's event-time clock, shared by every rule: the newest event `timestamp` seen,
/// less the allowed lateness. When no newer event has arrived for `idle`, it moves on with the
/// wall clock, so that windows still close (and silence is noticed) when traffic stops.
pub struct Clock {
    max_ts: Option<i64>,
    seen_at: std::time::Instant,
    lateness: i64,
    idle: std::time::Duration,
}

impl Clock {
    pub fn new(lateness: std::time::Duration, idle: std::time::Duration) -> Self {
        Clock {
            max_ts: None,
            seen_at: std::time::Instant::now(),
            lateness: lateness.as_nanos().min(i64::MAX as u128) as i64,
            idle,
        }
    }

    pub fn observe(&mut self, batch: &RecordBatch, now: std::time::Instant) {
        let ts = batch.column(TIMESTAMP_INDEX).as_primitive::<TimestampNanosecondType>();
        if let Some(max) = arrow::compute::max(ts)
            && self.max_ts.is_none_or(|m| max > m)
        {
            self.max_ts = Some(max);
            self.seen_at = now;
        }
    }

    pub fn watermark(&self, now: std::time::Instant) -> Option<i64> {
        let max = self.max_ts?;
        let quiet = now.saturating_duration_since(self.seen_at);
        let advance = if quiet >= self.idle { quiet.as_nanos().min(i64::MAX as u128) as i64 } else { 0 };
        Some(max.saturating_add(advance).saturating_sub(self.lateness))
    }
}
