//! One module per `kronos` command group.

pub mod forecast;
pub mod keeper;
