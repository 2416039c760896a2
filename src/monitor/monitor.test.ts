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
import { checkStatus, getFromShim, listSandboxDirs, Monitor, readStatus, sandboxRegistry } from './index.js';

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

/** sandboxDir makes `<runRoot>/<id>/` as the shim does (0700, a ledger) with a debug socket served by `handler`. */
async function sandboxDir(runRoot: string, id: string, handler: Parameters<typeof createServer>[1]): Promise<Server> {
  const dir = join(runRoot, id);
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  writeFileSync(join(dir, 'ledger'), '');
  const server = createServer(handler!);
  await new Promise<void>((resolve) => server.listen(join(dir, 'debug.sock'), resolve));
  after(() => new Promise<void>((resolve) => (server.closeAllConnections(), server.close(() => resolve()))));
  return server;
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
    await sandboxDir(runRoot, 'good', json(status('good')));
    mkdirSync(join(runRoot, 'open'), { mode: 0o755 });
    chmodSync(join(runRoot, 'open'), 0o755);
    writeFileSync(join(runRoot, 'open', 'ledger'), '');
    mkdirSync(join(runRoot, 'noledger'), { mode: 0o700 });
    symlinkSync(join(runRoot, 'good'), join(runRoot, 'link'));
    mkdirSync(join(runRoot, 'starting'), { mode: 0o700 });
    writeFileSync(join(runRoot, 'starting', 'ledger'), '');
    const dirs = await listSandboxDirs(runRoot);
    assert.deepEqual(dirs.map((d) => [d.id, Boolean(d.socket)]), [['good', true], ['starting', false]]);
    assert.deepEqual(await listSandboxDirs(join(base, 'missing')), []);
  });

  it('gives up on a shim that hangs, trickles, answers too much or not JSON, each within its deadline', async () => {
    const runRoot = join(base, 'hostile');
    await sandboxDir(runRoot, 'hang', () => {});
    await sandboxDir(runRoot, 'trickle', (_req, res) => {
      res.writeHead(200);
      const timer = setInterval(() => res.write(' '), 50);
      res.on('close', () => clearInterval(timer));
    });
    await sandboxDir(runRoot, 'huge', (_req, res) => res.writeHead(200).end(Buffer.alloc(2 << 20, 0x20)));
    await sandboxDir(runRoot, 'garbage', (_req, res) => res.writeHead(200).end('{"version":'));
    await sandboxDir(runRoot, 'failing', (_req, res) => res.writeHead(500).end('boom'));
    const dirs = await listSandboxDirs(runRoot);
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
    await assert.rejects(getFromShim(join(runRoot, 'nosuch.sock'), '/status'), /ENOENT/);
  });

  it('Monitor serves the good shims and reports the others as failures', async () => {
    const runRoot = join(base, 'monitor');
    await sandboxDir(runRoot, 'a', json(status('a')));
    await sandboxDir(runRoot, 'b', json(status('b')));
    await sandboxDir(runRoot, 'hang', () => {});
    const monitor = new Monitor({ runRoot, logger: quiet, shimTimeoutMs: 200 });
    const server = await monitor.listen('127.0.0.1', 0);
    after(() => server.close());
    const scrape = async () => parsePromText(await (await fetch(`http://127.0.0.1:${server.port}/metrics`)).text());
    const first = await scrape();
    assert.deepEqual(first.get('hull_monitor_shim_up')!.samples.map((s) => [s.labels['sandbox_id'], s.value]), [['a', 1], ['b', 1], ['hang', 0]]);
    assert.deepEqual([...new Set(first.get('hull_sandbox_vcpus')!.samples.map((s) => s.labels['sandbox_id']))], ['a', 'b']);
    assert.equal(first.get('hull_monitor_shim_failures_total')!.samples[0]!.value, 1);
    rmSync(join(runRoot, 'b'), { recursive: true });
    const second = await scrape();
    assert.deepEqual([...new Set(second.get('hull_sandbox_vcpus')!.samples.map((s) => s.labels['sandbox_id']))], ['a']);
    assert.equal(second.get('hull_monitor_scrapes_total')!.samples[0]!.value, 2);
    assert.equal(second.get('hull_monitor_shim_failures_total')!.samples[0]!.value, 2);
    assert.equal(second.get('hull_monitor_scrape_duration_seconds')!.samples.find((s) => s.name.endsWith('_count'))!.value, 2);
    assert.equal((await fetch(`http://127.0.0.1:${server.port}/other`)).status, 404);
  });
});
