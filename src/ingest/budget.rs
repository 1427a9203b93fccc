//! A listener's budget of request memory: what the requests it is answering hold at once, their
//! bodies as they are read and then the events decoded from them, until those are durable.
//!
//! A body is bounded by `max_body_bytes` (a gRPC message by `max_message_bytes`), but the
//! events decoded from it are not: what a message states once (an OTLP resource or scope, a
//! Loki stream's labels, a HEC raw request's query string, the index of an Elasticsearch
//! path) is copied into the row of every event it covers, so a body of a few MiB holding a
//! large resource and a million empty records decodes to terabytes. Each request's [`Share`]
//! grows with what it has decoded; a request that finds no room left is refused (the client
//! retries), and one that could never fit is refused for good.

use std::sync::Arc;

use prometheus::IntGauge;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::metrics::RequestMemoryGauges;

/// How much a listener's requests hold at once, in KiB.
#[derive(Clone)]
pub struct Budget {
    kib: Arc<Semaphore>,
    total: usize,
    /// What the shares hold now, in bytes (`request_memory_bytes`).
    held: IntGauge,
}

impl Budget {
    /// `max_pending_bytes` (the store's own memory budget), and at least four of the largest
    /// requests: room for the largest body and the events it decodes to, which are about as
    /// large again (and more with the copies of its metadata), twice over.
    pub fn new(max_pending_bytes: u64, max_request_bytes: u64, gauges: RequestMemoryGauges) -> Budget {
        let kib = max_pending_bytes.max(max_request_bytes.saturating_mul(4)).div_ceil(1024);
        let total = usize::try_from(kib).unwrap_or(usize::MAX).min(Semaphore::MAX_PERMITS);
        gauges.max.set(i64::try_from(total).unwrap_or(i64::MAX).saturating_mul(1024));
        Budget { kib: Arc::new(Semaphore::new(total)), total, held: gauges.held }
    }

    /// A new request's share: nothing yet.
    pub fn share(&self) -> Share {
        Share { budget: self.clone(), held: None }
    }
}

/// Why a share could not grow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exceeded {
    /// Other requests hold the rest of the budget: send again later.
    Busy,
    /// More than the whole budget: this request never fits.
    TooLarge,
}

/// One request's part of its listener's [`Budget`], given back when dropped.
pub struct Share {
    budget: Budget,
    held: Option<OwnedSemaphorePermit>,
}

impl Share {
    /// Hold enough for `bytes` in all (what the request holds so far), or say why not.
    pub fn cover(&mut self, bytes: usize) -> Result<(), Exceeded> {
        let need = bytes.div_ceil(1024);
        let have = self.held.as_ref().map_or(0, OwnedSemaphorePermit::num_permits);
        if need <= have {
            return Ok(());
        }
        if need > self.budget.total {
            return Err(Exceeded::TooLarge);
        }
        let more = u32::try_from(need - have).map_err(|_| Exceeded::TooLarge)?;
        let p = self.budget.kib.clone().try_acquire_many_owned(more).map_err(|_| Exceeded::Busy)?;
        self.budget.held.add(i64::from(more) * 1024);
        match &mut self.held {
            Some(h) => h.merge(p),
            None => self.held = Some(p),
        }
        Ok(())
    }
}

impl Drop for Share {
    fn drop(&mut self) {
        if let Some(h) = &self.held {
            self.budget.held.sub(h.num_permits() as i64 * 1024);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gauges() -> RequestMemoryGauges {
        RequestMemoryGauges {
            held: IntGauge::new("held", "held").unwrap(),
            max: IntGauge::new("max", "max").unwrap(),
        }
    }

    #[test]
    fn shares_grow_within_the_budget_and_give_it_back() {
        let g = gauges();
        let held = g.held.clone();
        let b = Budget::new(2 << 10, 1 << 10, g);
        let mut one = b.share();
        assert_eq!(one.cover(1), Ok(()));
        assert_eq!(one.cover(3 << 10), Ok(()));
        let mut two = b.share();
        assert_eq!(two.cover(1 << 10), Ok(()));
        assert_eq!(two.cover((1 << 10) + 1), Err(Exceeded::Busy));
        assert_eq!(two.cover(5 << 10), Err(Exceeded::TooLarge));
        assert_eq!(held.get(), 4 << 10);
        drop(one);
        assert_eq!(held.get(), 1 << 10);
        assert_eq!(two.cover(4 << 10), Ok(()));
        assert_eq!(held.get(), 4 << 10);
        drop(two);
        assert_eq!(held.get(), 0);
    }
}
