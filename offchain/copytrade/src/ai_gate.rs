//! The optional social gate of AI-mode entries (`[copytrade.ai.social_gate]`, off by default): before an AI target
//! that takes a position is applied, the social monitor's figures for one asset over the last `max_age` are read
//! (`GET <url>/api/social/assets/<asset>?windows=<max_age>s`); the entry is refused when their mean score is below
//! `min_score`, when no item was seen in that window (stale), or when the monitor cannot be read. It fails closed for
//! entries only: a zero target (leaving a position) and the stops are never gated.

use std::time::Duration;

use serde::Deserialize;

/// `[copytrade.ai.social_gate]`.
#[derive(Debug, Clone, PartialEq)]
pub struct SocialGate {
    /// The monitor's base URL (`http://127.0.0.1:8790`).
    pub url: url::Url,
    /// The asset symbol as the monitor knows it (`BTC`).
    pub asset: String,
    /// Entries need the window's mean item score at least this.
    pub min_score: f64,
    /// The window read; no item in it counts as stale.
    pub max_age: Duration,
}

/// One window of the monitor's asset answer (the fields the gate reads).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Window {
    pub volume: u64,
    pub mean_score: f64,
}

#[derive(Debug, Deserialize)]
struct AssetAnswer {
    windows: Vec<Window>,
}

/// What the gate says about one AI target.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Allow,
    /// Refused, with why (logged and counted).
    Refuse(String),
}

/// The decision: `entry` is whether the target takes or keeps a position (a non-zero quantity); `reading` is the
/// monitor's window or why it could not be read.
pub fn decide(gate: &SocialGate, entry: bool, reading: &Result<Window, String>) -> Verdict {
    if !entry {
        return Verdict::Allow;
    }
    match reading {
        Err(why) => Verdict::Refuse(format!("social monitor unreadable: {why}")),
        Ok(w) if w.volume == 0 => {
            Verdict::Refuse(format!("no {} item in the last {} s (stale)", gate.asset, gate.max_age.as_secs()))
        }
        Ok(w) if w.mean_score.is_nan() || w.mean_score < gate.min_score => {
            Verdict::Refuse(format!("{} social score {:.3} below {}", gate.asset, w.mean_score, gate.min_score))
        }
        Ok(_) => Verdict::Allow,
    }
}

/// Reads the monitor's window for the gate's asset (at most 3 s).
pub async fn read(client: &reqwest::Client, gate: &SocialGate) -> Result<Window, String> {
    let mut u = gate.url.join(&format!("api/social/assets/{}", gate.asset)).map_err(|e| e.to_string())?;
    u.query_pairs_mut().append_pair("windows", &format!("{}s", gate.max_age.as_secs().max(1)));
    let r = client.get(u).timeout(Duration::from_secs(3)).send().await.map_err(|e| e.without_url().to_string())?;
    if !r.status().is_success() {
        return Err(format!("HTTP {}", r.status().as_u16()));
    }
    let a: AssetAnswer = r.json().await.map_err(|e| e.without_url().to_string())?;
    a.windows.into_iter().next().ok_or_else(|| "no window in the answer".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate() -> SocialGate {
        SocialGate {
            url: "http://127.0.0.1:8790".parse().unwrap(),
            asset: "BTC".into(),
            min_score: 0.8,
            max_age: Duration::from_secs(3600),
        }
    }

    #[test]
    fn entries_fail_closed_exits_never() {
        let g = gate();
        let ok = Ok(Window { volume: 5, mean_score: 0.9 });
        let low = Ok(Window { volume: 5, mean_score: 0.5 });
        let stale = Ok(Window { volume: 0, mean_score: 0.0 });
        let down: Result<Window, String> = Err("connection refused".into());
        assert_eq!(decide(&g, true, &ok), Verdict::Allow);
        assert!(matches!(decide(&g, true, &low), Verdict::Refuse(w) if w.contains("below 0.8")));
        assert!(matches!(decide(&g, true, &stale), Verdict::Refuse(w) if w.contains("stale")));
        assert!(matches!(decide(&g, true, &down), Verdict::Refuse(w) if w.contains("unreadable")));
        let nan = Ok(Window { volume: 5, mean_score: f64::NAN });
        assert!(matches!(decide(&g, true, &nan), Verdict::Refuse(_)), "a NaN score is not above the threshold");
        for r in [ok, low, stale, down] {
            assert_eq!(decide(&g, false, &r), Verdict::Allow, "leaving a position is never gated");
        }
        assert_eq!(decide(&g, true, &Ok(Window { volume: 1, mean_score: 0.8 })), Verdict::Allow, "at the threshold");
    }
}
