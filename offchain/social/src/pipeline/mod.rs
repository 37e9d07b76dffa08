//! The pipeline: normalise → de-duplicate → spam rules → assets → sentiment → score. Pure: every decision is a
//! function of the item, the state kept here and the clock passed in; the runner calls [`Pipeline::process`] for
//! each batch and stores what it accepts.

pub mod assets;
pub mod dedup;
pub mod normalise;
pub mod score;
pub mod sentiment;
pub mod spam;

use std::collections::BTreeMap;

use crate::item::{Change, Item, RawItem, Skip};
use crate::store::Fingerprint;

/// The pipeline's parameters.
#[derive(Debug, Clone)]
pub struct Rules {
    pub max_text_bytes: usize,
    /// How long accepted texts are remembered for de-duplication and the repeated-text rule.
    pub dedup_window_ms: u64,
    /// At most this many texts remembered (oldest forgotten first).
    pub dedup_capacity: usize,
    /// Near-duplicate threshold in bits (≤ 7).
    pub hamming: u32,
    pub spam: spam::SpamRules,
    pub score: score::ScoreRules,
    pub assets: assets::AssetBook,
}

impl Default for Rules {
    fn default() -> Self {
        Rules {
            max_text_bytes: normalise::DEFAULT_MAX_TEXT_BYTES,
            dedup_window_ms: 24 * 3600 * 1000,
            dedup_capacity: 200_000,
            hamming: dedup::DEFAULT_HAMMING,
            spam: spam::SpamRules::default(),
            score: score::ScoreRules::default(),
            assets: assets::AssetBook::default(),
        }
    }
}

/// Who a batch comes from.
#[derive(Debug, Clone)]
pub struct Origin {
    pub name: String,
    pub kind: String,
    /// The source's weight in the score.
    pub weight: f64,
    /// Spam rules do not apply (the keeper's own signals).
    pub trusted: bool,
}

/// What became of a batch.
#[derive(Debug, Default, Clone)]
pub struct Outcome {
    pub accepted: Vec<Item>,
    pub skipped: BTreeMap<Skip, u64>,
    /// Edited items scored again, with their edit time (the store applies each to the stored item of the same id).
    pub edits: Vec<(Item, u64)>,
    /// Item ids deleted at their source.
    pub deletes: Vec<String>,
}

impl Outcome {
    pub fn skipped_total(&self) -> u64 {
        self.skipped.values().sum()
    }

    pub fn skips(&self) -> Vec<(Skip, u64)> {
        self.skipped.iter().map(|(k, v)| (*k, *v)).collect()
    }
}

/// The pipeline and its state (de-duplication window, authors, per-asset baselines).
pub struct Pipeline {
    rules: Rules,
    window: dedup::Window,
    authors: spam::Authors,
    baselines: score::Baselines,
    sentiment: sentiment::Sentiment,
}

impl Pipeline {
    pub fn new(rules: Rules) -> Pipeline {
        let window = dedup::Window::new(rules.dedup_window_ms, rules.dedup_capacity, rules.hamming);
        Pipeline {
            rules,
            window,
            authors: Default::default(),
            baselines: Default::default(),
            sentiment: sentiment::Sentiment::new(),
        }
    }

    pub fn rules(&self) -> &Rules {
        &self.rules
    }

    /// Refills the state from the store after a restart: recent fingerprints, known authors, asset mentions.
    pub fn warm(&mut self, fingerprints: &[Fingerprint], authors: &[(String, u64)], mentions: &[(String, u64)]) {
        for f in fingerprints {
            self.window.add(f.content_hash, (f.simhash != 0).then_some(f.simhash), "", f.at_ms);
        }
        for (a, at) in authors {
            self.authors.remember(a, *at);
        }
        for (asset, at) in mentions {
            self.baselines.add(&self.rules.score, asset, *at);
        }
    }

    /// The current z-score of an asset's volume.
    pub fn current_z(&self, asset: &str, now_ms: u64) -> f64 {
        self.baselines.current_z(&self.rules.score, asset, now_ms)
    }

    /// Runs a batch through the pipeline. Accepted items are remembered (for de-duplication, spam and baselines)
    /// as they are accepted, so a batch is de-duplicated within itself too.
    pub fn process(&mut self, origin: &Origin, items: Vec<Result<RawItem, Skip>>, now_ms: u64) -> Outcome {
        let mut out = Outcome::default();
        self.window.prune(now_ms);
        self.authors.prune(&self.rules.spam, now_ms);
        for raw in items {
            match raw.and_then(|r| self.one(origin, r, now_ms)) {
                Ok(item) => out.accepted.push(item),
                Err(skip) => *out.skipped.entry(skip).or_default() += 1,
            }
        }
        out
    }

    /// Runs a batch's changes: an edit is normalised and scored again like a new item (assets, sentiment, score
    /// and priority from its new text) under the same item id; de-duplication and the spam rules are not applied
    /// again (the post was accepted as first written) and the edit is not remembered in the windows. An edit whose
    /// new text is refused by the normalising rules (empty, too long, not UTF-8) is skipped with that reason and
    /// the stored item stays as it was.
    pub fn process_changes(&mut self, origin: &Origin, changes: Vec<Change>, now_ms: u64, out: &mut Outcome) {
        for c in changes {
            match c {
                Change::Edit { item, edited_ms } => match self.rescore(origin, item, now_ms) {
                    Ok(i) => out.edits.push((i, edited_ms)),
                    Err(skip) => *out.skipped.entry(skip).or_default() += 1,
                },
                Change::Delete { external_id } => out.deletes.push(normalise::item_id(&origin.name, &external_id)),
            }
        }
    }

    /// An item scored from `raw` without the de-duplication and spam rules and without remembering it.
    fn rescore(&self, origin: &Origin, raw: RawItem, now_ms: u64) -> Result<Item, Skip> {
        let post = self.normalise(origin, &raw, now_ms)?;
        Ok(self.scored(origin, raw, post, now_ms))
    }

    fn one(&mut self, origin: &Origin, raw: RawItem, now_ms: u64) -> Result<Item, Skip> {
        let post = self.normalise(origin, &raw, now_ms)?;
        match self.window.check(post.content_hash, post.simhash) {
            dedup::Seen::New => {}
            dedup::Seen::Exact { first_author } => {
                return Err(if !origin.trusted && !first_author.is_empty() && first_author != post.author {
                    Skip::RepeatedAcrossAuthors
                } else {
                    Skip::DuplicateText
                });
            }
            dedup::Seen::Near { .. } => return Err(Skip::NearDuplicate),
        }
        if !origin.trusted {
            if spam::link_only(&post.text, self.rules.spam.min_words_besides_links) {
                return Err(Skip::LinkOnly);
            }
            self.authors.check(&self.rules.spam, &origin.name, &post.author, post.at_ms)?;
        }
        let simhash = post.simhash;
        let item = self.scored(origin, raw, post, now_ms);
        // Accepted: remember it.
        self.window.add(item.content_hash, simhash, &item.author, item.at_ms);
        self.authors.accept(&self.rules.spam, &origin.name, &item.author, item.at_ms);
        for a in &item.assets {
            self.baselines.add(&self.rules.score, a, item.at_ms);
        }
        Ok(item)
    }

    /// The text, author, time and fingerprints of `raw`, as both new and edited posts are read.
    fn normalise(&self, origin: &Origin, raw: &RawItem, now_ms: u64) -> Result<Post, Skip> {
        let text = normalise::text(&raw.text, self.rules.max_text_bytes)?;
        let author = raw
            .author
            .as_deref()
            .map(normalise::collapse)
            .filter(|a| !a.is_empty())
            .unwrap_or_else(|| origin.name.clone());
        // A post from the future is counted as posted now.
        let at_ms = raw.time_ms.unwrap_or(now_ms).min(now_ms);
        let words = normalise::words(&text);
        let content_hash = normalise::content_hash(&words);
        let simhash = (words.len() >= dedup::MIN_NEAR_WORDS).then(|| dedup::simhash(&words));
        Ok(Post { text, author, at_ms, content_hash, simhash })
    }

    /// The item for a normalised post: its assets, sentiment, z-score against the current baselines, score and
    /// priority (nothing is remembered here).
    fn scored(&self, origin: &Origin, raw: RawItem, post: Post, now_ms: u64) -> Item {
        let assets = self.rules.assets.extract(&post.text);
        let sentiment = self.sentiment.compound(&post.text);
        let z = assets
            .iter()
            .map(|a| self.baselines.z(&self.rules.score, a, post.at_ms))
            .fold(f64::NEG_INFINITY, f64::max)
            .max(0.0);
        let score = score::score(origin.weight, !assets.is_empty(), sentiment, z, self.rules.score.z_spike);
        let priority = score::priority(&self.rules.score, score, !assets.is_empty());
        Item {
            id: normalise::item_id(&origin.name, &raw.external_id),
            source: origin.name.clone(),
            kind: origin.kind.clone(),
            author: post.author,
            text: post.text,
            url: raw.url.filter(|u| !u.trim().is_empty()),
            at_ms: post.at_ms,
            received_ms: now_ms,
            language: normalise::language(raw.language.as_deref()),
            assets,
            sentiment,
            score: (score * 10_000.0).round() / 10_000.0,
            priority,
            version: 1,
            edited_ms: None,
            content_hash: post.content_hash,
            simhash: post.simhash.unwrap_or(0),
        }
    }
}

/// A post's normalised text, author, time and fingerprints (the simhash only for posts long enough to compare).
struct Post {
    text: String,
    author: String,
    at_ms: u64,
    content_hash: u64,
    simhash: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::item::Priority;

    fn origin() -> Origin {
        Origin { name: "feed".into(), kind: "rss".into(), weight: 1.0, trusted: false }
    }

    fn raw(id: &str, author: &str, text: &str, at: u64) -> Result<RawItem, Skip> {
        Ok(RawItem { author: Some(author.into()), time_ms: Some(at), ..RawItem::new(id, text) })
    }

    fn pipeline() -> Pipeline {
        let mut rules = Rules::default();
        rules.assets.add("BTC", &["bitcoin".into()], &[]);
        rules.assets.add("ETH", &[], &[]);
        Pipeline::new(rules)
    }

    #[test]
    fn a_batch_is_normalised_deduplicated_filtered_and_scored() {
        let mut p = pipeline();
        let now = 10_000_000;
        let out = p.process(
            &origin(),
            vec![
                raw("1", "alice", "<p>Bitcoin looks <b>bullish</b> after the halving, a great breakout for $ETH as funds keep buying through the week</p>", now - 10),
                raw("2", "alice", "bitcoin looks bullish after the halving a great breakout for $eth as funds keep buying through the week", now - 9),
                raw("3", "bob", "Bitcoin looks bullish after the halving, a great breakout for $ETH as funds keep buying through the week!", now - 8),
                raw("4", "carol", "Bitcoin looks bullish after the halving, a great breakout for $ETH as funds keep buying through the week today", now - 7),
                raw("5", "dave", "https://spam.example/free-coins", now - 6),
                Err(Skip::Malformed),
                Ok(RawItem::new("6", vec![0xc3, 0x28])),
                raw("7", "erin", "The weather is nice", now + 60_000),
            ],
            now,
        );
        let ids: Vec<&str> = out.accepted.iter().map(|i| i.author.as_str()).collect();
        assert_eq!(ids, vec!["alice", "erin"]);
        let skipped: Vec<(Skip, u64)> = out.skips();
        assert_eq!(
            skipped,
            vec![
                (Skip::Malformed, 1),
                (Skip::InvalidUtf8, 1),
                (Skip::DuplicateText, 1),
                (Skip::NearDuplicate, 1),
                (Skip::LinkOnly, 1),
                (Skip::RepeatedAcrossAuthors, 1),
            ]
        );
        let a = &out.accepted[0];
        assert_eq!(
            a.text,
            "Bitcoin looks bullish after the halving, a great breakout for $ETH as funds keep buying through the week"
        );
        assert_eq!(a.assets, vec!["BTC", "ETH"]);
        assert!(a.sentiment > 0.5, "{}", a.sentiment);
        assert_eq!(a.priority, Priority::High, "score {}", a.score);
        assert_eq!(out.accepted[1].at_ms, now, "a future time is clamped to now");
        assert_eq!(out.accepted[1].priority, Priority::Low);
        assert_eq!(out.accepted[1].language, "und");
    }

    #[test]
    fn warm_state_catches_duplicates_after_a_restart() {
        let mut p = pipeline();
        let out = p.process(&origin(), vec![raw("1", "alice", "one two three four five six seven", 5)], 10);
        let fp = Fingerprint { content_hash: out.accepted[0].content_hash, simhash: out.accepted[0].simhash, at_ms: 5 };
        let mut q = pipeline();
        q.warm(&[fp], &[("alice".into(), 5)], &[]);
        let out = q.process(&origin(), vec![raw("9", "alice", "one two three four five six seven!", 6)], 10);
        assert_eq!(out.skips(), vec![(Skip::DuplicateText, 1)]);
    }

    #[test]
    fn an_edit_is_scored_again_under_the_same_id_without_the_duplicate_rules() {
        let mut p = pipeline();
        let text = "Bitcoin looks fine today nothing much happening here at all";
        let out = p.process(&origin(), vec![raw("1", "alice", text, 5)], 10);
        let first = out.accepted[0].clone();
        let edited = "Bitcoin looks bullish, a great breakout, funds keep buying $ETH";
        let mut out = Outcome::default();
        let edit = |t: &str| Change::Edit {
            item: RawItem { author: Some("alice".into()), time_ms: Some(5), ..RawItem::new("1", t) },
            edited_ms: 9,
        };
        p.process_changes(
            &origin(),
            vec![edit(edited), edit(text), edit(""), Change::Delete { external_id: "1".into() }],
            10,
            &mut out,
        );
        assert!(out.accepted.is_empty());
        assert_eq!(out.edits.len(), 2, "an edit back to the accepted text is not a duplicate: {:?}", out.skipped);
        let (e, at) = &out.edits[0];
        assert_eq!((e.id.as_str(), *at), (first.id.as_str(), 9));
        assert_eq!(e.assets, vec!["BTC", "ETH"]);
        assert!(e.sentiment > first.sentiment + 0.3, "{} vs {}", e.sentiment, first.sentiment);
        assert!(e.score > first.score);
        assert_eq!(out.skips(), vec![(Skip::Empty, 1)]);
        assert_eq!(out.deletes, vec![first.id.clone()]);
    }

    #[test]
    fn trusted_sources_skip_spam_rules() {
        let mut p = pipeline();
        let trusted = Origin { trusted: true, ..origin() };
        let items = (0..20)
            .map(|i| raw(&i.to_string(), "keeper", &format!("round {i} settled https://x.example/{i}"), 5))
            .collect();
        let out = p.process(&trusted, items, 10);
        assert_eq!(out.accepted.len(), 20);
    }
}
