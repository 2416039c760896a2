/**
 * grpc-status — the one table between hull's ErrorCodes and gRPC status codes.
 *
 * ttrpc carries failures as google.rpc.Status, and containerd turns the status code back into its
 * errdefs classes (errdefs/grpc.go). Both directions go through the table below, so a code survives a
 * round trip through containerd or the guest agent. Use it only at ttrpc edges.
 */

import { HullError, errorCode, type ErrorCode } from './index.js';
import { peerText } from './peer-text.js';

/** STATUS_OK is gRPC's OK; a ttrpc Response without a status also means OK. */
export const STATUS_OK = 0;
/** STATUS_UNKNOWN is what any code outside the table maps to. */
export const STATUS_UNKNOWN = 2;

const statusByCode: Readonly<Record<ErrorCode, number>> = {
  cancelled: 1,
  unknown: STATUS_UNKNOWN,
  invalid_argument: 3,
  deadline_exceeded: 4,
  not_found: 5,
  already_exists: 6,
  resource_exhausted: 8,
  failed_precondition: 9,
  unimplemented: 12,
  internal: 13,
  unavailable: 14,
};

const codeByStatus: ReadonlyMap<number, ErrorCode> = new Map(
  Object.entries(statusByCode).map(([code, status]) => [status, code as ErrorCode]),
);

/** toStatusCode returns the gRPC status code for an ErrorCode. */
export function toStatusCode(code: ErrorCode): number {
  return statusByCode[code];
}

/**
 * fromStatusCode returns the ErrorCode for a gRPC status code; codes without a hull counterpart
 * (PERMISSION_DENIED, ABORTED, OUT_OF_RANGE, DATA_LOSS, UNAUTHENTICATED, and OK itself) are 'unknown'.
 */
export function fromStatusCode(status: number): ErrorCode {
  return codeByStatus.get(status) ?? 'unknown';
}

/**
 * STATUS_MESSAGE_MAX_BYTES bounds the message of a status hull sends. Messages hull composes may quote
 * peers (each quote already cut to a few KiB): this is the last bound before containerd sees them.
 */
export const STATUS_MESSAGE_MAX_BYTES = 16 * 1024;

/**
 * fromStatus turns a non-OK status received from a peer into a HullError. The peer may be the hostile
 * guest: its message is cut to a few KiB and stripped of control characters (peer-text.ts).
 */
export function fromStatus(status: number, message: string): HullError {
  return new HullError(fromStatusCode(status), peerText(message));
}

/**
 * toStatus returns the status to send for a failure: its code via the table, UNKNOWN for anything else;
 * its message made safe and bounded as a peer's would be.
 */
export function toStatus(err: unknown): { code: number; message: string } {
  const message = err instanceof Error ? err.message : String(err);
  return { code: toStatusCode(errorCode(err)), message: peerText(message, STATUS_MESSAGE_MAX_BYTES) };
}
