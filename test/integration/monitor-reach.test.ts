/**
 * What `hull monitor` can reach, attacked from its own identity, through a real private containerd
 * and a CRI hull pod. The identity is read from deploy/daemonset.yaml (the hull-monitor container:
 * runAsUser, runAsGroup, fsGroup, capabilities, allowPrivilegeEscalation, its hostPath mounts) and
 * reproduced with setpriv (uid, gid, groups, inheritable and bounding capabilities, no_new_privs) in
 * a mount namespace of its own where hull's host directories that the container does not mount are
 * hidden under an empty tmpfs and those it mounts are read-only. From there every request to every
 * shim socket is tried: stopping the VM, a console, the agent's state, and GET/POST/PUT/DELETE on the
 * status paths. Only GET /status and GET /metrics on the read-only status socket may answer; the
 * pod's VM keeps running. The real `hull monitor` under that identity serves the pod's series.
 * Then the monitor on a non-loopback address (in network namespaces of the test's own): without
 * a token it refuses to start; with one, a peer without or with a wrong token gets 401 and no
 * tenant label, the right token gets the metrics.
 */
import assert from 'node:assert/strict';
import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { appendFileSync, chmodSync, chownSync, copyFileSync, existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { currentGuestImage } from '../../src/guest/index.js';
import { DEFAULT_CONFIG } from '../../src/config/index.js';
import { startContainerd, type PrivateContainerd } from '../harness/containerd.js';
import { prepareHullRuntime, stopAndAssertClean } from '../harness/hull-runtime.js';
import { BUSYBOX_REF, ensureTestImages } from '../harness/oci-image.js';
import { CriClient, containerConfig, podConfig, type PodSandboxConfig } from '../harness/cri.js';
import { parsePromText } from '../harness/prom-text.js';
import { processAlive } from '../helpers/leaks.js';

const HULL = fileURLToPath(new URL('../../../bin/hull', import.meta.url));
const DAEMONSET = fileURLToPath(new URL('../../../deploy/daemonset.yaml', import.meta.url));
const hullRuntime = prepareHullRuntime({ name: 'reach' });
const { runRoot, statusDir } = hullRuntime;
// containerd's default capabilities of a container that names none (oci/spec.go, defaultCaps).
const CONTAINERD_DEFAULT_CAPS = ['chown', 'dac_override', 'fsetid', 'fowner', 'mknod', 'net_raw', 'setgid', 'setuid', 'setfcap', 'setpcap', 'net_bind_service', 'sys_chroot', 'kill', 'audit_write'];

type Obj = Record<string, any>;

/** MonitorIdentity: who the DaemonSet's hull-monitor container runs as, and what it mounts (host paths). */
interface MonitorIdentity {
  uid: number;
  gid: number;
  groups: number[];
  caps: string[];
  noNewPrivs: boolean;
  hostPaths: string[];
  hostPID: boolean;
}

/** monitorIdentity reads the hull-monitor container of deploy/daemonset.yaml through kubectl, offline. */
function monitorIdentity(): MonitorIdentity {
  const out = execFileSync('kubectl', ['label', '--local', '-f', DAEMONSET, '-o', 'json', 'hull.dev/reach-test-'], { encoding: 'utf8', env: { ...process.env, KUBECONFIG: '/dev/null' } });
  const objects = JSON.parse(`[${out.replace(/}\s*{/g, '},{')}]`) as Obj[];
  const pods = objects.filter((o) => o['kind'] === 'DaemonSet').map((o) => o['spec'].template.spec as Obj);
  const pod = pods.find((p) => (p['containers'] as Obj[]).some((c) => c['name'] === 'hull-monitor'));
  assert.ok(pod, 'no DaemonSet with a hull-monitor container');
  const container = (pod['containers'] as Obj[]).find((c) => c['name'] === 'hull-monitor')!;
  const podSc: Obj = pod['securityContext'] ?? {};
  const sc: Obj = container['securityContext'] ?? {};
  const drop: string[] = (sc['capabilities']?.drop ?? []).map((c: string) => c.toLowerCase().replace(/^cap_/, ''));
  const add: string[] = (sc['capabilities']?.add ?? []).map((c: string) => c.toLowerCase().replace(/^cap_/, ''));
  const base = drop.includes('all') ? [] : CONTAINERD_DEFAULT_CAPS.filter((c) => !drop.includes(c));
  const volumes = new Map<string, Obj>((pod['volumes'] ?? []).map((v: Obj) => [v['name'], v]));
  const gid = sc['runAsGroup'] ?? podSc['runAsGroup'] ?? 0;
  return {
    uid: sc['runAsUser'] ?? podSc['runAsUser'] ?? 0,
    gid,
    groups: [...new Set([...(podSc['fsGroup'] !== undefined ? [podSc['fsGroup']] : []), ...(podSc['supplementalGroups'] ?? [])])].filter((g) => g !== gid),
    caps: sc['privileged'] === true ? ['all'] : [...new Set([...base, ...add])],
    noNewPrivs: sc['allowPrivilegeEscalation'] === false,
    hostPaths: (container['volumeMounts'] ?? []).flatMap((m: Obj) => (volumes.get(m['name'])?.hostPath ? [volumes.get(m['name'])!.hostPath.path as string] : [])),
    hostPID: pod['hostPID'] === true,
  };
}

/**
 * asMonitor is the argv that runs `argv` as the DaemonSet's monitor: its own mount namespace (each of
 * hull's host directories, as this test's runtime places them, hidden unless the container mounts
 * it, then read-only), then setpriv to its uid, gid, groups and capabilities.
 */
function asMonitor(id: MonitorIdentity, paths: Array<[hostDefault: string, here: string]>, argv: string[]): string[] {
  const script = ['set -eu'];
  for (const [hostDefault, here] of paths) {
    if (id.hostPaths.includes(hostDefault)) script.push(`mount --bind '${here}' '${here}'`, `mount -o remount,bind,ro '${here}'`);
    else script.push(`mount -t tmpfs -o mode=0755,size=64k hull-hidden '${here}'`);
  }
  const caps = id.caps.length === 0 ? '-all' : id.caps[0] === 'all' ? '+all' : `-all,${id.caps.map((c) => `+${c}`).join(',')}`;
  const setpriv = ['setpriv', `--reuid=${id.uid}`, `--regid=${id.gid}`, id.groups.length ? `--groups=${id.groups.join(',')}` : '--clear-groups', `--inh-caps=${caps}`, `--bounding-set=${caps}`, ...(id.noNewPrivs ? ['--no-new-privs'] : []), '--'];
  script.push('exec "$@"');
  return ['unshare', '--mount', '--propagation', 'private', '--', 'sh', '-c', script.join('\n'), 'as-monitor', ...setpriv, ...argv];
}

/** The attacker: every request on every socket named in argv[1] (JSON), each result as JSON on stdout. */
const ATTACKER = `
const http = require('node:http');
const sockets = JSON.parse(process.argv[1]);
const tries = [
  ['POST', '/vm/stop', {}], ['POST', '/console', { connection: 'Upgrade', upgrade: 'hull-console' }], ['GET', '/agent', {}],
  ['POST', '/status', {}], ['PUT', '/metrics', {}], ['DELETE', '/metrics', {}], ['POST', '/metrics', {}],
  ['GET', '/metrics', { connection: 'Upgrade', upgrade: 'hull-console' }], ['GET', '/status', {}], ['GET', '/metrics', {}],
];
const one = (socketPath, method, path, headers) => new Promise((resolve) => {
  const req = http.request({ socketPath, method, path, headers: { host: 'hull', ...headers }, agent: false, timeout: 60000 }, (res) => {
    let body = '';
    res.setEncoding('utf8').on('data', (c) => (body += c)).on('end', () => resolve({ status: res.statusCode, body }));
  });
  req.on('upgrade', (res, socket) => { socket.destroy(); resolve({ status: res.statusCode, upgraded: true }); });
  req.on('timeout', () => req.destroy(new Error('timeout')));
  req.on('error', (e) => resolve({ error: e.code || e.message }));
  req.end();
});
(async () => {
  const out = [];
  for (const s of sockets) for (const [method, path, headers] of tries) out.push({ socket: s, method, path, upgrade: Boolean(headers.upgrade), ...(await one(s, method, path, headers)) });
  const status = require('node:fs').readFileSync('/proc/self/status', 'utf8');
  const field = (k) => status.split('\\n').find((l) => l.startsWith(k + ':')).slice(k.length + 1).trim();
  process.stdout.write(JSON.stringify({ self: { uid: field('Uid'), gid: field('Gid'), groups: field('Groups'), capEff: field('CapEff'), capBnd: field('CapBnd'), noNewPrivs: field('NoNewPrivs') }, attempts: out }));
})();
`;

interface Attempt {
  socket: string;
  method: string;
  path: string;
  upgrade: boolean;
  status?: number;
  body?: string;
  upgraded?: boolean;
  error?: string;
}

function run(argv: string[], options: { timeoutMs?: number } = {}): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(argv[0]!, argv.slice(1), { timeout: options.timeoutMs ?? 600_000, maxBuffer: 64 << 20 }, (e, stdout, stderr) => resolve({ code: e ? (typeof e.code === 'number' ? e.code : null) : 0, stdout: String(stdout), stderr: String(stderr) }));
  });
}

let ctrd: PrivateContainerd;
let cri: CriClient;
let identity: MonitorIdentity;
let pod: PodSandboxConfig;
let podId = '';
let app = '';
// confDir: a copy of the runtime's config where the monitor's identity can read it (the node's /etc/hull).
const confDir = mkdtempSync(join(tmpdir(), 'hull-reach-conf-'));
const confPath = join(confDir, 'config.toml');
const started: ChildProcess[] = [];
const netnsMade: string[] = [];

/** hullPaths maps each of hull's host directories of the DaemonSet to this test's. */
function hullPaths(): Array<[string, string]> {
  return [[DEFAULT_CONFIG.runRoot, runRoot], [DEFAULT_CONFIG.statusDir, statusDir], ['/etc/hull', confDir]];
}

before(async () => {
  assert.ok(await currentGuestImage(), 'no guest image: run `make image` first');
  identity = monitorIdentity();
  ctrd = await startContainerd({ runtimes: hullRuntime.runtimes, extraPath: hullRuntime.shimDir });
  await ensureTestImages(ctrd);
  cri = await CriClient.connect(ctrd.address, { deadlineMs: 120_000 });
  pod = podConfig({ name: 'reach', namespace: 'tenant-secret-ns' });
  podId = await cri.runPodSandbox(pod, 'hull');
  app = await cri.createContainer(podId, containerConfig({ name: 'app', image: BUSYBOX_REF, command: ['sleep', '3600'] }), pod);
  await cri.startContainer(app);
  chmodSync(confDir, 0o755);
  copyFileSync(hullRuntime.configPath, confPath);
  chmodSync(confPath, 0o644);
});

after(async () => {
  for (const child of started) {
    if (child.pid && processAlive(child.pid)) {
      child.kill('SIGTERM');
      await new Promise((resolve) => child.once('exit', resolve));
    }
  }
  if (podId) {
    await cri.stopPodSandbox(podId);
    await cri.removePodSandbox(podId);
  }
  cri?.close();
  for (const ns of netnsMade) execFileSync('ip', ['netns', 'delete', ns]);
  rmSync(confDir, { recursive: true, force: true });
  await stopAndAssertClean(ctrd, hullRuntime);
});

describe('the monitor\'s identity against the shim sockets of a running pod', () => {
  it('cannot stop the VM, open a console or call the agent on any shim socket; reads status and metrics only', async (t) => {
    t.diagnostic(`monitor identity from deploy/daemonset.yaml: ${JSON.stringify(identity)}`);
    const debugSocket = join(runRoot, podId, 'debug.sock');
    const statusSockets = readdirSync(statusDir).map((n) => join(statusDir, n));
    assert.ok(existsSync(debugSocket));
    assert.deepEqual(statusSockets, [join(statusDir, `${podId}.sock`)], 'the shim serves its status socket in status_dir');
    const sockets = [debugSocket, ...statusSockets];
    // Twice: with the identity alone (hull's directories as the host has them), and with its mounts too.
    for (const mounts of [false, true]) {
      const argv = asMonitor(identity, mounts ? hullPaths() : [], [process.execPath, '-e', ATTACKER, JSON.stringify(sockets)]);
      const r = await run(argv);
      assert.equal(r.code, 0, r.stderr);
      const { self, attempts } = JSON.parse(r.stdout) as { self: Record<string, string>; attempts: Attempt[] };
      t.diagnostic(`attacker: ${JSON.stringify(self)}`);
      // The attacker ran as the manifest says: its uid and gid everywhere, its capabilities only.
      assert.equal(self['uid'], Array(4).fill(identity.uid).join('\t'));
      assert.equal(self['gid'], Array(4).fill(identity.gid).join('\t'));
      if (identity.caps.length === 0) assert.deepEqual([self['capEff'], self['capBnd']], ['0000000000000000', '0000000000000000']);
      t.diagnostic(`${mounts ? 'identity and mounts' : 'identity only'}: ${attempts.map((a) => `${a.method} ${a.path}${a.upgrade ? ' (upgrade)' : ''} on ${a.socket === debugSocket ? 'debug.sock' : 'the status socket'}: ${a.error ?? a.status}${a.upgraded ? ' upgraded' : ''}`).join('; ')}`);
      for (const a of attempts) {
        const what = `${mounts ? '[mounts] ' : ''}${a.method} ${a.path} on ${a.socket}: ${JSON.stringify(a).slice(0, 300)}`;
        assert.ok(!a.upgraded, `upgraded: ${what}`);
        if (a.socket === debugSocket) {
          assert.ok(a.error === 'EACCES' || a.error === 'ENOENT', `the debug socket answered: ${what}`);
          continue;
        }
        const reads = a.method === 'GET' && (a.path === '/status' || a.path === '/metrics') && !a.upgrade;
        if (!reads) {
          assert.ok(a.status === 404 || a.status === 405, `not refused: ${what}`);
          continue;
        }
        assert.equal(a.status, 200, what);
        const status = JSON.parse(a.body!) as { sandboxId: string; pod: { name: string }; guest?: unknown };
        assert.equal(status.sandboxId, podId);
        assert.equal(status.pod.name, 'reach');
        if (a.path === '/metrics') assert.ok(status.guest, 'GET /metrics carries the guest stats');
      }
      const reads = attempts.filter((a) => a.status === 200);
      assert.deepEqual(reads.map((a) => `${a.method} ${a.path}`).sort(), ['GET /metrics', 'GET /status'], 'GET /status and GET /metrics answered on the status socket');
    }
    // The VM runs on: an exec answers.
    const alive = await cri.execSync(app, ['echo', 'alive'], 60);
    assert.equal(alive.stdout.toString().trim(), 'alive');
  });

  it('is enough for hull monitor to serve the pod with its labels', async () => {
    const argv = asMonitor(identity, hullPaths(), [process.execPath, HULL, 'monitor', '--config', confPath, '--listen', '127.0.0.1:0']);
    const monitor = spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', 'ignore', 'pipe'] });
    started.push(monitor);
    const url = await servingUrl(monitor);
    const families = parsePromText(await (await fetch(url, { signal: AbortSignal.timeout(60_000) })).text());
    const up = families.get('hull_monitor_shim_up')!.samples.find((s) => s.labels['sandbox_id'] === podId);
    assert.equal(up?.value, 1);
    const vcpus = families.get('hull_sandbox_vcpus')!.samples.find((s) => s.labels['sandbox_id'] === podId);
    assert.equal(vcpus?.labels['pod_namespace'], 'tenant-secret-ns');
    assert.equal(families.get('hull_guest_up')!.samples.find((s) => s.labels['sandbox_id'] === podId)?.value, 1);
  });
});

/** servingUrl waits for a monitor's "serving /metrics on HOST:PORT" line; rejects when it exits first. */
function servingUrl(monitor: ChildProcess): Promise<string> {
  let log = '';
  return new Promise<string>((resolve, reject) => {
    monitor.stderr!.setEncoding('utf8').on('data', (chunk: string) => {
      log += chunk;
      const m = /serving \/metrics on ([\d.]+:\d+)/.exec(log);
      if (m) resolve(`http://${m[1]}/metrics`);
    });
    monitor.once('exit', (code) => reject(new Error(`hull monitor exited (${code}): ${log}`)));
  });
}


/** The client: GET url with each Authorization header of argv[2] (JSON; null for none), each answer as JSON on stdout. */
const CLIENT = `
(async () => {
  const out = [];
  for (const authorization of JSON.parse(process.argv[2])) {
    const res = await fetch(process.argv[1], { headers: authorization ? { authorization } : {}, signal: AbortSignal.timeout(60000) });
    out.push({ status: res.status, body: await res.text() });
  }
  process.stdout.write(JSON.stringify(out));
})();
`;

describe('hull monitor beyond loopback', () => {
  // Two network namespaces of the test's own, joined by a veth pair: the monitor's and a peer's.
  const monitorNs = `hullmonA${process.pid}`;
  const peerNs = `hullmonB${process.pid}`;
  const address = '192.0.2.1';

  before(() => {
    for (const ns of [monitorNs, peerNs]) {
      execFileSync('ip', ['netns', 'add', ns]);
      netnsMade.push(ns);
      execFileSync('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
    }
    execFileSync('ip', ['-n', monitorNs, 'link', 'add', 'hm0', 'type', 'veth', 'peer', 'name', 'hm1', 'netns', peerNs]);
    execFileSync('ip', ['-n', monitorNs, 'addr', 'add', `${address}/24`, 'dev', 'hm0']);
    execFileSync('ip', ['-n', peerNs, 'addr', 'add', '192.0.2.2/24', 'dev', 'hm1']);
    execFileSync('ip', ['-n', monitorNs, 'link', 'set', 'hm0', 'up']);
    execFileSync('ip', ['-n', peerNs, 'link', 'set', 'hm1', 'up']);
  });

  it('refuses to start on a non-loopback address without a token, with a clear error', async () => {
    for (const listen of [`${address}:8090`, '0.0.0.0:8090']) {
      const r = await run(['ip', 'netns', 'exec', monitorNs, ...asMonitor(identity, hullPaths(), [process.execPath, HULL, 'monitor', '--config', confPath, '--listen', listen])], { timeoutMs: 60_000 });
      assert.notEqual(r.code, 0, `hull monitor started on ${listen}: ${r.stderr}`);
      assert.match(r.stderr, new RegExp(`Refusing to serve /metrics on "${listen.split(':')[0]!.replace(/\./g, '\\.')}" without authentication`));
    }
  });

  it('with a token: 401 and no tenant label without it or with a wrong one, the metrics with it', async (t) => {
    // As the DaemonSet mounts its Secret: root:<fsGroup> 0440. The config names the file.
    const token = randomBytes(24).toString('base64url');
    const tokenFile = join(confDir, 'token');
    writeFileSync(tokenFile, `${token}\n`);
    chownSync(tokenFile, 0, identity.groups[0] ?? identity.gid);
    chmodSync(tokenFile, 0o440);
    const authConf = join(confDir, 'auth.toml');
    copyFileSync(confPath, authConf);
    appendFileSync(authConf, `monitor_listen = "${address}:8090"\nmonitor_token_file = "${tokenFile}"\n`);
    chmodSync(authConf, 0o644);
    const argv = ['ip', 'netns', 'exec', monitorNs, ...asMonitor(identity, hullPaths(), [process.execPath, HULL, 'monitor', '--config', authConf])];
    const monitor = spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', 'ignore', 'pipe'] });
    started.push(monitor);
    const url = await servingUrl(monitor);
    assert.equal(url, `http://${address}:8090/metrics`);
    const r = await run(['ip', 'netns', 'exec', peerNs, process.execPath, '-e', CLIENT, url, JSON.stringify([null, 'Bearer wrong-token-0123456789abcdefgh', `Bearer ${token}x`, `Basic ${Buffer.from(`prometheus:${token}`).toString('base64')}`, `Bearer ${token}`])]);
    assert.equal(r.code, 0, r.stderr);
    const answers = JSON.parse(r.stdout) as Array<{ status: number; body: string }>;
    t.diagnostic(`from ${peerNs}: ${answers.map((a) => `${a.status} (${a.body.length} bytes)`).join(', ')}`);
    const tenant = [podId, pod.metadata.uid, pod.metadata.name, pod.metadata.namespace];
    for (const a of answers.slice(0, 4)) {
      assert.equal(a.status, 401);
      for (const label of tenant) assert.ok(!a.body.includes(label), `a 401 carries "${label}"`);
      assert.doesNotMatch(a.body, /hull_/);
    }
    const ok = answers[4]!;
    assert.equal(ok.status, 200);
    const vcpus = parsePromText(ok.body).get('hull_sandbox_vcpus')!.samples.find((s) => s.labels['sandbox_id'] === podId);
    assert.deepEqual([vcpus?.labels['pod_namespace'], vcpus?.labels['pod_name']], [pod.metadata.namespace, pod.metadata.name]);
  });
});
