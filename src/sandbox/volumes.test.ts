import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { guestSpec } from '../agent/guest-spec.js';
import { guestContainerSpec, parseSpec, type OciMount } from './spec.js';
import {
  guestMounts,
  guestShareMount,
  guestShmMount,
  guestTmpfsMount,
  hostPropagation,
  memoryEmptyDir,
  parseSize,
  planVolumes,
  tmpfsSize,
} from './volumes.js';
import { mountAt, mountContaining, parseMountinfo, readMountinfoSync } from '../common/mountinfo.js';

const MOUNTINFO = [
  '22 1 0:21 / / rw,relatime shared:1 - ext4 /dev/vda1 rw',
  '30 22 0:25 / /run rw,nosuid,nodev shared:5 - tmpfs tmpfs rw,size=803840k,mode=755,inode64',
  '41 30 0:40 / /var/lib/kubelet/pods/u1/volumes/kubernetes.io~empty-dir/cache rw,relatime - tmpfs tmpfs rw,size=16384k,inode64',
  '42 30 0:41 / /var/lib/kubelet/pods/u1/volumes/kubernetes.io~empty-dir/plain rw,relatime - tmpfs tmpfs rw,inode64',
  '43 30 0:42 / /var/lib/kubelet/pods/u1/volumes/kubernetes.io~secret/token rw,relatime - tmpfs tmpfs rw,size=1024k',
  '44 22 0:21 /srv/sub /var/lib/kubelet/pods/u1/volumes/kubernetes.io~empty-dir/bound rw master:7 - tmpfs tmpfs rw',
  '45 22 0:43 / /mnt/with\\040space rw - ext4 /dev/vdb rw,errors=remount-ro',
  '46 45 0:44 / /mnt/with\\040space rw - tmpfs none rw,size=2m',
  'garbage line',
  '',
].join('\n');

test('parseMountinfo() reads fields around optional tags and unescapes paths', () => {
  const entries = parseMountinfo(MOUNTINFO);
  assert.equal(entries.length, 8);
  assert.deepEqual(entries[1], {
    mountId: 30,
    parentId: 22,
    root: '/',
    mountPoint: '/run',
    mountOptions: ['rw', 'nosuid', 'nodev'],
    fsType: 'tmpfs',
    source: 'tmpfs',
    superOptions: ['rw', 'size=803840k', 'mode=755', 'inode64'],
  });
  assert.equal(entries[5]?.root, '/srv/sub');
  assert.equal(entries[6]?.mountPoint, '/mnt/with space');
});

test('mountAt() gives the mount on top', () => {
  const entries = parseMountinfo(MOUNTINFO);
  assert.equal(mountAt(entries, '/mnt/with space')?.mountId, 46);
  assert.equal(mountAt(entries, '/mnt'), undefined);
});

test('memoryEmptyDir() finds whole tmpfs mounts of emptyDirs only', () => {
  const entries = parseMountinfo(MOUNTINFO);
  const base = '/var/lib/kubelet/pods/u1/volumes';
  assert.equal(memoryEmptyDir(entries, `${base}/kubernetes.io~empty-dir/cache`)?.mountId, 41);
  assert.equal(memoryEmptyDir(entries, `${base}/kubernetes.io~empty-dir/plain`)?.mountId, 42);
  // A secret is a tmpfs too, but it is shared (kubelet updates it).
  assert.equal(memoryEmptyDir(entries, `${base}/kubernetes.io~secret/token`), undefined);
  // A bind of part of a tmpfs is not a memory emptyDir of its own.
  assert.equal(memoryEmptyDir(entries, `${base}/kubernetes.io~empty-dir/bound`), undefined);
  // A disk emptyDir is no mount point at all.
  assert.equal(memoryEmptyDir(entries, `${base}/kubernetes.io~empty-dir/disk`), undefined);
});

test('parseSize() reads bytes and k/m/g suffixes like the kernel', () => {
  assert.equal(parseSize('16777216'), 16777216);
  assert.equal(parseSize('16384k'), 16 << 20);
  assert.equal(parseSize('16m'), 16 << 20);
  assert.equal(parseSize('2G'), 2 * 1024 ** 3);
  assert.throws(() => parseSize('50%'), /Cannot read tmpfs size "50%"/);
  assert.throws(() => parseSize('1x'), /Cannot read tmpfs size/);
  assert.throws(() => parseSize('99999999e'), /too large/);
});

test('tmpfsSize() takes the size option as written, or none', () => {
  assert.equal(tmpfsSize(['rw', 'size=16384k', 'inode64']), '16384k');
  assert.equal(tmpfsSize(['rw', 'inode64']), undefined);
  assert.throws(() => tmpfsSize(['size=lots']), /Cannot read tmpfs size "lots"/);
});

test('guestShareMount() binds the shared copy of volume N', () => {
  const m = guestShareMount('c1', 3, { destination: '/data', type: 'bind', source: '/srv/data', options: ['rbind', 'rprivate', 'ro'] });
  assert.deepEqual(m, { destination: '/data', type: 'bind', source: '/run/hull/shared/c1/volumes/3', options: ['rbind', 'ro', 'rprivate'] });
});

test('guestTmpfsMount() carries size, mode, owner and ro', () => {
  assert.deepEqual(guestTmpfsMount('/cache', { size: '16384k', mode: 0o41777, uid: 0, gid: 2000, readOnly: false }).options, ['nosuid', 'nodev', 'mode=1777', 'uid=0', 'gid=2000', 'size=16384k']);
  assert.deepEqual(guestTmpfsMount('/cache', { mode: 0o40777, uid: 5, gid: 5, readOnly: true }).options, ['nosuid', 'nodev', 'mode=0777', 'uid=5', 'gid=5', 'ro']);
});

test('guestShmMount() binds the guest /dev/shm with the usual restrictions', () => {
  assert.deepEqual(guestShmMount({ destination: '/dev/shm', type: 'bind', source: '/run/containerd/x/shm', options: ['rbind', 'ro', 'nosuid', 'nodev', 'noexec'] }), {
    destination: '/dev/shm',
    type: 'bind',
    source: '/dev/shm',
    options: ['rbind', 'ro', 'nosuid', 'nodev', 'noexec'],
  });
  assert.deepEqual(guestShmMount({ destination: '/dev/shm', type: 'bind', source: '/s', options: ['rbind', 'rprivate', 'rw'] }).options, ['rbind', 'rprivate', 'nosuid', 'nodev', 'noexec']);
});

const CRI_MOUNTS: OciMount[] = [
  { destination: '/proc', type: 'proc', source: 'proc' },
  { destination: '/etc/hosts', type: 'bind', source: '/var/lib/kubelet/pods/u1/etc-hosts', options: ['rbind', 'rprivate', 'rw'] },
  { destination: '/config', type: 'bind', source: '/var/lib/kubelet/pods/u1/volumes/kubernetes.io~configmap/cfg', options: ['rbind', 'rprivate', 'ro'] },
  { destination: '/dev/shm', type: 'bind', source: '/run/containerd/sandboxes/s/shm', options: ['rbind', 'rshared', 'rw'] },
  { destination: '/cache', type: 'bind', source: '/var/lib/kubelet/pods/u1/volumes/kubernetes.io~empty-dir/cache', options: ['rbind', 'rprivate', 'rw'] },
  { destination: '/unplanned', type: 'bind', source: '/x', options: ['rbind'] },
];

test('guestContainerSpec() puts the planned mounts in place and drops unplanned binds', () => {
  const spec = parseSpec(JSON.stringify({ ociVersion: '1.0.2', process: { args: ['sh'] }, mounts: CRI_MOUNTS }), 'x');
  const plans = [
    { index: 1, guest: guestShareMount('c1', 1, CRI_MOUNTS[1]!) },
    { index: 2, guest: guestShareMount('c1', 2, CRI_MOUNTS[2]!) },
    { index: 3, guest: guestShmMount(CRI_MOUNTS[3]!) },
    { index: 4, guest: guestTmpfsMount('/cache', { size: '16384k', mode: 0o1777, uid: 0, gid: 0, readOnly: false }) },
  ];
  const guest = guestContainerSpec(spec, undefined, guestMounts(plans));
  assert.deepEqual(guest.mounts?.map((m) => [m.destination, m.type, m.source]), [
    ['/proc', 'proc', 'proc'],
    ['/etc/hosts', 'bind', '/run/hull/shared/c1/volumes/1'],
    ['/config', 'bind', '/run/hull/shared/c1/volumes/2'],
    ['/dev/shm', 'bind', '/dev/shm'],
    ['/cache', 'tmpfs', 'tmpfs'],
  ]);

  // The agent honours all of them as they are, read-only included.
  const crun = guestSpec('c1', guest, '/run/hull/shared/c1/rootfs', false);
  const byDest = new Map(crun.mounts?.map((m) => [m.destination, m]));
  assert.deepEqual(byDest.get('/config'), { destination: '/config', type: 'bind', source: '/run/hull/shared/c1/volumes/2', options: ['rbind', 'ro', 'rprivate'] });
  assert.deepEqual(byDest.get('/dev/shm')?.options, ['rbind', 'nosuid', 'nodev', 'noexec']);
  assert.equal(byDest.get('/cache')?.type, 'tmpfs');
  assert.ok(byDest.has('/etc/hosts'));
});

test("guestSpec() (agent) drops binds from outside the share and strips what it doesn't honour", () => {
  const crun = guestSpec('c1', {
    ociVersion: '1.0.2',
    process: { args: ['sh'] },
    mounts: [
      { destination: '/a', type: 'bind', source: '/run/hull/shared/c1/volumes/0/', options: ['rbind', 'rshared', 'rro', 'idmap'] },
      { destination: '/b', type: 'bind', source: '/run/hull/shared/../../etc', options: ['rbind'] },
      { destination: '/c', type: 'bind', source: '/run/hull/shared', options: ['rbind'] },
      { destination: '/d', source: '/etc', options: ['bind'] },
      { destination: '/e', type: 'bind', source: 'relative', options: ['rbind'] },
      { destination: '/f', type: 'tmpfs', source: '/etc', options: ['rbind'] },
    ],
  }, '/run/hull/shared/c1/rootfs', false);
  assert.deepEqual(crun.mounts?.filter((m) => m.destination !== '/dev'), [{ destination: '/a', type: 'bind', source: '/run/hull/shared/c1/volumes/0', options: ['rbind', 'ro'] }]);
});

// planVolumes against real files (no mounts needed).
const scratch = mkdtempSync(join(tmpdir(), 'hull-volumes-'));
after(() => rmSync(scratch, { recursive: true, force: true }));

test('planVolumes() shares files and directories, resolving symlinks on the host', async () => {
  const dir = join(scratch, 'dir');
  mkdirSync(dir);
  writeFileSync(join(scratch, 'hosts'), '127.0.0.1 localhost\n');
  symlinkSync(join(scratch, 'hosts'), join(scratch, 'hosts-link'));
  const plans = await planVolumes('c1', [
    { destination: '/proc', type: 'proc', source: 'proc' },
    { destination: '/data', type: 'bind', source: dir, options: ['rbind', 'ro'] },
    { destination: '/etc/hosts', type: 'bind', source: join(scratch, 'hosts-link'), options: ['rbind'] },
  ], { stateDir: join(scratch, 'state'), roots: [] });
  assert.deepEqual(plans.map((p) => [p.index, p.guest.source, p.share?.realSource, p.share?.file, p.share?.readOnly]), [
    [1, '/run/hull/shared/c1/volumes/1', dir, false, true],
    [2, '/run/hull/shared/c1/volumes/2', join(scratch, 'hosts'), true, false],
  ]);
});

test('planVolumes() refuses missing, special, relative and state-dir sources clearly', async () => {
  const state = join(scratch, 'state2');
  mkdirSync(join(state, 'shared'), { recursive: true });
  symlinkSync(join(state, 'shared'), join(scratch, 'into-state'));
  const socketPath = join(scratch, 'sock');
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(socketPath, resolve));
  try {
    const guard = { stateDir: state, roots: [] };
    const plan = (source: string) => planVolumes('c1', [{ destination: '/x', type: 'bind', source, options: ['rbind'] }], guard);
    const device = join(scratch, 'null-device');
    execFileSync('mknod', [device, 'c', '1', '3']);
    await assert.rejects(plan('/nonexistent/hull-volume'), /^HullError: Cannot share volume "\/nonexistent\/hull-volume" for "\/x": no such file$/);
    await assert.rejects(plan(socketPath), /for "\/x": it is a socket: only directories and regular files/);
    await assert.rejects(plan(device), /it is a device/);
    await assert.rejects(plan('relative/path'), /the source must be an absolute path/);
    await assert.rejects(plan(join(state, 'shared')), /in the sandbox's own state directory/);
    await assert.rejects(plan(join(scratch, 'into-state')), /resolves to ".*state2\/shared": it lies in the sandbox's own state directory/);
    await assert.rejects(planVolumes('c1', [{ destination: 'x', type: 'bind', source: '/' }], guard), /destination must be an absolute path/);
    // A run root reached through a symlink does not hide the state directory.
    symlinkSync(state, join(scratch, 'state-link'));
    await assert.rejects(
      planVolumes('c1', [{ destination: '/x', type: 'bind', source: join(state, 'shared'), options: ['rbind'] }], { stateDir: join(scratch, 'state-link'), roots: [] }),
      /in the sandbox's own state directory/,
    );
  } finally {
    server.close();
  }
});

test('planVolumes() refuses sources in or around hull\'s roots and on kernel interface file systems', async () => {
  const root = join(scratch, 'hull-root');
  mkdirSync(join(root, 'guest', 'img'), { recursive: true });
  symlinkSync(join(root, 'guest'), join(scratch, 'into-root'));
  const guard = { stateDir: join(scratch, 'state3'), roots: [join(root, 'guest'), '/relative-ignored'] };
  const plan = (source: string) => planVolumes('c1', [{ destination: '/x', type: 'bind', source, options: ['rbind', 'ro'] }], guard);
  await assert.rejects(plan(join(root, 'guest', 'img')), /it lies in hull's own directory ".*hull-root\/guest"/);
  await assert.rejects(plan(join(root, 'guest')), /it lies in hull's own directory/);
  await assert.rejects(plan(root), /it contains hull's own directory ".*hull-root\/guest"/);
  await assert.rejects(plan('/'), /it contains hull's own directory/);
  await assert.rejects(plan(join(scratch, 'into-root')), /resolves to ".*hull-root\/guest": it lies in hull's own directory/);
  await assert.rejects(plan('/proc/self'), /it is on proc, a kernel interface: it cannot be shared with the VM/);
  await assert.rejects(plan('/proc/sys/kernel'), /it is on proc, a kernel interface/);
  await assert.rejects(plan('/sys/kernel'), /it is on sysfs, a kernel interface/);
  await assert.rejects(plan('/dev'), /it is on devtmpfs, a kernel interface/);
  const cgroup = readMountinfoSync().find((m) => m.fsType === 'cgroup' || m.fsType === 'cgroup2');
  if (cgroup) await assert.rejects(plan(cgroup.mountPoint), new RegExp(`it is on ${cgroup.fsType}, a kernel interface`));
});

test('mountContaining() finds the deepest mount above a path', () => {
  const entries = parseMountinfo(MOUNTINFO);
  assert.equal(mountContaining(entries, '/mnt/with space/a/b')?.mountId, 46);
  assert.equal(mountContaining(entries, '/run/x')?.mountId, 30);
  assert.equal(mountContaining(entries, '/runner')?.mountId, 22);
});

test('hostPropagation() reads CRI\'s propagation from bind options, the last one winning', () => {
  assert.equal(hostPropagation(['rbind', 'rprivate']), 'private');
  assert.equal(hostPropagation(['rbind', 'rslave']), 'slave');
  assert.equal(hostPropagation(['rbind', 'rshared', 'ro']), 'shared');
  assert.equal(hostPropagation(['rslave', 'rprivate']), 'private');
  assert.equal(hostPropagation(undefined), 'private');
});

test('planVolumes() binds HostToContainer and Bidirectional volumes as slaves, and warns that nothing goes back to the host', async () => {
  const dir = join(scratch, 'propagated');
  mkdirSync(dir);
  const plans = await planVolumes('c1', [
    { destination: '/h2c', type: 'bind', source: dir, options: ['rbind', 'rslave'] },
    { destination: '/bidi', type: 'bind', source: dir, options: ['rbind', 'rshared'] },
    { destination: '/private', type: 'bind', source: dir, options: ['rbind', 'rprivate'] },
  ], { stateDir: join(scratch, 'state4'), roots: [] });
  assert.deepEqual(plans.map((p) => p.share?.propagation), ['slave', 'slave', 'private']);
  assert.deepEqual(plans.map((p) => p.warning !== undefined), [false, true, false]);
  assert.match(plans[1]!.warning!, /Bidirectional propagation: mounts the host makes below it reach the container, but mounts made in the container cannot reach the host/);
  assert.deepEqual(plans.map((p) => p.guest.options), [['rbind', 'rslave'], ['rbind'], ['rbind', 'rprivate']]);
});
