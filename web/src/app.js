// The Kronos dApp: markets of every chain the keeper drives, round cards with live updates over the keeper's /ws,
// settlement proofs, bets and claims through an EIP-1193 wallet (EIP-6963 discovery), the forecaster's record and
// the keeper's health. Amounts are bigint with the stake token's decimals; times are shown in the user's zone.
import { encodeFunctionData, decodeFunctionResult, decodeErrorResult, parseUnits, toHex } from 'viem';
import { esc, big, amt, fmt, fmtShort, num, multiplier, poolsOf, paramsAt, paidMultiplier } from './format.js';
import { mayRefresh } from './redraw.js';
import { aiView, betSide, remember, registryReveal, predictionKey } from './ai.js';
import { waitReceipt, stillPending, TxWaitError } from './txwatch.js';
import { kronosMarketAbi, erc20Abi, predictionRegistryAbi } from './abi.gen.js';

const API = (document.querySelector('meta[name=kronos-api]')?.content || '').replace(/\/$/, '');
const view = document.getElementById('view');
const msgBox = document.getElementById('msg');
const POSITION = { up: 1, down: 2 };
const ZERO = '0x0000000000000000000000000000000000000000';

const SHOWN_KEY = 'kronos.ai.shown';
const st = {
  chains: [], live: [], markets: [], health: null,
  amounts: new Map(), // the amount typed in each market ('chain/id'), kept across redraws and pages
  pending: null, // { hash, chainId, from }: a transaction whose receipt did not come in time (see `send`)
  providers: [], wallet: null, account: null, refreshTimer: null,
  typedAt: 0, // when the amount was last typed into (the page waits for a pause before redrawing)
  forecastsPublic: false, // the keeper publishes forecasts once committed (`/api/chains`' forecasts_public)
  shown: loadShown(), // AI mode: the published forecasts this browser was shown before their reveal (web/src/ai.js)
  reveals: new Map(), // AI mode: what the registry holds for those rounds once revealed, read through the wallet
  registries: new Set(), // chains whose registry was checked to score this page's market contract
};

// The forecasts shown before their reveal, kept in this browser (at most 500 rounds) so that a reveal after a reload
// is still checked against them. (`SHOWN_KEY` is declared above `st`, whose initialiser reads it: below, it was read
// before its declaration, the error swallowed, and nothing remembered survived a reload.)
function loadShown() {
  try { return new Map(JSON.parse(localStorage.getItem(SHOWN_KEY) ?? '[]')); } catch { return new Map(); }
}
function saveShown() {
  try { localStorage.setItem(SHOWN_KEY, JSON.stringify([...st.shown].slice(-500))); } catch { /* storage off: kept for this page only */ }
}

// ---------- helpers ----------
const localTime = (ts) => new Date(Number(ts) * 1000).toLocaleString(undefined, { dateStyle: 'short', timeStyle: 'medium' });
const DEFAULT_AMOUNT = '0.01';
const amountKey = (c, m) => `${c.name}/${m.id}`;
// The fee of round `e` is the one in force for it (`paramsAt`); a round older than every parameter set the contract
// still holds has a fee the page does not know, and says so rather than show another round's.
const feeNote = (p) => p ? `<span class="fee">after ${p.fee_bps / 100}% fee</span>` : '<span class="fee">before the fee (this round\'s fee is not known here)</span>';
function show(text, ok = false) { msgBox.textContent = text; msgBox.className = ok ? 'ok' : ''; msgBox.hidden = false; }
function clearMsg() { msgBox.hidden = true; msgBox.textContent = ''; }

async function api(path) {
  const r = await fetch(API + path, { headers: { accept: 'application/json' } });
  if (!r.ok && r.status !== 503) throw new Error(`the keeper answered ${r.status} to ${path}`);
  return r.json();
}

function chainOf(name) { return st.chains.find((c) => c.name === name); }
function liveOf(chain, id) { return st.live.find((l) => l.chain === chain && Number(l.market) === Number(id)); }
// A chain's time now, from its head as the keeper last saw it and the rate its clock runs at (1 on a real chain;
// faster on the demo's accelerated local chains), measured between two readings of the keeper's health.
const clocks = new Map();
function sampleClocks(health, at) {
  for (const [name, h] of Object.entries(health?.chains ?? {})) {
    if (!h?.head_time) continue;
    const c = clocks.get(name);
    if (!c) { clocks.set(name, { head: h.head_time, at, rate: 1 }); continue; }
    const dt = (at - c.at) / 1000;
    if (h.head_time === c.head || dt < 1) continue;
    const r = Math.min(Math.max((h.head_time - c.head) / dt, 0.5), 50);
    clocks.set(name, { head: h.head_time, at, rate: c.rate === 1 ? r : (c.rate + r) / 2 });
  }
}
function chainNow(chain) {
  const c = clocks.get(chain);
  if (!c) return Math.floor(Date.now() / 1000);
  return Math.floor(c.head + ((Date.now() - c.at) / 1000) * c.rate);
}
// The round taking bets at chain time `now`, and when its betting closes.
function clock(m, now) {
  const g = Number(m.genesis), iv = Number(m.interval);
  const b = Math.max(Math.floor((now - g) / iv), 0);
  const closes = g + (b + 1) * iv - Number(m.bet_cutoff);
  return { epoch: b, closes, lock: g + (b + 1) * iv, open: now >= g + b * iv && now < closes };
}

async function load() {
  const [chains, markets, health] = await Promise.all([api('/api/chains'), api('/api/markets'), api('/health')]);
  // Numbers put into the page's markup are numbers: a market whose fields are not is left out.
  const ints = (o, ks) => ks.every((k) => { o[k] = Number(o[k]); return Number.isSafeInteger(o[k]) && o[k] >= 0; });
  const all = chains.chains ?? [];
  const evm = all.filter((c) => c.kind !== 'solana' && ints(c, ['chain_id']));
  // Solana clusters are shown read-only; a market whose stake decimals are unknown (its mint not read) shows base units.
  const solana = all.filter((c) => c.kind === 'solana' && typeof c.name === 'string');
  for (const c of solana) {
    c.markets = (c.markets ?? []).filter((m) => ints(m, ['id', 'genesis', 'interval']) && (m.decimals == null || (ints(m, ['decimals']) && m.decimals <= 36)));
    for (const m of c.markets) {
      if (m.decimals == null) { m.decimals = 0; m.symbol = `${m.symbol} base units`; }
      m.bet_cutoff = Number.isSafeInteger(Number(m.bet_cutoff)) ? Number(m.bet_cutoff) : 0;
    }
  }
  st.chains = [...evm, ...solana];
  st.forecastsPublic = chains.forecasts_public === true;
  // `kronos web` marks each chain's contract addresses as checked against the deployment it was given ('pinned') or
  // not ('unverified'); the keeper's own listener marks nothing (the page and the addresses come from one server).
  for (const c of st.chains) c.address_check = c.address_check === 'pinned' || c.address_check === 'unverified' ? c.address_check : null;
  for (const c of evm) {
    c.markets = (c.markets ?? []).filter((m) => ints(m, ['id', 'decimals', 'genesis', 'interval', 'bet_cutoff']) && m.decimals <= 36);
  }
  for (const c of st.chains) {
    for (const m of c.markets) {
      m.params = (m.params ?? []).filter((x) => ints(x, ['from_epoch', 'fee_bps']) && x.fee_bps <= 10000);
      for (const x of m.params) x.min_bet = big(x.min_bet);
    }
  }
  st.live = markets.live; st.markets = markets.markets; st.health = health;
  sampleClocks(health, Date.now());
}

// ---------- wallet ----------
window.addEventListener('eip6963:announceProvider', (e) => {
  const d = e.detail;
  if (d?.info?.uuid && !st.providers.some((p) => p.info.uuid === d.info.uuid)) st.providers.push(d);
  renderWallet();
});
window.dispatchEvent(new Event('eip6963:requestProvider'));

function walletError(e) {
  const code = e?.code ?? e?.data?.code;
  if (code === 4001) return 'You rejected the request in your wallet.';
  if (code === 4100) return 'Your wallet has not authorised this site: connect again.';
  if (code === -32002) return 'Your wallet already has a request waiting: open it to answer.';
  const text = String(e?.message ?? e);
  if (/insufficient funds/i.test(text)) return 'Insufficient funds: your balance does not cover the amount and the gas.';
  return null;
}

async function req(method, params) {
  if (!st.wallet) throw new Error('Connect a wallet first.');
  return st.wallet.provider.request({ method, params });
}

function renderWallet() {
  const box = document.getElementById('wallet');
  if (st.account) {
    box.innerHTML = `<span class="mute">${esc(st.wallet.info.name)}</span> <span id="account">${esc(st.account.slice(0, 6))}…${esc(st.account.slice(-4))}</span>`;
    return;
  }
  const choices = st.providers.length > 1
    ? `<label class="mute" for="walletpick">Wallet</label> <select id="walletpick">${st.providers.map((p, i) => `<option value="${i}">${esc(p.info.name)}</option>`).join('')}</select>`
    : '';
  box.innerHTML = `${choices}<button id="connect" type="button">Connect wallet</button>`;
  document.getElementById('connect').onclick = connect;
}

async function connect() {
  clearMsg();
  const pick = document.getElementById('walletpick');
  const p = st.providers[pick ? Number(pick.value) : 0];
  if (!p) { show('No wallet found: install a browser wallet (EIP-6963) and reload the page.'); return; }
  try {
    const accounts = await p.provider.request({ method: 'eth_requestAccounts' });
    if (!accounts?.length) { show('Your wallet returned no account.'); return; }
    st.wallet = p; st.account = accounts[0];
    p.provider.on?.('accountsChanged', (a) => { st.account = a?.[0] ?? null; if (!st.account) st.wallet = null; renderWallet(); route(); });
    // While a bet or claim is on its way the page is not redrawn (its buttons stay disabled); `send` aborts when the
    // wallet's chain is no longer the transaction's.
    p.provider.on?.('chainChanged', () => { st.chainMoves = (st.chainMoves ?? 0) + 1; if (!st.busy) route(); });
    renderWallet();
    route();
  } catch (e) {
    show(walletError(e) ?? `The wallet could not connect: ${e?.message ?? e}`);
  }
}

// Puts the wallet on `c`'s chain: switch, or add it from the catalogue when the wallet does not know it.
async function ensureChain(c) {
  const want = toHex(c.chain_id);
  const have = await req('eth_chainId');
  if (BigInt(have) === BigInt(want)) return;
  try {
    await req('wallet_switchEthereumChain', [{ chainId: want }]);
  } catch (e) {
    if (e?.code === 4902 || e?.data?.originalError?.code === 4902) {
      if (!c.rpc_urls?.length) throw new Error(`Wrong chain: add ${c.display} (chain id ${c.chain_id}) to your wallet, then try again.`);
      try {
        await req('wallet_addEthereumChain', [{ chainId: want, chainName: c.display, rpcUrls: c.rpc_urls, nativeCurrency: { name: c.native_symbol, symbol: c.native_symbol, decimals: 18 } }]);
        await req('wallet_switchEthereumChain', [{ chainId: want }]);
      } catch (e2) {
        throw new Error(`Wrong chain: your wallet is on chain ${BigInt(have)}, this market is on ${c.display} (chain id ${c.chain_id}). ${walletError(e2) ?? e2?.message ?? ''}`.trim());
      }
    } else {
      throw new Error(`Wrong chain: your wallet is on chain ${BigInt(have)}, this market is on ${c.display} (chain id ${c.chain_id}). ${walletError(e) ?? ''}`.trim());
    }
  }
  const now = await req('eth_chainId');
  if (BigInt(now) !== BigInt(want)) throw new Error(`Wrong chain: your wallet stayed on chain ${BigInt(now)}; switch to ${c.display} (chain id ${c.chain_id}).`);
}

// The wallet's chain must hold the keeper's market. A development chain can share a real network's chain id (the
// local path runs anvil --chain-id 8453): a wallet on the real network would pass the chain check, dry-run against an
// address without code (which does not revert) and send real money there. So the market's code and its
// configuration (genesis, interval, stake token) are read through the wallet and compared with the keeper's.
async function verifyMarket(c, m) {
  const code = await req('eth_getCode', [c.market, 'latest']);
  const elsewhere = `The market contract ${c.market} is not on the network your wallet is connected to (chain id ${c.chain_id}): it may be another network with the same chain id (a local development chain can share its id with a real one). Nothing was sent.`;
  if (!code || code === '0x') throw new Error(elsewhere);
  let cfg;
  try { cfg = await call(c.market, kronosMarketAbi, 'getMarket', [BigInt(m.id)]); } catch { throw new Error(elsewhere); }
  if (BigInt(cfg.genesis) !== BigInt(m.genesis) || BigInt(cfg.interval) !== BigInt(m.interval) || String(cfg.token).toLowerCase() !== String(m.token).toLowerCase()) throw new Error(elsewhere);
}

async function call(to, abi, functionName, args) {
  const data = encodeFunctionData({ abi, functionName, args });
  const out = await req('eth_call', [{ to, data }, 'latest']);
  return decodeFunctionResult({ abi, functionName, data: out });
}

// The revert data inside a provider error, wherever the wallet put it.
function revertData(e, depth = 0) {
  if (!e || depth > 4) return null;
  if (typeof e === 'string') return /^0x[0-9a-fA-F]{8,}$/.test(e) ? e : null;
  if (typeof e !== 'object') return null;
  for (const k of ['data', 'error', 'cause', 'originalError']) { const d = revertData(e[k], depth + 1); if (d) return d; }
  return null;
}

function explainRevert(e, m) {
  const data = revertData(e);
  if (!data) return null;
  let d;
  try { d = decodeErrorResult({ abi: kronosMarketAbi, data }); } catch {
    try { d = decodeErrorResult({ abi: erc20Abi, data }); } catch { return `Transaction reverted (unknown error ${data.slice(0, 10)}).`; }
  }
  const a = d.args ?? [];
  switch (d.errorName) {
    case 'BettingClosed': return `Betting is closed for round ${a[1]}: it closed at ${localTime(a[3])}. Bet on the next round.`;
    case 'BetTooSmall': return `Below the minimum bet: ${amt(a[0], m.decimals, m.symbol)} is less than the minimum of ${amt(a[1], m.decimals, m.symbol)}.`;
    case 'MarketIsPaused': return `This market is paused: it takes no bets now (market ${a[0]}).`;
    case 'EnforcedPause': return 'The market contract is paused: it takes no bets now.';
    case 'OppositeSideTaken': return `You already bet the other side of round ${a[1]}; a bet can only be added to on the same side.`;
    case 'NothingToClaim': return `Nothing to claim in round ${a[1]}.`;
    default: return `Transaction reverted: ${d.errorName}(${a.map(String).join(', ')}).`;
  }
}

// Sends `tx` (which names its chainId) after a dry run, on the wallet's chain only: the chain is read again just
// before the wallet is asked, and a chain change while the wallet waits for the user's confirmation, or while the
// transaction is pending, aborts with a message. The receipt is followed by `waitReceipt` (web/src/txwatch.js): a
// replacement by the wallet (speed-up) is followed, a cancel or a drop ends the wait, and no receipt within 5 minutes
// ends it too — that transaction is then remembered, and nothing else is sent from the account on that chain while it
// is still pending (a second click would otherwise pay for the same bet twice).
async function send(tx, m) {
  const { chainId, ...dry } = tx;
  const p = st.pending;
  if (p && p.chainId === chainId && p.from.toLowerCase() === tx.from.toLowerCase()) {
    if (await stillPending(p.hash, { request: req })) throw new Error(`Your earlier transaction ${p.hash} is still pending: nothing else is sent from this account on this chain until it is mined or gone (speed it up or cancel it in your wallet).`);
    st.pending = null;
  }
  try {
    await req('eth_call', [dry, 'latest']);
  } catch (e) {
    throw new Error(explainRevert(e, m) ?? walletError(e) ?? `The transaction would fail: ${e?.message ?? e}`);
  }
  const moves = st.chainMoves ?? 0;
  const have = await req('eth_chainId');
  if (BigInt(have) !== BigInt(chainId)) throw new Error(`Wrong chain: your wallet moved to chain ${BigInt(have)}; this transaction is for chain ${BigInt(chainId)}. Nothing was sent: try again.`);
  let hash;
  try { hash = await req('eth_sendTransaction', [tx]); } catch (e) {
    if ((st.chainMoves ?? 0) !== moves) throw new Error(`Your wallet changed chain while the transaction waited for your confirmation: it was not sent. Switch back to chain ${BigInt(chainId)} and try again.`);
    throw Object.assign(new Error(walletError(e) ?? explainRevert(e, m) ?? `The wallet did not send the transaction: ${e?.message ?? e}`), { code: e?.code });
  }
  const io = { request: req, moved: () => (st.chainMoves ?? 0) !== moves, now: () => Date.now(), sleep: (ms) => new Promise((ok) => setTimeout(ok, ms)) };
  let w;
  try { w = await waitReceipt(hash, tx, io); } catch (e) {
    if (e instanceof TxWaitError && e.kind === 'timeout') st.pending = { hash: e.hash, chainId, from: tx.from };
    throw e;
  }
  if (w.receipt.status !== '0x1') {
    let why = null;
    try { await req('eth_call', [dry, w.receipt.blockNumber]); } catch (e) { why = explainRevert(e, m); }
    throw new Error(why ?? `Transaction reverted (${w.hash}).`);
  }
  return w;
}

async function balanceOf(m) {
  if (m.token === ZERO) return big(await req('eth_getBalance', [st.account, 'latest']));
  return await call(m.token, erc20Abi, 'balanceOf', [st.account]);
}

async function bet(c, m, epoch, side) {
  clearMsg();
  const input = document.getElementById('amount');
  const raw = (input?.value ?? st.amounts.get(amountKey(c, m)) ?? DEFAULT_AMOUNT).trim();
  let amount;
  try { amount = parseUnits(raw, m.decimals); } catch { amount = -1n; }
  if ((raw.split('.')[1] ?? '').length > m.decimals) { show(`${m.symbol} has ${m.decimals} decimals: enter at most ${m.decimals} digits after the point.`); input?.focus(); return; }
  if (!/^\d*\.?\d+$/.test(raw) || amount <= 0n) { show(`Enter an amount in ${m.symbol}, like 0.01.`); input?.focus(); return; }
  if (st.busy) return; // one transaction at a time
  // Every redraw while busy draws these buttons (and the claim button) disabled; disabling the pressed one takes the
  // keyboard's focus from it, given back when the bet ends.
  const pressed = focusKey(document.activeElement);
  view.querySelectorAll('button.up, button.down, button.follow, #claim, .claim').forEach((b) => { b.disabled = true; });
  st.busy = true;
  try {
    if (!st.account) await connect();
    if (!st.account) return;
    await ensureChain(c);
    await verifyMarket(c, m);
    const bal = await balanceOf(m);
    if (bal < amount) throw new Error(`Insufficient funds: you have ${amt(bal, m.decimals, m.symbol)}, the bet is ${amt(amount, m.decimals, m.symbol)}.`);
    const from = st.account;
    if (m.token !== ZERO) {
      // An ERC-20 stake: the market may spend what the allowance leaves; when that is short of the bet, the wallet is
      // asked to approve this bet's amount exactly (an approval sets the allowance, it does not add to it) — never an
      // unlimited one — and the allowance is read again after, as a wallet lets the user lower the amount approved.
      const allowance = await call(m.token, erc20Abi, 'allowance', [from, c.market]);
      if (allowance < amount) {
        const what = amt(amount, m.decimals, m.symbol);
        show(`Approve ${what} for the market in your wallet (this bet's amount only), then confirm the bet…`, true);
        try {
          await send({ from, to: m.token, chainId: toHex(c.chain_id), data: encodeFunctionData({ abi: erc20Abi, functionName: 'approve', args: [c.market, amount] }) }, m);
        } catch (e) {
          throw new Error(e?.code === 4001 ? `You rejected the approval of ${what} for the market: nothing was bet.` : `The approval of ${what} for the market did not go through, so nothing was bet: ${e?.message ?? e}`);
        }
        const approved = await call(m.token, erc20Abi, 'allowance', [from, c.market]);
        if (approved < amount) throw new Error(`The market may spend only ${amt(approved, m.decimals, m.symbol)} (your wallet approved less than the ${what} asked): nothing was bet.`);
      }
    }
    const data = encodeFunctionData({ abi: kronosMarketAbi, functionName: 'bet', args: [BigInt(m.id), BigInt(epoch), side, amount] });
    const tx = { from, to: c.market, chainId: toHex(c.chain_id), data, value: m.token === ZERO ? toHex(amount) : '0x0' };
    show(`Confirm the bet in your wallet…`, true);
    const w = await send(tx, m);
    show(`Bet placed: ${amt(amount, m.decimals, m.symbol)} ${side === 1 ? 'UP' : 'DOWN'} on round ${epoch}.${w.replaced ? ` Your wallet replaced the transaction (sped up): followed ${w.hash}.` : ''}`, true);
  } catch (e) {
    show(e?.message ?? String(e));
  } finally {
    st.busy = false;
    // The buttons work again at once (the redraw waits for the keeper and the wallet), the keyboard back on the one
    // pressed unless it has moved on; the redraw keeps both.
    view.querySelectorAll('button.up, button.down').forEach((b) => { b.disabled = false; });
    view.querySelectorAll('button.follow[data-follow-side]').forEach((b) => { b.disabled = false; });
    if (pressed && !view.contains(document.activeElement)) view.querySelector(pressed)?.focus({ preventScroll: true });
    route(); // redrawn with the bet in the history
  }
}

// ---------- pages ----------
function marketRows() {
  const rows = [];
  for (const c of st.chains) for (const m of c.markets) rows.push({ c, m, l: liveOf(c.name, m.id) });
  return rows;
}

async function renderMarkets() {
  const evm = marketRows().filter((r) => r.c.kind === 'evm');
  const solana = marketRows().filter((r) => r.c.kind === 'solana');
  // Each Solana market's latest rounds, from the keeper's store (the same tables as the EVM chains' rounds).
  const solRounds = await Promise.all(solana.map(({ c, m }) => api(`/api/rounds?chain=${encodeURIComponent(c.name)}&market=${m.id}&limit=4`).catch(() => [])));
  const body = evm.map(({ c, m, l }) => {
    const now = chainNow(c.name), k = clock(m, now);
    // The keeper's pools are those of the round taking bets when it read them: shown for that round only.
    const { up, down } = poolsOf(l, k.epoch) ?? { up: 0n, down: 0n }, total = up + down;
    const p = paramsAt(m.params, k.epoch);
    const left = k.open ? `${k.closes - now} s` : 'closed';
    return `<tr data-chain="${esc(c.name)}" data-market="${m.id}">
      <td><a href="#/market/${esc(c.name)}/${m.id}">${esc(m.pair || 'market ' + m.id)}</a></td>
      <td>${esc(c.display)}</td><td>${esc(l?.last_lock_price ?? '—')}</td><td>${k.epoch}</td>
      <td>${fmtShort(up, m.decimals)} / ${fmtShort(down, m.decimals)} ${esc(m.symbol)}</td>
      <td>${multiplier(total, up, p?.fee_bps ?? 0)} / ${multiplier(total, down, p?.fee_bps ?? 0)} ${feeNote(p)}</td><td class="left" data-closes="${k.closes}" data-chain="${esc(c.name)}">${left}</td></tr>`;
  }).join('');
  const solBody = solana.map(({ c, m }, i) => {
    const now = chainNow(c.name), k = clock(m, now), rounds = solRounds[i] ?? [];
    const last = rounds.find((r) => r.state === 'settled' || r.state === 'cancelled');
    const locked = rounds.find((r) => Number(r.epoch) === k.epoch - 1) ?? rounds[0];
    const pools = locked ? `#${num(locked.epoch)}: ${fmtShort(big(locked.up_wei), m.decimals)} / ${fmtShort(big(locked.down_wei), m.decimals)} ${esc(m.symbol)}` : '—';
    return `<tr data-chain="${esc(c.name)}" data-market="${m.id}">
      <td><a href="#/market/${esc(c.name)}/${m.id}">${esc(m.pair || 'market ' + m.id)}</a></td>
      <td>${esc(c.display)}${c.cluster ? ` (${esc(c.cluster)})` : ''}</td><td>${esc(m.symbol)}</td><td>${k.epoch}</td>
      <td class="last">${last ? `#${num(last.epoch)} ${esc(last.lock_price ?? '—')} → ${esc(last.close_price ?? '—')} ${roundResult(last)}` : '—'}</td>
      <td>${pools}</td><td>${esc(solanaStatus(c, m))}</td></tr>`;
  }).join('');
  const live = liveChains();
  draw(view, `<h1>Markets</h1>
    <p class="mute" id="chains-live" data-live="${live.up.length}" data-total="${live.all.length}">${live.up.length} of ${live.all.length} chains live${live.all.length ? `: ${live.all.map((n) => `<span data-chain="${esc(n)}" class="${live.up.includes(n) ? 'pos' : 'neg'}">${esc(chainOf(n)?.display ?? n)}</span>`).join(', ')}` : ''}</p>
    <div class="scroll"><table id="markets"><thead><tr><th>Pair</th><th>Chain</th><th>Price</th><th>Round</th><th>Pools up / down</th><th>Payout up / down</th><th>Betting closes in</th></tr></thead><tbody>${body || '<tr><td colspan="7">This keeper drives no EVM market.</td></tr>'}</tbody></table></div>
    <h2>Solana</h2>
    <div class="note" id="solana">${solana.length
      ? 'Solana markets are shown read-only: betting from Solana wallets comes later.'
      : 'This keeper drives no Solana market yet. Solana markets will be shown here read-only; betting from Solana wallets comes later.'}</div>
    ${solana.length ? `<div class="scroll"><table id="solana-markets"><thead><tr><th>Pair</th><th>Cluster</th><th>Stake</th><th>Round</th><th>Last finished round</th><th>Pools up / down</th><th>Status</th></tr></thead><tbody>${solBody}</tbody></table></div>` : ''}`);
}

// Every chain the keeper lists (EVM and Solana) and those whose health is good now.
function liveChains() {
  const all = st.chains.map((c) => c.name);
  const up = all.filter((n) => st.health?.chains?.[n]?.healthy === true);
  return { all, up };
}

// A finished round's result in words: `settled up`, `refunded (one_sided_pool)`.
function roundResult(r) {
  if (r.state === 'cancelled') return `refunded${r.reason ? ` (${esc(r.reason)})` : ''}`;
  if (r.state === 'settled') return `settled ${esc(r.outcome ?? '')}`;
  return esc(r.state ?? '');
}

// Whether the keeper drives a Solana market now, and why not.
function solanaStatus(c, m) {
  if (m.refused) return `refused: ${m.refused}`;
  if (c.unavailable) return `not read now: ${c.unavailable}`;
  if (m.paused) return 'paused (takes no bets)';
  return 'driven by this keeper';
}

// One Solana market, read-only: round cards from the keeper's store (lock and close prices, settled or refunded,
// pools), the rounds' table; no bet buttons (betting from Solana wallets may come later).
async function renderSolanaMarket(c, m) {
  const rounds = await api(`/api/rounds?chain=${encodeURIComponent(c.name)}&market=${m.id}&limit=50`);
  const now = chainNow(c.name), k = clock(m, now);
  const byEpoch = new Map(rounds.map((r) => [Number(r.epoch), r]));
  const pools = (r) => `Pool ${fmtShort(big(r?.up_wei) + big(r?.down_wei), m.decimals, m.symbol)} · UP ${fmtShort(big(r?.up_wei), m.decimals)} / DOWN ${fmtShort(big(r?.down_wei), m.decimals)}`;
  const card = (kind, label, e) => {
    const r = byEpoch.get(e);
    let extra = '';
    if (kind === 'expired') extra = r
      ? `<p class="result">${roundResult(r)}</p><p>${esc(r.lock_price ?? '—')} → ${esc(r.close_price ?? '—')}</p><p>${pools(r)}</p>${paidMultiplier(r) ? `<p>Paid ${paidMultiplier(r)} <span class="fee">after the round's fee</span></p>` : ''}`
      : '<p>no round recorded</p>';
    if (kind === 'live') extra = r
      ? `<p>Locked at ${esc(r.lock_price ?? '—')}; closes ${localTime(Number(m.genesis) + (e + 2) * Number(m.interval))}</p><p>${pools(r)}</p>`
      : '<p>not locked yet</p>';
    if (kind === 'next') extra = `<p class="left" data-closes="${k.closes}" data-chain="${esc(c.name)}">${k.open ? `${k.closes - now} s` : 'closed'}</p>
      <p class="mute">Takes bets from Solana wallets until ${localTime(k.closes)}; betting from this page may come later.</p>`;
    if (kind === 'later') extra = `<p>Opens ${localTime(Number(m.genesis) + e * Number(m.interval))}</p>`;
    return `<section class="card" data-card="${kind}" data-epoch="${e}"${r ? ` data-state="${esc(r.state)}"` : ''}><h3>${label} <span class="tag">#${e}</span></h3>${extra}</section>`;
  };
  const p = paramsAt(m.params, k.epoch);
  const rows = rounds.map((r) => `<tr data-epoch="${num(r.epoch)}" data-state="${esc(r.state)}"><td>${num(r.epoch)}</td><td>${roundResult(r)}</td><td>${esc(r.lock_price ?? '—')}</td><td>${esc(r.close_price ?? '—')}</td>
    <td>${fmtShort(big(r.up_wei), m.decimals)} / ${fmtShort(big(r.down_wei), m.decimals)} ${esc(m.symbol)}</td><td>${r.reward_wei == null ? '—' : fmtShort(big(r.reward_wei), m.decimals, m.symbol)}</td></tr>`).join('');
  draw(view, `<h1>${esc(m.pair)} on ${esc(c.display)}</h1>
    <p class="note" id="solana-readonly">Read-only: this Solana market is shown from the keeper's records of its round accounts. Betting from Solana wallets may come later; there is no bet button here.</p>
    <p class="mute">Market ${m.id} · account <span class="mono">${esc(m.address)}</span> · program <span class="mono">${esc(c.program)}</span>${c.cluster ? ` · cluster ${esc(c.cluster)}` : ''} · stake ${m.mint ? `SPL mint <span class="mono" id="mint">${esc(m.mint)}</span>` : esc(c.native_symbol)} (${m.decimals} decimals) · rounds of ${m.interval} s${p ? ` · fee ${p.fee_bps / 100}%, minimum bet ${fmt(p.min_bet, m.decimals, m.symbol)}` : ''} · ${esc(solanaStatus(c, m))}</p>
    <div class="cards">${card('expired', 'Expired', k.epoch - 2)}${card('live', 'Live', k.epoch - 1)}${card('next', 'Next', k.epoch)}${card('later', 'Later', k.epoch + 1)}</div>
    <h2>Rounds</h2>
    <div class="scroll"><table id="sol-rounds"><thead><tr><th>Round</th><th>Result</th><th>Lock price</th><th>Close price</th><th>Pools up / down</th><th>Paid out</th></tr></thead><tbody>${rows || '<tr><td colspan="6">No locked or finished round yet.</td></tr>'}</tbody></table></div>`);
}

// A proxy round id is phase << 64 | the aggregator's own round id.
function phaseOf(id) {
  const r = big(id);
  return r > 0n ? `(phase ${r >> 64n}, aggregator round ${r & ((1n << 64n) - 1n)})` : '';
}

async function renderMarket(chainName, id) {
  const c = chainOf(chainName);
  const m = c?.markets.find((x) => String(x.id) === String(id));
  if (!c || !m) { draw(view, `<p>No market ${esc(id)} on ${esc(chainName)} in this keeper.</p>`); return; }
  if (c.kind === 'solana') { await renderSolanaMarket(c, m); return; }
  const [rounds, cps, preds] = await Promise.all([
    api(`/api/rounds?chain=${encodeURIComponent(c.name)}&market=${m.id}&limit=50`),
    api(`/api/checkpoints?chain=${encodeURIComponent(c.name)}&market=${m.id}&limit=60`),
    // AI mode only: the market page is drawn without it when the keeper cannot give the predictions now.
    api(`/api/predictions?chain=${encodeURIComponent(c.name)}&limit=60`).catch(() => null),
  ]);
  const l = liveOf(c.name, m.id);
  const now = chainNow(c.name), k = clock(m, now);
  await checkReveals(c, m, preds?.predictions);
  const ai = aiView(preds?.predictions, c.name, m.id, k.epoch, 5, st.shown, st.reveals);
  const known = st.shown.size;
  remember(st.shown, ai, c.name, m.id, k.epoch);
  if (st.shown.size !== known) saveShown();
  const byEpoch = new Map(rounds.map((r) => [Number(r.epoch), r]));
  const cpBy = new Map(cps.map((x) => [Number(x.idx), x]));
  const card = (kind, label, e) => {
    const r = byEpoch.get(e);
    let up = big(r?.up_wei), down = big(r?.down_wei);
    const live = kind === 'next' ? poolsOf(l, e) : null;
    if (live) ({ up, down } = live);
    const total = up + down;
    const lock = cpBy.get(e + 1), close = cpBy.get(e + 2);
    // Each card's multipliers are its own round's: a settled round's as paid (its reward over the winning pool, after
    // the fee it was settled with), any other's net of the fee in force for that round — never the current one's.
    const p = paramsAt(m.params, e);
    const paid = paidMultiplier(r);
    const cancelled = r?.state === 'cancelled' || r?.state === 'Cancelled';
    const pays = cancelled
      ? 'Refunded: every bet can be claimed back'
      : paid
      ? `Paid ${paid} to ${r.outcome === 'tie' ? 'both sides (tie)' : esc(String(r.outcome).toUpperCase())} <span class="fee">after the round's fee</span>`
      : `UP ${multiplier(total, up, p?.fee_bps ?? 0)} · DOWN ${multiplier(total, down, p?.fee_bps ?? 0)} ${feeNote(p)}`;
    let extra = '';
    if (kind === 'next') {
      const phase = k.open ? 'open' : 'cutoff';
      extra = `<p class="left" data-closes="${k.closes}" data-chain="${esc(c.name)}">${k.open ? `${k.closes - now} s` : 'closed'}</p>
        <label for="amount">Amount (${esc(m.symbol)}) <span class="mute" id="minbet">minimum ${p ? fmt(p.min_bet, m.decimals, m.symbol) : 'unknown'}</span></label><div class="row"><input id="amount" inputmode="decimal" autocomplete="off" value="${esc(st.amounts.get(amountKey(c, m)) ?? DEFAULT_AMOUNT)}" size="10">
        <button class="up" type="button" data-side="up" ${st.busy ? 'disabled' : ''}>Enter UP</button><button class="down" type="button" data-side="down" ${st.busy ? 'disabled' : ''}>Enter DOWN</button></div>
        <p class="mute">Betting closes ${localTime(k.closes)}, ${m.bet_cutoff} s before the lock.</p>`;
      return `<section class="card" data-card="next" data-epoch="${e}" data-phase="${phase}"><h3>Next <span class="tag">#${e}</span></h3>
        <p>Pool ${fmtShort(total, m.decimals, m.symbol)} · ${pays}</p>${extra}</section>`;
    }
    if (kind === 'live') extra = `<p>Locked at ${esc(r?.lock_price ?? lock?.price ?? '—')}; closes ${localTime(Number(m.genesis) + (e + 2) * Number(m.interval))}</p>`;
    if (kind === 'expired') extra = `<p>${esc(r?.state ?? 'no bets')} ${esc(r?.outcome ?? '')} ${r?.reason ? '(' + esc(r.reason) + ')' : ''}</p><p>${esc(r?.lock_price ?? lock?.price ?? '—')} → ${esc(r?.close_price ?? close?.price ?? '—')}</p>`;
    if (kind === 'later') extra = `<p>Opens ${localTime(Number(m.genesis) + e * Number(m.interval))}</p>`;
    return `<section class="card" data-card="${kind}" data-epoch="${e}"><h3>${label} <span class="tag">#${e}</span></h3>
      <p>Pool ${fmtShort(total, m.decimals, m.symbol)} · ${pays}</p>${extra}</section>`;
  };
  const finished = rounds.filter((r) => r.state === 'settled' || r.state === 'cancelled' || r.state === 'Settled' || r.state === 'Cancelled');
  const proof = (r) => {
    const e = Number(r.epoch), a = cpBy.get(e + 1), b = cpBy.get(e + 2);
    const cell = (x) => x ? `price ${esc(x.price)}, Chainlink round ${esc(x.round_id)} ${phaseOf(x.round_id)}, at ${esc(localTime(x.ts))}${x.tx_hash ? `, tx ${c.explorer ? `<a href="${esc(c.explorer)}/tx/${esc(x.tx_hash)}" rel="noopener">${esc(x.tx_hash.slice(0, 10))}…</a>` : esc(x.tx_hash)}` : ''}` : '—';
    return `<tr data-epoch="${e}"><td>${e}</td><td>${esc(r.state)} ${esc(r.outcome ?? '')} ${r.reason ? '(' + esc(r.reason) + ')' : ''}</td><td>${cell(a)}</td><td>${cell(b)}</td></tr>`;
  };
  draw(view, `<h1>${esc(m.pair)} on ${esc(c.display)}</h1>
    <p class="mute">Market ${m.id} · contract ${esc(c.market)} · stake ${esc(m.symbol)} (${m.decimals} decimals) · rounds of ${m.interval} s · latest price ${esc(l?.last_lock_price ?? '—')}</p>
    ${addressNote(c)}
    <div class="cards">${card('expired', 'Expired', k.epoch - 2)}${card('live', 'Live', k.epoch - 1)}${card('next', 'Next', k.epoch)}${card('later', 'Later', k.epoch + 1)}</div>
    ${aiPanel(ai, k)}
    <h2>My positions</h2><div id="positions">${st.account ? '<p>Reading your bets…</p>' : '<p>Connect a wallet to see your bets, their PnL and what you can claim.</p>'}</div>
    <h2>Settlement proofs</h2>
    <div class="scroll"><table id="proofs"><thead><tr><th>Round</th><th>Result</th><th>Lock checkpoint</th><th>Close checkpoint</th></tr></thead><tbody>${finished.map(proof).join('') || '<tr><td colspan="4">No finished round with bets yet.</td></tr>'}</tbody></table></div>`);
  document.getElementById('amount').oninput = (ev) => { st.amounts.set(amountKey(c, m), ev.target.value); st.typedAt = Date.now(); };
  view.querySelectorAll('button.follow[data-follow-side]').forEach((b) => {
    b.onclick = () => bet(c, m, Number(b.dataset.epoch), POSITION[b.dataset.followSide]);
  });
  view.querySelectorAll('button[data-side]').forEach((b) => {
    b.onclick = () => bet(c, m, Number(b.closest('[data-card]').dataset.epoch), POSITION[b.dataset.side]);
  });
  if (st.account) await renderPositions(c, m, rounds, k.epoch);
}

// Where the market's contract address comes from, and what checked it (keeper/README.md, "The dApp": trust).
function addressNote(c) {
  if (c.address_check === 'pinned') return `<p class="mute" id="addresses" data-check="pinned">This server checked the contract address against the deployment it was configured with.</p>`;
  if (c.address_check === 'unverified') return `<p class="note" id="addresses" data-check="unverified">Unverified contract address: this page is served in front of a keeper whose addresses it was not configured to check. Compare ${esc(c.market)} with the deployment you trust before betting.</p>`;
  return '';
}

// AI mode's check of each reveal: for every revealed round of this market whose forecast this page showed before
// its reveal, what the prediction registry holds, read through the wallet's provider (so the check does not trust
// this keeper): the receipt of the reveal transaction the keeper names (its `Revealed` event, from the registry, for
// that publisher, market and round) and the registry's commitment for them. The registry is the one `/api/chains`
// names for the chain, checked to score this page's market contract (its `market()`). Readings are kept: a reveal is
// final. Nothing is read while no wallet is connected or the wallet is on another chain (the record says so).
async function checkReveals(c, m, predictions) {
  if (!st.account || !c.registry) return;
  const todo = (predictions ?? []).filter((p) => p.chain === c.name && Number(p.market) === Number(m.id) && p.revealed && p.reveal_tx && p.publisher
    && st.shown.has(predictionKey(c.name, m.id, p.epoch)) && !st.reveals.has(predictionKey(c.name, m.id, p.epoch)));
  if (!todo.length) return;
  try {
    if (BigInt(await req('eth_chainId')) !== BigInt(c.chain_id)) return;
    if (!st.registries.has(c.name)) {
      const scored = await call(c.registry, predictionRegistryAbi, 'market', []);
      if (String(scored).toLowerCase() !== String(c.market).toLowerCase()) return;
      st.registries.add(c.name);
    }
    for (const p of todo.slice(0, 5)) {
      const receipt = await req('eth_getTransactionReceipt', [p.reveal_tx]);
      if (!receipt) continue; // not on the wallet's node yet: read again on the next redraw
      const commitment = await call(c.registry, predictionRegistryAbi, 'getCommitment', [p.publisher, BigInt(m.id), BigInt(p.epoch)]);
      st.reveals.set(predictionKey(c.name, m.id, p.epoch), registryReveal(receipt, commitment, c.registry, p.publisher, m.id, p.epoch));
    }
  } catch { /* the wallet's node did not answer: checked on a later redraw */ }
}

// AI mode: the forecaster's word on the round taking bets, Follow / Against, and its record on this market.
function aiPanel(ai, k) {
  const pUp = () => `P(up) ${(ai.pUpBps / 100).toFixed(2)}% — ${ai.side ? ai.side.toUpperCase() : 'no direction (exactly one half)'}`;
  const hash = `<span class="mono" title="${esc(String(ai.commitment))}">${esc(String(ai.commitment).slice(0, 18))}…</span>`;
  let said;
  if (ai.state === 'sealed') said = `Round #${k.epoch}: committed, direction hidden until reveal (commitment ${hash}).`;
  else if (ai.state === 'published') said = `Round #${k.epoch}: the AI says ${pUp()} (committed on chain as ${hash}, revealed after the round).`;
  else if (ai.state === 'public') said = `Round #${k.epoch}: revealed, ${pUp()}.`;
  else said = `Round #${k.epoch}: no forecast committed yet.`;
  const open = k.open && !st.busy;
  const button = (label, choice) => {
    const side = open ? betSide(ai, choice) : null;
    return `<button type="button" class="follow" data-choice="${choice}" ${side ? `data-follow-side="${side}" data-epoch="${k.epoch}" title="Bet ${side.toUpperCase()} with the market's amount"` : 'disabled aria-describedby="ai-why"'}>${label}${side ? ` (${side.toUpperCase()})` : ''}</button>`;
  };
  const checked = {
    match: 'the registry\'s reveal matches what this page showed',
    mismatch: 'the registry\'s reveal DIFFERS from what this page showed',
    unchecked: 'not checked yet: connect a wallet on this chain (the registry is read through it)',
  };
  const rows = ai.record.map((x) => `<tr data-epoch="${x.epoch}"${x.check ? ` data-check="${x.check}"` : ''}><td>${x.epoch}</td><td>${(x.pUpBps / 100).toFixed(2)}%</td><td>${x.side ? x.side.toUpperCase() : '—'}</td><td>${esc(x.outcome ?? '—')}</td><td>${x.hit == null ? 'void' : x.hit ? 'hit' : 'miss'}</td><td>${x.check ? checked[x.check] : '—'}</td></tr>`).join('');
  const why = st.forecastsPublic
    ? `This keeper's operator publishes each forecast as soon as it is committed on chain: Follow bets the AI's direction on the round taking bets, Against the other one, with the amount above and every check of a normal bet. The commitment is what makes the early publication verifiable: the registry accepts only a reveal that hashes to it, so the forecast cannot be changed after you saw it. This page remembers what it showed and, once a round is revealed, reads the reveal from the prediction registry through your wallet (the Revealed event of the reveal transaction and the commitment it had to hash to), not from this keeper: the record below says whether each matches what was shown.`
    : `The prediction registry takes only a hash of each forecast while its round takes bets, and the reveal once the round's outcome is final; this keeper keeps forecasts sealed until then (its operator can publish them: [api] publish_forecasts). So nobody, this page included, can see the direction in time to follow it or bet against it, and Follow and Against stay disabled while the round takes bets. What the forecaster said about earlier rounds, and how it went, is below; its whole record is on the Forecaster page.`;
  return `<section id="ai" data-state="${ai.state}" data-public="${st.forecastsPublic}"><h2>AI mode</h2><p id="ai-said">${said}</p>
    <div class="row">${button('Follow', 'follow')}${button('Against', 'against')}</div>
    <p class="mute" id="ai-why">${why}</p>
    <div class="scroll"><table id="ai-record"><thead><tr><th>Round</th><th>P(up)</th><th>Said</th><th>Outcome</th><th>Score</th><th>Reveal vs shown</th></tr></thead><tbody>${rows || '<tr><td colspan="6">No revealed forecast on this market yet.</td></tr>'}</tbody></table></div></section>`;
}

async function renderPositions(c, m, rounds, current, box = document.getElementById('positions')) {
  try {
    const have = await req('eth_chainId');
    if (BigInt(have) !== BigInt(c.chain_id)) {
      draw(box, `<p>Your wallet is on chain ${esc(BigInt(have))}; this market is on ${esc(c.display)} (chain id ${c.chain_id}).</p><button type="button" class="switch">Switch to ${esc(c.display)}</button>`);
      box.querySelector('.switch').onclick = async () => { try { await ensureChain(c); route(); } catch (e) { show(e.message); } };
      return;
    }
    const epochs = new Set(rounds.map((r) => Number(r.epoch)));
    for (let e = Math.max(current - 3, 0); e <= current; e++) epochs.add(e);
    const rows = [];
    let pnl = 0n;
    const claimable = [];
    for (const e of [...epochs].sort((a, b) => b - a)) {
      const b = await call(c.market, kronosMarketAbi, 'getBet', [BigInt(m.id), BigInt(e), st.account]);
      if (b.amount === 0n) continue;
      const r = await call(c.market, kronosMarketAbi, 'getRound', [BigInt(m.id), BigInt(e)]);
      const due = await call(c.market, kronosMarketAbi, 'claimable', [BigInt(m.id), BigInt(e), st.account]);
      const refund = await call(c.market, kronosMarketAbi, 'refundable', [BigInt(m.id), BigInt(e), st.account]);
      let status, result = 0n;
      if (refund || r.state === 3) { status = 'Refund'; } // refundable, or cancelled (refund claimed or not)
      else if (r.state === 2) {
        const win = r.outcome === 3 ? r.upAmount + r.downAmount : r.outcome === b.position ? (b.position === 1 ? r.upAmount : r.downAmount) : 0n;
        if (r.outcome === 3 || r.outcome === b.position) { status = r.outcome === 3 ? 'Tie' : 'Won'; result = (b.amount * r.rewardAmount) / win - b.amount; }
        else { status = 'Lost'; result = -b.amount; }
      } else status = e >= current ? 'Open' : 'Locked';
      pnl += result;
      if (due > 0n) claimable.push(BigInt(e));
      rows.push(`<tr data-epoch="${e}"><td>${e}</td><td>${b.position === 1 ? 'UP' : 'DOWN'}</td><td>${fmt(b.amount, m.decimals, m.symbol)}</td><td class="status">${status}${b.claimed ? ' · claimed' : ''}</td>
        <td class="${result > 0n ? 'pos' : result < 0n ? 'neg' : ''}">${result > 0n ? '+' : ''}${fmt(result, m.decimals)}</td><td>${due > 0n ? fmt(due, m.decimals, m.symbol) : '—'}</td></tr>`);
    }
    const bal = await balanceOf(m);
    const ids = box.id === 'positions';
    draw(box, `<p>Balance <span ${ids ? 'id="balance"' : ''}>${fmt(bal, m.decimals, m.symbol)}</span> · PnL <span ${ids ? 'id="pnl"' : ''} class="${pnl > 0n ? 'pos' : pnl < 0n ? 'neg' : ''}">${pnl > 0n ? '+' : ''}${fmt(pnl, m.decimals, m.symbol)}</span></p>
      <div class="scroll"><table ${ids ? 'id="history"' : 'class="history"'}><thead><tr><th>Round</th><th>Side</th><th>Stake</th><th>Status</th><th>PnL</th><th>Claimable</th></tr></thead><tbody>${rows.join('') || '<tr><td colspan="6">No bets in the recent rounds.</td></tr>'}</tbody></table></div>
      <button type="button" ${box.id === 'positions' ? 'id="claim"' : 'class="claim"'} ${claimable.length && !st.busy ? '' : 'disabled'}>Collect winnings${claimable.length ? ` (${claimable.length} round${claimable.length > 1 ? 's' : ''})` : ''}</button>`);
    box.querySelector('#claim, .claim').onclick = async () => {
      if (st.busy) return; // one transaction at a time
      clearMsg();
      view.querySelectorAll('button.up, button.down, #claim, .claim').forEach((b) => { b.disabled = true; });
      st.busy = true;
      try {
        await ensureChain(c);
        await verifyMarket(c, m);
        const data = encodeFunctionData({ abi: kronosMarketAbi, functionName: 'claim', args: [BigInt(m.id), claimable] });
        await send({ from: st.account, to: c.market, chainId: toHex(c.chain_id), data, value: '0x0' }, m);
        show(`Claimed rounds ${claimable.join(', ')}.`, true);
      } catch (e) { show(e?.message ?? String(e)); } finally {
        st.busy = false;
        route();
      }
    };
  } catch (e) {
    draw(box, `<p>Your bets could not be read: ${esc(walletError(e) ?? e?.message ?? e)}</p>`);
  }
}

// Every market's positions of the connected account; markets on another chain than the wallet's offer a switch.
async function renderAllPositions() {
  const rows = marketRows().filter((r) => r.c.kind === 'evm');
  draw(view, `<h1>My positions</h1>${st.account ? '' : '<p>Connect a wallet to see your bets, their PnL and what you can claim.</p>'}
    ${rows.map(({ c, m }) => `<section class="mine" data-chain="${esc(c.name)}" data-market="${m.id}"><h2><a href="#/market/${esc(c.name)}/${m.id}">${esc(m.pair)} on ${esc(c.display)}</a></h2><div class="box"></div></section>`).join('')}`);
  if (!st.account) return;
  for (const { c, m, l } of rows) {
    const rounds = await api(`/api/rounds?chain=${encodeURIComponent(c.name)}&market=${m.id}&limit=50`);
    const box = view.querySelector(`section.mine[data-chain="${CSS.escape(c.name)}"][data-market="${m.id}"] .box`);
    await renderPositions(c, m, rounds, l ? Number(l.betting_epoch) : clock(m, chainNow(c.name)).epoch, box);
  }
}

// Wilson score interval for k hits in n at 95%.
function wilson(k, n) {
  if (n === 0) return [0, 0];
  const z = 1.96, p = k / n, d = 1 + (z * z) / n;
  const c = (p + (z * z) / (2 * n)) / d, h = (z * Math.sqrt((p * (1 - p)) / n + (z * z) / (4 * n * n))) / d;
  return [Math.max(0, c - h), Math.min(1, c + h)];
}
const pct = (x) => `${(x * 100).toFixed(1)}%`;

async function renderForecaster() {
  const d = await api('/api/predictions?limit=200');
  const recs = d.track_records.map((r) => {
    const n = Number(r.hits) + Number(r.misses);
    const [lo, hi] = wilson(Number(r.hits), n);
    const brier = n ? Number(r.brier_sum) / 1e8 / n : null;
    return `<tr><td>${esc(r.chain)}</td><td>${esc(r.publisher)}</td><td>${num(r.committed)}</td><td>${n}</td><td>${n ? pct(r.hits / n) : '—'}</td><td>${n ? `${pct(lo)} – ${pct(hi)}` : '—'}</td><td>${brier === null ? '—' : brier.toFixed(4)}</td></tr>`;
  }).join('');
  // Reliability: revealed forecasts in 10 bins of P(up) against how often the price went up.
  const bins = Array.from({ length: 10 }, () => ({ n: 0, up: 0, p: 0 }));
  for (const p of d.predictions) {
    if (p.p_up_bps == null || (p.outcome !== 'up' && p.outcome !== 'down')) continue;
    const b = bins[Math.min(9, Math.floor(p.p_up_bps / 1000))];
    b.n++; b.p += p.p_up_bps / 10000; if (p.outcome === 'up') b.up++;
  }
  const pts = bins.filter((b) => b.n).map((b) => `<circle cx="${20 + (b.p / b.n) * 200}" cy="${220 - (b.up / b.n) * 200}" r="${3 + Math.min(b.n, 20) / 4}" fill="#7b8cff"><title>${b.n} forecasts</title></circle>`).join('');
  const preds = d.predictions.slice(0, 50).map((p) => `<tr><td>${esc(p.chain)}</td><td>${num(p.epoch)}</td><td>${p.committed ? 'yes' : 'no'}</td><td>${p.revealed ? 'yes' : p.p_up_bps != null ? 'not yet (published)' : 'sealed'}</td><td>${p.p_up_bps == null ? '—' : pct(p.p_up_bps / 10000)}</td><td>${esc(p.outcome ?? '—')}</td><td>${p.hit == null ? '—' : p.hit ? 'hit' : 'miss'}</td></tr>`).join('');
  draw(view, `<h1>Forecaster</h1>
    <p class="mute">Each forecast is committed on chain before betting closes and revealed after; the registry scores it against the round's outcome.</p>
    <div class="scroll"><table id="records"><thead><tr><th>Chain</th><th>Publisher</th><th>Committed</th><th>Scored</th><th>Hit rate</th><th>95% interval (Wilson)</th><th>Brier</th></tr></thead><tbody>${recs || '<tr><td colspan="7">No track record yet.</td></tr>'}</tbody></table></div>
    <h2>Reliability</h2>
    <svg id="reliability" viewBox="0 0 240 240" width="240" height="240" role="img" aria-label="Reliability diagram: forecast probability against observed frequency of up">
      <rect x="20" y="20" width="200" height="200" fill="none" stroke="#3a4270"/><line x1="20" y1="220" x2="220" y2="20" stroke="#3a4270" stroke-dasharray="4"/>
      <text x="20" y="235">0</text><text x="205" y="235">P(up) 1</text><text x="2" y="24">1</text>${pts}</svg>
    <h2>Commit and reveal per round</h2>
    <div class="scroll"><table id="predictions"><thead><tr><th>Chain</th><th>Round</th><th>Committed</th><th>Revealed</th><th>P(up)</th><th>Outcome</th><th>Score</th></tr></thead><tbody>${preds || '<tr><td colspan="7">No forecast yet.</td></tr>'}</tbody></table></div>`);
}

function renderHealth() {
  const h = st.health;
  const rows = Object.entries(h.chains).map(([name, c]) => `<tr data-chain="${esc(name)}"><td>${esc(chainOf(name)?.display ?? name)}</td><td>${c.healthy ? 'healthy' : 'unhealthy'}</td><td>${num(c.head_block)}</td><td>${esc(localTime(c.head_time))}</td><td>${num(c.lag_s)} s</td><td>${esc(c.last_error ?? '—')}</td></tr>`).join('');
  draw(view, `<h1>Keeper health: ${esc(h.status)}</h1><p>Store ${h.store ? 'answers' : 'does not answer'}.</p>
    <div class="scroll"><table id="health"><thead><tr><th>Chain</th><th>Status</th><th>Head block</th><th>Head time</th><th>Lag</th><th>Last error</th></tr></thead><tbody>${rows}</tbody></table></div>`);
}

// A selector that finds the focused control again after the view is re-rendered.
function focusKey(el) {
  if (!el || !view.contains(el) || el === view) return null;
  if (el.id) return `#${CSS.escape(el.id)}`;
  if (el.dataset.side) return `[data-card=next] button[data-side=${el.dataset.side}]`;
  const href = el.getAttribute('href');
  if (href) return `a[href="${CSS.escape(href)}"]`;
  return null;
}

// Replaces `box`'s content (the view or a part of it) and keeps the keyboard where it was: the control focused in it
// at this moment (not when the data was asked for: a redraw waits for the keeper and the wallet, and the user may have
// moved meanwhile) is found again in the new content and focused, a text field's caret kept.
function draw(box, html) {
  const a = document.activeElement;
  const key = a && box.contains(a) ? focusKey(a) : null;
  const caret = key && typeof a.selectionStart === 'number' ? [a.selectionStart, a.selectionEnd] : null;
  box.innerHTML = html;
  const b = key && box.querySelector(key);
  if (!b) return;
  b.focus({ preventScroll: true });
  if (caret && typeof b.setSelectionRange === 'function') b.setSelectionRange(...caret);
}

let routing = null;
async function route() {
  if (routing) { routing.again = true; return; }
  routing = { again: false };
  try {
    await load();
    const parts = (location.hash || '#/').slice(2).split('/');
    if (parts[0] === 'market') await renderMarket(decodeURIComponent(parts[1] ?? ''), parts[2]);
    else if (parts[0] === 'forecaster') await renderForecaster();
    else if (parts[0] === 'positions') await renderAllPositions();
    else if (parts[0] === 'health') renderHealth();
    else await renderMarkets();
    document.body.dataset.ready = '1';
  } catch (e) {
    show(`The keeper's API could not be read: ${e?.message ?? e}`);
  } finally {
    const again = routing.again;
    routing = null;
    if (again) route();
  }
}

// Countdowns tick from the chain's clock; the keeper's signals refresh the page.
setInterval(() => {
  for (const el of document.querySelectorAll('[data-closes]')) {
    const left = Number(el.dataset.closes) - chainNow(el.dataset.chain);
    el.textContent = left > 0 ? `${left} s` : 'closed';
    const card = el.closest('[data-card=next]');
    if (card) card.dataset.phase = left > 0 ? 'open' : 'cutoff';
  }
}, 250);

// Re-renders with fresh data unless a transaction is on its way or an amount is being typed (`mayRefresh`).
function refresh() {
  if (!mayRefresh(Date.now(), st.typedAt, st.busy)) return;
  route();
}
setInterval(refresh, 3000);

// The keeper's signals; after a reconnection the page is read again at once (the keeper may have restarted with
// other markets, fees or addresses: `/api/chains` is read on every redraw).
function watch(again = false) {
  const base = API || location.origin;
  const ws = new WebSocket(base.replace(/^http/, 'ws') + '/ws?types=round_started,round_locked,round_settled,round_cancelled,tx_confirmed,prediction_revealed,keeper_health');
  const soon = () => {
    clearTimeout(st.refreshTimer);
    st.refreshTimer = setTimeout(refresh, 300);
  };
  ws.onmessage = soon;
  if (again) ws.onopen = soon;
  ws.onclose = () => setTimeout(() => watch(true), 3000);
}

window.addEventListener('hashchange', () => { clearMsg(); route().then(() => view.focus()); });
renderWallet();
route();
watch();
