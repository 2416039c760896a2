/**
 * The hull config.toml that `hull install` writes: every key documented and commented out at its
 * default. `hull env` reads the same key list to show each key's effective value.
 */
import { DEFAULT_CONFIG, type HullConfig } from '../config/index.js';

/** ConfigKeyDoc documents one key of hull's config.toml; install writes it, `hull env` reads it. */
export interface ConfigKeyDoc {
  key: string;
  field: keyof HullConfig;
  doc: string[];
}

/** CONFIG_KEYS are the keys of config.toml (src/config/config.ts), in the order the file shows them. */
export const CONFIG_KEYS: readonly ConfigKeyDoc[] = [
  { key: 'default_vcpus', field: 'defaultVcpus', doc: ['vCPUs of a sandbox VM before the CPU limits of its containers are added (an integer 1..255).'] },
  { key: 'default_memory', field: 'defaultMemoryMiB', doc: ['Memory of a sandbox VM in MiB before the memory limits of its containers are added (an integer >= 128),', 'for pods with a container that has no memory limit.'] },
  {
    key: 'guest_slack_memory',
    field: 'guestSlackMemoryMiB',
    doc: [
      'MiB a pod VM gets beyond its containers\' memory limits when every container has one (an integer',
      '64..65536): what the guest itself needs (kernel, hull-agent, crun). Keep the RuntimeClass\'s',
      'overhead.podFixed at least this + 576 MiB under TCG (see README.md).',
    ],
  },
  {
    key: 'max_vcpus',
    field: 'maxVcpus',
    doc: ['The most vCPUs a sandbox VM may have, its containers\' CPU limits included (an integer 1..255): a pod', 'asking for more is refused when it is created, with the reason.'],
  },
  {
    key: 'max_memory',
    field: 'maxMemoryMiB',
    doc: ['The most memory in MiB a sandbox VM may have, its containers\' memory limits included (an integer', '>= 128, not below default_memory): a pod asking for more is refused when it is created, with the reason.'],
  },
  {
    key: 'accel',
    field: 'accel',
    doc: [
      'Accelerator: "auto" uses kvm only where /proc/cpuinfo shows vmx or svm and /dev/kvm opens, else tcg',
      '(software emulation: isolation holds, CPU-bound work is much slower). "kvm" or "tcg" force one.',
    ],
  },
  { key: 'guest_images_dir', field: 'guestImagesDir', doc: ['Where built guest images live (`hull image build` writes them; an absolute path).'] },
  {
    key: 'run_root',
    field: 'runRoot',
    doc: ['Per-sandbox state, <run_root>/<sandbox-id>/ (an absolute path; keep it short: unix socket paths', 'under it are limited to 107 bytes).'],
  },
  { key: 'boot_timeout_ms', field: 'bootTimeoutMs', doc: ['Bound in milliseconds on starting a VM until its agent answers (an integer >= 1000).'] },
  {
    key: 'templates',
    field: 'templates',
    doc: [
      'Start sandboxes as clones of a saved VM of the same image and size (fast, shared memory pages)',
      'instead of booting each; false boots every sandbox on its own (no pages shared between pods).',
    ],
  },
  { key: 'templates_dir', field: 'templatesDir', doc: ['Where VM template manifests and device states live (an absolute path).'] },
  { key: 'template_ram_dir', field: 'templateRamDir', doc: ['Where VM template RAM files live (an absolute path on a disk file system, never tmpfs: a clone\'s', 'touched pages would stay allocated in the template\'s file there).'] },
  {
    key: 'template_max_count',
    field: 'templateMaxCount',
    doc: [
      'At most this many VM templates are kept (one per image, vCPUs and memory size; an integer 1..1024).',
      'Making one more evicts the least recently used first.',
    ],
  },
  {
    key: 'template_max_ram_mib',
    field: 'templateMaxRamMiB',
    doc: [
      'At most this much in MiB is held allocated by template RAM files together (an integer >= 256; each',
      'template holds ~150-300 MiB, more for VMs of many GiB). A VM whose template cannot fit boots without one.',
    ],
  },
  {
    key: 'tcg_tb_size_mib',
    field: 'tcgTbSizeMiB',
    doc: [
      'MiB of TCG\'s translated-code buffer per VM (an integer 8..2048; unused under kvm). A pod holds what its',
      'guest ran (~48 MiB idle, ~76 after some execs): less saves host memory but slows every exec (code is',
      'translated again after each flush: 48 MiB ~1.7x, 32 MiB ~2.4x the time of an `exec true`).',
    ],
  },
  {
    key: 'memory_merge',
    field: 'memoryMerge',
    doc: [
      'Let the node\'s KSM (if /sys/kernel/mm/ksm/run is 1) merge equal guest pages across VMs: ~5 MiB less',
      'per idle pod, but pages shared between pods are a side channel across the isolation boundary.',
    ],
  },
  {
    key: 'jail',
    field: 'jail',
    doc: [
      'Confine each VM\'s QEMU: its own mount and PID namespaces rooted in the sandbox\'s directory, its own',
      'unprivileged uid, only the capabilities 9p needs, no_new_privs. false runs QEMU as root in the host\'s',
      'namespaces: `hull check` then fails.',
    ],
  },
  { key: 'jail_uid_base', field: 'jailUidBase', doc: ['First uid/gid leased to jailed VMs, one per VM; the range must hold no host user.'] },
  { key: 'jail_uid_count', field: 'jailUidCount', doc: ['How many uids the range holds: at most this many VMs run at once.'] },
  { key: 'monitor_listen', field: 'monitorListen', doc: ['Where `hull monitor` serves Prometheus /metrics ("HOST:PORT"; --listen overrides it).'] },
  {
    key: 'monitor_token_file',
    field: 'monitorTokenFile',
    doc: [
      'A file holding the bearer token every /metrics request must carry ("Authorization: Bearer <token>"),',
      'read when `hull monitor` starts; "" asks none. `hull monitor` refuses to serve on an address other than',
      'loopback without one (--token-file overrides it).',
    ],
  },
  {
    key: 'status_dir',
    field: 'statusDir',
    doc: [
      'Where each shim serves its sandbox\'s read-only status socket, <status_dir>/<sandbox-id>.sock (GET /status',
      'and /metrics only, for `hull monitor` and `hull ps`; an absolute path, keep it short).',
    ],
  },
  {
    key: 'monitor_gid',
    field: 'monitorGid',
    doc: [
      'The group that may connect to the status sockets (status_dir is root:<monitor_gid> 0750, each socket',
      '0660): the group `hull monitor` runs as (deploy/daemonset.yaml: 65532). No host user should have it.',
    ],
  },
  { key: 'log_level', field: 'logLevel', doc: ['The least severe lines the shim and `hull monitor` log (JSON lines): "debug", "info", "warn" or "error".'] },
  {
    key: 'debug_console',
    field: 'debugConsole',
    doc: ['Let root on this node run a shell or a command in a sandbox\'s guest, outside every container', '(`hull console`); each use is logged. Applies to sandboxes started after the change.'],
  },
  {
    key: 'pool_size',
    field: 'poolSize',
    doc: [
      'Warm VMs kept ready per VM shape by `hull pool serve` (started by the first pod that finds none),',
      'each a clone that already ran a throwaway container: a pod adopts one instead of starting its VM.',
      'Each ready VM holds host memory (`hull env` and `hull pool status` report it); 0 turns the pool off.',
    ],
  },
  { key: 'pool_dir', field: 'poolDir', doc: ['The VM pool\'s directory: its socket, its log, its VMs\' state and network namespace.'] },
  {
    key: 'pool_max_vcpus',
    field: 'poolMaxVcpus',
    doc: ['The pool keeps warm VMs of shapes up to this many vCPUs (an integer 1..255); larger pods start without it.'],
  },
  {
    key: 'pool_max_memory',
    field: 'poolMaxMemoryMiB',
    doc: ['The pool keeps warm VMs of shapes up to this much memory in MiB (an integer >= 128); larger pods start without it.'],
  },
  {
    key: 'pool_memory_limit',
    field: 'poolMemoryLimitMiB',
    doc: [
      'Memory limit in MiB of the pool\'s cgroup (ready VMs and the pool\'s owner; an integer >= 256). No warm-up',
      'starts when it would not fit. What a VM was charged before a pod adopted it stays charged here until it ends.',
    ],
  },
];

/** tomlValue formats a config default as TOML (strings are plain ASCII paths and words). */
function tomlValue(value: unknown): string {
  return typeof value === 'string' ? JSON.stringify(value) : String(value);
}

/**
 * hullConfigTemplate is the config.toml install writes: every key commented out at its default, so
 * the built-in defaults keep applying (also when a later hull changes one) until an admin sets a key.
 */
export function hullConfigTemplate(): string {
  const lines = [
    '# hull configuration, written by `hull install` (`hull uninstall` removes it while it is unchanged).',
    '# Every key is optional: a commented-out key shows its default. Unknown keys are errors.',
    '# `hull env` prints the effective value of each key and where it comes from.',
  ];
  for (const k of CONFIG_KEYS) {
    lines.push('', ...k.doc.map((d) => `# ${d}`), `# ${k.key} = ${tomlValue(DEFAULT_CONFIG[k.field])}`);
  }
  return lines.join('\n') + '\n';
}
