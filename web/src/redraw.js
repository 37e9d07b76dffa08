// When the page may redraw itself with fresh data, a module of its own so tests/web/redraw.test.mjs can check the
// rule in node.

// How long after the last keystroke in the amount field a refresh waits.
export const TYPING_PAUSE_MS = 2000;

// Whether a refresh may redraw the page at `now` (ms): not while a transaction is on its way (its buttons stay
// disabled until it ends), nor within TYPING_PAUSE_MS of the amount last typed at `typedAt`. The amount field merely
// having the focus does not hold it: the redraw keeps the amount, the focus and the caret, and a page that waited for
// the field to lose the focus would never show a round move on (nor a bet lock, settle or pay) while it kept it.
export function mayRefresh(now, typedAt, busy) {
  return !busy && now - typedAt >= TYPING_PAUSE_MS;
}
