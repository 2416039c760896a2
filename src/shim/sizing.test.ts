import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { errorCode } from '../errors/index.js';
import { CRI_CPU_PERIOD, CRI_CPU_QUOTA, CRI_MEMORY, MEMORY_STEP_MIB, checkVmSize, podVmSize } from './sizing.js';

const MIB = 1024 * 1024;
const defaults = { vcpus: 1, memoryMiB: 2048 };
const withMemory = (bytes: number) => podVmSize({ annotations: { [CRI_MEMORY]: String(bytes) } } as Parameters<typeof podVmSize>[0], defaults).memoryMiB;

describe('podVmSize()', () => {
  it('adds the limits to the defaults', () => {
    const size = podVmSize({ annotations: { [CRI_CPU_QUOTA]: '150000', [CRI_CPU_PERIOD]: '100000', [CRI_MEMORY]: String(512 * MIB) } } as Parameters<typeof podVmSize>[0], defaults);
    assert.deepEqual(size, { vcpus: 3, memoryMiB: 2560 });
    assert.deepEqual(podVmSize({} as Parameters<typeof podVmSize>[0], defaults), defaults);
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
    assert.equal(podVmSize({} as Parameters<typeof podVmSize>[0], { vcpus: 1, memoryMiB: 300 }).memoryMiB, 512);
  });

  it('caps what annotations can ask for', () => {
    assert.equal(withMemory(1024 * 1024 * MIB), 2048 + 256 * 1024);
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
