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

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kronos_binance::sim::{apply_fill, SimPosition, Triggered};
use kronos_binance::stream::{run_user_stream, StreamConfig, StreamEvent};
use kronos_binance::types::{OrderRequest, Side, StopRequest, Trade};
use kronos_binance::{BinanceError, FuturesClient, SymbolFilters};
use kronos_common::signals::LeadAction;
use kronos_common::{Bus, Decimal, Secret, SignalKind};
use parking_lot::Mutex;
use serde::Serialize;
use tokio::sync::mpsc;

use crate::ai::Forecast;
use crate::config::{Config, SignalSource};
use crate::control::{self, CarriedOut, Control};
use crate::decide::ai::{expired, expires_ms, forecast_target, AiTarget};
use crate::decide::emergency::Action;
use crate::decide::emergency::{self, PassEnd, RateLimit};
use crate::decide::orders::{classify_error, Failure, MarketOrder, Outcome};
use crate::decide::reconcile::{self, Difference};
use crate::decide::stops::{self, StopInfo, StopPlan};
use crate::decide::switches::{self, Trading};
use crate::decide::target::{self, Entry, Reduction};
use crate::decide::unknown::{self, unknown_hold, NotFound, UnknownOrder};
use crate::lead::LeadBook;
use crate::metrics::{KindLabel, Metrics, OrderLabel};
use crate::risk::RiskState;
use crate::sizing::{cap_target, Caps};
use crate::store::{FillRow, OrderRow, OrderUpdate, Store};
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

    /// Orders recorded as `sending` by an earlier run: ask the exchange what became of each.
    async fn resolve_pending(&mut self) -> anyhow::Result<()> {
        let pending = self.store.orders_with_status("sending").await?;
        for r in pending {
            // Until its recvWindow has passed, an order can still arrive; wait that out first.
            let wait_until = r.created_ms + self.cfg.recv_window_ms as i64 + 1000;
            let server_now = self.venue.market_client().server_now_ms() as i64;
            if server_now < wait_until {
                tokio::time::sleep(Duration::from_millis((wait_until - server_now) as u64)).await;
            }
            if r.kind == "stop" {
                match self.venue.query_stop(&r.client_id).await? {
                    Some(a) if a.is_open() => {
                        self.store
                            .update_order(
                                &r.client_id,
                                "open",
                                &OrderUpdate { exchange_id: Some(a.algo_id), ..OrderUpdate::default() },
                            )
                            .await?;
                    }
                    Some(a) => {
                        let st = a.algo_status.as_str().to_lowercase();
                        self.store
                            .update_order(
                                &r.client_id,
                                &st,
                                &OrderUpdate { exchange_id: Some(a.algo_id), ..OrderUpdate::default() },
                            )
                            .await?;
                    }
                    None => {
                        self.store
                            .update_order(
                                &r.client_id,
                                "not_placed",
                                &OrderUpdate { error: Some("not found after restart"), ..OrderUpdate::default() },
                            )
                            .await?
                    }
                }
            } else {
                match self.venue.query_order(&r.symbol, &r.client_id).await? {
                    Some(o) => {
                        let trades = match &self.venue {
                            Venue::Live(c) if !o.executed_qty.is_zero() => {
                                c.order_trades(&r.symbol, o.order_id).await.unwrap_or_default()
                            }
                            _ => Vec::new(),
                        };
                        self.record_filled(&r.client_id, &o, &trades).await?;
                        for t in &trades {
                            self.store_fill(&r.client_id, t).await;
                        }
                        // The position it opened is the exchange's now: the reconcile below adopts it as this
                        // order's, not as drift (as for an order of unknown fate found late).
                        let signed = if r.side == "BUY" { o.executed_qty } else { o.executed_qty.neg() };
                        let e = self.explained.entry(r.symbol.clone()).or_insert(Decimal::ZERO);
                        *e = e.checked_add(&signed).unwrap_or(*e);
                        self.event(
                            "resolved",
                            &r.symbol,
                            &format!("order {} from an earlier run had been filled", r.client_id),
                        )
                        .await;
                    }
                    None => {
                        // Not found yet is not proof it never will be: watched like any order of unknown fate.
                        self.store
                            .update_order(
                                &r.client_id,
                                "unresolved",
                                &OrderUpdate {
                                    error: Some("not found after restart; watched"),
                                    ..OrderUpdate::default()
                                },
                            )
                            .await?;
                        self.unknown.push(UnknownOrder {
                            client_id: r.client_id.clone(),
                            symbol: r.symbol.clone(),
                            side: if r.side == "BUY" { Side::Buy } else { Side::Sell },
                            since: Instant::now(),
                            past_hold: false,
                        });
                    }
                }
            }
        }
        // Orders an earlier run left of unknown fate are watched again.
        for r in self.store.orders_with_status("unresolved").await? {
            if r.kind == "order" && !self.unknown.iter().any(|u| u.client_id == r.client_id) {
                self.unknown.push(UnknownOrder {
                    client_id: r.client_id.clone(),
                    symbol: r.symbol.clone(),
                    side: if r.side == "BUY" { Side::Buy } else { Side::Sell },
                    since: Instant::now(),
                    past_hold: false,
                });
            }
        }
        Ok(())
    }

    // ---- reconciliation ---------------------------------------------------------------------------------------

    /// Adopts the exchange's view of the follower's positions; a position that vanished with its stop gone was
    /// stopped out, anything else is drift (manual trades, liquidation) and is reported. A recorded position the
    /// stop check finds flat in a read made after its stop's answer (the stop fired or ended after the first read)
    /// is checked again at once by a second pass (AUDIT-3 F1).
    async fn reconcile_positions(&mut self) -> anyhow::Result<()> {
        if self.reconcile_pass().await? {
            self.reconcile_pass().await?;
        }
        Ok(())
    }

    /// One pass of [`Engine::reconcile_positions`]; `true` when the stop check asks for another.
    async fn reconcile_pass(&mut self) -> anyhow::Result<bool> {
        let actual: BTreeMap<String, Position> =
            self.venue.positions().await?.into_iter().map(|p| (p.symbol.clone(), p)).collect();
        let symbols: Vec<String> = actual
            .keys()
            .chain(self.follower.keys())
            .cloned()
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let explained = std::mem::take(&mut self.explained);
        for s in symbols {
            let ours = self.follower.get(&s).map(|p| p.qty).unwrap_or_default();
            let theirs = actual.get(&s).map(|p| p.qty).unwrap_or_default();
            let late = explained.get(&s).copied().unwrap_or_default();
            if let Some(p) = actual.get(&s) {
                self.marks.insert(s.clone(), p.mark_price);
            }
            if ours == theirs {
                if let Some(p) = actual.get(&s) {
                    self.follower.insert(s.clone(), p.clone());
                }
                continue;
            }
            // AUDIT-5 L5: an order of ours of unknown outcome may have made this difference: no flat verdict and
            // nothing cancelled until it is found or given up.
            if reconcile::flat_waits_for_unknown(ours, theirs, late, self.unknown.iter().any(|u| u.symbol == s)) {
                tracing::warn!(symbol = %s, %ours, "copy-trader: flat while an order of ours has an unknown outcome; not judged yet");
                continue;
            }
            // The stop held and a replaced one kept for this check (B2/B6), each asked (`None`: none).
            let (mut held, mut replaced) = (None, Vec::new());
            if reconcile::may_be_stopped_out(ours, theirs) {
                if let Some(st) = self.stops.get(&s).cloned() {
                    held = Some((self.ask_stop(&s, &st).await, st));
                }
                for st in self.replaced.get(&s).cloned().unwrap_or_default() {
                    replaced.push((self.ask_stop(&s, &st).await, st));
                }
            }
            let replaced_fates: Vec<stops::Asked> = replaced.iter().map(|r| r.0.clone()).collect();
            let fate = stops::flat_fate(held.as_ref().map(|h| h.0.clone()), &replaced_fates);
            let stop_known = held.is_some() || !replaced.is_empty();
            let difference = reconcile::difference(ours, theirs, late, fate.as_ref(), stop_known);
            if difference == Difference::ClosedOutside {
                // AUDIT-5 L4: confirmed by a positions read made after the stop answered, before anything is judged
                // or cancelled (the first read may lag behind a live position).
                let again = match self.venue.positions().await {
                    Ok(v) => v
                        .into_iter()
                        .find(|p| p.symbol == s && !p.qty.is_zero())
                        .map_or(stops::Now::Flat, |p| stops::Now::Holds(p.qty)),
                    Err(e) => {
                        tracing::warn!(symbol = %s, error = %e, "copy-trader: positions could not be read again");
                        stops::Now::Unread
                    }
                };
                if !reconcile::stands(difference, again) {
                    tracing::warn!(symbol = %s, ?again, "copy-trader: flat not confirmed after the stop answered; judged at the next reconcile");
                    continue;
                }
            }
            if matches!(difference, Difference::ClosedOutside | Difference::StoppedOut) {
                // Both settled now: the held stop and the replaced one are forgotten, each recorded as what it
                // became; one that is still open is cancelled now (AUDIT-3 F9: not left to the clean-up at the end
                // of a reconcile tick, under a position the lead may open again meanwhile) — kept as replaced when
                // its cancel is not confirmed.
                self.stops.remove(&s);
                self.replaced.remove(&s);
                for (asked, st) in held.iter().chain(replaced.iter()) {
                    if asked == &Some(stops::StopFate::Open) && !self.cancel_replaced(&s, st).await {
                        self.replaced.entry(s.clone()).or_default().push(st.clone());
                        continue;
                    }
                    let (status, update) = match asked {
                        Some(f) if f.fired() => (
                            "finished".to_string(),
                            OrderUpdate { executed_qty: Some(&ours.abs().to_string()), ..OrderUpdate::default() },
                        ),
                        Some(f) => match f.to_record() {
                            Some(status) => (
                                status,
                                OrderUpdate { error: Some("no longer open on the exchange"), ..OrderUpdate::default() },
                            ),
                            None => continue,
                        },
                        None => continue,
                    };
                    let _ = self.store.update_order(&st.client_id, &status, &update).await;
                }
            }
            if difference == Difference::ClosedOutside {
                // Closed by hand or by the exchange: not a stop-out, but nothing is chased either.
                // AUDIT-4 L3: also when the stop is still open (a hand close or an ADL leaves it listed) — not drift,
                // which would adopt the flat position and buy the lead's position back; that stop was cancelled
                // above (kept as replaced while the cancel is not confirmed).
                let st = held
                    .into_iter()
                    .chain(replaced)
                    .find(|(asked, _)| asked.as_ref() == fate.as_ref())
                    .map(|(_, st)| st)
                    .expect("a stop decided it");
                // AUDIT-5 L6: what happened to it — an open stop whose cancel was not confirmed was kept as replaced.
                let kept = self.replaced.get(&s).is_some_and(|v| v.iter().any(|x| x.client_id == st.client_id));
                let status = match fate.as_ref() {
                    Some(stops::StopFate::Open) if kept => "still open (it guards nothing now; its cancel is not \
                                                           confirmed: cancelled again until it is)"
                        .to_string(),
                    Some(stops::StopFate::Open) => "still open (it guards nothing now: cancelled)".to_string(),
                    f => f.and_then(stops::StopFate::to_record).unwrap_or_default(),
                };
                self.lead.wait(&s);
                let _ = self.store.set_lead(&s, self.lead.qty(&s), self.lead.limit(&s)).await;
                self.risk_event(
                    "closed_outside",
                    &s,
                    format!(
                        "recorded {ours}, the exchange holds none and the stop at {} ({}) is {status}, not fired: \
                         closed outside the copy-trader (by hand, or by the exchange: a liquidation or an \
                         auto-deleveraging — which one is not known here); following resumes when the lead closes \
                         or flips",
                        st.trigger, st.client_id
                    ),
                )
                .await;
            } else if difference == Difference::StoppedOut {
                // The stop that fired (the held one, else the replaced one).
                let st = held
                    .into_iter()
                    .chain(replaced)
                    .find(|(asked, _)| asked.as_ref().is_some_and(stops::StopFate::fired))
                    .map(|(_, st)| st)
                    .expect("a stop that fired decided it");
                self.bus.publish(
                    SOURCE,
                    SignalKind::StopTriggered { symbol: s.clone(), stop_price: st.trigger, qty: ours.abs() },
                );
                self.lead.wait(&s);
                let _ = self.store.set_lead(&s, self.lead.qty(&s), self.lead.limit(&s)).await;
                self.risk_event(
                    "stopped_out",
                    &s,
                    format!("stop at {} closed {}; following resumes when the lead closes or flips", st.trigger, ours),
                )
                .await;
            } else if difference == Difference::Undecided {
                // AUDIT-3 F3: its stop may have fired; nothing is re-entered on an unknown. Decided as a stop-out
                // for the follower (adopted flat, waits for the lead's next close or flip); its stops stay and are
                // asked again until settled.
                self.lead.wait(&s);
                let _ = self.store.set_lead(&s, self.lead.qty(&s), self.lead.limit(&s)).await;
                self.risk_event(
                    "position_closed_undecided",
                    &s,
                    format!(
                        "recorded {ours}, the exchange holds none and what became of its stop is not known (the \
                         exchange did not answer, or the status is unknown): not re-entered; following resumes \
                         when the lead closes or flips"
                    ),
                )
                .await;
            } else if difference == Difference::Adopted {
                self.event(
                    "position_adopted",
                    &s,
                    &format!("recorded {ours}, exchange holds {theirs}: orders found late executed {late}"),
                )
                .await;
            } else if self.store.get_state("started").await?.is_some() {
                self.risk_event(
                    "position_drift",
                    &s,
                    format!("recorded {ours}, exchange holds {theirs}; adopting the exchange's"),
                )
                .await;
            }
            match actual.get(&s) {
                Some(p) => {
                    self.follower.insert(s.clone(), p.clone());
                    self.store.set_position(&s, p.qty, p.entry_price).await?;
                }
                None => {
                    self.follower.remove(&s);
                    self.store.set_position(&s, Decimal::ZERO, Decimal::ZERO).await?;
                }
            }
            self.bus.publish(
                SOURCE,
                SignalKind::PositionChanged {
                    symbol: s.clone(),
                    qty: theirs,
                    entry_price: actual.get(&s).map(|p| p.entry_price).unwrap_or_default(),
                },
            );
        }
        self.metrics.open_positions.set(self.follower.len() as i64);
        Ok(self.verify_stops().await)
    }

    /// Asks the exchange what became of the stop `st` of `symbol`; `None` when the question failed (logged).
    async fn ask_stop(&self, symbol: &str, st: &StopInfo) -> stops::Asked {
        match self.venue.query_stop(&st.client_id).await {
            Ok(found) => Some(stops::stop_fate(found.as_ref())),
            Err(e) => {
                tracing::warn!(symbol, client_id = %st.client_id, error = %e, "copy-trader: a stop could not be asked for");
                None
            }
        }
    }

    /// Drops the stops this run holds that the exchange no longer has open (cancelled by hand, expired — also while
    /// this process was down), so the next [`Engine::protect`] places a new one instead of trusting the record, and
    /// settles the replaced stops. Every stop is asked first and the positions read after the answers
    /// (AUDIT-3 F1): a stop that fired or ended under a recorded position is judged by that later read — flat now:
    /// nothing is dropped and `true` asks the reconcile for another pass (a stop-out or a close outside, never
    /// drift); still there: a fired stop protects nothing and is replaced (close on its way, kept as replaced, B6) or
    /// dropped (close done), the follower held at what is left (F7); an ended one is dropped and a new one placed
    /// ([`stops::held_plan`], [`stops::replaced_plan`]).
    async fn verify_stops(&mut self) -> bool {
        if self.stops.is_empty() && self.replaced.is_empty() {
            return false;
        }
        let open = match self.venue.open_stops().await {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(error = %e, "copy-trader: open stops could not be read; recorded stops kept");
                return false;
            }
        };
        let mut held_asked = Vec::new();
        for (symbol, st) in stops::not_open(&self.stops, &open) {
            let fate = self.ask_stop(&symbol, &st).await;
            held_asked.push((symbol, st, fate));
        }
        // Taken now: a stop moved to the replaced ones below is not asked again in this pass.
        let old_replaced = std::mem::take(&mut self.replaced);
        let mut replaced_asked = Vec::new();
        for (symbol, list) in old_replaced {
            for st in list {
                // Listed open: open (released below) without asking (AUDIT-3 F5).
                let fate = if open.iter().any(|a| a.client_algo_id == st.client_id) {
                    Some(stops::StopFate::Open)
                } else {
                    self.ask_stop(&symbol, &st).await
                };
                replaced_asked.push((symbol.clone(), st, fate));
            }
        }
        let needs_read = held_asked
            .iter()
            .chain(replaced_asked.iter())
            .any(|(s, _, f)| self.follower.contains_key(s) && f.as_ref().is_some_and(stops::StopFate::settled));
        let now: Option<BTreeMap<String, Decimal>> = if needs_read {
            match self.venue.positions().await {
                Ok(v) => Some(v.into_iter().filter(|p| !p.qty.is_zero()).map(|p| (p.symbol, p.qty)).collect()),
                Err(e) => {
                    tracing::warn!(error = %e, "copy-trader: positions could not be read again; settled stops kept");
                    None
                }
            }
        } else {
            None
        };
        let now_of = |symbol: &str| match &now {
            None => stops::Now::Unread,
            Some(m) => m.get(symbol).map_or(stops::Now::Flat, |q| stops::Now::Holds(*q)),
        };
        let mut again = false;
        for (symbol, st, fate) in held_asked {
            let recorded = self.follower.contains_key(&symbol);
            match stops::held_plan(&fate, recorded, now_of(&symbol)) {
                stops::HeldPlan::Keep => {}
                stops::HeldPlan::Recheck => again = true,
                stops::HeldPlan::Replace { hold } => {
                    self.replaced.entry(symbol.clone()).or_default().push(st.clone());
                    self.stops.remove(&symbol);
                    let detail = match hold {
                        Some(q) => {
                            self.hold_at(&symbol, q).await;
                            format!(
                                "the stop at {} ({}) fired and its close is on its way (or done and not yet seen); \
                                 placing a new one meanwhile; the exchange holds {q}, held at that until the lead \
                                 closes or flips",
                                st.trigger, st.client_id
                            )
                        }
                        None => format!(
                            "the stop at {} ({}) has a status the copy-trader does not know ({}); kept for the \
                             stop-out check and a new one placed",
                            st.trigger,
                            st.client_id,
                            match &fate {
                                Some(stops::StopFate::Unknown(status)) => status.as_str(),
                                _ => "",
                            }
                        ),
                    };
                    self.risk_event("stop_missing", &symbol, detail).await;
                }
                stops::HeldPlan::Drop { status, hold } => {
                    self.stops.remove(&symbol);
                    let _ = self
                        .store
                        .update_order(
                            &st.client_id,
                            &status,
                            &OrderUpdate { error: Some("no longer open on the exchange"), ..OrderUpdate::default() },
                        )
                        .await;
                    if let Some(q) = hold {
                        self.hold_at(&symbol, q).await;
                    }
                    if recorded {
                        let held = hold.map(|q| format!("; the exchange holds {q}, held at that")).unwrap_or_default();
                        self.risk_event(
                            "stop_missing",
                            &symbol,
                            format!(
                                "the stop at {} ({}) is no longer open on the exchange ({status}); placing a new \
                                 one{held}",
                                st.trigger, st.client_id
                            ),
                        )
                        .await;
                    }
                }
            }
        }
        for (symbol, st, fate) in replaced_asked {
            match stops::replaced_plan(&fate, self.follower.contains_key(&symbol), now_of(&symbol)) {
                stops::ReplacedPlan::Keep => self.replaced.entry(symbol).or_default().push(st),
                stops::ReplacedPlan::Recheck => {
                    again = true;
                    self.replaced.entry(symbol).or_default().push(st);
                }
                stops::ReplacedPlan::Release => {
                    // Cancelled here, not left to the clean-up: one whose cancel is not confirmed stays replaced
                    // (it may fire before it is gone) and is asked again at the next reconcile (AUDIT-3 F5).
                    if !self.cancel_replaced(&symbol, &st).await {
                        self.replaced.entry(symbol).or_default().push(st);
                    }
                }
                stops::ReplacedPlan::Drop { status, hold } => {
                    let _ = self
                        .store
                        .update_order(
                            &st.client_id,
                            &status,
                            &OrderUpdate { error: Some("replaced; no longer open"), ..OrderUpdate::default() },
                        )
                        .await;
                    if let Some(q) = hold {
                        self.hold_at(&symbol, q).await;
                    }
                }
            }
        }
        again
    }

    /// Cancels a stop kept as replaced (or an orphan) that is still open: `true` when the exchange confirms the
    /// cancel (recorded "canceled"); `false` when it answers that the stop is no longer open (-2011/-2013: it may
    /// have fired) or the cancel fails — the caller keeps it as replaced, so it is asked about again and a flat
    /// position it closed is a stop-out, never drift.
    async fn cancel_replaced(&mut self, symbol: &str, st: &StopInfo) -> bool {
        match self.venue.cancel_stop_strict(&st.client_id).await {
            Ok(()) => {
                let _ = self.store.update_order(&st.client_id, "canceled", &OrderUpdate::default()).await;
                true
            }
            Err(e) => {
                if !stops::already_gone(e.code()) {
                    self.cancel_failed(symbol, &st.client_id, &e).await;
                }
                false
            }
        }
    }

    /// AUDIT-5 L3: reports a stop whose cancel failed (`stop_cancel_failed`) at most once a minute per stop, like
    /// `entry_waits_for_stop`: a stuck stop is retried at every apply and reconcile, and every failure was an alert.
    /// The alert repeats while the stop stays unsettled (and an entry it would close waits), never silently.
    async fn cancel_failed(&mut self, symbol: &str, client_id: &str, e: &impl std::fmt::Display) {
        if self.blocked_noted.due(&format!("{client_id} cancel"), Instant::now()) {
            self.risk_event("stop_cancel_failed", symbol, format!("{client_id}: {e}")).await;
        } else {
            tracing::warn!(symbol, client_id, error = %e, "copy-trader: a stop's cancel failed again");
        }
    }

    /// Holds the follower at no more than `qty` in `symbol` until the lead closes or flips it (after a stop fired
    /// and left part of the position, or while its close is on its way), so nothing tops it back up.
    async fn hold_at(&mut self, symbol: &str, qty: Decimal) {
        self.lead.limit_to(symbol, qty);
        let _ = self.store.set_lead(symbol, self.lead.qty(symbol), self.lead.limit(symbol)).await;
    }

    /// Polls the lead's positions and applies what changed.
    async fn poll_lead(&mut self, first_start: bool) -> anyhow::Result<()> {
        let Some(c) = self.lead_client.clone() else { return Ok(()) };
        let raw = c.positions().await?;
        self.lead_sides.clear();
        for p in &raw {
            if !p.position_amt.is_zero() {
                self.lead_sides.insert((p.symbol.clone(), p.position_side.clone()), p.position_amt);
            }
            if self.cfg.sizing.allow.contains(&p.symbol) && !p.mark_price.is_zero() {
                self.marks.insert(p.symbol.clone(), p.mark_price);
            }
        }
        self.status.lock().last_lead_poll_ms = now_ms();
        let join = self.cfg.lead.as_ref().is_some_and(|l| l.join_existing);
        let symbols: Vec<String> = self.cfg.sizing.allow.iter().cloned().collect();
        for s in symbols {
            let net = self.lead_net(&s);
            if first_start && !join && !net.is_zero() {
                // Positions the lead held before we started are not chased.
                self.lead.observe(&s, net);
                self.lead.wait(&s);
                self.store.set_lead(&s, net, Some(Decimal::ZERO)).await?;
                self.event(
                    "lead_existing",
                    &s,
                    &format!("lead already holds {net}; not followed until it closes or flips"),
                )
                .await;
                continue;
            }
            self.on_lead_qty(&s, net, "poll", None).await;
        }
        Ok(())
    }

    fn lead_net(&self, symbol: &str) -> Decimal {
        self.lead_sides
            .iter()
            .filter(|((s, _), _)| s == symbol)
            .fold(Decimal::ZERO, |acc, (_, q)| acc.checked_add(q).unwrap_or(acc))
    }

    async fn on_lead_qty(&mut self, symbol: &str, qty: Decimal, source: &str, trigger: Option<Instant>) {
        let Some(change) = self.lead.observe(symbol, qty) else { return };
        self.metrics
            .lead_events
            .get_or_create(&KindLabel { kind: format!("{:?}", change.action).to_lowercase() })
            .inc();
        self.bus.publish(
            SOURCE,
            SignalKind::LeadChanged {
                symbol: symbol.into(),
                action: change.action,
                from_qty: change.from,
                to_qty: change.to,
            },
        );
        let action = match change.action {
            LeadAction::Open => "open",
            LeadAction::Increase => "increase",
            LeadAction::Reduce => "reduce",
            LeadAction::Close => "close",
            LeadAction::Flip => "flip",
        };
        // A follower held below lead × ratio (by a cap or a limit) reduces in proportion to the lead.
        let current = self.follower.get(symbol).map(|p| p.qty).unwrap_or_default();
        let f = self.filters.get(symbol);
        if let Some(p) = target::limit_after_lead_change(change.action, current, change.from, change.to, self.ratio, f)
        {
            self.lead.limit_to(symbol, p);
        }
        // Trade first (the delay that matters), then record.
        self.apply(symbol, trigger).await;
        let note = match change.limit {
            None => String::new(),
            Some(l) if l.is_zero() => ", not followed until the lead closes or flips".into(),
            Some(l) => format!(", follower held at most {l} until the lead closes or flips"),
        };
        self.event(&format!("lead_{action}"), symbol, &format!("{} -> {} ({source}){note}", change.from, change.to))
            .await;
        if let Err(e) = self.store.set_lead(symbol, qty, self.lead.limit(symbol)).await {
            tracing::error!(error = %e, "copy-trader: could not record the lead position");
        }
    }

    // ---- targets and orders -------------------------------------------------------------------------------------

    async fn mark_of(&mut self, symbol: &str) -> Option<Decimal> {
        if let Some(m) = self.marks.get(symbol) {
            return Some(*m);
        }
        match self.venue.mark(symbol).await {
            Ok(m) => {
                self.marks.insert(symbol.to_string(), m);
                Some(m)
            }
            Err(e) => {
                tracing::warn!(symbol, error = %e, "copy-trader: no mark price");
                None
            }
        }
    }

    fn raw_target(&self, symbol: &str) -> Decimal {
        let lead = self.lead_client.is_some().then_some(&self.lead);
        let ai = self.ai.get(symbol).map(|t| (t.qty, t.expires_ms));
        target::raw_target(lead, symbol, self.ratio, ai, now_ms())
    }

    /// Trades `symbol` toward its target. `trigger` is when the lead event that caused this arrived (delay metric).
    async fn apply(&mut self, symbol: &str, trigger: Option<Instant>) {
        // A command accepted while this turn ran (an emergency stop sent during a start-up's lead poll or mid-turn:
        // by the API, or by the bot or the CLI and seen by the log's watcher) that is not read yet holds every order
        // that opens or adds ([`Engine::send_order`]): nothing grows on the old state, and the loop, woken, reads it
        // when this turn ends and then applies every symbol again. What reduces and the stops still go out. The same
        // guard holds while the control log cannot be read (by the engine's own read or by the watcher): the lead's
        // closes and reductions are still mirrored, nothing is opened or added until the log is read again.
        let halted = self.risk.emergency || self.paused;
        if halted && self.filters.contains_key(symbol) {
            // No trading while the emergency stop holds or copy-trading is off, but an open position keeps a stop:
            // one open meanwhile (a late fill, a manual trade) gets one, and one found missing (cancelled by hand,
            // expired) is placed again. A stop is reduce-only protection, not a trade.
            self.protect(symbol).await;
            return;
        }
        if halted || !self.filters.contains_key(symbol) {
            return;
        }
        let hold = unknown_hold(self.cfg.recv_window_ms);
        if unknown::any_past_hold(&self.unknown, symbol, hold, Instant::now())
            && self.resolve_unknown(Some(symbol)).await
        {
            // An order past its hold turned up after all: what it did is read back before anything else is sent.
            if let Err(e) = self.reconcile_positions().await {
                tracing::warn!(symbol, error = %e, "copy-trader: reconcile after a late fill failed");
                return;
            }
        }
        let Some(mark) = self.mark_of(symbol).await else { return };
        let f = self.filters[symbol].clone();
        let current = self.follower.get(symbol).map(|p| p.qty).unwrap_or_default();
        let caps = Caps {
            max_notional_per_symbol: self.cfg.sizing.max_notional_per_symbol,
            max_notional_total: self.cfg.sizing.max_notional_total,
            max_leverage: self.cfg.sizing.max_leverage,
        };
        let equity = self.equity.map(|e| e.total()).unwrap_or(self.cfg.paper.balance);
        let others = target::others_notional(&self.follower, &self.marks, symbol);
        let target = cap_target(self.raw_target(symbol), current, mark, others, equity, &caps);
        // An earlier order may still execute: nothing that grows a position is sent until it is found or its hold
        // has passed. What shrinks or closes goes out at once: it is reduce-only, so whatever that order does, the
        // position cannot end up larger or flipped by it.
        let blocked = unknown::blocks(&self.unknown, symbol, hold, Instant::now());
        // 1. Shrink or close what must go (always allowed).
        match target::reduction(current, target, mark, &f, self.hedge) {
            Reduction::Nothing => {}
            Reduction::Send(order) => {
                if self.send_order(symbol, &order, "mirror", trigger).await != Outcome::Filled {
                    self.protect(symbol).await;
                    return;
                }
            }
            Reduction::BelowMinimum(e) => {
                tracing::debug!(symbol, error = %e, "reduction below the exchange minimum; not sent")
            }
        }
        // 2. Grow toward the target, when entries are allowed.
        let current = self.follower.get(symbol).map(|p| p.qty).unwrap_or_default();
        let allowed = self.risk.entries_allowed(now_ms());
        match target::entry(current, target, blocked, allowed, mark, &f, self.hedge) {
            Entry::Nothing => {}
            Entry::Refused { add, why } => {
                // Refused entries are not chased later: the follower keeps what it holds until the lead's next
                // close or flip (an AI-only symbol simply waits for its next forecast).
                if self.lead_client.is_some() && !self.lead.qty(symbol).is_zero() {
                    self.lead.limit_to(symbol, current.abs());
                    let _ = self.store.set_lead(symbol, self.lead.qty(symbol), self.lead.limit(symbol)).await;
                }
                if let Some(t) = self.ai.get_mut(symbol) {
                    t.qty = current;
                }
                if self.blocked_noted.due(symbol, Instant::now()) {
                    self.risk_event(
                        "entry_blocked",
                        symbol,
                        format!("not adding {add}: {why}; holding {current} until the lead closes or flips"),
                    )
                    .await;
                }
            }
            // AUDIT-4 L4: an old stop kept as replaced that would close this entry at its old trigger is settled
            // (its cancel retried) first; while it may still be live the entry waits (sent at a later apply).
            Entry::Send(order) if self.entry_waits_for_replaced(symbol, order.side).await => {}
            Entry::Send(order) => {
                if self.send_order(symbol, &order, "mirror", trigger).await == Outcome::Rejected {
                    // Refused (e.g. -2019, margin is insufficient): not chased later at whatever the price is then.
                    // The symbol keeps what it holds until the lead's next close or flip.
                    self.hold_after_refusal(symbol).await;
                }
            }
            Entry::BelowMinimum(e) => {
                tracing::debug!(symbol, error = %e, "increase below the exchange minimum; not sent")
            }
        }
        self.protect(symbol).await;
    }

    /// AUDIT-4 L4 ([`stops::entry_waits`]): whether an entry on `side` in `symbol` waits for an old stop there that
    /// would close it. AUDIT-5 L1: the stop held counts too when it guards nothing recorded (no position, or one in
    /// the other direction — its cancel failed when the position closed): it is moved to the replaced ones first.
    /// Each such stop is asked: one still open is cancelled strictly (dropped, recorded "canceled", once confirmed);
    /// whether it holds the entry is [`stops::may_still_fire`] (AUDIT-5 L2); one that cannot fire is dropped with its
    /// status when [`stops::replaced_plan`] says it is settled, else kept for the stop-out check without holding the
    /// entry. The entry waits only while one may still fire, reported once a minute (`entry_waits_for_stop`). A
    /// later apply (every reconcile applies every symbol) sends it once the stop is settled.
    async fn entry_waits_for_replaced(&mut self, symbol: &str, side: Side) -> bool {
        let pos = self.follower.get(symbol).map(|p| p.qty).unwrap_or_default();
        if let Some(held) = self.stops.get(symbol).cloned() {
            if stops::entry_waits(std::slice::from_ref(&held), side) && stops::held_guards_nothing(pos, &held) {
                self.stops.remove(symbol);
                self.replaced.entry(symbol.into()).or_default().push(held);
            }
        }
        let list = self.replaced.remove(symbol).unwrap_or_default();
        if !stops::entry_waits(&list, side) {
            if !list.is_empty() {
                self.replaced.insert(symbol.into(), list);
            }
            return false;
        }
        let recorded = self.follower.contains_key(symbol);
        let (mut kept, mut live) = (Vec::new(), Vec::new());
        for st in list {
            if !stops::entry_waits(std::slice::from_ref(&st), side) {
                kept.push(st);
                continue;
            }
            let fate = self.ask_stop(symbol, &st).await;
            if fate == Some(stops::StopFate::Open) && self.cancel_replaced(symbol, &st).await {
                continue;
            }
            if stops::may_still_fire(&fate) {
                live.push(format!("{} ({})", st.trigger, st.client_id));
                kept.push(st);
                continue;
            }
            match stops::replaced_plan(&fate, recorded, stops::Now::Unread) {
                stops::ReplacedPlan::Drop { status, .. } => {
                    let _ = self
                        .store
                        .update_order(
                            &st.client_id,
                            &status,
                            &OrderUpdate { error: Some("replaced; no longer open"), ..OrderUpdate::default() },
                        )
                        .await;
                }
                stops::ReplacedPlan::Keep | stops::ReplacedPlan::Recheck | stops::ReplacedPlan::Release => {
                    kept.push(st)
                }
            }
        }
        if !kept.is_empty() {
            self.replaced.insert(symbol.into(), kept);
        }
        let waits = !live.is_empty();
        if waits && self.blocked_noted.due(&format!("{symbol} replaced stop"), Instant::now()) {
            self.risk_event(
                "entry_waits_for_stop",
                symbol,
                format!(
                    "not adding ({} {}): an old stop of it is still possibly live ({}) — its cancel is not \
                     confirmed or its fate not known — and could close the new position at its old trigger; sent \
                     once it is settled (its failed cancel is reported once a minute meanwhile)",
                    side_str(side),
                    symbol,
                    live.join(", ")
                ),
            )
            .await;
        }
        waits
    }

    /// Holds `symbol` at what the follower has now until the lead closes or flips (an AI target waits for its next
    /// forecast).
    async fn hold_after_refusal(&mut self, symbol: &str) {
        let current = self.follower.get(symbol).map(|p| p.qty).unwrap_or_default();
        if self.lead_client.is_some() && !self.lead.qty(symbol).is_zero() {
            self.lead.limit_to(symbol, current.abs());
            let _ = self.store.set_lead(symbol, self.lead.qty(symbol), self.lead.limit(symbol)).await;
        }
        if let Some(t) = self.ai.get_mut(symbol) {
            t.qty = current;
        }
        self.event(
            "entry_refused",
            symbol,
            &format!("the exchange refused the entry; holding {current} until the lead closes or flips"),
        )
        .await;
    }

    /// Records, sends and books one market order.
    async fn send_order(
        &mut self,
        symbol: &str,
        order: &MarketOrder,
        reason: &str,
        trigger: Option<Instant>,
    ) -> Outcome {
        let MarketOrder { side, qty, reduce_only, position_side: ref ps } = *order;
        if !switches::may_send(order.only_reduces(), &self.unread()) {
            // A command not read yet (an emergency stop appended while this turn ran slow) or a log that cannot be
            // read: nothing that opens or adds is sent on the old state; what reduces always goes out. The loop was
            // woken: it reads the command once this turn ends, then applies every symbol again.
            tracing::info!(
                symbol,
                side = side_str(side),
                %qty,
                "copy-trader: order held until the control command sent meanwhile is read"
            );
            self.reapply_after_control = true;
            return Outcome::NotSent;
        }
        let client_id = self.next_id("kc");
        let row = OrderRow {
            client_id: client_id.clone(),
            kind: "order".into(),
            symbol: symbol.into(),
            side: side_str(side).into(),
            qty: qty.to_string(),
            trigger_price: None,
            reduce_only,
            reason: reason.into(),
            status: "sending".into(),
            exchange_id: None,
            avg_price: None,
            executed_qty: None,
            fee: None,
            realized_pnl: None,
            error: None,
            paper: self.paper(),
            created_ms: now_ms(),
            updated_ms: now_ms(),
        };
        if let Err(e) = self.store.insert_order(&row).await {
            // Nothing is sent that is not recorded first.
            self.risk_event("store_failed", symbol, format!("order not sent: {e:#}")).await;
            return Outcome::NotSent;
        }
        let req = OrderRequest {
            reduce_only,
            position_side: ps.clone(),
            ..OrderRequest::market(symbol, side, qty, &client_id)
        };
        if let Some(t) = trigger {
            self.metrics.mirror_delay.observe(t.elapsed().as_secs_f64());
        }
        self.bus.publish(
            SOURCE,
            SignalKind::OrderSubmitted {
                symbol: symbol.into(),
                side,
                qty,
                order_type: "MARKET".into(),
                reduce_only,
                client_order_id: client_id.clone(),
                paper: self.paper(),
            },
        );
        match self.venue.place_order(&req).await {
            Ok((order, trades)) => {
                self.metrics.orders.get_or_create(&OrderLabel { kind: "order".into(), result: "filled".into() }).inc();
                let trades = if trades.is_empty() && !order.executed_qty.is_zero() {
                    // The fills could not be read: book the order's own average.
                    vec![Trade {
                        id: 0,
                        order_id: order.order_id,
                        symbol: symbol.into(),
                        side,
                        price: order.avg_price,
                        qty: order.executed_qty,
                        realized_pnl: Decimal::ZERO,
                        commission: Decimal::ZERO,
                        commission_asset: self.cfg.quote_asset.clone(),
                        time: order.update_time,
                    }]
                } else {
                    trades
                };
                if let Err(e) = self.record_filled(&client_id, &order, &trades).await {
                    tracing::error!(error = %e, "copy-trader: filled order could not be recorded");
                }
                for t in &trades {
                    self.book_fill(&client_id, t).await;
                }
                Outcome::Filled
            }
            Err(e) => {
                let Failure { status, kind, outcome: sent } = classify_error(&e);
                if sent == Outcome::Unknown {
                    self.unknown.push(UnknownOrder {
                        client_id: client_id.clone(),
                        symbol: symbol.into(),
                        side,
                        since: Instant::now(),
                        past_hold: false,
                    });
                }
                self.metrics.orders.get_or_create(&OrderLabel { kind: "order".into(), result: status.into() }).inc();
                let _ = self
                    .store
                    .update_order(
                        &client_id,
                        status,
                        &OrderUpdate { error: Some(&e.to_string()), ..OrderUpdate::default() },
                    )
                    .await;
                self.last_order_error = Some(e.to_string());
                if let BinanceError::Banned { until_ms } = e {
                    self.status.lock().banned_until_ms = until_ms;
                }
                let detail =
                    format!("{} {} {}: {e}", side_str(side), qty, if reduce_only { "(reduce-only)" } else { "" });
                let key = format!("{kind} {symbol} {:?}", e.code());
                if reason != "emergency" || self.emergency_alerted.due(&key, Instant::now()) {
                    self.risk_event(kind, symbol, detail).await;
                } else {
                    tracing::warn!(symbol, %detail, "copy-trader: emergency close failed again (alerted before)");
                }
                sent
            }
        }
    }

    /// Asks the exchange for every order of unknown fate (of `only` that symbol). One that turned up is recorded with
    /// its fills; the position it moved is *not* moved here: the next reconcile adopts the exchange's (see
    /// `explained`), so nothing is counted twice. One still missing after [`unknown_hold`] is recorded as not placed
    /// and no longer blocks its symbol, but is still asked for until [`unknown::UNKNOWN_WATCH`] has passed (see
    /// [`unknown::not_found`]). True when one turned up.
    async fn resolve_unknown(&mut self, only: Option<&str>) -> bool {
        let hold = unknown_hold(self.cfg.recv_window_ms);
        let mut found = false;
        for mut u in std::mem::take(&mut self.unknown) {
            if only.is_some_and(|s| s != u.symbol) {
                self.unknown.push(u);
                continue;
            }
            match self.venue.query_order(&u.symbol, &u.client_id).await {
                Ok(Some(o)) => {
                    let trades = match &self.venue {
                        Venue::Live(c) if !o.executed_qty.is_zero() => {
                            c.order_trades(&u.symbol, o.order_id).await.unwrap_or_default()
                        }
                        _ => Vec::new(),
                    };
                    let trades = if trades.is_empty() && !o.executed_qty.is_zero() {
                        vec![Trade {
                            id: 0,
                            order_id: o.order_id,
                            symbol: u.symbol.clone(),
                            side: u.side,
                            price: o.avg_price,
                            qty: o.executed_qty,
                            realized_pnl: Decimal::ZERO,
                            commission: Decimal::ZERO,
                            commission_asset: self.cfg.quote_asset.clone(),
                            time: o.update_time,
                        }]
                    } else {
                        trades
                    };
                    let _ = self.record_filled(&u.client_id, &o, &trades).await;
                    for t in &trades {
                        self.metrics.fills.inc();
                        self.store_fill(&u.client_id, t).await;
                        self.bus.publish(
                            SOURCE,
                            SignalKind::OrderFilled {
                                symbol: t.symbol.clone(),
                                side: t.side,
                                qty: t.qty,
                                price: t.price,
                                fee: t.commission,
                                realized_pnl: t.realized_pnl,
                                client_order_id: u.client_id.clone(),
                                paper: self.paper(),
                            },
                        );
                    }
                    let signed = if u.side == Side::Buy { o.executed_qty } else { o.executed_qty.neg() };
                    let e = self.explained.entry(u.symbol.clone()).or_insert(Decimal::ZERO);
                    *e = e.checked_add(&signed).unwrap_or(*e);
                    found = true;
                    self.event(
                        "resolved",
                        &u.symbol,
                        &format!("order {} of unknown outcome had executed: {}", u.client_id, o.executed_qty),
                    )
                    .await;
                }
                Ok(None) if unknown::not_found(&u, hold, Instant::now()) == NotFound::GiveUp => {
                    self.event(
                        "resolved",
                        &u.symbol,
                        &format!(
                            "order {} still not found after {} s: no longer asked for",
                            u.client_id,
                            u.since.elapsed().as_secs()
                        ),
                    )
                    .await;
                }
                Ok(None) if unknown::not_found(&u, hold, Instant::now()) == NotFound::NotPlaced => {
                    let _ = self
                        .store
                        .update_order(
                            &u.client_id,
                            "not_placed",
                            &OrderUpdate {
                                error: Some(&format!(
                                    "not found {} s after it was sent; still asked for",
                                    u.since.elapsed().as_secs()
                                )),
                                ..OrderUpdate::default()
                            },
                        )
                        .await;
                    self.event(
                        "resolved",
                        &u.symbol,
                        &format!(
                            "order {} not found after {} s: not placed (still asked for, without holding the symbol)",
                            u.client_id,
                            u.since.elapsed().as_secs()
                        ),
                    )
                    .await;
                    u.past_hold = true;
                    self.unknown.push(u);
                }
                Ok(None) => self.unknown.push(u),
                Err(e) => {
                    tracing::warn!(error = %e, client_id = %u.client_id, "copy-trader: query of an order of unknown outcome failed");
                    self.unknown.push(u);
                }
            }
        }
        found
    }

    /// Records order `client_id` as filled: the exchange's id, average price and quantity, and the fees and realized
    /// PnL of its trades.
    async fn record_filled(
        &self,
        client_id: &str,
        o: &kronos_binance::types::Order,
        trades: &[Trade],
    ) -> anyhow::Result<()> {
        let (fee, pnl) = sum_fees(trades);
        self.store
            .update_order(
                client_id,
                "filled",
                &OrderUpdate {
                    exchange_id: Some(o.order_id),
                    avg_price: Some(&o.avg_price.to_string()),
                    executed_qty: Some(&o.executed_qty.to_string()),
                    fee: Some(&fee.to_string()),
                    realized_pnl: Some(&pnl.to_string()),
                    ..OrderUpdate::default()
                },
            )
            .await
    }

    async fn store_fill(&self, client_id: &str, t: &Trade) {
        let row = FillRow {
            client_id: client_id.into(),
            symbol: t.symbol.clone(),
            side: side_str(t.side).into(),
            qty: t.qty.normalized().to_string(),
            price: t.price.normalized().to_string(),
            fee: t.commission.normalized().to_string(),
            realized_pnl: t.realized_pnl.normalized().to_string(),
            paper: self.paper(),
            at_ms: if t.time > 0 { t.time } else { now_ms() },
        };
        if let Err(e) = self.store.insert_fill(&row).await {
            tracing::error!(error = %e, "copy-trader: fill could not be recorded");
        }
    }

    /// Records a fill and moves the follower's position by it.
    async fn book_fill(&mut self, client_id: &str, t: &Trade) {
        self.metrics.fills.inc();
        self.store_fill(client_id, t).await;
        let pos = self.follower.get(&t.symbol).cloned();
        let sim = SimPosition {
            amount: pos.as_ref().map(|p| p.qty).unwrap_or_default(),
            entry_price: pos.as_ref().map(|p| p.entry_price).unwrap_or_default(),
        };
        let (next, _) = apply_fill(&sim, t.side, t.qty, t.price).unwrap_or((sim.clone(), Decimal::ZERO));
        self.marks.insert(t.symbol.clone(), t.price);
        if next.amount.is_zero() {
            self.follower.remove(&t.symbol);
        } else {
            self.follower.insert(
                t.symbol.clone(),
                Position {
                    symbol: t.symbol.clone(),
                    qty: next.amount,
                    entry_price: next.entry_price,
                    mark_price: t.price,
                },
            );
        }
        if let Err(e) = self.store.set_position(&t.symbol, next.amount, next.entry_price).await {
            tracing::error!(error = %e, "copy-trader: position could not be recorded");
        }
        if let Some(e) = self.equity.as_mut() {
            e.wallet =
                e.wallet.checked_add(&t.realized_pnl).and_then(|w| w.checked_sub(&t.commission)).unwrap_or(e.wallet);
        }
        self.save_paper_wallet().await;
        self.equity_stale = true;
        self.metrics.open_positions.set(self.follower.len() as i64);
        self.bus.publish(
            SOURCE,
            SignalKind::OrderFilled {
                symbol: t.symbol.clone(),
                side: t.side,
                qty: t.qty,
                price: t.price,
                fee: t.commission,
                realized_pnl: t.realized_pnl,
                client_order_id: client_id.into(),
                paper: self.paper(),
            },
        );
        self.bus.publish(
            SOURCE,
            SignalKind::PositionChanged { symbol: t.symbol.clone(), qty: next.amount, entry_price: next.entry_price },
        );
    }

    async fn save_paper_wallet(&self) {
        if let Some(wallet) = self.venue.paper_wallet() {
            if let Err(e) = self.store.set_state("paper_wallet", &wallet.to_string()).await {
                tracing::error!(error = %e, "copy-trader: paper wallet could not be recorded");
            }
        }
    }

    /// Makes sure the position in `symbol` has exactly one stop at the right price (and none when flat).
    ///
    /// The new stop is placed *before* the old one is cancelled, and the old one is cancelled only once the new one
    /// is confirmed, so a refusal, a ban or a lost reply leaves the old stop protecting the position. Binance keeps
    /// one close-position stop per direction (a second is refused with -4130), so when the old stop closes the
    /// whole position in the same direction the new one carries the position's quantity instead (reduce-only; the
    /// position side in hedge mode); otherwise it is a close-position stop. An old stop that is no longer open when
    /// it is cancelled is asked for: one that fired is a stop-out.
    async fn protect(&mut self, symbol: &str) {
        let pos = self.follower.get(symbol).cloned();
        let old = self.stops.get(symbol).cloned();
        let plan = stops::plan_stop(
            pos.as_ref(),
            old.as_ref(),
            self.filters.get(symbol),
            self.cfg.protection.stop_loss_pct,
            self.hedge,
        );
        let (pos, trigger, side, qty, close_all, ps) = match plan {
            StopPlan::Keep => return,
            StopPlan::Cancel => {
                if let Some(o) = old {
                    if self.cancel_stop(symbol, &o.client_id).await {
                        self.stops.remove(symbol);
                    }
                }
                return;
            }
            StopPlan::Place { trigger, side, qty, close_all, position_side } => {
                let Some(pos) = pos else { return };
                (pos, trigger, side, qty, close_all, position_side)
            }
        };
        // What the stop on the exchange closes: `None` the whole position, else this quantity.
        let mut closes = (!close_all).then_some(qty);
        let mut placed = self.place_stop(symbol, side, trigger, closes, &ps).await;
        if matches!(&placed, Err(e) if stops::retry_with_quantity(close_all, e.code())) {
            // A close-position stop in this direction that this run does not hold (the user's, or one left by a
            // crash): this one carries the quantity — and is remembered so, or a grown position would keep it —;
            // a stray one of ours is cancelled by the clean-up.
            closes = Some(qty);
            placed = self.place_stop(symbol, side, trigger, closes, &ps).await;
        }
        match placed {
            Ok(client_id) => {
                let new = StopInfo { client_id, trigger, side, qty: closes };
                self.stops.insert(symbol.into(), new.clone());
                if let Some(o) = old {
                    self.retire_stop(symbol, &o, &new).await;
                }
            }
            Err(e) if stops::would_trigger_at_once(e.code()) => {
                // The mark is already past the stop: do what the stop would have done. The old stop (never
                // cancelled) keeps protecting the position unless the close fills.
                self.risk_event(
                    "stop_breached",
                    symbol,
                    format!("mark already beyond the stop at {trigger}; closing {}", pos.qty),
                )
                .await;
                let mut closed = false;
                if let Some(f) = self.filters.get(symbol).cloned() {
                    if let Ok(q) = f.market_qty(pos.qty.abs(), pos.mark_price, true) {
                        let order = MarketOrder { side, qty: q, reduce_only: true, position_side: ps.clone() };
                        if self.send_order(symbol, &order, "breach", None).await == Outcome::Filled {
                            closed = true;
                            self.lead.wait(symbol);
                            let _ = self.store.set_lead(symbol, self.lead.qty(symbol), self.lead.limit(symbol)).await;
                        }
                    }
                }
                if let Some(o) = old.filter(|_| closed) {
                    if self.cancel_stop(symbol, &o.client_id).await {
                        self.stops.remove(symbol);
                    }
                }
            }
            Err(e) => {
                let mut detail = format!("stop at {trigger} not placed ({e}); retried at the next reconcile");
                if let Some(o) = &old {
                    detail.push_str(&format!("; the stop at {} stays meanwhile", o.trigger));
                }
                self.risk_event("stop_failed", symbol, detail).await;
            }
        }
    }

    /// Cancels the stop `old` that `new` replaces. An old stop that is no longer open may have fired: asked for,
    /// and when it triggered under a position that is now flat, the new stop goes and the position is reconciled as
    /// stopped out (the follower then waits for the lead's next close or flip). The new stop is the one held in every
    /// other case: an old stop whose fate cannot be settled now (the question fails, an unknown status, its close on
    /// its way) is kept beside it as replaced ([`Engine::replaced`]) for the stop-out check, never in its place, so
    /// the clean-up never cancels the position's live stop (AUDIT-2 B2).
    async fn retire_stop(&mut self, symbol: &str, old: &StopInfo, new: &StopInfo) {
        match self.venue.cancel_stop_strict(&old.client_id).await {
            Ok(()) => {
                let _ = self.store.update_order(&old.client_id, "canceled", &OrderUpdate::default()).await;
            }
            Err(e) if stops::already_gone(e.code()) => {
                let fate = match self.venue.query_stop(&old.client_id).await {
                    Ok(found) => stops::stop_fate(found.as_ref()),
                    Err(e) => {
                        // Unknown: it may have fired. Kept as replaced: the next reconcile asks again (a flat
                        // position whose old stop fired is a stop-out; one that ended otherwise is dropped).
                        tracing::warn!(symbol, error = %e, "copy-trader: a replaced stop could not be asked for; kept beside the new one");
                        self.replaced.entry(symbol.into()).or_default().push(old.clone());
                        return;
                    }
                };
                match &fate {
                    stops::StopFate::Unknown(status) => {
                        // Possibly live: kept as replaced (as when the question fails, above).
                        tracing::warn!(symbol, %status, "copy-trader: a replaced stop has an unknown status; kept beside the new one");
                        self.replaced.entry(symbol.into()).or_default().push(old.clone());
                        return;
                    }
                    stops::StopFate::Open => {
                        // Still open after all (AUDIT-3 F6): not recorded cancelled; kept as replaced, so the next
                        // reconcile cancels it (or finds it fired).
                        self.replaced.entry(symbol.into()).or_default().push(old.clone());
                        return;
                    }
                    f if !f.fired() => {
                        // It ended without closing anything: recorded as what it became.
                        let status = f.to_record().unwrap_or_default();
                        let _ = self.store.update_order(&old.client_id, &status, &OrderUpdate::default()).await;
                        return;
                    }
                    _ => {}
                }
                // It fired before it could be cancelled. What it left decides: a flat position was stopped out (the
                // new stop goes, the reconcile reports the stop-out); a position that is still there (the fired
                // close filled only in part or is still on its way, or an entry sent before the fire was seen opened
                // it again) keeps the new stop — a fired stop protects nothing — and is held at what it is until the
                // lead closes or flips.
                let left = match self.venue.positions().await {
                    Ok(v) => Some(v.iter().find(|p| p.symbol == symbol).map(|p| p.qty).unwrap_or_default()),
                    Err(e) => {
                        tracing::warn!(symbol, error = %e, "copy-trader: the position under a fired stop could not be read");
                        None
                    }
                };
                match left {
                    Some(q) if !q.is_zero() => {
                        // Its close is on its way (B6) — or done (FINISHED) but not yet in this read (AUDIT-4 L1: the
                        // fill or the positions view can lag): kept as replaced either way, so once the position
                        // shows flat it is a stop-out; a later read that still shows the position drops it
                        // ([`stops::replaced_plan`]).
                        self.replaced.entry(symbol.into()).or_default().push(old.clone());
                        self.lead.limit_to(symbol, q.abs());
                        let _ = self.store.set_lead(symbol, self.lead.qty(symbol), self.lead.limit(symbol)).await;
                        self.risk_event(
                            "stop_fired",
                            symbol,
                            format!(
                                "the stop at {} ({}) fired while it was replaced; the exchange still holds {q}, \
                                 protected by the new stop at {}; held at that until the lead closes or flips",
                                old.trigger, old.client_id, new.trigger
                            ),
                        )
                        .await;
                    }
                    // Flat: the new stop is cancelled, and the old one is what the reconcile finds fired (a
                    // stop-out).
                    Some(_) if self.cancel_stop(symbol, &new.client_id).await => {
                        self.stops.remove(symbol);
                        self.replaced.entry(symbol.into()).or_default().push(old.clone());
                    }
                    // Unknown (or the new stop's cancel failed): the new stop is kept, protecting, and the old one
                    // beside it for the stop-out check.
                    _ => self.replaced.entry(symbol.into()).or_default().push(old.clone()),
                }
                if let Err(e) = self.reconcile_positions().await {
                    tracing::warn!(symbol, error = %e, "copy-trader: reconcile after a stop-out failed");
                }
            }
            Err(e) => {
                // The old stop stays open beside the new one, kept as replaced (AUDIT-3 F6): a flat position it
                // closes is a stop-out, and the next reconcile cancels it.
                self.replaced.entry(symbol.into()).or_default().push(old.clone());
                self.cancel_failed(symbol, &old.client_id, &e).await;
            }
        }
    }

    /// Records and places one stop (close-position when `qty` is `None`); returns its client id.
    async fn place_stop(
        &mut self,
        symbol: &str,
        side: Side,
        trigger: Decimal,
        qty: Option<Decimal>,
        ps: &str,
    ) -> Result<String, BinanceError> {
        let client_id = self.next_id("ks");
        let row = OrderRow {
            client_id: client_id.clone(),
            kind: "stop".into(),
            symbol: symbol.into(),
            side: side_str(side).into(),
            qty: qty.map(|q| q.to_string()).unwrap_or_else(|| "0".into()),
            trigger_price: Some(trigger.to_string()),
            reduce_only: true,
            reason: "stop".into(),
            status: "sending".into(),
            exchange_id: None,
            avg_price: None,
            executed_qty: None,
            fee: None,
            realized_pnl: None,
            error: None,
            paper: self.paper(),
            created_ms: now_ms(),
            updated_ms: now_ms(),
        };
        if let Err(e) = self.store.insert_order(&row).await {
            return Err(BinanceError::Transport {
                endpoint: "store".into(),
                detail: format!("stop not recorded, so not sent: {e:#}"),
            });
        }
        let req = StopRequest {
            symbol: symbol.into(),
            side,
            trigger_price: trigger,
            position_side: ps.into(),
            client_algo_id: client_id.clone(),
            quantity: qty,
        };
        match self.venue.place_stop(&req).await {
            Ok(a) => {
                self.metrics.orders.get_or_create(&OrderLabel { kind: "stop".into(), result: "placed".into() }).inc();
                let _ = self
                    .store
                    .update_order(
                        &client_id,
                        "open",
                        &OrderUpdate { exchange_id: Some(a.algo_id), ..OrderUpdate::default() },
                    )
                    .await;
                self.bus.publish(
                    SOURCE,
                    SignalKind::StopPlaced {
                        symbol: symbol.into(),
                        stop_price: trigger,
                        client_order_id: client_id.clone(),
                    },
                );
                Ok(client_id)
            }
            Err(e) => {
                self.metrics.orders.get_or_create(&OrderLabel { kind: "stop".into(), result: "failed".into() }).inc();
                let _ = self
                    .store
                    .update_order(
                        &client_id,
                        "rejected",
                        &OrderUpdate { error: Some(&e.to_string()), ..OrderUpdate::default() },
                    )
                    .await;
                Err(e)
            }
        }
    }

    /// Cancels a stop; false (and reported) when the exchange did not confirm it.
    async fn cancel_stop(&mut self, symbol: &str, client_id: &str) -> bool {
        match self.venue.cancel_stop(client_id).await {
            Ok(()) => {
                let _ = self.store.update_order(client_id, "canceled", &OrderUpdate::default()).await;
                true
            }
            Err(e) => {
                self.cancel_failed(symbol, client_id, &e).await;
                false
            }
        }
    }

    /// Cancels open stops that belong to no current position (left by a crash or a manual change).
    async fn cleanup_stops(&mut self) {
        let open = match self.venue.open_stops().await {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(error = %e, "copy-trader: open stops could not be listed");
                return;
            }
        };
        for (symbol, client_id) in stops::orphans(&open, &self.stops, &self.replaced) {
            // Cancelled strictly: an orphan that is gone by the time it is cancelled (-2011/-2013) may have fired,
            // so it is kept as replaced and asked about (AUDIT-3 F5).
            let Some(a) = open.iter().find(|a| a.client_algo_id == client_id) else { continue };
            let st = StopInfo {
                client_id: client_id.clone(),
                trigger: a.trigger_price,
                side: a.side,
                qty: (!a.close_position).then_some(a.quantity),
            };
            if !self.cancel_replaced(&symbol, &st).await {
                self.replaced.entry(symbol).or_default().push(st);
            }
        }
    }

    // ---- paper stops --------------------------------------------------------------------------------------------

    async fn on_triggered(&mut self, t: Triggered) {
        let symbol = t.algo.symbol.clone();
        let status = t.algo.algo_status.as_str().to_lowercase();
        let _ = self
            .store
            .update_order(
                &t.algo.client_algo_id,
                &status,
                &OrderUpdate { exchange_id: Some(t.algo.algo_id), ..OrderUpdate::default() },
            )
            .await;
        if self.stops.get(&symbol).is_some_and(|s| s.client_id == t.algo.client_algo_id) {
            self.stops.remove(&symbol);
        }
        if let Some(fill) = t.fill {
            self.bus.publish(
                SOURCE,
                SignalKind::StopTriggered {
                    symbol: symbol.clone(),
                    stop_price: t.algo.trigger_price,
                    qty: fill.trade.qty,
                },
            );
            self.book_fill(&t.algo.client_algo_id, &fill.trade).await;
            self.lead.wait(&symbol);
            let _ = self.store.set_lead(&symbol, self.lead.qty(&symbol), self.lead.limit(&symbol)).await;
            self.risk_event(
                "stopped_out",
                &symbol,
                format!(
                    "stop at {} closed {} at {} (PnL {})",
                    t.algo.trigger_price, fill.trade.qty, fill.trade.price, fill.trade.realized_pnl
                ),
            )
            .await;
        }
    }

    // ---- risk --------------------------------------------------------------------------------------------------

    /// Reads the follower's equity; `false` when it could not be read (the last value, or an estimate booked from
    /// fills since, stays in `self.equity` for sizing, but is never recorded as a sample).
    async fn refresh_equity(&mut self) -> bool {
        match self.venue.equity(&self.cfg.quote_asset).await {
            Ok(e) => {
                self.equity = Some(e);
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "copy-trader: equity could not be read");
                false
            }
        }
    }

    async fn check_risk(&mut self) {
        if !self.refresh_equity().await {
            return;
        }
        let Some(eq) = self.equity else { return };
        let total = eq.total();
        let before = self.risk.clone();
        let decisions = self.risk.observe(
            total,
            now_ms(),
            self.cfg.protection.daily_loss_limit,
            self.cfg.protection.drawdown_pct,
            self.cfg.protection.cooldown.as_millis() as i64,
        );
        for d in &decisions {
            let r = d.report(now_ms());
            if r.alert {
                self.risk_event(r.kind, "", r.detail).await
            } else {
                self.event(r.kind, "", &r.detail).await
            }
        }
        // Any change is saved (a new equity peak too, so a restart measures drawdowns from it).
        if self.risk != before {
            if let Err(e) = self.risk.save(&self.store).await {
                tracing::error!(error = %e, "copy-trader: risk state could not be saved");
            }
        }
        let _ = self.store.record_equity(now_ms(), total).await;
        self.metrics.equity.set(total.to_f64_lossy());
    }

    /// The emergency stop: no new orders; every position closed (each side apart in hedge mode), each one's stop
    /// kept until the exchange shows it closed; retried with back-off until the exchange shows none, and every
    /// attempt that leaves something open is alerted with what is still open.
    async fn execute_emergency(&mut self, reason: &str, seq: i64) {
        self.risk.emergency = true;
        // Shown at once, before the first order goes out.
        self.status.lock().risk.emergency = true;
        // The engine's own record (never the commands): the stop it carries out, as of which command.
        self.carried.emergency_seq = self.carried.emergency_seq.max(seq);
        self.carried.emergency_active = true;
        self.carried.emergency_at_ms = Some(now_ms());
        self.save_carried().await;
        self.metrics.emergency.set(1);
        self.risk_event("emergency_stop", "", format!("{reason}: closing every position, then cancelling every order"))
            .await;
        for s in self.cfg.sizing.allow.clone() {
            self.lead.wait(&s);
            let _ = self.store.set_lead(&s, self.lead.qty(&s), self.lead.limit(&s)).await;
        }
        self.ai.clear();
        self.emergency_retry = None;
        self.emergency_report_due = true;
        self.emergency_pass().await;
    }

    /// One attempt at closing everything; schedules the next while anything is open.
    async fn emergency_pass(&mut self) {
        let open = match self.venue.position_sides().await {
            Ok(v) => v,
            Err(e) => {
                if let BinanceError::Banned { until_ms } = e {
                    self.status.lock().banned_until_ms = until_ms;
                }
                let wait = self.schedule_emergency_retry(false);
                let detail = format!(
                    "positions could not be read ({e}); nothing is known closed; retrying in {} ms",
                    wait.as_millis()
                );
                self.emergency_incomplete("unreadable", detail.clone()).await;
                self.report_emergency(false, detail).await;
                return;
            }
        };
        // Book from what the exchange holds, so the closes below move the right positions.
        for p in crate::venue::net_positions(open.clone()) {
            self.follower.insert(p.symbol.clone(), p);
        }
        let mut closed_any = false;
        // Closes the exchange refuses, for the report of this pass (the alert about each is rate-limited).
        let mut refused = Vec::new();
        for p in &open {
            // An order of unknown fate is no reason to wait here: a close is reduce-only and cannot overshoot.
            let order = emergency::close_order(p, self.filters.get(&p.symbol), self.hedge);
            match self.send_order(&p.symbol, &order, "emergency", None).await {
                Outcome::Filled => closed_any = true,
                Outcome::Rejected => {
                    // The exchange refuses this close (e.g. -4061, -4005): retrying may never help; a person is
                    // told once.
                    let what = emergency::describe(p);
                    let why = self.last_order_error.clone().unwrap_or_default();
                    refused.push(format!("the exchange refuses to close {what} ({why}); close it by hand"));
                    let key = format!("refused {} {}", p.symbol, p.position_side);
                    if self.emergency_alerted.due(&key, Instant::now()) {
                        self.risk_event(
                            "emergency_needs_person",
                            &p.symbol,
                            format!(
                                "the exchange refuses to close {what} ({why}); close it by hand; retrying meanwhile"
                            ),
                        )
                        .await;
                    }
                }
                _ => {}
            }
        }
        // What the exchange holds now decides which stops may go: only those of closed positions.
        let still = match self.venue.position_sides().await {
            Ok(v) => Some(v),
            Err(e) => {
                tracing::warn!(error = %e, "copy-trader: positions could not be re-read during the emergency stop");
                None
            }
        };
        let _ = self.reconcile_positions().await;
        if let Some(still) = &still {
            if let Ok(open_stops) = self.venue.open_stops().await {
                // Only our own stops (`ks…`): the user's conditional orders are theirs to keep.
                for (symbol, client_id) in emergency::stops_of_closed(&open_stops, still, self.hedge) {
                    self.cancel_stop(&symbol, &client_id).await;
                    if self.stops.get(&symbol).is_some_and(|s| s.client_id == client_id) {
                        self.stops.remove(&symbol);
                    }
                }
            }
            // Stops this run holds for positions now closed (the venue expires those itself) are let go too, so a
            // position opened later gets its own.
            for (s, id) in emergency::held_stops_of_closed(&self.stops, still) {
                if self.cancel_stop(&s, &id).await {
                    self.stops.remove(&s);
                }
            }
        }
        let hold = unknown_hold(self.cfg.recv_window_ms);
        let pending = unknown::pending(&self.unknown, hold, Instant::now());
        match emergency::pass_end(&open, still.as_deref(), pending) {
            PassEnd::Pending(pending) => {
                // Nothing open now, but an order of unknown fate may still open something: look again.
                let wait = self.schedule_emergency_retry(closed_any);
                self.status.lock().emergency_open = vec![format!("{pending} order(s) of unknown outcome")];
                let detail = format!(
                    "no position open, {pending} order(s) of unknown outcome pending; checking again in {} ms",
                    wait.as_millis()
                );
                self.emergency_incomplete(&format!("pending {pending}"), detail.clone()).await;
                self.report_emergency(false, detail).await;
            }
            PassEnd::Done => {
                for s in self.cfg.sizing.allow.clone() {
                    if let Err(e) = self.venue.cancel_open_orders(&s).await {
                        self.risk_event("emergency_cancel_failed", &s, e.to_string()).await;
                    }
                }
                self.emergency_retry = None;
                self.emergency_alerted.clear();
                self.emergency_report_due = false;
                self.status.lock().emergency_open.clear();
                self.event("emergency_done", "", "no position left open").await;
                self.report_emergency(true, String::new()).await;
            }
            PassEnd::Open(left) => {
                let wait = self.schedule_emergency_retry(closed_any);
                self.status.lock().emergency_open = left.clone();
                let detail =
                    format!("still open: {}; their stops stay; retrying in {} ms", left.join(", "), wait.as_millis());
                refused.push(detail.clone());
                self.emergency_incomplete(&format!("open {}", left.join(", ")), detail).await;
                self.report_emergency(false, refused.join("; ")).await;
            }
        }
    }

    /// An `emergency_incomplete` alert, raised again for the same state (`key`) only after
    /// [`emergency::ALERT_REPEAT`]; the status always shows what is open.
    async fn emergency_incomplete(&mut self, key: &str, detail: String) {
        let report = std::mem::take(&mut self.emergency_report_due);
        if self.emergency_alerted.due(&format!("incomplete {key}"), Instant::now()) {
            self.risk_event("emergency_incomplete", "", detail).await;
        } else if report {
            // Alerted before, but this request is answered: recorded without another alert.
            self.event("emergency_incomplete", "", &detail).await;
        } else {
            tracing::warn!(%detail, "copy-trader: emergency stop still incomplete (alerted before)");
        }
    }

    /// Records what this pass left for the emergency command it carries out (the last one read,
    /// `carried.emergency_seq`): the bot and the CLI wait for the report naming their command.
    async fn report_emergency(&mut self, done: bool, detail: String) {
        self.carried.emergency_report =
            Some(control::EmergencyReport { seq: self.carried.emergency_seq, done, detail, at_ms: now_ms() });
        self.save_carried().await;
    }

    /// Sets the next emergency attempt; the back-off doubles unless the last attempt made progress.
    fn schedule_emergency_retry(&mut self, progress: bool) -> Duration {
        let wait = emergency::next_retry(self.emergency_retry.map(|(_, last)| last), progress);
        self.emergency_retry = Some((Instant::now() + wait, wait));
        wait
    }

    /// While start-up waits to retry: the sequence of an emergency command (stop, again, resume) not carried out.
    async fn emergency_waiting(&self) -> Option<i64> {
        let state = control::load(&self.store).await.ok()?;
        match emergency::action(&state.emergency, self.risk.emergency, self.carried.emergency_seq) {
            Action::Unchanged => None,
            Action::Stop { seq, .. } | Action::Again { seq, .. } | Action::Resume { seq } => Some(seq),
        }
    }

    async fn save_carried(&self) {
        if let Err(e) = control::save_carried_out(&self.store, &self.carried).await {
            tracing::error!(error = %format!("{e:#}"), "copy-trader: its control record could not be saved");
        }
    }

    /// Asked again while the stop holds: a new pass now (whatever is open is closed).
    async fn emergency_again(&mut self, reason: &str, seq: i64) {
        self.risk_event(
            "emergency_stop",
            "",
            format!("{reason}: emergency stop already active; closing whatever is open again"),
        )
        .await;
        self.carried.emergency_seq = self.carried.emergency_seq.max(seq);
        self.save_carried().await;
        self.emergency_retry = None;
        self.emergency_report_due = true;
        self.emergency_pass().await;
    }

    async fn resume(&mut self, seq: i64) {
        self.risk.emergency = false;
        self.status.lock().risk.emergency = false;
        self.emergency_retry = None;
        self.emergency_alerted.clear();
        self.status.lock().emergency_open.clear();
        self.carried.emergency_seq = self.carried.emergency_seq.max(seq);
        self.carried.emergency_active = false;
        self.carried.emergency_at_ms = None;
        self.save_carried().await;
        self.metrics.emergency.set(0);
        self.risk_event(
            "resumed",
            "",
            "emergency stop lifted; lead positions open now are followed after their next close or flip".into(),
        )
        .await;
    }

    /// Reads the control state (the one place it is read) and carries out what changed: the emergency stop first,
    /// then copy-trading on/off, then the ratio, each on its own (a bad value of one holds up none of the others);
    /// values that cannot be read are reported after that. Returns whether an emergency pass was made.
    /// Applies every symbol again when an [`Engine::apply`] was held back for a command not read yet (now read).
    async fn reapply_held(&mut self) {
        let unread = self.unread();
        if switches::take_reapply(&mut self.reapply_after_control, &unread) {
            for s in self.cfg.sizing.allow.clone() {
                self.apply(&s, None).await;
            }
        }
    }

    /// What this engine knows of control commands it has not read yet (see [`switches::Unread`]).
    fn unread(&self) -> switches::Unread {
        switches::Unread {
            sent: self.control.sent(),
            sent_seen: self.control_sent_seen,
            watched: self.control.watched(),
            seq_seen: self.control_seq_seen,
            engine_unreadable: self.control_unreadable,
        }
    }

    async fn poll_control(&mut self) -> bool {
        self.control_sent_seen = self.control.sent();
        let state = match control::load(&self.store).await {
            Ok(s) => s,
            Err(e) => {
                // The log cannot be read now: a command stored meanwhile (an emergency stop) may be unseen, so
                // nothing that opens or adds exposure goes out until it is read again ([`switches::may_send`]: held,
                // then applied again once read); the lead's closes and reductions and the stops still go out. Said
                // on /health, in the log and as an alert.
                self.control_unreadable = true;
                self.note_control_errors(vec![format!(
                    "{e:#}; only closes, reductions and stops go out until the control log can be read"
                )])
                .await;
                return false;
            }
        };
        self.control_unreadable = false;
        self.control_seq_seen = state.last_seq();
        let now = switches::Current {
            paused: self.paused,
            emergency: self.risk.emergency,
            emergency_seq: self.carried.emergency_seq,
            ratio: self.ratio,
            configured_ratio: self.cfg.sizing.ratio,
            first: !self.status.lock().ready,
            ratio_noted: self.ratio_override_noted,
        };
        let actions = switches::what_to_do(&state, &now);
        let mut acted = false;
        match actions.emergency {
            Action::Unchanged => {}
            Action::Stop { reason, seq, fresh } => {
                let reason = if fresh { reason } else { format!("emergency stop in force ({reason})") };
                self.execute_emergency(&reason, seq).await;
                acted = true;
            }
            Action::Again { reason, seq } => {
                self.emergency_again(&reason, seq).await;
                acted = true;
            }
            Action::Resume { seq } => self.resume(seq).await,
        }
        match actions.trading {
            Trading::Unchanged => {}
            Trading::Off => {
                self.paused = true;
                self.risk_event(
                "trading_off",
                "",
                "copy-trading switched off: no new orders; positions keep their stops (a missing one is placed again)"
                    .into(),
            )
            .await;
            }
            Trading::On => {
                self.paused = false;
                // What the lead did meanwhile is not chased: each symbol keeps what it holds until the lead's next
                // close or flip.
                for s in self.cfg.sizing.allow.clone() {
                    let held = self.follower.get(&s).map(|p| p.qty.abs()).unwrap_or_default();
                    self.lead.limit_to(&s, held);
                    let _ = self.store.set_lead(&s, self.lead.qty(&s), self.lead.limit(&s)).await;
                }
                self.risk_event(
                    "trading_on",
                    "",
                    "copy-trading switched on; open lead positions are followed from their next close or flip".into(),
                )
                .await;
            }
        }
        if let Some((wanted, plan)) = actions.ratio {
            self.take_ratio(wanted, plan).await;
        } else if let Some(r) = self.carried.ratio_effective.as_deref().and_then(crate::report::valid_ratio) {
            // The `ratio` key cannot be read (reported with the errors): the ratio in effect stays, which at a
            // start-up is the one the engine recorded as in effect, not the configured one.
            self.ratio = r;
        }
        if self.carried.emergency_active != self.risk.emergency {
            // E.g. resumed while this engine was down: the record says what is in force now.
            self.carried.emergency_active = self.risk.emergency;
            if !self.risk.emergency {
                self.carried.emergency_at_ms = None;
            }
            self.save_carried().await;
        }
        self.note_control_errors(actions.errors).await;
        acted
    }

    async fn take_ratio(&mut self, wanted: Decimal, plan: switches::RatioPlan) {
        if plan.note_override {
            // Once per process, not at every retried start-up attempt.
            self.ratio_override_noted = true;
            // Not silent: the configured ratio is not the one in effect.
            let detail = format!(
                "ratio {wanted} set at runtime (Telegram /ratio or kronos copytrade ratio) is in effect, not \
                 copytrade.sizing.ratio = {}; `kronos copytrade ratio --reset` goes back to the configured one",
                self.cfg.sizing.ratio
            );
            tracing::warn!(%detail, "copy-trader: ratio override");
            self.event("ratio_override", "", &detail).await;
        }
        if plan.take {
            let old = self.ratio;
            self.ratio = wanted;
            if plan.changed {
                self.event(
                    "ratio_changed",
                    "",
                    &format!("{old} -> {wanted}; positions are resized to lead x {wanted}"),
                )
                .await;
            }
            if self.carried.ratio_effective.as_deref() != Some(wanted.to_string().as_str()) {
                self.carried.ratio_effective = Some(wanted.to_string());
                self.save_carried().await;
            }
            if plan.reapply {
                for s in self.cfg.sizing.allow.clone() {
                    self.apply(&s, None).await;
                }
            }
        }
    }

    /// Control errors: each new one is reported once (log, `control_invalid` risk event — on the bus, so the
    /// Telegram bot alerts it — and the store's events); the current ones are on `/api/status` and `/health`.
    async fn note_control_errors(&mut self, errors: Vec<String>) {
        if errors == self.control_errors {
            return;
        }
        for e in errors.iter().filter(|e| !self.control_errors.contains(e)) {
            self.risk_event("control_invalid", "", e.clone()).await;
        }
        self.status.lock().control_errors = errors.clone();
        self.control_errors = errors;
    }

    // ---- AI -----------------------------------------------------------------------------------------------------

    async fn on_forecast(&mut self, f: Forecast) {
        let Some(ai) = self.cfg.ai.clone() else { return };
        let Some(symbol) = ai.markets.get(&f.market).cloned() else { return };
        self.metrics.ai_signals.inc();
        if self.risk.emergency {
            return;
        }
        let Some(mark) = self.mark_of(&symbol).await else { return };
        let equity = self.equity.map(|e| e.total()).unwrap_or(self.cfg.paper.balance);
        let mut t = forecast_target(&ai, self.cfg.protection.stop_loss_pct, f.p_up_bps, equity, mark);
        if let Some(gate) = &ai.social_gate {
            let entry = !t.qty.is_zero();
            let reading = if entry {
                crate::ai_gate::read(&reqwest::Client::new(), gate).await
            } else {
                Err("not read (no entry)".into())
            };
            if let crate::ai_gate::Verdict::Refuse(why) = crate::ai_gate::decide(gate, entry, &reading) {
                self.metrics.ai_gate_refused.inc();
                tracing::warn!(%symbol, market = %f.market, epoch = f.epoch, reason = %why, "AI entry refused by the social gate");
                self.event("ai_gate_refused", &symbol, &format!("{} epoch {}: {why}", f.market, f.epoch)).await;
                t.qty = Default::default();
            }
        }
        let expires_ms = expires_ms(f.at_ms, f.horizon_s);
        let view = AiView {
            symbol: symbol.clone(),
            market: f.market.clone(),
            epoch: f.epoch,
            p_up_bps: f.p_up_bps,
            edge: t.edge.to_string(),
            qty: t.qty.to_string(),
            expires_ms,
        };
        self.event(
            "ai_signal",
            &symbol,
            &format!("{} epoch {} p_up {} bps: edge {}, target {}", f.market, f.epoch, f.p_up_bps, t.edge, t.qty),
        )
        .await;
        self.ai.insert(symbol.clone(), AiTarget { qty: t.qty, expires_ms, view });
        self.apply(&symbol, None).await;
    }

    async fn expire_ai(&mut self) {
        for s in expired(&self.ai, now_ms()) {
            self.ai.remove(&s);
            self.event("ai_expired", &s, "forecast horizon reached; AI target back to zero").await;
            self.apply(&s, None).await;
        }
    }

    // ---- status ------------------------------------------------------------------------------------------------

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
        st.trading = !self.paused && !self.control_unreadable;
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
                    let _ = self.store.record_equity(now_ms(), e.total()).await;
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
