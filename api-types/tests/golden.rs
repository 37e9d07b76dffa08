//! One golden answer per type, written as the keeper has always sent it (field order and encodings included): each
//! parses into its type and serialises back to the same bytes, so a renamed field, a changed enum string or a
//! reordered field fails here before it reaches the dApp or the bot.

use kronos_api_types::*;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Parses `golden` as `T` and checks that it serialises back byte for byte.
fn round_trip<T: DeserializeOwned + Serialize + std::fmt::Debug>(endpoint: &str, golden: &str) -> T {
    let v: T = parse(endpoint, golden.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(serde_json::to_string(&v).unwrap(), golden, "{endpoint}: not the same bytes back");
    v
}

const HEALTH: &str = r#"{"chains":{"base":{"endpoints":[{"endpoint":"127.0.0.1:8545","last_error":null,"up":true},{"endpoint":"rpc.example","last_error":"connection refused","up":false}],"head_block":1234,"head_time":1764620000,"healthy":true,"lag_s":2,"last_error":null,"last_success_ms":1764620001000,"rpc_endpoint":0},"ethereum":{"endpoints":[],"head_block":0,"head_time":0,"healthy":false,"lag_s":0,"last_error":"chain id 5 is not 1","last_success_ms":0,"rpc_endpoint":1}},"markets":[{"chain":"base","lease":{"epoch":3,"last_loss":null,"leader":"a1b2c3d4","role":"leader","since_ms":1764619000000},"market":1},{"chain":"base","lease":{"epoch":3,"last_loss":"fenced at 1764618000000","leader":"ffff0000","role":"standby","since_ms":1764619000000},"market":2},{"chain":"ethereum","lease":{"epoch":0,"last_loss":null,"leader":null,"role":"single","since_ms":0},"market":1}],"status":"degraded","store":true}"#;

#[test]
fn health() {
    let h: Health = round_trip("/health", HEALTH);
    assert_eq!(h.status, HealthStatus::Degraded);
    assert_eq!(h.chains["base"].endpoints[1].last_error.as_deref(), Some("connection refused"));
    let roles: Vec<LeaseRole> = h.markets.iter().map(|m| m.lease.role).collect();
    assert_eq!(roles, [LeaseRole::Leader, LeaseRole::Standby, LeaseRole::Single]);
    round_trip::<Health>("/health", r#"{"chains":{},"markets":[],"status":"ok","store":true}"#);
}

const MARKETS: &str = r##"{"live":[{"betting_epoch":42,"cancelled":2,"chain":"base","delays":[1,2,1],"execute_gas":[181234,179001,180000],"last_close_price":"97100","last_lock_price":"97012.5","last_p_up":0.6123,"last_result":"#40 up","lease":{"epoch":0,"last_loss":null,"leader":null,"role":"single","since_ms":0},"market":1,"missed":0,"next_checkpoint":43,"pair":"BTC/USD","pool_down_wei":"0","pool_epoch":42,"pool_up_wei":"1500000000000000000","settled":38},{"betting_epoch":0,"cancelled":0,"chain":"base","delays":[],"execute_gas":[],"last_close_price":null,"last_lock_price":null,"last_p_up":null,"last_result":"","lease":{"epoch":7,"last_loss":null,"leader":"0badcafe","role":"leader","since_ms":1764619000000},"market":2,"missed":0,"next_checkpoint":0,"pair":"ETH/USD","pool_down_wei":"","pool_epoch":null,"pool_up_wei":"","settled":0}],"markets":[{"chain":"base","contract":"0x5FbDB2315678afecb367f032d93F642f64180aa3","feed":"0xe7f1725E7734CE288F8367e1Bb143E90bb3F0512","feed_decimals":8,"genesis":1764600000,"interval_s":300,"market_id":1,"max_price_age_s":3600,"pair":"BTC/USD","sequencer":null,"settle_window_s":3600,"token":"0x0000000000000000000000000000000000000000"},{"chain":"base","contract":"0x5FbDB2315678afecb367f032d93F642f64180aa3","feed":"0x9fE46736679d2D9a65F0992F2272dE9f3c7fa6e0","feed_decimals":8,"genesis":1764600000,"interval_s":3600,"market_id":2,"max_price_age_s":86400,"pair":null,"sequencer":"0xCf7Ed3AccA5a467e9e704C703E8D87F634fB0Fc9","settle_window_s":3600,"token":"0xDc64a140Aa3E981100a9becA4E685f962f0cF6C9"}]}"##;

#[test]
fn markets() {
    let m: Markets = round_trip("/api/markets", MARKETS);
    assert_eq!(m.live[0].last_p_up, Some(0.6123));
    assert_eq!(m.live[1].lease.role, LeaseRole::Leader);
    assert_eq!(m.markets[1].pair, None);
    assert_eq!((m.live[0].pool_epoch, m.live[1].pool_epoch), (Some(42), None));
}

const ROUNDS: &str = r#"[{"chain":"base","market_id":1,"epoch":41,"state":"settled","lock_price":"97012.5","close_price":"97100","outcome":"up","reason":null,"up_wei":"1500000000000000000","down_wei":"500000000000000000","reward_wei":"1940000000000000000","treasury_fee_wei":"60000000000000000","delay_blocks":1},{"chain":"base","market_id":1,"epoch":40,"state":"cancelled","lock_price":"97000","close_price":null,"outcome":"none","reason":"one_sided_pool","up_wei":"1000","down_wei":"0","reward_wei":null,"treasury_fee_wei":null,"delay_blocks":2},{"chain":"base","market_id":1,"epoch":42,"state":"locked","lock_price":null,"close_price":null,"outcome":null,"reason":null,"up_wei":"0","down_wei":"0","reward_wei":null,"treasury_fee_wei":null,"delay_blocks":null}]"#;

#[test]
fn rounds() {
    let r: Vec<Round> = round_trip("/api/rounds", ROUNDS);
    let states: Vec<RoundState> = r.iter().map(|r| r.state).collect();
    assert_eq!(states, [RoundState::Settled, RoundState::Cancelled, RoundState::Locked]);
    assert_eq!((r[0].outcome, r[1].outcome, r[2].outcome), (Some(Outcome::Up), Some(Outcome::None), None));
    assert_eq!(r[1].reason, Some(CancelReason::OneSidedPool));
}

const PREDICTIONS: &str = r#"{"predictions":[{"brier":1521,"chain":"base","commitment":"0x9c22ff5f21f0b81b113e63f7db6da94fedef11b2119b4088b89664fb9a3cb658","committed":true,"epoch":41,"hit":true,"market":1,"outcome":"up","p_up_bps":6100,"publisher":"0x70997970C51812dc3A010C7d01b50e0d17dc79C8","reveal_tx":"0x5e1f","revealed":true},{"brier":null,"chain":"base","commitment":"0x2a","committed":false,"epoch":42,"hit":null,"market":1,"outcome":null,"p_up_bps":null,"publisher":"0x70997970C51812dc3A010C7d01b50e0d17dc79C8","reveal_tx":null,"revealed":false}],"track_records":[{"brier_sum":"84321","chain":"base","committed":40,"expired":1,"hits":22,"misses":15,"publisher":"0x70997970C51812dc3A010C7d01b50e0d17dc79C8","voided":2}]}"#;

#[test]
fn predictions() {
    let p: Predictions = round_trip("/api/predictions", PREDICTIONS);
    assert_eq!((p.predictions[0].p_up_bps, p.predictions[1].p_up_bps), (Some(6100), None));
    assert_eq!(p.track_records[0].hits + p.track_records[0].misses, 37);
    assert_eq!((p.predictions[0].reveal_tx.as_deref(), p.predictions[1].reveal_tx.as_deref()), (Some("0x5e1f"), None));
    // A keeper from before the publisher and the reveal transaction were listed leaves them out.
    let old =
        PREDICTIONS.replace(r#""publisher":"0x70997970C51812dc3A010C7d01b50e0d17dc79C8","reveal_tx":"0x5e1f","#, "");
    let p: Predictions = parse("/api/predictions", old.as_bytes()).unwrap();
    assert_eq!((p.predictions[0].publisher.as_deref(), p.predictions[0].reveal_tx.as_deref()), (None, None));
}

const CHAINS: &str = r#"{"chains":[{"chain_id":8453,"display":"Base","explorer":null,"kind":"evm","market":"0x5FbDB2315678afecb367f032d93F642f64180aa3","markets":[{"bet_cutoff":30,"decimals":18,"execute_delay":12,"genesis":1764600000,"id":1,"interval":300,"pair":"BTC/USD","params":[{"fee_bps":300,"from_epoch":0,"min_bet":"1000000000000000"},{"fee_bps":250,"from_epoch":500,"min_bet":"1000000000000000"}],"symbol":"ETH","token":"0x0000000000000000000000000000000000000000"}],"name":"base","native_symbol":"ETH","registry":"0xe7f1725E7734CE288F8367e1Bb143E90bb3F0512","rpc_urls":["http://127.0.0.1:8545/"]},{"chain_id":137,"display":"Polygon PoS","explorer":"https://polygonscan.com","kind":"evm","market":"0x5FbDB2315678afecb367f032d93F642f64180aa3","markets":[],"name":"polygon","native_symbol":"POL","registry":null,"rpc_urls":[]}],"forecasts_public":true}"#;

/// A Solana cluster's entry: a SOL market driven, an SPL-token market refused (its feed's approval revoked).
const SOLANA: &str = r#"{"cluster":"localnet","display":"Solana","explorer":null,"kind":"solana","markets":[{"address":"7xKXtg2CW87d97TXJSDpbD5jBkheTqA83TZRuJosgAsU","bet_cutoff":10,"decimals":9,"feed":"Cv4T27XbjVoKUYwP72NQQanvZeA7W4YF9L4EnYT9kx5o","genesis":1800000000,"id":1,"interval":300,"mint":null,"pair":"BTC/USD","params":[{"fee_bps":300,"from_epoch":0,"min_bet":"1000"}],"paused":false,"refused":null,"symbol":"SOL"},{"address":"9WzDXwBbmkg8ZTbNMqUxvQRAyrZzDsGYdLVL9zYtAWWM","bet_cutoff":10,"decimals":6,"feed":"Cv4T27XbjVoKUYwP72NQQanvZeA7W4YF9L4EnYT9kx5o","genesis":1800000000,"id":2,"interval":300,"mint":"EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v","pair":"BTC/USD","params":[{"fee_bps":300,"from_epoch":0,"min_bet":"1000"},{"fee_bps":200,"from_epoch":40,"min_bet":"5000"}],"paused":true,"refused":"the feed's approval was revoked","symbol":"EPjF…Dt1v"}],"name":"solana","native_symbol":"SOL","program":"KronQk6VRVG1eV1wT2yZrJ7tWkX3Kj3d3Xz2m6Xq9nA","unavailable":null}"#;

#[test]
fn chains() {
    let c: Chains = round_trip("/api/chains", CHAINS);
    let Chain::Evm(base) = &c.chains[0] else { panic!("base is an EVM chain: {:?}", c.chains[0]) };
    assert_eq!((base.kind, c.chains[0].kind(), c.chains[1].name()), (ChainKind::Evm, ChainKind::Evm, "polygon"));
    assert_eq!(base.markets[0].params[1].from_epoch, 500);
    assert!(c.forecasts_public);
    // A Solana cluster beside them: the EVM entries' bytes are unchanged, the Solana entry read by its kind.
    let mixed = CHAINS.replacen(r#"],"forecasts_public""#, &format!(r#",{SOLANA}],"forecasts_public""#), 1);
    let c: Chains = round_trip("/api/chains", &mixed);
    assert_eq!(serde_json::to_string(&c.chains[0]).unwrap(), serde_json::to_string(&base).unwrap());
    let Chain::Solana(sol) = &c.chains[2] else { panic!("the third entry is the Solana cluster: {:?}", c.chains[2]) };
    assert_eq!((sol.kind, sol.name.as_str(), sol.cluster.as_deref()), (ChainKind::Solana, "solana", Some("localnet")));
    let (sol_market, spl) = (&sol.markets[0], &sol.markets[1]);
    assert_eq!((sol_market.mint.as_deref(), sol_market.decimals, sol_market.symbol.as_str()), (None, Some(9), "SOL"));
    assert_eq!((spl.mint.as_deref(), spl.decimals), (Some("EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v"), Some(6)));
    assert_eq!((spl.paused, spl.refused.is_some(), spl.params[1].from_epoch), (true, true, 40));
    // A keeper from before `[api] publish_forecasts` leaves the field out: its forecasts are sealed.
    let old: Chains = parse("/api/chains", br#"{"chains":[]}"#).unwrap();
    assert!(!old.forecasts_public);
}

const CHECKPOINTS: &str = r#"[{"chain":"base","market_id":1,"idx":42,"ts":1764612600,"round_id":"18446744073709562776","price":"97012.5","status":"valid","tx_hash":"0x2f1e","block":1201,"delay_blocks":1},{"chain":"base","market_id":1,"idx":43,"ts":1764612900,"round_id":"0","price":"0","status":"sequencer_grace_period","tx_hash":null,"block":null,"delay_blocks":null}]"#;

#[test]
fn checkpoints() {
    let c: Vec<Checkpoint> = round_trip("/api/checkpoints", CHECKPOINTS);
    assert_eq!((c[0].status, c[1].status), (CheckpointStatus::Valid, CheckpointStatus::SequencerGracePeriod));
}

#[test]
fn queries() {
    let q: RoundsQuery = round_trip("/api/rounds", r#"{"chain":"base","market":1,"limit":5}"#);
    assert_eq!(q.limit, Some(5));
    assert_eq!(round_trip::<RoundsQuery>("/api/rounds", "{}"), RoundsQuery::default());
    round_trip::<PredictionsQuery>("/api/predictions", r#"{"limit":5}"#);
    round_trip::<CheckpointsQuery>("/api/checkpoints", r#"{"chain":"base","market":1,"from":40}"#);
    round_trip::<WsQuery>("/ws", r#"{"types":"forecast,round_settled"}"#);
}

#[test]
fn every_enum_string_is_its_wire_string_both_ways() {
    fn check<T: std::str::FromStr<Err = UnknownValue> + std::fmt::Display + PartialEq + std::fmt::Debug + Serialize>(
        all: &[(T, &str)],
    ) {
        for (v, wire) in all {
            assert_eq!(v.to_string(), *wire);
            assert_eq!(serde_json::to_string(v).unwrap(), format!("\"{wire}\""));
            assert_eq!(&wire.parse::<T>().unwrap(), v);
        }
    }
    check(&[(HealthStatus::Ok, "ok"), (HealthStatus::Degraded, "degraded")]);
    check(&[(LeaseRole::Single, "single"), (LeaseRole::Leader, "leader"), (LeaseRole::Standby, "standby")]);
    check(&[(RoundState::Locked, "locked"), (RoundState::Settled, "settled"), (RoundState::Cancelled, "cancelled")]);
    check(&[(Outcome::None, "none"), (Outcome::Up, "up"), (Outcome::Down, "down"), (Outcome::Tie, "tie")]);
    check(&[
        (CancelReason::LockPriceUnusable, "lock_price_unusable"),
        (CancelReason::ClosePriceUnusable, "close_price_unusable"),
        (CancelReason::Tie, "tie"),
        (CancelReason::OneSidedPool, "one_sided_pool"),
        (CancelReason::Expired, "expired"),
        (CancelReason::Unknown, "unknown"),
    ]);
    check(&[(ChainKind::Evm, "evm"), (ChainKind::Solana, "solana")]);
    check(&[
        (CheckpointStatus::None, "none"),
        (CheckpointStatus::Valid, "valid"),
        (CheckpointStatus::Stale, "stale"),
        (CheckpointStatus::BadAnswer, "bad_answer"),
        (CheckpointStatus::SequencerDown, "sequencer_down"),
        (CheckpointStatus::SequencerGracePeriod, "sequencer_grace_period"),
    ]);
    let e = "Up".parse::<Outcome>().unwrap_err();
    assert_eq!(e, UnknownValue { what: "Outcome", value: "Up".into() });
    assert_eq!(e.to_string(), r#""Up" is none of the values of Outcome"#);
}

#[test]
fn a_malformed_answer_names_the_endpoint_and_the_field() {
    let bad_role = MARKETS.replacen(r#""role":"leader""#, r#""role":"boss""#, 1);
    let e = parse::<Markets>("/api/markets", bad_role.as_bytes()).unwrap_err();
    assert_eq!((e.endpoint.as_str(), e.field.as_str()), ("/api/markets", "live[1].lease.role"));
    assert!(e.detail.contains("unknown variant `boss`"), "{}", e.detail);
    assert!(e.to_string().starts_with("/api/markets answered an unexpected field live[1].lease.role: "));

    let missing = PREDICTIONS.replacen(r#""hits":22,"#, "", 1);
    let e = parse::<Predictions>("/api/predictions", missing.as_bytes()).unwrap_err();
    assert_eq!(e.field, "track_records[0]");
    assert!(e.detail.contains("missing field `hits`"), "{}", e.detail);

    let wrong_type = HEALTH.replacen(r#""head_block":1234"#, r#""head_block":"1234""#, 1);
    let e = parse::<Health>("/health", wrong_type.as_bytes()).unwrap_err();
    assert_eq!(e.field, "chains.base.head_block");

    let e = parse::<Health>("/health", b"Bad Gateway").unwrap_err();
    assert_eq!((e.field.as_str(), e.to_string().contains("/health")), (".", true));
    let e = parse::<Vec<Round>>("/api/rounds", b"[] []").unwrap_err();
    assert_eq!(e.field, ".", "trailing data is refused");

    // A chain entry is read by its kind: an unknown kind, and a Solana entry without its program, name the field.
    let cosmos = CHAINS.replacen(r#""kind":"evm""#, r#""kind":"cosmos""#, 1);
    let e = parse::<Chains>("/api/chains", cosmos.as_bytes()).unwrap_err();
    assert_eq!(e.field, "chains[0]");
    assert!(e.detail.starts_with("kind: unknown variant `cosmos`"), "{}", e.detail);
    let no_program = SOLANA.replacen(r#""program":"KronQk6VRVG1eV1wT2yZrJ7tWkX3Kj3d3Xz2m6Xq9nA","#, "", 1);
    let e = parse::<Chains>("/api/chains", format!(r#"{{"chains":[{no_program}]}}"#).as_bytes()).unwrap_err();
    assert_eq!(e.field, "chains[0]");
    assert!(e.detail.contains("missing field `program`"), "{}", e.detail);
    let bad_decimals = SOLANA.replacen(r#""decimals":6"#, r#""decimals":"6""#, 1);
    let e = parse::<Chains>("/api/chains", format!(r#"{{"chains":[{bad_decimals}]}}"#).as_bytes()).unwrap_err();
    assert!(e.detail.starts_with("markets[1].decimals: invalid type"), "{}", e.detail);

    let extra = HEALTH.replacen(r#""store":true"#, r#""store":true,"version":"2""#, 1);
    assert!(parse::<Health>("/health", extra.as_bytes()).is_ok(), "a field added by a newer keeper is ignored");
}
