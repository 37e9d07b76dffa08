//! The sources: RSS/Atom feeds, HTTP JSON APIs, the keeper's signals. Each implements [`crate::source::Source`].

pub mod discord;
pub mod http;
pub mod json;
pub mod keeper;
pub mod rss;
pub mod telegram;
