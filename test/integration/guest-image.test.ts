/**
 * guest-image — builds a real guest image (Debian kernel fetched with apt, host node/crun/busybox)
 * with a stub agent, boots it under QEMU microvm and checks that the stub ran inside with the
 * environment /sbin/init promises; then checks that a second build with the same inputs does nothing.
 *
 * Needs: apt with access to Debian's archive (or a kernel .deb apt can fetch), dpkg-deb, mkfs.ext4,
 * busybox-static, crun, qemu-system-x86_64. Slow (~10 s build + ~5 s boot under TCG).
 */

import { test } from 'node:test';
import { strict as assert } from 'node:assert';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AGENT_PORT_NAME, buildGuestImage, currentGuestImage, guestImageIsStale, type GuestImage } from '../../src/guest/index.js';

const QEMU = 'qemu-system-x86_64';
const BOOT_TIMEOUT_MS = 90_000;

function missingTools(): string | false {
  for (const tool of [QEMU, 'apt-get', 'dpkg-deb', 'mkfs.ext4', 'debugfs']) {
    if (spawnSync('sh', ['-c', `command -v ${tool}`]).status !== 0) return `${tool} not installed`;
  }
  for (const path of ['/bin/busybox', '/usr/bin/crun', '/usr/bin/script', '/usr/bin/node']) {
    if (!existsSync(path)) return `${path} missing`;
  }
  return false;
}

/** STUB_AGENT reports what the guest looks like from the agent's place, then powers the VM off. */
const STUB_AGENT = `
const { execFileSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const ports = fs.readdirSync('/sys/class/virtio-ports').map((p) => fs.readFileSync('/sys/class/virtio-ports/' + p + '/name', 'utf8').trim());
const report = {
  release: os.release(),
  uid: process.getuid(),
  nodeOptions: process.env.NODE_OPTIONS ?? null,
  path: process.env.PATH,
  home: process.env.HOME,
  hullTest: process.env.HULL_TEST_PARAM ?? null,
  ports,
  controllers: fs.readFileSync('/sys/fs/cgroup/cgroup.subtree_control', 'utf8').trim().split(' '),
  mounts: fs.readFileSync('/proc/mounts', 'utf8').trim().split('\\n').map((l) => l.split(' ').slice(1, 4).join(' ')),
  ptmx: fs.readlinkSync('/dev/ptmx'),
  crun: execFileSync('/usr/bin/crun', ['--version']).toString().split('\\n')[0],
  rootWritable: (() => { try { fs.writeFileSync('/probe', 'x'); return true; } catch { return false; } })(),
};
console.log('AGENT-STUB-OK ' + JSON.stringify(report));
execFileSync('/bin/busybox', ['poweroff', '-f']);
`;

/** tscKhz reads the host TSC frequency; without tsc_early_khz a TCG guest may hang calibrating. */
function tscKhz(): string | undefined {
  const m = /^cpu MHz\s*:\s*([\d.]+)/m.exec(readFileSync('/proc/cpuinfo', 'utf8'));
  return m === null ? undefined : String(Math.round(Number(m[1]) * 1000));
}

function boot(image: GuestImage, dir: string): Promise<{ code: number | null; output: string }> {
  const khz = tscKhz();
  const append = [
    'console=ttyS0 quiet cryptomgr.notests mitigations=off audit=0 i8042.noaux no_timer_check 8250.nr_uarts=1',
    'random.trust_cpu=on panic=-1 pci=off hull.test-param=xyz',
    khz !== undefined ? `tsc_early_khz=${khz}` : '',
  ].join(' ');
  const args = [
    '-M', 'microvm,acpi=on,pic=off,pit=off,rtc=on',
    '-accel', 'tcg,thread=multi',
    '-cpu', 'max',
    '-m', '512',
    '-smp', '1',
    '-nodefaults', '-no-user-config', '-nographic', '-no-reboot',
    '-kernel', image.kernel,
    '-initrd', image.initrd,
    '-append', append,
    '-serial', 'stdio',
    '-drive', `id=root,file=${image.rootDisk},format=raw,if=none,readonly=on`,
    '-device', 'virtio-blk-device,drive=root',
    '-device', 'virtio-serial-device',
    '-chardev', `socket,id=agent,path=${join(dir, 'agent.sock')},server=on,wait=off`,
    '-device', `virtserialport,chardev=agent,name=${AGENT_PORT_NAME}`,
    '-device', 'virtio-rng-device',
  ];
  return new Promise((resolve, reject) => {
    const qemu = spawn(QEMU, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    qemu.stdout.on('data', (b: Buffer) => (output += b.toString()));
    qemu.stderr.on('data', (b: Buffer) => (output += b.toString()));
    const timer = setTimeout(() => {
      qemu.kill('SIGKILL');
      reject(new Error(`QEMU did not exit within ${BOOT_TIMEOUT_MS} ms; console:\n${output}`));
    }, BOOT_TIMEOUT_MS);
    qemu.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    qemu.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, output });
    });
  });
}

test('a built guest image boots under QEMU and runs the agent; an unchanged rebuild does nothing', { skip: missingTools(), timeout: 600_000 }, async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'hull-guest-image-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const imagesRoot = join(dir, 'images');
  const agent = join(dir, 'agent.js');
  await writeFile(agent, STUB_AGENT);
  const log: string[] = [];

  const image = await buildGuestImage({ agentBundle: agent, imagesRoot, log: (l) => log.push(l) });
  assert.match(image.id, /^[0-9a-f]{20}$/);
  assert.match(image.kernelRelease, /^\d+\.\d+\.\d+-\d+-amd64$/);
  assert.ok(image.manifest.modules.includes('virtio_blk.ko') && image.manifest.modules.includes('9p.ko'));
  assert.ok(image.manifest.files['root.img'].size >= 64 * 1024 * 1024);
  assert.equal((await currentGuestImage(imagesRoot))?.id, image.id);
  t.diagnostic(`build: ${image.manifest.buildMs} ms; initrd ${image.manifest.files['initrd.img'].size} B, root ${image.manifest.files['root.img'].size} B`);

  const { code, output } = await boot(image, dir);
  const line = output.split('\n').find((l) => l.startsWith('AGENT-STUB-OK '));
  assert.ok(line !== undefined, `no AGENT-STUB-OK on the console:\n${output}`);
  assert.equal(code, 0, output);
  const report = JSON.parse(line.slice('AGENT-STUB-OK '.length)) as Record<string, unknown>;
  assert.equal(report.release, image.kernelRelease);
  assert.equal(report.uid, 0);
  assert.equal(report.nodeOptions, null);
  assert.equal(report.path, '/usr/bin:/bin:/usr/sbin:/sbin');
  assert.equal(report.home, '/root');
  assert.equal(report.hullTest, 'xyz');
  assert.deepEqual(report.ports, [AGENT_PORT_NAME]);
  for (const c of ['cpu', 'memory', 'pids']) assert.ok((report.controllers as string[]).includes(c), String(report.controllers));
  const mounts = report.mounts as string[];
  assert.ok(mounts.includes('/ ext4 ro,relatime'), mounts.join('\n'));
  for (const m of ['/proc proc', '/sys sysfs', '/run tmpfs', '/tmp tmpfs', '/dev devtmpfs', '/dev/pts devpts', '/sys/fs/cgroup cgroup2']) {
    assert.ok(mounts.some((x) => x.startsWith(m)), `${m} not mounted:\n${mounts.join('\n')}`);
  }
  assert.equal(report.ptmx, 'pts/ptmx');
  assert.match(String(report.crun), /^crun version/);
  assert.equal(report.rootWritable, false);

  // Same inputs: nothing is rebuilt.
  const again = await buildGuestImage({ agentBundle: agent, imagesRoot });
  assert.equal(again.id, image.id);
  assert.equal(again.manifest.builtAt, image.manifest.builtAt);
  assert.equal(await guestImageIsStale({ agentBundle: agent, imagesRoot }), false);
  await writeFile(agent, STUB_AGENT + '\n// changed\n');
  assert.equal(await guestImageIsStale({ agentBundle: agent, imagesRoot }), true);
});
