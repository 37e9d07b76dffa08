//! Settlements the keeper did not send itself (issue 13, items 4 and 10): checkpoints executed by someone else, and
//! the keeper's own execute front-run by a copy with a higher tip. The chain is the truth: the store and the signals
//! follow its events, and being beaten to a checkpoint is no failure.

use std::sync::Arc;
use std::time::Duration;

use alloy::network::TransactionBuilder;
use alloy::providers::Provider;
use kronos_common::signals::{Signal, SignalKind};
use kronos_common::Bus;
use kronos_keeper::engine::{Keeper, Overrides};
use kronos_testkit::harness::{self as common, start, INTERVAL};
use tokio::sync::broadcast::Receiver;
use tokio_util::sync::CancellationToken;

/// Dev account that plays "someone else".
const OTHER: usize = 5;

fn bettors(net: &common::Net, cancel: &CancellationToken) {
    for (i, c) in net.chains.iter().enumerate() {
        let stats = Arc::new(parking_lot::Mutex::new(kronos_testkit::bettors::BetStats::default()));
        tokio::spawn(kronos_testkit::bettors::run(
            c.clone(),
            INTERVAL,
            Duration::from_millis(200),
            11 + i as u64,
            stats,
            cancel.clone(),
        ));
    }
}

/// Waits for the first signal that `f` picks, failing after `secs`.
async fn wait_signal<T>(
    rx: &mut Receiver<Arc<Signal>>,
    secs: u64,
    what: &str,
    f: impl Fn(&SignalKind) -> Option<T>,
) -> T {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Ok(s)) => {
                if let Some(v) = f(&s.kind) {
                    return v;
                }
            }
            Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => {}
            Ok(Err(e)) => panic!("bus closed while waiting for {what}: {e}"),
            Err(_) => panic!("timed out waiting for {what}"),
        }
    }
}

fn final_epoch(k: &SignalKind) -> Option<u64> {
    match k {
        SignalKind::RoundSettled { epoch, .. } | SignalKind::RoundCancelled { epoch, .. } => Some(*epoch),
        _ => None,
    }
}

/// Stops mining on the first chain, then moves its time past the next checkpoint (and its execute delay) with one
/// block, before the feed's next update would come.
async fn stop_mining_past_the_next_checkpoint(net: &common::Net) {
    let q = net.chains[0].wallet(0);
    q.raw_request::<_, serde_json::Value>("evm_setIntervalMining".into(), (0,)).await.unwrap();
    q.raw_request::<_, serde_json::Value>("evm_setAutomine".into(), (false,)).await.unwrap();
    let t = kronos_testkit::head_time(&q).await.unwrap();
    let g = net.chains[0].genesis();
    let k_next = (t - g) / INTERVAL + 1;
    let delay = kronos_testkit::deploy::execute_delay(INTERVAL as u32) as u64;
    kronos_testkit::mine_at(&q, g + k_next * INTERVAL + delay + 1).await.unwrap();
}

/// The next execute the keeper sends that is still in the pool, for a checkpoint not recorded yet: (checkpoint, tx).
async fn pending_execute(net: &common::Net, rx: &mut Receiver<Arc<Signal>>) -> (u64, alloy::rpc::types::Transaction) {
    let q = net.chains[0].wallet(0);
    loop {
        let (j, hash) = wait_signal(rx, 60, "the keeper sending an execute", |s| match s {
            SignalKind::TxSent { action, tx_hash, .. } => {
                action.strip_prefix("execute:1:").map(|j| (j.parse::<u64>().unwrap(), tx_hash.clone()))
            }
            _ => None,
        })
        .await;
        match q.get_transaction_by_hash(hash.parse().unwrap()).await.unwrap() {
            Some(tx) if tx.block_number.is_none() && net.checkpoint(0, j).await.0 == 0 => return (j, tx),
            _ => continue,
        }
    }
}

/// Item 10: another keeper executes the checkpoints while ours is down. When ours starts, the rounds those
/// checkpoints locked and settled must reach its store and its signal stream (as for its own transactions), not stay
/// "locked" for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rounds_settled_by_someone_elses_checkpoints_are_recorded_and_signalled() {
    let net = start(&["base"]).await;
    let cancel = CancellationToken::new();
    bettors(&net, &cancel);
    // Someone else's keeper, with its own key and store.
    let mut other_cfg = net.config(&[], false);
    other_cfg.store = format!("sqlite://{}/other.db", net.dir.path().display());
    other_cfg.keeper_id = "other".into();
    let other_signer: alloy::signers::local::PrivateKeySigner = net.chains[0].keys[OTHER].clone();
    let other =
        Keeper::build(&other_cfg, other_signer, Bus::new(4096), Overrides { no_api: true, ..Default::default() })
            .await
            .unwrap();
    let other_stop = CancellationToken::new();
    let other_run = tokio::spawn(other.run(other_stop.clone()));
    net.wait_checkpoint(0, 5, 0).await;
    // Wait for checkpoint 5 on chain (the event this test is about), then stop the other keeper.
    let mut k_last = 0;
    for _ in 0..600 {
        if net.checkpoint(0, 5).await.0 > 0 {
            k_last = 5;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(k_last, 5, "the other keeper never recorded checkpoint 5");
    other_stop.cancel();
    other_run.await.unwrap().unwrap();
    // The highest checkpoint recorded by the other keeper.
    while net.checkpoint(0, k_last + 1).await.0 > 0 {
        k_last += 1;
    }

    // Our keeper starts: every round settled by those checkpoints is news to it.
    let bus = Bus::new(8192);
    let mut rx = bus.subscribe();
    let cfg = net.config(&[], false);
    let keeper =
        Keeper::build(&cfg, net.signer(), bus.clone(), Overrides { no_api: true, ..Default::default() }).await.unwrap();
    let store = keeper.store.clone();
    let run = tokio::spawn(keeper.run(cancel.clone()));
    let target = k_last - 2;
    wait_signal(&mut rx, 60, &format!("round {target} settled or refunded"), |k| {
        final_epoch(k).filter(|e| *e == target)
    })
    .await;
    let rounds = store.rounds(Some("base"), Some(1), 100).await.unwrap();
    let r = rounds.iter().find(|r| r.epoch == target as i64).expect("the round is in the store");
    assert!(
        matches!(r.state, kronos_keeper::store::RoundState::Settled | kronos_keeper::store::RoundState::Cancelled),
        "round {target}: {r:?}"
    );
    // The round that checkpoint k_last locked is locked, with its lock price.
    let locked = rounds.iter().find(|r| r.epoch == (k_last - 1) as i64);
    if let Some(l) = locked {
        assert!(l.lock_price.is_some(), "{l:?}");
    }
    // The checkpoint's row (its recording transaction marks the receipt handled) is written after the rounds it
    // locks and settles, so it may land just after their signals: wait for it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let cp = store.checkpoints("base", 1, k_last as i64, 1).await.unwrap();
        if cp.first().is_some_and(|c| c.tx_hash.is_some()) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the recording transaction is not stored: {cp:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cancel.cancel();
    run.await.unwrap().unwrap();
}

/// Item 4: a copy of the keeper's execute with a higher tip lands first and the keeper's own reverts on chain with
/// CheckpointAlreadyRecorded. The checkpoint is done: no failure alert, the round it settles is recorded and
/// signalled, and the keeper carries on.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_front_run_execute_is_success_without_an_alert() {
    let net = start(&["base"]).await;
    let cancel = CancellationToken::new();
    bettors(&net, &cancel);
    let bus = Bus::new(8192);
    let mut rx = bus.subscribe();
    let mut failures = bus.subscribe();
    let mut rounds = bus.subscribe();
    let cfg = net.config(&[], false);
    let keeper =
        Keeper::build(&cfg, net.signer(), bus.clone(), Overrides { no_api: true, ..Default::default() }).await.unwrap();
    let store = keeper.store.clone();
    let run = tokio::spawn(keeper.run(cancel.clone()));
    net.wait_checkpoint(0, 4, 0).await;

    let q = net.chains[0].wallet(0);
    stop_mining_past_the_next_checkpoint(&net).await;
    // The keeper broadcasts an execute still waiting in the pool (checkpoint k, or k - 1 if that one was not due yet
    // when mining stopped); copy it with a higher tip from another account.
    let (k, theirs) = pending_execute(&net, &mut rx).await;
    let action = format!("execute:1:{k}");
    let copier = net.chains[0].wallet(OTHER);
    let copy = alloy::rpc::types::TransactionRequest::default()
        .with_to(net.chains[0].deployment.market)
        .with_input(alloy::consensus::Transaction::input(theirs.inner.inner()).clone())
        .with_gas_limit(2_000_000)
        .with_max_fee_per_gas(1_000_000_000_000)
        .with_max_priority_fee_per_gas(500_000_000_000);
    let pending = copier.send_transaction(copy).await.unwrap();
    let copy_hash = *pending.tx_hash();
    q.raw_request::<_, serde_json::Value>("evm_mine".into(), ()).await.unwrap();
    let r = q.get_transaction_receipt(copy_hash).await.unwrap().expect("the copy is mined");
    assert!(r.status(), "the copy reverted");
    q.raw_request::<_, serde_json::Value>("evm_setIntervalMining".into(), (1,)).await.unwrap();

    // The keeper carries on and records checkpoint k + 1 itself, with no failure alert on the way.
    let next = format!("execute:1:{}", k + 1);
    wait_signal(&mut rx, 120, &format!("{next} confirmed"), |s| match s {
        SignalKind::TxConfirmed { action, .. } if *action == next => Some(()),
        _ => None,
    })
    .await;
    while let Ok(s) = failures.try_recv() {
        assert!(!matches!(&s.kind, SignalKind::TxFailed { .. }), "a failure alert: {:?}", s.kind);
    }
    // The round checkpoint k settled (by the copy's transaction) reached the signals.
    wait_signal(&mut rounds, 30, &format!("round {} settled or refunded", k - 2), |s| {
        final_epoch(s).filter(|e| *e == k - 2)
    })
    .await;
    let rows = store.txs_for_action("base", &action).await.unwrap();
    assert!(rows.iter().all(|r| r.status != kronos_keeper::store::TxStatus::Confirmed), "{rows:?}");
    cancel.cancel();
    run.await.unwrap().unwrap();
}

/// The feed moves between the keeper's proof and its inclusion: the keeper's execute, sent with a "latest round" proof,
/// lands after a new feed round and reverts on chain with ProofNotLatest. That is a race lost, not a failure: no alert,
/// and the keeper proves again (the new round as the successor) and records the checkpoint itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_execute_outdated_by_a_feed_update_is_proved_again_without_an_alert() {
    let net = start(&["base"]).await;
    let cancel = CancellationToken::new();
    bettors(&net, &cancel);
    let bus = Bus::new(8192);
    let mut rx = bus.subscribe();
    let mut failures = bus.subscribe();
    let cfg = net.config(&[], false);
    let keeper =
        Keeper::build(&cfg, net.signer(), bus.clone(), Overrides { no_api: true, ..Default::default() }).await.unwrap();
    let run = tokio::spawn(keeper.run(cancel.clone()));
    net.wait_checkpoint(0, 4, 0).await;

    // Only this test moves the feed from now on: stop the replay and wait until its last update (if any) is mined.
    net.replay_cancel[0].cancel();
    let q = net.chains[0].wallet(0);
    let oracle = net.chains[0].keys[9].address();
    loop {
        let mined = q.get_transaction_count(oracle).await.unwrap();
        let pending = q.get_transaction_count(oracle).pending().await.unwrap();
        if mined == pending {
            break;
        }
        q.raw_request::<_, serde_json::Value>("evm_mine".into(), ()).await.unwrap();
    }
    // Stop mining, then move time past the next checkpoint (and its execute delay, but before the feed's next update
    // would come) with one block: the only proof of that checkpoint is the latest feed round, with no successor.
    stop_mining_past_the_next_checkpoint(&net).await;
    // The keeper's execute waiting in the pool with a "latest round" proof (checkpoint k_next, or k_next - 1 first if
    // that one was not due yet when mining stopped: its proof has a successor, so mine it and wait for the next).
    let (k, ours) = loop {
        let (j, tx) = pending_execute(&net, &mut rx).await;
        let call = <kronos_contracts::market::KronosMarket::executeCall as alloy::sol_types::SolCall>::abi_decode(
            alloy::consensus::Transaction::input(tx.inner.inner()),
        )
        .unwrap();
        if call.price.nextRoundId.is_zero() {
            break (j, tx);
        }
        q.raw_request::<_, serde_json::Value>("evm_mine".into(), ()).await.unwrap();
    };
    // A new feed round lands first (higher tip, same block): the keeper's proof is no longer the latest.
    let update = alloy::rpc::types::TransactionRequest::default()
        .with_to(net.chains[0].aggregator)
        .with_input(alloy::primitives::Bytes::from(alloy::sol_types::SolCall::abi_encode(
            &kronos_contracts::mocks::MockV3Aggregator::updateAnswerCall {
                _answer: alloy::primitives::I256::try_from(6_000_000_000_000i64).unwrap(),
            },
        )))
        .with_gas_limit(500_000)
        .with_max_fee_per_gas(1_000_000_000_000)
        .with_max_priority_fee_per_gas(500_000_000_000);
    let update = *net.chains[0].wallet(OTHER).send_transaction(update).await.unwrap().tx_hash();
    q.raw_request::<_, serde_json::Value>("evm_mine".into(), ()).await.unwrap();
    let u = q.get_transaction_receipt(update).await.unwrap().expect("the feed update is mined");
    assert!(u.status(), "the feed update reverted");
    // The keeper's execute (or a fee replacement of it: same nonce) reverted in that block, behind the update.
    let keeper = net.signer().address();
    let receipts = q.get_block_receipts(u.block_number.unwrap().into()).await.unwrap().unwrap_or_default();
    let theirs: Vec<_> = receipts.iter().filter(|r| r.from == keeper).collect();
    assert!(
        theirs.iter().any(|r| !r.status() && r.to == Some(net.chains[0].deployment.market)),
        "the keeper's execute (nonce {}) should revert behind the feed update: {theirs:?}",
        alloy::consensus::Transaction::nonce(ours.inner.inner())
    );
    assert_eq!(net.checkpoint(0, k).await.0, 0, "checkpoint {k} is not recorded yet");
    q.raw_request::<_, serde_json::Value>("evm_setIntervalMining".into(), (1,)).await.unwrap();

    // The keeper proves again and records checkpoint k itself, with no failure alert on the way.
    let action = format!("execute:1:{k}");
    wait_signal(&mut rx, 120, &format!("{action} confirmed"), |s| match s {
        SignalKind::TxConfirmed { action: a, .. } if *a == action => Some(()),
        _ => None,
    })
    .await;
    assert!(net.checkpoint(0, k).await.0 > 0, "checkpoint {k} recorded");
    while let Ok(s) = failures.try_recv() {
        assert!(!matches!(&s.kind, SignalKind::TxFailed { .. }), "a failure alert: {:?}", s.kind);
    }
    cancel.cancel();
    run.await.unwrap().unwrap();
}

/// Item 10, after a long downtime: the keeper locked a round, was stopped, and someone else executed the checkpoints
/// for longer than the settle window, so the checkpoint that settled the round is before anything the catch-up
/// looks at. On restart the round must still take its final state from the chain.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_round_left_locked_by_a_long_downtime_takes_its_state_from_the_chain() {
    let net = start(&["base"]).await;
    let cancel = CancellationToken::new();
    bettors(&net, &cancel);
    let cfg = net.config(&[], false);
    let bus = Bus::new(8192);
    let mut rx = bus.subscribe();
    let keeper =
        Keeper::build(&cfg, net.signer(), bus.clone(), Overrides { no_api: true, ..Default::default() }).await.unwrap();
    let store = keeper.store.clone();
    let stop = CancellationToken::new();
    let run = tokio::spawn(keeper.run(stop.clone()));
    // Run until a round is locked, then stop.
    wait_signal(&mut rx, 60, "a round locked", |k| {
        matches!(k, SignalKind::RoundLocked { epoch, .. } if *epoch >= 1).then_some(())
    })
    .await;
    stop.cancel();
    run.await.unwrap().unwrap();
    let rounds = store.rounds(Some("base"), Some(1), 100).await.unwrap();
    let locked = rounds
        .iter()
        .filter(|r| r.state == kronos_keeper::store::RoundState::Locked)
        .map(|r| r.epoch as u64)
        .max()
        .expect("a locked round");

    // Someone else keeps the market going for longer than the settle window (12 rounds here).
    let mut other_cfg = net.config(&[], false);
    other_cfg.store = format!("sqlite://{}/other.db", net.dir.path().display());
    other_cfg.keeper_id = "other".into();
    let other = Keeper::build(
        &other_cfg,
        net.chains[0].keys[OTHER].clone(),
        Bus::new(4096),
        Overrides { no_api: true, ..Default::default() },
    )
    .await
    .unwrap();
    let other_stop = CancellationToken::new();
    let other_run = tokio::spawn(other.run(other_stop.clone()));
    let far = locked + 16;
    net.wait_checkpoint(0, far, 0).await;
    for _ in 0..600 {
        if net.checkpoint(0, far).await.0 > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(net.checkpoint(0, far).await.0 > 0, "the other keeper never recorded checkpoint {far}");
    other_stop.cancel();
    other_run.await.unwrap().unwrap();
    assert!(net.checkpoint(0, locked + 2).await.0 > 0);

    // Back: the round it left locked is settled or refunded on chain, and must be so in its store and signals.
    let bus = Bus::new(8192);
    let mut rx = bus.subscribe();
    let keeper =
        Keeper::build(&cfg, net.signer(), bus.clone(), Overrides { no_api: true, ..Default::default() }).await.unwrap();
    let run = tokio::spawn(keeper.run(cancel.clone()));
    wait_signal(&mut rx, 60, &format!("round {locked} settled or refunded"), |k| {
        final_epoch(k).filter(|e| *e == locked)
    })
    .await;
    let rounds = store.rounds(Some("base"), Some(1), 100).await.unwrap();
    let r = rounds.iter().find(|r| r.epoch == locked as i64).unwrap();
    assert!(
        matches!(r.state, kronos_keeper::store::RoundState::Settled | kronos_keeper::store::RoundState::Cancelled),
        "{r:?}"
    );
    cancel.cancel();
    run.await.unwrap().unwrap();
}
