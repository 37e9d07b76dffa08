//! The audit's findings (issue 20), each reproduced: who may create a market on which feed, when the crank may read a
//! price and that one timestamp has one price, parameters that reach a running round, payouts into the vault, and
//! the smaller points (event fields, flagged feeds, out-of-order transmissions, the betting margin, the crank reward).
#![allow(deprecated)] // solana-program-test 3.x marks its API "unstable"; it is the supported native path.

mod harness;

use harness::*;
use kronos_market::events::*;
use kronos_market::state::*;
use solana_signer::Signer;

/// 1 (high): a creator who writes their own "Chainlink" feed cannot create a market on it: only feeds the admin
/// approved carry markets, and only the program's upgrade authority creates the admin's configuration.
#[tokio::test]
async fn a_creator_cannot_create_a_market_on_a_feed_they_write() {
    let mut env = Env::new().await;
    // The attacker's feed: owned by the store program (anyone may `create_feed` there) and written by the attacker.
    let attacker = env.user(100 * SOL).await;
    let fake = anchor_lang::prelude::Pubkey::new_unique();
    env.header_owner = attacker.pubkey();
    env.writer = attacker.pubkey();
    env.write_feed_at(fake, 8);
    let (_, init) = init_sol(&attacker.pubkey(), 1, fake, params());
    assert_eq!(
        env.send(&[init], &[&attacker]).await,
        Err(Fail::Code(anchor_code::ACCOUNT_NOT_INITIALIZED)),
        "no approval exists for the attacker's feed"
    );
    assert_eq!(
        env.send(&[approve_feed(&attacker.pubkey(), fake)], &[&attacker]).await,
        Err(Fail::Code(anchor_code::CONSTRAINT_HAS_ONE)),
        "only the admin approves feeds"
    );
    // The real feed, approved: anyone may create a market on it.
    let (_, init) = init_sol(&attacker.pubkey(), 1, env.feed, params());
    env.send(&[init], &[&attacker]).await.unwrap();
}

/// 1: the configuration is created once, by the program's upgrade authority only; the admin hands over in two steps.
#[tokio::test]
async fn only_the_upgrade_authority_creates_the_configuration() {
    let mut env = Env::unconfigured().await;
    let auth = env.authority.insecure_clone();
    let stranger = env.user(SOL).await;
    env.set_upgrade_authority(Some(auth.pubkey()));
    assert_eq!(
        env.send(&[initialize_config(&stranger.pubkey(), stranger.pubkey())], &[&stranger]).await,
        Err(code(MarketError::NotUpgradeAuthority))
    );
    env.set_upgrade_authority(None); // an immutable program: nobody
    assert_eq!(
        env.send(&[initialize_config(&auth.pubkey(), auth.pubkey())], &[&auth]).await,
        Err(code(MarketError::NotUpgradeAuthority))
    );
    env.set_upgrade_authority(Some(auth.pubkey()));
    env.send(&[initialize_config(&auth.pubkey(), auth.pubkey())], &[&auth]).await.unwrap();
    assert!(env.send(&[initialize_config(&auth.pubkey(), auth.pubkey())], &[&auth]).await.is_err(), "once");
    let next = env.user(SOL).await;
    env.send(&[propose_admin(&auth.pubkey(), next.pubkey())], &[&auth]).await.unwrap();
    assert_eq!(
        env.send(&[accept_admin(&stranger.pubkey())], &[&stranger]).await,
        Err(code(MarketError::NotPendingAdmin))
    );
    env.send(&[accept_admin(&next.pubkey())], &[&next]).await.unwrap();
    let feed = env.feed;
    assert_eq!(
        env.send(&[approve_feed(&auth.pubkey(), feed)], &[&auth]).await,
        Err(Fail::Code(anchor_code::CONSTRAINT_HAS_ONE)),
        "the old admin is out"
    );
    env.send(&[approve_feed(&next.pubkey(), feed)], &[&next]).await.unwrap();
    assert_eq!(env.events::<FeedApproved>()[0].writer, chainlink_writer());
    // Revoked: no new market on it.
    env.send(&[revoke_feed(&next.pubkey(), feed)], &[&next]).await.unwrap();
    let (_, init) = init_sol(&auth.pubkey(), 1, feed, params());
    assert_eq!(env.send(&[init], &[&auth]).await, Err(Fail::Code(anchor_code::ACCOUNT_NOT_INITIALIZED)));
}

/// 1: a feed whose writer changes after its approval creates no market and settles no round (they are refunded).
#[tokio::test]
async fn a_feed_whose_writer_changed_settles_nothing() {
    let mut env = rising_env().await;
    let (m, alice, _bob, k) = started_round(&mut env, GENESIS).await;
    let thief = env.user(SOL).await;
    env.writer = thief.pubkey();
    env.write_feed();
    let (_, init) = init_sol(&alice.pubkey(), 9, env.feed, params());
    assert_eq!(env.send(&[init], &[&alice]).await, Err(code(MarketError::FeedChanged)));
    env.at(GENESIS + INTERVAL as i64).await;
    assert_eq!(env.send(&[m.start(&k.pubkey(), 1)], &[&k]).await, Err(code(MarketError::FeedChanged)), "no new rounds");
    env.at(GENESIS + INTERVAL as i64 + 30).await;
    env.send(&[m.lock(0)], &[&k]).await.unwrap();
    let r: Round = env.account(m.round(0)).await.unwrap();
    assert_eq!((r.status, r.cancel_reason), (RoundStatus::Cancelled, CancelReason::FeedChanged));
    env.send(&[m.refund(&alice.pubkey(), &[0], None)], &[&alice]).await.unwrap();
}

/// 2 (medium): the price at a timestamp is read only once nothing observed at or before it can still land.
#[tokio::test]
async fn the_crank_cannot_read_a_price_before_it_is_final() {
    let mut env = Env::new().await;
    let (start, lock, close) = (GENESIS, GENESIS + INTERVAL as i64, GENESIS + 2 * INTERVAL as i64);
    env.push_price(lock - 20, 6_500_000_000_000);
    env.push_price(close - 30, 6_510_000_000_000); // Up so far
    env.write_feed();
    let (m, alice, bob, k) = started_round(&mut env, start).await;
    env.at(lock + 30).await;
    // Only a transmission stamped after the lock makes the lock price final.
    env.push_price(lock + 10, 6_500_000_000_000);
    env.write_feed();
    env.send(&[m.lock(0)], &[&k]).await.unwrap();
    // At the close (plus any delay) the newest transmission is still older than the close: a report observed at
    // close - 4 may still land and change the price in effect at the close.
    env.at(close + 15).await;
    let early = env.send(&[m.settle(&k.pubkey(), 0)], &[&k]).await;
    assert_eq!(
        early,
        Err(code(MarketError::PriceNotFinal)),
        "settling waits for a transmission stamped after the close"
    );
    // It lands (Down), then a later one: now the close is final and the round settles Down.
    env.push_price(close - 4, 6_490_000_000_000);
    env.push_price(close + 5, 6_495_000_000_000);
    env.write_feed();
    env.send(&[m.settle(&k.pubkey(), 0)], &[&k]).await.unwrap();
    let r: Round = env.account(m.round(0)).await.unwrap();
    assert_eq!((r.status, r.outcome, r.close_price), (RoundStatus::Settled, Outcome::Down, 6_490_000_000_000));
    let _ = (alice, bob);
}

/// 2: a losing bettor cannot force a stale-price refund by settling before a late report lands.
#[tokio::test]
async fn a_loser_cannot_force_a_stale_refund_by_settling_early() {
    let mut env = Env::new().await;
    let (start, lock, close) = (GENESIS, GENESIS + INTERVAL as i64, GENESIS + 2 * INTERVAL as i64);
    env.push_price(lock - 5, 6_500_000_000_000);
    env.push_price(lock + 5, 6_500_000_000_000);
    env.write_feed();
    let (m, _alice, _bob, k) = started_round_with(&mut env, start, |p| p.max_price_age = 60).await;
    env.at(lock + 20).await;
    env.send(&[m.lock(0)], &[&k]).await.unwrap();
    // The newest answer (lock + 5) is 295 s old at the close: settling now would refund as stale.
    env.at(close + 20).await;
    assert_eq!(env.send(&[m.settle(&k.pubkey(), 0)], &[&k]).await, Err(code(MarketError::PriceNotFinal)));
    env.push_price(close - 3, 6_520_000_000_000);
    env.push_price(close + 2, 6_520_000_000_000);
    env.write_feed();
    env.send(&[m.settle(&k.pubkey(), 0)], &[&k]).await.unwrap();
    let r: Round = env.account(m.round(0)).await.unwrap();
    assert_eq!((r.status, r.outcome), (RoundStatus::Settled, Outcome::Up));
}

/// 2: one timestamp, one price: round e's close and round e+1's lock are the same price. A report stamped before
/// that timestamp that lands after one stamped later changes nothing (the answer is anchored on the first later
/// write), and once the ring has overwritten that anchor the round read second takes the first one's record instead
/// of a history that now reads differently.
#[tokio::test]
async fn one_timestamp_has_one_price_for_both_rounds_that_use_it() {
    for settle_first in [false, true] {
        let mut env = Env::new().await;
        env.live_length = 8;
        let t1 = GENESIS + INTERVAL as i64; // round 0's lock
        let t2 = t1 + INTERVAL as i64; // round 0's close = round 1's lock
        env.push_price(t1 - 5, 6_500_000_000_000);
        env.push_price(t1 + 5, 6_500_000_000_000);
        env.push_price(t2 - 50, 6_510_000_000_000);
        env.push_price(t2 + 5, 6_505_000_000_000);
        env.write_feed();
        let (m, alice, bob, k) = started_round(&mut env, GENESIS).await;
        env.at(t1 + 1).await;
        env.send(&[m.start(&k.pubkey(), 1)], &[&k]).await.unwrap();
        let (carol, dave) = (env.user(10 * SOL).await, env.user(10 * SOL).await);
        env.send(&[m.bet(&carol.pubkey(), 1, Side::Up, SOL, None)], &[&carol]).await.unwrap();
        env.send(&[m.bet(&dave.pubkey(), 1, Side::Down, SOL, None)], &[&dave]).await.unwrap();
        env.at(t1 + 30).await;
        env.send(&[m.lock(0)], &[&k]).await.unwrap();
        env.at(t2 + 30).await;
        let first = if settle_first { m.settle(&k.pubkey(), 0) } else { m.lock(1) };
        env.send(&[first], &[&k]).await.unwrap();
        // Reports observed at t2 - 10 and t2 - 9 land late, then enough later ones to push t2 + 5 out of the ring.
        env.push_price(t2 - 10, 6_490_000_000_000);
        env.push_price(t2 - 9, 6_490_000_000_000);
        for i in 0..6 {
            env.push_price(t2 + 8 + i, 6_490_000_000_000);
        }
        env.write_feed();
        if settle_first {
            // Round 0 cannot be closed while round 1 still needs its close as its lock.
            for u in [&alice, &bob] {
                let _ = env.send(&[m.claim(&u.pubkey(), &[0], None)], &[u]).await;
                env.send(&[m.close_position(&u.pubkey(), 0)], &[u]).await.unwrap();
            }
            assert_eq!(
                env.send(&[m.close_round(&k.pubkey(), 0)], &[&k]).await,
                Err(code(MarketError::NeighbourPending))
            );
            env.send(&[m.lock(1)], &[&k]).await.unwrap();
            env.send(&[m.close_round(&k.pubkey(), 0)], &[&k]).await.unwrap();
            let r1: Round = env.account(m.round(1)).await.unwrap();
            assert_eq!((r1.lock_price, r1.lock_price_ts), (6_510_000_000_000, t2 - 50), "settle first");
        } else {
            env.send(&[m.settle(&k.pubkey(), 0)], &[&k]).await.unwrap();
            let r0: Round = env.account(m.round(0)).await.unwrap();
            assert_eq!((r0.close_price, r0.close_price_ts), (6_510_000_000_000, t2 - 50), "lock first");
            assert_eq!(r0.outcome, Outcome::Up);
        }
    }
}

/// 2: a round whose neighbour found the history no longer covering their shared timestamp is refunded too, even
/// if the ring later reads as covering it again.
#[tokio::test]
async fn an_uncovered_timestamp_stays_uncovered_for_both_rounds() {
    let mut env = Env::new().await;
    env.live_length = 4;
    let t1 = GENESIS + INTERVAL as i64;
    let t2 = t1 + INTERVAL as i64;
    env.push_price(t1 - 5, 6_500_000_000_000);
    env.push_price(t1 + 5, 6_500_000_000_000);
    env.write_feed();
    let (m, _alice, _bob, k) = started_round(&mut env, GENESIS).await;
    env.at(t1 + 30).await;
    env.send(&[m.lock(0)], &[&k]).await.unwrap();
    env.at(t1 + 31).await;
    env.send(&[m.start(&k.pubkey(), 1)], &[&k]).await.unwrap();
    // Four transmissions after t2 fill the ring: nothing at or before t2 is left.
    for i in 0..4 {
        env.push_price(t2 + 1 + i, 6_600_000_000_000);
    }
    env.write_feed();
    env.at(t2 + 30).await;
    env.send(&[m.lock(1)], &[&k]).await.unwrap();
    let r1: Round = env.account(m.round(1)).await.unwrap();
    assert_eq!(r1.cancel_reason, CancelReason::LockPriceUnavailable);
    // A late report stamped t2 - 1, then later ones that push the first write after t2 out of the ring: read alone,
    // the ring would now say 6700 was in effect at t2.
    env.push_price(t2 - 1, 6_700_000_000_000);
    for i in 0..3 {
        env.push_price(t2 + 9 + i, 6_700_000_000_000);
    }
    env.write_feed();
    let acct = env.ctx.banks_client.get_account(env.feed).await.unwrap().unwrap();
    assert_eq!(kronos_market::chainlink::in_effect_at(&acct.data, t2).unwrap().answer, 6_700_000_000_000);
    env.send(&[m.settle(&k.pubkey(), 0)], &[&k]).await.unwrap();
    let r0: Round = env.account(m.round(0)).await.unwrap();
    assert_eq!((r0.status, r0.cancel_reason), (RoundStatus::Cancelled, CancelReason::ClosePriceUnavailable));
}

/// 3 (low): parameters changed during an epoch reach only later epochs, even if the round starts afterwards.
#[tokio::test]
async fn parameters_changed_before_a_start_wait_for_the_next_epoch() {
    let mut env = Env::new().await;
    env.push_price(GENESIS + 400, 6_500_000_000_000);
    env.write_feed();
    let auth = env.authority.insecure_clone();
    let (m, init) = init_sol(&auth.pubkey(), 1, env.feed, params());
    env.send(&[init], &[&auth]).await.unwrap();
    let k = env.user(SOL).await;
    env.at(GENESIS + 5).await;
    let mut p = params();
    p.fee_bps = 1_000;
    p.max_price_age = 1;
    env.send(&[m.update_params(&auth.pubkey(), p)], &[&auth]).await.unwrap();
    env.send(&[m.start(&k.pubkey(), 0)], &[&k]).await.unwrap();
    let r0: Round = env.account(m.round(0)).await.unwrap();
    assert_eq!(r0.params, params(), "epoch 0 was already running when the parameters changed");
    env.at(GENESIS + INTERVAL as i64).await;
    env.send(&[m.start(&k.pubkey(), 1)], &[&k]).await.unwrap();
    let r1: Round = env.account(m.round(1)).await.unwrap();
    assert_eq!(r1.params, p);
    // A bettor who accepts at most 3% is refused by the 10% round, not charged.
    let alice = env.user(10 * SOL).await;
    assert_eq!(
        env.send(&[m.bet_max_fee(&alice.pubkey(), 1, Side::Up, SOL, 300)], &[&alice]).await,
        Err(code(MarketError::FeeAboveLimit))
    );
    env.send(&[m.bet_max_fee(&alice.pubkey(), 1, Side::Up, SOL, 1_000)], &[&alice]).await.unwrap();
    // Scheduled twice in one epoch: the later wins, still from the next epoch; the market's current parameters are
    // the ones in force.
    let mut q = params();
    q.fee_bps = 50;
    env.send(&[m.update_params(&auth.pubkey(), q)], &[&auth]).await.unwrap();
    q.fee_bps = 60;
    env.send(&[m.update_params(&auth.pubkey(), q)], &[&auth]).await.unwrap();
    assert_eq!(env.events::<ParamsUpdated>()[0].from_epoch, 2);
    let market: Market = env.account(m.key).await.unwrap();
    assert_eq!((market.params, market.pending_params, market.pending_from), (p, Some(q), 2));
}

/// 4 (low): winnings cannot be paid into the vault itself (a self-transfer that moves nothing).
#[tokio::test]
async fn winnings_cannot_be_paid_into_the_vault() {
    let mut env = rising_env().await;
    let auth = env.authority.insecure_clone();
    let mint = env.create_mint(6).await;
    let (m, init) = init_token(&auth.pubkey(), 1, env.feed, mint, params());
    env.send(&[init], &[&auth]).await.unwrap();
    let (alice, bob) = (env.user(SOL).await, env.user(SOL).await);
    let a_tok = env.token_account(mint, &alice.pubkey(), 1_000_000).await;
    let b_tok = env.token_account(mint, &bob.pubkey(), 1_000_000).await;
    env.at(GENESIS).await;
    env.send(&[m.start(&alice.pubkey(), 0)], &[&alice]).await.unwrap();
    env.send(&[m.bet(&alice.pubkey(), 0, Side::Up, 100_000, Some(a_tok))], &[&alice]).await.unwrap();
    env.send(&[m.bet(&bob.pubkey(), 0, Side::Down, 100_000, Some(b_tok))], &[&bob]).await.unwrap();
    env.at(GENESIS + 3 * INTERVAL as i64).await;
    env.send(&[m.lock(0), m.settle(&alice.pubkey(), 0)], &[&alice]).await.unwrap();
    let res = env.send(&[m.claim(&alice.pubkey(), &[0], Some(m.vault))], &[&alice]).await;
    assert_eq!(res, Err(code(MarketError::WrongTokenAccount)), "the vault is not the winner's account");
    let res = env.send(&[m.claim(&alice.pubkey(), &[0], Some(b_tok))], &[&alice]).await;
    assert_eq!(res, Err(code(MarketError::WrongTokenAccount)), "nor is someone else's");
    env.send(&[m.claim(&alice.pubkey(), &[0], Some(a_tok))], &[&alice]).await.unwrap();
    assert!(env.token_balance(a_tok).await > 1_000_000);
    let market: Market = env.account(m.key).await.unwrap();
    let res =
        env.send(&[m.withdraw(&auth.pubkey(), auth.pubkey(), Some(m.vault), market.treasury_owed)], &[&auth]).await;
    assert_eq!(res, Err(code(MarketError::VaultAsDestination)), "the treasury is not paid into the vault either");
    // Nor on a SOL market.
    let mut env = rising_env().await;
    let (m, _alice, _bob, k) = started_round(&mut env, GENESIS).await;
    env.at(GENESIS + 3 * INTERVAL as i64).await;
    env.send(&[m.lock(0), m.settle(&k.pubkey(), 0)], &[&k]).await.unwrap();
    let auth = env.authority.insecure_clone();
    let res = env.send(&[m.withdraw(&auth.pubkey(), m.vault, None, 1)], &[&auth]).await;
    assert_eq!(res, Err(code(MarketError::VaultAsDestination)));
}

/// 5: the treasury event names the account that was paid.
#[tokio::test]
async fn the_treasury_event_names_the_account_paid() {
    let mut env = rising_env().await;
    let (m, alice, bob, k) = started_round(&mut env, GENESIS).await;
    env.at(GENESIS + 3 * INTERVAL as i64).await;
    env.send(&[m.lock(0), m.settle(&k.pubkey(), 0)], &[&k]).await.unwrap();
    let _ = (alice, bob);
    let auth = env.authority.insecure_clone();
    let to = env.user(SOL).await.pubkey();
    // A token account in the optional token slot of a SOL market: the lamports go to `to`, and so must the event.
    let mint = env.create_mint(6).await;
    let decoy = env.token_account(mint, &auth.pubkey(), 0).await;
    env.send(&[m.withdraw(&auth.pubkey(), to, Some(decoy), 1)], &[&auth]).await.unwrap();
    assert_eq!(env.events::<TreasuryWithdrawn>()[0].to, to);
}

/// 5: a flagged feed is not read.
#[tokio::test]
async fn a_flagged_feed_is_not_read() {
    let mut env = rising_env().await;
    let (m, _alice, _bob, k) = started_round(&mut env, GENESIS).await;
    env.at(GENESIS + INTERVAL as i64 + 30).await;
    let mut acct = env.ctx.banks_client.get_account(env.feed).await.unwrap().unwrap();
    acct.data[8 + 1] = 1; // state: flagged
    env.ctx.set_account(&env.feed, &acct.clone().into());
    assert_eq!(env.send(&[m.lock(0)], &[&k]).await, Err(code(MarketError::FeedFlagged)), "its answer is not used");
    acct.data[8 + 1] = 0; // lowered
    env.ctx.set_account(&env.feed, &acct.into());
    env.send(&[m.lock(0)], &[&k]).await.unwrap();
}

/// 5: betting closes a margin before the lock (the cluster clock may lag the oracles' observation time).
#[tokio::test]
async fn betting_closes_a_margin_before_the_lock() {
    let mut env = Env::new().await;
    env.push_price(GENESIS + 400, 6_500_000_000_000);
    env.write_feed();
    let (m, alice, _bob, _k) = started_round(&mut env, GENESIS).await;
    let lock = GENESIS + INTERVAL as i64;
    env.at(lock - 1).await;
    assert_eq!(
        env.send(&[m.bet(&alice.pubkey(), 0, Side::Up, SOL, None)], &[&alice]).await,
        Err(code(MarketError::BettingClosed))
    );
    env.at(lock - MIN_BET_CUTOFF as i64 - 1).await;
    env.send(&[m.bet(&alice.pubkey(), 0, Side::Up, SOL, None)], &[&alice]).await.unwrap();
    let auth = env.authority.insecure_clone();
    for (cutoff, delay) in [(MIN_BET_CUTOFF - 1, MIN_REPORT_DELAY), (INTERVAL, MIN_REPORT_DELAY), (MIN_BET_CUTOFF, 0)] {
        let mut p = params();
        (p.bet_cutoff, p.report_delay) = (cutoff, delay);
        let want = if delay == 0 { MarketError::BadReportDelay } else { MarketError::BadBetCutoff };
        assert_eq!(env.send(&[m.update_params(&auth.pubkey(), p)], &[&auth]).await, Err(code(want)));
    }
}

/// 5: whoever settles is paid from the fee, as on EVM.
#[tokio::test]
async fn the_settler_is_paid_from_the_fee() {
    let mut env = rising_env().await;
    let (m, _alice, _bob, _k) = started_round_with(&mut env, GENESIS, |p| p.settler_reward_bps = 2_500).await;
    let settler = env.user(SOL).await;
    env.at(GENESIS + 3 * INTERVAL as i64).await;
    let before = env.lamports(settler.pubkey()).await;
    // Nobody locked: the settler locks and settles in one instruction.
    env.send(&[m.settle(&settler.pubkey(), 0)], &[&settler]).await.unwrap();
    let after = env.lamports(settler.pubkey()).await;
    // 3% of 2 SOL = 60M fee; a quarter of it to the settler, the rest to the treasury.
    assert_eq!(after + 5_000, before + 15_000_000);
    let s = &env.events::<RoundSettled>()[0];
    assert_eq!((s.fee, s.settler, s.settler_reward), (60_000_000, settler.pubkey(), 15_000_000));
    let market: Market = env.account(m.key).await.unwrap();
    assert_eq!(market.treasury_owed, 45_000_000);
    let (held, owed) = audit(&mut env, &m, 0..1).await;
    assert_eq!(held, owed);
    // On a token market the reward goes to the settler's own token account.
    let mut env = rising_env().await;
    let auth = env.authority.insecure_clone();
    let mint = env.create_mint(6).await;
    let mut p = params();
    p.settler_reward_bps = MAX_SETTLER_REWARD_BPS;
    let (tm, init) = init_token(&auth.pubkey(), 3, env.feed, mint, p);
    env.send(&[init], &[&auth]).await.unwrap();
    let (alice, bob, settler) = (env.user(SOL).await, env.user(SOL).await, env.user(SOL).await);
    let a_tok = env.token_account(mint, &alice.pubkey(), 1_000_000).await;
    let b_tok = env.token_account(mint, &bob.pubkey(), 1_000_000).await;
    let s_tok = env.token_account(mint, &settler.pubkey(), 0).await;
    env.at(GENESIS).await;
    env.send(&[tm.start(&alice.pubkey(), 0)], &[&alice]).await.unwrap();
    env.send(&[tm.bet(&alice.pubkey(), 0, Side::Up, 500_000, Some(a_tok))], &[&alice]).await.unwrap();
    env.send(&[tm.bet(&bob.pubkey(), 0, Side::Down, 500_000, Some(b_tok))], &[&bob]).await.unwrap();
    env.at(GENESIS + 3 * INTERVAL as i64).await;
    assert_eq!(
        env.send(&[tm.settle_token(&settler.pubkey(), 0, Some(b_tok))], &[&settler]).await,
        Err(code(MarketError::WrongTokenAccount)),
        "someone else's token account"
    );
    env.send(&[tm.settle_token(&settler.pubkey(), 0, Some(s_tok))], &[&settler]).await.unwrap();
    // 3% of 1,000,000 = 30,000 fee, half of it to the settler.
    assert_eq!(env.token_balance(s_tok).await, 15_000);
    let market: Market = env.account(tm.key).await.unwrap();
    assert_eq!(market.treasury_owed, 15_000);
    let (held, owed) = audit(&mut env, &tm, 0..1).await;
    assert_eq!(held, owed);
    let mut p = params();
    p.settler_reward_bps = MAX_SETTLER_REWARD_BPS + 1;
    assert_eq!(
        env.send(&[tm.update_params(&auth.pubkey(), p)], &[&auth]).await,
        Err(code(MarketError::SettlerRewardTooHigh))
    );
}

/// A program whose feed rises by one unit 5 s before every boundary of epochs 0..=5 (every lock and close final).
async fn rising_env() -> Env {
    let mut env = Env::new().await;
    for k in 0..6 {
        env.push_price(GENESIS + k * INTERVAL as i64 - 5, 6_500_000_000_000 + k as i128);
    }
    env.write_feed();
    env
}

/// A SOL market (default parameters) with epoch `0` started at `start` and a 1 SOL bet on each side.
async fn started_round(
    env: &mut Env,
    start: i64,
) -> (M, solana_keypair::Keypair, solana_keypair::Keypair, solana_keypair::Keypair) {
    started_round_with(env, start, |_| {}).await
}

async fn started_round_with(
    env: &mut Env,
    start: i64,
    f: impl FnOnce(&mut Params),
) -> (M, solana_keypair::Keypair, solana_keypair::Keypair, solana_keypair::Keypair) {
    let auth = env.authority.insecure_clone();
    let mut p = params();
    f(&mut p);
    let (m, init) = init_sol(&auth.pubkey(), 1, env.feed, p);
    env.send(&[init], &[&auth]).await.unwrap();
    let (alice, bob, k) = (env.user(10 * SOL).await, env.user(10 * SOL).await, env.user(SOL).await);
    env.at(start).await;
    env.send(&[m.start(&k.pubkey(), 0)], &[&k]).await.unwrap();
    env.send(&[m.bet(&alice.pubkey(), 0, Side::Up, SOL, None)], &[&alice]).await.unwrap();
    env.send(&[m.bet(&bob.pubkey(), 0, Side::Down, SOL, None)], &[&bob]).await.unwrap();
    (m, alice, bob, k)
}
