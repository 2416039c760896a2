/**
 * runShim: the shim's command line, whichever way it was loaded (the bundle
 * through bin/containerd-shim-hull-v2, or the daemon's startup snapshot).
 * Each action's code comes from `actions`, so a loader may load only the one
 * it runs.
 */
import { HullError } from '../errors/index.js';
import { parseShimFlags, type ShimFlags } from './flags.js';

export interface ShimActions {
  start(): Promise<{ startCommand(flags: ShimFlags): Promise<string> }>;
  delete(): Promise<{ deleteCommand(flags: ShimFlags): Promise<Uint8Array> }>;
  serve(): Promise<{ serveDaemon(flags: ShimFlags): Promise<void> }>;
}

export function runShim(argv: string[], actions: ShimActions): void {
  run(argv, actions).catch((e: unknown) => {
    process.stderr.write(`containerd-shim-hull-v2: ${(e as Error).message}\n`);
    process.exit(1);
  });
}

async function run(argv: string[], actions: ShimActions): Promise<void> {
  const flags = parseShimFlags(argv);
  switch (flags.action) {
    case 'start':
      process.stdout.write(await (await actions.start()).startCommand(flags));
      return;
    case 'delete':
      process.stdout.write(await (await actions.delete()).deleteCommand(flags));
      return;
    case 'serve':
      if (!flags.socket) throw new HullError('invalid_argument', 'The shim daemon needs -socket (it is started by `start`)');
      await (await actions.serve()).serveDaemon(flags);
  }
}
