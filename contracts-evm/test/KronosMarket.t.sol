// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";
import {Pausable} from "@openzeppelin/contracts/utils/Pausable.sol";
import {AggregatorV3Interface} from "@chainlink/contracts/src/v0.8/shared/interfaces/AggregatorV3Interface.sol";
import {MockV3Aggregator} from "@chainlink/contracts/src/v0.8/shared/mocks/MockV3Aggregator.sol";
import {
    MockBaseSequencerUptimeFeed
} from "@chainlink/contracts/src/v0.8/l2ep/test/mocks/MockBaseSequencerUptimeFeed.sol";

import {KronosMarket} from "../src/KronosMarket.sol";
import {IKronosMarket} from "../src/interfaces/IKronosMarket.sol";
import {ChainlinkRounds} from "../src/libraries/ChainlinkRounds.sol";
import {MarketBase} from "./utils/MarketBase.sol";
import {FeeOnTransferERC20} from "./utils/TestTokens.sol";
import {PhasedAggregatorProxy} from "./utils/PhasedAggregatorProxy.sol";

contract KronosMarketTest is MarketBase {
    IKronosMarket.Position internal constant UP = IKronosMarket.Position.Up;
    IKronosMarket.Position internal constant DOWN = IKronosMarket.Position.Down;

    /// @dev Round 0 with bets alice Up 1, bob Up 3, carol Down 4 (ether); lock 61000, close `closePrice`.
    function _standardRound(int256 closePrice) internal {
        vm.warp(GENESIS + 10);
        _betNative(alice, 0, UP, 1 ether);
        _betNative(bob, 0, UP, 3 ether);
        _betNative(carol, 0, DOWN, 4 ether);
        _execute(nativeId, 0);
        _price(61_000e8, _t(1) - 10);
        _execute(nativeId, 1);
        _price(closePrice, _t(2) - 10);
        _execute(nativeId, 2);
    }

    // ----- market creation ---------------------------------------------------------------------------------

    function test_createMarketStoresConfigAndEmits() public {
        IKronosMarket.MarketConfig memory m = market.getMarket(nativeId);
        assertEq(m.feed, address(feed));
        assertEq(m.feedDecimals, 8);
        assertEq(m.interval, INTERVAL);
        assertEq(m.genesis, GENESIS);
        assertEq(market.marketCount(), 2);
        assertEq(m.betCutoff, CUTOFF);
        assertEq(m.executeDelay, DELAY);
        // Every field lands in its place (the three slots are written whole).
        assertEq(m.sequencerFeed, address(0));
        assertEq(m.sequencerGrace, 3600);
        assertEq(m.maxPriceAge, MAX_AGE);
        assertEq(m.token, address(0));
        assertEq(m.settleWindow, WINDOW);
        assertFalse(m.paused);
        m = market.getMarket(tokenId);
        assertEq(m.token, address(usdc));
        assertEq(m.genesis, GENESIS);
        assertEq(m.betCutoff, CUTOFF);
    }

    function test_createMarketValidates() public {
        IKronosMarket.CreateMarketArgs memory a = _args(address(feed), address(0), address(0));
        vm.startPrank(owner);
        a.interval = 59;
        vm.expectRevert(abi.encodeWithSelector(IKronosMarket.InvalidMarketArgs.selector, bytes32("interval")));
        market.createMarket(a);
        a = _args(address(feed), address(0), address(0));
        a.genesis = uint40(block.timestamp - 1);
        vm.expectRevert(abi.encodeWithSelector(IKronosMarket.InvalidMarketArgs.selector, bytes32("genesis")));
        market.createMarket(a);
        a = _args(address(feed), address(0), address(0));
        a.feeBps = 1001;
        vm.expectRevert(abi.encodeWithSelector(IKronosMarket.FeeTooHigh.selector, 1001, 1000));
        market.createMarket(a);
        a = _args(address(feed), address(0), address(0));
        a.settlerRewardBps = 5001;
        vm.expectRevert(abi.encodeWithSelector(IKronosMarket.SettlerRewardTooHigh.selector, 5001, 5000));
        market.createMarket(a);
        a = _args(address(feed), address(0), address(0));
        a.settleWindow = 30 days + 1;
        vm.expectRevert(abi.encodeWithSelector(IKronosMarket.InvalidMarketArgs.selector, bytes32("settleWindow")));
        market.createMarket(a);
        a = _args(address(feed), address(0), address(0));
        a.settleWindow = INTERVAL - 1; // shorter than a round: caught by the execute-delay bound (delay + interval)
        vm.expectRevert(abi.encodeWithSelector(IKronosMarket.InvalidMarketArgs.selector, bytes32("executeDelay")));
        market.createMarket(a);
        a = _args(address(feed), address(0), address(0));
        a.maxPriceAge = 0;
        vm.expectRevert(abi.encodeWithSelector(IKronosMarket.InvalidMarketArgs.selector, bytes32("maxPriceAge")));
        market.createMarket(a);
        a = _args(address(feed), address(0), makeAddr("eoa"));
        vm.expectRevert(abi.encodeWithSelector(IKronosMarket.InvalidMarketArgs.selector, bytes32("token")));
        market.createMarket(a);
        a = _args(address(0), address(0), address(0));
        vm.expectRevert(IKronosMarket.ZeroAddress.selector);
        market.createMarket(a);
        a = _args(address(feed), address(0), address(0));
        a.sequencerGrace = 1 days + 1;
        vm.expectRevert(abi.encodeWithSelector(IKronosMarket.InvalidMarketArgs.selector, bytes32("sequencerGrace")));
        market.createMarket(a);
        a = _args(address(feed), address(0), address(0));
        a.betCutoff = INTERVAL; // no betting window left
        vm.expectRevert(abi.encodeWithSelector(IKronosMarket.InvalidMarketArgs.selector, bytes32("betCutoff")));
        market.createMarket(a);
        a = _args(address(feed), address(0), address(0));
        a.executeDelay = WINDOW; // every round would expire before its close could be executed
        vm.expectRevert(abi.encodeWithSelector(IKronosMarket.InvalidMarketArgs.selector, bytes32("executeDelay")));
        market.createMarket(a);
        vm.stopPrank();
        vm.expectRevert(abi.encodeWithSelector(Ownable.OwnableUnauthorizedAccount.selector, alice));
        vm.prank(alice);
        market.createMarket(_args(address(feed), address(0), address(0)));
    }

    /// Review of 9726aac, item 3: betCutoff = 0 and executeDelay = 0 were accepted (bringing back the free option and
    /// the early execute), and so were a 1 s betting window and 1 s to execute a round's close before it expires.
    function test_createMarketBoundsBetCutoff() public {
        IKronosMarket.CreateMarketArgs memory a = _args(address(feed), address(0), address(0));
        vm.startPrank(owner);
        a.betCutoff = 0;
        vm.expectRevert(abi.encodeWithSelector(IKronosMarket.InvalidMarketArgs.selector, bytes32("betCutoff")));
        market.createMarket(a);
        a.betCutoff = INTERVAL / 2 + 1; // less than half the round left for betting
        vm.expectRevert(abi.encodeWithSelector(IKronosMarket.InvalidMarketArgs.selector, bytes32("betCutoff")));
        market.createMarket(a);
        a.betCutoff = INTERVAL - 1;
        vm.expectRevert(abi.encodeWithSelector(IKronosMarket.InvalidMarketArgs.selector, bytes32("betCutoff")));
        market.createMarket(a);
        a.betCutoff = INTERVAL / 2;
        assertEq(market.getMarket(market.createMarket(a)).betCutoff, INTERVAL / 2);
        a.betCutoff = 1;
        assertEq(market.getMarket(market.createMarket(a)).betCutoff, 1);
        vm.stopPrank();
    }

    function test_createMarketBoundsExecuteDelay() public {
        IKronosMarket.CreateMarketArgs memory a = _args(address(feed), address(0), address(0));
        vm.startPrank(owner);
        a.executeDelay = 0;
        vm.expectRevert(abi.encodeWithSelector(IKronosMarket.InvalidMarketArgs.selector, bytes32("executeDelay")));
        market.createMarket(a);
        a.executeDelay = WINDOW - INTERVAL + 1; // less than one interval left to execute a close before expiry
        vm.expectRevert(abi.encodeWithSelector(IKronosMarket.InvalidMarketArgs.selector, bytes32("executeDelay")));
        market.createMarket(a);
        a.executeDelay = WINDOW - 1;
        vm.expectRevert(abi.encodeWithSelector(IKronosMarket.InvalidMarketArgs.selector, bytes32("executeDelay")));
        market.createMarket(a);
        a.executeDelay = type(uint32).max; // the sum is not computed in 32 bits
        vm.expectRevert(abi.encodeWithSelector(IKronosMarket.InvalidMarketArgs.selector, bytes32("executeDelay")));
        market.createMarket(a);
        a.executeDelay = WINDOW - INTERVAL;
        assertEq(market.getMarket(market.createMarket(a)).executeDelay, WINDOW - INTERVAL);
        a.executeDelay = 1;
        assertEq(market.getMarket(market.createMarket(a)).executeDelay, 1);
        vm.stopPrank();
    }

    /// Review of 9726aac, item 4: MarketCreated did not carry betCutoff and executeDelay.
    function test_marketCreatedEmitsCutoffAndDelay() public {
        IKronosMarket.CreateMarketArgs memory a = _args(address(feed), address(0), address(usdc));
        vm.expectEmit(true, true, false, true, address(market));
        emit IKronosMarket.MarketCreated(
            3, address(feed), address(0), address(usdc), uint40(GENESIS), INTERVAL, MAX_AGE, WINDOW, CUTOFF, DELAY
        );
        vm.prank(owner);
        market.createMarket(a);
    }

    function test_unknownMarketReverts() public {
        vm.expectRevert(abi.encodeWithSelector(IKronosMarket.UnknownMarket.selector, 99));
        market.getMarket(99);
        vm.expectRevert(abi.encodeWithSelector(IKronosMarket.UnknownMarket.selector, 99));
        vm.prank(alice);
        market.bet{value: 1 ether}(99, 0, UP, 1 ether);
    }

    // ----- betting window and rules --------------------------------------------------------------------------

    function test_betOnlyBetweenStartAndCutoff() public {
        uint256 closesAt = GENESIS + INTERVAL - CUTOFF;
        vm.warp(GENESIS - 1);
        vm.expectRevert(
            abi.encodeWithSelector(IKronosMarket.BettingClosed.selector, nativeId, 0, GENESIS, closesAt, GENESIS - 1)
        );
        _betNative(alice, 0, UP, 1 ether);
        vm.warp(GENESIS);
        _betNative(alice, 0, UP, 1 ether);
        vm.warp(closesAt - 1);
        _betNative(alice, 0, UP, 1 ether);
        vm.warp(closesAt);
        vm.expectRevert(
            abi.encodeWithSelector(IKronosMarket.BettingClosed.selector, nativeId, 0, GENESIS, closesAt, closesAt)
        );
        _betNative(alice, 0, UP, 1 ether);
        // Still closed up to the lock; the next round opens at the lock.
        vm.warp(GENESIS + INTERVAL - 1);
        vm.expectRevert(
            abi.encodeWithSelector(
                IKronosMarket.BettingClosed.selector, nativeId, 0, GENESIS, closesAt, GENESIS + INTERVAL - 1
            )
        );
        _betNative(alice, 0, UP, 1 ether);
        vm.warp(GENESIS + INTERVAL);
        _betNative(alice, 1, DOWN, 1 ether);
        assertEq(market.getBet(nativeId, 0, alice).amount, 2 ether);
    }

    function test_betRulesAreEnforced() public {
        vm.warp(GENESIS + 1);
        vm.prank(alice);
        vm.expectRevert(abi.encodeWithSelector(IKronosMarket.WrongNativeAmount.selector, 1 ether, 2 ether));
        market.bet{value: 1 ether}(nativeId, 0, UP, 2 ether);
        vm.expectRevert(abi.encodeWithSelector(IKronosMarket.BetTooSmall.selector, 0.0001 ether, 0.001 ether));
        _betNative(alice, 0, UP, 0.0001 ether);
        vm.prank(alice);
        vm.expectRevert(IKronosMarket.InvalidPosition.selector);
        market.bet{value: 1 ether}(nativeId, 0, IKronosMarket.Position.None, 1 ether);
        _betNative(alice, 0, UP, 1 ether);
        vm.expectRevert(abi.encodeWithSelector(IKronosMarket.OppositeSideTaken.selector, nativeId, 0, UP));
        _betNative(alice, 0, DOWN, 1 ether);
        vm.prank(alice);
        vm.expectRevert(IKronosMarket.NativeNotAccepted.selector);
        market.bet{value: 1}(tokenId, 0, UP, 5e6);
    }

    function test_tokenMarketPullsTokens() public {
        vm.warp(GENESIS + 1);
        _betToken(alice, 0, UP, 10e6);
        _betToken(bob, 0, DOWN, 30e6);
        assertEq(usdc.balanceOf(address(market)), 40e6);
        IKronosMarket.Round memory r = market.getRound(tokenId, 0);
        assertEq(r.upAmount, 10e6);
        assertEq(r.downAmount, 30e6);
        assertEq(r.feeBps, FEE_BPS);
    }

    function test_feeOnTransferTokenCreditsWhatArrived() public {
        FeeOnTransferERC20 fot = new FeeOnTransferERC20();
        uint256 id = _createMarket(address(feed), address(0), address(fot));
        fot.mint(alice, 1000e18);
        vm.startPrank(alice);
        fot.approve(address(market), type(uint256).max);
        vm.warp(GENESIS + 1);
        market.bet(id, 0, UP, 100e18);
        vm.stopPrank();
        assertEq(market.getBet(id, 0, alice).amount, 99e18);
        assertEq(market.getRound(id, 0).upAmount, 99e18);
        assertEq(fot.balanceOf(address(market)), 99e18);
    }

    function test_pauseStopsBetsOnlyNotSettlementOrClaims() public {
        vm.warp(GENESIS + 10);
        _betNative(alice, 0, UP, 1 ether);
        _betNative(carol, 0, DOWN, 1 ether);
        vm.prank(owner);
        market.pause();
        vm.expectRevert(Pausable.EnforcedPause.selector);
        _betNative(bob, 0, UP, 1 ether);
        _execute(nativeId, 0);
        _price(61_000e8, _t(1) - 10);
        _execute(nativeId, 1);
        _price(62_000e8, _t(2) - 10);
        _execute(nativeId, 2);
        vm.prank(alice);
        uint256 paid = market.claim(nativeId, _one(0));
        assertGt(paid, 1 ether);
        vm.prank(owner);
        market.unpause();
        vm.prank(owner);
        market.setMarketPaused(nativeId, true);
        vm.warp(_t(3));
        vm.expectRevert(abi.encodeWithSelector(IKronosMarket.MarketIsPaused.selector, nativeId));
        _betNative(bob, 3, UP, 1 ether);
        _betToken(bob, 3, UP, 5e6); // other markets unaffected
    }

    // ----- settlement ------------------------------------------------------------------------------------------

    function test_upWinsAndWinnersSharePoolAfterFee() public {
        _standardRound(62_000e8);
        IKronosMarket.Round memory r = market.getRound(nativeId, 0);
        assertEq(uint8(r.state), uint8(IKronosMarket.RoundState.Settled));
        assertEq(uint8(r.outcome), uint8(IKronosMarket.Outcome.Up));
        // pool 8, fee 3% = 0.24, settler 10% of fee = 0.024, treasury 0.216, winners share 7.76
        assertEq(r.rewardAmount, 7.76 ether);
        assertEq(market.treasuryBalance(address(0)), 0.216 ether);
        assertEq(market.settlerRewards(keeper, address(0)), 0.024 ether);
        assertEq(market.claimable(nativeId, 0, alice), 1.94 ether);
        assertEq(market.claimable(nativeId, 0, bob), 5.82 ether);
        assertEq(market.claimable(nativeId, 0, carol), 0);
        assertFalse(market.refundable(nativeId, 0, alice));

        uint256 before = alice.balance;
        vm.prank(alice);
        assertEq(market.claim(nativeId, _one(0)), 1.94 ether);
        assertEq(alice.balance - before, 1.94 ether);
        vm.prank(alice);
        vm.expectRevert(abi.encodeWithSelector(IKronosMarket.NothingToClaim.selector, nativeId, 0));
        market.claim(nativeId, _one(0));
        vm.prank(carol);
        vm.expectRevert(abi.encodeWithSelector(IKronosMarket.NothingToClaim.selector, nativeId, 0));
        market.claim(nativeId, _one(0));

        vm.prank(keeper);
        assertEq(market.claimSettlerReward(address(0)), 0.024 ether);
        assertEq(keeper.balance, 0.024 ether);
        vm.prank(keeper);
        vm.expectRevert(abi.encodeWithSelector(IKronosMarket.NothingToClaim.selector, 0, 0));
        market.claimSettlerReward(address(0));
    }

    function test_downWins() public {
        _standardRound(60_500e8);
        assertEq(uint8(market.getRound(nativeId, 0).outcome), uint8(IKronosMarket.Outcome.Down));
        assertEq(market.claimable(nativeId, 0, carol), 7.76 ether);
        assertEq(market.claimable(nativeId, 0, alice), 0);
    }

    /// Issue 13, item 1: a tie used to refund every stake without a fee (RoundCancelled, reason Tie).
    function test_tieKeepsTheFeeAndReturnsTheRest() public {
        vm.warp(GENESIS + 10);
        _betNative(alice, 0, UP, 1 ether);
        _betNative(bob, 0, UP, 3 ether);
        _betNative(carol, 0, DOWN, 4 ether);
        _execute(nativeId, 0);
        _price(61_000e8, _t(1) - 10);
        _execute(nativeId, 1);
        _price(61_000e8, _t(2) - 10);
        // pool 8, fee 3% = 0.24 (settler 0.024, treasury 0.216), 7.76 shared by everyone pro rata
        vm.expectEmit(true, true, false, true, address(market));
        emit IKronosMarket.RoundSettled(
            nativeId, 0, IKronosMarket.Outcome.Tie, 61_000e8, 61_000e8, 8 ether, 7.76 ether, 0.216 ether, 0.024 ether
        );
        _execute(nativeId, 2);
        IKronosMarket.Round memory r = market.getRound(nativeId, 0);
        assertEq(uint8(r.state), uint8(IKronosMarket.RoundState.Settled));
        assertEq(uint8(r.outcome), uint8(IKronosMarket.Outcome.Tie));
        assertFalse(market.refundable(nativeId, 0, carol));
        assertEq(market.claimable(nativeId, 0, carol), 3.88 ether);
        assertEq(market.claimable(nativeId, 0, alice), 0.97 ether);
        assertEq(market.treasuryBalance(address(0)), 0.216 ether);
        vm.prank(carol);
        assertEq(market.claim(nativeId, _one(0)), 3.88 ether);
    }

    function test_oneSidedPoolRefundsButKeepsOutcome() public {
        vm.warp(GENESIS + 10);
        _betNative(alice, 0, UP, 1 ether);
        _betNative(bob, 0, UP, 2 ether);
        _execute(nativeId, 0);
        _price(61_000e8, _t(1) - 10);
        _execute(nativeId, 1);
        _price(62_000e8, _t(2) - 10);
        _execute(nativeId, 2);
        IKronosMarket.Round memory r = market.getRound(nativeId, 0);
        assertEq(uint8(r.reason), uint8(IKronosMarket.CancelReason.OneSidedPool));
        assertEq(uint8(r.outcome), uint8(IKronosMarket.Outcome.Up));
        assertEq(market.claimable(nativeId, 0, bob), 2 ether);
        (bool fin, IKronosMarket.Outcome o) = market.roundResult(nativeId, 0);
        assertTrue(fin);
        assertEq(uint8(o), uint8(IKronosMarket.Outcome.Up));
    }

    function test_emptyRoundIsCancelledWithoutStorageAndHasAnOutcome() public {
        _execute(nativeId, 0);
        _price(61_000e8, _t(1) - 10);
        _execute(nativeId, 1);
        _price(60_000e8, _t(2) - 10);
        vm.expectEmit(true, true, false, true, address(market));
        emit IKronosMarket.RoundCancelled(
            nativeId, 0, IKronosMarket.CancelReason.OneSidedPool, IKronosMarket.Outcome.Down
        );
        _execute(nativeId, 2);
        assertEq(uint8(market.getRound(nativeId, 0).state), uint8(IKronosMarket.RoundState.None));
        (bool fin, IKronosMarket.Outcome o) = market.roundResult(nativeId, 0);
        assertTrue(fin);
        assertEq(uint8(o), uint8(IKronosMarket.Outcome.Down));
    }

    function test_executeEmitsStartLockAndSettle() public {
        vm.warp(GENESIS + 10);
        _betNative(alice, 0, UP, 1 ether);
        _betNative(carol, 0, DOWN, 1 ether);
        _execute(nativeId, 0);
        _price(61_000e8, _t(1) - 10);
        vm.warp(_t(1) + 1);
        vm.expectEmit(true, true, false, true, address(market));
        emit IKronosMarket.RoundStarted(nativeId, 1, _t(1), _t(2), _t(3));
        vm.expectEmit(true, true, false, true, address(market));
        emit IKronosMarket.RoundLocked(nativeId, 0, 2, 61_000e8);
        _execute(nativeId, 1);
        _price(62_000e8, _t(2) - 10);
        vm.warp(_t(2) + 1);
        vm.expectEmit(true, true, false, true, address(market));
        emit IKronosMarket.RoundSettled(
            nativeId, 0, IKronosMarket.Outcome.Up, 61_000e8, 62_000e8, 2 ether, 1.94 ether, 0.054 ether, 0.006 ether
        );
        _execute(nativeId, 2);
    }

    function test_checkpointIsRecordedOnceAndNotBeforeItsTime() public {
        ChainlinkRounds.RoundProof memory p = ChainlinkRounds.RoundProof({roundId: 1, nextRoundId: 0});
        vm.warp(_t(1) + DELAY - 1);
        vm.expectRevert(abi.encodeWithSelector(IKronosMarket.CheckpointNotDue.selector, nativeId, 1, _t(1) + DELAY));
        market.execute(nativeId, 1, p, p);
        _execute(nativeId, 0);
        vm.expectRevert(abi.encodeWithSelector(IKronosMarket.CheckpointAlreadyRecorded.selector, nativeId, 0));
        market.execute(nativeId, 0, p, p);
        IKronosMarket.Checkpoint memory cp = market.getCheckpoint(nativeId, 0);
        assertEq(cp.price, 60_000e8);
        assertEq(cp.roundId, 1);
        assertEq(uint8(cp.status), uint8(IKronosMarket.CheckpointStatus.Valid));
    }

    function test_keeperCannotPickAnotherPrice() public {
        _price(61_000e8, _t(1) - 10); // round 2
        _price(63_000e8, _t(1) + 20); // round 3, after lock time
        vm.warp(_t(1) + DELAY);
        // Claiming round 3 (the later, higher price) for T(1) fails; so does claiming round 1.
        vm.expectRevert(abi.encodeWithSelector(ChainlinkRounds.ProofRoundAfterTimestamp.selector, 3, _t(1) + 20, _t(1)));
        market.execute(nativeId, 1, ChainlinkRounds.RoundProof(3, 0), ChainlinkRounds.RoundProof(0, 0));
        vm.expectRevert(
            abi.encodeWithSelector(ChainlinkRounds.ProofSuccessorNotAfterTimestamp.selector, 2, _t(1) - 10, _t(1))
        );
        market.execute(nativeId, 1, ChainlinkRounds.RoundProof(1, 2), ChainlinkRounds.RoundProof(0, 0));
        market.execute(nativeId, 1, ChainlinkRounds.RoundProof(2, 3), ChainlinkRounds.RoundProof(0, 0));
        assertEq(market.getCheckpoint(nativeId, 1).price, 61_000e8);
    }

    // ----- oracle safety -----------------------------------------------------------------------------------------

    function test_stalePriceAtLockCancelsTheRound() public {
        vm.warp(GENESIS + 10);
        _betNative(alice, 0, UP, 1 ether);
        _betNative(carol, 0, DOWN, 1 ether);
        _execute(nativeId, 0);
        // No update before lock: the last answer is from GENESIS-100, older than 120 s at T(1).
        vm.expectEmit(true, true, false, true, address(market));
        emit IKronosMarket.RoundCancelled(
            nativeId, 0, IKronosMarket.CancelReason.LockPriceUnusable, IKronosMarket.Outcome.None
        );
        _execute(nativeId, 1);
        assertEq(uint8(market.getCheckpoint(nativeId, 1).status), uint8(IKronosMarket.CheckpointStatus.Stale));
        assertTrue(market.refundable(nativeId, 0, alice));
        (bool fin, IKronosMarket.Outcome o) = market.roundResult(nativeId, 0);
        assertTrue(fin);
        assertEq(uint8(o), uint8(IKronosMarket.Outcome.None));
        // The close checkpoint later does not settle it again.
        _price(62_000e8, _t(2) - 10);
        _execute(nativeId, 2);
        assertEq(uint8(market.getRound(nativeId, 0).reason), uint8(IKronosMarket.CancelReason.LockPriceUnusable));
        vm.prank(alice);
        assertEq(market.claim(nativeId, _one(0)), 1 ether);
    }

    function test_stalePriceAtCloseCancelsTheRound() public {
        vm.warp(GENESIS + 10);
        _betNative(alice, 0, UP, 1 ether);
        _betNative(carol, 0, DOWN, 1 ether);
        _execute(nativeId, 0);
        _price(61_000e8, _t(1) - 10);
        _execute(nativeId, 1);
        _price(62_000e8, _t(2) - 200); // 200 s old at close
        _execute(nativeId, 2);
        IKronosMarket.Round memory r = market.getRound(nativeId, 0);
        assertEq(uint8(r.reason), uint8(IKronosMarket.CancelReason.ClosePriceUnusable));
        assertEq(market.claimable(nativeId, 0, carol), 1 ether);
    }

    function test_nonPositiveAnswerIsUnusable() public {
        _price(0, _t(1) - 10);
        _execute(nativeId, 1);
        assertEq(uint8(market.getCheckpoint(nativeId, 1).status), uint8(IKronosMarket.CheckpointStatus.BadAnswer));
        _price(-5, _t(2) - 10);
        _execute(nativeId, 2);
        assertEq(uint8(market.getCheckpoint(nativeId, 2).status), uint8(IKronosMarket.CheckpointStatus.BadAnswer));
    }

    function _l2Market(MockBaseSequencerUptimeFeed seq) internal returns (uint256 id) {
        id = _createMarket(address(feed), address(seq), address(0));
        vm.warp(GENESIS + 10);
        vm.prank(alice);
        market.bet{value: 1 ether}(id, 0, UP, 1 ether);
        vm.prank(carol);
        market.bet{value: 1 ether}(id, 0, DOWN, 1 ether);
    }

    function test_sequencerUpAndPastGraceSettlesNormally() public {
        MockBaseSequencerUptimeFeed seq = _newSequencer(false, uint64(GENESIS - 7200));
        uint256 id = _l2Market(seq);
        _execute(id, 0);
        _price(61_000e8, _t(1) - 10);
        _execute(id, 1);
        _price(62_000e8, _t(2) - 10);
        _execute(id, 2);
        assertEq(uint8(market.getRound(id, 0).state), uint8(IKronosMarket.RoundState.Settled));
    }

    function test_sequencerDownAtLockCancels() public {
        MockBaseSequencerUptimeFeed seq = _newSequencer(false, uint64(GENESIS - 7200));
        uint256 id = _l2Market(seq);
        _price(61_000e8, _t(1) - 10);
        vm.warp(_t(1) - 5);
        seq.updateStatus(true, uint64(_t(1) - 5)); // down 5 s before lock
        _execute(id, 1);
        assertEq(uint8(market.getCheckpoint(id, 1).status), uint8(IKronosMarket.CheckpointStatus.SequencerDown));
        assertEq(uint8(market.getRound(id, 0).reason), uint8(IKronosMarket.CancelReason.LockPriceUnusable));
    }

    function test_sequencerOutageRecordedLateStillCountsAtItsL1Time() public {
        MockBaseSequencerUptimeFeed seq = _newSequencer(false, uint64(GENESIS - 7200));
        uint256 id = _l2Market(seq);
        _price(61_000e8, _t(1) - 10);
        // The down status (L1 time T(1)-5) reaches L2 only after lock, then it comes back up.
        vm.warp(_t(1) + 50);
        seq.updateStatus(true, uint64(_t(1) - 5));
        vm.warp(_t(1) + 60);
        seq.updateStatus(false, uint64(_t(1) + 55));
        _execute(id, 1);
        assertEq(uint8(market.getCheckpoint(id, 1).status), uint8(IKronosMarket.CheckpointStatus.SequencerDown));
    }

    function test_sequencerGracePeriodAtCloseCancels() public {
        MockBaseSequencerUptimeFeed seq = _newSequencer(false, uint64(GENESIS - 7200));
        uint256 id = _l2Market(seq);
        _execute(id, 0);
        _price(61_000e8, _t(1) - 10);
        _execute(id, 1);
        vm.warp(_t(1) + 20);
        seq.updateStatus(true, uint64(_t(1) + 20));
        vm.warp(_t(1) + 100);
        seq.updateStatus(false, uint64(_t(1) + 100)); // back up, grace of 3600 s still running at close
        _price(62_000e8, _t(2) - 10);
        _execute(id, 2);
        assertEq(uint8(market.getCheckpoint(id, 2).status), uint8(IKronosMarket.CheckpointStatus.SequencerGracePeriod));
        assertEq(uint8(market.getRound(id, 0).reason), uint8(IKronosMarket.CancelReason.ClosePriceUnusable));
        assertEq(market.claimable(id, 0, alice), 1 ether);
    }

    // ----- late settlement, catch-up, expiry ------------------------------------------------------------------

    function test_lateSettlementWithinWindowUsesHistoricalPrices() public {
        vm.warp(GENESIS + 10);
        _betNative(alice, 0, UP, 1 ether);
        _betNative(carol, 0, DOWN, 1 ether);
        _price(61_000e8, _t(1) - 10);
        _price(62_000e8, _t(2) - 10);
        _price(55_000e8, _t(2) + 100); // later moves do not matter
        vm.warp(_t(2) + 1800); // keeper was down for half an hour
        _execute(nativeId, 1);
        _execute(nativeId, 2);
        IKronosMarket.Round memory r = market.getRound(nativeId, 0);
        assertEq(uint8(r.outcome), uint8(IKronosMarket.Outcome.Up));
        assertEq(uint8(r.state), uint8(IKronosMarket.RoundState.Settled));
    }

    function test_catchUpInAnyOrder() public {
        vm.warp(GENESIS + 10);
        _betNative(alice, 0, UP, 1 ether);
        _betNative(carol, 0, DOWN, 1 ether);
        _price(61_000e8, _t(1) - 10);
        _price(60_000e8, _t(2) - 10);
        vm.warp(_t(2) + 60);
        _execute(nativeId, 2); // close first: nothing to settle yet
        assertEq(uint8(market.getRound(nativeId, 0).state), uint8(IKronosMarket.RoundState.Open));
        _execute(nativeId, 1); // lock arrives: settles with both
        assertEq(uint8(market.getRound(nativeId, 0).outcome), uint8(IKronosMarket.Outcome.Down));
        assertEq(market.claimable(nativeId, 0, carol), 1.94 ether);
    }

    function test_unsettledRoundBecomesRefundableAfterWindowWithoutAnyone() public {
        vm.warp(GENESIS + 10);
        _betNative(alice, 0, UP, 1 ether);
        _betNative(carol, 0, DOWN, 2 ether);
        vm.warp(_t(2) + WINDOW);
        assertFalse(market.refundable(nativeId, 0, alice));
        (bool fin,) = market.roundResult(nativeId, 0);
        assertFalse(fin);
        vm.warp(_t(2) + WINDOW + 1);
        assertTrue(market.refundable(nativeId, 0, alice));
        (fin,) = market.roundResult(nativeId, 0);
        assertTrue(fin);
        vm.prank(carol);
        assertEq(market.claim(nativeId, _one(0)), 2 ether);
        // A keeper coming back later cannot settle it any more: the round is cancelled as expired.
        _price(61_000e8, block.timestamp + 10);
        _execute(nativeId, 2);
        vm.expectEmit(true, true, false, true, address(market));
        emit IKronosMarket.RoundCancelled(nativeId, 0, IKronosMarket.CancelReason.Expired, IKronosMarket.Outcome.None);
        _execute(nativeId, 1);
        assertEq(uint8(market.getRound(nativeId, 0).reason), uint8(IKronosMarket.CancelReason.Expired));
        vm.prank(alice);
        assertEq(market.claim(nativeId, _one(0)), 1 ether);
        vm.prank(carol);
        vm.expectRevert(abi.encodeWithSelector(IKronosMarket.NothingToClaim.selector, nativeId, 0));
        market.claim(nativeId, _one(0));
    }

    function test_settlementAcrossAPhaseChange() public {
        PhasedAggregatorProxy proxy = new PhasedAggregatorProxy(address(feed), "BTC / USD");
        uint256 id = _createMarket(address(proxy), address(0), address(0));
        vm.warp(GENESIS + 10);
        vm.prank(alice);
        market.bet{value: 1 ether}(id, 0, UP, 1 ether);
        vm.prank(carol);
        market.bet{value: 1 ether}(id, 0, DOWN, 1 ether);
        _price(61_000e8, _t(1) - 10); // phase 1 round 2
        vm.warp(_t(1) + 100);
        MockV3Aggregator next = new MockV3Aggregator(8, 59_000e8); // phase 2 round 1 at T(1)+100
        proxy.setAggregator(address(next));
        vm.warp(_t(2) - 10);
        next.updateAnswer(59_500e8); // phase 2 round 2
        vm.warp(_t(2) + DELAY);
        uint80 p1r2 = uint80((1 << 64) | 2);
        uint80 p2r1 = uint80((2 << 64) | 1);
        uint80 p2r2 = uint80((2 << 64) | 2);
        market.execute(id, 1, ChainlinkRounds.RoundProof(p1r2, p2r1), ChainlinkRounds.RoundProof(0, 0));
        market.execute(id, 2, ChainlinkRounds.RoundProof(p2r2, 0), ChainlinkRounds.RoundProof(0, 0));
        IKronosMarket.Round memory r = market.getRound(id, 0);
        assertEq(uint8(r.outcome), uint8(IKronosMarket.Outcome.Down));
        assertEq(market.getCheckpoint(id, 1).roundId, p1r2);
    }

    // ----- claims ------------------------------------------------------------------------------------------------

    function test_batchClaimPaysWinsAndRefundsOnceInOneTransfer() public {
        // round 0: alice wins; round 1: tie (stake less the fee); round 2: alice loses; round 3: never settled (expires)
        vm.warp(GENESIS + 10);
        _betNative(alice, 0, UP, 1 ether);
        _betNative(carol, 0, DOWN, 1 ether);
        _execute(nativeId, 0);
        _price(61_000e8, _t(1) - 10);
        _execute(nativeId, 1);
        _betNative(alice, 1, DOWN, 2 ether);
        _betNative(carol, 1, UP, 2 ether);
        _price(62_000e8, _t(2) - 10);
        _execute(nativeId, 2); // round 0 Up
        _betNative(alice, 2, UP, 1 ether);
        _betNative(carol, 2, DOWN, 1 ether);
        _price(62_000e8, _t(3) - 10);
        _execute(nativeId, 3); // round 1 tie
        _betNative(alice, 3, UP, 0.5 ether);
        _price(61_000e8, _t(4) - 10);
        _execute(nativeId, 4); // round 2 Down
        vm.warp(_t(5) + WINDOW + 1); // round 3 expired unsettled

        uint256[] memory epochs = new uint256[](6);
        (epochs[0], epochs[1], epochs[2], epochs[3], epochs[4], epochs[5]) = (0, 1, 2, 3, 0, 7);
        uint256 before = alice.balance;
        vm.prank(alice);
        uint256 paid = market.claim(nativeId, epochs);
        assertEq(paid, 1.94 ether + 1.94 ether + 0.5 ether);
        assertEq(alice.balance - before, paid);
        assertTrue(market.getBet(nativeId, 0, alice).claimed);
        assertFalse(market.getBet(nativeId, 2, alice).claimed); // a loss stays unclaimed
    }

    function test_claimOnOpenRoundPaysNothing() public {
        vm.warp(GENESIS + 10);
        _betNative(alice, 0, UP, 1 ether);
        assertEq(market.claimable(nativeId, 0, alice), 0);
        vm.prank(alice);
        vm.expectRevert(abi.encodeWithSelector(IKronosMarket.NothingToClaim.selector, nativeId, 0));
        market.claim(nativeId, _one(0));
        vm.prank(alice);
        vm.expectRevert(abi.encodeWithSelector(IKronosMarket.NothingToClaim.selector, nativeId, 0));
        market.claim(nativeId, new uint256[](0));
    }

    function test_tokenMarketSettlesAndPaysInTokens() public {
        vm.warp(GENESIS + 10);
        _betToken(alice, 0, UP, 100e6);
        _betToken(bob, 0, DOWN, 300e6);
        _execute(tokenId, 0);
        _price(61_000e8, _t(1) - 10);
        _execute(tokenId, 1);
        _price(62_000e8, _t(2) - 10);
        _execute(tokenId, 2);
        uint256 before = usdc.balanceOf(alice);
        vm.prank(alice);
        market.claim(tokenId, _one(0));
        assertEq(usdc.balanceOf(alice) - before, 388e6); // 400 - 3%
        assertEq(market.treasuryBalance(address(usdc)), 10.8e6);
        vm.prank(owner);
        market.withdrawTreasury(address(usdc), owner, 10.8e6);
        assertEq(usdc.balanceOf(owner), 10.8e6);
    }

    // ----- treasury, params, ownership ----------------------------------------------------------------------

    function test_treasuryWithdrawal() public {
        _standardRound(62_000e8);
        vm.prank(alice);
        vm.expectRevert(abi.encodeWithSelector(Ownable.OwnableUnauthorizedAccount.selector, alice));
        market.withdrawTreasury(address(0), alice, 1);
        vm.startPrank(owner);
        vm.expectRevert(
            abi.encodeWithSelector(IKronosMarket.InsufficientTreasury.selector, address(0), 1 ether, 0.216 ether)
        );
        market.withdrawTreasury(address(0), owner, 1 ether);
        vm.expectRevert(IKronosMarket.ZeroAddress.selector);
        market.withdrawTreasury(address(0), address(0), 1);
        market.withdrawTreasury(address(0), owner, 0.2 ether);
        vm.stopPrank();
        assertEq(owner.balance, 0.2 ether);
        assertEq(market.treasuryBalance(address(0)), 0.016 ether);
    }

    function test_paramChangesApplyToFutureRoundsOnly() public {
        vm.warp(GENESIS + 10);
        _betNative(alice, 0, UP, 1 ether);
        _betNative(carol, 0, DOWN, 1 ether);
        vm.prank(owner);
        market.scheduleParams(nativeId, 0.5 ether, 1000, 0);
        assertEq(market.paramsFor(nativeId, 0).feeBps, FEE_BPS);
        assertEq(market.paramsFor(nativeId, 1).feeBps, 1000);
        // Round 0 still takes small bets and keeps its 3% fee.
        _betNative(bob, 0, UP, 0.01 ether);
        vm.warp(_t(1) + 1);
        vm.expectRevert(abi.encodeWithSelector(IKronosMarket.BetTooSmall.selector, 0.01 ether, 0.5 ether));
        _betNative(bob, 1, UP, 0.01 ether);
        _betNative(alice, 1, UP, 1 ether);
        _betNative(carol, 1, DOWN, 1 ether);
        assertEq(market.getRound(nativeId, 0).feeBps, FEE_BPS);
        assertEq(market.getRound(nativeId, 1).feeBps, 1000);
        // A second change while the first is live promotes it and schedules after the current round.
        vm.prank(owner);
        market.scheduleParams(nativeId, 0.1 ether, 200, 100);
        assertEq(market.paramsFor(nativeId, 1).feeBps, 1000);
        assertEq(market.paramsFor(nativeId, 2).feeBps, 200);
        vm.prank(owner);
        vm.expectRevert(abi.encodeWithSelector(IKronosMarket.FeeTooHigh.selector, 2000, 1000));
        market.scheduleParams(nativeId, 0, 2000, 0);
    }

    function test_paramsBeforeGenesisApplyFromRoundZero() public {
        vm.warp(GENESIS - 50);
        vm.prank(owner);
        market.scheduleParams(nativeId, 1 ether, 500, 0);
        assertEq(market.paramsFor(nativeId, 0).feeBps, 500);
        assertEq(market.paramsFor(nativeId, 7).minBet, 1 ether);
    }

    function test_twoStepOwnership() public {
        vm.prank(owner);
        market.transferOwnership(alice);
        assertEq(market.owner(), owner);
        assertEq(market.pendingOwner(), alice);
        vm.prank(bob);
        vm.expectRevert(abi.encodeWithSelector(Ownable.OwnableUnauthorizedAccount.selector, bob));
        market.acceptOwnership();
        vm.prank(alice);
        market.acceptOwnership();
        assertEq(market.owner(), alice);
    }

    // ----- reentrancy -------------------------------------------------------------------------------------------

    function test_reentrantClaimIsBlocked() public {
        Reenterer attacker = new Reenterer(market, nativeId);
        vm.deal(address(attacker), 10 ether);
        vm.warp(GENESIS + 10);
        attacker.bet(0, UP, 1 ether);
        _betNative(carol, 0, DOWN, 1 ether);
        _execute(nativeId, 0);
        _price(61_000e8, _t(1) - 10);
        _execute(nativeId, 1);
        _price(62_000e8, _t(2) - 10);
        _execute(nativeId, 2);
        // The attacker re-enters claim from its receive hook: the guard reverts the inner call, so the payout fails.
        vm.expectRevert();
        attacker.claim(0);
        assertEq(address(market).balance, 2 ether);
        // Re-entering a different function (bet) is blocked too.
        attacker.setMode(2);
        vm.expectRevert();
        attacker.claim(0);
        // A well-behaved claim by the same contract works and pays once.
        attacker.setMode(0);
        attacker.claim(0);
        assertEq(address(attacker).balance, 9 ether + 1.94 ether);
    }

    // ----- fuzz --------------------------------------------------------------------------------------------------

    // ----- review cases (issue 13) ---------------------------------------------------------------------------

    /// Item 1: a bettor watching the exchange used to bet at T(1) - 1 with the lock price already known, win if the
    /// feed moved their way and get everything back on the tie if it did not. Betting now closes CUTOFF seconds
    /// before the lock (so the lock price can still move after the last bet) and a tie keeps the fee.
    function test_lateBettorHoldsNoFreeOption() public {
        vm.warp(GENESIS + 10);
        _betNative(alice, 0, UP, 1 ether);
        _betNative(carol, 0, DOWN, 1 ether);
        _price(60_000e8, _t(1) - 100); // the feed's last update before the lock
        // The last second before the lock is closed...
        vm.warp(_t(1) - 1);
        vm.expectRevert(
            abi.encodeWithSelector(IKronosMarket.BettingClosed.selector, nativeId, 0, _t(0), _t(1) - CUTOFF, _t(1) - 1)
        );
        _betNative(bob, 0, UP, 2 ether);
        // ...so the late bettor goes in at the cutoff, and the feed does not move before the close: a tie.
        vm.warp(_t(1) - CUTOFF - 1);
        _betNative(bob, 0, UP, 2 ether);
        _execute(nativeId, 0);
        _execute(nativeId, 1);
        _price(60_000e8, _t(2) - 10); // a heartbeat with the same answer
        _execute(nativeId, 2);
        IKronosMarket.Round memory r = market.getRound(nativeId, 0);
        assertEq(uint8(r.outcome), uint8(IKronosMarket.Outcome.Tie));
        // The option was not free: the tie cost him the fee (3%).
        uint256 back = market.claimable(nativeId, 0, bob);
        assertEq(back, 1.94 ether);
        assertLt(back, 2 ether);
        vm.prank(bob);
        market.claim(nativeId, _one(0));
    }

    /// Item 1: with the cutoff, a feed update between the last bet and the lock sets the lock price.
    function test_lockPriceCanMoveAfterTheLastBet() public {
        vm.warp(_t(1) - CUTOFF - 1);
        _betNative(alice, 0, UP, 1 ether);
        _betNative(carol, 0, DOWN, 1 ether);
        _price(61_000e8, _t(1) - 5); // after betting closed
        _execute(nativeId, 1);
        assertEq(market.getCheckpoint(nativeId, 1).price, 61_000e8);
    }

    /// Review of 9726aac, item 2: a one-sided round that tied used to be settled with the fee while a one-sided round
    /// with a winner was refunded. A tie on a one-sided or empty pool is now refunded like any one-sided pool.
    function test_tieOnAOneSidedOrEmptyPoolIsRefunded() public {
        vm.warp(GENESIS + 10);
        _betNative(alice, 0, UP, 1 ether);
        _execute(nativeId, 0);
        _price(61_000e8, _t(1) - 10);
        _execute(nativeId, 1);
        _price(61_000e8, _t(2) - 10);
        vm.expectEmit(true, true, false, true, address(market));
        emit IKronosMarket.RoundCancelled(
            nativeId, 0, IKronosMarket.CancelReason.OneSidedPool, IKronosMarket.Outcome.Tie
        );
        _execute(nativeId, 2);
        IKronosMarket.Round memory r = market.getRound(nativeId, 0);
        assertEq(uint8(r.state), uint8(IKronosMarket.RoundState.Cancelled));
        assertEq(uint8(r.reason), uint8(IKronosMarket.CancelReason.OneSidedPool));
        assertEq(uint8(r.outcome), uint8(IKronosMarket.Outcome.Tie));
        assertTrue(market.refundable(nativeId, 0, alice));
        assertEq(market.claimable(nativeId, 0, alice), 1 ether);
        assertEq(market.treasuryBalance(address(0)), 0);
        // The outcome is still a tie for forecast scoring.
        (bool fin, IKronosMarket.Outcome o) = market.roundResult(nativeId, 0);
        assertTrue(fin);
        assertEq(uint8(o), uint8(IKronosMarket.Outcome.Tie));
        // An empty round that ties writes nothing, like an empty round with a winner.
        _price(61_000e8, _t(3) - 10);
        vm.expectEmit(true, true, false, true, address(market));
        emit IKronosMarket.RoundCancelled(
            nativeId, 1, IKronosMarket.CancelReason.OneSidedPool, IKronosMarket.Outcome.Tie
        );
        _execute(nativeId, 3);
        assertEq(uint8(market.getRound(nativeId, 1).state), uint8(IKronosMarket.RoundState.None));
        vm.prank(alice);
        assertEq(market.claim(nativeId, _one(0)), 1 ether);
    }

    /// Item 3a: a sequencer outage that started before T(1) (L1 time) but lands on L2 after T(1). Executing at
    /// T(1) + 1 used to record a valid price; the market now waits DELAY seconds, by which time the outage is seen.
    function test_executeWaitsForAnOutageRelayedLate() public {
        MockBaseSequencerUptimeFeed seq = _newSequencer(false, uint64(GENESIS - 7200));
        uint256 id = _l2Market(seq);
        _price(61_000e8, _t(1) - 10);
        vm.warp(_t(1) + 1);
        ChainlinkRounds.RoundProof memory pp = _proof(feed, _t(1), false);
        ChainlinkRounds.RoundProof memory sp = _proof(seq, _t(1), true);
        vm.expectRevert(abi.encodeWithSelector(IKronosMarket.CheckpointNotDue.selector, id, 1, _t(1) + DELAY));
        market.execute(id, 1, pp, sp);
        vm.warp(_t(1) + 20);
        seq.updateStatus(true, uint64(_t(1) - 5)); // down since T(1) - 5 on L1, relayed 20 s late
        _execute(id, 1);
        assertEq(uint8(market.getCheckpoint(id, 1).status), uint8(IKronosMarket.CheckpointStatus.SequencerDown));
        assertEq(uint8(market.getRound(id, 0).state), uint8(IKronosMarket.RoundState.Cancelled));
    }

    /// Item 3b: a feed whose updatedAt is the observation time (Chainlink's DataFeedsCache): a report observed at
    /// T(1) - 5 lands at T(1) + 20. Before it lands, round 2 is provably "latest" at T(1); after, round 3 is. The
    /// delay leaves only the second proof.
    function test_executeWaitsForAReportTimedAtItsObservation() public {
        _price(61_000e8, _t(1) - 60); // round 2
        vm.warp(_t(1) + 1);
        vm.expectRevert(abi.encodeWithSelector(IKronosMarket.CheckpointNotDue.selector, nativeId, 1, _t(1) + DELAY));
        market.execute(nativeId, 1, ChainlinkRounds.RoundProof(2, 0), ChainlinkRounds.RoundProof(0, 0));
        vm.warp(_t(1) + 20);
        feed.updateRoundData(3, 65_000e8, _t(1) - 5, _t(1) - 5); // round 3, observed at T(1) - 5
        vm.warp(_t(1) + DELAY);
        vm.expectRevert(abi.encodeWithSelector(ChainlinkRounds.ProofNotLatest.selector, 2, 3));
        market.execute(nativeId, 1, ChainlinkRounds.RoundProof(2, 0), ChainlinkRounds.RoundProof(0, 0));
        _execute(nativeId, 1);
        assertEq(market.getCheckpoint(nativeId, 1).price, 65_000e8);
    }

    /// Item 3c: a proxy upgrade right after T(1) to an aggregator that already reported before T(1) changes the
    /// answer for T(1); executing before the upgrade is no longer possible.
    function test_executeWaitsAcrossAProxyUpgrade() public {
        PhasedAggregatorProxy proxy = new PhasedAggregatorProxy(address(feed), "BTC / USD");
        uint256 id = _createMarket(address(proxy), address(0), address(0));
        _price(61_000e8, _t(1) - 60); // phase 1 round 2
        vm.warp(_t(1) - 5);
        MockV3Aggregator next = new MockV3Aggregator(8, 59_000e8); // reports at T(1) - 5
        vm.warp(_t(1) + 1);
        uint80 p1r2 = uint80((1 << 64) | 2);
        vm.expectRevert(abi.encodeWithSelector(IKronosMarket.CheckpointNotDue.selector, id, 1, _t(1) + DELAY));
        market.execute(id, 1, ChainlinkRounds.RoundProof(p1r2, 0), ChainlinkRounds.RoundProof(0, 0));
        vm.warp(_t(1) + 30);
        proxy.setAggregator(address(next));
        vm.warp(_t(1) + DELAY);
        uint80 p2r1 = uint80((2 << 64) | 1);
        market.execute(id, 1, ChainlinkRounds.RoundProof(p2r1, 0), ChainlinkRounds.RoundProof(0, 0));
        assertEq(market.getCheckpoint(id, 1).price, 59_000e8);
    }

    /// Item 6: integer division leaves up to one unit per winner in the contract; it used to stay there for ever.
    /// Once every winner of a round is paid, the remainder goes to the treasury.
    function test_roundingDustGoesToTheTreasury() public {
        vm.warp(GENESIS + 10);
        _betNative(alice, 0, UP, 1 ether);
        _betNative(bob, 0, UP, 2 ether);
        _betNative(carol, 0, DOWN, 1 ether);
        _execute(nativeId, 0);
        _price(61_000e8, _t(1) - 10);
        _execute(nativeId, 1);
        _price(62_000e8, _t(2) - 10);
        _execute(nativeId, 2); // reward 3.88 ether shared 1:2 -> 1.29333... and 2.58666..., one wei left over
        uint256 treasuryBefore = market.treasuryBalance(address(0));
        vm.prank(alice);
        assertEq(market.claim(nativeId, _one(0)), 1_293_333_333_333_333_333);
        assertEq(market.treasuryBalance(address(0)), treasuryBefore); // not every winner is paid yet
        vm.expectEmit(true, true, false, true, address(market));
        emit IKronosMarket.DustSwept(nativeId, 0, address(0), 1);
        vm.prank(bob);
        assertEq(market.claim(nativeId, _one(0)), 2_586_666_666_666_666_666);
        assertEq(market.treasuryBalance(address(0)), treasuryBefore + 1);
        // Nothing is stranded: the contract holds exactly the fees it owes.
        assertEq(
            address(market).balance, market.treasuryBalance(address(0)) + market.settlerRewards(keeper, address(0))
        );
    }

    /// Item 6: renouncing ownership would strand the treasury's fees; it is disabled.
    function test_renounceOwnershipIsDisabled() public {
        vm.prank(owner);
        vm.expectRevert(IKronosMarket.RenounceDisabled.selector);
        market.renounceOwnership();
        assertEq(market.owner(), owner);
    }

    function testFuzz_payoutsNeverExceedThePoolAndFeeIsCapped(uint96 a, uint96 b, uint96 c, bool up) public {
        uint256 aa = bound(uint256(a), 0.001 ether, 100 ether);
        uint256 bb = bound(uint256(b), 0.001 ether, 100 ether);
        uint256 cc = bound(uint256(c), 0.001 ether, 100 ether);
        vm.warp(GENESIS + 10);
        _betNative(alice, 0, UP, aa);
        _betNative(bob, 0, UP, bb);
        _betNative(carol, 0, DOWN, cc);
        _execute(nativeId, 0);
        _price(61_000e8, _t(1) - 10);
        _execute(nativeId, 1);
        _price(up ? int256(62_000e8) : int256(60_000e8), _t(2) - 10);
        _execute(nativeId, 2);
        uint256 total = aa + bb + cc;
        uint256 paid = market.claimable(nativeId, 0, alice) + market.claimable(nativeId, 0, bob)
            + market.claimable(nativeId, 0, carol);
        uint256 fee = market.treasuryBalance(address(0)) + market.settlerRewards(keeper, address(0));
        assertLe(paid + fee, total);
        assertLe(fee, total / 10);
        assertLe(total - paid - fee, 3); // rounding dust only
        // Once everyone has claimed, the dust has gone to the treasury: only fees are left.
        address[3] memory who = [alice, bob, carol];
        for (uint256 i; i < 3; ++i) {
            if (market.claimable(nativeId, 0, who[i]) == 0) continue;
            vm.prank(who[i]);
            market.claim(nativeId, _one(0));
        }
        assertEq(
            address(market).balance, market.treasuryBalance(address(0)) + market.settlerRewards(keeper, address(0))
        );
    }

    function testFuzz_bettingWindow(uint32 offset, uint8 epoch) public {
        uint256 at = GENESIS + (uint256(offset) % (INTERVAL * 300));
        vm.warp(at);
        uint256 start = _t(epoch);
        bool open = at >= start && at < start + INTERVAL - CUTOFF;
        if (!open) vm.expectRevert();
        _betNative(alice, epoch, UP, 0.01 ether);
    }
}

/// @dev Tries to re-enter the market from its receive hook.
contract Reenterer {
    KronosMarket internal immutable m;
    uint256 internal immutable id;
    uint8 internal mode = 1; // 1: re-enter claim, 2: re-enter bet, 0: behave

    constructor(KronosMarket m_, uint256 id_) {
        m = m_;
        id = id_;
    }

    function setMode(uint8 mode_) external {
        mode = mode_;
    }

    function bet(uint256 epoch, IKronosMarket.Position p, uint256 amount) external {
        m.bet{value: amount}(id, epoch, p, amount);
    }

    function claim(uint256 epoch) external {
        uint256[] memory e = new uint256[](1);
        e[0] = epoch;
        m.claim(id, e);
    }

    receive() external payable {
        uint256[] memory e = new uint256[](1);
        if (mode == 1) m.claim(id, e);
        if (mode == 2) m.bet{value: 1 ether}(id, 1, IKronosMarket.Position.Up, 1 ether);
    }
}
