//! The Telegram source against the local Bot API server (tests/testkit/src/telegram.rs): channel posts and group
//! messages from the configured chats become items, other chats are ignored, unreadable updates and text-less
//! messages are counted skips; the offset cursor means a restart from the saved cursor repeats nothing, and a
//! batch that was not saved is delivered again (nothing lost).

use std::time::{Duration, Instant};

use kronos_social::source::{Batch, Source, SourceError};
use kronos_social::sources::telegram::{TelegramConfig, TelegramCursor, TelegramSource};
use kronos_social::{RawItem, Skip};
use kronos_testkit::telegram::{MockTelegram, TOKEN};

const CHANNEL: i64 = -1_001_234_567_890;
const GROUP: i64 = -1_009_876_543_210;
const OTHER: i64 = -1_005_555_555_555;

fn source(mt: &MockTelegram, token_env: &str) -> Result<TelegramSource, SourceError> {
    let t: toml::Table = toml::from_str(&format!(
        "name = \"tg\"\nkind = \"telegram\"\ntoken_env = \"{token_env}\"\napi_url = \"{}\"\nchats = [{CHANNEL}, {GROUP}]\npoll_timeout_s = 1",
        mt.url()
    ))
    .unwrap();
    TelegramSource::new("tg", TelegramConfig::parse(0, &t).unwrap())
}

/// Calls `next` until `n` items or skips arrived in total; returns them and the last cursor.
async fn collect(
    src: &mut TelegramSource,
    mut cursor: TelegramCursor,
    n: usize,
) -> (Vec<Result<RawItem, Skip>>, TelegramCursor) {
    let t = Instant::now();
    let mut got = Vec::new();
    while got.len() < n {
        assert!(t.elapsed() < Duration::from_secs(60), "got {got:?} of {n}");
        let Batch { items, cursor: c, .. } = src.next(&cursor).await.unwrap();
        got.extend(items);
        cursor = c;
    }
    (got, cursor)
}

fn texts(items: &[Result<RawItem, Skip>]) -> Vec<String> {
    items.iter().filter_map(|i| i.as_ref().ok().map(|r| String::from_utf8(r.text.clone()).unwrap())).collect()
}

#[tokio::test]
async fn channel_posts_and_group_messages_with_an_offset_cursor() {
    let mt = MockTelegram::start().await;
    std::env::set_var("KRONOS_TEST_SOCIAL_TG_TOKEN", TOKEN);
    let mut src = source(&mt, "KRONOS_TEST_SOCIAL_TG_TOKEN").unwrap();

    let post = mt.channel_post(CHANNEL, "$BTC breaks 100k");
    mt.say(OTHER, 7, "not a configured chat");
    mt.say(GROUP, 7, "ETH looks weak");
    mt.raw_update("message", serde_json::json!({"message_id": "not a number", "chat": 5}));
    mt.raw_update(
        "message",
        serde_json::json!({"message_id": 99, "date": 1,
        "chat": {"id": GROUP, "type": "supergroup", "title": "Desk"},
        "from": {"id": 7, "is_bot": false, "first_name": "Ada"}, "dice": {"emoji": "🎲", "value": 3}}),
    );
    let last = mt.channel_post(CHANNEL, "SOL update");

    let (got, c1) = collect(&mut src, TelegramCursor::default(), 5).await;
    assert_eq!(texts(&got), vec!["$BTC breaks 100k", "ETH looks weak", "SOL update"]);
    let skips: Vec<Skip> = got.iter().filter_map(|i| i.as_ref().err().copied()).collect();
    assert_eq!(skips, vec![Skip::Malformed, Skip::Empty]);
    let first = got[0].as_ref().unwrap();
    assert_eq!(first.external_id, format!("{CHANNEL}/{post}"));
    assert_eq!(first.url.as_deref(), Some(format!("https://t.me/kronos_news/{post}").as_str()));
    assert_eq!(first.author.as_deref(), Some("Ada"));
    assert_eq!(got.last().unwrap().as_ref().unwrap().external_id, format!("{CHANNEL}/{last}"));
    assert!(c1.offset > 0);

    // The batch was not saved (a crash before the commit): asking again from the old cursor delivers it again.
    let mut again = source(&mt, "KRONOS_TEST_SOCIAL_TG_TOKEN").unwrap();
    let (got2, c1b) = collect(&mut again, TelegramCursor::default(), 5).await;
    assert_eq!(texts(&got2), texts(&got));
    assert_eq!(c1b, c1);

    // A restart from the saved cursor: only what came after it.
    let mut restarted = source(&mt, "KRONOS_TEST_SOCIAL_TG_TOKEN").unwrap();
    mt.say(GROUP, 8, "after the restart");
    let (got3, c2) = collect(&mut restarted, c1, 1).await;
    assert_eq!(texts(&got3), vec!["after the restart"]);
    assert_eq!(c2.offset, c1.offset + 1);
    assert!(mt.offsets().contains(&c1.offset), "getUpdates asked with the saved offset: {:?}", mt.offsets());
}

#[tokio::test]
async fn conflicts_and_a_refused_token_are_reported() {
    let mt = MockTelegram::start().await;
    std::env::set_var("KRONOS_TEST_SOCIAL_TG_TOKEN", TOKEN);
    let mut src = source(&mt, "KRONOS_TEST_SOCIAL_TG_TOKEN").unwrap();
    mt.conflict(1);
    let e = src.next(&TelegramCursor::default()).await.unwrap_err();
    assert!(matches!(&e, SourceError::Transient(m) if m.contains("409")), "{e}");
    // And then it works.
    mt.channel_post(CHANNEL, "back");
    let (got, _) = collect(&mut src, TelegramCursor::default(), 1).await;
    assert_eq!(texts(&got), vec!["back"]);

    std::env::set_var("KRONOS_TEST_SOCIAL_TG_BAD", "999:not-the-token");
    let mut bad = source(&mt, "KRONOS_TEST_SOCIAL_TG_BAD").unwrap();
    let e = bad.next(&TelegramCursor::default()).await.unwrap_err();
    assert!(matches!(&e, SourceError::Fatal(m) if m.contains("KRONOS_TEST_SOCIAL_TG_BAD")), "{e}");
    assert!(!e.to_string().contains("not-the-token"), "{e}");

    let e = source(&mt, "KRONOS_TEST_SOCIAL_TG_UNSET").err().unwrap();
    assert!(e.to_string().contains("KRONOS_TEST_SOCIAL_TG_UNSET"), "{e}");
}
