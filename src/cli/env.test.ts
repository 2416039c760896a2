import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { DEFAULT_CONFIG } from '../config/index.js';
import { configSources, findOnPath } from './env.js';

describe('configSources()', () => {
  it('marks every key as default when there is no file', () => {
    const { config, keys } = configSources(undefined, 'none');
    assert.deepEqual(config, DEFAULT_CONFIG);
    assert.ok(keys.every((k) => k.source === 'default'));
    assert.equal(keys.length, Object.keys(DEFAULT_CONFIG).length);
  });

  it('marks the keys the file sets, with their values', () => {
    const { keys } = configSources('default_memory = 512\n# accel = "kvm"\nrun_root = "/run/h"\n', 'f');
    const byKey = Object.fromEntries(keys.map((k) => [k.key, k]));
    assert.deepEqual(byKey['default_memory'], { key: 'default_memory', value: 512, source: 'file' });
    assert.deepEqual(byKey['run_root'], { key: 'run_root', value: '/run/h', source: 'file' });
    assert.deepEqual(byKey['accel'], { key: 'accel', value: 'auto', source: 'default' });
  });

  it('rejects what loadConfig rejects', () => {
    assert.throws(() => configSources('defualt_memory = 512\n', 'f'), /Unknown key "defualt_memory"/);
  });
});

describe('findOnPath()', () => {
  it('finds the first executable of that name, skipping files that are not executable', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'hull-env-'));
    try {
      mkdirSync(join(dir, 'one'));
      mkdirSync(join(dir, 'two'));
      writeFileSync(join(dir, 'one', 'tool'), '', { mode: 0o644 });
      writeFileSync(join(dir, 'two', 'tool'), '', { mode: 0o755 });
      const path = `${dir}/missing::${dir}/one:${dir}/two`;
      assert.equal(await findOnPath('tool', path), join(dir, 'two', 'tool'));
      assert.equal(await findOnPath('nope', path), undefined);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
