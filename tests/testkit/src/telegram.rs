//! A local server that speaks the Telegram Bot API on the wire (`POST /bot<token>/<method>`, JSON in, `{"ok":…}`
//! out): getMe, getUpdates (long polling with offsets), sendMessage, setMyCommands, deleteWebhook, setWebhook.
//! Tests push user messages in and read the bot's replies out; 409 conflicts and 429 flood control can be injected.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use parking_lot::Mutex;
use serde_json::{json, Value};
use tokio::sync::Notify;

pub const TOKEN: &str = "123456:TEST-token_for-the-local-bot-api";

/// A message the bot sent.
#[derive(Debug, Clone, PartialEq)]
pub struct Sent {
    pub chat_id: i64,
    pub text: String,
    pub silent: bool,
    pub parse_mode: Option<String>,
    /// The message this one answers (`reply_parameters.message_id`).
    pub reply_to: Option<i64>,
    /// Sent with `link_preview_options.is_disabled = true`.
    pub link_preview_disabled: bool,
}

#[derive(Default)]
struct Inner {
    updates: Vec<Value>,
    next_update: i64,
    next_message: i64,
    sent: Vec<Sent>,
    offsets: Vec<i64>,
    conflicts: u32,
    floods: u32,
    webhook: Option<(String, String)>,
    commands: Vec<String>,
    calls: Vec<String>,
    /// getUpdates answers at once instead of holding the long poll (as some Bot API stand-ins do).
    no_long_poll: bool,
}

#[derive(Clone)]
pub struct MockTelegram {
    inner: Arc<Mutex<Inner>>,
    notify: Arc<Notify>,
    pub addr: SocketAddr,
}

fn ok(v: Value) -> Response {
    Json(json!({"ok": true, "result": v})).into_response()
}

fn chat_json(chat: i64) -> Value {
    if chat < 0 {
        json!({"id": chat, "type": "supergroup", "title": "Kronos desk"})
    } else {
        json!({"id": chat, "type": "private", "first_name": "Ada"})
    }
}

impl MockTelegram {
    pub async fn start() -> MockTelegram {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let m = MockTelegram {
            inner: Arc::new(Mutex::new(Inner { next_update: 1000, next_message: 1, ..Default::default() })),
            notify: Arc::new(Notify::new()),
            addr,
        };
        let app = Router::new().route("/{bot}/{method}", post(handle)).with_state(m.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        m
    }

    /// The Bot API base URL to configure.
    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    /// A user writes `text` in `chat` now; returns its message id.
    pub fn say(&self, chat: i64, user: i64, text: &str) -> i64 {
        self.say_at(chat, user, text, kronos_common::time::now_s())
    }

    /// A user wrote `text` in `chat` at `date` (Unix seconds; an earlier one is a message queued while the bot was
    /// away); returns its message id.
    pub fn say_at(&self, chat: i64, user: i64, text: &str, date: u64) -> i64 {
        let mut g = self.inner.lock();
        g.next_update += 1;
        let id = g.next_update;
        g.next_message += 1;
        let mid = g.next_message;
        g.updates.push(json!({"update_id": id, "message": {"message_id": mid, "date": date,
            "chat": chat_json(chat), "from": {"id": user, "is_bot": false, "first_name": "Ada"}, "text": text}}));
        drop(g);
        self.notify.notify_waiters();
        mid
    }

    /// Waits for the bot's answer to message `mid` in `chat`.
    pub async fn wait_reply(&self, chat: i64, mid: i64) -> Sent {
        let t = std::time::Instant::now();
        loop {
            if let Some(s) = self.sent_to(chat).into_iter().find(|s| s.reply_to == Some(mid)) {
                return s;
            }
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "chat {chat}: no answer to message {mid}: {:#?}",
                self.sent_to(chat)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A post in channel `chat` (a `channel_post` update: no `from`, the chat is the channel); returns its message id.
    pub fn channel_post(&self, chat: i64, text: &str) -> i64 {
        let mut g = self.inner.lock();
        g.next_update += 1;
        let id = g.next_update;
        g.next_message += 1;
        let mid = g.next_message;
        g.updates.push(
            json!({"update_id": id, "channel_post": {"message_id": mid, "date": kronos_common::time::now_s(),
            "chat": {"id": chat, "type": "channel", "title": "Kronos news", "username": "kronos_news"},
            "sender_chat": {"id": chat, "type": "channel", "title": "Kronos news", "username": "kronos_news"},
            "author_signature": "Ada", "text": text}}),
        );
        drop(g);
        self.notify.notify_waiters();
        mid
    }

    /// Queues an update whose payload (beside `update_id`) is `kind` = `value` as given, e.g. a malformed message;
    /// returns its update id.
    pub fn raw_update(&self, kind: &str, value: Value) -> i64 {
        let mut g = self.inner.lock();
        g.next_update += 1;
        let id = g.next_update;
        g.updates.push(json!({"update_id": id, kind: value}));
        drop(g);
        self.notify.notify_waiters();
        id
    }

    /// An update in Telegram's JSON, for webhook posts.
    pub fn update_json(&self, chat: i64, user: i64, text: &str) -> Value {
        let mut g = self.inner.lock();
        g.next_update += 1;
        g.next_message += 1;
        json!({"update_id": g.next_update, "message": {"message_id": g.next_message, "date": kronos_common::time::now_s(),
            "chat": chat_json(chat), "from": {"id": user, "is_bot": false, "first_name": "Ada"}, "text": text}})
    }

    pub fn sent(&self) -> Vec<Sent> {
        self.inner.lock().sent.clone()
    }

    pub fn sent_to(&self, chat: i64) -> Vec<Sent> {
        self.sent().into_iter().filter(|s| s.chat_id == chat).collect()
    }

    /// Waits until `chat` has received `n` messages; returns them.
    pub async fn wait_sent(&self, chat: i64, n: usize) -> Vec<Sent> {
        let t = std::time::Instant::now();
        loop {
            let s = self.sent_to(chat);
            if s.len() >= n {
                return s;
            }
            assert!(t.elapsed() < Duration::from_secs(15), "chat {chat} got {} of {n} messages: {s:#?}", s.len());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The next `n` getUpdates calls answer 409 Conflict.
    pub fn conflict(&self, n: u32) {
        self.inner.lock().conflicts = n;
    }

    /// The next `n` sendMessage calls answer 429 with retry_after 1.
    pub fn flood(&self, n: u32) {
        self.inner.lock().floods = n;
    }

    /// getUpdates answers at once from now on (`true`), or holds the long poll as Telegram does (`false`).
    pub fn answer_polls_at_once(&self, on: bool) {
        self.inner.lock().no_long_poll = on;
        self.notify.notify_waiters();
    }

    pub fn offsets(&self) -> Vec<i64> {
        self.inner.lock().offsets.clone()
    }

    pub fn webhook(&self) -> Option<(String, String)> {
        self.inner.lock().webhook.clone()
    }

    pub fn commands(&self) -> Vec<String> {
        self.inner.lock().commands.clone()
    }

    pub fn calls(&self) -> Vec<String> {
        self.inner.lock().calls.clone()
    }
}

/// The fields of a `multipart/form-data` body (teloxide sends requests that may carry files that way).
fn multipart_fields(content_type: &str, body: &str) -> Value {
    let Some(boundary) = content_type.split("boundary=").nth(1) else { return json!({}) };
    let boundary = boundary.trim_matches('"');
    let mut out = serde_json::Map::new();
    for part in body.split(&format!("--{boundary}")) {
        let Some((head, value)) = part.split_once("\r\n\r\n") else { continue };
        let Some(name) = head.split("name=\"").nth(1).and_then(|r| r.split('"').next()) else { continue };
        let value = value.trim_end_matches("\r\n").to_string();
        out.insert(name.to_string(), serde_json::from_str(&value).unwrap_or(Value::String(value)));
    }
    Value::Object(out)
}

async fn handle(
    State(m): State<MockTelegram>,
    Path((bot, method)): Path<(String, String)>,
    headers: axum::http::HeaderMap,
    body: String,
) -> Response {
    if bot != format!("bot{TOKEN}") {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"ok": false, "error_code": 401, "description": "Unauthorized"})),
        )
            .into_response();
    }
    let ct = headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("");
    let p: Value = if ct.starts_with("multipart/form-data") {
        multipart_fields(ct, &body)
    } else {
        serde_json::from_str(&body).unwrap_or(json!({}))
    };
    // Bot API method names are case-insensitive.
    let method = method.to_ascii_lowercase();
    m.inner.lock().calls.push(method.clone());
    match method.as_str() {
        "getme" => ok(json!({"id": 42, "is_bot": true, "first_name": "Kronos", "username": "kronos_test_bot",
            "can_join_groups": true, "can_read_all_group_messages": false, "supports_inline_queries": false,
            "can_connect_to_business": false, "has_main_web_app": false})),
        "setmycommands" => {
            let names = p["commands"]
                .as_array()
                .map(|a| a.iter().filter_map(|c| c["command"].as_str().map(String::from)).collect())
                .unwrap_or_default();
            m.inner.lock().commands = names;
            ok(json!(true))
        }
        "deletewebhook" => {
            m.inner.lock().webhook = None;
            ok(json!(true))
        }
        "setwebhook" => {
            m.inner.lock().webhook =
                Some((p["url"].as_str().unwrap_or("").into(), p["secret_token"].as_str().unwrap_or("").into()));
            ok(json!(true))
        }
        "getupdates" => {
            let offset = p["offset"].as_i64().unwrap_or(0);
            let mut timeout = p["timeout"].as_u64().unwrap_or(0).min(2);
            {
                let mut g = m.inner.lock();
                if g.no_long_poll {
                    timeout = 0;
                }
                g.offsets.push(offset);
                if g.conflicts > 0 {
                    g.conflicts -= 1;
                    return (StatusCode::CONFLICT, Json(json!({"ok": false, "error_code": 409,
                        "description": "Conflict: terminated by other getUpdates request; make sure that only one bot instance is running"}))).into_response();
                }
                // Updates below the offset are confirmed and forgotten.
                g.updates.retain(|u| u["update_id"].as_i64().unwrap_or(0) >= offset);
            }
            let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout);
            loop {
                let pending: Vec<Value> = m.inner.lock().updates.clone();
                if !pending.is_empty() || tokio::time::Instant::now() >= deadline {
                    return ok(Value::Array(pending));
                }
                let _ = tokio::time::timeout_at(deadline, m.notify.notified()).await;
            }
        }
        "sendmessage" => {
            let mut g = m.inner.lock();
            if g.floods > 0 {
                g.floods -= 1;
                return (
                    StatusCode::TOO_MANY_REQUESTS,
                    Json(json!({"ok": false, "error_code": 429,
                    "description": "Too Many Requests: retry after 1", "parameters": {"retry_after": 1}})),
                )
                    .into_response();
            }
            let chat = p["chat_id"].as_i64().unwrap_or(0);
            let text = p["text"].as_str().unwrap_or("").to_string();
            g.sent.push(Sent {
                chat_id: chat,
                text: text.clone(),
                silent: p["disable_notification"].as_bool().unwrap_or(false),
                parse_mode: p["parse_mode"].as_str().map(String::from),
                reply_to: reply_to(&p),
                link_preview_disabled: p["link_preview_options"]["is_disabled"].as_bool().unwrap_or(false),
            });
            g.next_message += 1;
            ok(json!({"message_id": g.next_message, "date": kronos_common::time::now_s(), "chat": chat_json(chat),
                "from": {"id": 42, "is_bot": true, "first_name": "Kronos", "username": "kronos_test_bot"}, "text": text}))
        }
        other => (
            StatusCode::NOT_FOUND,
            Json(
                json!({"ok": false, "error_code": 404, "description": format!("Not Found: method {other} not found")}),
            ),
        )
            .into_response(),
    }
}

/// `reply_parameters.message_id` of a sendMessage call (an object in JSON bodies, a JSON string in form bodies).
fn reply_to(p: &Value) -> Option<i64> {
    let rp = &p["reply_parameters"];
    match rp {
        Value::String(s) => serde_json::from_str::<Value>(s).ok()?["message_id"].as_i64(),
        v => v["message_id"].as_i64(),
    }
}
