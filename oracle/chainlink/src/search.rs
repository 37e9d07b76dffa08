//! The round in effect at a timestamp, across Chainlink phases — the same rules `ChainlinkRounds.verifyAt` checks.

use crate::{ReadError, RoundData, RoundSource, TimeField, PHASE_OFFSET};

/// A round in effect at a timestamp and the round that follows it (`0` when it is the feed's latest).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoundProof {
    pub round: RoundData,
    pub next_round_id: u128,
}

/// The phase of a proxy round id.
pub fn phase_of(id: u128) -> u64 {
    (id >> PHASE_OFFSET) as u64
}

/// The proxy round id of aggregator round `agg` in `phase`.
pub fn proxy_id(phase: u64, agg: u64) -> u128 {
    ((phase as u128) << PHASE_OFFSET) | agg as u128
}

fn agg_of(id: u128) -> u64 {
    id as u64
}

/// The last aggregator round of a finished phase (`None` when the phase has no data): exponential then binary
/// search over consecutive ids.
async fn last_of_phase<S: RoundSource>(src: &S, phase: u64) -> Result<Option<u64>, ReadError> {
    if src.round(proxy_id(phase, 1)).await?.is_none() {
        return Ok(None);
    }
    let (mut lo, mut hi) = (1u64, 2u64);
    while src.round(proxy_id(phase, hi)).await?.is_some() {
        lo = hi;
        hi = hi.saturating_mul(2);
    }
    // lo exists, hi does not.
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if src.round(proxy_id(phase, mid)).await?.is_some() {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    Ok(Some(lo))
}

/// The last round of `phase` in `1..=last` whose time is `<= t`, given that round 1's is.
async fn last_at_or_before<S: RoundSource>(
    src: &S,
    phase: u64,
    last: u64,
    t: u64,
    field: TimeField,
) -> Result<RoundData, ReadError> {
    let get = |a: u64| async move {
        src.round(proxy_id(phase, a)).await?.ok_or_else(|| ReadError::Call {
            feed: String::new(),
            message: format!("round {} of phase {phase} disappeared during the search", a),
        })
    };
    let (mut lo, mut hi) = (1u64, last);
    let mut best = get(1).await?;
    while lo < hi {
        let mid = lo + (hi - lo).div_ceil(2);
        let r = get(mid).await?;
        if r.time(field) <= t {
            lo = mid;
            best = r;
        } else {
            hi = mid - 1;
        }
    }
    if best.round_id != proxy_id(phase, lo) {
        best = get(lo).await?;
    }
    Ok(best)
}

/// The round in effect at `t` and its successor, or `None` when `t` is before the feed's first round.
///
/// Rounds within one phase are assumed to be time-ordered (Chainlink aggregators are). Across phases the latest phase
/// whose first round is already in effect at `t` holds the answer, as the contract requires.
pub async fn round_at<S: RoundSource>(src: &S, t: u64, field: TimeField) -> Result<Option<RoundProof>, ReadError> {
    let latest = src.latest().await?;
    if latest.time(field) <= t {
        return Ok(Some(RoundProof { round: latest, next_round_id: 0 }));
    }
    let top = phase_of(latest.round_id);
    let mut later_first: Option<u128> = None;
    for phase in (0..=top).rev() {
        let last = if phase == top { Some(agg_of(latest.round_id)) } else { last_of_phase(src, phase).await? };
        let Some(last) = last else { continue };
        let Some(first) = src.round(proxy_id(phase, 1)).await? else { continue };
        if first.time(field) <= t {
            let r = last_at_or_before(src, phase, last, t, field).await?;
            let a = agg_of(r.round_id);
            let next_round_id = if a < last {
                proxy_id(phase, a + 1)
            } else {
                // The latest phase's last round is the feed's latest, handled above.
                later_first.expect("a later phase exists when this phase's last round is not the latest")
            };
            return Ok(Some(RoundProof { round: r, next_round_id }));
        }
        later_first = Some(proxy_id(phase, 1));
    }
    Ok(None)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use alloy::primitives::I256;
    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// An in-memory feed: phases of time-ordered rounds.
    #[derive(Default)]
    pub(crate) struct MemFeed {
        pub rounds: BTreeMap<u128, RoundData>,
        pub latest: u128,
        pub reads: AtomicUsize,
    }

    impl MemFeed {
        /// `phases[i]` lists the update times of phase `i + first_phase`.
        pub(crate) fn new(first_phase: u64, phases: &[Vec<u64>]) -> Self {
            let mut f = MemFeed::default();
            for (i, times) in phases.iter().enumerate() {
                let phase = first_phase + i as u64;
                for (k, &t) in times.iter().enumerate() {
                    let id = proxy_id(phase, k as u64 + 1);
                    f.rounds.insert(
                        id,
                        RoundData {
                            round_id: id,
                            answer: I256::try_from(id as i64 % 1000 + 1).unwrap(),
                            started_at: t,
                            updated_at: t,
                        },
                    );
                    f.latest = id;
                }
            }
            f
        }
    }

    impl RoundSource for MemFeed {
        async fn latest(&self) -> Result<RoundData, ReadError> {
            self.reads.fetch_add(1, Ordering::Relaxed);
            self.rounds.get(&self.latest).copied().ok_or(ReadError::Empty { feed: "mem".into() })
        }
        async fn round(&self, id: u128) -> Result<Option<RoundData>, ReadError> {
            self.reads.fetch_add(1, Ordering::Relaxed);
            Ok(self.rounds.get(&id).copied())
        }
    }

    /// The contract's acceptance rule, written from the Solidity, for cross-checking.
    pub(crate) fn contract_accepts(f: &MemFeed, t: u64, p: &RoundProof, now: u64) -> bool {
        let Some(r) = f.rounds.get(&p.round.round_id) else { return false };
        if r.updated_at > t {
            return false;
        }
        let phase = phase_of(r.round_id);
        if p.next_round_id == 0 {
            return f.latest == r.round_id && now > t;
        }
        let next = p.next_round_id;
        let same = next == r.round_id + 1;
        if !same {
            let np = phase_of(next);
            if np <= phase || agg_of(next) != 1 || f.rounds.contains_key(&(r.round_id + 1)) {
                return false;
            }
            if (phase + 1..np).any(|q| f.rounds.contains_key(&proxy_id(q, 1))) {
                return false;
            }
        }
        let Some(n) = f.rounds.get(&next) else { return false };
        if n.updated_at <= t {
            return false;
        }
        // No phase after the proven one (up to the feed's current phase, empty ones included) may have started by t.
        let from = if same { phase + 1 } else { phase_of(next) + 1 };
        for q in from..=phase_of(f.latest) {
            if f.rounds.get(&proxy_id(q, 1)).is_some_and(|l| l.updated_at <= t) {
                return false;
            }
        }
        true
    }

    fn run<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
    }

    #[test]
    fn plain_aggregator() {
        let f = MemFeed::new(0, &[vec![100, 200, 300]]);
        let p = run(round_at(&f, 250, TimeField::UpdatedAt)).unwrap().unwrap();
        assert_eq!((p.round.round_id, p.next_round_id), (2, 3));
        let p = run(round_at(&f, 200, TimeField::UpdatedAt)).unwrap().unwrap();
        assert_eq!(p.round.round_id, 2);
        let p = run(round_at(&f, 999, TimeField::UpdatedAt)).unwrap().unwrap();
        assert_eq!((p.round.round_id, p.next_round_id), (3, 0));
        assert!(run(round_at(&f, 99, TimeField::UpdatedAt)).unwrap().is_none());
    }

    #[test]
    fn phases_seams_and_empty_phases() {
        // phase 1: 100..300, phase 2: empty, phase 3: 500, 600
        let f = MemFeed::new(1, &[vec![100, 200, 300], vec![], vec![500, 600]]);
        let p = run(round_at(&f, 400, TimeField::UpdatedAt)).unwrap().unwrap();
        assert_eq!((p.round.round_id, p.next_round_id), (proxy_id(1, 3), proxy_id(3, 1)));
        assert!(contract_accepts(&f, 400, &p, 10_000));
        let p = run(round_at(&f, 550, TimeField::UpdatedAt)).unwrap().unwrap();
        assert_eq!((p.round.round_id, p.next_round_id), (proxy_id(3, 1), proxy_id(3, 2)));
    }

    #[test]
    fn a_later_phase_wins_across_an_empty_phase() {
        // Found by the property test below: phase 2 is empty and phase 3's first round (3) is in effect at t = 3, so
        // round 1 of phase 1 (followed by round 2 of phase 1 at 32) must not be provable at t = 3.
        let f = MemFeed::new(1, &[vec![1, 32, 78, 127], vec![], vec![3]]);
        let p = run(round_at(&f, 3, TimeField::UpdatedAt)).unwrap().unwrap();
        assert_eq!((p.round.round_id, p.next_round_id), (proxy_id(3, 1), 0));
        let stale = RoundProof { round: f.rounds[&proxy_id(1, 1)], next_round_id: proxy_id(1, 2) };
        assert!(!contract_accepts(&f, 3, &stale, 10_000));
    }

    #[test]
    fn parallel_later_phase_wins() {
        // phase 2's first round (150) predates phase 1's last round (200).
        let f = MemFeed::new(1, &[vec![100, 200], vec![150, 250]]);
        let p = run(round_at(&f, 175, TimeField::UpdatedAt)).unwrap().unwrap();
        assert_eq!(p.round.round_id, proxy_id(2, 1));
        assert!(contract_accepts(&f, 175, &p, 10_000));
    }

    #[test]
    fn long_phase_search_is_logarithmic() {
        let times: Vec<u64> = (0..100_000u64).map(|i| 1_000 + i * 10).collect();
        let f = MemFeed::new(1, &[times, vec![2_000_000]]);
        let p = run(round_at(&f, 500_005, TimeField::UpdatedAt)).unwrap().unwrap();
        assert_eq!(p.round.updated_at, 500_000);
        assert!(f.reads.load(Ordering::Relaxed) < 80, "{} reads", f.reads.load(Ordering::Relaxed));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(300))]
        /// Whatever the phases look like, the search finds a proof the contract accepts, and no other round id
        /// would be accepted (the proof is unique).
        #[test]
        fn search_agrees_with_the_contract(
            phases in proptest::collection::vec((1u64..80, proptest::collection::vec(1u64..50, 0..6)), 1..4),
            t in 0u64..500,
        ) {
            // Phases start in order (aggregators are deployed one after another), but a new phase may start
            // before the previous one's last round (aggregators run in parallel before the switch).
            let mut built = Vec::new();
            let mut start = 0;
            for (gap, gaps) in &phases {
                start += gap;
                let mut time = start;
                let mut v = Vec::new();
                for (k, g) in gaps.iter().enumerate() {
                    if k > 0 { time += g; }
                    v.push(time);
                }
                built.push(v);
            }
            let f = MemFeed::new(1, &built);
            proptest::prop_assume!(!f.rounds.is_empty());
            let now = 100_000;
            let found = run(round_at(&f, t, TimeField::UpdatedAt)).unwrap();
            let accepted: Vec<(u128, u128)> = f.rounds.keys().flat_map(|&id| {
                let nexts: Vec<u128> = std::iter::once(0).chain(f.rounds.keys().copied()).collect();
                nexts.into_iter().map(move |n| (id, n))
            }).filter(|&(id, n)| contract_accepts(&f, t, &RoundProof { round: f.rounds[&id], next_round_id: n }, now)).collect();
            match found {
                Some(p) => {
                    proptest::prop_assert!(contract_accepts(&f, t, &p, now), "search result rejected: {:?}", p);
                    proptest::prop_assert_eq!(accepted, vec![(p.round.round_id, p.next_round_id)]);
                }
                None => {
                    proptest::prop_assert!(accepted.is_empty(), "search found nothing but {:?} would be accepted", accepted);
                }
            }
        }
    }
}
