//! The deploy script on real anvil nodes: CREATE2 gives the same addresses on chains with different ids, and
//! re-running it changes nothing.

use std::path::Path;

use alloy::primitives::U256;
use kronos_common::{Catalogue, Secret};
use kronos_localnet::deploy::{local_plan, run_forge, DeployPolicy, LocalMarket};
use kronos_testkit::{repo_root, spawn, NodeOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_addresses_on_two_chains_and_idempotent() {
    let root = repo_root();
    let cat = Catalogue::load(root.join("config/chains.toml")).unwrap();
    let policy = DeployPolicy::load(&root.join("config/deploy.toml")).unwrap();
    let base = spawn(NodeOptions { chain_id: 8453, ..Default::default() });
    let bnb = spawn(NodeOptions { chain_id: 56, ..Default::default() });
    let key = Secret::new(base.key_hex(0));
    let owner = base.address(0);
    let markets = [LocalMarket {
        pair: "BTC/USD".into(),
        initial_answer: 6_500_000_000_000, // 65,000 with 8 decimals
        token: false,
        interval_s: 300,
        max_price_age_s: 600,
        settle_window_s: 3600,
    }];
    let mut results = Vec::new();
    for (node, key_name) in [(&base, "base"), (&bnb, "bnb")] {
        let chain = cat.chain(key_name).unwrap();
        let out = format!("contracts-evm/deployments/local-test-{}-{}.json", key_name, std::process::id());
        let plan = local_plan(chain, &policy, owner, &markets, &out).unwrap();
        let d = run_forge(&root, &plan, &node.url, &key).await.unwrap();
        assert_eq!(d.chain_id, chain.chain_id.unwrap());
        assert_eq!(d.market_ids, vec![U256::from(1)]);
        // Base gets a sequencer-uptime mock; BNB Chain (an L1) does not.
        assert_eq!(d.sequencers[0].is_zero(), key_name == "bnb");
        results.push((d, out, plan, node));
    }
    assert_eq!(results[0].0.market, results[1].0.market, "KronosMarket address differs between chains");
    assert_eq!(results[0].0.registry, results[1].0.registry, "PredictionRegistry address differs between chains");
    // Running the script again leaves contracts and markets as they are.
    let (first, out, plan, node) = &results[0];
    let again = run_forge(&root, plan, &node.url, &key).await.unwrap();
    assert_eq!(again.market, first.market);
    assert_eq!(again.market_ids, vec![U256::from(1)]);
    let m = kronos_contracts::KronosMarket::new(first.market, node.provider.clone());
    assert_eq!(m.marketCount().call().await.unwrap(), U256::from(1));
    for (_, out, _, _) in &results {
        let _ = std::fs::remove_file(root.join(out));
    }
    let _ = Path::new(out);
}
