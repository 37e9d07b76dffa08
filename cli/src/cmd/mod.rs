//! One module per `kronos` command group.

pub(crate) mod copytrade;
pub(crate) mod exchange;
pub(crate) mod forecast;
pub(crate) mod keeper;
pub(crate) mod social;
pub(crate) mod telegram;
pub(crate) mod web;
