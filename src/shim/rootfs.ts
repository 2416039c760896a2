/**
 * Mounting the snapshot mounts containerd hands to Create at <bundle>/rootfs,
 * as the runc shim does, so the sandbox can share that directory with the
 * guest. Any mount type mount(8) knows works (overlay, bind, …): nothing here
 * assumes overlay.
 */
import { run } from '../common/run.js';
import { HullError } from '../errors/index.js';

export interface RootfsMount {
  type: string;
  source: string;
  target: string;
  options: string[];
}

// A snapshot mount answers in milliseconds; a wedged one must not hold Create for ever.
const MOUNT_TIMEOUT_MS = 30_000;

async function mount(args: string[]): Promise<void> {
  await run('mount', args, { timeoutMs: MOUNT_TIMEOUT_MS });
}

export async function mountRootfs(mounts: RootfsMount[], target: string): Promise<void> {
  if (mounts.length > 1) throw new HullError('invalid_argument', `Cannot mount a rootfs of ${mounts.length} mounts: one expected`);
  const m = mounts[0];
  if (!m) return;
  const bind = m.type === 'bind' || m.options.includes('bind') || m.options.includes('rbind');
  const options = m.options.filter((o) => o !== 'bind' && o !== 'rbind');
  if (bind) {
    await mount([m.options.includes('rbind') ? '--rbind' : '--bind', m.source, target]);
    if (options.includes('ro')) await mount(['-o', 'remount,bind,ro', target]);
    return;
  }
  await mount(['-t', m.type, ...(options.length > 0 ? ['-o', options.join(',')] : []), m.source, target]);
}
