//! Following and ordering: the lead's positions (poll and stream), forecasts (AI mode), the target per symbol and the
//! orders that reach it (`apply`, `send_order`), and fills (recorded, stored, booked on the paper wallet).

use std::time::Instant;

use kronos_binance::sim::{apply_fill, SimPosition};
use kronos_binance::types::{OrderRequest, Side, Trade};
use kronos_binance::BinanceError;
use kronos_common::signals::LeadAction;
use kronos_common::{Decimal, SignalKind};

use crate::ai::Forecast;
use crate::decide::ai::{expired, expires_ms, forecast_target, AiTarget};
use crate::decide::orders::{classify_error, Failure, MarketOrder, Outcome};
use crate::decide::stops;
use crate::decide::switches;
use crate::decide::target::{self, Entry, Reduction};
use crate::decide::unknown::{self, unknown_hold, UnknownOrder};
use crate::metrics::{KindLabel, OrderLabel};
use crate::sizing::{cap_target, Caps};
use crate::store::{FillRow, OrderRow, OrderUpdate};
use crate::venue::Position;

use super::{now_ms, side_str, sum_fees, AiView, Engine, Stored, SOURCE};

impl Engine {
    /// Polls the lead's positions and applies what changed.
    pub(super) async fn poll_lead(&mut self, first_start: bool) -> anyhow::Result<()> {
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

    pub(super) fn lead_net(&self, symbol: &str) -> Decimal {
        self.lead_sides
            .iter()
            .filter(|((s, _), _)| s == symbol)
            .fold(Decimal::ZERO, |acc, (_, q)| acc.checked_add(q).unwrap_or(acc))
    }

    pub(super) async fn on_lead_qty(&mut self, symbol: &str, qty: Decimal, source: &str, trigger: Option<Instant>) {
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
        self.persisted(Stored::Lead(symbol), self.store.set_lead(symbol, qty, self.lead.limit(symbol)).await).await;
    }

    // ---- targets and orders -------------------------------------------------------------------------------------

    pub(super) async fn mark_of(&mut self, symbol: &str) -> Option<Decimal> {
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

    pub(super) fn raw_target(&self, symbol: &str) -> Decimal {
        let lead = self.lead_client.is_some().then_some(&self.lead);
        let ai = self.ai.get(symbol).map(|t| (t.qty, t.expires_ms));
        target::raw_target(lead, symbol, self.ratio, ai, now_ms())
    }

    /// Trades `symbol` toward its target. `trigger` is when the lead event that caused this arrived (delay metric).
    pub(super) async fn apply(&mut self, symbol: &str, trigger: Option<Instant>) {
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
        // AUDIT6-CT M3: also while the symbol's flat verdict is deferred for such an order (held until judged).
        let blocked =
            unknown::blocks(&self.unknown, symbol, hold, Instant::now()) || self.flat_deferred.contains(symbol);
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
                    self.persisted(
                        Stored::Lead(symbol),
                        self.store.set_lead(symbol, self.lead.qty(symbol), self.lead.limit(symbol)).await,
                    )
                    .await;
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
    pub(super) async fn entry_waits_for_replaced(&mut self, symbol: &str, side: Side) -> bool {
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
                    self.order_status(
                        symbol,
                        &st.client_id,
                        &status,
                        OrderUpdate { error: Some("replaced; no longer open"), ..OrderUpdate::default() },
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
    pub(super) async fn hold_after_refusal(&mut self, symbol: &str) {
        let current = self.follower.get(symbol).map(|p| p.qty).unwrap_or_default();
        if self.lead_client.is_some() && !self.lead.qty(symbol).is_zero() {
            self.lead.limit_to(symbol, current.abs());
            self.persisted(
                Stored::Lead(symbol),
                self.store.set_lead(symbol, self.lead.qty(symbol), self.lead.limit(symbol)).await,
            )
            .await;
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
    pub(super) async fn send_order(
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
            ..OrderRow::unsent(self.paper(), now_ms())
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
                let r = self.record_filled(&client_id, &order, &trades).await;
                self.persisted(Stored::Order { symbol, client_id: &client_id }, r).await;
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
                self.order_status(
                    symbol,
                    &client_id,
                    status,
                    OrderUpdate { error: Some(&e.to_string()), ..OrderUpdate::default() },
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

    /// Records order `client_id` as filled: the exchange's id, average price and quantity, and the fees and realized
    /// PnL of its trades.
    pub(super) async fn record_filled(
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

    /// The `order_filled` signal of a fill of the order `client_id`.
    pub(super) fn fill_signal(&self, client_id: &str, t: &Trade) -> SignalKind {
        SignalKind::OrderFilled {
            symbol: t.symbol.clone(),
            side: t.side,
            qty: t.qty,
            price: t.price,
            fee: t.commission,
            realized_pnl: t.realized_pnl,
            client_order_id: client_id.into(),
            paper: self.paper(),
        }
    }

    pub(super) async fn store_fill(&self, client_id: &str, t: &Trade) {
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
        self.persisted(
            Stored::Fill { symbol: &row.symbol, client_id: &row.client_id },
            self.store.insert_fill(&row).await,
        )
        .await;
    }

    /// Records a fill and moves the follower's position by it.
    pub(super) async fn book_fill(&mut self, client_id: &str, t: &Trade) {
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
        let r = self.store.set_position(&t.symbol, next.amount, next.entry_price).await;
        self.persisted(Stored::Position(&t.symbol), r).await;
        if let Some(e) = self.equity.as_mut() {
            e.wallet =
                e.wallet.checked_add(&t.realized_pnl).and_then(|w| w.checked_sub(&t.commission)).unwrap_or(e.wallet);
        }
        self.save_paper_wallet().await;
        self.equity_stale = true;
        self.metrics.open_positions.set(self.follower.len() as i64);
        self.bus.publish(SOURCE, self.fill_signal(client_id, t));
        self.bus.publish(
            SOURCE,
            SignalKind::PositionChanged { symbol: t.symbol.clone(), qty: next.amount, entry_price: next.entry_price },
        );
    }

    pub(super) async fn save_paper_wallet(&self) {
        if let Some(wallet) = self.venue.paper_wallet() {
            let r = self.store.set_state("paper_wallet", &wallet.to_string()).await;
            self.persisted(Stored::PaperWallet, r).await;
        }
    }

    pub(super) async fn on_forecast(&mut self, f: Forecast) {
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

    pub(super) async fn expire_ai(&mut self) {
        for s in expired(&self.ai, now_ms()) {
            self.ai.remove(&s);
            self.event("ai_expired", &s, "forecast horizon reached; AI target back to zero").await;
            self.apply(&s, None).await;
        }
    }

    // ---- status ------------------------------------------------------------------------------------------------
}
