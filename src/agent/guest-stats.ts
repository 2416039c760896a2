/**
 * guestStats: the guest kernel's accounting for the host's metrics, as the raw text of its /proc
 * files. The agent does not parse: the host must check every byte anyway (the guest is hostile),
 * so it parses once, there (src/sandbox/guest-stats.ts).
 */
import { open } from 'node:fs/promises';

/** GUEST_STATS_FILE_BYTES caps each file; the host refuses anything longer. */
export const GUEST_STATS_FILE_BYTES = 64 * 1024;

const FILES = { meminfo: '/proc/meminfo', stat: '/proc/stat', loadavg: '/proc/loadavg', netDev: '/proc/net/dev', diskstats: '/proc/diskstats' } as const;

export async function guestStats(): Promise<Record<keyof typeof FILES, string>> {
  const entries = await Promise.all(Object.entries(FILES).map(async ([key, path]) => [key, await readHead(path)] as const));
  return Object.fromEntries(entries) as Record<keyof typeof FILES, string>;
}

// readHead reads at most GUEST_STATS_FILE_BYTES of a /proc file ("" when it is missing).
async function readHead(path: string): Promise<string> {
  const file = await open(path, 'r').catch(() => undefined);
  if (!file) return '';
  try {
    const buffer = Buffer.alloc(GUEST_STATS_FILE_BYTES);
    let length = 0;
    while (length < buffer.length) {
      const { bytesRead } = await file.read(buffer, length, buffer.length - length, null);
      if (bytesRead === 0) break;
      length += bytesRead;
    }
    return buffer.subarray(0, length).toString('utf8');
  } finally {
    await file.close();
  }
}
