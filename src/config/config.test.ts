import assert from 'node:assert/strict';
import { test } from 'node:test';
import { DEFAULT_CONFIG, loadConfig, parseConfig } from './config.js';

test('parseConfig() overrides defaults with TOML keys', () => {
  const config = parseConfig('default_vcpus = 2\ndefault_memory = 512\naccel = "tcg"\n', 'x');
  assert.deepEqual(config, { ...DEFAULT_CONFIG, defaultVcpus: 2, defaultMemoryMiB: 512, accel: 'tcg' });
});

test('parseConfig() rejects unknown keys and bad values', () => {
  assert.throws(() => parseConfig('default_cpus = 2', 'x'), /Unknown key "default_cpus"/);
  assert.throws(() => parseConfig('accel = "fast"', 'x'), /Invalid "accel"/);
  assert.throws(() => parseConfig('default_memory = 1', 'x'), /Invalid "default_memory"/);
  assert.throws(() => parseConfig('= =', 'x'), /Cannot parse config/);
});

test('loadConfig() of an explicit missing file is an error', async () => {
  await assert.rejects(loadConfig('/nonexistent/hull.toml'), /Cannot read config/);
});
