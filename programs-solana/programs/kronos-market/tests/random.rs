//! Seeded random sequences over many bettors and rounds: bets (valid and invalid), cranks at random moments, claims,
//! refunds, double claims and closes, with a SOL and a token market. After every step the vault must hold at least
//! (here: exactly) what the program owes, and every (round, wallet) is paid at most once; at the end every stake is
//! accounted for (payouts + treasury = stakes) and every round's result matches the feed's history.
//!
//! `KRONOS_SOLANA_SEEDS=n` runs n seeds per market kind (default 3).
#![allow(deprecated)] // solana-program-test 3.x marks its API "unstable"; it is the supported native path.

mod harness;

use std::collections::{BTreeMap, BTreeSet};

use anchor_lang::prelude::Pubkey;
use harness::*;
use kronos_market::chainlink::Transmission;
use kronos_market::events::{Claimed, Refunded};
use kronos_market::state::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use solana_keypair::Keypair;
use solana_signer::Signer;

const EPOCHS: u64 = 10;
const USERS: usize = 6;

struct World {
    env: Env,
    m: M,
    users: Vec<Keypair>,
    tokens: Vec<Option<Pubkey>>,
    /// (epoch, user) -> (side, staked)
    bets: BTreeMap<(u64, usize), (Side, u64)>,
    /// (epoch, user) -> paid
    paid: BTreeMap<(u64, usize), u64>,
    closed_positions: BTreeSet<(u64, usize)>,
    closed_rounds: BTreeSet<u64>,
    cranker: Keypair,
    /// The feed's whole history in the order it lands: (landing time, transmission). A transmission's timestamp is
    /// its observation time; reports land a few seconds later, sometimes after a later-observed one.
    history: Vec<(i64, Transmission)>,
    /// How many of them are written into the feed account so far.
    landed: usize,
}

impl World {
    async fn balance(&mut self, u: usize) -> u64 {
        match self.tokens[u] {
            Some(t) => self.env.token_balance(t).await,
            None => self.env.lamports(self.users[u].pubkey()).await,
        }
    }
    fn fee(&self) -> u64 {
        if self.m.mint.is_some() {
            0
        } else {
            5_000
        }
    }
    /// Writes into the feed what has landed by `now`.
    fn land(&mut self, now: i64) {
        let n = self.history.iter().take_while(|(at, _)| *at <= now).count();
        if n != self.landed {
            self.landed = n;
            self.env.feed_data = self.history[..n].iter().map(|(_, t)| *t).collect();
            self.env.write_feed();
        }
    }

    /// Whether a transmission observed after `t` has landed by `now` (the price at `t` is final then).
    fn is_final(&self, t: i64, now: i64) -> bool {
        self.history.iter().any(|(at, x)| *at <= now && x.timestamp as i64 > t)
    }

    async fn check_vault(&mut self, step: usize) {
        let m = self.m;
        let (held, owed) = audit(&mut self.env, &m, 0..EPOCHS).await;
        assert!(held >= owed, "step {step}: vault holds {held} < owed {owed}");
        assert_eq!(held, owed, "step {step}: nothing may leak in or out");
    }
}

/// Feed history: an answer every 30..200 s (sometimes a long gap, so some rounds see a stale price), a random walk
/// with frequent repeats (ties); each lands 0..5 s after its observation time, sometimes (5%) up to 40 s late, so
/// some land after a later-observed one.
fn feed(rng: &mut StdRng) -> Vec<(i64, Transmission)> {
    let mut t = GENESIS - 100;
    let mut p: i128 = 6_500_000_000_000;
    let end = GENESIS + (EPOCHS as i64 + 4) * INTERVAL as i64 + 4 * 3_600;
    let mut out = vec![];
    while t < end {
        t += if rng.gen_bool(0.03) { rng.gen_range(3_700..5_000) } else { rng.gen_range(30..200) };
        if rng.gen_bool(0.6) {
            p += rng.gen_range(-3i128..=3) * 1_000_000;
        }
        if rng.gen_bool(0.01) {
            p = 0; // a bad answer
        } else if p <= 0 {
            p = 6_500_000_000_000;
        }
        // Observation times may repeat out of order: sometimes a report is observed a little before the last one.
        let observed = if rng.gen_bool(0.05) { t - rng.gen_range(1..20) } else { t };
        let lag = if rng.gen_bool(0.05) { rng.gen_range(5..40) } else { rng.gen_range(0..5) };
        out.push((observed + lag, Transmission { slot: out.len() as u64 + 1, timestamp: observed as u32, answer: p }));
    }
    out.sort_by_key(|(at, _)| *at); // the order they land in (stable for equal times)
    out
}

/// The answer in effect at `t` under the program's rule, over the whole history as it landed, if usable under
/// `max_age`: the first transmission landed with a timestamp after `t` fixes it as the newest one landed before it
/// with a timestamp at or before `t`. The model the program must match.
fn model_price(history: &[(i64, Transmission)], t: i64, max_age: u32) -> Option<i128> {
    let f = history.iter().position(|(_, x)| x.timestamp as i64 > t)?;
    let (_, tx) = history[..f].iter().rev().find(|(_, x)| x.timestamp as i64 <= t)?;
    (tx.answer > 0 && t - tx.timestamp as i64 <= max_age as i64).then_some(tx.answer)
}

async fn run(seed: u64, token: bool) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut env = Env::new().await;
    env.live_length = 4096;
    let history = feed(&mut rng);
    env.feed_data = history.iter().take_while(|(at, _)| *at <= GENESIS - 200).map(|(_, t)| *t).collect();
    env.write_feed();
    let auth = env.authority.insecure_clone();
    let mut p = params();
    p.max_price_age = 3_600;
    p.fee_bps = rng.gen_range(0..=1_000);
    p.settler_reward_bps = rng.gen_range(0..=MAX_SETTLER_REWARD_BPS);
    p.bet_cutoff = rng.gen_range(MIN_BET_CUTOFF..=60);
    let (m, init) = if token {
        let mint = env.create_mint(6).await;
        init_token(&auth.pubkey(), seed, env.feed, mint, p)
    } else {
        init_sol(&auth.pubkey(), seed, env.feed, p)
    };
    env.send(&[init], &[&auth]).await.unwrap();
    let mut users = vec![];
    let mut tokens = vec![];
    for _ in 0..USERS {
        let u = env.user(1_000 * SOL).await;
        let t = match m.mint {
            Some(mint) => Some(env.token_account(mint, &u.pubkey(), 1_000 * SOL).await),
            None => None,
        };
        users.push(u);
        tokens.push(t);
    }
    let cranker = env.user(100 * SOL).await;
    let mut w = World {
        env,
        m,
        users,
        tokens,
        bets: BTreeMap::new(),
        paid: BTreeMap::new(),
        closed_positions: BTreeSet::new(),
        closed_rounds: BTreeSet::new(),
        cranker,
        history,
        landed: usize::MAX,
    };
    let mut started = BTreeSet::new();
    let mut now = GENESIS - 5;
    let end = GENESIS + (EPOCHS as i64 + 2) * INTERVAL as i64 + p.settle_window as i64 + 600;
    let mut step = 0usize;
    while now < end {
        step += 1;
        now += rng.gen_range(4..30);
        w.env.at(now).await;
        w.land(now);
        // The round taking bets now, if any: most actions aim at it, the rest at any epoch.
        let current = (now - GENESIS).div_euclid(INTERVAL as i64);
        let e = if (0..EPOCHS as i64).contains(&current) && rng.gen_bool(0.7) {
            current as u64
        } else {
            rng.gen_range(0..EPOCHS)
        };
        let (start, lock, close) = m.times(e);
        let u = rng.gen_range(0..USERS);
        match rng.gen_range(0..100) {
            // Start a round (the crank usually does it in time; sometimes never).
            0..=11 => {
                if started.contains(&e) || rng.gen_bool(0.05) {
                    continue;
                }
                let k = w.cranker.insecure_clone();
                let r = w.env.send(&[m.start(&k.pubkey(), e)], &[&k]).await;
                if now >= start && now < lock {
                    r.unwrap();
                    started.insert(e);
                } else {
                    let want = if now < start { MarketError::RoundNotStarted } else { MarketError::TooLateToStart };
                    assert_eq!(r, Err(code(want)), "step {step}: start {e} at {now} outside [{start}, {lock})");
                }
            }
            // Bet.
            12..=64 => {
                let prev = w.bets.get(&(e, u)).copied();
                let side = match prev {
                    Some((s, _)) if rng.gen_bool(0.9) => s,
                    _ => {
                        if rng.gen_bool(0.5) {
                            Side::Up
                        } else {
                            Side::Down
                        }
                    }
                };
                let amount = if rng.gen_bool(0.05) { p.min_bet - 1 } else { rng.gen_range(p.min_bet..3 * SOL) };
                let user = w.users[u].insecure_clone();
                let before = w.balance(u).await;
                let r = w.env.send(&[m.bet(&user.pubkey(), e, side, amount, w.tokens[u])], &[&user]).await;
                let expect = if !started.contains(&e) || w.closed_rounds.contains(&e) {
                    Some(Fail::Code(anchor_code::ACCOUNT_NOT_INITIALIZED))
                } else if now < start || now >= lock - p.bet_cutoff as i64 {
                    Some(code(MarketError::BettingClosed))
                } else if amount < p.min_bet {
                    Some(code(MarketError::BetTooSmall))
                } else if prev.is_some_and(|(s, _)| s != side) {
                    Some(code(MarketError::OppositeSideTaken))
                } else {
                    None
                };
                match expect {
                    None => {
                        r.unwrap_or_else(|e| panic!("step {step}: bet refused: {e:?}"));
                        let b = w.bets.entry((e, u)).or_insert((side, 0));
                        b.1 += amount;
                        let after = w.balance(u).await;
                        assert!(before - after >= amount, "step {step}: stake not taken");
                    }
                    // The rules in the program's order: the round account, the time window, the amount, the side.
                    Some(f) => assert_eq!(r, Err(f), "step {step}: bet on {e} at {now}"),
                }
            }
            // Lock and/or settle.
            65..=78 => {
                if !started.contains(&e) || w.closed_rounds.contains(&e) {
                    continue;
                }
                let k = w.cranker.insecure_clone();
                let r: Round = w.env.account(m.round(e)).await.unwrap();
                let ix = if r.status == RoundStatus::Open { m.lock(e) } else { m.settle(&k.pubkey(), e) };
                let t = if r.status == RoundStatus::Open { lock } else { close };
                let due = p.report_delay as i64 + t;
                let res = w.env.send(&[ix], &[&k]).await;
                match r.status {
                    // Final (or expired, which needs no price): it goes through.
                    RoundStatus::Open | RoundStatus::Locked if now >= due && (w.is_final(t, now) || r.expired(now)) => {
                        res.unwrap_or_else(|err| panic!("step {step}: crank {e} at {now}: {err:?}"))
                    }
                    // Not final yet: refused, unless the neighbouring round already recorded that timestamp.
                    RoundStatus::Open | RoundStatus::Locked if now >= due => assert!(
                        res.is_ok() || res == Err(code(MarketError::PriceNotFinal)),
                        "step {step}: crank {e} at {now}: {res:?}"
                    ),
                    RoundStatus::Open | RoundStatus::Locked => assert_eq!(res, Err(code(MarketError::TooEarly))),
                    _ => assert_eq!(res, Err(code(MarketError::RoundFinal))),
                }
            }
            // Claim or refund (sometimes twice, sometimes several rounds at once).
            79..=93 => {
                let mine: Vec<u64> = (0..EPOCHS)
                    .filter(|x| w.bets.contains_key(&(*x, u)) && !w.closed_positions.contains(&(*x, u)))
                    .collect();
                if mine.is_empty() {
                    continue;
                }
                let n = rng.gen_range(1..=mine.len().min(3));
                let pick: Vec<u64> = mine.iter().copied().filter(|_| rng.gen_bool(0.5)).take(n).collect();
                let pick = if pick.is_empty() { vec![mine[0]] } else { pick };
                claim(&mut w, u, &pick, rng.gen_bool(0.3), step, now).await;
            }
            // Close a position or a round.
            _ => {
                if rng.gen_bool(0.5) {
                    if !w.bets.contains_key(&(e, u)) || w.closed_positions.contains(&(e, u)) {
                        continue;
                    }
                    let user = w.users[u].insecure_clone();
                    if w.env.send(&[m.close_position(&user.pubkey(), e)], &[&user]).await.is_ok() {
                        let pos: Option<Position> = w.env.account(m.position(e, &user.pubkey())).await;
                        assert!(pos.is_none());
                        w.closed_positions.insert((e, u));
                    }
                } else if started.contains(&e) && !w.closed_rounds.contains(&e) {
                    let k = w.cranker.insecure_clone();
                    if w.env.send(&[m.close_round(&k.pubkey(), e)], &[&k]).await.is_ok() {
                        w.closed_rounds.insert(e);
                        assert!(
                            (0..USERS).all(|x| !w.bets.contains_key(&(e, x)) || w.closed_positions.contains(&(e, x))),
                            "step {step}: round {e} closed with positions open"
                        );
                    }
                }
            }
        }
        w.check_vault(step).await;
    }

    // Everything is final now: check each round against the feed, then pay everyone and close everything.
    let mut treasury_from_rounds = 0u64;
    let mut settler_rewards = 0u64;
    for e in started.iter().copied() {
        if w.closed_rounds.contains(&e) {
            continue;
        }
        let r: Round = w.env.account(m.round(e)).await.unwrap();
        let up: u64 = w.bets.iter().filter(|((x, _), (s, _))| *x == e && *s == Side::Up).map(|(_, (_, a))| a).sum();
        let down: u64 = w.bets.iter().filter(|((x, _), (s, _))| *x == e && *s == Side::Down).map(|(_, (_, a))| a).sum();
        assert_eq!((r.up_amount, r.down_amount), (up, down), "epoch {e}: pools match the accepted bets");
        if r.status == RoundStatus::Settled {
            let lp = model_price(&w.history, r.lock_ts, p.max_price_age).expect("settled with a usable lock price");
            let cp = model_price(&w.history, r.close_ts, p.max_price_age).expect("settled with a usable close price");
            assert_eq!((r.lock_price, r.close_price), (lp, cp), "epoch {e}");
            assert_eq!(r.outcome, if cp > lp { Outcome::Up } else { Outcome::Down }, "epoch {e}");
            assert!(up > 0 && down > 0, "epoch {e}: settled with one side empty");
            assert_eq!(r.fee, (up + down) * p.fee_bps as u64 / 10_000);
            // The settler's share is paid on a SOL market; a token settler without a token account leaves it.
            let reward = if token { 0 } else { r.fee * p.settler_reward_bps as u64 / 10_000 };
            assert_eq!(r.settler_reward, reward, "epoch {e}");
            treasury_from_rounds += r.fee - r.settler_reward;
            settler_rewards += r.settler_reward;
        } else if r.status == RoundStatus::Cancelled {
            let lp = model_price(&w.history, r.lock_ts, p.max_price_age);
            let cp = model_price(&w.history, r.close_ts, p.max_price_age);
            match r.cancel_reason {
                CancelReason::Tie => assert_eq!(lp, cp),
                CancelReason::OneSidedPool => assert!(up == 0 || down == 0),
                CancelReason::LockPriceStale | CancelReason::LockPriceUnavailable | CancelReason::BadAnswer
                    if lp.is_none() => {}
                CancelReason::ClosePriceStale | CancelReason::ClosePriceUnavailable | CancelReason::BadAnswer
                    if cp.is_none() => {}
                CancelReason::Expired => {}
                other => panic!("epoch {e}: cancelled for {other:?} with prices {lp:?} {cp:?}"),
            }
        }
    }
    w.env.at(end + 10).await;
    for u in 0..USERS {
        let mine: Vec<u64> = (0..EPOCHS)
            .filter(|x| {
                w.bets.contains_key(&(*x, u))
                    && !w.paid.contains_key(&(*x, u))
                    && !w.closed_positions.contains(&(*x, u))
            })
            .collect();
        for e in mine {
            claim(&mut w, u, &[e], false, usize::MAX, end + 10).await;
        }
        for e in 0..EPOCHS {
            if w.bets.contains_key(&(e, u)) && !w.closed_positions.contains(&(e, u)) {
                let user = w.users[u].insecure_clone();
                w.env.send(&[m.close_position(&user.pubkey(), e)], &[&user]).await.unwrap();
                w.closed_positions.insert((e, u));
            }
        }
    }
    for e in started.iter().copied() {
        if !w.closed_rounds.contains(&e) {
            let k = w.cranker.insecure_clone();
            w.env.send(&[m.close_round(&k.pubkey(), e)], &[&k]).await.unwrap();
            w.closed_rounds.insert(e);
        }
    }
    w.check_vault(usize::MAX).await;
    let market: Market = w.env.account(m.key).await.unwrap();
    let staked: u64 = w.bets.values().map(|(_, a)| a).sum();
    let paid: u64 = w.paid.values().sum();
    assert_eq!(
        paid + market.treasury_owed + settler_rewards,
        staked,
        "every stake is paid out, paid to a settler or owed to the treasury"
    );
    assert!(market.treasury_owed >= treasury_from_rounds, "fees plus rounding dust");
    let (held, _) = audit(&mut w.env, &m, 0..EPOCHS).await;
    assert_eq!(held, market.treasury_owed);
    eprintln!(
        "seed {seed} {}: {step} steps, {} bets, {} rounds, staked {staked}, paid {paid}, treasury {}",
        if token { "token" } else { "SOL" },
        w.bets.len(),
        started.len(),
        market.treasury_owed
    );
}

/// Claims (or refunds) `epochs` for user `u` and checks the payout against the rounds' state, or the refusal.
async fn claim(w: &mut World, u: usize, epochs: &[u64], refund: bool, step: usize, now: i64) {
    let m = w.m;
    let user = w.users[u].insecure_clone();
    let mut expect: Result<u64, MarketError> = Ok(0);
    for e in epochs {
        let r: Option<Round> = w.env.account(m.round(*e)).await;
        let r = r.expect("a round with a position exists");
        let (side, amount) = w.bets[&(*e, u)];
        let expired = matches!(r.status, RoundStatus::Open | RoundStatus::Locked)
            && now > r.close_ts + r.params.settle_window as i64;
        let this: Result<u64, MarketError> = if w.paid.contains_key(&(*e, u)) {
            Err(MarketError::AlreadyClaimed)
        } else if expired || r.status == RoundStatus::Cancelled {
            Ok(amount)
        } else if r.status == RoundStatus::Settled {
            let won = (r.outcome == Outcome::Up) == (side == Side::Up);
            let pool = if r.outcome == Outcome::Up { r.up_amount } else { r.down_amount };
            let x = (amount as u128 * r.reward_amount as u128 / pool as u128) as u64;
            if refund {
                Err(MarketError::NotRefundable)
            } else if !won || x == 0 {
                Err(MarketError::NotAWinner)
            } else {
                Ok(x)
            }
        } else {
            Err(MarketError::RoundNotFinal)
        };
        expect = match (expect, this) {
            (Ok(a), Ok(b)) => Ok(a + b),
            (Err(x), _) => Err(x),
            (Ok(_), Err(x)) => Err(x),
        };
    }
    let before = w.balance(u).await;
    let ix = if refund {
        m.refund(&user.pubkey(), epochs, w.tokens[u])
    } else {
        m.claim(&user.pubkey(), epochs, w.tokens[u])
    };
    let res = w.env.send(&[ix], &[&user]).await;
    match expect {
        Ok(total) => {
            res.unwrap_or_else(|e| panic!("step {step}: claim {epochs:?} by {u} refused: {e:?}"));
            let after = w.balance(u).await;
            assert_eq!(after + w.fee(), before + total, "step {step}: claim {epochs:?} by {u}");
            let mut events: Vec<(u64, u64)> = w.env.events::<Claimed>().iter().map(|c| (c.epoch, c.amount)).collect();
            events.extend(w.env.events::<Refunded>().iter().map(|c| (c.epoch, c.amount)));
            assert_eq!(events.iter().map(|x| x.1).sum::<u64>(), total);
            for (e, amount) in events {
                assert!(w.paid.insert((e, u), amount).is_none(), "step {step}: epoch {e} paid twice to {u}");
            }
        }
        Err(code_want) => {
            assert_eq!(res, Err(code(code_want)), "step {step}: claim {epochs:?} by {u} (refund {refund})");
            assert_eq!(w.balance(u).await + w.fee(), before, "a refused claim pays nothing (only the tx fee)");
        }
    }
}

fn seeds() -> u64 {
    std::env::var("KRONOS_SOLANA_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(3)
}

#[tokio::test]
async fn random_sequences_on_a_sol_market_keep_the_vault_whole() {
    for seed in 0..seeds() {
        run(1_000 + seed, false).await;
    }
}

#[tokio::test]
async fn random_sequences_on_a_token_market_keep_the_vault_whole() {
    for seed in 0..seeds() {
        run(2_000 + seed, true).await;
    }
}
