//! The one control path into the copy-trader: copy-trading on/off, the runtime ratio, the emergency stop and resume.
//!
//! Every writer (the copy-trader's HTTP API, `kronos copytrade ratio|emergency-stop|resume`, the Telegram bot) sends a
//! typed [`ControlCommand`] through [`apply`] (another process) or [`Control::send`] (inside the daemon); the engine
//! reads the control state only through [`poll`]. The store is the source of truth shared by the processes (the
//! bot, the CLI and the daemon are separate processes): a command is written to it first, so it holds across
//! restarts, and then, inside the daemon, the engine is woken at once.
//!
//! Latency: in-process (the HTTP API): immediate; other processes (the bot, the CLI): within the poll interval (1 s,
//! the engine's fast tick).
//!
//! A stored value that is not what its key holds (a ratio "abc" or outside 0.001..100, a switch that is neither 0
//! nor 1) is an error naming the key, never a default: the engine keeps the state it has and reports the error.

use std::sync::Arc;

use anyhow::{anyhow, Context, Result};
use kronos_common::Decimal;
use tokio::sync::Notify;

use crate::decide::switches::{self, Flag, RatioPlan, Trading};
use crate::store::Store;

// The store's keys: read and written here only.
const TRADING: &str = "trading";
const RATIO: &str = "ratio";
const RATIO_SET_BY: &str = "ratio_set_by";
const RATIO_SET_MS: &str = "ratio_set_ms";
const RATIO_EFFECTIVE: &str = "ratio_effective";
const EMERGENCY: &str = "emergency";
/// How many emergency stops were requested (each request makes a pass, even while the stop holds).
const EMERGENCY_REQUESTS: &str = "emergency_requests";
const EMERGENCY_REASON: &str = "emergency_reason";

/// What a writer asks of the copy-trader.
#[derive(Debug, Clone, PartialEq)]
pub enum ControlCommand {
    /// Copy-trading on or off (off: no new orders; positions keep their stops).
    SetTrading(bool),
    /// The runtime ratio (0.001..100) over `copytrade.sizing.ratio`, and who set it; `None` goes back to the
    /// configured one.
    SetRatio(Option<Decimal>, String),
    /// Close everything and trade nothing new until resumed; asked again while it holds, another pass.
    EmergencyStop { reason: String },
    /// Lift the emergency stop.
    Resume,
}

/// A runtime ratio in the store.
#[derive(Debug, Clone, PartialEq)]
pub struct RatioOverride {
    pub ratio: Decimal,
    pub set_by: Option<String>,
    pub set_ms: Option<i64>,
}

/// The switches: copy-trading on/off and the runtime ratio.
#[derive(Debug, Clone, PartialEq)]
pub struct Switches {
    pub trading: bool,
    pub ratio: Option<RatioOverride>,
    /// The ratio the copy-trader last took as in effect.
    pub ratio_effective: Option<Decimal>,
}

/// The emergency stop as requested.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Emergency {
    /// `None`: never set.
    pub flag: Option<bool>,
    /// Requests made so far.
    pub requests: u64,
    /// Why the last one was made.
    pub reason: Option<String>,
}

/// The whole control state.
#[derive(Debug, Clone, PartialEq)]
pub struct ControlState {
    pub switches: Switches,
    pub emergency: Emergency,
}

/// The values as stored (absent: `None`), before they are checked.
#[derive(Debug, Clone, Default)]
struct Stored {
    trading: Option<String>,
    ratio: Option<String>,
    ratio_set_by: Option<String>,
    ratio_set_ms: Option<String>,
    ratio_effective: Option<String>,
    emergency: Option<String>,
    emergency_requests: Option<String>,
    emergency_reason: Option<String>,
}

fn bad(key: &str, value: &str, want: &str) -> anyhow::Error {
    anyhow!("copy-trader control state: `{key}` holds '{value}', not {want}")
}

fn flag(key: &str, v: Option<&str>) -> Result<Option<bool>> {
    match v {
        None => Ok(None),
        Some("1") => Ok(Some(true)),
        Some("0") => Ok(Some(false)),
        Some(other) => Err(bad(key, other, "0 or 1")),
    }
}

fn checked_ratio(key: &str, v: &str) -> Result<Decimal> {
    crate::report::valid_ratio(v).ok_or_else(|| {
        bad(key, v, &format!("a ratio from {} to {}", crate::report::MIN_RATIO, crate::report::MAX_RATIO))
    })
}

fn parse_switches(s: &Stored) -> Result<Switches> {
    let trading = flag(TRADING, s.trading.as_deref())?.unwrap_or(true);
    let ratio = match &s.ratio {
        None => None,
        Some(v) => Some(RatioOverride {
            ratio: checked_ratio(RATIO, v)?,
            set_by: s.ratio_set_by.clone(),
            set_ms: match &s.ratio_set_ms {
                None => None,
                Some(ms) => Some(ms.parse().map_err(|_| bad(RATIO_SET_MS, ms, "a time in epoch milliseconds"))?),
            },
        }),
    };
    let ratio_effective = match &s.ratio_effective {
        None => None,
        Some(v) => Some(checked_ratio(RATIO_EFFECTIVE, v)?),
    };
    Ok(Switches { trading, ratio, ratio_effective })
}

fn parse_emergency(s: &Stored) -> Result<Emergency> {
    Ok(Emergency {
        flag: flag(EMERGENCY, s.emergency.as_deref())?,
        requests: match &s.emergency_requests {
            None => 0,
            Some(n) => n.parse().map_err(|_| bad(EMERGENCY_REQUESTS, n, "a count"))?,
        },
        reason: s.emergency_reason.clone(),
    })
}

async fn get(store: &Store, key: &str) -> Result<Option<String>> {
    store.get_state(key).await.with_context(|| format!("reading the copy-trader's `{key}` from its store"))
}

async fn load_stored_switches(store: &Store) -> Result<Stored> {
    Ok(Stored {
        trading: get(store, TRADING).await?,
        ratio: get(store, RATIO).await?,
        ratio_set_by: get(store, RATIO_SET_BY).await?,
        ratio_set_ms: get(store, RATIO_SET_MS).await?,
        ratio_effective: get(store, RATIO_EFFECTIVE).await?,
        ..Stored::default()
    })
}

async fn load_stored_emergency(store: &Store) -> Result<Stored> {
    Ok(Stored {
        emergency: get(store, EMERGENCY).await?,
        emergency_requests: get(store, EMERGENCY_REQUESTS).await?,
        emergency_reason: get(store, EMERGENCY_REASON).await?,
        ..Stored::default()
    })
}

/// The switches as stored.
pub async fn load_switches(store: &Store) -> Result<Switches> {
    parse_switches(&load_stored_switches(store).await?)
}

/// The emergency stop as stored.
pub async fn load_emergency(store: &Store) -> Result<Emergency> {
    parse_emergency(&load_stored_emergency(store).await?)
}

/// Whether the emergency stop is set in the store now.
pub async fn emergency_active(store: &Store) -> Result<bool> {
    Ok(load_emergency(store).await?.flag == Some(true))
}

/// The whole control state as stored.
pub async fn load(store: &Store) -> Result<ControlState> {
    Ok(ControlState { switches: load_switches(store).await?, emergency: load_emergency(store).await? })
}

/// Writes `cmd` to the store (from another process: a running copy-trader acts on it within the poll interval).
pub async fn apply(store: &Store, cmd: &ControlCommand) -> Result<()> {
    match cmd {
        ControlCommand::SetTrading(on) => store.set_state(TRADING, if *on { "1" } else { "0" }).await?,
        ControlCommand::SetRatio(Some(r), by) => {
            let r = checked_ratio(RATIO, &r.to_string())?.normalized();
            store.set_state(RATIO_SET_BY, by).await?;
            store.set_state(RATIO_SET_MS, &kronos_common::time::now_ms().to_string()).await?;
            // The ratio last: a reader never sees it with the previous setter.
            store.set_state(RATIO, &r.to_string()).await?;
        }
        ControlCommand::SetRatio(None, _) => {
            store.delete_state(RATIO).await?;
            store.delete_state(RATIO_SET_BY).await?;
            store.delete_state(RATIO_SET_MS).await?;
        }
        ControlCommand::EmergencyStop { reason } => {
            // The stop must go through whatever the counter holds: an unreadable one starts again from 1.
            let requests = get(store, EMERGENCY_REQUESTS).await?.and_then(|n| n.parse::<u64>().ok()).unwrap_or(0);
            store.set_state(EMERGENCY_REASON, reason).await?;
            store.set_state(EMERGENCY_REQUESTS, &(requests + 1).to_string()).await?;
            store.set_state(EMERGENCY, "1").await?;
        }
        ControlCommand::Resume => store.set_state(EMERGENCY, "0").await?,
    }
    Ok(())
}

/// The engine records the state it is in: the emergency stop it carries out or lifted.
pub(crate) async fn record_emergency(store: &Store, active: bool) -> Result<()> {
    store.set_state(EMERGENCY, if active { "1" } else { "0" }).await
}

/// The engine records the ratio it took as in effect.
pub(crate) async fn record_ratio_effective(store: &Store, r: Decimal) -> Result<()> {
    store.set_state(RATIO_EFFECTIVE, &r.to_string()).await
}

/// The control path inside the daemon: a command is written to the store, then the engine is woken at once.
#[derive(Clone)]
pub struct Control {
    store: Store,
    wake: Arc<Notify>,
}

impl Control {
    pub fn new(store: Store) -> Control {
        Control { store, wake: Arc::new(Notify::new()) }
    }

    /// Writes `cmd` durably, then wakes the engine (which reads it through [`poll`]).
    pub async fn send(&self, cmd: ControlCommand) -> Result<()> {
        apply(&self.store, &cmd).await?;
        self.wake.notify_one();
        Ok(())
    }

    /// Resolves when a command was sent since the last call (a command sent meanwhile is not lost).
    pub(crate) async fn woken(&self) {
        self.wake.notified().await
    }
}

/// What the engine is in now.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Current {
    pub(crate) paused: bool,
    pub(crate) emergency: bool,
    /// Emergency requests already acted on.
    pub(crate) emergency_requests: u64,
    pub(crate) ratio: Decimal,
    pub(crate) configured_ratio: Decimal,
    /// Start-up, before the engine is ready.
    pub(crate) first: bool,
    /// The runtime ratio was reported already in this process.
    pub(crate) ratio_noted: bool,
}

/// What changed in the switches.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct SwitchChanges {
    pub(crate) trading: Trading,
    /// The ratio wanted and what to do with it.
    pub(crate) ratio: Decimal,
    pub(crate) plan: RatioPlan,
}

/// What the emergency stop asks.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct EmergencyChange {
    pub(crate) flag: Flag,
    pub(crate) reason: String,
    /// The requests acted on after this (the engine's next [`Current::emergency_requests`]).
    pub(crate) requests: u64,
}

pub(crate) fn decide_switches(s: &Switches, now: &Current) -> SwitchChanges {
    let wanted = switches::wanted_ratio(s.ratio.as_ref().map(|o| o.ratio), now.configured_ratio);
    SwitchChanges {
        trading: switches::trading(s.trading, now.paused),
        ratio: wanted,
        plan: switches::ratio_plan(wanted, now.configured_ratio, now.ratio, now.first, now.ratio_noted),
    }
}

pub(crate) fn decide_emergency(e: &Emergency, now: &Current) -> EmergencyChange {
    let asked_again = e.requests > now.emergency_requests;
    EmergencyChange {
        flag: switches::emergency_flag(e.flag, now.emergency, asked_again),
        reason: e.reason.clone().unwrap_or_else(|| "emergency stop requested".into()),
        requests: e.requests,
    }
}

/// Loads the control state and decides what changed: the emergency stop and the switches apart, so a bad switch
/// never holds up an emergency stop (each error names its key).
pub(crate) async fn poll(store: &Store, now: &Current) -> (Result<EmergencyChange>, Result<SwitchChanges>) {
    let e = load_emergency(store).await.map(|e| decide_emergency(&e, now));
    let s = load_switches(store).await.map(|s| decide_switches(&s, now));
    (e, s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decide::testing::d;

    fn now() -> Current {
        Current {
            paused: false,
            emergency: false,
            emergency_requests: 0,
            ratio: d("0.5"),
            configured_ratio: d("0.5"),
            first: false,
            ratio_noted: false,
        }
    }

    fn switches_of(trading: Option<&str>, ratio: Option<&str>) -> Result<Switches> {
        parse_switches(&Stored { trading: trading.map(Into::into), ratio: ratio.map(Into::into), ..Stored::default() })
    }

    #[test]
    fn a_bad_stored_value_is_an_error_naming_its_key_not_a_default() {
        for bad in ["abc", "0", "-3", "100.1", "0.0009", ""] {
            let e = switches_of(None, Some(bad)).unwrap_err().to_string();
            assert!(e.contains("`ratio`") && e.contains(&format!("'{bad}'")), "{e}");
        }
        let e = switches_of(Some("no"), None).unwrap_err().to_string();
        assert!(e.contains("`trading`") && e.contains("'no'"), "{e}");
        let e = parse_emergency(&Stored { emergency: Some("yes".into()), ..Stored::default() }).unwrap_err();
        assert!(e.to_string().contains("`emergency`"), "{e}");
        let e = parse_emergency(&Stored { emergency_requests: Some("x".into()), ..Stored::default() }).unwrap_err();
        assert!(e.to_string().contains("`emergency_requests`"), "{e}");
        let e = parse_switches(&Stored {
            ratio: Some("0.8".into()),
            ratio_set_ms: Some("soon".into()),
            ..Stored::default()
        })
        .unwrap_err();
        assert!(e.to_string().contains("`ratio_set_ms`"), "{e}");
        let e = parse_switches(&Stored { ratio_effective: Some("7e".into()), ..Stored::default() }).unwrap_err();
        assert!(e.to_string().contains("`ratio_effective`"), "{e}");
    }

    #[test]
    fn stored_values_are_typed_with_the_bounds_included() {
        let s = switches_of(None, None).unwrap();
        assert_eq!(s, Switches { trading: true, ratio: None, ratio_effective: None });
        assert!(!switches_of(Some("0"), None).unwrap().trading);
        assert!(switches_of(Some("1"), None).unwrap().trading);
        for (v, want) in [("0.001", "0.001"), ("100", "100"), (" 0.8 ", "0.8")] {
            assert_eq!(switches_of(None, Some(v)).unwrap().ratio.unwrap().ratio, d(want), "{v}");
        }
        let e = parse_emergency(&Stored::default()).unwrap();
        assert_eq!(e, Emergency { flag: None, requests: 0, reason: None });
        let e = parse_emergency(&Stored {
            emergency: Some("1".into()),
            emergency_requests: Some("3".into()),
            emergency_reason: Some("api".into()),
            ..Stored::default()
        })
        .unwrap();
        assert_eq!(e, Emergency { flag: Some(true), requests: 3, reason: Some("api".into()) });
    }

    #[test]
    fn a_request_made_while_the_stop_holds_makes_another_pass_once() {
        let held = Current { emergency: true, emergency_requests: 2, ..now() };
        let e = Emergency { flag: Some(true), requests: 3, reason: Some("again".into()) };
        let c = decide_emergency(&e, &held);
        assert_eq!((c.flag, c.reason.as_str(), c.requests), (Flag::Again, "again", 3));
        // Acted on: the next poll sees nothing new.
        assert_eq!(decide_emergency(&e, &Current { emergency_requests: 3, ..held }).flag, Flag::Unchanged);
        // Not held: the first request stops.
        assert_eq!(decide_emergency(&e, &now()).flag, Flag::Stop);
    }

    #[test]
    fn switches_decide_from_the_typed_state() {
        let s = Switches {
            trading: false,
            ratio: Some(RatioOverride { ratio: d("0.8"), set_by: None, set_ms: None }),
            ratio_effective: None,
        };
        let c = decide_switches(&s, &now());
        assert_eq!(c.trading, Trading::Off);
        assert_eq!(c.ratio, d("0.8"));
        assert!(c.plan.reapply);
    }

    #[tokio::test]
    async fn commands_are_written_and_read_back_typed() {
        let store = Store::connect("sqlite::memory:").await.unwrap();
        let c = Control::new(store.clone());
        c.send(ControlCommand::SetTrading(false)).await.unwrap();
        c.send(ControlCommand::SetRatio(Some(d("0.80")), "test".into())).await.unwrap();
        let s = load(&store).await.unwrap();
        assert!(!s.switches.trading);
        let o = s.switches.ratio.clone().unwrap();
        assert_eq!((o.ratio, o.set_by.as_deref()), (d("0.8"), Some("test")));
        assert!(o.set_ms.is_some());
        // Out of bounds: refused, nothing written.
        assert!(apply(&store, &ControlCommand::SetRatio(Some(d("101")), "test".into())).await.is_err());
        assert_eq!(load(&store).await.unwrap().switches.ratio.unwrap().ratio, d("0.8"));
        c.send(ControlCommand::SetRatio(None, "test".into())).await.unwrap();
        assert_eq!(load(&store).await.unwrap().switches.ratio, None);
        c.send(ControlCommand::EmergencyStop { reason: "one".into() }).await.unwrap();
        c.send(ControlCommand::EmergencyStop { reason: "two".into() }).await.unwrap();
        let e = load(&store).await.unwrap().emergency;
        assert_eq!(e, Emergency { flag: Some(true), requests: 2, reason: Some("two".into()) });
        c.send(ControlCommand::Resume).await.unwrap();
        assert!(!emergency_active(&store).await.unwrap());
        // Every send woke the engine: one stored permit.
        tokio::time::timeout(std::time::Duration::from_secs(1), c.woken()).await.unwrap();
    }
}
