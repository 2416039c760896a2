// Bundles the guest agent into one CommonJS file (dist/agent/hull-agent.js)
// that the guest's node runs from the read-only root disk.
import { build } from 'esbuild-wasm';

await build({
  entryPoints: ['src/agent/main.ts'],
  outfile: 'dist/agent/hull-agent.js',
  bundle: true,
  platform: 'node',
  format: 'cjs',
  target: 'node20',
  legalComments: 'none',
  logLevel: 'warning',
});
