/**
 * Host processes, read from /proc: the process tree, PSS and CPU time. Processes are found from pids
 * we know (shims of our own containerd, QEMU under our own run root), never by name.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { processAlive } from '../test/helpers/leaks.js';

/** CLK_TCK is the unit of utime/stime in /proc/<pid>/stat (100 on Linux x86-64). */
const CLK_TCK = 100;

interface ProcInfo {
  ppid: number;
  /** ticks is utime + stime. */
  ticks: number;
}

/** procTable reads ppid and utime+stime (fields 4, 14, 15 of /proc/<pid>/stat) of every process. */
function procTable(): Map<number, ProcInfo> {
  const table = new Map<number, ProcInfo>();
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      // After "pid (comm) ", field n is rest[n - 3].
      const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      table.set(Number(entry), { ppid: Number(rest[1]), ticks: Number(rest[11]) + Number(rest[12]) });
    } catch {
      // Gone meanwhile.
    }
  }
  return table;
}

/** withDescendants returns `roots` and every process below them, sorted. */
export function withDescendants(roots: Iterable<number>): number[] {
  const table = procTable();
  const set = new Set(roots);
  for (let grew = true; grew; ) {
    grew = false;
    for (const [pid, info] of table) {
      if (!set.has(pid) && set.has(info.ppid)) {
        set.add(pid);
        grew = true;
      }
    }
  }
  return [...set].sort((a, b) => a - b);
}

/**
 * pssKiB sums the proportional set size of `pids` (shared pages divided among their mappers), in
 * total and by program (argv[0]'s base name: e.g. containerd-shim-runc-v2, qemu-system-x86_64, runsc-gofer).
 */
export function pssKiB(pids: number[]): { total: number; byCommand: Record<string, number> } {
  let total = 0;
  const byCommand: Record<string, number> = {};
  for (const pid of pids) {
    try {
      const m = /^Pss:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8'));
      // argv[0] names runsc's processes (runsc-sandbox, runsc-gofer), whose comm is "exe".
      const argv0 = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0')[0] ?? '';
      const comm = argv0.split('/').pop() || readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
      const kib = m ? Number(m[1]) : 0;
      total += kib;
      byCommand[comm] = (byCommand[comm] ?? 0) + kib;
    } catch {
      // Gone meanwhile.
    }
  }
  return { total, byCommand };
}

/** cpuSeconds reads the CPU time (user + system) each of `pids` has used so far. */
export function cpuSeconds(pids: number[]): Map<number, number> {
  const table = procTable();
  const out = new Map<number, number>();
  for (const pid of pids) {
    const info = table.get(pid);
    if (info) out.set(pid, info.ticks / CLK_TCK);
  }
  return out;
}

/** killTree SIGKILLs the processes below `pid`, then `pid` itself; all of them are ours by construction. */
export function killTree(pid: number): void {
  const all = withDescendants([pid]);
  for (const p of [...all.filter((p) => p !== pid), pid]) {
    try {
      process.kill(p, 'SIGKILL');
    } catch {
      // Already gone.
    }
  }
}

/** pidsWithArg lists live processes whose command line contains `text` (a path unique to this run). */
export function pidsWithArg(text: string): number[] {
  const pids: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    try {
      if (readFileSync(`/proc/${entry}/cmdline`, 'utf8').includes(text) && processAlive(Number(entry))) pids.push(Number(entry));
    } catch {
      // Gone meanwhile.
    }
  }
  return pids;
}
