/**
 * The test harness itself, with runc only (no hull shim involved): a private containerd answers ctr and
 * CRI, the locally built busybox images run, pods get an address on the harness's own bridge, and
 * `stop()` leaves nothing behind — and reports and cleans up what a careless test leaked.
 */
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { isNotFound } from '../../src/errors/index.js';
import { findShims, startContainerd, type PrivateContainerd, type StopReport } from '../harness/containerd.js';
import { mountsUnder, processAlive } from '../helpers/leaks.js';
import { containerConfig, CriClient, podConfig, portForwardOnce, type PodSandboxConfig } from '../harness/cri.js';
import { BUSYBOX_REF, buildBusyboxImage, ensureTestImages, PAUSE_REF } from '../harness/oci-image.js';

/** leftovers lists what of `ctrd` still exists on the host after stop(). */
function leftovers(ctrd: PrivateContainerd): string[] {
  const found: string[] = [];
  if (processAlive(ctrd.pid)) found.push(`containerd pid ${ctrd.pid}`);
  for (const m of mountsUnder(ctrd.dir)) found.push(`mount ${m}`);
  for (const s of findShims(ctrd.address)) found.push(`shim ${s.pid}`);
  if (existsSync(`/sys/class/net/${ctrd.bridge}`)) found.push(`bridge ${ctrd.bridge}`);
  if (existsSync(ctrd.dir)) found.push(`dir ${ctrd.dir}`);
  if (existsSync(`/run/containerd/runc/${ctrd.namespace}`)) found.push(`runc root of ${ctrd.namespace}`);
  if (existsSync(`/sys/fs/cgroup/memory/${ctrd.namespace}`)) found.push(`cgroup /${ctrd.namespace}`);
  return found;
}

describe('oci-image', () => {
  it('buildBusyboxImage is reproducible and cached by content', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'hull-img-'));
    const other = mkdtempSync(join(tmpdir(), 'hull-img-'));
    try {
      const first = await buildBusyboxImage(dir, { ref: 'localhost/t/x:1', cmd: ['sh'] });
      const mtime = statSync(first.tarPath).mtimeMs;
      const again = await buildBusyboxImage(dir, { ref: 'localhost/t/x:1', cmd: ['sh'] });
      assert.equal(again.tarPath, first.tarPath);
      assert.equal(statSync(again.tarPath).mtimeMs, mtime, 'the cached tar is reused, not rebuilt');
      const elsewhere = await buildBusyboxImage(other, { ref: 'localhost/t/x:1', cmd: ['sh'] });
      assert.equal(elsewhere.manifestDigest, first.manifestDigest, 'same inputs give the same digest');
      const changed = await buildBusyboxImage(dir, { ref: 'localhost/t/x:1', cmd: ['true'] });
      assert.notEqual(changed.manifestDigest, first.manifestDigest);
    } finally {
      rmSync(dir, { recursive: true, force: true });
      rmSync(other, { recursive: true, force: true });
    }
  });
});

describe('private containerd with runc', () => {
  let ctrd: PrivateContainerd;
  let cri: CriClient;
  let report: StopReport | undefined;

  const shimDir = mkdtempSync(join(tmpdir(), 'hull-shims-'));
  const hull = { runtimeType: 'io.containerd.hull.v2', configPath: '/etc/hull/config.toml', podAnnotations: ['io.hull.*'] };

  before(async () => {
    // The hull runtime is only configured (nothing here uses it): its entry must reach CRI intact.
    ctrd = await startContainerd({ runtimes: { hull }, extraPath: shimDir });
    await ensureTestImages(ctrd);
    cri = await CriClient.connect(ctrd.address);
  });
  after(async () => {
    cri?.close();
    await ctrd?.stop();
    rmSync(shimDir, { recursive: true, force: true });
  });

  it('keeps every path of its own under one short directory', () => {
    assert.ok(ctrd.address.length < 100, ctrd.address);
    assert.ok(ctrd.address.startsWith(`${ctrd.dir}/`) && ctrd.root.startsWith(`${ctrd.dir}/`) && ctrd.state.startsWith(`${ctrd.dir}/`));
    assert.notEqual(ctrd.address, '/run/containerd/containerd.sock');
    assert.match(ctrd.namespace, /^hull-test-[0-9a-f]+$/);
  });

  it('passes the extra runtimes to CRI and the extra PATH to containerd', async () => {
    const config = JSON.parse((await cri.status(true)).info['config'] ?? '{}');
    assert.equal(config.sandboxImage, PAUSE_REF);
    assert.equal(config.restrictOOMScoreAdj, true);
    assert.equal(config.containerd.defaultRuntimeName, 'runc');
    const configured = config.containerd.runtimes.hull;
    assert.deepEqual([configured.runtimeType, configured.options, configured.PodAnnotations], [hull.runtimeType, { ConfigPath: hull.configPath }, hull.podAnnotations]);
    const env = readFileSync(`/proc/${ctrd.pid}/environ`, 'utf8').split('\0');
    assert.ok(env.find((e) => e.startsWith('PATH='))?.startsWith(`PATH=${shimDir}:`));
  });

  it('imports the images into its namespace and into k8s.io', async () => {
    for (const namespace of [ctrd.namespace, 'k8s.io']) {
      const r = await ctrd.ctr(['images', 'ls', '-q'], { namespace });
      assert.equal(r.code, 0, r.stderr);
      assert.ok(r.stdout.includes(BUSYBOX_REF) && r.stdout.includes(PAUSE_REF), r.stdout);
    }
    const image = await cri.imageStatus(BUSYBOX_REF);
    assert.deepEqual(image?.repoTags, [BUSYBOX_REF]);
    assert.ok((await cri.listImages()).some((i) => i.repoTags.includes(PAUSE_REF)));
  });

  it('ctr run prints the output and returns the exit code', async () => {
    const hi = await ctrd.ctr(['run', '--rm', BUSYBOX_REF, 'run-hi', 'echo', 'hi']);
    assert.deepEqual(hi, { stdout: 'hi\n', stderr: '', code: 0 });
    const three = await ctrd.ctr(['run', '--rm', BUSYBOX_REF, 'run-3', 'sh', '-c', 'exit 3']);
    assert.equal(three.code, 3);
  });

  it('runs a CRI pod on its bridge: exec, stats, port-forward, pod-to-pod traffic, teardown', async () => {
    assert.equal((await cri.version()).runtimeApiVersion, 'v1');
    const ready = (await cri.status()).status?.conditions.filter((c) => c.status).map((c) => c.type);
    assert.deepEqual(ready, ['RuntimeReady', 'NetworkReady']);

    const webPod = podConfig({ name: 'web', namespace: 'hull-test' });
    const clientPod = podConfig({ name: 'client', namespace: 'hull-test' });
    const run = async (pod: PodSandboxConfig, name: string, command: string[]): Promise<{ podId: string; id: string }> => {
      const podId = (await cri.listPodSandbox()).find((p) => p.metadata.name === pod.metadata.name)?.id ?? (await cri.runPodSandbox(pod));
      const id = await cri.createContainer(podId, containerConfig({ name, image: BUSYBOX_REF, command }), pod);
      await cri.startContainer(id);
      return { podId, id };
    };
    const sleeper = await run(webPod, 'sleeper', ['sleep', 'inf']);
    const web = await run(webPod, 'web', ['sh', '-c', 'mkdir /www && echo hello > /www/index.html && exec httpd -f -p 8080 -h /www']);
    const client = await run(clientPod, 'client', ['sleep', 'inf']);

    const status = (await cri.podSandboxStatus(sleeper.podId)).status;
    assert.equal(status.state, 'SANDBOX_READY');
    const ip = status.network?.ip ?? '';
    assert.ok(ip.startsWith(ctrd.subnet.replace(/0\/24$/, '')), `pod IP ${ip} is in ${ctrd.subnet}`);
    assert.ok(existsSync(`/sys/class/net/${ctrd.bridge}`), 'the CNI bridge exists');

    assert.equal((await cri.containerStatus(sleeper.id)).status.state, 'CONTAINER_RUNNING');
    const listed = await cri.listContainers({ podSandboxId: sleeper.podId });
    assert.deepEqual(listed.map((c) => c.metadata.name).sort(), ['sleeper', 'web']);

    const hi = await cri.execSync(sleeper.id, ['echo', 'hi']);
    assert.equal(hi.stdout.toString(), 'hi\n');
    assert.equal(hi.exitCode, 0);
    assert.equal((await cri.execSync(sleeper.id, ['sh', '-c', 'exit 5'])).exitCode, 5);

    const streamed = await cri.execStreaming(sleeper.id, ['sh', '-c', 'read line; echo "out $line"; echo err >&2; exit 7'], { stdin: 'x\n' });
    assert.deepEqual([streamed.stdout.toString(), streamed.stderr.toString(), streamed.exitCode], ['out x\n', 'err\n', 7]);
    // The resize is applied asynchronously: wait for it inside the exec.
    const waitSize = 'for i in $(seq 50); do s=$(stty size 2>/dev/null); case "$s" in ""|"0 0") sleep 0.1;; *) break;; esac; done; echo $s';
    const tty = await cri.execStreaming(sleeper.id, ['sh', '-c', waitSize], { tty: true, resize: { width: 101, height: 33 } });
    assert.equal(tty.stdout.toString().trim(), '33 101');

    const stats = await cri.containerStats(sleeper.id);
    assert.equal(stats.attributes.id, sleeper.id);
    assert.ok((stats.memory?.workingSetBytes?.value ?? 0) > 0);
    assert.ok((await cri.listContainerStats({ podSandboxId: sleeper.podId })).length === 2);
    await cri.updateContainerResources(sleeper.id, { memoryLimitInBytes: 64 << 20 });

    // Pod to pod over the bridge (retried: httpd may not listen yet).
    let page = '';
    for (let i = 0; i < 50 && page !== 'hello\n'; i++) {
      page = (await cri.execSync(client.id, ['wget', '-q', '-O', '-', `http://${ip}:8080/index.html`])).stdout.toString();
      if (page !== 'hello\n') await new Promise((r) => setTimeout(r, 100));
    }
    assert.equal(page, 'hello\n');
    const forwarded = await portForwardOnce(await cri.portForward(web.podId, [8080]), 8080, 'GET /index.html HTTP/1.0\r\n\r\n');
    assert.match(forwarded.toString(), /^HTTP\/1\.[01] 200 OK[\s\S]*\r\n\r\nhello\n$/);

    for (const { id } of [sleeper, web, client]) {
      await cri.stopContainer(id, 0);
      assert.equal((await cri.containerStatus(id)).status.state, 'CONTAINER_EXITED');
      await cri.removeContainer(id);
      await assert.rejects(cri.containerStatus(id), isNotFound);
    }
    for (const podId of [sleeper.podId, client.podId]) {
      await cri.stopPodSandbox(podId);
      await cri.removePodSandbox(podId);
    }
    assert.deepEqual(await cri.listPodSandbox(), []);
  });

  it('stop() kills containerd and leaves nothing behind', async () => {
    cri.close();
    report = await ctrd.stop();
    assert.deepEqual(report, { leakedShims: [], killedDescendants: [], leakedMounts: [] });
    assert.deepEqual(leftovers(ctrd), []);
    assert.equal(await ctrd.stop(), report, 'stop() is idempotent');
  });
});

describe('private containerd stop() after a careless test', () => {
  it('kills leaked shims and their containers, unmounts, and reports them', async () => {
    const ctrd = await startContainerd();
    try {
      await ensureTestImages(ctrd);
      const detached = await ctrd.ctr(['run', '-d', BUSYBOX_REF, 'leak-ctr', 'sleep', 'inf']);
      assert.equal(detached.code, 0, detached.stderr);
      const cri = await CriClient.connect(ctrd.address);
      const ids: string[] = [];
      try {
        const pod = podConfig({ name: 'leak' });
        ids.push(await cri.runPodSandbox(pod));
        ids.push(await cri.createContainer(ids[0]!, containerConfig({ name: 'c', image: BUSYBOX_REF, command: ['sleep', 'inf'] }), pod));
        await cri.startContainer(ids[1]!);
      } finally {
        cri.close();
      }
      const shims = findShims(ctrd.address);
      assert.equal(shims.length, 2, 'one shim for the ctr container, one for the pod');
      assert.ok(mountsUnder(ctrd.dir).length > 0);

      const report = await ctrd.stop();
      assert.deepEqual(report.leakedShims.map((s) => s.pid).sort(), shims.map((s) => s.pid).sort());
      assert.ok(report.killedDescendants.length >= 3, 'the ctr container, the pause and the pod container');
      assert.ok(report.leakedMounts.some((m) => m.includes('/netns/')), 'the pod netns was still mounted');
      for (const pid of report.killedDescendants) assert.equal(processAlive(pid), false, `pid ${pid}`);
      assert.deepEqual(leftovers(ctrd), []);
      for (const id of ids) assert.equal(existsSync(`/sys/fs/cgroup/memory/k8s.io/${id}`), false, `cgroup of ${id}`);
    } finally {
      await ctrd.stop();
    }
  });

  it('cleans up and reports the log tail when containerd cannot start', async () => {
    // A socket path longer than sun_path (108 bytes) makes containerd exit at once.
    const baseDir = `/run/hull-test/${'x'.repeat(100)}`;
    let dir = '';
    try {
      await assert.rejects(startContainerd({ baseDir }), (e: Error) => {
        dir = /in "([^"]+)"/.exec(e.message)?.[1] ?? '';
        return /containerd exited/.test(e.message) && /containerd log/.test(e.message);
      });
      assert.ok(dir.startsWith(`${baseDir}/ctrd-`), dir);
      assert.equal(existsSync(dir), false);
      const configArg = `${dir}/config.toml`;
      const cmdline = (pid: string): string => {
        try {
          return readFileSync(`/proc/${pid}/cmdline`, 'utf8');
        } catch {
          return '';
        }
      };
      assert.deepEqual(readdirSync('/proc').filter((p) => /^\d+$/.test(p) && cmdline(p).includes(configArg)), []);
    } finally {
      rmSync(baseDir, { recursive: true, force: true });
    }
  });

  it('PAUSE_CMD idles as pid 1 and exits 0 on SIGTERM', async () => {
    await using ctrd = await startContainerd();
    await ensureTestImages(ctrd);
    assert.equal((await ctrd.ctr(['run', '-d', PAUSE_REF, 'pause'])).code, 0);
    const kill = await ctrd.ctr(['task', 'kill', '-s', 'SIGTERM', 'pause']);
    assert.equal(kill.code, 0, kill.stderr);
    let status = '';
    for (let i = 0; i < 50 && !/STOPPED/.test(status); i++) {
      await new Promise((r) => setTimeout(r, 100));
      status = (await ctrd.ctr(['task', 'ls'])).stdout;
    }
    assert.match(status, /pause\s+\d+\s+STOPPED/);
    // `ctr task delete` exits with the task's exit status.
    assert.equal((await ctrd.ctr(['task', 'delete', 'pause'])).code, 0);
    assert.equal((await ctrd.ctr(['container', 'delete', 'pause'])).code, 0);
  });
});
