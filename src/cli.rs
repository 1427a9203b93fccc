//! The command line: `serve`, `validate`, `query`, `auth`, `pkcs11`, `templates`.

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
                                            then the templates";

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
        #[arg(long, short, value_enum, default_value = "table")]
        format: OutputFormat,
        /// Run the SQL on a running daemon over Flight SQL (https://host:port) instead of reading
        /// the data directory.
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
    /// Make Flight SQL credentials for the config (only hashes go into the file).
    #[command(subcommand)]
    Auth(AuthCommand),
    /// Inspect PKCS#11 tokens (HSMs, smart cards) for the [tls] key setting.
    #[command(subcommand)]
    Pkcs11(Pkcs11Command),
    /// Mine log templates from a file, one message per line (`-` reads stdin), the way the
    /// daemon does online; prints `line<TAB>template_id` for each line, then
    /// `template_id<TAB>count<TAB>pattern` for each template.
    Templates {
        /// The log file; `-` for stdin.
        file: PathBuf,
        /// Print only this part.
        #[arg(long, value_enum)]
        only: Option<TemplatesPart>,
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
    if pin { EXIT_PIN_REFUSED } else { 1 }
}

#[derive(Debug, Subcommand)]
pub enum AuthCommand {
    /// Print a new random bearer token and the [[flight.tokens]] entry holding its SHA-256.
    NewToken {
        /// Who the token is for (shown in query logs).
        name: String,
    },
    /// Read a password on stdin and print the [[flight.users]] entry with its argon2 hash.
    HashPassword {
        /// The user name clients send.
        name: String,
    },
}

/// Run the parsed command line; the process exit code follows the result.
pub fn run(cli: Cli) -> anyhow::Result<()> {
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
            // Before the runtime's threads exist: this unsets the LISTEN_* variables.
            let sockets = crate::systemd::PassedSockets::from_env()?;
            let rt =
                tokio::runtime::Builder::new_multi_thread().enable_all().thread_name("lw-worker").build()?;
            rt.block_on(crate::app::run(config, config_file, sockets))?;
            Ok(())
        }
        Command::Auth(cmd) => auth(cmd),
        Command::Templates { file, only } => templates(&file, only),
        Command::Pkcs11(Pkcs11Command::List { module, pin_file, pin_env }) => {
            use crate::tls::pkcs11::PinSource;
            let pin = pin_file.map(PinSource::File).or(pin_env.map(PinSource::Env));
            print!("{}", crate::tls::pkcs11::list(&module, pin.as_ref())?);
            Ok(())
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
                        let store = Store::open_read_only(&config.data_dir).with_context(|| {
                            format!("failed to open data directory {}", config.data_dir.display())
                        })?;
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

fn templates(file: &std::path::Path, only: Option<TemplatesPart>) -> anyhow::Result<()> {
    use std::io::{BufRead, Write};

    use crate::detect::templates::Miner;
    let input: Box<dyn BufRead> = if file.as_os_str() == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        let f = std::fs::File::open(file).with_context(|| format!("cannot open {}", file.display()))?;
        Box::new(std::io::BufReader::new(f))
    };
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut miner = Miner::default();
    if only != Some(TemplatesPart::Templates) {
        writeln!(out, "line\ttemplate_id")?;
    }
    for (n, line) in input.split(b'\n').enumerate() {
        let line = line.with_context(|| format!("failed to read {}", file.display()))?;
        let text = String::from_utf8_lossy(&line);
        let id = miner.add(text.trim_end_matches('\r'), 0).id();
        if only != Some(TemplatesPart::Templates) {
            writeln!(out, "{}\t{id}", n + 1)?;
        }
    }
    if only != Some(TemplatesPart::Lines) {
        if only.is_none() {
            writeln!(out)?;
        }
        writeln!(out, "template_id\tcount\tpattern")?;
        for t in miner.templates() {
            writeln!(out, "{}\t{}\t{}", t.id, t.count, t.pattern())?;
        }
    }
    out.flush()?;
    Ok(())
}

fn auth(cmd: AuthCommand) -> anyhow::Result<()> {
    use crate::serve::flight::auth;
    match cmd {
        AuthCommand::NewToken { name } => {
            let token = auth::new_token();
            eprintln!("Give this token to {name}; it is shown only now:");
            println!("{token}");
            eprintln!(
                "\nAdd to the config:\n[[flight.tokens]]\nname = {name:?}\nsha256 = \"{}\"",
                auth::sha256_hex(&token)
            );
        }
        AuthCommand::HashPassword { name } => {
            let mut password = String::new();
            std::io::stdin().read_line(&mut password).context("failed to read the password from stdin")?;
            let password = password.trim_end_matches(['\r', '\n']);
            anyhow::ensure!(!password.is_empty(), "empty password");
            let hash = auth::hash_password(password).map_err(|e| anyhow::anyhow!("failed to hash: {e}"))?;
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

fn validate(file: &std::path::Path) -> anyhow::Result<()> {
    match config::load(Some(file)) {
        Ok(_) => {
            println!("{}: ok", file.display());
            Ok(())
        }
        Err(e) => {
            crate::logging::report_fatal(&e.to_string());
            Err(anyhow::anyhow!("{} is not valid", file.display()))
        }
    }
}
