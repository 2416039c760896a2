/** Unix sockets: connecting as a client, and listening with the socket file closed to others. */
import { chmod, rm } from 'node:fs/promises';
import { createConnection, type Server, type Socket } from 'node:net';
import { HullError } from '../errors/index.js';

/** connectUnix connects to the unix socket at `path`; fails 'unavailable' naming `what` (e.g. "QMP socket"). */
export function connectUnix(path: string, what = 'socket'): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const attempt = createConnection(path);
    attempt.once('error', (error) => {
      attempt.destroy();
      reject(new HullError('unavailable', `Cannot connect to ${what} "${path}": ${error.message}`, { cause: error }));
    });
    attempt.once('connect', () => {
      attempt.removeAllListeners('error');
      resolve(attempt);
    });
  });
}

/** listenUnix makes `server` listen at `path` (a stale socket file there is removed first), mode 0600. */
export async function listenUnix(server: Server, path: string): Promise<void> {
  await rm(path, { force: true });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(path, () => {
      server.off('error', reject);
      resolve();
    });
  });
  await chmod(path, 0o600);
}
