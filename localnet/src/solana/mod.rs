//! The demo's Solana chain (issue 15): the local Solana RPC server (`kronos-solana-rpc`, the kronos-market program run
//! natively in program-test's bank) in wall-clock mode, set up with real transactions through the nonblocking
//! `RpcClient` — the program's Config and feed approval, a Chainlink store-format BTC/USD feed, one SOL market and one
//! SPL-token market, the forecast registry — then the same candles the EVM chains replay written into the feed
//! ([`replay`]), local bettors on both markets ([`bettors`]) and what the chain says happened ([`watch`]). The keeper
//! drives it like any other chain, from its `[[solana]]` section ([`LocalSolana::keeper_section`]).

pub mod bench;
pub mod bettors;
pub mod replay;
pub mod watch;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use anchor_lang::prelude::{Clock, Pubkey};
use anchor_lang::solana_program::instruction::Instruction;
use anchor_lang::solana_program::program_pack::Pack;
use anchor_lang::{InstructionData, ToAccountMetas};
use anchor_spl::token::spl_token;
use anyhow::{Context, Result};
use base64::Engine;
use kronos_market::state::{
    Params, CONFIG_SEED, FEED_SEED, MARKET_SEED, MIN_BET_CUTOFF, MIN_REPORT_DELAY, POSITION_SEED, ROUND_SEED,
    VAULT_SEED,
};
use kronos_market::{accounts as acc, instruction as ix};
use kronos_solana_rpc::{LocalRpc, WallClock};
use serde_json::{json, Value};
use solana_client::nonblocking::rpc_client::RpcClient;
use solana_commitment_config::CommitmentConfig;
use solana_keypair::Keypair;
use solana_signer::Signer;
use solana_transaction::Transaction;

pub use kronos_market::ID as PROGRAM_ID;

/// Lamports per SOL.
pub const SOL: u64 = 1_000_000_000;
/// The feed's decimals (Chainlink's BTC/USD on Solana has 8).
pub const FEED_DECIMALS: u8 = 8;
/// The local stake token's decimals (as USDC's).
pub const TOKEN_DECIMALS: u8 = 6;
/// The markets' ids (their PDAs are `["market", admin, id_le]`).
pub const SOL_MARKET_ID: u64 = 1;
pub const TOKEN_MARKET_ID: u64 = 2;
/// The forecast registry's reveal window (chain seconds).
pub const REVEAL_WINDOW: u32 = 86_400;
/// The Clock sysvar's address.
pub const CLOCK_SYSVAR: Pubkey = anchor_lang::pubkey!("SysvarC1ock11111111111111111111111111111111");

/// How the local Solana chain runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// Round interval in chain seconds (at least the program's 60).
    pub interval: u32,
    /// Chain seconds per wall second (the anvils' `seconds_per_block / block_time`).
    pub speed: u32,
    /// Where the keeper's keypair file is written.
    pub work_dir: PathBuf,
    /// The feed's first answer (in its 8 decimals): the close of the candle before the replayed ones.
    pub initial_answer: i128,
    /// How many local bettors (each gets SOL and stake tokens).
    pub bettors: usize,
}

/// One market of the local program.
#[derive(Debug, Clone)]
pub struct MarketRef {
    /// `sol` or `spl`, for tables.
    pub name: &'static str,
    pub key: Pubkey,
    pub vault: Pubkey,
    /// The stake mint (`None`: native SOL).
    pub mint: Option<Pubkey>,
}

impl MarketRef {
    pub fn round(&self, epoch: u64) -> Pubkey {
        pda(&[ROUND_SEED, self.key.as_ref(), &epoch.to_le_bytes()])
    }
    pub fn position(&self, epoch: u64, user: &Pubkey) -> Pubkey {
        pda(&[POSITION_SEED, self.round(epoch).as_ref(), user.as_ref()])
    }
    fn token_program(&self) -> Option<Pubkey> {
        self.mint.map(|_| spl_token::ID)
    }
    /// The stake's decimals (9 for SOL).
    pub fn decimals(&self) -> u8 {
        if self.mint.is_some() {
            TOKEN_DECIMALS
        } else {
            9
        }
    }
}

/// A local bettor: its key and its token account of the stake mint.
pub struct Bettor {
    pub key: Keypair,
    pub token: Pubkey,
}

/// The running local Solana chain, set up.
pub struct LocalSolana {
    pub rpc: LocalRpc,
    pub client: Arc<RpcClient>,
    /// The program's upgrade authority, Config admin and both markets' authority.
    pub admin: Keypair,
    /// The keeper's signer (funded), also in [`LocalSolana::keeper_key_file`].
    pub keeper: Keypair,
    /// The keeper's keypair as a Solana CLI keypair file (a JSON array of the 64 secret-key bytes).
    pub keeper_key_file: PathBuf,
    pub feed: Pubkey,
    /// `[SOL market, SPL-token market]`.
    pub markets: Vec<MarketRef>,
    pub mint: Pubkey,
    pub bettors: Vec<Bettor>,
    /// Both markets' genesis (chain unix time) and interval.
    pub genesis: i64,
    pub interval: u32,
    pub params: Params,
    /// The market the admin enabled for forecasts (the SOL one).
    pub forecast_market: Pubkey,
}

pub fn pda(seeds: &[&[u8]]) -> Pubkey {
    Pubkey::find_program_address(seeds, &PROGRAM_ID).0
}

fn ixn(accounts: impl ToAccountMetas, data: impl InstructionData) -> Instruction {
    Instruction { program_id: PROGRAM_ID, accounts: accounts.to_account_metas(None), data: data.data() }
}

/// The markets' parameters for a round interval, timed like the EVM deployment's: bets close a tenth of the round
/// before the lock, a price is read a tenth of the round after its timestamp (both at least the program's 10 s), a
/// price older than one round is stale, and a round nobody settles within twelve rounds is refunded.
pub fn params(interval: u32) -> Params {
    Params {
        fee_bps: 300,
        min_bet: 1_000,
        max_price_age: interval,
        settle_window: interval * 12,
        report_delay: (interval / 10).max(MIN_REPORT_DELAY),
        bet_cutoff: (interval / 10).max(MIN_BET_CUTOFF),
        settler_reward_bps: 0,
    }
}

/// POSTs a control request to the local server (`/control/<path>`); the error names the path and the server's reason.
pub async fn control(url: &str, path: &str, body: Value) -> Result<Value> {
    let r = reqwest::Client::new()
        .post(format!("{url}control/{path}"))
        .json(&body)
        .send()
        .await
        .with_context(|| format!("control/{path}: no answer"))?;
    let status = r.status();
    let v: Value = r.json().await.with_context(|| format!("control/{path}: answer is not JSON"))?;
    anyhow::ensure!(status.is_success(), "control/{path}: {status} {v}");
    Ok(v)
}

/// Signs with `payer` (first) and `signers`, sends with preflight and waits for confirmation.
pub async fn send(client: &RpcClient, ixs: &[Instruction], payer: &Keypair, signers: &[&Keypair]) -> Result<()> {
    let blockhash = client.get_latest_blockhash().await.context("getLatestBlockhash")?;
    let mut all = vec![payer];
    all.extend_from_slice(signers);
    let tx = Transaction::new_signed_with_payer(ixs, Some(&payer.pubkey()), &all, blockhash);
    client.send_and_confirm_transaction(&tx).await?;
    Ok(())
}

/// The bank's Clock (its slot and unix time), as the program reads it.
pub async fn clock(client: &RpcClient) -> Result<Clock> {
    let data = client.get_account_data(&CLOCK_SYSVAR).await.context("reading the Clock sysvar")?;
    bincode::deserialize(&data).context("decoding the Clock sysvar")
}

/// `UpgradeableLoaderState::ProgramData { slot: 0, upgrade_authority_address: Some(authority) }`, the account the
/// program's `initialize_config` and `initialize_registry` check their signer against.
fn program_data(authority: &Pubkey) -> Result<Vec<u8>> {
    use anchor_lang::solana_program::bpf_loader_upgradeable::UpgradeableLoaderState;
    let state = UpgradeableLoaderState::ProgramData { slot: 0, upgrade_authority_address: Some(*authority) };
    bincode::serialize(&state).context("encoding the ProgramData account")
}

impl LocalSolana {
    /// Starts the server in wall-clock mode and sets the chain up: funded admin, keeper and bettors; the program's
    /// ProgramData (upgrade authority: the admin), Config and registry; the BTC/USD feed and its approval; a SOL and
    /// an SPL-token market (a local mint, the bettors' token accounts funded) with their genesis at the next round
    /// boundary but one of the chain's clock; forecasts enabled on the SOL market; the keeper's keypair file.
    pub async fn start(opts: &Options) -> Result<LocalSolana> {
        anyhow::ensure!(
            opts.interval >= kronos_market::state::MIN_INTERVAL,
            "interval: {} s is below the program's minimum of {} s",
            opts.interval,
            kronos_market::state::MIN_INTERVAL
        );
        anyhow::ensure!(opts.speed >= 1, "speed: must be at least 1");
        let clock_mode = WallClock { speed: opts.speed, ..WallClock::default() };
        let rpc = LocalRpc::start_wall_clock(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), clock_mode)
            .await
            .context("starting the local Solana RPC server")?;
        let url = rpc.url();
        let client = Arc::new(RpcClient::new_with_commitment(url.clone(), CommitmentConfig::confirmed()));
        let (admin, keeper) = (Keypair::new(), Keypair::new());
        let bettor_keys: Vec<Keypair> = (0..opts.bettors).map(|_| Keypair::new()).collect();
        let fund =
            |k: Pubkey, sol: u64| control(&url, "account", json!({ "address": k.to_string(), "lamports": sol * SOL }));
        fund(admin.pubkey(), 1_000).await?;
        fund(keeper.pubkey(), 100).await?;
        for b in &bettor_keys {
            fund(b.pubkey(), 100).await?;
        }
        let loader = anchor_lang::solana_program::bpf_loader_upgradeable::ID;
        let program_data_key = Pubkey::find_program_address(&[PROGRAM_ID.as_ref()], &loader).0;
        let b64 = base64::engine::general_purpose::STANDARD;
        control(
            &url,
            "account",
            json!({ "address": program_data_key.to_string(), "lamports": SOL, "owner": loader.to_string(),
                    "data": b64.encode(program_data(&admin.pubkey())?) }),
        )
        .await?;

        // The feed, as Chainlink's store program writes it, with its first answer a minute before now.
        let now = clock(&client).await?;
        let feed = Keypair::new().pubkey();
        let (feed_owner, feed_writer) = (Keypair::new().pubkey(), Keypair::new().pubkey());
        let first_ts = u32::try_from(now.unix_timestamp - 60).context("the chain's clock is out of u32 range")?;
        control(
            &url,
            "feed",
            json!({ "address": feed.to_string(), "decimals": FEED_DECIMALS, "description": "BTC / USD",
                    "liveLength": 1024, "owner": feed_owner.to_string(), "writer": feed_writer.to_string(),
                    "transmissions": [{ "timestamp": first_ts, "answer": opts.initial_answer.to_string() }] }),
        )
        .await?;

        // Configuration, feed approval and the registry (its cluster id: the bank's genesis hash).
        let a = admin.pubkey();
        let system = anchor_lang::system_program::ID;
        let config = pda(&[CONFIG_SEED]);
        let approval = pda(&[FEED_SEED, feed.as_ref()]);
        let registry = pda(&[kronos_market::registry::REGISTRY_SEED]);
        let cluster = client.get_genesis_hash().await.context("getGenesisHash")?.to_bytes();
        send(
            &client,
            &[
                ixn(
                    acc::InitializeConfig {
                        upgrade_authority: a,
                        config,
                        program_data: program_data_key,
                        system_program: system,
                    },
                    ix::InitializeConfig { admin: a },
                ),
                ixn(acc::ApproveFeed { admin: a, config, feed, approval, system_program: system }, ix::ApproveFeed {}),
                ixn(
                    acc::InitializeRegistry {
                        upgrade_authority: a,
                        registry,
                        program_data: program_data_key,
                        system_program: system,
                    },
                    ix::InitializeRegistry { cluster, reveal_window: REVEAL_WINDOW },
                ),
            ],
            &admin,
            &[],
        )
        .await
        .context("configuring the program (initialize_config, approve_feed, initialize_registry)")?;

        // The stake mint and the bettors' token accounts, funded.
        let mint = Keypair::new();
        // program-test's bank charges the default rent (the server has no getMinimumBalanceForRentExemption).
        let rent = |len: usize| anchor_lang::prelude::Rent::default().minimum_balance(len);
        let mint_rent = rent(spl_token::state::Mint::LEN);
        send(
            &client,
            &[
                solana_system_interface::instruction::create_account(
                    &a,
                    &mint.pubkey(),
                    mint_rent,
                    spl_token::state::Mint::LEN as u64,
                    &spl_token::ID,
                ),
                spl_token::instruction::initialize_mint2(&spl_token::ID, &mint.pubkey(), &a, None, TOKEN_DECIMALS)
                    .context("initialize_mint2")?,
            ],
            &admin,
            &[&mint],
        )
        .await
        .context("creating the stake mint")?;
        let mint = mint.pubkey();
        let account_rent = rent(spl_token::state::Account::LEN);
        let mut bettors = Vec::new();
        for key in bettor_keys {
            let token = Keypair::new();
            send(
                &client,
                &[
                    solana_system_interface::instruction::create_account(
                        &a,
                        &token.pubkey(),
                        account_rent,
                        spl_token::state::Account::LEN as u64,
                        &spl_token::ID,
                    ),
                    spl_token::instruction::initialize_account3(&spl_token::ID, &token.pubkey(), &mint, &key.pubkey())
                        .context("initialize_account3")?,
                    spl_token::instruction::mint_to(
                        &spl_token::ID,
                        &mint,
                        &token.pubkey(),
                        &a,
                        &[],
                        1_000_000 * 10u64.pow(TOKEN_DECIMALS.into()),
                    )
                    .context("mint_to")?,
                ],
                &admin,
                &[&token],
            )
            .await
            .context("creating a bettor's token account")?;
            bettors.push(Bettor { key, token: token.pubkey() });
        }

        // Both markets, their genesis at the second round boundary from now (time for the keeper to start, as the
        // EVM deployment leaves two rounds); forecasts enabled on the SOL one.
        let now = clock(&client).await?.unix_timestamp;
        let interval = i64::from(opts.interval);
        let genesis = (now / interval + 2) * interval;
        let p = params(opts.interval);
        let sol = pda(&[MARKET_SEED, a.as_ref(), &SOL_MARKET_ID.to_le_bytes()]);
        let spl = pda(&[MARKET_SEED, a.as_ref(), &TOKEN_MARKET_ID.to_le_bytes()]);
        let markets = vec![
            MarketRef { name: "sol", key: sol, vault: pda(&[VAULT_SEED, sol.as_ref()]), mint: None },
            MarketRef { name: "spl", key: spl, vault: pda(&[VAULT_SEED, spl.as_ref()]), mint: Some(mint) },
        ];
        let forecast_market = pda(&[kronos_market::registry::FORECAST_MARKET_SEED, sol.as_ref()]);
        send(
            &client,
            &[
                ixn(
                    acc::InitializeMarket {
                        authority: a,
                        market: sol,
                        vault: markets[0].vault,
                        feed,
                        feed_approval: approval,
                        system_program: system,
                    },
                    ix::InitializeMarket { id: SOL_MARKET_ID, genesis, interval: opts.interval, params: p },
                ),
                ixn(
                    acc::InitializeTokenMarket {
                        authority: a,
                        market: spl,
                        mint,
                        vault: markets[1].vault,
                        feed,
                        feed_approval: approval,
                        token_program: spl_token::ID,
                        system_program: system,
                    },
                    ix::InitializeTokenMarket { id: TOKEN_MARKET_ID, genesis, interval: opts.interval, params: p },
                ),
                ixn(
                    acc::EnableForecasts { admin: a, config, market: sol, forecast_market, system_program: system },
                    ix::EnableForecasts {},
                ),
            ],
            &admin,
            &[],
        )
        .await
        .context("creating the markets (initialize_market, initialize_token_market, enable_forecasts)")?;

        std::fs::create_dir_all(&opts.work_dir)
            .with_context(|| format!("creating the work dir {}", opts.work_dir.display()))?;
        let keeper_key_file = opts.work_dir.join("solana-keeper.json");
        write_keypair_file(&keeper, &keeper_key_file)?;
        Ok(LocalSolana {
            rpc,
            client,
            admin,
            keeper,
            keeper_key_file,
            feed,
            markets,
            mint,
            bettors,
            genesis,
            interval: opts.interval,
            params: p,
            forecast_market,
        })
    }

    /// The RPC endpoint.
    pub fn url(&self) -> String {
        self.rpc.url()
    }

    /// The keeper's `[[solana]]` section for this chain (the keys `kronos run` reads).
    pub fn keeper_section(&self, forecasts: bool) -> String {
        let markets = self.markets.iter().map(|m| format!("\"{}\"", m.key)).collect::<Vec<_>>().join(", ");
        format!(
            "[[solana]]\nname = \"solana\"\nrpc = [\"{}\"]\nprogram = \"{}\"\nmarkets = [{markets}]\nkey_file = \"{}\"\nforecasts = {forecasts}\nmax_cu_price_micro_lamports = 50000\nlocal = true\n",
            self.url(),
            PROGRAM_ID,
            self.keeper_key_file.display()
        )
    }
}

/// Writes a keypair as the Solana CLI does (a JSON array of its 64 bytes), readable by its owner only.
pub fn write_keypair_file(k: &Keypair, path: &std::path::Path) -> Result<()> {
    let bytes = serde_json::to_string(&k.to_bytes().to_vec()).context("encoding the keypair")?;
    std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("restricting {}", path.display()))?;
    }
    Ok(())
}
