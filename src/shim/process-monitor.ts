/**
 * monitorProcess follows a started process in the guest: it carries the process's stdio and, once
 * the guest reports the exit and the output has drained, ends it through its ProcessEnd (which
 * leads to the Task service's one exit path).
 */
import type { Sandbox } from '../sandbox/index.js';
import { KILLED_STATUS } from './process-end.js';
import type { ProcessRecord } from './task-records.js';

export interface MonitorHooks {
  log: (line: string) => void;
  /** onOom runs before the exit is recorded when the guest says the kernel OOM-killed the process. */
  onOom: () => void;
}

export async function monitorProcess(sandbox: Sandbox, containerId: string, proc: ProcessRecord, hooks: MonitorHooks): Promise<void> {
  const name = `${containerId}/${proc.execId}`;
  const output = sandbox.attach(containerId, proc.execId, proc.io!).catch((e: Error) => hooks.log(`stdio of ${name}: ${e.message}`));
  // A SIGKILLed process whose guest went away before reporting it was killed, as far as anyone can tell.
  let status = 255;
  let oom = false;
  try {
    const [exit] = await Promise.all([sandbox.wait(containerId, proc.execId), output]);
    status = exit.exitStatus;
    oom = exit.oomKilled;
  } catch (e) {
    if (proc.ending.killed) status = KILLED_STATUS;
    hooks.log(`wait for ${name}: ${(e as Error).message}`);
  }
  if (oom && !proc.ending.ended) hooks.onOom();
  await proc.ending.end(status);
}
