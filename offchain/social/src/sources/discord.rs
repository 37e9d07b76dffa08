//! Discord channels through the gateway (API v10, `twilight-gateway`): one or more shards with the GUILD_MESSAGES
//! and MESSAGE_CONTENT intents; `MESSAGE_CREATE` in the configured channels become items, `MESSAGE_UPDATE` with new
//! text edits of them (scored again under the same id), `MESSAGE_DELETE` / `MESSAGE_DELETE_BULK` their deletion;
//! every other event is counted ([`DiscordStats`]) and skipped.
//!
//! - **Typed payloads**: gateway payloads and REST answers are read into serde types (`OpCode`, `EventName` with
//!   an `Other` variant, `Message`, `MessageUpdate`, `GatewayBot`, …); one that does not read is an error
//!   naming the field (`d.author.username: missing field`), counted and skipped, never a stop.
//! - **Shards**: `shards = N` or the count `GET /gateway/bot` recommends; one twilight [`Shard`] per id, each with
//!   its own heartbeat, session, sequence and resume URL; IDENTIFY carries `[shard_id, num_shards]`; one
//!   [`InMemoryQueue`] from `session_start_limit` holds identifies to Discord's start-up rule (`max_concurrency`
//!   per 5 s, a shard's bucket being its id modulo `max_concurrency`).
//! - **Heartbeat, resume, reconnect**: the shard heartbeats at HELLO's interval (first beat jittered), answers the
//!   gateway's HEARTBEAT, treats a missing ACK as a zombied connection, and on RECONNECT (op 7), a dropped
//!   connection or a resumable close code reconnects to READY's `resume_gateway_url` and sends RESUME (op 6) with
//!   the session id and last sequence; the gateway replays what was missed. INVALID_SESSION (op 9) `false` starts a
//!   new session (IDENTIFY, rate limited by the identify queue).
//! - **Cursor** ([`DiscordCursor`]): per shard the session id, its last sequence and resume URL, and the last
//!   message id (snowflake) taken per channel, saved with the items. A restart resumes the saved sessions (under
//!   the same shard count; nothing lost:
//!   the gateway replays; nothing repeated: messages at or below a channel's last id are skipped as `duplicate`).
//!   When the session cannot be resumed (expired, or the gap is too old) a new session's READY triggers a
//!   **backfill** over REST (`GET /channels/{id}/messages?after=<last id>&limit=100`, paged) for every channel with a
//!   last id, so messages posted while the monitor was away are still taken, oldest first.
//! - **Re-check after a new session**: the cursor also remembers the last `recheck_max` messages taken per channel
//!   (id → the edit time known). A new session's READY reads them back over REST
//!   (`GET /channels/{id}/messages?before=<newest remembered + 1>&limit=100`, paged back over the window) and hands
//!   in the edits (a later `edited_timestamp`) and deletions (gone from the range read) made while no session
//!   received them.
//! - **Shards across processes**: `shard_ids` (with `shards`, the total) runs only those shards here: only they
//!   identify, and only their sessions are saved and resumed.
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
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use kronos_common::Secret;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use twilight_gateway::error::ReceiveMessageError;
use twilight_gateway::queue::InMemoryQueue;
use twilight_gateway::{ConfigBuilder, Intents, Message as WsMessage, Session, Shard, ShardId};

use crate::item::{Change, RawItem, Skip};
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
    /// Gateway shards (`None`: the count `GET /gateway/bot` recommends).
    pub shards: Option<u32>,
    /// The shards this process runs, each below `shards` (`None`: all of them). Several processes split the shards
    /// of one bot by listing disjoint sets under the same `shards`.
    pub shard_ids: Option<BTreeSet<u32>>,
    /// Per channel, the last this many messages taken are remembered (id and edit time, in the cursor) and read
    /// again over REST after a new session, so edits and deletions made while the monitor was away are applied.
    /// 0 turns that off.
    pub recheck_max: usize,
}

/// The most `recheck_max` may be (ten REST pages per channel after a new session).
pub const RECHECK_MAX: usize = 1000;

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
    shards: Option<u32>,
    shard_ids: Option<Vec<u32>>,
    recheck_max: Option<usize>,
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
        if r.shards == Some(0) {
            return Err((at("shards"), "at least 1 (or leave it out for Discord's recommended count)".into()));
        }
        let shard_ids = match r.shard_ids {
            None => None,
            Some(ids) => {
                let Some(n) = r.shards else {
                    return Err((
                        at("shard_ids"),
                        "needs `shards`, the bot's total shard count (every process uses the same)".into(),
                    ));
                };
                if ids.is_empty() {
                    return Err((at("shard_ids"), "list at least one shard id (or leave it out for all)".into()));
                }
                let mut set = BTreeSet::new();
                for (j, &id) in ids.iter().enumerate() {
                    if id >= n {
                        return Err((
                            format!("source[{i}].shard_ids[{j}]"),
                            format!("shard {id} does not exist with shards = {n} (ids are 0 to {})", n - 1),
                        ));
                    }
                    if !set.insert(id) {
                        return Err((format!("source[{i}].shard_ids[{j}]"), format!("shard {id} is listed twice")));
                    }
                }
                Some(set)
            }
        };
        let recheck_max = r.recheck_max.unwrap_or(100);
        if recheck_max > RECHECK_MAX {
            return Err((at("recheck_max"), format!("at most {RECHECK_MAX} (0 turns the re-check off)")));
        }
        Ok(DiscordConfig { token_env, channels, api_url, backfill_max, shards: r.shards, shard_ids, recheck_max })
    }
}

/// One shard's gateway session, saved so a restart resumes it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardSession {
    pub session_id: String,
    /// The session's last sequence number.
    pub sequence: u64,
    /// READY's `resume_gateway_url`.
    pub resume_url: Option<String>,
}

/// Where the Discord source stands: saved with its items.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct DiscordCursor {
    /// How many shards the sessions below belong to (a session is resumed only under the same count).
    pub shards: u32,
    /// The gateway session of each shard (by shard id), if any.
    pub sessions: BTreeMap<u32, ShardSession>,
    /// The last message id taken, per channel id.
    pub last_message: BTreeMap<u64, u64>,
    /// Per channel id, the last `recheck_max` messages taken and still there: message id → the edit time known
    /// (ms since the epoch, 0 when never edited). Read again over REST after a new session.
    pub recent: BTreeMap<u64, BTreeMap<u64, u64>>,
}

/// Gateway opcodes (Discord's "Opcodes and Status Codes"); the shard answers the non-dispatch ones itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "u8")]
pub(crate) enum OpCode {
    Dispatch,
    Heartbeat,
    Identify,
    PresenceUpdate,
    VoiceStateUpdate,
    Resume,
    Reconnect,
    RequestGuildMembers,
    InvalidSession,
    Hello,
    HeartbeatAck,
    RequestSoundboardSounds,
}

/// An opcode Discord does not document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("unknown gateway opcode {0}")]
pub(crate) struct UnknownOpCode(u8);

impl TryFrom<u8> for OpCode {
    type Error = UnknownOpCode;

    fn try_from(op: u8) -> Result<OpCode, UnknownOpCode> {
        Ok(match op {
            0 => OpCode::Dispatch,
            1 => OpCode::Heartbeat,
            2 => OpCode::Identify,
            3 => OpCode::PresenceUpdate,
            4 => OpCode::VoiceStateUpdate,
            6 => OpCode::Resume,
            7 => OpCode::Reconnect,
            8 => OpCode::RequestGuildMembers,
            9 => OpCode::InvalidSession,
            10 => OpCode::Hello,
            11 => OpCode::HeartbeatAck,
            31 => OpCode::RequestSoundboardSounds,
            other => return Err(UnknownOpCode(other)),
        })
    }
}

/// The dispatch event names this source reads; any other is [`EventName::Other`] (counted, skipped).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub(crate) enum EventName {
    Ready,
    Resumed,
    MessageCreate,
    MessageUpdate,
    MessageDelete,
    MessageDeleteBulk,
    #[serde(other)]
    Other,
}

/// A gateway payload: `{"op": …, "s": …, "t": …, "d": …}`.
#[derive(Debug, Deserialize)]
struct Envelope {
    op: OpCode,
    #[serde(default)]
    t: Option<EventName>,
    #[serde(default)]
    d: Value,
}

/// A dispatch event, read from its `t` and `d`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Dispatch {
    Ready(Ready),
    Resumed,
    /// The message, or why it does not read (with its channel when that much reads).
    MessageCreate(Result<Box<Message>, Unread>),
    MessageUpdate(Box<MessageUpdate>),
    MessageDelete(MessageDelete),
    MessageDeleteBulk(MessageDeleteBulk),
    /// An event this source does not use (counted, skipped).
    Other,
}

/// A snowflake id: a decimal string on the wire, above zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(try_from = "String")]
pub(crate) struct Snowflake(pub u64);

/// A value that is not a snowflake.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{0}' is not a snowflake (a decimal id above zero)")]
pub(crate) struct NotSnowflake(String);

impl TryFrom<String> for Snowflake {
    type Error = NotSnowflake;

    fn try_from(s: String) -> Result<Snowflake, NotSnowflake> {
        match s.parse::<u64>() {
            Ok(n) if n > 0 => Ok(Snowflake(n)),
            _ => Err(NotSnowflake(s)),
        }
    }
}

/// READY's fields this source uses.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub(crate) struct Ready {
    pub session_id: String,
    pub resume_gateway_url: String,
}

/// A message's author.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub(crate) struct Author {
    pub username: String,
    #[serde(default)]
    pub global_name: Option<String>,
}

/// Which channel a message-like payload is in (read first, so a broken payload elsewhere is not ours).
#[derive(Debug, Deserialize)]
struct Routing {
    channel_id: Snowflake,
}

/// A message (MESSAGE_CREATE's `d`, an element of a channel's history); unknown fields are ignored.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub(crate) struct Message {
    pub id: Snowflake,
    pub channel_id: Snowflake,
    #[serde(default)]
    pub guild_id: Option<Snowflake>,
    pub content: String,
    pub author: Author,
    /// Set in a channel's history for a message edited since (null in MESSAGE_CREATE).
    #[serde(default)]
    pub edited_timestamp: Option<Timestamp>,
}

/// A history element's id alone (to know it is there when the rest does not read).
#[derive(Debug, Deserialize)]
struct IdOnly {
    id: Snowflake,
}

/// MESSAGE_UPDATE's `d`: the message as it is now. Without `content` or `edited_timestamp` it is not an edit of
/// the text (an embed unfurled, a pin) and changes nothing here.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub(crate) struct MessageUpdate {
    pub id: Snowflake,
    pub channel_id: Snowflake,
    #[serde(default)]
    pub guild_id: Option<Snowflake>,
    #[serde(default)]
    pub content: Option<String>,
    #[serde(default)]
    pub author: Option<Author>,
    #[serde(default)]
    pub edited_timestamp: Option<Timestamp>,
}

/// An ISO 8601 timestamp on the wire (`2026-12-01T10:00:01.500000+00:00`), as ms since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub(crate) struct Timestamp(pub u64);

/// A value that is not an ISO 8601 timestamp after 1970.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{0}' is not an ISO 8601 timestamp")]
pub(crate) struct NotTimestamp(String);

impl TryFrom<String> for Timestamp {
    type Error = NotTimestamp;

    fn try_from(s: String) -> Result<Timestamp, NotTimestamp> {
        chrono::DateTime::parse_from_rfc3339(&s)
            .ok()
            .and_then(|t| u64::try_from(t.timestamp_millis()).ok())
            .map(Timestamp)
            .ok_or(NotTimestamp(s))
    }
}

/// MESSAGE_DELETE's `d`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub(crate) struct MessageDelete {
    pub id: Snowflake,
    pub channel_id: Snowflake,
}

/// MESSAGE_DELETE_BULK's `d`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub(crate) struct MessageDeleteBulk {
    pub ids: Vec<Snowflake>,
    pub channel_id: Snowflake,
}

/// A payload that does not read: what and where (`d.author.username: missing field`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub(crate) struct BadPayload(String);

fn typed<T: serde::de::DeserializeOwned>(at: &str, v: Value) -> Result<T, BadPayload> {
    serde_path_to_error::deserialize(v).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." { at.to_string() } else { format!("{at}.{path}") };
        BadPayload(format!("{path}: {}", e.inner()))
    })
}

/// Reads one gateway text payload: `Ok(None)` for the opcodes the shard handles itself.
pub(crate) fn read_payload(text: &str) -> Result<Option<Dispatch>, BadPayload> {
    let de = &mut serde_json::Deserializer::from_str(text);
    let env: Envelope =
        serde_path_to_error::deserialize(de).map_err(|e| BadPayload(format!("{}: {}", e.path(), e.inner())))?;
    if env.op != OpCode::Dispatch {
        return Ok(None);
    }
    let Some(t) = env.t else { return Err(BadPayload("t: a dispatch without an event name".into())) };
    Ok(Some(match t {
        EventName::Ready => Dispatch::Ready(typed("d", env.d)?),
        EventName::Resumed => Dispatch::Resumed,
        EventName::MessageCreate => Dispatch::MessageCreate(read_message(env.d)),
        EventName::MessageUpdate => Dispatch::MessageUpdate(Box::new(typed("d", env.d)?)),
        EventName::MessageDelete => Dispatch::MessageDelete(typed("d", env.d)?),
        EventName::MessageDeleteBulk => Dispatch::MessageDeleteBulk(typed("d", env.d)?),
        EventName::Other => Dispatch::Other,
    }))
}

/// What one message payload means for the source.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Taken {
    /// An item from a configured channel, with the channel and message ids.
    Item(u64, u64, RawItem),
    /// Skipped with a reason (counted).
    Skip(Skip),
    /// Not from a configured channel: not ours.
    Ignore,
}

fn raw_item(id: u64, channel: u64, guild: Option<Snowflake>, content: String, author: Option<Author>) -> RawItem {
    let url = match guild {
        Some(g) => format!("https://discord.com/channels/{}/{channel}/{id}", g.0),
        None => format!("https://discord.com/channels/@me/{channel}/{id}"),
    };
    RawItem {
        external_id: id.to_string(),
        author: author.map(|a| a.global_name.unwrap_or(a.username)),
        text: content.into_bytes(),
        url: Some(url),
        time_ms: Some((id >> 22) + DISCORD_EPOCH_MS),
        language: None,
    }
}

/// A message that does not read: its channel if that much reads, and why.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Unread {
    pub channel: Option<u64>,
    pub error: BadPayload,
}

/// Reads a message (MESSAGE_CREATE's `d`, an element of a channel's history).
pub(crate) fn read_message(d: Value) -> Result<Box<Message>, Unread> {
    let channel = typed::<Routing>("d", d.clone()).ok().map(|r| r.channel_id.0);
    typed("d", d).map(Box::new).map_err(|error| Unread { channel, error })
}

/// The item a message makes, given the configured channels and the last id taken per channel. A message that
/// does not read is `malformed` unless it is known to be in another channel.
pub(crate) fn take_message(
    m: Result<Box<Message>, Unread>,
    channels: &BTreeSet<u64>,
    last: &BTreeMap<u64, u64>,
) -> Taken {
    let m = match m {
        Ok(m) => m,
        Err(u) if u.channel.is_some_and(|c| !channels.contains(&c)) => return Taken::Ignore,
        Err(u) => {
            tracing::debug!(error = %u.error, "discord: a message that does not read");
            return Taken::Skip(Skip::Malformed);
        }
    };
    let (channel, id) = (m.channel_id.0, m.id.0);
    if !channels.contains(&channel) {
        return Taken::Ignore;
    }
    if last.get(&channel).is_some_and(|&l| id <= l) {
        return Taken::Skip(Skip::Duplicate);
    }
    let m = *m;
    Taken::Item(channel, id, raw_item(id, channel, m.guild_id, m.content, Some(m.author)))
}

/// The change a MESSAGE_UPDATE makes: an edit of a configured channel's message text, else nothing.
pub(crate) fn take_update(u: MessageUpdate, channels: &BTreeSet<u64>) -> Option<Change> {
    if !channels.contains(&u.channel_id.0) {
        return None;
    }
    let (Some(content), Some(Timestamp(edited_ms))) = (u.content, u.edited_timestamp) else { return None };
    let item = raw_item(u.id.0, u.channel_id.0, u.guild_id, content, u.author);
    Some(Change::Edit { item, edited_ms })
}

/// One channel's history as read again after a new session: the ids there (with the message when it reads),
/// and the id from which on the pages read cover everything (0: back to the channel's first message).
#[derive(Debug, Default)]
pub(crate) struct Reread {
    pub present: BTreeMap<u64, Option<Box<Message>>>,
    pub covered_from: u64,
}

/// What reading `channel`'s history again says about the messages remembered in `known` (id → the edit time
/// known, 0 for none), oldest first: one in the covered range and no longer there was deleted; one whose
/// `edited_timestamp` is later than the known edit time was edited (its text as it reads now). A remembered
/// message outside the covered range, or there but not readable, says nothing.
pub(crate) fn recheck_changes(channel: u64, known: &BTreeMap<u64, u64>, reread: &Reread) -> Vec<Change> {
    let mut out = Vec::new();
    for (&id, &known_edit) in known.range(reread.covered_from..) {
        match reread.present.get(&id) {
            None => out.push(Change::Delete { external_id: id.to_string() }),
            Some(Some(m)) => {
                let Some(Timestamp(edited_ms)) = m.edited_timestamp else { continue };
                if edited_ms > known_edit && m.channel_id.0 == channel {
                    let m = (**m).clone();
                    let item = raw_item(id, channel, m.guild_id, m.content, Some(m.author));
                    out.push(Change::Edit { item, edited_ms });
                }
            }
            Some(None) => {}
        }
    }
    out
}

/// What a close code from the gateway means: `Some(message)` when the source must stop (retrying cannot help).
pub(crate) fn fatal_close(code: u16, token_env: &str) -> Option<String> {
    Some(match code {
        4004 => format!("the gateway refused the bot token in {token_env} (close 4004 authentication failed)"),
        4010 => "the gateway refused the shard (close 4010 invalid shard)".into(),
        4011 => "the bot is in too many guilds for its shard count (close 4011 sharding required): raise `shards` \
                 or leave it unset for Discord's recommended count"
            .into(),
        4012 => "the gateway refused API version 10 (close 4012 invalid API version)".into(),
        4013 => "the gateway refused the intents (close 4013 invalid intents)".into(),
        4014 => "the gateway refused the MESSAGE_CONTENT intent (close 4014 disallowed intents): enable \"Message \
                 Content Intent\" for the bot in the Discord developer portal"
            .into(),
        _ => return None,
    })
}

/// A REST error body (`{"message": …, "code": …, "retry_after": …}`); read leniently (any field may be missing).
#[derive(Debug, Default, Deserialize)]
struct ErrorBody {
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    retry_after: Option<f64>,
}

/// How long a REST 429 asks to wait: the longer of the `Retry-After` header (seconds) and the body's
/// `retry_after` (seconds, fractional), at least 100 ms.
pub(crate) fn retry_after(header: Option<&str>, body_retry_after: Option<f64>) -> Duration {
    let h = header.and_then(|h| h.trim().parse::<f64>().ok()).unwrap_or(0.0);
    let b = body_retry_after.unwrap_or(0.0);
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

/// `GET /gateway/bot`'s `session_start_limit`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub(crate) struct SessionStartLimit {
    pub total: u32,
    pub remaining: u32,
    /// Milliseconds until `remaining` resets.
    pub reset_after: u64,
    /// Shards that may identify in the same 5 s (a shard's bucket is its id modulo this).
    pub max_concurrency: u16,
}

/// What `GET /gateway/bot` says.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub(crate) struct GatewayBot {
    pub url: String,
    /// Discord's recommended shard count.
    pub shards: u32,
    pub session_start_limit: SessionStartLimit,
}

pub(crate) fn parse_gateway_bot(body: &str) -> Result<GatewayBot, BadPayload> {
    let de = &mut serde_json::Deserializer::from_str(body);
    let mut gb: GatewayBot =
        serde_path_to_error::deserialize(de).map_err(|e| BadPayload(format!("{}: {}", e.path(), e.inner())))?;
    gb.url = gb.url.trim_end_matches('/').to_string();
    Ok(gb)
}

/// Counts a test or an operator can read while the source runs.
#[derive(Debug, Default)]
pub struct DiscordStats {
    /// Messages at or below a channel's last taken id (a replay after RESUME, a backfilled one arriving live).
    pub duplicates: AtomicU64,
    /// Dispatch events this source does not use.
    pub unknown_events: AtomicU64,
    /// Payloads that did not read (an unknown opcode, a field of the wrong type).
    pub bad_payloads: AtomicU64,
    /// Edits and deletions taken.
    pub changes: AtomicU64,
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
    /// One per shard, by shard id (empty before the first connect).
    shards: Vec<Shard>,
    /// The cursor as far as events were taken (ahead of the saved one while a batch is built).
    state: DiscordCursor,
    /// The cursor last returned (to see whether the runner saved it).
    returned: Option<DiscordCursor>,
    pending: Vec<Result<RawItem, Skip>>,
    changes: Vec<Change>,
    /// Whether to fetch the channels over REST before reading on (a new session began: messages may be missing).
    backfill: bool,
    /// Whether to read the remembered messages again over REST (a new session began: edits and deletions made
    /// meanwhile were not dispatched to this source).
    recheck: bool,
    last_close: Option<u16>,
    stats: Arc<DiscordStats>,
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
            shards: Vec::new(),
            state: DiscordCursor::default(),
            returned: None,
            pending: Vec::new(),
            changes: Vec::new(),
            backfill: false,
            recheck: false,
            last_close: None,
            stats: Arc::default(),
        })
    }

    /// The source's counters (shared: read them while it runs).
    pub fn stats(&self) -> Arc<DiscordStats> {
        self.stats.clone()
    }

    /// A REST GET (`/gateway/bot`, channel messages): the body of a 2xx answer. Borrows nothing from `self`
    /// across the await (the shard is not `Sync`).
    fn get_text(
        &self,
        path_and_query: &str,
    ) -> impl std::future::Future<Output = Result<String, RestError>> + Send + 'static {
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
            let body = res.text().await.unwrap_or_default();
            if status.is_success() {
                return Ok(body);
            }
            let eb: ErrorBody = serde_json::from_str(&body).unwrap_or_default();
            let error = match status.as_u16() {
                429 => SourceError::RateLimited {
                    retry_after: retry_after(header.as_deref(), eb.retry_after),
                    message: format!("GET {url}: 429 {}", eb.message.as_deref().unwrap_or("rate limited")),
                },
                401 | 403 => SourceError::Fatal(format!(
                    "GET {url}: {status}: the bot token in {} was refused or lacks access",
                    token_env
                )),
                s if s >= 500 => SourceError::Transient(format!("GET {url}: {status}")),
                _ => SourceError::Transient(format!("GET {url}: {status} {}", eb.message.unwrap_or_default())),
            };
            Err(RestError { status: Some(status.as_u16()), error })
        }
    }

    /// Opens the shards: the gateway URL, the recommended shard count and the identify budget from
    /// `GET /gateway/bot`; each shard resumes its saved session when the shard count is the one saved.
    async fn connect(&mut self) -> Result<(), SourceError> {
        let body = self.get_text("/gateway/bot").await.map_err(|e| e.error)?;
        let gb = parse_gateway_bot(&body).map_err(|e| SourceError::Transient(format!("GET /gateway/bot: {e}")))?;
        let n = self.cfg.shards.unwrap_or(gb.shards).max(1);
        // The shards this process runs (a `shard_ids` subset is validated against `shards`, which it requires).
        let ids: Vec<u32> = match &self.cfg.shard_ids {
            Some(set) => set.iter().copied().filter(|&i| i < n).collect(),
            None => (0..n).collect(),
        };
        if self.state.shards != n {
            // Sessions belong to a shard count: under another one they cannot be resumed (new sessions, backfill).
            self.state.sessions.clear();
            self.state.shards = n;
        }
        // A session of a shard this process no longer runs is another process's to resume.
        self.state.sessions.retain(|i, _| ids.contains(i));
        let identifies = ids.iter().filter(|i| !self.state.sessions.contains_key(i)).count() as u32;
        let limit = &gb.session_start_limit;
        if identifies > limit.remaining {
            return Err(SourceError::RateLimited {
                retry_after: Duration::from_millis(limit.reset_after).max(Duration::from_secs(1)),
                message: format!(
                    "{identifies} gateway session starts needed, {} left today (session_start_limit)",
                    limit.remaining
                ),
            });
        }
        // rustls needs one process-wide crypto provider when several are compiled in; the first install wins.
        let _ = rustls::crypto::ring::default_provider().install_default();
        // One identify queue for all shards: Discord's start-up rule, at most `max_concurrency` identifies per 5 s,
        // a shard waiting for its bucket (its id modulo `max_concurrency`).
        let queue = InMemoryQueue::new(
            limit.max_concurrency.max(1),
            limit.remaining,
            Duration::from_millis(limit.reset_after),
            limit.total,
        );
        self.shards = ids
            .into_iter()
            .map(|i| {
                let mut b = ConfigBuilder::new(
                    self.token.expose().to_string(),
                    Intents::GUILD_MESSAGES | Intents::MESSAGE_CONTENT,
                )
                .proxy_url(gb.url.clone())
                .queue(queue.clone());
                if let Some(s) = self.state.sessions.get(&i) {
                    b = b
                        .session(Session::new(s.sequence, s.session_id.clone()))
                        .resume_url(s.resume_url.clone().unwrap_or_else(|| gb.url.clone()));
                }
                Shard::with_config(ShardId::new(i, n), b.build())
            })
            .collect();
        Ok(())
    }

    /// After a new session: reads each channel's history again over the messages remembered in the cursor
    /// (`GET /channels/{id}/messages?before=<newest remembered + 1>&limit=100`, newest first, paged back until the
    /// oldest remembered one is covered, at most `recheck_max / 100 + 1` pages) and hands in the edits and
    /// deletions found ([`recheck_changes`]). Nothing is taken before every channel was read, so a failure (a 429)
    /// loses nothing: the next call reads again. A channel that answers 403/404 is left out (nothing is taken as
    /// deleted).
    async fn run_recheck(&mut self) -> Result<(), SourceError> {
        let channels: Vec<(u64, BTreeMap<u64, u64>)> = self
            .cfg
            .channels
            .iter()
            .filter_map(|c| self.state.recent.get(c).filter(|k| !k.is_empty()).map(|k| (*c, k.clone())))
            .collect();
        let max_pages = self.cfg.recheck_max.div_ceil(PAGE) + 1;
        let mut found: Vec<(u64, Change)> = Vec::new();
        for (channel, known) in channels {
            let (Some(&oldest), Some(&newest)) = (known.keys().next(), known.keys().next_back()) else { continue };
            let mut reread = Reread { present: BTreeMap::new(), covered_from: u64::MAX };
            let mut before = newest.saturating_add(1);
            let mut gone = false;
            for _ in 0..max_pages {
                let page =
                    match self.get_text(&format!("/channels/{channel}/messages?before={before}&limit={PAGE}")).await {
                        Ok(p) => p,
                        Err(e) if channel_gone(e.status) => {
                            tracing::warn!(source = %self.name, channel, error = %e.error,
                            "discord: channel history not readable; its edits and deletions not re-checked");
                            gone = true;
                            break;
                        }
                        Err(e) => return Err(e.error),
                    };
                let page: Vec<Value> = serde_json::from_str(&page).map_err(|e| {
                    SourceError::Transient(format!("channel {channel}: messages: not a JSON array: {e}"))
                })?;
                let n = page.len();
                let mut low = before;
                for v in page {
                    // One that does not read is still there (not deleted) if its id reads.
                    let id = typed::<IdOnly>("d", v.clone()).ok().map(|i| i.id.0);
                    let m = read_message(v).ok();
                    if let Some(id) = m.as_ref().map(|m| m.id.0).or(id) {
                        low = low.min(id);
                        reread.present.insert(id, m);
                    }
                }
                if n < PAGE {
                    reread.covered_from = 0;
                    break;
                }
                reread.covered_from = low;
                if low <= oldest || low >= before {
                    break;
                }
                before = low;
            }
            if gone {
                continue;
            }
            let changes = recheck_changes(channel, &known, &reread);
            let edits = changes.iter().filter(|c| matches!(c, Change::Edit { .. })).count();
            tracing::info!(source = %self.name, channel, remembered = known.len(), read = reread.present.len(),
                edits, deletions = changes.len() - edits, "discord: re-checked over REST after a new session");
            found.extend(changes.into_iter().map(|c| (channel, c)));
        }
        for (channel, c) in found {
            self.note_change(channel, &c);
            self.changes.push(c);
        }
        self.recheck = false;
        Ok(())
    }

    /// Keeps the remembered messages of `channel` in step with a change taken (and counts it).
    fn note_change(&mut self, channel: u64, c: &Change) {
        self.stats.changes.fetch_add(1, Ordering::Relaxed);
        let Some(r) = self.state.recent.get_mut(&channel) else { return };
        match c {
            Change::Edit { item, edited_ms } => {
                if let Some(e) = item.external_id.parse::<u64>().ok().and_then(|id| r.get_mut(&id)) {
                    *e = (*e).max(*edited_ms);
                }
            }
            Change::Delete { external_id } => {
                if let Ok(id) = external_id.parse::<u64>() {
                    r.remove(&id);
                }
            }
        }
    }

    /// Remembers message `id` of `channel` (edited at `edited_ms`, 0 for never) for the re-check, the last
    /// `recheck_max` per channel.
    fn remember(&mut self, channel: u64, id: u64, edited_ms: u64) {
        if self.cfg.recheck_max == 0 {
            return;
        }
        let r = self.state.recent.entry(channel).or_default();
        r.insert(id, edited_ms);
        while r.len() > self.cfg.recheck_max {
            r.pop_first();
        }
    }

    /// Fetches what each configured channel has after its last taken id, then takes it all oldest first (by
    /// snowflake, across channels). Nothing is taken before every page arrived, so a failure (a 429) loses nothing:
    /// the next call fetches again from the same ids.
    async fn run_backfill(&mut self) -> Result<(), SourceError> {
        let channels: Vec<(u64, u64)> =
            self.cfg.channels.iter().filter_map(|c| self.state.last_message.get(c).map(|&l| (*c, l))).collect();
        let mut all: Vec<(u64, Result<Box<Message>, Unread>)> = Vec::new();
        for (channel, mut after) in channels {
            let mut fetched = 0usize;
            while fetched < self.cfg.backfill_max {
                let page =
                    match self.get_text(&format!("/channels/{channel}/messages?after={after}&limit={PAGE}")).await {
                        Ok(p) => p,
                        // A deleted channel, or one the bot can no longer read, must not hold up the others.
                        Err(e) if channel_gone(e.status) => {
                            tracing::warn!(source = %self.name, channel, error = %e.error,
                            "discord: channel history not readable; not backfilled");
                            break;
                        }
                        Err(e) => return Err(e.error),
                    };
                // Each message is read on its own: one that does not read is counted, not the page's end.
                let page: Vec<Value> = serde_json::from_str(&page).map_err(|e| {
                    SourceError::Transient(format!("channel {channel}: messages: not a JSON array: {e}"))
                })?;
                let n = page.len();
                for m in page {
                    let m = read_message(m);
                    let id = m.as_ref().map(|m| m.id.0).unwrap_or(0);
                    after = after.max(id);
                    all.push((id, m));
                }
                fetched += n;
                if n < PAGE {
                    break;
                }
            }
            tracing::info!(source = %self.name, channel, fetched, "discord: backfill over REST after a new session");
        }
        all.sort_by_key(|(id, _)| *id);
        for (_, m) in all {
            self.take(m);
        }
        self.backfill = false;
        Ok(())
    }

    fn take(&mut self, m: Result<Box<Message>, Unread>) {
        let edited_ms = m.as_ref().ok().and_then(|m| m.edited_timestamp).map_or(0, |t| t.0);
        match take_message(m, &self.cfg.channels, &self.state.last_message) {
            Taken::Item(channel, id, item) => {
                self.state.last_message.insert(channel, id);
                self.remember(channel, id, edited_ms);
                self.pending.push(Ok(item));
            }
            Taken::Skip(s) => {
                if s == Skip::Duplicate {
                    self.stats.duplicates.fetch_add(1, Ordering::Relaxed);
                }
                self.pending.push(Err(s))
            }
            Taken::Ignore => {}
        }
    }

    fn sync_sessions(&mut self) {
        for shard in &self.shards {
            let i = shard.id().number();
            if let Some(s) = shard.session() {
                let e = self.state.sessions.entry(i).or_default();
                e.session_id = s.id().to_string();
                e.sequence = s.sequence();
                if let Some(u) = shard.resume_url() {
                    e.resume_url = Some(u.to_string());
                }
            }
        }
    }

    /// One text payload from a shard: READY may call for a backfill, MESSAGE_CREATE may give an item,
    /// MESSAGE_UPDATE an edit, MESSAGE_DELETE(_BULK) deletions.
    fn on_text(&mut self, text: &str) {
        self.sync_sessions();
        let d = match read_payload(text) {
            Ok(Some(d)) => d,
            Ok(None) => return,
            Err(e) => {
                self.stats.bad_payloads.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(source = %self.name, error = %e, "discord: a gateway payload that does not read was skipped");
                return;
            }
        };
        match d {
            // A new session: whatever was posted since the last saved message may be missing (backfill), and
            // edits and deletions made meanwhile were not dispatched to this source (re-check).
            Dispatch::Ready(_) => {
                let chans = &self.cfg.channels;
                if chans.iter().any(|c| self.state.last_message.contains_key(c)) {
                    self.backfill = true;
                }
                if chans.iter().any(|c| self.state.recent.get(c).is_some_and(|r| !r.is_empty())) {
                    self.recheck = true;
                }
            }
            Dispatch::Resumed => {}
            Dispatch::MessageCreate(m) => self.take(m),
            Dispatch::MessageUpdate(u) => {
                let channel = u.channel_id.0;
                if let Some(c) = take_update(*u, &self.cfg.channels) {
                    self.note_change(channel, &c);
                    self.changes.push(c);
                }
            }
            Dispatch::MessageDelete(d) => {
                if self.cfg.channels.contains(&d.channel_id.0) {
                    let c = Change::Delete { external_id: d.id.0.to_string() };
                    self.note_change(d.channel_id.0, &c);
                    self.changes.push(c);
                }
            }
            Dispatch::MessageDeleteBulk(d) => {
                if self.cfg.channels.contains(&d.channel_id.0) {
                    for id in &d.ids {
                        let c = Change::Delete { external_id: id.0.to_string() };
                        self.note_change(d.channel_id.0, &c);
                        self.changes.push(c);
                    }
                }
            }
            Dispatch::Other => {
                self.stats.unknown_events.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn has_pending(&self) -> bool {
        !self.pending.is_empty() || !self.changes.is_empty()
    }

    fn batch(&mut self) -> Batch<DiscordCursor> {
        self.sync_sessions();
        let items = std::mem::take(&mut self.pending);
        let changes = std::mem::take(&mut self.changes);
        self.returned = Some(self.state.clone());
        Batch { items, changes, cursor: self.state.clone(), wait: Duration::ZERO }
    }

    /// The next event of any shard, or `None` after `wait`.
    async fn next_event(&mut self, wait: Duration) -> Option<(usize, Option<Result<WsMessage, ReceiveMessageError>>)> {
        let polls = self.shards.iter_mut().map(|s| {
            let id = s.id().number() as usize;
            Box::pin(async move { (id, futures::StreamExt::next(s).await) })
        });
        tokio::time::timeout(wait, futures::future::select_all(polls)).await.ok().map(|(ev, _, _)| ev)
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
            None if self.shards.is_empty() => self.state = cursor.clone(),
            // The runner did not save the last batch: take its channels' positions back and fetch the rest over
            // REST (the live session cannot be rewound).
            Some(r) if r != cursor && !self.has_pending() => {
                self.state.last_message = cursor.last_message.clone();
                self.state.recent = cursor.recent.clone();
                self.backfill = true;
                // Its edits and deletions are lost with it: read the remembered messages again.
                self.recheck = self.state.recent.values().any(|r| !r.is_empty());
            }
            _ => {}
        }
        if self.shards.is_empty() {
            self.connect().await?;
        }
        if self.recheck {
            self.run_recheck().await?;
        }
        if self.backfill {
            self.run_backfill().await?;
        }
        let mut quiet_until = tokio::time::Instant::now() + QUIET;
        loop {
            if self.pending.len() + self.changes.len() >= MAX_BATCH {
                return Ok(self.batch());
            }
            let wait = if self.has_pending() {
                LINGER
            } else {
                quiet_until.saturating_duration_since(tokio::time::Instant::now())
            };
            let Some((shard, ev)) = self.next_event(wait).await else {
                let moved = self.returned.as_ref() != Some(&self.state);
                if self.has_pending() || moved {
                    return Ok(self.batch());
                }
                // Nothing new: keep waiting (a pushing source waits inside `next`).
                quiet_until = tokio::time::Instant::now() + QUIET;
                continue;
            };
            match ev {
                Some(Ok(WsMessage::Text(text))) => {
                    self.on_text(&text);
                    if self.recheck {
                        self.run_recheck().await?;
                    }
                    if self.backfill {
                        self.run_backfill().await?;
                    }
                }
                Some(Ok(WsMessage::Close(frame))) => {
                    self.last_close = frame.as_ref().map(|f| f.code);
                    tracing::info!(source = %self.name, shard, code = ?self.last_close, "discord: gateway closed the connection");
                }
                Some(Err(e)) => {
                    // The shard reconnects by itself on the next poll (resuming when it can).
                    let msg = format!("gateway shard {shard}: {e}");
                    if self.has_pending() {
                        return Ok(self.batch());
                    }
                    return Err(SourceError::Transient(msg));
                }
                None => {
                    // Closed for good: a fatal close code.
                    self.shards.clear();
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

    fn take(d: Value, chans: &BTreeSet<u64>, last: &BTreeMap<u64, u64>) -> Taken {
        take_message(read_message(d), chans, last)
    }

    #[test]
    fn a_message_in_a_configured_channel_is_an_item() {
        let chans = BTreeSet::from([7u64]);
        let id: u64 = (1_000u64 << 22) | 5;
        let t = take(msg("7", &id.to_string(), json!("gm $BTC")), &chans, &BTreeMap::new());
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
        assert_eq!(take(msg("8", "200", json!("x")), &chans, &last), Taken::Ignore);
        assert_eq!(take(msg("8", "200", json!(null)), &chans, &last), Taken::Ignore, "broken, but not ours");
        assert_eq!(take(msg("7", "100", json!("x")), &chans, &last), Taken::Skip(Skip::Duplicate));
        assert_eq!(take(msg("7", "99", json!("x")), &chans, &last), Taken::Skip(Skip::Duplicate));
        assert!(matches!(take(msg("7", "101", json!("x")), &chans, &last), Taken::Item(7, 101, _)));
        assert_eq!(take(msg("7", "101", json!(null)), &chans, &last), Taken::Skip(Skip::Malformed));
        assert_eq!(take(msg("7", "abc", json!("x")), &chans, &last), Taken::Skip(Skip::Malformed));
        assert_eq!(take(json!({"id": "5"}), &chans, &last), Taken::Skip(Skip::Malformed));
        let Err(u) = read_message(msg("7", "101", json!(7))) else { panic!() };
        assert!(u.error.0.starts_with("d.content: invalid type"), "{}", u.error);
        let Err(u) = read_message(msg("7", "0", json!("x"))) else { panic!() };
        assert!(u.error.0.starts_with("d.id: '0' is not a snowflake"), "{}", u.error);
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
        assert_eq!(retry_after(Some("2"), Some(0.5)), Duration::from_secs(2));
        assert_eq!(retry_after(None, Some(1.5)), Duration::from_millis(1500));
        assert_eq!(retry_after(Some("junk"), None), Duration::from_millis(100));
        assert_eq!(retry_after(None, Some(1e12)), Duration::from_secs(3600));
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
        let v = json!({"url": "wss://gateway.discord.gg/", "shards": 3,
            "session_start_limit": {"total": 1000, "remaining": 0, "reset_after": 1500, "max_concurrency": 16}});
        assert_eq!(
            parse_gateway_bot(&v.to_string()),
            Ok(GatewayBot {
                url: "wss://gateway.discord.gg".into(),
                shards: 3,
                session_start_limit: SessionStartLimit {
                    total: 1000,
                    remaining: 0,
                    reset_after: 1500,
                    max_concurrency: 16
                },
            })
        );
        let e = parse_gateway_bot(&json!({"url": "wss://x", "shards": 1, "session_start_limit": {}}).to_string());
        assert!(e.unwrap_err().0.starts_with("session_start_limit: missing field `total`"));
        let bad =
            json!({"url": "wss://x", "shards": "two", "session_start_limit": v["session_start_limit"]}).to_string();
        assert!(parse_gateway_bot(&bad).unwrap_err().0.starts_with("shards: invalid type"));
    }

    #[test]
    fn gateway_payloads_are_typed_and_an_unknown_event_or_opcode_is_not_a_crash() {
        let p = |v: Value| read_payload(&v.to_string());
        assert_eq!(p(json!({"op": 11})), Ok(None));
        assert_eq!(p(json!({"op": 10, "d": {"heartbeat_interval": 41250}})), Ok(None));
        assert_eq!(p(json!({"op": 0, "t": "GUILD_CREATE", "s": 2, "d": {"id": "1"}})), Ok(Some(Dispatch::Other)));
        assert_eq!(p(json!({"op": 0, "t": "RESUMED", "s": 3, "d": {}})), Ok(Some(Dispatch::Resumed)));
        let r = p(json!({"op": 0, "t": "READY", "s": 1, "d": {"session_id": "s1", "resume_gateway_url": "wss://r",
            "v": 10, "shard": [0, 2]}}));
        assert_eq!(
            r,
            Ok(Some(Dispatch::Ready(Ready { session_id: "s1".into(), resume_gateway_url: "wss://r".into() })))
        );
        let e = p(json!({"op": 0, "t": "READY", "s": 1, "d": {"session_id": 5}})).unwrap_err();
        assert!(e.0.starts_with("d.session_id: invalid type"), "{e}");
        let e = p(json!({"op": 5, "d": null})).unwrap_err();
        assert!(e.0.contains("unknown gateway opcode 5"), "{e}");
        let e = p(json!({"op": 0, "s": 1, "d": {}})).unwrap_err();
        assert!(e.0.starts_with("t:"), "{e}");
        let e = p(json!({"op": 0, "t": "MESSAGE_DELETE_BULK", "s": 1, "d": {"ids": ["1", "x"], "channel_id": "7"}}))
            .unwrap_err();
        assert!(e.0.starts_with("d.ids[1]: 'x' is not a snowflake"), "{e}");
        let Ok(Some(Dispatch::MessageDeleteBulk(b))) =
            p(json!({"op": 0, "t": "MESSAGE_DELETE_BULK", "s": 1, "d": {"ids": ["1", "2"], "channel_id": "7"}}))
        else {
            panic!()
        };
        assert_eq!((b.ids, b.channel_id), (vec![Snowflake(1), Snowflake(2)], Snowflake(7)));
    }

    #[test]
    fn an_update_with_new_text_is_an_edit_and_others_are_not() {
        let chans = BTreeSet::from([7u64]);
        let id: u64 = (2_000u64 << 22) | 1;
        let up = |channel: &str, content: Value, edited: Value| {
            let mut d = msg(channel, &id.to_string(), content);
            d["edited_timestamp"] = edited;
            let Ok(Some(Dispatch::MessageUpdate(u))) =
                read_payload(&json!({"op": 0, "t": "MESSAGE_UPDATE", "s": 4, "d": d}).to_string())
            else {
                panic!()
            };
            take_update(*u, &chans)
        };
        let Some(Change::Edit { item, edited_ms }) = up("7", json!("now $ETH"), json!("2026-12-01T10:00:01.500+00:00"))
        else {
            panic!()
        };
        assert_eq!((item.external_id, item.text), (id.to_string(), b"now $ETH".to_vec()));
        assert_eq!(edited_ms, 1_796_119_201_500);
        assert_eq!(item.time_ms, Some(DISCORD_EPOCH_MS + 2_000), "the post time is the message's, not the edit's");
        assert_eq!(up("8", json!("x"), json!("2026-12-01T10:00:01+00:00")), None, "another channel");
        assert_eq!(up("7", json!("x"), json!(null)), None, "not an edit of the text (an embed, a pin)");
        assert_eq!(up("7", json!(null), json!("2026-12-01T10:00:01+00:00")), None);
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
        let e = DiscordConfig::parse(0, &t("name = \"d\"\nkind = \"discord\"\nchannels = [\"1\"]\nshards = 0"))
            .unwrap_err();
        assert_eq!(e.0, "source[0].shards");
        let two =
            DiscordConfig::parse(0, &t("name = \"d\"\nkind = \"discord\"\nchannels = [\"1\"]\nshards = 2")).unwrap();
        assert_eq!((two.shards, ok.shards), (Some(2), None));
        assert_eq!((two.shard_ids, ok.recheck_max), (None, 100), "all shards; 100 remembered per channel");
        let base = "name = \"d\"\nkind = \"discord\"\nchannels = [\"1\"]\n";
        let split = DiscordConfig::parse(0, &t(&format!("{base}shards = 4\nshard_ids = [3, 1]"))).unwrap();
        assert_eq!(split.shard_ids, Some(BTreeSet::from([1, 3])));
        for (extra, field, says) in [
            ("shard_ids = [0]", "source[0].shard_ids", "needs `shards`"),
            ("shards = 2\nshard_ids = []", "source[0].shard_ids", "at least one"),
            ("shards = 2\nshard_ids = [0, 2]", "source[0].shard_ids[1]", "shard 2 does not exist with shards = 2"),
            ("shards = 2\nshard_ids = [1, 1]", "source[0].shard_ids[1]", "listed twice"),
            ("recheck_max = 1001", "source[0].recheck_max", "at most 1000"),
        ] {
            let e = DiscordConfig::parse(0, &t(&format!("{base}{extra}"))).unwrap_err();
            assert_eq!(e.0, field, "{extra}: {e:?}");
            assert!(e.1.contains(says), "{extra}: {e:?}");
        }
        let off = DiscordConfig::parse(0, &t(&format!("{base}recheck_max = 0"))).unwrap();
        assert_eq!(off.recheck_max, 0);
    }

    #[test]
    fn a_reread_history_gives_the_edits_and_deletions_of_the_remembered_messages() {
        let m = |id: u64, content: &str, edited: Option<&str>| {
            let mut d = msg("7", &id.to_string(), json!(content));
            d["edited_timestamp"] = json!(edited);
            Some(read_message(d).unwrap())
        };
        // Remembered: 10 (never edited), 11 (edited at 1_796_119_201_000), 12, 13, 14; 9 is before the window.
        let known = BTreeMap::from([(10, 0), (11, 1_796_119_201_000), (12, 0), (13, 0), (14, 0)]);
        let reread = Reread {
            present: BTreeMap::from([
                (11, m(11, "same edit", Some("2026-12-01T10:00:01+00:00"))),
                (12, m(12, "edited since", Some("2026-12-01T10:00:05+00:00"))),
                (14, None), // there, but does not read: neither deleted nor edited
                (15, m(15, "not remembered", Some("2026-12-01T10:00:05+00:00"))),
            ]),
            covered_from: 11,
        };
        let c = recheck_changes(7, &known, &reread);
        assert_eq!(c.len(), 2, "{c:?}");
        let Change::Edit { item, edited_ms } = &c[0] else { panic!("{c:?}") };
        assert_eq!((item.external_id.as_str(), item.text.as_slice()), ("12", b"edited since".as_slice()));
        assert_eq!(*edited_ms, 1_796_119_205_000);
        assert_eq!(c[1], Change::Delete { external_id: "13".into() });
        // 10 is below the range read: not taken as deleted. From the channel's start, it is.
        let all = Reread { covered_from: 0, ..reread };
        let c = recheck_changes(7, &known, &all);
        assert_eq!(c[0], Change::Delete { external_id: "10".into() });
        assert_eq!(c.len(), 3);
        // Nothing read (a full page above the window): nothing said.
        assert!(recheck_changes(7, &known, &Reread { present: BTreeMap::new(), covered_from: u64::MAX }).is_empty());
    }

    #[test]
    fn the_cursor_round_trips_as_json() {
        let c = DiscordCursor {
            shards: 2,
            sessions: BTreeMap::from([(
                1,
                ShardSession { session_id: "s".into(), sequence: 9, resume_url: Some("ws://x".into()) },
            )]),
            last_message: BTreeMap::from([(7, 100), (8, 5)]),
            recent: BTreeMap::from([(7, BTreeMap::from([(99, 0), (100, 1_796_119_201_000)]))]),
        };
        let j = serde_json::to_string(&c).unwrap();
        assert_eq!(serde_json::from_str::<DiscordCursor>(&j).unwrap(), c);
        assert_eq!(serde_json::from_str::<DiscordCursor>("{}").unwrap(), DiscordCursor::default());
        // A cursor saved before shards (one session at the top level): the channels' positions are kept, the
        // session is not resumed (a new one backfills from those positions: nothing lost).
        let old = r#"{"session_id":"s","sequence":9,"resume_url":"ws://x","last_message":{"7":100}}"#;
        let c = serde_json::from_str::<DiscordCursor>(old).unwrap();
        assert_eq!((c.shards, c.sessions.len(), c.last_message), (0, 0, BTreeMap::from([(7, 100)])));
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
