//! Telegram channels and groups through the Bot API (teloxide, the client the project's Telegram bot uses):
//! `getUpdates` long polling for `channel_post` (channels the bot is an admin of) and `message` (groups it is in;
//! to see every message, not only commands, the bot needs privacy mode off or admin rights). Only the configured chats
//! become items; other chats are ignored.
//!
//! The cursor is the update offset ([`TelegramCursor`]): `getUpdates(offset)` confirms every update below it, and the
//! Bot API keeps unconfirmed updates (for 24 hours), so a restart from the saved offset gets what came after the
//! last saved batch and nothing before it. Use a bot token of its own for the monitor: two processes polling one
//! token get 409 Conflict (counted as a transient failure with that advice).
//!
//! Bad items: an update teloxide cannot read is skipped as `malformed`; a message without text or caption (a
//! sticker, a photo alone) as `empty`; text size and the rest are the pipeline's.

use std::collections::BTreeSet;
use std::time::Duration;

use kronos_common::Secret;
use serde::{Deserialize, Serialize};
use teloxide::payloads::GetUpdatesSetters;
use teloxide::requests::Requester;
use teloxide::types::{AllowedUpdate, Message, UpdateKind};
use teloxide::{ApiError, Bot, RequestError};

use crate::item::{RawItem, Skip};
use crate::source::{Batch, Source, SourceError};

/// A `[[source]]` with `kind = "telegram"`.
#[derive(Debug, Clone, PartialEq)]
pub struct TelegramConfig {
    /// The variable holding the bot token (`KRONOS_SOCIAL_TELEGRAM_TOKEN`).
    pub token_env: String,
    /// The Bot API base URL (`https://api.telegram.org`).
    pub api_url: url::Url,
    /// Chat ids (channels and groups are negative, `-100…`) to take posts from.
    pub chats: BTreeSet<i64>,
    /// How long one `getUpdates` may wait for updates (long polling), seconds.
    pub poll_timeout_s: u32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTelegram {
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
    api_url: Option<String>,
    chats: Vec<i64>,
    poll_timeout_s: Option<u32>,
}

impl TelegramConfig {
    /// Reads the Telegram fields of `source[i]`; errors are `(field, message)`.
    pub fn parse(i: usize, t: &toml::Table) -> Result<TelegramConfig, (String, String)> {
        let at = |f: &str| format!("source[{i}].{f}");
        let r: RawTelegram = toml::Value::Table(t.clone())
            .try_into()
            .map_err(|e: toml::de::Error| (format!("source[{i}]"), e.message().to_string()))?;
        let token_env = crate::config::env_var_name(
            at("token_env"),
            r.token_env.as_deref().unwrap_or("KRONOS_SOCIAL_TELEGRAM_TOKEN"),
            "; the token itself goes in the environment",
        )?;
        if r.chats.is_empty() {
            return Err((at("chats"), "list at least one chat id".into()));
        }
        if let Some(j) = r.chats.iter().position(|&c| c == 0) {
            return Err((format!("source[{i}].chats[{j}]"), "0 is not a chat id".into()));
        }
        let api = r.api_url.unwrap_or_else(|| "https://api.telegram.org".into());
        let api_url = url::Url::parse(&api).map_err(|e| (at("api_url"), format!("'{api}' is not a URL: {e}")))?;
        if !matches!(api_url.scheme(), "http" | "https") {
            return Err((at("api_url"), format!("'{}' must be http or https", api_url.scheme())));
        }
        let poll_timeout_s = r.poll_timeout_s.unwrap_or(10);
        if !(1..=15).contains(&poll_timeout_s) {
            return Err((
                at("poll_timeout_s"),
                format!("{poll_timeout_s} must be 1 to 15 (the HTTP client gives up at 17 s)"),
            ));
        }
        Ok(TelegramConfig { token_env, api_url, chats: r.chats.into_iter().collect(), poll_timeout_s })
    }
}

/// The next update offset to ask for (one above the last update taken).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct TelegramCursor {
    pub offset: i64,
}

/// What one message means for the source.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Taken {
    Item(RawItem),
    Skip(Skip),
    Ignore,
}

/// The item a channel post or group message makes, given the configured chats.
pub(crate) fn take_message(m: &Message, chats: &BTreeSet<i64>) -> Taken {
    let chat = m.chat.id.0;
    if !chats.contains(&chat) {
        return Taken::Ignore;
    }
    let Some(text) = m.text().or_else(|| m.caption()) else { return Taken::Skip(Skip::Empty) };
    let author = match &m.from {
        Some(u) => Some(u.username.clone().unwrap_or_else(|| u.full_name())),
        None => m
            .author_signature()
            .map(str::to_string)
            .or_else(|| m.sender_chat.as_ref().and_then(|c| c.title().map(str::to_string)))
            .or_else(|| m.chat.title().map(str::to_string)),
    };
    let url = match m.chat.username() {
        Some(u) => Some(format!("https://t.me/{u}/{}", m.id.0)),
        // Private supergroups and channels: t.me/c/<id without the -100 prefix>/<message>.
        None if chat <= -1_000_000_000_000 => Some(format!("https://t.me/c/{}/{}", -chat - 1_000_000_000_000, m.id.0)),
        None => None,
    };
    Taken::Item(RawItem {
        external_id: format!("{chat}/{}", m.id.0),
        author,
        text: text.as_bytes().to_vec(),
        url,
        time_ms: u64::try_from(m.date.timestamp_millis()).ok(),
        language: None,
    })
}

/// What a failed `getUpdates` means for the runner.
pub(crate) fn classify(e: &RequestError, token_env: &str) -> SourceError {
    let detail = kronos_common::Redactor::global().redact(&e.to_string());
    match e {
        RequestError::Api(ApiError::InvalidToken) => {
            SourceError::Fatal(format!("the Bot API refused the token in {token_env} ({detail})"))
        }
        RequestError::Api(ApiError::TerminatedByOtherGetUpdates) => SourceError::Transient(format!(
            "409 Conflict: another process polls this bot token (give the social monitor a bot token of its own): {detail}"
        )),
        RequestError::RetryAfter(s) => {
            SourceError::RateLimited { retry_after: s.duration(), message: format!("getUpdates: {detail}") }
        }
        _ => SourceError::Transient(format!("getUpdates: {detail}")),
    }
}

/// The Telegram source.
pub struct TelegramSource {
    name: String,
    cfg: TelegramConfig,
    bot: Bot,
}

impl TelegramSource {
    /// Reads the token from the environment; errors name the variable.
    pub fn new(name: &str, cfg: TelegramConfig) -> Result<TelegramSource, SourceError> {
        let token =
            std::env::var(&cfg.token_env).ok().map(|t| t.trim().to_string()).filter(|t| !t.is_empty()).ok_or_else(
                || SourceError::Fatal(format!("{name}: token_env: environment variable {} is not set", cfg.token_env)),
            )?;
        let token = Secret::new(token);
        let bot = Bot::new(token.expose()).set_api_url(cfg.api_url.clone());
        Ok(TelegramSource { name: name.to_string(), cfg, bot })
    }
}

impl Source for TelegramSource {
    type Cursor = TelegramCursor;

    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "telegram"
    }

    async fn next(&mut self, cursor: &TelegramCursor) -> Result<Batch<TelegramCursor>, SourceError> {
        let asked = tokio::time::Instant::now();
        let offset = i32::try_from(cursor.offset).unwrap_or(i32::MAX);
        let updates = self
            .bot
            .get_updates()
            .offset(offset)
            .timeout(self.cfg.poll_timeout_s)
            .allowed_updates(vec![AllowedUpdate::Message, AllowedUpdate::ChannelPost])
            .await
            .map_err(|e| classify(&e, &self.cfg.token_env))?;
        let mut next = *cursor;
        let mut items = Vec::new();
        for u in &updates {
            next.offset = next.offset.max(i64::from(u.id.0) + 1);
            let taken = match &u.kind {
                UpdateKind::Message(m) | UpdateKind::ChannelPost(m) => take_message(m, &self.cfg.chats),
                UpdateKind::Error(_) => Taken::Skip(Skip::Malformed),
                _ => Taken::Ignore,
            };
            match taken {
                Taken::Item(i) => items.push(Ok(i)),
                Taken::Skip(s) => items.push(Err(s)),
                Taken::Ignore => {}
            }
        }
        // A Bot API that answers an empty poll at once (no long polling) is asked again after a second, not at once.
        let wait = if updates.is_empty() && asked.elapsed() < Duration::from_secs(1) {
            Duration::from_secs(1)
        } else {
            Duration::ZERO
        };
        Ok(Batch { items, changes: vec![], cursor: next, wait })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn message(v: serde_json::Value) -> Message {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn channel_posts_and_group_messages_become_items() {
        let chats = BTreeSet::from([-1001234567890i64, -1009876543210]);
        let post = message(json!({"message_id": 7, "date": 1_700_000_000,
            "chat": {"id": -1001234567890i64, "type": "channel", "title": "Kronos news", "username": "kronos_news"},
            "author_signature": "Ada", "text": "BTC breaks out"}));
        let Taken::Item(i) = take_message(&post, &chats) else { panic!() };
        assert_eq!(i.external_id, "-1001234567890/7");
        assert_eq!(i.author.as_deref(), Some("Ada"));
        assert_eq!(i.url.as_deref(), Some("https://t.me/kronos_news/7"));
        assert_eq!(i.time_ms, Some(1_700_000_000_000));
        assert_eq!(i.text, b"BTC breaks out");

        let group = message(json!({"message_id": 9, "date": 1_700_000_001,
            "chat": {"id": -1009876543210i64, "type": "supergroup", "title": "Desk"},
            "from": {"id": 5, "is_bot": false, "first_name": "Bob", "last_name": "Lee"}, "caption": "ETH chart",
            "photo": [{"file_id": "f", "file_unique_id": "u", "width": 10, "height": 10, "file_size": 100}]}));
        let Taken::Item(i) = take_message(&group, &chats) else { panic!() };
        assert_eq!(i.author.as_deref(), Some("Bob Lee"));
        assert_eq!(i.url.as_deref(), Some("https://t.me/c/9876543210/9"));
        assert_eq!(i.text, b"ETH chart");
    }

    #[test]
    fn other_chats_are_ignored_and_textless_messages_skipped() {
        let chats = BTreeSet::from([-100i64]);
        let other = message(json!({"message_id": 1, "date": 1, "chat": {"id": -200, "type": "group", "title": "x"},
            "text": "hi"}));
        assert_eq!(take_message(&other, &chats), Taken::Ignore);
        let sticker_less =
            message(json!({"message_id": 2, "date": 1, "chat": {"id": -100, "type": "group", "title": "x"},
            "from": {"id": 5, "is_bot": false, "first_name": "Bob"}, "dice": {"emoji": "🎲", "value": 3}}));
        assert_eq!(take_message(&sticker_less, &chats), Taken::Skip(Skip::Empty));
    }

    #[test]
    fn config_fields_are_checked() {
        let t = |s: &str| -> toml::Table { toml::from_str(s).unwrap() };
        let ok = TelegramConfig::parse(0, &t("name = \"t\"\nkind = \"telegram\"\nchats = [-100123]")).unwrap();
        assert_eq!(ok.token_env, "KRONOS_SOCIAL_TELEGRAM_TOKEN");
        assert_eq!(ok.poll_timeout_s, 10);
        let e = TelegramConfig::parse(1, &t("name = \"t\"\nkind = \"telegram\"\nchats = []")).unwrap_err();
        assert_eq!(e.0, "source[1].chats");
        let e = TelegramConfig::parse(1, &t("name = \"t\"\nkind = \"telegram\"\nchats = [1, 0]")).unwrap_err();
        assert_eq!(e.0, "source[1].chats[1]");
        let e = TelegramConfig::parse(0, &t("name = \"t\"\nkind = \"telegram\"\nchats = [1]\npoll_timeout_s = 60"))
            .unwrap_err();
        assert_eq!(e.0, "source[0].poll_timeout_s");
        let e = TelegramConfig::parse(0, &t("name = \"t\"\nkind = \"telegram\"\nchats = [1]\ntoken_env = \"123:abc\""))
            .unwrap_err();
        assert_eq!(e.0, "source[0].token_env");
        let e = TelegramConfig::parse(0, &t("name = \"t\"\nkind = \"telegram\"\nchats = [1]\nchat = 2")).unwrap_err();
        assert!(e.1.contains("chat"), "{e:?}");
    }
}
