//! Mirror delay: from the local exchange pushing the lead's fill (`ACCOUNT_UPDATE` on the user-data stream) to the
//! same exchange receiving the follower's order request. Both instants are taken inside the exchange process, so
//! the figure covers the stream hop, parsing, the engine's decision, the store write that precedes every order,
//! signing and the REST hop — everything the copy-trader adds. Target: p99 under 100 ms.
//!
//! `cargo bench -p kronos-copytrade --bench mirror_delay -- [trades]` (default 300, about 80 s).

use std::time::{Duration, Instant};

use kronos_binance::stream::StreamConfig;
use kronos_binance::types::{OrderRequest, Side};
use kronos_binance::{ClientConfig, Credentials, FuturesClient, Network};
use kronos_binance_mock::MockExchange;
use kronos_common::{Bus, Secret};
use kronos_copytrade::{Config, Tuning};

fn percentile(sorted: &[f64], q: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i]
}

#[tokio::main]
async fn main() {
    let trades: usize = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(300);
    let ex = MockExchange::start().await;
    ex.add_account("lead", "lead-secret", "10000000", false);
    ex.add_account("follower", "follower-secret", "1000000", false);
    std::env::set_var("BENCH_LEAD_KEY", "lead");
    std::env::set_var("BENCH_LEAD_SECRET", "lead-secret");
    std::env::set_var("BENCH_F_KEY", "follower");
    std::env::set_var("BENCH_F_SECRET", "follower-secret");
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        r#"[copytrade]
mode = "live"
network = "custom"
rest_url = "{rest}"
ws_url = "{ws}"
api_key_env = "BENCH_F_KEY"
api_secret_env = "BENCH_F_SECRET"
store = "sqlite:{dir}/bench.sqlite"
reconcile_interval = "60s"
[copytrade.lead]
api_key_env = "BENCH_LEAD_KEY"
api_secret_env = "BENCH_LEAD_SECRET"
poll_interval = "60s"
use_stream = true
[copytrade.sizing]
ratio = "0.5"
max_notional_per_symbol = "1000000"
max_notional_total = "1000000"
leverage = 2
max_leverage = 5
allow = ["BTCUSDT"]
[copytrade.protection]
stop_loss_pct = "5"
daily_loss_limit = "1000000"
drawdown_pct = "90"
cooldown = "1h"
"#,
        rest = ex.rest_url(),
        ws = ex.ws_url(),
        dir = dir.path().display()
    );
    let cfg = Config::parse("bench.toml", &text).unwrap();
    let tuning = Tuning { stream: StreamConfig::default(), fast_tick: Duration::from_secs(1) };
    let (engine, handles) = kronos_copytrade::run::build(&cfg, true, Bus::new(4096), tuning).await.unwrap();
    tokio::spawn(engine.run(std::future::pending()));
    let t = Instant::now();
    while !(handles.status.lock().ready && handles.status.lock().lead_stream_connected) {
        assert!(t.elapsed() < Duration::from_secs(20), "engine did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut lc = ClientConfig::new(Network::Custom { rest: ex.rest_url(), ws: ex.ws_url() });
    lc.recv_window_ms = 5000;
    let lead = FuturesClient::new(
        lc,
        Some(Credentials { api_key: Secret::new("lead"), api_secret: Secret::new("lead-secret") }),
    )
    .unwrap();

    eprintln!("mirror delay: {trades} lead fills, each mirrored before the next");
    let mut delays = Vec::with_capacity(trades);
    for i in 0..trades {
        // Alternate opening and closing 0.02 BTC: every lead fill needs one follower order (0.01 BTC).
        let side = if i % 2 == 0 { Side::Buy } else { Side::Sell };
        let before_orders =
            ex.order_log().iter().filter(|o| o.api_key == "follower" && o.path == "/fapi/v1/order").count();
        let req = OrderRequest::market("BTCUSDT", side, "0.02".parse().unwrap(), format!("bench{i}"));
        lead.place_order(&req).await.unwrap();
        let pushed = ex
            .push_log()
            .into_iter()
            .rev()
            .find(|p| p.api_key == "lead" && p.event_type == "ACCOUNT_UPDATE")
            .expect("the lead's fill was pushed")
            .at;
        let t = Instant::now();
        let order_at = loop {
            let log: Vec<_> =
                ex.order_log().into_iter().filter(|o| o.api_key == "follower" && o.path == "/fapi/v1/order").collect();
            if log.len() > before_orders {
                break log[before_orders].at;
            }
            assert!(t.elapsed() < Duration::from_secs(10), "trade {i} was not mirrored");
            tokio::time::sleep(Duration::from_millis(1)).await;
        };
        delays.push(order_at.duration_since(pushed).as_secs_f64() * 1000.0);
        // Four lead fills a second: each costs the follower about 7 request weight (order, its fills, stop
        // replacement), so the pace stays under Binance's 2400 per minute. Faster, the client would rightly pause
        // at 90% of the limit until the next minute, and that pause is not what this measures.
        tokio::time::sleep(Duration::from_millis(250)).await;
        if (i + 1) % 50 == 0 {
            eprintln!("  {}/{trades}", i + 1);
        }
    }
    let mut worst: Vec<(usize, f64)> = delays.iter().copied().enumerate().collect();
    worst.sort_by(|a, b| b.1.partial_cmp(&a.1).unwrap());
    eprintln!("slowest fills (index, ms): {:?}", &worst[..3.min(worst.len())]);
    delays.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let mean = delays.iter().sum::<f64>() / delays.len() as f64;
    println!(
        "mirror delay over {} lead fills (ms): p50 {:.2}  p90 {:.2}  p99 {:.2}  max {:.2}  mean {:.2}  (target p99 < 100)",
        delays.len(),
        percentile(&delays, 0.5),
        percentile(&delays, 0.9),
        percentile(&delays, 0.99),
        delays[delays.len() - 1],
        mean
    );
    let dupes = {
        let mut seen = std::collections::HashSet::new();
        ex.account("follower").orders().iter().filter(|o| !seen.insert(o.client_order_id.clone())).count()
    };
    println!("follower orders executed: {}, duplicate client ids: {dupes}", ex.account("follower").orders().len());
}
