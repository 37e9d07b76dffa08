// AI mode: what the forecaster said about a round, and whether a bettor can follow it (or bet against it) — a module
// of its own so tests/web/ai.test.mjs can check the rule in node.
//
// The prediction registry takes a commitment (a hash of the direction, P(up) and a salt) while the round takes bets,
// and the reveal only once the round's outcome is final (contracts-evm/README.md). By default the keeper keeps the
// forecast sealed until then (`p_up_bps` null before the reveal): nobody — this page included — can know its
// direction in time, and Follow / Against stay disabled with that reason. An operator who sets
// `[api] publish_forecasts = true` publishes each forecast as soon as it is committed (`/api/chains`'
// `forecasts_public`; `/api/predictions` gives the committed value beside its commitment): Follow bets its direction,
// Against the other one. The commitment makes the early publication checkable: the registry accepts only a reveal
// that hashes to it, so the page remembers what it was shown and, after the reveal, says whether the two agree —
// reading the reveal from the registry through the wallet's provider (`registryReveal`), not from the keeper.
import { decodeEventLog } from 'viem';
import { predictionRegistryAbi } from './abi.gen.js';

// The direction a revealed P(up) in basis points points to: 'up' above one half, 'down' below, null at exactly one half.
export function direction(pUpBps) {
  if (pUpBps == null || !Number.isFinite(Number(pUpBps))) return null;
  const p = Number(pUpBps);
  return p > 5000 ? 'up' : p < 5000 ? 'down' : null;
}

// The forecaster's word on round `epoch` of market `market` on `chain`, from `/api/predictions`' list:
//   state 'none'      no commitment for the round (yet);
//         'sealed'    committed, direction hidden until the reveal (Follow / Against disabled);
//         'published' committed and not revealed yet, its P(up) published by the keeper (forecasts public);
//         'public'    revealed (its P(up) known).
//   A published or revealed P(up) gives `side`: Follow bets it, Against the other side — unless P(up) is exactly
//   one half (no direction: `side` null, both disabled).
//   record  the market's latest revealed rounds (newest first, at most `n`), each with its P(up), direction, outcome
//           and hit — the forecaster's record a bettor judges it by — and `check`: how the reveal the registry holds
//           (`onChain`: predictionKey -> `registryReveal`'s reading) compares with what this page was shown before it
//           (`shown`, see `remember` and `revealCheck`).
export function aiView(predictions, chain, market, epoch, n = 5, shown = null, onChain = null) {
  const mine = (predictions ?? []).filter((p) => p.chain === chain && Number(p.market) === Number(market));
  const p = mine.find((x) => Number(x.epoch) === Number(epoch) && x.committed);
  let state = 'none', side = null, pUpBps = null;
  if (p && p.p_up_bps != null && Number.isFinite(Number(p.p_up_bps))) {
    state = p.revealed ? 'public' : 'published';
    pUpBps = Number(p.p_up_bps);
    side = direction(pUpBps);
  } else if (p) state = 'sealed';
  const record = mine
    .filter((x) => x.revealed && x.p_up_bps != null && Number(x.epoch) < Number(epoch))
    .sort((a, b) => Number(b.epoch) - Number(a.epoch))
    .slice(0, n)
    .map((x) => ({ epoch: Number(x.epoch), pUpBps: Number(x.p_up_bps), side: direction(x.p_up_bps), outcome: x.outcome ?? null, hit: x.hit ?? null,
      check: revealCheck(shown?.get(predictionKey(chain, market, x.epoch)), onChain?.get(predictionKey(chain, market, x.epoch))) }));
  return { state, side, pUpBps, commitment: p?.commitment ?? null, record };
}

// The side a button bets on the view's forecast: 'follow' its direction, 'against' the other one; null (the button
// disabled) unless the forecast is published or revealed with a direction.
export function betSide(ai, choice) {
  if (!ai || (ai.state !== 'published' && ai.state !== 'public') || (ai.side !== 'up' && ai.side !== 'down')) return null;
  if (choice === 'follow') return ai.side;
  if (choice === 'against') return ai.side === 'up' ? 'down' : 'up';
  return null;
}

// The key of a round's forecast in `shown` and in the registry's readings.
export const predictionKey = (chain, market, epoch) => `${chain}/${Number(market)}/${Number(epoch)}`;

// Remembers in `shown` (a Map) the forecast a published view showed before its reveal, to check the reveal against.
// The first value shown for a round is kept: a later, different one is exactly what the check is there to catch.
export function remember(shown, ai, chain, market, epoch) {
  if (ai?.state !== 'published') return;
  const k = predictionKey(chain, market, epoch);
  if (!shown.has(k)) shown.set(k, { pUpBps: ai.pUpBps, commitment: ai.commitment });
}

// How the reveal the registry holds (`registryReveal`'s reading) compares with what the page was shown before it:
// 'match' (same P(up), same commitment), 'mismatch' (another value or commitment, or no such reveal in the
// registry), 'unchecked' (shown, but the registry not read yet: no wallet on the chain), or null when the page
// showed nothing for that round (sealed, or not open then).
export function revealCheck(seen, reading) {
  if (!seen) return null;
  if (!reading) return 'unchecked';
  const same = reading.pUpBps != null && Number(seen.pUpBps) === Number(reading.pUpBps)
    && String(seen.commitment).toLowerCase() === String(reading.commitment).toLowerCase();
  return same ? 'match' : 'mismatch';
}

// What the registry at `registry` holds for `publisher`'s forecast of round `epoch` of market `market`, from the
// receipt of its reveal transaction and the registry's `getCommitment` (both read through the wallet's provider):
// `{ pUpBps, commitment }` — the P(up) of the registry's own `Revealed` event for that publisher, market and round,
// and the commitment the reveal had to hash to. `pUpBps` is null when the receipt holds no such event (another
// transaction, another contract's log, a failed transaction) or the commitment is not marked revealed.
export function registryReveal(receipt, commitment, registry, publisher, market, epoch) {
  const none = { pUpBps: null, commitment: commitment?.hash ?? null };
  if (receipt?.status !== '0x1' || Number(commitment?.status) !== 2) return none; // CommitStatus.Revealed
  for (const log of receipt.logs ?? []) {
    if (String(log.address).toLowerCase() !== String(registry).toLowerCase()) continue;
    let ev;
    try { ev = decodeEventLog({ abi: predictionRegistryAbi, data: log.data, topics: log.topics }); } catch { continue; }
    const a = ev.args;
    if (ev.eventName !== 'Revealed' || String(a.publisher).toLowerCase() !== String(publisher).toLowerCase()
      || a.marketId !== BigInt(market) || a.epoch !== BigInt(epoch)) continue;
    return { pUpBps: Number(a.probabilityUpBps), commitment: commitment.hash };
  }
  return none;
}
