import { strict as assert } from 'node:assert';
import { stat } from 'node:fs/promises';
import { test, type TestContext } from 'node:test';
import { ERROR_CODES, HullError } from '../errors/index.js';
import { toStatusCode } from '../errors/grpc-status.js';
import { FRAME_HEADER_LENGTH, FrameType, encodeFrame, type DecodedFrame } from './frame.js';
import { decodeResponse, encodeRequest, type TtrpcResponse } from './messages.js';
import { TtrpcServer, type CallContext, type ServiceMethods } from './server.js';
import { connectRaw, fromHex, hex, tempSocketPath, type RawPeer } from './testing.js';

const TASK = 'containerd.task.v2.Task';
// Captured from containerd 1.6.20: Connect{id:"p2"} on stream 3, and the answers a shim gave.
const connectRequestFrame =
  '000000280000000301000a17636f6e7461696e6572642e7461736b2e76322e5461736b1207436f6e6e6563741a040a027032';
const connectOkResponseFrame = '00000015000000030200121308b4f10110b4f1011a0970726f62652d302e31';
const notFoundResponseFrame = '000000170000000502000a15080512117461736b207039206e6f7420666f756e64';
// ConnectResponse{shim_pid: 30900, task_pid: 30900, version: "probe-0.1"}.
const connectResponsePayload = '08b4f10110b4f1011a0970726f62652d302e31';

/** startServer serves `services` on a temporary socket, closed after the test. */
async function startServer(t: TestContext, services: Record<string, ServiceMethods>): Promise<{ server: TtrpcServer; path: string }> {
  const server = new TtrpcServer({ closeTimeoutMs: 1000 });
  for (const [name, methods] of Object.entries(services)) server.register(name, methods);
  const path = await tempSocketPath(t);
  await server.listen(path);
  t.after(() => server.close());
  return { server, path };
}

function requestFrame(streamId: number, service: string, method: string, payload: Uint8Array = new Uint8Array(0), timeoutNano = 0n) {
  return encodeFrame({
    streamId,
    type: FrameType.Request,
    flags: 0,
    data: encodeRequest({ service, method, payload, timeoutNano, metadata: [] }),
  });
}

/** nextResponse reads the next frame and decodes it as a Response. */
async function nextResponse(peer: RawPeer): Promise<{ streamId: number; response: TtrpcResponse }> {
  const decoded: DecodedFrame = await peer.next();
  assert.equal(decoded.kind, 'frame');
  assert.equal(decoded.frame.type, FrameType.Response);
  return { streamId: decoded.frame.streamId, response: decodeResponse(decoded.frame.data) };
}

const connectService: ServiceMethods = {
  async Connect(payload) {
    assert.equal(hex(payload), '0a027032');
    return fromHex(connectResponsePayload);
  },
  async State() {
    throw new HullError('not_found', 'task p9 not found');
  },
};

test('TtrpcServer answers containerd byte for byte (OK on stream 3, NOT_FOUND on stream 5)', async (t) => {
  const { path } = await startServer(t, { [TASK]: connectService });
  const peer = await connectRaw(t, path);

  peer.write(fromHex(connectRequestFrame));
  const ok = await peer.next();
  assert.equal(ok.kind, 'frame');
  assert.equal(hex(encodeFrame(ok.frame)), connectOkResponseFrame);

  peer.write(requestFrame(5, TASK, 'State'));
  const notFound = await peer.next();
  assert.equal(notFound.kind, 'frame');
  assert.equal(hex(encodeFrame(notFound.frame)), notFoundResponseFrame);
});

test('TtrpcServer listen() makes the socket 0600 and close() removes it', async (t) => {
  const { server, path } = await startServer(t, {});
  assert.equal((await stat(path)).mode & 0o777, 0o600);
  await server.close();
  await assert.rejects(stat(path), { code: 'ENOENT' });
});

test('TtrpcServer listen() on a path in use fails with already_exists', async (t) => {
  const { path } = await startServer(t, {});
  const second = new TtrpcServer();
  await assert.rejects(second.listen(path), { code: 'already_exists' });
  await second.close();
});

test('TtrpcServer maps every HullError code to its status code, and plain errors to UNKNOWN', async (t) => {
  const { path } = await startServer(t, {
    svc: {
      async Fail(payload) {
        const code = ERROR_CODES[payload[0]!];
        if (code === undefined) throw new TypeError('plain failure');
        throw new HullError(code, `failed with ${code}`);
      },
      Sync() {
        throw new Error('thrown before any promise');
      },
      async Huge() {
        throw new HullError('internal', 'x'.repeat(5 << 20));
      },
      async HugeAnswer() {
        return new Uint8Array(5 << 20);
      },
      async NoBytes() {
        return 'not bytes' as unknown as Uint8Array;
      },
    },
  });
  const peer = await connectRaw(t, path);
  for (const [index, code] of ERROR_CODES.entries()) {
    peer.write(requestFrame(1, 'svc', 'Fail', new Uint8Array([index])));
    const { response } = await nextResponse(peer);
    assert.deepEqual(response.status, { code: toStatusCode(code), message: `failed with ${code}`, details: [] });
  }
  peer.write(requestFrame(1, 'svc', 'Fail', new Uint8Array([255])));
  assert.deepEqual((await nextResponse(peer)).response.status, { code: 2, message: 'plain failure', details: [] });
  peer.write(requestFrame(3, 'svc', 'Sync'));
  assert.deepEqual((await nextResponse(peer)).response.status, { code: 2, message: 'thrown before any promise', details: [] });
  peer.write(requestFrame(5, 'svc', 'Huge')); // the message is cut, not the connection
  const huge = (await nextResponse(peer)).response.status;
  assert.equal(huge?.code, 13);
  assert.ok(huge.message.length > 0 && huge.message.length < 1 << 20);
  peer.write(requestFrame(9, 'svc', 'HugeAnswer'));
  const refused = (await nextResponse(peer)).response.status;
  assert.equal(refused?.code, 8);
  assert.match(refused.message, /^refusing to send, message length \d+ exceed maximum message size of 4194304$/);
  peer.write(requestFrame(7, 'svc', 'NoBytes'));
  assert.deepEqual((await nextResponse(peer)).response.status, { code: 13, message: 'ttrpc: svc/NoBytes returned no bytes', details: [] });
});

test('TtrpcServer answers UNIMPLEMENTED for an unknown service or method', async (t) => {
  const { path } = await startServer(t, { [TASK]: connectService });
  const peer = await connectRaw(t, path);
  peer.write(requestFrame(1, 'no.such.Service', 'Connect'));
  assert.deepEqual((await nextResponse(peer)).response.status, { code: 12, message: 'service no.such.Service', details: [] });
  peer.write(requestFrame(3, TASK, 'Nope'));
  assert.deepEqual((await nextResponse(peer)).response.status, { code: 12, message: 'method Nope', details: [] });
  peer.write(requestFrame(5, TASK, 'toString')); // inherited names are not methods
  assert.deepEqual((await nextResponse(peer)).response.status, { code: 12, message: 'method toString', details: [] });
});

test('TtrpcServer rejects even stream ids with INVALID_ARGUMENT on that stream id', async (t) => {
  const { path } = await startServer(t, { [TASK]: connectService });
  const peer = await connectRaw(t, path);
  peer.write(requestFrame(2, TASK, 'Connect', fromHex('0a027032')));
  const { streamId, response } = await nextResponse(peer);
  assert.equal(streamId, 2);
  assert.deepEqual(response.status, { code: 3, message: 'StreamID must be odd for client initiated streams', details: [] });
});

test('TtrpcServer answers a 5 MiB frame with RESOURCE_EXHAUSTED and keeps serving the connection', async (t) => {
  const { path } = await startServer(t, { [TASK]: connectService });
  const peer = await connectRaw(t, path);
  const length = 5 << 20;
  const oversized = new Uint8Array(FRAME_HEADER_LENGTH + length).fill(0x0a);
  const view = new DataView(oversized.buffer);
  view.setUint32(0, length);
  view.setUint32(4, 7);
  view.setUint8(8, FrameType.Request);
  view.setUint8(9, 0);
  peer.write(oversized);
  peer.write(fromHex(connectRequestFrame));

  const first = await nextResponse(peer);
  assert.equal(first.streamId, 7);
  assert.deepEqual(first.response.status, {
    code: 8,
    message: `message length ${length} exceed maximum message size of ${4 << 20}`,
    details: [],
  });
  const second = await nextResponse(peer);
  assert.equal(second.streamId, 3);
  assert.equal(hex(second.response.payload), connectResponsePayload);
});

test('TtrpcServer survives garbage: bad requests get INVALID_ARGUMENT, other frame types are ignored', async (t) => {
  const { path } = await startServer(t, { [TASK]: connectService });
  const peer = await connectRaw(t, path);
  const garbage = [fromHex('ffffffffffffffffffffff'), fromHex('0a7f41'), fromHex('0e'), fromHex('2a020801')];
  for (const [index, data] of garbage.entries()) {
    peer.write(encodeFrame({ streamId: 2 * index + 1, type: FrameType.Request, flags: 0, data }));
    const { streamId, response } = await nextResponse(peer);
    assert.equal(streamId, 2 * index + 1);
    assert.equal(response.status?.code, 3);
    assert.match(response.status.message, /^unmarshal request error: /);
  }
  // A response frame and a frame of an unknown type get no answer; the next request does.
  peer.write(encodeFrame({ streamId: 1, type: FrameType.Response, flags: 0, data: fromHex('ffff') }));
  peer.write(encodeFrame({ streamId: 1, type: 0x03, flags: 0x01, data: fromHex('ffff') }));
  peer.write(fromHex(connectRequestFrame));
  const { streamId, response } = await nextResponse(peer);
  assert.equal(streamId, 3);
  assert.equal(hex(response.payload), connectResponsePayload);
});

test('TtrpcServer gives handlers metadata, a deadline from timeout_nano, and aborts them when the peer leaves', async (t) => {
  const seen: CallContext[] = [];
  let handlerAborted: (reason: unknown) => void = () => {};
  const aborted = new Promise((resolve) => (handlerAborted = resolve));
  const { path } = await startServer(t, {
    svc: {
      async Hang(_payload, ctx) {
        seen.push(ctx);
        ctx.signal.addEventListener('abort', () => handlerAborted(ctx.signal.reason));
        return new Promise<Uint8Array>(() => {});
      },
    },
  });
  const peer = await connectRaw(t, path);
  const before = Date.now();
  peer.write(
    encodeFrame({
      streamId: 1,
      type: FrameType.Request,
      flags: 0,
      data: encodeRequest({
        service: 'svc',
        method: 'Hang',
        payload: new Uint8Array(0),
        timeoutNano: 3_600_000_000_000n, // one hour
        metadata: [
          { key: 'containerd-namespace', value: 'k8s.io' },
          { key: 'x', value: '1' },
          { key: 'x', value: '2' },
        ],
      }),
    }),
  );
  while (seen.length === 0) await new Promise((resolve) => setImmediate(resolve));
  const ctx = seen[0]!;
  assert.deepEqual([...ctx.metadata], [
    ['containerd-namespace', ['k8s.io']],
    ['x', ['1', '2']],
  ]);
  assert.ok(ctx.deadline !== undefined && ctx.deadline >= before + 3_600_000 && ctx.deadline <= Date.now() + 3_600_000);
  assert.equal(ctx.signal.aborted, false);

  peer.socket.destroy();
  const reason = await aborted;
  assert.ok(reason instanceof HullError && reason.code === 'unavailable');
});

test('TtrpcServer aborts a handler at its deadline and still sends its answer', async (t) => {
  const { path } = await startServer(t, {
    svc: {
      async Slow(_payload, ctx) {
        await new Promise((resolve) => ctx.signal.addEventListener('abort', resolve));
        throw ctx.signal.reason;
      },
    },
  });
  const peer = await connectRaw(t, path);
  peer.write(requestFrame(1, 'svc', 'Slow', new Uint8Array(0), 20_000_000n));
  assert.deepEqual((await nextResponse(peer)).response.status, { code: 4, message: 'context deadline exceeded', details: [] });
});

test('TtrpcServer close() lets running calls finish, refuses new ones, then drops connections', async (t) => {
  let release: () => void = () => {};
  const released = new Promise<void>((resolve) => (release = resolve));
  let started: () => void = () => {};
  const running = new Promise<void>((resolve) => (started = resolve));
  const { server, path } = await startServer(t, {
    svc: {
      async Work() {
        started();
        await released;
        return new Uint8Array([42]);
      },
    },
  });
  const peer = await connectRaw(t, path);
  peer.write(requestFrame(1, 'svc', 'Work'));
  await running;
  const closed = server.close();
  peer.write(requestFrame(3, 'svc', 'Work'));
  const refused = await nextResponse(peer);
  assert.equal(refused.streamId, 3);
  assert.deepEqual(refused.response.status, { code: 14, message: 'ttrpc: server closed', details: [] });
  release();
  const answered = await nextResponse(peer);
  assert.equal(answered.streamId, 1);
  assert.deepEqual([...answered.response.payload], [42]);
  await closed;
  await peer.ended;
  assert.equal(server.close(), closed, 'close() is idempotent');
});

test('TtrpcServer close() gives up on calls that outlive closeTimeoutMs', async (t) => {
  const server = new TtrpcServer({ closeTimeoutMs: 50 });
  let handlerSignal: AbortSignal | undefined;
  server.register('svc', {
    Hang: (_payload, ctx) => {
      handlerSignal = ctx.signal;
      return new Promise(() => {});
    },
  });
  const path = await tempSocketPath(t);
  await server.listen(path);
  const peer = await connectRaw(t, path);
  peer.write(requestFrame(1, 'svc', 'Hang'));
  while (handlerSignal === undefined) await new Promise((resolve) => setImmediate(resolve));
  await server.close();
  await peer.ended;
  assert.equal(handlerSignal.aborted, true);
});

test('TtrpcServer.register() refuses a second service of the same name', () => {
  const server = new TtrpcServer();
  server.register('svc', {});
  assert.throws(() => server.register('svc', {}), { code: 'already_exists' });
});
