//! `kronos`: the one command-line program of the Kronos suite.

use std::process::ExitCode;

use clap::Parser;

mod cli;
mod cmd;
mod logging;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    // Process-wide allocator tuning for the forecaster (the library leaves it to the program).
    kronos_forecast::keep_freed_memory();
    logging::init(cli.log_json, cli.verbose);
    match cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // `{:#}` prints the whole cause chain on one line; secrets were never put into errors, and the
            // redactor masks any that slipped through.
            let msg = kronos_common::Redactor::global().redact(&format!("{e:#}"));
            eprintln!("error: {msg}");
            ExitCode::from(2)
        }
    }
}
