// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {ChainlinkRounds} from "../libraries/ChainlinkRounds.sol";

/// @title IKronosMarket
/// @notice Parimutuel up/down rounds on Chainlink prices, on a fixed clock, settled by anyone with a price proof.
/// @dev Checkpoint `k` of a market is the timestamp `T(k) = genesis + k * interval`. Round `e` takes bets in
/// `[T(e), T(e+1) - betCutoff)`, locks at `T(e+1)` and closes at `T(e+2)`: its lock price is the Chainlink answer in effect at
/// `T(e+1)`, its close price the answer in effect at `T(e+2)`. `execute(k)` records the answer in effect at `T(k)`
/// (verified from the feed's round ids), which locks round `k-1`, closes round `k-2` and opens round `k`.
interface IKronosMarket {
    /// @notice The side of a bet.
    enum Position {
        None,
        Up,
        Down
    }

    /// @notice Where a round with bets stands.
    enum RoundState {
        None,
        Open,
        Settled,
        Cancelled
    }

    /// @notice The price outcome of a round (independent of its pools).
    enum Outcome {
        None,
        Up,
        Down,
        Tie
    }

    /// @notice Why a checkpoint's price can or cannot be used.
    enum CheckpointStatus {
        None,
        Valid,
        Stale,
        BadAnswer,
        SequencerDown,
        SequencerGracePeriod
    }

    /// @notice Why a round was refunded. `Tie` is no longer used (a two-sided tie is settled with the fee, a
    /// one-sided one is refunded as `OneSidedPool`); it keeps its place so that the values do not change.
    enum CancelReason {
        None,
        LockPriceUnusable,
        ClosePriceUnusable,
        Tie,
        OneSidedPool,
        Expired
    }

    /// @notice What a market is, fixed at creation. `executeDelay`: seconds after `T(k)` before checkpoint `k` may be
    /// executed (`0 < executeDelay <= settleWindow - interval`). `betCutoff`: seconds before the lock at which betting
    /// (and forecast commits) close (`0 < betCutoff <= interval / 2`).
    struct MarketConfig {
        address feed;
        uint8 feedDecimals;
        uint32 interval;
        uint40 genesis;
        address sequencerFeed;
        uint32 sequencerGrace;
        uint32 maxPriceAge;
        uint32 executeDelay;
        address token;
        uint32 settleWindow;
        uint32 betCutoff;
        bool paused;
    }

    /// @notice Parameters that may change for future rounds.
    struct MarketParams {
        uint128 minBet;
        uint16 feeBps;
        uint16 settlerRewardBps;
        uint64 fromEpoch;
    }

    /// @notice Arguments of `createMarket`.
    struct CreateMarketArgs {
        address feed;
        address sequencerFeed;
        address token;
        uint40 genesis;
        uint32 interval;
        uint32 maxPriceAge;
        uint32 sequencerGrace;
        uint32 settleWindow;
        uint32 betCutoff;
        uint32 executeDelay;
        uint128 minBet;
        uint16 feeBps;
        uint16 settlerRewardBps;
    }

    /// @notice A recorded price at a checkpoint timestamp.
    struct Checkpoint {
        int128 price;
        uint80 roundId;
        uint40 recordedAt;
        CheckpointStatus status;
    }

    /// @notice Pools and settlement of a round that received bets.
    struct Round {
        uint128 upAmount;
        uint128 downAmount;
        uint128 rewardAmount;
        uint16 feeBps;
        uint16 settlerRewardBps;
        RoundState state;
        Outcome outcome;
        CancelReason reason;
    }

    /// @notice One account's stake in one round.
    struct Bet {
        uint128 amount;
        Position position;
        bool claimed;
    }

    event MarketCreated(
        uint256 indexed marketId,
        address indexed feed,
        address sequencerFeed,
        address token,
        uint40 genesis,
        uint32 interval,
        uint32 maxPriceAge,
        uint32 settleWindow,
        uint32 betCutoff,
        uint32 executeDelay
    );
    event MarketParamsScheduled(
        uint256 indexed marketId, uint64 fromEpoch, uint128 minBet, uint16 feeBps, uint16 settlerRewardBps
    );
    event MarketPaused(uint256 indexed marketId, bool paused);
    event CheckpointRecorded(
        uint256 indexed marketId,
        uint256 indexed index,
        uint256 timestamp,
        uint80 roundId,
        int256 price,
        CheckpointStatus status
    );
    event RoundStarted(
        uint256 indexed marketId, uint256 indexed epoch, uint256 startAt, uint256 lockAt, uint256 closeAt
    );
    event RoundLocked(uint256 indexed marketId, uint256 indexed epoch, uint80 roundId, int256 lockPrice);
    event RoundSettled(
        uint256 indexed marketId,
        uint256 indexed epoch,
        Outcome outcome,
        int256 lockPrice,
        int256 closePrice,
        uint256 totalAmount,
        uint256 rewardAmount,
        uint256 treasuryFee,
        uint256 settlerReward
    );
    event RoundCancelled(uint256 indexed marketId, uint256 indexed epoch, CancelReason reason, Outcome outcome);
    event BetPlaced(
        uint256 indexed marketId, uint256 indexed epoch, address indexed account, Position position, uint256 amount
    );
    event Claimed(uint256 indexed marketId, uint256 indexed epoch, address indexed account, uint256 amount);
    event Refunded(uint256 indexed marketId, uint256 indexed epoch, address indexed account, uint256 amount);
    event TreasuryWithdrawn(address indexed token, address indexed to, uint256 amount);
    event SettlerRewardClaimed(address indexed token, address indexed settler, uint256 amount);
    event DustSwept(uint256 indexed marketId, uint256 indexed epoch, address token, uint256 amount);

    error UnknownMarket(uint256 marketId);
    error InvalidMarketArgs(bytes32 what);
    error FeeTooHigh(uint256 feeBps, uint256 maxFeeBps);
    error SettlerRewardTooHigh(uint256 rewardBps, uint256 maxRewardBps);
    error MarketIsPaused(uint256 marketId);
    error BettingClosed(uint256 marketId, uint256 epoch, uint256 startAt, uint256 closesAt, uint256 nowTs);
    error BetTooSmall(uint256 amount, uint256 minBet);
    error WrongNativeAmount(uint256 sent, uint256 declared);
    error NativeNotAccepted();
    error OppositeSideTaken(uint256 marketId, uint256 epoch, Position existing);
    error InvalidPosition();
    error CheckpointNotDue(uint256 marketId, uint256 index, uint256 timestamp);
    error CheckpointAlreadyRecorded(uint256 marketId, uint256 index);
    error NothingToClaim(uint256 marketId, uint256 epoch);
    error AmountTooLarge(uint256 amount);
    error InsufficientTreasury(address token, uint256 requested, uint256 available);
    error ZeroAddress();
    error RenounceDisabled();

    /// @notice Records the Chainlink answer in effect at checkpoint `index` of a market; opens, locks and settles
    /// the rounds that depend on it. Anyone may call from `T(index) + executeDelay`; each checkpoint is recorded once.
    /// @param marketId the market.
    /// @param index the checkpoint index `k` (timestamp `genesis + k * interval`).
    /// @param price proof of the price-feed round in effect at `T(k)`.
    /// @param sequencer proof of the sequencer-uptime round in effect at `T(k)`; ignored when the market has none.
    function execute(
        uint256 marketId,
        uint256 index,
        ChainlinkRounds.RoundProof calldata price,
        ChainlinkRounds.RoundProof calldata sequencer
    ) external;

    /// @notice Bets `amount` on `position` in round `epoch`; open in `[T(epoch), T(epoch+1) - betCutoff)`.
    /// @dev Native-coin markets take `msg.value == amount`; token markets pull `amount` (the received amount counts).
    /// Adding to an existing bet is allowed on the same side only.
    function bet(uint256 marketId, uint256 epoch, Position position, uint256 amount) external payable;

    /// @notice Pays out every winning or refundable bet of the caller among `epochs`, in one transfer.
    /// @return total the amount paid.
    function claim(uint256 marketId, uint256[] calldata epochs) external returns (uint256 total);

    /// @notice The amount `account` can claim for `epoch` now: winnings or a refund; 0 when nothing is due.
    function claimable(uint256 marketId, uint256 epoch, address account) external view returns (uint256);

    /// @notice Whether `account`'s bet in `epoch` is due back as a refund (cancelled, one-sided — a tie included —,
    /// expired). A tie on a two-sided pool is settled, not refunded: every bet gets its share of the pool less the fee.
    function refundable(uint256 marketId, uint256 epoch, address account) external view returns (bool);

    /// @notice The final price outcome of a round, for scorers: `isFinal` once it can no longer change.
    /// @dev `Outcome.None` for rounds whose prices were unusable or that expired unsettled.
    function roundResult(uint256 marketId, uint256 epoch) external view returns (bool isFinal, Outcome outcome);

    /// @notice A market's fixed configuration.
    function getMarket(uint256 marketId) external view returns (MarketConfig memory);

    /// @notice The parameters that apply to round `epoch`.
    function paramsFor(uint256 marketId, uint256 epoch) external view returns (MarketParams memory);

    /// @notice A recorded checkpoint (`recordedAt == 0` when not recorded yet).
    function getCheckpoint(uint256 marketId, uint256 index) external view returns (Checkpoint memory);

    /// @notice A round's pools and settlement.
    function getRound(uint256 marketId, uint256 epoch) external view returns (Round memory);

    /// @notice An account's bet in a round.
    function getBet(uint256 marketId, uint256 epoch, address account) external view returns (Bet memory);

    /// @notice Number of markets created; ids run from 1 to this number.
    function marketCount() external view returns (uint256);
}
