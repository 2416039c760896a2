import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { execStarter } from './exec-starter.js';
import { HOLDER_NAME, podPidNamespace } from './pod-pid-namespace.js';

const dir = mkdtempSync(join(tmpdir(), 'hull-holder-'));
let pid1 = 0;
after(() => {
  if (pid1) process.kill(pid1, 'SIGKILL');
  rmSync(dir, { recursive: true, force: true });
});

test('the pod PID namespace holder is PID 1 of a new namespace and holds nothing a container could use', async () => {
  await execStarter(dir); // the starter made here, not in the host's /run/hull
  const ns = await podPidNamespace();
  pid1 = Number(/^\/proc\/(\d+)\/ns\/pid$/.exec(ns)?.[1]);
  assert.ok(pid1 > 0, ns);
  assert.notEqual(readlinkSync(ns), readlinkSync('/proc/self/ns/pid'));
  const status = readFileSync(`/proc/${pid1}/status`, 'utf8');
  assert.match(status, /^NSpid:\s+\d+\s+1$/m, 'PID 1 in its namespace');
  assert.match(status, /^Uid:\s+65534\s+65534\s+65534\s+65534$/m);
  assert.match(status, /^Gid:\s+65534\s+65534\s+65534\s+65534$/m);
  assert.match(status, /^Groups:\s*$/m);
  for (const set of ['CapInh', 'CapPrm', 'CapEff', 'CapAmb']) assert.match(status, new RegExp(`^${set}:\\s+0+$`, 'm'));
  assert.match(status, /^NoNewPrivs:\s+1$/m);
  assert.equal(readlinkSync(`/proc/${pid1}/exe`), '/memfd:hull-exec-starter (deleted)');
  assert.deepEqual(readdirSync(`/proc/${pid1}/root`), [], 'its root is an empty tmpfs');
  assert.notEqual(readlinkSync(`/proc/${pid1}/ns/mnt`), readlinkSync('/proc/self/ns/mnt'));
  assert.equal(readFileSync(`/proc/${pid1}/cmdline`, 'utf8'), `${HOLDER_NAME}\0`);
});
