//! Kronos on local chains: everything that runs the suite on anvil rather than on a real network. The demo
//! ([`demo`], with the anvil network harness [`demo::net`], the bettors, the copy-trading and social pieces), the
//! benchmarks ([`bench`], the several-keeper soak [`soak`] with its PostgreSQL server [`pg`]) and their load
//! generators ([`loadgen`]), the deploy plans and the forge runner ([`deploy`]), and the local exchange with a
//! simulated lead ([`exchange`]). The `kronos` program exposes them as `kronos demo`, `kronos bench`, `kronos deploy`
//! and `kronos exchange`; the tests reach them through `kronos-testkit`. The keeper daemon itself
//! ([`kronos_keeper`]) does not depend on this crate.

pub mod bench;
pub mod demo;
pub mod deploy;
pub mod exchange;
pub mod loadgen;
pub mod pg;
pub mod soak;
pub mod solana;
