/**
 * The pool of warm VMs against real CRI pods in a private containerd (pool_size 1): a pod's shim
 * starts the pool's owner on demand; the next pod adopts a warm VM and behaves as any pod (its
 * hostname, exec, exit codes, network address, the guest kernel); two adopted pods never share
 * random output, nor any file, process or name of the warm-up's throwaway containers; a ready VM
 * that dies is replaced; killing the owner ends its ready VMs at once (their lifeline), leaves
 * adopted pods running, and the next pod still starts, with the next owner releasing what the
 * killed one left. Nothing is left once the pods and the owner are gone.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { appendFileSync, existsSync, readFileSync, readdirSync } from 'node:fs';
import { release } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { pidAlive, processStartTime } from '../../src/common/process.js';
import { DEFAULT_CONFIG } from '../../src/config/index.js';
import { currentGuestImage } from '../../src/guest/index.js';
import { getFromShim } from '../../src/monitor/index.js';
import type { PoolStatus } from '../../src/pool/index.js';
import { poolCgroup } from '../../src/pool/owner.js';
import { startContainerd, type PrivateContainerd } from '../harness/containerd.js';
import { prepareHullRuntime, stopAndAssertClean } from '../harness/hull-runtime.js';
import { CriClient, containerConfig, podConfig, type PodSandboxConfig } from '../harness/cri.js';
import { BUSYBOX_REF, ensureTestImages } from '../harness/oci-image.js';

const HULL = fileURLToPath(new URL('../../../bin/hull', import.meta.url));
// HULL_TEST_GUEST_IMAGES_DIR: a guest images directory of its own (where other work rebuilds the shared one).
const imagesDir = process.env['HULL_TEST_GUEST_IMAGES_DIR'];
const hull = prepareHullRuntime({ name: 'pool', poolSize: 1 });
appendFileSync(hull.configPath, `debug_console = true\n${imagesDir ? `guest_images_dir = "${imagesDir}"\n` : ''}`);
const READY_TIMEOUT_MS = 180_000;

let ctrd: PrivateContainerd;
let cri: CriClient;
const pods: string[] = [];

interface Pod {
  id: string;
  container: string;
  config: PodSandboxConfig;
}

before(async () => {
  assert.ok(await currentGuestImage(imagesDir), 'no guest image: run `make image` first');
  ctrd = await startContainerd({ runtimes: hull.runtimes, extraPath: hull.shimDir });
  await ensureTestImages(ctrd);
  cri = await CriClient.connect(ctrd.address, { deadlineMs: 120_000 });
});

after(async () => {
  for (const id of pods) {
    await cri.stopPodSandbox(id).catch(() => {});
    await cri.removePodSandbox(id).catch(() => {});
  }
  cri?.close();
  const cgroup = poolCgroup(hull.poolDir);
  await stopAndAssertClean(ctrd, hull);
  const cgroupsLeft = readdirSync('/sys/fs/cgroup').filter((h) => existsSync(join('/sys/fs/cgroup', h, cgroup)));
  assert.deepEqual(cgroupsLeft, [], `the pool's cgroup ${cgroup} was left`);
});

/** hullCommand runs `hull COMMAND... --config PATH ARGS...` (the config right after the command's words). */
function hullCommand(command: string[], args: string[] = []): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [HULL, ...command, '--config', hull.configPath, ...args], { encoding: 'utf8' });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

function poolStatus(): PoolStatus | null {
  const r = hullCommand(['pool', 'status'], ['--json']);
  assert.equal(r.code, 0, r.stderr);
  return JSON.parse(r.stdout) as PoolStatus | null;
}

/** waitForReady waits until the pool has a ready VM (and `since` lent or replaced VMs, when given). */
async function waitForReady(until: (s: PoolStatus) => boolean = () => true): Promise<PoolStatus> {
  const deadline = Date.now() + READY_TIMEOUT_MS;
  for (;;) {
    const s = poolStatus();
    if (s && s.shapes.some((shape) => shape.ready >= 1) && until(s)) return s;
    assert.ok(Date.now() < deadline, `the pool had no ready VM within ${READY_TIMEOUT_MS} ms: ${JSON.stringify(s)}`);
    await sleep(500);
  }
}

/** readyVms are the pool's VM directories with their QEMU pids (the driver writes the host's pid). */
function vmDirs(): Map<string, number> {
  const dir = join(hull.poolDir, 'vms');
  const out = new Map<string, number>();
  for (const name of existsSync(dir) ? readdirSync(dir) : []) {
    const pid = Number(readFileSync(join(dir, name, 'vm', 'qemu.pid'), 'utf8').trim());
    out.set(name, pid);
  }
  return out;
}

async function startPod(name: string): Promise<Pod> {
  const config = podConfig({ name, namespace: 'hull-pool', hostname: `${name}-host` });
  const id = await cri.runPodSandbox(config, 'hull');
  pods.push(id);
  const container = await cri.createContainer(id, containerConfig({ name: 'app', image: BUSYBOX_REF, command: ['sleep', '3600'], env: { POD_ENV: name } }), config);
  await cri.startContainer(container);
  return { id, container, config };
}

async function startupPhases(pod: Pod): Promise<string[]> {
  return (await shimStatus(pod)).startup.map((p) => p.name);
}

async function shimStatus(pod: Pod): Promise<{ startup: Array<{ name: string }>; host: { qemu: { pid: number } | null } }> {
  return JSON.parse((await getFromShim(join(hull.runRoot, pod.id, 'debug.sock'), '/status', { timeoutMs: 10_000 })).toString());
}

async function exec(pod: Pod, cmd: string[]): Promise<{ exitCode: number; stdout: string }> {
  const r = await cri.execSync(pod.container, cmd);
  return { exitCode: r.exitCode, stdout: r.stdout.toString() };
}

function guest(pod: Pod, script: string): string {
  const r = hullCommand(['console'], [pod.id, '--', 'sh', '-c', script]);
  assert.equal(r.code, 0, r.stderr);
  return r.stdout;
}

describe('the VM pool', () => {
  let adopted: Pod;
  let second: Pod;

  it('is started by the first pod, and the next pod adopts a warm VM and behaves as any pod', async () => {
    const first = await startPod('pool-first');
    assert.ok(!(await startupPhases(first)).includes('pool'), 'no pool ran before the first pod');
    await waitForReady();
    adopted = await startPod('pool-adopted');
    assert.ok((await startupPhases(adopted)).includes('pool'), `the pod did not adopt a pooled VM: ${await startupPhases(adopted)}`);
    assert.equal(poolStatus()?.lent, 1);
    assert.deepEqual(await exec(adopted, ['hostname']), { exitCode: 0, stdout: 'pool-adopted-host\n' });
    assert.equal((await exec(adopted, ['sh', '-c', 'exit 3'])).exitCode, 3);
    const kernel = (await exec(adopted, ['uname', '-r'])).stdout.trim();
    assert.notEqual(kernel, release());
    const status = await cri.podSandboxStatus(adopted.id);
    const ip = status.status.network?.ip ?? '';
    assert.match(ip, /^\d+\.\d+\.\d+\.\d+$/);
    // The guest has the pod's address on its interface (the tap came from the pool's netns).
    assert.match((await exec(adopted, ['ip', '-4', 'addr'])).stdout, new RegExp(`inet ${ip.replace(/\./g, '\\.')}/`));
    // The VM's QEMU is counted in the pod's cgroup (the pool charged it before).
    const qemu = (await shimStatus(adopted)).host.qemu?.pid ?? 0;
    assert.ok(qemu > 0);
    assert.ok(!readFileSync(`/proc/${qemu}/cgroup`, 'utf8').includes(poolCgroup(hull.poolDir)), 'QEMU is still in the pool\'s cgroup');
    // The pool's cgroup is bounded by pool_memory_limit, and its memory is reported.
    const limitFile = join('/sys/fs/cgroup/memory', poolCgroup(hull.poolDir), 'memory.limit_in_bytes');
    if (existsSync(limitFile)) assert.equal(Number(readFileSync(limitFile, 'utf8')), DEFAULT_CONFIG.poolMemoryLimitMiB * 1024 * 1024);
    const status2 = poolStatus()!;
    assert.equal(status2.memoryLimitBytes, DEFAULT_CONFIG.poolMemoryLimitMiB * 1024 * 1024);
    assert.ok(status2.memoryBytes === null || status2.memoryBytes > 0);
  });

  it('gives two adopted pods different random output and nothing of the warm-up', async () => {
    await waitForReady((s) => s.lent === 1);
    second = await startPod('pool-second');
    assert.ok((await startupPhases(second)).includes('pool'));
    const random = async (pod: Pod) => (await exec(pod, ['sh', '-c', 'head -c 32 /dev/urandom | od -An -tx1'])).stdout.replace(/\s+/g, '');
    const [a, b] = [await random(adopted), await random(second)];
    assert.equal(a.length, 64);
    assert.notEqual(a, b, 'two pods from the pool read the same random bytes');
    for (const pod of [adopted, second]) {
      // Processes, crun state, bundles, shared rootfs: none of the throwaway containers'.
      // (The patterns are written so that this very command does not match them.)
      const seen = guest(pod, 'cat /proc/[0-9]*/cmdline | tr "\\0" " " | grep -e "hull-warm[-]up" -e "sleep 6[0]0"; ls /run/crun /run/hull/containers /run/hull/shared; hostname; grep -rl "hull-warm[-]up" /run/crun /run/hull/containers /tmp 2>/dev/null; true');
      assert.doesNotMatch(seen, /hull-warm-up|sleep 600/, seen);
      assert.match(seen, new RegExp(`${pod.config.hostname}`));
      const env = (await exec(pod, ['cat', '/proc/1/environ'])).stdout;
      assert.match(env, new RegExp(`POD_ENV=${pod.config.metadata.name}`));
    }
  });

  it('replaces a ready VM that dies', async () => {
    const before = await waitForReady((s) => s.lent === 2);
    const ready = [...vmDirs()].filter(([, pid]) => pidAlive(pid));
    // The adopted VMs' directories are there too: the ready one is the newest QEMU.
    const [name, pid] = ready.sort((x, y) => Number(processStartTime(y[1])) - Number(processStartTime(x[1])))[0]!;
    process.kill(pid, 'SIGKILL');
    const after = await waitForReady((s) => s.replaced > before.replaced);
    assert.equal(after.shapes.find((s) => s.ready >= 1)?.ready, 1);
    const deadline = Date.now() + 30_000;
    while (existsSync(join(hull.poolDir, 'vms', name))) {
      assert.ok(Date.now() < deadline, `the dead VM's directory ${name} was not removed`);
      await sleep(200);
    }
  });

  it('ends its ready VMs when its owner is killed, keeps adopted pods running, and the next pod starts', async () => {
    await waitForReady();
    const [ownerPid] = readFileSync(join(hull.poolDir, 'owner.pid'), 'utf8').trim().split(' ');
    const before = vmDirs();
    const running = new Set<string>();
    for (const [name, pid] of before) if (pidAlive(pid)) running.add(name);
    process.kill(Number(ownerPid), 'SIGKILL');
    // The ready VM lived on the owner's lifeline only; adopted ones on their shims'.
    const deadline = Date.now() + 30_000;
    let alive: string[] = [];
    for (;;) {
      alive = [...before].filter(([, pid]) => pidAlive(pid)).map(([name]) => name);
      if (alive.length === running.size - 1) break;
      assert.ok(Date.now() < deadline, `ready VMs outlived their owner: ${alive}`);
      await sleep(200);
    }
    const orphan = [...running].find((name) => !alive.includes(name))!;
    assert.deepEqual(await exec(adopted, ['echo', 'still here']), { exitCode: 0, stdout: 'still here\n' });
    assert.deepEqual(await exec(second, ['echo', 'still here']), { exitCode: 0, stdout: 'still here\n' });
    // The next pod starts (cloned: no owner runs), and starts the next owner, which releases the dead VM's directory.
    const next = await startPod('pool-after-kill');
    assert.deepEqual(await exec(next, ['echo', 'ok']), { exitCode: 0, stdout: 'ok\n' });
    await waitForReady((s) => String(s.pid) !== ownerPid);
    assert.ok(!existsSync(join(hull.poolDir, 'vms', orphan)), `the killed owner's ready VM ${orphan} was not released`);
  });
});
