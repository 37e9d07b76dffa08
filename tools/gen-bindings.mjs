#!/usr/bin/env node
// Writes contracts-evm/bindings/artifacts/<Name>.json ({abi, bytecode, deployedBytecode}) from forge's build output,
// for the contracts the Rust side binds with alloy's sol!. `--check` compares instead of writing and fails when a
// committed artifact differs from what forge builds now.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const out = path.join(root, 'contracts-evm', 'out');
const dest = path.join(root, 'contracts-evm', 'bindings', 'artifacts');
// [source file name in out/, contract name]
const CONTRACTS = [
  ['KronosMarket.sol', 'KronosMarket'],
  ['PredictionRegistry.sol', 'PredictionRegistry'],
  ['AggregatorV3Interface.sol', 'AggregatorV3Interface'],
  ['MockV3Aggregator.sol', 'MockV3Aggregator'],
  ['MockBaseSequencerUptimeFeed.sol', 'MockBaseSequencerUptimeFeed'],
  ['PhasedAggregatorProxy.sol', 'PhasedAggregatorProxy'],
  ['TestTokens.sol', 'MockERC20'],
];
const check = process.argv.includes('--check');
fs.mkdirSync(dest, { recursive: true });
let stale = [];
for (const [file, name] of CONTRACTS) {
  const src = path.join(out, file, `${name}.json`);
  if (!fs.existsSync(src)) {
    console.error(`missing forge artifact ${path.relative(root, src)}: run forge build first`);
    process.exit(1);
  }
  const a = JSON.parse(fs.readFileSync(src, 'utf8'));
  const slim = {
    abi: a.abi,
    bytecode: { object: a.bytecode?.object ?? '0x' },
    deployedBytecode: { object: a.deployedBytecode?.object ?? '0x' },
  };
  const text = JSON.stringify(slim, null, 1) + '\n';
  const target = path.join(dest, `${name}.json`);
  if (check) {
    const have = fs.existsSync(target) ? fs.readFileSync(target, 'utf8') : '';
    if (have !== text) stale.push(path.relative(root, target));
  } else {
    fs.writeFileSync(target, text);
  }
}
if (stale.length) {
  console.error(`stale bindings (run scripts/gen-bindings): ${stale.join(', ')}`);
  process.exit(1);
}
console.log(check ? 'bindings artifacts are current' : `wrote ${CONTRACTS.length} artifacts to ${path.relative(root, dest)}`);
