/**
 * `node dist/bench/vport.js [MiB]`: what one virtio-serial port carries between the guest kernel and
 * a host unix socket, with no JavaScript in the guest — the measurement behind issue 21's design of
 * container stdio on dedicated ports. Boots the guest image's kernel (microvm, the machine's
 * accelerator choice) with a throwaway initramfs: busybox and the virtio modules from the guest
 * image's own initramfs, and an /init that `dd`s MiB zeros into the port `bench.out` (64 KiB writes),
 * then `cat`s the port `bench.in` to /dev/null until the host hangs up. The host counts what arrives
 * on `bench.out`'s socket (first byte to last) and times writing MiB into `bench.in`'s socket until
 * the guest says it read to the end. Prints both in MiB/s.
 */
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { currentGuestImage } from '../src/guest/index.js';
import { newcArchive, type CpioEntry } from '../src/guest/cpio.js';
import { chooseAccel, hostTscKhz } from '../src/vmm/accel.js';

const MODULES = ['virtio_ring', 'virtio', 'virtio_mmio', 'virtio_console'];
const INIT = `#!/bin/sh
export PATH=/bin
mount -t proc proc /proc; mount -t sysfs sysfs /sys; mount -t devtmpfs devtmpfs /dev
for m in ${MODULES.join(' ')}; do insmod /lib/modules/$m.ko; done
port() { for p in /sys/class/virtio-ports/*; do [ "$(cat $p/name)" = "$1" ] && echo /dev/\${p##*/}; done; }
while [ -z "$(port bench.in)" ]; do usleep 10000; done
mib=$(sed -n 's/.*bench.mib=\\([0-9]*\\).*/\\1/p' /proc/cmdline)
dd if=/dev/zero of=$(port bench.out) bs=65536 count=$((mib * 16)) 2>/dev/null
cat $(port bench.in) > /dev/null
echo bench-in-done
poweroff -f
`;

async function connectRetry(path: string): Promise<Socket> {
  for (let i = 0; ; i++) {
    try {
      return await new Promise<Socket>((resolve, reject) => {
        const s = connect(path);
        s.once('connect', () => resolve(s));
        s.once('error', reject);
      });
    } catch (e) {
      if (i > 200) throw e;
      await sleep(50); // QEMU has not made its socket yet
    }
  }
}

const mib = Number(process.argv[2] ?? 128);
const image = await currentGuestImage();
if (!image) throw new Error('No guest image: run `make image` first');
const dir = mkdtempSync(join(tmpdir(), 'hull-vport-'));
try {
  spawnSync('busybox', ['cpio', '-id', 'bin/busybox', ...MODULES.map((m) => `lib/modules/${m}.ko`)], { cwd: dir, input: readFileSync(image.initrd) });
  const entries: CpioEntry[] = ['bin', 'dev', 'lib', 'lib/modules', 'proc', 'sys'].map((path) => ({ type: 'dir', path }));
  entries.push({ type: 'file', path: 'init', mode: 0o755, data: Buffer.from(INIT) });
  entries.push({ type: 'file', path: 'bin/busybox', mode: 0o755, data: readFileSync(join(dir, 'bin/busybox')) });
  for (const applet of ['sh', 'mount', 'insmod', 'dd', 'cat', 'sed', 'usleep', 'poweroff']) entries.push({ type: 'symlink', path: `bin/${applet}`, target: 'busybox' });
  for (const m of MODULES) entries.push({ type: 'file', path: `lib/modules/${m}.ko`, mode: 0o644, data: readFileSync(join(dir, `lib/modules/${m}.ko`)) });
  writeFileSync(join(dir, 'initrd'), newcArchive(entries));

  const accel = await chooseAccel();
  const tsc = hostTscKhz(readFileSync('/proc/cpuinfo', 'utf8'));
  const append = `console=ttyS0 quiet panic=-1 reboot=t pci=off tsc=reliable no_timer_check 8250.nr_uarts=1${tsc ? ` tsc_early_khz=${tsc}` : ''} bench.mib=${mib}`;
  const qemu = spawn('qemu-system-x86_64', [
    '-machine', 'microvm,acpi=on,pic=off,pit=off,rtc=on', '-accel', accel.accel === 'kvm' ? 'kvm' : 'tcg,thread=multi', '-cpu', 'max', '-smp', '1', '-m', '256M',
    '-nodefaults', '-no-user-config', '-nographic', '-no-reboot', '-kernel', image.kernel, '-initrd', join(dir, 'initrd'), '-append', append,
    '-serial', 'stdio', '-device', 'virtio-serial-device',
    '-chardev', `socket,id=out,path=${join(dir, 'out.sock')},server=on,wait=off`, '-device', 'virtserialport,chardev=out,name=bench.out',
    '-chardev', `socket,id=in,path=${join(dir, 'in.sock')},server=on,wait=off`, '-device', 'virtserialport,chardev=in,name=bench.in',
  ], { stdio: ['ignore', 'pipe', 'inherit'] });
  let serial = '';
  let onConsole = (): void => {};
  qemu.stdout.on('data', (d: Buffer) => ((serial += d.toString()), onConsole()));
  const exited = new Promise((resolve) => qemu.once('exit', resolve));
  try {
    const out = await connectRetry(join(dir, 'out.sock'));
    const input = await connectRetry(join(dir, 'in.sock'));
    const total = mib << 20;
    let received = 0;
    let first = 0;
    const outSeconds = await new Promise<number>((resolve) =>
      out.on('data', (c: Buffer) => {
        first ||= performance.now();
        received += c.length;
        if (received >= total) resolve((performance.now() - first) / 1000);
      }),
    );
    const chunk = Buffer.alloc(1 << 20, 1);
    const started = performance.now();
    for (let i = 0; i < mib; i++) if (!input.write(chunk)) await new Promise((r) => input.once('drain', r));
    input.end();
    await new Promise<void>((resolve) => (onConsole = () => void (serial.includes('bench-in-done') && resolve()))());
    const inSeconds = (performance.now() - started) / 1000;
    process.stdout.write(`one virtio-serial port, ${mib} MiB, accel ${accel.accel}: guest→host ${(mib / outSeconds).toFixed(1)} MiB/s, host→guest ${(mib / inSeconds).toFixed(1)} MiB/s\n`);
    await exited;
    out.destroy();
    input.destroy();
  } finally {
    if (qemu.exitCode === null) qemu.kill('SIGKILL');
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}
