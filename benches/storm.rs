//! `--password-storm N`: what a password-guessing attack on Flight SQL costs ingest. N tasks
//! sign in to the daemon's Flight SQL endpoint with a wrong password, each as fast as it is
//! answered, for as long as the load runs; a probe times `/healthz` every 50 ms meanwhile.
//! The daemon gets one `[[flight.users]]` entry to guess at; `--extra-config` can change
//! `[flight.auth_limits]` (say `failure_window = "1ms"` to take the per-address limit out and
//! measure the bounded password checks alone).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Result;
use logwarden::crypto::password;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

/// The user the storm guesses at.
const USER: &str = "storm";

/// The config entry for the user (its real password is random and never sent).
pub fn daemon_config() -> Result<String> {
    let hash = password::hash_default(&logwarden::serve::flight::auth::new_token())
        .map_err(|e| anyhow::anyhow!("failed to hash a password: {e}"))?;
    Ok(format!("[[flight.users]]\nname = \"{USER}\"\npassword_hash = \"{hash}\"\n"))
}

/// How the guesses were answered.
#[derive(Debug, Default, Clone, Copy)]
struct Answers {
    /// Checked and refused (wrong password).
    refused: u64,
    /// Refused unchecked: the address is over its failure limit.
    limited: u64,
    /// Refused at once: too many checks waiting.
    busy: u64,
    /// Anything else (a connection error, say).
    other: u64,
}

pub struct Storm {
    stop: Arc<AtomicBool>,
    guessers: Vec<JoinHandle<Answers>>,
    probe: JoinHandle<Vec<Duration>>,
    started: Instant,
}

/// Start `n` guessers against `flight` and the `/healthz` probe on `admin`.
pub fn start(n: usize, flight: SocketAddr, admin: SocketAddr, ca: PathBuf) -> Storm {
    let stop = Arc::new(AtomicBool::new(false));
    let url = format!("https://localhost:{}", flight.port());
    let guessers = (0..n)
        .map(|_| {
            let (stop, url, ca) = (stop.clone(), url.clone(), ca.clone());
            tokio::spawn(async move {
                let mut answers = Answers::default();
                let mut client = None;
                while !stop.load(Ordering::Relaxed) {
                    if client.is_none() {
                        client = logwarden::serve::flight::client::connect(&url, Some(&ca), None).await.ok();
                    }
                    let Some(c) = client.as_mut() else {
                        answers.other += 1;
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    };
                    match c.handshake(USER, "not the password").await {
                        Ok(_) => answers.other += 1,
                        Err(e) => {
                            let e = e.to_string();
                            if e.contains("invalid user name or password") {
                                answers.refused += 1;
                            } else if e.contains("too many failed") {
                                answers.limited += 1;
                            } else if e.contains("password checks are waiting") {
                                answers.busy += 1;
                            } else {
                                answers.other += 1;
                                client = None;
                            }
                        }
                    }
                }
                answers
            })
        })
        .collect();
    let probe_stop = stop.clone();
    let probe = tokio::spawn(async move {
        let mut times = Vec::new();
        while !probe_stop.load(Ordering::Relaxed) {
            let t = Instant::now();
            if healthz(admin).await {
                times.push(t.elapsed());
            } else {
                times.push(Duration::MAX);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        times
    });
    Storm { stop, guessers, probe, started: Instant::now() }
}

async fn healthz(admin: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect(admin).await else { return false };
    if s.write_all(b"GET /healthz HTTP/1.0\r\nHost: localhost\r\n\r\n").await.is_err() {
        return false;
    }
    let mut body = String::new();
    s.read_to_string(&mut body).await.is_ok() && body.starts_with("HTTP/1.0 200")
}

impl Storm {
    /// Stop the storm and print what it did.
    pub async fn finish(self) -> Result<()> {
        self.stop.store(true, Ordering::Relaxed);
        let secs = self.started.elapsed().as_secs_f64();
        let mut all = Answers::default();
        for g in self.guessers {
            let a = g.await?;
            all.refused += a.refused;
            all.limited += a.limited;
            all.busy += a.busy;
            all.other += a.other;
        }
        let mut times = self.probe.await?;
        times.sort();
        let failed = times.iter().filter(|t| **t == Duration::MAX).count();
        let ok: Vec<Duration> = times.into_iter().filter(|t| *t != Duration::MAX).collect();
        let pct = |p: f64| ok.get(((ok.len() as f64 * p) as usize).min(ok.len().saturating_sub(1))).copied();
        println!(
            "password storm: {:.0} guesses/s for {secs:.1}s: {} checked and refused, {} refused over the per-address limit, {} refused busy, {} other",
            (all.refused + all.limited + all.busy + all.other) as f64 / secs,
            all.refused,
            all.limited,
            all.busy,
            all.other
        );
        let ms =
            |d: Option<Duration>| d.map_or("-".to_owned(), |d| format!("{:.1} ms", d.as_secs_f64() * 1e3));
        println!(
            "/healthz during the storm: {} answers, median {}, p99 {}, max {}, {} failed",
            ok.len(),
            ms(pct(0.5)),
            ms(pct(0.99)),
            ms(ok.last().copied()),
            failed
        );
        Ok(())
    }
}
