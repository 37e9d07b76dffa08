//! The demo's Solana chain against the local Solana RPC server: the set-up creates markets the program accepts, the
//! replay writes transmissions the program reads (its recorded lock and close prices are the replayed candles'), a
//! stale stretch of the feed gets rounds refunded, the bettors bet on both markets and claim, and the counts the
//! summary prints come from the chain (a round nobody started counts as missed, though nothing in the demo knows it).
//! The keeper's part (start and settle) is played here by a minimal crank; the keeper's own Solana tests are its.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anchor_lang::prelude::Pubkey;
use anchor_lang::solana_program::instruction::Instruction;
use anchor_lang::{AccountDeserialize, InstructionData, ToAccountMetas};
use kronos_localnet::demo::bettors::BetStats;
use kronos_localnet::demo::net::ReplayCandles;
use kronos_localnet::solana::replay::{self, ReplayOptions, ReplayStats};
use kronos_localnet::solana::watch::{self, Counts, WatchStats};
use kronos_localnet::solana::{bettors, clock, send, LocalSolana, MarketRef, Options, PROGRAM_ID};
use kronos_market::state::{CancelReason, Market, Position, Round, RoundStatus};
use kronos_market::{accounts as acc, instruction as ix};
use parking_lot::Mutex;
use solana_keypair::Keypair;
use solana_signer::Signer;
use tokio_util::sync::CancellationToken;

const INTERVAL: u32 = 60;
/// Chain seconds per wall second: a 60 s round takes 6 s.
const SPEED: u32 = 10;
/// The epoch the crank never starts (missed) and the one the feed stays silent in (stale).
const SKIPPED: u64 = 5;
const STALE: u64 = 2;
const BASE: usize = 14_000;

fn ixn(accounts: impl ToAccountMetas, data: impl InstructionData) -> Instruction {
    Instruction { program_id: PROGRAM_ID, accounts: accounts.to_account_metas(None), data: data.data() }
}

fn start_ix(sol: &LocalSolana, m: &MarketRef, epoch: u64) -> Instruction {
    ixn(
        acc::StartRound {
            payer: sol.keeper.pubkey(),
            market: m.key,
            round: m.round(epoch),
            feed: sol.feed,
            system_program: anchor_lang::system_program::ID,
        },
        ix::StartRound { epoch },
    )
}

fn settle_ix(sol: &LocalSolana, m: &MarketRef, epoch: u64) -> Instruction {
    ixn(
        acc::SettleRound {
            settler: sol.keeper.pubkey(),
            market: m.key,
            round: m.round(epoch),
            prev_round: m.round(epoch.wrapping_sub(1)),
            next_round: m.round(epoch + 1),
            feed: sol.feed,
            vault: m.vault,
            settler_token: None,
            token_program: m.mint.map(|_| anchor_spl::token::spl_token::ID),
        },
        ix::SettleRound { epoch },
    )
}

async fn round(sol: &LocalSolana, m: &MarketRef, epoch: u64) -> Option<Round> {
    let data = sol.client.get_account_data(&m.round(epoch)).await.ok()?;
    Round::try_deserialize(&mut data.as_slice()).ok()
}

/// The keeper's part, minimally: start every round but [`SKIPPED`] while it takes bets, settle every started one once
/// the program accepts it (a refused settlement is retried at the next look).
async fn crank(sol: Arc<LocalSolana>, cancel: CancellationToken) {
    let (g, i) = (sol.genesis, i64::from(sol.interval));
    while !cancel.is_cancelled() {
        let now = clock(&sol.client).await.unwrap().unix_timestamp;
        let current = if now >= g { ((now - g) / i) as u64 } else { 0 };
        for m in &sol.markets {
            for e in 0..=current {
                let (start, close) = (g + e as i64 * i, g + (e as i64 + 2) * i);
                let r = round(&sol, m, e).await;
                if r.is_none() && e != SKIPPED && now >= start && now < start + i {
                    let _ = send(&sol.client, &[start_ix(&sol, m, e)], &sol.keeper, &[]).await;
                }
                let open = r.is_some_and(|r| matches!(r.status, RoundStatus::Open | RoundStatus::Locked));
                if open && now >= close + i64::from(sol.params.report_delay) {
                    let _ = send(&sol.client, &[settle_ix(&sol, m, e)], &sol.keeper, &[]).await;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_solana_chain_is_set_up_replayed_bet_on_and_counted_from_its_accounts() {
    let root = kronos_localnet::deploy::repo_root().unwrap();
    let candles = Arc::new(kronos_forecast::load_csv(root.join("data/btcusd-1h.csv")).unwrap());
    let work = tempfile::tempdir().unwrap();
    let initial = (candles[BASE - 1].close * 1e8).round() as i128;
    let opts = Options {
        interval: INTERVAL,
        speed: SPEED,
        work_dir: work.path().to_path_buf(),
        initial_answer: initial,
        bettors: 3,
    };
    let sol = Arc::new(LocalSolana::start(&opts).await.unwrap());

    // The set-up: markets the program accepted, as asked.
    for (m, mint) in sol.markets.iter().zip([None, Some(sol.mint)]) {
        let data = sol.client.get_account_data(&m.key).await.unwrap();
        let market = Market::try_deserialize(&mut data.as_slice()).unwrap();
        assert_eq!((market.feed, market.genesis, market.interval), (sol.feed, sol.genesis, INTERVAL));
        assert_eq!(market.authority, sol.admin.pubkey());
        assert_eq!(mint.unwrap_or_default(), market.mint);
        assert_eq!(market.params, sol.params);
    }
    assert!(sol.client.get_account_data(&sol.forecast_market).await.is_ok(), "forecasts enabled on the SOL market");
    let keyfile: Vec<u8> = serde_json::from_str(&std::fs::read_to_string(&sol.keeper_key_file).unwrap()).unwrap();
    assert_eq!(Keypair::try_from(keyfile.as_slice()).unwrap().pubkey(), sol.keeper.pubkey());
    assert!(sol.client.get_balance(&sol.keeper.pubkey()).await.unwrap() > 0);
    let section = sol.keeper_section(true);
    assert!(section.contains(&format!("program = \"{PROGRAM_ID}\"")) && section.contains(&sol.url()), "{section}");

    // Replay, bettors, watcher and the crank.
    let cancel = CancellationToken::new();
    let source = Arc::new(ReplayCandles::new(candles.clone()));
    source.register("solana", sol.genesis as u64, u64::from(INTERVAL), BASE);
    let replayed = Arc::new(Mutex::new(ReplayStats::default()));
    let ropts = ReplayOptions {
        chain: "solana".into(),
        stale_epochs: BTreeSet::from([STALE]),
        poll: Duration::from_millis(50),
    };
    let bets = Arc::new(Mutex::new(BetStats::default()));
    let seen = Arc::new(Mutex::new(WatchStats::default()));
    let last_epoch = 8;
    let tasks = [
        tokio::spawn(replay::run(sol.clone(), source.clone(), ropts, replayed.clone(), cancel.clone())),
        tokio::spawn(bettors::run(sol.clone(), Duration::from_millis(100), 7, bets.clone(), cancel.clone())),
        tokio::spawn(watch::run(sol.clone(), Duration::from_millis(100), seen.clone(), cancel.clone())),
        tokio::spawn(crank(sol.clone(), cancel.clone())),
    ];

    // Wait for every round up to last_epoch to be final on chain.
    let deadline = Instant::now() + Duration::from_secs(300);
    let final_epoch = |now: i64| now >= sol.genesis + (last_epoch as i64 + 2) * i64::from(INTERVAL) + 30;
    loop {
        let now = clock(&sol.client).await.unwrap().unix_timestamp;
        let mut pending = 0;
        for m in &sol.markets {
            for e in 0..=last_epoch {
                if round(&sol, m, e).await.is_some_and(|r| matches!(r.status, RoundStatus::Open | RoundStatus::Locked))
                {
                    pending += 1;
                }
            }
        }
        if final_epoch(now) && pending == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "rounds still pending after 300 s: {pending}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let now = clock(&sol.client).await.unwrap().unix_timestamp;

    // The program read the replayed transmissions: every settled round's lock and close prices are the answers the
    // replay wrote last before those timestamps (the candles' closes).
    let written = replayed.lock().written.clone();
    assert!(written.len() >= 4 * last_epoch as usize, "{} transmissions", written.len());
    let before = |t: i64| written.iter().rev().find(|(ts, _)| i64::from(*ts) <= t).map(|(_, a)| *a);
    let mut settled = 0;
    for m in &sol.markets {
        for e in 0..=last_epoch {
            let Some(r) = round(&sol, m, e).await else {
                assert_eq!(e, SKIPPED, "round {e} of {} was never started", m.name);
                continue;
            };
            if r.status == RoundStatus::Settled {
                settled += 1;
                assert_eq!(Some(r.lock_price), before(r.lock_ts), "{} #{e} lock", m.name);
                assert_eq!(Some(r.close_price), before(r.close_ts), "{} #{e} close", m.name);
                let candle = source.candle("solana", e + 1).unwrap();
                assert_eq!(r.close_price, (candle.close * 1e8).round() as i128, "the close is candle {e}+1's");
            }
            // The silent epoch: its end's answer is more than a round old, so both rounds that read it are refunded.
            if e == STALE - 1 {
                assert_eq!((r.status, r.cancel_reason), (RoundStatus::Cancelled, CancelReason::ClosePriceStale));
            }
            if e == STALE {
                assert_eq!((r.status, r.cancel_reason), (RoundStatus::Cancelled, CancelReason::LockPriceStale));
            }
        }
    }
    assert!(settled >= 8, "only {settled} rounds settled");

    // The counts come from the chain: the stale rounds refunded, the round nobody started missed (nothing in the
    // demo recorded either), the rest settled — one-sided or tied pools would be refunded too.
    for m in &sol.markets {
        // (The crank closes no round, so every account is still there: nothing comes from the watcher's memory.)
        let c = watch::counts(&sol, m, now, &Default::default()).await.unwrap();
        let mut expect = Counts::default();
        for e in 0..=last_epoch {
            match round(&sol, m, e).await {
                None => expect.missed += 1,
                Some(r) if r.status == RoundStatus::Settled => expect.settled += 1,
                Some(_) => expect.refunded += 1,
            }
        }
        // Only the round nobody started is missed (the crank starts every later one).
        assert_eq!((expect.missed, c.missed), (1, 1), "{}", m.name);
        assert!(expect.refunded >= 2, "{}: {expect:?}", m.name);
        // Rounds after last_epoch may have started since; the counted ones include these.
        assert!(c.settled >= expect.settled && c.refunded >= expect.refunded, "{}: {c:?} vs {expect:?}", m.name);
    }

    // Bettors bet on both markets and claimed; what they were owed up to last_epoch is paid (claim runs every two
    // rounds, so wait for it).
    let b = bets.lock().clone();
    assert!(b.bets >= 3 * 2 * 4, "{b:?}");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let now = clock(&sol.client).await.unwrap().unix_timestamp;
        let mut owed = 0;
        for m in &sol.markets {
            for bettor in &sol.bettors {
                owed += bettors::owed(&sol, m, &bettor.key.pubkey(), 0, last_epoch + 1, now).await.unwrap().len();
            }
        }
        if owed == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "{owed} positions still owed: {:?}", bets.lock());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(bets.lock().claims > 0);
    let refunded_pos = sol.markets[0].position(STALE, &sol.bettors[0].key.pubkey());
    if let Ok(data) = sol.client.get_account_data(&refunded_pos).await {
        assert!(
            Position::try_deserialize(&mut data.as_slice()).unwrap().claimed,
            "the stale round's stake was refunded"
        );
    }

    // The watcher saw the crank's locks and settlements, in slots.
    let w = seen.lock().clone();
    assert!(!w.delays.is_empty(), "{w:?}");
    assert_eq!(w.counts.len(), 2);
    let _: Pubkey = sol.keeper.pubkey();

    cancel.cancel();
    for t in tasks {
        t.await.unwrap();
    }
}
