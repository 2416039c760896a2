/**
 * Starting a sandbox's own VM (when no pooled VM was adopted, pool-adopt.ts): its share, the pod's
 * cgroup, a leased jail uid, the pod's network, a clone of a template or a cold boot. A pool's VM
 * (SandboxOptions.pooled) gets a bare tap in the pool's netns and a lifeline instead of the pod's
 * network. Every resource is recorded in the sandbox's ledger before it is made.
 */
import { openSync, closeSync } from 'node:fs';
import { join } from 'node:path';
import { run } from '../common/run.js';
import { createTap } from '../net/index.js';
import type { Accel, VmHandle, VmJail, VmNetSpec, VmSpec } from '../vmm/index.js';
import { joinPodCgroup } from './host-cgroup.js';
import { DEFAULT_JAIL_UIDS, leaseJailUid } from './jail-uid.js';
import type { Ledger } from './ledger.js';
import { attachPodNetwork, type AttachedNetwork } from './pod-attach.js';
import type { SandboxOptions, StartupPhase } from './sandbox.js';
import { makeShare, type ShareLayout } from './share.js';

export interface StartedVm {
  vm: VmHandle;
  vmSpec: VmSpec;
  network?: AttachedNetwork;
  /** lifelineFd holds a pool VM's lifeline (SandboxOptions.pooled). */
  lifelineFd?: number;
}

export async function startSandboxVm(
  ledger: Ledger,
  layout: ShareLayout,
  options: SandboxOptions,
  size: { vcpus: number; memoryMiB: number; accel: 'auto' | Accel; bootTimeoutMs: number },
  lap: (name: StartupPhase['name']) => void,
): Promise<StartedVm> {
  const { stateDir } = ledger;
  const { image } = options;
  await makeShare(ledger, layout);
  if (options.cgroupsPath) await joinPodCgroup(ledger, options.cgroupsPath);
  const uid = options.jail === false ? undefined : await leaseJailUid(ledger, options.jail ?? DEFAULT_JAIL_UIDS);
  const jail: VmJail | undefined = uid !== undefined ? { uid, gid: uid } : undefined;
  const network = options.netns ? await attachPodNetwork(ledger, options.netns, jail) : undefined;
  let net: VmNetSpec | undefined = network?.vm;
  if (network) lap('network');
  let lifeline: string | undefined;
  let lifelineFd: number | undefined;
  try {
    if (options.pooled) {
      const { tapNetns, tapName } = options.pooled;
      ledger.record('', { kind: 'tap', netns: tapNetns, name: tapName });
      await createTap(tapNetns, tapName, jail);
      // A clone's NIC has its template's MAC whatever this says; the pod's comes with SetupNetwork.
      net = { tapName, mac: options.driver.templating?.guestMac ?? '02:00:00:00:00:01', netns: tapNetns };
      lifeline = join(stateDir, 'lifeline');
      ledger.record('', { kind: 'file', path: lifeline });
      await run('mkfifo', ['-m', '0600', lifeline]);
      // Held from before the VM starts: it lives while this process (or its adopter) holds it.
      lifelineFd = openSync(lifeline, 'r+');
    }
    const cold: VmSpec = {
      id: options.id, stateDir, sharedDir: layout.sharedDir, net, startTimeoutMs: size.bootTimeoutMs, ...(jail ? { jail } : {}), ...(lifeline ? { lifeline } : {}),
      vcpus: size.vcpus, memoryMiB: size.memoryMiB, kernel: image.kernel, initrd: image.initrd, rootDisk: image.rootDisk, accel: size.accel,
    };
    const clone = options.factory && image.id ? await options.factory.cloneOf(cold, image.id) : undefined;
    if (clone) lap('template');
    // The lifeline is how the VM is run, not what it is: a clone has it as its cold spec does.
    const vmSpec = clone ? { ...clone, ...(lifeline ? { lifeline } : {}) } : cold;
    const vm = await options.driver.start(vmSpec);
    // Recorded once it runs: a shim that dies before this line takes QEMU with it (parent-death
    // signal, or its lifeline).
    for (const pid of vm.hostPids) await ledger.recordProcess('', pid);
    lap('vmm');
    return { vm, vmSpec, ...(network ? { network } : {}), ...(lifelineFd !== undefined ? { lifelineFd } : {}) };
  } catch (e) {
    if (lifelineFd !== undefined) closeSync(lifelineFd);
    throw e;
  }
}
