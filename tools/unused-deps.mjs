#!/usr/bin/env node
// Fails when a workspace crate declares a dependency its code never names (scripts/test runs it).
//
// What it checks, per workspace package (from `cargo metadata --no-deps`, so renames and targets are cargo's own):
//   [dependencies]        must be named in the library/binary sources (src/, build.rs) — a dependency named only by
//                         tests, benches or examples is reported too: it belongs in [dev-dependencies], so that no
//                         test-only crate reaches the product;
//   [dev-dependencies]    must be named somewhere in the package (tests/, benches/, examples/, or src/ under cfg(test));
//   [build-dependencies]  must be named in build.rs.
// "Named" means the crate's Rust identifier (`kronos-common` → `kronos_common`, or the `package = …` rename) appears as a
// whole word in a .rs file, outside `//` comments. This is the same rule cargo-machete uses (and its opt-out key):
// a dependency that is needed without being named (a feature switch for another crate, say) is listed, with the reason
// in a comment, under
//   [package.metadata.cargo-machete]
//   ignored = ["name"]
// Usage: node tools/unused-deps.mjs            (exit 1 and a list when something is unused)
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const meta = JSON.parse(
  execFileSync('cargo', ['metadata', '--format-version', '1', '--no-deps', '--offline'], {
    cwd: root,
    encoding: 'utf8',
    maxBuffer: 64 << 20,
    stdio: ['ignore', 'pipe', 'inherit'],
  }),
);

function rsFiles(dir) {
  if (!fs.existsSync(dir)) return [];
  const out = [];
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) out.push(...rsFiles(p));
    else if (e.name.endsWith('.rs')) out.push(p);
  }
  return out;
}

// Source text without line comments (doc comments mention crates freely) — string literals are kept, which only
// errs on the side of "used".
function text(files) {
  return files.map((f) => fs.readFileSync(f, 'utf8').replace(/\/\/.*$/gm, '')).join('\n');
}

const problems = [];
const members = new Set(meta.workspace_members);
for (const pkg of meta.packages) {
  if (!members.has(pkg.id)) continue;
  const dir = path.dirname(pkg.manifest_path);
  const ignored = new Set(pkg.metadata?.['cargo-machete']?.ignored ?? []);
  // Product sources: every lib/bin target's directory (src/ by convention) and build.rs; test sources: the rest.
  const product = text([...rsFiles(path.join(dir, 'src'))]);
  const build = fs.existsSync(path.join(dir, 'build.rs')) ? text([path.join(dir, 'build.rs')]) : '';
  const tests = text(['tests', 'benches', 'examples'].flatMap((d) => rsFiles(path.join(dir, d))));
  const rel = path.relative(root, pkg.manifest_path);
  for (const dep of pkg.dependencies) {
    const name = dep.rename ?? dep.name;
    if (ignored.has(name)) continue;
    const ident = name.replace(/-/g, '_');
    const re = new RegExp(`\\b${ident}\\b`);
    const kind = dep.kind ?? 'normal';
    if (kind === 'normal') {
      if (re.test(product) || re.test(build)) continue;
      problems.push(
        re.test(tests)
          ? `${rel}: [dependencies] ${name} is used only by tests/benches/examples: move it to [dev-dependencies]`
          : `${rel}: [dependencies] ${name} is never used`,
      );
    } else if (kind === 'dev') {
      if (re.test(tests) || re.test(product)) continue;
      problems.push(`${rel}: [dev-dependencies] ${name} is never used`);
    } else if (kind === 'build') {
      if (re.test(build)) continue;
      problems.push(`${rel}: [build-dependencies] ${name} is never used by build.rs`);
    }
  }
}

if (problems.length) {
  console.error(`unused dependencies (${problems.length}):`);
  for (const p of problems) console.error(`  ${p}`);
  console.error(
    'Remove them, move test-only ones to [dev-dependencies], or list a needed-but-unnamed one under ' +
      '[package.metadata.cargo-machete] ignored = [...] with a comment saying why.',
  );
  process.exit(1);
}
console.log(`no unused dependencies in ${members.size} workspace crates`);
