/**
 * What the shim keeps per container and process: status, exit, stdio FIFOs. The processes
 * themselves are the agent's, in the guest.
 */
import { timestampFromDate } from '@bufbuild/protobuf/wkt';
import type { OciProcess } from '../sandbox/index.js';
import type { FifoIO, FifoPaths } from './fifo-io.js';
import { ProcessEnd, type RecordExit } from './process-end.js';
import { ProcessLifecycle } from './process-state.js';

export interface ProcessRecord {
  execId: string;
  paths: FifoPaths;
  terminal: boolean;
  spec?: OciProcess;
  /** state walks created → running ⇄ paused → stopped → deleted (process-state.ts). */
  state: ProcessLifecycle;
  guestPid: number;
  exit?: { status: number; at: Date };
  exited: Promise<void>;
  markExited: () => void;
  io?: FifoIO;
  /** ending records the exit once: the guest's report, or the deadline after a SIGKILL. */
  ending: ProcessEnd;
}

export interface ContainerRecord {
  id: string;
  bundle: string;
  rootfsMounted: boolean;
  /** holder is set for a CRI sandbox container: its task is the pod's VM, with no guest process. */
  holder: boolean;
  init: ProcessRecord;
  // exec id -> process; changed by exec() and delete().
  execs: Map<string, ProcessRecord>;
}

export interface NewProcess {
  execId: string;
  paths: FifoPaths;
  terminal: boolean;
  spec?: OciProcess;
  /** onEnd records the process's exit (called once, by its ProcessEnd). */
  onEnd: (proc: ProcessRecord, status: number, forced: boolean) => Promise<void>;
}

export function newProcess({ execId, paths, terminal, spec, onEnd }: NewProcess): ProcessRecord {
  let markExited!: () => void;
  const exited = new Promise<void>((resolve) => (markExited = resolve));
  const record: RecordExit = (status, forced) => onEnd(proc, status, forced);
  const state = new ProcessLifecycle(execId ? 'exec' : 'init');
  const proc: ProcessRecord = { execId, paths, terminal, spec, state, guestPid: 0, exited, markExited, ending: new ProcessEnd(record) };
  return proc;
}

/** newContainer is the record of a container being created; `onEnd` records its processes' exits. */
export function newContainer(req: { id: string; bundle: string; terminal: boolean } & FifoPaths, holder: boolean, onEnd: NewProcess['onEnd']): ContainerRecord {
  const paths = { stdin: req.stdin, stdout: req.stdout, stderr: req.stderr };
  const init = newProcess({ execId: '', paths, terminal: req.terminal, onEnd });
  return { id: req.id, bundle: req.bundle, rootfsMounted: false, holder, init, execs: new Map() };
}

/** stdioFlags says which streams the guest process gets, from the FIFOs containerd made. */
export function stdioFlags(paths: FifoPaths, terminal: boolean) {
  return { stdin: paths.stdin !== '', stdout: paths.stdout !== '', stderr: paths.stderr !== '' && !terminal, terminal, rows: 24, cols: 80 };
}

/** stateResponse is Task.State's answer for a process; `pid` is the VMM's, as for every task. */
export function stateResponse(container: ContainerRecord, proc: ProcessRecord, pid: number) {
  return {
    id: proc.execId || container.id,
    bundle: container.bundle,
    pid,
    status: proc.state.status,
    stdin: proc.paths.stdin,
    stdout: proc.paths.stdout,
    stderr: proc.paths.stderr,
    terminal: proc.terminal,
    exitStatus: proc.exit?.status ?? 0,
    exitedAt: proc.exit ? timestampFromDate(proc.exit.at) : undefined,
    execId: proc.execId,
  };
}
