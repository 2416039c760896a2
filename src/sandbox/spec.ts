/**
 * Host-side OCI spec handling: reading a bundle's config.json with clear
 * errors, and translating it into the spec the guest runs. Host paths mean
 * nothing in the guest: the rootfs is replaced by the shared copy (the agent
 * points root.path at it), and each host bind mount is replaced by what
 * volumes.ts made of it (a bind from the 9p share, or guest memory).
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { isBindMount, type OciMount, type OciProcess, type OciSpec } from '../common/oci.js';
import { HullError } from '../errors/index.js';

export type { OciMount, OciProcess, OciSpec };

// A config.json bigger than this is not a spec anyone meant.
const MAX_SPEC_BYTES = 4 << 20;

/** readBundleSpec reads and checks `<bundle>/config.json`. */
export async function readBundleSpec(bundle: string): Promise<OciSpec> {
  const path = join(bundle, 'config.json');
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (e) {
    throw new HullError('invalid_argument', `Cannot read OCI spec "${path}": ${(e as Error).message}`);
  }
  if (text.length > MAX_SPEC_BYTES) throw new HullError('invalid_argument', `OCI spec "${path}" is larger than ${MAX_SPEC_BYTES} bytes`);
  return parseSpec(text, path);
}

export function parseSpec(text: string, where: string): OciSpec {
  let spec: unknown;
  try {
    spec = JSON.parse(text);
  } catch (e) {
    throw new HullError('invalid_argument', `Malformed OCI spec "${where}": ${(e as Error).message}`);
  }
  if (typeof spec !== 'object' || spec === null || Array.isArray(spec)) throw new HullError('invalid_argument', `Malformed OCI spec "${where}": not a JSON object`);
  const s = spec as OciSpec;
  if (typeof s.ociVersion !== 'string') throw new HullError('invalid_argument', `Malformed OCI spec "${where}": ociVersion is missing`);
  if (s.process !== undefined && (typeof s.process !== 'object' || s.process === null)) throw new HullError('invalid_argument', `Malformed OCI spec "${where}": process must be an object`);
  if (s.process?.args !== undefined && (!Array.isArray(s.process.args) || !s.process.args.every((a) => typeof a === 'string'))) {
    throw new HullError('invalid_argument', `Malformed OCI spec "${where}": process.args must be a list of strings`);
  }
  if (s.mounts !== undefined && !Array.isArray(s.mounts)) throw new HullError('invalid_argument', `Malformed OCI spec "${where}": mounts must be a list`);
  return s;
}

/**
 * guestContainerSpec is the spec sent to the agent; `args` replaces
 * process.args when given. `volumes` maps spec.mounts indexes to the mounts
 * the guest gets instead (see guestMounts in volumes.ts); a bind mount
 * without one is dropped, as host paths mean nothing in the guest.
 */
export function guestContainerSpec(spec: OciSpec, args?: string[], volumes?: ReadonlyMap<number, OciMount>): OciSpec {
  const process: OciProcess = { ...spec.process };
  if (args && args.length > 0) process.args = args;
  if (!process.args || process.args.length === 0) throw new HullError('invalid_argument', 'OCI spec has no process.args and no command was given');
  checkSysctls(spec.linux?.sysctl, 'The container');
  const mounts = (spec.mounts ?? []).flatMap((m, index) => {
    const replacement = volumes?.get(index);
    if (replacement) return [replacement];
    return isBindMount(m) ? [] : [m];
  });
  return { ...spec, process, mounts, root: { readonly: spec.root?.readonly ?? false } };
}

// Sysctls that live in a namespace of the pod (crun's list, which runc's and Kubernetes' agree with):
// the IPC ones (kernel.shm*, kernel.msg*, kernel.sem, fs.mqueue.*) and the network ones (net.*).
// Anything else (vm.*, kernel.panic, fs.file-max …) is the kernel's own: refused.
const IPC_KERNEL_SYSCTLS = new Set(['msgmax', 'msgmnb', 'msgmni', 'sem', 'shmall', 'shmmax', 'shmmni', 'shm_rmid_forced']);
export const NAMESPACED_SYSCTLS = 'kernel.shm*, kernel.msg*, kernel.sem, fs.mqueue.*, net.*';
const MAX_SYSCTLS = 256;
const SYSCTL_NAME = /^[A-Za-z0-9_-]+(?:[./][A-Za-z0-9_@:+-]+)+$/;

/** isNamespacedSysctl tells whether `name` (dotted, or with "/" as separator) is set per namespace. */
export function isNamespacedSysctl(name: string): boolean {
  if (!SYSCTL_NAME.test(name) || name.length > 255) return false;
  const parts = name.includes('/') ? name.split('/') : name.split('.');
  if (parts[0] === 'net') return true;
  if (parts[0] === 'fs') return parts[1] === 'mqueue' && parts.length >= 3;
  return parts[0] === 'kernel' && parts.length === 2 && IPC_KERNEL_SYSCTLS.has(parts[1]!);
}

/**
 * checkSysctls returns a spec's linux.sysctl, refusing (InvalidArgument) anything but namespaced
 * sysctls with printable values: a pod's sysctls must not reach outside its own namespaces (in hull,
 * the guest kernel everything in the VM relies on). `who` starts the message ("The pod").
 */
export function checkSysctls(sysctl: unknown, who: string): Record<string, string> {
  if (sysctl === undefined || sysctl === null) return {};
  if (typeof sysctl !== 'object' || Array.isArray(sysctl)) throw new HullError('invalid_argument', `${who} has a malformed linux.sysctl: not a map of names to values`);
  const entries = Object.entries(sysctl as Record<string, unknown>);
  if (entries.length > MAX_SYSCTLS) throw new HullError('invalid_argument', `${who} sets ${entries.length} sysctls, more than ${MAX_SYSCTLS}`);
  for (const [name, value] of entries) {
    if (typeof value !== 'string' || value.length > 4096 || /[\x00-\x1f\x7f]/.test(value)) {
      throw new HullError('invalid_argument', `${who} sets sysctl "${name}" to a value that is not a line of text`);
    }
  }
  const refused = entries.map(([name]) => name).filter((name) => !isNamespacedSysctl(name));
  if (refused.length > 0) {
    const what = refused.map((n) => `"${n}"`).join(', ');
    throw new HullError(
      'invalid_argument',
      `${who} sets ${refused.length > 1 ? 'sysctls' : 'sysctl'} ${what}, which ${refused.length > 1 ? 'are' : 'is'} not namespaced: ` +
        `a hull pod may set only the sysctls of its own namespaces (${NAMESPACED_SYSCTLS})`,
    );
  }
  return Object.fromEntries(entries) as Record<string, string>;
}

/**
 * withPodSysctls gives an app container the pod's sysctls (CRI puts them on the sandbox's spec; with
 * runc, pause's namespaces hold them). hull runs no pause: the guest's namespaces are the pod's, and
 * crun writes each container's linux.sysctl into them before the container starts, so the pod's are
 * in place before its first container runs. A sysctl the container sets itself wins.
 */
export function withPodSysctls(spec: OciSpec, podSysctls: Readonly<Record<string, string>>): OciSpec {
  if (Object.keys(podSysctls).length === 0) return spec;
  const own = (spec.linux?.sysctl ?? {}) as Record<string, string>;
  return { ...spec, linux: { ...spec.linux, sysctl: { ...podSysctls, ...own } } };
}
