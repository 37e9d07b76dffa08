//! The Discord source against the local gateway stand-in (tests/testkit/src/discord.rs), driven the way the runner
//! drives a source: each batch's items are recorded together with its cursor, and a restart starts from the last
//! recorded cursor. Covers the handshake, heartbeats and dispatch; a dropped connection, RECONNECT and a resumable
//! close code (RESUME, nothing lost or repeated); a restart that resumes the saved session; a restart whose session
//! expired (new session, REST backfill, a REST 429 waited out); fatal close codes and a refused token; edits
//! (MESSAGE_UPDATE), deletions (MESSAGE_DELETE, MESSAGE_DELETE_BULK) and an event the source does not know; two
//! shards (the identify rule, each resuming on its own, a restart from the saved cursor); edits and deletions made
//! while the monitor was down beyond a resume, read back over REST (and the bound on what is remembered); two
//! monitors splitting the shards (`shard_ids`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use std::sync::atomic::Ordering;

use kronos_social::source::{Source, SourceError};
use kronos_social::sources::discord::{DiscordConfig, DiscordCursor, DiscordSource, DiscordStats};
use kronos_social::{Change, Skip};
use kronos_testkit::discord::{MockDiscord, GUILD_2, TOKEN};
use parking_lot::Mutex;

const DEADLINE: Duration = Duration::from_secs(90);
const A: u64 = 1_111_111_111;
const B: u64 = 2_222_222_222;
const ELSEWHERE: u64 = 9_999_999_999;

#[derive(Default)]
struct Seen {
    /// (message id, text, author, url)
    items: Vec<(String, String, Option<String>, Option<String>)>,
    skips: Vec<Skip>,
    /// Edits and deletions, in order.
    changes: Vec<Change>,
    errors: Vec<SourceError>,
    cursor: DiscordCursor,
}

struct Run {
    seen: Arc<Mutex<Seen>>,
    stats: Arc<DiscordStats>,
    /// MESSAGE_CREATE frames the stand-in wrote before this run started.
    delivered: u64,
    task: tokio::task::JoinHandle<()>,
}

fn config(md: &MockDiscord, token_env: &str) -> DiscordConfig {
    config_with(md, token_env, "")
}

/// The test's source config with `extra` TOML lines.
fn config_with(md: &MockDiscord, token_env: &str, extra: &str) -> DiscordConfig {
    let t: toml::Table = toml::from_str(&format!(
        "name = \"disc\"\nkind = \"discord\"\ntoken_env = \"{token_env}\"\nchannels = [\"{A}\", \"{B}\"]\napi_url = \"{}\"\n{extra}",
        md.api_url()
    ))
    .unwrap();
    DiscordConfig::parse(0, &t).unwrap()
}

/// Runs the source from `cursor` as the runner would (items and cursor recorded together).
fn start(md: &MockDiscord, cursor: DiscordCursor) -> Run {
    start_cfg(md, cursor, "")
}

/// [`start`] with `extra` config lines.
fn start_cfg(md: &MockDiscord, cursor: DiscordCursor, extra: &str) -> Run {
    std::env::set_var("KRONOS_TEST_DISCORD_TOKEN", TOKEN);
    let src = DiscordSource::new("disc", config_with(md, "KRONOS_TEST_DISCORD_TOKEN", extra)).unwrap();
    start_with(src, cursor, md.creates_delivered())
}

/// `delivered`: the stand-in's MESSAGE_CREATE frames written before this run (to earlier runs).
fn start_with(mut src: DiscordSource, cursor: DiscordCursor, delivered: u64) -> Run {
    let stats = src.stats();
    let seen = Arc::new(Mutex::new(Seen { cursor, ..Default::default() }));
    let s = seen.clone();
    let task = tokio::spawn(async move {
        loop {
            let saved = s.lock().cursor.clone();
            match src.next(&saved).await {
                Ok(b) => {
                    let mut g = s.lock();
                    for i in b.items {
                        match i {
                            Ok(r) => g.items.push((r.external_id, String::from_utf8(r.text).unwrap(), r.author, r.url)),
                            Err(k) => g.skips.push(k),
                        }
                    }
                    g.changes.extend(b.changes);
                    g.cursor = b.cursor;
                }
                Err(e) => {
                    let fatal = matches!(e, SourceError::Fatal(_));
                    let wait = match &e {
                        SourceError::RateLimited { retry_after, .. } => *retry_after,
                        _ => Duration::from_millis(200),
                    };
                    s.lock().errors.push(e);
                    if fatal {
                        return;
                    }
                    tokio::time::sleep(wait).await;
                }
            }
        }
    });
    Run { seen, stats, delivered, task }
}

impl Run {
    async fn wait(&self, what: &str, f: impl Fn(&Seen) -> bool) {
        let t = Instant::now();
        loop {
            {
                let g = self.seen.lock();
                if f(&g) {
                    return;
                }
                assert!(
                    t.elapsed() < DEADLINE,
                    "waited for {what}: items {:?} skips {:?} errors {:?}",
                    g.items,
                    g.skips,
                    g.errors
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn wait_items(&self, n: usize) {
        self.wait(&format!("{n} items"), |s| s.items.len() >= n).await;
    }

    fn ids(&self) -> Vec<String> {
        self.seen.lock().items.iter().map(|i| i.0.clone()).collect()
    }

    /// Waits until every MESSAGE_CREATE the stand-in wrote to the source's connections is accounted for: an item
    /// handed back, or a copy the source counted as a duplicate (a replay after RESUME of one it had taken). No
    /// copy can arrive after this.
    async fn wait_all_delivered(&self, md: &MockDiscord) {
        let stats = self.stats.clone();
        let md2 = md.clone();
        let before = self.delivered;
        self.wait("every delivered copy taken or counted a duplicate", move |s| {
            s.items.len() as u64 + stats.duplicates.load(Ordering::SeqCst) == md2.creates_delivered() - before
        })
        .await;
    }

    /// Stops the source as a crash would (the connection dropped, no close frame); returns the saved cursor.
    async fn stop(self) -> (DiscordCursor, Vec<String>) {
        self.task.abort();
        let _ = self.task.await;
        let g = self.seen.lock();
        (g.cursor.clone(), g.items.iter().map(|i| i.0.clone()).collect())
    }
}

async fn session_up(md: &MockDiscord) {
    md.wait("a live session", DEADLINE, |m| m.live_sessions() == 1).await;
}

#[tokio::test]
async fn handshake_heartbeats_and_messages_from_the_configured_channels() {
    let md = MockDiscord::start_with_heartbeat(Duration::from_millis(1500)).await;
    let run = start(&md, DiscordCursor::default());
    session_up(&md).await;
    assert_eq!(md.identifies(), 1);
    assert!(md.rest_calls().iter().any(|c| c == "/gateway/bot"), "{:?}", md.rest_calls());

    let a1 = md.post(A, "ada", "gm $BTC looking strong");
    md.post(ELSEWHERE, "eve", "not a configured channel");
    let b1 = md.post(B, "bob", "ETH to the moon");
    let a2 = md.post(A, "ada", "second in A");
    run.wait_items(3).await;
    {
        let g = run.seen.lock();
        let got: Vec<(&str, &str)> = g.items.iter().map(|i| (i.0.as_str(), i.1.as_str())).collect();
        assert_eq!(
            got,
            vec![
                (a1.to_string().as_str(), "gm $BTC looking strong"),
                (b1.to_string().as_str(), "ETH to the moon"),
                (a2.to_string().as_str(), "second in A")
            ]
        );
        assert_eq!(g.items[0].2.as_deref(), Some("ada"));
        assert_eq!(
            g.items[0].3.as_deref(),
            Some(format!("https://discord.com/channels/{}/{A}/{a1}", kronos_testkit::discord::GUILD).as_str())
        );
    }

    // Heartbeats flow at HELLO's interval and are acknowledged (no zombie reconnects).
    md.wait("two heartbeats", DEADLINE, |m| m.heartbeats() >= 2).await;
    assert_eq!(md.connections(), 1, "no reconnect while heartbeats are acknowledged");

    // A MESSAGE_CREATE without content is skipped and counted; unknown fields are ignored; the source goes on.
    md.post_with(A, "mallory", |d| {
        d.as_object_mut().unwrap().remove("content");
    });
    let a3 = md.post_with(A, "ada", |d| {
        d["content"] = "with new fields".into();
        d["some_future_field"] = serde_json::json!({"x": 1});
    });
    run.wait_items(4).await;
    let g = run.seen.lock();
    assert_eq!(g.skips, vec![Skip::Malformed]);
    assert_eq!(g.items[3].0, a3.to_string());
    assert_eq!(g.cursor.last_message.get(&A), Some(&a3));
    assert_eq!(g.cursor.last_message.get(&B), Some(&b1));
    assert!(g.cursor.shards == 1 && g.cursor.sessions[&0].sequence >= 6, "{:?}", g.cursor);
    assert!(g.errors.is_empty(), "{:?}", g.errors);
}

#[tokio::test]
async fn a_dropped_connection_reconnect_and_close_4000_resume_without_loss_or_repeat() {
    let md = MockDiscord::start().await;
    let run = start(&md, DiscordCursor::default());
    session_up(&md).await;
    let mut posted = vec![md.post(A, "ada", "one"), md.post(B, "bob", "two")];
    run.wait_items(2).await;

    // The TCP connection drops; messages posted meanwhile are replayed on RESUME.
    md.drop_all();
    posted.push(md.post(A, "ada", "three while away"));
    posted.push(md.post(B, "bob", "four while away"));
    run.wait_items(4).await;
    md.wait("one resume", DEADLINE, |m| m.resumes().len() == 1).await;

    // RECONNECT (op 7) from the gateway.
    md.send_reconnect();
    md.wait("the second resume", DEADLINE, |m| m.resumes().len() == 2 && m.live_sessions() == 1).await;
    posted.push(md.post(A, "ada", "five"));
    run.wait_items(5).await;

    // A resumable close code.
    md.close_all(4000);
    posted.push(md.post(B, "bob", "six while away"));
    run.wait_items(6).await;
    md.wait("the third resume", DEADLINE, |m| m.resumes().len() == 3).await;

    assert_eq!(md.identifies(), 1, "every reconnect resumed the one session");
    let session = run.seen.lock().cursor.sessions[&0].session_id.clone();
    assert!(md.resumes().iter().all(|(s, _)| *s == session), "{:?}", md.resumes());
    // Nothing lost, nothing repeated, in order.
    let want: Vec<String> = posted.iter().map(|p| p.to_string()).collect();
    // A message posted just as the connection dropped may reach the source twice (once live, once replayed): the
    // second copy is a counted duplicate, never a second item.
    run.wait_all_delivered(&md).await;
    assert_eq!(run.ids(), want);
    let dups = run.stats.duplicates.load(Ordering::SeqCst) as usize;
    let skips = run.seen.lock().skips.clone();
    assert!(skips.iter().all(|s| *s == Skip::Duplicate) && skips.len() == dups, "{skips:?} vs {dups}");
}

#[tokio::test]
async fn a_restart_resumes_the_saved_session_or_backfills_over_rest() {
    let md = MockDiscord::start().await;
    let run = start(&md, DiscordCursor::default());
    session_up(&md).await;
    let mut posted = vec![md.post(A, "ada", "b1"), md.post(A, "ada", "b2")];
    run.wait_items(2).await;
    let (c1, got1) = run.stop().await;
    md.wait("the old connection gone", DEADLINE, |m| m.live() == 0).await;

    // Posted while the monitor is down: the session keeps them for a resume.
    posted.push(md.post(A, "ada", "b3 while down"));
    posted.push(md.post(B, "bob", "b4 while down"));
    let run = start(&md, c1.clone());
    run.wait_items(2).await;
    let s1 = &c1.sessions[&0];
    assert_eq!(md.resumes().last().cloned(), Some((s1.session_id.clone(), s1.sequence)));
    assert_eq!(md.identifies(), 1);
    let (c2, got2) = run.stop().await;
    md.wait("the old connection gone", DEADLINE, |m| m.live() == 0).await;

    // The session expires while the monitor is down: the messages exist only in the channels' history.
    md.expire_sessions();
    posted.push(md.post(A, "ada", "b5 after expiry"));
    posted.push(md.post(B, "bob", "b6 after expiry"));
    posted.push(md.post(A, "ada", "b7 after expiry"));
    md.rate_limit_rest(1);
    let run = start(&md, c2.clone());
    run.wait_items(3).await;
    assert_eq!(md.identifies(), 2, "a new session after INVALID_SESSION");
    let calls = md.rest_calls();
    let a_after = c2.last_message[&A];
    assert!(
        calls.iter().any(|c| *c == format!("/channels/{A}/messages?after={a_after}&limit=100")),
        "backfill of A after its last saved message: {calls:?}"
    );
    assert!(
        run.seen.lock().errors.iter().any(|e| matches!(e, SourceError::RateLimited { .. })),
        "the 429 was seen and waited out"
    );
    posted.push(md.post(B, "bob", "b8 live again"));
    run.wait_items(4).await;
    let (_, got3) = run.stop().await;

    let all: Vec<String> = got1.into_iter().chain(got2).chain(got3).collect();
    let want: Vec<String> = posted.iter().map(|p| p.to_string()).collect();
    assert_eq!(all, want, "every message exactly once, in order, across two restarts");
}

#[tokio::test]
async fn fatal_close_codes_and_a_refused_token_stop_the_source_with_a_reason() {
    let md = MockDiscord::start().await;
    let run = start(&md, DiscordCursor::default());
    session_up(&md).await;
    md.close_all(4014);
    run.wait("a fatal error", |s| s.errors.iter().any(|e| matches!(e, SourceError::Fatal(_)))).await;
    let e = run.seen.lock().errors.last().unwrap().to_string();
    assert!(e.contains("Message Content Intent"), "{e}");

    std::env::set_var("KRONOS_TEST_DISCORD_BAD_TOKEN", "not-the-token");
    let mut src = DiscordSource::new("disc", config(&md, "KRONOS_TEST_DISCORD_BAD_TOKEN")).unwrap();
    let e = src.next(&DiscordCursor::default()).await.unwrap_err();
    assert!(matches!(&e, SourceError::Fatal(m) if m.contains("KRONOS_TEST_DISCORD_BAD_TOKEN")), "{e}");
    assert!(!e.to_string().contains("not-the-token"), "the token is never in a message");

    let e = DiscordSource::new("disc", config(&md, "KRONOS_TEST_DISCORD_UNSET")).err().unwrap();
    assert!(e.to_string().contains("KRONOS_TEST_DISCORD_UNSET"), "{e}");
}

#[tokio::test]
async fn a_deleted_channel_does_not_hold_up_the_backfill_of_the_others() {
    let md = MockDiscord::start().await;
    let run = start(&md, DiscordCursor::default());
    session_up(&md).await;
    let a1 = md.post(A, "ada", "a1");
    let b1 = md.post(B, "bob", "b1");
    run.wait_items(2).await;
    let (c, _) = run.stop().await;
    md.wait("the old connection gone", DEADLINE, |m| m.live() == 0).await;

    md.expire_sessions();
    md.delete_channel(B);
    let a2 = md.post(A, "ada", "a2 after expiry");
    let run = start(&md, c);
    run.wait_items(1).await;
    assert_eq!(run.ids(), vec![a2.to_string()]);
    let calls = md.rest_calls();
    assert!(calls.iter().any(|x| *x == format!("/channels/{B}/messages?after={b1}&limit=100")), "{calls:?}");
    assert!(calls.iter().any(|x| *x == format!("/channels/{A}/messages?after={a1}&limit=100")), "{calls:?}");
    let live = md.post(A, "ada", "a3 live");
    run.wait_items(2).await;
    assert_eq!(run.ids(), vec![a2.to_string(), live.to_string()]);
    assert!(run.seen.lock().errors.is_empty(), "{:?}", run.seen.lock().errors);
}

#[tokio::test]
async fn edits_deletions_and_an_unknown_event_are_taken_in_order() {
    let md = MockDiscord::start().await;
    let run = start(&md, DiscordCursor::default());
    session_up(&md).await;
    let a1 = md.post(A, "ada", "first text");
    let a2 = md.post(A, "ada", "second");
    let b1 = md.post(B, "bob", "third");
    let b2 = md.post(B, "bob", "fourth");
    let e1 = md.post(ELSEWHERE, "eve", "elsewhere");
    run.wait_items(4).await;

    md.edit(a1, "first text, edited: $BTC breaks out");
    md.edit(e1, "not a configured channel");
    md.dispatch_event("TYPING_START", serde_json::json!({"channel_id": A.to_string(), "user_id": "5", "timestamp": 1}));
    md.delete(a2);
    md.delete_bulk(B, &[b1, b2]);
    run.wait("four changes", |s| s.changes.len() >= 4).await;
    {
        let g = run.seen.lock();
        let Change::Edit { item, edited_ms } = &g.changes[0] else { panic!("{:?}", g.changes) };
        assert_eq!(item.external_id, a1.to_string(), "the same message id");
        assert_eq!(item.text, b"first text, edited: $BTC breaks out");
        assert!(*edited_ms > (a1 >> 22) + kronos_testkit::discord::DISCORD_EPOCH_MS - 1, "{edited_ms}");
        let del = |id: u64| Change::Delete { external_id: id.to_string() };
        assert_eq!(g.changes[1..], [del(a2), del(b1), del(b2)]);
        assert_eq!(g.items.len(), 4, "an edit is not a new item");
    }
    assert_eq!(run.stats.unknown_events.load(Ordering::SeqCst), 1, "TYPING_START counted and skipped");
    assert_eq!(run.stats.bad_payloads.load(Ordering::SeqCst), 0);

    // A dropped connection: the replayed events come again (the store applies an edit once by its edit time, a
    // deletion once) and the source goes on.
    md.drop_all();
    md.wait("the resume", DEADLINE, |m| m.resumes().len() == 1).await;
    let a3 = md.post(A, "ada", "after the resume");
    run.wait_items(5).await;
    assert_eq!(run.ids().last(), Some(&a3.to_string()));
    assert!(run.seen.lock().errors.iter().all(|e| !matches!(e, SourceError::Fatal(_))));
}

/// Two shards (Discord recommends 2, `max_concurrency` 1): each shard identifies with `[id, 2]`, the second one
/// 5 s after the first (one identify per bucket per 5 s); each guild's messages come on its shard; after a dropped
/// connection both shards resume their own session; a restart from the saved cursor resumes both, and nothing is
/// lost or repeated.
#[tokio::test]
async fn two_shards_identify_by_the_rules_resume_each_and_restart_from_the_cursor() {
    let md = MockDiscord::start().await;
    md.set_sharding(2, 1);
    let run = start(&md, DiscordCursor::default());
    md.wait("two live sessions", DEADLINE, |m| m.live_sessions() == 2).await;
    let ids = md.identified();
    let mut shards: Vec<[u64; 2]> = ids.iter().map(|i| i.0).collect();
    shards.sort();
    assert_eq!(shards, vec![[0, 2], [1, 2]]);
    let gap = ids[1].1.duration_since(ids[0].1);
    assert!(gap >= Duration::from_millis(4900), "max_concurrency 1: the second identify waits 5 s, not {gap:?}");

    let mut posted = vec![md.post(A, "ada", "guild one, shard 0"), md.post_in(GUILD_2, B, "bob", "guild two, shard 1")];
    run.wait_items(2).await;
    run.wait("both shards' sessions in the cursor", |s| s.cursor.sessions.len() == 2).await;

    md.drop_all();
    posted.push(md.post(A, "ada", "shard 0 while away"));
    posted.push(md.post_in(GUILD_2, B, "bob", "shard 1 while away"));
    md.wait("both shards resumed", DEADLINE, |m| {
        let mut r = m.resumed_shards();
        r.sort();
        r == vec![0, 1] && m.live_sessions() == 2
    })
    .await;
    run.wait_items(4).await;
    assert_eq!(md.identifies(), 2, "resumed, not identified again");

    run.wait_all_delivered(&md).await;
    let (cursor, got1) = run.stop().await;
    md.wait("the old connections gone", DEADLINE, |m| m.live() == 0).await;
    assert_eq!(cursor.shards, 2);
    assert_eq!(cursor.sessions.len(), 2);

    posted.push(md.post_in(GUILD_2, B, "bob", "shard 1 while down"));
    posted.push(md.post(A, "ada", "shard 0 while down"));
    let run = start(&md, cursor);
    run.wait_items(2).await;
    md.wait("both resumed again", DEADLINE, |m| m.resumed_shards().len() == 4).await;
    assert_eq!(md.identifies(), 2, "the restart resumed both saved sessions");
    posted.push(md.post(A, "ada", "live again"));
    run.wait_items(3).await;
    run.wait_all_delivered(&md).await;
    let (_, got2) = run.stop().await;
    let mut all: Vec<String> = got1.into_iter().chain(got2).collect();
    let mut want: Vec<String> = posted.iter().map(|p| p.to_string()).collect();
    // Two shards are two streams: order is kept per shard, not across them.
    all.sort();
    want.sort();
    assert_eq!(all, want, "every message once across the drop and the restart");
}

fn del(id: u64) -> Change {
    Change::Delete { external_id: id.to_string() }
}

fn remembered(c: &DiscordCursor, channel: u64) -> Vec<u64> {
    c.recent.get(&channel).map(|r| r.keys().copied().collect()).unwrap_or_default()
}

/// Edits and deletions made while the monitor was down and its session expired (so no RESUME replays them): the
/// new session's READY reads the remembered messages back over REST (`before=`), and the edits (a later
/// `edited_timestamp`) and deletions (gone from the range read) come out as changes, once and oldest first per
/// channel; an edit already taken live is not taken again; a message posted meanwhile is backfilled as before.
#[tokio::test]
async fn edits_and_deletions_made_while_down_beyond_a_resume_are_read_back_over_rest() {
    let md = MockDiscord::start().await;
    let run = start(&md, DiscordCursor::default());
    session_up(&md).await;
    let a1 = md.post(A, "ada", "a1 first");
    let a2 = md.post(A, "ada", "a2 second");
    let b1 = md.post(B, "bob", "b1 third");
    let a3 = md.post(A, "ada", "a3 fourth");
    run.wait_items(4).await;
    md.edit(a3, "a3 fourth, edited live");
    run.wait("the live edit", |s| s.changes.len() == 1).await;
    let (c1, _) = run.stop().await;
    md.wait("the old connection gone", DEADLINE, |m| m.live() == 0).await;
    assert_eq!(remembered(&c1, A), vec![a1, a2, a3]);
    assert_eq!(remembered(&c1, B), vec![b1]);
    assert!(c1.recent[&A][&a3] > 0 && c1.recent[&A][&a1] == 0, "the live edit's time is remembered: {:?}", c1.recent);

    // Down, and the session expires: nothing reaches the monitor, only the channels' history changes.
    md.expire_sessions();
    md.edit(a1, "a1 first, edited while down: $BTC");
    md.delete(a2);
    md.delete(b1);
    let a4 = md.post(A, "ada", "a4 posted while down");
    let run = start(&md, c1);
    run.wait("three changes and the backfilled message", |s| s.changes.len() >= 3 && !s.items.is_empty()).await;
    assert_eq!(md.identifies(), 2, "a new session, not a resume");
    {
        let g = run.seen.lock();
        let Change::Edit { item, edited_ms } = &g.changes[0] else { panic!("{:?}", g.changes) };
        assert_eq!(item.external_id, a1.to_string(), "the same message id");
        assert_eq!(item.text, b"a1 first, edited while down: $BTC");
        assert!(*edited_ms > 0);
        assert_eq!(g.changes[1..], [del(a2), del(b1)], "deletions, A's then B's (emptied)");
        assert_eq!(run.stats.changes.load(Ordering::SeqCst), 3, "this run's: the three read back");
        assert_eq!(g.items.iter().map(|i| i.0.clone()).collect::<Vec<_>>(), vec![a4.to_string()]);
        assert_eq!(remembered(&g.cursor, A), vec![a1, a3, a4], "the deleted one forgotten");
        assert_eq!(remembered(&g.cursor, B), Vec::<u64>::new());
    }
    let calls = md.rest_calls();
    let reread = format!("/channels/{A}/messages?before={}&limit=100", a3 + 1);
    assert!(calls.contains(&reread), "A read back from its newest remembered message: {calls:?}");

    // Live again: a new post comes out, nothing is re-checked or repeated.
    let a5 = md.post(A, "ada", "a5 live");
    run.wait_items(2).await;
    assert_eq!(run.ids(), vec![a4.to_string(), a5.to_string()]);
    assert_eq!(run.seen.lock().changes.len(), 3);
    assert_eq!(md.rest_calls().iter().filter(|c| **c == reread).count(), 1);
    assert!(run.seen.lock().errors.is_empty(), "{:?}", run.seen.lock().errors);
}

/// `recheck_max` bounds what is remembered per channel (the last N taken) and so what a new session reads back:
/// an edit of an older message is not seen (the documented limit), a deletion within the window is.
#[tokio::test]
async fn the_recheck_window_is_bounded_by_recheck_max() {
    let md = MockDiscord::start().await;
    let run = start_cfg(&md, DiscordCursor::default(), "recheck_max = 2");
    session_up(&md).await;
    let a1 = md.post(A, "ada", "w1");
    let a2 = md.post(A, "ada", "w2");
    let a3 = md.post(A, "ada", "w3");
    run.wait_items(3).await;
    let (c, _) = run.stop().await;
    md.wait("the old connection gone", DEADLINE, |m| m.live() == 0).await;
    assert_eq!(remembered(&c, A), vec![a2, a3], "the last 2 only");

    md.expire_sessions();
    md.edit(a1, "w1 edited while down (outside the window)");
    md.delete(a3);
    let run = start_cfg(&md, c, "recheck_max = 2");
    run.wait("the deletion", |s| !s.changes.is_empty()).await;
    // A live post after it: everything the new session's READY produced has come out before it.
    let a4 = md.post(A, "ada", "w4 live");
    run.wait_items(1).await;
    assert_eq!(run.ids(), vec![a4.to_string()]);
    assert_eq!(run.seen.lock().changes, vec![del(a3)], "the edit of w1 is outside the window");
    let pages = md.rest_calls().iter().filter(|c| c.contains("before=")).count();
    assert_eq!(pages, 1, "one page read back for A (B has no remembered message)");
}

/// Two monitors (two processes in production) split a bot's two shards with `shard_ids`: each identifies only its
/// own shard (`[0, 2]`, `[1, 2]`), gets only its guilds' messages, saves only its shard's session, and a restart of
/// one resumes only its shard while the other goes on.
#[tokio::test]
async fn two_monitors_split_the_shards_and_each_identifies_only_its_own() {
    let md = MockDiscord::start().await;
    // max_concurrency 2: shards 0 and 1 are in different identify buckets, so they may identify at once (with 1,
    // two processes would have to start 5 s apart: each process's queue knows only its own identifies).
    md.set_sharding(2, 2);
    let r0 = start_cfg(&md, DiscordCursor::default(), "shards = 2\nshard_ids = [0]");
    let r1 = start_cfg(&md, DiscordCursor::default(), "shards = 2\nshard_ids = [1]");
    md.wait("two live sessions", DEADLINE, |m| m.live_sessions() == 2).await;
    let mut shards: Vec<[u64; 2]> = md.identified().iter().map(|i| i.0).collect();
    shards.sort();
    assert_eq!(shards, vec![[0, 2], [1, 2]], "each shard identified once, by its own monitor");

    let p0 = md.post(A, "ada", "guild one, shard 0");
    let p1 = md.post_in(GUILD_2, B, "bob", "guild two, shard 1");
    let p0b = md.post(A, "ada", "guild one again");
    let p1b = md.post_in(GUILD_2, B, "bob", "guild two again");
    r0.wait_items(2).await;
    r1.wait_items(2).await;
    assert_eq!(r0.ids(), vec![p0.to_string(), p0b.to_string()]);
    assert_eq!(r1.ids(), vec![p1.to_string(), p1b.to_string()]);
    r1.wait("shard 1's session saved", |s| s.cursor.sessions.len() == 1).await;

    let (c0, _) = r0.stop().await;
    md.wait("monitor 0's connection gone", DEADLINE, |m| m.live() == 1).await;
    assert_eq!(c0.shards, 2);
    assert_eq!(c0.sessions.keys().copied().collect::<Vec<_>>(), vec![0], "only its own shard's session");
    assert_eq!(r1.seen.lock().cursor.sessions.keys().copied().collect::<Vec<_>>(), vec![1]);

    let p0c = md.post(A, "ada", "shard 0 while monitor 0 is down");
    let p1c = md.post_in(GUILD_2, B, "bob", "shard 1 meanwhile");
    r1.wait_items(3).await;
    let r0 = start_cfg(&md, c0, "shards = 2\nshard_ids = [0]");
    r0.wait_items(1).await;
    assert_eq!(r0.ids(), vec![p0c.to_string()]);
    assert_eq!(md.resumed_shards(), vec![0], "monitor 0 resumed its shard only");
    assert_eq!(md.identifies(), 2, "nobody identified again");
    assert_eq!(r1.ids(), vec![p1.to_string(), p1b.to_string(), p1c.to_string()]);
    assert!(r0.seen.lock().errors.is_empty() && r1.seen.lock().errors.is_empty());
}
