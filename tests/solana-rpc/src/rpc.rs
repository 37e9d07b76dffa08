//! JSON-RPC 2.0 over HTTP POST `/`: request parsing, the methods, and the documented error codes.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::Json;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use solana_account::Account;
use solana_account_decoder_client_types::{UiAccount, UiAccountData, UiAccountEncoding, UiDataSliceConfig};
use solana_commitment_config::{CommitmentConfig, CommitmentLevel};
use solana_hash::Hash;
use solana_message::{Message, VersionedMessage};
use solana_pubkey::Pubkey;
use solana_rpc_client_types::config::{
    RpcAccountInfoConfig, RpcContextConfig, RpcProgramAccountsConfig, RpcSendTransactionConfig,
    RpcSignatureStatusConfig, RpcSimulateTransactionConfig,
};
use solana_rpc_client_types::filter::RpcFilterType;
use solana_rpc_client_types::response::{
    RpcBlockhash, RpcKeyedAccount, RpcPrioritizationFee, RpcSimulateTransactionResult, RpcVersionInfo,
};
use solana_signature::Signature;
use solana_transaction::versioned::VersionedTransaction;
use solana_transaction_status_client_types::{
    TransactionConfirmationStatus, TransactionStatus, UiTransactionEncoding, UiTransactionError,
};
use tokio::sync::Mutex;

use crate::{Node, PaidFee};

/// JSON-RPC error codes (the JSON-RPC 2.0 spec's and Solana's server errors).
pub(crate) mod code {
    pub(crate) const PARSE_ERROR: i64 = -32700;
    pub(crate) const INVALID_REQUEST: i64 = -32600;
    pub(crate) const METHOD_NOT_FOUND: i64 = -32601;
    pub(crate) const INVALID_PARAMS: i64 = -32602;
    pub(crate) const INTERNAL_ERROR: i64 = -32603;
    /// The node has not reached the request's `minContextSlot`.
    pub(crate) const MIN_CONTEXT_SLOT_NOT_REACHED: i64 = -32016;
    /// `sendTransaction`'s preflight simulation failed.
    pub(crate) const SEND_TRANSACTION_PREFLIGHT_FAILURE: i64 = -32002;
    /// A signature did not verify.
    pub(crate) const TRANSACTION_SIGNATURE_VERIFICATION_FAILURE: i64 = -32003;
}

/// The most items a list parameter may hold, as the Solana server limits them.
const MAX_MULTIPLE_ACCOUNTS: usize = 100;
const MAX_SIGNATURE_STATUSES: usize = 256;
const MAX_PRIORITIZATION_FEE_ACCOUNTS: usize = 128;
/// The slots `getRecentPrioritizationFees` reports (the validator's cache size).
const PRIORITIZATION_FEE_SLOTS: u64 = 150;
/// Binary and base58 account data are refused above this size, as the Solana server does.
const MAX_BASE58_BYTES: usize = 128;

/// The JSON-RPC error code of a node behind or unhealthy (`-32005`).
const NODE_UNHEALTHY: i64 = -32005;

const COMPUTE_BUDGET_PROGRAM: Pubkey = solana_pubkey::pubkey!("ComputeBudget111111111111111111111111111111");
/// `ComputeBudgetInstruction::SetComputeUnitPrice`'s tag.
const SET_COMPUTE_UNIT_PRICE: u8 = 3;

#[derive(Debug)]
pub(crate) struct RpcError {
    pub(crate) code: i64,
    pub(crate) message: String,
    pub(crate) data: Option<Value>,
}

impl RpcError {
    pub(crate) fn invalid_params(message: impl Into<String>) -> RpcError {
        RpcError { code: code::INVALID_PARAMS, message: message.into(), data: None }
    }
    fn internal(what: impl std::fmt::Display) -> RpcError {
        RpcError { code: code::INTERNAL_ERROR, message: format!("Internal error: {what}"), data: None }
    }
}

impl From<solana_program_test::BanksClientError> for RpcError {
    fn from(e: solana_program_test::BanksClientError) -> RpcError {
        RpcError::internal(format!("bank: {e}"))
    }
}

type Shared = Arc<Mutex<Node>>;

/// POST `/`: one request or a batch.
pub(crate) async fn handle(State(node): State<Shared>, body: Bytes) -> Json<Value> {
    let req: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return Json(error_reply(Value::Null, code::PARSE_ERROR, format!("Parse error: {e}"), None)),
    };
    match req {
        Value::Array(items) if items.is_empty() => {
            Json(error_reply(Value::Null, code::INVALID_REQUEST, "Invalid request: empty batch".into(), None))
        }
        Value::Array(items) => {
            let mut out = Vec::with_capacity(items.len());
            for item in items {
                out.push(one(&node, item).await);
            }
            Json(Value::Array(out))
        }
        item => Json(one(&node, item).await),
    }
}

fn error_reply(id: Value, code: i64, message: String, data: Option<Value>) -> Value {
    let mut error = json!({ "code": code, "message": message });
    if let Some(d) = data {
        error["data"] = d;
    }
    json!({ "jsonrpc": "2.0", "error": error, "id": id })
}

async fn one(node: &Shared, req: Value) -> Value {
    let id = req.get("id").cloned().unwrap_or(Value::Null);
    if req.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return error_reply(id, code::INVALID_REQUEST, "Invalid request: jsonrpc must be \"2.0\"".into(), None);
    }
    let Some(method) = req.get("method").and_then(Value::as_str) else {
        return error_reply(id, code::INVALID_REQUEST, "Invalid request: method must be a string".into(), None);
    };
    let params = match req.get("params") {
        None | Some(Value::Null) => vec![],
        Some(Value::Array(a)) => a.clone(),
        Some(_) => {
            return error_reply(id, code::INVALID_PARAMS, "Invalid params: params must be an array".into(), None)
        }
    };
    let mut node = node.lock().await;
    match call(&mut node, method, &params).await {
        Ok(result) => json!({ "jsonrpc": "2.0", "result": result, "id": id }),
        Err(e) => error_reply(id, e.code, e.message, e.data),
    }
}

async fn call(node: &mut Node, method: &str, p: &[Value]) -> Result<Value, RpcError> {
    *node.calls.entry(method.to_string()).or_default() += 1;
    // Fault injection (`/control/fail_next`): the node answers as an unhealthy one does.
    if let Some(n) = node.fail_next.get_mut(method).filter(|n| **n > 0) {
        *n -= 1;
        return Err(RpcError {
            code: NODE_UNHEALTHY,
            message: "Node is unhealthy (fault injected)".into(),
            data: None,
        });
    }
    match method {
        "getVersion" => get_version(),
        "getSlot" => {
            let cfg: Option<RpcContextConfig> = opt(p, 0, "config")?;
            node.min_context_slot(cfg.and_then(|c| c.min_context_slot)).await?;
            Ok(json!(node.slot().await?))
        }
        "getBlockHeight" => {
            let cfg: Option<RpcContextConfig> = opt(p, 0, "config")?;
            node.min_context_slot(cfg.and_then(|c| c.min_context_slot)).await?;
            Ok(json!(node.ctx.banks_client.get_root_block_height().await?))
        }
        "getLatestBlockhash" => get_latest_blockhash(node, p).await,
        "isBlockhashValid" => is_blockhash_valid(node, p).await,
        "sendTransaction" => send_transaction(node, p).await,
        "simulateTransaction" => simulate_transaction(node, p).await,
        "getSignatureStatuses" => get_signature_statuses(node, p).await,
        "getAccountInfo" => get_account_info(node, p).await,
        "getMultipleAccounts" => get_multiple_accounts(node, p).await,
        "getProgramAccounts" => get_program_accounts(node, p).await,
        "getBalance" => get_balance(node, p).await,
        "getRecentPrioritizationFees" => get_recent_prioritization_fees(node, p).await,
        "getFeeForMessage" => get_fee_for_message(node, p).await,
        "getGenesisHash" => {
            Ok(json!(node.genesis.clone().unwrap_or_else(|| node.ctx.genesis_config().hash().to_string())))
        }
        other => {
            Err(RpcError { code: code::METHOD_NOT_FOUND, message: format!("Method not found: {other}"), data: None })
        }
    }
}

// ---- parameters ----

fn req<T: DeserializeOwned>(p: &[Value], i: usize, what: &str) -> Result<T, RpcError> {
    let v = p.get(i).ok_or_else(|| RpcError::invalid_params(format!("Invalid params: missing {what}")))?;
    serde_json::from_value(v.clone()).map_err(|e| RpcError::invalid_params(format!("Invalid params: {what}: {e}")))
}

fn opt<T: DeserializeOwned>(p: &[Value], i: usize, what: &str) -> Result<Option<T>, RpcError> {
    match p.get(i) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => serde_json::from_value(v.clone())
            .map(Some)
            .map_err(|e| RpcError::invalid_params(format!("Invalid params: {what}: {e}"))),
    }
}

fn pubkey(s: &str) -> Result<Pubkey, RpcError> {
    s.parse().map_err(|e| RpcError::invalid_params(format!("Invalid param: {s:?} is not a pubkey: {e}")))
}

fn commitment(c: Option<CommitmentConfig>) -> CommitmentLevel {
    c.map(|c| c.commitment).unwrap_or_default()
}

fn with_context(slot: u64, value: impl serde::Serialize) -> Result<Value, RpcError> {
    let value = serde_json::to_value(value).map_err(RpcError::internal)?;
    Ok(json!({ "context": { "slot": slot, "apiVersion": solana_version_string() }, "value": value }))
}

fn solana_version_string() -> String {
    let v = solana_version::Version::default();
    format!("{}.{}.{}", v.major, v.minor, v.patch)
}

fn decode_bytes(data: &str, encoding: UiTransactionEncoding, what: &str) -> Result<Vec<u8>, RpcError> {
    match encoding {
        UiTransactionEncoding::Base58 | UiTransactionEncoding::Binary => bs58::decode(data)
            .into_vec()
            .map_err(|e| RpcError::invalid_params(format!("invalid base58 encoding of the {what}: {e}"))),
        UiTransactionEncoding::Base64 => B64
            .decode(data)
            .map_err(|e| RpcError::invalid_params(format!("invalid base64 encoding of the {what}: {e}"))),
        other => {
            Err(RpcError::invalid_params(format!("unsupported encoding: {other}. Supported encodings: base58, base64")))
        }
    }
}

fn decode_tx(data: &str, encoding: UiTransactionEncoding) -> Result<VersionedTransaction, RpcError> {
    let bytes = decode_bytes(data, encoding, "transaction")?;
    let tx: VersionedTransaction = bincode::deserialize(&bytes)
        .map_err(|e| RpcError::invalid_params(format!("failed to deserialize VersionedTransaction: {e}")))?;
    tx.sanitize().map_err(|e| RpcError::invalid_params(format!("invalid transaction: {e}")))?;
    Ok(tx)
}

// ---- methods ----

fn get_version() -> Result<Value, RpcError> {
    let v = solana_version::Version::default();
    let info = RpcVersionInfo { solana_core: solana_version_string(), feature_set: Some(v.feature_set) };
    serde_json::to_value(info).map_err(RpcError::internal)
}

async fn get_latest_blockhash(node: &mut Node, p: &[Value]) -> Result<Value, RpcError> {
    let cfg: Option<RpcContextConfig> = opt(p, 0, "config")?;
    node.min_context_slot(cfg.and_then(|c| c.min_context_slot)).await?;
    let level = commitment(cfg.and_then(|c| c.commitment));
    let (hash, last_valid_block_height) = node
        .ctx
        .banks_client
        .get_latest_blockhash_with_commitment(level)
        .await?
        .ok_or_else(|| RpcError::internal("the bank has no blockhash"))?;
    let slot = node.slot().await?;
    with_context(slot, RpcBlockhash { blockhash: hash.to_string(), last_valid_block_height })
}

async fn is_blockhash_valid(node: &mut Node, p: &[Value]) -> Result<Value, RpcError> {
    let s: String = req(p, 0, "blockhash")?;
    let cfg: Option<RpcContextConfig> = opt(p, 1, "config")?;
    node.min_context_slot(cfg.and_then(|c| c.min_context_slot)).await?;
    let hash: Hash =
        s.parse().map_err(|e| RpcError::invalid_params(format!("Invalid param: {s:?} is not a hash: {e:?}")))?;
    let valid = node.blockhash_valid(hash).await?;
    let slot = node.slot().await?;
    with_context(slot, valid)
}

fn simulation_result(
    r: solana_banks_interface::BanksTransactionResultWithSimulation,
    replacement_blockhash: Option<RpcBlockhash>,
) -> RpcSimulateTransactionResult {
    let err = match r.result {
        Some(Err(e)) => Some(UiTransactionError::from(e)),
        _ => None,
    };
    let d = r.simulation_details;
    RpcSimulateTransactionResult {
        err,
        logs: d.as_ref().map(|d| d.logs.clone()),
        accounts: None,
        units_consumed: d.as_ref().map(|d| d.units_consumed),
        loaded_accounts_data_size: d.as_ref().map(|d| d.loaded_accounts_data_size),
        return_data: d.as_ref().and_then(|d| d.return_data.clone()).map(Into::into),
        inner_instructions: None,
        replacement_blockhash,
        fee: None,
        pre_balances: None,
        post_balances: None,
        pre_token_balances: None,
        post_token_balances: None,
        loaded_addresses: None,
    }
}

fn signatures_verify(tx: &VersionedTransaction) -> Result<(), RpcError> {
    if tx.verify_with_results().iter().all(|ok| *ok) {
        Ok(())
    } else {
        Err(RpcError {
            code: code::TRANSACTION_SIGNATURE_VERIFICATION_FAILURE,
            message: "Transaction signature verification failure".into(),
            data: None,
        })
    }
}

async fn send_transaction(node: &mut Node, p: &[Value]) -> Result<Value, RpcError> {
    let data: String = req(p, 0, "transaction")?;
    let cfg: RpcSendTransactionConfig = opt(p, 1, "config")?.unwrap_or_default();
    node.min_context_slot(cfg.min_context_slot).await?;
    let tx = decode_tx(&data, cfg.encoding.unwrap_or(UiTransactionEncoding::Base58))?;
    let signature = tx.signatures[0];
    if !cfg.skip_preflight {
        signatures_verify(&tx)?;
        let level = cfg.preflight_commitment.unwrap_or_default();
        let sim = node.ctx.banks_client.simulate_transaction_with_commitment(tx.clone(), level).await?;
        if let Some(Err(e)) = &sim.result {
            let message = format!("Transaction simulation failed: {e}");
            let data = serde_json::to_value(simulation_result(sim, None)).map_err(RpcError::internal)?;
            return Err(RpcError { code: code::SEND_TRANSACTION_PREFLIGHT_FAILURE, message, data: Some(data) });
        }
    }
    // Fault injection (`/control/drop_next_sends`): accepted, answered with its signature, never processed — a
    // transaction the leader dropped.
    if node.drop_sends > 0 && node.drop_only.is_none_or(|a| tx.message.static_account_keys().contains(&a)) {
        node.drop_sends -= 1;
        return Ok(json!(signature.to_string()));
    }
    // Fault injection (`/control/hold_next_sends`): accepted, answered with its signature, processed only at
    // `/control/land_held` — a transaction that lands late.
    if node.hold_sends > 0 {
        node.hold_sends -= 1;
        node.held.push(tx);
        return Ok(json!(signature.to_string()));
    }
    node.process(tx).await?;
    Ok(json!(signature.to_string()))
}

impl Node {
    /// Processes a transaction as a leader does; the fees and index of one that executed are recorded.
    /// Answers the transaction's error, if it had one (refused or failed).
    pub(crate) async fn process(
        &mut self,
        tx: VersionedTransaction,
    ) -> Result<Option<solana_transaction_error::TransactionError>, RpcError> {
        let node = self;
        let slot = node.slot().await?;
        let outcome = node.ctx.banks_client.process_transaction_with_metadata(tx.clone()).await?;
        // A transaction that executed (successfully or not) touched its accounts and paid its fee; one refused before
        // execution (unknown blockhash, already processed, …) did neither, and is dropped as a validator drops it.
        let executed =
            matches!(outcome.result, Ok(()) | Err(solana_transaction_error::TransactionError::InstructionError(..)));
        if executed {
            node.record(&tx.message, slot);
        }
        Ok(outcome.result.err())
    }
}

async fn simulate_transaction(node: &mut Node, p: &[Value]) -> Result<Value, RpcError> {
    let data: String = req(p, 0, "transaction")?;
    let cfg: RpcSimulateTransactionConfig = opt(p, 1, "config")?.unwrap_or_default();
    node.min_context_slot(cfg.min_context_slot).await?;
    if cfg.accounts.is_some() {
        return Err(RpcError::invalid_params(
            "Invalid params: accounts (post-simulation account states) is not supported by this server",
        ));
    }
    if cfg.sig_verify && cfg.replace_recent_blockhash {
        return Err(RpcError::invalid_params("sigVerify may not be used with replaceRecentBlockhash"));
    }
    let mut tx = decode_tx(&data, cfg.encoding.unwrap_or(UiTransactionEncoding::Base58))?;
    if cfg.sig_verify {
        signatures_verify(&tx)?;
    }
    let level = commitment(cfg.commitment);
    let mut replacement = None;
    if cfg.replace_recent_blockhash {
        let (hash, last_valid_block_height) = node
            .ctx
            .banks_client
            .get_latest_blockhash_with_commitment(level)
            .await?
            .ok_or_else(|| RpcError::internal("the bank has no blockhash"))?;
        tx.message.set_recent_blockhash(hash);
        replacement = Some(RpcBlockhash { blockhash: hash.to_string(), last_valid_block_height });
    }
    let slot = node.slot().await?;
    let sim = node.ctx.banks_client.simulate_transaction_with_commitment(tx, level).await?;
    with_context(slot, simulation_result(sim, replacement))
}

async fn get_signature_statuses(node: &mut Node, p: &[Value]) -> Result<Value, RpcError> {
    let sigs: Vec<String> = req(p, 0, "signatures")?;
    let _cfg: Option<RpcSignatureStatusConfig> = opt(p, 1, "config")?;
    if sigs.len() > MAX_SIGNATURE_STATUSES {
        return Err(RpcError::invalid_params(format!("Too many inputs provided; max {MAX_SIGNATURE_STATUSES}")));
    }
    let sigs = sigs
        .iter()
        .map(|s| {
            s.parse::<Signature>()
                .map_err(|e| RpcError::invalid_params(format!("Invalid param: {s:?} is not a signature: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let statuses = node.ctx.banks_client.get_transaction_statuses(sigs).await?;
    let statuses: Vec<Option<TransactionStatus>> = statuses
        .into_iter()
        .map(|s| {
            s.map(|s| TransactionStatus {
                slot: s.slot,
                confirmations: s.confirmations,
                status: s.err.clone().map_or(Ok(()), Err),
                err: s.err,
                confirmation_status: s.confirmation_status.map(|c| {
                    use solana_banks_interface::TransactionConfirmationStatus as B;
                    match c {
                        B::Processed => TransactionConfirmationStatus::Processed,
                        B::Confirmed => TransactionConfirmationStatus::Confirmed,
                        B::Finalized => TransactionConfirmationStatus::Finalized,
                    }
                }),
            })
        })
        .collect();
    let slot = node.slot().await?;
    with_context(slot, statuses)
}

/// An account as the RPC returns it, in the requested encoding and slice.
fn ui_account(a: Account, cfg: &RpcAccountInfoConfig) -> Result<UiAccount, RpcError> {
    let space = a.data.len() as u64;
    let data = match cfg.data_slice {
        Some(UiDataSliceConfig { offset, length }) => {
            let start = offset.min(a.data.len());
            let end = offset.saturating_add(length).min(a.data.len());
            a.data[start..end].to_vec()
        }
        None => a.data,
    };
    let data = match cfg.encoding.unwrap_or(UiAccountEncoding::Binary) {
        UiAccountEncoding::Binary | UiAccountEncoding::Base58 if data.len() > MAX_BASE58_BYTES => {
            return Err(RpcError::invalid_params(format!(
                "Encoded binary (base 58) data should be less than {MAX_BASE58_BYTES} bytes, please use Base64 encoding."
            )))
        }
        UiAccountEncoding::Binary => UiAccountData::LegacyBinary(bs58::encode(&data).into_string()),
        UiAccountEncoding::Base58 => UiAccountData::Binary(bs58::encode(&data).into_string(), UiAccountEncoding::Base58),
        // No account here has a jsonParsed parser (the validator's fallback is base64 too).
        UiAccountEncoding::Base64 | UiAccountEncoding::JsonParsed => {
            UiAccountData::Binary(B64.encode(&data), UiAccountEncoding::Base64)
        }
        UiAccountEncoding::Base64Zstd => {
            let compressed = zstd::encode_all(data.as_slice(), 0).map_err(|e| RpcError::internal(format!("zstd: {e}")))?;
            UiAccountData::Binary(B64.encode(compressed), UiAccountEncoding::Base64Zstd)
        }
    };
    Ok(UiAccount {
        lamports: a.lamports,
        data,
        owner: a.owner.to_string(),
        executable: a.executable,
        rent_epoch: a.rent_epoch,
        space: Some(space),
    })
}

async fn get_account_info(node: &mut Node, p: &[Value]) -> Result<Value, RpcError> {
    let key = pubkey(&req::<String>(p, 0, "pubkey")?)?;
    let cfg: RpcAccountInfoConfig = opt(p, 1, "config")?.unwrap_or_default();
    node.min_context_slot(cfg.min_context_slot).await?;
    let level = commitment(cfg.commitment);
    let account = node.ctx.banks_client.get_account_with_commitment(key, level).await?;
    let value = account.map(|a| ui_account(a, &cfg)).transpose()?;
    let slot = node.slot().await?;
    with_context(slot, value)
}

async fn get_multiple_accounts(node: &mut Node, p: &[Value]) -> Result<Value, RpcError> {
    let keys: Vec<String> = req(p, 0, "pubkeys")?;
    if keys.len() > MAX_MULTIPLE_ACCOUNTS {
        return Err(RpcError::invalid_params(format!("Too many inputs provided; max {MAX_MULTIPLE_ACCOUNTS}")));
    }
    let cfg: RpcAccountInfoConfig = opt(p, 1, "config")?.unwrap_or_default();
    node.min_context_slot(cfg.min_context_slot).await?;
    let level = commitment(cfg.commitment);
    let mut out = Vec::with_capacity(keys.len());
    for k in &keys {
        let a = node.ctx.banks_client.get_account_with_commitment(pubkey(k)?, level).await?;
        out.push(a.map(|a| ui_account(a, &cfg)).transpose()?);
    }
    // Fault injection (`/control/short_next_accounts`): a malformed answer, one account short.
    if node.short_accounts > 0 {
        node.short_accounts -= 1;
        out.pop();
    }
    let slot = node.slot().await?;
    with_context(slot, out)
}

fn filter_allows(f: &RpcFilterType, data: &[u8]) -> bool {
    match f {
        RpcFilterType::DataSize(n) => data.len() as u64 == *n,
        RpcFilterType::Memcmp(m) => m.bytes_match(data),
        // Refused before any account is read (see get_program_accounts).
        RpcFilterType::TokenAccountState => false,
    }
}

async fn get_program_accounts(node: &mut Node, p: &[Value]) -> Result<Value, RpcError> {
    let program = pubkey(&req::<String>(p, 0, "program id")?)?;
    let cfg: RpcProgramAccountsConfig = opt(p, 1, "config")?.unwrap_or_default();
    node.min_context_slot(cfg.account_config.min_context_slot).await?;
    let filters = cfg.filters.clone().unwrap_or_default();
    for f in &filters {
        f.verify().map_err(|e| RpcError::invalid_params(format!("Invalid param: {e:?}")))?;
        if matches!(f, RpcFilterType::TokenAccountState) {
            return Err(RpcError::invalid_params(
                "Invalid params: the tokenAccountState filter is not supported by this server",
            ));
        }
    }
    let level = commitment(cfg.account_config.commitment);
    let keys: Vec<Pubkey> = node.index.iter().copied().collect();
    let mut out = vec![];
    for key in keys {
        let Some(a) = node.ctx.banks_client.get_account_with_commitment(key, level).await? else { continue };
        if a.owner != program || a.lamports == 0 || !filters.iter().all(|f| filter_allows(f, &a.data)) {
            continue;
        }
        out.push(RpcKeyedAccount { pubkey: key.to_string(), account: ui_account(a, &cfg.account_config)? });
    }
    if cfg.with_context.unwrap_or(false) {
        let slot = node.slot().await?;
        with_context(slot, out)
    } else {
        serde_json::to_value(out).map_err(RpcError::internal)
    }
}

async fn get_balance(node: &mut Node, p: &[Value]) -> Result<Value, RpcError> {
    let key = pubkey(&req::<String>(p, 0, "pubkey")?)?;
    let cfg: Option<RpcContextConfig> = opt(p, 1, "config")?;
    node.min_context_slot(cfg.and_then(|c| c.min_context_slot)).await?;
    let level = commitment(cfg.and_then(|c| c.commitment));
    let lamports = node.ctx.banks_client.get_balance_with_commitment(key, level).await?;
    let slot = node.slot().await?;
    with_context(slot, lamports)
}

async fn get_recent_prioritization_fees(node: &mut Node, p: &[Value]) -> Result<Value, RpcError> {
    let keys: Vec<String> = opt(p, 0, "account addresses")?.unwrap_or_default();
    if keys.len() > MAX_PRIORITIZATION_FEE_ACCOUNTS {
        return Err(RpcError::invalid_params(format!(
            "Too many inputs provided; max {MAX_PRIORITIZATION_FEE_ACCOUNTS}"
        )));
    }
    let keys = keys.iter().map(|k| pubkey(k)).collect::<Result<Vec<_>, _>>()?;
    let slot = node.slot().await?;
    let from = slot.saturating_sub(PRIORITIZATION_FEE_SLOTS - 1);
    let out: Vec<RpcPrioritizationFee> = node
        .fees
        .range(from..=slot)
        .map(|(s, paid)| RpcPrioritizationFee { slot: *s, prioritization_fee: slot_fee(paid, &keys) })
        .collect();
    serde_json::to_value(out).map_err(RpcError::internal)
}

/// The validator's rule: the slot's minimum compute-unit price, raised to the minimum paid by transactions writing
/// each given account (accounts nobody wrote in the slot do not raise it).
fn slot_fee(paid: &[PaidFee], keys: &[Pubkey]) -> u64 {
    let block_min = paid.iter().map(|f| f.micro_lamports_per_cu).min().unwrap_or(0);
    keys.iter()
        .filter_map(|k| paid.iter().filter(|f| f.writable.contains(k)).map(|f| f.micro_lamports_per_cu).min())
        .fold(block_min, u64::max)
}

async fn get_fee_for_message(node: &mut Node, p: &[Value]) -> Result<Value, RpcError> {
    let data: String = req(p, 0, "message")?;
    let cfg: Option<RpcContextConfig> = opt(p, 1, "config")?;
    node.min_context_slot(cfg.and_then(|c| c.min_context_slot)).await?;
    let level = commitment(cfg.and_then(|c| c.commitment));
    let bytes = decode_bytes(&data, UiTransactionEncoding::Base64, "message")?;
    let message: VersionedMessage = bincode::deserialize(&bytes)
        .map_err(|e| RpcError::invalid_params(format!("failed to deserialize the message: {e}")))?;
    let VersionedMessage::Legacy(message) = message else {
        return Err(RpcError::invalid_params("Invalid params: only legacy messages are supported by this server"));
    };
    let fee = node.ctx.banks_client.get_fee_for_message_with_commitment(message, level).await?;
    let slot = node.slot().await?;
    with_context(slot, fee)
}

impl Node {
    pub(crate) async fn slot(&mut self) -> Result<u64, RpcError> {
        Ok(self.ctx.banks_client.get_root_slot().await?)
    }

    /// `-32016` with `{contextSlot}` when the bank is below the request's `minContextSlot`.
    async fn min_context_slot(&mut self, min: Option<u64>) -> Result<(), RpcError> {
        let Some(min) = min else { return Ok(()) };
        let slot = self.slot().await?;
        if slot >= min {
            return Ok(());
        }
        Err(RpcError {
            code: code::MIN_CONTEXT_SLOT_NOT_REACHED,
            message: "Minimum context slot has not been reached".into(),
            data: Some(json!({ "contextSlot": slot })),
        })
    }

    /// Whether the bank still accepts transactions with this blockhash: it simulates an empty transaction paid by
    /// the bank's funded mint keypair and recent-blockhashed with it, and the bank refuses only an unknown or too
    /// old blockhash with `BlockhashNotFound` (simulation checks no signature).
    async fn blockhash_valid(&mut self, hash: Hash) -> Result<bool, RpcError> {
        let payer = solana_signer::Signer::pubkey(&self.ctx.payer);
        let message = Message::new_with_blockhash(&[], Some(&payer), &hash);
        let tx =
            VersionedTransaction { signatures: vec![Signature::default()], message: VersionedMessage::Legacy(message) };
        let sim = self.ctx.banks_client.simulate_transaction(tx).await?;
        Ok(!matches!(sim.result, Some(Err(solana_transaction_error::TransactionError::BlockhashNotFound))))
    }

    /// Indexes the accounts a processed transaction named and remembers its compute-unit price.
    fn record(&mut self, message: &VersionedMessage, slot: u64) {
        let keys = message.static_account_keys();
        self.index.extend(keys.iter().copied());
        let mut price = 0;
        for ix in message.instructions() {
            let program = keys.get(usize::from(ix.program_id_index));
            if program == Some(&COMPUTE_BUDGET_PROGRAM) && ix.data.len() == 9 && ix.data[0] == SET_COMPUTE_UNIT_PRICE {
                let mut le = [0u8; 8];
                le.copy_from_slice(&ix.data[1..9]);
                price = u64::from_le_bytes(le);
            }
        }
        let writable = (0..keys.len()).filter(|i| message.is_maybe_writable(*i, None)).map(|i| keys[i]).collect();
        self.fees.entry(slot).or_default().push(PaidFee { micro_lamports_per_cu: price, writable });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paid(price: u64, writable: &[Pubkey]) -> PaidFee {
        PaidFee { micro_lamports_per_cu: price, writable: writable.to_vec() }
    }

    #[test]
    fn slot_fee_is_the_block_minimum_raised_by_each_written_accounts_minimum() {
        let (a, b, idle) = (Pubkey::new_unique(), Pubkey::new_unique(), Pubkey::new_unique());
        let slot = [paid(2, &[b]), paid(9, &[a]), paid(5, &[a, b]), paid(4, &[b])];
        assert_eq!(slot_fee(&slot, &[]), 2, "no accounts: the slot's minimum");
        assert_eq!(slot_fee(&slot, &[a]), 5, "a's writers paid 9 and 5");
        assert_eq!(slot_fee(&slot, &[b]), 2);
        assert_eq!(slot_fee(&slot, &[b, a]), 5, "the highest of the accounts' minimums");
        assert_eq!(slot_fee(&slot, &[idle]), 2, "an account nobody wrote does not raise it");
        assert_eq!(slot_fee(&[], &[a]), 0);
    }
}
