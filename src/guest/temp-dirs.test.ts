import { test } from 'node:test';
import { strict as assert } from 'node:assert';
import { mkdir, mkdtemp, readdir, rm, utimes } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { makeTempDir, removeStaleTempDirs } from './temp-dirs.js';

test('removeStaleTempDirs() removes work dirs of dead processes and old ones, nothing else', async (t) => {
  const root = await mkdtemp(join(tmpdir(), 'hull-temps-'));
  t.after(() => rm(root, { recursive: true, force: true }));
  const mine = await makeTempDir(root, 'build');
  assert.match(basename(mine), new RegExp(`^\\.build-${process.pid}-[0-9a-f]{8}$`));
  const dead = join(root, '.build-999999999-0123abcd'); // no such pid
  const oldButAlive = join(root, '.extract-1-0123abcd'); // pid 1 lives, but the dir is 2 days old
  const aliveRecent = join(root, '.download-1-89abcdef');
  for (const d of [dead, oldButAlive, aliveRecent, join(root, 'abcdef0123456789abcd'), join(root, '.other')]) await mkdir(d);
  const twoDaysAgo = new Date(Date.now() - 48 * 3600 * 1000);
  await utimes(oldButAlive, twoDaysAgo, twoDaysAgo);

  const removed = await removeStaleTempDirs(root);
  assert.deepEqual(removed.sort(), [basename(dead), basename(oldButAlive)].sort());
  assert.deepEqual((await readdir(root)).sort(), ['.build-' + basename(mine).split('-').slice(1).join('-'), '.download-1-89abcdef', '.other', 'abcdef0123456789abcd'].sort());
});
