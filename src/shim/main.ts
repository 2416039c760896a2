/**
 * containerd-shim-hull-v2 entry point: `start`, `delete`, or (no action) the
 * daemon itself.
 */
import { HullError } from '../errors/index.js';
import { parseShimFlags } from './flags.js';

// Each action loads only its own code: `start` and `delete` are short-lived processes on a pod's
// critical path, and need little of what the daemon does.

async function main(): Promise<void> {
  const flags = parseShimFlags(process.argv.slice(2));
  switch (flags.action) {
    case 'start':
      process.stdout.write(await (await import('./start.js')).startCommand(flags));
      return;
    case 'delete':
      process.stdout.write(await (await import('./delete.js')).deleteCommand(flags));
      return;
    case 'serve':
      if (!flags.socket) throw new HullError('invalid_argument', 'The shim daemon needs -socket (it is started by `start`)');
      await (await import('./daemon.js')).serveDaemon(flags);
  }
}

main().catch((e: unknown) => {
  process.stderr.write(`containerd-shim-hull-v2: ${(e as Error).message}\n`);
  process.exit(1);
});
