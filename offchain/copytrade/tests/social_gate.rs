//! The social gate of AI entries against a real social monitor on loopback (its store, pipeline and REST server):
//! a score above the threshold lets an entry through, one below refuses it, an asset without items is stale, a port
//! nothing answers on is unreadable — entries refused, exits never.

use std::time::Duration;

use kronos_copytrade::ai_gate::{decide, read, SocialGate, Verdict};
use kronos_social::item::RawItem;
use kronos_social::pipeline::{Origin, Rules};
use kronos_social::runner::Monitor;
use kronos_social::server::Server;
use kronos_social::Store;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gate_reads_a_running_monitor() {
    let store = Store::connect("sqlite::memory:").await.unwrap();
    let m = Monitor::new(store, Rules::default(), vec![]).await.unwrap();
    let now = kronos_social::now_ms();
    let origin = Origin { name: "news".into(), kind: "rss".into(), weight: 1.0, trusted: false };
    let items = vec![
        Ok(RawItem::new("1", "$BTC rallies hard as buyers return, a great day for bitcoin holders everywhere")),
        Ok(RawItem::new("2", "Analysts say $BTC could extend gains after the strong weekly close today")),
    ];
    let (written, _) = m.ingest(&origin, items, "{}", now).await.unwrap();
    assert_eq!(written.len(), 2);
    let mean = written.iter().map(|w| w.item.score).sum::<f64>() / 2.0;
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let server = Server::new(m.clone(), Default::default());
    tokio::spawn(async move { server.serve(l, std::future::pending()).await });

    let client = reqwest::Client::new();
    let gate = |asset: &str, min_score: f64, url: String| SocialGate {
        url: url.parse().unwrap(),
        asset: asset.into(),
        min_score,
        max_age: Duration::from_secs(3600),
    };
    let base = format!("http://{addr}");
    let low = gate("BTC", mean - 0.01, base.clone());
    let w = read(&client, &low).await.expect("the monitor answers");
    assert_eq!(w.volume, 2);
    assert!((w.mean_score - mean).abs() < 1e-9, "{} vs {mean}", w.mean_score);
    assert_eq!(decide(&low, true, &Ok(w.clone())), Verdict::Allow);
    let high = gate("BTC", mean + 0.01, base.clone());
    assert!(matches!(decide(&high, true, &Ok(w)), Verdict::Refuse(why) if why.contains("below")));
    let eth = gate("ETH", 0.0, base.clone());
    let r = read(&client, &eth).await;
    assert!(matches!(decide(&eth, true, &r), Verdict::Refuse(why) if why.contains("stale")), "{r:?}");
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let a = l.local_addr().unwrap();
        drop(l);
        gate("BTC", 0.0, format!("http://{a}"))
    };
    let r = read(&client, &dead).await;
    assert!(r.is_err());
    assert!(matches!(decide(&dead, true, &r), Verdict::Refuse(why) if why.contains("unreadable")));
    assert_eq!(decide(&dead, false, &r), Verdict::Allow, "leaving is never gated");
}
