import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { inNetns, inNetnsBatch } from './exec.js';

describe('batches of ip and tc in a netns', { skip: process.getuid?.() !== 0 && 'needs root (a network namespace of its own)' }, () => {
  it('run in order in one process, stop at the first failure, and refuse words the batch format would split', async () => {
    // A network namespace of the test's own, held by a sleeping process.
    const holder = spawn('unshare', ['--net', '--', 'sleep', '600'], { stdio: 'ignore' });
    try {
      const netns = `/proc/${holder.pid}/ns/net`;
      for (let i = 0; i < 100 && (await inNetns(netns, 'ip', ['-json', 'link', 'show']).then((o) => JSON.parse(o).length !== 1, () => true)); i++) await sleep(20);
      await inNetnsBatch(netns, 'ip', [['link', 'set', 'lo', 'up'], ['addr', 'add', '10.250.0.1/32', 'dev', 'lo']]);
      assert.match(await inNetns(netns, 'ip', ['-4', 'addr', 'show', 'lo']), /inet 10\.250\.0\.1\/32/);
      await assert.rejects(inNetnsBatch(netns, 'ip', [['addr', 'add', '10.250.0.2/32', 'dev', 'nope'], ['addr', 'add', '10.250.0.3/32', 'dev', 'lo']]), /Cannot find device "nope"/);
      assert.doesNotMatch(await inNetns(netns, 'ip', ['-4', 'addr', 'show', 'lo']), /10\.250\.0\.3/);
      for (const word of ['lo up', 'x"', "x'", 'a\\b', '#x', 'a\tb', 'a\nb']) {
        await assert.rejects(inNetnsBatch(netns, 'tc', [['qdisc', 'add', 'dev', word, 'ingress']]), /Cannot pass [\s\S]* to tc -batch/);
      }
    } finally {
      holder.kill('SIGKILL');
      await once(holder, 'exit');
    }
  });
});
