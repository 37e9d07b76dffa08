//! The keeper's own signals (and the copy-trader's, from its `/ws`) mirrored in as items: rounds settled or
//! refunded, forecasts revealed, copy-trader fills and stops, health changes, risk events. Followed with
//! [`kronos_common::signal_ws::follow`] (reconnects with backoff); this crate does not depend on the keeper.
//!
//! The stream is live: signals published while the monitor was down are not replayed (the keeper's store keeps
//! them). The cursor is the time of the last mirrored signal and the ids at that time, so a signal delivered twice
//! (a reconnect) is not mirrored twice, and older ones are dropped.

use std::collections::BTreeSet;
use std::time::Duration;

use kronos_common::signal_ws::FollowState;
use kronos_common::signals::{Outcome, Side};
use kronos_common::{Signal, SignalKind};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};

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
    /// The connection's state as the follower reports it; `None` once the follower is gone.
    state: Option<watch::Receiver<FollowState>>,
    /// The state last turned into a result of `next` (an error when it went down, an empty batch when it came up).
    reported: FollowState,
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
        KeeperSource {
            name: name.to_string(),
            cfg,
            rx: None,
            state: None,
            reported: FollowState::Connecting,
            task: None,
        }
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
            let (state_tx, state_rx) = watch::channel(FollowState::Connecting);
            self.task = Some(tokio::spawn(kronos_common::signal_ws::follow_reporting(
                self.cfg.url.to_string(),
                token,
                tx,
                state_tx,
            )));
            self.rx = Some(rx);
            self.state = Some(state_rx);
        }
        let rx = self.rx.as_mut().expect("set above");
        let first = loop {
            let state = &mut self.state;
            let changed = async move {
                match state.as_mut() {
                    Some(s) => s.changed().await.map(|_| s.borrow_and_update().clone()).ok(),
                    None => std::future::pending().await,
                }
            };
            let now = tokio::select! {
                biased;
                s = rx.recv() => break s,
                c = changed => c,
            };
            let Some(now) = now else {
                // The follower ended: the signal channel says so next.
                self.state = None;
                continue;
            };
            let report = reported_change(&self.reported, &now);
            self.reported = now;
            match report {
                Some(Report::Down(why)) => return Err(SourceError::Transient(why)),
                Some(Report::Up) => {
                    return Ok(Batch { items: vec![], changes: vec![], cursor: cursor.clone(), wait: Duration::ZERO })
                }
                None => {}
            }
        };
        let Some(first) = first else {
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
        Ok(Batch { items, changes: vec![], cursor, wait: Duration::ZERO })
    }
}

/// What a change of the follower's state makes `next` return.
#[derive(Debug, PartialEq, Eq)]
enum Report {
    /// An error (the source's health shows it, retrying).
    Down(String),
    /// An empty batch (the health turns ok).
    Up,
}

/// Only transitions are reported: the first failure after being up (or starting), and being connected (first, or
/// again after a failure); a failure while already down is not (the follower's own backoff retries it, the runner's
/// backoff would only add delay).
fn reported_change(before: &FollowState, now: &FollowState) -> Option<Report> {
    match (before, now) {
        (FollowState::Down(_), FollowState::Down(_)) => None,
        (_, FollowState::Down(why)) => Some(Report::Down(why.clone())),
        (FollowState::Connected, FollowState::Connected) => None,
        (_, FollowState::Connected) => Some(Report::Up),
        (_, FollowState::Connecting) => None,
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

    #[test]
    fn only_state_transitions_are_reported() {
        let down = |w: &str| FollowState::Down(w.into());
        assert_eq!(reported_change(&FollowState::Connecting, &down("refused")), Some(Report::Down("refused".into())));
        assert_eq!(reported_change(&down("refused"), &down("refused again")), None, "already down");
        assert_eq!(reported_change(&down("refused"), &FollowState::Connected), Some(Report::Up));
        assert_eq!(reported_change(&FollowState::Connecting, &FollowState::Connected), Some(Report::Up));
        assert_eq!(reported_change(&FollowState::Connected, &FollowState::Connected), None);
        assert_eq!(reported_change(&FollowState::Connected, &down("closed")), Some(Report::Down("closed".into())));
    }

    /// Next call's result within a generous deadline.
    async fn next(src: &mut KeeperSource, c: &KeeperCursor) -> Result<Batch<KeeperCursor>, SourceError> {
        tokio::time::timeout(Duration::from_secs(120), src.next(c)).await.expect("next answered within 120 s")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_unreachable_stream_is_an_error_and_coming_up_is_ok() {
        use kronos_common::http_guard::{Guard, GuardMetrics, Limits};
        use kronos_common::signal_ws::WsUpgrade;
        // A port nothing listens on (taken, then released).
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        drop(l);
        let cfg = KeeperConfig { url: format!("ws://{addr}/ws").parse().unwrap(), token_env: None };
        let mut src = KeeperSource::new("keeper", cfg);
        let c = KeeperCursor::default();
        match next(&mut src, &c).await {
            Err(SourceError::Transient(why)) => assert!(why.starts_with("unreachable"), "{why}"),
            other => panic!("expected a transient error while unreachable, got {:?}", other.map(|b| b.items.len())),
        }
        // Now serve the stream there: the next call reports the connection with an empty batch.
        let bus = kronos_common::Bus::new(64);
        let hub =
            kronos_common::signal_ws::Hub::new(bus.clone(), Guard::new(Limits::default(), GuardMetrics::default()));
        let app = axum::Router::new()
            .route("/ws", axum::routing::get(move |up: WsUpgrade| async move { hub.upgrade(up, None, false) }));
        let l = tokio::net::TcpListener::bind(addr).await.unwrap();
        let server = tokio::spawn(async move { axum::serve(l, app).await });
        let up = next(&mut src, &c).await.expect("connected");
        assert!(up.items.is_empty());
        assert_eq!(up.cursor, c);
        bus.publish_signal(settled(20, 7));
        let b = next(&mut src, &c).await.expect("a signal");
        assert_eq!(b.items.len(), 1);
        // The server goes away: reported once more as an error.
        server.abort();
        let _ = server.await;
        drop(bus);
        match next(&mut src, &b.cursor).await {
            Err(SourceError::Transient(_)) => {}
            other => {
                panic!("expected a transient error after the server went away, got {:?}", other.map(|b| b.items.len()))
            }
        }
    }
}
