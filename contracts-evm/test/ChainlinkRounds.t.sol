// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {Test} from "forge-std/Test.sol";
import {AggregatorV3Interface} from "@chainlink/contracts/src/v0.8/shared/interfaces/AggregatorV3Interface.sol";
import {MockV3Aggregator} from "@chainlink/contracts/src/v0.8/shared/mocks/MockV3Aggregator.sol";
import {PhasedAggregatorProxy} from "./utils/PhasedAggregatorProxy.sol";
import {
    MockBaseSequencerUptimeFeed
} from "@chainlink/contracts/src/v0.8/l2ep/test/mocks/MockBaseSequencerUptimeFeed.sol";

import {ChainlinkRounds} from "../src/libraries/ChainlinkRounds.sol";

/// @dev Exposes the library so reverts surface as call errors.
contract RoundsHarness {
    function verify(AggregatorV3Interface feed, uint256 t, uint80 roundId, uint80 next, bool byStartedAt)
        external
        view
        returns (uint80, int256)
    {
        ChainlinkRounds.RoundData memory r = ChainlinkRounds.verifyAt(
            feed, t, ChainlinkRounds.RoundProof({roundId: roundId, nextRoundId: next}), byStartedAt
        );
        return (r.roundId, r.answer);
    }
}

contract ChainlinkRoundsTest is Test {
    RoundsHarness internal h;
    MockV3Aggregator internal agg;

    function setUp() public {
        vm.warp(1000);
        h = new RoundsHarness();
        agg = new MockV3Aggregator(8, 100e8); // round 1 at t=1000
        _push(agg, 101e8, 1100); // round 2
        _push(agg, 102e8, 1200); // round 3
        vm.warp(2000);
    }

    function _push(MockV3Aggregator a, int256 answer, uint256 at) internal {
        vm.warp(at);
        a.updateAnswer(answer);
    }

    function _id(uint256 phase, uint256 aggRound) internal pure returns (uint80) {
        return uint80((phase << 64) | aggRound);
    }

    function test_roundInEffectBetweenUpdates() public view {
        (uint80 id, int256 answer) = h.verify(agg, 1150, 2, 3, false);
        assertEq(id, 2);
        assertEq(answer, 101e8);
    }

    function test_roundUpdatedExactlyAtTimestampIsInEffect() public view {
        (uint80 id,) = h.verify(agg, 1100, 2, 3, false);
        assertEq(id, 2);
        (id,) = h.verify(agg, 1099, 1, 2, false);
        assertEq(id, 1);
    }

    function test_earlierRoundIsRejectedWhenSuccessorAlreadyInEffect() public {
        vm.expectRevert(abi.encodeWithSelector(ChainlinkRounds.ProofSuccessorNotAfterTimestamp.selector, 2, 1100, 1150));
        h.verify(agg, 1150, 1, 2, false);
    }

    function test_laterRoundIsRejected() public {
        vm.expectRevert(abi.encodeWithSelector(ChainlinkRounds.ProofRoundAfterTimestamp.selector, 3, 1200, 1150));
        h.verify(agg, 1150, 3, 0, false);
    }

    function test_latestRoundNeedsTimestampInThePast() public {
        (uint80 id,) = h.verify(agg, 1500, 3, 0, false);
        assertEq(id, 3);
        vm.expectRevert(abi.encodeWithSelector(ChainlinkRounds.ProofTimestampNotPast.selector, 2000));
        h.verify(agg, 2000, 3, 0, false);
    }

    function test_notLatestIsRejected() public {
        vm.expectRevert(abi.encodeWithSelector(ChainlinkRounds.ProofNotLatest.selector, 2, 3));
        h.verify(agg, 1150, 2, 0, false);
    }

    function test_missingRoundsAreRejected() public {
        vm.expectRevert(abi.encodeWithSelector(ChainlinkRounds.ProofRoundMissing.selector, 9));
        h.verify(agg, 1150, 9, 10, false);
        vm.expectRevert(abi.encodeWithSelector(ChainlinkRounds.ProofRoundMissing.selector, 4));
        h.verify(agg, 1500, 3, 4, false);
    }

    function test_nonConsecutiveSuccessorIsRejected() public {
        // Skipping from round 1 to round 3 would hide round 2.
        vm.expectRevert(abi.encodeWithSelector(ChainlinkRounds.ProofBadSuccessor.selector, 1, 3));
        h.verify(agg, 1050, 1, 3, false);
    }

    // ----- phases (Chainlink's legacy AggregatorProxy) ---------------------------------------------------------

    function _proxyWithTwoPhases() internal returns (PhasedAggregatorProxy proxy) {
        proxy = new PhasedAggregatorProxy(address(agg), "BTC / USD"); // phase 1: rounds at 1000, 1100, 1200
        vm.warp(1300);
        MockV3Aggregator b = new MockV3Aggregator(8, 200e8); // phase 2 round 1 at 1300
        _push(b, 201e8, 1400); // phase 2 round 2
        proxy.setAggregator(address(b));
        vm.warp(2000);
    }

    function test_seamBetweenPhases() public {
        PhasedAggregatorProxy proxy = _proxyWithTwoPhases();
        (uint80 id, int256 answer) = h.verify(proxy, 1250, _id(1, 3), _id(2, 1), false);
        assertEq(id, _id(1, 3));
        assertEq(answer, 102e8);
        (id, answer) = h.verify(proxy, 1350, _id(2, 1), _id(2, 2), false);
        assertEq(id, _id(2, 1));
        assertEq(answer, 200e8);
        (id,) = h.verify(proxy, 1500, _id(2, 2), 0, false);
        assertEq(id, _id(2, 2));
    }

    function test_seamMustStartAtTheLastRoundOfThePhase() public {
        PhasedAggregatorProxy proxy = _proxyWithTwoPhases();
        vm.expectRevert(abi.encodeWithSelector(ChainlinkRounds.ProofBadSuccessor.selector, _id(1, 2), _id(2, 1)));
        h.verify(proxy, 1150, _id(1, 2), _id(2, 1), false);
    }

    function test_seamMustLandOnFirstRoundOfLaterPhase() public {
        PhasedAggregatorProxy proxy = _proxyWithTwoPhases();
        vm.expectRevert(abi.encodeWithSelector(ChainlinkRounds.ProofBadSuccessor.selector, _id(1, 3), _id(2, 2)));
        h.verify(proxy, 1250, _id(1, 3), _id(2, 2), false);
        vm.expectRevert(abi.encodeWithSelector(ChainlinkRounds.ProofBadSuccessor.selector, _id(2, 1), _id(1, 1)));
        h.verify(proxy, 1350, _id(2, 1), _id(1, 1), false);
    }

    function test_laterPhaseRunningInParallelWins() public {
        // The new aggregator reported before the old one's last round: at t=1175 both phases have a candidate.
        PhasedAggregatorProxy proxy = new PhasedAggregatorProxy(address(agg), "BTC / USD");
        vm.warp(1150);
        MockV3Aggregator b = new MockV3Aggregator(8, 300e8); // phase 2 round 1 at 1150
        _push(b, 301e8, 1250);
        proxy.setAggregator(address(b));
        vm.warp(2000);
        vm.expectRevert(abi.encodeWithSelector(ChainlinkRounds.ProofLaterPhaseInEffect.selector, _id(1, 2), _id(2, 1)));
        h.verify(proxy, 1175, _id(1, 2), _id(1, 3), false);
        (uint80 id,) = h.verify(proxy, 1175, _id(2, 1), _id(2, 2), false);
        assertEq(id, _id(2, 1));
    }

    function test_laterPhaseAcrossAnEmptyPhaseWins() public {
        // Phase 1 keeps reporting (1000, 1100, 1200); phase 2 is empty; phase 3 starts at 1050. At t=1075 the old
        // round 1 (followed by round 2 at 1100) must not be provable: phase 3 was already in effect.
        PhasedAggregatorProxy proxy = new PhasedAggregatorProxy(address(agg), "BTC / USD");
        proxy.setAggregator(address(new EmptyAggregator()));
        vm.warp(1050);
        MockV3Aggregator c = new MockV3Aggregator(8, 500e8); // phase 3 round 1 at 1050
        proxy.setAggregator(address(c));
        vm.warp(2000);
        vm.expectRevert(abi.encodeWithSelector(ChainlinkRounds.ProofLaterPhaseInEffect.selector, _id(1, 1), _id(3, 1)));
        h.verify(proxy, 1075, _id(1, 1), _id(1, 2), false);
        (uint80 id, int256 answer) = h.verify(proxy, 1075, _id(3, 1), 0, false);
        assertEq(id, _id(3, 1));
        assertEq(answer, 500e8);
        // Before phase 3 started, phase 1's round is the answer.
        (id,) = h.verify(proxy, 1049, _id(1, 1), _id(1, 2), false);
        assertEq(id, _id(1, 1));
    }

    function test_emptyPhaseIsSkippedButMustBeEmpty() public {
        PhasedAggregatorProxy proxy = new PhasedAggregatorProxy(address(agg), "BTC / USD");
        MockV3Aggregator empty = MockV3Aggregator(address(new EmptyAggregator()));
        proxy.setAggregator(address(empty));
        vm.warp(1300);
        MockV3Aggregator c = new MockV3Aggregator(8, 400e8); // phase 3 round 1 at 1300
        proxy.setAggregator(address(c));
        vm.warp(2000);
        (uint80 id,) = h.verify(proxy, 1250, _id(1, 3), _id(3, 1), false);
        assertEq(id, _id(1, 3));
        vm.expectRevert(abi.encodeWithSelector(ChainlinkRounds.ProofRoundMissing.selector, _id(2, 1)));
        h.verify(proxy, 1250, _id(1, 3), _id(2, 1), false);
    }

    function test_seamCannotSkipAPhaseWithData() public {
        // Phase 1: 100, 101, 102 at 1000, 1100, 1200; phase 2: 150 at 1300; phase 3: 160 at 1600. At t=1400 the
        // answer is phase 2's 150. A seam from phase 1's last round straight to phase 3 (which starts after t) would
        // prove phase 1's 102 instead: the phase in between has data, so the seam is not the successor.
        PhasedAggregatorProxy proxy = new PhasedAggregatorProxy(address(agg), "BTC / USD");
        vm.warp(1300);
        proxy.setAggregator(address(new MockV3Aggregator(8, 150e8)));
        vm.warp(1600);
        proxy.setAggregator(address(new MockV3Aggregator(8, 160e8)));
        vm.warp(2000);
        vm.expectRevert(abi.encodeWithSelector(ChainlinkRounds.ProofBadSuccessor.selector, _id(1, 3), _id(3, 1)));
        h.verify(proxy, 1400, _id(1, 3), _id(3, 1), false);
        (uint80 id, int256 answer) = h.verify(proxy, 1400, _id(2, 1), _id(3, 1), false);
        assertEq(id, _id(2, 1));
        assertEq(answer, 150e8);
    }

    // ----- sequencer-uptime feeds are timed by startedAt ------------------------------------------------------

    function test_sequencerFeedUsesStartedAt() public {
        vm.warp(5000);
        MockBaseSequencerUptimeFeed seq = new MockBaseSequencerUptimeFeed(address(0), false, true); // up since 5000
        seq.disableAccessCheck();
        vm.warp(6000);
        seq.updateStatus(true, 5900); // went down at 5900 (L1 time), recorded at 6000
        vm.warp(6100);
        seq.updateStatus(false, 6050); // back up at 6050
        vm.warp(7000);
        seq.updateStatus(false, 6900); // same status re-reported: moves updatedAt of round 3 only

        (uint80 id, int256 answer) = h.verify(seq, 5950, 2, 3, true);
        assertEq(id, 2);
        assertEq(answer, 1); // down
        (id, answer) = h.verify(seq, 5800, 1, 2, true);
        assertEq(answer, 0);
        (id, answer) = h.verify(seq, 6500, 3, 0, true);
        assertEq(id, 3);
        assertEq(answer, 0);
    }

    // ----- fuzz: for any timestamp exactly one round verifies --------------------------------------------------

    function testFuzz_exactlyOneRoundProvesAnyTimestamp(uint32[8] memory gaps, uint32 probe) public {
        vm.warp(10_000);
        MockV3Aggregator a = new MockV3Aggregator(8, 1);
        uint256 t = 10_000;
        uint256[] memory times = new uint256[](9);
        times[0] = t;
        for (uint256 i; i < 8; ++i) {
            t += 1 + (uint256(gaps[i]) % 5000);
            times[i + 1] = t;
            _push(a, int256(i + 2), t);
        }
        vm.warp(t + 10);
        uint256 at = 10_000 + (uint256(probe) % (t + 5 - 10_000));
        uint80 expected;
        for (uint80 r = 1; r <= 9; ++r) {
            if (times[r - 1] <= at) expected = r;
        }
        for (uint80 r = 1; r <= 9; ++r) {
            uint80 next = r == 9 ? 0 : r + 1;
            if (r == expected) {
                (uint80 id, int256 answer) = h.verify(a, at, r, next, false);
                assertEq(id, r);
                assertEq(answer, int256(uint256(r)));
            } else {
                try h.verify(a, at, r, next, false) {
                    revert("a wrong round verified");
                } catch {}
            }
        }
    }
}

/// @dev An aggregator that never reported.
contract EmptyAggregator {
    function getRoundData(uint80) external pure returns (uint80, int256, uint256, uint256, uint80) {
        revert("No data present");
    }

    function latestRoundData() external pure returns (uint80, int256, uint256, uint256, uint80) {
        revert("No data present");
    }

    function decimals() external pure returns (uint8) {
        return 8;
    }
}
