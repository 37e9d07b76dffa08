//! Test-only control paths (not part of the Solana RPC): advance the slot and clock, write an account, load a
//! Chainlink store-format feed and append transmissions to it. Bodies and answers are JSON; a refused request is
//! answered 400 with `{"error": "..."}` naming what is wrong.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use kronos_market::chainlink::{encode_with, Meta, Transmission};
use serde::Deserialize;
use serde_json::{json, Value};
use solana_account::{Account, AccountSharedData};
use solana_pubkey::Pubkey;
use tokio::sync::Mutex;

use crate::{Feed, Node};

type Shared = Arc<Mutex<Node>>;
type Reply = Result<Json<Value>, (StatusCode, Json<Value>)>;

pub(crate) fn routes() -> Router<Shared> {
    Router::new()
        .route("/control/warp", post(warp))
        .route("/control/account", post(set_account))
        .route("/control/feed", post(load_feed))
        .route("/control/feed/transmit", post(transmit))
        .route("/control/drop_next_sends", post(drop_next_sends))
        .route("/control/hold_next_sends", post(hold_next_sends))
        .route("/control/land_held", post(land_held))
        .route("/control/fail_next", post(fail_next))
        .route("/control/calls", post(calls))
        .route("/control/short_next_accounts", post(short_next_accounts))
        .route("/control/genesis", post(set_genesis))
}

fn bad(what: impl std::fmt::Display) -> (StatusCode, Json<Value>) {
    (StatusCode::BAD_REQUEST, Json(json!({ "error": what.to_string() })))
}

fn internal(what: impl std::fmt::Display) -> (StatusCode, Json<Value>) {
    (StatusCode::INTERNAL_SERVER_ERROR, Json(json!({ "error": what.to_string() })))
}

fn key(s: &str, field: &str) -> Result<Pubkey, (StatusCode, Json<Value>)> {
    s.parse().map_err(|e| bad(format!("{field}: {s:?} is not a pubkey: {e}")))
}

fn body<T: serde::de::DeserializeOwned>(b: &[u8]) -> Result<T, (StatusCode, Json<Value>)> {
    serde_json::from_slice(b).map_err(|e| bad(format!("body: {e}")))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Warp {
    /// Slots to advance, one bank each (default 1; 0 only sets the clock).
    slots: Option<u64>,
    /// The clock's unix timestamp from now on (kept across later warps until set again).
    unix_timestamp: Option<i64>,
}

/// POST `/control/warp` `{"slots": 1, "unixTimestamp": 1800000000}` → `{"slot", "blockHeight", "unixTimestamp"}`.
async fn warp(State(node): State<Shared>, b: axum::body::Bytes) -> Reply {
    let w: Warp = body(&b)?;
    let mut node = node.lock().await;
    let slots = w.slots.unwrap_or(1);
    // One bank per slot, so that block heights move with slots (no skipped slots) and each slot's blockhash ages
    // the queue as on a cluster.
    let mut now = node.ctx.banks_client.get_root_slot().await.map_err(internal)?;
    for _ in 0..slots {
        now += 1;
        node.ctx.warp_to_slot(now).map_err(|e| internal(format!("warp to slot {now}: {e:?}")))?;
    }
    if let Some(ts) = w.unix_timestamp {
        node.clock = Some(ts);
    }
    node.apply_clock().await.map_err(internal)?;
    let slot = node.ctx.banks_client.get_root_slot().await.map_err(internal)?;
    let height = node.ctx.banks_client.get_root_block_height().await.map_err(internal)?;
    let clock: anchor_lang::prelude::Clock = node.ctx.banks_client.get_sysvar().await.map_err(internal)?;
    Ok(Json(json!({ "slot": slot, "blockHeight": height, "unixTimestamp": clock.unix_timestamp })))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SetAccount {
    address: String,
    lamports: u64,
    /// Defaults to the system program.
    owner: Option<String>,
    /// Base64; defaults to empty.
    data: Option<String>,
    #[serde(default)]
    executable: bool,
}

/// POST `/control/account`: writes an account as is (funding, a ProgramData account, fixtures); it is indexed for
/// `getProgramAccounts`.
async fn set_account(State(node): State<Shared>, b: axum::body::Bytes) -> Reply {
    let a: SetAccount = body(&b)?;
    let address = key(&a.address, "address")?;
    let owner = match &a.owner {
        Some(o) => key(o, "owner")?,
        None => Pubkey::default(),
    };
    let data = match &a.data {
        Some(d) => B64.decode(d).map_err(|e| bad(format!("data: not base64: {e}")))?,
        None => vec![],
    };
    let account = Account { lamports: a.lamports, data, owner, executable: a.executable, rent_epoch: 0 };
    let mut node = node.lock().await;
    node.ctx.set_account(&address, &AccountSharedData::from(account));
    node.index.insert(address);
    Ok(Json(json!({ "address": address.to_string() })))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct NewTransmission {
    timestamp: u32,
    /// The answer as an integer in the feed's decimals: a JSON number within i64, or a decimal string (any i128).
    answer: Answer,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Answer {
    // serde's untagged enums buffer numbers without i128; beyond i64 the answer comes as a string.
    Number(i64),
    Text(String),
}

impl Answer {
    fn value(&self) -> Result<i128, (StatusCode, Json<Value>)> {
        match self {
            Answer::Number(n) => Ok(i128::from(*n)),
            Answer::Text(s) => s.parse().map_err(|e| bad(format!("answer: {s:?} is not an integer: {e}"))),
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct LoadFeed {
    address: String,
    decimals: u8,
    description: String,
    /// The ring's size (default 64).
    live_length: Option<u32>,
    /// The header's owner and writer (default: zero keys); the account is owned by Chainlink's store program.
    owner: Option<String>,
    writer: Option<String>,
    #[serde(default)]
    transmissions: Vec<NewTransmission>,
}

/// POST `/control/feed`: creates (or replaces) a feed account owned by the store program, with these transmissions
/// oldest first, each stamped with the current slot.
async fn load_feed(State(node): State<Shared>, b: axum::body::Bytes) -> Reply {
    let f: LoadFeed = body(&b)?;
    let address = key(&f.address, "address")?;
    let owner = f.owner.as_deref().map(|o| key(o, "owner")).transpose()?.unwrap_or_default();
    let writer = f.writer.as_deref().map(|w| key(w, "writer")).transpose()?.unwrap_or_default();
    let live_length = f.live_length.unwrap_or(64);
    if live_length == 0 {
        return Err(bad("liveLength: must be at least 1"));
    }
    let mut node = node.lock().await;
    let slot = node.ctx.banks_client.get_root_slot().await.map_err(internal)?;
    let transmissions = f
        .transmissions
        .iter()
        .map(|t| Ok(Transmission { slot, timestamp: t.timestamp, answer: t.answer.value()? }))
        .collect::<Result<Vec<_>, _>>()?;
    let feed = Feed {
        meta: Meta { decimals: f.decimals, state: 0, owner: owner.to_bytes(), writer: writer.to_bytes() },
        description: f.description,
        live_length,
        transmissions,
    };
    node.feeds.insert(address, feed);
    let latest = node.write_feed(address);
    Ok(Json(json!({ "address": address.to_string(), "latestRoundId": latest })))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Transmit {
    address: String,
    timestamp: u32,
    answer: Answer,
}

/// POST `/control/feed/transmit`: appends a transmission to a feed loaded by `/control/feed`, as the store
/// program's `submit` would (the ring wraps at `liveLength`).
async fn transmit(State(node): State<Shared>, b: axum::body::Bytes) -> Reply {
    let t: Transmit = body(&b)?;
    let address = key(&t.address, "address")?;
    let answer = t.answer.value()?;
    let mut node = node.lock().await;
    let slot = node.ctx.banks_client.get_root_slot().await.map_err(internal)?;
    let Some(feed) = node.feeds.get_mut(&address) else {
        return Err(bad(format!("address: {address} is not a feed loaded by /control/feed")));
    };
    if let Some(last) = feed.transmissions.last() {
        if t.timestamp < last.timestamp {
            return Err(bad(format!(
                "timestamp: {} is before the feed's latest transmission ({})",
                t.timestamp, last.timestamp
            )));
        }
    }
    feed.transmissions.push(Transmission { slot, timestamp: t.timestamp, answer });
    let latest = node.write_feed(address);
    Ok(Json(json!({ "address": address.to_string(), "latestRoundId": latest })))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct DropSends {
    n: u64,
    /// Only the sends of transactions that name this account are dropped (and counted); `drop_next_sends` only.
    #[serde(default)]
    account: Option<String>,
}

/// POST `/control/drop_next_sends` `{"n": 2}`: the next `n` `sendTransaction` calls that pass preflight are answered
/// with their signature and discarded (a transaction dropped by the leader); `0` stops dropping. With `"account"`
/// only transactions naming that account are dropped (one market's, the others land). Answers `{"dropping": n}`.
async fn drop_next_sends(State(node): State<Shared>, b: axum::body::Bytes) -> Reply {
    let d: DropSends = body(&b)?;
    let only = d.account.as_deref().map(|a| key(a, "account")).transpose()?;
    let mut node = node.lock().await;
    node.drop_sends = d.n;
    node.drop_only = only;
    Ok(Json(json!({ "dropping": d.n })))
}

/// POST `/control/hold_next_sends` `{"n": 1}`: the next `n` `sendTransaction` calls that pass preflight are answered
/// with their signature and held, unprocessed, until `/control/land_held` (a transaction that lands late); `0`
/// stops holding. Answers `{"holding": n}`.
async fn hold_next_sends(State(node): State<Shared>, b: axum::body::Bytes) -> Reply {
    let d: DropSends = body(&b)?;
    if d.account.is_some() {
        return Err(bad("account: only drop_next_sends takes one"));
    }
    node.lock().await.hold_sends = d.n;
    Ok(Json(json!({ "holding": d.n })))
}

/// POST `/control/land_held` `{}`: processes the held transactions, in the order they were sent. Answers
/// `{"landed": [{"signature": …, "error": null or the transaction error}, …]}` (every one processed, whether it
/// executed or was refused, e.g. for its blockhash).
async fn land_held(State(node): State<Shared>, _b: axum::body::Bytes) -> Reply {
    let mut node = node.lock().await;
    let held = std::mem::take(&mut node.held);
    let mut landed = Vec::new();
    for tx in held {
        let signature = tx.signatures[0].to_string();
        let error = node.process(tx).await.map_err(|e| internal(format!("{e:?}")))?;
        landed.push(json!({ "signature": signature, "error": error.map(|e| format!("{e:?}")) }));
    }
    Ok(Json(json!({ "landed": landed })))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct FailNext {
    method: String,
    n: u64,
}

/// POST `/control/fail_next` `{"method": "getSignatureStatuses", "n": 3}`: the next `n` calls of `method` are
/// answered with the JSON-RPC error of an unhealthy node (`-32005`). Answers `{"failing": n}`.
async fn fail_next(State(node): State<Shared>, b: axum::body::Bytes) -> Reply {
    let f: FailNext = body(&b)?;
    node.lock().await.fail_next.insert(f.method, f.n);
    Ok(Json(json!({ "failing": f.n })))
}

/// POST `/control/calls` `{}`: how many calls of each method the node has received (answered or failed), as
/// `{"calls": {"getSignatureStatuses": 12, …}}`.
async fn calls(State(node): State<Shared>) -> Reply {
    Ok(Json(json!({ "calls": node.lock().await.calls })))
}

/// POST `/control/short_next_accounts` `{"n": 1}`: the next `n` `getMultipleAccounts` answers leave out their last
/// account (a malformed answer). Answers `{"short": n}`.
async fn short_next_accounts(State(node): State<Shared>, b: axum::body::Bytes) -> Reply {
    let d: DropSends = body(&b)?;
    node.lock().await.short_accounts = d.n;
    Ok(Json(json!({ "short": d.n })))
}

#[derive(Deserialize)]
struct Genesis {
    hash: String,
}

/// POST `/control/genesis` `{"hash": "<base58>"}`: `getGenesisHash` answers this hash from now on (a node of that
/// cluster: two servers given one hash are one cluster, a server given another is a foreign one). Answers
/// `{"genesis": hash}`.
async fn set_genesis(State(node): State<Shared>, b: axum::body::Bytes) -> Reply {
    let g: Genesis = body(&b)?;
    let hash: solana_hash::Hash = g.hash.parse().map_err(|e| bad(format!("hash {:?}: {e:?}", g.hash)))?;
    node.lock().await.genesis = Some(hash.to_string());
    Ok(Json(json!({ "genesis": hash.to_string() })))
}

impl Node {
    /// Re-applies the pinned clock (a warp recomputes the Clock sysvar).
    async fn apply_clock(&mut self) -> Result<(), solana_program_test::BanksClientError> {
        if let Some(ts) = self.clock {
            let mut c: anchor_lang::prelude::Clock = self.ctx.banks_client.get_sysvar().await?;
            c.unix_timestamp = ts;
            self.ctx.set_sysvar(&c);
        }
        Ok(())
    }

    /// Writes a loaded feed's account from its history; returns its latest round id (transmissions so far).
    fn write_feed(&mut self, address: Pubkey) -> usize {
        let Some(f) = self.feeds.get(&address) else { return 0 };
        // Only the last `live_length` transmissions are in the ring; encode_with writes the ones it is given in
        // order, so hand it the whole history and let the cursor wrap (its round id counts them all).
        let data = encode_with(&f.meta, &f.description, f.live_length, &f.transmissions);
        let latest = f.transmissions.len();
        let lamports = 10_000_000_000;
        let account =
            Account { lamports, data, owner: kronos_market::state::CHAINLINK_STORE, executable: false, rent_epoch: 0 };
        self.ctx.set_account(&address, &AccountSharedData::from(account));
        self.index.insert(address);
        latest
    }
}
