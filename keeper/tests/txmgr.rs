//! The transaction manager against a real anvil node, with faults injected through anvil's RPC.

use std::sync::atomic::Ordering;
use std::time::Duration;

use alloy::primitives::{Bytes, U256};
use alloy::providers::Provider;
use alloy::sol_types::SolCall;
use kronos_common::{Bus, FeeModel};
use kronos_contracts::mocks::MockV3Aggregator;
use kronos_keeper::rpc::FailoverTransport;
use kronos_keeper::store::{Store, TxStatus};
use kronos_keeper::txmgr::{TxError, TxManager, TxPolicy};
use kronos_testkit::{spawn, Node, NodeOptions};

async fn manager(node: &Node, key: usize, confirmations: u64) -> (TxManager, Store) {
    let store = Store::connect("sqlite::memory:").await.unwrap();
    let t = FailoverTransport::new("dev", &[node.url.parse().unwrap()]);
    let policy = TxPolicy {
        fee_model: FeeModel::Eip1559,
        max_fee_wei: U256::from(5_000_000_000_000u64),
        max_priority_fee_wei: U256::from(10_000_000_000u64),
        bump_after: Duration::from_millis(800),
        bump_percent: 12,
        confirmations,
        poll: Duration::from_millis(100),
    };
    let m =
        TxManager::new("dev", t.provider(), node.keys[key].clone(), policy, store.clone(), Bus::new(64)).await.unwrap();
    (m, store)
}

fn update_call(v: i64) -> Bytes {
    MockV3Aggregator::updateAnswerCall { _answer: alloy::primitives::I256::try_from(v).unwrap() }.abi_encode().into()
}

async fn rpc(node: &Node, method: &'static str, params: serde_json::Value) -> serde_json::Value {
    node.provider.raw_request::<_, serde_json::Value>(method.into(), params).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_confirms_and_records() {
    let node = spawn(NodeOptions::default());
    let feed = kronos_testkit::deploy_mock_feed(&node.provider, 8, 1).await.unwrap();
    let (m, store) = manager(&node, 1, 1).await;
    let mined = m.send("update:1", feed, update_call(42), U256::ZERO).await.unwrap();
    assert!(mined.block > 0 && mined.gas_used > 0);
    let c = MockV3Aggregator::new(feed, node.provider.clone());
    assert_eq!(c.latestAnswer().call().await.unwrap(), alloy::primitives::I256::try_from(42).unwrap());
    let rows = store.txs_for_action("dev", "update:1").await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].status, TxStatus::Confirmed);
    // Nonces follow each other without a round trip.
    let b = m.send("update:2", feed, update_call(43), U256::ZERO).await.unwrap();
    let rows = store.txs_for_action("dev", "update:2").await.unwrap();
    assert_eq!(rows[0].nonce, 1);
    assert!(b.block > mined.block);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reverting_call_is_never_sent() {
    let node = spawn(NodeOptions::default());
    let market = kronos_testkit::deploy_market(&node.provider, node.address(0)).await.unwrap();
    let (m, store) = manager(&node, 1, 1).await;
    let data: Bytes = kronos_contracts::market::KronosMarket::executeCall {
        marketId: U256::from(9),
        index: U256::ZERO,
        price: Default::default(),
        sequencer: Default::default(),
    }
    .abi_encode()
    .into();
    let nonce_before = node.provider.get_transaction_count(node.address(1)).await.unwrap();
    let e = m.send("execute:9:0", market, data, U256::ZERO).await.unwrap_err();
    match e {
        TxError::Revert { reason, .. } => assert!(reason.contains("UnknownMarket"), "{reason}"),
        other => panic!("{other:?}"),
    }
    assert!(store.txs_for_action("dev", "execute:9:0").await.unwrap().is_empty());
    assert_eq!(node.provider.get_transaction_count(node.address(1)).await.unwrap(), nonce_before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_base_fee_spike_is_answered_with_a_replacement() {
    let node = spawn(NodeOptions::default());
    let feed = kronos_testkit::deploy_mock_feed(&node.provider, 8, 1).await.unwrap();
    rpc(&node, "evm_setAutomine", serde_json::json!([false])).await;
    let (m, store) = manager(&node, 1, 1).await;
    let base_before = node
        .provider
        .get_block_by_number(alloy::eips::BlockNumberOrTag::Latest)
        .await
        .unwrap()
        .unwrap()
        .header
        .base_fee_per_gas
        .unwrap();
    let task = tokio::spawn(async move { (m.send("update:spike", feed, update_call(7), U256::ZERO).await, m) });
    // Let it broadcast at today's fees, then make blocks far more expensive and keep mining.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let spike = base_before as u128 * 40;
    for _ in 0..60 {
        rpc(&node, "anvil_setNextBlockBaseFeePerGas", serde_json::json!([format!("0x{spike:x}")])).await;
        rpc(&node, "evm_mine", serde_json::json!([])).await;
        if task.is_finished() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let (res, m) = task.await.unwrap();
    let mined = res.unwrap();
    assert!(mined.effective_gas_price >= spike, "mined at {} below the spike {}", mined.effective_gas_price, spike);
    assert!(m.counters.bumped.load(Ordering::Relaxed) >= 1);
    let rows = store.txs_for_action("dev", "update:spike").await.unwrap();
    assert!(rows.len() >= 2, "{rows:?}");
    assert_eq!(rows.iter().filter(|r| r.status == TxStatus::Confirmed).count(), 1);
    assert!(rows.iter().any(|r| r.status == TxStatus::Replaced));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_transaction_is_broadcast_again() {
    let node = spawn(NodeOptions::default());
    let feed = kronos_testkit::deploy_mock_feed(&node.provider, 8, 1).await.unwrap();
    rpc(&node, "evm_setAutomine", serde_json::json!([false])).await;
    let (m, store) = manager(&node, 1, 1).await;
    let task = tokio::spawn(async move { (m.send("update:drop", feed, update_call(9), U256::ZERO).await, m) });
    // Wait for it to reach the pool, drop it, then mine.
    let mut dropped = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if let Some(row) = store.txs_for_action("dev", "update:drop").await.unwrap().first() {
            if row.status == TxStatus::Pending {
                rpc(&node, "anvil_dropTransaction", serde_json::json!([row.tx_hash])).await;
                dropped = true;
                break;
            }
        }
    }
    assert!(dropped);
    for _ in 0..60 {
        rpc(&node, "evm_mine", serde_json::json!([])).await;
        if task.is_finished() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let (res, m) = task.await.unwrap();
    res.unwrap();
    assert!(m.counters.rebroadcast.load(Ordering::Relaxed) >= 1);
    let c = MockV3Aggregator::new(feed, node.provider.clone());
    assert_eq!(c.latestAnswer().call().await.unwrap(), alloy::primitives::I256::try_from(9).unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reorg_before_confirmation_is_followed_to_a_canonical_block() {
    let node = spawn(NodeOptions::default());
    let feed = kronos_testkit::deploy_mock_feed(&node.provider, 8, 1).await.unwrap();
    rpc(&node, "evm_setAutomine", serde_json::json!([false])).await;
    let snap = rpc(&node, "evm_snapshot", serde_json::json!([])).await;
    let (m, _store) = manager(&node, 1, 3).await;
    let task = tokio::spawn(async move { (m.send("update:reorg", feed, update_call(11), U256::ZERO).await, m) });
    tokio::time::sleep(Duration::from_millis(400)).await;
    // Mine it into one block, then take that block away before it has 3 confirmations.
    rpc(&node, "evm_mine", serde_json::json!([])).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    rpc(&node, "evm_revert", serde_json::json!([snap])).await;
    for _ in 0..80 {
        rpc(&node, "evm_mine", serde_json::json!([])).await;
        if task.is_finished() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let (res, m) = task.await.unwrap();
    let mined = res.unwrap();
    assert!(m.counters.reorged.load(Ordering::Relaxed) + m.counters.rebroadcast.load(Ordering::Relaxed) >= 1);
    let r = node.provider.get_transaction_receipt(mined.hash).await.unwrap().unwrap();
    assert_eq!(r.block_number, Some(mined.block));
    let c = MockV3Aggregator::new(feed, node.provider.clone());
    assert_eq!(c.latestAnswer().call().await.unwrap(), alloy::primitives::I256::try_from(11).unwrap());
}

async fn manager_via(url: &str, node: &Node, key: usize, store: Store, bus: Bus) -> TxManager {
    let t = FailoverTransport::new("dev", &[url.parse().unwrap()]);
    let policy = TxPolicy {
        fee_model: FeeModel::Eip1559,
        max_fee_wei: U256::from(5_000_000_000_000u64),
        max_priority_fee_wei: U256::from(10_000_000_000u64),
        bump_after: Duration::from_millis(800),
        bump_percent: 12,
        confirmations: 1,
        poll: Duration::from_millis(100),
    };
    TxManager::new("dev", t.provider(), node.keys[key].clone(), policy, store, bus).await.unwrap()
}

/// Issue 13, item 7: the connection drops while a send is under way, once before anything was broadcast (reading
/// fees) and once while the mined transaction is being confirmed. Neither may leave a nonce gap (every later
/// transaction stuck behind it) or a transaction unfollowed in the pool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_connection_mid_send_leaves_no_nonce_gap() {
    let node = spawn(NodeOptions::default());
    let feed = kronos_testkit::deploy_mock_feed(&node.provider, 8, 1).await.unwrap();
    let proxy = kronos_testkit::rpcproxy::RpcProxy::start(&node.url).await;
    let store = Store::connect("sqlite::memory:").await.unwrap();
    let m = manager_via(&proxy.url, &node, 1, store.clone(), Bus::new(64)).await;
    m.send("update:1", feed, update_call(1), U256::ZERO).await.unwrap();
    // The fee read fails: the send fails, and must give its nonce back.
    proxy.fail_next("eth_feeHistory", 1);
    assert!(matches!(m.send("update:2", feed, update_call(2), U256::ZERO).await, Err(TxError::Transport(_))));
    // The confirmation read fails after the transaction was mined: keep following it, do not give up on it.
    proxy.fail_next("eth_blockNumber", 2);
    let mined = tokio::time::timeout(Duration::from_secs(20), m.send("update:3", feed, update_call(3), U256::ZERO))
        .await
        .expect("send 3 hangs")
        .expect("send 3 gave up on a transaction it had broadcast");
    assert_eq!(proxy.pending_failures("eth_blockNumber"), 0, "the fault was not hit");
    let rows = store.txs_for_action("dev", "update:3").await.unwrap();
    assert_eq!(rows[0].nonce, 1, "a nonce was skipped");
    assert_eq!(rows[0].tx_hash, mined.hash.to_string());
    // And the next one goes straight through.
    tokio::time::timeout(Duration::from_secs(20), m.send("update:4", feed, update_call(4), U256::ZERO))
        .await
        .expect("a later transaction is stuck behind a nonce gap")
        .unwrap();
    assert_eq!(store.txs_for_action("dev", "update:4").await.unwrap()[0].nonce, 2);
    let c = MockV3Aggregator::new(feed, node.provider.clone());
    assert_eq!(c.latestAnswer().call().await.unwrap(), alloy::primitives::I256::try_from(4).unwrap());
}

/// Issue 13, item 7: a keeper killed while its transaction waits in the pool. The next run must not leave that
/// transaction in the pool (to be mined later and run its action again, or to hold up every later nonce): it is
/// cancelled, and the store says what happened.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_left_in_the_pool_by_a_killed_run_is_cancelled_on_restart() {
    let node = spawn(NodeOptions::default());
    let feed = kronos_testkit::deploy_mock_feed(&node.provider, 8, 1).await.unwrap();
    rpc(&node, "evm_setAutomine", serde_json::json!([false])).await;
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/k.db", dir.path().display());
    let store = Store::connect(&url).await.unwrap();
    let first = manager_via(&node.url, &node, 1, store.clone(), Bus::new(64)).await;
    let task = tokio::spawn(async move { first.send("update:killed", feed, update_call(7), U256::ZERO).await });
    let mut pending = false;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if store
            .txs_for_action("dev", "update:killed")
            .await
            .unwrap()
            .first()
            .is_some_and(|r| r.status == TxStatus::Pending)
        {
            pending = true;
            break;
        }
    }
    assert!(pending, "the first run never broadcast");
    // Killed: nothing follows the transaction any more.
    task.abort();
    let _ = task.await;
    let second = manager_via(&node.url, &node, 1, store.clone(), Bus::new(64)).await;
    let nonce = store.txs_for_action("dev", "update:killed").await.unwrap()[0].nonce;
    let recover = tokio::spawn(async move { (second.recover().await, second) });
    // Nothing is mined until the new run has looked at the pool (and sent whatever it sends).
    for _ in 0..100 {
        let cancel = store.txs_for_action("dev", &format!("cancel:{nonce}")).await.unwrap();
        if recover.is_finished() || cancel.iter().any(|r| r.status == TxStatus::Pending) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for _ in 0..100 {
        rpc(&node, "evm_mine", serde_json::json!([])).await;
        if recover.is_finished() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let (res, second) = recover.await.unwrap();
    res.unwrap();
    rpc(&node, "evm_mine", serde_json::json!([])).await;
    let addr = node.address(1);
    let latest = node.provider.get_transaction_count(addr).latest().await.unwrap();
    let pending = node.provider.get_transaction_count(addr).pending().await.unwrap();
    assert_eq!(latest, pending, "a transaction of the killed run is still in the pool");
    // The store agrees with the chain: the old action ran exactly when its row says confirmed.
    let c = MockV3Aggregator::new(feed, node.provider.clone());
    let ran = c.latestAnswer().call().await.unwrap() == alloy::primitives::I256::try_from(7).unwrap();
    let rows = store.txs_for_action("dev", "update:killed").await.unwrap();
    assert_eq!(rows.iter().any(|r| r.status == TxStatus::Confirmed), ran, "{rows:?}");
    let cancels = store.txs_for_action("dev", &format!("cancel:{}", rows[0].nonce)).await.unwrap();
    assert_eq!(cancels.iter().any(|r| r.status == TxStatus::Confirmed), !ran, "{cancels:?}");
    // Later transactions are not stuck.
    rpc(&node, "evm_setAutomine", serde_json::json!([true])).await;
    tokio::time::timeout(Duration::from_secs(20), second.send("update:next", feed, update_call(8), U256::ZERO))
        .await
        .expect("stuck behind the old transaction")
        .unwrap();
}

/// Issue 18 audit M4: the lease is lost while a broadcast transaction waits in the pool (its fees below a spiked base
/// fee). The send ends `Fenced`, but the nonce is this keeper's own: it is cancelled (a zero-value transfer to the
/// signer at raised fees) and followed without the lease, so no transaction is left stuck in the pool with the
/// signer's later ones behind it, and the original never runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_orphaned_by_a_lost_lease_is_cancelled_not_left_in_the_pool() {
    use kronos_keeper::lease::{Fence, Lease, LeaseKey, LeaseTiming, LeaseView};
    let pg = kronos_testkit::pg::PgServer::start().expect("PostgreSQL starts (scripts/setup installs it)");
    let store = Store::connect(&pg.url()).await.unwrap();
    let node = spawn(NodeOptions::default());
    let feed = kronos_testkit::deploy_mock_feed(&node.provider, 8, 1).await.unwrap();
    rpc(&node, "evm_setAutomine", serde_json::json!([false])).await;
    let timing = LeaseTiming { ttl: Duration::from_secs(60), refresh: Duration::from_secs(1) };
    let metrics = std::sync::Arc::new(kronos_keeper::metrics::Metrics::default());
    let a = Lease::new(
        LeaseKey { chain: "dev", market: 1, holder: "keeper-a", instance: "ia" },
        &store,
        timing,
        Bus::new(16),
        metrics.clone(),
    );
    a.refresh().await;
    assert!(matches!(a.view(), LeaseView::Leading { epoch: 1, .. }), "{:?}", a.view());
    let m = manager_via(&node.url, &node, 1, store.clone(), Bus::new(64)).await;
    let fence = Fence { lease: a.clone(), epoch: 1 };
    let task = tokio::spawn(async move {
        let r = m
            .send_fenced(Some(&fence), "update:orphan", feed, update_call(7), U256::ZERO, &|| Box::pin(async { false }))
            .await;
        (r, m)
    });
    let mut pending = false;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if store
            .txs_for_action("dev", "update:orphan")
            .await
            .unwrap()
            .first()
            .is_some_and(|r| r.status == TxStatus::Pending)
        {
            pending = true;
            break;
        }
    }
    assert!(pending, "never broadcast");
    let base = node.provider.get_block_by_number(alloy::eips::BlockNumberOrTag::Latest).await.unwrap().unwrap();
    let spike = base.header.base_fee_per_gas.unwrap() as u128 * 40;
    rpc(&node, "anvil_setNextBlockBaseFeePerGas", serde_json::json!([format!("0x{spike:x}")])).await;
    rpc(&node, "evm_mine", serde_json::json!([])).await;
    // Another keeper takes the market over: keeper-a's term is over.
    store.release_lease(&a.token(1).unwrap()).await.unwrap();
    let b = Lease::new(
        LeaseKey { chain: "dev", market: 1, holder: "keeper-b", instance: "ib" },
        &store,
        timing,
        Bus::new(16),
        metrics,
    );
    b.refresh().await;
    a.refresh().await;
    assert!(matches!(b.view(), LeaseView::Leading { epoch: 2, .. }) && !a.may_send(1));
    for _ in 0..100 {
        rpc(&node, "anvil_setNextBlockBaseFeePerGas", serde_json::json!([format!("0x{spike:x}")])).await;
        rpc(&node, "evm_mine", serde_json::json!([])).await;
        if task.is_finished() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let (res, _m) = task.await.unwrap();
    assert!(matches!(res, Err(TxError::Fenced(_))), "{res:?}");
    // Nothing of keeper-a's is left in the pool.
    for _ in 0..20 {
        rpc(&node, "anvil_setNextBlockBaseFeePerGas", serde_json::json!([format!("0x{spike:x}")])).await;
        rpc(&node, "evm_mine", serde_json::json!([])).await;
    }
    let addr = node.address(1);
    let latest = node.provider.get_transaction_count(addr).latest().await.unwrap();
    let in_pool = node.provider.get_transaction_count(addr).pending().await.unwrap();
    assert_eq!(latest, in_pool, "the orphaned transaction is still in the pool");
    let nonce = store.txs_for_action("dev", "update:orphan").await.unwrap()[0].nonce;
    let cancels = store.txs_for_action("dev", &format!("cancel:{nonce}")).await.unwrap();
    assert!(cancels.iter().any(|r| r.status == TxStatus::Confirmed), "{cancels:?}");
    let c = MockV3Aggregator::new(feed, node.provider.clone());
    assert_ne!(c.latestAnswer().call().await.unwrap(), alloy::primitives::I256::try_from(7).unwrap());
}

/// Issue 18 audit M5: keepers sharing a signer; one took a nonce from the nonce authority and never sent it (its
/// fenced write failed, or it died). The next send takes the nonce after it, which waits in the pool behind the gap:
/// after `bump_after` the gap is filled with a zero-value transfer and the send is mined.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_signers_nonce_taken_and_never_sent_is_filled() {
    use kronos_keeper::lease::{Fence, Lease, LeaseKey, LeaseTiming, LeaseView};
    let pg = kronos_testkit::pg::PgServer::start().expect("PostgreSQL starts (scripts/setup installs it)");
    let store = Store::connect(&pg.url()).await.unwrap();
    let node = spawn(NodeOptions::default());
    let feed = kronos_testkit::deploy_mock_feed(&node.provider, 8, 1).await.unwrap();
    let timing = LeaseTiming { ttl: Duration::from_secs(60), refresh: Duration::from_secs(1) };
    let metrics = std::sync::Arc::new(kronos_keeper::metrics::Metrics::default());
    let a = Lease::new(
        LeaseKey { chain: "dev", market: 1, holder: "keeper-a", instance: "ia" },
        &store,
        timing,
        Bus::new(16),
        metrics,
    );
    a.refresh().await;
    assert!(matches!(a.view(), LeaseView::Leading { epoch: 1, .. }), "{:?}", a.view());
    let m = manager_via(&node.url, &node, 1, store.clone(), Bus::new(64)).await;
    m.share_nonces();
    let addr = node.address(1);
    let next = node.provider.get_transaction_count(addr).pending().await.unwrap();
    // Another keeper with the same key takes `next` and never sends it.
    let token = a.token(1).unwrap();
    let taken = store.take_shared_nonce("dev", &addr.to_string(), next as i64, &token, 30_000).await.unwrap();
    assert_eq!(taken as u64, next);
    let fence = Fence { lease: a.clone(), epoch: 1 };
    let mined = tokio::time::timeout(
        Duration::from_secs(30),
        m.send_fenced(Some(&fence), "update:gap", feed, update_call(9), U256::ZERO, &|| Box::pin(async { false })),
    )
    .await
    .expect("the send stayed stuck behind the gap")
    .unwrap();
    let tx = node.provider.get_transaction_by_hash(mined.hash).await.unwrap().unwrap();
    assert_eq!(alloy::consensus::Transaction::nonce(&tx), next + 1);
    let fills = store.txs_for_action("dev", &format!("fill:{next}")).await.unwrap();
    assert_eq!(fills.len(), 1, "{fills:?}");
    assert_eq!(node.provider.get_transaction_count(addr).latest().await.unwrap(), next + 2);
}
