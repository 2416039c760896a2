/**
 * A process recorded by pid and start time (field 22 of /proc/<pid>/stat, in clock ticks since
 * boot): pids are reused, the pair is not. Used by the ledger to end a sandbox's VMM with nothing
 * in memory.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { processStartTime } from '../common/process.js';
import { HullError } from '../errors/index.js';

// How long a SIGKILLed process may take to go (only a process in D state is slower).
const KILL_WAIT_MS = 10_000;

/**
 * killRecordedProcess SIGKILLs `pid` if it is still the process that started at `startTime`, and
 * waits until it has exited (a zombie has). A pid that now names another process is left alone.
 */
export async function killRecordedProcess(pid: number, startTime: string): Promise<void> {
  if (processStartTime(pid) !== startTime) return;
  try {
    process.kill(pid, 'SIGKILL');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ESRCH') return;
    throw e;
  }
  const deadline = Date.now() + KILL_WAIT_MS;
  while (processStartTime(pid) === startTime) {
    if (Date.now() > deadline) throw new HullError('internal', `Process ${pid} did not exit within ${KILL_WAIT_MS} ms of SIGKILL`);
    await sleep(20);
  }
}
