//! One module per `kronos` command group.

pub mod copytrade;
pub mod exchange;
pub mod forecast;
pub mod keeper;
pub mod social;
pub mod telegram;
pub mod web;
