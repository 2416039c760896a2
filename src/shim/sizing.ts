/**
 * VM size of a pod: default vCPUs + ceil(sum of CPU limits) vCPUs. Memory (requests are ignored):
 * - when every container has a memory limit (kubelet then limits the pod's cgroup, see
 *   podMemoryLimit): the sum of the limits + the guest's own slack (guest_slack_memory, plus the
 *   kernel's page descriptors for the limits' pages), rounded up to LIMITED_STEP_MIB;
 * - otherwise default_memory + the sum of the limits (AKS's formula), rounded up to MEMORY_STEP_MIB.
 * CRI puts the pod's summed limits on the sandbox spec as annotations; a container run alone (ctr
 * run) brings its own limits in linux.resources.
 */
import { HullError } from '../errors/index.js';
import { podMemoryLimit, type OciSpec } from '../sandbox/index.js';

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
/**
 * LIMITED_STEP_MIB: the step of a VM sized by its limits. Smaller, because the RuntimeClass overhead
 * must cover the rounding (a guest may touch all its RAM) and is reserved for every pod; the price is
 * more distinct VM sizes, so more templates, which the store bounds (template_max_count/_ram_mib).
 */
export const LIMITED_STEP_MIB = 64;
/**
 * The guest kernel keeps a 64-byte descriptor (struct page) per 4 KiB page of RAM, outside MemTotal:
 * 1/64 of the limits' memory, which the fixed slack (measured for a small VM) does not include.
 */
const PAGE_DESCRIPTOR_SHARE = 64;

export interface VmSize {
  vcpus: number;
  memoryMiB: number;
}

function positive(value: unknown): number {
  const n = typeof value === 'string' ? Number(value) : typeof value === 'number' ? value : NaN;
  return Number.isFinite(n) && n > 0 ? n : 0;
}

export interface SizeDefaults extends VmSize {
  /** guestSlackMiB: the guest's own need beyond its containers' limits (guest_slack_memory). */
  guestSlackMiB: number;
}

/**
 * podVmSize is the VM of a pod. `allLimited` says every container of the pod has a memory limit
 * (podAllLimited); without limits on the sandbox spec the default formula holds regardless.
 */
export function podVmSize(spec: OciSpec, defaults: SizeDefaults, allLimited = false): VmSize {
  const annotations = spec.annotations ?? {};
  const resources = spec.linux?.resources as { cpu?: { quota?: number; period?: number }; memory?: { limit?: number } } | undefined;
  const quota = positive(annotations[CRI_CPU_QUOTA] ?? resources?.cpu?.quota);
  const period = positive(annotations[CRI_CPU_PERIOD] ?? resources?.cpu?.period) || 100_000;
  const memory = positive(annotations[CRI_MEMORY] ?? resources?.memory?.limit);
  const limitsMiB = Math.min(MAX_EXTRA_MEMORY_MIB, Math.ceil(memory / MIB));
  const vcpus = defaults.vcpus + Math.min(MAX_EXTRA_VCPUS, Math.ceil(quota / period));
  if (allLimited && limitsMiB > 0) {
    const slack = defaults.guestSlackMiB + Math.ceil(limitsMiB / PAGE_DESCRIPTOR_SHARE);
    return { vcpus, memoryMiB: roundUp(limitsMiB + slack, LIMITED_STEP_MIB) };
  }
  return { vcpus, memoryMiB: roundUp(defaults.memoryMiB + limitsMiB, MEMORY_STEP_MIB) };
}

/**
 * podAllLimited tells whether every container of the sandbox's pod has a memory limit: kubelet gives
 * the pod's cgroup (the parent of the sandbox's cgroupsPath) a memory limit then and only then, and
 * it is at least the sum of the limits on the spec. A pod without a pod cgroup (ctr run) is not.
 * Returns the pod cgroup's limit too (bytes), when it has one.
 */
export async function podAllLimited(spec: OciSpec): Promise<{ allLimited: boolean; podLimitBytes?: number }> {
  const path = spec.linux?.cgroupsPath;
  if (typeof path !== 'string' || path === '') return { allLimited: false };
  const podLimitBytes = await podMemoryLimit(path).catch(() => undefined);
  const limits = positive(spec.annotations?.[CRI_MEMORY] ?? (spec.linux?.resources as { memory?: { limit?: number } } | undefined)?.memory?.limit);
  return { allLimited: podLimitBytes !== undefined && limits > 0 && podLimitBytes >= limits, ...(podLimitBytes !== undefined ? { podLimitBytes } : {}) };
}

/** sizeOfPod is the VM of the pod whose sandbox spec is `spec`, with the node's configuration, and its pod cgroup's limit. */
export async function sizeOfPod(spec: OciSpec, config: { defaultVcpus: number; defaultMemoryMiB: number; guestSlackMemoryMiB: number }): Promise<VmSize & { podLimitBytes?: number }> {
  const { allLimited, podLimitBytes } = await podAllLimited(spec);
  const size = podVmSize(spec, { vcpus: config.defaultVcpus, memoryMiB: config.defaultMemoryMiB, guestSlackMiB: config.guestSlackMemoryMiB }, allLimited);
  return { ...size, ...(podLimitBytes !== undefined ? { podLimitBytes } : {}) };
}

/**
 * HOST_OVERHEAD_MIB: what a VM costs the host beyond its guest RAM and TCG's buffer, measured
 * (test/integration/overhead.test.ts: QEMU's other memory ~51 MiB, the shim's RSS ~65 MiB) and rounded up.
 */
export const HOST_OVERHEAD_MIB = 128;

/**
 * podLimitShortfall says, for a pod whose cgroup is limited, how many MiB the limit lacks for a VM of
 * `memoryMiB` whose guest touches all its RAM, TCG's buffer full (0 under KVM), QEMU and the shim
 * (HOST_OVERHEAD_MIB): 0 when it is enough. The RuntimeClass's overhead.podFixed is then too small
 * for this pod, and the host would OOM-kill its QEMU before its containers reach their limits.
 */
export function podLimitShortfall(podLimitBytes: number, memoryMiB: number, tcgTbMiB: number): number {
  const need = memoryMiB + tcgTbMiB + HOST_OVERHEAD_MIB;
  return Math.max(0, need - Math.floor(podLimitBytes / MIB));
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
