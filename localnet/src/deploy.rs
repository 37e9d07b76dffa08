//! Deploying the suite: a validated plan from the catalogue and the deployment policy, executed by
//! `contracts-evm/script/Deploy.s.sol` (CREATE2, same addresses on every chain), and the deployment it wrote.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use alloy::primitives::{keccak256, Address, B256, U256};
use anyhow::{Context, Result};
use kronos_common::{Catalogue, Chain, Secret};
use kronos_keeper::chain::is_dev_node;
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
    /// Markets on a local development chain (anvil), where `kronos deploy` deploys mock feeds.
    #[serde(default)]
    pub local: Option<LocalPolicy>,
}

/// `[local]` of `config/deploy.toml`: the clock and starting prices of markets on a local chain, whose feeds are
/// Chainlink's mocks (they move only when someone pushes an answer) and whose sequencer feed, on L2s, is a mock that
/// comes up at deployment.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalPolicy {
    pub interval_s: u32,
    pub settle_window_s: u32,
    pub max_price_age_s: u32,
    /// Starting answer of each pair's mock feed, in the pair's quote unit: a number (`65000`, `3000.5`) or a decimal
    /// string (`"65000"`).
    pub prices: BTreeMap<String, toml::Value>,
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
    /// Things the deployer should know that do not stop the plan (printed by `kronos deploy`, not sent to forge).
    #[serde(skip)]
    pub warnings: Vec<String>,
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
    let mut warnings = Vec::new();
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
        if let Some(h) = f.heartbeat_s {
            check_heartbeat(key, pair, p.interval_s, max_age, h, &mut warnings)?;
        }
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
        warnings,
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

/// The feed's heartbeat against the market: a `max_price_age_s` below the heartbeat is refused (in a quiet market the
/// feed updates only once a heartbeat, so most checkpoints would read a stale answer and their rounds be refunded);
/// an interval shorter than the heartbeat is a warning, not an error. Such a feed may go a whole round without an
/// update, and such rounds tie (settled with the fee kept, contracts-evm/README.md, "Late bets", rule 3) — but a
/// deviation-triggered feed also updates within minutes whenever the price moves, which is when bettors care, so
/// 5-minute rounds on Ethereum's 3,600-s feeds remain a legitimate choice that the deployer should make knowingly.
fn check_heartbeat(
    key: &str,
    pair: &str,
    interval_s: u32,
    max_age: u32,
    heartbeat_s: u32,
    warnings: &mut Vec<String>,
) -> Result<()> {
    check(max_age >= heartbeat_s, || {
        format!(
            "deploy policy: chains.{key}.max_price_age_s = {max_age} is below the {heartbeat_s}-s heartbeat of {pair} \
             on {key}: in a quiet market most checkpoints would be stale and their rounds refunded"
        )
    })?;
    if interval_s < heartbeat_s {
        warnings.push(format!(
            "chains.{key}.interval_s = {interval_s} is shorter than the {heartbeat_s}-s heartbeat of {pair} on {key}: \
             in a round where the price moves less than the feed's deviation threshold the feed does not update, and \
             the round ties (stakes back less the fee); set interval_s >= {heartbeat_s} for a round that always sees \
             an update"
        ));
    }
    Ok(())
}

/// Sequencer grace of markets on local L2 chains: the uptime mock comes up (status "up", `startedAt` = deployment)
/// when the suite is deployed, and the first round starts at least one interval (the contract's minimum is 60 s)
/// later, so a grace of 60 s never refunds a round of a fresh local chain (the real chains' default of 3,600 s would
/// refund every round of the first hour).
pub const LOCAL_SEQUENCER_GRACE_S: u32 = 60;

/// The plan for a local development chain (anvil) from the policy's `[local]` section: the chain's pairs of the
/// policy, each on a fresh Chainlink mock feed starting at `local.prices`, native stakes, and on L2s a
/// sequencer-uptime mock with [`LOCAL_SEQUENCER_GRACE_S`].
pub fn local_plan_for_chain(
    cat: &Catalogue,
    policy: &DeployPolicy,
    key: &str,
    owner: Address,
    output: &str,
) -> Result<Plan> {
    let chain: &Chain = cat.chain(key).ok_or_else(|| anyhow::anyhow!("'{key}' is not in the catalogue"))?;
    check(chain.chain_id.is_some(), || format!("'{key}' is not an EVM chain"))?;
    let l = policy.local.as_ref().ok_or_else(|| {
        anyhow::anyhow!(
            "deploy policy: a [local] section is needed to deploy on a local chain (see config/deploy.toml)"
        )
    })?;
    let p = policy.for_chain(key);
    check(!p.pairs.is_empty(), || format!("deploy policy: chains.{key}.pairs is empty"))?;
    let mut markets = Vec::new();
    for pair in &p.pairs {
        let f = chain.feeds.get(pair).ok_or_else(|| {
            anyhow::anyhow!("deploy policy: chains.{key}.pairs: {pair} is not a feed of {key} in the catalogue")
        })?;
        let field = format!("deploy policy: local.prices.\"{pair}\"");
        let price =
            l.prices.get(pair).ok_or_else(|| anyhow::anyhow!("{field} is missing (the mock feed's first answer)"))?;
        let price = match price {
            toml::Value::String(v) => v.clone(),
            toml::Value::Integer(v) => v.to_string(),
            toml::Value::Float(v) => v.to_string(),
            other => anyhow::bail!("{field} = {other}: a price is a number (65000) or a decimal string (\"65000\")"),
        };
        let d: kronos_common::Decimal = price.parse().map_err(|e| anyhow::anyhow!("{field} = {price:?}: {e}"))?;
        let answer = d
            .to_fixed(f.decimals.unwrap_or(8), kronos_common::Rounding::Down)
            .map_err(|e| anyhow::anyhow!("{field}: {e}"))?;
        let answer = i64::try_from(answer).ok().filter(|a| *a > 0).ok_or_else(|| {
            anyhow::anyhow!(
                "{field} = {price:?}: must be above 0 and fit the feed's {} decimals in 63 bits",
                f.decimals.unwrap_or(8)
            )
        })?;
        markets.push(LocalMarket {
            pair: pair.clone(),
            initial_answer: answer,
            token: false,
            interval_s: l.interval_s,
            max_price_age_s: l.max_price_age_s,
            settle_window_s: l.settle_window_s,
        });
    }
    check(l.max_price_age_s > 0, || "deploy policy: local.max_price_age_s must be above 0".into())?;
    local_plan(chain, policy, owner, &markets, output).map_err(|e| anyhow::anyhow!("deploy policy: local: {e}"))
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
            sequencer_grace: if chain.sequencer.is_some() { LOCAL_SEQUENCER_GRACE_S } else { 0 },
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
        warnings: Vec::new(),
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

/// What `kronos deploy` learned from the node at `--rpc` before planning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeFacts {
    pub chain_id: u64,
    /// `web3_clientVersion` (`anvil/v1.7.1`, `HardhatNetwork/2.22.0/…`).
    pub client: String,
    /// The policy's pairs whose catalogue feed address holds code on the node, and those whose address holds none.
    pub feeds_with_code: Vec<String>,
    pub feeds_without_code: Vec<String>,
}

/// Where the markets' feeds come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The catalogue's Chainlink feeds (a real chain, or a fork of one).
    Catalogue,
    /// Mock feeds deployed with the suite (a local development chain).
    Local,
}

/// Chooses the plan for the node: a node serving another chain id than the catalogue's is refused (the keeper would
/// refuse it too); `--local` asks for mocks (on a development node only); otherwise the catalogue's feeds are used where they all hold code (a real
/// chain or a fork), mocks on a development node where none does, and anything else is refused before forge runs
/// (it used to fail after half a minute with `call to non-contract address`).
pub fn choose_target(chain: &Chain, facts: &NodeFacts, force_local: bool) -> Result<Target> {
    let want = chain.chain_id.ok_or_else(|| anyhow::anyhow!("'{}' is not an EVM chain", chain.key))?;
    check(facts.chain_id == want, || {
        format!(
            "--rpc: the node serves chain id {}, but the catalogue's {} is chain {want} (the keeper checks it too); \
             for a local chain start the node with that id (anvil --chain-id {want})",
            facts.chain_id, chain.key
        )
    })?;
    if force_local {
        // Anyone can set a MockV3Aggregator's answer: markets on one must never take real money.
        check(is_dev_node(&facts.client), || {
            format!(
                "--local deploys mock feeds whose price anyone can set, so only on a development node (anvil, Hardhat, \
                 Ganache); this node is {}",
                facts.client
            )
        })?;
        return Ok(Target::Local);
    }
    if facts.feeds_without_code.is_empty() {
        return Ok(Target::Catalogue);
    }
    if facts.feeds_with_code.is_empty() && is_dev_node(&facts.client) {
        return Ok(Target::Local);
    }
    anyhow::bail!(
        "--rpc: the catalogue's {} feed(s) of {} hold no code on this node ({}): it is not {} (or not synced); for \
         a local development chain pass --local to deploy mock feeds",
        facts.feeds_without_code.join(", "),
        chain.key,
        facts.client,
        chain.name
    )
}

/// Asks the node at `rpc` what [`choose_target`] needs, for the policy's pairs of `key`.
pub async fn probe(cat: &Catalogue, policy: &DeployPolicy, key: &str, rpc: &url::Url) -> Result<NodeFacts> {
    use alloy::providers::{Provider, ProviderBuilder};
    let chain = cat.chain(key).ok_or_else(|| anyhow::anyhow!("'{key}' is not in the catalogue"))?;
    let label = kronos_keeper::rpc::endpoint_label(0, rpc);
    let p = ProviderBuilder::new().connect_http(rpc.clone());
    let ask = |e: &dyn std::fmt::Display| anyhow::anyhow!("--rpc ({label}) does not answer: {e}");
    let chain_id = p.get_chain_id().await.map_err(|e| ask(&e))?;
    let client = p.get_client_version().await.map_err(|e| ask(&e))?;
    let (mut with, mut without) = (Vec::new(), Vec::new());
    for pair in policy.for_chain(key).pairs {
        let Some(addr) = chain.feeds.get(&pair).and_then(|f| f.evm_address()) else { continue };
        let code = p.get_code_at(addr).await.map_err(|e| ask(&e))?;
        if code.is_empty() {
            without.push(pair);
        } else {
            with.push(pair);
        }
    }
    Ok(NodeFacts { chain_id, client, feeds_with_code: with, feeds_without_code: without })
}

/// The keeper configuration for a local deployment, ready for `kronos run --config`: the chain with its RPC URL,
/// the deployed addresses, `local = true` (the feeds are mocks, not the catalogue's addresses) and `pairs` (market
/// id → catalogue pair, which the keeper cannot infer from a mock's address). Paths are absolute under `root`; the
/// store is named after the first genesis, so a redeployment on a fresh node starts with a fresh store.
pub fn local_keeper_config(root: &Path, key: &str, rpc: &str, plan: &Plan, d: &Deployment) -> String {
    let genesis = d.genesis.first().map(|g| g.to_string()).unwrap_or_default();
    let ids: Vec<String> = d.market_ids.iter().map(|i| i.to_string()).collect();
    let pairs: Vec<String> =
        d.market_ids.iter().zip(&plan.markets).map(|(id, m)| format!("\"{id}\" = \"{}\"", m.pair)).collect();
    format!(
        "# Keeper configuration for the local {key} chain, written by `kronos deploy` (keeper/README.md, \"Deploy to your\n\
         # own local chain\"). Run:  KRONOS_KEEPER_KEY=<a funded key of the node> kronos run --config <this file>\n\
         # KRONOS_STORE and KRONOS_LISTEN override the store and the API address.\n\
         \n\
         [keeper]\n\
         catalogue = \"{catalogue}\"\n\
         store = \"sqlite://{store}\"\n\
         listen = \"127.0.0.1:9464\"\n\
         signer = {{ env = \"KRONOS_KEEPER_KEY\" }}\n\
         poll_ms = 500\n\
         keeper_id = \"local-{key}\"\n\
         \n\
         [[chain]]\n\
         name = \"{key}\"\n\
         rpc = [\"{rpc}\"]\n\
         market = \"{market}\"\n\
         registry = \"{registry}\"\n\
         markets = [{ids}]\n\
         confirmations = 1\n\
         # The feeds are mocks deployed with the suite: their addresses are not the catalogue's ...\n\
         local = true\n\
         # ... so each market names its catalogue pair (the mocks describe themselves like it).\n\
         pairs = {{ {pairs} }}\n",
        catalogue = root.join("config/chains.toml").display(),
        store = root.join(format!("data/local-{key}-{genesis}.db")).display(),
        market = d.market,
        registry = d.registry,
        ids = ids.join(", "),
        pairs = pairs.join(", "),
    )
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

/// What `kronos deploy` was asked to do (its options, parsed).
#[derive(Debug, Clone)]
pub struct DeployRequest {
    /// Catalogue key of the chain to deploy on.
    pub chain: String,
    /// RPC URL of the chain (`None` only with `dry_run`), as given: checked and registered with the redactor here.
    pub rpc: Option<String>,
    /// Owner of the contracts (default: the deployer).
    pub owner: Option<String>,
    /// Deployment policy, relative to the repository root.
    pub policy: PathBuf,
    /// Deploy mock feeds (a development node only).
    pub local: bool,
    /// Where the deployment is written, under contracts-evm/deployments.
    pub out: Option<String>,
    /// Print the plan and stop.
    pub dry_run: bool,
}

/// `kronos deploy`: deploys the suite on one chain with the CREATE2 deployer, with the deployer's key `key`
/// (`KRONOS_DEPLOYER_KEY`). With an RPC URL the node is probed first and the target chosen ([`choose_target`]); on a
/// local development chain (or with `local`) the markets get Chainlink mock feeds and the keeper configuration for
/// `kronos run` is written next to the deployment. Prints the plan (`dry_run`) or the deployment, the notes and
/// warnings on stderr, as the command's output.
pub async fn deploy(a: &DeployRequest, key: Option<Secret>) -> Result<()> {
    let root = repo_root()?;
    let cat = Catalogue::load(root.join("config/chains.toml"))?;
    let policy = DeployPolicy::load(&root.join(&a.policy))?;
    let rpc = match &a.rpc {
        Some(u) => {
            // Never echo the URL: hosted endpoints carry their API key in it.
            let url = url::Url::parse(u).map_err(|e| anyhow::anyhow!("--rpc is not a URL ({e})"))?;
            anyhow::ensure!(matches!(url.scheme(), "http" | "https"), "--rpc must be an http or https URL");
            for s in kronos_keeper::rpc::url_secrets(&url) {
                kronos_common::Redactor::global().register(&s);
            }
            Some(url)
        }
        None => None,
    };
    let signer: Option<alloy::signers::local::PrivateKeySigner> = match &key {
        Some(k) => Some(
            k.expose()
                .trim()
                .parse()
                .map_err(|_| anyhow::anyhow!("KRONOS_DEPLOYER_KEY does not hold a 32-byte hex private key"))?,
        ),
        None if a.dry_run => None,
        None => anyhow::bail!("set KRONOS_DEPLOYER_KEY to the deployer's private key"),
    };
    let owner = match (&a.owner, &signer) {
        (Some(o), _) => kronos_common::catalogue::parse_evm_address(o).map_err(|m| anyhow::anyhow!("--owner: {m}"))?,
        (None, Some(s)) => s.address(),
        (None, None) => {
            eprintln!("note: owner 0x0 in this plan: give --owner, or set KRONOS_DEPLOYER_KEY (the default owner)");
            Address::ZERO
        }
    };
    let target = match &rpc {
        Some(url) => {
            let chain =
                cat.chain(&a.chain).ok_or_else(|| anyhow::anyhow!("--chain: '{}' is not in the catalogue", a.chain))?;
            let facts = probe(&cat, &policy, &a.chain, url).await?;
            choose_target(chain, &facts, a.local)?
        }
        None if a.local => Target::Local,
        None => Target::Catalogue,
    };
    let out = output_path(&a.chain, a.out.as_deref(), target)?;
    let plan = match target {
        Target::Local => local_plan_for_chain(&cat, &policy, &a.chain, owner, &out)?,
        Target::Catalogue => plan_for_chain(&cat, &policy, &a.chain, owner, &out)?,
    };
    for w in &plan.warnings {
        eprintln!("warning: {w}");
    }
    if a.dry_run {
        println!("{}", serde_json::to_string_pretty(&plan)?);
        return Ok(());
    }
    let (Some(url), Some(key)) = (rpc, key) else {
        anyhow::bail!("--rpc and KRONOS_DEPLOYER_KEY are needed to deploy (--dry-run only prints the plan)")
    };
    if target == Target::Local {
        println!(
            "{}: local development chain: deploying Chainlink mock feeds (starting prices from [local] of {})",
            a.chain,
            a.policy.display()
        );
    }
    let d = run_forge(&root, &plan, url.as_str(), &key).await?;
    println!("{}", serde_json::to_string_pretty(&d)?);
    println!("written to {out}");
    if target == Target::Local {
        let t = kronos_keeper::rpc::FailoverTransport::new(&a.chain, std::slice::from_ref(&url));
        for (m, feed) in plan.markets.iter().zip(&d.feeds) {
            let agg = crate::demo::net::mock_aggregator(&t.provider(), *feed).await?;
            println!("  {} mock feed {feed}: move its price with  cast send {agg} \"updateAnswer(int256)\" <answer with {} decimals> --rpc-url <rpc> --private-key <key>", m.pair, m.decimals);
        }
        let cfg_path = format!("{}.keeper.toml", out.trim_end_matches(".json"));
        std::fs::write(root.join(&cfg_path), local_keeper_config(&root, &a.chain, url.as_str(), &plan, &d))
            .with_context(|| format!("writing {cfg_path}"))?;
        println!("keeper configuration written to {cfg_path}");
        println!("next:  KRONOS_KEEPER_KEY=<a funded key of the node> kronos run --config {cfg_path}");
    }
    Ok(())
}

/// Where the deployment of `chain` is written: `out` if given (a `.json` file under `contracts-evm/deployments/`,
/// the only folder the deploy script may write), else `<chain>.json`, or `local-<chain>.json` for mock feeds.
pub fn output_path(chain: &str, out: Option<&str>, target: Target) -> Result<String> {
    Ok(match out {
        Some(o) => {
            anyhow::ensure!(
                o.starts_with("contracts-evm/deployments/") && o.ends_with(".json") && !o.contains(".."),
                "--out: must be a .json file under contracts-evm/deployments/ (the only folder the deploy script may write)"
            );
            o.to_string()
        }
        None if target == Target::Local => format!("contracts-evm/deployments/local-{chain}.json"),
        None => format!("contracts-evm/deployments/{chain}.json"),
    })
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
        let mut no_age = policy();
        no_age.chains.remove("base");
        let e = plan_for_chain(&cat(), &no_age, "base", Address::ZERO, "x").unwrap_err().to_string();
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

    /// Issue 13, item 11: the shipped policy failed on Base ("no heartbeat in the catalogue").
    #[test]
    fn the_shipped_policy_plans_every_evm_chain_and_every_local_one() {
        let cat = cat();
        for c in cat.evm_chains() {
            let p = plan_for_chain(&cat, &policy(), &c.key, Address::ZERO, "x").unwrap();
            assert_eq!(p.markets.len(), 2, "{}", c.key);
            assert!(!p.local_feeds && p.markets.iter().all(|m| !m.feed.is_zero()), "{}", c.key);
            let l = local_plan_for_chain(&cat, &policy(), &c.key, Address::ZERO, "x").unwrap();
            assert!(l.local_feeds && l.markets.len() == 2, "{}", c.key);
            let btc = &l.markets[0];
            assert_eq!((btc.pair.as_str(), btc.initial_answer, btc.interval), ("BTC/USD", 6_500_000_000_000, 60));
            // A fresh sequencer mock: the first round starts after its grace (never the real chains' 3,600 s).
            assert_eq!(btc.local_sequencer, c.sequencer.is_some());
            assert!(btc.sequencer_grace as u64 <= l.genesis_delay, "{}", c.key);
            assert_eq!(btc.sequencer_grace, if c.sequencer.is_some() { LOCAL_SEQUENCER_GRACE_S } else { 0 });
        }
    }

    #[test]
    fn local_plans_need_a_starting_price_per_pair() {
        let mut pol = policy();
        pol.local.as_mut().unwrap().prices.remove("ETH/USD");
        let e = local_plan_for_chain(&cat(), &pol, "base", Address::ZERO, "x").unwrap_err().to_string();
        assert!(e.contains("local.prices.\"ETH/USD\" is missing"), "{e}");
        pol.local.as_mut().unwrap().prices.insert("ETH/USD".into(), toml::Value::Integer(-3));
        let e = local_plan_for_chain(&cat(), &pol, "base", Address::ZERO, "x").unwrap_err().to_string();
        assert!(e.contains("local.prices.\"ETH/USD\" = \"-3\": must be above 0"), "{e}");
        pol.local.as_mut().unwrap().prices.insert("ETH/USD".into(), toml::Value::Float(3000.5));
        let p = local_plan_for_chain(&cat(), &pol, "base", Address::ZERO, "x").unwrap();
        assert_eq!(p.markets[1].initial_answer, 300_050_000_000);
        pol.local = None;
        let e = local_plan_for_chain(&cat(), &pol, "base", Address::ZERO, "x").unwrap_err().to_string();
        assert!(e.contains("a [local] section is needed"), "{e}");
    }

    /// The leftover of issue 13, item 1: the interval checked against the feed's heartbeat.
    #[test]
    fn intervals_shorter_than_the_heartbeat_warn_and_a_max_age_below_it_is_refused() {
        let p = plan_for_chain(&cat(), &policy(), "ethereum", Address::ZERO, "x").unwrap();
        assert_eq!(p.warnings.len(), 2, "{:?}", p.warnings);
        assert!(
            p.warnings[0].contains("chains.ethereum.interval_s = 300 is shorter than the 3600-s heartbeat of BTC/USD")
        );
        let mut pol = policy();
        pol.chains.insert(
            "ethereum".into(),
            ChainPolicyOverride { interval_s: Some(3600), settle_window_s: Some(86_400), ..Default::default() },
        );
        assert!(plan_for_chain(&cat(), &pol, "ethereum", Address::ZERO, "x").unwrap().warnings.is_empty());
        pol.chains.get_mut("ethereum").unwrap().max_price_age_s = Some(3599);
        let e = plan_for_chain(&cat(), &pol, "ethereum", Address::ZERO, "x").unwrap_err().to_string();
        assert!(e.contains("chains.ethereum.max_price_age_s = 3599 is below the 3600-s heartbeat"), "{e}");
        // Without a heartbeat in the catalogue there is nothing to compare with.
        assert!(plan_for_chain(&cat(), &policy(), "base", Address::ZERO, "x").unwrap().warnings.is_empty());
    }

    fn facts(chain_id: u64, client: &str, with: &[&str], without: &[&str]) -> NodeFacts {
        let v = |x: &[&str]| x.iter().map(|s| s.to_string()).collect();
        NodeFacts { chain_id, client: client.into(), feeds_with_code: v(with), feeds_without_code: v(without) }
    }

    #[test]
    fn the_target_follows_the_node() {
        let cat = cat();
        let base = cat.chain("base").unwrap();
        let all = ["BTC/USD", "ETH/USD"];
        // A fresh anvil: none of the catalogue's feeds exist there.
        assert_eq!(choose_target(base, &facts(8453, "anvil/v1.7.1", &[], &all), false).unwrap(), Target::Local);
        assert_eq!(
            choose_target(base, &facts(8453, "HardhatNetwork/2.22.0", &[], &all), false).unwrap(),
            Target::Local
        );
        // A real node, or anvil forking Base: the real feeds, unless mocks are asked for.
        assert_eq!(choose_target(base, &facts(8453, "Geth/v1.14", &all, &[]), false).unwrap(), Target::Catalogue);
        assert_eq!(choose_target(base, &facts(8453, "anvil/v1.7.1", &all, &[]), false).unwrap(), Target::Catalogue);
        assert_eq!(choose_target(base, &facts(8453, "anvil/v1.7.1", &all, &[]), true).unwrap(), Target::Local);
        // Never mocks (whose price anyone sets) on a real node.
        let e = choose_target(base, &facts(8453, "Geth/v1.14", &all, &[]), true).unwrap_err().to_string();
        assert!(e.contains("only on a development node") && e.contains("Geth/v1.14"), "{e}");
        // A real node without the feeds is the wrong chain: refused before forge runs, --local named.
        let e = choose_target(base, &facts(8453, "Geth/v1.14", &[], &all), false).unwrap_err().to_string();
        assert!(e.contains("BTC/USD, ETH/USD feed(s) of base hold no code") && e.contains("--local"), "{e}");
        let e = choose_target(base, &facts(8453, "anvil/v1.7.1", &["BTC/USD"], &["ETH/USD"]), false).unwrap_err();
        assert!(e.to_string().contains("ETH/USD feed(s)"), "{e}");
        // Another chain id is refused even with --local: the keeper would refuse it.
        let e = choose_target(base, &facts(31337, "anvil/v1.7.1", &[], &all), true).unwrap_err().to_string();
        assert!(e.contains("chain id 31337") && e.contains("anvil --chain-id 8453"), "{e}");
    }

    #[test]
    fn the_written_keeper_configuration_parses_with_local_and_pairs() {
        let root = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
        let plan = local_plan_for_chain(&cat(), &policy(), "base", Address::ZERO, "x").unwrap();
        let d = Deployment {
            chain_id: 8453,
            market: Address::repeat_byte(1),
            registry: Address::repeat_byte(2),
            market_ids: vec![U256::from(1), U256::from(2)],
            feeds: vec![Address::repeat_byte(3), Address::repeat_byte(4)],
            sequencers: vec![Address::repeat_byte(5); 2],
            tokens: vec![Address::ZERO; 2],
            genesis: vec![U256::from(1_800_000_000u64); 2],
        };
        let text = local_keeper_config(root, "base", "http://127.0.0.1:8545", &plan, &d);
        let c = kronos_keeper::config::Config::parse(&text, "k.toml", &|_| None).unwrap();
        let ch = &c.chains[0];
        assert!(ch.local && ch.markets == Some(vec![1, 2]) && ch.market == d.market && ch.registry == Some(d.registry));
        assert_eq!(ch.pairs.get(&1).map(String::as_str), Some("BTC/USD"));
        assert_eq!(ch.pairs.get(&2).map(String::as_str), Some("ETH/USD"));
        assert!(c.store.ends_with("data/local-base-1800000000.db"), "{}", c.store);
        assert!(matches!(&c.signer, kronos_keeper::config::SignerSource::Env(v) if v == "KRONOS_KEEPER_KEY"));
    }

    #[test]
    fn output_path_defaults_by_target_and_keeps_out_under_deployments() {
        assert_eq!(output_path("base", None, Target::Catalogue).unwrap(), "contracts-evm/deployments/base.json");
        assert_eq!(output_path("base", None, Target::Local).unwrap(), "contracts-evm/deployments/local-base.json");
        let mine = "contracts-evm/deployments/mine.json";
        assert_eq!(output_path("base", Some(mine), Target::Local).unwrap(), mine);
        for bad in ["deployments/x.json", "contracts-evm/deployments/x.toml", "contracts-evm/deployments/../../x.json"]
        {
            let e = output_path("base", Some(bad), Target::Catalogue).unwrap_err().to_string();
            assert!(e.starts_with("--out: must be a .json file"), "{bad}: {e}");
        }
    }
}
