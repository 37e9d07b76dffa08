//! alloy `sol!` bindings for the Kronos contracts, generated from the forge artifacts in `artifacts/`
//! (`scripts/gen-bindings` writes them; `scripts/test` fails when they are stale).
//!
//! Each module has the contract's types, calls, events and errors, an RPC instance (`::new(address, provider)`),
//! and for deployable contracts the creation bytecode (`::deploy`).

#![allow(clippy::too_many_arguments)]

/// The market: bets, checkpoints (`execute`), claims, views.
pub mod market {
    alloy::sol!(
        #[sol(rpc)]
        #[derive(Debug, Default, PartialEq, Eq)]
        KronosMarket,
        "artifacts/KronosMarket.json"
    );
}

/// The commit-reveal prediction registry.
pub mod registry {
    alloy::sol!(
        #[sol(rpc)]
        #[derive(Debug, PartialEq, Eq)]
        PredictionRegistry,
        "artifacts/PredictionRegistry.json"
    );
}

/// Chainlink's consumer interface (proxies and aggregators).
pub mod aggregator {
    alloy::sol!(
        #[sol(rpc)]
        #[derive(Debug, PartialEq, Eq)]
        AggregatorV3Interface,
        "artifacts/AggregatorV3Interface.json"
    );
}

/// Test doubles: Chainlink's mock aggregator and sequencer-uptime feed, a phase-aware proxy, a mintable ERC-20.
/// Used by the local demo and the end-to-end tests; never deployed to a real chain.
pub mod mocks {
    alloy::sol!(
        #[sol(rpc)]
        #[derive(Debug, PartialEq, Eq)]
        MockV3Aggregator,
        "artifacts/MockV3Aggregator.json"
    );
    alloy::sol!(
        #[sol(rpc)]
        #[derive(Debug, PartialEq, Eq)]
        MockBaseSequencerUptimeFeed,
        "artifacts/MockBaseSequencerUptimeFeed.json"
    );
    alloy::sol!(
        #[sol(rpc)]
        #[derive(Debug, PartialEq, Eq)]
        PhasedAggregatorProxy,
        "artifacts/PhasedAggregatorProxy.json"
    );
    alloy::sol!(
        #[sol(rpc)]
        #[derive(Debug, PartialEq, Eq)]
        MockERC20,
        "artifacts/MockERC20.json"
    );
}

pub mod enums;

pub use aggregator::AggregatorV3Interface;
pub use enums::{CancelReason, CheckpointStatus, CommitStatus, Position, RoundState, UnknownName, UnknownValue};
pub use market::KronosMarket;
pub use registry::PredictionRegistry;
