/**
 * Attacks from guest root against every path the host touches under the share. A privileged
 * container points the guest kernel's core_pattern at a script in its own rootfs; each crash then
 * runs that script as root in the guest's root namespaces, where the 9p share is mounted at
 * /run/hull/shared. From there the attacker plants symlinks and renames at each level of the share
 * (container dir, rootfs, volumes, single-file volumes) before a container is deleted, while one is
 * being created (a failpoint holds the host between sharing and the guest's create), and before
 * the sandbox is deleted. Each attack must be refused by the read-only view, and afterwards no host
 * file or mount outside the sandbox may have changed, and everything the sandbox made is released.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, it } from 'node:test';
import { currentGuestImage } from '../../src/guest/index.js';
import { Sandbox, type OciSpec } from '../../src/sandbox/index.js';
import { QemuDriver } from '../../src/vmm/index.js';
import type { OciMount } from '../../src/sandbox/spec.js';
import { defaultSpec, makeBusyboxBundle, type TestBundle } from '../helpers/bundle.js';
import { entriesIn, mountsUnder, processAlive } from '../helpers/leaks.js';

const image = await currentGuestImage();
mkdirSync('/run/hull-test', { recursive: true, mode: 0o700 });
const base = mkdtempSync('/run/hull-test/atk-');
const runRoot = join(base, 'run');
const hostDir = join(base, 'host');
// What the attacker wants the host to delete or unmount: files, a directory, a mounted file system.
const victimDir = join(base, 'victim-dir');
const victimFile = join(base, 'victim-file');
const victimMount = join(base, 'victim-mount');
const GUEST_SHARE = '/run/hull/shared';
// The attacker's container id: its rootfs is at /run/hull/shared/<id>/rootfs in the guest.
const ATTACKER = 'attacker';
const ALL_CAPS = ['CAP_CHOWN', 'CAP_DAC_OVERRIDE', 'CAP_FOWNER', 'CAP_KILL', 'CAP_SETGID', 'CAP_SETUID', 'CAP_SYS_ADMIN', 'CAP_SYS_PTRACE', 'CAP_MKNOD', 'CAP_NET_ADMIN'];

function victimsIntact(): void {
  assert.equal(readFileSync(join(victimDir, 'a'), 'utf8'), 'a\n', 'a victim file was changed');
  assert.equal(readFileSync(join(victimDir, 'sub', 'b'), 'utf8'), 'b\n', 'a victim file was changed');
  assert.equal(readFileSync(victimFile, 'utf8'), 'victim\n', 'the victim file was changed');
  assert.deepEqual(mountsUnder(victimMount), [victimMount], 'the victim file system was unmounted');
  assert.equal(readFileSync(join(victimMount, 'm'), 'utf8'), 'm\n');
  assert.deepEqual(readdirSync(victimDir).sort(), ['a', 'sub']);
}

function bind(source: string, destination: string, ...options: string[]): OciMount {
  return { destination, type: 'bind', source, options: ['rbind', 'rprivate', ...options] };
}

describe('a hostile guest root against the host side of the share', () => {
  let sandbox: Sandbox;
  let bundle: TestBundle;
  let vmPid = 0;
  let duringCreate: ((containerId: string) => Promise<void>) | undefined;

  before(async () => {
    assert.ok(image, 'no guest image: run `make image` (hull image build) first');
    mkdirSync(join(victimDir, 'sub'), { recursive: true });
    writeFileSync(join(victimDir, 'a'), 'a\n');
    writeFileSync(join(victimDir, 'sub', 'b'), 'b\n');
    writeFileSync(victimFile, 'victim\n');
    mkdirSync(victimMount);
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'hull-victim', victimMount]);
    writeFileSync(join(victimMount, 'm'), 'm\n');
    mkdirSync(hostDir);
    bundle = makeBusyboxBundle();
    // The script the guest kernel runs as root on every crash: it runs attack-now.sh, written by the
    // test before each attack, and leaves its output for the test in the attacker's rootfs.
    const root = `${GUEST_SHARE}/${ATTACKER}/rootfs`;
    writeFileSync(join(bundle.rootfs, 'core-helper'), `#!${root}/bin/sh\nexport PATH=${root}/bin\nsh ${root}/attack-now.sh > ${root}/attack-out.tmp 2>&1\nmv ${root}/attack-out.tmp ${root}/attack-out\n`);
    chmodSync(join(bundle.rootfs, 'core-helper'), 0o755);
    sandbox = await Sandbox.create({
      driver: new QemuDriver(),
      id: 'atk',
      image,
      runRoot,
      memoryMiB: 512,
      failpoints: { beforeGuestCreate: async (id) => duringCreate?.(id) },
    });
    vmPid = sandbox.vm.pid;
    // The privileged container: every capability, /proc/sys writable (no readonly paths).
    const spec = defaultSpec(['sleep', '100000']) as OciSpec;
    spec.process = { ...spec.process, capabilities: { bounding: ALL_CAPS, effective: ALL_CAPS, permitted: ALL_CAPS } };
    await sandbox.createContainer(ATTACKER, { bundle: bundle.dir, spec, stdio: {} });
    await sandbox.startContainer(ATTACKER);
    const set = await exec(ATTACKER, `echo '|${root}/core-helper' > /proc/sys/kernel/core_pattern && cat /proc/sys/kernel/core_pattern`);
    assert.equal(set.trim(), `|${root}/core-helper`, 'the privileged container could not reach guest root');
  });

  after(async () => {
    await sandbox?.destroy();
    bundle?.remove();
    execFileSync('umount', [victimMount]);
    assert.equal(processAlive(vmPid), false, 'QEMU process still running after destroy');
    assert.deepEqual(mountsUnder(base), [], 'mounts left under the test directory');
    rmSync(base, { recursive: true, force: true });
  });

  let execs = 0;
  async function exec(containerId: string, script: string): Promise<string> {
    const execId = `e${++execs}`;
    await sandbox.exec(containerId, execId, { args: ['sh', '-c', script], cwd: '/', env: ['PATH=/bin'] }, { stdout: true, stderr: true });
    const out = new PassThrough();
    const chunks: Buffer[] = [];
    out.on('data', (c: Buffer) => chunks.push(c));
    await Promise.all([sandbox.wait(containerId, execId), sandbox.attach(containerId, execId, { stdout: out, stderr: out })]);
    return Buffer.concat(chunks).toString('utf8');
  }

  /** asGuestRoot runs `script` as root in the guest's root namespaces and returns its output. */
  async function asGuestRoot(script: string): Promise<string> {
    const out = join(bundle.rootfs, 'attack-out');
    rmSync(out, { force: true });
    writeFileSync(join(bundle.rootfs, 'attack-now.sh'), `try() { if "$@" 2>/dev/null; then echo "ALLOWED: $*"; else echo "refused: $*"; fi; }\n${script}\necho done\n`);
    await exec(ATTACKER, 'sh -c "kill -SEGV \\$\\$"');
    for (let i = 0; i < 600 && !existsSync(out); i++) await sleep(50);
    assert.ok(existsSync(out), 'the core_pattern helper did not run as guest root');
    const text = readFileSync(out, 'utf8');
    assert.match(text, /^done$/m, text);
    return text;
  }

  /** allowed lists the attacks that went through. */
  function allowed(output: string): string[] {
    return output.split('\n').filter((line) => line.startsWith('ALLOWED: '));
  }

  it('runs its attacks as guest root', async () => {
    const out = await asGuestRoot('id -u; grep -c " /run/hull/shared 9p " /proc/mounts');
    assert.match(out, /^0\n1\n/);
  });

  it('cannot make QEMU open a host device through a device node it creates in its rootfs or a volume', async () => {
    const rw = join(hostDir, 'dev-volume');
    mkdirSync(rw);
    const spec = defaultSpec(['sleep', '100000']) as OciSpec;
    spec.mounts = [...(spec.mounts ?? []), bind(rw, '/rw')];
    await sandbox.createContainer('devnodes', { bundle: bundle.dir, spec, stdio: {} });
    await sandbox.startContainer('devnodes');
    const c = `${GUEST_SHARE}/devnodes`;
    // 1:5 is /dev/zero: harmless, and any bytes read back mean QEMU opened a host device for the guest.
    const out = await asGuestRoot([
      `mknod ${c}/rootfs/zero-node c 1 5 && echo made-rootfs`,
      `mknod ${c}/volumes/6/zero-node c 1 5 && echo made-volume`,
      `try head -c 4 ${c}/rootfs/zero-node`,
      `try head -c 4 ${c}/volumes/6/zero-node`,
    ].join('\n'));
    assert.deepEqual(allowed(out), [], out);
    await sandbox.removeContainer('devnodes');
    rmSync(join(bundle.rootfs, 'zero-node'), { force: true });
  });

  it('refuses symlinks and renames at every level of a container\'s share before its delete', async () => {
    const roDir = join(hostDir, 'ro');
    const rwDir = join(hostDir, 'rw');
    const file = join(hostDir, 'file');
    mkdirSync(roDir);
    mkdirSync(rwDir);
    writeFileSync(file, 'file\n');
    const spec = defaultSpec(['sleep', '100000']) as OciSpec;
    spec.mounts = [...(spec.mounts ?? []), bind(rwDir, '/rw'), bind(roDir, '/ro', 'ro'), bind(file, '/etc/file')];
    await sandbox.createContainer('victim', { bundle: bundle.dir, spec, stdio: {} });
    await sandbox.startContainer('victim');
    const c = `${GUEST_SHARE}/victim`;
    const out = await asGuestRoot([
      `try ln -s ${victimDir} ${c}/planted`,
      `try mv ${c}/volumes ${c}/volumes.moved`,
      `try ln -s ${victimDir} ${c}/volumes.new`,
      `try mv ${c}/rootfs ${c}/rootfs.moved`,
      `try ln -s ${victimMount} ${c}/rootfs.new`,
      // volumes in the spec: 6 = rw dir, 7 = ro dir, 8 = single file (after the six default mounts)
      `try mv ${c}/volumes/6 ${c}/volumes/6.moved`,
      `try ln -s ${victimMount} ${c}/volumes/9`,
      `try rm -f ${c}/volumes/8`,
      `try ln -s ${victimFile} ${c}/volumes/8.new`,
      `try mkdir ${c}/volumes/7/x`,
      `try touch ${c}/volumes/7/x`,
      `try rmdir ${c}/volumes/6`,
      `try mkdir ${GUEST_SHARE}/victim2`,
    ].join('\n'));
    assert.deepEqual(allowed(out), [], out);
    // Inside a writable volume the pod may write, symlinks included; the host never follows them.
    const inside = await asGuestRoot(`try ln -s ${victimDir} ${c}/volumes/6/link\ntry ln -s ${victimFile} ${c}/rootfs/tmp-link`);
    assert.equal(allowed(inside).length, 2, inside);
    await sandbox.removeContainer('victim');
    victimsIntact();
    assert.equal(existsSync(join(sandbox.mountsDir, 'victim')), false, 'the container\'s share was not released');
    assert.deepEqual(mountsUnder(join(sandbox.mountsDir, 'victim')), []);
    assert.equal(readFileSync(file, 'utf8'), 'file\n');
    rmSync(join(bundle.rootfs, 'tmp-link'));
  });

  it('refuses the same attacks while a container is being created, and the container still runs', async () => {
    const rwDir = join(hostDir, 'during');
    mkdirSync(rwDir);
    writeFileSync(join(rwDir, 'keep'), 'kept\n');
    let attacked = '';
    duringCreate = async (id) => {
      if (id !== 'during') return;
      const c = `${GUEST_SHARE}/during`;
      // The host has shared the rootfs and volume and waits here: the guest sees them already.
      attacked = await asGuestRoot([
        `test -d ${c}/rootfs/bin && echo "SEEN: rootfs"`,
        `try mv ${c}/rootfs ${c}/rootfs.moved`,
        `try ln -s ${victimDir} ${c}/rootfs.new`,
        `try mv ${c}/volumes ${c}/volumes.moved`,
        `try ln -s ${victimDir} ${c}/volumes/99`,
        `try rmdir ${c}/volumes/6`,
      ].join('\n'));
    };
    const spec = defaultSpec(['cat', '/data/keep']) as OciSpec;
    spec.mounts = [...(spec.mounts ?? []), bind(rwDir, '/data')];
    try {
      await sandbox.createContainer('during', { bundle: bundle.dir, spec, stdio: { stdout: true } });
    } finally {
      duringCreate = undefined;
    }
    assert.match(attacked, /^SEEN: rootfs$/m, attacked);
    assert.deepEqual(allowed(attacked), [], attacked);
    await sandbox.startContainer('during');
    const out = new PassThrough();
    const chunks: Buffer[] = [];
    out.on('data', (c: Buffer) => chunks.push(c));
    const [exit] = await Promise.all([sandbox.wait('during'), sandbox.attach('during', '', { stdout: out })]);
    assert.equal(exit.exitStatus, 0);
    assert.equal(Buffer.concat(chunks).toString('utf8'), 'kept\n');
    await sandbox.removeContainer('during');
    victimsIntact();
    assert.equal(existsSync(join(sandbox.mountsDir, 'during')), false);
  });

  it('refuses attacks on the top of the share before the sandbox is deleted, and the sandbox ends clean', async () => {
    const out = await asGuestRoot([
      `try ln -s / ${GUEST_SHARE}/root-link`,
      `try ln -s ${victimMount} ${GUEST_SHARE}/mnt-link`,
      `try mv ${GUEST_SHARE}/${ATTACKER} ${GUEST_SHARE}/moved`,
      `try mkdir ${GUEST_SHARE}/new`,
      `try rmdir ${GUEST_SHARE}/${ATTACKER}/rootfs`,
      `try umount -l ${GUEST_SHARE}/${ATTACKER}/rootfs`,
      `try mkdir ${GUEST_SHARE}/${ATTACKER}/volumes`,
    ].join('\n'));
    // Unmounting in the guest only changes the guest's mount table, never the host's.
    assert.deepEqual(allowed(out).filter((line) => !line.includes('umount')), [], out);
    await sandbox.destroy();
    victimsIntact();
    assert.equal(processAlive(vmPid), false, 'the pod did not end');
    assert.deepEqual(entriesIn(runRoot), [], 'files left under the run root');
    assert.deepEqual(mountsUnder(runRoot), [], 'mounts left under the run root');
  });
});
