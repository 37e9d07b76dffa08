//! `kronos status` and `kronos markets`: what the store recorded and each chain's head, and the markets the contracts
//! hold, gathered and rendered here; the command line prints them.

use alloy::primitives::U256;
use alloy::providers::Provider;
use anyhow::{Context, Result};

use crate::config::Config;
use crate::store::{LeaseRow, RoundRow, Store, TrackRecordRow, TxStatus};

/// One chain's part of `kronos status`.
#[derive(Debug, Clone)]
pub struct ChainStatus {
    pub chain: String,
    /// The node's head block, or why it could not be read.
    pub head: Result<u64, String>,
    /// The latest rounds (at most the asked number per market).
    pub rounds: Vec<RoundRow>,
    pub transactions: TxCounts,
}

/// The keeper's transactions on a chain by where they stand.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TxCounts {
    pub confirmed: usize,
    /// Signed or pending.
    pub open: usize,
    pub total: usize,
}

impl TxCounts {
    /// Counts `statuses` (the store checks the column's text when it reads the rows).
    pub fn count(statuses: impl IntoIterator<Item = TxStatus>) -> TxCounts {
        let mut c = TxCounts::default();
        for s in statuses {
            match s {
                TxStatus::Confirmed => c.confirmed += 1,
                TxStatus::Pending | TxStatus::Signed => c.open += 1,
                TxStatus::Failed | TxStatus::Replaced | TxStatus::Dropped => {}
            }
            c.total += 1;
        }
        c
    }
}

/// `kronos status`: every configured chain, the markets' leases and the forecaster's track records.
#[derive(Debug, Clone)]
pub struct Status {
    pub chains: Vec<ChainStatus>,
    /// Who leads each market (several keepers on one PostgreSQL store; SQLite has no lease rows).
    pub leases: Vec<LeaseRow>,
    pub track_records: Vec<TrackRecordRow>,
}

impl Status {
    /// Reads the store of `cfg` and each chain's head; `rounds` rounds per market.
    pub async fn collect(cfg: &Config, rounds: i64) -> Result<Status> {
        let store = Store::connect(&cfg.store).await?;
        let mut chains = Vec::new();
        for c in &cfg.chains {
            let name = &c.chain.key;
            let t = crate::rpc::FailoverTransport::new(name, &c.rpc);
            let head = t.provider().get_block_number().await.map_err(|e| e.to_string());
            let rounds = store.rounds(Some(name), None, rounds).await?;
            let txs = store.all_txs(name).await?;
            let transactions = TxCounts::count(txs.iter().map(|t| t.status));
            chains.push(ChainStatus { chain: name.clone(), head, rounds, transactions });
        }
        // Solana clusters: the head is the slot at `confirmed`.
        for c in &cfg.solana {
            let name = c.key();
            let head = crate::solana::report::head(c).await;
            let rounds = store.rounds(Some(name), None, rounds).await?;
            let txs = store.all_txs(name).await?;
            let transactions = TxCounts::count(txs.iter().map(|t| t.status));
            chains.push(ChainStatus { chain: name.to_string(), head, rounds, transactions });
        }
        Ok(Status { chains, leases: store.leases().await?, track_records: store.track_records().await? })
    }

    /// The JSON form (`kronos status --json`): an object keyed by chain, with `leases` and `track_records`.
    pub fn json(&self) -> Result<serde_json::Value> {
        let mut out = serde_json::Map::new();
        for c in &self.chains {
            let t = &c.transactions;
            out.insert(c.chain.clone(), serde_json::json!({ "head": c.head.as_ref().ok(), "error": c.head.as_ref().err(), "rounds": c.rounds, "transactions": { "confirmed": t.confirmed, "open": t.open, "total": t.total } }));
        }
        out.insert("leases".into(), serde_json::to_value(&self.leases)?);
        out.insert("track_records".into(), serde_json::to_value(&self.track_records)?);
        Ok(serde_json::Value::Object(out))
    }

    /// The text form.
    pub fn text(&self) -> String {
        let mut s = String::new();
        for c in &self.chains {
            let t = &c.transactions;
            let head = match &c.head {
                Ok(h) => h.to_string(),
                Err(e) => format!("unreachable ({e})"),
            };
            s += &format!("{}: head {head}\n", c.chain);
            s += &format!("  transactions: {} confirmed, {} open, {} in total\n", t.confirmed, t.open, t.total);
            for r in &c.rounds {
                s += &format!(
                    "  market {} round {:>5} {:<9} lock {:>14} close {:>14} {}\n",
                    r.market_id,
                    r.epoch,
                    r.state.to_string(),
                    r.lock_price.as_deref().unwrap_or("-"),
                    r.close_price.as_deref().unwrap_or("-"),
                    r.outcome
                        .as_ref()
                        .map(|o| format!("{o}{}", r.reason.as_ref().map(|x| format!(" ({x})")).unwrap_or_default()))
                        .unwrap_or_default()
                );
            }
        }
        for l in &self.leases {
            s += &crate::lease::describe(l);
            s.push('\n');
        }
        for r in &self.track_records {
            s += &format!(
                "forecaster on {}: committed {}, hits {}, misses {}, voided {}, expired {}\n",
                r.chain, r.committed, r.hits, r.misses, r.voided, r.expired
            );
        }
        s
    }
}

/// `kronos markets`: the markets of every configured chain, read from the contracts, written to `out` as they are
/// read (a chain that does not answer ends it after the chains before it were written).
pub async fn markets(cfg: &Config, out: &mut dyn std::io::Write) -> Result<()> {
    for c in &cfg.chains {
        let name = &c.chain.key;
        let t = crate::rpc::FailoverTransport::new(name, &c.rpc);
        let m = kronos_contracts::KronosMarket::new(c.market, t.provider());
        let n = m.marketCount().call().await.with_context(|| format!("{name}: marketCount() at {}", c.market))?;
        writeln!(out, "{name} ({}), KronosMarket {}: {} market(s)", c.chain.name, c.market, n)?;
        for id in 1..=n.to::<u64>() {
            let x = m.getMarket(U256::from(id)).call().await?;
            writeln!(
                out,
                "  #{id} feed {} seq {} stake {} interval {}s genesis {} max price age {}s settle window {}s{}",
                x.feed,
                x.sequencerFeed,
                if x.token.is_zero() { "native".to_string() } else { x.token.to_string() },
                x.interval,
                x.genesis,
                x.maxPriceAge,
                x.settleWindow,
                if x.paused { " (paused)" } else { "" }
            )?;
        }
    }
    for c in &cfg.solana {
        crate::solana::report::write_markets(c, out).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round(epoch: i64, state: &str, outcome: Option<&str>, reason: Option<&str>) -> RoundRow {
        RoundRow {
            chain: "base".into(),
            market_id: 1,
            epoch,
            state: state.parse().unwrap(),
            lock_price: Some("100000.5".into()),
            close_price: outcome.map(|_| "100001".into()),
            outcome: outcome.map(|o| o.parse().unwrap()),
            reason: reason.map(|r| r.parse().unwrap()),
            up_wei: "0".into(),
            down_wei: "0".into(),
            reward_wei: None,
            treasury_fee_wei: None,
            delay_blocks: None,
        }
    }

    #[test]
    fn transactions_are_counted_by_status() {
        use TxStatus::*;
        let c = TxCounts::count([Confirmed, Pending, Signed, Failed, Replaced, Dropped, Confirmed]);
        assert_eq!(c, TxCounts { confirmed: 2, open: 2, total: 7 });
        for s in TxStatus::ALL {
            assert_eq!(TxCounts::count([s]).open == 1, s.is_open(), "{s}: open in the count as in open_txs");
        }
    }

    #[test]
    fn the_text_names_each_chain_its_rounds_and_the_track_record() {
        let s = Status {
            chains: vec![
                ChainStatus {
                    chain: "base".into(),
                    head: Ok(42),
                    rounds: vec![
                        round(7, "settled", Some("up"), None),
                        round(8, "cancelled", Some("none"), Some("lock_price_unusable")),
                        round(9, "locked", None, None),
                    ],
                    transactions: TxCounts { confirmed: 3, open: 1, total: 5 },
                },
                ChainStatus {
                    chain: "arbitrum".into(),
                    head: Err("refused".into()),
                    rounds: vec![],
                    transactions: TxCounts::default(),
                },
            ],
            leases: vec![],
            track_records: vec![TrackRecordRow {
                chain: "base".into(),
                publisher: "0x01".into(),
                committed: 9,
                hits: 5,
                misses: 3,
                voided: 1,
                expired: 0,
                brier_sum: "0".into(),
            }],
        };
        assert_eq!(
            s.text(),
            "base: head 42\n  transactions: 3 confirmed, 1 open, 5 in total\n\
             \x20 market 1 round     7 settled   lock       100000.5 close         100001 up\n\
             \x20 market 1 round     8 cancelled lock       100000.5 close         100001 none (lock_price_unusable)\n\
             \x20 market 1 round     9 locked    lock       100000.5 close              - \n\
             arbitrum: head unreachable (refused)\n  \
             transactions: 0 confirmed, 0 open, 0 in total\nforecaster on base: committed 9, hits 5, misses 3, voided 1, \
             expired 0\n"
        );
        let j = s.json().unwrap();
        assert_eq!(j["base"]["head"], 42);
        assert_eq!(j["base"]["error"], serde_json::Value::Null);
        assert_eq!(j["arbitrum"]["error"], "refused");
        assert_eq!(j["base"]["transactions"], serde_json::json!({ "confirmed": 3, "open": 1, "total": 5 }));
        assert_eq!(j["track_records"][0]["hits"], 5);
    }
}
