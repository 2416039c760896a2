import { strict as assert } from 'node:assert';
import { test, type TestContext } from 'node:test';
import { ERROR_CODES, HullError } from '../errors/index.js';
import { FRAME_HEADER_LENGTH, FrameType, MAX_FRAME_DATA_LENGTH, encodeFrame } from './frame.js';
import { decodeRequest, encodeResponse } from './messages.js';
import { TtrpcClient } from './client.js';
import { TtrpcServer, type CallContext, type ServiceMethods } from './server.js';
import { connectRaw, listenRaw, tempSocketPath, type RawPeer } from './testing.js';

const text = new TextEncoder();
const untext = new TextDecoder();

/** startPair serves `services` on a temporary socket and connects a client; all closed after the test. */
async function startPair(t: TestContext, services: Record<string, ServiceMethods>): Promise<TtrpcClient> {
  const server = new TtrpcServer({ closeTimeoutMs: 1000 });
  for (const [name, methods] of Object.entries(services)) server.register(name, methods);
  const path = await tempSocketPath(t);
  await server.listen(path);
  t.after(() => server.close());
  const client = await TtrpcClient.connect(path);
  t.after(() => client.close());
  return client;
}

/** isHullError returns an assert.rejects validator for a HullError with `code` (and `message`). */
function isHullError(code: string, message?: string | RegExp) {
  return (error: unknown): boolean => {
    assert.ok(error instanceof HullError, `not a HullError: ${String(error)}`);
    assert.equal(error.code, code);
    if (typeof message === 'string') assert.equal(error.message, message);
    else if (message !== undefined) assert.match(error.message, message);
    return true;
  };
}

test('TtrpcClient runs concurrent calls that are answered out of order', async (t) => {
  const gates = new Map<string, () => void>();
  const arrived: string[] = [];
  const client = await startPair(t, {
    echo: {
      async Echo(payload) {
        const word = untext.decode(payload);
        arrived.push(word);
        await new Promise<void>((resolve) => gates.set(word, resolve));
        return text.encode(`echo ${word}`);
      },
    },
  });
  const words = ['a', 'b', 'c', 'd'];
  const settled: string[] = [];
  const calls = words.map((word) =>
    client.call('echo', 'Echo', text.encode(word)).then((answer) => {
      settled.push(untext.decode(answer));
      return untext.decode(answer);
    }),
  );
  while (arrived.length < words.length) await new Promise((resolve) => setImmediate(resolve));
  // All four run at once on the server; release them last to first.
  for (const word of [...words].reverse()) {
    gates.get(word)!();
    while (settled.length < words.length - words.indexOf(word)) await new Promise((resolve) => setImmediate(resolve));
  }
  assert.deepEqual(await Promise.all(calls), ['echo a', 'echo b', 'echo c', 'echo d']);
  assert.deepEqual(settled, ['echo d', 'echo c', 'echo b', 'echo a']);
});

test('TtrpcClient sends odd stream ids from 1, metadata and timeout_nano', async (t) => {
  const path = await tempSocketPath(t);
  const requests: Array<{ streamId: number; request: ReturnType<typeof decodeRequest> }> = [];
  await listenRaw(t, path, async (peer) => {
    for (;;) {
      const decoded = await peer.next().catch(() => undefined);
      if (decoded?.kind !== 'frame') return;
      requests.push({ streamId: decoded.frame.streamId, request: decodeRequest(decoded.frame.data) });
      peer.write(encodeFrame({ streamId: decoded.frame.streamId, type: FrameType.Response, flags: 0, data: new Uint8Array(0) }));
    }
  });
  const client = await TtrpcClient.connect(path);
  t.after(() => client.close());
  await client.call('svc', 'A', new Uint8Array(0), { metadata: { 'containerd-namespace': 'k8s.io', x: ['1', '2'] } });
  await client.call('svc', 'B', new Uint8Array([1]), { timeoutMs: 1500 });
  await client.call('svc', 'C', new Uint8Array(0));
  assert.deepEqual(
    requests.map(({ streamId }) => streamId),
    [1, 3, 5],
  );
  assert.deepEqual(requests[0]!.request.metadata, [
    { key: 'containerd-namespace', value: 'k8s.io' },
    { key: 'x', value: '1' },
    { key: 'x', value: '2' },
  ]);
  assert.equal(requests[0]!.request.timeoutNano, 0n);
  assert.equal(requests[1]!.request.timeoutNano, 1_500_000_000n);
});

test('TtrpcClient fails a call with deadline_exceeded at its timeout and drops the late answer', async (t) => {
  let release: () => void = () => {};
  let serverCtx: CallContext | undefined;
  const client = await startPair(t, {
    svc: {
      async Slow(_payload, ctx) {
        serverCtx = ctx;
        await new Promise<void>((resolve) => (release = resolve));
        return new Uint8Array([1]);
      },
      async Fast() {
        return new Uint8Array([2]);
      },
    },
  });
  await assert.rejects(
    client.call('svc', 'Slow', new Uint8Array(0), { timeoutMs: 30 }),
    isHullError('deadline_exceeded', 'ttrpc: svc/Slow: context deadline exceeded'),
  );
  assert.ok(serverCtx?.deadline !== undefined, 'the server got the timeout too');
  release(); // its answer now arrives for a stream nobody waits on
  assert.deepEqual([...(await client.call('svc', 'Fast', new Uint8Array(0)))], [2]);
  assert.equal(client.isClosed, false);
});

test('TtrpcClient turns error statuses into HullErrors with the same code', async (t) => {
  const client = await startPair(t, {
    svc: {
      async Fail(payload) {
        throw new HullError(ERROR_CODES[payload[0]!]!, 'why');
      },
    },
  });
  for (const [index, code] of ERROR_CODES.entries()) {
    await assert.rejects(client.call('svc', 'Fail', new Uint8Array([index])), isHullError(code, 'why'));
  }
  await assert.rejects(client.call('svc', 'Nope', new Uint8Array(0)), isHullError('unimplemented', 'method Nope'));
  await assert.rejects(client.call('nope', 'Nope', new Uint8Array(0)), isHullError('unimplemented', 'service nope'));
});

test('TtrpcClient rejects pending calls with "ttrpc: closed" when the connection closes', async (t) => {
  const path = await tempSocketPath(t);
  let serverPeer: RawPeer | undefined;
  await listenRaw(t, path, (peer) => (serverPeer = peer));
  const client = await TtrpcClient.connect(path);
  t.after(() => client.close());
  const calls = [1, 2, 3].map(() => client.call('svc', 'Hang', new Uint8Array(0)));
  await serverPeer!.next(); // the server saw at least one request; now it goes away
  serverPeer!.socket.destroy();
  for (const call of calls) await assert.rejects(call, isHullError('unavailable', 'ttrpc: closed'));
  await client.closed;
  assert.equal(client.isClosed, true);
  await assert.rejects(client.call('svc', 'After', new Uint8Array(0)), isHullError('unavailable', 'ttrpc: closed'));
});

test('TtrpcClient close() fails its pending calls at once', async (t) => {
  const client = await startPair(t, { svc: { Hang: () => new Promise(() => {}) } });
  const call = client.call('svc', 'Hang', new Uint8Array(0));
  client.close();
  await assert.rejects(call, isHullError('unavailable', 'ttrpc: closed'));
  client.close(); // idempotent
});

test('TtrpcClient call() honours an AbortSignal', async (t) => {
  const client = await startPair(t, { svc: { Hang: () => new Promise(() => {}), Ok: async () => new Uint8Array(0) } });
  const controller = new AbortController();
  const call = client.call('svc', 'Hang', new Uint8Array(0), { signal: controller.signal });
  controller.abort();
  await assert.rejects(call, isHullError('cancelled'));
  await assert.rejects(client.call('svc', 'Ok', new Uint8Array(0), { signal: controller.signal }), isHullError('cancelled'));
  await client.call('svc', 'Ok', new Uint8Array(0));
});

test('TtrpcClient refuses a request over 4 MiB without sending it, and an oversized answer fails only its call', async (t) => {
  const path = await tempSocketPath(t);
  await listenRaw(t, path, async (peer) => {
    for (;;) {
      const decoded = await peer.next().catch(() => undefined);
      if (decoded?.kind !== 'frame') return;
      const { streamId } = decoded.frame;
      const { method } = decodeRequest(decoded.frame.data);
      if (method === 'Huge') {
        // A hostile server: 5 MiB of answer, then an answer for a stream nobody asked about, then garbage.
        const length = 5 << 20;
        const frame = new Uint8Array(FRAME_HEADER_LENGTH + length);
        const view = new DataView(frame.buffer);
        view.setUint32(0, length);
        view.setUint32(4, streamId);
        view.setUint8(8, FrameType.Response);
        peer.write(frame);
        peer.write(encodeFrame({ streamId: 999, type: FrameType.Response, flags: 0, data: new Uint8Array(0) }));
      } else if (method === 'Garbage') {
        peer.write(encodeFrame({ streamId, type: FrameType.Response, flags: 0, data: new Uint8Array([0xff, 0xff, 0xff]) }));
      } else {
        const data = encodeResponse({ payload: new Uint8Array([7]) });
        peer.write(encodeFrame({ streamId, type: FrameType.Response, flags: 0, data }));
      }
    }
  });
  const client = await TtrpcClient.connect(path);
  t.after(() => client.close());

  await assert.rejects(client.call('svc', 'Big', new Uint8Array(MAX_FRAME_DATA_LENGTH)), isHullError('resource_exhausted'));
  await assert.rejects(client.call('svc', 'Huge', new Uint8Array(0)), isHullError('resource_exhausted', /exceed maximum message size/));
  await assert.rejects(client.call('svc', 'Garbage', new Uint8Array(0)), isHullError('internal', /^ttrpc: svc\/Garbage: bad response: /));
  assert.deepEqual([...(await client.call('svc', 'Ok', new Uint8Array(0)))], [7]);
});

test('TtrpcClient cuts a hostile error message to 4 KiB and strips its control characters', async (t) => {
  const path = await tempSocketPath(t);
  // 1 MiB of message with a terminal escape, NULs and a carriage return, as a hostile guest might send.
  const message = `\x1b[2J\x1b[31mno\0such\rprocess\n${'A'.repeat(1 << 20)}`;
  await listenRaw(t, path, async (peer) => {
    const decoded = await peer.next();
    if (decoded.kind !== 'frame') return;
    const data = encodeResponse({ status: { code: 5, message, details: [] }, payload: new Uint8Array(0) });
    peer.write(encodeFrame({ streamId: decoded.frame.streamId, type: FrameType.Response, flags: 0, data }));
  });
  const client = await TtrpcClient.connect(path);
  t.after(() => client.close());
  await assert.rejects(client.call('svc', 'Signal', new Uint8Array(0)), (error: unknown) => {
    assert.ok(error instanceof HullError);
    assert.equal(error.code, 'not_found');
    assert.ok(error.message.startsWith('\ufffd[2J\ufffd[31mno\ufffdsuch\ufffdprocess\nAAAA'), error.message.slice(0, 40));
    assert.ok(Buffer.byteLength(error.message) <= 4096, `${Buffer.byteLength(error.message)} bytes`);
    assert.match(error.message, /\[cut: \d+ bytes in all\]$/);
    return true;
  });
});

test('TtrpcClient and TtrpcServer work over a raw socket pair handed to serve()', async (t) => {
  const path = await tempSocketPath(t);
  const server = new TtrpcServer();
  server.register('svc', { Ping: async () => text.encode('pong') });
  t.after(() => server.close());
  await listenRaw(t, path, (peer) => server.serve(peer.socket));
  const peer = await connectRaw(t, path);
  const client = new TtrpcClient(peer.socket);
  assert.equal(untext.decode(await client.call('svc', 'Ping', new Uint8Array(0))), 'pong');
});
