//! The embedded dApp's pages for another server to serve (`kronos web` in front of a keeper's API): the same bytes
//! and headers (Content-Security-Policy, ETag, `no-cache`) as the keeper's own listener serves from [`crate::web`].

use axum::http::HeaderMap;
use axum::response::Response;

/// The Content-Security-Policy of every page.
pub const CSP: &str = crate::web::CSP;

/// `/`: the dApp's page.
pub async fn index(headers: HeaderMap) -> Response {
    crate::web::index(headers).await
}

/// `/assets/app.js`.
pub async fn app_js(headers: HeaderMap) -> Response {
    crate::web::app_js(headers).await
}

/// `/assets/style.css`.
pub async fn style_css(headers: HeaderMap) -> Response {
    crate::web::style_css(headers).await
}
