/**
 * template — VM templates: a guest booted once until its agent answered, saved, and restored by
 * every clone in a fraction of a cold boot (DESIGN.md, "VM templating works under TCG").
 *
 * createTemplate (template-create.ts) boots a VM whose RAM is a shared file on disk, waits for the
 * agent's Check, then saves the device state (VmHandle.saveTemplate) and ends the VM. A clone
 * (cloneSpec → VmDriver.start) runs the same machine with the RAM file mapped private, so its pages
 * are the template's until it writes them. Only the VmDriver interface and the agent client are used. The template
 * guest never runs SetupSandbox: no 9p mount (QEMU refuses to migrate a mounted 9p share), no sandbox
 * identity, and every clone gets its own entropy and clock from the host afterwards.
 *
 * A template is content-addressed: its key hashes everything the saved state depends on (the guest
 * image, vCPUs, memory, accelerator, kernel arguments, what the driver says the saved state depends
 * on (VmTemplating.identity: for QEMU its build and whole command line), and TEMPLATE_FORMAT), so a
 * changed input means a new key and never a mismatched restore. On disk:
 *
 *   <templatesRoot>/<key>/manifest.json   what it is and was made from (written last)
 *   <templatesRoot>/<key>/state           the device state (~75 KiB)
 *   <templatesRoot>/<key>/boot-console.log
 *   <templatesRoot>/<key>/last-used       its mtime: when a clone last started from it (LRU eviction)
 *   <ramRoot>/<key>/ram.<pid>.<nonce>     guest RAM (memoryMiB, sparse; must not be on tmpfs)
 *
 * Where the RAM file lies decides whose memory a clone's pages are. Clones map it MAP_PRIVATE; a
 * clone's fault on a hole of a tmpfs (shmem) file allocates the page *in the file* before the
 * clone gets its copy, so every page any clone touched became a permanent page of the template,
 * unswappable and charged to no live pod (issue 20: +300 MiB from one pod). On a disk file system
 * a fault on a hole reads zeroes into page cache and never allocates in the file; a clone's write
 * is its own anonymous copy, charged to its pod and freed with it; the template's pages that clones
 * read are page cache shared by all of them, clean and reclaimable under pressure (read back from
 * the disk when needed). The file is written only while the template guest runs (share=on) and
 * never synced: a template is a cache, so one made before the host last booted is not used
 * (TemplateManifest.bootId), whatever of its RAM reached the disk.
 *
 * This file holds what a template is made from and keyed by (templateInputs, templateKey), its
 * manifest, finding and checking a published one (findTemplate, openTemplate), and a clone's VmSpec
 * (cloneSpec). Listing, removing and pruning templates are in template-store.ts; the bounds on their
 * number and allocated bytes, and evicting the least recently used, in template-limits.ts.
 */

import { createHash } from 'node:crypto';
import { readFile, stat } from 'node:fs/promises';
import { join, posix } from 'node:path';
import { isInside } from '../common/paths.js';
import { HullError } from '../errors/index.js';
import type { Accel, VmDriver, VmJail, VmNetSpec, VmSpec, VmTemplating } from '../vmm/index.js';

/** TEMPLATE_FORMAT changes whenever createTemplate makes templates differently from the same inputs. */
export const TEMPLATE_FORMAT = 2;
export const DEFAULT_TEMPLATES_ROOT = '/var/lib/hull/templates';
/** DEFAULT_TEMPLATE_RAM_ROOT must not be on tmpfs (see above): beside the templates, on the node's disk. */
export const DEFAULT_TEMPLATE_RAM_ROOT = '/var/lib/hull/template-ram';
/**
 * LEGACY_TEMPLATE_RAM_ROOT is where hull kept template RAM before it moved to the disk (format 1, on
 * tmpfs): removing such a template removes its RAM file there too, so an upgrade frees that memory
 * as the old templates are superseded or evicted.
 */
export const LEGACY_TEMPLATE_RAM_ROOT = '/dev/shm/hull-templates';
/** BOOT_ID_FILE names this boot of the host (a template records it: see TemplateManifest.bootId). */
export const BOOT_ID_FILE = '/proc/sys/kernel/random/boot_id';
export const MANIFEST_FILE = 'manifest.json';
/** STATE_FILE is the saved device state in a template's directory. */
export const STATE_FILE = 'state';
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
  /** ramRoot holds the RAM files; it must not be on tmpfs (default DEFAULT_TEMPLATE_RAM_ROOT). */
  ramRoot?: string;
  /** maxCount bounds the number of templates kept (default DEFAULT_TEMPLATE_MAX_COUNT). */
  maxCount?: number;
  /** maxRamMiB bounds what their RAM files hold together, allocated (st_blocks) (default DEFAULT_TEMPLATE_MAX_RAM_MIB). */
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
  /** driver runs the template VM and its clones; it must offer templating. */
  driver: VmDriver;
  image: TemplateImage;
  vcpus: number;
  memoryMiB: number;
  accel?: 'auto' | Accel;
  /** kernelArgs are appended to the driver's kernel command line, as VmSpec.kernelArgs. */
  kernelArgs?: string[];
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
  /** driver is the VmDriver's name; hypervisor what it says the saved state depends on (VmIdentity). */
  driver: string;
  hypervisor: Record<string, unknown>;
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
  /** bootMs: VM start to the agent's answer; saveMs: saving the state. */
  bootMs: number;
  saveMs: number;
  /**
   * bootId is the host's boot the template was made in (BOOT_ID_FILE). Its RAM file is never
   * synced: after a crash it may hold anything, so a template of another boot is not used.
   */
  bootId: string;
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
  /** ramAllocatedBytes is what the RAM file holds allocated (st_blocks; its page cache when in use), 0 when missing. */
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

/** templating is the request's driver's templating, or a failed_precondition when it has none. */
export function templating(request: TemplateRequest): VmTemplating {
  if (request.driver.templating === undefined) throw new HullError('failed_precondition', `Cannot make a VM template: the ${request.driver.name} driver cannot save VMs`);
  return request.driver.templating;
}

/** templateInputs resolves a request against this host: the driver says what it depends on here. */
export async function templateInputs(request: TemplateRequest): Promise<TemplateInputs> {
  const kernelArgs = [...(request.kernelArgs ?? [])];
  const identity = await templating(request).identity({ vcpus: request.vcpus, memoryMiB: request.memoryMiB, kernelArgs, accel: request.accel ?? 'auto' });
  return {
    format: TEMPLATE_FORMAT,
    imageId: request.image.id,
    vcpus: request.vcpus,
    memoryMiB: request.memoryMiB,
    accel: identity.accel,
    kernelArgs,
    driver: request.driver.name,
    hypervisor: identity.hypervisor,
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
    template: { stateFile: join(template.dir, STATE_FILE), ramFile: template.ramFile },
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
  if (manifest.bootId !== (await currentBootId())) return broken('made before the host last booted (its RAM file was never synced)');
  if (!isFileIn(join(roots.ramRoot, key), manifest.ramFile)) return broken(`RAM file ${manifest.ramFile} is not in ${join(roots.ramRoot, key)}`);
  const ram = await stat(manifest.ramFile).catch(() => undefined);
  if (!ram?.isFile()) return broken(`RAM file ${manifest.ramFile} is missing`);
  if (ram.size !== manifest.inputs.memoryMiB * MIB) return broken(`RAM file has ${ram.size} bytes, expected ${manifest.inputs.memoryMiB} MiB`);
  const state = await stat(join(dir, STATE_FILE)).catch(() => undefined);
  if (state?.size !== manifest.stateBytes) return broken('state file is missing or has the wrong size');
  for (const file of Object.values(manifest.image)) {
    if (!(await stat(file).then((s) => s.isFile(), () => false))) return broken(`guest image file ${file} is missing`);
  }
  return { published: true, template: { key, dir, ramFile: manifest.ramFile, manifest } };
}

let bootId: Promise<string> | undefined;

/** currentBootId is this boot's id (read once per process: it cannot change while we run). */
export function currentBootId(): Promise<string> {
  bootId ??= readFile(BOOT_ID_FILE, 'utf8').then((text) => text.trim());
  return bootId;
}

export async function readManifest(dir: string): Promise<TemplateManifest> {
  const value = JSON.parse(await readFile(join(dir, MANIFEST_FILE), 'utf8')) as TemplateManifest;
  if (typeof value !== 'object' || value === null || typeof value.inputs !== 'object' || value.inputs === null || typeof value.image !== 'object' || value.image === null || typeof value.ramFile !== 'string') {
    throw new Error('not a template manifest');
  }
  return value;
}

/** isFileIn tells whether `path` names an entry directly in `dir` (normalised, not a subdirectory's). */
export function isFileIn(dir: string, path: string): boolean {
  return isInside(dir, path) && posix.normalize(path) === path && posix.dirname(path) === dir;
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
