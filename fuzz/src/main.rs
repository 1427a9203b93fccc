//! logwarden's fuzz targets for AFL++, in one binary (one link of a DataFusion-sized program
//! instead of five). `scripts/fuzz` builds it instrumented and runs afl-fuzz on it.
//!
//! ```text
//! logwarden-fuzz TARGET                 under afl-fuzz: the persistent loop
//! logwarden-fuzz TARGET FILE...         run TARGET on each file (reproduce a crash)
//! logwarden-fuzz seeds OUT [LOGHUB]     write seed corpora for every target into OUT/TARGET/
//! logwarden-fuzz info TARGET            iterations and timeout, for scripts/fuzz
//! logwarden-fuzz list                   the targets' names
//! ```

mod afl;
mod seeds;
mod targets;

use std::path::Path;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        ["list"] => {
            for t in targets::TARGETS {
                println!("{}", t.name);
            }
            ExitCode::SUCCESS
        }
        ["info", name] => match targets::find(name) {
            Some(t) => {
                println!("{} {}", t.iterations, t.timeout_ms);
                ExitCode::SUCCESS
            }
            None => unknown(name),
        },
        ["seeds", out, rest @ ..] if rest.len() <= 1 => {
            match seeds::write(Path::new(out), rest.first().map(Path::new)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("logwarden-fuzz: failed to write seeds into {out}: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        [name] => match targets::find(name) {
            Some(t) => {
                afl::run(t.iterations, t.run);
                ExitCode::SUCCESS
            }
            None => unknown(name),
        },
        [name, files @ ..] => {
            let Some(t) = targets::find(name) else { return unknown(name) };
            afl::abort_on_panic();
            for f in files {
                match std::fs::read(f) {
                    Ok(data) => {
                        eprintln!("{name}: {f} ({} bytes)", data.len());
                        (t.run)(&data);
                    }
                    Err(e) => {
                        eprintln!("logwarden-fuzz: failed to read {f}: {e}");
                        return ExitCode::FAILURE;
                    }
                }
            }
            eprintln!("{name}: {} inputs, every invariant held", files.len());
            ExitCode::SUCCESS
        }
        [] => {
            eprintln!("usage: logwarden-fuzz list | info TARGET | seeds OUT [LOGHUB] | TARGET [FILE...]");
            ExitCode::from(2)
        }
    }
}

fn unknown(name: &str) -> ExitCode {
    let names: Vec<&str> = targets::TARGETS.iter().map(|t| t.name).collect();
    eprintln!("logwarden-fuzz: no target {name:?}; the targets are {}", names.join(", "));
    ExitCode::from(2)
}
