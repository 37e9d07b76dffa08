//! The copy-trader's record (sqlx; SQLite by default, PostgreSQL by URL): every order before it is sent and after
//! its outcome is known, fills, follower positions (the paper account's state), the lead's last known positions,
//! risk state (emergency stop, cool-down, daily start equity, equity peak), lead and risk events, equity samples.
//!
//! The tables are prefixed `ct_` and the migrations keep their own bookkeeping table, so the copy-trader can share
//! a database with the keeper.

use anyhow::{Context, Result};
use kronos_common::db::{decode, decode_all, Backend, Flag, Parsed, ParsedOpt};
use kronos_common::Decimal;
use serde::Serialize;
use sqlx::AnyPool;

/// A stored order (regular or stop).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct OrderRow {
    pub client_id: String,
    pub kind: String,
    pub symbol: String,
    pub side: String,
    pub qty: String,
    pub trigger_price: Option<String>,
    /// Stored as 0 or 1.
    #[sqlx(try_from = "Flag")]
    pub reduce_only: bool,
    pub reason: String,
    pub status: String,
    pub exchange_id: Option<i64>,
    pub avg_price: Option<String>,
    pub executed_qty: Option<String>,
    pub fee: Option<String>,
    pub realized_pnl: Option<String>,
    pub error: Option<String>,
    /// Stored as 0 or 1.
    #[sqlx(try_from = "Flag")]
    pub paper: bool,
    pub created_ms: i64,
    pub updated_ms: i64,
}

impl OrderRow {
    /// What a row recorded before its order is sent holds beyond the order itself: `sending`, nothing of the
    /// exchange's answer yet, created now. The order's own fields (`client_id` … `reason`) are left empty for the
    /// caller's struct literal to set (`OrderRow { client_id, …, ..OrderRow::unsent(paper, now) }`).
    pub(crate) fn unsent(paper: bool, now_ms: i64) -> OrderRow {
        OrderRow {
            client_id: String::new(),
            kind: String::new(),
            symbol: String::new(),
            side: String::new(),
            qty: String::new(),
            trigger_price: None,
            reduce_only: false,
            reason: String::new(),
            status: "sending".into(),
            exchange_id: None,
            avg_price: None,
            executed_qty: None,
            fee: None,
            realized_pnl: None,
            error: None,
            paper,
            created_ms: now_ms,
            updated_ms: now_ms,
        }
    }
}

/// What an order's update records besides its status (`Store::update_order`): the exchange's id, the fill
/// (average price, executed quantity, fee, realized PnL, as decimal text) and the error; `None` keeps the stored value.
#[derive(Debug, Clone, Copy, Default)]
pub struct OrderUpdate<'a> {
    pub exchange_id: Option<i64>,
    pub avg_price: Option<&'a str>,
    pub executed_qty: Option<&'a str>,
    pub fee: Option<&'a str>,
    pub realized_pnl: Option<&'a str>,
    pub error: Option<&'a str>,
}

/// A stored fill.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct FillRow {
    pub client_id: String,
    pub symbol: String,
    pub side: String,
    pub qty: String,
    pub price: String,
    pub fee: String,
    pub realized_pnl: String,
    /// Stored as 0 or 1.
    #[sqlx(try_from = "Flag")]
    pub paper: bool,
    pub at_ms: i64,
}

/// A stored event (lead change or risk event).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct EventRow {
    pub at_ms: i64,
    pub kind: String,
    pub symbol: String,
    pub detail: String,
}

/// The store.
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    pub backend: Backend,
}

fn now_ms() -> i64 {
    kronos_common::time::now_ms() as i64
}

const ORDER_COLS: &str =
    "client_id, kind, symbol, side, qty, trigger_price, reduce_only, reason, status, exchange_id, \
    avg_price, executed_qty, fee, realized_pnl, error, paper, created_ms, updated_ms";

/// A row of `ct_positions`.
#[derive(sqlx::FromRow)]
struct PositionRecord {
    symbol: String,
    #[sqlx(try_from = "Parsed<Decimal>")]
    qty: Decimal,
    #[sqlx(try_from = "Parsed<Decimal>")]
    entry_price: Decimal,
}

/// A row of `ct_lead`.
#[derive(sqlx::FromRow)]
struct LeadRecord {
    symbol: String,
    #[sqlx(try_from = "Parsed<Decimal>")]
    qty: Decimal,
    #[sqlx(try_from = "ParsedOpt<Decimal>")]
    lead_limit: Option<Decimal>,
}

/// A row of `ct_equity`.
#[derive(sqlx::FromRow)]
struct EquityRecord {
    at_ms: i64,
    #[sqlx(try_from = "Parsed<Decimal>")]
    equity: Decimal,
}

/// Orders of one kind and status.
#[derive(sqlx::FromRow)]
struct OrderCount {
    kind: String,
    status: String,
    n: i64,
}

/// A row of `ct_state`.
#[derive(sqlx::FromRow)]
struct StateRecord {
    value: String,
}

impl Store {
    /// Connects and applies the migrations.
    pub async fn connect(url: &str) -> Result<Store> {
        let (backend, pool) = kronos_common::db::open(url).await?;
        let mut m = match backend {
            Backend::Sqlite => sqlx::migrate!("./migrations/sqlite"),
            Backend::Postgres => sqlx::migrate!("./migrations/postgres"),
        };
        m.dangerous_set_table_name("_kronos_copytrade_migrations");
        m.run(&pool).await.context("applying copy-trader store migrations")?;
        let store = Store { pool, backend };
        // A store written before the control log keeps its switches (an emergency stop stays in force).
        crate::control::import_legacy(&store).await?;
        Ok(store)
    }

    /// The pool, for [`crate::control`]'s own table.
    pub(crate) fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// A trivial query, for health checks.
    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").fetch_one(&self.pool).await?;
        Ok(())
    }

    // ---- orders ----------------------------------------------------------------------------------------------------

    /// Records an order before it is sent (status `sending`).
    pub async fn insert_order(&self, o: &OrderRow) -> Result<()> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO ct_orders ({ORDER_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)"
        )))
        .bind(&o.client_id)
        .bind(&o.kind)
        .bind(&o.symbol)
        .bind(&o.side)
        .bind(&o.qty)
        .bind(&o.trigger_price)
        .bind(o.reduce_only as i64)
        .bind(&o.reason)
        .bind(&o.status)
        .bind(o.exchange_id)
        .bind(&o.avg_price)
        .bind(&o.executed_qty)
        .bind(&o.fee)
        .bind(&o.realized_pnl)
        .bind(&o.error)
        .bind(o.paper as i64)
        .bind(o.created_ms)
        .bind(o.updated_ms)
        .execute(&self.pool)
        .await
        .with_context(|| format!("recording order {}", o.client_id))?;
        Ok(())
    }

    /// Records order `client_id`'s new `status` and what `update` says of it; a field it leaves `None` keeps the
    /// stored value.
    pub async fn update_order(&self, client_id: &str, status: &str, update: &OrderUpdate<'_>) -> Result<()> {
        let OrderUpdate { exchange_id, avg_price, executed_qty, fee, realized_pnl, error } = *update;
        sqlx::query(
            "UPDATE ct_orders SET status = $2, exchange_id = COALESCE($3, exchange_id), avg_price = COALESCE($4, avg_price), \
             executed_qty = COALESCE($5, executed_qty), fee = COALESCE($6, fee), realized_pnl = COALESCE($7, realized_pnl), \
             error = COALESCE($8, error), updated_ms = $9 WHERE client_id = $1",
        )
        .bind(client_id)
        .bind(status)
        .bind(exchange_id)
        .bind(avg_price)
        .bind(executed_qty)
        .bind(fee)
        .bind(realized_pnl)
        .bind(error)
        .bind(now_ms())
        .execute(&self.pool)
        .await
        .with_context(|| format!("updating order {client_id}"))?;
        Ok(())
    }

    /// Orders with the given status, oldest first.
    pub async fn orders_with_status(&self, status: &str) -> Result<Vec<OrderRow>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {ORDER_COLS} FROM ct_orders WHERE status = $1 ORDER BY created_ms, client_id"
        )))
        .bind(status)
        .fetch_all(&self.pool)
        .await?;
        Ok(decode_all("ct_orders", &rows)?)
    }

    /// The newest orders, newest first.
    pub async fn recent_orders(&self, limit: i64) -> Result<Vec<OrderRow>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {ORDER_COLS} FROM ct_orders ORDER BY created_ms DESC, client_id DESC LIMIT $1"
        )))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(decode_all("ct_orders", &rows)?)
    }

    /// One order.
    pub async fn order(&self, client_id: &str) -> Result<Option<OrderRow>> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {ORDER_COLS} FROM ct_orders WHERE client_id = $1")))
            .bind(client_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| decode("ct_orders", &r)).transpose()?)
    }

    /// Counts of orders by status.
    pub async fn order_counts(&self) -> Result<Vec<(String, String, i64)>> {
        let rows = sqlx::query(
            "SELECT kind, status, COUNT(*) AS n FROM ct_orders GROUP BY kind, status ORDER BY kind, status",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(decode_all::<OrderCount>("ct_orders", &rows)?.into_iter().map(|c| (c.kind, c.status, c.n)).collect())
    }

    // ---- fills -----------------------------------------------------------------------------------------------------

    pub async fn insert_fill(&self, f: &FillRow) -> Result<()> {
        sqlx::query(
            "INSERT INTO ct_fills (client_id, symbol, side, qty, price, fee, realized_pnl, paper, at_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&f.client_id)
        .bind(&f.symbol)
        .bind(&f.side)
        .bind(&f.qty)
        .bind(&f.price)
        .bind(&f.fee)
        .bind(&f.realized_pnl)
        .bind(f.paper as i64)
        .bind(f.at_ms)
        .execute(&self.pool)
        .await
        .with_context(|| format!("recording a fill of {}", f.client_id))?;
        Ok(())
    }

    /// Every fill since `since_ms`, oldest first.
    pub async fn fills_since(&self, since_ms: i64) -> Result<Vec<FillRow>> {
        let rows = sqlx::query(
            "SELECT client_id, symbol, side, qty, price, fee, realized_pnl, paper, at_ms FROM ct_fills WHERE at_ms >= $1 ORDER BY id",
        )
        .bind(since_ms)
        .fetch_all(&self.pool)
        .await?;
        Ok(decode_all("ct_fills", &rows)?)
    }

    // ---- follower positions ------------------------------------------------------------------------------------

    /// Records a follower position (a flat one is removed).
    pub async fn set_position(&self, symbol: &str, qty: Decimal, entry: Decimal) -> Result<()> {
        if qty.is_zero() {
            sqlx::query("DELETE FROM ct_positions WHERE symbol = $1").bind(symbol).execute(&self.pool).await?;
            return Ok(());
        }
        sqlx::query(
            "INSERT INTO ct_positions (symbol, qty, entry_price, updated_ms) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (symbol) DO UPDATE SET qty = excluded.qty, entry_price = excluded.entry_price, updated_ms = excluded.updated_ms",
        )
        .bind(symbol)
        .bind(qty.to_string())
        .bind(entry.to_string())
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Every recorded follower position: (symbol, signed qty, entry price).
    pub async fn positions(&self) -> Result<Vec<(String, Decimal, Decimal)>> {
        let rows = sqlx::query("SELECT symbol, qty, entry_price FROM ct_positions ORDER BY symbol")
            .fetch_all(&self.pool)
            .await?;
        Ok(decode_all::<PositionRecord>("ct_positions", &rows)?
            .into_iter()
            .map(|p| (p.symbol, p.qty, p.entry_price))
            .collect())
    }

    // ---- lead ----------------------------------------------------------------------------------------------------

    /// Records the lead's position in a symbol and the follower's limit in it (`None`: followed fully).
    pub async fn set_lead(&self, symbol: &str, qty: Decimal, limit: Option<Decimal>) -> Result<()> {
        sqlx::query(
            "INSERT INTO ct_lead (symbol, qty, lead_limit, updated_ms) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (symbol) DO UPDATE SET qty = excluded.qty, lead_limit = excluded.lead_limit, updated_ms = excluded.updated_ms",
        )
        .bind(symbol)
        .bind(qty.to_string())
        .bind(limit.map(|l| l.to_string()))
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The lead's recorded positions: (symbol, signed qty, the follower's limit).
    pub async fn lead(&self) -> Result<Vec<(String, Decimal, Option<Decimal>)>> {
        let rows =
            sqlx::query("SELECT symbol, qty, lead_limit FROM ct_lead ORDER BY symbol").fetch_all(&self.pool).await?;
        Ok(decode_all::<LeadRecord>("ct_lead", &rows)?.into_iter().map(|l| (l.symbol, l.qty, l.lead_limit)).collect())
    }

    // ---- state ---------------------------------------------------------------------------------------------------

    pub async fn get_state(&self, key: &str) -> Result<Option<String>> {
        let row = sqlx::query("SELECT value FROM ct_state WHERE key = $1").bind(key).fetch_optional(&self.pool).await?;
        Ok(row.map(|r| decode::<StateRecord>("ct_state", &r)).transpose()?.map(|s| s.value))
    }

    pub async fn set_state(&self, key: &str, value: &str) -> Result<()> {
        sqlx::query(
            "INSERT INTO ct_state (key, value, updated_ms) VALUES ($1, $2, $3) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_ms = excluded.updated_ms",
        )
        .bind(key)
        .bind(value)
        .bind(now_ms())
        .execute(&self.pool)
        .await
        .with_context(|| format!("saving state {key}"))?;
        Ok(())
    }

    pub async fn delete_state(&self, key: &str) -> Result<()> {
        sqlx::query("DELETE FROM ct_state WHERE key = $1").bind(key).execute(&self.pool).await?;
        Ok(())
    }

    // ---- events and equity -------------------------------------------------------------------------------------

    pub async fn event(&self, kind: &str, symbol: &str, detail: &str) -> Result<()> {
        sqlx::query("INSERT INTO ct_events (at_ms, kind, symbol, detail) VALUES ($1, $2, $3, $4)")
            .bind(now_ms())
            .bind(kind)
            .bind(symbol)
            .bind(detail)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The newest events, newest first.
    pub async fn events(&self, limit: i64) -> Result<Vec<EventRow>> {
        let rows = sqlx::query("SELECT at_ms, kind, symbol, detail FROM ct_events ORDER BY id DESC LIMIT $1")
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        Ok(decode_all("ct_events", &rows)?)
    }

    pub async fn record_equity(&self, at_ms: i64, equity: Decimal) -> Result<()> {
        sqlx::query("INSERT INTO ct_equity (at_ms, equity) VALUES ($1, $2) ON CONFLICT (at_ms) DO UPDATE SET equity = excluded.equity")
            .bind(at_ms)
            .bind(equity.to_string())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Equity samples since `since_ms`, oldest first.
    pub async fn equity_since(&self, since_ms: i64) -> Result<Vec<(i64, Decimal)>> {
        let rows = sqlx::query("SELECT at_ms, equity FROM ct_equity WHERE at_ms >= $1 ORDER BY at_ms")
            .bind(since_ms)
            .fetch_all(&self.pool)
            .await?;
        Ok(decode_all::<EquityRecord>("ct_equity", &rows)?.into_iter().map(|e| (e.at_ms, e.equity)).collect())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) async fn exercise(s: &Store) {
        let o = OrderRow {
            client_id: "kc1".into(),
            kind: "order".into(),
            symbol: "BTCUSDT".into(),
            side: "BUY".into(),
            qty: "0.01".into(),
            trigger_price: None,
            reduce_only: false,
            reason: "mirror".into(),
            ..OrderRow::unsent(true, 1)
        };
        s.insert_order(&o).await.unwrap();
        assert!(s.insert_order(&o).await.is_err(), "a client id is recorded once");
        assert_eq!(s.orders_with_status("sending").await.unwrap(), vec![o.clone()]);
        s.update_order(
            "kc1",
            "filled",
            &OrderUpdate {
                exchange_id: Some(7),
                avg_price: Some("65000"),
                executed_qty: Some("0.01"),
                fee: Some("0.325"),
                realized_pnl: Some("0"),
                ..OrderUpdate::default()
            },
        )
        .await
        .unwrap();
        let got = s.order("kc1").await.unwrap().unwrap();
        assert_eq!((got.status.as_str(), got.exchange_id, got.fee.as_deref()), ("filled", Some(7), Some("0.325")));
        assert_eq!(s.order_counts().await.unwrap(), vec![("order".into(), "filled".into(), 1)]);
        s.set_position("BTCUSDT", "0.01".parse().unwrap(), "65000".parse().unwrap()).await.unwrap();
        s.set_position("ETHUSDT", "-1".parse().unwrap(), "3500".parse().unwrap()).await.unwrap();
        s.set_position("ETHUSDT", Decimal::ZERO, Decimal::ZERO).await.unwrap();
        assert_eq!(
            s.positions().await.unwrap(),
            vec![("BTCUSDT".into(), "0.01".parse().unwrap(), "65000".parse().unwrap())]
        );
        s.set_lead("BTCUSDT", "0.02".parse().unwrap(), None).await.unwrap();
        s.set_lead("BTCUSDT", "0.03".parse().unwrap(), Some(Decimal::ZERO)).await.unwrap();
        assert_eq!(s.lead().await.unwrap(), vec![("BTCUSDT".into(), "0.03".parse().unwrap(), Some(Decimal::ZERO))]);
        s.set_state("daily_halt", "1").await.unwrap();
        s.set_state("daily_halt", "0").await.unwrap();
        assert_eq!(s.get_state("daily_halt").await.unwrap().as_deref(), Some("0"));
        s.delete_state("daily_halt").await.unwrap();
        assert_eq!(s.get_state("daily_halt").await.unwrap(), None);
        crate::control::tests::exercise(s).await;
        s.event("risk", "", "daily loss").await.unwrap();
        assert_eq!(s.events(10).await.unwrap()[0].detail, "daily loss");
        s.record_equity(5, "100.5".parse().unwrap()).await.unwrap();
        assert_eq!(s.equity_since(0).await.unwrap(), vec![(5, "100.5".parse().unwrap())]);
        let f = FillRow {
            client_id: "kc1".into(),
            symbol: "BTCUSDT".into(),
            side: "BUY".into(),
            qty: "0.01".into(),
            price: "65000".into(),
            fee: "0.325".into(),
            realized_pnl: "0".into(),
            paper: true,
            at_ms: 9,
        };
        s.insert_fill(&f).await.unwrap();
        assert_eq!(s.fills_since(0).await.unwrap(), vec![f]);
    }

    #[tokio::test]
    async fn postgres_store_round_trips() {
        let pg = kronos_testkit::pg::PgServer::start().expect("PostgreSQL starts (scripts/setup installs it)");
        let s = Store::connect(&pg.url()).await.unwrap();
        exercise(&s).await;
        // Migrations are idempotent on a second connect.
        Store::connect(&pg.url()).await.unwrap();
        crate::control::tests::old_keys_are_imported(&pg.url()).await;
    }

    /// The table and column of a value that does not read back.
    fn bad_column(e: &anyhow::Error) -> (&'static str, Option<&str>) {
        let e = e.downcast_ref::<kronos_common::db::RowError>().unwrap_or_else(|| panic!("not a row error: {e:#}"));
        (e.table, e.column.as_deref())
    }

    /// A stored value that is not of its column's type is an error naming the table and the column, never a
    /// default: a flag other than 0 or 1 (read as `true` before), an amount that is no decimal.
    #[tokio::test]
    async fn a_corrupted_row_names_its_table_and_column() {
        let s = Store::connect("sqlite::memory:").await.unwrap();
        exercise(&s).await;
        sqlx::query("UPDATE ct_fills SET paper = 2").execute(&s.pool).await.unwrap();
        let e = s.fills_since(0).await.unwrap_err();
        assert_eq!(bad_column(&e), ("ct_fills", Some("paper")));
        assert!(format!("{e:#}").contains("2 is not a flag"), "{e:#}");
        sqlx::query("UPDATE ct_orders SET reduce_only = -1").execute(&s.pool).await.unwrap();
        assert_eq!(bad_column(&s.recent_orders(5).await.unwrap_err()), ("ct_orders", Some("reduce_only")));
        sqlx::query("UPDATE ct_positions SET entry_price = '65,000'").execute(&s.pool).await.unwrap();
        let e = s.positions().await.unwrap_err();
        assert_eq!(bad_column(&e), ("ct_positions", Some("entry_price")));
        assert!(format!("{e:#}").contains("'65,000' is not a Decimal"), "{e:#}");
        sqlx::query("UPDATE ct_lead SET lead_limit = 'half'").execute(&s.pool).await.unwrap();
        assert_eq!(bad_column(&s.lead().await.unwrap_err()), ("ct_lead", Some("lead_limit")));
        sqlx::query("UPDATE ct_equity SET equity = ''").execute(&s.pool).await.unwrap();
        assert_eq!(bad_column(&s.equity_since(0).await.unwrap_err()), ("ct_equity", Some("equity")));
    }

    #[tokio::test]
    async fn sqlite_store_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::connect(&format!("sqlite:{}/ct.sqlite", dir.path().display())).await.unwrap();
        exercise(&s).await;
    }
}
