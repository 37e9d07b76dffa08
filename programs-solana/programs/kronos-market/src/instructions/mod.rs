//! One file per group of instructions; each handler checks its own rules.

pub mod admin;
pub mod bet;
pub mod claim;
pub mod close;
pub mod config;
pub mod crank;
pub mod init;
pub mod registry;

pub use admin::*;
pub use bet::*;
pub use claim::*;
pub use close::*;
pub use config::*;
pub use crank::*;
pub use init::*;
pub use registry::*;
