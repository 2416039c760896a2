/**
 * P4 and P6 in one running pod per runtime (the pods' starts double as warm-ups):
 * - P4: CRI ExecSync `true`, timed on the host around the call; one untimed warm-up each, then `runs`
 *   rounds in RUNTIMES order;
 * - P6: CRI ExecSync `dd if=/dev/zero of=/bench.dat bs=1M count=256 conv=fsync` into the container's
 *   rootfs (runc: the overlayfs snapshot; gVisor: the same through its gofer; hull: the same shared
 *   into the VM over virtio-9p), timed on the host around the exec (so it includes one exec: see P4),
 *   `runs` rounds in RUNTIMES order (the fsync's time varies a lot on this disk: more samples), each
 *   after an untimed host `sync` (no writeback of earlier work inside the window), the file removed
 *   (untimed) after each.
 */
import { spawnSync } from 'node:child_process';
import type { CriClient } from '../test/harness/cri.js';
import { removePodsOrThrow, startPod, type Pod, type PodContext } from './pods.js';
import { RUNTIMES, type RuntimeName } from './runtimes.js';
import { round, summarize, type Summary } from './stats.js';

export const WRITE_MIB = 256;
const DD = ['dd', 'if=/dev/zero', 'of=/bench.dat', 'bs=1M', `count=${WRITE_MIB}`, 'conv=fsync'];

export interface ExecResult {
  execTrueMs: Record<RuntimeName, Summary>;
  writeMiBps: Record<RuntimeName, Summary>;
  writeMs: Record<RuntimeName, Summary>;
}

async function timedExec(cri: CriClient, pod: Pod, cmd: string[]): Promise<number> {
  const started = performance.now();
  const r = await cri.execSync(pod.containerId!, cmd);
  const ms = performance.now() - started;
  if (r.exitCode !== 0) throw new Error(`${cmd.join(' ')} in the ${pod.runtime} pod exited ${r.exitCode}: ${r.stderr.toString().trim()}`);
  return ms;
}

export async function measureExec(ctx: PodContext, runs: number): Promise<ExecResult> {
  const pods = {} as Record<RuntimeName, Pod>;
  for (const name of RUNTIMES) pods[name] = await startPod(ctx, name, `exec-${name}`);
  const execTrue: Record<RuntimeName, number[]> = { runc: [], gvisor: [], hull: [] };
  const write: Record<RuntimeName, number[]> = { runc: [], gvisor: [], hull: [] };
  for (const name of RUNTIMES) await timedExec(ctx.cri, pods[name], ['true']);
  for (let i = 0; i < runs; i++) for (const name of RUNTIMES) execTrue[name].push(await timedExec(ctx.cri, pods[name], ['true']));
  for (let i = 0; i < runs; i++) {
    for (const name of RUNTIMES) {
      spawnSync('sync');
      write[name].push(await timedExec(ctx.cri, pods[name], DD));
      await timedExec(ctx.cri, pods[name], ['rm', '-f', '/bench.dat']);
    }
  }
  await removePodsOrThrow(ctx, Object.values(pods));
  const mibps = (ms: number[]): Summary => summarize(ms.map((v) => round(WRITE_MIB / (v / 1000), 1)));
  return {
    execTrueMs: { runc: summarize(execTrue.runc), gvisor: summarize(execTrue.gvisor), hull: summarize(execTrue.hull) },
    writeMiBps: { runc: mibps(write.runc), gvisor: mibps(write.gvisor), hull: mibps(write.hull) },
    writeMs: { runc: summarize(write.runc, 0), gvisor: summarize(write.gvisor, 0), hull: summarize(write.hull, 0) },
  };
}
