// The dApp's formatting helpers, a module of their own so tests/web/format.test.mjs can check them in node.
import { formatUnits } from 'viem';

// Escapes text for HTML markup (element content and quoted attributes).
export const esc = (s) => String(s ?? '').replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]);
export const big = (v) => { try { return BigInt(v ?? 0); } catch { return 0n; } };
// Drops trailing zeros of a decimal string, keeping at most `max` decimals (all of them by default).
export function trimZeros(s, max = Infinity) {
  if (!s.includes('.')) return s;
  const [i, f] = s.split('.');
  const t = f.slice(0, max).replace(/0+$/, '');
  return t ? `${i}.${t}` : i;
}
// `amt`: an amount in the token's units as plain text (for textContent), every significant digit; `fmt`: the same
// escaped for markup (the symbol is the token's own on-chain string, and under `kronos web` every field comes from
// a keeper elsewhere); `fmtShort`: escaped, at most 6 decimals, for pools and multiplier-sized figures.
export const amt = (v, dec, sym, max = Infinity) => `${trimZeros(formatUnits(big(v), Number(dec) || 0), max)}${sym ? ' ' + sym : ''}`;
export const fmt = (v, dec, sym) => esc(amt(v, dec, sym));
export const fmtShort = (v, dec, sym) => esc(amt(v, dec, sym, 6));
// A number from the API as text, or '—' when it is not one.
export const num = (v) => { const x = Number(v); return Number.isFinite(x) ? String(x) : '—'; };
// What one unit staked on `side` pays back if that side wins, after the fee the contract keeps: total·(1−fee)/side.
export function multiplier(total, side, feeBps = 0) {
  if (side === 0n) return '—';
  const x = (total * BigInt(10000 - feeBps) * 100n) / (side * 10000n);
  return `${x / 100n}.${String(x % 100n).padStart(2, '0')}×`;
}
// The pools of round `epoch` from a market's live figures (`/api/markets`), as bigints, or null when the keeper's
// figures are another round's (`pool_epoch`: the round taking bets when it read them) — never shown as this one's.
export function poolsOf(live, epoch) {
  if (!live || live.pool_epoch == null || Number(live.pool_epoch) !== Number(epoch)) return null;
  return { up: big(live.pool_up_wei), down: big(live.pool_down_wei) };
}
// The parameters (fee, minimum bet) in force for round `e` of a market: the set with the latest `from_epoch` at or
// before it, from `/api/chains`' `params` (the set in force, with the epoch it applies from, and a scheduled one);
// null when `e` is older than every set listed (the contract keeps no older ones: the page does not guess).
export function paramsAt(params, e) {
  let p = null;
  for (const x of params ?? []) if (x.from_epoch <= e && (!p || x.from_epoch >= p.from_epoch)) p = x;
  return p;
}
// What a settled round paid per unit staked on the winning side (both sides on a tie), after its own fee: the
// round's reward (`reward_wei`: the pool less the fee taken at settlement) over the winning pool. Null when the
// round is not settled with a winner.
export function paidMultiplier(round) {
  if (round?.state !== 'settled' || round.reward_wei == null) return null;
  const up = big(round.up_wei), down = big(round.down_wei);
  const win = round.outcome === 'up' ? up : round.outcome === 'down' ? down : round.outcome === 'tie' ? up + down : 0n;
  return win === 0n ? null : multiplier(big(round.reward_wei), win);
}
