/**
 * Test OCI bundles built locally from the busybox-static package: a rootfs
 * with /bin/busybox and its applets, and a config.json like `crun spec`'s.
 */
import { execFileSync } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface TestBundle {
  dir: string;
  rootfs: string;
  remove(): void;
}

export function defaultSpec(args: string[], extra: { memoryLimitBytes?: number; terminal?: boolean } = {}): object {
  return {
    ociVersion: '1.0.2',
    process: {
      terminal: extra.terminal ?? false,
      user: { uid: 0, gid: 0 },
      args,
      env: ['PATH=/bin:/usr/bin:/sbin:/usr/sbin', 'TERM=xterm', 'HOME=/root'],
      cwd: '/',
    },
    root: { path: 'rootfs', readonly: false },
    hostname: 'hull-test',
    mounts: [
      { destination: '/proc', type: 'proc', source: 'proc' },
      { destination: '/dev', type: 'tmpfs', source: 'tmpfs', options: ['nosuid', 'mode=755', 'size=65536k'] },
      { destination: '/dev/pts', type: 'devpts', source: 'devpts', options: ['nosuid', 'noexec', 'newinstance', 'ptmxmode=0666', 'mode=0620'] },
      { destination: '/dev/shm', type: 'tmpfs', source: 'shm', options: ['nosuid', 'noexec', 'nodev', 'mode=1777', 'size=65536k'] },
      { destination: '/sys', type: 'sysfs', source: 'sysfs', options: ['nosuid', 'noexec', 'nodev', 'ro'] },
      { destination: '/tmp', type: 'tmpfs', source: 'tmpfs', options: ['nosuid', 'nodev', 'mode=1777'] },
    ],
    linux: {
      namespaces: [{ type: 'pid' }, { type: 'ipc' }, { type: 'uts' }, { type: 'mount' }],
      ...(extra.memoryLimitBytes ? { resources: { memory: { limit: extra.memoryLimitBytes } } } : {}),
    },
  };
}

/** makeBusyboxBundle writes a bundle in a new temp dir. */
export function makeBusyboxBundle(args: string[] = ['sh'], extra: Parameters<typeof defaultSpec>[1] = {}): TestBundle {
  const dir = mkdtempSync(join(tmpdir(), 'hull-bundle-'));
  const rootfs = join(dir, 'rootfs');
  for (const d of ['bin', 'etc', 'proc', 'sys', 'dev', 'tmp', 'root']) mkdirSync(join(rootfs, d), { recursive: true });
  copyFileSync('/bin/busybox', join(rootfs, 'bin/busybox'));
  const applets = execFileSync('/bin/busybox', ['--list'], { encoding: 'utf8' }).split('\n').filter(Boolean);
  for (const applet of applets) if (applet !== 'busybox') symlinkSync('busybox', join(rootfs, 'bin', applet));
  writeFileSync(join(rootfs, 'etc/passwd'), 'root:x:0:0:root:/root:/bin/sh\n');
  writeFileSync(join(rootfs, 'etc/group'), 'root:x:0:\n');
  writeFileSync(join(dir, 'config.json'), JSON.stringify(defaultSpec(args, extra), null, 2));
  return { dir, rootfs, remove: () => rmSync(dir, { recursive: true, force: true }) };
}
