//! Wall-clock mode: slots advance by themselves and the Clock sysvar (what the program reads) follows the wall
//! clock at the configured speed. Also `getGenesisHash`.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anchor_lang::prelude::Clock;
use kronos_solana_rpc::{LocalRpc, WallClock};
use solana_client::nonblocking::rpc_client::RpcClient;
use solana_commitment_config::CommitmentConfig;

async fn clock(client: &RpcClient) -> Clock {
    let clock_sysvar: anchor_lang::prelude::Pubkey = "SysvarC1ock11111111111111111111111111111111".parse().unwrap();
    let data = client.get_account_data(&clock_sysvar).await.unwrap();
    bincode::deserialize(&data).unwrap()
}

fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slots_advance_and_the_clock_follows_the_wall_at_its_speed() {
    let speed = 30;
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    let rpc = LocalRpc::start_wall_clock(addr, WallClock { speed, slot_ms: 100 }).await.unwrap();
    let client = RpcClient::new_with_commitment(rpc.url(), CommitmentConfig::confirmed());

    let c0 = clock(&client).await;
    let t0 = Instant::now();
    // Starts at the real unix time (the server started a moment ago; a slow machine may be some seconds late).
    assert!((c0.unix_timestamp - unix_now()).abs() <= 5 * speed as i64, "{} vs {}", c0.unix_timestamp, unix_now());

    // Slots come by themselves: wait for five more, without warping.
    let deadline = Instant::now() + Duration::from_secs(60);
    while client.get_slot().await.unwrap() < c0.slot + 5 {
        assert!(Instant::now() < deadline, "the bank made no slots by itself");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let c1 = clock(&client).await;
    let wall = t0.elapsed().as_secs_f64();
    assert!(c1.slot >= c0.slot + 5, "{} then {}", c0.slot, c1.slot);
    // Five slots of 100 ms are at least half a wall second, 15 chain seconds at speed 30 (real time would be ≤ 1).
    let chain = (c1.unix_timestamp - c0.unix_timestamp) as f64;
    assert!(chain >= 10.0, "the clock moved {chain} s in {wall:.2} s of wall time");
    assert!(chain <= (wall + 1.0) * speed as f64, "the clock moved {chain} s in {wall:.2} s of wall time");

    // getGenesisHash: the bank's genesis, the same on every call.
    let genesis = client.get_genesis_hash().await.unwrap();
    assert_ne!(genesis, solana_hash::Hash::default());
    assert_eq!(client.get_genesis_hash().await.unwrap(), genesis);
    // `/control/genesis`: the server answers as a node of another cluster; a bad hash is refused.
    let other = solana_hash::Hash::new_from_array([7; 32]);
    let http = reqwest::Client::new();
    let set =
        |hash: String| http.post(format!("{}control/genesis", rpc.url())).json(&serde_json::json!({ "hash": hash }));
    assert!(set(other.to_string()).send().await.unwrap().status().is_success());
    assert_eq!(client.get_genesis_hash().await.unwrap(), other);
    assert_eq!(set("not base58!".into()).send().await.unwrap().status(), reqwest::StatusCode::BAD_REQUEST);
    assert_eq!(client.get_genesis_hash().await.unwrap(), other);
}
