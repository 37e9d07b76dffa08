//! De-duplication: exact (the [`super::normalise::content_hash`] of the words) and near-duplicate (64-bit SimHash
//! over word pairs, Charikar 2002).
//!
//! Two texts are near-duplicates when their SimHashes differ in at most [`DEFAULT_HAMMING`] = 7 bits of 64.
//! SimHash distance estimates the angle between the two word-pair vectors (`bits ≈ 64·θ/π`): one word changed or
//! added in a 20-word post is θ ≈ 0.3 rad, about 6 bits; unrelated texts sit near 32 bits (binomial, sd 4), so
//! 7 bits is more than 6 sd away from chance (P < 1e-9). Manku, Jain and Das Sarma's 3 bits (WWW 2007) was chosen
//! for web pages with hundreds of features; posts have tens, so each changed word moves more bits. Texts under
//! [`MIN_NEAR_WORDS`] words are compared exactly only: on a handful of words one changed word moves many bits, and
//! short posts ("BTC up", "BTC down") are not copies of each other. Lookups use the same paper's block trick: the
//! 64 bits are cut into 8 blocks of 8, two hashes within 7 bits agree exactly on at least one block (pigeonhole),
//! so only entries sharing a block are compared (about 8/256 of the window).

use std::collections::{HashMap, VecDeque};

use super::normalise::fnv1a;

/// Near-duplicate threshold in bits (of 64). At most 7: the 8-block index finds every pair within 7 bits.
pub const DEFAULT_HAMMING: u32 = 7;
const BLOCKS: usize = 8;
/// Texts with fewer words are only compared exactly.
pub const MIN_NEAR_WORDS: usize = 6;

/// SimHash of word pairs (shingles of 2; one word counts alone): each pair's FNV-1a votes +1/-1 per bit.
pub fn simhash(words: &[String]) -> u64 {
    let mut v = [0i32; 64];
    let mut add = |h: u64| {
        for (i, x) in v.iter_mut().enumerate() {
            if h >> i & 1 == 1 {
                *x += 1;
            } else {
                *x -= 1;
            }
        }
    };
    if words.len() == 1 {
        add(fnv1a(words[0].as_bytes()));
    }
    for w in words.windows(2) {
        let mut b = Vec::with_capacity(w[0].len() + w[1].len() + 1);
        b.extend_from_slice(w[0].as_bytes());
        b.push(b' ');
        b.extend_from_slice(w[1].as_bytes());
        add(fnv1a(&b));
    }
    v.iter().enumerate().fold(0u64, |acc, (i, x)| if *x > 0 { acc | 1 << i } else { acc })
}

pub fn hamming(a: u64, b: u64) -> u32 {
    (a ^ b).count_ones()
}

/// What the window says about a text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    New,
    /// The same text, first posted by this author.
    Exact {
        first_author: String,
    },
    /// Within the threshold of an earlier text.
    Near {
        distance: u32,
    },
}

struct Entry {
    content_hash: u64,
    simhash: Option<u64>,
    at_ms: u64,
}

/// Recent fingerprints: the last `window_ms` of accepted texts, at most `capacity` of them (oldest evicted).
pub struct Window {
    window_ms: u64,
    capacity: usize,
    hamming: u32,
    entries: VecDeque<Entry>,
    /// Index of the first entry in `entries` (entries are numbered from 0 since the start).
    first: u64,
    exact: HashMap<u64, (u64, String)>,
    blocks: [HashMap<u8, Vec<u64>>; BLOCKS],
}

fn block(h: u64, i: usize) -> u8 {
    (h >> (8 * i)) as u8
}

impl Window {
    pub fn new(window_ms: u64, capacity: usize, hamming: u32) -> Window {
        Window {
            window_ms,
            capacity: capacity.max(1),
            hamming: hamming.min(DEFAULT_HAMMING),
            entries: VecDeque::new(),
            first: 0,
            exact: HashMap::new(),
            blocks: Default::default(),
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Drops entries older than the window (relative to `now_ms`) or beyond the capacity.
    pub fn prune(&mut self, now_ms: u64) {
        while let Some(e) = self.entries.front() {
            let old = e.at_ms.saturating_add(self.window_ms) < now_ms;
            if !old && self.entries.len() <= self.capacity {
                break;
            }
            let e = self.entries.pop_front().expect("front exists");
            let idx = self.first;
            self.first += 1;
            if self.exact.get(&e.content_hash).is_some_and(|(i, _)| *i == idx) {
                self.exact.remove(&e.content_hash);
            }
            if let Some(s) = e.simhash {
                for (i, table) in self.blocks.iter_mut().enumerate() {
                    if let Some(v) = table.get_mut(&block(s, i)) {
                        v.retain(|x| *x != idx);
                        if v.is_empty() {
                            table.remove(&block(s, i));
                        }
                    }
                }
            }
        }
    }

    /// Checks a text against the window (does not add it).
    pub fn check(&self, content_hash: u64, simhash: Option<u64>) -> Seen {
        if let Some((_, author)) = self.exact.get(&content_hash) {
            return Seen::Exact { first_author: author.clone() };
        }
        if let Some(s) = simhash {
            for (i, table) in self.blocks.iter().enumerate() {
                for idx in table.get(&block(s, i)).map(|v| v.as_slice()).unwrap_or(&[]) {
                    let e = &self.entries[(idx - self.first) as usize];
                    if let Some(t) = e.simhash {
                        let d = hamming(s, t);
                        if d <= self.hamming {
                            return Seen::Near { distance: d };
                        }
                    }
                }
            }
        }
        Seen::New
    }

    /// Adds an accepted text. `simhash` is `None` for texts too short for near-duplicate checks.
    pub fn add(&mut self, content_hash: u64, simhash: Option<u64>, author: &str, at_ms: u64) {
        let idx = self.first + self.entries.len() as u64;
        self.exact.entry(content_hash).or_insert_with(|| (idx, author.to_string()));
        if let Some(s) = simhash {
            for (i, table) in self.blocks.iter_mut().enumerate() {
                table.entry(block(s, i)).or_default().push(idx);
            }
        }
        self.entries.push_back(Entry { content_hash, simhash, at_ms });
    }
}

#[cfg(test)]
mod tests {
    use super::super::normalise::words;
    use super::*;

    #[test]
    fn near_duplicates_are_close_and_others_far() {
        let a = simhash(&words("Bitcoin breaks above its all time high as ETF inflows reach a new record this week"));
        let b = simhash(&words("Bitcoin breaks above its all time high as ETF inflows reach a new record this week!!"));
        let c =
            simhash(&words("Bitcoin breaks above its all time high as ETF inflows reach a new record this week again"));
        let d =
            simhash(&words("Ethereum developers schedule the next network upgrade for the spring after testnet runs"));
        assert_eq!(hamming(a, b), 0, "punctuation does not change the words");
        assert!(hamming(a, c) > 0 && hamming(a, c) <= DEFAULT_HAMMING, "one word added: {}", hamming(a, c));
        assert!(hamming(a, d) > 10, "unrelated texts are far apart: {}", hamming(a, d));
    }

    #[test]
    fn window_finds_exact_near_and_forgets_old() {
        let mut w = Window::new(1000, 100, 7);
        w.add(1, Some(0b1111), "alice", 0);
        assert_eq!(w.check(1, None), Seen::Exact { first_author: "alice".into() });
        assert_eq!(w.check(2, Some(0b0111)), Seen::Near { distance: 1 });
        assert_eq!(w.check(2, Some(0b1111 ^ 0xF0F0)), Seen::New, "8 bits away");
        assert_eq!(w.check(2, Some(0b1111 ^ 0x0001_0101_0101_0101)), Seen::Near { distance: 7 }, "7 blocks differ");
        assert_eq!(w.check(2, Some(0b1111 ^ 0x0101_0101_0101_0101)), Seen::New, "8 bits, every block differs");
        w.prune(1000);
        assert_eq!(w.len(), 1, "exactly at the window's end it stays");
        w.prune(1001);
        assert!(w.is_empty());
        assert_eq!(w.check(1, Some(0b1111)), Seen::New);
    }

    #[test]
    fn capacity_evicts_the_oldest() {
        let mut w = Window::new(u64::MAX / 2, 2, 7);
        for i in 0..3u64 {
            w.add(i, Some(i << 32), "a", i);
        }
        w.prune(3);
        assert_eq!(w.len(), 2);
        assert_eq!(w.check(0, None), Seen::New);
        assert_eq!(w.check(2, None), Seen::Exact { first_author: "a".into() });
    }
}
