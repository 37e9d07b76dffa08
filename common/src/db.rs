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

// ---- typed rows ------------------------------------------------------------------------------------------------
//
// The stores map rows with `#[derive(sqlx::FromRow)]` (columns by name) through [`decode`] / [`decode_all`], which name
// the table and the column of a value that does not read back as its type. Columns whose stored form is not the
// Rust type read through the adapters below with `#[sqlx(try_from = "…")]`: text parsed with `FromStr`
// ([`Parsed`], [`ParsedOpt`]; e.g. exact decimals and enums stored by name), 0/1 integers ([`Flag`], [`OptFlag`];
// the stores keep booleans as integers, the same on SQLite and PostgreSQL) and unsigned values in signed columns
// ([`NonNegative`]). The check is in the adapter's `Decode` and the `From` after it cannot fail: sqlx 0.9's derive
// reports the error of a fallible `TryFrom` as "unprintable error", while a `Decode` error keeps its message.

/// A stored row that does not read back as its type: the table, the column (when sqlx names one) and why.
#[derive(Debug, thiserror::Error)]
#[error("table {table}{}: {source}", column.as_deref().map(|c| format!(", column {c}")).unwrap_or_default())]
pub struct RowError {
    pub table: &'static str,
    pub column: Option<String>,
    #[source]
    pub source: sqlx::error::BoxDynError,
}

impl RowError {
    /// Names the table of a sqlx error met while reading one of its rows.
    pub fn of(table: &'static str, e: sqlx::Error) -> RowError {
        match e {
            sqlx::Error::ColumnDecode { index, source } => {
                RowError { table, column: Some(index.trim_matches('"').to_string()), source }
            }
            sqlx::Error::ColumnNotFound(c) => {
                RowError { table, column: Some(c.clone()), source: sqlx::Error::ColumnNotFound(c).into() }
            }
            other => RowError { table, column: None, source: other.into() },
        }
    }
}

/// One row of `table` as `T` (columns by name).
pub fn decode<T>(table: &'static str, row: &sqlx::any::AnyRow) -> Result<T, RowError>
where
    T: for<'r> sqlx::FromRow<'r, sqlx::any::AnyRow>,
{
    T::from_row(row).map_err(|e| RowError::of(table, e))
}

/// Every row of `table` as `T` (columns by name); the first that does not read is the error.
pub fn decode_all<T>(table: &'static str, rows: &[sqlx::any::AnyRow]) -> Result<Vec<T>, RowError>
where
    T: for<'r> sqlx::FromRow<'r, sqlx::any::AnyRow>,
{
    rows.iter().map(|r| decode(table, r)).collect()
}

/// A text column parsed with `FromStr`; a value that does not parse is an error naming it and the type.
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed<T>(pub T);

/// A nullable text column parsed with `FromStr` (NULL is `None`).
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedOpt<T>(pub Option<T>);

/// A stored text that is not a value of the column's type.
#[derive(Debug, thiserror::Error)]
#[error("'{value}' is not a {ty}: {reason}")]
pub struct BadValue {
    pub value: String,
    pub ty: &'static str,
    pub reason: String,
}

fn parse_text<T>(value: sqlx::any::AnyValueRef<'_>) -> Result<T, sqlx::error::BoxDynError>
where
    T: FromStr,
    T::Err: std::fmt::Display,
{
    let s = <String as sqlx::Decode<sqlx::Any>>::decode(value)?;
    s.parse::<T>().map_err(|e| {
        let ty = std::any::type_name::<T>();
        Box::new(BadValue { ty: ty.rsplit("::").next().unwrap_or(ty), reason: e.to_string(), value: s }) as _
    })
}

impl<T> sqlx::Type<sqlx::Any> for Parsed<T> {
    fn type_info() -> sqlx::any::AnyTypeInfo {
        <String as sqlx::Type<sqlx::Any>>::type_info()
    }
    fn compatible(ty: &sqlx::any::AnyTypeInfo) -> bool {
        <String as sqlx::Type<sqlx::Any>>::compatible(ty)
    }
}

impl<'r, T> sqlx::Decode<'r, sqlx::Any> for Parsed<T>
where
    T: FromStr,
    T::Err: std::fmt::Display,
{
    fn decode(value: sqlx::any::AnyValueRef<'r>) -> Result<Self, sqlx::error::BoxDynError> {
        parse_text(value).map(Parsed)
    }
}

impl<T> sqlx::Type<sqlx::Any> for ParsedOpt<T> {
    fn type_info() -> sqlx::any::AnyTypeInfo {
        <String as sqlx::Type<sqlx::Any>>::type_info()
    }
    fn compatible(ty: &sqlx::any::AnyTypeInfo) -> bool {
        <String as sqlx::Type<sqlx::Any>>::compatible(ty)
    }
}

impl<'r, T> sqlx::Decode<'r, sqlx::Any> for ParsedOpt<T>
where
    T: FromStr,
    T::Err: std::fmt::Display,
{
    fn decode(value: sqlx::any::AnyValueRef<'r>) -> Result<Self, sqlx::error::BoxDynError> {
        if sqlx::ValueRef::is_null(&value) {
            return Ok(ParsedOpt(None));
        }
        parse_text(value).map(|v| ParsedOpt(Some(v)))
    }
}

impl<T> From<ParsedOpt<T>> for Option<T> {
    fn from(p: ParsedOpt<T>) -> Option<T> {
        p.0
    }
}

impl From<Parsed<crate::Decimal>> for crate::Decimal {
    fn from(p: Parsed<crate::Decimal>) -> crate::Decimal {
        p.0
    }
}

/// A boolean stored as the integer 0 or 1; any other value is an error naming it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flag(pub bool);

/// A nullable boolean stored as the integer 0 or 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OptFlag(pub Option<bool>);

/// A stored flag that is neither 0 nor 1.
#[derive(Debug, thiserror::Error)]
#[error("{0} is not a flag (0 or 1)")]
pub struct BadFlag(pub i64);

fn flag(value: sqlx::any::AnyValueRef<'_>) -> Result<bool, sqlx::error::BoxDynError> {
    match <i64 as sqlx::Decode<sqlx::Any>>::decode(value)? {
        0 => Ok(false),
        1 => Ok(true),
        n => Err(Box::new(BadFlag(n))),
    }
}

impl sqlx::Type<sqlx::Any> for Flag {
    fn type_info() -> sqlx::any::AnyTypeInfo {
        <i64 as sqlx::Type<sqlx::Any>>::type_info()
    }
    fn compatible(ty: &sqlx::any::AnyTypeInfo) -> bool {
        <i64 as sqlx::Type<sqlx::Any>>::compatible(ty)
    }
}

impl<'r> sqlx::Decode<'r, sqlx::Any> for Flag {
    fn decode(value: sqlx::any::AnyValueRef<'r>) -> Result<Self, sqlx::error::BoxDynError> {
        flag(value).map(Flag)
    }
}

impl sqlx::Type<sqlx::Any> for OptFlag {
    fn type_info() -> sqlx::any::AnyTypeInfo {
        <i64 as sqlx::Type<sqlx::Any>>::type_info()
    }
    fn compatible(ty: &sqlx::any::AnyTypeInfo) -> bool {
        <i64 as sqlx::Type<sqlx::Any>>::compatible(ty)
    }
}

impl<'r> sqlx::Decode<'r, sqlx::Any> for OptFlag {
    fn decode(value: sqlx::any::AnyValueRef<'r>) -> Result<Self, sqlx::error::BoxDynError> {
        if sqlx::ValueRef::is_null(&value) {
            return Ok(OptFlag(None));
        }
        flag(value).map(|b| OptFlag(Some(b)))
    }
}

/// A count or a time kept in a signed `BIGINT` that must not be negative.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NonNegative(pub u64);

/// A stored count or time below zero.
#[derive(Debug, thiserror::Error)]
#[error("{0} is negative")]
pub struct Negative(pub i64);

impl sqlx::Type<sqlx::Any> for NonNegative {
    fn type_info() -> sqlx::any::AnyTypeInfo {
        <i64 as sqlx::Type<sqlx::Any>>::type_info()
    }
    fn compatible(ty: &sqlx::any::AnyTypeInfo) -> bool {
        <i64 as sqlx::Type<sqlx::Any>>::compatible(ty)
    }
}

impl<'r> sqlx::Decode<'r, sqlx::Any> for NonNegative {
    fn decode(value: sqlx::any::AnyValueRef<'r>) -> Result<Self, sqlx::error::BoxDynError> {
        let n = <i64 as sqlx::Decode<sqlx::Any>>::decode(value)?;
        u64::try_from(n).map(NonNegative).map_err(|_| Box::new(Negative(n)) as _)
    }
}

impl From<NonNegative> for u64 {
    fn from(n: NonNegative) -> u64 {
        n.0
    }
}

impl From<Flag> for bool {
    fn from(f: Flag) -> bool {
        f.0
    }
}

impl From<OptFlag> for Option<bool> {
    fn from(f: OptFlag) -> Option<bool> {
        f.0
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
