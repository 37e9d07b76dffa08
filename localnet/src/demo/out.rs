//! The demo's stdout: its own lines only (issue 15). The kronos-market program runs natively in the local Solana
//! bank (solana-program-test), where its `msg!` logs (`Instruction: …` for every instruction, hundreds in a short
//! run) are printed by solana-msg's `sol_log` with `println!`: off-chain it writes straight to the process's stdout,
//! never through the `log` crate nor a log collector, so no log filter can hold them back. With the Solana chain the
//! demo moves the process's stdout (file descriptor 1) to a log file, [`others_to`], and writes its own lines
//! ([`say!`](crate::say), [`print`]) to the stdout it had. The program runs as before.

use std::fs::File;
use std::io::{IsTerminal, Write};
use std::path::Path;
use std::sync::OnceLock;

use anyhow::{Context, Result};
use parking_lot::Mutex;

/// The stdout the demo started with, once [`others_to`] moved the process's stdout to a file.
static DEMO_STDOUT: OnceLock<Mutex<File>> = OnceLock::new();

/// From now on whatever the process prints to stdout goes to `path` (created), except the demo's own lines. Once
/// per process (a second call is an error).
#[cfg(unix)]
pub fn others_to(path: &Path) -> Result<()> {
    use std::os::fd::{AsFd, AsRawFd};
    let log = File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut stdout = std::io::stdout().lock();
    stdout.flush()?;
    let demo = File::from(stdout.as_fd().try_clone_to_owned().context("duplicating stdout")?);
    anyhow::ensure!(DEMO_STDOUT.set(Mutex::new(demo)).is_ok(), "the demo's stdout was already moved");
    // SAFETY: dup2 on two open descriptors (`log` is open until the end of this call; 1 is the process's stdout,
    // locked above so that nothing is half written to it); it replaces descriptor 1 atomically.
    let rc = unsafe { libc::dup2(log.as_raw_fd(), stdout.as_fd().as_raw_fd()) };
    anyhow::ensure!(rc >= 0, "moving stdout to {}: {}", path.display(), std::io::Error::last_os_error());
    Ok(())
}

/// Other systems: stdout is left as it is.
#[cfg(not(unix))]
pub fn others_to(_path: &Path) -> Result<()> {
    Ok(())
}

/// Writes `s` to the demo's stdout.
pub fn print(s: &str) {
    match DEMO_STDOUT.get() {
        Some(f) => {
            let _ = f.lock().write_all(s.as_bytes());
        }
        None => {
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(s.as_bytes());
            let _ = out.flush();
        }
    }
}

/// Whether the demo's stdout is a terminal.
pub fn is_terminal() -> bool {
    match DEMO_STDOUT.get() {
        Some(f) => f.lock().is_terminal(),
        None => std::io::stdout().is_terminal(),
    }
}

/// `println!` to the demo's stdout ([`print`]).
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::demo::out::print(&format!("{}\n", format_args!($($arg)*)))
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Only a process of its own can move its stdout: this test runs itself again (`--exact`, an env var set) and
    /// reads what the child printed: the demo's line on its stdout, a plain `println!` (the program's `msg!`) in the file.
    #[test]
    fn a_println_goes_to_the_file_and_the_demo_s_lines_to_stdout() {
        const CHILD: &str = "KRONOS_DEMO_OUT_CHILD";
        if let Some(path) = std::env::var_os(CHILD) {
            others_to(Path::new(&path)).unwrap();
            println!("Instruction: StartRound");
            crate::say!("the demo's own line");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("program.log");
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "demo::out::tests::a_println_goes_to_the_file_and_the_demo_s_lines_to_stdout",
                "--nocapture",
            ])
            .env(CHILD, &file)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.contains("the demo's own line\n"), "{stdout}");
        assert!(!stdout.contains("Instruction:"), "{stdout}");
        assert_eq!(
            std::fs::read_to_string(&file).unwrap().lines().filter(|l| l.contains("Instruction: StartRound")).count(),
            1
        );
    }
}
