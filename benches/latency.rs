//! `--alert-latency`: how long an alert takes to leave the daemon after the event that closes
//! its window arrives, under a steady load.
//!
//! The daemon runs one extra rule, `window_marker`, with 1 s windows: each second one event
//! carries `MSGID=MARK` and that second as `PROCID`, so every window raises an alert of its own
//! (labelled `procid`). Events carry the wall-clock time at which they are sent, and the rule
//! allows no lateness, so window `s` closes when the first event of second `s + 1` arrives. A
//! webhook receiver here records when each window's alert arrives; the latency is that moment
//! less the moment the first event of the next second was written to the socket.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Result, bail};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsConnector;

/// Config the daemon needs for the measurement; `hook` is the receiver's address.
pub fn daemon_config(hook: SocketAddr) -> String {
    format!(
        "[detect]\nallowed_lateness = \"0s\"\n\
         [[rules]]\nname = \"window_marker\"\nwindow = \"1s\"\n\
         sql = \"SELECT procid, count(*) AS marks FROM events WHERE msgid = 'MARK' GROUP BY procid\"\n\
         [alerting]\n[[alerting.webhooks]]\nname = \"latency\"\nurl = \"http://{hook}/hook\"\n"
    )
}

/// When each window's alert (by its second) first arrived.
#[derive(Clone, Default)]
pub struct Arrivals(Arc<Mutex<HashMap<u64, Instant>>>);

impl Arrivals {
    pub fn has(&self, sec: u64) -> bool {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).contains_key(&sec)
    }
}

/// A webhook receiver on 127.0.0.1; returns its address.
pub async fn receiver(arrivals: Arrivals) -> Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let arrivals = arrivals.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
                    let arrivals = arrivals.clone();
                    async move {
                        let at = Instant::now();
                        let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                        let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                        let mut seen = arrivals.0.lock().unwrap_or_else(|e| e.into_inner());
                        for a in v["alerts"].as_array().into_iter().flatten() {
                            if a["status"] == "firing"
                                && let Some(s) = a["labels"]["procid"].as_str().and_then(|s| s.parse().ok())
                            {
                                seen.entry(s).or_insert(at);
                            }
                        }
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(http_body_util::Full::new(
                            bytes::Bytes::new(),
                        )))
                    }
                });
                let _ =
                    hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tcp), svc).await;
            });
        }
    });
    Ok(addr)
}

/// Send `rate` events/s over `connections` TLS connections for `duration`, from the corpus
/// (RFC 5424, octet counted) with each event's timestamp rewritten to the sending time.
/// Returns, per second, when its first event was written.
pub async fn send_paced(
    addr: SocketAddr,
    connector: TlsConnector,
    corpus: Vec<Vec<u8>>,
    rate: usize,
    duration: Duration,
) -> Result<(BTreeMap<u64, Instant>, usize)> {
    let boundaries: Arc<Mutex<BTreeMap<u64, Instant>>> = Arc::default();
    let connections = corpus.len();
    let per_tick = (rate / 100 / connections).max(1);
    let mut tasks = Vec::new();
    for (c, chunk) in corpus.into_iter().enumerate() {
        let (connector, boundaries) = (connector.clone(), boundaries.clone());
        tasks.push(tokio::spawn(async move {
            let messages = split_octet(&chunk);
            if messages.is_empty() {
                bail!("empty corpus");
            }
            let tcp = TcpStream::connect(addr).await?;
            tcp.set_nodelay(true)?;
            let mut tls = connector.connect(ServerName::try_from("localhost")?, tcp).await?;
            let end = Instant::now() + duration;
            let mut tick = tokio::time::interval(Duration::from_millis(10));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let (mut next, mut last_sec, mut sent) = (0usize, 0u64, 0usize);
            let mut buf = Vec::with_capacity(per_tick * 256);
            while Instant::now() < end {
                tick.tick().await;
                let now = SystemTime::now().duration_since(UNIX_EPOCH)?;
                let ts = chrono::DateTime::from_timestamp_nanos(now.as_nanos() as i64)
                    .format("%Y-%m-%dT%H:%M:%S%.6fZ")
                    .to_string();
                buf.clear();
                let sec = now.as_secs();
                if sec != last_sec {
                    last_sec = sec;
                    if c == 0 {
                        let mark = format!("<14>1 {ts} loadgen latency {sec} MARK - window marker");
                        buf.extend_from_slice(format!("{} {mark}", mark.len()).as_bytes());
                    }
                    let at = Instant::now();
                    boundaries
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .entry(sec)
                        .and_modify(|t| *t = (*t).min(at))
                        .or_insert(at);
                }
                for _ in 0..per_tick {
                    let (m, ts_at) = &messages[next % messages.len()];
                    next += 1;
                    let start = buf.len();
                    buf.extend_from_slice(m);
                    buf[start + ts_at..start + ts_at + ts.len()].copy_from_slice(ts.as_bytes());
                }
                tls.write_all(&buf).await?;
                sent += per_tick;
            }
            tls.shutdown().await?;
            anyhow::Ok(sent)
        }));
    }
    let mut sent = 0;
    for t in tasks {
        sent += t.await??;
    }
    let b = boundaries.lock().unwrap_or_else(|e| e.into_inner()).clone();
    Ok((b, sent))
}

/// Octet-counted frames of a chunk, each with the offset of its timestamp (after `<PRI>1 `).
fn split_octet(chunk: &[u8]) -> Vec<(Vec<u8>, usize)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < chunk.len() {
        let Some(sp) = chunk[i..].iter().position(|&b| b == b' ') else { break };
        let Some(len) = std::str::from_utf8(&chunk[i..i + sp]).ok().and_then(|s| s.parse::<usize>().ok())
        else {
            break;
        };
        let frame = &chunk[i..i + sp + 1 + len];
        let msg_at = sp + 1;
        // `<PRI>1 ` then the 27-byte timestamp.
        if let Some(p) = frame[msg_at..].windows(3).position(|w| w == b">1 ") {
            out.push((frame.to_vec(), msg_at + p + 3));
        }
        i += sp + 1 + len;
    }
    out
}

/// p50, p99 and max of the windows' latencies, printed.
pub fn report(boundaries: &BTreeMap<u64, Instant>, arrivals: &Arrivals, rate: usize) -> Result<()> {
    let seen = arrivals.0.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let secs: Vec<u64> = boundaries.keys().copied().collect();
    // Skip the first two seconds (connections and windows starting) and the last (partial).
    let mut lat: Vec<f64> = secs
        .iter()
        .skip(2)
        .filter_map(|&s| {
            let closed_by = boundaries.get(&(s + 1))?;
            let at = seen.get(&s)?;
            Some(at.saturating_duration_since(*closed_by).as_secs_f64() * 1e3)
        })
        .collect();
    if lat.is_empty() {
        bail!("no window alert arrived ({} windows sent, {} alerts received)", secs.len(), seen.len());
    }
    let missing = secs.len().saturating_sub(3).saturating_sub(lat.len());
    lat.sort_by(f64::total_cmp);
    let q = |p: f64| lat[((lat.len() as f64 - 1.0) * p).round() as usize];
    println!(
        "alert latency at {rate} events/s over {} windows: p50 {:.1} ms  p99 {:.1} ms  max {:.1} ms  (windows without an alert: {missing})",
        lat.len(),
        q(0.5),
        q(0.99),
        lat[lat.len() - 1]
    );
    Ok(())
}
