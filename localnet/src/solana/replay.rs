//! The BTC/USD candles the EVM chains replay, written into the local Solana feed as Chainlink transmissions
//! (`/control/feed/transmit`) as the chain's clock passes: each round interval gets the candle's open, its extremes and
//! its close at fixed fractions of the interval, each stamped with the chain's time when it is written (its
//! observation time). The program reads a price at `t` only once a transmission stamped after `t` exists and
//! `report_delay` has passed (programs-solana/README.md, "The timing rule"): the open, written a twentieth of a round
//! after each boundary, is that transmission. Induced fault: the epochs in [`ReplayOptions::stale_epochs`] get no
//! transmission at all, so the answer in effect at their end is older than `max_price_age` (one round) and the rounds
//! that read it are refunded.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use kronos_forecast::Candle;
use parking_lot::Mutex;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::{clock, control, LocalSolana, FEED_DECIMALS};
use crate::demo::net::ReplayCandles;

/// When, as a fraction of the round interval, each of a candle's four prices is written.
pub const FRACTIONS: [f64; 4] = [0.05, 0.4, 0.55, 0.7];

/// Replay settings.
#[derive(Debug, Clone)]
pub struct ReplayOptions {
    /// The key the candles are registered under in [`ReplayCandles`].
    pub chain: String,
    /// Epochs during which nothing is written (a stale feed).
    pub stale_epochs: BTreeSet<u64>,
    /// Wall time between looks at the chain's clock.
    pub poll: Duration,
}

/// What the replay wrote.
#[derive(Debug, Clone, Default)]
pub struct ReplayStats {
    /// `(timestamp, answer)` of every transmission written, in order.
    pub written: Vec<(u32, i128)>,
    pub failures: u64,
}

/// The `step`-th price of a candle (open, the extreme away from the close, the other extreme, close) in the feed's
/// decimals, as the EVM replay writes them.
pub fn answer(c: &Candle, step: usize) -> i128 {
    let (a, b) = if c.close >= c.open { (c.low, c.high) } else { (c.high, c.low) };
    let v = [c.open, a, b, c.close][step.min(3)];
    (v * 10f64.powi(FEED_DECIMALS.into())).round() as i128
}

/// How many of an interval's prices are due `into` (0..1) of the way through it.
pub fn steps_due(into: f64) -> usize {
    FRACTIONS.iter().filter(|f| into >= **f).count()
}

/// Writes the candles into the feed until cancelled.
pub async fn run(
    sol: Arc<LocalSolana>,
    source: Arc<ReplayCandles>,
    opts: ReplayOptions,
    stats: Arc<Mutex<ReplayStats>>,
    cancel: CancellationToken,
) {
    let url = sol.url();
    let (genesis, interval) = (sol.genesis, i64::from(sol.interval));
    // (epoch, prices written or skipped in it)
    let mut done: Option<(u64, usize)> = None;
    while !cancel.is_cancelled() {
        let now = match clock(&sol.client).await {
            Ok(c) => c.unix_timestamp,
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "solana replay: cannot read the clock; retrying");
                tokio::select! { _ = cancel.cancelled() => return, _ = tokio::time::sleep(opts.poll) => {} }
                continue;
            }
        };
        if now >= genesis {
            let epoch = ((now - genesis) / interval) as u64;
            let into = (now - genesis - epoch as i64 * interval) as f64 / interval as f64;
            let due = steps_due(into);
            let next = match done {
                Some((e, s)) if e == epoch => (s < due).then_some(s),
                _ => (due > 0).then_some(0),
            };
            if let (Some(s), Some(c)) = (next, source.candle(&opts.chain, epoch)) {
                if opts.stale_epochs.contains(&epoch) {
                    done = Some((epoch, due));
                    continue;
                }
                let a = answer(&c, s);
                let Ok(ts) = u32::try_from(now) else {
                    tracing::error!(now, "solana replay: the chain's clock is beyond a feed timestamp (u32)");
                    return;
                };
                let body = json!({ "address": sol.feed.to_string(), "timestamp": ts, "answer": a.to_string() });
                match control(&url, "feed/transmit", body).await {
                    Ok(_) => {
                        stats.lock().written.push((ts, a));
                        done = Some((epoch, s + 1));
                    }
                    Err(e) => {
                        stats.lock().failures += 1;
                        tracing::warn!(error = %format!("{e:#}"), "solana replay: transmit failed; retrying");
                    }
                }
                continue;
            }
        }
        tokio::select! { _ = cancel.cancelled() => return, _ = tokio::time::sleep(opts.poll) => {} }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prices_come_in_candle_order_at_their_fractions() {
        let up = Candle { timestamp: 0, open: 100.0, high: 110.0, low: 90.0, close: 105.0, volume: 0.0, amount: 0.0 };
        let down = Candle { close: 95.0, ..up };
        let e8 = |v: f64| (v * 1e8) as i128;
        assert_eq!((0..4).map(|s| answer(&up, s)).collect::<Vec<_>>(), [e8(100.0), e8(90.0), e8(110.0), e8(105.0)]);
        assert_eq!((0..4).map(|s| answer(&down, s)).collect::<Vec<_>>(), [e8(100.0), e8(110.0), e8(90.0), e8(95.0)]);
        assert_eq!(steps_due(0.0), 0);
        assert_eq!(steps_due(0.05), 1);
        assert_eq!(steps_due(0.5), 2);
        assert_eq!(steps_due(0.99), 4);
    }
}
