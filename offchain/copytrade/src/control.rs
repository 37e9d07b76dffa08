//! The one control path into the copy-trader: copy-trading on/off, the runtime ratio, the emergency stop and resume.
//! This module is the only reader and writer of control state.
//!
//! - **Commands are appended, never overwritten.** Every writer — the daemon's HTTP API ([`Control::send`]),
//!   `kronos copytrade ratio|emergency-stop|resume` and the Telegram bot ([`append`]) — appends a [`ControlCommand`]
//!   to the store's `ct_control` log. The database assigns its sequence number in the same `INSERT` (SQLite
//!   `AUTOINCREMENT`, PostgreSQL `BIGSERIAL`), so separate processes never read-modify-write a shared value.
//! - **The state is the fold of the commands** in sequence order, the last command of each key winning
//!   ([`load`], pure rule: `decide::switches::fold`).
//! - **The engine's record of what it carried out** (the last emergency command's sequence, whether the stop is in
//!   force, since when, the ratio in effect) is a separate `ct_state` entry that only the engine writes
//!   ([`save_carried_out`]); it never touches the commands, so nothing it does can hide a command sent meanwhile.
//! - **Reading** parses each key on its own: `trading` unreadable ⇒ paused, `emergency` unreadable ⇒ the stop is
//!   carried out, a bad `ratio` is an error naming the key that leaves the ratio in force and blocks nothing else.
//! - **Latency**: in-process (the HTTP API) immediate — the command is appended, then the engine is woken
//!   ([`Control::woken`]); other processes (the bot, the CLI) within [`WATCH_INTERVAL`] — the engine's watcher
//!   ([`Control::watch`]) reads the log's highest sequence and wakes it — and the engine reads the log every
//!   [`POLL_INTERVAL`] too. Both take effect between turns; mid-turn a command not read yet holds every order that
//!   adds exposure (`decide::switches::may_send`), and so does a log that cannot be read, by the watcher or by the
//!   engine's own read: then only reductions (closes, reductions, stops) go out.
//! - **Migration**: a store written before this log keeps its state — the old `ct_state` keys are turned into
//!   commands when the store is opened ([`import_legacy`]); an emergency stop stored the old way stays in force.

use std::fmt;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use kronos_common::db::decode;
use kronos_common::Decimal;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::decide::switches::{fold, Entry, Watched};
pub use crate::decide::switches::{ControlState, EmergencyAsk, Stamp};
use crate::store::Store;

/// How often the engine reads the log for commands from other processes.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// The control keys (the `control_key` column).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ControlKey {
    Trading,
    Ratio,
    Emergency,
}

impl ControlKey {
    fn as_str(self) -> &'static str {
        match self {
            ControlKey::Trading => "trading",
            ControlKey::Ratio => "ratio",
            ControlKey::Emergency => "emergency",
        }
    }

    fn parse(s: &str) -> Option<ControlKey> {
        [ControlKey::Trading, ControlKey::Ratio, ControlKey::Emergency].into_iter().find(|k| k.as_str() == s)
    }
}

/// What a writer asks of the copy-trader.
#[derive(Debug, Clone, PartialEq)]
pub enum ControlCommand {
    /// Copy-trading on or off (off: no new orders; positions keep their stops).
    SetTrading(bool),
    /// The runtime ratio (0.001..100) over `copytrade.sizing.ratio`, and who set it; `None` goes back to the
    /// configured one.
    SetRatio { ratio: Option<Decimal>, set_by: String },
    /// Close everything and trade nothing new until resumed; sent again while it holds: another pass.
    EmergencyStop { reason: String },
    /// Lift the emergency stop.
    Resume,
}

// The `command` column.
const SET_TRADING: &str = "set_trading";
const SET_RATIO: &str = "set_ratio";
const RESET_RATIO: &str = "reset_ratio";
const EMERGENCY_STOP: &str = "emergency_stop";
const RESUME: &str = "resume";

impl ControlCommand {
    /// The key the command sets.
    pub fn key(&self) -> ControlKey {
        match self {
            ControlCommand::SetTrading(_) => ControlKey::Trading,
            ControlCommand::SetRatio { .. } => ControlKey::Ratio,
            ControlCommand::EmergencyStop { .. } | ControlCommand::Resume => ControlKey::Emergency,
        }
    }

    /// The command as stored.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            ControlCommand::SetTrading(_) => SET_TRADING,
            ControlCommand::SetRatio { ratio: Some(_), .. } => SET_RATIO,
            ControlCommand::SetRatio { ratio: None, .. } => RESET_RATIO,
            ControlCommand::EmergencyStop { .. } => EMERGENCY_STOP,
            ControlCommand::Resume => RESUME,
        }
    }

    /// The `value` column.
    fn value(&self) -> Option<String> {
        match self {
            ControlCommand::SetTrading(on) => Some(if *on { "1" } else { "0" }.into()),
            ControlCommand::SetRatio { ratio, .. } => ratio.map(|r| r.normalized().to_string()),
            ControlCommand::EmergencyStop { reason } => Some(reason.clone()),
            ControlCommand::Resume => None,
        }
    }
}

/// A stored control command that cannot be read: names its key, its place in the sequence, the value and what
/// was expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadValue {
    pub key: ControlKey,
    pub seq: i64,
    pub value: String,
    pub want: String,
}

impl BadValue {
    pub(crate) fn new(key: ControlKey, seq: i64, value: &str, want: &str) -> BadValue {
        BadValue { key, seq, value: value.into(), want: want.into() }
    }
}

impl fmt::Display for BadValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "copy-trader control `{}` (command #{} in ct_control): '{}' is not {}",
            self.key.as_str(),
            self.seq,
            self.value,
            self.want
        )
    }
}

impl std::error::Error for BadValue {}

/// A row of `ct_control`.
#[derive(sqlx::FromRow)]
struct ControlRow {
    seq: i64,
    control_key: String,
    command: String,
    value: Option<String>,
    set_by: String,
    at_ms: i64,
}

fn ratio_range() -> String {
    format!("a ratio from {} to {}", crate::report::MIN_RATIO, crate::report::MAX_RATIO)
}

/// The command a row holds, or what is wrong with it (`None`: the key itself is unknown).
fn parse_row(r: &ControlRow) -> Option<Entry> {
    let key = ControlKey::parse(&r.control_key)?;
    let stamp = Stamp { seq: r.seq, at_ms: r.at_ms, set_by: r.set_by.clone() };
    let value = r.value.as_deref();
    let bad = |want: &str| {
        let stored = format!("{} {}", r.command, value.unwrap_or(""));
        Err(BadValue::new(key, r.seq, stored.trim(), want))
    };
    let command = match (key, r.command.as_str(), value) {
        (ControlKey::Trading, SET_TRADING, Some("1")) => Ok(ControlCommand::SetTrading(true)),
        (ControlKey::Trading, SET_TRADING, Some("0")) => Ok(ControlCommand::SetTrading(false)),
        (ControlKey::Trading, _, _) => bad("set_trading 1 or set_trading 0"),
        (ControlKey::Ratio, SET_RATIO, Some(v)) => match crate::report::valid_ratio(v) {
            Some(ratio) => Ok(ControlCommand::SetRatio { ratio: Some(ratio), set_by: r.set_by.clone() }),
            None => Err(BadValue::new(key, r.seq, v, &ratio_range())),
        },
        (ControlKey::Ratio, RESET_RATIO, _) => Ok(ControlCommand::SetRatio { ratio: None, set_by: r.set_by.clone() }),
        (ControlKey::Ratio, _, _) => bad(&format!("set_ratio with {} or reset_ratio", ratio_range())),
        (ControlKey::Emergency, EMERGENCY_STOP, v) => {
            Ok(ControlCommand::EmergencyStop { reason: v.unwrap_or("emergency stop requested").to_string() })
        }
        (ControlKey::Emergency, RESUME, _) => Ok(ControlCommand::Resume),
        (ControlKey::Emergency, _, _) => bad("emergency_stop or resume"),
    };
    Some(Entry { key, stamp, command })
}

/// Appends `cmd` to the control log, sent `by` (for a ratio: its `set_by`); returns its sequence number. A running
/// copy-trader acts on it within [`POLL_INTERVAL`] (at once when sent through [`Control::send`] inside it).
pub async fn append(store: &Store, cmd: &ControlCommand, by: &str) -> Result<i64> {
    if let ControlCommand::SetRatio { ratio: Some(r), .. } = cmd {
        let v = r.to_string();
        if crate::report::valid_ratio(&v).is_none() {
            anyhow::bail!("ratio '{v}' is not {}", ratio_range());
        }
    }
    let set_by = match cmd {
        ControlCommand::SetRatio { set_by, .. } => set_by.as_str(),
        _ => by,
    };
    let row = sqlx::query(
        "INSERT INTO ct_control (control_key, command, value, set_by, at_ms) VALUES ($1, $2, $3, $4, $5) \
         RETURNING seq",
    )
    .bind(cmd.key().as_str())
    .bind(cmd.name())
    .bind(cmd.value())
    .bind(set_by)
    .bind(kronos_common::time::now_ms() as i64)
    .fetch_one(store.pool())
    .await
    .with_context(|| format!("appending the copy-trader control command {}", cmd.name()))?;
    Ok(decode::<Seq>("ct_control", &row)?.seq)
}

#[derive(sqlx::FromRow)]
struct Seq {
    seq: i64,
}

/// The highest sequence number of a command of a known key (0: none): the one the last read of [`load`] ends at
/// ([`ControlState::last_seq`]). Rows of unknown keys are left out as [`load`] ignores them.
async fn latest_seq(store: &Store) -> Result<i64> {
    let row = sqlx::query(
        "SELECT COALESCE(MAX(seq), 0) AS seq FROM ct_control WHERE control_key IN ('trading', 'ratio', 'emergency')",
    )
    .fetch_one(store.pool())
    .await
    .context("reading the copy-trader's control log (ct_control)")?;
    Ok(decode::<Seq>("ct_control", &row)?.seq)
}

/// The running watcher ([`Control::watch`]): stopped when dropped.
pub(crate) struct Watcher(tokio::task::JoinHandle<()>);

impl Drop for Watcher {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The control state: the last command of each key, folded. `Err` only when the store cannot be read; a value
/// that cannot be parsed is an error inside the state, for its key alone.
pub async fn load(store: &Store) -> Result<ControlState> {
    Ok(fold(&entries(store).await?))
}

async fn entries(store: &Store) -> Result<Vec<Entry>> {
    let rows = sqlx::query(
        "SELECT seq, control_key, command, value, set_by, at_ms FROM ct_control c \
         WHERE seq = (SELECT MAX(seq) FROM ct_control d WHERE d.control_key = c.control_key) ORDER BY seq",
    )
    .fetch_all(store.pool())
    .await
    .context("reading the copy-trader's control log (ct_control)")?;
    let mut out = Vec::new();
    for row in &rows {
        // The key first: a row of an unknown key is ignored whatever else it holds, and a row of a known key that
        // does not decode (a hand-inserted `at_ms` of 'yesterday') is unreadable for its key alone — the fold fails
        // safe for that key — instead of failing the whole load.
        let head = decode::<KeyRow>("ct_control", row)?;
        let Some(key) = ControlKey::parse(&head.control_key) else { continue };
        match decode::<ControlRow>("ct_control", row) {
            Ok(r) => out.extend(parse_row(&r)),
            Err(e) => out.push(Entry {
                key,
                stamp: Stamp { seq: head.seq, at_ms: 0, set_by: String::new() },
                command: Err(BadValue::new(key, head.seq, &e.to_string(), "a row that can be read")),
            }),
        }
    }
    Ok(out)
}

/// The columns read before the rest: which command of which key a row is.
#[derive(sqlx::FromRow)]
struct KeyRow {
    seq: i64,
    control_key: String,
}

/// What the engine carried out: written by the engine only, never by a writer of commands.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CarriedOut {
    /// The sequence number of the last emergency command (stop or resume) carried out; 0: none.
    pub emergency_seq: i64,
    /// The emergency stop is in force.
    pub emergency_active: bool,
    /// When the stop in force was carried out (epoch ms).
    pub emergency_at_ms: Option<i64>,
    /// The ratio the engine took as in effect.
    pub ratio_effective: Option<String>,
    /// What the last pass of the emergency stop left, and for which command (none yet: `None`; a record written
    /// before this field existed reads as none).
    #[serde(default)]
    pub emergency_report: Option<EmergencyReport>,
}

/// The error of an emergency stop that could not be recorded, for the CLI and the Telegram bot: the copy-trader's
/// store (its control log) cannot be reached or written — the database down, the disk full — so nothing was
/// stopped, and there is no other way into a running copy-trader (its API appends to the same log). It says what is
/// down and what to do instead; `error` (the store's own error, its URL's password masked) follows it.
pub fn stop_not_recorded(error: anyhow::Error) -> anyhow::Error {
    error.context(
        "the copy-trader's store (its control log) cannot be written, so the emergency stop was NOT recorded and \
         nothing was stopped: stop the copy-trader's process (it then sends no order; the stops it placed stay on \
         the exchange) or close the positions on the exchange directly, then fix the store",
    )
}

/// The answer of `POST /api/emergency-stop` and `POST /api/resume` (202): the command was appended to the control
/// log under `seq`; the engine's [`EmergencyReport`] of what it did names that number.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlAccepted {
    /// `true` for an emergency stop, `false` for a resume.
    pub emergency: bool,
    /// The command's sequence number in the control log.
    pub seq: i64,
}

/// The outcome of an emergency pass, as the engine records it for whoever asked: the bot and the CLI wait for a
/// report naming their command's sequence number (or a later one), never for one that merely came after their
/// clock ([`crate::report::emergency_report`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmergencyReport {
    /// The sequence number of the emergency command the pass carried out: the last one the engine had read, so the
    /// pass answers every stop numbered up to it.
    pub seq: i64,
    /// Nothing left open.
    pub done: bool,
    /// What is still open, or why it could not be closed (empty when done).
    pub detail: String,
    /// When the pass ended (epoch ms).
    pub at_ms: i64,
}

/// The engine's record key in `ct_state`.
const CARRIED_OUT: &str = "control_carried_out";

/// The engine's record (none yet: the default). A record that cannot be read is an error naming its key.
pub async fn carried_out(store: &Store) -> Result<CarriedOut> {
    match store.get_state(CARRIED_OUT).await? {
        None => Ok(CarriedOut::default()),
        Some(v) => serde_json::from_str(&v)
            .with_context(|| format!("the copy-trader's record `{CARRIED_OUT}` in ct_state holds '{v}'")),
    }
}

/// Saves the engine's record (the engine only).
pub(crate) async fn save_carried_out(store: &Store, c: &CarriedOut) -> Result<()> {
    store.set_state(CARRIED_OUT, &serde_json::to_string(c)?).await
}

// The keys a store written before the control log kept its switches in (ct_state).
const LEGACY_TRADING: &str = "trading";
const LEGACY_RATIO: &str = "ratio";
const LEGACY_RATIO_SET_BY: &str = "ratio_set_by";
const LEGACY_RATIO_SET_MS: &str = "ratio_set_ms";
const LEGACY_RATIO_EFFECTIVE: &str = "ratio_effective";
const LEGACY_EMERGENCY: &str = "emergency";
const LEGACY_BY: &str = "the store before the control log (migrated)";

#[derive(sqlx::FromRow)]
struct LegacyRow {
    value: String,
    updated_ms: i64,
}

/// Removes an old key, returning what it held.
async fn take_legacy(conn: &mut sqlx::AnyConnection, key: &str) -> Result<Option<LegacyRow>> {
    let row = sqlx::query("DELETE FROM ct_state WHERE key = $1 RETURNING value, updated_ms")
        .bind(key)
        .fetch_optional(&mut *conn)
        .await
        .with_context(|| format!("importing the copy-trader's old `{key}` key"))?;
    Ok(row.map(|r| decode::<LegacyRow>("ct_state", &r)).transpose()?)
}

/// Turns the old `ct_state` switches into commands of the log, in one transaction, and removes them: the state they
/// held stays in force (an emergency stop stored the old way stays active; a value the old engine would not have
/// read is appended as it is and read as unreadable, so it fails safe). Run whenever a store is opened.
pub(crate) async fn import_legacy(store: &Store) -> Result<()> {
    let mut tx = store.pool().begin().await.context("importing the copy-trader's old control keys")?;
    let trading = take_legacy(&mut tx, LEGACY_TRADING).await?;
    let ratio = take_legacy(&mut tx, LEGACY_RATIO).await?;
    let ratio_by = take_legacy(&mut tx, LEGACY_RATIO_SET_BY).await?;
    let ratio_ms = take_legacy(&mut tx, LEGACY_RATIO_SET_MS).await?;
    let effective = take_legacy(&mut tx, LEGACY_RATIO_EFFECTIVE).await?;
    let emergency = take_legacy(&mut tx, LEGACY_EMERGENCY).await?;
    let mut rows: Vec<(ControlKey, &str, Option<String>, String, i64)> = Vec::new();
    if let Some(t) = trading {
        // "1" and "0" as before; anything else kept as it is (unreadable: paused).
        rows.push((ControlKey::Trading, SET_TRADING, Some(t.value), LEGACY_BY.into(), t.updated_ms));
    }
    if let Some(r) = ratio {
        let by = ratio_by.map(|b| b.value).unwrap_or_else(|| LEGACY_BY.into());
        let at = ratio_ms.and_then(|m| m.value.parse().ok()).unwrap_or(r.updated_ms);
        rows.push((ControlKey::Ratio, SET_RATIO, Some(r.value), by, at));
    }
    if let Some(e) = emergency {
        let (cmd, value) = match e.value.as_str() {
            "1" => (EMERGENCY_STOP, Some("emergency stop stored before the control log".to_string())),
            "0" => (RESUME, None),
            // Unreadable: kept as it is, read as a stop (fail safe).
            _ => ("legacy_emergency", Some(e.value)),
        };
        rows.push((ControlKey::Emergency, cmd, value, LEGACY_BY.into(), e.updated_ms));
    }
    for (key, cmd, value, by, at) in rows {
        sqlx::query("INSERT INTO ct_control (control_key, command, value, set_by, at_ms) VALUES ($1, $2, $3, $4, $5)")
            .bind(key.as_str())
            .bind(cmd)
            .bind(value)
            .bind(by)
            .bind(at)
            .execute(&mut *tx)
            .await
            .context("importing the copy-trader's old control keys")?;
    }
    if let Some(e) = effective {
        // The ratio the old engine took as in effect: the engine's record now.
        let mut rec: CarriedOut = match sqlx::query("SELECT value, updated_ms FROM ct_state WHERE key = $1")
            .bind(CARRIED_OUT)
            .fetch_optional(&mut *tx)
            .await?
        {
            Some(r) => serde_json::from_str(&decode::<LegacyRow>("ct_state", &r)?.value).unwrap_or_default(),
            None => CarriedOut::default(),
        };
        rec.ratio_effective.get_or_insert(e.value);
        sqlx::query(
            "INSERT INTO ct_state (key, value, updated_ms) VALUES ($1, $2, $3) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_ms = excluded.updated_ms",
        )
        .bind(CARRIED_OUT)
        .bind(serde_json::to_string(&rec)?)
        .bind(e.updated_ms)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await.context("importing the copy-trader's old control keys")?;
    Ok(())
}

/// How often the engine's watcher ([`Control::watch`]) reads the control log's highest sequence number while the
/// engine runs, also mid-turn.
pub const WATCH_INTERVAL: Duration = Duration::from_millis(250);

/// [`Watch::latest`] when the watcher could not read the log.
const UNREADABLE: i64 = -1;

/// The control path inside the daemon: a command is appended, then the engine is woken at once.
#[derive(Clone)]
pub struct Control {
    store: Store,
    wake: Arc<Notify>,
    /// How many commands this process has sent: raised before [`Control::send`] returns, so the engine — which
    /// compares it with the count it last read the log at before any order that can grow a position — never opens
    /// anything after the API accepted a command it has not read yet (an emergency stop sent mid-turn).
    sent: Arc<AtomicU64>,
    /// The highest sequence number the watcher read ([`UNREADABLE`]: its last read failed): the same guard for the
    /// commands of other processes (the bot, the CLI), which the engine's own read sees only between turns.
    latest: Arc<AtomicI64>,
}

impl Control {
    pub fn new(store: Store) -> Control {
        Control {
            store,
            wake: Arc::new(Notify::new()),
            sent: Arc::new(AtomicU64::new(0)),
            latest: Arc::new(AtomicI64::new(0)),
        }
    }

    /// What the watcher last read of the log (nothing yet: sequence 0).
    pub(crate) fn watched(&self) -> Watched {
        match self.latest.load(Ordering::SeqCst) {
            UNREADABLE => Watched::Unreadable,
            s => Watched::Seq(s),
        }
    }

    /// The highest sequence number the watcher has read from the log (`None` while its last read failed): how far
    /// the commands of other processes are seen mid-turn — what a test waits for before letting a slow turn go on.
    pub fn watched_seq(&self) -> Option<i64> {
        match self.watched() {
            Watched::Seq(s) => Some(s),
            Watched::Unreadable => None,
        }
    }

    /// The watcher: reads the log's highest sequence every [`WATCH_INTERVAL`] into [`Control::watched`] and wakes
    /// the engine when it grew (or the log turned unreadable), so a command from another process is read as soon as
    /// the turn under way ends, and until then nothing that adds exposure goes out
    /// ([`crate::decide::switches::may_send`]). Runs until the handle is dropped.
    pub(crate) fn watch(&self) -> Watcher {
        let me = self.clone();
        Watcher(tokio::spawn(async move {
            loop {
                let read = latest_seq(&me.store).await;
                let now = *read.as_ref().unwrap_or(&UNREADABLE);
                let before = me.latest.swap(now, Ordering::SeqCst);
                if now != before && (now > before || now == UNREADABLE) {
                    // The engine's own read (woken now) reports an unreadable log; said here once as well.
                    if let Err(e) = read {
                        tracing::warn!(
                            error = %format!("{e:#}"),
                            "copy-trader: the control log's watcher cannot read it; no new exposure until it can"
                        );
                    }
                    me.wake.notify_one();
                }
                tokio::time::sleep(WATCH_INTERVAL).await;
            }
        }))
    }

    /// Appends `cmd` durably (see [`append`]), then wakes the engine, which reads it through [`load`].
    pub async fn send(&self, cmd: &ControlCommand, by: &str) -> Result<i64> {
        let seq = append(&self.store, cmd, by).await?;
        self.sent.fetch_add(1, Ordering::SeqCst);
        self.wake.notify_one();
        Ok(seq)
    }

    /// How many commands this process has sent so far (see the field).
    pub(crate) fn sent(&self) -> u64 {
        self.sent.load(Ordering::SeqCst)
    }

    /// Resolves once a command was sent since the last call (one sent while nobody waits is not lost).
    pub(crate) async fn woken(&self) {
        self.wake.notified().await
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::decide::testing::d;

    async fn store() -> Store {
        Store::connect("sqlite::memory:").await.unwrap()
    }

    #[tokio::test]
    async fn commands_are_appended_with_increasing_sequence_and_the_last_of_each_key_wins() {
        let s = store().await;
        let a = append(&s, &ControlCommand::EmergencyStop { reason: "one".into() }, "test").await.unwrap();
        let b = append(&s, &ControlCommand::Resume, "test").await.unwrap();
        let c = append(&s, &ControlCommand::SetTrading(false), "test").await.unwrap();
        let e = append(&s, &ControlCommand::SetRatio { ratio: Some(d("0.80")), set_by: "Telegram".into() }, "x")
            .await
            .unwrap();
        assert!(a < b && b < c && c < e, "{a} {b} {c} {e}");
        let st = load(&s).await.unwrap();
        assert!(!st.trading_on() && !st.emergency_asked());
        let (r, stamp) = st.ratio.unwrap().unwrap();
        assert_eq!((r, stamp.set_by.as_str(), stamp.seq), (Some(d("0.8")), "Telegram", e));
        // A ratio out of bounds is refused before it is stored.
        let err = append(&s, &ControlCommand::SetRatio { ratio: Some(d("101")), set_by: "t".into() }, "t").await;
        assert!(err.unwrap_err().to_string().contains("ratio '101'"));
    }

    /// Audit finding (f): the old request counter was read, incremented and written back (two writers could both
    /// write the same count). Here the database numbers each command inside its INSERT: concurrent writers from
    /// separate connections (as the bot, the CLI and the daemon are) never share or lose a number.
    #[tokio::test]
    async fn concurrent_writers_from_separate_connections_each_get_their_own_sequence_number() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite:{}/ct.sqlite", dir.path().display());
        let first = Store::connect(&url).await.unwrap();
        let mut writers = Vec::new();
        for w in 0..4 {
            let s = Store::connect(&url).await.unwrap();
            writers.push(tokio::spawn(async move {
                let mut seqs = Vec::new();
                for i in 0..10 {
                    let cmd = ControlCommand::EmergencyStop { reason: format!("writer {w} #{i}") };
                    seqs.push(append(&s, &cmd, "test").await.unwrap());
                }
                seqs
            }));
        }
        let mut all = Vec::new();
        for w in writers {
            let seqs = w.await.unwrap();
            assert!(seqs.windows(2).all(|p| p[0] < p[1]), "each writer's own commands in order: {seqs:?}");
            all.extend(seqs);
        }
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 40, "forty commands, forty distinct numbers");
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM ct_control").fetch_one(first.pool()).await.unwrap();
        assert_eq!(n, 40);
        let (_, stamp) = load(&first).await.unwrap().emergency.unwrap().unwrap();
        assert_eq!(stamp.seq, *all.last().unwrap(), "the last one numbered is the state");
    }

    /// The watcher's number is the one the engine's read ends at, rows of unknown keys left out (else a row of an
    /// unknown key would hold entries for good).
    #[tokio::test]
    async fn the_watched_sequence_is_where_a_read_of_the_log_ends() {
        let s = store().await;
        assert_eq!(latest_seq(&s).await.unwrap(), 0);
        let a = append(&s, &ControlCommand::SetTrading(true), "test").await.unwrap();
        let b = append(&s, &ControlCommand::EmergencyStop { reason: "x".into() }, "test").await.unwrap();
        sqlx::query(
            "INSERT INTO ct_control (control_key, command, value, set_by, at_ms) VALUES ('other', 'x', '', 'h', 0)",
        )
        .execute(s.pool())
        .await
        .unwrap();
        assert!(a < b);
        assert_eq!(latest_seq(&s).await.unwrap(), b);
        assert_eq!(load(&s).await.unwrap().last_seq(), b);
        let c = append(&s, &ControlCommand::Resume, "test").await.unwrap();
        assert_eq!(latest_seq(&s).await.unwrap(), c);
        assert_eq!(load(&s).await.unwrap().last_seq(), c);
        // The watcher carries it and wakes the engine.
        let control = Control::new(s.clone());
        let watcher = control.watch();
        tokio::time::timeout(Duration::from_secs(10), control.woken()).await.expect("woken by the watcher");
        assert_eq!(control.watched(), Watched::Seq(c));
        drop(watcher);
    }

    #[tokio::test]
    async fn a_stored_value_that_cannot_be_read_names_its_key_and_fails_safe() {
        let s = store().await;
        for (key, cmd, value) in
            [("trading", "set_trading", "yes"), ("ratio", "set_ratio", "abc"), ("emergency", "halt", "")]
        {
            sqlx::query(
                "INSERT INTO ct_control (control_key, command, value, set_by, at_ms) VALUES ($1, $2, $3, 'hand', 0)",
            )
            .bind(key)
            .bind(cmd)
            .bind(value)
            .execute(s.pool())
            .await
            .unwrap();
        }
        let st = load(&s).await.unwrap();
        assert!(!st.trading_on(), "trading unreadable: paused");
        assert!(st.emergency_asked(), "emergency unreadable: asked");
        let errors = st.errors();
        assert_eq!(errors.len(), 3, "{errors:?}");
        assert!(errors[0].contains("`trading`") && errors[0].contains("yes"), "{errors:?}");
        assert!(errors[1].contains("`ratio`") && errors[1].contains("'abc'"), "{errors:?}");
        assert!(errors[2].contains("`emergency`") && errors[2].contains("halt"), "{errors:?}");
    }

    /// The log on any backend (run by the store's SQLite and PostgreSQL round trips): numbered in order, folded.
    pub(crate) async fn exercise(s: &Store) {
        let a = append(s, &ControlCommand::EmergencyStop { reason: "x".into() }, "t").await.unwrap();
        let b = append(s, &ControlCommand::Resume, "t").await.unwrap();
        let c = append(s, &ControlCommand::SetRatio { ratio: Some(d("2")), set_by: "t".into() }, "t").await.unwrap();
        assert!(a < b && b < c, "{a} {b} {c}");
        let st = load(s).await.unwrap();
        assert!(!st.emergency_asked() && st.trading_on());
        assert_eq!(st.ratio.unwrap().unwrap().0, Some(d("2")));
    }

    /// Migration: a store written before the control log keeps its switches; an emergency stop stored the old way
    /// stays in force, and so does an old value the old engine could not read (read as a stop).
    #[tokio::test]
    async fn a_store_with_the_old_keys_keeps_its_state() {
        let dir = tempfile::tempdir().unwrap();
        old_keys_are_imported(&format!("sqlite:{}/ct.sqlite", dir.path().display())).await;
    }

    /// `url`: a store with no control commands yet.
    pub(crate) async fn old_keys_are_imported(url: &str) {
        let s = Store::connect(url).await.unwrap();
        for (k, v) in [
            (LEGACY_EMERGENCY, "1"),
            (LEGACY_TRADING, "0"),
            (LEGACY_RATIO, "0.8"),
            (LEGACY_RATIO_SET_BY, "Telegram /ratio"),
            (LEGACY_RATIO_SET_MS, "1764612583000"),
            (LEGACY_RATIO_EFFECTIVE, "0.8"),
        ] {
            s.set_state(k, v).await.unwrap();
        }
        drop(s);
        let s = Store::connect(url).await.unwrap();
        let st = load(&s).await.unwrap();
        assert!(st.emergency_asked() && !st.trading_on());
        let (r, stamp) = st.ratio.clone().unwrap().unwrap();
        assert_eq!((r, stamp.set_by.as_str(), stamp.at_ms), (Some(d("0.8")), "Telegram /ratio", 1764612583000));
        assert_eq!(carried_out(&s).await.unwrap().ratio_effective.as_deref(), Some("0.8"));
        for k in [LEGACY_EMERGENCY, LEGACY_TRADING, LEGACY_RATIO, LEGACY_RATIO_SET_BY, LEGACY_RATIO_EFFECTIVE] {
            assert_eq!(s.get_state(k).await.unwrap(), None, "{k} imported once");
        }
        // Opened again: nothing imported twice, the state unchanged.
        drop(s);
        let s = Store::connect(url).await.unwrap();
        assert_eq!(load(&s).await.unwrap(), st);
        // An old value that is neither 1 nor 0 stays unreadable, and so the stop holds.
        s.set_state(LEGACY_EMERGENCY, "yes").await.unwrap();
        drop(s);
        let s = Store::connect(url).await.unwrap();
        let st = load(&s).await.unwrap();
        assert!(st.emergency.is_err() && st.emergency_asked());
        // An old resume is a resume.
        s.set_state(LEGACY_EMERGENCY, "0").await.unwrap();
        drop(s);
        let s = Store::connect(url).await.unwrap();
        assert!(!load(&s).await.unwrap().emergency_asked());
    }

    #[tokio::test]
    async fn the_engines_record_is_its_own_key_and_a_command_never_touches_it() {
        let s = store().await;
        let rec =
            CarriedOut { emergency_seq: 3, emergency_active: true, emergency_at_ms: Some(7), ..CarriedOut::default() };
        save_carried_out(&s, &rec).await.unwrap();
        append(&s, &ControlCommand::Resume, "t").await.unwrap();
        assert_eq!(carried_out(&s).await.unwrap(), rec);
        s.set_state(CARRIED_OUT, "{oops").await.unwrap();
        let e = carried_out(&s).await.unwrap_err();
        assert!(format!("{e:#}").contains("control_carried_out"), "{e:#}");
    }
}
