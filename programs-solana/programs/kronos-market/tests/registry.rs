//! The forecast registry (`PredictionRegistry.sol` on Solana): every rule and every refusal, run natively through
//! the real Anchor entry point against the market's own rounds.
#![allow(deprecated)] // solana-program-test 3.x marks its API "unstable"; it is the supported native path.

mod harness;

use anchor_lang::prelude::Pubkey;
use anchor_lang::{AccountSerialize, Discriminator};
use harness::*;
use kronos_market::events::*;
use kronos_market::registry::{CommitStatus, Commitment, Registry, MAX_BRIER};
use kronos_market::state::*;
use solana_account::{Account, AccountSharedData};
use solana_keypair::Keypair;
use solana_signer::Signer;

/// The fee of a one-signature transaction (program-test's default).
const SIGNATURE_FEE: u64 = 5_000;
/// Anchor's "account owned by a different program" code.
const ACCOUNT_OWNED_BY_WRONG_PROGRAM: u32 = 3007;
/// Anchor's "account discriminator mismatch" code.
const ACCOUNT_DISCRIMINATOR_MISMATCH: u32 = 3002;

/// A SOL market enabled for forecasts with the registry created, its feed priced 5 s before every epoch boundary
/// `k` at `prices[k]`.
async fn setup(prices: &[i128]) -> (Env, M) {
    let mut env = Env::with_registry().await;
    for (k, p) in prices.iter().enumerate() {
        env.push_price(GENESIS + k as i64 * INTERVAL as i64 - 5, *p);
    }
    env.write_feed();
    let auth = env.authority.insecure_clone();
    let (m, init) = init_sol(&auth.pubkey(), 1, env.feed, params());
    env.send(&[init, m.enable_forecasts(&auth.pubkey())], &[&auth]).await.unwrap();
    (env, m)
}

const P: i128 = 6_500_000_000_000;

async fn start(env: &mut Env, m: &M, epoch: u64) {
    let k = env.authority.insecure_clone();
    env.at(m.times(epoch).0).await;
    env.send(&[m.start(&k.pubkey(), epoch)], &[&k]).await.unwrap();
}

/// Two opposite bets, so that the round settles (rather than being refunded as one-sided).
async fn both_sides(env: &mut Env, m: &M, epoch: u64) {
    for side in [Side::Up, Side::Down] {
        let u = env.user(10 * SOL).await;
        env.send(&[m.bet(&u.pubkey(), epoch, side, SOL, None)], &[&u]).await.unwrap();
    }
}

/// Settles `epoch` once it may be (or now, if later).
async fn settle(env: &mut Env, m: &M, epoch: u64) {
    let k = env.authority.insecure_clone();
    let t = env.now.max(m.times(epoch).2 + params().report_delay as i64);
    env.at(t).await;
    env.send(&[m.settle(&k.pubkey(), epoch)], &[&k]).await.unwrap();
}

/// The reveal deadline of a forecast on round `epoch` (the tests' settle window and reveal window).
fn deadline(m: &M, epoch: u64) -> i64 {
    m.times(epoch).2 + params().settle_window as i64 + REVEAL_WINDOW as i64
}

/// Starts round `epoch`, with a bet on each side when `bets` (so that it settles rather than being refunded as
/// one-sided), and commits `f` on it as `publisher`.
async fn commit_on_new_round(env: &mut Env, m: &M, publisher: &Keypair, epoch: u64, f: &Forecast, bets: bool) {
    start(env, m, epoch).await;
    if bets {
        both_sides(env, m, epoch).await;
    }
    env.send(&[m.commit(&publisher.pubkey(), epoch, f)], &[publisher]).await.unwrap();
}

/// A market going up (`P, P, P + 10, P + 20, P + 30`) with `fs[e]` committed on its round `e` (0 and 1) by one
/// publisher (10 SOL), with a bet on each side when `bets`, and both rounds settled.
async fn two_settled_commitments(fs: &[Forecast; 2], bets: bool) -> (Env, M, Keypair) {
    let (mut env, m) = setup(&[P, P, P + 10, P + 20, P + 30]).await;
    let publisher = env.user(10 * SOL).await;
    for (e, f) in (0..).zip(fs) {
        commit_on_new_round(&mut env, &m, &publisher, e, f, bets).await;
    }
    settle(&mut env, &m, 0).await;
    settle(&mut env, &m, 1).await;
    (env, m, publisher)
}

/// Reveals `f` on round `epoch` as `publisher` (accepted).
async fn reveal(env: &mut Env, m: &M, publisher: &Keypair, epoch: u64, f: &Forecast) {
    env.send(&[m.reveal(&publisher.pubkey(), epoch, f)], &[publisher]).await.unwrap();
}

async fn view(env: &mut Env, publisher: &Pubkey) -> RecordView {
    let from_account = env.record(publisher).await;
    let from_instruction = env.simulate_record(publisher).await;
    assert_eq!(from_account, from_instruction, "the account's view and the track_record instruction agree");
    from_account
}

#[tokio::test]
async fn the_registry_is_created_once_by_the_upgrade_authority() {
    let mut env = Env::new().await;
    let auth = env.authority.insecure_clone();
    let stranger = env.user(SOL).await;
    assert_eq!(
        env.send(&[initialize_registry(&stranger.pubkey(), CLUSTER, REVEAL_WINDOW)], &[&stranger]).await,
        Err(code(MarketError::NotUpgradeAuthority))
    );
    for bad in [0, 30 * 86_400 + 1] {
        assert_eq!(
            env.send(&[initialize_registry(&auth.pubkey(), CLUSTER, bad)], &[&auth]).await,
            Err(code(MarketError::BadRevealWindow)),
            "reveal window {bad}"
        );
    }
    // The cluster must be a genesis hash: all zeros (an unset value) is refused.
    assert_eq!(
        env.send(&[initialize_registry(&auth.pubkey(), [0; 32], REVEAL_WINDOW)], &[&auth]).await,
        Err(code(MarketError::ZeroCluster))
    );
    // Without the registry nothing can be committed.
    let (m, init) = init_sol(&auth.pubkey(), 1, env.feed, params());
    env.send(&[init, m.enable_forecasts(&auth.pubkey())], &[&auth]).await.unwrap();
    start(&mut env, &m, 0).await;
    let p = env.user(SOL).await;
    assert_eq!(
        env.send(&[m.commit(&p.pubkey(), 0, &forecast(true, 6_000, 1))], &[&p]).await,
        Err(Fail::Code(anchor_code::ACCOUNT_NOT_INITIALIZED))
    );

    env.send(&[initialize_registry(&auth.pubkey(), CLUSTER, REVEAL_WINDOW)], &[&auth]).await.unwrap();
    let ev = env.events::<RegistryInitialized>();
    assert_eq!((ev[0].cluster, ev[0].reveal_window), (CLUSTER, REVEAL_WINDOW));
    let r: Registry = env.account(registry_pda()).await.unwrap();
    assert_eq!((r.cluster, r.reveal_window), (CLUSTER, REVEAL_WINDOW));
    // Created once: the system program refuses to create the existing account again (a runtime error, not one of
    // the program's codes), and the registry is unchanged.
    assert!(matches!(
        env.send(&[initialize_registry(&auth.pubkey(), [9; 32], 1)], &[&auth]).await,
        Err(Fail::Other(_))
    ));
    let r: Registry = env.account(registry_pda()).await.unwrap();
    assert_eq!(r.cluster, CLUSTER);
    env.send(&[m.commit(&p.pubkey(), 0, &forecast(true, 6_000, 1))], &[&p]).await.unwrap();
}

#[tokio::test]
async fn a_forecast_is_committed_revealed_and_scored() {
    let (mut env, m) = setup(&[P, P, P + 10, P + 20]).await;
    let publisher = env.user(10 * SOL).await;
    let pk = publisher.pubkey();
    let f = forecast(true, 7_000, 42);
    commit_on_new_round(&mut env, &m, &publisher, 0, &f, true).await;
    let ev = &env.events::<ForecastCommitted>()[0];
    assert_eq!((ev.publisher, ev.market, ev.epoch, ev.commitment), (pk, m.key, 0, m.commitment_of(&pk, 0, &f)));
    let c: Commitment = env.account(commitment_pda(&m.key, 0, &pk)).await.unwrap();
    assert_eq!((c.status, c.deadline, c.hash), (CommitStatus::Committed, deadline(&m, 0), ev.commitment));
    let r: Round = env.account(m.round(0)).await.unwrap();
    assert_eq!(r.reveal_until, deadline(&m, 0), "the round keeps its forecasts' reveal deadline");
    assert_eq!(view(&mut env, &pk).await, RecordView { committed: 1, pending: 1, ..Default::default() });

    // Locked but not settled: the outcome is not final.
    let (_, lock, close) = m.times(0);
    env.at(lock + 20).await;
    env.send(&[m.lock(0)], &[&publisher]).await.unwrap();
    assert_eq!(env.send(&[m.reveal(&pk, 0, &f)], &[&publisher]).await, Err(code(MarketError::OutcomeNotFinal)));
    env.at(close + 1).await;
    assert_eq!(env.send(&[m.reveal(&pk, 0, &f)], &[&publisher]).await, Err(code(MarketError::OutcomeNotFinal)));
    settle(&mut env, &m, 0).await;

    // The wrong salt, probability or direction does not open the commitment.
    for wrong in [forecast(true, 7_000, 43), forecast(true, 7_001, 42), forecast(false, 7_000, 42)] {
        assert_eq!(
            env.send(&[m.reveal(&pk, 0, &wrong)], &[&publisher]).await,
            Err(code(MarketError::CommitmentMismatch)),
            "{wrong:?}"
        );
    }
    reveal(&mut env, &m, &publisher, 0, &f).await;
    let ev = &env.events::<ForecastRevealed>()[0];
    assert_eq!((ev.publisher, ev.market, ev.epoch, ev.up, ev.probability_up_bps), (pk, m.key, 0, true, 7_000));
    // Up: (7000 − 10000)² = 9e6.
    assert_eq!((ev.outcome, ev.hit, ev.brier), (Outcome::Up, true, 9_000_000));
    let c: Commitment = env.account(commitment_pda(&m.key, 0, &pk)).await.unwrap();
    assert_eq!(
        (c.status, c.up, c.probability_up_bps, c.outcome, c.hit, c.brier),
        (CommitStatus::Revealed, true, 7_000, Outcome::Up, true, 9_000_000)
    );
    assert_eq!(
        view(&mut env, &pk).await,
        RecordView { committed: 1, revealed: 1, hits: 1, brier_sum: 9_000_000, ..Default::default() }
    );
    assert_eq!(env.send(&[m.reveal(&pk, 0, &f)], &[&publisher]).await, Err(code(MarketError::AlreadyFinal)));
    assert_eq!(env.send(&[m.expire(&pk, 0)], &[&publisher]).await, Err(code(MarketError::AlreadyFinal)));
    // A reveal is still accepted at its deadline, and never after: revealed stays revealed.
    env.at(deadline(&m, 0) + 1).await;
    assert_eq!(view(&mut env, &pk).await.expired, 0);
}

#[tokio::test]
async fn commits_close_with_betting() {
    let (mut env, m) = setup(&[P, P, P + 10, P + 20]).await;
    let publisher = env.user(10 * SOL).await;
    let pk = publisher.pubkey();
    let f = forecast(false, 4_000, 1);
    // A round nobody started cannot be forecast (its account does not exist); starting it is open to anyone.
    env.at(m.times(0).0).await;
    assert_eq!(
        env.send(&[m.commit(&pk, 0, &f)], &[&publisher]).await,
        Err(Fail::Code(anchor_code::ACCOUNT_NOT_INITIALIZED))
    );
    start(&mut env, &m, 0).await;
    let (_, lock, _) = m.times(0);
    let closes = lock - params().bet_cutoff as i64;
    env.at(closes).await;
    assert_eq!(env.send(&[m.commit(&pk, 0, &f)], &[&publisher]).await, Err(code(MarketError::CommitTooLate)));
    env.at(lock + 30).await;
    assert_eq!(env.send(&[m.commit(&pk, 0, &f)], &[&publisher]).await, Err(code(MarketError::CommitTooLate)));
    assert_eq!(env.record(&pk).await, RecordView::default(), "nothing committed");
    env.at(closes - 1).await;
    env.send(&[m.commit(&pk, 0, &f)], &[&publisher]).await.unwrap();
    assert_eq!(env.record(&pk).await.committed, 1);
}

#[tokio::test]
async fn a_second_commit_replaces_the_first_and_counts_once() {
    let (mut env, m) = setup(&[P, P, P - 10, P - 20]).await;
    let publisher = env.user(10 * SOL).await;
    let pk = publisher.pubkey();
    let (first, second) = (forecast(true, 5_500, 1), forecast(false, 2_000, 2));
    commit_on_new_round(&mut env, &m, &publisher, 0, &first, true).await;
    env.at(m.times(0).0 + 60).await;
    env.send(&[m.commit(&pk, 0, &second)], &[&publisher]).await.unwrap();
    assert_eq!(env.events::<ForecastCommitted>()[0].commitment, m.commitment_of(&pk, 0, &second));
    let c: Commitment = env.account(commitment_pda(&m.key, 0, &pk)).await.unwrap();
    assert_eq!(c.hash, m.commitment_of(&pk, 0, &second));
    let rec: TrackRecord = env.account(record_pda(&pk)).await.unwrap();
    assert_eq!((rec.committed, rec.open.len()), (1, 1), "one commitment per (publisher, market, epoch)");
    env.at(m.times(0).1).await;
    assert_eq!(
        env.send(&[m.commit(&pk, 0, &first)], &[&publisher]).await,
        Err(code(MarketError::CommitTooLate)),
        "no replacing once betting closed"
    );

    settle(&mut env, &m, 0).await;
    assert_eq!(
        env.send(&[m.reveal(&pk, 0, &first)], &[&publisher]).await,
        Err(code(MarketError::CommitmentMismatch)),
        "the replaced forecast no longer opens it"
    );
    reveal(&mut env, &m, &publisher, 0, &second).await;
    // Down, forecast 20% Up: (2000 − 0)² = 4e6, a hit.
    assert_eq!(
        view(&mut env, &pk).await,
        RecordView { committed: 1, revealed: 1, hits: 1, brier_sum: 4_000_000, ..Default::default() }
    );
}

#[tokio::test]
async fn the_commitment_binds_publisher_cluster_market_and_epoch() {
    let (mut env, m) = setup(&[P, P, P + 10, P + 20, P + 30]).await;
    let (publisher, copier) = (env.user(10 * SOL).await, env.user(10 * SOL).await);
    let pk = publisher.pubkey();
    let f = forecast(true, 9_000, 7);
    commit_on_new_round(&mut env, &m, &publisher, 0, &f, true).await;
    // The copier commits the publisher's hash as its own: revealing the publisher's forecast does not open it.
    let copied = m.commitment_of(&pk, 0, &f);
    env.send(&[m.commit_with(&copier.pubkey(), 0, m.round(0), copied)], &[&copier]).await.unwrap();
    // Commitments made for another cluster, market or epoch (each wrong in that one field) do not open here.
    let other = env.user(10 * SOL).await;
    let ok = other.pubkey();
    let foreign = [
        (1, commitment_hash(&[0xD2; 32], &ok, &m.key, 1, &f)),
        (2, commitment_hash(&CLUSTER, &ok, &Pubkey::new_unique(), 2, &f)),
        (3, commitment_hash(&CLUSTER, &ok, &m.key, 4, &f)),
    ];
    for (e, h) in foreign {
        start(&mut env, &m, e).await;
        env.send(&[m.commit_with(&ok, e, m.round(e), h)], &[&other]).await.unwrap();
    }
    settle(&mut env, &m, 0).await;
    assert_eq!(
        env.send(&[m.reveal(&copier.pubkey(), 0, &f)], &[&copier]).await,
        Err(code(MarketError::CommitmentMismatch))
    );
    // The mismatch is found before the outcome is looked at (rounds 1..=3 are not final).
    for (e, _) in foreign {
        assert_eq!(
            env.send(&[m.reveal(&ok, e, &f)], &[&other]).await,
            Err(code(MarketError::CommitmentMismatch)),
            "epoch {e}"
        );
    }
    reveal(&mut env, &m, &publisher, 0, &f).await;
}

#[tokio::test]
async fn inconsistent_forecasts_are_refused_at_reveal() {
    let (mut env, m) = setup(&[P, P, P + 10, P + 20]).await;
    let publisher = env.user(10 * SOL).await;
    let pk = publisher.pubkey();
    start(&mut env, &m, 0).await;
    let bad = [forecast(true, 4_999, 1), forecast(false, 5_001, 1), forecast(true, 10_001, 1)];
    let mut publishers: Vec<Keypair> = vec![];
    for f in &bad {
        let p = env.user(10 * SOL).await;
        env.send(&[m.commit(&p.pubkey(), 0, f)], &[&p]).await.unwrap();
        publishers.push(p);
    }
    // Exactly 50% agrees with either direction.
    let even = forecast(false, 5_000, 3);
    env.send(&[m.commit(&pk, 0, &even)], &[&publisher]).await.unwrap();
    settle(&mut env, &m, 0).await;
    for (p, f) in publishers.iter().zip(&bad) {
        assert_eq!(
            env.send(&[m.reveal(&p.pubkey(), 0, f)], &[p]).await,
            Err(code(MarketError::InconsistentForecast)),
            "{f:?}"
        );
    }
    reveal(&mut env, &m, &publisher, 0, &even).await;
    // One-sided (no bets): refunded, but priced Up — scored, a miss at 50%: 5000² = 2.5e7.
    let ev = &env.events::<ForecastRevealed>()[0];
    assert_eq!((ev.outcome, ev.hit, ev.brier), (Outcome::Up, false, 25_000_000));
}

/// Copies the account at `from` to a new address, owned by `owner`.
async fn spoof(env: &mut Env, from: Pubkey, owner: Pubkey) -> Pubkey {
    let a = env.ctx.banks_client.get_account(from).await.unwrap().unwrap();
    let key = Pubkey::new_unique();
    let acct = Account { lamports: a.lamports, data: a.data, owner, executable: false, rent_epoch: 0 };
    env.ctx.set_account(&key, &AccountSharedData::from(acct));
    key
}

#[tokio::test]
async fn wrong_market_and_round_accounts_are_refused() {
    let (mut env, m) = setup(&[P, P, P + 10, P + 20, P + 30]).await;
    let auth = env.authority.insecure_clone();
    let (other, init) = init_sol(&auth.pubkey(), 2, env.feed, params());
    env.send(&[init], &[&auth]).await.unwrap();
    let publisher = env.user(10 * SOL).await;
    let pk = publisher.pubkey();
    let f = forecast(true, 8_000, 5);
    let h = m.commitment_of(&pk, 0, &f);
    start(&mut env, &m, 0).await;
    start(&mut env, &other, 0).await;
    start(&mut env, &m, 1).await;
    env.at(m.times(1).0 + 1).await;

    // Another epoch's round, another market's round: WrongRound.
    for round in [m.round(1), other.round(0)] {
        assert_eq!(
            env.send(&[m.commit_with(&pk, 0, round, h)], &[&publisher]).await,
            Err(code(MarketError::WrongRound))
        );
    }
    // The market account passed as the round: not a Round.
    assert_eq!(
        env.send(&[m.commit_with(&pk, 0, m.key, h)], &[&publisher]).await,
        Err(Fail::Code(ACCOUNT_DISCRIMINATOR_MISMATCH))
    );
    // Round 1's data under another program's ownership, rewritten to claim epoch 0: refused by owner.
    let mut r1: Round = env.account(m.round(1)).await.unwrap();
    r1.epoch = 0;
    let mut data = vec![];
    r1.try_serialize(&mut data).unwrap();
    assert!(data.starts_with(Round::DISCRIMINATOR));
    let fake_round = Pubkey::new_unique();
    let acct = Account { lamports: SOL, data, owner: Pubkey::new_unique(), executable: false, rent_epoch: 0 };
    env.ctx.set_account(&fake_round, &AccountSharedData::from(acct));
    assert_eq!(
        env.send(&[m.commit_with(&pk, 0, fake_round, h)], &[&publisher]).await,
        Err(Fail::Code(ACCOUNT_OWNED_BY_WRONG_PROGRAM))
    );
    // A copy of the market owned by another program.
    let fake_market = spoof(&mut env, m.key, Pubkey::new_unique()).await;
    let mut spoofed = m;
    spoofed.key = fake_market;
    assert_eq!(
        env.send(&[spoofed.commit_with(&pk, 0, m.round(0), h)], &[&publisher]).await,
        Err(Fail::Code(ACCOUNT_OWNED_BY_WRONG_PROGRAM))
    );

    // Committed on epoch 1 (still open); the reveal's round account is checked the same way.
    let f1 = forecast(false, 3_000, 6);
    env.send(&[m.commit(&pk, 1, &f1)], &[&publisher]).await.unwrap();
    settle(&mut env, &m, 1).await;
    // A settled-looking copy of round 1 owned by another program.
    let fake = spoof(&mut env, m.round(1), Pubkey::new_unique()).await;
    assert_eq!(
        env.send(&[m.reveal_with(&pk, 1, fake, &f1)], &[&publisher]).await,
        Err(Fail::Code(ACCOUNT_OWNED_BY_WRONG_PROGRAM))
    );
    for round in [m.round(0), other.round(0)] {
        assert_eq!(
            env.send(&[m.reveal_with(&pk, 1, round, &f1)], &[&publisher]).await,
            Err(code(MarketError::WrongRound))
        );
    }
    env.send(&[m.reveal(&pk, 1, &f1)], &[&publisher]).await.unwrap();
}

#[tokio::test]
async fn the_oracle_voids_a_forecast_an_unsettled_round_expires_it() {
    // Epoch 0: lock P, close P (tie). Epoch 1: P → P + 10, nobody bets (one-sided: refunded, priced Up). Epoch 2:
    // nobody settles it within its window (expired).
    let (mut env, m) = setup(&[P, P, P, P + 10, P + 20, P + 30]).await;
    let publisher = env.user(10 * SOL).await;
    let pk = publisher.pubkey();
    let fs = [forecast(true, 6_000, 1), forecast(false, 1_000, 2), forecast(true, 9_900, 3)];
    for (e, f) in fs.iter().enumerate() {
        commit_on_new_round(&mut env, &m, &publisher, e as u64, f, e == 0).await;
    }
    settle(&mut env, &m, 0).await;
    let r: Round = env.account(m.round(0)).await.unwrap();
    assert_eq!((r.status, r.cancel_reason), (RoundStatus::Cancelled, CancelReason::Tie));
    settle(&mut env, &m, 1).await;
    let r: Round = env.account(m.round(1)).await.unwrap();
    assert_eq!(
        (r.status, r.cancel_reason, r.outcome),
        (RoundStatus::Cancelled, CancelReason::OneSidedPool, Outcome::Up)
    );
    // Epoch 2 is not settled: not final until its settle window has passed.
    let close2 = m.times(2).2;
    env.at(close2 + params().settle_window as i64).await;
    assert_eq!(env.send(&[m.reveal(&pk, 2, &fs[2])], &[&publisher]).await, Err(code(MarketError::OutcomeNotFinal)));
    env.at(close2 + params().settle_window as i64 + 1).await;
    for (e, f) in fs[..2].iter().enumerate() {
        reveal(&mut env, &m, &publisher, e as u64, f).await;
        let ev = &env.events::<ForecastRevealed>()[0];
        let expected = [(Outcome::Tie, false, 0), (Outcome::Up, false, 81_000_000)][e];
        assert_eq!((ev.outcome, ev.hit, ev.brier), expected, "epoch {e}");
    }
    // Past its settle window unsettled, the round has no outcome only because nobody cranked it: the forecast
    // cannot be revealed (it would void), before or after a late settle cancels the round as expired.
    assert_eq!(env.send(&[m.reveal(&pk, 2, &fs[2])], &[&publisher]).await, Err(code(MarketError::OutcomeMissed)));
    let r: Round = env.account(m.round(2)).await.unwrap();
    assert_eq!(r.status, RoundStatus::Open);
    let k = env.authority.insecure_clone();
    env.send(&[m.settle(&k.pubkey(), 2)], &[&k]).await.unwrap();
    let r: Round = env.account(m.round(2)).await.unwrap();
    assert_eq!((r.status, r.cancel_reason), (RoundStatus::Cancelled, CancelReason::Expired));
    assert_eq!(env.send(&[m.reveal(&pk, 2, &fs[2])], &[&publisher]).await, Err(code(MarketError::OutcomeMissed)));
    // Tie: voided. One-sided: a miss (forecast 10% Up, went Up: 9000² = 8.1e7). Epoch 2 pending until its deadline,
    // then expired: a miss with the worst Brier term.
    let two = RecordView {
        committed: 3,
        revealed: 2,
        misses: 1,
        voided: 1,
        brier_sum: 81_000_000,
        pending: 1,
        ..Default::default()
    };
    assert_eq!(view(&mut env, &pk).await, two);
    env.at(deadline(&m, 2) + 1).await;
    assert_eq!(
        view(&mut env, &pk).await,
        RecordView { misses: 2, expired: 1, brier_sum: 81_000_000 + MAX_BRIER as u128, pending: 0, ..two }
    );
}

/// The attack the two rules above stop: a publisher creates its own market (nobody bets, nobody else cranks),
/// commits every round, settles and reveals the rounds it got right and leaves the others unsettled past their
/// settle window to reveal them as voided. Its market cannot take forecasts; on an enabled market nobody bets on, a
/// miss left unsettled expires as a miss.
#[tokio::test]
async fn a_miss_left_unsettled_is_not_voided() {
    // Epoch 0: P → P + 10 (Up). Epoch 1: P + 10 → P (Down).
    let (mut env, m) = setup(&[P, P, P + 10, P]).await;
    let attacker = env.user(10 * SOL).await;
    let pk = attacker.pubkey();
    let f = forecast(true, 9_000, 1);

    // Its own market (creation is open on approved feeds) takes no forecasts, and only the Config admin enables one.
    let (own, init) = init_sol(&pk, 7, env.feed, params());
    env.send(&[init], &[&attacker]).await.unwrap();
    assert_eq!(
        env.send(&[own.enable_forecasts(&pk)], &[&attacker]).await,
        Err(Fail::Code(anchor_code::CONSTRAINT_HAS_ONE))
    );
    env.at(own.times(0).0).await;
    env.send(&[own.start(&pk, 0)], &[&attacker]).await.unwrap();
    assert_eq!(
        env.send(&[own.commit(&pk, 0, &f)], &[&attacker]).await,
        Err(Fail::Code(anchor_code::ACCOUNT_NOT_INITIALIZED))
    );

    // On an enabled market nobody bets on: Up on both rounds; the hit is settled and revealed, the miss left alone.
    for e in 0..2 {
        commit_on_new_round(&mut env, &m, &attacker, e, &f, false).await;
    }
    settle(&mut env, &m, 0).await;
    reveal(&mut env, &m, &attacker, 0, &f).await;
    assert!(env.events::<ForecastRevealed>()[0].hit);
    env.at(m.times(1).2 + params().settle_window as i64 + 1).await;
    assert_eq!(env.send(&[m.reveal(&pk, 1, &f)], &[&attacker]).await, Err(code(MarketError::OutcomeMissed)));
    env.at(deadline(&m, 1) + 1).await;
    // Up@90% on Up: (9000 − 10000)² = 1e6; the miss: expired, 1e8.
    assert_eq!(
        view(&mut env, &pk).await,
        RecordView {
            committed: 2,
            revealed: 1,
            hits: 1,
            misses: 1,
            expired: 1,
            brier_sum: 1_000_000 + MAX_BRIER as u128,
            ..Default::default()
        }
    );
}

#[tokio::test]
async fn the_publisher_closes_its_final_commitments() {
    // Epochs 0 and 1: Up.
    let fs = [forecast(true, 6_000, 1), forecast(true, 7_000, 2)];
    let (mut env, m, publisher) = two_settled_commitments(&fs, false).await;
    let [f0, f1] = &fs;
    let pk = publisher.pubkey();
    let stranger = env.user(SOL).await;

    // Still revealable: refused.
    assert_eq!(
        env.send(&[m.close_commitment(&pk, &pk, 0)], &[&publisher]).await,
        Err(code(MarketError::CommitmentOpen))
    );
    reveal(&mut env, &m, &publisher, 0, f0).await;
    // Nobody else can close it: the seeds name the signer.
    assert_eq!(
        env.send(&[m.close_commitment(&stranger.pubkey(), &pk, 0)], &[&stranger]).await,
        Err(Fail::Code(anchor_code::CONSTRAINT_SEEDS))
    );
    // Revealed: closed, the rent back to the publisher, the record unchanged.
    let c0 = commitment_pda(&m.key, 0, &pk);
    let (rent, before) = (env.lamports(c0).await, env.lamports(pk).await);
    let shown = view(&mut env, &pk).await;
    env.send(&[m.close_commitment(&pk, &pk, 0)], &[&publisher]).await.unwrap();
    assert_eq!(env.events::<CommitmentClosed>()[0].status, CommitStatus::Revealed);
    assert!(!env.exists(c0).await);
    assert_eq!(env.lamports(pk).await, before + rent - SIGNATURE_FEE);
    assert_eq!(view(&mut env, &pk).await, shown);
    // It cannot be committed again: the round's betting closed long before.
    assert_eq!(env.send(&[m.commit(&pk, 0, f0)], &[&publisher]).await, Err(code(MarketError::CommitTooLate)));

    // Epoch 1, not revealed: past its deadline it is expired as it closes, counted once.
    env.at(deadline(&m, 1)).await;
    assert_eq!(
        env.send(&[m.close_commitment(&pk, &pk, 1)], &[&publisher]).await,
        Err(code(MarketError::CommitmentOpen))
    );
    env.at(deadline(&m, 1) + 1).await;
    let expired = view(&mut env, &pk).await;
    assert_eq!((expired.hits, expired.expired, expired.misses, expired.pending), (1, 1, 1, 0));
    env.send(&[m.close_commitment(&pk, &pk, 1)], &[&publisher]).await.unwrap();
    let ev = &env.events::<ForecastExpired>()[0];
    assert_eq!((ev.epoch, ev.counted), (1, true));
    assert_eq!(env.events::<CommitmentClosed>()[0].status, CommitStatus::Expired);
    assert!(!env.exists(commitment_pda(&m.key, 1, &pk)).await);
    let rec: TrackRecord = env.account(record_pda(&pk)).await.unwrap();
    assert_eq!((rec.expired, rec.open.len()), (1, 0), "folded into the stored record once");
    assert_eq!(view(&mut env, &pk).await, expired);
    assert_eq!(env.send(&[m.commit(&pk, 1, f1)], &[&publisher]).await, Err(code(MarketError::CommitTooLate)));
}

#[tokio::test]
async fn an_expired_commitment_closes_without_counting_again() {
    let (mut env, m) = setup(&[P, P, P + 10, P + 20]).await;
    let publisher = env.user(10 * SOL).await;
    let pk = publisher.pubkey();
    commit_on_new_round(&mut env, &m, &publisher, 0, &forecast(true, 6_000, 1), false).await;
    env.at(deadline(&m, 0) + 1).await;
    let anyone = env.user(SOL).await;
    env.send(&[m.expire(&pk, 0)], &[&anyone]).await.unwrap();
    let shown = view(&mut env, &pk).await;
    assert_eq!((shown.expired, shown.misses), (1, 1));
    env.send(&[m.close_commitment(&pk, &pk, 0)], &[&publisher]).await.unwrap();
    assert!(env.events::<ForecastExpired>().is_empty(), "already expired: not expired again");
    assert_eq!(env.events::<CommitmentClosed>()[0].status, CommitStatus::Expired);
    assert_eq!(view(&mut env, &pk).await, shown);
}

#[tokio::test]
async fn unrevealed_commitments_expire_without_any_call() {
    let fs = [forecast(true, 6_000, 1), forecast(true, 6_500, 2)];
    let (mut env, m, publisher) = two_settled_commitments(&fs, true).await;
    let [f0, f1] = &fs;
    let pk = publisher.pubkey();
    let anyone = env.user(SOL).await;

    // At its deadline a forecast may still be revealed, and is not yet counted as expired.
    let d0 = deadline(&m, 0);
    env.at(d0).await;
    assert_eq!(view(&mut env, &pk).await, RecordView { committed: 2, pending: 2, ..Default::default() });
    assert_eq!(env.send(&[m.expire(&pk, 0)], &[&anyone]).await, Err(code(MarketError::RevealWindowOpen)));
    // One second later, with nobody having called anything: a miss with the worst Brier term.
    env.at(d0 + 1).await;
    let expired_one = RecordView {
        committed: 2,
        misses: 1,
        expired: 1,
        brier_sum: MAX_BRIER as u128,
        pending: 1,
        ..Default::default()
    };
    assert_eq!(view(&mut env, &pk).await, expired_one);
    assert_eq!(env.send(&[m.reveal(&pk, 0, f0)], &[&publisher]).await, Err(code(MarketError::RevealWindowClosed)));
    // `expire` (anyone) folds it into the stored record: the view does not change.
    env.send(&[m.expire(&pk, 0)], &[&anyone]).await.unwrap();
    let ev = &env.events::<ForecastExpired>()[0];
    assert_eq!((ev.publisher, ev.market, ev.epoch, ev.counted), (pk, m.key, 0, true));
    let rec: TrackRecord = env.account(record_pda(&pk)).await.unwrap();
    assert_eq!((rec.expired, rec.misses, rec.brier_sum, rec.open.len()), (1, 1, MAX_BRIER as u128, 1));
    assert_eq!(view(&mut env, &pk).await, expired_one);
    let c: Commitment = env.account(commitment_pda(&m.key, 0, &pk)).await.unwrap();
    assert_eq!(c.status, CommitStatus::Expired);
    assert_eq!(env.send(&[m.expire(&pk, 0)], &[&anyone]).await, Err(code(MarketError::AlreadyFinal)));
    assert_eq!(env.send(&[m.reveal(&pk, 0, f0)], &[&publisher]).await, Err(code(MarketError::AlreadyFinal)));

    // Epoch 1 is revealed exactly at its deadline (the last second allowed).
    env.at(deadline(&m, 1)).await;
    reveal(&mut env, &m, &publisher, 1, f1).await;
    env.at(deadline(&m, 1) + 1_000).await;
    assert_eq!(
        view(&mut env, &pk).await,
        RecordView {
            committed: 2,
            revealed: 1,
            hits: 1,
            misses: 1,
            expired: 1,
            // 1e8 for the expiry, (6500 − 10000)² = 1.225e7 for the hit.
            brier_sum: MAX_BRIER as u128 + 12_250_000,
            pending: 0,
            ..Default::default()
        }
    );
}

#[tokio::test]
async fn a_forecast_round_is_kept_until_its_reveal_deadline() {
    let (mut env, m) = setup(&[P, P, P + 10, P + 20]).await;
    let publisher = env.user(10 * SOL).await;
    let k = env.authority.insecure_clone();
    let f = forecast(false, 3_000, 1);
    commit_on_new_round(&mut env, &m, &publisher, 0, &f, false).await;
    settle(&mut env, &m, 0).await;
    let r: Round = env.account(m.round(0)).await.unwrap();
    assert_eq!(r.status, RoundStatus::Cancelled, "no bets: refunded (and priced Up)");
    // Closing it would leave the reveal with nothing to score against.
    assert_eq!(env.send(&[m.close_round(&k.pubkey(), 0)], &[&k]).await, Err(code(MarketError::RevealPending)));
    env.at(deadline(&m, 0)).await;
    assert_eq!(env.send(&[m.close_round(&k.pubkey(), 0)], &[&k]).await, Err(code(MarketError::RevealPending)));
    reveal(&mut env, &m, &publisher, 0, &f).await;
    assert_eq!(env.send(&[m.close_round(&k.pubkey(), 0)], &[&k]).await, Err(code(MarketError::RevealPending)));
    env.at(deadline(&m, 0) + 1).await;
    env.send(&[m.close_round(&k.pubkey(), 0)], &[&k]).await.unwrap();
    assert!(!env.exists(m.round(0)).await);
}

#[tokio::test]
async fn track_records_are_per_publisher() {
    // Epochs 0..4: Up, Down, Up, Down.
    let (mut env, m) = setup(&[P, P, P + 10, P, P + 10, P, P + 20]).await;
    let (a, b) = (env.user(10 * SOL).await, env.user(10 * SOL).await);
    let fa = [forecast(true, 8_000, 1), forecast(true, 6_000, 2), forecast(false, 4_000, 3), forecast(false, 0, 4)];
    let fb = [forecast(false, 2_500, 5), forecast(false, 2_500, 6)];
    for e in 0..4u64 {
        commit_on_new_round(&mut env, &m, &a, e, &fa[e as usize], true).await;
        if e < 2 {
            env.send(&[m.commit(&b.pubkey(), e, &fb[e as usize])], &[&b]).await.unwrap();
        }
    }
    for e in 0..4u64 {
        settle(&mut env, &m, e).await;
    }
    for e in 0..4u64 {
        reveal(&mut env, &m, &a, e, &fa[e as usize]).await;
    }
    reveal(&mut env, &m, &b, 1, &fb[1]).await;
    // A: Up@80% hit 4e6; Up@60% on Down miss 3.6e7; Down@40% on Up miss 3.6e7; Down@0% on Down hit 0.
    assert_eq!(
        view(&mut env, &a.pubkey()).await,
        RecordView { committed: 4, revealed: 4, hits: 2, misses: 2, brier_sum: 76_000_000, ..Default::default() }
    );
    // B: epoch 0 still revealable, epoch 1 Down@25% hit 6.25e6.
    assert_eq!(
        view(&mut env, &b.pubkey()).await,
        RecordView { committed: 2, revealed: 1, hits: 1, brier_sum: 6_250_000, pending: 1, ..Default::default() }
    );
    env.at(deadline(&m, 0) + 1).await;
    assert_eq!(
        view(&mut env, &b.pubkey()).await,
        RecordView {
            committed: 2,
            revealed: 1,
            hits: 1,
            misses: 1,
            expired: 1,
            brier_sum: 6_250_000 + MAX_BRIER as u128,
            ..Default::default()
        }
    );
}

/// Writes `rec` over the publisher's track record account (same size: the account is created at its full size).
async fn overwrite_record(env: &mut Env, publisher: &Pubkey, rec: &TrackRecord) {
    let key = record_pda(publisher);
    let a = env.ctx.banks_client.get_account(key).await.unwrap().unwrap();
    let mut data = vec![];
    rec.try_serialize(&mut data).unwrap();
    assert!(data.len() <= a.data.len());
    data.resize(a.data.len(), 0);
    let acct = Account { lamports: a.lamports, data, owner: a.owner, executable: false, rent_epoch: 0 };
    env.ctx.set_account(&key, &AccountSharedData::from(acct));
}

#[tokio::test]
async fn a_full_open_list_folds_past_deadline_commitments() {
    let (mut env, m) = setup(&[P, P, P + 10, P + 20]).await;
    let publisher = env.user(10 * SOL).await;
    let pk = publisher.pubkey();
    commit_on_new_round(&mut env, &m, &publisher, 0, &forecast(true, 6_000, 1), false).await;
    // The record as 1,023 more commitments on later rounds would have left it: the list is full, epoch 0's deadline
    // last (a fold scans from the end).
    let d0 = deadline(&m, 0);
    let far = d0 + 10_000_000;
    let mut rec: TrackRecord = env.account(record_pda(&pk)).await.unwrap();
    rec.committed = 1_024;
    rec.open = vec![far; 1_023];
    rec.open.push(d0);
    overwrite_record(&mut env, &pk, &rec).await;

    // Before epoch 0's deadline nothing can be folded: refused.
    let before = (d0 - GENESIS) as u64 / INTERVAL as u64 - 1;
    start(&mut env, &m, before).await;
    assert!(env.now <= d0);
    let f = forecast(false, 4_500, 2);
    assert_eq!(env.send(&[m.commit(&pk, before, &f)], &[&publisher]).await, Err(code(MarketError::TooManyOpen)));
    // Once it has passed, the next commit folds it (the only one past its deadline) and fits.
    let after = before + 2;
    start(&mut env, &m, after).await;
    assert!(env.now > d0);
    let shown = view(&mut env, &pk).await;
    env.send(&[m.commit(&pk, after, &f)], &[&publisher]).await.unwrap();
    assert_eq!(env.events::<ForecastsExpired>()[0].count, 1);
    let rec: TrackRecord = env.account(record_pda(&pk)).await.unwrap();
    assert_eq!((rec.open.len(), rec.expired, rec.misses, rec.brier_sum), (1_024, 1, 1, MAX_BRIER as u128));
    // The view had already counted it: only the new commitment changes it.
    assert_eq!(
        view(&mut env, &pk).await,
        RecordView { committed: shown.committed + 1, pending: shown.pending + 1, ..shown }
    );
    // Expiring epoch 0's commitment now marks it without counting it twice.
    env.send(&[m.expire(&pk, 0)], &[&publisher]).await.unwrap();
    assert!(!env.events::<ForecastExpired>()[0].counted);
    let c: Commitment = env.account(commitment_pda(&m.key, 0, &pk)).await.unwrap();
    assert_eq!(c.status, CommitStatus::Expired);
    let again: TrackRecord = env.account(record_pda(&pk)).await.unwrap();
    assert_eq!((again.expired, again.open.len()), (1, 1_024));
}
