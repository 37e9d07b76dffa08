// AI mode's rule (web/src/ai.js) in node: Follow / Against only on a published or revealed forecast with a
// direction — Follow its side, Against the other — and each reveal, as the registry holds it, checked against what
// the page was shown.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { encodeAbiParameters, encodeEventTopics } from 'viem';
import { aiView, direction, betSide, remember, revealCheck, registryReveal, predictionKey } from '../../web/src/ai.js';
import { predictionRegistryAbi } from '../../web/src/abi.gen.js';

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

test('the reveal the registry holds is checked against what the page was shown before it, not the keeper\'s word', () => {
  const shown = new Map();
  remember(shown, aiView([p(10, { p_up_bps: 6100 })], 'base', 1, 10), 'base', 1, 10);
  remember(shown, aiView([p(10, { p_up_bps: 6200 })], 'base', 1, 10), 'base', 1, 10); // the first value shown is kept
  remember(shown, aiView([p(11)], 'base', 1, 11), 'base', 1, 11); // sealed: nothing shown
  assert.equal(shown.size, 1);
  // The keeper says round 10 was revealed at 6100 (what was shown); the check is the registry's reading's alone.
  const later = (reading) => aiView([p(10, { revealed: true, p_up_bps: 6100 })], 'base', 1, 12, 5, shown, new Map(reading ? [[predictionKey('base', 1, 10), reading]] : [])).record[0].check;
  assert.equal(later({ pUpBps: 6100, commitment: '0x10' }), 'match');
  assert.equal(later({ pUpBps: 6100, commitment: '0X10' }), 'match', 'hex case does not matter');
  assert.equal(later({ pUpBps: 6200, commitment: '0x10' }), 'mismatch', 'the registry holds another value than shown (whatever the keeper says)');
  assert.equal(later({ pUpBps: 6100, commitment: '0x99' }), 'mismatch', 'another commitment than shown');
  assert.equal(later({ pUpBps: null, commitment: '0x10' }), 'mismatch', 'no such reveal in the registry');
  assert.equal(later(null), 'unchecked', 'the registry not read (no wallet on the chain)');
  assert.equal(aiView([p(9, { revealed: true, p_up_bps: 6100 })], 'base', 1, 12, 5, shown).record[0].check, null, 'not shown before');
  assert.equal(revealCheck(undefined, { pUpBps: 6100, commitment: '0x10' }), null);
});

test('the registry\'s reading: the Revealed event of that publisher, market and round, from the registry, in a successful receipt', () => {
  const registry = '0x5FbDB2315678afecb367f032d93F642f64180aa3';
  const publisher = '0x70997970C51812dc3A010C7d01b50e0d17dc79C8';
  const hash = `0x${'ab'.repeat(32)}`;
  const revealed = { hash, status: 2, openIndex: 0 };
  const log = (o = {}) => {
    const args = { publisher, marketId: 1n, epoch: 10n, ...o.args };
    return {
      address: o.address ?? registry,
      topics: encodeEventTopics({ abi: predictionRegistryAbi, eventName: 'Revealed', args }),
      data: encodeAbiParameters([{ type: 'bool' }, { type: 'uint16' }, { type: 'uint8' }, { type: 'bool' }, { type: 'uint256' }], [true, o.bps ?? 6100, 1, true, 1521n]),
    };
  };
  const receipt = (...logs) => ({ status: '0x1', logs });
  const read = (r, c = revealed) => registryReveal(r, c, registry, publisher, 1, 10);
  assert.deepEqual(read(receipt(log())), { pUpBps: 6100, commitment: hash });
  assert.deepEqual(read(receipt(log({ args: { epoch: 9n } }), log({ bps: 3900 }))), { pUpBps: 3900, commitment: hash }, 'the event of that round');
  for (const [r, why] of [
    [receipt(log({ address: '0x0000000000000000000000000000000000000001' })), 'another contract\'s log'],
    [receipt(log({ args: { publisher: registry } })), 'another publisher'],
    [receipt(log({ args: { marketId: 2n } })), 'another market'],
    [receipt(log({ args: { epoch: 11n } })), 'another round'],
    [{ status: '0x0', logs: [log()] }, 'a failed transaction'],
    [receipt(), 'no log'],
  ]) assert.equal(read(r).pUpBps, null, why);
  assert.equal(read(receipt(log()), { hash, status: 1, openIndex: 0 }).pUpBps, null, 'the commitment is not marked revealed');
});

function pick(v) { return [v.state, v.side]; }
