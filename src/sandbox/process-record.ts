/**
 * A process recorded by pid and start time (field 22 of /proc/<pid>/stat, in clock ticks since
 * boot): pids are reused, the pair is not. Used by the ledger to end a sandbox's VMM with nothing
 * in memory.
 */
import { readFile } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { HullError } from '../errors/index.js';

// How long a SIGKILLed process may take to go (only a process in D state is slower).
const KILL_WAIT_MS = 10_000;

interface ProcStat {
  state: string;
  startTime: string;
}

async function readStat(pid: number): Promise<ProcStat | undefined> {
  const text = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => undefined);
  if (text === undefined) return undefined;
  // The command name (field 2) may hold spaces and parentheses: the fields after it follow the last ')'.
  const fields = text.slice(text.lastIndexOf(')') + 2).split(' ');
  const state = fields[0];
  const startTime = fields[19];
  return state !== undefined && startTime !== undefined ? { state, startTime } : undefined;
}

/** processStartTime is the start time of a live process (not a zombie), or undefined. */
export async function processStartTime(pid: number): Promise<string | undefined> {
  const stat = await readStat(pid);
  return stat !== undefined && stat.state !== 'Z' ? stat.startTime : undefined;
}

/**
 * killRecordedProcess SIGKILLs `pid` if it is still the process that started at `startTime`, and
 * waits until it has exited (a zombie has). A pid that now names another process is left alone.
 */
export async function killRecordedProcess(pid: number, startTime: string): Promise<void> {
  if ((await processStartTime(pid)) !== startTime) return;
  try {
    process.kill(pid, 'SIGKILL');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ESRCH') return;
    throw e;
  }
  const deadline = Date.now() + KILL_WAIT_MS;
  while ((await processStartTime(pid)) === startTime) {
    if (Date.now() > deadline) throw new HullError('internal', `Process ${pid} did not exit within ${KILL_WAIT_MS} ms of SIGKILL`);
    await sleep(20);
  }
}
