// Following a sent transaction to its receipt, a module of its own so tests/web/txwatch.test.mjs can check it in node
// against a scripted node. `io` is what it needs from the page: `request(method, params)` (the wallet's EIP-1193
// request), `moved()` (the wallet changed chain since the transaction was sent), `now()` and `sleep(ms)`.
//
// - A chain change in the wallet ends the wait at once (the wallet's RPC now answers for another chain).
// - A replacement (the wallet's "speed up": the same nonce, the same call, a higher fee) is followed: when the node
//   no longer knows the transaction and its nonce has been used, the blocks since it was sent are searched for the
//   transaction that used it; the same call (to, data, value) is the replacement and its receipt is the one awaited;
//   another one (the wallet's "cancel", or another transaction) ends the wait with a message.
// - A transaction the node never knew, or that vanished without its nonce being used (dropped), ends the wait.
// - No receipt within `waitMs` ends the wait with a message (the transaction may still be mined).

export const RECEIPT_WAIT_MS = 5 * 60_000;
export const POLL_MS = 500;

// Why a wait ended without a receipt: `kind` is 'moved', 'cancelled', 'dropped' or 'timeout'.
export class TxWaitError extends Error {
  constructor(kind, message, hash) { super(message); this.kind = kind; this.hash = hash; }
}

const low = (s) => String(s ?? '').toLowerCase();
const sameCall = (a, b) => low(a.to) === low(b.to) && low(a.input ?? a.data ?? '0x') === low(b.input ?? b.data ?? '0x') && BigInt(a.value ?? 0) === BigInt(b.value ?? 0);

// Waits for the receipt of `hash`, the transaction `tx` ({ from, to, data, value }) the wallet sent. Answers
// { receipt, hash, replaced }: `hash` the transaction that was mined (the replacement's when `replaced`).
export async function waitReceipt(hash, tx, io, { waitMs = RECEIPT_WAIT_MS, pollMs = POLL_MS } = {}) {
  const deadline = io.now() + waitMs;
  const original = hash;
  let seen = null; // the transaction as the node showed it while pending (its nonce)
  let scanned = BigInt(await io.request('eth_blockNumber', [])) - 1n; // the last block searched for a replacement
  let unknownFor = 0;
  let replaced = false;
  for (;;) {
    if (io.moved()) throw new TxWaitError('moved', `Your wallet changed chain while transaction ${hash} was pending: check it in your wallet's activity; the page shows the result once it is mined.`, hash);
    const r = await io.request('eth_getTransactionReceipt', [hash]);
    if (r) return { receipt: r, hash, replaced };
    const t = await io.request('eth_getTransactionByHash', [hash]);
    if (t) { seen = t; unknownFor = 0; }
    else {
      unknownFor++;
      if (seen?.nonce != null) {
        const from = seen.from ?? tx.from;
        const used = BigInt(await io.request('eth_getTransactionCount', [from, 'latest'])) > BigInt(seen.nonce);
        if (used) {
          const head = BigInt(await io.request('eth_blockNumber', []));
          let found = null;
          for (let b = scanned + 1n; b <= head && !found; b++) {
            const block = await io.request('eth_getBlockByNumber', [`0x${b.toString(16)}`, true]);
            found = (block?.transactions ?? []).find((x) => typeof x === 'object' && low(x.from) === low(from) && BigInt(x.nonce) === BigInt(seen.nonce)) ?? null;
            scanned = b;
          }
          if (found && sameCall(found, tx)) { hash = found.hash; replaced = true; seen = found; continue; }
          if (found) throw new TxWaitError('cancelled', `Your wallet replaced transaction ${original} with another one (${found.hash}: cancelled, or a different call): it did not go through. Check your wallet's activity.`, original);
        } else if (BigInt(await io.request('eth_getTransactionCount', [from, 'pending'])) > BigInt(seen.nonce)) {
          unknownFor = 0; // a transaction with its nonce waits in the pool (a replacement not mined yet)
        }
      }
      if (unknownFor >= 10) throw new TxWaitError('dropped', `Transaction ${hash} is no longer known to the chain (dropped by the network): check your wallet's activity.`, hash);
    }
    if (io.now() > deadline) throw new TxWaitError('timeout', `No receipt for transaction ${hash} after ${Math.round(waitMs / 60_000)} minutes: it may still be mined; check your wallet's activity. The page sends nothing else from this account on this chain until it is mined or gone.`, hash);
    await io.sleep(pollMs);
  }
}

// Whether `hash` (a transaction whose wait timed out) is still waiting to be mined: neither a receipt nor gone.
export async function stillPending(hash, io) {
  if (await io.request('eth_getTransactionReceipt', [hash])) return false;
  const t = await io.request('eth_getTransactionByHash', [hash]);
  return Boolean(t) && t.blockNumber == null;
}
