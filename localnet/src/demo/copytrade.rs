//! The copy-trader in the demo: the local exchange (`kronos exchange serve`'s [`LocalExchange`]) with its simulated
//! lead trading BTCUSDT on the first chain's replayed candles, and a paper copy-trader following that lead, on the
//! demo's signal bus. The summary's copy-trader section is measured from what happened: the lead's fills at the
//! exchange, the follower's fills and stops as the copy-trader published them, and its PnL from its store.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use kronos_common::signals::SignalKind;
use kronos_common::{Bus, Decimal};
use kronos_copytrade::{Handles, Store, Tuning};
use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;

use crate::exchange::{candle_points, Keys, LocalExchange, LEAD_SYMBOL};

/// Follower position = lead position × this.
const RATIO: &str = "0.1";
/// The simulated lead's size in BTC.
const LEAD_SIZE: &str = "1";
/// The paper account's starting balance, USDT.
const BALANCE: &str = "10000";

/// What the demo saw, for the summary.
#[derive(Debug, Clone, Default)]
pub struct Tally {
    /// The simulated lead's fills: symbol, fill time at the exchange (ms since the epoch).
    pub lead_fills: Vec<(String, i64)>,
    /// The follower's fills other than stop triggers: symbol, time the copy-trader published it (ms).
    pub follower_fills: Vec<(String, i64)>,
    /// Client ids of the follower's stops (a fill under one of them is a stop trigger, not a mirror).
    pub stop_ids: BTreeSet<String>,
    pub stops_placed: u64,
    pub stops_triggered: u64,
    /// The lead's order refused by the exchange, or signals missed because the bus overflowed.
    pub problems: Vec<String>,
}

/// For each lead fill, the delay (ms) to the first follower fill in its symbol at or after it and before the lead's
/// next fill in that symbol; a lead fill the follower did not act on before the next one is not mirrored.
pub fn mirror_delays(lead: &[(String, i64)], follower: &[(String, i64)]) -> Vec<i64> {
    let mut out = Vec::new();
    for (i, (sym, at)) in lead.iter().enumerate() {
        let next = lead[i + 1..].iter().find(|(s, _)| s == sym).map(|(_, t)| *t).unwrap_or(i64::MAX);
        if let Some(t) = follower.iter().filter(|(s, t)| s == sym && *t >= *at && *t < next).map(|(_, t)| *t).min() {
            out.push(t - at);
        }
    }
    out
}

/// The running exchange, lead and copy-trader.
pub struct CopyDemo {
    pub exchange: Arc<LocalExchange>,
    pub handles: Handles,
    /// The copy-trader's API (`/health`, `/api/status`…).
    pub api: SocketAddr,
    pub store_url: String,
    pub tally: Arc<Mutex<Tally>>,
    balance: Decimal,
}

impl CopyDemo {
    /// Starts the exchange on a free loopback port (marks at `seed_close`, the close before the replay), the paper
    /// copy-trader on `bus` with its store at `store_path`, and waits until the copy-trader is ready.
    pub async fn start(
        bus: &Bus,
        store_path: &Path,
        seed_close: f64,
        cancel: &CancellationToken,
        tasks: &mut tokio::task::JoinSet<()>,
    ) -> Result<CopyDemo> {
        let exchange = Arc::new(
            LocalExchange::start("127.0.0.1:0", Keys::local_lead(), Keys::local_follower(), LEAD_SIZE.parse()?).await?,
        );
        exchange.seed(seed_close)?;
        let store_url = format!("sqlite://{}", store_path.display());
        // network = "local" at this exchange's port; the lead variables are the demo's own, so a user's real lead
        // keys in the usual variables are never sent here: unset, the local exchange's published lead keys apply.
        let text = format!(
            r#"[copytrade]
mode = "paper"
network = "local"
rest_url = "{rest}"
ws_url = "{ws}"
store = "{store_url}"
listen = "127.0.0.1:0"
reconcile_interval = "10s"
[copytrade.lead]
api_key_env = "KRONOS_DEMO_LEAD_API_KEY"
api_secret_env = "KRONOS_DEMO_LEAD_API_SECRET"
poll_interval = "2s"
[copytrade.sizing]
ratio = "{RATIO}"
max_notional_per_symbol = "2000"
max_notional_total = "3000"
leverage = 3
allow = ["{LEAD_SYMBOL}"]
[copytrade.protection]
stop_loss_pct = "2"
daily_loss_limit = "500"
drawdown_pct = "20"
cooldown = "1h"
[copytrade.paper]
balance = "{BALANCE}"
"#,
            rest = exchange.rest_url(),
            ws = exchange.ws_url(),
        );
        let cfg = kronos_copytrade::Config::parse("(demo copy-trader)", &text)?;
        let (engine, handles) = kronos_copytrade::run::build(&cfg, false, bus.clone(), Tuning::default()).await?;
        let (api, _server) = kronos_copytrade::run::serve_with(handles.clone(), &cfg.listen, cfg.api.clone()).await?;
        let tally = Arc::new(Mutex::new(Tally::default()));
        tasks.spawn(watch(bus.clone(), tally.clone(), cancel.clone()));
        let c = cancel.clone();
        tasks.spawn(async move {
            if let Err(e) = engine.run(c.cancelled_owned()).await {
                tracing::error!(error = %format!("{e:#}"), "demo copy-trader stopped");
            }
        });
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let (ready, detail) = {
                let s = handles.status.lock();
                (s.ready, s.detail.clone())
            };
            if ready {
                break;
            }
            anyhow::ensure!(Instant::now() < deadline, "the demo copy-trader was not ready within 120 s: {detail}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(CopyDemo { exchange, handles, api, store_url, tally, balance: BALANCE.parse()? })
    }

    /// A replayed price; on a candle's close the lead trades by its rule, and its fill is recorded.
    pub fn price(&self, v: f64, close: bool) {
        match self.exchange.price(v, close) {
            Ok(Some(t)) => self.tally.lock().lead_fills.push((t.symbol, t.at_ms)),
            Ok(None) => {}
            Err(e) => self.tally.lock().problems.push(format!("{e:#}")),
        }
    }

    /// One line for the live table.
    pub fn line(&self) -> String {
        let t = self.tally.lock().clone();
        let held = {
            let s = self.handles.status.lock();
            s.positions.iter().map(|p| format!("{} {}", p.qty, p.symbol)).collect::<Vec<_>>().join(", ")
        };
        format!(
            "copy-trader (paper): lead {} {LEAD_SYMBOL}, {} lead fills, {} mirrored, {} stops placed; follower holds {}\n",
            self.exchange.lead_position(),
            t.lead_fills.len(),
            mirror_delays(&t.lead_fills, &t.follower_fills).len(),
            t.stops_placed,
            if held.is_empty() { "nothing".into() } else { held }
        )
    }

    /// The summary's copy-trader section, from measured figures.
    pub async fn section(&self) -> String {
        let t = self.tally.lock().clone();
        let delays: Vec<u64> = mirror_delays(&t.lead_fills, &t.follower_fills).into_iter().map(|d| d as u64).collect();
        let ms = |p: f64| super::percentile(&delays, p).map(|v| format!("{v} ms")).unwrap_or_else(|| "-".into());
        let mut s = format!(
            "\ncopy-trader (paper, following the local exchange's simulated lead: {LEAD_SIZE} {LEAD_SYMBOL} on the first chain's candles, ratio {RATIO}):\n"
        );
        s += &format!(
            "  lead fills {}, mirrored {}; mirror delay p50 {}, p99 {} (lead fill at the exchange -> follower fill)\n",
            t.lead_fills.len(),
            delays.len(),
            ms(50.0),
            ms(99.0)
        );
        s += &format!("  stops placed {}, triggered {}\n", t.stops_placed, t.stops_triggered);
        match self.pnl().await {
            Ok(p) => s += &p,
            Err(e) => s += &format!("  PnL: could not be read from the copy-trader's store: {e:#}\n"),
        }
        for p in t.problems.iter().take(5) {
            s += &format!("  problem: {p}\n");
        }
        s += &format!("  copy-trader store: {} (kronos copytrade status/stats read it)\n", self.store_url);
        s
    }

    async fn pnl(&self) -> Result<String> {
        let store = Store::connect(&self.store_url).await?;
        let st = kronos_copytrade::report::stats(&store, 0).await?;
        let mut unrealized = Decimal::ZERO;
        let mut held = Vec::new();
        for (sym, qty, entry) in store.positions().await? {
            let mark = self.exchange.ex.mark(&sym);
            let u = mark.checked_sub(&entry).and_then(|d| d.checked_mul(&qty, 8, kronos_common::Rounding::HalfUp));
            unrealized = unrealized.checked_add(&u.context("unrealised PnL overflows")?)?;
            held.push(format!("{} {sym} @ {}", qty.normalized(), entry.normalized()));
        }
        let total = st.net_pnl.checked_add(&unrealized)?;
        Ok(format!(
            "  PnL {} USDT = realised {} - fees {} + unrealised {} (mark {}); starting balance {} USDT; holds {}\n",
            total.normalized(),
            st.realized_pnl.normalized(),
            st.fees.normalized(),
            unrealized.normalized(),
            self.exchange.ex.mark(LEAD_SYMBOL),
            self.balance,
            if held.is_empty() { "nothing".into() } else { held.join(", ") }
        ))
    }
}

/// Records the copy-trader's fills and stops from the bus.
async fn watch(bus: Bus, tally: Arc<Mutex<Tally>>, cancel: CancellationToken) {
    let mut sub = bus.subscribe();
    loop {
        let s = tokio::select! {
            _ = cancel.cancelled() => return,
            s = sub.recv() => s,
        };
        let s = match s {
            Ok(s) => s,
            Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                tally.lock().problems.push(format!("{n} signals missed (the bus overflowed): figures may be low"));
                continue;
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        };
        // The copy-trader publishes as `copytrader`.
        if s.source != "copytrader" {
            continue;
        }
        let mut t = tally.lock();
        match &s.kind {
            SignalKind::StopPlaced { client_order_id, .. } => {
                t.stops_placed += 1;
                t.stop_ids.insert(client_order_id.clone());
            }
            SignalKind::StopTriggered { .. } => t.stops_triggered += 1,
            SignalKind::OrderFilled { symbol, client_order_id, .. } if !t.stop_ids.contains(client_order_id) => {
                t.follower_fills.push((symbol.clone(), s.at_ms as i64));
            }
            _ => {}
        }
    }
}

/// Drives the exchange from `chain`'s replayed candles: the same four prices per round as the chain's feed (open,
/// extremes, close at 40/50/60/70% of the round, by the chain's clock); the lead trades at each close.
pub async fn drive(
    demo: Arc<CopyDemo>,
    chain: Arc<super::net::LocalChain>,
    source: Arc<super::net::ReplayCandles>,
    interval: u64,
    poll: Duration,
    cancel: CancellationToken,
) {
    use alloy::providers::Provider;
    let p = chain.wallet(super::net::accounts::ORACLE);
    let genesis = chain.genesis();
    let fractions = [0.4, 0.5, 0.6, 0.7];
    let mut done: Option<(u64, usize)> = None;
    while !cancel.is_cancelled() {
        if let Ok(Some(b)) = p.get_block_by_number(alloy::eips::BlockNumberOrTag::Latest).await {
            let now = b.header.timestamp;
            if now >= genesis {
                let epoch = (now - genesis) / interval;
                let into = (now - genesis - epoch * interval) as f64 / interval as f64;
                let step = fractions.iter().filter(|f| into >= **f).count();
                // The rest of an earlier epoch the chain's clock passed before its close was replayed: at once, in
                // order, so the lead sees every close.
                if let Some((e, s)) = done.filter(|(e, s)| *e < epoch && *s < 4) {
                    if let Some(c) = source.candle(&chain.chain.key, e) {
                        for (i, v) in candle_points(&c).iter().enumerate().skip(s) {
                            demo.price(*v, i == 3);
                        }
                    }
                }
                let from = match done {
                    Some((e, s)) if e == epoch => s,
                    _ => 0,
                };
                if let Some(c) = source.candle(&chain.chain.key, epoch) {
                    let points = candle_points(&c);
                    for (s, v) in points.iter().enumerate().take(step).skip(from) {
                        demo.price(*v, s == 3);
                    }
                    done = Some((epoch, step.max(from)));
                }
            }
        }
        tokio::select! { _ = cancel.cancelled() => return, _ = tokio::time::sleep(poll) => {} }
    }
}

/// The variable holding the demo bot's token.
pub const TELEGRAM_TOKEN_ENV: &str = "KRONOS_TELEGRAM_TOKEN";

/// The demo bot's settings: the Bot API at `url`, the chats it answers (`--telegram-chat`), the demo keeper's API and
/// the bot's state file.
pub struct DemoBot<'a> {
    pub url: &'a str,
    pub chats: &'a [i64],
    pub keeper_api: &'a str,
    pub state_file: &'a Path,
}

/// Starts the Telegram bot of `bot` for the demo's keeper and copy-trader, on the demo's bus (its alerts), answering
/// `bot.chats` only; returns how to reach it.
pub async fn start_telegram(
    bot: &DemoBot<'_>,
    copy: &CopyDemo,
    bus: &Bus,
    cancel: &CancellationToken,
    tasks: &mut tokio::task::JoinSet<()>,
) -> Result<String> {
    let DemoBot { url, chats, keeper_api, state_file } = *bot;
    anyhow::ensure!(
        std::env::var(TELEGRAM_TOKEN_ENV).is_ok_and(|t| !t.trim().is_empty()),
        "--telegram-url: the bot's token goes in the environment variable {TELEGRAM_TOKEN_ENV}, which is not set"
    );
    anyhow::ensure!(
        !chats.is_empty(),
        "--telegram-url: give --telegram-chat <id> too (the chats or users that may command the bot and get alerts; \
         nobody else is answered)"
    );
    let list = chats.iter().map(|c| c.to_string()).collect::<Vec<_>>().join(", ");
    let text = bot_config_text(url, chats, keeper_api, &format!("http://{}", copy.api), &copy.store_url, state_file);
    let cfg = kronos_telegram::Config::parse("(demo bot: --telegram-url)", &text)?;
    let store = Store::connect(&copy.store_url).await?;
    let backend = kronos_telegram::Backend::new(cfg.keeper_api.clone(), cfg.copytrade_api.clone(), Some(store));
    let bot = kronos_telegram::TelegramBot::new(cfg, backend)?;
    let name = bot.check().await.context("--telegram-url: the Bot API")?;
    crate::say!("telegram bot @{name} joined the demo through {url} (commands and alerts for {list})");
    let (c, bus) = (cancel.clone(), bus.clone());
    tasks.spawn(async move {
        if let Err(e) = bot.run(kronos_telegram::Signals::Bus(bus), c.cancelled_owned()).await {
            tracing::error!(error = %format!("{e:#}"), "demo telegram bot stopped");
        }
    });
    Ok(format!("@{name} via {url}, for {list}"))
}

/// The demo bot's configuration. `--telegram-chat` ids: a user id (positive) may command the bot; a group id
/// (negative) is listed read-only — its members may read, and those of them given as user ids too may also command
/// it there (a group id under `control` would give every member control, and the bot refuses it). Every chat gets
/// the alerts.
fn bot_config_text(url: &str, chats: &[i64], keeper_api: &str, ct_api: &str, store: &str, state: &Path) -> String {
    let join = |ids: Vec<i64>| ids.iter().map(|c| c.to_string()).collect::<Vec<_>>().join(", ");
    let control = join(chats.iter().copied().filter(|c| *c > 0).collect());
    let read_only = join(chats.iter().copied().filter(|c| *c < 0).collect());
    let all = join(chats.to_vec());
    format!(
        r#"[telegram]
token_env = "{TELEGRAM_TOKEN_ENV}"
api_url = "{url}"
mode = "polling"
listen = "127.0.0.1:0"
keeper_api = "{keeper_api}"
copytrade_api = "{ct_api}"
copytrade_store = "{store}"
state_file = "{state}"
[telegram.allow]
control = [{control}]
read_only = [{read_only}]
[telegram.alerts]
chats = [{all}]
"#,
        state = state.display(),
    )
}

#[cfg(test)]
mod tests {
    use super::mirror_delays;

    /// Audit of issue 14, L7: a group id given to the demo is listed read-only (its listed users control there),
    /// not put under control, which the bot refuses.
    #[test]
    fn a_group_chat_is_read_only_and_its_listed_users_control() {
        let text = super::bot_config_text(
            "http://127.0.0.1:1",
            &[-100500, 111],
            "http://127.0.0.1:2",
            "http://127.0.0.1:3",
            "sqlite::memory:",
            std::path::Path::new("/tmp/demo-bot.json"),
        );
        let cfg = kronos_telegram::Config::parse("demo", &text).unwrap();
        assert_eq!(cfg.rights(-100500, Some(111)), kronos_telegram::config::Rights::Control);
        assert_eq!(cfg.rights(-100500, Some(999)), kronos_telegram::config::Rights::Read);
        assert_eq!(cfg.rights(111, Some(111)), kronos_telegram::config::Rights::Control);
    }

    fn v(x: &[(&str, i64)]) -> Vec<(String, i64)> {
        x.iter().map(|(s, t)| (s.to_string(), *t)).collect()
    }

    #[test]
    fn each_lead_fill_pairs_with_the_first_follower_fill_before_the_next() {
        let lead = v(&[("BTC", 100), ("BTC", 200), ("ETH", 150), ("BTC", 300)]);
        // BTC 100 -> 103 (the close-then-open at 105 is the same mirror); BTC 200 never mirrored before 300;
        // ETH 150 -> 160; BTC 300 -> 302.
        let follower = v(&[("BTC", 103), ("BTC", 105), ("ETH", 160), ("BTC", 302), ("BTC", 90)]);
        assert_eq!(mirror_delays(&lead, &follower), vec![3, 10, 2]);
        assert!(mirror_delays(&lead, &[]).is_empty());
        assert!(mirror_delays(&[], &follower).is_empty());
    }
}
