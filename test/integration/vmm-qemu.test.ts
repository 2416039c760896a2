/**
 * QemuDriver against real QEMU (TCG here): a VM that cannot start, a guest whose kernel panics, and
 * a guest that boots a tiny initramfs and is shut down. Each test checks that no QEMU process and no
 * driver file outlives it (the console log stays by design). Processes are found by the pid the
 * driver reported or by the exact `-name hull-<id>` argument of our own unique ids, never killed by name.
 *
 * The guest kernel comes from $HULL_TEST_KERNEL or /var/lib/hull/guest/current/vmlinuz; the tests
 * that boot a kernel are skipped when neither exists.
 */

import { strict as assert } from 'node:assert';
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it, type TestContext } from 'node:test';
import { errorCode } from '../../src/errors/index.js';
import { QemuDriver, type VmHandle, type VmSpec } from '../../src/vmm/index.js';
import { processAlive } from '../helpers/leaks.js';

const KERNEL = [process.env.HULL_TEST_KERNEL, '/var/lib/hull/guest/current/kernel'].find((path) => path && existsSync(path));
const NO_KERNEL = KERNEL === undefined ? 'no guest kernel: set HULL_TEST_KERNEL or build /var/lib/hull/guest/current' : false;
const READY_MARKER = 'HULL-VMM-TEST-READY';
/** GUEST_BOUND_MS bounds waits on the guest; generous, because TCG on a busy host is slow. */
const GUEST_BOUND_MS = 90_000;

let root: string;
before(async () => {
  root = await mkdtemp(join(tmpdir(), 'hull-vmm-it-'));
});
after(async () => {
  await rm(root, { recursive: true, force: true });
});

let count = 0;
/**
 * vmSpec makes a fresh state dir (0700), share dir and empty root disk for one VM, and registers
 * the cleanup and leak check: the VM is shut down, its pid must be gone, and no process may carry
 * its name.
 */
async function vmSpec(t: TestContext, change: Partial<VmSpec>): Promise<{ spec: VmSpec; track(vm: VmHandle): VmHandle }> {
  const id = `vmmtest-${process.pid}-${count++}`;
  const dir = join(root, id);
  const spec: VmSpec = {
    id,
    stateDir: join(dir, 'state'),
    vcpus: 1,
    memoryMiB: 256,
    kernel: KERNEL ?? '/nonexistent',
    initrd: join(dir, 'initrd.img'),
    rootDisk: join(dir, 'root.img'),
    sharedDir: join(dir, 'shared'),
    ...change,
  };
  await mkdir(spec.stateDir, { recursive: true, mode: 0o700 });
  await mkdir(spec.sharedDir);
  await writeFile(spec.rootDisk, Buffer.alloc(1024 * 1024));
  let handle: VmHandle | undefined;
  t.after(async () => {
    await handle?.shutdown({ deadlineMs: 1000 });
    if (handle !== undefined) assert.ok(!processAlive(handle.pid), `QEMU pid ${handle.pid} survived`);
    assert.deepEqual(pidsNamed(`hull-${id}`), [], 'a QEMU process of this test survived');
  });
  return { spec, track: (vm) => (handle = vm) };
}

/** pidsNamed lists processes with `name` as one whole argument (our -name hull-<id>). */
function pidsNamed(name: string): number[] {
  return readdirSync('/proc')
    .filter((entry) => /^\d+$/.test(entry))
    .filter((pid) => {
      try {
        return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').includes(name);
      } catch {
        return false; // exited meanwhile
      }
    })
    .map(Number);
}

/** driverFiles lists what is left in a state dir besides the console log, which stays by design. */
function driverFiles(stateDir: string): string[] {
  return readdirSync(stateDir).filter((name) => !name.startsWith('console.log'));
}

async function eventually(what: string, check: () => boolean, vm: VmHandle): Promise<void> {
  const deadline = Date.now() + GUEST_BOUND_MS;
  while (!check()) {
    if (Date.now() > deadline) assert.fail(`${what} did not happen within ${GUEST_BOUND_MS} ms; console:\n${vm.consoleTail(4096)}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** newc builds an uncompressed "newc" cpio archive, the format the kernel unpacks as initramfs. */
function newc(entries: Array<{ name: string; mode: number; data?: Buffer; rdev?: [number, number] }>): Buffer {
  const pad = (length: number) => Buffer.alloc((4 - (length % 4)) % 4);
  const parts: Buffer[] = [];
  const all = [...entries, { name: 'TRAILER!!!', mode: 0, data: undefined, rdev: undefined }];
  all.forEach((entry, index) => {
    const data = entry.data ?? Buffer.alloc(0);
    const name = Buffer.from(entry.name + '\0');
    const fields = [index + 1, entry.mode, 0, 0, 1, 0, data.length, 0, 0, entry.rdev?.[0] ?? 0, entry.rdev?.[1] ?? 0, name.length, 0];
    const header = Buffer.from('070701' + fields.map((field) => field.toString(16).padStart(8, '0')).join(''));
    parts.push(header, name, pad(header.length + name.length), data, pad(data.length));
  });
  return Buffer.concat(parts);
}

/** busyboxInitramfs is a guest that prints READY_MARKER on its console and then sleeps. */
async function busyboxInitramfs(): Promise<Buffer> {
  const init = `#!/bin/busybox sh\n/bin/busybox echo ${READY_MARKER}\nexec /bin/busybox sleep 3600\n`;
  return newc([
    { name: 'bin', mode: 0o040755 },
    { name: 'bin/busybox', mode: 0o100755, data: await readFile('/bin/busybox') },
    { name: 'dev', mode: 0o040755 },
    { name: 'dev/console', mode: 0o020600, rdev: [5, 1] },
    { name: 'init', mode: 0o100755, data: Buffer.from(init) },
  ]);
}

const QEMU_MISSING = spawnSync('qemu-system-x86_64', ['--version']).status === 0 ? false : 'qemu-system-x86_64 is not installed';

describe('QemuDriver with real QEMU', { skip: QEMU_MISSING }, () => {
  it('start() rejects with QEMU\'s message when the kernel does not exist, leaving no process or file', async (t) => {
    const { spec } = await vmSpec(t, { kernel: join(root, 'no-such-vmlinuz') });
    await writeFile(spec.initrd, Buffer.alloc(512));
    const started = Date.now();
    await assert.rejects(new QemuDriver().start(spec), (error: Error) => {
      assert.equal(errorCode(error), 'internal');
      assert.match(error.message, /QEMU exited \(code 1\) before it was ready/);
      assert.match(error.message, /could not open kernel file .*no-such-vmlinuz/);
      return true;
    });
    t.diagnostic(`failure reported after ${Date.now() - started} ms`);
    assert.deepEqual(pidsNamed(`hull-${spec.id}`), []);
    assert.deepEqual(readdirSync(spec.stateDir), []);
  });

  it('reports the exit of a guest whose kernel panics, with the panic on the console', { skip: NO_KERNEL }, async (t) => {
    const { spec, track } = await vmSpec(t, {});
    await writeFile(spec.initrd, Buffer.alloc(64 * 1024, 0x5a)); // not an initramfs: no root fs, panic
    const started = Date.now();
    const vm = track(await new QemuDriver().start(spec));
    t.diagnostic(`start() took ${Date.now() - started} ms (spawn to QMP ready, console attached, vCPUs running)`);
    let timer: NodeJS.Timeout | undefined;
    const exit = await Promise.race([
      vm.exited,
      new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`no exit; console:\n${vm.consoleTail()}`)), GUEST_BOUND_MS))),
    ]).finally(() => clearTimeout(timer));
    t.diagnostic(`exit noticed ${Date.now() - started} ms after start()`);
    // panic=-1 reboots at once and -no-reboot turns the reboot into QEMU exiting normally.
    assert.deepEqual(exit, { code: 0, signal: null });
    assert.match(vm.consoleTail(), /Kernel panic - not syncing: VFS: Unable to mount root fs/);
    assert.ok(!processAlive(vm.pid));
    await assert.rejects(vm.pause(), (error: unknown) => errorCode(error) === 'failed_precondition');

    await vm.shutdown();
    await vm.shutdown(); // idempotent, and fine after the VM died on its own
    assert.deepEqual(driverFiles(spec.stateDir), []);
    assert.match(await readFile(join(spec.stateDir, 'console.log'), 'utf8'), /Kernel panic/);
  });

  it('boots a kernel with a tiny initramfs, pauses, resumes and shuts down without leftovers', { skip: NO_KERNEL }, async (t) => {
    const { spec, track } = await vmSpec(t, { vcpus: 2 });
    await writeFile(spec.initrd, await busyboxInitramfs());
    const started = Date.now();
    const vm = track(await new QemuDriver().start(spec));
    t.diagnostic(`start() took ${Date.now() - started} ms`);
    assert.equal(vm.accel, 'tcg'); // no hardware virtualization on our machines (DESIGN.md)
    assert.equal(vm.agentSocketPath, join(spec.stateDir, 'agent.sock'));
    assert.deepEqual(pidsNamed(`hull-${spec.id}`), [vm.pid]);
    assert.equal(readFileSync(join(spec.stateDir, 'qemu.pid'), 'utf8').trim(), String(vm.pid));
    // No RAM file: a cold boot's guest RAM is anonymous memory of QEMU (issue 20), never a file under /run.
    assert.deepEqual(driverFiles(spec.stateDir).sort(), ['agent.sock', 'console.sock', 'qemu.pid', 'qmp.sock']);

    await eventually('the guest printing its marker', () => vm.consoleTail().includes(READY_MARKER), vm);
    t.diagnostic(`guest init ran ${Date.now() - started} ms after start()`);
    await vm.pause();
    await vm.resume();

    const stopping = Date.now();
    await vm.shutdown();
    t.diagnostic(`shutdown() took ${Date.now() - stopping} ms`);
    assert.ok(!processAlive(vm.pid), `QEMU pid ${vm.pid} is still alive`);
    assert.equal((await vm.exited).signal, null); // it quit; it was not killed
    assert.deepEqual(pidsNamed(`hull-${spec.id}`), []);
    assert.deepEqual(driverFiles(spec.stateDir), []);
    assert.match(await readFile(join(spec.stateDir, 'console.log'), 'utf8'), new RegExp(READY_MARKER));
    await assert.rejects(vm.resume(), (error: unknown) => errorCode(error) === 'failed_precondition');
  });

  it('shutdown() SIGKILLs a QEMU that does not quit before the deadline', { skip: NO_KERNEL }, async (t) => {
    const { spec, track } = await vmSpec(t, {});
    await writeFile(spec.initrd, await busyboxInitramfs());
    const vm = track(await new QemuDriver().start(spec));
    process.kill(vm.pid, 'SIGSTOP'); // our own child, by its pid: it can no longer answer QMP
    await vm.shutdown({ deadlineMs: 300 });
    assert.deepEqual(await vm.exited, { code: null, signal: 'SIGKILL' });
    assert.ok(!processAlive(vm.pid));
    assert.deepEqual(driverFiles(spec.stateDir), []);
  });

  it('refuses to start a second VM on the state dir of a running one', { skip: NO_KERNEL }, async (t) => {
    const { spec, track } = await vmSpec(t, {});
    await writeFile(spec.initrd, await busyboxInitramfs());
    const vm = track(await new QemuDriver().start(spec));
    await assert.rejects(new QemuDriver().start(spec), (error: unknown) => errorCode(error) === 'already_exists');
    assert.deepEqual(pidsNamed(`hull-${spec.id}`), [vm.pid]);
    assert.deepEqual(driverFiles(spec.stateDir).sort(), ['agent.sock', 'console.sock', 'qemu.pid', 'qmp.sock']);
  });
});
