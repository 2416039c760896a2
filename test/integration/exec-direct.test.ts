/**
 * Direct exec (src/agent/direct-exec.ts) against crun: for the same process spec, an exec the agent
 * starts itself (a CRI ExecSync) and `crun exec` run in the guest (through `hull console`, with the
 * container's process spec and the same arguments) must see the same identity and limits: uid,
 * groups, capability sets, no_new_privs, seccomp mode, open-files limit, environment, cwd, umask,
 * cgroup, process group and session, and the namespaces of the container's init. Exit codes, a
 * signal's death and a missing program must end the same way.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { appendFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { currentGuestImage } from '../../src/guest/index.js';
import { startContainerd, type PrivateContainerd } from '../harness/containerd.js';
import { prepareHullRuntime, stopAndAssertClean } from '../harness/hull-runtime.js';
import { CriClient, containerConfig, podConfig, type ContainerConfig } from '../harness/cri.js';
import { BUSYBOX_REF, ensureTestImages } from '../harness/oci-image.js';

const HULL = fileURLToPath(new URL('../../../bin/hull', import.meta.url));
const hull = prepareHullRuntime({ name: 'exec-direct' });
// HULL_TEST_GUEST_IMAGES_DIR: a guest images directory of its own (where other work rebuilds the shared one).
const imagesDir = process.env['HULL_TEST_GUEST_IMAGES_DIR'];
appendFileSync(hull.configPath, `debug_console = true\ntemplates = false\n${imagesDir ? `guest_images_dir = "${imagesDir}"\n` : ''}`);

/** PROBE prints what an exec process is; the init's namespaces (PID 1 in its PID namespace) for comparison. */
const PROBE = [
  'id -u; id -G',
  'grep -E "^(Uid|Gid|Groups|CapInh|CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs|Seccomp):" /proc/self/status',
  'ulimit -n; ulimit -Hn; umask; pwd; env | sort; cat /proc/self/cgroup',
  'cut -d" " -f5,6 /proc/self/stat',
  'for ns in cgroup ipc mnt net pid uts; do echo "$ns $(readlink /proc/self/ns/$ns) init $(readlink /proc/1/ns/$ns)"; done',
].join('; ');

/** CRUN_EXEC runs argv[2] (JSON) with `crun exec`, the container's process spec otherwise unchanged (as CRI builds an exec's). */
const CRUN_EXEC = `
const fs = require('fs'), { spawnSync } = require('child_process');
const [cid, args] = [process.argv[1], JSON.parse(process.argv[2])];
const spec = JSON.parse(fs.readFileSync('/run/hull/containers/' + cid + '/config.json', 'utf8'));
fs.writeFileSync('/run/exec-direct-test.json', JSON.stringify({ ...spec.process, args, terminal: false }));
const r = spawnSync('/usr/bin/crun', ['exec', '--process', '/run/exec-direct-test.json', cid], { stdio: ['ignore', 'inherit', 'inherit'] });
process.exit(r.status ?? 128 + require('os').constants.signals[r.signal]);
`;

let ctrd: PrivateContainerd;
let cri: CriClient;
let pod = '';

before(async () => {
  assert.ok(await currentGuestImage(imagesDir), 'no guest image: run `make image` first');
  ctrd = await startContainerd({ runtimes: hull.runtimes, extraPath: hull.shimDir });
  await ensureTestImages(ctrd);
  cri = await CriClient.connect(ctrd.address, { deadlineMs: 120_000 });
});

after(async () => {
  if (pod) {
    await cri.stopPodSandbox(pod).catch(() => {});
    await cri.removePodSandbox(pod).catch(() => {});
  }
  cri?.close();
  await stopAndAssertClean(ctrd, hull);
});

function crunExec(cid: string, args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [HULL, 'console', '--config', hull.configPath, pod, '--', 'node', '-e', CRUN_EXEC, cid, JSON.stringify(args)], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (s: string) => (stdout += s));
    child.stderr.setEncoding('utf8').on('data', (s: string) => (stderr += s));
    child.once('error', reject);
    child.once('close', (code) => resolve({ code, stdout, stderr }));
  });
}

async function startContainer(name: string, securityContext: NonNullable<NonNullable<ContainerConfig['linux']>['securityContext']>, extra: Partial<ContainerConfig> = {}): Promise<string> {
  const pc = podConfig({ name: 'exec-direct', namespace: 'hull-exec-direct' });
  const config = { ...containerConfig({ name, image: BUSYBOX_REF, command: ['sleep', '3600'] }), ...extra };
  config.linux!.securityContext = { ...config.linux!.securityContext, ...securityContext };
  const cid = await cri.createContainer(pod, config, pc);
  await cri.startContainer(cid);
  return cid;
}

describe('direct exec matches crun exec', () => {
  const containers: Array<{ what: string; id: string }> = [];

  before(async () => {
    pod = await cri.runPodSandbox(podConfig({ name: 'exec-direct', namespace: 'hull-exec-direct' }), 'hull');
    containers.push({ what: 'root, env and workingDir', id: await startContainer('root', {}, { envs: [{ key: 'GREETING', value: 'hello world' }], workingDir: '/tmp' }) });
    containers.push({
      what: 'a user with groups, no_new_privs and changed capabilities',
      id: await startContainer('user', { runAsUser: { value: 1000 }, runAsGroup: { value: 3000 }, supplementalGroups: [4000, 5000], noNewPrivs: true, capabilities: { addCapabilities: ['NET_ADMIN'], dropCapabilities: ['CHOWN', 'KILL'] } }),
    });
    containers.push({ what: 'root with every capability dropped', id: await startContainer('nocaps', { capabilities: { dropCapabilities: ['ALL'] } }) });
  });

  it('gives the same identity, limits, environment, cgroup and namespaces', async () => {
    for (const { what, id } of containers) {
      const direct = await cri.execSync(id, ['sh', '-c', PROBE]);
      const crun = await crunExec(id, ['sh', '-c', PROBE]);
      assert.equal(direct.exitCode, 0, `${what}: ${direct.stderr.toString()}`);
      assert.equal(crun.code, 0, `${what}: ${crun.stderr}`);
      assert.equal(direct.stdout.toString(), crun.stdout, what);
      for (const line of direct.stdout.toString().split('\n').filter((l) => / init /.test(l))) {
        const [ns, mine, , init] = line.split(' ');
        assert.equal(mine, init, `${what}: the exec is not in the init's ${ns} namespace`);
      }
    }
  });

  it('ends the same way: exit codes, death by a signal, a missing program', async () => {
    const { id } = containers[0]!;
    for (const args of [['sh', '-c', 'exit 3'], ['sh', '-c', 'kill -TERM $$'], ['sh', '-c', 'kill -KILL $$']]) {
      const direct = await cri.execSync(id, args);
      const crun = await crunExec(id, args);
      assert.equal(direct.exitCode, crun.code, args.join(' '));
    }
    await assert.rejects(cri.execSync(id, ['no-such-program']), /executable file `no-such-program` not found in \$PATH/);
    await assert.rejects(cri.execSync(id, ['/no/such/program']), /no\/such\/program.*No such file or directory/);
    const crun = await crunExec(id, ['no-such-program']);
    assert.notEqual(crun.code, 0);
    assert.match(crun.stderr, /executable file `no-such-program` not found in \$PATH/);
  });

  it('carries stdout and stderr apart, and the exec sees its own stdin closed', async () => {
    const { id } = containers[0]!;
    const r = await cri.execSync(id, ['sh', '-c', 'echo out; echo err >&2; cat; echo done']);
    assert.deepEqual([r.exitCode, r.stdout.toString(), r.stderr.toString()], [0, 'out\ndone\n', 'err\n']);
  });
});
