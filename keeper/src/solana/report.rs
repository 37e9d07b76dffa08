//! `kronos status` and `kronos markets` for the `[[solana]]` clusters: the head slot, and the program's markets as
//! the program stores them (delays shown in slots as well as seconds), with whether the keeper would drive them.

use anchor_lang::prelude::Pubkey;
use anchor_lang::{AccountDeserialize, Discriminator, Space};
use anyhow::{Context, Result};
use futures::FutureExt;
use kronos_market::state::{FeedApproval, Market, FEED_SEED};
use solana_client::rpc_config::{RpcAccountInfoConfig, RpcProgramAccountsConfig, UiAccountEncoding};
use solana_client::rpc_filter::{Memcmp, RpcFilterType};
use solana_commitment_config::CommitmentConfig;

use super::client::{transport_kind, SolClient};
use super::rules;
use super::SolanaConfig;

/// The cluster's slot at `confirmed`, or why it could not be read.
pub async fn head(cfg: &SolanaConfig) -> Result<u64, String> {
    let c = SolClient::new(&cfg.rpc);
    c.call(|c| c.get_slot_with_commitment(CommitmentConfig::confirmed()).boxed()).await.map_err(|e| {
        if super::client::is_transport(&e) {
            transport_kind(&e)
        } else {
            e.to_string()
        }
    })
}

/// Seconds as slots of the catalogue's block time (rounded up).
pub fn slots(seconds: u64, block_time_ms: u64) -> u64 {
    (seconds * 1000).div_ceil(block_time_ms.max(1))
}

/// Writes the cluster's markets to `out` (`kronos markets`).
pub async fn write_markets(cfg: &SolanaConfig, out: &mut dyn std::io::Write) -> Result<()> {
    let name = cfg.key();
    let c = SolClient::new(&cfg.rpc);
    let program = cfg.program;
    let addresses: Vec<Pubkey> = match &cfg.markets {
        Some(m) => m.clone(),
        None => {
            let config = RpcProgramAccountsConfig {
                filters: Some(vec![
                    RpcFilterType::DataSize((8 + Market::INIT_SPACE) as u64),
                    RpcFilterType::Memcmp(Memcmp::new_raw_bytes(0, Market::DISCRIMINATOR.to_vec())),
                ]),
                account_config: RpcAccountInfoConfig {
                    encoding: Some(UiAccountEncoding::Base64),
                    commitment: Some(CommitmentConfig::confirmed()),
                    ..Default::default()
                },
                ..Default::default()
            };
            c.call(|c| c.get_program_ui_accounts_with_config(&program, config.clone()).boxed())
                .await
                .with_context(|| format!("{name}: getProgramAccounts of program {program}"))?
                .into_iter()
                .map(|(k, _)| k)
                .collect()
        }
    };
    writeln!(out, "{name} ({}), kronos-market program {program}: {} market(s)", cfg.chain.name, addresses.len())?;
    let bt = cfg.chain.block_time_ms;
    for a in addresses {
        let keys = [a];
        let got = c
            .call(|c| c.get_multiple_accounts_with_commitment(&keys, CommitmentConfig::confirmed()).boxed())
            .await
            .with_context(|| format!("{name}: market {a}"))?
            .value;
        let Some(acc) = got.into_iter().next().flatten() else {
            writeln!(out, "  {a}: no such account")?;
            continue;
        };
        let m = Market::try_deserialize(&mut acc.data.as_slice())
            .map_err(|e| anyhow::anyhow!("{name}: market {a} is not a Market account: {e}"))?;
        let approval_key = Pubkey::find_program_address(&[FEED_SEED, m.feed.as_ref()], &program).0;
        let feed_keys = [m.feed, approval_key];
        let accs = c
            .call(|c| c.get_multiple_accounts_with_commitment(&feed_keys, CommitmentConfig::confirmed()).boxed())
            .await
            .with_context(|| format!("{name}: feed {}", m.feed))?
            .value;
        let approval = accs[1]
            .as_ref()
            .filter(|x| x.owner == program)
            .and_then(|x| FeedApproval::try_deserialize(&mut x.data.as_slice()).ok())
            .map(|x| (x.owner, x.writer));
        let trust = match accs[0].as_ref().map(|f| kronos_market::chainlink::header(&f.data)) {
            Some(Ok(h)) => match rules::check_feed(
                (m.feed_owner, m.feed_writer),
                approval,
                (Pubkey::new_from_array(h.owner), Pubkey::new_from_array(h.writer)),
            ) {
                Ok(()) => "feed approved".to_string(),
                Err(r) => format!("REFUSED: {r}"),
            },
            Some(Err(e)) => format!("REFUSED: the feed account is unusable: {e:?}"),
            None => "REFUSED: the feed account is missing".to_string(),
        };
        let p = &m.params;
        writeln!(
            out,
            "  #{} {a} feed {} stake {} interval {}s ({} slots) genesis {} report delay {}s ({} slots) bet cutoff {}s max price age {}s settle window {}s fee {} bps{}; {trust}",
            m.id,
            m.feed,
            if m.is_native() { "native SOL".to_string() } else { m.mint.to_string() },
            m.interval,
            slots(m.interval as u64, bt),
            m.genesis,
            p.report_delay,
            slots(p.report_delay as u64, bt),
            p.bet_cutoff,
            p.max_price_age,
            p.settle_window,
            p.fee_bps,
            if m.paused { " (paused)" } else { "" },
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn seconds_are_shown_as_slots_of_the_block_time() {
        assert_eq!(super::slots(10, 400), 25);
        assert_eq!(super::slots(1, 400), 3);
        assert_eq!(super::slots(0, 400), 0);
    }
}
