//! The publisher's decisions, pure: when a forecast is committed, what a stored or on-chain commitment means for
//! it, when it is revealed, and what a registry revert means. The IO is in [`crate::publisher`].

use kronos_common::signals::Outcome;
use kronos_contracts::registry::PredictionRegistry::PredictionRegistryErrors;

use crate::market::MarketInfo;

/// Whether a commitment for `epoch` sent at chain time `now` still has `margin` seconds before the registry's commit
/// window closes: commits are open from the round's start `T(epoch)` until the market's betting cutoff before the
/// lock `T(epoch + 1)`.
pub(crate) fn commit_open(i: &MarketInfo, epoch: u64, now: u64, margin: u64) -> bool {
    let closes_at = i.t(epoch + 1).saturating_sub(i.bet_cutoff);
    now >= i.t(epoch) && now + margin < closes_at
}

/// The margin a pass leaves before starting a forecast: a fifth of the round, for the forecast and for the commit
/// to be mined.
pub(crate) fn forecast_margin(i: &MarketInfo) -> u64 {
    i.interval / 5
}

/// What the store holds for this publisher's forecast of a round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stored {
    /// Nothing yet.
    Nothing,
    /// A prediction (with its salt) whose commit is not recorded as sent.
    Uncommitted,
    /// The commit was sent (or found on chain).
    Committed,
}

/// What a pass does about the forecast of the round taking bets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CommitStep {
    /// Outside the window (or too close to its end to forecast): nothing.
    Closed,
    /// Committed already: nothing.
    Done,
    /// Forecast, store the prediction, then commit it.
    Forecast,
    /// Commit the stored prediction (a run that stopped between storing and sending it).
    CommitStored,
}

/// The step for a round given whether the window is open with the forecast's margin and what the store holds.
pub(crate) fn commit_step(open_with_margin: bool, stored: Stored) -> CommitStep {
    match (open_with_margin, stored) {
        (false, _) => CommitStep::Closed,
        (true, Stored::Committed) => CommitStep::Done,
        (true, Stored::Uncommitted) => CommitStep::CommitStored,
        (true, Stored::Nothing) => CommitStep::Forecast,
    }
}

/// What to do with a stored, uncommitted prediction just before sending its commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SendStep {
    /// The window closed (the forecast took wall time): skip the round.
    WindowClosed,
    /// Read the registry's commitment for the round.
    ReadOnChain,
    /// The registry holds this very commitment (a run crashed before recording it): record it as sent.
    Recovered,
    /// Send the commit.
    Send,
}

/// The step given whether the window is still open at the head's time (no margin) and, once read, whether the
/// registry's commitment for the round is the stored one.
pub(crate) fn send_step(open_now: bool, on_chain_is_ours: Option<bool>) -> SendStep {
    match (open_now, on_chain_is_ours) {
        (false, _) => SendStep::WindowClosed,
        (true, None) => SendStep::ReadOnChain,
        (true, Some(true)) => SendStep::Recovered,
        (true, Some(false)) => SendStep::Send,
    }
}

/// The published probability in basis points (rounded, within 0..=10,000).
pub(crate) fn bps(p_up: f64) -> u16 {
    (p_up * 10_000.0).round().clamp(0.0, 10_000.0) as u16
}

/// The direction committed with a probability: up from 50% (a coin flip counts as up, as the registry scores it).
pub(crate) fn direction_up(bps: u16) -> bool {
    bps >= 5_000
}

/// How a commit that reverted ends: `CommitTooLate` (the round locked before it landed) skips the round; anything
/// else is a failure.
pub(crate) fn commit_too_late(e: Option<&PredictionRegistryErrors>) -> bool {
    matches!(e, Some(PredictionRegistryErrors::CommitTooLate(_)))
}

/// Whether a reveal that reverted can never succeed (already final, the window closed, or no commitment): the
/// prediction is then stored as unrevealable instead of being tried again.
pub(crate) fn unrevealable(e: Option<&PredictionRegistryErrors>) -> bool {
    matches!(
        e,
        Some(
            PredictionRegistryErrors::AlreadyFinal(_)
                | PredictionRegistryErrors::RevealWindowClosed(_)
                | PredictionRegistryErrors::NoCommitment(_)
        )
    )
}

/// A revealed forecast's score as the registry's `Revealed` event gives it: a hit and a Brier score only when the
/// round went up or down (a tie or no outcome voids it).
pub(crate) fn score(outcome: Outcome, hit: bool, brier: u64) -> (Option<bool>, Option<u64>) {
    match outcome {
        Outcome::Up | Outcome::Down => (Some(hit), Some(brier)),
        Outcome::Tie | Outcome::None => (None, None),
    }
}

/// The mean Brier score of a track record (`brier_sum` in 1e-8 units over `scored` forecasts; 0 before any).
pub(crate) fn mean_brier(brier_sum: u128, scored: u64) -> f64 {
    if scored > 0 {
        brier_sum as f64 / 1e8 / scored as f64
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy::primitives::{Address, U256};
    use kronos_contracts::registry::PredictionRegistry;

    fn info() -> MarketInfo {
        MarketInfo::for_tests()
    }

    #[test]
    fn the_commit_window_runs_from_the_round_start_to_the_cutoff() {
        let i = info();
        // Round 2 runs from 1120; commits close at 1180 - 6 = 1174.
        assert!(!commit_open(&i, 2, 1119, 0));
        assert!(commit_open(&i, 2, 1120, 0));
        assert!(commit_open(&i, 2, 1173, 0));
        assert!(!commit_open(&i, 2, 1174, 0));
        // With a margin for mining.
        assert!(commit_open(&i, 2, 1161, 12));
        assert!(!commit_open(&i, 2, 1162, 12));
        // A pass leaves a fifth of the round to forecast and mine.
        assert_eq!(forecast_margin(&i), 12);
    }

    #[test]
    fn a_round_is_forecast_once_and_committed_once() {
        assert_eq!(commit_step(false, Stored::Nothing), CommitStep::Closed);
        assert_eq!(commit_step(false, Stored::Uncommitted), CommitStep::Closed);
        assert_eq!(commit_step(true, Stored::Committed), CommitStep::Done);
        assert_eq!(commit_step(true, Stored::Uncommitted), CommitStep::CommitStored, "the salt stored is reused");
        assert_eq!(commit_step(true, Stored::Nothing), CommitStep::Forecast);
    }

    #[test]
    fn a_commit_is_sent_only_in_the_window_and_only_if_not_on_chain() {
        assert_eq!(send_step(false, None), SendStep::WindowClosed);
        assert_eq!(send_step(false, Some(false)), SendStep::WindowClosed);
        assert_eq!(send_step(true, None), SendStep::ReadOnChain);
        assert_eq!(send_step(true, Some(true)), SendStep::Recovered);
        assert_eq!(send_step(true, Some(false)), SendStep::Send);
    }

    #[test]
    fn the_probability_is_published_in_basis_points_with_its_direction() {
        assert_eq!(bps(0.5), 5_000);
        assert_eq!(bps(0.123_45), 1_235);
        assert_eq!(bps(-0.1), 0);
        assert_eq!(bps(1.7), 10_000);
        assert!(direction_up(5_000));
        assert!(direction_up(10_000));
        assert!(!direction_up(4_999));
        assert!(!direction_up(0));
    }

    #[test]
    fn registry_reverts_are_read_by_variant() {
        let (m, e) = (U256::from(1), U256::from(2));
        let late = PredictionRegistryErrors::CommitTooLate(PredictionRegistry::CommitTooLate {
            marketId: m,
            epoch: e,
            closesAt: U256::ZERO,
        });
        assert!(commit_too_late(Some(&late)));
        assert!(!commit_too_late(None));
        assert!(!unrevealable(Some(&late)));
        let no = PredictionRegistryErrors::NoCommitment(PredictionRegistry::NoCommitment {
            publisher: Address::ZERO,
            marketId: m,
            epoch: e,
        });
        assert!(unrevealable(Some(&no)));
        assert!(!commit_too_late(Some(&no)));
        assert!(!unrevealable(None));
    }

    #[test]
    fn only_an_up_or_down_round_scores_a_forecast() {
        assert_eq!(score(Outcome::Up, true, 100), (Some(true), Some(100)));
        assert_eq!(score(Outcome::Down, false, 9_000), (Some(false), Some(9_000)));
        assert_eq!(score(Outcome::Tie, true, 100), (None, None));
        assert_eq!(score(Outcome::None, false, 100), (None, None));
        assert_eq!(mean_brier(50_000_000, 2), 0.25);
        assert_eq!(mean_brier(0, 0), 0.0);
    }
}
