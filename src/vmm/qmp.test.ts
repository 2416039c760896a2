import { strict as assert } from 'node:assert';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { errorCode } from '../errors/index.js';
import { QmpClient, type QmpEvent } from './qmp.js';

const GREETING = { QMP: { version: { qemu: { micro: 22, minor: 2, major: 7 }, package: 'test' }, capabilities: ['oob'] } };

interface Command {
  execute: string;
  arguments?: Record<string, unknown>;
  id: number;
}

/** FakeQmp is a QMP server that greets, accepts qmp_capabilities and hands other commands to the test. */
interface FakeQmp {
  path: string;
  server: Server;
  /** commands receives each non-capabilities command with the socket to answer on. */
  commands: Array<{ command: Command; socket: Socket }>;
  nextCommand(): Promise<{ command: Command; socket: Socket }>;
}

let dir: string;
/** servers and sockets opened by fakeQmp, closed after all tests. */
const servers: Server[] = [];
const sockets: Socket[] = [];
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'hull-qmp-test-'));
});
after(async () => {
  for (const socket of sockets) socket.destroy();
  await Promise.all(servers.map((server) => new Promise((resolve) => server.close(resolve))));
  await rm(dir, { recursive: true, force: true });
});

let serverCount = 0;
async function fakeQmp(options: { greeting?: string } = {}): Promise<FakeQmp> {
  const path = join(dir, `qmp-${serverCount++}.sock`);
  const commands: FakeQmp['commands'] = [];
  let waiter: (() => void) | undefined;
  const server = createServer((socket) => {
    sockets.push(socket);
    socket.write(options.greeting ?? JSON.stringify(GREETING) + '\r\n');
    let buffered = '';
    socket.on('data', (chunk) => {
      buffered += chunk.toString();
      let newline: number;
      while ((newline = buffered.indexOf('\n')) >= 0) {
        const command = JSON.parse(buffered.slice(0, newline)) as Command;
        buffered = buffered.slice(newline + 1);
        if (command.execute === 'qmp_capabilities') {
          socket.write(JSON.stringify({ return: {}, id: command.id }) + '\r\n');
        } else {
          commands.push({ command, socket });
          waiter?.();
        }
      }
    });
    socket.on('error', () => undefined);
  });
  await new Promise<void>((resolve) => server.listen(path, resolve));
  servers.push(server);
  return {
    path,
    server,
    commands,
    async nextCommand() {
      while (commands.length === 0) await new Promise<void>((resolve) => (waiter = resolve));
      return commands.shift()!;
    },
  };
}

function send(socket: Socket, message: unknown): void {
  socket.write(JSON.stringify(message) + '\r\n');
}

describe('QmpClient', () => {
  it('connect() reads the greeting and negotiates capabilities', async () => {
    const fake = await fakeQmp();
    const client = await QmpClient.connect(fake.path);
    assert.deepEqual(client.greeting, GREETING.QMP);
    client.close();
    await client.closed;
  });

  it('connect() fails unavailable when nothing listens', async () => {
    await assert.rejects(QmpClient.connect(join(dir, 'nothing.sock')), (error: unknown) => errorCode(error) === 'unavailable');
  });

  it('connect() fails deadline_exceeded when no greeting comes', async () => {
    const fake = await fakeQmp({ greeting: '' });
    await assert.rejects(QmpClient.connect(fake.path, { timeoutMs: 50 }), (error: unknown) => errorCode(error) === 'deadline_exceeded');
  });

  it('execute() matches answers to commands by id, in any order', async () => {
    const fake = await fakeQmp();
    const client = await QmpClient.connect(fake.path);
    const first = client.execute('query-status');
    const second = client.execute('query-name', { verbose: true });
    const a = await fake.nextCommand();
    const b = await fake.nextCommand();
    assert.deepEqual(b.command.arguments, { verbose: true });
    assert.equal(a.command.arguments, undefined);
    send(b.socket, { return: { name: 'hull-x' }, id: b.command.id });
    send(a.socket, { return: { status: 'running', running: true }, id: a.command.id });
    assert.deepEqual(await first, { status: 'running', running: true });
    assert.deepEqual(await second, { name: 'hull-x' });
    client.close();
  });

  it('execute() rejects with the QMP error description and a mapped code', async () => {
    const fake = await fakeQmp();
    const client = await QmpClient.connect(fake.path);
    const notFound = client.execute('no-such-command');
    const generic = client.execute('migrate', { uri: 'x' });
    const a = await fake.nextCommand();
    send(a.socket, { error: { class: 'CommandNotFound', desc: "The command no-such-command has not been found" }, id: a.command.id });
    const b = await fake.nextCommand();
    send(b.socket, { error: { class: 'GenericError', desc: 'bad uri' }, id: b.command.id });
    await assert.rejects(notFound, (error: Error) => errorCode(error) === 'unimplemented' && /no-such-command.*not been found/.test(error.message));
    await assert.rejects(generic, (error: Error) => errorCode(error) === 'internal' && /"migrate" failed: bad uri \(GenericError\)/.test(error.message));
    client.close();
  });

  it('execute() times out with deadline_exceeded and drops the late answer', async () => {
    const fake = await fakeQmp();
    const client = await QmpClient.connect(fake.path);
    const slow = client.execute('stop', undefined, { timeoutMs: 20 });
    const { command, socket } = await fake.nextCommand();
    await assert.rejects(slow, (error: unknown) => errorCode(error) === 'deadline_exceeded');
    send(socket, { return: {}, id: command.id });
    const next = client.execute('cont');
    const answer = await fake.nextCommand();
    send(answer.socket, { return: 'ok', id: answer.command.id });
    assert.equal(await next, 'ok');
    client.close();
  });

  it('delivers events to listeners and to waitForEvent, between answers', async () => {
    const fake = await fakeQmp();
    const client = await QmpClient.connect(fake.path);
    const seen: QmpEvent[] = [];
    client.on('event', (event) => seen.push(event));
    const shutdown = client.waitForEvent('SHUTDOWN', 1000, (event) => event.data.guest === true);
    const pending = client.execute('stop');
    const { command, socket } = await fake.nextCommand();
    send(socket, { timestamp: { seconds: 1, microseconds: 2 }, event: 'STOP' });
    send(socket, { return: {}, id: command.id });
    send(socket, { event: 'SHUTDOWN', data: { guest: false, reason: 'host-qmp-quit' } });
    send(socket, { event: 'SHUTDOWN', data: { guest: true, reason: 'guest-shutdown' } });
    await pending;
    const event = await shutdown;
    assert.equal(event.data.reason, 'guest-shutdown');
    assert.deepEqual(seen.map((e) => e.event), ['STOP', 'SHUTDOWN', 'SHUTDOWN']);
    assert.deepEqual(seen[0]!.timestamp, { seconds: 1, microseconds: 2 });
    assert.deepEqual(seen[0]!.data, {});
    client.close();
  });

  it('waitForEvent() fails deadline_exceeded when the event does not come', async () => {
    const fake = await fakeQmp();
    const client = await QmpClient.connect(fake.path);
    await assert.rejects(client.waitForEvent('RESUME', 20), (error: unknown) => errorCode(error) === 'deadline_exceeded');
    client.close();
  });

  it('reassembles lines split across reads and several lines in one read', async () => {
    const fake = await fakeQmp();
    const client = await QmpClient.connect(fake.path);
    const one = client.execute('a');
    const two = client.execute('b');
    const a = await fake.nextCommand();
    const b = await fake.nextCommand();
    const text = JSON.stringify({ return: 1, id: a.command.id }) + '\r\n' + JSON.stringify({ return: 2, id: b.command.id }) + '\r\n';
    a.socket.write(text.slice(0, 5));
    await new Promise((resolve) => setTimeout(resolve, 10));
    a.socket.write(text.slice(5));
    assert.equal(await one, 1);
    assert.equal(await two, 2);
    client.close();
  });

  it('ends the connection on a line over maxLineBytes; pending commands reject', async () => {
    const fake = await fakeQmp();
    const client = await QmpClient.connect(fake.path, { maxLineBytes: 1024 });
    const pending = client.execute('query-status');
    const { socket } = await fake.nextCommand();
    socket.write('{"return": "' + 'x'.repeat(600));
    socket.write('x'.repeat(600)); // no newline yet: still over the cap
    await assert.rejects(pending, (error: Error) => /longer than 1024 bytes/.test(error.message));
    await client.closed;
    await assert.rejects(client.execute('cont'), /longer than 1024 bytes/);
  });

  it('ends the connection on a line that is not a JSON object', async () => {
    const fake = await fakeQmp();
    const client = await QmpClient.connect(fake.path);
    const pending = client.execute('query-status');
    const { socket } = await fake.nextCommand();
    socket.write('[1,2,3]\r\n');
    await assert.rejects(pending, /not a JSON object/);
    await client.closed;
  });

  it('rejects pending commands and waiters with unavailable when the server goes away', async () => {
    const fake = await fakeQmp();
    const client = await QmpClient.connect(fake.path);
    const pending = client.execute('query-status');
    const waiting = client.waitForEvent('SHUTDOWN', 5000);
    const { socket } = await fake.nextCommand();
    socket.destroy();
    await assert.rejects(pending, (error: unknown) => errorCode(error) === 'unavailable');
    await assert.rejects(waiting, (error: unknown) => errorCode(error) === 'unavailable');
    assert.ok(client.isClosed);
    await assert.rejects(client.execute('cont'), (error: unknown) => errorCode(error) === 'unavailable');
  });
});
