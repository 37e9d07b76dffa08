//! The keeper's store (sqlx): SQLite by default (a file under `data/`), PostgreSQL by URL.
//!
//! One set of SQL statements serves both backends (`$N` placeholders, `ON CONFLICT` upserts, portable types);
//! each backend has its own migrations folder for the few DDL differences. Money and prices are stored as decimal
//! text, never as floating point. The chain stays the source of truth: after a crash the keeper resumes from chain
//! state plus this record (pending transactions, salts of unrevealed predictions).

use anyhow::{Context, Result};
pub use kronos_api_types::{Outcome, RoundState};
use kronos_common::db::{decode, decode_all, Flag, OptFlag, Parsed, ParsedOpt};
use kronos_contracts::{CancelReason, CheckpointStatus};
use serde::{Serialize, Serializer};
use sqlx::any::AnyRow;
use sqlx::AnyPool;

pub use kronos_common::db::Backend;

/// The store.
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    pub backend: Backend,
    /// When set (a market driver's store on PostgreSQL), the rows this store writes for the market are written only
    /// while the term in the slot still holds the market's lease (checked by the database in the same statement).
    fence: Option<FenceSlot>,
    /// Statements run through [`Store::exec`] by this store and its clones (see [`Store::writes`]).
    writes: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

/// A prediction's reveal: the transaction (`-` when the prediction can no longer be revealed), the round's outcome,
/// and the score the registry gave it (none for a voided round).
#[derive(Debug, Clone, Copy)]
pub struct Reveal<'a> {
    pub tx: &'a str,
    pub outcome: Outcome,
    pub hit: Option<bool>,
    pub brier: Option<i64>,
}

/// The lease term a fenced store writes under: `None` until the driver leads (writes are then refused).
pub type FenceSlot = std::sync::Arc<parking_lot::Mutex<Option<FenceToken>>>;

/// A lease term: who holds which market under which epoch (Kleppmann's fencing token).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FenceToken {
    pub chain: String,
    pub market_id: i64,
    pub holder: String,
    pub epoch: i64,
}

/// A write refused because the writer no longer holds the lease term it started with.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{chain} market {market_id}: the lease term {epoch} of {holder} is over; write refused")]
pub struct Fenced {
    pub chain: String,
    pub market_id: i64,
    pub holder: String,
    pub epoch: i64,
}

/// A keeper process's exclusive claim on its SQLite store file: an OS lock (`flock`) on `<file>.keeper-lock` next to
/// it, held while the claim lives and released by the system when the process ends (even by SIGKILL). A second
/// keeper process on the same file is refused ([`SqliteInUse`]): with SQLite there are no leases, and two keepers
/// would both send every transaction. Readers (`kronos status`, the API) open the store without a claim.
#[derive(Debug)]
pub struct SqliteClaim {
    pub lock: std::path::PathBuf,
    _file: std::fs::File,
}

/// Another keeper process holds the claim on a SQLite store file.
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "keeper.store: another keeper process{} runs on the SQLite file {} (it holds {}); two keepers on one SQLite file \
     would both send every transaction: give each keeper its own file, or share PostgreSQL (leases)",
    .pid.map(|p| format!(" (pid {p})")).unwrap_or_default(),
    .file.display(),
    .lock.display()
)]
pub struct SqliteInUse {
    pub file: std::path::PathBuf,
    pub lock: std::path::PathBuf,
    /// The holder's process id, as it wrote it in the lock file.
    pub pid: Option<u32>,
}

/// The file of a SQLite store URL (`sqlite:path`, `sqlite://path`, as `kronos_common::db::open` reads them); `None`
/// for an in-memory database or another backend.
fn sqlite_file(url: &str) -> Option<std::path::PathBuf> {
    let rest = url.strip_prefix("sqlite:")?.trim_start_matches("//");
    let (file, query) = rest.split_once('?').unwrap_or((rest, ""));
    if file.is_empty() || file == ":memory:" || file.starts_with("file:") || query.contains("mode=memory") {
        return None;
    }
    Some(std::path::PathBuf::from(file))
}

/// Claims the SQLite store file of `url` for this keeper process (see [`SqliteClaim`]); `Ok(None)` for PostgreSQL
/// (leases) and in-memory stores. Err: [`SqliteInUse`] when another process holds it, or the lock file cannot be
/// opened (named).
pub fn claim_sqlite(url: &str) -> Result<Option<SqliteClaim>> {
    use std::io::{Read, Seek, Write};
    let Some(file) = sqlite_file(url) else { return Ok(None) };
    let mut name = file.clone().into_os_string();
    name.push(".keeper-lock");
    let lock = std::path::PathBuf::from(name);
    if let Some(dir) = lock.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("keeper.store: cannot create {}", dir.display()))?;
    }
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&lock)
        .with_context(|| format!("keeper.store: cannot open the lock file {}", lock.display()))?;
    match f.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut text = String::new();
            let _ = f.read_to_string(&mut text);
            return Err(SqliteInUse { file, lock, pid: text.trim().parse().ok() }.into());
        }
        Err(std::fs::TryLockError::Error(e)) => {
            return Err(anyhow::Error::new(e).context(format!("keeper.store: cannot lock {}", lock.display())))
        }
    }
    // Who holds it, for the next one's message.
    f.set_len(0)?;
    f.rewind()?;
    write!(f, "{}", std::process::id())?;
    Ok(Some(SqliteClaim { lock, _file: f }))
}

impl Fenced {
    fn of(t: &FenceToken) -> Fenced {
        Fenced { chain: t.chain.clone(), market_id: t.market_id, holder: t.holder.clone(), epoch: t.epoch }
    }
}

/// A market's lease row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LeaseRow {
    pub chain: String,
    pub market_id: i64,
    /// The holder's keeper id.
    pub holder: String,
    /// The holding process's instance id (random per process): two processes given one keeper id are told apart.
    /// Stored in the `holder` column as `<keeper_id>/<instance>`; empty for a holder written without one.
    pub instance: String,
    pub epoch: i64,
    /// When this term began (database clock, ms).
    pub since_ms: i64,
    /// When it was last renewed (database clock, ms).
    pub renewed_ms: i64,
    pub expires_ms: i64,
    /// The database's clock when the row was read (ms).
    pub db_now_ms: i64,
    /// Whether the statement that returned the row wrote it (took or renewed the lease); a keeper leads only then.
    #[serde(skip)]
    pub wrote: bool,
}

/// Splits a stored lease holder `<keeper_id>/<instance>` (the instance never holds a `/`).
pub fn split_holder(stored: &str) -> (String, String) {
    match stored.rsplit_once('/') {
        Some((id, inst)) => (id.to_string(), inst.to_string()),
        None => (stored.to_string(), String::new()),
    }
}

/// A market as the keeper knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct MarketRow {
    pub chain: String,
    pub market_id: i64,
    pub contract: String,
    pub feed: String,
    pub sequencer: Option<String>,
    pub token: String,
    pub pair: Option<String>,
    pub genesis: i64,
    pub interval_s: i64,
    pub settle_window_s: i64,
    pub max_price_age_s: i64,
    pub feed_decimals: i64,
}

/// A recorded checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct CheckpointRow {
    pub chain: String,
    pub market_id: i64,
    pub idx: i64,
    pub ts: i64,
    pub round_id: String,
    pub price: String,
    /// Stored by name (`valid`, `stale`, …); another stored text is an error on read.
    #[sqlx(try_from = "Known<CheckpointStatus>")]
    #[serde(serialize_with = "as_text")]
    pub status: CheckpointStatus,
    pub tx_hash: Option<String>,
    pub block: Option<i64>,
    pub delay_blocks: Option<i64>,
}

/// A round's latest known state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct RoundRow {
    pub chain: String,
    pub market_id: i64,
    pub epoch: i64,
    /// Stored by name (`locked`, `settled`, `cancelled`: the API's wire strings); another stored text is an error on
    /// read.
    #[sqlx(try_from = "Known<RoundState>")]
    pub state: RoundState,
    pub lock_price: Option<String>,
    pub close_price: Option<String>,
    /// Stored by name (`up`, `down`, `tie`, `none`: the API's wire strings); another stored text is an error on read.
    #[sqlx(try_from = "KnownOpt<Outcome>")]
    pub outcome: Option<Outcome>,
    /// Stored by name (`lock_price_unusable`, …); another stored text is an error on read.
    #[sqlx(try_from = "KnownOpt<CancelReason>")]
    #[serde(serialize_with = "as_text_opt")]
    pub reason: Option<CancelReason>,
    pub up_wei: String,
    pub down_wei: String,
    pub reward_wei: Option<String>,
    pub treasury_fee_wei: Option<String>,
    pub delay_blocks: Option<i64>,
}

/// A transaction the keeper signed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct TxRow {
    pub id: i64,
    pub chain: String,
    pub signer: String,
    pub action: String,
    pub nonce: i64,
    pub tx_hash: String,
    /// Stored by name; another stored text is an error on read.
    #[sqlx(try_from = "Known<TxStatus>")]
    #[serde(serialize_with = "as_text")]
    pub status: TxStatus,
    pub max_fee_wei: String,
    pub priority_fee_wei: String,
    pub gas_limit: i64,
    pub sent_at: i64,
    pub mined_block: Option<i64>,
    pub gas_used: Option<i64>,
    pub error: Option<String>,
}

/// Where a signed transaction stands, as the `transactions.status` column stores it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxStatus {
    /// Recorded before it is sent.
    Signed,
    /// Sent, not mined.
    Pending,
    /// Mined with success.
    Confirmed,
    /// Mined and reverted, or refused by the node.
    Failed,
    /// Another transaction with its nonce was mined (a replacement of it).
    Replaced,
    /// Given up: its nonce was used by another transaction, or it was left open by a previous run.
    Dropped,
}

impl TxStatus {
    pub const ALL: [TxStatus; 6] = [
        TxStatus::Signed,
        TxStatus::Pending,
        TxStatus::Confirmed,
        TxStatus::Failed,
        TxStatus::Replaced,
        TxStatus::Dropped,
    ];

    /// The stored form.
    pub const fn as_str(self) -> &'static str {
        match self {
            TxStatus::Signed => "signed",
            TxStatus::Pending => "pending",
            TxStatus::Confirmed => "confirmed",
            TxStatus::Failed => "failed",
            TxStatus::Replaced => "replaced",
            TxStatus::Dropped => "dropped",
        }
    }

    /// Not final yet: recorded before sending, or sent and not mined. [`Store::open_txs`] selects these.
    pub const fn is_open(self) -> bool {
        match self {
            TxStatus::Signed | TxStatus::Pending => true,
            TxStatus::Confirmed | TxStatus::Failed | TxStatus::Replaced | TxStatus::Dropped => false,
        }
    }

    /// The SQL list of the open statuses' stored forms, `'signed', 'pending'` (the one place it is spelled).
    fn open_sql_list() -> String {
        let open = TxStatus::ALL.into_iter().filter(|t| t.is_open());
        open.map(|t| format!("'{}'", t.as_str())).collect::<Vec<_>>().join(", ")
    }
}

impl std::fmt::Display for TxStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A stored text that is no [`TxStatus`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is no transaction status (signed, pending, confirmed, failed, replaced, dropped)")]
pub struct UnknownTxStatus(pub String);

impl std::str::FromStr for TxStatus {
    type Err = UnknownTxStatus;

    fn from_str(s: &str) -> Result<TxStatus, UnknownTxStatus> {
        TxStatus::ALL.into_iter().find(|t| t.as_str() == s).ok_or_else(|| UnknownTxStatus(s.to_string()))
    }
}

/// A text column that must name a value of `T` (checked on read: another text is an error naming it). A
/// keeper-local type so that `From` can be implemented for it.
struct Known<T>(T);

/// A nullable [`Known`].
struct KnownOpt<T>(Option<T>);

impl<T> sqlx::Type<sqlx::Any> for Known<T> {
    fn type_info() -> sqlx::any::AnyTypeInfo {
        <String as sqlx::Type<sqlx::Any>>::type_info()
    }
    fn compatible(ty: &sqlx::any::AnyTypeInfo) -> bool {
        <String as sqlx::Type<sqlx::Any>>::compatible(ty)
    }
}

impl<'r, T> sqlx::Decode<'r, sqlx::Any> for Known<T>
where
    T: std::str::FromStr + std::fmt::Display,
    T::Err: std::fmt::Display,
{
    fn decode(value: sqlx::any::AnyValueRef<'r>) -> Result<Self, sqlx::error::BoxDynError> {
        Ok(Known(<Parsed<T> as sqlx::Decode<sqlx::Any>>::decode(value)?.0))
    }
}

impl<T> sqlx::Type<sqlx::Any> for KnownOpt<T> {
    fn type_info() -> sqlx::any::AnyTypeInfo {
        <String as sqlx::Type<sqlx::Any>>::type_info()
    }
    fn compatible(ty: &sqlx::any::AnyTypeInfo) -> bool {
        <String as sqlx::Type<sqlx::Any>>::compatible(ty)
    }
}

impl<'r, T> sqlx::Decode<'r, sqlx::Any> for KnownOpt<T>
where
    T: std::str::FromStr + std::fmt::Display,
    T::Err: std::fmt::Display,
{
    fn decode(value: sqlx::any::AnyValueRef<'r>) -> Result<Self, sqlx::error::BoxDynError> {
        Ok(KnownOpt(<ParsedOpt<T> as sqlx::Decode<sqlx::Any>>::decode(value)?.0))
    }
}

/// `From` for each enum column's type (a blanket impl over `T` is not allowed for a foreign `T`).
macro_rules! known_columns {
    ($($t:ty),* $(,)?) => {$(
        impl From<Known<$t>> for $t {
            fn from(k: Known<$t>) -> $t {
                k.0
            }
        }

        impl From<KnownOpt<$t>> for Option<$t> {
            fn from(k: KnownOpt<$t>) -> Option<$t> {
                k.0
            }
        }
    )*};
}

known_columns!(CheckpointStatus, CancelReason, RoundState, Outcome, TxStatus);

/// Serialises an enum column as its stored text (the contracts' enums have no serde form of their own).
fn as_text<T: std::fmt::Display, S: Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

/// [`as_text`] for a nullable column.
fn as_text_opt<T: std::fmt::Display, S: Serializer>(v: &Option<T>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(v) => s.collect_str(v),
        None => s.serialize_none(),
    }
}

/// A forecast the keeper committed (the salt stays here until the reveal).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct PredictionRow {
    pub chain: String,
    pub market_id: i64,
    pub epoch: i64,
    pub publisher: String,
    pub p_up_bps: i64,
    /// Stored as 0 or 1.
    #[sqlx(try_from = "Flag")]
    pub up: bool,
    pub salt: String,
    pub commitment: String,
    pub commit_tx: Option<String>,
    pub reveal_tx: Option<String>,
    /// Stored by name (`up`, `down`, `tie`, `none`); another stored text is an error on read.
    #[sqlx(try_from = "KnownOpt<Outcome>")]
    pub outcome: Option<Outcome>,
    /// Stored as 0, 1 or NULL.
    #[sqlx(try_from = "OptFlag")]
    pub hit: Option<bool>,
    pub brier: Option<i64>,
}

/// A publisher's on-chain track record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct TrackRecordRow {
    pub chain: String,
    pub publisher: String,
    pub committed: i64,
    pub hits: i64,
    pub misses: i64,
    pub voided: i64,
    pub expired: i64,
    pub brier_sum: String,
}

fn now_s() -> i64 {
    kronos_common::time::now_s() as i64
}

impl Store {
    /// Connects (creating a SQLite file and its folder when needed) and applies migrations.
    pub async fn connect(url: &str) -> Result<Store> {
        let (backend, pool) = kronos_common::db::open(url)
            .await
            .with_context(|| format!("keeper.store: cannot open {}", kronos_common::db::redact_url(url)))?;
        match backend {
            Backend::Sqlite => {
                sqlx::migrate!("./migrations/sqlite").run(&pool).await.context("applying store migrations")?
            }
            Backend::Postgres => {
                // No session advisory lock (sqlx's default): through PgBouncer in transaction mode the lock and its
                // unlock can land on different server connections and the lock stays taken. The migrations run in
                // one transaction instead (one server connection throughout), which also drops the statements the
                // migrator prepared before it ends; when several keepers start at once, all but one fail on the
                // first migration they race for and try again, finding it applied.
                let mut m = sqlx::migrate!("./migrations/postgres");
                m.set_locking(false);
                let mut tries = 0;
                loop {
                    match migrate_in_one_transaction(&pool, &m).await {
                        Ok(()) => break,
                        Err(_) if tries < 10 => {
                            tries += 1;
                            tokio::time::sleep(std::time::Duration::from_millis(100 * tries)).await;
                        }
                        Err(e) => return Err(e.context("applying store migrations")),
                    }
                }
            }
        }
        Ok(Store { pool, backend, fence: None, writes: Default::default() })
    }

    /// Runs a statement. On PostgreSQL each one is its own transaction with an unnamed prepared statement, so that
    /// nothing outlives it on the server connection: through PgBouncer in transaction mode the next statement may
    /// run on another server connection (named, cached statements would be missing there, or clash with another
    /// client's of the same name).
    async fn exec(&self, q: AnyQuery<'_>) -> Result<sqlx::any::AnyQueryResult> {
        let r = match self.backend {
            Backend::Sqlite => q.execute(&self.pool).await?,
            Backend::Postgres => {
                let mut tx = self.pool.begin().await?;
                let r = q.persistent(false).execute(&mut *tx).await?;
                tx.commit().await?;
                r
            }
        };
        self.writes.fetch_add(1, std::sync::atomic::Ordering::Release);
        Ok(r)
    }

    /// Statements this store (and its clones) ran through [`exec`](Self::exec) so far: every write to the rows the
    /// API serves (markets, rounds, predictions, track records) is one, so an API body read when this count was N
    /// is current while it is still N (writes by another process to a shared database are not counted).
    pub fn writes(&self) -> u64 {
        self.writes.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Every row of a query (see [`exec`](Self::exec)).
    async fn all(&self, q: AnyQuery<'_>) -> Result<Vec<AnyRow>> {
        match self.backend {
            Backend::Sqlite => Ok(q.fetch_all(&self.pool).await?),
            Backend::Postgres => {
                let mut tx = self.pool.begin().await?;
                let r = q.persistent(false).fetch_all(&mut *tx).await?;
                tx.commit().await?;
                Ok(r)
            }
        }
    }

    /// The first row of a query, if any (see [`exec`](Self::exec)).
    async fn opt(&self, q: AnyQuery<'_>) -> Result<Option<AnyRow>> {
        Ok(self.all(q).await?.into_iter().next())
    }

    /// The one row of a query (see [`exec`](Self::exec)).
    async fn one(&self, q: AnyQuery<'_>) -> Result<AnyRow> {
        self.opt(q).await?.ok_or_else(|| anyhow::anyhow!("the query returned no row"))
    }

    /// A copy of this store whose market writes are fenced by the term in the returned slot.
    pub fn fenced(&self) -> (Store, FenceSlot) {
        let slot: FenceSlot = Default::default();
        (Store { fence: Some(slot.clone()), ..self.clone() }, slot)
    }

    /// The database's clock in milliseconds, as SQL (one expression per backend; the hosts' clocks are never used).
    fn db_now(&self) -> &'static str {
        match self.backend {
            Backend::Postgres => "(CAST(EXTRACT(EPOCH FROM now()) * 1000 AS BIGINT))",
            Backend::Sqlite => "(CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER))",
        }
    }

    /// The term this store writes under: `Ok(None)` for an unfenced store, `Err` for a fenced one without a term.
    fn term(&self) -> Result<Option<FenceToken>> {
        match &self.fence {
            None => Ok(None),
            Some(slot) => match slot.lock().clone() {
                Some(t) => Ok(Some(t)),
                None => Err(anyhow::anyhow!("this market's lease is not held; write refused")),
            },
        }
    }

    /// The row source of a fenced or plain insert of `n` values: `VALUES ($1, …, $n)`, or a `SELECT` of them that
    /// yields a row only while `term` holds the lease unexpired (its four fields bound as `$n+1 … $n+4`).
    fn source(&self, n: usize, term: Option<&FenceToken>) -> String {
        let vals = (1..=n).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ");
        match term {
            None => format!("VALUES ({vals})"),
            // PostgreSQL: the lease row is locked FOR SHARE until the write commits (a takeover's update waits for it,
            // so no write of the old term lands after the new term began), and checked against the clock at the
            // check itself (`clock_timestamp()`), not at the transaction's start.
            Some(_) => format!(
                "SELECT {vals} WHERE EXISTS (SELECT 1 FROM leases WHERE chain = ${} AND market_id = ${} AND holder = ${} \
                 AND epoch = ${} AND expires_ms > {}{})",
                n + 1,
                n + 2,
                n + 3,
                n + 4,
                match self.backend {
                    Backend::Postgres => "(CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT))",
                    Backend::Sqlite => self.db_now(),
                },
                match self.backend {
                    Backend::Postgres => " FOR SHARE",
                    Backend::Sqlite => "",
                }
            ),
        }
    }

    /// Upserts a market.
    pub async fn upsert_market(&self, m: &MarketRow) -> Result<()> {
        self.exec(sqlx::query(
            "INSERT INTO markets (chain, market_id, contract, feed, sequencer, token, pair, genesis, interval_s, \
             settle_window_s, max_price_age_s, feed_decimals, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) \
             ON CONFLICT (chain, market_id) DO UPDATE SET contract = excluded.contract, feed = excluded.feed, \
             sequencer = excluded.sequencer, token = excluded.token, pair = excluded.pair, genesis = excluded.genesis, \
             interval_s = excluded.interval_s, settle_window_s = excluded.settle_window_s, \
             max_price_age_s = excluded.max_price_age_s, feed_decimals = excluded.feed_decimals, updated_at = excluded.updated_at",
        )
        .bind(&m.chain)
        .bind(m.market_id)
        .bind(&m.contract)
        .bind(&m.feed)
        .bind(&m.sequencer)
        .bind(&m.token)
        .bind(&m.pair)
        .bind(m.genesis)
        .bind(m.interval_s)
        .bind(m.settle_window_s)
        .bind(m.max_price_age_s)
        .bind(m.feed_decimals)
        .bind(now_s()))
        .await?;
        Ok(())
    }

    /// Every market, ordered by chain and id.
    pub async fn markets(&self) -> Result<Vec<MarketRow>> {
        let rows = self.all(sqlx::query("SELECT chain, market_id, contract, feed, sequencer, token, pair, genesis, interval_s, settle_window_s, max_price_age_s, feed_decimals FROM markets ORDER BY chain, market_id"))
            .await?;
        Ok(decode_all("markets", &rows)?)
    }

    /// Records (or updates) a checkpoint (fenced: refused with [`Fenced`] once the term is over).
    pub async fn record_checkpoint(&self, c: &CheckpointRow) -> Result<()> {
        let term = self.term()?;
        let sql = format!(
            "INSERT INTO checkpoints (chain, market_id, idx, ts, round_id, price, status, tx_hash, block, delay_blocks, recorded_at) \
             {} \
             ON CONFLICT (chain, market_id, idx) DO UPDATE SET round_id = excluded.round_id, price = excluded.price, \
             status = excluded.status, tx_hash = COALESCE(excluded.tx_hash, checkpoints.tx_hash), \
             block = COALESCE(excluded.block, checkpoints.block), delay_blocks = COALESCE(excluded.delay_blocks, checkpoints.delay_blocks)",
            self.source(11, term.as_ref())
        );
        let q = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(&c.chain)
            .bind(c.market_id)
            .bind(c.idx)
            .bind(c.ts)
            .bind(&c.round_id)
            .bind(&c.price)
            .bind(c.status.as_str())
            .bind(&c.tx_hash)
            .bind(c.block)
            .bind(c.delay_blocks)
            .bind(now_s());
        let n = self.exec(bind_term(q, term.as_ref())).await?.rows_affected();
        check_fenced(n, term.as_ref())
    }

    /// Checkpoints of a market from index `from`, ascending.
    pub async fn checkpoints(&self, chain: &str, market_id: i64, from: i64, limit: i64) -> Result<Vec<CheckpointRow>> {
        let rows = self.all(sqlx::query(
            "SELECT chain, market_id, idx, ts, round_id, price, status, tx_hash, block, delay_blocks FROM checkpoints \
             WHERE chain = $1 AND market_id = $2 AND idx >= $3 ORDER BY idx LIMIT $4",
        )
        .bind(chain)
        .bind(market_id)
        .bind(from)
        .bind(limit))
        .await?;
        Ok(decode_all("checkpoints", &rows)?)
    }

    /// Upserts a round's state (fenced: refused with [`Fenced`] once the term is over).
    pub async fn upsert_round(&self, r: &RoundRow) -> Result<()> {
        let term = self.term()?;
        let sql = format!(
            "INSERT INTO rounds (chain, market_id, epoch, state, lock_price, close_price, outcome, reason, up_wei, down_wei, \
             reward_wei, treasury_fee_wei, delay_blocks, updated_at) \
             {} \
             ON CONFLICT (chain, market_id, epoch) DO UPDATE SET state = excluded.state, \
             lock_price = COALESCE(excluded.lock_price, rounds.lock_price), \
             close_price = COALESCE(excluded.close_price, rounds.close_price), \
             outcome = COALESCE(excluded.outcome, rounds.outcome), reason = COALESCE(excluded.reason, rounds.reason), \
             up_wei = excluded.up_wei, down_wei = excluded.down_wei, \
             reward_wei = COALESCE(excluded.reward_wei, rounds.reward_wei), \
             treasury_fee_wei = COALESCE(excluded.treasury_fee_wei, rounds.treasury_fee_wei), \
             delay_blocks = COALESCE(excluded.delay_blocks, rounds.delay_blocks), updated_at = excluded.updated_at",
            self.source(14, term.as_ref())
        );
        let q = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(&r.chain)
            .bind(r.market_id)
            .bind(r.epoch)
            .bind(r.state.to_string())
            .bind(&r.lock_price)
            .bind(&r.close_price)
            .bind(r.outcome.map(Outcome::as_str))
            .bind(r.reason.map(CancelReason::as_str))
            .bind(&r.up_wei)
            .bind(&r.down_wei)
            .bind(&r.reward_wei)
            .bind(&r.treasury_fee_wei)
            .bind(r.delay_blocks)
            .bind(now_s());
        let n = self.exec(bind_term(q, term.as_ref())).await?.rows_affected();
        check_fenced(n, term.as_ref())
    }

    /// The newest rounds, optionally of one chain (`Some("")` is none) and market (negative is none). Each filter has
    /// its own statement so that it is answered from an index (migrations `0004_api_indexes`): newest first across
    /// every market by `rounds_newest`, of one chain by `rounds_chain_newest`, of one market by the primary key.
    pub async fn rounds(&self, chain: Option<&str>, market_id: Option<i64>, limit: i64) -> Result<Vec<RoundRow>> {
        let chain = chain.filter(|c| !c.is_empty());
        let market_id = market_id.filter(|m| *m >= 0);
        let sql = format!("{ROUND_COLUMNS} {}", rounds_filter(chain.is_some(), market_id.is_some()));
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        if let Some(c) = chain {
            q = q.bind(c);
        }
        if let Some(m) = market_id {
            q = q.bind(m);
        }
        let rows = self.all(q.bind(limit)).await?;
        Ok(decode_all("rounds", &rows)?)
    }

    /// Records a signed transaction before it is sent; returns its row id. With `term` (a market's lease term) the
    /// row is written only while that term holds the lease, else [`Fenced`] is returned and the transaction must not
    /// be sent.
    pub async fn insert_tx(&self, t: &TxRow, term: Option<&FenceToken>) -> Result<i64> {
        let sql = format!(
            "INSERT INTO transactions (chain, signer, action, nonce, tx_hash, status, max_fee_wei, priority_fee_wei, \
             gas_limit, sent_at, mined_block, gas_used, error, updated_at) {} RETURNING id",
            self.source(14, term)
        );
        let q = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(&t.chain)
            .bind(&t.signer)
            .bind(&t.action)
            .bind(t.nonce)
            .bind(&t.tx_hash)
            .bind(t.status.as_str())
            .bind(&t.max_fee_wei)
            .bind(&t.priority_fee_wei)
            .bind(t.gas_limit)
            .bind(t.sent_at)
            .bind(t.mined_block)
            .bind(t.gas_used)
            .bind(&t.error)
            .bind(now_s());
        match self.opt(bind_term(q, term)).await? {
            Some(row) => Ok(decode::<Id>("transactions", &row)?.id),
            None => Err(Fenced::of(term.expect("an unfenced insert returns its row")).into()),
        }
    }

    /// Updates a transaction's status.
    pub async fn update_tx(
        &self,
        id: i64,
        status: TxStatus,
        mined_block: Option<i64>,
        gas_used: Option<i64>,
        error: Option<&str>,
    ) -> Result<()> {
        self.exec(sqlx::query(
            "UPDATE transactions SET status = $1, mined_block = COALESCE($2, mined_block), gas_used = COALESCE($3, gas_used), \
             error = COALESCE($4, error), updated_at = $5 WHERE id = $6",
        )
        .bind(status.as_str())
        .bind(mined_block)
        .bind(gas_used)
        .bind(error)
        .bind(now_s())
        .bind(id))
        .await?;
        Ok(())
    }

    /// Transactions of a signer on a chain that are not final.
    pub async fn open_txs(&self, chain: &str, signer: &str) -> Result<Vec<TxRow>> {
        let filter = format!(
            "WHERE chain = $1 AND signer = $2 AND status IN ({}) ORDER BY nonce, id",
            TxStatus::open_sql_list()
        );
        self.txs(&filter, chain, signer).await
    }

    /// Every transaction sent for an action.
    pub async fn txs_for_action(&self, chain: &str, action: &str) -> Result<Vec<TxRow>> {
        self.txs("WHERE chain = $1 AND action = $2 ORDER BY id", chain, action).await
    }

    async fn txs(&self, filter: &str, a: &str, b: &str) -> Result<Vec<TxRow>> {
        let sql = format!(
            "SELECT id, chain, signer, action, nonce, tx_hash, status, max_fee_wei, priority_fee_wei, gas_limit, sent_at, \
             mined_block, gas_used, error FROM transactions {filter}"
        );
        let rows = self.all(sqlx::query(sqlx::AssertSqlSafe(sql)).bind(a).bind(b)).await?;
        Ok(decode_all("transactions", &rows)?)
    }

    /// Every transaction of a chain (for reports).
    pub async fn all_txs(&self, chain: &str) -> Result<Vec<TxRow>> {
        let rows = self.all(sqlx::query(
            "SELECT id, chain, signer, action, nonce, tx_hash, status, max_fee_wei, priority_fee_wei, gas_limit, sent_at, \
             mined_block, gas_used, error FROM transactions WHERE chain = $1 ORDER BY id",
        )
        .bind(chain))
        .await?;
        Ok(decode_all("transactions", &rows)?)
    }

    /// Appends a keeper event.
    pub async fn insert_event(&self, at_ms: i64, chain: Option<&str>, kind: &str, payload: &str) -> Result<()> {
        self.exec(
            sqlx::query("INSERT INTO events (at_ms, chain, kind, payload) VALUES ($1, $2, $3, $4)")
                .bind(at_ms)
                .bind(chain)
                .bind(kind)
                .bind(payload),
        )
        .await?;
        Ok(())
    }

    /// Number of events of a kind.
    pub async fn count_events(&self, kind: &str) -> Result<i64> {
        let r = self.one(sqlx::query("SELECT COUNT(*) AS n FROM events WHERE kind = $1").bind(kind)).await?;
        Ok(decode::<Count>("events", &r)?.n)
    }

    /// Inserts a committed prediction (ignored if one exists for the round).
    pub async fn insert_prediction(&self, p: &PredictionRow) -> Result<()> {
        self.insert_prediction_under(p, None).await
    }

    /// [`insert_prediction`](Self::insert_prediction) under a market's lease term (a signer shared by several
    /// keepers): written only while `term` holds the lease. A row already stored for the round is kept either way;
    /// the caller reads the stored row back and commits that one (never its own, possibly different, salt).
    pub async fn insert_prediction_under(&self, p: &PredictionRow, term: Option<&FenceToken>) -> Result<()> {
        let sql = format!(
            "INSERT INTO predictions (chain, market_id, epoch, publisher, p_up_bps, up, salt, commitment, commit_tx, created_at) \
             {} ON CONFLICT (chain, market_id, epoch, publisher) DO NOTHING",
            self.source(10, term)
        );
        let q = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(&p.chain)
            .bind(p.market_id)
            .bind(p.epoch)
            .bind(&p.publisher)
            .bind(p.p_up_bps)
            .bind(p.up as i64)
            .bind(&p.salt)
            .bind(&p.commitment)
            .bind(&p.commit_tx)
            .bind(now_s());
        self.exec(bind_term(q, term)).await?;
        Ok(())
    }

    /// Sets the commit transaction of a prediction.
    pub async fn set_commit_tx(
        &self,
        chain: &str,
        market_id: i64,
        epoch: i64,
        publisher: &str,
        tx: &str,
    ) -> Result<()> {
        self.exec(sqlx::query("UPDATE predictions SET commit_tx = $1 WHERE chain = $2 AND market_id = $3 AND epoch = $4 AND publisher = $5")
            .bind(tx)
            .bind(chain)
            .bind(market_id)
            .bind(epoch)
            .bind(publisher))
            .await?;
        Ok(())
    }

    /// A prediction by round.
    pub async fn prediction(
        &self,
        chain: &str,
        market_id: i64,
        epoch: i64,
        publisher: &str,
    ) -> Result<Option<PredictionRow>> {
        let rows = self
            .predictions_where(
                "WHERE chain = $1 AND market_id = $2 AND epoch = $3 AND publisher = $4",
                chain,
                market_id,
                epoch,
                publisher,
            )
            .await?;
        Ok(rows.into_iter().next())
    }

    /// `publisher`'s stored predictions on `chain` not recorded as committed (no `commit_tx`) nor final: a commit
    /// that may have landed before a stop or a failed write (Solana audit M1: recovered whatever the commit window).
    pub async fn uncommitted(&self, chain: &str, publisher: &str) -> Result<Vec<PredictionRow>> {
        self.predictions_where("WHERE chain = $1 AND publisher = $4 AND reveal_tx IS NULL AND commit_tx IS NULL AND market_id >= $2 AND epoch >= $3 ORDER BY epoch", chain, 0, 0, publisher).await
    }

    /// Committed predictions not revealed yet, oldest first.
    pub async fn unrevealed(&self, chain: &str, publisher: &str) -> Result<Vec<PredictionRow>> {
        self.predictions_where("WHERE chain = $1 AND publisher = $4 AND reveal_tx IS NULL AND commit_tx IS NOT NULL AND market_id >= $2 AND epoch >= $3 ORDER BY epoch", chain, 0, 0, publisher).await
    }

    /// The newest predictions of a chain.
    pub async fn recent_predictions(&self, chain: &str, limit: i64) -> Result<Vec<PredictionRow>> {
        let sql = "SELECT chain, market_id, epoch, publisher, p_up_bps, up, salt, commitment, commit_tx, reveal_tx, outcome, hit, brier \
                   FROM predictions WHERE chain = $1 ORDER BY epoch DESC LIMIT $2";
        let rows = self.all(sqlx::query(sql).bind(chain).bind(limit)).await?;
        Ok(decode_all("predictions", &rows)?)
    }

    async fn predictions_where(
        &self,
        filter: &str,
        chain: &str,
        market_id: i64,
        epoch: i64,
        publisher: &str,
    ) -> Result<Vec<PredictionRow>> {
        let sql = format!(
            "SELECT chain, market_id, epoch, publisher, p_up_bps, up, salt, commitment, commit_tx, reveal_tx, outcome, hit, brier \
             FROM predictions {filter}"
        );
        let rows = self
            .all(sqlx::query(sqlx::AssertSqlSafe(sql)).bind(chain).bind(market_id).bind(epoch).bind(publisher))
            .await?;
        Ok(decode_all("predictions", &rows)?)
    }

    /// Records the reveal of `publisher`'s prediction for `epoch` of market `market_id` on `chain`, and its score.
    pub async fn set_revealed(
        &self,
        chain: &str,
        market_id: i64,
        epoch: i64,
        publisher: &str,
        reveal: &Reveal<'_>,
    ) -> Result<()> {
        let Reveal { tx, outcome, hit, brier } = *reveal;
        self.exec(
            sqlx::query(
                "UPDATE predictions SET reveal_tx = $1, outcome = $2, hit = $3, brier = $4, revealed_at = $5 \
             WHERE chain = $6 AND market_id = $7 AND epoch = $8 AND publisher = $9",
            )
            .bind(tx)
            .bind(outcome.as_str())
            .bind(hit.map(|h| h as i64))
            .bind(brier)
            .bind(now_s())
            .bind(chain)
            .bind(market_id)
            .bind(epoch)
            .bind(publisher),
        )
        .await?;
        Ok(())
    }

    /// Stores a publisher's on-chain record.
    pub async fn upsert_track_record(&self, t: &TrackRecordRow) -> Result<()> {
        self.exec(sqlx::query(
            "INSERT INTO track_records (chain, publisher, committed, hits, misses, voided, expired, brier_sum, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (chain, publisher) DO UPDATE SET \
             committed = excluded.committed, hits = excluded.hits, misses = excluded.misses, voided = excluded.voided, \
             expired = excluded.expired, brier_sum = excluded.brier_sum, updated_at = excluded.updated_at",
        )
        .bind(&t.chain)
        .bind(&t.publisher)
        .bind(t.committed)
        .bind(t.hits)
        .bind(t.misses)
        .bind(t.voided)
        .bind(t.expired)
        .bind(&t.brier_sum)
        .bind(now_s()))
        .await?;
        Ok(())
    }

    /// Every stored track record.
    pub async fn track_records(&self) -> Result<Vec<TrackRecordRow>> {
        let rows = self.all(sqlx::query("SELECT chain, publisher, committed, hits, misses, voided, expired, brier_sum FROM track_records ORDER BY chain"))
            .await?;
        Ok(decode_all("track_records", &rows)?)
    }

    /// Takes or renews the lease on a market for `holder` (`<keeper_id>/<instance>`), on the database's clock, in one
    /// statement. `held` is the epoch `holder` holds now (`None` when it holds none): a held, unexpired term is renewed
    /// under the same epoch; an expired lease (or a market without one) is taken under the next epoch. Returns the
    /// lease row as it stands after the statement, with `wrote` set iff this statement took or renewed it: `holder`
    /// holds the lease only then (a row naming it that was not written is a term it no longer holds, or another
    /// process's under the same id).
    pub async fn acquire_lease(
        &self,
        chain: &str,
        market_id: i64,
        holder: &str,
        held: Option<i64>,
        ttl_ms: i64,
    ) -> Result<LeaseRow> {
        let now = self.db_now();
        let renew = format!("(leases.holder = excluded.holder AND leases.epoch = $5 AND leases.expires_ms > {now})");
        let sql = format!(
            "INSERT INTO leases (chain, market_id, holder, epoch, since_ms, renewed_ms, expires_ms) \
             VALUES ($1, $2, $3, 1, {now}, {now}, {now} + $4) \
             ON CONFLICT (chain, market_id) DO UPDATE SET \
             epoch = CASE WHEN {renew} THEN leases.epoch ELSE leases.epoch + 1 END, \
             since_ms = CASE WHEN {renew} THEN leases.since_ms ELSE excluded.since_ms END, \
             holder = excluded.holder, renewed_ms = excluded.renewed_ms, expires_ms = excluded.expires_ms \
             WHERE {renew} OR leases.expires_ms <= {now} \
             RETURNING chain, market_id, holder, epoch, since_ms, renewed_ms, expires_ms, {now} AS db_now_ms"
        );
        let row = self
            .opt(
                sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(chain)
                    .bind(market_id)
                    .bind(holder)
                    .bind(ttl_ms)
                    .bind(held.unwrap_or(-1)),
            )
            .await?;
        match row {
            Some(r) => Ok(LeaseRow { wrote: true, ..decode::<LeaseRecord>("leases", &r)?.into() }),
            None => self
                .lease(chain, market_id)
                .await?
                .ok_or_else(|| anyhow::anyhow!("{chain} market {market_id}: the lease row vanished")),
        }
    }

    /// A market's lease row, if it ever had one.
    pub async fn lease(&self, chain: &str, market_id: i64) -> Result<Option<LeaseRow>> {
        let sql = format!(
            "SELECT chain, market_id, holder, epoch, since_ms, renewed_ms, expires_ms, {} AS db_now_ms FROM leases \
             WHERE chain = $1 AND market_id = $2",
            self.db_now()
        );
        let r = self.opt(sqlx::query(sqlx::AssertSqlSafe(sql)).bind(chain).bind(market_id)).await?;
        Ok(r.map(|r| decode::<LeaseRecord>("leases", &r)).transpose()?.map(LeaseRow::from))
    }

    /// Every lease row (for `kronos status`).
    pub async fn leases(&self) -> Result<Vec<LeaseRow>> {
        let sql = format!(
            "SELECT chain, market_id, holder, epoch, since_ms, renewed_ms, expires_ms, {} AS db_now_ms FROM leases \
             ORDER BY chain, market_id",
            self.db_now()
        );
        let rows = self.all(sqlx::query(sqlx::AssertSqlSafe(sql))).await?;
        Ok(decode_all::<LeaseRecord>("leases", &rows)?.into_iter().map(LeaseRow::from).collect())
    }

    /// Gives a lease term up (on shutdown): it expires now, so a standby takes the next epoch at once. The row stays,
    /// so epochs keep growing.
    pub async fn release_lease(&self, term: &FenceToken) -> Result<()> {
        let sql = format!(
            "UPDATE leases SET expires_ms = {} - 1 WHERE chain = $1 AND market_id = $2 AND holder = $3 AND epoch = $4",
            self.db_now()
        );
        self.exec(
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(&term.chain)
                .bind(term.market_id)
                .bind(&term.holder)
                .bind(term.epoch),
        )
        .await?;
        Ok(())
    }

    /// The nonce authority of a signer shared by several keepers: takes the next nonce of (`chain`, `signer`),
    /// atomically across keepers and only while `term` holds its lease. The answer is the stored next nonce when one
    /// was handed out less than `hold_ms` ago (on the database's clock) and it is ahead of `pending` (the node's
    /// pending count), else `pending`: a nonce taken by a keeper that died before broadcasting it leaves no gap for
    /// longer than `hold_ms`, and two transactions with one nonce are harmless (the chain mines one).
    pub async fn take_shared_nonce(
        &self,
        chain: &str,
        signer: &str,
        pending: i64,
        term: &FenceToken,
        hold_ms: i64,
    ) -> Result<i64> {
        let now = self.db_now();
        let src = self.source(3, Some(term)).replacen(
            "SELECT $1, $2, $3 WHERE",
            &format!("SELECT $1, $2, $3, {now} WHERE"),
            1,
        );
        let sql = format!(
            "INSERT INTO signer_nonces (chain, signer, next_nonce, taken_ms) {src} \
             ON CONFLICT (chain, signer) DO UPDATE SET next_nonce = \
             (CASE WHEN signer_nonces.next_nonce > excluded.next_nonce - 1 AND signer_nonces.taken_ms > excluded.taken_ms - $8 \
             THEN signer_nonces.next_nonce ELSE excluded.next_nonce - 1 END) + 1, taken_ms = excluded.taken_ms \
             RETURNING next_nonce - 1 AS nonce"
        );
        let q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(chain).bind(signer).bind(pending + 1);
        match self.opt(bind_term(q, Some(term)).bind(hold_ms)).await? {
            Some(r) => Ok(decode::<Nonce>("signer_nonces", &r)?.nonce),
            None => Err(Fenced::of(term).into()),
        }
    }

    /// Gives back a shared nonce that was never broadcast, when it was the last one taken.
    pub async fn release_shared_nonce(&self, chain: &str, signer: &str, nonce: i64) -> Result<()> {
        self.exec(
            sqlx::query(
                "UPDATE signer_nonces SET next_nonce = $3 WHERE chain = $1 AND signer = $2 AND next_nonce = $4",
            )
            .bind(chain)
            .bind(signer)
            .bind(nonce)
            .bind(nonce + 1),
        )
        .await?;
        Ok(())
    }

    /// A cheap query to check the store answers.
    pub async fn ping(&self) -> Result<()> {
        self.one(sqlx::query("SELECT 1")).await?;
        Ok(())
    }
}

/// The columns of [`RoundRow`], in its order.
const ROUND_COLUMNS: &str = "SELECT chain, market_id, epoch, state, lock_price, close_price, outcome, reason, up_wei, \
                             down_wei, reward_wei, treasury_fee_wei, delay_blocks FROM rounds";

/// The `WHERE … ORDER BY … LIMIT` of [`Store::rounds`] with a chain filter, a market filter, both or neither (binds:
/// the chain, the market, the limit, in that order, those present only). The order is always newest epoch first,
/// then chain, then market.
pub(crate) fn rounds_filter(chain: bool, market: bool) -> &'static str {
    match (chain, market) {
        (false, false) => "ORDER BY epoch DESC, chain, market_id LIMIT $1",
        (true, false) => "WHERE chain = $1 ORDER BY epoch DESC, market_id LIMIT $2",
        (false, true) => "WHERE market_id = $1 ORDER BY epoch DESC, chain LIMIT $2",
        (true, true) => "WHERE chain = $1 AND market_id = $2 ORDER BY epoch DESC LIMIT $3",
    }
}

/// Runs `m` inside one transaction and deallocates every prepared statement before committing, so that nothing of
/// it outlives the transaction on the server connection (PgBouncer in transaction mode hands that connection to
/// other clients next).
async fn migrate_in_one_transaction(pool: &AnyPool, m: &sqlx::migrate::Migrator) -> Result<()> {
    let mut tx = pool.begin().await?;
    sqlx::raw_sql("DEALLOCATE ALL").execute(&mut *tx).await?;
    // (`run_direct`: `run` on a transaction's connection makes this future not `Send`, sqlx's "Acquire is not
    // general enough".)
    m.run_direct(None, &mut *tx, false).await?;
    sqlx::raw_sql("DEALLOCATE ALL").execute(&mut *tx).await?;
    tx.commit().await?;
    Ok(())
}

/// A lease row as stored: `holder` is `<keeper_id>/<instance>`, `db_now_ms` the database's clock at the read.
#[derive(sqlx::FromRow)]
struct LeaseRecord {
    chain: String,
    market_id: i64,
    holder: String,
    epoch: i64,
    since_ms: i64,
    renewed_ms: i64,
    expires_ms: i64,
    db_now_ms: i64,
}

impl From<LeaseRecord> for LeaseRow {
    fn from(r: LeaseRecord) -> LeaseRow {
        let (holder, instance) = split_holder(&r.holder);
        LeaseRow {
            chain: r.chain,
            market_id: r.market_id,
            holder,
            instance,
            epoch: r.epoch,
            since_ms: r.since_ms,
            renewed_ms: r.renewed_ms,
            expires_ms: r.expires_ms,
            db_now_ms: r.db_now_ms,
            wrote: false,
        }
    }
}

/// `RETURNING id`.
#[derive(sqlx::FromRow)]
struct Id {
    id: i64,
}

/// `COUNT(*) AS n`.
#[derive(sqlx::FromRow)]
struct Count {
    n: i64,
}

/// `RETURNING … AS nonce`.
#[derive(sqlx::FromRow)]
struct Nonce {
    nonce: i64,
}

type AnyQuery<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>;

/// Binds a term's four fields after a statement's own values (see [`Store::source`]).
fn bind_term<'q>(q: AnyQuery<'q>, term: Option<&FenceToken>) -> AnyQuery<'q> {
    match term {
        None => q,
        Some(t) => q.bind(t.chain.clone()).bind(t.market_id).bind(t.holder.clone()).bind(t.epoch),
    }
}

/// A fenced statement that wrote nothing was refused by the lease check.
fn check_fenced(rows: u64, term: Option<&FenceToken>) -> Result<()> {
    match term {
        Some(t) if rows == 0 => Err(Fenced::of(t).into()),
        _ => Ok(()),
    }
}

/// Whether the keeper's `events` log stores a signal: each fact is stored once, by the part that owns it. The
/// keeper's own signals (rounds, prices, transactions, health, forecasts and predictions) are logged here; the
/// copy-trader's are not, since its own store already holds each of them (orders as they are sent in `ct_orders`,
/// fills in `ct_fills`, positions in `ct_positions`, the lead in `ct_lead`, lead changes and risk events in
/// `ct_events`), and on a bus shared with the keeper (the demo) they were written twice. Every variant is named, so a
/// new signal needs a decision here.
pub(crate) fn keeps_event(kind: &kronos_common::SignalKind) -> bool {
    use kronos_common::SignalKind as K;
    match kind {
        K::RoundStarted { .. }
        | K::RoundLocked { .. }
        | K::RoundSettled { .. }
        | K::RoundCancelled { .. }
        | K::PriceRead { .. }
        | K::TxSent { .. }
        | K::TxConfirmed { .. }
        | K::TxFailed { .. }
        | K::KeeperHealth { .. }
        | K::Forecast { .. }
        | K::PredictionCommitted { .. }
        | K::PredictionRevealed { .. } => true,
        K::LeadChanged { .. }
        | K::OrderSubmitted { .. }
        | K::OrderFilled { .. }
        | K::StopPlaced { .. }
        | K::StopTriggered { .. }
        | K::PositionChanged { .. }
        | K::RiskEvent { .. } => false,
    }
}

pub use kronos_common::db::redact_url;

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Two keeper processes on one SQLite file: the second claim is refused with an error naming the file, the lock
    /// file and the holder; the claim ends with its holder; in-memory and PostgreSQL stores take none.
    #[test]
    fn a_second_keeper_on_one_sqlite_file_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/k.db", dir.path().display());
        let first = claim_sqlite(&url).unwrap().expect("a SQLite file is claimed");
        assert_eq!(first.lock, dir.path().join("k.db.keeper-lock"));
        let e = claim_sqlite(&format!("sqlite:{}/k.db?mode=rwc", dir.path().display())).unwrap_err();
        let busy = e.downcast_ref::<SqliteInUse>().unwrap_or_else(|| panic!("not SqliteInUse: {e:#}"));
        assert_eq!(busy.file, dir.path().join("k.db"));
        assert_eq!(busy.pid, Some(std::process::id()));
        let text = e.to_string();
        assert!(text.contains(&dir.path().join("k.db").display().to_string()), "{text}");
        // Another file in the same folder is free.
        assert!(claim_sqlite(&format!("sqlite://{}/other.db", dir.path().display())).unwrap().is_some());
        drop(first);
        assert!(claim_sqlite(&url).unwrap().is_some(), "the claim outlived its holder");
        assert!(claim_sqlite("sqlite::memory:").unwrap().is_none());
        assert!(claim_sqlite("postgres://kronos@127.0.0.1/k").unwrap().is_none());
    }

    pub(crate) async fn exercise(store: &Store) {
        let m = MarketRow {
            chain: "base".into(),
            market_id: 1,
            contract: "0xabc".into(),
            feed: "0xfeed".into(),
            sequencer: None,
            token: "0x0".into(),
            pair: Some("BTC/USD".into()),
            genesis: 1000,
            interval_s: 300,
            settle_window_s: 3600,
            max_price_age_s: 120,
            feed_decimals: 8,
        };
        store.upsert_market(&m).await.unwrap();
        store.upsert_market(&MarketRow { interval_s: 600, ..m.clone() }).await.unwrap();
        let ms = store.markets().await.unwrap();
        assert_eq!(ms.len(), 1);
        assert_eq!(ms[0].interval_s, 600);

        let cp = CheckpointRow {
            chain: "base".into(),
            market_id: 1,
            idx: 5,
            ts: 2500,
            round_id: "18446744073709551617".into(),
            price: "65000.12345678".into(),
            status: CheckpointStatus::Valid,
            tx_hash: Some("0xaa".into()),
            block: Some(10),
            delay_blocks: Some(1),
        };
        store.record_checkpoint(&cp).await.unwrap();
        store.record_checkpoint(&CheckpointRow { tx_hash: None, ..cp.clone() }).await.unwrap();
        let cps = store.checkpoints("base", 1, 0, 10).await.unwrap();
        assert_eq!(cps, vec![cp]);

        let r = RoundRow {
            chain: "base".into(),
            market_id: 1,
            epoch: 3,
            state: RoundState::Locked,
            lock_price: Some("1.5".into()),
            close_price: None,
            outcome: None,
            reason: None,
            up_wei: "100".into(),
            down_wei: "0".into(),
            reward_wei: None,
            treasury_fee_wei: None,
            delay_blocks: None,
        };
        store.upsert_round(&r).await.unwrap();
        store
            .upsert_round(&RoundRow {
                state: RoundState::Settled,
                lock_price: None,
                close_price: Some("2".into()),
                outcome: Some(Outcome::Up),
                ..r.clone()
            })
            .await
            .unwrap();
        let rs = store.rounds(Some("base"), Some(1), 10).await.unwrap();
        assert_eq!(rs.len(), 1);
        assert_eq!(
            (rs[0].state, rs[0].lock_price.as_deref(), rs[0].close_price.as_deref()),
            (RoundState::Settled, Some("1.5"), Some("2"))
        );
        assert_eq!(store.rounds(None, None, 10).await.unwrap().len(), 1);
        assert!(store.rounds(Some("ethereum"), None, 10).await.unwrap().is_empty());

        let t = TxRow {
            id: 0,
            chain: "base".into(),
            signer: "0xkeeper".into(),
            action: "execute:1:5".into(),
            nonce: 7,
            tx_hash: "0xbb".into(),
            status: TxStatus::Pending,
            max_fee_wei: "1000000000".into(),
            priority_fee_wei: "1".into(),
            gas_limit: 200_000,
            sent_at: 1,
            mined_block: None,
            gas_used: None,
            error: None,
        };
        let id = store.insert_tx(&t, None).await.unwrap();
        assert_eq!(store.open_txs("base", "0xkeeper").await.unwrap().len(), 1);
        store.update_tx(id, TxStatus::Confirmed, Some(11), Some(90_000), None).await.unwrap();
        assert!(store.open_txs("base", "0xkeeper").await.unwrap().is_empty());
        let done = store.txs_for_action("base", "execute:1:5").await.unwrap();
        assert_eq!(
            (done[0].status, done[0].mined_block, done[0].gas_used),
            (TxStatus::Confirmed, Some(11), Some(90_000))
        );

        store.insert_event(1, Some("base"), "round_settled", "{}").await.unwrap();
        assert_eq!(store.count_events("round_settled").await.unwrap(), 1);

        let p = PredictionRow {
            chain: "base".into(),
            market_id: 1,
            epoch: 4,
            publisher: "0xai".into(),
            p_up_bps: 6100,
            up: true,
            salt: "0x01".into(),
            commitment: "0x02".into(),
            commit_tx: None,
            reveal_tx: None,
            outcome: None,
            hit: None,
            brier: None,
        };
        store.insert_prediction(&p).await.unwrap();
        assert!(store.unrevealed("base", "0xai").await.unwrap().is_empty(), "not committed on chain yet");
        store.set_commit_tx("base", 1, 4, "0xai", "0xcc").await.unwrap();
        assert_eq!(store.unrevealed("base", "0xai").await.unwrap().len(), 1);
        let reveal = Reveal { tx: "0xdd", outcome: Outcome::Up, hit: Some(true), brier: Some(1521) };
        store.set_revealed("base", 1, 4, "0xai", &reveal).await.unwrap();
        assert!(store.unrevealed("base", "0xai").await.unwrap().is_empty());
        let got = store.prediction("base", 1, 4, "0xai").await.unwrap().unwrap();
        assert_eq!((got.hit, got.brier, got.up), (Some(true), Some(1521), true));

        let tr = TrackRecordRow {
            chain: "base".into(),
            publisher: "0xai".into(),
            committed: 3,
            hits: 2,
            misses: 1,
            voided: 0,
            expired: 0,
            brier_sum: "123".into(),
        };
        store.upsert_track_record(&tr).await.unwrap();
        store.upsert_track_record(&TrackRecordRow { hits: 3, ..tr.clone() }).await.unwrap();
        assert_eq!(store.track_records().await.unwrap()[0].hits, 3);

        leases_and_fencing(store).await;
        store.ping().await.unwrap();
    }

    /// Leases on the database's clock with a growing epoch, and writes fenced by the term they were made under.
    pub(crate) async fn leases_and_fencing(store: &Store) {
        let ttl = 60_000;
        let a = store.acquire_lease("base", 1, "k1", None, ttl).await.unwrap();
        assert_eq!((a.holder.as_str(), a.epoch), ("k1", 1));
        assert!(a.expires_ms > a.db_now_ms && a.expires_ms <= a.db_now_ms + ttl, "{a:?}");
        // Another keeper cannot take a live lease, whatever its own clock says (no host clock is passed at all).
        let b = store.acquire_lease("base", 1, "k2", None, ttl).await.unwrap();
        assert_eq!((b.holder.as_str(), b.epoch), ("k1", 1), "k2 took a live lease");
        // A renewal keeps the epoch and the start of the term.
        let r = store.acquire_lease("base", 1, "k1", Some(1), ttl).await.unwrap();
        assert_eq!((r.holder.as_str(), r.epoch, r.since_ms), ("k1", 1, a.since_ms));
        // The same keeper id without the epoch (a restarted process) does not renew someone's live term.
        let again = store.acquire_lease("base", 1, "k1", None, ttl).await.unwrap();
        assert_eq!(again.epoch, 1);
        // Writes under the term go through; the other market is not leased by anyone.
        let (fenced, slot) = store.fenced();
        let term = FenceToken { chain: "base".into(), market_id: 1, holder: "k1".into(), epoch: 1 };
        let cp = |idx| CheckpointRow {
            chain: "base".into(),
            market_id: 1,
            idx,
            ts: 0,
            round_id: "1".into(),
            price: "1".into(),
            status: CheckpointStatus::Valid,
            tx_hash: None,
            block: None,
            delay_blocks: None,
        };
        assert!(fenced.record_checkpoint(&cp(40)).await.is_err(), "a fenced store without a term wrote");
        *slot.lock() = Some(term.clone());
        fenced.record_checkpoint(&cp(40)).await.unwrap();
        // An expired lease is taken under the next epoch (a TTL of 0 expires at once).
        store.acquire_lease("base", 1, "k1", Some(1), 0).await.unwrap();
        let t = store.acquire_lease("base", 1, "k2", None, ttl).await.unwrap();
        assert_eq!((t.holder.as_str(), t.epoch), ("k2", 2), "expired lease is taken over under the next epoch");
        assert!(t.since_ms >= a.since_ms);
        // The old term's writes are refused, by the database, as `Fenced`.
        let e = fenced.record_checkpoint(&cp(41)).await.unwrap_err();
        assert!(e.downcast_ref::<Fenced>().is_some(), "{e:#}");
        assert_eq!(store.checkpoints("base", 1, 41, 1).await.unwrap(), vec![]);
        let round = RoundRow {
            chain: "base".into(),
            market_id: 1,
            epoch: 9,
            state: RoundState::Locked,
            lock_price: None,
            close_price: None,
            outcome: None,
            reason: None,
            up_wei: "0".into(),
            down_wei: "0".into(),
            reward_wei: None,
            treasury_fee_wei: None,
            delay_blocks: None,
        };
        assert!(fenced.upsert_round(&round).await.unwrap_err().downcast_ref::<Fenced>().is_some());
        let tx = TxRow {
            id: 0,
            chain: "base".into(),
            signer: "0xs".into(),
            action: "execute:1:41".into(),
            nonce: 1,
            tx_hash: "0x1".into(),
            status: TxStatus::Signed,
            max_fee_wei: "1".into(),
            priority_fee_wei: "1".into(),
            gas_limit: 1,
            sent_at: 1,
            mined_block: None,
            gas_used: None,
            error: None,
        };
        assert!(store.insert_tx(&tx, Some(&term)).await.unwrap_err().downcast_ref::<Fenced>().is_some());
        assert!(store.txs_for_action("base", "execute:1:41").await.unwrap().is_empty());
        // The old holder's renewal fails: the row names k2 under epoch 2.
        let old = store.acquire_lease("base", 1, "k1", Some(1), ttl).await.unwrap();
        assert_eq!((old.holder.as_str(), old.epoch), ("k2", 2));
        // The new term writes; a release expires it at once and the next taker gets epoch 3.
        let new_term = FenceToken { holder: "k2".into(), epoch: 2, ..term.clone() };
        assert!(store.insert_tx(&tx, Some(&new_term)).await.unwrap() > 0);
        store.release_lease(&new_term).await.unwrap();
        let n = store.acquire_lease("base", 1, "k1", None, ttl).await.unwrap();
        assert_eq!((n.holder.as_str(), n.epoch), ("k1", 3));
        assert_eq!(store.leases().await.unwrap().len(), 1);
        assert_eq!(store.lease("base", 1).await.unwrap().unwrap().epoch, 3);
        // The shared-signer nonce authority: at least the node's pending count, never handed out twice.
        let k1 = FenceToken { holder: "k1".into(), epoch: 3, ..term.clone() };
        let hold = 60_000;
        assert_eq!(store.take_shared_nonce("base", "0xs", 5, &k1, hold).await.unwrap(), 5);
        assert_eq!(store.take_shared_nonce("base", "0xs", 5, &k1, hold).await.unwrap(), 6);
        assert_eq!(store.take_shared_nonce("base", "0xs", 9, &k1, hold).await.unwrap(), 9);
        store.release_shared_nonce("base", "0xs", 9).await.unwrap();
        assert_eq!(store.take_shared_nonce("base", "0xs", 0, &k1, hold).await.unwrap(), 9);
        store.release_shared_nonce("base", "0xs", 3).await.unwrap();
        assert_eq!(
            store.take_shared_nonce("base", "0xs", 0, &k1, hold).await.unwrap(),
            10,
            "only the last is given back"
        );
        // A nonce handed out longer ago than the hold (its taker died before broadcasting): the node's count wins.
        assert_eq!(store.take_shared_nonce("base", "0xs", 4, &k1, -1).await.unwrap(), 4);
        assert!(store
            .take_shared_nonce("base", "0xs", 0, &term, hold)
            .await
            .unwrap_err()
            .downcast_ref::<Fenced>()
            .is_some());
        // Audit M6: a shared signer's prediction is stored under the term; once stored, another keeper's (other salt)
        // does not replace it, and an ended term stores nothing.
        let pred = |salt: &str| PredictionRow {
            chain: "base".into(),
            market_id: 1,
            epoch: 77,
            publisher: "0xshared".into(),
            p_up_bps: 6000,
            up: true,
            salt: salt.into(),
            commitment: format!("0xc{salt}"),
            commit_tx: None,
            reveal_tx: None,
            outcome: None,
            hit: None,
            brier: None,
        };
        store.insert_prediction_under(&pred("a"), Some(&term)).await.unwrap();
        assert_eq!(
            store.prediction("base", 1, 77, "0xshared").await.unwrap(),
            None,
            "an ended term stored a prediction"
        );
        store.insert_prediction_under(&pred("b"), Some(&k1)).await.unwrap();
        store.insert_prediction_under(&pred("c"), Some(&k1)).await.unwrap();
        assert_eq!(store.prediction("base", 1, 77, "0xshared").await.unwrap().unwrap().salt, "b");
    }

    #[tokio::test]
    async fn sqlite_store_round_trips_everything() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/sub/kronos.db", dir.path().display());
        let store = Store::connect(&url).await.unwrap();
        assert_eq!(store.backend, Backend::Sqlite);
        exercise(&store).await;
        // Reconnecting re-runs migrations idempotently and keeps the data.
        let again = Store::connect(&url).await.unwrap();
        assert_eq!(again.markets().await.unwrap().len(), 1);
    }

    /// The table and column of a value that does not read back.
    fn bad_column(e: &anyhow::Error) -> (&'static str, Option<&str>) {
        let e = e.downcast_ref::<kronos_common::db::RowError>().unwrap_or_else(|| panic!("not a row error: {e:#}"));
        (e.table, e.column.as_deref())
    }

    /// A stored value that is not of its column's type is an error naming the table and the column, never a
    /// default (a flag of 7 was read as `true` before).
    #[tokio::test]
    async fn open_txs_selects_exactly_the_open_statuses() {
        assert_eq!(TxStatus::open_sql_list(), "'signed', 'pending'");
        let store = Store::connect("sqlite::memory:").await.unwrap();
        let mut want = Vec::new();
        for (nonce, status) in (0..).zip(TxStatus::ALL) {
            let t = TxRow {
                id: 0,
                chain: "base".into(),
                signer: "0xkeeper".into(),
                action: format!("execute:1:{nonce}"),
                nonce,
                tx_hash: format!("0x{nonce:02x}"),
                status,
                max_fee_wei: "1".into(),
                priority_fee_wei: "1".into(),
                gas_limit: 21_000,
                sent_at: 1,
                mined_block: None,
                gas_used: None,
                error: None,
            };
            store.insert_tx(&t, None).await.unwrap();
            if status.is_open() {
                want.push(status);
            }
        }
        let got: Vec<TxStatus> = store.open_txs("base", "0xkeeper").await.unwrap().iter().map(|t| t.status).collect();
        assert_eq!(got, want);
        assert_eq!(want, [TxStatus::Signed, TxStatus::Pending]);
    }

    #[tokio::test]
    async fn a_corrupted_row_names_its_table_and_column() {
        let store = Store::connect("sqlite::memory:").await.unwrap();
        exercise(&store).await;
        assert!(store.prediction("base", 1, 4, "0xai").await.unwrap().unwrap().up);
        store.exec(sqlx::query("UPDATE predictions SET up = 7 WHERE epoch = 4")).await.unwrap();
        let e = store.prediction("base", 1, 4, "0xai").await.unwrap_err();
        assert_eq!(bad_column(&e), ("predictions", Some("up")));
        assert!(format!("{e:#}").contains("7 is not a flag"), "{e:#}");
        store.exec(sqlx::query("UPDATE predictions SET up = 1, hit = -1 WHERE epoch = 4")).await.unwrap();
        assert_eq!(bad_column(&store.recent_predictions("base", 9).await.unwrap_err()), ("predictions", Some("hit")));
        store.exec(sqlx::query("UPDATE rounds SET delay_blocks = 'x'")).await.unwrap();
        assert_eq!(bad_column(&store.rounds(None, None, 9).await.unwrap_err()), ("rounds", Some("delay_blocks")));
        store.exec(sqlx::query("UPDATE rounds SET delay_blocks = 1, state = 'open'")).await.unwrap();
        assert_eq!(bad_column(&store.rounds(None, None, 9).await.unwrap_err()), ("rounds", Some("state")));
        store.exec(sqlx::query("UPDATE rounds SET state = 'settled', outcome = 'Up'")).await.unwrap();
        assert_eq!(bad_column(&store.rounds(None, None, 9).await.unwrap_err()), ("rounds", Some("outcome")));
        store.exec(sqlx::query("UPDATE predictions SET hit = 1, outcome = 'sideways'")).await.unwrap();
        let e = store.recent_predictions("base", 9).await.unwrap_err();
        assert_eq!(bad_column(&e), ("predictions", Some("outcome")));
        assert!(format!("{e:#}").contains("\"sideways\" is none of the values of Outcome"), "{e:#}");
        store.exec(sqlx::query("UPDATE rounds SET outcome = 'up', reason = 'whim'")).await.unwrap();
        let e = store.rounds(None, None, 9).await.unwrap_err();
        assert_eq!(bad_column(&e), ("rounds", Some("reason")));
        assert!(format!("{e:#}").contains("CancelReason has no value named \"whim\""), "{e:#}");
        // An unknown status, in either table that has one.
        store.exec(sqlx::query("UPDATE checkpoints SET status = 'fresh'")).await.unwrap();
        let e = store.checkpoints("base", 1, 0, 9).await.unwrap_err();
        assert_eq!(bad_column(&e), ("checkpoints", Some("status")));
        store.exec(sqlx::query("UPDATE transactions SET status = 'lost'")).await.unwrap();
        let e = store.all_txs("base").await.unwrap_err();
        assert_eq!(bad_column(&e), ("transactions", Some("status")));
        assert!(format!("{e:#}").contains("\"lost\" is no transaction status"), "{e:#}");
    }

    /// The typed columns are stored as the same text as before they were typed (the enums' stored forms).
    #[tokio::test]
    async fn enum_columns_are_stored_as_their_names() {
        let store = Store::connect("sqlite::memory:").await.unwrap();
        exercise(&store).await;
        let text = |sql: &'static str| {
            let pool = store.pool.clone();
            async move { sqlx::query_scalar::<_, String>(sql).fetch_one(&pool).await.unwrap() }
        };
        assert_eq!(text("SELECT status FROM checkpoints").await, "valid");
        assert_eq!(text("SELECT state || ',' || outcome FROM rounds").await, "settled,up");
        assert_eq!(text("SELECT outcome FROM predictions WHERE epoch = 4").await, "up");
        assert_eq!(text("SELECT status FROM transactions ORDER BY id LIMIT 1").await, "confirmed");
    }

    /// The stored forms of the transaction statuses: each parses back, and nothing else does.
    #[test]
    fn transaction_statuses_read_back_by_name_only() {
        for t in TxStatus::ALL {
            assert_eq!(t.as_str().parse::<TxStatus>(), Ok(t));
        }
        let names: Vec<_> = TxStatus::ALL.iter().map(|t| t.to_string()).collect();
        assert_eq!(names, ["signed", "pending", "confirmed", "failed", "replaced", "dropped"]);
        assert_eq!("Pending".parse::<TxStatus>(), Err(UnknownTxStatus("Pending".into())));
    }

    /// Each fact is stored once: the keeper's `events` log keeps the keeper's signals, not the copy-trader's (its own
    /// store holds those).
    #[test]
    fn the_event_log_keeps_the_keepers_signals_only() {
        use kronos_common::{Decimal, SignalKind};
        let health = SignalKind::KeeperHealth {
            chain: "base".into(),
            healthy: true,
            head_block: 1,
            lag_s: 0,
            detail: String::new(),
        };
        assert!(keeps_event(&health));
        let fill =
            SignalKind::PositionChanged { symbol: "BTCUSDT".into(), qty: Decimal::ZERO, entry_price: Decimal::ZERO };
        assert!(!keeps_event(&fill));
        assert!(!keeps_event(&SignalKind::RiskEvent { kind: "daily_loss".into(), detail: String::new() }));
    }

    /// Issue 13, item 12: a bad SQLite path said only "creating /dev/null: File exists".
    #[tokio::test]
    async fn a_store_that_cannot_be_opened_names_the_setting() {
        let Err(e) = Store::connect("sqlite:///dev/null/k.db").await else { panic!("opened") };
        let e = format!("{e:#}");
        assert!(e.starts_with("keeper.store: cannot open sqlite:///dev/null/k.db"), "{e}");
    }

    #[test]
    fn urls_are_redacted() {
        assert_eq!(redact_url("postgres://kronos:s3cret@db:5432/k"), "postgres://kronos:***@db:5432/k");
        assert_eq!(redact_url("sqlite://data/kronos.db"), "sqlite://data/kronos.db");
    }
}

#[cfg(test)]
mod pg_tests {
    /// Issue 18: the store through PgBouncer in transaction pooling mode, where consecutive statements of one client
    /// connection may run on different server connections: leases, fencing and the nonce authority must rely on no
    /// session state. Several clients at once, over two server connections, so that they do change.
    #[tokio::test]
    async fn the_store_works_through_pgbouncer_in_transaction_mode() {
        let pg = kronos_testkit::pg::PgServer::start().expect("PostgreSQL starts (scripts/setup installs it)");
        let bouncer =
            kronos_testkit::pg::PgBouncer::start(&pg, 2).expect("pgbouncer starts (scripts/setup installs it)");
        let store = super::Store::connect(&bouncer.url()).await.unwrap();
        super::tests::exercise(&store).await;
        // Eight keepers' worth of lease traffic at once on other markets: every answer is consistent.
        let mut tasks = Vec::new();
        for k in 0..8 {
            let url = bouncer.url();
            tasks.push(tokio::spawn(async move {
                let s = super::Store::connect(&url).await.unwrap();
                let mut held = None;
                let mut terms = 0;
                for _ in 0..30 {
                    let me = format!("k{k}");
                    let r = s.acquire_lease("base", 100, &me, held, 60_000).await.unwrap();
                    if r.holder == me {
                        terms += (held != Some(r.epoch)) as i64;
                        held = Some(r.epoch);
                    } else {
                        held = None;
                    }
                }
                terms
            }));
        }
        let mut terms = 0;
        for t in tasks {
            terms += t.await.unwrap();
        }
        assert_eq!(terms, 1, "one term of a live lease, whoever got it");
        assert_eq!(store.lease("base", 100).await.unwrap().unwrap().epoch, 1);
    }

    #[tokio::test]
    async fn postgres_store_round_trips_everything() {
        let pg = kronos_testkit::pg::PgServer::start().expect("PostgreSQL starts (scripts/setup installs it)");
        let store = super::Store::connect(&pg.url()).await.unwrap();
        assert_eq!(store.backend, super::Backend::Postgres);
        super::tests::exercise(&store).await;
        let again = super::Store::connect(&pg.url()).await.unwrap();
        assert_eq!(again.markets().await.unwrap().len(), 1);
    }
}
