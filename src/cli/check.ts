/**
 * `hull check`: is this host ready to run hull sandboxes? Each line says
 * what was checked and what was found; the exit status is non-zero when
 * something required is missing.
 */
import { access, constants, readFile, realpath, statfs } from 'node:fs/promises';
import { dirname } from 'node:path';
import { run } from '../common/run.js';
import type { HullConfig } from '../config/index.js';
import { currentGuestImage } from '../guest/index.js';
import { guardRuleset } from '../net/index.js';
import { JAIL_CAPABILITIES, JAIL_RLIMITS, chooseAccel, findExecutable, jailSystemDir, readHostFacts } from '../vmm/index.js';

export interface CheckLine {
  ok: boolean;
  what: string;
  detail: string;
  required: boolean;
}

function version(file: string, args: string[]): Promise<string | undefined> {
  return run(file, args).then((r) => r.stdout.split('\n')[0]?.trim(), () => undefined);
}

export async function checkHost(config: HullConfig): Promise<CheckLine[]> {
  const lines: CheckLine[] = [];
  const qemu = await version('qemu-system-x86_64', ['--version']);
  lines.push({ ok: qemu !== undefined, what: 'QEMU', detail: qemu ?? 'qemu-system-x86_64 not found (apt-get install qemu-system-x86)', required: true });
  try {
    const choice = await chooseAccel(config.accel, await readHostFacts());
    lines.push({ ok: true, what: 'accelerator', detail: `${choice.accel}: ${choice.reason}`, required: true });
  } catch (e) {
    lines.push({ ok: false, what: 'accelerator', detail: (e as Error).message, required: true });
  }
  const image = await currentGuestImage(config.guestImagesDir).catch(() => undefined);
  lines.push({
    ok: image !== undefined,
    what: 'guest image',
    detail: image ? `${image.id} (kernel ${image.kernelRelease}) in ${image.dir}` : `none in ${config.guestImagesDir} (run: hull image build)`,
    required: true,
  });
  // Only `hull image build` copies crun into a guest: a node given a built guest image (the installer image's) needs none.
  const crun = await version('crun', ['--version']);
  lines.push({ ok: crun !== undefined, what: 'crun (for hull image build)', detail: crun ?? 'not found: hull image build needs it (apt-get install crun); the current guest image has its own', required: image === undefined });
  const mountBinary = await version('mount', ['--version']);
  lines.push({ ok: mountBinary !== undefined, what: 'mount', detail: mountBinary ?? 'util-linux mount not found', required: true });
  const filesystems = await readFile('/proc/filesystems', 'utf8').catch(() => '');
  lines.push({ ok: /\btmpfs\b/.test(filesystems), what: 'tmpfs', detail: 'needed for /run/hull', required: true });
  const tun = await access('/dev/net/tun', constants.R_OK | constants.W_OK).then(() => true, () => false);
  lines.push({ ok: tun, what: '/dev/net/tun', detail: tun ? 'taps for pod networking can be made' : 'missing: pod networking needs the tun device (modprobe tun)', required: true });
  for (const [tool, flag, pkg, why] of [
    ['nsenter', '--version', 'util-linux', 'runs QEMU and network setup inside the pod netns'],
    ['setpriv', '--version', 'util-linux', 'makes a VM die with its shim; drops the jailed QEMU to its uid and capabilities'],
    ['unshare', '--version', 'util-linux', 'gives each jailed QEMU its own mount and PID namespaces'],
    ['busybox', '--help', 'busybox-static', 'builds each QEMU\'s jail (its shell and mount applets) and sets its rlimits'],
    ['tc', '-V', 'iproute2', 'redirects the pod veth to the VM tap'],
    ['iptables', '--version', 'iptables', 'port-forward into VM pods'],
    ['nft', '--version', 'nftables', 'filters what a VM sends: only its pod\'s own MAC and addresses reach the network'],
  ] as const) {
    const found = await version(tool, [flag]);
    lines.push({ ok: found !== undefined, what: tool, detail: found !== undefined ? why : `not found (apt-get install ${pkg}): ${why}`, required: true });
  }
  lines.push(await checkGuardKernel());
  lines.push(...(await checkJail(config)));
  if (config.templates) lines.push(await checkTemplateRamDir(config.templateRamDir));
  const vhostVsock = await access('/dev/vhost-vsock', constants.R_OK | constants.W_OK).then(() => true, () => false);
  lines.push({ ok: true, what: 'agent transport', detail: vhostVsock ? 'virtio-serial (vhost-vsock present, not used yet)' : 'virtio-serial (no /dev/vhost-vsock)', required: false });
  return lines;
}

/**
 * checkGuardKernel asks the kernel (nft --check, in a throwaway network
 * namespace) whether it takes the anti-spoofing guard: nftables netdev
 * ingress hooks, `fwd`, ARP and raw payload matches. Without them no pod can start.
 */
async function checkGuardKernel(): Promise<CheckLine> {
  const what = 'nftables netdev guard (kernel)';
  const script = guardRuleset({ mac: '02:00:00:00:00:01', addresses: ['10.0.0.1/24', 'fd00::1/64'], tap: 'lo', veth: 'lo', localAddress: '169.254.100.1' });
  const r = await run('unshare', ['--net', '--', 'nft', '--check', '-f', '-'], { input: script, allowFailure: true }).catch((e: Error) => ({ code: -1, stderr: e.message }));
  return r.code !== 0
    ? { ok: false, what, detail: `the kernel refuses the anti-spoofing ruleset (needs NF_TABLES_NETDEV, NFT_FWD_NETDEV, NETFILTER_INGRESS): ${r.stderr.trim().split('\n')[0] || `exit status ${r.code}`}`, required: true }
    : { ok: true, what, detail: 'netdev ingress hooks and fwd: only a pod\'s own MAC and addresses leave its VM', required: true };
}

/**
 * checkJail says which confinement QEMU gets here (jail.ts): required, so a config that turns it
 * off fails the check, and a host that cannot build the jail (no mount or PID namespaces, QEMU
 * outside /usr and hull's runtime) fails it too.
 */
async function checkJail(config: HullConfig): Promise<CheckLine[]> {
  const what = 'QEMU jail';
  if (!config.jail) {
    return [{ ok: false, what, detail: 'off (jail = false): QEMU runs as root with every capability in the host\'s mount and PID namespaces; set jail = true', required: true }];
  }
  const caps = JAIL_CAPABILITIES.join(', ');
  const namespaces = await run('unshare', ['--mount', '--pid', '--fork', '--', 'true']).then(() => true, () => false);
  const binary = await findExecutable('qemu-system-x86_64');
  const real = binary ? await realpath(binary).catch(() => binary) : undefined;
  let systemDir: string | undefined;
  let refusal = '';
  try {
    systemDir = jailSystemDir(real ?? '?');
  } catch (e) {
    refusal = (e as Error).message;
  }
  const ok = namespaces && systemDir !== undefined;
  const why = !namespaces ? 'the kernel refuses new mount and PID namespaces' : refusal;
  return [
    {
      ok,
      what,
      detail: ok
        ? `on: own mount and PID namespaces, ${systemDir} read-only, a uid of its own from ${config.jailUidBase}..${config.jailUidBase + config.jailUidCount - 1}, no_new_privs, seccomp (-sandbox), capabilities ${caps} only, rlimits core ${JAIL_RLIMITS.core}, nofile ${JAIL_RLIMITS.nofile}, nproc ${JAIL_RLIMITS.nproc}`
        : `cannot be built: ${why}`,
      required: true,
    },
  ];
}

/** Filesystems that keep files in memory (statfs f_type): tmpfs, hugetlbfs, ramfs. */
const MEMORY_FILESYSTEMS = new Set([0x01021994, 0x958458f6, 0x858458f6]);

/**
 * checkTemplateRamDir: template_ram_dir (or, before the first template, the nearest directory above
 * it that exists) must not be on tmpfs, where every page a clone touches stays allocated in the
 * template's file (src/factory/template.ts).
 */
async function checkTemplateRamDir(dir: string): Promise<CheckLine> {
  const what = 'template RAM directory';
  for (let at = dir; ; at = dirname(at)) {
    const fs = await statfs(at).catch(() => undefined);
    if (fs !== undefined) {
      const inMemory = MEMORY_FILESYSTEMS.has(fs.type);
      return { ok: !inMemory, what, detail: inMemory ? `${dir} is on tmpfs: clones would grow template files for good (set template_ram_dir on the node's disk)` : `${dir} on a disk file system`, required: true };
    }
    if (at === '/') return { ok: false, what, detail: `${dir}: no file system found`, required: true };
  }
}
