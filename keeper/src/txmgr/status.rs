//! Status rules: what a receipt says, when it is final (the chain's confirmations reached and its block still
//! canonical), and where a transaction left open by a previous run stands.

use alloy::primitives::B256;

/// What a receipt (or its absence) says about one version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Receipt {
    /// No receipt, or one without a block yet.
    Pending,
    /// Mined in this block and succeeded.
    Mined(u64),
    /// Mined in this block and reverted.
    Reverted(u64),
}

/// Reads a receipt: `None` when the node has none, else its block number (if any) and status.
pub(crate) fn receipt(r: Option<(Option<u64>, bool)>) -> Receipt {
    match r {
        Some((Some(block), true)) => Receipt::Mined(block),
        Some((Some(block), false)) => Receipt::Reverted(block),
        _ => Receipt::Pending,
    }
}

/// Whether a transaction mined in `block` has `confirmations` blocks at `head` (its own block counts as one).
pub(crate) fn deep_enough(head: u64, block: u64, confirmations: u64) -> bool {
    head + 1 >= block + confirmations
}

/// Whether a deep-enough receipt still stands: the receipt, read again, names a block (`receipt_block`: its hash)
/// and the chain's canonical block at that height has that hash. Anything else means a reorganisation took it out.
pub(crate) fn canonical(receipt_block: Option<B256>, canonical_block: Option<B256>) -> bool {
    matches!((receipt_block, canonical_block), (Some(r), Some(c)) if r == c)
}

/// Where a transaction left open by a previous run stands after a restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Recovered {
    /// Mined and succeeded: `confirmed`.
    Confirmed(u64),
    /// Mined and reverted: `failed`.
    Failed(u64),
    /// Not mined, and the account's mined count is past its nonce: another transaction used it (`dropped`).
    Dropped,
    /// Not mined and its nonce still open: in a pool or lost; to be cancelled.
    Open,
}

/// Classifies an open row from its receipt (as for [`receipt`]), its nonce and the account's mined count `latest`.
pub(crate) fn recovered(r: Option<(Option<u64>, bool)>, nonce: u64, latest: u64) -> Recovered {
    match receipt(r) {
        Receipt::Mined(b) => Recovered::Confirmed(b),
        Receipt::Reverted(b) => Recovered::Failed(b),
        Receipt::Pending if nonce < latest => Recovered::Dropped,
        Receipt::Pending => Recovered::Open,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receipts_are_pending_mined_or_reverted() {
        assert_eq!(receipt(None), Receipt::Pending);
        assert_eq!(receipt(Some((None, true))), Receipt::Pending);
        assert_eq!(receipt(Some((Some(7), true))), Receipt::Mined(7));
        assert_eq!(receipt(Some((Some(7), false))), Receipt::Reverted(7));
    }

    /// The chain's confirmations count the receipt's own block: with 6, a receipt in block 100 is final at head 105.
    #[test]
    fn a_receipt_is_deep_enough_at_the_chains_confirmations() {
        assert!(deep_enough(100, 100, 1));
        assert!(!deep_enough(99, 100, 1));
        assert!(!deep_enough(104, 100, 6));
        assert!(deep_enough(105, 100, 6));
        assert!(deep_enough(200, 100, 6));
        // Zero confirmations behave as one: the block itself.
        assert!(deep_enough(100, 100, 0));
    }

    #[test]
    fn a_receipt_stands_only_in_the_canonical_block() {
        let (a, b) = (B256::repeat_byte(1), B256::repeat_byte(2));
        assert!(canonical(Some(a), Some(a)));
        assert!(!canonical(Some(a), Some(b)), "the block at that height was replaced");
        assert!(!canonical(None, Some(a)), "the receipt is gone");
        assert!(!canonical(Some(a), None), "the chain is shorter now");
    }

    #[test]
    fn open_rows_are_settled_by_receipt_then_by_nonce() {
        assert_eq!(recovered(Some((Some(9), true)), 3, 2), Recovered::Confirmed(9));
        assert_eq!(recovered(Some((Some(9), false)), 3, 9), Recovered::Failed(9));
        assert_eq!(recovered(None, 3, 4), Recovered::Dropped);
        assert_eq!(recovered(Some((None, true)), 3, 4), Recovered::Dropped);
        assert_eq!(recovered(None, 3, 3), Recovered::Open);
        assert_eq!(recovered(None, 3, 2), Recovered::Open);
    }
}
