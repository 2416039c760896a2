import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { closeSync, ftruncateSync, mkdtempSync, openSync, readdirSync, readSync, rmSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { STARTER_FD, STARTER_PATH, execStarter } from './exec-starter.js';
import { Tape, syscallTapeElf } from './syscall-tape.js';
import { planDirectExec } from './direct-exec.js';

const dir = mkdtempSync(join(tmpdir(), 'hull-starter-'));
after(() => rmSync(dir, { recursive: true, force: true }));

test('the exec starter is the tape program in a sealed memfd, and the bootstrap file is gone', async () => {
  const fd = await execStarter(dir);
  assert.equal(await execStarter(dir), fd, 'made once per agent');
  assert.deepEqual(readdirSync(dir), []);
  const elf = syscallTapeElf();
  const got = Buffer.alloc(elf.length + 16);
  assert.equal(readSync(fd, got, 0, got.length, 0), elf.length);
  assert.ok(got.subarray(0, elf.length).equals(elf));
  // Root included, nobody can change it: no write, no truncation, no growth.
  let rw: number | undefined;
  try {
    rw = openSync(`/proc/self/fd/${fd}`, 'r+');
  } catch (e) {
    assert.equal((e as NodeJS.ErrnoException).code, 'EPERM');
  }
  if (rw !== undefined) {
    assert.throws(() => writeSync(rw!, Buffer.from([0x90]), 0, 1, 0), { code: 'EPERM' });
    assert.throws(() => writeSync(rw!, Buffer.from([0x90]), 0, 1, elf.length), { code: 'EPERM' });
    assert.throws(() => ftruncateSync(rw!, 0), { code: 'EPERM' });
    closeSync(rw);
  }
});

test('a process runs the starter by fd: its executable is the memfd, and the tape can close the fd', async () => {
  const fd = await execStarter(dir);
  const t = new Tape();
  const link = t.bytes(Buffer.alloc(128));
  t.syscall(89, [t.string('/proc/self/exe'), link, 127]); // readlink
  t.syscall(1, [1, link, 128]);
  t.syscall(3, [STARTER_FD]);
  const result = t.words([0n]);
  t.syscall(72, [STARTER_FD, 1], { store: result }); // fcntl F_GETFD: EBADF once closed
  t.syscall(1, [1, result, 8]);
  const child = spawn(STARTER_PATH, [], { stdio: ['ignore', 'pipe', 'inherit', 'pipe', 'pipe', fd] });
  const out: Buffer[] = [];
  child.stdout!.on('data', (d: Buffer) => out.push(d));
  (child.stdio[3] as NodeJS.WritableStream).end(t.build());
  assert.equal(await new Promise((resolve) => child.once('close', resolve)), 0);
  const all = Buffer.concat(out);
  assert.match(all.subarray(0, 128).toString().replace(/\0+$/, ''), /^\/memfd:hull-exec-starter \(deleted\)$/);
  assert.equal(all.readBigInt64LE(128), -9n); // EBADF
});

test("a direct exec's tape closes the starter and makes itself non-dumpable before anything else", async () => {
  const target = { initPid: process.pid, spec: {}, cgroupProcs: '/x/cgroup.procs', paused: false, plans: new Map() };
  const plan = await planDirectExec(target, { args: ['true'], env: ['PATH=/bin', 'HOME=/'], cwd: '/', user: { uid: 0, gid: 0 } }, false, new Set());
  const op = (i: number, k: number) => plan!.tape.readBigInt64LE(8 + 88 * i + 8 * k);
  assert.deepEqual([op(0, 1), op(0, 2)], [3n, BigInt(STARTER_FD)]); // close(STARTER_FD)
  assert.deepEqual([op(1, 1), op(1, 2), op(1, 3)], [157n, 4n, 0n]); // prctl(PR_SET_DUMPABLE, 0), before the fork and every setns
});
