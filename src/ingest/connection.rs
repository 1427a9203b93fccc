//! One stream connection: read, frame, decode, build a batch per read, hand it to storage.
//!
//! Every read becomes at most one batch (recorded in metrics once), and the connection waits on
//! the storage budget before reading again: that wait is the TCP backpressure a slow disk puts
//! on shippers (and a full one: no budget is given while earlier data waits for the disk). Bad frames are counted and logged with the peer (the first few per connection,
//! then a summary at close) and never end the connection by themselves.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use super::decode::decode;
use super::framing::{Framer, Reject};
use super::listener::{Io, Peer};
use crate::batch::EventBatchBuilder;
use crate::detect::templates::{Shared, stamp};
use crate::metrics::{FormatCounts, ListenerMetrics};
use crate::store::Appender;

/// Bad frames logged individually per connection before only counting them.
const LOGGED_REJECTS: u32 = 5;
/// After shutdown starts, a connection keeps reading until it has been quiet this long, so
/// what a shipper already wrote is not lost in the socket buffer.
const DRAIN_QUIET: Duration = Duration::from_millis(250);
/// Largest read; a busy connection's buffer grows to hold one read plus the largest frame.
const READ_CHUNK: usize = 64 * 1024;
/// A new connection's buffer. It doubles whenever a read fills it, so an idle or slow shipper
/// costs a few KiB rather than a full-size buffer, and a busy one reaches full-size reads
/// after a handful of reads.
const INITIAL_BUFFER: usize = 8 * 1024;

pub struct StreamSettings {
    pub listener: String,
    pub max_frame_bytes: usize,
    pub idle_timeout: Duration,
    /// The template miner that stamps `template_id` (None: `[detect.templates]` is off).
    pub templates: Option<Arc<Shared>>,
}

pub async fn serve(
    mut io: Box<dyn Io>,
    from: Peer,
    settings: &StreamSettings,
    appender: Appender,
    metrics: ListenerMetrics,
    cancel: CancellationToken,
) {
    let peer = from.addr;
    let origin = from.origin(&settings.listener, metrics.protocol());
    let mut builder = EventBatchBuilder::new(origin);
    let mut framer = Framer::new(settings.max_frame_bytes);
    let capacity = READ_CHUNK + settings.max_frame_bytes + 16;
    let mut buf = vec![0u8; INITIAL_BUFFER.min(capacity)];
    let (mut start, mut end) = (0usize, 0usize);
    let mut rejects = 0u32;
    let mut draining = false;
    tracing::debug!(listener = %settings.listener, %peer, "connection open");

    let close_reason = loop {
        // Keep room for a read: move the unconsumed tail to the front, and grow when even that
        // leaves too little (a frame longer than the buffer so far).
        let want = READ_CHUNK.min(buf.len() / 2);
        if start > 0 && (buf.len() - end) < want {
            buf.copy_within(start..end, 0);
            end -= start;
            start = 0;
        }
        if buf.len() - end < want && buf.len() < capacity {
            buf.resize((buf.len() * 2).min(capacity), 0);
        }
        let wait = if draining { DRAIN_QUIET } else { settings.idle_timeout };
        let read = tokio::select! {
            r = tokio::time::timeout(wait, io.read(&mut buf[end..])) => r,
            _ = cancel.cancelled(), if !draining => {
                draining = true;
                continue;
            }
        };
        let (n, eof) = match read {
            Err(_) if draining => (0, true),
            Err(_) => break "idle timeout",
            Ok(Err(e)) => {
                // A reset or a missing close_notify: deliver the complete frames already read.
                tracing::debug!(listener = %settings.listener, %peer, error = %e, "read failed");
                (0, true)
            }
            Ok(Ok(0)) => (0, true),
            Ok(Ok(n)) => (n, false),
        };
        end += n;
        if n > 0 {
            metrics.bytes.inc_by(n as u64);
            if end == buf.len() && buf.len() < capacity {
                // The read filled the buffer: more is likely waiting, so read more at a time.
                buf.resize((buf.len() * 2).min(capacity), 0);
            }
        }
        let now = super::now_ns();
        let mut counts = FormatCounts::default();
        let used = framer.feed(&buf[start..end], eof, |frame| match frame {
            Ok(frame) => {
                let ev = decode(frame, now);
                counts.add(ev.format, ev.decode_error.is_some());
                builder.append(&ev, now);
            }
            Err(reason) => {
                match reason {
                    Reject::Oversize => metrics.rejected_oversize.inc(),
                    Reject::Truncated => metrics.rejected_truncated.inc(),
                    Reject::Malformed => metrics.rejected_malformed.inc(),
                }
                rejects += 1;
                if rejects <= LOGGED_REJECTS {
                    tracing::warn!(listener = %settings.listener, %peer, reason = reason.as_str(),
                        max_frame_bytes = settings.max_frame_bytes, "frame rejected");
                }
            }
        });
        start += used;
        if start == end {
            (start, end) = (0, 0);
        }
        metrics.record(&counts);
        if !builder.is_empty() {
            match builder.finish().and_then(|b| stamp(b, settings.templates.as_deref())) {
                Ok(batch) => {
                    if appender.append(batch).await.is_err() {
                        break "storage stopped";
                    }
                }
                Err(e) => {
                    tracing::error!(listener = %settings.listener, %peer, error = %e, "failed to build a batch")
                }
            }
        }
        if eof {
            break if draining { "shutdown" } else { "closed by peer" };
        }
    };
    if rejects > LOGGED_REJECTS {
        tracing::warn!(listener = %settings.listener, %peer, rejected = rejects, "connection had more rejected frames than were logged");
    }
    // Best effort close_notify; the peer may already be gone.
    let _ = tokio::time::timeout(Duration::from_secs(1), io.shutdown()).await;
    tracing::debug!(listener = %settings.listener, %peer, reason = close_reason, "connection closed");
}
