//! The store on a real PostgreSQL (a throwaway server on loopback, `tests/testkit/src/pg.rs`): the migrations apply
//! (and apply again on a second connect), a batch and its cursor commit in one transaction, skips add up, an id
//! already stored is not stored twice, the queries the REST API and the pipeline's warm start use read it back, and a
//! monitor restarted over the same database refuses a near-duplicate it saw before the restart.

use kronos_social::item::RawItem;
use kronos_social::pipeline::{Origin, Rules};
use kronos_social::runner::Monitor;
use kronos_social::store::ItemQuery;
use kronos_social::{Skip, Store};

fn origin() -> Origin {
    Origin { name: "news".into(), kind: "rss".into(), weight: 1.0, trusted: false }
}

fn raw(id: &str, author: &str, text: &str, at_ms: u64) -> Result<RawItem, Skip> {
    Ok(RawItem {
        external_id: id.into(),
        author: Some(author.into()),
        text: text.as_bytes().to_vec(),
        url: Some(format!("https://example.org/{id}")),
        time_ms: Some(at_ms),
        language: Some("en".into()),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_works_on_postgresql() {
    let pg = kronos_testkit::pg::PgServer::start().expect("PostgreSQL starts (scripts/setup installs it)");
    let store = Store::connect(&pg.url()).await.expect("the migrations apply");
    assert_eq!(store.backend(), kronos_common::db::Backend::Postgres);
    store.ping().await.unwrap();
    assert_eq!(store.cursor("news").await.unwrap(), None);

    let now = kronos_social::now_ms();
    let m = Monitor::new(store.clone(), Rules::default(), vec![]).await.unwrap();
    let batch = vec![
        raw("1", "alice", "$BTC breaks out to a new all-time high, great news for bitcoin holders", now - 2000),
        raw("2", "bob", "$ETH looks weak today, the merge narrative is fading fast for traders", now - 1000),
        Err(Skip::Malformed),
        raw("3", "carol", "https://spam.example/x", now - 500),
    ];
    let (written, out) = m.ingest(&origin(), batch, r#"{"etag":"a"}"#, now).await.unwrap();
    assert_eq!(written.len(), 2, "{out:?}");
    assert_eq!(out.skipped.get(&Skip::Malformed), Some(&1));
    assert_eq!(out.skipped.get(&Skip::LinkOnly), Some(&1));
    assert!(written[0].seq < written[1].seq);
    assert_eq!(store.cursor("news").await.unwrap().as_deref(), Some(r#"{"etag":"a"}"#));

    // The same id again (a feed repeating an entry, the pipeline's memory lost): counted a duplicate, not stored.
    let m2 = Monitor::new(store.clone(), Rules { dedup_window_ms: 1, ..Rules::default() }, vec![]).await.unwrap();
    let (again, out2) = m2
        .ingest(
            &origin(),
            vec![raw("1", "alice", "a different text about $BTC and its price action today", now)],
            r#"{"etag":"b"}"#,
            now,
        )
        .await
        .unwrap();
    assert!(again.is_empty());
    assert_eq!(out2.skipped.get(&Skip::Duplicate), Some(&1));
    assert_eq!(store.cursor("news").await.unwrap().as_deref(), Some(r#"{"etag":"b"}"#));

    let btc = store.items(&ItemQuery { asset: Some("BTC".into()), limit: 10, ..Default::default() }).await.unwrap();
    assert_eq!(btc.len(), 1);
    assert_eq!(btc[0].item.author, "alice");
    assert_eq!(btc[0].item.assets, vec!["BTC".to_string()]);
    let after =
        store.items(&ItemQuery { after_seq: Some(written[0].seq), limit: 10, ..Default::default() }).await.unwrap();
    assert_eq!(after.len(), 1);
    assert_eq!(after[0].item.id, written[1].item.id);
    let counts = store.asset_counts("ETH", now - 60_000, now + 1).await.unwrap();
    assert_eq!((counts.volume, counts.all_mentions), (1, 2));
    assert!((counts.mean_sentiment - written[1].item.sentiment).abs() < 1e-9);
    let src = store.sources().await.unwrap();
    let news = src.iter().find(|s| s.source == "news").expect("the source is listed");
    assert_eq!(news.items, 2);
    let skips: std::collections::BTreeMap<&str, u64> = news.skips.iter().map(|(k, n)| (k.as_str(), *n)).collect();
    assert_eq!(skips.get("malformed"), Some(&1));
    assert_eq!(skips.get("link_only"), Some(&1));
    // A duplicate found by the store's unique id (after the pipeline) is counted in the outcome, the health and
    // /metrics, not in so_skips (the commit had already been made): the same on SQLite.
    assert_eq!(skips.get("duplicate"), None);
    assert_eq!(store.fingerprints(now - 60_000).await.unwrap().len(), 2);
    assert_eq!(store.mentions(now - 60_000).await.unwrap().len(), 2);
    assert_eq!(store.authors(now - 60_000).await.unwrap().len(), 2);

    // A second connect (a restart) finds the migrations applied; the warmed pipeline remembers the texts.
    let store2 = Store::connect(&pg.url()).await.expect("the migrations apply again");
    let m3 = Monitor::new(store2.clone(), Rules::default(), vec![]).await.unwrap();
    let (none, out3) = m3
        .ingest(
            &origin(),
            vec![raw("9", "dave", "$BTC breaks out to a new all-time high, great news for bitcoin holders", now)],
            r#"{"etag":"c"}"#,
            now,
        )
        .await
        .unwrap();
    assert!(none.is_empty());
    assert_eq!(out3.skipped.get(&Skip::DuplicateText), Some(&1), "{out3:?}");
}
