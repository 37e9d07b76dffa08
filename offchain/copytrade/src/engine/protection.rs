//! The protective stops: placing and replacing the close-position stop after a fill (`protect`), verifying the stops on
//! the exchange, retiring a replaced stop and handling a held symbol, cancels and their failures, clean-up of stray
//! stops, and a paper stop that triggered.

use std::collections::BTreeMap;
use std::time::Instant;

use kronos_binance::sim::Triggered;
use kronos_binance::types::{Side, StopRequest};
use kronos_binance::BinanceError;
use kronos_common::{Decimal, SignalKind};

use crate::decide::orders::{MarketOrder, Outcome};
use crate::decide::stops::{self, StopInfo, StopPlan};
use crate::metrics::OrderLabel;
use crate::store::{OrderRow, OrderUpdate};

use super::{now_ms, side_str, Engine, Stored, SOURCE};

impl Engine {
    /// Asks the exchange what became of the stop `st` of `symbol`; `None` when the question failed (logged).
    pub(super) async fn ask_stop(&self, symbol: &str, st: &StopInfo) -> stops::Asked {
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
    pub(super) async fn verify_stops(&mut self) -> bool {
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
                    self.order_status(
                        &symbol,
                        &st.client_id,
                        &status,
                        OrderUpdate { error: Some("no longer open on the exchange"), ..OrderUpdate::default() },
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
                    // AUDIT6-CT M1: no stop held and this one guards the position recorded now (restored as replaced
                    // at a start whose store had no position row, the live position adopted since): taken back as
                    // held, not cancelled — cancelling it left the position bare until a start succeeded.
                    let pos = self.follower.get(&symbol).map(|p| p.qty).unwrap_or_default();
                    if stops::take_back_as_held(self.stops.get(&symbol), pos, &st) {
                        tracing::warn!(symbol, client_id = %st.client_id, "copy-trader: an open stop kept as replaced guards the position; held again");
                        self.stops.insert(symbol, st);
                        continue;
                    }
                    // Cancelled here, not left to the clean-up: one whose cancel is not confirmed stays replaced
                    // (it may fire before it is gone) and is asked again at the next reconcile (AUDIT-3 F5).
                    if !self.cancel_replaced(&symbol, &st).await {
                        self.replaced.entry(symbol).or_default().push(st);
                    }
                }
                stops::ReplacedPlan::Drop { status, hold } => {
                    self.order_status(
                        &symbol,
                        &st.client_id,
                        &status,
                        OrderUpdate { error: Some("replaced; no longer open"), ..OrderUpdate::default() },
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
    pub(super) async fn cancel_replaced(&mut self, symbol: &str, st: &StopInfo) -> bool {
        match self.venue.cancel_stop_strict(&st.client_id).await {
            Ok(()) => {
                self.order_status(symbol, &st.client_id, "canceled", OrderUpdate::default()).await;
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
    pub(super) async fn cancel_failed(&mut self, symbol: &str, client_id: &str, e: &impl std::fmt::Display) {
        if self.blocked_noted.due(&format!("{client_id} cancel"), Instant::now()) {
            self.risk_event("stop_cancel_failed", symbol, format!("{client_id}: {e}")).await;
        } else {
            tracing::warn!(symbol, client_id, error = %e, "copy-trader: a stop's cancel failed again");
        }
    }

    /// Holds the follower at no more than `qty` in `symbol` until the lead closes or flips it (after a stop fired
    /// and left part of the position, or while its close is on its way), so nothing tops it back up.
    pub(super) async fn hold_at(&mut self, symbol: &str, qty: Decimal) {
        self.lead.limit_to(symbol, qty);
        self.persisted(
            Stored::Lead(symbol),
            self.store.set_lead(symbol, self.lead.qty(symbol), self.lead.limit(symbol)).await,
        )
        .await;
    }

    /// Makes sure the position in `symbol` has exactly one stop at the right price (and none when flat).
    ///
    /// The new stop is placed *before* the old one is cancelled, and the old one is cancelled only once the new one
    /// is confirmed, so a refusal, a ban or a lost reply leaves the old stop protecting the position. Binance keeps
    /// one close-position stop per direction (a second is refused with -4130), so when the old stop closes the
    /// whole position in the same direction the new one carries the position's quantity instead (reduce-only; the
    /// position side in hedge mode); otherwise it is a close-position stop. An old stop that is no longer open when
    /// it is cancelled is asked for: one that fired is a stop-out.
    pub(super) async fn protect(&mut self, symbol: &str) {
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
                            self.persisted(
                                Stored::Lead(symbol),
                                self.store.set_lead(symbol, self.lead.qty(symbol), self.lead.limit(symbol)).await,
                            )
                            .await;
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
    pub(super) async fn retire_stop(&mut self, symbol: &str, old: &StopInfo, new: &StopInfo) {
        match self.venue.cancel_stop_strict(&old.client_id).await {
            Ok(()) => {
                self.order_status(symbol, &old.client_id, "canceled", OrderUpdate::default()).await;
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
                        self.order_status(symbol, &old.client_id, &status, OrderUpdate::default()).await;
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
                        self.persisted(
                            Stored::Lead(symbol),
                            self.store.set_lead(symbol, self.lead.qty(symbol), self.lead.limit(symbol)).await,
                        )
                        .await;
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
    pub(super) async fn place_stop(
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
            ..OrderRow::unsent(self.paper(), now_ms())
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
                self.order_status(
                    symbol,
                    &client_id,
                    "open",
                    OrderUpdate { exchange_id: Some(a.algo_id), ..OrderUpdate::default() },
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
                self.order_status(
                    symbol,
                    &client_id,
                    "rejected",
                    OrderUpdate { error: Some(&e.to_string()), ..OrderUpdate::default() },
                )
                .await;
                Err(e)
            }
        }
    }

    /// Cancels a stop; false (and reported) when the exchange did not confirm it.
    pub(super) async fn cancel_stop(&mut self, symbol: &str, client_id: &str) -> bool {
        match self.venue.cancel_stop(client_id).await {
            Ok(()) => {
                self.order_status(symbol, client_id, "canceled", OrderUpdate::default()).await;
                true
            }
            Err(e) => {
                self.cancel_failed(symbol, client_id, &e).await;
                false
            }
        }
    }

    /// Cancels open stops that belong to no current position (left by a crash or a manual change).
    pub(super) async fn cleanup_stops(&mut self) {
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

    pub(super) async fn on_triggered(&mut self, t: Triggered) {
        let symbol = t.algo.symbol.clone();
        let status = t.algo.algo_status.as_str().to_lowercase();
        self.order_status(
            &symbol,
            &t.algo.client_algo_id,
            &status,
            OrderUpdate { exchange_id: Some(t.algo.algo_id), ..OrderUpdate::default() },
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
            self.persisted(
                Stored::Lead(&symbol),
                self.store.set_lead(&symbol, self.lead.qty(&symbol), self.lead.limit(&symbol)).await,
            )
            .await;
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
}
