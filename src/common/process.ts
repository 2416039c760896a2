/**
 * Processes by pid, read from /proc/<pid>/stat (proc(5)): whether one lives, and its start time
 * (field 22, clock ticks since boot), which with the pid names one process for good (pids are reused).
 * A zombie has exited (only its parent's reaping is pending): it counts as dead.
 */
import { readFileSync } from 'node:fs';
import { readdir, readFile } from 'node:fs/promises';

interface ProcStat {
  state: string;
  startTime: string;
}

function readStat(pid: number): ProcStat | undefined {
  if (!Number.isSafeInteger(pid) || pid <= 0) return undefined;
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined;
  }
  // The command name (field 2) may hold spaces and parentheses: the fields after it follow the last ')'.
  const fields = text.slice(text.lastIndexOf(')') + 2).split(' ');
  const state = fields[0];
  const startTime = fields[19];
  return state !== undefined && startTime !== undefined ? { state, startTime } : undefined;
}

/** pidAlive tells whether process `pid` exists and has not exited (a zombie has). */
export function pidAlive(pid: number): boolean {
  const stat = readStat(pid);
  return stat !== undefined && stat.state !== 'Z';
}

/** processStartTime is the start time of a live process (not a zombie), or undefined. */
export function processStartTime(pid: number): string | undefined {
  const stat = readStat(pid);
  return stat !== undefined && stat.state !== 'Z' ? stat.startTime : undefined;
}

/**
 * pidsWithUid lists the live processes (not zombies) that hold `uid` as their real, effective, saved
 * or filesystem uid, from /proc/<pid>/status: the owner of /proc/<pid> is no guide, it is root for a
 * process that changed its uid (not dumpable).
 */
export async function pidsWithUid(uid: number): Promise<number[]> {
  const pids: number[] = [];
  for (const entry of await readdir('/proc')) {
    if (!/^[1-9][0-9]*$/.test(entry)) continue;
    const status = await readFile(`/proc/${entry}/status`, 'utf8').catch(() => '');
    const uids = /^Uid:\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)$/m.exec(status)?.slice(1).map(Number);
    if (uids?.includes(uid) && !/^State:\s+Z/m.test(status)) pids.push(Number(entry));
  }
  return pids;
}
