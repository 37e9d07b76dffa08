//! The browser dApp (`web/`, built by `tools/build-web.mjs`), embedded in the binary and served on the API's
//! listener (`/`, `/assets/…`) or alone by `kronos web` in front of a keeper's API; and the two API endpoints it
//! reads besides the keeper's others: `/api/chains` (what a wallet needs: chain ids, the market contract, each
//! market's stake token and clock) and `/api/checkpoints` (the settlement proofs).
//!
//! Every page is served with a strict Content-Security-Policy: scripts, styles and connections to this origin only
//! (the wallet's own RPC traffic never passes through the page), no frames, no forms, no inline script.

use alloy::primitives::U256;
use anyhow::Context;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use kronos_api_types as wire;

use crate::api::ApiState;

pub(crate) const INDEX_HTML: &str = include_str!("../../web/dist/index.html");
pub(crate) const APP_JS: &[u8] = include_bytes!("../../web/dist/app.js");
pub(crate) const STYLE_CSS: &[u8] = include_bytes!("../../web/dist/style.css");

/// The policy of every page: nothing but this origin.
pub(crate) const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// A strong validator of embedded bytes (FNV-1a, stable across builds of the same bytes).
fn etag(bytes: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("\"{h:016x}-{}\"", bytes.len())
}

/// One embedded file with its type, revalidated on every load (`no-cache` with an ETag: a new binary's files are
/// never served stale, an unchanged one costs a 304).
pub(crate) fn asset(headers: &HeaderMap, bytes: &'static [u8], content_type: &'static str) -> Response {
    let tag = etag(bytes);
    let hit = headers.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()).is_some_and(|v| v == tag);
    let mut r = if hit { StatusCode::NOT_MODIFIED.into_response() } else { Bytes::from_static(bytes).into_response() };
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Ok(v) = HeaderValue::from_str(&tag) {
        h.insert(header::ETAG, v);
    }
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    r
}

pub(crate) async fn index(headers: HeaderMap) -> Response {
    asset(&headers, INDEX_HTML.as_bytes(), "text/html; charset=utf-8")
}

pub(crate) async fn app_js(headers: HeaderMap) -> Response {
    asset(&headers, APP_JS, "text/javascript; charset=utf-8")
}

pub(crate) async fn style_css(headers: HeaderMap) -> Response {
    asset(&headers, STYLE_CSS, "text/css; charset=utf-8")
}

/// How long `/api/chains`' body is served before it is read from the contracts again: a market's clock and stake
/// never change, but its fee and minimum bet do (`scheduleParams`), and a page reads `/api/chains` on every redraw.
pub(crate) const CHAINS_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(10);

/// `/api/chains`' body and when it was read. One reader at a time refreshes it (the others wait for its answer rather
/// than read the contracts too); a refresh that fails while an earlier body is held serves that body (a market's
/// addresses and clock are unchanged; only a fee change shows late).
#[derive(Default)]
pub(crate) struct ChainsCache {
    body: tokio::sync::Mutex<Option<(std::time::Instant, Bytes)>>,
}

impl ChainsCache {
    /// The body, read by `read` when none is held or the one held is `max_age` old.
    async fn get<F, Fut>(&self, max_age: std::time::Duration, read: F) -> anyhow::Result<Bytes>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = anyhow::Result<Bytes>>,
    {
        let mut held = self.body.lock().await;
        if let Some((at, b)) = held.as_ref() {
            if at.elapsed() < max_age {
                return Ok(b.clone());
            }
        }
        match read().await {
            Ok(b) => {
                *held = Some((std::time::Instant::now(), b.clone()));
                Ok(b)
            }
            Err(e) => match held.as_ref() {
                Some((_, b)) => {
                    tracing::warn!(error = %format!("{e:#}"), "could not read the markets' configuration again; serving the last one");
                    Ok(b.clone())
                }
                None => Err(e),
            },
        }
    }
}

/// `/api/chains`' body, read from the contracts now. Each market's parameters: the set in force (`paramsFor` at epoch
/// 0 — the contract's current set — with the epoch it applies from) and a scheduled one (`paramsFor` at the last
/// epoch, when it applies from a later epoch); the contract keeps no older sets, so rounds before the first listed
/// have a fee the page does not know (it says so).
async fn read_chains(s: &ApiState) -> anyhow::Result<Bytes> {
    let mut out = Vec::new();
    for c in &s.chains {
        let mut markets = Vec::new();
        for st in s.stats.iter().filter(|m| m.lock().chain == c.name) {
            let (id, pair) = {
                let m = st.lock();
                (m.market, m.pair.clone())
            };
            let cfg = c.market.getMarket(U256::from(id)).call().await?;
            let (symbol, decimals) = if cfg.token.is_zero() {
                (c.cfg.chain.native_symbol.clone(), 18)
            } else {
                let t = kronos_contracts::mocks::MockERC20::new(cfg.token, c.provider.clone());
                (t.symbol().call().await?, t.decimals().call().await?)
            };
            let current = c.market.paramsFor(U256::from(id), U256::ZERO).call().await?;
            let last = c.market.paramsFor(U256::from(id), U256::from(u64::MAX)).call().await?;
            markets.push(wire::ChainMarket {
                id,
                pair,
                token: hex(cfg.token),
                symbol,
                decimals,
                genesis: cfg.genesis.to::<u64>(),
                interval: cfg.interval,
                bet_cutoff: cfg.betCutoff,
                execute_delay: cfg.executeDelay,
                params: market_params(
                    (current.fromEpoch, current.feeBps, current.minBet),
                    (last.fromEpoch, last.feeBps, last.minBet),
                ),
            });
        }
        out.push(wire::Chain::Evm(wire::EvmChain {
            name: c.name.clone(),
            display: c.cfg.chain.name.clone(),
            kind: wire::ChainKind::Evm,
            chain_id: c.cfg.chain.chain_id,
            native_symbol: c.cfg.chain.native_symbol.clone(),
            explorer: if c.cfg.local { None } else { c.cfg.chain.explorer.clone() },
            market: hex(c.cfg.market),
            registry: c.cfg.registry.map(hex),
            rpc_urls: if c.cfg.local { c.cfg.rpc.iter().filter_map(shareable_rpc).collect() } else { Vec::new() },
            markets,
        }));
    }
    for rt in &s.solana {
        out.push(wire::Chain::Solana(solana_chain(rt, &s.store).await?));
    }
    Ok(Bytes::from(serde_json::to_vec(&wire::Chains { chains: out, forecasts_public: s.publish_forecasts })?))
}

/// A Solana cluster as `/api/chains` lists it: the markets the keeper drives (or refuses), read from their accounts,
/// their feeds and stake mints. When the cluster does not answer, the entry says why (`unavailable`) and lists the
/// markets from the store without what only the accounts say: a dead Solana RPC never takes the EVM chains' entries
/// (the whole body) with it.
async fn solana_chain(
    rt: &crate::solana::SolanaRuntime,
    store: &crate::store::Store,
) -> anyhow::Result<wire::SolanaChain> {
    let driven = rt.markets.lock().clone();
    let (markets, unavailable) = match read_solana_markets(rt, &driven).await {
        Ok(m) => (m, None),
        Err(e) => {
            let why = kronos_common::Redactor::global().redact(&format!("{e:#}"));
            tracing::warn!(chain = %rt.name, error = %why, "/api/chains: the Solana markets' accounts could not be read");
            let rows = store.markets().await?;
            let listed = driven
                .iter()
                .filter_map(|mi| {
                    let row = rows.iter().find(|r| r.chain == rt.name && r.contract == mi.address.to_string())?;
                    let mint = (row.token != "native").then(|| row.token.clone());
                    Some(wire::SolanaMarket {
                        address: row.contract.clone(),
                        bet_cutoff: None,
                        decimals: mint.is_none().then_some(SOL_DECIMALS),
                        feed: row.feed.clone(),
                        genesis: row.genesis,
                        id: mi.id,
                        interval: u32::try_from(row.interval_s).unwrap_or(0),
                        symbol: stake_symbol(mint.as_deref(), &rt.cfg.chain.native_symbol),
                        mint,
                        pair: format!("market {}", mi.id),
                        params: Vec::new(),
                        paused: false,
                        refused: mi.refused.clone(),
                    })
                })
                .collect();
            (listed, Some(why))
        }
    };
    Ok(wire::SolanaChain {
        // A local node is no cluster of the catalogue's (its `solana` entry names mainnet-beta).
        cluster: if rt.cfg.local { Some("localnet".into()) } else { rt.cfg.chain.cluster.clone() },
        display: rt.cfg.chain.name.clone(),
        explorer: if rt.cfg.local { None } else { rt.cfg.chain.explorer.clone() },
        kind: wire::ChainKind::Solana,
        markets,
        name: rt.name.clone(),
        native_symbol: rt.cfg.chain.native_symbol.clone(),
        program: rt.cfg.program.to_string(),
        unavailable,
    })
}

/// SOL's decimals (lamports).
const SOL_DECIMALS: u8 = 9;

/// The stake's symbol: the native coin's, or the SPL mint shortened (`EPjF…Dt1v`; a token has no symbol on chain).
fn stake_symbol(mint: Option<&str>, native: &str) -> String {
    match mint {
        None => native.to_string(),
        Some(m) if m.len() > 8 => format!("{}…{}", &m[..4], &m[m.len() - 4..]),
        Some(m) => m.to_string(),
    }
}

/// The decimals of an SPL mint account (the token programs' layout: a 36-byte optional mint authority, the 8-byte
/// supply, then the decimals).
fn mint_decimals(data: &[u8]) -> Option<u8> {
    (data.len() >= 82).then(|| data[44])
}

/// Each driven market's account, its feed's header (the pair) and, for SPL stakes, its mint (the decimals).
async fn read_solana_markets(
    rt: &crate::solana::SolanaRuntime,
    driven: &[crate::solana::driver::MarketInfo],
) -> anyhow::Result<Vec<wire::SolanaMarket>> {
    use anchor_lang::AccountDeserialize;
    use kronos_market::state::Market;
    let keys: Vec<_> = driven.iter().flat_map(|m| [m.address, m.feed]).collect();
    let accounts = solana_accounts(rt, &keys).await?;
    let mut read = Vec::new();
    for (mi, pair) in driven.iter().zip(accounts.chunks(2)) {
        let acc = pair[0].as_ref().with_context(|| format!("market {} is gone", mi.address))?;
        let m = Market::try_deserialize(&mut acc.data.as_slice())
            .map_err(|e| anyhow::anyhow!("market {} is not a Market account: {e}", mi.address))?;
        let feed_pair = pair[1]
            .as_ref()
            .and_then(|f| kronos_market::chainlink::header(&f.data).ok())
            .map(|h| String::from_utf8_lossy(&h.description).trim_end_matches('\0').to_string())
            .map(|d| kronos_common::catalogue::normalize_pair(&d))
            .filter(|d| !d.is_empty());
        read.push((mi, m, feed_pair));
    }
    let mints: Vec<_> = read.iter().filter(|(_, m, _)| !m.is_native()).map(|(_, m, _)| m.mint).collect();
    let mint_accounts = solana_accounts(rt, &mints).await?;
    let mut mint_accounts = mints.iter().zip(mint_accounts);
    let mut out = Vec::new();
    for (mi, m, feed_pair) in read {
        let (mint, decimals) = if m.is_native() {
            (None, SOL_DECIMALS)
        } else {
            let (k, acc) = mint_accounts.next().context("one mint account per SPL market")?;
            let d = acc.as_ref().and_then(|a| mint_decimals(&a.data));
            (
                Some(k.to_string()),
                d.with_context(|| format!("mint {k} of market {} is not a mint account", mi.address))?,
            )
        };
        let param = |from_epoch: u64, p: &kronos_market::state::Params| wire::MarketParams {
            fee_bps: p.fee_bps,
            from_epoch,
            min_bet: p.min_bet.to_string(),
        };
        let mut params = vec![param(0, &m.params)];
        if let Some(p) = &m.pending_params {
            params.push(param(m.pending_from, p));
        }
        out.push(wire::SolanaMarket {
            address: mi.address.to_string(),
            bet_cutoff: Some(m.params_for(u64::MAX).bet_cutoff),
            decimals: Some(decimals),
            feed: m.feed.to_string(),
            genesis: m.genesis,
            id: mi.id,
            interval: m.interval,
            symbol: stake_symbol(mint.as_deref(), &rt.cfg.chain.native_symbol),
            mint,
            pair: feed_pair.unwrap_or_else(|| format!("market {}", mi.id)),
            params,
            paused: m.paused,
            refused: mi.refused.clone(),
        });
    }
    Ok(out)
}

/// The accounts at `keys` (at confirmed), one answer per key in order; data decoded here (the client's own decoding
/// panics on data it cannot decode).
async fn solana_accounts(
    rt: &crate::solana::SolanaRuntime,
    keys: &[anchor_lang::prelude::Pubkey],
) -> anyhow::Result<Vec<Option<solana_account::Account>>> {
    use futures::FutureExt;
    let mut out = Vec::with_capacity(keys.len());
    for chunk in keys.chunks(100) {
        let config = solana_client::rpc_config::RpcAccountInfoConfig {
            encoding: Some(solana_client::rpc_config::UiAccountEncoding::Base64),
            commitment: Some(solana_commitment_config::CommitmentConfig::confirmed()),
            ..Default::default()
        };
        let got = rt
            .client
            .call(|c| c.get_multiple_ui_accounts_with_config(chunk, config.clone()).boxed())
            .await
            .map_err(|e| anyhow::anyhow!("getMultipleAccounts: {}", crate::solana::client::transport_kind(&e)))?;
        anyhow::ensure!(
            got.value.len() == chunk.len(),
            "getMultipleAccounts answered {} accounts for {} keys",
            got.value.len(),
            chunk.len()
        );
        for (k, ui) in chunk.iter().zip(got.value) {
            out.push(match ui {
                None => None,
                Some(ui) => Some(
                    ui.decode::<solana_account::Account>()
                        .with_context(|| format!("account {k}'s data is not decodable"))?,
                ),
            });
        }
    }
    Ok(out)
}

/// A market's parameter sets as `/api/chains` lists them, from `paramsFor` at epoch 0 (the set in force, `fromEpoch`
/// the epoch it has applied from: 0 for the creation's, later for a scheduled set that became current) and at the last
/// epoch (a scheduled set when its `fromEpoch` is later; the set in force again otherwise).
fn market_params(current: (u64, u16, u128), last: (u64, u16, u128)) -> Vec<wire::MarketParams> {
    let p = |(from_epoch, fee_bps, min_bet): (u64, u16, u128)| wire::MarketParams {
        from_epoch,
        fee_bps,
        min_bet: min_bet.to_string(),
    };
    let mut out = vec![p(current)];
    if last.0 > current.0 {
        out.push(p(last));
    }
    out
}

pub(crate) async fn chains(State(s): State<ApiState>) -> Response {
    match s.web_chains.get(CHAINS_MAX_AGE, || read_chains(&s)).await {
        Ok(b) => ([(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], b).into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("the markets' configuration could not be read: {e}"))
            .into_response(),
    }
}

/// `/api/checkpoints?chain=…&market=…`: the recorded checkpoints (Chainlink round id, price, timestamp, the
/// transaction that recorded it), the proof of each settled round's lock and close prices.
pub(crate) async fn checkpoints(State(s): State<ApiState>, Query(q): Query<wire::CheckpointsQuery>) -> Response {
    let limit = q.limit.unwrap_or(50).clamp(1, 500);
    let from = match q.from {
        Some(f) => f.max(0),
        None => {
            let next = s
                .stats
                .iter()
                .find_map(|m| {
                    let m = m.lock();
                    (m.chain == q.chain && m.market as i64 == q.market).then_some(m.next_checkpoint as i64)
                })
                .unwrap_or(0);
            (next - limit).max(0)
        }
    };
    match s.store.checkpoints(&q.chain, q.market, from, limit).await {
        Ok(rows) => axum::Json(rows.into_iter().map(checkpoint).collect::<Vec<_>>()).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// An address as `/api/chains` writes it: `0x` and lower-case hex (its serde form).
fn hex(a: alloy::primitives::Address) -> String {
    format!("{a:#x}")
}

/// A stored checkpoint as `/api/checkpoints` shows it.
fn checkpoint(c: crate::store::CheckpointRow) -> wire::Checkpoint {
    use kronos_contracts::CheckpointStatus as S;
    let status = match c.status {
        S::None => wire::CheckpointStatus::None,
        S::Valid => wire::CheckpointStatus::Valid,
        S::Stale => wire::CheckpointStatus::Stale,
        S::BadAnswer => wire::CheckpointStatus::BadAnswer,
        S::SequencerDown => wire::CheckpointStatus::SequencerDown,
        S::SequencerGracePeriod => wire::CheckpointStatus::SequencerGracePeriod,
    };
    wire::Checkpoint {
        chain: c.chain,
        market_id: c.market_id,
        idx: c.idx,
        ts: c.ts,
        round_id: c.round_id,
        price: c.price,
        status,
        tx_hash: c.tx_hash,
        block: c.block,
        delay_blocks: c.delay_blocks,
    }
}

/// A local chain's RPC URL as a wallet may be given it: only a loopback host, and only when it carries nothing that
/// could be a secret (no user or password, no path, no query: where providers put API keys).
pub(crate) fn shareable_rpc(u: &url::Url) -> Option<String> {
    let loopback = match u.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(a)) => a.is_loopback(),
        Some(url::Host::Ipv6(a)) => a.is_loopback(),
        None => false,
    };
    (loopback && crate::rpc::url_secrets(u).is_empty()).then(|| u.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_rpc_urls_without_secrets_are_shared() {
        let ok = |s: &str| shareable_rpc(&url::Url::parse(s).unwrap());
        assert_eq!(ok("http://127.0.0.1:8545").as_deref(), Some("http://127.0.0.1:8545/"));
        assert!(ok("http://localhost:8545/").is_some());
        assert!(ok("http://[::1]:8545").is_some());
        assert_eq!(ok("http://user:pw@127.0.0.1:8545"), None);
        assert_eq!(ok("http://127.0.0.1:8545/v2/SECRETKEY"), None);
        assert_eq!(ok("http://127.0.0.1:8545/?apikey=SECRET"), None);
        assert_eq!(ok("https://base-mainnet.example/v2/KEY"), None);
        assert_eq!(ok("http://10.0.0.5:8545"), None);
    }

    /// `/api/checkpoints` serves the same bytes as the store's rows did before the API types, for every status.
    #[test]
    fn checkpoints_are_the_same_bytes_as_the_rows() {
        for status in kronos_contracts::CheckpointStatus::ALL.iter().copied() {
            let row = crate::store::CheckpointRow {
                chain: "base".into(),
                market_id: 1,
                idx: 42,
                ts: 1_764_600_000,
                round_id: "18446744073709551617".into(),
                price: "97012.5".into(),
                status,
                tx_hash: Some("0xaa".into()),
                block: Some(10),
                delay_blocks: None,
            };
            let before = serde_json::to_string(&row).unwrap();
            assert_eq!(serde_json::to_string(&checkpoint(row)).unwrap(), before);
        }
    }

    /// `/api/chains` writes addresses (market, registry, stake token) as their serde form did before the API types.
    #[test]
    fn chain_addresses_are_written_as_before() {
        let a: alloy::primitives::Address = "0x5FbDB2315678afecb367f032d93F642f64180aa3".parse().unwrap();
        assert_eq!(serde_json::to_value(a).unwrap(), serde_json::Value::String(hex(a)));
    }

    /// The set in force keeps the epoch it applies from (a promoted set is not listed as from round 0, which gave
    /// older rounds its fee), and a scheduled set is listed only when it applies later.
    #[test]
    fn market_params_keep_the_epoch_each_set_applies_from() {
        let got = |c, l| market_params(c, l).into_iter().map(|p| (p.from_epoch, p.fee_bps)).collect::<Vec<_>>();
        assert_eq!(got((0, 300, 1), (0, 300, 1)), vec![(0, 300)]);
        assert_eq!(got((0, 300, 1), (42, 500, 1)), vec![(0, 300), (42, 500)]);
        assert_eq!(got((42, 500, 1), (42, 500, 1)), vec![(42, 500)]);
        assert_eq!(got((42, 500, 1), (60, 100, 1)), vec![(42, 500), (60, 100)]);
        assert_eq!(market_params((0, 300, 7), (0, 300, 7))[0].min_bet, "7");
    }

    /// `/api/chains` is read again once it is `max_age` old (a fee scheduled later shows), not on every request, and a
    /// failed read serves the body held.
    #[tokio::test]
    async fn the_chains_body_is_read_again_when_old() {
        let cache = ChainsCache::default();
        let reads = std::sync::atomic::AtomicU32::new(0);
        let read = |ok: bool| {
            let n = reads.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
            async move {
                anyhow::ensure!(ok, "the node does not answer");
                Ok(Bytes::from(format!("body {n}")))
            }
        };
        let long = std::time::Duration::from_secs(3600);
        assert!(ChainsCache::default().get(long, || read(false)).await.is_err(), "nothing held: the error");
        assert_eq!(cache.get(long, || read(true)).await.unwrap(), "body 2");
        assert_eq!(cache.get(long, || read(true)).await.unwrap(), "body 2", "held while young");
        assert_eq!(cache.get(std::time::Duration::ZERO, || read(true)).await.unwrap(), "body 3", "read again when old");
        assert_eq!(
            cache.get(std::time::Duration::ZERO, || read(false)).await.unwrap(),
            "body 3",
            "a failed read: the last"
        );
        assert_eq!(reads.load(std::sync::atomic::Ordering::SeqCst), 4);
    }

    /// A Solana stake as `/api/chains` names it: SOL, or an SPL mint shortened; the mint's decimals at the token
    /// programs' offset (after the optional authority and the supply), none from an account too short to be a mint
    /// (the browser test reads a real mint's 6).
    #[test]
    fn a_solana_stake_is_named_and_its_mint_decimals_read() {
        assert_eq!(stake_symbol(None, "SOL"), "SOL");
        assert_eq!(stake_symbol(Some("EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v"), "SOL"), "EPjF…Dt1v");
        let mut mint = vec![0u8; 82];
        mint[0] = 1; // COption::Some(authority)
        mint[36..44].copy_from_slice(&1_000_000u64.to_le_bytes());
        mint[44] = 6;
        mint[45] = 1; // initialised
        assert_eq!(mint_decimals(&mint), Some(6));
        assert_eq!(mint_decimals(&mint[..81]), None);
    }

    #[test]
    fn assets_have_types_validators_and_the_policy() {
        let r = asset(&HeaderMap::new(), APP_JS, "text/javascript; charset=utf-8");
        assert_eq!(r.status(), StatusCode::OK);
        let tag = r.headers()[header::ETAG].to_str().unwrap().to_string();
        assert_eq!(r.headers()[header::CONTENT_SECURITY_POLICY], CSP);
        assert_eq!(r.headers()[header::CACHE_CONTROL], "no-cache");
        let mut h = HeaderMap::new();
        h.insert(header::IF_NONE_MATCH, HeaderValue::from_str(&tag).unwrap());
        assert_eq!(asset(&h, APP_JS, "text/javascript").status(), StatusCode::NOT_MODIFIED);
        assert_ne!(etag(APP_JS), etag(STYLE_CSS));
        assert!(INDEX_HTML.contains("/assets/app.js") && !INDEX_HTML.contains("<script>"), "no inline script");
    }
}
