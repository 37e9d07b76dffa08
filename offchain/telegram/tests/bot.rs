//! The bot against a local Bot API server: replies, validation, the allow-list, the emergency confirmation,
//! alerts and their flood summary, 409/429 handling, webhooks, and the copy-trader driven from the chat.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use kronos_common::{Bus, Decimal, SignalKind};
use kronos_copytrade::control::{self, ControlState, EmergencyAsk};
use kronos_copytrade::store::FillRow;
use kronos_copytrade::{ControlCommand, Store};
use kronos_telegram::{Backend, Config, Signals, TelegramBot};
use kronos_testkit::telegram::{MockTelegram, TOKEN};

const CONTROL: i64 = 111;
const READER: i64 = 222;
const GROUP: i64 = -100500;
const STRANGER: i64 = 999;

static N: AtomicU64 = AtomicU64::new(0);

fn d(s: &str) -> Decimal {
    s.parse().unwrap()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

struct World {
    tg: MockTelegram,
    dir: tempfile::TempDir,
    env: String,
    port: u16,
}

impl World {
    async fn new() -> World {
        let env = format!("KT_TG_TOKEN_{}_{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed));
        std::env::set_var(&env, TOKEN);
        World { tg: MockTelegram::start().await, dir: tempfile::tempdir().unwrap(), env, port: free_port() }
    }

    fn config(&self, extra: &str) -> Config {
        let text = format!(
            r#"[telegram]
token_env = "{env}"
api_url = "{url}"
poll_timeout_s = 1
listen = "127.0.0.1:{port}"
state_file = "{dir}/state.json"
emergency_wait = "2s"
{extra}
[telegram.allow]
control = [{CONTROL}]
read_only = [{READER}, {GROUP}]
[telegram.alerts]
chats = [{CONTROL}]
burst = 3
window = "2s"
categories = {{ fill = "silent" }}
"#,
            env = self.env,
            url = self.tg.url(),
            port = self.port,
            dir = self.dir.path().display()
        );
        Config::parse("t.toml", &text).unwrap()
    }

    async fn store(&self) -> Store {
        Store::connect(&format!("sqlite:{}/ct.sqlite", self.dir.path().display())).await.unwrap()
    }

    async fn start(&self, cfg: Config, backend: Backend, signals: Signals) -> Running {
        let bot = TelegramBot::new(cfg, backend).unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(bot.run(signals, async {
            let _ = rx.await;
        }));
        // Ready once it has published its command list.
        let t = std::time::Instant::now();
        while self.tg.commands().is_empty() {
            assert!(t.elapsed() < Duration::from_secs(10), "bot did not start: {:?}", self.tg.calls());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Running { stop: Some(tx), task }
    }

    /// Says `text` and returns the reply.
    async fn ask(&self, chat: i64, user: i64, text: &str) -> String {
        let mid = self.tg.say(chat, user, text);
        self.tg.wait_reply(chat, mid).await.text
    }
}

struct Running {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<anyhow::Result<std::net::SocketAddr>>,
}

impl Running {
    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(Duration::from_secs(10), self.task).await.expect("bot stops").unwrap().unwrap();
    }
}

/// The copy-trader's control state as stored.
async fn state(store: &Store) -> ControlState {
    control::load(store).await.unwrap()
}

/// The runtime ratio set last and by whom.
async fn ratio_set(store: &Store) -> (Option<Decimal>, String) {
    let (r, stamp) = state(store).await.ratio.unwrap().unwrap();
    (r, stamp.set_by)
}

/// The `trading` switch as set last (`None`: never set).
async fn trading_set(store: &Store) -> Option<bool> {
    state(store).await.trading.unwrap().map(|(on, _)| on)
}

/// Whether the emergency stop was sent (and is not lifted).
async fn stop_sent(store: &Store) -> bool {
    matches!(state(store).await.emergency, Ok(Some((EmergencyAsk::Stop { .. }, _))))
}

async fn seeded_store(w: &World) -> Store {
    let s = w.store().await;
    s.set_position("BTCUSDT", d("0.05"), d("65000")).await.unwrap();
    // A ratio set at runtime before (no copy-trader has run since: it is the one in effect).
    let seed = ControlCommand::SetRatio { ratio: Some(d("0.5")), set_by: "seed".into() };
    control::append(&s, &seed, "seed").await.unwrap();
    let now = kronos_common::time::now_ms() as i64;
    for (i, (pnl, fee)) in [("0", "1.625"), ("12.5", "1.6"), ("-4", "1.6")].iter().enumerate() {
        s.insert_fill(&FillRow {
            client_id: format!("kc{i}"),
            symbol: "BTCUSDT".into(),
            side: "BUY".into(),
            qty: "0.05".into(),
            price: "65000".into(),
            fee: fee.to_string(),
            realized_pnl: pnl.to_string(),
            paper: true,
            at_ms: now - (2 - i as i64) * 86_400_000,
        })
        .await
        .unwrap();
    }
    s.record_equity(now - 3_600_000, d("10000")).await.unwrap();
    s.record_equity(now, d("10003.175")).await.unwrap();
    s
}

#[tokio::test]
async fn commands_answer_with_tables_and_validate_their_arguments() {
    let w = World::new().await;
    let store = seeded_store(&w).await;
    let r = w.start(w.config(""), Backend::new(None, None, Some(store.clone())), Signals::None).await;
    assert!(w.tg.commands().contains(&"emergency".to_string()), "the command list is published");

    let help = w.ask(CONTROL, CONTROL, "/help").await;
    assert!(help.contains("/ratio &lt;x&gt;") && help.contains("/emergency"), "{help}");
    let status = w.ask(CONTROL, CONTROL, "/status").await;
    assert!(status.contains("trading ON") && status.contains("ratio 0.5") && status.contains("1 position"), "{status}");
    assert!(status.contains("keeper's API is not configured"), "{status}");
    let pos = w.ask(CONTROL, CONTROL, "/positions@kronos_test_bot").await;
    assert!(
        pos.starts_with("<pre>") && pos.contains("BTCUSDT") && pos.contains("0.05") && pos.contains("65000"),
        "{pos}"
    );
    let stats = w.ask(CONTROL, CONTROL, "/stats").await;
    assert!(
        stats.contains("fills") && stats.contains("50% (1/2)") && stats.contains("8.5") && stats.contains("day (UTC)"),
        "{stats}"
    );
    let bal = w.ask(CONTROL, CONTROL, "/balance").await;
    assert!(bal.contains("10003.18"), "{bal}"); // 10003.175, rounded

    assert!(w.ask(CONTROL, CONTROL, "/ratio abc").await.contains("'abc' is not a number"));
    assert!(w.ask(CONTROL, CONTROL, "/ratio -1").await.contains("must be at least 0.001"));
    assert!(w.ask(CONTROL, CONTROL, "/ratio 101").await.contains("and at most 100"));
    assert!(w.ask(CONTROL, CONTROL, "/ratio").await.contains("Usage: /ratio"));
    assert_eq!(ratio_set(&store).await, (Some(d("0.5")), "seed".to_string()), "nothing was changed by bad input");
    // A new ratio needs its confirmation (issue 14, item 11).
    let ask = w.ask(CONTROL, CONTROL, "/ratio 0.25").await;
    assert!(ask.contains("Ratio 0.25 (now 0.5)") && ask.contains("/confirm "), "{ask}");
    assert_eq!(
        ratio_set(&store).await,
        (Some(d("0.5")), "seed".to_string()),
        "nothing changes before the confirmation"
    );
    let code: String = ask.split("/confirm ").nth(1).unwrap().chars().take(4).collect();
    let ok = w.ask(CONTROL, CONTROL, &format!("/confirm {code}")).await;
    assert!(ok.contains("Ratio set to 0.25 (was 0.5)"), "{ok}");
    assert_eq!(ratio_set(&store).await, (Some(d("0.25")), "Telegram /ratio".to_string()));

    assert!(w.ask(CONTROL, CONTROL, "/stop").await.contains("Copy-trading OFF"));
    assert_eq!(trading_set(&store).await, Some(false));
    assert!(w.ask(CONTROL, CONTROL, "/status").await.contains("trading OFF"));
    // A client sends /start by itself when a chat is opened: it must not undo the /stop (issue 14, item 11).
    let hello = w.ask(CONTROL, CONTROL, "/start").await;
    assert!(hello.contains("/help") && hello.contains("Copy-trading is OFF (/follow turns it on)"), "{hello}");
    assert_eq!(trading_set(&store).await, Some(false), "/start changed the switch");
    assert!(w.ask(CONTROL, CONTROL, "/follow").await.contains("Copy-trading ON"));
    assert_eq!(trading_set(&store).await, Some(true));

    let alerts = w.ask(CONTROL, CONTROL, "/alerts").await;
    assert!(alerts.contains("fill") && alerts.contains("silent") && alerts.contains("settlement"), "{alerts}");
    assert!(w.ask(CONTROL, CONTROL, "/alerts fill off").await.contains("fill are now off"));
    assert!(w.ask(CONTROL, CONTROL, "/alerts fills off").await.contains("Unknown category"));
    assert!(w.ask(CONTROL, CONTROL, "/alerts fill loud").await.contains("not on, silent or off"));
    assert!(w.ask(CONTROL, CONTROL, "/markets").await.contains("keeper's API is not configured"));
    assert!(w.ask(CONTROL, CONTROL, "/frobnicate").await.contains("Unknown command /frobnicate"));
    assert!(w.ask(CONTROL, CONTROL, "hello").await.contains("/help"));
    // Every reply is HTML.
    assert!(w.tg.sent().iter().all(|s| s.parse_mode.as_deref() == Some("HTML")));
    r.stop().await;
    // The alert setting and the offset survive a restart.
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(w.dir.path().join("state.json")).unwrap()).unwrap();
    assert_eq!(saved["alerts"]["fill"], "off");
    assert!(saved["offset"].as_i64().unwrap() > 1000);
    let r = w.start(w.config(""), Backend::new(None, None, Some(store.clone())), Signals::None).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        *w.tg.offsets().last().unwrap(),
        saved["offset"].as_i64().unwrap(),
        "polling resumes after the last handled update"
    );
    assert!(w.ask(CONTROL, CONTROL, "/alerts").await.contains("off"));
    r.stop().await;
}

#[tokio::test]
async fn the_allow_list_denies_by_default_and_separates_read_from_control() {
    let w = World::new().await;
    let store = seeded_store(&w).await;
    let r = w.start(w.config(""), Backend::new(None, None, Some(store.clone())), Signals::None).await;
    // A stranger gets one polite refusal, then silence.
    assert_eq!(w.ask(STRANGER, STRANGER, "/status").await, "Sorry, this is a private bot.");
    w.tg.say(STRANGER, STRANGER, "/emergency");
    w.tg.say(STRANGER, STRANGER, "/ratio 5");
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(w.tg.sent_to(STRANGER).len(), 1);
    assert_eq!(ratio_set(&store).await, (Some(d("0.5")), "seed".to_string()));
    // A read-only member reads but cannot switch anything.
    assert!(w.ask(READER, READER, "/positions").await.contains("BTCUSDT"));
    assert!(w.ask(READER, READER, "/ratio 2").await.contains("needs control rights"));
    assert!(w.ask(READER, READER, "/emergency").await.contains("needs control rights"));
    assert!(w.ask(READER, READER, "/alerts fill off").await.contains("needs control rights"));
    let help = w.ask(READER, READER, "/help").await;
    assert!(!help.contains("/emergency") && help.contains("read-only"), "{help}");
    // A read-only group admits its members by chat id; a control user keeps control rights in that group.
    assert!(w.ask(GROUP, 5555, "/status").await.contains("Copy-trader"));
    assert!(w.ask(GROUP, 5555, "/stop").await.contains("needs control rights"));
    assert!(w.ask(GROUP, CONTROL, "/stop").await.contains("Copy-trading OFF"));
    // A control user in a group nobody listed gets no answer there (its members would read it).
    assert_eq!(w.ask(-100777, CONTROL, "/positions").await, "Sorry, this is a private bot.");
    assert_eq!(ratio_set(&store).await, (Some(d("0.5")), "seed".to_string()));
    assert!(!stop_sent(&store).await);
    r.stop().await;
}

#[tokio::test]
async fn the_emergency_stop_needs_its_confirmation() {
    let w = World::new().await;
    let store = seeded_store(&w).await;
    let r = w.start(w.config(""), Backend::new(None, None, Some(store.clone())), Signals::None).await;
    assert!(w.ask(CONTROL, CONTROL, "/confirm 1234").await.contains("Nothing to confirm"));
    let ask = w.ask(CONTROL, CONTROL, "/emergency").await;
    let code: String = ask.split("/confirm ").nth(1).unwrap().chars().take(4).collect();
    assert!(code.chars().all(|c| c.is_ascii_digit()), "{ask}");
    let wrong = if code == "0000" { "1111" } else { "0000" };
    assert!(w.ask(CONTROL, CONTROL, &format!("/confirm {wrong}")).await.contains("does not match"));
    assert!(!stop_sent(&store).await, "a wrong code does nothing");
    // The wrong attempt used the code up.
    assert!(w.ask(CONTROL, CONTROL, &format!("/confirm {code}")).await.contains("Nothing to confirm"));
    let ask = w.ask(CONTROL, CONTROL, "/emergency").await;
    let code: String = ask.split("/confirm ").nth(1).unwrap().chars().take(4).collect();
    // No copy-trader runs: the reply says the stop is saved and nothing is known to be closed.
    let reply = w.ask(CONTROL, CONTROL, &format!("/confirm {code}")).await;
    assert!(
        reply.contains("Emergency stop saved")
            && reply.contains("nothing is known to be closed")
            && !reply.contains("every position is closed"),
        "{reply}"
    );
    assert!(stop_sent(&store).await);
    // The status agrees with itself: no "entries: allowed" beside the emergency stop (issue 14, item 9).
    let status = w.ask(CONTROL, CONTROL, "/status").await;
    assert!(status.contains("emergency ACTIVE") && status.contains("entries: blocked (emergency stop"), "{status}");
    r.stop().await;
}

/// Issue 14, item 9: with the copy-trader down (its API unreachable), /confirm says the stop is only saved and
/// that nothing is known closed — never that every position is closed.
#[tokio::test]
async fn the_emergency_stop_with_the_copy_trader_down_says_nothing_was_closed() {
    let w = World::new().await;
    let store = seeded_store(&w).await;
    let down = format!("http://127.0.0.1:{}", free_port());
    let r = w.start(w.config(""), Backend::new(None, Some(down), Some(store.clone())), Signals::None).await;
    let ask = w.ask(CONTROL, CONTROL, "/emergency").await;
    let code: String = ask.split("/confirm ").nth(1).unwrap().chars().take(4).collect();
    let reply = w.ask(CONTROL, CONTROL, &format!("/confirm {code}")).await;
    assert!(
        reply.contains("not reported acting on it within 2 s")
            && reply.contains("nothing is known to be closed")
            && reply.contains("could not be reached")
            && !reply.contains("every position is closed"),
        "{reply}"
    );
    assert!(stop_sent(&store).await, "the control log holds the stop");
    r.stop().await;
}

/// Issue 12: with the copy-trader's store failing (here every write to its control log fails as a full disk's
/// would) the stop cannot be recorded: the reply says so, names what is down and says what to do instead (before,
/// it gave the database's error alone).
#[tokio::test]
async fn an_emergency_stop_the_store_cannot_record_says_what_is_down_and_what_to_do() {
    let w = World::new().await;
    let store = seeded_store(&w).await;
    let (_, pool) = kronos_common::db::open(&format!("sqlite:{}/ct.sqlite", w.dir.path().display())).await.unwrap();
    sqlx::raw_sql(
        "CREATE TRIGGER full BEFORE INSERT ON ct_control BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END",
    )
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;
    let r = w.start(w.config(""), Backend::new(None, None, Some(store.clone())), Signals::None).await;
    let ask = w.ask(CONTROL, CONTROL, "/emergency").await;
    let code: String = ask.split("/confirm ").nth(1).unwrap().chars().take(4).collect();
    let reply = w.ask(CONTROL, CONTROL, &format!("/confirm {code}")).await;
    assert!(
        reply.contains("NOT saved")
            && reply.contains("store (its control log) cannot be written")
            && reply.contains("nothing was stopped")
            && reply.contains("stop the copy-trader's process")
            && reply.contains("close the positions on the exchange directly")
            && reply.contains("disk is full"),
        "{reply}"
    );
    assert!(!stop_sent(&store).await);
    r.stop().await;
}

/// Issue 14, item 11: commands queued while the bot was down are not carried out when it comes back./// Issue 14, item 11: commands queued while the bot was down are not carried out when it comes back.
#[tokio::test]
async fn commands_sent_while_the_bot_was_down_are_not_carried_out_later() {
    let w = World::new().await;
    let store = seeded_store(&w).await;
    let ten_min_ago = kronos_common::time::now_s() - 600;
    // Queued before the bot starts.
    let stale = w.tg.say_at(CONTROL, CONTROL, "/stop", ten_min_ago);
    let r = w.start(w.config(""), Backend::new(None, None, Some(store.clone())), Signals::None).await;
    let reply = w.tg.wait_reply(CONTROL, stale).await.text;
    assert!(reply.contains("/stop was sent 10m") && reply.contains("not carried out"), "{reply}");
    assert_eq!(trading_set(&store).await, None, "the stale /stop did nothing");
    // A fresh one runs.
    assert!(w.ask(CONTROL, CONTROL, "/stop").await.contains("Copy-trading OFF"));
    r.stop().await;
}

/// Issue 14, item 11: a Bot API that answers getUpdates at once (no long poll) is polled with a growing pause,
/// not hundreds of times a second; commands still get their answers.
#[tokio::test]
async fn a_bot_api_that_answers_polls_at_once_is_not_hammered() {
    let w = World::new().await;
    w.tg.answer_polls_at_once(true);
    let r = w.start(w.config(""), Backend::new(None, None, None), Signals::None).await;
    let polls = || w.tg.calls().iter().filter(|c| *c == "getupdates").count();
    let (t, n) = (std::time::Instant::now(), polls());
    while polls() < n + 4 {
        assert!(t.elapsed() < Duration::from_secs(60), "polling stopped");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Four empty answers at once: at least 250 + 500 + 1000 ms of pauses between them.
    assert!(t.elapsed() >= Duration::from_millis(1500), "4 polls in {:?}: no back-off", t.elapsed());
    assert!(w.ask(CONTROL, CONTROL, "/help").await.contains("/status"));
    r.stop().await;
}

/// Issue 14, item 11: a Bot API that cannot be reached is not reported as a refused token.
#[tokio::test]
async fn an_unreachable_bot_api_is_not_called_a_refused_token() {
    let w = World::new().await;
    let mut cfg = w.config("");
    cfg.api_url = format!("http://127.0.0.1:{}/", free_port());
    let bot = TelegramBot::new(cfg, Backend::new(None, None, None)).unwrap();
    let e = bot.check().await.unwrap_err().to_string();
    assert!(e.contains("could not be reached") && !e.contains("did not accept the token"), "{e}");
    assert!(!e.contains(kronos_testkit::telegram::TOKEN), "{e}");
}

/// The copy-trader's control API (its real router) on a free port, with `token` as its control token; returns
/// its URL (what it accepts it appends to the control log, sent by "the HTTP API").
async fn copytrader_api(store: &Store, token: Option<&str>) -> String {
    let handles = kronos_copytrade::Handles {
        status: Default::default(),
        metrics: std::sync::Arc::new(kronos_copytrade::metrics::Metrics::new()),
        control: kronos_copytrade::Control::new(store.clone()),
        store: store.clone(),
        bus: Bus::new(16),
        control_token: token.map(kronos_common::Secret::new),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, kronos_copytrade::service::router(handles)).await });
    url
}

/// Who sent the emergency command last (`None`: none sent, or it is not a stop).
async fn stop_sent_by(store: &Store) -> Option<String> {
    match state(store).await.emergency {
        Ok(Some((EmergencyAsk::Stop { .. }, stamp))) => Some(stamp.set_by),
        _ => None,
    }
}

#[tokio::test]
async fn the_emergency_stop_reaches_the_copy_trader_with_its_control_token_and_says_what_happened() {
    let w = World::new().await;
    let store = seeded_store(&w).await;
    let var = format!("{}_CT", w.env);
    std::env::set_var(&var, "ct-control-token-0123456789");
    let url = copytrader_api(&store, Some("ct-control-token-0123456789")).await;
    // With the token: the running copy-trader takes the command at once.
    let cfg = w.config(&format!("copytrade_token_env = \"{var}\""));
    let r = w.start(cfg, Backend::new(None, Some(url.clone()), Some(store.clone())), Signals::None).await;
    let ask = w.ask(CONTROL, CONTROL, "/emergency").await;
    let code: String = ask.split("/confirm ").nth(1).unwrap().chars().take(4).collect();
    let reply = w.ask(CONTROL, CONTROL, &format!("/confirm {code}")).await;
    // This stand-in API runs no engine: it accepts, but nothing reports acting on it.
    assert!(reply.contains("accepted it over its API but has not reported acting on it"), "{reply}");
    // Sent once, by the API (which appended it and woke its engine), not a second time by the bot.
    assert_eq!(stop_sent_by(&store).await.as_deref(), Some("the HTTP API"));
    let n = store.events(100).await.unwrap().iter().filter(|e| e.kind == "emergency_requested").count();
    assert_eq!(n, 1);
    r.stop().await;
    // Without it: refused (401), and the reply says so; the bot appends the stop to the control log itself.
    control::append(&store, &ControlCommand::Resume, "test").await.unwrap();
    let r = w.start(w.config(""), Backend::new(None, Some(url), Some(store.clone())), Signals::None).await;
    let ask = w.ask(CONTROL, CONTROL, "/emergency").await;
    let code: String = ask.split("/confirm ").nth(1).unwrap().chars().take(4).collect();
    let reply = w.ask(CONTROL, CONTROL, &format!("/confirm {code}")).await;
    assert!(reply.contains("Emergency stop saved") && reply.contains("HTTP 401"), "{reply}");
    assert!(reply.contains("telegram.copytrade_token_env"), "{reply}");
    assert_eq!(stop_sent_by(&store).await.as_deref(), Some("Telegram"));
    r.stop().await;
}

/// Audit finding (e) of the reverted one-control-path change: the bot refused to send an emergency stop when the
/// stop's current state could not be read. Here the emergency key holds a value nobody can read (an older
/// copy-trader's store, imported as it is): `/confirm` still sends the stop, and the control log holds it.
#[tokio::test]
async fn the_emergency_stop_is_sent_even_when_its_state_cannot_be_read() {
    let w = World::new().await;
    let store = seeded_store(&w).await;
    store.set_state("emergency", "yes").await.unwrap();
    drop(store);
    let store = w.store().await; // opened again: the old key is imported as it is
    assert!(state(&store).await.emergency.is_err(), "the stop's state cannot be read");
    let r = w.start(w.config(""), Backend::new(None, None, Some(store.clone())), Signals::None).await;
    let ask = w.ask(CONTROL, CONTROL, "/emergency").await;
    let code: String = ask.split("/confirm ").nth(1).unwrap().chars().take(4).collect();
    let reply = w.ask(CONTROL, CONTROL, &format!("/confirm {code}")).await;
    assert!(!reply.contains("NOT saved"), "{reply}");
    assert_eq!(stop_sent_by(&store).await.as_deref(), Some("Telegram"), "the stop was sent: {reply}");
    r.stop().await;
}

#[tokio::test]
async fn alerts_follow_their_settings_and_a_flood_becomes_one_summary() {
    let w = World::new().await;
    let bus = Bus::new(1024);
    let r = w.start(w.config(""), Backend::new(None, None, None), Signals::Bus(bus.clone())).await;
    bus.publish(
        "keeper",
        SignalKind::RoundSettled {
            chain: "base".into(),
            market: 1,
            epoch: 9,
            outcome: kronos_common::signals::Outcome::Up,
            lock_price: d("65000.5"),
            close_price: d("65100.25"),
            total_wei: "3000000000000000000".into(),
            reward_wei: "2940000000000000000".into(),
            treasury_fee_wei: "60000000000000000".into(),
            delay_blocks: 1,
        },
    );
    let s = w.tg.wait_sent(CONTROL, 1).await;
    assert!(s[0].text.contains("base market 1 round 9 settled UP") && !s[0].silent, "{:?}", s[0]);
    // Off by default: no message.
    bus.publish(
        "keeper",
        SignalKind::PriceRead {
            chain: "base".into(),
            pair: "BTC/USD".into(),
            price: d("1"),
            round_id: "1".into(),
            updated_at: 1,
        },
    );
    // Silent category: delivered without notification.
    bus.publish(
        "copytrader",
        SignalKind::OrderFilled {
            symbol: "BTCUSDT".into(),
            side: kronos_common::signals::Side::Buy,
            qty: d("0.05"),
            price: d("65000"),
            fee: d("1.625"),
            realized_pnl: d("0"),
            client_order_id: "kc1".into(),
            paper: true,
        },
    );
    let s = w.tg.wait_sent(CONTROL, 2).await;
    assert!(s[1].text.contains("BTCUSDT") && s[1].text.contains("[paper]") && s[1].silent, "{:?}", s[1]);
    // A flood: 20 risk events. The burst allows 3 per 2 s window (2 already used): one more, then a summary.
    for i in 0..20 {
        bus.publish("copytrader", SignalKind::RiskEvent { kind: "order_rejected".into(), detail: format!("#{i}") });
    }
    let s = w.tg.wait_sent(CONTROL, 4).await;
    assert!(s[2].text.contains("order_rejected: #0"), "{:?}", s[2]);
    assert!(s[3].text.contains("19 more alerts in the last 2 s: 19 risk"), "{:?}", s[3]);
    // One summary, not a flood: the next message is an alert published after the summary (the bot handles alerts in
    // order, so anything the flood still let through would come before it).
    bus.publish("copytrader", SignalKind::RiskEvent { kind: "order_rejected".into(), detail: "after".into() });
    let s = w.tg.wait_sent(CONTROL, 5).await;
    assert!(s[4].text.contains("order_rejected: after"), "one summary, not a flood: {:?}", &s[3..]);
    assert!(w.tg.sent().iter().all(|s| s.chat_id == CONTROL), "alerts go to the alert chats only");
    r.stop().await;
}

#[tokio::test]
async fn polling_rides_out_conflicts_and_flood_control() {
    let w = World::new().await;
    w.tg.conflict(3);
    let r = w.start(w.config(""), Backend::new(None, None, None), Signals::None).await;
    w.tg.flood(1);
    let reply = w.ask(CONTROL, CONTROL, "/help").await;
    assert!(reply.contains("/status"));
    assert!(w.tg.calls().iter().filter(|c| *c == "getupdates").count() >= 4);
    assert!(w.tg.calls().contains(&"deletewebhook".to_string()), "polling clears a stale webhook first");
    r.stop().await;
}

#[tokio::test]
async fn webhook_mode_sets_the_hook_and_checks_its_secret() {
    let w = World::new().await;
    let secret_env = format!("{}_HOOK", w.env);
    std::env::set_var(&secret_env, "s3cret-token-for_the-hook");
    let cfg = w.config(&format!("mode = \"webhook\"\nwebhook_url = \"https://bot.example.invalid/telegram/hook\"\nwebhook_secret_env = \"{secret_env}\""));
    let bot = TelegramBot::new(cfg.clone(), Backend::new(None, None, None)).unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(bot.run(Signals::None, async {
        let _ = rx.await;
    }));
    let t = std::time::Instant::now();
    while w.tg.webhook().is_none() {
        assert!(t.elapsed() < Duration::from_secs(10));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        w.tg.webhook().unwrap(),
        ("https://bot.example.invalid/telegram/hook".into(), "s3cret-token-for_the-hook".into())
    );
    let http = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{}/telegram/hook", w.port);
    let update = w.tg.update_json(CONTROL, CONTROL, "/help");
    let bad = http.post(&url).header("X-Telegram-Bot-Api-Secret-Token", "guess").json(&update).send().await.unwrap();
    assert_eq!(bad.status(), 401);
    let good = http
        .post(&url)
        .header("X-Telegram-Bot-Api-Secret-Token", "s3cret-token-for_the-hook")
        .json(&update)
        .send()
        .await
        .unwrap();
    assert_eq!(good.status(), 200);
    let s = w.tg.wait_sent(CONTROL, 1).await;
    assert!(s[0].text.contains("/status"));
    assert_eq!(w.tg.sent_to(CONTROL).len(), 1, "the refused request ran nothing");
    assert!(!w.tg.calls().contains(&"getupdates".to_string()), "no polling in webhook mode");
    let health: serde_json::Value =
        http.get(format!("http://127.0.0.1:{}/health", w.port)).send().await.unwrap().json().await.unwrap();
    assert_eq!(health["mode"], "webhook");
    let metrics = http.get(format!("http://127.0.0.1:{}/metrics", w.port)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("kronos_telegram_commands_total{name=\"help\"} 1"), "{metrics}");
    let _ = tx.send(());
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_token_the_bot_api_refuses_is_a_clear_error() {
    let w = World::new().await;
    std::env::set_var(&w.env, "999:wrong");
    let bot = TelegramBot::new(w.config(""), Backend::new(None, None, None)).unwrap();
    let e = bot.run(Signals::None, std::future::pending()).await.unwrap_err().to_string();
    assert!(e.contains("did not accept the token in") && !e.contains("999:wrong"), "{e}");
    std::env::remove_var(&w.env);
    let e = TelegramBot::new(w.config(""), Backend::new(None, None, None)).err().unwrap().to_string();
    assert!(e.contains("is not set"), "{e}");
    // The keeper's API token, when configured, must be in the environment too.
    std::env::set_var(&w.env, kronos_testkit::telegram::TOKEN);
    let cfg = w.config("keeper_api = \"http://127.0.0.1:9\"\nkeeper_token_env = \"KT_SURELY_UNSET_KEEPER_TOKEN\"");
    let e = TelegramBot::new(cfg, Backend::new(None, None, None)).err().unwrap().to_string();
    assert!(
        e.contains("telegram.keeper_token_env: environment variable KT_SURELY_UNSET_KEEPER_TOKEN is not set"),
        "{e}"
    );
}

/// The copy-trader (paper, following a lead on the local exchange) driven from the chat: positions, ratio,
/// stop/start, the emergency stop, and its fills as alerts.
#[tokio::test]
async fn the_copy_trader_is_driven_from_the_chat() {
    use kronos_binance::types::{OrderRequest, Side};
    use kronos_binance::{ClientConfig, Credentials, FuturesClient, Network};
    let w = World::new().await;
    let ex = kronos_binance_mock::MockExchange::start().await;
    ex.add_account("lead", "lead-secret", "100000", false);
    let env = format!("{}_LEAD", w.env);
    std::env::set_var(format!("{env}_KEY"), "lead");
    std::env::set_var(format!("{env}_SECRET"), "lead-secret");
    let ct_text = format!(
        r#"[copytrade]
network = "custom"
rest_url = "{rest}"
ws_url = "{ws}"
store = "sqlite:{dir}/ct.sqlite"
reconcile_interval = "1s"
[copytrade.lead]
api_key_env = "{env}_KEY"
api_secret_env = "{env}_SECRET"
poll_interval = "1s"
[copytrade.sizing]
ratio = "0.5"
max_notional_per_symbol = "100000"
max_notional_total = "100000"
allow = ["BTCUSDT"]
[copytrade.protection]
stop_loss_pct = "2"
daily_loss_limit = "1000"
drawdown_pct = "50"
cooldown = "1h"
"#,
        rest = ex.rest_url(),
        ws = ex.ws_url(),
        dir = w.dir.path().display()
    );
    let ct = kronos_copytrade::Config::parse("ct.toml", &ct_text).unwrap();
    let bus = Bus::new(4096);
    let tuning = kronos_copytrade::Tuning { fast_tick: Duration::from_millis(200), ..Default::default() };
    let (engine, handles) = kronos_copytrade::run::build(&ct, false, bus.clone(), tuning).await.unwrap();
    let (api, _srv) = kronos_copytrade::run::serve(handles.clone(), "127.0.0.1:0").await.unwrap();
    tokio::spawn(engine.run(std::future::pending()));
    let status = handles.status.clone();
    let wait = |what: &'static str, f: Box<dyn Fn() -> bool>| async move {
        let t = std::time::Instant::now();
        while !f() {
            assert!(t.elapsed() < Duration::from_secs(15), "timed out: {what}");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    };
    let st = status.clone();
    wait("copy-trader ready", Box::new(move || st.lock().ready)).await;
    let backend = Backend::new(None, Some(format!("http://{api}")), Some(handles.store.clone()));
    let r = w.start(w.config(""), backend, Signals::Bus(bus.clone())).await;

    let mut lc = ClientConfig::new(Network::Custom { rest: ex.rest_url(), ws: ex.ws_url() });
    lc.recv_window_ms = 5000;
    let lead = FuturesClient::new(
        lc,
        Some(Credentials {
            api_key: kronos_common::Secret::new("lead"),
            api_secret: kronos_common::Secret::new("lead-secret"),
        }),
    )
    .unwrap();
    let trade = |side: Side, qty: &str, id: &str| OrderRequest::market("BTCUSDT", side, d(qty), id);
    let qty = |st: &std::sync::Arc<parking_lot::Mutex<kronos_copytrade::Status>>| {
        st.lock().positions.first().map(|p| p.qty.clone()).unwrap_or_default()
    };

    lead.place_order(&trade(Side::Buy, "0.1", "l1")).await.unwrap();
    let st = status.clone();
    wait("follower 0.05", Box::new(move || qty(&st) == "0.05")).await;
    let st = status.clone();
    wait("stop placed", Box::new(move || st.lock().positions.first().is_some_and(|p| p.stop_price.is_some()))).await;
    let pos = w.ask(CONTROL, CONTROL, "/positions").await;
    assert!(pos.contains("BTCUSDT") && pos.contains("0.05") && pos.contains("63700"), "{pos}");
    let stat = w.ask(CONTROL, CONTROL, "/status").await;
    assert!(stat.contains("paper") && stat.contains("trading ON") && stat.contains("lead stream up"), "{stat}");
    assert!(
        w.ask(CONTROL, CONTROL, "/balance").await.contains("9998.38"),
        "paper wallet after one fee of 1.625 (9998.375, rounded)"
    );
    // A silent fill alert reached the alert chat.
    let fills: Vec<_> = w.tg.sent_to(CONTROL).into_iter().filter(|s| s.text.contains("[paper]")).collect();
    assert!(!fills.is_empty() && fills.iter().all(|s| s.silent), "{fills:?}");

    let ask = w.ask(CONTROL, CONTROL, "/ratio 0.8").await;
    let code: String = ask.split("/confirm ").nth(1).unwrap().chars().take(4).collect();
    assert!(w.ask(CONTROL, CONTROL, &format!("/confirm {code}")).await.contains("Ratio set to 0.8 (was 0.5)"));
    let st = status.clone();
    wait("follower resized to 0.08", Box::new(move || qty(&st) == "0.08")).await;

    assert!(w.ask(CONTROL, CONTROL, "/stop").await.contains("OFF"));
    let st = status.clone();
    wait("paused", Box::new(move || !st.lock().trading)).await;
    lead.place_order(&trade(Side::Buy, "0.1", "l2")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(qty(&status), "0.08");
    // What /stop did shows at once (issue 14, item 8).
    let stat = w.ask(CONTROL, CONTROL, "/status").await;
    assert!(stat.contains("trading OFF") && stat.contains("entries: none (copy-trading is off)"), "{stat}");
    assert!(w.ask(CONTROL, CONTROL, "/follow").await.contains("ON"));

    let ask = w.ask(CONTROL, CONTROL, "/emergency").await;
    let code: String = ask.split("/confirm ").nth(1).unwrap().chars().take(4).collect();
    // This copy-trader has no control token: its API refuses (403), the reply says so, and the store's flag stops it.
    let reply = w.ask(CONTROL, CONTROL, &format!("/confirm {code}")).await;
    // It acted on the store's flag and reported what it did; the reply says so (issue 14, item 9).
    assert!(reply.contains("carried out") && reply.contains("HTTP 403"), "{reply}");
    let st = status.clone();
    wait("flat after the emergency stop", Box::new(move || st.lock().positions.is_empty() && st.lock().risk.emergency))
        .await;
    let stat = w.ask(CONTROL, CONTROL, "/status").await;
    assert!(stat.contains("emergency ACTIVE") && stat.contains("entries: blocked (emergency stop"), "{stat}");
    assert!(w.ask(CONTROL, CONTROL, "/positions").await.contains("No open positions"));
    r.stop().await;
}

/// Audit of issue 14, M3: confirmations are per user, not per chat. In a group with two controllers, one's /ratio
/// neither replaces nor can be confirmed by the other's pending /emergency; the confirm text says what the code
/// does; a requester whose own earlier request is replaced is told so.
#[tokio::test]
async fn confirmations_belong_to_the_user_who_asked() {
    const OTHER: i64 = 333;
    let w = World::new().await;
    let store = seeded_store(&w).await;
    let mut cfg = w.config("");
    cfg.control.insert(OTHER);
    let r = w.start(cfg, Backend::new(None, None, Some(store.clone())), Signals::None).await;
    let code_of = |reply: &str| -> String { reply.split("/confirm ").nth(1).unwrap().chars().take(4).collect() };
    let a = w.ask(GROUP, CONTROL, "/emergency").await;
    assert!(a.contains("closes every position"), "{a}");
    let code_a = code_of(&a);
    let b = w.ask(GROUP, OTHER, "/ratio 2").await;
    let code_b = code_of(&b);
    // A cannot confirm B's ratio (only its own emergency stop, which has another code).
    if code_a != code_b {
        let reply = w.ask(GROUP, CONTROL, &format!("/confirm {code_b}")).await;
        assert!(!reply.contains("Ratio set"), "{reply}");
        assert_eq!(ratio_set(&store).await, (Some(d("0.5")), "seed".to_string()), "B's ratio was confirmed by A");
        assert!(!stop_sent(&store).await);
    }
    assert!(b.contains("sets ratio 2"), "the confirm text names the action: {b}");
    // B's own request is still waiting for B.
    let reply = w.ask(GROUP, OTHER, &format!("/confirm {code_b}")).await;
    assert!(reply.contains("Ratio set to 2"), "{reply}");
    // A replacing its own pending request is told.
    w.ask(GROUP, CONTROL, "/emergency").await;
    let again = w.ask(GROUP, CONTROL, "/ratio 3").await;
    assert!(again.contains("replaces your pending request (closes every position"), "{again}");
    r.stop().await;
}

/// Audit of issue 14, L5: `/ratio` below the documented minimum (0.001) is refused: a ratio like 1e-30 rounds every
/// position to zero and would close everything.
#[tokio::test]
async fn a_ratio_below_the_minimum_is_refused() {
    let w = World::new().await;
    let store = seeded_store(&w).await;
    let r = w.start(w.config(""), Backend::new(None, None, Some(store.clone())), Signals::None).await;
    let reply = w.ask(CONTROL, CONTROL, "/ratio 0.0000001").await;
    assert!(reply.contains("at least 0.001") && !reply.contains("/confirm"), "{reply}");
    // An exponent is not taken as a number at all.
    let reply = w.ask(CONTROL, CONTROL, "/ratio 1e-30").await;
    assert!(!reply.contains("/confirm"), "{reply}");
    r.stop().await;
}

/// Audit of issue 14, L7: in polling mode a confirmed emergency stop that waits for the copy-trader's report does
/// not make a command sent meanwhile "older than max_command_age": its age counts until the bot received it.
#[tokio::test]
async fn a_command_sent_during_an_emergency_wait_is_not_called_stale() {
    let w = World::new().await;
    let store = seeded_store(&w).await;
    // The wait (5 s, no copy-trader answers) is longer than the age a command may have (3 s).
    let mut cfg = w.config("");
    cfg.emergency_wait = Duration::from_secs(5);
    cfg.max_command_age = Duration::from_secs(3);
    let r = w.start(cfg, Backend::new(None, None, Some(store.clone())), Signals::None).await;
    let ask = w.ask(CONTROL, CONTROL, "/emergency").await;
    let code: String = ask.split("/confirm ").nth(1).unwrap().chars().take(4).collect();
    let confirm = w.tg.say(CONTROL, CONTROL, &format!("/confirm {code}"));
    let status = w.tg.say(CONTROL, CONTROL, "/status");
    let reply = w.tg.wait_reply(CONTROL, status).await.text;
    assert!(!reply.contains("not carried out"), "a command sent during the wait was refused as stale: {reply}");
    assert!(reply.contains("emergency ACTIVE"), "{reply}");
    let reply = w.tg.wait_reply(CONTROL, confirm).await.text;
    assert!(reply.contains("Emergency stop saved"), "{reply}");
    r.stop().await;
}
