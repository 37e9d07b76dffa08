//! Every instruction's success path and failure paths, run natively through the real Anchor entry point.
#![allow(deprecated)] // solana-program-test 3.x marks its API "unstable"; it is the supported native path.

mod harness;

use harness::*;
use kronos_market::events::*;
use kronos_market::state::*;
use solana_signer::Signer;

/// A SOL market with the feed priced at every boundary of epochs 0..=3 (price rising by `step` each boundary).
async fn sol_market(step: i128) -> (Env, M) {
    let mut env = Env::new().await;
    for k in 0..6 {
        env.push_price(GENESIS + k * INTERVAL as i64 - 5, 6_500_000_000_000 + step * k as i128);
    }
    env.write_feed();
    let auth = env.authority.insecure_clone();
    let (m, init) = init_sol(&auth.pubkey(), 1, env.feed, params());
    env.send(&[init], &[&auth]).await.unwrap();
    (env, m)
}

#[tokio::test]
async fn a_sol_round_settles_and_pays_winners_pro_rata() {
    let (mut env, m) = sol_market(1_000_000).await;
    let ev = env.events::<MarketInitialized>();
    assert_eq!(ev.len(), 1, "{:#?}", env.logs);
    assert_eq!((ev[0].interval, ev[0].genesis, ev[0].params), (INTERVAL, GENESIS, params()));
    let market: Market = env.account(m.key).await.unwrap();
    assert_eq!((market.decimals, market.mint, market.authority), (8, Default::default(), m.authority));

    let (alice, bob, carol) = (env.user(10 * SOL).await, env.user(10 * SOL).await, env.user(10 * SOL).await);
    let cranker = env.user(SOL).await;
    let (start, lock, close) = m.times(0);
    env.at(start).await;
    env.send(&[m.start(&cranker.pubkey(), 0)], &[&cranker]).await.unwrap();
    assert_eq!(env.events::<RoundStarted>()[0].lock_ts, lock);
    env.at(start + 10).await;
    env.send(&[m.bet(&alice.pubkey(), 0, Side::Up, 2 * SOL, None)], &[&alice]).await.unwrap();
    env.send(&[m.bet(&alice.pubkey(), 0, Side::Up, SOL, None)], &[&alice]).await.unwrap(); // top-up
    env.send(&[m.bet(&bob.pubkey(), 0, Side::Down, SOL, None)], &[&bob]).await.unwrap();
    env.send(&[m.bet(&carol.pubkey(), 0, Side::Up, SOL, None)], &[&carol]).await.unwrap();
    let ev = env.events::<BetPlaced>();
    assert_eq!((ev[0].user, ev[0].amount, ev[0].side), (carol.pubkey(), SOL, Side::Up));
    let r: Round = env.account(m.round(0)).await.unwrap();
    assert_eq!((r.up_amount, r.down_amount, r.positions), (4 * SOL, SOL, 3));
    let (held, owed) = audit(&mut env, &m, 0..1).await;
    assert_eq!((held, owed), (5 * SOL, 5 * SOL));

    let delay = params().report_delay as i64;
    env.at(lock + delay).await;
    env.send(&[m.lock(0)], &[&cranker]).await.unwrap();
    let r: Round = env.account(m.round(0)).await.unwrap();
    assert_eq!(r.status, RoundStatus::Locked);
    assert_eq!((r.lock_price, r.lock_price_ts), (6_500_001_000_000, lock - 5), "the answer in effect at the lock");
    env.at(close + delay + 7).await;
    env.send(&[m.settle(&cranker.pubkey(), 0)], &[&cranker]).await.unwrap();
    let s = &env.events::<RoundSettled>()[0];
    assert_eq!((s.outcome, s.lock_price, s.close_price), (Outcome::Up, 6_500_001_000_000, 6_500_002_000_000));
    // 3% of 5 SOL to the treasury; winners (4 SOL of Up) share 4.85 SOL.
    assert_eq!((s.total, s.fee, s.reward_amount), (5 * SOL, 150_000_000, 4_850_000_000));
    let market: Market = env.account(m.key).await.unwrap();
    assert_eq!(market.treasury_owed, 150_000_000);

    let before = env.lamports(alice.pubkey()).await;
    env.send(&[m.claim(&alice.pubkey(), &[0], None)], &[&alice]).await.unwrap();
    // Alice pays the fee of her own transaction (5000 lamports per signature).
    assert_eq!(env.lamports(alice.pubkey()).await, before + 3_637_500_000 - 5_000);
    assert_eq!(env.events::<Claimed>()[0].amount, 3_637_500_000);
    assert_eq!(
        env.send(&[m.claim(&alice.pubkey(), &[0], None)], &[&alice]).await,
        Err(code(MarketError::AlreadyClaimed))
    );
    assert_eq!(env.send(&[m.claim(&bob.pubkey(), &[0], None)], &[&bob]).await, Err(code(MarketError::NotAWinner)));
    assert_eq!(
        env.send(&[m.refund(&carol.pubkey(), &[0], None)], &[&carol]).await,
        Err(code(MarketError::NotRefundable)),
        "a settled round is claimed, not refunded"
    );
    // Carol cannot close her position before claiming; Bob (lost) can.
    assert_eq!(env.send(&[m.close_position(&carol.pubkey(), 0)], &[&carol]).await, Err(code(MarketError::ClaimFirst)));
    assert_eq!(
        env.send(&[m.close_round(&cranker.pubkey(), 0)], &[&cranker]).await,
        Err(code(MarketError::PositionsOpen))
    );
    env.send(&[m.claim(&carol.pubkey(), &[0], None)], &[&carol]).await.unwrap();
    let (held, owed) = audit(&mut env, &m, 0..1).await;
    assert_eq!(held, owed);
    for u in [&alice, &bob, &carol] {
        let pos = m.position(0, &u.pubkey());
        let rent = env.lamports(pos).await;
        let before = env.lamports(u.pubkey()).await;
        env.send(&[m.close_position(&u.pubkey(), 0)], &[u]).await.unwrap();
        assert!(!env.exists(pos).await);
        assert_eq!(env.lamports(u.pubkey()).await, before + rent - 5_000, "rent back to the user");
    }
    // The round's rent goes back to the cranker who paid it, not to whoever closes it.
    let stranger = env.user(SOL).await;
    assert_eq!(
        env.send(&[m.close_round(&stranger.pubkey(), 0)], &[&stranger]).await,
        Err(Fail::Code(u32::from(MarketError::WrongRentReceiver)))
    );
    let rent = env.lamports(m.round(0)).await;
    let before = env.lamports(cranker.pubkey()).await;
    env.send(&[m.close_round(&cranker.pubkey(), 0)], &[&stranger]).await.unwrap();
    assert_eq!(env.lamports(cranker.pubkey()).await, before + rent);
    assert_eq!(env.events::<RoundClosed>()[0].dust_to_treasury, 0);

    // The treasury: only the authority, only what is owed.
    let auth = env.authority.insecure_clone();
    assert_eq!(
        env.send(&[m.withdraw(&stranger.pubkey(), stranger.pubkey(), None, 1)], &[&stranger]).await,
        Err(Fail::Code(anchor_code::CONSTRAINT_HAS_ONE))
    );
    assert_eq!(
        env.send(&[m.withdraw(&auth.pubkey(), stranger.pubkey(), None, 150_000_001)], &[&auth]).await,
        Err(code(MarketError::TreasuryShort))
    );
    let before = env.lamports(stranger.pubkey()).await;
    env.send(&[m.withdraw(&auth.pubkey(), stranger.pubkey(), None, 150_000_000)], &[&auth]).await.unwrap();
    assert_eq!(env.lamports(stranger.pubkey()).await, before + 150_000_000);
    let (held, owed) = audit(&mut env, &m, 0..1).await;
    assert_eq!((held, owed), (0, 0), "the vault is back to its rent-exempt floor");
}

#[tokio::test]
async fn a_token_market_claims_several_rounds_at_once() {
    let mut env = Env::new().await;
    for k in 0..6 {
        // Rises, rises, then flat: epoch 0 Up, epoch 1 Up, epoch 2 tie.
        let p = [100, 101, 102, 103, 103, 103][k as usize];
        env.push_price(GENESIS + k * INTERVAL as i64 - 1, p * 100_000_000);
    }
    env.write_feed();
    let auth = env.authority.insecure_clone();
    let mint = env.create_mint(6).await;
    let (m, init) = init_token(&auth.pubkey(), 7, env.feed, mint, params());
    env.send(&[init], &[&auth]).await.unwrap();
    let market: Market = env.account(m.key).await.unwrap();
    assert_eq!((market.mint, market.vault), (mint, m.vault));

    let alice = env.user(SOL).await;
    let bob = env.user(SOL).await;
    let a_tok = env.token_account(mint, &alice.pubkey(), 1_000_000_000).await;
    let b_tok = env.token_account(mint, &bob.pubkey(), 1_000_000_000).await;
    // Missing or foreign token accounts are named.
    let (start0, _, _) = m.times(0);
    env.at(start0).await;
    env.send(&[m.start(&alice.pubkey(), 0)], &[&alice]).await.unwrap();
    assert_eq!(
        env.send(&[m.bet(&alice.pubkey(), 0, Side::Up, 10_000, None)], &[&alice]).await,
        Err(code(MarketError::TokenAccountsMissing))
    );
    assert_eq!(
        env.send(&[m.bet(&alice.pubkey(), 0, Side::Up, 10_000, Some(b_tok))], &[&alice]).await,
        Err(code(MarketError::WrongTokenAccount))
    );
    for e in 0..3u64 {
        let (start, _, _) = m.times(e);
        env.at(start + 1).await;
        if e > 0 {
            env.send(&[m.start(&bob.pubkey(), e)], &[&bob]).await.unwrap();
        }
        env.send(&[m.bet(&alice.pubkey(), e, Side::Up, 30_000_000, Some(a_tok))], &[&alice]).await.unwrap();
        env.send(&[m.bet(&bob.pubkey(), e, Side::Down, 10_000_000, Some(b_tok))], &[&bob]).await.unwrap();
    }
    assert_eq!(env.token_balance(m.vault).await, 120_000_000);
    for e in 0..3u64 {
        let (_, _, close) = m.times(e);
        env.at(close + params().report_delay as i64).await;
        env.send(&[m.lock(e), m.settle(&alice.pubkey(), e)], &[&alice]).await.unwrap();
    }
    let r2: Round = env.account(m.round(2)).await.unwrap();
    assert_eq!((r2.status, r2.cancel_reason, r2.outcome), (RoundStatus::Cancelled, CancelReason::Tie, Outcome::Tie));
    let (held, owed) = audit(&mut env, &m, 0..3).await;
    assert_eq!((held, owed), (120_000_000, 120_000_000));
    // Alice: two wins (40M pool - 3% = 38.8M each) and one refund (30M), in one instruction.
    env.send(&[m.claim(&alice.pubkey(), &[0, 1, 2], Some(a_tok))], &[&alice]).await.unwrap();
    assert_eq!(env.token_balance(a_tok).await, 1_000_000_000 - 90_000_000 + 2 * 38_800_000 + 30_000_000);
    assert_eq!(env.events::<Claimed>().len(), 2);
    assert_eq!(env.events::<Refunded>().len(), 1);
    // Bob's refund of the tie; his losing rounds cannot be claimed, and a batch with one of them fails whole.
    assert_eq!(
        env.send(&[m.claim(&bob.pubkey(), &[2, 0], Some(b_tok))], &[&bob]).await,
        Err(code(MarketError::NotAWinner))
    );
    env.send(&[m.refund(&bob.pubkey(), &[2], Some(b_tok))], &[&bob]).await.unwrap();
    assert_eq!(env.token_balance(b_tok).await, 1_000_000_000 - 30_000_000 + 10_000_000);
    // Someone else's position in a batch is refused.
    assert_eq!(
        env.send(&[m.claim(&bob.pubkey(), &[0], Some(b_tok)).tap_position(&alice.pubkey(), &m, 0)], &[&bob]).await,
        Err(code(MarketError::BadClaimAccounts))
    );
    let (held, owed) = audit(&mut env, &m, 0..3).await;
    assert_eq!((held, owed), (2_400_000, 2_400_000), "only the treasury's fees remain");
    let dest = env.token_account(mint, &auth.pubkey(), 0).await;
    assert_eq!(
        env.send(&[m.withdraw(&auth.pubkey(), auth.pubkey(), None, 2_400_000)], &[&auth]).await,
        Err(code(MarketError::TokenAccountsMissing))
    );
    env.send(&[m.withdraw(&auth.pubkey(), auth.pubkey(), Some(dest), 2_400_000)], &[&auth]).await.unwrap();
    assert_eq!(env.token_balance(dest).await, 2_400_000);
    assert_eq!(env.token_balance(m.vault).await, 0);
}

/// Replaces the position account of a claim instruction with `user`'s (to test foreign positions).
trait TapPosition {
    fn tap_position(self, user: &anchor_lang::prelude::Pubkey, m: &M, epoch: u64) -> Self;
}
impl TapPosition for anchor_lang::solana_program::instruction::Instruction {
    fn tap_position(mut self, user: &anchor_lang::prelude::Pubkey, m: &M, epoch: u64) -> Self {
        let n = self.accounts.len();
        self.accounts[n - 1].pubkey = m.position(epoch, user);
        self
    }
}

#[tokio::test]
async fn the_crank_runs_only_when_its_time_has_come() {
    let (mut env, m) = sol_market(1).await;
    let k = env.user(SOL).await;
    let (start, lock, close) = m.times(1);
    env.at(start - 1).await;
    assert_eq!(env.send(&[m.start(&k.pubkey(), 1)], &[&k]).await, Err(code(MarketError::RoundNotStarted)));
    env.at(lock).await;
    assert_eq!(env.send(&[m.start(&k.pubkey(), 1)], &[&k]).await, Err(code(MarketError::TooLateToStart)));
    env.at(start).await;
    env.send(&[m.start(&k.pubkey(), 1)], &[&k]).await.unwrap();
    // A round starts once: starting it again fails and leaves its pool as it was.
    env.send(&[m.bet(&k.pubkey(), 1, Side::Up, 1_000_000, None)], &[&k]).await.unwrap();
    assert!(env.send(&[m.start(&k.pubkey(), 1)], &[&k]).await.is_err());
    let r: Round = env.account(m.round(1)).await.unwrap();
    assert_eq!((r.status, r.up_amount, r.positions), (RoundStatus::Open, 1_000_000, 1));
    // The crank reads a timestamp's price only `report_delay` after it.
    let delay = params().report_delay as i64;
    env.at(lock + delay - 1).await;
    assert_eq!(env.send(&[m.lock(1)], &[&k]).await, Err(code(MarketError::TooEarly)));
    assert_eq!(env.send(&[m.settle(&k.pubkey(), 1)], &[&k]).await, Err(code(MarketError::TooEarly)));
    env.at(lock + delay).await;
    env.send(&[m.lock(1)], &[&k]).await.unwrap();
    assert_eq!(env.send(&[m.lock(1)], &[&k]).await, Err(code(MarketError::RoundNotOpen)));
    env.at(close + delay - 1).await;
    assert_eq!(env.send(&[m.settle(&k.pubkey(), 1)], &[&k]).await, Err(code(MarketError::TooEarly)));
    env.at(close + delay).await;
    env.send(&[m.settle(&k.pubkey(), 1)], &[&k]).await.unwrap();
    // Only one side was bet: one-sided pool, cancelled.
    let r: Round = env.account(m.round(1)).await.unwrap();
    assert_eq!((r.status, r.cancel_reason), (RoundStatus::Cancelled, CancelReason::OneSidedPool));
    assert_eq!(env.send(&[m.settle(&k.pubkey(), 1)], &[&k]).await, Err(code(MarketError::RoundFinal)));
    // A round that was never started cannot be locked.
    assert_eq!(env.send(&[m.lock(2)], &[&k]).await, Err(Fail::Code(anchor_code::ACCOUNT_NOT_INITIALIZED)));
}

#[tokio::test]
async fn bets_follow_the_rules() {
    let (mut env, m) = sol_market(1).await;
    let (alice, k) = (env.user(10 * SOL).await, env.user(SOL).await);
    let (start, lock, _) = m.times(0);
    env.at(start).await;
    env.send(&[m.start(&k.pubkey(), 0)], &[&k]).await.unwrap();
    assert_eq!(
        env.send(&[m.bet(&alice.pubkey(), 0, Side::Up, 999, None)], &[&alice]).await,
        Err(code(MarketError::BetTooSmall))
    );
    env.send(&[m.bet(&alice.pubkey(), 0, Side::Up, SOL, None)], &[&alice]).await.unwrap();
    assert_eq!(
        env.send(&[m.bet(&alice.pubkey(), 0, Side::Down, SOL, None)], &[&alice]).await,
        Err(code(MarketError::OppositeSideTaken))
    );
    // Wrong PDA: the round account of another epoch, or a round that does not exist.
    env.at(m.times(1).0).await;
    env.send(&[m.start(&k.pubkey(), 1)], &[&k]).await.unwrap();
    assert_eq!(
        env.send(&[m.bet_with(&alice.pubkey(), 1, m.round(0), Side::Up, SOL, None)], &[&alice]).await,
        Err(Fail::Code(anchor_code::CONSTRAINT_SEEDS))
    );
    // Bet inside the cutoff before the lock, or after the lock.
    for t in [lock - params().bet_cutoff as i64, lock] {
        env.at(t).await;
        assert_eq!(
            env.send(&[m.bet(&alice.pubkey(), 0, Side::Up, SOL, None)], &[&alice]).await,
            Err(code(MarketError::BettingClosed)),
            "at lock - {}",
            lock - t
        );
    }
    // Pause stops bets only.
    let auth = env.authority.insecure_clone();
    assert_eq!(
        env.send(&[m.set_paused(&alice.pubkey(), true)], &[&alice]).await,
        Err(Fail::Code(anchor_code::CONSTRAINT_HAS_ONE)),
        "wrong signer"
    );
    env.send(&[m.set_paused(&auth.pubkey(), true)], &[&auth]).await.unwrap();
    assert!(env.events::<PausedSet>()[0].paused);
    assert_eq!(
        env.send(&[m.bet(&alice.pubkey(), 1, Side::Up, SOL, None)], &[&alice]).await,
        Err(code(MarketError::MarketPaused))
    );
    let delay = params().report_delay as i64;
    env.at(lock + delay).await;
    env.send(&[m.lock(0)], &[&k]).await.unwrap();
    env.at(m.times(0).2 + delay).await;
    env.send(&[m.settle(&k.pubkey(), 0)], &[&k]).await.unwrap(); // one-sided: refunded
    env.send(&[m.refund(&alice.pubkey(), &[0], None)], &[&alice]).await.unwrap();
    assert_eq!(env.events::<Refunded>()[0].amount, SOL);
    env.send(&[m.set_paused(&auth.pubkey(), false)], &[&auth]).await.unwrap();
    env.at(m.times(1).0 + 1).await;
    env.send(&[m.bet(&alice.pubkey(), 1, Side::Up, SOL, None)], &[&alice]).await.unwrap();
}

#[tokio::test]
async fn parameters_apply_to_future_rounds_and_authority_moves_in_two_steps() {
    let (mut env, m) = sol_market(1).await;
    let auth = env.authority.insecure_clone();
    let k = env.user(SOL).await;
    env.at(m.times(0).0).await;
    env.send(&[m.start(&k.pubkey(), 0)], &[&k]).await.unwrap();
    let mut p = params();
    p.fee_bps = 1_001;
    assert_eq!(env.send(&[m.update_params(&auth.pubkey(), p)], &[&auth]).await, Err(code(MarketError::FeeTooHigh)));
    p.fee_bps = 1_000;
    p.min_bet = 0;
    assert_eq!(env.send(&[m.update_params(&auth.pubkey(), p)], &[&auth]).await, Err(code(MarketError::ZeroMinBet)));
    p.min_bet = 5_000;
    p.settle_window = 10;
    assert_eq!(
        env.send(&[m.update_params(&auth.pubkey(), p)], &[&auth]).await,
        Err(code(MarketError::BadSettleWindow))
    );
    p.settle_window = 7_200;
    assert_eq!(
        env.send(&[m.update_params(&k.pubkey(), p)], &[&k]).await,
        Err(Fail::Code(anchor_code::CONSTRAINT_HAS_ONE))
    );
    env.send(&[m.update_params(&auth.pubkey(), p)], &[&auth]).await.unwrap();
    assert_eq!(env.events::<ParamsUpdated>()[0].params, p);
    let r0: Round = env.account(m.round(0)).await.unwrap();
    assert_eq!(r0.params, params(), "the running round keeps its parameters");
    env.at(m.times(1).0).await;
    env.send(&[m.start(&k.pubkey(), 1)], &[&k]).await.unwrap();
    let r1: Round = env.account(m.round(1)).await.unwrap();
    assert_eq!(r1.params, p);

    let next = env.user(SOL).await;
    assert_eq!(
        env.send(&[m.accept_authority(&next.pubkey())], &[&next]).await,
        Err(code(MarketError::NotPendingAuthority))
    );
    env.send(&[m.propose_authority(&auth.pubkey(), next.pubkey())], &[&auth]).await.unwrap();
    assert_eq!(env.send(&[m.accept_authority(&k.pubkey())], &[&k]).await, Err(code(MarketError::NotPendingAuthority)));
    env.send(&[m.accept_authority(&next.pubkey())], &[&next]).await.unwrap();
    let market: Market = env.account(m.key).await.unwrap();
    assert_eq!((market.authority, market.pending_authority), (next.pubkey(), None));
    assert_eq!(
        env.send(&[m.set_paused(&auth.pubkey(), true)], &[&auth]).await,
        Err(Fail::Code(anchor_code::CONSTRAINT_HAS_ONE)),
        "the old authority is out"
    );
    env.send(&[m.set_paused(&next.pubkey(), true)], &[&next]).await.unwrap();
}

#[tokio::test]
async fn markets_are_created_only_on_real_chainlink_feeds() {
    let mut env = Env::new().await;
    let auth = env.authority.insecure_clone();
    // Wrong owner.
    env.feed_owner = anchor_lang::prelude::Pubkey::new_unique();
    env.write_feed();
    let (_, init) = init_sol(&auth.pubkey(), 1, env.feed, params());
    assert_eq!(env.send(std::slice::from_ref(&init), &[&auth]).await, Err(code(MarketError::WrongFeedOwner)));
    // Right owner, wrong layout.
    env.feed_owner = CHAINLINK_STORE;
    env.write_feed();
    let mut acct = env.ctx.banks_client.get_account(env.feed).await.unwrap().unwrap();
    acct.data[8] = 1; // version 1
    env.ctx.set_account(&env.feed, &acct.clone().into());
    assert_eq!(env.send(std::slice::from_ref(&init), &[&auth]).await, Err(code(MarketError::BadFeedAccount)));
    env.write_feed();
    // Bad clock and parameters.
    let mut p = params();
    p.max_price_age = 0;
    let (_, bad) = init_sol(&auth.pubkey(), 1, env.feed, p);
    assert_eq!(env.send(&[bad], &[&auth]).await, Err(code(MarketError::BadPriceAge)));
    p = params();
    p.report_delay = INTERVAL + 1;
    let (_, bad) = init_sol(&auth.pubkey(), 1, env.feed, p);
    assert_eq!(env.send(&[bad], &[&auth]).await, Err(code(MarketError::BadReportDelay)));
    env.send(&[init], &[&auth]).await.unwrap();
}

#[tokio::test]
async fn unusable_prices_refund_the_round() {
    // Stale: the last answer before the lock is older than max_price_age.
    let mut env = Env::new().await; // one answer at GENESIS - 60
    let auth = env.authority.insecure_clone();
    let mut p = params();
    p.max_price_age = 120;
    let (m, init) = init_sol(&auth.pubkey(), 1, env.feed, p);
    env.send(&[init], &[&auth]).await.unwrap();
    let (alice, bob) = (env.user(10 * SOL).await, env.user(10 * SOL).await);
    let (start, lock, close) = m.times(0);
    env.at(start).await;
    env.send(&[m.start(&alice.pubkey(), 0)], &[&alice]).await.unwrap();
    env.send(&[m.bet(&alice.pubkey(), 0, Side::Up, SOL, None)], &[&alice]).await.unwrap();
    env.send(&[m.bet(&bob.pubkey(), 0, Side::Down, 2 * SOL, None)], &[&bob]).await.unwrap();
    assert_eq!(
        env.send(&[m.refund(&alice.pubkey(), &[0], None)], &[&alice]).await,
        Err(code(MarketError::RoundNotFinal))
    );
    assert_eq!(
        env.send(&[m.close_position(&alice.pubkey(), 0)], &[&alice]).await,
        Err(code(MarketError::RoundNotFinal))
    );
    let delay = params().report_delay as i64;
    env.at(lock + delay).await;
    // Nothing stamped after the lock yet: the price in effect there is not final.
    assert_eq!(env.send(&[m.lock(0)], &[&bob]).await, Err(code(MarketError::PriceNotFinal)));
    env.push_price(lock + 5, 6_500_000_000_000);
    env.write_feed();
    env.send(&[m.lock(0)], &[&bob]).await.unwrap();
    let r: Round = env.account(m.round(0)).await.unwrap();
    assert_eq!((r.status, r.cancel_reason), (RoundStatus::Cancelled, CancelReason::LockPriceStale));
    assert_eq!(env.events::<RoundCancelled>()[0].reason, CancelReason::LockPriceStale);
    let before = env.lamports(bob.pubkey()).await;
    env.send(&[m.claim(&bob.pubkey(), &[0], None)], &[&bob]).await.unwrap();
    assert_eq!(env.lamports(bob.pubkey()).await, before + 2 * SOL - 5_000);

    // History that no longer reaches back to the lock: a ring of 4 overwritten by later answers.
    let mut env = Env::new().await;
    env.live_length = 4;
    let auth = env.authority.insecure_clone();
    let (m, init) = init_sol(&auth.pubkey(), 1, env.feed, params());
    env.send(&[init], &[&auth]).await.unwrap();
    let k = env.user(SOL).await;
    let (start, lock, _) = m.times(0);
    env.at(start).await;
    env.send(&[m.start(&k.pubkey(), 0)], &[&k]).await.unwrap();
    for i in 0..6 {
        env.push_price(lock + 10 + i, 7_000_000_000_000);
    }
    env.write_feed();
    env.at(close).await;
    env.send(&[m.lock(0)], &[&k]).await.unwrap();
    let r: Round = env.account(m.round(0)).await.unwrap();
    assert_eq!(r.cancel_reason, CancelReason::LockPriceUnavailable);

    // A non-positive answer at the close; and a feed whose decimals changed.
    for (answer, decimals) in [(0i128, 8u8), (6_500_000_000_000, 18)] {
        let mut env = Env::new().await;
        let auth = env.authority.insecure_clone();
        let (m, init) = init_sol(&auth.pubkey(), 1, env.feed, params());
        env.send(&[init], &[&auth]).await.unwrap();
        let k = env.user(SOL).await;
        let (start, lock, close) = m.times(0);
        env.push_price(lock - 1, 6_500_000_000_000);
        env.push_price(lock + 1, 6_500_000_000_000);
        env.write_feed();
        env.at(start).await;
        env.send(&[m.start(&k.pubkey(), 0)], &[&k]).await.unwrap();
        env.at(lock + delay).await;
        env.send(&[m.lock(0)], &[&k]).await.unwrap();
        env.push_price(close - 1, answer);
        env.push_price(close + 1, answer);
        env.write_feed_with(decimals);
        env.at(close + delay).await;
        env.send(&[m.settle(&k.pubkey(), 0)], &[&k]).await.unwrap();
        let r: Round = env.account(m.round(0)).await.unwrap();
        assert_eq!(
            (r.status, r.cancel_reason),
            (RoundStatus::Cancelled, CancelReason::BadAnswer),
            "{answer} {decimals}"
        );
    }

    // A feed that stopped being a Chainlink account is an error for the crank (the round stays refundable later).
    let (mut env, m) = sol_market(1).await;
    let k = env.user(SOL).await;
    env.at(m.times(0).0).await;
    env.send(&[m.start(&k.pubkey(), 0)], &[&k]).await.unwrap();
    env.feed_owner = anchor_lang::prelude::Pubkey::new_unique();
    env.write_feed();
    env.at(m.times(0).1 + delay).await;
    assert_eq!(env.send(&[m.lock(0)], &[&k]).await, Err(code(MarketError::WrongFeedOwner)));
    // Passing another account as the feed is refused by address.
    let other = env.feed;
    let mut lock_ix = m.lock(0);
    lock_ix.accounts[3].pubkey = anchor_lang::prelude::Pubkey::new_unique();
    assert_eq!(env.send(&[lock_ix], &[&k]).await, Err(Fail::Code(anchor_code::CONSTRAINT_ADDRESS)));
    let _ = other;
}

#[tokio::test]
async fn a_round_nobody_settles_is_refunded_after_its_window() {
    let (mut env, m) = sol_market(1_000).await;
    let (alice, bob, k) = (env.user(10 * SOL).await, env.user(10 * SOL).await, env.user(SOL).await);
    let (start, lock, close) = m.times(0);
    env.at(start).await;
    env.send(&[m.start(&k.pubkey(), 0)], &[&k]).await.unwrap();
    env.send(&[m.bet(&alice.pubkey(), 0, Side::Up, SOL, None)], &[&alice]).await.unwrap();
    env.send(&[m.bet(&bob.pubkey(), 0, Side::Down, SOL, None)], &[&bob]).await.unwrap();
    let delay = params().report_delay as i64;
    env.at(lock + delay).await;
    env.send(&[m.lock(0)], &[&k]).await.unwrap();
    let window = params().settle_window as i64;
    env.at(close + window).await;
    assert_eq!(
        env.send(&[m.refund(&alice.pubkey(), &[0], None)], &[&alice]).await,
        Err(code(MarketError::RoundNotFinal))
    );
    env.at(close + window + 1).await;
    // Refund without anyone settling; a late settle then finds the round final.
    env.send(&[m.refund(&alice.pubkey(), &[0], None)], &[&alice]).await.unwrap();
    let r: Round = env.account(m.round(0)).await.unwrap();
    assert_eq!((r.status, r.cancel_reason), (RoundStatus::Cancelled, CancelReason::Expired));
    assert_eq!(env.send(&[m.settle(&k.pubkey(), 0)], &[&k]).await, Err(code(MarketError::RoundFinal)));
    env.send(&[m.claim(&bob.pubkey(), &[0], None)], &[&bob]).await.unwrap();
    assert_eq!(env.send(&[m.claim(&bob.pubkey(), &[0], None)], &[&bob]).await, Err(code(MarketError::AlreadyClaimed)));
    for u in [&alice, &bob] {
        env.send(&[m.close_position(&u.pubkey(), 0)], &[u]).await.unwrap();
    }
    env.send(&[m.close_round(&k.pubkey(), 0)], &[&k]).await.unwrap();
    let (held, owed) = audit(&mut env, &m, 0..1).await;
    assert_eq!((held, owed), (0, 0));

    // A settle that arrives after the window cancels instead of settling.
    env.at(m.times(5).0).await;
    env.send(&[m.start(&k.pubkey(), 5)], &[&k]).await.unwrap();
    env.push_price(m.times(5).1 + 1, 6_500_000_000_000);
    env.write_feed();
    env.at(m.times(5).1 + delay).await;
    env.send(&[m.lock(5)], &[&k]).await.unwrap();
    env.at(m.times(5).2 + window + 1).await;
    env.send(&[m.settle(&k.pubkey(), 5)], &[&k]).await.unwrap();
    assert_eq!(env.events::<RoundCancelled>()[0].reason, CancelReason::Expired);
}
