//! What one lease term leaves to the next, with market drivers in this process on one PostgreSQL store (issue 18,
//! audit M2 and M3): a receipt whose round rows could not be written stays unmarked in the store, so it is handled
//! again; a keeper that takes a market over refills the forecaster's checkpoint candles with what the previous
//! leader recorded meanwhile.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use alloy::signers::local::PrivateKeySigner;
use kronos_common::Bus;
use kronos_keeper::chain::ChainRuntime;
use kronos_keeper::lease::LeaseTiming;
use kronos_keeper::metrics::Metrics;
use kronos_keeper::publisher::{CandleSource, CheckpointCandles};
use kronos_keeper::scheduler::{DriverShared, MarketDriver};
use kronos_keeper::store::{LeaseRow, RoundState, Store};
use kronos_testkit::harness::{start, Net, INTERVAL};
use kronos_testkit::pg::PgServer;
use tokio_util::sync::CancellationToken;

const POLL: Duration = Duration::from_millis(100);
const TIMING: LeaseTiming = LeaseTiming { ttl: Duration::from_millis(3000), refresh: Duration::from_millis(500) };

/// Waits for `what` (polled every 100 ms) up to `secs`.
async fn wait_until<T, F, Fut>(what: &str, secs: u64, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if let Some(v) = f().await {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out after {secs} s waiting for {what}");
}

/// A driver of market 1 on the net's first chain as keeper `id`, signing with dev account `account`, on its own
/// connection to the store at `url` (as a keeper process of its own would be).
async fn driver(net: &Net, url: &str, id: &str, account: usize) -> MarketDriver {
    let store = Store::connect(url).await.unwrap();
    let bus = Bus::new(1024);
    let cfg = net.config(&[], false);
    let signer: PrivateKeySigner = net.chains[0].keys[account].clone();
    let rt = ChainRuntime::connect(&cfg.chains[0], signer, store.clone(), bus.clone(), POLL).await.unwrap();
    let shared = DriverShared {
        store,
        bus,
        metrics: Arc::new(Metrics::default()),
        keeper_id: id.into(),
        publisher: None,
        poll: POLL,
        lease: TIMING,
    };
    MarketDriver::new(rt, 1, shared).await.unwrap()
}

async fn live_lease(store: &Store) -> Option<LeaseRow> {
    store.lease("base", 1).await.ok().flatten().filter(|l| l.expires_ms > l.db_now_ms)
}

/// Whether the store has checkpoint `k` marked handled (its row with the transaction hash of its receipt).
async fn handled(store: &Store, k: u64) -> bool {
    let rows = store.checkpoints("base", 1, k as i64, 1).await.unwrap();
    rows.first().is_some_and(|c| c.idx == k as i64 && c.tx_hash.is_some())
}

async fn round_state(store: &Store, epoch: u64) -> Option<RoundState> {
    let rounds = store.rounds(Some("base"), Some(1), 1000).await.unwrap();
    rounds.into_iter().find(|r| r.epoch == epoch as i64).map(|r| r.state)
}

/// The highest checkpoint recorded on chain, from `from` (recorded) on.
async fn last_recorded(net: &Net, from: u64) -> u64 {
    let mut k = from;
    while net.checkpoint(0, k + 1).await.0 > 0 {
        k += 1;
    }
    k
}

/// Audit M2: a receipt's round rows refused by the store (here a trigger that refuses every write to `rounds`, as a
/// lost term or a kill between the writes would) leave its checkpoint unmarked, so the next pass — or the next
/// leader — handles the whole receipt again, and once the store takes writes again the rounds it locked and settled
/// are stored. Mutation tried: the checkpoint row written at its event (before the rounds, as before M2) — the
/// refused checkpoint is marked handled and the test fails at the first assertion.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_receipt_whose_round_rows_were_refused_is_handled_again() {
    let pg = PgServer::start().expect("PostgreSQL starts (scripts/setup installs it)");
    let net = start(&["base"]).await;
    let store = Store::connect(&pg.url()).await.unwrap();
    let a = driver(&net, &pg.url(), "keeper-a", 1).await;
    let cancel = CancellationToken::new();
    let run = tokio::spawn(a.run(cancel.clone()));
    wait_until("keeper-a to lead", 60, || async { live_lease(&store).await.filter(|l| l.holder == "keeper-a") }).await;
    // Rounds in the store: a checkpoint handled by keeper-a after it began to lead.
    let k0 = net.now(0).await.saturating_sub(net.chains[0].genesis()) / INTERVAL + 2;
    wait_until("a checkpoint handled by keeper-a", 60, || async { handled(&store, k0).await.then_some(()) }).await;

    let pool = sqlx::PgPool::connect(&pg.url()).await.unwrap();
    for sql in [
        "CREATE SEQUENCE refusals",
        "CREATE FUNCTION refuse_round_rows() RETURNS trigger LANGUAGE plpgsql AS \
         $$ BEGIN PERFORM nextval('refusals'); RAISE EXCEPTION 'test: round rows refused'; END $$",
        "CREATE TRIGGER refuse_round_rows BEFORE INSERT OR UPDATE ON rounds FOR EACH ROW EXECUTE FUNCTION refuse_round_rows()",
    ] {
        sqlx::query(sql).execute(&pool).await.unwrap();
    }
    // Refused three times (a sequence's increments survive the refused statement's rollback): keeper-a tried a
    // receipt, failed, and tried again.
    let refusals = || async {
        let r = sqlx::query("SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM refusals")
            .fetch_one(&pool)
            .await
            .unwrap();
        sqlx::Row::get::<i64, _>(&r, 0)
    };
    wait_until("three refused round rows", 60, || async { (refusals().await >= 3).then_some(()) }).await;
    // The checkpoint whose receipt is refused is the last one recorded on chain (keeper-a goes no further before it
    // has handled it): it must not be marked handled.
    let kc = last_recorded(&net, k0).await;
    assert!(kc > k0, "no checkpoint recorded after the trigger");
    assert!(
        !handled(&store, kc).await,
        "checkpoint {kc} is marked handled in the store although the rounds of its receipt were refused"
    );

    // The store takes writes again: the receipt is handled whole on a later pass.
    sqlx::query("DROP TRIGGER refuse_round_rows ON rounds").execute(&pool).await.unwrap();
    wait_until(&format!("checkpoint {kc} handled"), 60, || async { handled(&store, kc).await.then_some(()) }).await;
    let locked = round_state(&store, kc - 1).await;
    assert!(locked.is_some(), "round {} locked by checkpoint {kc} is not in the store", kc - 1);
    let closed = round_state(&store, kc - 2).await;
    assert!(
        matches!(closed, Some(RoundState::Settled | RoundState::Cancelled)),
        "round {} closed by checkpoint {kc} is {closed:?} in the store",
        kc - 2
    );
    cancel.cancel();
    run.await.unwrap();
}

/// Audit M3: a keeper that takes a market over refills the forecaster's checkpoint candles from the store at the
/// start of its term, so its series has the checkpoints the previous leader recorded after this keeper started
/// (its start-up refill could not see them, and it never handles their receipts itself). Mutation tried: no refill
/// at the start of a term (only at start-up) — those checkpoints are missing from keeper-b's series and the test
/// fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_new_leader_refills_its_candles_with_the_previous_leaders_checkpoints() {
    let pg = PgServer::start().expect("PostgreSQL starts (scripts/setup installs it)");
    let net = start(&["base"]).await;
    let store = Store::connect(&pg.url()).await.unwrap();
    let a = driver(&net, &pg.url(), "keeper-a", 1).await;
    let cancel_a = CancellationToken::new();
    let run_a = tokio::spawn(a.run(cancel_a.clone()));
    wait_until("keeper-a to lead", 60, || async { live_lease(&store).await.filter(|l| l.holder == "keeper-a") }).await;
    let k0 = net.now(0).await.saturating_sub(net.chains[0].genesis()) / INTERVAL + 1;
    wait_until("a checkpoint handled by keeper-a", 60, || async { handled(&store, k0).await.then_some(()) }).await;

    // keeper-b starts (refilling its candles, as a keeper does at start-up) and stands by.
    let sink = Arc::new(CheckpointCandles::default());
    let b = driver(&net, &pg.url(), "keeper-b", 5).await.with_candle_sink(sink.clone());
    b.refill_candles().await.unwrap();
    let at_start = store.checkpoints("base", 1, 0, 100_000).await.unwrap();
    let kb = at_start.iter().map(|c| c.idx as u64).max().unwrap();
    let cancel_b = CancellationToken::new();
    let run_b = tokio::spawn(b.run(cancel_b.clone()));
    // keeper-a records three more checkpoints; keeper-b's start-up refill did not see them.
    wait_until("three more checkpoints handled by keeper-a", 60, || async {
        handled(&store, kb + 3).await.then_some(())
    })
    .await;
    let rows = store.checkpoints("base", 1, kb as i64 + 1, 3).await.unwrap();
    let by_a: Vec<(u64, u64)> = rows.iter().map(|c| (c.idx as u64, c.ts as u64)).collect();
    assert_eq!(by_a.len(), 3, "{by_a:?}");
    let ts = |k: u64| by_a[0].1 + (k - by_a[0].0) * INTERVAL;

    // keeper-a stops (giving its term up once its pass has ended): keeper-b takes over and records checkpoints.
    cancel_a.cancel();
    run_a.await.unwrap();
    wait_until("keeper-b to lead", 60, || async { live_lease(&store).await.filter(|l| l.holder == "keeper-b") }).await;
    let series = || sink.candles_until("base", 1, u64::MAX, usize::MAX);
    let after = ts(kb + 3) + 2 * INTERVAL;
    wait_until("keeper-b to record checkpoints of its own", 60, || async {
        series().last().is_some_and(|c| c.timestamp as u64 >= after).then_some(())
    })
    .await;
    // Every candle's opening checkpoint: each checkpoint in the series but the last.
    let have: BTreeSet<u64> = series().iter().map(|c| c.timestamp as u64).collect();
    for (k, t) in &by_a {
        assert!(
            have.contains(t),
            "checkpoint {k} (t = {t}), recorded by keeper-a after keeper-b started, is missing from keeper-b's candles: {have:?}"
        );
    }
    cancel_b.cancel();
    run_b.await.unwrap();
}
