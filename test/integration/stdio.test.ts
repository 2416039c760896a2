/**
 * Container stdio arrives exact (issue 21): every byte written into a task's or an exec's stdin reaches
 * the process, and every byte it writes reaches the client, counted and checksummed, through ctr and
 * through CRI. The writer closes right after its last write (ctr then calls CloseIO at once, as a pipe
 * into `ctr run` or `kubectl exec -i … < file` does).
 *
 * HULL_TEST_STDIO_BIG_BYTES sets the size of the large transfers (default 32 MiB; the figure
 * is 300,000,000, which takes minutes per transfer under TCG on a loaded 2-core machine).
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import type { Writable } from 'node:stream';
import { createHash, randomBytes } from 'node:crypto';
import { appendFileSync, mkdtempSync, readFileSync } from 'node:fs';
import { request } from 'node:http';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, it } from 'node:test';
import { currentGuestImage } from '../../src/guest/index.js';
import { DEBUG_SOCKET } from '../../src/shim/debug-socket.js';
import { startContainerd, findShims, type PrivateContainerd } from '../harness/containerd.js';
import { HULL_RUNTIME, prepareHullRuntime } from '../harness/hull-runtime.js';
import { BUSYBOX_REF, ensureTestImages } from '../harness/oci-image.js';
import { CriClient, containerConfig, podConfig, sendStdinAndClose } from '../harness/cri.js';
import { entriesIn, mountsUnder, qemuPidsUnder } from '../helpers/leaks.js';

const SMALL = 1_000_000;
const BIG = Number.parseInt(process.env['HULL_TEST_STDIO_BIG_BYTES'] ?? String(32 << 20), 10);
const TIMEOUT_MS = 30 * 60_000;

const hullRuntime = prepareHullRuntime({ name: 'stdio' });
const { work, runRoot, configPath } = hullRuntime;
const imagesDir = process.env['HULL_TEST_GUEST_IMAGES_DIR'];
if (imagesDir) appendFileSync(configPath, `guest_images_dir = "${imagesDir}"\n`);
let ctrd: PrivateContainerd;
let cri: CriClient;

before(async () => {
  assert.ok(await currentGuestImage(imagesDir), 'no guest image: run `make image` first');
  ctrd = await startContainerd({ runtimes: hullRuntime.runtimes, extraPath: hullRuntime.shimDir });
  await ensureTestImages(ctrd);
  cri = await CriClient.connect(ctrd.address);
});

after(async () => {
  cri?.close();
  const tasks = ctrd ? await ctrd.ctr(['tasks', 'ls', '-q']) : undefined;
  const shims = ctrd ? findShims(ctrd.address).filter((s) => s.cmdline.includes('hull')) : [];
  const report = await ctrd?.stop();
  const leftVms = qemuPidsUnder(runRoot);
  const leftMounts = mountsUnder(work);
  const leftState = entriesIn(runRoot);
  hullRuntime.remove();
  assert.equal(tasks?.stdout.trim() ?? '', '', 'ctr tasks ls is not empty');
  assert.deepEqual(shims, [], 'hull shims still running');
  assert.deepEqual(report?.leakedShims ?? [], [], 'containerd had to kill leaked shims');
  assert.deepEqual(leftVms, [], 'QEMU processes left');
  assert.deepEqual(leftMounts, [], 'mounts left');
  assert.deepEqual(leftState, [], 'sandbox state left under the run root');
});

/**
 * A deterministic stream of `size` bytes: a random block whose length is no power of two, repeated,
 * so lost, doubled or reordered chunks change the checksum.
 */
class Payload {
  static readonly #block = randomBytes(1_048_573);
  readonly sha256: string;
  constructor(readonly size: number) {
    const hash = createHash('sha256');
    for (const chunk of this.chunks()) hash.update(chunk);
    this.sha256 = hash.digest('hex');
  }
  *chunks(): Generator<Buffer> {
    for (let sent = 0; sent < this.size; ) {
      const chunk = Payload.#block.subarray(0, Math.min(Payload.#block.length, this.size - sent));
      sent += chunk.length;
      yield chunk;
    }
  }
}

interface Streamed {
  code: number;
  stdoutBytes: number;
  stdoutSha256: string;
  /** stdoutHead: the first 4 KiB of stdout, as text. */
  stdoutHead: string;
  stderr: string;
  /** stdinEnd: how writing stdin ended ('end' when all was written, else the error's code). */
  stdinEnd: string;
}

/**
 * ctrStreamed runs ctr with `input` written into its stdin (ended right after the last write, with
 * backpressure) and its stdout counted and hashed as it flows, never held whole.
 */
const noop = (): void => {};

interface StreamHooks {
  /** onStdout is called after each stdout chunk with the bytes received so far. */
  onStdout?(received: number, stdout: NodeJS.ReadableStream): void;
}

function ctrStreamed(args: string[], input?: Payload, hooks: StreamHooks = {}): Promise<Streamed> {
  return new Promise((resolve) => {
    const child = spawn('ctr', ['-a', ctrd.address, '-n', ctrd.namespace, ...args], {
      stdio: [input ? 'pipe' : 'ignore', 'pipe', 'pipe'],
      timeout: TIMEOUT_MS,
      killSignal: 'SIGKILL',
    });
    const hash = createHash('sha256');
    let stdoutBytes = 0;
    let stdoutHead = '';
    let stderr = '';
    let stdinEnd = 'none';
    child.stdout!.on('data', (c: Buffer) => {
      if (stdoutHead.length < 4096) stdoutHead += c.subarray(0, 4096).toString('latin1');
      stdoutBytes += c.length;
      hash.update(c);
      hooks.onStdout?.(stdoutBytes, child.stdout!);
    });
    child.stderr!.on('data', (c: Buffer) => {
      if (stderr.length < 64 * 1024) stderr += c.toString('utf8');
    });
    if (input) {
      const stdin = child.stdin!;
      stdin.on('error', (e: NodeJS.ErrnoException) => (stdinEnd = e.code ?? e.message));
      void (async () => {
        for (const chunk of input.chunks()) {
          if (stdin.destroyed) return;
          if (!stdin.write(chunk)) await drained(stdin);
        }
        stdin.end(() => (stdinEnd = 'end'));
      })();
    }
    child.on('close', (code, signal) => resolve({ code: code ?? 128 + (signal ? 9 : 0), stdoutBytes, stdoutSha256: hash.digest('hex'), stdoutHead, stderr, stdinEnd }));
  });
}

// Reads stdin to its end: prints its sha256 on stdout and its byte count on stderr. (The process's
// stdio are sockets in the guest today, which cannot be opened by path: the copy goes through a FIFO.)
const COUNT_AND_HASH_STDIN = ['sh', '-c', 'f=$(mktemp -u /dev/shm/fXXXXXX) && mkfifo $f && { sha256sum < $f & tee $f | wc -c >&2; wait; }'];

/** writeRandom is a command that writes `size` random bytes to stdout and their sha256 to stderr. */
function writeRandom(size: number): string[] {
  return ['sh', '-c', `f=$(mktemp -u /dev/shm/fXXXXXX) && mkfifo $f && { sha256sum < $f >&2 & head -c ${size} /dev/urandom | tee $f; wait; }`];
}

/** sha256sum's output: the hex digest, then the name. */
function digestIn(text: string): string {
  return /\b([0-9a-f]{64})\b/.exec(text)?.[1] ?? `(no digest in ${JSON.stringify(text.slice(-300))})`;
}

/** What a stdin test compares: the process's count and digest of what it read. */
function stdinReceived(r: Streamed) {
  const count = /^\s*(\d+)\s*$/m.exec(r.stderr);
  return { code: r.code, bytes: count ? Number(count[1]) : `(no count in ${JSON.stringify(r.stderr.slice(-300))})`, sha256: digestIn(r.stdoutHead) };
}

/** What a stdout test compares: what the client got against what the process wrote. */
function stdoutReceived(r: Streamed) {
  return { code: r.code, bytes: r.stdoutBytes, sha256: r.stdoutSha256 };
}

function ctrRun(id: string, args: string[], input?: Payload, runtime = HULL_RUNTIME): Promise<Streamed> {
  return ctrStreamed(['run', '--rm', '--runtime', runtime, '--runtime-config-path', configPath, BUSYBOX_REF, id, ...args], input);
}

describe('stdio through ctr', () => {
  for (const size of [SMALL, BIG]) {
    it(`a task's stdin gets all ${size} bytes written into ctr run`, { timeout: TIMEOUT_MS }, async () => {
      const input = new Payload(size);
      const r = await ctrRun(`in-${size}`, COUNT_AND_HASH_STDIN, input);
      assert.deepEqual(stdinReceived(r), { code: 0, bytes: size, sha256: input.sha256 }, ctrd.logTail(20));
    });

    it(`ctr run gets all ${size} bytes a task writes to stdout`, { timeout: TIMEOUT_MS }, async () => {
      const r = await ctrRun(`out-${size}`, writeRandom(size));
      assert.deepEqual(stdoutReceived(r), { code: 0, bytes: size, sha256: digestIn(r.stderr) }, r.stderr);
    });
  }

  it('a writer into a process that stops reading sees what a runc user sees', { timeout: TIMEOUT_MS }, async () => {
    const input = new Payload(256 << 20);
    const outcome = async (runtime: string) => {
      const r = await ctrRun(`early-${runtime.split('.')[2]}`, ['sh', '-c', 'head -c 1000 | wc -c'], input, runtime);
      return { code: r.code, stdout: r.stdoutHead, writer: r.stdinEnd };
    };
    const runc = await outcome('io.containerd.runc.v2');
    assert.deepEqual(runc, { code: 0, stdout: '1000\n', writer: 'EPIPE' }, 'runc');
    assert.deepEqual(await outcome(HULL_RUNTIME), runc);
  });

  it('a reader that stops for 10 s holds the writer back: nothing lost, memory bounded', { timeout: TIMEOUT_MS }, async () => {
    const size = 64 << 20;
    const id = 'slow-reader';
    let paused: () => void = () => {};
    const pausedOnce = new Promise<void>((r) => (paused = r));
    let resume = noop;
    const samples: Array<{ shimRss: number; agentRss: number }> = [];
    const run = ctrStreamed(['run', '--rm', '--runtime', HULL_RUNTIME, '--runtime-config-path', configPath, BUSYBOX_REF, id, ...writeRandom(size)], undefined, {
      // After the first 4 MiB the client stops reading; it resumes when the test says.
      onStdout(received, stdout) {
        if (received < 4 << 20 || resume !== noop) return;
        stdout.pause();
        resume = () => stdout.resume();
        paused();
      },
    });
    await pausedOnce;
    const shim = findShims(ctrd.address).find((s) => s.cmdline.includes('hull'));
    assert.ok(shim, 'no hull shim');
    // The pause itself is the scenario: 10 s of a reader that does not read.
    for (let i = 0; i < 10; i++) {
      await sleep(1000);
      samples.push({ shimRss: rssOf(shim.pid), agentRss: (await agentState(id)).rssBytes });
    }
    resume();
    const r = await run;
    assert.deepEqual(stdoutReceived(r), { code: 0, bytes: size, sha256: digestIn(r.stderr) }, r.stderr);
    const first = samples[0]!;
    const grew = samples.map((s) => ({ shim: (s.shimRss - first.shimRss) >> 20, agent: (s.agentRss - first.agentRss) >> 20 }));
    // Unbounded buffering would take tens of MiB in 10 s; what stays is the pipes' and the 1 MiB output buffers.
    for (const g of grew) assert.ok(g.shim < 16 && g.agent < 16, `RSS grew while the reader stopped (MiB): ${JSON.stringify(grew)}`);
  });

  describe('an exec in a running task', () => {
    const id = 'execs';
    before(async () => {
      const r = await ctrd.ctr(['run', '-d', '--runtime', HULL_RUNTIME, '--runtime-config-path', configPath, BUSYBOX_REF, id, 'sleep', '100000'], { timeoutMs: 180_000 });
      assert.equal(r.code, 0, r.stderr);
    });
    after(async () => {
      await ctrd.ctr(['task', 'kill', '-s', 'KILL', id]);
      for (let i = 0; i < 100; i++) {
        const r = await ctrd.ctr(['task', 'delete', id]);
        if (r.code === 0 || /not found/.test(r.stderr)) break;
        await new Promise((res) => setTimeout(res, 100));
      }
      await ctrd.ctr(['container', 'delete', id]);
    });

    for (const size of [SMALL, BIG]) {
      it(`its stdin gets all ${size} bytes written into ctr task exec`, { timeout: TIMEOUT_MS }, async () => {
        const input = new Payload(size);
        const r = await ctrStreamed(['task', 'exec', '--exec-id', `in-${size}`, id, ...COUNT_AND_HASH_STDIN], input);
        assert.deepEqual(stdinReceived(r), { code: 0, bytes: size, sha256: input.sha256 }, ctrd.logTail(20));
      });

      it(`ctr task exec gets all ${size} bytes it writes to stdout`, { timeout: TIMEOUT_MS }, async () => {
        const r = await ctrStreamed(['task', 'exec', '--exec-id', `out-${size}`, id, ...writeRandom(size)]);
        assert.deepEqual(stdoutReceived(r), { code: 0, bytes: size, sha256: digestIn(r.stderr) }, r.stderr);
      });
    }
  });
});

/** criLogText is what a container wrote to `stream` by its CRI log file (`<time> <stream> <F|P> <text>` lines). */
function criLogText(path: string, stream: 'stdout' | 'stderr'): string {
  let text = '';
  for (const line of readFileSync(path, 'utf8').split('\n')) {
    const m = /^\S+ (stdout|stderr) ([FP]) (.*)$/.exec(line);
    if (m && m[1] === stream) text += m[3] + (m[2] === 'F' ? '\n' : '');
  }
  return text;
}

async function waitExited(id: string): Promise<number> {
  for (;;) {
    const { status } = await cri.containerStatus(id);
    if (status.state === 'CONTAINER_EXITED') return (status as unknown as { exitCode: number }).exitCode;
    await sleep(200); // CRI has no wait call
  }
}

describe('stdio through CRI', () => {
  const logDirectory = mkdtempSync(join(work, 'logs-'));
  const pod = podConfig({ name: 'stdio', logDirectory });
  let podId = '';
  let shell = '';
  before(async () => {
    podId = await cri.runPodSandbox(pod, 'hull');
    shell = await cri.createContainer(podId, containerConfig({ name: 'shell', image: BUSYBOX_REF, command: ['sleep', '100000'] }), pod);
    await cri.startContainer(shell);
  });
  after(async () => {
    await cri.stopPodSandbox(podId);
    await cri.removePodSandbox(podId);
  });

  for (const size of [SMALL, BIG]) {
    it(`an attached stdin (stdinOnce) gets all ${size} bytes, then its end`, { timeout: TIMEOUT_MS }, async () => {
      const name = `sink-${size}`;
      const config = containerConfig({ name, image: BUSYBOX_REF, command: COUNT_AND_HASH_STDIN, stdin: true, stdinOnce: true, logPath: `${name}.log` });
      const id = await cri.createContainer(podId, config, pod);
      await cri.startContainer(id);
      const input = new Payload(size);
      await sendStdinAndClose(await cri.attach({ containerId: id }), input.chunks(), TIMEOUT_MS);
      const code = await waitExited(id);
      const log = join(logDirectory, `${name}.log`);
      const count = /^\s*(\d+)\s*$/m.exec(criLogText(log, 'stderr'));
      assert.deepEqual({ code, bytes: count ? Number(count[1]) : criLogText(log, 'stderr'), sha256: digestIn(criLogText(log, 'stdout')) }, { code: 0, bytes: size, sha256: input.sha256 });
      await cri.removeContainer(id);
    });

    it(`an exec's stdin gets all ${size} bytes sent by a client that closes right after`, { timeout: TIMEOUT_MS }, async () => {
      const input = new Payload(size);
      const result = `/dev/shm/result-${size}`;
      const url = await cri.exec({ containerId: shell, cmd: ['sh', '-c', `${COUNT_AND_HASH_STDIN[2]} > ${result}.tmp 2>&1 && mv ${result}.tmp ${result}`], stdin: true, stdout: false, stderr: false });
      await sendStdinAndClose(url, input.chunks(), TIMEOUT_MS);
      let text = '';
      for (;;) {
        const r = await cri.execSync(shell, ['cat', result]);
        if (r.exitCode === 0) {
          text = r.stdout.toString();
          break;
        }
        await sleep(200); // the exec finishes in the guest after the stream closed
      }
      const count = /^\s*(\d+)\s*$/m.exec(text);
      assert.deepEqual({ bytes: count ? Number(count[1]) : text, sha256: digestIn(text) }, { bytes: size, sha256: input.sha256 });
    });

    it(`a streaming exec's stdin and stdout carry ${size} bytes each way`, { timeout: TIMEOUT_MS }, async () => {
      const input = new Payload(size);
      // No half-close in the v4 stream: the process reads exactly `size` bytes, echoes them and hashes them.
      const r = await cri.execStreaming(shell, ['sh', '-c', `f=$(mktemp -u /dev/shm/eXXXXXX) && mkfifo $f && { sha256sum < $f >&2 & head -c ${size} | tee $f; wait; }`], {
        stdin: Buffer.concat([...input.chunks()]),
        timeoutMs: TIMEOUT_MS,
      });
      const sha = createHash('sha256').update(r.stdout).digest('hex');
      assert.deepEqual({ code: r.exitCode, bytes: r.stdout.length, sha256: sha, inGuest: digestIn(r.stderr.toString()) }, { code: 0, bytes: size, sha256: input.sha256, inGuest: input.sha256 });
    });
  }

  it(`ExecSync returns all ${SMALL} bytes an exec writes`, { timeout: TIMEOUT_MS }, async () => {
    const r = await cri.execSync(shell, writeRandom(SMALL));
    const sha = createHash('sha256').update(r.stdout).digest('hex');
    assert.deepEqual({ code: r.exitCode, bytes: r.stdout.length, sha256: sha }, { code: 0, bytes: SMALL, sha256: digestIn(r.stderr.toString()) });
  });
});

function rssOf(pid: number): number {
  const m = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) * 1024 : 0;
}

/** agentState asks the pod's shim, on its debug socket, what the guest agent holds (after a full GC). */
function agentState(sandboxId: string): Promise<{ rssBytes: number }> {
  return new Promise((resolve, reject) => {
    const req = request({ socketPath: join(runRoot, sandboxId, DEBUG_SOCKET), path: '/agent', timeout: 30_000 }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const body = Buffer.concat(chunks).toString('utf8');
        if (res.statusCode !== 200) return reject(new Error(`debug socket answered ${res.statusCode}: ${body}`));
        resolve(JSON.parse(body) as { rssBytes: number });
      });
    });
    req.on('timeout', () => req.destroy(new Error('debug socket did not answer')));
    req.on('error', reject);
    req.end();
  });
}

/** drained resolves when `stream` can take more, or is closed. */
function drained(stream: Writable): Promise<void> {
  return new Promise((resolve) => {
    const done = (): void => {
      stream.off('drain', done);
      stream.off('close', done);
      resolve();
    };
    stream.on('drain', done);
    stream.on('close', done);
  });
}
