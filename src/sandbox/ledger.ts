/**
 * The ledger: every host resource a sandbox makes (its state directory, directories and files,
 * mounts, the VMM process, the pod network plumbing) is appended to `<stateDir>/ledger` *before*
 * the call that makes it. One teardown replays it in reverse: Sandbox.destroy, a create() that
 * failed half-way, a failed container create (one container's scope), and `shim delete` after a
 * crash, with nothing in memory. Replay logs each failure and goes on, and replaying twice is
 * harmless: a mount is unmounted only while mountinfo shows the recorded mount on top at that exact
 * path, a process is killed only while its pid has the recorded start time. Nothing here lists a
 * directory to decide what to undo; the guest never writes the ledger's directory.
 *
 * Format: JSON lines. `{"seq":N,"scope":S,"resource":{...}}` records an intent; `{"made":N,
 * "mountId":M}` adds the mount ID once mount N exists. `scope` is "" for the sandbox and a container
 * id for what that container's create made.
 */
import { closeSync, openSync, writeSync } from 'node:fs';
import { lstat, readFile, rm, rmdir, unlink } from 'node:fs/promises';
import { join, posix } from 'node:path';
import { HullError } from '../errors/index.js';
import { disablePortForward, disconnectTap, removeTap } from '../net/index.js';
import { mountAt, mountPointsUnder, readMountinfo } from '../common/mountinfo.js';
import { isInside } from '../common/paths.js';
import { processStartTime } from '../common/process.js';
import { unmount } from './mounts.js';
import { isCgroupDir, releaseCgroup } from './host-cgroup.js';
import { releaseJailUid } from './jail-uid.js';
import { killRecordedProcess } from './process-record.js';

export const LEDGER_FILE = 'ledger';
// A ledger is a few lines per container; anything this big was not written by hull.
const MAX_LEDGER_BYTES = 4 << 20;

export type Resource =
  /** the sandbox's state directory itself: removed last, and only once nothing is mounted below it. */
  | { kind: 'state-dir'; path: string }
  | { kind: 'dir'; path: string }
  | { kind: 'file'; path: string }
  /**
   * the shim's read-only status socket, `<status_dir>/<sandbox-id>.sock` (src/shim/status-socket.ts):
   * outside the state dir, so only a socket of exactly that name is ever removed.
   */
  | { kind: 'status-socket'; path: string }
  | { kind: 'mount'; target: string }
  | { kind: 'process'; pid: number; startTime: string }
  /** the tap, its tc redirects and filters in the pod netns (src/net: connectTap / disconnectTap). */
  | { kind: 'network'; netns: string; veth: string }
  /** a cgroup directory made for the pod (host-cgroup.ts); `leave` is where the shim goes back to. */
  | { kind: 'cgroup'; dir: string; leave: string }
  /** the lease of the VMM's uid (jail-uid.ts): `/run/hull-uids/<uid>`. */
  | { kind: 'uid-lease'; uid: number }
  /** the port-forward plumbing: NAT rules, sysctl, the veth's address (src/net: disablePortForward). */
  | { kind: 'port-forward'; netns: string; veth: string; guestIp: string; vethAddress: string }
  /** a bare tap (a pooled VM's, in the pool's netns): removed when it is still there. */
  | { kind: 'tap'; netns: string; name: string }
  /**
   * a VM adopted from the pool (src/pool): its own state directory, whose ledger records what was
   * made for it (jail, share, uid, tap, processes) and the pod's containers; released by replaying it.
   */
  | { kind: 'pool-vm'; dir: string };

export interface LedgerEntry {
  seq: number;
  scope: string;
  resource: Resource;
  /** mountId is the mount the entry made, once known (mount entries only). */
  mountId?: number;
}

export type LedgerLog = (line: string) => void;

/** Ledger appends a sandbox's resources to its file; one per sandbox, owned by its Sandbox. */
export class Ledger {
  readonly stateDir: string;
  readonly #fd: number;
  #seq = 0;
  #closed = false;

  private constructor(stateDir: string, fd: number, seq: number) {
    this.stateDir = stateDir;
    this.#fd = fd;
    this.#seq = seq;
  }

  /** open appends to `<stateDir>/ledger` (made 0600 when missing); the state dir must exist. */
  static async open(stateDir: string): Promise<Ledger> {
    const existing = await readLedger(stateDir);
    const last = existing.reduce((max, e) => Math.max(max, e.seq), 0);
    return new Ledger(stateDir, openSync(join(stateDir, LEDGER_FILE), 'a', 0o600), last);
  }

  /** record appends `resource` before it is made; returns its sequence number. Synchronous: the line is written when this returns. */
  record(scope: string, resource: Resource): number {
    if (this.#closed) throw new HullError('failed_precondition', `The ledger of ${this.stateDir} is closed`);
    checkResource(this.stateDir, resource);
    const seq = ++this.#seq;
    writeSync(this.#fd, JSON.stringify({ seq, scope, resource }) + '\n');
    return seq;
  }

  /** recordProcess records a running process by pid and start time (a reused pid never matches). */
  async recordProcess(scope: string, pid: number): Promise<void> {
    const startTime = processStartTime(pid);
    if (startTime !== undefined) this.record(scope, { kind: 'process', pid, startTime });
  }

  /** noteMount adds the ID of the mount entry `seq` made at `target`, read from mountinfo. */
  async noteMount(seq: number, target: string): Promise<void> {
    const top = mountAt(await readMountinfo(), target);
    if (top === undefined) throw new HullError('internal', `No mount at "${target}" after mounting it`);
    writeSync(this.#fd, JSON.stringify({ made: seq, mountId: top.mountId }) + '\n');
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    closeSync(this.#fd);
  }
}

/**
 * readLedger reads `<stateDir>/ledger`; a missing file is an empty ledger. Lines that do not parse
 * or name a resource outside the state dir are skipped: replay only ever acts on what hull records.
 */
export async function readLedger(stateDir: string, log: LedgerLog = () => {}): Promise<LedgerEntry[]> {
  let text: string;
  try {
    text = await readFile(join(stateDir, LEDGER_FILE), 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw e;
  }
  if (text.length > MAX_LEDGER_BYTES) text = text.slice(0, MAX_LEDGER_BYTES);
  const entries = new Map<number, LedgerEntry>();
  for (const line of text.split('\n')) {
    if (line.trim() === '') continue;
    try {
      const value = JSON.parse(line) as Record<string, unknown>;
      if (typeof value['made'] === 'number') {
        const entry = entries.get(value['made']);
        if (entry?.resource.kind === 'mount' && Number.isSafeInteger(value['mountId'])) entry.mountId = value['mountId'] as number;
        continue;
      }
      const { seq, scope, resource } = value;
      if (!Number.isSafeInteger(seq) || typeof scope !== 'string') throw new Error('no seq or scope');
      checkResource(stateDir, resource as Resource);
      entries.set(seq as number, { seq: seq as number, scope, resource: resource as Resource });
    } catch (e) {
      log(`ledger ${stateDir}: skipped line ${JSON.stringify(line.slice(0, 200))}: ${(e as Error).message}`);
    }
  }
  return [...entries.values()].sort((a, b) => a.seq - b.seq);
}

/**
 * replayLedger releases, newest first, what the ledger of `stateDir` records: everything, or only
 * the entries of `scope` (one container). Each step logs its failure and goes on. Returns the
 * number of steps that failed (0: all released).
 */
export async function replayLedger(stateDir: string, options: { scope?: string; log?: LedgerLog } = {}): Promise<number> {
  const log = options.log ?? (() => {});
  const entries = (await readLedger(stateDir, log)).filter((e) => options.scope === undefined || e.scope === options.scope);
  let failures = 0;
  for (const entry of entries.reverse()) {
    try {
      await release(entry, stateDir, log);
    } catch (e) {
      failures++;
      log(`release ${describe(entry.resource)}: ${(e as Error).message}`);
    }
  }
  return failures;
}

async function release(entry: LedgerEntry, stateDir: string, log: LedgerLog): Promise<void> {
  const r = entry.resource;
  switch (r.kind) {
    case 'process':
      await killRecordedProcess(r.pid, r.startTime);
      return;
    case 'uid-lease':
      await releaseJailUid(stateDir, r.uid);
      return;
    case 'cgroup':
      await releaseCgroup(r.dir, r.leave);
      return;
    case 'network':
      await disconnectTap(r.netns, r.veth);
      return;
    case 'tap':
      await removeTap(r.netns, r.name);
      return;
    case 'pool-vm': {
      const failures = await replayLedger(r.dir, { log });
      if (failures > 0) throw new HullError('internal', `${failures} resources of the pooled VM could not be released`);
      return;
    }
    case 'port-forward':
      // disablePortForward needs only the netns, the veth's name and these two values.
      await disablePortForward({ netns: r.netns, iface: { name: r.veth, mac: '', mtu: 0, addresses: [] }, routes: [] }, { guestIp: r.guestIp, vethAddress: r.vethAddress, tapMac: '' });
      return;
    case 'mount': {
      const top = mountAt(await readMountinfo(), r.target);
      if (top === undefined) return;
      // Only the mount this entry made; without a noted ID (a crash right after mounting) the
      // target, a host-private path only hull mounts on, is enough.
      if (entry.mountId !== undefined && top.mountId !== entry.mountId) {
        log(`ledger: not unmounting "${r.target}": mount ${top.mountId} there is not the recorded ${entry.mountId}`);
        return;
      }
      await unmount(r.target);
      return;
    }
    case 'file':
      await unlink(r.path).catch(ignoreMissing);
      return;
    case 'status-socket': {
      const st = await lstat(r.path).catch((e: NodeJS.ErrnoException) => (e.code === 'ENOENT' ? undefined : Promise.reject(e)));
      if (st === undefined) return;
      if (!st.isSocket()) throw new HullError('internal', `Not removing "${r.path}": not a socket`);
      await unlink(r.path).catch(ignoreMissing);
      return;
    }
    case 'dir':
      await rmdir(r.path).catch(ignoreMissing);
      return;
    case 'state-dir': {
      const left = mountPointsUnder(await readMountinfo(), r.path);
      if (left.length > 0) throw new HullError('internal', `Cannot remove ${r.path}: still mounted: ${left.join(', ')}`);
      // Nothing below is mounted, so nothing below is the guest's or another file system's.
      await rm(r.path, { recursive: true, force: true });
      return;
    }
  }
}

function ignoreMissing(e: NodeJS.ErrnoException): void {
  if (e.code !== 'ENOENT') throw e;
}

function describe(r: Resource): string {
  switch (r.kind) {
    case 'process':
      return `process ${r.pid}`;
    case 'uid-lease':
      return `uid lease ${r.uid}`;
    case 'cgroup':
      return `cgroup ${r.dir}`;
    case 'network':
    case 'port-forward':
      return `${r.kind} of ${r.veth} in ${r.netns}`;
    case 'tap':
      return `tap ${r.name} in ${r.netns}`;
    case 'pool-vm':
      return `pooled VM ${r.dir}`;
    case 'mount':
      return `mount "${r.target}"`;
    default:
      return `${r.kind} "${r.path}"`;
  }
}

const isNetns = (path: unknown): boolean => typeof path === 'string' && path.startsWith('/') && posix.normalize(path) === path;
const IFNAME = /^[A-Za-z0-9_.@-]{1,15}$/;
/** POOL_VM_DIR: the name of a pooled VM's state directory (src/pool names them so). */
export const POOL_VM_DIR = /^vm-[0-9a-f]{16}$/;
const IPV4 = /^\d{1,3}(\.\d{1,3}){3}$/;

/** checkResource refuses a resource hull would not record: paths outside the state dir, odd values. */
function checkResource(stateDir: string, r: Resource): void {
  const inState = (path: unknown): boolean => typeof path === 'string' && path.startsWith('/') && posix.normalize(path) === path && isInside(stateDir, path) && path !== stateDir;
  const fail = (): never => {
    throw new HullError('invalid_argument', `Not a ledger resource of ${stateDir}: ${JSON.stringify(r).slice(0, 200)}`);
  };
  if (typeof r !== 'object' || r === null) fail();
  switch (r.kind) {
    case 'state-dir':
      if (r.path !== stateDir) fail();
      return;
    case 'dir':
    case 'file':
      if (!inState(r.path)) fail();
      return;
    case 'status-socket':
      // `<dir>/<sandbox-id>.sock`, the sandbox's own name, never inside the state dir (what the guest shares).
      if (typeof r.path !== 'string' || !isNetns(r.path) || posix.basename(r.path) !== `${posix.basename(stateDir)}.sock` || isInside(stateDir, r.path)) fail();
      return;
    case 'mount':
      if (!inState(r.target)) fail();
      return;
    case 'process':
      if (!Number.isSafeInteger(r.pid) || r.pid <= 1 || typeof r.startTime !== 'string' || !/^\d+$/.test(r.startTime)) fail();
      return;
    case 'uid-lease':
      if (!Number.isSafeInteger(r.uid) || r.uid < 1000 || r.uid > 0xfffffffe) fail();
      return;
    case 'cgroup':
      if (!isCgroupDir(r.dir) || !isCgroupDir(r.leave)) fail();
      return;
    case 'port-forward':
      if (!IPV4.test(r.guestIp) || typeof r.vethAddress !== 'string' || !/^[0-9a-fA-F.:]+\/\d{1,3}$/.test(r.vethAddress)) fail();
      if (!isNetns(r.netns) || !IFNAME.test(r.veth)) fail();
      return;
    case 'network':
      if (!isNetns(r.netns) || !IFNAME.test(r.veth)) fail();
      return;
    case 'tap':
      if (!isNetns(r.netns) || !IFNAME.test(r.name)) fail();
      return;
    case 'pool-vm':
      // Only a VM directory of a pool (POOL_VM_DIR), never this state dir or above it.
      if (!isNetns(r.dir) || !POOL_VM_DIR.test(posix.basename(r.dir)) || isInside(r.dir, stateDir)) fail();
      return;
    default:
      fail();
  }
}
