// The dApp in a real headless Chromium (Debian's /usr/bin/chromium, driven by the pinned playwright-core) against
// the real keeper on local anvil chains; started by keeper/tests/web.rs, which passes:
//   KRONOS_WEB_URL     the keeper's page (http://127.0.0.1:port/)
//   KRONOS_WEB_STANDALONE the same page served by `kronos web` in front of the keeper, the first chain's market pinned
//   KRONOS_WEB_PUBLISHED the same keeper's API and page on a second listener that publishes forecasts
//                      (`[api] publish_forecasts = true`): AI mode's Follow / Against
//   KRONOS_WEB_CHAINS  JSON [{ name, chain_id, rpc }] of the chains, the first native-coin one is bet on
//   KRONOS_WEB_ACCOUNTS JSON { a, b, owner }: two bettors and the market owner (anvil dev accounts, unlocked)
//   KRONOS_WEB_SOLANA  JSON { name, markets: [{ id, address, mint }] }: the local Solana cluster the keeper drives
//                      (a SOL market, then an SPL-token one), shown read-only
//   KRONOS_WEB_OUT     where screenshots go
// Every wait is on an event or a condition of the page (Playwright's waitFor*), never a fixed sleep.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';
import { encodeFunctionData, decodeFunctionData, decodeFunctionResult, formatUnits, parseUnits, toHex } from 'viem';
import { installWallet } from './wallet.mjs';
import { amt } from '../../web/src/format.js';

const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..', '..');
const marketAbi = JSON.parse(fs.readFileSync(path.join(root, 'contracts-evm/bindings/artifacts/KronosMarket.json'), 'utf8')).abi;
const erc20Abi = JSON.parse(fs.readFileSync(path.join(root, 'contracts-evm/bindings/artifacts/MockERC20.json'), 'utf8')).abi;
const URL_ = process.env.KRONOS_WEB_URL;
const CHAINS = JSON.parse(process.env.KRONOS_WEB_CHAINS);
const ACC = JSON.parse(process.env.KRONOS_WEB_ACCOUNTS);
const SOL = JSON.parse(process.env.KRONOS_WEB_SOLANA);
const OUT = process.env.KRONOS_WEB_OUT;
fs.mkdirSync(OUT, { recursive: true });
const LONG = 240_000;
const target = CHAINS[0];
const other = CHAINS[1];
const hex = (n) => toHex(BigInt(n)).toLowerCase();
const rpcBy = new Map(CHAINS.map((c) => [hex(c.chain_id), c.rpc]));
let elsewhere = false; // the wallet answers as a network without the market (see __kronosRpc)

function step(s) { console.log(`[web test] ${s}`); }
function check(cond, what) { if (!cond) throw new Error(`check failed: ${what}`); }

async function rpc(url, method, params) {
  const r = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ jsonrpc: '2.0', id: 1, method, params }) });
  return r.json();
}
async function send(chain, from, to, data) {
  const r = await rpc(chain.rpc, 'eth_sendTransaction', [{ from, to, data }]);
  if (r.error) throw new Error(`${r.error.message}`);
  for (;;) {
    const x = await rpc(chain.rpc, 'eth_getTransactionReceipt', [r.result]);
    if (x.result) { check(x.result.status === '0x1', `transaction ${r.result} succeeded`); return x.result; }
    await new Promise((ok) => setTimeout(ok, 200)); // polling a receipt, not a wait in the page
  }
}
async function read(chain, to, functionName, args, abi = marketAbi) {
  const data = encodeFunctionData({ abi, functionName, args });
  const r = await rpc(chain.rpc, 'eth_call', [{ to, data }, 'latest']);
  return decodeFunctionResult({ abi, functionName, data: r.result });
}

const userData = fs.mkdtempSync(path.join(os.tmpdir(), 'kronos-chromium-'));
const context = await chromium.launchPersistentContext(userData, {
  executablePath: '/usr/bin/chromium',
  headless: true,
  viewport: { width: 1280, height: 900 },
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync'],
});
const errors = [];
const hosts = new Set();
try {
  await context.exposeFunction('__kronosRpc', async (chainId, method, params) => {
    // Another network with the same chain id (a development chain shares its id with a real one): no market there, so
    // code reads empty and calls to the address return nothing, as a real node answers for an address without code.
    if (elsewhere && (method === 'eth_getCode' || method === 'eth_call')) return { jsonrpc: '2.0', id: 1, result: '0x' };
    const url = rpcBy.get(String(chainId).toLowerCase());
    if (!url) return { error: { code: 4901, message: `the test wallet has no RPC for chain ${chainId}` } };
    return rpc(url, method, params);
  });
  await context.addInitScript(installWallet, { account: ACC.a, chainId: hex(other.chain_id), known: [hex(other.chain_id)] });
  const page = context.pages()[0] ?? (await context.newPage());
  page.setDefaultTimeout(LONG);
  const watchErrors = (p) => {
    p.on('console', (m) => { if (m.type() === 'error') errors.push(`console: ${m.text()}`); });
    p.on('pageerror', (e) => errors.push(`page error: ${e.message}`));
  };
  watchErrors(page);
  page.on('request', (r) => { if (!r.url().startsWith('data:')) hosts.add(new URL(r.url()).host); });
  const cdp = await context.newCDPSession(page);
  await cdp.send('Network.enable');
  let transferred = 0;
  cdp.on('Network.loadingFinished', (e) => { transferred += e.encodedDataLength; });

  const msgOn = async (p, re) => {
    await p.waitForFunction((src) => new RegExp(src, 'i').test(document.getElementById('msg').textContent), re.source);
    return p.textContent('#msg');
  };
  const msg = (re) => msgOn(page, re);
  // The page has sent the transaction the wallet holds pending and asked the node about it twice (the wallet counts);
  // otherwise what the page said instead.
  const sentAndFollowed = (p) => p.waitForFunction(() => window.__kronosTestWallet.polls >= 2 || (!document.getElementById('msg').hidden && !document.getElementById('msg').classList.contains('ok')))
    .then(async () => {
      if (!(await p.evaluate(() => window.__kronosTestWallet.polls >= 2))) throw new Error(`check failed: the page did not send the bet: ${await p.textContent('#msg')}`);
    });
  const clearMsg = () => page.evaluate(() => { const m = document.getElementById('msg'); m.hidden = true; m.textContent = ''; });

  // ---- markets of every chain ----
  step('markets page');
  await page.goto(URL_, { waitUntil: 'load' });
  await page.waitForSelector('body[data-ready]');
  const firstLoad = transferred;
  step(`first load transferred ${firstLoad} bytes`);
  check(firstLoad < 300_000, `first load under 300 KB (${firstLoad})`);
  await page.waitForFunction((n) => {
    const rows = [...document.querySelectorAll('#markets tbody tr[data-chain]')];
    return rows.length === n && rows.every((r) => r.cells[2].textContent.trim() !== '—');
  }, CHAINS.length);
  // The Solana cluster's markets, read-only, and every chain live (the EVM chains and the cluster).
  await page.waitForFunction((n) => document.querySelectorAll('#solana-markets tbody tr[data-chain]').length === n, SOL.markets.length);
  check(/read-only: betting from Solana wallets comes later/i.test(await page.textContent('#solana')), 'the Solana note says the markets are read-only and betting comes later');
  const solRows = await page.$$eval('#solana-markets tbody tr[data-chain]', (rs) => rs.map((r) => [r.dataset.chain, Number(r.dataset.market), r.cells[2].textContent.trim()]));
  check(solRows.length === 2 && solRows[0][0] === SOL.name && solRows[0][2] === 'SOL' && solRows[1][2].startsWith(SOL.markets[1].mint.slice(0, 4)), `the SOL and the SPL market listed with their stake: ${JSON.stringify(solRows)}`);
  await page.waitForFunction((n) => { const l = document.getElementById('chains-live'); return Number(l?.dataset.total) === n && l.dataset.live === l.dataset.total; }, CHAINS.length + 1);
  step(`chains live: ${await page.textContent('#chains-live')}`);
  await page.screenshot({ path: path.join(OUT, 'markets.png'), fullPage: true });
  await page.setViewportSize({ width: 375, height: 800 });
  check(await page.evaluate(() => document.documentElement.scrollWidth <= 376), 'no horizontal scroll at 375 px');
  await page.screenshot({ path: path.join(OUT, 'markets-375.png'), fullPage: true });
  await page.setViewportSize({ width: 1280, height: 900 });

  // ---- keyboard: the wallet button and the pages are reachable with Tab ----
  const reached = [];
  for (let i = 0; i < 8; i++) {
    await page.keyboard.press('Tab');
    reached.push(await page.evaluate(() => document.activeElement?.id || document.activeElement?.textContent?.trim()));
  }
  check(reached.includes('connect') && reached.includes('Forecaster'), `Tab reaches the pages and the wallet (${reached})`);

  // ---- wallet: a refused connection, then a connection ----
  step('connect (refused, then accepted)');
  await page.evaluate(() => { window.__kronosTestWallet.reject.connect = true; });
  await page.click('#connect');
  await msg(/rejected the request/);
  await page.evaluate(() => { window.__kronosTestWallet.reject.connect = false; });
  await page.click('#connect');
  await page.waitForSelector('#account');

  // ---- one market ----
  step(`market page of ${target.name}`);
  await page.goto(`${URL_}#/market/${target.name}/1`);
  await page.waitForSelector('[data-card=next] button.up');
  for (const k of ['expired', 'live', 'next', 'later']) check(await page.$(`[data-card=${k}]`), `a ${k} card`);
  const bet = async (amount, side) => {
    await clearMsg();
    await page.fill('#amount', amount);
    await page.click(`[data-card=next] button.${side}`);
  };
  const openCard = async (minLeft, notEpoch = -1, p = page) => {
    const h = await p.waitForFunction(([minLeft, notEpoch]) => {
      const c = document.querySelector('[data-card=next]');
      const left = parseInt(c?.querySelector('.left')?.textContent ?? '', 10);
      return c && c.dataset.phase === 'open' && left >= minLeft && Number(c.dataset.epoch) > notEpoch && Number(c.dataset.epoch);
    }, [minLeft, notEpoch]);
    return h.jsonValue();
  };

  step('amounts that are not amounts');
  await bet('abc', 'up');
  await msg(/Enter an amount in ETH/);
  await bet('0.0000000000000000001', 'up');
  await msg(/ETH has 18 decimals/);

  step('wrong chain: the switch refused');
  await page.evaluate(() => { window.__kronosTestWallet.reject.switch = true; });
  await bet('0.01', 'up');
  await msg(/Wrong chain/);
  await page.evaluate(() => { window.__kronosTestWallet.reject.switch = false; });

  step('below the minimum bet (the chain is added to the wallet from the catalogue first)');
  await openCard(15);
  await bet('0.0001', 'up');
  await msg(/Below the minimum bet/);
  const added = await page.evaluate(() => window.__kronosTestWallet.added);
  check(added.length === 1 && added[0].chainId === hex(target.chain_id) && added[0].rpcUrls.length > 0, `the wallet was asked to add ${target.name}: ${JSON.stringify(added)}`);

  step('insufficient funds');
  await bet('100000000', 'up');
  await msg(/Insufficient funds/);

  step('paused market');
  const market = (await (await fetch(`${URL_}api/chains`)).json()).chains.find((c) => c.name === target.name).market;
  const params = await read(target, market, 'paramsFor', [1n, 0n]);
  const feeText = `after ${params.feeBps / 100}% fee`;
  check((await page.textContent('[data-card=next]')).includes(feeText), `the payout multipliers say "${feeText}"`);
  const minText = (await page.textContent('#minbet')).trim();
  check(minText === `minimum ${formatUnits(params.minBet, 18)} ETH`, `the minimum bet beside the amount: ${minText} (contract: ${params.minBet})`);
  await send(target, ACC.owner, market, encodeFunctionData({ abi: marketAbi, functionName: 'setMarketPaused', args: [1n, true] }));
  await bet('0.01', 'up');
  await msg(/market is paused/);
  await send(target, ACC.owner, market, encodeFunctionData({ abi: marketAbi, functionName: 'setMarketPaused', args: [1n, false] }));

  step('a wallet on another network with the same chain id: nothing is sent');
  const sentElsewhere = await page.evaluate(() => window.__kronosTestWallet.sent.length);
  elsewhere = true;
  await bet('0.01', 'up');
  await msg(/is not on the network your wallet is connected to/);
  elsewhere = false;
  check((await page.evaluate(() => window.__kronosTestWallet.sent.length)) === sentElsewhere, 'no transaction sent to a network without the market');

  step('rejected transaction');
  await openCard(15);
  await page.evaluate(() => { window.__kronosTestWallet.reject.send = true; });
  await bet('0.01', 'up');
  await msg(/rejected the transaction|rejected the request/);
  await page.evaluate(() => { window.__kronosTestWallet.reject.send = false; });

  step('betting closed (a bet in the last seconds before the lock)');
  await page.waitForSelector('[data-card=next][data-phase=cutoff]');
  await page.click('[data-card=next] button.up');
  await msg(/Betting is closed/);

  step('the keyboard focus survives the page refreshing to the next round');
  const closedEpoch = await page.getAttribute('[data-card=next]', 'data-epoch');
  await page.focus('[data-card=next] button.up');
  await page.waitForFunction((ep) => document.querySelector('[data-card=next]')?.dataset.epoch !== ep, closedEpoch);
  // The focused control is found again in the new page when it is drawn (the positions are read from the wallet after).
  await page.waitForFunction(() => document.activeElement?.dataset.side === 'up', null, { timeout: 20_000 })
    .catch(() => { throw new Error('check failed: Enter UP keeps the focus after a refresh'); });

  // ---- the main flow: A bets UP and B bets DOWN on one round; A alone on the next (refunded) ----
  step('bet UP (A) and DOWN (B) on one round');
  const e = await openCard(40);
  // While the wallet holds the transaction unconfirmed the page is redrawn (a hash change redraws it whatever it is
  // doing): Enter UP must be drawn disabled, and a second click must not send a second transaction.
  const sentBefore = await page.evaluate(() => { const w = window.__kronosTestWallet; w.hold = new Promise((ok) => { w.release = ok; }); return w.sent.length; });
  await bet('0.01', 'up');
  await page.waitForFunction(() => window.__kronosTestWallet.held === 1);
  await page.evaluate(() => { document.querySelector('[data-card=next]').dataset.old = '1'; location.hash += '/'; });
  await page.waitForFunction(() => { const c = document.querySelector('[data-card=next]'); return c && !c.dataset.old; });
  check(await page.$eval('[data-card=next] button.up', (b) => b.disabled), 'Enter UP is drawn disabled while a bet is on its way');
  await page.evaluate(() => { document.querySelector('[data-card=next] button.up').click(); const w = window.__kronosTestWallet; w.hold = null; w.release(); });
  const placed = await msg(/Bet placed|Betting is closed/);
  check(placed.includes(`round ${e}`) && placed.includes('Bet placed'), `A's bet on round ${e}: ${placed}`);
  const sentFor = await page.evaluate((n) => window.__kronosTestWallet.sent.slice(n), sentBefore);
  check(sentFor.length === 1, `one transaction for a bet clicked twice (${sentFor.length})`);
  check(sentFor[0].chainId === hex(target.chain_id), `the transaction names its chain (${sentFor[0].chainId})`);
  await page.waitForSelector('[data-card=next] button.up:not([disabled])');
  await page.evaluate((b) => window.__kronosTestWallet.setAccount(b), ACC.b);
  await page.waitForFunction((b) => document.getElementById('account')?.textContent.startsWith(b.slice(0, 6)), ACC.b);
  await page.waitForSelector(`[data-card=next][data-epoch="${e}"]`);
  await bet('0.02', 'down');
  const placedB = await msg(/Bet placed|Betting is closed/);
  check(placedB.includes(`round ${e}`) && placedB.includes('Bet placed: 0.02'), `B's bet of 0.02 on round ${e}: ${placedB}`);
  // 0.01 UP and 0.02 DOWN: UP pays 0.03·(1 − fee)/0.01, DOWN 0.03·(1 − fee)/0.02, computed here with bigints.
  const pays = (side) => { const x = (3n * BigInt(10000 - params.feeBps) * 100n) / (side * 10000n); return `${x / 100n}.${String(x % 100n).padStart(2, '0')}×`; };
  const wantPays = `UP ${pays(1n)} · DOWN ${pays(2n)} ${feeText}`;
  await page.waitForFunction(([e, t]) => [...document.querySelectorAll(`[data-card][data-epoch="${e}"]`)].some((c) => c.textContent.includes(t)), [e, wantPays])
    .catch(() => { throw new Error(`check failed: round ${e}'s card shows "${wantPays}"`); });
  await page.evaluate((a) => window.__kronosTestWallet.setAccount(a), ACC.a);
  step('bet UP (A) alone on the next round: one-sided, so refunded');
  const e2 = await openCard(20, e);
  await bet('0.01', 'up');
  const placed2 = await msg(/Bet placed|Betting is closed/);
  check(placed2.includes(`round ${e2}`) && placed2.includes('Bet placed'), `A's bet on round ${e2}: ${placed2}`);
  await page.screenshot({ path: path.join(OUT, 'market.png'), fullPage: true });

  step(`wait for round ${e} to lock and settle and round ${e2} to be refunded`);
  await page.waitForSelector(`[data-card=live][data-epoch="${e}"]`);
  await page.waitForFunction(([e, e2]) => {
    const s = (x) => document.querySelector(`#history tr[data-epoch="${x}"] .status`)?.textContent ?? '';
    return /Won|Lost|Tie/.test(s(e)) && /Refund/.test(s(e2));
  }, [e, e2]).catch(async (err) => {
    // Say what the page and the chain show instead (a round cancelled by a late keeper reads as Refund).
    const shown = await page.evaluate(([e, e2]) => [e, e2].map((x) => document.querySelector(`#history tr[data-epoch="${x}"] .status`)?.textContent), [e, e2]).catch(() => []);
    const onChain = await Promise.all([e, e2].map((x) => read(target, market, 'getRound', [1n, BigInt(x)]).then((r) => `state ${r.state} outcome ${r.outcome} reason ${r.reason}`)));
    throw new Error(`check failed: rounds ${e}/${e2} settled and refunded; the page shows ${JSON.stringify(shown)}, the chain ${onChain.join(' / ')} (${err.message})`);
  });
  const res = await read(target, market, 'getRound', [1n, BigInt(e)]);
  check(res.outcome === 1 || res.outcome === 2 || res.outcome === 3, `round ${e} settled up, down or tie (outcome ${res.outcome})`);
  // The replayed prices decide the outcome: a tie (both bettors get their share of the pool back less the fee)
  // is a legitimate result, checked as such rather than failing the run.
  const tie = res.outcome === 3;
  const aWon = res.outcome === 1;
  const statusA = await page.textContent(`#history tr[data-epoch="${e}"] .status`);
  const want = tie ? 'Tie' : aWon ? 'Won' : 'Lost';
  check(statusA.startsWith(want), `A's round ${e} shows ${want}: ${statusA}`);
  check(await page.$(`#proofs tr[data-epoch="${e}"]`), `the settlement proof of round ${e}`);
  check(/Chainlink round \d+ \(phase \d+, aggregator round \d+\)/.test(await page.textContent(`#proofs tr[data-epoch="${e}"]`)), 'the proof names Chainlink round ids');
  await page.screenshot({ path: path.join(OUT, 'settled.png'), fullPage: true });

  // The winner collects every claimable round in one claim; the loser's history shows the loss.
  const claimFor = async (acc, rounds) => {
    if (acc !== ACC.a) {
      await page.evaluate((x) => window.__kronosTestWallet.setAccount(x), acc);
      await page.waitForFunction((x) => document.getElementById('account')?.textContent.startsWith(x.slice(0, 6)), acc);
    }
    await page.waitForFunction((n) => document.getElementById('claim')?.textContent.includes(`(${n} round`), rounds.length);
    const beforeText = (await page.textContent('#balance')).split(' ')[0];
    const before = parseUnits(beforeText, 18);
    await clearMsg();
    await page.click('#claim');
    await msg(/Claimed rounds/);
    await page.waitForFunction((b) => {
      const t = document.getElementById('balance')?.textContent.split(' ')[0];
      return t && t !== b;
    }, beforeText);
    const after = parseUnits((await page.textContent('#balance')).split(' ')[0], 18);
    check(after > before, `the balance grew with the claim (${before} → ${after})`);
    for (const r of rounds) {
      const b = await read(target, market, 'getBet', [1n, BigInt(r), acc]);
      check(b.claimed, `round ${r} claimed on chain for ${acc}`);
      await page.waitForFunction((r) => /claimed/.test(document.querySelector(`#history tr[data-epoch="${r}"] .status`)?.textContent ?? ''), r);
    }
  };
  step('claim all');
  const refundClaimed = async () => {
    const t = (await page.textContent(`#history tr[data-epoch="${e2}"] .status`)).trim();
    check(t === 'Refund · claimed', `A's refunded round ${e2} shows "Refund · claimed": ${t}`);
  };
  if (tie) {
    await claimFor(ACC.a, [e, e2]);
    await refundClaimed();
    await claimFor(ACC.b, [e]);
  } else if (aWon) {
    await claimFor(ACC.a, [e, e2]);
    await refundClaimed();
    check((await page.textContent('#pnl')).startsWith('+'), 'A shows a profit');
    await page.evaluate((b) => window.__kronosTestWallet.setAccount(b), ACC.b);
    await page.waitForFunction(([e]) => /Lost/.test(document.querySelector(`#history tr[data-epoch="${e}"] .status`)?.textContent ?? ''), [e]);
    check((await page.textContent('#pnl')).startsWith('-0.02'), `B's losing bet shows -0.02: ${await page.textContent('#pnl')}`);
  } else {
    check((await page.textContent(`#history tr[data-epoch="${e}"] td:nth-child(5)`)).startsWith('-0.01'), 'A lost 0.01');
    await claimFor(ACC.a, [e2]);
    await refundClaimed();
    await claimFor(ACC.b, [e]);
  }
  await page.screenshot({ path: path.join(OUT, 'claimed.png'), fullPage: true });

  step('my positions across markets');
  await page.goto(`${URL_}#/positions`);
  await page.waitForSelector(`section.mine[data-chain="${target.name}"] tr[data-epoch="${e}"]`);
  await page.waitForFunction((name) => /Your wallet is on chain/.test(document.querySelector(`section.mine[data-chain="${name}"]`)?.textContent ?? ''), other.name);
  await page.screenshot({ path: path.join(OUT, 'positions.png'), fullPage: true });

  // ---- each market keeps its own amount ----
  const api = (await (await fetch(`${URL_}api/chains`)).json()).chains;
  const tm = api.find((c) => c.name === target.name).markets.find((m) => m.id === 1);
  const oc = api.find((c) => c.name === other.name), om = oc.markets.find((m) => m.id === 1);
  const onMarket = (c, m) => page.waitForFunction(([d, sym]) => document.querySelector('h1')?.textContent.endsWith(`on ${d}`)
    && document.querySelector('label[for=amount]')?.textContent.includes(`(${sym})`), [c.display, m.symbol]);
  step('the amount typed is kept per market');
  await page.evaluate((a) => window.__kronosTestWallet.setAccount(a), ACC.a);
  await page.goto(`${URL_}#/market/${target.name}/1`);
  await onMarket(api.find((c) => c.name === target.name), tm);
  await page.fill('#amount', '0.03');
  await page.goto(`${URL_}#/market/${other.name}/1`);
  await onMarket(oc, om);
  check((await page.inputValue('#amount')) === '0.01', `${other.name}'s amount is its own (${await page.inputValue('#amount')})`);
  await page.goto(`${URL_}#/market/${target.name}/1`);
  await onMarket(api.find((c) => c.name === target.name), tm);
  check((await page.inputValue('#amount')) === '0.03', `${target.name}'s amount is kept (${await page.inputValue('#amount')})`);
  await page.setViewportSize({ width: 375, height: 800 });
  await page.waitForSelector('#ai');
  const wide = await page.evaluate(() => document.documentElement.scrollWidth <= 376 ? [] : [...document.querySelectorAll('body *')]
    .filter((el) => el.getBoundingClientRect().right > 376 && !el.closest('.scroll')).map((el) => `${el.tagName.toLowerCase()}${el.id ? '#' + el.id : ''}.${el.className}`).slice(0, 8));
  await page.screenshot({ path: path.join(OUT, 'market-375.png'), fullPage: true });
  check(wide.length === 0, `no horizontal scroll on the market page at 375 px (wider: ${wide.join(', ')})`);
  await page.setViewportSize({ width: 1280, height: 900 });

  // ---- AI mode: the forecast of the round taking bets is a commitment only ----
  step('AI mode: committed, direction hidden until reveal; Follow / Against disabled; the record of revealed rounds');
  await page.waitForFunction(() => {
    const ai = document.getElementById('ai');
    return ai?.dataset.state === 'sealed' && Number(document.querySelector('[data-card=next]')?.dataset.epoch) > 0
      && document.getElementById('ai-said').textContent.includes(`#${document.querySelector('[data-card=next]').dataset.epoch}: committed, direction hidden until reveal`);
  });
  check(await page.$eval('#ai', (ai) => [...ai.querySelectorAll('button.follow')].every((b) => b.disabled) && ai.querySelectorAll('button.follow').length === 2), 'Follow and Against are disabled while the direction is hidden');
  await page.waitForFunction(() => {
    const row = document.querySelector('#ai-record tbody tr[data-epoch]');
    const t = row ? [...row.cells].map((c) => c.textContent.trim()) : [];
    return /^\d+\.\d\d%$/.test(t[1] ?? '') && /^(UP|DOWN|—)$/.test(t[2]) && /^(hit|miss|void)$/.test(t[4]);
  });
  const preds = (await (await fetch(`${URL_}api/predictions?chain=${target.name}&limit=60`)).json()).predictions;
  const shownEpoch = Number(await page.getAttribute('#ai-record tbody tr[data-epoch]', 'data-epoch'));
  const revealed = preds.find((p) => p.market === 1 && p.epoch === shownEpoch);
  check(revealed?.revealed && (await page.textContent('#ai-record tbody tr[data-epoch]')).includes(`${(revealed.p_up_bps / 100).toFixed(2)}%`), `the record shows round ${shownEpoch}'s revealed P(up)`);

  // ---- a chain change in the wallet while a bet waits for the user's confirmation ----
  step('a chain change while the wallet holds the bet: nothing sent, a message, the buttons back');
  await openCard(15);
  const sentHeld = await page.evaluate(() => { const w = window.__kronosTestWallet; w.hold = new Promise((ok) => { w.release = ok; }); return w.sent.length; });
  await bet('0.01', 'up');
  await page.waitForFunction(() => window.__kronosTestWallet.held === 1);
  await page.evaluate((id) => { const w = window.__kronosTestWallet; w.setChain(id); w.hold = null; w.release(); }, hex(other.chain_id));
  await msg(/changed chain while the transaction waited for your confirmation: it was not sent/);
  check((await page.evaluate(() => window.__kronosTestWallet.sent.length)) === sentHeld, 'nothing sent after the chain change');
  await page.waitForSelector('[data-card=next] button.up:not([disabled])');

  // ---- a transaction sped up in the wallet: the page follows the replacement ----
  step('a transaction replaced in the wallet (speed-up): the page follows the replacement to its receipt');
  const e3 = await openCard(20);
  await page.evaluate(() => { const w = window.__kronosTestWallet; w.mode = 'speedUp'; w.polls = 0; });
  await bet('0.01', 'down');
  await sentAndFollowed(page);
  const replacement = await page.evaluate(() => window.__kronosTestWallet.speedUp());
  const followed = await msg(/Bet placed|did not go through|not sent|no longer known|No receipt/);
  await page.evaluate(() => { window.__kronosTestWallet.mode = null; });
  check(followed.includes(`Bet placed: 0.01 ETH DOWN on round ${e3}`) && followed.includes(`followed ${replacement}`), `the replacement followed: ${followed}`);
  const b3 = await read(target, market, 'getBet', [1n, BigInt(e3), ACC.a]);
  check(b3.amount === parseUnits('0.01', 18) && b3.position === 2, `A's DOWN bet on round ${e3} is on chain (${b3.amount})`);

  // ---- a receipt that never comes (a second page, on a clock the test moves) ----
  step('a receipt that never comes: a timeout message, and no second transaction while it is pending');
  const page2 = await context.newPage();
  page2.setDefaultTimeout(LONG);
  watchErrors(page2);
  await page2.clock.install();
  await page2.goto(`${URL_}#/market/${target.name}/1`);
  await page2.waitForSelector('[data-card=next] button.up');
  await page2.evaluate(() => { window.__kronosTestWallet.mode = 'noReceipt'; });
  await openCard(15, e3, page2); // a round A has no bet on yet
  await page2.fill('#amount', '0.01');
  await page2.click('[data-card=next] button.up');
  await sentAndFollowed(page2);
  await page2.clock.fastForward('05:01');
  await msgOn(page2, /No receipt for transaction 0x[0-9a-f]{64} after 5 minutes/);
  await page2.waitForSelector('[data-card=next] button.up:not([disabled])');
  await page2.click('[data-card=next] button.up');
  await msgOn(page2, /is still pending: nothing else is sent/);
  check((await page2.evaluate(() => window.__kronosTestWallet.sent.length)) === 1, 'one transaction sent for the timed-out bet and the click after it');
  await page2.close();

  // ---- an ERC-20 market: the allowance read, this bet's amount approved, then the bet ----
  step(`ERC-20 market on ${other.name}: a rejected approval, then approve exactly the bet and bet`);
  check(om.token !== '0x0000000000000000000000000000000000000000', `${other.name}'s market stakes an ERC-20`);
  const stake = parseUnits('5', om.decimals);
  await send(other, ACC.a, om.token, encodeFunctionData({ abi: erc20Abi, functionName: 'mint', args: [ACC.a, stake * 10n] }));
  if ((await read(other, om.token, 'allowance', [ACC.a, oc.market], erc20Abi)) !== 0n) {
    await send(other, ACC.a, om.token, encodeFunctionData({ abi: erc20Abi, functionName: 'approve', args: [oc.market, 0n] }));
  }
  await page.goto(`${URL_}#/market/${other.name}/1`);
  await onMarket(oc, om);
  await openCard(15);
  await page.evaluate(() => { window.__kronosTestWallet.reject.send = true; });
  await bet('5', 'up');
  await msg(new RegExp(`You rejected the approval of 5 ${om.symbol} for the market: nothing was bet`));
  await page.evaluate(() => { window.__kronosTestWallet.reject.send = false; });
  check((await read(other, om.token, 'allowance', [ACC.a, oc.market], erc20Abi)) === 0n, 'nothing approved after the rejection');
  const e4 = await openCard(15);
  const sentErc = await page.evaluate(() => window.__kronosTestWallet.sent.length);
  await bet('5', 'up');
  const placedErc = await msg(/Bet placed|Betting is closed|did not go through/);
  check(placedErc.includes(`Bet placed: 5 ${om.symbol} UP on round ${e4}`), `the ERC-20 bet: ${placedErc}`);
  const txs = await page.evaluate((n) => window.__kronosTestWallet.sent.slice(n), sentErc);
  check(txs.length === 2 && txs[0].to.toLowerCase() === om.token.toLowerCase() && txs[1].to.toLowerCase() === oc.market.toLowerCase(), `an approval, then the bet (${txs.map((t) => t.to)})`);
  const approval = decodeFunctionData({ abi: erc20Abi, data: txs[0].data });
  check(approval.functionName === 'approve' && approval.args[0].toLowerCase() === oc.market.toLowerCase() && approval.args[1] === stake, `approve(market, exactly the bet): ${approval.functionName}(${approval.args})`);
  check((await read(other, om.token, 'allowance', [ACC.a, oc.market], erc20Abi)) === 0n, 'the bet spent exactly the approval');
  check((await read(other, oc.market, 'getBet', [1n, BigInt(e4), ACC.a])).amount === stake, `A's ${om.symbol} bet on round ${e4} is on chain`);
  await page.waitForFunction(([e, t]) => document.querySelector(`#history tr[data-epoch="${e}"]`)?.textContent.includes(t), [e4, `5 ${om.symbol}`]);
  await page.screenshot({ path: path.join(OUT, 'erc20.png'), fullPage: true });

  // ---- a fee scheduled later: the rounds it applies to show it, earlier rounds keep theirs ----
  step('a fee scheduled while the page is open shows for its rounds only');
  await page.goto(`${URL_}#/market/${target.name}/1`);
  await onMarket(api.find((c) => c.name === target.name), tm);
  const newFee = params.feeBps + 200;
  await send(target, ACC.owner, market, encodeFunctionData({ abi: marketAbi, functionName: 'scheduleParams', args: [1n, params.minBet, newFee, params.settlerRewardBps] }));
  const from = Number((await read(target, market, 'paramsFor', [1n, 2n ** 64n - 1n])).fromEpoch);
  const newText = `after ${newFee / 100}% fee`;
  await page.waitForFunction(([from, t, old]) => {
    const next = document.querySelector(`[data-card=next][data-epoch="${from}"]`);
    const live = document.querySelector(`[data-card=live][data-epoch="${from - 1}"]`);
    return next?.textContent.includes(t) && live?.textContent.includes(old) && !live.textContent.includes(t);
  }, [from, newText, feeText]).catch(async (err) => {
    const cards = await page.$$eval('[data-card]', (cs) => cs.map((c) => `${c.dataset.card} #${c.dataset.epoch}: ${c.querySelector('p')?.textContent}`));
    throw new Error(`check failed: round ${from} shows "${newText}" and round ${from - 1} "${feeText}": ${cards.join(' | ')} (${err.message})`);
  });

  // ---- `kronos web`: the market addresses checked against its pins, or said unverified ----
  step('kronos web: the pinned chain checked, the other one said unverified');
  const SA = process.env.KRONOS_WEB_STANDALONE;
  await page.goto(`${SA}#/market/${target.name}/1`);
  await page.waitForSelector('#addresses[data-check=pinned]');
  await page.goto(`${SA}#/market/${other.name}/1`);
  await page.waitForSelector('#addresses[data-check=unverified]');
  check((await page.textContent('#addresses')).includes(oc.market), `the banner names the address to compare: ${await page.textContent('#addresses')}`);
  await page.goto(URL_);
  await page.waitForSelector('#markets');

  // ---- a keeper publishing its forecasts: AI mode's Follow / Against ----
  step('AI mode where forecasts are published: the AI\'s call shown, Follow bets it (Against the other side), the reveal checked against it');
  const PUB = process.env.KRONOS_WEB_PUBLISHED;
  await page.goto(`${PUB}#/market/${target.name}/1`);
  const ef = Number(await (await page.waitForFunction((notEpoch) => {
    const c = document.querySelector('[data-card=next]'), ai = document.getElementById('ai');
    const left = parseInt(c?.querySelector('.left')?.textContent ?? '', 10);
    return c?.dataset.phase === 'open' && left >= 8 && Number(c.dataset.epoch) > notEpoch && ai?.dataset.public === 'true'
      && ai.dataset.state === 'published' && ai.querySelector('button.follow[data-choice=follow][data-follow-side]') && Number(c.dataset.epoch);
  }, e3 + 1)).jsonValue());
  const [followSide, againstSide] = await page.$$eval('#ai button.follow', (bs) => bs.map((b) => b.dataset.followSide));
  const pubPred = (await (await fetch(`${PUB}api/predictions?chain=${target.name}&limit=60`)).json()).predictions.find((p) => p.market === 1 && p.epoch === ef);
  const sealedPred = (await (await fetch(`${URL_}api/predictions?chain=${target.name}&limit=60`)).json()).predictions.find((p) => p.market === 1 && p.epoch === ef);
  check(pubPred && !pubPred.revealed && pubPred.p_up_bps != null && sealedPred?.p_up_bps == null, `round ${ef}'s committed P(up) is published on one listener (${pubPred?.p_up_bps}) and sealed on the other (${sealedPred?.p_up_bps})`);
  const aiSide = pubPred.p_up_bps > 5000 ? 'up' : 'down';
  check(followSide === aiSide && againstSide === (aiSide === 'up' ? 'down' : 'up'), `Follow bets ${followSide}, Against ${againstSide}; the AI says ${aiSide}`);
  check((await page.textContent('#ai-said')).includes(`${(pubPred.p_up_bps / 100).toFixed(2)}%`), `the page shows the AI's P(up): ${await page.textContent('#ai-said')}`);
  // A keeper that names, for the next round (ef + 1, shown here while it takes bets), round ef's reveal transaction
  // beside the value it showed: by its word the reveal matches; the registry's receipt has no reveal of round ef + 1
  // in it, and the page, which reads the registry through the wallet, says the reveal differs.
  const lying = '**/api/predictions**';
  await page.route(lying, async (route) => {
    const r = await route.fetch();
    const body = await r.json();
    const mine = (e) => (body.predictions ?? []).find((x) => x.chain === target.name && Number(x.market) === 1 && Number(x.epoch) === e);
    const [real, next] = [mine(ef), mine(ef + 1)];
    if (next?.revealed) next.reveal_tx = real?.reveal_tx ?? null;
    await route.fulfill({ response: r, json: body });
  });
  await clearMsg();
  await page.fill('#amount', '0.02');
  await page.click('#ai button.follow[data-choice=follow]');
  const placedAi = await msg(/Bet placed|did not go through|Betting is closed|not sent/);
  check(placedAi.includes(`Bet placed: 0.02 ETH ${aiSide.toUpperCase()} on round ${ef}`), `Follow placed the AI's side: ${placedAi}`);
  const bf = await read(target, market, 'getBet', [1n, BigInt(ef), ACC.a]);
  check(bf.amount === parseUnits('0.02', 18) && bf.position === (aiSide === 'up' ? 1 : 2), `A's Follow bet on round ${ef} is on chain (${bf.amount}, position ${bf.position})`);
  // After the round is final the forecast is revealed on chain: the page says it matches what it showed.
  await page.waitForSelector(`#ai-record tr[data-epoch="${ef}"][data-check=match]`);
  await page.screenshot({ path: path.join(OUT, 'ai-published.png'), fullPage: true });
  step('AI mode: a keeper naming another round\'s reveal transaction is caught: the registry holds no such reveal');
  await page.waitForSelector(`#ai-record tr[data-epoch="${ef + 1}"][data-check=mismatch]`);
  const next = (await (await fetch(`${PUB}api/predictions?chain=${target.name}&limit=60`)).json()).predictions.find((p) => p.market === 1 && p.epoch === ef + 1);
  check(next?.revealed && (await page.textContent(`#ai-record tr[data-epoch="${ef + 1}"]`)).includes(`${(next.p_up_bps / 100).toFixed(2)}%`), `round ${ef + 1}: the keeper's revealed value is the one shown, yet the registry's check says it differs`);
  await page.screenshot({ path: path.join(OUT, 'ai-registry-mismatch.png'), fullPage: true });
  await page.unroute(lying);

  // ---- the Solana cluster, read-only ----
  step('Solana: a SOL market read-only — round cards with lock and close prices, settled or refunded, pools; no bet button');
  const solMarket = SOL.markets[0], splMarket = SOL.markets[1];
  await page.goto(`${URL_}#/market/${SOL.name}/${solMarket.id}`);
  await page.waitForSelector('#solana-readonly');
  await page.waitForFunction(() => document.querySelector('[data-card=expired]')?.dataset.state && document.querySelector('#sol-rounds tbody tr[data-state=settled]')
    && document.querySelector('[data-card=live]')?.dataset.state === 'locked');
  check(/Betting from Solana wallets may come later/.test(await page.textContent('#solana-readonly')), 'the page says betting from Solana wallets may come later');
  check((await page.$$('button.up, button.down, button.follow, #amount, #claim')).length === 0, 'no bet, follow or claim control on a Solana market');
  const solRounds = await (await fetch(`${URL_}api/rounds?chain=${SOL.name}&market=${solMarket.id}&limit=50`)).json();
  const settled = solRounds.find((r) => r.state === 'settled');
  const row = await page.$$eval(`#sol-rounds tbody tr[data-epoch="${settled.epoch}"] td`, (tds) => tds.map((t) => t.textContent.trim()));
  check(row[1] === `settled ${settled.outcome}` && row[2] === settled.lock_price && row[3] === settled.close_price, `round ${settled.epoch}: ${JSON.stringify(row)} (keeper: ${settled.lock_price} → ${settled.close_price}, ${settled.outcome})`);
  check(row[4] === `${amt(settled.up_wei, 9, '', 6)} / ${amt(settled.down_wei, 9, '', 6)} SOL`, `round ${settled.epoch}'s pools in SOL (keeper: ${settled.up_wei} / ${settled.down_wei} lamports): ${row[4]}`);
  const live = await page.$eval('[data-card=live]', (c) => c.textContent);
  check(/Locked at \d/.test(live) && /Pool /.test(live), `the live card shows its lock price and pools: ${live}`);
  await page.screenshot({ path: path.join(OUT, 'solana-market.png'), fullPage: true });
  step('Solana: the SPL-token market with its mint and decimals');
  await page.goto(`${URL_}#/market/${SOL.name}/${splMarket.id}`);
  await page.waitForSelector('#solana-readonly');
  check((await page.textContent('#mint')) === splMarket.mint, `the SPL market names its mint (${await page.textContent('#mint')})`);
  check((await page.textContent('main')).includes('(6 decimals)'), 'the SPL market shows its stake decimals');
  await page.goto(`${URL_}#/`);
  await page.waitForSelector('#solana-markets');
  await page.screenshot({ path: path.join(OUT, 'markets-solana.png'), fullPage: true });

  // ---- the forecaster and the keeper's health ----
  step('forecaster');
  await page.goto(`${URL_}#/forecaster`);
  await page.waitForSelector('#records');
  await page.waitForFunction(() => [...document.querySelectorAll('#predictions tbody tr')].some((r) => r.cells[2]?.textContent === 'yes'));
  check(await page.$('#reliability'), 'a reliability diagram');
  await page.screenshot({ path: path.join(OUT, 'forecaster.png'), fullPage: true });
  step('keeper health');
  await page.goto(`${URL_}#/health`);
  await page.waitForFunction((n) => document.querySelectorAll('#health tbody tr').length === n, CHAINS.length + 1);
  await page.screenshot({ path: path.join(OUT, 'health.png'), fullPage: true });

  const keeperHost = new URL(URL_).host, webHost = new URL(process.env.KRONOS_WEB_STANDALONE).host, pubHost = new URL(process.env.KRONOS_WEB_PUBLISHED).host;
  check([...hosts].every((h) => h === keeperHost || h === webHost || h === pubHost), `requests only to the keeper, its publishing listener and kronos web (${[...hosts].join(', ')})`);
  check(errors.length === 0, `no console errors: ${errors.join(' | ')}`);
  step(`passed; screenshots in ${OUT}`);
} finally {
  await context.close();
  fs.rmSync(userData, { recursive: true, force: true });
}
