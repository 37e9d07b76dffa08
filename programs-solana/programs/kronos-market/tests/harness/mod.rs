//! Test harness: the real Anchor entry point run natively by solana-program-test (no SBF toolchain), with the
//! Clock and the Chainlink feed account under the test's control, and the SPL Token program from program-test's
//! genesis.
#![allow(deprecated, dead_code)] // solana-program-test 3.x marks its API "unstable"; it is the supported native path.

use anchor_lang::prelude::Pubkey;
use anchor_lang::solana_program::instruction::Instruction;
use anchor_lang::solana_program::program_pack::Pack;
use anchor_lang::{AccountDeserialize, AnchorDeserialize, Discriminator, InstructionData, Space, ToAccountMetas};
use anchor_spl::token::spl_token;
use kronos_market::chainlink::{self, Transmission};
use kronos_market::state::*;
use kronos_market::{accounts as acc, instruction as ix, ID};
use solana_account::{Account, AccountSharedData};
use solana_keypair::Keypair;
use solana_program_test::{processor, ProgramTest, ProgramTestContext};
use solana_signer::Signer;
use solana_transaction::Transaction;

pub(crate) use kronos_market::error::MarketError;

pub(crate) const SOL: u64 = 1_000_000_000;
pub(crate) const GENESIS: i64 = 1_800_000_000;
pub(crate) const INTERVAL: u32 = 300;

fn entry(
    program_id: &Pubkey,
    accounts: &[anchor_lang::prelude::AccountInfo],
    data: &[u8],
) -> anchor_lang::solana_program::entrypoint::ProgramResult {
    // program-test hands accounts with distinct lifetimes; Anchor's entry wants one.
    // SAFETY: only lifetimes change (same type, same layout), and the slice and every account in it outlive this
    // call, which is the only place the transmuted slice is used.
    let accounts: &[anchor_lang::prelude::AccountInfo] = unsafe { std::mem::transmute(accounts) };
    kronos_market::entry(program_id, accounts, data)
}

/// The tests' default parameters: the shortest report delay and betting cutoff the program allows, no settler reward
/// (tests that check it set one).
pub(crate) fn params() -> Params {
    Params {
        fee_bps: 300,
        min_bet: 1_000,
        max_price_age: 3_600,
        settle_window: 3_600,
        report_delay: MIN_REPORT_DELAY,
        bet_cutoff: MIN_BET_CUTOFF,
        settler_reward_bps: 0,
    }
}

/// The address of the program's ProgramData account (upgradeable loader).
pub(crate) fn program_data_pda() -> Pubkey {
    Pubkey::find_program_address(&[ID.as_ref()], &anchor_lang::solana_program::bpf_loader_upgradeable::ID).0
}
pub(crate) fn config_pda() -> Pubkey {
    Pubkey::find_program_address(&[CONFIG_SEED], &ID).0
}
pub(crate) fn approval_pda(feed: &Pubkey) -> Pubkey {
    Pubkey::find_program_address(&[FEED_SEED, feed.as_ref()], &ID).0
}

/// Chainlink's keys in the tests' feeds (header owner and writer).
pub(crate) fn chainlink_owner() -> Pubkey {
    Pubkey::new_from_array([0x11; 32])
}
pub(crate) fn chainlink_writer() -> Pubkey {
    Pubkey::new_from_array([0x22; 32])
}

/// A transaction that failed, as the code a test compares.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Fail {
    /// A custom program error (Anchor: 100..=5999 framework, 6000+ ours).
    Code(u32),
    Other(String),
}

pub(crate) fn code(e: MarketError) -> Fail {
    Fail::Code(u32::from(e))
}

/// Anchor's framework error codes used in the tests.
pub(crate) mod anchor_code {
    pub(crate) const CONSTRAINT_HAS_ONE: u32 = 2001;
    pub(crate) const CONSTRAINT_SEEDS: u32 = 2006;
    pub(crate) const CONSTRAINT_ADDRESS: u32 = 2012;
    pub(crate) const ACCOUNT_NOT_INITIALIZED: u32 = 3012;
}

pub(crate) struct Env {
    pub ctx: ProgramTestContext,
    pub now: i64,
    slot: u64,
    pub authority: Keypair,
    pub feed: Pubkey,
    pub feed_data: Vec<Transmission>,
    /// The account owner of the feed (the store program for a real feed).
    pub feed_owner: Pubkey,
    /// The header's owner, writer and state.
    pub header_owner: Pubkey,
    pub writer: Pubkey,
    pub state: u8,
    pub live_length: u32,
    pub logs: Vec<String>,
}

impl Env {
    /// A program with its configuration created by the upgrade authority (the tests' authority, also the admin)
    /// and the tests' feed approved.
    pub(crate) async fn new() -> Env {
        let mut env = Env::unconfigured().await;
        let a = env.authority.pubkey();
        env.set_upgrade_authority(Some(a));
        let auth = env.authority.insecure_clone();
        env.send(&[initialize_config(&a, a)], &[&auth]).await.unwrap();
        let feed = env.feed;
        env.send(&[approve_feed(&a, feed)], &[&auth]).await.unwrap();
        env
    }

    /// A freshly deployed program: no configuration yet, no ProgramData account written.
    pub(crate) async fn unconfigured() -> Env {
        let mut pt = ProgramTest::new("kronos_market", ID, processor!(entry));
        pt.prefer_bpf(false);
        let ctx = pt.start_with_context().await;
        let mut env = Env {
            ctx,
            now: GENESIS - 10,
            slot: 1,
            authority: Keypair::new(),
            feed: Pubkey::new_unique(),
            feed_data: vec![],
            feed_owner: CHAINLINK_STORE,
            header_owner: chainlink_owner(),
            writer: chainlink_writer(),
            state: 0,
            live_length: 64,
            logs: vec![],
        };
        let a = env.authority.pubkey();
        env.fund(&a, 100 * SOL);
        env.push_price(GENESIS - 60, 6_500_000_000_000);
        env.write_feed();
        env
    }

    /// Writes the ProgramData account of the upgradeable loader for this program (variant 3, slot, authority), as a
    /// deployed program has it.
    pub(crate) fn set_upgrade_authority(&mut self, authority: Option<Pubkey>) {
        let mut data = vec![3, 0, 0, 0];
        data.extend_from_slice(&0u64.to_le_bytes());
        match authority {
            Some(a) => {
                data.push(1);
                data.extend_from_slice(a.as_ref());
            }
            None => data.extend_from_slice(&[0; 33]),
        }
        let acct = Account {
            lamports: SOL,
            data,
            owner: anchor_lang::solana_program::bpf_loader_upgradeable::ID,
            executable: false,
            rent_epoch: 0,
        };
        self.ctx.set_account(&program_data_pda(), &AccountSharedData::from(acct));
    }

    /// Sets the clock.
    pub(crate) async fn at(&mut self, ts: i64) {
        self.now = ts;
        let mut c: anchor_lang::prelude::Clock = self.ctx.banks_client.get_sysvar().await.unwrap();
        c.unix_timestamp = ts;
        self.ctx.set_sysvar(&c);
    }

    /// Appends a Chainlink transmission (not yet written: call [`Env::write_feed`]).
    pub(crate) fn push_price(&mut self, ts: i64, answer: i128) {
        let slot = self.feed_data.len() as u64 + 1;
        self.feed_data.push(Transmission { slot, timestamp: ts as u32, answer });
    }

    /// Writes the feed account as the store program would have left it.
    pub(crate) fn write_feed(&mut self) {
        self.write_feed_with(8);
    }

    pub(crate) fn write_feed_with(&mut self, decimals: u8) {
        let feed = self.feed;
        self.write_feed_at(feed, decimals);
    }

    /// Writes a feed account at `key` with this env's history and header fields.
    pub(crate) fn write_feed_at(&mut self, key: Pubkey, decimals: u8) {
        let meta = chainlink::Meta {
            decimals,
            state: self.state,
            owner: self.header_owner.to_bytes(),
            writer: self.writer.to_bytes(),
        };
        let data = chainlink::encode_with(&meta, "BTC / USD", self.live_length, &self.feed_data);
        let acct = Account { lamports: 10 * SOL, data, owner: self.feed_owner, executable: false, rent_epoch: 0 };
        self.ctx.set_account(&key, &AccountSharedData::from(acct));
    }

    pub(crate) fn fund(&mut self, to: &Pubkey, lamports: u64) {
        let acct = Account {
            lamports,
            data: vec![],
            owner: anchor_lang::system_program::ID,
            executable: false,
            rent_epoch: 0,
        };
        self.ctx.set_account(to, &AccountSharedData::from(acct));
    }

    pub(crate) async fn user(&mut self, lamports: u64) -> Keypair {
        let k = Keypair::new();
        self.fund(&k.pubkey(), lamports);
        k
    }

    /// Sends `ixs` signed by `signers` (the first pays), in a fresh slot so that identical retries are new
    /// transactions, at the current clock.
    pub(crate) async fn send(&mut self, ixs: &[Instruction], signers: &[&Keypair]) -> Result<(), Fail> {
        self.slot += 1;
        self.ctx.warp_to_slot(self.slot).unwrap();
        let now = self.now;
        self.at(now).await;
        let hash = self.ctx.banks_client.get_latest_blockhash().await.unwrap();
        let tx = Transaction::new_signed_with_payer(ixs, Some(&signers[0].pubkey()), signers, hash);
        let res = self.ctx.banks_client.process_transaction_with_metadata(tx).await;
        let res = match res {
            Ok(r) => r,
            Err(e) => return Err(Fail::Other(format!("{e:?}"))),
        };
        if let Some(m) = &res.metadata {
            self.logs = m.log_messages.clone();
        }
        match res.result {
            Ok(()) => Ok(()),
            Err(solana_transaction_error::TransactionError::InstructionError(
                _,
                solana_instruction::error::InstructionError::Custom(c),
            )) => Err(Fail::Code(c)),
            Err(e) => Err(Fail::Other(format!("{e:?} {:#?}", self.logs))),
        }
    }

    /// Events of type `T` in the last successful transaction's logs.
    pub(crate) fn events<T: AnchorDeserialize + Discriminator>(&self) -> Vec<T> {
        use anchor_lang::__private::base64::{engine::general_purpose::STANDARD, Engine};
        self.logs
            .iter()
            .filter_map(|l| l.strip_prefix("Program data: ").or_else(|| l.strip_prefix("Program log: Program data: ")))
            .filter_map(|b| STANDARD.decode(b).ok())
            .filter(|d| d.starts_with(T::DISCRIMINATOR))
            .filter_map(|d| T::deserialize(&mut &d[T::DISCRIMINATOR.len()..]).ok())
            .collect()
    }

    pub(crate) async fn account<T: AccountDeserialize>(&mut self, key: Pubkey) -> Option<T> {
        let a = self.ctx.banks_client.get_account(key).await.unwrap()?;
        Some(T::try_deserialize(&mut a.data.as_slice()).unwrap())
    }

    pub(crate) async fn lamports(&mut self, key: Pubkey) -> u64 {
        self.ctx.banks_client.get_balance(key).await.unwrap()
    }

    pub(crate) async fn rent(&mut self, len: usize) -> u64 {
        self.ctx.banks_client.get_rent().await.unwrap().minimum_balance(len)
    }

    pub(crate) async fn exists(&mut self, key: Pubkey) -> bool {
        self.ctx.banks_client.get_account(key).await.unwrap().is_some_and(|a| a.lamports > 0)
    }

    // ---- SPL token ----

    pub(crate) async fn create_mint(&mut self, decimals: u8) -> Pubkey {
        let mint = Keypair::new();
        let rent = self.rent(spl_token::state::Mint::LEN).await;
        let payer = self.authority.insecure_clone();
        let ixs = [
            solana_system_interface::instruction::create_account(
                &payer.pubkey(),
                &mint.pubkey(),
                rent,
                spl_token::state::Mint::LEN as u64,
                &spl_token::ID,
            ),
            spl_token::instruction::initialize_mint2(&spl_token::ID, &mint.pubkey(), &payer.pubkey(), None, decimals)
                .unwrap(),
        ];
        self.send(&ixs, &[&payer, &mint]).await.unwrap();
        mint.pubkey()
    }

    /// A token account for `owner` holding `amount` freshly minted.
    pub(crate) async fn token_account(&mut self, mint: Pubkey, owner: &Pubkey, amount: u64) -> Pubkey {
        let acct = Keypair::new();
        let rent = self.rent(spl_token::state::Account::LEN).await;
        let payer = self.authority.insecure_clone();
        let mut ixs = vec![
            solana_system_interface::instruction::create_account(
                &payer.pubkey(),
                &acct.pubkey(),
                rent,
                spl_token::state::Account::LEN as u64,
                &spl_token::ID,
            ),
            spl_token::instruction::initialize_account3(&spl_token::ID, &acct.pubkey(), &mint, owner).unwrap(),
        ];
        if amount > 0 {
            ixs.push(
                spl_token::instruction::mint_to(&spl_token::ID, &mint, &acct.pubkey(), &payer.pubkey(), &[], amount)
                    .unwrap(),
            );
        }
        self.send(&ixs, &[&payer, &acct]).await.unwrap();
        acct.pubkey()
    }

    pub(crate) async fn token_balance(&mut self, acct: Pubkey) -> u64 {
        let a = self.ctx.banks_client.get_account(acct).await.unwrap().unwrap();
        spl_token::state::Account::unpack(&a.data).unwrap().amount
    }
}

// ---- addresses and instructions ----

pub(crate) fn market_pda(creator: &Pubkey, id: u64) -> Pubkey {
    Pubkey::find_program_address(&[MARKET_SEED, creator.as_ref(), &id.to_le_bytes()], &ID).0
}
pub(crate) fn vault_pda(market: &Pubkey) -> Pubkey {
    Pubkey::find_program_address(&[VAULT_SEED, market.as_ref()], &ID).0
}
pub(crate) fn round_pda(market: &Pubkey, epoch: u64) -> Pubkey {
    Pubkey::find_program_address(&[ROUND_SEED, market.as_ref(), &epoch.to_le_bytes()], &ID).0
}
pub(crate) fn position_pda(round: &Pubkey, user: &Pubkey) -> Pubkey {
    Pubkey::find_program_address(&[POSITION_SEED, round.as_ref(), user.as_ref()], &ID).0
}

fn ixn(accounts: impl ToAccountMetas, data: impl InstructionData) -> Instruction {
    Instruction { program_id: ID, accounts: accounts.to_account_metas(None), data: data.data() }
}

pub(crate) fn initialize_config(upgrade_authority: &Pubkey, admin: Pubkey) -> Instruction {
    ixn(
        acc::InitializeConfig {
            upgrade_authority: *upgrade_authority,
            config: config_pda(),
            program_data: program_data_pda(),
            system_program: anchor_lang::system_program::ID,
        },
        ix::InitializeConfig { admin },
    )
}
pub(crate) fn approve_feed(admin: &Pubkey, feed: Pubkey) -> Instruction {
    ixn(
        acc::ApproveFeed {
            admin: *admin,
            config: config_pda(),
            feed,
            approval: approval_pda(&feed),
            system_program: anchor_lang::system_program::ID,
        },
        ix::ApproveFeed {},
    )
}
pub(crate) fn revoke_feed(admin: &Pubkey, feed: Pubkey) -> Instruction {
    ixn(acc::RevokeFeed { admin: *admin, config: config_pda(), approval: approval_pda(&feed) }, ix::RevokeFeed {})
}
pub(crate) fn propose_admin(admin: &Pubkey, proposed: Pubkey) -> Instruction {
    ixn(acc::ConfigAdmin { admin: *admin, config: config_pda() }, ix::ProposeAdmin { proposed })
}
pub(crate) fn accept_admin(new_admin: &Pubkey) -> Instruction {
    ixn(acc::AcceptAdmin { new_admin: *new_admin, config: config_pda() }, ix::AcceptAdmin {})
}

/// A market as the tests drive it.
#[derive(Clone, Copy)]
pub(crate) struct M {
    pub key: Pubkey,
    pub vault: Pubkey,
    pub feed: Pubkey,
    pub authority: Pubkey,
    pub mint: Option<Pubkey>,
}

pub(crate) fn init_sol(authority: &Pubkey, id: u64, feed: Pubkey, p: Params) -> (M, Instruction) {
    let key = market_pda(authority, id);
    let vault = vault_pda(&key);
    let i = ixn(
        acc::InitializeMarket {
            authority: *authority,
            market: key,
            vault,
            feed,
            feed_approval: approval_pda(&feed),
            system_program: anchor_lang::system_program::ID,
        },
        ix::InitializeMarket { id, genesis: GENESIS, interval: INTERVAL, params: p },
    );
    (M { key, vault, feed, authority: *authority, mint: None }, i)
}

pub(crate) fn init_token(authority: &Pubkey, id: u64, feed: Pubkey, mint: Pubkey, p: Params) -> (M, Instruction) {
    let key = market_pda(authority, id);
    let vault = vault_pda(&key);
    let i = ixn(
        acc::InitializeTokenMarket {
            authority: *authority,
            market: key,
            mint,
            vault,
            feed,
            feed_approval: approval_pda(&feed),
            token_program: spl_token::ID,
            system_program: anchor_lang::system_program::ID,
        },
        ix::InitializeTokenMarket { id, genesis: GENESIS, interval: INTERVAL, params: p },
    );
    (M { key, vault, feed, authority: *authority, mint: Some(mint) }, i)
}

impl M {
    pub(crate) fn times(&self, epoch: u64) -> (i64, i64, i64) {
        let s = GENESIS + epoch as i64 * INTERVAL as i64;
        (s, s + INTERVAL as i64, s + 2 * INTERVAL as i64)
    }
    pub(crate) fn round(&self, epoch: u64) -> Pubkey {
        round_pda(&self.key, epoch)
    }
    pub(crate) fn position(&self, epoch: u64, user: &Pubkey) -> Pubkey {
        position_pda(&self.round(epoch), user)
    }
    pub(crate) fn start(&self, payer: &Pubkey, epoch: u64) -> Instruction {
        ixn(
            acc::StartRound {
                payer: *payer,
                market: self.key,
                round: self.round(epoch),
                feed: self.feed,
                system_program: anchor_lang::system_program::ID,
            },
            ix::StartRound { epoch },
        )
    }
    /// A bet accepting any fee up to the program's cap.
    pub(crate) fn bet(
        &self,
        user: &Pubkey,
        epoch: u64,
        side: Side,
        amount: u64,
        user_token: Option<Pubkey>,
    ) -> Instruction {
        self.bet_with(user, epoch, self.round(epoch), side, amount, user_token)
    }
    /// A bet refused if the round's fee is above `max_fee_bps`.
    pub(crate) fn bet_max_fee(
        &self,
        user: &Pubkey,
        epoch: u64,
        side: Side,
        amount: u64,
        max_fee_bps: u16,
    ) -> Instruction {
        let mut i = self.bet(user, epoch, side, amount, None);
        i.data = ix::Bet { epoch, side, amount, max_fee_bps }.data();
        i
    }
    /// A bet naming `round` as its round account (tests pass wrong ones).
    pub(crate) fn bet_with(
        &self,
        user: &Pubkey,
        epoch: u64,
        round: Pubkey,
        side: Side,
        amount: u64,
        user_token: Option<Pubkey>,
    ) -> Instruction {
        ixn(
            acc::PlaceBet {
                user: *user,
                market: self.key,
                round,
                position: position_pda(&round, user),
                vault: self.vault,
                user_token,
                token_program: self.mint.map(|_| spl_token::ID),
                system_program: anchor_lang::system_program::ID,
            },
            ix::Bet { epoch, side, amount, max_fee_bps: MAX_FEE_BPS },
        )
    }
    pub(crate) fn lock(&self, epoch: u64) -> Instruction {
        ixn(
            acc::LockRound {
                market: self.key,
                round: self.round(epoch),
                prev_round: self.round(epoch.wrapping_sub(1)),
                feed: self.feed,
            },
            ix::LockRound { epoch },
        )
    }
    /// Settled by `settler` (paid in lamports on a SOL market; on a token market see [`M::settle_token`]).
    pub(crate) fn settle(&self, settler: &Pubkey, epoch: u64) -> Instruction {
        self.settle_token(settler, epoch, None)
    }
    pub(crate) fn settle_token(&self, settler: &Pubkey, epoch: u64, settler_token: Option<Pubkey>) -> Instruction {
        ixn(
            acc::SettleRound {
                settler: *settler,
                market: self.key,
                round: self.round(epoch),
                prev_round: self.round(epoch.wrapping_sub(1)),
                next_round: self.round(epoch.wrapping_add(1)),
                feed: self.feed,
                vault: self.vault,
                settler_token,
                token_program: self.mint.map(|_| spl_token::ID),
            },
            ix::SettleRound { epoch },
        )
    }
    fn claim_ix(&self, user: &Pubkey, epochs: &[u64], user_token: Option<Pubkey>, refund: bool) -> Instruction {
        let mut metas = acc::Claim {
            user: *user,
            market: self.key,
            vault: self.vault,
            user_token,
            token_program: self.mint.map(|_| spl_token::ID),
        }
        .to_account_metas(None);
        for e in epochs {
            metas.push(anchor_lang::solana_program::instruction::AccountMeta::new(self.round(*e), false));
            metas.push(anchor_lang::solana_program::instruction::AccountMeta::new(self.position(*e, user), false));
        }
        let data = if refund { ix::Refund {}.data() } else { ix::Claim {}.data() };
        Instruction { program_id: ID, accounts: metas, data }
    }
    pub(crate) fn claim(&self, user: &Pubkey, epochs: &[u64], user_token: Option<Pubkey>) -> Instruction {
        self.claim_ix(user, epochs, user_token, false)
    }
    pub(crate) fn refund(&self, user: &Pubkey, epochs: &[u64], user_token: Option<Pubkey>) -> Instruction {
        self.claim_ix(user, epochs, user_token, true)
    }
    pub(crate) fn close_position(&self, user: &Pubkey, epoch: u64) -> Instruction {
        ixn(
            acc::ClosePosition {
                user: *user,
                market: self.key,
                round: self.round(epoch),
                position: self.position(epoch, user),
            },
            ix::ClosePosition { epoch },
        )
    }
    pub(crate) fn close_round(&self, payer: &Pubkey, epoch: u64) -> Instruction {
        ixn(
            acc::CloseRound {
                market: self.key,
                round: self.round(epoch),
                payer: *payer,
                prev_round: self.round(epoch.wrapping_sub(1)),
                next_round: self.round(epoch.wrapping_add(1)),
            },
            ix::CloseRound { epoch },
        )
    }
    pub(crate) fn set_paused(&self, authority: &Pubkey, paused: bool) -> Instruction {
        ixn(acc::Admin { authority: *authority, market: self.key }, ix::SetPaused { paused })
    }
    pub(crate) fn update_params(&self, authority: &Pubkey, params: Params) -> Instruction {
        ixn(acc::Admin { authority: *authority, market: self.key }, ix::UpdateParams { params })
    }
    pub(crate) fn propose_authority(&self, authority: &Pubkey, proposed: Pubkey) -> Instruction {
        ixn(acc::Admin { authority: *authority, market: self.key }, ix::ProposeAuthority { proposed })
    }
    pub(crate) fn accept_authority(&self, new_authority: &Pubkey) -> Instruction {
        ixn(acc::AcceptAuthority { new_authority: *new_authority, market: self.key }, ix::AcceptAuthority {})
    }
    pub(crate) fn withdraw(
        &self,
        authority: &Pubkey,
        to: Pubkey,
        to_token: Option<Pubkey>,
        amount: u64,
    ) -> Instruction {
        ixn(
            acc::WithdrawTreasury {
                authority: *authority,
                market: self.key,
                vault: self.vault,
                to,
                to_token,
                token_program: self.mint.map(|_| spl_token::ID),
            },
            ix::WithdrawTreasury { amount },
        )
    }
}

/// What the vault holds above its rent-exempt floor (SOL) or its token balance, and what the program owes from it:
/// every round's unpaid stakes (open, locked or cancelled) or unpaid winnings (settled), plus the treasury.
pub(crate) async fn audit(env: &mut Env, m: &M, epochs: impl IntoIterator<Item = u64>) -> (u64, u64) {
    let market: Market = env.account(m.key).await.unwrap();
    let mut owed = market.treasury_owed as u128;
    for e in epochs {
        let Some(r) = env.account::<Round>(m.round(e)).await else { continue };
        let base = match r.status {
            RoundStatus::Settled => r.reward_amount,
            _ => r.up_amount + r.down_amount,
        };
        assert!(r.paid <= base, "epoch {e}: paid {} of {base}", r.paid);
        owed += (base - r.paid) as u128;
    }
    let held = match m.mint {
        None => {
            let len = 8 + SolVault::INIT_SPACE;
            let floor = env.rent(len).await;
            env.lamports(m.vault).await - floor
        }
        Some(_) => env.token_balance(m.vault).await,
    };
    (held, owed as u64)
}

// ---- the forecast registry ----

pub(crate) use kronos_market::registry::{commitment_hash, Forecast, RecordView, TrackRecord};

/// The tests' cluster id (a genesis hash) and reveal window.
pub(crate) const CLUSTER: [u8; 32] = [0xC1; 32];
pub(crate) const REVEAL_WINDOW: u32 = 86_400;

pub(crate) fn registry_pda() -> Pubkey {
    Pubkey::find_program_address(&[kronos_market::registry::REGISTRY_SEED], &ID).0
}
pub(crate) fn commitment_pda(market: &Pubkey, epoch: u64, publisher: &Pubkey) -> Pubkey {
    Pubkey::find_program_address(
        &[kronos_market::registry::COMMITMENT_SEED, market.as_ref(), &epoch.to_le_bytes(), publisher.as_ref()],
        &ID,
    )
    .0
}
pub(crate) fn forecast_market_pda(market: &Pubkey) -> Pubkey {
    Pubkey::find_program_address(&[kronos_market::registry::FORECAST_MARKET_SEED, market.as_ref()], &ID).0
}
pub(crate) fn record_pda(publisher: &Pubkey) -> Pubkey {
    Pubkey::find_program_address(&[kronos_market::registry::RECORD_SEED, publisher.as_ref()], &ID).0
}

pub(crate) fn initialize_registry(upgrade_authority: &Pubkey, cluster: [u8; 32], reveal_window: u32) -> Instruction {
    ixn(
        acc::InitializeRegistry {
            upgrade_authority: *upgrade_authority,
            registry: registry_pda(),
            program_data: program_data_pda(),
            system_program: anchor_lang::system_program::ID,
        },
        ix::InitializeRegistry { cluster, reveal_window },
    )
}

/// A forecast with a salt derived from `seed`.
pub(crate) fn forecast(up: bool, probability_up_bps: u16, seed: u8) -> Forecast {
    Forecast { up, probability_up_bps, salt: [seed; 32] }
}

impl M {
    /// The commitment `publisher` makes for `f` on this market's round `epoch` under the tests' cluster id.
    pub(crate) fn commitment_of(&self, publisher: &Pubkey, epoch: u64, f: &Forecast) -> [u8; 32] {
        commitment_hash(&CLUSTER, publisher, &self.key, epoch, f)
    }
    /// Commits `commitment` naming `round` as the round account (tests pass wrong ones).
    pub(crate) fn commit_with(
        &self,
        publisher: &Pubkey,
        epoch: u64,
        round: Pubkey,
        commitment: [u8; 32],
    ) -> Instruction {
        ixn(
            acc::Commit {
                publisher: *publisher,
                registry: registry_pda(),
                market: self.key,
                round,
                forecast_market: forecast_market_pda(&self.key),
                commitment: commitment_pda(&self.key, epoch, publisher),
                record: record_pda(publisher),
                system_program: anchor_lang::system_program::ID,
            },
            ix::Commit { epoch, commitment },
        )
    }
    pub(crate) fn commit(&self, publisher: &Pubkey, epoch: u64, f: &Forecast) -> Instruction {
        self.commit_with(publisher, epoch, self.round(epoch), self.commitment_of(publisher, epoch, f))
    }
    pub(crate) fn reveal_with(&self, publisher: &Pubkey, epoch: u64, round: Pubkey, f: &Forecast) -> Instruction {
        ixn(
            acc::Reveal {
                publisher: *publisher,
                registry: registry_pda(),
                market: self.key,
                round,
                commitment: commitment_pda(&self.key, epoch, publisher),
                record: record_pda(publisher),
            },
            ix::Reveal { epoch, up: f.up, probability_up_bps: f.probability_up_bps, salt: f.salt },
        )
    }
    pub(crate) fn reveal(&self, publisher: &Pubkey, epoch: u64, f: &Forecast) -> Instruction {
        self.reveal_with(publisher, epoch, self.round(epoch), f)
    }
    /// The Config admin enables this market for forecasts.
    pub(crate) fn enable_forecasts(&self, admin: &Pubkey) -> Instruction {
        ixn(
            acc::EnableForecasts {
                admin: *admin,
                config: config_pda(),
                market: self.key,
                forecast_market: forecast_market_pda(&self.key),
                system_program: anchor_lang::system_program::ID,
            },
            ix::EnableForecasts {},
        )
    }
    /// `signer` closes `publisher`'s commitment on round `epoch` (naming the publisher's accounts).
    pub(crate) fn close_commitment(&self, signer: &Pubkey, publisher: &Pubkey, epoch: u64) -> Instruction {
        ixn(
            acc::CloseCommitment {
                publisher: *signer,
                commitment: commitment_pda(&self.key, epoch, publisher),
                record: record_pda(publisher),
            },
            ix::CloseCommitment {},
        )
    }
    pub(crate) fn expire(&self, publisher: &Pubkey, epoch: u64) -> Instruction {
        ixn(
            acc::Expire { commitment: commitment_pda(&self.key, epoch, publisher), record: record_pda(publisher) },
            ix::Expire {},
        )
    }
}

pub(crate) fn read_track_record(publisher: &Pubkey) -> Instruction {
    ixn(acc::ReadTrackRecord { record: record_pda(publisher) }, ix::TrackRecord {})
}

impl Env {
    /// [`Env::new`] with the registry created by the upgrade authority.
    pub(crate) async fn with_registry() -> Env {
        let mut env = Env::new().await;
        let a = env.authority.insecure_clone();
        env.send(&[initialize_registry(&a.pubkey(), CLUSTER, REVEAL_WINDOW)], &[&a]).await.unwrap();
        env
    }

    /// The publisher's track record now, read from the account and applied at the current clock.
    pub(crate) async fn record(&mut self, publisher: &Pubkey) -> RecordView {
        let now = self.now;
        self.account::<TrackRecord>(record_pda(publisher)).await.map(|r| r.view(now)).unwrap_or_default()
    }

    /// The publisher's track record as the `track_record` instruction returns it (simulated, at the current clock).
    pub(crate) async fn simulate_record(&mut self, publisher: &Pubkey) -> RecordView {
        self.slot += 1;
        self.ctx.warp_to_slot(self.slot).unwrap();
        let now = self.now;
        self.at(now).await;
        let payer = self.authority.insecure_clone();
        let hash = self.ctx.banks_client.get_latest_blockhash().await.unwrap();
        let tx =
            Transaction::new_signed_with_payer(&[read_track_record(publisher)], Some(&payer.pubkey()), &[&payer], hash);
        let sim = self.ctx.banks_client.simulate_transaction(tx).await.unwrap();
        sim.result.unwrap().unwrap();
        let data = sim.simulation_details.unwrap().return_data.expect("track_record sets return data");
        assert_eq!(data.program_id, ID);
        RecordView::deserialize(&mut data.data.as_slice()).unwrap()
    }
}
