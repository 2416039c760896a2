/**
 * createTemplate: boot a template guest until its agent answers, save it, and publish it.
 *
 * Concurrency without locks: a creator builds in `<templatesRoot>/.new-<key>-<pid>-<nonce>/` with a
 * RAM file of its own, and publishes with one rename of that directory to `<key>`. A second creator
 * of the same key loses the rename, removes its copy and uses the winner's. Nothing is ever written
 * in place: clones map the RAM file copy-on-write, so changing it would corrupt every running clone.
 * Leftovers of a creator that died are named after its pid and pruned by later creators.
 *
 * The RAM root is checked to be a directory of ours, mode 0700 (whoever could write a template's
 * RAM would own every clone made from it: template-dirs.ts), and not on tmpfs, where every clone's
 * touched page would stay allocated in the template's file (template.ts).
 *
 * The store is bounded (template-limits.ts): a lookup records the template's use, and a new
 * template first evicts the least recently used ones; when it cannot fit, none is made and
 * createTemplate returns undefined (the caller boots the VM cold).
 */

import { randomBytes } from 'node:crypto';
import { chmod, mkdir, open, rename, rm, stat, statfs, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { HullError } from '../errors/index.js';
import { connectAgent, waitForAgent } from '../sandbox/agent-client.js';
import type { TtrpcClient } from '../ttrpc/index.js';
import type { VmHandle } from '../vmm/index.js';
import { ensurePrivateDir } from './template-dirs.js';
import { enforceBounds, makeRoom, recordTemplateUse } from './template-limits.js';
import { pruneTemplates, removeSupersededTemplates, removeTemplate } from './template-store.js';
import { LAST_USED_FILE, MANIFEST_FILE, STATE_FILE, TEMPLATE_FORMAT, currentBootId, inspect, rootsOf, templateInputs, templateKey, templating, type TemplateManifest, type TemplateRequest, type VmTemplate } from './template.js';

const BOOT_CONSOLE_FILE = 'boot-console.log';
const DEFAULT_BOOT_TIMEOUT_MS = 120_000;
/**
 * Filesystems that keep a RAM file in memory (statfs f_type): tmpfs, hugetlbfs, ramfs. A clone's
 * fault on a hole of such a file allocates the page in the file, for good (template.ts).
 */
const MEMORY_FILESYSTEMS = new Set([0x01021994, 0x958458f6, 0x858458f6]);

/**
 * createTemplate returns the template for `request`, making it first when there is none (`created`
 * tells which), and records its use (for evicting the least recently used). A published template
 * that lost a file (the RAM file after a host reboot) is replaced. Returns undefined when a new
 * template does not fit the store's bounds (request.maxCount, maxRamMiB): then boot the VM cold.
 * Fails with a HullError carrying the guest's console tail when the template guest does not come
 * up; leaves nothing behind then.
 */
export async function createTemplate(request: TemplateRequest): Promise<(VmTemplate & { created: boolean }) | undefined> {
  const roots = rootsOf(request);
  validateRequest(request);
  const { guestMac } = templating(request);
  const inputs = await templateInputs(request);
  const key = templateKey(inputs);
  const existing = await inspect(key, roots);
  if (existing.template) {
    await recordTemplateUse(existing.template.dir);
    return { ...existing.template, created: false };
  }
  // Published but unusable (its RAM went with a reboot): replace it. A creator racing us may publish
  // a good one in between and lose it here; clones already running are not affected.
  if (existing.published) await removeTemplate(key, roots);

  await ensurePrivateDir(roots.templatesRoot, 'templates directory');
  await ensurePrivateDir(roots.ramRoot, 'template RAM directory');
  if (MEMORY_FILESYSTEMS.has((await statfs(roots.ramRoot)).type)) {
    throw new HullError('failed_precondition', `Cannot make a VM template: ${roots.ramRoot} is on tmpfs, where every page a clone touches would stay allocated in the template's RAM file (template_ram_dir must be on a disk file system)`);
  }
  await pruneTemplates(roots);
  // Room first: the template's RAM fills while it boots. No room: the caller boots this VM cold.
  const noRoom = await makeRoom(key, inputs.memoryMiB, request);
  if (noRoom !== undefined) {
    request.log?.(`no VM template made for ${inputs.vcpus} vCPU ${inputs.memoryMiB} MiB, the VM boots cold: ${noRoom}`);
    return undefined;
  }
  const ramDir = join(roots.ramRoot, key);
  await ensurePrivateDir(ramDir, 'template RAM directory');
  const nonce = randomBytes(4).toString('hex');
  const work = join(roots.templatesRoot, `.new-${key}-${process.pid}-${nonce}`);
  const ramFile = join(ramDir, `ram.${process.pid}.${nonce}`);
  const stateDir = join(work, 'vm');
  await mkdir(work, { mode: 0o700 });
  let vm: VmHandle | undefined;
  let published = false;
  try {
    // Made now rather than by the hypervisor in a moment: other creators count it as a template in the making.
    await writeFile(ramFile, '', { flag: 'wx', mode: 0o600 });
    await mkdir(stateDir, { mode: 0o700 });
    await mkdir(join(stateDir, 'shared'), { mode: 0o700 });
    const bootTimeoutMs = request.bootTimeoutMs ?? DEFAULT_BOOT_TIMEOUT_MS;
    const started = Date.now();
    const deadline = started + bootTimeoutMs;
    vm = await request.driver.start({
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
      ...(request.jail ? { jail: request.jail } : {}),
    });
    const agent = await connectToAgent(vm, deadline);
    const bootMs = Date.now() - started;
    const saving = Date.now();
    try {
      // Still connected: a clone's agent finds its port as it left it (see connectToAgent).
      if (vm.saveTemplate === undefined) throw new HullError('unimplemented', `the ${request.driver.name} driver cannot save templates`);
      await vm.saveTemplate(join(work, STATE_FILE));
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
      stateBytes: (await stat(join(work, STATE_FILE))).size,
      guestMac,
      agentVersion: agent.agentVersion,
      createdAt: new Date().toISOString(),
      bootMs,
      saveMs,
      bootId: await currentBootId(),
    };
    await writeFile(join(work, LAST_USED_FILE), '', { mode: 0o644, flag: 'wx' });
    await writeDurably(join(work, MANIFEST_FILE), JSON.stringify(manifest, null, 2) + '\n');
    try {
      await rename(work, join(roots.templatesRoot, key));
      published = true;
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      if (code !== 'ENOTEMPTY' && code !== 'EEXIST') throw error;
    }
    if (published) {
      // Upkeep, not part of making this one: a template that will not go must not fail the sandbox.
      await removeSupersededTemplates(key, manifest.inputs, roots).catch(() => []);
      // Other creators may have published meanwhile, and the estimate may have been low.
      await enforceBounds(key, request).catch(() => []);
      return { key, dir: join(roots.templatesRoot, key), ramFile, manifest, created: true };
    }
    // Another creator published the same key first: use theirs.
    const theirs = await inspect(key, roots);
    if (theirs.template) {
      await recordTemplateUse(theirs.template.dir);
      return { ...theirs.template, created: false };
    }
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
  const { client, agent } = await connectAgent(vm.agentSocketPath);
  try {
    return { client, agentVersion: (await waitForAgent(agent, deadline, vm.agentPortOpened, vm.exited)).version };
  } catch (error) {
    client.close();
    throw error;
  }
}

function templateFailure(error: unknown, vm: VmHandle): HullError {
  const reason = error instanceof Error ? error.message : String(error);
  const tail = vm.consoleTail(4096).trim();
  const code = error instanceof HullError ? error.code : 'internal';
  return new HullError(code, `Cannot make a VM template: ${reason}${tail ? `\n--- console tail ---\n${tail}` : ''}`, { cause: error });
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
