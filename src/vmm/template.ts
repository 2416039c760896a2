/**
 * template — VM templates: a guest booted once until its agent answered, saved, and restored by
 * every clone in a fraction of a cold boot (DESIGN.md, "VM templating works under TCG").
 *
 * createTemplate (template-create.ts) boots a VM whose RAM is a shared file on tmpfs, waits for the
 * agent's Check, then saves the device state (QemuVm.saveTemplate: stop, migrate with
 * x-ignore-shared) and quits QEMU. A clone (cloneSpec → QemuDriver.start) runs the same machine with
 * the RAM file mapped private, so its pages are the template's until it writes them. The template
 * guest never runs SetupSandbox: no 9p mount (QEMU refuses to migrate a mounted 9p share), no sandbox
 * identity, and every clone gets its own entropy and clock from the host afterwards.
 *
 * A template is content-addressed: its key hashes everything the saved state depends on (the guest
 * image, vCPUs, memory, accelerator, kernel arguments, the QEMU build and its whole command line, and
 * TEMPLATE_FORMAT), so a changed input means a new key and never a mismatched restore. On disk:
 *
 *   <templatesRoot>/<key>/manifest.json   what it is and was made from (written last)
 *   <templatesRoot>/<key>/state           the device state (~75 KiB)
 *   <templatesRoot>/<key>/boot-console.log
 *   <templatesRoot>/<key>/last-used       its mtime: when a clone last started from it (LRU eviction)
 *   <ramRoot>/<key>/ram.<pid>.<nonce>     guest RAM (memoryMiB, sparse; must be on tmpfs)
 *
 * This file holds what a template is made from and keyed by (templateInputs, templateKey), its
 * manifest, finding and checking a published one (findTemplate, openTemplate), and a clone's VmSpec
 * (cloneSpec). Listing, removing and pruning templates are in template-store.ts; the bounds on their
 * number and tmpfs memory, and evicting the least recently used, in template-limits.ts.
 */

import { createHash } from 'node:crypto';
import { readFile, realpath, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { HullError } from '../errors/index.js';
import { decideAccel, hostTscKhz, readHostFacts, type AccelRequest } from './accel.js';
import type { Accel, VmJail, VmNetSpec, VmSpec } from './driver.js';
import { TEMPLATE_STATE_FILE, qemuArgs, qemuPaths } from './qemu-args.js';
import { findExecutable } from './qemu-process.js';

/** TEMPLATE_FORMAT changes whenever createTemplate makes templates differently from the same inputs. */
export const TEMPLATE_FORMAT = 1;
export const DEFAULT_TEMPLATES_ROOT = '/var/lib/hull/templates';
/** DEFAULT_TEMPLATE_RAM_ROOT must be on tmpfs (here /run is not; /dev/shm is). */
export const DEFAULT_TEMPLATE_RAM_ROOT = '/dev/shm/hull-templates';
export const MANIFEST_FILE = 'manifest.json';
/** LAST_USED_FILE is empty: its mtime is the template's last use (touched on every clone's lookup). */
export const LAST_USED_FILE = 'last-used';
/** Defaults of the store's bounds (config.ts has the same numbers as template_max_count and template_max_ram_mib). */
export const DEFAULT_TEMPLATE_MAX_COUNT = 8;
export const DEFAULT_TEMPLATE_MAX_RAM_MIB = 2048;
export const KEY_PATTERN = /^[0-9a-f]{20}$/;
const MIB = 1024 * 1024;

/** TemplateImage is the guest image a template boots (a built image directory's files and id). */
export interface TemplateImage {
  id: string;
  kernel: string;
  initrd: string;
  rootDisk: string;
}

/** TemplateRoots says where the templates live and how many of them the store may keep. */
export interface TemplateRoots {
  /** templatesRoot holds manifests and device states (default DEFAULT_TEMPLATES_ROOT). */
  templatesRoot?: string;
  /** ramRoot holds the RAM files; it must be on tmpfs (default DEFAULT_TEMPLATE_RAM_ROOT). */
  ramRoot?: string;
  /** maxCount bounds the number of templates kept (default DEFAULT_TEMPLATE_MAX_COUNT). */
  maxCount?: number;
  /** maxRamMiB bounds the tmpfs memory their RAM files hold together (default DEFAULT_TEMPLATE_MAX_RAM_MIB). */
  maxRamMiB?: number;
  /**
   * minIdleMs: a template used more recently than this is never evicted (default 30 s), so that a
   * clone that just looked it up finds its files when QEMU opens them. Tests set 0.
   */
  minIdleMs?: number;
  /** log, when given, hears of evicted templates and of templates not made for want of room. */
  log?: (line: string) => void;
}

/** TemplateRequest says which template is wanted; equal requests on one host mean one key. */
export interface TemplateRequest extends TemplateRoots {
  image: TemplateImage;
  vcpus: number;
  memoryMiB: number;
  accel?: AccelRequest;
  /** kernelArgs are appended to the driver's kernel command line, as VmSpec.kernelArgs. */
  kernelArgs?: string[];
  /** binary is the QEMU executable (default "qemu-system-x86_64" on PATH). */
  binary?: string;
  /** bootTimeoutMs bounds the template's boot to a Check answered (default 120 s). */
  bootTimeoutMs?: number;
  /** jail confines the template's VMM as it does the clone's (the creating sandbox's uid). */
  jail?: VmJail;
}

/** TemplateInputs is everything the saved state depends on; the key is its hash. */
export interface TemplateInputs {
  format: number;
  imageId: string;
  vcpus: number;
  memoryMiB: number;
  accel: Accel;
  kernelArgs: string[];
  /** tscKhz is the host TSC frequency the guest was booted with (TCG), or null. */
  tscKhz: number | null;
  /** qemu identifies the QEMU build (a package upgrade replaces the file): microvm has no versioned machine types. */
  qemu: { path: string; size: number; mtimeMs: number };
  /** commandLineSha256 hashes QEMU's whole argv for this VM (with placeholder paths): any device change is a new key. */
  commandLineSha256: string;
}

/** TemplateManifest is manifest.json. */
export interface TemplateManifest {
  format: number;
  key: string;
  inputs: TemplateInputs;
  /** image: the files the template booted, which every clone must use too. */
  image: { kernel: string; initrd: string; rootDisk: string };
  ramFile: string;
  ramBytes: number;
  stateBytes: number;
  /** guestMac is the NIC address in the saved state: every clone's, until the agent changes it. */
  guestMac: string;
  agentVersion: string;
  createdAt: string;
  /** bootMs: QEMU spawn to the agent's answer; saveMs: saving the state. */
  bootMs: number;
  saveMs: number;
}

/** VmTemplate is a published, checked template. */
export interface VmTemplate {
  key: string;
  dir: string;
  ramFile: string;
  manifest: TemplateManifest;
}

/** TemplateListing is one entry of listTemplates: a template, or why it is unusable. */
export interface TemplateListing {
  key: string;
  dir: string;
  template?: VmTemplate;
  /** problem says why the template cannot be used (then removeTemplate it). */
  problem?: string;
  /** ramAllocatedBytes is what the RAM file holds on tmpfs (the memory it costs), 0 when missing. */
  ramAllocatedBytes: number;
  /** lastUsedMs: when a clone last started from it (the mtime of LAST_USED_FILE, else of the manifest), 0 when unknown. */
  lastUsedMs: number;
}

export interface Roots {
  templatesRoot: string;
  ramRoot: string;
}

export function rootsOf(roots: TemplateRoots): Roots {
  return { templatesRoot: roots.templatesRoot ?? DEFAULT_TEMPLATES_ROOT, ramRoot: roots.ramRoot ?? DEFAULT_TEMPLATE_RAM_ROOT };
}

/** templateInputs resolves a request against this host: the accelerator, the TSC, the QEMU binary. */
export async function templateInputs(request: TemplateRequest): Promise<TemplateInputs> {
  const facts = await readHostFacts();
  const { accel } = decideAccel(facts, request.accel ?? 'auto');
  // As QemuDriver.start does: only TCG guests get tsc_early_khz.
  const tscKhz = accel === 'tcg' ? hostTscKhz(facts.cpuinfo) : undefined;
  const binary = request.binary ?? 'qemu-system-x86_64';
  const found = await findExecutable(binary);
  if (found === undefined) throw new HullError('failed_precondition', `Cannot make a VM template: cannot run "${binary}": not found or not executable`);
  const path = await realpath(found);
  const info = await stat(path);
  const kernelArgs = [...(request.kernelArgs ?? [])];
  // The argv of a canonical VM of this shape: same devices, CPU model, memory and kernel command line.
  const canonical: VmSpec = {
    id: 'template',
    stateDir: '/state',
    vcpus: request.vcpus,
    memoryMiB: request.memoryMiB,
    kernel: '/image/kernel',
    initrd: '/image/initrd',
    rootDisk: '/image/root',
    sharedDir: '/state/shared',
    kernelArgs,
    templateRamFile: '/ram',
  };
  const argv = qemuArgs(canonical, accel, qemuPaths(canonical.stateDir), { tscKhz, paused: true });
  return {
    format: TEMPLATE_FORMAT,
    imageId: request.image.id,
    vcpus: request.vcpus,
    memoryMiB: request.memoryMiB,
    accel,
    kernelArgs,
    tscKhz: tscKhz ?? null,
    qemu: { path, size: info.size, mtimeMs: info.mtimeMs },
    commandLineSha256: createHash('sha256').update(argv.join('\0')).digest('hex'),
  };
}

/** templateKey is the key of a template made from `inputs` (20 hex digits). */
export function templateKey(inputs: TemplateInputs): string {
  return createHash('sha256').update(canonicalJson(inputs)).digest('hex').slice(0, 20);
}

/** findTemplate returns the published template for `request`, or undefined when there is none. */
export async function findTemplate(request: TemplateRequest): Promise<VmTemplate | undefined> {
  return openTemplate(templateKey(await templateInputs(request)), request);
}

/** openTemplate returns the template `key` when it is published and whole, else undefined. */
export async function openTemplate(key: string, roots: TemplateRoots = {}): Promise<VmTemplate | undefined> {
  if (!KEY_PATTERN.test(key)) return undefined;
  return (await inspect(key, rootsOf(roots))).template;
}

/** CloneTarget is what differs between clones of one template. */
export interface CloneTarget {
  id: string;
  stateDir: string;
  sharedDir: string;
  net?: VmNetSpec;
  startTimeoutMs?: number;
  jail?: VmJail;
}

/**
 * cloneSpec is the VmSpec that restores `template` as the VM `target`: the template's machine (size,
 * accelerator, image files, kernel arguments) with the clone's own state dir, share and network.
 */
export function cloneSpec(template: VmTemplate, target: CloneTarget): VmSpec {
  const { inputs, image } = template.manifest;
  const spec: VmSpec = {
    id: target.id,
    stateDir: target.stateDir,
    sharedDir: target.sharedDir,
    vcpus: inputs.vcpus,
    memoryMiB: inputs.memoryMiB,
    accel: inputs.accel,
    kernel: image.kernel,
    initrd: image.initrd,
    rootDisk: image.rootDisk,
    kernelArgs: [...inputs.kernelArgs],
    template: { dir: template.dir, ramFile: template.ramFile },
  };
  if (target.net !== undefined) spec.net = target.net;
  if (target.startTimeoutMs !== undefined) spec.startTimeoutMs = target.startTimeoutMs;
  if (target.jail !== undefined) spec.jail = target.jail;
  return spec;
}

/** inspect reads and checks the template `key`: usable, or published but broken, or absent. */
export async function inspect(key: string, roots: Roots): Promise<{ template?: VmTemplate; published: boolean; problem?: string; ramFile?: string }> {
  const dir = join(roots.templatesRoot, key);
  let manifest: TemplateManifest;
  try {
    manifest = await readManifest(dir);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT' && !(await stat(dir).then(() => true, () => false))) return { published: false };
    return { published: true, problem: `unreadable manifest: ${(error as Error).message}` };
  }
  const broken = (problem: string) => ({ published: true, problem, ramFile: manifest.ramFile });
  if (manifest.format !== TEMPLATE_FORMAT) return broken(`format ${manifest.format}, expected ${TEMPLATE_FORMAT}`);
  if (manifest.key !== key || templateKey(manifest.inputs) !== key) return broken('manifest does not hash to its key');
  if (!isInside(manifest.ramFile, join(roots.ramRoot, key))) return broken(`RAM file ${manifest.ramFile} is not in ${join(roots.ramRoot, key)}`);
  const ram = await stat(manifest.ramFile).catch(() => undefined);
  if (!ram?.isFile()) return broken(`RAM file ${manifest.ramFile} is missing (tmpfs is emptied on reboot)`);
  if (ram.size !== manifest.inputs.memoryMiB * MIB) return broken(`RAM file has ${ram.size} bytes, expected ${manifest.inputs.memoryMiB} MiB`);
  const state = await stat(join(dir, TEMPLATE_STATE_FILE)).catch(() => undefined);
  if (state?.size !== manifest.stateBytes) return broken('state file is missing or has the wrong size');
  for (const file of Object.values(manifest.image)) {
    if (!(await stat(file).then((s) => s.isFile(), () => false))) return broken(`guest image file ${file} is missing`);
  }
  return { published: true, template: { key, dir, ramFile: manifest.ramFile, manifest } };
}

export async function readManifest(dir: string): Promise<TemplateManifest> {
  const value = JSON.parse(await readFile(join(dir, MANIFEST_FILE), 'utf8')) as TemplateManifest;
  if (typeof value !== 'object' || value === null || typeof value.inputs !== 'object' || value.inputs === null || typeof value.image !== 'object' || value.image === null || typeof value.ramFile !== 'string') {
    throw new Error('not a template manifest');
  }
  return value;
}

export function isInside(path: string, dir: string): boolean {
  return path.startsWith(dir + '/') && !path.slice(dir.length + 1).includes('/') && !path.includes('/../');
}

/** canonicalJson is JSON with object keys sorted, so that equal inputs hash equally. */
function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  if (typeof value === 'object' && value !== null) {
    return `{${Object.keys(value)
      .sort()
      .map((key) => `${JSON.stringify(key)}:${canonicalJson((value as Record<string, unknown>)[key])}`)
      .join(',')}}`;
  }
  return JSON.stringify(value);
}
