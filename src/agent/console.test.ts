import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { errorCode } from '../errors/index.js';
import { GuestConsole } from './console.js';
import type { OutputBuffer } from './output-buffer.js';

// Console processes are plain child processes: what needs no VM runs here, on the host's /bin/sh.
const dir = mkdtempSync(join(tmpdir(), 'hull-console-'));
after(() => rmSync(dir, { recursive: true, force: true }));
const stdio = { stdin: true, stdout: true, stderr: true, terminal: false, rows: 0, cols: 0 };

async function readAll(buffer: OutputBuffer): Promise<string> {
  let text = '';
  for (;;) {
    const { data, eof } = await buffer.read(1 << 20);
    text += data.toString();
    if (eof) return text;
  }
}

test('a console refuses every process until the host enables it', async () => {
  const guestConsole = new GuestConsole(dir);
  await assert.rejects(guestConsole.start('c1', { args: ['true'] }, stdio), (e: Error) => errorCode(e) === 'failed_precondition' && /debug console is off/.test(e.message));
  assert.equal(guestConsole.count, 0);
});

test('an enabled console runs the command with its stdio, reports its pid and status, and forgets it', async () => {
  const guestConsole = new GuestConsole(dir);
  guestConsole.enable();
  const pid = await guestConsole.start('c2', { args: ['sh', '-c', 'echo "pid $$"; cat; echo oops >&2; exit 7'] }, stdio);
  const proc = guestConsole.process('c2');
  await proc.writeStdin(Buffer.from('from stdin\n'));
  proc.closeStdin();
  const [out, err, exit] = await Promise.all([readAll(proc.stdout), readAll(proc.stderr), proc.exited]);
  assert.equal(out, `pid ${pid}\nfrom stdin\n`, 'the pid reported is the command\'s');
  assert.equal(err, 'oops\n');
  assert.equal(exit.exitStatus, 7);
  await guestConsole.remove('c2');
  assert.equal(guestConsole.count, 0);
  assert.deepEqual(readdirSync(dir), []);
  assert.throws(() => guestConsole.process('c2'), (e: Error) => errorCode(e) === 'not_found');
});

test('removing a console process that still runs kills it', async () => {
  const guestConsole = new GuestConsole(dir);
  guestConsole.enable();
  await guestConsole.start('c3', { args: ['sleep', '1000'] }, stdio);
  const proc = guestConsole.process('c3');
  await guestConsole.remove('c3');
  assert.equal((await proc.exited).exitStatus, 128 + 9);
});

test('a console checks the command and the exec id', async () => {
  const guestConsole = new GuestConsole(dir);
  guestConsole.enable();
  for (const args of [[], ['a', 1], 'sh', Array(300).fill('x')]) {
    await assert.rejects(guestConsole.start('c4', { args: args as string[] }, stdio), /Invalid console command/, JSON.stringify(args));
  }
  await assert.rejects(guestConsole.start('../x', { args: ['true'] }, stdio), /Invalid exec id/);
  assert.equal(guestConsole.count, 0);
});
