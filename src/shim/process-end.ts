/**
 * ProcessEnd: a process ends exactly once. Its exit is recorded by whichever comes first: the guest's
 * report (or the VM's end), or, once SIGKILL was sent, a deadline that records it as killed. The guest
 * is hostile and may be frozen or lying: it must not keep a killed process, and so its pod, from
 * ending. A report that comes after the deadline is dropped, so containerd sees one exit.
 */
import { HullError } from '../errors/index.js';

/**
 * KILL_EXIT_DEADLINE_MS is how long the guest has to report a SIGKILLed process's exit. A live guest
 * reports it in milliseconds (the kernel kills at once); 10 s leaves a loaded TCG guest ample room,
 * yet ends the process well within kubelet's 2-minute runtime request timeout.
 */
export const KILL_EXIT_DEADLINE_MS = 10_000;

/**
 * SIGNAL_CALL_TIMEOUT_MS bounds the agent call that delivers a signal. A live agent answers in
 * milliseconds; an agent that does not answer must not make containerd's Kill (and with it
 * StopContainer and StopPodSandbox) fail or hang.
 */
export const SIGNAL_CALL_TIMEOUT_MS = 5_000;

export const SIGKILL = 9;
/** KILLED_STATUS is the exit status of a process killed by SIGKILL, as a shell and containerd report it. */
export const KILLED_STATUS = 128 + SIGKILL;

/** RecordExit records the exit and tells containerd; `forced` when the deadline, not the guest, ended it. */
export type RecordExit = (status: number, forced: boolean) => Promise<void>;

export class ProcessEnd {
  readonly #record: RecordExit;
  #ended = false;
  #deadline: NodeJS.Timeout | undefined;

  constructor(record: RecordExit) {
    this.#record = record;
  }

  get ended(): boolean {
    return this.#ended;
  }

  /** end records `status` unless the process has already ended; resolves once recorded. */
  end(status: number): Promise<void> {
    return this.#end(status, false);
  }

  /** killed is true once a SIGKILL was sent (the deadline is armed, or was). */
  get killed(): boolean {
    return this.#deadline !== undefined;
  }

  /**
   * armKillDeadline is called when SIGKILL is sent: if nothing ended the process `deadlineMs` from now,
   * it ends with KILLED_STATUS. A second SIGKILL does not postpone the first one's deadline.
   */
  armKillDeadline(deadlineMs = KILL_EXIT_DEADLINE_MS): void {
    if (this.#ended || this.#deadline) return;
    // RecordExit reports its own failures; nothing is left to catch here.
    this.#deadline = setTimeout(() => void this.#end(KILLED_STATUS, true).catch(() => {}), deadlineMs);
    this.#deadline.unref(); // the shim's server keeps the process alive, not this timer
  }

  /** dispose drops a pending deadline without ending the process (it is being deleted). */
  dispose(): void {
    clearTimeout(this.#deadline);
  }

  #end(status: number, forced: boolean): Promise<void> {
    if (this.#ended) return Promise.resolve();
    this.#ended = true;
    clearTimeout(this.#deadline);
    return this.#record(status, forced);
  }
}

/**
 * bounded settles like `promise`, or fails with deadline_exceeded after `ms`. The call behind
 * `promise` goes on (its own timeout ends it); its late failure is ignored.
 */
export function bounded<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timedOut = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new HullError('deadline_exceeded', `${what} did not finish within ${ms} ms`)), ms);
  });
  promise.catch(() => {});
  return Promise.race([promise, timedOut]).finally(() => clearTimeout(timer));
}
