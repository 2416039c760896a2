/**
 * `hull console` against real CRI pods in a private containerd: with debug_console on, a command
 * runs in the guest (its kernel, not the host's; the guest's own namespaces, as root) and hull
 * exits with its status; stdin reaches it; a terminal is given when hull has one, and follows
 * hull's when that is resized (bad resize frames are ignored); the shim logs each use and the agent
 * forgets each process. With debug_console off the shim refuses, saying how to enable it. Nothing
 * is left once the pods are gone.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { appendFileSync, readFileSync } from 'node:fs';
import { release } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { connectConsole, findSandboxSocket } from '../../src/cli/console.js';
import { currentGuestImage } from '../../src/guest/index.js';
import { getFromShim } from '../../src/monitor/index.js';
import { FRAME, FrameReader, encodeRequest, frame, readExit, resizeFrame } from '../../src/shim/console-protocol.js';
import { startContainerd, type PrivateContainerd } from '../harness/containerd.js';
import { prepareHullRuntime } from '../harness/hull-runtime.js';
import { CriClient, podConfig } from '../harness/cri.js';
import { ensureTestImages } from '../harness/oci-image.js';
import { entriesIn, mountsUnder, qemuPidsUnder } from '../helpers/leaks.js';

const HULL = fileURLToPath(new URL('../../../bin/hull', import.meta.url));
// HULL_TEST_GUEST_IMAGES_DIR: a guest images directory of its own (where other work rebuilds the shared one).
const imagesDir = process.env['HULL_TEST_GUEST_IMAGES_DIR'];
const on = prepareHullRuntime({ name: 'console-on' });
const off = prepareHullRuntime({ name: 'console-off' });
for (const [runtime, enabled] of [[on, true], [off, false]] as const) {
  appendFileSync(runtime.configPath, `debug_console = ${enabled}\ntemplates = false\n${imagesDir ? `guest_images_dir = "${imagesDir}"\n` : ''}`);
}

let ctrd: PrivateContainerd;
let cri: CriClient;
const pods: string[] = [];

before(async () => {
  assert.ok(await currentGuestImage(imagesDir), 'no guest image: run `make image` first');
  ctrd = await startContainerd({ runtimes: { hull: on.runtimes['hull']!, 'hull-off': off.runtimes['hull']! }, extraPath: on.shimDir });
  await ensureTestImages(ctrd);
  cri = await CriClient.connect(ctrd.address, { deadlineMs: 120_000 });
});

after(async () => {
  for (const id of pods) {
    await cri.stopPodSandbox(id).catch(() => {});
    await cri.removePodSandbox(id).catch(() => {});
  }
  cri?.close();
  const report = await ctrd?.stop();
  const left = { vms: [...qemuPidsUnder(on.runRoot), ...qemuPidsUnder(off.runRoot)], mounts: [on.work, on.runRoot, off.work, off.runRoot].flatMap(mountsUnder), state: [...entriesIn(on.runRoot), ...entriesIn(off.runRoot)] };
  on.remove();
  off.remove();
  assert.deepEqual(report?.leakedShims ?? [], [], 'containerd had to kill leaked shims');
  assert.deepEqual(left, { vms: [], mounts: [], state: [] });
});

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** run starts `file args` with `input` on its stdin (none: /dev/null) and collects what it writes. */
function run(file: string, args: string[], input?: string): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, { stdio: [input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout!.setEncoding('utf8').on('data', (s: string) => (stdout += s));
    child.stderr!.setEncoding('utf8').on('data', (s: string) => (stderr += s));
    child.once('error', reject);
    child.once('close', (code) => resolve({ code, stdout, stderr }));
    if (input !== undefined) child.stdin!.end(input);
  });
}

function hullConsole(configPath: string, sandbox: string, command: string[], input?: string): Promise<Run> {
  return run(process.execPath, [HULL, 'console', '--config', configPath, sandbox, '--', ...command], input);
}

function containerdLog(): string {
  return readFileSync(ctrd.logPath, 'utf8');
}

/** Transcript holds a session's output so far; next() waits for what is still to come. */
class Transcript {
  #text = '';
  #from = 0;
  #ended = false;
  #wake: (() => void)[] = [];

  add(text: string): void {
    this.#text += text;
    this.#notify();
  }

  get text(): string {
    return this.#text;
  }

  end(): void {
    this.#ended = true;
    this.#notify();
  }

  /** next resolves with the first match of `pattern` after the last match; it rejects if the output ends first. */
  async next(pattern: RegExp): Promise<RegExpExecArray> {
    const re = new RegExp(pattern.source, `${pattern.flags.replace('g', '')}g`);
    for (;;) {
      re.lastIndex = this.#from;
      const m = re.exec(this.#text);
      if (m) {
        this.#from = m.index + m[0].length;
        return m;
      }
      if (this.#ended) throw new Error(`The output ended without ${pattern}: ${JSON.stringify(this.#text.slice(this.#from))}`);
      await new Promise<void>((resolve) => this.#wake.push(resolve));
    }
  }

  #notify(): void {
    for (const wake of this.#wake.splice(0)) wake();
  }
}

/** guestSize asks the shell on a session's guest terminal for its size, as `stty size` prints it ("rows cols"). */
async function guestSize(type: (line: string) => void, output: Transcript): Promise<string> {
  type('echo "size=$(stty size)"\n');
  // Lines end in \r\n, or in \r\r\n through hull on a raw host terminal (it still maps \n to \r\n).
  return (await output.next(/size=(\d+ \d+)\r*\n/))[1]!;
}

/**
 * guestResized asks for the guest terminal's size until it is `want`, at most 100 times (a resize
 * reaches the guest apart from stdin, so the next command may still see the old size), and
 * resolves with the last answer.
 */
async function guestResized(type: (line: string) => void, output: Transcript, want: string): Promise<string> {
  let got = await guestSize(type, output);
  for (let i = 1; i < 100 && got !== want; i++) {
    await sleep(100);
    got = await guestSize(type, output);
  }
  return got;
}

describe('hull console', () => {
  let podOn = '';

  it('runs `uname -r` in the guest and exits with its status; a unique id prefix finds the sandbox', async () => {
    podOn = await cri.runPodSandbox(podConfig({ name: 'console-on', namespace: 'hull-console' }), 'hull');
    pods.push(podOn);
    const r = await hullConsole(on.configPath, podOn, ['uname', '-r']);
    assert.equal(r.code, 0, r.stderr);
    const guestRelease = r.stdout.trim();
    assert.match(guestRelease, /^\d+\.\d+/);
    assert.notEqual(guestRelease, release(), 'the release is the host kernel\'s');
    const byPrefix = await hullConsole(on.configPath, podOn.slice(0, 12), ['uname', '-r']);
    assert.deepEqual([byPrefix.code, byPrefix.stdout.trim()], [0, guestRelease]);
  });

  it('exits with the command\'s status, and runs as root in the guest\'s own namespaces (outside every container)', async () => {
    assert.equal((await hullConsole(on.configPath, podOn, ['sh', '-c', 'exit 7'])).code, 7);
    const sameNamespaces = 'for ns in pid mnt net; do [ "$(readlink /proc/self/ns/$ns)" = "$(readlink /proc/1/ns/$ns)" ] || exit 3; done; id -u';
    const r = await hullConsole(on.configPath, podOn, ['sh', '-c', sameNamespaces]);
    assert.deepEqual([r.code, r.stdout.trim()], [0, '0'], r.stderr);
    const missing = await hullConsole(on.configPath, podOn, ['no-such-command']);
    assert.equal(missing.code, 127);
    assert.match(missing.stderr, /no-such-command/);
  });

  it('carries stdin to the command and its end closes it', async () => {
    const input = 'hello console\n'.repeat(5000);
    const r = await hullConsole(on.configPath, podOn, ['cat'], input);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, input);
  });

  it('gives the command a terminal of hull\'s size when hull runs on one', async () => {
    // script(1) puts hull on a pseudo-terminal of the host.
    const command = `stty rows 31 cols 97; ${JSON.stringify(process.execPath)} ${HULL} console --config ${on.configPath} ${podOn} -- sh -c 'tty; stty -a; exit 5'`;
    const r = await run('script', ['-q', '-e', '-c', command, '/dev/null'], '');
    assert.equal(r.code, 5, r.stdout + r.stderr);
    assert.match(r.stdout, /\/dev\/pts\/\d+/);
    assert.match(r.stdout, /rows 31; columns 97;/);
  });

  it('opens an interactive shell in the guest when no command is given', async () => {
    const command = `${JSON.stringify(process.execPath)} ${HULL} console --config ${on.configPath} ${podOn}`;
    const r = await run('script', ['-q', '-e', '-c', command, '/dev/null'], 'echo "in $(tty) as $(id -u)"; exit 3\n');
    assert.equal(r.code, 3, r.stdout + r.stderr);
    assert.match(r.stdout, /in \/dev\/pts\/\d+ as 0/);
  });

  it('resizes the guest terminal when hull\'s terminal is resized mid-session', async () => {
    // script(1) puts hull on a host pseudo-terminal; resizing that (as a terminal window does)
    // sends hull SIGWINCH, and hull sends the new size to the shim.
    const command = `stty rows 31 cols 97; tty; exec ${JSON.stringify(process.execPath)} ${HULL} console --config ${on.configPath} ${podOn}`;
    const child = spawn('script', ['-q', '-e', '-c', command, '/dev/null'], { stdio: ['pipe', 'pipe', 'pipe'] });
    const output = new Transcript();
    let stderr = '';
    child.stdout!.setEncoding('utf8').on('data', (s: string) => output.add(s));
    child.stderr!.setEncoding('utf8').on('data', (s: string) => (stderr += s));
    child.stdin!.on('error', () => {});
    const closed = new Promise<number | null>((resolve) => child.once('close', (code) => resolve(code)));
    child.once('close', () => output.end());
    const type = (line: string) => void child.stdin!.write(line);
    try {
      const hostTerminal = (await output.next(/^(\/dev\/pts\/\d+)\r*\n/m))[1]!;
      assert.equal(await guestSize(type, output), '31 97', stderr);
      execFileSync('stty', ['-F', hostTerminal, 'rows', '42', 'cols', '123']);
      assert.equal(await guestResized(type, output, '42 123'), '42 123', stderr);
      type('exit 4\n');
      assert.equal(await closed, 4, output.text + stderr);
    } finally {
      if (child.exitCode === null) child.kill('SIGKILL');
      await closed;
    }
  });

  it('ignores malformed and zero-size resize frames: the session goes on at its size, and later resizes apply, the last of a burst winning', async () => {
    const { socket: path } = await findSandboxSocket(on.runRoot, podOn);
    const socket = await connectConsole(path, encodeRequest({ args: [], tty: true, rows: 24, cols: 80, user: 'console.test' }));
    const output = new Transcript();
    const reader = new FrameReader(1 << 20);
    let status: number | undefined;
    socket.on('data', (chunk: Buffer) => {
      for (const f of reader.push(chunk)) {
        if (f.type === FRAME.stdout) output.add(f.payload.toString('utf8'));
        else if (f.type === FRAME.exit) status = readExit(f.payload);
        else output.add(`[frame ${f.type}: ${f.payload.toString('utf8')}]`);
      }
    });
    const closed = new Promise((resolve) => socket.once('close', resolve));
    socket.once('close', () => output.end());
    const type = (line: string) => void socket.write(frame(FRAME.stdin, Buffer.from(line)));
    try {
      assert.equal(await guestSize(type, output), '24 80');
      const malformed = [Buffer.alloc(0), Buffer.from([0, 50, 0]), Buffer.from([0, 50, 0, 132, 0])].map((payload) => frame(FRAME.resize, payload));
      socket.write(Buffer.concat([...malformed, resizeFrame(0, 0), resizeFrame(0, 132), resizeFrame(50, 0)]));
      // The session goes on, at its size; a good frame after the bad ones still resizes.
      type('echo "answer=$((6 * 7))"\n');
      await output.next(/answer=42\r*\n/);
      assert.equal(await guestSize(type, output), '24 80');
      socket.write(resizeFrame(50, 132));
      assert.equal(await guestResized(type, output, '50 132'), '50 132');
      // A burst of sizes (a window being dragged) ends at the last one.
      const burst = Array.from({ length: 30 }, (_, i) => resizeFrame(20 + i, 60 + i));
      socket.write(Buffer.concat([...burst, resizeFrame(33, 111)]));
      assert.equal(await guestResized(type, output, '33 111'), '33 111');
      type('exit 6\n');
      await closed;
      assert.equal(status, 6, output.text);
    } finally {
      socket.destroy();
    }
    assert.doesNotMatch(containerdLog(), /client sent a bad frame/);
  });

  it('ends the guest process when the client goes away', async () => {
    const consoles = async () => (JSON.parse((await getFromShim(join(on.runRoot, podOn, 'debug.sock'), '/agent', { timeoutMs: 30_000 })).toString()) as { consoles: number }).consoles;
    // An earlier session's process is removed just after its client has the exit status.
    for (let i = 0; (await consoles()) !== 0; i++) {
      assert.ok(i < 300, 'an earlier console process was never removed');
      await sleep(100);
    }
    const client = spawn(process.execPath, [HULL, 'console', '--config', on.configPath, podOn, '--', 'sleep', '1000'], { stdio: ['pipe', 'ignore', 'ignore'] });
    const closed = new Promise((resolve) => client.once('close', resolve));
    for (let i = 0; (await consoles()) === 0; i++) {
      assert.ok(i < 300, 'the console process never started');
      await sleep(100);
    }
    client.kill('SIGKILL');
    await closed;
    for (let i = 0; (await consoles()) !== 0; i++) {
      assert.ok(i < 300, 'the console process outlived its client');
      await sleep(100);
    }
    assert.match(containerdLog(), /\[\\*"sleep\\*",\\*"1000\\*"\]: exited with status 137 \(the client had gone\)/);
  });

  it('logs each use in the shim\'s log, and the agent keeps no console process after it', async () => {
    const log = containerdLog();
    assert.match(log, /console console-[0-9a-f]{12} \(uid 0[^)]*\), no tty\): \[\\*"uname\\*",\\*"-r\\*"\]: started/);
    assert.match(log, /console console-[0-9a-f]{12} [^\n]*\[\\*"sh\\*",\\*"-c\\*",\\*"exit 7\\*"\]: exited with status 7/);
    const agent = JSON.parse((await getFromShim(join(on.runRoot, podOn, 'debug.sock'), '/agent')).toString()) as { consoles: number };
    assert.equal(agent.consoles, 0);
  });

  it('is refused, saying how to enable it, when debug_console is off', async () => {
    const podOff = await cri.runPodSandbox(podConfig({ name: 'console-off', namespace: 'hull-console' }), 'hull-off');
    pods.push(podOff);
    const r = await hullConsole(off.configPath, podOff, ['uname', '-r']);
    assert.notEqual(r.code, 0);
    assert.equal(r.stdout, '');
    assert.ok(r.stderr.includes(`The debug console is off: set debug_console = true in ${off.configPath}`), r.stderr);
    assert.match(containerdLog(), /console: refused \(debug_console is off\)/);
  });

  it('leaves nothing once the pods are removed', async () => {
    for (const id of pods.splice(0)) {
      await cri.stopPodSandbox(id);
      await cri.removePodSandbox(id);
    }
    assert.deepEqual([...entriesIn(on.runRoot), ...entriesIn(off.runRoot)], []);
    assert.deepEqual([...qemuPidsUnder(on.runRoot), ...qemuPidsUnder(off.runRoot)], []);
  });
});
