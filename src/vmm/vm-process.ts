/**
 * The VMM process as the driver holds it: either its own child (exit from the kernel's SIGCHLD, via
 * Node), or a process it watches by pid and start time — a VM that lives on a lifeline
 * (VmSpec.lifeline) is not the child of the process that runs it at the end: a pool's VM is adopted
 * by a pod's shim. A watched process is polled in /proc, and checked at once when its QMP
 * connection closes (QEMU's exit closes it first).
 */
import type { ChildProcess } from 'node:child_process';
import { processStartTime } from '../common/process.js';
import type { VmExit } from './driver.js';

/** WATCH_POLL_MS: how often a watched VMM is looked for in /proc when nothing else says it went. */
const WATCH_POLL_MS = 500;
/** KILLED_POLL_MS: how often once it was signalled (its end is expected now). */
const KILLED_POLL_MS = 20;

export interface VmProcess {
  readonly pid: number;
  /** exit resolves once the process has exited (code and signal are null when it is not our child). */
  readonly exit: Promise<VmExit>;
  kill(signal: 'SIGTERM' | 'SIGKILL'): void;
  /** check looks now whether the process has gone (its QMP connection just closed). */
  check(): void;
  /** release stops watching: `exit` never settles from now on (the process was handed over). */
  release(): void;
}

/** childVmProcess is a VMM that is this process's child: Node reaps it and reports its status. */
export function childVmProcess(child: ChildProcess, pid: number): VmProcess {
  const exit = new Promise<VmExit>((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  return {
    pid,
    exit,
    // A no-op once Node has reaped the child, so never another process.
    kill: (signal) => child.kill(signal),
    check: () => undefined,
    release: () => undefined,
  };
}

/**
 * watchedVmProcess is a VMM known by pid and start time (a reused pid never matches): it has exited
 * once /proc no longer shows that process alive (a zombie has exited). kill() signals it only while
 * the pid still names it.
 */
export function watchedVmProcess(pid: number, startTime: string): VmProcess {
  let done!: (exit: VmExit) => void;
  const exit = new Promise<VmExit>((resolve) => (done = resolve));
  let timer: NodeJS.Timeout | undefined;
  const check = (): void => {
    if (timer === undefined) return;
    if (processStartTime(pid) === startTime) return;
    clearInterval(timer);
    timer = undefined;
    done({ code: null, signal: null });
  };
  const poll = (ms: number): void => {
    clearInterval(timer);
    timer = setInterval(check, ms);
    timer.unref();
  };
  poll(WATCH_POLL_MS);
  return {
    pid,
    exit,
    kill: (signal) => {
      if (timer === undefined || processStartTime(pid) !== startTime) return;
      try {
        process.kill(pid, signal);
      } catch {
        // ESRCH: it went meanwhile.
      }
      poll(KILLED_POLL_MS);
    },
    check,
    release: () => {
      clearInterval(timer);
      timer = undefined;
    },
  };
}
