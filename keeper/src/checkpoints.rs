//! The scheduler's decisions, pure: given what the chain, the feeds and the lease say now, which checkpoint to look
//! at, whether to send its `execute` (with which proofs), take it as recorded, count it missed, or do nothing.
//!
//! The market's one transaction is `execute(market, k, priceProof, sequencerProof)`: checkpoint `k` at
//! `T(k) = genesis + k × interval` locks round `k − 1` and settles (or refunds) round `k − 2`. The IO loop in
//! [`crate::scheduler`] gathers a [`Snapshot`] step by step (a chain read only when the decision asks for it) and
//! does what [`next_action`] says.

use crate::lease::LeaseView;
use crate::market::MarketInfo;

/// How many checkpoints one pass may look at (catch-up is bounded so that publishing and health keep their pace).
pub(crate) const PASS_BUDGET: u32 = 64;

/// A Chainlink round proof: the round in effect at a time and its successor (0 when it is the latest).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct RoundIds {
    pub(crate) round_id: u128,
    pub(crate) next_round_id: u128,
}

/// Whether checkpoint `k` is on chain, as far as read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Recorded {
    Unread,
    No,
    Yes,
}

/// The proofs for `T(k)`, as far as read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Proofs {
    Unread,
    /// The price feed's round in effect at `T(k)` (`None`: the feed has none before it) and the sequencer feed's
    /// (`Ok(None)` on a chain without one, `Err(())` when its feed has no round before `T(k)`).
    Read {
        price: Option<RoundIds>,
        sequencer: Result<Option<RoundIds>, ()>,
    },
}

/// What the scheduler knows in a pass about the checkpoint it looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Snapshot {
    /// The head block's timestamp (the chain's clock).
    pub(crate) now: u64,
    /// The checkpoint looked at.
    pub(crate) k: u64,
    /// Checkpoints this pass may still look at.
    pub(crate) budget: u32,
    pub(crate) recorded: Recorded,
    pub(crate) proofs: Proofs,
}

impl Snapshot {
    /// A fresh look at checkpoint `k`.
    pub(crate) fn at(now: u64, k: u64, budget: u32) -> Self {
        Snapshot { now, k, budget, recorded: Recorded::Unread, proofs: Proofs::Unread }
    }
}

/// Why a checkpoint is missed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Missed {
    /// Every round that needs it has expired.
    Expired,
    /// The price feed has no round before the checkpoint time.
    NoPriceRound,
    /// The sequencer feed has no round before the checkpoint time.
    NoSequencerRound,
}

impl Missed {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Missed::Expired => "every round that needs it has expired",
            Missed::NoPriceRound => "the feed has no round before the checkpoint time",
            Missed::NoSequencerRound => "the sequencer feed has no round before the checkpoint time",
        }
    }
}

/// What to do next about checkpoint `k`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    /// Nothing more this pass: checkpoint `k` is not executable yet, or the pass's budget is spent.
    Wait,
    /// Read whether checkpoint `k` is recorded on chain.
    ReadRecorded,
    /// It is recorded (by someone else, or by this keeper before a restart): take its events, then go on to `k + 1`.
    TakeRecorded,
    /// Read the feeds' rounds in effect at `T(k)`.
    Prove,
    /// Count `k` missed and go on to `k + 1`.
    Miss(Missed),
    /// Send `execute(k)` with these proofs.
    Execute { price: RoundIds, sequencer: RoundIds },
}

/// The next action for `s.k` (see [`Action`]); the loop applies it, updates the snapshot and asks again.
pub(crate) fn next_action(i: &MarketInfo, s: &Snapshot) -> Action {
    // Checkpoint k may be executed from T(k) + the market's execute delay (strictly after, by the chain's clock).
    if s.budget == 0 || i.t(s.k) + i.execute_delay >= s.now {
        return Action::Wait;
    }
    // Checkpoint k locks round k-1, which settles at T(k+1) and expires a settle window later.
    if i.t(s.k + 1) + i.settle_window < s.now {
        return Action::Miss(Missed::Expired);
    }
    match (s.recorded, s.proofs) {
        (Recorded::Unread, _) => Action::ReadRecorded,
        (Recorded::Yes, _) => Action::TakeRecorded,
        (Recorded::No, Proofs::Unread) => Action::Prove,
        (Recorded::No, Proofs::Read { price: None, .. }) => Action::Miss(Missed::NoPriceRound),
        (Recorded::No, Proofs::Read { sequencer: Err(()), .. }) => Action::Miss(Missed::NoSequencerRound),
        (Recorded::No, Proofs::Read { price: Some(price), sequencer: Ok(seq) }) => {
            Action::Execute { price, sequencer: seq.unwrap_or_default() }
        }
    }
}

/// The first checkpoint that still matters at `now`: checkpoint `k` is useful while round `k − 1` (which it locks)
/// can still settle, `T(k + 1) + settle_window ≥ now`.
pub(crate) fn first_useful(i: &MarketInfo, now: u64) -> u64 {
    if now <= i.genesis + i.settle_window {
        return 0;
    }
    (now - i.settle_window - i.genesis).div_ceil(i.interval).saturating_sub(1)
}

/// Where a pass starts: where the last one stopped, never below the first useful checkpoint.
pub(crate) fn pass_start(next: Option<u64>, floor: u64) -> u64 {
    next.unwrap_or(floor).max(floor)
}

/// The checkpoints a running keeper fell past (where the last pass stopped, up to the first useful one): each is
/// missed — every round that needs it expired before this keeper got to it — and must be counted as such, not
/// skipped silently. None on the first pass of a start or a term (`next` is `None`): those are the downtime's, read
/// from the chain by the catch-up, not this run's to count.
pub(crate) fn fell_past(next: Option<u64>, floor: u64) -> std::ops::Range<u64> {
    match next {
        Some(n) if n < floor => n..floor,
        _ => floor..floor,
    }
}

/// The round taking bets at `now` (`None` before genesis, when the market has nothing to do).
pub(crate) fn betting_epoch(i: &MarketInfo, now: u64) -> Option<u64> {
    (now > i.genesis).then(|| (now - i.genesis) / i.interval)
}

/// How an `execute` revert ends for the scheduler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ExecuteRevert {
    /// The checkpoint is recorded already (by someone else): done.
    Done,
    /// Not executable yet: try again next pass.
    NotYet,
    /// The proof went out of date: prove again next pass.
    Reprove,
    /// A real failure.
    Fail,
}

/// Classifies a decoded `execute` revert by variant.
pub(crate) fn classify_execute_revert(e: &kronos_contracts::market::KronosMarket::KronosMarketErrors) -> ExecuteRevert {
    use kronos_contracts::market::KronosMarket::KronosMarketErrors as E;
    match e {
        E::CheckpointAlreadyRecorded(_) => ExecuteRevert::Done,
        E::CheckpointNotDue(_) | E::ProofTimestampNotPast(_) => ExecuteRevert::NotYet,
        e if crate::txmgr::is_outdated_proof(e) => ExecuteRevert::Reprove,
        _ => ExecuteRevert::Fail,
    }
}

/// An `execute` that reverted: when the checkpoint is on chain now (`recorded_now`), that is success whatever the
/// reason (another check may have failed first, e.g. a proof outdated by then); otherwise the decoded revert says.
pub(crate) fn after_revert(recorded_now: bool, decoded: Option<ExecuteRevert>) -> ExecuteRevert {
    if recorded_now {
        ExecuteRevert::Done
    } else {
        decoded.unwrap_or(ExecuteRevert::Fail)
    }
}

/// The lease term this keeper may work under now: always on a single store, while leading under a term it may still
/// send in (`may_send`) on a shared one, else none (stand by).
pub(crate) fn leading_term(view: &LeaseView, may_send: impl Fn(i64) -> bool) -> Option<i64> {
    match view {
        LeaseView::Single => Some(0),
        LeaseView::Leading { epoch, .. } if may_send(*epoch) => Some(*epoch),
        _ => None,
    }
}

/// What the driver does about its lease before a pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TermStep {
    /// Same term: go on from where the last pass stopped.
    Keep,
    /// A new term: start from chain state (the previous leader may have done anything up to its end).
    Start(i64),
    /// Not leading: stand by; `ended` is the term that just ended, if one did.
    StandBy { ended: Option<i64> },
}

/// The driver's step given the term it may lead under now and the one it worked under.
pub(crate) fn term_step(leading: Option<i64>, working: Option<i64>) -> TermStep {
    match (leading, working) {
        (Some(e), Some(t)) if e == t => TermStep::Keep,
        (Some(e), _) => TermStep::Start(e),
        (None, ended) => TermStep::StandBy { ended },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy::primitives::U256;
    use kronos_contracts::market::KronosMarket;
    use std::time::Instant;

    /// Genesis 1000, 60-s rounds, execute 12 s after T(k), a 720-s settle window: T(k) = 1000 + 60k.
    fn info() -> MarketInfo {
        MarketInfo::for_tests()
    }

    const P: RoundIds = RoundIds { round_id: 7, next_round_id: 8 };
    const S: RoundIds = RoundIds { round_id: 3, next_round_id: 0 };

    fn snap(now: u64, k: u64) -> Snapshot {
        Snapshot::at(now, k, PASS_BUDGET)
    }

    #[test]
    fn a_checkpoint_waits_until_after_its_execute_delay() {
        let i = info();
        // T(2) = 1120: executable once the chain's clock is past 1132.
        assert_eq!(next_action(&i, &snap(1119, 2)), Action::Wait, "before T(k)");
        assert_eq!(next_action(&i, &snap(1120, 2)), Action::Wait, "at T(k)");
        assert_eq!(next_action(&i, &snap(1132, 2)), Action::Wait, "at T(k) + delay");
        assert_eq!(next_action(&i, &snap(1133, 2)), Action::ReadRecorded, "after T(k) + delay");
    }

    #[test]
    fn a_spent_budget_ends_the_pass() {
        let i = info();
        assert_eq!(next_action(&i, &Snapshot::at(5000, 60, 0)), Action::Wait);
        assert_eq!(next_action(&i, &Snapshot::at(5000, 60, 1)), Action::ReadRecorded);
    }

    #[test]
    fn a_checkpoint_whose_rounds_expired_is_missed() {
        let i = info();
        // Checkpoint 2 locks round 1, which settles at T(3) = 1180 and expires at 1180 + 720 = 1900.
        assert_eq!(next_action(&i, &snap(1900, 2)), Action::ReadRecorded, "the last second of the window");
        assert_eq!(next_action(&i, &snap(1901, 2)), Action::Miss(Missed::Expired));
        // Expiry comes before any chain read: nothing is sent for it.
        let mut s = snap(1901, 2);
        s.recorded = Recorded::No;
        s.proofs = Proofs::Read { price: Some(P), sequencer: Ok(None) };
        assert_eq!(next_action(&i, &s), Action::Miss(Missed::Expired));
    }

    #[test]
    fn a_checkpoint_recorded_already_is_taken_not_sent() {
        let i = info();
        let mut s = snap(1133, 2);
        s.recorded = Recorded::Yes;
        assert_eq!(next_action(&i, &s), Action::TakeRecorded);
        // Even with proofs read (a reorg put it on chain between reads): never a second execute.
        s.proofs = Proofs::Read { price: Some(P), sequencer: Ok(None) };
        assert_eq!(next_action(&i, &s), Action::TakeRecorded);
    }

    #[test]
    fn an_unrecorded_checkpoint_is_proved_then_executed_with_the_feed_rounds() {
        let i = info();
        let mut s = snap(1133, 2);
        s.recorded = Recorded::No;
        assert_eq!(next_action(&i, &s), Action::Prove);
        s.proofs = Proofs::Read { price: Some(P), sequencer: Ok(None) };
        assert_eq!(next_action(&i, &s), Action::Execute { price: P, sequencer: RoundIds::default() });
        // On an L2 the sequencer feed's round goes with it.
        s.proofs = Proofs::Read { price: Some(P), sequencer: Ok(Some(S)) };
        assert_eq!(next_action(&i, &s), Action::Execute { price: P, sequencer: S });
    }

    #[test]
    fn a_checkpoint_without_feed_rounds_is_missed() {
        let i = info();
        let mut s = snap(1133, 2);
        s.recorded = Recorded::No;
        s.proofs = Proofs::Read { price: None, sequencer: Ok(None) };
        assert_eq!(next_action(&i, &s), Action::Miss(Missed::NoPriceRound));
        s.proofs = Proofs::Read { price: None, sequencer: Err(()) };
        assert_eq!(next_action(&i, &s), Action::Miss(Missed::NoPriceRound));
        s.proofs = Proofs::Read { price: Some(P), sequencer: Err(()) };
        assert_eq!(next_action(&i, &s), Action::Miss(Missed::NoSequencerRound));
        assert_eq!(Missed::NoSequencerRound.as_str(), "the sequencer feed has no round before the checkpoint time");
    }

    #[test]
    fn the_first_useful_checkpoint_follows_the_settle_window() {
        let i = info();
        assert_eq!(first_useful(&i, 900), 0, "before genesis");
        assert_eq!(first_useful(&i, 1720), 0, "within the first settle window");
        // At 1900 round 1 (settled by checkpoint 3 at 1180) can still settle: checkpoint 2 (its lock) is useful.
        assert_eq!(first_useful(&i, 1900), 2);
        // From 1901 the first round that can still settle is round 2 (settled at T(4) = 1240, until 1960).
        assert_eq!(first_useful(&i, 1901), 3);
        assert_eq!(first_useful(&i, 1960), 3);
        assert_eq!(first_useful(&i, 1961), 4);
        // Every checkpoint below the first useful one would be missed as expired.
        for now in [1721, 1900, 1961, 5000, 100_000] {
            let f = first_useful(&i, now);
            assert_ne!(next_action(&i, &snap(now, f)), Action::Miss(Missed::Expired), "{now}");
            if f > 0 {
                assert_eq!(next_action(&i, &snap(now, f - 1)), Action::Miss(Missed::Expired), "{now}");
            }
        }
    }

    #[test]
    fn a_pass_starts_where_the_last_stopped_but_never_below_the_floor() {
        assert_eq!(pass_start(None, 5), 5, "after a start or a new term");
        assert_eq!(pass_start(Some(9), 5), 9);
        assert_eq!(pass_start(Some(3), 5), 5, "the keeper fell behind the settle window");
    }

    #[test]
    fn checkpoints_a_running_keeper_fell_past_are_counted_missed() {
        assert_eq!(fell_past(Some(3), 5), 3..5, "3 and 4 expired before the keeper got to them");
        assert!(fell_past(Some(5), 5).is_empty());
        assert!(fell_past(Some(9), 5).is_empty());
        assert!(fell_past(None, 5).is_empty(), "a start's or a term's first pass counts nothing");
    }

    #[test]
    fn the_betting_epoch_is_none_until_genesis() {
        let i = info();
        assert_eq!(betting_epoch(&i, 999), None);
        assert_eq!(betting_epoch(&i, 1000), None);
        assert_eq!(betting_epoch(&i, 1001), Some(0));
        assert_eq!(betting_epoch(&i, 1059), Some(0));
        assert_eq!(betting_epoch(&i, 1060), Some(1));
    }

    #[test]
    fn execute_reverts_are_classified_by_variant() {
        use KronosMarket::KronosMarketErrors as E;
        let (m, k) = (U256::from(1), U256::from(3));
        assert_eq!(
            classify_execute_revert(&E::CheckpointAlreadyRecorded(KronosMarket::CheckpointAlreadyRecorded {
                marketId: m,
                index: k
            })),
            ExecuteRevert::Done
        );
        assert_eq!(
            classify_execute_revert(&E::CheckpointNotDue(KronosMarket::CheckpointNotDue {
                marketId: m,
                index: k,
                timestamp: U256::ZERO
            })),
            ExecuteRevert::NotYet
        );
        assert_eq!(
            classify_execute_revert(&E::ProofNotLatest(KronosMarket::ProofNotLatest {
                roundId: Default::default(),
                latestRoundId: Default::default()
            })),
            ExecuteRevert::Reprove
        );
        assert_eq!(
            classify_execute_revert(&E::UnknownMarket(KronosMarket::UnknownMarket { marketId: m })),
            ExecuteRevert::Fail
        );
    }

    #[test]
    fn a_revert_with_the_checkpoint_on_chain_is_success() {
        for d in [None, Some(ExecuteRevert::Fail), Some(ExecuteRevert::Reprove), Some(ExecuteRevert::NotYet)] {
            assert_eq!(after_revert(true, d), ExecuteRevert::Done);
        }
        assert_eq!(after_revert(false, Some(ExecuteRevert::Reprove)), ExecuteRevert::Reprove);
        assert_eq!(after_revert(false, Some(ExecuteRevert::Done)), ExecuteRevert::Done);
        // A revert that decodes as no KronosMarket error is a failure.
        assert_eq!(after_revert(false, None), ExecuteRevert::Fail);
    }

    #[test]
    fn the_driver_leads_only_under_a_term_it_may_send_in() {
        let yes = |_| true;
        let no = |_| false;
        assert_eq!(leading_term(&LeaseView::Single, no), Some(0), "a single store always leads");
        let leading = LeaseView::Leading { epoch: 4, since_ms: 0, valid_until: Instant::now() };
        assert_eq!(leading_term(&leading, yes), Some(4));
        assert_eq!(leading_term(&leading, no), None, "the term is running out: no more sends");
        let standby = LeaseView::Standby { leader: Some("b".into()), epoch: 5, since_ms: 0 };
        assert_eq!(leading_term(&standby, yes), None);
    }

    #[test]
    fn a_new_term_starts_from_chain_state_and_a_lost_one_stands_by() {
        assert_eq!(term_step(Some(4), Some(4)), TermStep::Keep);
        assert_eq!(term_step(Some(4), None), TermStep::Start(4), "first term");
        assert_eq!(term_step(Some(5), Some(4)), TermStep::Start(5), "a new term: start over from chain state");
        assert_eq!(term_step(None, Some(4)), TermStep::StandBy { ended: Some(4) });
        assert_eq!(term_step(None, None), TermStep::StandBy { ended: None });
    }
}
