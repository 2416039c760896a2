import assert from 'node:assert/strict';
import { test } from 'node:test';
import { DEFAULT_CONFIG, loadConfig, parseConfig, parseListenAddress } from './config.js';

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

test('parseConfig() reads the largest VM size, not below the default size', () => {
  assert.equal(DEFAULT_CONFIG.maxVcpus, 16);
  assert.equal(DEFAULT_CONFIG.maxMemoryMiB, 32_768);
  const config = parseConfig('max_vcpus = 4\nmax_memory = 4096\n', 'x');
  assert.equal(config.maxVcpus, 4);
  assert.equal(config.maxMemoryMiB, 4096);
  assert.throws(() => parseConfig('max_vcpus = 0', 'x'), /Invalid "max_vcpus"/);
  assert.throws(() => parseConfig('max_memory = 1000', 'x'), /Invalid "max_memory" in config "x": 1000 MiB is below default_memory \(2048 MiB\)/);
  assert.throws(() => parseConfig('default_vcpus = 4\nmax_vcpus = 2', 'x'), /Invalid "max_vcpus" in config "x": 2 is below default_vcpus \(4\)/);
});

test('loadConfig() of an explicit missing file is an error', async () => {
  await assert.rejects(loadConfig('/nonexistent/hull.toml'), /Cannot read config/);
});

test('parseConfig() reads the template store bounds, with defaults, and checks them', () => {
  assert.equal(DEFAULT_CONFIG.templateMaxCount, 8);
  assert.equal(DEFAULT_CONFIG.templateMaxRamMiB, 2048);
  const config = parseConfig('template_max_count = 3\ntemplate_max_ram_mib = 1024\n', 'x');
  assert.equal(config.templateMaxCount, 3);
  assert.equal(config.templateMaxRamMiB, 1024);
  for (const bad of ['template_max_count = 0', 'template_max_count = 1.5', 'template_max_count = "8"', 'template_max_count = 2000']) {
    assert.throws(() => parseConfig(bad, 'x'), /Invalid "template_max_count" in config "x": expected an integer 1\.\.1024/, bad);
  }
  for (const bad of ['template_max_ram_mib = 255', 'template_max_ram_mib = -1', 'template_max_ram_mib = true']) {
    assert.throws(() => parseConfig(bad, 'x'), /Invalid "template_max_ram_mib" in config "x": expected an integer >= 256 \(MiB\)/, bad);
  }
});

test('parseConfig() reads monitor_listen and log_level, with defaults, and checks them', () => {
  assert.equal(DEFAULT_CONFIG.monitorListen, '127.0.0.1:8090');
  assert.equal(DEFAULT_CONFIG.logLevel, 'info');
  const config = parseConfig('monitor_listen = "[::1]:9100"\nlog_level = "debug"\n', 'x');
  assert.equal(config.monitorListen, '[::1]:9100');
  assert.equal(config.logLevel, 'debug');
  assert.deepEqual(parseListenAddress('[::1]:9100'), { host: '::1', port: 9100 });
  assert.deepEqual(parseListenAddress('0.0.0.0:8090'), { host: '0.0.0.0', port: 8090 });
  for (const bad of ['monitor_listen = "8090"', 'monitor_listen = "host:99999"', 'monitor_listen = "a b:1"', 'monitor_listen = 8090']) {
    assert.throws(() => parseConfig(bad, 'x'), /Invalid "monitor_listen" in config "x"/, bad);
  }
  assert.throws(() => parseConfig('log_level = "trace"', 'x'), /Invalid "log_level" in config "x": expected "debug", "info", "warn" or "error"/);
});

test('parseConfig() reads debug_console, off by default', () => {
  assert.equal(DEFAULT_CONFIG.debugConsole, false);
  assert.equal(parseConfig('debug_console = true\n', 'x').debugConsole, true);
  assert.throws(() => parseConfig('debug_console = "yes"', 'x'), /Invalid "debug_console" in config "x": expected true or false/);
});

test('parseConfig() reads tcg_tb_size_mib and checks it', () => {
  assert.equal(parseConfig('tcg_tb_size_mib = 64\n', 'x').tcgTbSizeMiB, 64);
  for (const bad of ['tcg_tb_size_mib = 4', 'tcg_tb_size_mib = 4096', 'tcg_tb_size_mib = 1.5', 'tcg_tb_size_mib = "64"']) {
    assert.throws(() => parseConfig(bad, 'x'), /Invalid "tcg_tb_size_mib" in config "x": expected an integer 8\.\.2048 \(MiB\)/, bad);
  }
});

test('parseConfig() reads memory_merge, off by default', () => {
  assert.equal(DEFAULT_CONFIG.memoryMerge, false);
  assert.equal(parseConfig('memory_merge = true\n', 'x').memoryMerge, true);
  assert.throws(() => parseConfig('memory_merge = 1', 'x'), /Invalid "memory_merge" in config "x": expected true or false/);
});
