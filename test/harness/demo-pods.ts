/**
 * demo-pods — the AKS Pod Sandboxing scenario of `make demo`, driven through CRI the way kubelet drives
 * it: a private containerd with two runtimes (runc, the default, and hull), a "trusted" pod on runc and
 * an "untrusted" pod with `runtimeClassName: hull` (CRI handler `hull`), same busybox image, both
 * running `sleep inf`. It execs `uname -r` in each through CRI ExecSync, prints them next to the host's,
 * then removes both pods, stops containerd and checks that nothing is left: no shim, no QEMU, no mount,
 * an empty run root.
 *
 * Exits 1 when anything fails or the untrusted pod sees the host kernel; cleans up either way (also on
 * Ctrl-C). Needs root, containerd, runc and a built guest image (`make image`).
 */
import { spawnSync } from 'node:child_process';
import { release } from 'node:os';
import { currentGuestImage } from '../../src/guest/index.js';
import { entriesIn, mountsUnder, qemuPidsUnder } from '../helpers/leaks.js';
import { findShims, startContainerd, type PrivateContainerd } from './containerd.js';
import { CriClient, containerConfig, podConfig, type PodSandboxConfig } from './cri.js';
import { prepareHullRuntime } from './hull-runtime.js';
import { BUSYBOX_REF, ensureTestImages } from './oci-image.js';

const LABEL = 30;

const line = (label: string, value: string): void => console.log(`${label.padEnd(LABEL)} ${value}`);



/** firstLine keeps error messages to one short line (grpc-js appends resolution notes). */
const firstLine = (message: string): string => message.split('\n')[0]!.replace(/\. Last error: .*/, '').slice(0, 160);

/** Interrupted rejects once SIGINT or SIGTERM arrives, so that a Ctrl-C still runs the cleanup. */
let interrupt: (signal: string) => void = () => undefined;
const interrupted = new Promise<never>((_, reject) => {
  interrupt = (signal) => reject(new Error(`interrupted by ${signal}`));
});
interrupted.catch(() => undefined);
for (const signal of ['SIGINT', 'SIGTERM'] as const) process.once(signal, () => interrupt(signal));
const step = <T>(p: Promise<T>): Promise<T> => Promise.race([p, interrupted]);

interface Pod {
  name: string;
  handler: string;
  config: PodSandboxConfig;
  podId?: string;
  containerId?: string;
}

async function main(): Promise<number> {
  const image = await currentGuestImage();
  if (!image) throw new Error('no guest image: run `make image` first');

  const hullRuntime = prepareHullRuntime({ name: 'demo' });
  const { work, runRoot, shimDir } = hullRuntime;

  let ctrd: PrivateContainerd | undefined;
  let cri: CriClient | undefined;
  const pods: Pod[] = [
    { name: 'trusted', handler: '', config: podConfig({ name: 'trusted', namespace: 'demo' }) },
    { name: 'untrusted', handler: 'hull', config: podConfig({ name: 'untrusted', namespace: 'demo' }) },
  ];
  const failures: string[] = [];
  try {
    ctrd = await step(startContainerd({ runtimes: hullRuntime.runtimes, extraPath: shimDir }));
    await step(ensureTestImages(ctrd));
    cri = await step(CriClient.connect(ctrd.address));
    line('private containerd:', `${ctrd.dir} (runtimes: runc default, hull)`);

    for (const pod of pods) {
      pod.podId = await step(cri.runPodSandbox(pod.config, pod.handler));
      pod.containerId = await step(cri.createContainer(pod.podId, containerConfig({ name: 'app', image: BUSYBOX_REF, command: ['sleep', 'inf'] }), pod.config));
      await step(cri.startContainer(pod.containerId));
    }
    const kernels: string[] = [];
    for (const pod of pods) {
      const r = await step(cri.execSync(pod.containerId!, ['uname', '-r']));
      if (r.exitCode !== 0) throw new Error(`uname -r in the ${pod.name} pod exited ${r.exitCode}: ${r.stderr.toString().trim()}`);
      kernels.push(r.stdout.toString().trim());
    }
    const [trusted, untrusted] = kernels as [string, string];
    const vms = qemuPidsUnder(runRoot);
    line('host kernel (uname -r):', release());
    line('trusted pod (runc):', trusted);
    line('untrusted pod (hull):', untrusted);
    line('QEMU processes for the pods:', `${vms.length} (pid ${vms.join(', ') || '-'}, sandbox ${pods[1]!.podId!.slice(0, 12)}…)`);
    if (trusted !== release()) failures.push(`the runc pod saw ${trusted}, not the host kernel ${release()}`);
    if (untrusted === release()) failures.push('the hull pod saw the host kernel');
    if (untrusted !== image.kernelRelease) failures.push(`the hull pod saw ${untrusted}, not the guest kernel ${image.kernelRelease}`);
    if (vms.length !== 1) failures.push(`expected one QEMU process for the hull pod, found ${vms.length}`);
  } catch (e) {
    failures.push((e as Error).message);
    if (ctrd) console.error(`--- containerd log (tail) ---\n${ctrd.logTail(15)}`);
  } finally {
    // Remove what was made, in reverse; each step on its own so one failure does not skip the rest.
    for (const pod of [...pods].reverse()) {
      const attempt = async (what: string, fn: () => Promise<void>): Promise<void> => {
        try {
          await fn();
        } catch (e) {
          failures.push(`${what} (${pod.name}): ${firstLine((e as Error).message)}`);
        }
      };
      if (cri && pod.containerId) {
        const id = pod.containerId;
        await attempt('stop container', () => cri!.stopContainer(id, 0));
        await attempt('remove container', () => cri!.removeContainer(id));
      }
      if (cri && pod.podId) {
        const id = pod.podId;
        await attempt('stop pod', () => cri!.stopPodSandbox(id));
        await attempt('remove pod', () => cri!.removePodSandbox(id));
      }
    }
    // Pods whose creation was cut short (Ctrl-C) have no id here: sweep this private containerd's rest.
    if (cri) {
      const rest = await cri.listPodSandbox().catch(() => []);
      for (const p of rest) {
        failures.push(`pod ${p.metadata.name} was still there`);
        await cri.stopPodSandbox(p.id).catch(() => undefined);
        await cri.removePodSandbox(p.id).catch(() => undefined);
      }
    }
    const vmsAfterRemove = qemuPidsUnder(runRoot);
    cri?.close();
    const shims = ctrd ? findShims(ctrd.address) : [];
    const report = await ctrd?.stop();
    const leftVms = qemuPidsUnder(runRoot);
    const leftState = entriesIn(runRoot);
    const leftMounts = [...mountsUnder(work), ...mountsUnder(runRoot)];
    if (vmsAfterRemove.length > 0) failures.push(`QEMU still running after the pods were removed: ${vmsAfterRemove.join(', ')}`);
    if (shims.length > 0) failures.push(`shims still running after the pods were removed: ${shims.map((s) => s.pid).join(', ')}`);
    if (report && report.leakedShims.length > 0) failures.push(`containerd stop had to kill shims: ${report.leakedShims.map((s) => s.pid).join(', ')}`);
    if (report && report.leakedMounts.length > 0) failures.push(`containerd stop had to unmount: ${report.leakedMounts.join(', ')}`);
    if (leftVms.length > 0) failures.push(`QEMU processes left: ${leftVms.join(', ')}`);
    if (leftState.length > 0) failures.push(`run root not empty: ${leftState.join(', ')}`);
    if (leftMounts.length > 0) failures.push(`mounts left: ${leftMounts.join(', ')}`);
    // A VM that outlived its shim is still ours (its state is under our unique run root): end it by pid.
    for (const pid of leftVms) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // Already gone.
      }
    }
    // Mounts a killed shim left in its sandbox dir (container rootfs) are ours too: detach them first.
    for (const m of mountsUnder(runRoot).sort((a, b) => b.length - a.length)) spawnSync('umount', ['-l', m]);
    hullRuntime.remove();
    line('after removing both pods:', `${leftVms.length} QEMU, ${shims.length} shims, run root ${leftState.length === 0 ? 'empty' : `has ${leftState.length} entries`}, containerd stopped`);
  }
  for (const f of failures) console.error(`demo: ${f}`);
  return failures.length === 0 ? 0 : 1;
}

process.exitCode = await main().catch((e: unknown) => {
  console.error(`demo: ${(e as Error).message}`);
  return 1;
});
// grpc-js and stray timers must not keep the demo alive once it is done.
process.exit();
