/**
 * deploy/*.yaml checked offline. kubectl cannot validate without an API server (even `create
 * --dry-run=client` asks the server for its resource list and OpenAPI schema), but `kubectl label
 * --local` parses the files the way kubectl does and prints them as JSON without one. The schema
 * check on that JSON is ours: kinds and apiVersions, the fields of the pod template (unknown field
 * names are typos), references between the objects, and what hull depends on (the handler is the
 * runtime `hull install` adds, the node label the RuntimeClass selects is the one the DaemonSet
 * sets, every host path hull install writes is mounted at the same path).
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { before, describe, it } from 'node:test';
import { DEFAULT_CONFIG } from '../../src/config/index.js';
import { DEFAULT_BIN_DIR, DEFAULT_CONTAINERD_CONFIG, DEFAULT_RUNTIME_NAME } from '../../src/cli/install.js';
import { installerRef } from '../../packaging/installer-image.js';
import { RUNTIME_PREFIX } from '../../packaging/node-runtime.js';

const DEPLOY = fileURLToPath(new URL('../../../deploy/', import.meta.url));
const NAMESPACE = 'hull-system';
const NODE_LABEL = 'hull.dev/enabled';
const VERSION = (JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { version: string }).version;
const INSTALLER_REF = installerRef(VERSION);
const READY_FILE = '/tmp/hull-deploy.ready';
// Where the hull-monitor DaemonSet mounts its token Secret (deploy/README.md, Monitoring).
const MONITOR_TOKEN_DIR = '/etc/hull-monitor';

type Obj = Record<string, any>;

function kubectl(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile('kubectl', args, { timeout: 60_000, maxBuffer: 16 * 1024 * 1024, env: { ...process.env, KUBECONFIG: '/dev/null' } }, (e, stdout, stderr) => {
      resolve({ code: e ? (typeof e.code === 'number' ? e.code : -1) : 0, stdout: String(stdout), stderr: e && !stderr ? e.message : String(stderr) });
    });
  });
}

/** splitJson splits kubectl's stream of pretty-printed JSON objects. */
function splitJson(text: string): Obj[] {
  const out: Obj[] = [];
  let depth = 0;
  let start = -1;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (inString) {
      if (c === '\\') i++;
      else if (c === '"') inString = false;
    } else if (c === '"') {
      inString = true;
    } else if (c === '{') {
      if (depth++ === 0) start = i;
    } else if (c === '}' && --depth === 0) {
      out.push(JSON.parse(text.slice(start, i + 1)) as Obj);
    }
  }
  return out;
}

/** loadManifests reads deploy/ through kubectl, which parses every .yaml there (and nothing else). */
async function loadManifests(): Promise<Obj[]> {
  // Removing a label that is not there changes nothing but makes kubectl print every object.
  const r = await kubectl(['label', '--local', '-f', DEPLOY, '-o', 'json', 'hull.dev/deploy-test-']);
  assert.equal(r.code, 0, `kubectl cannot read deploy/: ${r.stderr}`);
  return splitJson(r.stdout).map((o) => {
    if (o['metadata']?.labels && Object.keys(o['metadata'].labels).length === 0) delete o['metadata'].labels;
    return o;
  });
}

const API_VERSION: Record<string, string> = {
  Namespace: 'v1',
  ServiceAccount: 'v1',
  ClusterRole: 'rbac.authorization.k8s.io/v1',
  ClusterRoleBinding: 'rbac.authorization.k8s.io/v1',
  DaemonSet: 'apps/v1',
  RuntimeClass: 'node.k8s.io/v1',
};
const CLUSTER_SCOPED = new Set(['Namespace', 'ClusterRole', 'ClusterRoleBinding', 'RuntimeClass']);

// Field names of the Kubernetes 1.29 API types the manifests use; anything else is a typo.
const FIELDS = {
  top: { Namespace: ['spec'], ServiceAccount: ['automountServiceAccountToken', 'imagePullSecrets', 'secrets'], ClusterRole: ['rules', 'aggregationRule'], ClusterRoleBinding: ['roleRef', 'subjects'], DaemonSet: ['spec'], RuntimeClass: ['handler', 'overhead', 'scheduling'] } as Record<string, string[]>,
  meta: ['name', 'namespace', 'labels', 'annotations'],
  daemonSetSpec: ['minReadySeconds', 'revisionHistoryLimit', 'selector', 'template', 'updateStrategy'],
  podSpec: [
    'activeDeadlineSeconds', 'affinity', 'automountServiceAccountToken', 'containers', 'dnsConfig', 'dnsPolicy', 'enableServiceLinks', 'ephemeralContainers',
    'hostAliases', 'hostIPC', 'hostNetwork', 'hostPID', 'hostUsers', 'hostname', 'imagePullSecrets', 'initContainers', 'nodeName', 'nodeSelector', 'os',
    'overhead', 'preemptionPolicy', 'priority', 'priorityClassName', 'readinessGates', 'resourceClaims', 'restartPolicy', 'runtimeClassName',
    'schedulerName', 'schedulingGates', 'securityContext', 'serviceAccount', 'serviceAccountName', 'setHostnameAsFQDN', 'shareProcessNamespace',
    'subdomain', 'terminationGracePeriodSeconds', 'tolerations', 'topologySpreadConstraints', 'volumes',
  ],
  container: [
    'args', 'command', 'env', 'envFrom', 'image', 'imagePullPolicy', 'lifecycle', 'livenessProbe', 'name', 'ports', 'readinessProbe', 'resizePolicy',
    'resources', 'restartPolicy', 'securityContext', 'startupProbe', 'stdin', 'stdinOnce', 'terminationMessagePath', 'terminationMessagePolicy', 'tty',
    'volumeDevices', 'volumeMounts', 'workingDir',
  ],
  volumeMount: ['mountPath', 'mountPropagation', 'name', 'readOnly', 'subPath', 'subPathExpr'],
  volume: ['name', 'hostPath', 'secret'],
  secretVolume: ['secretName', 'optional', 'defaultMode', 'items'],
  podSecurityContext: ['fsGroup', 'fsGroupChangePolicy', 'runAsGroup', 'runAsNonRoot', 'runAsUser', 'seccompProfile', 'seLinuxOptions', 'supplementalGroups', 'sysctls', 'windowsOptions'],
  securityContext: ['allowPrivilegeEscalation', 'capabilities', 'privileged', 'procMount', 'readOnlyRootFilesystem', 'runAsGroup', 'runAsNonRoot', 'runAsUser', 'seccompProfile', 'seLinuxOptions', 'windowsOptions'],
  hostPath: ['path', 'type'],
  env: ['name', 'value', 'valueFrom'],
  runtimeClassOverhead: ['podFixed'],
  runtimeClassScheduling: ['nodeSelector', 'tolerations'],
  policyRule: ['apiGroups', 'resources', 'verbs', 'resourceNames', 'nonResourceURLs'],
};
const HOST_PATH_TYPES = ['', 'DirectoryOrCreate', 'Directory', 'FileOrCreate', 'File', 'Socket', 'CharDevice', 'BlockDevice'];
const DNS_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/;
const QUANTITY = /^\d+(\.\d+)?(m|k|M|G|T|Ki|Mi|Gi|Ti)?$/;

/** problems lists what is wrong with the deploy objects; empty when they are fine. */
function problems(objects: Obj[]): string[] {
  const out: string[] = [];
  const where = (o: Obj): string => `${o['kind']}/${o['metadata']?.name}`;
  const fields = (what: string, value: unknown, allowed: string[], required: string[] = []): void => {
    if (typeof value !== 'object' || value === null || Array.isArray(value)) {
      out.push(`${what}: not an object`);
      return;
    }
    for (const k of Object.keys(value)) if (!allowed.includes(k)) out.push(`${what}: unknown field "${k}"`);
    for (const k of required) if ((value as Obj)[k] === undefined) out.push(`${what}: missing "${k}"`);
  };
  const strings = (what: string, value: unknown): void => {
    if (typeof value !== 'object' || value === null) return;
    for (const [k, v] of Object.entries(value)) if (typeof v !== 'string') out.push(`${what}["${k}"] is ${typeof v}, not a string`);
  };

  for (const o of objects) {
    const kind = String(o['kind']);
    if (!(kind in API_VERSION)) {
      out.push(`unexpected kind ${kind}`);
      continue;
    }
    if (o['apiVersion'] !== API_VERSION[kind]) out.push(`${where(o)}: apiVersion ${o['apiVersion']}, expected ${API_VERSION[kind]}`);
    fields(where(o), o, ['apiVersion', 'kind', 'metadata', ...FIELDS.top[kind]!], ['apiVersion', 'kind', 'metadata']);
    fields(`${where(o)} metadata`, o['metadata'], FIELDS.meta, ['name']);
    const name = o['metadata']?.name;
    if (typeof name !== 'string' || !(kind === 'Namespace' ? DNS_LABEL : DNS_SUBDOMAIN).test(name)) out.push(`${where(o)}: invalid name`);
    if (CLUSTER_SCOPED.has(kind) && o['metadata']?.namespace !== undefined) out.push(`${where(o)}: cluster-scoped but has a namespace`);
    if (!CLUSTER_SCOPED.has(kind) && o['metadata']?.namespace !== NAMESPACE) out.push(`${where(o)}: namespace ${o['metadata']?.namespace}, expected ${NAMESPACE}`);
    strings(`${where(o)} labels`, o['metadata']?.labels);
  }

  const find = (kind: string, name: string): Obj | undefined => objects.find((o) => o['kind'] === kind && o['metadata']?.name === name);
  const expected = [['Namespace', NAMESPACE], ['ServiceAccount', 'hull-deploy'], ['ClusterRole', 'hull-deploy'], ['ClusterRoleBinding', 'hull-deploy'], ['DaemonSet', 'hull-deploy'], ['DaemonSet', 'hull-monitor'], ['RuntimeClass', DEFAULT_RUNTIME_NAME]];
  for (const [kind, name] of expected) if (!find(kind!, name!)) out.push(`missing ${kind}/${name}`);
  if (objects.length !== expected.length) out.push(`${objects.length} objects, expected ${expected.length}`);

  // RuntimeClass: the handler is the runtime hull install adds; it selects the nodes hull-deploy labels.
  const rc = find('RuntimeClass', DEFAULT_RUNTIME_NAME);
  if (rc) {
    if (rc['handler'] !== DEFAULT_RUNTIME_NAME) out.push(`RuntimeClass handler ${rc['handler']}, expected ${DEFAULT_RUNTIME_NAME}`);
    fields('RuntimeClass overhead', rc['overhead'], FIELDS.runtimeClassOverhead, ['podFixed']);
    const fixed = rc['overhead']?.podFixed ?? {};
    for (const r of ['cpu', 'memory']) if (typeof fixed[r] !== 'string' || !QUANTITY.test(fixed[r])) out.push(`RuntimeClass overhead.podFixed.${r} is not a quantity: ${JSON.stringify(fixed[r])}`);
    fields('RuntimeClass scheduling', rc['scheduling'], FIELDS.runtimeClassScheduling, ['nodeSelector']);
    strings('RuntimeClass scheduling.nodeSelector', rc['scheduling']?.nodeSelector);
    if (rc['scheduling']?.nodeSelector?.[NODE_LABEL] !== 'true') out.push(`RuntimeClass does not select ${NODE_LABEL}="true"`);
  }

  // RBAC: the service account may get and patch nodes, nothing more.
  const role = find('ClusterRole', 'hull-deploy');
  if (role) {
    for (const [i, rule] of (role['rules'] ?? []).entries()) fields(`ClusterRole rule ${i}`, rule, FIELDS.policyRule, ['verbs']);
    const rules = JSON.stringify(role['rules']);
    if (rules !== JSON.stringify([{ apiGroups: [''], resources: ['nodes'], verbs: ['get', 'patch'] }])) out.push(`ClusterRole rules are ${rules}, expected get/patch on nodes only`);
  }
  const binding = find('ClusterRoleBinding', 'hull-deploy');
  if (binding) {
    const ref = binding['roleRef'] ?? {};
    if (ref.apiGroup !== 'rbac.authorization.k8s.io' || ref.kind !== 'ClusterRole' || !find('ClusterRole', ref.name)) out.push(`ClusterRoleBinding roleRef ${JSON.stringify(ref)} names no ClusterRole here`);
    const subjects = binding['subjects'] ?? [];
    if (!subjects.some((s: Obj) => s['kind'] === 'ServiceAccount' && s['namespace'] === NAMESPACE && find('ServiceAccount', s['name']))) out.push('ClusterRoleBinding binds no ServiceAccount of this file');
  }

  /** podOf checks a DaemonSet's spec and selector and returns its pod spec and the hostPath volumes by name. */
  const podOf = (ds: Obj): { pod: Obj; volumes: Map<string, Obj> } => {
    const name = ds['metadata']?.name;
    fields(`DaemonSet ${name} spec`, ds['spec'], FIELDS.daemonSetSpec, ['selector', 'template']);
    const selector: Obj = ds['spec']?.selector?.matchLabels ?? {};
    const labels: Obj = ds['spec']?.template?.metadata?.labels ?? {};
    if (Object.keys(selector).length === 0 || !Object.entries(selector).every(([k, v]) => labels[k] === v)) out.push(`DaemonSet ${name} selector does not match its template labels`);
    const pod: Obj = ds['spec']?.template?.spec ?? {};
    fields(`${name} pod spec`, pod, FIELDS.podSpec, ['containers']);
    fields(`${name} pod securityContext`, pod['securityContext'] ?? {}, FIELDS.podSecurityContext);
    strings(`${name} nodeSelector`, pod['nodeSelector']);
    const volumes = new Map<string, Obj>();
    for (const v of pod['volumes'] ?? []) {
      fields(`volume ${v.name}`, v, FIELDS.volume, ['name']);
      if (v.hostPath !== undefined) {
        fields(`volume ${v.name} hostPath`, v.hostPath, FIELDS.hostPath, ['path']);
        if (!HOST_PATH_TYPES.includes(v.hostPath?.type ?? '')) out.push(`volume ${v.name}: hostPath type ${v.hostPath?.type}`);
      } else if (v.secret !== undefined) fields(`volume ${v.name} secret`, v.secret, FIELDS.secretVolume, ['secretName']);
      else out.push(`volume ${v.name}: neither hostPath nor secret`);
      volumes.set(v.name, v);
    }
    return { pod, volumes };
  };
  /** mountsOf checks a container's fields and mounts; returns its mounts by mountPath. */
  const mountsOf = (c: Obj, volumes: Map<string, Obj>): Map<string, Obj> => {
    fields(`container ${c.name}`, c, FIELDS.container, ['name', 'image']);
    fields(`container ${c.name} securityContext`, c.securityContext ?? {}, FIELDS.securityContext);
    fields(`container ${c.name} capabilities`, c.securityContext?.capabilities ?? {}, ['add', 'drop']);
    // Each container runs the installer image's entrypoint (entrypoint.sh, checked below); the pod names the mode.
    if (c.image !== INSTALLER_REF) out.push(`container ${c.name}: image ${c.image}, expected ${INSTALLER_REF} (make oci-image)`);
    if (c.command !== undefined) out.push(`container ${c.name}: command replaces the installer image's entrypoint`);
    for (const e of c.env ?? []) fields(`env ${e.name}`, e, FIELDS.env, ['name']);
    const mounted = new Map<string, Obj>();
    for (const m of c.volumeMounts ?? []) {
      fields(`volumeMount ${m.name}`, m, FIELDS.volumeMount, ['name', 'mountPath']);
      const v = volumes.get(m.name);
      if (!v) out.push(`volumeMount ${m.name}: no such volume`);
      // hull install writes host paths (links, ConfigPath): each host directory sits at its own path.
      else if (v.hostPath && v.hostPath.path !== m.mountPath) out.push(`volumeMount ${m.name}: mounted at ${m.mountPath}, host path ${v.hostPath?.path}`);
      mounted.set(m.mountPath, m);
    }
    return mounted;
  };

  const ds = find('DaemonSet', 'hull-deploy');
  if (ds) {
    const { pod, volumes } = podOf(ds);
    if (pod['serviceAccountName'] !== 'hull-deploy' || !find('ServiceAccount', pod['serviceAccountName'])) out.push('pod spec: serviceAccountName is not the ServiceAccount of this file');
    if (pod['hostPID'] !== true) out.push('pod spec: hostPID must be true (hull install looks at the host PID 1 to restart containerd)');
    const containers: Obj[] = pod['containers'] ?? [];
    const names = containers.map((c) => c.name).join(', ');
    if (names !== 'hull-deploy') out.push(`hull-deploy pod spec: containers ${names}, expected hull-deploy`);
    for (const c of containers) {
      const mounted = mountsOf(c, volumes);
      if (c.securityContext?.privileged !== true) out.push(`container ${c.name}: not privileged`);
      const nodeName = (c.env ?? []).find((e: Obj) => e.name === 'NODE_NAME');
      if (nodeName?.valueFrom?.fieldRef?.fieldPath !== 'spec.nodeName') out.push('NODE_NAME does not come from the downward API (spec.nodeName)');
      const needed = [dirname(DEFAULT_CONTAINERD_CONFIG), DEFAULT_BIN_DIR, '/etc/hull', dirname(DEFAULT_CONFIG.guestImagesDir), '/opt/hull', '/run/systemd'];
      for (const path of needed) if (!mounted.has(path)) out.push(`container ${c.name}: host path ${path} is not mounted`);
      if (JSON.stringify(c.args ?? ['install']) !== '["install"]') out.push(`container ${c.name}: args ${JSON.stringify(c.args)}, expected ["install"]`);
      if (JSON.stringify(c.readinessProbe?.exec?.command) !== JSON.stringify(['test', '-f', READY_FILE])) out.push(`container ${c.name}: the readiness probe does not test ${READY_FILE}`);
    }
  }

  // hull-monitor: only reads, as an unprivileged user with no capability, in a pod of its own.
  const monitor = find('DaemonSet', 'hull-monitor');
  if (monitor) {
    const { pod, volumes } = podOf(monitor);
    if (pod['hostPID'] === true) out.push('hull-monitor pod spec: hostPID (the monitor reads no host /proc)');
    if (pod['hostNetwork'] !== true) out.push('hull-monitor pod spec: hostNetwork must be true (hull monitor serves on the node\'s address)');
    if (pod['automountServiceAccountToken'] !== false) out.push('hull-monitor pod spec: a service account token is mounted (it talks to no API server)');
    if (pod['nodeSelector']?.[NODE_LABEL] !== 'true') out.push(`hull-monitor pod spec: does not select ${NODE_LABEL}="true"`);
    const podSc: Obj = pod['securityContext'] ?? {};
    const containers: Obj[] = pod['containers'] ?? [];
    if (containers.map((c) => c.name).join(', ') !== 'hull-monitor') out.push(`hull-monitor pod spec: containers ${containers.map((c) => c.name).join(', ')}, expected hull-monitor`);
    for (const c of containers) {
      const mounted = mountsOf(c, volumes);
      const sc: Obj = c.securityContext ?? {};
      if (JSON.stringify(c.args) !== '["monitor"]') out.push(`container ${c.name}: args ${JSON.stringify(c.args)}, expected ["monitor"]`);
      const uid = sc['runAsUser'] ?? podSc['runAsUser'];
      const gid = sc['runAsGroup'] ?? podSc['runAsGroup'];
      if ((sc['runAsNonRoot'] ?? podSc['runAsNonRoot']) !== true || !Number.isInteger(uid) || uid === 0) out.push(`container ${c.name}: not run as a non-root uid (runAsNonRoot, runAsUser ${uid})`);
      // The status sockets are for monitor_gid: the container runs as that group.
      if (gid !== DEFAULT_CONFIG.monitorGid) out.push(`container ${c.name}: runAsGroup ${gid}, expected monitor_gid's default ${DEFAULT_CONFIG.monitorGid}`);
      if (sc['privileged'] === true) out.push(`container ${c.name}: privileged`);
      if (sc['allowPrivilegeEscalation'] !== false) out.push(`container ${c.name}: allowPrivilegeEscalation is not false`);
      if (sc['readOnlyRootFilesystem'] !== true) out.push(`container ${c.name}: readOnlyRootFilesystem is not true`);
      if (JSON.stringify(sc['capabilities']?.drop) !== '["ALL"]' || (sc['capabilities']?.add ?? []).length > 0) out.push(`container ${c.name}: capabilities ${JSON.stringify(sc['capabilities'])}, expected drop ["ALL"] and none added`);
      if ((sc['seccompProfile'] ?? podSc['seccompProfile'])?.type !== 'RuntimeDefault') out.push(`container ${c.name}: no RuntimeDefault seccomp profile`);
      // It reads hull's config, the status sockets and its token; never run_root (the root-only debug sockets).
      const needed = ['/etc/hull', DEFAULT_CONFIG.statusDir, MONITOR_TOKEN_DIR];
      if ([...mounted.keys()].sort().join() !== needed.sort().join()) out.push(`container ${c.name}: mounts ${[...mounted.keys()].join(', ')}, expected ${needed.join(', ')}`);
      for (const [path, m] of mounted) if (m.readOnly !== true) out.push(`container ${c.name}: ${path} is not read-only`);
      const token = volumes.get(mounted.get(MONITOR_TOKEN_DIR)?.name);
      if (token?.secret?.optional !== true) out.push(`container ${c.name}: the token volume is not an optional secret`);
    }
  }
  return out;
}

describe('deploy/ manifests', () => {
  let objects: Obj[] = [];

  before(async () => {
    const v = await kubectl(['version', '--client']);
    assert.equal(v.code, 0, `kubectl not found (scripts/install-deps.sh installs Debian's kubernetes-client): ${v.stderr}`);
    objects = await loadManifests();
  });

  it('parse with kubectl, without a cluster', () => {
    assert.deepEqual(objects.map((o) => `${o['kind']}/${o['metadata']?.name}`).sort(), [
      'ClusterRole/hull-deploy',
      'ClusterRoleBinding/hull-deploy',
      'DaemonSet/hull-deploy',
      'DaemonSet/hull-monitor',
      'Namespace/hull-system',
      'RuntimeClass/hull',
      'ServiceAccount/hull-deploy',
    ]);
  });

  it('pass the schema and reference checks', () => {
    assert.deepEqual(problems(objects), []);
  });

  it('the checks catch a typo, an unquoted "true" and a dangling reference', () => {
    const broken = structuredClone(objects);
    const ds = broken.find((o) => o['kind'] === 'DaemonSet')!;
    ds['spec'].template.spec.hostPid = true;
    ds['spec'].template.spec.containers[0].volumeMounts[0].name = 'nope';
    broken.find((o) => o['kind'] === 'RuntimeClass')!['scheduling'].nodeSelector[NODE_LABEL] = true;
    const found = problems(broken).join('\n');
    assert.match(found, /pod spec: unknown field "hostPid"/);
    assert.match(found, /volumeMount nope: no such volume/);
    assert.match(found, /nodeSelector\["hull.dev\/enabled"\] is boolean/);
  });

  it('the checks catch a monitor that may escalate, keeps a capability, sees the host PIDs or mounts run_root', () => {
    const broken = structuredClone(objects);
    const pod = broken.find((o) => o['kind'] === 'DaemonSet' && o['metadata'].name === 'hull-monitor')!['spec'].template.spec;
    pod.hostPID = true;
    pod.securityContext.runAsUser = 0;
    const c = pod.containers[0];
    c.securityContext.capabilities = { drop: ['NET_RAW'] };
    c.securityContext.readOnlyRootFilesystem = false;
    delete c.securityContext.allowPrivilegeEscalation;
    pod.volumes.push({ name: 'hull-run', hostPath: { path: DEFAULT_CONFIG.runRoot, type: 'DirectoryOrCreate' } });
    c.volumeMounts.push({ name: 'hull-run', mountPath: DEFAULT_CONFIG.runRoot, readOnly: true });
    const found = problems(broken).join('\n');
    for (const m of [/hull-monitor pod spec: hostPID/, /not run as a non-root uid/, /capabilities .*expected drop \["ALL"\]/, /readOnlyRootFilesystem is not true/, /allowPrivilegeEscalation is not false/, /mounts .*\/run\/hull,/]) assert.match(found, m);
  });

  it("the installer image's entrypoint installs, labels, and on TERM takes both back", () => {
    const script = readFileSync(join(DEPLOY, 'entrypoint.sh'), 'utf8');
    assert.match(script, /^"\$OPT\/bin\/hull" install --restart-containerd "\$RESTART" --skip-check$/m, 'runs hull install from the host path /opt/hull');
    assert.ok(script.includes(`kubectl label node "$NODE_NAME" ${NODE_LABEL}=true --overwrite`), `labels its node ${NODE_LABEL}=true`);
    assert.ok(script.includes(`kubectl label node "$NODE_NAME" ${NODE_LABEL}-`), `takes the ${NODE_LABEL} label off`);
    assert.match(script, /^ {2}\$HULL_CLI uninstall --restart-containerd "\$RESTART"$/m, 'runs hull uninstall');
    // The node runtime's programs name their loader under RUNTIME_PREFIX: the entrypoint must copy hull there.
    assert.match(script, new RegExp(`^OPT=${dirname(RUNTIME_PREFIX)}$`, 'm'), `copies hull to ${dirname(RUNTIME_PREFIX)}`);
    assert.match(script, /^trap 'undo; exit 0' TERM INT$/m, 'undoes on TERM and INT');
    assert.match(script, /^ {2}monitor\)\n(?: {4}#.*\n)* {4}exec \$HULL_CLI monitor$/m, 'the monitor mode execs hull monitor');
    assert.ok(script.includes(`READY=${READY_FILE}`), 'marks itself ready where the readiness probe looks');
  });

  it('kubectl refuses YAML that does not parse', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'hull-deploy-'));
    try {
      writeFileSync(join(dir, 'bad.yaml'), 'apiVersion: v1\nkind: Namespace\nmetadata:\n  name: [unclosed\n');
      const r = await kubectl(['label', '--local', '-f', dir, '-o', 'json', 'x-']);
      assert.notEqual(r.code, 0);
      assert.match(r.stderr, /bad\.yaml/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('deploy/monitoring', () => {
  const monitoring = join(DEPLOY, 'monitoring');
  /** expected lists the metric families deploy/README.md says hull monitor exports. */
  const expected = (): Set<string> => {
    const readme = readFileSync(join(DEPLOY, 'README.md'), 'utf8');
    const section = readme.slice(readme.indexOf('Metric families expected from hull monitor'));
    return new Set(section.match(/\bhull_[a-z_]+/g) ?? []);
  };

  it('the Grafana dashboard is valid JSON whose queries use only the families hull monitor exports', () => {
    const dashboard = JSON.parse(readFileSync(join(monitoring, 'grafana-dashboard.json'), 'utf8')) as Obj;
    assert.equal(typeof dashboard['title'], 'string');
    assert.match(String(dashboard['uid']), /^[\w-]{1,40}$/);
    const panels: Obj[] = dashboard['panels'];
    assert.ok(Array.isArray(panels) && panels.length > 0);
    assert.equal(new Set(panels.map((p) => p['id'])).size, panels.length, 'panel ids are unique');
    const families = expected();
    assert.ok(families.size >= 20, `deploy/README.md lists ${families.size} families`);
    const used = new Set<string>();
    for (const p of panels) {
      const g = p['gridPos'];
      assert.ok(g && g.x >= 0 && g.w > 0 && g.x + g.w <= 24 && g.h > 0, `panel "${p['title']}" fits the 24-column grid`);
      assert.ok(Array.isArray(p['targets']) && p['targets'].length > 0, `panel "${p['title']}" has queries`);
      for (const t of p['targets']) {
        assert.equal(typeof t.expr, 'string', `panel "${p['title']}" query ${t.refId} has an expression`);
        for (const name of t.expr.match(/\bhull_[a-z_]+/g) ?? []) used.add(name.replace(/_(bucket|count|sum)$/, ''));
      }
    }
    const unknown = [...used].filter((n) => !families.has(n));
    assert.deepEqual(unknown, [], 'queried but not in the README\'s list of families');
    // What the issue asks the dashboard to show: pods, start times, memory and CPU per sandbox.
    for (const name of ['hull_sandbox_vcpus', 'hull_sandbox_start_time_seconds', 'hull_process_pss_bytes', 'hull_process_cpu_seconds_total']) {
      assert.ok(used.has(name), `the dashboard shows ${name}`);
    }
  });

  it('the scrape config targets hull monitor on labelled nodes and on loopback', () => {
    const text = readFileSync(join(monitoring, 'prometheus-scrape.yaml'), 'utf8');
    assert.match(text, /^scrape_configs:$/m);
    assert.match(text, /^ {2}- job_name: hull$/m);
    assert.match(text, /metrics_path: \/metrics/);
    // Prometheus turns the node label hull.dev/enabled into __meta_kubernetes_node_label_hull_dev_enabled.
    assert.ok(text.includes(`__meta_kubernetes_node_label_${NODE_LABEL.replace(/[^\w]/g, '_')}`));
    assert.match(text, /replacement: '\$\{1\}:8090'/);
    assert.match(text, /targets: \['127\.0\.0\.1:8090'\]/);
    // The node-address job sends the bearer token hull monitor asks beyond loopback.
    assert.match(text, /- job_name: hull\n(?: {4}.*\n)* {4}authorization:\n {6}type: Bearer\n {6}credentials_file: \S+/);
    assert.doesNotMatch(text, /\t/, 'YAML has no tabs');
  });
});
