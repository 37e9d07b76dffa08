//! The commands: what each needs (read-only or control), what it answers.
//!
//! Adding a command is one line in [`COMMANDS`] and one arm in [`Commands::run`].

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kronos_common::Decimal;
use parking_lot::Mutex;
use rand::Rng;

use crate::backend::{Backend, CopyView, EmergencyOutcome, EmergencySent};
use crate::config::{AlertMode, CATEGORIES};
use crate::format::{esc, short, table};

/// One command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spec {
    pub name: &'static str,
    pub args: &'static str,
    pub help: &'static str,
    /// Needs the control allow-list (otherwise read-only is enough).
    pub control: bool,
}

/// Every command, in `/help` order.
pub const COMMANDS: &[Spec] = &[
    Spec { name: "status", args: "", help: "copy-trader and keeper at a glance", control: false },
    Spec { name: "positions", args: "", help: "copy-trader positions and their stops", control: false },
    Spec { name: "balance", args: "", help: "equity, wallet and unrealised PnL", control: false },
    Spec { name: "stats", args: "", help: "PnL, fees, win rate, by day", control: false },
    Spec { name: "markets", args: "", help: "prediction rounds per chain", control: false },
    Spec { name: "predict", args: "", help: "latest forecast and the on-chain track record", control: false },
    Spec { name: "alerts", args: "[category on|silent|off]", help: "show or change alert settings", control: false },
    // `/start` is what a Telegram client sends by itself when a chat with the bot is opened: it greets and changes
    // nothing (so it never undoes a `/stop`); `/follow` turns copy-trading on.
    Spec { name: "start", args: "", help: "what this bot does (changes nothing)", control: false },
    Spec { name: "follow", args: "", help: "copy-trading on (after /stop)", control: true },
    Spec { name: "stop", args: "", help: "copy-trading off (positions and stops stay)", control: true },
    Spec {
        name: "ratio",
        args: "<x>",
        help: "follower size = lead x ratio (0.001 <= x <= 100; asks for confirmation)",
        control: true,
    },
    Spec { name: "emergency", args: "", help: "close everything (asks for confirmation)", control: true },
    Spec { name: "confirm", args: "<code>", help: "confirm an emergency stop or a new ratio", control: true },
    Spec { name: "help", args: "", help: "this list", control: false },
];

/// Finds a command by name.
pub fn spec(name: &str) -> Option<&'static Spec> {
    COMMANDS.iter().find(|s| s.name == name)
}

/// Splits `/name@bot args` into `(name, args)`; `None` for text that is not a command.
pub fn parse(text: &str) -> Option<(String, String)> {
    let t = text.trim();
    let rest = t.strip_prefix('/')?;
    let (head, args) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
    let name = head.split('@').next().unwrap_or("").to_ascii_lowercase();
    if name.is_empty() {
        return None;
    }
    Some((name, args.trim().to_string()))
}

/// What a `/confirm` code carries out.
#[derive(Debug, Clone, PartialEq)]
enum Action {
    Emergency,
    Ratio(Decimal),
}

impl Action {
    /// What confirming it does, as the confirm text says it.
    fn what(&self) -> String {
        match self {
            Action::Emergency => "closes every position and blocks new trades".into(),
            Action::Ratio(r) => format!("sets ratio {r}"),
        }
    }
}

/// A confirmation asked for by one user in one chat.
#[derive(Debug, Clone)]
struct Pending {
    code: String,
    at: Instant,
    action: Action,
}

/// The command handlers and their shared state.
pub struct Commands {
    pub backend: Backend,
    /// Alert modes by category (changed by `/alerts`, saved by the bot).
    pub alerts: Arc<Mutex<BTreeMap<String, AlertMode>>>,
    /// By (chat, user): in a group each controller confirms only what they asked for.
    pending: Mutex<HashMap<(i64, i64), Pending>>,
    pub confirm_ttl: Duration,
    /// How long `/confirm` of an emergency stop waits for the copy-trader to report what it did.
    pub emergency_wait: Duration,
}

/// The `entries:` line of `/status`: never "allowed" while the emergency stop holds or copy-trading is off.
pub fn entries_line(v: &CopyView) -> String {
    if v.emergency {
        "blocked (emergency stop active)".into()
    } else if !v.trading {
        "none (copy-trading is off)".into()
    } else if let Some(b) = &v.entries_blocked {
        format!("blocked ({b})")
    } else {
        "allowed".into()
    }
}

/// The answer to a confirmed emergency stop: what the copy-trader was sent (`sent`), whether the stop was active
/// already, and what the copy-trader reported within `waited`.
pub fn emergency_reply(sent: &EmergencySent, was_active: bool, outcome: &EmergencyOutcome, waited: Duration) -> String {
    const LIFT: &str = "nothing new is traded until it is lifted with: kronos copytrade resume";
    let api_note = match sent {
        EmergencySent::StoreOnly | EmergencySent::Accepted => String::new(),
        EmergencySent::Refused(status) => format!(
            "\n⚠️ Its API refused the immediate request (HTTP {status}{}).",
            match status {
                401 => ": set telegram.copytrade_token_env to the variable holding the copy-trader's control token",
                403 => ": the copy-trader has no control token (copytrade.api_token_env)",
                _ => "",
            }
        ),
        EmergencySent::Unreachable(e) => format!("\n⚠️ Its API could not be reached ({}).", esc(e)),
    };
    match outcome {
        EmergencyOutcome::Done => {
            format!("🛑 Emergency stop carried out: the copy-trader reports no position open; {LIFT}.{api_note}")
        }
        EmergencyOutcome::Incomplete(detail) => format!(
            "🛑 Emergency stop under way but NOT complete: {}. The copy-trader keeps trying; /positions shows what is \
             still open; {LIFT}.{api_note}",
            esc(detail)
        ),
        EmergencyOutcome::NoAnswer if was_active && *sent != EmergencySent::Accepted => format!(
            "🛑 The emergency stop was already active; it was sent again, but the copy-trader has not reported another \
             pass within {} s. /positions shows what is open; {LIFT}.{api_note}",
            waited.as_secs()
        ),
        EmergencyOutcome::NoAnswer => format!(
            "⚠️ Emergency stop saved, but the copy-trader {} not reported acting on it within {} s: it may not be \
             running, and nothing is known to be closed. It is carried out as soon as the copy-trader runs (the flag \
             holds across restarts); until then positions stay open: close them at the exchange if it cannot be \
             started.{api_note}",
            if *sent == EmergencySent::Accepted { "accepted it over its API but has" } else { "has" },
            waited.as_secs()
        ),
    }
}

fn line_or_error<T>(r: anyhow::Result<T>, f: impl FnOnce(T) -> String) -> String {
    match r {
        Ok(v) => f(v),
        Err(e) => format!("⚠️ {}", esc(&format!("{e:#}"))),
    }
}

impl Commands {
    pub fn new(backend: Backend, alerts: Arc<Mutex<BTreeMap<String, AlertMode>>>) -> Commands {
        Commands {
            backend,
            alerts,
            pending: Mutex::new(HashMap::new()),
            confirm_ttl: Duration::from_secs(60),
            emergency_wait: Duration::from_secs(10),
        }
    }

    /// Runs a command sent by `user` (`None`: not a user, e.g. a channel post; the chat stands for it) in `chat`.
    /// `control` says whether the sender may use control commands (checked here as well as by the caller, so no
    /// path reaches a switch without it).
    pub async fn run(&self, chat: i64, user: Option<i64>, name: &str, args: &str, control: bool) -> String {
        let who = (chat, user.unwrap_or(chat));
        let Some(s) = spec(name) else {
            return format!("Unknown command /{} — /help lists them.", esc(name));
        };
        if s.control && !control {
            return format!("/{} needs control rights; you have read-only access.", s.name);
        }
        match s.name {
            "help" => self.help(control),
            "status" => self.status().await,
            "positions" => self.positions().await,
            "balance" => self.balance().await,
            "stats" => self.stats().await,
            "markets" => self.markets().await,
            "predict" => self.predict().await,
            "alerts" => self.alerts_cmd(args, control),
            "start" => self.start(control).await,
            "follow" => line_or_error(self.backend.set_trading(true).await, |_| {
                "▶️ Copy-trading ON. Lead positions already open are picked up at their next close or flip.".into()
            }),
            "stop" => line_or_error(self.backend.set_trading(false).await, |_| {
                "⏸ Copy-trading OFF: no new orders. Open positions and their stops stay; /follow turns it on again."
                    .into()
            }),
            "ratio" => self.ratio(who, args).await,
            "emergency" => self.emergency(who),
            "confirm" => self.confirm(who, args).await,
            _ => unreachable!("every listed command has an arm"),
        }
    }

    fn help(&self, control: bool) -> String {
        let mut out = String::from("<b>Kronos</b>\n");
        for s in COMMANDS.iter().filter(|s| control || !s.control) {
            let args = if s.args.is_empty() { String::new() } else { format!(" {}", esc(s.args)) };
            out.push_str(&format!("/{}{args} — {}\n", s.name, esc(s.help)));
        }
        if !control {
            out.push_str("(read-only access)\n");
        }
        out
    }

    /// `/start`: a greeting and the copy-trader's switch as it is; changes nothing.
    async fn start(&self, control: bool) -> String {
        let mut out = String::from(
            "👋 Kronos: the keeper's prediction rounds and the copy-trader, from this chat. /help lists the commands.\n",
        );
        if let Ok(v) = self.backend.copytrader().await {
            out.push_str(&format!(
                "Copy-trading is {}{}.\n",
                if v.trading { "ON" } else { "OFF" },
                if !v.trading && control { " (/follow turns it on)" } else { "" }
            ));
        }
        out
    }

    async fn status(&self) -> String {
        let mut out = String::from("<b>Copy-trader</b>\n");
        match self.backend.copytrader().await {
            Ok(v) => {
                out.push_str(&format!(
                    "{}trading {} · ratio {} · emergency {}\n",
                    v.mode.as_ref().map(|m| format!("{m} · ")).unwrap_or_default(),
                    if v.trading { "ON" } else { "OFF" },
                    esc(v.ratio.as_deref().unwrap_or("-")),
                    if v.emergency { "ACTIVE" } else { "off" },
                ));
                out.push_str(&format!("entries: {}\n", esc(&entries_line(&v))));
                out.push_str(&format!(
                    "equity {} · {} position{}{}\n",
                    esc(&v.equity.as_deref().map(|e| short(e, 2)).unwrap_or_else(|| "-".into())),
                    v.positions.len(),
                    if v.positions.len() == 1 { "" } else { "s" },
                    match v.lead_stream {
                        Some(true) => " · lead stream up",
                        Some(false) => " · lead stream DOWN (polling)",
                        None => "",
                    }
                ));
                if !v.live_api {
                    out.push_str("(from the store; the copy-trader's API is not reachable)\n");
                }
            }
            Err(e) => out.push_str(&format!("⚠️ {}\n", esc(&format!("{e:#}")))),
        }
        out.push_str("<b>Keeper</b>\n");
        match self.backend.keeper_health().await {
            Ok(h) => {
                let chains: Vec<String> = h
                    .chains
                    .iter()
                    .map(|(name, c)| format!("{name} {} #{}", if c.healthy { "✓" } else { "✗" }, c.head_block))
                    .collect();
                out.push_str(&format!("{} — {}\n", h.status, esc(&chains.join(", "))));
            }
            Err(e) => out.push_str(&format!("⚠️ {}\n", esc(&format!("{e:#}")))),
        }
        out
    }

    async fn positions(&self) -> String {
        line_or_error(self.backend.copytrader().await, |v| {
            if v.positions.is_empty() {
                return "No open positions.".into();
            }
            let rows: Vec<Vec<String>> = v
                .positions
                .iter()
                .map(|(s, q, e, st)| {
                    vec![
                        s.clone(),
                        q.clone(),
                        short(e, 2),
                        st.as_deref().map(|x| short(x, 2)).unwrap_or_else(|| "-".into()),
                    ]
                })
                .collect();
            table(&["symbol", "qty", "entry", "stop"], &rows)
        })
    }

    async fn balance(&self) -> String {
        line_or_error(self.backend.copytrader().await, |v| {
            let f = |x: &Option<String>| x.as_deref().map(|s| short(s, 2)).unwrap_or_else(|| "-".into());
            table(
                &["", "USDT"],
                &[
                    vec!["equity".into(), f(&v.equity)],
                    vec!["wallet".into(), f(&v.wallet)],
                    vec!["unrealised".into(), f(&v.unrealized)],
                ],
            )
        })
    }

    async fn stats(&self) -> String {
        line_or_error(self.backend.stats(7).await, |(s, days)| {
            let win = if s.closing_fills > 0 {
                format!("{:.0}%", 100.0 * s.wins as f64 / s.closing_fills as f64)
            } else {
                "-".into()
            };
            let mut out = table(
                &["", ""],
                &[
                    vec!["fills".into(), s.fills.to_string()],
                    vec!["win rate".into(), format!("{win} ({}/{})", s.wins, s.closing_fills)],
                    vec!["realised".into(), short(&s.realized_pnl.to_string(), 2)],
                    vec!["fees".into(), short(&s.fees.to_string(), 2)],
                    vec!["net".into(), short(&s.net_pnl.to_string(), 2)],
                    vec![
                        "return".into(),
                        s.return_pct.map(|r| format!("{}%", short(&r.to_string(), 2))).unwrap_or_else(|| "-".into()),
                    ],
                    vec![
                        "max drawdown".into(),
                        s.max_drawdown_pct
                            .map(|r| format!("{}%", short(&r.to_string(), 2)))
                            .unwrap_or_else(|| "-".into()),
                    ],
                ],
            );
            if !days.is_empty() {
                let rows: Vec<Vec<String>> =
                    days.iter().map(|(d, p, n)| vec![d.clone(), short(&p.to_string(), 2), n.to_string()]).collect();
                out.push_str(&table(&["day (UTC)", "net PnL", "fills"], &rows));
            }
            out
        })
    }

    async fn markets(&self) -> String {
        line_or_error(self.backend.markets().await, |v| {
            if v.live.is_empty() {
                return "The keeper drives no market yet.".into();
            }
            let rows: Vec<Vec<String>> = v
                .live
                .iter()
                .map(|m| {
                    vec![
                        m.chain.clone(),
                        m.market.to_string(),
                        m.pair.clone(),
                        m.betting_epoch.to_string(),
                        m.last_result.clone(),
                        format!("{}/{}/{}", m.settled, m.cancelled, m.missed),
                    ]
                })
                .collect();
            format!("{}settled/refunded/missed", table(&["chain", "id", "pair", "round", "last", "s/r/m"], &rows))
        })
    }

    async fn predict(&self) -> String {
        let mut out = String::new();
        match self.backend.markets().await {
            Ok(v) => {
                let rows: Vec<Vec<String>> = v
                    .live
                    .iter()
                    .filter_map(|m| {
                        let p = m.last_p_up?;
                        Some(vec![
                            m.chain.clone(),
                            m.market.to_string(),
                            m.betting_epoch.to_string(),
                            format!("{:.1}%", p * 100.0),
                        ])
                    })
                    .collect();
                if rows.is_empty() && self.backend.keeper_token.is_none() {
                    out.push_str(
                        "Live forecasts stay sealed until their on-chain reveal; set telegram.keeper_token_env to the \
                         keeper's API token to see them here.\n",
                    );
                } else if rows.is_empty() {
                    out.push_str("No forecast yet.\n");
                } else {
                    out.push_str(&table(&["chain", "id", "round", "P(up)"], &rows));
                }
            }
            Err(e) => return format!("⚠️ {}", esc(&format!("{e:#}"))),
        }
        match self.backend.predictions().await {
            Ok(v) => {
                let rows: Vec<Vec<String>> = v
                    .track_records
                    .iter()
                    .map(|r| {
                        let scored = r.hits + r.misses;
                        let rate = if scored > 0 {
                            format!("{:.0}%", 100.0 * r.hits as f64 / scored as f64)
                        } else {
                            "-".into()
                        };
                        vec![
                            r.chain.clone(),
                            format!("{}/{scored}", r.hits),
                            rate,
                            r.voided.to_string(),
                            r.expired.to_string(),
                        ]
                    })
                    .collect();
                if rows.is_empty() {
                    out.push_str("No track record yet.");
                } else {
                    out.push_str("On-chain track record:\n");
                    out.push_str(&table(&["chain", "hits", "rate", "void", "expired"], &rows));
                }
            }
            Err(e) => out.push_str(&format!("⚠️ {}", esc(&format!("{e:#}")))),
        }
        out
    }

    fn alerts_cmd(&self, args: &str, control: bool) -> String {
        let parts: Vec<&str> = args.split_whitespace().collect();
        match parts.as_slice() {
            [] => {
                let modes = self.alerts.lock();
                let rows: Vec<Vec<String>> = modes.iter().map(|(c, m)| vec![c.clone(), m.as_str().into()]).collect();
                format!("{}Change with /alerts &lt;category&gt; on|silent|off", table(&["category", "mode"], &rows))
            }
            [cat, mode] => {
                if !control {
                    return "Changing alerts needs control rights; you have read-only access.".into();
                }
                if !CATEGORIES.iter().any(|(c, _)| c == cat) {
                    let known: Vec<&str> = CATEGORIES.iter().map(|c| c.0).collect();
                    return format!("Unknown category '{}'. Known: {}.", esc(cat), known.join(", "));
                }
                let Some(m) = AlertMode::parse(mode) else {
                    return format!("'{}' is not on, silent or off.", esc(mode));
                };
                self.alerts.lock().insert(cat.to_string(), m);
                format!("Alerts for {} are now {}.", esc(cat), m.as_str())
            }
            _ => "Usage: /alerts, or /alerts &lt;category&gt; on|silent|off".into(),
        }
    }

    async fn ratio(&self, who: (i64, i64), args: &str) -> String {
        let a = args.trim();
        if a.is_empty() || a.contains(char::is_whitespace) {
            return "Usage: /ratio &lt;x&gt;, e.g. /ratio 0.5 (follower size = lead size × x).".into();
        }
        let r: Decimal = match a.parse() {
            Ok(r) => r,
            Err(_) => return format!("'{}' is not a number. Usage: /ratio 0.5", esc(a)),
        };
        if kronos_copytrade::report::valid_ratio(a).is_none() {
            return format!(
                "{}: the ratio must be at least {} (smaller ratios round every position to zero) and at most {}.",
                esc(a),
                kronos_copytrade::report::MIN_RATIO,
                kronos_copytrade::report::MAX_RATIO
            );
        }
        let now = match self.backend.copytrader().await {
            Ok(v) => v.ratio.unwrap_or_else(|| "the configured one".into()),
            Err(e) => return format!("⚠️ {}", esc(&format!("{e:#}"))),
        };
        let action = Action::Ratio(r.normalized());
        let (code, replaced) = self.ask_confirmation(who, action.clone());
        format!(
            "Ratio {} (now {}): positions are resized to lead × {} once the copy-trader reads it (between its turns, \
             about a second while idle), and the new ratio stays in force across \
             restarts (over copytrade.sizing.ratio) until changed again.\n{}",
            r.normalized(),
            esc(&now),
            r.normalized(),
            self.confirm_line(&code, &action, replaced)
        )
    }

    /// Records `action` as waiting for its code from `who` (one per user and chat: a new request replaces that
    /// user's last); returns the code and the action it replaced, if one was still waiting.
    fn ask_confirmation(&self, who: (i64, i64), action: Action) -> (String, Option<Action>) {
        let code = format!("{:04}", rand::thread_rng().gen_range(0..10_000));
        let old = self.pending.lock().insert(who, Pending { code: code.clone(), at: Instant::now(), action });
        (code, old.filter(|p| p.at.elapsed() <= self.confirm_ttl).map(|p| p.action))
    }

    /// "To go ahead, send /confirm CODE (what it does) within N s", and a note when it replaced an earlier request.
    fn confirm_line(&self, code: &str, action: &Action, replaced: Option<Action>) -> String {
        let mut line = format!(
            "To go ahead, send <code>/confirm {code}</code> — it {} — within {} s.",
            esc(&action.what()),
            self.confirm_ttl.as_secs()
        );
        if let Some(old) = replaced {
            line.push_str(&format!(
                "\nThis replaces your pending request ({}): its code no longer works.",
                esc(&old.what())
            ));
        }
        line
    }

    fn emergency(&self, who: (i64, i64)) -> String {
        let (code, replaced) = self.ask_confirmation(who, Action::Emergency);
        format!(
            "⚠️ This cancels every copy-trader order, closes every position and blocks new trades until resumed.\n{}",
            self.confirm_line(&code, &Action::Emergency, replaced)
        )
    }

    async fn confirm(&self, who: (i64, i64), args: &str) -> String {
        let pending = self.pending.lock().remove(&who);
        let Some(p) = pending else {
            return "Nothing to confirm. Send /emergency or /ratio first.".into();
        };
        if p.at.elapsed() > self.confirm_ttl {
            return "That confirmation expired; nothing was done. Send the command again.".into();
        }
        if args.trim() != p.code {
            return "That code does not match; nothing was done. Send the command again.".into();
        }
        match p.action {
            Action::Ratio(r) => line_or_error(self.backend.set_ratio(r).await, |old| {
                format!(
                    "Ratio set to {r} (was {}). The copy-trader reads it between its turns (within about a second \
                     while idle; after the turn under way when busy, sending nothing that adds exposure meanwhile), \
                     then resizes positions to lead × {r}; entries still obey the risk limits.",
                    esc(old.as_deref().unwrap_or("the configured one")),
                )
            }),
            Action::Emergency => {
                // Whether it was asked already only shapes the reply: the stop is sent even when that cannot be read.
                let was_active = match self.backend.emergency_active().await {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %format!("{e:#}"), "the emergency stop's state could not be read");
                        false
                    }
                };
                let (sent, seq) = match self.backend.emergency().await {
                    Ok(s) => s,
                    Err(e) => return format!("⚠️ Emergency stop NOT saved: {}", esc(&format!("{e:#}"))),
                };
                // Sent again while it holds, it makes another pass that the copy-trader reports too; the report
                // answering this request is the one naming its command's number.
                let outcome = self.backend.emergency_outcome(seq, self.emergency_wait).await;
                emergency_reply(&sent, was_active, &outcome, self.emergency_wait)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_parse_with_and_without_the_bot_name() {
        assert_eq!(parse("/ratio 0.5"), Some(("ratio".into(), "0.5".into())));
        assert_eq!(parse("/Status@KronosBot"), Some(("status".into(), "".into())));
        assert_eq!(parse("  /alerts fill   silent "), Some(("alerts".into(), "fill   silent".into())));
        assert_eq!(parse("hello"), None);
        assert_eq!(parse("/"), None);
    }

    /// `/markets`, `/predict` and `/status`' keeper line from the keeper's typed answers.
    #[tokio::test]
    async fn the_keepers_figures_are_shown_from_its_typed_answers() {
        use axum::http::StatusCode;
        let lease = r#"{"epoch":0,"last_loss":null,"leader":null,"role":"single","since_ms":0}"#;
        let live = |market: u64, p: &str| {
            format!(
                r#"{{"betting_epoch":42,"cancelled":2,"chain":"base","delays":[],"execute_gas":[],"last_close_price":null,"last_lock_price":null,"last_p_up":{p},"last_result":"{}","lease":{lease},"market":{market},"missed":1,"next_checkpoint":43,"pair":"BTC/USD","pool_down_wei":"0","pool_up_wei":"0","settled":38}}"#,
                if market == 1 { "#41 up" } else { "" }
            )
        };
        let markets = format!(r#"{{"live":[{},{}],"markets":[]}}"#, live(1, "0.6123"), live(2, "null"));
        let predictions = r#"{"predictions":[],"track_records":[{"brier_sum":"84321","chain":"base","committed":40,"expired":1,"hits":22,"misses":15,"publisher":"0x70","voided":2}]}"#;
        let health = format!(
            r#"{{"chains":{{"base":{{"endpoints":[],"head_block":1234,"head_time":0,"healthy":true,"lag_s":0,"last_error":null,"last_success_ms":0,"rpc_endpoint":0}}}},"markets":[{{"chain":"base","lease":{lease},"market":1}}],"status":"ok","store":true}}"#
        );
        let keeper = crate::backend::tests::serve(&[
            ("/health", StatusCode::OK, health),
            ("/api/markets", StatusCode::OK, markets),
            ("/api/predictions", StatusCode::OK, predictions.to_string()),
        ])
        .await;
        let c = Commands::new(Backend::new(Some(keeper), None, None), Default::default());
        let m = c.markets().await;
        assert!(m.contains("base    1  BTC/USD     42  #41 up  38/2/1"), "{m}");
        assert!(m.contains("base    2  BTC/USD     42          38/2/1"), "{m}");
        let p = c.predict().await;
        assert!(p.contains("base    1     42  61.2%") && !p.contains("base    2"), "a sealed forecast has no row: {p}");
        assert!(p.contains("base   22/37   59%     2        1"), "{p}");
        let s = c.status().await;
        assert!(s.ends_with("<b>Keeper</b>\nok — base ✓ #1234\n"), "{s}");
    }

    fn view() -> CopyView {
        CopyView {
            live_api: true,
            mode: Some("paper".into()),
            trading: true,
            ratio: Some("0.5".into()),
            emergency: false,
            entries_blocked: None,
            equity: None,
            wallet: None,
            unrealized: None,
            positions: vec![],
            lead_stream: None,
        }
    }

    /// Issue 14, item 9: "entries: allowed" is never shown next to an active emergency stop (nor with trading off).
    #[test]
    fn the_entries_line_agrees_with_the_emergency_stop_and_the_switch() {
        assert_eq!(entries_line(&view()), "allowed");
        let emergency = CopyView { emergency: true, entries_blocked: None, ..view() };
        assert_eq!(entries_line(&emergency), "blocked (emergency stop active)");
        let off = CopyView { trading: false, ..view() };
        assert_eq!(entries_line(&off), "none (copy-trading is off)");
        let halted = CopyView { entries_blocked: Some("daily loss limit reached".into()), ..view() };
        assert_eq!(entries_line(&halted), "blocked (daily loss limit reached)");
    }

    /// Issue 14, item 9: the reply says what happened, never "every position is closed" unless it was reported.
    #[test]
    fn the_emergency_reply_says_what_happened() {
        let w = Duration::from_secs(10);
        let down = emergency_reply(
            &EmergencySent::Unreachable("connection refused".into()),
            false,
            &EmergencyOutcome::NoAnswer,
            w,
        );
        assert!(
            down.contains("has not reported acting on it within 10 s")
                && down.contains("nothing is known to be closed")
                && down.contains("could not be reached (connection refused)")
                && !down.contains("every position is closed"),
            "{down}"
        );
        let done = emergency_reply(&EmergencySent::Refused(403), false, &EmergencyOutcome::Done, w);
        assert!(done.contains("carried out") && done.contains("HTTP 403"), "{done}");
        let part = emergency_reply(
            &EmergencySent::Accepted,
            false,
            &EmergencyOutcome::Incomplete("still open: BTCUSDT BOTH 0.05".into()),
            w,
        );
        assert!(part.contains("NOT complete: still open: BTCUSDT BOTH 0.05"), "{part}");
        let again = emergency_reply(&EmergencySent::StoreOnly, true, &EmergencyOutcome::NoAnswer, w);
        assert!(again.contains("already active"), "{again}");
        let silent = emergency_reply(&EmergencySent::Accepted, false, &EmergencyOutcome::NoAnswer, w);
        assert!(silent.contains("accepted it over its API but has not reported"), "{silent}");
    }

    #[test]
    fn every_command_is_documented_once() {
        let mut names: Vec<&str> = COMMANDS.iter().map(|s| s.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), COMMANDS.len());
        for s in COMMANDS {
            assert!(!s.help.is_empty() && s.name.chars().all(|c| c.is_ascii_lowercase()));
        }
    }
}
