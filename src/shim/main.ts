/**
 * containerd-shim-hull-v2 entry point: `start`, `delete`, or (no action) the
 * daemon itself.
 */
import { fileURLToPath } from 'node:url';
import { useHostRuntime } from '../common/host-runtime.js';
import { runShim } from './run.js';

// Bundled, this file is dist/shim/containerd-shim-hull-v2.mjs, beside the daemon's startup snapshot.
const SHIM_DIR = fileURLToPath(new URL('.', import.meta.url));

// The programs hull brought (the installer image's runtime) come first for the shim and its children.
useHostRuntime();

// Each action loads only its own code: `start` and `delete` are short-lived processes on a pod's
// critical path, and need little of what the daemon does.
runShim(process.argv.slice(2), {
  start: async () => {
    const { startCommand } = await import('./start.js');
    return { startCommand: (flags) => startCommand(flags, SHIM_DIR) };
  },
  delete: () => import('./delete.js'),
  serve: () => import('./daemon.js'),
});
