//! Load generators for the keeper's API: `kronos bench api` (HTTP reads at fixed concurrency and open-loop at fixed
//! rates, [`http`]) and `kronos bench ws` (many WebSocket subscribers, [`ws`]). Both measure latency in a
//! [`Latencies`] histogram and pin the server and the generator to one core each ([`pin_command`],
//! [`pin_this_thread`]), so a throughput means one core of server.

pub mod http;
pub mod ws;

use std::time::Duration;

use anyhow::{Context, Result};

/// Latencies in microseconds (1 µs to 60 s, three significant digits).
pub struct Latencies {
    h: hdrhistogram::Histogram<u64>,
}

impl Default for Latencies {
    fn default() -> Self {
        Latencies { h: hdrhistogram::Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds") }
    }
}

impl Latencies {
    pub fn record(&mut self, d: Duration) {
        self.h.saturating_record((d.as_micros() as u64).max(1));
    }

    pub fn add(&mut self, other: &Latencies) {
        // Same bounds on both sides: adding cannot fail.
        let _ = self.h.add(&other.h);
    }

    pub fn count(&self) -> u64 {
        self.h.len()
    }

    /// The latency at percentile `p` (0–100) in milliseconds.
    pub fn ms(&self, p: f64) -> f64 {
        self.h.value_at_quantile(p / 100.0) as f64 / 1000.0
    }

    pub fn max_ms(&self) -> f64 {
        self.h.max() as f64 / 1000.0
    }

    /// `p50 … p99 … p99.9 … max …` in milliseconds.
    pub fn summary(&self) -> String {
        format!(
            "p50 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms, max {:.3} ms",
            self.ms(50.0),
            self.ms(99.0),
            self.ms(99.9),
            self.max_ms()
        )
    }
}

/// The cores this machine has (those this process may run on).
pub fn cores() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

/// A set of cores, as `--server-core`/`--client-core` take it: cores and ranges, comma-separated (`0`, `0-3`, `1,3`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cores(pub Vec<usize>);

impl std::str::FromStr for Cores {
    type Err = String;

    fn from_str(s: &str) -> Result<Cores, String> {
        let mut cores = Vec::new();
        for part in s.split(',').map(str::trim) {
            let num = |x: &str| x.trim().parse::<usize>().map_err(|_| format!("{x:?} is not a core number (in {s:?})"));
            let (from, to) = match part.split_once('-') {
                Some((a, b)) => (num(a)?, num(b)?),
                None => (num(part)?, num(part)?),
            };
            if from > to {
                return Err(format!("{part:?}: a range must go up (in {s:?})"));
            }
            if to >= libc::CPU_SETSIZE as usize {
                return Err(format!("core {to} is beyond what a CPU set holds ({})", libc::CPU_SETSIZE));
            }
            for c in from..=to {
                if cores.contains(&c) {
                    return Err(format!("core {c} is named twice (in {s:?})"));
                }
                cores.push(c);
            }
        }
        Ok(Cores(cores))
    }
}

impl std::fmt::Display for Cores {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<String> = self.0.iter().map(|c| c.to_string()).collect();
        f.write_str(&names.join(","))
    }
}

fn cpu_set(cores: &[usize]) -> libc::cpu_set_t {
    // SAFETY: cpu_set_t is a plain bit array: all zeroes is the empty set, and CPU_SET sets one bit of it (a core
    // beyond its size is ignored).
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for &core in cores {
            libc::CPU_SET(core, &mut set);
        }
        set
    }
}

/// Pins the calling thread (and the threads it starts afterwards) to `cores`.
pub fn pin_this_thread(cores: &[usize]) -> Result<()> {
    let set = cpu_set(cores);
    // SAFETY: a valid cpu_set_t of the size passed; 0 is the calling thread.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    anyhow::ensure!(rc == 0, "pinning to cores {cores:?}: {}", std::io::Error::last_os_error());
    Ok(())
}

/// Makes `cmd`'s process (every thread it will have) run on `cores` only.
pub fn pin_command(cmd: &mut tokio::process::Command, cores: &[usize]) {
    let set = cpu_set(cores);
    // SAFETY: between fork and exec only sched_setaffinity runs, which is async-signal-safe and allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Raises this process's open-file limit to `want` (or its hard limit, if lower); child processes inherit it.
/// Returns the limit now in force.
pub fn raise_fd_limit(want: u64) -> Result<u64> {
    kronos_common::http_guard::raise_fd_limit(want).context("raising the open-file limit")
}

/// Resident memory of process `pid` in KiB (`VmRSS` of /proc/PID/status).
pub fn rss_kib(pid: u32) -> Result<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).with_context(|| format!("reading process {pid}"))?;
    parse_rss_kib(&s).ok_or_else(|| anyhow::anyhow!("no VmRSS for process {pid}"))
}

/// `VmRSS:   1234 kB` → 1234.
pub fn parse_rss_kib(status: &str) -> Option<u64> {
    status.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// CPU seconds (user + system) process `pid` has used.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// Seconds the threads of process `pid` spent runnable but waiting for a CPU (the second field of each thread's
/// `/proc/PID/task/TID/schedstat`): how much other processes on its core held it back.
pub fn wait_seconds(pid: u32) -> Option<f64> {
    let mut ns = 0u64;
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).ok()?.flatten() {
        let s = std::fs::read_to_string(t.path().join("schedstat")).unwrap_or_default();
        ns += s.split_whitespace().nth(1).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    }
    Some(ns as f64 / 1e9)
}

/// The value of a Prometheus sample in `/metrics` text: the line whose name is `name` and whose labels contain
/// `label` (empty: any), e.g. `("kronos_http_dropped_total", "reason=\"ws_slow_reader\"")`.
pub fn metric(text: &str, name: &str, label: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (key, value) = l.rsplit_once(' ')?;
        let (n, labels) = key.split_once('{').unwrap_or((key, ""));
        (n == name && labels.contains(label)).then(|| value.parse().ok()).flatten()
    })
}

/// A free loopback port (bound and released; the caller binds it next).
pub fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The machine, as the figures are reported with: CPU model, cores, the widest vector instructions.
pub fn machine() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = info
        .lines()
        .find_map(|l| l.strip_prefix("model name").and_then(|r| r.split_once(':')).map(|(_, m)| m.trim().to_string()))
        .unwrap_or_else(|| "unknown CPU".into());
    let flags = info.lines().find(|l| l.starts_with("flags")).unwrap_or_default();
    let has = |f: &str| flags.split_whitespace().any(|x| x == f);
    let simd = if has("avx512f") {
        "AVX-512"
    } else if has("avx2") {
        "AVX2"
    } else {
        "no AVX2"
    };
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load: Vec<&str> = load.split_whitespace().take(3).collect();
    format!("{model}, {} cores, {simd}; load average {}", cores(), load.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn core_sets_are_read_from_cores_and_ranges() {
        assert_eq!("1".parse::<Cores>(), Ok(Cores(vec![1])));
        assert_eq!("0-3".parse::<Cores>(), Ok(Cores(vec![0, 1, 2, 3])));
        assert_eq!(" 1, 4-5 ".parse::<Cores>(), Ok(Cores(vec![1, 4, 5])));
        assert_eq!(Cores(vec![0, 2]).to_string(), "0,2");
        for bad in ["", "x", "3-1", "1,1", "0-2,2", "-1", "99999"] {
            assert!(bad.parse::<Cores>().is_err(), "{bad:?}");
        }
        assert!("3-1".parse::<Cores>().unwrap_err().contains("must go up"));
    }

    #[test]
    fn rss_and_metrics_are_read_from_their_text() {
        assert_eq!(parse_rss_kib("Name:\tkronos\nVmRSS:\t   5120 kB\nVmSwap: 0 kB\n"), Some(5120));
        assert_eq!(parse_rss_kib("Name:\tkronos\n"), None);
        let m = "# HELP x\nkronos_http_dropped_total{reason=\"idle\"} 1\nkronos_http_dropped_total{reason=\"ws_slow_reader\"} 7\nkronos_ws_skipped_signals_total 12\n";
        assert_eq!(metric(m, "kronos_http_dropped_total", "reason=\"ws_slow_reader\""), Some(7.0));
        assert_eq!(metric(m, "kronos_ws_skipped_signals_total", ""), Some(12.0));
        assert_eq!(metric(m, "kronos_ws_skipped", ""), None);
    }

    #[test]
    fn latencies_report_percentiles_in_milliseconds() {
        let mut l = Latencies::default();
        for us in 1..=1000u64 {
            l.record(Duration::from_micros(us));
        }
        assert_eq!(l.count(), 1000);
        assert!((l.ms(50.0) - 0.5).abs() < 0.01, "{}", l.ms(50.0));
        assert!((l.ms(99.0) - 0.99).abs() < 0.01, "{}", l.ms(99.0));
        let mut m = Latencies::default();
        m.add(&l);
        assert_eq!(m.count(), 1000);
    }
}
