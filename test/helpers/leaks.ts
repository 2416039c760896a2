/**
 * Leak checks run after integration tests: nothing a test started may
 * survive it. Processes are matched by the pids the test recorded, never by
 * name; mounts and files by the paths the test used.
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { readMountinfoSync } from '../../src/common/mountinfo.js';
import { isInside } from '../../src/common/paths.js';
import { pidAlive } from '../../src/common/process.js';

/** processAlive: a zombie has exited (only its parent's reaping is pending), so it is not alive. */
export const processAlive = pidAlive;

export function mountsUnder(dir: string): string[] {
  return readMountinfoSync()
    .map((m) => m.mountPoint)
    .filter((p) => isInside(dir, p));
}

export function entriesIn(dir: string): string[] {
  return existsSync(dir) ? readdirSync(dir) : [];
}

/**
 * qemuPidsUnder lists the QEMU processes whose command line names `runRoot`:
 * the VMs of one test or demo, never anyone else's. A jailed QEMU's own
 * command line names only paths in its jail; the process that started it
 * (unshare, whose child it is) names the run root: its child is listed.
 */
export function qemuPidsUnder(runRoot: string): number[] {
  const pids: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const cmdline = readFileSync(`/proc/${entry}/cmdline`, 'utf8');
      if (!cmdline.includes('qemu-system') || !cmdline.includes(`${runRoot}/`) || !processAlive(Number(entry))) continue;
      const jailed = cmdline.startsWith('unshare\0');
      const child = jailed ? Number(readFileSync(`/proc/${entry}/task/${entry}/children`, 'utf8').trim().split(' ')[0]) : 0;
      pids.push(child > 0 && processAlive(child) ? child : Number(entry));
    } catch {
      // gone meanwhile
    }
  }
  return pids;
}
