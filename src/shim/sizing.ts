/**
 * VM size of a pod: default vCPUs + ceil(sum of CPU limits), default memory +
 * sum of memory limits (requests are ignored). CRI puts the pod's summed
 * limits on the sandbox spec as annotations; a container run alone (ctr run)
 * brings its own limits in linux.resources.
 */
import type { OciSpec } from '../sandbox/index.js';

export const CRI_CPU_QUOTA = 'io.kubernetes.cri.sandbox-cpu-quota';
export const CRI_CPU_PERIOD = 'io.kubernetes.cri.sandbox-cpu-period';
export const CRI_MEMORY = 'io.kubernetes.cri.sandbox-memory';

const MIB = 1024 * 1024;
// Nobody gets a VM bigger than this from annotations, whatever they say.
const MAX_EXTRA_VCPUS = 64;
const MAX_EXTRA_MEMORY_MIB = 256 * 1024;

export interface VmSize {
  vcpus: number;
  memoryMiB: number;
}

function positive(value: unknown): number {
  const n = typeof value === 'string' ? Number(value) : typeof value === 'number' ? value : NaN;
  return Number.isFinite(n) && n > 0 ? n : 0;
}

export function podVmSize(spec: OciSpec, defaults: VmSize): VmSize {
  const annotations = spec.annotations ?? {};
  const resources = spec.linux?.resources as { cpu?: { quota?: number; period?: number }; memory?: { limit?: number } } | undefined;
  const quota = positive(annotations[CRI_CPU_QUOTA] ?? resources?.cpu?.quota);
  const period = positive(annotations[CRI_CPU_PERIOD] ?? resources?.cpu?.period) || 100_000;
  const memory = positive(annotations[CRI_MEMORY] ?? resources?.memory?.limit);
  return {
    vcpus: defaults.vcpus + Math.min(MAX_EXTRA_VCPUS, Math.ceil(quota / period)),
    memoryMiB: defaults.memoryMiB + Math.min(MAX_EXTRA_MEMORY_MIB, Math.ceil(memory / MIB)),
  };
}
