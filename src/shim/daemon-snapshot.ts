/**
 * Entry of the shim daemon's startup snapshot (snapshot-file.ts). Its
 * modules are loaded and initialized when hull is built — ~440 KB of
 * JavaScript and the protobuf descriptors it decodes — so a pod's daemon
 * starts from that heap. scripts/shim-snapshot.cjs runs this bundled, with
 * every built-in module loaded only at first use: the snapshot holds no
 * state of node's own that could be stale when it runs.
 */
import { startupSnapshot } from 'node:v8';
import * as daemon from './daemon.js';
import { runShim } from './run.js';

if (startupSnapshot.isBuildingSnapshot()) {
  startupSnapshot.setDeserializeMainFunction(() =>
    runShim(process.argv.slice(2), {
      serve: async () => daemon,
      start: () => Promise.reject(new Error('the daemon snapshot runs only the daemon')),
      delete: () => Promise.reject(new Error('the daemon snapshot runs only the daemon')),
    }),
  );
}
