//! Every implemented method round-tripped through the real `solana_client` nonblocking `RpcClient` (HTTP/1.1 on the
//! wire), with real kronos-market instructions, the control paths, and the documented errors.

use anchor_lang::prelude::Pubkey;
use anchor_lang::solana_program::instruction::Instruction;
use anchor_lang::{AccountDeserialize, InstructionData, Space, ToAccountMetas};
use kronos_market::state::{
    Market, Params, Round, CONFIG_SEED, FEED_SEED, MARKET_SEED, MIN_BET_CUTOFF, MIN_REPORT_DELAY, ROUND_SEED,
    VAULT_SEED,
};
use kronos_market::{accounts as acc, instruction as ix, ID};
use kronos_solana_rpc::LocalRpc;
use serde_json::{json, Value};
use solana_client::client_error::ClientErrorKind;
use solana_client::nonblocking::rpc_client::RpcClient;
use solana_client::rpc_config::{RpcAccountInfoConfig, RpcProgramAccountsConfig, RpcSendTransactionConfig};
use solana_client::rpc_filter::{Memcmp, RpcFilterType};
use solana_client::rpc_request::{RpcError, RpcRequest, RpcResponseErrorData};
use solana_commitment_config::CommitmentConfig;
use solana_keypair::Keypair;
use solana_signer::Signer;
use solana_transaction::Transaction;

const SOL: u64 = 1_000_000_000;
const GENESIS: i64 = 1_800_000_000;
const INTERVAL: u32 = 300;
const PRICE: i128 = 6_500_000_000_000;

fn pda(seeds: &[&[u8]]) -> Pubkey {
    Pubkey::find_program_address(seeds, &ID).0
}

fn ixn(accounts: impl ToAccountMetas, data: impl InstructionData) -> Instruction {
    Instruction { program_id: ID, accounts: accounts.to_account_metas(None), data: data.data() }
}

fn params() -> Params {
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

/// `ComputeBudgetInstruction::SetComputeUnitPrice(micro_lamports)`.
fn compute_unit_price(micro_lamports: u64) -> Instruction {
    let mut data = vec![3];
    data.extend_from_slice(&micro_lamports.to_le_bytes());
    Instruction { program_id: "ComputeBudget111111111111111111111111111111".parse().unwrap(), accounts: vec![], data }
}

async fn control(rpc: &LocalRpc, path: &str, body: Value) -> Value {
    let r = reqwest::Client::new().post(format!("{}control/{path}", rpc.url())).json(&body).send().await.unwrap();
    let status = r.status();
    let v: Value = r.json().await.unwrap();
    assert!(status.is_success(), "control/{path}: {status} {v}");
    v
}

async fn raw(rpc: &LocalRpc, body: Value) -> Value {
    reqwest::Client::new().post(rpc.url()).json(&body).send().await.unwrap().json().await.unwrap()
}

/// The JSON-RPC error of a failed client call.
fn rpc_error(e: &solana_client::client_error::ClientError) -> (i64, &RpcResponseErrorData) {
    match e.kind() {
        ClientErrorKind::RpcError(RpcError::RpcResponseError { code, data, .. }) => (*code, data),
        other => panic!("not a JSON-RPC error response: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_method_round_trips_through_rpc_client() {
    let rpc = LocalRpc::start().await.unwrap();
    let client = RpcClient::new_with_commitment(rpc.url(), CommitmentConfig::confirmed());

    // getVersion
    let version = client.get_version().await.unwrap();
    assert!(version.solana_core.starts_with("3."), "{version:?}");
    assert!(version.feature_set.is_some());

    // Control: fund the authority, make it the program's upgrade authority, load the feed, set the clock.
    let authority = Keypair::new();
    let a = authority.pubkey();
    control(&rpc, "account", json!({ "address": a.to_string(), "lamports": 100 * SOL })).await;
    let mut program_data = vec![3, 0, 0, 0];
    program_data.extend_from_slice(&0u64.to_le_bytes());
    program_data.push(1);
    program_data.extend_from_slice(a.as_ref());
    let loader = anchor_lang::solana_program::bpf_loader_upgradeable::ID;
    let program_data_key = Pubkey::find_program_address(&[ID.as_ref()], &loader).0;
    use base64::Engine;
    control(
        &rpc,
        "account",
        json!({
            "address": program_data_key.to_string(),
            "lamports": SOL,
            "owner": loader.to_string(),
            "data": base64::engine::general_purpose::STANDARD.encode(&program_data),
        }),
    )
    .await;
    let feed = Pubkey::new_unique();
    let (chainlink_owner, chainlink_writer) = (Pubkey::new_from_array([0x11; 32]), Pubkey::new_from_array([0x22; 32]));
    control(
        &rpc,
        "feed",
        json!({
            "address": feed.to_string(), "decimals": 8, "description": "BTC / USD",
            "owner": chainlink_owner.to_string(), "writer": chainlink_writer.to_string(),
            "transmissions": [{ "timestamp": GENESIS - 60, "answer": PRICE.to_string() }],
        }),
    )
    .await;
    let warped = control(&rpc, "warp", json!({ "unixTimestamp": GENESIS - 10 })).await;
    assert_eq!(warped["unixTimestamp"], json!(GENESIS - 10));

    // getBalance, getSlot, getBlockHeight, getLatestBlockhash, isBlockhashValid
    assert_eq!(client.get_balance(&a).await.unwrap(), 100 * SOL);
    let slot = client.get_slot().await.unwrap();
    assert_eq!(json!(slot), warped["slot"]);
    assert_eq!(json!(client.get_block_height().await.unwrap()), warped["blockHeight"]);
    let (blockhash, last_valid) =
        client.get_latest_blockhash_with_commitment(CommitmentConfig::confirmed()).await.unwrap();
    assert!(last_valid > client.get_block_height().await.unwrap());
    assert!(client.is_blockhash_valid(&blockhash, CommitmentConfig::confirmed()).await.unwrap());
    let unknown = solana_hash::Hash::new_from_array([7; 32]);
    assert!(!client.is_blockhash_valid(&unknown, CommitmentConfig::confirmed()).await.unwrap());

    // A real kronos-market transaction: configuration, feed approval and a SOL market, at a compute-unit price.
    let config = pda(&[CONFIG_SEED]);
    let approval = pda(&[FEED_SEED, feed.as_ref()]);
    let market = pda(&[MARKET_SEED, a.as_ref(), &1u64.to_le_bytes()]);
    let system = anchor_lang::system_program::ID;
    let ixs = [
        compute_unit_price(7),
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
            acc::InitializeMarket {
                authority: a,
                market,
                vault: pda(&[VAULT_SEED, market.as_ref()]),
                feed,
                feed_approval: approval,
                system_program: system,
            },
            ix::InitializeMarket { id: 1, genesis: GENESIS, interval: INTERVAL, params: params() },
        ),
    ];
    let tx = Transaction::new_signed_with_payer(&ixs, Some(&a), &[&authority], blockhash);

    // getFeeForMessage: one signature at program-test's 5,000 lamports, plus the priority fee (rounded up).
    let fee = client.get_fee_for_message(&tx.message).await.unwrap();
    assert!(fee >= 5_000, "fee {fee}");

    // simulateTransaction
    let sim = client.simulate_transaction(&tx).await.unwrap().value;
    assert_eq!(sim.err, None, "{:?}", sim.logs);
    let program_invoked = format!("Program {ID} invoke");
    assert!(sim.logs.unwrap().iter().any(|l| l.starts_with(&program_invoked)));
    assert!(sim.units_consumed.unwrap() > 0);

    // sendTransaction (with preflight) and getSignatureStatuses (send_and_confirm polls it)
    let before = client.get_balance(&a).await.unwrap();
    let sig = client.send_and_confirm_transaction(&tx).await.unwrap();
    let status = client.get_signature_statuses(&[sig]).await.unwrap().value;
    let status = status[0].as_ref().expect("the sent transaction has a status");
    assert_eq!(status.err, None);
    assert!(status.satisfies_commitment(CommitmentConfig::confirmed()));
    assert!(client.get_balance(&a).await.unwrap() < before - fee + 1, "the fee and rents were paid");

    // getAccountInfo: the market as the program wrote it.
    let account = client.get_account(&market).await.unwrap();
    assert_eq!(account.owner, ID);
    let m = Market::try_deserialize(&mut account.data.as_slice()).unwrap();
    assert_eq!((m.creator, m.authority, m.feed, m.interval), (a, a, feed, INTERVAL));
    assert_eq!(account.data.len(), 8 + Market::INIT_SPACE);

    // getMultipleAccounts
    let nobody = Pubkey::new_unique();
    let many = client.get_multiple_accounts(&[market, config, nobody]).await.unwrap();
    assert_eq!(many.iter().map(Option::is_some).collect::<Vec<_>>(), [true, true, false]);
    assert_eq!(many[0].as_ref().unwrap().data, account.data);

    // getProgramAccounts with dataSize and memcmp (the market's creator at offset 8)
    let by_creator = |creator: Pubkey| RpcProgramAccountsConfig {
        filters: Some(vec![
            RpcFilterType::DataSize((8 + Market::INIT_SPACE) as u64),
            RpcFilterType::Memcmp(Memcmp::new_raw_bytes(8, creator.to_bytes().to_vec())),
        ]),
        account_config: RpcAccountInfoConfig {
            encoding: Some(solana_account_decoder_client_types::UiAccountEncoding::Base64),
            ..RpcAccountInfoConfig::default()
        },
        ..RpcProgramAccountsConfig::default()
    };
    let found = client.get_program_ui_accounts_with_config(&ID, by_creator(a)).await.unwrap();
    assert_eq!(found.iter().map(|(k, _)| *k).collect::<Vec<_>>(), [market]);
    assert_eq!(found[0].1.data.decode(), Some(account.data.clone()));
    assert!(client.get_program_ui_accounts_with_config(&ID, by_creator(nobody)).await.unwrap().is_empty());
    let all = client.get_program_accounts(&ID).await.unwrap();
    assert!(all.iter().any(|(k, _)| *k == config) && all.iter().any(|(k, _)| *k == approval), "{all:?}");
    assert!(all.iter().all(|(_, acct)| acct.owner == ID));

    // getRecentPrioritizationFees: the market's writer paid 7 µlamports per CU; an untouched account adds nothing.
    let fees = client.get_recent_prioritization_fees(&[market]).await.unwrap();
    assert_eq!(fees.iter().map(|f| f.prioritization_fee).max(), Some(7), "{fees:?}");

    // Control: warp past genesis and start round 0 — the program reads the clock the control set.
    control(&rpc, "warp", json!({ "slots": 2, "unixTimestamp": GENESIS + 1 })).await;
    let round = pda(&[ROUND_SEED, market.as_ref(), &0u64.to_le_bytes()]);
    let start = |epoch: u64, round: Pubkey, blockhash| {
        Transaction::new_signed_with_payer(
            &[ixn(acc::StartRound { payer: a, market, round, feed, system_program: system }, ix::StartRound { epoch })],
            Some(&a),
            &[&authority],
            blockhash,
        )
    };
    let blockhash = client.get_latest_blockhash().await.unwrap();
    client.send_and_confirm_transaction(&start(0, round, blockhash)).await.unwrap();
    let r = Round::try_deserialize(&mut client.get_account_data(&round).await.unwrap().as_slice()).unwrap();
    assert_eq!(r.start_ts, GENESIS);

    // sendTransaction's preflight failure: -32002 with the simulation (error and logs) in data. Epoch 5 has not begun.
    let round5 = pda(&[ROUND_SEED, market.as_ref(), &5u64.to_le_bytes()]);
    let early = start(5, round5, blockhash);
    let e = client.send_transaction(&early).await.unwrap_err();
    let (code, data) = rpc_error(&e);
    assert_eq!(code, -32002);
    let RpcResponseErrorData::SendTransactionPreflightFailure(sim) = data else { panic!("no simulation: {data:?}") };
    let expected = solana_instruction::error::InstructionError::Custom(u32::from(
        kronos_market::error::MarketError::RoundNotStarted,
    ));
    assert_eq!(
        sim.err.clone().map(solana_transaction_error::TransactionError::from),
        Some(solana_transaction_error::TransactionError::InstructionError(0, expected.clone()))
    );
    assert!(sim.logs.as_ref().is_some_and(|l| !l.is_empty()));
    assert!(!client.get_account(&round5).await.is_ok_and(|a| a.lamports > 0));

    // With skipPreflight the same transaction lands and fails on chain: its status carries the error.
    let cfg = RpcSendTransactionConfig { skip_preflight: true, ..RpcSendTransactionConfig::default() };
    let sig = client.send_transaction_with_config(&early, cfg).await.unwrap();
    let status = client.get_signature_statuses(&[sig]).await.unwrap().value;
    assert_eq!(
        status[0].as_ref().and_then(|s| s.err.clone()),
        Some(solana_transaction_error::TransactionError::InstructionError(0, expected))
    );

    // Control: a new transmission is written into the feed account in the store's format.
    control(&rpc, "feed/transmit", json!({ "address": feed.to_string(), "timestamp": GENESIS + 5, "answer": 42 }))
        .await;
    let data = client.get_account_data(&feed).await.unwrap();
    let latest = kronos_market::chainlink::latest(&data).unwrap().unwrap();
    assert_eq!((latest.timestamp, latest.answer), ((GENESIS + 5) as u32, 42));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_requests_get_the_documented_errors() {
    let rpc = LocalRpc::start().await.unwrap();
    let client = RpcClient::new(rpc.url());

    // Invalid params: -32602, through the client and on the wire.
    let e = client.send::<Value>(RpcRequest::GetAccountInfo, json!(["not-a-pubkey"])).await.unwrap_err();
    assert_eq!(rpc_error(&e).0, -32602);
    let v = raw(&rpc, json!({ "jsonrpc": "2.0", "id": 9, "method": "getBalance", "params": [] })).await;
    assert_eq!((v["error"]["code"].clone(), v["id"].clone()), (json!(-32602), json!(9)));

    // Unknown method: -32601; malformed JSON: -32700; not JSON-RPC 2.0: -32600.
    let e = client.send::<Value>(RpcRequest::Custom { method: "getNothing" }, json!([])).await.unwrap_err();
    assert_eq!(rpc_error(&e).0, -32601);
    let v: Value = reqwest::Client::new().post(rpc.url()).body("{").send().await.unwrap().json().await.unwrap();
    assert_eq!(v["error"]["code"], json!(-32700));
    let v = raw(&rpc, json!({ "jsonrpc": "1.0", "id": 1, "method": "getSlot" })).await;
    assert_eq!(v["error"]["code"], json!(-32600));

    // A minContextSlot the bank has not reached: -32016 with the slot it is at.
    let slot = client.get_slot().await.unwrap();
    let v = raw(
        &rpc,
        json!({ "jsonrpc": "2.0", "id": 3, "method": "getBalance",
        "params": [Pubkey::new_unique().to_string(), { "minContextSlot": slot + 10 }] }),
    )
    .await;
    assert_eq!((v["error"]["code"].clone(), v["error"]["data"]["contextSlot"].clone()), (json!(-32016), json!(slot)));
    let v =
        raw(&rpc, json!({ "jsonrpc": "2.0", "id": 4, "method": "getSlot", "params": [{ "minContextSlot": slot }] }))
            .await;
    assert_eq!(v["result"], json!(slot));

    // A batch answers each request.
    let v = raw(
        &rpc,
        json!([
            { "jsonrpc": "2.0", "id": 1, "method": "getSlot" },
            { "jsonrpc": "2.0", "id": 2, "method": "getSlots" },
        ]),
    )
    .await;
    assert!(v[0]["result"].is_u64() && v[1]["error"]["code"] == json!(-32601), "{v}");

    // A bad signature is refused before simulation: -32003.
    let k = Keypair::new();
    control(&rpc, "account", json!({ "address": k.pubkey().to_string(), "lamports": SOL })).await;
    let blockhash = client.get_latest_blockhash().await.unwrap();
    let transfer = solana_system_interface::instruction::transfer(&k.pubkey(), &Pubkey::new_unique(), 1_000_000);
    let mut tx = Transaction::new_signed_with_payer(&[transfer], Some(&k.pubkey()), &[&k], blockhash);
    tx.signatures[0] = Keypair::new().sign_message(&tx.message_data());
    let e = client.send_transaction(&tx).await.unwrap_err();
    assert_eq!(rpc_error(&e).0, -32003);

    // Control requests that name a wrong field are refused with 400.
    let r = reqwest::Client::new()
        .post(format!("{}control/feed/transmit", rpc.url()))
        .json(&json!({ "address": Pubkey::new_unique().to_string(), "timestamp": 1, "answer": 1 }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::BAD_REQUEST);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blockhash_expires_as_the_bank_ages_it() {
    let rpc = LocalRpc::start().await.unwrap();
    let client = RpcClient::new_with_commitment(rpc.url(), CommitmentConfig::confirmed());
    let k = Keypair::new();
    control(&rpc, "account", json!({ "address": k.pubkey().to_string(), "lamports": SOL })).await;
    let transfer = |blockhash| {
        let ix = solana_system_interface::instruction::transfer(&k.pubkey(), &Pubkey::new_unique(), 1_000_000);
        Transaction::new_signed_with_payer(&[ix], Some(&k.pubkey()), &[&k], blockhash)
    };
    let (hash, last_valid) = client.get_latest_blockhash_with_commitment(CommitmentConfig::confirmed()).await.unwrap();
    let height = client.get_block_height().await.unwrap();

    // The bank accepts it until it has aged out of the bank's processing window; then isBlockhashValid says so and
    // the bank refuses it in preflight. (Under program-test a blockhash ages with each warp and with wall time, so
    // this comes before lastValidBlockHeight; see README.)
    assert!(client.is_blockhash_valid(&hash, CommitmentConfig::confirmed()).await.unwrap());
    client.send_and_confirm_transaction(&transfer(hash)).await.unwrap();
    let mut warps = 0;
    while client.is_blockhash_valid(&hash, CommitmentConfig::confirmed()).await.unwrap() {
        assert!(warps < 300, "the blockhash never expired");
        control(&rpc, "warp", json!({ "slots": 1 })).await;
        warps += 1;
    }
    assert!(warps > 0);
    assert!(client.get_block_height().await.unwrap() > height);
    assert!(last_valid > height);
    let e = client.send_transaction(&transfer(hash)).await.unwrap_err();
    let (code, data) = rpc_error(&e);
    assert_eq!(code, -32002);
    let RpcResponseErrorData::SendTransactionPreflightFailure(sim) = data else { panic!("no simulation: {data:?}") };
    assert_eq!(
        sim.err.clone().map(solana_transaction_error::TransactionError::from),
        Some(solana_transaction_error::TransactionError::BlockhashNotFound)
    );
}
