//! End-to-end load generator: sends a generated RFC 5424 corpus over N TLS connections and
//! reports events/s, MB/s, the time until the last event is durable and queryable, and the
//! Parquet bytes per event.
//!
//! By default it starts its own daemon (the `logwarden` binary next to this one) on loopback
//! ports chosen by the OS, in a temporary data directory; `--target` sends to a running daemon
//! instead. Durable means queryable in logwarden (both happen in one step), so the end of the
//! measurement is when `logwarden_events_durable_total` reaches the number of events sent.
//!
//!     cargo run --release --bin logwarden-loadgen -- --events 2000000 --connections 4
//!
//! With `--alert-latency 30s` it sends `--rate` events/s (default 200 000) with live
//! timestamps and measures how long after a rule window closes its alert reaches a webhook
//! (see `latency.rs`).
//!
//! With `--handshakes 10s` it measures TLS handshakes per second instead: each of the
//! `--connections` tasks connects, completes a TLS 1.3 handshake and closes, in a loop, either
//! always full (the server signs every one) or, with `--resume`, resuming the previous
//! session from a ticket (the server signs nothing); stream listeners send tickets only to
//! clients that ask, so `--resume` asks (RFC 9149 `ticket_request`). `--cert`/`--key` present a client
//! certificate, for listeners with `client_auth`.
//!
//! With `--password-storm 8` eight tasks guess a Flight SQL user's password while the events
//! are sent (see `storm.rs`), to compare ingest under a password-guessing attack with ingest
//! without one.
//!
//! With `--protocol relp` the same corpus goes to the RELP listener as rsyslog's omrelp sends
//! it: a window of 128 frames unanswered per connection, each answered once durable (see
//! `relp.rs`); run it beside a default run to compare RELP with syslog over TLS.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Parser, ValueEnum};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rustls::pki_types::ServerName;
use rustls::pki_types::pem::PemObject;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

mod latency;
mod protocols;
mod relp;
mod storm;

#[derive(Debug, Clone, Parser)]
#[command(name = "logwarden-loadgen", about = "Send a generated syslog corpus over TLS and measure ingest")]
struct Args {
    /// Events to send in total.
    #[arg(long, default_value_t = 2_000_000)]
    events: usize,
    /// Concurrent TLS connections.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Size of each RFC 5424 message in bytes (without framing).
    #[arg(long, default_value_t = 180)]
    event_bytes: usize,
    #[arg(long, value_enum, default_value = "octet")]
    framing: Framing,
    /// The protocol to send with (see `protocols.rs`); all but syslog need a daemon started
    /// here.
    #[arg(long, value_enum, default_value = "syslog")]
    protocol: protocols::Protocol,
    /// Events per request, for the request-based protocols.
    #[arg(long, default_value_t = 1000)]
    batch: usize,
    /// With `--protocol relp`: frames each connection keeps unanswered (omrelp's
    /// `windowSize`); the daemon started here gets a `window` at least as large.
    #[arg(long, default_value_t = relp::WINDOW)]
    relp_window: usize,
    /// Send to a running daemon's stream listener instead of starting one.
    #[arg(long, requires = "ca")]
    target: Option<SocketAddr>,
    /// CA file that signed the target's certificate (with --target).
    #[arg(long)]
    ca: Option<PathBuf>,
    /// The target's admin address, to wait until the events are durable (with --target).
    #[arg(long)]
    admin: Option<SocketAddr>,
    /// The logwarden binary to start (default: the one next to this program).
    #[arg(long)]
    daemon: Option<PathBuf>,
    /// Give up waiting for durability after this long.
    #[arg(long, default_value = "300s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// Keep the started daemon's data directory (to inspect the segments) instead of deleting it.
    #[arg(long)]
    keep_data: bool,
    /// Seed of the corpus generator.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Measure TLS handshakes per second for this long instead of sending events.
    #[arg(long, value_parser = humantime::parse_duration)]
    handshakes: Option<Duration>,
    /// TOML appended to the config of the daemon started here (e.g. to turn detection off).
    #[arg(long)]
    extra_config: Option<PathBuf>,
    /// Measure alert latency for this long instead of throughput (starts its own daemon).
    #[arg(long, value_parser = humantime::parse_duration, conflicts_with = "target")]
    alert_latency: Option<Duration>,
    /// With --alert-latency: events per second to send.
    #[arg(long, default_value_t = 200_000)]
    rate: usize,
    /// With --handshakes: resume sessions from tickets instead of full handshakes.
    #[arg(long)]
    resume: bool,
    /// Client certificate (PEM) to present.
    #[arg(long, requires = "key")]
    cert: Option<PathBuf>,
    /// The client certificate's key (PEM).
    #[arg(long, requires = "cert")]
    key: Option<PathBuf>,
    /// Tasks guessing a Flight SQL password (basic credentials, a wrong password each time)
    /// while the events are sent; reports their rate and /healthz times.
    #[arg(long, conflicts_with = "target")]
    password_storm: Option<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Protocol {
    /// Octet-counted or LF-framed syslog over TLS (`--framing`), nothing answered.
    Syslog,
    /// RELP over TLS: at most 128 frames unanswered per connection, each answered once durable.
    Relp,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Framing {
    /// RFC 5425 octet counting (`LEN SP MSG`), as rsyslog's omfwd with TCP_Framing="octet-counted".
    Octet,
    /// Non-transparent framing: one message per line.
    Lf,
}

fn main() -> Result<()> {
    let args = Args::parse();
    if args.connections == 0 || args.events == 0 {
        bail!("--events and --connections must be at least 1");
    }
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(run(args))
}

async fn run(args: Args) -> Result<()> {
    if let Some(duration) = args.alert_latency {
        return alert_latency(&args, duration).await;
    }
    let daemon = match args.target {
        Some(addr) => Target {
            stream: addr,
            addrs: Default::default(),
            admin: args.admin,
            flight: None,
            ca: args.ca.clone().context("--ca is required with --target")?,
            child: None,
            keep_data: false,
        },
        None => {
            let extra = match &args.extra_config {
                Some(f) => {
                    std::fs::read_to_string(f).with_context(|| format!("failed to read {}", f.display()))?
                }
                None => String::new(),
            };
            let extra = match args.password_storm {
                Some(_) => format!("{}{extra}", storm::daemon_config()?),
                None => extra,
            };
            Target::start(args.daemon.clone(), args.keep_data, &extra, args.relp_window)?
        }
    };

    if let Some(duration) = args.handshakes {
        return handshakes(&args, &daemon, duration).await;
    }
    let protocol = args.protocol;
    let request_based = protocol != protocols::Protocol::Syslog;
    if request_based && daemon.child.is_none() {
        bail!("--protocol {protocol:?} needs a daemon started here (no --target)");
    }
    eprint!("generating {} events of {} bytes ... ", args.events, args.event_bytes);
    let started = Instant::now();
    let corpus =
        generate(&Args { framing: if request_based { Framing::Lf } else { args.framing }, ..args.clone() });
    let relp_frames: Vec<_> = match protocol {
        protocols::Protocol::Relp => corpus.iter().map(|l| relp::encode(l)).collect(),
        _ => Vec::new(),
    };
    let request_based = request_based && protocol != protocols::Protocol::Relp;
    let requests: Vec<Vec<protocols::Request>> = match request_based {
        true => corpus
            .iter()
            .map(|c| {
                let lines: Vec<&str> = std::str::from_utf8(c).unwrap_or_default().lines().collect();
                protocols::requests(protocol, &lines, args.batch)
            })
            .collect(),
        false => Vec::new(),
    };
    let wire_bytes: usize = match protocol {
        protocols::Protocol::Relp => relp_frames.iter().map(|(b, _)| b.len()).sum(),
        _ if request_based => requests.iter().flatten().map(|r| r.len()).sum(),
        _ => corpus.iter().map(Vec::len).sum(),
    };
    eprintln!("{:.1}s", started.elapsed().as_secs_f64());

    let durable_before = match daemon.admin {
        Some(a) => metric(a, "logwarden_events_durable_total").await.unwrap_or(0.0),
        None => 0.0,
    };
    let connector = TlsConnector::from(client_config(&daemon.ca, &args, true)?);
    let storm = match (args.password_storm, daemon.flight, daemon.admin) {
        (Some(n), Some(flight), Some(admin)) => {
            eprintln!("password storm: {n} tasks guessing");
            let s = storm::start(n, flight, admin, daemon.ca.clone());
            // Let it reach full strength before the load starts.
            tokio::time::sleep(Duration::from_secs(1)).await;
            Some(s)
        }
        _ => None,
    };
    let start = Instant::now();
    let mut sends = Vec::new();
    if request_based {
        let addr = daemon
            .addrs
            .get(protocols::listener(protocol))
            .copied()
            .context("no listener for the protocol")?;
        let tls = client_config(&daemon.ca, &args, true)?;
        for reqs in requests {
            let tls = tls.clone();
            sends.push(tokio::spawn(
                async move { protocols::send(protocol, addr, tls, reqs).await.map(|_| ()) },
            ));
        }
    }
    if protocol == protocols::Protocol::Relp {
        let addr = daemon.addrs.get("relp").copied().context("the daemon has no RELP listener")?;
        for frames in relp_frames {
            sends.push(tokio::spawn(relp::send(connector.clone(), addr, frames, args.relp_window)));
        }
    }
    for chunk in corpus.into_iter().filter(|_| protocol == protocols::Protocol::Syslog) {
        let connector = connector.clone();
        let addr = daemon.stream;
        sends.push(tokio::spawn(async move {
            let tcp = TcpStream::connect(addr).await?;
            tcp.set_nodelay(true)?;
            let mut tls = connector.connect(ServerName::try_from("localhost")?, tcp).await?;
            for piece in chunk.chunks(256 * 1024) {
                tls.write_all(piece).await?;
            }
            tls.shutdown().await?;
            // Read to the server's close: closing with unread data (session tickets) would
            // reset the connection and make the kernel drop what the server has not read yet.
            let _ = tls.read_to_end(&mut Vec::new()).await;
            anyhow::Ok(())
        }));
    }
    for s in sends {
        s.await??;
    }
    let sent = start.elapsed();

    let mut report = Report {
        protocol,
        events: args.events,
        event_bytes: args.event_bytes,
        wire_bytes,
        connections: args.connections,
        sent,
        durable: None,
        parquet: None,
        rule_dropped: None,
        password_checks: None,
    };
    if let Some(admin) = daemon.admin {
        let want = durable_before + args.events as f64;
        let deadline = Instant::now() + args.timeout;
        loop {
            let now = metric(admin, "logwarden_events_durable_total").await.unwrap_or(0.0);
            if now >= want {
                report.durable = Some(start.elapsed());
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "only {} of {} events durable after {:?}",
                    now - durable_before,
                    args.events,
                    args.timeout
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if let Some(s) = storm {
            s.finish().await?;
            report.password_checks = metric(admin, "logwarden_flight_password_checks_total").await;
        }
        report.rule_dropped = metric(admin, "logwarden_rule_dropped_events_total").await;
        if daemon.child.is_some() {
            report.parquet = wait_for_segments(admin, args.events, args.timeout).await;
        }
    }
    report.print();
    if let Some(data_dir) = daemon.data_dir() {
        verify_count(&daemon.bin()?, &data_dir, args.events)?;
    }
    drop(daemon);
    Ok(())
}

/// `--alert-latency`: a daemon with the marker rule and a webhook receiver here.
async fn alert_latency(args: &Args, duration: Duration) -> Result<()> {
    let arrivals = latency::Arrivals::default();
    let hook = latency::receiver(arrivals.clone()).await?;
    let daemon =
        Target::start(args.daemon.clone(), args.keep_data, &latency::daemon_config(hook), args.relp_window)?;
    let pool = Args { events: args.events.min(400_000), framing: Framing::Octet, ..args.clone() };
    let corpus = generate(&pool);
    let connector = TlsConnector::from(client_config(&daemon.ca, args, true)?);
    eprintln!("sending {} events/s for {:?} ...", args.rate, duration);
    let started = Instant::now();
    let (boundaries, sent) =
        latency::send_paced(daemon.stream, connector, corpus, args.rate, duration).await?;
    println!(
        "sent {sent} events in {:.1}s: {:.0} events/s",
        started.elapsed().as_secs_f64(),
        sent as f64 / started.elapsed().as_secs_f64()
    );
    // The last full window's alert may still be on its way.
    let last = boundaries.keys().rev().nth(1).copied().unwrap_or(0);
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline && !arrivals.has(last) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    latency::report(&boundaries, &arrivals, args.rate)?;
    if let Some(admin) = daemon.admin {
        let dropped = metric(admin, "logwarden_rule_dropped_events_total").await.unwrap_or(0.0);
        println!("events rules did not see (evaluation behind): {dropped}");
    }
    Ok(())
}

struct Report {
    protocol: protocols::Protocol,
    events: usize,
    event_bytes: usize,
    wire_bytes: usize,
    connections: usize,
    sent: Duration,
    durable: Option<Duration>,
    parquet: Option<(f64, f64)>,
    /// Events the rules skipped because they fell behind.
    rule_dropped: Option<f64>,
    /// argon2 checks the daemon ran (with --password-storm).
    password_checks: Option<f64>,
}

impl Report {
    fn print(&self) {
        let mb = self.wire_bytes as f64 / 1e6;
        let rate = |d: Duration| (self.events as f64 / d.as_secs_f64(), mb / d.as_secs_f64());
        println!(
            "protocol: {:?}  events: {}  message bytes: {}  connections: {}  wire: {:.1} MB",
            self.protocol, self.events, self.event_bytes, self.connections, mb
        );
        let (ev, mbs) = rate(self.sent);
        let sent = match self.protocol {
            protocols::Protocol::Syslog => "sent",
            _ => "sent and answered (durable)",
        };
        println!("{sent} in {:.2}s: {:.0} events/s, {:.1} MB/s", self.sent.as_secs_f64(), ev, mbs);
        if let Some(d) = self.durable {
            let (ev, mbs) = rate(d);
            println!(
                "durable and queryable in {:.2}s: {:.0} events/s, {:.1} MB/s (last event {:.0} ms after the send finished)",
                d.as_secs_f64(),
                ev,
                mbs,
                (d.saturating_sub(self.sent)).as_secs_f64() * 1e3
            );
        }
        if let Some(n) = self.rule_dropped {
            println!("events the rules skipped (evaluation behind): {n}");
        }
        if let Some(n) = self.password_checks {
            println!("argon2 password checks the daemon ran: {n}");
        }
        if let Some((bytes, rows)) = self.parquet {
            println!("parquet: {:.0} bytes for {:.0} rows = {:.1} bytes/event", bytes, rows, bytes / rows);
        }
    }
}

/// The daemon under load: started here (and stopped on drop) or given by address.
struct Target {
    stream: SocketAddr,
    admin: Option<SocketAddr>,
    /// The Flight SQL endpoint of a daemon started here.
    flight: Option<SocketAddr>,
    /// Every listener of a daemon started here, by name.
    addrs: std::collections::HashMap<String, SocketAddr>,
    ca: PathBuf,
    child: Option<(Child, PathBuf, PathBuf)>,
    keep_data: bool,
}

impl Target {
    fn start(bin: Option<PathBuf>, keep_data: bool, extra: &str, relp_window: usize) -> Result<Target> {
        let bin = match bin {
            Some(b) => b,
            None => std::env::current_exe()?.with_file_name("logwarden"),
        };
        if !bin.exists() {
            bail!("{} not found: build it (cargo build --release) or pass --daemon", bin.display());
        }
        let dir = std::env::temp_dir().join(format!("logwarden-loadgen-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let data = dir.join("data");
        let config = dir.join("logwarden.toml");
        // Production defaults, except ports chosen by the OS and a short flush interval so the
        // tail of the run reaches Parquet soon after the load ends (for the bytes/event figure).
        std::fs::write(
            &config,
            format!(
                "data_dir = \"{}\"\n[log]\nlevel = \"warn\"\n[[stream]]\nname = \"syslog\"\naddress = \"127.0.0.1:0\"\n\
                 [[http]]\nname = \"http\"\naddress = \"127.0.0.1:0\"\n{protocols}[[relp]]\nname = \"relp\"\naddress = \"127.0.0.1:0\"\nwindow = {relp_window}\n[admin]\naddress = \"127.0.0.1:0\"\n[flight]\naddress = \"127.0.0.1:0\"\n\
                 [storage]\nflush_interval = \"5s\"\n{extra}",
                data.display(),
                protocols = protocols::daemon_config(),
                relp_window = relp_window.max(relp::WINDOW),
            ),
        )?;
        let log = std::fs::File::create(dir.join("daemon.log"))?;
        let child = Command::new(&bin)
            .args(["serve", "--config"])
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("failed to start {}", bin.display()))?;
        let listeners = data.join("listeners.json");
        let deadline = Instant::now() + Duration::from_secs(60);
        while !listeners.exists() {
            if Instant::now() > deadline {
                bail!("daemon did not start; see {}", dir.join("daemon.log").display());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let addrs: std::collections::HashMap<String, SocketAddr> =
            serde_json::from_str(&std::fs::read_to_string(&listeners)?)?;
        let get = |k: &str| addrs.get(k).copied().with_context(|| format!("no {k} in listeners.json"));
        let stream = get("syslog")?;
        let admin = get("admin")?;
        eprintln!("started {} (data in {})", bin.display(), data.display());
        Ok(Target {
            stream,
            addrs: addrs.clone(),
            admin: Some(admin),
            flight: addrs.get("flight").copied(),
            ca: data.join("tls/ca.pem"),
            child: Some((child, dir, bin)),
            keep_data,
        })
    }

    fn data_dir(&self) -> Option<PathBuf> {
        self.child.as_ref().map(|(_, dir, _)| dir.join("data"))
    }

    fn bin(&self) -> Result<PathBuf> {
        self.child.as_ref().map(|(_, _, b)| b.clone()).context("no daemon binary")
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        if let Some((child, dir, _)) = self.child.as_mut() {
            // SIGTERM for a clean stop, then the scratch directory goes.
            let _ = Command::new("kill").arg(child.id().to_string()).status();
            let _ = child.wait();
            if self.keep_data {
                eprintln!("data kept in {}", dir.display());
            } else {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
    }
}

/// Parquet bytes and rows once every event is in a segment (`None` if that takes too long).
async fn wait_for_segments(admin: SocketAddr, events: usize, timeout: Duration) -> Option<(f64, f64)> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        let rows = metric(admin, "logwarden_storage_rows").await.unwrap_or(0.0);
        if rows >= events as f64 {
            let bytes = metric(admin, "logwarden_storage_bytes").await.unwrap_or(0.0);
            return Some((bytes, rows));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

fn verify_count(bin: &Path, data_dir: &Path, events: usize) -> Result<()> {
    let started = Instant::now();
    let out = Command::new(bin)
        .args(["query", "--format", "csv", "--data-dir"])
        .arg(data_dir)
        .arg("SELECT count(*) FROM logs")
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let n: usize = text.lines().nth(1).and_then(|l| l.trim().parse().ok()).unwrap_or(0);
    println!("logwarden query: count(*) = {n} ({:.2}s)", started.elapsed().as_secs_f64());
    if n != events {
        bail!("expected {events} rows, the table has {n}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// One sample from the admin endpoint's /metrics (a plain HTTP/1.0 GET).
async fn metric(admin: SocketAddr, name: &str) -> Option<f64> {
    let mut s = TcpStream::connect(admin).await.ok()?;
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n").await.ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).await.ok()?;
    body.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// TLS 1.3 client config trusting `ca`, with the `--cert` identity if given; `resume` keeps
/// the session cache (the default), otherwise every handshake is full.
fn client_config(ca: &Path, args: &Args, resume: bool) -> Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_file_iter(ca)
        .with_context(|| format!("failed to read {}", ca.display()))?
    {
        roots.add(cert?)?;
    }
    let provider = Arc::new(logwarden::tls::crypto_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots);
    let mut config = match (&args.cert, &args.key) {
        (Some(cert), Some(key)) => {
            let chain = rustls::pki_types::CertificateDer::pem_file_iter(cert)
                .with_context(|| format!("failed to read {}", cert.display()))?
                .collect::<Result<Vec<_>, _>>()?;
            let key = rustls::pki_types::PrivateKeyDer::from_pem_file(key)
                .with_context(|| format!("failed to read {}", key.display()))?;
            builder.with_client_auth_cert(chain, key)?
        }
        _ => builder.with_no_client_auth(),
    };
    if resume {
        // Stream listeners send session tickets only to clients that ask (RFC 9149).
        config.send_ticket_request =
            Some(rustls::client::TicketRequest { new_session_count: 2, resumption_count: 2 });
    } else {
        config.resumption = rustls::client::Resumption::disabled();
    }
    Ok(Arc::new(config))
}

/// Handshakes per second: `--connections` tasks in a loop for `duration`.
async fn handshakes(args: &Args, daemon: &Target, duration: Duration) -> Result<()> {
    let connector = TlsConnector::from(client_config(&daemon.ca, args, args.resume)?);
    let addr = daemon.stream;
    let one = move |connector: TlsConnector| async move {
        let tcp = TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        let mut tls = connector.connect(ServerName::try_from("localhost")?, tcp).await?;
        let resumed = matches!(tls.get_ref().1.handshake_kind(), Some(rustls::HandshakeKind::Resumed));
        tls.shutdown().await?;
        // Reading to the close takes in the session tickets the next resumption uses.
        let _ = tls.read_to_end(&mut Vec::new()).await;
        anyhow::Ok(resumed)
    };
    // One handshake first, so that resumption has a ticket from the start.
    one(connector.clone()).await?;
    let start = Instant::now();
    let deadline = start + duration;
    let mut tasks = Vec::new();
    for _ in 0..args.connections {
        let connector = connector.clone();
        tasks.push(tokio::spawn(async move {
            let (mut n, mut resumed) = (0u64, 0u64);
            while Instant::now() < deadline {
                resumed += u64::from(one(connector.clone()).await?);
                n += 1;
            }
            anyhow::Ok((n, resumed))
        }));
    }
    let (mut total, mut resumed) = (0u64, 0u64);
    for t in tasks {
        let (n, r) = t.await??;
        total += n;
        resumed += r;
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "handshakes: {total} in {secs:.2}s with {} connections: {:.0}/s ({resumed} resumed)",
        args.connections,
        total as f64 / secs
    );
    Ok(())
}

const HOSTS: usize = 64;
const APPS: &[&str] =
    &["nginx", "sshd", "postgres", "kernel", "api", "worker", "cron", "systemd", "haproxy", "auth"];
const PATHS: &[&str] =
    &["/api/v1/orders", "/api/v1/users", "/healthz", "/static/app.js", "/login", "/search"];
const VERBS: &[&str] = &["GET", "GET", "GET", "POST", "PUT", "DELETE"];
/// What ends real lines: user agents, deployment labels, trace context.
const TAILS: &[&str] = &[
    " ua=\"Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\"",
    " ua=\"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/126.0 Safari/537.36\"",
    " ua=\"curl/8.5.0\" env=prod region=eu-west-1",
    " ua=\"Go-http-client/2.0\" env=prod region=us-east-2",
    " env=prod region=eu-west-1 cluster=blue deploy=2026.11.3",
    " env=prod region=us-east-2 cluster=green deploy=2026.11.2",
];

/// One wire buffer per connection, each holding its share of the events, framed.
///
/// Messages are exactly `event_bytes` long and modelled on production lines rather than on
/// noise: 64 hosts, a PID per host and program, clients from a pool of 4096 addresses, and
/// request ids, sizes, latencies and SSH key hashes that vary per line (about 16 bytes of
/// entropy per event), time-ordered like a live stream.
fn generate(args: &Args) -> Vec<Vec<u8>> {
    let per_conn = args.events.div_ceil(args.connections);
    let base = chrono::Utc::now() - chrono::Duration::minutes(10);
    (0..args.connections)
        .map(|c| {
            let n = per_conn.min(args.events.saturating_sub(c * per_conn));
            let mut rng = SmallRng::seed_from_u64(args.seed + c as u64);
            let mut buf = Vec::with_capacity(n * (args.event_bytes + 8));
            let mut msg = String::with_capacity(args.event_bytes + 128);
            for i in 0..n {
                msg.clear();
                // About 140k events/s of wall time, with jitter as clocks on many hosts give.
                let micros = (i * args.connections + c) * 7 + rng.random_range(0..7);
                let ts = base + chrono::Duration::microseconds(micros as i64);
                let host = rng.random_range(0..HOSTS);
                let a = rng.random_range(0..APPS.len());
                let pid = 300 + (host * 7919 + a * 104_729) % 32_000;
                let pri = 8 * [1u8, 3, 4, 10, 16][rng.random_range(0..5)] + rng.random_range(3..7u8);
                let client = rng.random_range(0..4096u32);
                use std::fmt::Write as _;
                let _ = write!(
                    msg,
                    "<{pri}>1 {} web-{host:03}.prod.example.net {} {pid} - - ",
                    ts.format("%Y-%m-%dT%H:%M:%S%.6fZ"),
                    APPS[a],
                );
                let _ = match rng.random_range(0..4) {
                    0 => write!(
                        msg,
                        "{} {}/{} {} {} rt={:.3} client=10.{}.{}.{}",
                        VERBS[rng.random_range(0..VERBS.len())],
                        PATHS[rng.random_range(0..PATHS.len())],
                        rng.random_range(1..100_000),
                        [200, 200, 200, 304, 404, 500][rng.random_range(0..6)],
                        rng.random_range(120..90_000),
                        rng.random_range(0..2000) as f32 / 1000.0,
                        client >> 10,
                        (client >> 5) & 31,
                        client & 31,
                    ),
                    1 => write!(
                        msg,
                        "Accepted publickey for deploy from 192.168.{}.{} port {} ssh2: ED25519 SHA256:{:08x}",
                        client >> 5,
                        client & 31,
                        rng.random_range(1024..65535),
                        rng.random::<u32>(),
                    ),
                    2 => write!(
                        msg,
                        "duration: {:.3} ms  statement: SELECT * FROM orders WHERE id = {} AND tenant = {}",
                        rng.random_range(0..100_000) as f32 / 1000.0,
                        rng.random_range(1..10_000_000),
                        rng.random_range(1..500),
                    ),
                    _ => write!(
                        msg,
                        "job {:08x} finished state=ok items={} retries={} queue=q{}",
                        rng.random::<u32>(),
                        rng.random_range(0..5000),
                        rng.random_range(0..3),
                        rng.random_range(0..16),
                    ),
                };
                // Exactly event_bytes: finish the line with tails, then cut.
                while msg.len() < args.event_bytes {
                    msg.push_str(TAILS[rng.random_range(0..TAILS.len())]);
                }
                msg.truncate(args.event_bytes);
                match args.framing {
                    Framing::Octet => {
                        let _ = write!(buf, "{} ", msg.len());
                        buf.extend_from_slice(msg.as_bytes());
                    }
                    Framing::Lf => {
                        buf.extend_from_slice(msg.as_bytes());
                        buf.push(b'\n');
                    }
                }
            }
            buf
        })
        .collect()
}
