//! The Kronos keeper daemon and the `kronos` command-line program.

pub mod cli;
pub mod cmd;
pub mod config;
pub mod logging;
pub mod rpc;
pub mod store;
pub mod txmgr;
