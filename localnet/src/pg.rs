//! A throwaway PostgreSQL server on loopback (Debian's server binaries, installed by `scripts/setup`), and PgBouncer
//! in front of one: for `kronos bench soak` and, through `kronos-testkit` (which compiles this file as its `pg`
//! module, for the crates whose tests do not build this one), for the tests. Each stops what it started, by its own
//! process: the server with `pg_ctl stop`, the bouncer by its PID.

use std::path::PathBuf;
use std::process::Command;

/// A running server; stopped on drop.
pub struct PgServer {
    dir: tempfile::TempDir,
    bin: PathBuf,
    pub port: u16,
    as_postgres: bool,
}

fn bin_dir() -> anyhow::Result<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map_err(|_| {
            anyhow::anyhow!("PostgreSQL server binaries not found under /usr/lib/postgresql: run scripts/setup")
        })?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("initdb").is_file())
        .collect();
    dirs.sort();
    dirs.pop().ok_or_else(|| anyhow::anyhow!("no initdb under /usr/lib/postgresql/*/bin: run scripts/setup"))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

impl PgServer {
    /// Initialises a cluster in a temporary folder and starts it.
    pub fn start() -> anyhow::Result<PgServer> {
        let bin = bin_dir()?;
        let dir = tempfile::Builder::new().prefix("kronos-pg").tempdir()?;
        // initdb refuses to run as root: use the `postgres` account Debian's package creates.
        let as_postgres = unsafe_is_root();
        if as_postgres {
            let ok = Command::new("chown").args(["-R", "postgres:postgres"]).arg(dir.path()).status()?.success();
            anyhow::ensure!(ok, "chown of {} to postgres failed", dir.path().display());
        }
        let port = free_port();
        let s = PgServer { dir, bin, port, as_postgres };
        let data = s.dir.path().join("data");
        s.run("initdb", &["-D", data.to_str().unwrap(), "-A", "trust", "-U", "kronos", "--no-sync", "-E", "UTF8"])?;
        let opts = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off",
            s.dir.path().display()
        );
        let log = s.dir.path().join("log");
        // `-w` returns as soon as the server accepts connections; `-t` only bounds the wait (30 s was passed by a
        // start on a 2-core machine running Chromium and six keeper tests beside it).
        s.run(
            "pg_ctl",
            &["-D", data.to_str().unwrap(), "-o", &opts, "-l", log.to_str().unwrap(), "-w", "-t", "300", "start"],
        )?;
        Ok(s)
    }

    fn run(&self, tool: &str, args: &[&str]) -> anyhow::Result<()> {
        let exe = self.bin.join(tool);
        let out = if self.as_postgres {
            Command::new("runuser").args(["-u", "postgres", "--"]).arg(&exe).args(args).output()?
        } else {
            Command::new(&exe).args(args).output()?
        };
        anyhow::ensure!(
            out.status.success(),
            "{tool} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    }

    /// Restarts the server (fast shutdown: clients are disconnected), on the same port and options.
    pub fn restart(&self) -> anyhow::Result<()> {
        let data = self.dir.path().join("data");
        let log = self.dir.path().join("log");
        self.run(
            "pg_ctl",
            &["-D", data.to_str().unwrap(), "-l", log.to_str().unwrap(), "-m", "fast", "-w", "-t", "300", "restart"],
        )
    }

    /// Connection URL for database `postgres` as user `kronos`.
    pub fn url(&self) -> String {
        format!("postgres://kronos@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let data = self.dir.path().join("data");
        let _ = self.run("pg_ctl", &["-D", data.to_str().unwrap_or_default(), "-m", "immediate", "stop"]);
    }
}

/// PgBouncer on loopback in front of a [`PgServer`], in transaction pooling mode (a client's server connection can
/// change after every transaction, so nothing may rely on session state). Stopped on drop.
pub struct PgBouncer {
    dir: tempfile::TempDir,
    child: std::process::Child,
    pub port: u16,
}

impl PgBouncer {
    /// Starts `pgbouncer` (installed by `scripts/setup`) in front of `pg` with `pool_size` server connections.
    pub fn start(pg: &PgServer, pool_size: u32) -> anyhow::Result<PgBouncer> {
        let exe = ["/usr/sbin/pgbouncer", "/usr/bin/pgbouncer"]
            .into_iter()
            .find(|p| std::path::Path::new(p).is_file())
            .ok_or_else(|| anyhow::anyhow!("pgbouncer not found: run scripts/setup"))?;
        let dir = tempfile::Builder::new().prefix("kronos-pgbouncer").tempdir()?;
        let port = free_port();
        let d = dir.path().display();
        std::fs::write(dir.path().join("users.txt"), "\"kronos\" \"\"\n")?;
        let ini = format!(
            "[databases]\npostgres = host=127.0.0.1 port={} dbname=postgres user=kronos\n\n[pgbouncer]\n\
             listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\nauth_type = trust\n\
             auth_file = {d}/users.txt\npool_mode = transaction\ndefault_pool_size = {pool_size}\n\
             max_client_conn = 200\nignore_startup_parameters = extra_float_digits\nlogfile = {d}/pgbouncer.log\n",
            pg.port
        );
        let conf = dir.path().join("pgbouncer.ini");
        std::fs::write(&conf, ini)?;
        // PgBouncer refuses to run as root: it switches to the `postgres` account itself (`-u`), so that the child
        // is PgBouncer's own process and stopping it stops the bouncer (a `runuser` wrapper killed left it running).
        let root = unsafe_is_root();
        if root {
            let ok = Command::new("chown").args(["-R", "postgres:postgres"]).arg(dir.path()).status()?.success();
            anyhow::ensure!(ok, "chown of {} to postgres failed", dir.path().display());
        }
        let mut cmd = Command::new(exe);
        if root {
            cmd.args(["-u", "postgres"]);
        }
        let child = cmd.arg(&conf).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null()).spawn()?;
        let b = PgBouncer { dir, child, port };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            anyhow::ensure!(
                std::time::Instant::now() < deadline,
                "pgbouncer did not listen on {port}: {}",
                std::fs::read_to_string(b.dir.path().join("pgbouncer.log")).unwrap_or_default()
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        Ok(b)
    }

    /// Connection URL for database `postgres` as user `kronos`, through the bouncer.
    pub fn url(&self) -> String {
        format!("postgres://kronos@127.0.0.1:{}/postgres", self.port)
    }
}

impl PgBouncer {
    /// The bouncer's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn unsafe_is_root() -> bool {
    // `id -u` avoids an unsafe libc call.
    Command::new("id").arg("-u").output().map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0").unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bouncer stops with its handle: nothing listens on its port afterwards (the old `runuser` wrapper was
    /// killed and PgBouncer, its child, kept running after every test).
    #[test]
    fn a_dropped_bouncer_stops_listening() {
        let pg = PgServer::start().expect("PostgreSQL starts (scripts/setup installs it)");
        let b = PgBouncer::start(&pg, 1).expect("pgbouncer starts (scripts/setup installs it)");
        let port = b.port;
        assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
        drop(b);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            assert!(std::time::Instant::now() < deadline, "pgbouncer still listens on {port} after it was dropped");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
}
