//! A throwaway Redis server on loopback (Debian's `redis-server`, installed by `scripts/setup`): no persistence, a
//! free port, stopped by its own PID (never by name). [`RedisServer::stop`] and [`RedisServer::start_again`] take it
//! down and bring it back on the same port, for reconnect tests.

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `redis-server`; killed on drop.
pub struct RedisServer {
    dir: tempfile::TempDir,
    exe: PathBuf,
    child: Option<Child>,
    pub port: u16,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

fn find_exe() -> anyhow::Result<PathBuf> {
    for p in ["/usr/bin/redis-server", "/usr/local/bin/redis-server"] {
        if std::path::Path::new(p).is_file() {
            return Ok(PathBuf::from(p));
        }
    }
    // Elsewhere on the PATH.
    let out = Command::new("sh").args(["-c", "command -v redis-server"]).output()?;
    let p = String::from_utf8_lossy(&out.stdout).trim().to_string();
    anyhow::ensure!(!p.is_empty(), "redis-server not found: run scripts/setup");
    Ok(PathBuf::from(p))
}

impl RedisServer {
    /// Starts `redis-server` on a free loopback port and waits until it answers `PING`.
    pub fn start() -> anyhow::Result<RedisServer> {
        let exe = find_exe()?;
        let dir = tempfile::Builder::new().prefix("kronos-redis").tempdir()?;
        let mut s = RedisServer { dir, exe, child: None, port: free_port() };
        s.start_again()?;
        Ok(s)
    }

    /// `redis://127.0.0.1:<port>/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Whether the server process is running (started and not stopped).
    pub fn running(&self) -> bool {
        self.child.is_some()
    }

    /// Kills the server (SIGKILL to its own PID: clients see their connections drop) and waits for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the server again on the same port (after [`RedisServer::stop`]); waits until it answers `PING`.
    pub fn start_again(&mut self) -> anyhow::Result<()> {
        anyhow::ensure!(self.child.is_none(), "redis-server is already running on {}", self.port);
        let log = self.dir.path().join("redis.log");
        let child = Command::new(&self.exe)
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--daemonize", "no", "--protected-mode", "no", "--dir"])
            .arg(self.dir.path())
            .arg("--logfile")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| anyhow::anyhow!("starting {}: {e}", self.exe.display()))?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if self.ping() {
                return Ok(());
            }
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    self.child = None;
                    anyhow::bail!(
                        "redis-server exited ({status}) on port {}: {}",
                        self.port,
                        std::fs::read_to_string(&log).unwrap_or_default()
                    );
                }
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "redis-server did not answer PING on {} within 30 s: {}",
                self.port,
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// One `PING` over RESP; true on `+PONG`.
    fn ping(&self) -> bool {
        use std::io::{Read, Write};
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else { return false };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        if s.write_all(b"PING\r\n").is_err() {
            return false;
        }
        let mut buf = [0u8; 7];
        s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}
