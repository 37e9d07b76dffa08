//! The control state and what the engine does about it: the fold of the control commands (last wins per control
//! key, in sequence order) and, given what the engine has carried out, the actions to take. Pure: the commands
//! come parsed from [`crate::control`], which alone reads and writes them.
//!
//! Fail-safe rules: `trading` unreadable ⇒ paused; `emergency` unreadable ⇒ the stop is carried out
//! ([`super::emergency::action`]); a bad `ratio` is an error naming the key that leaves the ratio in force as it
//! is and touches neither of the other two.

use kronos_common::Decimal;

use crate::control::{BadValue, ControlCommand, ControlKey};

/// When and by whom a command was sent, and its place in the sequence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamp {
    pub seq: i64,
    pub at_ms: i64,
    pub set_by: String,
}

/// One stored command as read: its key (the column), its stamp and the command, or what is wrong with it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Entry {
    pub(crate) key: ControlKey,
    pub(crate) stamp: Stamp,
    pub(crate) command: Result<ControlCommand, BadValue>,
}

/// What the emergency key asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EmergencyAsk {
    Stop { reason: String },
    Resume,
}

/// The control state: each key on its own (`Ok(None)`: never set; `Err`: the last command for it cannot be read).
#[derive(Debug, Clone, PartialEq)]
pub struct ControlState {
    pub trading: Result<Option<(bool, Stamp)>, BadValue>,
    /// `Some((None, _))`: reset to the configured ratio.
    pub ratio: Result<Option<(Option<Decimal>, Stamp)>, BadValue>,
    pub emergency: Result<Option<(EmergencyAsk, Stamp)>, BadValue>,
}

impl Default for ControlState {
    fn default() -> Self {
        ControlState { trading: Ok(None), ratio: Ok(None), emergency: Ok(None) }
    }
}

impl ControlState {
    /// Copy-trading on as the state says (never set: on; unreadable: off, as the engine takes it).
    pub fn trading_on(&self) -> bool {
        matches!(self.trading, Ok(None) | Ok(Some((true, _))))
    }

    /// The emergency stop asked for (unreadable: asked, as the engine takes it).
    pub fn emergency_asked(&self) -> bool {
        matches!(self.emergency, Err(_) | Ok(Some((EmergencyAsk::Stop { .. }, _))))
    }

    /// The highest sequence number the state was folded from (0: no command): what the engine read up to.
    pub fn last_seq(&self) -> i64 {
        fn seq<T>(k: &Result<Option<(T, Stamp)>, BadValue>) -> i64 {
            match k {
                Ok(None) => 0,
                Ok(Some((_, s))) => s.seq,
                Err(b) => b.seq,
            }
        }
        seq(&self.trading).max(seq(&self.ratio)).max(seq(&self.emergency))
    }

    /// Every value that cannot be read, each naming its key.
    pub fn errors(&self) -> Vec<String> {
        let mut v = Vec::new();
        for e in [self.trading.as_ref().err(), self.ratio.as_ref().err(), self.emergency.as_ref().err()]
            .into_iter()
            .flatten()
        {
            v.push(e.to_string());
        }
        v
    }
}

/// The state the commands leave, applied in sequence order: the last command of each key wins; a command that
/// cannot be read (or does not belong to its key) makes that key unreadable until a later one is sent.
pub(crate) fn fold(entries: &[Entry]) -> ControlState {
    let mut sorted: Vec<&Entry> = entries.iter().collect();
    sorted.sort_by_key(|e| e.stamp.seq);
    let mut s = ControlState::default();
    for e in sorted {
        let stamp = e.stamp.clone();
        match (e.key, e.command.clone()) {
            (ControlKey::Trading, Ok(ControlCommand::SetTrading(on))) => s.trading = Ok(Some((on, stamp))),
            (ControlKey::Ratio, Ok(ControlCommand::SetRatio { ratio, .. })) => s.ratio = Ok(Some((ratio, stamp))),
            (ControlKey::Emergency, Ok(ControlCommand::EmergencyStop { reason })) => {
                s.emergency = Ok(Some((EmergencyAsk::Stop { reason }, stamp)))
            }
            (ControlKey::Emergency, Ok(ControlCommand::Resume)) => {
                s.emergency = Ok(Some((EmergencyAsk::Resume, stamp)))
            }
            (key, cmd) => {
                let bad = match cmd {
                    Err(b) => b,
                    Ok(c) => BadValue::new(key, stamp.seq, c.name(), "a command of this key"),
                };
                match key {
                    ControlKey::Trading => s.trading = Err(bad),
                    ControlKey::Ratio => s.ratio = Err(bad),
                    ControlKey::Emergency => s.emergency = Err(bad),
                }
            }
        }
    }
    s
}

/// What the `trading` key asks of an engine that is `paused` (or not).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Trading {
    Unchanged,
    /// Switched off: no new orders; positions keep their stops.
    Off,
    /// Switched on: open lead positions are followed from their next close or flip (nothing is chased).
    On,
}

/// Never set: on; unreadable: off (fail safe); else as set. Only a change is acted on.
pub(crate) fn trading(asked: &Result<Option<(bool, Stamp)>, BadValue>, paused: bool) -> Trading {
    let on = matches!(asked, Ok(None) | Ok(Some((true, _))));
    if !on && !paused {
        Trading::Off
    } else if on && paused {
        Trading::On
    } else {
        Trading::Unchanged
    }
}

/// The ratio wanted: the runtime one when set, the configured one when never set or reset; `None` when the `ratio`
/// key cannot be read (the ratio in force stays; the error is reported).
pub(crate) fn wanted_ratio(
    asked: &Result<Option<(Option<Decimal>, Stamp)>, BadValue>,
    configured: Decimal,
) -> Option<Decimal> {
    match asked {
        Ok(Some((Some(r), _))) => Some(*r),
        Ok(Some((None, _))) | Ok(None) => Some(configured),
        Err(_) => None,
    }
}

/// What to do with the ratio wanted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RatioPlan {
    /// Report (once per process, at the first start-up attempt) that an override is in effect.
    pub(crate) note_override: bool,
    /// Take `wanted` as the ratio in effect and record it (the engine's record).
    pub(crate) take: bool,
    /// The ratio in effect changes (a `ratio_changed` event).
    pub(crate) changed: bool,
    /// Every symbol is traded toward its new target now (not at start-up: start-up does that itself).
    pub(crate) reapply: bool,
}

/// `first`: start-up, before the engine is ready; `noted`: the override was reported already in this process.
pub(crate) fn ratio_plan(
    wanted: Decimal,
    configured: Decimal,
    current: Decimal,
    first: bool,
    noted: bool,
) -> RatioPlan {
    let changed = wanted != current;
    RatioPlan {
        note_override: first && wanted != configured && !noted,
        take: changed || first,
        changed,
        reapply: changed && !first,
    }
}

/// What the engine is in now and what it carried out.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Current {
    pub(crate) paused: bool,
    /// The emergency stop is in force (carried out by this engine).
    pub(crate) emergency: bool,
    /// The sequence of the last emergency command carried out (the engine's record; 0: none).
    pub(crate) emergency_seq: i64,
    pub(crate) ratio: Decimal,
    pub(crate) configured_ratio: Decimal,
    /// Start-up, before the engine is ready.
    pub(crate) first: bool,
    /// The runtime ratio was reported already in this process.
    pub(crate) ratio_noted: bool,
}

/// What to do about the control state, key by key (each independent of the others' errors).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Actions {
    pub(crate) emergency: super::emergency::Action,
    pub(crate) trading: Trading,
    /// `None`: the ratio cannot be read; the ratio in force stays.
    pub(crate) ratio: Option<(Decimal, RatioPlan)>,
    /// Every value that cannot be read, naming its key (reported after the emergency stop is carried out).
    pub(crate) errors: Vec<String>,
}

pub(crate) fn what_to_do(state: &ControlState, now: &Current) -> Actions {
    let ratio = wanted_ratio(&state.ratio, now.configured_ratio)
        .map(|w| (w, ratio_plan(w, now.configured_ratio, now.ratio, now.first, now.ratio_noted)));
    Actions {
        emergency: super::emergency::action(&state.emergency, now.emergency, now.emergency_seq),
        trading: trading(&state.trading, now.paused),
        ratio,
        errors: state.errors(),
    }
}

/// What the control log's watcher last read of it: the highest sequence number of a command of a known key, or
/// that the log could not be read (the store failing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Watched {
    Seq(i64),
    Unreadable,
}

/// What the engine knows of commands it has not carried out yet, from both ends of the control path: the commands
/// this process's API accepted (`sent`, counted before the API answers) against the count when the engine last read
/// the log (`sent_seen`), and the highest sequence the log's watcher read (`watched`, every writer: the bot and the
/// CLI from other processes too) against the highest the engine carried out (`seq_seen`, the last read of the log),
/// and whether the engine's own last read of the log failed (`engine_unreadable`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Unread {
    pub(crate) sent: u64,
    pub(crate) sent_seen: u64,
    pub(crate) watched: Watched,
    pub(crate) seq_seen: i64,
    pub(crate) engine_unreadable: bool,
}

impl Unread {
    /// A command may be waiting that the engine has not read (an emergency stop sent mid-turn), or the log could not
    /// be read — by the watcher or by the engine's own read, either one (fail safe: a command stored meanwhile may be
    /// unseen).
    pub(crate) fn pending(&self) -> bool {
        self.sent != self.sent_seen
            || self.engine_unreadable
            || match self.watched {
                Watched::Seq(s) => s > self.seq_seen,
                Watched::Unreadable => true,
            }
    }
}

/// Whether an order may go out now, mid-turn (audit 3, F8): one that can open or add exposure waits while a command
/// is unread — it is read first (the loop is woken) and decides; one that only reduces (a close, a reduction, a stop:
/// [`crate::decide::orders::MarketOrder::only_reduces`], hedge-mode closes included) never waits, also not for an
/// unreadable log.
pub(crate) fn may_send(only_reduces: bool, unread: &Unread) -> bool {
    only_reduces || !unread.pending()
}

/// What the status shows as `trading`: copy-trading on (`paused` false) and nothing held for the control log — the
/// same [`Unread::pending`] rule that holds every entry ([`may_send`]). AUDIT6-CT L2: it used the engine's own read
/// alone, so a log only the watcher could not read held every entry while `trading` showed true.
pub(crate) fn trading_shown(paused: bool, unread: &Unread) -> bool {
    !paused && !unread.pending()
}

/// Whether an apply held back for a command not read yet (`pending`) runs now: only once every command sent so far
/// has been read ([`Unread::pending`] false). The flag is cleared only then — a command sent while the control log
/// was being read keeps it raised, so the apply follows the read of that command, not the next reconcile.
pub(crate) fn take_reapply(pending: &mut bool, unread: &Unread) -> bool {
    if *pending && !unread.pending() {
        *pending = false;
        true
    } else {
        false
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::decide::emergency::Action;
    use crate::decide::testing::d;

    pub(crate) fn stamp(seq: i64) -> Stamp {
        Stamp { seq, at_ms: seq * 1000, set_by: "test".into() }
    }

    pub(crate) fn entry(seq: i64, c: ControlCommand) -> Entry {
        Entry { key: c.key(), stamp: stamp(seq), command: Ok(c) }
    }

    fn bad(seq: i64, key: ControlKey, value: &str) -> Entry {
        Entry { key, stamp: stamp(seq), command: Err(BadValue::new(key, seq, value, "something readable")) }
    }

    fn stop(reason: &str) -> ControlCommand {
        ControlCommand::EmergencyStop { reason: reason.into() }
    }

    fn ratio(r: Option<&str>) -> ControlCommand {
        ControlCommand::SetRatio { ratio: r.map(d), set_by: "test".into() }
    }

    fn now() -> Current {
        Current {
            paused: false,
            emergency: false,
            emergency_seq: 0,
            ratio: d("0.5"),
            configured_ratio: d("0.5"),
            first: false,
            ratio_noted: false,
        }
    }

    #[test]
    fn the_last_command_of_each_key_wins_in_sequence_order_whatever_the_order_read() {
        let entries = [
            entry(5, ControlCommand::Resume),
            entry(2, ControlCommand::SetTrading(false)),
            entry(4, stop("second")),
            entry(1, stop("first")),
            entry(3, ratio(Some("0.8"))),
            entry(6, ratio(None)),
        ];
        let s = fold(&entries);
        assert_eq!(s.trading, Ok(Some((false, stamp(2)))));
        assert_eq!(s.ratio, Ok(Some((None, stamp(6)))));
        assert_eq!(s.emergency, Ok(Some((EmergencyAsk::Resume, stamp(5)))));
        // A stop sent after the resume wins, even read first.
        let mut later = entries.to_vec();
        later.insert(0, entry(7, stop("after the resume")));
        assert_eq!(
            fold(&later).emergency,
            Ok(Some((EmergencyAsk::Stop { reason: "after the resume".into() }, stamp(7))))
        );
        assert_eq!(fold(&[]), ControlState::default());
    }

    #[test]
    fn a_bad_command_makes_only_its_key_unreadable_until_a_later_one() {
        let s =
            fold(&[entry(1, ControlCommand::SetTrading(true)), bad(2, ControlKey::Ratio, "abc"), entry(3, stop("x"))]);
        assert_eq!(s.trading, Ok(Some((true, stamp(1)))));
        let e = s.ratio.clone().unwrap_err().to_string();
        assert!(e.contains("`ratio`") && e.contains("'abc'"), "{e}");
        assert!(s.emergency.is_ok());
        assert_eq!(s.errors().len(), 1);
        // A later good command reads again; an earlier bad one is superseded.
        let s = fold(&[bad(2, ControlKey::Ratio, "abc"), entry(4, ratio(Some("0.8")))]);
        assert_eq!(s.ratio, Ok(Some((Some(d("0.8")), stamp(4)))));
        // A command stored under another key is unreadable there.
        let wrong = Entry { key: ControlKey::Trading, stamp: stamp(9), command: Ok(ControlCommand::Resume) };
        assert!(fold(&[wrong]).trading.unwrap_err().to_string().contains("`trading`"));
    }

    #[test]
    fn trading_unreadable_is_paused_and_never_set_is_on() {
        assert_eq!(trading(&Ok(Some((false, stamp(1)))), false), Trading::Off);
        assert_eq!(trading(&Ok(Some((false, stamp(1)))), true), Trading::Unchanged);
        assert_eq!(trading(&Ok(Some((true, stamp(1)))), true), Trading::On);
        assert_eq!(trading(&Ok(None), true), Trading::On);
        assert_eq!(trading(&Ok(None), false), Trading::Unchanged);
        let unreadable = Err(BadValue::new(ControlKey::Trading, 3, "maybe", "1 or 0"));
        assert_eq!(trading(&unreadable, false), Trading::Off, "fail safe: paused");
        assert_eq!(trading(&unreadable, true), Trading::Unchanged);
    }

    #[test]
    fn a_bad_ratio_keeps_the_ratio_in_force_and_blocks_neither_the_pause_nor_the_emergency_stop() {
        let s =
            fold(&[entry(1, ControlCommand::SetTrading(false)), bad(2, ControlKey::Ratio, "-3"), entry(3, stop("x"))]);
        let a = what_to_do(&s, &now());
        assert_eq!(a.ratio, None, "the ratio in force stays");
        assert_eq!(a.trading, Trading::Off);
        assert!(matches!(a.emergency, Action::Stop { seq: 3, .. }), "{:?}", a.emergency);
        assert!(a.errors[0].contains("`ratio`") && a.errors[0].contains("'-3'"), "{:?}", a.errors);
        // Reset and never set: the configured ratio.
        assert_eq!(wanted_ratio(&Ok(Some((None, stamp(1)))), d("0.5")), Some(d("0.5")));
        assert_eq!(wanted_ratio(&Ok(None), d("0.5")), Some(d("0.5")));
        assert_eq!(wanted_ratio(&Ok(Some((Some(d("0.8")), stamp(1)))), d("0.5")), Some(d("0.8")));
    }

    #[test]
    fn a_ratio_change_is_taken_reported_and_applied_and_an_override_noted_once_at_start() {
        assert_eq!(
            ratio_plan(d("0.5"), d("0.5"), d("0.5"), true, false),
            RatioPlan { note_override: false, take: true, changed: false, reapply: false }
        );
        assert_eq!(
            ratio_plan(d("0.8"), d("0.5"), d("0.5"), true, false),
            RatioPlan { note_override: true, take: true, changed: true, reapply: false }
        );
        assert!(!ratio_plan(d("0.8"), d("0.5"), d("0.5"), true, true).note_override);
        assert_eq!(
            ratio_plan(d("0.8"), d("0.5"), d("0.5"), false, false),
            RatioPlan { note_override: false, take: true, changed: true, reapply: true }
        );
        assert_eq!(
            ratio_plan(d("0.8"), d("0.5"), d("0.8"), false, true),
            RatioPlan { note_override: false, take: false, changed: false, reapply: false }
        );
    }

    /// AUDIT-2 B5: an apply held back for an unread command runs once every command sent is read; one sent while
    /// the log was read (sent ≠ seen) keeps it pending for the read that follows (before, the flag was taken
    /// first and the apply waited for the next reconcile).
    #[test]
    fn a_held_apply_waits_for_every_command_sent_and_is_not_lost_meanwhile() {
        let u = |sent, sent_seen| Unread {
            sent,
            sent_seen,
            watched: Watched::Seq(7),
            seq_seen: 7,
            engine_unreadable: false,
        };
        let mut pending = true;
        assert!(!take_reapply(&mut pending, &u(2, 1)));
        assert!(pending, "a command sent during the read keeps the held apply pending");
        assert!(take_reapply(&mut pending, &u(2, 2)));
        assert!(!pending);
        assert!(!take_reapply(&mut pending, &u(2, 2)), "nothing held, nothing to apply");
    }

    /// Audit 3, F8: a command another process (the bot, the CLI) appended mid-turn — the watcher read a higher
    /// sequence than the engine carried out — holds every order that can add exposure until the engine read it, as
    /// one the API accepted does; an unreadable log holds them too; a reduce-only order is never held.
    #[test]
    fn a_command_appended_by_another_process_holds_new_exposure_until_read_but_never_a_close() {
        let u = |watched, seq_seen| Unread { sent: 3, sent_seen: 3, watched, seq_seen, engine_unreadable: false };
        let read = u(Watched::Seq(7), 7);
        assert!(!read.pending());
        assert!(may_send(false, &read), "every command read: entries go out");
        let appended = u(Watched::Seq(8), 7);
        assert!(appended.pending());
        assert!(!may_send(false, &appended), "an emergency stop appended mid-turn: no entry on the old state");
        assert!(may_send(true, &appended), "a close never waits");
        let unreadable = u(Watched::Unreadable, 7);
        assert!(!may_send(false, &unreadable), "the log unreadable: no new exposure");
        assert!(may_send(true, &unreadable), "the log unreadable: closes and stops still go out");
        // The watcher behind the engine's own read (it reads every 250 ms): nothing is pending.
        assert!(may_send(false, &u(Watched::Seq(5), 7)));
        // The API's count alone still holds, whatever the watcher read.
        let api = Unread { sent: 4, sent_seen: 3, watched: Watched::Seq(7), seq_seen: 7, engine_unreadable: false };
        assert!(!may_send(false, &api) && may_send(true, &api));
        // A held apply runs once the appended command was read, not before.
        let mut pending = true;
        assert!(!take_reapply(&mut pending, &appended));
        assert!(!take_reapply(&mut pending, &unreadable));
        assert!(take_reapply(&mut pending, &u(Watched::Seq(8), 8)));
    }

    /// Issue 12 (CT9): the log unreadable by either reader — the watcher or the engine's own read — lets only what
    /// reduces go out; an apply held meanwhile runs only once both read it again.
    #[test]
    fn a_log_unreadable_by_either_reader_lets_only_reductions_out() {
        let u = |watched, engine_unreadable| Unread { sent: 3, sent_seen: 3, watched, seq_seen: 7, engine_unreadable };
        let engine_only = u(Watched::Seq(7), true);
        assert!(engine_only.pending(), "the watcher read the log but the engine's read failed");
        assert!(!may_send(false, &engine_only), "the engine's read failed: no new exposure");
        assert!(may_send(true, &engine_only), "the engine's read failed: closes and reductions go out");
        let watcher_only = u(Watched::Unreadable, false);
        assert!(!may_send(false, &watcher_only) && may_send(true, &watcher_only));
        let both = u(Watched::Unreadable, true);
        assert!(!may_send(false, &both) && may_send(true, &both));
        // AUDIT6-CT L2: `trading` shows false whichever reader failed (entries are held either way).
        for held in [engine_only, watcher_only, both] {
            assert!(!trading_shown(false, &held), "{held:?}");
        }
        assert!(trading_shown(false, &u(Watched::Seq(7), false)));
        assert!(!trading_shown(true, &u(Watched::Seq(7), false)), "paused");
        let mut pending = true;
        assert!(!take_reapply(&mut pending, &engine_only), "held until the engine reads the log again");
        assert!(!take_reapply(&mut pending, &watcher_only));
        assert!(pending);
        assert!(take_reapply(&mut pending, &u(Watched::Seq(7), false)), "read by both: the held apply runs");
    }
}
