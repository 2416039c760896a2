/**
 * Operating hull on a node, through a real private containerd and CRI pods: `hull monitor` serves
 * one Prometheus /metrics for every sandbox (parsed with a strict text-format parser), with each
 * family labelled by pod; values move (CPU under load) and match /proc (QEMU's PSS); a deleted pod
 * is gone from the next scrape; a shim that hangs is reported as a failure and does not stall the
 * scrape. `hull ps --json` lists exactly the live sandboxes. The shim's log lines reach containerd's
 * log as JSON with the pod's labels, and a VM that dies leaves its console tail there.
 * It also measures a scrape with as many pods as this machine runs (reported, never asserted).
 */
import assert from 'node:assert/strict';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { appendFileSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { currentGuestImage } from '../../src/guest/index.js';
import { findShims, startContainerd, type PrivateContainerd } from '../harness/containerd.js';
import { prepareHullRuntime, stopAndAssertClean } from '../harness/hull-runtime.js';
import { BUSYBOX_REF, ensureTestImages } from '../harness/oci-image.js';
import { CriClient, containerConfig, podConfig, type PodSandboxConfig } from '../harness/cri.js';
import { parsePromText, type PromFamily } from '../harness/prom-text.js';
import { getFromShim, listSandboxDirs, readAll } from '../../src/monitor/index.js';
import { processAlive, qemuPidsUnder } from '../helpers/leaks.js';

const HULL = fileURLToPath(new URL('../../../bin/hull', import.meta.url));
const SHIM_TIMEOUT_MS = 3000;
const MIB = 1024 * 1024;
const hullRuntime = prepareHullRuntime({ name: 'monitor' });
const { runRoot, statusDir, configPath } = hullRuntime;
// HULL_TEST_GUEST_IMAGES_DIR: a guest images directory of its own (where other work rebuilds the shared one).
const imagesDir = process.env['HULL_TEST_GUEST_IMAGES_DIR'];
if (imagesDir) appendFileSync(configPath, `guest_images_dir = "${imagesDir}"\n`);

let ctrd: PrivateContainerd;
let cri: CriClient;
let monitor: ChildProcess | undefined;
let monitorUrl = '';
let monitorLog = '';

before(async () => {
  assert.ok(await currentGuestImage(imagesDir), 'no guest image: run `make image` first');
  ctrd = await startContainerd({ runtimes: hullRuntime.runtimes, extraPath: hullRuntime.shimDir });
  await ensureTestImages(ctrd);
  cri = await CriClient.connect(ctrd.address, { deadlineMs: 120_000 });
  monitor = spawn(process.execPath, [HULL, 'monitor', '--config', configPath, '--listen', '127.0.0.1:0', '--shim-timeout', String(SHIM_TIMEOUT_MS)], { stdio: ['ignore', 'ignore', 'pipe'] });
  monitorUrl = await new Promise<string>((resolve, reject) => {
    monitor!.stderr!.setEncoding('utf8').on('data', (chunk: string) => {
      monitorLog += chunk;
      const m = /serving \/metrics on ([\d.]+:\d+)/.exec(monitorLog);
      if (m) resolve(`http://${m[1]}/metrics`);
    });
    monitor!.once('exit', (code) => reject(new Error(`hull monitor exited (${code}): ${monitorLog}`)));
  });
});

after(async () => {
  if (monitor?.pid && processAlive(monitor.pid)) {
    monitor.kill('SIGTERM');
    await new Promise((resolve) => monitor!.once('exit', resolve));
  }
  cri?.close();
  await stopAndAssertClean(ctrd, hullRuntime);
});

async function scrape(): Promise<Map<string, PromFamily>> {
  // Generous: a scrape is bounded by the per-shim timeout; this only catches one that stalls.
  const res = await fetch(monitorUrl, { signal: AbortSignal.timeout(SHIM_TIMEOUT_MS + 30_000) });
  assert.equal(res.status, 200);
  assert.match(res.headers.get('content-type') ?? '', /^text\/plain; version=0\.0\.4/);
  return parsePromText(await res.text());
}

function value(families: Map<string, PromFamily>, name: string, labels: Record<string, string>): number | undefined {
  const family = families.get(name) ?? families.get(name.replace(/_(bucket|sum|count)$/, ''));
  return family?.samples.find((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v))?.value;
}

function sandboxIds(families: Map<string, PromFamily>, name: string): string[] {
  return [...new Set(families.get(name)?.samples.map((s) => s.labels['sandbox_id']!) ?? [])].sort();
}

interface PsJson {
  version: number;
  sandboxes: Array<{ id: string; pod: { namespace: string; name: string; uid: string }; state: string; createdAt: string | null; ageSeconds: number | null; vcpus: number | null; memoryMiB: number | null; qemuPid: number | null; hostPssBytes: number | null; containers: string[]; error: string | null }>;
}

function ps(): PsJson {
  return JSON.parse(execFileSync(process.execPath, [HULL, 'ps', '--json', '--config', configPath], { encoding: 'utf8' })) as PsJson;
}

function smapsRollup(pid: number): { rss: number; pss: number } {
  const text = readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8');
  const kib = (key: string) => Number(new RegExp(`^${key}:\\s+(\\d+) kB$`, 'm').exec(text)?.[1]) * 1024;
  return { rss: kib('Rss'), pss: kib('Pss') };
}

const FAMILIES_PER_POD = [
  'hull_sandbox_vcpus', 'hull_sandbox_memory_bytes', 'hull_sandbox_containers', 'hull_sandbox_start_time_seconds', 'hull_sandbox_start_phase_seconds',
  'hull_process_cpu_seconds_total', 'hull_process_resident_memory_bytes', 'hull_process_pss_bytes', 'hull_process_threads', 'hull_process_open_fds',
  'hull_guest_up', 'hull_guest_meminfo_bytes', 'hull_guest_cpu_seconds_total', 'hull_guest_load_average', 'hull_guest_tasks', 'hull_guest_forks_total',
  'hull_guest_context_switches_total', 'hull_guest_network_bytes_total', 'hull_guest_network_packets_total', 'hull_guest_network_errors_total',
  'hull_guest_network_drops_total', 'hull_guest_disk_operations_total', 'hull_guest_disk_bytes_total', 'hull_guest_disk_io_seconds_total',
  'hull_agent_rpc_duration_seconds', 'hull_agent_rpc_errors_total',
];

describe('hull monitor and hull ps against real pods', () => {
  const pods: Array<{ id: string; config: PodSandboxConfig; app: string }> = [];

  it('serves every family with the pod labels for two running pods, and ps lists exactly them', async () => {
    for (const name of ['mon-a', 'mon-b']) {
      const config = podConfig({ name, namespace: 'hull-monitor' });
      const id = await cri.runPodSandbox(config, 'hull');
      const app = await cri.createContainer(id, containerConfig({ name: 'app', image: BUSYBOX_REF, command: ['sleep', '3600'] }), config);
      await cri.startContainer(app);
      pods.push({ id, config, app });
    }
    const families = await scrape();
    for (const pod of pods) {
      if (value(families, 'hull_guest_up', { sandbox_id: pod.id }) === 1) continue;
      const status = JSON.parse((await getFromShim(join(runRoot, pod.id, 'debug.sock'), '/metrics')).toString()) as { guestError?: string };
      assert.fail(`no guest stats for ${pod.config.metadata.name}: ${status.guestError}`);
    }
    for (const family of FAMILIES_PER_POD) {
      assert.ok(families.has(family), `family ${family} missing`);
      for (const pod of pods) {
        const { namespace, name, uid } = pod.config.metadata;
        const labels = { sandbox_id: pod.id, pod_namespace: namespace, pod_name: name, pod_uid: uid };
        const f = families.get(family)!;
        assert.ok(f.samples.some((s) => Object.entries(labels).every(([k, v]) => s.labels[k] === v)), `${family} has no series for ${name} with its labels`);
      }
    }
    for (const pod of pods) {
      const l = { sandbox_id: pod.id };
      assert.equal(value(families, 'hull_guest_up', l), 1);
      assert.equal(value(families, 'hull_sandbox_containers', l), 2);
      const memTotal = value(families, 'hull_guest_meminfo_bytes', { ...l, item: 'MemTotal' })!;
      assert.ok(memTotal > 256 * MIB && memTotal <= 512 * MIB, `guest MemTotal ${memTotal}`);
      assert.ok(value(families, 'hull_guest_network_packets_total', { ...l, interface: 'eth0', direction: 'transmit' }) !== undefined, 'no eth0 series');
      assert.ok(value(families, 'hull_agent_rpc_duration_seconds_count', { ...l, method: 'setupSandbox' })! >= 1);
      assert.ok(value(families, 'hull_agent_rpc_duration_seconds_count', { ...l, method: 'createContainer' })! >= 1);
      assert.ok(value(families, 'hull_sandbox_start_phase_seconds', { ...l, phase: 'vmm' })! > 0);
      assert.equal(value(families, 'hull_monitor_shim_up', l), 1);
    }
    for (const own of ['hull_monitor_scrapes_total', 'hull_monitor_shim_failures_total', 'hull_monitor_scrape_duration_seconds', 'hull_monitor_sandboxes', 'hull_template_store_allocated_bytes']) assert.ok(families.has(own), own);
    assert.equal(value(families, 'hull_monitor_shim_failures_total', {}), 0);

    const listed = ps();
    assert.equal(listed.version, 1);
    assert.deepEqual(listed.sandboxes.map((s) => s.id).sort(), pods.map((p) => p.id).sort());
    for (const pod of pods) {
      const s = listed.sandboxes.find((x) => x.id === pod.id)!;
      assert.deepEqual(s.pod, { namespace: 'hull-monitor', name: pod.config.metadata.name, uid: pod.config.metadata.uid });
      assert.equal(s.state, 'running');
      assert.deepEqual(s.containers.sort(), [pod.id, pod.app].sort());
      assert.equal(s.vcpus, 1);
      assert.equal(s.memoryMiB, 512);
      assert.ok(s.qemuPid && processAlive(s.qemuPid) && qemuPidsUnder(runRoot).includes(s.qemuPid), 'ps names a live QEMU of this run root');
      assert.ok(s.hostPssBytes! > 0 && s.ageSeconds! >= 0 && s.error === null);
      assert.deepEqual(Object.keys(s), ['id', 'pod', 'state', 'createdAt', 'ageSeconds', 'vcpus', 'memoryMiB', 'qemuPid', 'hostPssBytes', 'containers', 'error']);
    }
    const table = execFileSync(process.execPath, [HULL, 'ps', '--config', configPath], { encoding: 'utf8' }).trim().split('\n');
    assert.match(table[0]!, /^SANDBOX\s+POD\s+AGE\s+STATE\s+VCPUS\s+MEMORY\s+QEMU PID\s+HOST PSS\s+CONTAINERS$/);
    assert.equal(table.length, 4);
    // The last line: what hull holds outside the pods (the template store, the pool's cgroup).
    assert.match(table[3]!, /^templates: \d+Mi allocated; pool: (\d+Mi|-)$/);
    assert.ok(table.some((l) => l.includes('hull-monitor/mon-a') && l.includes('running')));
  });

  it('reports CPU that grows under load and QEMU memory as /proc counts it', async () => {
    const [a] = pods;
    const l = { sandbox_id: a!.id };
    const guestBusy = (f: Map<string, PromFamily>) => value(f, 'hull_guest_cpu_seconds_total', { ...l, mode: 'user' })! + value(f, 'hull_guest_cpu_seconds_total', { ...l, mode: 'system' })!;
    const before = await scrape();
    // A fixed amount of work in the guest (busybox sh arithmetic: seconds of guest CPU under TCG).
    const work = await cri.execSync(a!.app, ['sh', '-c', 'i=0; while [ $i -lt 50000 ]; do i=$((i+1)); done']);
    assert.equal(work.exitCode, 0);
    const later = await scrape();
    const guestGrew = guestBusy(later) - guestBusy(before);
    const qemuGrew = value(later, 'hull_process_cpu_seconds_total', { ...l, process: 'qemu' })! - value(before, 'hull_process_cpu_seconds_total', { ...l, process: 'qemu' })!;
    assert.ok(guestGrew >= 0.3, `guest CPU grew by ${guestGrew} s`);
    assert.ok(qemuGrew >= guestGrew * 0.5, `QEMU CPU grew by ${qemuGrew} s for ${guestGrew} s in the guest`);
    assert.ok(value(later, 'hull_guest_forks_total', l)! > value(before, 'hull_guest_forks_total', l)!);

    const qemuPid = ps().sandboxes.find((s) => s.id === a!.id)!.qemuPid!;
    const metrics = await scrape();
    const proc = smapsRollup(qemuPid);
    const pss = value(metrics, 'hull_process_pss_bytes', { ...l, process: 'qemu' })!;
    const rss = value(metrics, 'hull_process_resident_memory_bytes', { ...l, process: 'qemu' })!;
    // The VM is idle: what moves between the two reads is a few pages (and TCG's buffers).
    const tolerance = (x: number) => Math.max(8 * MIB, x * 0.1);
    assert.ok(Math.abs(pss - proc.pss) <= tolerance(proc.pss), `PSS ${pss} vs smaps_rollup ${proc.pss}`);
    assert.ok(Math.abs(rss - proc.rss) <= tolerance(proc.rss), `RSS ${rss} vs smaps_rollup ${proc.rss}`);
  });

  it('reports a hung shim as a failure without stalling the scrape, and serves it again once it answers', async (t) => {
    const [a, b] = pods;
    const shim = findShims(ctrd.address).find((s) => s.cmdline.includes(`-id ${b!.id}`));
    assert.ok(shim, 'no shim for pod B');
    const failuresBefore = value(await scrape(), 'hull_monitor_shim_failures_total', {})!;
    process.kill(shim.pid, 'SIGSTOP');
    let families: Map<string, PromFamily>;
    const started = performance.now();
    try {
      families = await scrape();
    } finally {
      process.kill(shim.pid, 'SIGCONT');
    }
    t.diagnostic(`scrape with one stopped shim: ${Math.round(performance.now() - started)} ms (per-shim timeout ${SHIM_TIMEOUT_MS} ms)`);
    assert.equal(value(families, 'hull_monitor_shim_up', { sandbox_id: b!.id }), 0);
    assert.equal(value(families, 'hull_monitor_shim_up', { sandbox_id: a!.id }), 1);
    assert.equal(value(families, 'hull_monitor_shim_failures_total', {}), failuresBefore + 1);
    assert.deepEqual(sandboxIds(families, 'hull_sandbox_vcpus'), [a!.id]);
    assert.match(monitorLog, new RegExp(`"level":"warn","msg":"no status from the shim of sandbox ${b!.id}: no answer within ${SHIM_TIMEOUT_MS} ms"`));
    assert.deepEqual(sandboxIds(await scrape(), 'hull_sandbox_vcpus'), [a!.id, b!.id].sort());
  });

  it('logs JSON lines with the pod labels, the console tail of a VM that dies, and drops a deleted pod from the next scrape', async () => {
    const [a, b] = pods;
    const lines = () =>
      readFileSync(ctrd.logPath, 'utf8')
        .split('\n')
        .filter((l) => l.startsWith('{'))
        .map((l) => JSON.parse(l) as Record<string, string>);
    const booted = lines().find((l) => l['sandbox_id'] === a!.id && /^sandbox .* booted/.test(l['msg'] ?? ''));
    assert.ok(booted, 'no JSON "booted" line of pod A in containerd\'s log');
    assert.equal(booted['level'], 'info');
    assert.ok(!Number.isNaN(Date.parse(booted['time']!)));
    assert.deepEqual([booted['pod_namespace'], booted['pod_name'], booted['pod_uid']], ['hull-monitor', 'mon-a', a!.config.metadata.uid]);

    const qemuPid = ps().sandboxes.find((s) => s.id === b!.id)!.qemuPid!;
    process.kill(qemuPid, 'SIGKILL');
    let death: Record<string, string> | undefined;
    for (let i = 0; i < 100 && !death; i++, await sleep(100)) death = lines().find((l) => l['sandbox_id'] === b!.id && l['level'] === 'error' && /^VM of sandbox \S+ exited/.test(l['msg'] ?? ''));
    assert.ok(death, `no error line for the VM that died; pod B's lines:\n${lines().filter((l) => l['sandbox_id'] === b!.id).slice(-10).map((l) => JSON.stringify(l)).join('\n')}`);
    assert.equal(typeof death['console_tail'], 'string');
    assert.equal(death['pod_name'], 'mon-b');

    // The VM's death ends the app container too; containerd records that from its exit event.
    let state = '';
    for (let i = 0; i < 300 && state !== 'CONTAINER_EXITED'; i++, await sleep(100)) state = (await cri.listContainers({ id: b!.app }))[0]?.state ?? '';
    assert.equal(state, 'CONTAINER_EXITED');
    await cri.stopPodSandbox(b!.id);
    await cri.removePodSandbox(b!.id);
    const families = await scrape();
    assert.deepEqual(sandboxIds(families, 'hull_sandbox_vcpus'), [a!.id]);
    assert.deepEqual(sandboxIds(families, 'hull_monitor_shim_up'), [a!.id]);
    assert.deepEqual(ps().sandboxes.map((s) => s.id), [a!.id]);
  });

  it('measures a scrape with as many pods as this machine runs (reported)', async (t) => {
    const extra = Number(process.env['HULL_TEST_MONITOR_PODS'] ?? 6);
    const ids: string[] = [];
    for (let i = 0; i < extra; i++) {
      const config = podConfig({ name: `mon-n${i}`, namespace: 'hull-monitor' });
      ids.push(await cri.runPodSandbox(config, 'hull'));
    }
    const total = ids.length + 1;
    const ms: number[] = [];
    const statusMs: number[] = [];
    let guestsAnswered = 0;
    for (let i = 0; i < 7; i++) {
      let started = performance.now();
      const families = await scrape();
      ms.push(performance.now() - started);
      assert.equal(sandboxIds(families, 'hull_guest_up').length, total);
      guestsAnswered += families.get('hull_guest_up')!.samples.filter((x) => x.value === 1).length;
      // What hull ps costs: the same shims, without the guest's stats.
      started = performance.now();
      assert.equal((await readAll(await listSandboxDirs(runRoot, statusDir), false)).filter((a) => 'status' in a).length, total);
      statusMs.push(performance.now() - started);
    }
    const summary = (xs: number[]) => {
      const sorted = [...xs].sort((x, y) => x - y);
      return `median ${Math.round(sorted[3]!)} ms, min ${Math.round(sorted[0]!)}, max ${Math.round(sorted[6]!)}`;
    };
    const line = `scrape of ${total} pods (7 scrapes): /metrics ${summary(ms)}; guests answered ${guestsAnswered}/${7 * total}; host-side status only (hull ps) ${summary(statusMs)}`;
    t.diagnostic(line);
    console.log(line);
    for (const id of [...ids, pods[0]!.id]) {
      await cri.stopPodSandbox(id);
      await cri.removePodSandbox(id);
    }
    assert.deepEqual(ps().sandboxes, []);
  });
});
