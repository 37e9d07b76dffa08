// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {IKronosMarket} from "../src/interfaces/IKronosMarket.sol";
import {IPredictionRegistry} from "../src/interfaces/IPredictionRegistry.sol";
import {PredictionRegistry} from "../src/PredictionRegistry.sol";
import {MarketBase} from "./utils/MarketBase.sol";

contract PredictionRegistryTest is MarketBase {
    PredictionRegistry internal registry;
    address internal ai = makeAddr("ai");
    address internal copycat = makeAddr("copycat");
    uint256 internal constant REVEAL_WINDOW = 1 days;
    bytes32 internal constant SALT = keccak256("salt");

    function setUp() public override {
        super.setUp();
        registry = new PredictionRegistry(market, REVEAL_WINDOW);
    }

    function _commit(address who, uint256 epoch, bool up, uint16 p) internal returns (bytes32 h) {
        h = registry.commitmentHash(who, nativeId, epoch, up, p, SALT);
        vm.prank(who);
        registry.commit(nativeId, epoch, h);
    }

    /// @dev Settles round 0 as Up (61000 -> 62000), Down, or a tie.
    function _settleRound0(int256 closePrice) internal {
        _execute(nativeId, 0);
        _price(61_000e8, _t(1) - 10);
        _execute(nativeId, 1);
        _price(closePrice, _t(2) - 10);
        _execute(nativeId, 2);
    }

    function test_commitRevealHitScoresBrier() public {
        vm.warp(GENESIS + 5);
        _commit(ai, 0, true, 7000);
        assertEq(registry.trackRecord(ai).committed, 1);
        _settleRound0(62_000e8);
        vm.prank(ai);
        vm.expectEmit(true, true, true, true, address(registry));
        emit IPredictionRegistry.Revealed(ai, nativeId, 0, true, 7000, uint8(IKronosMarket.Outcome.Up), true, 9e6);
        registry.reveal(nativeId, 0, true, 7000, SALT);
        IPredictionRegistry.TrackRecord memory r = registry.trackRecord(ai);
        assertEq(r.hits, 1);
        assertEq(r.misses, 0);
        assertEq(r.brierSum, 9e6); // (0.7 - 1)^2 = 0.09 -> 0.09 * 1e8
        assertEq(
            uint8(registry.getCommitment(ai, nativeId, 0).status), uint8(IPredictionRegistry.CommitStatus.Revealed)
        );
    }

    function test_missScoresBrier() public {
        vm.warp(GENESIS + 5);
        _commit(ai, 0, true, 6000);
        _settleRound0(60_000e8);
        vm.prank(ai);
        registry.reveal(nativeId, 0, true, 6000, SALT);
        IPredictionRegistry.TrackRecord memory r = registry.trackRecord(ai);
        assertEq(r.misses, 1);
        assertEq(r.brierSum, 36e6); // (0.6 - 0)^2
    }

    function test_tieVoidsTheForecast() public {
        vm.warp(GENESIS + 5);
        _commit(ai, 0, false, 4000);
        _settleRound0(61_000e8);
        vm.prank(ai);
        registry.reveal(nativeId, 0, false, 4000, SALT);
        IPredictionRegistry.TrackRecord memory r = registry.trackRecord(ai);
        assertEq(r.voided, 1);
        assertEq(r.hits + r.misses, 0);
        assertEq(r.brierSum, 0);
    }

    function test_commitAfterCutoffIsRejectedAndReplacementBeforeItIsAllowed() public {
        vm.warp(GENESIS + 5);
        _commit(ai, 0, true, 9000);
        vm.warp(_t(1) - CUTOFF - 1);
        _commit(ai, 0, false, 3000); // changed its mind before betting closed
        assertEq(registry.trackRecord(ai).committed, 1);
        assertEq(registry.openCommitments(ai), 1);
        // Commitments close with betting, the market's cutoff before the lock.
        vm.warp(_t(1) - CUTOFF);
        bytes32 h = registry.commitmentHash(ai, nativeId, 0, true, 9000, SALT);
        vm.prank(ai);
        vm.expectRevert(abi.encodeWithSelector(IPredictionRegistry.CommitTooLate.selector, nativeId, 0, _t(1) - CUTOFF));
        registry.commit(nativeId, 0, h);
        _settleRound0(60_000e8);
        // Only the last commitment reveals.
        vm.prank(ai);
        vm.expectRevert();
        registry.reveal(nativeId, 0, true, 9000, SALT);
        vm.prank(ai);
        registry.reveal(nativeId, 0, false, 3000, SALT);
        assertEq(registry.trackRecord(ai).hits, 1);
    }

    function test_revealNeedsAFinalOutcome() public {
        vm.warp(GENESIS + 5);
        _commit(ai, 0, true, 7000);
        _execute(nativeId, 0);
        _price(61_000e8, _t(1) - 10);
        _execute(nativeId, 1);
        vm.prank(ai);
        vm.expectRevert(abi.encodeWithSelector(IPredictionRegistry.OutcomeNotFinal.selector, nativeId, 0));
        registry.reveal(nativeId, 0, true, 7000, SALT);
    }

    function test_revealChecksTheCommitment() public {
        vm.warp(GENESIS + 5);
        bytes32 h = _commit(ai, 0, true, 7000);
        _settleRound0(62_000e8);
        bytes32 wrong = registry.commitmentHash(ai, nativeId, 0, true, 7100, SALT);
        vm.prank(ai);
        vm.expectRevert(abi.encodeWithSelector(IPredictionRegistry.CommitmentMismatch.selector, h, wrong));
        registry.reveal(nativeId, 0, true, 7100, SALT);
        vm.prank(bob);
        vm.expectRevert(abi.encodeWithSelector(IPredictionRegistry.NoCommitment.selector, bob, nativeId, 0));
        registry.reveal(nativeId, 0, true, 7000, SALT);
        vm.prank(ai);
        registry.reveal(nativeId, 0, true, 7000, SALT);
        vm.prank(ai);
        vm.expectRevert(
            abi.encodeWithSelector(
                IPredictionRegistry.AlreadyFinal.selector, ai, nativeId, 0, IPredictionRegistry.CommitStatus.Revealed
            )
        );
        registry.reveal(nativeId, 0, true, 7000, SALT);
    }

    function test_copiedCommitmentCannotBeRevealedByTheCopier() public {
        vm.warp(GENESIS + 5);
        bytes32 h = _commit(ai, 0, true, 8000);
        vm.prank(copycat);
        registry.commit(nativeId, 0, h);
        _settleRound0(62_000e8);
        vm.prank(ai);
        registry.reveal(nativeId, 0, true, 8000, SALT); // now public
        vm.prank(copycat);
        vm.expectRevert();
        registry.reveal(nativeId, 0, true, 8000, SALT);
    }

    function test_inconsistentForecastCannotBeRevealed() public {
        vm.warp(GENESIS + 5);
        _commit(ai, 0, true, 3000); // says Up with 30% for Up
        _settleRound0(62_000e8);
        vm.prank(ai);
        vm.expectRevert(abi.encodeWithSelector(IPredictionRegistry.InconsistentForecast.selector, true, 3000));
        registry.reveal(nativeId, 0, true, 3000, SALT);
        vm.warp(registry.revealDeadline(nativeId, 0) + 1);
        registry.expire(ai, nativeId, 0);
        assertEq(registry.trackRecord(ai).misses, 1);
    }

    function test_unrevealedCommitmentExpiresAsAMissWithWorstBrier() public {
        vm.warp(GENESIS + 5);
        _commit(ai, 0, true, 9000);
        _settleRound0(62_000e8);
        uint256 deadline = registry.revealDeadline(nativeId, 0);
        assertEq(deadline, _t(2) + WINDOW + REVEAL_WINDOW);
        vm.expectRevert(abi.encodeWithSelector(IPredictionRegistry.RevealWindowOpen.selector, nativeId, 0, deadline));
        registry.expire(ai, nativeId, 0);
        vm.warp(deadline + 1);
        vm.prank(ai);
        vm.expectRevert(abi.encodeWithSelector(IPredictionRegistry.RevealWindowClosed.selector, nativeId, 0, deadline));
        registry.reveal(nativeId, 0, true, 9000, SALT);
        vm.prank(carol); // anyone
        registry.expire(ai, nativeId, 0);
        IPredictionRegistry.TrackRecord memory r = registry.trackRecord(ai);
        assertEq(r.misses, 1);
        assertEq(r.expired, 1);
        assertEq(r.brierSum, 1e8);
        vm.expectRevert(
            abi.encodeWithSelector(
                IPredictionRegistry.AlreadyFinal.selector, ai, nativeId, 0, IPredictionRegistry.CommitStatus.Expired
            )
        );
        registry.expire(ai, nativeId, 0);
        vm.expectRevert(abi.encodeWithSelector(IPredictionRegistry.NoCommitment.selector, bob, nativeId, 0));
        registry.expire(bob, nativeId, 0);
    }

    /// Issue 13, item 2: an unrevealed commitment past its deadline used to stay out of the record until someone
    /// called `expire`; now `trackRecord` counts it at once.
    function test_unrevealedCommitmentCountsAsExpiredWithoutAnyCall() public {
        vm.warp(GENESIS + 5);
        _commit(ai, 0, true, 9000); // a losing forecast, never revealed
        vm.warp(_t(1) + 5);
        _commit(ai, 1, true, 8000); // revealed below
        vm.warp(GENESIS + 5);
        _settleRound0(60_000e8);
        uint256 deadline = registry.revealDeadline(nativeId, 0);
        vm.warp(deadline);
        IPredictionRegistry.TrackRecord memory r = registry.trackRecord(ai);
        assertEq(r.expired, 0); // still inside the reveal window
        assertEq(r.misses, 0);
        vm.warp(deadline + 1);
        r = registry.trackRecord(ai);
        assertEq(r.committed, 2);
        assertEq(r.expired, 1);
        assertEq(r.misses, 1);
        assertEq(r.brierSum, 1e8);
        // Round 1 expired unsettled (its own deadline is one interval later): a void reveal removes it from the
        // open list; expiring round 0 explicitly then changes nothing in the record.
        assertEq(registry.openCommitments(ai), 2);
        vm.prank(ai);
        registry.reveal(nativeId, 1, true, 8000, SALT);
        assertEq(registry.openCommitments(ai), 1);
        assertEq(registry.getCommitment(ai, nativeId, 0).openIndex, 0);
        registry.expire(ai, nativeId, 0);
        assertEq(registry.openCommitments(ai), 0);
        IPredictionRegistry.TrackRecord memory after_ = registry.trackRecord(ai);
        assertEq(after_.expired, 1);
        assertEq(after_.misses, 1);
        assertEq(after_.voided, 1);
        assertEq(after_.brierSum, 1e8);
    }

    /// @dev Commits `ai` to epochs `from` .. `to - 1` of the native market in `reg`, each at its round's start.
    function _commitEach(PredictionRegistry reg, uint256 from, uint256 to) internal {
        for (uint256 e = from; e < to; ++e) {
            vm.warp(_t(e) + 1);
            vm.prank(ai);
            reg.commit(nativeId, e, bytes32(e + 1));
        }
    }

    function test_openCommitmentsAreCapped() public {
        // A reveal window long enough that none of the 1,024 commitments reaches its deadline.
        PredictionRegistry reg = new PredictionRegistry(market, 30 days);
        uint256 max = reg.MAX_OPEN();
        _commitEach(reg, 0, max);
        vm.warp(_t(max) + 1);
        vm.prank(ai);
        vm.expectRevert(abi.encodeWithSelector(IPredictionRegistry.TooManyOpen.selector, ai, max));
        reg.commit(nativeId, max, bytes32(0));
        // Replacing an open commitment is still allowed, and expiring one frees a place.
        vm.warp(_t(max - 1) + 1);
        vm.prank(ai);
        reg.commit(nativeId, max - 1, bytes32(uint256(7)));
        vm.warp(reg.revealDeadline(nativeId, 0) + 1);
        assertEq(reg.trackRecord(ai).expired, 1);
        reg.expire(ai, nativeId, 0);
        assertEq(reg.openCommitments(ai), max - 1);
        uint256 e = (block.timestamp - GENESIS) / INTERVAL;
        vm.prank(ai);
        reg.commit(nativeId, e, bytes32(0));
        assertEq(reg.openCommitments(ai), max);
    }

    /// Review of 9726aac, item 1: commitments that could no longer be revealed stayed in the open list for good, and
    /// once 1,024 had piled up every commit reverted TooManyOpen. A commit that finds the list full now expires up
    /// to MAX_FOLD past-deadline entries into the record, as `expire` would.
    function test_fullListFoldsPastDeadlineCommitments() public {
        uint256 max = registry.MAX_OPEN();
        uint256 fold = registry.MAX_FOLD();
        _commitEach(registry, 0, max);
        // At T(max) + 1 the commitments of rounds 0 .. 722 are past their deadline (T(e + 2) + WINDOW + 1 day).
        uint256 pastDeadline = 723;
        assertLt(registry.revealDeadline(nativeId, pastDeadline - 1), _t(max) + 1);
        assertGe(registry.revealDeadline(nativeId, pastDeadline), _t(max) + 1);
        vm.warp(_t(max) + 1);
        IPredictionRegistry.TrackRecord memory before = registry.trackRecord(ai);
        assertEq(before.expired, pastDeadline);
        assertEq(registry.openCommitments(ai), max);
        vm.recordLogs();
        uint256 gasBefore = gasleft();
        vm.prank(ai);
        registry.commit(nativeId, max, bytes32(0));
        uint256 used = gasBefore - gasleft();
        assertEq(vm.getRecordedLogs().length, fold + 1); // MAX_FOLD Expired events, then Committed
        assertLt(used, 5_000_000);
        assertEq(registry.openCommitments(ai), max - fold + 1);
        // The entries folded are the last past-deadline ones in the list (scanned from its end); the list's last
        // entries took their places.
        assertEq(
            uint8(registry.getCommitment(ai, nativeId, pastDeadline - 1).status),
            uint8(IPredictionRegistry.CommitStatus.Expired)
        );
        assertEq(registry.getCommitment(ai, nativeId, pastDeadline - 1).openIndex, 0);
        assertEq(
            uint8(registry.getCommitment(ai, nativeId, pastDeadline - fold - 1).status),
            uint8(IPredictionRegistry.CommitStatus.Committed)
        );
        assertEq(registry.getCommitment(ai, nativeId, max - 1).openIndex, pastDeadline - 1);
        assertEq(registry.getCommitment(ai, nativeId, max).openIndex, max - fold);
        // The record is unchanged by the fold: the view counted those entries as expired already.
        IPredictionRegistry.TrackRecord memory after_ = registry.trackRecord(ai);
        assertEq(after_.committed, before.committed + 1);
        assertEq(after_.expired, before.expired);
        assertEq(after_.misses, before.misses);
        assertEq(after_.brierSum, before.brierSum);
        // A folded commitment is final; one left in the list is still expired by hand.
        vm.expectRevert(
            abi.encodeWithSelector(
                IPredictionRegistry.AlreadyFinal.selector,
                ai,
                nativeId,
                pastDeadline - 1,
                IPredictionRegistry.CommitStatus.Expired
            )
        );
        registry.expire(ai, nativeId, pastDeadline - 1);
        registry.expire(ai, nativeId, 0);
        assertEq(registry.trackRecord(ai).expired, before.expired);
        assertEq(registry.openCommitments(ai), max - fold);
    }

    /// Review of 9726aac, item 1: commit accepted rounds that had not started, so a publisher could fill its list
    /// ahead. Commits now open with the round's betting, at T(epoch).
    function test_commitBeforeTheRoundStartsIsRejected() public {
        vm.warp(GENESIS - 1);
        bytes32 h = registry.commitmentHash(ai, nativeId, 0, true, 7000, SALT);
        vm.prank(ai);
        vm.expectRevert(abi.encodeWithSelector(IPredictionRegistry.CommitTooEarly.selector, nativeId, 0, GENESIS));
        registry.commit(nativeId, 0, h);
        vm.warp(GENESIS + 5);
        h = registry.commitmentHash(ai, nativeId, 1, true, 7000, SALT);
        vm.prank(ai);
        vm.expectRevert(abi.encodeWithSelector(IPredictionRegistry.CommitTooEarly.selector, nativeId, 1, _t(1)));
        registry.commit(nativeId, 1, h);
        vm.warp(_t(1) - 1);
        vm.prank(ai);
        vm.expectRevert(abi.encodeWithSelector(IPredictionRegistry.CommitTooEarly.selector, nativeId, 1, _t(1)));
        registry.commit(nativeId, 1, h);
        vm.warp(_t(1));
        vm.prank(ai);
        registry.commit(nativeId, 1, h);
        assertEq(registry.openCommitments(ai), 1);
    }

    /// Review of 9726aac, item 5: closing a commitment moves the list's last entry into its place and must record
    /// the new position, or closing the moved one later reads past the list's end.
    function test_closingMovesTheLastCommitmentAndItsIndex() public {
        vm.warp(GENESIS + 5);
        _commit(ai, 0, true, 7000); // A
        _execute(nativeId, 0);
        _price(61_000e8, _t(1) - 10);
        vm.warp(_t(1) + 5);
        _commit(ai, 1, true, 7000); // B
        _execute(nativeId, 1);
        _price(62_000e8, _t(2) - 10);
        vm.warp(_t(2) + 5);
        _commit(ai, 2, false, 3000); // C
        _execute(nativeId, 2); // round 0 settles Up
        assertEq(registry.getCommitment(ai, nativeId, 2).openIndex, 2);
        // Revealing A moves C into A's place.
        vm.prank(ai);
        registry.reveal(nativeId, 0, true, 7000, SALT);
        assertEq(registry.openCommitments(ai), 2);
        assertEq(registry.getCommitment(ai, nativeId, 0).openIndex, 0);
        assertEq(registry.getCommitment(ai, nativeId, 2).openIndex, 0);
        assertEq(registry.getCommitment(ai, nativeId, 1).openIndex, 1);
        // Round 2 never settles; its void reveal closes C from its new place and moves B there.
        vm.warp(_t(4) + WINDOW + 1);
        vm.prank(ai);
        registry.reveal(nativeId, 2, false, 3000, SALT);
        assertEq(registry.openCommitments(ai), 1);
        assertEq(registry.getCommitment(ai, nativeId, 1).openIndex, 0);
        assertEq(
            uint8(registry.getCommitment(ai, nativeId, 1).status), uint8(IPredictionRegistry.CommitStatus.Committed)
        );
        // B, the last one, is expired from index 0.
        vm.warp(registry.revealDeadline(nativeId, 1) + 1);
        registry.expire(ai, nativeId, 1);
        assertEq(registry.openCommitments(ai), 0);
        IPredictionRegistry.TrackRecord memory r = registry.trackRecord(ai);
        assertEq(r.committed, 3);
        assertEq(r.hits, 1);
        assertEq(r.voided, 1);
        assertEq(r.expired, 1);
    }

    function test_anyoneMayPublishAndRecordsAreSeparate() public {
        vm.warp(GENESIS + 5);
        _commit(ai, 0, true, 7000);
        _commit(bob, 0, false, 2000);
        _settleRound0(62_000e8);
        vm.prank(ai);
        registry.reveal(nativeId, 0, true, 7000, SALT);
        vm.prank(bob);
        registry.reveal(nativeId, 0, false, 2000, SALT);
        assertEq(registry.trackRecord(ai).hits, 1);
        assertEq(registry.trackRecord(bob).misses, 1);
        assertEq(registry.trackRecord(bob).brierSum, 64e6);
    }

    function testFuzz_brierMatchesDefinition(uint16 p, bool wentUp) public {
        p = uint16(bound(p, 0, 10_000));
        bool up = p >= 5000;
        vm.warp(GENESIS + 5);
        _commit(ai, 0, up, p);
        _settleRound0(wentUp ? int256(62_000e8) : int256(60_000e8));
        vm.prank(ai);
        registry.reveal(nativeId, 0, up, p, SALT);
        int256 o = wentUp ? int256(10_000) : int256(0);
        int256 d = int256(uint256(p)) - o;
        assertEq(uint256(registry.trackRecord(ai).brierSum), uint256(d * d));
        assertEq(registry.trackRecord(ai).hits, up == wentUp ? 1 : 0);
    }
}
