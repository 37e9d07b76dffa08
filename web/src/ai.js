// AI mode: what the forecaster said about a round, and whether a bettor can follow it (or bet against it) — a module
// of its own so tests/web/ai.test.mjs can check the rule in node.
//
// The prediction registry takes a commitment (a hash of the direction, P(up) and a salt) while the round takes bets,
// and the reveal only once the round's outcome is final (contracts-evm/README.md). So while a round takes bets, its
// forecast is public only as a hash: nobody — this page included — can know its direction, and Follow / Against stay
// disabled with that reason. The keeper's API gives P(up) only once revealed (`p_up_bps`, null before).

// The direction a revealed P(up) in basis points points to: 'up' above one half, 'down' below, null at exactly one half.
export function direction(pUpBps) {
  if (pUpBps == null || !Number.isFinite(Number(pUpBps))) return null;
  const p = Number(pUpBps);
  return p > 5000 ? 'up' : p < 5000 ? 'down' : null;
}

// The forecaster's word on round `epoch` of market `market` on `chain`, from `/api/predictions`' list:
//   state 'none'   no commitment for the round (yet);
//         'sealed' committed, direction hidden until the reveal (Follow / Against disabled);
//         'public' revealed (its P(up) known): Follow bets `side`, Against the other side — unless the revealed
//                  P(up) is exactly one half (no direction: `side` null, both disabled);
//   record  the market's latest revealed rounds (newest first, at most `n`), each with its P(up), direction, outcome
//           and hit — the forecaster's record a bettor judges it by.
export function aiView(predictions, chain, market, epoch, n = 5) {
  const mine = (predictions ?? []).filter((p) => p.chain === chain && Number(p.market) === Number(market));
  const p = mine.find((x) => Number(x.epoch) === Number(epoch) && x.committed);
  let state = 'none', side = null, pUpBps = null;
  if (p && p.revealed && p.p_up_bps != null) { state = 'public'; pUpBps = Number(p.p_up_bps); side = direction(pUpBps); }
  else if (p) state = 'sealed';
  const record = mine
    .filter((x) => x.revealed && x.p_up_bps != null && Number(x.epoch) < Number(epoch))
    .sort((a, b) => Number(b.epoch) - Number(a.epoch))
    .slice(0, n)
    .map((x) => ({ epoch: Number(x.epoch), pUpBps: Number(x.p_up_bps), side: direction(x.p_up_bps), outcome: x.outcome ?? null, hit: x.hit ?? null }));
  return { state, side, pUpBps, commitment: p?.commitment ?? null, record };
}
