//! Sentiment: VADER (Hutto and Gilbert, ICWSM 2014) through the `vader-parity` crate, which reproduces Python
//! vaderSentiment 3.3.2 output exactly, plus a small crypto lexicon.
//!
//! VADER's compound is `s / sqrt(s² + 15)` of a sum `s` of word valences (on VADER's -4..+4 scale) after its
//! rules. The crypto words below are absent from VADER's lexicon (a test proves each scores 0 alone), so they
//! added nothing to `s`; we recover `s` from the compound, add each crypto word's valence (scaled by VADER's
//! negation factor -0.74 when one of the three words before it is a negation, as VADER does), and normalise
//! again. Text without a crypto word scores exactly as VADER. (Boosters, capitals and "but" do not act on the
//! crypto words: a documented simplification.)
//!
//! | word | valence | | word | valence |
//! |---|---|---|---|---|
//! | bullish | +2.0 | | bearish | -2.0 |
//! | moon, mooning | +1.5, +2.0 | | rekt | -2.5 |
//! | ath | +1.5 | | rugpull, rugged | -3.2, -3.0 |
//! | hodl | +1.0 | | rug | -2.5 |
//! | wagmi | +1.8 | | ngmi | -1.8 |
//! | rally, rallies | +1.5 | | plunge, plunges | -1.8 |
//! | surge, surges | +1.4 | | | |
//! | breakout | +1.2 | | depeg, depegged | -2.2 |
//! | pumping | +1.2 | | | |
//! | outperform | +1.5 | | liquidated | -2.0 |

use vader_parity::SentimentIntensityAnalyzer;

/// VADER's normalisation constant.
const ALPHA: f64 = 15.0;
/// VADER's negation scalar.
const N_SCALAR: f64 = -0.74;

/// The crypto additions (word, valence on VADER's scale).
pub const CRYPTO_LEXICON: &[(&str, f64)] = &[
    ("bullish", 2.0),
    ("bearish", -2.0),
    ("moon", 1.5),
    ("mooning", 2.0),
    ("rekt", -2.5),
    ("ath", 1.5),
    ("rugpull", -3.2),
    ("rugged", -3.0),
    ("rug", -2.5),
    ("hodl", 1.0),
    ("wagmi", 1.8),
    ("ngmi", -1.8),
    ("rally", 1.5),
    ("rallies", 1.5),
    ("plunge", -1.8),
    ("plunges", -1.8),
    ("surge", 1.4),
    ("surges", 1.4),
    ("breakout", 1.2),
    ("depeg", -2.2),
    ("depegged", -2.2),
    ("pumping", 1.2),
    ("outperform", 1.5),
    ("liquidated", -2.0),
];

const NEGATIONS: &[&str] = &[
    "not", "no", "never", "isn't", "isnt", "don't", "dont", "doesn't", "doesnt", "won't", "wont", "can't", "cant",
    "ain't", "aint", "nor", "without", "neither", "wasn't", "wasnt", "aren't", "arent", "didn't", "didnt",
];

/// The scorer (holds VADER's parsed lexicons; build once).
pub struct Sentiment {
    vader: SentimentIntensityAnalyzer,
}

impl Default for Sentiment {
    fn default() -> Self {
        Sentiment::new()
    }
}

/// The crypto words' valence sum for `text` (negations applied).
pub fn crypto_valence(text: &str) -> f64 {
    let words: Vec<String> = text
        .split_whitespace()
        .map(|w| w.trim_matches(|c: char| !c.is_alphanumeric() && c != '\'').to_lowercase())
        .collect();
    let mut sum = 0.0;
    for (i, w) in words.iter().enumerate() {
        let w = w.trim_start_matches('$');
        let Some((_, v)) = CRYPTO_LEXICON.iter().find(|(k, _)| *k == w) else { continue };
        let negated = words[i.saturating_sub(3)..i].iter().any(|p| NEGATIONS.contains(&p.as_str()));
        sum += if negated { v * N_SCALAR } else { *v };
    }
    sum
}

impl Sentiment {
    pub fn new() -> Sentiment {
        Sentiment { vader: SentimentIntensityAnalyzer::new() }
    }

    /// VADER's compound alone (four decimals, as the reference prints it).
    pub fn vader(&self, text: &str) -> f64 {
        self.vader.polarity_scores(text).compound
    }

    /// The compound with the crypto lexicon, in [-1, 1].
    pub fn compound(&self, text: &str) -> f64 {
        let c = self.vader(text);
        let extra = crypto_valence(text);
        if extra == 0.0 {
            return c;
        }
        let c = c.clamp(-0.9999, 0.9999);
        let s = c * ALPHA.sqrt() / (1.0 - c * c).sqrt();
        let s = s + extra;
        let out = s / (s * s + ALPHA).sqrt();
        (out * 10_000.0).round() / 10_000.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The examples vaderSentiment's README publishes with their output (compound, and neg/neu/pos).
    const PUBLISHED: &[(&str, f64, f64, f64, f64)] = &[
        ("VADER is smart, handsome, and funny.", 0.0, 0.254, 0.746, 0.8316),
        ("VADER is smart, handsome, and funny!", 0.0, 0.248, 0.752, 0.8439),
        ("VADER is very smart, handsome, and funny.", 0.0, 0.299, 0.701, 0.8545),
        ("VADER is VERY SMART, handsome, and FUNNY.", 0.0, 0.246, 0.754, 0.9227),
        ("VADER is VERY SMART, handsome, and FUNNY!!!", 0.0, 0.233, 0.767, 0.9342),
        ("VADER is VERY SMART, uber handsome, and FRIGGIN FUNNY!!!", 0.0, 0.294, 0.706, 0.9469),
        ("VADER is not smart, handsome, nor funny.", 0.646, 0.354, 0.0, -0.7424),
        ("The book was good.", 0.0, 0.508, 0.492, 0.4404),
        ("At least it isn't a horrible book.", 0.0, 0.678, 0.322, 0.431),
        ("The book was only kind of good.", 0.0, 0.697, 0.303, 0.3832),
        (
            "The plot was good, but the characters are uncompelling and the dialog is not great.",
            0.327,
            0.579,
            0.094,
            -0.7042,
        ),
        ("Today SUX!", 0.779, 0.221, 0.0, -0.5461),
        ("Today only kinda sux! But I'll get by, lol", 0.127, 0.556, 0.317, 0.5249),
        ("Make sure you :) or :D today!", 0.0, 0.294, 0.706, 0.8633),
        ("Catch utf-8 emoji such as 💘 and 💋 and 😁", 0.0, 0.583, 0.417, 0.875),
        ("Not bad at all", 0.0, 0.513, 0.487, 0.431),
    ];

    #[test]
    fn reference_vectors() {
        let s = Sentiment::new();
        for (text, neg, neu, pos, compound) in PUBLISHED {
            let r = s.vader.polarity_scores(text);
            assert_eq!((r.neg, r.neu, r.pos, r.compound), (*neg, *neu, *pos, *compound), "{text}");
            assert_eq!(s.compound(text), *compound, "no crypto word: exactly VADER ({text})");
        }
    }

    #[test]
    fn crypto_words_are_not_in_vaders_lexicon() {
        let s = Sentiment::new();
        for (w, _) in CRYPTO_LEXICON {
            assert_eq!(s.vader(w), 0.0, "'{w}' already has a VADER valence; it would count twice");
        }
    }

    #[test]
    fn crypto_words_move_the_compound_and_negation_flips() {
        let s = Sentiment::new();
        assert_eq!(s.compound("BTC looks bullish"), (2.0 / (4.0f64 + 15.0).sqrt() * 1e4).round() / 1e4);
        assert!(s.compound("BTC looks bearish") < -0.4);
        assert!(s.compound("BTC is not bullish") < 0.0);
        assert!(s.compound("great news, bullish") > s.vader("great news, bullish"));
        assert!(s.compound("got rekt, terrible") < s.vader("got rekt, terrible"));
        assert_eq!(crypto_valence("$BTC mooning"), 2.0);
    }
}
