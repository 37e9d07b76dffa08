#!/usr/bin/env node
// Writes programs-solana/idl/kronos_market.json: the Anchor IDL generated through the program's `idl-build` feature,
// assembled the way `anchor idl build` (anchor-lang-idl 0.1.4 `IdlBuilder`) does it: run the program's
// `__anchor_private_print_idl*` tests, merge the printed address, constants, events, errors and program sections,
// shorten module paths that do not conflict, sort. (`anchor build` with the Anchor CLI produces the same IDL; this
// script only avoids needing the CLI, and does not override RUSTFLAGS, so the shared target dir stays warm.)
// `--check` compares with the committed file instead of writing, and fails when they differ.
import fs from 'node:fs';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const program = path.join(root, 'programs-solana', 'programs', 'kronos-market');
const target = path.join(root, 'programs-solana', 'idl', 'kronos_market.json');
const check = process.argv.includes('--check');

const run = spawnSync(
  'cargo',
  ['test', '-p', 'kronos-market', '--lib', '--locked', '--features', 'idl-build', '__anchor_private_print_idl', '--',
    '--show-output', '--quiet', '--test-threads', '1'],
  {
    cwd: root,
    encoding: 'utf8',
    maxBuffer: 64 << 20,
    stdio: ['ignore', 'pipe', 'inherit'],
    env: {
      ...process.env,
      ANCHOR_IDL_BUILD_NO_DOCS: 'FALSE',
      ANCHOR_IDL_BUILD_RESOLUTION: 'TRUE',
      ANCHOR_IDL_BUILD_SKIP_LINT: 'FALSE',
      ANCHOR_IDL_BUILD_PROGRAM_PATH: program,
    },
  },
);
if (run.status !== 0) {
  console.error('building the IDL failed (cargo test --features idl-build)');
  process.exit(1);
}

let address = '';
const constants = [];
const events = [];
let errors = null;
const types = new Map();
let idl = null;
let section = null;
let lines = [];
for (const line of run.stdout.split('\n')) {
  const begin = line.match(/^--- IDL begin (\w+) ---$/);
  if (!section && begin) {
    section = begin[1];
    lines = [];
    continue;
  }
  if (section && line === `--- IDL end ${section} ---`) {
    const text = lines.join('\n');
    if (section === 'address') address = JSON.parse(text);
    else if (section === 'const') constants.push(JSON.parse(text));
    else if (section === 'event') {
      const e = JSON.parse(text);
      events.push(e.event);
      for (const t of e.types) types.set(t.name, t);
    } else if (section === 'errors') {
      if (errors) throw new Error('multiple #[error_code] enums');
      errors = JSON.parse(text);
    } else if (section === 'program') idl = JSON.parse(text);
    section = null;
    continue;
  }
  if (section) lines.push(line);
}
if (!idl) {
  console.error('no program IDL was printed (is the `idl-build` feature wired to anchor-lang/idl-build?)');
  process.exit(1);
}
for (const t of idl.types ?? []) types.set(t.name, t);

const byName = (a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0);
const nonEmpty = (v) => (Array.isArray(v) && v.length === 0 ? undefined : v);
let out = {
  address,
  metadata: idl.metadata,
  docs: idl.docs,
  instructions: [...idl.instructions].sort(byName),
  accounts: nonEmpty([...(idl.accounts ?? [])].sort(byName)),
  events: nonEmpty([...events].sort(byName)),
  errors: nonEmpty(errors ?? []),
  types: nonEmpty([...types.values()].sort(byName)),
  constants: nonEmpty([...constants].sort(byName)),
};

// Module paths to bare names where no two paths share a name (anchor-lang-idl's convert_module_paths).
let text = JSON.stringify(out);
for (const m of JSON.stringify(out).matchAll(/"(\w+::)+(\w+)"/g)) {
  const replaced = text.split(m[0]).join(`"${m[2]}"`);
  if (!new RegExp(`"(\\w+::)+${m[2]}"`).test(replaced)) text = replaced;
}
out = JSON.parse(text);
for (const kind of ['accounts', 'events', 'instructions']) {
  const seen = new Map();
  for (const it of out[kind] ?? []) {
    if (!it.discriminator?.length) throw new Error(`empty discriminator: ${kind} ${it.name}`);
    const k = it.discriminator.join(',');
    if (seen.has(k)) throw new Error(`discriminator collision: ${kind} ${seen.get(k)} and ${it.name}`);
    seen.set(k, it.name);
  }
}
const json = JSON.stringify(out, null, 2) + '\n';

if (check) {
  const have = fs.existsSync(target) ? fs.readFileSync(target, 'utf8') : '';
  if (have !== json) {
    console.error(`${path.relative(root, target)} is out of date: run node tools/gen-idl.mjs and commit it`);
    process.exit(1);
  }
  console.log(`${path.relative(root, target)} matches the program`);
} else {
  fs.mkdirSync(path.dirname(target), { recursive: true });
  fs.writeFileSync(target, json);
  console.log(`wrote ${path.relative(root, target)} (${out.instructions.length} instructions, ${out.accounts?.length ?? 0} accounts, ${out.events?.length ?? 0} events, ${out.errors?.length ?? 0} errors)`);
}
