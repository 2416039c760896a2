/**
 * testing — helpers for the ttrpc tests only: temporary unix sockets that clean up after the test, and
 * a raw peer that sends and reads frames byte by byte, to play a misbehaving client or server.
 */

import { mkdtemp, rm } from 'node:fs/promises';
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TestContext } from 'node:test';
import { FrameDecoder, type DecodedFrame } from './frame.js';

/** tempSocketPath returns a socket path in a fresh 0700 directory that is removed after the test. */
export async function tempSocketPath(t: TestContext): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'hull-ttrpc-test-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  return join(dir, 'ttrpc.sock');
}

/** RawPeer is one end of a socket that writes raw bytes and reads decoded frames in arrival order. */
export class RawPeer {
  private readonly decoder = new FrameDecoder();
  private readonly received: DecodedFrame[] = [];
  private waiters: Array<() => void> = [];
  readonly ended: Promise<void>;

  constructor(readonly socket: Socket) {
    socket.on('data', (chunk: Buffer) => {
      this.received.push(...this.decoder.push(chunk));
      this.wake();
    });
    this.ended = new Promise((resolve) => socket.on('close', () => resolve()));
    socket.on('close', () => this.wake());
    socket.on('error', () => {});
  }

  write(bytes: Uint8Array): void {
    this.socket.write(bytes);
  }

  /** next resolves with the next decoded frame; it fails if the socket closes first. */
  async next(): Promise<DecodedFrame> {
    for (;;) {
      const decoded = this.received.shift();
      if (decoded !== undefined) return decoded;
      if (this.socket.destroyed) throw new Error('RawPeer: socket closed');
      await new Promise<void>((resolve) => this.waiters.push(resolve));
    }
  }

  private wake(): void {
    const waiters = this.waiters;
    this.waiters = [];
    for (const wake of waiters) wake();
  }
}

/** connectRaw opens a raw connection to a unix socket; it is destroyed after the test. */
export async function connectRaw(t: TestContext, path: string): Promise<RawPeer> {
  const socket = createConnection(path);
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('error', reject);
  });
  t.after(() => socket.destroy());
  return new RawPeer(socket);
}

/**
 * listenRaw serves a unix socket whose connections are handed to `onPeer` as RawPeers, to play a
 * hostile ttrpc server; everything is closed after the test.
 */
export async function listenRaw(t: TestContext, path: string, onPeer: (peer: RawPeer) => void): Promise<Server> {
  const sockets = new Set<Socket>();
  const server = createServer((socket) => {
    sockets.add(socket);
    onPeer(new RawPeer(socket));
  });
  await new Promise<void>((resolve) => server.listen(path, resolve));
  t.after(async () => {
    for (const socket of sockets) socket.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });
  return server;
}

export function hex(bytes: Uint8Array): string {
  return Buffer.from(bytes).toString('hex');
}

export function fromHex(text: string): Uint8Array {
  return new Uint8Array(Buffer.from(text, 'hex'));
}
