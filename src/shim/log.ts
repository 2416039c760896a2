/**
 * The shim daemon's log: lines go to `<bundle>/log`, a FIFO containerd opened
 * and copies to its own log; if it cannot be opened they go nowhere (the
 * daemon has no stdout or stderr, by contract).
 */
import { constants, openSync, writeSync, closeSync } from 'node:fs';

export function openShimLog(path: string, id: string): { log: (line: string) => void; close: () => void } {
  let fd: number | undefined;
  try {
    fd = openSync(path, constants.O_WRONLY | constants.O_NONBLOCK);
  } catch {
    fd = undefined;
  }
  return {
    log(line: string) {
      if (fd === undefined) return;
      try {
        writeSync(fd, `time="${new Date().toISOString()}" level=info msg=${JSON.stringify(line)} runtime=io.containerd.hull.v2 id=${id}\n`);
      } catch {
        // containerd stopped reading: dropping log lines is better than blocking the shim
      }
    },
    close() {
      if (fd !== undefined) closeSync(fd);
      fd = undefined;
    },
  };
}
