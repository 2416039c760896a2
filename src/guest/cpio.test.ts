import { test } from 'node:test';
import { strict as assert } from 'node:assert';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { lstat, mkdtemp, readFile, readlink, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { newcArchive, type CpioEntry } from './cpio.js';

const BUSYBOX = '/bin/busybox';
const haveBusybox = existsSync(BUSYBOX);

function sample(): { entries: CpioEntry[]; files: Map<string, Buffer> } {
  const files = new Map<string, Buffer>();
  const entries: CpioEntry[] = [
    { type: 'dir', path: 'bin' },
    { type: 'dir', path: '/etc', mode: 0o700, mtime: 1_700_000_000 },
    { type: 'dir', path: 'lib' },
    { type: 'dir', path: 'lib/modules', mode: 0o750 },
  ];
  // Names of 1..9 characters and data of 0..9 bytes walk through every padding case.
  for (let n = 0; n < 10; n++) {
    const name = `bin/${'x'.repeat(n + 1)}`;
    const data = randomBytes(n);
    files.set(name, data);
    entries.push({ type: 'file', path: name, data, mode: n % 2 === 0 ? 0o644 : 0o755, mtime: 1_600_000_000 + n });
  }
  const big = randomBytes(100_003);
  files.set('lib/modules/big.ko', big);
  entries.push({ type: 'file', path: 'lib/modules/big.ko', data: big });
  entries.push({ type: 'symlink', path: 'bin/sh', target: 'busybox' });
  entries.push({ type: 'symlink', path: 'etc/up', target: '../bin/xxx' });
  return { entries, files };
}

test('newcArchive() writes headers, padding and trailer as the newc format says', () => {
  const archive = newcArchive([{ type: 'dir', path: 'a' }, { type: 'file', path: 'a/b', data: Buffer.from('hi!'), mtime: 16 }]);
  const first = archive.subarray(0, 110).toString('ascii');
  assert.equal(first.slice(0, 6), '070701');
  const field = (text: string, i: number): number => parseInt(text.slice(6 + 8 * i, 14 + 8 * i), 16);
  assert.equal(field(first, 1), 0o040755, 'dir mode');
  assert.equal(field(first, 4), 2, 'dir nlink');
  assert.equal(field(first, 11), 2, 'namesize counts the NUL');
  // 110 + "a\0" = 112: already aligned, so the next header starts right there.
  const second = archive.subarray(112, 222).toString('ascii');
  assert.equal(second.slice(0, 6), '070701');
  assert.equal(field(second, 1), 0o100644);
  assert.equal(field(second, 5), 16, 'mtime');
  assert.equal(field(second, 6), 3, 'filesize');
  // 110 + "a/b\0" = 114, padded to 116; data 3 bytes padded to 4.
  assert.equal(archive.subarray(112 + 114, 112 + 116).toString('hex'), '0000');
  assert.equal(archive.subarray(112 + 116, 112 + 119).toString(), 'hi!');
  const trailer = archive.subarray(112 + 120);
  assert.equal(trailer.subarray(110, 120).toString(), 'TRAILER!!!');
  assert.equal(archive.length % 4, 0);
});

test('newcArchive() is deterministic', () => {
  const { entries } = sample();
  assert.deepEqual(newcArchive(entries), newcArchive(entries));
});

test('newcArchive() rejects entries whose directory comes later or not at all', () => {
  assert.throws(() => newcArchive([{ type: 'file', path: 'bin/x', data: Buffer.alloc(0) }]), /directory "bin" was not added/);
  assert.throws(
    () => newcArchive([{ type: 'file', path: 'bin', data: Buffer.alloc(0) }, { type: 'file', path: 'bin/x', data: Buffer.alloc(0) }]),
    /directory "bin" was not added/,
  );
});

test('newcArchive() rejects duplicate and non-plain paths', () => {
  assert.throws(() => newcArchive([{ type: 'dir', path: 'a' }, { type: 'dir', path: '/a' }]), /added twice/);
  for (const path of ['', '/', 'a/../b', './a', 'a//b']) {
    assert.throws(() => newcArchive([{ type: 'dir', path }]), /not a plain relative path/, path);
  }
  assert.throws(() => newcArchive([{ type: 'file', path: 'f', data: Buffer.alloc(0), mode: 0o100644 }]), /not a permission mode/);
  assert.throws(() => newcArchive([{ type: 'symlink', path: 'l', target: '' }]), /bad symlink target/);
});

test('newcArchive() output round-trips through busybox cpio -i', { skip: !haveBusybox && 'no /bin/busybox' }, async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'hull-cpio-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const { entries, files } = sample();
  await writeFile(join(dir, 'a.cpio'), newcArchive(entries));
  const out = join(dir, 'out');
  execFileSync('/bin/sh', ['-c', `mkdir "${out}" && cd "${out}" && ${BUSYBOX} cpio -i -d -m < ../a.cpio`], { stdio: 'pipe' });

  for (const [name, data] of files) {
    assert.deepEqual(await readFile(join(out, name)), data, name);
  }
  for (const e of entries) {
    const st = await lstat(join(out, e.path));
    if (e.type === 'dir') assert.ok(st.isDirectory(), e.path);
    if (e.type === 'file') {
      assert.ok(st.isFile(), e.path);
      assert.equal(st.mode & 0o7777, e.mode ?? 0o644, `${e.path} mode`);
      assert.equal(Math.floor(st.mtimeMs / 1000), e.mtime ?? 0, `${e.path} mtime`);
    }
    if (e.type === 'symlink') {
      assert.ok(st.isSymbolicLink(), e.path);
      assert.equal(await readlink(join(out, e.path)), e.target);
    }
  }
  assert.equal((await lstat(join(out, 'etc'))).mode & 0o7777, 0o700);
});

test('newcArchive() output lists with busybox cpio -t -v, device nodes included', { skip: !haveBusybox && 'no /bin/busybox' }, () => {
  const archive = newcArchive([
    { type: 'dir', path: 'dev' },
    { type: 'chardev', path: 'dev/console', major: 5, minor: 1 },
    { type: 'dir', path: 'bin', uid: 12, gid: 34 },
    { type: 'file', path: 'bin/init', data: Buffer.from('#!/bin/sh\n'), mode: 0o755 },
    { type: 'symlink', path: 'bin/sh', target: 'busybox' },
  ]);
  const listing = execFileSync(BUSYBOX, ['cpio', '-t', '-v'], { input: archive, stdio: ['pipe', 'pipe', 'pipe'] })
    .toString()
    .trim()
    .split('\n')
    .map((line) => line.trim().split(/\s+/));
  const byName = new Map(listing.map((cols) => [cols.slice(5).join(' '), cols]));
  assert.deepEqual([...byName.keys()], ['dev', 'dev/console', 'bin', 'bin/init', 'bin/sh -> busybox']);
  assert.equal(byName.get('dev')?.[0], 'drwxr-xr-x');
  assert.equal(byName.get('dev/console')?.[0], 'crw-------');
  assert.equal(byName.get('bin')?.[1], '12/34');
  assert.equal(byName.get('bin/init')?.[0], '-rwxr-xr-x');
  assert.equal(byName.get('bin/init')?.[2], '10');
  assert.equal(byName.get('bin/sh -> busybox')?.[0], 'lrwxrwxrwx');
});
