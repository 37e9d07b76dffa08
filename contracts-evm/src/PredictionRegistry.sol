// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {IKronosMarket} from "./interfaces/IKronosMarket.sol";
import {IPredictionRegistry} from "./interfaces/IPredictionRegistry.sol";
import {SafeCast} from "@openzeppelin/contracts/utils/math/SafeCast.sol";

/// @title PredictionRegistry
/// @notice Anyone may publish up/down forecasts on KronosMarket rounds by commit-reveal and be scored on-chain.
/// @dev Holds no funds and has no owner. The market supplies round times and final outcomes.
contract PredictionRegistry is IPredictionRegistry {
    using SafeCast for uint256;

    /// @notice Probability scale: basis points.
    uint256 public constant PROB_SCALE = 10_000;
    /// @notice The worst Brier term, `PROB_SCALE ** 2`, charged to an expired commitment.
    uint256 public constant MAX_BRIER = PROB_SCALE * PROB_SCALE;
    /// @notice The most commitments a publisher may have neither revealed nor expired (bounds `trackRecord`).
    uint256 public constant MAX_OPEN = 1024;
    /// @notice The most past-deadline commitments one commit expires when it finds its publisher's list full.
    uint256 public constant MAX_FOLD = 64;

    /// @notice The market whose rounds are forecast.
    IKronosMarket public immutable market;
    /// @notice How long after a round's settle deadline a publisher may still reveal.
    uint256 public immutable revealWindow;

    mapping(address publisher => mapping(uint256 marketId => mapping(uint256 epoch => Commitment))) private _commits;
    mapping(address publisher => TrackRecord) private _records;

    /// @dev A commitment neither revealed nor expired, with its reveal deadline.
    struct Open {
        uint64 marketId;
        uint152 epoch;
        uint40 deadline;
    }

    /// @dev Each publisher's open commitments; `trackRecord` counts those past their deadline as expired.
    mapping(address publisher => Open[]) private _open;

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
        IKronosMarket.MarketConfig memory m = market.getMarket(marketId);
        // Commitments are open with the round's betting: from its start to the market's cutoff before the lock.
        uint256 startAt = m.genesis + epoch * m.interval;
        if (block.timestamp < startAt) revert CommitTooEarly(marketId, epoch, startAt);
        uint256 lockAt = startAt + m.interval;
        uint256 closesAt = lockAt - m.betCutoff;
        if (block.timestamp >= closesAt) revert CommitTooLate(marketId, epoch, closesAt);
        Commitment storage c = _commits[msg.sender][marketId][epoch];
        if (c.status == CommitStatus.None) {
            Open[] storage open = _open[msg.sender];
            if (open.length >= MAX_OPEN) {
                // A full list expires its past-deadline entries (they can no longer be revealed) to make room.
                _foldExpired(msg.sender, open);
                if (open.length >= MAX_OPEN) revert TooManyOpen(msg.sender, MAX_OPEN);
            }
            c.status = CommitStatus.Committed;
            // casting is safe: the position is below MAX_OPEN.
            // forge-lint: disable-next-line(unsafe-typecast)
            c.openIndex = uint32(open.length);
            open.push(
                Open({
                    marketId: marketId.toUint64(),
                    epoch: epoch.toUint152(),
                    deadline: (lockAt + m.interval + m.settleWindow + revealWindow).toUint40()
                })
            );
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
        _close(msg.sender, c);
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
        _expire(publisher, c, marketId, epoch);
        _records[publisher] = _withExpired(_records[publisher], 1);
    }

    /// @dev Expires up to `MAX_FOLD` of `publisher`'s open commitments past their reveal deadline, from the end of
    /// the list (an entry moved into a freed place has already been looked at), and folds them into the record.
    function _foldExpired(address publisher, Open[] storage open) private {
        uint256 n;
        for (uint256 i = open.length; i != 0 && n < MAX_FOLD; --i) {
            Open memory o = open[i - 1];
            if (block.timestamp <= o.deadline) continue;
            _expire(publisher, _commits[publisher][o.marketId][o.epoch], o.marketId, o.epoch);
            ++n;
        }
        _records[publisher] = _withExpired(_records[publisher], n);
    }

    function _expire(address publisher, Commitment storage c, uint256 marketId, uint256 epoch) private {
        c.status = CommitStatus.Expired;
        _close(publisher, c);
        emit Expired(publisher, marketId, epoch);
    }

    /// @dev Removes a commitment from its publisher's open list (the last entry takes its place).
    function _close(address publisher, Commitment storage c) private {
        Open[] storage open = _open[publisher];
        uint256 i = c.openIndex;
        uint256 last = open.length - 1;
        if (i != last) {
            Open memory moved = open[last];
            open[i] = moved;
            // casting is safe: i < MAX_OPEN.
            // forge-lint: disable-next-line(unsafe-typecast)
            _commits[publisher][moved.marketId][moved.epoch].openIndex = uint32(i);
        }
        open.pop();
        c.openIndex = 0;
    }

    /// @dev `rec` with `n` more expired commitments: each a miss with the worst Brier term.
    function _withExpired(TrackRecord memory rec, uint256 n) private pure returns (TrackRecord memory) {
        // casting is safe: n <= MAX_OPEN and MAX_BRIER = 1e8.
        // forge-lint: disable-next-line(unsafe-typecast)
        rec.misses += uint64(n);
        // forge-lint: disable-next-line(unsafe-typecast)
        rec.expired += uint64(n);
        // forge-lint: disable-next-line(unsafe-typecast)
        rec.brierSum += uint192(n * MAX_BRIER);
        return rec;
    }

    /// @inheritdoc IPredictionRegistry
    function revealDeadline(uint256 marketId, uint256 epoch) public view returns (uint256) {
        IKronosMarket.MarketConfig memory m = market.getMarket(marketId);
        return m.genesis + (epoch + 2) * m.interval + m.settleWindow + revealWindow;
    }

    /// @inheritdoc IPredictionRegistry
    function trackRecord(address publisher) external view returns (TrackRecord memory) {
        // Commitments past their reveal deadline count as expired at once, whether or not `expire` was called.
        Open[] storage open = _open[publisher];
        uint256 n;
        for (uint256 i; i < open.length; ++i) {
            if (block.timestamp > open[i].deadline) ++n;
        }
        return _withExpired(_records[publisher], n);
    }

    /// @inheritdoc IPredictionRegistry
    function openCommitments(address publisher) external view returns (uint256) {
        return _open[publisher].length;
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
