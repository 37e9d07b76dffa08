// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

// Chainlink's own test doubles, compiled so that tests, scripts and the Rust bindings can deploy them:
// the flux-style mock aggregator and the L2 sequencer-uptime feed.
import {MockV3Aggregator} from "@chainlink/contracts/src/v0.8/shared/mocks/MockV3Aggregator.sol";
import {
    MockBaseSequencerUptimeFeed
} from "@chainlink/contracts/src/v0.8/l2ep/test/mocks/MockBaseSequencerUptimeFeed.sol";
