import { test } from 'node:test';
import { strict as assert } from 'node:assert';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { fakeModule } from './testing.js';
import { GUEST_KERNEL_MODULES, moduleLoadOrder, moduleNameOf, readModinfo, resolveModules } from './modules.js';

test('moduleNameOf() drops the suffix and turns dashes into underscores', () => {
  assert.equal(moduleNameOf('virtio-rng.ko'), 'virtio_rng');
  assert.equal(moduleNameOf('ext4.ko.xz'), 'ext4');
  assert.equal(moduleNameOf('9pnet_virtio.ko'), '9pnet_virtio');
});

test('readModinfo() reads the .modinfo strings of an ELF object', () => {
  const info = readModinfo(fakeModule(['alias=fs-ext4', 'depends=jbd2,mbcache,crc16', 'alias=ext3', 'name=ext4', 'vermagic=6.1.0-1-amd64 SMP']));
  assert.deepEqual(info.get('depends'), ['jbd2,mbcache,crc16']);
  assert.deepEqual(info.get('alias'), ['fs-ext4', 'ext3']);
  assert.equal(info.get('name')?.[0], 'ext4');
});

test('readModinfo() refuses what is not a 64-bit ELF object with .modinfo', () => {
  assert.throws(() => readModinfo(Buffer.from('not an elf file at all, certainly not one with sections'.repeat(2))), /not an ELF file/);
  const noInfo = fakeModule(['x=y']);
  noInfo.write('.nomodin', 64 + 11, 'latin1'); // rename the section
  assert.throws(() => readModinfo(noInfo), /no .modinfo section/);
});

test('moduleLoadOrder() puts dependencies first and keeps the given order otherwise', () => {
  const deps: Record<string, string[]> = {
    virtio_ring: [],
    virtio: ['virtio_ring'],
    virtio_net: ['virtio_ring', 'virtio', 'net_failover'],
    net_failover: ['failover'],
    failover: [],
    ext4: ['jbd2', 'crc16'],
    jbd2: [],
    crc16: [],
  };
  assert.deepEqual(moduleLoadOrder(['virtio_net', 'ext4'], (n) => deps[n]), [
    'virtio_ring',
    'virtio',
    'failover',
    'net_failover',
    'virtio_net',
    'jbd2',
    'crc16',
    'ext4',
  ]);
  assert.deepEqual(
    moduleLoadOrder(['ext4'], (n) => deps[n], (n) => n === 'jbd2'),
    ['crc16', 'ext4'],
  );
});

test('moduleLoadOrder() of GUEST_KERNEL_MODULES with the 6.1 dependencies is the list itself', () => {
  const deps: Record<string, string[]> = {
    virtio: ['virtio_ring'],
    virtio_mmio: ['virtio', 'virtio_ring'],
    virtio_console: ['virtio', 'virtio_ring'],
    virtio_blk: ['virtio', 'virtio_ring'],
    virtio_rng: ['virtio', 'virtio_ring'],
    ext4: ['jbd2', 'mbcache', 'crc16'],
    fscache: ['netfs'],
    '9pnet_virtio': ['virtio', '9pnet', 'virtio_ring'],
    '9p': ['9pnet', 'fscache', 'netfs'],
    net_failover: ['failover'],
    virtio_net: ['virtio_ring', 'virtio', 'net_failover'],
  };
  assert.deepEqual(moduleLoadOrder(GUEST_KERNEL_MODULES, (n) => deps[n] ?? []), [...GUEST_KERNEL_MODULES]);
});

test('moduleLoadOrder() reports missing modules and cycles', () => {
  assert.throws(() => moduleLoadOrder(['a'], (n) => (n === 'a' ? ['b'] : undefined)), /"b" .*needed by a/);
  assert.throws(() => moduleLoadOrder(['a'], (n) => (n === 'a' ? ['b'] : ['a'])), /cycle a -> b -> a/);
});

test('resolveModules() finds the closure in an extracted module tree', async (t) => {
  const root = await mkdtemp(join(tmpdir(), 'hull-modules-'));
  t.after(() => rm(root, { recursive: true, force: true }));
  const release = '6.1.0-99-amd64';
  const put = async (rel: string, data: Buffer): Promise<void> => {
    await mkdir(dirname(join(root, rel)), { recursive: true });
    await writeFile(join(root, rel), data);
  };
  const mod = (deps: string, magic = release): Buffer => fakeModule([`depends=${deps}`, `vermagic=${magic} SMP mod_unload`]);
  await put('kernel/drivers/virtio/virtio_ring.ko', mod(''));
  await put('kernel/drivers/virtio/virtio.ko', mod('virtio_ring'));
  await put('kernel/drivers/char/hw_random/virtio-rng.ko.gz', gzipSync(mod('virtio,virtio_ring')));
  await put('kernel/fs/unrelated.ko', mod(''));
  await put('modules.builtin', Buffer.from('kernel/drivers/virtio/virtio_ring.ko\n'));

  const mods = await resolveModules(root, release, ['virtio_rng']);
  assert.deepEqual(
    mods.map((m) => m.fileName),
    ['virtio.ko', 'virtio_rng.ko'],
  );
  assert.deepEqual(readModinfo(mods[1]!.data).get('depends'), ['virtio,virtio_ring']);

  await put('kernel/fs/old.ko', mod('', '5.10.0-1-amd64'));
  await assert.rejects(resolveModules(root, release, ['old']), /built for "5.10.0-1-amd64", not for kernel 6.1.0-99-amd64/);
  await put('kernel/fs/packed.ko.xz', Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00, 1, 2, 3]));
  await assert.rejects(resolveModules(root, release, ['packed']), /xz-compressed/);
  await assert.rejects(resolveModules(root, release, ['virtio', 'nothere']), /Cannot find kernel module "nothere"/);
});
