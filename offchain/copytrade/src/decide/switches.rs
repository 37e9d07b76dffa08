//! What the control state ([`crate::control`]: copy-trading on or off, the runtime override of
//! `copytrade.sizing.ratio`, the emergency stop) asks of the engine, given the state it is in.

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

/// `on`: the stored switch (absent: on).
pub(crate) fn trading(on: bool, paused: bool) -> Trading {
    if !on && !paused {
        Trading::Off
    } else if on && paused {
        Trading::On
    } else {
        Trading::Unchanged
    }
}

/// The ratio wanted: the stored override (checked by [`crate::control`]: 0.001..100) when there is one, else the
/// configured one.
pub(crate) fn wanted_ratio(stored: Option<Decimal>, configured: Decimal) -> Decimal {
    stored.unwrap_or(configured)
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

/// What the stored emergency flag asks of an engine whose stop is `active` (or not).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flag {
    Unchanged,
    Stop,
    /// Asked again while the stop holds: another pass at whatever is open.
    Again,
    Resume,
}

/// `stored`: the flag (absent: never set); `asked_again`: a request was made since the engine last acted on one.
pub(crate) fn emergency_flag(stored: Option<bool>, active: bool, asked_again: bool) -> Flag {
    match stored {
        Some(true) if !active => Flag::Stop,
        Some(true) if asked_again => Flag::Again,
        Some(false) if active => Flag::Resume,
        _ => Flag::Unchanged,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decide::testing::d;

    #[test]
    fn trading_is_on_unless_switched_off_and_only_a_change_is_acted_on() {
        assert_eq!(trading(false, false), Trading::Off);
        assert_eq!(trading(false, true), Trading::Unchanged);
        assert_eq!(trading(true, true), Trading::On);
        assert_eq!(trading(true, false), Trading::Unchanged);
    }

    #[test]
    fn a_stored_ratio_overrides_the_configured_one() {
        // Bounds and bad values are the control state's (crate::control's tests).
        assert_eq!(wanted_ratio(None, d("0.5")), d("0.5"));
        assert_eq!(wanted_ratio(Some(d("0.8")), d("0.5")), d("0.8"));
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
        assert_eq!(emergency_flag(Some(true), false, false), Flag::Stop);
        assert_eq!(emergency_flag(Some(true), false, true), Flag::Stop);
        assert_eq!(emergency_flag(Some(true), true, false), Flag::Unchanged);
        assert_eq!(emergency_flag(Some(true), true, true), Flag::Again);
        assert_eq!(emergency_flag(Some(false), true, false), Flag::Resume);
        assert_eq!(emergency_flag(Some(false), true, true), Flag::Resume);
        assert_eq!(emergency_flag(Some(false), false, false), Flag::Unchanged);
        assert_eq!(emergency_flag(None, true, true), Flag::Unchanged);
        assert_eq!(emergency_flag(None, false, true), Flag::Unchanged);
    }
}
