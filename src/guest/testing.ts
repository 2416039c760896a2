/**
 * testing — helpers for the guest builder's tests (not used by hull itself).
 */

/** fakeModule builds a minimal ELF64 object whose only content is a .modinfo section. */
export function fakeModule(modinfo: string[]): Buffer {
  const shstrtab = Buffer.from('\0.shstrtab\0.modinfo\0', 'latin1');
  const info = Buffer.from(modinfo.map((s) => s + '\0').join(''), 'latin1');
  const shoff = 64 + shstrtab.length + info.length;
  const elf = Buffer.alloc(shoff + 3 * 64);
  elf.writeUInt32BE(0x7f454c46, 0);
  elf[4] = 2; // ELFCLASS64
  elf[5] = 1; // little endian
  elf[6] = 1;
  elf.writeUInt16LE(1, 0x10); // ET_REL
  elf.writeUInt16LE(62, 0x12); // x86-64
  elf.writeBigUInt64LE(BigInt(shoff), 0x28);
  elf.writeUInt16LE(64, 0x34);
  elf.writeUInt16LE(64, 0x3a);
  elf.writeUInt16LE(3, 0x3c);
  elf.writeUInt16LE(1, 0x3e);
  shstrtab.copy(elf, 64);
  info.copy(elf, 64 + shstrtab.length);
  const sh = (i: number, name: number, type: number, offset: number, size: number): void => {
    const at = shoff + i * 64;
    elf.writeUInt32LE(name, at);
    elf.writeUInt32LE(type, at + 4);
    elf.writeBigUInt64LE(BigInt(offset), at + 24);
    elf.writeBigUInt64LE(BigInt(size), at + 32);
  };
  sh(1, 1, 3, 64, shstrtab.length);
  sh(2, 11, 1, 64 + shstrtab.length, info.length);
  return elf;
}

/**
 * fakeKernelDeb builds, with dpkg-deb, a kernel package shaped like Debian's: /boot/vmlinuz-RELEASE
 * and /lib/modules/RELEASE/kernel/… holding fake modules that depend on each other as the real
 * virtio/ext4/9p/net ones do. Returns the .deb's path.
 */
export async function fakeKernelDeb(dir: string, release: string, version: string): Promise<string> {
  const { execFileSync } = await import('node:child_process');
  const { mkdir, writeFile } = await import('node:fs/promises');
  const { dirname, join } = await import('node:path');
  const pkg = `linux-image-${release}`;
  const tree = join(dir, `${pkg}-tree`);
  const put = async (rel: string, data: string | Buffer): Promise<void> => {
    await mkdir(dirname(join(tree, rel)), { recursive: true });
    await writeFile(join(tree, rel), data);
  };
  await put('DEBIAN/control', `Package: ${pkg}\nVersion: ${version}\nArchitecture: amd64\nMaintainer: hull tests <hull@invalid>\nDescription: fake kernel\n`);
  await put(`boot/vmlinuz-${release}`, `fake kernel ${release}\n`);
  const deps: Record<string, string> = {
    'drivers/virtio/virtio_ring': '',
    'drivers/virtio/virtio': 'virtio_ring',
    'drivers/virtio/virtio_mmio': 'virtio,virtio_ring',
    'drivers/char/virtio_console': 'virtio,virtio_ring',
    'drivers/block/virtio_blk': 'virtio,virtio_ring',
    'drivers/char/hw_random/virtio-rng': 'virtio,virtio_ring',
    'lib/crc16': '',
    'fs/jbd2/jbd2': '',
    'fs/mbcache': '',
    'crypto/crc32c_generic': '',
    'fs/ext4/ext4': 'jbd2,mbcache,crc16',
    'fs/netfs/netfs': '',
    'fs/fscache/fscache': 'netfs',
    'net/9p/9pnet': '',
    'net/9p/9pnet_virtio': 'virtio,9pnet,virtio_ring',
    'fs/9p/9p': '9pnet,fscache,netfs',
    'fs/overlayfs/overlay': '',
    'net/core/failover': '',
    'drivers/net/net_failover': 'failover',
    'drivers/net/virtio_net': 'virtio_ring,virtio,net_failover',
    'fs/unrelated': '',
    'net/bridge/bridge': 'stp,llc',
    'net/802/stp': 'llc',
    'net/llc/llc': '',
  };
  for (const [path, depends] of Object.entries(deps)) {
    await put(`lib/modules/${release}/kernel/${path}.ko`, fakeModule([`depends=${depends}`, `vermagic=${release} SMP mod_unload`]));
  }
  await put(`lib/modules/${release}/modules.builtin`, 'kernel/drivers/tty/serial/8250/8250.ko\n');
  const deb = join(dir, `${pkg}_${version}_amd64.deb`);
  execFileSync('dpkg-deb', ['--root-owner-group', '-Zgzip', '-b', tree, deb], { stdio: 'ignore' });
  return deb;
}

/**
 * fakeImage writes a small but valid image directory (manifest and files) into `imagesRoot`, its
 * id made from `agentTag`; returns it as loadImage would.
 */
export async function fakeImage(imagesRoot: string, agentTag: string): Promise<import('./manifest.js').GuestImage> {
  const { mkdir, writeFile } = await import('node:fs/promises');
  const { join } = await import('node:path');
  const { imageIdOf, sha256Hex } = await import('./content-hash.js');
  const { BUILDER_VERSION, MANIFEST_SCHEMA } = await import('./manifest.js');
  type Manifest = import('./manifest.js').GuestManifest;
  const inputs: Manifest['inputs'] = {
    builderVersion: BUILDER_VERSION,
    kernelDeb: { file: 'linux-image-x_1_amd64.deb', sha256: sha256Hex('deb') },
    kernelModules: ['virtio'],
    hostFiles: [],
    agentBundleSha256: sha256Hex(agentTag),
    texts: {},
  };
  const id = imageIdOf(inputs);
  const dir = join(imagesRoot, id);
  await mkdir(dir, { recursive: true });
  const contents = { kernel: 'KERNEL', 'initrd.img': 'INITRD', 'root.img': 'ROOT DISK' } as const;
  const files = {} as Manifest['files'];
  for (const [name, text] of Object.entries(contents) as Array<[keyof typeof contents, string]>) {
    await writeFile(join(dir, name), text);
    files[name] = { size: text.length, sha256: sha256Hex(text) };
  }
  const manifest: Manifest = {
    schema: MANIFEST_SCHEMA,
    id,
    builtAt: new Date(0).toISOString(),
    buildMs: 1,
    kernelRelease: '6.1.0-99-amd64',
    kernelPackage: { name: 'linux-image-x', version: '1', debFile: inputs.kernelDeb.file, debSha256: inputs.kernelDeb.sha256 },
    modules: ['virtio.ko'],
    nodeVersion: 'v20.0.0',
    inputs,
    hostFiles: [],
    files,
  };
  await writeFile(join(dir, 'manifest.json'), JSON.stringify(manifest, null, 2));
  return { id, dir, kernel: join(dir, 'kernel'), initrd: join(dir, 'initrd.img'), rootDisk: join(dir, 'root.img'), kernelRelease: manifest.kernelRelease, manifest };
}
