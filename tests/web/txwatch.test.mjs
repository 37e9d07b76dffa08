// Following a transaction to its receipt (web/src/txwatch.js) in node, against a scripted node: a receipt, a
// replacement by the same call (followed), a replacement by another call (cancelled), a chain change, a dropped
// transaction, a receipt that never comes (timeout), and a timed-out transaction still pending.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { waitReceipt, stillPending, TxWaitError } from '../../web/src/txwatch.js';

const FROM = '0x00000000000000000000000000000000000000aa';
const TX = { from: FROM, to: '0x00000000000000000000000000000000000000bb', data: '0x1234', value: '0x0' };

// A node whose answers change with time: `script(t)` gives the state at poll `t` (each sleep is one poll).
function node(script) {
  let t = 0;
  const io = {
    calls: [],
    moved: () => Boolean(script(t).moved),
    now: () => t * 500,
    sleep: async () => { t++; },
    async request(method, params) {
      io.calls.push(method);
      const s = script(t);
      switch (method) {
        case 'eth_blockNumber': return `0x${(s.head ?? 10).toString(16)}`;
        case 'eth_getTransactionReceipt': return s.receipts?.[params[0]] ?? null;
        case 'eth_getTransactionByHash': return s.txs?.[params[0]] ?? null;
        case 'eth_getTransactionCount': return `0x${((params[1] === 'pending' ? s.pendingCount : s.count) ?? 5).toString(16)}`;
        case 'eth_getBlockByNumber': return { transactions: s.blocks?.[Number(BigInt(params[0]))] ?? [] };
        default: throw new Error(`unexpected ${method}`);
      }
    },
  };
  return io;
}
const pending = (hash, o = {}) => ({ hash, from: FROM, to: TX.to, input: TX.data, value: '0x0', nonce: '0x5', blockNumber: null, ...o });

test('the receipt once mined', async () => {
  const io = node((t) => (t < 3 ? { txs: { '0xa': pending('0xa') } } : { receipts: { '0xa': { status: '0x1' } } }));
  const r = await waitReceipt('0xa', TX, io);
  assert.deepEqual([r.hash, r.replaced, r.receipt.status], ['0xa', false, '0x1']);
});

test('a sped-up transaction: the replacement with the same call is followed to its receipt', async () => {
  const rep = pending('0xb', { blockNumber: '0xc' });
  const io = node((t) => {
    if (t < 2) return { txs: { '0xa': pending('0xa') } };
    if (t < 16) return { txs: { '0xb': pending('0xb') }, pendingCount: 6, count: 5 }; // replaced in the pool, for longer than a drop takes
    return { head: 12, count: 6, pendingCount: 6, blocks: { 12: [rep] }, txs: { '0xb': rep }, receipts: { '0xb': { status: '0x1' } } };
  });
  const r = await waitReceipt('0xa', TX, io);
  assert.deepEqual([r.hash, r.replaced], ['0xb', true]);
});

test('a replacement by another call (a cancel) ends the wait', async () => {
  const cancel = pending('0xc', { to: FROM, input: '0x', blockNumber: '0xb' });
  const io = node((t) => (t < 2 ? { txs: { '0xa': pending('0xa') } } : { head: 11, count: 6, blocks: { 11: [cancel] } }));
  await assert.rejects(waitReceipt('0xa', TX, io), (e) => e instanceof TxWaitError && e.kind === 'cancelled' && /0xc/.test(e.message));
});

test('a chain change in the wallet ends the wait', async () => {
  const io = node((t) => ({ txs: { '0xa': pending('0xa') }, moved: t >= 2 }));
  await assert.rejects(waitReceipt('0xa', TX, io), (e) => e.kind === 'moved');
});

test('a transaction the node forgets without its nonce used is dropped', async () => {
  const io = node((t) => (t < 2 ? { txs: { '0xa': pending('0xa') } } : { count: 5, pendingCount: 5 }));
  await assert.rejects(waitReceipt('0xa', TX, io), (e) => e.kind === 'dropped');
});

test('no receipt in time: a timeout, then still pending', async () => {
  const io = node(() => ({ txs: { '0xa': pending('0xa') } }));
  await assert.rejects(waitReceipt('0xa', TX, io, { waitMs: 10_000 }), (e) => e.kind === 'timeout' && /No receipt/.test(e.message));
  assert.equal(io.now(), 10_500, 'gave up at the first poll past the wait');
  assert.equal(await stillPending('0xa', io), true);
  assert.equal(await stillPending('0xa', node(() => ({ receipts: { '0xa': { status: '0x1' } } }))), false);
  assert.equal(await stillPending('0xa', node(() => ({}))), false);
});
