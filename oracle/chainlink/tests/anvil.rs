//! The reader against real contracts on anvil: Chainlink's MockV3Aggregator behind a phase-aware proxy.

use alloy::primitives::I256;
use kronos_chainlink::{proxy_id, round_at, AlloyFeed, RoundSource, TimeField};
use kronos_contracts::mocks::{MockV3Aggregator, PhasedAggregatorProxy};
use kronos_testkit::{mine_at, set_next_timestamp, spawn, NodeOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finds_rounds_across_a_phase_change_on_a_real_node() {
    let node = spawn(NodeOptions::default());
    let p = node.provider.clone();
    let t0 = kronos_testkit::head_time(&p).await.unwrap() + 100;
    mine_at(&p, t0).await.unwrap();
    // Phase 1: rounds at t0+1 (deploy), t0+100, t0+200.
    let a = MockV3Aggregator::deploy(p.clone(), 8, I256::try_from(100).unwrap()).await.unwrap();
    let proxy = PhasedAggregatorProxy::deploy(p.clone(), *a.address(), "BTC / USD".to_string()).await.unwrap();
    for (dt, v) in [(100u64, 101i64), (200, 102)] {
        set_next_timestamp(&p, t0 + dt).await.unwrap();
        a.updateAnswer(I256::try_from(v).unwrap()).send().await.unwrap().get_receipt().await.unwrap();
    }
    // Phase 2 from t0+300.
    set_next_timestamp(&p, t0 + 300).await.unwrap();
    let b = MockV3Aggregator::deploy(p.clone(), 8, I256::try_from(200).unwrap()).await.unwrap();
    proxy.setAggregator(*b.address()).send().await.unwrap().get_receipt().await.unwrap();
    set_next_timestamp(&p, t0 + 400).await.unwrap();
    b.updateAnswer(I256::try_from(201).unwrap()).send().await.unwrap().get_receipt().await.unwrap();

    let feed = AlloyFeed::new(*proxy.address(), p.clone());
    let info = feed.info().await.unwrap();
    assert_eq!((info.description.as_str(), info.decimals), ("BTC / USD", 8));
    let latest = feed.latest().await.unwrap();
    assert_eq!(latest.round_id, proxy_id(2, 2));

    let q = round_at(&feed, t0 + 150, TimeField::UpdatedAt).await.unwrap().unwrap();
    assert_eq!((q.round.round_id, q.next_round_id), (proxy_id(1, 2), proxy_id(1, 3)));
    assert_eq!(q.round.answer, I256::try_from(101).unwrap());
    let q = round_at(&feed, t0 + 250, TimeField::UpdatedAt).await.unwrap().unwrap();
    assert_eq!((q.round.round_id, q.next_round_id), (proxy_id(1, 3), proxy_id(2, 1)));
    let q = round_at(&feed, t0 + 350, TimeField::UpdatedAt).await.unwrap().unwrap();
    assert_eq!((q.round.round_id, q.next_round_id), (proxy_id(2, 1), proxy_id(2, 2)));
    let q = round_at(&feed, t0 + 10_000, TimeField::UpdatedAt).await.unwrap().unwrap();
    assert_eq!((q.round.round_id, q.next_round_id), (proxy_id(2, 2), 0));
    assert!(round_at(&feed, t0 - 50, TimeField::UpdatedAt).await.unwrap().is_none());
    // Missing rounds read as None (the proxy reverts for an unknown phase, the mock returns zeros).
    assert!(feed.round(proxy_id(7, 1)).await.unwrap().is_none());
    assert!(feed.round(proxy_id(1, 9)).await.unwrap().is_none());
    assert!(feed.cached() >= 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_endpoint_is_a_transport_error() {
    let p = alloy::providers::ProviderBuilder::new().connect_http("http://127.0.0.1:9".parse().unwrap());
    let feed = AlloyFeed::new(alloy::primitives::Address::ZERO, p);
    let e = feed.latest().await.unwrap_err();
    assert!(matches!(e, kronos_chainlink::ReadError::Transport { .. }), "{e:?}");
}
