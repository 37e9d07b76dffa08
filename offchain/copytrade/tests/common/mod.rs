//! Harness: a local exchange with a lead and a follower account, and a copy-trader engine run against it.

#![allow(dead_code)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use kronos_binance::stream::StreamConfig;
use kronos_binance::types::{OrderRequest, Side};
use kronos_binance::{ClientConfig, Credentials, FuturesClient, Network};
use kronos_binance_mock::MockExchange;
use kronos_common::{Bus, Decimal, Secret};
use kronos_copytrade::{Config, Handles, Tuning};

pub(crate) const LEAD: &str = "lead-key";
/// The control API's token in every scenario.
pub(crate) const CONTROL_TOKEN: &str = "ct-control-token-0123456789";
pub(crate) const FOLLOWER: &str = "follower-key";

pub(crate) fn d(s: &str) -> Decimal {
    s.parse().unwrap()
}

static N: AtomicU64 = AtomicU64::new(0);

/// One scenario's world.
pub(crate) struct World {
    pub ex: MockExchange,
    pub lead: FuturesClient,
    pub dir: tempfile::TempDir,
    pub env: String,
    pub bus: Bus,
}

impl World {
    pub(crate) async fn new() -> World {
        let ex = MockExchange::start().await;
        ex.add_account(LEAD, "lead-secret", "100000", false);
        ex.add_account(FOLLOWER, "follower-secret", "10000", false);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let env = format!("KT{}_{n}", std::process::id());
        // Each scenario reads its keys from its own variables (tests share the process environment).
        std::env::set_var(format!("{env}_LEAD_KEY"), LEAD);
        std::env::set_var(format!("{env}_LEAD_SECRET"), "lead-secret");
        std::env::set_var(format!("{env}_F_KEY"), FOLLOWER);
        std::env::set_var(format!("{env}_F_SECRET"), "follower-secret");
        std::env::set_var(format!("{env}_CT_TOKEN"), CONTROL_TOKEN);
        let mut cfg = ClientConfig::new(Network::Custom { rest: ex.rest_url(), ws: ex.ws_url() });
        cfg.recv_window_ms = 1000;
        let lead = FuturesClient::new(
            cfg,
            Some(Credentials { api_key: Secret::new(LEAD), api_secret: Secret::new("lead-secret") }),
        )
        .unwrap();
        World { ex, lead, dir: tempfile::tempdir().unwrap(), env, bus: Bus::new(4096) }
    }

    /// The configuration text; `mode` is "live" or "paper"; `extra` replaces whole sections when given.
    pub(crate) fn config_text(&self, mode: &str, sizing: &str, protection: &str, lead: &str, extra: &str) -> String {
        format!(
            r#"[copytrade]
mode = "{mode}"
network = "custom"
rest_url = "{rest}"
ws_url = "{ws}"
api_key_env = "{env}_F_KEY"
api_secret_env = "{env}_F_SECRET"
store = "sqlite:{dir}/ct.sqlite"
listen = "127.0.0.1:0"
api_token_env = "{env}_CT_TOKEN"
recv_window_ms = 1000
request_timeout = "800ms"
reconcile_interval = "1s"
[copytrade.lead]
api_key_env = "{env}_LEAD_KEY"
api_secret_env = "{env}_LEAD_SECRET"
{lead}
[copytrade.sizing]
{sizing}
[copytrade.protection]
{protection}
[copytrade.paper]
balance = "10000"
{extra}
"#,
            rest = self.ex.rest_url(),
            ws = self.ex.ws_url(),
            env = self.env,
            dir = self.dir.path().display(),
        )
    }

    pub(crate) fn default_config(&self, mode: &str) -> Config {
        let text = self.config_text(mode, SIZING, PROTECTION, LEAD_STREAM, "");
        Config::parse("test.toml", &text).unwrap()
    }

    /// A new world with an engine started live on the default configuration (ready): `(world, config, engine)`.
    pub(crate) async fn live() -> (World, Config, Running) {
        let w = World::new().await;
        let cfg = w.default_config("live");
        let r = w.start(&cfg).await;
        (w, cfg, r)
    }

    /// Starts an engine; returns its handles, a shutdown trigger and the task.
    pub(crate) async fn start(&self, cfg: &Config) -> Running {
        self.start_tuned(cfg, fast_tuning()).await
    }

    /// Starts an engine with `tuning`.
    pub(crate) async fn start_tuned(&self, cfg: &Config, tuning: Tuning) -> Running {
        let r = self.spawn_tuned(cfg, tuning).await;
        r.wait_ready().await;
        r
    }

    /// Starts an engine with `tuning` and returns at once, ready or not (a start-up that keeps failing).
    pub(crate) async fn spawn_tuned(&self, cfg: &Config, tuning: Tuning) -> Running {
        let live = cfg.mode == kronos_copytrade::Mode::Live;
        let (engine, handles) = kronos_copytrade::run::build(cfg, live, self.bus.clone(), tuning).await.unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            engine
                .run(async {
                    let _ = rx.await;
                })
                .await
        });
        Running { handles, stop: Some(tx), task }
    }

    /// The lead trades at market.
    pub(crate) async fn lead_trade(&self, side: Side, qty: &str, symbol: &str) {
        let id = format!("lead{}", N.fetch_add(1, Ordering::Relaxed));
        let req = OrderRequest::market(symbol, side, d(qty), id);
        self.lead.place_order(&req).await.unwrap();
    }

    pub(crate) fn follower_qty(&self, symbol: &str) -> Decimal {
        self.ex.account(FOLLOWER).position(symbol, "BOTH").amount
    }

    pub(crate) fn follower_stops(&self) -> Vec<kronos_binance::types::AlgoOrder> {
        self.ex.account(FOLLOWER).open_stops(None)
    }

    /// Waits until the follower holds `qty` of `symbol`.
    pub(crate) async fn expect_follower(&self, symbol: &str, qty: &str) {
        let want = d(qty);
        wait_for(&format!("follower {symbol} = {qty}"), || self.follower_qty(symbol) == want).await;
    }

    /// The lead buys 0.1 BTCUSDT at the mark (65000): waits until the follower holds 0.05 (the default ratio 0.5)
    /// under one stop (63700, 2% under its entry, with the default protection).
    pub(crate) async fn first_buy_with_stop(&self) {
        self.lead_trade(Side::Buy, "0.1", "BTCUSDT").await;
        self.expect_follower("BTCUSDT", "0.05").await;
        wait_for("the first stop (63700)", || self.follower_stops().len() == 1).await;
    }

    /// Copy-trading switched off from another process (waited for), then both sides of BTCUSDT held by hand
    /// (LONG 0.05, SHORT 0.03): the follower account must be in hedge mode.
    pub(crate) async fn hold_both_sides_by_hand(&self, r: &Running) {
        send_from_another_process(&r.handles.store, kronos_copytrade::ControlCommand::SetTrading(false)).await;
        wait_for("paused", || !r.handles.status.lock().trading).await;
        let f = follower_client(self);
        let long = OrderRequest {
            position_side: "LONG".into(),
            ..OrderRequest::market("BTCUSDT", Side::Buy, d("0.05"), "manual-long")
        };
        let short = OrderRequest {
            position_side: "SHORT".into(),
            ..OrderRequest::market("BTCUSDT", Side::Sell, d("0.03"), "manual-short")
        };
        f.place_order(&long).await.unwrap();
        f.place_order(&short).await.unwrap();
    }

    /// Follower orders the exchange executed, per client id: each must be executed at most once.
    pub(crate) fn assert_no_duplicates(&self) {
        let mut seen = std::collections::HashMap::new();
        for o in self.ex.account(FOLLOWER).orders() {
            *seen.entry(o.client_order_id.clone()).or_insert(0) += 1;
        }
        for (id, n) in seen {
            assert_eq!(n, 1, "client order id {id} executed {n} times");
        }
    }
}

pub(crate) const SIZING: &str = r#"ratio = "0.5"
max_notional_per_symbol = "10000"
max_notional_total = "20000"
leverage = 2
max_leverage = 5
allow = ["BTCUSDT"]"#;

pub(crate) const PROTECTION: &str = r#"stop_loss_pct = "2"
daily_loss_limit = "1000"
drawdown_pct = "50"
cooldown = "1h""#;

pub(crate) const LEAD_STREAM: &str = r#"poll_interval = "1s"
use_stream = true"#;

/// The tuning of the engines these tests start: a fast stream reconnect and a 200 ms fast tick.
pub(crate) fn fast_tuning() -> Tuning {
    Tuning {
        stream: StreamConfig {
            reconnect_min: Duration::from_millis(50),
            reconnect_max: Duration::from_millis(500),
            ..Default::default()
        },
        fast_tick: Duration::from_millis(200),
    }
}

pub(crate) struct Running {
    pub handles: Handles,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    pub task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Running {
    pub(crate) async fn wait_ready(&self) {
        let st = self.handles.status.clone();
        wait_for("engine ready", || st.lock().ready).await;
    }

    /// Waits until the engine has read the lead after this moment and then completed a reconciliation: whatever it
    /// would do about the lead's positions of now, it has done. (For checks that something does *not* happen.)
    pub(crate) async fn settle(&self) {
        let st = self.handles.status.clone();
        let t = kronos_common::time::now_ms() as i64;
        wait_for("a lead poll", || st.lock().last_lead_poll_ms > t).await;
        let n = st.lock().reconciles;
        wait_for("a reconciliation after it", || st.lock().reconciles > n).await;
    }

    /// A clean stop.
    pub(crate) async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(10), &mut self.task).await;
    }

    /// A crash: the task is dropped wherever it is.
    pub(crate) async fn kill(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

/// How long a test waits for what it checks before it fails: a bound on failure, not a pace (each wait returns as
/// soon as its event is there). 60 s was once too short for a 5-second test on a loaded 2-core machine.
pub(crate) const PATIENCE: Duration = Duration::from_secs(180);

/// Polls an async `cond` for up to [`PATIENCE`].
pub(crate) async fn wait_until<F, Fut>(what: &str, cond: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let t = std::time::Instant::now();
    while t.elapsed() < PATIENCE {
        if cond().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("timed out waiting for {what}");
}

/// Whether the store holds an event of `kind` (whose detail contains `needle`).
pub(crate) async fn has_event(store: &kronos_copytrade::Store, kind: &str, needle: &str) -> bool {
    store.events(500).await.unwrap().iter().any(|e| e.kind == kind && e.detail.contains(needle))
}

/// Waits (up to 60 s) for an event of `kind` whose detail contains `needle`.
pub(crate) async fn wait_event(what: &str, store: &kronos_copytrade::Store, kind: &str, needle: &str) {
    wait_until(what, || has_event(store, kind, needle)).await
}

/// Waits (up to 60 s) for an event of any of `kinds`.
pub(crate) async fn wait_any_event(what: &str, store: &kronos_copytrade::Store, kinds: &[&str]) {
    wait_until(what, || async move {
        for kind in kinds {
            if has_event(store, kind, "").await {
                return true;
            }
        }
        false
    })
    .await
}

/// The events that judge a position gone flat: a stop-out, a close outside the copy-trader, or drift.
pub(crate) const FLAT_JUDGED: [&str; 3] = ["stopped_out", "closed_outside", "position_drift"];

/// Waits (up to 60 s) until the follower's flat position is judged (one of [`FLAT_JUDGED`] recorded).
pub(crate) async fn wait_flat_judged(store: &kronos_copytrade::Store) {
    wait_any_event("the flat position judged", store, &FLAT_JUDGED).await
}

/// Asserts that the store holds an event of `kind` whose detail contains `needle`; on failure shows the last 50.
pub(crate) async fn assert_has_event(store: &kronos_copytrade::Store, kind: &str, needle: &str) {
    assert!(has_event(store, kind, needle).await, "{:?}", store.events(50).await.unwrap());
}

/// Waits (up to 60 s) for the emergency stop `seq`'s report and asserts that it was carried out.
pub(crate) async fn expect_emergency_done(store: &kronos_copytrade::Store, seq: i64) {
    use kronos_copytrade::report::{emergency_outcome, EmergencyOutcome};
    match emergency_outcome(store, seq, PATIENCE).await {
        EmergencyOutcome::Done => {}
        other => panic!("the emergency stop #{seq} was not carried out: {other:?}"),
    }
}

/// Follower market orders the exchange executed (stops excluded).
pub(crate) fn follower_orders(w: &World) -> Vec<kronos_binance::types::Order> {
    w.ex.account(FOLLOWER).orders().to_vec()
}

/// The follower account as a person at the exchange's website would use it (manual trades).
pub(crate) fn follower_client(w: &World) -> FuturesClient {
    let mut cfg = ClientConfig::new(Network::Custom { rest: w.ex.rest_url(), ws: w.ex.ws_url() });
    cfg.recv_window_ms = 1000;
    FuturesClient::new(
        cfg,
        Some(Credentials { api_key: Secret::new(FOLLOWER), api_secret: Secret::new("follower-secret") }),
    )
    .unwrap()
}

/// Polls `cond` for up to [`PATIENCE`].
pub(crate) async fn wait_for(what: &str, cond: impl Fn() -> bool) {
    let t = std::time::Instant::now();
    while t.elapsed() < PATIENCE {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("timed out waiting for {what}");
}

/// Sends a control command as another process does (the CLI, the Telegram bot): appended to the store's control
/// log, with no wake-up; a running copy-trader reads it within its poll interval. Returns its sequence number.
pub(crate) async fn send_from_another_process(
    store: &kronos_copytrade::Store,
    cmd: kronos_copytrade::ControlCommand,
) -> i64 {
    kronos_copytrade::control::append(store, &cmd, "test").await.unwrap()
}

/// Stores a control command by hand, as a person editing the database (or a damaged row) leaves it: `key`,
/// `command` and `value` as they are, unchecked.
pub(crate) async fn store_control_by_hand(url: &str, key: &str, command: &str, value: &str) {
    let (_, pool) = kronos_common::db::open(url).await.unwrap();
    sqlx::query(
        "INSERT INTO ct_control (control_key, command, value, set_by, at_ms) VALUES ($1, $2, $3, 'by hand', 0)",
    )
    .bind(key)
    .bind(command)
    .bind(value)
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;
}

/// The copy-trader's control state as stored.
pub(crate) async fn control_state(store: &kronos_copytrade::Store) -> kronos_copytrade::control::ControlState {
    kronos_copytrade::control::load(store).await.unwrap()
}

/// Makes the store's control log unreadable from another connection, as a failing store leaves it: the `ct_control`
/// table is renamed away (every read of the log then fails, by the engine and by its watcher alike).
pub(crate) async fn hide_control_log(url: &str) {
    let (_, pool) = kronos_common::db::open(url).await.unwrap();
    sqlx::query("ALTER TABLE ct_control RENAME TO ct_control_hidden").execute(&pool).await.unwrap();
    pool.close().await;
}

/// Undoes [`hide_control_log`]: the control log can be read again.
pub(crate) async fn restore_control_log(url: &str) {
    let (_, pool) = kronos_common::db::open(url).await.unwrap();
    sqlx::query("ALTER TABLE ct_control_hidden RENAME TO ct_control").execute(&pool).await.unwrap();
    pool.close().await;
}
