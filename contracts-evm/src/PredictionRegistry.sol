// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {IKronosMarket} from "./interfaces/IKronosMarket.sol";
import {IPredictionRegistry} from "./interfaces/IPredictionRegistry.sol";

/// @title PredictionRegistry
/// @notice Anyone may publish up/down forecasts on KronosMarket rounds by commit-reveal and be scored on-chain.
/// @dev Holds no funds and has no owner. The market supplies round times and final outcomes.
contract PredictionRegistry is IPredictionRegistry {
    /// @notice Probability scale: basis points.
    uint256 public constant PROB_SCALE = 10_000;
    /// @notice The worst Brier term, `PROB_SCALE ** 2`, charged to an expired commitment.
    uint256 public constant MAX_BRIER = PROB_SCALE * PROB_SCALE;

    /// @notice The market whose rounds are forecast.
    IKronosMarket public immutable market;
    /// @notice How long after a round's settle deadline a publisher may still reveal.
    uint256 public immutable revealWindow;

    mapping(address publisher => mapping(uint256 marketId => mapping(uint256 epoch => Commitment))) private _commits;
    mapping(address publisher => TrackRecord) private _records;

    /// @param market_ the KronosMarket contract.
    /// @param revealWindow_ seconds after a round's settle deadline during which reveals stay open.
    constructor(IKronosMarket market_, uint256 revealWindow_) {
        market = market_;
        revealWindow = revealWindow_;
    }

    /// @inheritdoc IPredictionRegistry
    function commitmentHash(
        address publisher,
        uint256 marketId,
        uint256 epoch,
        bool up,
        uint16 probabilityUpBps,
        bytes32 salt
    ) public view returns (bytes32) {
        return keccak256(
            abi.encode(block.chainid, address(this), publisher, marketId, epoch, up, probabilityUpBps, salt)
        );
    }

    /// @inheritdoc IPredictionRegistry
    function commit(uint256 marketId, uint256 epoch, bytes32 commitment) external {
        (, uint256 lockAt,) = market.roundTimes(marketId, epoch);
        if (block.timestamp >= lockAt) revert CommitTooLate(marketId, epoch, lockAt);
        Commitment storage c = _commits[msg.sender][marketId][epoch];
        if (c.status == CommitStatus.None) {
            c.status = CommitStatus.Committed;
            ++_records[msg.sender].committed;
        }
        c.hash = commitment;
        emit Committed(msg.sender, marketId, epoch, commitment);
    }

    /// @inheritdoc IPredictionRegistry
    function reveal(uint256 marketId, uint256 epoch, bool up, uint16 probabilityUpBps, bytes32 salt) external {
        Commitment storage c = _commits[msg.sender][marketId][epoch];
        if (c.status == CommitStatus.None) revert NoCommitment(msg.sender, marketId, epoch);
        if (c.status != CommitStatus.Committed) revert AlreadyFinal(msg.sender, marketId, epoch, c.status);
        uint256 deadline = revealDeadline(marketId, epoch);
        if (block.timestamp > deadline) revert RevealWindowClosed(marketId, epoch, deadline);
        bytes32 computed = commitmentHash(msg.sender, marketId, epoch, up, probabilityUpBps, salt);
        if (computed != c.hash) revert CommitmentMismatch(c.hash, computed);
        if (
            probabilityUpBps > PROB_SCALE || (up && probabilityUpBps < PROB_SCALE / 2)
                || (!up && probabilityUpBps > PROB_SCALE / 2)
        ) {
            revert InconsistentForecast(up, probabilityUpBps);
        }
        (bool isFinal, IKronosMarket.Outcome outcome) = market.roundResult(marketId, epoch);
        if (!isFinal) revert OutcomeNotFinal(marketId, epoch);

        c.status = CommitStatus.Revealed;
        TrackRecord storage rec = _records[msg.sender];
        bool hit;
        uint256 brier;
        if (outcome == IKronosMarket.Outcome.Up || outcome == IKronosMarket.Outcome.Down) {
            bool wentUp = outcome == IKronosMarket.Outcome.Up;
            hit = up == wentUp;
            uint256 target = wentUp ? PROB_SCALE : 0;
            uint256 diff = probabilityUpBps > target ? probabilityUpBps - target : target - probabilityUpBps;
            brier = diff * diff;
            if (hit) ++rec.hits;
            else ++rec.misses;
            // casting to 'uint192' is safe because brier <= MAX_BRIER = 1e8.
            // forge-lint: disable-next-line(unsafe-typecast)
            rec.brierSum += uint192(brier);
        } else {
            ++rec.voided;
        }
        emit Revealed(msg.sender, marketId, epoch, up, probabilityUpBps, uint8(outcome), hit, brier);
    }

    /// @inheritdoc IPredictionRegistry
    function expire(address publisher, uint256 marketId, uint256 epoch) external {
        Commitment storage c = _commits[publisher][marketId][epoch];
        if (c.status == CommitStatus.None) revert NoCommitment(publisher, marketId, epoch);
        if (c.status != CommitStatus.Committed) revert AlreadyFinal(publisher, marketId, epoch, c.status);
        uint256 deadline = revealDeadline(marketId, epoch);
        if (block.timestamp <= deadline) revert RevealWindowOpen(marketId, epoch, deadline);
        c.status = CommitStatus.Expired;
        TrackRecord storage rec = _records[publisher];
        ++rec.misses;
        ++rec.expired;
        // casting to 'uint192' is safe because MAX_BRIER = 1e8.
        // forge-lint: disable-next-line(unsafe-typecast)
        rec.brierSum += uint192(MAX_BRIER);
        emit Expired(publisher, marketId, epoch);
    }

    /// @inheritdoc IPredictionRegistry
    function revealDeadline(uint256 marketId, uint256 epoch) public view returns (uint256) {
        (,, uint256 closeAt) = market.roundTimes(marketId, epoch);
        return closeAt + market.getMarket(marketId).settleWindow + revealWindow;
    }

    /// @inheritdoc IPredictionRegistry
    function trackRecord(address publisher) external view returns (TrackRecord memory) {
        return _records[publisher];
    }

    /// @inheritdoc IPredictionRegistry
    function getCommitment(address publisher, uint256 marketId, uint256 epoch)
        external
        view
        returns (Commitment memory)
    {
        return _commits[publisher][marketId][epoch];
    }
}
