//! Risk checks, the emergency stop and the control commands: refreshing the equity, the risk checks, the emergency
//! stop's close passes, retries and reports, resume and re-applying held symbols, reading the control log (pause,
//! ratio switch) and noting its errors.

use std::time::{Duration, Instant};

use kronos_binance::BinanceError;
use kronos_common::Decimal;

use crate::control;
use crate::decide::emergency::Action;
use crate::decide::emergency::{self, PassEnd};
use crate::decide::orders::Outcome;
use crate::decide::switches::{self, Trading};
use crate::decide::unknown::{self, unknown_hold};

use super::{now_ms, Engine, Stored};

impl Engine {
    /// Reads the follower's equity; `false` when it could not be read (the last value, or an estimate booked from
    /// fills since, stays in `self.equity` for sizing, but is never recorded as a sample).
    pub(super) async fn refresh_equity(&mut self) -> bool {
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

    pub(super) async fn check_risk(&mut self) {
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
            let r = self.risk.save(&self.store).await;
            self.persisted(Stored::Risk, r).await;
        }
        self.persisted(Stored::Equity, self.store.record_equity(now_ms(), total).await).await;
        self.metrics.equity.set(total.to_f64_lossy());
    }

    /// The emergency stop: no new orders; every position closed (each side apart in hedge mode), each one's stop
    /// kept until the exchange shows it closed; retried with back-off until the exchange shows none, and every
    /// attempt that leaves something open is alerted with what is still open.
    pub(super) async fn execute_emergency(&mut self, reason: &str, seq: i64) {
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
            self.persisted(Stored::Lead(&s), self.store.set_lead(&s, self.lead.qty(&s), self.lead.limit(&s)).await)
                .await;
        }
        self.ai.clear();
        self.emergency_retry = None;
        self.emergency_report_due = true;
        self.emergency_pass().await;
    }

    /// One attempt at closing everything; schedules the next while anything is open.
    pub(super) async fn emergency_pass(&mut self) {
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
        if let Err(e) = self.reconcile_positions().await {
            tracing::warn!(error = %e, "copy-trader: position reconcile during the emergency stop failed");
        }
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
    pub(super) async fn emergency_incomplete(&mut self, key: &str, detail: String) {
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
    pub(super) async fn report_emergency(&mut self, done: bool, detail: String) {
        self.carried.emergency_report =
            Some(control::EmergencyReport { seq: self.carried.emergency_seq, done, detail, at_ms: now_ms() });
        self.save_carried().await;
    }

    /// Sets the next emergency attempt; the back-off doubles unless the last attempt made progress.
    pub(super) fn schedule_emergency_retry(&mut self, progress: bool) -> Duration {
        let wait = emergency::next_retry(self.emergency_retry.map(|(_, last)| last), progress);
        self.emergency_retry = Some((Instant::now() + wait, wait));
        wait
    }

    /// While start-up waits to retry: the sequence of an emergency command (stop, again, resume) not carried out.
    pub(super) async fn emergency_waiting(&self) -> Option<i64> {
        let state = control::load(&self.store).await.ok()?;
        match emergency::action(&state.emergency, self.risk.emergency, self.carried.emergency_seq) {
            Action::Unchanged => None,
            Action::Stop { seq, .. } | Action::Again { seq, .. } | Action::Resume { seq } => Some(seq),
        }
    }

    pub(super) async fn save_carried(&self) {
        if let Err(e) = control::save_carried_out(&self.store, &self.carried).await {
            tracing::error!(error = %format!("{e:#}"), "copy-trader: its control record could not be saved");
        }
    }

    /// Asked again while the stop holds: a new pass now (whatever is open is closed).
    pub(super) async fn emergency_again(&mut self, reason: &str, seq: i64) {
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

    pub(super) async fn resume(&mut self, seq: i64) {
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
    pub(super) async fn reapply_held(&mut self) {
        let unread = self.unread();
        if switches::take_reapply(&mut self.reapply_after_control, &unread) {
            for s in self.cfg.sizing.allow.clone() {
                self.apply(&s, None).await;
            }
        }
    }

    /// What this engine knows of control commands it has not read yet (see [`switches::Unread`]).
    pub(super) fn unread(&self) -> switches::Unread {
        switches::Unread {
            sent: self.control.sent(),
            sent_seen: self.control_sent_seen,
            watched: self.control.watched(),
            seq_seen: self.control_seq_seen,
            engine_unreadable: self.control_unreadable,
        }
    }

    pub(super) async fn poll_control(&mut self) -> bool {
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
                    self.persisted(
                        Stored::Lead(&s),
                        self.store.set_lead(&s, self.lead.qty(&s), self.lead.limit(&s)).await,
                    )
                    .await;
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

    pub(super) async fn take_ratio(&mut self, wanted: Decimal, plan: switches::RatioPlan) {
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
    pub(super) async fn note_control_errors(&mut self, errors: Vec<String>) {
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
}
