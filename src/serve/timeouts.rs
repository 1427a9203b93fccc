//! Deadlines for connections that do nothing, so that silent or abandoned clients cannot hold a
//! listener's `max_connections` slots: once TLS is done, a connection must make its first
//! request within `header_read_timeout`; then it is closed after `idle_timeout` with no request
//! in progress, or with one in progress but no bytes moving either way.
//!
//! [`Activity`] is what one connection has been doing. Its IO ([`Watched`]) records bytes
//! moving, the server marks requests in progress ([`Activity::request`]), and
//! [`Deadlines::watch`] returns once a deadline has passed, for the server to drop the
//! connection (HTTP) or to [`Activity::close`] it (Flight SQL, where tonic owns the connection:
//! its reads and writes then fail and tonic drops it). For HTTP/1.1, hyper's own header timer
//! also bounds every later request head and the wait for it on a kept-alive connection.
//!
//! Bytes moving are not enough while a request body arrives: one byte every few seconds keeps
//! a connection from ever being idle (slowloris). [`MinRate`] holds a request body to
//! [`MIN_BODY_RATE`] bytes/s after a [`BODY_GRACE`] (Kestrel's defaults), over any stretch of
//! [`BODY_CREDIT_CAP`]; a body slower than that closes its connection.

use std::fmt;
use std::future::Future as _;
use std::io::IoSlice;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::task::AtomicWaker;
use prometheus::IntCounter;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

use crate::metrics::Metrics;

/// Which deadline passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expired {
    /// No request within `header_read_timeout` of the connection.
    NoRequest,
    /// No request in progress for `idle_timeout`.
    Idle,
    /// A request in progress, but no bytes moved either way for `idle_timeout`.
    Stalled,
    /// A request body arriving slower than [`MIN_BODY_RATE`].
    SlowBody,
}

impl Expired {
    /// The `reason` label of `logwarden_connections_timed_out_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            Expired::NoRequest => "no_request",
            Expired::Idle => "idle",
            Expired::Stalled => "stalled",
            Expired::SlowBody => "slow_body",
        }
    }

    fn index(self) -> usize {
        match self {
            Expired::NoRequest => 0,
            Expired::Idle => 1,
            Expired::Stalled => 2,
            Expired::SlowBody => 3,
        }
    }
}

/// One listener's deadlines, and the counters of connections they closed.
#[derive(Clone)]
pub struct Deadlines {
    pub listener: Arc<str>,
    pub first_request: Duration,
    pub idle: Duration,
    closed: [IntCounter; 4],
}

impl Deadlines {
    pub fn new(listener: &str, first_request: Duration, idle: Duration, metrics: &Metrics) -> Self {
        let closed = [Expired::NoRequest, Expired::Idle, Expired::Stalled, Expired::SlowBody]
            .map(|e| metrics.connections_timed_out.with_label_values(&[listener, e.as_str()]));
        Deadlines { listener: listener.into(), first_request, idle, closed }
    }

    /// Wait until one of the connection's deadlines has passed (counted in the metrics).
    pub async fn watch(&self, a: &Activity) -> Expired {
        loop {
            match self.next(a, Instant::now()) {
                Ok(at) => tokio::time::sleep_until(at).await,
                Err(why) => {
                    self.closed[why.index()].inc();
                    tracing::debug!(listener = %self.listener, reason = why.as_str(), "connection closed: it did nothing in time");
                    return why;
                }
            }
        }
    }

    /// `body`, held to [`MIN_BODY_RATE`]; too slow, it closes the connection of `a`.
    pub fn min_rate<B>(&self, body: B, a: &Arc<Activity>) -> MinRate<B> {
        MinRate {
            inner: body,
            activity: a.clone(),
            closed: self.closed[Expired::SlowBody.index()].clone(),
            listener: self.listener.clone(),
            deadline: None,
            sleep: Box::pin(tokio::time::sleep(BODY_GRACE)),
            expired: false,
        }
    }

    /// The deadline that applies now, or the one that has passed.
    fn next(&self, a: &Activity, now: Instant) -> Result<Instant, Expired> {
        let (at, why) = if a.in_flight.load(Ordering::Acquire) > 0 {
            (a.at(&a.last_io) + self.idle, Expired::Stalled)
        } else if a.requests.load(Ordering::Acquire) == 0 {
            (a.start + self.first_request, Expired::NoRequest)
        } else {
            (a.at(&a.idle_since) + self.idle, Expired::Idle)
        };
        if now >= at { Err(why) } else { Ok(at) }
    }
}

/// What one connection has been doing; shared by its IO, its requests and its watcher.
pub struct Activity {
    start: Instant,
    /// Milliseconds after `start` when a byte last moved, either way.
    last_io: AtomicU64,
    /// Milliseconds after `start` when the last request in progress ended.
    idle_since: AtomicU64,
    in_flight: AtomicUsize,
    requests: AtomicU64,
    closed: AtomicBool,
    reader: AtomicWaker,
    writer: AtomicWaker,
}

impl fmt::Debug for Activity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Activity")
            .field("requests", &self.requests.load(Ordering::Relaxed))
            .field("in_flight", &self.in_flight.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Activity {
    pub fn new() -> Arc<Activity> {
        Arc::new(Activity {
            start: Instant::now(),
            last_io: AtomicU64::new(0),
            idle_since: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            requests: AtomicU64::new(0),
            closed: AtomicBool::new(false),
            reader: AtomicWaker::new(),
            writer: AtomicWaker::new(),
        })
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn at(&self, ms: &AtomicU64) -> Instant {
        self.start + Duration::from_millis(ms.load(Ordering::Acquire))
    }

    fn touch(&self) {
        self.last_io.store(self.now_ms(), Ordering::Release);
    }

    /// A request starts; it is in progress until the guard is dropped, and then counts as the
    /// connection doing something (unless [`InFlight::refused`]).
    pub fn request(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight { activity: self.clone(), counts: true }
    }

    /// Fail the connection's reads and writes from now on, so whoever serves it drops it.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.reader.wake();
        self.writer.wake();
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }
}

/// The rate, in bytes per second, below which a request body closes its connection.
pub const MIN_BODY_RATE: u64 = 240;
/// The time a request body starts with: its first bytes, a client's pause after its headers.
pub const BODY_GRACE: Duration = Duration::from_secs(5);
/// The most waiting time a body can bank by sending ahead: bytes sent fast buy at most this
/// long a pause, so a fast start cannot pay for hours of trickling.
pub const BODY_CREDIT_CAP: Duration = Duration::from_secs(30);

/// A request body held to [`MIN_BODY_RATE`] (see [`Deadlines::min_rate`]), as a credit of
/// waiting time: it starts at [`BODY_GRACE`] when the server first reads the body, wall time
/// spends it, each byte received adds 1/[`MIN_BODY_RATE`] s, and it never exceeds
/// [`BODY_CREDIT_CAP`]. So a body must keep up the rate over any stretch longer than the cap,
/// whatever it sent before. Once the credit is spent while the server waits for more, the
/// body fails and the connection is closed ([`Activity::close`]), counted as `slow_body`.
pub struct MinRate<B> {
    inner: B,
    activity: Arc<Activity>,
    closed: IntCounter,
    listener: Arc<str>,
    /// The credit runs out at this instant (set at the first read).
    deadline: Option<Instant>,
    sleep: Pin<Box<tokio::time::Sleep>>,
    expired: bool,
}

impl<B> MinRate<B> {
    /// The body without the rate (the server drains a body it refuses, within its own
    /// bounds, so that the client sees the answer rather than a closed connection).
    pub fn into_inner(self) -> B {
        self.inner
    }

    /// Credit for `n` bytes received at `now`, capped.
    fn earn(&mut self, now: Instant, n: u64) {
        if let Some(d) = self.deadline {
            let earned = d + Duration::from_millis(n.saturating_mul(1000) / MIN_BODY_RATE);
            self.deadline = Some(earned.min(now + BODY_CREDIT_CAP));
        }
    }
}

/// The error a [`MinRate`] body fails with.
#[derive(Debug, thiserror::Error)]
#[error("the request body arrived slower than {MIN_BODY_RATE} bytes/s; connection closed")]
pub struct TooSlow;

impl<B> hyper::body::Body for MinRate<B>
where
    B: hyper::body::Body<Data = bytes::Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = bytes::Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<bytes::Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if this.expired {
            return Poll::Ready(Some(Err(TooSlow.into())));
        }
        let now = Instant::now();
        let deadline = *this.deadline.get_or_insert(now + BODY_GRACE);
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                this.earn(now, frame.data_ref().map_or(0, |d| d.len() as u64));
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                this.sleep.as_mut().reset(deadline);
                if this.sleep.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                this.expired = true;
                this.closed.inc();
                tracing::debug!(listener = %this.listener, "connection closed: request body too slow");
                this.activity.close();
                Poll::Ready(Some(Err(TooSlow.into())))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        !self.expired && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// A request in progress on a connection (see [`Activity::request`]).
pub struct InFlight {
    activity: Arc<Activity>,
    counts: bool,
}

impl InFlight {
    /// The request was refused (no valid credentials): it does not count as the connection
    /// doing something, so calls that fail cannot keep a connection open.
    pub fn refused(mut self) {
        self.counts = false;
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let a = &self.activity;
        if self.counts {
            // Before the request leaves: whoever sees none in progress sees when that began.
            a.idle_since.store(a.now_ms(), Ordering::Release);
            a.requests.fetch_add(1, Ordering::AcqRel);
        }
        a.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A connection's IO that records bytes moving in its [`Activity`], and fails once the
/// activity is closed.
pub struct Watched<IO> {
    io: IO,
    activity: Arc<Activity>,
}

impl<IO> Watched<IO> {
    pub fn new(io: IO, activity: Arc<Activity>) -> Self {
        Watched { io, activity }
    }
}

fn closed_error() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::TimedOut, "connection closed: it did nothing in time")
}

impl<IO: AsyncRead + Unpin> AsyncRead for Watched<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        this.activity.reader.register(cx.waker());
        if this.activity.is_closed() {
            return Poll::Ready(Err(closed_error()));
        }
        let before = buf.filled().len();
        let r = Pin::new(&mut this.io).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.activity.touch();
        }
        r
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Watched<IO> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        this.activity.writer.register(cx.waker());
        if this.activity.is_closed() {
            return Poll::Ready(Err(closed_error()));
        }
        let r = Pin::new(&mut this.io).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.touch();
        }
        r
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        this.activity.writer.register(cx.waker());
        if this.activity.is_closed() {
            return Poll::Ready(Err(closed_error()));
        }
        let r = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.touch();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if this.activity.is_closed() {
            return Poll::Ready(Err(closed_error()));
        }
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deadlines_of(first_request: Duration, idle: Duration) -> Deadlines {
        let metrics = Metrics::new(&prometheus::Registry::new()).unwrap();
        Deadlines::new("t", first_request, idle, &metrics)
    }

    #[test]
    fn the_deadline_follows_what_the_connection_does() {
        let d = deadlines_of(Duration::from_secs(1), Duration::from_secs(5));
        let a = Activity::new();
        let ms = |n: u64| a.start + Duration::from_millis(n);
        // Nothing yet: the first request is due within first_request.
        assert_eq!(d.next(&a, ms(0)), Ok(ms(1000)));
        assert_eq!(d.next(&a, ms(1000)), Err(Expired::NoRequest));

        // A request in progress: only bytes not moving for `idle` close it.
        let req = a.request();
        a.last_io.store(500, Ordering::Release);
        assert_eq!(d.next(&a, ms(1000)), Ok(ms(5500)));
        assert_eq!(d.next(&a, ms(5500)), Err(Expired::Stalled));

        // Done: idle from the end of the last request, whatever bytes move meanwhile.
        drop(req);
        assert_eq!(a.requests.load(Ordering::Acquire), 1);
        a.idle_since.store(2500, Ordering::Release);
        a.last_io.store(3500, Ordering::Release);
        assert_eq!(d.next(&a, ms(3500)), Ok(ms(7500)));
        assert_eq!(d.next(&a, ms(7500)), Err(Expired::Idle));
    }

    #[test]
    fn a_refused_request_does_not_count() {
        let d = deadlines_of(Duration::from_secs(1), Duration::from_secs(5));
        let a = Activity::new();
        let ms = |n: u64| a.start + Duration::from_millis(n);
        a.request().refused();
        assert_eq!(d.next(&a, ms(1000)), Err(Expired::NoRequest));
    }

    #[tokio::test]
    async fn watch_returns_once_a_deadline_passes() {
        let d = deadlines_of(Duration::from_millis(20), Duration::from_secs(3600));
        assert_eq!(d.watch(&Activity::new()).await, Expired::NoRequest);
        assert_eq!(d.closed[0].get(), 1);
    }

    #[tokio::test]
    async fn a_closed_activity_fails_reads_and_writes() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (client, server) = tokio::io::duplex(64);
        let a = Activity::new();
        let mut w = Watched::new(server, a.clone());
        let reader = tokio::spawn(async move {
            let mut buf = [0u8; 8];
            w.read(&mut buf).await
        });
        a.close();
        let err = reader.await.unwrap().unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
        let mut w = Watched::new(client, a);
        assert!(w.write_all(b"x").await.is_err());
    }
}
