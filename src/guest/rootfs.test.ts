import { test } from 'node:test';
import { strict as assert } from 'node:assert';
import { lstat, mkdir, mkdtemp, readFile, readlink, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { HostFile } from './host-files.js';
import { ROOT_INIT } from './init-scripts.js';
import { appletLinks, stageRootfs } from './rootfs.js';

function hostFile(guestPath: string, hostPath: string, mode = 0o755): HostFile {
  return { guestPath, hostPath, mode, size: 0, sha256: '0'.repeat(64) };
}

test('appletLinks() skips init and names of programs copied from the host', () => {
  const files = [hostFile('/bin/busybox', '/x'), hostFile('/usr/bin/script', '/y'), hostFile('/lib64/ld-linux-x86-64.so.2', '/z')];
  assert.deepEqual(appletLinks(['[', '[[', 'busybox', 'init', 'linuxrc', 'ls', 'script', 'sh', 'bad/name'], files), ['[', '[[', 'ls', 'sh']);
});

test('stageRootfs() lays out programs, applet links, init, /etc, the agent and mount points', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'hull-rootfs-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const root = join(dir, 'root');
  await writeFile(join(dir, 'prog'), 'PROGRAM');
  await writeFile(join(dir, 'lib'), 'LIBRARY');
  const files = [
    hostFile('/bin/busybox', join(dir, 'prog')),
    hostFile('/usr/bin/node', join(dir, 'prog')),
    hostFile('/lib/x86_64-linux-gnu/libc.so.6', join(dir, 'lib'), 0o644),
  ];
  await mkdir(root);
  const paths = await stageRootfs(root, { hostFiles: files, agent: Buffer.from('console.log("agent")\n'), applets: ['sh', 'ls', 'node', 'init'] });

  assert.equal(await readFile(join(root, 'usr/bin/node'), 'utf8'), 'PROGRAM');
  assert.equal((await lstat(join(root, 'usr/bin/node'))).mode & 0o7777, 0o755);
  assert.equal((await lstat(join(root, 'lib/x86_64-linux-gnu/libc.so.6'))).mode & 0o7777, 0o644);
  assert.equal(await readlink(join(root, 'bin/sh')), 'busybox');
  assert.equal(await readlink(join(root, 'bin/ls')), 'busybox');
  await assert.rejects(lstat(join(root, 'bin/node')), { code: 'ENOENT' });
  await assert.rejects(lstat(join(root, 'bin/init')), { code: 'ENOENT' });
  assert.equal(await readFile(join(root, 'sbin/init'), 'utf8'), ROOT_INIT);
  assert.equal((await lstat(join(root, 'sbin/init'))).mode & 0o7777, 0o755);
  assert.equal(await readFile(join(root, 'hull/agent.js'), 'utf8'), 'console.log("agent")\n');
  assert.match(await readFile(join(root, 'etc/passwd'), 'utf8'), /^root:x:0:0:/);
  assert.equal(await readFile(join(root, 'etc/group'), 'utf8'), 'root:x:0:\n');
  for (const d of ['proc', 'sys', 'sys/fs/cgroup', 'dev', 'run', 'tmp', 'var', 'mnt', 'root']) {
    assert.ok((await lstat(join(root, d))).isDirectory(), d);
  }
  assert.equal((await lstat(join(root, 'tmp'))).mode & 0o7777, 0o1777);
  assert.equal((await lstat(join(root, 'root'))).mode & 0o7777, 0o700);
  assert.ok(paths.includes('/hull/agent.js') && paths.includes('/bin/sh') && paths.includes('/lib/x86_64-linux-gnu'));
});

test('stageRootfs() copies the module tree to /lib/modules/<release> and links /sbin/modprobe to busybox', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'hull-rootfs-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const root = join(dir, 'root');
  const tree = join(dir, 'tree');
  await writeFile(join(dir, 'prog'), 'PROGRAM');
  await mkdir(join(tree, 'kernel/net/bridge'), { recursive: true });
  await writeFile(join(tree, 'kernel/net/bridge/bridge.ko'), 'MODULE');
  await writeFile(join(tree, 'modules.dep'), 'kernel/net/bridge/bridge.ko:\n');
  await mkdir(root);
  const paths = await stageRootfs(root, {
    hostFiles: [hostFile('/bin/busybox', join(dir, 'prog'))],
    agent: Buffer.from(''),
    applets: ['modprobe'],
    moduleTree: { release: '6.1.0-99-amd64', dir: tree },
  });
  assert.equal(await readFile(join(root, 'lib/modules/6.1.0-99-amd64/kernel/net/bridge/bridge.ko'), 'utf8'), 'MODULE');
  assert.equal((await lstat(join(root, 'lib/modules/6.1.0-99-amd64/modules.dep'))).mode & 0o7777, 0o644);
  assert.equal((await lstat(join(root, 'lib/modules/6.1.0-99-amd64/kernel'))).mode & 0o7777, 0o755);
  assert.equal(await readlink(join(root, 'sbin/modprobe')), '/bin/busybox');
  assert.ok(paths.includes('/sbin/modprobe') && paths.includes('/lib/modules/6.1.0-99-amd64'));
});
