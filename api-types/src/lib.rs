//! The keeper's HTTP API on the wire: the query and response types of every endpoint. The keeper serialises them
//! (`keeper/src/api.rs`; `keeper/src/web.rs` still has its own structs of the same shape for `/api/chains` and
//! `/api/checkpoints`), the Telegram bot reads them with [`parse`], and the dApp (`web/src`) reads the same JSON.
//!
//! | endpoint | query | answer |
//! |---|---|---|
//! | `GET /health` | — | [`Health`] (HTTP 503 when degraded) |
//! | `GET /api/markets` | — | [`Markets`] |
//! | `GET /api/rounds` | [`RoundsQuery`] | `Vec<`[`Round`]`>` |
//! | `GET /api/predictions` | [`PredictionsQuery`] | [`Predictions`] |
//! | `GET /api/chains` | — | [`Chains`] |
//! | `GET /api/checkpoints` | [`CheckpointsQuery`] | `Vec<`[`Checkpoint`]`>` |
//! | `GET /ws` | [`WsQuery`] | one `kronos_common::Signal` per message (`{"at_ms":…,"source":…,"type":…,…}`), and the hub's `{"type":"lagged","lost":n}` note |
//!
//! Fields keep the names, order and encodings the API has always had: amounts in wei and prices as decimal strings
//! (exact), counts and times as integers. The bodies the keeper used to build as JSON values (all but `/api/rounds`
//! and `/api/checkpoints`) had their keys sorted at every level, so those types declare their fields in alphabetical
//! order; rounds and checkpoints keep the order of the store's rows. Words with a fixed set of values (a round's state, an outcome, a lease
//! role) are enums whose serde names are the wire strings. Unknown fields are ignored, so a keeper may add one
//! without breaking older readers; a missing field or a value outside its enum is an error that names the endpoint
//! and the field ([`ApiError`]).

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Defines `FromStr` and `Display` for a unit enum through its serde names, so the wire strings are written once (in the
/// `rename_all` of its derive).
macro_rules! wire_enum {
    ($($t:ident),* $(,)?) => {$(
        impl FromStr for $t {
            type Err = UnknownValue;
            fn from_str(s: &str) -> Result<$t, UnknownValue> {
                use serde::de::IntoDeserializer;
                let d: serde::de::value::StrDeserializer<'_, serde::de::value::Error> = s.into_deserializer();
                $t::deserialize(d).map_err(|_| UnknownValue { what: stringify!($t), value: s.to_string() })
            }
        }

        /// The wire string.
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match serde_json::to_value(self) {
                    Ok(serde_json::Value::String(s)) => f.write_str(&s),
                    _ => Err(fmt::Error),
                }
            }
        }
    )*};
}

/// A string that is none of an enum's wire values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownValue {
    /// The enum's name (`RoundState`).
    pub what: &'static str,
    pub value: String,
}

impl fmt::Display for UnknownValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} is none of the values of {}", self.value, self.what)
    }
}

impl std::error::Error for UnknownValue {}

// ---------------------------------------------------------------------------------------------------------------
// GET /health

/// `GET /health`: the keeper's health (HTTP 200 when `status` is `ok`, 503 when `degraded`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Health {
    /// Each chain by its catalogue key.
    pub chains: BTreeMap<String, ChainHealth>,
    /// Each market's lease as this keeper sees it.
    pub markets: Vec<MarketLease>,
    pub status: HealthStatus,
    /// Whether the store answers.
    pub store: bool,
}

/// `ok` when the store answers and every chain is healthy, else `degraded`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthStatus {
    Ok,
    Degraded,
}

/// One chain in [`Health`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainHealth {
    /// Every RPC endpoint by host, with whether it is down and its last error.
    pub endpoints: Vec<EndpointStatus>,
    pub head_block: u64,
    /// The head block's timestamp (s).
    pub head_time: u64,
    pub healthy: bool,
    /// Wall clock minus the head block's timestamp (0 when the chain runs ahead, as accelerated local chains do).
    pub lag_s: u64,
    pub last_error: Option<String>,
    pub last_success_ms: u64,
    /// The index of the RPC endpoint in use.
    pub rpc_endpoint: u64,
}

/// An RPC endpoint by host (URLs may carry API keys).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointStatus {
    pub endpoint: String,
    pub last_error: Option<String>,
    pub up: bool,
}

/// A market's lease in [`Health`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MarketLease {
    pub chain: String,
    pub lease: Lease,
    pub market: u64,
}

/// A market's role as this keeper sees it (several keepers on one PostgreSQL store).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub epoch: i64,
    /// The last time this keeper lost the lease, and why.
    pub last_loss: Option<String>,
    /// The holder as last seen (this keeper when leading).
    pub leader: Option<String>,
    pub role: LeaseRole,
    /// Start of the leader's term on the database's clock (ms).
    pub since_ms: i64,
}

/// `single` (a SQLite store: no other keeper), `leader` or `standby` (another keeper leads).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeaseRole {
    #[default]
    Single,
    Leader,
    Standby,
}

// ---------------------------------------------------------------------------------------------------------------
// GET /api/markets

/// `GET /api/markets`: the markets in the store and each market driver's live figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Markets {
    pub live: Vec<LiveMarket>,
    pub markets: Vec<Market>,
}

/// A market as the keeper's store knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Market {
    pub chain: String,
    pub contract: String,
    pub feed: String,
    pub feed_decimals: i64,
    pub genesis: i64,
    pub interval_s: i64,
    pub market_id: i64,
    pub max_price_age_s: i64,
    pub pair: Option<String>,
    pub sequencer: Option<String>,
    pub settle_window_s: i64,
    /// The stake token; the zero address for the chain's native coin.
    pub token: String,
}

/// A market driver's live figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LiveMarket {
    /// The round taking bets.
    pub betting_epoch: u64,
    pub cancelled: u64,
    pub chain: String,
    /// Settlement delay in blocks of this keeper's recent executes.
    pub delays: Vec<u64>,
    /// Gas used by the same executes.
    pub execute_gas: Vec<u64>,
    /// The last round's close and lock prices, decimal strings.
    pub last_close_price: Option<String>,
    pub last_lock_price: Option<String>,
    /// The latest forecast's P(up); `null` unless the request carried the API token (sealed until its reveal).
    pub last_p_up: Option<f64>,
    /// The last round's result in words (`#12 up`, `#13 refund (one_sided_pool)`), for people.
    pub last_result: String,
    pub lease: Lease,
    pub market: u64,
    pub missed: u64,
    pub next_checkpoint: u64,
    pub pair: String,
    /// The pools of round `pool_epoch` (the round taking bets when they were read), in the stake token's smallest
    /// unit; empty before the first read.
    pub pool_down_wei: String,
    /// The round the pools belong to; `null` before the first read (absent from older keepers' answers).
    #[serde(default)]
    pub pool_epoch: Option<u64>,
    pub pool_up_wei: String,
    pub settled: u64,
}

// ---------------------------------------------------------------------------------------------------------------
// GET /api/rounds

/// `GET /api/rounds` query: one chain, one market, at most `limit` rounds (1..=1000, default 50), newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoundsQuery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub market: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<i64>,
}

/// One element of `GET /api/rounds`: a round's latest known state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Round {
    pub chain: String,
    pub market_id: i64,
    pub epoch: i64,
    pub state: RoundState,
    /// Decimal strings.
    pub lock_price: Option<String>,
    pub close_price: Option<String>,
    pub outcome: Option<Outcome>,
    /// Why a cancelled round was refunded.
    pub reason: Option<CancelReason>,
    pub up_wei: String,
    pub down_wei: String,
    pub reward_wei: Option<String>,
    pub treasury_fee_wei: Option<String>,
    pub delay_blocks: Option<i64>,
}

/// Where a round stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RoundState {
    Locked,
    Settled,
    Cancelled,
}

/// A round's outcome (`none` until known, and for some refunds). The one outcome type of the project: the signals
/// (`kronos_common::signals::Outcome`) re-export it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// No usable outcome (unusable price, expired).
    None,
    Up,
    Down,
    Tie,
}

impl Outcome {
    /// The stored and API form (the serde form too): `up`, `down`, `tie`, `none`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Outcome::Up => "up",
            Outcome::Down => "down",
            Outcome::Tie => "tie",
            Outcome::None => "none",
        }
    }
}

/// An `IKronosMarket.Outcome` value that the enum does not have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnknownOutcome(pub u8);

impl fmt::Display for UnknownOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IKronosMarket.Outcome has no value {}", self.0)
    }
}

impl std::error::Error for UnknownOutcome {}

/// From the contracts' `IKronosMarket.Outcome` (`None`, `Up`, `Down`, `Tie`: 0 to 3), as events and views give it.
impl TryFrom<u8> for Outcome {
    type Error = UnknownOutcome;

    fn try_from(v: u8) -> Result<Self, UnknownOutcome> {
        match v {
            0 => Ok(Outcome::None),
            1 => Ok(Outcome::Up),
            2 => Ok(Outcome::Down),
            3 => Ok(Outcome::Tie),
            v => Err(UnknownOutcome(v)),
        }
    }
}

/// Why a round was refunded (the contract's `CancelReason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CancelReason {
    LockPriceUnusable,
    ClosePriceUnusable,
    Tie,
    OneSidedPool,
    Expired,
    /// A reason code this keeper does not know.
    Unknown,
}

// ---------------------------------------------------------------------------------------------------------------
// GET /api/predictions

/// `GET /api/predictions` query: one chain (default: every chain), at most `limit` per chain (1..=1000, default 50).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PredictionsQuery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<i64>,
}

/// `GET /api/predictions`: the newest predictions and every track record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Predictions {
    pub predictions: Vec<Prediction>,
    pub track_records: Vec<TrackRecord>,
}

/// A committed forecast; its value only once revealed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Prediction {
    /// The Brier score (×10⁴) once scored.
    pub brier: Option<i64>,
    pub chain: String,
    pub commitment: String,
    pub committed: bool,
    pub epoch: i64,
    pub hit: Option<bool>,
    pub market: i64,
    pub outcome: Option<Outcome>,
    /// P(up) in basis points; `null` until the reveal.
    pub p_up_bps: Option<i64>,
    /// Who committed it (`0x…`): the registry's key of the commitment, with market and epoch (absent from older
    /// keepers' answers).
    #[serde(default)]
    pub publisher: Option<String>,
    /// The reveal's transaction once revealed: its receipt holds the registry's `Revealed` event, so a reader can
    /// check the revealed value on chain (absent from older keepers' answers).
    #[serde(default)]
    pub reveal_tx: Option<String>,
    pub revealed: bool,
}

/// A publisher's on-chain track record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrackRecord {
    /// A decimal string.
    pub brier_sum: String,
    pub chain: String,
    pub committed: i64,
    pub expired: i64,
    pub hits: i64,
    pub misses: i64,
    pub publisher: String,
    pub voided: i64,
}

// ---------------------------------------------------------------------------------------------------------------
// GET /api/chains

/// `GET /api/chains`: every chain and market as the dApp needs them (read from the contracts and programs once).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chains {
    pub chains: Vec<Chain>,
    /// The keeper publishes each forecast once committed (`[api] publish_forecasts`): the dApp's AI mode can follow it.
    #[serde(default)]
    pub forecasts_public: bool,
}

/// One chain as the dApp sees it, by its `kind`: an EVM chain (bets through a browser wallet) or a Solana cluster
/// (shown read-only). On the wire each is its own object with its `kind` field among the others (an EVM entry is
/// byte for byte what it was before Solana was listed); reading one dispatches on `kind`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Chain {
    Evm(EvmChain),
    Solana(SolanaChain),
}

impl Chain {
    /// The catalogue key (the `chain` of rounds, checkpoints and `/health`).
    pub fn name(&self) -> &str {
        match self {
            Chain::Evm(c) => &c.name,
            Chain::Solana(c) => &c.name,
        }
    }

    pub fn kind(&self) -> ChainKind {
        match self {
            Chain::Evm(_) => ChainKind::Evm,
            Chain::Solana(_) => ChainKind::Solana,
        }
    }
}

impl Serialize for Chain {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Chain::Evm(c) => c.serialize(s),
            Chain::Solana(c) => c.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for Chain {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let v = serde_json::Value::deserialize(d)?;
        let kind = match v.get("kind") {
            None => return Err(D::Error::missing_field("kind")),
            Some(k) => ChainKind::deserialize(k).map_err(|e| D::Error::custom(format!("kind: {e}")))?,
        };
        // The entry's own path in the error (`markets[0].decimals: …`): the outer path ends at the entry.
        fn entry<T: serde::de::DeserializeOwned, E: Error>(v: serde_json::Value) -> Result<T, E> {
            serde_path_to_error::deserialize(v).map_err(|e| E::custom(format!("{}: {}", e.path(), e.inner())))
        }
        match kind {
            ChainKind::Evm => entry(v).map(Chain::Evm),
            ChainKind::Solana => entry(v).map(Chain::Solana),
        }
    }
}

/// An EVM chain in [`Chains`] (`kind` `evm`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvmChain {
    pub chain_id: Option<u64>,
    pub display: String,
    /// The block explorer (transactions at `<explorer>/tx/<hash>`); none on local chains.
    pub explorer: Option<String>,
    /// Always [`ChainKind::Evm`].
    pub kind: ChainKind,
    /// The market contract (`0x…`).
    pub market: String,
    pub markets: Vec<ChainMarket>,
    /// The catalogue key.
    pub name: String,
    pub native_symbol: String,
    pub registry: Option<String>,
    /// RPC URLs a wallet may add the chain with: local development chains' loopback URLs only.
    pub rpc_urls: Vec<String>,
}

/// The kind of chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChainKind {
    Evm,
    Solana,
}

/// A Solana cluster in [`Chains`] (`kind` `solana`): the kronos-market program and the markets the keeper drives
/// there, read from their accounts. Its rounds are on `/api/rounds` under `name`, like an EVM chain's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SolanaChain {
    /// The catalogue's cluster (`mainnet-beta`); none for a cluster the catalogue names no cluster for.
    pub cluster: Option<String>,
    pub display: String,
    /// The block explorer; none on a local cluster.
    pub explorer: Option<String>,
    /// Always [`ChainKind::Solana`].
    pub kind: ChainKind,
    pub markets: Vec<SolanaMarket>,
    /// The catalogue key (`solana`).
    pub name: String,
    pub native_symbol: String,
    /// The kronos-market program id (base58).
    pub program: String,
    /// Why the markets' accounts could not be read now (they are listed from the store meanwhile, without what
    /// only their accounts say); none when they were read.
    pub unavailable: Option<String>,
}

/// One Solana market in [`SolanaChain`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SolanaMarket {
    /// The market account (base58).
    pub address: String,
    /// Bets close this many seconds before the lock; none when the account was not read.
    pub bet_cutoff: Option<u32>,
    /// The stake's decimals: 9 for SOL (lamports), the mint's for an SPL token; none when the mint was not read.
    pub decimals: Option<u8>,
    /// The Chainlink feed account.
    pub feed: String,
    /// Start of epoch 0 (unix seconds).
    pub genesis: i64,
    pub id: u64,
    pub interval: u32,
    /// The SPL stake mint; none for SOL.
    pub mint: Option<String>,
    /// The feed's pair (`BTC/USD`, from its description); `market <id>` when the feed was not read.
    pub pair: String,
    /// The fee and minimum bet in force, and a change scheduled from a later epoch when there is one.
    pub params: Vec<MarketParams>,
    /// Bets are refused while paused.
    pub paused: bool,
    /// Why the keeper starts no round on it now (an unapproved or changed feed); none while it drives it.
    pub refused: Option<String>,
    /// `SOL`, or the SPL mint shortened (`EPjF…Dt1v`): tokens have no symbol on chain.
    pub symbol: String,
}

/// One market's fixed configuration and stake token in [`EvmChain`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainMarket {
    pub bet_cutoff: u32,
    pub decimals: u8,
    pub execute_delay: u32,
    pub genesis: u64,
    pub id: u64,
    pub interval: u32,
    pub pair: String,
    /// The parameters in force, and a scheduled change (from its epoch on) when there is one.
    pub params: Vec<MarketParams>,
    pub symbol: String,
    /// The stake token; the zero address for the chain's native coin.
    pub token: String,
}

/// A market's fee and minimum bet from `from_epoch` on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MarketParams {
    pub fee_bps: u16,
    pub from_epoch: u64,
    /// In the stake token's smallest unit, as a decimal string.
    pub min_bet: String,
}

// ---------------------------------------------------------------------------------------------------------------
// GET /api/checkpoints

/// `GET /api/checkpoints` query: one market's checkpoints from index `from` (default: the newest `limit`), at most
/// `limit` (1..=500, default 50).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointsQuery {
    pub chain: String,
    pub market: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<i64>,
}

/// One element of `GET /api/checkpoints`: a recorded checkpoint, the proof of a round's lock or close price.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub chain: String,
    pub market_id: i64,
    pub idx: i64,
    /// The checkpoint's time (s).
    pub ts: i64,
    /// The Chainlink round id, a decimal string.
    pub round_id: String,
    /// A decimal string.
    pub price: String,
    pub status: CheckpointStatus,
    pub tx_hash: Option<String>,
    pub block: Option<i64>,
    pub delay_blocks: Option<i64>,
}

/// How a checkpoint's price was judged (the contract's `PriceStatus`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckpointStatus {
    None,
    Valid,
    Stale,
    BadAnswer,
    SequencerDown,
    SequencerGracePeriod,
}

// ---------------------------------------------------------------------------------------------------------------
// GET /ws

/// `GET /ws` query: the signal types to receive, comma-separated (default: all).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WsQuery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub types: Option<String>,
}

wire_enum!(HealthStatus, LeaseRole, RoundState, Outcome, CancelReason, ChainKind, CheckpointStatus);

// ---------------------------------------------------------------------------------------------------------------
// Reading answers

/// An answer that is not what [`parse`] expected.
#[derive(Debug)]
pub struct ApiError {
    /// The endpoint (`/api/markets`).
    pub endpoint: String,
    /// The field, as a path (`live[0].lease.role`); `.` for the whole answer.
    pub field: String,
    /// What is wrong with it.
    pub detail: String,
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} answered an unexpected {}: {}", self.endpoint, self.field_words(), self.detail)
    }
}

impl ApiError {
    fn field_words(&self) -> String {
        if self.field == "." {
            "body".into()
        } else {
            format!("field {}", self.field)
        }
    }
}

impl std::error::Error for ApiError {}

/// Reads `endpoint`'s answer `body` as `T`; an error names the endpoint and the field.
pub fn parse<T: serde::de::DeserializeOwned>(endpoint: &str, body: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let v = serde_path_to_error::deserialize(&mut de).map_err(|e| ApiError {
        endpoint: endpoint.to_string(),
        field: e.path().to_string(),
        detail: e.inner().to_string(),
    })?;
    de.end().map_err(|e| ApiError { endpoint: endpoint.to_string(), field: ".".into(), detail: e.to_string() })?;
    Ok(v)
}
