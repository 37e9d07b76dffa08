//! Log set-up: human-readable or JSON lines on stderr, every line passed through the secret redactor.

use kronos_common::Redactor;
use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. `RUST_LOG` overrides the level (`-v` = debug, `-vv` = trace).
pub(crate) fn init(json: bool, verbose: u8) {
    let default = match verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        // `solana`/`tarpc`: the demo's local Solana bank (solana-program-test) logs every bank and metric at info (some
        // metrics at warn) and warns on every banks-client call (tarpc, "OpenTelemetry subscriber not installed").
        EnvFilter::new(format!(
            "{default},hyper=warn,reqwest=warn,alloy_transport_http=warn,sqlx=warn,h2=warn,solana=error,tarpc=error"
        ))
    });
    let writer = Redactor::make_writer(std::io::stderr);
    // Colour only on a terminal: a log file or a pipe gets plain text, never ANSI escape codes.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder =
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(writer).with_target(false).with_ansi(ansi);
    let _ = if json { builder.json().try_init() } else { builder.try_init() };
}
