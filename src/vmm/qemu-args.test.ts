import { strict as assert } from 'node:assert';
import { describe, it } from 'node:test';
import { isInvalidArgument } from '../errors/index.js';
import type { VmSpec } from './driver.js';
import { DEFAULT_CONFIG } from '../config/index.js';
import { BASE_KERNEL_ARGS, TCG_TB_SIZE_MIB, TEMPLATE_MAC, kernelCommandLine, qemuArgs, qemuPaths, validateSpec } from './qemu-args.js';

const spec: VmSpec = {
  id: 'abc123',
  stateDir: '/run/hull/abc123',
  vcpus: 2,
  memoryMiB: 1024,
  kernel: '/var/lib/hull/guest/current/kernel',
  initrd: '/var/lib/hull/guest/current/initrd.img',
  rootDisk: '/var/lib/hull/guest/current/root.img',
  sharedDir: '/run/hull/abc123/shared',
};

/** valueOf returns the word after each occurrence of `flag`. */
function valuesOf(args: string[], flag: string): string[] {
  return args.flatMap((word, i) => (word === flag ? [args[i + 1]!] : []));
}

describe('qemuArgs()', () => {
  const paths = qemuPaths(spec.stateDir);

  it('uses multi-threaded TCG and -cpu max for tcg', () => {
    const args = qemuArgs(spec, 'tcg', paths);
    assert.deepEqual(valuesOf(args, '-accel'), [`tcg,thread=multi,tb-size=${TCG_TB_SIZE_MIB}`]);
    assert.deepEqual(valuesOf(args, '-cpu'), ['max,erms=off,fsrm=off']);
  });

  it('sizes the TCG code buffer as told, by default as the config does', () => {
    assert.deepEqual(valuesOf(qemuArgs(spec, 'tcg', paths, { tcgTbSizeMiB: 48 }), '-accel'), ['tcg,thread=multi,tb-size=48']);
    assert.deepEqual(valuesOf(qemuArgs(spec, 'kvm', paths, { tcgTbSizeMiB: 48 }), '-accel'), ['kvm']);
    assert.equal(DEFAULT_CONFIG.tcgTbSizeMiB, TCG_TB_SIZE_MIB);
  });

  it('keeps guest RAM away from KSM unless told', () => {
    assert.match(valuesOf(qemuArgs(spec, 'tcg', paths), '-object')[0]!, /,merge=off$/);
    assert.match(valuesOf(qemuArgs(spec, 'kvm', paths, { memoryMerge: true }), '-object')[0]!, /,merge=on$/);
    assert.equal(DEFAULT_CONFIG.memoryMerge, false);
  });

  it('uses kvm and -cpu host for kvm', () => {
    const args = qemuArgs(spec, 'kvm', paths);
    assert.deepEqual(valuesOf(args, '-accel'), ['kvm']);
    assert.deepEqual(valuesOf(args, '-cpu'), ['host']);
  });

  it('never combines -accel with an accel= machine option', () => {
    for (const accel of ['kvm', 'tcg'] as const) {
      for (const machine of valuesOf(qemuArgs(spec, accel, paths), '-machine')) assert.doesNotMatch(machine, /accel=/);
    }
  });

  it('names the process after the VM and sizes it from the spec', () => {
    const args = qemuArgs(spec, 'tcg', paths);
    assert.deepEqual(valuesOf(args, '-name'), ['hull-abc123']);
    assert.deepEqual(valuesOf(args, '-smp'), ['2']);
    assert.deepEqual(valuesOf(args, '-m'), ['1024M']);
    assert.deepEqual(valuesOf(args, '-machine'), ['microvm,acpi=on,pic=off,pit=off,rtc=on,memory-backend=ram']);
    assert.deepEqual(valuesOf(args, '-object'), ['memory-backend-ram,id=ram,size=1024M,merge=off']);
  });

  it('isolates QEMU: no defaults, no reboot, seccomp sandbox', () => {
    const args = qemuArgs(spec, 'tcg', paths);
    for (const flag of ['-nodefaults', '-no-user-config', '-nographic', '-no-reboot']) assert.ok(args.includes(flag), flag);
    assert.deepEqual(valuesOf(args, '-sandbox'), ['on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny']);
  });

  it('puts every socket and file it creates inside the state directory', () => {
    const args = qemuArgs(spec, 'tcg', paths);
    const chardevs = valuesOf(args, '-chardev');
    assert.deepEqual(chardevs.sort(), [
      'socket,id=agent,path=/run/hull/abc123/agent.sock,server=on,wait=off',
      'socket,id=console,path=/run/hull/abc123/console.sock,server=on,wait=off',
      'socket,id=qmp,path=/run/hull/abc123/qmp.sock,server=on,wait=off',
    ]);
    assert.deepEqual(valuesOf(args, '-mon'), ['chardev=qmp,mode=control']);
    assert.deepEqual(valuesOf(args, '-serial'), ['chardev:console']);
    assert.deepEqual(valuesOf(args, '-pidfile'), ['/run/hull/abc123/qemu.pid']);
    for (const path of Object.values(paths)) assert.ok(path.startsWith('/run/hull/abc123/'), path);
  });

  it('attaches the agent port, rng, read-only root disk and the 9p share', () => {
    const args = qemuArgs(spec, 'tcg', paths);
    assert.deepEqual(valuesOf(args, '-device'), [
      'virtio-serial-device',
      'virtserialport,id=agent-port,chardev=agent,name=hull.agent',
      'virtio-rng-device',
      'virtio-blk-device,drive=root',
      'virtio-9p-device,fsdev=shared,mount_tag=hull',
    ]);
    assert.deepEqual(valuesOf(args, '-drive'), ['id=root,file=/var/lib/hull/guest/current/root.img,format=raw,if=none,readonly=on']);
    assert.deepEqual(valuesOf(args, '-fsdev'), ['local,id=shared,path=/run/hull/abc123/shared,security_model=none,multidevs=remap']);
    assert.deepEqual(valuesOf(args, '-kernel'), [spec.kernel]);
    assert.deepEqual(valuesOf(args, '-initrd'), [spec.initrd]);
  });

  it('adds a virtio-net device on the given tap when net is set', () => {
    const args = qemuArgs({ ...spec, net: { tapName: 'tap0', mac: '02:00:00:00:00:01' } }, 'tcg', paths);
    assert.deepEqual(valuesOf(args, '-netdev'), ['tap,id=net0,ifname=tap0,script=no,downscript=no']);
    assert.ok(valuesOf(args, '-device').includes('virtio-net-device,netdev=net0,mac=02:00:00:00:00:01'));
  });

  it('has no network device without net on a cold boot', () => {
    const args = qemuArgs(spec, 'tcg', paths);
    assert.deepEqual(valuesOf(args, '-netdev'), []);
    assert.ok(!args.includes('-incoming'));
  });

  it('puts a template source\'s RAM in its RAM file, shared, with a NIC on an isolated hub', () => {
    const args = qemuArgs({ ...spec, templateRamFile: '/dev/shm/hull-templates/k/ram.1.ab' }, 'tcg', paths);
    assert.deepEqual(valuesOf(args, '-object'), ['memory-backend-file,id=ram,size=1024M,mem-path=/dev/shm/hull-templates/k/ram.1.ab,share=on,merge=off']);
    assert.deepEqual(valuesOf(args, '-netdev'), ['hubport,id=net0,hubid=0']);
    assert.ok(valuesOf(args, '-device').includes(`virtio-net-device,netdev=net0,mac=${TEMPLATE_MAC}`));
    assert.ok(!args.includes('-incoming'));
  });

  it('gives a clone the same machine: the template RAM private (share=off), -incoming defer, same devices', () => {
    const source = qemuArgs({ ...spec, templateRamFile: '/dev/shm/t/ram' }, 'tcg', paths, { paused: true });
    const clone = qemuArgs({ ...spec, template: { stateFile: '/var/lib/hull/templates/k/state', ramFile: '/dev/shm/t/ram' } }, 'tcg', paths, { paused: true });
    assert.deepEqual(valuesOf(clone, '-object'), ['memory-backend-file,id=ram,size=1024M,mem-path=/dev/shm/t/ram,share=off,merge=off']);
    assert.deepEqual(valuesOf(clone, '-incoming'), ['defer']);
    assert.deepEqual(valuesOf(clone, '-device'), valuesOf(source, '-device'));
    assert.deepEqual(valuesOf(clone, '-netdev'), valuesOf(source, '-netdev'));
    assert.deepEqual(valuesOf(clone, '-append'), valuesOf(source, '-append'));
  });

  it('backs a clone\'s NIC with its tap, keeping the template MAC (the MAC comes from the saved state)', () => {
    const args = qemuArgs({ ...spec, template: { stateFile: '/t/state', ramFile: '/r' }, net: { tapName: 'tap0', mac: '02:00:00:00:00:01' } }, 'tcg', paths);
    assert.deepEqual(valuesOf(args, '-netdev'), ['tap,id=net0,ifname=tap0,script=no,downscript=no']);
    assert.ok(valuesOf(args, '-device').includes(`virtio-net-device,netdev=net0,mac=${TEMPLATE_MAC}`));
  });

  it('escapes commas in paths inside option strings', () => {
    const odd = { ...spec, rootDisk: '/images/a,b.img', sharedDir: '/share,x' };
    const args = qemuArgs(odd, 'tcg', qemuPaths('/state,1'));
    assert.ok(valuesOf(args, '-drive')[0]!.includes('file=/images/a,,b.img,'));
    assert.ok(valuesOf(args, '-fsdev')[0]!.includes('path=/share,,x,'));
    assert.ok(valuesOf(args, '-chardev').includes('socket,id=qmp,path=/state,,1/qmp.sock,server=on,wait=off'));
  });

  it('starts paused (-S) only when asked', () => {
    assert.ok(!qemuArgs(spec, 'tcg', paths).includes('-S'));
    assert.ok(qemuArgs(spec, 'tcg', paths, { paused: true }).includes('-S'));
  });

  it('passes the kernel command line with tsc_early_khz when known', () => {
    const [withTsc] = valuesOf(qemuArgs(spec, 'tcg', paths, { tscKhz: 2596120 }), '-append');
    assert.match(withTsc!, / tsc_early_khz=2596120( |$)/);
    const [withoutTsc] = valuesOf(qemuArgs(spec, 'tcg', paths), '-append');
    assert.doesNotMatch(withoutTsc!, /tsc_early_khz/);
  });
});

describe('kernelCommandLine()', () => {
  it('is the tuned base list, then tsc_early_khz, then the spec arguments', () => {
    const line = kernelCommandLine({ ...spec, kernelArgs: ['hull.debug=1', 'quiet=0'] }, 1000);
    assert.equal(line, [...BASE_KERNEL_ARGS, 'tsc_early_khz=1000', 'hull.debug=1', 'quiet=0'].join(' '));
    for (const arg of ['console=ttyS0', 'panic=-1', 'reboot=t', 'pci=off', 'random.trust_cpu=on', 'no_timer_check']) assert.ok(line.split(' ').includes(arg), arg);
  });
});

describe('validateSpec()', () => {
  it('accepts a well-formed spec', () => {
    validateSpec(spec);
    validateSpec({ ...spec, id: 'a'.repeat(64), net: { tapName: 'tap_abc-1', mac: 'AA:bb:cc:dd:ee:ff' } });
  });

  const bad: Array<[string, Partial<VmSpec>]> = [
    ['an id with a comma', { id: 'a,b' }],
    ['an id with a slash', { id: '../x' }],
    ['an id longer than 76 (containerd ids)', { id: 'a'.repeat(77) }],
    ['zero vcpus', { vcpus: 0 }],
    ['fractional memory', { memoryMiB: 100.5 }],
    ['too little memory', { memoryMiB: 32 }],
    ['a relative kernel path', { kernel: 'vmlinuz' }],
    ['a relative state dir', { stateDir: 'run/x' }],
    ['a socket path over 107 bytes', { stateDir: '/' + 'd'.repeat(100) }],
    ['a kernel argument with a newline', { kernelArgs: ['a\nb'] }],
    ['an empty kernel argument', { kernelArgs: [''] }],
    ['a tap name with a comma', { net: { tapName: 'tap,script=/x', mac: '02:00:00:00:00:01' } }],
    ['a malformed MAC', { net: { tapName: 'tap0', mac: '02:00:00:00:00' } }],
    ['a relative template RAM file', { templateRamFile: 'ram' }],
    ['a relative template state file', { template: { stateFile: 'templates/k/state', ramFile: '/dev/shm/r' } }],
    ['a template source that is also a clone', { templateRamFile: '/dev/shm/a', template: { stateFile: '/t/state', ramFile: '/dev/shm/r' } }],
  ];
  for (const [what, change] of bad) {
    it(`rejects ${what} as invalid_argument`, () => {
      assert.throws(() => validateSpec({ ...spec, ...change }), isInvalidArgument);
    });
  }
});
