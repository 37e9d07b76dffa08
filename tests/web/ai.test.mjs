// AI mode's rule (web/src/ai.js) in node: Follow / Against only on a published or revealed forecast with a
// direction — Follow its side, Against the other — and each reveal checked against what the page was shown.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { aiView, direction, betSide, remember, revealCheck } from '../../web/src/ai.js';

const p = (epoch, o = {}) => ({ chain: 'base', market: 1, epoch, committed: true, revealed: false, p_up_bps: null, commitment: `0x${epoch}`, outcome: null, hit: null, ...o });

test('a committed, unrevealed forecast is sealed: no direction to follow', () => {
  const v = aiView([p(10)], 'base', 1, 10);
  assert.equal(v.state, 'sealed');
  assert.equal(v.side, null);
  assert.equal(v.commitment, '0x10');
});

test('no commitment for the round, or only for another market or chain', () => {
  assert.equal(aiView([p(9), p(10, { market: 2 }), p(10, { chain: 'optimism' })], 'base', 1, 10).state, 'none');
  assert.equal(aiView([p(10, { committed: false })], 'base', 1, 10).state, 'none');
});

test('a revealed forecast gives its direction; exactly one half gives none', () => {
  assert.deepEqual(pick(aiView([p(10, { revealed: true, p_up_bps: 6100 })], 'base', 1, 10)), ['public', 'up']);
  assert.deepEqual(pick(aiView([p(10, { revealed: true, p_up_bps: 3900 })], 'base', 1, 10)), ['public', 'down']);
  assert.deepEqual(pick(aiView([p(10, { revealed: true, p_up_bps: 5000 })], 'base', 1, 10)), ['public', null]);
  // Revealed is not enough without the value (an unrevealable forecast has none).
  assert.equal(aiView([p(10, { revealed: true })], 'base', 1, 10).state, 'sealed');
  assert.equal(direction(null), null);
  assert.equal(direction(5001), 'up');
  assert.equal(direction(4999), 'down');
});

test('the record: earlier revealed rounds of this market, newest first', () => {
  const list = [p(7, { revealed: true, p_up_bps: 6000, outcome: 'up', hit: true }), p(8, { revealed: true, p_up_bps: 4000, outcome: 'up', hit: false }),
    p(9), p(8, { market: 2, revealed: true, p_up_bps: 9000 }), p(11, { revealed: true, p_up_bps: 7000 })];
  const r = aiView(list, 'base', 1, 10).record;
  assert.deepEqual(r.map((x) => [x.epoch, x.side, x.hit]), [[8, 'down', false], [7, 'up', true]]);
  assert.equal(aiView(list, 'base', 1, 10, 1).record.length, 1);
});

test('a published forecast (committed, not revealed, value given): Follow bets its side, Against the other', () => {
  const up = aiView([p(10, { p_up_bps: 6100 })], 'base', 1, 10);
  assert.deepEqual([up.state, up.side, up.pUpBps], ['published', 'up', 6100]);
  assert.deepEqual([betSide(up, 'follow'), betSide(up, 'against')], ['up', 'down']);
  const down = aiView([p(10, { p_up_bps: 3900 })], 'base', 1, 10);
  assert.deepEqual([betSide(down, 'follow'), betSide(down, 'against')], ['down', 'up']);
  const revealed = aiView([p(10, { revealed: true, p_up_bps: 3900 })], 'base', 1, 10);
  assert.deepEqual([betSide(revealed, 'follow'), betSide(revealed, 'against')], ['down', 'up']);
});

test('no side to bet on a sealed forecast, none, exactly one half, or an unknown choice', () => {
  for (const v of [aiView([p(10)], 'base', 1, 10), aiView([], 'base', 1, 10), aiView([p(10, { p_up_bps: 5000 })], 'base', 1, 10)]) {
    assert.deepEqual([betSide(v, 'follow'), betSide(v, 'against')], [null, null], v.state);
  }
  assert.equal(betSide(aiView([p(10, { p_up_bps: 6100 })], 'base', 1, 10), 'sideways'), null);
  assert.equal(betSide(null, 'follow'), null);
});

test('the reveal is checked against what the page was shown before it', () => {
  const shown = new Map();
  remember(shown, aiView([p(10, { p_up_bps: 6100 })], 'base', 1, 10), 'base', 1, 10);
  remember(shown, aiView([p(10, { p_up_bps: 6200 })], 'base', 1, 10), 'base', 1, 10); // the first value shown is kept
  remember(shown, aiView([p(11)], 'base', 1, 11), 'base', 1, 11); // sealed: nothing shown
  assert.equal(shown.size, 1);
  const later = (o) => aiView([p(10, { revealed: true, ...o })], 'base', 1, 12, 5, shown).record[0].check;
  assert.equal(later({ p_up_bps: 6100 }), 'match');
  assert.equal(later({ p_up_bps: 6100, commitment: '0X10' }), 'match', 'hex case does not matter');
  assert.equal(later({ p_up_bps: 6200 }), 'mismatch', 'another value than shown');
  assert.equal(later({ p_up_bps: 6100, commitment: '0x99' }), 'mismatch', 'another commitment than shown');
  assert.equal(aiView([p(9, { revealed: true, p_up_bps: 6100 })], 'base', 1, 12, 5, shown).record[0].check, null, 'not shown before');
  assert.equal(revealCheck({ pUpBps: 6100, commitment: '0x10' }, p(10, { p_up_bps: 6100 })), null, 'not revealed yet');
});

function pick(v) { return [v.state, v.side]; }
