import { test } from 'node:test';
import { strict as assert } from 'node:assert';
import { execFileSync } from 'node:child_process';
import { copyFile, mkdir, mkdtemp, readFile, readdir, rm, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { hashFile } from './content-hash.js';
import { cachedKernelDeb, newestCachedKernelDeb, parseDepends, parseShow, prepareKernel, pruneKernelCache } from './kernel-package.js';
import { GUEST_KERNEL_MODULES } from './modules.js';
import { fakeKernelDeb } from './testing.js';

const haveDpkg = (() => {
  try {
    execFileSync('dpkg-deb', ['--version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
})();

test('parseDepends() finds the versioned kernel package', () => {
  const out = 'linux-image-amd64\n  Depends: linux-image-6.1.0-56-amd64\n';
  assert.equal(parseDepends(out), 'linux-image-6.1.0-56-amd64');
  assert.equal(parseDepends('linux-image-amd64\n  Recommends: firmware\n'), undefined);
});

test('parseShow() reads version, file name and hash of the first stanza', () => {
  const out = [
    'Package: linux-image-6.1.0-56-amd64',
    'Version: 6.1.192-2',
    'Filename: pool/updates/main/l/linux-signed-amd64/linux-image-6.1.0-56-amd64_6.1.192-2_amd64.deb',
    'SHA256: a86e2049672f52354c4536a089203b6c82639420424d31c91cf31a181fd4d8f1',
    '',
    'Package: linux-image-6.1.0-56-amd64',
    'Version: 6.1.176-1',
    '',
  ].join('\n');
  assert.deepEqual(parseShow(out), {
    version: '6.1.192-2',
    filename: 'pool/updates/main/l/linux-signed-amd64/linux-image-6.1.0-56-amd64_6.1.192-2_amd64.deb',
    sha256: 'a86e2049672f52354c4536a089203b6c82639420424d31c91cf31a181fd4d8f1',
  });
  assert.equal(parseShow('N: Unable to locate package x\n'), undefined);
});

test('cachedKernelDeb() uses the cached .deb only when it matches apt\'s hash', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'hull-kcache-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  await writeFile(join(dir, 'linux-image-x_1_amd64.deb'), 'deb bytes');
  const sha = await hashFile(join(dir, 'linux-image-x_1_amd64.deb'));
  const pkg = { name: 'linux-image-x', version: '1', debFileName: 'linux-image-x_1_amd64.deb' };
  assert.equal((await cachedKernelDeb(dir, { ...pkg, sha256: sha }))?.sha256, sha);
  assert.equal(await cachedKernelDeb(dir, { ...pkg, sha256: '0'.repeat(64) }), undefined);
  assert.equal(await cachedKernelDeb(dir, { ...pkg, debFileName: 'linux-image-y_1_amd64.deb' }), undefined);

  await writeFile(join(dir, 'linux-image-z_2_amd64.deb'), 'newer');
  await utimes(join(dir, 'linux-image-x_1_amd64.deb'), new Date(1e9 * 1000), new Date(1e9 * 1000));
  assert.equal((await newestCachedKernelDeb(dir))?.fileName, 'linux-image-z_2_amd64.deb');

  await mkdir(join(dir, 'kernel-0123456789abcdef'));
  await mkdir(join(dir, 'kernel-fedcba9876543210'));
  await pruneKernelCache(dir, { debFileName: 'linux-image-z_2_amd64.deb', preparedDir: join(dir, 'kernel-fedcba9876543210') }, () => {});
  assert.deepEqual((await readdir(dir)).sort(), ['kernel-fedcba9876543210', 'linux-image-z_2_amd64.deb']);
});

test('prepareKernel() keeps the kernel and the module closure, in load order, and reuses its work', { skip: !haveDpkg && 'no dpkg-deb' }, async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'hull-kprep-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const cache = join(dir, 'cache');
  await mkdir(cache);
  const built = await fakeKernelDeb(dir, '6.1.0-99-amd64', '6.1.999-1');
  await copyFile(built, join(cache, basename(built)));
  const deb = { path: join(cache, basename(built)), fileName: basename(built), sha256: await hashFile(built) };

  const lines: string[] = [];
  const onDemand = { names: ['bridge'], dirs: [] };
  const k = await prepareKernel(cache, deb, GUEST_KERNEL_MODULES, (l) => lines.push(l), onDemand);
  assert.equal(k.release, '6.1.0-99-amd64');
  assert.equal(k.packageName, 'linux-image-6.1.0-99-amd64');
  assert.equal(k.packageVersion, '6.1.999-1');
  assert.equal(await readFile(k.kernel, 'utf8'), 'fake kernel 6.1.0-99-amd64\n');
  assert.deepEqual(k.modules.map((m) => m.name), [...GUEST_KERNEL_MODULES]);
  assert.equal(k.modules.find((m) => m.name === 'virtio_rng')?.fileName, 'virtio_rng.ko');
  assert.equal(lines.filter((l) => l.includes('unpacked')).length, 1);
  assert.deepEqual(k.moduleTree.modules.map((m) => m.relPath), ['kernel/net/802/stp.ko', 'kernel/net/bridge/bridge.ko', 'kernel/net/llc/llc.ko']);
  assert.match(await readFile(join(k.moduleTree.dir, 'modules.dep'), 'utf8'), /^kernel\/net\/bridge\/bridge.ko: kernel\/net\/802\/stp.ko kernel\/net\/llc\/llc.ko$/m);
  assert.ok((await readFile(join(k.moduleTree.dir, 'kernel/net/llc/llc.ko'))).length > 0);
  // Nothing but the prepared directory and the .deb is left in the cache.
  assert.deepEqual((await readdir(cache)).sort(), [basename(k.dir), basename(built)].sort());

  const again = await prepareKernel(cache, deb, GUEST_KERNEL_MODULES, (l) => lines.push(l), onDemand);
  assert.deepEqual(again, k);
  assert.equal(lines.filter((l) => l.includes('unpacked')).length, 1, 'second call unpacks nothing');
});
