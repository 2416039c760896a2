/**
 * content-hash — sha256 of files and texts, and the image id: a hash over a canonical description of
 * every input that goes into a guest image. Equal inputs give the same id on every machine; a change
 * to any input (a kernel update, a new node, a new agent bundle, a new init script) gives a new one.
 */

import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';

/** IMAGE_ID_LENGTH is how many hex digits of the sha256 an image id keeps (80 bits). */
export const IMAGE_ID_LENGTH = 20;

/** sha256Hex hashes bytes or UTF-8 text. */
export function sha256Hex(data: string | Uint8Array): string {
  return createHash('sha256').update(data).digest('hex');
}

/** hashFile streams a file through sha256. */
export async function hashFile(path: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path, { highWaterMark: 1 << 20 })) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

/** canonicalJson renders a JSON value with object keys sorted at every depth and no whitespace. */
export function canonicalJson(value: unknown): string {
  if (value === null || typeof value !== 'object') {
    if (typeof value === 'number' && !Number.isFinite(value)) throw new TypeError('canonicalJson: non-finite number');
    if (value === undefined || typeof value === 'function' || typeof value === 'bigint' || typeof value === 'symbol') {
      throw new TypeError(`canonicalJson: cannot encode a ${typeof value}`);
    }
    return JSON.stringify(value);
  }
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  const entries = Object.entries(value as Record<string, unknown>)
    .filter(([, v]) => v !== undefined)
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(',')}}`;
}

/** imageIdOf is the id of the image built from `inputs` (a GuestInputs, see manifest.ts). */
export function imageIdOf(inputs: unknown): string {
  return sha256Hex(canonicalJson(inputs)).slice(0, IMAGE_ID_LENGTH);
}
