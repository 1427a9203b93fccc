//! One RELP session (rsyslog's `omrelp`): the `open` handshake, `syslog` frames decoded into
//! batches and answered `200 OK` only once their batch is durable, `close`, and the
//! `serverclose` hint when the daemon ends a session.
//!
//! The client keeps a window of unanswered frames (librelp: 128) and, after a reconnect,
//! sends them again; so an answer is a promise that the message is on disk, and what is not
//! answered is not lost. Frames are read up to the listener's `window` of unanswered ones and
//! decoded into one batch per read; the batch goes to storage (waiting for budget, never
//! refused for it) and the connection reads on while it is written, so the next batch is ready
//! when the last one's answers go out. Answers go out in the order of the frames. Past the
//! window nothing more is read until answers are written, so a peer that sends without
//! reading what it is sent holds at most a window of frames and then stalls on TCP.
//!
//! A storage failure is never answered `500`: librelp drops a frame answered with anything
//! but `200`. The session closes instead (after `serverclose`), leaving the frames
//! unanswered for the client to send again. A frame that does not parse, or announces more than
//! `max_frame_bytes`, closes the session after the answers owed for the frames before it: RELP
//! has no way to find the next frame. Both are counted and logged with the peer.

pub mod frame;

use std::collections::VecDeque;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use prometheus::IntCounter;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use self::frame::{Frame, Refused, SERVERCLOSE, write_rsp};
use super::decode::decode;
use super::framing::{Reject, trim_line_end};
use super::listener::{Io, Peer};
use super::sink::{Sink, StoreFailure};
use crate::batch::EventBatchBuilder;
use crate::metrics::{FormatCounts, ListenerMetrics, Metrics};

/// Largest read; the buffer grows to hold one read plus the largest frame.
const READ_CHUNK: usize = 64 * 1024;
/// A new connection's buffer; it doubles whenever a read fills it.
const INITIAL_BUFFER: usize = 8 * 1024;
/// Batches of one session written at once, at most; frames read meanwhile wait in the next.
const MAX_BATCHES_IN_FLIGHT: usize = 4;
/// Once the session is ending (shutdown, an error), how long the last writes may take.
const LAST_WRITE: Duration = Duration::from_secs(1);

/// One RELP listener's settings, shared by its connections.
pub struct RelpSettings {
    pub listener: String,
    pub max_frame_bytes: usize,
    /// Frames read and not yet answered, at most.
    pub window: usize,
    /// A session with no complete frame (and no answer written) for this long is closed.
    pub idle_timeout: Duration,
    /// The `open` must arrive within this of the TLS handshake (the listener's
    /// `handshake_timeout`).
    pub open_timeout: Duration,
    pub timeouts: Timeouts,
}

/// `logwarden_connections_timed_out_total` for one listener, by reason.
pub struct Timeouts {
    /// No `open` within the handshake timeout.
    no_request: IntCounter,
    /// No complete frame for `idle_timeout`.
    idle: IntCounter,
    /// Answers not taken by the peer for `idle_timeout`.
    stalled: IntCounter,
}

impl Timeouts {
    pub fn new(listener: &str, metrics: &Metrics) -> Timeouts {
        let c = |reason: &str| metrics.connections_timed_out.with_label_values(&[listener, reason]);
        Timeouts { no_request: c("no_request"), idle: c("idle"), stalled: c("stalled") }
    }
}

/// Why a session ended.
enum End {
    /// The client sent `close` and was answered.
    Closed,
    /// The client went away (end of stream, a failed read).
    Gone,
    Refused,
    /// The client's `open` was refused (answered `500`).
    OpenRefused,
    Shutdown,
    /// No `open` within the handshake timeout.
    NoOpen,
    /// No complete frame for `idle_timeout`.
    Idle,
    /// Storage refused a batch; its frames are not answered.
    Storage(StoreFailure),
    /// Answers could not be written.
    WriteFailed(&'static str),
}

type Waiting = Pin<Box<dyn Future<Output = Result<usize, StoreFailure>> + Send>>;

/// An answer owed, in frame order.
enum Owed {
    /// Needs nothing more: the answer to `open`, `close`, a refused frame, or syslog frames
    /// that held no message.
    Ready { answer: Vec<u8>, frames: usize },
    /// `200 OK` for each of these syslog frames once their batch is durable.
    Durable { txnrs: Vec<u32>, batch: Waiting },
}

pub async fn serve(
    mut io: Box<dyn Io>,
    from: Peer,
    settings: &RelpSettings,
    sink: Sink,
    metrics: ListenerMetrics,
    cancel: CancellationToken,
) {
    let peer = from.addr;
    let origin = from.origin(&settings.listener, metrics.protocol());
    let mut session = Session {
        settings,
        peer,
        sink,
        builder: EventBatchBuilder::new(origin),
        metrics,
        counts: FormatCounts::default(),
        building: Vec::new(),
        owed: VecDeque::new(),
        unanswered: 0,
        opened: false,
        refused_before_open: false,
        stop: None,
        out: Vec::new(),
    };
    tracing::debug!(listener = %settings.listener, %peer, "RELP connection open");
    let end = session.run(&mut io, &cancel).await;

    let l = &settings.listener;
    let serverclose = match &end {
        End::Closed | End::Gone => false,
        End::WriteFailed(why) => {
            tracing::debug!(listener = %l, %peer, problem = why, "RELP answers not written");
            false
        }
        // Counted and logged when they happened (see `Session::refuse`).
        End::Refused | End::OpenRefused => false,
        End::NoOpen => {
            settings.timeouts.no_request.inc();
            true
        }
        End::Idle => {
            settings.timeouts.idle.inc();
            true
        }
        End::Storage(failure) => {
            // The WAL thread logs storage failures itself, once per run of them.
            tracing::debug!(listener = %l, %peer, error = %failure,
                "RELP frames not stored; closing unanswered for the client to send again");
            true
        }
        End::Shutdown => true,
    };
    if serverclose {
        let _ = tokio::time::timeout(LAST_WRITE, async {
            io.write_all(SERVERCLOSE).await?;
            io.flush().await
        })
        .await;
    }
    let _ = tokio::time::timeout(LAST_WRITE, io.shutdown()).await;
    tracing::debug!(listener = %l, %peer, reason = end.as_str(), "RELP connection closed");
}

impl End {
    fn as_str(&self) -> &'static str {
        match self {
            End::Closed => "closed by the client",
            End::Gone => "the client went away",
            End::Refused => "a frame was refused",
            End::OpenRefused => "open refused",
            End::Shutdown => "shutdown",
            End::NoOpen => "no open in time",
            End::Idle => "idle",
            End::Storage(_) => "storage failed",
            End::WriteFailed(_) => "answers not written",
        }
    }
}

struct Session<'a> {
    settings: &'a RelpSettings,
    peer: SocketAddr,
    sink: Sink,
    builder: EventBatchBuilder,
    metrics: ListenerMetrics,
    counts: FormatCounts,
    /// The TXNRs of the syslog frames in `builder` (and of empty ones, which add no row).
    building: Vec<u32>,
    owed: VecDeque<Owed>,
    /// Frames read whose answers are not written yet.
    unanswered: usize,
    opened: bool,
    /// A syslog frame before `open` was refused (logged once per connection).
    refused_before_open: bool,
    /// Set when the session is to end once every answer owed is written; nothing more is read.
    stop: Option<End>,
    /// Answers to write.
    out: Vec<u8>,
}

impl Session<'_> {
    async fn run(&mut self, io: &mut Box<dyn Io>, cancel: &CancellationToken) -> End {
        let settings = self.settings;
        let mut buf = Buffer::new(READ_CHUNK + frame::MAX_HEADER + settings.max_frame_bytes + 1);
        let mut deadline = Instant::now() + settings.open_timeout;
        let mut eof = false;
        loop {
            if self.stop.is_none() {
                match self.take_frames(&mut buf).await {
                    Ok(true) if self.opened => deadline = Instant::now() + settings.idle_timeout,
                    Ok(_) => {}
                    Err(end) => return end,
                }
            } else if let Err(end) = self.cut().await {
                return end;
            }
            self.take_ready();
            if !self.out.is_empty() {
                let wait = if self.stop.is_some() { LAST_WRITE } else { settings.idle_timeout };
                let written = tokio::time::timeout(wait, async {
                    io.write_all(&self.out).await?;
                    io.flush().await
                })
                .await;
                match written {
                    Ok(Ok(())) => self.out.clear(),
                    Ok(Err(_)) => return End::WriteFailed("the write failed"),
                    Err(_) => {
                        if self.stop.is_none() {
                            settings.timeouts.stalled.inc();
                        }
                        return End::WriteFailed("the peer took no answer for idle_timeout");
                    }
                }
                if self.opened {
                    deadline = Instant::now() + settings.idle_timeout;
                }
            }
            if self.owed.is_empty() {
                if let Some(end) = self.stop.take() {
                    return end;
                }
                if eof {
                    // Everything complete was taken (nothing is owed): what is left is cut off.
                    if !buf.data().is_empty() {
                        self.metrics.rejected_truncated.inc();
                        tracing::debug!(listener = %settings.listener, peer = %self.peer,
                            bytes = buf.data().len(), "RELP connection ended inside a frame");
                    }
                    return End::Gone;
                }
            }
            let reading = self.stop.is_none() && !eof && self.unanswered < settings.window;
            let stopping = self.stop.is_some();
            tokio::select! {
                biased;
                _ = cancel.cancelled(), if !stopping => self.stop = Some(End::Shutdown),
                done = first_durable(&mut self.owed) => match done {
                    Ok(txnrs) => {
                        for t in &txnrs {
                            write_rsp(&mut self.out, *t, b"200 OK");
                        }
                        self.unanswered -= txnrs.len();
                    }
                    Err(failure) => return End::Storage(failure),
                },
                read = tokio::time::timeout_at(deadline, io.read(buf.spare())), if reading => match read {
                    Err(_) => return if self.opened { End::Idle } else { End::NoOpen },
                    Ok(Ok(0)) => eof = true,
                    Ok(Ok(n)) => {
                        self.metrics.bytes.inc_by(n as u64);
                        buf.filled(n);
                    }
                    Ok(Err(e)) => {
                        tracing::debug!(listener = %settings.listener, peer = %self.peer, error = %e, "RELP read failed");
                        eof = true;
                    }
                },
            }
        }
    }

    /// Take the complete frames in `buf` while the window allows: syslog messages into the
    /// batch being built, the other commands answered in turn. Whether any frame was taken.
    async fn take_frames(&mut self, buf: &mut Buffer) -> Result<bool, End> {
        let now = super::now_ns();
        let mut taken = false;
        while self.stop.is_none() && self.unanswered < self.settings.window {
            let (f, used) = match frame::parse(buf.data(), self.settings.max_frame_bytes) {
                Ok(Some(parsed)) => parsed,
                Ok(None) => break,
                Err(refused) => {
                    self.refuse(refused);
                    break;
                }
            };
            taken = true;
            self.take(f, now).await?;
            buf.consume(used);
        }
        // A client sending a frame per TCP segment would otherwise make a batch of each (and
        // each holds its share of the memory budget): past a few batches in flight, frames
        // gather until one is durable.
        let in_flight = self.owed.iter().filter(|o| matches!(o, Owed::Durable { .. })).count();
        if in_flight < MAX_BATCHES_IN_FLIGHT || self.stop.is_some() {
            self.cut().await?;
        }
        Ok(taken)
    }

    async fn take(&mut self, f: Frame<'_>, now: i64) -> Result<(), End> {
        if f.command == b"syslog" && self.opened {
            let data = trim_line_end(f.data);
            if !data.is_empty() {
                let ev = decode(data, now);
                self.counts.add(ev.format, ev.decode_error.is_some());
                self.builder.append(&ev, now);
            }
            self.building.push(f.txnr);
            self.unanswered += 1;
            return Ok(());
        }
        // Anything else is answered after the syslog frames before it.
        self.cut().await?;
        let mut answer = Vec::new();
        match f.command {
            b"syslog" => {
                if !self.refused_before_open {
                    self.refused_before_open = true;
                    tracing::info!(listener = %self.settings.listener, peer = %self.peer, txnr = f.txnr,
                        "RELP syslog frame before open refused (500)");
                }
                write_rsp(&mut answer, f.txnr, b"500 command disabled: no open before it");
            }
            b"open" if self.opened => {
                write_rsp(&mut answer, f.txnr, b"200 connection already open - ignored")
            }
            b"open" => match offers(f.data) {
                Ok(software) => {
                    tracing::debug!(listener = %self.settings.listener, peer = %self.peer,
                        client = %String::from_utf8_lossy(software), "RELP session open");
                    self.opened = true;
                    write_rsp(&mut answer, f.txnr, OPEN_OK.as_bytes());
                }
                Err(why) => {
                    write_rsp(&mut answer, f.txnr, format!("500 {why}").as_bytes());
                    tracing::info!(listener = %self.settings.listener, peer = %self.peer, problem = why,
                        "RELP open refused");
                    self.stop = Some(End::OpenRefused);
                }
            },
            b"close" => {
                write_rsp(&mut answer, f.txnr, b"");
                self.stop = Some(End::Closed);
            }
            _ => {
                self.refuse(Refused {
                    reason: Reject::Malformed,
                    what: "not a command a RELP client sends (open, syslog, close)",
                });
                return Ok(());
            }
        }
        self.unanswered += 1;
        self.owed.push_back(Owed::Ready { answer, frames: 1 });
        Ok(())
    }

    /// Hand the batch being built to storage; its frames are answered once it is durable.
    async fn cut(&mut self) -> Result<(), End> {
        if self.building.is_empty() {
            return Ok(());
        }
        self.metrics.record(&std::mem::take(&mut self.counts));
        let txnrs = std::mem::take(&mut self.building);
        match self.sink.submit_waiting(&mut self.builder).await {
            Ok(Some(stored)) => self.owed.push_back(Owed::Durable { txnrs, batch: Box::pin(stored.wait()) }),
            // Only empty messages: nothing to store.
            Ok(None) => {
                let mut answer = Vec::new();
                for t in &txnrs {
                    write_rsp(&mut answer, *t, b"200 OK");
                }
                self.owed.push_back(Owed::Ready { answer, frames: txnrs.len() });
            }
            Err(failure) => return Err(End::Storage(failure)),
        }
        Ok(())
    }

    /// A frame that ends the session: counted and logged now (the answers owed before it may
    /// never be written), and nothing more is read.
    fn refuse(&mut self, r: Refused) {
        match r.reason {
            Reject::Oversize => self.metrics.rejected_oversize.inc(),
            Reject::Truncated => self.metrics.rejected_truncated.inc(),
            Reject::Malformed => self.metrics.rejected_malformed.inc(),
        }
        tracing::info!(listener = %self.settings.listener, peer = %self.peer, reason = r.reason.as_str(),
            problem = r.what, max_frame_bytes = self.settings.max_frame_bytes,
            "RELP frame rejected; closing the connection");
        self.stop = Some(End::Refused);
    }

    /// Move the answers at the head of the queue that need nothing more to `out`.
    fn take_ready(&mut self) {
        while let Some(Owed::Ready { .. }) = self.owed.front() {
            if let Some(Owed::Ready { answer, frames }) = self.owed.pop_front() {
                self.out.extend_from_slice(&answer);
                self.unanswered -= frames;
            }
        }
    }
}

/// Wait until the batch at the head of the queue is durable and take its TXNRs off the queue;
/// pending for ever when the head is not a batch (the caller takes those first).
async fn first_durable(owed: &mut VecDeque<Owed>) -> Result<Vec<u32>, StoreFailure> {
    let Some(Owed::Durable { batch, .. }) = owed.front_mut() else {
        return std::future::pending().await;
    };
    batch.as_mut().await?;
    // No await between the batch resolving and its removal: cancelling this future (another
    // branch of the caller's select won) cannot lose an answer.
    match owed.pop_front() {
        Some(Owed::Durable { txnrs, .. }) => Ok(txnrs),
        _ => Ok(Vec::new()),
    }
}

/// The answer to an accepted `open`: the offers librelp needs back (the version it sent, and
/// the `syslog` command), as librelp's server words them.
const OPEN_OK: &str = concat!(
    "200 OK\nrelp_version=0\nrelp_software=logwarden,",
    env!("CARGO_PKG_VERSION"),
    "\ncommands=syslog"
);

/// Check a client's offers (`name=value,value` lines); the software it names.
fn offers(data: &[u8]) -> Result<&[u8], &'static str> {
    let (mut version, mut syslog, mut software) = (false, false, &b""[..]);
    for line in data.split(|b| *b == b'\n') {
        let (name, values) = match line.iter().position(|b| *b == b'=') {
            Some(i) => (&line[..i], &line[i + 1..]),
            None => (line, &b""[..]),
        };
        match name {
            b"relp_version" => {
                version = !values.is_empty() && values.iter().all(u8::is_ascii_digit);
            }
            b"commands" => syslog = values.split(|b| *b == b',').any(|c| c == b"syslog"),
            b"relp_software" => software = values,
            _ => {}
        }
    }
    match (version, syslog) {
        (false, _) => Err("invalid offers: relp_version must be a number"),
        (_, false) => Err("required command not supported by client"),
        _ => Ok(software),
    }
}

/// A connection's read buffer: unconsumed bytes at `start..end`, grown on demand to `capacity`.
struct Buffer {
    buf: Vec<u8>,
    start: usize,
    end: usize,
    capacity: usize,
}

impl Buffer {
    fn new(capacity: usize) -> Buffer {
        Buffer { buf: vec![0; INITIAL_BUFFER.min(capacity)], start: 0, end: 0, capacity }
    }

    fn data(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    fn consume(&mut self, n: usize) {
        self.start += n;
        if self.start == self.end {
            (self.start, self.end) = (0, 0);
        }
    }

    /// Room for the next read: the unconsumed tail moved to the front when little is left, the
    /// buffer grown when even that is too little. Never empty: while reading, the buffer
    /// holds at most one incomplete frame, and the capacity has a read's room beyond the
    /// largest one.
    fn spare(&mut self) -> &mut [u8] {
        let want = READ_CHUNK.min(self.buf.len() / 2);
        if self.start > 0 && self.buf.len() - self.end < want {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.buf.len() - self.end < want && self.buf.len() < self.capacity {
            self.buf.resize((self.buf.len() * 2).min(self.capacity), 0);
        }
        &mut self.buf[self.end..]
    }

    fn filled(&mut self, n: usize) {
        self.end += n;
        if self.end == self.buf.len() && self.buf.len() < self.capacity {
            // The read filled the buffer: more is likely waiting, so read more at a time.
            self.buf.resize((self.buf.len() * 2).min(self.capacity), 0);
        }
    }
}

#[cfg(test)]
mod tests;
