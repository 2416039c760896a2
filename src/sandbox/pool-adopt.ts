/**
 * A pod's VM taken from a pool of warm VMs (src/pool keeps them) instead of started for it.
 *
 * A pooled VM is a clone that already ran the hot guest path once (a throwaway container created,
 * started, exec'd into and removed), so TCG's translations exist before the pod asks. It runs on a
 * lifeline (VmSpec.lifeline): a FIFO whose write end keeps it alive. Adopting one, in this order:
 * record it in the sandbox's ledger (its own ledger, in its directory, is then replayed with the
 * sandbox's), hold its lifeline (from then on the VM dies with this process, as a started one
 * would), tell the pool to let go, move its host processes into the pod's cgroup and record them,
 * move its tap into the pod's netns, and attach to its QMP, console and agent. The caller then
 * reseeds the guest and gives it the pod's identity (SetupSandbox), as it does for a clone.
 */
import { closeSync, openSync } from 'node:fs';
import type { Accel, RunningVm, VmDriver, VmHandle, VmSpec } from '../vmm/index.js';
import { joinPodCgroup } from './host-cgroup.js';
import type { Ledger, LedgerLog } from './ledger.js';
import { attachPodNetwork, type AttachedNetwork } from './pod-attach.js';

/** PoolShape is what a pooled VM must be to serve a sandbox: the template shape it was cloned from. */
export interface PoolShape {
  imageId: string;
  vcpus: number;
  memoryMiB: number;
  accel: 'auto' | Accel;
  jailed: boolean;
}

/** PooledVm is a warm VM the pool lent to one sandbox. */
export interface PooledVm {
  /** dir is the VM's state directory: its ledger, share, jail and sockets. */
  dir: string;
  /** spec is what the VM was started from (host paths; `lifeline` is set). */
  spec: VmSpec;
  running: RunningVm;
  /** tap is the VM's NIC backend, down, in the pool's netns. */
  tap: { netns: string; name: string };
  /** handOver tells the pool that the sandbox holds the lifeline and has recorded the VM: the pool forgets it. */
  handOver(): Promise<void>;
  /** giveBack tells the pool that the sandbox did not take the VM: the pool ends it. */
  giveBack(): void;
}

/** VmPool lends warm VMs; claim resolves undefined when none of `shape` is ready (the sandbox starts its own). */
export interface VmPool {
  claim(shape: PoolShape, sandboxId: string): Promise<PooledVm | undefined>;
}

export interface AdoptedVm {
  vm: VmHandle;
  /** lifelineFd holds the VM's lifeline open for writing: closing it ends the VM. */
  lifelineFd: number;
  network?: AttachedNetwork;
}

/** adoptPooledVm takes `pooled` over for the sandbox whose ledger is `ledger` (see the module comment). */
export async function adoptPooledVm(ledger: Ledger, pooled: PooledVm, options: { driver: VmDriver; netns?: string; cgroupsPath?: string; log: LedgerLog }): Promise<AdoptedVm> {
  const { driver } = options;
  if (driver.adopt === undefined || pooled.spec.lifeline === undefined) {
    pooled.giveBack();
    throw new Error(`the ${driver.name} driver cannot adopt a running VM`);
  }
  try {
    ledger.record('', { kind: 'pool-vm', dir: pooled.dir });
  } catch (e) {
    pooled.giveBack();
    throw e;
  }
  // O_RDWR: a FIFO opens at once so, and this process is one more writer keeping the VM alive.
  const lifelineFd = openSync(pooled.spec.lifeline, 'r+');
  try {
    // A pool that went meanwhile has let go already: the VM is ours either way.
    await pooled.handOver().catch((e: Error) => options.log(`pool hand-over of ${pooled.dir}: ${e.message}`));
    const { running } = pooled;
    const pids = [...running.chain, running.pid];
    if (options.cgroupsPath) await joinPodCgroup(ledger, options.cgroupsPath, pids);
    // Recorded here too, so that they are gone before the pod's cgroup is removed.
    for (const pid of pids) await ledger.recordProcess('', pid);
    const network = options.netns ? await attachPodNetwork(ledger, options.netns, pooled.spec.jail, pooled.tap) : undefined;
    // The VM's NIC is the one it has: the pod's address reaches the guest through SetupNetwork.
    const vm = await driver.adopt(pooled.spec, running);
    return { vm, lifelineFd, ...(network ? { network } : {}) };
  } catch (e) {
    closeSync(lifelineFd);
    throw e;
  }
}
