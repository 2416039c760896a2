import { test } from 'node:test';
import { strict as assert } from 'node:assert';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { canonicalJson, imageIdOf, sha256Hex } from './content-hash.js';
import { BUILDER_VERSION, loadImage, parseManifest, verifyImageFiles, type GuestInputs, type GuestManifest } from './manifest.js';
import { fakeImage } from './testing.js';

test('canonicalJson() sorts keys at every depth and keeps array order', () => {
  assert.equal(canonicalJson({ b: 1, a: { d: [3, 1], c: 'x' } }), '{"a":{"c":"x","d":[3,1]},"b":1}');
  assert.equal(canonicalJson({ a: undefined, b: null }), '{"b":null}');
  assert.throws(() => canonicalJson({ a: NaN }), /non-finite/);
});

test('imageIdOf() is 20 hex digits, independent of key order, and changes with any input', () => {
  const inputs: GuestInputs = {
    builderVersion: BUILDER_VERSION,
    kernelDeb: { file: 'k.deb', sha256: sha256Hex('k') },
    kernelModules: ['virtio'],
    hostFiles: [{ path: '/usr/bin/node', sha256: sha256Hex('node'), mode: 0o755 }],
    agentBundleSha256: sha256Hex('agent'),
    texts: { '/sbin/init': sha256Hex('init') },
  };
  const id = imageIdOf(inputs);
  assert.match(id, /^[0-9a-f]{20}$/);
  const reordered = Object.fromEntries(Object.entries(inputs).reverse()) as unknown as GuestInputs;
  assert.notEqual(JSON.stringify(reordered), JSON.stringify(inputs));
  assert.equal(imageIdOf(reordered), id);
  assert.notEqual(imageIdOf({ ...inputs, agentBundleSha256: sha256Hex('agent2') }), id);
  assert.notEqual(imageIdOf({ ...inputs, hostFiles: [{ ...inputs.hostFiles[0]!, mode: 0o700 }] }), id);
  assert.notEqual(imageIdOf({ ...inputs, builderVersion: BUILDER_VERSION + 1 }), id);
});

test('parseManifest() rejects a manifest whose inputs do not hash to its id', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'hull-manifest-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const image = await fakeImage(dir, 'agent-1');
  const good = image.manifest;
  assert.equal(parseManifest(JSON.parse(JSON.stringify(good))).id, good.id);
  const tampered: GuestManifest = { ...good, inputs: { ...good.inputs, agentBundleSha256: sha256Hex('evil') } };
  assert.throws(() => parseManifest(tampered), /inputs do not hash to id/);
  assert.throws(() => parseManifest({ ...good, schema: 99 }), /schema 99/);
  assert.throws(() => parseManifest({ ...good, files: { ...good.files, 'root.img': { size: 0, sha256: 'x' } } }), /bad entry for root.img/);
});

test('loadImage() accepts a complete image and refuses a truncated or misnamed one', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'hull-manifest-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const image = await fakeImage(dir, 'agent-1');
  const loaded = await loadImage(image.dir);
  assert.equal(loaded?.id, image.id);
  assert.equal(loaded?.rootDisk, join(image.dir, 'root.img'));
  assert.deepEqual(await verifyImageFiles(loaded!), []);

  await writeFile(join(image.dir, 'root.img'), 'ROOT-DISK'); // same size, other content
  assert.deepEqual(await verifyImageFiles(loaded!), ['root.img']);
  await writeFile(join(image.dir, 'root.img'), 'short');
  const reasons: string[] = [];
  assert.equal(await loadImage(image.dir, (r) => reasons.push(r)), undefined);
  assert.match(reasons[0] ?? '', /root.img is missing or has the wrong size/);

  const other = join(dir, 'ffffffffffffffffffff');
  await mkdir(other);
  await writeFile(join(other, 'manifest.json'), JSON.stringify(image.manifest));
  assert.equal(await loadImage(other), undefined);
});
