//! `--protocol relp`: the corpus sent as RELP over TLS, as rsyslog's omrelp sends it: an
//! `open`, then `syslog` frames with at most librelp's window of 128 unanswered, each answered
//! only once it is durable. The send is over when the last answer arrives, so the time it
//! takes is the time until every event is durable.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use logwarden::ingest::relp::frame::parse;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio_rustls::TlsConnector;

/// Frames a client keeps unanswered by default (librelp's, which omrelp uses unless its
/// `windowSize` says otherwise).
pub const WINDOW: usize = 128;

const OFFERS: &str = "relp_version=0\nrelp_software=logwarden-loadgen\ncommands=syslog";

/// One connection's messages (LF-separated, as `generate` writes them with LF framing) as
/// RELP `syslog` frames, TXNRs from 2 on (1 is the `open`); the end offset of each frame.
pub fn encode(lines: &[u8]) -> (Vec<u8>, Vec<usize>) {
    use std::io::Write as _;
    let mut out = Vec::with_capacity(lines.len() + lines.len() / 8);
    let mut ends = Vec::new();
    for (i, msg) in lines.split(|b| *b == b'\n').filter(|m| !m.is_empty()).enumerate() {
        let _ = write!(out, "{} syslog {} ", i + 2, msg.len());
        out.extend_from_slice(msg);
        out.push(b'\n');
        ends.push(out.len());
    }
    (out, ends)
}

/// Open a session, send `frames` keeping at most `window` unanswered, wait for every answer,
/// close.
pub async fn send(
    connector: TlsConnector,
    addr: SocketAddr,
    frames: (Vec<u8>, Vec<usize>),
    window: usize,
) -> Result<()> {
    let (bytes, ends) = frames;
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let mut tls = connector.connect(ServerName::try_from("localhost")?, tcp).await?;
    tls.write_all(format!("1 open {} {OFFERS}\n", OFFERS.len()).as_bytes()).await?;
    tls.flush().await?;
    let mut answers = Answers::default();
    let (txnr, data) = answers.next(&mut tls).await?;
    if txnr != 1 || !data.starts_with(b"200 OK") {
        bail!("open refused: {}", String::from_utf8_lossy(&data));
    }

    let (mut rd, mut wr) = tokio::io::split(tls);
    let window = Arc::new(Semaphore::new(window));
    let total = ends.len();
    let reader = {
        let window = window.clone();
        tokio::spawn(async move {
            let mut expected = 2u32;
            let last = total as u32 + 1;
            while expected <= last {
                // Every answer already read frees its frame's room in one go.
                let mut freed = 0;
                for (txnr, data) in answers.read(&mut rd).await? {
                    if data != b"200 OK" || txnr != expected {
                        bail!("frame {expected} answered {txnr} {:?}", String::from_utf8_lossy(&data));
                    }
                    expected += 1;
                    freed += 1;
                }
                window.add_permits(freed);
            }
            anyhow::Ok((rd, answers))
        })
    };
    let mut sent = 0;
    while sent < total {
        // Wait for room for one frame, then take all the room there is: one write per burst.
        window.acquire().await?.forget();
        let mut n = 1;
        while sent + n < total && window.try_acquire().map(|p| p.forget()).is_ok() {
            n += 1;
        }
        let start = if sent == 0 { 0 } else { ends[sent - 1] };
        wr.write_all(&bytes[start..ends[sent + n - 1]]).await?;
        wr.flush().await?;
        sent += n;
    }
    let (mut rd, mut answers) = reader.await.context("the answer reader failed")??;
    let close = total as u32 + 2;
    wr.write_all(format!("{close} close 0\n").as_bytes()).await?;
    wr.flush().await?;
    let (txnr, _) = answers.next(&mut rd).await?;
    if txnr != close {
        bail!("close answered with TXNR {txnr}");
    }
    Ok(())
}

/// Frames read from the server.
#[derive(Default)]
struct Answers {
    buf: Vec<u8>,
}

impl Answers {
    /// The next answer (for the `open` and the `close`).
    async fn next(&mut self, rd: &mut (impl AsyncReadExt + Unpin)) -> Result<(u32, Vec<u8>)> {
        loop {
            if let Some(first) = self.take(1)?.pop() {
                return Ok(first);
            }
            self.fill(rd).await?;
        }
    }

    /// Every complete answer, reading until there is at least one.
    async fn read(&mut self, rd: &mut (impl AsyncReadExt + Unpin)) -> Result<Vec<(u32, Vec<u8>)>> {
        loop {
            let got = self.take(usize::MAX)?;
            if !got.is_empty() {
                return Ok(got);
            }
            self.fill(rd).await?;
        }
    }

    /// Up to `max` complete answers from the buffer, which keeps the rest.
    fn take(&mut self, max: usize) -> Result<Vec<(u32, Vec<u8>)>> {
        let mut got = Vec::new();
        let mut at = 0;
        while got.len() < max {
            match parse(&self.buf[at..], 1 << 20) {
                Ok(Some((f, used))) => {
                    if f.command != b"rsp" {
                        bail!("the server sent {:?}", String::from_utf8_lossy(f.command));
                    }
                    got.push((f.txnr, f.data.to_vec()));
                    at += used;
                }
                Ok(None) => break,
                Err(e) => bail!("unreadable answer: {}", e.what),
            }
        }
        self.buf.drain(..at);
        Ok(got)
    }

    async fn fill(&mut self, rd: &mut (impl AsyncReadExt + Unpin)) -> Result<()> {
        let mut chunk = [0u8; 64 * 1024];
        let n = rd.read(&mut chunk).await?;
        if n == 0 {
            bail!("the server closed the session");
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }
}
