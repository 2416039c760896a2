import { strict as assert } from 'node:assert';
import { mkdtemp, readFile, readdir, rm, stat } from 'node:fs/promises';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { errorCode } from '../errors/index.js';
import { ConsoleCapture } from './console.js';

let dir: string;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'hull-console-test-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** consoleServer listens like QEMU's console chardev and hands the test the connected socket. */
async function consoleServer(name: string): Promise<{ path: string; server: Server; peer: Promise<Socket> }> {
  const path = join(dir, `${name}.sock`);
  let connected!: (socket: Socket) => void;
  const peer = new Promise<Socket>((resolve) => (connected = resolve));
  const server = createServer((socket) => connected(socket));
  await new Promise<void>((resolve) => server.listen(path, resolve));
  return { path, server, peer };
}

/** write sends `data` and waits until the kernel accepted it. */
function write(socket: Socket, data: string | Buffer): Promise<void> {
  return new Promise((resolve, reject) => socket.write(data, (error) => (error ? reject(error) : resolve())));
}

describe('ConsoleCapture', () => {
  it('copies the console to the log file and keeps a tail in memory', async () => {
    const { path, server, peer } = await consoleServer('plain');
    const log = join(dir, 'plain.log');
    const capture = await ConsoleCapture.connect(path, log);
    const socket = await peer;
    await write(socket, 'Linux version 6.1\r\n');
    await write(socket, 'Kernel panic - not syncing\r\n');
    socket.end();
    await capture.done;
    assert.equal(await readFile(log, 'utf8'), 'Linux version 6.1\r\nKernel panic - not syncing\r\n');
    assert.equal(capture.tail(), 'Linux version 6.1\r\nKernel panic - not syncing\r\n');
    assert.equal(capture.tail(12), 'ot syncing\r\n');
    server.close();
  });

  it('rotates the log so a flooding guest never puts more than maxLogBytes on disk', async () => {
    const { path, server, peer } = await consoleServer('flood');
    const log = join(dir, 'flood.log');
    const capture = await ConsoleCapture.connect(path, log, { maxLogBytes: 64 * 1024, tailBytes: 1024 });
    const socket = await peer;
    const line = Buffer.from('x'.repeat(1023) + '\n');
    for (let i = 0; i < 1000; i++) await write(socket, line); // ~1 MiB
    await write(socket, 'LAST LINE\n');
    socket.end();
    await capture.done;
    const files = (await readdir(dir)).filter((name) => name.startsWith('flood.log'));
    assert.deepEqual(files.sort(), ['flood.log', 'flood.log.1']);
    const sizes = await Promise.all(files.map(async (name) => (await stat(join(dir, name))).size));
    assert.ok(sizes.every((size) => size <= 32 * 1024), `sizes ${sizes}`);
    assert.ok((await readFile(log, 'utf8')).endsWith('LAST LINE\n'));
    assert.ok(capture.tail().length <= 1024);
    assert.ok(capture.tail().endsWith('LAST LINE\n'));
    assert.equal(capture.logError, undefined);
    server.close();
  });

  it('close() stops reading and resolves once the log is closed', async () => {
    const { path, server, peer } = await consoleServer('close');
    const capture = await ConsoleCapture.connect(path, join(dir, 'close.log'));
    const socket = await peer;
    await write(socket, 'hello\n');
    await new Promise((resolve) => setTimeout(resolve, 20));
    await capture.close();
    await capture.close(); // idempotent
    assert.equal(capture.tail(), 'hello\n');
    socket.destroy();
    server.close();
  });

  it('connect() fails unavailable when the socket is not there', async () => {
    await assert.rejects(ConsoleCapture.connect(join(dir, 'missing.sock'), join(dir, 'missing.log')), (error: unknown) => errorCode(error) === 'unavailable');
  });
});
