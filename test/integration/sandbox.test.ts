/**
 * The host-side Sandbox API against the real thing: QEMU, the Debian guest
 * kernel, hull-agent and crun. One VM serves most tests (a TCG boot costs
 * seconds); each test runs its own containers in it.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync, existsSync, mkdirSync } from 'node:fs';
import { release } from 'node:os';
import { join } from 'node:path';
import { PassThrough, Readable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { currentGuestImage } from '../../src/guest/index.js';
import { Sandbox, type GuestAssets } from '../../src/sandbox/index.js';
import { QemuDriver } from '../../src/vmm/index.js';
import { makeBusyboxBundle, type TestBundle } from '../helpers/bundle.js';
import { entriesIn, mountsUnder, processAlive } from '../helpers/leaks.js';

// HULL_TEST_GUEST_IMAGES_DIR: a guest images directory of its own (where other work rebuilds the shared one).
const image = await currentGuestImage(process.env['HULL_TEST_GUEST_IMAGES_DIR']);
const runRoot = (() => {
  mkdirSync('/run/hull-test', { recursive: true, mode: 0o700 });
  return mkdtempSync('/run/hull-test/sb-');
})();
after(() => rmSync(runRoot, { recursive: true, force: true }));

function requireImage(): GuestAssets {
  assert.ok(image, 'no guest image: run `make image` (hull image build) first');
  return image;
}

interface RunResult {
  stdout: string;
  stderr: string;
  exitStatus: number;
  oomKilled: boolean;
}

function collect(): { stream: PassThrough; text: () => string } {
  const stream = new PassThrough();
  const chunks: Buffer[] = [];
  stream.on('data', (c: Buffer) => chunks.push(c));
  return { stream, text: () => Buffer.concat(chunks).toString('utf8') };
}

async function runIn(sandbox: Sandbox, id: string, bundle: TestBundle, args: string[], opts: { stdin?: string; tty?: boolean } = {}): Promise<RunResult> {
  await sandbox.createContainer(id, {
    bundle: bundle.dir,
    args,
    stdio: { stdin: opts.stdin !== undefined, stdout: true, stderr: !opts.tty, terminal: opts.tty ?? false, rows: 33, cols: 101 },
  });
  try {
    await sandbox.startContainer(id);
    const out = collect();
    const err = collect();
    const attached = sandbox.attach(id, '', {
      stdin: opts.stdin !== undefined ? Readable.from([Buffer.from(opts.stdin)]) : undefined,
      stdout: out.stream,
      stderr: opts.tty ? undefined : err.stream,
    });
    const [exit] = await Promise.all([sandbox.wait(id), attached]);
    return { stdout: out.text(), stderr: err.text(), exitStatus: exit.exitStatus, oomKilled: exit.oomKilled };
  } finally {
    await sandbox.removeContainer(id);
  }
}

describe('a sandbox running containers', () => {
  let sandbox: Sandbox;
  let bundle: TestBundle;
  let vmPid = 0;

  before(async () => {
    bundle = makeBusyboxBundle();
    sandbox = await Sandbox.create({ driver: new QemuDriver(), id: 'main', image: requireImage(), runRoot, vcpus: 2, memoryMiB: 512, hostname: 'pod-one' });
    vmPid = sandbox.vm.pid;
  });

  after(async () => {
    await sandbox?.destroy();
    bundle?.remove();
    assert.equal(processAlive(vmPid), false, 'QEMU process still running after destroy');
    assert.deepEqual(mountsUnder(runRoot), [], 'mounts left under the run root');
    assert.deepEqual(entriesIn(runRoot), [], 'files left under the run root');
  });

  it('shows the guest kernel, not the host kernel', async () => {
    const r = await runIn(sandbox, 'uname', bundle, ['uname', '-r']);
    const guest = (await sandbox.guestDetails()).kernelRelease;
    assert.equal(r.stdout.trim(), guest);
    assert.notEqual(guest, release());
    assert.equal(r.exitStatus, 0);
  });

  it('keeps stdout, stderr and the exit status exact', async () => {
    const r = await runIn(sandbox, 'exact', bundle, ['sh', '-c', 'echo out; echo err >&2; exit 7']);
    assert.deepEqual([r.stdout, r.stderr, r.exitStatus], ['out\n', 'err\n', 7]);
  });

  it('pipes stdin through and closes it at EOF', async () => {
    const input = 'line one\nline two\n' + 'x'.repeat(200_000) + '\n';
    const r = await runIn(sandbox, 'cat', bundle, ['cat'], { stdin: input });
    assert.equal(r.stdout, input);
    assert.equal(r.exitStatus, 0);
  });

  it('gives a terminal in tty mode with the requested size', async () => {
    const r = await runIn(sandbox, 'tty', bundle, ['sh', '-c', 'tty; stty size'], { tty: true });
    assert.match(r.stdout, /\/dev\/pts\/\d+/);
    assert.match(r.stdout, /33 101/);
    assert.equal(r.exitStatus, 0);
  });

  it('sees a terminal resize', async () => {
    await sandbox.createContainer('resize', { bundle: bundle.dir, args: ['sh', '-c', 'read line; stty size'], stdio: { stdin: true, stdout: true, terminal: true, rows: 24, cols: 80 } });
    try {
      await sandbox.startContainer('resize');
      const out = collect();
      const stdin = new PassThrough();
      const attached = sandbox.attach('resize', '', { stdin, stdout: out.stream });
      await sandbox.resize('resize', '', 40, 120);
      stdin.end('go\n');
      const [exit] = await Promise.all([sandbox.wait('resize'), attached]);
      assert.match(out.text(), /40 120/);
      assert.equal(exit.exitStatus, 0);
    } finally {
      await sandbox.removeContainer('resize');
    }
  });

  it('delivers SIGTERM and SIGKILL', async () => {
    await sandbox.createContainer('sleeper', { bundle: bundle.dir, args: ['sleep', '1000'], stdio: {} });
    try {
      await sandbox.startContainer('sleeper');
      // sleep as PID 1 of its namespace ignores SIGTERM (as in any container); an exec'd one does not.
      await sandbox.exec('sleeper', 'term', { args: ['sleep', '1000'], cwd: '/', env: ['PATH=/bin'] }, {});
      const termWait = sandbox.wait('sleeper', 'term');
      await sandbox.signal('sleeper', 'term', 15);
      assert.equal((await termWait).exitStatus, 143);
      const initWait = sandbox.wait('sleeper');
      await sandbox.signal('sleeper', '', 9);
      assert.equal((await initWait).exitStatus, 137);
    } finally {
      await sandbox.removeContainer('sleeper');
    }
  });

  it('runs two containers in one VM, with exec, process lists and stats', async () => {
    for (const id of ['first', 'second']) {
      await sandbox.createContainer(id, { bundle: bundle.dir, args: ['sh', '-c', 'echo $$ > /tmp/pid; exec sleep 1000'], stdio: {} });
      await sandbox.startContainer(id);
    }
    try {
      const out = collect();
      await sandbox.exec('first', 'hello', { args: ['sh', '-c', 'echo hello from $(hostname); cat /proc/1/comm'], cwd: '/', env: ['PATH=/bin'] }, { stdout: true });
      const [exit] = await Promise.all([sandbox.wait('first', 'hello'), sandbox.attach('first', 'hello', { stdout: out.stream })]);
      assert.equal(exit.exitStatus, 0);
      // The container has its own UTS namespace with the spec's hostname.
      assert.equal(out.text(), 'hello from hull-test\nsleep\n');

      const processes = await sandbox.processes('second');
      assert.ok(processes.some((p) => p.command === 'sleep' && p.pid > 0), JSON.stringify(processes));
      const stats = await sandbox.stats('first');
      assert.ok((stats.memory?.usageBytes ?? 0n) > 0n, 'memory usage is zero');
      assert.ok((stats.pids?.current ?? 0n) >= 1n, 'no pids counted');
      assert.ok((stats.cpu?.usageUsec ?? 0n) > 0n, 'no CPU time counted');
    } finally {
      await sandbox.removeContainer('first');
      await sandbox.removeContainer('second');
    }
  });

  it('sizes the guest as requested', async () => {
    const r = await runIn(sandbox, 'size', bundle, ['sh', '-c', 'nproc; grep MemTotal /proc/meminfo']);
    const [nproc, memLine] = r.stdout.trim().split('\n');
    assert.equal(nproc, '2');
    const memKiB = Number(/(\d+) kB/.exec(memLine ?? '')?.[1]);
    assert.ok(memKiB > 400 * 1024 && memKiB <= 512 * 1024, `MemTotal ${memKiB} kB for a 512 MiB VM`);
  });

  it('OOM-kills a container at its memory limit and the VM lives on', async () => {
    const limited = makeBusyboxBundle(['sh'], { memoryLimitBytes: 32 * 1024 * 1024 });
    try {
      // Doubling a shell variable grows without bound.
      const r = await runIn(sandbox, 'hog', limited, ['sh', '-c', 'x=0123456789; while true; do x="$x$x"; done']);
      assert.equal(r.exitStatus, 137);
      assert.equal(r.oomKilled, true);
      const after = await runIn(sandbox, 'alive', bundle, ['echo', 'still here']);
      assert.equal(after.stdout, 'still here\n');
    } finally {
      limited.remove();
    }
  });

  it('rejects a malformed OCI spec with a clear error', async () => {
    const bad = makeBusyboxBundle();
    try {
      writeFileSync(join(bad.dir, 'config.json'), '{"ociVersion": "1.0.2", "process": ');
      await assert.rejects(sandbox.createContainer('bad-spec', { bundle: bad.dir, stdio: {} }), /Malformed OCI spec/);
      assert.equal(existsSync(join(sandbox.sharedDir, 'bad-spec')), false);
    } finally {
      bad.remove();
    }
  });

  it('rejects a missing rootfs with a clear error and leaves nothing behind', async () => {
    const bad = makeBusyboxBundle();
    try {
      rmSync(bad.rootfs, { recursive: true });
      await assert.rejects(sandbox.createContainer('no-rootfs', { bundle: bad.dir, stdio: {} }), /Cannot share rootfs/);
      assert.deepEqual(mountsUnder(join(sandbox.sharedDir, 'no-rootfs')), []);
      assert.equal(existsSync(join(sandbox.sharedDir, 'no-rootfs')), false);
    } finally {
      bad.remove();
    }
  });

  it('reports a nonexistent command clearly', async () => {
    await sandbox.createContainer('nocmd', { bundle: bundle.dir, args: ['no-such-command'], stdio: {} });
    try {
      await assert.rejects(sandbox.startContainer('nocmd'), /executable file `no-such-command` not found/);
    } finally {
      await sandbox.removeContainer('nocmd');
    }
  });
});

describe('a VM that cannot boot', () => {
  it('fails fast on a broken kernel path and leaves nothing', async () => {
    const assets = requireImage();
    await assert.rejects(
      Sandbox.create({ driver: new QemuDriver(), id: 'nokernel', image: { ...assets, kernel: '/nonexistent/vmlinuz' }, runRoot, memoryMiB: 256, bootTimeoutMs: 20_000 }),
      /vmlinuz/,
    );
    assert.deepEqual(entriesIn(runRoot), []);
  });

  it('reports a guest that panics with the console tail, within the boot timeout', async () => {
    const assets = requireImage();
    const garbage = join(runRoot, '..', `garbage-initrd-${process.pid}`);
    writeFileSync(garbage, Buffer.alloc(4096, 0x5a));
    try {
      await assert.rejects(
        Sandbox.create({ driver: new QemuDriver(), id: 'panic', image: { ...assets, initrd: garbage }, runRoot, memoryMiB: 256, bootTimeoutMs: 60_000 }),
        (e: Error) => /failed to boot/.test(e.message) && /panic|VFS|init/i.test(e.message),
      );
      assert.deepEqual(entriesIn(runRoot), []);
    } finally {
      rmSync(garbage, { force: true });
    }
  });
});
