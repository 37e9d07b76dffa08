// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {AggregatorV3Interface} from "@chainlink/contracts/src/v0.8/shared/interfaces/AggregatorV3Interface.sol";

/// @title ChainlinkRounds
/// @notice Verifies that a Chainlink round was the one in effect at a given timestamp, across phase changes.
/// @dev A proxy round id is `(phaseId << 64) | aggregatorRoundId`. The round in effect at `t` is the round `r` whose
/// time is `<= t` while the round that follows it in proxy order has a time `> t`, or `r` is the feed's latest round
/// and `t` is already in the past. The follower of `r` is `r + 1` when that round exists; otherwise (the last round
/// of a phase) it is the first round of the next phase that has data, passed as a hint and verified here. When any
/// later phase's first round is already in effect at `t` (empty phases in between included), that later phase wins,
/// so exactly one proof exists for any timestamp on a feed whose rounds are time-ordered within each phase.
/// Price feeds are timed by `updatedAt`; L2 sequencer-uptime feeds by `startedAt` (the time the status changed;
/// their `updatedAt` moves when an unchanged status is re-reported).
library ChainlinkRounds {
    uint256 internal constant PHASE_OFFSET = 64;

    /// @notice A claim that `roundId` was in effect at some timestamp.
    /// @param roundId the proxy round id in effect.
    /// @param nextRoundId the round that follows it (`roundId + 1`, or the first round of a later phase), or 0 when
    /// `roundId` is the feed's latest round.
    struct RoundProof {
        uint80 roundId;
        uint80 nextRoundId;
    }

    /// @notice The fields of a round that settlement uses.
    struct RoundData {
        uint80 roundId;
        int256 answer;
        uint256 startedAt;
        uint256 updatedAt;
    }

    /// @notice The proof names a round the feed does not have.
    error ProofRoundMissing(uint80 roundId);
    /// @notice The proven round started after the timestamp.
    error ProofRoundAfterTimestamp(uint80 roundId, uint256 roundTime, uint256 timestamp);
    /// @notice The successor round was already in effect at the timestamp.
    error ProofSuccessorNotAfterTimestamp(uint80 nextRoundId, uint256 nextTime, uint256 timestamp);
    /// @notice The proof says `roundId` is the latest round, but the feed has a later one.
    error ProofNotLatest(uint80 roundId, uint80 latestRoundId);
    /// @notice `nextRoundId` is not the round that follows `roundId`.
    error ProofBadSuccessor(uint80 roundId, uint80 nextRoundId);
    /// @notice A later phase's first round was already in effect at the timestamp.
    error ProofLaterPhaseInEffect(uint80 roundId, uint80 laterPhaseRoundId);
    /// @notice The latest round can only be proven for a timestamp strictly in the past.
    error ProofTimestampNotPast(uint256 timestamp);

    /// @notice The first round id of a phase.
    function firstRoundOfPhase(uint256 phaseId) internal pure returns (uint80) {
        return uint80((phaseId << PHASE_OFFSET) | 1);
    }

    /// @notice The phase of a proxy round id.
    function phaseOf(uint80 roundId) internal pure returns (uint256) {
        return uint256(roundId) >> PHASE_OFFSET;
    }

    /// @notice Reads a round; `ok` is false when the feed has no data for it (reverting or zero `updatedAt`).
    function tryGetRound(AggregatorV3Interface feed, uint80 id) internal view returns (bool ok, RoundData memory d) {
        try feed.getRoundData(id) returns (uint80 rid, int256 answer, uint256 startedAt, uint256 updatedAt, uint80) {
            if (rid != id || updatedAt == 0) return (false, d);
            d = RoundData({roundId: rid, answer: answer, startedAt: startedAt, updatedAt: updatedAt});
            ok = true;
        } catch {
            ok = false;
        }
    }

    function _time(RoundData memory d, bool byStartedAt) private pure returns (uint256) {
        return byStartedAt ? d.startedAt : d.updatedAt;
    }

    /// @notice Verifies `proof` for timestamp `t` and returns the round in effect; reverts when the proof is wrong.
    /// @param feed the Chainlink proxy (or aggregator) to read.
    /// @param t the timestamp the round must be in effect at.
    /// @param proof the claimed round and its successor.
    /// @param byStartedAt time rounds by `startedAt` (sequencer-uptime feeds) instead of `updatedAt`.
    function verifyAt(AggregatorV3Interface feed, uint256 t, RoundProof memory proof, bool byStartedAt)
        internal
        view
        returns (RoundData memory r)
    {
        bool ok;
        (ok, r) = tryGetRound(feed, proof.roundId);
        if (!ok) revert ProofRoundMissing(proof.roundId);
        uint256 rt = _time(r, byStartedAt);
        if (rt > t) revert ProofRoundAfterTimestamp(proof.roundId, rt, t);

        uint256 phase = phaseOf(proof.roundId);
        if (proof.nextRoundId == 0) {
            (uint80 latest,,,,) = feed.latestRoundData();
            if (latest != proof.roundId) revert ProofNotLatest(proof.roundId, latest);
            // Any later round will carry a time >= the current block's, so `t` must already be behind us.
            if (block.timestamp <= t) revert ProofTimestampNotPast(t);
            return r;
        }

        uint80 next = proof.nextRoundId;
        bool samePhase = next == proof.roundId + 1;
        if (!samePhase) {
            uint256 nextPhase = phaseOf(next);
            // casting to 'uint64' is intended: it takes the aggregator round id out of the proxy round id.
            // forge-lint: disable-next-line(unsafe-typecast)
            if (nextPhase <= phase || uint64(next) != 1) revert ProofBadSuccessor(proof.roundId, next);
            (bool hasFollower,) = tryGetRound(feed, proof.roundId + 1);
            if (hasFollower) revert ProofBadSuccessor(proof.roundId, next);
            for (uint256 q = phase + 1; q < nextPhase; ++q) {
                (bool phaseHasData,) = tryGetRound(feed, firstRoundOfPhase(q));
                if (phaseHasData) revert ProofBadSuccessor(proof.roundId, next);
            }
        }
        RoundData memory n;
        (ok, n) = tryGetRound(feed, next);
        if (!ok) revert ProofRoundMissing(next);
        uint256 nt = _time(n, byStartedAt);
        if (nt <= t) revert ProofSuccessorNotAfterTimestamp(next, nt, t);

        // The latest phase whose first round is already in effect at `t` holds the answer, so no phase after the
        // proven one may have started by `t`. Phases can be empty, so every later phase up to the feed's current one
        // is checked (for a cross-phase successor, the phases up to it were just shown empty and it starts after `t`).
        _requireNoLaterPhaseBy(feed, samePhase ? phase + 1 : phaseOf(next) + 1, t, byStartedAt, proof.roundId);
    }

    /// @dev Reverts when the first round of any phase from `fromPhase` to the feed's current phase is in effect at `t`.
    function _requireNoLaterPhaseBy(
        AggregatorV3Interface feed,
        uint256 fromPhase,
        uint256 t,
        bool byStartedAt,
        uint80 roundId
    ) private view {
        (uint80 latestId,,,,) = feed.latestRoundData();
        uint256 top = phaseOf(latestId);
        for (uint256 q = fromPhase; q <= top; ++q) {
            uint80 laterFirst = firstRoundOfPhase(q);
            (bool laterOk, RoundData memory l) = tryGetRound(feed, laterFirst);
            if (laterOk && _time(l, byStartedAt) <= t) revert ProofLaterPhaseInEffect(roundId, laterFirst);
        }
    }
}
