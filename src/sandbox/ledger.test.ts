/**
 * The ledger against real mounts and processes (root, no VM): whatever step of a sandbox's create
 * a crash interrupts, replaying the ledger with nothing in memory (what `shim delete` does) leaves
 * nothing behind, and replaying twice is harmless. Also: what replay refuses to touch.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createServer } from 'node:net';
import { appendFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, statSync, symlinkSync, unlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { Ledger, readLedger, replayLedger } from './ledger.js';
import { mountPointsUnder, readMountinfoSync } from '../common/mountinfo.js';
import { bindMount, unmount } from './mounts.js';
import { processStartTime } from '../common/process.js';
import { makeShare, shareContainer, shareLayout } from './share.js';
import type { HostShare } from './volumes.js';

mkdirSync('/run/hull-test', { recursive: true, mode: 0o700 });
const base = mkdtempSync('/run/hull-test/ledger-');
const sources = join(base, 'sources');
mkdirSync(join(sources, 'rootfs'), { recursive: true });
mkdirSync(join(sources, 'data'));
writeFileSync(join(sources, 'data', 'keep'), 'keep\n');
writeFileSync(join(sources, 'hosts'), '127.0.0.1 localhost\n');
const started: number[] = [];

after(() => {
  for (const pid of started) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // gone
    }
  }
  assert.deepEqual(mounts(base), [], 'mounts left under the test directory');
  rmSync(base, { recursive: true, force: true });
});

function mounts(dir: string): string[] {
  return mountPointsUnder(readMountinfoSync(), dir);
}

function volume(name: string, source: string, file: boolean, readOnly: boolean): HostShare {
  const st = statSync(source);
  return { name, source, destination: `/v${name}`, realSource: source, file, readOnly, propagation: 'private', dev: st.dev, ino: st.ino };
}

/** The steps of a sandbox's create and its containers', in order, as Sandbox.create runs them. */
const steps: Array<{ name: string; run: (ledger: Ledger, stateDir: string) => Promise<void> }> = [
  { name: 'share', run: (ledger, stateDir) => makeShare(ledger, shareLayout(stateDir)) },
  {
    name: 'process',
    run: async (ledger) => {
      const child = spawn('sleep', ['600'], { stdio: 'ignore', detached: true });
      child.unref();
      started.push(child.pid!);
      await ledger.recordProcess('', child.pid!);
    },
  },
  {
    name: 'container c1',
    run: (ledger, stateDir) =>
      shareContainer(ledger, shareLayout(stateDir), 'c1', join(sources, 'rootfs'), [volume('1', join(sources, 'data'), false, true), volume('2', join(sources, 'hosts'), true, false)]),
  },
  { name: 'container c2', run: (ledger, stateDir) => shareContainer(ledger, shareLayout(stateDir), 'c2', join(sources, 'rootfs'), [volume('0', join(sources, 'data'), false, false)]) },
];

for (let crashAfter = 0; crashAfter <= steps.length; crashAfter++) {
  test(`replayLedger() after a crash following step ${crashAfter} of ${steps.length} leaves nothing`, async () => {
    const stateDir = join(base, `crash-${crashAfter}`);
    mkdirSync(stateDir, { mode: 0o700 });
    const ledger = await Ledger.open(stateDir);
    ledger.record('', { kind: 'state-dir', path: stateDir });
    const pidsBefore = started.length;
    for (const step of steps.slice(0, crashAfter)) await step.run(ledger, stateDir);
    ledger.close(); // the crash: nothing in memory is released
    const lines: string[] = [];
    assert.equal(await replayLedger(stateDir, { log: (l) => lines.push(l) }), 0, lines.join('\n'));
    assert.deepEqual(mounts(stateDir), []);
    assert.equal(existsSync(stateDir), false, 'state directory left');
    for (const pid of started.slice(pidsBefore)) assert.equal(processStartTime(pid), undefined, `process ${pid} still runs`);
    // Twice is harmless.
    assert.equal(await replayLedger(stateDir), 0);
    assert.equal(readFileSync(join(sources, 'data', 'keep'), 'utf8'), 'keep\n', 'a volume source was touched');
  });
}

test('a read-only volume is read-only in the guest\'s view from the first instant, and the view refuses every change to its structure', async () => {
  const stateDir = join(base, 'view');
  mkdirSync(stateDir, { mode: 0o700 });
  const ledger = await Ledger.open(stateDir);
  ledger.record('', { kind: 'state-dir', path: stateDir });
  const layout = shareLayout(stateDir);
  await makeShare(ledger, layout);
  await shareContainer(ledger, layout, 'c1', join(sources, 'rootfs'), [volume('1', join(sources, 'data'), false, true)]);
  const view = join(layout.sharedDir, 'c1');
  const entries = readMountinfoSync();
  const flags = (point: string) => entries.filter((e) => e.mountPoint === point).map((e) => e.mountOptions[0]);
  assert.deepEqual(flags(join(view, 'volumes', '1')), ['ro']);
  assert.deepEqual(flags(join(view, 'rootfs')), ['rw']);
  assert.deepEqual(flags(layout.sharedDir), ['ro']);
  // QEMU must never open a device node for the guest: nodev on every bind it reaches.
  for (const point of [join(view, 'rootfs'), join(view, 'volumes', '1')]) {
    assert.ok(entries.filter((e) => e.mountPoint === point).every((e) => e.mountOptions.includes('nodev') && e.mountOptions.includes('nosuid')), point);
  }
  // What QEMU's 9p server would do for the guest, done through the view: all refused.
  for (const attempt of [
    () => symlinkSync('/etc', join(view, 'evil')),
    () => renameSync(join(view, 'rootfs'), join(view, 'moved')),
    () => mkdirSync(join(layout.sharedDir, 'c2')),
    () => unlinkSync(join(view, 'volumes', '1', 'keep')),
    () => writeFileSync(join(view, 'volumes', '1', 'new'), 'x'),
  ]) {
    assert.throws(attempt, { code: 'EROFS' });
  }
  // The writable rootfs stays writable, as the pod may write it.
  writeFileSync(join(view, 'rootfs', 'written'), 'ok');
  rmSync(join(sources, 'rootfs', 'written'));
  ledger.close();
  assert.equal(await replayLedger(stateDir), 0);
  assert.equal(existsSync(stateDir), false);
});

test('replayLedger() of one scope releases that container only', async () => {
  const stateDir = join(base, 'scope');
  mkdirSync(stateDir, { mode: 0o700 });
  const ledger = await Ledger.open(stateDir);
  ledger.record('', { kind: 'state-dir', path: stateDir });
  const layout = shareLayout(stateDir);
  await makeShare(ledger, layout);
  await shareContainer(ledger, layout, 'c1', join(sources, 'rootfs'), []);
  await shareContainer(ledger, layout, 'c2', join(sources, 'rootfs'), []);
  assert.equal(await replayLedger(stateDir, { scope: 'c1' }), 0);
  assert.equal(existsSync(join(layout.mountsDir, 'c1')), false);
  assert.deepEqual(mounts(join(layout.mountsDir, 'c2')), [join(layout.mountsDir, 'c2', 'rootfs')]);
  ledger.close();
  assert.equal(await replayLedger(stateDir), 0);
  assert.equal(existsSync(stateDir), false);
});

test('replayLedger() leaves a mount it did not make, a reused pid and paths outside the state dir alone', async () => {
  const stateDir = join(base, 'foreign');
  mkdirSync(stateDir, { mode: 0o700 });
  const ledger = await Ledger.open(stateDir);
  ledger.record('', { kind: 'state-dir', path: stateDir });
  const target = join(stateDir, 'm');
  ledger.record('', { kind: 'dir', path: target });
  mkdirSync(target);
  const seq = ledger.record('', { kind: 'mount', target });
  await bindMount(join(sources, 'data'), target);
  await ledger.noteMount(seq, target);
  // Someone else's mount now sits on top at that path: not the recorded one.
  await bindMount(join(sources, 'rootfs'), target);
  // A pid that now names another process (start time differs).
  const child = spawn('sleep', ['600'], { stdio: 'ignore' });
  started.push(child.pid!);
  ledger.record('', { kind: 'process', pid: child.pid!, startTime: '1' });
  ledger.close();
  // Lines that name things outside the state dir are never acted on.
  const outside = join(base, 'outside');
  mkdirSync(outside);
  appendFileSync(join(stateDir, 'ledger'), JSON.stringify({ seq: 100, scope: '', resource: { kind: 'dir', path: outside } }) + '\n');
  appendFileSync(join(stateDir, 'ledger'), JSON.stringify({ seq: 101, scope: '', resource: { kind: 'state-dir', path: outside } }) + '\n');
  appendFileSync(join(stateDir, 'ledger'), 'not json\n');
  const skipped: string[] = [];
  assert.equal((await readLedger(stateDir, (l) => skipped.push(l))).length, 4);
  assert.equal(skipped.length, 3);
  // The foreign mount stays, so the state dir is kept (a failure), the sleep runs on.
  assert.ok((await replayLedger(stateDir)) > 0);
  assert.equal(existsSync(stateDir), true);
  assert.equal(existsSync(outside), true);
  assert.notEqual(processStartTime(child.pid!), undefined);
  assert.equal(readMountinfoSync().filter((m) => m.mountPoint === target).length, 2);
  await unmount(target);
  await unmount(target);
  assert.equal(await replayLedger(stateDir), 0);
  assert.equal(existsSync(stateDir), false);
  child.kill('SIGKILL');
});

test('a slave volume passes mounts the host makes later below its source on to the guest\'s view', async () => {
  const stateDir = join(base, 'propagation');
  mkdirSync(stateDir, { mode: 0o700 });
  const source = join(base, 'shared-source');
  mkdirSync(join(source, 'later'), { recursive: true });
  // As kubelet requires for HostToContainer: the source is a shared mount.
  await bindMount(source, source);
  const { execFileSync } = await import('node:child_process');
  execFileSync('mount', ['--make-shared', source]);
  const ledger = await Ledger.open(stateDir);
  ledger.record('', { kind: 'state-dir', path: stateDir });
  const layout = shareLayout(stateDir);
  await makeShare(ledger, layout);
  const st = statSync(source);
  await shareContainer(ledger, layout, 'c1', join(sources, 'rootfs'), [
    { name: '1', source, destination: '/h2c', realSource: source, file: false, readOnly: true, propagation: 'slave', dev: st.dev, ino: st.ino },
    { name: '2', source, destination: '/private', realSource: source, file: false, readOnly: true, propagation: 'private', dev: st.dev, ino: st.ino },
  ]);
  execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'hull-later', join(source, 'later')]);
  writeFileSync(join(source, 'later', 'f'), 'later\n');
  try {
    assert.equal(readFileSync(join(layout.sharedDir, 'c1', 'volumes', '1', 'later', 'f'), 'utf8'), 'later\n');
    assert.equal(existsSync(join(layout.sharedDir, 'c1', 'volumes', '2', 'later', 'f')), false, 'a private volume received a later mount');
  } finally {
    ledger.close();
    assert.equal(await replayLedger(stateDir), 0);
    await unmount(join(source, 'later'));
    await unmount(source);
  }
  assert.equal(existsSync(stateDir), false);
});

test('replayLedger() removes the status socket of its sandbox outside the state dir, and nothing else of that name', async () => {
  const stateDir = join(base, 'sb-status');
  const statusDir = join(base, 'status');
  mkdirSync(stateDir, { mode: 0o700 });
  mkdirSync(statusDir);
  const ledger = await Ledger.open(stateDir);
  ledger.record('', { kind: 'state-dir', path: stateDir });
  const socketPath = join(statusDir, 'sb-status.sock');
  ledger.record('', { kind: 'status-socket', path: socketPath });
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(socketPath, resolve));
  assert.throws(() => ledger.record('', { kind: 'status-socket', path: join(statusDir, 'other.sock') }), /Not a ledger resource/);
  assert.throws(() => ledger.record('', { kind: 'status-socket', path: join(stateDir, 'sb-status.sock') }), /Not a ledger resource/);
  ledger.close();
  // A regular file where the socket was is not removed (a failure), the socket is.
  const fileDir = join(base, 'status-file');
  mkdirSync(fileDir);
  writeFileSync(join(fileDir, 'sb-status.sock'), 'keep\n');
  appendFileSync(join(stateDir, 'ledger'), JSON.stringify({ seq: 50, scope: '', resource: { kind: 'status-socket', path: join(fileDir, 'sb-status.sock') } }) + '\n');
  assert.equal(await replayLedger(stateDir), 1);
  assert.equal(existsSync(socketPath), false);
  assert.equal(readFileSync(join(fileDir, 'sb-status.sock'), 'utf8'), 'keep\n');
  assert.equal(existsSync(stateDir), false);
  await new Promise<void>((resolve) => server.close(() => resolve()));
});
