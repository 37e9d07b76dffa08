//! The follower: one task that owns every decision, so no two orders for a symbol ever race.
//!
//! Inputs: the lead's user-data stream (low delay) and its positions polled over REST (the fallback, and the
//! reconciliation after every reconnect), forecast signals (AI mode), a reconcile timer, and the control state
//! ([`crate::control`]: read once a second, and at once when the API or the log's watcher — a new command from any
//! writer, seen within 250 ms — wakes it; until then, also mid-turn, nothing that adds exposure goes out; the engine
//! writes only its own record of what it carried out, never the commands).
//!
//! For each symbol the follower computes a target (lead × ratio while following, plus the AI position), passes it
//! through the caps, and trades the difference: first a reduce-only order for what must shrink or close, then an
//! entry for what must grow, if entries are allowed. Every order is written to the store before it is sent and
//! carries its own client id, so an unknown outcome — or a crash — is resolved by asking the exchange, never by
//! sending again. Every position gets a close-position stop right after the fill that changed it.
//!
//! This is the executor: it reads the exchange and the store, sends orders and stops, records and publishes. What to
//! do at each step — the target and its orders, the stop, the risk checks, the emergency stop's closes and retries,
//! the switches, orders of unknown fate, AI targets — is decided by the pure functions of [`crate::decide`].
//!
//! Files: this one holds the [`Engine`] struct, its construction, start-up (and the paper wallet's restore), the
//! status it publishes, and the main loop ([`Engine::run`], which also starts the control log's watcher); the rest
//! are `impl Engine` blocks by job:
//! - `orders.rs`: the lead's positions (poll and stream), forecasts, `apply` (target to orders), `send_order`, fills;
//! - `protection.rs`: `protect` (the close-position stop), `verify_stops`, replaced and held stops, cancels, the
//!   stray stops' clean-up, a paper stop that triggered;
//! - `reconciliation.rs`: orders pending after a restart, the positions reconcile and its flat verdicts, orders of
//!   unknown fate;
//! - `commands.rs`: the equity and the risk checks, the emergency stop (passes, retries, reports), resume, reading the
//!   control log (pause, ratio) and noting its errors.

mod commands;
mod orders;
mod protection;
mod reconciliation;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kronos_binance::sim::SimPosition;
use kronos_binance::stream::{run_user_stream, StreamConfig, StreamEvent};
use kronos_binance::types::{Side, Trade};
use kronos_binance::{BinanceError, FuturesClient, SymbolFilters};
use kronos_common::{Bus, Decimal, Secret, SignalKind};
use parking_lot::Mutex;
use serde::Serialize;
use tokio::sync::mpsc;

use crate::ai::Forecast;
use crate::config::{Config, SignalSource};
use crate::control::{self, CarriedOut, Control};
use crate::decide::ai::AiTarget;
use crate::decide::emergency::{self, RateLimit};
use crate::decide::stops::{self, StopInfo};
use crate::decide::switches;
use crate::decide::unknown::UnknownOrder;
use crate::lead::LeadBook;
use crate::metrics::{KindLabel, Metrics, WhatLabel};
use crate::risk::RiskState;
use crate::store::{OrderUpdate, Store};
use crate::venue::{Equity, Position, Venue};

pub use crate::decide::target::proportional_reduction;

const SOURCE: &str = "copytrader";

/// A follower position as the status view shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PositionView {
    pub symbol: String,
    pub qty: String,
    pub entry_price: String,
    pub stop_price: Option<String>,
}

/// The AI target of a symbol.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AiView {
    pub symbol: String,
    pub market: String,
    pub epoch: u64,
    pub p_up_bps: u16,
    pub edge: String,
    pub qty: String,
    pub expires_ms: i64,
}

/// What `/api/status` shows.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Status {
    pub mode: String,
    pub network: String,
    pub started_ms: i64,
    pub ready: bool,
    pub healthy: bool,
    pub detail: String,
    pub risk: RiskState,
    pub entries_blocked: Option<String>,
    pub equity: Option<String>,
    pub wallet: Option<String>,
    pub unrealized: Option<String>,
    pub positions: Vec<PositionView>,
    pub lead: Vec<(String, String, Option<String>)>,
    pub ai: Vec<AiView>,
    pub lead_stream_connected: bool,
    pub last_lead_poll_ms: i64,
    pub last_reconcile_ms: i64,
    pub banned_until_ms: u64,
    pub trading: bool,
    pub ratio: String,
    /// Failed polls of the lead's positions since start, and the last failure (kept until the next one).
    pub lead_poll_errors: u64,
    pub last_lead_poll_error: Option<String>,
    /// Positions (`SYMBOL SIDE qty`) an emergency stop has not closed yet; empty when none is pending.
    pub emergency_open: Vec<String>,
    /// Reconciliations completed since start (each: positions re-read, targets re-applied, stops checked).
    pub reconciles: u64,
    /// Control values that cannot be read (each naming its key), or why the control log could not be read; empty
    /// when all is well.
    pub control_errors: Vec<String>,
}

/// An entry refused by the protections is reported at most this often per symbol.
const BLOCKED_NOTE_REPEAT: Duration = Duration::from_secs(60);

/// A failed store write of the same kind and symbol is alerted at most this often (each is logged and counted).
const STORE_ALERT_REPEAT: Duration = Duration::from_secs(60);

/// What a store write the engine goes on without was to record ([`Engine::persisted`]).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Stored<'a> {
    /// The lead's position and the follower's limit in a symbol (`ct_lead`): after a restart it decides what the
    /// follower trades.
    Lead(&'a str),
    /// An order's or a stop's status and answer (`ct_orders`).
    Order { symbol: &'a str, client_id: &'a str },
    /// A fill of an order (`ct_fills`).
    Fill { symbol: &'a str, client_id: &'a str },
    /// The follower's position in a symbol (`ct_positions`).
    Position(&'a str),
    /// The account's equity (`ct_equity`).
    Equity,
    /// The risk state: the day's loss, the equity peak, a cool-down (`ct_state`).
    Risk,
    /// The paper account's wallet (`ct_state`).
    PaperWallet,
}

/// The rows written again at each reconcile (and at a clean stop) until a write succeeds ([`Engine::save_unsaved`]).
#[derive(Debug, Default)]
pub(crate) struct Unsaved {
    leads: BTreeSet<String>,
    positions: BTreeSet<String>,
    risk: bool,
}

impl Unsaved {
    /// Records how a write of `what` went.
    fn note(&mut self, what: &Stored<'_>, ok: bool) {
        match (what, ok) {
            (Stored::Lead(s), true) => {
                self.leads.remove(*s);
            }
            (Stored::Lead(s), false) => {
                self.leads.insert((*s).to_string());
            }
            (Stored::Position(s), true) => {
                self.positions.remove(*s);
            }
            (Stored::Position(s), false) => {
                self.positions.insert((*s).to_string());
            }
            (Stored::Risk, ok) => self.risk = !ok,
            _ => {}
        }
    }
}

impl Stored<'_> {
    /// The metric label.
    fn label(&self) -> &'static str {
        match self {
            Stored::Lead(_) => "lead",
            Stored::Order { .. } => "order",
            Stored::Fill { .. } => "fill",
            Stored::Position(_) => "position",
            Stored::Equity => "equity",
            Stored::Risk => "risk",
            Stored::PaperWallet => "paper_wallet",
        }
    }

    fn symbol(&self) -> &str {
        match self {
            Stored::Lead(s) | Stored::Position(s) => s,
            Stored::Order { symbol, .. } | Stored::Fill { symbol, .. } => symbol,
            Stored::Equity | Stored::Risk | Stored::PaperWallet => "",
        }
    }

    /// What was not recorded, in words.
    fn describe(&self) -> String {
        match self {
            Stored::Lead(_) => "the lead's position (read back at a restart)".into(),
            Stored::Order { client_id, .. } => format!("the status of order {client_id}"),
            Stored::Fill { client_id, .. } => format!("a fill of order {client_id}"),
            Stored::Position(_) => "the follower's position".into(),
            Stored::Equity => "the equity".into(),
            Stored::Risk => "the risk state (read back at a restart)".into(),
            Stored::PaperWallet => "the paper wallet".into(),
        }
    }
}

/// Handles shared with the API and the caller.
#[derive(Clone)]
pub struct Handles {
    pub status: Arc<Mutex<Status>>,
    pub metrics: Arc<Metrics>,
    /// The one control path: commands are appended to the store, then the engine is woken at once.
    pub control: Control,
    pub store: Store,
    pub bus: Bus,
    /// The control API's token (`copytrade.api_token_env`); `None`: the control endpoints are refused.
    pub control_token: Option<Secret>,
}

/// Test and benchmark hooks.
#[derive(Debug, Clone)]
pub struct Tuning {
    pub stream: StreamConfig,
    /// How often the paper account checks its stops against the mark, and the control log for commands from other
    /// processes (default [`control::POLL_INTERVAL`]).
    pub fast_tick: Duration,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning { stream: StreamConfig::default(), fast_tick: control::POLL_INTERVAL }
    }
}

/// The copy-trader engine.
pub struct Engine {
    cfg: Config,
    venue: Venue,
    lead_client: Option<FuturesClient>,
    store: Store,
    bus: Bus,
    metrics: Arc<Metrics>,
    status: Arc<Mutex<Status>>,
    tuning: Tuning,
    control: Control,
    /// What this engine carried out of the control commands (its own record in the store).
    carried: CarriedOut,
    /// The control errors reported (each is reported once, until it changes).
    control_errors: Vec<String>,
    /// The last emergency command that cut start-up's back-off short.
    backoff_woken_seq: i64,
    filters: HashMap<String, SymbolFilters>,
    hedge: bool,
    lead: LeadBook,
    lead_sides: HashMap<(String, String), Decimal>,
    follower: BTreeMap<String, Position>,
    stops: BTreeMap<String, StopInfo>,
    /// Stops replaced by the one held whose fate was not settled when they were replaced (their cancel answered
    /// -2011/-2013 and the question about them failed or gave an unknown status, or they were firing): kept beside
    /// the held one only so that a position found flat is known as a stop-out if one of them fired
    /// ([`stops::flat_fate`]); asked again at every reconcile until settled ([`stops::replaced_plan`]). Never
    /// taken for the position's protection, and never cancelled by the clean-up.
    replaced: BTreeMap<String, Vec<StopInfo>>,
    unknown: Vec<UnknownOrder>,
    /// Symbols whose flat verdict the last reconcile pass deferred for an order of unknown outcome
    /// ([`crate::decide::reconcile::flat_waits_for_unknown`]): no entry goes out in them until a pass judges them
    /// (AUDIT6-CT M3: an entry sent against the recorded position on a flat account re-entered a stopped-out one).
    flat_deferred: std::collections::BTreeSet<String>,
    /// While an emergency stop has not closed everything: when to try again, and the current back-off.
    emergency_retry: Option<(Instant, Duration)>,
    /// Emergency alerts raised, by what they said (repeats are rate-limited).
    emergency_alerted: RateLimit,
    /// The last error an order met (for the emergency stop's report of a close the exchange refuses).
    last_order_error: Option<String>,
    ai: BTreeMap<String, AiTarget>,
    /// Signed quantities of late-found orders (booked, not yet adopted): the next reconcile adopts the exchange's
    /// position for them without calling it drift.
    explained: HashMap<String, Decimal>,
    risk: RiskState,
    marks: HashMap<String, Decimal>,
    equity: Option<Equity>,
    run_id: String,
    seq: u64,
    /// Refused entries reported, by symbol (repeats are rate-limited).
    blocked_noted: RateLimit,
    /// Failed store writes alerted, by what and symbol (repeats are rate-limited; each is logged and counted).
    store_alerted: Mutex<RateLimit>,
    /// Rows whose last write failed and that the next reconcile (and a clean stop) writes again from memory (the
    /// lead's positions and limits, the follower's positions, the risk state): after a restart they decide what is
    /// traded, so a lost write is not left lost.
    unsaved: Mutex<Unsaved>,
    started_ms: i64,
    /// Copy-trading switched off (`trading` = 0 in the store): no orders at all; positions and stops stay.
    paused: bool,
    /// The control log could not be read at the last poll (the store is failing): no orders that could open or add
    /// exposure until it is read (held by [`switches::may_send`], applied again then); the lead's closes and
    /// reductions and the stops still go out.
    /// Fail safe: a stop stored meanwhile may be unseen, so nothing is opened on the strength of the old state.
    control_unreadable: bool,
    /// [`Control::sent`] when the control log was last read: a higher count is a command the API accepted that
    /// this engine has not read yet, read before any order that can grow a position.
    control_sent_seen: u64,
    /// The highest command sequence the last read of the control log ended at: the control log's watcher reading a
    /// higher one is a command from another process (the bot, the CLI) this engine has not read yet (audit 3, F8).
    control_seq_seen: i64,
    /// An [`Engine::apply`] was held back for an unread command: every symbol is applied again once it is read.
    reapply_after_control: bool,
    /// The ratio in force: the configuration's, or the override saved in the store (`ratio`).
    ratio: Decimal,
    /// A fill moved the account since equity was last read: read again before the status is published.
    equity_stale: bool,
    /// The keeper's API token for a `ws://` forecast source (resolved from `copytrade.ai.token_env` by the builder).
    pub(crate) ai_token: Option<Secret>,
    /// A start-up attempt already began the emergency stop (a retry makes another pass, not another start).
    startup_emergency_done: bool,
    /// The runtime ratio override was reported (once per process).
    ratio_override_noted: bool,
    /// An emergency request (or the stop at start-up) has not had its outcome recorded yet: the next incomplete
    /// pass records it even when its alert is rate-limited, so the requester is answered.
    emergency_report_due: bool,
}

fn now_ms() -> i64 {
    kronos_common::time::now_ms() as i64
}

fn side_str(s: Side) -> &'static str {
    match s {
        Side::Buy => "BUY",
        Side::Sell => "SELL",
    }
}

fn base36(mut n: u64) -> String {
    const D: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    while n > 0 {
        out.push(D[(n % 36) as usize]);
        n /= 36;
    }
    out.reverse();
    String::from_utf8(out).unwrap_or_default()
}

impl Engine {
    /// Builds an engine. `venue` is the follower's account (live or paper), `lead_client` the lead's (read-only use).
    pub fn new(
        cfg: Config,
        venue: Venue,
        lead_client: Option<FuturesClient>,
        store: Store,
        bus: Bus,
        tuning: Tuning,
    ) -> (Engine, Handles) {
        let metrics = Arc::new(Metrics::new());
        let status = Arc::new(Mutex::new(Status {
            mode: if venue.is_paper() { "paper".into() } else { "live".into() },
            network: cfg.network_name().to_string(),
            started_ms: now_ms(),
            detail: "starting".into(),
            ..Default::default()
        }));
        let control = Control::new(store.clone());
        let ratio = cfg.sizing.ratio;
        let handles = Handles {
            status: status.clone(),
            metrics: metrics.clone(),
            control: control.clone(),
            store: store.clone(),
            bus: bus.clone(),
            control_token: None,
        };
        let engine = Engine {
            cfg,
            venue,
            lead_client,
            store,
            bus,
            metrics,
            status,
            tuning,
            control,
            carried: CarriedOut::default(),
            control_errors: Vec::new(),
            backoff_woken_seq: 0,
            filters: HashMap::new(),
            hedge: false,
            lead: LeadBook::default(),
            lead_sides: HashMap::new(),
            follower: BTreeMap::new(),
            stops: BTreeMap::new(),
            replaced: BTreeMap::new(),
            unknown: Vec::new(),
            flat_deferred: Default::default(),
            emergency_retry: None,
            emergency_alerted: RateLimit::new(emergency::ALERT_REPEAT),
            last_order_error: None,
            ai: BTreeMap::new(),
            explained: HashMap::new(),
            risk: RiskState::default(),
            marks: HashMap::new(),
            equity: None,
            run_id: base36(kronos_common::time::now_ms()),
            seq: 0,
            blocked_noted: RateLimit::new(BLOCKED_NOTE_REPEAT),
            store_alerted: Mutex::new(RateLimit::new(STORE_ALERT_REPEAT)),
            unsaved: Mutex::new(Unsaved::default()),
            started_ms: now_ms(),
            paused: false,
            control_unreadable: false,
            control_sent_seen: 0,
            control_seq_seen: 0,
            reapply_after_control: false,
            ratio,
            equity_stale: false,
            ai_token: None,
            startup_emergency_done: false,
            ratio_override_noted: false,
            emergency_report_due: false,
        };
        (engine, handles)
    }

    fn next_id(&mut self, prefix: &str) -> String {
        self.seq += 1;
        format!("{prefix}{}{}", self.run_id, base36(self.seq))
    }

    fn paper(&self) -> bool {
        self.venue.is_paper()
    }

    async fn event(&self, kind: &str, symbol: &str, detail: &str) {
        if let Err(e) = self.store.event(kind, symbol, detail).await {
            tracing::error!(error = %e, "copy-trader: could not record an event");
        }
    }

    async fn risk_event(&self, kind: &str, symbol: &str, detail: String) {
        tracing::warn!(kind, symbol, %detail, "copy-trader risk event");
        self.metrics.risk_events.get_or_create(&KindLabel { kind: kind.into() }).inc();
        self.event(kind, symbol, &detail).await;
        let d = if symbol.is_empty() { detail } else { format!("{symbol}: {detail}") };
        self.bus.publish(SOURCE, SignalKind::RiskEvent { kind: kind.into(), detail: d });
    }

    /// Reports a store write the engine goes on without when it failed (a full disk, a locked or lost database):
    /// logged naming what was not recorded and the error, counted in `kronos_copytrade_store_errors_total{what}`,
    /// and alerted as a `store_failed` risk event (on the bus, so the Telegram bot tells; at most once a minute per
    /// what and symbol). The engine's state in memory stays as it is: what was not recorded is only lost to a
    /// restart (or to readers of the store) until the next write of the same row succeeds.
    async fn persisted(&self, what: Stored<'_>, r: anyhow::Result<()>) {
        self.unsaved.lock().note(&what, r.is_ok());
        let Err(e) = r else { return };
        let label = what.label();
        self.metrics.store_errors.get_or_create(&WhatLabel { what: label.into() }).inc();
        let symbol = what.symbol();
        let detail = format!("{} not recorded: {e:#}", what.describe());
        let due = self.store_alerted.lock().due(&format!("{label} {symbol}"), Instant::now());
        if due {
            self.risk_event("store_failed", symbol, detail).await;
        } else {
            tracing::warn!(what = label, symbol, %detail, "copy-trader: store write failed again (alerted before)");
        }
    }

    /// Records an order's or a stop's `status` (and what `update` carries), reported by
    /// [`persisted`](Self::persisted) if the write fails.
    async fn order_status(&self, symbol: &str, client_id: &str, status: &str, update: OrderUpdate<'_>) {
        let r = self.store.update_order(client_id, status, &update).await;
        self.persisted(Stored::Order { symbol, client_id }, r).await;
    }

    /// Writes again, from memory, the lead rows, the follower's positions and the risk state whose last write
    /// failed (each reported again if it fails again, within the alert's rate limit).
    async fn save_unsaved(&mut self) {
        let (leads, positions, risk) = {
            let u = self.unsaved.lock();
            (u.leads.iter().cloned().collect::<Vec<_>>(), u.positions.iter().cloned().collect::<Vec<_>>(), u.risk)
        };
        for s in leads {
            let r = self.store.set_lead(&s, self.lead.qty(&s), self.lead.limit(&s)).await;
            self.persisted(Stored::Lead(&s), r).await;
        }
        // The follower's position as the engine holds it (none: flat, its row removed).
        for s in positions {
            let (qty, entry) = self.follower.get(&s).map_or((Decimal::ZERO, Decimal::ZERO), |p| (p.qty, p.entry_price));
            let r = self.store.set_position(&s, qty, entry).await;
            self.persisted(Stored::Position(&s), r).await;
        }
        if risk {
            let r = self.risk.save(&self.store).await;
            self.persisted(Stored::Risk, r).await;
        }
    }

    // ---- start-up -------------------------------------------------------------------------------------------------

    async fn start(&mut self) -> anyhow::Result<()> {
        let info = self.venue.market_client().exchange_info().await?;
        for s in &self.cfg.sizing.allow {
            let f = info.get(s).ok_or_else(|| {
                anyhow::anyhow!("{}: copytrade.sizing.allow: {s} is not listed by the exchange", self.cfg.file)
            })?;
            self.filters.insert(s.clone(), f.clone());
        }
        self.hedge = self.venue.hedge_mode().await?;
        tracing::info!(hedge = self.hedge, paper = self.paper(), "copy-trader: follower account position mode");
        for s in self.cfg.sizing.allow.clone() {
            if let Err(e) = self.venue.setup_symbol(&s, self.cfg.sizing.leverage, &self.cfg.sizing.margin_type).await {
                self.risk_event("setup_failed", &s, format!("setting leverage/margin type: {e}")).await;
            }
        }
        // The emergency stop in force is this engine's (a retried start keeps it); the rest is as saved.
        let emergency = self.risk.emergency;
        self.risk = RiskState::load(&self.store).await?;
        self.risk.emergency = emergency;
        if !self.startup_emergency_done && !emergency {
            self.carried = match control::carried_out(&self.store).await {
                Ok(c) => c,
                Err(e) => {
                    // Unreadable: the commands alone decide (a stop still asked is carried out again).
                    tracing::error!(error = %format!("{e:#}"), "copy-trader: its control record cannot be read");
                    CarriedOut::default()
                }
            };
        }
        if self.paper() {
            self.restore_paper().await?;
        }
        self.resolve_pending().await?;
        // Positions as recorded, so the reconcile below reports only what changed while this process was down (read
        // before the stops: a stop row is judged by its position).
        for (s, q, e) in self.store.positions().await? {
            if !q.is_zero() {
                self.follower.insert(s.clone(), Position { symbol: s, qty: q, entry_price: e, mark_price: e });
            }
        }
        // Stops as recorded; verified against the exchange below.
        for r in self.store.orders_with_status("open").await? {
            if r.kind == "stop" {
                let trigger = r.trigger_price.as_deref().and_then(|t| t.parse().ok()).unwrap_or_default();
                let side = if r.side == "BUY" { Side::Buy } else { Side::Sell };
                let qty = r.qty.parse::<Decimal>().ok().filter(|q| !q.is_zero());
                let st = StopInfo { client_id: r.client_id.clone(), trigger, side, qty };
                // Rows come oldest first: the newest open stop of a symbol is the one held; an older one still
                // recorded open was replaced (its fate unsettled) or left by a crash between placing a stop and
                // retiring the old one — kept as replaced, so a flat position whose old stop fired is a stop-out
                // after a restart too (AUDIT-3 F2), and asked again until settled.
                // AUDIT-5 L1: a row of a symbol with no recorded position (or one in the other direction) guards
                // nothing — a stop whose cancel failed when its position closed, or one replaced at a close outside
                // or a stop-out: restored as replaced, never as the held stop, so an entry it would close waits
                // until it is settled.
                let pos = self.follower.get(&r.symbol).map(|p| p.qty).unwrap_or_default();
                let older = if stops::held_guards_nothing(pos, &st) {
                    Some(st)
                } else {
                    self.stops.insert(r.symbol.clone(), st)
                };
                if let Some(older) = older {
                    let list = self.replaced.entry(r.symbol.clone()).or_default();
                    if !list.iter().any(|x| x.client_id == older.client_id) {
                        list.push(older);
                    }
                }
            }
        }
        for (s, q, following) in self.store.lead().await? {
            self.lead.positions.insert(s, crate::lead::LeadPosition { qty: q, limit: following });
        }
        let first_start = self.store.get_state("started").await?.is_none();
        // Orders an earlier run left of unknown fate that executed meanwhile are booked first, so the position they
        // opened is adopted as theirs, not as drift.
        self.resolve_unknown(None).await;
        self.reconcile_positions().await?;
        // The control state is read now, after the follower's positions are, and before anything reads the lead or
        // places an entry: an emergency stop — asked before the start, during this attempt or while start-up waited
        // to retry — is carried out first (a lead that cannot be read must not keep the follower's positions open),
        // copy-trading off and the ratio in effect hold from the first order. Each retried start does this again.
        let acted = self.poll_control().await;
        if self.risk.emergency && self.startup_emergency_done && !acted {
            // A retried start: another pass at whatever is still open.
            self.emergency_pass().await;
        }
        if self.risk.emergency {
            self.startup_emergency_done = true;
        }
        if self.lead_client.is_some() {
            self.poll_lead(first_start).await?;
        }
        self.store.set_state("started", &now_ms().to_string()).await?;
        self.refresh_equity().await;
        let symbols: Vec<String> = self.cfg.sizing.allow.iter().cloned().collect();
        for s in symbols {
            self.apply(&s, None).await;
        }
        self.cleanup_stops().await;
        // What the status shows from the first moment it is ready is the state this run loaded.
        self.update_status(false);
        let mut st = self.status.lock();
        st.last_reconcile_ms = now_ms();
        st.ready = true;
        st.healthy = true;
        st.detail = "running".into();
        Ok(())
    }

    async fn restore_paper(&mut self) -> anyhow::Result<()> {
        let Venue::Paper(p) = &self.venue else { return Ok(()) };
        let wallet = match self.store.get_state("paper_wallet").await? {
            Some(w) => w.parse().map_err(|e| anyhow::anyhow!("store: paper_wallet '{w}': {e}"))?,
            None => self.cfg.paper.balance,
        };
        let positions = self.store.positions().await?;
        let stops = self.store.orders_with_status("open").await?;
        let mut sim = p.sim.lock();
        sim.wallet = wallet;
        sim.taker_fee_rate = self.cfg.paper.taker_fee_rate;
        for (s, q, e) in positions {
            let ps = if sim.hedge_mode {
                if q.is_negative() {
                    "SHORT"
                } else {
                    "LONG"
                }
            } else {
                "BOTH"
            };
            sim.set_position(&s, ps, SimPosition { amount: q, entry_price: e });
        }
        // Idempotent: a retried start-up restores each stop once.
        let fresh: Vec<_> =
            stops.into_iter().filter(|r| r.kind == "stop" && sim.stop(&r.client_id).is_none()).collect();
        for r in fresh {
            let qty = r.qty.parse::<Decimal>().unwrap_or_default();
            sim.restore_stop(kronos_binance::types::AlgoOrder {
                algo_id: r.exchange_id.unwrap_or(0),
                client_algo_id: r.client_id.clone(),
                algo_type: "CONDITIONAL".into(),
                order_type: "STOP_MARKET".into(),
                symbol: r.symbol.clone(),
                side: if r.side == "BUY" { Side::Buy } else { Side::Sell },
                position_side: "BOTH".into(),
                quantity: qty,
                trigger_price: r.trigger_price.as_deref().and_then(|t| t.parse().ok()).unwrap_or_default(),
                algo_status: kronos_binance::types::AlgoStatus::New,
                close_position: qty.is_zero(),
                reduce_only: true,
                working_type: "MARK_PRICE".into(),
                update_time: r.updated_ms,
            });
        }
        Ok(())
    }

    fn update_status(&self, stream_connected: bool) {
        let mut st = self.status.lock();
        st.risk = self.risk.clone();
        st.entries_blocked = self.risk.entries_allowed(now_ms()).err();
        st.equity = self.equity.map(|e| e.total().to_string());
        st.wallet = self.equity.map(|e| e.wallet.to_string());
        st.unrealized = self.equity.map(|e| e.unrealized.to_string());
        st.positions = self
            .follower
            .values()
            .map(|p| PositionView {
                symbol: p.symbol.clone(),
                qty: p.qty.to_string(),
                entry_price: p.entry_price.to_string(),
                stop_price: self.stops.get(&p.symbol).map(|s| s.trigger.to_string()),
            })
            .collect();
        st.lead = self
            .lead
            .positions
            .iter()
            .map(|(s, p)| (s.clone(), p.qty.to_string(), p.limit.map(|l| l.to_string())))
            .collect();
        st.ai = self.ai.values().map(|t| t.view.clone()).collect();
        st.lead_stream_connected = stream_connected;
        st.started_ms = self.started_ms;
        // AUDIT6-CT L2: false while either reader of the control log fails (every entry is held then).
        st.trading = switches::trading_shown(self.paused, &self.unread());
        st.ratio = self.ratio.to_string();
        self.metrics.entries_blocked.set(st.entries_blocked.is_some() as i64);
        self.metrics.stream_connected.set(stream_connected as i64);
    }

    fn note_poll_error(&self, e: &anyhow::Error) {
        let mut st = self.status.lock();
        st.lead_poll_errors += 1;
        st.last_lead_poll_error = Some(format!("{e:#}"));
        st.detail = format!("lead poll failed: {e:#}");
    }

    // ---- the loop ----------------------------------------------------------------------------------------------

    /// Runs until `shutdown` resolves. Start-up errors (exchange unreachable, store broken) are returned.
    pub async fn run(mut self, shutdown: impl std::future::Future<Output = ()>) -> anyhow::Result<()> {
        tokio::pin!(shutdown);
        // Commands from other processes are watched for also mid-turn: one appended while a turn runs slow holds every
        // order that adds exposure until the loop reads it (stopped when this returns).
        let _watcher = self.control.watch();
        // Start-up retries transient exchange failures, backing off from 2 s to a minute and saying where it could
        // not get through; configuration errors end it.
        let mut backoff = Duration::from_secs(2);
        loop {
            match self.start().await {
                Ok(()) => break,
                Err(e) => {
                    let msg = format!("{e:#}");
                    let retryable = e.downcast_ref::<BinanceError>().is_some_and(|b| {
                        matches!(
                            b,
                            BinanceError::Transport { .. }
                                | BinanceError::Unknown { .. }
                                | BinanceError::RateLimited { .. }
                                | BinanceError::Banned { .. }
                        )
                    });
                    self.status.lock().detail = format!("start-up failed: {msg}");
                    if !retryable {
                        return Err(e);
                    }
                    let detail = startup_failure(self.cfg.network.rest_url(), self.cfg.network_name(), &msg, backoff);
                    self.status.lock().detail = detail.clone();
                    tracing::error!("copy-trader: {detail}");
                    // An emergency stop does not wait out the back-off: sent over the API it wakes this wait at once,
                    // from another process it is seen within the poll interval; the next attempt carries it out
                    // right after reading the follower's positions.
                    let control = self.control.clone();
                    let until = tokio::time::Instant::now() + backoff;
                    loop {
                        tokio::select! {
                            _ = &mut shutdown => return Ok(()),
                            _ = tokio::time::sleep_until(until) => break,
                            _ = control.woken() => break,
                            _ = tokio::time::sleep(self.tuning.fast_tick) => {
                                if let Some(seq) = self.emergency_waiting().await {
                                    // Once per command: a start that keeps failing before it can carry the stop
                                    // out is not retried every poll.
                                    if seq > self.backoff_woken_seq {
                                        self.backoff_woken_seq = seq;
                                        break;
                                    }
                                }
                            }
                        }
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(60));
                }
            }
        }
        tracing::info!(mode = if self.paper() { "paper" } else { "live" }, "copy-trader running");

        let (stream_tx, mut stream_rx) = mpsc::channel::<StreamEvent>(1024);
        let mut stream_task = None;
        if let (Some(c), Some(l)) = (&self.lead_client, &self.cfg.lead) {
            if l.use_stream {
                stream_task = Some(tokio::spawn(run_user_stream(c.clone(), self.tuning.stream.clone(), stream_tx)));
            }
        }
        let (ai_tx, mut ai_rx) = mpsc::channel::<Forecast>(256);
        let mut ai_task = None;
        if let Some(ai) = &self.cfg.ai {
            ai_task = Some(match &ai.source {
                SignalSource::Bus => tokio::spawn(crate::ai::from_bus(self.bus.clone(), ai_tx)),
                SignalSource::WebSocket { url, .. } => {
                    tokio::spawn(crate::ai::from_websocket(url.clone(), self.ai_token.clone(), ai_tx))
                }
            });
        } else {
            drop(ai_tx);
        }
        let poll_every = self.cfg.lead.as_ref().map(|l| l.poll_interval).unwrap_or(Duration::from_secs(3600));
        let mut poll = tokio::time::interval(poll_every);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut reconcile = tokio::time::interval(self.cfg.reconcile_interval);
        reconcile.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut fast = tokio::time::interval(self.tuning.fast_tick);
        fast.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut stream_up = false;
        let control = self.control.clone();
        self.check_risk().await;
        self.update_status(stream_up);
        let result = loop {
            tokio::select! {
                biased;
                _ = &mut shutdown => break Ok(()),
                _ = control.woken() => {
                    // A command sent in this process (the HTTP API): carried out at once.
                    self.poll_control().await;
                    self.reapply_held().await;
                    self.update_status(stream_up);
                }
                // Control first: the fast tick (commands from other processes, emergency retries) and the reconcile
                // come before the lead's stream and poll, so a lead poll that takes longer than its interval (the
                // poll tick then always ready) cannot starve them.
                _ = fast.tick() => {
                    // Commands from other processes (the bot, the CLI): within the poll interval.
                    self.poll_control().await;
                    self.reapply_held().await;
                    if self.risk.emergency && self.emergency_retry.is_some_and(|(at, _)| Instant::now() >= at) {
                        self.emergency_pass().await;
                        self.update_status(stream_up);
                    }
                    match self.venue.tick().await {
                        Ok(fired) => {
                            for t in fired {
                                self.on_triggered(t).await;
                            }
                        }
                        Err(e) => tracing::warn!(error = %e, "copy-trader: paper stop check failed"),
                    }
                    self.expire_ai().await;
                    // The next fast tick is a full period after this turn ended, not at once when the turn took
                    // longer than the period (paper mark reads, emergency retries, a held apply): the reconcile,
                    // the lead's stream and poll each get a turn in between, so control stays first without
                    // starving them.
                    fast.reset();
                }
                _ = reconcile.tick() => {
                    self.marks.clear();
                    self.save_unsaved().await;
                    self.resolve_unknown(None).await;
                    if let Err(e) = self.reconcile_positions().await {
                        tracing::warn!(error = %e, "copy-trader: position reconcile failed");
                    }
                    if self.risk.emergency && self.emergency_retry.is_none() && !self.follower.is_empty() {
                        // The emergency stop holds and a position is open again (a late fill, a manual trade): it
                        // is closed like the others.
                        self.emergency_pass().await;
                    }
                    self.check_risk().await;
                    let symbols: Vec<String> = self.cfg.sizing.allow.iter().cloned().collect();
                    for s in symbols {
                        self.apply(&s, None).await;
                    }
                    self.cleanup_stops().await;
                    self.update_status(stream_up);
                    let mut st = self.status.lock();
                    st.last_reconcile_ms = now_ms();
                    st.reconciles += 1;
                    drop(st);
                    // As the fast tick: a reconcile slower than its interval never runs twice in a row.
                    reconcile.reset();
                }
                Some(ev) = stream_rx.recv() => {
                    match ev {
                        StreamEvent::Connected => {
                            stream_up = true;
                            // Whatever happened while the stream was down is read back now.
                            if let Err(e) = self.poll_lead(false).await {
                                tracing::warn!(error = %e, "copy-trader: lead reconciliation after reconnect failed");
                                self.note_poll_error(&e);
                            }
                        }
                        StreamEvent::Disconnected { reason } => {
                            stream_up = false;
                            self.event("lead_stream_down", "", &reason).await;
                        }
                        StreamEvent::Account { update, received, .. } => {
                            let mut touched = Vec::new();
                            for p in update.positions {
                                let ps = if p.position_side.is_empty() { "BOTH".to_string() } else { p.position_side.clone() };
                                if p.amount.is_zero() {
                                    self.lead_sides.remove(&(p.symbol.clone(), ps));
                                } else {
                                    self.lead_sides.insert((p.symbol.clone(), ps), p.amount);
                                }
                                if self.cfg.sizing.allow.contains(&p.symbol) && !touched.contains(&p.symbol) {
                                    touched.push(p.symbol.clone());
                                }
                            }
                            for s in touched {
                                let net = self.lead_net(&s);
                                self.on_lead_qty(&s, net, "stream", Some(received)).await;
                            }
                        }
                        StreamEvent::Order { update, .. } => {
                            if update.execution_type == "TRADE" && !update.last_price.is_zero() && self.cfg.sizing.allow.contains(&update.symbol) {
                                self.marks.insert(update.symbol.clone(), update.last_price);
                            }
                        }
                        StreamEvent::Algo { .. } | StreamEvent::Other { .. } => {}
                    }
                    self.update_status(stream_up);
                }
                Some(f) = ai_rx.recv() => {
                    self.on_forecast(f).await;
                    self.update_status(stream_up);
                }
                _ = poll.tick(), if self.lead_client.is_some() => {
                    if let Err(e) = self.poll_lead(false).await {
                        tracing::warn!(error = %e, "copy-trader: lead poll failed");
                        self.note_poll_error(&e);
                    } else {
                        self.status.lock().detail = "running".into();
                    }
                }
            }
            // Whatever this turn changed (a fill from a lead poll, a switch or an emergency stop read from the store,
            // a paper stop that fired) is shown at once, not at the next reconcile. After a fill the equity is read
            // again (once the turn's orders and stops are out, so it delays neither).
            if std::mem::take(&mut self.equity_stale) && self.refresh_equity().await {
                // Recorded too, for readers of the store (the bot without the API, `kronos copytrade stats`); only
                // what was read, never the estimate a failed read leaves.
                if let Some(e) = self.equity {
                    self.persisted(Stored::Equity, self.store.record_equity(now_ms(), e.total()).await).await;
                }
            }
            self.update_status(stream_up);
        };
        if let Some(t) = stream_task {
            t.abort();
        }
        if let Some(t) = ai_task {
            t.abort();
        }
        if let Some(c) = &self.lead_client {
            if self.cfg.lead.as_ref().is_some_and(|l| l.use_stream) {
                let _ = c.close_listen_key().await;
            }
        }
        // A row still unsaved is tried once more before a clean stop (a restart reads it).
        self.save_unsaved().await;
        self.save_paper_wallet().await;
        result
    }
}

fn sum_fees(trades: &[Trade]) -> (Decimal, Decimal) {
    trades.iter().fold((Decimal::ZERO, Decimal::ZERO), |(f, p), t| {
        (f.checked_add(&t.commission).unwrap_or(f), p.checked_add(&t.realized_pnl).unwrap_or(p))
    })
}

/// What a retried start-up failure says: the exchange it could not use (its URL and network name), what went wrong,
/// when it tries again, and — on Binance's networks — how to try the copy-trader without them.
fn startup_failure(rest_url: &str, network: &str, error: &str, retry_in: Duration) -> String {
    let hint = if matches!(network, "testnet" | "mainnet") {
        "; without internet access or an account, `kronos exchange serve` runs a local exchange (network = \"local\")"
    } else {
        ""
    };
    format!(
        "cannot start: the exchange at {rest_url} ({network}) could not be used: {error}; retrying in {} s{hint}",
        retry_in.as_secs()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_lead_or_risk_write_is_kept_until_one_of_the_same_row_succeeds() {
        let mut u = Unsaved::default();
        u.note(&Stored::Lead("BTCUSDT"), false);
        u.note(&Stored::Lead("ETHUSDT"), false);
        u.note(&Stored::Risk, false);
        u.note(&Stored::Equity, false);
        u.note(&Stored::Position("SOLUSDT"), false);
        assert_eq!(u.leads.iter().map(String::as_str).collect::<Vec<_>>(), ["BTCUSDT", "ETHUSDT"]);
        assert_eq!(u.positions.iter().map(String::as_str).collect::<Vec<_>>(), ["SOLUSDT"]);
        u.note(&Stored::Position("SOLUSDT"), true);
        assert!(u.positions.is_empty());
        assert!(u.risk);
        u.note(&Stored::Lead("BTCUSDT"), true);
        u.note(&Stored::Equity, true);
        assert_eq!(u.leads.iter().map(String::as_str).collect::<Vec<_>>(), ["ETHUSDT"]);
        assert!(u.risk, "only a risk write clears the risk state's");
        u.note(&Stored::Risk, true);
        assert!(!u.risk);
    }

    #[test]
    fn a_failed_start_names_the_exchange_and_the_way_offline() {
        let e = "GET /fapi/v1/exchangeInfo: not sent: could not reach testnet.binancefuture.com (dns error)";
        let testnet = kronos_binance::Network::Testnet;
        let m = super::startup_failure(testnet.rest_url(), "testnet", e, Duration::from_secs(8));
        assert!(m.contains("https://testnet.binancefuture.com (testnet)") && m.contains(e), "{m}");
        assert!(m.contains("retrying in 8 s") && m.contains("kronos exchange serve"), "{m}");
        let m = super::startup_failure("http://127.0.0.1:9130", "local", e, Duration::from_secs(2));
        assert!(m.contains("http://127.0.0.1:9130 (local)") && !m.contains("exchange serve"), "{m}");
    }
}
