/**
 * PoolOwner keeps the node's pool of warm VMs (`hull pool serve`): `pool_size` ready VMs of the
 * default shape (default_vcpus, default_memory, the current guest image), and as many of any other
 * shape a pod asked for in the last SHAPE_IDLE_MS. Each is a clone started on a lifeline in its own
 * directory under `<pool_dir>/vms/`, warmed up (warm-up.ts), and lent to the first shim that claims
 * its shape (protocol.ts); a ready VM that dies or grows older than MAX_AGE_MS is replaced.
 *
 * What the owner makes for itself is in its own ledger (`<pool_dir>/ledger`): its cgroup
 * (`/hull-pool`, where ready VMs are charged until a pod adopts them), the network namespace its
 * VMs' taps wait in (`<pool_dir>/netns`), the warm-up bundle. Killed, it leaves no running VM (each
 * lives on a lifeline only the owner held) and the next owner replays what it left: the ledgers
 * of VM directories whose processes are all gone, then the old owner's ledger.
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, readdir, readFile, rm, rmdir, writeFile } from 'node:fs/promises';
import { createServer, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import { mountAt, readMountinfo } from '../common/mountinfo.js';
import { processStartTime } from '../common/process.js';
import { run } from '../common/run.js';
import { listenUnix } from '../common/unix-socket.js';
import { DEFAULT_CONFIG, type HullConfig } from '../config/index.js';
import { HullError } from '../errors/index.js';
import { TemplateFactory } from '../factory/index.js';
import { currentGuestImage } from '../guest/index.js';
import { Ledger, POOL_VM_DIR, Sandbox, joinPodCgroup, memoryUsage, readLedger, replayLedger, setMemoryLimit, type PoolShape } from '../sandbox/index.js';
import { QemuDriver } from '../vmm/index.js';
import { LineReader, POOL_SOCKET, send, type PoolStatus, type Request } from './protocol.js';
import { WARM_CONTAINER_IDS, WARM_FILES, makeWarmBundle, warmUp } from './warm-up.js';

const OWNER_PID_FILE = 'owner.pid';
const VMS_DIR = 'vms';
const NETNS_FILE = 'netns';
const WARM_DIR = 'warm';
/** POOL_CGROUP: where ready VMs (and the owner) are charged until a pod adopts them (poolCgroup). */
export const POOL_CGROUP = '/hull-pool';

/** poolCgroup is POOL_CGROUP for the default pool_dir, and one of its own for any other pool (tests'). */
export function poolCgroup(dir: string): string {
  return dir === DEFAULT_CONFIG.poolDir ? POOL_CGROUP : `${POOL_CGROUP}-${createHash('sha256').update(dir).digest('hex').slice(0, 12)}`;
}
/** A ready VM older than this is replaced (its clock and memory were made long ago). */
const MAX_AGE_MS = 30 * 60_000;
/** A shape nobody asked for this long is no longer kept (the default shape always is). */
const SHAPE_IDLE_MS = 10 * 60_000;
const MAX_SHAPES = 4;
/**
 * WARM_VM_BYTES is what one more ready VM is taken to cost the pool's cgroup (measured: 127-158 MiB
 * of PSS per ready VM, TCG, 512 MiB VMs); no warm-up starts unless it fits pool_memory_limit.
 */
const WARM_VM_BYTES = 192 * 1024 * 1024;
/** How long a claimer may take between the lent VM and "taken" (it records it and opens the lifeline). */
const TAKE_TIMEOUT_MS = 30_000;
const IDLE_CHECK_MS = 5_000;
/**
 * REFILL_DELAY_MS: no warm-up starts this soon after a VM was lent. A warm-up is seconds of CPU
 * (TCG); right after a lend it would compete with the pod that is starting, and with the pods of
 * the same burst that may follow.
 */
const REFILL_DELAY_MS = 3_000;
const MAX_BACKOFF_MS = 60_000;

interface ReadyVm {
  sandbox: Sandbox;
  key: string;
  tap: { netns: string; name: string };
  readyAt: number;
}

interface Shape {
  shape: PoolShape;
  warming: number;
  lastAskedAt: number;
}

export interface PoolOwnerOptions {
  config: HullConfig;
  log: (line: string) => void;
}

export function shapeKey(s: PoolShape): string {
  return `${s.imageId}/${s.vcpus}/${s.memoryMiB}/${s.accel}/${s.jailed ? 'jail' : 'nojail'}`;
}

export class PoolOwner {
  readonly #config: HullConfig;
  readonly #log: (line: string) => void;
  readonly #dir: string;
  readonly #driver: QemuDriver;
  readonly #shapes = new Map<string, Shape>();
  #ready: ReadyVm[] = [];
  #lent = 0;
  #lentAt = 0;
  /** full: the last fill found the pool's cgroup without room for one more VM (logged once per episode). */
  #full = false;
  #replaced = 0;
  #warmFailures = 0;
  #ledger: Ledger | undefined;
  #server: Server | undefined;
  #stopping = false;
  #wake: (() => void) | undefined;
  #filling: Promise<void> | undefined;

  private constructor(options: PoolOwnerOptions) {
    this.#config = options.config;
    this.#log = options.log;
    this.#dir = options.config.poolDir;
    // As the shims' driver: the same command line, so the same templates.
    this.#driver = new QemuDriver({ tcgTbSizeMiB: options.config.tcgTbSizeMiB, memoryMerge: options.config.memoryMerge });
  }

  /**
   * start takes over the pool directory (exits with failed_precondition when another owner runs),
   * releases what a killed owner left, and starts filling the pool.
   */
  static async start(options: PoolOwnerOptions): Promise<PoolOwner> {
    const owner = new PoolOwner(options);
    await owner.#takeOver();
    owner.#filling = owner.#fill();
    return owner;
  }

  get dir(): string {
    return this.#dir;
  }

  async #takeOver(): Promise<void> {
    await mkdir(join(this.#dir, VMS_DIR), { recursive: true, mode: 0o700 });
    await this.#lock();
    await this.#reap();
    // The owner's own resources left by one that was killed.
    await replayLedger(this.#dir, { log: this.#log });
    await rm(join(this.#dir, 'ledger'), { force: true });
    const ledger = (this.#ledger = await Ledger.open(this.#dir));
    await joinPodCgroup(ledger, poolCgroup(this.#dir));
    // The pool's memory is bounded as a pod's is; #fill keeps below it rather than meet the OOM killer.
    await setMemoryLimit(poolCgroup(this.#dir), this.#config.poolMemoryLimitMiB * 1024 * 1024).catch((e: Error) => this.#log(`cannot limit the pool's memory: ${e.message}`));
    const netns = join(this.#dir, NETNS_FILE);
    ledger.record('', { kind: 'file', path: netns });
    // One left mounted with no ledger to say so (a killed owner whose ledger was lost): only hull mounts there.
    while (mountAt(await readMountinfo(), netns)) await run('umount', ['--lazy', netns]);
    await writeFile(netns, '', { mode: 0o600 });
    ledger.record('', { kind: 'mount', target: netns });
    // A network namespace of the pool's own, pinned by a bind mount on the file: the taps of ready
    // VMs wait there, down, until a pod's netns takes one.
    await run('unshare', [`--net=${netns}`, 'true']);
    const warm = join(this.#dir, WARM_DIR);
    for (const dir of ['', ...WARM_FILES.dirs]) ledger.record('', { kind: 'dir', path: join(warm, dir) });
    for (const file of WARM_FILES.files) ledger.record('', { kind: 'file', path: join(warm, file) });
    await makeWarmBundle(warm);
    this.#server = createServer((socket) => void this.#serve(socket).catch((e: Error) => this.#log(`pool socket: ${e.message}`)));
    await listenUnix(this.#server, join(this.#dir, POOL_SOCKET));
    this.#log(`VM pool in ${this.#dir}: pid ${process.pid}, ${this.#config.poolSize} ready VMs per shape`);
  }

  /**
   * lock makes this process the pool's one owner: `owner.pid` ("pid start-time") is created
   * exclusively; one naming a process that is gone is removed, once, and the creation retried.
   */
  async #lock(): Promise<void> {
    const pidFile = join(this.#dir, OWNER_PID_FILE);
    const mine = `${process.pid} ${processStartTime(process.pid)}\n`;
    for (let attempt = 0; attempt < 2; attempt++) {
      try {
        await writeFile(pidFile, mine, { flag: 'wx', mode: 0o600 });
        return;
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      }
      const [pid, startTime] = (await readFile(pidFile, 'utf8').catch(() => '')).trim().split(' ');
      if (startTime !== undefined && processStartTime(Number(pid)) === startTime) {
        throw new HullError('failed_precondition', `The VM pool in ${this.#dir} has an owner already (pid ${pid})`);
      }
      await rm(pidFile, { force: true });
    }
    throw new HullError('failed_precondition', `Another VM pool owner is starting in ${this.#dir}`);
  }

  /** reap replays the ledger of every VM directory none of whose recorded processes runs (left by a killed owner, or a pod's that ended). */
  async #reap(): Promise<void> {
    const vms = join(this.#dir, VMS_DIR);
    for (const name of await readdir(vms).catch(() => [])) {
      if (!POOL_VM_DIR.test(name)) continue;
      const dir = join(vms, name);
      const entries = await readLedger(dir, this.#log);
      const alive = entries.some((e) => e.resource.kind === 'process' && processStartTime(e.resource.pid) === e.resource.startTime);
      if (alive) continue; // adopted by a pod: its shim holds the lifeline
      const failures = await replayLedger(dir, { log: this.#log });
      this.#log(`released VM ${name} left by an earlier owner${failures ? ` (${failures} steps failed)` : ''}`);
    }
  }

  async #serve(socket: Socket): Promise<void> {
    const reader = new LineReader(socket);
    socket.on('error', () => undefined);
    const request = (await reader.next(TAKE_TIMEOUT_MS)) as Request;
    if (request.op === 'status') {
      send(socket, { status: await this.status() });
      socket.end();
      return;
    }
    if (request.op !== 'claim' || !isShape(request.shape)) {
      send(socket, { error: 'expected a claim of a VM shape or a status request' });
      socket.end();
      return;
    }
    const key = shapeKey(request.shape);
    this.#ask(key, request.shape);
    const index = this.#ready.findIndex((vm) => vm.key === key);
    if (index < 0 || this.#stopping) {
      send(socket, { vm: null });
      socket.end();
      return;
    }
    const [vm] = this.#ready.splice(index, 1) as [ReadyVm];
    this.#lentAt = Date.now();
    this.#wakeUp();
    let running;
    try {
      running = await vm.sandbox.handOff();
    } catch (e) {
      this.#log(`hand-off of ${vm.sandbox.id}: ${(e as Error).message}`);
      await this.#end(vm);
      send(socket, { vm: null });
      socket.end();
      return;
    }
    send(socket, { vm: { dir: vm.sandbox.stateDir, spec: vm.sandbox.vmSpec, running, tap: vm.tap } });
    const answer = await reader.next(TAKE_TIMEOUT_MS).catch((e: Error) => ({ op: `none (${e.message})` }));
    if (answer['op'] === 'taken') {
      vm.sandbox.releaseLifeline();
      this.#lent++;
      send(socket, { ok: true });
      socket.end();
      this.#log(`lent VM ${vm.sandbox.id} to sandbox ${String(request.sandboxId).slice(0, 80)}`);
      return;
    }
    this.#log(`VM ${vm.sandbox.id} not taken (${String(answer['op'])}): ending it`);
    socket.destroy();
    await this.#end(vm, true);
  }

  #ask(key: string, shape: PoolShape): void {
    // Only shapes up to pool_max_vcpus / pool_max_memory are kept warm: a tenant asking for large
    // VMs must not make the pool hold them.
    if (shape.vcpus > this.#config.poolMaxVcpus || shape.memoryMiB > this.#config.poolMaxMemoryMiB) return;
    const known = this.#shapes.get(key);
    if (known) known.lastAskedAt = Date.now();
    else if (this.#shapes.size < MAX_SHAPES) this.#shapes.set(key, { shape, warming: 0, lastAskedAt: Date.now() });
  }

  /** end destroys a ready VM (or, handed off, replays its ledger: the Sandbox let go of it). */
  async #end(vm: ReadyVm, handedOff = false): Promise<void> {
    if (handedOff) {
      vm.sandbox.releaseLifeline();
      await replayLedger(vm.sandbox.stateDir, { log: this.#log });
      return;
    }
    await vm.sandbox.destroy().catch((e: Error) => this.#log(`destroy VM ${vm.sandbox.id}: ${e.message}`));
  }

  /** fill keeps each wanted shape at pool_size ready VMs, one warm-up at a time (they are CPU-bound). */
  async #fill(): Promise<void> {
    let backoffMs = 1_000;
    while (!this.#stopping) {
      const image = await currentGuestImage(this.#config.guestImagesDir).catch(() => undefined);
      await this.#prune(image?.id);
      const next = image ? this.#wanted(image.id) : undefined;
      if (next === undefined || image === undefined) {
        await this.#sleep(IDLE_CHECK_MS);
        continue;
      }
      const used = await memoryUsage(poolCgroup(this.#dir)).catch(() => undefined);
      if (used !== undefined && used + WARM_VM_BYTES > this.#config.poolMemoryLimitMiB * 1024 * 1024) {
        if (!this.#full) this.#log(`no warm-up: the pool's cgroup holds ${Math.round(used / 1024 / 1024)} MiB of its ${this.#config.poolMemoryLimitMiB} MiB (pool_memory_limit)`);
        this.#full = true;
        await this.#sleep(IDLE_CHECK_MS);
        continue;
      }
      this.#full = false;
      const sinceLent = Date.now() - this.#lentAt;
      if (sinceLent < REFILL_DELAY_MS) {
        await this.#sleep(REFILL_DELAY_MS - sinceLent);
        continue;
      }
      next.warming++;
      try {
        await this.#warmOne(next.shape, image);
        backoffMs = 1_000;
      } catch (e) {
        this.#warmFailures++;
        this.#log(`warm-up of a ${shapeKey(next.shape)} VM failed: ${(e as Error).message}`);
        await this.#sleep(backoffMs);
        backoffMs = Math.min(backoffMs * 2, MAX_BACKOFF_MS);
      } finally {
        next.warming--;
      }
    }
  }

  /** wanted is a shape with fewer than pool_size VMs ready or warming. */
  #wanted(imageId: string): Shape | undefined {
    const c = this.#config;
    const defaults: PoolShape = { imageId, vcpus: c.defaultVcpus, memoryMiB: c.defaultMemoryMiB, accel: c.accel, jailed: c.jail };
    const key = shapeKey(defaults);
    if (!this.#shapes.has(key)) this.#shapes.set(key, { shape: defaults, warming: 0, lastAskedAt: 0 });
    for (const [k, s] of this.#shapes) {
      const ready = this.#ready.filter((vm) => vm.key === k).length;
      if (ready + s.warming < c.poolSize) return s;
    }
    return undefined;
  }

  /** prune drops shapes of another image or asked for too long ago (not the default), and ready VMs too old. */
  async #prune(imageId: string | undefined): Promise<void> {
    const now = Date.now();
    const c = this.#config;
    for (const [key, s] of this.#shapes) {
      const isDefault = s.shape.vcpus === c.defaultVcpus && s.shape.memoryMiB === c.defaultMemoryMiB;
      if (s.shape.imageId !== imageId || (!isDefault && now - s.lastAskedAt > SHAPE_IDLE_MS)) this.#shapes.delete(key);
    }
    const drop = this.#ready.filter((vm) => !this.#shapes.has(vm.key) || now - vm.readyAt > MAX_AGE_MS);
    this.#ready = this.#ready.filter((vm) => !drop.includes(vm));
    for (const vm of drop) {
      this.#replaced++;
      await this.#end(vm);
    }
  }

  async #warmOne(shape: PoolShape, image: NonNullable<Awaited<ReturnType<typeof currentGuestImage>>>): Promise<void> {
    const c = this.#config;
    const id = `vm-${randomBytes(8).toString('hex')}`;
    const tap = { netns: join(this.#dir, NETNS_FILE), name: `hp${id.slice(3, 15)}` };
    const sandbox = await Sandbox.create({
      id,
      image,
      vcpus: shape.vcpus,
      memoryMiB: shape.memoryMiB,
      accel: shape.accel,
      hostname: 'hull-pool',
      runRoot: join(this.#dir, VMS_DIR),
      bootTimeoutMs: c.bootTimeoutMs,
      driver: this.#driver,
      factory: c.templates ? new TemplateFactory(this.#driver, { templatesRoot: c.templatesDir, ramRoot: c.templateRamDir, maxCount: c.templateMaxCount, maxRamMiB: c.templateMaxRamMiB, log: this.#log }) : undefined,
      pooled: { tapNetns: tap.netns, tapName: tap.name },
      protectedRoots: [c.guestImagesDir, c.templatesDir, c.templateRamDir],
      jail: shape.jailed ? { base: c.jailUidBase, count: c.jailUidCount } : false,
      log: this.#log,
    });
    try {
      await warmUp(sandbox, join(this.#dir, WARM_DIR), this.#driver.templating.guestMac);
    } catch (e) {
      await sandbox.destroy().catch(() => undefined);
      throw e;
    }
    if (this.#stopping) {
      await sandbox.destroy().catch(() => undefined);
      return;
    }
    const vm: ReadyVm = { sandbox, key: shapeKey(shape), tap, readyAt: Date.now() };
    this.#ready.push(vm);
    void sandbox.vm.exited.then(async () => {
      const index = this.#ready.indexOf(vm);
      if (index < 0) return; // lent or ended on purpose
      this.#ready.splice(index, 1);
      this.#replaced++;
      this.#log(`ready VM ${id} died: replacing it`);
      await this.#end(vm);
      this.#wakeUp();
    });
    this.#log(`VM ${id} ready (${shapeKey(shape)}; ms: ${sandbox.startup.map((p) => `${p.name} ${p.ms}`).join(', ')})`);
  }

  async status(): Promise<PoolStatus> {
    const shapes = [...this.#shapes].map(([key, s]) => ({ shape: s.shape, ready: this.#ready.filter((vm) => vm.key === key).length, warming: s.warming }));
    const readyPssBytes = await Promise.all(this.#ready.map((vm) => pssOf(vm.sandbox.vm.hostPids)));
    const memoryBytes = (await memoryUsage(poolCgroup(this.#dir)).catch(() => undefined)) ?? null;
    return { pid: process.pid, size: this.#config.poolSize, shapes, readyPssBytes, memoryBytes, memoryLimitBytes: this.#config.poolMemoryLimitMiB * 1024 * 1024, lent: this.#lent, replaced: this.#replaced, warmFailures: this.#warmFailures };
  }

  #sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, ms);
      this.#wake = () => {
        clearTimeout(timer);
        resolve();
      };
    });
  }

  #wakeUp(): void {
    this.#wake?.();
  }

  /** stop ends every ready VM and releases what the owner made; the pool directory goes when empty. */
  async stop(): Promise<void> {
    if (this.#stopping) return;
    this.#stopping = true;
    this.#wakeUp();
    await new Promise<void>((resolve) => (this.#server ? this.#server.close(() => resolve()) : resolve()));
    await this.#filling?.catch(() => undefined);
    const ready = this.#ready;
    this.#ready = [];
    await Promise.all(ready.map((vm) => this.#end(vm)));
    this.#ledger?.close();
    await replayLedger(this.#dir, { log: this.#log });
    await rm(join(this.#dir, 'ledger'), { force: true });
    await rm(join(this.#dir, POOL_SOCKET), { force: true });
    await rm(join(this.#dir, OWNER_PID_FILE), { force: true });
    // Adopted VMs' directories stay (their pods' shims remove them), and the log: then so does the pool directory.
    await rmdir(join(this.#dir, VMS_DIR)).catch(() => undefined);
    await rmdir(this.#dir).catch(() => undefined);
  }
}

/** isShape checks a claimer's shape (root's, but a shape the owner may warm VMs of). */
function isShape(s: unknown): s is PoolShape {
  const v = s as Partial<PoolShape> | null;
  return (
    typeof v === 'object' && v !== null && typeof v.imageId === 'string' && /^[0-9a-f]{1,64}$/.test(v.imageId) &&
    Number.isInteger(v.vcpus) && v.vcpus! >= 1 && v.vcpus! <= 255 && Number.isInteger(v.memoryMiB) && v.memoryMiB! >= 128 &&
    (v.accel === 'auto' || v.accel === 'kvm' || v.accel === 'tcg') && typeof v.jailed === 'boolean'
  );
}

/** pssOf sums the PSS of processes (smaps_rollup), 0 for those gone. */
async function pssOf(pids: readonly number[]): Promise<number> {
  let total = 0;
  for (const pid of pids) {
    const text = await readFile(`/proc/${pid}/smaps_rollup`, 'utf8').catch(() => '');
    const kib = /^Pss:\s+(\d+) kB/m.exec(text);
    if (kib) total += Number(kib[1]) * 1024;
  }
  return total;
}

export { WARM_CONTAINER_IDS };
