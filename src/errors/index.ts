/**
 * errors — hull's one error class and its error codes.
 *
 * The codes mirror containerd's errdefs classes, because that is what containerd (and CRI behind it)
 * understands: a shim answering NOT_FOUND or FAILED_PRECONDITION changes what containerd does next.
 * Errors cross process boundaries (shim ↔ agent over ttrpc, JSON logs), where `instanceof` no longer
 * holds, so every helper here looks at `.code` only. The mapping to gRPC status codes lives in
 * `grpc-status.ts` and is used only at ttrpc edges.
 */

/** ERROR_CODES lists every ErrorCode; the order means nothing. */
export const ERROR_CODES = [
  'invalid_argument',
  'not_found',
  'already_exists',
  'failed_precondition',
  'unavailable',
  'unimplemented',
  'deadline_exceeded',
  'cancelled',
  'resource_exhausted',
  'unknown',
  'internal',
] as const;

/** ErrorCode is the class of a failure, after containerd's errdefs. */
export type ErrorCode = (typeof ERROR_CODES)[number];

const knownCodes: ReadonlySet<string> = new Set(ERROR_CODES);

/** HullError is a failure with a code that callers (and remote peers) can act on. */
export class HullError extends Error {
  readonly code: ErrorCode;

  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'HullError';
    this.code = code;
  }
}

/** isErrorCode tells whether a value is one of the ErrorCode strings. */
export function isErrorCode(value: unknown): value is ErrorCode {
  return typeof value === 'string' && knownCodes.has(value);
}

/**
 * errorCode returns the ErrorCode carried by `e` (any object with a known `.code`), else 'unknown'.
 * Node's system errors carry codes like 'ENOENT', which are not ErrorCodes and so count as 'unknown'.
 */
export function errorCode(e: unknown): ErrorCode {
  if (typeof e === 'object' && e !== null && 'code' in e && isErrorCode(e.code)) return e.code;
  return 'unknown';
}

function hasCode(e: unknown, code: ErrorCode): boolean {
  return errorCode(e) === code;
}

export const isInvalidArgument = (e: unknown): boolean => hasCode(e, 'invalid_argument');
export const isNotFound = (e: unknown): boolean => hasCode(e, 'not_found');
export const isAlreadyExists = (e: unknown): boolean => hasCode(e, 'already_exists');
export const isFailedPrecondition = (e: unknown): boolean => hasCode(e, 'failed_precondition');
export const isUnavailable = (e: unknown): boolean => hasCode(e, 'unavailable');
export const isUnimplemented = (e: unknown): boolean => hasCode(e, 'unimplemented');
export const isDeadlineExceeded = (e: unknown): boolean => hasCode(e, 'deadline_exceeded');
export const isCancelled = (e: unknown): boolean => hasCode(e, 'cancelled');
export const isResourceExhausted = (e: unknown): boolean => hasCode(e, 'resource_exhausted');
export const isInternal = (e: unknown): boolean => hasCode(e, 'internal');
/** isUnknown is true for HullError('unknown') and for anything that carries no known code. */
export const isUnknown = (e: unknown): boolean => hasCode(e, 'unknown');

export { PEER_TEXT_MAX_BYTES, peerText } from './peer-text.js';
