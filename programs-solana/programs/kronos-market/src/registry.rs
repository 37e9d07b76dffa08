//! The forecast registry: `contracts-evm/src/PredictionRegistry.sol` on Solana.
//!
//! A publisher commits `commitment_hash(cluster, program, publisher, market, epoch, up, p_up_bps, salt)` while the
//! round takes bets (from the round's start, once it is started, until `bet_cutoff` before its lock; it may replace
//! it until then) and reveals after the round's outcome is final. A reveal is scored: a hit when the direction
//! matches, and a Brier term `(p − o)²` in basis points squared (`MAX_BRIER` = 1e8 = 1.0). A round the oracle left
//! without an Up or Down outcome (tie, stale or bad answer, changed feed) voids the forecast; a round left without
//! one because nobody settled it in time (its settle window expired, or the feed's history moved past its prices)
//! cannot be revealed at all ([`round_result`]), so its forecast expires. Forecasts are taken only on markets the
//! admin enabled ([`ForecastMarket`]). A commitment not revealed by its deadline (the
//! round's close + its `settle_window` + the registry's `reveal_window`) counts as expired — a miss with the worst
//! Brier term — as soon as the deadline passes, without anyone calling anything: each publisher's [`TrackRecord`]
//! keeps the deadlines of its open commitments, and [`TrackRecord::view`] adds those past it.
//!
//! This module holds the accounts and the pure rules (hash, scoring, the open list); the instructions are in
//! `instructions/registry.rs`.

use anchor_lang::prelude::*;

use crate::error::MarketError;
use crate::state::{CancelReason, Outcome, Round, RoundStatus};

/// Probability scale: basis points.
pub const PROB_SCALE: u16 = 10_000;
/// The worst Brier term, `PROB_SCALE²`, charged to an expired commitment.
pub const MAX_BRIER: u32 = PROB_SCALE as u32 * PROB_SCALE as u32;
/// The most commitments a publisher may have neither revealed nor expired (bounds the track record's list).
pub const MAX_OPEN: usize = 1024;
/// The most past-deadline commitments one commit folds into the record when it finds its publisher's list full.
pub const MAX_FOLD: usize = 64;
/// Longest reveal window (seconds).
pub const MAX_REVEAL_WINDOW: u32 = 30 * 86_400;

pub const REGISTRY_SEED: &[u8] = b"registry";
pub const COMMITMENT_SEED: &[u8] = b"commitment";
pub const RECORD_SEED: &[u8] = b"record";
pub const FORECAST_MARKET_SEED: &[u8] = b"forecast-market";

/// The registry's configuration (PDA `["registry"]`), created once by the program's upgrade authority.
#[account]
#[derive(InitSpace, Debug)]
pub struct Registry {
    /// The cluster's genesis hash (`getGenesisHash`), bound into every commitment so that a commitment made on one
    /// cluster cannot be revealed on another where the same program id is deployed. No sysvar exposes the genesis
    /// hash to a program, so the upgrade authority writes it here once; clients compare it with their RPC's.
    pub cluster: [u8; 32],
    /// How long after a round's settle deadline its forecasts may still be revealed (seconds).
    pub reveal_window: u32,
    pub bump: u8,
}

/// A market the admin enabled for forecasts (PDA `["forecast-market", market]`). Markets are open to anyone on an
/// approved feed, but a track record must not be fed by markets its publisher created for it (choosing their
/// timing, and whether anyone bets or settles): as on EVM, where the registry reads one `KronosMarket` whose markets
/// only its owner creates, commits are taken only on markets the Config admin enabled.
#[account]
#[derive(InitSpace, Debug)]
pub struct ForecastMarket {
    pub market: Pubkey,
    pub bump: u8,
}

/// Lifecycle of a commitment (a commitment account that does not exist is `None` on EVM).
#[derive(AnchorSerialize, AnchorDeserialize, Clone, Copy, Debug, PartialEq, Eq, InitSpace)]
pub enum CommitStatus {
    /// Waiting for its reveal; past `deadline` it counts as expired (whether or not `expire` was called).
    Committed,
    Revealed,
    /// Marked by `expire`.
    Expired,
}

/// One publisher's forecast for one round (PDA `["commitment", market, epoch_le, publisher]`).
#[account]
#[derive(InitSpace, Debug)]
pub struct Commitment {
    pub publisher: Pubkey,
    pub market: Pubkey,
    pub epoch: u64,
    pub hash: [u8; 32],
    pub status: CommitStatus,
    /// Reveals are accepted until this timestamp (inclusive): the round's close + its settle window + the
    /// registry's reveal window.
    pub deadline: i64,
    /// The revealed forecast and its score (zero until revealed).
    pub up: bool,
    pub probability_up_bps: u16,
    pub outcome: Outcome,
    pub hit: bool,
    pub brier: u32,
    pub bump: u8,
}

/// A publisher's running score (PDA `["record", publisher]`). The stored counters leave out the open commitments
/// past their deadline; read it through [`TrackRecord::view`] (or the `track_record` instruction), which counts
/// them as expired.
#[account]
#[derive(InitSpace, Debug)]
pub struct TrackRecord {
    pub publisher: Pubkey,
    /// Forecasts committed (a replaced commitment counts once).
    pub committed: u64,
    /// Forecasts revealed (hits + scored misses + voided).
    pub revealed: u64,
    /// Scored forecasts whose direction matched the outcome.
    pub hits: u64,
    /// Scored forecasts whose direction did not match, plus expired commitments.
    pub misses: u64,
    /// Revealed forecasts on rounds without an Up or Down outcome.
    pub voided: u64,
    /// Commitments never revealed in time (also counted in `misses`).
    pub expired: u64,
    /// Sum of the Brier terms of scored and expired forecasts, in basis points squared.
    pub brier_sum: u128,
    /// Reveal deadlines of the open commitments (neither revealed nor expired by `expire` or a fold), in no order.
    /// Only the deadlines matter for the count, so one entry with a commitment's deadline is removed when it is
    /// revealed (before the deadline, there is one per commitment still open with that deadline).
    #[max_len(1024)]
    pub open: Vec<i64>,
    pub bump: u8,
}

const _: () = assert!(MAX_OPEN == 1024, "TrackRecord.open's max_len must equal MAX_OPEN");

/// A publisher's track record at a given time: what `PredictionRegistry.trackRecord` returns, plus the reveals
/// and the number of commitments still open for reveal.
#[derive(AnchorSerialize, AnchorDeserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct RecordView {
    pub committed: u64,
    pub revealed: u64,
    pub hits: u64,
    pub misses: u64,
    pub voided: u64,
    pub expired: u64,
    pub brier_sum: u128,
    /// Commitments that may still be revealed (open, deadline not passed).
    pub pending: u32,
}

impl TrackRecord {
    /// The record at `now`: open commitments past their deadline count as expired (a miss with the worst Brier
    /// term), whether or not anyone called `expire`.
    pub fn view(&self, now: i64) -> RecordView {
        let past = self.open.iter().filter(|d| now > **d).count() as u64;
        RecordView {
            committed: self.committed,
            revealed: self.revealed,
            hits: self.hits,
            misses: self.misses + past,
            voided: self.voided,
            expired: self.expired + past,
            brier_sum: self.brier_sum + past as u128 * MAX_BRIER as u128,
            pending: (self.open.len() as u64 - past) as u32,
        }
    }

    /// Adds `n` expired commitments to the stored counters: each a miss with the worst Brier term.
    pub fn add_expired(&mut self, n: u64) -> Result<()> {
        let overflow = || error!(MarketError::MathOverflow);
        self.misses = self.misses.checked_add(n).ok_or_else(overflow)?;
        self.expired = self.expired.checked_add(n).ok_or_else(overflow)?;
        self.brier_sum = self.brier_sum.checked_add(n as u128 * MAX_BRIER as u128).ok_or_else(overflow)?;
        Ok(())
    }

    /// Adds an open commitment with reveal deadline `deadline`. A full list first folds up to [`MAX_FOLD`] of its
    /// past-deadline entries into the record (they can no longer be revealed); returns how many. Refused with
    /// `TooManyOpen` when the list is still full.
    pub fn push_open(&mut self, deadline: i64, now: i64) -> Result<u64> {
        self.push_open_capped(deadline, now, MAX_OPEN, MAX_FOLD)
    }

    fn push_open_capped(&mut self, deadline: i64, now: i64, cap: usize, max_fold: usize) -> Result<u64> {
        let mut folded = 0;
        if self.open.len() >= cap {
            folded = self.fold_expired(now, max_fold);
            self.add_expired(folded)?;
            require!(self.open.len() < cap, MarketError::TooManyOpen);
        }
        self.open.push(deadline);
        Ok(folded)
    }

    /// Removes up to `max` entries past their deadline, scanning from the end of the list (an entry moved into a
    /// freed place has already been looked at), as `PredictionRegistry._foldExpired` does.
    fn fold_expired(&mut self, now: i64, max: usize) -> u64 {
        let mut n = 0;
        let mut i = self.open.len();
        while i != 0 && n < max {
            i -= 1;
            if now > self.open[i] {
                self.open.swap_remove(i);
                n += 1;
            }
        }
        n as u64
    }

    /// Removes one open entry with deadline `deadline`; false if there is none.
    pub fn remove_open(&mut self, deadline: i64) -> bool {
        match self.open.iter().position(|d| *d == deadline) {
            Some(i) => {
                self.open.swap_remove(i);
                true
            }
            None => false,
        }
    }
}

/// A forecast as revealed: the direction, the probability of Up and the secret salt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forecast {
    pub up: bool,
    pub probability_up_bps: u16,
    pub salt: [u8; 32],
}

/// The commitment a publisher submits for `forecast` on `market`'s round `epoch`: SHA-256 (Solana's hash syscall)
/// over fixed-width fields, so no two different forecasts encode alike: `cluster ‖ program id ‖ publisher ‖ market
/// ‖ epoch (u64 LE) ‖ up (1 byte) ‖ probability_up_bps (u16 LE) ‖ salt`. Binding the cluster (the registry's
/// genesis hash) and this program's id keeps a commitment from being replayed on another cluster or deployment;
/// binding the publisher keeps a copied commitment from being revealed by the copier (as
/// `abi.encode(block.chainid, address(this), publisher, …)` does on EVM).
pub fn commitment_hash(
    cluster: &[u8; 32],
    publisher: &Pubkey,
    market: &Pubkey,
    epoch: u64,
    forecast: &Forecast,
) -> [u8; 32] {
    solana_sha256_hasher::hashv(&[
        cluster,
        crate::ID.as_ref(),
        publisher.as_ref(),
        market.as_ref(),
        &epoch.to_le_bytes(),
        &[forecast.up as u8],
        &forecast.probability_up_bps.to_le_bytes(),
        &forecast.salt,
    ])
    .to_bytes()
}

/// Whether a forecast is well formed: a probability of Up within the scale that agrees with the direction (Up
/// needs at least 50%, Down at most 50%).
pub fn consistent(up: bool, probability_up_bps: u16) -> bool {
    let half = PROB_SCALE / 2;
    probability_up_bps <= PROB_SCALE && if up { probability_up_bps >= half } else { probability_up_bps <= half }
}

/// A revealed forecast's score.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Score {
    pub hit: bool,
    /// `(p − o)²` in basis points squared, `o` = `PROB_SCALE` for Up and 0 for Down.
    pub brier: u32,
}

/// The score of a forecast (`up`, `probability_up_bps` ≤ `PROB_SCALE`) against `outcome`, exactly as
/// `PredictionRegistry.reveal` computes it; `None` (voided) unless the outcome is Up or Down.
pub fn score(up: bool, probability_up_bps: u16, outcome: Outcome) -> Option<Score> {
    let went_up = match outcome {
        Outcome::Up => true,
        Outcome::Down => false,
        Outcome::None | Outcome::Tie => return None,
    };
    let target = if went_up { PROB_SCALE } else { 0 };
    let diff = probability_up_bps.abs_diff(target) as u32;
    Some(Score { hit: up == went_up, brier: diff * diff })
}

/// The outcome a forecast on round `r` is scored against at `now`. Settled: Up or Down. Cancelled by the oracle's
/// data: the price outcome when both prices were usable (Up or Down on a one-sided pool, which is refunded for lack
/// of bettors but priced all the same; Tie), `Outcome::None` (void) for a stale or bad answer or a changed feed.
///
/// Refused with `OutcomeNotFinal` before the round is final, and with `OutcomeMissed` when it has no outcome only
/// because nobody settled it in time: still Open or Locked past its settle window, cancelled as `Expired`, or
/// cancelled because the feed's history no longer covered its lock or close (`Lock`/`ClosePriceUnavailable`, only
/// ever set from a `NotCovered` read). Those depend on when (whether) someone cranks, which the publisher controls:
/// voiding them would let a publisher leave its misses unsettled and reveal them as voided. Unrevealable, such a
/// forecast expires at its deadline — a miss with the worst Brier term — unless someone settles the round in time.
pub fn round_result(r: &Round, now: i64) -> Result<Outcome> {
    require!(r.is_final(now), MarketError::OutcomeNotFinal);
    match r.status {
        RoundStatus::Settled => Ok(r.outcome),
        RoundStatus::Cancelled => match r.cancel_reason {
            CancelReason::Expired | CancelReason::LockPriceUnavailable | CancelReason::ClosePriceUnavailable => {
                err!(MarketError::OutcomeMissed)
            }
            _ => Ok(r.outcome),
        },
        RoundStatus::Open | RoundStatus::Locked => err!(MarketError::OutcomeMissed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn record() -> TrackRecord {
        TrackRecord {
            publisher: Pubkey::default(),
            committed: 0,
            revealed: 0,
            hits: 0,
            misses: 0,
            voided: 0,
            expired: 0,
            brier_sum: 0,
            open: vec![],
            bump: 0,
        }
    }

    /// The Solidity maths written out plainly: signed difference of the probability and the outcome, squared.
    fn reference_brier(p: u16, went_up: bool) -> i64 {
        let o: i64 = if went_up { 10_000 } else { 0 };
        (p as i64 - o) * (p as i64 - o)
    }

    #[test]
    fn scores_at_the_edges() {
        assert_eq!(score(true, 10_000, Outcome::Up), Some(Score { hit: true, brier: 0 }));
        assert_eq!(score(true, 10_000, Outcome::Down), Some(Score { hit: false, brier: MAX_BRIER }));
        assert_eq!(score(false, 0, Outcome::Down), Some(Score { hit: true, brier: 0 }));
        assert_eq!(score(true, 5_000, Outcome::Down), Some(Score { hit: false, brier: 25_000_000 }));
        assert_eq!(score(false, 5_000, Outcome::Down), Some(Score { hit: true, brier: 25_000_000 }));
        assert_eq!(score(true, 6_000, Outcome::Up), Some(Score { hit: true, brier: 16_000_000 }));
        assert_eq!(score(true, 6_000, Outcome::Tie), None);
        assert_eq!(score(false, 4_000, Outcome::None), None);
    }

    /// A zeroed round (settle window 0, closing at 0) with this status, cancel reason and outcome.
    fn round(status: RoundStatus, reason: CancelReason, outcome: Outcome) -> Round {
        let mut r = Round::deserialize(&mut &vec![0u8; Round::INIT_SPACE][..]).unwrap();
        (r.status, r.cancel_reason, r.outcome) = (status, reason, outcome);
        r
    }

    #[test]
    fn only_the_oracle_voids_a_forecast() {
        use CancelReason as C;
        let missed = error!(MarketError::OutcomeMissed);
        // Before its settle window ends an unsettled round is not final.
        assert_eq!(
            round_result(&round(RoundStatus::Open, C::None, Outcome::None), 0).unwrap_err(),
            error!(MarketError::OutcomeNotFinal)
        );
        assert_eq!(round_result(&round(RoundStatus::Settled, C::None, Outcome::Down), 0).unwrap(), Outcome::Down);
        // Nobody settled it in time: no outcome to reveal against, whatever the status says.
        for status in [RoundStatus::Open, RoundStatus::Locked] {
            assert_eq!(round_result(&round(status, C::None, Outcome::None), 1).unwrap_err(), missed);
        }
        for reason in [C::Expired, C::LockPriceUnavailable, C::ClosePriceUnavailable] {
            assert_eq!(
                round_result(&round(RoundStatus::Cancelled, reason, Outcome::None), 1).unwrap_err(),
                missed,
                "{reason:?}"
            );
        }
        // The oracle's data decided: void (None) or the priced outcome.
        for (reason, outcome) in [
            (C::LockPriceStale, Outcome::None),
            (C::ClosePriceStale, Outcome::None),
            (C::BadAnswer, Outcome::None),
            (C::FeedChanged, Outcome::None),
            (C::Tie, Outcome::Tie),
            (C::OneSidedPool, Outcome::Up),
        ] {
            assert_eq!(
                round_result(&round(RoundStatus::Cancelled, reason, outcome), 1).unwrap(),
                outcome,
                "{reason:?}"
            );
        }
    }

    #[test]
    fn consistency_matches_the_solidity_rule() {
        // Solidity: p > 10000 || (up && p < 5000) || (!up && p > 5000) is refused.
        for p in 0..=10_100u16 {
            for up in [true, false] {
                let refused = p > 10_000 || (up && p < 5_000) || (!up && p > 5_000);
                assert_eq!(consistent(up, p), !refused, "up {up} p {p}");
            }
        }
    }

    #[test]
    fn a_full_list_folds_at_most_max_fold_past_deadline_entries() {
        // 723 of MAX_OPEN past their deadline (as the Solidity test): a commit folds 64 of them.
        let mut r = record();
        for i in 0..MAX_OPEN {
            r.open.push(if i % 7 < 5 && i < 1011 { 100 } else { 1_000 });
        }
        let past = r.open.iter().filter(|d| **d == 100).count();
        assert_eq!(past, 723);
        let before = r.view(500);
        assert_eq!(r.push_open(2_000, 500).unwrap(), MAX_FOLD as u64);
        assert_eq!(r.open.len(), MAX_OPEN - MAX_FOLD + 1);
        assert_eq!((r.expired, r.misses), (64, 64));
        assert_eq!(r.brier_sum, 64 * MAX_BRIER as u128);
        // Folding changes the stored record, not what the view shows (it already counted them).
        let after = r.view(500);
        assert_eq!((after.expired, after.misses, after.brier_sum), (before.expired, before.misses, before.brier_sum));
        assert_eq!(after.pending, before.pending + 1);
    }

    #[test]
    fn a_full_list_with_nothing_past_its_deadline_refuses() {
        let mut r = record();
        r.open = vec![1_000; MAX_OPEN];
        assert_eq!(r.push_open(2_000, 1_000).unwrap_err(), error!(MarketError::TooManyOpen));
        assert_eq!(r.open.len(), MAX_OPEN);
        // One second later every entry is past its deadline: 64 fold, the commit fits.
        assert_eq!(r.push_open(2_000, 1_001).unwrap(), 64);
        assert_eq!(r.open.len(), MAX_OPEN - 63);
    }

    #[test]
    fn remove_open_takes_one_entry_of_that_deadline() {
        let mut r = record();
        r.open = vec![5, 7, 5, 9];
        assert!(r.remove_open(5));
        let mut left = r.open.clone();
        left.sort();
        assert_eq!(left, vec![5, 7, 9]);
        assert!(!r.remove_open(6));
    }

    #[derive(Debug, Clone)]
    enum Op {
        /// Commit a new forecast whose deadline is `now + d`.
        Commit(i64),
        /// Reveal the `i`-th (mod count) commitment, if still revealable, with this outcome.
        Reveal(usize, bool, u16, u8),
        /// Expire the `i`-th commitment, if allowed.
        Expire(usize),
        /// Let time pass.
        Wait(i64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (1i64..40).prop_map(Op::Commit),
            (0usize..64, any::<bool>(), 0u16..=10_000, 0u8..4).prop_map(|(i, u, p, o)| Op::Reveal(i, u, p, o)),
            (0usize..64).prop_map(Op::Expire),
            (0i64..20).prop_map(Op::Wait),
        ]
    }

    #[derive(Debug, Clone, Copy, PartialEq)]
    enum St {
        Open,
        Revealed(Option<Score>),
        Expired,
    }

    proptest! {
        /// Any sequence of commits (with a small cap and fold to reach them), reveals, expiries and waits: the
        /// view equals the record recomputed straight from every commitment's fate, and a commit is refused
        /// only when the list holds `cap` entries of which none is past its deadline.
        #[test]
        fn the_view_matches_a_plain_model(ops in proptest::collection::vec(op(), 1..120)) {
            let (cap, max_fold) = (6usize, 2usize);
            let mut r = record();
            let mut now = 0i64;
            // (deadline, state) of every commitment made.
            let mut all: Vec<(i64, St)> = vec![];
            for o in ops {
                match o {
                    Op::Commit(d) => {
                        let open = all.iter().filter(|(dl, s)| *s == St::Open && now <= *dl).count();
                        let listed = r.open.len();
                        match r.push_open_capped(now + d, now, cap, max_fold) {
                            Ok(_) => {
                                r.committed += 1;
                                all.push((now + d, St::Open));
                            }
                            Err(e) => {
                                prop_assert_eq!(e, error!(MarketError::TooManyOpen));
                                prop_assert_eq!(listed, cap);
                                prop_assert_eq!(open, cap, "refused while some listed entry was past its deadline");
                            }
                        }
                    }
                    Op::Reveal(i, up, p, o) => {
                        if all.is_empty() { continue; }
                        let i = i % all.len();
                        let (dl, st) = all[i];
                        if st != St::Open || now > dl { continue; }
                        let outcome = [Outcome::None, Outcome::Up, Outcome::Down, Outcome::Tie][o as usize];
                        prop_assert!(r.remove_open(dl));
                        r.revealed += 1;
                        let s = score(up, p, outcome);
                        match s {
                            Some(s) if s.hit => r.hits += 1,
                            Some(_) => r.misses += 1,
                            None => r.voided += 1,
                        }
                        r.brier_sum += s.map_or(0, |s| s.brier as u128);
                        all[i].1 = St::Revealed(s);
                    }
                    Op::Expire(i) => {
                        if all.is_empty() { continue; }
                        let i = i % all.len();
                        let (dl, st) = all[i];
                        if st != St::Open || now <= dl { continue; }
                        if r.remove_open(dl) { r.add_expired(1).unwrap(); }
                        all[i].1 = St::Expired;
                    }
                    Op::Wait(s) => now += s,
                }
                // The model: every commitment's fate at `now`.
                let v = r.view(now);
                let (mut hits, mut misses, mut voided, mut expired, mut revealed, mut pending, mut brier) =
                    (0u64, 0u64, 0u64, 0u64, 0u64, 0u32, 0u128);
                for (dl, st) in &all {
                    match st {
                        St::Open if now <= *dl => pending += 1,
                        St::Open | St::Expired => {
                            expired += 1;
                            misses += 1;
                            brier += MAX_BRIER as u128;
                        }
                        St::Revealed(s) => {
                            revealed += 1;
                            match s {
                                Some(s) => {
                                    if s.hit { hits += 1 } else { misses += 1 }
                                    brier += s.brier as u128;
                                }
                                None => voided += 1,
                            }
                        }
                    }
                }
                prop_assert_eq!(v, RecordView {
                    committed: all.len() as u64, revealed, hits, misses, voided, expired, brier_sum: brier, pending,
                });
            }
        }

        /// The Brier term and the hit agree with the Solidity maths over the whole input space.
        #[test]
        fn score_matches_the_reference(p in 0u16..=10_000, up in any::<bool>(), went_up in any::<bool>()) {
            let s = score(up, p, if went_up { Outcome::Up } else { Outcome::Down }).unwrap();
            prop_assert_eq!(s.brier as i64, reference_brier(p, went_up));
            prop_assert_eq!(s.hit, up == went_up);
            prop_assert!(s.brier <= MAX_BRIER);
        }

        /// The hash changes with every field it binds.
        #[test]
        fn every_field_is_bound(
            seed in any::<[u8; 32]>(), epoch in any::<u64>(), up in any::<bool>(), p in any::<u16>(), which in 0usize..7,
        ) {
            let k = |b: u8| { let mut a = seed; a[0] ^= b; Pubkey::new_from_array(a) };
            let f = Forecast { up, probability_up_bps: p, salt: seed };
            let base = (seed, k(2), k(3), epoch, f);
            let mut m = base;
            match which {
                0 => m.0[31] ^= 1,
                1 => m.1 = k(9),
                2 => m.2 = k(9),
                3 => m.3 = epoch.wrapping_add(1),
                4 => m.4.up = !up,
                5 => m.4.probability_up_bps = p.wrapping_add(1),
                _ => m.4.salt[5] ^= 1,
            }
            let h = |t: &([u8; 32], Pubkey, Pubkey, u64, Forecast)| commitment_hash(&t.0, &t.1, &t.2, t.3, &t.4);
            prop_assert_ne!(h(&base), h(&m));
        }
    }
}
