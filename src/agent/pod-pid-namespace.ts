/**
 * The pod's shared PID namespace, for pods with shareProcessNamespace. With runc their containers
 * join pause's namespace. A hull pod runs no pause in the guest, and the guest's own namespace would
 * show them init and the agent (and let them signal it). So the first container that asks starts a
 * holder, `unshare --pid --fork sleep`, whose child is PID 1 of a new namespace, as pause is; every
 * container of the pod that asks joins that namespace. The holder lives as long as the VM.
 */
import { spawn } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { HullError } from '../errors/index.js';

const BUSYBOX = '/bin/busybox';
const HOLDER_READY_MS = 5000;

let holder: Promise<string> | undefined;

/** podPidNamespace returns the path of the pod's shared PID namespace, made on first use. */
export function podPidNamespace(): Promise<string> {
  if (holder) return holder;
  // A namespace whose PID 1 died takes no new process: once this holder fails or exits, the next
  // container that asks makes another.
  const forget = (): void => {
    if (holder === made) holder = undefined;
  };
  const made: Promise<string> = startHolder(forget).catch((e: unknown) => {
    forget();
    throw e;
  });
  holder = made;
  return made;
}

/** sharesPodPidNamespace tells whether a container spec asks to join a PID namespace (the pod's). */
export function sharesPodPidNamespace(namespaces: ReadonlyArray<{ type: string; path?: string }> | undefined): boolean {
  return (namespaces ?? []).some((ns) => ns.type === 'pid' && !!ns.path);
}

async function startHolder(onExit: () => void): Promise<string> {
  const unshare = spawn(BUSYBOX, ['unshare', '--pid', '--fork', BUSYBOX, 'sleep', '2147483647'], { stdio: 'ignore', env: {} });
  const failed = new Promise<never>((_, reject) => {
    unshare.once('error', (e) => reject(new HullError('internal', `Cannot start the pod PID namespace holder: ${e.message}`)));
    unshare.once('exit', (code, signal) => {
      onExit();
      reject(new HullError('internal', `The pod PID namespace holder exited (${code ?? signal})`));
    });
  });
  failed.catch(() => undefined);
  const pid = unshare.pid;
  if (pid === undefined) return failed;
  // The forked child is PID 1 of the new namespace: join through it once it exists.
  const deadline = Date.now() + HOLDER_READY_MS;
  for (;;) {
    const children = await Promise.race([readFile(`/proc/${pid}/task/${pid}/children`, 'utf8').catch(() => ''), failed]);
    const child = Number.parseInt(children.trim().split(/\s+/)[0] ?? '', 10);
    if (Number.isSafeInteger(child) && child > 0) return `/proc/${child}/ns/pid`;
    if (Date.now() > deadline) {
      unshare.kill('SIGKILL');
      throw new HullError('internal', `The pod PID namespace holder had no child after ${HOLDER_READY_MS} ms`);
    }
    await sleep(5);
  }
}
