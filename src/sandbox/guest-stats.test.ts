import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { parseGuestStats } from './guest-stats.js';

// Real kernel output, as the agent sends it (this host's /proc has the same formats).
const proc = (path: string) => readFileSync(path, 'utf8');
const real = () => ({ meminfo: proc('/proc/meminfo'), stat: proc('/proc/stat'), loadavg: proc('/proc/loadavg'), netDev: proc('/proc/net/dev'), diskstats: proc('/proc/diskstats') });

const sample = {
  meminfo: 'MemTotal:        2017004 kB\nMemFree:         1800000 kB\nMemAvailable:    1900000 kB\nActive(anon):       1000 kB\nHugePages_Total:       0\n',
  stat: 'cpu  100 2 50 10000 3 0 1 0 0 0\ncpu0 100 2 50 10000 3 0 1 0 0 0\nintr 5 1 2\nctxt 12345\nbtime 1700000000\nprocesses 321\nprocs_running 2\nprocs_blocked 1\n',
  loadavg: '0.52 0.10 0.03 2/87 412\n',
  netDev:
    'Inter-|   Receive                                                |  Transmit\n' +
    ' face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n' +
    '    lo:     100       2    0    0    0     0          0         0      100       2    0    0    0     0       0          0\n' +
    '  eth0:   5000      40    1    2    0     0          0         0     7000      50    3    4    0     0       0          0\n',
  diskstats: '   7       0 loop0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n 254       0 vda 120 0 2400 50 3 0 16 4 0 70 54 0 0 0 0 0 0\n',
};

test('parseGuestStats() reads the kernel formats into bytes, seconds and counts', () => {
  const s = parseGuestStats(sample);
  assert.equal(s.meminfoBytes.MemTotal, 2017004 * 1024);
  assert.equal(s.meminfoBytes.MemAvailable, 1900000 * 1024);
  assert.deepEqual(s.cpuSeconds, { user: 1, nice: 0.02, system: 0.5, idle: 100, iowait: 0.03, irq: 0, softirq: 0.01, steal: 0 });
  assert.deepEqual([s.contextSwitches, s.forks, s.procsRunning, s.procsBlocked, s.tasks], [12345, 321, 2, 1, 87]);
  assert.deepEqual(s.load, { '1m': 0.52, '5m': 0.1, '15m': 0.03 });
  assert.deepEqual(s.network[1], { interface: 'eth0', rxBytes: 5000, rxPackets: 40, rxErrors: 1, rxDropped: 2, txBytes: 7000, txPackets: 50, txErrors: 3, txDropped: 4 });
  // Devices that never did I/O are left out.
  assert.deepEqual(s.disks, [{ device: 'vda', reads: 120, readBytes: 2400 * 512, writes: 3, writtenBytes: 16 * 512, ioSeconds: 0.07 }]);
});

test('parseGuestStats() reads a real kernel\'s /proc files', () => {
  const s = parseGuestStats(real());
  assert.ok(s.meminfoBytes.MemTotal! > 0);
  assert.ok(s.cpuSeconds.idle > 0);
  assert.ok(s.network.some((n) => n.interface === 'lo'));
});

test('parseGuestStats() refuses what a hostile guest may send', () => {
  const cases: Array<[Partial<typeof sample>, RegExp]> = [
    [{ meminfo: 'x'.repeat(64 * 1024 + 1) }, /invalid meminfo: 65537 characters/],
    [{ meminfo: 'MemFree: 1 kB\n' }, /invalid meminfo: no MemTotal/],
    [{ meminfo: 'MemTotal: -1 kB\n' }, /invalid meminfo: line/],
    [{ meminfo: 'MemTotal: 99999999999999999 kB\n' }, /invalid meminfo/],
    [{ stat: 'cpu 1 2 3\n' }, /invalid stat: no full cpu line/],
    [{ stat: 'cpu 1 2 3 4 5 6 7 1e9\n' }, /invalid stat: "1e9" is not a counter/],
    [{ loadavg: '0.5 0.1 0.0 1/2 3\n' }, /invalid loadavg/],
    [{ netDev: 'h\nh\n bad name!: ' + '1 '.repeat(16) + '\n' }, /invalid net\/dev/],
    [{ netDev: 'h\nh\n eth0: 1 2 3\n' }, /invalid net\/dev: 3 counters/],
    [{ netDev: 'h\nh\n' + Array.from({ length: 65 }, (_, i) => ` e${i}: ${'1 '.repeat(16)}`).join('\n') }, /more than 64 interfaces/],
    [{ netDev: 'h\nh\n' + ` eth0: ${'1 '.repeat(16)}\n eth0: ${'1 '.repeat(16)}\n` }, /interface "eth0" given twice/],
    [{ diskstats: ' 254 0 vda 1 2\n' }, /invalid diskstats: 2 counters/],
    [{ diskstats: ' 254 0 ../etc 1 0 0 0 0 0 0 0 0 0 0\n' }, /invalid diskstats: device name/],
  ];
  for (const [change, error] of cases) assert.throws(() => parseGuestStats({ ...sample, ...change }), error, JSON.stringify(change).slice(0, 80));
});
