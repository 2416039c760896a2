/**
 * The store's bounds on fake templates: real files in temp dirs, whole enough for listTemplates to call them usable; no VM is started.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, mkdtempSync, readdirSync, rmSync, statSync, truncateSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, beforeEach, describe, it } from 'node:test';
import { DEFAULT_CONFIG } from '../config/index.js';
import { enforceBounds, estimateTemplateBytes, makeRoom, planEviction, recordTemplateUse, templatesInFlight, type Bounds, type StoreEntry } from './template-limits.js';
import { listTemplates } from './template-store.js';
import { BOOT_ID_FILE, DEFAULT_TEMPLATE_MAX_COUNT, DEFAULT_TEMPLATE_MAX_RAM_MIB, LAST_USED_FILE, MANIFEST_FILE, TEMPLATE_FORMAT, templateKey, type TemplateInputs, type TemplateManifest } from './template.js';

const MIB = 1024 * 1024;
const base = mkdtempSync(join(tmpdir(), 'hull-tpl-limits-'));
const ramBase = mkdtempSync(join(tmpdir(), 'hull-tpl-limits-'));
after(() => {
  rmSync(base, { recursive: true, force: true });
  rmSync(ramBase, { recursive: true, force: true });
});

const image = join(base, 'image');
mkdirSync(image);
for (const f of ['kernel', 'initrd', 'root']) writeFileSync(join(image, f), f);

let roots: { templatesRoot: string; ramRoot: string };
let n = 0;
beforeEach(() => {
  n += 1;
  roots = { templatesRoot: join(base, `t${n}`), ramRoot: join(ramBase, `r${n}`) };
  mkdirSync(roots.templatesRoot, { mode: 0o700 });
  mkdirSync(roots.ramRoot, { mode: 0o700 });
});

/** fakeTemplate publishes a template of a `memoryMiB` VM whose RAM file holds `allocatedMiB`, last used `ageMs` ago. */
function fakeTemplate(memoryMiB: number, allocatedMiB: number, ageMs: number): string {
  const inputs: TemplateInputs = {
    format: TEMPLATE_FORMAT,
    imageId: 'fakeimage',
    vcpus: 1,
    memoryMiB,
    accel: 'tcg',
    kernelArgs: [`n=${n}`],
    driver: 'qemu',
    hypervisor: { tscKhz: null, qemu: { path: '/usr/bin/qemu-system-x86_64', size: 1, mtimeMs: 1 }, commandLineSha256: randomBytes(32).toString('hex') },
  };
  const key = templateKey(inputs);
  const dir = join(roots.templatesRoot, key);
  const ramDir = join(roots.ramRoot, key);
  mkdirSync(dir);
  mkdirSync(ramDir);
  const ramFile = join(ramDir, `ram.${process.pid}.${randomBytes(4).toString('hex')}`);
  writeFileSync(ramFile, Buffer.alloc(allocatedMiB * MIB, 1)); // allocated...
  truncateSync(ramFile, memoryMiB * MIB); // ...and sparse up to the VM's size, as a template's RAM file is.
  writeFileSync(join(dir, 'state'), 'state');
  const manifest: TemplateManifest = {
    format: TEMPLATE_FORMAT,
    key,
    inputs,
    image: { kernel: join(image, 'kernel'), initrd: join(image, 'initrd'), rootDisk: join(image, 'root') },
    ramFile,
    ramBytes: memoryMiB * MIB,
    stateBytes: 5,
    guestMac: '02:68:75:6c:6c:00',
    agentVersion: 'test',
    createdAt: new Date().toISOString(),
    bootMs: 1,
    saveMs: 1,
    bootId: readFileSync(BOOT_ID_FILE, 'utf8').trim(),
  };
  writeFileSync(join(dir, MANIFEST_FILE), JSON.stringify(manifest));
  writeFileSync(join(dir, LAST_USED_FILE), '');
  const then = new Date(Date.now() - ageMs);
  utimesSync(join(dir, LAST_USED_FILE), then, then);
  return key;
}

const keys = async () => (await listTemplates(roots)).map((l) => l.key).sort();
const bounds = (b: Partial<Bounds>): Bounds => ({ maxCount: 8, maxRamBytes: 2048 * MIB, minIdleMs: 0, ...b });
const entry = (key: string, mib: number, lastUsedMs: number, usable = true): StoreEntry => ({ key, bytes: mib * MIB, lastUsedMs, usable });
const none = { count: 0, bytes: 0 };

describe('planEviction()', () => {
  const entries = [entry('b', 100, 2000), entry('a', 100, 1000), entry('c', 100, 3000)];

  it('evicts nothing when the store fits', () => {
    assert.deepEqual(planEviction({ entries, bounds: bounds({ maxCount: 4 }), incoming: { count: 1, bytes: 100 * MIB }, inFlight: none, keep: new Set(), now: 10_000 }), { evict: [], fits: true });
  });

  it('evicts the least recently used first, until the count and the bytes fit', () => {
    const incoming = { count: 1, bytes: 100 * MIB };
    assert.deepEqual(planEviction({ entries, bounds: bounds({ maxCount: 3 }), incoming, inFlight: none, keep: new Set(), now: 10_000 }), { evict: ['a'], fits: true });
    assert.deepEqual(planEviction({ entries, bounds: bounds({ maxRamBytes: 250 * MIB }), incoming, inFlight: none, keep: new Set(), now: 10_000 }), { evict: ['a', 'b'], fits: true });
    // Templates others are making count, and cannot be evicted.
    assert.deepEqual(planEviction({ entries, bounds: bounds({ maxCount: 3 }), incoming, inFlight: { count: 1, bytes: 0 }, keep: new Set(), now: 10_000 }), { evict: ['a', 'b'], fits: true });
  });

  it('evicts broken templates before all others, and never a kept key', () => {
    const withBroken = [...entries, entry('z', 0, 9000, false)];
    assert.deepEqual(planEviction({ entries: withBroken, bounds: bounds({ maxCount: 3 }), incoming: { count: 1, bytes: 0 }, inFlight: none, keep: new Set(), now: 10_000 }), { evict: ['z', 'a'], fits: true });
    assert.deepEqual(planEviction({ entries, bounds: bounds({ maxCount: 2 }), incoming: none, inFlight: none, keep: new Set(['a']), now: 10_000 }), { evict: ['b'], fits: true });
  });

  it('does not evict templates used within minIdleMs: then the new one does not fit', () => {
    const plan = planEviction({ entries, bounds: bounds({ maxCount: 3, minIdleMs: 9500 }), incoming: { count: 1, bytes: 0 }, inFlight: none, keep: new Set(), now: 10_000 });
    assert.deepEqual(plan, { evict: [], fits: false });
    assert.deepEqual(planEviction({ entries, bounds: bounds({ maxCount: 1, minIdleMs: 8500 }), incoming: { count: 1, bytes: 0 }, inFlight: none, keep: new Set(), now: 10_000 }), { evict: ['a'], fits: false });
  });
});

describe('the store on disk', () => {
  it('defaults agree with the config defaults', () => {
    assert.equal(DEFAULT_CONFIG.templateMaxCount, DEFAULT_TEMPLATE_MAX_COUNT);
    assert.equal(DEFAULT_CONFIG.templateMaxRamMiB, DEFAULT_TEMPLATE_MAX_RAM_MIB);
    assert.equal(estimateTemplateBytes(512), 192 * MIB);
    // With the default bound, VMs up to ~29 GiB have templates.
    assert.ok(estimateTemplateBytes(29 * 1024) <= DEFAULT_TEMPLATE_MAX_RAM_MIB * MIB);
    assert.ok(estimateTemplateBytes(30 * 1024) > DEFAULT_TEMPLATE_MAX_RAM_MIB * MIB);
  });

  it('recordTemplateUse touches last-used (made when missing); listTemplates reports it', async () => {
    const key = fakeTemplate(64, 1, 60_000);
    const dir = join(roots.templatesRoot, key);
    const [before] = await listTemplates(roots);
    assert.ok(before!.template, before!.problem);
    assert.ok(Date.now() - before!.lastUsedMs >= 59_000);
    assert.ok(before!.ramAllocatedBytes >= 1 * MIB && before!.ramAllocatedBytes < 2 * MIB, `${before!.ramAllocatedBytes} bytes allocated`);
    await recordTemplateUse(dir);
    const [after] = await listTemplates(roots);
    assert.ok(Date.now() - after!.lastUsedMs < 5_000);
    rmSync(join(dir, LAST_USED_FILE));
    await recordTemplateUse(dir);
    assert.ok(existsSync(join(dir, LAST_USED_FILE)));
    await recordTemplateUse(join(roots.templatesRoot, 'gone')); // no error for a template removed meanwhile
  });

  it('makeRoom evicts the least recently used until a new template fits the count', async () => {
    const old = fakeTemplate(64, 1, 30_000);
    const mid = fakeTemplate(64, 1, 20_000);
    const recent = fakeTemplate(64, 1, 10_000);
    const logged: string[] = [];
    const limits = { ...roots, maxCount: 3, minIdleMs: 0, log: (line: string) => logged.push(line) };
    assert.equal(await makeRoom('0'.repeat(20), 64, limits), undefined);
    assert.deepEqual(await keys(), [mid, recent].sort());
    assert.deepEqual(logged, [`evicted VM template ${old}, the least recently used, to make room for a new one (template_max_count 3, template_max_ram_mib 2048)`]);
    assert.ok(!existsSync(join(roots.ramRoot, old)), "the evicted template's RAM is freed");
    // Using `mid` makes `recent` the least recently used.
    await recordTemplateUse(join(roots.templatesRoot, mid));
    assert.equal(await makeRoom('0'.repeat(20), 64, { ...limits, maxCount: 2 }), undefined);
    assert.deepEqual(await keys(), [mid]);
  });

  it('makeRoom evicts until the tmpfs the RAM files hold, with the new estimate, fits', async () => {
    const a = fakeTemplate(64, 8, 30_000);
    const b = fakeTemplate(64, 8, 20_000);
    const c = fakeTemplate(64, 8, 10_000);
    // 3 x 8 MiB + an estimate of 164 MiB for a 64 MiB VM: 188 MiB, over 187.
    assert.equal(estimateTemplateBytes(64), 164 * MIB);
    assert.equal(await makeRoom('0'.repeat(20), 64, { ...roots, maxRamMiB: 187, minIdleMs: 0 }), undefined);
    assert.deepEqual(await keys(), [b, c].sort());
    void a;
  });

  it('makeRoom refuses, evicting nothing, when the new template alone is over the bound or the others are in use', async () => {
    const a = fakeTemplate(64, 1, 30_000);
    const b = fakeTemplate(64, 1, 1_000);
    const tooBig = await makeRoom('0'.repeat(20), 16384, { ...roots, maxRamMiB: 1024 });
    assert.match(tooBig ?? '', /a template of a 16384 MiB VM would hold about 1184 MiB, more than all templates may \(template_max_ram_mib = 1024\)/);
    const busy = await makeRoom('0'.repeat(20), 64, { ...roots, maxCount: 1, minIdleMs: 60_000 });
    assert.match(busy ?? '', /were all used in the last 60 s/);
    assert.deepEqual(await keys(), [a, b].sort());
  });

  it('templates other creators are making count against the bounds', async () => {
    const a = fakeTemplate(64, 1, 30_000);
    // A live creator (this process) with a RAM file no manifest names; and a dead one's leftover.
    const making = join(roots.ramRoot, 'f'.repeat(20));
    mkdirSync(making);
    writeFileSync(join(making, `ram.${process.pid}.00000000`), Buffer.alloc(2 * MIB, 1));
    const dead = join(roots.ramRoot, 'e'.repeat(20));
    mkdirSync(dead);
    writeFileSync(join(dead, 'ram.999999999.00000000'), '');
    const inFlight = await templatesInFlight(roots, '0'.repeat(20));
    assert.equal(inFlight.count, 1);
    assert.ok(inFlight.bytes >= 2 * MIB);
    assert.equal((await templatesInFlight(roots, 'f'.repeat(20))).count, 0, 'a creator does not count its own key');
    // Room for two: the one being made and ours; so `a` goes.
    assert.equal(await makeRoom('0'.repeat(20), 64, { ...roots, maxCount: 2, minIdleMs: 0 }), undefined);
    assert.deepEqual(await keys(), []);
    assert.ok(existsSync(join(making, `ram.${process.pid}.00000000`)), 'a template being made is never evicted');
    void a;
  });

  it('creators making room at the same time evict safely: no error, no trash, the most recently used stay', async () => {
    const made = [40_000, 30_000, 20_000, 10_000, 5_000].map((age) => fakeTemplate(64, 1, age));
    const limits = { ...roots, maxCount: 3, minIdleMs: 0 };
    const reasons = await Promise.all(['1', '2', '3', '4'].map((d) => makeRoom(d.repeat(20), 64, limits)));
    assert.deepEqual(reasons, [undefined, undefined, undefined, undefined]);
    const left = await keys();
    // Each saw five templates and made room for one more: the two most recently used stay.
    assert.deepEqual(left, made.slice(3).sort());
    assert.deepEqual(readdirSync(roots.templatesRoot).sort(), left, 'no trash left');
    assert.deepEqual(readdirSync(roots.ramRoot).sort(), left, 'the evicted RAM directories are gone');
    // Two creators that published at once, with the default minIdleMs (30 s): neither evicts the
    // other's fresh template, which its caller is about to clone; the bound is passed until later.
    const bounded = { ...roots, maxCount: 1 };
    assert.deepEqual(await Promise.all([enforceBounds(made[3]!, bounded), enforceBounds(made[4]!, bounded)]), [[], []]);
    assert.deepEqual(await keys(), left);
  });

  it('enforceBounds, after publishing, evicts others until the published ones fit, never the new one', async () => {
    const a = fakeTemplate(64, 4, 30_000);
    const b = fakeTemplate(64, 4, 20_000);
    const fresh = fakeTemplate(64, 4, 40_000); // published just now, though its last-used says otherwise
    assert.deepEqual(await enforceBounds(fresh, { ...roots, maxCount: 2, minIdleMs: 0 }), [a]);
    assert.deepEqual(await keys(), [b, fresh].sort());
    // Over the bytes, with nothing else left to evict: the new one stays (the next creation evicts it).
    assert.deepEqual(await enforceBounds(fresh, { ...roots, maxRamMiB: 1, minIdleMs: 0 }), [b]);
    assert.deepEqual(await keys(), [fresh]);
    assert.deepEqual(readdirSync(roots.templatesRoot), [fresh], 'no trash left');
    assert.ok(statSync(join(roots.templatesRoot, fresh)).isDirectory());
  });
});
