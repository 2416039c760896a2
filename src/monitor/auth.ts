/**
 * Who may read `hull monitor`'s /metrics. Its series name every pod of the node (namespace, name,
 * uid), so beyond the node's loopback every request must carry a bearer token: the one in the file
 * `monitor_token_file` names (or --token-file), compared in constant time. A monitor told to listen
 * on any other address without a token refuses to start. On loopback without a token, the node's own
 * processes read it (as they could read the status sockets' group, or be root).
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { isIP } from 'node:net';
import { HullError } from '../errors/index.js';

/** TOKEN_LIMITS: a token shorter than `minChars` is guessable; a file over `maxBytes` is not a token. */
export const TOKEN_LIMITS = { minChars: 16, maxBytes: 4096 } as const;

/** isLoopback tells whether `host` (an address or a name to listen on) can only be reached from this node. */
export function isLoopback(host: string): boolean {
  const h = host.toLowerCase();
  if (h === 'localhost') return true;
  if (isIP(h) === 4) return h.startsWith('127.');
  if (isIP(h) === 6) return h === '::1' || h === '0:0:0:0:0:0:0:1' || /^::ffff:127\./.test(h);
  return false;
}

/** readToken reads the bearer token of `file`: its content without the line end; printable, no spaces, long enough. */
export async function readToken(file: string): Promise<string> {
  let raw: Buffer;
  try {
    raw = await readFile(file);
  } catch (e) {
    throw new HullError('invalid_argument', `Cannot read the monitor's token file "${file}": ${(e as Error).message}`);
  }
  if (raw.length > TOKEN_LIMITS.maxBytes) throw new HullError('invalid_argument', `The monitor's token file "${file}" is over ${TOKEN_LIMITS.maxBytes} bytes`);
  const token = raw.toString('utf8').replace(/\r?\n$/, '');
  if (!/^[\x21-\x7e]+$/.test(token)) throw new HullError('invalid_argument', `The monitor's token file "${file}" must hold one token of printable characters without spaces`);
  if (token.length < TOKEN_LIMITS.minChars) throw new HullError('invalid_argument', `The monitor's token in "${file}" has ${token.length} characters: at least ${TOKEN_LIMITS.minChars}`);
  return token;
}

const digest = (value: string): Buffer => createHash('sha256').update(value, 'utf8').digest();

/**
 * bearerCheck returns a check of an Authorization header against `token`. Both sides are hashed
 * first, so the comparison takes the same time whatever the length or content of the guess.
 */
export function bearerCheck(token: string): (authorization: string | undefined) => boolean {
  const expected = digest(token);
  return (authorization) => {
    const m = /^Bearer +(\S+)\s*$/i.exec(authorization ?? '');
    return timingSafeEqual(digest(m?.[1] ?? ''), expected) && m !== null;
  };
}

/** checkListen refuses to serve beyond loopback without a token. */
export function checkListen(host: string, hasToken: boolean): void {
  if (hasToken || isLoopback(host)) return;
  throw new HullError(
    'failed_precondition',
    `Refusing to serve /metrics on "${host}" without authentication: its series name the node's pods. Set monitor_token_file (a file holding a bearer token) in hull's config or pass --token-file, or listen on 127.0.0.1`,
  );
}
