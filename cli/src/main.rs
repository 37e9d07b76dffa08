//! `kronos`: the one command-line program of the Kronos suite.

use std::process::ExitCode;

use clap::Parser;

mod cli;
mod cmd;
mod logging;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    // A forecast allocates and frees buffers of a few MB; glibc's defaults give such blocks back to the kernel at
    // once and every forecast pays for faulting them in again (about a fifth of its time): keep up to 64 MiB of freed
    // memory for reuse. A process-wide setting, so the program makes it, never the forecaster's library.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tuning parameters; called once, before any other thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 64 << 20);
    }
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
