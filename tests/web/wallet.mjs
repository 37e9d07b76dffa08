// A test-only EIP-1193 wallet, injected into the page before its scripts run and announced over EIP-6963. It signs
// nothing itself: every request it does not answer is forwarded (by `window.__kronosRpc`, a Playwright binding
// that runs in node, as a wallet extension's RPC runs outside the page) to the anvil node of the wallet's current
// chain, whose dev accounts are unlocked. The test steers it through `window.__kronosTestWallet`: the account, the
// chains it knows, requests to refuse as a user would (code 4001), the user switching chains (`setChain`), and what
// the network does with a sent transaction (`mode`): null, it is sent; 'noReceipt', it is held pending for good (a
// made-up hash the node "knows" without ever mining it); 'speedUp', likewise until `speedUp()` replaces it with
// the same call at the same nonce, which is sent — as a wallet's speed-up does.
export function installWallet(cfg) {
  const w = (window.__kronosTestWallet = {
    account: cfg.account,
    chainId: cfg.chainId,
    known: [...cfg.known],
    added: [],
    reject: { connect: false, switch: false, send: false },
    // sent: every eth_sendTransaction forwarded to the chain; hold: a promise each send waits on first (the user
    // not yet confirming in the wallet), with held = how many sends wait on it now.
    sent: [],
    hold: null,
    held: 0,
    listeners: {},
    mode: null,
    fake: {}, // made-up hash -> the pending transaction the node shows for it (gone: true once replaced)
    polls: 0, // the page's requests about a made-up hash
    replacement: null,
  });
  const fail = (code, message) => Object.assign(new Error(message), { code });
  const emit = (ev, v) => (w.listeners[ev] || []).forEach((f) => f(v));
  w.setAccount = (a) => { w.account = a; emit('accountsChanged', [a]); };
  // The user switching the wallet to another chain it knows.
  w.setChain = (id) => { w.chainId = id.toLowerCase(); emit('chainChanged', w.chainId); };
  const rpc = async (method, params) => {
    const r = await window.__kronosRpc(w.chainId, method, params ?? []);
    if (r.error) throw Object.assign(new Error(r.error.message), { code: r.error.code, data: r.error.data });
    return r.result;
  };
  // Replaces the held transaction: the same call at the same nonce, sent; its hash.
  w.speedUp = async () => {
    const [hash, t] = Object.entries(w.fake).find(([, x]) => !x.gone);
    t.gone = true;
    w.replacement = await rpc('eth_sendTransaction', [{ ...t.params, nonce: t.nonce }]);
    return w.replacement;
  };
  const provider = {
    async request({ method, params }) {
      switch (method) {
        case 'eth_requestAccounts':
          if (w.reject.connect) throw fail(4001, 'User rejected the request.');
          return [w.account];
        case 'eth_accounts':
          return [w.account];
        case 'eth_chainId':
          return w.chainId;
        case 'wallet_switchEthereumChain': {
          if (w.reject.switch) throw fail(4001, 'User rejected the request.');
          const id = params[0].chainId.toLowerCase();
          if (!w.known.includes(id)) throw fail(4902, `Unrecognized chain ID ${id}. Try adding the chain first.`);
          w.chainId = id;
          emit('chainChanged', id);
          return null;
        }
        case 'wallet_addEthereumChain': {
          if (w.reject.switch) throw fail(4001, 'User rejected the request.');
          const p = params[0];
          w.added.push({ chainId: p.chainId.toLowerCase(), rpcUrls: p.rpcUrls, chainName: p.chainName });
          w.known.push(p.chainId.toLowerCase());
          return null;
        }
        case 'eth_sendTransaction':
          if (w.reject.send) throw fail(4001, 'User rejected the transaction.');
          if (params[0].from.toLowerCase() !== w.account.toLowerCase()) throw fail(4100, 'Unknown account');
          if (w.hold) { w.held++; try { await w.hold; } finally { w.held--; } }
          // A wallet sends a transaction only on the chain it names (the user may have switched meanwhile).
          if (params[0].chainId && params[0].chainId.toLowerCase() !== w.chainId) throw fail(-32602, `Invalid parameters: the transaction is for chain ${params[0].chainId}, the wallet is on ${w.chainId}`);
          w.sent.push(params[0]);
          if (w.mode) {
            const nonce = await rpc('eth_getTransactionCount', [params[0].from, 'pending']);
            const hash = `0x${[...crypto.getRandomValues(new Uint8Array(32))].map((b) => b.toString(16).padStart(2, '0')).join('')}`;
            w.fake[hash] = { params: params[0], nonce, gone: false };
            return hash;
          }
          return rpc(method, params);
        case 'eth_getTransactionReceipt':
        case 'eth_getTransactionByHash': {
          const t = w.fake[params[0]];
          if (!t) return rpc(method, params);
          w.polls++;
          if (method === 'eth_getTransactionReceipt' || t.gone) return null;
          const p = t.params;
          return { hash: params[0], from: p.from, to: p.to, input: p.data, value: p.value ?? '0x0', nonce: t.nonce, blockNumber: null };
        }
        // anvil signs with the unlocked dev account
        default: {
          const r = await window.__kronosRpc(w.chainId, method, params ?? []);
          if (r.error) throw Object.assign(new Error(r.error.message), { code: r.error.code, data: r.error.data });
          return r.result;
        }
      }
    },
    on(ev, f) { (w.listeners[ev] ||= []).push(f); },
    removeListener(ev, f) { w.listeners[ev] = (w.listeners[ev] || []).filter((g) => g !== f); },
  };
  const info = {
    uuid: '5f1b2c3d-0000-4000-8000-6b726f6e6f73',
    name: 'Kronos Test Wallet',
    icon: 'data:image/svg+xml,%3Csvg xmlns=%22http://www.w3.org/2000/svg%22/%3E',
    rdns: 'dev.kronos.testwallet',
  };
  const announce = () => window.dispatchEvent(new CustomEvent('eip6963:announceProvider', { detail: Object.freeze({ info, provider }) }));
  window.addEventListener('eip6963:requestProvider', announce);
  announce();
}
