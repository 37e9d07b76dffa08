//! Replacement rules: when a transaction counts as stuck, what a stuck one gets, the fees that cancel a nonce, and
//! the nonce counter's rules.

use std::time::{Duration, Instant};

use super::fees::{next_fees, Fees};
use super::TxPolicy;

/// Whether a version broadcast at `sent_at` and not mined by `now` is due for a look (left the pool, or stuck
/// behind the fee market): `bump_after` has passed.
pub(crate) fn stuck(sent_at: Instant, now: Instant, bump_after: Duration) -> bool {
    now >= sent_at + bump_after
}

/// What a version not mined within `bump_after` gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unstick {
    /// The node no longer has it: broadcast the same version again.
    Rebroadcast,
    /// A replacement at these fees.
    Replace(Fees),
    /// The caps leave no room for a valid replacement: wait.
    WaitAtCap,
}

/// The step for a stuck version: `in_pool` says whether the node still has it, `replacement` is
/// [`next_fees`]'s answer for it (a gap below a shared signer's nonce is filled before this is asked).
pub(crate) fn unstick(in_pool: bool, replacement: Option<Fees>) -> Unstick {
    match (in_pool, replacement) {
        (false, _) => Unstick::Rebroadcast,
        (true, Some(f)) => Unstick::Replace(f),
        (true, None) => Unstick::WaitAtCap,
    }
}

/// The fees of a zero-value transfer that takes over a nonce: when a version may be out (`out`), it must replace
/// it (a valid raise over `old`, `None` when the caps leave none); a nonce never broadcast is filled at the market.
pub(crate) fn cancellation_fees(p: &TxPolicy, old: Fees, market: Fees, out: bool) -> Option<Fees> {
    if out {
        next_fees(p, old, market)
    } else {
        Some(market)
    }
}

/// The highest of each fee field over the versions of one nonce (what a replacement must raise).
pub(crate) fn highest(versions: impl IntoIterator<Item = Fees>) -> Fees {
    versions.into_iter().fold(Fees { max_fee: Default::default(), priority: Default::default() }, |f, v| Fees {
        max_fee: f.max_fee.max(v.max_fee),
        priority: f.priority.max(v.priority),
    })
}

/// The nonce counter after giving back `nonce`: the counter steps back when `nonce` was the last one taken, and is
/// otherwise cleared, to be read again from the node (later nonces are in flight).
pub(crate) fn released(next: Option<u64>, nonce: u64) -> Option<u64> {
    (next == Some(nonce + 1)).then_some(nonce)
}

/// Whether a transaction with `nonce` in the pool waits behind nonces nobody sent: fewer are mined (`latest`) and
/// the node's pending count (mined plus those ready in its pool, contiguously) stops below it.
pub(crate) fn nonce_gap(latest: u64, pending: u64, nonce: u64) -> bool {
    latest < nonce && pending < nonce
}

/// The wait after a transport failure while a transaction is followed: doubling, at most 5 s, at least the poll.
pub(crate) fn transport_backoff(wait: Duration, poll: Duration) -> Duration {
    (wait * 2).min(Duration::from_secs(5)).max(poll)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy::primitives::U256;
    use kronos_common::FeeModel;

    fn fees(max_fee: u64, priority: u64) -> Fees {
        Fees { max_fee: U256::from(max_fee), priority: U256::from(priority) }
    }

    fn policy() -> TxPolicy {
        TxPolicy {
            fee_model: FeeModel::Eip1559,
            max_fee_wei: U256::from(1000),
            max_priority_fee_wei: U256::from(100),
            bump_after: Duration::from_secs(30),
            bump_percent: 12,
            confirmations: 1,
            poll: Duration::from_millis(100),
        }
    }

    #[test]
    fn a_version_is_stuck_once_bump_after_has_passed() {
        let t = Instant::now();
        let after = Duration::from_secs(30);
        assert!(!stuck(t, t, after));
        assert!(!stuck(t, t + Duration::from_millis(29_999), after));
        assert!(stuck(t, t + after, after));
        assert!(stuck(t, t + Duration::from_secs(31), after));
    }

    #[test]
    fn a_stuck_version_is_rebroadcast_replaced_or_left_at_the_cap() {
        assert_eq!(unstick(false, Some(fees(1, 1))), Unstick::Rebroadcast);
        assert_eq!(unstick(false, None), Unstick::Rebroadcast);
        assert_eq!(unstick(true, Some(fees(113, 12))), Unstick::Replace(fees(113, 12)));
        assert_eq!(unstick(true, None), Unstick::WaitAtCap);
    }

    #[test]
    fn a_cancellation_replaces_a_version_out_and_fills_a_nonce_never_sent() {
        let p = policy();
        // A version may be out: a valid replacement over it.
        assert_eq!(cancellation_fees(&p, fees(100, 10), fees(50, 5), true), Some(fees(113, 12)));
        // At the cap: none.
        assert_eq!(cancellation_fees(&p, fees(1000, 10), fees(50, 5), true), None);
        // Never broadcast: the market's fees, whatever the old ones.
        assert_eq!(cancellation_fees(&p, fees(1000, 10), fees(50, 5), false), Some(fees(50, 5)));
    }

    #[test]
    fn the_highest_fees_of_a_nonces_versions_are_raised() {
        assert_eq!(highest([fees(100, 30), fees(200, 10), fees(150, 20)]), fees(200, 30));
        assert_eq!(highest([]), fees(0, 0));
    }

    /// Audit M5: a gap is below a pooled transaction only when neither the mined count nor the node's contiguous
    /// pending count reaches its nonce.
    #[test]
    fn a_gap_is_seen_only_when_nothing_reaches_the_nonce() {
        assert!(nonce_gap(5, 5, 6), "nonce 5 was never sent");
        assert!(!nonce_gap(5, 7, 6), "nonce 5 waits in the pool: no gap");
        assert!(!nonce_gap(7, 7, 6), "mined already");
        assert!(!nonce_gap(6, 6, 6), "the next nonce: nothing below is missing");
    }

    #[test]
    fn a_released_nonce_is_reused_or_read_again() {
        // The last one taken steps back.
        assert_eq!(released(Some(6), 5), Some(5));
        // Later nonces are in flight: read the count again from the node.
        assert_eq!(released(Some(8), 5), None);
        assert_eq!(released(None, 5), None);
    }

    #[test]
    fn transport_failures_back_off_to_five_seconds() {
        let ms = Duration::from_millis;
        assert_eq!(transport_backoff(ms(100), ms(100)), ms(200));
        assert_eq!(transport_backoff(ms(4000), ms(100)), ms(5000));
        // Never below the poll interval.
        assert_eq!(transport_backoff(ms(10), ms(100)), ms(100));
        assert_eq!(transport_backoff(ms(4000), ms(8000)), ms(8000));
    }
}
