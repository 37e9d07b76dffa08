// Unit tests of when the dApp redraws itself (web/src/redraw.js), run by keeper/tests/web.rs with `node --test`.
import test from 'node:test';
import assert from 'node:assert/strict';
import { mayRefresh, TYPING_PAUSE_MS } from '../../web/src/redraw.js';

test('a refresh waits for a pause in typing the amount, then redraws', () => {
  const now = 1_000_000;
  assert.equal(mayRefresh(now, now - 1, false), false);
  assert.equal(mayRefresh(now, now - TYPING_PAUSE_MS + 1, false), false);
  assert.equal(mayRefresh(now, now - TYPING_PAUSE_MS, false), true);
  // An amount typed long ago (the field may still have the focus) holds nothing: the rounds keep moving on.
  assert.equal(mayRefresh(now, now - 60_000, false), true);
  assert.equal(mayRefresh(now, 0, false), true);
});

test('no refresh while a transaction is on its way', () => {
  assert.equal(mayRefresh(1_000_000, 0, true), false);
});
