/**
 * Unit tests of QemuDriver's process handling, with stand-in executables instead of QEMU (the real
 * QEMU runs in test/integration/vmm-qemu.test.ts).
 */

import { strict as assert } from 'node:assert';
import { chmod, mkdir, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { errorCode } from '../errors/index.js';
import type { VmSpec } from './driver.js';
import { QemuDriver } from './qemu.js';
import { pidAlive } from '../common/process.js';

let root: string;
before(async () => {
  root = await mkdtemp(join(tmpdir(), 'hull-qemu-unit-'));
});
after(async () => {
  await rm(root, { recursive: true, force: true });
});

let count = 0;
async function newSpec(change: Partial<VmSpec> = {}): Promise<VmSpec> {
  const id = `unit-${count++}`;
  const stateDir = join(root, id);
  await mkdir(stateDir, { mode: 0o700 });
  return { id, stateDir, vcpus: 1, memoryMiB: 128, kernel: '/k', initrd: '/i', rootDisk: '/r', sharedDir: root, accel: 'tcg', ...change };
}

/** script writes an executable shell script standing in for QEMU. */
async function script(name: string, body: string): Promise<string> {
  const path = join(root, name);
  await writeFile(path, `#!/bin/sh\n${body}\n`);
  await chmod(path, 0o755);
  return path;
}

describe('QemuDriver.start()', () => {
  it('rejects a bad spec as invalid_argument without running anything', async () => {
    const driver = new QemuDriver({ binary: '/nonexistent/qemu' });
    await assert.rejects(driver.start(await newSpec({ id: 'bad,id' })), (error: unknown) => errorCode(error) === 'invalid_argument');
  });

  it('rejects failed_precondition when the QEMU binary cannot run', async () => {
    const driver = new QemuDriver({ binary: join(root, 'no-such-qemu') });
    await assert.rejects(driver.start(await newSpec()), (error: Error) => errorCode(error) === 'failed_precondition' && /no-such-qemu/.test(error.message));
  });

  it('reports an early exit with what the process wrote to stderr, and leaves no files', async () => {
    const binary = await script('exits.sh', 'echo "qemu: could not open kernel file" >&2\nexit 1');
    const spec = await newSpec();
    await assert.rejects(new QemuDriver({ binary }).start(spec), (error: Error) => {
      assert.equal(errorCode(error), 'internal');
      assert.match(error.message, /exited \(code 1\) before it was ready/);
      assert.match(error.message, /could not open kernel file/);
      return true;
    });
    assert.deepEqual(await readdir(spec.stateDir), []);
  });

  it('kills a process that never brings up QMP once startTimeoutMs passes', async () => {
    const pidFile = join(root, 'hangs.pid'); // outside the state dir, so the test can read it after
    const binary = await script('hangs.sh', `echo $$ > ${pidFile}\nexec sleep 60`);
    const spec = await newSpec({ startTimeoutMs: 300 });
    await assert.rejects(new QemuDriver({ binary }).start(spec), (error: Error) => {
      assert.equal(errorCode(error), 'deadline_exceeded');
      assert.match(error.message, /not ready within 300 ms/);
      return true;
    });
    const pid = Number(await readFile(pidFile, 'utf8'));
    assert.ok(pid > 0);
    assert.ok(!pidAlive(pid), `stand-in pid ${pid} is still alive`);
    assert.deepEqual(await readdir(spec.stateDir), []);
  });
});
