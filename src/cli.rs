//! The command line: `serve`, `validate`, `query`.

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
  logwarden query --format json \"SELECT * FROM logs ORDER BY timestamp DESC LIMIT 10\"";

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
        /// The SQL statement; the table is `logs`.
        sql: String,
    },
}

/// Run the parsed command line; the process exit code follows the result.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Validate { file } => validate(&file),
        Command::Serve { config } => {
            let config = load(config.as_deref())?;
            let format = match cli.log_format {
                Some(CliLogFormat::Json) => LogFormat::Json,
                Some(CliLogFormat::Human) => LogFormat::Human,
                None => config.log.format,
            };
            crate::logging::init(&config.log.level, format);
            let rt =
                tokio::runtime::Builder::new_multi_thread().enable_all().thread_name("lw-worker").build()?;
            rt.block_on(crate::app::run(config))?;
            Ok(())
        }
        Command::Query { config, data_dir, format, sql } => {
            let mut config = load(config.as_deref())?;
            if let Some(d) = data_dir {
                config.data_dir = d;
            }
            crate::logging::init("warn", LogFormat::Human);
            let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            rt.block_on(async {
                let store = Store::open_read_only(&config.data_dir).with_context(|| {
                    format!("failed to open data directory {}", config.data_dir.display())
                })?;
                let engine = QueryEngine::new(store)?;
                let batches = engine.collect(&sql).await?;
                print!("{}", query::format(&batches, format)?);
                if format == OutputFormat::Table {
                    println!();
                }
                Ok(())
            })
        }
    }
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
            eprintln!("{e}");
            Err(anyhow::anyhow!("{} is not valid", file.display()))
        }
    }
}
