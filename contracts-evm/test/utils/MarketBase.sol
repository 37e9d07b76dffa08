// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {Test} from "forge-std/Test.sol";
import {AggregatorV3Interface} from "@chainlink/contracts/src/v0.8/shared/interfaces/AggregatorV3Interface.sol";
import {MockV3Aggregator} from "@chainlink/contracts/src/v0.8/shared/mocks/MockV3Aggregator.sol";
import {
    MockBaseSequencerUptimeFeed
} from "@chainlink/contracts/src/v0.8/l2ep/test/mocks/MockBaseSequencerUptimeFeed.sol";

import {KronosMarket} from "../../src/KronosMarket.sol";
import {IKronosMarket} from "../../src/interfaces/IKronosMarket.sol";
import {ChainlinkRounds} from "../../src/libraries/ChainlinkRounds.sol";
import {MockERC20} from "./TestTokens.sol";

/// @dev Shared fixture: a native-coin market and an ERC-20 market on one mock BTC/USD feed, and helpers that
/// build the same round proofs the keeper builds (scan for the round in effect at a timestamp).
abstract contract MarketBase is Test {
    uint32 internal constant INTERVAL = 300;
    uint32 internal constant MAX_AGE = 120;
    uint32 internal constant WINDOW = 3600;
    uint32 internal constant CUTOFF = 30; // betting closes 30 s before the lock
    uint32 internal constant DELAY = 60; // checkpoint k executes from T(k) + 60 s
    uint16 internal constant FEE_BPS = 300; // 3%
    uint16 internal constant SETTLER_BPS = 1000; // 10% of the fee
    uint256 internal constant GENESIS = 1_700_000_100;

    KronosMarket internal market;
    MockV3Aggregator internal feed;
    MockERC20 internal usdc;
    uint256 internal nativeId;
    uint256 internal tokenId;

    address internal owner = makeAddr("owner");
    address internal alice = makeAddr("alice");
    address internal bob = makeAddr("bob");
    address internal carol = makeAddr("carol");
    address internal keeper = makeAddr("keeper");

    function setUp() public virtual {
        vm.warp(GENESIS - 100);
        market = new KronosMarket(owner);
        feed = new MockV3Aggregator(8, 60_000e8);
        usdc = new MockERC20("USD Coin", "USDC", 6);
        nativeId = _createMarket(address(feed), address(0), address(0));
        tokenId = _createMarket(address(feed), address(0), address(usdc));
        for (uint256 i; i < 3; ++i) {
            address who = [alice, bob, carol][i];
            vm.deal(who, 1000 ether);
            usdc.mint(who, 1_000_000e6);
            vm.prank(who);
            usdc.approve(address(market), type(uint256).max);
        }
    }

    function _args(address feed_, address seq, address token)
        internal
        pure
        returns (IKronosMarket.CreateMarketArgs memory)
    {
        return IKronosMarket.CreateMarketArgs({
            feed: feed_,
            sequencerFeed: seq,
            token: token,
            genesis: uint40(GENESIS),
            interval: INTERVAL,
            maxPriceAge: MAX_AGE,
            sequencerGrace: 3600,
            settleWindow: WINDOW,
            betCutoff: CUTOFF,
            executeDelay: DELAY,
            minBet: token == address(0) ? 0.001 ether : 1e6,
            feeBps: FEE_BPS,
            settlerRewardBps: SETTLER_BPS
        });
    }

    function _createMarket(address feed_, address seq, address token) internal returns (uint256 id) {
        vm.prank(owner);
        id = market.createMarket(_args(feed_, seq, token));
    }

    function _t(uint256 k) internal pure returns (uint256) {
        return GENESIS + k * INTERVAL;
    }

    /// @dev Pushes a new feed answer at `at` (warping there).
    function _price(int256 answer, uint256 at) internal {
        vm.warp(at);
        feed.updateAnswer(answer);
    }

    /// @dev The proof of the round in effect at `t`, built by scanning the feed like the keeper does.
    function _proof(AggregatorV3Interface f, uint256 t, bool byStartedAt)
        internal
        view
        returns (ChainlinkRounds.RoundProof memory p)
    {
        (uint80 latest,,,,) = f.latestRoundData();
        for (uint80 r = latest; r >= 1; --r) {
            (,, uint256 startedAt, uint256 updatedAt,) = f.getRoundData(r);
            uint256 time = byStartedAt ? startedAt : updatedAt;
            if (updatedAt != 0 && time <= t) {
                p.roundId = r;
                p.nextRoundId = r == latest ? 0 : r + 1;
                return p;
            }
        }
        revert("no round in effect");
    }

    /// @dev Executes checkpoint `k` of `id` as `keeper`, warping to `T(k) + DELAY` (its first allowed time) if needed.
    function _execute(uint256 id, uint256 k) internal {
        if (block.timestamp < _t(k) + DELAY) vm.warp(_t(k) + DELAY);
        IKronosMarket.MarketConfig memory m = market.getMarket(id);
        ChainlinkRounds.RoundProof memory pp = _proof(AggregatorV3Interface(m.feed), _t(k), false);
        ChainlinkRounds.RoundProof memory sp;
        if (m.sequencerFeed != address(0)) sp = _proof(AggregatorV3Interface(m.sequencerFeed), _t(k), true);
        vm.prank(keeper);
        market.execute(id, k, pp, sp);
    }

    function _betNative(address who, uint256 epoch, IKronosMarket.Position pos, uint256 amount) internal {
        vm.prank(who);
        market.bet{value: amount}(nativeId, epoch, pos, amount);
    }

    function _betToken(address who, uint256 epoch, IKronosMarket.Position pos, uint256 amount) internal {
        vm.prank(who);
        market.bet(tokenId, epoch, pos, amount);
    }

    function _one(uint256 e) internal pure returns (uint256[] memory a) {
        a = new uint256[](1);
        a[0] = e;
    }

    function _newSequencer(bool down, uint64 since) internal returns (MockBaseSequencerUptimeFeed seq) {
        uint256 was = block.timestamp;
        vm.warp(since);
        seq = new MockBaseSequencerUptimeFeed(address(0), down, true);
        seq.disableAccessCheck();
        vm.warp(was);
    }
}
