/**
 * containerd — a private containerd for tests and demos: its own config, root, state, sockets, `opt`
 * dir, CNI config and bridge, all under one directory `/run/hull-test/ctrd-<id>`. It never touches the
 * system containerd (/run/containerd/containerd.sock, /var/lib/containerd).
 *
 * What stays shared, because containerd and its shims hard-code it: `/run/containerd/s/` (shim sockets,
 * named by a hash of *our* socket path, so no clash), `/run/containerd/fifo/` (ctr's FIFOs, removed by
 * ctr) and `/run/containerd/runc/<namespace>` for `ctr run` (our namespace name is unique; CRI's runc
 * gets a root inside our directory). `stop()` removes only what carries our socket path, names or dir.
 */
import { createHash } from 'node:crypto';
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes, randomInt } from 'node:crypto';
import { closeSync, existsSync, mkdirSync, openSync, readdirSync, readFileSync, readlinkSync, rmdirSync, rmSync, writeFileSync } from 'node:fs';
import { constants } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { stringify } from 'smol-toml';
import { mountsUnder, processAlive } from '../helpers/leaks.js';
import { PAUSE_REF } from './oci-image.js';

/** RuntimeSpec is one extra entry of CRI's runtimes table (the CRI handler is its key). */
export interface RuntimeSpec {
  runtimeType: string;
  runtimePath?: string;
  /** configPath becomes `options.ConfigPath` (runtimeoptions.v1.Options on the shim's stdin). */
  configPath?: string;
  /** options are more keys of the runtime's `options` table (e.g. runc's BinaryName, Root). */
  options?: Record<string, string | boolean | number>;
  podAnnotations?: string[];
  containerAnnotations?: string[];
  privilegedWithoutHostDevices?: boolean;
}

export interface StartOptions {
  runtimes?: Record<string, RuntimeSpec>;
  /** extraPath is prepended to containerd's PATH (where e.g. the containerd-shim-hull-v2 link lives). */
  extraPath?: string;
  /** baseDir holds the per-instance directories; default /run/hull-test. Keep it short (socket paths). */
  baseDir?: string;
  /** startTimeoutMs bounds the wait for containerd to answer; default 20 s. */
  startTimeoutMs?: number;
  /** logLevel of containerd; default 'debug' (the log is only read when something fails). */
  logLevel?: 'debug' | 'info' | 'warn';
  /** configHook runs after config.toml is written and before containerd starts (e.g. `hull install` edits it). */
  configHook?: (configPath: string) => Promise<void>;
  /** ipv6 gives pods an IPv6 address too (a unique-local /64 on the test's own bridge). */
  ipv6?: boolean;
  /**
   * launcher runs containerd: its argv, then containerd's (it must exec it, keeping the pid), e.g. an
   * unshare into a mount namespace that looks like another node. Default: containerd itself.
   */
  launcher?: string[];
}

export interface CtrOptions {
  /** namespace overrides the harness's own namespace (e.g. 'k8s.io' for CRI's objects). */
  namespace?: string;
  timeoutMs?: number;
  input?: string | Buffer;
}

export interface CtrResult {
  stdout: string;
  stderr: string;
  /** code is the exit code; 128+n when ctr died of signal n (e.g. on timeout). */
  code: number;
}

/** StopReport lists what `stop()` had to clean up that a well-behaved test would have left clean. */
export interface StopReport {
  /** leakedShims are shim processes of this containerd still alive after it stopped; they were killed. */
  leakedShims: { pid: number; cmdline: string }[];
  /** killedDescendants are processes below leaked shims (containers, VMMs), killed with them. */
  killedDescendants: number[];
  /** leakedMounts were still mounted under the instance dir; they were unmounted (lazily). */
  leakedMounts: string[];
}

export interface PrivateContainerd extends AsyncDisposable {
  readonly id: string;
  readonly dir: string;
  readonly root: string;
  readonly state: string;
  /** address is containerd's gRPC socket (also CRI's): a path, dial it as `unix://<address>`. */
  readonly address: string;
  readonly ttrpcAddress: string;
  readonly namespace: string;
  readonly configPath: string;
  readonly logPath: string;
  readonly pid: number;
  /** bridge is the CNI bridge name (created by the bridge plugin on the first pod). */
  readonly bridge: string;
  readonly subnet: string;
  ctr(args: string[], opts?: CtrOptions): Promise<CtrResult>;
  logTail(lines?: number): string;
  /**
   * restart stops containerd alone (its shims keep running) and starts it again on the same config,
   * root, state and sockets. `kill: true` ends it with SIGKILL (a crash) instead of SIGTERM.
   */
  restart(opts?: { kill?: boolean }): Promise<void>;
  /** stop kills containerd, then whatever it left; idempotent (later calls return the first report). */
  stop(): Promise<StopReport>;
}

const DISABLED_SNAPSHOTTERS = ['aufs', 'btrfs', 'zfs', 'devmapper'].map((s) => `io.containerd.snapshotter.v1.${s}`);
const SHIM_SOCKET_DIR = '/run/containerd/s/';

/** startContainerd starts a private containerd and waits until it and its CRI plugin answer. */
export async function startContainerd(opts: StartOptions = {}): Promise<PrivateContainerd> {
  const baseDir = opts.baseDir ?? '/run/hull-test';
  mkdirSync(baseDir, { recursive: true, mode: 0o700 });
  const { id, dir } = makeInstanceDir(baseDir);
  const ctrd = new Instance(id, dir);
  try {
    ctrd.writeConfig(opts);
    await opts.configHook?.(ctrd.configPath);
    ctrd.spawn(opts.extraPath, opts.launcher);
    await ctrd.waitReady(opts.startTimeoutMs ?? 20_000);
    return ctrd;
  } catch (e) {
    const tail = ctrd.logTail(40);
    await ctrd.stop().catch(() => undefined);
    throw new Error(`Cannot start private containerd in "${dir}": ${(e as Error).message}\n--- containerd log (tail) ---\n${tail}`, { cause: e });
  }
}

function makeInstanceDir(baseDir: string): { id: string; dir: string } {
  for (let i = 0; i < 100; i++) {
    const id = randomBytes(3).toString('hex');
    const dir = join(baseDir, `ctrd-${id}`);
    if (existsSync(`/sys/class/net/hullt${id}`)) continue;
    try {
      mkdirSync(dir, { mode: 0o700 });
      return { id, dir };
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    }
  }
  throw new Error(`Cannot create an instance directory in "${baseDir}"`);
}

class Instance implements PrivateContainerd {
  readonly root: string;
  readonly state: string;
  readonly address: string;
  readonly ttrpcAddress: string;
  readonly namespace: string;
  readonly configPath: string;
  readonly logPath: string;
  readonly bridge: string;
  readonly subnet: string;
  #child: ChildProcess | undefined;
  #extraPath: string | undefined;
  #launcher: string[] = [];
  #stopping: Promise<StopReport> | undefined;
  readonly #killOnExit = (): void => {
    if (this.#child?.pid && this.#child.exitCode === null && this.#child.signalCode === null) this.#child.kill('SIGKILL');
  };

  constructor(readonly id: string, readonly dir: string) {
    this.root = join(dir, 'root');
    this.state = join(dir, 'state');
    this.address = join(dir, 'c.sock');
    this.ttrpcAddress = join(dir, 'c.sock.ttrpc');
    this.namespace = `hull-test-${id}`;
    this.configPath = join(dir, 'config.toml');
    this.logPath = join(dir, 'containerd.log');
    this.bridge = `hullt${id}`;
    this.subnet = pickSubnet();
  }

  get pid(): number {
    return this.#child?.pid ?? 0;
  }

  writeConfig(opts: StartOptions): void {
    const d = (name: string): string => {
      const p = join(this.dir, name);
      mkdirSync(p, { recursive: true, mode: 0o700 });
      return p;
    };
    const cniConfDir = d('cni/net.d');
    writeFileSync(join(cniConfDir, '10-hull-test.conflist'), JSON.stringify({
      cniVersion: '1.0.0',
      name: `hull-test-${this.id}`,
      plugins: [{
        type: 'bridge',
        bridge: this.bridge,
        isGateway: false,
        ipMasq: false,
        hairpinMode: false,
        ipam: {
          type: 'host-local',
          ranges: [[{ subnet: this.subnet }], ...(opts.ipv6 ? [[{ subnet: `fd89:${this.subnet.split('.')[2]}::/64` }]] : [])],
          dataDir: d('cni/ipam'),
        },
      }],
    }, null, 2));

    const runtimes: Record<string, unknown> = { runc: { runtime_type: 'io.containerd.runc.v2', options: { Root: d('runc') } } };
    for (const [name, r] of Object.entries(opts.runtimes ?? {})) {
      runtimes[name] = {
        runtime_type: r.runtimeType,
        ...(r.runtimePath ? { runtime_path: r.runtimePath } : {}),
        ...(r.podAnnotations ? { pod_annotations: r.podAnnotations } : {}),
        ...(r.containerAnnotations ? { container_annotations: r.containerAnnotations } : {}),
        ...(r.privilegedWithoutHostDevices !== undefined ? { privileged_without_host_devices: r.privilegedWithoutHostDevices } : {}),
        ...(r.configPath || r.options ? { options: { ...r.options, ...(r.configPath ? { ConfigPath: r.configPath } : {}) } } : {}),
      };
    }
    const config = {
      version: 2,
      root: d('root'),
      state: d('state'),
      disabled_plugins: DISABLED_SNAPSHOTTERS,
      grpc: { address: this.address },
      ttrpc: { address: this.ttrpcAddress },
      debug: { address: join(this.dir, 'debug.sock'), level: opts.logLevel ?? 'debug' },
      metrics: { address: '' },
      plugins: {
        'io.containerd.internal.v1.opt': { path: d('opt') },
        'io.containerd.grpc.v1.cri': {
          sandbox_image: PAUSE_REF,
          restrict_oom_score_adj: true,
          netns_mounts_under_state_dir: true,
          enable_selinux: false,
          disable_apparmor: true,
          stream_server_address: '127.0.0.1',
          stream_server_port: '0',
          containerd: { snapshotter: 'overlayfs', default_runtime_name: 'runc', runtimes },
          cni: { bin_dir: '/usr/lib/cni', conf_dir: cniConfDir, max_conf_num: 1 },
        },
      },
    };
    writeFileSync(this.configPath, stringify(config));
  }

  spawn(extraPath: string | undefined, launcher: string[] = []): void {
    this.#extraPath = extraPath;
    this.#launcher = launcher;
    const log = openSync(this.logPath, 'a');
    try {
      const path = [extraPath, process.env['PATH'] ?? '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'].filter(Boolean).join(':');
      const argv = [...launcher, 'containerd', '--config', this.configPath];
      this.#child = spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', log, log], env: { ...process.env, PATH: path }, cwd: this.dir });
    } finally {
      closeSync(log);
    }
    this.#child.on('error', () => undefined); // surfaces as "exited" in waitReady
    this.#child.unref();
    process.on('exit', this.#killOnExit);
  }

  async waitReady(timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    let delay = 25;
    let last = '';
    for (;;) {
      if (this.#exited()) throw new Error(`containerd exited (code ${this.#child?.exitCode}, signal ${this.#child?.signalCode})`);
      if (existsSync(this.address)) {
        const r = await this.ctr(['version'], { timeoutMs: 2_000 });
        if (r.code === 0) break;
        last = r.stderr.trim();
      }
      if (Date.now() > deadline) throw new Error(`containerd did not answer within ${timeoutMs} ms: ${last}`);
      await sleep(delay);
      delay = Math.min(delay * 2, 500);
    }
    const plugins = await this.ctr(['plugins', 'ls']);
    const cri = plugins.stdout.split('\n').find((l) => /\bio\.containerd\.grpc\.v1\s+cri\b/.test(l));
    if (!cri || !/\sok\s*$/.test(cri)) throw new Error(`the CRI plugin did not load: ${cri ?? 'not listed'}`);
  }

  #exited(): boolean {
    return !this.#child?.pid || this.#child.exitCode !== null || this.#child.signalCode !== null;
  }

  ctr(args: string[], opts: CtrOptions = {}): Promise<CtrResult> {
    return new Promise((resolve) => {
      const child = spawn('ctr', ['-a', this.address, '-n', opts.namespace ?? this.namespace, ...args], {
        stdio: [opts.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'],
        timeout: opts.timeoutMs ?? 60_000,
        killSignal: 'SIGKILL',
      });
      const out: Buffer[] = [];
      const err: Buffer[] = [];
      child.stdout?.on('data', (c: Buffer) => out.push(c));
      child.stderr?.on('data', (c: Buffer) => err.push(c));
      if (opts.input !== undefined) child.stdin?.end(opts.input);
      child.on('error', (e) => err.push(Buffer.from(String(e))));
      child.on('close', (code, signal) => resolve({
        stdout: Buffer.concat(out).toString('utf8'),
        stderr: Buffer.concat(err).toString('utf8'),
        code: code ?? 128 + signalNumber(signal),
      }));
    });
  }

  logTail(lines = 50): string {
    try {
      return readFileSync(this.logPath, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
    } catch {
      return '(no log)';
    }
  }

  async restart(opts: { kill?: boolean } = {}): Promise<void> {
    await this.#killContainerd(opts.kill ? 'SIGKILL' : 'SIGTERM');
    this.spawn(this.#extraPath, this.#launcher);
    await this.waitReady(20_000);
  }

  stop(): Promise<StopReport> {
    this.#stopping ??= this.#stop();
    return this.#stopping;
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.stop().then(() => undefined);
  }

  async #stop(): Promise<StopReport> {
    const report: StopReport = { leakedShims: [], killedDescendants: [], leakedMounts: [] };
    await this.#killContainerd();

    // Shims that were exiting when containerd went down get a moment to finish on their own.
    let shims = findShims(this.address);
    for (let i = 0; i < 20 && shims.length > 0; i++) {
      await sleep(50);
      shims = findShims(this.address);
    }
    for (const shim of shims) {
      report.leakedShims.push(shim);
      const socket = shimSocket(shim.pid);
      const below = descendants(shim.pid);
      for (const pid of below) killPid(pid);
      report.killedDescendants.push(...below);
      killPid(shim.pid);
      await waitGone([shim.pid, ...below], 5_000);
      if (socket?.startsWith(SHIM_SOCKET_DIR)) rmSync(socket, { force: true });
    }

    report.leakedMounts = mountsUnder(this.dir);
    for (const m of [...report.leakedMounts].sort((a, b) => b.length - a.length)) {
      await runQuiet('umount', ['-l', m]);
    }
    if (existsSync(`/sys/class/net/${this.bridge}`)) await runQuiet('ip', ['link', 'del', 'dev', this.bridge]);
    // runc's state of killed `ctr` containers; the directory carries our unique namespace name.
    rmSync(`/run/containerd/runc/${this.namespace}`, { recursive: true, force: true });
    // Cgroups of killed containers: those named in our bundles, and our namespace's tree (ctr's default).
    await removeCgroups([...bundleCgroups(this.state), `/${this.namespace}`]);

    for (let i = 0; ; i++) {
      try {
        rmSync(this.dir, { recursive: true, force: true });
        break;
      } catch (e) {
        if (i >= 10) throw e;
        await sleep(100);
      }
    }
    return report;
  }

  async #killContainerd(signal: 'SIGTERM' | 'SIGKILL' = 'SIGTERM'): Promise<void> {
    const child = this.#child;
    process.removeListener('exit', this.#killOnExit);
    if (!child || this.#exited()) return;
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    child.kill(signal);
    const grace = new AbortController();
    const timedOut = await Promise.race([exited.then(() => false), sleep(5_000, true, { signal: grace.signal }).catch(() => false)]);
    grace.abort();
    if (timedOut) {
      child.kill('SIGKILL');
      await exited;
    }
  }
}

/** pickSubnet picks a random 10.89.x.0/24 that no address of this host's network namespace is in. */
function pickSubnet(): string {
  let used = '';
  try {
    used = readFileSync('/proc/net/fib_trie', 'utf8');
  } catch {
    // Not readable: any /24 in 10.89/16 will do; the bridge has no host address anyway.
  }
  for (let i = 0; i < 50; i++) {
    const x = randomInt(0, 256);
    if (!used.includes(`10.89.${x}.`)) return `10.89.${x}.0/24`;
  }
  return `10.89.${randomInt(0, 256)}.0/24`;
}

function signalNumber(signal: NodeJS.Signals | null): number {
  return (signal && constants.signals[signal]) || 1;
}

function safeReaddir(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
}

function readProc(pid: number | string, file: string): string | undefined {
  try {
    return readFileSync(`/proc/${pid}/${file}`, 'utf8');
  } catch {
    return undefined;
  }
}

/** findShims lists live processes whose argv has `-address <address>`: shims of that containerd only. */
export function findShims(address: string): { pid: number; cmdline: string }[] {
  const shims: { pid: number; cmdline: string }[] = [];
  for (const entry of safeReaddir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const argv = readProc(entry, 'cmdline')?.split('\0') ?? [];
    const at = argv.indexOf('-address');
    if (at >= 0 && argv[at + 1] === address && processAlive(Number(entry))) shims.push({ pid: Number(entry), cmdline: argv.join(' ').trim() });
  }
  return shims;
}

function descendants(root: number): number[] {
  const children = new Map<number, number[]>();
  for (const entry of safeReaddir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const stat = readProc(entry, 'stat');
    if (!stat) continue;
    const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
    children.set(ppid, [...(children.get(ppid) ?? []), Number(entry)]);
  }
  const out: number[] = [];
  const queue = [root];
  while (queue.length > 0) {
    for (const c of children.get(queue.shift()!) ?? []) {
      out.push(c);
      queue.push(c);
    }
  }
  return out;
}

/** shimSocket reads the socket a shim announced in `<bundle>/address` (its cwd). */
/**
 * shimSocket is where a shim listens: containerd names it
 * /run/containerd/s/sha256(<address>/<namespace>/<group id>), so it follows from the shim's
 * own -address/-namespace/-id flags, or from the address file in its working directory.
 */
function shimSocket(pid: number): string | undefined {
  try {
    const bundle = readlinkSync(`/proc/${pid}/cwd`);
    return readFileSync(join(bundle, 'address'), 'utf8').trim().replace(/^unix:\/\//, '');
  } catch {
    // A shim that changed directory: derive it from the flags.
  }
  try {
    const argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
    const flag = (name: string): string | undefined => argv[argv.indexOf(name) + 1];
    const [address, ns, id] = [flag('-address'), flag('-namespace'), flag('-id')];
    const socket = flag('-socket');
    if (socket) return socket;
    return address && ns && id ? join(SHIM_SOCKET_DIR, createHash('sha256').update(`${address}/${ns}/${id}`).digest('hex')) : undefined;
  } catch {
    return undefined;
  }
}

function killPid(pid: number): void {
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    // Already gone.
  }
}

async function waitGone(pids: number[], timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (pids.some(processAlive) && Date.now() < deadline) await sleep(20);
}

/** bundleCgroups reads `linux.cgroupsPath` (cgroupfs form) from every task bundle left in `state`. */
function bundleCgroups(state: string): string[] {
  const tasks = join(state, 'io.containerd.runtime.v2.task');
  const paths: string[] = [];
  for (const ns of safeReaddir(tasks)) {
    for (const id of safeReaddir(join(tasks, ns))) {
      try {
        const spec = JSON.parse(readFileSync(join(tasks, ns, id, 'config.json'), 'utf8')) as { linux?: { cgroupsPath?: string } };
        const path = spec.linux?.cgroupsPath ?? '';
        if (path.startsWith('/') && !path.includes(':') && !path.split('/').includes('..')) paths.push(path);
      } catch {
        // No spec: nothing to clean.
      }
    }
  }
  return paths;
}

/** removeCgroups removes these cgroups (and their empty children) in every mounted hierarchy. */
async function removeCgroups(paths: string[]): Promise<void> {
  const rmTree = (dir: string): boolean => {
    for (const entry of safeReaddir(dir)) {
      const child = join(dir, entry);
      if (existsSync(join(child, 'cgroup.procs'))) rmTree(child);
    }
    try {
      rmdirSync(dir);
      return true;
    } catch (e) {
      return (e as NodeJS.ErrnoException).code === 'ENOENT';
    }
  };
  for (let attempt = 0; attempt < 10; attempt++) {
    let busy = false;
    for (const hierarchy of safeReaddir('/sys/fs/cgroup')) {
      for (const path of paths) if (!rmTree(join('/sys/fs/cgroup', hierarchy, path))) busy = true;
    }
    if (!busy) return;
    await sleep(50); // A killed task leaves its cgroup a moment after it is reaped.
  }
}

function runQuiet(cmd: string, args: string[]): Promise<number> {
  return new Promise((resolve) => {
    const child = spawn(cmd, args, { stdio: 'ignore' });
    child.on('error', () => resolve(-1));
    child.on('close', (code) => resolve(code ?? -1));
  });
}
