//! Process logging on stderr with tracing-subscriber: human-readable by default, JSON on request;
//! `RUST_LOG` overrides the configured level.
//!
//! When stderr is the journal (systemd sets `JOURNAL_STREAM` to its device and inode), lines
//! carry a syslog priority prefix (`<3>` error … `<7>` debug) and no timestamp (the journal
//! stamps them), so `journalctl -p warning -u logwarden` selects by level.

use std::io::IsTerminal;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

use crate::config::LogFormat;

pub fn init(level: &str, format: LogFormat) {
    let mut filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    // cryptoki logs an ERROR for every vendor mechanism it has no name for while listing a
    // token's mechanisms; that is not an error of the daemon's.
    if let Ok(quiet) = "cryptoki::mechanism=off".parse() {
        filter = filter.add_directive(quiet);
    }
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    // A second init (tests run several commands in one process) keeps the first subscriber.
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Human if stderr_is_journal() => builder.with_ansi(false).event_format(Journal).try_init(),
        // Colours only for a person at a terminal: log files get plain text.
        LogFormat::Human => builder.with_ansi(std::io::stderr().is_terminal()).try_init(),
    };
}

/// Print the error that ends the process on stderr: at error priority when stderr is the
/// journal (every line: `logwarden validate` lists one problem per line), so that
/// `journalctl -p err` shows why a start failed.
pub fn report_fatal(message: &str) {
    let prefix = if stderr_is_journal() { "<3>" } else { "" };
    let mut out = String::with_capacity(message.len() + 16);
    for line in message.lines() {
        out.push_str(prefix);
        out.push_str(line);
        out.push('\n');
    }
    use std::io::Write;
    let _ = std::io::stderr().lock().write_all(out.as_bytes());
}

/// Whether stderr is the stream `JOURNAL_STREAM` names (`DEVICE:INODE`): a child that
/// inherited the variable but writes elsewhere must not get journal formatting.
fn stderr_is_journal() -> bool {
    let Some(stream) = std::env::var_os("JOURNAL_STREAM") else { return false };
    let Some((dev, ino)) = stream.to_str().and_then(|s| s.split_once(':')) else { return false };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else { return false };
    rustix::fs::fstat(std::io::stderr()).is_ok_and(|st| st.st_dev == dev && st.st_ino == ino)
}

/// `<priority>target: message fields`, every line of a multi-line message prefixed.
struct Journal;

impl<S, N> FormatEvent<S, N> for Journal
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let priority = match *event.metadata().level() {
            Level::ERROR => 3,
            Level::WARN => 4,
            Level::INFO => 6,
            Level::DEBUG | Level::TRACE => 7,
        };
        let mut text = String::new();
        ctx.field_format().format_fields(Writer::new(&mut text), event)?;
        let target = event.metadata().target();
        for line in text.lines() {
            writeln!(writer, "<{priority}>{target}: {line}")?;
        }
        Ok(())
    }
}
