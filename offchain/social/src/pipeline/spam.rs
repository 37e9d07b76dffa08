//! Spam rules. Each is a pure check over the item and the recent history kept here; the first that applies names
//! the skip reason.
//!
//! 1. **Link-only** (`link_only`): the text has a link and fewer than [`SpamRules::min_words_besides_links`] words
//!    besides links, mentions (`@x`) and hashtags (`#x`).
//! 2. **Repeated text across authors** (`repeated_across_authors`): the exact text (same content hash) was already
//!    accepted from another author within the de-duplication window; the first copy is kept. (The same author
//!    posting it again is a plain `duplicate_text`.)
//! 3. **New-author flood** (`new_author_flood`): more than [`SpamRules::new_authors_per_window`] authors never seen
//!    before posted within [`SpamRules::window_ms`] on one source; further first posts from unknown authors in that
//!    window are skipped (known authors are unaffected). Authors count as known once one of their items is accepted,
//!    for [`SpamRules::author_memory_ms`].
//! 4. **Per-author rate** (`author_rate`): an author already has [`SpamRules::per_author_per_window`] accepted
//!    items posted within [`SpamRules::window_ms`] of this one.
//!
//! Windows run on the items' posted times, so a backlog read at once (a feed's last 20 entries) is judged by when
//! it was posted, not by when it arrived.

use std::collections::{HashMap, VecDeque};

use super::normalise::is_url;
use crate::item::Skip;

/// The rules' parameters (config `[spam]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpamRules {
    pub min_words_besides_links: usize,
    pub window_ms: u64,
    pub new_authors_per_window: usize,
    pub per_author_per_window: usize,
    pub author_memory_ms: u64,
}

impl Default for SpamRules {
    fn default() -> Self {
        SpamRules {
            min_words_besides_links: 3,
            window_ms: 60_000,
            new_authors_per_window: 30,
            per_author_per_window: 10,
            author_memory_ms: 7 * 24 * 3600 * 1000,
        }
    }
}

/// Rule 1: links and (almost) nothing else.
pub fn link_only(text: &str, min_words: usize) -> bool {
    let mut links = 0;
    let mut words = 0;
    for w in text.split_whitespace() {
        if is_url(w) {
            links += 1;
        } else if !(w.starts_with('@') || w.starts_with('#')) && w.chars().any(char::is_alphanumeric) {
            words += 1;
        }
    }
    links > 0 && words < min_words
}

/// The authors' recent history.
#[derive(Default)]
pub struct Authors {
    /// author → (last accepted posted time, posted times of accepted items within the window).
    known: HashMap<String, (u64, VecDeque<u64>)>,
    /// per source: posted times of first posts by new authors.
    new_by_source: HashMap<String, VecDeque<u64>>,
}

impl Authors {
    /// Rules 3 and 4 for an item by `author` on `source` posted at `at_ms`.
    pub fn check(&self, rules: &SpamRules, source: &str, author: &str, at_ms: u64) -> Result<(), Skip> {
        let near = |t: &u64| t.abs_diff(at_ms) < rules.window_ms;
        match self.known.get(author) {
            Some((_, times)) => {
                if times.iter().filter(|t| near(t)).count() >= rules.per_author_per_window {
                    return Err(Skip::AuthorRate);
                }
            }
            None => {
                let n = self.new_by_source.get(source).map(|v| v.iter().filter(|t| near(t)).count()).unwrap_or(0);
                if n >= rules.new_authors_per_window {
                    return Err(Skip::NewAuthorFlood);
                }
            }
        }
        Ok(())
    }

    /// Records an accepted item.
    pub fn accept(&mut self, rules: &SpamRules, source: &str, author: &str, at_ms: u64) {
        match self.known.get_mut(author) {
            Some((last, times)) => {
                *last = (*last).max(at_ms);
                times.push_back(at_ms);
                while times.len() > rules.per_author_per_window.max(1) * 4 {
                    times.pop_front();
                }
            }
            None => {
                self.known.insert(author.to_string(), (at_ms, VecDeque::from([at_ms])));
                let v = self.new_by_source.entry(source.to_string()).or_default();
                v.push_back(at_ms);
                while v.len() > rules.new_authors_per_window.max(1) * 4 {
                    v.pop_front();
                }
            }
        }
    }

    /// Forgets authors not seen for the memory period and times older than the window (relative to `now_ms`).
    pub fn prune(&mut self, rules: &SpamRules, now_ms: u64) {
        let horizon = now_ms.saturating_sub(rules.window_ms);
        self.known.retain(|_, (last, times)| {
            times.retain(|t| *t >= horizon);
            last.saturating_add(rules.author_memory_ms) >= now_ms
        });
        for v in self.new_by_source.values_mut() {
            v.retain(|t| *t >= horizon);
        }
    }

    /// Marks an author as known without counting a post (the store's authors after a restart).
    pub fn remember(&mut self, author: &str, at_ms: u64) {
        self.known.entry(author.to_string()).or_insert_with(|| (at_ms, VecDeque::new()));
    }

    pub fn known(&self) -> usize {
        self.known.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_only_posts() {
        assert!(link_only("https://spam.example/x", 3));
        assert!(link_only("wow https://spam.example/x @a #b", 3));
        assert!(!link_only("BTC ETF approved today https://news.example/1", 3));
        assert!(!link_only("no link here", 3), "short text without a link is not link-only");
    }

    #[test]
    fn per_author_rate() {
        let r = SpamRules { per_author_per_window: 2, window_ms: 1000, ..Default::default() };
        let mut a = Authors::default();
        for t in [0, 100] {
            assert_eq!(a.check(&r, "s", "bob", t), Ok(()));
            a.accept(&r, "s", "bob", t);
        }
        assert_eq!(a.check(&r, "s", "bob", 200), Err(Skip::AuthorRate));
        assert_eq!(a.check(&r, "s", "bob", 1100), Ok(()), "the first post is out of the window by then");
        assert_eq!(a.check(&r, "s", "carol", 200), Ok(()));
    }

    #[test]
    fn new_author_flood_spares_known_authors() {
        let r = SpamRules { new_authors_per_window: 3, window_ms: 1000, ..Default::default() };
        let mut a = Authors::default();
        a.remember("old", 0);
        for i in 0..3 {
            let who = format!("new{i}");
            assert_eq!(a.check(&r, "s", &who, 10), Ok(()));
            a.accept(&r, "s", &who, 10);
        }
        assert_eq!(a.check(&r, "s", "new3", 20), Err(Skip::NewAuthorFlood));
        assert_eq!(a.check(&r, "other", "new3", 20), Ok(()), "counted per source");
        assert_eq!(a.check(&r, "s", "old", 20), Ok(()));
        assert_eq!(a.check(&r, "s", "new0", 20), Ok(()), "accepted once, known after");
        assert_eq!(a.check(&r, "s", "new3", 2000), Ok(()), "after the window");
    }

    #[test]
    fn prune_forgets() {
        let r = SpamRules { author_memory_ms: 100, window_ms: 10, ..Default::default() };
        let mut a = Authors::default();
        a.accept(&r, "s", "x", 0);
        a.prune(&r, 50);
        assert_eq!(a.known(), 1);
        a.prune(&r, 101);
        assert_eq!(a.known(), 0);
    }
}
