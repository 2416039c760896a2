/**
 * ttrpc — containerd's ttrpc protocol (v1.1.1 wire format: unary calls only), client and server.
 *
 * Shared by the shim (server to containerd, client to the agent and to containerd's event service)
 * and by the guest agent (server to the shim). Frames are capped at 4 MiB, calls have deadlines, and
 * every decode is validated, because the guest on the other end is not trusted.
 */

export { TtrpcClient, type CallOptions } from './client.js';
export { DEFAULT_MAX_IN_FLIGHT, TtrpcServer, type CallContext, type ServiceMethods, type TtrpcServerOptions, type UnaryMethod } from './server.js';
export { MAX_FRAME_DATA_LENGTH } from './frame.js';
