//! Local bettors on the Solana chain: each round, on both markets (SOL and SPL token), once the keeper has started the
//! round, every bettor bets a random amount (the first two on opposite sides so every pool is two-sided, the rest on
//! a random one); every two rounds each claims what the chain says it is owed (winnings and refunds, one `claim` per
//! market with every due round in it).

use std::sync::Arc;
use std::time::Duration;

use anchor_lang::prelude::Pubkey;
use anchor_lang::solana_program::instruction::{AccountMeta, Instruction};
use anchor_lang::{AccountDeserialize, InstructionData, ToAccountMetas};
use kronos_market::state::{due, Due, Position, Round, Side, MAX_FEE_BPS};
use kronos_market::{accounts as acc, instruction as ix};
use parking_lot::Mutex;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use solana_signer::Signer;
use tokio_util::sync::CancellationToken;

use super::{clock, send, Bettor, LocalSolana, MarketRef, PROGRAM_ID};
use crate::demo::bettors::BetStats;

/// How far back (rounds) a claim looks for what is owed.
const CLAIM_LOOKBACK: u64 = 12;

fn bet_ix(m: &MarketRef, b: &Bettor, epoch: u64, side: Side, amount: u64) -> Instruction {
    let user = b.key.pubkey();
    let round = m.round(epoch);
    Instruction {
        program_id: PROGRAM_ID,
        accounts: acc::PlaceBet {
            user,
            market: m.key,
            round,
            position: m.position(epoch, &user),
            vault: m.vault,
            user_token: m.mint.map(|_| b.token),
            token_program: m.token_program(),
            system_program: anchor_lang::system_program::ID,
        }
        .to_account_metas(None),
        data: ix::Bet { epoch, side, amount, max_fee_bps: MAX_FEE_BPS }.data(),
    }
}

/// `claim` of every `(round, position)` pair of `epochs`.
pub fn claim_ix(m: &MarketRef, user: &Pubkey, user_token: Option<Pubkey>, epochs: &[u64]) -> Instruction {
    let mut accounts = acc::Claim {
        user: *user,
        market: m.key,
        vault: m.vault,
        user_token: m.mint.and(user_token),
        token_program: m.token_program(),
    }
    .to_account_metas(None);
    for e in epochs {
        accounts.push(AccountMeta::new(m.round(*e), false));
        accounts.push(AccountMeta::new(m.position(*e, user), false));
    }
    Instruction { program_id: PROGRAM_ID, accounts, data: ix::Claim {}.data() }
}

/// The epochs among `from..to` in which `user` is owed something on `m` at `now`, read from the chain.
pub async fn owed(
    sol: &LocalSolana,
    m: &MarketRef,
    user: &Pubkey,
    from: u64,
    to: u64,
    now: i64,
) -> anyhow::Result<Vec<u64>> {
    let epochs: Vec<u64> = (from..to).collect();
    let mut keys = Vec::new();
    for e in &epochs {
        keys.push(m.round(*e));
        keys.push(m.position(*e, user));
    }
    let mut out = Vec::new();
    for (chunk_epochs, chunk) in epochs.chunks(50).zip(keys.chunks(100)) {
        let accounts = sol.client.get_multiple_accounts(chunk).await?;
        for (i, e) in chunk_epochs.iter().enumerate() {
            let (Some(r), Some(p)) = (&accounts[2 * i], &accounts[2 * i + 1]) else { continue };
            let (Ok(r), Ok(p)) =
                (Round::try_deserialize(&mut r.data.as_slice()), Position::try_deserialize(&mut p.data.as_slice()))
            else {
                continue;
            };
            if matches!(due(&r, &p, now), Ok(Due::Win(_) | Due::Refund(_))) {
                out.push(*e);
            }
        }
    }
    Ok(out)
}

/// Runs the bettors until cancelled.
pub async fn run(
    sol: Arc<LocalSolana>,
    poll: Duration,
    seed: u64,
    stats: Arc<Mutex<BetStats>>,
    cancel: CancellationToken,
) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (genesis, interval) = (sol.genesis, i64::from(sol.interval));
    let cutoff = i64::from(sol.params.bet_cutoff);
    let mut last_bet: Vec<Option<u64>> = vec![None; sol.markets.len()];
    let mut last_claim = 0u64;
    while !cancel.is_cancelled() {
        let now = clock(&sol.client).await.map(|c| c.unix_timestamp).unwrap_or(0);
        if now >= genesis {
            let epoch = ((now - genesis) / interval) as u64;
            let start = genesis + epoch as i64 * interval;
            let lock = start + interval;
            for (mi, m) in sol.markets.iter().enumerate() {
                if last_bet[mi] == Some(epoch) || now + interval / 4 >= lock - cutoff {
                    continue;
                }
                // The keeper starts rounds; bet once this one exists.
                let started = sol.client.get_account_data(&m.round(epoch)).await.is_ok();
                if !started {
                    continue;
                }
                let first_up: bool = rng.gen();
                let unit = 10u64.pow(u32::from(m.decimals()) - 3);
                let bets: Vec<(usize, Side, u64)> = (0..sol.bettors.len())
                    .map(|k| {
                        let up = match k {
                            0 => first_up,
                            1 => !first_up,
                            _ => rng.gen(),
                        };
                        (k, if up { Side::Up } else { Side::Down }, rng.gen_range(10u64..200) * unit)
                    })
                    .collect();
                let sends = bets.iter().map(|&(k, side, amount)| {
                    let b = &sol.bettors[k];
                    let ixs = [bet_ix(m, b, epoch, side, amount)];
                    let sol = sol.clone();
                    async move { send(&sol.client, &ixs, &b.key, &[]).await }
                });
                for res in futures::future::join_all(sends).await {
                    let mut s = stats.lock();
                    match res {
                        Ok(()) => s.bets += 1,
                        Err(e) => {
                            s.failures += 1;
                            tracing::debug!(market = m.name, error = %format!("{e:#}"), "solana bet refused");
                        }
                    }
                }
                last_bet[mi] = Some(epoch);
            }
            if epoch >= last_claim + 2 {
                for m in &sol.markets {
                    for b in &sol.bettors {
                        let user = b.key.pubkey();
                        let from = epoch.saturating_sub(CLAIM_LOOKBACK);
                        let epochs = match owed(&sol, m, &user, from, epoch, now).await {
                            Ok(e) if !e.is_empty() => e,
                            Ok(_) => continue,
                            Err(e) => {
                                tracing::debug!(error = %format!("{e:#}"), "solana claim: cannot read positions");
                                continue;
                            }
                        };
                        let ixs = [claim_ix(m, &user, Some(b.token), &epochs)];
                        let res = send(&sol.client, &ixs, &b.key, &[]).await;
                        let mut s = stats.lock();
                        match res {
                            Ok(()) => s.claims += 1,
                            Err(e) => {
                                s.failures += 1;
                                tracing::debug!(market = m.name, error = %format!("{e:#}"), "solana claim refused");
                            }
                        }
                    }
                }
                last_claim = epoch;
            }
        }
        tokio::select! { _ = cancel.cancelled() => return, _ = tokio::time::sleep(poll) => {} }
    }
}
