/**
 * Container root against the programs the agent runs into its container, through a real containerd
 * and CRI. The container is unprivileged: root, the default capabilities, no seccomp profile.
 *
 * - The CVE-2019-5736 pattern: a static racer (exec-racer.c, built here with the host's gcc) watches
 *   the container's /proc for any process whose executable is not one of the image's, holds it with
 *   O_PATH and keeps trying to reopen it for writing (and to open /proc/<pid>/exe for writing), while
 *   the test runs over 100 execs into its container: CRI ExecSync and streaming Exec, with and without
 *   a terminal. The racer must never get a writable handle, every exec must print exactly what it was
 *   asked to and none may fail.
 * - Lookups that stay in the container: the container swaps its /etc/passwd for a symlink to
 *   /proc/1/environ, a symlink that climbs out with `..`, a FIFO and a 1 GiB sparse file while
 *   execs that need HOME from it run: each gets a clear error or the container's own answer, never
 *   the guest's, and an exec into another container answers meanwhile. (A container cannot replace
 *   its /etc, which holds CRI's bind mounts; src/agent/container-etc.test.ts covers that case.) Its
 *   /etc is a volume, where the test made the FIFO: the guest's 9p refuses mknod.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { appendFileSync, mkdirSync, readFileSync, writeFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { currentGuestImage } from '../../src/guest/index.js';
import { startContainerd, type PrivateContainerd } from '../harness/containerd.js';
import { prepareHullRuntime, stopAndAssertClean } from '../harness/hull-runtime.js';
import { BUSYBOX_REF, ensureTestImages } from '../harness/oci-image.js';
import { CriClient, containerConfig, podConfig, type PodSandboxConfig } from '../harness/cri.js';

const RACER_SOURCE = fileURLToPath(new URL('../../../test/integration/exec-racer.c', import.meta.url));
// HULL_TEST_RACE_EXECS: execs run while the racer watches (default 120: 60 ExecSync, 30 streaming, 30 with a terminal).
const EXECS = Number.parseInt(process.env['HULL_TEST_RACE_EXECS'] ?? '120', 10);

const hullRuntime = prepareHullRuntime({ name: 'exec-attacks' });
const { work } = hullRuntime;
// HULL_TEST_GUEST_IMAGES_DIR: a guest images directory of its own (where other work rebuilds the shared one).
const imagesDir = process.env['HULL_TEST_GUEST_IMAGES_DIR'];
if (imagesDir) appendFileSync(hullRuntime.configPath, `guest_images_dir = "${imagesDir}"\n`);
const racerDir = join(work, 'racer');
const lookupDir = join(work, 'lookup');
// etcDir is the lookup container's /etc: a FIFO can be made only on the host (the guest's 9p refuses
// mknod), and the container renames it into place as it would its own file.
const etcDir = join(work, 'etc');

/** CONTAINER_PASSWD is the container's own /etc/passwd: root's home differs from the guest's (/root). */
const CONTAINER_PASSWD = 'root:x:0:0:root:/home/container-root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n';
/** ENVIRON_LINE is in the lookup container's own PID 1 environment: reading *its* /proc/1/environ finds this home. */
const ENVIRON_HOME = '/home/from-container-environ';

/**
 * SWAPPER is the lookup container's init: it puts what /v/next names in place of /etc/passwd, says so
 * in /v/state and removes /v/next once done.
 */
const SWAPPER = `
exec 2>>/v/err
cp /v/passwd /etc/passwd && echo restore > /v/state
while :; do
  if [ -f /v/next ]; then
    m=$(cat /v/next)
    rm -f /etc/passwd
    case $m in
      environ) ln -s /proc/1/environ /etc/passwd ;;
      climb) ln -s ../../../../../../../../etc/passwd /etc/passwd ;;
      fifo) mv /etc/passwd.fifo /etc/passwd ;;
      sparse) truncate -s 1G /etc/passwd ;;
      restore) cp /v/passwd /etc/passwd ;;
    esac
    ls -ln /etc/passwd > /v/what 2>&1
    echo $m > /v/state
    rm -f /v/next
  fi
  usleep 20000
done`;

let ctrd: PrivateContainerd;
let cri: CriClient;
let pod: PodSandboxConfig;
let podId = '';

before(async () => {
  assert.ok(await currentGuestImage(imagesDir), 'no guest image: run `make image` first');
  mkdirSync(racerDir);
  mkdirSync(lookupDir);
  execFileSync('gcc', ['-static', '-O2', '-o', join(racerDir, 'exec-racer'), RACER_SOURCE]);
  writeFileSync(join(lookupDir, 'passwd'), CONTAINER_PASSWD);
  mkdirSync(etcDir);
  writeFileSync(join(etcDir, 'passwd'), CONTAINER_PASSWD);
  writeFileSync(join(etcDir, 'group'), 'root:x:0:\n');
  execFileSync('mkfifo', [join(etcDir, 'passwd.fifo')]);
  ctrd = await startContainerd({ runtimes: hullRuntime.runtimes, extraPath: hullRuntime.shimDir });
  await ensureTestImages(ctrd);
  cri = await CriClient.connect(ctrd.address, { deadlineMs: 180_000 });
  pod = podConfig({ name: 'exec-attacks', namespace: 'hull-exec-attacks' });
  podId = await cri.runPodSandbox(pod, 'hull');
});

after(async () => {
  if (podId) {
    await cri.stopPodSandbox(podId).catch(() => {});
    await cri.removePodSandbox(podId).catch(() => {});
  }
  cri?.close();
  await stopAndAssertClean(ctrd, hullRuntime);
});

/** waitFor polls `check` until it holds (the container acts on its own schedule). */
async function waitFor(what: string, check: () => boolean): Promise<void> {
  for (let i = 0; i < 9000; i++) {
    if (check()) return;
    await new Promise((r) => setImmediate(r));
    await new Promise((r) => setTimeout(r, 20));
  }
  assert.fail(`timed out waiting for ${what}`);
}

function racerLog(): string {
  const file = join(racerDir, 'racer.log');
  return existsSync(file) ? readFileSync(file, 'utf8') : '';
}

describe('container root against the exec starter and the programs the agent runs', () => {
  let racer = '';

  before(async () => {
    const config = containerConfig({
      name: 'racer',
      image: BUSYBOX_REF,
      command: ['/racer/exec-racer', '/racer/racer.log', '/bin/busybox'],
      mounts: [{ containerPath: '/racer', hostPath: racerDir }],
    });
    racer = await cri.createContainer(podId, config, pod);
    await cri.startContainer(racer);
    await waitFor('the racer to start', () => racerLog().includes('ready'));
  });

  it('never gets a writable handle while over 100 execs (ExecSync, streaming, terminal) run exactly what was asked', async () => {
    const failures: string[] = [];
    let ran = 0;
    for (let i = 0; i < EXECS && failures.length < 5; i++) {
      const word = `hull-exec-${i}`;
      const kind = i % 4 === 1 ? 'streaming' : i % 4 === 3 ? 'terminal' : 'ExecSync';
      try {
        let out: string;
        let code: number;
        if (kind === 'ExecSync') {
          const r = await cri.execSync(racer, ['echo', word], 120);
          [out, code] = [r.stdout.toString() + r.stderr.toString(), r.exitCode];
        } else {
          const r = await cri.execStreaming(racer, ['echo', word], { tty: kind === 'terminal', timeoutMs: 120_000 });
          [out, code] = [(r.stdout.toString() + r.stderr.toString()).replaceAll('\r\n', '\n'), r.exitCode];
        }
        if (out !== `${word}\n` || code !== 0) failures.push(`${kind} ${i}: exit ${code}, printed ${JSON.stringify(out)}`);
      } catch (e) {
        failures.push(`${kind} ${i}: ${(e as Error).message}`);
      }
      ran++;
    }
    const log = racerLog();
    console.log(`racer log after ${ran} execs:\n${log}\nexecs that went wrong: ${JSON.stringify(failures, null, 1)}`);
    assert.doesNotMatch(log, /^(WRITABLE|WROTE)/m, 'the racer got a writable handle on a program the agent ran');
    assert.deepEqual(failures, [], 'an exec ran something else, failed or did not answer');
    assert.ok(ran >= 100, `only ${ran} execs ran`);
    assert.match(log, /^ready/m);
  });
});

describe("lookups stay in the container's root", () => {
  let lookup = '';
  let other = '';

  before(async () => {
    const config = containerConfig({
      name: 'lookup',
      image: BUSYBOX_REF,
      command: ['sh', '-c', SWAPPER],
      env: { P: `\nroot:x:0:0:root:${ENVIRON_HOME}:/bin/sh\n` },
      mounts: [
        { containerPath: '/v', hostPath: lookupDir },
        { containerPath: '/etc', hostPath: etcDir },
      ],
    });
    lookup = await cri.createContainer(podId, config, pod);
    await cri.startContainer(lookup);
    other = await cri.createContainer(podId, containerConfig({ name: 'other', image: BUSYBOX_REF, command: ['sleep', '100000'] }), pod);
    await cri.startContainer(other);
  });

  async function swap(mode: string): Promise<void> {
    writeFileSync(join(lookupDir, 'next'), mode);
    await waitFor(`the container to put "${mode}" in place`, () => !existsSync(join(lookupDir, 'next')) && readFileSync(join(lookupDir, 'state'), 'utf8').trim() === mode);
  }

  /** home runs an exec that needs HOME from the container's passwd: its HOME, or the error it got. */
  async function home(): Promise<{ home?: string; error?: string }> {
    try {
      const r = await cri.execSync(lookup, ['sh', '-c', 'echo "HOME=$HOME"'], 60);
      return { home: r.stdout.toString().trim().replace(/^HOME=/, '') };
    } catch (e) {
      return { error: (e as Error).message };
    }
  }

  it('reads its own passwd', async () => {
    await waitFor('the container to start', () => existsSync(join(lookupDir, 'state')));
    await swap('restore');
    assert.deepEqual(await home(), { home: '/home/container-root' });
  });

  for (const mode of ['environ', 'climb', 'fifo', 'sparse']) {
    it(`a passwd swapped for ${mode}: a clear error or the container's own answer, and the agent answers meanwhile`, async () => {
      await swap(mode);
      const [got, meanwhile] = await Promise.all([home(), cri.execSync(other, ['echo', 'still here'], 60)]);
      assert.equal(meanwhile.stdout.toString(), 'still here\n');
      console.log(`${mode}: ${readFileSync(join(lookupDir, 'what'), 'utf8').trim()}: ${JSON.stringify(got)}`);
      if (got.error !== undefined) {
        assert.match(got.error, /passwd|\/etc/, `${mode}: the error does not say what was wrong: ${got.error}`);
      } else {
        // The container's own answers: its PID 1's environment, or no entry at all. Never the guest's /root.
        assert.ok(['', ENVIRON_HOME, '/'].includes(got.home!), `${mode}: HOME=${got.home}, not the container's own answer`);
      }
      await swap('restore');
      assert.deepEqual(await home(), { home: '/home/container-root' }, `${mode}: the container's passwd is not read again once restored`);
    });
  }
});
