/**
 * TaskLocks serializes the requests on one task (a container and its execs), as the per-process
 * mutexes of containerd's runc shim do: ttrpc serves a connection's requests concurrently, and a
 * Kill arriving while a Start is still in the guest must see the Start's outcome, not race it.
 * Requests on different tasks run side by side. Requests that only read (State, Wait, Stats, Pids)
 * take no lock: Wait blocks for a process's life, and State has a 2 s deadline in containerd.
 */
import { HullError } from '../errors/index.js';

export class TaskLocks {
  // task id -> the tail of its queue; an entry is dropped when its queue runs empty.
  readonly #tails = new Map<string, Promise<void>>();

  /** run runs `fn` once every earlier request on `id` has settled; it settles like `fn`. */
  run<T>(id: string, fn: () => Promise<T>): Promise<T> {
    const previous = this.#tails.get(id) ?? Promise.resolve();
    const result = previous.then(fn);
    const tail = result.then(
      () => {},
      () => {},
    );
    this.#tails.set(id, tail);
    void tail.then(() => {
      if (this.#tails.get(id) === tail) this.#tails.delete(id);
    });
    return result;
  }

  /** busy tells whether a request on `id` is running or waiting (for tests). */
  busy(id: string): boolean {
    return this.#tails.has(id);
  }
}

/**
 * SandboxGate lets one Create boot the pod's VM while the others that arrive meanwhile wait for it:
 * two Creates racing before the VM is up must not boot two VMs. A waiter joins the VM once it is up,
 * or fails with the reason the boot failed.
 */
export class SandboxGate {
  #booting: { id: string; done: Promise<void> } | undefined;

  /**
   * claim is called, synchronously, by a Create that finds no VM: it returns `boot` (with `settle`,
   * to be called once the boot succeeded or failed) when no boot is under way, else the boot to wait for.
   */
  claim(id: string): { boot: true; settle: (error?: Error) => void } | { boot: false; wait: () => Promise<void> } {
    const booting = this.#booting;
    if (booting) {
      return {
        boot: false,
        wait: () =>
          booting.done.catch((e: Error) => {
            throw new HullError('failed_precondition', `No pod VM to join: the Create of task "${booting.id}", which was starting it, failed: ${e.message}`, { cause: e });
          }),
      };
    }
    let settle!: (error?: Error) => void;
    const done = new Promise<void>((resolve, reject) => (settle = (error) => (error ? reject(error) : resolve())));
    done.catch(() => {}); // no waiter is not an unhandled rejection
    const entry = { id, done };
    this.#booting = entry;
    return {
      boot: true,
      settle: (error) => {
        if (this.#booting === entry) this.#booting = undefined;
        settle(error);
      },
    };
  }
}
