//! What a source hands in ([`RawItem`]), why one is refused ([`Skip`]), and what the pipeline makes of it ([`Item`]).

use serde::{Deserialize, Serialize};

/// One post as a source read it, before the pipeline. Text arrives as bytes so that a source never has to decide
/// about invalid UTF-8 itself: the pipeline skips it with a counted reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawItem {
    /// The source's own id for the post (a feed's GUID, a message id); unique within the source.
    pub external_id: String,
    pub author: Option<String>,
    pub text: Vec<u8>,
    pub url: Option<String>,
    /// When it was posted (ms since the epoch), if the source says.
    pub time_ms: Option<u64>,
    /// A language tag if the source says (`en`, `en-US`).
    pub language: Option<String>,
}

impl RawItem {
    /// A raw item with text and id only.
    pub fn new(external_id: impl Into<String>, text: impl Into<Vec<u8>>) -> RawItem {
        RawItem {
            external_id: external_id.into(),
            author: None,
            text: text.into(),
            url: None,
            time_ms: None,
            language: None,
        }
    }
}

/// A change a source reports to a post it handed in before (Discord's `MESSAGE_UPDATE` / `MESSAGE_DELETE`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The post was edited at `edited_ms` (ms since the epoch): `item` is the post as it reads now, under the same
    /// `external_id`. Applied once per edit time (a replayed edit changes nothing), never to a deleted item.
    Edit { item: RawItem, edited_ms: u64 },
    /// The post was deleted at its source.
    Delete { external_id: String },
}

/// Why an item was not accepted. Each is counted per source (`so_skips`, `/metrics`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Skip {
    /// The source could not parse it (a malformed entry, a JSON object missing mapped fields).
    Malformed,
    /// Fields the mapping does not know, in a source configured to refuse them.
    UnknownFields,
    /// Text above the configured byte limit.
    TooLong,
    /// Text that is not UTF-8.
    InvalidUtf8,
    /// Nothing left after normalising.
    Empty,
    /// The same item id was accepted before.
    Duplicate,
    /// The same normalised text (exact hash) was accepted before, from anyone.
    DuplicateText,
    /// Within the SimHash distance of an accepted item.
    NearDuplicate,
    /// Spam: links and nothing else.
    LinkOnly,
    /// Spam: the same text from several authors.
    RepeatedAcrossAuthors,
    /// Spam: too many first-seen authors in the window.
    NewAuthorFlood,
    /// Spam: one author above the per-author rate.
    AuthorRate,
}

impl Skip {
    pub const ALL: [Skip; 12] = [
        Skip::Malformed,
        Skip::UnknownFields,
        Skip::TooLong,
        Skip::InvalidUtf8,
        Skip::Empty,
        Skip::Duplicate,
        Skip::DuplicateText,
        Skip::NearDuplicate,
        Skip::LinkOnly,
        Skip::RepeatedAcrossAuthors,
        Skip::NewAuthorFlood,
        Skip::AuthorRate,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Skip::Malformed => "malformed",
            Skip::UnknownFields => "unknown_fields",
            Skip::TooLong => "too_long",
            Skip::InvalidUtf8 => "invalid_utf8",
            Skip::Empty => "empty",
            Skip::Duplicate => "duplicate",
            Skip::DuplicateText => "duplicate_text",
            Skip::NearDuplicate => "near_duplicate",
            Skip::LinkOnly => "link_only",
            Skip::RepeatedAcrossAuthors => "repeated_across_authors",
            Skip::NewAuthorFlood => "new_author_flood",
            Skip::AuthorRate => "author_rate",
        }
    }
}

/// How urgently an item should reach people (alerts take `high`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    Low,
    Normal,
    High,
}

impl Priority {
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Low => "low",
            Priority::Normal => "normal",
            Priority::High => "high",
        }
    }

    pub fn parse(s: &str) -> Option<Priority> {
        match s {
            "low" => Some(Priority::Low),
            "normal" => Some(Priority::Normal),
            "high" => Some(Priority::High),
            _ => None,
        }
    }
}

/// A normalised, accepted and scored item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Item {
    /// Hex of the hash of (source, external id): stable across restarts.
    pub id: String,
    /// The configured source name (`nitter-btc`).
    pub source: String,
    /// The source's kind (`rss`, `http_json`, `keeper`, `discord`, `telegram`).
    pub kind: String,
    pub author: String,
    pub text: String,
    pub url: Option<String>,
    /// When it was posted (the receive time when the source does not say), ms since the epoch.
    pub at_ms: u64,
    pub received_ms: u64,
    /// Lower-case primary language subtag (`en`), `und` when unknown.
    pub language: String,
    /// Asset symbols it mentions, upper case, sorted.
    pub assets: Vec<String>,
    /// VADER compound with the crypto lexicon, in [-1, 1].
    pub sentiment: f64,
    /// See [`crate::pipeline::score`].
    pub score: f64,
    pub priority: Priority,
    /// 1 as first accepted; one more after each edit applied (the same `id`, re-scored).
    #[serde(default = "first_version")]
    pub version: u32,
    /// When the source says the text was last edited (ms since the epoch), if it was.
    #[serde(default)]
    pub edited_ms: Option<u64>,
    #[serde(skip)]
    pub content_hash: u64,
    #[serde(skip)]
    pub simhash: u64,
}

fn first_version() -> u32 {
    1
}

/// One message on the monitor's `/ws` and Redis channels: JSON tagged by `type`, the item's fields beside the tag
/// (`{"type":"item","id":…,"text":…}`). Generic over the item so a client can read just the fields it uses (the
/// Telegram bot reads its own `SocialItem`); the monitor writes `WsMessage<&Item>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum WsMessage<I = Item> {
    /// A newly accepted item.
    Item(I),
    /// A new version of an item sent before: the same `id`, its text edited at the source and scored again,
    /// `version` one higher.
    Edit(I),
    /// The item `id` was deleted at its source: the REST API no longer serves it; clients drop it.
    Deleted { id: String, source: String },
    /// This reader fell behind and `lost` messages were skipped.
    Lagged { lost: u64 },
}
