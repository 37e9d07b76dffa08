//! The switches other processes (the CLI, the Telegram bot, the API) set in the store: `trading` (copy-trading on or
//! off), `ratio` (the runtime override of `copytrade.sizing.ratio`) and `emergency`.

use kronos_common::Decimal;

/// What the stored `trading` switch asks of an engine that is `paused` (or not).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Trading {
    Unchanged,
    /// Switched off: no new orders; positions keep their stops.
    Off,
    /// Switched on: open lead positions are followed from their next close or flip (nothing is chased).
    On,
}

/// `stored`: the `trading` value in the store (absent: on; only `"0"` is off).
pub(crate) fn trading(stored: Option<&str>, paused: bool) -> Trading {
    let on = stored != Some("0");
    if !on && !paused {
        Trading::Off
    } else if on && paused {
        Trading::On
    } else {
        Trading::Unchanged
    }
}

/// The ratio wanted: the stored override when it is a valid ratio, else the configured one. The flag is true when a
/// stored override was ignored for not being a ratio.
pub(crate) fn wanted_ratio(stored: Option<&str>, configured: Decimal) -> (Decimal, bool) {
    match stored {
        Some(v) => match crate::report::valid_ratio(v) {
            Some(r) => (r, false),
            None => (configured, true),
        },
        None => (configured, false),
    }
}

/// What to do with the ratio wanted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RatioPlan {
    /// Report (once per process, at the first start-up attempt) that an override is in effect.
    pub(crate) note_override: bool,
    /// Take `wanted` as the ratio in effect and record it (`ratio_effective`).
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

/// What the stored `emergency` flag asks of an engine whose stop is `active` (or not).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flag {
    Unchanged,
    Stop,
    Resume,
}

pub(crate) fn emergency_flag(stored: Option<&str>, active: bool) -> Flag {
    match stored {
        Some("1") if !active => Flag::Stop,
        Some("0") if active => Flag::Resume,
        _ => Flag::Unchanged,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decide::testing::d;

    #[test]
    fn trading_is_on_unless_switched_off_and_only_a_change_is_acted_on() {
        assert_eq!(trading(Some("0"), false), Trading::Off);
        assert_eq!(trading(Some("0"), true), Trading::Unchanged);
        assert_eq!(trading(Some("1"), true), Trading::On);
        assert_eq!(trading(None, true), Trading::On);
        assert_eq!(trading(Some("1"), false), Trading::Unchanged);
        assert_eq!(trading(None, false), Trading::Unchanged);
        assert_eq!(trading(Some("no"), false), Trading::Unchanged);
    }

    #[test]
    fn a_stored_ratio_overrides_the_configured_one_only_within_bounds() {
        assert_eq!(wanted_ratio(None, d("0.5")), (d("0.5"), false));
        assert_eq!(wanted_ratio(Some("0.8"), d("0.5")), (d("0.8"), false));
        assert_eq!(wanted_ratio(Some("100"), d("0.5")), (d("100"), false));
        assert_eq!(wanted_ratio(Some("0.001"), d("0.5")), (d("0.001"), false));
        // Out of [0.001, 100], or not a number: ignored, the configured ratio applies.
        assert_eq!(wanted_ratio(Some("100.1"), d("0.5")), (d("0.5"), true));
        assert_eq!(wanted_ratio(Some("0.0009"), d("0.5")), (d("0.5"), true));
        assert_eq!(wanted_ratio(Some("0"), d("0.5")), (d("0.5"), true));
        assert_eq!(wanted_ratio(Some("-1"), d("0.5")), (d("0.5"), true));
        assert_eq!(wanted_ratio(Some("x"), d("0.5")), (d("0.5"), true));
    }

    #[test]
    fn a_ratio_change_is_taken_reported_and_applied_and_an_override_noted_once_at_start() {
        // Start-up with the configured ratio: taken (recorded), nothing else.
        assert_eq!(
            ratio_plan(d("0.5"), d("0.5"), d("0.5"), true, false),
            RatioPlan { note_override: false, take: true, changed: false, reapply: false }
        );
        // Start-up with an override: noted once per process, taken, not applied here (start-up applies).
        assert_eq!(
            ratio_plan(d("0.8"), d("0.5"), d("0.5"), true, false),
            RatioPlan { note_override: true, take: true, changed: true, reapply: false }
        );
        assert!(!ratio_plan(d("0.8"), d("0.5"), d("0.5"), true, true).note_override);
        // Running: a change is taken and applied; no change, nothing.
        assert_eq!(
            ratio_plan(d("0.8"), d("0.5"), d("0.5"), false, false),
            RatioPlan { note_override: false, take: true, changed: true, reapply: true }
        );
        assert_eq!(
            ratio_plan(d("0.8"), d("0.5"), d("0.8"), false, true),
            RatioPlan { note_override: false, take: false, changed: false, reapply: false }
        );
    }

    #[test]
    fn the_stored_emergency_flag_stops_or_resumes_only_on_a_change() {
        assert_eq!(emergency_flag(Some("1"), false), Flag::Stop);
        assert_eq!(emergency_flag(Some("1"), true), Flag::Unchanged);
        assert_eq!(emergency_flag(Some("0"), true), Flag::Resume);
        assert_eq!(emergency_flag(Some("0"), false), Flag::Unchanged);
        assert_eq!(emergency_flag(None, true), Flag::Unchanged);
        assert_eq!(emergency_flag(Some("yes"), false), Flag::Unchanged);
    }
}
