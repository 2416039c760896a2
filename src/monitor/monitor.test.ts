import assert from 'node:assert/strict';
import { chmodSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { parsePromText } from '../../test/harness/prom-text.js';
import { createLogger } from '../shim/log.js';
import type { SandboxStatus } from '../shim/sandbox-status.js';
import { AGENT_RPC_BUCKETS } from '../sandbox/index.js';
import { bearerCheck, checkListen, checkStatus, getFromShim, isLoopback, listSandboxDirs, listStatusSockets, Monitor, NO_STATUS_SOCKET, readStatus, readToken, sandboxRegistry } from './index.js';

function status(id: string, pod = { namespace: 'default', name: `pod-${id}`, uid: `uid-${id}` }): SandboxStatus {
  const proc = { pid: 10, cpuSeconds: 1.5, rssBytes: 4096, pssBytes: 2048, threads: 3, openFds: 9 };
  return {
    version: 1,
    sandboxId: id,
    pod,
    state: 'running',
    createdAt: 1_700_000_000_000,
    vcpus: 1,
    memoryMiB: 2048,
    containers: [id, 'app'],
    startup: [{ name: 'vmm', ms: 50 }, { name: 'agent', ms: 70 }],
    host: { shim: { ...proc, pid: 11 }, qemu: proc },
    guest: {
      meminfoBytes: { MemTotal: 2_000_000_000, MemFree: 1_000_000_000 },
      cpuSeconds: { user: 1, nice: 0, system: 0.5, idle: 100, iowait: 0, irq: 0, softirq: 0, steal: 0 },
      contextSwitches: 5, forks: 6, procsRunning: 1, procsBlocked: 0,
      load: { '1m': 0.5, '5m': 0.1, '15m': 0 },
      tasks: 80,
      network: [{ interface: 'eth0', rxBytes: 1, rxPackets: 2, rxErrors: 0, rxDropped: 0, txBytes: 3, txPackets: 4, txErrors: 0, txDropped: 0 }],
      disks: [{ device: 'vda', reads: 1, readBytes: 512, writes: 2, writtenBytes: 1024, ioSeconds: 0.01 }],
    },
    agentRpc: [{ method: 'statsContainer', counts: AGENT_RPC_BUCKETS.map((_, i) => (i < 3 ? 1 : 2)), count: 3, sumSeconds: 0.4, errors: 1 }],
  };
}

const quiet = createLogger(() => {}, {}, 'error');
const base = mkdtempSync(join(tmpdir(), 'hull-monitor-test-'));
after(() => rmSync(base, { recursive: true, force: true }));

/** serve makes `handler` listen on the unix socket `path` until the tests end. */
async function serve(path: string, handler: Parameters<typeof createServer>[1]): Promise<Server> {
  const server = createServer(handler!);
  await new Promise<void>((resolve) => server.listen(path, resolve));
  after(() => new Promise<void>((resolve) => (server.closeAllConnections(), server.close(() => resolve()))));
  return server;
}

/** sandboxDir makes `<runRoot>/<id>/` as the shim does (0700, a ledger) with a debug socket served by `handler`. */
async function sandboxDir(runRoot: string, id: string, handler: Parameters<typeof createServer>[1]): Promise<Server> {
  const dir = join(runRoot, id);
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  writeFileSync(join(dir, 'ledger'), '');
  return serve(join(dir, 'debug.sock'), handler);
}

/** statusSocket makes `<statusDir>/<id>.sock` as the shim does, served by `handler`. */
async function statusSocket(statusDir: string, id: string, handler: Parameters<typeof createServer>[1]): Promise<Server> {
  mkdirSync(statusDir, { recursive: true, mode: 0o750 });
  return serve(join(statusDir, `${id}.sock`), handler);
}

const json = (body: unknown) => (_req: unknown, res: import('node:http').ServerResponse) => void res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(body));

describe('checkStatus()', () => {
  it('keeps a valid status and drops unknown fields', () => {
    const s = status('a');
    assert.deepEqual(checkStatus(JSON.parse(JSON.stringify({ ...s, extra: 'x' })), 'a'), s);
  });
  it('refuses a status for another sandbox, of another version, or with bad values', () => {
    const cases: Array<[unknown, RegExp]> = [
      [status('b'), /for sandbox "b", not "a"/],
      [{ ...status('a'), version: 2 }, /status version 2/],
      [{ ...status('a'), vcpus: -1 }, /vcpus is not a non-negative number/],
      [{ ...status('a'), memoryMiB: '2048' }, /memoryMiB/],
      [{ ...status('a'), pod: { namespace: 'a\nb', name: '', uid: '' } }, /pod.namespace/],
      [{ ...status('a'), pod: { namespace: 'x'.repeat(254), name: '', uid: '' } }, /pod.namespace/],
      [{ ...status('a'), containers: Array.from({ length: 1025 }, (_, i) => `c${i}`) }, /containers has 1025 entries/],
      [{ ...status('a'), host: { shim: null, qemu: { pid: 1, cpuSeconds: Infinity } } }, /host.qemu.cpuSeconds/],
      [{ ...status('a'), startup: [{ name: 'boot}', ms: 1 }] }, /not a start phase/],
      [{ ...status('a'), agentRpc: [{ ...status('a').agentRpc![0], counts: [5, 1, ...AGENT_RPC_BUCKETS.slice(2).map(() => 1)] }] }, /not cumulative/],
      [{ ...status('a'), guest: { ...status('a').guest, network: [{ ...status('a').guest!.network[0], interface: 'eth0"}' }] } }, /interface/],
      [null, /status is not an object/],
    ];
    for (const [body, error] of cases) assert.throws(() => checkStatus(body, 'a'), error);
  });
});

describe('sandboxRegistry()', () => {
  it('writes every family with the pod labels, in a format a strict parser reads', async () => {
    const text = await sandboxRegistry([status('a'), status('b', { namespace: 'ns"x\\y', name: 'n', uid: 'u' })]).metrics();
    const families = parsePromText(text);
    const cpu = families.get('hull_process_cpu_seconds_total')!;
    assert.equal(cpu.type, 'counter');
    assert.deepEqual(cpu.samples.find((s) => s.labels['sandbox_id'] === 'a' && s.labels['process'] === 'qemu')?.labels, { sandbox_id: 'a', pod_namespace: 'default', pod_name: 'pod-a', pod_uid: 'uid-a', process: 'qemu' });
    // Label values are escaped and read back unchanged.
    assert.ok(families.get('hull_sandbox_vcpus')!.samples.some((s) => s.labels['pod_namespace'] === 'ns"x\\y'));
    const rpc = families.get('hull_agent_rpc_duration_seconds')!;
    assert.equal(rpc.type, 'histogram');
    assert.equal(rpc.samples.find((s) => s.name === 'hull_agent_rpc_duration_seconds_count' && s.labels['sandbox_id'] === 'a')?.value, 3);
    assert.equal(families.get('hull_guest_meminfo_bytes')!.samples.find((s) => s.labels['item'] === 'MemTotal' && s.labels['sandbox_id'] === 'b')?.value, 2_000_000_000);
    assert.equal(families.get('hull_sandbox_memory_bytes')!.samples[0]!.value, 2048 * 1024 * 1024);
  });
});

describe('the shims of a run root', () => {
  it('lists only root-owned 0700 sandbox directories with a ledger, never through a symlink', async () => {
    const runRoot = join(base, 'list');
    const statusDir = join(base, 'list-status');
    await sandboxDir(runRoot, 'good', json(status('good')));
    await statusSocket(statusDir, 'good', json(status('good')));
    mkdirSync(join(runRoot, 'open'), { mode: 0o755 });
    chmodSync(join(runRoot, 'open'), 0o755);
    writeFileSync(join(runRoot, 'open', 'ledger'), '');
    mkdirSync(join(runRoot, 'noledger'), { mode: 0o700 });
    symlinkSync(join(runRoot, 'good'), join(runRoot, 'link'));
    mkdirSync(join(runRoot, 'starting'), { mode: 0o700 });
    writeFileSync(join(runRoot, 'starting', 'ledger'), '');
    const dirs = await listSandboxDirs(runRoot, statusDir);
    assert.deepEqual(dirs.map((d) => [d.id, Boolean(d.debugSocket), Boolean(d.statusSocket)]), [['good', true, true], ['starting', false, false]]);
    assert.deepEqual(await listSandboxDirs(join(base, 'missing')), []);
  });

  it('lists the status sockets of a status directory no one else may write, never through a symlink', async () => {
    const statusDir = join(base, 'status');
    await statusSocket(statusDir, 'a', json(status('a')));
    await statusSocket(statusDir, 'b', json(status('b')));
    writeFileSync(join(statusDir, 'file.sock'), '');
    symlinkSync(join(statusDir, 'a.sock'), join(statusDir, 'link.sock'));
    await serve(join(statusDir, '.hidden.sock'), json(status('x')));
    await serve(join(statusDir, 'c.socket'), json(status('c')));
    assert.deepEqual(await listStatusSockets(statusDir), [{ id: 'a', statusSocket: join(statusDir, 'a.sock') }, { id: 'b', statusSocket: join(statusDir, 'b.sock') }]);
    assert.deepEqual(await listStatusSockets(join(base, 'missing')), []);
    // A directory others may write (someone could plant a socket there), or a symlink to one, is not read.
    chmodSync(statusDir, 0o770);
    assert.deepEqual(await listStatusSockets(statusDir), []);
    chmodSync(statusDir, 0o750);
    symlinkSync(statusDir, join(base, 'status-link'));
    assert.deepEqual(await listStatusSockets(join(base, 'status-link')), []);
  });

  it('gives up on a shim that hangs, trickles, answers too much or not JSON, each within its deadline', async () => {
    const statusDir = join(base, 'hostile');
    await statusSocket(statusDir, 'hang', () => {});
    await statusSocket(statusDir, 'trickle', (_req, res) => {
      res.writeHead(200);
      const timer = setInterval(() => res.write(' '), 50);
      res.on('close', () => clearInterval(timer));
    });
    await statusSocket(statusDir, 'huge', (_req, res) => res.writeHead(200).end(Buffer.alloc(2 << 20, 0x20)));
    await statusSocket(statusDir, 'garbage', (_req, res) => res.writeHead(200).end('{"version":'));
    await statusSocket(statusDir, 'failing', (_req, res) => res.writeHead(500).end('boom'));
    const dirs = await listStatusSockets(statusDir);
    const answers = await Promise.all(dirs.map((d) => readStatus(d, true, { timeoutMs: 300 })));
    assert.deepEqual(
      answers.map((a) => [a.id, 'error' in a ? a.error : 'ok']),
      [
        ['failing', 'status 500: boom'],
        ['garbage', 'answer is not JSON'],
        ['hang', 'no answer within 300 ms'],
        ['huge', `answer over ${1 << 20} bytes`],
        ['trickle', 'no answer within 300 ms'],
      ],
    );
    await assert.rejects(getFromShim(join(statusDir, 'nosuch.sock'), '/status'), /ENOENT/);
    assert.deepEqual(await readStatus({ id: 'gone' }, true), { id: 'gone', error: NO_STATUS_SOCKET });
  });

  it('Monitor serves the good shims and reports the others as failures', async () => {
    const statusDir = join(base, 'monitor');
    await statusSocket(statusDir, 'a', json(status('a')));
    const b = await statusSocket(statusDir, 'b', json(status('b')));
    await statusSocket(statusDir, 'hang', () => {});
    const monitor = new Monitor({ statusDir, logger: quiet, shimTimeoutMs: 200 });
    const server = await monitor.listen('127.0.0.1', 0);
    after(() => server.close());
    const scrape = async () => parsePromText(await (await fetch(`http://127.0.0.1:${server.port}/metrics`)).text());
    const first = await scrape();
    assert.deepEqual(first.get('hull_monitor_shim_up')!.samples.map((s) => [s.labels['sandbox_id'], s.value]), [['a', 1], ['b', 1], ['hang', 0]]);
    assert.deepEqual([...new Set(first.get('hull_sandbox_vcpus')!.samples.map((s) => s.labels['sandbox_id']))], ['a', 'b']);
    assert.equal(first.get('hull_monitor_shim_failures_total')!.samples[0]!.value, 1);
    await new Promise<void>((resolve) => (b.closeAllConnections(), b.close(() => resolve())));
    const second = await scrape();
    assert.deepEqual([...new Set(second.get('hull_sandbox_vcpus')!.samples.map((s) => s.labels['sandbox_id']))], ['a']);
    assert.equal(second.get('hull_monitor_scrapes_total')!.samples[0]!.value, 2);
    assert.equal(second.get('hull_monitor_shim_failures_total')!.samples[0]!.value, 2);
    assert.equal(second.get('hull_monitor_scrape_duration_seconds')!.samples.find((s) => s.name.endsWith('_count'))!.value, 2);
    assert.equal((await fetch(`http://127.0.0.1:${server.port}/other`)).status, 404);
  });
});

describe('who may read /metrics', () => {
  it('isLoopback() knows the loopback addresses and names nothing else so', () => {
    for (const host of ['127.0.0.1', '127.1.2.3', 'localhost', '::1', '::ffff:127.0.0.1']) assert.ok(isLoopback(host), host);
    for (const host of ['0.0.0.0', '::', '10.0.0.1', '192.0.2.1', 'node1.example', '::ffff:10.0.0.1', '128.0.0.1']) assert.ok(!isLoopback(host), host);
  });

  it('checkListen() refuses an address beyond loopback without a token, with a clear error', () => {
    assert.doesNotThrow(() => checkListen('127.0.0.1', false));
    assert.doesNotThrow(() => checkListen('0.0.0.0', true));
    assert.throws(() => checkListen('0.0.0.0', false), /Refusing to serve \/metrics on "0\.0\.0\.0" without authentication: .*monitor_token_file/);
  });

  it('readToken() takes one printable token of 16 characters or more, and nothing else', async () => {
    const file = join(base, 'token');
    writeFileSync(file, 'a'.repeat(32) + '\n');
    assert.equal(await readToken(file), 'a'.repeat(32));
    for (const [text, error] of [['short\n', /has 5 characters: at least 16/], ['two words here ok?\n', /printable characters without spaces/], ['', /printable/], ['x'.repeat(5000), /over 4096 bytes/]] as const) {
      writeFileSync(file, text);
      await assert.rejects(readToken(file), error);
    }
    await assert.rejects(readToken(join(base, 'no-token')), /Cannot read the monitor's token file/);
  });

  it('bearerCheck() accepts the token and nothing else', () => {
    const check = bearerCheck('s3cret-token-0123456789');
    assert.ok(check('Bearer s3cret-token-0123456789'));
    assert.ok(check('bearer  s3cret-token-0123456789'));
    for (const h of [undefined, '', 'Bearer', 'Bearer s3cret-token-012345678', 'Bearer s3cret-token-01234567890', 'Basic czNjcmV0', 's3cret-token-0123456789']) assert.ok(!check(h), String(h));
  });

  it('Monitor with a token answers 401 and no pod label without it or with a wrong one, the metrics with it', async () => {
    const statusDir = join(base, 'auth');
    await statusSocket(statusDir, 'tenant', json(status('tenant', { namespace: 'secret-ns', name: 'secret-pod', uid: 'secret-uid' })));
    const token = 'right-token-0123456789abcdef';
    const monitor = new Monitor({ statusDir, logger: quiet, token });
    // Beyond loopback it would serve with a token; the test listens on loopback only.
    const server = await monitor.listen('127.0.0.1', 0);
    after(() => server.close());
    const get = (authorization?: string) => fetch(`http://127.0.0.1:${server.port}/metrics`, { headers: authorization ? { authorization } : {} });
    for (const authorization of [undefined, 'Bearer wrong-token-0123456789abcd', `Basic ${Buffer.from(`x:${token}`).toString('base64')}`]) {
      const res = await get(authorization);
      assert.equal(res.status, 401, String(authorization));
      assert.equal(res.headers.get('www-authenticate'), 'Bearer realm="hull-monitor"');
      const body = await res.text();
      assert.doesNotMatch(body, /secret|tenant|hull_/);
    }
    assert.equal((await fetch(`http://127.0.0.1:${server.port}/other`)).status, 401);
    const res = await get(`Bearer ${token}`);
    assert.equal(res.status, 200);
    const families = parsePromText(await res.text());
    assert.equal(families.get('hull_sandbox_vcpus')!.samples[0]!.labels['pod_name'], 'secret-pod');
    await assert.rejects(new Monitor({ statusDir, logger: quiet }).listen('0.0.0.0', 0), /without authentication/);
  });
});
