import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { errorCode } from '../errors/index.js';
import { CRI_CPU_PERIOD, CRI_CPU_QUOTA, CRI_MEMORY, HOST_OVERHEAD_MIB, LIMITED_STEP_MIB, MEMORY_STEP_MIB, checkVmSize, podAllLimited, podLimitShortfall, podVmSize } from './sizing.js';

const MIB = 1024 * 1024;
const defaults = { vcpus: 1, memoryMiB: 2048, guestSlackMiB: 192 };
const withMemory = (bytes: number) => podVmSize({ annotations: { [CRI_MEMORY]: String(bytes) } } as Parameters<typeof podVmSize>[0], defaults).memoryMiB;

describe('podVmSize()', () => {
  it('adds the limits to the defaults', () => {
    const size = podVmSize({ annotations: { [CRI_CPU_QUOTA]: '150000', [CRI_CPU_PERIOD]: '100000', [CRI_MEMORY]: String(512 * MIB) } } as Parameters<typeof podVmSize>[0], defaults);
    assert.deepEqual(size, { vcpus: 3, memoryMiB: 2560 });
    assert.deepEqual(podVmSize({} as Parameters<typeof podVmSize>[0], defaults), { vcpus: 1, memoryMiB: 2048 });
  });

  it('rounds memory up to a step: a pod gets at least what it asked for, and tiny limits share one size', () => {
    assert.equal(MEMORY_STEP_MIB, 256);
    const sizes = new Set<number>();
    for (let limitMiB = 1; limitMiB <= 1024; limitMiB++) {
      const memoryMiB = withMemory(limitMiB * MIB);
      assert.ok(memoryMiB >= defaults.memoryMiB + limitMiB, `${limitMiB} MiB of limits got a ${memoryMiB} MiB VM`);
      assert.ok(memoryMiB < defaults.memoryMiB + limitMiB + MEMORY_STEP_MIB);
      assert.equal(memoryMiB % MEMORY_STEP_MIB, 0);
      sizes.add(memoryMiB);
    }
    assert.deepEqual([...sizes], [2304, 2560, 2816, 3072], '1024 distinct limits, 4 VM sizes');
    // A byte over a MiB is a MiB more; a default that is not a multiple is rounded too.
    assert.equal(withMemory(256 * MIB), 2304);
    assert.equal(withMemory(256 * MIB + 1), 2560);
    assert.equal(podVmSize({} as Parameters<typeof podVmSize>[0], { vcpus: 1, memoryMiB: 300, guestSlackMiB: 192 }).memoryMiB, 512);
  });

  it('caps what annotations can ask for', () => {
    assert.equal(withMemory(1024 * 1024 * MIB), 2048 + 256 * 1024);
  });

  const limited = (bytes: number, slack = 192) => podVmSize({ annotations: { [CRI_MEMORY]: String(bytes) } } as Parameters<typeof podVmSize>[0], { ...defaults, guestSlackMiB: slack }, true).memoryMiB;

  it('sizes a pod whose containers all have limits by the limits + the guest\'s slack, not default_memory', () => {
    assert.equal(LIMITED_STEP_MIB, 64);
    // 256 + 192 + 4 (page descriptors: 1/64 of the limits) = 452 -> 512.
    assert.equal(limited(256 * MIB), 512);
    assert.equal(limited(128 * MIB), 384); // 128 + 192 + 2 = 322 -> 384
    assert.equal(limited(4096 * MIB), 4096 + 192 + 64); // 4352: a multiple already
    assert.equal(limited(4096 * MIB + 1), 4096 + 192 + 64 + 64); // one byte more: a MiB, a descriptor page, a step
    for (let limitMiB = 1; limitMiB <= 8192; limitMiB += 7) {
      const memoryMiB = limited(limitMiB * MIB);
      const need = limitMiB + 192 + Math.ceil(limitMiB / 64);
      assert.ok(memoryMiB >= need, `${limitMiB} MiB of limits got a ${memoryMiB} MiB VM, below limits + slack`);
      assert.ok(memoryMiB < need + LIMITED_STEP_MIB, `${limitMiB} MiB of limits got ${memoryMiB} MiB: more than a step of rounding`);
      assert.equal(memoryMiB % LIMITED_STEP_MIB, 0);
    }
    // The slack is the operator's (guest_slack_memory).
    assert.equal(limited(256 * MIB, 448), 768);
    // CPU is sized as before.
    assert.equal(podVmSize({ annotations: { [CRI_MEMORY]: String(256 * MIB), [CRI_CPU_QUOTA]: '250000', [CRI_CPU_PERIOD]: '100000' } } as Parameters<typeof podVmSize>[0], defaults, true).vcpus, 4);
  });

  it('keeps default_memory + limits for a pod with a container without a limit, or with no limits at all', () => {
    assert.equal(withMemory(256 * MIB), 2304);
    assert.equal(podVmSize({} as Parameters<typeof podVmSize>[0], defaults, true).memoryMiB, 2048, 'no limits on the spec: the default, even if the pod cgroup is limited');
    assert.equal(limited(0), 2048);
  });
});

describe('podAllLimited()', () => {
  it('is false without a pod cgroup or without limits on the spec', async () => {
    assert.deepEqual(await podAllLimited({ annotations: { [CRI_MEMORY]: String(MIB) } } as Parameters<typeof podAllLimited>[0]), { allLimited: false });
    // A cgroup that does not exist has no limit.
    assert.deepEqual(await podAllLimited({ annotations: { [CRI_MEMORY]: String(MIB) }, linux: { cgroupsPath: '/hull-no-such-cgroup/pod/sandbox' } } as Parameters<typeof podAllLimited>[0]), { allLimited: false });
    // A sandbox directly below a hierarchy's root: the root is never a pod's.
    assert.deepEqual(await podAllLimited({ annotations: { [CRI_MEMORY]: String(MIB) }, linux: { cgroupsPath: '/sandbox' } } as Parameters<typeof podAllLimited>[0]), { allLimited: false });
  });
});

describe('podLimitShortfall()', () => {
  it('is 0 when the pod cgroup holds the whole VM, TCG\'s buffer and the host side; else what is missing', () => {
    // 320 MiB of limits + a 768Mi podFixed hold a 576 MiB VM with a 256 MiB TCG buffer.
    assert.equal(podLimitShortfall((320 + 768) * MIB, 576, 256), 0);
    assert.equal(podLimitShortfall((320 + 512) * MIB, 576, 256), 576 + 256 + HOST_OVERHEAD_MIB - 832);
    assert.equal(podLimitShortfall((320 + 512) * MIB, 576, 0), 0, 'under KVM there is no TCG buffer');
  });
});

describe('checkVmSize()', () => {
  const max = { vcpus: 4, memoryMiB: 4096 };
  it('lets a VM up to the bounds through', () => {
    checkVmSize({ vcpus: 4, memoryMiB: 4096 }, max);
    checkVmSize({ vcpus: 1, memoryMiB: 512 }, max);
  });
  it('refuses a VM above either bound, naming what was asked and the bound', () => {
    assert.throws(() => checkVmSize({ vcpus: 5, memoryMiB: 512 }, max), (e: Error) => errorCode(e) === 'invalid_argument' && /would need 5 vCPUs \(max_vcpus is 4\)/.test(e.message));
    assert.throws(() => checkVmSize({ vcpus: 9, memoryMiB: 8192 }, max), /9 vCPUs \(max_vcpus is 4\) and 8192 MiB of memory \(max_memory is 4096 MiB\)/);
  });
});
