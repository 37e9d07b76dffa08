// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

/// @title IPredictionRegistry
/// @notice Commit-reveal registry of up/down forecasts on KronosMarket rounds, scored on-chain against the outcome.
/// @dev A publisher commits `commitmentHash(...)` while the round takes bets and reveals after the round's outcome is
/// final. Each reveal is scored: a hit when the predicted direction matches, and a Brier term `(p - o)^2` with `p`
/// the stated probability of Up in basis points and `o` 1 for Up, 0 for Down. Rounds without a usable outcome (tie,
/// unusable price, expired) void the forecast. A commitment left unrevealed past the reveal window counts as a miss
/// with the worst Brier term.
interface IPredictionRegistry {
    /// @notice Lifecycle of one commitment.
    enum CommitStatus {
        None,
        Committed,
        Revealed,
        Expired
    }

    /// @notice One publisher's running score.
    /// @param committed forecasts committed.
    /// @param hits scored forecasts whose direction matched the outcome.
    /// @param misses scored forecasts whose direction did not match, plus expired commitments.
    /// @param voided revealed forecasts on rounds without an up/down outcome.
    /// @param expired commitments never revealed in time (also counted in misses).
    /// @param brierSum sum of Brier terms over scored forecasts, in units of 1e-8 (basis points squared).
    struct TrackRecord {
        uint64 committed;
        uint64 hits;
        uint64 misses;
        uint64 voided;
        uint64 expired;
        uint192 brierSum;
    }

    /// @notice A stored commitment.
    /// @param openIndex the commitment's position in its publisher's open list while it is `Committed`.
    struct Commitment {
        bytes32 hash;
        CommitStatus status;
        uint32 openIndex;
    }

    event Committed(address indexed publisher, uint256 indexed marketId, uint256 indexed epoch, bytes32 commitment);
    event Revealed(
        address indexed publisher,
        uint256 indexed marketId,
        uint256 indexed epoch,
        bool up,
        uint16 probabilityUpBps,
        uint8 outcome,
        bool hit,
        uint256 brier
    );
    event Expired(address indexed publisher, uint256 indexed marketId, uint256 indexed epoch);

    error CommitTooEarly(uint256 marketId, uint256 epoch, uint256 opensAt);
    error CommitTooLate(uint256 marketId, uint256 epoch, uint256 closesAt);
    error AlreadyFinal(address publisher, uint256 marketId, uint256 epoch, CommitStatus status);
    error NoCommitment(address publisher, uint256 marketId, uint256 epoch);
    error CommitmentMismatch(bytes32 expected, bytes32 computed);
    error InconsistentForecast(bool up, uint16 probabilityUpBps);
    error OutcomeNotFinal(uint256 marketId, uint256 epoch);
    error RevealWindowOpen(uint256 marketId, uint256 epoch, uint256 expiresAt);
    error RevealWindowClosed(uint256 marketId, uint256 epoch, uint256 expiredAt);
    error TooManyOpen(address publisher, uint256 maxOpen);

    /// @notice The commitment a publisher must submit for a forecast.
    /// @param publisher the committing address (binds the forecast to it, so nobody can copy a commitment).
    /// @param marketId the KronosMarket market.
    /// @param epoch the round.
    /// @param up the predicted direction; must agree with the probability (Up needs >= 5000, Down <= 5000).
    /// @param probabilityUpBps the probability of Up, in basis points (0..10000).
    /// @param salt a secret 32-byte value chosen by the publisher.
    function commitmentHash(
        address publisher,
        uint256 marketId,
        uint256 epoch,
        bool up,
        uint16 probabilityUpBps,
        bytes32 salt
    ) external view returns (bytes32);

    /// @notice Commits a forecast for a round whose betting is open: from the round's start `T(epoch)`
    /// (`CommitTooEarly` before) until betting closes, the market's `betCutoff` before the lock (`CommitTooLate`
    /// from then); it may be replaced until then. When the caller already has `MAX_OPEN` open commitments, up to
    /// `MAX_FOLD` of those past their reveal deadline are expired first (as `expire` does) to make room.
    function commit(uint256 marketId, uint256 epoch, bytes32 commitment) external;

    /// @notice Reveals the caller's forecast once the round's outcome is final and scores it.
    function reveal(uint256 marketId, uint256 epoch, bool up, uint16 probabilityUpBps, bytes32 salt) external;

    /// @notice Marks a commitment never revealed within the window as a miss; anyone may call.
    function expire(address publisher, uint256 marketId, uint256 epoch) external;

    /// @notice The time after which an unrevealed commitment for the round can be expired.
    function revealDeadline(uint256 marketId, uint256 epoch) external view returns (uint256);

    /// @notice A publisher's track record. Commitments past their reveal deadline count as expired (a miss with
    /// the worst Brier term) whether or not anyone called `expire`.
    function trackRecord(address publisher) external view returns (TrackRecord memory);

    /// @notice How many of a publisher's commitments are neither revealed nor expired (by `expire`, or by a commit
    /// that found the list full). At most `MAX_OPEN`: a new commit beyond that reverts `TooManyOpen` unless some of
    /// them are past their reveal deadline.
    function openCommitments(address publisher) external view returns (uint256);

    /// @notice A publisher's commitment for a round.
    function getCommitment(address publisher, uint256 marketId, uint256 epoch) external view returns (Commitment memory);
}
