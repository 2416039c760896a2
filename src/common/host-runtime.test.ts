import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { HOST_RUNTIME_LOADER, HOST_RUNTIME_MARKER, hostRuntimeOf, useHostRuntime } from './host-runtime.js';

describe('host runtime', () => {
  const dir = mkdtempSync(join(tmpdir(), 'hull-runtime-test-'));
  after(() => rmSync(dir, { recursive: true, force: true }));
  const runtime = join(dir, 'opt', 'runtime');
  const plain = join(dir, 'usr');
  for (const d of [join(runtime, 'bin'), join(runtime, 'lib'), join(plain, 'bin')]) mkdirSync(d, { recursive: true });
  writeFileSync(join(runtime, HOST_RUNTIME_MARKER), 'hull node runtime\n');

  it('is the marked directory whose bin/ holds the program, and nothing else', () => {
    assert.equal(hostRuntimeOf(join(runtime, 'bin', 'qemu-system-x86_64')), runtime);
    assert.equal(hostRuntimeOf(join(plain, 'bin', 'qemu-system-x86_64')), undefined);
    // node run through the runtime's loader (the installer's own use): not the runtime's node.
    assert.equal(hostRuntimeOf(join(runtime, HOST_RUNTIME_LOADER)), undefined);
    assert.equal(hostRuntimeOf('/node'), undefined);
  });

  it("puts the runtime's bin first on PATH once, with iptables' extensions", () => {
    const env: NodeJS.ProcessEnv = { PATH: '/usr/sbin:/usr/bin' };
    assert.equal(useHostRuntime(env, join(runtime, 'bin', 'node')), runtime);
    assert.equal(useHostRuntime(env, join(runtime, 'bin', 'node')), runtime);
    assert.equal(env['PATH'], `${runtime}/bin:/usr/sbin:/usr/bin`);
    assert.equal(env['XTABLES_LIBDIR'], `${runtime}/lib/xtables`);
  });

  it("leaves the environment alone for the host's own node", () => {
    const env: NodeJS.ProcessEnv = { PATH: '/usr/sbin:/usr/bin' };
    assert.equal(useHostRuntime(env, join(plain, 'bin', 'node')), undefined);
    assert.deepEqual(env, { PATH: '/usr/sbin:/usr/bin' });
  });
});
