//! `logwarden`: parse the command line and run it.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = logwarden::cli::Cli::parse();
    match logwarden::cli::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            logwarden::logging::report_fatal(&format!("logwarden: {e:#}"));
            std::process::ExitCode::from(logwarden::cli::exit_code(&e))
        }
    }
}
