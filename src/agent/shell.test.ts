import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { runInOrder } from './shell.js';

describe('agent shell commands', () => {
  const dir = mkdtempSync(join(tmpdir(), 'hull-net-cmds-'));
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('reach each program word for word, whatever they hold', async () => {
    const weird = `a'b "c" $(touch ${join(dir, 'injected')}) \`id\` ; & | \\ \n end`;
    const out = join(dir, 'out');
    await runInOrder([['/bin/sh', '-c', 'printf "%s" "$0" > "$1"', weird, out]]);
    assert.equal(readFileSync(out, 'utf8'), weird);
    assert.equal(existsSync(join(dir, 'injected')), false);
  });

  it('run in order and stop at the first that fails, with its message', async () => {
    const first = join(dir, 'first');
    const never = join(dir, 'never');
    await assert.rejects(runInOrder([['touch', first], ['ls', join(dir, 'missing')], ['touch', never]]), /missing/);
    assert.equal(existsSync(first), true);
    assert.equal(existsSync(never), false);
  });
});
