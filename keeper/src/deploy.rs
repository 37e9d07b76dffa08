//! Deploying the suite: a validated plan from the catalogue and the deployment policy, executed by
//! `contracts-evm/script/Deploy.s.sol` (CREATE2, same addresses on every chain), and the deployment it wrote.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use alloy::primitives::{keccak256, Address, B256, U256};
use anyhow::{Context, Result};
use kronos_common::{Catalogue, Chain, Secret};
use serde::{Deserialize, Serialize};

/// `config/deploy.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeployPolicy {
    pub salt: String,
    pub reveal_window_s: u64,
    pub defaults: ChainPolicy,
    #[serde(default)]
    pub chains: BTreeMap<String, ChainPolicyOverride>,
}

/// Per-chain market parameters.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChainPolicy {
    pub pairs: Vec<String>,
    pub interval_s: u32,
    pub fee_bps: u16,
    pub settler_reward_bps: u16,
    pub settle_window_s: u32,
    pub sequencer_grace_s: u32,
    pub min_bet_wei: String,
    pub stake: String,
    pub max_price_age_s: Option<u32>,
    /// Seconds after a checkpoint's time before it may be executed; by default a fifth of the round on L1s and
    /// [`L2_EXECUTE_DELAY_S`] on chains with a sequencer-uptime feed.
    #[serde(default)]
    pub execute_delay_s: Option<u32>,
}

/// Per-chain overrides of [`ChainPolicy`].
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChainPolicyOverride {
    pub pairs: Option<Vec<String>>,
    pub interval_s: Option<u32>,
    pub fee_bps: Option<u16>,
    pub settler_reward_bps: Option<u16>,
    pub settle_window_s: Option<u32>,
    pub sequencer_grace_s: Option<u32>,
    pub min_bet_wei: Option<String>,
    pub stake: Option<String>,
    pub max_price_age_s: Option<u32>,
    pub execute_delay_s: Option<u32>,
}

impl DeployPolicy {
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("{}: cannot read", path.display()))?;
        toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {}", path.display(), e.message()))
    }

    /// The CREATE2 salt as bytes32.
    pub fn salt(&self) -> B256 {
        keccak256(self.salt.as_bytes())
    }

    fn for_chain(&self, key: &str) -> ChainPolicy {
        let o = self.chains.get(key).cloned().unwrap_or_default();
        let d = &self.defaults;
        ChainPolicy {
            pairs: o.pairs.unwrap_or_else(|| d.pairs.clone()),
            interval_s: o.interval_s.unwrap_or(d.interval_s),
            fee_bps: o.fee_bps.unwrap_or(d.fee_bps),
            settler_reward_bps: o.settler_reward_bps.unwrap_or(d.settler_reward_bps),
            settle_window_s: o.settle_window_s.unwrap_or(d.settle_window_s),
            sequencer_grace_s: o.sequencer_grace_s.unwrap_or(d.sequencer_grace_s),
            min_bet_wei: o.min_bet_wei.unwrap_or_else(|| d.min_bet_wei.clone()),
            stake: o.stake.unwrap_or_else(|| d.stake.clone()),
            max_price_age_s: o.max_price_age_s.or(d.max_price_age_s),
            execute_delay_s: o.execute_delay_s.or(d.execute_delay_s),
        }
    }
}

/// One market of a plan.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MarketPlan {
    pub pair: String,
    pub description: String,
    pub feed: Address,
    pub sequencer_feed: Address,
    pub token: Address,
    pub interval: u32,
    pub max_price_age: u32,
    pub sequencer_grace: u32,
    pub settle_window: u32,
    /// Seconds before the lock at which betting (and forecast commits) close.
    pub bet_cutoff: u32,
    /// Seconds after a checkpoint's time before it may be executed.
    pub execute_delay: u32,
    pub min_bet: String,
    pub fee_bps: u16,
    pub settler_reward_bps: u16,
    /// Local chains only: mock feed decimals and first answer, and whether to deploy mocks.
    pub decimals: u8,
    pub initial_answer: i64,
    pub local_sequencer: bool,
    pub local_token: bool,
}

/// What `Deploy.s.sol` executes.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    pub owner: Address,
    pub salt: B256,
    pub reveal_window: u64,
    /// Seconds between the deployment and the earliest genesis (rounded up to an interval boundary).
    pub genesis_delay: u64,
    pub local_feeds: bool,
    pub market_count: usize,
    pub markets: Vec<MarketPlan>,
    pub output: String,
}

/// What `Deploy.s.sol` wrote.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Deployment {
    pub chain_id: u64,
    pub market: Address,
    pub registry: Address,
    pub market_ids: Vec<U256>,
    pub feeds: Vec<Address>,
    pub sequencers: Vec<Address>,
    pub tokens: Vec<Address>,
    pub genesis: Vec<U256>,
}

fn check(ok: bool, msg: impl FnOnce() -> String) -> Result<()> {
    if ok {
        Ok(())
    } else {
        Err(anyhow::anyhow!(msg()))
    }
}

/// The plan for a real chain: feeds from the catalogue, parameters from the policy; every gap is an error.
pub fn plan_for_chain(cat: &Catalogue, policy: &DeployPolicy, key: &str, owner: Address, output: &str) -> Result<Plan> {
    let chain: &Chain = cat.chain(key).ok_or_else(|| anyhow::anyhow!("'{key}' is not in the catalogue"))?;
    let p = policy.for_chain(key);
    check(!p.pairs.is_empty(), || format!("deploy policy: chains.{key}.pairs is empty"))?;
    let token = match p.stake.as_str() {
        "native" => Address::ZERO,
        a => kronos_common::catalogue::parse_evm_address(a)
            .map_err(|m| anyhow::anyhow!("deploy policy: chains.{key}.stake: {m}"))?,
    };
    p.min_bet_wei.parse::<U256>().map_err(|e| anyhow::anyhow!("deploy policy: chains.{key}.min_bet_wei: {e}"))?;
    let l2 = chain.sequencer.is_some();
    let delay = p.execute_delay_s.unwrap_or_else(|| if l2 { L2_EXECUTE_DELAY_S } else { execute_delay(p.interval_s) });
    check_clock(&format!("deploy policy: chains.{key}"), p.interval_s, p.settle_window_s, delay)?;
    let mut markets = Vec::new();
    for pair in &p.pairs {
        let f = chain.feeds.get(pair).ok_or_else(|| {
            anyhow::anyhow!("deploy policy: chains.{key}.pairs: {pair} is not a feed of {key} in the catalogue")
        })?;
        let feed = f.evm_address().ok_or_else(|| {
            anyhow::anyhow!("catalogue: chains.{key}.feeds.\"{pair}\" has no confirmed address; it cannot be deployed")
        })?;
        let max_age = match (p.max_price_age_s, f.heartbeat_s) {
            (Some(a), _) => a,
            (None, Some(h)) => h + h / 10,
            (None, None) => anyhow::bail!(
                "deploy policy: chains.{key}.max_price_age_s is required: the catalogue gives no heartbeat for {pair} on {key}"
            ),
        };
        markets.push(MarketPlan {
            pair: pair.clone(),
            description: f.description.clone(),
            feed,
            sequencer_feed: chain.sequencer.as_ref().map(|s| s.address).unwrap_or(Address::ZERO),
            token,
            interval: p.interval_s,
            max_price_age: max_age,
            sequencer_grace: p.sequencer_grace_s,
            settle_window: p.settle_window_s,
            bet_cutoff: bet_cutoff(p.interval_s),
            execute_delay: delay,
            min_bet: p.min_bet_wei.clone(),
            fee_bps: p.fee_bps,
            settler_reward_bps: p.settler_reward_bps,
            decimals: f.decimals.unwrap_or(8),
            initial_answer: 0,
            local_sequencer: false,
            local_token: false,
        });
    }
    Ok(Plan {
        owner,
        salt: policy.salt(),
        reveal_window: policy.reveal_window_s,
        genesis_delay: 2 * p.interval_s as u64,
        local_feeds: false,
        market_count: markets.len(),
        markets,
        output: output.to_string(),
    })
}

/// The contract's betting cutoff for a round length: a tenth of the round (30 s for 5-minute rounds), so that the
/// lock price can still move after the last bet (contracts-evm/README.md, "Late bets").
pub fn bet_cutoff(interval_s: u32) -> u32 {
    interval_s / 10
}

/// The contract's execution delay on L1 chains (and local ones) for a round length: a fifth of the round (60 s for
/// 5-minute rounds), time for reports timed at their observation and proxy upgrades to land
/// (contracts-evm/README.md, "Execution delay").
pub fn execute_delay(interval_s: u32) -> u32 {
    interval_s / 5
}

/// The execution delay on L2 chains (those with a sequencer-uptime feed in the catalogue) unless
/// `execute_delay_s` says otherwise: 15 minutes, above the L1→L2 message latency of the target L2s (Arbitrum
/// releases delayed-inbox messages after 40 L1 blocks, about 8 minutes; OP-stack deposits take minutes), so that a
/// sequencer outage relayed from L1 lands before the checkpoint it covers can be executed.
pub const L2_EXECUTE_DELAY_S: u32 = 900;

/// The contract's bounds on a market's clock (`KronosMarket.createMarket`), checked before anything is sent:
/// `0 < betCutoff <= interval / 2` and `0 < executeDelay <= settleWindow - interval`. `what` names the policy entry.
fn check_clock(what: &str, interval_s: u32, settle_window_s: u32, delay: u32) -> Result<()> {
    let cutoff = bet_cutoff(interval_s);
    check(cutoff > 0 && cutoff <= interval_s / 2, || {
        format!("{what}.interval_s = {interval_s}: too short for a betting cutoff of a tenth of the round")
    })?;
    let most = settle_window_s.saturating_sub(interval_s);
    check(delay > 0 && delay <= most, || {
        format!(
            "{what}.execute_delay_s = {delay}: must be at least 1 and at most settle_window_s - interval_s = {most} \
             (the contract leaves at least one interval to execute a round's close before it expires)"
        )
    })
}

/// Settings of one market on a local development chain.
#[derive(Debug, Clone)]
pub struct LocalMarket {
    pub pair: String,
    pub initial_answer: i64,
    /// Stake a freshly deployed mintable token instead of the native coin.
    pub token: bool,
    pub interval_s: u32,
    pub max_price_age_s: u32,
    pub settle_window_s: u32,
}

/// A plan for a local chain (anvil): mock feeds and, on L2 chains of the catalogue, a sequencer-uptime mock.
pub fn local_plan(
    chain: &Chain,
    policy: &DeployPolicy,
    owner: Address,
    markets: &[LocalMarket],
    output: &str,
) -> Result<Plan> {
    let p = policy.for_chain(&chain.key);
    let mut out = Vec::new();
    for m in markets {
        // Local chains relay nothing from L1: the short default keeps the demo's rounds short.
        check_clock(&format!("local market {}", m.pair), m.interval_s, m.settle_window_s, execute_delay(m.interval_s))?;
        let f = chain
            .feeds
            .get(&m.pair)
            .ok_or_else(|| anyhow::anyhow!("{}: no {} feed in the catalogue", chain.key, m.pair))?;
        out.push(MarketPlan {
            pair: m.pair.clone(),
            description: f.description.clone(),
            feed: Address::ZERO,
            sequencer_feed: Address::ZERO,
            token: Address::ZERO,
            interval: m.interval_s,
            max_price_age: m.max_price_age_s,
            sequencer_grace: if chain.sequencer.is_some() { 60 } else { 0 },
            settle_window: m.settle_window_s,
            bet_cutoff: bet_cutoff(m.interval_s),
            execute_delay: execute_delay(m.interval_s),
            // The demo token has 6 decimals: one whole token.
            min_bet: if m.token { "1000000".into() } else { p.min_bet_wei.clone() },
            fee_bps: p.fee_bps,
            settler_reward_bps: p.settler_reward_bps,
            decimals: f.decimals.unwrap_or(8),
            initial_answer: m.initial_answer,
            local_sequencer: chain.sequencer.is_some(),
            local_token: m.token,
        });
    }
    Ok(Plan {
        owner,
        salt: policy.salt(),
        reveal_window: policy.reveal_window_s,
        genesis_delay: markets.iter().map(|m| m.interval_s as u64).max().unwrap_or(300),
        local_feeds: true,
        market_count: out.len(),
        markets: out,
        output: output.to_string(),
    })
}

/// Runs `Deploy.s.sol` with `plan` against `rpc_url`, signing with `key`, from the repository at `root`.
pub async fn run_forge(root: &Path, plan: &Plan, rpc_url: &str, key: &Secret) -> Result<Deployment> {
    let dir = root.join("contracts-evm/deployments");
    std::fs::create_dir_all(&dir)?;
    let plan_path = dir.join(format!("plan-{}-{}.json", std::process::id(), rand::random::<u32>()));
    std::fs::write(&plan_path, serde_json::to_string_pretty(plan)?)?;
    let forge = forge_bin(root);
    let out = tokio::process::Command::new(&forge)
        .current_dir(root)
        .args([
            "script",
            "contracts-evm/script/Deploy.s.sol:Deploy",
            "--rpc-url",
            rpc_url,
            "--broadcast",
            "--non-interactive",
            "--slow",
        ])
        .env("KRONOS_PLAN", &plan_path)
        .env("KRONOS_DEPLOYER_KEY", key.expose())
        .env("FOUNDRY_PROFILE", "default")
        .env("NO_COLOR", "1")
        .output()
        .await
        .with_context(|| format!("running {} (run scripts/setup)", forge.display()))?;
    let _ = std::fs::remove_file(&plan_path);
    if !out.status.success() {
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        let tail: Vec<&str> = text.lines().rev().take(25).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        anyhow::bail!("Deploy.s.sol failed:\n{}", kronos_common::Redactor::global().redact(&tail.join("\n")));
    }
    let output = root.join(&plan.output);
    let text =
        std::fs::read_to_string(&output).with_context(|| format!("reading the deployment {}", output.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{}: unexpected deployment format", output.display()))
}

/// The forge binary (npm's native one, else the PATH).
pub fn forge_bin(root: &Path) -> PathBuf {
    let p = root.join("node_modules/@foundry-rs/forge-linux-amd64/bin/forge");
    if p.is_file() {
        p
    } else {
        PathBuf::from("forge")
    }
}

/// The repository root: the current folder or one above it holding `foundry.toml`.
pub fn repo_root() -> Result<PathBuf> {
    let mut d = std::env::current_dir()?;
    loop {
        if d.join("foundry.toml").is_file() && d.join("contracts-evm").is_dir() {
            return Ok(d);
        }
        if !d.pop() {
            anyhow::bail!("run kronos from the Kronos repository (no foundry.toml found above the current folder)");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cat() -> Catalogue {
        Catalogue::load(concat!(env!("CARGO_MANIFEST_DIR"), "/../config/chains.toml")).unwrap()
    }

    fn policy() -> DeployPolicy {
        DeployPolicy::load(Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../config/deploy.toml"))).unwrap()
    }

    #[test]
    fn ethereum_gets_a_full_plan_from_the_catalogue() {
        let p = plan_for_chain(&cat(), &policy(), "ethereum", Address::repeat_byte(1), "x.json").unwrap();
        assert_eq!(p.markets.len(), 2);
        assert_eq!(p.markets[0].feed, cat().chain("ethereum").unwrap().feeds["BTC/USD"].evm_address().unwrap());
        assert_eq!(p.markets[0].max_price_age, 3960);
        assert_eq!(p.markets[0].sequencer_feed, Address::ZERO);
        let v = serde_json::to_value(&p).unwrap();
        assert!(v["markets"][0]["sequencerFeed"].is_string() && v["marketCount"] == 2);
    }

    #[test]
    fn gaps_are_errors_not_guesses() {
        let e = plan_for_chain(&cat(), &policy(), "base", Address::ZERO, "x").unwrap_err().to_string();
        assert!(e.contains("chains.base.max_price_age_s is required"), "{e}");
        let e = plan_for_chain(&cat(), &policy(), "solana", Address::ZERO, "x").unwrap_err().to_string();
        assert!(e.contains("no confirmed address"), "{e}");
        let e = plan_for_chain(&cat(), &policy(), "nowhere", Address::ZERO, "x").unwrap_err().to_string();
        assert!(e.contains("not in the catalogue"), "{e}");
        let mut pol = policy();
        pol.chains.insert("base".into(), ChainPolicyOverride { max_price_age_s: Some(1320), ..Default::default() });
        let p = plan_for_chain(&cat(), &pol, "base", Address::ZERO, "x").unwrap();
        assert_eq!(p.markets[0].sequencer_feed, cat().chain("base").unwrap().sequencer.as_ref().unwrap().address);
    }

    fn base_with(execute_delay_s: Option<u32>) -> DeployPolicy {
        let mut pol = policy();
        pol.chains.insert(
            "base".into(),
            ChainPolicyOverride { max_price_age_s: Some(1320), execute_delay_s, ..Default::default() },
        );
        pol
    }

    #[test]
    fn execute_delay_is_longer_on_l2s_and_can_be_set_per_chain() {
        let l1 = plan_for_chain(&cat(), &policy(), "ethereum", Address::ZERO, "x").unwrap();
        assert_eq!((l1.markets[0].bet_cutoff, l1.markets[0].execute_delay), (30, 60));
        let l2 = plan_for_chain(&cat(), &base_with(None), "base", Address::ZERO, "x").unwrap();
        assert_eq!(l2.markets[0].execute_delay, L2_EXECUTE_DELAY_S);
        let set = plan_for_chain(&cat(), &base_with(Some(240)), "base", Address::ZERO, "x").unwrap();
        assert_eq!(set.markets[0].execute_delay, 240);
    }

    #[test]
    fn execute_delay_outside_the_contract_bounds_names_the_field() {
        // settle_window_s = 86400, interval_s = 300: at most 86100.
        for bad in [0, 86_101, u32::MAX] {
            let e = plan_for_chain(&cat(), &base_with(Some(bad)), "base", Address::ZERO, "x").unwrap_err().to_string();
            assert!(e.contains(&format!("chains.base.execute_delay_s = {bad}")) && e.contains("86100"), "{e}");
        }
        assert!(plan_for_chain(&cat(), &base_with(Some(86_100)), "base", Address::ZERO, "x").is_ok());
        // The L2 default must fit the window too.
        let mut pol = base_with(None);
        pol.chains.get_mut("base").unwrap().settle_window_s = Some(1000);
        let e = plan_for_chain(&cat(), &pol, "base", Address::ZERO, "x").unwrap_err().to_string();
        assert!(e.contains("chains.base.execute_delay_s = 900"), "{e}");
    }

    #[test]
    fn local_demo_rounds_satisfy_the_contract_bounds() {
        let chain = cat().chain("base").unwrap().clone();
        // The demo's markets: any interval from the contract's minimum, a settle window of 12 intervals.
        for interval_s in [60, 61, 120, 300, 3600] {
            let m = LocalMarket {
                pair: "BTC/USD".into(),
                initial_answer: 1,
                token: false,
                interval_s,
                max_price_age_s: interval_s,
                settle_window_s: interval_s * 12,
            };
            let p = local_plan(&chain, &policy(), Address::ZERO, &[m], "x").unwrap();
            let (cutoff, delay) = (p.markets[0].bet_cutoff, p.markets[0].execute_delay);
            assert!(cutoff > 0 && cutoff <= interval_s / 2, "{interval_s}: cutoff {cutoff}");
            assert!(delay > 0 && delay + interval_s <= interval_s * 12, "{interval_s}: delay {delay}");
        }
        let short = LocalMarket {
            pair: "BTC/USD".into(),
            initial_answer: 1,
            token: false,
            interval_s: 300,
            max_price_age_s: 300,
            settle_window_s: 300,
        };
        let e = local_plan(&chain, &policy(), Address::ZERO, &[short], "x").unwrap_err().to_string();
        assert!(e.contains("execute_delay_s = 60"), "{e}");
    }
}
