/**
 * Bounds on the template store, so that templates cannot exhaust the node: every VM size makes its
 * own template, each holding ~150–300 MiB of disk and of page cache while clones use it, and a
 * tenant cycling through memory limits would otherwise make one per limit.
 *
 * The store keeps at most `maxCount` templates whose RAM files hold at most `maxRamMiB` allocated (st_blocks)
 * together. Before a new template is made, room is made for it by evicting the least recently used
 * templates (a clone's lookup touches LAST_USED_FILE); templates used within `minIdleMs` are never
 * evicted, because a clone that just looked one up has not opened its files yet. When there is no
 * room even so, or when the new template alone would not fit, no template is made and the VM boots
 * cold: the bound protects the node, and a pod must not fail because of a cache.
 *
 * No lock: concurrent creators each list, evict and publish. A creator counts the templates other
 * creators are making (their RAM files, named after a live pid), and checks the bounds again after
 * publishing, so the bound is overshot by at most the templates published at the same instant, and
 * only until the next creation. Two creators evicting the same template is harmless.
 */

import { open, readdir, stat, utimes } from 'node:fs/promises';
import { join } from 'node:path';
import { LAST_USED_FILE, KEY_PATTERN, readManifest, rootsOf, DEFAULT_TEMPLATE_MAX_COUNT, DEFAULT_TEMPLATE_MAX_RAM_MIB, type TemplateRoots } from './template.js';
import { pidAlive } from '../common/process.js';
import { RAM_FILE_PATTERN, listTemplates, removeTemplate } from './template-store.js';

const MIB = 1024 * 1024;
const DEFAULT_MIN_IDLE_MS = 30_000;

export interface Bounds {
  maxCount: number;
  maxRamBytes: number;
  minIdleMs: number;
}

export function boundsOf(roots: TemplateRoots): Bounds {
  return {
    maxCount: roots.maxCount ?? DEFAULT_TEMPLATE_MAX_COUNT,
    maxRamBytes: (roots.maxRamMiB ?? DEFAULT_TEMPLATE_MAX_RAM_MIB) * MIB,
    minIdleMs: roots.minIdleMs ?? DEFAULT_MIN_IDLE_MS,
  };
}

/**
 * estimateTemplateBytes guesses, before it is made, what a template of a `memoryMiB` VM will hold
 * allocated: what its guest touched while booting. Measured (TCG, 1 vCPU): ~150 MiB for 256–448 MiB,
 * 163 MiB for 512, 192 MiB for 2304, 301 MiB for 4096 (the guest kernel's memory map grows with the
 * VM). On the high side on purpose; after publishing, the real size is what counts.
 */
export function estimateTemplateBytes(memoryMiB: number): number {
  return (160 + Math.ceil(memoryMiB / 16)) * MIB;
}

/** StoreEntry is one template as eviction sees it. */
export interface StoreEntry {
  key: string;
  bytes: number;
  lastUsedMs: number;
  /** usable is false for a broken template (its RAM gone, say): evicted first, whenever used. */
  usable: boolean;
}

export interface EvictionInput {
  entries: StoreEntry[];
  bounds: Bounds;
  /** incoming is the template about to be made (count 1 and its estimate), or none (count 0). */
  incoming: { count: number; bytes: number };
  /** inFlight: templates other creators are making now; they count but cannot be evicted. */
  inFlight: { count: number; bytes: number };
  /** keep: keys never evicted (the template just published). */
  keep: ReadonlySet<string>;
  now: number;
}

/**
 * planEviction picks the templates to evict, least recently used first (broken ones before all),
 * until the store with `incoming` fits the bounds. `fits` is false when it cannot be made to fit;
 * `evict` then lists what may still go (the caller decides whether to evict partly).
 */
export function planEviction(input: EvictionInput): { evict: string[]; fits: boolean } {
  const { bounds, incoming, inFlight, keep, now } = input;
  let count = input.entries.length + inFlight.count + incoming.count;
  let bytes = input.entries.reduce((sum, e) => sum + e.bytes, 0) + inFlight.bytes + incoming.bytes;
  const candidates = input.entries
    .filter((e) => !keep.has(e.key) && (!e.usable || now - e.lastUsedMs >= bounds.minIdleMs))
    .sort((a, b) => Number(a.usable) - Number(b.usable) || a.lastUsedMs - b.lastUsedMs || (a.key < b.key ? -1 : 1));
  const evict: string[] = [];
  const over = () => count > bounds.maxCount || bytes > bounds.maxRamBytes;
  for (const candidate of candidates) {
    if (!over()) break;
    evict.push(candidate.key);
    count -= 1;
    bytes -= candidate.bytes;
  }
  return { evict, fits: !over() };
}

/**
 * makeRoom evicts least recently used templates so that a new template of a `memoryMiB` VM, key
 * `key`, fits the bounds. Returns undefined when it fits (evicting what had to go), else why not
 * (and evicts nothing): then the VM boots cold.
 */
export async function makeRoom(key: string, memoryMiB: number, roots: TemplateRoots): Promise<string | undefined> {
  const bounds = boundsOf(roots);
  const estimate = estimateTemplateBytes(memoryMiB);
  if (estimate > bounds.maxRamBytes) {
    return `a template of a ${memoryMiB} MiB VM would hold about ${estimate / MIB} MiB, more than all templates may (template_max_ram_mib = ${bounds.maxRamBytes / MIB})`;
  }
  const entries = await storeEntries(roots);
  const plan = planEviction({
    entries: entries.filter((e) => e.key !== key),
    bounds,
    incoming: { count: 1, bytes: estimate },
    inFlight: await templatesInFlight(roots, key),
    keep: new Set(),
    now: Date.now(),
  });
  if (!plan.fits) {
    return `the ${entries.length} templates kept (at most ${bounds.maxCount}, ${bounds.maxRamBytes / MIB} MiB allocated) were all used in the last ${bounds.minIdleMs / 1000} s or are being made`;
  }
  await evict(plan.evict, roots, 'to make room for a new one');
  return undefined;
}

/**
 * enforceBounds evicts least recently used templates, never `key` (just published), until the
 * published templates fit the bounds, as far as they can; the evicted keys are returned.
 */
export async function enforceBounds(key: string, roots: TemplateRoots): Promise<string[]> {
  const plan = planEviction({
    entries: await storeEntries(roots),
    bounds: boundsOf(roots),
    incoming: { count: 0, bytes: 0 },
    inFlight: { count: 0, bytes: 0 },
    keep: new Set([key]),
    now: Date.now(),
  });
  await evict(plan.evict, roots, `after publishing ${key}`);
  return plan.evict;
}

/**
 * recordTemplateUse marks the template in `dir` as just used: one utimes on every clone's lookup.
 * Best effort: a template being removed meanwhile is no error, and a pod never fails on it.
 */
export async function recordTemplateUse(dir: string): Promise<void> {
  const file = join(dir, LAST_USED_FILE);
  const now = new Date();
  try {
    await utimes(file, now, now);
  } catch (error) {
    // Made before LAST_USED_FILE existed: make it (its mtime is now).
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') await open(file, 'a', 0o644).then((h) => h.close(), () => undefined);
  }
}

async function storeEntries(roots: TemplateRoots): Promise<StoreEntry[]> {
  return (await listTemplates(roots)).map((l) => ({ key: l.key, bytes: l.ramAllocatedBytes, lastUsedMs: l.lastUsedMs, usable: l.template !== undefined }));
}

async function evict(keys: string[], roots: TemplateRoots, why: string): Promise<void> {
  const bounds = boundsOf(roots);
  // Another creator may evict the same template at the same time: removeTemplate allows that.
  for (const key of keys) {
    if (await removeTemplate(key, roots)) roots.log?.(`evicted VM template ${key}, the least recently used, ${why} (template_max_count ${bounds.maxCount}, template_max_ram_mib ${bounds.maxRamBytes / MIB})`);
  }
}

/**
 * templatesInFlight counts the templates other creators are making: keys other than `key` with a
 * RAM file of a live creator that no manifest names yet, and what those files hold so far.
 */
export async function templatesInFlight(roots: TemplateRoots, key: string): Promise<{ count: number; bytes: number }> {
  const r = rootsOf(roots);
  let count = 0;
  let bytes = 0;
  for (const other of (await readdir(r.ramRoot).catch(() => [] as string[])).filter((name) => KEY_PATTERN.test(name) && name !== key)) {
    const ramDir = join(r.ramRoot, other);
    const published = (await readManifest(join(r.templatesRoot, other)).catch(() => undefined))?.ramFile;
    let making = false;
    for (const name of await readdir(ramDir).catch(() => [] as string[])) {
      const pid = RAM_FILE_PATTERN.exec(name)?.[1];
      if (pid === undefined || join(ramDir, name) === published || !pidAlive(Number(pid))) continue;
      making = true;
      // What it holds so far, or what it will once the hypervisor has sized it (its guest is still booting).
      const info = await stat(join(ramDir, name)).catch(() => undefined);
      bytes += Math.max((info?.blocks ?? 0) * 512, info !== undefined && info.size > 0 ? estimateTemplateBytes(info.size / MIB) : 0);
    }
    // A key both published and being made again (replacing a broken one) is counted once, as published.
    if (making && published === undefined) count += 1;
  }
  return { count, bytes };
}
