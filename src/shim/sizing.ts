/**
 * VM size of a pod: default vCPUs + ceil(sum of CPU limits), default memory +
 * sum of memory limits (requests are ignored), the memory rounded up to a
 * multiple of MEMORY_STEP_MIB. CRI puts the pod's summed limits on the sandbox
 * spec as annotations; a container run alone (ctr run) brings its own limits
 * in linux.resources.
 */
import { HullError } from '../errors/index.js';
import type { OciSpec } from '../sandbox/index.js';

export const CRI_CPU_QUOTA = 'io.kubernetes.cri.sandbox-cpu-quota';
export const CRI_CPU_PERIOD = 'io.kubernetes.cri.sandbox-cpu-period';
export const CRI_MEMORY = 'io.kubernetes.cri.sandbox-memory';

const MIB = 1024 * 1024;
// Nobody gets a VM bigger than this from annotations, whatever they say.
const MAX_EXTRA_VCPUS = 64;
const MAX_EXTRA_MEMORY_MIB = 256 * 1024;
/**
 * MEMORY_STEP_MIB: VM memory is rounded up to a multiple of it. Each VM size has its own template
 * (~150-300 MiB of tmpfs), so limits of 1Mi, 2Mi, ... must not each make one: with this step they
 * share a template per 256 MiB. A pod gets at least what it asked for (its containers are still
 * capped at their own limits inside the guest); the VM's unused memory costs the host nothing.
 */
export const MEMORY_STEP_MIB = 256;

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
    memoryMiB: roundUp(defaults.memoryMiB + Math.min(MAX_EXTRA_MEMORY_MIB, Math.ceil(memory / MIB)), MEMORY_STEP_MIB),
  };
}

/**
 * checkVmSize refuses (InvalidArgument, with what was asked and the bound) a VM larger than the
 * operator's max_vcpus / max_memory: before anything is made for the pod.
 */
export function checkVmSize(size: VmSize, max: VmSize): void {
  const over: string[] = [];
  if (size.vcpus > max.vcpus) over.push(`${size.vcpus} vCPUs (max_vcpus is ${max.vcpus})`);
  if (size.memoryMiB > max.memoryMiB) over.push(`${size.memoryMiB} MiB of memory (max_memory is ${max.memoryMiB} MiB)`);
  if (over.length > 0) {
    throw new HullError('invalid_argument', `hull pods on this node may not be this large: the pod's VM would need ${over.join(' and ')}; lower the pod's CPU or memory limits`);
  }
}

function roundUp(value: number, step: number): number {
  return Math.ceil(value / step) * step;
}
