import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { closeSync, constants, mkdtempSync, openSync, rmSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { openFifos } from './fifo-io.js';

const dir = mkdtempSync(join(tmpdir(), 'hull-fifo-'));
after(() => rmSync(dir, { recursive: true, force: true }));

function fifo(name: string): string {
  const path = join(dir, name);
  execFileSync('mkfifo', [path]);
  return path;
}

async function readAll(stream: NodeJS.ReadableStream): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of stream) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

describe('openFifos stdin', () => {
  it('does not end before the client opened its end, nor before CloseIO', async () => {
    const io = await openFifos({ stdin: fifo('late'), stdout: '', stderr: '' });
    const all = readAll(io.stdin!);
    // The client comes later, writes, and closes its end: without CloseIO that is no end yet.
    const writer = openSync(join(dir, 'late'), constants.O_WRONLY);
    writeSync(writer, 'first ');
    closeSync(writer);
    const again = openSync(join(dir, 'late'), constants.O_WRONLY);
    writeSync(again, 'second');
    closeSync(again);
    io.closeStdin();
    assert.equal((await all).toString(), 'first second');
    await io.close();
  });

  it('keeps what is still in the FIFO when CloseIO comes before it was read', async () => {
    const path = fifo('full');
    const io = await openFifos({ stdin: path, stdout: '', stderr: '' });
    const writer = openSync(path, constants.O_WRONLY);
    const data = Buffer.alloc(60_000, 7);
    writeSync(writer, data); // fits in the FIFO: nothing read yet
    closeSync(writer);
    io.closeStdin(); // ctr's CloseIO as soon as its own source ended
    assert.equal((await readAll(io.stdin!)).length, data.length);
    await io.close();
  });
});
