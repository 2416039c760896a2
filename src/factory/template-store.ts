/**
 * The template store's upkeep: listing the published templates, removing one, and pruning what
 * creators that died left behind (their work directories and RAM files, named after their pid by
 * createTemplate in template-create.ts).
 */

import { randomBytes } from 'node:crypto';
import { readdir, rename, rm, rmdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { HullError } from '../errors/index.js';
import { pidAlive } from '../common/process.js';
import { KEY_PATTERN, LAST_USED_FILE, LEGACY_TEMPLATE_RAM_ROOT, MANIFEST_FILE, inspect, isFileIn, readManifest, rootsOf, type TemplateInputs, type TemplateListing, type TemplateRoots } from './template.js';

/** Work directories and RAM files carry their creator's pid, so that leftovers can be pruned. */
const WORK_DIR_PATTERN = /^\.(?:new|trash)-([0-9a-f]{20})-(\d+)-[0-9a-f]{8}$/;
export const RAM_FILE_PATTERN = /^ram\.(\d+)\.[0-9a-f]{8}$/;

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
    const dir = join(r.templatesRoot, key);
    const listing: TemplateListing = { key, dir, ramAllocatedBytes: ram ? ram.blocks * 512 : 0, lastUsedMs: await lastUsedMs(dir) };
    if (found.template) listing.template = found.template;
    if (found.problem !== undefined) listing.problem = found.problem;
    listings.push(listing);
  }
  return listings;
}

/** lastUsedMs is when a clone last started from the template in `dir` (see recordTemplateUse), 0 when unknown. */
async function lastUsedMs(dir: string): Promise<number> {
  // A template made before LAST_USED_FILE existed was last used, as far as anyone knows, when made.
  for (const file of [LAST_USED_FILE, MANIFEST_FILE]) {
    const info = await stat(join(dir, file)).catch(() => undefined);
    if (info !== undefined) return info.mtimeMs;
  }
  return 0;
}

/**
 * removeTemplate unpublishes the template `key` and removes its files, the RAM file
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
  if (manifest?.ramFile !== undefined && isFileIn(ramDir, manifest.ramFile)) {
    removed = (await rm(manifest.ramFile).then(() => true, () => false)) || removed;
  }
  const legacyDir = join(LEGACY_TEMPLATE_RAM_ROOT, key);
  if (manifest?.ramFile !== undefined && isFileIn(legacyDir, manifest.ramFile)) {
    removed = (await rm(manifest.ramFile).then(() => true, () => false)) || removed;
    await rmdir(legacyDir).catch(() => undefined);
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
 * removeSupersededTemplates removes the published templates of the same image, size and
 * accelerator as the template `key` (made from `inputs`) under another key: another hypervisor build,
 * command line or kernel arguments made those, that is an older hull or hypervisor, and nothing on this
 * host asks for them again. Each holds ~150 MiB of disk. Returns the keys removed.
 */
export async function removeSupersededTemplates(key: string, inputs: TemplateInputs, roots: TemplateRoots = {}): Promise<string[]> {
  const removed: string[] = [];
  for (const listing of await listTemplates(roots)) {
    const other = listing.template?.manifest.inputs;
    if (listing.key === key || other === undefined) continue;
    const sameShape = other.imageId === inputs.imageId && other.vcpus === inputs.vcpus && other.memoryMiB === inputs.memoryMiB && other.accel === inputs.accel;
    if (sameShape && (await removeTemplate(listing.key, roots))) removed.push(listing.key);
  }
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
