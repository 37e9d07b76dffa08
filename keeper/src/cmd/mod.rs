//! One module per `kronos` command group.

pub mod bench;
pub mod forecast;
pub mod keeper;
