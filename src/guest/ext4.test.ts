import { test } from 'node:test';
import { strict as assert } from 'node:assert';
import { execFileSync } from 'node:child_process';
import { chmod, chown, mkdir, mkdtemp, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { diskSizeFor, makeExt4Image, MIN_DISK_BYTES, treeUsage, uuidFrom } from './ext4.js';

const haveTools = ['/usr/sbin/mkfs.ext4', '/usr/sbin/debugfs'].every((p) => {
  try {
    execFileSync(p, ['-V'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
});

function debugfs(image: string, request: string): string {
  return execFileSync('/usr/sbin/debugfs', ['-R', request, image], { stdio: ['ignore', 'pipe', 'pipe'] }).toString();
}

test('diskSizeFor() adds 20% and never goes below 64 MiB', () => {
  assert.equal(diskSizeFor({ bytes: 1024, inodes: 10 }), MIN_DISK_BYTES);
  const size = diskSizeFor({ bytes: 110 * 1024 * 1024, inodes: 500 });
  assert.ok(size >= 110 * 1024 * 1024 * 1.2, String(size));
  assert.ok(size < 150 * 1024 * 1024, String(size));
  assert.equal(size % (1024 * 1024), 0);
});

test('uuidFrom() is stable and well-formed', () => {
  assert.equal(uuidFrom('abc'), uuidFrom('abc'));
  assert.notEqual(uuidFrom('abc'), uuidFrom('abd'));
  assert.match(uuidFrom('abc'), /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
});

test('makeExt4Image() makes a journal-less ext4 with the tree, owned by root', { skip: !haveTools && 'no mkfs.ext4/debugfs' }, async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'hull-ext4-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const tree = join(dir, 'tree');
  await mkdir(join(tree, 'bin'), { recursive: true });
  await mkdir(join(tree, 'tmp'));
  await chmod(join(tree, 'tmp'), 0o1777);
  await writeFile(join(tree, 'bin/hello'), 'hello from the disk\n', { mode: 0o755 });
  await symlink('hello', join(tree, 'bin/hi'));
  if (process.getuid?.() === 0) {
    // As root, make the owners foreign on purpose; as anyone else they are foreign already.
    await chown(join(tree, 'bin'), 1234, 1234);
    await chown(join(tree, 'bin/hello'), 1234, 1234);
  }
  const usage = await treeUsage(tree);
  assert.equal(usage.inodes, 5);
  assert.ok(usage.foreign.includes('/bin/hello'), usage.foreign.join(','));

  const image = join(dir, 'root.img');
  const size = await makeExt4Image(image, tree, { label: 'hulltest', seed: 'seed-1' });
  assert.equal((await stat(image)).size, size);
  assert.equal(size, MIN_DISK_BYTES);

  const fsck = execFileSync('/usr/sbin/e2fsck', ['-f', '-n', image], { stdio: ['ignore', 'pipe', 'pipe'] }).toString();
  assert.match(fsck, /hulltest: 1[0-9]\/\d+ files/);
  const superblock = debugfs(image, 'stats');
  assert.match(superblock, /Filesystem volume name:\s+hulltest/);
  assert.match(superblock, new RegExp(`Filesystem UUID:\\s+${uuidFrom('seed-1/uuid')}`));
  assert.doesNotMatch(superblock, /has_journal/);
  assert.equal(debugfs(image, 'cat /bin/hello'), 'hello from the disk\n');
  for (const path of ['/', '/bin', '/bin/hello', '/bin/hi', '/tmp']) {
    assert.match(debugfs(image, `stat ${path}`), /User:\s+0\s+Group:\s+0\s/, path);
  }
  assert.match(debugfs(image, 'stat /bin/hello'), /Mode:\s+0755/);
  assert.match(debugfs(image, 'stat /tmp'), /Mode:\s+01777/);
  assert.match(debugfs(image, 'stat /bin/hi'), /Type: symlink/);
});
