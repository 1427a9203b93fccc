//! `logwarden`: parse the command line and run it.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = logwarden::cli::Cli::parse();
    match logwarden::cli::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("logwarden: {e:#}");
            std::process::ExitCode::from(logwarden::cli::exit_code(&e))
        }
    }
}
