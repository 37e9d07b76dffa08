//! Reconciliation: orders pending from before a restart, the periodic positions reconcile (and its flat verdicts), and
//! orders whose fate is unknown, resolved by asking the exchange.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use kronos_binance::types::{Side, Trade};
use kronos_common::{Decimal, SignalKind};

use crate::decide::reconcile::{self, Difference};
use crate::decide::stops;
use crate::decide::unknown::{self, unknown_hold, NotFound, UnknownOrder};
use crate::store::OrderUpdate;
use crate::venue::{Position, Venue};

use super::{Engine, Stored, SOURCE};

impl Engine {
    /// Orders recorded as `sending` by an earlier run: ask the exchange what became of each.
    pub(super) async fn resolve_pending(&mut self) -> anyhow::Result<()> {
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
    pub(super) async fn reconcile_positions(&mut self) -> anyhow::Result<()> {
        if self.reconcile_pass().await? {
            self.reconcile_pass().await?;
        }
        Ok(())
    }

    /// One pass of [`Engine::reconcile_positions`]; `true` when the stop check asks for another.
    pub(super) async fn reconcile_pass(&mut self) -> anyhow::Result<bool> {
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
        // Replaces `flat_deferred` once every symbol was looked at (kept as it was if the pass fails part-way).
        let mut deferred = std::collections::BTreeSet::new();
        let hold = unknown_hold(self.cfg.recv_window_ms);
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
            // AUDIT-5 L5: an order of ours of unknown outcome may have made this difference: no flat verdict and
            // nothing cancelled while it is within its hold. AUDIT6-CT M3: the stops are asked first — one that fired
            // is a stop-out whatever that order did — and no entry goes out in the symbol while its verdict waits.
            let blocks = unknown::blocks(&self.unknown, &s, hold, Instant::now());
            if reconcile::flat_waits_for_unknown(ours, theirs, late, fate.as_ref(), blocks) {
                tracing::warn!(symbol = %s, %ours, "copy-trader: flat while an order of ours has an unknown outcome; not judged yet");
                deferred.insert(s.clone());
                continue;
            }
            let difference = reconcile::difference(ours, theirs, late, fate.as_ref(), stop_known);
            if reconcile::needs_flat_read(difference) {
                // AUDIT-5 L4, AUDIT6-CT M2: a close outside or an undecided verdict is confirmed by a positions read
                // made after the stop answered, before anything is judged or cancelled (the first read may lag
                // behind a live position).
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
                    // AUDIT7 CT-M1: unjudged, the symbol holds its entries like a deferred one — the account may be
                    // flat after a stop-out, and an add by the lead sent now would re-enter it.
                    tracing::warn!(symbol = %s, ?again, "copy-trader: flat not confirmed after the stop answered; judged at the next reconcile");
                    deferred.insert(s.clone());
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
                    self.order_status(&s, &st.client_id, &status, update).await;
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
                self.persisted(Stored::Lead(&s), self.store.set_lead(&s, self.lead.qty(&s), self.lead.limit(&s)).await)
                    .await;
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
                self.persisted(Stored::Lead(&s), self.store.set_lead(&s, self.lead.qty(&s), self.lead.limit(&s)).await)
                    .await;
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
                self.persisted(Stored::Lead(&s), self.store.set_lead(&s, self.lead.qty(&s), self.lead.limit(&s)).await)
                    .await;
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
        self.flat_deferred = deferred;
        self.metrics.open_positions.set(self.follower.len() as i64);
        Ok(self.verify_stops().await)
    }

    /// Asks the exchange for every order of unknown fate (of `only` that symbol). One that turned up is recorded with
    /// its fills; the position it moved is *not* moved here: the next reconcile adopts the exchange's (see
    /// `explained`), so nothing is counted twice. One still missing after [`unknown_hold`] is recorded as not placed
    /// and no longer blocks its symbol, but is still asked for until [`unknown::UNKNOWN_WATCH`] has passed (see
    /// [`unknown::not_found`]). True when one turned up.
    pub(super) async fn resolve_unknown(&mut self, only: Option<&str>) -> bool {
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
                    let r = self.record_filled(&u.client_id, &o, &trades).await;
                    self.persisted(Stored::Order { symbol: &u.symbol, client_id: &u.client_id }, r).await;
                    for t in &trades {
                        self.metrics.fills.inc();
                        self.store_fill(&u.client_id, t).await;
                        self.bus.publish(SOURCE, self.fill_signal(&u.client_id, t));
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
                // One decision per row, at one instant.
                Ok(None) => match unknown::not_found(&u, hold, Instant::now()) {
                    NotFound::GiveUp => {
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
                    NotFound::NotPlaced => {
                        self.order_status(
                            &u.symbol,
                            &u.client_id,
                            "not_placed",
                            OrderUpdate {
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
                    NotFound::Watch => self.unknown.push(u),
                },
                Err(e) => {
                    tracing::warn!(error = %e, client_id = %u.client_id, "copy-trader: query of an order of unknown outcome failed");
                    self.unknown.push(u);
                }
            }
        }
        found
    }
}
