/**
 * procStats: what one host process (the shim, its QEMU) costs the node, from /proc/<pid>: CPU
 * seconds, resident and proportional set size, threads, open file descriptors. Host files only:
 * the pid is one the shim started or its own.
 */
import { readdir, readFile } from 'node:fs/promises';

// USER_HZ, the unit of utime/stime in /proc/<pid>/stat: 100 on every Linux architecture we run.
const CLOCK_TICKS = 100;

export interface ProcessStats {
  pid: number;
  cpuSeconds: number;
  rssBytes: number;
  pssBytes: number;
  threads: number;
  openFds: number;
}

/** procStats reads /proc/<pid>; undefined once the process is gone. */
export async function procStats(pid: number): Promise<ProcessStats | undefined> {
  try {
    const [stat, rollup, fds] = await Promise.all([readFile(`/proc/${pid}/stat`, 'utf8'), readFile(`/proc/${pid}/smaps_rollup`, 'utf8'), readdir(`/proc/${pid}/fd`)]);
    // Fields after the command name, which is in parentheses and may hold anything.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const kib = (key: string) => Number(new RegExp(`^${key}:\\s+(\\d+) kB$`, 'm').exec(rollup)?.[1] ?? 0) * 1024;
    return {
      pid,
      // utime and stime are the 14th and 15th fields of stat, the 12th and 13th after the name.
      cpuSeconds: (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS,
      rssBytes: kib('Rss'),
      pssBytes: kib('Pss'),
      threads: Number(fields[17]),
      openFds: fds.length,
    };
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT' || (e as NodeJS.ErrnoException).code === 'ESRCH') return undefined;
    throw e;
  }
}
