//! Discord channels through the gateway (API v10, `twilight-gateway`): one shard with the GUILD_MESSAGES and
//! MESSAGE_CONTENT intents; `MESSAGE_CREATE` in the configured channels become items, everything else is ignored.
//!
//! - **Heartbeat, resume, reconnect**: the shard heartbeats at HELLO's interval (first beat jittered), answers the
//!   gateway's HEARTBEAT, treats a missing ACK as a zombied connection, and on RECONNECT (op 7), a dropped
//!   connection or a resumable close code reconnects to READY's `resume_gateway_url` and sends RESUME (op 6) with
//!   the session id and last sequence; the gateway replays what was missed. INVALID_SESSION (op 9) `false` starts a
//!   new session (IDENTIFY, rate limited by the identify queue).
//! - **Cursor** ([`DiscordCursor`]): the session id, its last sequence and resume URL, and the last message id
//!   (snowflake) taken per channel, saved with the items. A restart resumes the saved session (nothing lost:
//!   the gateway replays; nothing repeated: messages at or below a channel's last id are skipped as `duplicate`).
//!   When the session cannot be resumed (expired, or the gap is too old) a new session's READY triggers a
//!   **backfill** over REST (`GET /channels/{id}/messages?after=<last id>&limit=100`, paged) for every channel with a
//!   last id, so messages posted while the monitor was away are still taken, oldest first.
//! - **Rate limits**: the shard's command rate limiter (120 gateway commands a minute); `GET /gateway/bot`'s
//!   `session_start_limit` (no identify left: rate limited until `reset_after`); REST 429s wait `retry_after`
//!   (header or body, whichever is longer).
//! - **Fatal close codes** (4004 authentication failed, 4010-4014 shard / version / intents) stop the source with a
//!   message saying what to fix; 4014 is the MESSAGE CONTENT intent not enabled for the bot.
//! - Bad items: a MESSAGE_CREATE without an id or content is skipped as `malformed`; unknown fields are ignored
//!   (Discord adds fields); text size and the rest are the pipeline's. Text frames are UTF-8 by the WebSocket
//!   protocol, so invalid UTF-8 cannot arrive this way.
//! - The token comes from the environment variable the config names; it is sent only to the gateway and the REST
//!   API and never logged.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use kronos_common::Secret;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use twilight_gateway::{ConfigBuilder, Intents, Message, Session, Shard, ShardId};

use crate::item::{RawItem, Skip};
use crate::source::{Batch, Source, SourceError};

/// Discord's epoch (2015-01-01T00:00:00Z), ms since the Unix epoch.
pub const DISCORD_EPOCH_MS: u64 = 1_420_070_400_000;

/// Messages taken per REST page (Discord's maximum).
const PAGE: usize = 100;

/// A `[[source]]` with `kind = "discord"`.
#[derive(Debug, Clone, PartialEq)]
pub struct DiscordConfig {
    /// The variable holding the bot token (`KRONOS_DISCORD_TOKEN`).
    pub token_env: String,
    /// Channel ids (snowflakes) to take messages from; messages elsewhere are ignored.
    pub channels: BTreeSet<u64>,
    /// The REST API base (`https://discord.com/api/v10`); `GET /gateway/bot` tells the gateway URL.
    pub api_url: url::Url,
    /// At most this many messages per channel are fetched over REST after a session could not be resumed.
    pub backfill_max: usize,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDiscord {
    // The fields every source has (read by the config module).
    #[allow(dead_code)]
    name: String,
    #[allow(dead_code)]
    kind: String,
    #[allow(dead_code)]
    weight: Option<f64>,
    #[allow(dead_code)]
    trusted: Option<bool>,
    token_env: Option<String>,
    channels: Vec<String>,
    api_url: Option<String>,
    backfill_max: Option<usize>,
}

impl DiscordConfig {
    /// Reads the Discord fields of `source[i]`; errors are `(field, message)`.
    pub fn parse(i: usize, t: &toml::Table) -> Result<DiscordConfig, (String, String)> {
        let at = |f: &str| format!("source[{i}].{f}");
        let r: RawDiscord = toml::Value::Table(t.clone())
            .try_into()
            .map_err(|e: toml::de::Error| (format!("source[{i}]"), e.message().to_string()))?;
        let token_env = crate::config::env_var_name(
            at("token_env"),
            r.token_env.as_deref().unwrap_or("KRONOS_DISCORD_TOKEN"),
            "; the token itself goes in the environment",
        )?;
        if r.channels.is_empty() {
            return Err((at("channels"), "list at least one channel id".into()));
        }
        let mut channels = BTreeSet::new();
        for (j, c) in r.channels.iter().enumerate() {
            let id: u64 = c.parse().ok().filter(|&id| id > 0).ok_or_else(|| {
                (format!("source[{i}].channels[{j}]"), format!("'{c}' is not a channel id (a snowflake, digits)"))
            })?;
            channels.insert(id);
        }
        let api = r.api_url.unwrap_or_else(|| "https://discord.com/api/v10".into());
        let api_url = url::Url::parse(api.trim_end_matches('/'))
            .map_err(|e| (at("api_url"), format!("'{api}' is not a URL: {e}")))?;
        if !matches!(api_url.scheme(), "http" | "https") {
            return Err((at("api_url"), format!("'{}' must be http or https", api_url.scheme())));
        }
        let backfill_max = r.backfill_max.unwrap_or(1000);
        Ok(DiscordConfig { token_env, channels, api_url, backfill_max })
    }
}

/// Where the Discord source stands: saved with its items.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct DiscordCursor {
    /// The gateway session to resume, if any.
    pub session_id: Option<String>,
    /// The session's last sequence number.
    pub sequence: u64,
    /// READY's `resume_gateway_url`.
    pub resume_url: Option<String>,
    /// The last message id taken, per channel id.
    pub last_message: BTreeMap<u64, u64>,
}

/// What one MESSAGE_CREATE payload means for the source.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Taken {
    /// An item from a configured channel, with the channel and message ids.
    Item(u64, u64, RawItem),
    /// Skipped with a reason (counted).
    Skip(Skip),
    /// Not from a configured channel: not ours.
    Ignore,
}

fn snowflake(v: &Value) -> Option<u64> {
    v.as_str().and_then(|s| s.parse().ok()).filter(|&n| n > 0)
}

/// The item a MESSAGE_CREATE payload (`d`) makes, given the configured channels and the last id taken per channel.
pub(crate) fn take_message(d: &Value, channels: &BTreeSet<u64>, last: &BTreeMap<u64, u64>) -> Taken {
    let Some(channel) = snowflake(&d["channel_id"]) else { return Taken::Skip(Skip::Malformed) };
    if !channels.contains(&channel) {
        return Taken::Ignore;
    }
    let Some(id) = snowflake(&d["id"]) else { return Taken::Skip(Skip::Malformed) };
    let Some(content) = d["content"].as_str() else { return Taken::Skip(Skip::Malformed) };
    if last.get(&channel).is_some_and(|&l| id <= l) {
        return Taken::Skip(Skip::Duplicate);
    }
    let a = &d["author"];
    let author = a["global_name"].as_str().or_else(|| a["username"].as_str()).map(str::to_string);
    let url = match snowflake(&d["guild_id"]) {
        Some(g) => format!("https://discord.com/channels/{g}/{channel}/{id}"),
        None => format!("https://discord.com/channels/@me/{channel}/{id}"),
    };
    let item = RawItem {
        external_id: id.to_string(),
        author,
        text: content.as_bytes().to_vec(),
        url: Some(url),
        time_ms: Some((id >> 22) + DISCORD_EPOCH_MS),
        language: None,
    };
    Taken::Item(channel, id, item)
}

/// What a close code from the gateway means: `Some(message)` when the source must stop (retrying cannot help).
pub(crate) fn fatal_close(code: u16, token_env: &str) -> Option<String> {
    Some(match code {
        4004 => format!("the gateway refused the bot token in {token_env} (close 4004 authentication failed)"),
        4010 => "the gateway refused the shard (close 4010 invalid shard)".into(),
        4011 => "the bot is in too many guilds for one shard (close 4011 sharding required)".into(),
        4012 => "the gateway refused API version 10 (close 4012 invalid API version)".into(),
        4013 => "the gateway refused the intents (close 4013 invalid intents)".into(),
        4014 => "the gateway refused the MESSAGE_CONTENT intent (close 4014 disallowed intents): enable \"Message \
                 Content Intent\" for the bot in the Discord developer portal"
            .into(),
        _ => return None,
    })
}

/// How long a REST 429 asks to wait: the longer of the `Retry-After` header (seconds) and the body's
/// `retry_after` (seconds, fractional), at least 100 ms.
pub(crate) fn retry_after(header: Option<&str>, body: &Value) -> Duration {
    let h = header.and_then(|h| h.trim().parse::<f64>().ok()).unwrap_or(0.0);
    let b = body["retry_after"].as_f64().unwrap_or(0.0);
    let s = h.max(b);
    let s = if s.is_finite() && s > 0.0 { s.min(3600.0) } else { 0.0 };
    Duration::from_secs_f64(s).max(Duration::from_millis(100))
}

/// A failed REST call: the status when the server answered, and what it means for the source.
#[derive(Debug)]
pub(crate) struct RestError {
    pub status: Option<u16>,
    pub error: SourceError,
}

/// Whether a channel-history answer means the channel is gone or closed to the bot (skip its backfill rather than
/// stop or stall the source): 403 Missing Access, 404 Unknown Channel.
pub(crate) fn channel_gone(status: Option<u16>) -> bool {
    matches!(status, Some(403 | 404))
}

/// What `GET /gateway/bot` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct GatewayBot {
    pub url: String,
    pub remaining: u64,
    pub reset_after: Duration,
}

pub(crate) fn parse_gateway_bot(v: &Value) -> Option<GatewayBot> {
    let url = v["url"].as_str()?.trim_end_matches('/').to_string();
    let l = &v["session_start_limit"];
    Some(GatewayBot {
        url,
        remaining: l["remaining"].as_u64().unwrap_or(1),
        reset_after: Duration::from_millis(l["reset_after"].as_u64().unwrap_or(0)),
    })
}

/// Items returned per call at most.
const MAX_BATCH: usize = 500;
/// After the first item, how long to wait for more before returning the batch.
const LINGER: Duration = Duration::from_millis(25);
/// A call with no items returns this often when the session moved (to save the sequence).
const QUIET: Duration = Duration::from_secs(10);

/// The Discord source.
pub struct DiscordSource {
    name: String,
    cfg: DiscordConfig,
    token: Secret,
    http: reqwest::Client,
    shard: Option<Shard>,
    /// The cursor as far as events were taken (ahead of the saved one while a batch is built).
    state: DiscordCursor,
    /// The cursor last returned (to see whether the runner saved it).
    returned: Option<DiscordCursor>,
    pending: Vec<Result<RawItem, Skip>>,
    /// Whether to fetch the channels over REST before reading on (a new session began: messages may be missing).
    backfill: bool,
    last_close: Option<u16>,
}

impl DiscordSource {
    /// Reads the token from the environment; errors name the variable.
    pub fn new(name: &str, cfg: DiscordConfig) -> Result<DiscordSource, SourceError> {
        let token =
            std::env::var(&cfg.token_env).ok().map(|t| t.trim().to_string()).filter(|t| !t.is_empty()).ok_or_else(
                || SourceError::Fatal(format!("{name}: token_env: environment variable {} is not set", cfg.token_env)),
            )?;
        let token = Secret::new(token.strip_prefix("Bot ").unwrap_or(&token));
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .user_agent("DiscordBot (https://example.invalid/kronos, 0.1)")
            .build()
            .map_err(|e| SourceError::Fatal(format!("{name}: http client: {e}")))?;
        Ok(DiscordSource {
            name: name.to_string(),
            cfg,
            token,
            http,
            shard: None,
            state: DiscordCursor::default(),
            returned: None,
            pending: Vec::new(),
            backfill: false,
            last_close: None,
        })
    }

    /// A REST GET (`/gateway/bot`, channel messages). Borrows nothing from `self` across the await (the shard is
    /// not `Sync`).
    fn get_json(
        &self,
        path_and_query: &str,
    ) -> impl std::future::Future<Output = Result<Value, RestError>> + Send + 'static {
        let url = format!("{}{path_and_query}", self.cfg.api_url.as_str().trim_end_matches('/'));
        let http = self.http.clone();
        let token = self.token.clone();
        let token_env = self.cfg.token_env.clone();
        async move {
            let res = http.get(&url).header("authorization", format!("Bot {}", token.expose())).send().await.map_err(
                |e| RestError {
                    status: None,
                    error: SourceError::Transient(format!("GET {url}: {}", e.without_url())),
                },
            )?;
            let status = res.status();
            let header = res.headers().get("retry-after").and_then(|v| v.to_str().ok()).map(str::to_string);
            let body: Value = res.json().await.unwrap_or(Value::Null);
            let error = match status.as_u16() {
                200..=299 => return Ok(body),
                429 => SourceError::RateLimited {
                    retry_after: retry_after(header.as_deref(), &body),
                    message: format!("GET {url}: 429 {}", body["message"].as_str().unwrap_or("rate limited")),
                },
                401 | 403 => SourceError::Fatal(format!(
                    "GET {url}: {status}: the bot token in {} was refused or lacks access",
                    token_env
                )),
                s if s >= 500 => SourceError::Transient(format!("GET {url}: {status}")),
                _ => SourceError::Transient(format!(
                    "GET {url}: {status} {}",
                    body["message"].as_str().unwrap_or_default()
                )),
            };
            Err(RestError { status: Some(status.as_u16()), error })
        }
    }

    /// Opens the shard: the gateway URL and identify budget from `GET /gateway/bot`, the saved session if any.
    async fn connect(&mut self) -> Result<(), SourceError> {
        let gb = self.get_json("/gateway/bot").await.map_err(|e| e.error)?;
        let gb = parse_gateway_bot(&gb)
            .ok_or_else(|| SourceError::Transient("GET /gateway/bot: no url in the answer".into()))?;
        if self.state.session_id.is_none() && gb.remaining == 0 {
            return Err(SourceError::RateLimited {
                retry_after: gb.reset_after.max(Duration::from_secs(1)),
                message: "no gateway session starts left today (session_start_limit)".into(),
            });
        }
        // rustls needs one process-wide crypto provider when several are compiled in; the first install wins.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut b =
            ConfigBuilder::new(self.token.expose().to_string(), Intents::GUILD_MESSAGES | Intents::MESSAGE_CONTENT)
                .proxy_url(gb.url.clone());
        if let Some(id) = &self.state.session_id {
            b = b
                .session(Session::new(self.state.sequence, id.clone()))
                .resume_url(self.state.resume_url.clone().unwrap_or(gb.url));
        }
        self.shard = Some(Shard::with_config(ShardId::ONE, b.build()));
        Ok(())
    }

    /// Fetches what each configured channel has after its last taken id, then takes it all oldest first (by
    /// snowflake, across channels). Nothing is taken before every page arrived, so a failure (a 429) loses nothing:
    /// the next call fetches again from the same ids.
    async fn run_backfill(&mut self) -> Result<(), SourceError> {
        let channels: Vec<(u64, u64)> =
            self.cfg.channels.iter().filter_map(|c| self.state.last_message.get(c).map(|&l| (*c, l))).collect();
        let mut all: Vec<Value> = Vec::new();
        for (channel, mut after) in channels {
            let mut fetched = 0usize;
            while fetched < self.cfg.backfill_max {
                let page =
                    match self.get_json(&format!("/channels/{channel}/messages?after={after}&limit={PAGE}")).await {
                        Ok(p) => p,
                        // A deleted channel, or one the bot can no longer read, must not hold up the others.
                        Err(e) if channel_gone(e.status) => {
                            tracing::warn!(source = %self.name, channel, error = %e.error,
                            "discord: channel history not readable; not backfilled");
                            break;
                        }
                        Err(e) => return Err(e.error),
                    };
                let Some(arr) = page.as_array() else {
                    return Err(SourceError::Transient(format!("channel {channel}: messages: not a JSON array")));
                };
                let n = arr.len();
                for m in arr {
                    if let Some(id) = snowflake(&m["id"]) {
                        after = after.max(id);
                    }
                }
                fetched += n;
                all.extend(arr.iter().cloned());
                if n < PAGE {
                    break;
                }
            }
            tracing::info!(source = %self.name, channel, fetched, "discord: backfill over REST after a new session");
        }
        all.sort_by_key(|m| snowflake(&m["id"]).unwrap_or(0));
        for m in &all {
            self.take(m);
        }
        self.backfill = false;
        Ok(())
    }

    fn take(&mut self, d: &Value) {
        match take_message(d, &self.cfg.channels, &self.state.last_message) {
            Taken::Item(channel, id, item) => {
                self.state.last_message.insert(channel, id);
                self.pending.push(Ok(item));
            }
            Taken::Skip(s) => self.pending.push(Err(s)),
            Taken::Ignore => {}
        }
    }

    fn sync_session(&mut self) {
        if let Some(shard) = &self.shard {
            if let Some(s) = shard.session() {
                self.state.session_id = Some(s.id().to_string());
                self.state.sequence = s.sequence();
            }
            if let Some(u) = shard.resume_url() {
                self.state.resume_url = Some(u.to_string());
            }
        }
    }

    /// One text payload from the shard: READY may call for a backfill, MESSAGE_CREATE may give an item.
    fn on_text(&mut self, text: &str) {
        let Ok(v) = serde_json::from_str::<Value>(text) else {
            // Twilight already refused what it could not read; a payload that is not JSON never reaches here.
            return;
        };
        self.sync_session();
        if v["op"].as_u64() != Some(0) {
            return;
        }
        match v["t"].as_str() {
            // A new session: whatever was posted since the last saved message may be missing.
            Some("READY") if self.cfg.channels.iter().any(|c| self.state.last_message.contains_key(c)) => {
                self.backfill = true;
            }
            Some("MESSAGE_CREATE") => self.take(&v["d"]),
            _ => {}
        }
    }

    fn batch(&mut self) -> Batch<DiscordCursor> {
        self.sync_session();
        let items = std::mem::take(&mut self.pending);
        self.returned = Some(self.state.clone());
        Batch { items, cursor: self.state.clone(), wait: Duration::ZERO }
    }
}

impl Source for DiscordSource {
    type Cursor = DiscordCursor;

    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "discord"
    }

    async fn next(&mut self, cursor: &DiscordCursor) -> Result<Batch<DiscordCursor>, SourceError> {
        match &self.returned {
            // First call (or after a fatal stop): start from the saved cursor.
            None if self.shard.is_none() => self.state = cursor.clone(),
            // The runner did not save the last batch: take its channels' positions back and fetch the rest over
            // REST (the live session cannot be rewound).
            Some(r) if r != cursor && self.pending.is_empty() => {
                self.state.last_message = cursor.last_message.clone();
                self.backfill = true;
            }
            _ => {}
        }
        if self.shard.is_none() {
            self.connect().await?;
        }
        if self.backfill {
            self.run_backfill().await?;
        }
        let mut quiet_until = tokio::time::Instant::now() + QUIET;
        loop {
            if self.pending.len() >= MAX_BATCH {
                return Ok(self.batch());
            }
            let wait = if !self.pending.is_empty() {
                LINGER
            } else {
                quiet_until.saturating_duration_since(tokio::time::Instant::now())
            };
            let shard = self.shard.as_mut().expect("connected above");
            let ev = match tokio::time::timeout(wait, futures::StreamExt::next(shard)).await {
                Ok(ev) => ev,
                Err(_) => {
                    let moved = self.returned.as_ref() != Some(&self.state);
                    if !self.pending.is_empty() || moved {
                        return Ok(self.batch());
                    }
                    // Nothing new: keep waiting (a pushing source waits inside `next`).
                    quiet_until = tokio::time::Instant::now() + QUIET;
                    continue;
                }
            };
            match ev {
                Some(Ok(Message::Text(text))) => {
                    self.on_text(&text);
                    if self.backfill {
                        self.run_backfill().await?;
                    }
                }
                Some(Ok(Message::Close(frame))) => {
                    self.last_close = frame.as_ref().map(|f| f.code);
                    tracing::info!(source = %self.name, code = ?self.last_close, "discord: gateway closed the connection");
                }
                Some(Err(e)) => {
                    // The shard reconnects by itself on the next poll (resuming when it can).
                    let msg = format!("gateway: {e}");
                    if !self.pending.is_empty() {
                        return Ok(self.batch());
                    }
                    return Err(SourceError::Transient(msg));
                }
                None => {
                    // Closed for good: a fatal close code.
                    self.shard = None;
                    self.returned = None;
                    let code = self.last_close.unwrap_or(0);
                    return Err(SourceError::Fatal(
                        fatal_close(code, &self.cfg.token_env)
                            .unwrap_or_else(|| format!("gateway closed (code {code})")),
                    ));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn msg(channel: &str, id: &str, content: Value) -> Value {
        json!({"id": id, "channel_id": channel, "guild_id": "9", "content": content,
               "author": {"id": "5", "username": "ada", "global_name": "Ada L."}, "brand_new_field": [1, 2]})
    }

    #[test]
    fn a_message_in_a_configured_channel_is_an_item() {
        let chans = BTreeSet::from([7u64]);
        let id: u64 = (1_000u64 << 22) | 5;
        let t = take_message(&msg("7", &id.to_string(), json!("gm $BTC")), &chans, &BTreeMap::new());
        let Taken::Item(c, i, item) = t else { panic!("{t:?}") };
        assert_eq!((c, i), (7, id));
        assert_eq!(item.text, b"gm $BTC");
        assert_eq!(item.author.as_deref(), Some("Ada L."));
        assert_eq!(item.url.as_deref(), Some(format!("https://discord.com/channels/9/7/{id}").as_str()));
        assert_eq!(item.time_ms, Some(DISCORD_EPOCH_MS + 1000));
        assert_eq!(item.external_id, id.to_string());
    }

    #[test]
    fn other_channels_repeats_and_broken_payloads() {
        let chans = BTreeSet::from([7u64]);
        let last = BTreeMap::from([(7u64, 100u64)]);
        assert_eq!(take_message(&msg("8", "200", json!("x")), &chans, &last), Taken::Ignore);
        assert_eq!(take_message(&msg("7", "100", json!("x")), &chans, &last), Taken::Skip(Skip::Duplicate));
        assert_eq!(take_message(&msg("7", "99", json!("x")), &chans, &last), Taken::Skip(Skip::Duplicate));
        assert!(matches!(take_message(&msg("7", "101", json!("x")), &chans, &last), Taken::Item(7, 101, _)));
        assert_eq!(take_message(&msg("7", "101", json!(null)), &chans, &last), Taken::Skip(Skip::Malformed));
        assert_eq!(take_message(&msg("7", "abc", json!("x")), &chans, &last), Taken::Skip(Skip::Malformed));
        assert_eq!(take_message(&json!({"id": "5"}), &chans, &last), Taken::Skip(Skip::Malformed));
    }

    #[test]
    fn fatal_close_codes_say_what_to_fix() {
        assert!(fatal_close(4004, "KRONOS_DISCORD_TOKEN").unwrap().contains("KRONOS_DISCORD_TOKEN"));
        assert!(fatal_close(4014, "X").unwrap().contains("Message Content Intent"));
        for code in [4010, 4011, 4012, 4013] {
            assert!(fatal_close(code, "X").is_some(), "{code}");
        }
        for code in [1000, 1001, 4000, 4001, 4002, 4003, 4005, 4007, 4008, 4009] {
            assert!(fatal_close(code, "X").is_none(), "{code} is resumable or reconnectable");
        }
    }

    #[test]
    fn retry_after_takes_the_longer_and_a_floor() {
        assert_eq!(retry_after(Some("2"), &json!({"retry_after": 0.5})), Duration::from_secs(2));
        assert_eq!(retry_after(None, &json!({"retry_after": 1.5})), Duration::from_millis(1500));
        assert_eq!(retry_after(Some("junk"), &json!({})), Duration::from_millis(100));
        assert_eq!(retry_after(None, &json!({"retry_after": 1e12})), Duration::from_secs(3600));
    }

    #[test]
    fn a_gone_channel_is_skipped_not_retried() {
        assert!(channel_gone(Some(404)) && channel_gone(Some(403)));
        for s in [None, Some(401), Some(429), Some(500), Some(400)] {
            assert!(!channel_gone(s), "{s:?}");
        }
    }

    #[test]
    fn gateway_bot_answer() {
        let v = json!({"url": "wss://gateway.discord.gg/", "shards": 1,
            "session_start_limit": {"total": 1000, "remaining": 0, "reset_after": 1500, "max_concurrency": 1}});
        assert_eq!(
            parse_gateway_bot(&v),
            Some(GatewayBot {
                url: "wss://gateway.discord.gg".into(),
                remaining: 0,
                reset_after: Duration::from_millis(1500)
            })
        );
        assert_eq!(parse_gateway_bot(&json!({})), None);
    }

    #[test]
    fn config_fields_are_checked() {
        let t = |s: &str| -> toml::Table { toml::from_str(s).unwrap() };
        let ok =
            DiscordConfig::parse(0, &t("name = \"d\"\nkind = \"discord\"\nchannels = [\"123\", \"456\"]")).unwrap();
        assert_eq!(ok.channels, BTreeSet::from([123, 456]));
        assert_eq!(ok.token_env, "KRONOS_DISCORD_TOKEN");
        assert_eq!(ok.api_url.as_str(), "https://discord.com/api/v10");
        let e = DiscordConfig::parse(2, &t("name = \"d\"\nkind = \"discord\"\nchannels = []")).unwrap_err();
        assert_eq!(e.0, "source[2].channels");
        let e = DiscordConfig::parse(0, &t("name = \"d\"\nkind = \"discord\"\nchannels = [\"12x\"]")).unwrap_err();
        assert_eq!(e.0, "source[0].channels[0]");
        let e = DiscordConfig::parse(
            0,
            &t("name = \"d\"\nkind = \"discord\"\nchannels = [\"1\"]\ntoken_env = \"abc.def\""),
        )
        .unwrap_err();
        assert_eq!(e.0, "source[0].token_env");
        let e = DiscordConfig::parse(0, &t("name = \"d\"\nkind = \"discord\"\nchannels = [\"1\"]\nchanels = 1"))
            .unwrap_err();
        assert!(e.1.contains("chanels"), "{e:?}");
    }

    #[test]
    fn the_cursor_round_trips_as_json() {
        let c = DiscordCursor {
            session_id: Some("s".into()),
            sequence: 9,
            resume_url: Some("ws://x".into()),
            last_message: BTreeMap::from([(7, 100), (8, 5)]),
        };
        let j = serde_json::to_string(&c).unwrap();
        assert_eq!(serde_json::from_str::<DiscordCursor>(&j).unwrap(), c);
        assert_eq!(serde_json::from_str::<DiscordCursor>("{}").unwrap(), DiscordCursor::default());
    }
}

#[cfg(test)]
mod config_tests {
    use crate::config::{Config, SourceKind};

    #[test]
    fn discord_and_telegram_sources_in_the_monitor_config() {
        let text = "[social]\nstore = \"sqlite::memory:\"\n\n[[source]]\nname = \"disc\"\nkind = \"discord\"\nweight = 2\n\
                    channels = [\"42\"]\n\n[[source]]\nname = \"tg\"\nkind = \"telegram\"\nchats = [-100123]\ntrusted = true\n";
        let c = Config::parse(text, "t.toml").unwrap();
        assert!(matches!(&c.sources[0].kind, SourceKind::Discord(d) if d.channels.contains(&42)));
        assert_eq!((c.sources[0].weight, c.sources[0].trusted), (2.0, false));
        assert!(matches!(&c.sources[1].kind, SourceKind::Telegram(t) if t.chats.contains(&-100123)));
        assert!(c.sources[1].trusted);
        let e = Config::parse(&text.replace("channels = [\"42\"]", "channels = [\"x\"]"), "t.toml").unwrap_err();
        assert_eq!(e.field, "source[0].channels[0]");
        let e = Config::parse(&text.replace("name = \"tg\"", "name = \"t g\""), "t.toml").unwrap_err();
        assert_eq!(e.field, "source[1].name");
    }
}
