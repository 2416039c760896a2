/**
 * The installer image (`make oci-image`) end to end, without a cluster: built, imported into a private
 * containerd with `ctr images import`, listed, then run with runc the way the DaemonSet runs it: its
 * entrypoint and args, every hostPath volume of deploy/daemonset.yaml bind-mounted at its mountPath,
 * but from a temporary "host" directory. The entrypoint installs hull there (containerd config, links,
 * hull's config, /opt/hull, the guest image), and on SIGTERM takes it all back; after a SIGKILL, which
 * undoes nothing, the image's `uninstall` argument does.
 *
 * No NODE_NAME (no node to label) and HULL_HOST_CHECK=none: there is no cluster, and this machine's
 * own mount namespace is not the "host" of the test.
 */
import assert from 'node:assert/strict';
import { execFile, execFileSync, spawnSync } from 'node:child_process';
import { appendFileSync, existsSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { parse } from 'smol-toml';
import { hullConfigTemplate, RUNTIME_TYPE } from '../../src/cli/install.js';
import { buildInstallerImage, ENTRYPOINT, type InstallerImage } from '../../packaging/installer-image.js';
import { HOST_RUNTIME_MARKER } from '../../src/common/host-runtime.js';
import { RUNTIME_PREFIX, RUNTIME_PROGRAMS } from '../../packaging/node-runtime.js';
import { findShims, startContainerd, type PrivateContainerd, type StopReport } from '../harness/containerd.js';
import { CriClient, containerConfig, podConfig, portForwardOnce } from '../harness/cri.js';
import { podQemuPids, prepareHullRuntime, stopAndAssertClean } from '../harness/hull-runtime.js';
import { BUSYBOX_REF, defaultImageDir, ensureTestImages } from '../harness/oci-image.js';
import { parsePromText, type PromFamily } from '../harness/prom-text.js';
import { DEFAULT_CONFIG } from '../../src/config/index.js';

const REPO = fileURLToPath(new URL('../../../', import.meta.url));
const DAEMONSET = join(REPO, 'deploy', 'daemonset.yaml');
const READY_FILE = '/tmp/hull-deploy.ready';

// The test node's mount namespace: a tmpfs on /opt with the installed /opt/hull at its path, then an
// empty file bound (with the runtime's own mount) over each host program given; then containerd.
// Arguments: the node's root, the empty file, the programs, "--", containerd's argv.
const NODE_VIEW = `set -eu
root=$1; empty=$2; shift 2
mount -t tmpfs -o mode=0755 hull-test-opt /opt
mkdir /opt/hull
mount --bind "$root/opt/hull" /opt/hull
while [ "$1" != "--" ]; do /opt/hull/runtime/bin/mount --bind "$empty" "$1"; shift; done
shift
exec "$@"
`;

const NODE_CONFIG = `# containerd config of a Kubernetes node
version = 2

[plugins]
  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = "localhost/pause:3.9"
    [plugins."io.containerd.grpc.v1.cri".containerd]
      default_runtime_name = "runc"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"
`;

interface Mount {
  hostPath: string;
  mountPath: string;
}

/** Container is what the test takes of a DaemonSet container: its args, hostPath mounts and identity. */
interface Container {
  args: string[];
  mounts: Mount[];
  /** user: runAsUser and runAsGroup (pod or container), when set. */
  user?: { uid: number; gid: number };
  readOnlyRoot: boolean;
  dropAll: boolean;
  allowPrivilegeEscalation: boolean;
}

/** daemonSetContainers reads the DaemonSets' containers by name, through kubectl, offline. */
function daemonSetContainers(): Promise<Record<string, Container>> {
  const path = '{.spec.template.spec.volumes}{"\\t"}{.spec.template.spec.securityContext}{"\\t"}{.spec.template.spec.containers}{"\\n"}';
  return new Promise((resolve, reject) => {
    execFile('kubectl', ['label', '--local', '-f', DAEMONSET, '-o', `jsonpath=${path}`, 'hull.dev/test-'], { env: { ...process.env, KUBECONFIG: '/dev/null' } }, (e, stdout, stderr) => {
      if (e) return reject(new Error(`kubectl cannot read ${DAEMONSET}: ${stderr}`));
      const lines = String(stdout).split('\n').filter((l) => l.startsWith('['));
      if (lines.length === 0) return reject(new Error('no DaemonSet in deploy/daemonset.yaml'));
      type Sc = { runAsUser?: number; runAsGroup?: number; readOnlyRootFilesystem?: boolean; allowPrivilegeEscalation?: boolean; capabilities?: { drop?: string[] } };
      type Spec = { name: string; args: string[]; volumeMounts: { name: string; mountPath: string }[]; securityContext?: Sc };
      const out: Record<string, Container> = {};
      for (const line of lines) {
        const [volumesText, podScText, containersText] = line.split('\t');
        const volumes = JSON.parse(volumesText!) as { name: string; hostPath?: { path: string } }[];
        const podSc = (podScText ? JSON.parse(podScText) : {}) as Sc;
        for (const c of JSON.parse(containersText!) as Spec[]) {
          const sc = c.securityContext ?? {};
          const uid = sc.runAsUser ?? podSc.runAsUser;
          const gid = sc.runAsGroup ?? podSc.runAsGroup;
          out[c.name] = {
            args: c.args,
            // Secret volumes (the monitor's optional token) are not the node's: the test has none.
            mounts: c.volumeMounts.flatMap((m) => {
              const hostPath = volumes.find((v) => v.name === m.name)?.hostPath?.path;
              return hostPath ? [{ mountPath: m.mountPath, hostPath }] : [];
            }),
            ...(uid !== undefined ? { user: { uid, gid: gid ?? uid } } : {}),
            readOnlyRoot: sc.readOnlyRootFilesystem === true,
            dropAll: (sc.capabilities?.drop ?? []).includes('ALL'),
            allowPrivilegeEscalation: sc.allowPrivilegeEscalation !== false,
          };
        }
      }
      resolve(out);
    });
  });
}

/** snapshot maps every path under dir to its content, or "-> target" for a link, or "dir". */
function snapshot(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  const walk = (d: string): void => {
    for (const name of readdirSync(d).sort()) {
      const p = join(d, name);
      const st = lstatSync(p);
      if (st.isSymbolicLink()) out[p] = `-> ${readlinkSync(p)}`;
      else if (st.isDirectory()) {
        out[p] = 'dir';
        walk(p);
      } else out[p] = st.size > 1 << 20 ? `${st.size} bytes` : readFileSync(p, 'utf8');
    }
  };
  walk(dir);
  return out;
}

describe('installer image', () => {
  let ctrd: PrivateContainerd;
  let image: InstallerImage;
  let container: Container;
  let monitorContainer: Container;
  let report: StopReport | undefined;
  const host = mkdtempSync(join(tmpdir(), 'hull-node-'));
  const logs = mkdtempSync(join(tmpdir(), 'hull-deploy-logs-'));
  const at = (path: string): string => join(host, path);
  let before0: Record<string, string> = {};

  before(async () => {
    const containers = await daemonSetContainers();
    container = containers['hull-deploy']!;
    monitorContainer = containers['hull-monitor']!;
    image = await buildInstallerImage({ repo: REPO, outDir: defaultImageDir(), log: () => undefined });
    ctrd = await startContainerd();
    // The node before hull: containerd's config, a bin dir with someone else's program in it.
    for (const m of container.mounts) mkdirSync(at(m.hostPath), { recursive: true });
    writeFileSync(at('/etc/containerd/config.toml'), NODE_CONFIG);
    writeFileSync(at('/usr/local/bin/crictl'), '#!/bin/sh\n', { mode: 0o755 });
    before0 = snapshot(host);
  });

  after(async () => {
    report = await ctrd?.stop();
    rmSync(host, { recursive: true, force: true });
    rmSync(logs, { recursive: true, force: true });
    assert.deepEqual(report?.leakedShims ?? [], []);
    assert.deepEqual(report?.leakedMounts ?? [], []);
  });

  /**
   * start runs the image as kubelet would for the DaemonSet: the image's entrypoint with the pod's
   * `args` (ctr's arguments replace both, so the entrypoint is named), the pod's mounts, no cluster.
   * Detached, its output to a file: the task's end is read from containerd, not from a ctr client.
   */
  async function start(name: string, args: string[]): Promise<void> {
    const mounts = container.mounts.flatMap((m) => ['--mount', `type=bind,src=${at(m.hostPath)},dst=${m.mountPath},options=rbind:rw`]);
    const r = await ctrd.ctr(['run', '-d', '--log-uri', `file://${logs}/${name}.log`, '--env', 'HULL_HOST_CHECK=none', ...mounts, image.ref, name, ENTRYPOINT, ...args]);
    assert.equal(r.code, 0, r.stderr);
  }

  /** status is the task's STATUS column of `ctr tasks ls` (RUNNING, STOPPED), or undefined when there is no task. */
  async function status(name: string): Promise<string | undefined> {
    const ls = await ctrd.ctr(['tasks', 'ls']);
    return ls.stdout.split('\n').map((l) => l.trim().split(/\s+/)).find((f) => f[0] === name)?.[2];
  }

  /** finish waits for the task to stop, removes it and its container, and returns its output. */
  async function finish(name: string): Promise<string> {
    for (let i = 0; i < 240 && (await status(name)) === 'RUNNING'; i++) await sleep(500);
    assert.equal(await status(name), 'STOPPED', `${name} did not stop`);
    const del = await ctrd.ctr(['tasks', 'delete', name]);
    assert.equal(del.code, 0, del.stderr);
    const rm = await ctrd.ctr(['containers', 'delete', name]);
    assert.equal(rm.code, 0, rm.stderr);
    return readFileSync(join(logs, `${name}.log`), 'utf8');
  }

  /** waitReady polls the readiness probe of the DaemonSet (`test -f READY_FILE`) until it passes (2 minutes at most). */
  async function waitReady(name: string): Promise<void> {
    for (let i = 0; ; i++) {
      assert.ok(i < 240, `${name} was not ready within 240 probes`);
      const probe = await ctrd.ctr(['tasks', 'exec', '--exec-id', `probe-${i}`, name, 'test', '-f', READY_FILE]);
      if (probe.code === 0) return;
      if ((await status(name)) !== 'RUNNING') assert.fail(`${name} ended before it was ready: ${JSON.stringify(await finish(name))}`);
      await sleep(500);
    }
  }

  /**
   * scrapeMonitor runs the image's hull-monitor container over `statusDir` until its /metrics lists a
   * sandbox (1 minute at most), then removes it and its network namespace; returns the parsed scrape.
   * ctr has no --user: the image's own setpriv (the runtime's, through its loader, as the entrypoint
   * runs node) takes the DaemonSet's uid, gid and capabilities before the entrypoint runs.
   */
  async function scrapeMonitor(statusDir: string, id: string): Promise<Map<string, PromFamily>> {
    const netns = `hullmon${id}`;
    execFileSync('ip', ['netns', 'add', netns]);
    try {
      execFileSync('ip', ['-n', netns, 'link', 'set', 'lo', 'up']);
      const mounts = monitorContainer.mounts.flatMap((m) => ['--mount', `type=bind,src=${m.hostPath === DEFAULT_CONFIG.statusDir ? statusDir : at(m.hostPath)},dst=${m.mountPath},options=rbind:ro`]);
      const { user } = monitorContainer;
      assert.ok(user && user.uid !== 0 && monitorContainer.dropAll && monitorContainer.readOnlyRoot && !monitorContainer.allowPrivilegeEscalation, 'the DaemonSet runs hull-monitor as non-root with no capability and a read-only root');
      const runtime = '/usr/share/hull/runtime';
      const setpriv = [`${runtime}/lib/ld-linux-x86-64.so.2`, `${runtime}/bin/setpriv`, `--reuid=${user.uid}`, `--regid=${user.gid}`, '--clear-groups', '--inh-caps=-all', '--bounding-set=-all', '--no-new-privs', '--'];
      const started = await ctrd.ctr(['run', '-d', '--read-only', '--seccomp', '--log-uri', `file://${logs}/hull-monitor.log`, '--with-ns', `network:/var/run/netns/${netns}`, ...mounts, image.ref, 'hull-monitor', ...setpriv, ENTRYPOINT, ...monitorContainer.args]);
      assert.equal(started.code, 0, started.stderr);
      try {
        for (let i = 0; i < 120; i++) {
          const scrape = await ctrd.ctr(['tasks', 'exec', '--exec-id', `scrape-${i}`, 'hull-monitor', 'wget', '-qO-', 'http://127.0.0.1:8090/metrics']);
          if (scrape.code === 0 && scrape.stdout.includes('hull_sandbox_vcpus{')) {
            // The serving process (the task's, exec'd from setpriv and the entrypoint) is the DaemonSet's user, with nothing more.
            const pid = (await ctrd.ctr(['tasks', 'ls'])).stdout.split('\n').map((l) => l.trim().split(/\s+/)).find((f) => f[0] === 'hull-monitor')?.[1];
            const procStatus = readFileSync(`/proc/${pid}/status`, 'utf8');
            assert.match(procStatus, new RegExp(`^Uid:\\s+${user.uid}\\s+${user.uid}\\s+${user.uid}\\s+${user.uid}$`, 'm'));
            assert.match(procStatus, new RegExp(`^Gid:\\s+${user.gid}\\s`, 'm'));
            for (const set of ['CapInh', 'CapPrm', 'CapEff', 'CapBnd', 'CapAmb']) assert.match(procStatus, new RegExp(`^${set}:\\s+0{16}$`, 'm'), set);
            assert.match(procStatus, /^NoNewPrivs:\s+1$/m);
            assert.match(readFileSync(`/proc/${pid}/cmdline`, 'utf8'), /node.*cli\/main\.js\0monitor/);
            return parsePromText(scrape.stdout);
          }
          if ((await status('hull-monitor')) !== 'RUNNING') break;
          await sleep(500);
        }
        assert.fail(`hull monitor served no sandbox: ${readFileSync(join(logs, 'hull-monitor.log'), 'utf8')}`);
      } finally {
        await ctrd.ctr(['tasks', 'kill', '--signal', 'SIGTERM', 'hull-monitor']);
        await finish('hull-monitor');
      }
    } finally {
      execFileSync('ip', ['netns', 'delete', netns]);
    }
  }

  it('is imported with ctr images import and listed by ctr images ls', async () => {
    // The command deploy/README.md gives (there in the k8s.io namespace): the archive names the image.
    const imported = await ctrd.ctr(['images', 'import', image.tarPath], { timeoutMs: 120_000 });
    assert.equal(imported.code, 0, imported.stderr);
    const ls = await ctrd.ctr(['images', 'ls']);
    assert.equal(ls.code, 0, ls.stderr);
    const line = ls.stdout.split('\n').find((l) => l.startsWith(`${image.ref} `));
    assert.ok(line, `ctr images ls does not list ${image.ref}:\n${ls.stdout}`);
    assert.ok(line.includes(image.manifestDigest), line);
  });

  it('installs hull on the mounted host paths, with the node runtime it brought', async () => {
    await start('hull-deploy', container.args);
    await waitReady('hull-deploy');

    // Installed: the runtime in containerd's config (runc kept), links to /opt/hull, hull's config, the guest image.
    const config = parse(readFileSync(at('/etc/containerd/config.toml'), 'utf8')) as Record<string, any>;
    const runtimes = config['plugins']['io.containerd.grpc.v1.cri']['containerd']['runtimes'];
    assert.equal(runtimes['hull']['runtime_type'], RUNTIME_TYPE);
    assert.equal(runtimes['hull']['options']['ConfigPath'], '/etc/hull/config.toml');
    assert.equal(runtimes['runc']['runtime_type'], 'io.containerd.runc.v2');
    for (const name of ['hull', 'containerd-shim-hull-v2']) {
      assert.equal(readlinkSync(at(`/usr/local/bin/${name}`)), `/opt/hull/bin/${name}`);
      assert.ok(lstatSync(at(`/opt/hull/bin/${name}`)).isFile(), `/opt/hull/bin/${name} is on the host`);
    }
    assert.ok(existsSync(at('/opt/hull/dist/shim/containerd-shim-hull-v2.mjs')));
    assert.equal(readFileSync(at('/etc/hull/config.toml'), 'utf8'), hullConfigTemplate());
    assert.equal(readlinkSync(at('/var/lib/hull/guest/current')), image.guestImageId);
    const manifest = readFileSync(at(`/var/lib/hull/guest/${image.guestImageId}/manifest.json`), 'utf8');
    assert.equal(JSON.parse(manifest).id, image.guestImageId);
    // The node runtime: every program hull runs, its launchers on the runtime's node.
    const runtime = at('/opt/hull/runtime');
    assert.ok(existsSync(join(runtime, HOST_RUNTIME_MARKER)), 'no node runtime in /opt/hull');
    assert.deepEqual(Object.keys(image.runtimePrograms), RUNTIME_PROGRAMS.map((p) => p.name));
    for (const name of Object.keys(image.runtimePrograms)) assert.ok(existsSync(join(runtime, 'bin', name)), `${name} is not in the runtime`);
    for (const name of ['hull', 'containerd-shim-hull-v2']) {
      assert.equal(readFileSync(at(`/opt/hull/bin/${name}`), 'utf8').split('\n')[0], `#!${RUNTIME_PREFIX}/bin/node`);
    }
  });

  /**
   * The node of this test has none of the programs hull runs: in a mount namespace of its own, the
   * installed /opt/hull is at its path, and this machine's node, QEMU, busybox, util-linux, iproute2,
   * nftables, iptables and procps programs are unrunnable (an empty, non-executable file bound over
   * each); its containerd finds the shim through the installed link. hull check passes there, and a
   * pod runs with networking, exec and port-forward: the shim and QEMU are the runtime's.
   */
  it('runs pods on a node without node, QEMU or any program hull runs: all from the runtime it brought', async () => {
    const runtime = prepareHullRuntime({ name: 'deployed' });
    // The guest image the image installed; templates of its own (they name that image's temporary path).
    mkdirSync('/var/lib/hull-test', { recursive: true, mode: 0o700 });
    const templateRam = mkdtempSync('/var/lib/hull-test/installer-ram-');
    appendFileSync(runtime.configPath, [
      `guest_images_dir = "${at('/var/lib/hull/guest')}"`,
      `templates_dir = "${join(runtime.work, 'templates')}"`,
      `template_ram_dir = "${templateRam}"`,
    ].join('\n') + '\n');
    const hidden = [...new Set(Object.values(image.runtimePrograms))];
    const empty = join(logs, 'not-a-program');
    writeFileSync(empty, '', { mode: 0o644 });
    const launcher = ['unshare', '--mount', '--propagation', 'private', '--', 'sh', '-c', NODE_VIEW, 'hull-node', host, empty, ...hidden, '--'];
    const node = await startContainerd({ runtimes: runtime.runtimes, extraPath: at('/usr/local/bin'), launcher });
    let cri: CriClient | undefined;
    try {
      const inNode = (args: string[]) => spawnSync('nsenter', ['-t', String(node.pid), '-m', '--', ...args], { encoding: 'utf8' });
      for (const program of hidden) assert.equal(inNode([program, '--version']).status, 126, `${program} still runs on the test's node`);
      const check = inNode(['/opt/hull/bin/hull', 'check', '--config', runtime.configPath]);
      assert.equal(check.status, 0, check.stdout + check.stderr);
      assert.match(check.stdout, /QEMU jail.*on: own mount and PID namespaces, \/opt\/hull\/runtime read-only/);
      const env = inNode(['/opt/hull/bin/hull', 'env', '--json', '--config', runtime.configPath]);
      assert.equal(env.status, 0, env.stderr);
      assert.equal((JSON.parse(env.stdout) as { paths: { hostRuntime: string } }).paths.hostRuntime, RUNTIME_PREFIX);

      await ensureTestImages(node);
      cri = await CriClient.connect(node.address, { deadlineMs: 120_000 });
      const pod = podConfig({ name: 'deployed', namespace: 'hull-deploy-test' });
      const podId = await cri.runPodSandbox(pod, 'hull');
      try {
        const serve = 'mkdir -p /tmp/www && echo deployed > /tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www';
        const web = await cri.createContainer(podId, containerConfig({ name: 'web', image: BUSYBOX_REF, command: ['sh', '-c', serve] }), pod);
        await cri.startContainer(web);
        const manifest = JSON.parse(readFileSync(at(`/var/lib/hull/guest/${image.guestImageId}/manifest.json`), 'utf8')) as { kernelRelease: string };
        const kernel = await cri.execSync(web, ['uname', '-r'], 60);
        assert.equal(kernel.stdout.toString().trim(), manifest.kernelRelease);
        const ip = (await cri.podSandboxStatus(podId)).status.network?.ip ?? '';
        assert.match((await cri.execSync(web, ['ip', '-4', 'addr', 'show', 'eth0'])).stdout.toString(), new RegExp(`inet ${ip.replace(/\./g, '\\.')}/`));
        const url = await cri.portForward(podId, [8080]);
        assert.equal((await portForwardOnce(url, 8080, 'GET /index.html HTTP/1.0\r\n\r\n')).toString().trim().split('\n').pop()?.trim(), 'deployed');

        const shims = findShims(node.address);
        assert.equal(shims.length, 1, JSON.stringify(shims));
        assert.equal(readlinkSync(`/proc/${shims[0]!.pid}/exe`), `${RUNTIME_PREFIX}/bin/node`);
        // The runtime's node takes the daemon's startup snapshot the build made (its fallback would not name it).
        assert.match(shims[0]!.cmdline, /--snapshot-blob /);
        const qemu = podQemuPids(runtime);
        assert.equal(qemu.length, 1);
        assert.equal(readlinkSync(`/proc/${qemu[0]}/exe`), `${RUNTIME_PREFIX}/bin/qemu-system-x86_64`);
        // Its jail holds the runtime, read-only even for root there, and nothing of the host's /usr.
        const jail = spawnSync('nsenter', ['-t', String(qemu[0]), '-m', '--', `${RUNTIME_PREFIX}/bin/busybox`, 'sh', '-c', `ls /usr/bin; touch ${RUNTIME_PREFIX}/bin/x; ls /`], { encoding: 'utf8' });
        assert.match(jail.stderr, /ls: \/usr\/bin: No such file or directory/);
        assert.match(jail.stderr, new RegExp(`touch: ${RUNTIME_PREFIX}/bin/x: Read-only file system`));
        assert.deepEqual(jail.stdout.split('\n').filter(Boolean).sort(), ['bin', 'dev', 'image', 'lib', 'lib64', 'opt', 'proc', 'ram', 'run', 'sbin', 'shared'].sort());

        // The DaemonSet hull-monitor, run as it runs it (its args, user, group, no capabilities, a
        // read-only root and read-only mounts, /run/hull-status being this node's status directory; a
        // PID namespace of its own), in a network namespace of the test's own instead of the node's,
        // and scraped from inside it.
        const families = await scrapeMonitor(runtime.statusDir, node.id);
        const series = (name: string, labels: Record<string, string>) => families.get(name)?.samples.find((x) => Object.entries(labels).every(([k, v]) => x.labels[k] === v));
        const pod0 = { pod_namespace: 'hull-deploy-test', pod_name: 'deployed', sandbox_id: podId };
        assert.equal(series('hull_sandbox_vcpus', pod0)?.value, 1);
        assert.ok((series('hull_process_pss_bytes', { ...pod0, process: 'qemu' })?.value ?? 0) > 16 << 20, 'QEMU PSS, as the shim measured it');
        assert.equal(series('hull_guest_up', pod0)?.value, 1);
        assert.equal(series('hull_monitor_shim_up', { sandbox_id: podId })?.value, 1);
      } finally {
        await cri.stopPodSandbox(podId);
        await cri.removePodSandbox(podId);
      }
      // Nothing of the pod is left mounted in the node's mount namespace either.
      const mounts = readFileSync(`/proc/${node.pid}/mountinfo`, 'utf8').split('\n').filter((l) => l.includes(runtime.runRoot) || l.includes(runtime.work));
      assert.deepEqual(mounts, []);
    } finally {
      cri?.close();
      await stopAndAssertClean(node, runtime);
      rmSync(templateRam, { recursive: true, force: true });
    }
  });

  it('on SIGTERM uninstalls hull exactly', async () => {
    const stop = await ctrd.ctr(['tasks', 'kill', '--signal', 'SIGTERM', 'hull-deploy']);
    assert.equal(stop.code, 0, stop.stderr);
    // The entrypoint's last line before `exit 0`; with `set -e` a failed step would end it earlier.
    const output = await finish('hull-deploy');
    assert.match(output, /hull-deploy: hull is installed\n/);
    assert.match(output, /\nhull uninstall: 5 change\(s\)\nhull-deploy: hull is uninstalled\n$/);

    // Back to the node as it was, but for the guest image, which uninstall keeps (deploy/README.md).
    const now = snapshot(host);
    const guest = at('/var/lib/hull/guest');
    const kept = Object.keys(now).filter((p) => p.startsWith(`${guest}`) && !(p in before0));
    assert.deepEqual(kept.sort(), [guest, `${guest}/current`, `${guest}/${image.guestImageId}`, ...readdirSync(join(guest, image.guestImageId)).map((f) => `${guest}/${image.guestImageId}/${f}`)].sort());
    for (const p of kept) delete now[p];
    assert.deepEqual(now, before0);
  });

  it('after a SIGKILL, which undoes nothing, the image run with "uninstall" does', async () => {
    await start('hull-deploy-2', container.args);
    await waitReady('hull-deploy-2');
    assert.match(readFileSync(at('/etc/containerd/config.toml'), 'utf8'), /runtimes\.hull\]/);
    await ctrd.ctr(['tasks', 'kill', '--signal', 'SIGKILL', 'hull-deploy-2']);
    const killed = await finish('hull-deploy-2');
    assert.doesNotMatch(killed, /uninstall/);
    // The link names the node's /opt/hull: here it dangles, so look at the link itself.
    assert.equal(readlinkSync(at('/usr/local/bin/hull')), '/opt/hull/bin/hull', 'a killed installer leaves hull installed');

    await start('hull-undeploy', ['uninstall']);
    const output = await finish('hull-undeploy');
    assert.match(output, /\nhull uninstall: 5 change\(s\)\nhull-deploy: hull is uninstalled\n$/);
    assert.equal(readFileSync(at('/etc/containerd/config.toml'), 'utf8'), NODE_CONFIG);
    assert.deepEqual(readdirSync(at('/usr/local/bin')), ['crictl']);
    assert.deepEqual(readdirSync(at('/etc/hull')), []);
    assert.deepEqual(readdirSync(at('/opt/hull')), []);
  });
});
