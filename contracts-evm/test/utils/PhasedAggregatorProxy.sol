// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {AggregatorV3Interface} from "@chainlink/contracts/src/v0.8/shared/interfaces/AggregatorV3Interface.sol";

/// @title PhasedAggregatorProxy
/// @notice Test double with the round-id semantics of Chainlink's AggregatorProxy: round ids are
/// `(phaseId << 64) | aggregatorRoundId`, each `setAggregator` opens a new phase, `getRoundData` dispatches on the
/// phase (reverting for a phase that has no aggregator), `latestRoundData` reads the current phase. Chainlink ships
/// the same logic as DataFeedsLegacyAggregatorProxy, pinned to solc 0.8.26; this copy compiles with the project's
/// pinned compiler.
contract PhasedAggregatorProxy is AggregatorV3Interface {
    uint256 private constant PHASE_OFFSET = 64;

    mapping(uint16 => AggregatorV3Interface) public phaseAggregators;
    uint16 public phaseId;
    string private _description;
    address public immutable owner;

    constructor(address aggregator, string memory description_) {
        owner = msg.sender;
        _description = description_;
        setAggregator(aggregator);
    }

    /// @notice Opens the next phase on `aggregator` (Chainlink's propose + confirm in one step).
    function setAggregator(address aggregator) public {
        require(msg.sender == owner, "only owner");
        phaseId += 1;
        phaseAggregators[phaseId] = AggregatorV3Interface(aggregator);
    }

    function decimals() external view returns (uint8) {
        return phaseAggregators[phaseId].decimals();
    }

    function description() external view returns (string memory) {
        return _description;
    }

    function version() external pure returns (uint256) {
        return 4;
    }

    function getRoundData(uint80 roundId) external view returns (uint80, int256, uint256, uint256, uint80) {
        uint16 p = uint16(roundId >> PHASE_OFFSET);
        uint64 aggRound = uint64(roundId);
        (uint80 id, int256 answer, uint256 startedAt, uint256 updatedAt, uint80 answeredInRound) =
            phaseAggregators[p].getRoundData(aggRound);
        return (_add(p, id), answer, startedAt, updatedAt, _add(p, answeredInRound));
    }

    function latestRoundData() external view returns (uint80, int256, uint256, uint256, uint80) {
        (uint80 id, int256 answer, uint256 startedAt, uint256 updatedAt, uint80 answeredInRound) =
            phaseAggregators[phaseId].latestRoundData();
        return (_add(phaseId, id), answer, startedAt, updatedAt, _add(phaseId, answeredInRound));
    }

    function _add(uint16 p, uint80 id) private pure returns (uint80) {
        // forge-lint: disable-next-line(unsafe-typecast)
        return uint80((uint256(p) << PHASE_OFFSET) | uint64(id));
    }
}
