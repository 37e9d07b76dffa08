//! The bot's runtime: updates by long polling (default) or webhook, the allow-list, replies, alerts.
//!
//! Polling deletes any webhook first and treats Telegram's 409 "terminated by other getUpdates request" as what it
//! is — another process polling the same token — with one clear log line a minute and a back-off, never a crash
//! loop. The update offset is saved after every batch, so a restart neither loses nor repeats commands.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use kronos_common::http_guard::{Guard, Limits};
use kronos_common::{Bus, Secret, Signal};
use parking_lot::Mutex;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};
use teloxide::prelude::*;
use teloxide::types::{
    AllowedUpdate, BotCommand, LinkPreviewOptions, MessageId, ParseMode, ReplyParameters, UpdateKind,
};
use teloxide::{ApiError, RequestError};
use tokio::sync::mpsc;

use crate::alerts::{describe, Decision, Limiter};
use crate::backend::Backend;
use crate::commands::{parse, spec, Commands, COMMANDS};
use crate::config::{AlertMode, Config, Delivery, Rights};
use crate::social::SocialItem;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NameLabel {
    name: String,
}

/// The bot's metrics.
#[derive(Default)]
pub struct BotMetrics {
    updates: Counter,
    commands: Family<NameLabel, Counter>,
    refused: Counter,
    alerts_sent: Family<NameLabel, Counter>,
    alerts_suppressed: Counter,
    social_alerts_sent: Counter,
    social_alerts_suppressed: Counter,
    send_errors: Counter,
    poll_conflicts: Counter,
    stale: Counter,
    /// The HTTP service's limits: refusals, drops, open connections.
    guard: kronos_common::http_guard::GuardMetrics,
}

impl BotMetrics {
    fn encode(&self) -> String {
        let mut r = Registry::with_prefix("kronos_telegram");
        r.register("updates", "Updates received", self.updates.clone());
        r.register("commands", "Commands run, by name", self.commands.clone());
        r.register("refused", "Messages refused by the allow-list", self.refused.clone());
        r.register("alerts_sent", "Alerts sent, by category", self.alerts_sent.clone());
        r.register(
            "alerts_suppressed",
            "Alerts folded into summaries by the rate limit",
            self.alerts_suppressed.clone(),
        );
        r.register(
            "social_alerts_sent",
            "Social monitor items sent as alerts (each alert chat counts)",
            self.social_alerts_sent.clone(),
        );
        r.register(
            "social_alerts_suppressed",
            "Social monitor items folded into summaries by the rate limit (each alert chat counts)",
            self.social_alerts_suppressed.clone(),
        );
        r.register("send_errors", "Messages Telegram did not accept", self.send_errors.clone());
        r.register("poll_conflicts", "409 conflicts: another process polls this token", self.poll_conflicts.clone());
        r.register(
            "stale_commands",
            "Commands older than telegram.max_command_age, not carried out",
            self.stale.clone(),
        );
        self.guard.register(&mut r);
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &r);
        out
    }
}

/// The limits of the bot's HTTP service ([`kronos_common::http_guard`]): the defaults, with room for Telegram's
/// webhook updates (1 MiB bodies). Telegram sends no `Origin`, so the origin check never refuses it.
pub fn http_limits() -> Limits {
    Limits { max_body_bytes: 1024 * 1024, ..Limits::default() }
}

/// What the bot keeps across restarts.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Saved {
    offset: i64,
    #[serde(default)]
    alerts: BTreeMap<String, AlertMode>,
}

fn load_saved(path: &Path) -> Saved {
    std::fs::read_to_string(path).ok().and_then(|t| serde_json::from_str(&t).ok()).unwrap_or_default()
}

fn save(path: &Path, s: &Saved) {
    let write = || -> std::io::Result<()> {
        if let Some(d) = path.parent() {
            if !d.as_os_str().is_empty() {
                std::fs::create_dir_all(d)?;
            }
        }
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_string_pretty(s).unwrap_or_default())?;
        std::fs::rename(&tmp, path)
    };
    if let Err(e) = write() {
        tracing::error!(path = %path.display(), error = %e, "telegram: state could not be saved");
    }
}

/// The running bot.
#[derive(Clone)]
pub struct TelegramBot {
    bot: Bot,
    cfg: Arc<Config>,
    commands: Arc<Commands>,
    metrics: Arc<BotMetrics>,
    refused: Arc<Mutex<BTreeSet<i64>>>,
    state_file: PathBuf,
    offset: Arc<Mutex<i64>>,
    last_poll_ok: Arc<Mutex<Option<Instant>>>,
    webhook_secret: Option<Secret>,
    /// Polling: each allowed chat's commands, in order, with the second the bot received them (a command that
    /// waits — a confirmed emergency stop — holds up only its own chat, never the poll loop).
    chat_queues: Arc<Mutex<std::collections::HashMap<i64, ChatQueue>>>,
}

type ChatQueue = tokio::sync::mpsc::UnboundedSender<(Update, i64)>;

/// Where alerts come from.
pub enum Signals {
    /// The in-process bus.
    Bus(Bus),
    /// None (commands only).
    None,
}

impl TelegramBot {
    /// Builds the bot: the token from the environment (a [`Secret`]), the Bot API URL, the saved state.
    pub fn new(cfg: Config, backend: Backend) -> Result<TelegramBot> {
        let token = std::env::var(&cfg.token_env).ok().filter(|t| !t.trim().is_empty()).with_context(|| {
            format!("{}: telegram.token_env: environment variable {} is not set", cfg.file, cfg.token_env)
        })?;
        let token = Secret::new(token.trim());
        let api = url::Url::parse(&cfg.api_url).with_context(|| format!("{}: telegram.api_url", cfg.file))?;
        let bot = Bot::new(token.expose()).set_api_url(api);
        let webhook_secret = match &cfg.delivery {
            Delivery::Webhook { secret_env, .. } => Some(Secret::new(
                std::env::var(secret_env)
                    .ok()
                    .filter(|s| s.len() >= 16 && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'))
                    .with_context(|| {
                        format!("{}: telegram.webhook_secret_env: {secret_env} must hold 16-256 characters of A-Z a-z 0-9 _ -", cfg.file)
                    })?,
            )),
            Delivery::Polling { .. } => None,
        };
        let keeper_token = match &cfg.keeper_token_env {
            None => None,
            Some(var) => Some(Secret::new(
                std::env::var(var).ok().map(|t| t.trim().to_string()).filter(|t| !t.is_empty()).with_context(|| {
                    format!("{}: telegram.keeper_token_env: environment variable {var} is not set", cfg.file)
                })?,
            )),
        };
        let mut backend = backend.with_keeper_token(keeper_token);
        if let Some(var) = &cfg.copytrade_token_env {
            let t =
                std::env::var(var).ok().map(|t| t.trim().to_string()).filter(|t| !t.is_empty()).with_context(|| {
                    format!("{}: telegram.copytrade_token_env: environment variable {var} is not set", cfg.file)
                })?;
            backend = backend.with_copytrade_token(Some(Secret::new(t)));
        }
        let saved = load_saved(&cfg.state_file);
        let mut modes = cfg.alerts.clone();
        modes.extend(saved.alerts.clone());
        let mut commands = Commands::new(backend, Arc::new(Mutex::new(modes)));
        commands.emergency_wait = cfg.emergency_wait;
        Ok(TelegramBot {
            bot,
            state_file: cfg.state_file.clone(),
            cfg: Arc::new(cfg),
            commands: Arc::new(commands),
            metrics: Arc::new(BotMetrics::default()),
            refused: Arc::new(Mutex::new(BTreeSet::new())),
            offset: Arc::new(Mutex::new(saved.offset)),
            last_poll_ok: Arc::new(Mutex::new(None)),
            webhook_secret,
            chat_queues: Arc::new(Mutex::new(std::collections::HashMap::new())),
        })
    }

    /// Builds the bot from its configuration alone: the copy-trader's store opened when `copytrade_store` is set,
    /// the keeper's and the copy-trader's APIs as configured (what `kronos telegram run|check` runs).
    pub async fn from_config(cfg: Config) -> Result<TelegramBot> {
        let store = match &cfg.copytrade_store {
            Some(url) => Some(kronos_copytrade::Store::connect(url).await?),
            None => None,
        };
        let backend = Backend::new(cfg.keeper_api.clone(), cfg.copytrade_api.clone(), store);
        TelegramBot::new(cfg, backend)
    }

    fn persist(&self) {
        let s = Saved { offset: *self.offset.lock(), alerts: self.commands.alerts.lock().clone() };
        save(&self.state_file, &s);
    }

    /// Sends a message, waiting out Telegram's flood control (429 `retry_after`) up to three times.
    pub async fn send(&self, chat: i64, html: &str, silent: bool) -> bool {
        self.send_reply(chat, html, silent, None).await
    }

    /// Sends a message as the answer to the message `reply_to` (so that, in a busy group or an alert chat, the
    /// answer stays attached to the command that asked for it).
    async fn send_reply(&self, chat: i64, html: &str, silent: bool, reply_to: Option<MessageId>) -> bool {
        self.send_with(chat, html, silent, reply_to, true).await
    }

    /// [`Self::send_reply`], with or without Telegram's link preview (an alert quoting strangers' links goes without).
    async fn send_with(&self, chat: i64, html: &str, silent: bool, reply_to: Option<MessageId>, preview: bool) -> bool {
        for _ in 0..3 {
            let mut req =
                self.bot.send_message(ChatId(chat), html).parse_mode(ParseMode::Html).disable_notification(silent);
            if !preview {
                req = req.link_preview_options(LinkPreviewOptions {
                    is_disabled: true,
                    url: None,
                    prefer_small_media: false,
                    prefer_large_media: false,
                    show_above_text: false,
                });
            }
            if let Some(id) = reply_to {
                req = req.reply_parameters(ReplyParameters::new(id).allow_sending_without_reply());
            }
            match req.await {
                Ok(_) => return true,
                Err(RequestError::RetryAfter(s)) => {
                    tracing::warn!(chat, seconds = s.seconds(), "telegram: flood control; waiting");
                    tokio::time::sleep(s.duration()).await;
                }
                Err(e) => {
                    self.metrics.send_errors.inc();
                    tracing::warn!(chat, error = %e, "telegram: message not sent");
                    return false;
                }
            }
        }
        self.metrics.send_errors.inc();
        false
    }

    /// Handles one update (from polling or the webhook) received now.
    pub async fn handle_update(&self, update: Update) {
        self.handle_update_at(update, kronos_common::time::now_s() as i64).await
    }

    /// Polling: hands an update received at `received_s` to its chat's queue (commands of one chat run in order;
    /// a command that waits holds up neither the poll loop nor other chats). Updates from outside the allow-list,
    /// and anything but a message, are handled at once.
    fn dispatch(&self, update: Update, received_s: i64) {
        let (chat, user) = match &update.kind {
            UpdateKind::Message(msg) => (msg.chat.id.0, msg.from.as_ref().map(|u| u.id.0 as i64)),
            _ => {
                self.metrics.updates.inc();
                return;
            }
        };
        if self.cfg.rights(chat, user) == Rights::None {
            let b = self.clone();
            tokio::spawn(async move { b.handle_update_at(update, received_s).await });
            return;
        }
        let tx = self
            .chat_queues
            .lock()
            .entry(chat)
            .or_insert_with(|| {
                let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(Update, i64)>();
                let b = self.clone();
                tokio::spawn(async move {
                    while let Some((u, at)) = rx.recv().await {
                        b.handle_update_at(u, at).await;
                    }
                });
                tx
            })
            .clone();
        let _ = tx.send((update, received_s));
    }

    /// Handles one update the bot received at `received_s` (Unix seconds): its age, for
    /// `telegram.max_command_age`, is counted up to then — not up to when a command ahead of it finished.
    async fn handle_update_at(&self, update: Update, received_s: i64) {
        self.metrics.updates.inc();
        let UpdateKind::Message(msg) = update.kind else { return };
        let Some(text) = msg.text() else { return };
        let chat = msg.chat.id.0;
        let user = msg.from.as_ref().map(|u| u.id.0 as i64);
        let rights = self.cfg.rights(chat, user);
        let control = rights == Rights::Control;
        if rights == Rights::None {
            self.metrics.refused.inc();
            tracing::warn!(chat, user = ?user, text = %text.chars().take(40).collect::<String>(), "telegram: message from outside the allow-list refused");
            // One polite refusal per chat, then silence.
            if self.refused.lock().insert(chat) {
                self.send_reply(chat, "Sorry, this is a private bot.", false, Some(msg.id)).await;
            }
            return;
        }
        let Some((name, args)) = parse(text) else {
            self.send_reply(chat, "Commands start with /. /help lists them.", false, Some(msg.id)).await;
            return;
        };
        if let Some(age) = too_old(msg.date.timestamp(), received_s, self.cfg.max_command_age) {
            self.metrics.stale.inc();
            tracing::warn!(chat, user = ?user, command = %name, age_s = age, "telegram: command older than telegram.max_command_age not carried out");
            let reply = format!(
                "⌛ /{} was sent {} ago, while the bot was not running: not carried out. Send it again if you still \
                 want it.",
                crate::format::esc(&name),
                humantime::format_duration(Duration::from_secs(age))
            );
            self.send_reply(chat, &reply, false, Some(msg.id)).await;
            return;
        }
        if let Some(s) = spec(&name) {
            if s.control && !control {
                tracing::warn!(chat, user = ?user, command = %name, "telegram: control command from a read-only member refused");
            }
        }
        self.metrics.commands.get_or_create(&NameLabel { name: name.clone() }).inc();
        tracing::info!(chat, user = ?user, command = %name, "telegram command");
        let reply = self.commands.run(chat, user, &name, &args, control).await;
        self.send_reply(chat, &reply, false, Some(msg.id)).await;
        if name == "alerts" && !args.is_empty() {
            self.persist();
        }
    }

    /// Registers the command list with Telegram (shown in the client's menu).
    async fn publish_commands(&self) {
        let cmds: Vec<BotCommand> = COMMANDS.iter().map(|s| BotCommand::new(s.name, s.help)).collect();
        if let Err(e) = self.bot.set_my_commands(cmds).await {
            tracing::warn!(error = %e, "telegram: the command list could not be published");
        }
    }

    /// Checks the token against the Bot API (`getMe`).
    pub async fn check(&self) -> Result<String> {
        let me = self
            .bot
            .get_me()
            .await
            .map_err(|e| anyhow::anyhow!("{}", check_error(&e, &self.cfg.api_url, &self.cfg.token_env)))?;
        Ok(me.username().to_string())
    }

    /// Long polling until `shutdown`; then each chat's queue ends once the commands in it have run.
    async fn poll(&self, timeout_s: u32, shutdown: tokio::sync::watch::Receiver<bool>) {
        self.poll_updates(timeout_s, shutdown).await;
        self.chat_queues.lock().clear();
    }

    async fn poll_updates(&self, timeout_s: u32, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        if let Err(e) = self.bot.delete_webhook().await {
            tracing::warn!(error = %e, "telegram: deleteWebhook failed (polling continues)");
        }
        let mut backoff = Duration::from_millis(500);
        let mut last_conflict_log: Option<Instant> = None;
        let mut pause = Duration::ZERO;
        loop {
            if !pause.is_zero() {
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = shutdown.changed() => return,
                }
            }
            let asked = Instant::now();
            let offset = *self.offset.lock();
            let req = self
                .bot
                .get_updates()
                .offset(offset as i32)
                .timeout(timeout_s)
                .allowed_updates(vec![AllowedUpdate::Message]);
            let res = tokio::select! {
                r = req.send() => r,
                _ = shutdown.changed() => return,
            };
            match res {
                Ok(updates) => {
                    backoff = Duration::from_millis(500);
                    *self.last_poll_ok.lock() = Some(Instant::now());
                    pause = poll_pause(updates.is_empty(), asked.elapsed(), timeout_s, pause);
                    if updates.is_empty() {
                        continue;
                    }
                    let received = kronos_common::time::now_s() as i64;
                    for u in updates {
                        let next = u.id.0 as i64 + 1;
                        self.dispatch(u, received);
                        let mut o = self.offset.lock();
                        *o = (*o).max(next);
                    }
                    self.persist();
                }
                Err(RequestError::Api(ApiError::TerminatedByOtherGetUpdates)) => {
                    self.metrics.poll_conflicts.inc();
                    if last_conflict_log.is_none_or(|t| t.elapsed() > Duration::from_secs(60)) {
                        tracing::error!(
                            "telegram: another process is polling this bot token (409 Conflict). Stop the other instance, \
                             or give each instance its own token; polling again in {} s",
                            backoff.as_secs().max(1)
                        );
                        last_conflict_log = Some(Instant::now());
                    }
                    backoff = (backoff * 2).clamp(Duration::from_secs(1), Duration::from_secs(60));
                    tokio::time::sleep(backoff).await;
                }
                Err(RequestError::RetryAfter(s)) => tokio::time::sleep(s.duration()).await,
                Err(e) => {
                    tracing::warn!(error = %kronos_common::Redactor::global().redact(&e.to_string()), "telegram: getUpdates failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            }
        }
    }

    /// Delivers alerts from `rx` (signals) and `social` (the social monitor's items) until both close, through
    /// one rate limiter: a flood of either, or of both, becomes one summary per chat.
    async fn alerts(&self, mut rx: mpsc::Receiver<Signal>, mut social: mpsc::Receiver<SocialItem>) {
        let mut limiter = Limiter::new(self.cfg.alert_burst, self.cfg.alert_window);
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        let (mut signals_open, mut social_open) = (true, true);
        loop {
            if !signals_open && !social_open {
                return;
            }
            tokio::select! {
                sig = rx.recv(), if signals_open => {
                    let Some(sig) = sig else { signals_open = false; continue };
                    self.deliver(&mut limiter, sig.kind.category(), &describe(&sig), true).await;
                }
                item = social.recv(), if social_open => {
                    let Some(item) = item else { social_open = false; continue };
                    self.deliver(&mut limiter, "social", &crate::social::describe(&item), false).await;
                }
                _ = tick.tick() => {
                    for (chat, text) in limiter.due_summaries(Instant::now()) {
                        self.send(chat, &text, true).await;
                    }
                }
            }
        }
    }

    /// One alert of `category` to every alert chat, as its mode and the rate limit decide.
    async fn deliver(&self, limiter: &mut Limiter, category: &str, text: &str, preview: bool) {
        let mode = self.commands.alerts.lock().get(category).copied().unwrap_or(AlertMode::Off);
        let social = category == "social";
        for chat in self.cfg.alert_chats.clone() {
            match limiter.decide(chat, category, mode, Instant::now()) {
                Decision::Send { silent } => {
                    if self.send_with(chat, text, silent, None, preview).await {
                        self.metrics.alerts_sent.get_or_create(&NameLabel { name: category.into() }).inc();
                        if social {
                            self.metrics.social_alerts_sent.inc();
                        }
                    }
                }
                Decision::Suppress => {
                    self.metrics.alerts_suppressed.inc();
                    if social {
                        self.metrics.social_alerts_suppressed.inc();
                    }
                }
                Decision::Drop => {}
            }
        }
    }

    /// The HTTP service: `/health`, `/metrics`, and the webhook path in webhook mode, under [`http_limits`].
    pub fn router(&self) -> Router {
        self.router_with(&self.http_guard())
    }

    fn http_guard(&self) -> Guard {
        Guard::new(http_limits(), self.metrics.guard.clone())
    }

    fn router_with(&self, guard: &Guard) -> Router {
        let mut r = Router::new().route("/health", get(health)).route("/metrics", get(metrics));
        if let Delivery::Webhook { path, .. } = &self.cfg.delivery {
            r = r.route(path, post(webhook));
        }
        guard.layer(r.with_state(self.clone()))
    }

    /// Runs until `shutdown` resolves: checks the token, publishes the commands, serves HTTP on
    /// `telegram.listen`, takes updates and sends alerts from `signals`, the configured streams and the social
    /// monitor (`telegram.social`).
    pub async fn run(self, signals: Signals, shutdown: impl std::future::Future<Output = ()>) -> Result<SocketAddr> {
        let name = self.check().await?;
        tracing::info!(bot = %name, "telegram bot connected");
        self.publish_commands().await;
        let listener = tokio::net::TcpListener::bind(&self.cfg.listen)
            .await
            .with_context(|| format!("binding {}", self.cfg.listen))?;
        let addr = listener.local_addr()?;
        let guard = self.http_guard();
        let app = self.router_with(&guard);
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let mut stop_http = stop_rx.clone();
        let server = tokio::spawn(async move {
            let stopped = async move {
                let _ = stop_http.changed().await;
            };
            if let Err(e) = guard.serve(listener, app, stopped).await {
                tracing::error!(error = %e, "telegram: the HTTP service stopped");
            }
        });
        // Alerts.
        let (tx, rx) = mpsc::channel::<Signal>(1024);
        let mut feeders = Vec::new();
        if let Signals::Bus(bus) = signals {
            let tx = tx.clone();
            feeders.push(tokio::spawn(async move {
                let mut sub = bus.subscribe();
                loop {
                    match sub.recv().await {
                        Ok(s) => {
                            if tx.send((*s).clone()).await.is_err() {
                                return;
                            }
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                            tracing::warn!(lost = n, "telegram: alerts fell behind the bus")
                        }
                        Err(_) => return,
                    }
                }
            }));
        }
        for url in self.cfg.signals.clone() {
            // The keeper's token goes to the keeper's own stream only.
            let token = self
                .commands
                .backend
                .keeper_api
                .as_deref()
                .filter(|k| same_origin(k, &url))
                .and(self.commands.backend.keeper_token.clone());
            feeders.push(tokio::spawn(kronos_common::signal_ws::follow(url, token, tx.clone())));
        }
        drop(tx);
        let (social_tx, social_rx) = mpsc::channel::<SocialItem>(1024);
        if let Some(social) = self.cfg.social.clone() {
            feeders.push(tokio::spawn(crate::social::follow(social, social_tx)));
        }
        let alerts = {
            let me = self.clone();
            tokio::spawn(async move { me.alerts(rx, social_rx).await })
        };
        // Updates.
        let updates = match self.cfg.delivery.clone() {
            Delivery::Polling { timeout_s } => {
                let me = self.clone();
                let rx = stop_rx.clone();
                Some(tokio::spawn(async move { me.poll(timeout_s, rx).await }))
            }
            Delivery::Webhook { public_url, .. } => {
                let secret = self.webhook_secret.as_ref().map(|s| s.expose().to_string()).unwrap_or_default();
                let url = url::Url::parse(&public_url).context("telegram.webhook_url")?;
                self.bot
                    .set_webhook(url)
                    .secret_token(secret)
                    .allowed_updates(vec![AllowedUpdate::Message])
                    .await
                    .map_err(|e| anyhow::anyhow!("setWebhook to {public_url}: {e}"))?;
                tracing::info!(%public_url, "telegram webhook set");
                None
            }
        };
        shutdown.await;
        let _ = stop_tx.send(true);
        if let Some(u) = updates {
            let _ = u.await;
        }
        for f in feeders {
            f.abort();
        }
        alerts.abort();
        let _ = server.await;
        self.persist();
        Ok(addr)
    }
}

async fn health(State(b): State<TelegramBot>) -> Response {
    let polling = matches!(b.cfg.delivery, Delivery::Polling { .. });
    let fresh = b.last_poll_ok.lock().is_some_and(|t| t.elapsed() < Duration::from_secs(120));
    let ok = !polling || fresh;
    let body = serde_json::json!({ "status": if ok { "ok" } else { "degraded" }, "mode": if polling { "polling" } else { "webhook" }, "last_poll_ok": fresh });
    (if ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE }, Json(body)).into_response()
}

async fn metrics(State(b): State<TelegramBot>) -> Response {
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], b.metrics.encode())
        .into_response()
}

async fn webhook(State(b): State<TelegramBot>, headers: HeaderMap, body: String) -> Response {
    let given = headers.get("x-telegram-bot-api-secret-token").and_then(|v| v.to_str().ok()).unwrap_or("");
    if !b.webhook_secret.as_ref().is_some_and(|s| s.matches(given)) {
        tracing::warn!("telegram webhook: request without the right secret token refused");
        return StatusCode::UNAUTHORIZED.into_response();
    }
    match serde_json::from_str::<Update>(&body) {
        Ok(u) => {
            // Answer Telegram at once; the command runs on its own.
            tokio::spawn(async move { b.handle_update(u).await });
            StatusCode::OK.into_response()
        }
        Err(e) => {
            tracing::warn!(error = %e, "telegram webhook: body is not an Update");
            StatusCode::BAD_REQUEST.into_response()
        }
    }
}

/// How old a command sent at `sent_s` (Unix seconds) is at `now_s` when that is more than `max`; `None` when it is
/// fresh enough to carry out.
pub(crate) fn too_old(sent_s: i64, now_s: i64, max: Duration) -> Option<u64> {
    let age = now_s.saturating_sub(sent_s).max(0) as u64;
    (age > max.as_secs()).then_some(age)
}

/// The pause before the next `getUpdates`: none after an answer that brought updates or that waited out its long
/// poll; after an empty answer that came back early (a Bot API that does not hold long polls, or `timeout_s` = 0),
/// 250 ms doubling up to 5 s, so the bot never spins on it.
pub(crate) fn poll_pause(empty: bool, took: Duration, timeout_s: u32, last: Duration) -> Duration {
    let held = Duration::from_millis(u64::from(timeout_s) * 500).max(Duration::from_secs(1));
    if !empty || took >= held {
        return Duration::ZERO;
    }
    (last * 2).clamp(Duration::from_millis(250), Duration::from_secs(5))
}

/// What a failed `getMe` means: a refused token, an unreachable server, or something else that answered.
pub(crate) fn check_error(e: &RequestError, api_url: &str, token_env: &str) -> String {
    let detail = kronos_common::Redactor::global().redact(&e.to_string());
    match e {
        RequestError::Api(ApiError::InvalidToken) => {
            format!("the Bot API at {api_url} did not accept the token in {token_env} ({detail})")
        }
        RequestError::Network(_) | RequestError::Io(_) => format!(
            "the Bot API at {api_url} could not be reached (the token was not checked): {detail}; check \
             telegram.api_url and the network"
        ),
        RequestError::InvalidJson { .. } => {
            format!("{api_url} did not answer like a Telegram Bot API (check telegram.api_url): {detail}")
        }
        _ => format!("the Bot API at {api_url} answered getMe with an error: {detail}"),
    }
}

/// Whether two URLs name the same host and port (`http://h:p` and `ws://h:p/ws`).
fn same_origin(a: &str, b: &str) -> bool {
    match (url::Url::parse(a), url::Url::parse(b)) {
        (Ok(a), Ok(b)) => a.host_str() == b.host_str() && a.port_or_known_default() == b.port_or_known_default(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 14, item 11: commands queued while the bot was down are dropped past the configured age.
    #[test]
    fn commands_older_than_the_limit_are_stale() {
        let max = Duration::from_secs(120);
        assert_eq!(too_old(1000, 1000, max), None);
        assert_eq!(too_old(1000, 1120, max), None);
        assert_eq!(too_old(1000, 1121, max), Some(121));
        assert_eq!(too_old(1000, 990, max), None, "a clock a little behind Telegram's");
    }

    /// Issue 14, item 11: an empty getUpdates answer that came back at once is followed by a growing pause.
    #[test]
    fn polling_backs_off_when_the_bot_api_answers_at_once() {
        let ms = Duration::from_millis;
        assert_eq!(poll_pause(true, ms(3), 30, Duration::ZERO), ms(250));
        assert_eq!(poll_pause(true, ms(3), 30, ms(250)), ms(500));
        assert_eq!(poll_pause(true, ms(3), 30, ms(4000)), ms(5000));
        assert_eq!(poll_pause(true, ms(3), 0, ms(5000)), ms(5000), "short polling is paced too");
        assert_eq!(poll_pause(false, ms(3), 30, ms(4000)), Duration::ZERO, "updates: poll again at once");
        assert_eq!(poll_pause(true, ms(15_100), 30, ms(4000)), Duration::ZERO, "a long poll that waited");
        assert_eq!(poll_pause(true, ms(1_050), 1, ms(250)), Duration::ZERO);
    }

    #[test]
    fn the_keeper_token_goes_to_the_keepers_own_address_only() {
        assert!(same_origin("http://127.0.0.1:9100", "ws://127.0.0.1:9100/ws"));
        assert!(same_origin("https://keeper.example", "wss://keeper.example/ws?types=forecast"));
        assert!(!same_origin("http://127.0.0.1:9100", "ws://127.0.0.1:9200/ws"), "the copy-trader's stream");
        assert!(!same_origin("http://keeper.example", "ws://other.example/ws"));
        assert!(!same_origin("not a url", "ws://127.0.0.1:9100/ws"));
    }
}
