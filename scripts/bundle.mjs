// Bundles the two programs that start often and must start fast:
// - the guest agent, one CommonJS file (dist/agent/hull-agent.js) that the guest's node runs from
//   the read-only root disk;
// - the shim (dist/shim/containerd-shim-hull-v2.mjs, run by bin/containerd-shim-hull-v2). containerd
//   starts it twice per pod on the critical path (`start`, then the daemon) and once more for
//   `delete`: as one file it loads in ~55 ms less than as ~60 separate modules.
// Then it makes the shim daemon's startup snapshot (src/shim/snapshot-file.ts) with this node.
import { build } from 'esbuild-wasm';
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, rmSync } from 'node:fs';
import { snapshotFileName } from '../dist/src/shim/snapshot-file.js';

// A snapshot of an older bundle must never outlive it, whatever happens below.
for (const name of existsSync('dist/shim') ? readdirSync('dist/shim') : []) if (name.endsWith('.blob')) rmSync(`dist/shim/${name}`);

const common = { bundle: true, platform: 'node', target: 'node20', legalComments: 'none', logLevel: 'warning', keepNames: true };

await build({ ...common, entryPoints: ['src/agent/main.ts'], outfile: 'dist/agent/hull-agent.js', format: 'cjs' });

await build({
  ...common,
  entryPoints: { 'containerd-shim-hull-v2': 'src/shim/main.ts' },
  outdir: 'dist/shim',
  outExtension: { '.js': '.mjs' },
  // One chunk per action (main.ts imports each lazily): `start` and `delete` load a fraction of it.
  splitting: true,
  chunkNames: 'chunks/[name]-[hash]',
  format: 'esm',
  // Bundled CommonJS dependencies call require(); an ES module has none of its own.
  banner: { js: "import { createRequire as hullCreateRequire } from 'node:module'; const require = hullCreateRequire(import.meta.url);" },
});

// Only for making the snapshot: the blob holds all of it.
const snapshotBundle = 'dist/shim-snapshot/daemon.cjs';
await build({ ...common, entryPoints: ['src/shim/daemon-snapshot.ts'], outfile: snapshotBundle, format: 'cjs' });
const blob = `dist/shim/${snapshotFileName()}`;
const made = spawnSync(process.execPath, ['--snapshot-blob', blob, '--build-snapshot', 'scripts/shim-snapshot.cjs', snapshotBundle], { stdio: 'inherit' });
rmSync('dist/shim-snapshot', { recursive: true, force: true });
if (made.status !== 0) {
  // The shim runs without it (start.ts), only slower: a node that cannot make one must not fail the build.
  rmSync(blob, { force: true });
  console.warn(`bundle: no startup snapshot for the shim daemon (node ${process.version} could not make one); the daemon will load its bundle`);
}
