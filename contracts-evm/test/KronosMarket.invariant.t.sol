// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {Test} from "forge-std/Test.sol";
import {AggregatorV3Interface} from "@chainlink/contracts/src/v0.8/shared/interfaces/AggregatorV3Interface.sol";
import {MockV3Aggregator} from "@chainlink/contracts/src/v0.8/shared/mocks/MockV3Aggregator.sol";

import {KronosMarket} from "../src/KronosMarket.sol";
import {IKronosMarket} from "../src/interfaces/IKronosMarket.sol";
import {ChainlinkRounds} from "../src/libraries/ChainlinkRounds.sol";
import {MockERC20} from "./utils/TestTokens.sol";

/// @dev Drives bets, time, prices, checkpoints (in and out of order, some missed), claims and withdrawals, and
/// keeps ghost totals of everything that moved.
contract MarketHandler is Test {
    KronosMarket public immutable market;
    MockV3Aggregator public immutable feed;
    MockERC20 public immutable token;
    address public immutable owner;
    uint256 public immutable genesis;
    uint32 public immutable interval;
    uint32 public immutable cutoff;
    uint32 public immutable delay;
    uint256[2] public ids;
    address[3] public actors;
    address public immutable settler = address(0x5E771E);

    mapping(uint256 market => uint256[]) internal _epochs;
    mapping(uint256 market => mapping(uint256 epoch => bool)) internal _seen;
    mapping(uint256 market => mapping(uint256 epoch => mapping(address => uint256))) public payouts;
    mapping(address token => uint256) public staked;
    mapping(address token => uint256) public paid;
    mapping(uint256 market => mapping(uint256 index => bool)) internal _recorded;
    uint256 public maxPayoutsPerBet;
    uint256 public calls;
    uint256 public executions;
    uint256 public claimsPaid;

    constructor(KronosMarket m, MockV3Aggregator f, MockERC20 t, address owner_, uint256[2] memory ids_) {
        market = m;
        feed = f;
        token = t;
        owner = owner_;
        ids = ids_;
        IKronosMarket.MarketConfig memory c = m.getMarket(ids_[0]);
        genesis = c.genesis;
        interval = c.interval;
        cutoff = c.betCutoff;
        delay = c.executeDelay;
        actors = [address(0xA11CE), address(0xB0B), address(0xCA201)];
        for (uint256 i; i < 3; ++i) {
            vm.deal(actors[i], 1e30);
            t.mint(actors[i], 1e30);
            vm.prank(actors[i]);
            t.approve(address(m), type(uint256).max);
        }
    }

    function epochs(uint256 id) external view returns (uint256[] memory) {
        return _epochs[id];
    }

    function _tokenOf(uint256 id) internal view returns (address) {
        return id == ids[0] ? address(0) : address(token);
    }

    function bet(uint256 actorSeed, uint256 marketSeed, bool up, uint256 amount) external {
        ++calls;
        if (block.timestamp < genesis) return;
        uint256 id = ids[marketSeed % 2];
        address who = actors[actorSeed % 3];
        uint256 epoch = (block.timestamp - genesis) / interval;
        if (block.timestamp + cutoff >= genesis + (epoch + 1) * interval) return; // betting closed
        IKronosMarket.Bet memory b = market.getBet(id, epoch, who);
        IKronosMarket.Position pos = up ? IKronosMarket.Position.Up : IKronosMarket.Position.Down;
        if (b.amount != 0) pos = b.position;
        amount = bound(amount, 1e6, 50 ether);
        vm.prank(who);
        if (id == ids[0]) market.bet{value: amount}(id, epoch, pos, amount);
        else market.bet(id, epoch, pos, amount);
        staked[_tokenOf(id)] += amount;
        if (!_seen[id][epoch]) {
            _seen[id][epoch] = true;
            _epochs[id].push(epoch);
        }
    }

    function warp(uint256 secs) external {
        ++calls;
        vm.warp(block.timestamp + bound(secs, 1, 2 * interval));
    }

    function movePrice(int256 delta) external {
        ++calls;
        int256 p = feed.latestAnswer() + (delta % 500e8);
        if (p < 1000e8) p = 1000e8;
        feed.updateAnswer(p);
    }

    function execute(uint256 marketSeed, uint256 skip) external {
        ++calls;
        if (block.timestamp < genesis + delay) return;
        uint256 id = ids[marketSeed % 2];
        uint256 last = (block.timestamp - delay - genesis) / interval; // latest checkpoint past its delay
        // Pick the oldest unrecorded checkpoint, or (sometimes) one a little later, to exercise catch-up.
        uint256 k = last > 20 ? last - 20 : 0;
        while (k <= last && _recorded[id][k]) ++k;
        if (k > last) return;
        uint256 jump = skip % 3;
        if (k + jump <= last && !_recorded[id][k + jump]) k += jump;
        uint256 t = genesis + k * interval;
        (uint80 latest,,,,) = feed.latestRoundData();
        ChainlinkRounds.RoundProof memory p;
        for (uint80 r = latest; r >= 1; --r) {
            (,,, uint256 updatedAt,) = feed.getRoundData(r);
            if (updatedAt <= t) {
                p = ChainlinkRounds.RoundProof(r, r == latest ? 0 : r + 1);
                break;
            }
        }
        if (p.roundId == 0) return;
        vm.prank(settler);
        market.execute(id, k, p, ChainlinkRounds.RoundProof(0, 0));
        _recorded[id][k] = true;
        ++executions;
    }

    function claim(uint256 actorSeed, uint256 marketSeed, uint256 pick) external {
        ++calls;
        uint256 id = ids[marketSeed % 2];
        uint256[] storage list = _epochs[id];
        if (list.length == 0) return;
        address who = actors[actorSeed % 3];
        uint256 n = 1 + pick % 3;
        uint256[] memory es = new uint256[](n);
        uint256 expected;
        for (uint256 i; i < n; ++i) {
            es[i] = list[(pick / 3 + i) % list.length];
            // A duplicate inside the batch is due only once.
            bool dup;
            for (uint256 j; j < i; ++j) {
                if (es[j] == es[i]) dup = true;
            }
            if (!dup) {
                uint256 due = market.claimable(id, es[i], who);
                if (due > 0) {
                    expected += due;
                    if (++payouts[id][es[i]][who] > maxPayoutsPerBet) maxPayoutsPerBet = payouts[id][es[i]][who];
                }
            }
        }
        if (expected == 0) return;
        vm.prank(who);
        uint256 got = market.claim(id, es);
        assertEq(got, expected, "claim paid what claimable said");
        paid[_tokenOf(id)] += got;
        ++claimsPaid;
    }

    function withdraw(uint256 marketSeed) external {
        ++calls;
        address t = _tokenOf(ids[marketSeed % 2]);
        uint256 amount = market.treasuryBalance(t);
        if (amount == 0) return;
        vm.prank(owner);
        market.withdrawTreasury(t, owner, amount);
        paid[t] += amount;
    }

    function claimReward(uint256 marketSeed) external {
        ++calls;
        address t = _tokenOf(ids[marketSeed % 2]);
        if (market.settlerRewards(settler, t) == 0) return;
        vm.prank(settler);
        paid[t] += market.claimSettlerReward(t);
    }

    /// @dev Everything the market still owes in `id`'s token: bets not yet paid (a settled round's winners their
    /// share, every other round's bettors their stake), plus the treasury and settler balances.
    function owed(uint256 id) public view returns (uint256 total) {
        uint256[] storage list = _epochs[id];
        for (uint256 i; i < list.length; ++i) {
            IKronosMarket.Round memory r = market.getRound(id, list[i]);
            for (uint256 a; a < 3; ++a) {
                IKronosMarket.Bet memory b = market.getBet(id, list[i], actors[a]);
                if (b.amount == 0 || b.claimed) continue;
                if (r.state == IKronosMarket.RoundState.Settled) {
                    // A tie pays both sides from the whole pool.
                    bool tie = r.outcome == IKronosMarket.Outcome.Tie;
                    bool won =
                        tie || (r.outcome == IKronosMarket.Outcome.Up) == (b.position == IKronosMarket.Position.Up);
                    if (won) {
                        uint256 pool = tie
                            ? uint256(r.upAmount) + r.downAmount
                            : r.outcome == IKronosMarket.Outcome.Up ? r.upAmount : r.downAmount;
                        total += (uint256(b.amount) * r.rewardAmount) / pool;
                    }
                } else {
                    total += b.amount;
                }
            }
        }
    }
}

contract KronosMarketInvariantTest is Test {
    KronosMarket internal market;
    MarketHandler internal handler;
    MockERC20 internal token;
    address internal owner = address(0x0DE7);
    uint256[2] internal ids;

    function setUp() public {
        uint256 genesis = 1_700_000_000;
        vm.warp(genesis - 10);
        market = new KronosMarket(owner);
        MockV3Aggregator feed = new MockV3Aggregator(8, 60_000e8);
        token = new MockERC20("USD Coin", "USDC", 6);
        IKronosMarket.CreateMarketArgs memory a = IKronosMarket.CreateMarketArgs({
            feed: address(feed),
            sequencerFeed: address(0),
            token: address(0),
            genesis: uint40(genesis),
            interval: 300,
            maxPriceAge: 400,
            sequencerGrace: 0,
            settleWindow: 1800,
            betCutoff: 30,
            executeDelay: 60,
            minBet: 1e6,
            feeBps: 250,
            settlerRewardBps: 2000
        });
        vm.startPrank(owner);
        ids[0] = market.createMarket(a);
        a.token = address(token);
        ids[1] = market.createMarket(a);
        vm.stopPrank();
        handler = new MarketHandler(market, feed, token, owner, ids);
        targetContract(address(handler));
    }

    function _settlerOwed(address t) internal view returns (uint256) {
        return market.settlerRewards(handler.settler(), t);
    }

    /// The market always holds at least what it owes, per stake token.
    function invariant_solvent() public view {
        uint256 owedNative = handler.owed(ids[0]) + market.treasuryBalance(address(0)) + _settlerOwed(address(0));
        uint256 owedToken = handler.owed(ids[1]) + market.treasuryBalance(address(token)) + _settlerOwed(address(token));
        assertGe(address(market).balance, owedNative, "native: holds less than it owes");
        assertGe(token.balanceOf(address(market)), owedToken, "token: holds less than it owes");
    }

    /// Nothing leaves except what was staked, and the balance is exactly staked minus paid.
    function invariant_paidNeverExceedsStaked() public view {
        assertLe(handler.paid(address(0)), handler.staked(address(0)));
        assertLe(handler.paid(address(token)), handler.staked(address(token)));
        assertEq(address(market).balance, handler.staked(address(0)) - handler.paid(address(0)));
        assertEq(token.balanceOf(address(market)), handler.staked(address(token)) - handler.paid(address(token)));
    }

    /// The handler really reaches settlement and payouts (so the invariants are not vacuous).
    function test_handlerReachesSettlementAndPayouts() public {
        handler.warp(20);
        for (uint256 i; i < 12; ++i) {
            handler.bet(i, i, i % 2 == 0, 1 ether + i);
            handler.movePrice(int256(i * 37e8) - 150e8);
            handler.warp(100);
            handler.execute(i, 0);
        }
        handler.warp(600);
        for (uint256 i; i < 12; ++i) {
            handler.execute(i, 0);
        }
        for (uint256 i; i < 30; ++i) {
            handler.claim(i, i, i);
        }
        handler.withdraw(0);
        handler.claimReward(0);
        assertGt(handler.executions(), 5);
        assertGt(handler.claimsPaid(), 0);
        invariant_solvent();
        invariant_paidNeverExceedsStaked();
        invariant_noDoublePayout();
    }

    /// No bet is ever paid twice.
    function invariant_noDoublePayout() public view {
        assertLe(handler.maxPayoutsPerBet(), 1);
    }
}
