// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {Ownable, Ownable2Step} from "@openzeppelin/contracts/access/Ownable2Step.sol";
import {Pausable} from "@openzeppelin/contracts/utils/Pausable.sol";
import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {Address} from "@openzeppelin/contracts/utils/Address.sol";
import {SafeCast} from "@openzeppelin/contracts/utils/math/SafeCast.sol";
import {AggregatorV3Interface} from "@chainlink/contracts/src/v0.8/shared/interfaces/AggregatorV3Interface.sol";

import {IKronosMarket} from "./interfaces/IKronosMarket.sol";
import {ChainlinkRounds} from "./libraries/ChainlinkRounds.sol";

/// @title KronosMarket
/// @notice Parimutuel up/down prediction rounds on Chainlink prices. Many markets live in one contract; each has its
/// own feed, clock, stake (native coin or one ERC-20) and parameters. Settlement is permissionless and provable: the
/// caller names the Chainlink rounds in effect at the exact lock and close timestamps and the contract verifies them.
/// @dev Money moves only by pull: winners and refunds are claimed, fees withdrawn, settler rewards claimed. Pausing
/// stops new bets only; execution, claims and refunds keep working. Parameter changes apply to rounds that have not
/// started. A round that nobody settles within its market's settle window becomes refundable: nothing ever waits on
/// an admin.
contract KronosMarket is IKronosMarket, Ownable2Step, Pausable, ReentrancyGuardTransient {
    using SafeERC20 for IERC20;
    using SafeCast for uint256;

    /// @notice Basis-point denominator.
    uint256 internal constant BPS = 10_000;
    /// @notice Treasury fee cap: 10% of a round's pool.
    uint256 internal constant MAX_FEE_BPS = 1000;
    /// @notice Settler reward cap: half of the treasury fee.
    uint256 internal constant MAX_SETTLER_REWARD_BPS = 5000;
    /// @notice Shortest round interval.
    uint32 internal constant MIN_INTERVAL = 60;
    /// @notice Longest round interval.
    uint32 internal constant MAX_INTERVAL = 7 days;
    /// @notice Longest settle window.
    uint32 internal constant MAX_SETTLE_WINDOW = 30 days;
    /// @notice Longest sequencer grace period.
    uint32 internal constant MAX_SEQUENCER_GRACE = 1 days;

    uint256 private _marketCount;
    mapping(uint256 marketId => MarketConfig) private _markets;
    mapping(uint256 marketId => MarketParams) private _currentParams;
    mapping(uint256 marketId => MarketParams) private _pendingParams;
    mapping(uint256 marketId => mapping(uint256 index => Checkpoint)) private _checkpoints;
    mapping(uint256 marketId => mapping(uint256 epoch => Round)) private _rounds;
    mapping(uint256 marketId => mapping(uint256 epoch => mapping(address account => Bet))) private _bets;

    /// @notice Fees owed to the treasury, per stake token (address(0) is the native coin).
    mapping(address token => uint256) public treasuryBalance;
    /// @notice Settlement rewards owed to each settler, per stake token.
    mapping(address settler => mapping(address token => uint256)) public settlerRewards;

    /// @dev What the winners of a settled round have been paid so far, for the dust sweep.
    struct Paid {
        uint128 stake;
        uint128 amount;
    }

    mapping(uint256 marketId => mapping(uint256 epoch => Paid)) private _paid;

    /// @param initialOwner the owner (market creation, parameters, pause, treasury). Pass the same address on every
    /// chain to get the same CREATE2 address everywhere.
    constructor(address initialOwner) Ownable(initialOwner) {}

    // ---------------------------------------------------------------------------------------------------------
    // Admin
    // ---------------------------------------------------------------------------------------------------------

    /// @notice Creates a market; its id is the new `marketCount()`.
    /// @param a the market's feed, optional sequencer-uptime feed, stake token, clock, oracle limits and parameters.
    /// @return marketId the new market's id.
    function createMarket(CreateMarketArgs calldata a) external onlyOwner returns (uint256 marketId) {
        if (a.feed == address(0)) revert ZeroAddress();
        if (a.interval < MIN_INTERVAL || a.interval > MAX_INTERVAL) revert InvalidMarketArgs("interval");
        if (a.genesis < block.timestamp) revert InvalidMarketArgs("genesis");
        if (a.maxPriceAge == 0) revert InvalidMarketArgs("maxPriceAge");
        if (a.settleWindow > MAX_SETTLE_WINDOW) revert InvalidMarketArgs("settleWindow");
        if (a.sequencerGrace > MAX_SEQUENCER_GRACE) revert InvalidMarketArgs("sequencerGrace");
        // Betting closes before the lock, and stays open for at least half of each round: 0 < betCutoff <=
        // interval / 2 (betCutoff - 1 wraps around for 0).
        unchecked {
            if (a.betCutoff - 1 >= a.interval / 2) revert InvalidMarketArgs("betCutoff");
        }
        // Execution waits, and still leaves a whole interval to execute a round's close before it expires.
        if (a.executeDelay == 0 || uint256(a.executeDelay) + a.interval > a.settleWindow) {
            revert InvalidMarketArgs("executeDelay");
        }
        if (a.token != address(0) && a.token.code.length == 0) revert InvalidMarketArgs("token");
        _checkParams(a.feeBps, a.settlerRewardBps);
        uint8 decimals = AggregatorV3Interface(a.feed).decimals();

        marketId = ++_marketCount;
        // The three slots of MarketConfig, written whole (Solidity's packing of the struct; `paused` starts false).
        uint256 w0 = uint256(uint160(a.feed)) | (uint256(decimals) << 160) | (uint256(a.interval) << 168)
            | (uint256(a.genesis) << 200);
        uint256 w1 = uint256(uint160(a.sequencerFeed)) | (uint256(a.sequencerGrace) << 160)
            | (uint256(a.maxPriceAge) << 192) | (uint256(a.executeDelay) << 224);
        uint256 w2 = uint256(uint160(a.token)) | (uint256(a.settleWindow) << 160) | (uint256(a.betCutoff) << 192);
        MarketConfig storage m = _markets[marketId];
        assembly ("memory-safe") {
            sstore(m.slot, w0)
            sstore(add(m.slot, 1), w1)
            sstore(add(m.slot, 2), w2)
        }
        _setParams(
            _currentParams[marketId],
            MarketParams({minBet: a.minBet, feeBps: a.feeBps, settlerRewardBps: a.settlerRewardBps, fromEpoch: 0})
        );
        _emitCreated(marketId, a);
        emit MarketParamsScheduled(marketId, 0, a.minBet, a.feeBps, a.settlerRewardBps);
    }

    function _emitCreated(uint256 marketId, CreateMarketArgs calldata a) private {
        emit MarketCreated(
            marketId,
            a.feed,
            a.sequencerFeed,
            a.token,
            a.genesis,
            a.interval,
            a.maxPriceAge,
            a.settleWindow,
            a.betCutoff,
            a.executeDelay
        );
    }

    /// @notice Changes the minimum bet, fee and settler reward for rounds that have not started yet.
    /// @dev Before genesis the change applies from round 0; afterwards from the round after the one taking bets.
    function scheduleParams(uint256 marketId, uint128 minBet, uint16 feeBps, uint16 settlerRewardBps)
        external
        onlyOwner
    {
        MarketConfig storage m = _marketOf(marketId);
        _checkParams(feeBps, settlerRewardBps);
        MarketParams storage pending = _pendingParams[marketId];
        MarketParams storage target = _currentParams[marketId];
        uint64 fromEpoch;
        if (block.timestamp >= m.genesis) {
            uint256 nowEpoch = (block.timestamp - m.genesis) / m.interval;
            uint64 pendingFrom = pending.fromEpoch;
            // A pending change that already applies becomes the current one (one storage slot, copied whole).
            if (pendingFrom != 0 && pendingFrom <= nowEpoch) {
                assembly ("memory-safe") {
                    sstore(target.slot, sload(pending.slot))
                }
            }
            fromEpoch = (nowEpoch + 1).toUint64();
            target = pending;
        } else {
            delete _pendingParams[marketId];
        }
        MarketParams memory p =
            MarketParams({minBet: minBet, feeBps: feeBps, settlerRewardBps: settlerRewardBps, fromEpoch: fromEpoch});
        _setParams(target, p);
        emit MarketParamsScheduled(marketId, fromEpoch, minBet, feeBps, settlerRewardBps);
    }

    /// @notice Stops (or resumes) new bets in one market. Execution, claims and refunds are unaffected.
    function setMarketPaused(uint256 marketId, bool paused_) external onlyOwner {
        _marketOf(marketId).paused = paused_;
        emit MarketPaused(marketId, paused_);
    }

    /// @notice Stops new bets in every market. Execution, claims and refunds are unaffected.
    function pause() external onlyOwner {
        _pause();
    }

    /// @notice Resumes betting after `pause`.
    function unpause() external onlyOwner {
        _unpause();
    }

    /// @notice Disabled: without an owner the treasury's fees could never be withdrawn.
    function renounceOwnership() public pure override {
        revert RenounceDisabled();
    }

    /// @notice Sends collected fees of one stake token to `to`.
    function withdrawTreasury(address token, address to, uint256 amount) external onlyOwner nonReentrant {
        if (to == address(0)) revert ZeroAddress();
        uint256 available = treasuryBalance[token];
        if (amount > available) revert InsufficientTreasury(token, amount, available);
        treasuryBalance[token] = available - amount;
        emit TreasuryWithdrawn(token, to, amount);
        _pay(token, to, amount);
    }

    // ---------------------------------------------------------------------------------------------------------
    // Keeper path: checkpoints, locks, settlement
    // ---------------------------------------------------------------------------------------------------------

    /// @inheritdoc IKronosMarket
    function execute(
        uint256 marketId,
        uint256 index,
        ChainlinkRounds.RoundProof calldata price,
        ChainlinkRounds.RoundProof calldata sequencer
    ) external nonReentrant {
        MarketConfig storage m = _marketOf(marketId);
        uint256 t = _time(m, index);
        // The answer in effect at `t` may still change for a while: reports timed at their observation, sequencer
        // outages relayed late from L1, a new proxy phase. Execution waits the market's delay for them to land.
        if (block.timestamp < t + m.executeDelay) revert CheckpointNotDue(marketId, index, t + m.executeDelay);
        Checkpoint storage cp = _checkpoints[marketId][index];
        if (cp.recordedAt != 0) revert CheckpointAlreadyRecorded(marketId, index);

        (CheckpointStatus status, int128 answer, uint80 roundId) = _readPrice(m, t, price, sequencer);
        // The Checkpoint slot written whole: price | roundId << 128 | recordedAt << 208 | status << 248. The price
        // is never negative (unusable answers are recorded as 0), so its 128 bits are its value.
        // forge-lint: disable-next-line(unsafe-typecast)
        uint256 word = uint256(uint128(answer)) | (uint256(roundId) << 128) | (uint256(uint40(block.timestamp)) << 208)
            | (uint256(status) << 248);
        assembly ("memory-safe") {
            sstore(cp.slot, word)
        }
        emit CheckpointRecorded(marketId, index, t, roundId, answer, status);
        emit RoundStarted(marketId, index, t, t + m.interval, t + 2 * uint256(m.interval));

        if (index >= 1) {
            uint256 locking = index - 1;
            if (status == CheckpointStatus.Valid) {
                emit RoundLocked(marketId, locking, roundId, answer);
                // Catch-up out of order: the close checkpoint may already be there.
                if (_checkpoints[marketId][index + 1].recordedAt != 0) _finalize(marketId, m, locking);
            } else {
                _cancel(marketId, m, locking, CancelReason.LockPriceUnusable, Outcome.None);
            }
        }
        if (index >= 2) {
            uint256 closing = index - 2;
            Checkpoint storage lockCp = _checkpoints[marketId][index - 1];
            // Without its lock checkpoint the round is finalised when that one arrives; with an unusable one it was
            // already cancelled then.
            if (lockCp.recordedAt != 0 && lockCp.status == CheckpointStatus.Valid) _finalize(marketId, m, closing);
        }
    }

    function _readPrice(
        MarketConfig storage m,
        uint256 t,
        ChainlinkRounds.RoundProof calldata priceProof,
        ChainlinkRounds.RoundProof calldata seqProof
    ) private view returns (CheckpointStatus, int128, uint80) {
        ChainlinkRounds.RoundData memory r = ChainlinkRounds.verifyAt(
            AggregatorV3Interface(m.feed), t, priceProof, false
        );
        if (r.answer <= 0 || r.answer > type(int128).max) return (CheckpointStatus.BadAnswer, 0, r.roundId);
        int128 answer = int128(r.answer);
        if (m.sequencerFeed != address(0)) {
            ChainlinkRounds.RoundData memory s =
                ChainlinkRounds.verifyAt(AggregatorV3Interface(m.sequencerFeed), t, seqProof, true);
            if (s.answer != 0) return (CheckpointStatus.SequencerDown, answer, r.roundId);
            if (t - s.startedAt <= m.sequencerGrace) return (CheckpointStatus.SequencerGracePeriod, answer, r.roundId);
        }
        if (t - r.updatedAt > m.maxPriceAge) return (CheckpointStatus.Stale, answer, r.roundId);
        return (CheckpointStatus.Valid, answer, r.roundId);
    }

    /// @dev Both checkpoints of round `e` are recorded and its lock price is usable.
    function _finalize(uint256 marketId, MarketConfig storage m, uint256 e) private {
        if (block.timestamp > _time(m, e + 2) + m.settleWindow) {
            _cancel(marketId, m, e, CancelReason.Expired, Outcome.None);
            return;
        }
        Checkpoint storage lockCp = _checkpoints[marketId][e + 1];
        Checkpoint storage closeCp = _checkpoints[marketId][e + 2];
        if (closeCp.status != CheckpointStatus.Valid) {
            _cancel(marketId, m, e, CancelReason.ClosePriceUnusable, Outcome.None);
            return;
        }
        Outcome o =
            closeCp.price > lockCp.price ? Outcome.Up : closeCp.price < lockCp.price ? Outcome.Down : Outcome.Tie;
        Round storage r = _rounds[marketId][e];
        // A one-sided (or empty) pool is refunded in full, whatever the outcome. A two-sided tie is settled like a
        // win of both sides: everyone gets their stake back less the fee, so that betting on a feed that may not
        // move is never free.
        if (r.upAmount == 0 || r.downAmount == 0) {
            _cancel(marketId, m, e, CancelReason.OneSidedPool, o);
            return;
        }
        (uint256 total, uint256 rewardAmount, uint256 toTreasury, uint256 reward) = _settlePools(r, m.token, o);
        emit RoundSettled(marketId, e, o, lockCp.price, closeCp.price, total, rewardAmount, toTreasury, reward);
    }

    /// @dev Takes the fee out of a two-sided pool (an up/down outcome or a tie) and books the treasury's and the
    /// settler's shares.
    function _settlePools(Round storage r, address token, Outcome o)
        private
        returns (uint256 total, uint256 rewardAmount, uint256 toTreasury, uint256 reward)
    {
        total = uint256(r.upAmount) + r.downAmount;
        uint256 fee = (total * r.feeBps) / BPS;
        reward = (fee * r.settlerRewardBps) / BPS;
        toTreasury = fee - reward;
        rewardAmount = total - fee;
        // casting to 'uint128' is safe because rewardAmount <= upAmount + downAmount, two uint128 pools whose
        // sum is bounded by the token supply held here; SafeCast guards every bet that builds them.
        // forge-lint: disable-next-line(unsafe-typecast)
        r.rewardAmount = uint128(rewardAmount);
        r.state = RoundState.Settled;
        r.outcome = o;
        treasuryBalance[token] += toTreasury;
        if (reward != 0) settlerRewards[msg.sender][token] += reward;
    }

    function _cancel(uint256 marketId, MarketConfig storage m, uint256 e, CancelReason reason, Outcome o) private {
        if (block.timestamp > _time(m, e + 2) + m.settleWindow) {
            reason = CancelReason.Expired;
            o = Outcome.None;
        }
        Round storage r = _rounds[marketId][e];
        if (r.state == RoundState.Open) {
            r.state = RoundState.Cancelled;
            r.reason = reason;
            r.outcome = o;
        }
        emit RoundCancelled(marketId, e, reason, o);
    }

    // ---------------------------------------------------------------------------------------------------------
    // Bettors
    // ---------------------------------------------------------------------------------------------------------

    /// @inheritdoc IKronosMarket
    function bet(uint256 marketId, uint256 epoch, Position position, uint256 amount)
        external
        payable
        nonReentrant
        whenNotPaused
    {
        MarketConfig storage m = _marketOf(marketId);
        if (m.paused) revert MarketIsPaused(marketId);
        if (position != Position.Up && position != Position.Down) revert InvalidPosition();
        uint256 startAt = _time(m, epoch);
        uint256 closesAt = startAt + m.interval - m.betCutoff;
        if (block.timestamp < startAt || block.timestamp >= closesAt) {
            revert BettingClosed(marketId, epoch, startAt, closesAt, block.timestamp);
        }

        uint256 received;
        address token = m.token;
        if (token == address(0)) {
            if (msg.value != amount) revert WrongNativeAmount(msg.value, amount);
            received = amount;
        } else {
            if (msg.value != 0) revert NativeNotAccepted();
            uint256 before = IERC20(token).balanceOf(address(this));
            IERC20(token).safeTransferFrom(msg.sender, address(this), amount);
            received = IERC20(token).balanceOf(address(this)) - before;
        }

        Round storage r = _rounds[marketId][epoch];
        MarketParams memory p = _paramsFor(marketId, epoch);
        if (received < p.minBet || received == 0) revert BetTooSmall(received, p.minBet);
        if (r.state == RoundState.None) {
            r.state = RoundState.Open;
            r.feeBps = p.feeBps;
            r.settlerRewardBps = p.settlerRewardBps;
        }
        Bet storage b = _bets[marketId][epoch][msg.sender];
        if (b.amount != 0 && b.position != position) revert OppositeSideTaken(marketId, epoch, b.position);
        uint128 add = received.toUint128();
        b.amount += add;
        b.position = position;
        if (position == Position.Up) r.upAmount += add;
        else r.downAmount += add;
        emit BetPlaced(marketId, epoch, msg.sender, position, received);
    }

    /// @inheritdoc IKronosMarket
    function claim(uint256 marketId, uint256[] calldata epochs) external nonReentrant returns (uint256 total) {
        MarketConfig storage m = _marketOf(marketId);
        address token = m.token;
        uint256 dust;
        for (uint256 i; i < epochs.length; ++i) {
            uint256 e = epochs[i];
            Bet storage b = _bets[marketId][e][msg.sender];
            (uint256 amount, bool isRefund) = _due(marketId, m, e, b);
            if (amount == 0) continue;
            b.claimed = true;
            total += amount;
            if (isRefund) {
                emit Refunded(marketId, e, msg.sender, amount);
            } else {
                emit Claimed(marketId, e, msg.sender, amount);
                dust += _sweep(marketId, e, token, b.amount, amount);
            }
        }
        if (total == 0) revert NothingToClaim(marketId, epochs.length == 0 ? 0 : epochs[0]);
        if (dust != 0) treasuryBalance[token] += dust;
        _pay(token, msg.sender, total);
    }

    /// @notice Pays the caller the settlement rewards it earned in `token`.
    function claimSettlerReward(address token) external nonReentrant returns (uint256 amount) {
        amount = settlerRewards[msg.sender][token];
        if (amount == 0) revert NothingToClaim(0, 0);
        settlerRewards[msg.sender][token] = 0;
        emit SettlerRewardClaimed(token, msg.sender, amount);
        _pay(token, msg.sender, amount);
    }

    /// @dev Counts a paid winning bet; once every winner of the round is paid, the rounding dust (the round's
    /// reward less what its winners got, less than one unit per winner) is returned for the treasury.
    function _sweep(uint256 marketId, uint256 e, address token, uint256 staked, uint256 amount)
        private
        returns (uint256 dust)
    {
        Round storage r = _rounds[marketId][e];
        Paid storage p = _paid[marketId][e];
        // casting to 'uint128' is safe because both sums are bounded by the round's uint128 pools and reward.
        // forge-lint: disable-next-line(unsafe-typecast)
        uint128 stake = p.stake + uint128(staked);
        // forge-lint: disable-next-line(unsafe-typecast)
        uint128 paid = p.amount + uint128(amount);
        if (stake < _winnerPool(r)) {
            (p.stake, p.amount) = (stake, paid);
            return 0;
        }
        delete _paid[marketId][e];
        dust = r.rewardAmount - paid;
        if (dust != 0) emit DustSwept(marketId, e, token, dust);
    }

    function _winnerPool(Round storage r) private view returns (uint256) {
        Outcome o = r.outcome;
        if (o == Outcome.Up) return r.upAmount;
        if (o == Outcome.Down) return r.downAmount;
        return uint256(r.upAmount) + r.downAmount;
    }

    function _due(uint256 marketId, MarketConfig storage m, uint256 e, Bet storage b)
        private
        view
        returns (uint256 amount, bool isRefund)
    {
        uint256 staked = b.amount;
        if (staked == 0 || b.claimed) return (0, false);
        Round storage r = _rounds[marketId][e];
        RoundState state = r.state;
        if (state == RoundState.Settled) {
            Outcome o = r.outcome;
            if (o == Outcome.Up && b.position != Position.Up) return (0, false);
            if (o == Outcome.Down && b.position != Position.Down) return (0, false);
            return ((staked * r.rewardAmount) / _winnerPool(r), false);
        }
        if (state == RoundState.Cancelled) return (staked, true);
        if (block.timestamp > _time(m, e + 2) + m.settleWindow) return (staked, true);
        return (0, false);
    }

    function _pay(address token, address to, uint256 amount) private {
        if (token == address(0)) Address.sendValue(payable(to), amount);
        else IERC20(token).safeTransfer(to, amount);
    }

    // ---------------------------------------------------------------------------------------------------------
    // Views
    // ---------------------------------------------------------------------------------------------------------

    /// @inheritdoc IKronosMarket
    function claimable(uint256 marketId, uint256 epoch, address account) external view returns (uint256 amount) {
        (amount,) = _due(marketId, _marketOf(marketId), epoch, _bets[marketId][epoch][account]);
    }

    /// @inheritdoc IKronosMarket
    function refundable(uint256 marketId, uint256 epoch, address account) external view returns (bool isRefund) {
        uint256 amount;
        (amount, isRefund) = _due(marketId, _marketOf(marketId), epoch, _bets[marketId][epoch][account]);
        isRefund = isRefund && amount != 0;
    }

    /// @inheritdoc IKronosMarket
    function roundResult(uint256 marketId, uint256 epoch) external view returns (bool isFinal, Outcome outcome) {
        MarketConfig storage m = _marketOf(marketId);
        uint256 deadline = _time(m, epoch + 2) + m.settleWindow;
        Checkpoint storage lockCp = _checkpoints[marketId][epoch + 1];
        Checkpoint storage closeCp = _checkpoints[marketId][epoch + 2];
        bool lockIn = lockCp.recordedAt != 0;
        bool closeIn = closeCp.recordedAt != 0;
        if (lockIn && lockCp.status != CheckpointStatus.Valid) return (true, Outcome.None);
        if (lockIn && closeIn) {
            uint256 settledAt = lockCp.recordedAt > closeCp.recordedAt ? lockCp.recordedAt : closeCp.recordedAt;
            if (settledAt > deadline || closeCp.status != CheckpointStatus.Valid) return (true, Outcome.None);
            if (closeCp.price > lockCp.price) return (true, Outcome.Up);
            if (closeCp.price < lockCp.price) return (true, Outcome.Down);
            return (true, Outcome.Tie);
        }
        if (block.timestamp > deadline) return (true, Outcome.None);
        return (false, Outcome.None);
    }

    /// @inheritdoc IKronosMarket
    function getMarket(uint256 marketId) external view returns (MarketConfig memory) {
        return _marketOf(marketId);
    }

    /// @inheritdoc IKronosMarket
    function paramsFor(uint256 marketId, uint256 epoch) external view returns (MarketParams memory) {
        _marketOf(marketId);
        return _paramsFor(marketId, epoch);
    }

    /// @inheritdoc IKronosMarket
    function getCheckpoint(uint256 marketId, uint256 index) external view returns (Checkpoint memory) {
        return _checkpoints[marketId][index];
    }

    /// @inheritdoc IKronosMarket
    function getRound(uint256 marketId, uint256 epoch) external view returns (Round memory) {
        return _rounds[marketId][epoch];
    }

    /// @inheritdoc IKronosMarket
    function getBet(uint256 marketId, uint256 epoch, address account) external view returns (Bet memory) {
        return _bets[marketId][epoch][account];
    }

    /// @inheritdoc IKronosMarket
    function marketCount() external view returns (uint256) {
        return _marketCount;
    }

    // ---------------------------------------------------------------------------------------------------------
    // Internals
    // ---------------------------------------------------------------------------------------------------------

    function _marketOf(uint256 marketId) private view returns (MarketConfig storage m) {
        m = _markets[marketId];
        if (m.feed == address(0)) revert UnknownMarket(marketId);
    }

    function _time(MarketConfig storage m, uint256 index) private view returns (uint256) {
        return uint256(m.genesis) + index * m.interval;
    }

    function _paramsFor(uint256 marketId, uint256 epoch) private view returns (MarketParams memory) {
        MarketParams storage pending = _pendingParams[marketId];
        if (pending.fromEpoch != 0 && epoch >= pending.fromEpoch) return pending;
        return _currentParams[marketId];
    }

    /// @dev Writes a whole `MarketParams` slot at once (minBet | feeBps << 128 | settlerRewardBps << 144 |
    /// fromEpoch << 160, Solidity's packing of the struct).
    function _setParams(MarketParams storage dst, MarketParams memory p) private {
        uint256 word = uint256(p.minBet) | (uint256(p.feeBps) << 128) | (uint256(p.settlerRewardBps) << 144)
            | (uint256(p.fromEpoch) << 160);
        assembly ("memory-safe") {
            sstore(dst.slot, word)
        }
    }

    function _checkParams(uint16 feeBps, uint16 settlerRewardBps) private pure {
        if (feeBps > MAX_FEE_BPS) revert FeeTooHigh(feeBps, MAX_FEE_BPS);
        if (settlerRewardBps > MAX_SETTLER_REWARD_BPS) {
            revert SettlerRewardTooHigh(settlerRewardBps, MAX_SETTLER_REWARD_BPS);
        }
    }
}
