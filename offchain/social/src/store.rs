//! The social monitor's record (sqlx; SQLite by default, PostgreSQL by URL): accepted items, their assets, each
//! source's cursor and skip counts. Tables are prefixed `so_` and the migrations keep their own bookkeeping table, so
//! the monitor can share a database with the keeper.
//!
//! [`Store::commit`] writes a batch's items, its skip counts and the source's cursor in one transaction: either the
//! cursor moves with its items or neither is written.

use anyhow::{Context, Result};
use kronos_common::db::{decode, decode_all, Backend, NonNegative, Parsed};
use serde::Serialize;
use sqlx::AnyPool;

use crate::item::{Item, Priority, Skip};

#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
}

/// A filter on stored items.
#[derive(Debug, Clone, Default)]
pub struct ItemQuery {
    pub asset: Option<String>,
    pub source: Option<String>,
    pub min_score: Option<f64>,
    /// Only items received after this sequence number (paging forward).
    pub after_seq: Option<i64>,
    pub since_ms: Option<u64>,
    pub limit: u32,
}

/// An item as stored, with its sequence number.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StoredItem {
    pub seq: i64,
    #[serde(flatten)]
    pub item: Item,
}

/// What one batch writes: accepted items, edits (the item scored again, the source's edit time), deleted ids.
#[derive(Debug, Clone, Default)]
pub struct Writes {
    pub items: Vec<Item>,
    pub edits: Vec<(Item, u64)>,
    pub deletes: Vec<String>,
}

/// What one commit wrote: the new items, the edited ones (as stored now) and the deleted ones (as they were).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Committed {
    pub written: Vec<StoredItem>,
    pub edited: Vec<StoredItem>,
    pub deleted: Vec<StoredItem>,
}

/// The columns an updated row returns (those of [`ItemRecord`]).
const RETURNED: &str = "seq, id, source, kind, author, text, url, at_ms, received_ms, language, assets, sentiment, \
                        score, priority, content_hash, simhash, version, edited_ms";

/// What the de-duplicator needs from recent items after a restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint {
    pub content_hash: u64,
    pub simhash: u64,
    pub at_ms: u64,
}

/// Counts of one asset's mentions in a window.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct AssetCounts {
    /// Items mentioning the asset.
    pub volume: u64,
    /// Asset mentions of all assets (the denominator of dominance).
    pub all_mentions: u64,
    pub positive: u64,
    pub negative: u64,
    /// Mean VADER compound of the asset's items (0 when none).
    pub mean_sentiment: f64,
    pub mean_score: f64,
}

/// One source's stored state, for `kronos social status`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SourceRecord {
    pub source: String,
    pub items: u64,
    pub last_item_ms: Option<u64>,
    pub cursor_updated_ms: Option<u64>,
    pub skips: Vec<(String, u64)>,
}

fn h2i(h: u64) -> i64 {
    h as i64
}

fn i2h(i: i64) -> u64 {
    i as u64
}

/// The sentiment above (below) which an item counts as positive (negative): VADER's own convention.
pub const SENTIMENT_THRESHOLD: f64 = 0.05;

impl Store {
    /// Connects and applies the migrations.
    pub async fn connect(url: &str) -> Result<Store> {
        let (backend, pool) = kronos_common::db::open(url).await?;
        let mut m = match backend {
            Backend::Sqlite => sqlx::migrate!("./migrations/sqlite"),
            Backend::Postgres => sqlx::migrate!("./migrations/postgres"),
        };
        m.dangerous_set_table_name("_kronos_social_migrations");
        m.run(&pool).await.context("applying social store migrations")?;
        Ok(Store { pool, backend })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The saved cursor of `source` as JSON, if any.
    pub async fn cursor(&self, source: &str) -> Result<Option<String>> {
        let row = sqlx::query("SELECT cursor FROM so_cursors WHERE source = $1")
            .bind(source)
            .fetch_optional(&self.pool)
            .await
            .context("reading a source cursor")?;
        Ok(row.map(|r| decode::<CursorRecord>("so_cursors", &r)).transpose()?.map(|c| c.cursor))
    }

    /// Writes `items`, adds `skips` to the counts and saves `cursor`, in one transaction. Items whose id is already
    /// stored are left out; returns the items actually written, with their sequence numbers.
    pub async fn commit(
        &self,
        source: &str,
        items: Vec<Item>,
        skips: &[(Skip, u64)],
        cursor: &str,
        now_ms: u64,
    ) -> Result<Vec<StoredItem>> {
        let writes = Writes { items, ..Default::default() };
        Ok(self.commit_changes(source, writes, skips, cursor, now_ms).await?.written)
    }

    /// [`Store::commit`] with a batch's edits and deletions, applied after its items, all in the one transaction.
    /// An edit applies to the stored, not deleted item of the same id when its edit time is newer than the item's
    /// (so a replayed edit changes nothing): the text and what was scored from it are replaced, `version` goes up
    /// by one, the asset mentions are rewritten. A deletion marks the item deleted (it is no longer served) and
    /// removes its asset mentions. Edits and deletions of ids not stored (never accepted, or deleted already) are
    /// left out of the answer.
    pub async fn commit_changes(
        &self,
        source: &str,
        writes: Writes,
        skips: &[(Skip, u64)],
        cursor: &str,
        now_ms: u64,
    ) -> Result<Committed> {
        let Writes { items, edits, deletes } = writes;
        let mut tx = self.pool.begin().await.context("starting a commit")?;
        let mut written = Vec::with_capacity(items.len());
        for item in items {
            let assets = item.assets.join(" ");
            let seq: Option<i64> = sqlx::query(
                "INSERT INTO so_items (id, source, kind, author, text, url, at_ms, received_ms, language, assets, \
                 sentiment, score, priority, content_hash, simhash) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15) \
                 ON CONFLICT (id) DO NOTHING RETURNING seq",
            )
            .bind(&item.id)
            .bind(&item.source)
            .bind(&item.kind)
            .bind(&item.author)
            .bind(&item.text)
            .bind(item.url.as_deref())
            .bind(item.at_ms as i64)
            .bind(item.received_ms as i64)
            .bind(&item.language)
            .bind(&assets)
            .bind(item.sentiment)
            .bind(item.score)
            .bind(item.priority.as_str())
            .bind(h2i(item.content_hash))
            .bind(h2i(item.simhash))
            .fetch_optional(&mut *tx)
            .await
            .context("writing an item")?
            .map(|r| decode::<Seq>("so_items", &r))
            .transpose()?
            .map(|s| s.seq);
            let Some(seq) = seq else { continue };
            for a in &item.assets {
                sqlx::query(
                    "INSERT INTO so_item_assets (item_seq, asset, at_ms, sentiment, score) VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(seq)
                .bind(a)
                .bind(item.at_ms as i64)
                .bind(item.sentiment)
                .bind(item.score)
                .execute(&mut *tx)
                .await
                .context("writing an item's asset")?;
            }
            written.push(StoredItem { seq, item });
        }
        let mut edited = Vec::new();
        for (item, edited_ms) in edits {
            let row = sqlx::query(sqlx::AssertSqlSafe(format!(
                "UPDATE so_items SET text = $2, assets = $3, sentiment = $4, score = $5, priority = $6, \
                 content_hash = $7, simhash = $8, version = version + 1, edited_ms = $9 \
                 WHERE id = $1 AND source = $10 AND deleted_ms IS NULL AND (edited_ms IS NULL OR edited_ms < $9) \
                 RETURNING {RETURNED}"
            )))
            .bind(&item.id)
            .bind(&item.text)
            .bind(item.assets.join(" "))
            .bind(item.sentiment)
            .bind(item.score)
            .bind(item.priority.as_str())
            .bind(h2i(item.content_hash))
            .bind(h2i(item.simhash))
            .bind(edited_ms as i64)
            .bind(source)
            .fetch_optional(&mut *tx)
            .await
            .context("applying an edit")?;
            let Some(row) = row else { continue };
            let stored = StoredItem::from(decode::<ItemRecord>("so_items", &row)?);
            Self::set_assets(&mut tx, &stored).await?;
            edited.push(stored);
        }
        let mut deleted = Vec::new();
        for id in deletes {
            let row = sqlx::query(sqlx::AssertSqlSafe(format!(
                "UPDATE so_items SET deleted_ms = $2 WHERE id = $1 AND source = $3 AND deleted_ms IS NULL \
                 RETURNING {RETURNED}"
            )))
            .bind(&id)
            .bind(now_ms as i64)
            .bind(source)
            .fetch_optional(&mut *tx)
            .await
            .context("marking an item deleted")?;
            let Some(row) = row else { continue };
            let stored = StoredItem::from(decode::<ItemRecord>("so_items", &row)?);
            sqlx::query("DELETE FROM so_item_assets WHERE item_seq = $1")
                .bind(stored.seq)
                .execute(&mut *tx)
                .await
                .context("removing a deleted item's mentions")?;
            deleted.push(stored);
        }
        for (reason, n) in skips {
            sqlx::query(
                "INSERT INTO so_skips (source, reason, n) VALUES ($1, $2, $3) \
                 ON CONFLICT (source, reason) DO UPDATE SET n = so_skips.n + excluded.n",
            )
            .bind(source)
            .bind(reason.as_str())
            .bind(*n as i64)
            .execute(&mut *tx)
            .await
            .context("counting skipped items")?;
        }
        sqlx::query(
            "INSERT INTO so_cursors (source, cursor, updated_ms) VALUES ($1, $2, $3) \
             ON CONFLICT (source) DO UPDATE SET cursor = excluded.cursor, updated_ms = excluded.updated_ms",
        )
        .bind(source)
        .bind(cursor)
        .bind(now_ms as i64)
        .execute(&mut *tx)
        .await
        .context("saving a source cursor")?;
        tx.commit().await.context("committing a batch")?;
        Ok(Committed { written, edited, deleted })
    }

    /// Rewrites an edited item's asset mentions (the aggregates count its new text).
    async fn set_assets(tx: &mut sqlx::Transaction<'_, sqlx::Any>, stored: &StoredItem) -> Result<()> {
        sqlx::query("DELETE FROM so_item_assets WHERE item_seq = $1")
            .bind(stored.seq)
            .execute(&mut **tx)
            .await
            .context("rewriting an edited item's mentions")?;
        let item = &stored.item;
        for a in &item.assets {
            sqlx::query(
                "INSERT INTO so_item_assets (item_seq, asset, at_ms, sentiment, score) VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(stored.seq)
            .bind(a)
            .bind(item.at_ms as i64)
            .bind(item.sentiment)
            .bind(item.score)
            .execute(&mut **tx)
            .await
            .context("writing an edited item's asset")?;
        }
        Ok(())
    }

    /// Items, newest first (or oldest first after `after_seq`, for paging forward).
    pub async fn items(&self, q: &ItemQuery) -> Result<Vec<StoredItem>> {
        let mut sql = String::from(
            "SELECT i.seq, i.id, i.source, i.kind, i.author, i.text, i.url, i.at_ms, i.received_ms, i.language, \
             i.assets, i.sentiment, i.score, i.priority, i.content_hash, i.simhash, i.version, i.edited_ms \
             FROM so_items i",
        );
        // A deleted item is kept (its fingerprint) but never served.
        let mut conds: Vec<String> = vec!["i.deleted_ms IS NULL".into()];
        let mut n = 0;
        let mut p = || {
            n += 1;
            format!("${n}")
        };
        if q.asset.is_some() {
            sql.push_str(" JOIN so_item_assets a ON a.item_seq = i.seq");
            conds.push(format!("a.asset = {}", p()));
        }
        if q.source.is_some() {
            conds.push(format!("i.source = {}", p()));
        }
        if q.min_score.is_some() {
            conds.push(format!("i.score >= {}", p()));
        }
        if q.after_seq.is_some() {
            conds.push(format!("i.seq > {}", p()));
        }
        if q.since_ms.is_some() {
            conds.push(format!("i.at_ms >= {}", p()));
        }
        sql.push_str(" WHERE ");
        sql.push_str(&conds.join(" AND "));
        sql.push_str(if q.after_seq.is_some() { " ORDER BY i.seq ASC" } else { " ORDER BY i.seq DESC" });
        sql.push_str(&format!(" LIMIT {}", q.limit.clamp(1, 1000)));
        // Built from fixed fragments and `$N` placeholders only; every value is bound.
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        if let Some(a) = &q.asset {
            query = query.bind(a.clone());
        }
        if let Some(s) = &q.source {
            query = query.bind(s.clone());
        }
        if let Some(m) = q.min_score {
            query = query.bind(m);
        }
        if let Some(s) = q.after_seq {
            query = query.bind(s);
        }
        if let Some(s) = q.since_ms {
            query = query.bind(s as i64);
        }
        let rows = query.fetch_all(&self.pool).await.context("reading items")?;
        Ok(decode_all::<ItemRecord>("so_items", &rows)?.into_iter().map(StoredItem::from).collect())
    }

    /// The fingerprints of items posted since `since_ms` (to refill the de-duplication window after a restart).
    pub async fn fingerprints(&self, since_ms: u64) -> Result<Vec<Fingerprint>> {
        let rows = sqlx::query("SELECT content_hash, simhash, at_ms FROM so_items WHERE at_ms >= $1 ORDER BY seq")
            .bind(since_ms as i64)
            .fetch_all(&self.pool)
            .await
            .context("reading recent fingerprints")?;
        Ok(decode_all::<FingerprintRecord>("so_items", &rows)?
            .into_iter()
            .map(|f| Fingerprint { content_hash: i2h(f.content_hash), simhash: i2h(f.simhash), at_ms: f.at_ms })
            .collect())
    }

    /// Authors of items posted since `since_ms`, with their last post (to remember them after a restart).
    pub async fn authors(&self, since_ms: u64) -> Result<Vec<(String, u64)>> {
        let rows =
            sqlx::query("SELECT author AS name, MAX(at_ms) AS at_ms FROM so_items WHERE at_ms >= $1 GROUP BY author")
                .bind(since_ms as i64)
                .fetch_all(&self.pool)
                .await
                .context("reading recent authors")?;
        Ok(decode_all::<Named>("so_items", &rows)?.into_iter().map(|n| (n.name, n.at_ms)).collect())
    }

    /// Asset mentions since `since_ms` (to refill the volume baselines after a restart).
    pub async fn mentions(&self, since_ms: u64) -> Result<Vec<(String, u64)>> {
        let rows = sqlx::query("SELECT asset AS name, at_ms FROM so_item_assets WHERE at_ms >= $1 ORDER BY at_ms")
            .bind(since_ms as i64)
            .fetch_all(&self.pool)
            .await
            .context("reading recent mentions")?;
        Ok(decode_all::<Named>("so_item_assets", &rows)?.into_iter().map(|n| (n.name, n.at_ms)).collect())
    }

    /// Mention counts of `asset` between `from_ms` (inclusive) and `to_ms` (exclusive).
    pub async fn asset_counts(&self, asset: &str, from_ms: u64, to_ms: u64) -> Result<AssetCounts> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS volume, \
             COALESCE(SUM(CASE WHEN sentiment > $4 THEN 1 ELSE 0 END), 0) AS positive, \
             COALESCE(SUM(CASE WHEN sentiment < $5 THEN 1 ELSE 0 END), 0) AS negative, \
             COALESCE(AVG(sentiment), 0.0) AS mean_sentiment, COALESCE(AVG(score), 0.0) AS mean_score \
             FROM so_item_assets WHERE asset = $1 AND at_ms >= $2 AND at_ms < $3",
        )
        .bind(asset)
        .bind(from_ms as i64)
        .bind(to_ms as i64)
        .bind(SENTIMENT_THRESHOLD)
        .bind(-SENTIMENT_THRESHOLD)
        .fetch_one(&self.pool)
        .await
        .context("counting an asset's mentions")?;
        let all = sqlx::query("SELECT COUNT(*) AS n FROM so_item_assets WHERE at_ms >= $1 AND at_ms < $2")
            .bind(from_ms as i64)
            .bind(to_ms as i64)
            .fetch_one(&self.pool)
            .await
            .context("counting all mentions")?;
        let all = decode::<Count>("so_item_assets", &all)?.n;
        let c = decode::<CountsRecord>("so_item_assets", &row)?;
        Ok(AssetCounts {
            volume: c.volume,
            all_mentions: all,
            positive: c.positive,
            negative: c.negative,
            mean_sentiment: c.mean_sentiment,
            mean_score: c.mean_score,
        })
    }

    /// Every source seen in the store: items, last item, cursor time, skip counts.
    pub async fn sources(&self) -> Result<Vec<SourceRecord>> {
        let mut out: std::collections::BTreeMap<String, SourceRecord> = Default::default();
        let entry = |out: &mut std::collections::BTreeMap<String, SourceRecord>, s: &str| {
            out.entry(s.to_string())
                .or_insert_with(|| SourceRecord {
                    source: s.to_string(),
                    items: 0,
                    last_item_ms: None,
                    cursor_updated_ms: None,
                    skips: vec![],
                })
                .source
                .clone()
        };
        let rows =
            sqlx::query("SELECT source, COUNT(*) AS items, MAX(at_ms) AS last_item_ms FROM so_items GROUP BY source")
                .fetch_all(&self.pool)
                .await?;
        for r in decode_all::<SourceItems>("so_items", &rows)? {
            let s = entry(&mut out, &r.source);
            let e = out.get_mut(&s).expect("inserted");
            e.items = r.items;
            e.last_item_ms = Some(r.last_item_ms);
        }
        let rows = sqlx::query("SELECT source, updated_ms FROM so_cursors").fetch_all(&self.pool).await?;
        for r in decode_all::<SourceCursor>("so_cursors", &rows)? {
            let s = entry(&mut out, &r.source);
            out.get_mut(&s).expect("inserted").cursor_updated_ms = Some(r.updated_ms);
        }
        let rows =
            sqlx::query("SELECT source, reason, n FROM so_skips ORDER BY source, reason").fetch_all(&self.pool).await?;
        for r in decode_all::<SkipRecord>("so_skips", &rows)? {
            let s = entry(&mut out, &r.source);
            out.get_mut(&s).expect("inserted").skips.push((r.reason, r.n));
        }
        Ok(out.into_values().collect())
    }

    /// A trivial query, for health checks.
    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").fetch_one(&self.pool).await?;
        Ok(())
    }
}

/// A row of `so_items` (`assets` space-separated, `priority` by name, the hashes' bits kept in `BIGINT`).
#[derive(sqlx::FromRow)]
struct ItemRecord {
    seq: i64,
    id: String,
    source: String,
    kind: String,
    author: String,
    text: String,
    url: Option<String>,
    #[sqlx(try_from = "NonNegative")]
    at_ms: u64,
    #[sqlx(try_from = "NonNegative")]
    received_ms: u64,
    language: String,
    assets: String,
    sentiment: f64,
    score: f64,
    #[sqlx(try_from = "Parsed<Priority>")]
    priority: Priority,
    content_hash: i64,
    simhash: i64,
    #[sqlx(try_from = "NonNegative")]
    version: u64,
    edited_ms: Option<i64>,
}

impl From<ItemRecord> for StoredItem {
    fn from(r: ItemRecord) -> StoredItem {
        StoredItem {
            seq: r.seq,
            item: Item {
                id: r.id,
                source: r.source,
                kind: r.kind,
                author: r.author,
                text: r.text,
                url: r.url,
                at_ms: r.at_ms,
                received_ms: r.received_ms,
                language: r.language,
                assets: r.assets.split_whitespace().map(str::to_string).collect(),
                sentiment: r.sentiment,
                score: r.score,
                priority: r.priority,
                version: u32::try_from(r.version).unwrap_or(u32::MAX),
                edited_ms: r.edited_ms.and_then(|e| u64::try_from(e).ok()),
                content_hash: i2h(r.content_hash),
                simhash: i2h(r.simhash),
            },
        }
    }
}

/// A stored priority that is none of `low`, `normal`, `high`.
#[derive(Debug, thiserror::Error)]
#[error("'{0}' is not a priority (low, normal, high)")]
pub struct UnknownPriority(pub String);

impl std::str::FromStr for Priority {
    type Err = UnknownPriority;

    fn from_str(s: &str) -> Result<Priority, UnknownPriority> {
        Priority::parse(s).ok_or_else(|| UnknownPriority(s.to_string()))
    }
}

impl From<Parsed<Priority>> for Priority {
    fn from(p: Parsed<Priority>) -> Priority {
        p.0
    }
}

#[derive(sqlx::FromRow)]
struct FingerprintRecord {
    content_hash: i64,
    simhash: i64,
    #[sqlx(try_from = "NonNegative")]
    at_ms: u64,
}

/// An author's or an asset's last time.
#[derive(sqlx::FromRow)]
struct Named {
    name: String,
    #[sqlx(try_from = "NonNegative")]
    at_ms: u64,
}

#[derive(sqlx::FromRow)]
struct CursorRecord {
    cursor: String,
}

#[derive(sqlx::FromRow)]
struct Seq {
    seq: i64,
}

#[derive(sqlx::FromRow)]
struct Count {
    #[sqlx(try_from = "NonNegative")]
    n: u64,
}

#[derive(sqlx::FromRow)]
struct CountsRecord {
    #[sqlx(try_from = "NonNegative")]
    volume: u64,
    #[sqlx(try_from = "NonNegative")]
    positive: u64,
    #[sqlx(try_from = "NonNegative")]
    negative: u64,
    mean_sentiment: f64,
    mean_score: f64,
}

#[derive(sqlx::FromRow)]
struct SourceItems {
    source: String,
    #[sqlx(try_from = "NonNegative")]
    items: u64,
    /// (`MAX` of a `NOT NULL` column over a group that has rows.)
    #[sqlx(try_from = "NonNegative")]
    last_item_ms: u64,
}

#[derive(sqlx::FromRow)]
struct SourceCursor {
    source: String,
    #[sqlx(try_from = "NonNegative")]
    updated_ms: u64,
}

#[derive(sqlx::FromRow)]
struct SkipRecord {
    source: String,
    reason: String,
    #[sqlx(try_from = "NonNegative")]
    n: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(id: &str, assets: &[&str], sentiment: f64, at_ms: u64) -> Item {
        Item {
            id: id.into(),
            source: "s".into(),
            kind: "rss".into(),
            author: "a".into(),
            text: format!("text {id}"),
            url: None,
            at_ms,
            received_ms: at_ms,
            language: "en".into(),
            assets: assets.iter().map(|s| s.to_string()).collect(),
            sentiment,
            score: 1.0,
            priority: Priority::Normal,
            version: 1,
            edited_ms: None,
            content_hash: u64::MAX - 1,
            simhash: 7,
        }
    }

    #[tokio::test]
    async fn commit_writes_items_and_cursor_together_and_ignores_known_ids() {
        let s = Store::connect("sqlite::memory:").await.unwrap();
        assert_eq!(s.cursor("s").await.unwrap(), None);
        let w = s
            .commit(
                "s",
                vec![item("1", &["BTC"], 0.5, 10), item("2", &["BTC", "ETH"], -0.5, 20)],
                &[(Skip::TooLong, 2)],
                "{\"a\":1}",
                30,
            )
            .await
            .unwrap();
        assert_eq!(w.len(), 2);
        assert_eq!(s.cursor("s").await.unwrap().as_deref(), Some("{\"a\":1}"));
        let w =
            s.commit("s", vec![item("2", &["BTC"], 0.0, 20)], &[(Skip::TooLong, 1)], "{\"a\":2}", 40).await.unwrap();
        assert!(w.is_empty(), "a known id is not written twice");
        let all = s.items(&ItemQuery { limit: 10, ..Default::default() }).await.unwrap();
        assert_eq!(all.iter().map(|i| i.item.id.as_str()).collect::<Vec<_>>(), vec!["2", "1"]);
        assert_eq!(all[1].item.content_hash, u64::MAX - 1, "hashes survive the signed column");
        let eth = s.items(&ItemQuery { asset: Some("ETH".into()), limit: 10, ..Default::default() }).await.unwrap();
        assert_eq!(eth.len(), 1);
        let c = s.asset_counts("BTC", 0, 100).await.unwrap();
        assert_eq!((c.volume, c.all_mentions, c.positive, c.negative), (2, 3, 1, 1));
        let src = s.sources().await.unwrap();
        assert_eq!(src[0].skips, vec![("too_long".to_string(), 3)]);
        assert_eq!(src[0].items, 2);
    }

    #[tokio::test]
    async fn an_edit_rescores_in_place_once_and_a_deletion_hides_the_item() {
        let s = Store::connect("sqlite::memory:").await.unwrap();
        s.commit("s", vec![item("1", &["BTC"], 0.5, 10), item("2", &["ETH"], 0.1, 20)], &[], "{}", 30).await.unwrap();
        let mut e = item("1", &["ETH", "SOL"], -0.6, 10);
        e.text = "edited".into();
        let edit = |at: u64| Writes { edits: vec![(e.clone(), at)], ..Default::default() };
        let c = s.commit_changes("s", edit(40), &[], "{}", 50).await.unwrap();
        assert_eq!(c.edited.len(), 1);
        let st = &c.edited[0];
        assert_eq!((st.item.version, st.item.edited_ms, st.item.text.as_str()), (2, Some(40), "edited"));
        assert_eq!((st.item.at_ms, st.item.received_ms), (10, 10), "the post time stays the first one");
        // Replayed (same edit time) or older: nothing changes. Another source's item of that id: untouched.
        assert!(s.commit_changes("s", edit(40), &[], "{}", 50).await.unwrap().edited.is_empty());
        assert!(s.commit_changes("s", edit(39), &[], "{}", 50).await.unwrap().edited.is_empty());
        assert!(s.commit_changes("t", edit(41), &[], "{}", 50).await.unwrap().edited.is_empty());
        assert_eq!(s.asset_counts("BTC", 0, 100).await.unwrap().volume, 0, "the mentions follow the new text");
        let sol = s.asset_counts("SOL", 0, 100).await.unwrap();
        assert_eq!((sol.volume, sol.negative), (1, 1));
        let all = ItemQuery { limit: 10, ..Default::default() };
        assert_eq!(s.items(&all).await.unwrap()[1].item.version, 2);

        let del = Writes { deletes: vec!["1".into(), "nope".into()], ..Default::default() };
        let c = s.commit_changes("s", del.clone(), &[], "{}", 60).await.unwrap();
        assert_eq!(c.deleted.iter().map(|d| d.item.id.as_str()).collect::<Vec<_>>(), vec!["1"]);
        assert!(s.commit_changes("s", del, &[], "{}", 61).await.unwrap().deleted.is_empty(), "deleted once");
        assert!(s.commit_changes("s", edit(70), &[], "{}", 70).await.unwrap().edited.is_empty(), "no edit after");
        let ids: Vec<String> = s.items(&all).await.unwrap().into_iter().map(|i| i.item.id).collect();
        assert_eq!(ids, vec!["2"]);
        assert_eq!(s.asset_counts("SOL", 0, 100).await.unwrap().volume, 0);
        assert_eq!(s.fingerprints(0).await.unwrap().len(), 2, "the deleted item still guards against reposts");
    }

    /// The table and column of a value that does not read back.
    fn bad_column(e: &anyhow::Error) -> (&'static str, Option<&str>) {
        let e = e.downcast_ref::<kronos_common::db::RowError>().unwrap_or_else(|| panic!("not a row error: {e:#}"));
        (e.table, e.column.as_deref())
    }

    /// A stored value that is not of its column's type is an error naming the table and the column (the priority was
    /// read as `low` and a negative time wrapped around before).
    #[tokio::test]
    async fn a_corrupted_row_names_its_table_and_column() {
        let s = Store::connect("sqlite::memory:").await.unwrap();
        s.commit("s", vec![item("1", &["BTC"], 0.5, 10)], &[], "{}", 30).await.unwrap();
        let all = ItemQuery { limit: 10, ..Default::default() };
        assert_eq!(s.items(&all).await.unwrap()[0].item.priority, Priority::Normal);
        sqlx::query("UPDATE so_items SET priority = 'urgent'").execute(&s.pool).await.unwrap();
        let e = s.items(&all).await.unwrap_err();
        assert_eq!(bad_column(&e), ("so_items", Some("priority")));
        assert!(format!("{e:#}").contains("'urgent' is not a priority"), "{e:#}");
        sqlx::query("UPDATE so_items SET priority = 'high', at_ms = -5").execute(&s.pool).await.unwrap();
        assert_eq!(bad_column(&s.items(&all).await.unwrap_err()), ("so_items", Some("at_ms")));
        sqlx::query("UPDATE so_skips SET n = 1").execute(&s.pool).await.unwrap();
        sqlx::query("INSERT INTO so_skips (source, reason, n) VALUES ('s', 'too_long', -1)")
            .execute(&s.pool)
            .await
            .unwrap();
        assert_eq!(bad_column(&s.sources().await.unwrap_err()), ("so_items", Some("last_item_ms")));
        sqlx::query("UPDATE so_items SET at_ms = 10").execute(&s.pool).await.unwrap();
        assert_eq!(bad_column(&s.sources().await.unwrap_err()), ("so_skips", Some("n")));
    }
}
