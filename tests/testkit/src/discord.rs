//! A local stand-in for Discord's gateway (API v10) and the two REST calls a gateway bot makes, speaking the
//! documented wire format (<https://discord.com/developers/docs/topics/gateway>, `…/topics/opcodes-and-status-codes`):
//!
//! - WebSocket at `/` (`?v=10&encoding=json`, no compression): HELLO (op 10, `heartbeat_interval`) on connect;
//!   HEARTBEAT (op 1, `d` = last sequence) answered by HEARTBEAT_ACK (op 11); IDENTIFY (op 2: token, intents) →
//!   READY (op 0, `session_id`, `resume_gateway_url`, sequence 1); RESUME (op 6: token, session_id, seq) → the
//!   events after `seq` replayed, then RESUMED, or INVALID_SESSION (op 9, `d: false`) for an unknown or expired
//!   session; DISPATCH (op 0) `MESSAGE_CREATE` to every session whose intents include GUILD_MESSAGES (`content`
//!   empty without MESSAGE_CONTENT, as Discord does); events dispatched while a session is disconnected are kept
//!   for its resume; `MESSAGE_UPDATE` (the whole message, `edited_timestamp` set), `MESSAGE_DELETE` (`id`,
//!   `channel_id`, `guild_id`) and `MESSAGE_DELETE_BULK` (`ids`, `channel_id`, `guild_id`) the same way.
//!   **Sharding**: IDENTIFY's `shard: [shard_id, num_shards]` is kept with the session, and a guild's events go to
//!   the shard `(guild_id >> 22) % num_shards` only (Discord's formula); every identify is recorded with its shard
//!   and time (tests check the `max_concurrency` rule: one identify per bucket per 5 s). Close codes: 4001 unknown opcode, 4002 decode error, 4003 not authenticated, 4004
//!   authentication failed, 4005 already authenticated, 4013 invalid intents; tests can send RECONNECT (op 7),
//!   INVALID_SESSION, any close code, or drop the TCP connection without a close frame.
//! - REST under `/api/v10` with `Authorization: Bot <token>`: `GET /gateway/bot` (url, the recommended `shards`,
//!   `session_start_limit` with `max_concurrency`, both settable) and `GET /channels/{id}/messages` with `after=`
//!   (the `limit` messages right after `after`), `before=` (the `limit` messages right before `before`) or neither
//!   (the latest `limit`), newest first as Discord returns them, each as it reads now (`content` and
//!   `edited_timestamp` after an edit; a deleted message gone); 401 for a bad token, 404 `Unknown Channel` (a
//!   channel nothing was ever posted in, or one deleted), and 429 with `Retry-After` / `retry_after` when a test
//!   asks for it. Edits and deletions made while no valid session is on the guild's shard (the monitor down, its
//!   session expired) reach the history only.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use parking_lot::Mutex;
use serde_json::{json, Value};
use tokio::sync::mpsc;

/// The bot token the stand-in accepts.
pub const TOKEN: &str = "MTk4NjIyNDgzNDcxOTI1MjQ4.Gtest.discord-stand-in-token";
/// The guild `post` writes in (on shard 0 of any even shard count).
pub const GUILD: u64 = 81_384_788_765_712_384;
/// A second guild, on shard 1 of two (`(GUILD_2 >> 22) % 2 == 1`).
pub const GUILD_2: u64 = GUILD + (1 << 22);
/// Discord's epoch (2015-01-01), ms since the Unix epoch.
pub const DISCORD_EPOCH_MS: u64 = 1_420_070_400_000;
/// Intent bits.
pub const GUILD_MESSAGES: u64 = 1 << 9;
pub const MESSAGE_CONTENT: u64 = 1 << 15;

/// What a test tells a live connection to do.
#[derive(Debug, Clone)]
enum Ctl {
    Send(String),
    /// A MESSAGE_CREATE (counted when written to the connection).
    SendCreate(String),
    Close(u16, String),
    Drop,
}

#[derive(Debug)]
struct Session {
    intents: u64,
    /// `[shard_id, num_shards]` from IDENTIFY.
    shard: [u64; 2],
    seq: u64,
    /// Dispatched events by sequence, and whether each is a MESSAGE_CREATE (kept for resumes).
    log: Vec<(u64, String, bool)>,
    live: Option<u64>,
    valid: bool,
}

struct Inner {
    heartbeat_interval_ms: u64,
    sessions: BTreeMap<String, Session>,
    next_session: u64,
    next_conn: u64,
    conns: BTreeMap<u64, mpsc::UnboundedSender<Ctl>>,
    /// All messages posted, oldest first (the channel history REST serves).
    messages: Vec<Value>,
    /// Channels with a history (posted in, not deleted).
    channels: std::collections::BTreeSet<String>,
    last_snowflake: u64,
    identifies: u32,
    /// Every IDENTIFY's `shard` and when it arrived.
    identified: Vec<([u64; 2], Instant)>,
    /// Resumes: (session id, sequence, the session's shard id).
    resumed_shards: Vec<u64>,
    resumes: Vec<(String, u64)>,
    shards: u64,
    max_concurrency: u64,
    /// MESSAGE_CREATE frames written to connections (live and replayed).
    creates_delivered: u64,
    heartbeats: u32,
    connections: u32,
    identifies_remaining: u32,
    rest_calls: Vec<String>,
    rest_429: u32,
    closes_sent: Vec<u16>,
}

/// The stand-in. Cheap to clone.
#[derive(Clone)]
pub struct MockDiscord {
    inner: Arc<Mutex<Inner>>,
    pub addr: SocketAddr,
}

/// ISO 8601 with milliseconds, as Discord writes timestamps.
fn iso(ms: u64) -> String {
    chrono::DateTime::from_timestamp_millis(ms as i64)
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%S%.3f+00:00")
        .to_string()
}

/// Which shard of `n` a guild's events go to (Discord: `(guild_id >> 22) % num_shards`).
pub fn shard_of(guild: u64, n: u64) -> u64 {
    (guild >> 22) % n.max(1)
}

/// Sends dispatch `t` with `d` to every valid session with GUILD_MESSAGES on the guild's shard (MESSAGE_CONTENT
/// absent: `content` emptied), logged for resumes.
fn dispatch(g: &mut Inner, t: &str, d: Value) {
    let guild = d["guild_id"].as_str().and_then(|s| s.parse::<u64>().ok());
    let create = t == "MESSAGE_CREATE";
    for s in g.sessions.values_mut().filter(|s| s.valid && s.intents & GUILD_MESSAGES != 0) {
        if guild.is_some_and(|gd| shard_of(gd, s.shard[1]) != s.shard[0]) {
            continue;
        }
        let mut d = d.clone();
        if s.intents & MESSAGE_CONTENT == 0 && d.get("content").is_some() {
            d["content"] = json!("");
        }
        s.seq += 1;
        let ev = json!({"op": 0, "t": t, "s": s.seq, "d": d}).to_string();
        s.log.push((s.seq, ev.clone(), create));
        if let Some(c) = s.live.and_then(|c| g.conns.get(&c)) {
            let _ = c.send(if create { Ctl::SendCreate(ev) } else { Ctl::Send(ev) });
        }
    }
}

/// A snowflake for `ms` (Unix ms), strictly above `last`.
fn snowflake(ms: u64, last: u64) -> u64 {
    (ms.saturating_sub(DISCORD_EPOCH_MS) << 22).max(last + 1)
}

impl MockDiscord {
    /// Starts on a free loopback port with Discord's usual 41.25 s heartbeat interval.
    pub async fn start() -> MockDiscord {
        MockDiscord::start_with_heartbeat(Duration::from_millis(41_250)).await
    }

    /// Starts with the given heartbeat interval (short ones exercise heartbeats in tests).
    pub async fn start_with_heartbeat(interval: Duration) -> MockDiscord {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let m = MockDiscord {
            inner: Arc::new(Mutex::new(Inner {
                heartbeat_interval_ms: interval.as_millis() as u64,
                sessions: BTreeMap::new(),
                next_session: 1,
                next_conn: 1,
                conns: BTreeMap::new(),
                messages: Vec::new(),
                channels: Default::default(),
                last_snowflake: 0,
                identifies: 0,
                identified: Vec::new(),
                resumed_shards: Vec::new(),
                resumes: Vec::new(),
                shards: 1,
                max_concurrency: 1,
                creates_delivered: 0,
                heartbeats: 0,
                connections: 0,
                identifies_remaining: 1000,
                rest_calls: Vec::new(),
                rest_429: 0,
                closes_sent: Vec::new(),
            })),
            addr,
        };
        let app = Router::new()
            .route("/", get(ws_upgrade))
            .route("/api/v10/gateway/bot", get(gateway_bot))
            .route("/api/v10/channels/{id}/messages", get(channel_messages))
            .with_state(m.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        m
    }

    /// The gateway URL (`ws://…`), as `GET /gateway/bot` returns it.
    pub fn gateway_url(&self) -> String {
        format!("ws://{}", self.addr)
    }

    /// The REST base (`http://…/api/v10`).
    pub fn api_url(&self) -> String {
        format!("http://{}/api/v10", self.addr)
    }

    /// `author` writes `content` in `channel` (of [`GUILD`]) now; dispatched to every session as MESSAGE_CREATE.
    /// Returns the message id (a snowflake).
    pub fn post(&self, channel: u64, author: &str, content: &str) -> u64 {
        self.post_with(channel, author, |d| d["content"] = json!(content))
    }

    /// [`Self::post`] in another guild (its events go to that guild's shard).
    pub fn post_in(&self, guild: u64, channel: u64, author: &str, content: &str) -> u64 {
        self.post_with(channel, author, |d| {
            d["content"] = json!(content);
            d["guild_id"] = json!(guild.to_string());
        })
    }

    /// Posts a message whose `d` payload `edit` may change (remove fields, add unknown ones) before dispatch.
    pub fn post_with(&self, channel: u64, author: &str, edit: impl FnOnce(&mut Value)) -> u64 {
        let now = kronos_common::time::now_ms();
        let mut g = self.inner.lock();
        let id = snowflake(now, g.last_snowflake);
        g.last_snowflake = id;
        let ts = iso((id >> 22) + DISCORD_EPOCH_MS);
        let author_id = 100_000 + author.bytes().map(u64::from).sum::<u64>();
        let mut d = json!({
            "id": id.to_string(), "channel_id": channel.to_string(), "guild_id": GUILD.to_string(),
            "author": {"id": author_id.to_string(), "username": author, "global_name": author, "discriminator": "0",
                       "avatar": null, "bot": false},
            "content": "", "timestamp": ts, "edited_timestamp": null, "tts": false, "mention_everyone": false,
            "mentions": [], "mention_roles": [], "attachments": [], "embeds": [], "pinned": false, "type": 0,
            "flags": 0, "nonce": id.to_string()
        });
        edit(&mut d);
        if let Some(c) = d["channel_id"].as_str() {
            g.channels.insert(c.to_string());
        }
        g.messages.push(d.clone());
        dispatch(&mut g, "MESSAGE_CREATE", d);
        id
    }

    /// Edits message `id` to `content` now: MESSAGE_UPDATE with the whole message and `edited_timestamp`; the
    /// history serves the new text.
    pub fn edit(&self, id: u64, content: &str) {
        let mut g = self.inner.lock();
        let at = iso(kronos_common::time::now_ms());
        let Some(d) = g.messages.iter_mut().find(|d| d["id"] == json!(id.to_string())) else {
            panic!("discord stand-in: no message {id} to edit")
        };
        d["content"] = json!(content);
        d["edited_timestamp"] = json!(at);
        let d = d.clone();
        dispatch(&mut g, "MESSAGE_UPDATE", d);
    }

    /// Deletes message `id`: MESSAGE_DELETE; gone from the history.
    pub fn delete(&self, id: u64) {
        let mut g = self.inner.lock();
        let Some(i) = g.messages.iter().position(|d| d["id"] == json!(id.to_string())) else {
            panic!("discord stand-in: no message {id} to delete")
        };
        let d = g.messages.remove(i);
        let payload = json!({"id": d["id"], "channel_id": d["channel_id"], "guild_id": d["guild_id"]});
        dispatch(&mut g, "MESSAGE_DELETE", payload);
    }

    /// Deletes `ids` of `channel` at once (a moderator's purge): MESSAGE_DELETE_BULK.
    pub fn delete_bulk(&self, channel: u64, ids: &[u64]) {
        let mut g = self.inner.lock();
        let want: Vec<Value> = ids.iter().map(|i| json!(i.to_string())).collect();
        let guild = g
            .messages
            .iter()
            .find(|d| want.contains(&d["id"]))
            .map(|d| d["guild_id"].clone())
            .unwrap_or(json!(GUILD.to_string()));
        g.messages.retain(|d| !want.contains(&d["id"]));
        let payload = json!({"ids": want, "channel_id": channel.to_string(), "guild_id": guild});
        dispatch(&mut g, "MESSAGE_DELETE_BULK", payload);
    }

    /// Dispatches an event of any name (an event a client does not know, say) in `guild`.
    pub fn dispatch_event(&self, t: &str, d: Value) {
        dispatch(&mut self.inner.lock(), t, d);
    }

    /// What `GET /gateway/bot` recommends: `shards` and `session_start_limit.max_concurrency`.
    pub fn set_sharding(&self, shards: u64, max_concurrency: u64) {
        let mut g = self.inner.lock();
        g.shards = shards;
        g.max_concurrency = max_concurrency;
    }

    /// Every IDENTIFY's `[shard_id, num_shards]` and when it arrived.
    pub fn identified(&self) -> Vec<([u64; 2], Instant)> {
        self.inner.lock().identified.clone()
    }

    /// The shard id of every session resumed, in order.
    pub fn resumed_shards(&self) -> Vec<u64> {
        self.inner.lock().resumed_shards.clone()
    }

    /// MESSAGE_CREATE frames written to the source's connections so far (live and replayed on RESUME): every copy
    /// a client can have received.
    pub fn creates_delivered(&self) -> u64 {
        self.inner.lock().creates_delivered
    }

    fn to_all(&self, ctl: Ctl) {
        let g = self.inner.lock();
        for c in g.conns.values() {
            let _ = c.send(ctl.clone());
        }
    }

    /// Sends RECONNECT (op 7) on every live connection.
    pub fn send_reconnect(&self) {
        self.to_all(Ctl::Send(json!({"op": 7, "d": null}).to_string()));
    }

    /// Sends INVALID_SESSION (op 9) on every live connection; a non-resumable one also expires the sessions.
    pub fn send_invalid_session(&self, resumable: bool) {
        if !resumable {
            self.expire_sessions();
        }
        self.to_all(Ctl::Send(json!({"op": 9, "d": resumable}).to_string()));
    }

    /// Closes every live connection with `code`.
    pub fn close_all(&self, code: u16) {
        self.to_all(Ctl::Close(code, "closed by the test".into()));
    }

    /// Drops every live connection without a close frame (a network failure).
    pub fn drop_all(&self) {
        self.to_all(Ctl::Drop);
    }

    /// Forgets every session (a later RESUME gets INVALID_SESSION, as after Discord expired them).
    pub fn expire_sessions(&self) {
        for s in self.inner.lock().sessions.values_mut() {
            s.valid = false;
        }
    }

    /// Deletes channel `id`: its history answers 404 Unknown Channel from now on.
    pub fn delete_channel(&self, id: u64) {
        let mut g = self.inner.lock();
        g.messages.retain(|d| d["channel_id"] != json!(id.to_string()));
        g.channels.remove(&id.to_string());
    }

    /// The next `n` REST calls answer 429.
    pub fn rate_limit_rest(&self, n: u32) {
        self.inner.lock().rest_429 = n;
    }

    /// Sets `session_start_limit.remaining` (0: `GET /gateway/bot` says no identify is left).
    pub fn set_identifies_remaining(&self, n: u32) {
        self.inner.lock().identifies_remaining = n;
    }

    pub fn identifies(&self) -> u32 {
        self.inner.lock().identifies
    }

    /// RESUMEs received: (session id, sequence).
    pub fn resumes(&self) -> Vec<(String, u64)> {
        self.inner.lock().resumes.clone()
    }

    pub fn heartbeats(&self) -> u32 {
        self.inner.lock().heartbeats
    }

    pub fn connections(&self) -> u32 {
        self.inner.lock().connections
    }

    /// Connections open now.
    pub fn live(&self) -> usize {
        self.inner.lock().conns.len()
    }

    /// Sessions that have a live connection and are valid.
    pub fn live_sessions(&self) -> usize {
        self.inner.lock().sessions.values().filter(|s| s.valid && s.live.is_some()).count()
    }

    /// REST paths called, with their query.
    pub fn rest_calls(&self) -> Vec<String> {
        self.inner.lock().rest_calls.clone()
    }

    /// Close codes the stand-in sent.
    pub fn closes_sent(&self) -> Vec<u16> {
        self.inner.lock().closes_sent.clone()
    }

    /// Waits (up to `within`) until `f` holds.
    pub async fn wait(&self, what: &str, within: Duration, f: impl Fn(&MockDiscord) -> bool) {
        let t = Instant::now();
        while !f(self) {
            assert!(t.elapsed() < within, "discord stand-in: waited {within:?} for {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn bot_auth(h: &HeaderMap) -> bool {
    h.get("authorization").and_then(|v| v.to_str().ok()) == Some(&format!("Bot {TOKEN}"))
}

fn rest_error(status: StatusCode, code: u32, message: &str) -> Response {
    (status, Json(json!({"message": message, "code": code}))).into_response()
}

/// Counts the call; answers 401 or 429 where due.
fn rest_gate(m: &MockDiscord, h: &HeaderMap, call: String) -> Option<Response> {
    let mut g = m.inner.lock();
    g.rest_calls.push(call);
    if !bot_auth(h) {
        return Some(rest_error(StatusCode::UNAUTHORIZED, 0, "401: Unauthorized"));
    }
    if g.rest_429 > 0 {
        g.rest_429 -= 1;
        let mut r = (
            StatusCode::TOO_MANY_REQUESTS,
            Json(json!({"message": "You are being rate limited.", "retry_after": 0.5, "global": false})),
        )
            .into_response();
        for (k, v) in [
            ("retry-after", "1"),
            ("x-ratelimit-limit", "5"),
            ("x-ratelimit-remaining", "0"),
            ("x-ratelimit-reset-after", "0.5"),
            ("x-ratelimit-bucket", "standin"),
        ] {
            r.headers_mut().insert(k, v.parse().unwrap());
        }
        return Some(r);
    }
    None
}

async fn gateway_bot(State(m): State<MockDiscord>, h: HeaderMap) -> Response {
    if let Some(r) = rest_gate(&m, &h, "/gateway/bot".into()) {
        return r;
    }
    let (remaining, shards, mc) = {
        let g = m.inner.lock();
        (g.identifies_remaining, g.shards, g.max_concurrency)
    };
    Json(json!({"url": m.gateway_url(), "shards": shards,
        "session_start_limit": {"total": 1000, "remaining": remaining, "reset_after": 3_600_000, "max_concurrency": mc}}))
    .into_response()
}

async fn channel_messages(
    State(m): State<MockDiscord>,
    Path(id): Path<String>,
    Query(q): Query<BTreeMap<String, String>>,
    h: HeaderMap,
) -> Response {
    let qs: Vec<String> = q.iter().map(|(k, v)| format!("{k}={v}")).collect();
    if let Some(r) = rest_gate(&m, &h, format!("/channels/{id}/messages?{}", qs.join("&"))) {
        return r;
    }
    let num = |k: &str| q.get(k).and_then(|a| a.parse::<u64>().ok());
    let limit: usize = q.get("limit").and_then(|l| l.parse().ok()).unwrap_or(50).clamp(1, 100);
    let g = m.inner.lock();
    if !g.channels.contains(&id) {
        return rest_error(StatusCode::NOT_FOUND, 10003, "Unknown Channel");
    }
    let in_channel: Vec<&Value> = g.messages.iter().filter(|d| d["channel_id"] == json!(id)).collect();
    let id_of = |d: &Value| d["id"].as_str().and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
    let mut out: Vec<Value> = match (num("after"), num("before")) {
        // The `limit` oldest after `after`.
        (Some(after), _) => in_channel.into_iter().filter(|d| id_of(d) > after).take(limit).cloned().collect(),
        // The `limit` newest before `before` (or of all).
        (None, before) => {
            let older: Vec<&Value> = in_channel.into_iter().filter(|d| before.is_none_or(|b| id_of(d) < b)).collect();
            older[older.len().saturating_sub(limit)..].iter().map(|d| (*d).clone()).collect()
        }
    };
    out.reverse();
    Json(Value::Array(out)).into_response()
}

async fn ws_upgrade(State(m): State<MockDiscord>, ws: WebSocketUpgrade) -> Response {
    ws.on_upgrade(move |socket| connection(m, socket))
}

async fn connection(m: MockDiscord, mut ws: WebSocket) {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (conn, hello) = {
        let mut g = m.inner.lock();
        let c = g.next_conn;
        g.next_conn += 1;
        g.connections += 1;
        g.conns.insert(c, tx.clone());
        (c, json!({"op": 10, "d": {"heartbeat_interval": g.heartbeat_interval_ms}}).to_string())
    };
    let mut session: Option<String> = None;
    if ws.send(Message::Text(hello.into())).await.is_ok() {
        loop {
            tokio::select! {
                ctl = rx.recv() => match ctl {
                    Some(Ctl::Send(t)) => if ws.send(Message::Text(t.into())).await.is_err() { break },
                    Some(Ctl::SendCreate(t)) => {
                        if ws.send(Message::Text(t.into())).await.is_err() { break }
                        m.inner.lock().creates_delivered += 1;
                    }
                    Some(Ctl::Close(code, reason)) => {
                        m.inner.lock().closes_sent.push(code);
                        let _ = ws.send(Message::Close(Some(CloseFrame { code, reason: reason.into() }))).await;
                        break;
                    }
                    Some(Ctl::Drop) | None => break,
                },
                msg = ws.recv() => match msg {
                    Some(Ok(Message::Text(t))) => {
                        if let Err((code, reason)) = on_payload(&m, conn, &tx, &mut session, t.as_str()) {
                            m.inner.lock().closes_sent.push(code);
                            let _ = ws.send(Message::Close(Some(CloseFrame { code, reason: reason.into() }))).await;
                            break;
                        }
                    }
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                    Some(Ok(_)) => {}
                },
            }
        }
    }
    let mut g = m.inner.lock();
    g.conns.remove(&conn);
    for s in g.sessions.values_mut() {
        if s.live == Some(conn) {
            s.live = None;
        }
    }
}

/// Handles one client payload; `Err((close code, reason))` closes the connection.
fn on_payload(
    m: &MockDiscord,
    conn: u64,
    tx: &mpsc::UnboundedSender<Ctl>,
    session: &mut Option<String>,
    text: &str,
) -> Result<(), (u16, &'static str)> {
    let v: Value = serde_json::from_str(text).map_err(|_| (4002, "Decode error"))?;
    let send = |v: Value| {
        let _ = tx.send(Ctl::Send(v.to_string()));
    };
    let token_ok = |d: &Value| {
        let t = d["token"].as_str().unwrap_or("");
        t.strip_prefix("Bot ").unwrap_or(t) == TOKEN
    };
    match v["op"].as_u64() {
        Some(1) => {
            m.inner.lock().heartbeats += 1;
            send(json!({"op": 11}));
        }
        Some(2) => {
            if session.is_some() {
                return Err((4005, "Already authenticated"));
            }
            if !token_ok(&v["d"]) {
                return Err((4004, "Authentication failed"));
            }
            let intents = v["d"]["intents"].as_u64().ok_or((4002, "Decode error"))?;
            if intents >= 1 << 26 {
                return Err((4013, "Invalid intent(s)"));
            }
            let shard = match &v["d"]["shard"] {
                Value::Null => [0, 1],
                s => match (s[0].as_u64(), s[1].as_u64()) {
                    (Some(id), Some(n)) if id < n => [id, n],
                    _ => return Err((4010, "Invalid shard")),
                },
            };
            let mut g = m.inner.lock();
            g.identifies += 1;
            g.identified.push((shard, Instant::now()));
            g.identifies_remaining = g.identifies_remaining.saturating_sub(1);
            let id = format!("session{:04}{:x}", g.next_session, conn);
            g.next_session += 1;
            let ready = json!({"op": 0, "t": "READY", "s": 1, "d": {
                "v": 10, "user": {"id": "42", "username": "kronos-social", "discriminator": "0", "bot": true, "avatar": null},
                "guilds": [{"id": GUILD.to_string(), "unavailable": true}], "session_id": id,
                "resume_gateway_url": m.gateway_url(), "shard": shard,
                "application": {"id": "42", "flags": 0}}});
            g.sessions.insert(
                id.clone(),
                Session {
                    intents,
                    shard,
                    seq: 1,
                    log: vec![(1, ready.to_string(), false)],
                    live: Some(conn),
                    valid: true,
                },
            );
            send(ready);
            *session = Some(id);
        }
        Some(6) => {
            if !token_ok(&v["d"]) {
                return Err((4004, "Authentication failed"));
            }
            let sid = v["d"]["session_id"].as_str().unwrap_or("").to_string();
            let seq = v["d"]["seq"].as_u64().unwrap_or(0);
            let mut g = m.inner.lock();
            g.resumes.push((sid.clone(), seq));
            let g = &mut *g;
            match g.sessions.get_mut(&sid).filter(|s| s.valid) {
                Some(s) => {
                    g.resumed_shards.push(s.shard[0]);
                    for (_, ev, create) in s.log.iter().filter(|(n, _, _)| *n > seq) {
                        let _ = tx.send(if *create { Ctl::SendCreate(ev.clone()) } else { Ctl::Send(ev.clone()) });
                    }
                    s.seq += 1;
                    let resumed = json!({"op": 0, "t": "RESUMED", "s": s.seq, "d": {}}).to_string();
                    s.log.push((s.seq, resumed.clone(), false));
                    s.live = Some(conn);
                    let _ = tx.send(Ctl::Send(resumed));
                    *session = Some(sid);
                }
                None => send(json!({"op": 9, "d": false})),
            }
        }
        Some(3) | Some(4) | Some(8) => {
            if session.is_none() {
                return Err((4003, "Not authenticated"));
            }
        }
        _ => return Err((4001, "Unknown opcode")),
    }
    Ok(())
}
