//! The Kronos keeper daemon and the `kronos` command-line program.

pub mod api;
pub mod chain;
pub mod cli;
pub mod cmd;
pub mod config;
pub mod demo;
pub mod deploy;
pub mod engine;
pub mod lease;
pub mod loadgen;
pub mod logging;
pub mod metrics;
pub mod publisher;
pub mod rpc;
pub mod scheduler;
pub mod store;
pub mod txmgr;
pub mod web;
