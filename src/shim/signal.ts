/**
 * signalInGuest delivers a Kill's signal to a started process in the guest, bounded: the guest is
 * hostile and may not answer. A SIGKILL arms the kill deadline of every process it ends first
 * (process-end.ts), so those end whatever the guest does.
 */
import { isDeadlineExceeded, isUnavailable } from '../errors/index.js';
import type { Sandbox } from '../sandbox/index.js';
import { SIGKILL, SIGNAL_CALL_TIMEOUT_MS, bounded } from './process-end.js';
import type { ContainerRecord, ProcessRecord } from './task-records.js';

export async function signalInGuest(
  sandbox: Sandbox,
  container: ContainerRecord,
  proc: ProcessRecord,
  req: { signal: number; all: boolean },
  log: (line: string) => void,
): Promise<void> {
  const name = proc.execId ? `${container.id}/${proc.execId}` : container.id;
  // Armed before the call: the guest may answer neither it nor with the exit.
  if (req.signal === SIGKILL) for (const killed of killedBy(container, proc, req.all)) killed.ending.armKillDeadline();
  try {
    await bounded(sandbox.signal(container.id, proc.execId, req.signal, req.all), SIGNAL_CALL_TIMEOUT_MS, `Signal ${req.signal} to ${name} in the guest`);
  } catch (e) {
    // A Kill that fails because the guest did not answer fails StopContainer and StopPodSandbox, which
    // kubelet retries for ever. After SIGKILL the deadline ends the process whatever the guest says;
    // another signal it did not confirm is one the process ignored (callers escalate to SIGKILL).
    if (req.signal !== SIGKILL && !isDeadlineExceeded(e) && !isUnavailable(e)) throw e;
    log(`signal ${req.signal} to ${name}: ${(e as Error).message}`);
  }
}

/** killedBy lists the processes a SIGKILL ends: with `all` on the init, its container's too. */
function killedBy(container: ContainerRecord, proc: ProcessRecord, all: boolean): ProcessRecord[] {
  const procs = all && proc === container.init ? [container.init, ...container.execs.values()] : [proc];
  return procs.filter((p) => p.state.state === 'running' || p.state.state === 'paused');
}
