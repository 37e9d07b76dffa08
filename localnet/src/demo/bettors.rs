//! Local bettors: each round, three dev accounts bet random amounts (the first two on opposite sides, the third on
//! a random one); every few rounds they claim what they won or are owed back.

use std::sync::Arc;
use std::time::Duration;

use alloy::primitives::U256;
use alloy::providers::Provider;
use parking_lot::Mutex;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokio_util::sync::CancellationToken;

use super::net::{accounts, LocalChain};

/// What the bettors did on one chain.
#[derive(Debug, Default, Clone)]
pub struct BetStats {
    pub bets: u64,
    pub bet_gas: Vec<u64>,
    pub claims: u64,
    pub claim_gas: Vec<u64>,
    pub failures: u64,
}

fn ether_milli(m: u64) -> U256 {
    U256::from(m) * U256::from(1_000_000_000_000_000u64)
}

/// Runs the bettors of one chain until cancelled.
pub async fn run(
    chain: Arc<LocalChain>,
    interval: u64,
    poll: Duration,
    seed: u64,
    stats: Arc<Mutex<BetStats>>,
    cancel: CancellationToken,
) {
    let market_addr = chain.deployment.market;
    let token = chain.token;
    let native = token.is_zero();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let wallets: Vec<_> = accounts::BETTORS.iter().map(|&i| (i, chain.wallet(i))).collect();
    if !native {
        for (i, w) in &wallets {
            let t = kronos_contracts::mocks::MockERC20::new(token, w.clone());
            let who = chain.keys[*i].address();
            let ok = async {
                t.mint(who, U256::from(10u64).pow(U256::from(12))).send().await?.get_receipt().await?;
                t.approve(market_addr, U256::MAX).send().await?.get_receipt().await?;
                anyhow::Ok(())
            };
            if let Err(e) = ok.await {
                tracing::warn!(chain = %chain.chain.key, error = %e, "could not fund a bettor with demo tokens");
            }
        }
    }
    let genesis = chain.genesis();
    let mut last_bet_epoch: Option<u64> = None;
    let mut last_claim_epoch = 0u64;
    while !cancel.is_cancelled() {
        let now = match wallets[0].1.get_block_by_number(alloy::eips::BlockNumberOrTag::Latest).await {
            Ok(Some(b)) => b.header.timestamp,
            _ => 0,
        };
        if now >= genesis {
            let epoch = (now - genesis) / interval;
            // Betting closes the market's cutoff before the lock.
            let lock = genesis + (epoch + 1) * interval - crate::deploy::bet_cutoff(interval as u32) as u64;
            if last_bet_epoch != Some(epoch)
                && now + interval / 4 < lock
                && now >= genesis + epoch * interval + interval / 10
            {
                // Sides: the second bettor takes the side opposite the first, so every pool is two-sided; the
                // bets go out together (a round's betting window can be short on an accelerated local clock).
                let first_up: bool = rng.gen();
                let mut pending = Vec::new();
                for (k, (_, w)) in wallets.iter().enumerate() {
                    let m = kronos_contracts::KronosMarket::new(market_addr, w.clone());
                    let up = match k {
                        0 => first_up,
                        1 => !first_up,
                        _ => rng.gen(),
                    };
                    let position = if up { 1u8 } else { 2u8 };
                    let (amount, value) = if native {
                        let a = ether_milli(rng.gen_range(10..200));
                        (a, a)
                    } else {
                        (U256::from(rng.gen_range(10u64..200) * 1_000_000), U256::ZERO)
                    };
                    pending.push(async move {
                        let call = m.bet(U256::from(1), U256::from(epoch), position, amount).value(value);
                        anyhow::Ok(call.send().await?.get_receipt().await?)
                    });
                }
                for res in futures::future::join_all(pending).await {
                    let mut s = stats.lock();
                    match res {
                        Ok(r) if r.status() => {
                            s.bets += 1;
                            s.bet_gas.push(r.gas_used);
                        }
                        Ok(_) | Err(_) => s.failures += 1,
                    }
                }
                last_bet_epoch = Some(epoch);
            }
            if epoch >= last_claim_epoch + 4 {
                for (i, w) in &wallets {
                    let m = kronos_contracts::KronosMarket::new(market_addr, w.clone());
                    let who = chain.keys[*i].address();
                    let mut due = Vec::new();
                    for e in last_claim_epoch.saturating_sub(8)..epoch.saturating_sub(1) {
                        if let Ok(c) = m.claimable(U256::from(1), U256::from(e), who).call().await {
                            if !c.is_zero() {
                                due.push(U256::from(e));
                            }
                        }
                    }
                    if due.is_empty() {
                        continue;
                    }
                    let res =
                        async { anyhow::Ok(m.claim(U256::from(1), due).send().await?.get_receipt().await?) }.await;
                    let mut s = stats.lock();
                    match res {
                        Ok(r) if r.status() => {
                            s.claims += 1;
                            s.claim_gas.push(r.gas_used);
                        }
                        _ => s.failures += 1,
                    }
                }
                last_claim_epoch = epoch;
            }
        }
        tokio::select! { _ = cancel.cancelled() => return, _ = tokio::time::sleep(poll) => {} }
    }
}
