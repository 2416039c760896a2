import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { ERROR_RECORD, Tape, syscallTapeElf } from './syscall-tape.js';

// The program is x86-64 Linux, as this machine and the guest are: it runs here as it runs there.
const dir = mkdtempSync(join(tmpdir(), 'hull-tape-'));
const program = join(dir, 'tape');
writeFileSync(program, syscallTapeElf());
chmodSync(program, 0o500);
after(() => rmSync(dir, { recursive: true, force: true }));

async function run(tape: Buffer): Promise<{ code: number | null; out: Buffer }> {
  const child = spawn(program, [], { stdio: ['ignore', 'pipe', 'inherit', 'pipe'] });
  const out: Buffer[] = [];
  child.stdout!.on('data', (d: Buffer) => out.push(d));
  (child.stdio[3] as NodeJS.WritableStream).end(tape);
  const code = await new Promise<number | null>((resolve) => child.once('close', resolve));
  return { code, out: Buffer.concat(out) };
}

test('the tape program runs syscalls in order, follows the fork child and execs', async () => {
  const t = new Tape();
  const pid = t.words([0n]);
  t.syscall(1, [1, t.string('one\n'), 4]);
  t.syscall(57, [], { store: pid, fail: 'failed' });
  t.ifZero('child');
  t.syscall(61, [{ load: pid }, 0, 0, 0]);
  t.syscall(1, [1, t.string('parent\n'), 7]);
  t.syscall(231, [0]);
  t.label('child');
  const argv = t.pointerArray(['/bin/sh', '-c', 'echo "child $X"']);
  const envp = t.pointerArray(['X=from-envp']);
  t.syscall(59, [t.string('/nonexistent/sh'), argv, envp]); // fails: the next op runs
  t.syscall(59, [t.string('/bin/sh'), argv, envp], { fail: 'failed' });
  t.label('failed');
  t.syscall(231, [9]);
  const { code, out } = await run(t.build());
  assert.equal(code, 0);
  assert.equal(out.toString(), 'one\nchild from-envp\nparent\n');
});

test('a failing syscall with a failure target leaves [op index, errno] at ERROR_RECORD', async () => {
  const t = new Tape();
  t.syscall(3, [999]); // EBADF, no target: the next op runs
  t.syscall(3, [998], { fail: 'failed' });
  t.syscall(231, [0]);
  t.label('failed');
  t.syscall(1, [1, BigInt(ERROR_RECORD), 16]);
  t.syscall(231, [7]);
  const { code, out } = await run(t.build());
  assert.equal(code, 7);
  assert.deepEqual([out.readBigInt64LE(0), out.readBigInt64LE(8)], [1n, 9n]);
});

test('an empty tape exits 0', async () => {
  assert.equal((await run(new Tape().build())).code, 0);
});
