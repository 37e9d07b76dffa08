//! Binance USDⓈ-M Futures client.
//!
//! - [`sign`]: HMAC-SHA256 of the exact `totalParams` (query string followed by body), hex.
//! - [`FuturesClient`]: signed and public REST calls with `X-MBX-APIKEY`, `recvWindow`, server-time offset sync and a
//!   retry on -1021, request-weight tracking from `X-MBX-USED-WEIGHT-1M`, back-off on 429 (honouring `Retry-After`)
//!   and a full stop on 418. A 5xx or a timeout on an order placement is [`BinanceError::UnknownStatus`]: the caller
//!   must resolve it by querying its own client order id, never by sending again blindly.
//! - [`filters`]: step size, tick size and minimum notional from `exchangeInfo`, applied before sending.
//! - [`stream`]: the user-data stream (listenKey, keep-alive, reconnect) parsed into typed events.
//! - [`sim`]: a simulated account (fills at the mark with taker fees, stops on the mark) for paper trading and tests.

pub mod client;
pub mod filters;
pub mod sim;
pub mod stream;
pub mod types;

pub use client::{BinanceError, ClientConfig, ClientStats, Credentials, FuturesClient, Network, Security};
pub use filters::{SymbolFilters, SymbolStatus};
pub use types::*;

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// `HMAC-SHA256(secret, total_params)` as lowercase hex — the `signature` parameter of SIGNED endpoints.
pub fn sign(secret: &str, total_params: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(total_params.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Binance's documented example for POST /fapi/v1/order (USDⓈ-M Futures "SIGNED Endpoint Examples").
    #[test]
    fn signature_matches_the_documented_example() {
        let secret = "2b5eb11e18796d12d88f13dc27dbbd02c2cc51ff7059765ed9821957d82bb4d9";
        let params = "symbol=BTCUSDT&side=BUY&type=LIMIT&quantity=1&price=9000&timeInForce=GTC&recvWindow=5000&timestamp=1591702613943";
        assert_eq!(sign(secret, params), "3c661234138461fcc7a7d8746c6558c9842d4e10870d2ecbedf7777cad694af9");
    }

    /// The spot API documents the same scheme with its own keys; the same function reproduces it.
    #[test]
    fn signature_matches_the_spot_documented_example() {
        let secret = "NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j";
        let params = "symbol=LTCBTC&side=BUY&type=LIMIT&timeInForce=GTC&quantity=1&price=0.1&recvWindow=5000&timestamp=1499827319559";
        assert_eq!(sign(secret, params), "c8db56825ae71d6d79447849e617115f4a920fa2acdcab2b053c4b2838bd6b71");
    }
}
