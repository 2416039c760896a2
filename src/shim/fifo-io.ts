/**
 * Opening the stdio FIFOs containerd's clients created (ctr, CRI). They must
 * be opened at Create/Exec, as runc's shim does, not at Start: clients read
 * their ends non-blocking, and a FIFO without a writer reads as end-of-file,
 * so output written by a writer that came later is lost. FIFOs go on the
 * event loop as pipes.
 *
 * The shim holds a writer of the stdin FIFO itself, as runc's shim does, until the
 * client's CloseIO: the reader sees end-of-file only once both that writer and the
 * client's are closed, so it neither ends before the client opened its end nor
 * drops what is still in the FIFO when CloseIO overtakes the data (ctr and CRI
 * call it as soon as their own source ends).
 */
import { constants } from 'node:fs';
import { close as closeFd, open } from 'node:fs';
import { Socket } from 'node:net';
import type { HostStdio } from '../sandbox/index.js';

export interface FifoPaths {
  stdin: string;
  stdout: string;
  stderr: string;
}

export interface FifoIO extends HostStdio {
  /**
   * closeStdin is the client's CloseIO: the shim lets go of its own writer of the stdin FIFO, so
   * the reader gets everything still in it, then end-of-file once the client's writer is closed.
   */
  closeStdin(): void;
  /** close ends the output FIFOs once what was written reached them, and drops stdin. */
  close(): Promise<void>;
}

// A reader that stopped reading must not hold an exit back for ever.
const FLUSH_TIMEOUT_MS = 5000;

function flushed(socket: Socket): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      socket.destroy();
      resolve();
    }, FLUSH_TIMEOUT_MS);
    socket.end(() => {
      clearTimeout(timer);
      resolve();
    });
  });
}

// A raw fd, not a FileHandle: a FileHandle closes its fd when garbage-collected,
// which would pull the FIFO out from under the socket (and could close a reused fd).
function openFd(path: string, flags: number): Promise<number> {
  return new Promise((resolve, reject) => open(path, flags, (e, fd) => (e ? reject(e) : resolve(fd))));
}

async function openFifo(path: string, flags: number, readable: boolean): Promise<Socket> {
  return new Socket({ fd: await openFd(path, flags), readable, writable: !readable });
}

export async function openFifos(paths: FifoPaths): Promise<FifoIO> {
  const io: FifoIO = { closeStdin: () => {}, close: async () => {} };
  const sockets: Socket[] = [];
  let stdinWriter: number | undefined;
  const closeStdinWriter = (): void => {
    if (stdinWriter !== undefined) closeFd(stdinWriter, () => {});
    stdinWriter = undefined;
  };
  try {
    if (paths.stdin) {
      // The writer is opened between the reader's open and its first read: a non-blocking open for
      // writing fails while the FIFO has no reader, and a read before any writer is end-of-file.
      const reader = await openFd(paths.stdin, constants.O_RDONLY | constants.O_NONBLOCK);
      try {
        stdinWriter = await openFd(paths.stdin, constants.O_WRONLY | constants.O_NONBLOCK);
      } catch (e) {
        closeFd(reader, () => {});
        throw e;
      }
      sockets.push((io.stdin = new Socket({ fd: reader, readable: true, writable: false })));
    }
    if (paths.stdout) sockets.push((io.stdout = await openFifo(paths.stdout, constants.O_WRONLY, false)));
    if (paths.stderr) sockets.push((io.stderr = await openFifo(paths.stderr, constants.O_WRONLY, false)));
  } catch (e) {
    closeStdinWriter();
    for (const s of sockets) s.destroy();
    throw e;
  }
  io.closeStdin = closeStdinWriter;
  for (const s of sockets) s.on('error', () => {}); // a client that went away is not the shim's failure
  let closing: Promise<void> | undefined;
  io.close = () => {
    // Clients stop copying once the exit is reported: everything must be in the FIFO before that.
    closeStdinWriter();
    closing ??= Promise.all(sockets.map((s) => (s.writable ? flushed(s) : (s.destroy(), undefined)))).then(() => {});
    return closing;
  };
  return io;
}
