// Unit tests of the dApp's formatting helpers (web/src/format.js), run by keeper/tests/web.rs with `node --test`.
import test from 'node:test';
import assert from 'node:assert/strict';
import { esc, amt, fmt, fmtShort, num, multiplier, poolsOf, paramsAt, paidMultiplier } from '../../web/src/format.js';

test('a token symbol is escaped in markup and kept as text in messages', () => {
  const sym = '<img src=x onerror=alert(1)>';
  assert.equal(fmt(10n ** 18n, 18, sym), '1 &lt;img src=x onerror=alert(1)&gt;');
  assert.equal(amt(10n ** 18n, 18, sym), `1 ${sym}`);
  assert.equal(esc(`"'&`), '&quot;&#39;&amp;');
});

test('numbers from the API are numbers or a dash', () => {
  assert.equal(num('12'), '12');
  assert.equal(num('<b>1</b>'), '—');
  assert.equal(num(undefined), '—');
});

test('amounts keep every significant digit; pools at most six decimals', () => {
  assert.equal(amt(1234567890123456789n, 18, 'ETH'), '1.234567890123456789 ETH');
  assert.equal(fmtShort(1234567890123456789n, 18, 'ETH'), '1.234567 ETH');
  assert.equal(amt(-20000000000000000n, 18), '-0.02');
  assert.equal(amt(1000000n, 6, 'USDC'), '1 USDC');
});

test('multipliers are net of the fee, in bigints', () => {
  const e16 = 10n ** 16n;
  assert.equal(multiplier(3n * e16, e16, 0), '3.00×');
  assert.equal(multiplier(3n * e16, e16, 300), '2.91×');
  assert.equal(multiplier(3n * e16, 2n * e16, 300), '1.45×');
  assert.equal(multiplier(3n * e16, 0n, 300), '—');
});

test("a market's pools are shown only for the round they belong to", () => {
  const live = { betting_epoch: 8, pool_epoch: 7, pool_up_wei: '1500', pool_down_wei: '0' };
  assert.deepEqual(poolsOf(live, 7), { up: 1500n, down: 0n });
  assert.equal(poolsOf(live, 8), null, "round 7's pools are not round 8's");
  assert.equal(poolsOf({ ...live, pool_epoch: null }, 7), null, 'nothing read yet');
  assert.equal(poolsOf({ pool_up_wei: '1500', pool_down_wei: '0' }, 0), null, 'an older keeper names no round');
  assert.equal(poolsOf(undefined, 7), null);
});

test('each round has the fee in force for it, never a later one; older than every set listed: unknown', () => {
  const params = [{ from_epoch: 0, fee_bps: 300, min_bet: 1n }, { from_epoch: 50, fee_bps: 500, min_bet: 2n }];
  assert.equal(paramsAt(params, 49).fee_bps, 300);
  assert.equal(paramsAt(params, 50).fee_bps, 500);
  assert.equal(paramsAt([params[1], params[0]], 51).fee_bps, 500, 'order of the list does not matter');
  assert.equal(paramsAt([{ from_epoch: 40, fee_bps: 500 }], 39), null);
});

test('a settled round pays its reward over the winning pool (both pools on a tie)', () => {
  const r = { state: 'settled', up_wei: '1000', down_wei: '3000', reward_wei: '3880' };
  assert.equal(paidMultiplier({ ...r, outcome: 'up' }), '3.88×');
  assert.equal(paidMultiplier({ ...r, outcome: 'down' }), '1.29×');
  assert.equal(paidMultiplier({ ...r, outcome: 'tie' }), '0.97×');
  assert.equal(paidMultiplier({ ...r, outcome: 'none' }), null);
  assert.equal(paidMultiplier({ ...r, state: 'locked', outcome: 'up' }), null);
});
