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

/// Frames a client keeps unanswered (librelp's default, which omrelp uses).
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

/// Open a session, send `frames` keeping at most [`WINDOW`] unanswered, wait for every
/// answer, close.
pub async fn send(connector: TlsConnector, addr: SocketAddr, frames: (Vec<u8>, Vec<usize>)) -> Result<()> {
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
    let window = Arc::new(Semaphore::new(WINDOW));
    let total = ends.len();
    let reader = {
        let window = window.clone();
        tokio::spawn(async move {
            for expected in 0..total {
                let (txnr, data) = answers.next(&mut rd).await?;
                if data != b"200 OK" || txnr as usize != expected + 2 {
                    bail!("frame {} answered {txnr} {:?}", expected + 2, String::from_utf8_lossy(&data));
                }
                window.add_permits(1);
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

/// Frames read from the server, one at a time.
#[derive(Default)]
struct Answers {
    buf: Vec<u8>,
}

impl Answers {
    async fn next(&mut self, rd: &mut (impl AsyncReadExt + Unpin)) -> Result<(u32, Vec<u8>)> {
        loop {
            match parse(&self.buf, 1 << 20) {
                Ok(Some((f, used))) => {
                    let got = (f.txnr, f.data.to_vec());
                    if f.command != b"rsp" {
                        bail!("the server sent {:?}", String::from_utf8_lossy(f.command));
                    }
                    self.buf.drain(..used);
                    return Ok(got);
                }
                Ok(None) => {}
                Err(e) => bail!("unreadable answer: {}", e.what),
            }
            let mut chunk = [0u8; 16 * 1024];
            let n = rd.read(&mut chunk).await?;
            if n == 0 {
                bail!("the server closed the session");
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}
