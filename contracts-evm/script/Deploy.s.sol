// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {Script, console2} from "forge-std/Script.sol";
import {SafeCast} from "@openzeppelin/contracts/utils/math/SafeCast.sol";
import {MockV3Aggregator} from "@chainlink/contracts/src/v0.8/shared/mocks/MockV3Aggregator.sol";
import {
    MockBaseSequencerUptimeFeed
} from "@chainlink/contracts/src/v0.8/l2ep/test/mocks/MockBaseSequencerUptimeFeed.sol";

import {KronosMarket} from "../src/KronosMarket.sol";
import {PredictionRegistry} from "../src/PredictionRegistry.sol";
import {IKronosMarket} from "../src/interfaces/IKronosMarket.sol";
import {MockERC20} from "../test/utils/TestTokens.sol";
import {PhasedAggregatorProxy} from "../test/utils/PhasedAggregatorProxy.sol";

/// @title Deploy
/// @notice Deploys KronosMarket and PredictionRegistry through the CREATE2 deployer, so that the same owner and
/// salt give the same addresses on every chain, then creates the plan's markets. Idempotent: contracts already at
/// their addresses and markets already created are left as they are.
/// @dev The plan is a JSON file (path in `KRONOS_PLAN`) written by `kronos deploy` from config/chains.toml and
/// config/deploy.toml, where every parameter is validated. The broadcaster key comes from `KRONOS_DEPLOYER_KEY`.
/// With `"localFeeds": true` the script first deploys Chainlink's MockV3Aggregator (and a sequencer-uptime mock for
/// markets that want one) instead of using catalogue addresses — for local anvil chains only.
contract Deploy is Script {
    using SafeCast for uint256;

    struct Result {
        address market;
        address registry;
        uint256[] marketIds;
        address[] feeds;
        address[] sequencers;
        address[] tokens;
        uint256[] genesis;
    }

    function run() external returns (Result memory res) {
        string memory planPath = vm.envString("KRONOS_PLAN");
        string memory plan = vm.readFile(planPath);
        uint256 key = vm.envUint("KRONOS_DEPLOYER_KEY");
        address owner = vm.parseJsonAddress(plan, ".owner");
        bytes32 salt = vm.parseJsonBytes32(plan, ".salt");
        uint256 revealWindow = vm.parseJsonUint(plan, ".revealWindow");
        bool localFeeds = vm.parseJsonBool(plan, ".localFeeds");
        uint256 count = vm.parseJsonUint(plan, ".marketCount");
        // The first round starts at the first interval boundary at least this long after the deployment.
        uint256 genesisDelay = vm.parseJsonUint(plan, ".genesisDelay");

        vm.startBroadcast(key);
        res.market = _deployMarket(salt, owner);
        res.registry = _deployRegistry(salt, res.market, revealWindow);
        res.marketIds = new uint256[](count);
        res.feeds = new address[](count);
        res.sequencers = new address[](count);
        res.tokens = new address[](count);
        res.genesis = new uint256[](count);
        KronosMarket market = KronosMarket(payable(res.market));
        for (uint256 i; i < count; ++i) {
            string memory p = string.concat(".markets[", vm.toString(i), "]");
            IKronosMarket.CreateMarketArgs memory a = _args(plan, p);
            uint256 id = i + 1;
            if (market.marketCount() >= id) {
                // Created by an earlier run: report what is there.
                IKronosMarket.MarketConfig memory m = market.getMarket(id);
                (a.feed, a.sequencerFeed, a.token, a.genesis) = (m.feed, m.sequencerFeed, m.token, m.genesis);
                console2.log("market %s already exists", id);
            } else {
                if (localFeeds) _deployLocalFeeds(plan, p, a);
                a.genesis = (((block.timestamp + genesisDelay) / a.interval + 1) * a.interval).toUint40();
                require(market.owner() == vm.addr(key), "the broadcaster does not own the market contract");
                uint256 created = market.createMarket(a);
                require(created == id, "market ids out of step with the plan");
            }
            res.marketIds[i] = id;
            res.feeds[i] = a.feed;
            res.sequencers[i] = a.sequencerFeed;
            res.tokens[i] = a.token;
            res.genesis[i] = a.genesis;
        }
        vm.stopBroadcast();
        _report(res, planPath, plan);
    }

    function _deployMarket(bytes32 salt, address owner) internal returns (address addr) {
        bytes memory init = abi.encodePacked(type(KronosMarket).creationCode, abi.encode(owner));
        addr = vm.computeCreate2Address(salt, keccak256(init), CREATE2_FACTORY);
        if (addr.code.length == 0) {
            address deployed = address(new KronosMarket{salt: salt}(owner));
            require(deployed == addr, "CREATE2 address mismatch");
        }
    }

    function _deployRegistry(bytes32 salt, address market, uint256 revealWindow) internal returns (address addr) {
        bytes memory init =
            abi.encodePacked(type(PredictionRegistry).creationCode, abi.encode(IKronosMarket(market), revealWindow));
        addr = vm.computeCreate2Address(salt, keccak256(init), CREATE2_FACTORY);
        if (addr.code.length == 0) {
            address deployed = address(new PredictionRegistry{salt: salt}(IKronosMarket(market), revealWindow));
            require(deployed == addr, "CREATE2 address mismatch");
        }
    }

    function _args(string memory plan, string memory p)
        internal
        view
        returns (IKronosMarket.CreateMarketArgs memory a)
    {
        a.feed = vm.parseJsonAddress(plan, string.concat(p, ".feed"));
        a.sequencerFeed = vm.parseJsonAddress(plan, string.concat(p, ".sequencerFeed"));
        a.token = vm.parseJsonAddress(plan, string.concat(p, ".token"));
        a.interval = vm.parseJsonUint(plan, string.concat(p, ".interval")).toUint32();
        a.maxPriceAge = vm.parseJsonUint(plan, string.concat(p, ".maxPriceAge")).toUint32();
        a.sequencerGrace = vm.parseJsonUint(plan, string.concat(p, ".sequencerGrace")).toUint32();
        a.settleWindow = vm.parseJsonUint(plan, string.concat(p, ".settleWindow")).toUint32();
        a.betCutoff = vm.parseJsonUint(plan, string.concat(p, ".betCutoff")).toUint32();
        a.executeDelay = vm.parseJsonUint(plan, string.concat(p, ".executeDelay")).toUint32();
        a.minBet = vm.parseJsonUint(plan, string.concat(p, ".minBet")).toUint128();
        a.feeBps = vm.parseJsonUint(plan, string.concat(p, ".feeBps")).toUint16();
        a.settlerRewardBps = vm.parseJsonUint(plan, string.concat(p, ".settlerRewardBps")).toUint16();
    }

    /// @dev Local chains only: Chainlink's mock aggregator behind a phase-aware proxy that describes itself like the
    /// catalogue's pair (so the keeper's start-up check applies as on a real chain), a sequencer-uptime mock (up) where
    /// the market wants one, and a mintable token where the market stakes an ERC-20.
    function _deployLocalFeeds(string memory plan, string memory p, IKronosMarket.CreateMarketArgs memory a) internal {
        uint8 decimals = vm.parseJsonUint(plan, string.concat(p, ".decimals")).toUint8();
        int256 initial = vm.parseJsonInt(plan, string.concat(p, ".initialAnswer"));
        string memory description = vm.parseJsonString(plan, string.concat(p, ".description"));
        MockV3Aggregator aggregator = new MockV3Aggregator(decimals, initial);
        a.feed = address(new PhasedAggregatorProxy(address(aggregator), description));
        if (vm.parseJsonBool(plan, string.concat(p, ".localSequencer"))) {
            MockBaseSequencerUptimeFeed seq = new MockBaseSequencerUptimeFeed(address(0), false, true);
            seq.disableAccessCheck();
            a.sequencerFeed = address(seq);
        }
        if (vm.parseJsonBool(plan, string.concat(p, ".localToken"))) {
            a.token = address(new MockERC20("Kronos Demo USD", "kUSD", 6));
        }
    }

    function _report(Result memory res, string memory planPath, string memory plan) internal {
        console2.log("KronosMarket       %s", res.market);
        console2.log("PredictionRegistry %s", res.registry);
        string memory obj = "deployment";
        vm.serializeUint(obj, "chainId", block.chainid);
        vm.serializeAddress(obj, "market", res.market);
        vm.serializeAddress(obj, "registry", res.registry);
        vm.serializeUint(obj, "marketIds", res.marketIds);
        vm.serializeAddress(obj, "feeds", res.feeds);
        vm.serializeAddress(obj, "sequencers", res.sequencers);
        vm.serializeAddress(obj, "tokens", res.tokens);
        string memory out = vm.serializeUint(obj, "genesis", res.genesis);
        string memory outPath = vm.parseJsonString(plan, ".output");
        vm.writeJson(out, outPath);
        console2.log("deployment written to %s (plan %s)", outPath, planPath);
    }
}
