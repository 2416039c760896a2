/**
 * template — VM templates: a guest booted once until its agent answered, saved, and restored by
 * every clone in a fraction of a cold boot (DESIGN.md, "VM templating works under TCG").
 *
 * createTemplate boots a VM whose RAM is a shared file on tmpfs, waits for the agent's Check, then
 * saves the device state (QemuVm.saveTemplate: stop, migrate with x-ignore-shared) and quits QEMU.
 * A clone (cloneSpec → QemuDriver.start) runs the same machine with the RAM file mapped private,
 * so its pages are the template's until it writes them. The template guest never runs SetupSandbox:
 * no 9p mount (QEMU refuses to migrate a mounted 9p share), no sandbox identity, and every clone
 * gets its own entropy and clock from the host afterwards.
 *
 * A template is content-addressed: its key hashes everything the saved state depends on (the guest
 * image, vCPUs, memory, accelerator, kernel arguments, the QEMU build and its whole command line, and
 * TEMPLATE_FORMAT), so a changed input means a new key and never a mismatched restore. On disk:
 *
 *   <templatesRoot>/<key>/manifest.json   what it is and was made from (written last)
 *   <templatesRoot>/<key>/state           the device state (~75 KiB)
 *   <templatesRoot>/<key>/boot-console.log
 *   <ramRoot>/<key>/ram.<pid>.<nonce>     guest RAM (memoryMiB, sparse; must be on tmpfs)
 *
 * Concurrency without locks: a creator builds in `<templatesRoot>/.new-<key>-<pid>-<nonce>/` with a
 * RAM file of its own, and publishes with one rename of that directory to `<key>`. A second creator
 * of the same key loses the rename, removes its copy and uses the winner's. Nothing is ever written
 * in place: clones map the RAM file copy-on-write, so changing it would corrupt every running clone.
 * Leftovers of a creator that died are named after its pid and pruned by later creators.
 *
 * The RAM root is checked to be a directory of ours, mode 0700: /dev/shm is world-writable, and
 * whoever could write a template's RAM would own every clone made from it.
 */

import { createHash, randomBytes } from 'node:crypto';
import { constants } from 'node:fs';
import { access, chmod, lstat, mkdir, open, readFile, readdir, realpath, rename, rm, rmdir, stat, statfs, writeFile } from 'node:fs/promises';
import { connect } from 'node:net';
import { join } from 'node:path';
import { HullError } from '../errors/index.js';
import { Agent } from '../proto/gen/agent_pb.js';
import { serviceClient } from '../proto/rpc.js';
import { TtrpcClient } from '../ttrpc/index.js';
import { decideAccel, hostTscKhz, readHostFacts, type AccelRequest } from './accel.js';
import type { Accel, VmHandle, VmNetSpec, VmSpec } from './driver.js';
import { TEMPLATE_MAC, TEMPLATE_STATE_FILE, qemuArgs, qemuPaths } from './qemu-args.js';
import { QemuDriver } from './qemu.js';

/** TEMPLATE_FORMAT changes whenever this file makes templates differently from the same inputs. */
export const TEMPLATE_FORMAT = 1;
export const DEFAULT_TEMPLATES_ROOT = '/var/lib/hull/templates';
/** DEFAULT_TEMPLATE_RAM_ROOT must be on tmpfs (here /run is not; /dev/shm is). */
export const DEFAULT_TEMPLATE_RAM_ROOT = '/dev/shm/hull-templates';
const MANIFEST_FILE = 'manifest.json';
const BOOT_CONSOLE_FILE = 'boot-console.log';
const DEFAULT_BOOT_TIMEOUT_MS = 120_000;
const KEY_PATTERN = /^[0-9a-f]{20}$/;
/** Work directories and RAM files carry their creator's pid, so that leftovers can be pruned. */
const WORK_DIR_PATTERN = /^\.(?:new|trash)-([0-9a-f]{20})-(\d+)-[0-9a-f]{8}$/;
const RAM_FILE_PATTERN = /^ram\.(\d+)\.[0-9a-f]{8}$/;
const MIB = 1024 * 1024;
/** Filesystems that keep a RAM file in memory (statfs f_type): tmpfs, hugetlbfs. */
const MEMORY_FILESYSTEMS = new Set([0x01021994, 0x958458f6]);

/** TemplateImage is the guest image a template boots (a built image directory's files and id). */
export interface TemplateImage {
  id: string;
  kernel: string;
  initrd: string;
  rootDisk: string;
}

export interface TemplateRoots {
  /** templatesRoot holds manifests and device states (default DEFAULT_TEMPLATES_ROOT). */
  templatesRoot?: string;
  /** ramRoot holds the RAM files; it must be on tmpfs (default DEFAULT_TEMPLATE_RAM_ROOT). */
  ramRoot?: string;
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
}

interface Roots {
  templatesRoot: string;
  ramRoot: string;
}

function rootsOf(roots: TemplateRoots): Roots {
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

/**
 * createTemplate returns the template for `request`, making it first when there is none (`created`
 * tells which). A published template that lost a file (the RAM file after a host reboot) is
 * replaced. Fails with a HullError carrying the guest's console tail when the template guest does
 * not come up; leaves nothing behind then.
 */
export async function createTemplate(request: TemplateRequest): Promise<VmTemplate & { created: boolean }> {
  const roots = rootsOf(request);
  validateRequest(request);
  const inputs = await templateInputs(request);
  const key = templateKey(inputs);
  const existing = await inspect(key, roots);
  if (existing.template) return { ...existing.template, created: false };
  // Published but unusable (its RAM went with a reboot): replace it. A creator racing us may publish
  // a good one in between and lose it here; clones already running are not affected.
  if (existing.published) await removeTemplate(key, roots);

  await ensurePrivateDir(roots.templatesRoot);
  await ensurePrivateDir(roots.ramRoot);
  // On a disk the RAM file would cost disk writes while the template boots, and page cache after.
  if (!MEMORY_FILESYSTEMS.has((await statfs(roots.ramRoot)).type)) {
    throw new HullError('failed_precondition', `Cannot make a VM template: ${roots.ramRoot} is not on tmpfs (the template's RAM file belongs in memory)`);
  }
  await pruneTemplates(roots);
  const ramDir = join(roots.ramRoot, key);
  await ensurePrivateDir(ramDir);
  const nonce = randomBytes(4).toString('hex');
  const work = join(roots.templatesRoot, `.new-${key}-${process.pid}-${nonce}`);
  const ramFile = join(ramDir, `ram.${process.pid}.${nonce}`);
  const stateDir = join(work, 'vm');
  await mkdir(work, { mode: 0o700 });
  let vm: VmHandle | undefined;
  let published = false;
  try {
    await mkdir(stateDir, { mode: 0o700 });
    await mkdir(join(stateDir, 'shared'), { mode: 0o700 });
    const bootTimeoutMs = request.bootTimeoutMs ?? DEFAULT_BOOT_TIMEOUT_MS;
    const started = Date.now();
    const deadline = started + bootTimeoutMs;
    vm = await new QemuDriver({ binary: request.binary }).start({
      id: `template-${key}-${nonce}`,
      stateDir,
      vcpus: inputs.vcpus,
      memoryMiB: inputs.memoryMiB,
      kernel: request.image.kernel,
      initrd: request.image.initrd,
      rootDisk: request.image.rootDisk,
      sharedDir: join(stateDir, 'shared'),
      kernelArgs: inputs.kernelArgs,
      accel: inputs.accel,
      startTimeoutMs: bootTimeoutMs,
      templateRamFile: ramFile,
    });
    const agent = await connectToAgent(vm, deadline);
    const bootMs = Date.now() - started;
    const saving = Date.now();
    try {
      // Still connected: a clone's agent finds its port as it left it (see connectToAgent).
      if (vm.saveTemplate === undefined) throw new HullError('unimplemented', 'the VM driver cannot save templates');
      await vm.saveTemplate(join(work, TEMPLATE_STATE_FILE));
    } finally {
      agent.client.close();
    }
    const saveMs = Date.now() - saving;
    await vm.shutdown({ deadlineMs: 5000 });
    vm = undefined;
    await rename(join(stateDir, 'console.log'), join(work, BOOT_CONSOLE_FILE)).catch(() => undefined);
    await rm(stateDir, { recursive: true, force: true });
    // Read-only from now on: clones map it copy-on-write and nothing may change it under them.
    await chmod(ramFile, 0o400);
    const manifest: TemplateManifest = {
      format: TEMPLATE_FORMAT,
      key,
      inputs,
      image: { kernel: request.image.kernel, initrd: request.image.initrd, rootDisk: request.image.rootDisk },
      ramFile,
      ramBytes: (await stat(ramFile)).size,
      stateBytes: (await stat(join(work, TEMPLATE_STATE_FILE))).size,
      guestMac: TEMPLATE_MAC,
      agentVersion: agent.agentVersion,
      createdAt: new Date().toISOString(),
      bootMs,
      saveMs,
    };
    await writeDurably(join(work, MANIFEST_FILE), JSON.stringify(manifest, null, 2) + '\n');
    try {
      await rename(work, join(roots.templatesRoot, key));
      published = true;
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      if (code !== 'ENOTEMPTY' && code !== 'EEXIST') throw error;
    }
    if (published) return { key, dir: join(roots.templatesRoot, key), ramFile, manifest, created: true };
    // Another creator published the same key first: use theirs.
    const theirs = await inspect(key, roots);
    if (theirs.template) return { ...theirs.template, created: false };
    throw new HullError('unavailable', `Template ${key} was published concurrently but is not usable: ${theirs.problem}`);
  } catch (error) {
    throw vm !== undefined ? templateFailure(error, vm) : error;
  } finally {
    await vm?.shutdown({ deadlineMs: 0 }).catch(() => undefined);
    if (!published) {
      await rm(work, { recursive: true, force: true });
      await rm(ramFile, { force: true });
    }
  }
}

/** listTemplates lists the published templates under the roots, usable or not. */
export async function listTemplates(roots: TemplateRoots = {}): Promise<TemplateListing[]> {
  const r = rootsOf(roots);
  const names = await readdir(r.templatesRoot).catch((error: NodeJS.ErrnoException) => {
    if (error.code === 'ENOENT') return [] as string[];
    throw error;
  });
  const listings: TemplateListing[] = [];
  for (const key of names.filter((name) => KEY_PATTERN.test(name)).sort()) {
    const found = await inspect(key, r);
    const ramFile = found.template?.ramFile ?? found.ramFile;
    const ram = ramFile !== undefined ? await stat(ramFile).catch(() => undefined) : undefined;
    const listing: TemplateListing = { key, dir: join(r.templatesRoot, key), ramAllocatedBytes: ram ? ram.blocks * 512 : 0 };
    if (found.template) listing.template = found.template;
    if (found.problem !== undefined) listing.problem = found.problem;
    listings.push(listing);
  }
  return listings;
}

/**
 * removeTemplate unpublishes the template `key` and removes its files, the RAM file on tmpfs
 * included; true when there was something to remove. Clones running from it keep running: their
 * mapping holds the RAM (the memory is freed when the last of them exits).
 */
export async function removeTemplate(key: string, roots: TemplateRoots = {}): Promise<boolean> {
  if (!KEY_PATTERN.test(key)) throw new HullError('invalid_argument', `"${key}" is not a template key`);
  const r = rootsOf(roots);
  const dir = join(r.templatesRoot, key);
  const manifest = await readManifest(dir).catch(() => undefined);
  // Unpublish first, in one step: from here on no new clone can find it.
  const trash = join(r.templatesRoot, `.trash-${key}-${process.pid}-${randomBytes(4).toString('hex')}`);
  let removed = false;
  try {
    await rename(dir, trash);
    removed = true;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
  }
  const ramDir = join(r.ramRoot, key);
  if (manifest?.ramFile !== undefined && isInside(manifest.ramFile, ramDir)) {
    removed = (await rm(manifest.ramFile).then(() => true, () => false)) || removed;
  }
  await rm(trash, { recursive: true, force: true });
  // RAM files of creators that died; a live creator's file stays.
  for (const name of await readdir(ramDir).catch(() => [] as string[])) {
    const pid = RAM_FILE_PATTERN.exec(name)?.[1];
    if (pid !== undefined && !pidAlive(Number(pid))) removed = (await rm(join(ramDir, name)).then(() => true, () => false)) || removed;
  }
  await rmdir(ramDir).catch(() => undefined); // only when empty
  return removed;
}

/**
 * pruneTemplates removes what creators that died left behind: work and trash directories, RAM files
 * no manifest names. Called by createTemplate; safe while other creators run.
 */
export async function pruneTemplates(roots: TemplateRoots = {}): Promise<void> {
  const r = rootsOf(roots);
  for (const name of await readdir(r.templatesRoot).catch(() => [] as string[])) {
    const pid = WORK_DIR_PATTERN.exec(name)?.[2];
    if (pid !== undefined && !pidAlive(Number(pid))) await rm(join(r.templatesRoot, name), { recursive: true, force: true });
  }
  for (const key of (await readdir(r.ramRoot).catch(() => [] as string[])).filter((name) => KEY_PATTERN.test(name))) {
    const ramDir = join(r.ramRoot, key);
    const inUse = (await readManifest(join(r.templatesRoot, key)).catch(() => undefined))?.ramFile;
    for (const name of await readdir(ramDir).catch(() => [] as string[])) {
      const pid = RAM_FILE_PATTERN.exec(name)?.[1];
      if (pid !== undefined && join(ramDir, name) !== inUse && !pidAlive(Number(pid))) await rm(join(ramDir, name), { force: true });
    }
    await rmdir(ramDir).catch(() => undefined);
  }
}

/** CloneTarget is what differs between clones of one template. */
export interface CloneTarget {
  id: string;
  stateDir: string;
  sharedDir: string;
  net?: VmNetSpec;
  startTimeoutMs?: number;
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
  return spec;
}

/** inspect reads and checks the template `key`: usable, or published but broken, or absent. */
async function inspect(key: string, roots: Roots): Promise<{ template?: VmTemplate; published: boolean; problem?: string; ramFile?: string }> {
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

async function readManifest(dir: string): Promise<TemplateManifest> {
  const value = JSON.parse(await readFile(join(dir, MANIFEST_FILE), 'utf8')) as TemplateManifest;
  if (typeof value !== 'object' || value === null || typeof value.inputs !== 'object' || value.inputs === null || typeof value.image !== 'object' || value.image === null || typeof value.ramFile !== 'string') {
    throw new Error('not a template manifest');
  }
  return value;
}

function validateRequest(request: TemplateRequest): void {
  const { vcpus, memoryMiB, image } = request;
  if (!Number.isInteger(vcpus) || vcpus < 1 || vcpus > 255) throw new HullError('invalid_argument', `Invalid vCPU count ${vcpus}`);
  if (!Number.isInteger(memoryMiB) || memoryMiB < 64) throw new HullError('invalid_argument', `Invalid memory size ${memoryMiB} MiB`);
  if (!/^[A-Za-z0-9._-]{1,128}$/.test(image.id)) throw new HullError('invalid_argument', `Invalid guest image id "${image.id}"`);
}

/**
 * connectToAgent waits for the guest to open the agent port, then for Check. The connection stays
 * open (the caller closes it): a host that hung up before the state was taken would leave the
 * disconnect queued in the guest's state, and every clone's agent would start by reconnecting.
 */
async function connectToAgent(vm: VmHandle, deadline: number): Promise<{ client: TtrpcClient; agentVersion: string }> {
  const socket = connect(vm.agentSocketPath);
  await new Promise<void>((resolve, reject) => {
    socket.once('error', reject);
    socket.once('connect', () => {
      socket.off('error', reject);
      resolve();
    });
  });
  const client = new TtrpcClient(socket);
  const died = vm.exited.then(() => {
    throw new HullError('unavailable', 'the template VM exited before its agent answered');
  });
  let timer: NodeJS.Timeout | undefined;
  const timedOut = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new HullError('deadline_exceeded', 'the template guest agent did not answer in time')), Math.max(0, deadline - Date.now()));
  });
  try {
    // Bytes sent before the port is open would wait inside QEMU: ask only once it is.
    await Promise.race([vm.agentPortOpened, died, timedOut]);
    const agent = serviceClient(Agent, client);
    const { agentVersion } = await Promise.race([agent.check({}, { timeoutMs: Math.max(1, deadline - Date.now()) }), died, timedOut]);
    if (agentVersion.length > 256) throw new HullError('internal', 'the guest agent sent an oversized version');
    return { client, agentVersion };
  } catch (error) {
    client.close();
    throw error;
  } finally {
    clearTimeout(timer);
  }
}

function templateFailure(error: unknown, vm: VmHandle): HullError {
  const reason = error instanceof Error ? error.message : String(error);
  const tail = vm.consoleTail(4096).trim();
  const code = error instanceof HullError ? error.code : 'internal';
  return new HullError(code, `Cannot make a VM template: ${reason}${tail ? `\n--- console tail ---\n${tail}` : ''}`, { cause: error });
}

/**
 * ensurePrivateDir makes `dir` (0700) when missing and checks that it is a real directory of ours
 * that nobody else can enter: /dev/shm is world-writable, so anyone could have made it first.
 */
async function ensurePrivateDir(dir: string): Promise<void> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const info = await lstat(dir);
  const uid = process.getuid?.() ?? 0;
  if (!info.isDirectory() || info.uid !== uid || (info.mode & 0o077) !== 0) {
    throw new HullError('failed_precondition', `${dir} must be a directory owned by uid ${uid} with mode 0700 (found mode ${(info.mode & 0o7777).toString(8)}, uid ${info.uid}${info.isSymbolicLink() ? ', a symlink' : ''})`);
  }
}

async function writeDurably(path: string, text: string): Promise<void> {
  await writeFile(path, text, { mode: 0o644, flag: 'wx' });
  const handle = await open(path, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

function isInside(path: string, dir: string): boolean {
  return path.startsWith(dir + '/') && !path.slice(dir.length + 1).includes('/') && !path.includes('/../');
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** findExecutable resolves a command as execvp would (a path, or a name on PATH). */
async function findExecutable(command: string): Promise<string | undefined> {
  const candidates = command.includes('/') ? [command] : (process.env.PATH ?? '/usr/bin:/bin').split(':').map((dir) => `${dir}/${command}`);
  for (const candidate of candidates) {
    if (await access(candidate, constants.X_OK).then(() => true, () => false)) return candidate;
  }
  return undefined;
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
