import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parse } from 'smol-toml';
import { DEFAULT_CONFIG, parseConfig } from '../config/index.js';
import {
  CONFIG_KEYS,
  hullConfigTemplate,
  managedBlock,
  planContainerdEdit,
  removeManagedBlock,
  restartDecision,
  installOptions,
} from './install.js';

const FILE = '/etc/containerd/config.toml';
const HULL_CONFIG = '/etc/hull/config.toml';

// Debian 12's shipped /etc/containerd/config.toml.
const DEBIAN = `version = 2

[plugins]
  [plugins."io.containerd.grpc.v1.cri"]
    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = "/usr/lib/cni"
      conf_dir = "/etc/cni/net.d"
  [plugins."io.containerd.internal.v1.opt"]
    path = "/var/lib/containerd/opt"
`;

function runtimeOf(text: string, name = 'hull'): unknown {
  const parsed = parse(text) as Record<string, any>;
  return JSON.parse(JSON.stringify(parsed['plugins']?.['io.containerd.grpc.v1.cri']?.['containerd']?.['runtimes']?.[name] ?? null));
}

function appended(plan: ReturnType<typeof planContainerdEdit>): string {
  assert.equal(plan.action, 'append');
  return plan.action === 'append' ? plan.text : '';
}

describe('hullConfigTemplate()', () => {
  it('documents every config key, all commented out, so the file means the defaults', () => {
    const text = hullConfigTemplate();
    assert.deepEqual(parseConfig(text, 'template'), DEFAULT_CONFIG);
    assert.deepEqual(CONFIG_KEYS.map((k) => k.field).sort(), Object.keys(DEFAULT_CONFIG).sort());
    for (const k of CONFIG_KEYS) {
      assert.match(text, new RegExp(`^# ${k.key} = `, 'm'));
    }
  });

  it('shows each key at its default value: uncommented, it parses to the defaults', () => {
    const uncommented = hullConfigTemplate().replace(/^# ([a-z_]+ = .*)$/gm, '$1');
    assert.deepEqual(Object.keys(parse(uncommented)).sort(), CONFIG_KEYS.map((k) => k.key).sort());
    assert.deepEqual(parseConfig(uncommented, 'uncommented'), DEFAULT_CONFIG);
  });
});

describe('planContainerdEdit()', () => {
  it('appends the runtime to a version 2 config and leaves the original as a byte-exact prefix', () => {
    const text = appended(planContainerdEdit(DEBIAN, FILE, 'hull', HULL_CONFIG));
    assert.ok(text.startsWith(DEBIAN));
    assert.deepEqual(runtimeOf(text), { runtime_type: 'io.containerd.hull.v2', privileged_without_host_devices: true, options: { ConfigPath: HULL_CONFIG } });
    assert.match(text, /\n# BEGIN hull \(managed by hull install\)\n[\s\S]*\n# END hull\n$/);
  });

  it('keeps comments, other runtimes and dotted keys, and a file without a final newline', () => {
    const original = [
      '# my cluster',
      'version = 2',
      'root = "/var/lib/containerd" # trailing comment',
      '[plugins."io.containerd.grpc.v1.cri".containerd]',
      '  default_runtime_name = "runc"',
      '  runtimes.runc.runtime_type = "io.containerd.runc.v2"',
      '[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.kata]',
      '  runtime_type = "io.containerd.kata.v2"',
    ].join('\n');
    const text = appended(planContainerdEdit(original, FILE, 'hull', HULL_CONFIG));
    assert.ok(text.startsWith(`${original}\n# BEGIN hull`));
    assert.equal((runtimeOf(text) as { runtime_type: string }).runtime_type, 'io.containerd.hull.v2');
    assert.equal((runtimeOf(text, 'kata') as { runtime_type: string }).runtime_type, 'io.containerd.kata.v2');
    assert.equal(removeManagedBlock(text, 'hull', FILE), original);
  });

  it('creates a minimal version 2 config when there is none', () => {
    const plan = planContainerdEdit(undefined, FILE, 'hull', HULL_CONFIG);
    assert.equal(plan.action, 'append');
    const text = appended(plan);
    assert.equal((parse(text) as { version: number }).version, 2);
    assert.equal((runtimeOf(text) as { runtime_type: string }).runtime_type, 'io.containerd.hull.v2');
    assert.equal(removeManagedBlock(text, 'hull', FILE), '');
  });

  it('refuses a version 1 config (no version key) and a version 3 config, naming version 2', () => {
    assert.throws(() => planContainerdEdit('[plugins.cri]\n  sandbox_image = "x"\n', FILE, 'hull', HULL_CONFIG), /no "version" key.*version 1.*only version = 2.*nothing was changed/s);
    assert.throws(() => planContainerdEdit('version = 1\n', FILE, 'hull', HULL_CONFIG), /is version 1: hull install supports only version = 2/);
    assert.throws(() => planContainerdEdit('version = 3\n', FILE, 'hull', HULL_CONFIG), /is version 3/);
    assert.throws(() => planContainerdEdit('', FILE, 'hull', HULL_CONFIG), /no "version" key/);
  });

  it('refuses, with the block to add by hand, when the runtimes are an inline table', () => {
    const inline = 'version = 2\n[plugins."io.containerd.grpc.v1.cri".containerd]\n  runtimes = { runc = { runtime_type = "io.containerd.runc.v2" } }\n';
    assert.throws(() => planContainerdEdit(inline, FILE, 'hull', HULL_CONFIG), (e: Error) => /inline table/.test(e.message) && e.message.includes('# BEGIN hull'));
    const inlinePlugins = 'version = 2\nplugins = { "io.containerd.grpc.v1.cri" = { containerd = { snapshotter = "overlayfs" } } }\n';
    assert.throws(() => planContainerdEdit(inlinePlugins, FILE, 'hull', HULL_CONFIG), /would not be valid TOML/);
  });

  it('refuses a file that is not TOML', () => {
    assert.throws(() => planContainerdEdit('version = 2\n[plugins\n', FILE, 'hull', HULL_CONFIG), /Cannot parse containerd config/);
  });

  it('leaves an existing runtime of that name alone, managed or not', () => {
    const text = appended(planContainerdEdit(DEBIAN, FILE, 'hull', HULL_CONFIG));
    assert.deepEqual(planContainerdEdit(text, FILE, 'hull', HULL_CONFIG), { action: 'present', managed: true, configPath: HULL_CONFIG, warnings: [] });
    const other = planContainerdEdit(text, FILE, 'hull', '/elsewhere.toml');
    assert.equal(other.action, 'present');
    assert.match(other.warnings.join(), /keeps ConfigPath "\/etc\/hull\/config.toml"/);
    const byHand = `${DEBIAN}[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.hull]\n  runtime_type = "io.containerd.hull.v2"\n`;
    assert.deepEqual(planContainerdEdit(byHand, FILE, 'hull', HULL_CONFIG), { action: 'present', managed: false, configPath: undefined, warnings: [] });
  });

  it('adds a second runtime name next to the first, each in its own block', () => {
    const one = appended(planContainerdEdit(DEBIAN, FILE, 'hull', HULL_CONFIG));
    const two = appended(planContainerdEdit(one, FILE, 'hull-small', '/etc/hull/small.toml'));
    assert.match(two, /# BEGIN hull-small \(managed by hull install\)/);
    assert.equal(removeManagedBlock(removeManagedBlock(two, 'hull', FILE)!, 'hull-small', FILE), DEBIAN);
    assert.equal(removeManagedBlock(removeManagedBlock(two, 'hull-small', FILE)!, 'hull', FILE), DEBIAN);
  });

  it('warns when the CRI plugin is disabled', () => {
    const plan = planContainerdEdit('version = 2\ndisabled_plugins = ["io.containerd.grpc.v1.cri"]\n', FILE, 'hull', HULL_CONFIG);
    assert.match(plan.warnings.join(), /CRI plugin is disabled/);
  });

  it('quotes a ConfigPath that needs escaping', () => {
    const text = appended(planContainerdEdit(DEBIAN, FILE, 'hull', '/etc/hull "x"\\y.toml'));
    assert.equal((runtimeOf(text) as { options: { ConfigPath: string } }).options.ConfigPath, '/etc/hull "x"\\y.toml');
  });
});

describe('removeManagedBlock()', () => {
  it('returns undefined when there is no block', () => {
    assert.equal(removeManagedBlock(DEBIAN, 'hull', FILE), undefined);
  });

  it('cuts exactly what install appended, also when text was added after the block', () => {
    const text = `${DEBIAN}\n${managedBlock('hull', HULL_CONFIG)}# added later\n`;
    assert.equal(removeManagedBlock(text, 'hull', FILE), `${DEBIAN}# added later\n`);
  });

  it('refuses a block without its end marker', () => {
    const text = `${DEBIAN}\n${managedBlock('hull', HULL_CONFIG).replace('# END hull\n', '')}`;
    assert.throws(() => removeManagedBlock(text, 'hull', FILE), /no "# END hull" line/);
  });

  it('does not mistake another runtime name\'s block for its own', () => {
    const text = `${DEBIAN}\n${managedBlock('hull-small', HULL_CONFIG)}`;
    assert.equal(removeManagedBlock(text, 'hull', FILE), undefined);
  });
});

describe('restartDecision()', () => {
  const systemd = { systemd: true, unitLoaded: true };
  it('restarts through systemd only for the default config, with systemd as PID 1 and a loaded unit', () => {
    assert.deepEqual(restartDecision('auto', FILE, 'load the hull runtime', systemd).run, ['systemctl', 'restart', 'containerd']);
    assert.equal(restartDecision('auto', FILE, 'x', { systemd: true, unitLoaded: false }).run, undefined);
    assert.equal(restartDecision('auto', FILE, 'x', { systemd: false, unitLoaded: false }).run, undefined);
    assert.equal(restartDecision('auto', '/tmp/ctrd/config.toml', 'x', systemd).run, undefined);
  });

  it('prints the step when it does not restart', () => {
    assert.equal(restartDecision('never', FILE, 'load the hull runtime', systemd).say, 'restart containerd to load the hull runtime: systemctl restart containerd');
    assert.match(restartDecision('auto', FILE, 'load the hull runtime', { systemd: false, unitLoaded: false }).say, /systemd is not PID 1/);
    assert.equal(restartDecision('auto', '/tmp/c.toml', 'load the hull runtime', systemd).say, 'restart the containerd that reads "/tmp/c.toml" to load the hull runtime');
  });
});

describe('installOptions()', () => {
  it('defaults to the system paths and the hull runtime name', () => {
    assert.deepEqual(installOptions({}), {
      containerdConfig: '/etc/containerd/config.toml',
      binDir: '/usr/local/bin',
      hullConfig: '/etc/hull/config.toml',
      restart: 'auto',
      runtimeName: 'hull',
    });
  });
});
