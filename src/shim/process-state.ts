/**
 * The life of one process (a container's init or an exec) as containerd sees it:
 *
 *   created ─▶ running ⇄ paused
 *      │          │        │
 *      └────────▶ stopped ◀┘ ─▶ deleted      (created may also go straight to deleted)
 *
 * The rules and messages are those of containerd 1.6's runc shim (pkg/process/init_state.go and
 * exec_state.go). That shim returns them as plain errors (gRPC Unknown); hull gives them the errdefs
 * class they describe, FailedPrecondition, so callers can tell a wrong state from a failure. A kill
 * of a finished process is NotFound "process already finished", as runc's shim says it.
 */
import { HullError } from '../errors/index.js';
import { Status } from '../proto/gen/task_status_pb.js';

export type ProcessState = 'created' | 'running' | 'paused' | 'stopped' | 'deleted';
export type ProcessKind = 'init' | 'exec';
/** The requests whose answer depends on the state (Wait, State, CloseIO answer in any state). */
export type ProcessOp = 'start' | 'pause' | 'resume' | 'delete' | 'exec' | 'update' | 'kill' | 'resize';

const TRANSITIONS: Record<ProcessState, readonly ProcessState[]> = {
  created: ['running', 'stopped', 'deleted'],
  running: ['paused', 'stopped'],
  paused: ['running', 'stopped'],
  stopped: ['deleted'],
  deleted: [],
};

// What each state refuses, with runc's words. Not listed: allowed. `exec` is asked of the init
// (exec in its container); pause, resume and update are init-only requests.
const REFUSALS: Record<ProcessState, Partial<Record<ProcessOp, string>>> = {
  created: {
    pause: 'cannot pause task in created state',
    resume: 'cannot resume task in created state',
    // runc can exec into a created container (its namespaces exist); in hull nothing of it runs in the guest yet.
    exec: 'cannot exec in a created state',
  },
  running: {
    start: 'cannot start a running process',
    resume: 'cannot resume a running process',
    delete: 'cannot delete a running process',
  },
  paused: {
    start: 'cannot start a paused process',
    pause: 'cannot pause a paused container',
    delete: 'cannot delete a paused process',
    exec: 'cannot exec in a paused state',
  },
  stopped: {
    start: 'cannot start a stopped process',
    pause: 'cannot pause a stopped container',
    resume: 'cannot resume a stopped container',
    update: 'cannot update a stopped container',
    exec: 'cannot exec in a stopped state',
    resize: 'cannot resize a stopped container',
  },
  deleted: {
    start: 'cannot start a deleted process',
    pause: 'cannot pause a deleted process',
    resume: 'cannot resume a deleted process',
    delete: 'cannot delete a deleted process',
    update: 'cannot update a deleted process',
    exec: 'cannot exec in a deleted state',
    resize: 'cannot resize a deleted process',
  },
};

const STATUS: Record<ProcessState, Status> = {
  created: Status.CREATED,
  running: Status.RUNNING,
  paused: Status.PAUSED,
  stopped: Status.STOPPED,
  // containerd never asks about a deleted process (it is gone from the task's list); were it to, it has ended.
  deleted: Status.STOPPED,
};

/** ProcessLifecycle is one process's state; every change goes through `to`, every request through `check`. */
export class ProcessLifecycle {
  readonly kind: ProcessKind;
  #state: ProcessState = 'created';

  constructor(kind: ProcessKind) {
    this.kind = kind;
  }

  get state(): ProcessState {
    return this.#state;
  }

  /** status is the state in containerd's terms (StateResponse.status). */
  get status(): Status {
    return STATUS[this.#state];
  }

  /** ended: the process exited (or never will run): it has an exit status. */
  get ended(): boolean {
    return this.#state === 'stopped' || this.#state === 'deleted';
  }

  /** check throws the error containerd's runc shim gives for `op` in this state; nothing if allowed. */
  check(op: ProcessOp): void {
    if (this.kind === 'exec' && (op === 'pause' || op === 'resume' || op === 'update' || op === 'exec')) {
      throw new HullError('invalid_argument', `${op} is a request for a task, not for one of its execs`);
    }
    if (op === 'kill' && this.ended) throw new HullError('not_found', 'process already finished');
    // runc resizes an init's console in any state (it has one or not); only an exec's is refused once stopped.
    if (op === 'resize' && this.kind === 'init') return;
    const refusal = REFUSALS[this.#state][op];
    if (refusal) throw new HullError('failed_precondition', refusal);
  }

  /** to moves to `next`; a move the machine does not have is a bug in the caller, and throws. */
  to(next: ProcessState): void {
    if (!TRANSITIONS[this.#state].includes(next)) {
      throw new HullError('internal', `invalid state transition "${this.#state}" to "${next}"`);
    }
    this.#state = next;
  }
}

// Signals whose default action is to do nothing (signal(7)): they do not end a process.
const IGNORED_BY_DEFAULT = new Set([17 /* SIGCHLD */, 18 /* SIGCONT */, 23 /* SIGURG */, 28 /* SIGWINCH */]);

/**
 * createdKillStatus is the exit status of a process killed by `signal` before it was started, or
 * undefined when the signal would not end it. Under runc a created container's init is a process
 * waiting to exec, which the signal ends like any other; in hull nothing runs yet, so the shim ends it.
 */
export function createdKillStatus(signal: number): number | undefined {
  if (signal === 0 || IGNORED_BY_DEFAULT.has(signal)) return undefined;
  return 128 + signal;
}
