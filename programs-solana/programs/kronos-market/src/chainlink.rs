//! Reader for Chainlink's Solana data-feed accounts (the OCR2 "store" program's `Transmissions` account).
//!
//! The `chainlink_solana` crate's reader depends on solana-program 2.x, which cannot share a build with our
//! Solana 3.x crates, so this module parses the same documented layout itself (chainlink-solana
//! `contracts/programs/store/src/state.rs`, feed version 2), all little-endian:
//!
//! | offset (after the 8-byte discriminator) | field |
//! |---|---|
//! | 0 | `version: u8` (2) |
//! | 1 | `state: u8` |
//! | 2..34 | `owner: Pubkey` |
//! | 34..66 | `proposed_owner: Pubkey` |
//! | 66..98 | `writer: Pubkey` |
//! | 98..130 | `description: [u8; 32]` |
//! | 130 | `decimals: u8` |
//! | 131..135 | `flagging_threshold: u32` |
//! | 135..139 | `latest_round_id: u32` |
//! | 139 | `granularity: u8` |
//! | 140..144 | `live_length: u32` |
//! | 144..148 | `live_cursor: u32` (the next slot to write) |
//! | 148..152 | `historical_cursor: u32` |
//! | 152..192 | reserved |
//!
//! After the 192-byte header come `live_length` transmissions (a ring buffer of the latest rounds), then the
//! historical ring (one transmission every `granularity` rounds). A transmission is 48 bytes: `slot: u64`,
//! `timestamp: u32`, 4 bytes padding, `answer: i128`, 16 bytes reserved.
//!
//! Only the live ring is used for settlement: it holds consecutive rounds, so "the answer in effect at `t`" can be
//! found there exactly (see [`in_effect_at`] for the precise rule). The
//! historical ring samples every `granularity`-th round and cannot prove what was in effect between its samples.
//!
//! A transmission's timestamp is the OCR report's observation time, not the time it landed, and OCR2 does not
//! promise that they never decrease from one report to the next (it orders reports by epoch and round, and the store
//! checks no timestamps): [`in_effect_at`] therefore anchors the answer on the first transmission written with a
//! later timestamp, which no later write can change, instead of assuming sorted timestamps.

/// Anchor discriminator of the store program's `Transmissions` account.
pub const DISCRIMINATOR: [u8; 8] = [96, 179, 69, 66, 128, 129, 73, 117];
/// The header's size after the discriminator.
pub const HEADER_SIZE: usize = 192;
/// One transmission's size.
pub const TRANSMISSION_SIZE: usize = 48;
/// The feed layout version this reader understands.
pub const FEED_VERSION: u8 = 2;
/// `state` of a feed in normal operation (the store's `Transmissions::NORMAL`).
pub const STATE_NORMAL: u8 = 0;
/// `state` of a feed flagged by its validator (the store's `Transmissions::FLAGGED`).
pub const STATE_FLAGGED: u8 = 1;

/// Why a feed account cannot be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeedError {
    /// Shorter than its header or than its live ring says.
    TooShort,
    /// Not a `Transmissions` account.
    BadDiscriminator,
    /// A layout version other than 2.
    UnsupportedVersion(u8),
    /// A live ring of length zero or a cursor outside it.
    BadRing,
}

/// The feed's header fields that settlement needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub version: u8,
    /// 0 normal, [`STATE_FLAGGED`] flagged.
    pub state: u8,
    /// The feed's owner (may set the writer) and its writer (the OCR2 program's authority that submits reports).
    pub owner: [u8; 32],
    pub writer: [u8; 32],
    pub decimals: u8,
    pub latest_round_id: u32,
    pub granularity: u8,
    pub live_length: u32,
    pub live_cursor: u32,
    pub description: [u8; 32],
}

/// One transmission.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transmission {
    pub slot: u64,
    pub timestamp: u32,
    pub answer: i128,
}

/// Why no price is in effect at a timestamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LookupError {
    /// The feed could not be read.
    Feed(FeedError),
    /// No transmission before the first one stamped after the timestamp is left in the live ring: the history no
    /// longer reaches back that far.
    NotCovered,
    /// Nothing stamped after the timestamp has been written yet: the answer could still change.
    NotFinal,
}

fn u32_at(d: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(d[off..off + 4].try_into().expect("4 bytes"))
}

/// Parses and checks the header.
pub fn header(data: &[u8]) -> Result<Header, FeedError> {
    if data.len() < 8 + HEADER_SIZE {
        return Err(FeedError::TooShort);
    }
    if data[..8] != DISCRIMINATOR {
        return Err(FeedError::BadDiscriminator);
    }
    let h = &data[8..8 + HEADER_SIZE];
    if h[0] != FEED_VERSION {
        return Err(FeedError::UnsupportedVersion(h[0]));
    }
    let live_length = u32_at(h, 140);
    let live_cursor = u32_at(h, 144);
    if live_length == 0 || live_cursor >= live_length {
        return Err(FeedError::BadRing);
    }
    let need = (live_length as usize).checked_mul(TRANSMISSION_SIZE).and_then(|n| n.checked_add(8 + HEADER_SIZE));
    if need.is_none_or(|n| data.len() < n) {
        return Err(FeedError::TooShort);
    }
    Ok(Header {
        version: h[0],
        state: h[1],
        owner: h[2..34].try_into().expect("32 bytes"),
        writer: h[66..98].try_into().expect("32 bytes"),
        decimals: h[130],
        latest_round_id: u32_at(h, 135),
        granularity: h[139],
        live_length,
        live_cursor,
        description: h[98..130].try_into().expect("32 bytes"),
    })
}

/// The `k`-th newest transmission of the live ring (`k = 0` is the latest).
fn nth_newest(data: &[u8], h: &Header, k: u32) -> Transmission {
    let len = h.live_length as u64;
    let idx = ((h.live_cursor as u64 + len - 1 - (k as u64 % len)) % len) as usize;
    let off = 8 + HEADER_SIZE + idx * TRANSMISSION_SIZE;
    let t = &data[off..off + TRANSMISSION_SIZE];
    Transmission {
        slot: u64::from_le_bytes(t[0..8].try_into().expect("8 bytes")),
        timestamp: u32_at(t, 8),
        answer: i128::from_le_bytes(t[16..32].try_into().expect("16 bytes")),
    }
}

/// The latest transmission, if any was written.
pub fn latest(data: &[u8]) -> Result<Option<Transmission>, FeedError> {
    let h = header(data)?;
    let t = nth_newest(data, &h, 0);
    Ok((t.timestamp != 0).then_some(t))
}

/// The most entries of the live ring the lookup reads (the newest ones): bounds its compute cost. A longer ring
/// is read as if it held only its newest `MAX_LIVE_SCAN` transmissions.
pub const MAX_LIVE_SCAN: u32 = 2_048;

/// The answer in effect at `ts`, fixed once and for all by the feed's own write order: let `F` be the **first**
/// transmission written with a timestamp after `ts`; the answer is the newest transmission written before `F` whose
/// timestamp is `<= ts`.
///
/// Timestamps are OCR observation times and OCR2 does not promise they never decrease (a report observed at or
/// before `ts` may land after one observed later), so "the newest with a timestamp `<= ts`" could still change after
/// it was read. Anchoring on `F` cannot: everything written later comes after `F` and is ignored. Until some
/// transmission stamped after `ts` exists the answer is not final ([`LookupError::NotFinal`]). The scan reads the
/// newest `min(live_length, MAX_LIVE_SCAN)` entries (slots never written hold 0 and sit at the old end of a ring that
/// has not wrapped); when `F` or everything before it has left that window the history no longer reaches back to
/// `ts` ([`LookupError::NotCovered`]).
pub fn in_effect_at(data: &[u8], ts: i64) -> Result<Transmission, LookupError> {
    let h = header(data).map_err(LookupError::Feed)?;
    let window = h.live_length.min(MAX_LIVE_SCAN);
    // Newest first: k = 0 is the latest write. `first_after` ends as the oldest (first written) entry stamped after
    // `ts`; `answer` as the newest entry older than it stamped at or before `ts`.
    let mut first_after: Option<u32> = None;
    let mut answer: Option<Transmission> = None;
    for k in 0..window {
        let t = nth_newest(data, &h, k);
        if t.timestamp == 0 {
            break;
        }
        if t.timestamp as i64 > ts {
            first_after = Some(k);
            answer = None;
        } else if first_after.is_some() && answer.is_none() {
            answer = Some(t);
        }
    }
    if first_after.is_none() {
        return Err(LookupError::NotFinal);
    }
    answer.ok_or(LookupError::NotCovered)
}

/// Builds a feed account's data (for tests and local tooling): `live` transmissions oldest first written into a ring
/// of `live_length`, exactly as the store program's `insert` would have left them.
pub fn encode(decimals: u8, description: &str, live_length: u32, live: &[Transmission]) -> Vec<u8> {
    encode_with(&Meta { decimals, ..Meta::default() }, description, live_length, live)
}

/// Header fields [`encode_with`] writes besides the ring.
#[derive(Debug, Clone, Copy, Default)]
pub struct Meta {
    pub decimals: u8,
    pub state: u8,
    pub owner: [u8; 32],
    pub writer: [u8; 32],
}

/// [`encode`] with the header's state, owner and writer.
pub fn encode_with(meta: &Meta, description: &str, live_length: u32, live: &[Transmission]) -> Vec<u8> {
    let decimals = meta.decimals;
    let mut d = vec![0u8; 8 + HEADER_SIZE + live_length as usize * TRANSMISSION_SIZE];
    d[..8].copy_from_slice(&DISCRIMINATOR);
    let h = 8;
    d[h] = FEED_VERSION;
    d[h + 1] = meta.state;
    d[h + 2..h + 34].copy_from_slice(&meta.owner);
    d[h + 66..h + 98].copy_from_slice(&meta.writer);
    let desc = description.as_bytes();
    let n = desc.len().min(32);
    d[h + 98..h + 98 + n].copy_from_slice(&desc[..n]);
    d[h + 130] = decimals;
    d[h + 135..h + 139].copy_from_slice(&(live.len() as u32).to_le_bytes());
    d[h + 139] = 30;
    d[h + 140..h + 144].copy_from_slice(&live_length.to_le_bytes());
    let mut cursor = 0u32;
    for t in live {
        let off = 8 + HEADER_SIZE + cursor as usize * TRANSMISSION_SIZE;
        d[off..off + 8].copy_from_slice(&t.slot.to_le_bytes());
        d[off + 8..off + 12].copy_from_slice(&t.timestamp.to_le_bytes());
        d[off + 16..off + 32].copy_from_slice(&t.answer.to_le_bytes());
        cursor = (cursor + 1) % live_length;
    }
    d[h + 144..h + 148].copy_from_slice(&cursor.to_le_bytes());
    d
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn tx(ts: u32, answer: i128) -> Transmission {
        Transmission { slot: ts as u64 * 2, timestamp: ts, answer }
    }

    /// Offsets written by hand from the layout table, independently of [`encode`].
    #[test]
    fn the_header_is_read_at_the_documented_offsets() {
        let mut d = vec![0u8; 8 + 192 + 3 * 48];
        d[..8].copy_from_slice(&[96, 179, 69, 66, 128, 129, 73, 117]);
        d[8] = 2; // version
        d[8 + 1] = 1; // state: flagged
        d[8 + 2..8 + 34].copy_from_slice(&[0xAA; 32]); // owner
        d[8 + 66..8 + 98].copy_from_slice(&[0xBB; 32]); // writer
        d[8 + 98..8 + 98 + 7].copy_from_slice(b"BTC/USD");
        d[8 + 130] = 8; // decimals
        d[8 + 135..8 + 139].copy_from_slice(&77u32.to_le_bytes()); // latest_round_id
        d[8 + 139] = 30; // granularity
        d[8 + 140..8 + 144].copy_from_slice(&3u32.to_le_bytes()); // live_length
        d[8 + 144..8 + 148].copy_from_slice(&1u32.to_le_bytes()); // live_cursor: slot 0 is the newest
                                                                  // Transmission in slot 0: slot 900, timestamp 1_700_000_000, answer 6_512_345_678_901.
        let t0 = 8 + 192;
        d[t0..t0 + 8].copy_from_slice(&900u64.to_le_bytes());
        d[t0 + 8..t0 + 12].copy_from_slice(&1_700_000_000u32.to_le_bytes());
        d[t0 + 16..t0 + 32].copy_from_slice(&6_512_345_678_901i128.to_le_bytes());
        let h = header(&d).unwrap();
        assert_eq!(
            (h.version, h.decimals, h.latest_round_id, h.granularity, h.live_length, h.live_cursor),
            (2, 8, 77, 30, 3, 1)
        );
        assert_eq!(&h.description[..7], b"BTC/USD");
        assert_eq!((h.state, h.owner, h.writer), (STATE_FLAGGED, [0xAA; 32], [0xBB; 32]));
        assert_eq!(
            latest(&d).unwrap(),
            Some(Transmission { slot: 900, timestamp: 1_700_000_000, answer: 6_512_345_678_901 })
        );
        assert_eq!(in_effect_at(&d, 1_700_000_000), Err(LookupError::NotFinal));
        assert_eq!(in_effect_at(&d, 1_699_999_999), Err(LookupError::NotCovered));
        // The same bytes through the encoder.
        let e =
            encode(8, "BTC/USD", 3, &[Transmission { slot: 900, timestamp: 1_700_000_000, answer: 6_512_345_678_901 }]);
        assert_eq!(header(&e).unwrap().live_cursor, 1);
        let meta = Meta { decimals: 8, state: 1, owner: [0xAA; 32], writer: [0xBB; 32] };
        let e = encode_with(
            &meta,
            "BTC/USD",
            3,
            &[Transmission { slot: 900, timestamp: 1_700_000_000, answer: 6_512_345_678_901 }],
        );
        assert_eq!(e[..8 + 98], d[..8 + 98], "version, state, owner and writer at their offsets");
        assert_eq!(e[8 + 192..8 + 192 + 48], d[8 + 192..8 + 192 + 48]);
    }

    #[test]
    fn bad_accounts_are_named() {
        assert_eq!(header(&[0u8; 20]), Err(FeedError::TooShort));
        let mut d = encode(8, "X", 4, &[tx(10, 1)]);
        d[0] ^= 1;
        assert_eq!(header(&d), Err(FeedError::BadDiscriminator));
        let mut d = encode(8, "X", 4, &[tx(10, 1)]);
        d[8] = 1;
        assert_eq!(header(&d), Err(FeedError::UnsupportedVersion(1)));
        let d = encode(8, "X", 4, &[tx(10, 1)]);
        assert_eq!(header(&d[..d.len() - 1]), Err(FeedError::TooShort));
        let mut d = encode(8, "X", 4, &[tx(10, 1)]);
        d[8 + 144..8 + 148].copy_from_slice(&4u32.to_le_bytes());
        assert_eq!(header(&d), Err(FeedError::BadRing));
        assert_eq!(latest(&encode(8, "X", 4, &[])).unwrap(), None);
        assert_eq!(in_effect_at(&encode(8, "X", 4, &[]), 99), Err(LookupError::NotFinal));
    }

    #[test]
    fn a_wrapped_ring_answers_from_its_newest_entries() {
        // 7 rounds into a ring of 4: rounds 4..7 remain (timestamps 40..70).
        let live: Vec<_> = (1..=7).map(|i| tx(i * 10, i as i128)).collect();
        let d = encode(8, "X", 4, &live);
        assert_eq!(latest(&d).unwrap().unwrap().answer, 7);
        assert_eq!(in_effect_at(&d, 1000), Err(LookupError::NotFinal));
        assert_eq!(in_effect_at(&d, 69).unwrap().answer, 6);
        assert_eq!(in_effect_at(&d, 40).unwrap().answer, 4);
        assert_eq!(in_effect_at(&d, 39), Err(LookupError::NotCovered), "round 3 was overwritten");
    }

    #[test]
    fn out_of_order_timestamps_cannot_change_an_answer_once_final() {
        // A report observed at 95 lands after the one observed at 100 (OCR2 does not promise ordered timestamps).
        let live = [tx(80, 1), tx(90, 2), tx(100, 3), tx(95, 4), tx(120, 5)];
        let d = encode(8, "X", 8, &live);
        assert_eq!(in_effect_at(&d, 99).unwrap().answer, 2, "fixed by the first write stamped after 99 (100)");
        assert_eq!(in_effect_at(&d, 92).unwrap().answer, 2);
        assert_eq!(in_effect_at(&d, 100).unwrap().answer, 4, "fixed by 120; 95 landed before it");
        assert_eq!(in_effect_at(&d, 119).unwrap().answer, 4);
        assert_eq!(in_effect_at(&d, 120), Err(LookupError::NotFinal), "nothing is stamped after 120 yet");
        assert_eq!(in_effect_at(&d, 79), Err(LookupError::NotCovered));
        assert_eq!(in_effect_at(&encode(8, "X", 4, &[]), 0), Err(LookupError::NotFinal));
        // Whatever lands later, the answers read above stay.
        let later = [tx(80, 1), tx(90, 2), tx(100, 3), tx(95, 4), tx(120, 5), tx(98, 6), tx(99, 7), tx(130, 8)];
        let d2 = encode(8, "X", 16, &later);
        for t in [92, 99, 100, 119] {
            assert_eq!(in_effect_at(&d2, t), in_effect_at(&d, t), "at {t}");
        }
    }

    /// The rule of [`in_effect_at`] written over the whole history (oldest first), then restricted to what is left
    /// in a ring of `len`: the reference the lookup must match.
    fn reference(live: &[Transmission], len: usize, probe: i64) -> Result<(u32, i128), LookupError> {
        let kept = &live[live.len().saturating_sub(len)..];
        let Some(f) = kept.iter().position(|t| t.timestamp as i64 > probe) else { return Err(LookupError::NotFinal) };
        kept[..f]
            .iter()
            .rev()
            .find(|t| t.timestamp as i64 <= probe)
            .map(|t| (t.timestamp, t.answer))
            .ok_or(LookupError::NotCovered)
    }

    proptest! {
        /// The lookup agrees with the reference rule whatever order the timestamps come in.
        #[test]
        fn lookup_matches_the_reference_rule(
            len in 1u32..12,
            stamps in proptest::collection::vec(1u32..60, 0..30),
            probe in 0i64..70,
        ) {
            let live: Vec<_> = stamps.iter().enumerate().map(|(i, ts)| tx(*ts, i as i128 + 1)).collect();
            let d = encode(8, "X", len, &live);
            let got = in_effect_at(&d, probe).map(|t| (t.timestamp, t.answer));
            prop_assert_eq!(got, reference(&live, len as usize, probe));
        }

        /// Once final, an answer never changes as more transmissions are written (until the history no longer
        /// reaches back to it).
        #[test]
        fn a_final_answer_never_changes(
            stamps in proptest::collection::vec(1u32..60, 1..30),
            more in proptest::collection::vec(1u32..60, 0..10),
            probe in 0i64..70,
        ) {
            let live: Vec<_> = stamps.iter().enumerate().map(|(i, ts)| tx(*ts, i as i128 + 1)).collect();
            let mut longer = live.clone();
            longer.extend(more.iter().enumerate().map(|(i, ts)| tx(*ts, 1_000 + i as i128)));
            let before = in_effect_at(&encode(8, "X", 64, &live), probe);
            let after = in_effect_at(&encode(8, "X", 64, &longer), probe);
            if let Ok(b) = before {
                prop_assert_eq!(after, Ok(b));
            }
        }
    }
}
