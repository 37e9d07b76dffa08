//! Reverts, typed: revert data decoded into the contracts' generated error enums and matched by variant.

use alloy::primitives::Bytes;
use alloy::sol_types::SolInterface;
use alloy::transports::{RpcError, TransportErrorKind};
use kronos_contracts::market::KronosMarket::KronosMarketErrors;
use kronos_contracts::registry::PredictionRegistry::PredictionRegistryErrors;

use super::node_error::{classify_node_error, NodeError};
use super::TxError;

/// Decodes revert data with the Kronos contracts' errors, `Error(string)` and `Panic(uint)`, for messages.
pub(crate) fn decode_revert(data: &[u8]) -> String {
    if let Ok(e) = KronosMarketErrors::abi_decode(data) {
        return format!("{e:?}");
    }
    if let Ok(e) = PredictionRegistryErrors::abi_decode(data) {
        return format!("{e:?}");
    }
    // An unknown custom error decodes as "custom error 0x…: " plus its raw bytes; show those as hex instead.
    if let Some(r) = alloy::sol_types::decode_revert_reason(data).filter(|r| !r.chars().any(char::is_control)) {
        return r;
    }
    format!("0x{}", alloy::hex::encode(data))
}

/// Whether revert data says that what the transaction was for is already done by someone else
/// (`CheckpointAlreadyRecorded`: anyone may execute a checkpoint, and a copy of ours with a higher tip can land
/// first). Such a revert is the outcome we wanted, not a failure to alert about.
pub(crate) fn is_benign_revert(data: &[u8]) -> bool {
    matches!(KronosMarketErrors::abi_decode(data), Ok(KronosMarketErrors::CheckpointAlreadyRecorded(_)))
}

/// Whether a market revert says the Chainlink proof went out of date: the feed moved between the proof and the
/// transaction's inclusion (a new round made a "latest" proof stale, or the phase changed). The caller proves again.
pub(crate) fn is_outdated_proof(e: &KronosMarketErrors) -> bool {
    use KronosMarketErrors as E;
    matches!(
        e,
        E::ProofRoundMissing(_)
            | E::ProofRoundAfterTimestamp(_)
            | E::ProofSuccessorNotAfterTimestamp(_)
            | E::ProofNotLatest(_)
            | E::ProofBadSuccessor(_)
            | E::ProofLaterPhaseInEffect(_)
    )
}

/// What a transaction that reverted on chain (after its simulation passed) means for the operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OnChainRevert {
    /// What it was for is on chain (someone else did it first): no failure.
    Done,
    /// Its inputs went out of date between the simulation and inclusion (an outdated proof): the caller sends again
    /// with fresh inputs, so this is a race lost, counted and logged, not an alert.
    Raced,
    /// Anything else, including a revert that a fresh simulation no longer explains: alert.
    Failed,
}

/// Judges an on-chain revert from a fresh simulation's revert data (`None`: it no longer reverts, or the node gave
/// no data) and whether the action's outcome is on chain now.
pub(crate) fn judge_on_chain_revert(resimulated: Option<&[u8]>, done: bool) -> OnChainRevert {
    if done || resimulated.is_some_and(is_benign_revert) {
        return OnChainRevert::Done;
    }
    match resimulated.and_then(|d| KronosMarketErrors::abi_decode(d).ok()) {
        Some(e) if is_outdated_proof(&e) => OnChainRevert::Raced,
        _ => OnChainRevert::Failed,
    }
}

/// A node's error answer as a revert: when it carries revert data, or the node says it reverts
/// ([`classify_node_error`]).
pub(crate) fn revert_from(e: &RpcError<TransportErrorKind>) -> Option<TxError> {
    let p = e.as_error_resp()?;
    let data = p.as_revert_data();
    if data.is_none() && classify_node_error(p.code, &p.message) != NodeError::Reverted {
        return None;
    }
    let reason = data.as_ref().map(|d| decode_revert(d)).unwrap_or_else(|| p.message.to_string());
    Some(TxError::Revert { reason, data })
}

impl TxError {
    fn revert_data(&self) -> Option<&Bytes> {
        match self {
            TxError::Revert { data: Some(d), .. } => Some(d),
            _ => None,
        }
    }

    /// The revert decoded as a KronosMarket error.
    pub(crate) fn market_error(&self) -> Option<KronosMarketErrors> {
        self.revert_data().and_then(|d| KronosMarketErrors::abi_decode(d).ok())
    }

    /// The revert decoded as a PredictionRegistry error.
    pub(crate) fn registry_error(&self) -> Option<PredictionRegistryErrors> {
        self.revert_data().and_then(|d| PredictionRegistryErrors::abi_decode(d).ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy::primitives::U256;
    use alloy::sol_types::SolError;
    use kronos_contracts::market::KronosMarket;
    use kronos_contracts::registry::PredictionRegistry;

    fn answer(code: i64, message: &str, data: Option<&str>) -> RpcError<TransportErrorKind> {
        RpcError::ErrorResp(alloy::rpc::json_rpc::ErrorPayload {
            code,
            message: message.to_string().into(),
            data: data.map(|d| serde_json::value::to_raw_value(d).unwrap()),
        })
    }

    #[test]
    fn only_an_already_recorded_checkpoint_is_a_benign_revert() {
        let done =
            KronosMarket::CheckpointAlreadyRecorded { marketId: U256::from(1), index: U256::from(4) }.abi_encode();
        assert!(is_benign_revert(&done));
        let not_due =
            KronosMarket::CheckpointNotDue { marketId: U256::from(1), index: U256::from(4), timestamp: U256::from(9) }
                .abi_encode();
        assert!(!is_benign_revert(&not_due));
        assert!(!is_benign_revert(&[]));
        let e = TxError::Revert { reason: "x".into(), data: Some(done.into()) };
        assert!(matches!(e.market_error(), Some(KronosMarketErrors::CheckpointAlreadyRecorded(_))));
        assert!(e.registry_error().is_none());
    }

    #[test]
    fn an_outdated_proof_is_a_lost_race_and_only_that() {
        let not_latest = KronosMarket::ProofNotLatest {
            roundId: alloy::primitives::aliases::U80::from(9),
            latestRoundId: alloy::primitives::aliases::U80::from(11),
        }
        .abi_encode();
        let done =
            KronosMarket::CheckpointAlreadyRecorded { marketId: U256::from(1), index: U256::from(4) }.abi_encode();
        let not_due =
            KronosMarket::CheckpointNotDue { marketId: U256::from(1), index: U256::from(4), timestamp: U256::from(9) }
                .abi_encode();
        assert_eq!(judge_on_chain_revert(Some(&not_latest), false), OnChainRevert::Raced);
        // Recorded by someone else in the meantime: done, whatever check failed first.
        assert_eq!(judge_on_chain_revert(Some(&not_latest), true), OnChainRevert::Done);
        assert_eq!(judge_on_chain_revert(Some(&done), false), OnChainRevert::Done);
        assert_eq!(judge_on_chain_revert(Some(&not_due), false), OnChainRevert::Failed);
        // It would pass now, or the node gave no data: unexplained, so alert.
        assert_eq!(judge_on_chain_revert(None, false), OnChainRevert::Failed);
        assert_eq!(judge_on_chain_revert(Some(&[0xde, 0xad]), false), OnChainRevert::Failed);
        let late = PredictionRegistry::CommitTooLate {
            marketId: U256::from(1),
            epoch: U256::from(2),
            closesAt: U256::from(3),
        }
        .abi_encode();
        assert_eq!(judge_on_chain_revert(Some(&late), false), OnChainRevert::Failed);
    }

    #[test]
    fn registry_reverts_decode_by_variant() {
        let late = PredictionRegistry::CommitTooLate {
            marketId: U256::from(1),
            epoch: U256::from(2),
            closesAt: U256::from(3),
        }
        .abi_encode();
        let e = TxError::Revert { reason: "x".into(), data: Some(late.into()) };
        assert!(matches!(e.registry_error(), Some(PredictionRegistryErrors::CommitTooLate(_))));
        assert!(e.market_error().is_none());
        assert!(TxError::Transport("down".into()).registry_error().is_none());
        assert!(TxError::Revert { reason: "x".into(), data: None }.market_error().is_none());
    }

    #[test]
    fn an_answer_is_a_revert_by_its_data_or_its_class() {
        let unknown = KronosMarket::UnknownMarket { marketId: U256::from(2) }.abi_encode();
        let hex = format!("0x{}", alloy::hex::encode(&unknown));
        // Data: decoded by variant.
        let Some(TxError::Revert { reason, data }) = revert_from(&answer(3, "execution reverted", Some(&hex))) else {
            panic!("a revert with data")
        };
        assert!(reason.starts_with("UnknownMarket"), "{reason}");
        assert_eq!(data.as_ref().map(|d| d.to_vec()), Some(unknown.clone()));
        // No data, but the node says it reverts: the message is the reason.
        let Some(TxError::Revert { reason, data: None }) = revert_from(&answer(-32000, "Execution reverted", None))
        else {
            panic!("a revert without data")
        };
        assert_eq!(reason, "Execution reverted");
        // Pool answers are no reverts.
        assert!(revert_from(&answer(-32000, "nonce too low", None)).is_none());
        assert!(revert_from(&answer(-32000, "insufficient funds for gas * price + value", None)).is_none());
    }
}
