//! The command line: `serve`, `validate`, `query`, `auth`, `pkcs11`, `templates`, `storage`.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::config::{self, Config, ConfigError, LogFormat};
use crate::query::{self, OutputFormat, QueryEngine};
use crate::store::Store;

const EXAMPLES: &str = "\
Examples:
  logwarden serve                           run on embedded defaults (development certificate,
                                            data in ./logwarden-data, ports 6514/8088/9898)
  logwarden serve --config /etc/logwarden/logwarden.toml
  logwarden validate /etc/logwarden/logwarden.toml
  logwarden query \"SELECT host, count(*) FROM logs GROUP BY host\"
  logwarden query --format json \"SELECT * FROM logs ORDER BY timestamp DESC LIMIT 10\"
  logwarden query --server https://localhost:50051 \"SELECT app, count(*) FROM logs GROUP BY app\"
  logwarden auth new-token grafana          print a Flight SQL token and its config entry
  logwarden templates /var/log/messages     mine log templates offline: each line's template id,
                                            then the templates
  logwarden storage migrate -c /etc/logwarden/logwarden.toml
                                            move local segments into the bucket of [storage] url";

#[derive(Debug, Parser)]
#[command(name = "logwarden", version, about = "Log daemon for strict-security sites: syslog and JSON over TLS, durable Parquet, SQL", after_help = EXAMPLES)]
pub struct Cli {
    /// Log format on stderr (overrides the config's log.format).
    #[arg(long, global = true, value_enum)]
    pub log_format: Option<CliLogFormat>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum CliLogFormat {
    Human,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon.
    Serve {
        /// Config file (TOML). Without it, the embedded defaults are used.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Check a config file; lists every problem as FILE: key: reason.
    Validate {
        /// The config file to check.
        file: PathBuf,
    },
    /// Run SQL over the stored data (including events not yet written as Parquet).
    Query {
        /// Config file whose data_dir to read.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Data directory to read (overrides the config's data_dir).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Output format.
        #[arg(long, short, value_enum, default_value = "table")]
        format: OutputFormat,
        /// Run the SQL on a running daemon over Flight SQL (https://host:port) instead of reading
        /// the data directory. Credentials go only over TLS, or in plain text (http://) to a
        /// loopback address.
        #[arg(long)]
        server: Option<String>,
        /// With --server: bearer token (default: LOGWARDEN_TOKEN, then <data_dir>/flight.token).
        #[arg(long, env = "LOGWARDEN_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// With --server: CA certificate to trust (default: <data_dir>/tls/ca.pem when present).
        #[arg(long)]
        ca: Option<PathBuf>,
        /// With --server: client certificate (PEM) to present; without --token, its principal
        /// runs the query (the endpoint needs flight.client_auth).
        #[arg(long, requires = "key")]
        cert: Option<PathBuf>,
        /// With --cert: its private key (PEM).
        #[arg(long, requires = "cert")]
        key: Option<PathBuf>,
        /// The SQL statement; the table is `logs`.
        sql: String,
    },
    /// Check a data directory against its seal chain and signed checkpoints, offline (a copy
    /// will do): every WAL file, segment, manifest and audit file is reported intact, modified,
    /// missing, reordered or unexpected, and each checkpoint's signature and match with the chain.
    ///
    /// Exit status: 0 when everything is intact and every checkpoint holds; 1 when verify could
    /// not run; otherwise the sum of 2 (modified), 4 (missing), 8 (reordered), 16 (unexpected)
    /// and 32 (a checkpoint that does not verify or that the chain no longer matches).
    Verify {
        /// Config file whose data_dir to check.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Data directory to check (overrides the config's data_dir).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Checkpoints kept elsewhere (one or more checkpoint lines: an export, the admin
        /// endpoint's /seal/checkpoint): the chain must still hold what each vouches for. The
        /// data directory's own checkpoints are checked as well.
        #[arg(long)]
        checkpoint: Option<PathBuf>,
        /// The certificate (PEM or DER) of the key that signs checkpoints. Without it signatures
        /// are not checked (and verify says so).
        #[arg(long)]
        cert: Option<PathBuf>,
        /// Print only what is not intact, and the summary.
        #[arg(long, short)]
        quiet: bool,
    },
    /// Make Flight SQL credentials for the config (only hashes go into the file).
    #[command(subcommand)]
    Auth(AuthCommand),
    /// Inspect PKCS#11 tokens (HSMs, smart cards) for the [tls] key setting.
    #[command(subcommand)]
    Pkcs11(Pkcs11Command),
    /// Manage where segments are stored.
    #[command(subcommand)]
    Storage(StorageCommand),
    /// Run a Ballista scheduler for distributed queries (`[query] engine = "ballista"`); the
    /// config's [storage] url names the bucket, credentials come from the environment.
    Scheduler {
        /// The config with the bucket (`[storage] url = "s3://..."`).
        #[arg(long, short)]
        config: PathBuf,
        /// Address to listen on for the daemons and executors.
        #[arg(long, default_value = "127.0.0.1:50050")]
        bind: std::net::SocketAddr,
        /// Host name or address the executors reach this scheduler at (default: the --bind address).
        #[arg(long)]
        external_host: Option<String>,
    },
    /// Run a Ballista executor: takes tasks from the scheduler and reads segments from the
    /// config's bucket.
    Executor {
        /// The config with the bucket (`[storage] url = "s3://..."`).
        #[arg(long, short)]
        config: PathBuf,
        /// The scheduler, df://HOST:PORT.
        #[arg(long, default_value = "df://127.0.0.1:50050")]
        scheduler: String,
        /// Address to serve on.
        #[arg(long, default_value = "127.0.0.1")]
        bind: std::net::IpAddr,
        /// Host name or address the scheduler and other executors reach this one at (default:
        /// the --bind address; in Kubernetes, the pod's IP).
        #[arg(long)]
        external_host: Option<String>,
        /// Port for shuffle data (Arrow Flight).
        #[arg(long, default_value_t = 50061)]
        port: u16,
        /// Port for tasks from the scheduler (gRPC).
        #[arg(long, default_value_t = 50062)]
        grpc_port: u16,
        /// Tasks run at once (0: one per core).
        #[arg(long, default_value_t = 0)]
        concurrent_tasks: usize,
        /// Directory for shuffle files (default: a temporary directory).
        #[arg(long)]
        work_dir: Option<PathBuf>,
    },
    /// Mine log templates from a file, one message per line (`-` reads stdin), the way the
    /// daemon does online; prints `line<TAB>template_id` for each line (the template it ended up
    /// in, once templates found to be one statement merged), then
    /// `template_id<TAB>count<TAB>pattern` for each template.
    Templates {
        /// The log file; `-` for stdin.
        file: PathBuf,
        /// Print only this part.
        #[arg(long, value_enum)]
        only: Option<TemplatesPart>,
        /// Say for each line why it got its template when it came: which template it matched
        /// or joined (and which positions became `<*>`), which templates it showed to differ
        /// only in a word that is a value (they merge), or why it started one (the closest
        /// template differs in a plain word, or agrees in too few positions).
        #[arg(long)]
        explain: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TemplatesPart {
    /// Each line's template id.
    Lines,
    /// The template list.
    Templates,
}

#[derive(Debug, Subcommand)]
pub enum Pkcs11Command {
    /// List tokens, keys and certificates with their pkcs11: URIs.
    List {
        /// The PKCS#11 module, e.g. /usr/lib/softhsm/libsofthsm2.so.
        #[arg(long)]
        module: PathBuf,
        /// Log in with the PIN in this file, so that private keys are listed too.
        #[arg(long, conflicts_with = "pin_env")]
        pin_file: Option<PathBuf>,
        /// Log in with the PIN in this environment variable.
        #[arg(long)]
        pin_env: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum StorageCommand {
    /// Move the segments of the config's data directory into the bucket its [storage] url
    /// names, as node [cluster] node_id. Stop the daemon first; run again to resume.
    Migrate {
        /// The config with the bucket (`[storage] url = "s3://..."`).
        #[arg(long, short)]
        config: PathBuf,
    },
}

/// Exit status when a PKCS#11 token refused the PIN. Restarting would spend another attempt
/// of the few a smart card allows, so the systemd unit lists it in `RestartPreventExitStatus=`.
pub const EXIT_PIN_REFUSED: u8 = 3;

/// The exit status for an error `run` returned.
pub fn exit_code(e: &anyhow::Error) -> u8 {
    use crate::tls::{TlsError, pkcs11::Pkcs11Error};
    let pin = e.chain().any(|c| {
        matches!(c.downcast_ref::<crate::app::AppError>(), Some(crate::app::AppError::Tls(t)) if t.is_pin_refused())
            || c.downcast_ref::<TlsError>().is_some_and(|t| t.is_pin_refused())
            || matches!(c.downcast_ref::<Pkcs11Error>(), Some(Pkcs11Error::PinRefused { .. }))
    });
    if pin {
        return EXIT_PIN_REFUSED;
    }
    match e.downcast_ref::<VerifyFailed>() {
        Some(v) => v.0,
        None => 1,
    }
}

/// `verify` found something: the exit status's bits say what.
#[derive(Debug, thiserror::Error)]
#[error("verify: the data directory is not as the seal chain and its checkpoints say (exit status {0})")]
pub struct VerifyFailed(pub u8);

#[derive(Debug, Subcommand)]
pub enum AuthCommand {
    /// Print a new random token and the config entry holding its SHA-256: a Flight SQL bearer
    /// token, or with --http an HTTP ingest token (Splunk HEC, bearer, Elasticsearch API key).
    NewToken {
        /// Who the token is for (shown in query logs; the principal is token:NAME).
        name: String,
        /// An entry for `[[http]] tokens` instead of `[[flight.tokens]]`.
        #[arg(long)]
        http: bool,
        /// With --http: an Elasticsearch API key with this id (the client sends `ID:TOKEN`,
        /// which is what is hashed).
        #[arg(long, requires = "http")]
        api_key_id: Option<String>,
    },
    /// Read a password on stdin and print the [[flight.users]] entry with its hash (argon2id;
    /// PBKDF2-HMAC-SHA256 in a FIPS build, where argon2 is not an approved algorithm).
    HashPassword {
        /// The user name clients send.
        name: String,
        /// The hash's scheme (default: pbkdf2-sha256 in a FIPS build, else argon2id).
        #[arg(long, value_enum)]
        scheme: Option<crate::crypto::password::Scheme>,
    },
}

/// Run the parsed command line; the process exit code follows the result.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    crate::tls::install_crypto_provider();
    match cli.command {
        Command::Validate { file } => validate(&file),
        Command::Serve { config } => {
            let config_file = config.clone();
            let config = load(config.as_deref())?;
            let format = match cli.log_format {
                Some(CliLogFormat::Json) => LogFormat::Json,
                Some(CliLogFormat::Human) => LogFormat::Human,
                None => config.log.format,
            };
            crate::logging::init(&config.log.level, format);
            let file = config_file.as_ref().map_or_else(|| "<defaults>".into(), |f| f.display().to_string());
            for w in config.warnings() {
                tracing::warn!("{file}: {}: {}", w.key, w.reason);
            }
            // Before the runtime's threads exist: this unsets the LISTEN_* variables.
            let sockets = crate::systemd::PassedSockets::from_env()?;
            let rt =
                tokio::runtime::Builder::new_multi_thread().enable_all().thread_name("lw-worker").build()?;
            rt.block_on(crate::app::run(config, config_file, sockets))?;
            Ok(())
        }
        Command::Auth(cmd) => auth(cmd),
        Command::Storage(StorageCommand::Migrate { config }) => migrate(&config),
        Command::Templates { file, only, explain } => templates(&file, only, explain),
        Command::Pkcs11(Pkcs11Command::List { module, pin_file, pin_env }) => {
            use crate::tls::pkcs11::PinSource;
            let pin = pin_file.map(PinSource::File).or(pin_env.map(PinSource::Env));
            print!("{}", crate::tls::pkcs11::list(&module, pin.as_ref())?);
            Ok(())
        }
        Command::Scheduler { config, bind, external_host } => {
            let config = load(Some(&config))?;
            crate::logging::init(&config.log.level, config.log.format);
            let external = external_host.unwrap_or_else(|| bind.ip().to_string());
            let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            rt.block_on(crate::query::distributed::run_scheduler(&config, bind, &external))
        }
        Command::Executor {
            config,
            scheduler,
            bind,
            external_host,
            port,
            grpc_port,
            concurrent_tasks,
            work_dir,
        } => {
            let config = load(Some(&config))?;
            crate::logging::init(&config.log.level, config.log.format);
            let scheduler =
                config::scheduler_address(&scheduler).map_err(|e| anyhow::anyhow!("--scheduler: {e}"))?;
            let opts = crate::query::distributed::ExecutorOptions {
                scheduler,
                bind,
                external_host: external_host.unwrap_or_else(|| bind.to_string()),
                port,
                grpc_port,
                concurrent_tasks,
                work_dir,
            };
            let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            rt.block_on(crate::query::distributed::run_executor(&config, opts))
        }
        Command::Verify { config, data_dir, checkpoint, cert, quiet } => {
            let data_dir = match data_dir {
                Some(d) => d,
                None => load(config.as_deref())?.data_dir,
            };
            crate::logging::init("warn", LogFormat::Human);
            let opts = crate::seal::verify::Options { data_dir, checkpoint, cert };
            let report = crate::seal::verify::verify(&opts)?;
            print_verify(&report, quiet, &mut std::io::stdout().lock())?;
            match report.exit_status() {
                0 => Ok(()),
                bits => Err(VerifyFailed(bits as u8).into()),
            }
        }
        Command::Query { config, data_dir, format, server, token, ca, cert, key, sql } => {
            let mut config = load(config.as_deref())?;
            if let Some(d) = data_dir {
                config.data_dir = d;
            }
            crate::logging::init("warn", LogFormat::Human);
            let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            rt.block_on(async {
                let batches = match server {
                    Some(url) => {
                        let cert = cert.zip(key);
                        remote_query(&config, &url, token, ca, cert, &sql).await?
                    }
                    None => {
                        let at = crate::app::segments_at(&config, None).await?;
                        let store = Store::open_read_only(&config.data_dir, at).with_context(|| {
                            format!("failed to open data directory {}", config.data_dir.display())
                        })?;
                        // With a bucket, the other nodes' segments too, as the daemon reads them.
                        match tokio::time::timeout(std::time::Duration::from_secs(15), store.refresh_peers())
                            .await
                        {
                            Ok(Ok(problems)) => {
                                for p in problems {
                                    tracing::warn!(problem = %p, "leaving out an unusable node");
                                }
                            }
                            Ok(Err(e)) => tracing::warn!(error = %e, "leaving out the other nodes' segments"),
                            Err(_) => tracing::warn!(
                                "the bucket did not answer within 15 s: leaving out the other nodes' segments"
                            ),
                        }
                        QueryEngine::new(store)?.collect(&sql).await?
                    }
                };
                print!("{}", query::format(&batches, format)?);
                if format == OutputFormat::Table {
                    println!();
                }
                Ok(())
            })
        }
    }
}

fn migrate(config_file: &std::path::Path) -> anyhow::Result<()> {
    let config = load(Some(config_file))?;
    crate::logging::init(&config.log.level, LogFormat::Human);
    if config.cluster.role == config::Role::Query {
        anyhow::bail!(
            "{}: cluster.role: a query node writes nothing to the bucket; migrate with the config of the node \
             that will ingest (role = \"both\" or \"ingest\")",
            config_file.display()
        );
    }
    if !matches!(config.storage.location(&config.data_dir), Ok(config::StorageUrl::S3 { .. })) {
        anyhow::bail!(
            "{}: storage.url: must name a bucket (s3://BUCKET/PREFIX) to migrate to",
            config_file.display()
        );
    }
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async {
        let at = crate::app::segments_at(&config, Some(&prometheus::Registry::new())).await?;
        let crate::store::SegmentsAt::Bucket(setup) = at else {
            anyhow::bail!("storage.url names no bucket");
        };
        let location = setup.bucket.location();
        let moved = crate::store::migrate_to_bucket(&config.data_dir, *setup)
            .await
            .with_context(|| format!("failed to move {} into {location}", config.data_dir.display()))?;
        println!(
            "moved {} segments ({} bytes) from {} into {location}",
            moved.segments,
            moved.bytes,
            config.data_dir.display()
        );
        Ok(())
    })
}

async fn remote_query(
    config: &Config,
    url: &str,
    token: Option<String>,
    ca: Option<PathBuf>,
    cert: Option<(PathBuf, PathBuf)>,
    sql: &str,
) -> anyhow::Result<Vec<arrow::array::RecordBatch>> {
    use crate::serve::flight::client;
    let token = match token {
        Some(t) => Some(t),
        // A client certificate is the credential; no token is sent.
        None if cert.is_some() => None,
        None => {
            let file = config.flight_token_file();
            Some(
                std::fs::read_to_string(&file)
                    .with_context(|| {
                        format!("no --token or LOGWARDEN_TOKEN, and cannot read {}", file.display())
                    })?
                    .trim()
                    .to_owned(),
            )
        }
    };
    let ca = ca.or_else(|| Some(config.dev_tls_dir().join("ca.pem")).filter(|p| p.exists()));
    let cert = cert.as_ref().map(|(c, k)| (c.as_path(), k.as_path()));
    let mut c = client::connect_with_cert(url, ca.as_deref(), token.as_deref(), cert).await?;
    Ok(client::query(&mut c, sql).await?)
}

fn templates(file: &std::path::Path, only: Option<TemplatesPart>, explain: bool) -> anyhow::Result<()> {
    use std::io::{BufRead, Write};

    use crate::detect::templates::{Explanation, Miner, TemplateId};
    let input: Box<dyn BufRead> = if file.as_os_str() == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        let f = std::fs::File::open(file).with_context(|| format!("cannot open {}", file.display()))?;
        Box::new(std::io::BufReader::new(f))
    };
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut miner = Miner::default();
    let lines = only != Some(TemplatesPart::Templates);
    match (lines, explain) {
        (true, true) => writeln!(out, "line\ttemplate_id\twhy")?,
        (true, false) => writeln!(out, "line\ttemplate_id")?,
        (false, _) => {}
    }
    // Each line's template and, with --explain, why; printed once the whole input is read, with
    // the id of the template each line ended up in (a template may merge into another later).
    let mut given: Vec<(TemplateId, Option<Explanation>)> = Vec::new();
    for line in input.split(b'\n') {
        let line = line.with_context(|| format!("failed to read {}", file.display()))?;
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end_matches('\r');
        let why = (lines && explain).then(|| miner.explain(text));
        let id = miner.add(text, 0).id();
        if lines {
            given.push((id, why));
        }
    }
    for (n, (id, why)) in given.into_iter().enumerate() {
        let id = miner.canonical(id);
        match why {
            Some(why) => writeln!(out, "{}\t{id}\t{why}", n + 1)?,
            None => writeln!(out, "{}\t{id}", n + 1)?,
        }
    }
    if only != Some(TemplatesPart::Lines) {
        if only.is_none() {
            writeln!(out)?;
        }
        writeln!(out, "template_id\tcount\tpattern")?;
        // A template's count takes in those of the templates merged into it.
        let mut counts = vec![0u64; miner.templates().len() + 1];
        for t in miner.templates() {
            counts[miner.canonical(t.id) as usize] += t.count;
        }
        for t in miner.templates().iter().filter(|t| t.merged_into.is_none()) {
            writeln!(out, "{}\t{}\t{}", t.id, counts[t.id as usize], t.pattern())?;
        }
    }
    out.flush()?;
    Ok(())
}

fn auth(cmd: AuthCommand) -> anyhow::Result<()> {
    use crate::serve::flight::auth;
    match cmd {
        AuthCommand::NewToken { name, http, api_key_id } => {
            let token = match &api_key_id {
                Some(id) => format!("{id}:{}", auth::new_token()),
                None => auth::new_token(),
            };
            eprintln!("Give this token to {name}; it is shown only now:");
            println!("{token}");
            let digest = auth::sha256_hex(&token);
            match http {
                false => eprintln!(
                    "\nAdd to the config:\n[[flight.tokens]]\nname = {name:?}\nsha256 = \"{digest}\""
                ),
                true => eprintln!(
                    "\nAdd to the [[http]] listener's tokens:\ntokens = [{{ name = {name:?}, sha256 = \"{digest}\" }}]"
                ),
            }
        }
        AuthCommand::HashPassword { name, scheme } => {
            let mut password = String::new();
            std::io::stdin().read_line(&mut password).context("failed to read the password from stdin")?;
            let password = password.trim_end_matches(['\r', '\n']);
            anyhow::ensure!(!password.is_empty(), "empty password");
            let scheme = scheme.unwrap_or(crate::crypto::password::Scheme::DEFAULT);
            let shortest = crate::crypto::password::FIPS_MIN_PASSWORD;
            anyhow::ensure!(
                !cfg!(feature = "fips") || password.len() >= shortest,
                "a FIPS build hashes passwords of at least {shortest} bytes: the FIPS module approves PBKDF2 for no shorter one"
            );
            let hash = crate::crypto::password::hash(password, scheme)
                .map_err(|e| anyhow::anyhow!("failed to hash: {e}"))?
                .into_string();
            println!("[[flight.users]]\nname = {name:?}\npassword_hash = {hash:?}");
        }
    }
    Ok(())
}

fn load(path: Option<&std::path::Path>) -> anyhow::Result<Config> {
    match config::load(path) {
        Ok(c) => Ok(c),
        Err(e @ ConfigError::Invalid { .. }) => Err(anyhow::anyhow!("invalid configuration:\n{e}")),
        Err(e) => Err(e.into()),
    }
}

/// Text from the data directory or a checkpoint, printed with control characters escaped: a
/// forged name must not print a line of its own.
fn clean(s: &str) -> std::borrow::Cow<'_, str> {
    if s.chars().any(char::is_control) {
        s.chars()
            .map(|c| if c.is_control() { c.escape_default().to_string() } else { c.to_string() })
            .collect::<String>()
            .into()
    } else {
        s.into()
    }
}

/// `verify`'s report: a line per object (`STATUS OBJECT DETAIL`), the checkpoints, a summary.
fn print_verify(
    r: &crate::seal::verify::Report,
    quiet: bool,
    out: &mut impl std::io::Write,
) -> std::io::Result<()> {
    use crate::seal::verify::Status;
    for f in &r.findings {
        if quiet && f.status == Status::Intact {
            continue;
        }
        writeln!(
            out,
            "{:<10} {}{}{}",
            f.status.name(),
            clean(&f.object),
            if f.detail.is_empty() { "" } else { ": " },
            clean(&f.detail)
        )?;
    }
    for c in &r.checkpoints {
        let what = match (c.seq, &c.time) {
            (Some(seq), Some(t)) => format!("entry {seq}, signed {}", clean(t)),
            _ => "unreadable".into(),
        };
        match &c.problem {
            None if c.signature_checked => {
                writeln!(out, "checkpoint {} ({what}): signature verified, the chain matches", c.source)?
            }
            None => {
                writeln!(out, "checkpoint {} ({what}): the chain matches (signature not checked)", c.source)?
            }
            Some(p) => writeln!(out, "checkpoint {} ({what}): FAILED: {}", c.source, clean(p))?,
        }
    }
    for what in &r.recovered {
        writeln!(out, "recovered  {}: chained at a start after a crash", clean(what))?;
    }
    for what in &r.late_removals {
        writeln!(out, "removed    {}: after the newest checkpoint that holds", clean(what))?;
    }
    if r.checkpoints.is_empty() {
        writeln!(out, "no checkpoint: nothing vouches for the chain itself (pass --checkpoint)")?;
    }
    if r.signatures_unchecked {
        writeln!(out, "signatures NOT checked: pass --cert with the signing certificate")?;
    }
    let gb = r.bytes_read as f64 / 1e9;
    writeln!(
        out,
        "chain: {} entries ({} after the newest checkpoint that holds, {} chained at a start after a crash); {} objects removed on purpose",
        r.entries, r.unvouched_entries, r.recovered_entries, r.removed_objects
    )?;
    writeln!(
        out,
        "{} intact, {} modified, {} missing, {} reordered, {} unexpected; read {:.3} GB in {:.2} s ({:.2} GB/s)",
        r.count(Status::Intact),
        r.count(Status::Modified),
        r.count(Status::Missing),
        r.count(Status::Reordered),
        r.count(Status::Unexpected),
        gb,
        r.seconds,
        if r.seconds > 0.0 { gb / r.seconds } else { 0.0 }
    )
}

fn validate(file: &std::path::Path) -> anyhow::Result<()> {
    match config::load(Some(file)) {
        Ok(cfg) => {
            for w in cfg.warnings() {
                eprintln!("{}: {}: warning: {}", file.display(), w.key, w.reason);
            }
            println!("{}: ok", file.display());
            Ok(())
        }
        Err(e) => {
            crate::logging::report_fatal(&e.to_string());
            Err(anyhow::anyhow!("{} is not valid", file.display()))
        }
    }
}

#[cfg(test)]
mod man_pages {
    use clap::CommandFactory;

    /// What `logwarden(1)` says beyond the options: written here, next to the command line
    /// it describes, in roff.
    const DESCRIPTION: &str = r#".SH DESCRIPTION
logwarden receives logs from shippers (rsyslog, syslog\-ng, Vector, Fluent Bit) over mutually
authenticated TLS: syslog with RFC\~5425/6587 framing (RFC\~5424 and RFC\~3164 messages) and
newline\-delimited JSON on stream listeners, and JSON over HTTP.
Every event is written to a write\-ahead log and fsynced before it is acknowledged, then kept
as Parquet.
Streaming rules and detectors raise alerts to Alertmanager; Prometheus scrapes
\fB/metrics\fR on the admin endpoint; analysts run SQL over live and stored events with Arrow
Flight SQL clients (ADBC, JDBC, Grafana) or \fBlogwarden query\fR.
The server's private key may stay on a PKCS#11 token (HSM, smart card).
.PP
Without \fB\-\-config\fR, \fBlogwarden serve\fR runs on embedded defaults: listeners on
127.0.0.1, data in \fI./logwarden\-data\fR, and a generated development certificate that it
reports, loudly, as not for production.
"#;

    const EXAMPLES: &str = r#".SH EXAMPLES
.nf
logwarden serve
logwarden serve \-\-config /etc/logwarden/logwarden.toml
logwarden validate /etc/logwarden/logwarden.toml
logwarden query "SELECT host, count(*) FROM logs GROUP BY host"
logwarden query \-\-format json "SELECT * FROM logs ORDER BY timestamp DESC LIMIT 10"
logwarden query \-\-server https://localhost:50051 "SELECT app, count(*) FROM logs GROUP BY app"
logwarden auth new\-token grafana
logwarden pkcs11 list \-\-module /usr/lib/softhsm/libsofthsm2.so \-\-pin\-file /root/pin
logwarden templates /var/log/messages
.fi
"#;

    const OPERATIONS: &str = r#".SH SIGNALS
.TP
\fBSIGHUP\fR
Reread the configuration file and check it whole; then swap the server certificate and key,
rules, detectors, alert routes, authorization, client CA bundles and CRLs without dropping
connections.
A file that does not load is refused and the running configuration stays; the reason is
logged and shown in the unit's status.
\fBsystemctl reload logwarden\fR sends it.
.TP
\fBSIGTERM\fR, \fBSIGINT\fR
Stop accepting, drain connections, make every received event durable, and exit within
\fBshutdown_timeout\fR (20 s by default).
.SH ENVIRONMENT
.TP
\fBNOTIFY_SOCKET\fR, \fBWATCHDOG_USEC\fR
Set by systemd for \fBType=notify\fR: readiness, status, watchdog pings and reload
notifications are sent there.
.TP
\fBLISTEN_FDS\fR, \fBLISTEN_PID\fR, \fBLISTEN_FDNAMES\fR
Listening sockets passed by socket activation (logwarden.socket); each serves the listener
of its \fBFileDescriptorName=\fR or, failing that, of its address.
.TP
\fBSTATE_DIRECTORY\fR
The data directory when the configuration does not set \fBdata_dir\fR.
.TP
\fBCREDENTIALS_DIRECTORY\fR
Where \fBtls.pin_credential\fR is read from (systemd's \fBLoadCredential=\fR).
.TP
\fBJOURNAL_STREAM\fR
When it names stderr, log lines carry syslog priorities and no timestamps.
.TP
\fBRUST_LOG\fR
Overrides the configured log level (for example \fBlogwarden=debug\fR).
.TP
\fBLOGWARDEN_TOKEN\fR
The bearer token \fBlogwarden query \-\-server\fR presents.
.SH FILES
.TP
\fI/etc/logwarden/logwarden.toml\fR
The configuration (every key and its default:
\fI/usr/share/doc/logwarden/logwarden.example.toml\fR).
.TP
\fI/var/lib/logwarden/\fR
The data directory: \fIwal/\fR, Parquet segments and their manifest, alert state,
\fItls/\fR (the development certificate), \fIlisteners.json\fR (the bound addresses).
.TP
\fI/etc/credstore/pkcs11\-pin\fR
The PKCS#11 PIN, handed to the service as a credential.
.TP
\fI/usr/share/doc/logwarden/operations.md\fR
Installation, TLS and HSM setup, rotation, backup and restore, upgrade, capacity and
troubleshooting.
.SH EXIT STATUS
.TP
0
Stopped on request, every received event durable.
.TP
1
An error: the message says what (a configuration error names the file, the key and the
reason).
.TP
3
The PKCS#11 token refused the PIN.
Not worth retrying (a smart card locks after a few attempts): the unit does not restart on it.
.SH SEE ALSO
\fBlogwarden\-serve\fR(1), \fBlogwarden\-validate\fR(1), \fBlogwarden\-query\fR(1),
\fBlogwarden\-auth\fR(1), \fBlogwarden\-pkcs11\fR(1), \fBlogwarden\-templates\fR(1),
\fBsystemd.service\fR(5), \fBjournalctl\fR(1), \fBsofthsm2\-util\fR(1), \fBpkcs11\-tool\fR(1)
"#;

    /// A page: clap_mangen's title, name, synopsis, then `description` (or the command's
    /// about), options and subcommands, then `more`, then the version.
    fn page(cmd: clap::Command, description: Option<&str>, more: &[&str]) -> String {
        let man = clap_mangen::Man::new(cmd.clone());
        let mut out = Vec::new();
        man.render_title(&mut out).unwrap();
        man.render_name_section(&mut out).unwrap();
        man.render_synopsis_section(&mut out).unwrap();
        match description {
            Some(d) => out.extend_from_slice(d.as_bytes()),
            None => man.render_description_section(&mut out).unwrap(),
        }
        if cmd.get_arguments().any(|a| !a.is_hide_set()) {
            man.render_options_section(&mut out).unwrap();
        }
        if cmd.has_subcommands() {
            man.render_subcommands_section(&mut out).unwrap();
        }
        for s in more {
            out.extend_from_slice(s.as_bytes());
        }
        man.render_version_section(&mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    /// The pages under `man/` (shipped by the Debian package), rendered from this command line:
    /// `logwarden.1` and one `logwarden-<command>[-<subcommand>].1` per command.
    fn render() -> Vec<(String, String)> {
        let top = super::Cli::command().disable_help_subcommand(true);
        let mut pages =
            vec![("logwarden.1".to_owned(), page(top.clone(), Some(DESCRIPTION), &[EXAMPLES, OPERATIONS]))];
        add_commands(&top, "logwarden", &mut pages);
        pages
    }

    fn add_commands(parent: &clap::Command, path: &str, pages: &mut Vec<(String, String)>) {
        let parent_page = path.replace(' ', "-");
        for sub in parent.get_subcommands().filter(|s| !s.is_hide_set()) {
            let bin = format!("{path} {}", sub.get_name());
            let name = bin.replace(' ', "-");
            let cmd = sub
                .clone()
                .name(name.clone())
                .bin_name(bin.clone())
                .version(env!("CARGO_PKG_VERSION"))
                .disable_help_subcommand(true);
            let see_also = format!(".SH SEE ALSO\n\\fB{}\\fR(1)\n", parent_page.replace('-', "\\-"));
            pages.push((format!("{name}.1"), page(cmd.clone(), None, &[&see_also])));
            add_commands(&cmd, &bin, pages);
        }
    }

    /// Regenerate with `LOGWARDEN_BLESS=1 cargo test --lib man_pages`.
    #[test]
    fn match_the_command_line() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("man");
        let bless = std::env::var_os("LOGWARDEN_BLESS").is_some();
        let pages = render();
        let mut stale = Vec::new();
        for (name, text) in &pages {
            let path = dir.join(name);
            if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
                if bless {
                    std::fs::create_dir_all(&dir).unwrap();
                    std::fs::write(&path, text).unwrap();
                } else {
                    stale.push(name.clone());
                }
            }
        }
        let expected: std::collections::BTreeSet<_> = pages.iter().map(|(n, _)| n.clone()).collect();
        let present: std::collections::BTreeSet<_> = std::fs::read_dir(&dir)
            .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        let extra: Vec<_> = present.difference(&expected).collect();
        assert!(
            stale.is_empty() && extra.is_empty(),
            "man/ is out of step with the command line: stale or missing {stale:?}, no longer generated \
             {extra:?}; regenerate with LOGWARDEN_BLESS=1 cargo test --lib man_pages (and remove extras)"
        );
    }
}
