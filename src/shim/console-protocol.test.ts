import assert from 'node:assert/strict';
import { test } from 'node:test';
import { FRAME, FrameReader, decodeRequest, encodeRequest, exitFrame, frame, readExit, readResize, resizeFrame } from './console-protocol.js';

test('a console request survives the header encoding, and bad ones are refused', () => {
  const req = { args: ['sh', '-c', 'echo é; exit 7'], tty: false, rows: 0, cols: 0, user: 'uid 0 (root)' };
  assert.deepEqual(decodeRequest(encodeRequest(req)), req);
  const enc = (v: unknown) => Buffer.from(JSON.stringify(v)).toString('base64url');
  for (const bad of [undefined, 'not base64 json', enc([]), enc({ ...req, args: 'sh' }), enc({ ...req, args: ['a\0b'] }), enc({ ...req, tty: 1 }), enc({ ...req, rows: 70000 }), enc({ ...req, user: 'x'.repeat(300) })]) {
    assert.throws(() => decodeRequest(bad), /Invalid console request/, String(bad));
  }
  assert.throws(() => encodeRequest({ ...req, args: ['x'.repeat(20_000)] }), /too long/);
});

test('FrameReader splits frames across chunk boundaries and refuses oversized ones', () => {
  const bytes = Buffer.concat([frame(FRAME.stdin, Buffer.from('hello')), resizeFrame(24, 80), frame(FRAME.stdinEnd), exitFrame(7)]);
  const reader = new FrameReader(16);
  const frames = [];
  for (let i = 0; i < bytes.length; i += 3) frames.push(...reader.push(bytes.subarray(i, i + 3)));
  assert.deepEqual(frames.map((f) => f.type), [FRAME.stdin, FRAME.resize, FRAME.stdinEnd, FRAME.exit]);
  assert.equal(frames[0]!.payload.toString(), 'hello');
  assert.deepEqual(readResize(frames[1]!.payload), { rows: 24, cols: 80 });
  assert.equal(readExit(frames[3]!.payload), 7);
  assert.equal(readResize(Buffer.alloc(3)), undefined);
  assert.throws(() => new FrameReader(16).push(frame(FRAME.stdin, Buffer.alloc(17))), /Console frame of 17 bytes, over 16/);
  // The header alone is enough to refuse: nothing of the oversized payload is awaited.
  assert.throws(() => new FrameReader(16).push(frame(FRAME.stdin, Buffer.alloc(1000)).subarray(0, 5)), /over 16/);
});
