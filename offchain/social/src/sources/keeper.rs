//! The keeper's own signals (and the copy-trader's, from its `/ws`) mirrored in as items: rounds settled or
//! refunded, forecasts revealed, copy-trader fills and stops, health changes, risk events. Followed with
//! [`kronos_common::signal_ws::follow`] (reconnects with backoff); this crate does not depend on the keeper.
//!
//! The stream is live: signals published while the monitor was down are not replayed (the keeper's store keeps
//! them). The cursor is the time of the last mirrored signal and the ids at that time, so a signal delivered twice
//! (a reconnect) is not mirrored twice, and older ones are dropped.

use std::collections::BTreeSet;
use std::time::Duration;

use kronos_common::signals::{Outcome, Side};
use kronos_common::{Signal, SignalKind};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::config::KeeperConfig;
use crate::item::{RawItem, Skip};
use crate::pipeline::normalise::fnv1a;
use crate::source::{Batch, Source, SourceError};

/// Signals mirrored per batch at most.
const BATCH: usize = 256;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeeperCursor {
    pub last_at_ms: u64,
    /// Ids of the signals mirrored at `last_at_ms`.
    pub ids: BTreeSet<String>,
}

pub struct KeeperSource {
    name: String,
    cfg: KeeperConfig,
    rx: Option<mpsc::Receiver<Signal>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for KeeperSource {
    fn drop(&mut self) {
        if let Some(t) = &self.task {
            t.abort();
        }
    }
}

impl KeeperSource {
    pub fn new(name: &str, cfg: KeeperConfig) -> KeeperSource {
        KeeperSource { name: name.to_string(), cfg, rx: None, task: None }
    }
}

fn outcome(o: &Outcome) -> &'static str {
    match o {
        Outcome::Up => "UP",
        Outcome::Down => "DOWN",
        Outcome::Tie => "a tie",
        Outcome::None => "no outcome",
    }
}

/// `BTCUSDT` → `$BTC`.
fn cashtag(symbol: &str) -> String {
    let base = ["USDT", "USDC", "BUSD", "USD"].iter().find_map(|q| symbol.strip_suffix(q)).unwrap_or(symbol);
    format!("${base}")
}

/// The sentence a signal becomes; `None` for signals not mirrored (prices, transactions, live forecasts).
pub fn text(sig: &Signal) -> Option<String> {
    Some(match &sig.kind {
        SignalKind::RoundSettled { chain, market, epoch, outcome: o, lock_price, close_price, .. } => format!(
            "Round settled on {chain}: market {market} epoch {epoch} closed {} ({lock_price} → {close_price})",
            outcome(o)
        ),
        SignalKind::RoundCancelled { chain, market, epoch, reason, .. } => {
            format!("Round refunded on {chain}: market {market} epoch {epoch} ({reason})")
        }
        SignalKind::PredictionRevealed { chain, market, epoch, p_up_bps, outcome: o, hit, scored, hits, .. } => {
            let verdict = match hit {
                Some(true) => "hit",
                Some(false) => "miss",
                None => "not scored",
            };
            format!(
                "Forecast revealed on {chain}: market {market} epoch {epoch} said {:.1}% up, closed {} ({verdict}; \
                 {hits} of {scored} so far)",
                *p_up_bps as f64 / 100.0,
                outcome(o)
            )
        }
        SignalKind::OrderFilled { symbol, side, qty, price, realized_pnl, paper, .. } => format!(
            "Copy-trader filled {} {qty} {symbol} ({}) at {price}, realised PnL {realized_pnl}{}",
            match side {
                Side::Buy => "BUY",
                Side::Sell => "SELL",
            },
            cashtag(symbol),
            if *paper { " (paper)" } else { "" }
        ),
        SignalKind::StopTriggered { symbol, stop_price, qty } => {
            format!("Copy-trader stop triggered: {qty} {symbol} ({}) at {stop_price}", cashtag(symbol))
        }
        SignalKind::KeeperHealth { chain, healthy, lag_s, detail, .. } => {
            if *healthy {
                format!("Keeper healthy again on {chain} ({detail})")
            } else {
                format!("Keeper unhealthy on {chain}: {detail} (lag {lag_s} s)")
            }
        }
        SignalKind::RiskEvent { kind, detail } => format!("Copy-trader risk event {kind}: {detail}"),
        _ => return None,
    })
}

/// A signal's id: FNV-1a of its JSON.
pub fn id(sig: &Signal) -> String {
    format!("{:016x}", fnv1a(serde_json::to_string(sig).unwrap_or_default().as_bytes()))
}

/// Mirrors `signals` after `cursor`: the items and the cursor after them.
pub fn mirror(signals: Vec<Signal>, cursor: &KeeperCursor) -> (Vec<Result<RawItem, Skip>>, KeeperCursor) {
    let mut next = cursor.clone();
    let mut items = Vec::new();
    for sig in signals {
        let Some(t) = text(&sig) else { continue };
        let sid = id(&sig);
        if sig.at_ms < next.last_at_ms || (sig.at_ms == next.last_at_ms && next.ids.contains(&sid)) {
            continue;
        }
        if sig.at_ms > next.last_at_ms {
            next.last_at_ms = sig.at_ms;
            next.ids.clear();
        }
        next.ids.insert(sid.clone());
        items.push(Ok(RawItem {
            external_id: sid,
            author: Some(sig.source.clone()),
            text: t.into_bytes(),
            url: None,
            time_ms: Some(sig.at_ms),
            language: Some("en".into()),
        }));
    }
    (items, next)
}

impl Source for KeeperSource {
    type Cursor = KeeperCursor;

    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "keeper"
    }

    async fn next(&mut self, cursor: &KeeperCursor) -> Result<Batch<KeeperCursor>, SourceError> {
        if self.rx.is_none() {
            let (tx, rx) = mpsc::channel(4096);
            let token = match &self.cfg.token_env {
                Some(env) => Some(kronos_common::Secret::new(
                    std::env::var(env).map_err(|_| SourceError::Fatal(format!("${env} (the API token) is not set")))?,
                )),
                None => None,
            };
            self.task = Some(tokio::spawn(kronos_common::signal_ws::follow(self.cfg.url.to_string(), token, tx)));
            self.rx = Some(rx);
        }
        let rx = self.rx.as_mut().expect("set above");
        let Some(first) = rx.recv().await else {
            return Err(SourceError::Fatal("the signal stream ended".into()));
        };
        let mut sigs = vec![first];
        while sigs.len() < BATCH {
            match rx.try_recv() {
                Ok(s) => sigs.push(s),
                Err(_) => break,
            }
        }
        let (items, cursor) = mirror(sigs, cursor);
        Ok(Batch { items, cursor, wait: Duration::ZERO })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kronos_common::Decimal;
    use std::str::FromStr;

    fn settled(at_ms: u64, epoch: u64) -> Signal {
        Signal {
            at_ms,
            source: "keeper".into(),
            kind: SignalKind::RoundSettled {
                chain: "base".into(),
                market: 1,
                epoch,
                outcome: Outcome::Up,
                lock_price: Decimal::from_str("97000.5").unwrap(),
                close_price: Decimal::from_str("97100").unwrap(),
                total_wei: "0".into(),
                reward_wei: "0".into(),
                treasury_fee_wei: "0".into(),
                delay_blocks: 0,
            },
        }
    }

    #[test]
    fn mirrors_each_signal_once() {
        let price = Signal {
            at_ms: 5,
            source: "keeper".into(),
            kind: SignalKind::RiskEvent { kind: "daily_loss".into(), detail: "stopped".into() },
        };
        let (items, c) = mirror(vec![settled(10, 1), price.clone(), settled(10, 2)], &KeeperCursor::default());
        assert_eq!(items.len(), 2, "the older risk event after a newer signal is dropped");
        let first = items[0].as_ref().unwrap();
        assert_eq!(
            String::from_utf8(first.text.clone()).unwrap(),
            "Round settled on base: market 1 epoch 1 closed UP (97000.5 → 97100)"
        );
        let (again, c2) = mirror(vec![settled(10, 1), settled(11, 3)], &c);
        assert_eq!(again.len(), 1, "a signal delivered twice is mirrored once");
        assert_eq!(c2.last_at_ms, 11);
        assert_eq!(cashtag("BTCUSDT"), "$BTC");
    }
}
