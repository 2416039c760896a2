/**
 * `hull install` / `hull uninstall` against private files only (temp bin dir, temp hull config, a
 * copy of a containerd config), then the end-to-end proof: a private containerd whose config was
 * edited by `hull install` alone runs a CRI pod with handler "hull" in a VM.
 *
 * Never touches this machine's /etc/containerd, /etc/hull, /usr/local/bin or the system containerd:
 * every install here names its paths and says --restart-containerd never.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, readlinkSync, realpathSync, rmSync, writeFileSync } from 'node:fs';
import { release, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { parse } from 'smol-toml';
import { currentGuestImage } from '../../src/guest/index.js';
import { hullConfigTemplate } from '../../src/cli/install.js';
import { startContainerd, findShims, type PrivateContainerd } from '../harness/containerd.js';
import { BUSYBOX_REF, ensureTestImages } from '../harness/oci-image.js';
import { CriClient, containerConfig, podConfig } from '../harness/cri.js';
import { entriesIn, mountsUnder, qemuPidsUnder } from '../helpers/leaks.js';

const HULL = fileURLToPath(new URL('../../../bin/hull', import.meta.url));
const CHECKOUT_BIN = realpathSync(fileURLToPath(new URL('../../../bin', import.meta.url)));

// A realistic version 2 config, for machines without Debian's /etc/containerd/config.toml.
const REALISTIC = `# containerd config of a Kubernetes node
version = 2
root = "/var/lib/containerd"
state = "/run/containerd"

[grpc]
  address = "/run/containerd/containerd.sock"

[plugins]
  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = "registry.k8s.io/pause:3.9" # kubelet's pause image
    [plugins."io.containerd.grpc.v1.cri".containerd]
      default_runtime_name = "runc"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"
        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
          SystemdCgroup = true
    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = "/opt/cni/bin"
      conf_dir = "/etc/cni/net.d"
`;

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

function hull(args: string[], env: NodeJS.ProcessEnv = process.env): Promise<Run> {
  return new Promise((resolve) => {
    execFile(process.execPath, [HULL, ...args], { env, timeout: 120_000 }, (e, stdout, stderr) => {
      resolve({ code: e ? (typeof e.code === 'number' ? e.code : -1) : 0, stdout: String(stdout), stderr: String(stderr) });
    });
  });
}

interface Paths {
  dir: string;
  ctrd: string;
  bin: string;
  hullConfig: string;
}

function pathsIn(dir: string): Paths {
  return { dir, ctrd: join(dir, 'containerd', 'config.toml'), bin: join(dir, 'bin'), hullConfig: join(dir, 'hull', 'config.toml') };
}

function flags(p: Paths): string[] {
  return ['--containerd-config', p.ctrd, '--bin-dir', p.bin, '--config', p.hullConfig, '--restart-containerd', 'never'];
}

function runtimeOf(file: string, name = 'hull'): Record<string, unknown> | undefined {
  const parsed = JSON.parse(JSON.stringify(parse(readFileSync(file, 'utf8')))) as Record<string, any>;
  return parsed['plugins']?.['io.containerd.grpc.v1.cri']?.['containerd']?.['runtimes']?.[name];
}

/** snapshot lists every file under dir with its content (links as "-> target"): "changed nothing" is a snapshot compare. */
function snapshot(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  const walk = (d: string): void => {
    for (const name of readdirSync(d)) {
      const p = join(d, name);
      const st = lstatSync(p);
      if (st.isSymbolicLink()) out[p] = `-> ${readlinkSync(p)}`;
      else if (st.isDirectory()) walk(p);
      else out[p] = readFileSync(p, 'utf8');
    }
  };
  walk(dir);
  return out;
}

let guestKernel = '';
const temps: string[] = [];

function tempDir(): Paths {
  const dir = mkdtempSync(join(tmpdir(), 'hull-install-'));
  temps.push(dir);
  return pathsIn(dir);
}

before(async () => {
  const image = await currentGuestImage();
  assert.ok(image, 'no guest image in /var/lib/hull/guest: run `make image` first');
  guestKernel = image.kernelRelease;
});

after(() => {
  for (const d of temps) rmSync(d, { recursive: true, force: true });
});

describe('hull install and uninstall on private files', () => {
  const shipped = existsSync('/etc/containerd/config.toml') ? readFileSync('/etc/containerd/config.toml', 'utf8') : undefined;
  const original = shipped && /^version\s*=\s*2\s*$/m.test(shipped) ? shipped : REALISTIC;

  it('adds the runtime, links the binaries, writes the config; twice changes nothing; uninstall restores every byte', async () => {
    const p = tempDir();
    mkdirSync(join(p.dir, 'containerd'));
    writeFileSync(p.ctrd, original);

    const first = await hull(['install', ...flags(p)]);
    assert.equal(first.code, 0, first.stderr + first.stdout);
    assert.match(first.stdout, /added runtime "hull"/);
    assert.match(first.stdout, /restart the containerd that reads ".*" to load the hull runtime/);
    assert.match(first.stdout, /check: ok {3}guest image/);
    assert.deepEqual(runtimeOf(p.ctrd), { runtime_type: 'io.containerd.hull.v2', privileged_without_host_devices: true, options: { ConfigPath: p.hullConfig } });
    const installed = readFileSync(p.ctrd, 'utf8');
    assert.ok(installed.startsWith(original), 'the original is an untouched prefix');
    assert.equal(readFileSync(`${p.ctrd}.hull-backup`, 'utf8'), original);
    for (const name of ['containerd-shim-hull-v2', 'hull']) {
      assert.equal(readlinkSync(join(p.bin, name)), join(CHECKOUT_BIN, name));
    }
    assert.equal(readFileSync(p.hullConfig, 'utf8'), hullConfigTemplate());

    // containerd itself reads the result and shows the runtime.
    const dump = await new Promise<string>((resolve, reject) => execFile('containerd', ['--config', p.ctrd, 'config', 'dump'], (e, out) => (e ? reject(e) : resolve(out))));
    const dumped = JSON.parse(JSON.stringify(parse(dump))) as Record<string, any>;
    const runtime = dumped['plugins']['io.containerd.grpc.v1.cri']['containerd']['runtimes']['hull'];
    assert.equal(runtime.runtime_type, 'io.containerd.hull.v2');
    assert.equal(runtime.privileged_without_host_devices, true);
    assert.equal(runtime.options.ConfigPath, p.hullConfig);

    const before2 = snapshot(p.dir);
    const second = await hull(['install', ...flags(p)]);
    assert.equal(second.code, 0, second.stderr + second.stdout);
    assert.match(second.stdout, /nothing to change/);
    assert.deepEqual(snapshot(p.dir), before2, 'a second install changes nothing');

    // hull env sees the installed shim on PATH and the config file.
    const env = await hull(['env', '--json', '--config', p.hullConfig], { ...process.env, PATH: `${p.bin}:${process.env['PATH']}` });
    assert.equal(env.code, 0, env.stderr);
    const report = JSON.parse(env.stdout) as { config: { exists: boolean; keys: { source: string }[] }; paths: { shimOnPath: { realPath: string } }; versions: { guestImage: { kernel: string } } };
    assert.equal(report.config.exists, true);
    assert.ok(report.config.keys.every((k) => k.source === 'default'));
    assert.equal(report.paths.shimOnPath.realPath, join(CHECKOUT_BIN, 'containerd-shim-hull-v2'));
    assert.equal(report.versions.guestImage.kernel, guestKernel);

    const gone = await hull(['uninstall', ...flags(p)]);
    assert.equal(gone.code, 0, gone.stderr + gone.stdout);
    assert.equal(readFileSync(p.ctrd, 'utf8'), original, 'uninstall restores the config byte for byte');
    assert.deepEqual(Object.keys(snapshot(p.dir)), [p.ctrd], 'only the containerd config is left');

    const again = await hull(['uninstall', ...flags(p)]);
    assert.equal(again.code, 0, again.stderr);
    assert.match(again.stdout, /nothing to change/);
    assert.equal(readFileSync(p.ctrd, 'utf8'), original);
  });

  it('creates a missing containerd config, and uninstall removes it again', async () => {
    const p = tempDir();
    const r = await hull(['install', ...flags(p)]);
    assert.equal(r.code, 0, r.stderr + r.stdout);
    assert.match(r.stdout, /created .* \(version 2\)/);
    assert.equal((parse(readFileSync(p.ctrd, 'utf8')) as { version: number }).version, 2);
    assert.equal(runtimeOf(p.ctrd)?.['runtime_type'], 'io.containerd.hull.v2');
    const u = await hull(['uninstall', ...flags(p)]);
    assert.equal(u.code, 0, u.stderr);
    assert.equal(existsSync(p.ctrd), false);
    assert.deepEqual(snapshot(p.dir), {});
  });

  it('refuses a version 1 config clearly and changes nothing at all', async () => {
    const p = tempDir();
    mkdirSync(join(p.dir, 'containerd'));
    const v1 = '# containerd 1.x, version 1\n[plugins.cri]\n  sandbox_image = "k8s.gcr.io/pause:3.2"\n[plugins.cri.containerd.default_runtime]\n  runtime_type = "io.containerd.runc.v2"\n';
    writeFileSync(p.ctrd, v1);
    const before = snapshot(p.dir);
    const r = await hull(['install', ...flags(p)]);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /no "version" key, which containerd reads as version 1: hull install supports only version = 2 configs/);
    assert.match(r.stderr, /nothing was changed/);
    assert.deepEqual(snapshot(p.dir), before);
  });

  it('refuses inline runtimes it cannot append to, and a bin dir file that is not its link, changing nothing', async () => {
    const p = tempDir();
    mkdirSync(join(p.dir, 'containerd'));
    writeFileSync(p.ctrd, 'version = 2\n[plugins."io.containerd.grpc.v1.cri".containerd]\n  runtimes = { runc = { runtime_type = "io.containerd.runc.v2" } }\n');
    const before = snapshot(p.dir);
    const r = await hull(['install', ...flags(p)]);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /inline table/);
    assert.deepEqual(snapshot(p.dir), before);

    writeFileSync(p.ctrd, original);
    mkdirSync(p.bin);
    writeFileSync(join(p.bin, 'hull'), '#!/bin/sh\n');
    const before2 = snapshot(p.dir);
    const r2 = await hull(['install', ...flags(p)]);
    assert.notEqual(r2.code, 0);
    assert.match(r2.stderr, /bin\/hull" is a file, not a link: remove it or choose another --bin-dir; nothing was changed/);
    assert.deepEqual(snapshot(p.dir), before2);
  });

  it('leaves a hull runtime it did not add, and a config file someone changed, in place', async () => {
    const p = tempDir();
    mkdirSync(join(p.dir, 'containerd'));
    mkdirSync(join(p.dir, 'hull'));
    const byHand = `${original}[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.hull]\n  runtime_type = "io.containerd.hull.v2"\n`;
    writeFileSync(p.ctrd, byHand);
    writeFileSync(p.hullConfig, 'default_memory = 1024\n');
    const r = await hull(['install', ...flags(p)]);
    assert.equal(r.code, 0, r.stderr + r.stdout);
    assert.match(r.stdout, /already has runtime "hull" \(not managed by hull install: left as is\)/);
    assert.equal(readFileSync(p.ctrd, 'utf8'), byHand);
    assert.equal(existsSync(`${p.ctrd}.hull-backup`), false);
    const u = await hull(['uninstall', ...flags(p)]);
    assert.equal(u.code, 0, u.stderr);
    assert.equal(readFileSync(p.ctrd, 'utf8'), byHand);
    assert.equal(readFileSync(p.hullConfig, 'utf8'), 'default_memory = 1024\n');
    assert.match(u.stdout, /kept .*config\.toml: it differs from what hull install writes/);
    assert.equal(existsSync(join(p.bin, 'hull')), false);
  });
});

describe('a private containerd configured by hull install alone', () => {
  let ctrd: PrivateContainerd | undefined;
  let cri: CriClient | undefined;
  let work = '';
  let runRoot = '';
  let p: Paths;
  let harnessConfig = '';


  before(async () => {
    mkdirSync('/run/hull-test', { recursive: true, mode: 0o700 });
    work = mkdtempSync('/run/hull-test/inst-');
    // Sandbox ids from CRI are 64 hex digits: keep the run root short (socket paths have 107 bytes).
    runRoot = mkdtempSync('/run/hull-test/r');
    p = pathsIn(work);
    mkdirSync(join(work, 'hull'));
    writeFileSync(p.hullConfig, `default_memory = 512\nrun_root = "${runRoot}"\n`);
    ctrd = await startContainerd({
      extraPath: p.bin,
      configHook: async (configPath) => {
        harnessConfig = readFileSync(configPath, 'utf8');
        assert.equal(runtimeOf(configPath), undefined, 'the harness adds no hull runtime of its own');
        const r = await hull(['install', ...flags({ ...p, ctrd: configPath })]);
        assert.equal(r.code, 0, `hull install failed:\n${r.stdout}\n${r.stderr}`);
      },
    });
    await ensureTestImages(ctrd);
    cri = await CriClient.connect(ctrd.address);
  });

  after(async () => {
    cri?.close();
    const shims = ctrd ? findShims(ctrd.address).filter((s) => s.cmdline.includes('hull')) : [];
    let uninstall: Run | undefined;
    let restored = '';
    if (ctrd) {
      uninstall = await hull(['uninstall', ...flags({ ...p, ctrd: ctrd.configPath })]);
      restored = readFileSync(ctrd.configPath, 'utf8');
    }
    const report = await ctrd?.stop();
    const leftVms = qemuPidsUnder(runRoot);
    const leftMounts = mountsUnder(work);
    const leftState = entriesIn(runRoot);
    const leftBin = entriesIn(p.bin);
    rmSync(work, { recursive: true, force: true });
    rmSync(runRoot, { recursive: true, force: true });
    assert.deepEqual(shims, [], 'hull shims still running');
    assert.deepEqual(report ?? { leakedShims: [], killedDescendants: [], leakedMounts: [] }, { leakedShims: [], killedDescendants: [], leakedMounts: [] }, 'the stop report is not empty');
    assert.deepEqual(leftVms, [], 'QEMU processes left');
    assert.deepEqual(leftMounts, [], 'mounts left');
    assert.deepEqual(leftState, [], 'sandbox state left under the run root');
    if (uninstall) {
      assert.equal(uninstall.code, 0, uninstall.stderr);
      assert.equal(restored, harnessConfig, 'uninstall restores the harness config byte for byte');
      assert.deepEqual(leftBin, [], 'uninstall removes the links');
    }
  });

  it('runs a CRI pod with handler "hull" in a VM: uname -r shows the guest kernel', async () => {
    assert.ok(ctrd && cri);
    const configured = readFileSync(ctrd.configPath, 'utf8');
    assert.ok(configured.startsWith(harnessConfig) && configured.includes('# BEGIN hull (managed by hull install)'));

    const pod = podConfig({ name: 'installed', namespace: 'hull-test' });
    const podId = await cri.runPodSandbox(pod, 'hull');
    try {
      const id = await cri.createContainer(podId, containerConfig({ name: 'app', image: BUSYBOX_REF, command: ['sleep', 'inf'] }), pod);
      await cri.startContainer(id);
      assert.equal(qemuPidsUnder(runRoot).length, 1, 'one QEMU process for the pod, under the run root of the installed config');
      const uname = await cri.execSync(id, ['uname', '-r']);
      assert.equal(uname.exitCode, 0, uname.stderr.toString());
      assert.equal(uname.stdout.toString().trim(), guestKernel);
      assert.notEqual(guestKernel, release());
      await cri.stopContainer(id, 0);
      await cri.removeContainer(id);
    } finally {
      await cri.stopPodSandbox(podId);
      await cri.removePodSandbox(podId);
    }
    assert.deepEqual(qemuPidsUnder(runRoot), []);
    assert.deepEqual(entriesIn(runRoot), []);
  });
});
