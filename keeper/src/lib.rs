//! The Kronos keeper daemon and the `kronos` command-line program.

pub mod api;
pub mod chain;
pub(crate) mod checkpoints;
pub(crate) mod commit_reveal;
pub mod cli;
pub mod cmd;
pub mod config;
pub mod demo;
pub mod deploy;
pub mod engine;
pub mod lease;
pub mod loadgen;
pub mod logging;
pub(crate) mod market;
pub mod metrics;
pub mod publisher;
pub mod rpc;
pub mod scheduler;
pub mod store;
pub mod txmgr;
pub mod web;
