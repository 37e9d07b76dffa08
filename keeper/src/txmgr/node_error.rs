//! What a node's JSON-RPC error answer means: the one place in the keeper that reads an error's text.
//!
//! A revert has a typed form (the revert data, decoded into the contracts' error enums by
//! [`super::revert`]), but a node's refusal of a transaction (nonce too low or too high, underpriced, already known,
//! insufficient funds) has none: JSON-RPC leaves error codes to each node, and most answer all of these with the
//! generic `-32000`. So the code is used where a node gives a specific one (`3` for a revert, the execution-apis
//! `-380xx` codes), and otherwise the message is matched against the texts that geth, erigon, reth, anvil,
//! Nethermind and Besu send, as OpenZeppelin Relayer and Chainlink's transaction manager do. Nothing else in the
//! keeper matches an error by its text.

/// A node's refusal of a call or a transaction, by meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NodeError {
    /// The node has the transaction already (same hash): keep following it.
    AlreadyKnown,
    /// The nonce is used: by one of our versions (look for its receipt) or by another transaction.
    NonceTooLow,
    /// The nonce is ahead of the account's: resynchronise and start over.
    NonceTooHigh,
    /// The fees are below what the node or the block accepts, or below a pooled version's by less than the
    /// replacement raise: replace with higher fees.
    Underpriced,
    /// The signer cannot pay.
    InsufficientFunds,
    /// The call reverts.
    Reverted,
    /// Anything else: refused for good.
    Other,
}

/// `execution reverted` with the revert data (geth and every node after it).
const CODE_REVERTED: i64 = 3;
/// The execution-apis codes (`eth_simulateV1`, and nodes that adopted them for `eth_sendRawTransaction`).
const CODE_NONCE_TOO_LOW: i64 = -38010;
const CODE_NONCE_TOO_HIGH: i64 = -38011;
const CODE_BASE_FEE_TOO_LOW: i64 = -38012;
const CODE_INSUFFICIENT_FUNDS: i64 = -38014;

/// Texts by meaning, lower-cased, matched anywhere in the lower-cased message (nodes add details around them:
/// `nonce too low: next nonce 5, tx nonce 4`, `err: nonce too high: address 0x…`). The order of the classes is the
/// order they are tried in.
const TEXTS: &[(NodeError, &[&str])] = &[
    (
        NodeError::AlreadyKnown,
        &[
            "already known",     // geth, erigon, reth
            "known transaction", // besu ("Known transaction"), klaytn
            // anvil ("transaction already imported"), openethereum ("Transaction with the same hash was already imported.")
            "already imported",
            "alreadyknown",        // nethermind ("AlreadyKnown")
            "ownnoncealreadyused", // nethermind: our own version with this nonce waits in its pool
        ],
    ),
    (
        NodeError::NonceTooLow,
        &[
            "nonce too low",             // geth, erigon, reth, anvil, besu ("Nonce too low"), nethermind (since 1.31)
            "nonce is too low",          // openethereum ("Transaction nonce is too low")
            "oldnonce",                  // nethermind ("OldNonce, Current nonce: …")
            "invalid nonce",             // besu (-32006)
            "invalid transaction nonce", // arbitrum
        ],
    ),
    (
        NodeError::NonceTooHigh,
        &[
            "nonce too high", // geth, erigon, reth, anvil, besu
            "noncegap",       // nethermind ("NonceGap, Future nonce. Expected nonce: …")
        ],
    ),
    (
        NodeError::Underpriced,
        &[
            "underpriced",              // geth "transaction underpriced", "replacement transaction underpriced"
            "fee too low",              // "replacement fee too low"
            "feetoolow",                // nethermind ("FeeTooLow", "FeeTooLowToCompete")
            "less than block base fee", // geth, reth, anvil: "max fee per gas less than block base fee"
            "below configured minimum gas price", // besu
            "gas price too low",        // arbitrum
        ],
    ),
    (
        NodeError::InsufficientFunds,
        &[
            "insufficient funds",                   // geth, erigon, reth, anvil
            "insufficientfunds",                    // nethermind ("InsufficientFunds, Account balance: …")
            "upfront cost exceeds account balance", // besu
        ],
    ),
    (
        NodeError::Reverted,
        &[
            "execution reverted", // geth, reth, anvil, nethermind, erigon
            "revert",             // besu "Execution reverted", "reverted" without data
        ],
    ),
];

/// Classifies a node's JSON-RPC error answer (`code`, `message`) to a call or to `eth_sendRawTransaction`: by the
/// code where the node gives a specific one, else by the message. A message the table does not know is
/// [`NodeError::Other`]; the caller still treats an answer that carries revert data as a revert.
pub(crate) fn classify_node_error(code: i64, message: &str) -> NodeError {
    match code {
        CODE_NONCE_TOO_LOW => return NodeError::NonceTooLow,
        CODE_NONCE_TOO_HIGH => return NodeError::NonceTooHigh,
        CODE_BASE_FEE_TOO_LOW => return NodeError::Underpriced,
        CODE_INSUFFICIENT_FUNDS => return NodeError::InsufficientFunds,
        _ => {}
    }
    let m = message.to_lowercase();
    // Pool answers first: a node may say "nonce too low" under any code.
    for (class, texts) in TEXTS {
        if texts.iter().any(|t| m.contains(t)) {
            return *class;
        }
    }
    if code == CODE_REVERTED {
        return NodeError::Reverted;
    }
    NodeError::Other
}

#[cfg(test)]
mod tests {
    use super::NodeError::*;
    use super::*;

    /// Real answers, by node (the code each sends with it).
    #[test]
    fn real_node_answers_are_classified() {
        let cases: &[(&str, i64, &str, NodeError)] = &[
            // geth (core/txpool errors, code -32000)
            ("geth", -32000, "already known", AlreadyKnown),
            ("geth", -32000, "nonce too low", NonceTooLow),
            ("geth", -32000, "err: nonce too low: address 0xabc, tx: 4 state: 5 (supplied gas 21000)", NonceTooLow),
            ("geth", -32000, "err: nonce too high: address 0xabc, tx: 9 state: 5 (supplied gas 21000)", NonceTooHigh),
            ("geth", -32000, "replacement transaction underpriced", Underpriced),
            ("geth", -32000, "transaction underpriced", Underpriced),
            ("geth", -32000, "max fee per gas less than block base fee", Underpriced),
            ("geth", -32000, "insufficient funds for gas * price + value", InsufficientFunds),
            ("geth", 3, "execution reverted", Reverted),
            ("geth", 3, "execution reverted: Ownable: caller is not the owner", Reverted),
            ("geth", -32000, "intrinsic gas too low", Other),
            ("geth", -32000, "exceeds block gas limit", Other),
            ("geth", -32000, "tx fee (1.10 ether) exceeds the configured cap (1.00 ether)", Other),
            // erigon
            ("erigon", -32000, "already known", AlreadyKnown),
            ("erigon", -32000, "nonce too low", NonceTooLow),
            ("erigon", -32000, "insufficient funds for transfer", InsufficientFunds),
            // reth
            ("reth", -32000, "nonce too low: next nonce 5, tx nonce 4", NonceTooLow),
            ("reth", -32003, "insufficient funds for gas * price + value: have 0 want 21000", InsufficientFunds),
            ("reth", -32000, "replacement transaction underpriced", Underpriced),
            ("reth", 3, "execution reverted", Reverted),
            // anvil (foundry)
            ("anvil", -32003, "transaction already imported", AlreadyKnown),
            ("openethereum", -32010, "Transaction with the same hash was already imported.", AlreadyKnown),
            ("anvil", -32003, "nonce too low", NonceTooLow),
            ("anvil", -32003, "nonce too high", NonceTooHigh),
            ("anvil", -32003, "max fee per gas less than block base fee", Underpriced),
            ("anvil", -32003, "Insufficient funds for gas * price + value", InsufficientFunds),
            ("anvil", 3, "execution reverted: custom error 0x69616b87", Reverted),
            ("anvil", -32603, "transaction type not supported", Other),
            // nethermind (AcceptTxResult, code -32010; and the geth-compatible texts since 1.31)
            ("nethermind", -32010, "AlreadyKnown", AlreadyKnown),
            ("nethermind", -32010, "OwnNonceAlreadyUsed", AlreadyKnown),
            ("nethermind", -32010, "OldNonce, Current nonce: 5, nonce of rejected tx: 4", NonceTooLow),
            ("nethermind", -32010, "NonceGap, Future nonce. Expected nonce: 28486", NonceTooHigh),
            ("nethermind", -32010, "FeeTooLowToCompete", Underpriced),
            (
                "nethermind",
                -32010,
                "FeeTooLow, MaxFeePerGas too low. MaxFeePerGas: 1, BaseFee: 7, MaxPriorityFeePerGas:1, Block number: 9",
                Underpriced,
            ),
            ("nethermind", -32010, "InsufficientFunds, Account balance: 0, cumulative cost: 21000", InsufficientFunds),
            ("nethermind", -32000, "wrong transaction nonce", Other),
            // besu (JsonRpcError)
            ("besu", -32000, "Known transaction", AlreadyKnown),
            ("besu", -32001, "Nonce too low", NonceTooLow),
            ("besu", -32006, "Invalid nonce", NonceTooLow),
            ("besu", -32000, "Replacement transaction underpriced", Underpriced),
            ("besu", -32009, "Gas price below configured minimum gas price", Underpriced),
            ("besu", -32004, "Upfront cost exceeds account balance", InsufficientFunds),
            ("besu", -32000, "Execution reverted", Reverted),
            ("besu", -32000, "Transaction fee cap exceeded", Other),
            // openethereum / arbitrum
            ("openethereum", -32010, "Transaction nonce is too low. Try incrementing the nonce.", NonceTooLow),
            ("arbitrum", -32000, "invalid transaction nonce", NonceTooLow),
            ("arbitrum", -32000, "gas price too low", Underpriced),
        ];
        for (node, code, message, want) in cases {
            assert_eq!(classify_node_error(*code, message), *want, "{node} ({code}): {message}");
        }
    }

    #[test]
    fn specific_codes_decide_without_the_message() {
        assert_eq!(classify_node_error(-38010, "Transactions nonce is too low"), NonceTooLow);
        assert_eq!(classify_node_error(-38010, ""), NonceTooLow);
        assert_eq!(classify_node_error(-38011, ""), NonceTooHigh);
        assert_eq!(classify_node_error(-38012, ""), Underpriced);
        assert_eq!(classify_node_error(-38014, ""), InsufficientFunds);
        // Code 3 is a revert whatever the text, unless the text is a pool answer.
        assert_eq!(classify_node_error(3, "out of gas"), Reverted);
        assert_eq!(classify_node_error(3, "nonce too low"), NonceTooLow);
        // The generic code says nothing by itself.
        assert_eq!(classify_node_error(-32000, "something else"), Other);
        assert_eq!(classify_node_error(-32000, ""), Other);
    }
}
