//! The Kronos keeper daemon as a library: the chain runtime, the scheduler, the transaction manager, the publisher,
//! the store and the HTTP API (with the embedded dApp). The `kronos` program (`cli/`) wires it up; the local network
//! tooling (demo, bench, deploy plans, the anvil harness) lives in `localnet/`.

pub mod api;
pub mod chain;
pub(crate) mod checkpoints;
pub(crate) mod commit_reveal;
pub mod config;
pub mod dapp;
pub mod engine;
pub mod lease;
pub(crate) mod market;
pub mod metrics;
pub mod publisher;
pub mod rpc;
pub mod scheduler;
pub mod solana;
pub mod status;
pub mod store;
pub mod txmgr;
pub(crate) mod web;
