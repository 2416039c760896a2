/**
 * Volumes and mounts against the real thing: bind mounts of the container
 * spec (hostPath, configMap-style directories, memory emptyDirs, CRI's
 * single files and /dev/shm) reach the container in the VM through the 9p
 * share, or become guest memory. One VM serves every case; afterwards no
 * QEMU process, mount or file of the test may be left.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { dirname, join } from 'node:path';
import { PassThrough } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { currentGuestImage } from '../../src/guest/index.js';
import { Sandbox, type OciSpec } from '../../src/sandbox/index.js';
import { QemuDriver } from '../../src/vmm/index.js';
import type { OciMount } from '../../src/sandbox/spec.js';
import { defaultSpec, makeBusyboxBundle, type TestBundle } from '../helpers/bundle.js';
import { entriesIn, mountsUnder, processAlive } from '../helpers/leaks.js';

const image = await currentGuestImage();
const base = (() => {
  mkdirSync('/run/hull-test', { recursive: true, mode: 0o700 });
  return mkdtempSync('/run/hull-test/vol-');
})();
const runRoot = join(base, 'run');
const hostDir = join(base, 'host');
mkdirSync(hostDir);
// Host mounts the test made itself (tmpfs standing in for kubelet's and containerd's).
const testMounts: string[] = [];

after(() => {
  for (const point of testMounts.reverse()) execFileSync('umount', [point]);
  assert.deepEqual(mountsUnder(base), [], 'mounts left under the test directory');
  rmSync(base, { recursive: true, force: true });
});

function mountTmpfs(path: string, options: string): void {
  mkdirSync(path, { recursive: true });
  execFileSync('mount', ['-t', 'tmpfs', '-o', options, 'tmpfs', path]);
  testMounts.push(path);
}

function bind(source: string, destination: string, ...options: string[]): OciMount {
  return { destination, type: 'bind', source, options: ['rbind', 'rprivate', ...options] };
}

function specWith(args: string[], mounts: OciMount[], extra: Partial<OciSpec> = {}): OciSpec {
  const spec = defaultSpec(args) as OciSpec;
  // CRI drops the default mount a volume replaces (e.g. /dev/shm).
  const replaced = new Set(mounts.map((m) => m.destination));
  return { ...spec, ...extra, mounts: [...(spec.mounts ?? []).filter((m) => !replaced.has(m.destination)), ...mounts] };
}

function collect(): { stream: PassThrough; text: () => string } {
  const stream = new PassThrough();
  const chunks: Buffer[] = [];
  stream.on('data', (c: Buffer) => chunks.push(c));
  return { stream, text: () => Buffer.concat(chunks).toString('utf8') };
}

interface RunResult {
  stdout: string;
  stderr: string;
  exitStatus: number;
}

describe('volumes of a sandbox', () => {
  let sandbox: Sandbox;
  let bundle: TestBundle;
  let vmPid = 0;

  before(async () => {
    assert.ok(image, 'no guest image: run `make image` (hull image build) first');
    bundle = makeBusyboxBundle();
    sandbox = await Sandbox.create({ driver: new QemuDriver(), id: 'vols', image, runRoot, memoryMiB: 512 });
    vmPid = sandbox.vm.pid;
  });

  after(async () => {
    await sandbox?.destroy();
    bundle?.remove();
    assert.equal(processAlive(vmPid), false, 'QEMU process still running after destroy');
    assert.deepEqual(mountsUnder(runRoot), [], 'mounts left under the run root');
    assert.deepEqual(entriesIn(runRoot), [], 'files left under the run root');
  });

  /** create makes (not starts) a container whose spec has `mounts`. */
  async function create(id: string, args: string[], mounts: OciMount[], extra: Partial<OciSpec> = {}): Promise<void> {
    await sandbox.createContainer(id, { bundle: bundle.dir, spec: specWith(args, mounts, extra), stdio: { stdout: true, stderr: true } });
  }

  async function startAndWait(id: string): Promise<RunResult> {
    await sandbox.startContainer(id);
    const out = collect();
    const err = collect();
    const [exit] = await Promise.all([sandbox.wait(id), sandbox.attach(id, '', { stdout: out.stream, stderr: err.stream })]);
    return { stdout: out.text(), stderr: err.text(), exitStatus: exit.exitStatus };
  }

  async function remove(id: string): Promise<void> {
    await sandbox.removeContainer(id);
    assert.deepEqual(mountsUnder(join(sandbox.sharedDir, id)), [], `mounts left for container "${id}"`);
    assert.equal(existsSync(join(sandbox.sharedDir, id)), false, `directory left for container "${id}"`);
  }

  async function run(id: string, script: string, mounts: OciMount[]): Promise<RunResult> {
    await create(id, ['sh', '-c', script], mounts);
    try {
      return await startAndWait(id);
    } finally {
      await remove(id);
    }
  }

  async function exec(id: string, execId: string, script: string): Promise<RunResult> {
    await sandbox.exec(id, execId, { args: ['sh', '-c', script], cwd: '/', env: ['PATH=/bin'] }, { stdout: true, stderr: true });
    const out = collect();
    const err = collect();
    const [exit] = await Promise.all([sandbox.wait(id, execId), sandbox.attach(id, execId, { stdout: out.stream, stderr: err.stream })]);
    return { stdout: out.text(), stderr: err.text(), exitStatus: exit.exitStatus };
  }

  it('mounts read-only volumes read-only, in the guest and on the host', async () => {
    const dir = join(hostDir, 'ro-dir');
    mkdirSync(dir);
    writeFileSync(join(dir, 'f'), 'ro content\n');
    const file = join(hostDir, 'ro-file');
    writeFileSync(file, 'ro file\n');
    const mounts = [bind(dir, '/ro', 'ro'), bind(file, '/etc/ro-file', 'ro')];
    await create('ro', ['sh', '-c', 'cat /ro/f /etc/ro-file; echo x > /ro/new && echo WROTE-DIR; echo x >> /etc/ro-file && echo WROTE-FILE; grep -E " /ro | /etc/ro-file " /proc/mounts'], mounts);
    try {
      // The host side is read-only too: a guest kernel ignoring its own ro still cannot write through QEMU.
      const shares = readFileSync('/proc/self/mountinfo', 'utf8').split('\n').filter((l) => l.includes(join(sandbox.sharedDir, 'ro', 'volumes') + '/'));
      assert.equal(shares.length, 2, shares.join('\n'));
      for (const line of shares) assert.match(line.split(' ')[5] ?? '', /^ro,nosuid,nodev\b/, line);
      const r = await startAndWait('ro');
      assert.equal(r.stdout.split('\n').slice(0, 2).join('\n'), 'ro content\nro file');
      assert.doesNotMatch(r.stdout, /WROTE/);
      assert.equal(r.stderr.match(/Read-only file system/g)?.length, 2, r.stderr);
      assert.match(r.stdout, /^\S+ \/ro 9p ro,/m);
      assert.match(r.stdout, /^\S+ \/etc\/ro-file 9p ro,/m);
    } finally {
      await remove('ro');
    }
    assert.equal(existsSync(join(dir, 'new')), false);
    assert.equal(readFileSync(file, 'utf8'), 'ro file\n');
    assert.equal(readFileSync(join(dir, 'f'), 'utf8'), 'ro content\n', 'the host directory survives the container');
  });

  it('shows on the host what the pod writes to a hostPath and to its termination log', async () => {
    const dir = join(hostDir, 'data');
    mkdirSync(dir);
    const log = join(hostDir, 'termination-log');
    writeFileSync(log, '');
    const r = await run('writer', 'echo from-pod > /data/out.txt && mkdir /data/sub && echo bye > /dev/termination-log', [bind(dir, '/data'), bind(log, '/dev/termination-log')]);
    assert.equal(r.exitStatus, 0, r.stderr);
    assert.equal(readFileSync(join(dir, 'out.txt'), 'utf8'), 'from-pod\n');
    assert.ok(statSync(join(dir, 'sub')).isDirectory());
    assert.equal(readFileSync(log, 'utf8'), 'bye\n');
  });

  it('sees a configMap updated on the host the way kubelet updates it', async () => {
    // kubelet's AtomicWriter layout: timestamped dir, ..data -> it, key -> ..data/key.
    const dir = join(hostDir, 'pods', randomUUID(), 'volumes', 'kubernetes.io~configmap', 'cfg');
    mkdirSync(join(dir, '..2024_01_01_00_00_00.1'), { recursive: true });
    writeFileSync(join(dir, '..2024_01_01_00_00_00.1', 'key'), 'v1');
    symlinkSync('..2024_01_01_00_00_00.1', join(dir, '..data'));
    symlinkSync('..data/key', join(dir, 'key'));
    await create('cm', ['sleep', '1000'], [bind(dir, '/config', 'ro')]);
    try {
      await sandbox.startContainer('cm');
      assert.equal((await exec('cm', 'before', 'cat /config/key')).stdout, 'v1');

      mkdirSync(join(dir, '..2024_01_01_00_00_01.2'));
      writeFileSync(join(dir, '..2024_01_01_00_00_01.2', 'key'), 'v2');
      writeFileSync(join(dir, '..2024_01_01_00_00_01.2', 'added'), 'new');
      symlinkSync('..2024_01_01_00_00_01.2', join(dir, '..data_tmp'));
      renameSync(join(dir, '..data_tmp'), join(dir, '..data'));
      symlinkSync('..data/added', join(dir, 'added'));
      rmSync(join(dir, '..2024_01_01_00_00_00.1'), { recursive: true });

      const r = await exec('cm', 'after', 'cat /config/key; echo; cat /config/added');
      assert.equal(r.stdout, 'v2\nnew', r.stderr);
    } finally {
      await sandbox.signal('cm', '', 9).catch(() => {});
      await remove('cm');
    }
  });

  it('gives a memory emptyDir a pod-wide guest tmpfs of the same size', async () => {
    const emptyDirs = join(hostDir, 'pods', randomUUID(), 'volumes', 'kubernetes.io~empty-dir');
    mountTmpfs(join(emptyDirs, 'cache'), 'size=16m');
    mountTmpfs(join(emptyDirs, 'scratch'), 'mode=0777');
    const r = await run(
      'memory',
      'grep -E " /(cache|scratch) " /proc/mounts; df -k /cache | tail -1; echo in-guest > /cache/file; stat -c "%a" /scratch',
      [bind(join(emptyDirs, 'cache'), '/cache'), bind(join(emptyDirs, 'scratch'), '/scratch')],
    );
    assert.equal(r.exitStatus, 0, r.stderr);
    const lines = r.stdout.trim().split('\n');
    assert.match(lines.find((l) => l.includes(' /cache ')) ?? '', /^tmpfs \/cache tmpfs rw,nosuid,nodev,.*\bsize=16384k\b/);
    const scratch = lines.find((l) => l.includes(' /scratch ')) ?? '';
    assert.match(scratch, /^tmpfs \/scratch tmpfs rw,/);
    assert.doesNotMatch(scratch, /size=16384k/);
    assert.match(r.stdout, /^tmpfs\s+16384\s/m, 'df shows the 16 MiB size');
    assert.equal(lines.at(-1), '777', 'the guest tmpfs has the mode of the host one');
    // The memory is the VM's: the host tmpfs stays unused.
    assert.deepEqual(entriesIn(join(emptyDirs, 'cache')), []);
    // Another container of the pod mounting the same emptyDir sees the same tmpfs.
    const other = await run('memory-2', 'cat /cache/file', [bind(join(emptyDirs, 'cache'), '/cache')]);
    assert.equal(other.stdout, 'in-guest\n', other.stderr);
  });

  it("shares the sandbox's /dev/shm pod-wide as the guest's own tmpfs", async () => {
    const shm = join(hostDir, 'sandboxes', 'vols', 'shm');
    mountTmpfs(shm, 'mode=1777,size=65536k');
    await create('shm-a', ['sleep', '1000'], [bind(shm, '/dev/shm')]);
    try {
      await sandbox.startContainer('shm-a');
      assert.equal((await exec('shm-a', 'write', 'echo shared > /dev/shm/from-a')).exitStatus, 0);
      const r = await run('shm-b', 'cat /dev/shm/from-a; grep " /dev/shm " /proc/mounts', [bind(shm, '/dev/shm')]);
      assert.match(r.stdout, /^shared\n\S+ \/dev\/shm tmpfs rw,nosuid,nodev,noexec/, r.stderr);
      assert.deepEqual(entriesIn(shm), [], 'the host shm tmpfs stays unused');
    } finally {
      await sandbox.signal('shm-a', '', 9).catch(() => {});
      await remove('shm-a');
    }
  });

  it('binds single files like /etc/hosts, resolving a symlinked source on the host', async () => {
    const hosts = join(hostDir, 'etc-hosts');
    writeFileSync(hosts, '127.0.0.1 localhost\n10.1.2.3 pod-one\n');
    const resolv = join(hostDir, 'resolv.conf');
    writeFileSync(resolv, 'nameserver 10.96.0.10\n');
    symlinkSync(resolv, join(hostDir, 'resolv-link'));
    const r = await run('files', 'cat /etc/hosts /etc/resolv.conf', [bind(hosts, '/etc/hosts'), bind(join(hostDir, 'resolv-link'), '/etc/resolv.conf', 'ro')]);
    assert.equal(r.stdout, '127.0.0.1 localhost\n10.1.2.3 pod-one\nnameserver 10.96.0.10\n', r.stderr);
  });

  it('keeps symlinks and .. in a volume from reaching host files outside it', async () => {
    const marker = `hull-escape-marker-${randomBytes(8).toString('hex')}`;
    const secret = join(hostDir, 'secret');
    writeFileSync(secret, marker + '\n');
    const vol = join(hostDir, 'escape-vol');
    mkdirSync(vol);
    writeFileSync(join(vol, 'ok'), 'inside\n');
    symlinkSync(secret, join(vol, 'abs'));
    symlinkSync('../secret', join(vol, 'rel'));
    symlinkSync('../'.repeat(12) + secret.slice(1), join(vol, 'deep'));
    symlinkSync('../..', join(vol, 'up'));
    symlinkSync('/', join(vol, 'root'));
    // The same absolute path inside the container's rootfs: symlinks resolve in the guest, so this is what they reach.
    mkdirSync(join(bundle.rootfs, dirname(secret)), { recursive: true });
    writeFileSync(join(bundle.rootfs, secret), 'guest-side file\n');
    try {
      const r = await run(
        'escape',
        `cat /vol/ok; cat /vol/abs; for p in /vol/rel /vol/deep /vol/up${secret} /vol/root${secret} /vol/../secret /vol/up/../secret; do cat $p; done; ls -a /vol/.. /vol/up/`,
        [bind(vol, '/vol')],
      );
      assert.doesNotMatch(r.stdout + r.stderr, new RegExp(marker));
      assert.match(r.stdout, /^inside\nguest-side file\n/);
      // /vol/up resolved to the container's root, whose copy of the path is the guest-side file.
      assert.equal(r.stdout.match(/guest-side file/g)?.length, 4, r.stdout);
    } finally {
      rmSync(join(bundle.rootfs, secret.split('/')[1]!), { recursive: true, force: true });
    }
  });

  it('refuses a missing or special volume source clearly and leaves nothing behind', async () => {
    const good = join(hostDir, 'good');
    mkdirSync(good);
    await assert.rejects(
      create('missing', ['true'], [bind(good, '/good'), bind(join(hostDir, 'no-such-dir'), '/gone')]),
      new RegExp(`^HullError: Cannot share volume "${join(hostDir, 'no-such-dir')}" for "/gone": no such file$`),
    );
    assert.equal(existsSync(join(sandbox.sharedDir, 'missing')), false);

    const socketPath = join(hostDir, 'docker.sock');
    const server = createServer();
    await new Promise<void>((resolve) => server.listen(socketPath, resolve));
    try {
      await assert.rejects(create('socket', ['true'], [bind(socketPath, '/var/run/docker.sock')]), /for "\/var\/run\/docker.sock": it is a socket/);
    } finally {
      server.close();
    }
    const device = join(hostDir, 'null-device');
    execFileSync('mknod', [device, 'c', '1', '3']);
    await assert.rejects(create('device', ['true'], [bind(device, '/null')]), /for "\/null": it is a device/);
    await assert.rejects(create('devtmpfs', ['true'], [bind('/dev/null', '/null')]), /it is on devtmpfs, a kernel interface/);
    await assert.rejects(create('state', ['true'], [bind(sandbox.sharedDir, '/shared')]), /own state directory/);
    assert.deepEqual(mountsUnder(sandbox.sharedDir), [sandbox.sharedDir], 'mounts left in the share');
    assert.deepEqual(entriesIn(sandbox.sharedDir), []);
  });

  it('releases shared volumes when the guest refuses the container', async () => {
    const good = join(hostDir, 'good-2');
    mkdirSync(good);
    writeFileSync(join(good, 'keep'), 'kept\n');
    const spec = { process: { ...(defaultSpec(['true']) as OciSpec).process, cwd: 'relative' } };
    await assert.rejects(create('refused', ['true'], [bind(good, '/good')], spec), /process.cwd must be an absolute path/);
    assert.deepEqual(mountsUnder(sandbox.sharedDir), [sandbox.sharedDir], 'mounts left in the share');
    assert.equal(existsSync(join(sandbox.sharedDir, 'refused')), false);
    assert.equal(readFileSync(join(good, 'keep'), 'utf8'), 'kept\n');
  });
});
