//! Opening a SQL store: SQLite by default (a file, created with its folder), PostgreSQL by URL, through sqlx's
//! `Any` driver so that one set of statements (`$N` placeholders, `ON CONFLICT` upserts) serves both. Each part
//! applies its own migrations to the pool this returns.

use std::str::FromStr;

use sqlx::any::AnyPoolOptions;
use sqlx::AnyPool;

/// Which database a store talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Why a store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("store URL must start with sqlite: or postgres:// (got '{0}')")]
    Scheme(String),
    #[error("creating {path}: {source}")]
    Folder { path: String, source: std::io::Error },
    #[error("connecting to the store ({url}): {source}")]
    Connect { url: String, source: sqlx::Error },
}

/// Opens a pool. `sqlite:path/to/file.sqlite` (folder created), `sqlite::memory:` (one shared in-memory database
/// per call), or `postgres://user:pass@host:port/db`. SQLite connections use WAL and a 5 s busy timeout.
pub async fn open(url: &str) -> Result<(Backend, AnyPool), DbError> {
    sqlx::any::install_default_drivers();
    let (backend, url) = if let Some(rest) = url.strip_prefix("sqlite:") {
        let path = rest.trim_start_matches("//");
        let (file, query) = path.split_once('?').unwrap_or((path, ""));
        if file != ":memory:" && !file.is_empty() {
            if let Some(dir) = std::path::Path::new(file).parent() {
                if !dir.as_os_str().is_empty() {
                    std::fs::create_dir_all(dir)
                        .map_err(|source| DbError::Folder { path: dir.display().to_string(), source })?;
                }
            }
        }
        if file == ":memory:" {
            // One shared in-memory database per store (each plain `:memory:` connection would get its own).
            static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            (Backend::Sqlite, format!("sqlite:file:kronos-mem-{}-{n}?mode=memory&cache=shared", std::process::id()))
        } else {
            let q = if query.is_empty() { "mode=rwc".to_string() } else { format!("{query}&mode=rwc") };
            (Backend::Sqlite, format!("sqlite://{file}?{q}"))
        }
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        (Backend::Postgres, url.to_string())
    } else {
        return Err(DbError::Scheme(redact_url(url)));
    };
    let pool = AnyPoolOptions::new()
        .max_connections(if backend == Backend::Sqlite { 4 } else { 8 })
        .after_connect(move |conn, _| {
            Box::pin(async move {
                if backend == Backend::Sqlite {
                    // (WAL is refused for in-memory databases; that is harmless.)
                    let _ = sqlx::query("PRAGMA journal_mode=WAL").execute(&mut *conn).await;
                    sqlx::query("PRAGMA busy_timeout=5000").execute(&mut *conn).await?;
                    sqlx::query("PRAGMA synchronous=NORMAL").execute(&mut *conn).await?;
                }
                Ok(())
            })
        })
        .connect(&url)
        .await
        .map_err(|source| DbError::Connect { url: redact_url(&url), source })?;
    Ok((backend, pool))
}

/// A database URL with its password masked.
pub fn redact_url(url: &str) -> String {
    match url::Url::from_str(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_masked() {
        assert_eq!(redact_url("postgres://kronos:hunter2@127.0.0.1:5432/k"), "postgres://kronos:***@127.0.0.1:5432/k");
        assert_eq!(redact_url("sqlite:data/x.sqlite"), "sqlite:data/x.sqlite");
    }

    #[tokio::test]
    async fn bad_schemes_are_named() {
        let e = open("mysql://x").await.unwrap_err();
        assert!(e.to_string().contains("sqlite: or postgres://"), "{e}");
    }
}
