/**
 * Opening the stdio FIFOs containerd's clients created (ctr, CRI). The client
 * already holds the read ends of stdout/stderr and the write end of stdin,
 * so opening ours does not block. FIFOs go on the event loop as pipes.
 */
import { constants } from 'node:fs';
import { open } from 'node:fs/promises';
import { Socket } from 'node:net';
import type { HostStdio } from '../sandbox/index.js';

export interface FifoPaths {
  stdin: string;
  stdout: string;
  stderr: string;
}

export interface FifoIO extends HostStdio {
  close(): void;
}

async function openFifo(path: string, flags: number, readable: boolean): Promise<Socket> {
  const handle = await open(path, flags);
  return new Socket({ fd: handle.fd, readable, writable: !readable });
}

export async function openFifos(paths: FifoPaths): Promise<FifoIO> {
  const io: FifoIO = { close: () => {} };
  const sockets: Socket[] = [];
  try {
    if (paths.stdin) sockets.push((io.stdin = await openFifo(paths.stdin, constants.O_RDONLY | constants.O_NONBLOCK, true)));
    if (paths.stdout) sockets.push((io.stdout = await openFifo(paths.stdout, constants.O_WRONLY, false)));
    if (paths.stderr) sockets.push((io.stderr = await openFifo(paths.stderr, constants.O_WRONLY, false)));
  } catch (e) {
    for (const s of sockets) s.destroy();
    throw e;
  }
  for (const s of sockets) s.on('error', () => {}); // a client that went away is not the shim's failure
  io.close = () => {
    for (const s of sockets) if (s.writable) s.end();
    for (const s of sockets) if (!s.writable) s.destroy();
  };
  return io;
}
