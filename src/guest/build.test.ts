import { test } from 'node:test';
import { strict as assert } from 'node:assert';
import { mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isInvalidArgument } from '../errors/index.js';
import { buildGuestImage, currentGuestImage, guestImageIsStale } from './build.js';
import { fakeImage } from './testing.js';

test('currentGuestImage() follows the current link and validates what it finds', async (t) => {
  const root = await mkdtemp(join(tmpdir(), 'hull-images-'));
  t.after(() => rm(root, { recursive: true, force: true }));
  assert.equal(await currentGuestImage(root), undefined, 'no link yet');
  const image = await fakeImage(root, 'agent-1');
  await symlink(image.id, join(root, 'current'));
  assert.equal((await currentGuestImage(root))?.id, image.id);
  assert.equal((await currentGuestImage(root))?.kernel, join(root, image.id, 'kernel'));

  await writeFile(join(image.dir, 'initrd.img'), 'truncated');
  assert.equal(await currentGuestImage(root), undefined, 'a damaged image is not current');
  await rm(join(root, 'current'));
  await symlink('../etc', join(root, 'current'));
  assert.equal(await currentGuestImage(root), undefined, 'the link names an id, nothing else');
});

test('guestImageIsStale() is true when there is no current image', async (t) => {
  const root = await mkdtemp(join(tmpdir(), 'hull-images-'));
  t.after(() => rm(root, { recursive: true, force: true }));
  await writeFile(join(root, 'agent.js'), 'console.log(1)\n');
  assert.equal(await guestImageIsStale({ agentBundle: join(root, 'agent.js'), imagesRoot: root }), true);
});

test('buildGuestImage() refuses a missing agent bundle before fetching anything', async (t) => {
  const root = await mkdtemp(join(tmpdir(), 'hull-images-'));
  t.after(() => rm(root, { recursive: true, force: true }));
  const lines: string[] = [];
  await assert.rejects(buildGuestImage({ agentBundle: join(root, 'nope.js'), imagesRoot: root, log: (l) => lines.push(l) }), (e) => {
    assert.ok(isInvalidArgument(e));
    assert.match((e as Error).message, /agent bundle ".*nope.js" is not a file/);
    return true;
  });
  assert.deepEqual(lines, []);
});
