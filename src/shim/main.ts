/**
 * containerd-shim-hull-v2 entry point: `start`, `delete`, or (no action) the
 * daemon itself.
 */
import { HullError } from '../errors/index.js';
import { deleteCommand } from './delete.js';
import { parseShimFlags } from './flags.js';
import { serveDaemon } from './daemon.js';
import { startCommand } from './start.js';

async function main(): Promise<void> {
  const flags = parseShimFlags(process.argv.slice(2));
  switch (flags.action) {
    case 'start':
      process.stdout.write(await startCommand(flags));
      return;
    case 'delete':
      process.stdout.write(await deleteCommand(flags));
      return;
    case 'serve':
      if (!flags.socket) throw new HullError('invalid_argument', 'The shim daemon needs -socket (it is started by `start`)');
      await serveDaemon(flags);
  }
}

main().catch((e: unknown) => {
  process.stderr.write(`containerd-shim-hull-v2: ${(e as Error).message}\n`);
  process.exit(1);
});
