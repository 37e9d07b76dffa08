//! The emergency stop: the closes it sends, the stops it may let go, what a pass leaves, when it tries again and
//! how often the same alert is raised.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use kronos_binance::types::{AlgoOrder, PositionRisk};
use kronos_binance::SymbolFilters;

use super::orders::{opposite, MarketOrder};
use super::stops::{StopInfo, OWN_STOP_PREFIX};
use super::switches::{EmergencyAsk, Stamp};
use crate::control::BadValue;

/// What the `emergency` key asks of the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Action {
    Unchanged,
    /// Carry out the stop (it is not in force). `fresh`: asked after what the engine carried out last (else: a stop
    /// still asked that this engine has not carried out yet, e.g. at start-up).
    Stop {
        reason: String,
        seq: i64,
        fresh: bool,
    },
    /// Asked again while it holds: another pass at whatever is open.
    Again {
        reason: String,
        seq: i64,
    },
    /// Lift it.
    Resume {
        seq: i64,
    },
}

/// `asked`: the `emergency` key; `active`: the stop is in force; `carried_seq`: the last emergency command the engine
/// carried out. An unreadable key is a stop (fail safe) and never a resume; a stop or a resume is acted on only
/// when it is later in the sequence than what was carried out (so nothing the engine did can hide a later command,
/// and a repeated stop makes exactly one more pass).
pub(crate) fn action(
    asked: &Result<Option<(EmergencyAsk, Stamp)>, BadValue>,
    active: bool,
    carried_seq: i64,
) -> Action {
    match asked {
        Err(b) if !active => {
            Action::Stop { reason: format!("{b}; taken as an emergency stop (fail safe)"), seq: b.seq, fresh: true }
        }
        Err(_) | Ok(None) => Action::Unchanged,
        Ok(Some((EmergencyAsk::Stop { reason }, st))) if !active => {
            Action::Stop { reason: reason.clone(), seq: st.seq, fresh: st.seq > carried_seq }
        }
        Ok(Some((EmergencyAsk::Stop { reason }, st))) if st.seq > carried_seq => {
            Action::Again { reason: reason.clone(), seq: st.seq }
        }
        Ok(Some((EmergencyAsk::Resume, st))) if active && st.seq > carried_seq => Action::Resume { seq: st.seq },
        Ok(Some(_)) => Action::Unchanged,
    }
}

/// Emergency-stop retries: first after this, doubling up to [`RETRY_MAX`].
pub(crate) const RETRY_MIN: Duration = Duration::from_millis(500);
pub(crate) const RETRY_MAX: Duration = Duration::from_secs(30);
/// The same emergency alert (the same positions left open, the same refusal) is raised again at most this often.
pub(crate) const ALERT_REPEAT: Duration = Duration::from_secs(600);

/// The wait before the next emergency attempt, after one that waited `last` (`None`: the first): 0.5 s, doubling to
/// 30 s while attempts make no progress, back to 0.5 s after one that closed something.
pub(crate) fn next_retry(last: Option<Duration>, progress: bool) -> Duration {
    match last {
        Some(last) if !progress => (last * 2).min(RETRY_MAX),
        _ => RETRY_MIN,
    }
}

/// Alerts keyed by what they say, each raised again only once `every` has passed since it last was.
#[derive(Debug, Clone)]
pub(crate) struct RateLimit {
    every: Duration,
    last: HashMap<String, Instant>,
}

impl RateLimit {
    pub(crate) fn new(every: Duration) -> RateLimit {
        RateLimit { every, last: HashMap::new() }
    }

    /// Whether the alert `key` may be raised at `now`; notes it when it may.
    pub(crate) fn due(&mut self, key: &str, now: Instant) -> bool {
        if self.last.get(key).is_some_and(|t| now.saturating_duration_since(*t) < self.every) {
            return false;
        }
        self.last.insert(key.to_string(), now);
        true
    }

    pub(crate) fn clear(&mut self) {
        self.last.clear();
    }
}

/// The market order that closes one side of a position: reduce-only in one-way mode, the position's own side in
/// hedge mode (where Binance refuses `reduceOnly`), on the symbol's step when its rules are known (else as held).
pub(crate) fn close_order(p: &PositionRisk, f: Option<&SymbolFilters>, hedge: bool) -> MarketOrder {
    let qty = match f {
        Some(f) => f.market_qty(p.position_amt.abs(), p.mark_price, true).unwrap_or(p.position_amt.abs()),
        None => p.position_amt.abs(),
    };
    MarketOrder {
        side: opposite(p.position_amt),
        qty,
        reduce_only: p.position_side == "BOTH",
        position_side: if hedge { p.position_side.clone() } else { "BOTH".to_string() },
    }
}

/// The copy-trader's own open stops whose position the exchange no longer shows (`still`): `(symbol, client id)` to
/// cancel. In hedge mode a stop belongs to its position side. The user's conditional orders are never touched.
pub(crate) fn stops_of_closed(open: &[AlgoOrder], still: &[PositionRisk], hedge: bool) -> Vec<(String, String)> {
    open.iter()
        .filter(|a| a.client_algo_id.starts_with(OWN_STOP_PREFIX))
        .filter(|a| !still.iter().any(|p| p.symbol == a.symbol && (!hedge || a.position_side == p.position_side)))
        .map(|a| (a.symbol.clone(), a.client_algo_id.clone()))
        .collect()
}

/// The stops this run holds for symbols with no position left (`still`): let go, so a later position gets its own.
pub(crate) fn held_stops_of_closed(
    stops: &BTreeMap<String, StopInfo>,
    still: &[PositionRisk],
) -> Vec<(String, String)> {
    stops
        .iter()
        .filter(|(s, _)| !still.iter().any(|p| &p.symbol == *s))
        .map(|(s, st)| (s.clone(), st.client_id.clone()))
        .collect()
}

/// `SYMBOL SIDE qty`, as the status and the alerts name an open position.
pub(crate) fn describe(p: &PositionRisk) -> String {
    format!("{} {} {}", p.symbol, p.position_side, p.position_amt)
}

/// How an emergency pass ends.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum PassEnd {
    /// Nothing is open and no order of unknown fate may open something: done.
    Done,
    /// Nothing is open, but this many orders of unknown fate may still open something: looked at again.
    Pending(usize),
    /// These positions are still open (or, when they could not be re-read, were open before the closes).
    Open(Vec<String>),
}

/// How a pass ends, from the positions open before its closes, those open after (`None`: not re-read) and the
/// orders of unknown fate still holding their symbols.
pub(crate) fn pass_end(before: &[PositionRisk], after: Option<&[PositionRisk]>, pending: usize) -> PassEnd {
    match after {
        Some([]) if pending > 0 => PassEnd::Pending(pending),
        Some([]) => PassEnd::Done,
        Some(after) => PassEnd::Open(after.iter().map(describe).collect()),
        None => PassEnd::Open(before.iter().map(describe).collect()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decide::stops::tests::algo;
    use crate::decide::switches::tests::stamp;
    use crate::decide::testing::{btc, d};
    use kronos_binance::types::Side;

    fn risk(symbol: &str, side: &str, amt: &str) -> PositionRisk {
        serde_json::from_value(serde_json::json!({
            "symbol": symbol, "positionAmt": amt, "entryPrice": "50000", "markPrice": "50000",
            "unRealizedProfit": "0", "positionSide": side
        }))
        .unwrap()
    }

    #[test]
    fn the_emergency_key_stops_again_or_resumes_only_after_what_was_carried_out_and_unreadable_stops() {
        let stop = |seq| Ok(Some((EmergencyAsk::Stop { reason: "r".into() }, stamp(seq))));
        let resume = |seq| Ok(Some((EmergencyAsk::Resume, stamp(seq))));
        assert_eq!(action(&stop(3), false, 0), Action::Stop { reason: "r".into(), seq: 3, fresh: true });
        // Carried out before this process (a restart): carried out again, not new.
        assert_eq!(action(&stop(3), false, 3), Action::Stop { reason: "r".into(), seq: 3, fresh: false });
        assert_eq!(action(&stop(3), true, 3), Action::Unchanged);
        assert_eq!(action(&stop(4), true, 3), Action::Again { reason: "r".into(), seq: 4 });
        assert_eq!(action(&resume(4), true, 3), Action::Resume { seq: 4 });
        assert_eq!(action(&resume(4), false, 3), Action::Unchanged);
        assert_eq!(action(&resume(3), true, 3), Action::Unchanged, "not later than what was carried out");
        assert_eq!(action(&Ok(None), false, 0), Action::Unchanged);
        assert_eq!(action(&Ok(None), true, 2), Action::Unchanged);
        let unreadable = Err(BadValue::new(crate::control::ControlKey::Emergency, 7, "yes", "a command"));
        match action(&unreadable, false, 0) {
            Action::Stop { reason, seq: 7, fresh: true } => assert!(reason.contains("`emergency`"), "{reason}"),
            a => panic!("an unreadable emergency key must stop: {a:?}"),
        }
        assert_eq!(action(&unreadable, true, 7), Action::Unchanged, "never a resume");
    }

    #[test]
    fn retries_back_off_from_half_a_second_to_thirty_unless_progress_was_made() {
        assert_eq!(next_retry(None, false), Duration::from_millis(500));
        assert_eq!(next_retry(None, true), Duration::from_millis(500));
        assert_eq!(next_retry(Some(Duration::from_millis(500)), false), Duration::from_secs(1));
        assert_eq!(next_retry(Some(Duration::from_secs(16)), false), Duration::from_secs(30));
        assert_eq!(next_retry(Some(Duration::from_secs(30)), false), Duration::from_secs(30));
        assert_eq!(next_retry(Some(Duration::from_secs(16)), true), Duration::from_millis(500));
    }

    #[test]
    fn the_same_alert_is_raised_again_only_after_ten_minutes() {
        let mut r = RateLimit::new(ALERT_REPEAT);
        let t0 = Instant::now();
        assert!(r.due("open BTCUSDT", t0));
        assert!(!r.due("open BTCUSDT", t0 + Duration::from_secs(599)));
        assert!(r.due("refused BTCUSDT BOTH", t0 + Duration::from_secs(1)), "another alert is its own");
        assert!(r.due("open BTCUSDT", t0 + Duration::from_secs(600)));
        assert!(!r.due("open BTCUSDT", t0 + Duration::from_secs(601)));
        r.clear();
        assert!(r.due("open BTCUSDT", t0 + Duration::from_secs(602)));
    }

    #[test]
    fn each_side_is_closed_on_its_own_reduce_only_in_one_way_mode() {
        let f = btc();
        assert_eq!(
            close_order(&risk("BTCUSDT", "BOTH", "0.1234"), Some(&f), false),
            MarketOrder { side: Side::Sell, qty: d("0.123"), reduce_only: true, position_side: "BOTH".into() }
        );
        assert_eq!(
            close_order(&risk("BTCUSDT", "SHORT", "-0.2"), Some(&f), true),
            MarketOrder { side: Side::Buy, qty: d("0.2"), reduce_only: false, position_side: "SHORT".into() }
        );
        assert_eq!(
            close_order(&risk("BTCUSDT", "LONG", "0.3"), Some(&f), true),
            MarketOrder { side: Side::Sell, qty: d("0.3"), reduce_only: false, position_side: "LONG".into() }
        );
        // Under one step, or a symbol without rules: the quantity as held.
        assert_eq!(close_order(&risk("BTCUSDT", "BOTH", "0.0004"), Some(&f), false).qty, d("0.0004"));
        assert_eq!(close_order(&risk("ETHUSDT", "BOTH", "-1.23456"), None, false).qty, d("1.23456"));
    }

    #[test]
    fn only_own_stops_of_closed_positions_go() {
        let open = [
            algo("BTCUSDT", "ks1", "NEW", "LONG"),
            algo("BTCUSDT", "ks2", "NEW", "SHORT"),
            algo("ETHUSDT", "ks3", "NEW", "BOTH"),
            algo("ETHUSDT", "mine", "NEW", "BOTH"),
        ];
        let still = [risk("BTCUSDT", "LONG", "0.1")];
        let ids = |v: Vec<(String, String)>| v.into_iter().map(|(_, id)| id).collect::<Vec<_>>();
        assert_eq!(ids(stops_of_closed(&open, &still, true)), ["ks2", "ks3"]);
        // One-way mode: any position in the symbol keeps its stops.
        assert_eq!(ids(stops_of_closed(&open, &still, false)), ["ks3"]);
        assert_eq!(ids(stops_of_closed(&open, &[], false)), ["ks1", "ks2", "ks3"]);
        let held: BTreeMap<String, StopInfo> = [
            ("BTCUSDT".to_string(), StopInfo { client_id: "ks1".into(), trigger: d("1"), side: Side::Sell, qty: None }),
            ("ETHUSDT".to_string(), StopInfo { client_id: "ks3".into(), trigger: d("1"), side: Side::Sell, qty: None }),
        ]
        .into();
        assert_eq!(ids(held_stops_of_closed(&held, &still)), ["ks3"]);
    }

    #[test]
    fn a_pass_is_done_only_when_nothing_is_open_and_nothing_may_open() {
        let before = [risk("BTCUSDT", "LONG", "0.1"), risk("BTCUSDT", "SHORT", "-0.2")];
        assert_eq!(pass_end(&before, Some(&[]), 0), PassEnd::Done);
        assert_eq!(pass_end(&before, Some(&[]), 1), PassEnd::Pending(1));
        assert_eq!(pass_end(&before, Some(&[]), 2), PassEnd::Pending(2));
        assert_eq!(
            pass_end(&before, Some(&[risk("BTCUSDT", "SHORT", "-0.2")]), 1),
            PassEnd::Open(vec!["BTCUSDT SHORT -0.2".into()])
        );
        // Not re-read: what was open before is named (nothing is known closed).
        assert_eq!(
            pass_end(&before, None, 0),
            PassEnd::Open(vec!["BTCUSDT LONG 0.1".into(), "BTCUSDT SHORT -0.2".into()])
        );
    }
}
