import { strict as assert } from 'node:assert';
import { test } from 'node:test';
import { isResourceExhausted } from '../errors/index.js';
import { FRAME_HEADER_LENGTH, FrameDecoder, FrameType, MAX_FRAME_DATA_LENGTH, encodeFrame, type DecodedFrame } from './frame.js';
import { fromHex, hex } from './testing.js';

// A frame observed from containerd's side: Connect{id:"p2"} on stream 3.
const connectFrameHex =
  '000000280000000301000a17636f6e7461696e6572642e7461736b2e76322e5461736b1207436f6e6e6563741a040a027032';

function frameOf(decoded: DecodedFrame | undefined) {
  assert.equal(decoded?.kind, 'frame');
  return decoded.frame;
}

test('encodeFrame() writes the 10-byte big-endian header before the data', () => {
  const bytes = fromHex(connectFrameHex);
  const frame = encodeFrame({ streamId: 3, type: FrameType.Request, flags: 0, data: bytes.subarray(FRAME_HEADER_LENGTH) });
  assert.equal(hex(frame), connectFrameHex);
});

test('encodeFrame() refuses data over 4 MiB with resource_exhausted', () => {
  const data = new Uint8Array(MAX_FRAME_DATA_LENGTH + 1);
  assert.throws(() => encodeFrame({ streamId: 1, type: FrameType.Request, flags: 0, data }), isResourceExhausted);
  assert.doesNotThrow(() => encodeFrame({ streamId: 1, type: FrameType.Request, flags: 0, data: data.subarray(1) }));
});

test('FrameDecoder yields the same frames whether bytes come at once or one by one', () => {
  const one = fromHex(connectFrameHex);
  const two = encodeFrame({ streamId: 0xffffffff, type: 0x7f, flags: 0xa5, data: new Uint8Array(0) });
  const stream = Buffer.concat([one, two, one]);

  const atOnce = new FrameDecoder().push(stream);
  const byteDecoder = new FrameDecoder();
  const byByte: DecodedFrame[] = [];
  for (let i = 0; i < stream.length; i++) byByte.push(...byteDecoder.push(stream.subarray(i, i + 1)));

  for (const decoded of [atOnce, byByte]) {
    assert.equal(decoded.length, 3);
    const [first, second, third] = decoded.map(frameOf);
    assert.deepEqual({ ...first, data: hex(first!.data) }, { streamId: 3, type: 1, flags: 0, data: connectFrameHex.slice(20) });
    assert.deepEqual({ ...second, data: hex(second!.data) }, { streamId: 0xffffffff, type: 0x7f, flags: 0xa5, data: '' });
    assert.equal(hex(third!.data), connectFrameHex.slice(20));
  }
});

test('FrameDecoder reports an oversized frame at its header and skips its data without buffering it', () => {
  const length = 5 << 20;
  const header = new Uint8Array(FRAME_HEADER_LENGTH);
  const view = new DataView(header.buffer);
  view.setUint32(0, length);
  view.setUint32(4, 7);
  view.setUint8(8, FrameType.Request);

  const decoder = new FrameDecoder();
  const atHeader = decoder.push(header);
  assert.deepEqual(atHeader, [{ kind: 'oversized', oversized: { streamId: 7, type: 1, flags: 0, length } }]);

  // Feed the 5 MiB in 64 KiB chunks; nothing comes out, and the frame after it decodes normally.
  const chunk = new Uint8Array(64 << 10).fill(0xee);
  for (let sent = 0; sent < length; sent += chunk.length) {
    assert.deepEqual(decoder.push(chunk.subarray(0, Math.min(chunk.length, length - sent))), []);
  }
  const after = decoder.push(fromHex(connectFrameHex));
  assert.equal(after.length, 1);
  assert.equal(frameOf(after[0]).streamId, 3);
});

test('FrameDecoder skips an oversized frame whose data arrives in the same chunk as the next frame', () => {
  const length = MAX_FRAME_DATA_LENGTH + 3;
  const bytes = new Uint8Array(FRAME_HEADER_LENGTH + length);
  new DataView(bytes.buffer).setUint32(0, length);
  const decoded = new FrameDecoder().push(Buffer.concat([bytes, fromHex(connectFrameHex)]));
  assert.deepEqual(
    decoded.map((d) => d.kind),
    ['oversized', 'frame'],
  );
});

test('FrameDecoder accepts a frame of exactly 4 MiB', () => {
  const data = new Uint8Array(MAX_FRAME_DATA_LENGTH).fill(1);
  const decoded = new FrameDecoder().push(encodeFrame({ streamId: 1, type: FrameType.Response, flags: 0, data }));
  assert.equal(frameOf(decoded[0]).data.length, MAX_FRAME_DATA_LENGTH);
});
