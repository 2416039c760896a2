import assert from 'node:assert/strict';
import { PassThrough } from 'node:stream';
import { test } from 'node:test';
import { OutputBuffer } from './output-buffer.js';

test('OutputBuffer.read() returns what was written, then eof after the end', async () => {
  const source = new PassThrough();
  const buffer = new OutputBuffer();
  buffer.attach(source);
  source.write('hello ');
  source.end('world');
  let text = '';
  for (;;) {
    const { data, eof } = await buffer.read(4);
    assert.ok(data.length <= 4);
    text += data.toString();
    if (eof) break;
  }
  assert.equal(text, 'hello world');
});

test('OutputBuffer pauses its source when full and resumes once read', async () => {
  const source = new PassThrough();
  const buffer = new OutputBuffer(8);
  buffer.attach(source);
  source.write(Buffer.alloc(10, 1));
  await new Promise((r) => setImmediate(r));
  assert.equal(source.isPaused(), true);
  const { data } = await buffer.read(100);
  assert.equal(data.length, 10);
  assert.equal(source.isPaused(), false);
});

test('OutputBuffer.read() waits for data and can be aborted', async () => {
  const buffer = new OutputBuffer();
  const controller = new AbortController();
  const pending = buffer.read(10, controller.signal);
  controller.abort(new Error('gone'));
  await assert.rejects(pending, /gone/);
});

test('OutputBuffer of a stream that was never attached ends at once', async () => {
  const buffer = new OutputBuffer();
  buffer.end();
  assert.deepEqual(await buffer.read(10), { data: Buffer.alloc(0), eof: true });
});
